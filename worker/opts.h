/* opts.h: fsps-worker's command line and its FSPS_* environment
 * equivalents. */
#ifndef FSPS_WORKER_OPTS_H
#define FSPS_WORKER_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  char servers[4096];
  uint32_t rank, world;
  char model[256];
  char optimizer[16];
  char schedule[16];
  double lr, weight_decay, momentum;
  uint32_t batch, epochs;
  uint64_t seed;
  uint32_t prefetch;
  bool reshard;
  double piece_mb; /* layers above this many MiB go in pieces (0: whole) */
  char mode[8];
  uint32_t staleness;
  char data_dir[1024];
  uint32_t synthetic;   /* samples of synthetic data instead of the files */
  uint32_t train_limit; /* use only the first N training samples (0: all) */
  uint64_t max_steps;   /* stop after this many steps (0: all epochs) */
  bool normalize, eval;
  bool local; /* no servers: compute alone, on a local copy */
  double progress_secs;
  int64_t timeout_ms;
  char dump[1024];              /* write the final parameters here */
  char log_format[8];           /* text or json (stderr) */
  char log_jsonl[1024];         /* progress and epoch lines as JSON */
  char metrics_listen[256];     /* "": no /metrics endpoint */
  char metrics_port_file[1024]; /* where the metrics port is written */
  char wire_dtype[8];           /* fp32 or bf16: how the model travels */
  char token_file[1024];        /* the bearer token's file ("": see main.c) */
  /* TLS to the servers: "" for plaintext */
  char tls_ca[1024], tls_cert[1024], tls_key[1024];
  char tls_server_name[256];
} worker_opts;

/* worker_opts_parse fills o with the defaults, then from FSPS_* variables,
 * then argv (opts/fsps_opts.h). Returns 0 to run, 1 when --help/--version
 * was printed, -1 with err on a bad flag. */
int worker_opts_parse(int argc, char **argv, worker_opts *o, char *err,
                      size_t errlen);

#endif
