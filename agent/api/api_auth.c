/*
 * Bearer tokens for the query API (api_auth.h).
 *
 * The IAM API key is compared in constant time over the longer of the two lengths, so the time
 * taken says nothing about how much of a guess was right. JWTs go through libjwt's jwt_decode()
 * with the configured key, which checks the signature of whatever algorithm the token names;
 * then we insist that this algorithm is the configured one. That second check is what stops
 * "alg":"none" and the HS256-signed-with-the-RSA-public-key confusion: libjwt would have
 * verified those too, with the key it was given. The claims are read from libjwt's JSON dump
 * with jansson, because exp may be any JSON number and user.uid sits in a nested object.
 */
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "api/api_auth.h"
#include "dlotel.h"

int64_t api_auth_now_override;

struct api_auth {
    unsigned char *secret;
    size_t secret_len;
    char *issuer;
    char *api_key;
    size_t api_key_len;
    jwt_alg_t alg;
    uint32_t leeway_s;
};

static void set_why(char *why, size_t len, const char *text)
{
    if (why != NULL && len > 0) {
        snprintf(why, len, "%s", text);
    }
}

static char *dup_or_null(const char *s, int *failed)
{
    if (s == NULL || *s == '\0') {
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        *failed = 1;
    }
    return d;
}

/* Overwrites |p| in a way the compiler may not drop as a dead store. */
static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n-- > 0) {
        *v++ = 0;
    }
}

int api_auth_new(struct api_auth **out, const struct api_auth_options *o)
{
    const char *algname = o->jwt_algorithm != NULL ? o->jwt_algorithm : "HS256";
    jwt_alg_t alg = jwt_str_alg(algname);
    if (alg == JWT_ALG_INVAL || alg == JWT_ALG_NONE) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct api_auth *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    int failed = 0;
    a->alg = alg;
    a->leeway_s = o->leeway_s;
    a->secret = (unsigned char *)dup_or_null(o->jwt_secret, &failed);
    a->secret_len = a->secret != NULL ? strlen((char *)a->secret) : 0;
    a->issuer = dup_or_null(o->jwt_issuer, &failed);
    a->api_key = dup_or_null(o->iam_api_key, &failed);
    a->api_key_len = a->api_key != NULL ? strlen(a->api_key) : 0;
    if (failed || a->secret_len > INT32_MAX) {
        api_auth_free(a);
        return DLOTEL_ERR_NOMEM;
    }
    *out = a;
    return 0;
}

void api_auth_free(struct api_auth *a)
{
    if (a == NULL) {
        return;
    }
    if (a->secret != NULL) {
        wipe(a->secret, a->secret_len);
        free(a->secret);
    }
    if (a->api_key != NULL) {
        wipe(a->api_key, a->api_key_len);
        free(a->api_key);
    }
    free(a->issuer);
    free(a);
}

bool api_auth_enabled(const struct api_auth *a)
{
    return a->secret != NULL || a->api_key != NULL;
}

/* Constant time in max(len(a), len(b)): every byte of both is read whatever they hold. */
static bool same_secret(const char *given, size_t glen, const char *want, size_t wlen)
{
    size_t n = glen > wlen ? glen : wlen;
    unsigned char diff = (unsigned char)(glen != wlen);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < glen ? (unsigned char)given[i] : 0;
        unsigned char y = i < wlen ? (unsigned char)want[i] : 0;
        diff |= x ^ y;
    }
    return diff == 0;
}

static int64_t now_s(void)
{
    return api_auth_now_override != 0 ? api_auth_now_override : (int64_t)time(NULL);
}

static bool has_admin_role(json_t *roles)
{
    if (!json_is_array(roles)) {
        return false;
    }
    size_t i;
    json_t *r;
    json_array_foreach(roles, i, r)
    {
        const char *s = json_string_value(r);
        if (s != NULL && (strcmp(s, "platform_admin") == 0 || strcmp(s, "admin") == 0)) {
            return true;
        }
    }
    return false;
}

/* Reads a NumericDate claim; false when present but not a number. */
static bool numeric_claim(json_t *claims, const char *name, bool *present, double *v)
{
    json_t *j = json_object_get(claims, name);
    *present = j != NULL;
    if (j == NULL) {
        return true;
    }
    if (!json_is_number(j)) {
        return false;
    }
    *v = json_number_value(j);
    return true;
}

static int check_claims(const struct api_auth *a, json_t *claims, struct api_principal *who,
                        char *why, size_t why_len)
{
    if (!json_is_object(claims)) {
        set_why(why, why_len, "the token has no claims object");
        return DLOTEL_ERR_BAD_INPUT;
    }
    double now = (double)now_s();
    bool present;
    double v = 0;
    if (!numeric_claim(claims, "exp", &present, &v)) {
        set_why(why, why_len, "the token's exp is not a number");
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (present && now >= v + a->leeway_s) {
        set_why(why, why_len, "the token has expired");
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (!numeric_claim(claims, "nbf", &present, &v)) {
        set_why(why, why_len, "the token's nbf is not a number");
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (present && now + a->leeway_s < v) {
        set_why(why, why_len, "the token is not valid yet (nbf)");
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (a->issuer != NULL) {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (iss == NULL || strcmp(iss, a->issuer) != 0) {
            set_why(why, why_len, "the token's issuer is not the one this API accepts");
            return DLOTEL_ERR_BAD_INPUT;
        }
    }
    json_t *user = json_object_get(claims, "user");
    const char *uid = json_string_value(json_object_get(user, "uid"));
    if (uid == NULL || *uid == '\0') {
        uid = json_string_value(json_object_get(claims, "sub"));
    }
    bool admin = has_admin_role(json_object_get(claims, "roles")) ||
                 has_admin_role(json_object_get(user, "roles"));
    if ((uid == NULL || *uid == '\0') && !admin) {
        set_why(why, why_len, "the token names no user (user.uid or sub)");
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (uid != NULL && strlen(uid) >= sizeof(who->user_uid)) {
        set_why(why, why_len, "the token's user id is too long");
        return DLOTEL_ERR_BAD_INPUT;
    }
    memset(who, 0, sizeof(*who));
    if (uid != NULL) {
        memcpy(who->user_uid, uid, strlen(uid) + 1);
    }
    who->admin = admin;
    return 0;
}

static int check_jwt(const struct api_auth *a, const char *token, struct api_principal *who,
                     char *why, size_t why_len)
{
    if (a->secret == NULL) {
        set_why(why, why_len, "invalid token");
        return DLOTEL_ERR_BAD_INPUT;
    }
    /* Three base64url parts: anything else is not worth handing to a parser. */
    size_t dots = 0;
    for (const char *p = token; *p != '\0'; p++) {
        if (*p == '.') {
            dots++;
        } else if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                     (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '=')) {
            set_why(why, why_len, "the token is not a JWT");
            return DLOTEL_ERR_BAD_INPUT;
        }
    }
    if (dots != 2) {
        set_why(why, why_len, "the token is not a JWT");
        return DLOTEL_ERR_BAD_INPUT;
    }
    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, a->secret, (int)a->secret_len) != 0 || jwt == NULL) {
        set_why(why, why_len, "the token's signature does not verify");
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (jwt_get_alg(jwt) != a->alg) {
        jwt_free(jwt);
        set_why(why, why_len, "the token is signed with another algorithm than this API's");
        return DLOTEL_ERR_BAD_INPUT;
    }
    char *grants = jwt_get_grants_json(jwt, NULL);
    jwt_free(jwt);
    if (grants == NULL) {
        set_why(why, why_len, "the token has no claims");
        return DLOTEL_ERR_BAD_INPUT;
    }
    json_t *claims = json_loads(grants, JSON_REJECT_DUPLICATES, NULL);
    free(grants);
    if (claims == NULL) {
        set_why(why, why_len, "the token's claims do not parse");
        return DLOTEL_ERR_BAD_INPUT;
    }
    int rc = check_claims(a, claims, who, why, why_len);
    json_decref(claims);
    return rc;
}

int api_auth_token(const struct api_auth *a, const char *token, struct api_principal *who,
                   char *why, size_t why_len)
{
    if (!api_auth_enabled(a)) {
        memset(who, 0, sizeof(*who));
        who->admin = true;
        return 0;
    }
    if (token == NULL || *token == '\0') {
        set_why(why, why_len, "a Bearer token is required");
        return DLOTEL_ERR_NOT_FOUND;
    }
    size_t len = strnlen(token, API_TOKEN_MAX + 1);
    if (len > API_TOKEN_MAX) {
        set_why(why, why_len, "the token is too long");
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (a->api_key != NULL && same_secret(token, len, a->api_key, a->api_key_len)) {
        memset(who, 0, sizeof(*who));
        who->admin = true;
        return 0;
    }
    return check_jwt(a, token, who, why, why_len);
}

int api_auth_header(const struct api_auth *a, const char *authorization, struct api_principal *who,
                    char *why, size_t why_len)
{
    if (!api_auth_enabled(a)) {
        return api_auth_token(a, NULL, who, why, why_len);
    }
    if (authorization == NULL) {
        set_why(why, why_len, "a Bearer token is required (Authorization: Bearer <token>)");
        return DLOTEL_ERR_NOT_FOUND;
    }
    const char *p = authorization;
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t')) {
        set_why(why, why_len, "the Authorization header is not a Bearer token");
        return DLOTEL_ERR_NOT_FOUND;
    }
    p += 6;
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    /* Trailing blanks are not part of the token. */
    size_t n = strnlen(p, API_TOKEN_MAX + 1);
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) {
        n--;
    }
    if (n > API_TOKEN_MAX) {
        set_why(why, why_len, "the token is too long");
        return DLOTEL_ERR_BAD_INPUT;
    }
    char *tok = malloc(n + 1);
    if (tok == NULL) {
        set_why(why, why_len, "out of memory");
        return DLOTEL_ERR_NOMEM;
    }
    memcpy(tok, p, n);
    tok[n] = '\0';
    int rc = api_auth_token(a, tok, who, why, why_len);
    wipe(tok, n);
    free(tok);
    return rc;
}
