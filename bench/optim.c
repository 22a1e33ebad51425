/* bench/optim.c: optimizer throughput on one large slice, for each
 * instruction set the kernels run on here, printed beside the single-thread
 * memory bandwidth (STREAM copy and triads) of the same run. */

#include "optim.h"

#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { DEFAULT_ELEMENTS = 64 * 1024 * 1024, DEFAULT_REPS = 5 };

typedef struct {
  const char *name;
  optim_kind kind;
  double momentum;
  int floats_moved; /* floats read + written per element */
} bench_case;

/* Bytes per element count each array once per read and once per write, as
 * STREAM counts its own loops: SGD reads p, g and writes p; momentum adds
 * b read and written; Adam reads p, g, m, v and writes p, m, v. */
static const bench_case CASES[] = {
    {"sgd", OPTIM_SGD, 0.0, 3},         {"sgd_momentum", OPTIM_SGD, 0.9, 5},
    {"adam", OPTIM_ADAM, 0.0, 7},       {"adamw", OPTIM_ADAMW, 0.0, 7},
    {"adagrad", OPTIM_ADAGRAD, 0.0, 5},
};

enum { NISA = OPTIM_ISA_AVX512 + 1, NCASES = sizeof CASES / sizeof CASES[0] };

typedef struct {
  size_t n;
  int reps;
  int nisa;
  optim_isa isas[NISA]; /* the paths to time, in order */
} options;

typedef struct {
  float *param, *grad, *state; /* state holds 2n floats (Adam's m and v) */
  double *ratio;               /* one per timed step */
} buffers;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: optim [--elements N] [--reps R] [--isa LIST] [--help]\n"
          "  Times SGD, SGD+momentum, Adam, AdamW and Adagrad on one slice\n"
          "  of N floats (default %d), best of R timed steps (default %d)\n"
          "  after a warm-up step, on each instruction set in LIST (comma-\n"
          "  separated portable, avx2, avx512; default every one this CPU\n"
          "  runs), beside the memory bandwidth: the best of R STREAM copy,\n"
          "  triad and in-place triad passes over the same buffers, before,\n"
          "  between the instruction sets and after (\"ratio\": best step\n"
          "  against best bandwidth); and \"paired_ratio\": the median over\n"
          "  the R steps of each step's bytes/s against an in-place triad's\n"
          "  run just before it. One thread throughout. Prints one JSON\n"
          "  object per line; the first names the path the server would\n"
          "  run (FSPS_OPTIM_ISA caps it).\n",
          DEFAULT_ELEMENTS, DEFAULT_REPS);
}

/* Parses a positive integer no larger than max; returns 0 on success. */
static int parse_count(const char *s, unsigned long long max,
                       unsigned long long *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v == 0 || v > max ||
      s[0] == '-')
    return -1;
  *out = v;
  return 0;
}

/* Every instruction set this CPU runs, narrowest first. */
static void all_isas(options *o) {
  o->nisa = 0;
  for (int i = 0; i < NISA; i++)
    if (optim_isa_supported((optim_isa)i))
      o->isas[o->nisa++] = (optim_isa)i;
}

/* Parses a comma-separated list of supported instruction sets; returns 0,
 * or -1 after reporting the offending name. */
static int parse_isas(const char *list, options *o) {
  char buf[64];
  if (strlen(list) >= sizeof buf)
    return -1;
  strcpy(buf, list);
  o->nisa = 0;
  for (char *save, *name = strtok_r(buf, ",", &save); name != NULL;
       name = strtok_r(NULL, ",", &save)) {
    optim_isa isa;
    if (optim_isa_parse(name, &isa) != 0 || !optim_isa_supported(isa) ||
        o->nisa == NISA) {
      fprintf(stderr, "optim: '%s' is not an instruction set this CPU runs\n",
              name);
      return -1;
    }
    o->isas[o->nisa++] = isa;
  }
  return o->nisa > 0 ? 0 : -1;
}

/* Applies one option and its value; returns 0, or -1 if either is bad. */
static int parse_option(const char *opt, const char *val, options *o) {
  unsigned long long v;
  if (strcmp(opt, "--isa") == 0)
    return parse_isas(val, o);
  bool elems = strcmp(opt, "--elements") == 0;
  if (!elems && strcmp(opt, "--reps") != 0)
    return -1;
  if (parse_count(val, elems ? (1ULL << 40) : 1000000, &v) != 0)
    return -1;
  if (elems)
    o->n = (size_t)v;
  else
    o->reps = (int)v;
  return 0;
}

/* Returns 0 to run, 1 after --help, -1 on a bad argument (reported). */
static int parse_args(int argc, char **argv, options *o) {
  o->n = DEFAULT_ELEMENTS;
  o->reps = DEFAULT_REPS;
  all_isas(o);
  for (int i = 1; i < argc; i += 2) { /* an option and its value */
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 1;
    }
    if (i + 1 >= argc || parse_option(argv[i], argv[i + 1], o) != 0) {
      fprintf(stderr, "optim: bad argument '%s'\n", argv[i]);
      usage(stderr);
      return -1;
    }
  }
  return 0;
}

static float *alloc_floats(size_t n) {
  size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  return aligned_alloc(64, bytes);
}

static int alloc_buffers(buffers *b, size_t n, int reps) {
  b->param = alloc_floats(n);
  b->grad = alloc_floats(n);
  b->state = alloc_floats(2 * n);
  b->ratio = malloc((size_t)reps * sizeof *b->ratio);
  return b->param && b->grad && b->state && b->ratio ? 0 : -1;
}

static void free_buffers(buffers *b) {
  free(b->param);
  free(b->grad);
  free(b->state);
  free(b->ratio);
}

/* Deterministic values in [-1, 1) from a 32-bit LCG: parameters of order 1,
 * gradients of order 1e-2, so no denormals slow the loops down. Writing
 * every element also takes all page faults before anything is timed. */
static void fill(const buffers *b, size_t n) {
  uint32_t x = 12345;
  for (size_t i = 0; i < n; i++) {
    x = x * 1664525u + 1013904223u;
    b->param[i] = (float)(x >> 8) / 8388608.0f - 1.0f;
    x = x * 1664525u + 1013904223u;
    b->grad[i] = 0.01f * ((float)(x >> 8) / 8388608.0f - 1.0f);
  }
  memset(b->state, 0, 2 * n * sizeof(float));
}

/* The STREAM loops are compiled for the widest vectors too (one clone per
 * instruction set, chosen by the loader), so the limit they measure is not
 * held down by baseline SSE while the optimizers run AVX-512. Not under
 * ThreadSanitizer, whose runtime is not up when the loader resolves clones. */
#if defined(__SANITIZE_THREAD__)
#define BENCH_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BENCH_TSAN 1
#endif
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) &&        \
    !defined(BENCH_TSAN)
#define WIDEST                                                                 \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WIDEST
#endif

WIDEST
static double stream_copy(float *restrict c, const float *restrict a,
                          size_t n) {
  double t0 = now();
  for (size_t i = 0; i < n; i++)
    c[i] = a[i];
  return now() - t0;
}

WIDEST
static double stream_triad(float *restrict a, const float *restrict b,
                           const float *restrict c, size_t n) {
  const float q = 3.0f;
  double t0 = now();
  for (size_t i = 0; i < n; i++)
    a[i] = b[i] + q * c[i];
  return now() - t0;
}

/* Triad in place, a = a + q*b, the access pattern of the optimizers. */
WIDEST
static double stream_update(float *restrict a, const float *restrict b,
                            size_t n) {
  const float q = 3.0f;
  double t0 = now();
  for (size_t i = 0; i < n; i++)
    a[i] = a[i] + q * b[i];
  return now() - t0;
}

static double max3(double a, double b, double c) {
  double m = a > b ? a : b;
  return m > c ? m : c;
}

/* Best bandwidth over `reps` passes of STREAM's copy and triad and of an
 * in-place triad, in bytes/s counted as STREAM does (copy 2 arrays, triads
 * 3); returns the largest. STREAM's count leaves out the read-for-ownership
 * a cache does before writing an array it has not read (copy and triad
 * write c and a fresh), so those two understate what memory delivers to an
 * in-place update such as an optimizer; the in-place triad moves exactly
 * the bytes it is credited with. */
static double bandwidth_limit(const buffers *b, size_t n, int reps) {
  double copy = 1e30, triad = 1e30, update = 1e30;
  for (int r = 0; r < reps + 1; r++) { /* pass 0 is a warm-up */
    double tc = stream_copy(b->state, b->param, n);
    double tt = stream_triad(b->param, b->grad, b->state, n);
    double tu = stream_update(b->param, b->grad, n);
    if (r == 0)
      continue;
    copy = tc < copy ? tc : copy;
    triad = tt < triad ? tt : triad;
    update = tu < update ? tu : update;
  }
  double bytes = (double)n * sizeof(float);
  double copy_bw = 2 * bytes / copy, triad_bw = 3 * bytes / triad;
  double update_bw = 3 * bytes / update;
  fprintf(stderr,
          "optim: copy %.4e B/s, triad %.4e B/s, in-place triad %.4e B/s "
          "(best of %d)\n",
          copy_bw, triad_bw, update_bw, reps);
  return max3(copy_bw, triad_bw, update_bw);
}

/* One case's timing: its best step, and the median over its steps of the
 * ratio of its bytes/s to an in-place triad's run just before that step. */
typedef struct {
  double best;   /* seconds */
  double paired; /* median back-to-back ratio to the in-place triad */
} timing;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median of r[0..n), n >= 1; sorts r. */
static double median(double *r, int n) {
  qsort(r, (size_t)n, sizeof *r, cmp_double);
  return n % 2 ? r[n / 2] : 0.5 * (r[n / 2 - 1] + r[n / 2]);
}

/* Times `reps` optim_steps after one warm-up step, from freshly filled
 * buffers, each right after an in-place triad over p and g: a load that
 * drifts over seconds slows both alike, so their ratio holds steadier than
 * a ratio of bests taken minutes apart. (The triad moves p by 3g a pass,
 * which keeps every value of order 1.) */
static timing time_case(const bench_case *c, const buffers *b, size_t n,
                        int reps) {
  optim_config cfg;
  optim_config_defaults(c->kind, &cfg);
  cfg.momentum = c->momentum;
  fill(b, n);
  optim_state_init(&cfg, b->state, n);
  timing tm = {1e30, 0.0};
  for (uint64_t t = 1; t <= (uint64_t)reps + 1; t++) {
    double triad = stream_update(b->param, b->grad, n);
    double t0 = now();
    optim_step(&cfg, t, cfg.lr, 0.5f, b->param, b->grad, b->state, n);
    double dt = now() - t0;
    if (t == 1)
      continue;
    tm.best = dt < tm.best ? dt : tm.best;
    b->ratio[t - 2] = (c->floats_moved * triad) / (3.0 * dt);
  }
  tm.paired = median(b->ratio, reps);
  return tm;
}

/* Prints s as the contents of a JSON string. */
static void print_json_string(const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      printf("\\%c", *s);
    else if ((unsigned char)*s < 0x20)
      printf("\\u%04x", (unsigned)(unsigned char)*s);
    else
      putchar(*s);
  }
}

static void print_header(void) {
  printf("{\"bench\":\"optim\",\"openblas_config\":\"");
  print_json_string(openblas_get_config());
  printf("\",\"threads\":1,\"isa\":\"%s\"}\n",
         optim_isa_name(optim_isa_current()));
}

static void print_case(const bench_case *c, optim_isa isa, size_t n, timing tm,
                       double limit) {
  double eps = (double)n / tm.best;
  double bps = eps * c->floats_moved * sizeof(float);
  printf("{\"bench\":\"optim\",\"isa\":\"%s\",\"optimizer\":\"%s\","
         "\"elements\":%zu,\"elements_per_s\":%.4e,\"bytes_per_s\":%.4e,"
         "\"limit_bytes_per_s\":%.4e,\"ratio\":%.3f,"
         "\"paired_ratio\":%.3f}\n",
         optim_isa_name(isa), c->name, n, eps, bps, limit, bps / limit,
         tm.paired);
  fflush(stdout);
}

/* Times every case on every instruction set of o into seconds[isa][case];
 * returns the best bandwidth measured before, between and after them. The
 * bandwidth of a shared machine drifts: every figure is held against the
 * best seen, so a lull in the load cannot flatter a ratio. */
static double run_all(const options *o, const buffers *b, timing tm[][NCASES]) {
  optim_isa chosen = optim_isa_current();
  fill(b, o->n);
  double limit = bandwidth_limit(b, o->n, o->reps);
  for (int k = 0; k < o->nisa; k++) {
    optim_isa_set(o->isas[k]);
    for (size_t i = 0; i < NCASES; i++)
      tm[k][i] = time_case(&CASES[i], b, o->n, o->reps);
    double bw = bandwidth_limit(b, o->n, o->reps);
    limit = bw > limit ? bw : limit;
  }
  optim_isa_set(chosen);
  return limit;
}

int main(int argc, char **argv) {
  options o;
  int rc = parse_args(argc, argv, &o);
  if (rc != 0)
    return rc > 0 ? 0 : 2;
  /* One thread everywhere: the optimizer and the STREAM loops are plain
   * single-threaded C, and BLAS is kept from spawning threads of its own. */
  openblas_set_num_threads(1);
  buffers b;
  if (alloc_buffers(&b, o.n, o.reps) != 0) {
    fprintf(stderr, "optim: cannot allocate 4 x %zu floats\n", o.n);
    free_buffers(&b);
    return 1;
  }
  print_header();
  fflush(stdout);
  timing tm[NISA][NCASES];
  double limit = run_all(&o, &b, tm);
  for (int k = 0; k < o.nisa; k++)
    for (size_t i = 0; i < NCASES; i++)
      print_case(&CASES[i], o.isas[k], o.n, tm[k][i], limit);
  free_buffers(&b);
  return 0;
}
