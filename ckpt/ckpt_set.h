/* ckpt_set.h: a folder's checkpoint files read as one set — the newest
 * version (or a chosen one) for which every server s = 0..S-1 wrote a file
 * that verifies — and each layer reassembled from its S slices, whatever S
 * was. Used by fsps-reslice and by fsps-serve / fsps-export. Files only: no
 * threads, no network. */
#ifndef FSPS_CKPT_SET_H
#define FSPS_CKPT_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckpt_file.h"

typedef struct ckpt_set ckpt_set;

/* One checkpoint file as its name describes it. */
typedef struct {
  uint32_t s, S;
  uint64_t tag;
} ckpt_entry;

/* ckpt_dir_list lists the checkpoint files named in dir, newest version
 * first (then by S, then s), into *out (free() it; NULL when none) and *n.
 * A folder that does not exist lists as empty when missing_ok. FSPS_OK, or
 * FSPS_IO / FSPS_NOMEM with msg. */
int ckpt_dir_list(const char *dir, bool missing_ok, ckpt_entry **out,
                  size_t *n, char *msg, size_t msglen);

typedef struct {
  const char *dir;   /* the folder the servers checkpointed into */
  bool pick_version; /* open `version` only, not the newest sound set */
  uint64_t version;
  uint32_t extra_files; /* files the caller will hold open besides */
  const char *tool;     /* names the program in stderr lines */
  /* accept, if not NULL, is asked about a set whose files are open and
   * agree (same S, version, spec hash, workers): FSPS_OK takes it, another
   * code refuses it with msg (e.g. a spec the caller cannot use), and an
   * older set is tried. */
  int (*accept)(void *arg, const ckpt_set *set, char *msg, size_t msglen);
  void *arg;
} ckpt_set_opts;

/* ckpt_set_open opens, in o->dir, the newest set of checkpoint files (one
 * per server s of S, ckpt-s<s>of<S>-v<version>.fsps) that are all present,
 * pass their length and CRC32C checks, agree with each other and are
 * accepted; newer sets that were refused are named on stderr, one line
 * each, after "<tool>: newer checkpoints refused:". Returns FSPS_OK with
 * *out, or an error with msg naming the file and what is wrong with it
 * (every refused set when more than one was tried). */
int ckpt_set_open(const ckpt_set_opts *o, ckpt_set **out, char *msg,
                  size_t msglen);

/* The set's S, version tag, the header of server s's file (its spec bytes
 * owned by the set) and that file's path. */
uint32_t ckpt_set_servers(const ckpt_set *set);
uint64_t ckpt_set_version(const ckpt_set *set);
const ckpt_header *ckpt_set_header(const ckpt_set *set, uint32_t s);
void ckpt_set_path(const ckpt_set *set, uint32_t s, char *out, size_t outlen);

/* ckpt_set_read_layer reads layer q->l (named q->name in messages; q->n
 * elements) from all S files; layers are read in order 0, 1, ... Each file
 * holds q->per floats per element of its slice: the parameters, then each
 * optimizer state vector (per 0: whatever the files hold, the same in all
 * of them). Vector j < q->keep goes whole to buf + j*n; the rest is read and
 * dropped. Every non-empty slice must be at one version, which *version
 * gets. FSPS_OK, or an error with msg naming the file and the layer. */
typedef struct {
  uint32_t l;
  const char *name;
  uint64_t n;
  uint32_t per, keep;
} ckpt_layer_req;

int ckpt_set_read_layer(ckpt_set *set, const ckpt_layer_req *q, float *buf,
                        uint64_t *version, char *msg, size_t msglen);

/* ckpt_set_end, after the last layer, checks that each file read is the
 * file verified at open. FSPS_OK or FSPS_CORRUPT with msg. */
int ckpt_set_end(ckpt_set *set, char *msg, size_t msglen);

/* ckpt_set_close closes the files. NULL is a no-op. */
void ckpt_set_close(ckpt_set *set);

#endif
