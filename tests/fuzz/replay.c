/* replay.c: a plain main() for the fuzz targets, without libFuzzer — runs
 * LLVMFuzzerTestOneInput once on each file named, or on each file in each
 * folder named (the committed corpus), so every build tests every seed. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* run_file hands the whole of path to the target, in a buffer of exactly
 * its size so that AddressSanitizer sees a read past the input's end.
 * 0, or -1 when the file cannot be read. */
static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  struct stat sb;
  if (f == NULL || fstat(fileno(f), &sb) != 0) {
    fprintf(stderr, "replay: cannot read %s\n", path);
    if (f)
      fclose(f);
    return -1;
  }
  size_t n = (size_t)sb.st_size;
  uint8_t *data = malloc(n ? n : 1);
  size_t got = data ? fread(data, 1, n, f) : 0;
  fclose(f);
  if (data == NULL || got != n) {
    fprintf(stderr, "replay: cannot read %s\n", path);
    free(data);
    return -1;
  }
  fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
  LLVMFuzzerTestOneInput(data, n);
  free(data);
  return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b) {
  return strcmp((*a)->d_name, (*b)->d_name);
}

/* run_dir replays the regular files of dir in name order; returns how
 * many, or -1 when dir cannot be listed or a file cannot be read. */
static int run_dir(const char *dir) {
  struct dirent **names;
  int n = scandir(dir, &names, NULL, by_name), done = 0;
  if (n < 0) {
    fprintf(stderr, "replay: cannot list %s\n", dir);
    return -1;
  }
  for (int i = 0; i < n; i++) {
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
      done = done < 0 || run_file(path) < 0 ? -1 : done + 1;
    free(names[i]);
  }
  free(names);
  return done;
}

int main(int argc, char **argv) {
  int total = 0;
  for (int i = 1; i < argc; i++) {
    struct stat sb;
    int n = stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode)
                ? run_dir(argv[i])
                : (run_file(argv[i]) < 0 ? -1 : 1);
    if (n < 0)
      return 1;
    total += n;
  }
  if (total == 0) { /* an empty corpus would pass without testing */
    fprintf(stderr, "replay: no input files in the arguments\n");
    return 1;
  }
  printf("replay: %d input(s) ran\n", total);
  return 0;
}
