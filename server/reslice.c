/* reslice.c: re-slices a set of checkpoints written by S servers into
 * checkpoints for S' servers (see reslice.h): choose and verify the input
 * set, then stream it layer by layer through ckpt_file.c's reader and
 * writer. */
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

/* ---- listing a folder's checkpoint files ---- */

typedef struct {
  uint32_t s, S;
  uint64_t tag;
} entry;

typedef struct {
  entry *e;
  size_t n, cap;
} listing;

static int add_entry(listing *ls, entry e) {
  if (ls->n == ls->cap) {
    size_t cap = ls->cap ? 2 * ls->cap : 64;
    entry *grown = realloc(ls->e, cap * sizeof *grown);
    if (grown == NULL)
      return FSPS_NOMEM;
    ls->e = grown;
    ls->cap = cap;
  }
  ls->e[ls->n++] = e;
  return FSPS_OK;
}

/* list_dir collects the checkpoint files named in dir; a folder that does
 * not exist lists as empty when missing_ok. */
static int list_dir(const char *dir, bool missing_ok, listing *ls, char *msg,
                    size_t msglen) {
  DIR *d = opendir(dir);
  if (d == NULL && errno == ENOENT && missing_ok)
    return FSPS_OK;
  if (d == NULL)
    return fail(msg, msglen, FSPS_IO, "cannot read the folder %s: %s", dir,
                strerror(errno));
  int rc = FSPS_OK;
  struct dirent *de;
  entry e;
  while (rc == FSPS_OK && (de = readdir(d)) != NULL)
    if (ckpt_file_parse_name(de->d_name, &e.s, &e.S, &e.tag))
      rc = add_entry(ls, e);
  closedir(d);
  if (rc != FSPS_OK)
    return fail(msg, msglen, rc, "out of memory listing %s", dir);
  return FSPS_OK;
}

/* by_newest orders by version (newest first), then S, then s. */
static int by_newest(const void *a, const void *b) {
  const entry *x = a, *y = b;
  if (x->tag != y->tag)
    return x->tag < y->tag ? 1 : -1;
  if (x->S != y->S)
    return x->S < y->S ? -1 : 1;
  return x->s < y->s ? -1 : x->s > y->s;
}

static bool has_entry(const listing *ls, uint32_t s, uint32_t S, uint64_t tag) {
  for (size_t i = 0; i < ls->n; i++)
    if (ls->e[i].s == s && ls->e[i].S == S && ls->e[i].tag == tag)
      return true;
  return false;
}

/* newest_other finds the newest version other than tag that server s of S
 * has a file for. */
static bool newest_other(const listing *ls, uint32_t s, uint32_t S,
                         uint64_t tag, uint64_t *other) {
  bool any = false;
  for (size_t i = 0; i < ls->n; i++) {
    const entry *e = &ls->e[i];
    if (e->s == s && e->S == S && e->tag != tag && (!any || e->tag > *other)) {
      *other = e->tag;
      any = true;
    }
  }
  return any;
}

/* ---- the input set: one verified file per server s of S ---- */

typedef struct {
  const char *dir;
  uint32_t S, out_S;
  uint64_t tag;
  ckpt_reader **r;
  ckpt_header *h;
  shard_spec *spec;
  size_t per; /* floats per element: the parameter and its optimizer state */
} in_set;

static void member_path(const in_set *in, uint32_t s, char *out) {
  ckpt_file_name(out, PATHLEN, in->dir, s, in->S, in->tag);
}

static uint64_t layer_n(const in_set *in, uint32_t l) {
  return shard_spec_layer(in->spec, l)->n;
}

static void in_set_close(in_set *in) {
  for (uint32_t s = 0; in->r != NULL && s < in->S; s++)
    ckpt_reader_close(in->r[s]);
  free(in->r);
  free(in->h);
  shard_spec_destroy(in->spec);
  in->r = NULL;
  in->h = NULL;
  in->spec = NULL;
}

static int find_members(const in_set *in, const listing *ls, char *msg,
                        size_t msglen) {
  char p[PATHLEN];
  uint64_t other;
  member_path(in, 0, p);
  if (in->S == 0 || in->S > RESLICE_MAX_SERVERS)
    return fail(msg, msglen, FSPS_CORRUPT,
                "%s names %" PRIu32 " servers, which no fsps-server runs as", p,
                in->S);
  for (uint32_t s = 0; s < in->S; s++) {
    if (has_entry(ls, s, in->S, in->tag))
      continue;
    member_path(in, s, p);
    if (!newest_other(ls, s, in->S, in->tag, &other))
      return fail(msg, msglen, FSPS_NOT_FOUND, "%s is missing", p);
    return fail(msg, msglen, FSPS_NOT_FOUND,
                "%s is missing (server %" PRIu32 " of %" PRIu32
                " has a file at version %" PRIu64 " instead: the servers were "
                "not checkpointed at the same version)",
                p, s, in->S, other);
  }
  return FSPS_OK;
}

/* check_fds makes sure S inputs and S' outputs can be open at once. */
static int check_fds(uint32_t S, uint32_t out_S, char *msg, size_t msglen) {
  struct rlimit rl;
  rlim_t need = (rlim_t)S + out_S + 16;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
    return FSPS_OK;
  if (rl.rlim_max >= need) {
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
      return FSPS_OK;
  }
  return fail(msg, msglen, FSPS_RESOURCE_EXHAUSTED,
              "re-slicing %" PRIu32 " files into %" PRIu32
              " keeps %llu files open at once, more than this process may "
              "open (%llu): raise `ulimit -n`",
              S, out_S, (unsigned long long)need,
              (unsigned long long)rl.rlim_max);
}

static int open_members(in_set *in, char *msg, size_t msglen) {
  in->r = calloc(in->S, sizeof *in->r);
  in->h = calloc(in->S, sizeof *in->h);
  if (in->r == NULL || in->h == NULL)
    return fail(msg, msglen, FSPS_NOMEM, "out of memory");
  for (uint32_t s = 0; s < in->S; s++) {
    char p[PATHLEN];
    const char *why;
    member_path(in, s, p);
    if ((in->r[s] = ckpt_reader_open(p, &in->h[s], &why)) == NULL)
      return fail(msg, msglen, FSPS_CORRUPT, "%s %s", p, why);
  }
  return FSPS_OK;
}

/* check_member compares file s's header with its name and with file 0. */
static int check_member(const in_set *in, uint32_t s, char *msg,
                        size_t msglen) {
  const ckpt_header *h = &in->h[s], *h0 = &in->h[0];
  char p[PATHLEN], p0[PATHLEN];
  member_path(in, s, p);
  member_path(in, 0, p0);
  if (h->S != in->S || h->s != s || h->tag != in->tag)
    return fail(msg, msglen, FSPS_CORRUPT,
                "%s says it is server %" PRIu32 " of %" PRIu32
                " at version %" PRIu64 ", which its name does not (renamed?)",
                p, h->s, h->S, h->tag);
  if (h->hash != h0->hash)
    return fail(msg, msglen, FSPS_FAILED_PRECONDITION,
                "%s holds a model with spec hash %016" PRIx64 " but %s one "
                "with %016" PRIx64 ": the files come from different models",
                p, h->hash, p0, h0->hash);
  if (h->W != h0->W)
    return fail(msg, msglen, FSPS_FAILED_PRECONDITION,
                "%s was written by a server with --workers %" PRIu32
                " but %s by one with %" PRIu32
                ": the files come from different clusters",
                p, h->W, p0, h0->W);
  return FSPS_OK;
}

/* load_spec decodes the model the files share (from file 0). */
static int load_spec(in_set *in, char *msg, size_t msglen) {
  const ckpt_header *h = &in->h[0];
  char p[PATHLEN], err[512] = "";
  member_path(in, 0, p);
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
  in->per = 1 + server_spec_optim_state_per_elem(shard_spec_optim(in->spec));
  return FSPS_OK;
}

/* try_set opens and checks the set (in->S, in->tag); closes it on failure. */
static int try_set(in_set *in, const listing *ls, char *msg, size_t msglen) {
  int rc = find_members(in, ls, msg, msglen);
  if (rc == FSPS_OK)
    rc = check_fds(in->S, in->out_S, msg, msglen);
  if (rc == FSPS_OK)
    rc = open_members(in, msg, msglen);
  for (uint32_t s = 1; rc == FSPS_OK && s < in->S; s++)
    rc = check_member(in, s, msg, msglen);
  if (rc == FSPS_OK)
    rc = load_spec(in, msg, msglen);
  if (rc != FSPS_OK)
    in_set_close(in);
  return rc;
}

/* no_set says why no set was chosen: `last` is the one refusal when there
 * was one, `all` lists every refusal, one per line. */
static void no_set(const reslice_opts *o, int tried, const char *last,
                   const char *all, char *msg, size_t msglen) {
  char at[64] = "";
  if (o->pick_version)
    snprintf(at, sizeof at, " at version %" PRIu64, o->version);
  if (tried == 0)
    snprintf(msg, msglen,
             "no checkpoint files (ckpt-s<s>of<S>-v<version>.fsps)%s in %s", at,
             o->from);
  else
    snprintf(msg, msglen, "no complete, valid set of checkpoints%s in %s:%s%s",
             at, o->from, tried == 1 ? " " : "\n", tried == 1 ? last : all);
}

/* choose_set opens the newest set of o->from that passes try_set (only
 * version o->version with o->pick_version). */
static int choose_set(const reslice_opts *o, in_set *in, char *msg,
                      size_t msglen) {
  listing ls = {0};
  int rc = list_dir(o->from, false, &ls, msg, msglen), tried = 0;
  if (rc != FSPS_OK)
    return rc;
  if (ls.n > 1)
    qsort(ls.e, ls.n, sizeof *ls.e, by_newest);
  char why[8192] = "", one[2048] = "";
  rc = FSPS_NOT_FOUND;
  for (size_t i = 0; rc != FSPS_OK && i < ls.n; i++) {
    const entry *e = &ls.e[i];
    if ((i > 0 && e->tag == e[-1].tag && e->S == e[-1].S) ||
        (o->pick_version && e->tag != o->version))
      continue;
    *in = (in_set){
        .dir = o->from, .S = e->S, .tag = e->tag, .out_S = o->num_servers};
    if ((rc = try_set(in, &ls, one, sizeof one)) == FSPS_OK)
      break;
    tried++;
    snprintf(why + strlen(why), sizeof why - strlen(why), "%s  %s",
             tried > 1 ? "\n" : "", one);
  }
  free(ls.e);
  if (rc == FSPS_OK && tried)
    fprintf(stderr, "fsps-reslice: newer checkpoints refused:\n%s\n", why);
  if (rc != FSPS_OK)
    no_set(o, tried, one, why, msg, msglen);
  return rc;
}

/* ---- the output folder ---- */

static int clash(const reslice_opts *o, const entry *e, uint64_t tag, char *msg,
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
  listing ls = {0};
  int rc = list_dir(o->to, true, &ls, msg, msglen);
  if (ls.n > 1)
    qsort(ls.e, ls.n, sizeof *ls.e, by_newest);
  for (size_t i = 0; rc == FSPS_OK && i < ls.n; i++)
    rc = clash(o, &ls.e[i], tag, msg, msglen);
  free(ls.e);
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
  ckpt_header h = in->h[0];
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

/* read_slice reads file s's slice of layer l into the layer image buf:
 * vector j (parameters, then each state vector) of n floats at buf + j*n. */
static int read_slice(in_set *in, uint32_t s, uint32_t l, float *buf,
                      uint64_t *version, char *msg, size_t msglen) {
  uint64_t n = layer_n(in, l), off, cnt;
  ckpt_layer_head lh;
  shard_slice(n, in->S, s, &off, &cnt);
  const char *why = ckpt_reader_layer(in->r[s], &lh);
  if (why == NULL &&
      (lh.index != l || lh.count != cnt || lh.floats != in->per * cnt))
    why = "does not match its model's layers";
  for (size_t j = 0; why == NULL && cnt && j < in->per; j++)
    why = ckpt_reader_floats(in->r[s], buf + j * n + off, cnt);
  if (why != NULL) {
    char p[PATHLEN];
    member_path(in, s, p);
    return fail(msg, msglen, FSPS_CORRUPT, "%s %s (at layer %" PRIu32 ")", p,
                why, l);
  }
  *version = lh.version;
  return FSPS_OK;
}

static int version_mismatch(const in_set *in, uint32_t l, uint32_t a,
                            uint64_t va, uint32_t b, uint64_t vb, char *msg,
                            size_t msglen) {
  char pa[PATHLEN], pb[PATHLEN];
  member_path(in, a, pa);
  member_path(in, b, pb);
  return fail(msg, msglen, FSPS_FAILED_PRECONDITION,
              "layer %" PRIu32 " ('%s') is at version %" PRIu64
              " in %s but at %" PRIu64 " in %s: the files were not written "
              "at one step boundary (take the Checkpoint call while no worker "
              "pushes, or use --checkpoint-every)",
              l, shard_spec_layer(in->spec, l)->name, va, pa, vb, pb);
}

/* read_layer gathers layer l from all S files; every non-empty slice must
 * be at the same version, which becomes *version. */
static int read_layer(in_set *in, uint32_t l, float *buf, uint64_t *version,
                      char *msg, size_t msglen) {
  uint32_t first = in->S;
  *version = 0;
  for (uint32_t s = 0; s < in->S; s++) {
    uint64_t v, cnt;
    int rc = read_slice(in, s, l, buf, &v, msg, msglen);
    if (rc != FSPS_OK)
      return rc;
    shard_slice(layer_n(in, l), in->S, s, NULL, &cnt);
    if (cnt == 0)
      continue;
    if (first == in->S) {
      first = s;
      *version = v;
    } else if (v != *version) {
      return version_mismatch(in, l, first, *version, s, v, msg, msglen);
    }
  }
  return FSPS_OK;
}

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
  for (uint32_t l = 1; l < in->h[0].nlayers; l++)
    big = layer_n(in, l) > layer_n(in, big) ? l : big;
  double bytes = (double)layer_n(in, big) * (double)in->per * sizeof(float);
  if ((*buf = malloc((size_t)bytes)) == NULL)
    return fail(msg, msglen, FSPS_NOMEM,
                "layer %" PRIu32 " ('%s') needs %.2f GiB for its parameters "
                "and optimizer state, more than can be allocated here",
                big, shard_spec_layer(in->spec, big)->name, bytes / (1 << 30));
  return FSPS_OK;
}

static int read_ends(in_set *in, char *msg, size_t msglen) {
  for (uint32_t s = 0; s < in->S; s++) {
    const char *why = ckpt_reader_end(in->r[s]);
    char p[PATHLEN];
    member_path(in, s, p);
    if (why != NULL)
      return fail(msg, msglen, FSPS_CORRUPT, "%s %s", p, why);
  }
  return FSPS_OK;
}

/* idle_servers counts the servers of S that would hold no element. */
static uint32_t idle_servers(const in_set *in, uint32_t S) {
  uint64_t busy = 0;
  for (uint32_t l = 0; l < in->h[0].nlayers; l++) {
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
  for (uint32_t l = 0; rc == FSPS_OK && l < in->h[0].nlayers; l++) {
    uint64_t version;
    if ((rc = read_layer(in, l, buf, &version, msg, msglen)) == FSPS_OK)
      write_layer(in, &out, l, buf, version);
  }
  if (rc == FSPS_OK)
    rc = read_ends(in, msg, msglen);
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
    rc = check_to(o, in.tag, msg, msglen);
  if (rc == FSPS_OK)
    rc = convert(&in, o, res, msg, msglen);
  if (rc == FSPS_OK) {
    res->version = in.tag;
    res->from_servers = in.S;
    res->idle = idle_servers(&in, o->num_servers);
  }
  in_set_close(&in);
  return rc;
}
