/* test_rpc.c: rpc/ over real gRPC on loopback — unary calls, zero-copy
 * tensor streams both ways, deadlines, cancellation, unknown methods. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fsps.pb-c.h"
#include "rpc.h"

#define CHUNK_FLOATS (1 << 18) /* 1 MiB payloads */
/* The channels' and server's message limit: a chunk and its header. */
#define MAX_MSG_BYTES (CHUNK_FLOATS * 4 + RPC_TENSOR_HDR_MAX)
/* A Unary request for layer LOCAL_CODE + e fails with fsps_err e. */
#define LOCAL_CODE 1000

static float *g_big; /* payload the server streams */
static int g_cancelled;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- server handlers ---- */

static void unary_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)ctx;
  ProtobufCMessage *m;
  rpc_status st;
  if (rpc_msg_unpack(msg, &fsps__v1__pull_request__descriptor, &m, &st)) {
    rpc_call_finish(call, NULL, st.code, st.msg);
    return;
  }
  Fsps__V1__PullRequest *req = (Fsps__V1__PullRequest *)m;
  Fsps__V1__PushReply reply = FSPS__V1__PUSH_REPLY__INIT;
  reply.version = req->layer + req->min_version;
  if (req->layer == 99)
    rpc_call_failf(call, FSPS_NOT_FOUND, "no layer %u", req->layer);
  else if (req->layer >= LOCAL_CODE)
    rpc_call_failf(call, (int)(req->layer - LOCAL_CODE), "local failure");
  else
    rpc_call_finish(call, &reply.base, FSPS_OK, NULL);
  protobuf_c_message_free_unpacked(m, NULL);
}

typedef struct {
  uint64_t next, total;
} stream_state;

static void send_next(rpc_call *call) {
  stream_state *s = rpc_call_user(call);
  if (s->next == s->total) {
    rpc_call_finish(call, NULL, FSPS_OK, NULL);
    return;
  }
  rpc_tensor_hdr h = {0};
  rpc_hdr_set(&h, 1, 7);
  rpc_hdr_set(&h, 3, s->next);
  /* Odd chunks carry their payload in the second payload field. */
  h.payload_field = s->next % 2 ? RPC_TENSOR_FIELD_LAST : 0;
  s->next++;
  rpc_call_send_tensor(call, &h, g_big, CHUNK_FLOATS * sizeof(float), NULL,
                       NULL);
}

static void stream_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)ctx;
  ProtobufCMessage *m;
  if (rpc_msg_unpack(msg, &fsps__v1__pull_request__descriptor, &m, NULL)) {
    rpc_call_finish(call, NULL, FSPS_INVALID_ARGUMENT, "bad request");
    return;
  }
  stream_state *s = calloc(1, sizeof *s);
  s->total = ((Fsps__V1__PullRequest *)m)->count;
  protobuf_c_message_free_unpacked(m, NULL);
  rpc_call_set_user(call, s);
  send_next(call);
}

static void stream_sent(rpc_call *call, bool ok, void *ctx) {
  (void)ctx;
  if (ok)
    send_next(call);
}

static void free_user(rpc_call *call, void *ctx) {
  (void)ctx;
  free(rpc_call_user(call));
}

typedef struct {
  double sum;
  uint64_t floats, msgs, last_offset;
  float *buf;
} sum_state;

static void sum_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)ctx;
  assert_null(msg);
  sum_state *s = calloc(1, sizeof *s);
  s->buf = malloc(CHUNK_FLOATS * sizeof(float));
  rpc_call_set_user(call, s);
}

static void sum_message(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)ctx;
  sum_state *s = rpc_call_user(call);
  if (msg == NULL) {
    Fsps__V1__PushReply reply = FSPS__V1__PUSH_REPLY__INIT;
    reply.version = s->floats;
    reply.applied = s->sum == (double)s->floats * 0.5;
    rpc_call_finish(call, &reply.base, FSPS_OK, NULL);
    return;
  }
  rpc_tensor_hdr h;
  size_t nbytes;
  rpc_status st;
  if (rpc_msg_tensor(msg, &h, &nbytes, &st) != FSPS_OK ||
      nbytes > CHUNK_FLOATS * sizeof(float) || h.v[4] != s->msgs) {
    rpc_call_failf(call, FSPS_INVALID_ARGUMENT, "bad chunk %llu",
                   (unsigned long long)s->msgs);
    return;
  }
  rpc_msg_copy_payload(msg, s->buf);
  for (size_t i = 0; i < nbytes / sizeof(float); i++)
    s->sum += s->buf[i];
  s->floats += nbytes / sizeof(float);
  s->msgs++;
}

static void sum_done(rpc_call *call, void *ctx) {
  (void)ctx;
  sum_state *s = rpc_call_user(call);
  if (s)
    free(s->buf);
  free(s);
}

static void park_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)call;
  (void)msg;
  (void)ctx; /* never answers: only the deadline or shutdown ends it */
}

static void park_cancel(rpc_call *call, void *ctx) {
  (void)call;
  (void)ctx;
  pthread_mutex_lock(&g_mu);
  g_cancelled++;
  pthread_mutex_unlock(&g_mu);
}

static const rpc_method methods[] = {
    {.path = "/t.T/Unary", .kind = RPC_UNARY, .on_start = unary_start},
    {.path = "/t.T/Stream",
     .kind = RPC_SERVER_STREAMING,
     .on_start = stream_start,
     .on_sent = stream_sent,
     .on_done = free_user},
    {.path = "/t.T/Sum",
     .kind = RPC_CLIENT_STREAMING,
     .on_start = sum_start,
     .on_message = sum_message,
     .on_done = sum_done},
    {.path = "/t.T/Park",
     .kind = RPC_SERVER_STREAMING,
     .on_start = park_start,
     .on_cancel = park_cancel},
};

/* ---- fixture ---- */

typedef struct {
  rpc_server *srv;
  rpc_channel *ch;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  rpc_status st;
  rpc_server_opts o = {.listen = "127.0.0.1:0",
                       .threads = 2,
                       .max_message_bytes = MAX_MSG_BYTES};
  f->srv = rpc_server_create(&o, methods, 4, &st);
  assert_non_null(f->srv);
  assert_int_equal(rpc_server_start(f->srv, &st), FSPS_OK);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", rpc_server_port(f->srv));
  f->ch = rpc_channel_create(target, MAX_MSG_BYTES, &st);
  assert_non_null(f->ch);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  rpc_channel_destroy(f->ch);
  rpc_server_shutdown(f->srv, 1000);
  rpc_server_destroy(f->srv);
  free(f);
  return 0;
}

/* ---- client-side helpers ---- */

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  rpc_status st;
  uint64_t msgs, bad, reply_version;
  bool reply_applied;
  uint64_t sent, total;
  float *data;
} waiter;

static void waiter_init(waiter *w) {
  memset(w, 0, sizeof *w);
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
}

static void waiter_wait(waiter *w) {
  pthread_mutex_lock(&w->mu);
  while (!w->done)
    pthread_cond_wait(&w->cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
}

/* Where rpc_msg_payload_spans has put the payload so far. */
typedef struct {
  uint8_t *at;
  size_t spans;
} span_copy;

static void take_span(void *arg, const void *bytes, size_t len) {
  span_copy *c = arg;
  memcpy(c->at, bytes, len);
  c->at += len;
  c->spans++;
}

static void on_message(rpc_stream *s, rpc_msg *msg, void *ctx) {
  (void)s;
  waiter *w = ctx;
  rpc_tensor_hdr h;
  size_t n;
  unsigned field = w->msgs % 2 ? RPC_TENSOR_FIELD_LAST : RPC_TENSOR_FIELD;
  if (rpc_msg_tensor(msg, &h, &n, NULL) != FSPS_OK ||
      n != CHUNK_FLOATS * sizeof(float) || h.v[1] != 7 || h.v[3] != w->msgs ||
      h.payload_field != field) {
    w->bad++;
    return;
  }
  float *buf = malloc(n), *spans = malloc(n);
  rpc_msg_copy_payload(msg, buf);
  span_copy c = {(uint8_t *)spans, 0};
  rpc_msg_payload_spans(msg, take_span, &c);
  if (memcmp(buf, g_big, n) != 0 || memcmp(spans, g_big, n) != 0 ||
      c.at != (uint8_t *)spans + n || c.spans == 0)
    w->bad++;
  free(buf);
  free(spans);
  w->msgs++;
}

static void on_done(rpc_stream *s, const rpc_status *st, rpc_msg *reply,
                    void *ctx) {
  (void)s;
  waiter *w = ctx;
  if (reply) {
    ProtobufCMessage *m;
    if (rpc_msg_unpack(reply, &fsps__v1__push_reply__descriptor, &m, NULL) ==
        FSPS_OK) {
      w->reply_version = ((Fsps__V1__PushReply *)m)->version;
      w->reply_applied = ((Fsps__V1__PushReply *)m)->applied;
      protobuf_c_message_free_unpacked(m, NULL);
    }
  }
  pthread_mutex_lock(&w->mu);
  w->st = *st;
  w->done = true;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* ---- tests ---- */

static void test_unary_roundtrip(void **state) {
  fixture *f = *state;
  Fsps__V1__PullRequest req = FSPS__V1__PULL_REQUEST__INIT;
  req.layer = 3;
  req.min_version = 40;
  ProtobufCMessage *reply;
  rpc_status st;
  int rc = rpc_unary(f->ch, "/t.T/Unary", &req.base,
                     &fsps__v1__push_reply__descriptor, &reply, 5000, &st);
  assert_int_equal(rc, FSPS_OK);
  assert_int_equal(((Fsps__V1__PushReply *)reply)->version, 43);
  protobuf_c_message_free_unpacked(reply, NULL);
}

static void test_unary_error_status(void **state) {
  fixture *f = *state;
  Fsps__V1__PullRequest req = FSPS__V1__PULL_REQUEST__INIT;
  req.layer = 99;
  ProtobufCMessage *reply;
  rpc_status st;
  int rc = rpc_unary(f->ch, "/t.T/Unary", &req.base,
                     &fsps__v1__push_reply__descriptor, &reply, 5000, &st);
  assert_int_equal(rc, FSPS_NOT_FOUND);
  assert_null(reply);
  assert_non_null(strstr(st.msg, "no layer 99"));
  assert_non_null(strstr(st.msg, "NOT_FOUND"));
}

/* A server's local failures, which have no wire code of their own, reach
 * the client as the nearest gRPC code; gRPC's own codes as they are. */
static void test_local_codes_on_the_wire(void **state) {
  fixture *f = *state;
  static const int sent_read[][2] = {{FSPS_NOMEM, FSPS_RESOURCE_EXHAUSTED},
                                     {FSPS_CORRUPT, FSPS_DATA_LOSS},
                                     {FSPS_IO, FSPS_INTERNAL},
                                     {FSPS_ABORTED, FSPS_ABORTED}};
  for (size_t i = 0; i < sizeof sent_read / sizeof sent_read[0]; i++) {
    Fsps__V1__PullRequest req = FSPS__V1__PULL_REQUEST__INIT;
    req.layer = LOCAL_CODE + (uint32_t)sent_read[i][0];
    ProtobufCMessage *reply;
    rpc_status st;
    int rc = rpc_unary(f->ch, "/t.T/Unary", &req.base,
                       &fsps__v1__push_reply__descriptor, &reply, 5000, &st);
    assert_int_equal(rc, sent_read[i][1]);
    assert_int_equal(st.code, sent_read[i][1]);
    assert_non_null(strstr(st.msg, fsps_err_name(sent_read[i][1])));
    assert_non_null(strstr(st.msg, "local failure"));
  }
}

static void test_unknown_method(void **state) {
  fixture *f = *state;
  Fsps__V1__PullRequest req = FSPS__V1__PULL_REQUEST__INIT;
  ProtobufCMessage *reply;
  rpc_status st;
  int rc = rpc_unary(f->ch, "/t.T/Nope", &req.base,
                     &fsps__v1__push_reply__descriptor, &reply, 5000, &st);
  assert_int_equal(rc, FSPS_UNIMPLEMENTED);
}

static void test_server_stream_big_chunks(void **state) {
  fixture *f = *state;
  waiter w;
  waiter_init(&w);
  Fsps__V1__PullRequest req = FSPS__V1__PULL_REQUEST__INIT;
  req.count = 5;
  rpc_stream_cbs cbs = {
      .on_message = on_message, .on_done = on_done, .ctx = &w};
  rpc_status st;
  rpc_stream *s = rpc_stream_start(f->ch, "/t.T/Stream", RPC_SERVER_STREAMING,
                                   &req.base, 10000, &cbs, &st);
  assert_non_null(s);
  waiter_wait(&w);
  assert_int_equal(w.st.code, FSPS_OK);
  assert_int_equal(w.msgs, 5);
  assert_int_equal(w.bad, 0);
}

static void push_next(rpc_stream *s, waiter *w) {
  if (w->sent == w->total) {
    rpc_stream_close_send(s);
    return;
  }
  rpc_tensor_hdr h = {0};
  rpc_hdr_set(&h, 4, w->sent);
  size_t n = w->sent == w->total - 1 ? 1000 : CHUNK_FLOATS;
  w->sent++;
  rpc_stream_send_tensor(s, &h, w->data, n * sizeof(float), NULL, NULL);
}

static void on_sent(rpc_stream *s, bool ok, void *ctx) {
  if (ok)
    push_next(s, ctx);
}

static void test_client_stream_sum(void **state) {
  fixture *f = *state;
  waiter w;
  waiter_init(&w);
  w.total = 3;
  w.data = malloc(CHUNK_FLOATS * sizeof(float));
  for (size_t i = 0; i < CHUNK_FLOATS; i++)
    w.data[i] = 0.5f;
  rpc_stream_cbs cbs = {.on_sent = on_sent, .on_done = on_done, .ctx = &w};
  rpc_status st;
  rpc_stream *s = rpc_stream_start(f->ch, "/t.T/Sum", RPC_CLIENT_STREAMING,
                                   NULL, 10000, &cbs, &st);
  assert_non_null(s);
  push_next(s, &w);
  waiter_wait(&w);
  assert_int_equal(w.st.code, FSPS_OK);
  assert_int_equal(w.reply_version, 2 * CHUNK_FLOATS + 1000);
  assert_true(w.reply_applied);
  free(w.data);
}

static void test_deadline_cancels_parked_call(void **state) {
  fixture *f = *state;
  waiter w;
  waiter_init(&w);
  Fsps__V1__PullRequest req = FSPS__V1__PULL_REQUEST__INIT;
  rpc_stream_cbs cbs = {.on_done = on_done, .ctx = &w};
  rpc_status st;
  pthread_mutex_lock(&g_mu);
  int before = g_cancelled;
  pthread_mutex_unlock(&g_mu);
  assert_non_null(rpc_stream_start(f->ch, "/t.T/Park", RPC_SERVER_STREAMING,
                                   &req.base, 200, &cbs, &st));
  waiter_wait(&w);
  assert_int_equal(w.st.code, FSPS_DEADLINE_EXCEEDED);
  for (int i = 0; i < 200; i++) { /* the server learns of it shortly */
    pthread_mutex_lock(&g_mu);
    int now = g_cancelled;
    pthread_mutex_unlock(&g_mu);
    if (now > before)
      return;
    usleep(10000);
  }
  fail_msg("server never saw the cancellation");
}

static void test_listen_on_bad_address(void **state) {
  (void)state;
  rpc_status st;
  rpc_server_opts o = {.listen = "256.1.1.1:1", .threads = 1};
  rpc_server *srv = rpc_server_create(&o, methods, 4, &st);
  assert_null(srv);
  assert_int_equal(st.code, FSPS_UNAVAILABLE);
  assert_non_null(strstr(st.msg, "256.1.1.1:1"));
}

static void test_unreachable_server(void **state) {
  (void)state;
  rpc_status st;
  rpc_channel *ch = rpc_channel_create("127.0.0.1:1", MAX_MSG_BYTES, &st);
  assert_non_null(ch);
  Fsps__V1__PullRequest req = FSPS__V1__PULL_REQUEST__INIT;
  ProtobufCMessage *reply;
  int rc = rpc_unary(ch, "/t.T/Unary", &req.base,
                     &fsps__v1__push_reply__descriptor, &reply, 2000, &st);
  assert_true(rc == FSPS_UNAVAILABLE || rc == FSPS_DEADLINE_EXCEEDED);
  assert_non_null(strstr(st.msg, "127.0.0.1:1"));
  rpc_channel_destroy(ch);
}

int main(void) {
  g_big = malloc(CHUNK_FLOATS * sizeof(float));
  for (size_t i = 0; i < CHUNK_FLOATS; i++)
    g_big[i] = (float)i * 0.25f;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_unary_roundtrip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unary_error_status, setup, teardown),
      cmocka_unit_test_setup_teardown(test_local_codes_on_the_wire, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_unknown_method, setup, teardown),
      cmocka_unit_test_setup_teardown(test_server_stream_big_chunks, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_client_stream_sum, setup, teardown),
      cmocka_unit_test_setup_teardown(test_deadline_cancels_parked_call, setup,
                                      teardown),
      cmocka_unit_test(test_listen_on_bad_address),
      cmocka_unit_test(test_unreachable_server),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  free(g_big);
  return rc;
}
