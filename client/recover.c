/* recover.c: fsps_recover — after a failed step, find the step this worker
 * goes on from such that every step is computed exactly once, from exactly
 * its version's parameters, whatever failed.
 *
 * Every server is asked for its state. In BSP, when no server restarted and
 * all agree on the cluster epoch, the worker goes on from the first step it
 * has not pushed everywhere, provided no layer has moved past that step
 * (the step would then be computed from later parameters than its own).
 * Otherwise the cluster is rolled back to the newest version every server
 * can return to (a checkpoint, its present state, or the initial values)
 * and enters a new epoch, which fences off whatever was computed before:
 * servers refuse pulls and pushes of the old epoch. Workers that saw the
 * same failure choose the same (version, epoch), so the cluster is rolled
 * back once however many of them recover at the same time. */
#include <inttypes.h>
#include <stdlib.h>
#include <time.h>

#include "client_int.h"

#define RECOVER_POLL_MS 200
#define RECOVER_STATUS_MS 5000
#define EPOCH_CHANGING UINT64_MAX /* a server being rolled back */
#define MAX_CANDIDATES 66         /* checkpoints listed, its state, and 0 */

typedef struct {
  bool restarted;
  uint64_t incarnation, epoch;
  uint64_t lo, hi; /* lowest, highest version over the layers it slices */
  uint64_t done;   /* steps before this one this worker pushed here */
  uint64_t back[MAX_CANDIDATES]; /* versions it can be rolled back to */
  uint32_t nback;
} server_view;

static void nap(void) {
  struct timespec ts = {0, RECOVER_POLL_MS * 1000000L};
  nanosleep(&ts, NULL);
}

/* pushed_by reports whether worker rank is in a layer's pushed list. */
static bool pushed_by(const Fsps__V1__LayerStatus *ls, uint32_t rank) {
  for (size_t i = 0; i < ls->n_pushed; i++)
    if (ls->pushed[i] == rank)
      return true;
  return false;
}

/* read_layers fills v's versions and what this worker pushed from r. */
static void read_layers(const fsps_client *c, const Fsps__V1__StatusReply *r,
                        server_view *v) {
  v->lo = UINT64_MAX;
  v->hi = 0;
  v->done = UINT64_MAX;
  for (size_t l = 0; l < r->n_layers; l++) {
    const Fsps__V1__LayerStatus *ls = r->layers[l];
    if (ls->slice_count == 0)
      continue;
    uint64_t done = ls->version + (ls->pending_step == ls->version &&
                                   pushed_by(ls, c->o.rank));
    v->lo = ls->version < v->lo ? ls->version : v->lo;
    v->hi = ls->version > v->hi ? ls->version : v->hi;
    v->done = done < v->done ? done : v->done;
  }
  if (v->lo == UINT64_MAX) /* no slice here: no constraint */
    v->lo = v->done = UINT64_MAX, v->hi = 0;
}

/* read_back lists the versions the server can be rolled back to: those it
 * holds checkpoints of, the one all its layers are at, and 0. */
static void read_back(const Fsps__V1__StatusReply *r, server_view *v) {
  v->nback = 0;
  for (size_t i = 0; i < r->n_checkpoint_versions && v->nback < 64; i++)
    v->back[v->nback++] = r->checkpoint_versions[i];
  if (v->lo == v->hi)
    v->back[v->nback++] = v->lo;
  v->back[v->nback++] = 0;
}

/* judge reads server s's status: a server without the model gets it again
 * (and counts as restarted, at version 0), one whose incarnation changed
 * restarted. */
static int judge(fsps_client *c, uint32_t s, const Fsps__V1__StatusReply *r,
                 server_view *v) {
  if (!r->initialized) {
    *v = (server_view){.restarted = true, .epoch = r->epoch};
    v->back[v->nback++] = 0;
    return client_init_one(c, s);
  }
  if (r->spec_hash != shard_spec_hash(c->spec))
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "recover: server %u (%s) now holds another model", s,
                       c->addr[s]);
  v->restarted = c->incarnation[s] != 0 && r->incarnation != c->incarnation[s];
  c->incarnation[s] = r->incarnation;
  v->incarnation = r->incarnation;
  v->epoch = r->epoch;
  read_layers(c, r, v);
  read_back(r, v);
  return FSPS_OK;
}

/* look asks server s for its status until it answers or deadline_ns. */
static int look(fsps_client *c, uint32_t s, int64_t deadline_ns,
                server_view *v) {
  for (;;) {
    Fsps__V1__StatusRequest req = FSPS__V1__STATUS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    rpc_status st;
    int rc = rpc_unary(c->ch[s], WIRE_PATH_STATUS, &req.base,
                       &fsps__v1__status_reply__descriptor, &out,
                       RECOVER_STATUS_MS, &st);
    if (rc == FSPS_OK) {
      rc = judge(c, s, (Fsps__V1__StatusReply *)out, v);
      protobuf_c_message_free_unpacked(out, NULL);
      return rc;
    }
    if (rc != FSPS_UNAVAILABLE && rc != FSPS_DEADLINE_EXCEEDED)
      return client_fail(c, rc, "recover: status of server %u (%s): %s", s,
                         c->addr[s], st.msg);
    if (client_now_ns() >= deadline_ns)
      return client_fail(c, FSPS_UNAVAILABLE,
                         "recover: server %u (%s) did not answer within "
                         "%" PRId64 " ms: %s",
                         s, c->addr[s], client_timeout_ms(c), st.msg);
    nap();
  }
}

/* can_return tells whether server v can be rolled back to version. */
static bool can_return(const server_view *v, uint64_t version) {
  if (v->lo == UINT64_MAX) /* it holds no slice: nothing to roll back */
    return true;
  if (version > v->lo)
    return false;
  for (uint32_t i = 0; i < v->nback; i++)
    if (v->back[i] == version)
      return true;
  return false;
}

/* One fsps_recover: what it saw of each server, and the versions a
 * rollback failed to (a file that is no step boundary, say), which it does
 * not try again. */
#define MAX_REFUSED 8
typedef struct {
  server_view *v;
  uint64_t refused[MAX_REFUSED];
  uint32_t nrefused;
} recovery;

static bool refused(const recovery *r, uint64_t version) {
  for (uint32_t i = 0; i < r->nrefused; i++)
    if (r->refused[i] == version)
      return true;
  return false;
}

/* target picks the newest version at or below `below` that every server
 * can be rolled back to (0, the initial values, at worst). */
static uint64_t target(const recovery *r, uint32_t S, uint64_t below) {
  const server_view *v = r->v;
  uint64_t best = 0;
  for (uint32_t i = 0; i < v[0].nback; i++) {
    uint64_t cand = v[0].back[i];
    bool all = cand <= below && cand > best && !refused(r, cand);
    for (uint32_t s = 1; all && s < S; s++)
      all = can_return(&v[s], cand);
    if (all)
      best = cand;
  }
  return best;
}

uint64_t client_mix(uint64_t h, uint64_t x) {
  h ^= x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 29);
}

/* new_epoch names the timeline a rollback to version starts: a function of
 * what was seen, so that workers who saw the same choose the same. */
static uint64_t new_epoch(const fsps_client *c, const server_view *v,
                          uint64_t version) {
  uint64_t h = client_mix(shard_spec_hash(c->spec), version);
  for (uint32_t s = 0; s < c->S; s++)
    h = client_mix(client_mix(h, v[s].incarnation), v[s].epoch);
  return h == 0 || h == EPOCH_CHANGING ? 1 : h;
}

/* roll_back asks every server to go back to version in epoch. */
static int roll_back(fsps_client *c, uint64_t version, uint64_t epoch) {
  for (uint32_t s = 0; s < c->S; s++) {
    Fsps__V1__RollbackRequest req = FSPS__V1__ROLLBACK_REQUEST__INIT;
    req.version = version;
    req.spec_hash = shard_spec_hash(c->spec);
    req.epoch = epoch;
    ProtobufCMessage *out = NULL;
    rpc_status st;
    int rc = client_unary(c, s, WIRE_PATH_ROLLBACK, &req.base,
                          &fsps__v1__rollback_reply__descriptor, &out, &st);
    if (out != NULL)
      protobuf_c_message_free_unpacked(out, NULL);
    if (rc != FSPS_OK)
      return client_fail(c, rc,
                         "recover: rolling server %u (%s) back to version "
                         "%" PRIu64 ": %s",
                         s, c->addr[s], version, st.msg);
  }
  return FSPS_OK;
}

/* A decision taken from one look at every server. */
typedef struct {
  bool settled;  /* no rollback: go on from step in epoch */
  bool changing; /* a server is being rolled back: look again */
  uint64_t step, epoch;
  uint64_t version; /* else: roll back to it */
} plan;

/* decide turns the servers' views into a plan (see the top of the file). */
static plan decide(const fsps_client *c, const recovery *r) {
  const server_view *v = r->v;
  bool restarted = false, agree = true;
  uint64_t lo = UINT64_MAX, hi = 0, done = UINT64_MAX;
  for (uint32_t s = 0; s < c->S; s++) {
    restarted |= v[s].restarted;
    agree &= v[s].epoch == v[0].epoch;
    if (v[s].epoch == EPOCH_CHANGING)
      return (plan){.changing = true};
    lo = v[s].lo < lo ? v[s].lo : lo;
    hi = v[s].hi > hi ? v[s].hi : hi;
    done = v[s].done < done ? v[s].done : done;
  }
  if (lo == UINT64_MAX)
    lo = done = 0;
  plan p = {.settled = !restarted && agree, .epoch = v[0].epoch};
  if (p.settled && c->o.mode == FSPS_BSP) {
    p.step = done;
    p.settled = hi <= done; /* else a layer moved past what it must redo */
  } else if (p.settled) {
    p.step = lo; /* SSP: any version within the staleness will do */
  }
  if (!p.settled) {
    p.version = target(r, c->S, lo);
    p.epoch = new_epoch(c, v, p.version);
  }
  return p;
}

/* attempt looks at every server once and acts on what it sees: FSPS_OK
 * with *step, FSPS_ABORTED to look again, or an error. */
static int attempt(fsps_client *c, recovery *r, int64_t deadline,
                   uint64_t *step) {
  for (uint32_t s = 0; s < c->S; s++) {
    int rc = look(c, s, deadline, &r->v[s]);
    if (rc != FSPS_OK)
      return rc;
  }
  if (c->o.mode == FSPS_ASP) { /* no rollback: every push counts as it comes */
    *step = 0;
    return FSPS_OK;
  }
  plan p = decide(c, r);
  if (p.changing)
    return FSPS_ABORTED;
  if (!p.settled) {
    int rc = roll_back(c, p.version, p.epoch);
    if (rc == FSPS_FAILED_PRECONDITION && p.version != 0 &&
        r->nrefused < MAX_REFUSED) /* look again, and try an older one */
      r->refused[r->nrefused++] = p.version;
    if (rc == FSPS_FAILED_PRECONDITION)
      return FSPS_ABORTED;
    if (rc != FSPS_OK)
      return rc;
    p.step = p.version;
  }
  atomic_store(&c->epoch, p.epoch);
  *step = p.step;
  return FSPS_OK;
}

int fsps_recover(fsps_client *c, uint64_t *step) {
  if (c == NULL || step == NULL)
    return c ? client_fail(c, FSPS_INVALID_ARGUMENT, "step is NULL")
             : FSPS_INVALID_ARGUMENT;
  if (c->spec == NULL)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "no model: call fsps_declare or fsps_attach first");
  fsps_step_end(c); /* drain and drop what the failed step left */
  recovery r = {.v = calloc(c->S, sizeof *r.v)};
  if (r.v == NULL)
    return client_fail(c, FSPS_NOMEM, "recover: out of memory");
  int64_t deadline = client_now_ns() + client_timeout_ms(c) * 1000000;
  int rc;
  while ((rc = attempt(c, &r, deadline, step)) == FSPS_ABORTED) {
    if (client_now_ns() >= deadline) {
      rc = client_fail(c, FSPS_DEADLINE_EXCEEDED,
                       "recover: the servers did not settle on one version "
                       "within %" PRId64 " ms: %s",
                       client_timeout_ms(c), c->err);
      break;
    }
    nap();
  }
  free(r.v);
  return rc;
}
