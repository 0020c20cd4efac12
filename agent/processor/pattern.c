#include "processor/pattern.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlotel.h"

int pattern_compile(struct pattern *p, const char *src, size_t len, char *why, size_t why_len)
{
    if (len == 0) {
        snprintf(why, why_len, "empty pattern");
        return DLOTEL_ERR_CONFIG;
    }
    if (len > PATTERN_MAX_LEN) {
        snprintf(why, why_len, "pattern longer than %d bytes", PATTERN_MAX_LEN);
        return DLOTEL_ERR_CONFIG;
    }
    if (memchr(src, 0, len) != NULL) {
        snprintf(why, why_len, "pattern holds a NUL byte");
        return DLOTEL_ERR_CONFIG;
    }
    enum pattern_kind kind = PATTERN_EXACT;
    if (len > 3 && memcmp(src, "re:", 3) == 0) {
        kind = PATTERN_REGEX;
        src += 3;
        len -= 3;
    } else if (src[0] == '^' || src[len - 1] == '$') {
        kind = PATTERN_REGEX;
    } else if (src[len - 1] == '*') {
        kind = PATTERN_PREFIX;
        len--;
    }
    char *text = malloc(len + 1);
    if (text == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    memcpy(text, src, len);
    text[len] = 0;
    if (kind == PATTERN_REGEX) {
        int rc = regcomp(&p->re, text, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char msg[128];
            regerror(rc, &p->re, msg, sizeof(msg));
            snprintf(why, why_len, "bad regular expression '%.80s': %s", text, msg);
            free(text);
            return DLOTEL_ERR_CONFIG;
        }
    }
    p->kind = kind;
    p->text = text;
    p->len = len;
    return 0;
}

bool pattern_match(const struct pattern *p, const char *s, size_t len)
{
    switch (p->kind) {
    case PATTERN_EXACT:
        return len == p->len && memcmp(s, p->text, len) == 0;
    case PATTERN_PREFIX:
        return len >= p->len && memcmp(s, p->text, p->len) == 0;
    case PATTERN_REGEX:
        /* |s| is NUL-terminated (protobuf-c strings are); a NUL inside ends the match early. */
        return regexec(&p->re, s, 0, NULL, 0) == 0;
    }
    return false;
}

void pattern_cleanup(struct pattern *p)
{
    if (p->kind == PATTERN_REGEX) {
        regfree(&p->re);
    }
    free(p->text);
    p->text = NULL;
}

int pattern_list_add(struct pattern_list *l, const char *src, size_t len, char *why, size_t why_len)
{
    if (l->n >= PATTERN_MAX_LIST) {
        snprintf(why, why_len, "more than %d patterns", PATTERN_MAX_LIST);
        return DLOTEL_ERR_CONFIG;
    }
    struct pattern p;
    int rc = pattern_compile(&p, src, len, why, why_len);
    if (rc != 0) {
        return rc;
    }
    struct pattern *v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (v == NULL) {
        pattern_cleanup(&p);
        return DLOTEL_ERR_NOMEM;
    }
    v[l->n++] = p;
    l->v = v;
    return 0;
}

int pattern_list_add_csv(struct pattern_list *l, const char *csv, char *why, size_t why_len)
{
    size_t before = l->n;
    const char *s = csv;
    for (;;) {
        size_t n = strcspn(s, ",");
        const char *a = s, *b = s + n;
        while (a < b && (*a == ' ' || *a == '\t')) {
            a++;
        }
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) {
            b--;
        }
        if (b > a) {
            int rc = pattern_list_add(l, a, (size_t)(b - a), why, why_len);
            if (rc != 0) {
                while (l->n > before) {
                    pattern_cleanup(&l->v[--l->n]);
                }
                return rc;
            }
        }
        if (s[n] == 0) {
            return 0;
        }
        s += n + 1;
    }
}

bool pattern_list_match(const struct pattern_list *l, const char *s, size_t len)
{
    for (size_t i = 0; i < l->n; i++) {
        if (pattern_match(&l->v[i], s, len)) {
            return true;
        }
    }
    return false;
}

void pattern_list_cleanup(struct pattern_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        pattern_cleanup(&l->v[i]);
    }
    free(l->v);
    l->v = NULL;
    l->n = 0;
}
