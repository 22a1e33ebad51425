/* reslice.h: re-slices a set of checkpoints written by S servers into
 * checkpoints for S' servers — the work behind the fsps-reslice tool. */
#ifndef FSPS_SERVER_RESLICE_H
#define FSPS_SERVER_RESLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shard/shard.h"

#define RESLICE_MAX_SERVERS SHARD_MAX_SERVERS /* the most fsps-server accepts */

typedef struct {
  const char *from, *to; /* folders */
  uint32_t num_servers;  /* S', 1..RESLICE_MAX_SERVERS */
  bool pick_version;     /* use `version`, not the newest complete set */
  uint64_t version;
} reslice_opts;

typedef struct {
  uint64_t version; /* the set's version */
  uint32_t from_servers;
  uint64_t bytes; /* written, over all S' files */
  uint32_t idle;  /* servers of S' that hold no element of any layer */
} reslice_result;

/* reslice_run picks in o->from the newest version (or o->version) that has
 * a complete set of S checkpoint files, one per server s = 0..S-1, that
 * all pass their length and CRC32C checks and agree on S, version, spec
 * hash and workers; it then writes, for that version, one file per server
 * of S' into o->to (created if missing): each layer's parameters and each
 * optimizer state vector are joined in slice order and cut again with S'
 * slices, and each layer keeps its version (its optimizer step count).
 * Newer sets that are refused are named on stderr. The files are written
 * with the server's crash-safe writer and only renamed into place once all
 * S' are complete, so on any failure o->to holds nothing new. Memory: one
 * layer's parameters and optimizer state whole, for the largest layer.
 * Returns FSPS_OK with *res, or an error with msg naming the file and the
 * reason. Not thread-safe (one run per process). */
int reslice_run(const reslice_opts *o, reslice_result *res, char *msg,
                size_t msglen);

#endif
