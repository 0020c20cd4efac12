/*
 * Wiring: the config's processors_* lists become chains, and the chains become the pipeline's
 * per-signal transforms. Kept apart from processor.c so that the chains themselves depend on
 * neither the pipeline nor the config room.
 */
#include <stdio.h>

#include "config/config.h"
#include "core/log.h"
#include "dlotel.h"
#include "pipeline/pipeline.h"
#include "processor/processor.h"

static int process(void *userdata, enum otlp_signal s, const uint8_t *pb, size_t len,
                   struct buf *out, struct otlp_counts *counts)
{
    (void)s;
    return processor_chain_run(userdata, pb, len, out, counts);
}

int processor_chains_attach(struct pipeline *p, const struct config *cfg,
                            struct processor_chain *chains[OTLP_SIGNAL_COUNT], char *why,
                            size_t why_len)
{
    const char *texts[OTLP_SIGNAL_COUNT] = {
        [OTLP_TRACES] = cfg->processors_traces,
        [OTLP_METRICS] = cfg->processors_metrics,
        [OTLP_LOGS] = cfg->processors_logs,
    };
    for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
        if (texts[s] == NULL) {
            continue;
        }
        char path[32];
        snprintf(path, sizeof(path), "processors_%s", otlp_signal_name((enum otlp_signal)s));
        int rc = processor_chain_new(&chains[s], (enum otlp_signal)s, texts[s], path, why, why_len);
        if (rc != 0) {
            if (rc == DLOTEL_ERR_NOMEM) {
                snprintf(why, why_len, "%s: out of memory", path);
            }
            return rc;
        }
    }
    for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
        if (chains[s] != NULL) {
            pipeline_set_processor(p, (enum otlp_signal)s, process, chains[s]);
            log_info("processor", "%s go through processors (decode path): %s",
                     otlp_signal_name((enum otlp_signal)s), texts[s]);
        }
    }
    return 0;
}

void processor_chains_free(struct processor_chain *chains[OTLP_SIGNAL_COUNT])
{
    for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
        processor_chain_free(chains[s]);
        chains[s] = NULL;
    }
}
