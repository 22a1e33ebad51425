/* recover.c: fsps_recover — after a failed step, wait for every server to
 * answer, declare the model again where it was lost, and when a server
 * restarted (from an older checkpoint, or empty) roll every server back to
 * its version, so that the workers go on from one common step. */
#include <inttypes.h>
#include <time.h>

#include "client_int.h"

#define RECOVER_POLL_MS 200
#define RECOVER_STATUS_MS 5000

typedef struct {
  bool restarted;
  uint64_t lowest; /* lowest version over the layers it holds slices of */
} server_view;

static void nap(void) {
  struct timespec ts = {0, RECOVER_POLL_MS * 1000000L};
  nanosleep(&ts, NULL);
}

/* judge reads server s's status: a server without the model gets it again
 * (and counts as restarted, at version 0), one whose incarnation changed
 * restarted. */
static int judge(fsps_client *c, uint32_t s, const Fsps__V1__StatusReply *r,
                 server_view *v) {
  v->lowest = UINT64_MAX;
  if (!r->initialized) {
    v->restarted = true;
    v->lowest = 0;
    return client_init_one(c, s);
  }
  if (r->spec_hash != shard_spec_hash(c->spec))
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "recover: server %u (%s) now holds another model", s,
                       c->addr[s]);
  v->restarted = c->incarnation[s] != 0 && r->incarnation != c->incarnation[s];
  c->incarnation[s] = r->incarnation;
  for (size_t l = 0; l < r->n_layers; l++)
    if (r->layers[l]->slice_count > 0 && r->layers[l]->version < v->lowest)
      v->lowest = r->layers[l]->version;
  return FSPS_OK;
}

/* look asks server s for its status until it answers or deadline_ns. */
static int look(fsps_client *c, uint32_t s, int64_t deadline_ns,
                server_view *v) {
  for (;;) {
    Fsps__V1__StatusRequest req = FSPS__V1__STATUS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    rpc_status st;
    int rc = rpc_unary(c->ch[s], PATH_STATUS, &req.base,
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
    if (now_ns() >= deadline_ns)
      return client_fail(c, FSPS_UNAVAILABLE,
                         "recover: server %u (%s) did not answer within "
                         "%" PRId64 " ms: %s",
                         s, c->addr[s], client_timeout_ms(c), st.msg);
    nap();
  }
}

/* roll_back asks every server to go back to version. */
static int roll_back(fsps_client *c, uint64_t version) {
  for (uint32_t s = 0; s < c->S; s++) {
    Fsps__V1__RollbackRequest req = FSPS__V1__ROLLBACK_REQUEST__INIT;
    req.version = version;
    req.spec_hash = shard_spec_hash(c->spec);
    ProtobufCMessage *out = NULL;
    rpc_status st;
    int rc = client_unary(c, s, PATH_ROLLBACK, &req.base,
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

int fsps_recover(fsps_client *c, uint64_t *step) {
  if (c == NULL || step == NULL)
    return c ? client_fail(c, FSPS_INVALID_ARGUMENT, "step is NULL")
             : FSPS_INVALID_ARGUMENT;
  if (c->spec == NULL)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "no model: call fsps_declare or fsps_attach first");
  fsps_step_end(c); /* drain and drop what the failed step left */
  int64_t deadline = now_ns() + client_timeout_ms(c) * 1000000;
  uint64_t lowest = UINT64_MAX;
  bool restarted = false;
  for (uint32_t s = 0; s < c->S; s++) {
    server_view v;
    int rc = look(c, s, deadline, &v);
    if (rc != FSPS_OK)
      return rc;
    restarted |= v.restarted;
    lowest = v.lowest < lowest ? v.lowest : lowest;
  }
  if (lowest == UINT64_MAX)
    lowest = 0;
  if (c->o.mode == FSPS_ASP) {
    *step = 0;
    return FSPS_OK;
  }
  int rc = restarted ? roll_back(c, lowest) : FSPS_OK;
  if (rc == FSPS_OK)
    *step = lowest;
  return rc;
}
