/* serve_opts.h: fsps-serve's and fsps-export's flags, each with an FSPS_*
 * environment variable read first (the command line overrides it). */
#ifndef FSPS_SERVE_OPTS_H
#define FSPS_SERVE_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OPTS_PATH 4096

typedef enum { OPTS_SERVE = 1, OPTS_EXPORT = 2 } opts_tool;

typedef struct {
  /* where the model comes from */
  char checkpoint_dir[OPTS_PATH];
  bool pick_version;
  uint64_t checkpoint_version;
  char servers[OPTS_PATH];
  char token_file[OPTS_PATH], tls_ca[OPTS_PATH], tls_cert[OPTS_PATH],
      tls_key[OPTS_PATH], tls_server_name[256];
  uint64_t timeout_ms;
  uint32_t poll_ms;
  /* batch (fsps-serve --input) and fsps-export's --output */
  char input[OPTS_PATH], output[OPTS_PATH], labels[OPTS_PATH];
  char input_format[16], output_format[16];
  bool normalize;
  double progress_secs;
  /* fsps-serve's Prometheus metrics (off when empty) */
  char metrics_listen[256], metrics_port_file[OPTS_PATH];
  /* online (fsps-serve without --input): the fields of serve/online.h's
   * serve_online_config, by the same names, which main.c copies across */
  struct {
    char listen[256];
    char model_name[128];
    uint32_t max_batch;
    uint32_t max_delay_us;
    uint32_t threads;
    char port_file[OPTS_PATH];
    char tls_cert[OPTS_PATH], tls_key[OPTS_PATH], tls_client_ca[OPTS_PATH];
  } online;
} serve_opts;

/* serve_opts_parse fills o from defaults, the environment and argv for
 * `tool`. Returns 0 to go on, 1 when --help or --version was printed (exit
 * 0), or -1 with err (exit 2). */
int serve_opts_parse(opts_tool tool, int argc, char **argv, serve_opts *o,
                     char *err, size_t errlen);

#endif
