/* fake_call.c: a stand-in for rpc/server.c's calls, so the fuzz targets run
 * fsps-server's real method handlers without a network. It defines the
 * rpc_call_* functions the handlers use (rpc/server.c is then never linked:
 * a duplicate symbol would fail the link, not hide) and keeps rpc's rules:
 * one send at a time, nothing read after the call finished, on_cancel only
 * before it finished, on_done once the last reference is gone. Replies are
 * packed and sends framed with rpc's own code, then parsed back, so what a
 * handler sends is checked too. Single-threaded, except that a handler may
 * answer a unary call from the server's checkpoint thread (file work): the
 * call's references and its finishing are atomic for that, and
 * fuzz_call_wait waits for the answer. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "fuzz.h"

struct rpc_call {
  const rpc_method *m;
  atomic_int refs;
  atomic_bool finished;
  bool sending;
  int code;
  void *user;
  grpc_byte_buffer *send_bb; /* the send in flight */
  uint8_t *reply;
  size_t reply_len;
  fuzz_tensor_fn on_tensor;
  void *arg;
  int auth; /* rpc_call_set_auth */
};

rpc_call *fuzz_call_new(const rpc_method *m, fuzz_tensor_fn on_tensor,
                        void *arg) {
  rpc_call *c = calloc(1, sizeof *c);
  fuzz_check(c != NULL);
  c->m = m;
  c->refs = 1; /* the call's own, dropped by fuzz_call_end */
  c->code = -1;
  c->on_tensor = on_tensor;
  c->arg = arg;
  return c;
}

void fuzz_call_start(rpc_call *c, rpc_msg *msg) {
  c->m->on_start(c, msg, c->m->ctx);
  fuzz_call_pump(c);
}

bool fuzz_call_message(rpc_call *c, rpc_msg *msg) {
  if (c->finished)
    return false;
  c->m->on_message(c, msg, c->m->ctx);
  fuzz_call_pump(c);
  return true;
}

/* complete_send parses the message in flight back, as a client would read
 * it, then releases it (which releases the handler's payload). */
static void complete_send(rpc_call *c) {
  fuzz_msg fm = {.bb = c->send_bb};
  rpc_tensor_hdr h;
  size_t nbytes;
  rpc_status st;
  fuzz_check(rpc_msg_open(&fm.m, fm.bb) == FSPS_OK);
  fuzz_check(rpc_msg_tensor(&fm.m, &h, &nbytes, &st) == FSPS_OK);
  uint8_t *copy = malloc(nbytes ? nbytes : 1);
  fuzz_check(copy != NULL);
  rpc_msg_copy_payload(&fm.m, copy);
  if (c->on_tensor)
    c->on_tensor(c->arg, &h, copy, nbytes);
  free(copy);
  fuzz_msg_close(&fm);
  c->send_bb = NULL;
  c->sending = false;
}

bool fuzz_call_step(rpc_call *c) {
  if (!c->sending)
    return false;
  complete_send(c);
  if (c->m->on_sent)
    c->m->on_sent(c, true, c->m->ctx);
  return true;
}

void fuzz_call_pump(rpc_call *c) {
  while (fuzz_call_step(c))
    ;
}

bool fuzz_call_finished(const rpc_call *c) {
  return atomic_load(&c->finished);
}

int fuzz_call_code(const rpc_call *c) {
  return c->code;
}

const uint8_t *fuzz_call_reply(const rpc_call *c, size_t *len) {
  *len = c->reply_len;
  return c->reply;
}

int fuzz_call_end(rpc_call *c) {
  fuzz_call_pump(c);
  if (!c->finished) {
    if (c->m->on_cancel)
      c->m->on_cancel(c, c->m->ctx);
    rpc_call_finish(c, NULL, FSPS_CANCELLED, "call cancelled");
  }
  int code = c->code;
  rpc_call_unref(c);
  return code;
}

/* ---- the rpc.h call API the handlers use ---- */

void rpc_call_ref(rpc_call *call) {
  atomic_fetch_add(&call->refs, 1);
}

void rpc_call_unref(rpc_call *call) {
  int was = atomic_fetch_sub(&call->refs, 1);
  fuzz_check(was > 0);
  if (was > 1)
    return;
  fuzz_check(call->finished && !call->sending);
  if (call->m->on_done)
    call->m->on_done(call, call->m->ctx);
  free(call->reply);
  free(call);
}

void rpc_call_set_user(rpc_call *call, void *user) {
  call->user = user;
}

void *rpc_call_user(const rpc_call *call) {
  return call->user;
}

int64_t rpc_call_deadline_ms(const rpc_call *call) {
  (void)call;
  return INT64_MAX;
}

bool rpc_call_metadata(const rpc_call *call, const char *key, char *out,
                       size_t outlen) {
  (void)call;
  (void)key;
  (void)out;
  (void)outlen;
  return false;
}

/* The fuzzed handlers run as on a server without --auth-tokens: no
 * metadata, role 0 (open). */
size_t rpc_call_metadata_raw(const rpc_call *call, const char *key,
                             const char **val, size_t *len) {
  (void)call;
  (void)key;
  (void)val;
  (void)len;
  return 0;
}

void rpc_call_set_auth(rpc_call *call, int auth) {
  call->auth = auth;
}

int rpc_call_auth(const rpc_call *call) {
  return call->auth;
}

void rpc_call_peer(const rpc_call *call, char *out, size_t outlen) {
  (void)call;
  snprintf(out, outlen, "fuzz");
}

int rpc_call_send_tensor(rpc_call *call, const rpc_tensor_hdr *h,
                         const void *data, size_t nbytes,
                         rpc_release_fn release, void *arg) {
  if (call->finished || call->sending) {
    if (release)
      release(arg);
    return call->finished ? FSPS_CANCELLED : FSPS_INTERNAL;
  }
  call->send_bb = rpc_pack_tensor(h, data, nbytes, release, arg);
  fuzz_check(call->send_bb != NULL);
  call->sending = true;
  return FSPS_OK;
}

/* pack_reply packs reply as rpc would send it and checks that it decodes. */
static void pack_reply(rpc_call *call, const ProtobufCMessage *reply) {
  size_t len = protobuf_c_message_get_packed_size(reply);
  call->reply = malloc(len ? len : 1);
  fuzz_check(call->reply != NULL);
  call->reply_len = protobuf_c_message_pack(reply, call->reply);
  fuzz_check(call->reply_len == len);
  ProtobufCMessage *back =
      protobuf_c_message_unpack(reply->descriptor, NULL, len, call->reply);
  fuzz_check(back != NULL);
  protobuf_c_message_free_unpacked(back, NULL);
}

void rpc_call_finish(rpc_call *call, const ProtobufCMessage *reply, int code,
                     const char *details) {
  if (call->finished)
    return;
  fuzz_check(strcmp(fsps_err_name(code), "?") != 0); /* an fsps_err */
  fuzz_check(code == FSPS_OK || (details != NULL && details[0] != '\0'));
  call->code = rpc_from_grpc(rpc_to_grpc(code)); /* what a client reads */
  if (reply && code == FSPS_OK && !call->sending)
    pack_reply(call, reply);
  atomic_store(&call->finished, true); /* last: fuzz_call_wait reads it */
}

void fuzz_call_wait(rpc_call *c) {
  struct timespec ts = {0, 100000};
  for (int i = 0; i < 300000 && !atomic_load(&c->finished); i++)
    nanosleep(&ts, NULL);
  fuzz_check(atomic_load(&c->finished)); /* a unary handler always answers */
}

void rpc_call_failf(rpc_call *call, int code, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  rpc_call_finish(call, NULL, code, buf);
}
