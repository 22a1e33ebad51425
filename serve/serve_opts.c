/* serve_opts.c: fsps-serve's and fsps-export's flags: the table (each
 * flag's type, range, the tools that take it and its FSPS_* variable, read
 * first so the command line overrides it), defaults, help texts and the
 * checks across flags; opts/ parses them. */
#include <stdio.h>
#include <string.h>

#include "fsps_opts.h"
#include "serve_opts.h"

#ifndef FSPS_VERSION
#define FSPS_VERSION "0.0.0"
#endif

#define F(field) OPTS_FIELD(serve_opts, field)
#define BOTH (OPTS_SERVE | OPTS_EXPORT)
#define SERVE OPTS_SERVE

/* Each row: name, variable, help, type, field, range, tools, given-mark
 * (0: none). */
static const opts_def defs[] = {
    {"checkpoint-dir", "FSPS_CHECKPOINT_DIR",
     "load the model from this folder of checkpoint files (any S)", OPTS_STR,
     F(checkpoint_dir), 0, 0, BOTH, 0},
    {"checkpoint-version", "FSPS_CHECKPOINT_VERSION",
     "load that version of the folder, not the newest complete one", OPTS_U64,
     F(checkpoint_version), 0, 1.8e19, BOTH,
     OPTS_GIVEN(serve_opts, pick_version)},
    {"servers", "FSPS_SERVERS",
     "or load it from the training servers, host:port,... in index order",
     OPTS_STR, F(servers), 0, 0, BOTH, 0},
    {"poll-ms", "FSPS_POLL_MS",
     "with --servers: ms between looks for a newer version (1000)", OPTS_U32,
     F(poll_ms), 1, 3.6e6, SERVE, 0},
    {"timeout-ms", "FSPS_TIMEOUT_MS",
     "deadline of each call to the servers, and of the wait for the first "
     "model (120000)",
     OPTS_U64, F(timeout_ms), 1, 1e9, BOTH, 0},
    {"token-file", "FSPS_TOKEN_FILE",
     "file holding the bearer token for servers with --auth-tokens (else "
     "FSPS_TOKEN; none: no token)",
     OPTS_STR, F(token_file), 0, 0, BOTH, 0},
    {"tls-ca", "FSPS_TLS_CA",
     "TLS to the training servers: PEM file of the CAs that sign them",
     OPTS_STR, F(tls_ca), 0, 0, BOTH, 0},
    {"tls-cert", "FSPS_TLS_CERT", "mutual TLS: this client's certificate",
     OPTS_STR, F(tls_cert), 0, 0, BOTH, 0},
    {"tls-key", "FSPS_TLS_KEY", "its PEM private key", OPTS_STR, F(tls_key), 0,
     0, BOTH, 0},
    {"tls-server-name", "FSPS_TLS_SERVER_NAME",
     "the name the servers' certificates carry (default: the host)", OPTS_STR,
     F(tls_server_name), 0, 0, BOTH, 0},
    {"input", "FSPS_SERVE_INPUT",
     "batch: score this file (IDX ubyte images, .gz too, or raw float32 "
     "rows)",
     OPTS_STR, F(input), 0, 0, SERVE, 0},
    {"output", "FSPS_SERVE_OUTPUT",
     "fsps-serve: the predictions file; fsps-export: the .safetensors file",
     OPTS_STR, F(output), 0, 0, BOTH, 0},
    {"input-format", "FSPS_SERVE_INPUT_FORMAT",
     "idx or f32 (default: .f32 is f32, IDX magic is idx, else f32)", OPTS_STR,
     F(input_format), 0, 0, SERVE, 0},
    {"output-format", "FSPS_SERVE_OUTPUT_FORMAT",
     "csv or jsonl (default: .jsonl/.json is jsonl, else csv)", OPTS_STR,
     F(output_format), 0, 0, SERVE, 0},
    {"labels", "FSPS_SERVE_LABELS",
     "IDX labels of --input: print the accuracy at the end", OPTS_STR,
     F(labels), 0, 0, SERVE, 0},
    {"normalize", "FSPS_NORMALIZE",
     "scale IDX inputs as fsps-worker --normalize did", OPTS_FLAG, F(normalize),
     0, 0, SERVE, 0},
    {"progress-secs", "FSPS_PROGRESS_SECS",
     "seconds between progress lines on stderr (1; 0 = none)", OPTS_DBL,
     F(progress_secs), 0, 1e6, SERVE, 0},
    {"max-batch", "FSPS_SERVE_MAX_BATCH",
     "rows per batch: batch chunks, online dynamic batches (64)", OPTS_U32,
     F(online.max_batch), 1, 1 << 20, SERVE, 0},
    {"max-delay-us", "FSPS_SERVE_MAX_DELAY_US",
     "online: how long a batch waits for more requests (500)", OPTS_U32,
     F(online.max_delay_us), 0, 1e7, SERVE, 0},
    {"threads", "FSPS_SERVE_THREADS", "online: compute threads (1)", OPTS_U32,
     F(online.threads), 1, 1024, SERVE, 0},
    {"listen", "FSPS_SERVE_LISTEN",
     "online: host:port to serve on (0.0.0.0:8001; port 0 = any)", OPTS_STR,
     F(online.listen), 0, 0, SERVE, 0},
    {"model-name", "FSPS_SERVE_MODEL_NAME",
     "online: the model's name in the protocol (fsps-mlp)", OPTS_STR,
     F(online.model_name), 0, 0, SERVE, 0},
    {"port-file", "FSPS_SERVE_PORT_FILE",
     "online: write the bound port here once serving", OPTS_STR,
     F(online.port_file), 0, 0, SERVE, 0},
    {"metrics-listen", "FSPS_METRICS_LISTEN",
     "serve Prometheus metrics at http://ADDR/metrics (host:port; port 0 "
     "picks a free one; off)",
     OPTS_STR, F(metrics_listen), 0, 0, SERVE, 0},
    {"metrics-port-file", "FSPS_METRICS_PORT_FILE",
     "write the metrics port here once listening", OPTS_STR,
     F(metrics_port_file), 0, 0, SERVE, 0},
    {"serve-tls-cert", "FSPS_SERVE_TLS_CERT",
     "online: TLS on the serving port, PEM certificate chain", OPTS_STR,
     F(online.tls_cert), 0, 0, SERVE, 0},
    {"serve-tls-key", "FSPS_SERVE_TLS_KEY", "online: its PEM private key",
     OPTS_STR, F(online.tls_key), 0, 0, SERVE, 0},
    {"serve-tls-client-ca", "FSPS_SERVE_TLS_CLIENT_CA",
     "online: require client certificates signed by these CAs", OPTS_STR,
     F(online.tls_client_ca), 0, 0, SERVE, 0},
};

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

static const char serve_usage[] =
    "Usage: fsps-serve (--checkpoint-dir DIR | --servers HOST:PORT,...)\n"
    "                  [--input FILE --output FILE] [options]\n\n"
    "Serves an MLP trained by fsps-worker, loaded from a folder of\n"
    "checkpoints (written at any S) or from the live training servers\n"
    "(following newer versions). With --input it scores the file in\n"
    "batch and exits; without, it serves online.\n\n";

static const char export_usage[] =
    "Usage: fsps-export (--checkpoint-dir DIR | --servers HOST:PORT,...)\n"
    "                   --output FILE.safetensors [options]\n\n"
    "Writes an MLP trained by fsps-worker as safetensors, with the\n"
    "names and shapes of PyTorch's nn.Sequential(Linear, ReLU, ...,\n"
    "Linear): 0.weight, 0.bias, 2.weight, ...\n\n";

static int check(opts_tool tool, const serve_opts *o, char *err,
                 size_t errlen) {
  if (!o->checkpoint_dir[0] == !o->servers[0])
    return opts_fail(err, errlen,
                     "give one of --checkpoint-dir DIR (a folder of "
                     "checkpoints) or --servers HOST:PORT,... (live servers)");
  if (o->pick_version && !o->checkpoint_dir[0])
    return opts_fail(err, errlen,
                     "--checkpoint-version needs --checkpoint-dir");
  if (tool == OPTS_EXPORT && !o->output[0])
    return opts_fail(err, errlen, "--output FILE.safetensors is required");
  if (tool == OPTS_SERVE && !o->input[0] != !o->output[0])
    return opts_fail(err, errlen,
                     "batch scoring needs both --input FILE and "
                     "--output FILE");
  if (o->input_format[0] && strcmp(o->input_format, "idx") &&
      strcmp(o->input_format, "f32"))
    return opts_fail(err, errlen, "--input-format must be idx or f32, not '%s'",
                     o->input_format);
  if (o->output_format[0] && strcmp(o->output_format, "csv") &&
      strcmp(o->output_format, "jsonl"))
    return opts_fail(err, errlen,
                     "--output-format must be csv or jsonl, not '%s'",
                     o->output_format);
  if (o->labels[0] && !o->input[0])
    return opts_fail(err, errlen, "--labels goes with --input");
  return 0;
}

int serve_opts_parse(opts_tool tool, int argc, char **argv, serve_opts *o,
                     char *err, size_t errlen) {
  const char *name = tool == OPTS_SERVE ? "fsps-serve" : "fsps-export";
  char version[64];
  snprintf(version, sizeof version, "%s %s", name, FSPS_VERSION);
  const opts_spec spec = {
      .defs = defs,
      .ndefs = sizeof defs / sizeof defs[0],
      .tool = tool,
      .usage = tool == OPTS_SERVE ? serve_usage : export_usage,
      .footer = "Exit status: 0 done, 1 failed (message on stderr; no output "
                "file is left), 2 bad usage.\n",
      .version = version,
      .refuse_token = true};
  defaults(o);
  int rc = opts_parse(&spec, argc, argv, o, err, errlen);
  return rc == 0 ? check(tool, o, err, errlen) : rc;
}
