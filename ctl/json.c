/* json.c: the little JSON fsps-ctl writes (status --json): strings with
 * RFC 8259 escapes and arrays of numbers. */
#include <inttypes.h>

#include "ctl.h"

void ctl_json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p == '\n')
      fputs("\\n", f);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

void ctl_json_ids(FILE *f, const uint32_t *ids, uint32_t n) {
  fputc('[', f);
  for (uint32_t i = 0; i < n; i++)
    fprintf(f, "%s%" PRIu32, i ? "," : "", ids[i]);
  fputc(']', f);
}

void ctl_json_u64s(FILE *f, const uint64_t *v, uint32_t n) {
  fputc('[', f);
  for (uint32_t i = 0; i < n; i++)
    fprintf(f, "%s%" PRIu64, i ? "," : "", v[i]);
  fputc(']', f);
}
