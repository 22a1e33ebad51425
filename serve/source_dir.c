/* source_dir.c: a model snapshot read from a folder of checkpoint files
 * written at any S (ckpt/'s ckpt_set), its spec checked to be an MLP
 * fsps-serve computes; the optimizer state in the files is skipped. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "ckpt_set.h"
#include "mlp_spec.h"
#include "source.h"
#include "wire.h"

#define PATHLEN 4300

typedef struct {
  shard_spec *spec;
  uint32_t widths[SERVE_MAX_WIDTHS], nw;
} dir_model;

static int spec_of(dir_model *m, const ckpt_header *h, const char *p,
                   char *msg, size_t msglen) {
  char err[512] = "";
  shard_spec_destroy(m->spec);
  m->spec = wire_spec_unpack(h->spec, h->speclen, err, sizeof err);
  if (m->spec == NULL) {
    snprintf(msg, msglen, "%s holds an unreadable model spec: %s", p, err);
    return FSPS_CORRUPT;
  }
  if (shard_spec_validate(m->spec, err, sizeof err) != FSPS_OK) {
    snprintf(msg, msglen, "%s holds an invalid model spec: %s", p, err);
    return FSPS_CORRUPT;
  }
  if (shard_spec_hash(m->spec) != h->hash ||
      shard_spec_num_layers(m->spec) != h->nlayers) {
    snprintf(msg, msglen, "%s holds a model spec that does not match its "
             "header (corrupt)", p);
    return FSPS_CORRUPT;
  }
  return FSPS_OK;
}

/* accept decodes the set's spec and refuses one fsps-serve cannot compute. */
static int accept(void *arg, const ckpt_set *set, char *msg, size_t msglen) {
  dir_model *m = arg;
  char p[PATHLEN], err[1024];
  ckpt_set_path(set, 0, p, sizeof p);
  int rc = spec_of(m, ckpt_set_header(set, 0), p, msg, msglen);
  if (rc == FSPS_OK)
    rc = serve_mlp_widths(m->spec, m->widths, &m->nw, err, sizeof err);
  if (rc == FSPS_UNIMPLEMENTED)
    snprintf(msg, msglen, "%s: %s", p, err);
  return rc;
}

static int mixed(const dir_model *m, uint32_t l, uint64_t v, uint64_t v0,
                 char *msg, size_t msglen) {
  snprintf(msg, msglen,
           "layer '%s' is at version %" PRIu64 " but layer '%s' at %" PRIu64
           ": the checkpoint was taken mid-step and fsps-serve serves one "
           "version (use the servers' --checkpoint-every files, or take the "
           "checkpoint while no worker pushes)",
           shard_spec_layer(m->spec, l)->name, v,
           shard_spec_layer(m->spec, 0)->name, v0);
  return FSPS_FAILED_PRECONDITION;
}

/* read_all fills snap's layers from the open set; all at one version. */
static int read_all(ckpt_set *set, const dir_model *m, serve_snapshot *snap,
                    char *msg, size_t msglen) {
  uint64_t v0 = 0;
  for (uint32_t l = 0; l + 1 < m->nw; l++) {
    const shard_layer *ly = shard_spec_layer(m->spec, l);
    ckpt_layer_req q = {l, ly->name, ly->n, 0, 1};
    uint64_t v;
    int rc = ckpt_set_read_layer(set, &q, snap->params[l], &v, msg, msglen);
    if (rc != FSPS_OK)
      return rc;
    if (l == 0)
      v0 = v;
    else if (v != v0)
      return mixed(m, l, v, v0, msg, msglen);
  }
  snap->version = v0;
  return ckpt_set_end(set, msg, msglen);
}

serve_snapshot *serve_source_load_dir(const serve_source_config *cfg,
                                      int *rc, char *msg, size_t msglen) {
  dir_model m = {0};
  ckpt_set *set = NULL;
  serve_snapshot *snap = NULL;
  ckpt_set_opts o = {.dir = cfg->checkpoint_dir,
                     .pick_version = cfg->pick_version,
                     .version = cfg->version,
                     .tool = cfg->tool,
                     .accept = accept,
                     .arg = &m};
  *rc = ckpt_set_open(&o, &set, msg, msglen);
  if (*rc == FSPS_OK &&
      (snap = serve_snapshot_new(m.widths, m.nw, ckpt_set_version(set))) ==
          NULL) {
    *rc = FSPS_NOMEM;
    snprintf(msg, msglen, "out of memory for the model's parameters");
  }
  if (*rc == FSPS_OK)
    *rc = read_all(set, &m, snap, msg, msglen);
  if (*rc != FSPS_OK) {
    serve_snapshot_unref(snap);
    snap = NULL;
  }
  ckpt_set_close(set);
  shard_spec_destroy(m.spec);
  return snap;
}
