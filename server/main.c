/* main.c: fsps-server's entry point — configuration, the gRPC service, and
 * a libuv loop that turns SIGTERM/SIGINT into a graceful stop. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include <uv.h>

#include "checkpoint.h"
#include "config.h"
#include "gate.h"
#include "log.h"
#include "optim.h"
#include "secure.h"
#include "service.h"
#include "wire.h"

/* write_port_file records the bound port atomically (for scripts and tests
 * that listen on port 0). */
static int write_port_file(const char *path, int port) {
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL)
    return -1;
  fprintf(f, "%d\n", port);
  if (fclose(f) != 0 || rename(tmp, path) != 0)
    return -1;
  return 0;
}

static void on_signal(uv_signal_t *h, int signum) {
  LOGI("received %s: stopping (calls in flight get up to %lld ms)",
       signum == SIGTERM ? "SIGTERM" : "SIGINT",
       (long long)((server_config *)h->data)->grace_ms);
  uv_stop(h->loop);
}

static void on_tick(uv_timer_t *h) {
  store_expire(h->data);
}

/* TLS: certificate files are looked at this often even when no connection
 * comes, so that a reload (or a refused set) is logged soon after. */
#define TLS_POLL_MS 2000

static void on_tls_tick(uv_timer_t *h) {
  rpc_server_tls_poll(h->data);
}

/* uv_failed logs a libuv call that failed; true if it did. */
static bool uv_failed(int rc, const char *what) {
  if (rc == 0)
    return false;
  LOGE("cannot %s: %s", what, uv_strerror(rc));
  return true;
}

static void on_hup(uv_signal_t *h, int signum) {
  (void)signum;
  server_auth_reload(h->data);
}

/* watch_hup reloads the token file on SIGHUP, with --auth-tokens only:
 * without, SIGHUP keeps its default action. */
static int watch_hup(uv_loop_t *loop, uv_signal_t *hup, server_auth *auth) {
  if (auth == NULL)
    return 0;
  hup->data = auth;
  if (uv_failed(uv_signal_init(loop, hup), "watch for SIGHUP") ||
      uv_failed(uv_signal_start(hup, on_hup, SIGHUP), "watch SIGHUP"))
    return -1;
  return 0;
}

/* watch sets the loop's handles up: SIGTERM and SIGINT stop it, and with
 * --worker-timeout a timer checks it four times a second. */
static int watch(uv_loop_t *loop, uv_signal_t *term, uv_signal_t *intr,
                 uv_timer_t *tick, server_config *cfg) {
  if (uv_failed(uv_signal_init(loop, term), "watch for SIGTERM") ||
      uv_failed(uv_signal_init(loop, intr), "watch for SIGINT") ||
      uv_failed(uv_timer_init(loop, tick), "make the timeout timer"))
    return -1;
  if (uv_failed(uv_signal_start(term, on_signal, SIGTERM), "watch SIGTERM") ||
      uv_failed(uv_signal_start(intr, on_signal, SIGINT), "watch SIGINT"))
    return -1;
  if (cfg->worker_timeout_s &&
      uv_failed(uv_timer_start(tick, on_tick, 250, 250),
                "start the --worker-timeout timer"))
    return -1;
  return 0;
}

static void on_sample(uv_timer_t *h) {
  server_metrics_tick(h->data);
}

/* sample_rates samples, once a second, the counters the status page's
 * rates come from (with --metrics-listen only). */
static int sample_rates(uv_loop_t *loop, uv_timer_t *t, server_metrics *m) {
  if (m == NULL)
    return 0;
  t->data = m;
  if (uv_failed(uv_timer_init(loop, t), "make the metrics timer") ||
      uv_failed(uv_timer_start(t, on_sample, 1000, 1000),
                "start the metrics timer"))
    return -1;
  return 0;
}

/* log_serving says the server is up, with its set-up as fields; among
 * them the instruction set the optimizer runs on (optim_isa_current). */
static void log_serving(const server_config *cfg, int port) {
  const char *isa = optim_isa_name(optim_isa_current());
  logfmt_fields f;
  logfmt_fields_init(&f);
  logfmt_field_str(&f, "listen", cfg->listen);
  logfmt_field_u64(&f, "port", (uint64_t)port);
  logfmt_field_u64(&f, "workers", cfg->workers);
  logfmt_field_str(&f, "mode", server_config_mode_name(cfg->mode));
  logfmt_field_str(&f, "optim_isa", isa);
  server_log_fields(
      LOG_INFO, &f,
      "serving on %s (port %d): server %u of %u, %u workers, %s%s%s, "
      "optimizer on %s",
      cfg->listen, port, cfg->index, cfg->num_servers, cfg->workers,
      server_config_mode_name(cfg->mode),
      cfg->deterministic ? ", deterministic" : "",
      cfg->reply_drops > 0 ? ", DROPPING PUSH REPLIES (testing)" : "", isa);
}

/* warn_optim_isa says when FSPS_OPTIM_ISA (read by optim/, which does no
 * I/O) names no instruction set, or one this CPU lacks: the optimizer then
 * runs another, with the same results but not the speed asked for. */
static void warn_optim_isa(void) {
  const char *want = getenv("FSPS_OPTIM_ISA");
  optim_isa isa;
  if (want == NULL || want[0] == '\0' || strcmp(want, "auto") == 0)
    return;
  if (optim_isa_parse(want, &isa) != 0)
    LOGW("FSPS_OPTIM_ISA=%s is not portable, avx2, avx512 or auto: ignored",
         want);
  else if (!optim_isa_supported(isa))
    LOGW("FSPS_OPTIM_ISA=%s: this CPU cannot run it; the optimizer runs %s",
         want, optim_isa_name(optim_isa_current()));
}

/* announce writes the port file and says the server is up: only once
 * SIGTERM and SIGINT are watched, so that a script or test that stops the
 * server as soon as the port file appears gets a clean stop and a final
 * checkpoint, not the default action's death (seen under TSan in CI). */
static void announce(const server_config *cfg, int port) {
  if (cfg->port_file[0] && write_port_file(cfg->port_file, port) != 0)
    LOGW("cannot write the port to %s", cfg->port_file);
  warn_optim_isa();
  log_serving(cfg, port);
}

/* wait_for_signal runs the libuv loop until SIGTERM or SIGINT. Returns 0,
 * or -1 (logged) when the loop could not be set up: the server then stops
 * at once rather than run without its signals or timeouts. */
static int wait_for_signal(server_config *cfg, service *svc, int port,
                           rpc_server *srv) {
  uv_loop_t loop;
  uv_signal_t term = {0}, intr = {0}, hup = {0};
  uv_timer_t tick = {0}, sample = {0}, tls = {0};
  if (uv_failed(uv_loop_init(&loop), "start the event loop"))
    return -1;
  term.data = intr.data = cfg;
  tick.data = svc->st;
  tls.data = srv;
  int rc = watch(&loop, &term, &intr, &tick, cfg);
  if (rc == 0)
    rc = sample_rates(&loop, &sample, svc->m);
  if (rc == 0)
    rc = watch_hup(&loop, &hup, svc->auth);
  if (rc == 0 && cfg->tls_cert[0] &&
      (uv_failed(uv_timer_init(&loop, &tls), "make the TLS file timer") ||
       uv_failed(uv_timer_start(&tls, on_tls_tick, TLS_POLL_MS, TLS_POLL_MS),
                 "start the TLS file timer")))
    rc = -1;
  if (rc == 0) {
    announce(cfg, port); /* SIGTERM is handled from here on */
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_handle_t *h[] = {(uv_handle_t *)&term, (uv_handle_t *)&intr,
                      (uv_handle_t *)&tick, (uv_handle_t *)&sample,
                      (uv_handle_t *)&hup,  (uv_handle_t *)&tls};
  for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
    if (h[i]->loop == &loop && !uv_is_closing(h[i]))
      uv_close(h[i], NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    LOGW("the event loop closed with handles still open");
  return rc;
}

/* final_checkpoint writes the state at SIGTERM, once no call runs. */
static int final_checkpoint(service *svc) {
  if (svc->ck == NULL || !store_ready(svc->st))
    return 0;
  uint32_t awaiting = store_awaiting(svc->st, NULL);
  if (awaiting > 0) { /* a file never holds a layer without its values */
    LOGW("no final checkpoint: %u layers still await their values "
         "(SetValues); the last checkpoint, if any, stays",
         awaiting);
    return 0;
  }
  char path[1200], err[512];
  uint64_t bytes, version;
  if (ckpt_write_now(svc->ck, path, sizeof path, &bytes, &version, err,
                     sizeof err) != FSPS_OK) {
    LOGE("final checkpoint failed: %s", err);
    return 1;
  }
  LOGI("final checkpoint: %s (version %llu)", path,
       (unsigned long long)version);
  return 0;
}

/* restore prepares checkpoints and loads the newest valid one. */
static int restore(const server_config *cfg, service *svc) {
  char msg[1400];
  if (!cfg->checkpoint_dir[0])
    return 0;
  svc->ck = ckpt_create(svc->st, cfg, msg, sizeof msg);
  if (svc->ck == NULL) {
    LOGE("%s", msg);
    return 1;
  }
  int rc = ckpt_restore(svc->ck, msg, sizeof msg);
  if (rc == FSPS_OK || rc == FSPS_NOT_FOUND)
    LOGI("%s", msg);
  else
    LOGE("%s", msg);
  return rc == FSPS_OK || rc == FSPS_NOT_FOUND ? 0 : 1;
}

/* start_serving starts the gRPC server (and --health-listen's); NULL
 * (logged) when either fails. */
static rpc_server *start_serving(server_config *cfg, service *svc,
                                 rpc_server **health) {
  size_t n;
  const rpc_method *methods = server_service_methods(svc, &n);
  rpc_server_tls tls;
  rpc_server_opts o = {.listen = cfg->listen,
                       .threads = cfg->threads,
                       .max_message_bytes = WIRE_MAX_MESSAGE_BYTES,
                       .tls = server_tls_opts(cfg, &tls)};
  rpc_status st;
  rpc_server *srv = rpc_server_create(&o, methods, n, &st);
  if (srv == NULL) {
    LOGE("%s", st.msg);
    return NULL;
  }
  /* The gate guards this server only: --health-listen's port serves the
   * health method alone, which needs no token anyway. */
  if (svc->auth != NULL)
    rpc_server_set_gate(srv, server_auth_gate, svc);
  int rc = rpc_server_start(srv, &st);
  if (rc != FSPS_OK)
    LOGE("%s", st.msg);
  else if (cfg->health_listen[0] &&
           (*health = server_health_start(cfg, svc)) == NULL)
    rc = FSPS_UNAVAILABLE; /* logged */
  if (rc != FSPS_OK) {
    rpc_server_destroy(srv);
    return NULL;
  }
  return srv;
}

static int serve(server_config *cfg, service *svc) {
  rpc_server *health = NULL;
  rpc_server *srv = start_serving(cfg, svc, &health);
  if (srv == NULL)
    return 1;
  int waited = wait_for_signal(cfg, svc, rpc_server_port(srv), srv);
  server_health_stop(health);
  if (svc->ck != NULL) /* answer the calls whose file work is queued */
    ckpt_drain(svc->ck);
  rpc_server_shutdown(srv, cfg->grace_ms);
  rpc_server_destroy(srv);
  int rc = final_checkpoint(svc);
  if (waited != 0)
    rc = 1;
  LOGI("stopped");
  return rc;
}

/* start_metrics serves /metrics with --metrics-listen, before anything
 * else serves: a bad address stops the server before it starts. */
static int start_metrics(const server_config *cfg, service *svc) {
  if (!cfg->metrics_listen[0])
    return 0;
  char err[512];
  svc->m = server_metrics_create(svc->st, cfg);
  if (svc->m == NULL) {
    LOGE("out of memory for metrics");
    return 1;
  }
  store_set_metrics(svc->st, svc->m);
  if (server_metrics_listen(svc->m, cfg, err, sizeof err) != 0) {
    LOGE("%s", err);
    return 1;
  }
  LOGI("metrics on http://%s/metrics (port %d)", cfg->metrics_listen,
       metrics_http_port(svc->m->http));
  return 0;
}

/* start_auth loads --auth-tokens: a file that cannot be used stops the
 * server before it serves (exit 2, as a bad flag). */
static int start_auth(const server_config *cfg, service *svc) {
  if (!cfg->auth_tokens[0])
    return 0;
  char err[1400];
  svc->auth = server_auth_create(cfg->auth_tokens, err, sizeof err);
  if (svc->auth != NULL)
    return 0;
  LOGE("--auth-tokens: %s", err);
  return 2;
}

/* check_tls refuses bad TLS files before anything starts (metrics, a
 * checkpoint's restore): a server that cannot serve never half-starts. */
static int check_tls(const server_config *cfg) {
  rpc_server_tls tls;
  rpc_status st;
  if (server_tls_opts(cfg, &tls) == NULL ||
      rpc_server_tls_check(&tls, &st) == FSPS_OK)
    return 0;
  LOGE("%s", st.msg);
  return 1;
}

/* incarnation draws this process's random, non-zero identity. */
static uint64_t incarnation(void) {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
    v = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
  return v ? v : 1;
}

int main(int argc, char **argv) {
  server_config cfg;
  char err[512];
  int rc = server_config_parse(argc, argv, &cfg, err, sizeof err);
  if (rc != 0) {
    if (rc < 0)
      fprintf(stderr, "fsps-server: %s\n", err);
    return rc < 0 ? 2 : 0;
  }
  /* Keep large buffers (gRPC's message slices, our pools) off mmap: page
   * faults are slow enough here to cost most of the throughput. */
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  char tag[64];
  snprintf(tag, sizeof tag, "server %u/%u", cfg.index, cfg.num_servers);
  server_log_set((log_level)cfg.log_level, tag);
  server_log_set_format((logfmt_format)cfg.log_format, cfg.index,
                        cfg.num_servers);
  server_rpc_log();
  service svc = {.st = store_create(&cfg), .incarnation = incarnation()};
  if (svc.st == NULL) {
    LOGE("out of memory");
    return 1;
  }
  rc = check_tls(&cfg);
  if (rc == 0)
    rc = start_auth(&cfg, &svc);
  if (rc == 0)
    rc = start_metrics(&cfg, &svc);
  if (rc == 0)
    rc = restore(&cfg, &svc);
  if (rc == 0)
    rc = serve(&cfg, &svc);
  ckpt_destroy(svc.ck);
  server_metrics_destroy(svc.m); /* before the store its scrapes read */
  server_auth_destroy(svc.auth);
  store_destroy(svc.st);
  return rc;
}
