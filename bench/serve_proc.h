/* serve_proc.h: bench/serve's server under test — the real fsps-serve
 * binary on loopback, started with a user's flags on a checkpoint folder
 * written for the run, and its counters read from its /metrics. */
#ifndef FSPS_BENCH_SERVE_PROC_H
#define FSPS_BENCH_SERVE_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* bench_ckpt_write writes into dir the S = 1 checkpoint set (one file) of
 * the model fsps-worker declares for widths w[0..nw) (layers fc1...,
 * weight he_uniform and bias U(+-1/sqrt(in)), seed `seed`, SGD), its
 * values shard/'s deterministic initialisation, at `version`. FSPS_OK, or
 * an error with msg. */
int bench_ckpt_write(const char *dir, const uint32_t *w, uint32_t nw,
                     uint64_t seed, uint64_t version, char *msg, size_t msglen);

typedef struct {
  const char *bin;      /* fsps-serve */
  const char *ckpt_dir; /* --checkpoint-dir */
  const char *workdir;  /* where its port files and log go */
  uint32_t max_batch, delay_us, threads;
} serve_proc_opts;

typedef struct {
  pid_t pid;
  int port, metrics_port;
  char log[4200];
} serve_proc;

/* serve_proc_start starts fsps-serve --checkpoint-dir o->ckpt_dir --listen
 * 127.0.0.1:0 --max-batch --max-delay-us --threads, with /metrics on a
 * port of its own, and waits (up to 60 s) for both ports. 0, or -1 with
 * the reason and the end of its log on stderr (the process stopped). */
int serve_proc_start(serve_proc *p, const serve_proc_opts *o);

/* serve_proc_counters reads fsps_serve_batches_total and
 * fsps_serve_rows_total from p's /metrics. 0 or -1. */
int serve_proc_counters(const serve_proc *p, uint64_t *batches, uint64_t *rows);

/* serve_proc_stop sends SIGTERM and waits. 0 when fsps-serve exited 0,
 * else -1 with its log's end on stderr. */
int serve_proc_stop(serve_proc *p);

#endif
