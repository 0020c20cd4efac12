/*
 * dlotel-config-doc: prints docs/configuration.md, generated from the option tables.
 *
 *   dlotel-config-doc                  the Markdown on stdout
 *   dlotel-config-doc --output FILE    written to FILE (the config-docs build target)
 *   dlotel-config-doc --check FILE     exit 1 when FILE differs (the config.docs_fresh test)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "dlotel.h"

static int read_file(const char *path, struct buf *out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return -1;
    }
    char chunk[4096];
    size_t n;
    int rv = 0;
    while (rv == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        rv = buf_append(out, chunk, n);
    }
    if (ferror(f)) {
        rv = -1;
    }
    fclose(f);
    return rv;
}

int main(int argc, char **argv)
{
    struct buf md;
    buf_init(&md, 4u * 1024u * 1024u);
    if (config_markdown(&md) != 0) {
        fprintf(stderr, "dlotel-config-doc: cannot generate the Markdown\n");
        return 2;
    }
    int status = 0;
    if (argc == 3 && strcmp(argv[1], "--check") == 0) {
        struct buf cur;
        buf_init(&cur, 16u * 1024u * 1024u);
        if (read_file(argv[2], &cur) != 0 || cur.len != md.len ||
            (md.len > 0 && memcmp(cur.data, md.data, md.len) != 0)) {
            fprintf(stderr,
                    "%s is stale: it is generated from agent/config/config_table.c.\n"
                    "Regenerate it with:  cmake --build <build dir> --target config-docs\n"
                    "(or: <build dir>/bin/dlotel-config-doc --output %s)\n",
                    argv[2], argv[2]);
            status = 1;
        }
        buf_cleanup(&cur);
    } else if (argc == 3 && strcmp(argv[1], "--output") == 0) {
        FILE *f = fopen(argv[2], "wb");
        if (f == NULL || fwrite(md.data, 1, md.len, f) != md.len || fclose(f) != 0) {
            perror(argv[2]);
            status = 2;
        }
    } else if (argc == 1) {
        if (fwrite(md.data, 1, md.len, stdout) != md.len) {
            status = 2;
        }
    } else {
        fprintf(stderr, "usage: dlotel-config-doc [--check FILE | --output FILE]\n");
        status = 2;
    }
    buf_cleanup(&md);
    return status;
}
