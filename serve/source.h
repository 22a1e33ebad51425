/* source.h: where fsps-serve and fsps-export get the model from — a folder
 * of checkpoint files written at any S, or live fsps-servers followed as
 * they train — published as snapshots into a serve_slot. */
#ifndef FSPS_SERVE_SOURCE_H
#define FSPS_SERVE_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

typedef struct {
  const char *checkpoint_dir; /* load from this folder, or: */
  bool pick_version;          /* the folder's version `version`, not newest */
  uint64_t version;
  const char *servers; /* host:port,... of the training servers */
  const char *token_file, *tls_ca, *tls_cert, *tls_key, *tls_server_name;
  int64_t timeout_ms; /* per call to the servers; 0 = 120000 */
  uint32_t poll_ms;   /* between looks for a newer version (1000) */
  bool follow;        /* live: keep publishing newer versions */
  bool background;    /* live: load the first snapshot on the thread too,
                         so open returns at once and the slot stays empty
                         (not ready) until it is there (online serving) */
  const char *tool;   /* names the program in stderr lines */
} serve_source_config;

typedef struct serve_source serve_source;

/* serve_source_open loads the model and publishes it into slot.
 * --checkpoint-dir: the newest version for which every server's file is
 * present and verifies (an older complete one if the newest is not, said on
 * stderr), its layers reassembled from the slices, the optimizer state
 * ignored; published before the call returns. --servers: the spec and every
 * layer at one common version, published before the call returns (retried
 * until cfg->timeout_ms while the servers are not up or have no model; with
 * cfg->background, by the thread instead, as long as it takes); with
 * cfg->follow a thread then polls every poll_ms and publishes each newer
 * complete version, and when the servers vanish keeps the last snapshot,
 * logs it and retries. Returns NULL with msg (naming the file or server and
 * what is wrong) when no model could be loaded. */
serve_source *serve_source_open(const serve_source_config *cfg,
                                serve_slot *slot, char *msg, size_t msglen);

/* serve_source_close stops following and frees src (the slot keeps its
 * snapshot). NULL is a no-op. */
void serve_source_close(serve_source *src);

/* serve_source_load_dir reads a snapshot from a checkpoint folder (what
 * serve_source_open does for --checkpoint-dir). NULL with msg and *rc. */
serve_snapshot *serve_source_load_dir(const serve_source_config *cfg,
                                      int *rc, char *msg, size_t msglen);

#endif
