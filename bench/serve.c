/* serve.c: bench/serve's online part — ModelInfer throughput and latency of
 * the real fsps-serve binary (build/serve/fsps-serve, started with
 * --checkpoint-dir on a checkpoint written for the run) on loopback, driven
 * by 1, 8 and 64 client threads on gRPC C core. Closed loop: each client
 * keeps one one-row request in flight. Open loop (--offered): requests go
 * at fixed times whatever the replies, and latency counts from the time a
 * request was due, so queueing shows. Dynamic batching (--max-batch 64)
 * runs beside --max-batch 1, each on a fresh fsps-serve, with the compute
 * ceiling measured in-process (serve_snapshot_predict at batch 64 and 1).
 * One JSON object per line. */
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "grpc_predict_v2.pb-c.h"
#include "rpc.h"
#include "serve_proc.h"
#include "snapshot.h"

#define MAX_CLIENTS 256
#define MAX_LIST 8
#define INFER "/inference.GRPCInferenceService/ModelInfer"
/* Open loop: a request not answered in OPEN_DEADLINE_MS is an error, and
 * one due while MAX_INFLIGHT wait is not sent (an error too), so that an
 * overloaded server costs the client bounded memory. */
#define OPEN_DEADLINE_MS 10000
#define MAX_INFLIGHT 8192

typedef struct {
  const char *serve, *model;
  double seconds, warmup;
  uint32_t clients[MAX_LIST], nclients, delay_us, threads;
  double offered[MAX_LIST];
  uint32_t noffered;
  char workdir[4000], ckpt_dir[4096];
  bool made; /* workdir exists: removed at the end */
} bench_opts;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* ---- latencies ---- */

typedef struct {
  double *v;
  size_t n, cap;
} lat_list;

static void lat_add(lat_list *l, double ms) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 4096;
    double *p = realloc(l->v, cap * sizeof *p);
    if (p == NULL)
      return;
    l->v = p;
    l->cap = cap;
  }
  l->v[l->n++] = ms;
}

typedef struct {
  double throughput, p50, p99, batch_rows;
  uint64_t failed;
} result;

/* lat_summary sorts l and puts its median and 99th percentile into r. */
static void lat_summary(lat_list *l, result *r) {
  qsort(l->v, l->n, sizeof *l->v, cmp_double);
  r->p50 = l->n ? l->v[l->n / 2] : 0;
  r->p99 = l->n ? l->v[(size_t)((double)l->n * 0.99)] : 0;
}

/* ---- one one-row request ---- */

typedef struct {
  float *x;
  Inference__ModelInferRequest req;
  Inference__ModelInferRequest__InferInputTensor in, *inp;
  int64_t shape[2];
  ProtobufCBinaryData raw;
} one_row;

/* one_row_init builds r in place (it points into itself: never copied). */
static void one_row_init(one_row *r, uint32_t width, uint32_t seed) {
  *r = (one_row){.req = INFERENCE__MODEL_INFER_REQUEST__INIT,
                 .in = INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT,
                 .x = malloc(width * sizeof(float)),
                 .shape = {1, width}};
  for (uint32_t i = 0; r->x != NULL && i < width; i++)
    r->x[i] = (float)((seed * 2654435761u + i * 40503u) % 1000) / 1000.0f;
  r->raw = (ProtobufCBinaryData){width * sizeof(float), (uint8_t *)r->x};
  r->req.model_name = "fsps-mlp";
  r->in.name = "input";
  r->in.datatype = "FP32";
  r->in.shape = r->shape;
  r->in.n_shape = 2;
  r->inp = &r->in;
  r->req.inputs = &r->inp;
  r->req.n_inputs = 1;
  r->req.raw_input_contents = &r->raw;
  r->req.n_raw_input_contents = 1;
}

/* ---- fsps-serve under test ---- */

typedef struct {
  serve_proc p;
  rpc_channel *ch;
} server;

static bool ready(rpc_channel *ch) {
  Inference__ServerReadyRequest q = INFERENCE__SERVER_READY_REQUEST__INIT;
  Inference__ServerReadyResponse *rep = NULL;
  rpc_status st;
  bool ok = rpc_unary(ch, "/inference.GRPCInferenceService/ServerReady",
                      &q.base, &inference__server_ready_response__descriptor,
                      (ProtobufCMessage **)&rep, 30000, &st) == FSPS_OK &&
            rep->ready;
  if (rep)
    protobuf_c_message_free_unpacked(&rep->base, NULL);
  return ok;
}

/* server_up starts fsps-serve with max_batch and a channel to it. */
static int server_up(const bench_opts *o, uint32_t max_batch, server *s) {
  serve_proc_opts po = {.bin = o->serve,
                        .ckpt_dir = o->ckpt_dir,
                        .workdir = o->workdir,
                        .max_batch = max_batch,
                        .delay_us = o->delay_us,
                        .threads = o->threads};
  if (serve_proc_start(&s->p, &po) != 0)
    return -1;
  char target[64];
  rpc_status st;
  snprintf(target, sizeof target, "127.0.0.1:%d", s->p.port);
  s->ch = rpc_channel_create(target, 64 << 20, &st);
  if (s->ch != NULL && ready(s->ch))
    return 0;
  fprintf(stderr, "bench/serve: fsps-serve on port %d is not ready\n",
          s->p.port);
  if (s->ch)
    rpc_channel_destroy(s->ch);
  serve_proc_stop(&s->p);
  return -1;
}

/* server_down reads the rows per batch fsps-serve counted and stops it. */
static int server_down(server *s, result *r) {
  uint64_t batches = 0, rows = 0;
  rpc_channel_destroy(s->ch);
  int rc = serve_proc_counters(&s->p, &batches, &rows);
  r->batch_rows = batches ? (double)rows / (double)batches : 0;
  return serve_proc_stop(&s->p) != 0 ? -1 : rc;
}

/* ---- closed loop ---- */

typedef struct {
  rpc_channel *ch;
  uint32_t width, seed;
  double measure, end;
  lat_list lat;
  uint64_t failed;
} client;

static void *client_thread(void *arg) {
  client *c = arg;
  one_row r;
  one_row_init(&r, c->width, c->seed);
  for (double t0 = now_s(); r.x != NULL && t0 < c->end; t0 = now_s()) {
    ProtobufCMessage *rep = NULL;
    rpc_status st;
    int rc = rpc_unary(c->ch, INFER, &r.req.base,
                       &inference__model_infer_response__descriptor, &rep,
                       30000, &st);
    double t1 = now_s();
    if (rep)
      protobuf_c_message_free_unpacked(rep, NULL);
    if (t0 >= c->measure && t1 <= c->end) {
      if (rc == FSPS_OK)
        lat_add(&c->lat, (t1 - t0) * 1e3);
      else
        c->failed++;
    }
  }
  free(r.x);
  return NULL;
}

/* run_closed drives a fresh fsps-serve with n closed-loop clients. */
static int run_closed(const bench_opts *o, uint32_t width, uint32_t max_batch,
                      uint32_t n, result *r) {
  server s;
  if (server_up(o, max_batch, &s) != 0)
    return -1;
  static client c[MAX_CLIENTS];
  pthread_t t[MAX_CLIENTS];
  double start = now_s();
  for (uint32_t i = 0; i < n; i++) {
    c[i] = (client){.ch = s.ch,
                    .width = width,
                    .seed = i,
                    .measure = start + o->warmup,
                    .end = start + o->warmup + o->seconds};
    pthread_create(&t[i], NULL, client_thread, &c[i]);
  }
  lat_list all = {0};
  r->failed = 0;
  for (uint32_t i = 0; i < n; i++) {
    pthread_join(t[i], NULL);
    for (size_t k = 0; k < c[i].lat.n; k++)
      lat_add(&all, c[i].lat.v[k]);
    r->failed += c[i].failed;
    free(c[i].lat.v);
  }
  r->throughput = (double)all.n / o->seconds;
  lat_summary(&all, r);
  free(all.v);
  return server_down(&s, r);
}

/* ---- open loop ---- */

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  double measure, end;
  uint64_t inflight, answered, errors; /* answered within [measure, end) */
  lat_list lat; /* of requests due within [measure, end) */
} open_run;

typedef struct {
  open_run *run;
  double due;
  bool replied;
} pending;

static void open_message(rpc_stream *s, rpc_msg *m, void *ctx) {
  (void)s;
  pending *p = ctx;
  Inference__ModelInferResponse *rep = NULL;
  rpc_status st;
  if (rpc_msg_unpack(m, &inference__model_infer_response__descriptor,
                     (ProtobufCMessage **)&rep, &st) == FSPS_OK) {
    p->replied = rep->n_outputs == 2;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
  }
}

static void open_done(rpc_stream *s, const rpc_status *st, rpc_msg *reply,
                      void *ctx) {
  (void)s;
  (void)reply;
  pending *p = ctx;
  open_run *run = p->run;
  double t = now_s();
  bool ok = st->code == FSPS_OK && p->replied;
  bool due_in = p->due >= run->measure && p->due < run->end;
  pthread_mutex_lock(&run->mu);
  if (ok && t >= run->measure && t < run->end)
    run->answered++;
  if (due_in && ok)
    lat_add(&run->lat, (t - p->due) * 1e3);
  else if (due_in)
    run->errors++;
  run->inflight--;
  pthread_cond_signal(&run->cv);
  pthread_mutex_unlock(&run->mu);
  free(p);
}

typedef struct {
  open_run *run;
  rpc_channel *ch;
  uint32_t width, seed, n;
  double start, rate; /* total requests/s over all n clients */
} open_client;

/* send_at sends r at time `due` (at once if that has passed). */
static void send_at(open_client *c, one_row *r, double due) {
  double wait = due - now_s();
  if (wait > 0)
    nanosleep(&(struct timespec){(time_t)wait,
                                 (long)((wait - (double)(time_t)wait) * 1e9)},
              NULL);
  pending *p = malloc(sizeof *p);
  rpc_stream_cbs cbs = {
      .on_message = open_message, .on_done = open_done, .ctx = p};
  rpc_status st;
  open_run *run = c->run;
  pthread_mutex_lock(&run->mu);
  bool room = run->inflight < MAX_INFLIGHT;
  run->inflight++;
  pthread_mutex_unlock(&run->mu);
  if (p != NULL && room) {
    *p = (pending){.run = run, .due = due};
    if (rpc_stream_start(c->ch, INFER, RPC_SERVER_STREAMING, &r->req.base,
                         OPEN_DEADLINE_MS, &cbs, &st) != NULL)
      return;
  }
  free(p); /* not sent: an error if it was due in the window */
  pthread_mutex_lock(&run->mu);
  run->inflight--;
  run->errors += due >= run->measure && due < run->end;
  pthread_mutex_unlock(&run->mu);
}

/* open_thread: client i of n sends its k-th request at (k n + i) / rate
 * after start, so that the n clients together send `rate` a second. */
static void *open_thread(void *arg) {
  open_client *c = arg;
  one_row r;
  one_row_init(&r, c->width, c->seed);
  for (uint64_t k = 0; r.x != NULL; k++) {
    double due = c->start + (double)(k * c->n + c->seed) / c->rate;
    if (due >= c->run->end)
      break;
    send_at(c, &r, due);
  }
  free(r.x);
  return NULL;
}

/* open_drain waits for every request's reply (or its deadline). */
static void open_drain(open_run *run) {
  pthread_mutex_lock(&run->mu);
  while (run->inflight > 0)
    pthread_cond_wait(&run->cv, &run->mu);
  pthread_mutex_unlock(&run->mu);
}

/* run_open offers `rate` requests/s from n clients to a fresh fsps-serve. */
static int run_open(const bench_opts *o, uint32_t width, uint32_t max_batch,
                    uint32_t n, double rate, result *r) {
  server s;
  if (server_up(o, max_batch, &s) != 0)
    return -1;
  static open_client c[MAX_CLIENTS];
  pthread_t t[MAX_CLIENTS];
  double start = now_s() + 0.05;
  open_run run = {.mu = PTHREAD_MUTEX_INITIALIZER,
                  .cv = PTHREAD_COND_INITIALIZER,
                  .measure = start + o->warmup,
                  .end = start + o->warmup + o->seconds};
  for (uint32_t i = 0; i < n; i++) {
    c[i] = (open_client){.run = &run,
                         .ch = s.ch,
                         .width = width,
                         .seed = i,
                         .n = n,
                         .start = start,
                         .rate = rate};
    pthread_create(&t[i], NULL, open_thread, &c[i]);
  }
  for (uint32_t i = 0; i < n; i++)
    pthread_join(t[i], NULL);
  open_drain(&run);
  r->throughput = (double)run.answered / o->seconds;
  r->failed = run.errors;
  lat_summary(&run.lat, r);
  free(run.lat.v);
  return server_down(&s, r);
}

/* ---- the compute ceiling ---- */

/* compute_limit returns serve_snapshot_predict's rows/s at batch b for the
 * model, in this process, on one thread. */
static double compute_limit(const uint32_t *w, uint32_t n, uint32_t b) {
  serve_snapshot *s = serve_snapshot_new(w, n, 0);
  mlp *m = model_mlp_create(w, n, b);
  float *x = calloc((size_t)b * w[0], sizeof(float));
  float *p = malloc((size_t)b * w[n - 1] * sizeof(float));
  uint32_t *cls = malloc(b * sizeof(uint32_t));
  for (size_t i = 0; i < (size_t)b * w[0]; i++)
    x[i] = (float)(i % 97) / 97.0f;
  uint64_t rows = 0;
  double t0 = now_s(), t = t0;
  while (t - t0 < 1.0) {
    serve_snapshot_predict(s, m, x, b, p, cls);
    rows += b;
    t = now_s();
  }
  free(x);
  free(p);
  free(cls);
  model_mlp_destroy(m);
  serve_snapshot_unref(s);
  return (double)rows / (t - t0);
}

/* ---- options ---- */

/* parse_list reads "a,b,c" (each > 0 and <= most) into out[0..*n). */
static int parse_list(const char *s, double *out, uint32_t *n, double most) {
  *n = 0;
  for (char *end; *s && *n < MAX_LIST; s = *end ? end + 1 : end) {
    double v = strtod(s, &end);
    if (end == s || !(v > 0) || v > most || (*end && *end != ','))
      return -1;
    out[(*n)++] = v;
  }
  return *n && !*s ? 0 : -1;
}

static int parse_clients(const char *s, bench_opts *o) {
  double v[MAX_LIST];
  if (parse_list(s, v, &o->nclients, MAX_CLIENTS) != 0)
    return -1;
  for (uint32_t i = 0; i < o->nclients; i++) {
    o->clients[i] = (uint32_t)v[i];
    if ((double)o->clients[i] != v[i])
      return -1;
  }
  return 0;
}

static int parse_one(int c, const char *arg, bench_opts *o) {
  char *end;
  errno = 0;
  double v = strtod(arg, &end);
  bool num = end != arg && !*end && errno == 0 && v >= 0;
  switch (c) {
  case 'S':
    o->serve = arg;
    return 0;
  case 'm':
    o->model = arg;
    return 0;
  case 'c':
    return parse_clients(arg, o);
  case 'o':
    return parse_list(arg, o->offered, &o->noffered, 1e7);
  case 's':
    o->seconds = v;
    return num && v > 0 ? 0 : -1;
  case 'w':
    o->warmup = v;
    return num ? 0 : -1;
  case 'd':
    o->delay_us = (uint32_t)v;
    return num && v <= 1e7 ? 0 : -1;
  case 't':
    o->threads = (uint32_t)v;
    return num && v >= 1 && v <= 1024 ? 0 : -1;
  }
  return -1;
}

/* parse reads the flags into o: 0 to run, 1 for --help, -1 on a bad one. */
static int parse(int argc, char **argv, bench_opts *o) {
  static const struct option lo[] = {
      {"serve", 1, NULL, 'S'},    {"model", 1, NULL, 'm'},
      {"seconds", 1, NULL, 's'},  {"warmup", 1, NULL, 'w'},
      {"clients", 1, NULL, 'c'},  {"offered", 1, NULL, 'o'},
      {"delay-us", 1, NULL, 'd'}, {"threads", 1, NULL, 't'},
      {"help", 0, NULL, 'h'},     {NULL, 0, NULL, 0}};
  *o = (bench_opts){.serve = SERVE_BIN,
                    .model = "mlp:784,512,256,10",
                    .seconds = 5,
                    .warmup = 1,
                    .clients = {1, 8, 64},
                    .nclients = 3,
                    .delay_us = 500,
                    .threads = 1};
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1)
    if (c == 'h')
      return 1;
    else if (c == '?' || parse_one(c, optarg, o) != 0)
      return -1;
  return optind == argc ? 0 : -1;
}

/* ---- output ---- */

static void print_closed(const bench_opts *o, uint32_t n, const result *b,
                         const result *one, double limit) {
  printf("{\"bench\":\"serve\",\"mode\":\"online\",\"clients\":%" PRIu32
         ",\"throughput_per_s\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
         "\"batching_gain\":%.2f,\"mean_batch_rows\":%.1f,"
         "\"max_batch1_throughput_per_s\":%.0f,\"max_batch1_p50_ms\":%.3f,"
         "\"max_batch1_p99_ms\":%.3f,\"compute_limit_rows_per_s\":%.0f,"
         "\"failed\":%" PRIu64 ",\"max_delay_us\":%" PRIu32
         ",\"threads\":%" PRIu32 ",\"model\":\"%s\"}\n",
         n, b->throughput, b->p50, b->p99,
         one->throughput > 0 ? b->throughput / one->throughput : 0,
         b->batch_rows, one->throughput, one->p50, one->p99, limit,
         b->failed + one->failed, o->delay_us, o->threads, o->model);
  fflush(stdout);
}

static void print_open(const bench_opts *o, uint32_t n, double rate,
                       const result *b, const result *one) {
  printf("{\"bench\":\"serve\",\"mode\":\"online_open\",\"clients\":%" PRIu32
         ",\"offered_per_s\":%.0f,\"throughput_per_s\":%.0f,\"p50_ms\":%.3f,"
         "\"p99_ms\":%.3f,\"errors\":%" PRIu64 ",\"mean_batch_rows\":%.1f,"
         "\"max_batch1_throughput_per_s\":%.0f,\"max_batch1_p50_ms\":%.3f,"
         "\"max_batch1_p99_ms\":%.3f,\"max_batch1_errors\":%" PRIu64
         ",\"max_delay_us\":%" PRIu32 ",\"threads\":%" PRIu32
         ",\"model\":\"%s\"}\n",
         n, rate, b->throughput, b->p50, b->p99, b->failed, b->batch_rows,
         one->throughput, one->p50, one->p99, one->failed, o->delay_us,
         o->threads, o->model);
  fflush(stdout);
}

/* ---- main ---- */

static int remove_entry(const char *path, const struct stat *sb, int flag,
                        struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* prepare makes the run's folder and writes the checkpoint into it. */
static int prepare(bench_opts *o, const uint32_t *w, uint32_t n) {
  const char *tmp = getenv("TMPDIR");
  char msg[1024];
  snprintf(o->workdir, sizeof o->workdir, "%s/bench-serve.XXXXXX",
           tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp(o->workdir) == NULL) {
    fprintf(stderr, "bench/serve: cannot make %s: %s\n", o->workdir,
            strerror(errno));
    return -1;
  }
  o->made = true;
  snprintf(o->ckpt_dir, sizeof o->ckpt_dir, "%s/ckpt", o->workdir);
  if (mkdir(o->ckpt_dir, 0755) != 0) {
    fprintf(stderr, "bench/serve: cannot make %s: %s\n", o->ckpt_dir,
            strerror(errno));
    return -1;
  }
  if (bench_ckpt_write(o->ckpt_dir, w, n, 1, 0, msg, sizeof msg) != FSPS_OK) {
    fprintf(stderr, "bench/serve: cannot write the checkpoint: %s\n", msg);
    return -1;
  }
  return 0;
}

static int run_all(const bench_opts *o, const uint32_t *w, double lim64) {
  for (uint32_t i = 0; i < o->nclients; i++) {
    uint32_t n = o->clients[i];
    result b, one;
    if (run_closed(o, w[0], 64, n, &b) != 0 ||
        run_closed(o, w[0], 1, n, &one) != 0)
      return -1;
    print_closed(o, n, &b, &one, lim64);
    for (uint32_t k = 0; k < o->noffered; k++) {
      if (run_open(o, w[0], 64, n, o->offered[k], &b) != 0 ||
          run_open(o, w[0], 1, n, o->offered[k], &one) != 0)
        return -1;
      print_open(o, n, o->offered[k], &b, &one);
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  static bench_opts o;
  int prc = parse(argc, argv, &o);
  if (prc != 0) {
    fprintf(prc > 0 ? stdout : stderr,
            "usage: serve [--serve PATH/fsps-serve] "
            "[--model mlp:W0,...] [--seconds S] [--warmup S] "
            "[--clients 1,8,64] [--offered R1,R2,...] "
            "[--delay-us N] [--threads N]\n"
            "fsps-serve online: closed-loop clients (and open loop at each "
            "--offered rate), with dynamic batching beside --max-batch 1; "
            "one JSON line per point (see README, \"Serving online\").\n");
    return prc > 0 ? 0 : 2;
  }
  uint32_t w[SERVE_MAX_WIDTHS], n;
  char err[256];
  if (model_mlp_parse(o.model, w, SERVE_MAX_WIDTHS, &n, err, sizeof err)) {
    fprintf(stderr, "bench/serve: %s\n", err);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int rc = prepare(&o, w, n);
  double lim64 = compute_limit(w, n, 64), lim1 = compute_limit(w, n, 1);
  printf("{\"bench\":\"serve\",\"mode\":\"compute\",\"model\":\"%s\","
         "\"rows_per_s_batch64\":%.0f,\"rows_per_s_batch1\":%.0f}\n",
         o.model, lim64, lim1);
  fflush(stdout);
  if (rc == 0)
    rc = run_all(&o, w, lim64);
  if (o.made)
    nftw(o.workdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  return rc == 0 ? 0 : 1;
}
