/* reslice.c: re-slices a set of checkpoints written by S servers into
 * checkpoints for S' servers (see reslice.h): ckpt/'s ckpt_set chooses,
 * verifies and reads the input set layer by layer, and ckpt_file's writer
 * writes the S' files. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_file.h"
#include "ckpt_set.h"
#include "reslice.h"
#include "spec_optim.h"
#include "wire.h"

#define PATHLEN 4300

static int fail(char *msg, size_t msglen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *msg, size_t msglen, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, msglen, fmt, ap);
  va_end(ap);
  return rc;
}

/* ---- the input set, through ckpt/ ---- */

typedef struct {
  ckpt_set *set;
  shard_spec *spec;
  uint32_t per; /* floats per element: the parameter and its optimizer state */
} in_set;

static uint64_t layer_n(const in_set *in, uint32_t l) {
  return shard_spec_layer(in->spec, l)->n;
}

static void in_set_close(in_set *in) {
  ckpt_set_close(in->set);
  shard_spec_destroy(in->spec);
  in->set = NULL;
  in->spec = NULL;
}

/* load_spec decodes the model the files share (from file 0): the set's
 * accept callback, so a set whose spec is unreadable is refused like a
 * corrupt one. */
static int load_spec(void *arg, const ckpt_set *set, char *msg,
                     size_t msglen) {
  in_set *in = arg;
  const ckpt_header *h = ckpt_set_header(set, 0);
  char p[PATHLEN], err[512] = "";
  ckpt_set_path(set, 0, p, sizeof p);
  shard_spec_destroy(in->spec);
  in->spec = wire_spec_unpack(h->spec, h->speclen, err, sizeof err);
  if (in->spec == NULL)
    return fail(msg, msglen, FSPS_CORRUPT,
                "%s holds an unreadable model spec: %s", p, err);
  if (shard_spec_validate(in->spec, err, sizeof err) != FSPS_OK)
    return fail(msg, msglen, FSPS_CORRUPT, "%s holds an invalid model spec: %s",
                p, err);
  if (shard_spec_hash(in->spec) != h->hash)
    return fail(msg, msglen, FSPS_CORRUPT,
                "%s holds a model spec that does not match its hash", p);
  if (shard_spec_num_layers(in->spec) != h->nlayers)
    return fail(msg, msglen, FSPS_CORRUPT,
                "%s has %" PRIu32 " layers but its model %" PRIu32, p,
                h->nlayers, shard_spec_num_layers(in->spec));
  in->per = 1 + (uint32_t)server_spec_optim_state_per_elem(
                    shard_spec_optim(in->spec));
  return FSPS_OK;
}

static int choose_set(const reslice_opts *o, in_set *in, char *msg,
                      size_t msglen) {
  ckpt_set_opts so = {.dir = o->from,
                      .pick_version = o->pick_version,
                      .version = o->version,
                      .extra_files = o->num_servers,
                      .tool = "fsps-reslice",
                      .accept = load_spec,
                      .arg = in};
  return ckpt_set_open(&so, &in->set, msg, msglen);
}

/* ---- the output folder ---- */

static int clash(const reslice_opts *o, const ckpt_entry *e, uint64_t tag, char *msg,
                 size_t msglen) {
  char p[PATHLEN];
  ckpt_file_name(p, sizeof p, o->to, e->s, e->S, e->tag);
  if (e->S != o->num_servers)
    return fail(msg, msglen, FSPS_ALREADY_EXISTS,
                "%s already exists, a checkpoint for %" PRIu32
                " servers, not %" PRIu32 ": re-slice into an empty folder",
                p, e->S, o->num_servers);
  if (e->tag >= tag)
    return fail(msg, msglen, FSPS_ALREADY_EXISTS,
                "%s already exists, at version %" PRIu64
                ", not older than the version %" PRIu64
                " to write: re-slice into an empty folder",
                p, e->tag, tag);
  return FSPS_OK;
}

/* check_to refuses an output folder that is the input folder or holds
 * checkpoints for another S' or as new as `tag` (the servers would restore
 * those, or they would be overwritten). */
static int check_to(const reslice_opts *o, uint64_t tag, char *msg,
                    size_t msglen) {
  struct stat a, b;
  if (stat(o->to, &b) == 0 && !S_ISDIR(b.st_mode))
    return fail(msg, msglen, FSPS_INVALID_ARGUMENT, "--to %s is not a folder",
                o->to);
  if (stat(o->from, &a) == 0 && stat(o->to, &b) == 0 && a.st_dev == b.st_dev &&
      a.st_ino == b.st_ino)
    return fail(msg, msglen, FSPS_INVALID_ARGUMENT,
                "--to %s is the --from folder: write the re-sliced files into "
                "another folder",
                o->to);
  ckpt_entry *e = NULL;
  size_t n = 0;
  int rc = ckpt_dir_list(o->to, true, &e, &n, msg, msglen);
  for (size_t i = 0; rc == FSPS_OK && i < n; i++)
    rc = clash(o, &e[i], tag, msg, msglen);
  free(e);
  return rc;
}

static int make_dir(const char *dir, bool *created, char *msg, size_t msglen) {
  *created = mkdir(dir, 0755) == 0;
  if (!*created && errno != EEXIST)
    return fail(msg, msglen, FSPS_IO, "cannot create --to %s: %s", dir,
                strerror(errno));
  return FSPS_OK;
}

/* ---- the output set: one writer per server s' of S' ---- */

typedef struct {
  uint32_t S;
  ckpt_writer **w;
} out_set;

static int out_open(out_set *out, const in_set *in, const char *dir, char *msg,
                    size_t msglen) {
  if ((out->w = calloc(out->S, sizeof *out->w)) == NULL)
    return fail(msg, msglen, FSPS_NOMEM, "out of memory");
  ckpt_header h = *ckpt_set_header(in->set, 0);
  h.S = out->S;
  for (h.s = 0; h.s < out->S; h.s++)
    if ((out->w[h.s] = ckpt_writer_open(dir, &h, msg, msglen)) == NULL)
      return FSPS_IO;
  return FSPS_OK;
}

/* out_publish renames every synced file into place; if one fails, those
 * already renamed are removed again. */
static int out_publish(out_set *out, char *msg, size_t msglen) {
  for (uint32_t s = 0; s < out->S; s++) {
    if (ckpt_writer_publish(out->w[s], msg, msglen) == FSPS_OK)
      continue;
    for (uint32_t t = 0; t <= s; t++)
      unlink(ckpt_writer_path(out->w[t]));
    return FSPS_IO;
  }
  return FSPS_OK;
}

static int out_commit(out_set *out, uint64_t *bytes, char *msg, size_t msglen) {
  *bytes = 0;
  for (uint32_t s = 0; s < out->S; s++) {
    int rc = ckpt_writer_sync(out->w[s], msg, msglen);
    if (rc != FSPS_OK)
      return rc;
    *bytes += ckpt_writer_bytes(out->w[s]);
  }
  return out_publish(out, msg, msglen);
}

static void out_close(out_set *out) {
  for (uint32_t s = 0; out->w != NULL && s < out->S; s++)
    ckpt_writer_destroy(out->w[s]);
  free(out->w);
}

/* ---- one layer ---- */

static void write_layer(const in_set *in, out_set *out, uint32_t l,
                        const float *buf, uint64_t version) {
  uint64_t n = layer_n(in, l);
  for (uint32_t s = 0; s < out->S; s++) {
    uint64_t off, cnt;
    shard_slice(n, out->S, s, &off, &cnt);
    ckpt_writer_layer(out->w[s],
                      &(ckpt_layer_head){l, cnt, version, in->per * cnt});
    for (size_t j = 0; cnt && j < in->per; j++)
      ckpt_writer_floats(out->w[s], buf + j * n + off, cnt);
  }
}

/* alloc_layer holds the largest layer's parameters and state, whole. */
static int alloc_layer(const in_set *in, float **buf, char *msg,
                       size_t msglen) {
  uint32_t big = 0;
  for (uint32_t l = 1; l < ckpt_set_header(in->set, 0)->nlayers; l++)
    big = layer_n(in, l) > layer_n(in, big) ? l : big;
  double bytes = (double)layer_n(in, big) * (double)in->per * sizeof(float);
  if ((*buf = malloc((size_t)bytes)) == NULL)
    return fail(msg, msglen, FSPS_NOMEM,
                "layer %" PRIu32 " ('%s') needs %.2f GiB for its parameters "
                "and optimizer state, more than can be allocated here",
                big, shard_spec_layer(in->spec, big)->name, bytes / (1 << 30));
  return FSPS_OK;
}

/* idle_servers counts the servers of S that would hold no element. */
static uint32_t idle_servers(const in_set *in, uint32_t S) {
  uint64_t busy = 0;
  for (uint32_t l = 0; l < ckpt_set_header(in->set, 0)->nlayers; l++) {
    uint64_t n = layer_n(in, l), c = shard_stride(n, S);
    uint64_t slices = (n + c - 1) / c;
    busy = slices > busy ? slices : busy;
  }
  return busy >= S ? 0 : S - (uint32_t)busy;
}

/* convert streams the open input set into S' files in o->to. */
static int convert(in_set *in, const reslice_opts *o, reslice_result *res,
                   char *msg, size_t msglen) {
  float *buf = NULL;
  bool created = false;
  out_set out = {.S = o->num_servers};
  int rc = alloc_layer(in, &buf, msg, msglen);
  if (rc == FSPS_OK)
    rc = make_dir(o->to, &created, msg, msglen);
  if (rc == FSPS_OK)
    rc = out_open(&out, in, o->to, msg, msglen);
  for (uint32_t l = 0; rc == FSPS_OK && l < ckpt_set_header(in->set, 0)->nlayers; l++) {
    uint64_t version;
    ckpt_layer_req q = {l, shard_spec_layer(in->spec, l)->name,
                        layer_n(in, l), in->per, in->per};
    if ((rc = ckpt_set_read_layer(in->set, &q, buf, &version, msg, msglen)) ==
        FSPS_OK)
      write_layer(in, &out, l, buf, version);
  }
  if (rc == FSPS_OK)
    rc = ckpt_set_end(in->set, msg, msglen);
  if (rc == FSPS_OK)
    rc = out_commit(&out, &res->bytes, msg, msglen);
  out_close(&out);
  free(buf);
  if (rc != FSPS_OK && created)
    rmdir(o->to);
  return rc;
}

int reslice_run(const reslice_opts *o, reslice_result *res, char *msg,
                size_t msglen) {
  in_set in = {0};
  if (o->num_servers == 0 || o->num_servers > RESLICE_MAX_SERVERS)
    return fail(msg, msglen, FSPS_INVALID_ARGUMENT,
                "--num-servers must be 1..%d, not %" PRIu32,
                RESLICE_MAX_SERVERS, o->num_servers);
  int rc = choose_set(o, &in, msg, msglen);
  if (rc == FSPS_OK)
    rc = check_to(o, ckpt_set_version(in.set), msg, msglen);
  if (rc == FSPS_OK)
    rc = convert(&in, o, res, msg, msglen);
  if (rc == FSPS_OK) {
    res->version = ckpt_set_version(in.set);
    res->from_servers = ckpt_set_servers(in.set);
    res->idle = idle_servers(&in, o->num_servers);
  }
  in_set_close(&in);
  return rc;
}
