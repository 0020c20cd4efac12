/*
 * Patterns for the processors: one syntax for URL lists, names, attribute keys and values.
 *
 *   re:<ERE>      a POSIX extended regular expression, matched anywhere in the text
 *   ^... or ...$  likewise a regular expression (anchored by its own ^ or $)
 *   <text>*       a prefix: the text before the final '*' ("*" alone matches everything)
 *   <text>        exact equality
 *
 * Patterns come from configuration, which is untrusted enough to bound: at most
 * PATTERN_MAX_LEN bytes each and PATTERN_MAX_LIST per list. Regular expressions are compiled
 * once, with REG_NOSUB since only yes or no is wanted.
 */
#ifndef DLOTEL_PROCESSOR_PATTERN_H
#define DLOTEL_PROCESSOR_PATTERN_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>

#define PATTERN_MAX_LEN  1024
#define PATTERN_MAX_LIST 64

enum pattern_kind {
    PATTERN_EXACT,
    PATTERN_PREFIX,
    PATTERN_REGEX,
};

struct pattern {
    enum pattern_kind kind;
    char *text; /* EXACT and PREFIX: the literal, NUL-terminated. Owned. */
    size_t len;
    regex_t re; /* REGEX only. */
};

struct pattern_list {
    struct pattern *v;
    size_t n;
};

/*
 * Compiles |len| bytes of |src| into |p|. Returns 0, or DLOTEL_ERR_CONFIG with the reason in
 * |why|, or DLOTEL_ERR_NOMEM. |p| needs pattern_cleanup() only after success.
 */
int pattern_compile(struct pattern *p, const char *src, size_t len, char *why, size_t why_len);

/* Whether NUL-terminated |s| of |len| bytes matches |p|. */
bool pattern_match(const struct pattern *p, const char *s, size_t len);

void pattern_cleanup(struct pattern *p);

/*
 * Appends the comma-separated patterns of |csv| (blank items skipped, spaces around items
 * trimmed) to |l|. Returns as pattern_compile(); on failure |l| keeps what it had.
 */
int pattern_list_add_csv(struct pattern_list *l, const char *csv, char *why, size_t why_len);

/* Appends one pattern. Returns as pattern_compile(). */
int pattern_list_add(struct pattern_list *l, const char *src, size_t len, char *why,
                     size_t why_len);

/* Whether any pattern of |l| matches. */
bool pattern_list_match(const struct pattern_list *l, const char *s, size_t len);

void pattern_list_cleanup(struct pattern_list *l);

#endif
