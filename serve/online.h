/* online.h: fsps-serve's online side — the open inference protocol (v2,
 * KServe / Triton) and grpc.health.v1 over gRPC, answering ModelInfer from
 * the slot's current snapshot with dynamic batching. */
#ifndef FSPS_SERVE_ONLINE_H
#define FSPS_SERVE_ONLINE_H

#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

/* serve/opts.h may declare the same struct; this says it is declared. */
#define SERVE_ONLINE_CONFIG_DECLARED 1

typedef struct {
  const char *listen;     /* host:port, port 0 = any; "--listen",
                             FSPS_SERVE_LISTEN, default "0.0.0.0:8001" */
  const char *model_name; /* "--model-name", default "fsps-mlp" */
  uint32_t max_batch;     /* "--max-batch", default 64 */
  uint32_t max_delay_us;  /* "--max-delay-us", default 500 */
  uint32_t threads;       /* "--threads" compute threads, default 1 */
  const char *port_file;  /* "--port-file": the bound port written there
                             once serving */
  /* TLS for the serving port (optional): */
  const char *tls_cert, *tls_key, *tls_client_ca;
} serve_online_config;

typedef struct serve_online serve_online;

/* Largest --max-batch and --threads serve_online_start accepts. */
#define SERVE_ONLINE_MAX_BATCH 65536u
#define SERVE_ONLINE_MAX_THREADS 256u

/* Inputs waiting to be computed, in bytes, beyond which a new ModelInfer is
 * refused with RESOURCE_EXHAUSTED (the server is overloaded). */
#define SERVE_ONLINE_MAX_QUEUED (256u << 20)

/* serve_online_start serves cfg's protocol on cfg->listen, predicting from
 * whatever snapshot slot holds at each batch (slot stays the caller's and
 * must outlive the server). NULL fields of cfg take the defaults above,
 * and so do a max_batch or threads of 0; max_delay_us is taken as it is
 * (0: a batch is what is waiting when a thread is free, without waiting
 * for more). Writes the bound port to cfg->port_file (if set) once
 * serving. Returns NULL with a sentence in msg on failure (bad config,
 * address in use, TLS files refused). The caller owns the result
 * (serve_online_stop). */
serve_online *serve_online_start(const serve_online_config *cfg,
                                 serve_slot *slot, char *msg, size_t msglen);

/* serve_online_port returns the bound port. */
int serve_online_port(const serve_online *s);

/* serve_online_stop stops accepting calls, answers the calls in flight
 * (their batches computed), then frees s. NULL is a no-op. Not from a
 * gRPC or compute thread. */
void serve_online_stop(serve_online *s);

/* Counters since start, for logs, metrics and tests. */
typedef struct {
  uint64_t requests;          /* ModelInfer calls accepted into a batch */
  uint64_t refused;           /* ModelInfer calls refused when checked */
  uint64_t batches;           /* computations (one sgemm per layer each,
                                 a request in pieces counting one per
                                 piece) */
  uint64_t rows;              /* rows computed */
  uint64_t answered;          /* ModelInfer calls answered with a result */
  uint64_t deadline_exceeded; /* dropped uncomputed: deadline passed */
  uint64_t cancelled;         /* cancelled by the client before their
                                 answer (dropped uncomputed unless their
                                 batch was already computing) */
} serve_online_stats;

/* serve_online_get_stats copies s's counters. Any thread. */
void serve_online_get_stats(const serve_online *s, serve_online_stats *out);

#endif
