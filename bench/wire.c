/* wire.c: bench/wire — GB/s of gathering and pushing one layer through real
 * fsps-server processes on loopback, beside a raw TCP baseline that moves
 * the same bytes with the same request/response pattern over plain sockets
 * (large writes) in the same run; with --metrics, also servers serving
 * /metrics, beside the same servers without; with --tls, servers and a
 * client over TLS beside plaintext; with --dtype bf16, also the layer of a
 * bf16 model (half the bytes on the wire, encoded and decoded on the way)
 * beside the fp32 one and beside raw TCP moving its half. One JSON object
 * per line. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <fsps/fsps.h>

#include "../tests/cluster.h"

#define MAX_S 8
#define OP_PULL 1
#define OP_PUSH 2

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

/* ---- raw TCP baseline ---- */

static int full_io(int fd, void *buf, size_t n, bool wr) {
  char *p = buf;
  while (n > 0) {
    ssize_t k = wr ? write(fd, p, n) : read(fd, p, n);
    if (k <= 0)
      return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* raw_serve answers requests {op, bytes} on one connection: a pull gets
 * `bytes` back, a push sends them and gets an 8-byte ack. */
static void raw_serve(int lfd, size_t max_bytes) {
  int fd = accept(lfd, NULL, NULL);
  char *buf = malloc(max_bytes);
  memset(buf, 1, max_bytes);
  uint64_t req[2];
  while (fd >= 0 && full_io(fd, req, sizeof req, false) == 0) {
    if (req[1] > max_bytes)
      break;
    if (req[0] == OP_PULL && full_io(fd, buf, req[1], true) != 0)
      break;
    if (req[0] == OP_PUSH && (full_io(fd, buf, req[1], false) != 0 ||
                              full_io(fd, req, 8, true) != 0))
      break;
  }
  _exit(0);
}

static pid_t raw_server(size_t max_bytes, int *port) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0)
    return -1;
  getsockname(lfd, (struct sockaddr *)&a, &len);
  *port = ntohs(a.sin_port);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    raw_serve(lfd, max_bytes);
  }
  close(lfd);
  return pid;
}

static int raw_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

typedef struct {
  int fd, op;
  char *buf;
  size_t bytes;
} raw_job;

static void *raw_one(void *arg) {
  raw_job *j = arg;
  uint64_t req[2] = {(uint64_t)j->op, j->bytes};
  full_io(j->fd, req, sizeof req, true);
  if (j->op == OP_PULL)
    full_io(j->fd, j->buf, j->bytes, false);
  else if (full_io(j->fd, j->buf, j->bytes, true) == 0)
    full_io(j->fd, req, 8, false);
  return NULL;
}

/* raw_time runs one op against S connections in parallel, each moving
 * its share of `bytes`, into/from one buffer. */
static double raw_time(int *fds, int S, int op, char *buf, size_t bytes) {
  pthread_t th[MAX_S];
  raw_job jobs[MAX_S];
  size_t share = bytes / (size_t)S;
  double t0 = now_s();
  for (int s = 0; s < S; s++) {
    jobs[s] = (raw_job){fds[s], op, buf + (size_t)s * share, share};
    pthread_create(&th[s], NULL, raw_one, &jobs[s]);
  }
  for (int s = 0; s < S; s++)
    pthread_join(th[s], NULL);
  return now_s() - t0;
}

/* ---- fsps ---- */

typedef struct {
  cluster cl;
  fsps_client *c;
  uint64_t step;
} fsps_bench;

/* With metrics on, the servers serve /metrics (nothing scrapes them here:
 * what is measured is the cost of counting on the hot path). */
static const char *const metrics_flags[] = {"--metrics-listen", "127.0.0.1:0",
                                            NULL};

/* ---- TLS ---- */

/* A self-signed certificate for 127.0.0.1 (P-256, as the tests make),
 * made with the openssl tool; the servers serve it and the client trusts
 * it as its CA. */
typedef struct {
  char dir[64], cert[96], key[96];
  const char *flags[5]; /* --tls-cert CERT --tls-key KEY */
} bench_tls;

static int tls_make(bench_tls *t) {
  snprintf(t->dir, sizeof t->dir, "/tmp/fsps-wire-XXXXXX");
  if (mkdtemp(t->dir) == NULL)
    return -1;
  snprintf(t->cert, sizeof t->cert, "%s/server.crt", t->dir);
  snprintf(t->key, sizeof t->key, "%s/server.key", t->dir);
  char cmd[512];
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
           "-nodes -keyout %s -out %s -subj /CN=127.0.0.1 -days 2 "
           "-addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1",
           t->key, t->cert);
  t->flags[0] = "--tls-cert";
  t->flags[1] = t->cert;
  t->flags[2] = "--tls-key";
  t->flags[3] = t->key;
  t->flags[4] = NULL;
  if (system(cmd) == 0)
    return 0;
  fprintf(stderr, "wire: --tls needs the openssl tool to make a certificate\n");
  return -1;
}

static void tls_remove(bench_tls *t) {
  if (!t->dir[0])
    return;
  unlink(t->cert);
  unlink(t->key);
  rmdir(t->dir);
}

/* fsps_setup starts S servers with flags (may be NULL) and connects a
 * client, over TLS when tls_ca is set, declaring a layer of n floats that
 * travels as `dtype` (fp32 or bf16). */
static int fsps_setup(fsps_bench *b, int S, uint64_t n,
                      const char *const *flags, const char *tls_ca,
                      const char *dtype) {
  if (test_cluster_start(&b->cl, S, 1, flags) != 0)
    return -1;
  fsps_options o;
  fsps_options_init(&o);
  o.servers = b->cl.servers;
  o.tls_ca = tls_ca;
  char err[256];
  if (fsps_connect(&o, &b->c, err, sizeof err) != FSPS_OK) {
    fprintf(stderr, "wire: %s\n", err);
    return -1;
  }
  fsps_spec *spec = fsps_spec_create(1);
  fsps_spec_add_layer(spec, "layer");
  fsps_spec_add_tensor(spec, "w", 1, &n, "zeros", 0, 0);
  fsps_spec_set_optimizer(spec, "sgd", 0.0);
  fsps_spec_set_wire_dtype(spec, dtype);
  int rc = fsps_declare(b->c, spec);
  fsps_spec_destroy(spec);
  if (rc != FSPS_OK)
    fprintf(stderr, "wire: %s\n", fsps_last_error(b->c));
  return rc == FSPS_OK ? 0 : -1;
}

static double fsps_time(fsps_bench *b, int op, float *buf) {
  double t0 = now_s();
  int rc;
  if (op == OP_PULL) {
    rc = fsps_gather(b->c, 0, 0, buf, NULL);
  } else {
    rc = fsps_push(b->c, 0, b->step++, buf);
    if (rc == FSPS_OK)
      rc = fsps_push_wait(b->c);
  }
  if (rc != FSPS_OK) {
    fprintf(stderr, "wire: %s\n", fsps_last_error(b->c));
    exit(1);
  }
  return now_s() - t0;
}

/* ---- driver ---- */

/* The set-ups timed beside the plaintext fsps one (V_PLAIN); V_BF16 is a
 * bf16 model's layer, also timed beside raw TCP moving half the bytes. */
enum { V_PLAIN, V_METRICS, V_TLS, V_BF16, NVARIANTS };

typedef struct {
  int reps;
  bool on[NVARIANTS]; /* V_METRICS: --metrics, V_TLS: --tls,
                         V_BF16: --dtype bf16 */
  int sizes[8], nsizes;
  int servers[4], nservers;
} bench_opts;

static void report(const char *op, size_t bytes, int S, double t,
                   double limit_t) {
  double g = (double)bytes / t / 1e9, lim = (double)bytes / limit_t / 1e9;
  printf("{\"bench\":\"wire\",\"op\":\"%s\",\"bytes\":%zu,\"servers\":%d,"
         "\"gbps\":%.3f,\"limit_gbps\":%.3f,\"ratio\":%.3f}\n",
         op, bytes, S, g, lim, g / lim);
  fflush(stdout);
}

/* report_beside prints variant v's figure beside plaintext fsps's (off):
 * metrics on beside off, or TLS beside plaintext. */
static void report_beside(int v, const char *op, size_t bytes, int S,
                          double off, double on) {
  static const char *const names[NVARIANTS][3] = {
      [V_METRICS] = {"gbps_metrics_off", "gbps_metrics_on", "on_off_ratio"},
      [V_TLS] = {"gbps_plaintext", "gbps_tls", "tls_plaintext_ratio"}};
  double g_off = (double)bytes / off / 1e9, g_on = (double)bytes / on / 1e9;
  printf("{\"bench\":\"wire\",\"op\":\"%s\",\"bytes\":%zu,\"servers\":%d,"
         "\"%s\":%.3f,\"%s\":%.3f,\"%s\":%.3f}\n",
         op, bytes, S, names[v][0], g_off, names[v][1], g_on, names[v][2],
         g_on / g_off);
  fflush(stdout);
}

/* report_bf16 prints a bf16 layer of `bytes` float32 bytes (bytes / 2 on
 * the wire) taken in t, beside the fp32 layer's time and raw TCP moving
 * bytes / 2: gbps is the layer's float32 bytes a second (what a trainer
 * gets), wire_gbps the bytes that travelled, ratio the latter over raw
 * TCP's, speedup the fp32 time over the bf16 one. */
static void report_bf16(const char *op, size_t bytes, int S, double fp32_t,
                        double t, double half_limit_t) {
  double wire = (double)(bytes / 2) / t / 1e9;
  double lim = (double)(bytes / 2) / half_limit_t / 1e9;
  printf("{\"bench\":\"wire\",\"op\":\"%s\",\"dtype\":\"bf16\",\"bytes\":%zu,"
         "\"wire_bytes\":%zu,\"servers\":%d,\"gbps\":%.3f,\"wire_gbps\":%.3f,"
         "\"limit_gbps\":%.3f,\"ratio\":%.3f,\"fp32_gbps\":%.3f,"
         "\"speedup\":%.3f}\n",
         op, bytes, bytes / 2, S, (double)bytes / t / 1e9, wire, lim,
         wire / lim, (double)bytes / fp32_t / 1e9, fp32_t / t);
  fflush(stdout);
}

/* measure times each op on raw TCP and on every fsps set-up in use,
 * interleaved so that all see the same machine state; the set-ups' order
 * turns each repetition, so that none always follows the raw baseline. */
static void measure(const bench_opts *o, int S, size_t bytes, int *fds,
                    fsps_bench *fb, char *buf) {
  static const int ops[2] = {OP_PULL, OP_PUSH};
  int used[NVARIANTS], n = 0;
  for (int v = 0; v < NVARIANTS; v++)
    if (v == V_PLAIN || o->on[v])
      used[n++] = v;
  for (int k = 0; k < 2; k++) {
    double tr[64], th[64], t[NVARIANTS][64];
    raw_time(fds, S, ops[k], buf, bytes); /* warm-up */
    for (int i = 0; i < n; i++)
      fsps_time(&fb[used[i]], ops[k], (float *)buf);
    for (int r = 0; r < o->reps; r++) {
      tr[r] = raw_time(fds, S, ops[k], buf, bytes);
      if (o->on[V_BF16]) /* the bytes a bf16 layer puts on the wire */
        th[r] = raw_time(fds, S, ops[k], buf, bytes / 2);
      for (int i = 0; i < n; i++) {
        int v = used[(i + r) % n];
        t[v][r] = fsps_time(&fb[v], ops[k], (float *)buf);
      }
    }
    const char *name = ops[k] == OP_PULL ? "pull" : "push";
    double off = median(t[V_PLAIN], o->reps);
    report(name, bytes, S, off, median(tr, o->reps));
    for (int i = 1; i < n; i++)
      if (used[i] == V_BF16)
        report_bf16(name, bytes, S, off, median(t[V_BF16], o->reps),
                    median(th, o->reps));
      else
        report_beside(used[i], name, bytes, S, off,
                      median(t[used[i]], o->reps));
  }
}

static int run_size(const bench_opts *o, int S, size_t bytes, char *buf,
                    bench_tls *tls) {
  int fds[MAX_S], ports[MAX_S];
  pid_t pids[MAX_S];
  fsps_bench fb[NVARIANTS] = {0};
  for (int s = 0; s < S; s++) {
    pids[s] = raw_server(bytes, &ports[s]);
    fds[s] = raw_connect(ports[s]);
  }
  int rc = fsps_setup(&fb[V_PLAIN], S, bytes / 4, NULL, NULL, "fp32");
  if (rc == 0 && o->on[V_METRICS])
    rc = fsps_setup(&fb[V_METRICS], S, bytes / 4, metrics_flags, NULL, "fp32");
  if (rc == 0 && o->on[V_TLS])
    rc = fsps_setup(&fb[V_TLS], S, bytes / 4, tls->flags, tls->cert, "fp32");
  if (rc == 0 && o->on[V_BF16])
    rc = fsps_setup(&fb[V_BF16], S, bytes / 4, NULL, NULL, "bf16");
  if (rc == 0)
    measure(o, S, bytes, fds, fb, buf);
  for (int v = 0; v < NVARIANTS; v++) {
    fsps_close(fb[v].c);
    if (fb[v].cl.n > 0)
      test_cluster_stop(&fb[v].cl);
  }
  /* Close every connection before waiting: raw server s+1 was forked while
   * fds[0..s] were open and holds copies, so server s sees EOF only once
   * its later siblings have exited too. */
  for (int s = 0; s < S; s++)
    close(fds[s]);
  for (int s = 0; s < S; s++)
    waitpid(pids[s], NULL, 0);
  return rc;
}

static int parse_list(const char *s, int *out, int max) {
  int n = 0;
  for (char *end; *s && n < max; s = *end ? end + 1 : end) {
    out[n++] = (int)strtol(s, &end, 10);
    if (end == s || out[n - 1] <= 0)
      return -1;
  }
  return n;
}

static int parse(int argc, char **argv, bench_opts *o) {
  *o = (bench_opts){.reps = 7,
                    .sizes = {1, 4, 16, 64},
                    .nsizes = 4,
                    .servers = {1, 2},
                    .nservers = 2};
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(argv[i], "--metrics"))
      o->on[V_METRICS] = true;
    else if (!strcmp(argv[i], "--tls"))
      o->on[V_TLS] = true;
    else if (!strcmp(argv[i], "--dtype") &&
             (!strcmp(v, "bf16") || !strcmp(v, "fp32"))) {
      o->on[V_BF16] = !strcmp(v, "bf16");
      i++;
    } else if (!strcmp(argv[i], "--reps") && (o->reps = atoi(v)) > 0 &&
               o->reps <= 64)
      i++;
    else if (!strcmp(argv[i], "--mib") &&
             (o->nsizes = parse_list(v, o->sizes, 8)) > 0)
      i++;
    else if (!strcmp(argv[i], "--servers") &&
             (o->nservers = parse_list(v, o->servers, 4)) > 0)
      i++;
    else
      return -1;
  }
  for (int i = 0; i < o->nservers; i++)
    if (o->servers[i] > MAX_S)
      return -1;
  return 0;
}

int main(int argc, char **argv) {
  bench_opts o;
  if (parse(argc, argv, &o) != 0) {
    fprintf(stderr, "usage: wire [--mib 1,4,16,64] [--servers 1,2] "
                    "[--reps 7 (1..64)] [--metrics] [--tls] "
                    "[--dtype fp32|bf16]\n"
                    "  --metrics     also time servers with --metrics-listen, "
                    "interleaved, and print\n"
                    "                metrics-on beside metrics-off and their "
                    "ratio\n"
                    "  --tls         also time servers and a client over TLS "
                    "(a P-256 certificate\n"
                    "                made with the openssl tool), "
                    "interleaved, and print TLS beside\n"
                    "                plaintext and their ratio\n"
                    "  --dtype bf16  also time the layer of a bf16 model "
                    "(half the bytes on the\n"
                    "                wire), interleaved, and print it beside "
                    "fp32 and raw TCP\n");
    return 2;
  }
  bench_tls tls = {0};
  if (o.on[V_TLS] && tls_make(&tls) != 0)
    return 1;
  signal(SIGPIPE, SIG_IGN);
  /* As fsps-worker does: the recommended set-up for moving large layers.
   * The raw baseline reads and writes one preallocated buffer either way. */
  fsps_tune_malloc();
  size_t max = 0;
  for (int i = 0; i < o.nsizes; i++)
    if ((size_t)o.sizes[i] << 20 > max)
      max = (size_t)o.sizes[i] << 20;
  char *buf = malloc(max);
  memset(buf, 0, max);
  printf("{\"bench\":\"wire\",\"openblas_config\":\"%s\",\"reps\":%d,"
         "\"statistic\":\"median\"}\n",
         openblas_get_config(), o.reps);
  for (int si = 0; si < o.nservers; si++)
    for (int i = 0; i < o.nsizes; i++)
      if (run_size(&o, o.servers[si], (size_t)o.sizes[i] << 20, buf, &tls) !=
          0) {
        tls_remove(&tls);
        return 1;
      }
  free(buf);
  tls_remove(&tls);
  return 0;
}
