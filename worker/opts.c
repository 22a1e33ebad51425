/* opts.c: fsps-worker's flags: the table (each flag's type, range and
 * FSPS_* variable, read first so the command line overrides it), defaults,
 * help text and the checks across flags; opts/ parses them. */
#include <stdio.h>
#include <string.h>

#include <cblas.h>

#include "fsps_opts.h"
#include "opts.h"

#ifndef FSPS_VERSION
#define FSPS_VERSION "0.0.0"
#endif

#define F(field) OPTS_FIELD(worker_opts, field)

/* Each row: name, variable, help, type, field, range, tools (0: the one
 * tool), given-mark (0: none). */
static const opts_def defs[] = {
    {"servers", "FSPS_SERVERS", "host:port,... of every server, index order",
     OPTS_STR, F(servers), 0, 0, 0, 0},
    {"rank", "FSPS_RANK", "this worker's rank, 0-based (0)", OPTS_U32, F(rank),
     0, 65535, 0, 0},
    {"world", "FSPS_WORLD", "number of workers W (1)", OPTS_U32, F(world), 1,
     65536, 0, 0},
    {"model", "FSPS_MODEL", "network (mlp:784,256,128,10)", OPTS_STR, F(model),
     0, 0, 0, 0},
    {"optimizer", "FSPS_OPTIMIZER", "sgd, adam, adamw or adagrad (adam)",
     OPTS_STR, F(optimizer), 0, 0, 0, 0},
    {"schedule", "FSPS_SCHEDULE",
     "learning-rate schedule: constant, or cosine to 0 over the run "
     "(constant)",
     OPTS_STR, F(schedule), 0, 0, 0, 0},
    {"lr", "FSPS_LR", "learning rate (0.001)", OPTS_DBL, F(lr), 0, 100, 0, 0},
    {"weight-decay", "FSPS_WEIGHT_DECAY", "weight decay (0)", OPTS_DBL,
     F(weight_decay), 0, 10, 0, 0},
    {"momentum", "FSPS_MOMENTUM", "SGD momentum (0)", OPTS_DBL, F(momentum), 0,
     1, 0, 0},
    {"batch", "FSPS_BATCH", "samples per step on this worker (64)", OPTS_U32,
     F(batch), 1, 1 << 20, 0, 0},
    {"epochs", "FSPS_EPOCHS", "passes over the training data (1)", OPTS_U32,
     F(epochs), 1, 100000, 0, 0},
    {"seed", "FSPS_SEED", "seed of initialisation and shuffling (1)", OPTS_U64,
     F(seed), 0, 1.8e19, 0, 0},
    {"prefetch", "FSPS_PREFETCH", "layers gathered ahead (1)", OPTS_U32,
     F(prefetch), 0, 64, 0, 0},
    {"reshard-after-forward", "FSPS_RESHARD_AFTER_FORWARD",
     "free each layer after forward, re-gather it for backward", OPTS_FLAG,
     F(reshard), 0, 0, 0, 0},
    {"piece-mb", "FSPS_PIECE_MB",
     "gather, compute and push layers above this many MiB in row blocks of "
     "at most that size, so a worker never holds a whole layer (0 = whole "
     "layers)",
     OPTS_DBL, F(piece_mb), 0, 1e6, 0, 0},
    {"mode", "FSPS_MODE", "bsp, ssp or asp, as the servers (bsp)", OPTS_STR,
     F(mode), 0, 0, 0, 0},
    {"staleness", "FSPS_STALENESS", "SSP: steps ahead allowed (0)", OPTS_U32,
     F(staleness), 0, 1000, 0, 0},
    {"data-dir", "FSPS_DATA_DIR",
     "Fashion-MNIST IDX files (/usr/share/datasets/fashion-mnist)", OPTS_STR,
     F(data_dir), 0, 0, 0, 0},
    {"synthetic", "FSPS_SYNTHETIC",
     "train on N synthetic samples instead of the files (0)", OPTS_U32,
     F(synthetic), 0, 1 << 30, 0, 0},
    {"train-limit", "FSPS_TRAIN_LIMIT",
     "use only the first N training samples (0 = all)", OPTS_U32,
     F(train_limit), 0, 1 << 30, 0, 0},
    {"max-steps", "FSPS_MAX_STEPS", "stop after N steps (0 = all epochs)",
     OPTS_U64, F(max_steps), 0, 1e15, 0, 0},
    {"normalize", "FSPS_NORMALIZE", "normalise inputs (mean 0.286, std 0.353)",
     OPTS_FLAG, F(normalize), 0, 0, 0, 0},
    {"local", "FSPS_LOCAL",
     "no servers: run the same compute on a local copy of the parameters "
     "(a benchmark's limit)",
     OPTS_FLAG, F(local), 0, 0, 0, 0},
    {"no-eval", "FSPS_NO_EVAL", "skip the test-set evaluation", OPTS_FLAG_OFF,
     F(eval), 0, 0, 0, 0},
    {"progress-secs", "FSPS_PROGRESS_SECS",
     "seconds between progress lines (5)", OPTS_DBL, F(progress_secs), 0, 1e6,
     0, 0},
    {"timeout-ms", "FSPS_TIMEOUT_MS", "deadline of each call (120000)",
     OPTS_I64, F(timeout_ms), 1, 1e9, 0, 0},
    {"dump", "FSPS_DUMP", "write the final parameters to this file", OPTS_STR,
     F(dump), 0, 0, 0, 0},
    {"log-format", "FSPS_LOG_FORMAT",
     "stderr as text, or json: one object per line (text)", OPTS_STR,
     F(log_format), 0, 0, 0, 0},
    {"log-jsonl", "FSPS_LOG_JSONL",
     "write a JSON line per progress tick and per epoch to this file "
     "(scripts/plot.py draws it)",
     OPTS_STR, F(log_jsonl), 0, 0, 0, 0},
    {"metrics-listen", "FSPS_METRICS_LISTEN",
     "serve Prometheus metrics at http://ADDR/metrics and a status page at "
     "http://ADDR/ (host:port; port 0 picks a free one; off)",
     OPTS_STR, F(metrics_listen), 0, 0, 0, 0},
    {"metrics-port-file", "FSPS_METRICS_PORT_FILE",
     "write the metrics port here once listening", OPTS_STR,
     F(metrics_port_file), 0, 0, 0, 0},
    {"wire-dtype", "FSPS_WIRE_DTYPE",
     "gather parameters and push gradients as fp32 or bf16 (bfloat16, half "
     "the bytes; servers keep fp32 and sum in fp32); part of the model, so "
     "every worker must give the same (fp32)",
     OPTS_STR, F(wire_dtype), 0, 0, 0, 0},
    /* The token itself is never a flag: a command line shows in ps. */
    {"token-file", "FSPS_TOKEN_FILE",
     "file holding the bearer token for servers with --auth-tokens (else "
     "the variable FSPS_TOKEN holds it; none: no token)",
     OPTS_STR, F(token_file), 0, 0, 0, 0},
    {"tls-ca", "FSPS_TLS_CA",
     "TLS to the servers: PEM file of the CAs that sign their certificates "
     "(off)",
     OPTS_STR, F(tls_ca), 0, 0, 0, 0},
    {"tls-cert", "FSPS_TLS_CERT",
     "mutual TLS: PEM file of this worker's certificate chain", OPTS_STR,
     F(tls_cert), 0, 0, 0, 0},
    {"tls-key", "FSPS_TLS_KEY", "its PEM private key", OPTS_STR, F(tls_key), 0,
     0, 0, 0},
    {"tls-server-name", "FSPS_TLS_SERVER_NAME",
     "the name every server's certificate must carry (default: the host of "
     "its address)",
     OPTS_STR, F(tls_server_name), 0, 0, 0, 0},
};

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

static const char usage[] =
    "Usage: fsps-worker --servers HOST:PORT,... [options]\n\n"
    "Trains a model whose parameters live on fsps-server processes:\n"
    "gathers each layer just in time, computes with OpenBLAS, and pushes\n"
    "the gradients reduce-scattered. Worker RANK of WORLD trains on its\n"
    "share of each global batch. Rank 0 declares the model.\n\n";

static int check(const worker_opts *o, char *err, size_t errlen) {
  if (!o->servers[0] && !o->local)
    return opts_fail(err, errlen,
                     "--servers is required (host:port,... of every "
                     "fsps-server, in index order)");
  if (o->local && o->dump[0])
    return opts_fail(err, errlen,
                     "--dump writes the model the servers hold, and --local "
                     "has none (its parameters are fixed values that only "
                     "time the compute): drop one of the two");
  if (o->rank >= o->world)
    return opts_fail(err, errlen, "--rank %u is out of range for --world %u",
                     o->rank, o->world);
  if (strcmp(o->schedule, "constant") && strcmp(o->schedule, "cosine"))
    return opts_fail(err, errlen,
                     "--schedule must be constant or cosine, not '%s'",
                     o->schedule);
  if (strcmp(o->log_format, "text") && strcmp(o->log_format, "json"))
    return opts_fail(err, errlen, "--log-format must be text or json, not '%s'",
                     o->log_format);
  if (strcmp(o->mode, "bsp") && strcmp(o->mode, "ssp") &&
      strcmp(o->mode, "asp"))
    return opts_fail(err, errlen, "--mode must be bsp, ssp or asp, not '%s'",
                     o->mode);
  if (strcmp(o->wire_dtype, "fp32") && strcmp(o->wire_dtype, "bf16"))
    return opts_fail(err, errlen, "--wire-dtype must be fp32 or bf16, not '%s'",
                     o->wire_dtype);
  return 0;
}

int worker_opts_parse(int argc, char **argv, worker_opts *o, char *err,
                      size_t errlen) {
  char version[512];
  snprintf(version, sizeof version, "fsps-worker %s (%s)", FSPS_VERSION,
           openblas_get_config());
  const opts_spec spec = {.defs = defs,
                          .ndefs = sizeof defs / sizeof defs[0],
                          .tool = 1,
                          .usage = usage,
                          .version = version,
                          .refuse_token = true};
  defaults(o);
  int rc = opts_parse(&spec, argc, argv, o, err, errlen);
  return rc == 0 ? check(o, err, errlen) : rc;
}
