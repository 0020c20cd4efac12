/*
 * Fuzz target: Bearer token handling (agent/api/api_auth.c) on arbitrary Authorization header
 * values. The first byte picks the configured algorithm. No input may crash it, and none may be
 * accepted: without the secret no one can sign, so an acceptance means a check was skipped (the
 * corpus holds alg none, HS384-for-HS256, unsigned and truncated tokens). The IAM key is the
 * exception: libFuzzer's comparison tracing finds it, and it must pass only as itself.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_auth.h"
#include "dlotel.h"

#define IAM_KEY "iam-key-not-in-any-input-b81e2d4c"

static struct api_auth *auths[2];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (auths[0] == NULL) {
        struct api_auth_options o = {.jwt_secret = "fuzz-secret-not-in-any-input-7f3a9c",
                                     .jwt_algorithm = "HS256",
                                     .iam_api_key = IAM_KEY};
        if (api_auth_new(&auths[0], &o) != 0) {
            abort();
        }
        o.jwt_algorithm = "HS512";
        o.jwt_issuer = "https://iam.example";
        if (api_auth_new(&auths[1], &o) != 0) {
            abort();
        }
    }
    if (size < 1 || size > 3 * API_TOKEN_MAX) {
        return 0;
    }
    char *header = malloc(size);
    if (header == NULL) {
        return 0;
    }
    memcpy(header, data + 1, size - 1);
    header[size - 1] = '\0';
    struct api_auth *a = auths[data[0] & 1];
    struct api_principal who;
    char why[160];
    if (api_auth_header(a, header, &who, why, sizeof(why)) == 0 ||
        api_auth_token(a, header, &who, why, sizeof(why)) == 0) {
        /*
         * libFuzzer lifts the key from the comparison and does find it; the key itself (with
         * the header's optional white space around it) is the one input that must pass, and
         * then only as the admin.
         */
        if (!who.admin || strstr(header, IAM_KEY) == NULL) {
            abort();
        }
    }
    free(header);
    return 0;
}
