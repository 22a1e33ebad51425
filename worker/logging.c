/* logging.c: fsps-worker's stderr messages (text or JSON lines, through
 * logfmt) and its --log-jsonl progress file. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "errmsg.h"
#include "logging.h"

static uint32_t g_rank;
static logfmt_format g_format = LOGFMT_TEXT;
static logfmt_fields g_ident; /* JSON: "rank":r */

void worker_log_setup(uint32_t rank, logfmt_format format) {
  g_rank = rank;
  g_format = format;
  logfmt_fields_init(&g_ident);
  logfmt_field_u64(&g_ident, "rank", rank);
}

/* emit writes msg as a line, text prefixed by text_prefix. */
static void emit(worker_log_level level, const logfmt_fields *fields,
                 const char *text_prefix, const char *msg) {
  static const char *names[] = {"error", "warn", "info"};
  char line[4096];
  size_t n;
  if (g_format == LOGFMT_JSON)
    n = logfmt_line(line, sizeof line, names[level], "fsps-worker", &g_ident,
                    msg, fields);
  else {
    int m =
        snprintf(line, sizeof line - 1, "%s %u: %s", text_prefix, g_rank, msg);
    n = m < 0 ? 0 : (size_t)m > sizeof line - 2 ? sizeof line - 2 : (size_t)m;
    line[n++] = '\n';
  }
  ssize_t w = write(STDERR_FILENO, line, n);
  (void)w;
}

void worker_log(worker_log_level level, const logfmt_fields *fields,
                const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  emit(level, fields, "worker", msg);
}

void worker_log_fatal(const char *message) {
  emit(WORKER_LOG_ERROR, NULL, "fsps-worker", message);
}

FILE *worker_jsonl_open(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "w");
  if (f == NULL)
    worker_errmsg_set(err, errlen, "cannot write --log-jsonl %.900s: %s", path,
                      strerror(errno));
  return f;
}

void worker_jsonl_write(FILE *f, const char *event,
                        const logfmt_fields *fields) {
  if (f == NULL)
    return;
  char t[40], ev[64];
  logfmt_time(t, sizeof t);
  logfmt_escape(ev, sizeof ev, event);
  fprintf(f, "{\"event\":\"%s\",\"time\":\"%s\"%s%s}\n", ev, t,
          fields && fields->len ? "," : "", fields ? fields->buf : "");
  fflush(f);
}
