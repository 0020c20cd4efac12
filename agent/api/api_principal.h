/*
 * Who is calling the query API, as decided by the auth check (api_auth.c). Shared by the REST
 * routes and the WebSocket stream so that both scope rows the same way.
 */
#ifndef DLOTEL_API_PRINCIPAL_H
#define DLOTEL_API_PRINCIPAL_H

#include <stdbool.h>

#define API_USER_UID_MAX 256

struct api_principal {
    /*
     * The user whose rows the caller sees: the JWT's user.uid, else its sub. Empty for an admin
     * or an open (no secret configured, loopback) API, which see every row.
     */
    char user_uid[API_USER_UID_MAX];
    /* Unscoped: the IAM API key, a JWT with an admin role, or an API with auth off. */
    bool admin;
};

#endif
