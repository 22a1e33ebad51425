/* serve.c: bench/serve's online part — ModelInfer throughput and latency of
 * fsps-serve's online side (serve/online, hosted by tests/serve_online_host
 * on loopback) under 1, 8 and 64 concurrent clients on gRPC C core, each
 * keeping one one-row request in flight, with dynamic batching
 * (--max-batch 64) beside --max-batch 1 measured in the same run, and the
 * compute ceiling: serve_snapshot_predict's rows/s in-process at batch 64
 * and 1. One JSON object per line. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "grpc_predict_v2.pb-c.h"
#include "rpc.h"
#include "snapshot.h"

#define MAX_CLIENTS 256

typedef struct {
  const char *host, *model;
  double seconds, warmup;
  uint32_t clients[8], nclients, delay_us, threads;
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

/* ---- the host process ---- */

typedef struct {
  pid_t pid;
  int port;
  char port_file[64], out_file[64];
} host;

static int start_host(host *h, const bench_opts *o, uint32_t max_batch) {
  snprintf(h->port_file, sizeof h->port_file, "/tmp/bench-serve-port.XXXXXX");
  snprintf(h->out_file, sizeof h->out_file, "/tmp/bench-serve-out.XXXXXX");
  int pf = mkstemp(h->port_file), of = mkstemp(h->out_file);
  if (pf < 0 || of < 0)
    return -1;
  close(pf);
  unlink(h->port_file);
  char mb[16], delay[16], threads[16];
  snprintf(mb, sizeof mb, "%" PRIu32, max_batch);
  snprintf(delay, sizeof delay, "%" PRIu32, o->delay_us);
  snprintf(threads, sizeof threads, "%" PRIu32, o->threads);
  h->pid = fork();
  if (h->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(of, 1);
    execl(o->host, o->host, "--widths", o->model, "--port-file", h->port_file,
          "--max-batch", mb, "--max-delay-us", delay, "--threads", threads,
          (char *)NULL);
    _exit(127);
  }
  close(of);
  for (int i = 0; i < 3000; i++) { /* 30 s */
    FILE *f = fopen(h->port_file, "r");
    if (f != NULL) {
      int ok = fscanf(f, "%d", &h->port) == 1;
      fclose(f);
      if (ok)
        return 0;
    }
    if (waitpid(h->pid, NULL, WNOHANG) != 0)
      return -1;
    nanosleep(&(struct timespec){0, 10000000}, NULL);
  }
  return -1;
}

/* stop_host stops h and reads the batches and rows it computed. */
static void stop_host(host *h, uint64_t *batches, uint64_t *rows) {
  kill(h->pid, SIGTERM);
  waitpid(h->pid, NULL, 0);
  unlink(h->port_file);
  *batches = *rows = 0;
  FILE *f = fopen(h->out_file, "r");
  char line[512];
  while (f != NULL && fgets(line, sizeof line, f) != NULL) {
    const char *b = strstr(line, "\"batches\":");
    const char *r = strstr(line, "\"rows\":");
    if (b && r) {
      *batches = strtoull(b + 10, NULL, 10);
      *rows = strtoull(r + 7, NULL, 10);
    }
  }
  if (f)
    fclose(f);
  unlink(h->out_file);
}

/* ---- clients ---- */

typedef struct {
  rpc_channel *ch;
  uint32_t width, seed;
  double start, measure, end;
  double *lat;
  size_t nlat, cap;
  uint64_t failed;
} client;

static void record(client *c, double ms) {
  if (c->nlat == c->cap) {
    size_t cap = c->cap ? 2 * c->cap : 4096;
    double *p = realloc(c->lat, cap * sizeof *p);
    if (p == NULL)
      return;
    c->lat = p;
    c->cap = cap;
  }
  c->lat[c->nlat++] = ms;
}

static void *client_thread(void *arg) {
  client *c = arg;
  float *x = malloc(c->width * sizeof(float));
  for (uint32_t i = 0; i < c->width; i++)
    x[i] = (float)((c->seed * 2654435761u + i * 40503u) % 1000) / 1000.0f;
  Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
  Inference__ModelInferRequest__InferInputTensor in =
      INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
  Inference__ModelInferRequest__InferInputTensor *inp = &in;
  int64_t shape[2] = {1, c->width};
  ProtobufCBinaryData raw = {c->width * sizeof(float), (uint8_t *)x};
  req.model_name = "fsps-mlp";
  in.name = "input";
  in.datatype = "FP32";
  in.shape = shape;
  in.n_shape = 2;
  req.inputs = &inp;
  req.n_inputs = 1;
  req.raw_input_contents = &raw;
  req.n_raw_input_contents = 1;
  for (double t0 = now_s(); t0 < c->end; t0 = now_s()) {
    ProtobufCMessage *rep = NULL;
    rpc_status st;
    int rc = rpc_unary(c->ch, "/inference.GRPCInferenceService/ModelInfer",
                       &req.base, &inference__model_infer_response__descriptor,
                       &rep, 30000, &st);
    double t1 = now_s();
    if (rep)
      protobuf_c_message_free_unpacked(rep, NULL);
    if (t0 >= c->measure && t1 <= c->end) {
      if (rc == FSPS_OK)
        record(c, (t1 - t0) * 1e3);
      else
        c->failed++;
    }
  }
  free(x);
  return NULL;
}

typedef struct {
  double throughput, p50, p99, batch_rows;
  uint64_t failed;
} result;

/* run_load drives a fresh host with n clients for o->seconds. */
static int run_load(const bench_opts *o, uint32_t width, uint32_t max_batch,
                    uint32_t n, result *r) {
  host h;
  if (start_host(&h, o, max_batch) != 0) {
    fprintf(stderr, "bench/serve: cannot start %s\n", o->host);
    return -1;
  }
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", h.port);
  rpc_status st;
  rpc_channel *ch = rpc_channel_create(target, 64 << 20, &st);
  static client c[MAX_CLIENTS];
  pthread_t t[MAX_CLIENTS];
  double start = now_s();
  for (uint32_t i = 0; i < n; i++) {
    c[i] = (client){.ch = ch,
                    .width = width,
                    .seed = i,
                    .start = start,
                    .measure = start + o->warmup,
                    .end = start + o->warmup + o->seconds};
    pthread_create(&t[i], NULL, client_thread, &c[i]);
  }
  size_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    pthread_join(t[i], NULL);
    total += c[i].nlat;
  }
  double *all = malloc((total ? total : 1) * sizeof *all);
  size_t k = 0;
  r->failed = 0;
  for (uint32_t i = 0; i < n; i++) {
    memcpy(all + k, c[i].lat, c[i].nlat * sizeof *all);
    k += c[i].nlat;
    r->failed += c[i].failed;
    free(c[i].lat);
  }
  qsort(all, total, sizeof *all, cmp_double);
  r->throughput = (double)total / o->seconds;
  r->p50 = total ? all[total / 2] : 0;
  r->p99 = total ? all[(size_t)((double)total * 0.99)] : 0;
  free(all);
  rpc_channel_destroy(ch);
  uint64_t batches, rows;
  stop_host(&h, &batches, &rows);
  r->batch_rows = batches ? (double)rows / (double)batches : 0;
  return 0;
}

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

static int parse_clients(const char *s, bench_opts *o) {
  o->nclients = 0;
  for (char *end; *s && o->nclients < 8; s = *end ? end + 1 : end) {
    unsigned long v = strtoul(s, &end, 10);
    if (end == s || v == 0 || v > MAX_CLIENTS || (*end && *end != ','))
      return -1;
    o->clients[o->nclients++] = (uint32_t)v;
  }
  return o->nclients ? 0 : -1;
}

static int parse(int argc, char **argv, bench_opts *o) {
  static const struct option lo[] = {
      {"host", 1, NULL, 'h'},     {"model", 1, NULL, 'm'},
      {"seconds", 1, NULL, 's'},  {"clients", 1, NULL, 'c'},
      {"delay-us", 1, NULL, 'd'}, {"threads", 1, NULL, 't'},
      {NULL, 0, NULL, 0}};
  *o = (bench_opts){.host = SERVE_HOST_BIN,
                    .model = "mlp:784,512,256,10",
                    .seconds = 5,
                    .warmup = 1,
                    .clients = {1, 8, 64},
                    .nclients = 3,
                    .delay_us = 500,
                    .threads = 1};
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (c == 'h')
      o->host = optarg;
    else if (c == 'm')
      o->model = optarg;
    else if (c == 's')
      o->seconds = atof(optarg);
    else if (c == 'c' && parse_clients(optarg, o) == 0)
      continue;
    else if (c == 'd')
      o->delay_us = (uint32_t)strtoul(optarg, NULL, 10);
    else if (c == 't')
      o->threads = (uint32_t)strtoul(optarg, NULL, 10);
    else
      return -1;
  }
  return o->seconds > 0 && optind == argc ? 0 : -1;
}

static void print_online(const bench_opts *o, uint32_t n, const result *b,
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

int main(int argc, char **argv) {
  bench_opts o;
  if (parse(argc, argv, &o) != 0) {
    fprintf(stderr, "usage: serve [--host PATH] [--model mlp:W0,...] "
                    "[--seconds S] [--clients 1,8,64] [--delay-us N] "
                    "[--threads N]\n");
    return 2;
  }
  uint32_t w[SERVE_MAX_WIDTHS], n;
  char err[256];
  if (model_mlp_parse(o.model, w, SERVE_MAX_WIDTHS, &n, err, sizeof err)) {
    fprintf(stderr, "bench/serve: %s\n", err);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  double lim64 = compute_limit(w, n, 64), lim1 = compute_limit(w, n, 1);
  printf("{\"bench\":\"serve\",\"mode\":\"compute\",\"model\":\"%s\","
         "\"rows_per_s_batch64\":%.0f,\"rows_per_s_batch1\":%.0f}\n",
         o.model, lim64, lim1);
  fflush(stdout);
  for (uint32_t i = 0; i < o.nclients; i++) {
    result b, one;
    if (run_load(&o, w[0], 64, o.clients[i], &b) != 0 ||
        run_load(&o, w[0], 1, o.clients[i], &one) != 0)
      return 1;
    print_online(&o, o.clients[i], &b, &one, lim64);
  }
  return 0;
}
