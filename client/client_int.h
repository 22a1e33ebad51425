/* client_int.h: what libfsps's own files share and users never see: the
 * client structure, gathers, pushes, the retry timer and the buffer pool. */
#ifndef FSPS_CLIENT_INT_H
#define FSPS_CLIENT_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <fsps/fsps.h>

#include "fsps.pb-c.h"
#include "rpc.h"
#include "shard.h"
#include "wire.h"

#define CLIENT_MAX_SERVERS SHARD_MAX_SERVERS
#define CLIENT_MSG_MAX 1024
#define CLIENT_DEFAULT_TIMEOUT_MS 120000
#define CLIENT_DEFAULT_RETRIES 8
#define CLIENT_BACKOFF_FIRST_MS 100
#define CLIENT_BACKOFF_MAX_MS 5000

/* ---- spec (spec.c) ---- */

/* client_spec_shard returns the shard spec inside a public spec. */
const shard_spec *client_spec_shard(const fsps_spec *spec);

/* client_spec_clone returns a deep copy of a validated shard spec (NULL when
 * out of memory). */
shard_spec *client_spec_clone(const shard_spec *spec);

/* ---- retry timer (client.c) ---- */

/* A delayed restart of one server's part of a gather or push; embedded in
 * the part. fire runs on the timer thread, with abort set when the client
 * is closing and the part must finish as cancelled instead. */
typedef struct retry_item {
  struct retry_item *next;
  int64_t due_ns;
  uint64_t after; /* a deferred item: pushes numbered below must be done */
  void (*fire)(struct retry_item *it, bool abort);
} retry_item;

/* ---- buffer pool (pool.c) ---- */

typedef struct pool_buf {
  float *p;
  uint64_t cap; /* floats */
  struct pool_buf *next;
} pool_buf;

/* ---- the client ---- */

typedef struct layer_slot layer_slot;
typedef struct sched_units sched_units;
typedef struct push push;
typedef struct stage stage;

struct fsps_client {
  fsps_options o;
  char *servers; /* o.servers points here */
  uint32_t S;
  char **addr;
  uint64_t *incarnation; /* each server's, as last seen (0: not yet) */
  /* The cluster epoch this client's pulls and pushes carry (StatusReply.
   * epoch): set by declare, attach and recover, read by retries on the
   * timer thread. */
  _Atomic uint64_t epoch;
  rpc_loop **loops; /* threads running the channels' streams */
  uint32_t nloops;
  rpc_channel **ch; /* server s's channel runs on loops[s % nloops] */
  rpc_creds *creds; /* TLS (o.tls_ca set), shared by the channels; or NULL */
  shard_spec *spec; /* the model, once declared or attached */
  uint32_t L;
  uint64_t refused_hash; /* a server's model hash that a check refused */
  char err[CLIENT_MSG_MAX];

  /* c->mu guards everything below that callbacks touch. Rule: never call
   * into rpc while holding it (rpc may run a callback inline that takes
   * it). */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* cancel_mu guards the stream handles of pull parts; never taken with
   * mu held, nor mu with it held. */
  pthread_mutex_t cancel_mu;

  /* retry timer */
  pthread_t timer;
  bool timer_started, stopping;
  pthread_cond_t timer_cv;
  retry_item *retries;
  /* starts waiting for the pushes in flight before them to finish,
   * oldest first; the timer thread runs them then */
  retry_item *deferred;

  /* pushes in flight (oldest first, numbered from push_next on) and their
   * first error */
  uint32_t pushes;
  push *push_head, *push_tail;
  uint64_t push_next;
  int push_rc;
  char push_msg[CLIENT_MSG_MAX];
  uint64_t gathered, pushed; /* bytes, for fsps_bytes_moved */
  /* staged chunks of streamed pushes: free, taken, being filled */
  stage *stage_free;
  uint32_t stages_busy, stages_partial;

  /* buffer pool */
  pool_buf *free_bufs;
  uint64_t bytes, peak_bytes;
  double wait_s;

  /* step scheduler (sched.c): one slot per unit (piece of a layer) */
  sched_units *units;
  layer_slot *slots;
  bool in_step;
  uint64_t step, min_version;
  /* layers kept after forward although resharding (plan.c), and what the
   * plan was made for: the pool's bytes then and at the first plan */
  bool *keep;
  uint64_t plan_bytes, plan_base;
  uint32_t bw_inplace, bw_separate; /* backward calls of this step */
  bool plan_ok;                     /* the last step was planned for */
};

/* client_fail stores a message in c->err and returns rc. */
int client_fail(fsps_client *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* client_retries returns the configured number of retries. */
uint32_t client_retries(const fsps_client *c);

/* client_timeout_ms returns the per-call timeout. */
int64_t client_timeout_ms(const fsps_client *c);

/* client_layer_n returns layer l's element count (0 when no such layer). */
uint64_t client_layer_n(const fsps_client *c, uint32_t l);

/* client_wire_dtype returns how the client's model travels (its spec's
 * wire dtype; fp32 without a model): gathers decode and pushes encode it. */
shard_wire_dtype client_wire_dtype(const fsps_client *c);

/* client_plan_next advances *s (start at 0) to the first server, from *s on,
 * whose slice of a layer of n elements over S servers is non-empty and
 * sets *off and *cnt to that slice; returns false when there is none. A
 * gather or push has one part per server that client_plan_next visits. */
bool client_plan_next(uint64_t n, uint32_t S, uint32_t *s, uint64_t *off,
                      uint64_t *cnt);

/* client_backoff_ms returns the delay before retry number attempt (1..). */
int64_t client_backoff_ms(uint32_t attempt);

/* client_retry_schedule queues it to fire after the backoff of attempt. Call
 * with c->mu held. Returns false when the client is closing (nothing queued).
 */
bool client_retry_schedule(fsps_client *c, retry_item *it, uint32_t attempt);

/* client_defer_locked queues it to fire on the timer thread once the pushes in
 * flight now have finished (c->mu held): how a prefetch waits for a pushed
 * gradient's buffer without blocking the trainer. */
void client_defer_locked(fsps_client *c, retry_item *it);

/* client_run_deferred_locked hands the deferred items whose pushes have
 * finished to the timer thread, due now (c->mu held; called when a push ends).
 */
void client_run_deferred_locked(fsps_client *c);

/* client_now_ns returns CLOCK_MONOTONIC in nanoseconds. */
int64_t client_now_ns(void);

/* client_wait blocks on c->cv (c->mu held) and adds the time spent to the
 * client's wait counter. */
void client_wait(fsps_client *c);

/* client_unary makes a unary call to server s, retrying UNAVAILABLE with
 * backoff. */
int client_unary(fsps_client *c, uint32_t s, const char *path,
                 const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *desc,
                 ProtobufCMessage **reply, rpc_status *st);

/* client_mix folds x into the hash h (recover.c): how epochs are named
 * from what a client saw. */
uint64_t client_mix(uint64_t h, uint64_t x);

/* client_init_one declares the client's model on server s (Init) and
 * records its incarnation. */
int client_init_one(fsps_client *c, uint32_t s);

/* client_adopt_spec makes a validated copy of spec the client's model
 * without contacting servers (fsps_declare and fsps_attach use it after
 * the servers agreed; tests use it to reach the network without servers).
 */
int client_adopt_spec(fsps_client *c, const shard_spec *spec);

/* ---- gathers (gather.c) ---- */

typedef struct gather gather;

/* client_gather_start starts pulling elements [a, b) of layer into dst (b - a
 * floats) from every server whose slice meets them, asynchronously.
 * Returns FSPS_OK or FSPS_NOMEM (message in c->err); failures of the pulls
 * show in client_gather_wait. */
int client_gather_start(fsps_client *c, uint32_t layer, uint64_t min_version,
                        uint64_t a, uint64_t b, float *dst, gather **out);

/* Flags of client_gather_start_range. GATHER_DEFER: with pushes in flight, the
 * gather (buffer included) starts only when they have all finished, on the
 * timer thread, so that it can reuse the buffer of a pushed gradient.
 * GATHER_EXACT: only version min_version will do, what a BSP step computes
 * from; a server that answers with a later one fails the gather with
 * FSPS_FAILED_PRECONDITION (the layer moved on without this worker, whose
 * step would otherwise be computed from another step's parameters). */
enum { GATHER_DEFER = 1, GATHER_EXACT = 2 };

/* client_gather_start_range is client_gather_start into a buffer of b - a
 * floats from the pool, which the gather holds until client_gather_take_buf.
 * Returns FSPS_OK or FSPS_NOMEM. */
int client_gather_start_range(fsps_client *c, uint32_t layer,
                              uint64_t min_version, uint64_t a, uint64_t b,
                              unsigned flags, gather **out);

/* client_gather_wait blocks until g is complete; returns its result (message in
 * c->err) and, on success, the lowest version received in *version. */
int client_gather_wait(fsps_client *c, gather *g, uint64_t *version);

/* client_gather_take_buf hands the caller the pool buffer of a complete pooled
 * gather (NULL if it never got one: cancelled, or out of memory). */
pool_buf *client_gather_take_buf(gather *g);

/* client_gather_free frees a complete gather (and its pool buffer, if not
 * taken). */
void client_gather_free(gather *g);

/* ---- pushes (push.c) ---- */

/* client_push_start sends grad (layer's n floats) for step to every server with
 * a non-empty slice, asynchronously. owned (may be NULL) is the pool buffer
 * grad lives in, returned to the pool when the push completes (a bf16
 * model's push encodes grad over itself there; without owned, into a
 * buffer of its own). Returns FSPS_OK or FSPS_NOMEM (owned then still the
 * caller's); failures of the pushes show in client_push_wait_all. */
int client_push_start(fsps_client *c, uint32_t layer, uint64_t step,
                      const float *grad, pool_buf *owned);

/* Staged chunks (1 MiB each) a streamed push may hold before the trainer
 * waits for the network to take some. */
#define PUSH_STAGES 4

/* client_push_open starts a streamed push of layer for step: one Push stream
 * per server, to which client_push_write copies the gradient as the trainer
 * computes it, piece by piece, in any order; each 1 MiB chunk is sent once
 * whole, so the trainer's buffers are free again at once. Such a push cannot be
 * retried (the gradient is gone): a failure shows in client_push_wait_all and
 * the trainer recomputes the step. FSPS_OK or FSPS_NOMEM. */
int client_push_open(fsps_client *c, uint32_t layer, uint64_t step, push **out);

/* client_push_write copies gradient elements [a, a + n) of p's layer from src;
 * it may wait for the network while PUSH_STAGES chunks are on their way.
 * Each element must be written exactly once. FSPS_OK or FSPS_NOMEM. */
int client_push_write(push *p, uint64_t a, const float *src, uint64_t n);

/* client_push_close ends the writes of p, which completes on its own; p must
 * not be used after. A part of the gradient never written fails the push. */
void client_push_close(push *p);

/* client_push_free_stages frees the free staged chunks (at close). */
void client_push_free_stages(fsps_client *c);

/* client_push_wait_all waits for every push in flight and returns (and clears)
 * the first error among them, message in c->err. */
int client_push_wait_all(fsps_client *c);

/* client_push_wait_below waits until at most max pushes are in flight (their
 * errors stay for client_push_wait_all): what bounds the gradient buffers held.
 */
void client_push_wait_below(fsps_client *c, uint32_t max);

/* client_push_low_water_locked returns the number of the oldest push in flight,
 * or c->push_next when none is (c->mu held). */
uint64_t client_push_low_water_locked(const fsps_client *c);

/* ---- slices streamed from the caller's array (slice.c) ---- */

/* One server's slice of a layer, sent on a client-streaming call in chunks
 * that point into the caller's array: a push's part (push.c) or a part of
 * fsps_set_values (values.c). Each chunk handed to gRPC is counted in
 * releases under *mu; released(arg) runs when gRPC lets go of one, and
 * takes it off under *mu. */
typedef struct {
  uint64_t off, cnt;      /* the server's slice */
  uint64_t nchunks, next; /* chunks in the slice; next to send */
  uint32_t releases;      /* payloads gRPC still references; under *mu */
  pthread_mutex_t *mu;
  rpc_release_fn released;
  void *arg;
  shard_wire_dtype dtype; /* of the caller's array and payloads (fp32) */
} client_slice;

/* client_slice_init makes sl the slice [off, off + cnt), nothing sent, of
 * a float32 array; set sl->dtype after it for a bf16 one. */
void client_slice_init(client_slice *sl, uint64_t off, uint64_t cnt,
                       pthread_mutex_t *mu, rpc_release_fn released, void *arg);

/* client_slice_send sends sl's next chunk on s (from on_sent, or to begin
 * an attempt with sl->next = 0): the chunk of layer (the caller's array of
 * sl->dtype, element i at layer[i]) with header h, whose field offset_field
 * it sets to the chunk's offset in the layer, and the payload in the
 * dtype's field. After the last chunk it half-closes s; so it does when a
 * send fails, and on_done then says why. */
void client_slice_send(client_slice *sl, rpc_stream *s, rpc_tensor_hdr *h,
                       unsigned offset_field, const void *layer);

/* client_slice_reply checks a finished stream's outcome st (the server's
 * addr for messages): an OK status counts only if every chunk of sl went
 * out and the server answered with a well-formed message of type d. */
void client_slice_reply(const client_slice *sl, const char *addr,
                        rpc_msg *reply, const ProtobufCMessageDescriptor *d,
                        rpc_status *st);

/* ---- buffer pool (pool.c) ---- */

/* client_pool_get returns a buffer of at least n floats (reused or allocated),
 * or NULL when out of memory. Takes c->mu. */
pool_buf *client_pool_get(fsps_client *c, uint64_t n);

/* client_pool_size_class rounds n up to a multiple of 1/16 of the power of two
 * below it (at most 6% more): pieces of layers of different widths, nearly
 * of a size, then share buffers instead of each allocating its own (pages
 * never written are never faulted in). */
uint64_t client_pool_size_class(uint64_t n);

/* client_pool_put returns b to the free list; client_pool_put_locked with c->mu
 * held. */
void client_pool_put(fsps_client *c, pool_buf *b);
void client_pool_put_locked(fsps_client *c, pool_buf *b);

/* client_pool_destroy frees every free buffer (at close, nothing in use). */
void client_pool_destroy(fsps_client *c);

/* ---- keep plan (plan.c) ---- */

/* A plan may keep layers at the cost of new buffers of at most 1/64 of the
 * pool it started from (small layers that would otherwise take a big
 * layer's buffer). */
#define PLAN_SPARE_DIV 64

/* client_plan_keep sets keep[l] for each layer that forward should keep
 * although resharding: those whose buffers the rest of a step, played over the
 * pool's free buffers with gradients written in place, never needs, given
 * that the pool (pool_bytes now) may grow to at most base_bytes * (1 +
 * 1/PLAN_SPARE_DIV). Call between steps (every buffer free). FSPS_OK or
 * FSPS_NOMEM (keep then all false). */
int client_plan_keep(fsps_client *c, bool *keep, uint64_t base_bytes,
                     uint64_t pool_bytes);

/* ---- step scheduler (sched.c) ---- */

/* client_sched_min_version returns the version step's gathers ask for: step
 * (BSP), step - staleness floored at 0 (SSP), or 0 (ASP). */
uint64_t client_sched_min_version(fsps_mode mode, uint32_t staleness,
                                  uint64_t step);

/* client_sched_init allocates the per-layer slots for c->L layers. */
int client_sched_init(fsps_client *c);

/* client_sched_abandon ends the step in progress, if any: its buffers go back
 * to the pool and its streamed pushes, unfinished, end (their servers count
 * nothing), so that waiting for the pushes in flight cannot hang. */
void client_sched_abandon(fsps_client *c);

/* client_sched_destroy waits for the scheduler's gathers and frees its slots
 * and the buffers they hold (channels already closed or still open). */
void client_sched_destroy(fsps_client *c);

/* client_say formats a message into a caller's buffer (nothing when err is
 * NULL or errlen 0) and returns rc, for the functions that report into an
 * (err, errlen) pair. */
int client_say(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
