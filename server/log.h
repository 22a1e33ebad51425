/* log.h: the server's leveled log lines on stderr. */
#ifndef FSPS_SERVER_LOG_H
#define FSPS_SERVER_LOG_H

typedef enum { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG } log_level;

/* server_log_set sets the lowest level printed and the tag each line carries
 * (e.g. "server 1/2"). Call once at start-up, before threads. */
void server_log_set(log_level level, const char *tag);

/* server_log_parse_level maps "error", "warn", "info", "debug"; -1 if unknown.
 */
int server_log_parse_level(const char *name);

/* server_log_msg prints one line "TIME LEVEL [tag] message" if level is
 * enabled. Thread-safe (one write per line). */
void server_log_msg(log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define LOGE(...) server_log_msg(LOG_ERROR, __VA_ARGS__)
#define LOGW(...) server_log_msg(LOG_WARN, __VA_ARGS__)
#define LOGI(...) server_log_msg(LOG_INFO, __VA_ARGS__)
#define LOGD(...) server_log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
