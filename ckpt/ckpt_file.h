/* ckpt_file.h: the checkpoint file format — names, a crash-safe streaming
 * writer and a verifying streaming reader — shared by fsps-server
 * (checkpoint.c), the offline tool fsps-reslice and fsps-serve/fsps-export
 * (through ckpt_set.h).
 *
 * Layout (little-endian): "FSPSCKP1", u32 format, u32 S, u32 s, u32 W,
 * u64 spec hash, u64 version tag, u32 layers, u32 spec length, the spec as
 * the client encoded it (ModelSpec), then per layer u32 index, u64 slice
 * count, u64 version, u64 floats and the floats (the slice's parameters,
 * then each optimizer state vector of `count` floats in turn), and last a
 * CRC32C of everything before it. */
#ifndef FSPS_CKPT_FILE_H
#define FSPS_CKPT_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a file says about itself before its layers. */
typedef struct {
  uint32_t S, s, W, nlayers;
  uint64_t hash, tag;
  const void *spec; /* the ModelSpec bytes; speclen of them */
  uint32_t speclen;
} ckpt_header;

/* What precedes one layer's floats. */
typedef struct {
  uint32_t index;
  uint64_t count, version, floats;
} ckpt_layer_head;

/* ckpt_file_name writes "<dir>/ckpt-s<s>of<S>-v<tag, 20 digits>.fsps" into
 * out (truncated to outlen). Thread-safe. */
void ckpt_file_name(char *out, size_t outlen, const char *dir, uint32_t s,
                    uint32_t S, uint64_t tag);

/* ckpt_file_parse_name returns whether name (no folder) is a checkpoint's
 * name, and then sets *s, *S and *tag from it. Thread-safe. */
bool ckpt_file_parse_name(const char *name, uint32_t *s, uint32_t *S,
                          uint64_t *tag);

/* ---- writing ---- */

typedef struct ckpt_writer ckpt_writer;

/* ckpt_writer_open creates the file for h (named by ckpt_file_name from
 * dir, h->s, h->S and h->tag) under a temporary name, "<name>.tmp", and
 * writes h. The caller then writes h->nlayers layers and commits, or
 * destroys the writer to abandon the file. Returns NULL with msg when the
 * file cannot be created. h->spec is copied out at once. */
ckpt_writer *ckpt_writer_open(const char *dir, const ckpt_header *h, char *msg,
                              size_t msglen);

/* ckpt_writer_layer starts a layer; ckpt_writer_floats then appends its
 * lh->floats floats, in as many pieces as suits the caller. Failures are
 * remembered and reported by ckpt_writer_sync. */
void ckpt_writer_layer(ckpt_writer *w, const ckpt_layer_head *lh);
void ckpt_writer_floats(ckpt_writer *w, const float *data, size_t n);

/* ckpt_writer_sync appends the CRC32C, flushes, fsyncs and closes the file,
 * still under its temporary name. FSPS_OK, or FSPS_IO with msg naming the
 * file and the system's reason (the first failure seen since open), or
 * FSPS_INTERNAL when the floats written do not add up to the layers
 * announced. */
int ckpt_writer_sync(ckpt_writer *w, char *msg, size_t msglen);

/* ckpt_writer_publish renames a synced file to its final name and fsyncs
 * the folder, so the file is there whole or not at all. FSPS_OK or FSPS_IO
 * with msg. */
int ckpt_writer_publish(ckpt_writer *w, char *msg, size_t msglen);

/* ckpt_writer_commit is ckpt_writer_sync then ckpt_writer_publish. */
int ckpt_writer_commit(ckpt_writer *w, char *msg, size_t msglen);

/* ckpt_writer_path returns the file's final name (owned by w);
 * ckpt_writer_bytes the bytes written so far. */
const char *ckpt_writer_path(const ckpt_writer *w);
uint64_t ckpt_writer_bytes(const ckpt_writer *w);

/* ckpt_writer_destroy closes w and, unless it was published, removes its
 * temporary file. NULL is a no-op. */
void ckpt_writer_destroy(ckpt_writer *w);

/* ---- reading ---- */

typedef struct ckpt_reader ckpt_reader;

/* ckpt_reader_open checks the whole file at path — its length against what
 * its headers describe, then its CRC32C — and reads its header into *h
 * (h->spec stays owned by the reader). On failure returns NULL and sets
 * *why to a static phrase that follows the file's name in a message, e.g.
 * "is truncated" or "fails its CRC32C check (corrupt)". One pass over the
 * file, one MiB of buffer. */
ckpt_reader *ckpt_reader_open(const char *path, ckpt_header *h,
                              const char **why);

/* ckpt_reader_layer reads the next layer's head; ckpt_reader_floats then
 * reads n of its floats into out (call it until lh->floats are read).
 * NULL on success, else why not (a phrase as above). */
const char *ckpt_reader_layer(ckpt_reader *r, ckpt_layer_head *lh);
const char *ckpt_reader_floats(ckpt_reader *r, float *out, size_t n);

/* ckpt_reader_skip reads n floats of the current layer and drops them (a
 * reader that wants the parameters but not the optimizer state); NULL or
 * why not. */
const char *ckpt_reader_skip(ckpt_reader *r, uint64_t n);

/* ckpt_reader_end, after the last layer, checks that what was read is what
 * was verified at open (the file did not change in between): NULL when it
 * is, else why not. */
const char *ckpt_reader_end(ckpt_reader *r);

/* ckpt_reader_close closes r. NULL is a no-op. */
void ckpt_reader_close(ckpt_reader *r);

#endif
