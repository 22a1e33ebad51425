/* log.h: the server's leveled log lines on stderr. */
#ifndef FSPS_SERVER_LOG_H
#define FSPS_SERVER_LOG_H

typedef enum { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG } log_level;

/* log_set sets the lowest level printed and the tag each line carries
 * (e.g. "server 1/2"). Call once at start-up, before threads. */
void log_set(log_level level, const char *tag);

/* log_parse_level maps "error", "warn", "info", "debug"; -1 if unknown. */
int log_parse_level(const char *name);

/* log_msg prints one line "TIME LEVEL [tag] message" if level is enabled.
 * Thread-safe (one write per line). */
void log_msg(log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define LOGE(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define LOGW(...) log_msg(LOG_WARN, __VA_ARGS__)
#define LOGI(...) log_msg(LOG_INFO, __VA_ARGS__)
#define LOGD(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
