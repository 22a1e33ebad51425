/* fuzz_msg.c: libFuzzer target for rpc/msg.c's parsing of received
 * payloads: rpc_msg_open over a byte buffer of many slices, the hand-
 * written tensor message parser (a payload in field 8 or 9), both payload
 * copies, the payload's spans, and rpc_msg_unpack. Input: one byte choosing
 * how the message is cut into slices, then the message. Checks: the copies
 * and the spans agree; where protobuf-c also reads the bytes as a
 * PushChunk, it reads the same fields and the payload in the same field
 * (data or data_bf16); rpc_msg_unpack agrees with protobuf-c on the flat
 * bytes; a parsed header and payload framed again by rpc_pack_tensor parse
 * back the same. */
#include <stdlib.h>
#include <string.h>

#include "fsps.pb-c.h"
#include "fuzz.h"

typedef struct {
  const uint8_t *want; /* the payload as rpc_msg_copy_payload copied it */
  size_t done;
} pieces;

/* on_span checks that the payload's spans come in order, none empty,
 * matching the copy. */
static void on_span(void *arg, const void *bytes, size_t len) {
  pieces *p = arg;
  fuzz_check(len > 0 && memcmp(bytes, p->want + p->done, len) == 0);
  p->done += len;
}

/* on_piece checks that pieces come in order, bounded, matching the copy. */
static void on_piece(void *arg, void *piece, size_t len) {
  pieces *p = arg;
  fuzz_check(len > 0 && len <= RPC_PIECE_BYTES);
  fuzz_check(memcmp(piece, p->want + p->done, len) == 0);
  p->done += len;
}

/* same_as_protobuf compares the tensor parse with protobuf-c's PushChunk. */
static void same_as_protobuf(const uint8_t *in, size_t n,
                             const rpc_tensor_hdr *h, const uint8_t *payload,
                             size_t pay) {
  Fsps__V1__PushChunk *c = fsps__v1__push_chunk__unpack(NULL, n, in);
  if (c == NULL)
    return;
  fuzz_check(c->layer == (uint32_t)h->v[WIRE_PUSH_LAYER] &&
             c->step == h->v[WIRE_PUSH_STEP]);
  fuzz_check(c->worker == (uint32_t)h->v[WIRE_PUSH_WORKER] &&
             c->offset == h->v[WIRE_PUSH_OFFSET]);
  fuzz_check(c->epoch == h->v[WIRE_PUSH_EPOCH]);
  bool bf16 = h->payload_field == WIRE_PUSH_DATA_BF16;
  ProtobufCBinaryData *got = bf16 ? &c->data_bf16 : &c->data;
  fuzz_check(got->len == pay && (bf16 ? c->data.len : c->data_bf16.len) == 0);
  fuzz_check(pay == 0 || memcmp(got->data, payload, pay) == 0);
  fsps__v1__push_chunk__free_unpacked(c, NULL);
}

/* round_trip frames h and payload again and parses them back. */
static void round_trip(const rpc_tensor_hdr *h, const uint8_t *payload,
                       size_t pay) {
  fuzz_msg fm;
  rpc_tensor_hdr back;
  size_t pay2;
  rpc_status st;
  fuzz_check(fuzz_msg_tensor(&fm, h, payload, pay) == FSPS_OK);
  fuzz_check(rpc_msg_tensor(&fm.m, &back, &pay2, &st) == FSPS_OK);
  fuzz_check(pay2 == pay && back.present == h->present);
  fuzz_check(back.payload_field ==
             (h->payload_field ? h->payload_field : RPC_TENSOR_FIELD));
  for (unsigned f = 1; f <= RPC_TENSOR_MAX_VARINT; f++)
    fuzz_check(back.v[f] == h->v[f]);
  uint8_t *copy = malloc(pay ? pay : 1);
  fuzz_check(copy != NULL);
  rpc_msg_copy_payload(&fm.m, copy);
  fuzz_check(pay == 0 || memcmp(copy, payload, pay) == 0);
  free(copy);
  fuzz_msg_close(&fm);
}

static void tensor(fuzz_msg *fm, const uint8_t *in, size_t n) {
  rpc_tensor_hdr h;
  size_t pay;
  rpc_status st;
  if (rpc_msg_tensor(&fm->m, &h, &pay, &st) != FSPS_OK) {
    fuzz_check(st.code == FSPS_INVALID_ARGUMENT && st.msg[0] != '\0');
    return;
  }
  fuzz_check(pay <= n);
  uint8_t *a = malloc(pay ? pay : 1), *b = malloc(pay ? pay : 1);
  fuzz_check(a != NULL && b != NULL);
  rpc_msg_copy_payload(&fm->m, a);
  fuzz_check((pay == 0) == (h.payload_field == 0) || pay == 0);
  fuzz_check(h.payload_field == 0 ||
             (h.payload_field >= RPC_TENSOR_FIELD &&
              h.payload_field <= RPC_TENSOR_FIELD_LAST));
  pieces p = {a, 0}, s = {a, 0};
  rpc_msg_copy_payload_each(&fm->m, b, on_piece, &p);
  fuzz_check(p.done == pay && (pay == 0 || memcmp(a, b, pay) == 0));
  rpc_msg_payload_spans(&fm->m, on_span, &s);
  fuzz_check(s.done == pay);
  same_as_protobuf(in, n, &h, a, pay);
  round_trip(&h, a, pay);
  free(a);
  free(b);
}

/* unpack checks rpc_msg_unpack against protobuf-c on the flat bytes. */
static void unpack(fuzz_msg *fm, const uint8_t *in, size_t n) {
  ProtobufCMessage *m = NULL;
  rpc_status st;
  int rc = rpc_msg_unpack(&fm->m, &fsps__v1__pull_request__descriptor, &m, &st);
  Fsps__V1__PullRequest *flat = fsps__v1__pull_request__unpack(NULL, n, in);
  fuzz_check((rc == FSPS_OK) == (flat != NULL));
  if (rc != FSPS_OK) {
    fuzz_check(rc == FSPS_INVALID_ARGUMENT && st.msg[0] != '\0');
    return;
  }
  Fsps__V1__PullRequest *r = (Fsps__V1__PullRequest *)m;
  fuzz_check(r->layer == flat->layer && r->min_version == flat->min_version);
  fuzz_check(r->offset == flat->offset && r->count == flat->count);
  protobuf_c_message_free_unpacked(m, NULL);
  fsps__v1__pull_request__free_unpacked(flat, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  unsigned split = fuzz_u8(&in);
  fuzz_msg fm;
  if (fuzz_msg_bytes(&fm, in.p, in.n, split) != FSPS_OK)
    return 0;
  fuzz_check(rpc_msg_size(&fm.m) == in.n);
  tensor(&fm, in.p, in.n);
  unpack(&fm, in.p, in.n);
  fuzz_msg_close(&fm);
  return 0;
}
