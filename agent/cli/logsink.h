/*
 * The agent's log destination: stderr or a file rotated at a size, text or JSON lines. See
 * logsink.c for how it sits under core/log without changing it.
 */
#ifndef DLOTEL_CLI_LOGSINK_H
#define DLOTEL_CLI_LOGSINK_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Sends core/log's lines to |path| (NULL: stderr), as JSON objects when |json|, rotating |path|
 * to |path|.1 before a line would take it past |max_size| bytes. The file is created 0600.
 * Returns 0, or -1 with errno set (the file cannot be opened).
 */
int cli_log_open(const char *path, bool json, uint64_t max_size);

/* Writes what is pending, closes the file and puts core/log back on stderr. */
void cli_log_close(void);

#endif
