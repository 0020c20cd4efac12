/*
 * Internal to the processor room: the compiled processors and the attribute helpers that
 * processor.c (config and traversal) and apply.c (the processors' work) share.
 */
#ifndef DLOTEL_PROCESSOR_INT_H
#define DLOTEL_PROCESSOR_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "otlp/otlp_pb.h"
#include "processor/pattern.h"
#include "processor/processor.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue pkv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue pav_t;

enum proc_kind {
    PROC_FILTER,
    PROC_SAMPLE,
    PROC_ATTRIBUTES,
    PROC_RESOURCE,
    PROC_LIMITS,
};

/* Which attribute sets a processor touches. */
#define TARGET_RESOURCE  0x1u
#define TARGET_SPAN      0x2u
#define TARGET_EVENT     0x4u
#define TARGET_LINK      0x8u
#define TARGET_LOG       0x10u
#define TARGET_DATAPOINT 0x20u

/* One attribute set inside a decoded request: a pointer to its array and count. */
struct kvset {
    pkv_t ***v;
    size_t *n;
    uint32_t *dropped; /* dropped_attributes_count, or NULL where OTLP has none. */
};

/* A filter condition: an item matches when every part that is set matches. */
struct cond {
    struct pattern *service; /* resource service.name */
    struct pattern *name;    /* span name, metric name, log body */
    char *attr_key;          /* with attr_value: the item's attribute |attr_key| */
    struct pattern *attr_value;
    int severity_below; /* logs: severity_number below this (1..24); 0: unset */
};

enum act_op {
    ACT_INSERT,
    ACT_UPDATE,
    ACT_UPSERT,
    ACT_DELETE,
    ACT_HASH,
};

struct action {
    char *key;
    enum act_op op;
    pav_t value; /* INSERT, UPDATE, UPSERT; a string value points at |str|. */
    char *str;
};

struct proc {
    enum proc_kind kind;
    unsigned targets;
    /* filter */
    struct cond *conds;
    size_t nconds;
    bool urls; /* include/exclude lists in use (traces) */
    struct pattern_list include, exclude;
    /* sample */
    uint64_t threshold;
    /* attributes */
    struct action *acts;
    size_t nacts;
    struct pattern_list redact_keys, redact_values;
    /* resource */
    char *host_name, *container_id, *user_uid, *pid, *exe;
    bool service_instance_id;
    /* limits */
    size_t max_value_length; /* 0: no limit */
    size_t max_attributes;   /* 0: no limit */
    bool has_max_attributes;
};

/*
 * The decode memory of a chain: one block kept from request to request and grown to the
 * largest request seen (up to SLAB_KEEP_MAX), with malloc()ed overflow chunks while a request
 * needs more. core/arena would free and re-map its doubling blocks on every request, which cost
 * more than the decode itself. Nothing is zeroed: protobuf-c and this room initialise what they
 * allocate. The total per request is capped at |max|.
 */
struct slab_chunk;
struct slab {
    unsigned char *base;
    size_t cap, used;
    struct slab_chunk *over;
    size_t over_bytes;
    size_t max;
};
#define SLAB_KEEP_MAX ((size_t)32 * 1024 * 1024)

void slab_init(struct slab *s, size_t max);
void *slab_alloc(struct slab *s, size_t n);
void slab_reset(struct slab *s);
void slab_cleanup(struct slab *s);

/*
 * |slab| and |stats| belong to the run in progress (under |run_lock|); |published| is the copy
 * that processor_chain_get_stats() reads (under |stats_lock|), updated when a run ends.
 */
struct processor_chain {
    enum otlp_signal signal;
    struct proc procs[PROCESSOR_MAX_CHAIN];
    size_t n;
    struct slab slab;
    struct processor_stats stats;
    pthread_mutex_t run_lock;
    pthread_mutex_t stats_lock;
    struct processor_stats published;
    bool locks; /* The mutexes were initialised. */
};

/* Attribute set helpers; new memory comes from |a|. */
pkv_t *kv_find(const struct kvset *s, const char *key);
int kv_add(struct slab *a, const struct kvset *s, const char *key, const pav_t *value);
void kv_remove(const struct kvset *s, size_t idx);
pav_t *av_string(struct slab *a, const char *s, size_t len);

/* Applies an attributes or limits processor to one set. Returns 0 or DLOTEL_ERR_TOO_LARGE. */
int apply_attributes(struct processor_chain *c, const struct proc *p, const struct kvset *s);
int apply_limits(struct processor_chain *c, const struct proc *p, const struct kvset *s);
/* Adds the resource processor's attributes to a resource set. */
int apply_resource(struct processor_chain *c, const struct proc *p, const struct kvset *s);

#endif
