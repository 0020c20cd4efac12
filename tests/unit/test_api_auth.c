/* Unit tests for the query API's Bearer auth (agent/api/api_auth.c), with tokens made by libjwt. */
#include <jwt.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/api_auth.h"
#include "dlotel.h"

#define SECRET "test-secret-0123456789abcdef"
#define NOW    1800000000L

/* A token signed with |alg| and |key| whose claims are the JSON object |claims|. */
static char *mint(jwt_alg_t alg, const char *key, const char *claims)
{
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grants_json(jwt, claims), 0);
    assert_int_equal(
        jwt_set_alg(jwt, alg, (const unsigned char *)key, key != NULL ? (int)strlen(key) : 0), 0);
    char *t = jwt_encode_str(jwt);
    assert_non_null(t);
    jwt_free(jwt);
    return t;
}

static struct api_auth *auth_with(const char *secret, const char *issuer, const char *alg,
                                  const char *key)
{
    struct api_auth_options o = {
        .jwt_secret = secret, .jwt_issuer = issuer, .jwt_algorithm = alg, .iam_api_key = key};
    struct api_auth *a = NULL;
    assert_int_equal(api_auth_new(&a, &o), 0);
    return a;
}

static int check(struct api_auth *a, const char *token, struct api_principal *who)
{
    char why[160] = "";
    int rc = api_auth_token(a, token, who, why, sizeof(why));
    if (rc != 0) {
        /* Every refusal says why, and never quotes the token. */
        assert_true(why[0] != '\0');
        assert_null(strstr(why, "eyJ"));
    }
    return rc;
}

static void test_jwt_users_and_admins(void **state)
{
    (void)state;
    api_auth_now_override = NOW;
    struct api_auth *a = auth_with(SECRET, NULL, NULL, NULL);
    assert_true(api_auth_enabled(a));
    struct api_principal who;

    char *t = mint(JWT_ALG_HS256, SECRET, "{\"sub\":\"alice\",\"exp\":1800000060}");
    assert_int_equal(check(a, t, &who), 0);
    assert_string_equal(who.user_uid, "alice");
    assert_false(who.admin);
    free(t);

    /* user.uid wins over sub. */
    t = mint(JWT_ALG_HS256, SECRET, "{\"sub\":\"s\",\"user\":{\"uid\":\"u-1\"}}");
    assert_int_equal(check(a, t, &who), 0);
    assert_string_equal(who.user_uid, "u-1");
    free(t);

    /* Admin by roles or user.roles. */
    t = mint(JWT_ALG_HS256, SECRET, "{\"sub\":\"root\",\"roles\":[\"x\",\"platform_admin\"]}");
    assert_int_equal(check(a, t, &who), 0);
    assert_true(who.admin);
    free(t);
    t = mint(JWT_ALG_HS256, SECRET, "{\"user\":{\"uid\":\"b\",\"roles\":[\"admin\"]}}");
    assert_int_equal(check(a, t, &who), 0);
    assert_true(who.admin);
    assert_string_equal(who.user_uid, "b");
    free(t);
    t = mint(JWT_ALG_HS256, SECRET, "{\"sub\":\"c\",\"roles\":\"admin\"}");
    assert_int_equal(check(a, t, &who), 0);
    assert_false(who.admin); /* roles must be an array */
    free(t);

    /* No user at all. */
    t = mint(JWT_ALG_HS256, SECRET, "{\"name\":\"nobody\"}");
    assert_int_equal(check(a, t, &who), DLOTEL_ERR_BAD_INPUT);
    free(t);
    api_auth_free(a);
}

static void test_jwt_refusals(void **state)
{
    (void)state;
    api_auth_now_override = NOW;
    struct api_auth *a = auth_with(SECRET, "https://iam.example", "HS256", NULL);
    struct api_principal who;
    char *t;

    /* exp: valid until the second before, refused at exp itself. */
    t = mint(JWT_ALG_HS256, SECRET,
             "{\"sub\":\"u\",\"iss\":\"https://iam.example\","
             "\"exp\":1800000001}");
    assert_int_equal(check(a, t, &who), 0);
    free(t);
    t = mint(JWT_ALG_HS256, SECRET,
             "{\"sub\":\"u\",\"iss\":\"https://iam.example\","
             "\"exp\":1800000000}");
    assert_int_equal(check(a, t, &who), DLOTEL_ERR_BAD_INPUT);
    free(t);
    /* nbf: valid from that second on. */
    t = mint(JWT_ALG_HS256, SECRET,
             "{\"sub\":\"u\",\"iss\":\"https://iam.example\","
             "\"nbf\":1800000000}");
    assert_int_equal(check(a, t, &who), 0);
    free(t);
    t = mint(JWT_ALG_HS256, SECRET,
             "{\"sub\":\"u\",\"iss\":\"https://iam.example\","
             "\"nbf\":1800000001}");
    assert_int_equal(check(a, t, &who), DLOTEL_ERR_BAD_INPUT);
    free(t);
    t = mint(JWT_ALG_HS256, SECRET,
             "{\"sub\":\"u\",\"iss\":\"https://iam.example\","
             "\"exp\":\"tomorrow\"}");
    assert_int_equal(check(a, t, &who), DLOTEL_ERR_BAD_INPUT);
    free(t);
    /* Issuer. */
    t = mint(JWT_ALG_HS256, SECRET, "{\"sub\":\"u\",\"iss\":\"https://evil.example\"}");
    assert_int_equal(check(a, t, &who), DLOTEL_ERR_BAD_INPUT);
    free(t);
    t = mint(JWT_ALG_HS256, SECRET, "{\"sub\":\"u\"}");
    assert_int_equal(check(a, t, &who), DLOTEL_ERR_BAD_INPUT);
    free(t);
    /* Wrong key. */
    t = mint(JWT_ALG_HS256, "another-secret", "{\"sub\":\"u\",\"iss\":\"https://iam.example\"}");
    assert_int_equal(check(a, t, &who), DLOTEL_ERR_BAD_INPUT);
    free(t);
    /* Right key, other HMAC algorithm. */
    t = mint(JWT_ALG_HS512, SECRET, "{\"sub\":\"u\",\"iss\":\"https://iam.example\"}");
    assert_int_equal(check(a, t, &who), DLOTEL_ERR_BAD_INPUT);
    free(t);
    /* alg none, made by libjwt, and by hand with an empty signature. */
    t = mint(JWT_ALG_NONE, NULL, "{\"sub\":\"u\",\"iss\":\"https://iam.example\"}");
    assert_int_equal(check(a, t, &who), DLOTEL_ERR_BAD_INPUT);
    free(t);
    /* {"alg":"none","typ":"JWT"} . {"sub":"u","iss":"https://iam.example"} . */
    assert_int_equal(check(a,
                           "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiaXNzIjoiaHR0cHM6"
                           "Ly9pYW0uZXhhbXBsZSJ9.",
                           &who),
                     DLOTEL_ERR_BAD_INPUT);
    /* Not a JWT at all. */
    assert_int_equal(check(a, "abc", &who), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(check(a, "a.b.c", &who), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(check(a, "a b.c.d", &who), DLOTEL_ERR_BAD_INPUT);
    api_auth_free(a);
}

static void test_api_key_and_header(void **state)
{
    (void)state;
    struct api_auth *a = auth_with(NULL, NULL, NULL, "iam-key-42");
    struct api_principal who;
    char why[160];
    assert_int_equal(api_auth_token(a, "iam-key-42", &who, why, sizeof(why)), 0);
    assert_true(who.admin);
    assert_string_equal(who.user_uid, "");
    /* A prefix, a longer key, another key: refused (and no JWT secret to try). */
    assert_int_equal(api_auth_token(a, "iam-key-4", &who, why, sizeof(why)), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(api_auth_token(a, "iam-key-421", &who, why, sizeof(why)),
                     DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(api_auth_token(a, "iam-key-43", &who, why, sizeof(why)), DLOTEL_ERR_BAD_INPUT);
    /* Headers. */
    assert_int_equal(api_auth_header(a, "Bearer iam-key-42", &who, why, sizeof(why)), 0);
    assert_int_equal(api_auth_header(a, "bearer   iam-key-42  ", &who, why, sizeof(why)), 0);
    assert_int_equal(api_auth_header(a, NULL, &who, why, sizeof(why)), DLOTEL_ERR_NOT_FOUND);
    assert_int_equal(api_auth_header(a, "Basic abc", &who, why, sizeof(why)), DLOTEL_ERR_NOT_FOUND);
    assert_int_equal(api_auth_header(a, "Bearer", &who, why, sizeof(why)), DLOTEL_ERR_NOT_FOUND);
    assert_int_equal(api_auth_header(a, "Bearer ", &who, why, sizeof(why)), DLOTEL_ERR_NOT_FOUND);
    /* The token length limit, at its boundary. */
    static char tok[API_TOKEN_MAX + 2];
    memset(tok, 'k', API_TOKEN_MAX);
    tok[API_TOKEN_MAX] = '\0';
    int rc = api_auth_token(a, tok, &who, why, sizeof(why));
    assert_int_equal(rc, DLOTEL_ERR_BAD_INPUT);
    assert_null(strstr(why, "too long"));
    tok[API_TOKEN_MAX] = 'k';
    tok[API_TOKEN_MAX + 1] = '\0';
    assert_int_equal(api_auth_token(a, tok, &who, why, sizeof(why)), DLOTEL_ERR_BAD_INPUT);
    assert_non_null(strstr(why, "too long"));
    api_auth_free(a);

    /* Auth off: every caller is admin, with or without a token. */
    a = auth_with(NULL, NULL, NULL, NULL);
    assert_false(api_auth_enabled(a));
    assert_int_equal(api_auth_header(a, NULL, &who, why, sizeof(why)), 0);
    assert_true(who.admin);
    assert_int_equal(api_auth_token(a, "whatever", &who, why, sizeof(why)), 0);
    assert_true(who.admin);
    api_auth_free(a);

    /* Unknown algorithms and none are refused at creation. */
    struct api_auth_options o = {.jwt_secret = "s", .jwt_algorithm = "none"};
    struct api_auth *b = NULL;
    assert_int_equal(api_auth_new(&b, &o), DLOTEL_ERR_INVALID_ARG);
    o.jwt_algorithm = "XX999";
    assert_int_equal(api_auth_new(&b, &o), DLOTEL_ERR_INVALID_ARG);
    assert_null(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jwt_users_and_admins),
        cmocka_unit_test(test_jwt_refusals),
        cmocka_unit_test(test_api_key_and_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
