/* logging.h: fsps-worker's messages on stderr, as text for a person or
 * (--log-format json) one JSON object per line for a log stack, and the
 * --log-jsonl file of training progress that scripts/plot.py draws. */
#ifndef FSPS_WORKER_LOGGING_H
#define FSPS_WORKER_LOGGING_H

#include <stdint.h>
#include <stdio.h>

#include "logfmt.h"

typedef enum {
  WORKER_LOG_ERROR,
  WORKER_LOG_WARN,
  WORKER_LOG_INFO
} worker_log_level;

/* worker_log_setup sets the rank lines carry and the format (text by
 * default). Call once, before any line is logged. */
void worker_log_setup(uint32_t rank, logfmt_format format);

/* worker_log prints one message: "worker R: message" as text, or a JSON
 * object with process "fsps-worker", the rank and fields (may be NULL),
 * which text lines leave out (the message should say the same). One
 * write per line. */
void worker_log(worker_log_level level, const logfmt_fields *fields,
                const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* worker_log_fatal prints the error that ends the run: "fsps-worker R:
 * message" as text, an "error" object as JSON. */
void worker_log_fatal(const char *message);

/* worker_jsonl_open creates (truncates) the --log-jsonl file; NULL with
 * err (naming the path and the reason) when it cannot. */
FILE *worker_jsonl_open(const char *path, char *err, size_t errlen);

/* worker_jsonl_write appends {"event":E,"time":T,<fields>} and a newline
 * to f and flushes it, so a reader sees every line as soon as it is
 * written. Does nothing when f is NULL. */
void worker_jsonl_write(FILE *f, const char *event,
                        const logfmt_fields *fields);

#endif
