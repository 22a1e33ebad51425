/* serve_opts.c: fsps-serve's and fsps-export's flags, table-driven like
 * fsps-worker's: each flag has a type, a range, the tools that take it and
 * an FSPS_* variable read first, so the command line overrides it. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve_opts.h"

#ifndef FSPS_VERSION
#define FSPS_VERSION "0.0.0"
#endif

typedef enum { T_STR, T_U32, T_U64, T_DBL, T_FLAG } opt_type;

typedef struct {
  const char *name, *env, *help;
  opt_type type;
  size_t off, size;
  double lo, hi;
  unsigned tools; /* OPTS_SERVE | OPTS_EXPORT */
} opt_def;

#define F(field) offsetof(serve_opts, field), sizeof(((serve_opts *)0)->field)
#define BOTH (OPTS_SERVE | OPTS_EXPORT)
#define SERVE OPTS_SERVE

static const opt_def defs[] = {
    {"checkpoint-dir", "FSPS_CHECKPOINT_DIR",
     "load the model from this folder of checkpoint files (any S)", T_STR,
     F(checkpoint_dir), 0, 0, BOTH},
    {"checkpoint-version", "FSPS_CHECKPOINT_VERSION",
     "load that version of the folder, not the newest complete one", T_U64,
     F(checkpoint_version), 0, 1.8e19, BOTH},
    {"servers", "FSPS_SERVERS",
     "or load it from the training servers, host:port,... in index order",
     T_STR, F(servers), 0, 0, BOTH},
    {"poll-ms", "FSPS_POLL_MS",
     "with --servers: ms between looks for a newer version (1000)", T_U32,
     F(poll_ms), 1, 3.6e6, SERVE},
    {"timeout-ms", "FSPS_TIMEOUT_MS",
     "deadline of each call to the servers, and of the wait for the first "
     "model (120000)",
     T_U64, F(timeout_ms), 1, 1e9, BOTH},
    {"token-file", "FSPS_TOKEN_FILE",
     "file holding the bearer token for servers with --auth-tokens (else "
     "FSPS_TOKEN; none: no token)",
     T_STR, F(token_file), 0, 0, BOTH},
    {"tls-ca", "FSPS_TLS_CA",
     "TLS to the training servers: PEM file of the CAs that sign them", T_STR,
     F(tls_ca), 0, 0, BOTH},
    {"tls-cert", "FSPS_TLS_CERT", "mutual TLS: this client's certificate",
     T_STR, F(tls_cert), 0, 0, BOTH},
    {"tls-key", "FSPS_TLS_KEY", "its PEM private key", T_STR, F(tls_key), 0, 0,
     BOTH},
    {"tls-server-name", "FSPS_TLS_SERVER_NAME",
     "the name the servers' certificates carry (default: the host)", T_STR,
     F(tls_server_name), 0, 0, BOTH},
    {"input", "FSPS_SERVE_INPUT",
     "batch: score this file (IDX ubyte images, .gz too, or raw float32 "
     "rows)",
     T_STR, F(input), 0, 0, SERVE},
    {"output", "FSPS_SERVE_OUTPUT",
     "fsps-serve: the predictions file; fsps-export: the .safetensors file",
     T_STR, F(output), 0, 0, BOTH},
    {"input-format", "FSPS_SERVE_INPUT_FORMAT",
     "idx or f32 (default: .f32 is f32, IDX magic is idx, else f32)", T_STR,
     F(input_format), 0, 0, SERVE},
    {"output-format", "FSPS_SERVE_OUTPUT_FORMAT",
     "csv or jsonl (default: .jsonl/.json is jsonl, else csv)", T_STR,
     F(output_format), 0, 0, SERVE},
    {"labels", "FSPS_SERVE_LABELS",
     "IDX labels of --input: print the accuracy at the end", T_STR, F(labels),
     0, 0, SERVE},
    {"normalize", "FSPS_NORMALIZE",
     "scale IDX inputs as fsps-worker --normalize did", T_FLAG, F(normalize),
     0, 0, SERVE},
    {"progress-secs", "FSPS_PROGRESS_SECS",
     "seconds between progress lines on stderr (1; 0 = none)", T_DBL,
     F(progress_secs), 0, 1e6, SERVE},
    {"max-batch", "FSPS_SERVE_MAX_BATCH",
     "rows per batch: batch chunks, online dynamic batches (64)", T_U32,
     F(online.max_batch), 1, 1 << 20, SERVE},
    {"max-delay-us", "FSPS_SERVE_MAX_DELAY_US",
     "online: how long a batch waits for more requests (500)", T_U32,
     F(online.max_delay_us), 0, 1e7, SERVE},
    {"threads", "FSPS_SERVE_THREADS", "online: compute threads (1)", T_U32,
     F(online.threads), 1, 1024, SERVE},
    {"listen", "FSPS_SERVE_LISTEN",
     "online: host:port to serve on (0.0.0.0:8001; port 0 = any)", T_STR,
     F(online.listen), 0, 0, SERVE},
    {"model-name", "FSPS_SERVE_MODEL_NAME",
     "online: the model's name in the protocol (fsps-mlp)", T_STR,
     F(online.model_name), 0, 0, SERVE},
    {"port-file", "FSPS_SERVE_PORT_FILE",
     "online: write the bound port here once serving", T_STR,
     F(online.port_file), 0, 0, SERVE},
    {"metrics-listen", "FSPS_METRICS_LISTEN",
     "serve Prometheus metrics at http://ADDR/metrics (host:port; port 0 "
     "picks a free one; off)",
     T_STR, F(metrics_listen), 0, 0, SERVE},
    {"metrics-port-file", "FSPS_METRICS_PORT_FILE",
     "write the metrics port here once listening", T_STR,
     F(metrics_port_file), 0, 0, SERVE},
    {"serve-tls-cert", "FSPS_SERVE_TLS_CERT",
     "online: TLS on the serving port, PEM certificate chain", T_STR,
     F(online.tls_cert), 0, 0, SERVE},
    {"serve-tls-key", "FSPS_SERVE_TLS_KEY", "online: its PEM private key",
     T_STR, F(online.tls_key), 0, 0, SERVE},
    {"serve-tls-client-ca", "FSPS_SERVE_TLS_CLIENT_CA",
     "online: require client certificates signed by these CAs", T_STR,
     F(online.tls_client_ca), 0, 0, SERVE},
};

#define NDEFS (sizeof defs / sizeof defs[0])

static void defaults(serve_opts *o) {
  memset(o, 0, sizeof *o);
  o->timeout_ms = 120000;
  o->poll_ms = 1000;
  o->progress_secs = 1;
  strcpy(o->online.listen, "0.0.0.0:8001");
  strcpy(o->online.model_name, "fsps-mlp");
  o->online.max_batch = 64;
  o->online.max_delay_us = 500;
  o->online.threads = 1;
}

static const char *tool_name(opts_tool tool) {
  return tool == OPTS_SERVE ? "fsps-serve" : "fsps-export";
}

static void usage(opts_tool tool) {
  if (tool == OPTS_SERVE)
    printf("Usage: fsps-serve (--checkpoint-dir DIR | --servers HOST:PORT,...)\n"
           "                  [--input FILE --output FILE] [options]\n\n"
           "Serves an MLP trained by fsps-worker, loaded from a folder of\n"
           "checkpoints (written at any S) or from the live training servers\n"
           "(following newer versions). With --input it scores the file in\n"
           "batch and exits; without, it serves online.\n\n");
  else
    printf("Usage: fsps-export (--checkpoint-dir DIR | --servers HOST:PORT,...)\n"
           "                   --output FILE.safetensors [options]\n\n"
           "Writes an MLP trained by fsps-worker as safetensors, with the\n"
           "names and shapes of PyTorch's nn.Sequential(Linear, ReLU, ...,\n"
           "Linear): 0.weight, 0.bias, 2.weight, ...\n\n");
  printf("Options (each also read from the environment variable shown):\n");
  for (size_t i = 0; i < NDEFS; i++)
    if (defs[i].tools & tool)
      printf("  --%-22s %s [%s]\n", defs[i].name, defs[i].help, defs[i].env);
  printf("  --%-22s %s\n  --%-22s %s\n\n", "help", "print this help and exit",
         "version", "print the version and exit");
  printf("Exit status: 0 done, 1 failed (message on stderr; no output file "
         "is left), 2 bad usage.\n");
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

static int set_number(const opt_def *d, const char *v, char *p) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || end == v || *end || !isfinite(x) || x < d->lo || x > d->hi)
    return -1;
  if (d->type == T_DBL) {
    *(double *)p = x;
    return 0;
  }
  if (strchr(v, '.') || strchr(v, '-') || strchr(v, 'e'))
    return -1;
  unsigned long long u = strtoull(v, NULL, 10);
  if (d->type == T_U32)
    *(uint32_t *)p = (uint32_t)u;
  else
    *(uint64_t *)p = u;
  return 0;
}

static int set(const opt_def *d, const char *v, serve_opts *o) {
  char *p = (char *)o + d->off;
  if (d->off == offsetof(serve_opts, checkpoint_version))
    o->pick_version = true;
  if (d->type == T_STR) {
    if (strlen(v) >= d->size)
      return -1;
    strcpy(p, v);
    return 0;
  }
  if (d->type == T_FLAG) {
    bool on = !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes");
    if (!on && strcmp(v, "0") && strcmp(v, "false") && strcmp(v, "no"))
      return -1;
    *(bool *)p = on;
    return 0;
  }
  return set_number(d, v, p);
}

static int from_env(opts_tool tool, serve_opts *o, char *err, size_t errlen) {
  for (size_t i = 0; i < NDEFS; i++) {
    const char *v = getenv(defs[i].env);
    if ((defs[i].tools & tool) && v != NULL && *v && set(&defs[i], v, o) != 0)
      return fail(err, errlen, "bad value '%s' in %s (see --help)", v,
                  defs[i].env);
  }
  return 0;
}

static void long_options(opts_tool tool, struct option *lo) {
  size_t n = 0;
  for (size_t i = 0; i < NDEFS; i++)
    if (defs[i].tools & tool)
      lo[n++] = (struct option){
          defs[i].name,
          defs[i].type == T_FLAG ? no_argument : required_argument, NULL,
          (int)i};
  lo[n++] = (struct option){"help", no_argument, NULL, 1000};
  lo[n++] = (struct option){"version", no_argument, NULL, 1001};
  /* named so that getopt does not take it for --token-file: refused, its
   * value never shown */
  lo[n++] = (struct option){"token", required_argument, NULL, 1002};
  lo[n] = (struct option){NULL, 0, NULL, 0};
}

static int from_argv(opts_tool tool, int argc, char **argv, serve_opts *o,
                     char *err, size_t errlen) {
  struct option lo[NDEFS + 4];
  long_options(tool, lo);
  int c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    if (c == 1000 || c == 1001) {
      if (c == 1000)
        usage(tool);
      else
        printf("%s %s\n", tool_name(tool), FSPS_VERSION);
      return 1;
    }
    if (c == '?')
      return fail(err, errlen,
                  "unknown or incomplete option '%.*s' (see --help)",
                  (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
    if (c == 1002)
      return fail(err, errlen,
                  "no --token flag: a command line shows in ps; give "
                  "--token-file FILE, FSPS_TOKEN_FILE or FSPS_TOKEN");
    const char *v = defs[c].type == T_FLAG ? "1" : optarg;
    if (set(&defs[c], v, o) != 0)
      return fail(err, errlen, "bad value '%s' for --%s (see --help)", v,
                  defs[c].name);
  }
  if (optind < argc)
    return fail(err, errlen, "unexpected argument '%s' (see --help)",
                argv[optind]);
  return 0;
}

static int check(opts_tool tool, const serve_opts *o, char *err,
                 size_t errlen) {
  if (!o->checkpoint_dir[0] == !o->servers[0])
    return fail(err, errlen, "give one of --checkpoint-dir DIR (a folder of "
                "checkpoints) or --servers HOST:PORT,... (live servers)");
  if (o->pick_version && !o->checkpoint_dir[0])
    return fail(err, errlen, "--checkpoint-version needs --checkpoint-dir");
  if (tool == OPTS_EXPORT && !o->output[0])
    return fail(err, errlen, "--output FILE.safetensors is required");
  if (tool == OPTS_SERVE && !o->input[0] != !o->output[0])
    return fail(err, errlen, "batch scoring needs both --input FILE and "
                "--output FILE");
  if (o->input_format[0] && strcmp(o->input_format, "idx") &&
      strcmp(o->input_format, "f32"))
    return fail(err, errlen, "--input-format must be idx or f32, not '%s'",
                o->input_format);
  if (o->output_format[0] && strcmp(o->output_format, "csv") &&
      strcmp(o->output_format, "jsonl"))
    return fail(err, errlen, "--output-format must be csv or jsonl, not '%s'",
                o->output_format);
  if (o->labels[0] && !o->input[0])
    return fail(err, errlen, "--labels goes with --input");
  return 0;
}

int serve_opts_parse(opts_tool tool, int argc, char **argv, serve_opts *o,
                     char *err, size_t errlen) {
  defaults(o);
  int rc = from_env(tool, o, err, errlen);
  if (rc == 0)
    rc = from_argv(tool, argc, argv, o, err, errlen);
  if (rc == 0)
    rc = check(tool, o, err, errlen);
  return rc;
}
