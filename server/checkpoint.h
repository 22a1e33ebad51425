/* checkpoint.h: one checkpoint file per server — every layer's slice,
 * optimizer state and version, the declared spec, S and s, and a CRC32C —
 * written crash-safely, pruned to the newest K, and restored at start. */
#ifndef FSPS_SERVER_CHECKPOINT_H
#define FSPS_SERVER_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "store.h"

typedef struct ckpt ckpt;

/* ckpt_create prepares checkpoints into cfg->checkpoint_dir (NULL, with
 * msg, if the folder cannot be created). With cfg->checkpoint_every it
 * starts a writer thread fed by the store's step-boundary copies. */
ckpt *ckpt_create(store *st, const server_config *cfg, char *msg,
                  size_t msglen);

/* ckpt_destroy stops the checkpoint thread (finishing a file in progress
 * and the tasks queued). */
void ckpt_destroy(ckpt *k);

/* ckpt_restore loads the newest valid checkpoint of this server into the
 * empty store. Files that are corrupt, truncated or for another S or s are
 * refused with a warning naming the file and the reason, and older ones
 * are tried. Returns FSPS_OK (msg says which file), FSPS_NOT_FOUND when
 * there is none to load, or another error with msg. */
int ckpt_restore(ckpt *k, char *msg, size_t msglen);

/* ckpt_write_now writes a checkpoint of the store as it is (each layer at
 * its current version). Returns FSPS_OK with the file's path, size and
 * lowest layer version, or an error with msg; a failed write leaves the
 * previous checkpoints intact. FSPS_FAILED_PRECONDITION while a layer
 * awaits values from a client: a file never holds a layer without them.
 * Thread-safe. */
int ckpt_write_now(ckpt *k, char *path, size_t pathlen, uint64_t *bytes,
                   uint64_t *min_version, char *msg, size_t msglen);

/* ckpt_rollback brings every layer past `version` back to it from this
 * server's checkpoint file of that version, while serving (layers at
 * `version` keep their pending pushes), and removes this server's files
 * past it, which describe the abandoned timeline. Returns FSPS_OK with
 * *restored layers and src the file; FSPS_NOT_FOUND (nothing changed) when
 * there is no sound file of that version holding every layer at it;
 * FSPS_DATA_LOSS if it failed after some layers were restored. msg says
 * why. */
int ckpt_rollback(ckpt *k, uint64_t version, uint32_t *restored, char *src,
                  size_t srclen, char *msg, size_t msglen);

/* A call's file work, run on the checkpoint thread. */
typedef void (*ckpt_task_fn)(void *arg);

/* ckpt_run_later queues fn(arg) for the checkpoint thread, after what is
 * queued already, so that a call thread never waits for the disk: fn
 * answers the call itself. FSPS_OK; FSPS_UNAVAILABLE once ckpt_drain has
 * begun, or FSPS_NOMEM: fn will not run. Thread-safe. */
int ckpt_run_later(ckpt *k, ckpt_task_fn fn, void *arg);

/* ckpt_drain refuses new tasks and waits until the queued ones have run:
 * before the call threads stop, so that every call they took is answered. */
void ckpt_drain(ckpt *k);

/* Checkpoint files a server lists at most (StatusReply.checkpoint_versions). */
#define CKPT_LIST_MAX 64

/* ckpt_versions copies the versions of this server's checkpoint files,
 * newest first (at most max), as known after the last write, restore or
 * rollback: no disk access, so a call thread may ask. Returns how many. */
uint32_t ckpt_versions(ckpt *k, uint64_t *out, uint32_t max);

#endif
