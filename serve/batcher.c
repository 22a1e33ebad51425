/* batcher.c: fsps-serve's dynamic batcher. ModelInfer requests wait in one
 * queue; an idle compute thread takes the first, waits up to max_delay_us
 * for more (until max_batch rows), and computes them all as one batch —
 * one sgemm per layer — from one snapshot, then cuts each reply back out.
 * One thread at a time gathers a batch while the others compute theirs. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "online_int.h"

/* A compute thread and what it computes with: its own mlp for max_batch
 * rows of the widths it last saw, and buffers for a batch's rows. */
typedef struct {
  serve_batcher *b;
  pthread_t tid;
  bool started;
  mlp *m;
  uint32_t nwidths, widths[SERVE_MAX_WIDTHS];
  float *x, *probs;
  uint32_t *cls;
  serve_job **jobs; /* the batch taken, max_batch at most */
} worker;

struct serve_batcher {
  serve_slot *slot;
  const char *name;
  uint32_t max_batch, max_delay_us, nthreads;
  serve_counters *c;
  pthread_mutex_t mu;
  pthread_cond_t idle; /* threads waiting for work, or for their turn */
  pthread_cond_t fill; /* the thread gathering a batch */
  serve_job *head, *tail;
  uint64_t queued_rows, queued_bytes;
  bool forming, draining, stopping;
  worker *w;
};

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec to_timespec(int64_t ns) {
  return (struct timespec){.tv_sec = ns / 1000000000,
                           .tv_nsec = ns % 1000000000};
}

int serve_batcher_submit(serve_batcher *b, serve_job *j, char *msg,
                         size_t msglen) {
  uint64_t bytes = (uint64_t)j->req.rows * j->req.width * sizeof(float);
  int rc = FSPS_OK;
  pthread_mutex_lock(&b->mu);
  if (b->stopping)
    rc = FSPS_UNAVAILABLE;
  else if (b->queued_bytes + bytes > SERVE_ONLINE_MAX_QUEUED)
    rc = FSPS_RESOURCE_EXHAUSTED;
  if (rc == FSPS_OK) {
    j->next = NULL;
    j->arrived_ns = now_ns();
    rpc_call_ref(j->call); /* until its batch has answered it */
    if (b->tail)
      b->tail->next = j;
    else
      b->head = j;
    b->tail = j;
    b->queued_rows += j->req.rows;
    b->queued_bytes += bytes;
    atomic_fetch_add(&b->c->requests, 1); /* before any reply can leave */
    pthread_cond_signal(b->forming ? &b->fill : &b->idle);
  }
  pthread_mutex_unlock(&b->mu);
  if (rc == FSPS_UNAVAILABLE)
    snprintf(msg, msglen, "the server is stopping");
  else if (rc != FSPS_OK)
    snprintf(msg, msglen,
             "the server is overloaded: %u MiB of inputs are already waiting "
             "to be computed; retry later",
             SERVE_ONLINE_MAX_QUEUED >> 20);
  return rc;
}

/* take removes the batch to compute from the queue's head into w->jobs:
 * the first request alone when it has more than max_batch rows, else it
 * and those after it while their rows fit in max_batch. Under b->mu. */
static uint32_t take(serve_batcher *b, worker *w) {
  uint32_t n = 0, rows = 0;
  while (b->head != NULL) {
    serve_job *j = b->head;
    if (n > 0 && rows + j->req.rows > b->max_batch)
      break;
    b->head = j->next;
    rows += j->req.rows;
    b->queued_rows -= j->req.rows;
    b->queued_bytes -= (uint64_t)j->req.rows * j->req.width * sizeof(float);
    w->jobs[n++] = j;
    if (rows >= b->max_batch)
      break;
  }
  if (b->head == NULL)
    b->tail = NULL;
  return n;
}

/* gather waits for a batch to form and takes it; 0 once stopping with
 * nothing left. Under b->mu. Only one thread gathers at a time: it waits
 * until max_delay_us after the first request arrived, or until max_batch
 * rows wait, or until the batcher drains (then it takes what is there). */
static uint32_t gather(serve_batcher *b, worker *w) {
  while (!b->stopping && (b->head == NULL || b->forming))
    pthread_cond_wait(&b->idle, &b->mu);
  if (b->head == NULL)
    return 0;
  b->forming = true;
  int64_t until = b->head->arrived_ns + (int64_t)b->max_delay_us * 1000;
  while (!b->draining && b->queued_rows < b->max_batch) {
    struct timespec ts = to_timespec(until);
    if (now_ns() >= until || pthread_cond_timedwait(&b->fill, &b->mu, &ts) != 0)
      break;
  }
  uint32_t n = take(b, w);
  b->forming = false;
  if (b->head != NULL || b->stopping)
    pthread_cond_signal(&b->idle);
  return n;
}

/* ---- computing a batch ---- */

/* fit_model makes w's mlp and buffers fit snap's widths; false when
 * memory runs out. */
static bool fit_model(worker *w, const serve_snapshot *snap) {
  uint32_t n = snap->nwidths, mb = w->b->max_batch;
  if (w->m != NULL && n == w->nwidths &&
      memcmp(w->widths, snap->widths, n * sizeof *w->widths) == 0)
    return true;
  model_mlp_destroy(w->m);
  free(w->x);
  free(w->probs);
  free(w->cls);
  w->m = model_mlp_create(snap->widths, n, mb);
  w->x = malloc((size_t)mb * snap->widths[0] * sizeof(float));
  w->probs = malloc((size_t)mb * snap->widths[n - 1] * sizeof(float));
  w->cls = malloc((size_t)mb * sizeof(uint32_t));
  w->nwidths = n;
  memcpy(w->widths, snap->widths, n * sizeof *w->widths);
  if (w->m && w->x && w->probs && w->cls)
    return true;
  w->nwidths = 0; /* try again next batch */
  return false;
}

/* admit decides whether job j is computed in a batch from snap; when not,
 * it has been answered (or dropped, if cancelled) here. */
static bool admit(serve_batcher *b, serve_job *j, const serve_snapshot *snap) {
  if (rpc_call_deadline_ms(j->call) <= 0) {
    atomic_fetch_add(&b->c->deadline_exceeded, 1);
    rpc_call_finish(j->call, NULL, FSPS_DEADLINE_EXCEEDED,
                    "the deadline passed before the request's batch was "
                    "computed");
    return false;
  }
  if (atomic_load(&j->cancelled))
    return false; /* rpc has answered CANCELLED */
  if (snap == NULL)
    rpc_call_failf(j->call, FSPS_UNAVAILABLE, "no model is loaded");
  else if (snap->widths[0] != j->req.width)
    rpc_call_failf(j->call, FSPS_INVALID_ARGUMENT,
                   "the model now served takes %" PRIu32 " inputs per row, "
                   "not %" PRIu32 " (a new version changed it)",
                   snap->widths[0], j->req.width);
  else if (j->req.pinned && j->req.version != snap->version)
    rpc_call_failf(j->call, FSPS_NOT_FOUND,
                   "version %" PRIu64 " is no longer served; the version "
                   "served is %" PRIu64,
                   j->req.version, snap->version);
  else
    return true;
  return false;
}

/* answer sends job j its reply: rows of probs and cls computed by
 * snapshot snap in batch bt. */
static void answer(serve_batcher *b, serve_job *j, const serve_snapshot *snap,
                   const float *probs, const uint32_t *cls,
                   const serve_infer_batch *bt) {
  serve_infer_reply rep;
  uint32_t classes = snap->widths[snap->nwidths - 1];
  if (serve_infer_reply_build(&rep, &j->req, b->name, snap->version, classes,
                              probs, cls, bt) != 0) {
    rpc_call_failf(j->call, FSPS_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    atomic_fetch_add(&b->c->answered, 1); /* before the client can see it */
    rpc_call_finish(j->call, &rep.msg.base, FSPS_OK, NULL);
  }
  serve_infer_reply_free(&rep);
}

/* compute_pieces computes one request larger than max_batch in pieces of
 * max_batch rows, all from snap. */
static void compute_pieces(worker *w, serve_job *j,
                           const serve_snapshot *snap) {
  serve_batcher *b = w->b;
  uint32_t rows = j->req.rows, width = snap->widths[0];
  uint32_t classes = snap->widths[snap->nwidths - 1];
  float *probs = malloc((size_t)rows * classes * sizeof(float));
  uint32_t *cls = malloc((size_t)rows * sizeof(uint32_t));
  if (probs == NULL || cls == NULL) {
    rpc_call_failf(j->call, FSPS_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    serve_infer_batch bt = {.requests = 1, .rows = b->max_batch};
    for (uint32_t at = 0; at < rows; at += b->max_batch) {
      uint32_t n = rows - at < b->max_batch ? rows - at : b->max_batch;
      uint64_t seq = atomic_fetch_add(&b->c->batches, 1) + 1;
      bt.seq = at == 0 ? seq : bt.seq;
      serve_snapshot_predict(snap, w->m, j->req.x + (size_t)at * width, n,
                             probs + (size_t)at * classes, cls + at);
    }
    atomic_fetch_add(&b->c->rows, rows);
    answer(b, j, snap, probs, cls, &bt);
  }
  free(probs);
  free(cls);
}

/* compute_together computes jobs[0..n) as one batch from snap. */
static void compute_together(worker *w, serve_job **jobs, uint32_t n,
                             const serve_snapshot *snap) {
  serve_batcher *b = w->b;
  uint32_t rows = 0, width = snap->widths[0];
  uint32_t classes = snap->widths[snap->nwidths - 1];
  const float *x = jobs[0]->req.x;
  for (uint32_t i = 0; i < n; i++) {
    if (n > 1)
      memcpy(w->x + (size_t)rows * width, jobs[i]->req.x,
             (size_t)jobs[i]->req.rows * width * sizeof(float));
    rows += jobs[i]->req.rows;
  }
  if (n > 1)
    x = w->x;
  serve_infer_batch bt = {.seq = atomic_fetch_add(&b->c->batches, 1) + 1,
                          .requests = n,
                          .rows = rows};
  serve_snapshot_predict(snap, w->m, x, rows, w->probs, w->cls);
  atomic_fetch_add(&b->c->rows, rows);
  for (uint32_t i = 0; i < n; i++) {
    answer(b, jobs[i], snap, w->probs + (size_t)bt.offset * classes,
           w->cls + bt.offset, &bt);
    bt.offset += jobs[i]->req.rows;
  }
}

/* run_batch computes the n jobs taken, all from the one snapshot current
 * now, and answers each; the calls' references are then dropped. */
static void run_batch(worker *w, uint32_t n) {
  serve_batcher *b = w->b;
  serve_snapshot *snap = serve_slot_acquire(b->slot);
  uint32_t kept = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (admit(b, w->jobs[i], snap))
      w->jobs[kept++] = w->jobs[i];
    else
      rpc_call_unref(w->jobs[i]->call);
  }
  if (kept > 0 && !fit_model(w, snap)) {
    for (uint32_t i = 0; i < kept; i++)
      rpc_call_failf(w->jobs[i]->call, FSPS_RESOURCE_EXHAUSTED,
                     "out of memory for the model's workspace");
  } else if (kept == 1 && w->jobs[0]->req.rows > b->max_batch) {
    compute_pieces(w, w->jobs[0], snap);
  } else if (kept > 0) {
    compute_together(w, w->jobs, kept, snap);
  }
  for (uint32_t i = 0; i < kept; i++)
    rpc_call_unref(w->jobs[i]->call);
  serve_snapshot_unref(snap);
}

static void *compute_thread(void *arg) {
  worker *w = arg;
  serve_batcher *b = w->b;
  pthread_mutex_lock(&b->mu);
  for (;;) {
    uint32_t n = gather(b, w);
    if (n == 0)
      break;
    pthread_mutex_unlock(&b->mu);
    run_batch(w, n);
    pthread_mutex_lock(&b->mu);
  }
  pthread_mutex_unlock(&b->mu);
  return NULL;
}

/* ---- life ---- */

static int init_sync(serve_batcher *b) {
  pthread_condattr_t a;
  if (pthread_condattr_init(&a) != 0)
    return -1;
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_mutex_init(&b->mu, NULL);
  pthread_cond_init(&b->idle, &a);
  pthread_cond_init(&b->fill, &a);
  pthread_condattr_destroy(&a);
  return 0;
}

serve_batcher *serve_batcher_create(serve_slot *slot, const char *name,
                                    uint32_t max_batch, uint32_t max_delay_us,
                                    uint32_t threads, serve_counters *c,
                                    char *msg, size_t msglen) {
  serve_batcher *b = calloc(1, sizeof *b);
  if (b == NULL || init_sync(b) != 0) {
    free(b);
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  b->slot = slot;
  b->name = name;
  b->max_batch = max_batch;
  b->max_delay_us = max_delay_us;
  b->nthreads = threads;
  b->c = c;
  b->w = calloc(threads, sizeof *b->w);
  for (uint32_t i = 0; b->w != NULL && i < threads; i++) {
    worker *w = &b->w[i];
    w->b = b;
    w->jobs = calloc(max_batch, sizeof *w->jobs);
    if (w->jobs == NULL ||
        pthread_create(&w->tid, NULL, compute_thread, w) != 0)
      break;
    w->started = true;
  }
  if (b->w == NULL || !b->w[threads - 1].started) {
    snprintf(msg, msglen, "cannot start %" PRIu32 " compute threads", threads);
    serve_batcher_stop(b);
    return NULL;
  }
  return b;
}

void serve_batcher_drain(serve_batcher *b) {
  pthread_mutex_lock(&b->mu);
  b->draining = true;
  pthread_cond_broadcast(&b->fill);
  pthread_mutex_unlock(&b->mu);
}

void serve_batcher_stop(serve_batcher *b) {
  if (b == NULL)
    return;
  pthread_mutex_lock(&b->mu);
  b->draining = b->stopping = true;
  pthread_cond_broadcast(&b->idle);
  pthread_cond_broadcast(&b->fill);
  pthread_mutex_unlock(&b->mu);
  for (uint32_t i = 0; b->w != NULL && i < b->nthreads; i++) {
    worker *w = &b->w[i];
    if (w->started)
      pthread_join(w->tid, NULL);
    model_mlp_destroy(w->m);
    free(w->x);
    free(w->probs);
    free(w->cls);
    free(w->jobs);
  }
  free(b->w);
  pthread_cond_destroy(&b->idle);
  pthread_cond_destroy(&b->fill);
  pthread_mutex_destroy(&b->mu);
  free(b);
}
