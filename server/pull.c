/* pull.c: the Pull method — wait until the layer reaches min_version, then
 * stream the requested part of this server's slice in chunks of at most
 * 262144 elements, each payload a reference to the parameters (or to their
 * bf16 copy, for a bf16 model), not a copy. */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "fsps.pb-c.h"
#include "log.h"
#include "service.h"

typedef struct {
  store_waiter w; /* first: the waiter callback recovers the state from it */
  rpc_call *call;
  store_layer *layer;
  uint32_t index;
  fbuf *params;
  uint64_t version;
  uint64_t slice_off, next, end; /* layer coordinates */
  shard_wire_dtype wire;         /* the model's */
  server_metrics *m;             /* NULL: metrics off */
  double t0;                     /* metrics_now_s() at the start */
} pull_state;

static void release_params(void *arg) {
  store_fbuf_unref(arg);
}

/* send_next sends the next chunk, or finishes once all are sent. */
static void send_next(pull_state *ps) {
  if (ps->next >= ps->end) {
    if (ps->m != NULL)
      metrics_observe(ps->m->pull_seconds, metrics_now_s() - ps->t0);
    rpc_call_finish(ps->call, NULL, FSPS_OK, NULL);
    return;
  }
  uint64_t len = ps->end - ps->next;
  if (len > SHARD_CHUNK_ELEMS)
    len = SHARD_CHUNK_ELEMS;
  rpc_tensor_hdr h = {0};
  rpc_hdr_set(&h, WIRE_PULL_LAYER, ps->index);
  rpc_hdr_set(&h, WIRE_PULL_VERSION, ps->version);
  rpc_hdr_set(&h, WIRE_PULL_OFFSET, ps->next);
  h.payload_field = wire_data_field(ps->wire);
  uint64_t at = ps->next - ps->slice_off;
  const void *data = ps->wire == SHARD_WIRE_BF16
                         ? (const void *)(ps->params->wire + at)
                         : (const void *)(ps->params->data + at);
  size_t bytes = len * wire_dtype_bytes(ps->wire);
  ps->next += len;
  metrics_add(SM(ps->m, tx_bytes), bytes);
  store_fbuf_ref(ps->params);
  rpc_call_send_tensor(ps->call, &h, data, bytes, release_params, ps->params);
}

/* on_ready runs on the thread that advanced the version (or failed the
 * step the pull waited on). */
static void on_ready(store_waiter *w, fbuf *params, uint64_t version) {
  pull_state *ps = (pull_state *)w;
  if (params == NULL) {
    rpc_call_finish(ps->call, NULL, w->failed_code, w->failed);
    rpc_call_unref(ps->call);
    return;
  }
  ps->params = params;
  ps->version = version;
  send_next(ps);
  rpc_call_unref(ps->call); /* the waiter list's reference */
}

/* range resolves the request's (offset, count) against the slice. */
static int range(const Fsps__V1__PullRequest *req, const store_layer_info *in,
                 pull_state *ps, char *msg, size_t msglen) {
  uint64_t lo = in->offset, hi = in->offset + in->count;
  uint64_t begin = req->offset == 0 && req->count == 0 ? lo : req->offset;
  uint64_t end = req->count == 0 ? hi : begin + req->count;
  bool whole = req->offset == 0 && req->count == 0;
  if (!whole && (begin < lo || end > hi || end < begin || begin >= hi)) {
    snprintf(msg, msglen,
             "range [%" PRIu64 ", +%" PRIu64 ") is outside this server's "
             "slice [%" PRIu64 ", %" PRIu64 ") of layer '%s'",
             req->offset, req->count, lo, hi, in->name);
    return FSPS_INVALID_ARGUMENT;
  }
  ps->slice_off = lo;
  ps->next = begin;
  ps->end = end;
  return FSPS_OK;
}

static int resolve(service *svc, const Fsps__V1__PullRequest *req,
                   pull_state *ps, char *msg, size_t msglen) {
  if (!store_ready(svc->st)) {
    snprintf(msg, msglen, "no model is declared on this server yet (Init)");
    return FSPS_FAILED_PRECONDITION;
  }
  ps->layer = store_layer_get(svc->st, req->layer);
  if (ps->layer == NULL) {
    snprintf(msg, msglen, "layer %u does not exist: the model has %u layers",
             req->layer, store_num_layers(svc->st));
    return FSPS_NOT_FOUND;
  }
  store_layer_info info;
  store_info(ps->layer, &info);
  ps->index = req->layer;
  ps->wire = store_wire_dtype(svc->st);
  ps->w.min_version = req->min_version;
  ps->w.epoch = req->epoch;
  ps->w.ready = on_ready;
  return range(req, &info, ps, msg, msglen);
}

void server_pull_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  service *svc = ctx;
  ProtobufCMessage *m;
  rpc_status st;
  atomic_fetch_add(&svc->pulls, 1);
  metrics_add(SM(svc->m, pulls), 1);
  if (rpc_msg_unpack(msg, &fsps__v1__pull_request__descriptor, &m, &st)) {
    server_service_reject(svc, call, st.code, st.msg);
    return;
  }
  pull_state *ps = calloc(1, sizeof *ps);
  char err[512];
  int rc = ps ? resolve(svc, (Fsps__V1__PullRequest *)m, ps, err, sizeof err)
              : FSPS_RESOURCE_EXHAUSTED;
  protobuf_c_message_free_unpacked(m, NULL);
  if (rc != FSPS_OK) {
    server_service_reject(svc, call, rc, ps ? err : "out of memory");
    free(ps);
    return;
  }
  ps->call = call;
  ps->m = svc->m;
  if (ps->m != NULL)
    ps->t0 = metrics_now_s();
  rpc_call_set_user(call, ps);
  rpc_call_ref(call); /* held by the waiter list if the pull parks */
  rc = store_pull(ps->layer, &ps->w, &ps->params, &ps->version);
  if (rc == STORE_PULL_PARKED)
    return;
  rpc_call_unref(call);
  if (rc == STORE_PULL_READY)
    send_next(ps);
  else
    rpc_call_finish(call, NULL, ps->w.failed_code, ps->w.failed);
}

void server_pull_sent(rpc_call *call, bool ok, void *ctx) {
  (void)ctx;
  if (ok)
    send_next(rpc_call_user(call));
}

void server_pull_cancel(rpc_call *call, void *ctx) {
  (void)ctx;
  pull_state *ps = rpc_call_user(call);
  if (ps != NULL && store_unpark(ps->layer, &ps->w))
    rpc_call_unref(call);
}

void server_pull_done(rpc_call *call, void *ctx) {
  (void)ctx;
  pull_state *ps = rpc_call_user(call);
  if (ps == NULL)
    return;
  if (ps->params)
    store_fbuf_unref(ps->params);
  free(ps);
}
