/*
 * The splitter. A request is a tree of length-delimited containers:
 *
 *   level 0  the request            children: field 1 (resources)
 *   level 1  Resource{Spans,...}    children: field 2 (scopes)
 *   level 2  Scope{Spans,...}       children: field 2 (spans, log records, metrics)
 *   level 3  Metric                 children: fields 5, 7, 9, 10, 11 (gauge ... summary)
 *   level 4  Gauge, Sum, ...        children: field 1 (data points)
 *
 * Every other field of a container is its "header" (Resource, InstrumentationScope, schema_url,
 * a metric's name, a sum's temporality, unknown fields): it is copied into every piece that holds
 * part of the container. Leaves ("atoms") are copied raw, tag and length prefix included, so an
 * item is byte for byte what the client sent.
 *
 * The walk is greedy and streaming: atoms are added to the current piece while it stays within
 * the limit. The size of the piece is tracked exactly as atoms arrive (each open level's content
 * is its header, its closed children and the framed size of its open child), so deciding whether
 * an atom fits costs a few additions per level. What goes in a piece is recorded as a short list
 * of operations (open a container, copy a byte range, close), and the piece is written once it
 * is complete, when every length prefix is known.
 */
#include "pipeline/split.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dlotel.h"

#define MAX_LEVELS 5

/* Protobuf wire types. */
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

enum op_kind { OP_OPEN, OP_RAW, OP_CLOSE };

struct op {
    uint8_t kind;
    uint8_t tag; /* OP_OPEN: the tag byte that frames the container. */
    size_t off;  /* OP_RAW: where the bytes are in the source. */
    size_t len;  /* OP_RAW: how many; OP_OPEN: the content length, computed when writing. */
};

struct range {
    size_t off;
    size_t len;
};

struct level {
    uint8_t tag;      /* Frames this container inside its parent. */
    size_t hdr_first; /* Its header ranges: hdrs[hdr_first, hdr_first + hdr_n). */
    size_t hdr_n;
    size_t hdr_len; /* Their total length. */
    size_t base;    /* In the current piece: header plus closed children and atoms. */
    bool emitted;   /* Opened in the current piece. */
    bool ever;      /* Has had a child (atom or container) in any piece. */
};

struct splitter {
    enum otlp_signal signal;
    const uint8_t *src;
    size_t limit;
    struct split_out *out;
    struct level lv[MAX_LEVELS];
    unsigned depth; /* Open levels, level 0 included. */
    struct range *hdrs;
    size_t nhdrs;
    size_t caphdrs;
    struct op *ops;
    size_t nops;
    size_t capops;
    uint64_t piece_items;
    size_t piece_atoms;
};

struct field {
    uint64_t number;
    unsigned wt;
    size_t start;   /* The tag's first byte. */
    size_t end;     /* One past the value. */
    size_t payload; /* WT_LEN: the value's first byte. */
};

void split_out_init(struct split_out *o, size_t max_bytes)
{
    memset(o, 0, sizeof(*o));
    buf_init(&o->data, max_bytes);
}

void split_out_reset(struct split_out *o)
{
    buf_reset(&o->data);
    o->n = 0;
    o->oversized = 0;
}

void split_out_cleanup(struct split_out *o)
{
    size_t max = o->data.max;
    buf_cleanup(&o->data);
    free(o->pieces);
    split_out_init(o, max);
}

/* A container of |x| content bytes with a one-byte tag and its length prefix. */
static size_t framed(size_t x)
{
    return 1 + otlp_varint_size(x) + x;
}

/* Reads a varint of at most 10 bytes from src[*pos, end). Returns false when truncated. */
static bool read_varint(const uint8_t *src, size_t *pos, size_t end, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0, i = 0; i < 10; i++, shift += 7) {
        if (*pos >= end) {
            return false;
        }
        uint8_t b = src[(*pos)++];
        r |= (uint64_t)(b & 0x7f) << shift;
        if (b < 0x80) {
            *v = r;
            return true;
        }
    }
    return false;
}

/* Reads the field at src[*pos, end) and steps over it. Returns false for malformed bytes. */
static bool next_field(const uint8_t *src, size_t *pos, size_t end, struct field *f)
{
    uint64_t tag, v;
    f->start = *pos;
    if (!read_varint(src, pos, end, &tag) || (tag >> 3) == 0) {
        return false;
    }
    f->number = tag >> 3;
    f->wt = (unsigned)(tag & 7);
    switch (f->wt) {
    case WT_VARINT:
        if (!read_varint(src, pos, end, &v)) {
            return false;
        }
        break;
    case WT_I64:
        if (end - *pos < 8) {
            return false;
        }
        *pos += 8;
        break;
    case WT_I32:
        if (end - *pos < 4) {
            return false;
        }
        *pos += 4;
        break;
    case WT_LEN:
        if (!read_varint(src, pos, end, &v) || v > end - *pos) {
            return false;
        }
        f->payload = *pos;
        *pos += (size_t)v;
        break;
    default: /* Groups and the invalid wire types 6 and 7: OTLP has none. */
        return false;
    }
    f->end = *pos;
    return true;
}

/* The child field numbers of a container at |level|. */
static bool is_child(const struct splitter *st, unsigned level, uint64_t number)
{
    switch (level) {
    case 0:
        return number == 1;
    case 1:
    case 2:
        return number == 2;
    case 3:
        return st->signal == OTLP_METRICS &&
               (number == 5 || number == 7 || number == 9 || number == 10 || number == 11);
    default:
        return st->signal == OTLP_METRICS && number == 1;
    }
}

static int push_op(struct splitter *st, uint8_t kind, uint8_t tag, size_t off, size_t len)
{
    /* Consecutive byte ranges of the source become one copy. */
    if (kind == OP_RAW && st->nops > 0) {
        struct op *last = &st->ops[st->nops - 1];
        if (last->kind == OP_RAW && last->off + last->len == off) {
            last->len += len;
            return 0;
        }
    }
    if (st->nops == st->capops) {
        size_t cap = st->capops == 0 ? 64 : st->capops * 2;
        struct op *v = realloc(st->ops, cap * sizeof(*v));
        if (v == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        st->ops = v;
        st->capops = cap;
    }
    st->ops[st->nops++] = (struct op){.kind = kind, .tag = tag, .off = off, .len = len};
    return 0;
}

static int push_header(struct splitter *st, size_t off, size_t len)
{
    struct level *l = &st->lv[st->depth];
    if (l->hdr_n > 0) {
        struct range *last = &st->hdrs[st->nhdrs - 1];
        if (last->off + last->len == off) {
            last->len += len;
            l->hdr_len += len;
            return 0;
        }
    }
    if (st->nhdrs == st->caphdrs) {
        size_t cap = st->caphdrs == 0 ? 32 : st->caphdrs * 2;
        struct range *v = realloc(st->hdrs, cap * sizeof(*v));
        if (v == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        st->hdrs = v;
        st->caphdrs = cap;
    }
    st->hdrs[st->nhdrs++] = (struct range){off, len};
    l->hdr_n++;
    l->hdr_len += len;
    return 0;
}

/*
 * The size of the current piece once |extra| content bytes are added at level |p| (the levels
 * above it opened as needed). With |fresh|, the size of a new piece holding only that.
 */
static size_t size_with(const struct splitter *st, unsigned p, size_t extra, bool fresh)
{
    size_t c = extra;
    for (unsigned k = p; k >= 1; k--) {
        const struct level *l = &st->lv[k];
        size_t b = !fresh && l->emitted ? l->base : l->hdr_len;
        c = framed(b + c);
    }
    return (fresh ? 0 : st->lv[0].base) + c;
}

/* Opens levels 1..p in the current piece, with their headers, where not open yet. */
static int ensure_emitted(struct splitter *st, unsigned p)
{
    for (unsigned k = 1; k <= p; k++) {
        struct level *l = &st->lv[k];
        if (l->emitted) {
            continue;
        }
        int rc = push_op(st, OP_OPEN, l->tag, 0, 0);
        for (size_t i = 0; rc == 0 && i < l->hdr_n; i++) {
            const struct range *r = &st->hdrs[l->hdr_first + i];
            rc = push_op(st, OP_RAW, 0, r->off, r->len);
        }
        if (rc != 0) {
            return rc;
        }
        l->emitted = true;
        l->base = l->hdr_len;
    }
    return 0;
}

/* Closes level |k| in the current piece: its framed size moves into its parent's base. */
static int close_emitted(struct splitter *st, unsigned k)
{
    struct level *l = &st->lv[k];
    int rc = push_op(st, OP_CLOSE, 0, 0, 0);
    if (rc != 0) {
        return rc;
    }
    st->lv[k - 1].base += framed(l->base);
    l->emitted = false;
    return 0;
}

/* Writes the piece recorded in st->ops to the output and starts an empty one. */
static int flush_piece(struct splitter *st)
{
    if (st->piece_atoms == 0) {
        return 0;
    }
    for (unsigned k = st->depth - 1; k >= 1; k--) {
        if (st->lv[k].emitted) {
            int rc = close_emitted(st, k);
            if (rc != 0) {
                return rc;
            }
        }
    }
    size_t expected = st->lv[0].base;

    /* First pass: the content length of every container, innermost first. */
    size_t acc[MAX_LEVELS + 1];
    size_t open[MAX_LEVELS + 1];
    unsigned d = 0;
    acc[0] = 0;
    for (size_t i = 0; i < st->nops; i++) {
        struct op *o = &st->ops[i];
        switch (o->kind) {
        case OP_OPEN:
            d++;
            open[d] = i;
            acc[d] = 0;
            break;
        case OP_RAW:
            acc[d] += o->len;
            break;
        default:
            st->ops[open[d]].len = acc[d];
            d--;
            acc[d] += framed(acc[d + 1]);
            break;
        }
    }
    if (d != 0 || acc[0] != expected) {
        return DLOTEL_ERR_INTERNAL;
    }

    /* Second pass: write it. */
    struct split_out *out = st->out;
    int rc = buf_reserve(&out->data, expected);
    if (rc != 0) {
        return rc;
    }
    if (out->n == out->cap) {
        size_t cap = out->cap == 0 ? 16 : out->cap * 2;
        struct split_piece *v = realloc(out->pieces, cap * sizeof(*v));
        if (v == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        out->pieces = v;
        out->cap = cap;
    }
    size_t start = out->data.len;
    uint8_t *w = out->data.data + start;
    for (size_t i = 0; i < st->nops; i++) {
        const struct op *o = &st->ops[i];
        if (o->kind == OP_OPEN) {
            *w++ = o->tag;
            uint64_t v = o->len;
            while (v >= 0x80) {
                *w++ = (uint8_t)(v | 0x80);
                v >>= 7;
            }
            *w++ = (uint8_t)v;
        } else if (o->kind == OP_RAW) {
            memcpy(w, st->src + o->off, o->len);
            w += o->len;
        }
    }
    out->data.len += expected;
    out->pieces[out->n++] = (struct split_piece){start, expected, st->piece_items};
    if (expected > st->limit) {
        out->oversized++;
    }

    st->nops = 0;
    st->lv[0].base = 0;
    st->piece_items = 0;
    st->piece_atoms = 0;
    return 0;
}

/* Adds one atom of |len| raw bytes at src[off] to level |p|, starting a new piece if needed. */
static int add_atom(struct splitter *st, unsigned p, size_t off, size_t len, uint64_t items)
{
    int rc;
    if (st->piece_atoms > 0 && size_with(st, p, len, false) > st->limit &&
        (rc = flush_piece(st)) != 0) {
        return rc;
    }
    if ((rc = ensure_emitted(st, p)) != 0 || (rc = push_op(st, OP_RAW, 0, off, len)) != 0) {
        return rc;
    }
    st->lv[p].base += len;
    st->lv[p].ever = true;
    st->piece_items += items;
    st->piece_atoms++;
    return 0;
}

/*
 * Opens a container at the next level: reads its fields once to collect the header ranges, and
 * checks that its children are length-delimited.
 */
static int open_level(struct splitter *st, uint8_t tag, size_t start, size_t end)
{
    unsigned k = st->depth;
    st->lv[k] = (struct level){.tag = tag, .hdr_first = st->nhdrs};
    size_t pos = start;
    while (pos < end) {
        struct field f;
        if (!next_field(st->src, &pos, end, &f)) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        if (is_child(st, k, f.number)) {
            if (f.wt != WT_LEN) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            continue;
        }
        int rc = push_header(st, f.start, f.end - f.start);
        if (rc != 0) {
            return rc;
        }
    }
    st->depth++;
    return 0;
}

static int close_level(struct splitter *st)
{
    unsigned k = st->depth - 1;
    struct level *l = &st->lv[k];
    int rc;
    if (!l->ever) {
        /* A container with no children is an atom of its own: kept, as its header alone. */
        if (st->piece_atoms > 0 && size_with(st, k - 1, framed(l->hdr_len), false) > st->limit &&
            (rc = flush_piece(st)) != 0) {
            return rc;
        }
        if ((rc = ensure_emitted(st, k)) != 0) {
            return rc;
        }
        st->piece_atoms++;
    }
    if (l->emitted && (rc = close_emitted(st, k)) != 0) {
        return rc;
    }
    st->nhdrs = l->hdr_first;
    st->depth--;
    st->lv[k - 1].ever = true;
    return 0;
}

/* Counts the data points of a Metric whose fields are at src[start, end). */
static int count_points(const struct splitter *st, size_t start, size_t end, uint64_t *items)
{
    uint64_t n = 0;
    size_t pos = start;
    while (pos < end) {
        struct field f;
        if (!next_field(st->src, &pos, end, &f)) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        if (!is_child(st, 3, f.number)) {
            continue;
        }
        if (f.wt != WT_LEN) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        size_t q = f.payload;
        while (q < f.end) {
            struct field g;
            if (!next_field(st->src, &q, f.end, &g)) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            if (g.number == 1) {
                if (g.wt != WT_LEN) {
                    return DLOTEL_ERR_BAD_INPUT;
                }
                n++;
            }
        }
    }
    *items = n;
    return 0;
}

static int walk(struct splitter *st, uint8_t tag, size_t start, size_t end);

/*
 * A metric is kept whole when it fits the current piece, or a new one; only a metric larger
 * than a piece of its own is cut between its data points.
 */
static int add_metric(struct splitter *st, const struct field *f)
{
    uint64_t items;
    int rc = count_points(st, f->payload, f->end, &items);
    if (rc != 0) {
        return rc;
    }
    size_t len = f->end - f->start;
    if (size_with(st, 2, len, false) <= st->limit) {
        return add_atom(st, 2, f->start, len, items);
    }
    if (size_with(st, 2, len, true) <= st->limit) {
        if ((rc = flush_piece(st)) != 0) {
            return rc;
        }
        return add_atom(st, 2, f->start, len, items);
    }
    return walk(st, 0x12, f->payload, f->end);
}

/* Opens the container at src[start, end) as the next level, walks its children, closes it. */
static int walk(struct splitter *st, uint8_t tag, size_t start, size_t end)
{
    int rc = open_level(st, tag, start, end);
    if (rc != 0) {
        return rc;
    }
    unsigned k = st->depth - 1;
    /* Items are the children of scopes (traces, logs) or of a metric's data (metrics). */
    bool leaves = (k == 2 && st->signal != OTLP_METRICS) || k == 4;
    size_t pos = start;
    while (pos < end) {
        struct field f;
        if (!next_field(st->src, &pos, end, &f)) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        if (!is_child(st, k, f.number)) {
            continue;
        }
        if (leaves) {
            rc = add_atom(st, k, f.start, f.end - f.start, 1);
        } else if (k == 2) {
            rc = add_metric(st, &f);
        } else {
            /* Fields 1 to 15 have one-byte tags: length-delimited, (number << 3) | 2. */
            rc = walk(st, (uint8_t)(f.number << 3 | WT_LEN), f.payload, f.end);
        }
        if (rc != 0) {
            return rc;
        }
    }
    return close_level(st);
}

int split_request(enum otlp_signal s, const uint8_t *pb, size_t len, size_t limit,
                  struct split_out *out)
{
    if ((unsigned)s >= OTLP_SIGNAL_COUNT) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct splitter st;
    memset(&st, 0, sizeof(st));
    st.signal = s;
    st.src = pb;
    st.limit = limit;
    st.out = out;
    st.depth = 1; /* Level 0, the request: no header, never framed. */

    int rc = 0;
    size_t pos = 0;
    while (rc == 0 && pos < len) {
        struct field f;
        if (!next_field(pb, &pos, len, &f)) {
            rc = DLOTEL_ERR_BAD_INPUT;
        } else if (f.number == 1) {
            rc = f.wt == WT_LEN ? walk(&st, 0x0a, f.payload, f.end) : DLOTEL_ERR_BAD_INPUT;
        }
    }
    if (rc == 0) {
        rc = flush_piece(&st);
    }
    free(st.ops);
    free(st.hdrs);
    return rc;
}
