/* opts.c: fsps-worker's flags, table-driven: each flag has a type, a range
 * and an FSPS_* variable read first, so the command line overrides it. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "opts.h"

#ifndef FSPS_VERSION
#define FSPS_VERSION "0.0.0"
#endif

typedef enum { T_STR, T_U32, T_U64, T_DBL, T_FLAG } opt_type;

typedef struct {
  const char *name, *env, *help;
  opt_type type;
  size_t off, size;
  double lo, hi;
} opt_def;

#define F(field) offsetof(worker_opts, field), sizeof(((worker_opts *)0)->field)

static const opt_def defs[] = {
    {"servers", "FSPS_SERVERS", "host:port,... of every server, index order",
     T_STR, F(servers), 0, 0},
    {"rank", "FSPS_RANK", "this worker's rank, 0-based (0)", T_U32, F(rank), 0,
     65535},
    {"world", "FSPS_WORLD", "number of workers W (1)", T_U32, F(world), 1,
     65536},
    {"model", "FSPS_MODEL", "network (mlp:784,256,128,10)", T_STR, F(model), 0,
     0},
    {"optimizer", "FSPS_OPTIMIZER", "sgd, adam, adamw or adagrad (adam)", T_STR,
     F(optimizer), 0, 0},
    {"schedule", "FSPS_SCHEDULE",
     "learning-rate schedule: constant, or cosine to 0 over the run "
     "(constant)",
     T_STR, F(schedule), 0, 0},
    {"lr", "FSPS_LR", "learning rate (0.001)", T_DBL, F(lr), 0, 100},
    {"weight-decay", "FSPS_WEIGHT_DECAY", "weight decay (0)", T_DBL,
     F(weight_decay), 0, 10},
    {"momentum", "FSPS_MOMENTUM", "SGD momentum (0)", T_DBL, F(momentum), 0, 1},
    {"batch", "FSPS_BATCH", "samples per step on this worker (64)", T_U32,
     F(batch), 1, 1 << 20},
    {"epochs", "FSPS_EPOCHS", "passes over the training data (1)", T_U32,
     F(epochs), 1, 100000},
    {"seed", "FSPS_SEED", "seed of initialisation and shuffling (1)", T_U64,
     F(seed), 0, 1.8e19},
    {"prefetch", "FSPS_PREFETCH", "layers gathered ahead (1)", T_U32,
     F(prefetch), 0, 64},
    {"reshard-after-forward", "FSPS_RESHARD_AFTER_FORWARD",
     "free each layer after forward, re-gather it for backward", T_FLAG,
     F(reshard), 0, 0},
    {"piece-mb", "FSPS_PIECE_MB",
     "gather, compute and push layers above this many MiB in row blocks of "
     "at most that size, so a worker never holds a whole layer (0 = whole "
     "layers)",
     T_DBL, F(piece_mb), 0, 1e6},
    {"mode", "FSPS_MODE", "bsp, ssp or asp, as the servers (bsp)", T_STR,
     F(mode), 0, 0},
    {"staleness", "FSPS_STALENESS", "SSP: steps ahead allowed (0)", T_U32,
     F(staleness), 0, 1000},
    {"data-dir", "FSPS_DATA_DIR",
     "Fashion-MNIST IDX files (/usr/share/datasets/fashion-mnist)", T_STR,
     F(data_dir), 0, 0},
    {"synthetic", "FSPS_SYNTHETIC",
     "train on N synthetic samples instead of the files (0)", T_U32,
     F(synthetic), 0, 1 << 30},
    {"train-limit", "FSPS_TRAIN_LIMIT",
     "use only the first N training samples (0 = all)", T_U32, F(train_limit),
     0, 1 << 30},
    {"max-steps", "FSPS_MAX_STEPS", "stop after N steps (0 = all epochs)",
     T_U64, F(max_steps), 0, 1e15},
    {"normalize", "FSPS_NORMALIZE", "normalise inputs (mean 0.286, std 0.353)",
     T_FLAG, F(normalize), 0, 0},
    {"local", "FSPS_LOCAL",
     "no servers: run the same compute on a local copy of the parameters "
     "(a benchmark's limit)",
     T_FLAG, F(local), 0, 0},
    {"no-eval", "FSPS_NO_EVAL", "skip the test-set evaluation", T_FLAG, F(eval),
     0, 0},
    {"progress-secs", "FSPS_PROGRESS_SECS",
     "seconds between progress lines (5)", T_DBL, F(progress_secs), 0, 1e6},
    {"timeout-ms", "FSPS_TIMEOUT_MS", "deadline of each call (120000)", T_U64,
     F(timeout_ms), 1, 1e9},
    {"dump", "FSPS_DUMP", "write the final parameters to this file", T_STR,
     F(dump), 0, 0},
    {"log-format", "FSPS_LOG_FORMAT",
     "stderr as text, or json: one object per line (text)", T_STR,
     F(log_format), 0, 0},
    {"log-jsonl", "FSPS_LOG_JSONL",
     "write a JSON line per progress tick and per epoch to this file "
     "(scripts/plot.py draws it)",
     T_STR, F(log_jsonl), 0, 0},
    {"metrics-listen", "FSPS_METRICS_LISTEN",
     "serve Prometheus metrics at http://ADDR/metrics and a status page at "
     "http://ADDR/ (host:port; port 0 picks a free one; off)",
     T_STR, F(metrics_listen), 0, 0},
    {"metrics-port-file", "FSPS_METRICS_PORT_FILE",
     "write the metrics port here once listening", T_STR,
     F(metrics_port_file), 0, 0},
    {"wire-dtype", "FSPS_WIRE_DTYPE",
     "gather parameters and push gradients as fp32 or bf16 (bfloat16, half "
     "the bytes; servers keep fp32 and sum in fp32); part of the model, so "
     "every worker must give the same (fp32)",
     T_STR, F(wire_dtype), 0, 0},
    /* The token itself is never a flag: a command line shows in ps. */
    {"token-file", "FSPS_TOKEN_FILE",
     "file holding the bearer token for servers with --auth-tokens (else "
     "the variable FSPS_TOKEN holds it; none: no token)",
     T_STR, F(token_file), 0, 0},
    {"tls-ca", "FSPS_TLS_CA",
     "TLS to the servers: PEM file of the CAs that sign their certificates "
     "(off)",
     T_STR, F(tls_ca), 0, 0},
    {"tls-cert", "FSPS_TLS_CERT",
     "mutual TLS: PEM file of this worker's certificate chain", T_STR,
     F(tls_cert), 0, 0},
    {"tls-key", "FSPS_TLS_KEY", "its PEM private key", T_STR, F(tls_key), 0, 0},
    {"tls-server-name", "FSPS_TLS_SERVER_NAME",
     "the name every server's certificate must carry (default: the host of "
     "its address)",
     T_STR, F(tls_server_name), 0, 0},
};

#define NDEFS (sizeof defs / sizeof defs[0])

static void defaults(worker_opts *o) {
  memset(o, 0, sizeof *o);
  o->world = 1;
  strcpy(o->model, "mlp:784,256,128,10");
  strcpy(o->optimizer, "adam");
  strcpy(o->schedule, "constant");
  o->lr = 0.001;
  o->batch = 64;
  o->epochs = 1;
  o->seed = 1;
  o->prefetch = 1;
  strcpy(o->mode, "bsp");
  strcpy(o->data_dir, "/usr/share/datasets/fashion-mnist");
  o->eval = true;
  o->progress_secs = 5;
  o->timeout_ms = 120000;
  strcpy(o->log_format, "text");
  strcpy(o->wire_dtype, "fp32");
}

static void usage(void) {
  printf("Usage: fsps-worker --servers HOST:PORT,... [options]\n\n"
         "Trains a model whose parameters live on fsps-server processes:\n"
         "gathers each layer just in time, computes with OpenBLAS, and pushes\n"
         "the gradients reduce-scattered. Worker RANK of WORLD trains on its\n"
         "share of each global batch. Rank 0 declares the model.\n\n"
         "Options (each also read from the environment variable shown):\n");
  for (size_t i = 0; i < NDEFS; i++)
    printf("  --%-22s %s [%s]\n", defs[i].name, defs[i].help, defs[i].env);
  printf("  --%-22s %s\n  --%-22s %s\n", "help", "print this help and exit",
         "version", "print the version and exit");
}

static int fail(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, len, fmt, ap);
  va_end(ap);
  return -1;
}

/* set_number parses v as the def's number type within its range. */
static int set_number(const opt_def *d, const char *v, char *p) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || end == v || *end || !isfinite(x) || x < d->lo || x > d->hi)
    return -1;
  if (d->type == T_DBL) {
    *(double *)p = x;
    return 0;
  }
  if (strchr(v, '.') || strchr(v, '-') || strchr(v, 'e'))
    return -1;
  unsigned long long u = strtoull(v, NULL, 10);
  if (d->type == T_U32)
    *(uint32_t *)p = (uint32_t)u;
  else if (d->off == offsetof(worker_opts, timeout_ms))
    *(int64_t *)p = (int64_t)u;
  else
    *(uint64_t *)p = u;
  return 0;
}

static int set(const opt_def *d, const char *v, worker_opts *o) {
  char *p = (char *)o + d->off;
  if (d->type == T_STR) {
    if (strlen(v) >= d->size)
      return -1;
    strcpy(p, v);
    return 0;
  }
  if (d->type == T_FLAG) {
    bool on = !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes");
    if (!on && strcmp(v, "0") && strcmp(v, "false") && strcmp(v, "no"))
      return -1;
    /* --no-eval stores the opposite into `eval` */
    *(bool *)p = d->off == offsetof(worker_opts, eval) ? !on : on;
    return 0;
  }
  return set_number(d, v, p);
}

static int from_env(worker_opts *o, char *err, size_t errlen) {
  for (size_t i = 0; i < NDEFS; i++) {
    const char *v = getenv(defs[i].env);
    if (v != NULL && *v && set(&defs[i], v, o) != 0)
      return fail(err, errlen, "bad value '%s' in %s (see --help)", v,
                  defs[i].env);
  }
  return 0;
}

static int from_argv(int argc, char **argv, worker_opts *o, char *err,
                     size_t errlen) {
  struct option lo[NDEFS + 4];
  for (size_t i = 0; i < NDEFS; i++)
    lo[i] = (struct option){
        defs[i].name, defs[i].type == T_FLAG ? no_argument : required_argument,
        NULL, (int)i};
  lo[NDEFS] = (struct option){"help", no_argument, NULL, 1000};
  lo[NDEFS + 1] = (struct option){"version", no_argument, NULL, 1001};
  /* --token is named so that getopt does not take it for an abbreviation
   * of --token-file: it is refused, its value never shown. */
  lo[NDEFS + 2] = (struct option){"token", required_argument, NULL, 1002};
  lo[NDEFS + 3] = (struct option){NULL, 0, NULL, 0};
  int c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (c == 1000 || c == 1001) {
      if (c == 1000)
        usage();
      else
        printf("fsps-worker %s (%s)\n", FSPS_VERSION, openblas_get_config());
      return 1;
    }
    if (c == '?') /* not a value given with '=': it may be a secret */
      return fail(err, errlen,
                  "unknown or incomplete option '%.*s' (see --help)",
                  (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
    if (c == 1002)
      return fail(err, errlen,
                  "no --token flag: a command line shows in ps; give "
                  "--token-file FILE, FSPS_TOKEN_FILE or FSPS_TOKEN");
    const char *v = defs[c].type == T_FLAG ? "1" : optarg;
    if (set(&defs[c], v, o) != 0)
      return fail(err, errlen, "bad value '%s' for --%s (see --help)", v,
                  defs[c].name);
  }
  if (optind < argc)
    return fail(err, errlen, "unexpected argument '%s' (see --help)",
                argv[optind]);
  return 0;
}

static int check(const worker_opts *o, char *err, size_t errlen) {
  if (!o->servers[0] && !o->local)
    return fail(err, errlen,
                "--servers is required (host:port,... of every "
                "fsps-server, in index order)");
  if (o->rank >= o->world)
    return fail(err, errlen, "--rank %u is out of range for --world %u",
                o->rank, o->world);
  if (strcmp(o->schedule, "constant") && strcmp(o->schedule, "cosine"))
    return fail(err, errlen, "--schedule must be constant or cosine, not '%s'",
                o->schedule);
  if (strcmp(o->log_format, "text") && strcmp(o->log_format, "json"))
    return fail(err, errlen, "--log-format must be text or json, not '%s'",
                o->log_format);
  if (strcmp(o->mode, "bsp") && strcmp(o->mode, "ssp") &&
      strcmp(o->mode, "asp"))
    return fail(err, errlen, "--mode must be bsp, ssp or asp, not '%s'",
                o->mode);
  if (strcmp(o->wire_dtype, "fp32") && strcmp(o->wire_dtype, "bf16"))
    return fail(err, errlen, "--wire-dtype must be fp32 or bf16, not '%s'",
                o->wire_dtype);
  return 0;
}

int opts_parse(int argc, char **argv, worker_opts *o, char *err,
               size_t errlen) {
  defaults(o);
  int rc = from_env(o, err, errlen);
  if (rc == 0)
    rc = from_argv(argc, argv, o, err, errlen);
  if (rc == 0)
    rc = check(o, err, errlen);
  return rc;
}
