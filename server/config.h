/* config.h: fsps-server's command line and its FSPS_* environment
 * equivalents. */
#ifndef FSPS_SERVER_CONFIG_H
#define FSPS_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { MODE_BSP, MODE_SSP, MODE_ASP } server_mode;

typedef struct {
  char listen[256];
  uint32_t index, num_servers, workers;
  int threads;
  server_mode mode;
  uint32_t staleness;
  bool deterministic;
  bool nan_skip;
  int log_level;
  int log_format; /* logfmt_format: text or json */
  int64_t grace_ms;
  char port_file[1024];
  char checkpoint_dir[1024];
  uint64_t checkpoint_every;
  uint32_t keep;
  uint32_t worker_timeout_s; /* 0: a step waits for every worker forever */
  bool timeout_proceed;      /* else the waiting calls fail */
  double reply_drops;        /* testing: lose this share of push replies */
  uint32_t ckpt_delay_ms;    /* testing: each checkpoint file takes longer */
  char metrics_listen[256];  /* "" : no /metrics endpoint */
  char metrics_port_file[1024];
  char auth_tokens[1024]; /* "": calls need no token */
  /* TLS: all "" for plaintext */
  char tls_cert[1024], tls_key[1024];
  char tls_client_ca[1024]; /* "": no client certificates (no mutual TLS) */
  char health_listen[256];  /* "": no plaintext health-only port */
  char health_port_file[1024];
} server_config;

/* server_config_parse fills c from the environment (FSPS_LISTEN, ...) and then
 * argv, which wins. Returns 0 to run, 1 when --help or --version was
 * printed (exit 0), -1 with err filled on a bad flag or value (exit 2). */
int server_config_parse(int argc, char **argv, server_config *c, char *err,
                        size_t errlen);

/* server_config_mode_name returns "bsp", "ssp" or "asp". */
const char *server_config_mode_name(server_mode m);

#endif
