/* log.h: the server's leveled log lines on stderr, as text for a person or
 * (--log-format json) one JSON object per line for a log stack. */
#ifndef FSPS_SERVER_LOG_H
#define FSPS_SERVER_LOG_H

#include <stdint.h>

#include "logfmt.h"

typedef enum { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG } log_level;

/* server_log_set sets the lowest level printed and the tag each line carries
 * (e.g. "server 1/2"). Call once at start-up, before threads. */
void server_log_set(log_level level, const char *tag);

/* server_log_set_format chooses text (the default) or JSON lines; JSON
 * lines name the process "fsps-server" and carry its index and the number
 * of servers. Call once at start-up, before threads. */
void server_log_set_format(logfmt_format format, uint32_t index,
                           uint32_t num_servers);

/* server_log_parse_level maps "error", "warn", "info", "debug"; -1 if unknown.
 */
int server_log_parse_level(const char *name);

/* server_log_msg prints one line "TIME LEVEL [tag] message" if level is
 * enabled. Thread-safe (one write per line). */
void server_log_msg(log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* server_log_fields is server_log_msg with key/values: JSON lines carry
 * them as "fields" (text lines show the message only, which should say the
 * same). fields may be NULL. */
void server_log_fields(log_level level, const logfmt_fields *fields,
                       const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOGE(...) server_log_msg(LOG_ERROR, __VA_ARGS__)
#define LOGW(...) server_log_msg(LOG_WARN, __VA_ARGS__)
#define LOGI(...) server_log_msg(LOG_INFO, __VA_ARGS__)
#define LOGD(...) server_log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
