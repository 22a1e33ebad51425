/* slice.c: one server's slice of a layer streamed from the caller's array
 * in chunks that point into it (no copy) — what a push's parts and
 * fsps_set_values's parts share. */
#include "client_int.h"

void client_slice_init(client_slice *sl, uint64_t off, uint64_t cnt,
                       pthread_mutex_t *mu, rpc_release_fn released,
                       void *arg) {
  *sl = (client_slice){
      .off = off, .cnt = cnt, .mu = mu, .released = released, .arg = arg};
  sl->nchunks = shard_num_chunks(cnt);
}

void client_slice_send(client_slice *sl, rpc_stream *s, rpc_tensor_hdr *h,
                       unsigned offset_field, const void *layer) {
  if (sl->next == sl->nchunks) {
    rpc_stream_close_send(s);
    return;
  }
  uint64_t o, len;
  shard_chunk(sl->cnt, sl->next, &o, &len);
  rpc_hdr_set(h, offset_field, sl->off + o);
  h->payload_field = wire_data_field(sl->dtype);
  sl->next++;
  pthread_mutex_lock(sl->mu);
  sl->releases++;
  pthread_mutex_unlock(sl->mu);
  size_t eb = wire_dtype_bytes(sl->dtype);
  const char *at = (const char *)layer + (sl->off + o) * eb;
  if (rpc_stream_send_tensor(s, h, at, len * eb, sl->released, sl->arg) !=
      FSPS_OK)
    rpc_stream_close_send(s); /* on_done follows with the reason */
}

void client_slice_reply(const client_slice *sl, const char *addr,
                        rpc_msg *reply, const ProtobufCMessageDescriptor *d,
                        rpc_status *st) {
  if (st->code != FSPS_OK)
    return;
  ProtobufCMessage *m = NULL;
  if (sl->next != sl->nchunks)
    rpc_status_set(st, FSPS_INTERNAL, "server %s: stream ended early", addr);
  else if (reply == NULL)
    rpc_status_set(st, FSPS_INTERNAL, "server %s: no %s", addr, d->short_name);
  else if (rpc_msg_unpack(reply, d, &m, NULL) != FSPS_OK)
    rpc_status_set(st, FSPS_DATA_LOSS, "server %s: malformed %s", addr,
                   d->short_name);
  if (m != NULL)
    protobuf_c_message_free_unpacked(m, NULL);
}
