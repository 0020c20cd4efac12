/*
 * The work of the attributes, resource and limits processors on one attribute set of a decoded
 * request. Everything new is allocated from the chain's slab, which the next request resets,
 * so nothing here frees; the old arrays and values simply stop being referenced.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "dlotel.h"
#include "processor/processor_int.h"

#define REDACTED "****"

static char *slab_strndup(struct slab *a, const char *s, size_t len)
{
    char *d = slab_alloc(a, len + 1);
    if (d != NULL) {
        memcpy(d, s, len);
        d[len] = 0;
    }
    return d;
}

pkv_t *kv_find(const struct kvset *s, const char *key)
{
    for (size_t i = 0; i < *s->n; i++) {
        pkv_t *kv = (*s->v)[i];
        if (kv->key != NULL && strcmp(kv->key, key) == 0) {
            return kv;
        }
    }
    return NULL;
}

pav_t *av_string(struct slab *a, const char *s, size_t len)
{
    pav_t *v = slab_alloc(a, sizeof(*v));
    char *d = slab_strndup(a, s, len);
    if (v == NULL || d == NULL) {
        return NULL;
    }
    *v = (pav_t)OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
    v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    v->string_value = d;
    return v;
}

int kv_add(struct slab *a, const struct kvset *s, const char *key, const pav_t *value)
{
    /* The array protobuf-c made may be exactly full, so a new one is made each time. */
    pkv_t **nv = slab_alloc(a, (*s->n + 1) * sizeof(*nv));
    pkv_t *kv = slab_alloc(a, sizeof(*kv));
    pav_t *av = slab_alloc(a, sizeof(*av));
    if (nv == NULL || kv == NULL || av == NULL) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    if (*s->n > 0) {
        memcpy(nv, *s->v, *s->n * sizeof(*nv));
    }
    *kv = (pkv_t)OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
    kv->key = (char *)key; /* Config memory outlives the request. */
    *av = *value;
    kv->value = av;
    nv[(*s->n)++] = kv;
    *s->v = nv;
    return 0;
}

void kv_remove(const struct kvset *s, size_t idx)
{
    memmove(&(*s->v)[idx], &(*s->v)[idx + 1], (*s->n - idx - 1) * sizeof(pkv_t *));
    (*s->n)--;
}

/* The bytes hashed for a value: strings and bytes as they are, scalars as text. */
static int hash_value(struct slab *a, const pav_t *v, pav_t **out)
{
    char tmp[64];
    const void *data = tmp;
    size_t len = 0;
    uint8_t *packed = NULL;
    switch (v->value_case) {
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
        data = v->string_value;
        len = strlen(v->string_value);
        break;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
        len = (size_t)snprintf(tmp, sizeof(tmp), "%s", v->bool_value ? "true" : "false");
        break;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
        len = (size_t)snprintf(tmp, sizeof(tmp), "%" PRId64, v->int_value);
        break;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
        len = (size_t)snprintf(tmp, sizeof(tmp), "%.17g", v->double_value);
        break;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE:
        data = v->bytes_value.data;
        len = v->bytes_value.len;
        break;
    default:
        /* Arrays and maps: their protobuf encoding, so that nothing inside them leaks. */
        len = protobuf_c_message_get_packed_size(&v->base);
        packed = slab_alloc(a, len + 1);
        if (packed == NULL) {
            return DLOTEL_ERR_TOO_LARGE;
        }
        protobuf_c_message_pack(&v->base, packed);
        data = packed;
        break;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1) {
        return DLOTEL_ERR_INTERNAL;
    }
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < mdlen; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    *out = av_string(a, hex, 2 * mdlen);
    return *out == NULL ? DLOTEL_ERR_TOO_LARGE : 0;
}

int apply_attributes(struct processor_chain *c, const struct proc *p, const struct kvset *s)
{
    struct slab *a = &c->slab;
    for (size_t i = 0; i < p->nacts; i++) {
        const struct action *act = &p->acts[i];
        size_t idx = 0;
        pkv_t *kv = NULL;
        for (; idx < *s->n; idx++) {
            if (strcmp((*s->v)[idx]->key, act->key) == 0) {
                kv = (*s->v)[idx];
                break;
            }
        }
        switch (act->op) {
        case ACT_INSERT:
            if (kv == NULL && kv_add(a, s, act->key, &act->value) != 0) {
                return DLOTEL_ERR_TOO_LARGE;
            }
            break;
        case ACT_UPDATE:
        case ACT_UPSERT:
            if (kv != NULL) {
                pav_t *nv = slab_alloc(a, sizeof(*nv));
                if (nv == NULL) {
                    return DLOTEL_ERR_TOO_LARGE;
                }
                *nv = act->value;
                kv->value = nv;
            } else if (act->op == ACT_UPSERT && kv_add(a, s, act->key, &act->value) != 0) {
                return DLOTEL_ERR_TOO_LARGE;
            }
            break;
        case ACT_DELETE:
            if (kv != NULL) {
                kv_remove(s, idx);
            }
            break;
        case ACT_HASH:
            if (kv != NULL && kv->value != NULL) {
                pav_t *h;
                int rc = hash_value(a, kv->value, &h);
                if (rc != 0) {
                    return rc;
                }
                kv->value = h;
                c->stats.hashed_values++;
            }
            break;
        }
    }
    if (p->redact_keys.n == 0 && p->redact_values.n == 0) {
        return 0;
    }
    for (size_t i = 0; i < *s->n; i++) {
        pkv_t *kv = (*s->v)[i];
        bool hit = pattern_list_match(&p->redact_keys, kv->key, strlen(kv->key));
        if (!hit && kv->value != NULL &&
            kv->value->value_case ==
                OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE) {
            const char *sv = kv->value->string_value;
            hit =
                strcmp(sv, REDACTED) != 0 && pattern_list_match(&p->redact_values, sv, strlen(sv));
        }
        if (hit) {
            if ((kv->value = av_string(a, REDACTED, sizeof(REDACTED) - 1)) == NULL) {
                return DLOTEL_ERR_TOO_LARGE;
            }
            c->stats.redacted_values++;
        }
    }
    return 0;
}

/* The longest prefix of |s| of at most |max| bytes that does not cut a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t max)
{
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) {
        n--;
    }
    return n;
}

int apply_limits(struct processor_chain *c, const struct proc *p, const struct kvset *s)
{
    if (p->has_max_attributes && *s->n > p->max_attributes) {
        size_t extra = *s->n - p->max_attributes;
        *s->n = p->max_attributes;
        c->stats.dropped_attributes += extra;
        if (s->dropped != NULL) {
            *s->dropped +=
                extra > UINT32_MAX - *s->dropped ? UINT32_MAX - *s->dropped : (uint32_t)extra;
        }
    }
    if (p->max_value_length == 0) {
        return 0;
    }
    for (size_t i = 0; i < *s->n; i++) {
        pav_t *v = (*s->v)[i]->value;
        if (v == NULL) {
            continue;
        }
        if (v->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE) {
            size_t len = strlen(v->string_value);
            if (len > p->max_value_length) {
                /* A copy: the string may belong to the configuration (an inserted value). */
                pav_t *cut = av_string(&c->slab, v->string_value,
                                       utf8_cut(v->string_value, p->max_value_length));
                if (cut == NULL) {
                    return DLOTEL_ERR_TOO_LARGE;
                }
                (*s->v)[i]->value = cut;
                c->stats.truncated_values++;
            }
        } else if (v->value_case ==
                       OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE &&
                   v->bytes_value.len > p->max_value_length) {
            v->bytes_value.len = p->max_value_length;
            c->stats.truncated_values++;
        }
    }
    return 0;
}

int apply_resource(struct processor_chain *c, const struct proc *p, const struct kvset *s)
{
    struct slab *a = &c->slab;
    struct {
        const char *key;
        const char *value;
    } adds[] = {
        {"host.name", p->host_name},         {"container.id", p->container_id},
        {"datalayer.user_uid", p->user_uid}, {"process.pid", p->pid},
        {"process.executable.name", p->exe},
    };
    for (size_t i = 0; i < sizeof(adds) / sizeof(adds[0]); i++) {
        if (adds[i].value == NULL || kv_find(s, adds[i].key) != NULL) {
            continue;
        }
        pav_t v = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
        if (strcmp(adds[i].key, "process.pid") == 0) {
            v.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
            v.int_value = (int64_t)strtoll(adds[i].value, NULL, 10);
        } else {
            v.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
            v.string_value = (char *)adds[i].value;
        }
        if (kv_add(a, s, adds[i].key, &v) != 0) {
            return DLOTEL_ERR_TOO_LARGE;
        }
    }
    if (!p->service_instance_id || kv_find(s, "service.instance.id") != NULL) {
        return 0;
    }
    /*
     * A stable id for an instance that did not name itself: the same service on the same host
     * (and process, when the SDK said which) gets the same id from every agent run, formatted
     * as a UUID (version 8, "custom") from the SHA-256 of those values.
     */
    const char *parts[3] = {"", "", ""};
    char pidbuf[32] = "";
    pkv_t *kv = kv_find(s, "service.name");
    if (kv != NULL && kv->value != NULL &&
        kv->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE) {
        parts[0] = kv->value->string_value;
    }
    if ((kv = kv_find(s, "host.name")) != NULL && kv->value != NULL &&
        kv->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE) {
        parts[1] = kv->value->string_value;
    }
    if ((kv = kv_find(s, "process.pid")) != NULL && kv->value != NULL &&
        kv->value->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE) {
        snprintf(pidbuf, sizeof(pidbuf), "%" PRId64, kv->value->int_value);
        parts[2] = pidbuf;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    for (int i = 0; i < 3 && ok; i++) {
        ok = EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]) + 1) == 1;
    }
    ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        return DLOTEL_ERR_NOMEM;
    }
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x80); /* version 8 */
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    char uuid[37];
    snprintf(uuid, sizeof(uuid),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", md[0], md[1],
             md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10], md[11], md[12], md[13],
             md[14], md[15]);
    pav_t *v = av_string(a, uuid, 36);
    if (v == NULL || kv_add(a, s, "service.instance.id", v) != 0) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    return 0;
}
