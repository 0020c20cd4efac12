/*
 * Who is calling the query API (DESIGN.md section 6): a Bearer token that is either the IAM API
 * key (admin) or a JWT verified with libjwt. The secrets live only inside struct api_auth and
 * are never logged; neither is any token.
 */
#ifndef DLOTEL_API_AUTH_H
#define DLOTEL_API_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/api_principal.h"

/* Tokens longer than this are refused unread. */
#define API_TOKEN_MAX 8192

struct api_auth;

struct api_auth_options {
    const char *jwt_secret;    /* HMAC secret, or PEM public key for RS*; NULL: no JWTs. */
    const char *jwt_issuer;    /* Required iss; NULL: any. */
    const char *jwt_algorithm; /* "HS256" (NULL), "HS384", "HS512", "RS256", "RS384", "RS512". */
    const char *iam_api_key;   /* Admin key; NULL: none. */
    /* Seconds of clock skew allowed on exp and nbf. */
    uint32_t leeway_s;
};

/*
 * Copies |o|. Returns 0, DLOTEL_ERR_INVALID_ARG (an algorithm libjwt does not know, or "none"),
 * or DLOTEL_ERR_NOMEM; |*out| untouched on failure.
 */
int api_auth_new(struct api_auth **out, const struct api_auth_options *o);

/* Wipes the secrets and frees. NULL is a no-op. */
void api_auth_free(struct api_auth *a);

/* False when neither a JWT secret nor an IAM key is set: every caller is admin. */
bool api_auth_enabled(const struct api_auth *a);

/*
 * Takes the value of an Authorization header ("Bearer <token>", scheme without case) and decides.
 * Returns 0 and fills |who|; DLOTEL_ERR_NOT_FOUND (no header, or not Bearer);
 * DLOTEL_ERR_BAD_INPUT (the token is refused: bad signature, other algorithm, expired, not yet
 * valid, wrong issuer, no user) with a sentence in |why| that quotes no part of the token.
 * With auth off every call returns 0 with an admin principal.
 */
int api_auth_header(const struct api_auth *a, const char *authorization, struct api_principal *who,
                    char *why, size_t why_len);

/* As api_auth_header(), with the bare token (the WebSocket's ?token=). */
int api_auth_token(const struct api_auth *a, const char *token, struct api_principal *who,
                   char *why, size_t why_len);

/* The current time used for exp/nbf, overridable by tests (0: the real clock). */
extern int64_t api_auth_now_override;

#endif
