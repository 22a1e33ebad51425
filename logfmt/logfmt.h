/* logfmt.h: formats log lines as single-line JSON objects — string
 * escaping, RFC 3339 timestamps and key/value fields — for fsps-server's
 * and fsps-worker's --log-format json and fsps-worker's --log-jsonl. No I/O:
 * each binary writes the lines it gets. */
#ifndef FSPS_LOGFMT_H
#define FSPS_LOGFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { LOGFMT_TEXT, LOGFMT_JSON } logfmt_format;

/* logfmt_parse_format maps "text" and "json"; -1 if unknown. */
int logfmt_parse_format(const char *name);

/* logfmt_escape writes s as the inside of a JSON string into dst (cap > 0
 * bytes, always NUL-terminated) and returns the length written. Quotes,
 * backslashes and control characters are escaped; valid UTF-8 passes as
 * is; a byte that is not part of valid UTF-8 becomes \ufffd, so the line
 * is valid JSON whatever s holds. When dst is too small the string is cut
 * between characters, never inside an escape or a UTF-8 sequence. */
size_t logfmt_escape(char *dst, size_t cap, const char *s);

/* logfmt_time writes the current UTC time as RFC 3339 with milliseconds
 * ("2024-05-01T12:00:00.123Z") into dst (cap >= 25) and returns its
 * length. */
size_t logfmt_time(char *dst, size_t cap);

/* A set of JSON object members ("k":v,...) built one field at a time. A
 * field that does not fit is dropped whole and `truncated` set, so the
 * members written always form valid JSON. */
typedef struct {
  char buf[768];
  size_t len;
  bool truncated;
} logfmt_fields;

/* logfmt_fields_init empties f. */
void logfmt_fields_init(logfmt_fields *f);

/* logfmt_field_str adds "key":"value" (value escaped; NULL gives null). */
void logfmt_field_str(logfmt_fields *f, const char *key, const char *value);

/* logfmt_field_u64 adds "key":value as an integer. */
void logfmt_field_u64(logfmt_fields *f, const char *key, uint64_t value);

/* logfmt_field_num adds "key":value with up to `digits` significant
 * digits; NaN and infinities, which JSON cannot hold, give null. */
void logfmt_field_num(logfmt_fields *f, const char *key, double value,
                      int digits);

/* logfmt_line formats one log record into line (cap bytes) as
 *   {"time":T,"level":L,"process":P,<ident>,"message":M,"fields":{...}}\n
 * where ident holds the process's own members (e.g. index or rank; may be
 * NULL) and fields may be NULL ({}). The message is cut to fit cap; the
 * rest always fits when cap >= 1024 + the fields' and ident's lengths.
 * Returns the line's length including the newline, 0 if cap is too small
 * even for that. */
size_t logfmt_line(char *line, size_t cap, const char *level,
                   const char *process, const logfmt_fields *ident,
                   const char *message, const logfmt_fields *fields);

#endif
