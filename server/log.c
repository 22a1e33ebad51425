/* log.c: leveled, timestamped log lines on stderr, as text or as JSON
 * objects (logfmt), one write(2) each so that lines from several threads
 * never interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static log_level g_level = LOG_INFO;
static char g_tag[64] = "fsps-server";
static logfmt_format g_format = LOGFMT_TEXT;
static logfmt_fields g_ident; /* JSON: "index":s,"num_servers":S */

void server_log_set(log_level level, const char *tag) {
  g_level = level;
  snprintf(g_tag, sizeof g_tag, "%s", tag);
}

void server_log_set_format(logfmt_format format, uint32_t index,
                           uint32_t num_servers) {
  g_format = format;
  logfmt_fields_init(&g_ident);
  logfmt_field_u64(&g_ident, "index", index);
  logfmt_field_u64(&g_ident, "num_servers", num_servers);
}

int server_log_parse_level(const char *name) {
  static const char *names[] = {"error", "warn", "info", "debug"};
  for (int i = 0; i < 4; i++)
    if (strcmp(name, names[i]) == 0)
      return i;
  return -1;
}

/* text_line formats "TIME LEVEL [tag] message\n" into line (1024 bytes). */
static size_t text_line(char *line, log_level level, const char *msg) {
  static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
  const size_t cap = 1024;
  char t[40];
  logfmt_time(t, sizeof t);
  int n =
      snprintf(line, cap - 1, "%s %-5s [%s] %s", t, names[level], g_tag, msg);
  size_t len = n < 0 ? 0 : (size_t)n > cap - 2 ? cap - 2 : (size_t)n;
  line[len++] = '\n';
  return len;
}

static void vlog(log_level level, const logfmt_fields *fields, const char *fmt,
                 va_list ap) {
  static const char *names[] = {"error", "warn", "info", "debug"};
  if (level > g_level)
    return;
  char msg[1024], line[4096];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = g_format == LOGFMT_JSON
                 ? logfmt_line(line, sizeof line, names[level], "fsps-server",
                               &g_ident, msg, fields)
                 : text_line(line, level, msg);
  ssize_t w = write(STDERR_FILENO, line, n);
  (void)w;
}

void server_log_msg(log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, NULL, fmt, ap);
  va_end(ap);
}

void server_log_fields(log_level level, const logfmt_fields *fields,
                       const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, fields, fmt, ap);
  va_end(ap);
}
