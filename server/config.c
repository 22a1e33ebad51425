/* config.c: parses fsps-server's flags; every flag has an FSPS_* variable
 * read first, so a flag given on the command line overrides it. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "shard/shard.h"

#ifndef FSPS_VERSION
#define FSPS_VERSION "0.0.0"
#endif

static const char usage[] =
    "Usage: fsps-server [options]\n"
    "\n"
    "Holds slice --index of every layer of a model whose parameters are\n"
    "sharded over --num-servers servers, sums the gradient slices that\n"
    "--workers workers push each step, and applies the optimizer.\n"
    "\n"
    "Options (each also read from the environment variable shown):\n"
    "  --listen ADDR        gRPC address to serve [FSPS_LISTEN]\n"
    "                       (default 0.0.0.0:7070; port 0 picks a free one)\n"
    "  --index S            this server's index, 0-based [FSPS_INDEX] (0)\n"
    "  --num-servers N      number of servers S [FSPS_NUM_SERVERS] (1)\n"
    "  --workers W          workers that push each step [FSPS_WORKERS] (1)\n"
    "  --threads T          gRPC completion-queue threads [FSPS_THREADS] (2)\n"
    "  --mode M             bsp, ssp or asp [FSPS_MODE] (bsp)\n"
    "  --staleness K        SSP: steps a worker may run ahead\n"
    "                       [FSPS_STALENESS] (0)\n"
    "  --deterministic      sum the W gradients in worker order, so results\n"
    "                       are bit-for-bit reproducible [FSPS_DETERMINISTIC]\n"
    "  --nan-policy P       reject (refuse a gradient holding NaN/Inf with\n"
    "                       INVALID_ARGUMENT) or skip (zero those elements)\n"
    "                       [FSPS_NAN_POLICY] (reject)\n"
    "  --grace-ms MS        on SIGTERM, time calls in flight get to finish\n"
    "                       [FSPS_GRACE_MS] (5000)\n"
    "  --port-file PATH     write the bound port here once listening\n"
    "                       [FSPS_PORT_FILE]\n"
    "  --metrics-listen ADDR serve Prometheus metrics at http://ADDR/metrics\n"
    "                       and a status page at http://ADDR/ (host:port; port\n"
    "                       0 picks a free one) [FSPS_METRICS_LISTEN] (off)\n"
    "  --metrics-port-file PATH  write the metrics port here once listening\n"
    "                       [FSPS_METRICS_PORT_FILE]\n"
    "  --checkpoint-dir DIR restore the newest valid checkpoint from DIR at\n"
    "                       start; write one on the Checkpoint call and on\n"
    "                       SIGTERM [FSPS_CHECKPOINT_DIR]\n"
    "  --checkpoint-every N also checkpoint each time every layer reaches a\n"
    "                       multiple of N steps [FSPS_CHECKPOINT_EVERY] (0)\n"
    "  --keep K             checkpoint files kept [FSPS_KEEP] (3)\n"
    "  --worker-timeout SEC how long a step waits for the last workers'\n"
    "                       pushes once one has arrived; 0 waits forever\n"
    "                       [FSPS_WORKER_TIMEOUT] (0)\n"
    "  --on-worker-timeout A fail (the calls waiting on the step fail with\n"
    "                       ABORTED naming the missing workers) or proceed\n"
    "                       (apply the step averaged over the workers that\n"
    "                       pushed; later steps stop waiting for the missing\n"
    "                       ones until they push again)\n"
    "                       [FSPS_ON_WORKER_TIMEOUT] (fail)\n"
    "  --inject-reply-drops P  testing aid: answer UNAVAILABLE instead of\n"
    "                       the reply to a counted push with probability P,\n"
    "                       as if the reply were lost "
    "[FSPS_INJECT_REPLY_DROPS]\n"
    "                       (0)\n"
    "  --inject-checkpoint-delay-ms MS  testing aid: each checkpoint file is\n"
    "                       written MS ms slower, as on a slow disk\n"
    "                       [FSPS_INJECT_CHECKPOINT_DELAY_MS] (0)\n"
    "  --tls-cert FILE      serve TLS only (never plaintext) with this PEM\n"
    "                       certificate chain; re-read when the file changes\n"
    "                       [FSPS_TLS_CERT] (off)\n"
    "  --tls-key FILE       the certificate's PEM private key [FSPS_TLS_KEY]\n"
    "  --tls-client-ca FILE mutual TLS: require a client certificate signed\n"
    "                       by a CA of this PEM file [FSPS_TLS_CLIENT_CA] "
    "(off)\n"
    "  --health-listen ADDR also serve grpc.health.v1 alone, in plaintext, on\n"
    "                       ADDR (host:port; for the kubelet's gRPC probes of\n"
    "                       a TLS server) [FSPS_HEALTH_LISTEN] (off)\n"
    "  --health-port-file PATH  write the health port here once listening\n"
    "                       [FSPS_HEALTH_PORT_FILE]\n"
    "  --log-level L        error, warn, info or debug [FSPS_LOG_LEVEL] "
    "(info)\n"
    "  --log-format F       text, or json: one JSON object per line (time,\n"
    "                       level, process, message, fields)\n"
    "                       [FSPS_LOG_FORMAT] (text)\n"
    "  --auth-tokens FILE   take only calls with a bearer token of FILE: one\n"
    "                       `ROLE TOKEN` per line, ROLE worker, reader or\n"
    "                       admin; # comments; reloaded on SIGHUP\n"
    "                       [FSPS_AUTH_TOKENS] (off: no token needed)\n"
    "  --help               print this help and exit\n"
    "  --version            print the version and exit\n";

enum {
  OPT_LISTEN = 1000,
  OPT_INDEX,
  OPT_NUM_SERVERS,
  OPT_WORKERS,
  OPT_THREADS,
  OPT_MODE,
  OPT_STALENESS,
  OPT_DETERMINISTIC,
  OPT_NAN_POLICY,
  OPT_GRACE,
  OPT_PORT_FILE,
  OPT_LOG_LEVEL,
  OPT_LOG_FORMAT,
  OPT_CKPT_DIR,
  OPT_CKPT_EVERY,
  OPT_KEEP,
  OPT_WORKER_TIMEOUT,
  OPT_ON_WORKER_TIMEOUT,
  OPT_REPLY_DROPS,
  OPT_CKPT_DELAY,
  OPT_METRICS_LISTEN,
  OPT_METRICS_PORT_FILE,
  OPT_AUTH_TOKENS,
  OPT_TLS_CERT,
  OPT_TLS_KEY,
  OPT_TLS_CLIENT_CA,
  OPT_HEALTH_LISTEN,
  OPT_HEALTH_PORT_FILE,
  OPT_HELP,
  OPT_VERSION,
};

/* In the enum's order: a bad value is reported by this table's name. */
static const struct option options[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"index", required_argument, NULL, OPT_INDEX},
    {"num-servers", required_argument, NULL, OPT_NUM_SERVERS},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"mode", required_argument, NULL, OPT_MODE},
    {"staleness", required_argument, NULL, OPT_STALENESS},
    {"deterministic", no_argument, NULL, OPT_DETERMINISTIC},
    {"nan-policy", required_argument, NULL, OPT_NAN_POLICY},
    {"grace-ms", required_argument, NULL, OPT_GRACE},
    {"port-file", required_argument, NULL, OPT_PORT_FILE},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"checkpoint-dir", required_argument, NULL, OPT_CKPT_DIR},
    {"checkpoint-every", required_argument, NULL, OPT_CKPT_EVERY},
    {"keep", required_argument, NULL, OPT_KEEP},
    {"worker-timeout", required_argument, NULL, OPT_WORKER_TIMEOUT},
    {"on-worker-timeout", required_argument, NULL, OPT_ON_WORKER_TIMEOUT},
    {"inject-reply-drops", required_argument, NULL, OPT_REPLY_DROPS},
    {"inject-checkpoint-delay-ms", required_argument, NULL, OPT_CKPT_DELAY},
    {"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
    {"metrics-port-file", required_argument, NULL, OPT_METRICS_PORT_FILE},
    {"auth-tokens", required_argument, NULL, OPT_AUTH_TOKENS},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-client-ca", required_argument, NULL, OPT_TLS_CLIENT_CA},
    {"health-listen", required_argument, NULL, OPT_HEALTH_LISTEN},
    {"health-port-file", required_argument, NULL, OPT_HEALTH_PORT_FILE},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* The environment variable of each option, in the order of the enum. */
static const char *env_names[] = {
    "FSPS_LISTEN",
    "FSPS_INDEX",
    "FSPS_NUM_SERVERS",
    "FSPS_WORKERS",
    "FSPS_THREADS",
    "FSPS_MODE",
    "FSPS_STALENESS",
    "FSPS_DETERMINISTIC",
    "FSPS_NAN_POLICY",
    "FSPS_GRACE_MS",
    "FSPS_PORT_FILE",
    "FSPS_LOG_LEVEL",
    "FSPS_LOG_FORMAT",
    "FSPS_CHECKPOINT_DIR",
    "FSPS_CHECKPOINT_EVERY",
    "FSPS_KEEP",
    "FSPS_WORKER_TIMEOUT",
    "FSPS_ON_WORKER_TIMEOUT",
    "FSPS_INJECT_REPLY_DROPS",
    "FSPS_INJECT_CHECKPOINT_DELAY_MS",
    "FSPS_METRICS_LISTEN",
    "FSPS_METRICS_PORT_FILE",
    "FSPS_AUTH_TOKENS",
    "FSPS_TLS_CERT",
    "FSPS_TLS_KEY",
    "FSPS_TLS_CLIENT_CA",
    "FSPS_HEALTH_LISTEN",
    "FSPS_HEALTH_PORT_FILE",
};
_Static_assert(sizeof env_names / sizeof env_names[0] == OPT_HELP - OPT_LISTEN,
               "one environment variable per option, in the enum's order");

const char *server_config_mode_name(server_mode m) {
  return m == MODE_SSP ? "ssp" : m == MODE_ASP ? "asp" : "bsp";
}

static int fail(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, len, fmt, ap);
  va_end(ap);
  return -1;
}

/* parse_u64 reads a whole decimal number in [lo, hi]. */
static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
  char *end;
  errno = 0;
  if (*s == '-' || *s == '\0')
    return -1;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

static bool parse_bool(const char *s, bool *out) {
  if (!strcmp(s, "1") || !strcmp(s, "true") || !strcmp(s, "yes")) {
    *out = true;
    return true;
  }
  if (!strcmp(s, "0") || !strcmp(s, "false") || !strcmp(s, "no") || !*s) {
    *out = false;
    return true;
  }
  return false;
}

static int set_number(int opt, const char *v, server_config *c) {
  uint64_t x;
  switch (opt) {
  case OPT_INDEX:
    if (parse_u64(v, 0, SHARD_MAX_SERVERS - 1, &x))
      return -1;
    c->index = (uint32_t)x;
    return 0;
  case OPT_NUM_SERVERS:
  case OPT_WORKERS:
    if (parse_u64(v, 1,
                  opt == OPT_WORKERS ? SHARD_MAX_WORKERS : SHARD_MAX_SERVERS,
                  &x))
      return -1;
    *(opt == OPT_WORKERS ? &c->workers : &c->num_servers) = (uint32_t)x;
    return 0;
  case OPT_CKPT_DELAY:
    if (parse_u64(v, 0, 3600000, &x))
      return -1;
    c->ckpt_delay_ms = (uint32_t)x;
    return 0;
  case OPT_THREADS:
    if (parse_u64(v, 1, 256, &x))
      return -1;
    c->threads = (int)x;
    return 0;
  case OPT_STALENESS:
    if (parse_u64(v, 0, 1000, &x))
      return -1;
    c->staleness = (uint32_t)x;
    return 0;
  case OPT_CKPT_EVERY:
    if (parse_u64(v, 0, UINT64_MAX / 2, &x))
      return -1;
    c->checkpoint_every = x;
    return 0;
  case OPT_KEEP:
    if (parse_u64(v, 1, 1000, &x))
      return -1;
    c->keep = (uint32_t)x;
    return 0;
  case OPT_WORKER_TIMEOUT:
    if (parse_u64(v, 0, 7 * 24 * 3600, &x))
      return -1;
    c->worker_timeout_s = (uint32_t)x;
    return 0;
  default: /* OPT_GRACE */
    if (parse_u64(v, 0, 3600000, &x))
      return -1;
    c->grace_ms = (int64_t)x;
    return 0;
  }
}

/* parse_probability reads a decimal number in [0, 1]. */
static int parse_probability(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v >= 0.0 && v <= 1.0))
    return -1;
  *out = v;
  return 0;
}

static int set_word(int opt, const char *v, server_config *c) {
  switch (opt) {
  case OPT_MODE:
    if (!strcmp(v, "bsp"))
      c->mode = MODE_BSP;
    else if (!strcmp(v, "ssp"))
      c->mode = MODE_SSP;
    else if (!strcmp(v, "asp"))
      c->mode = MODE_ASP;
    else
      return -1;
    return 0;
  case OPT_NAN_POLICY:
    if (strcmp(v, "reject") && strcmp(v, "skip"))
      return -1;
    c->nan_skip = !strcmp(v, "skip");
    return 0;
  case OPT_LOG_LEVEL:
    c->log_level = server_log_parse_level(v);
    return c->log_level < 0 ? -1 : 0;
  case OPT_LOG_FORMAT:
    c->log_format = logfmt_parse_format(v);
    return c->log_format < 0 ? -1 : 0;
  case OPT_DETERMINISTIC:
    return parse_bool(v, &c->deterministic) ? 0 : -1;
  case OPT_ON_WORKER_TIMEOUT:
    if (strcmp(v, "fail") && strcmp(v, "proceed"))
      return -1;
    c->timeout_proceed = !strcmp(v, "proceed");
    return 0;
  case OPT_REPLY_DROPS:
    return parse_probability(v, &c->reply_drops);
  default:
    return set_number(opt, v, c);
  }
}

/* set_tls stores the TLS and health-port options' values (paths and an
 * address); 1 when opt is none of them. */
static int set_tls(int opt, const char *v, server_config *c) {
  char *dst = opt == OPT_TLS_CERT           ? c->tls_cert
              : opt == OPT_TLS_KEY          ? c->tls_key
              : opt == OPT_TLS_CLIENT_CA    ? c->tls_client_ca
              : opt == OPT_HEALTH_LISTEN    ? c->health_listen
              : opt == OPT_HEALTH_PORT_FILE ? c->health_port_file
                                            : NULL;
  if (dst == NULL)
    return 1;
  size_t cap =
      opt == OPT_HEALTH_LISTEN ? sizeof c->health_listen : sizeof c->tls_cert;
  if (strlen(v) >= cap)
    return -1;
  strcpy(dst, v);
  return 0;
}

/* set applies one option's value; -1 when the value is not acceptable. */
static int set(int opt, const char *v, server_config *c) {
  if (opt == OPT_AUTH_TOKENS) { /* the file is read at start (gate.h) */
    if (!*v || strlen(v) >= sizeof c->auth_tokens)
      return -1; /* empty is refused: never off by a slip */
    strcpy(c->auth_tokens, v);
    return 0;
  }
  int tls = set_tls(opt, v, c);
  if (tls <= 0)
    return tls;
  if (opt == OPT_METRICS_LISTEN || opt == OPT_METRICS_PORT_FILE) {
    char *dst = opt == OPT_METRICS_LISTEN ? c->metrics_listen
                                          : c->metrics_port_file;
    size_t cap = opt == OPT_METRICS_LISTEN ? sizeof c->metrics_listen
                                           : sizeof c->metrics_port_file;
    if (strlen(v) >= cap)
      return -1;
    strcpy(dst, v);
    return 0;
  }
  if (opt == OPT_LISTEN || opt == OPT_PORT_FILE || opt == OPT_CKPT_DIR) {
    char *dst = opt == OPT_LISTEN      ? c->listen
                : opt == OPT_PORT_FILE ? c->port_file
                                       : c->checkpoint_dir;
    size_t cap = sizeof c->port_file;
    if (opt == OPT_LISTEN)
      cap = sizeof c->listen;
    if (strlen(v) >= cap || (opt == OPT_LISTEN && !*v))
      return -1;
    strcpy(dst, v);
    return 0;
  }
  return set_word(opt, v, c);
}

/* A bad value is quoted up to SHOWN bytes, so that a path longer than the
 * message still leaves room for the flag's name. */
#define SHOWN 200

static const char *cut(const char *v) {
  return strlen(v) > SHOWN ? "..." : "";
}

static void defaults(server_config *c) {
  memset(c, 0, sizeof *c);
  strcpy(c->listen, "0.0.0.0:7070");
  c->num_servers = 1;
  c->workers = 1;
  c->threads = 2;
  c->log_level = LOG_INFO;
  c->grace_ms = 5000;
  c->keep = 3;
}

static int from_env(server_config *c, char *err, size_t errlen) {
  for (int i = 0; i < (int)(sizeof env_names / sizeof env_names[0]); i++) {
    const char *v = getenv(env_names[i]);
    if (v != NULL && set(OPT_LISTEN + i, v, c) != 0)
      return fail(err, errlen, "bad value '%.*s%s' in %s (see --help)", SHOWN,
                  v, cut(v), env_names[i]);
  }
  return 0;
}

/* check_tls checks that the TLS options go together. */
static int check_tls(const server_config *c, char *err, size_t errlen) {
  if (!c->tls_cert[0] != !c->tls_key[0])
    return fail(err, errlen,
                "--tls-cert and --tls-key go together: give the certificate "
                "and its key");
  if (c->tls_client_ca[0] && !c->tls_cert[0])
    return fail(err, errlen,
                "--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key");
  if (c->health_port_file[0] && !c->health_listen[0])
    return fail(err, errlen, "--health-port-file needs --health-listen");
  return 0;
}

static int check(const server_config *c, char *err, size_t errlen) {
  if (c->index >= c->num_servers)
    return fail(err, errlen,
                "--index %u is out of range: with --num-servers %u it must "
                "be 0..%u",
                c->index, c->num_servers, c->num_servers - 1);
  if (c->checkpoint_every && !c->checkpoint_dir[0])
    return fail(err, errlen, "--checkpoint-every needs --checkpoint-dir");
  if (c->mode != MODE_SSP && c->staleness != 0)
    return fail(err, errlen, "--staleness needs --mode ssp");
  if (c->mode == MODE_ASP && c->worker_timeout_s)
    return fail(err, errlen,
                "--worker-timeout needs --mode bsp or ssp (ASP never waits "
                "for workers)");
  if (c->mode == MODE_ASP && c->deterministic)
    return fail(err, errlen,
                "--deterministic cannot apply to --mode asp (updates apply "
                "in arrival order)");
  return check_tls(c, err, errlen);
}

static int from_argv(int argc, char **argv, server_config *c, char *err,
                     size_t errlen) {
  int opt;
  optind = 1;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
    if (opt == OPT_HELP) {
      fputs(usage, stdout);
      return 1;
    }
    if (opt == OPT_VERSION) {
      printf("fsps-server %s\n", FSPS_VERSION);
      return 1;
    }
    if (opt == '?')
      return fail(err, errlen, "unknown or incomplete option '%s' (see --help)",
                  argv[optind - 1]);
    const char *v = optarg ? optarg : "";
    if (set(opt, opt == OPT_DETERMINISTIC ? "1" : v, c) != 0)
      return fail(err, errlen, "bad value '%.*s%s' for --%s (see --help)",
                  SHOWN, v, cut(v), options[opt - OPT_LISTEN].name);
  }
  if (optind < argc)
    return fail(err, errlen, "unexpected argument '%s' (see --help)",
                argv[optind]);
  return 0;
}

int server_config_parse(int argc, char **argv, server_config *c, char *err,
                        size_t errlen) {
  defaults(c);
  int rc = from_env(c, err, errlen);
  if (rc == 0)
    rc = from_argv(argc, argv, c, err, errlen);
  if (rc == 0)
    rc = check(c, err, errlen);
  return rc;
}
