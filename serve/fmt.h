/* fmt.h: a float printed exactly as printf's "%.9g" prints it (9
 * significant digits: a float32 round-trips), several times faster —
 * fsps-serve's batch output prints one per class per row. */
#ifndef FSPS_SERVE_FMT_H
#define FSPS_SERVE_FMT_H

#include <stddef.h>

#define SERVE_FMT_G9_MAX 32 /* bytes serve_fmt_g9 may write, with its NUL */

/* serve_fmt_g9 writes snprintf(buf, SERVE_FMT_G9_MAX, "%.9g", (double)f)'s
 * text, byte for byte, to buf (NUL-terminated) and returns its length.
 * Values whose rounding double arithmetic cannot decide (near a tie), and
 * those below 1e-13 or from 1e13 in magnitude, NaN and infinities are
 * printed by snprintf itself. */
size_t serve_fmt_g9(float f, char *buf);

#endif
