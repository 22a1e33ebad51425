/* ckpt_set.c: a folder's checkpoint files read as one set (see ckpt_set.h):
 * list the folder, choose the newest complete and sound set, and gather
 * each layer's slices back into whole vectors. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ckpt_set.h"
#include "fsps_err.h"
#include "shard.h"

#define PATHLEN 4300

struct ckpt_set {
  const char *dir;
  uint32_t S, extra;
  uint64_t tag;
  ckpt_reader **r;
  ckpt_header *h;
};

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
  ckpt_entry *e;
  size_t n, cap;
} listing;

static int add_entry(listing *ls, ckpt_entry e) {
  if (ls->n == ls->cap) {
    size_t cap = ls->cap ? 2 * ls->cap : 64;
    ckpt_entry *grown = realloc(ls->e, cap * sizeof *grown);
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
  ckpt_entry e;
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
  const ckpt_entry *x = a, *y = b;
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
    const ckpt_entry *e = &ls->e[i];
    if (e->s == s && e->S == S && e->tag != tag && (!any || e->tag > *other)) {
      *other = e->tag;
      any = true;
    }
  }
  return any;
}

int ckpt_dir_list(const char *dir, bool missing_ok, ckpt_entry **out,
                  size_t *n, char *msg, size_t msglen) {
  listing ls = {0};
  int rc = list_dir(dir, missing_ok, &ls, msg, msglen);
  if (rc == FSPS_OK && ls.n > 1)
    qsort(ls.e, ls.n, sizeof *ls.e, by_newest);
  if (rc != FSPS_OK)
    free(ls.e);
  *out = rc == FSPS_OK ? ls.e : NULL;
  *n = rc == FSPS_OK ? ls.n : 0;
  return rc;
}

/* ---- the set: one verified file per server s of S ---- */

static void member_path(const ckpt_set *in, uint32_t s, char *out) {
  ckpt_file_name(out, PATHLEN, in->dir, s, in->S, in->tag);
}

void ckpt_set_path(const ckpt_set *set, uint32_t s, char *out, size_t outlen) {
  ckpt_file_name(out, outlen, set->dir, s, set->S, set->tag);
}

uint32_t ckpt_set_servers(const ckpt_set *set) {
  return set->S;
}

uint64_t ckpt_set_version(const ckpt_set *set) {
  return set->tag;
}

const ckpt_header *ckpt_set_header(const ckpt_set *set, uint32_t s) {
  return &set->h[s];
}

static void in_set_close(ckpt_set *in) {
  for (uint32_t s = 0; in->r != NULL && s < in->S; s++)
    ckpt_reader_close(in->r[s]);
  free(in->r);
  free(in->h);
  in->r = NULL;
  in->h = NULL;
}

void ckpt_set_close(ckpt_set *set) {
  if (set == NULL)
    return;
  in_set_close(set);
  free(set);
}

static int find_members(const ckpt_set *in, const listing *ls, char *msg,
                        size_t msglen) {
  char p[PATHLEN];
  uint64_t other;
  member_path(in, 0, p);
  if (in->S == 0 || in->S > SHARD_MAX_SERVERS)
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

/* check_fds makes sure S inputs and out_S other files can be open at
 * once. */
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
              "reading %" PRIu32 " checkpoint files (and writing %" PRIu32
              ") keeps %llu files open at once, more than this process may "
              "open (%llu): raise `ulimit -n`",
              S, out_S, (unsigned long long)need,
              (unsigned long long)rl.rlim_max);
}

static int open_members(ckpt_set *in, char *msg, size_t msglen) {
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
static int check_member(const ckpt_set *in, uint32_t s, char *msg,
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

/* try_set opens and checks the set (in->S, in->tag); closes it on failure. */
static int try_set(ckpt_set *in, const ckpt_set_opts *o, const listing *ls,
                   char *msg, size_t msglen) {
  int rc = find_members(in, ls, msg, msglen);
  if (rc == FSPS_OK)
    rc = check_fds(in->S, o->extra_files, msg, msglen);
  if (rc == FSPS_OK)
    rc = open_members(in, msg, msglen);
  for (uint32_t s = 1; rc == FSPS_OK && s < in->S; s++)
    rc = check_member(in, s, msg, msglen);
  if (rc == FSPS_OK && o->accept != NULL)
    rc = o->accept(o->arg, in, msg, msglen);
  if (rc != FSPS_OK)
    in_set_close(in);
  return rc;
}

/* no_set says why no set was chosen: `last` is the one refusal when there
 * was one, `all` lists every refusal, one per line. */
static void no_set(const ckpt_set_opts *o, int tried, const char *last,
                   const char *all, char *msg, size_t msglen) {
  char at[64] = "";
  if (o->pick_version)
    snprintf(at, sizeof at, " at version %" PRIu64, o->version);
  if (tried == 0)
    snprintf(msg, msglen,
             "no checkpoint files (ckpt-s<s>of<S>-v<version>.fsps)%s in %s", at,
             o->dir);
  else
    snprintf(msg, msglen, "no complete, valid set of checkpoints%s in %s:%s%s",
             at, o->dir, tried == 1 ? " " : "\n", tried == 1 ? last : all);
}

/* choose_set opens the newest set of o->dir that passes try_set (only
 * version o->version with o->pick_version). */
static int choose_set(const ckpt_set_opts *o, ckpt_set *in, char *msg,
                      size_t msglen) {
  listing ls = {0};
  int rc = list_dir(o->dir, false, &ls, msg, msglen), tried = 0;
  if (rc != FSPS_OK)
    return rc;
  if (ls.n > 1)
    qsort(ls.e, ls.n, sizeof *ls.e, by_newest);
  char why[8192] = "", one[2048] = "";
  rc = FSPS_NOT_FOUND;
  for (size_t i = 0; rc != FSPS_OK && i < ls.n; i++) {
    const ckpt_entry *e = &ls.e[i];
    if ((i > 0 && e->tag == e[-1].tag && e->S == e[-1].S) ||
        (o->pick_version && e->tag != o->version))
      continue;
    *in = (ckpt_set){.dir = o->dir, .S = e->S, .tag = e->tag};
    if ((rc = try_set(in, o, &ls, one, sizeof one)) == FSPS_OK)
      break;
    tried++;
    snprintf(why + strlen(why), sizeof why - strlen(why), "%s  %s",
             tried > 1 ? "\n" : "", one);
  }
  free(ls.e);
  if (rc == FSPS_OK && tried)
    fprintf(stderr, "%s: newer checkpoints refused:\n%s\n",
            o->tool ? o->tool : "fsps", why);
  if (rc != FSPS_OK)
    no_set(o, tried, one, why, msg, msglen);
  return rc;
}

int ckpt_set_open(const ckpt_set_opts *o, ckpt_set **out, char *msg,
                  size_t msglen) {
  ckpt_set *set = calloc(1, sizeof *set);
  *out = NULL;
  if (set == NULL)
    return fail(msg, msglen, FSPS_NOMEM, "out of memory");
  int rc = choose_set(o, set, msg, msglen);
  if (rc != FSPS_OK) {
    free(set);
    return rc;
  }
  *out = set;
  return FSPS_OK;
}

/* ---- one layer ---- */

/* slice_per checks file s's layer head against the slice it must hold and
 * works out its floats per element; NULL or why not. */
static const char *slice_per(const ckpt_layer_head *lh, const ckpt_layer_req *q,
                             uint64_t cnt, uint32_t *per) {
  if (lh->index != q->l || lh->count != cnt)
    return "does not match its model's layers";
  if (*per == 0 && cnt > 0) {
    if (lh->floats % cnt != 0 || lh->floats / cnt > 64)
      return "does not match its model's layers";
    *per = (uint32_t)(lh->floats / cnt);
  }
  if (cnt > 0 ? lh->floats != (uint64_t)*per * cnt : lh->floats != 0)
    return "does not match its model's layers";
  return *per >= q->keep || cnt == 0 ? NULL
                                     : "holds fewer vectors than expected";
}

/* read_slice reads file s's slice of layer q->l into the layer image buf:
 * vector j < keep of n floats at buf + j*n; the rest is dropped. */
static int read_slice(ckpt_set *in, uint32_t s, const ckpt_layer_req *q,
                      uint32_t *per, float *buf, uint64_t *version, char *msg,
                      size_t msglen) {
  uint64_t off, cnt;
  ckpt_layer_head lh;
  shard_slice(q->n, in->S, s, &off, &cnt);
  const char *why = ckpt_reader_layer(in->r[s], &lh);
  if (why == NULL)
    why = slice_per(&lh, q, cnt, per);
  for (uint32_t j = 0; why == NULL && cnt && j < *per; j++)
    why = j < q->keep ? ckpt_reader_floats(in->r[s], buf + j * q->n + off, cnt)
                      : ckpt_reader_skip(in->r[s], cnt);
  if (why != NULL) {
    char p[PATHLEN];
    member_path(in, s, p);
    return fail(msg, msglen, FSPS_CORRUPT, "%s %s (at layer %" PRIu32 ")", p,
                why, q->l);
  }
  *version = lh.version;
  return FSPS_OK;
}

static int version_mismatch(const ckpt_set *in, const ckpt_layer_req *q,
                            uint32_t a, uint64_t va, uint32_t b, uint64_t vb,
                            char *msg, size_t msglen) {
  char pa[PATHLEN], pb[PATHLEN];
  member_path(in, a, pa);
  member_path(in, b, pb);
  return fail(msg, msglen, FSPS_FAILED_PRECONDITION,
              "layer %" PRIu32 " ('%s') is at version %" PRIu64
              " in %s but at %" PRIu64 " in %s: the files were not written "
              "at one step boundary (take the Checkpoint call while no worker "
              "pushes, or use --checkpoint-every)",
              q->l, q->name ? q->name : "", va, pa, vb, pb);
}

int ckpt_set_read_layer(ckpt_set *in, const ckpt_layer_req *q, float *buf,
                        uint64_t *version, char *msg, size_t msglen) {
  uint32_t first = in->S, per = q->per;
  *version = 0;
  for (uint32_t s = 0; s < in->S; s++) {
    uint64_t v, cnt;
    int rc = read_slice(in, s, q, &per, buf, &v, msg, msglen);
    if (rc != FSPS_OK)
      return rc;
    shard_slice(q->n, in->S, s, NULL, &cnt);
    if (cnt == 0)
      continue;
    if (first == in->S) {
      first = s;
      *version = v;
    } else if (v != *version) {
      return version_mismatch(in, q, first, *version, s, v, msg, msglen);
    }
  }
  return FSPS_OK;
}

int ckpt_set_end(ckpt_set *in, char *msg, size_t msglen) {
  for (uint32_t s = 0; s < in->S; s++) {
    const char *why = ckpt_reader_end(in->r[s]);
    char p[PATHLEN];
    member_path(in, s, p);
    if (why != NULL)
      return fail(msg, msglen, FSPS_CORRUPT, "%s %s", p, why);
  }
  return FSPS_OK;
}
