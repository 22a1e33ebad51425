/* errmsg.h: the one helper fsps-worker's modules share to fill a caller's
 * error buffer. */
#ifndef FSPS_WORKER_ERRMSG_H
#define FSPS_WORKER_ERRMSG_H

#include <stddef.h>

/* worker_errmsg_set formats into err (nothing when err is NULL or errlen 0). */
void worker_errmsg_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
