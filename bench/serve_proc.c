/* serve_proc.c: bench/serve's server under test (see serve_proc.h) — the
 * checkpoint written through ckpt/ from shard/'s initialisation, fsps-serve
 * started and stopped as a user would, /metrics read over plain HTTP. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ckpt_file.h"
#include "fsps_err.h"
#include "serve_proc.h"
#include "shard.h"
#include "wire.h"

/* ---- the checkpoint ---- */

static shard_spec *mlp_spec(const uint32_t *w, uint32_t nw, uint64_t seed) {
  shard_spec *sp = shard_spec_create(seed);
  for (uint32_t l = 0; sp != NULL && l + 1 < nw; l++) {
    char name[32];
    uint64_t wd[2] = {w[l + 1], w[l]}, bd[1] = {w[l + 1]};
    double bound = 1.0 / sqrt((double)w[l]); /* nn.Linear's bias init */
    snprintf(name, sizeof name, "fc%" PRIu32, l + 1);
    shard_spec_add_layer(sp, name);
    shard_spec_add_tensor(sp, "weight", 2, wd, SHARD_INIT_HE_UNIFORM, 0, 0);
    shard_spec_add_tensor(sp, "bias", 1, bd, SHARD_INIT_UNIFORM, -bound, bound);
  }
  return sp;
}

/* put_layers writes every layer's initial values (no optimizer state: SGD
 * without momentum keeps none). */
static int put_layers(ckpt_writer *wr, const shard_spec *sp, uint64_t version,
                      char *msg, size_t msglen) {
  for (uint32_t l = 0; l < shard_spec_num_layers(sp); l++) {
    uint64_t n = shard_spec_layer(sp, l)->n;
    float *buf = malloc(n * sizeof(float));
    if (buf == NULL || shard_init_fill(sp, l, 0, n, buf) != FSPS_OK) {
      free(buf);
      snprintf(msg, msglen, "cannot draw layer %" PRIu32 "'s values", l);
      return FSPS_NOMEM;
    }
    ckpt_writer_layer(wr, &(ckpt_layer_head){l, n, version, n});
    ckpt_writer_floats(wr, buf, n);
    free(buf);
  }
  return FSPS_OK;
}

int bench_ckpt_write(const char *dir, const uint32_t *w, uint32_t nw,
                     uint64_t seed, uint64_t version, char *msg,
                     size_t msglen) {
  shard_spec *sp = mlp_spec(w, nw, seed);
  wire_spec_msg m;
  int rc = sp ? shard_spec_validate(sp, msg, msglen) : FSPS_NOMEM;
  if (rc == FSPS_OK && (rc = wire_spec_to_proto(&m, sp)) != FSPS_OK)
    wire_spec_msg_free(&m);
  if (rc != FSPS_OK) {
    shard_spec_destroy(sp);
    return rc;
  }
  size_t len = protobuf_c_message_get_packed_size(&m.model.base);
  uint8_t *bytes = malloc(len ? len : 1);
  if (bytes != NULL)
    protobuf_c_message_pack(&m.model.base, bytes);
  wire_spec_msg_free(&m);
  /* The hash of the spec as a server decodes it, as its files carry. */
  shard_spec *got = bytes ? wire_spec_unpack(bytes, len, msg, msglen) : NULL;
  ckpt_header h = {.S = 1,
                   .s = 0,
                   .W = 1,
                   .nlayers = nw - 1,
                   .hash = got ? shard_spec_hash(got) : 0,
                   .tag = version,
                   .spec = bytes,
                   .speclen = (uint32_t)len};
  ckpt_writer *wr = NULL;
  if (bytes == NULL)
    snprintf(msg, msglen, "out of memory for the model spec");
  else if (got != NULL)
    wr = ckpt_writer_open(dir, &h, msg, msglen);
  shard_spec_destroy(got);
  rc = wr == NULL ? FSPS_IO : put_layers(wr, sp, version, msg, msglen);
  if (rc == FSPS_OK)
    rc = ckpt_writer_commit(wr, msg, msglen);
  ckpt_writer_destroy(wr);
  free(bytes);
  shard_spec_destroy(sp);
  return rc;
}

/* ---- the process ---- */

static void show_log(const serve_proc *p) {
  FILE *f = fopen(p->log, "r");
  char line[1024];
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    fprintf(stderr, "  %s", line);
  if (f)
    fclose(f);
}

static int read_port(const char *path) {
  FILE *f = fopen(path, "r");
  int port = 0;
  if (f != NULL) {
    if (fscanf(f, "%d", &port) != 1)
      port = 0;
    fclose(f);
  }
  return port;
}

/* wait_ports waits up to 60 s for both port files while p runs. */
static int wait_ports(serve_proc *p, const char *pf, const char *mpf) {
  for (int i = 0; i < 6000; i++) {
    p->port = read_port(pf);
    p->metrics_port = read_port(mpf);
    if (p->port > 0 && p->metrics_port > 0)
      return 0;
    if (waitpid(p->pid, NULL, WNOHANG) != 0) {
      p->pid = 0;
      return -1;
    }
    nanosleep(&(struct timespec){0, 10000000}, NULL);
  }
  return -1;
}

static void exec_serve(const serve_proc_opts *o, const char *pf,
                       const char *mpf, int log) {
  char mb[16], delay[16], threads[16];
  snprintf(mb, sizeof mb, "%" PRIu32, o->max_batch);
  snprintf(delay, sizeof delay, "%" PRIu32, o->delay_us);
  snprintf(threads, sizeof threads, "%" PRIu32, o->threads);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  dup2(log, 1);
  dup2(log, 2);
  execl(o->bin, o->bin, "--checkpoint-dir", o->ckpt_dir, "--listen",
        "127.0.0.1:0", "--port-file", pf, "--max-batch", mb, "--max-delay-us",
        delay, "--threads", threads, "--metrics-listen", "127.0.0.1:0",
        "--metrics-port-file", mpf, (char *)NULL);
  fprintf(stderr, "cannot run %s: %s\n", o->bin, strerror(errno));
  _exit(127);
}

int serve_proc_start(serve_proc *p, const serve_proc_opts *o) {
  char pf[4200], mpf[4200];
  *p = (serve_proc){0};
  snprintf(pf, sizeof pf, "%s/port", o->workdir);
  snprintf(mpf, sizeof mpf, "%s/metrics-port", o->workdir);
  snprintf(p->log, sizeof p->log, "%s/fsps-serve.log", o->workdir);
  unlink(pf);
  unlink(mpf);
  int log = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log < 0 || (p->pid = fork()) < 0) {
    fprintf(stderr, "bench/serve: cannot start %s: %s\n", o->bin,
            strerror(errno));
    return -1;
  }
  if (p->pid == 0)
    exec_serve(o, pf, mpf, log);
  close(log);
  if (wait_ports(p, pf, mpf) == 0)
    return 0;
  fprintf(stderr, "bench/serve: %s did not start serving; its log:\n", o->bin);
  show_log(p);
  if (p->pid > 0) {
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
  }
  return -1;
}

/* http_get reads http://127.0.0.1:port/metrics whole into buf. */
static int http_get(int port, char *buf, size_t len) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  struct timeval tv = {30, 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0)
    return -1;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  static const char req[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  size_t got = 0;
  ssize_t n = -1;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1))
    while (got + 1 < len && (n = read(fd, buf + got, len - 1 - got)) > 0)
      got += (size_t)n;
  close(fd);
  buf[got] = '\0';
  return n == 0 ? 0 : -1;
}

static int counter(const char *text, const char *name, uint64_t *out) {
  char key[128];
  snprintf(key, sizeof key, "\n%s ", name);
  const char *at = strstr(text, key);
  if (at == NULL)
    return -1;
  *out = (uint64_t)strtod(at + strlen(key), NULL);
  return 0;
}

int serve_proc_counters(const serve_proc *p, uint64_t *batches,
                        uint64_t *rows) {
  static char text[1 << 16];
  if (http_get(p->metrics_port, text, sizeof text) != 0 ||
      counter(text, "fsps_serve_batches_total", batches) != 0 ||
      counter(text, "fsps_serve_rows_total", rows) != 0) {
    fprintf(stderr,
            "bench/serve: no counters on fsps-serve's /metrics "
            "(port %d)\n",
            p->metrics_port);
    return -1;
  }
  return 0;
}

int serve_proc_stop(serve_proc *p) {
  int status = 0;
  kill(p->pid, SIGTERM);
  waitpid(p->pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return 0;
  fprintf(stderr, "bench/serve: fsps-serve ended with status %d; its log:\n",
          status);
  show_log(p);
  return -1;
}
