/* online_int.h: what serve/online.c (the protocol's methods) and
 * serve/batcher.c (the dynamic batcher and its compute threads) share,
 * and nobody else sees. */
#ifndef FSPS_SERVE_ONLINE_INT_H
#define FSPS_SERVE_ONLINE_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "grpc_predict_v2.pb-c.h"
#include "infer.h"
#include "online.h"
#include "rpc.h"

/* The counters behind serve_online_stats, updated from any thread. */
typedef struct {
  atomic_uint_fast64_t requests, refused, batches, rows, answered,
      deadline_exceeded, cancelled;
} serve_counters;

/* One checked ModelInfer call waiting for, or in, a batch. It is the
 * call's user pointer and lives until the call's on_done (serve_job_free),
 * so on_cancel may always reach it. */
typedef struct serve_job {
  struct serve_job *next;
  rpc_call *call;
  Inference__ModelInferRequest *msg; /* the decoded request req points in */
  serve_infer_req req;
  int64_t arrived_ns; /* CLOCK_MONOTONIC */
  atomic_bool cancelled;
} serve_job;

void serve_job_free(serve_job *j);

typedef struct serve_batcher serve_batcher;

/* serve_batcher_create starts threads compute threads, each with its own
 * mlp for max_batch rows, computing batches from slot's snapshots and
 * answering them as model `name`. NULL with msg filled on failure. */
serve_batcher *serve_batcher_create(serve_slot *slot, const char *name,
                                    uint32_t max_batch, uint32_t max_delay_us,
                                    uint32_t threads, serve_counters *c,
                                    char *msg, size_t msglen);

/* serve_batcher_submit queues j for a batch, holding a reference to its
 * call until answered. Returns FSPS_OK, or the status to refuse the call
 * with (UNAVAILABLE once stopping, RESOURCE_EXHAUSTED when too much is
 * waiting) and msg filled; j is then not queued. Any thread. */
int serve_batcher_submit(serve_batcher *b, serve_job *j, char *msg,
                         size_t msglen);

/* serve_batcher_drain ends the waits for fuller batches: from now on a
 * batch is what is queued when a thread is free. Jobs are still taken. */
void serve_batcher_drain(serve_batcher *b);

/* serve_batcher_stop computes and answers every queued job, then joins the
 * threads and frees b. */
void serve_batcher_stop(serve_batcher *b);

#endif
