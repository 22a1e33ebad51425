/* table.c: fsps-ctl's aligned text tables (columns padded to their widest
 * cell, two spaces apart, no trailing blanks). */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

void ctl_table_init(ctl_table *t, uint32_t ncols, const char *const *header) {
  *t = (ctl_table){.ncols = ncols};
  ctl_table_row(t, header);
}

bool ctl_table_row(ctl_table *t, const char *const *cells) {
  if (t->nrows == t->cap) {
    uint32_t cap = t->cap ? 2 * t->cap : 16;
    char **p = realloc(t->cells, (size_t)cap * t->ncols * sizeof *p);
    if (p == NULL)
      return false;
    t->cells = p;
    t->cap = cap;
  }
  char **row = t->cells + (size_t)t->nrows * t->ncols;
  for (uint32_t i = 0; i < t->ncols; i++)
    row[i] = strdup(cells[i] ? cells[i] : "");
  t->nrows++;
  return true;
}

void ctl_table_print(const ctl_table *t, FILE *f) {
  size_t w[CTL_TABLE_MAX_COLS] = {0};
  for (uint32_t r = 0; r < t->nrows; r++)
    for (uint32_t i = 0; i < t->ncols && i < CTL_TABLE_MAX_COLS; i++) {
      const char *cell = t->cells[(size_t)r * t->ncols + i];
      size_t n = cell ? strlen(cell) : 0;
      w[i] = n > w[i] ? n : w[i];
    }
  for (uint32_t r = 0; r < t->nrows; r++) {
    for (uint32_t i = 0; i < t->ncols && i < CTL_TABLE_MAX_COLS; i++) {
      const char *cell = t->cells[(size_t)r * t->ncols + i];
      bool last = i + 1 == t->ncols;
      fprintf(f, "%s%-*s", i ? "  " : "", last ? 0 : (int)w[i],
              cell ? cell : "");
    }
    fputc('\n', f);
  }
}

void ctl_table_free(ctl_table *t) {
  for (size_t i = 0; i < (size_t)t->nrows * t->ncols; i++)
    free(t->cells[i]);
  free(t->cells);
  *t = (ctl_table){0};
}
