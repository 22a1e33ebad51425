/* errmsg.c: fills a caller's error buffer with a formatted message. */
#include <stdarg.h>
#include <stdio.h>

#include "errmsg.h"

void worker_errmsg_set(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}
