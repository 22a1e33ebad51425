/* msg.c: gRPC's lifetime, protobuf-c <-> byte buffers, and the hand-framed
 * tensor messages whose payload is sent without a copy and received with
 * one. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <grpc/support/log.h>

#include "rpc_int.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "tensor payloads are little-endian float32 in host order");

/* References rpc objects hold on gRPC core, process-wide. */
static atomic_int g_rpc_refs;

#define SHUTDOWN_WAIT_MS 5000

void rpc_init(void) {
  atomic_fetch_add(&g_rpc_refs, 1);
  grpc_init();
}

/* gRPC core's channels and servers hold references of their own, and the
 * last of them is often dropped on one of gRPC's threads (a connection
 * attempt ending after grpc_channel_destroy). grpc_shutdown then hands the
 * clean-up to a detached thread and returns, and a process that exits
 * meanwhile leaves gRPC's timer and executor threads running and
 * unjoined. So when the last rpc object goes, wait (bounded, in case the
 * program holds gRPC references of its own) until gRPC core has finished
 * shutting down: grpc_is_initialized() blocks while its clean-up runs. */
void rpc_shutdown(void) {
  grpc_shutdown();
  if (atomic_fetch_sub(&g_rpc_refs, 1) != 1)
    return;
  for (int ms = 0; ms < SHUTDOWN_WAIT_MS && grpc_is_initialized(); ms++) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

static rpc_log_fn g_log;
static void *g_log_arg;

static void grpc_log_line(gpr_log_func_args *a) {
  rpc_log_level level = a->severity == GPR_LOG_SEVERITY_ERROR  ? RPC_LOG_ERROR
                        : a->severity == GPR_LOG_SEVERITY_INFO ? RPC_LOG_INFO
                                                               : RPC_LOG_DEBUG;
  char msg[1024];
  snprintf(msg, sizeof msg, "gRPC: %s", a->message);
  g_log(g_log_arg, level, msg);
}

void rpc_set_log(rpc_log_fn fn, void *arg) {
  g_log = fn;
  g_log_arg = arg;
  if (fn != NULL)
    gpr_set_log_function(grpc_log_line);
}

gpr_timespec rpc_deadline(int64_t timeout_ms) {
  if (timeout_ms <= 0)
    return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

/* Each stream's HTTP/2 receive window, fixed. gRPC's default starts at 64
 * KiB and lets the BDP probe grow it without bound: the first transfers of
 * a connection crawl, and as the window keeps doubling, more and more of a
 * layer sits in receive buffers that malloc takes from fresh memory, so
 * page faults (very slow on some VMs) recur for dozens of gathers and the
 * data no longer fits in cache. A fixed 4 MiB covers the bandwidth-delay
 * product of a data-centre link (10 Gb/s at 3 ms RTT) and bounds what each
 * stream buffers, for servers as for workers. */
#define RPC_STREAM_WINDOW_BYTES (4 << 20)

/* int_arg makes an integer channel argument; the cast drops const for
 * gRPC's field type (it only reads the key). */
static grpc_arg int_arg(const char *key, int value) {
  return (grpc_arg){
      .type = GRPC_ARG_INTEGER, .key = (char *)key, .value.integer = value};
}

grpc_channel_args *rpc_channel_args(rpc_args *a, int max_message_bytes) {
  size_t n = 0;
  /* Without the probe the lookahead below stays the window. */
  a->arg[n++] = int_arg(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  a->arg[n++] =
      int_arg(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, RPC_STREAM_WINDOW_BYTES);
  if (max_message_bytes > 0) {
    a->arg[n++] =
        int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, max_message_bytes);
    a->arg[n++] = int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, max_message_bytes);
  }
  a->args = (grpc_channel_args){n, a->arg};
  return &a->args;
}

void rpc_channel_args_name(rpc_args *a, const char *name) {
  a->arg[a->args.num_args++] =
      (grpc_arg){.type = GRPC_ARG_STRING,
                 .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                 .value.string = (char *)name}; /* gRPC copies, never writes */
}

/* ---- received messages ---- */

/* count_slices returns how many slices a reader over bb yields. */
static size_t count_slices(grpc_byte_buffer *bb) {
  grpc_byte_buffer_reader r;
  grpc_slice *s;
  size_t n = 0;
  if (!grpc_byte_buffer_reader_init(&r, bb))
    return 0;
  while (grpc_byte_buffer_reader_peek(&r, &s))
    n++;
  grpc_byte_buffer_reader_destroy(&r);
  return n;
}

int rpc_msg_open(rpc_msg *m, grpc_byte_buffer *bb) {
  memset(m, 0, sizeof *m);
  m->bb = bb;
  m->seg_ptr = m->inline_ptr;
  m->seg_len = m->inline_len;
  size_t n = count_slices(bb);
  if (n > RPC_MSG_INLINE_SEGS) {
    m->seg_ptr = malloc(n * sizeof *m->seg_ptr);
    m->seg_len = malloc(n * sizeof *m->seg_len);
    if (m->seg_ptr == NULL || m->seg_len == NULL) {
      free(m->seg_ptr);
      free(m->seg_len);
      return FSPS_RESOURCE_EXHAUSTED;
    }
  }
  /* Peeked slices stay valid while the reader (which may own a
   * decompressed copy) lives. */
  if (!grpc_byte_buffer_reader_init(&m->reader, bb)) {
    if (m->seg_ptr != m->inline_ptr) {
      free(m->seg_ptr);
      free(m->seg_len);
    }
    return FSPS_INTERNAL;
  }
  grpc_slice *s;
  while (m->nseg < n && grpc_byte_buffer_reader_peek(&m->reader, &s)) {
    m->seg_ptr[m->nseg] = GRPC_SLICE_START_PTR(*s);
    m->seg_len[m->nseg] = GRPC_SLICE_LENGTH(*s);
    m->size += m->seg_len[m->nseg];
    m->nseg++;
  }
  return FSPS_OK;
}

void rpc_msg_close(rpc_msg *m) {
  if (m->seg_ptr != m->inline_ptr) {
    free(m->seg_ptr);
    free(m->seg_len);
  }
  m->seg_ptr = m->inline_ptr;
  m->seg_len = m->inline_len;
  grpc_byte_buffer_reader_destroy(&m->reader);
}

size_t rpc_msg_size(const rpc_msg *m) {
  return m->size;
}

/* copy_from copies len bytes starting at (*seg, *off) into dst and leaves
 * (*seg, *off) just past them. */
static void copy_from(const rpc_msg *m, size_t *seg, size_t *off, void *dst,
                      size_t len) {
  uint8_t *d = dst;
  while (len > 0) {
    size_t take = m->seg_len[*seg] - *off;
    if (take > len)
      take = len;
    memcpy(d, m->seg_ptr[*seg] + *off, take);
    d += take;
    len -= take;
    *off += take;
    if (*off == m->seg_len[*seg]) {
      (*seg)++;
      *off = 0;
    }
  }
}

/* copy_range copies len bytes starting at (seg, off) into dst. */
static void copy_range(const rpc_msg *m, size_t seg, size_t off, void *dst,
                       size_t len) {
  copy_from(m, &seg, &off, dst, len);
}

int rpc_msg_unpack(const rpc_msg *m, const ProtobufCMessageDescriptor *desc,
                   ProtobufCMessage **out, rpc_status *st) {
  uint8_t stackbuf[4096] = {0};
  uint8_t *flat = stackbuf;
  if (m->size > sizeof stackbuf && (flat = malloc(m->size)) == NULL)
    return rpc_status_set(st, FSPS_RESOURCE_EXHAUSTED, "out of memory");
  if (m->size > 0)
    copy_range(m, 0, 0, flat, m->size);
  *out = protobuf_c_message_unpack(desc, NULL, m->size, flat);
  if (flat != stackbuf)
    free(flat);
  if (*out == NULL)
    return rpc_status_set(st, FSPS_INVALID_ARGUMENT,
                          "request is not a valid %s message (%zu bytes)",
                          desc->name, m->size);
  return FSPS_OK;
}

/* ---- tensor message parsing over segments ---- */

typedef struct {
  const rpc_msg *m;
  size_t seg, off, pos;
} cursor;

static bool cur_byte(cursor *c, uint8_t *b) {
  while (c->seg < c->m->nseg && c->off == c->m->seg_len[c->seg]) {
    c->seg++;
    c->off = 0;
  }
  if (c->seg == c->m->nseg)
    return false;
  *b = c->m->seg_ptr[c->seg][c->off++];
  c->pos++;
  return true;
}

static bool cur_varint(cursor *c, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    uint8_t b;
    if (!cur_byte(c, &b))
      return false;
    x |= (uint64_t)(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      *v = x;
      return true;
    }
  }
  return false;
}

/* cur_skip advances n bytes; false if the message is shorter. */
static bool cur_skip(cursor *c, uint64_t n) {
  if (n > c->m->size - c->pos)
    return false;
  c->pos += n;
  while (n > 0) {
    size_t left = c->m->seg_len[c->seg] - c->off;
    if (left > n) {
      c->off += n;
      return true;
    }
    n -= left;
    c->seg++;
    c->off = 0;
  }
  return true;
}

/* parse_field reads one field; returns false on malformed input. */
static bool parse_field(cursor *c, rpc_msg *m, rpc_tensor_hdr *h,
                        bool *seen_payload) {
  uint64_t key, v;
  if (!cur_varint(c, &key))
    return false;
  uint64_t field = key >> 3, wire = key & 7;
  if (field == 0)
    return false;
  /* The contract's fields have one wire type each; another is malformed
   * (never read as the field's default). Fields above 9 are unknown. */
  bool payload = field >= RPC_TENSOR_FIELD && field <= RPC_TENSOR_FIELD_LAST;
  if ((field <= RPC_TENSOR_MAX_VARINT && wire != 0) || (payload && wire != 2))
    return false;
  switch (wire) {
  case 0:
    if (!cur_varint(c, &v))
      return false;
    if (field <= RPC_TENSOR_MAX_VARINT)
      rpc_hdr_set(h, (unsigned)field, v);
    return true;
  case 1:
    return cur_skip(c, 8);
  case 5:
    return cur_skip(c, 4);
  case 2:
    if (!cur_varint(c, &v) || v > m->size - c->pos)
      return false;
    if (payload) {
      if (*seen_payload)
        return false;
      *seen_payload = true;
      h->payload_field = (unsigned)field;
      while (c->seg < m->nseg && c->off == m->seg_len[c->seg]) {
        c->seg++;
        c->off = 0;
      }
      m->pay_seg = c->seg;
      m->pay_off = c->off;
      m->pay_len = v;
    }
    return cur_skip(c, v);
  default:
    return false;
  }
}

int rpc_msg_tensor(rpc_msg *m, rpc_tensor_hdr *h, size_t *payload_bytes,
                   rpc_status *st) {
  memset(h, 0, sizeof *h);
  m->pay_len = 0;
  cursor c = {m, 0, 0, 0};
  bool seen = false;
  while (c.pos < m->size) {
    if (!parse_field(&c, m, h, &seen))
      return rpc_status_set(st, FSPS_INVALID_ARGUMENT,
                            "malformed tensor message: bad field at byte %zu "
                            "of %zu",
                            c.pos, m->size);
  }
  *payload_bytes = m->pay_len;
  return FSPS_OK;
}

void rpc_msg_copy_payload(const rpc_msg *m, void *dst) {
  if (m->pay_len > 0)
    copy_range(m, m->pay_seg, m->pay_off, dst, m->pay_len);
}

void rpc_msg_payload_spans(const rpc_msg *m, rpc_span_fn fn, void *arg) {
  size_t seg = m->pay_seg, off = m->pay_off;
  for (size_t left = m->pay_len; left > 0; seg++, off = 0) {
    size_t take = m->seg_len[seg] - off;
    if (take > left)
      take = left;
    if (take > 0)
      fn(arg, m->seg_ptr[seg] + off, take);
    left -= take;
  }
}

void rpc_msg_copy_payload_each(const rpc_msg *m, void *dst, rpc_piece_fn fn,
                               void *arg) {
  uint8_t *d = dst;
  size_t seg = m->pay_seg, off = m->pay_off;
  for (size_t done = 0; done < m->pay_len;) {
    size_t len = m->pay_len - done;
    if (len > RPC_PIECE_BYTES)
      len = RPC_PIECE_BYTES;
    copy_from(m, &seg, &off, d + done, len);
    fn(arg, d + done, len);
    done += len;
  }
}

/* ---- sending ---- */

void rpc_hdr_set(rpc_tensor_hdr *h, unsigned field, uint64_t value) {
  if (field == 0 || field > RPC_TENSOR_MAX_VARINT)
    return;
  h->v[field] = value;
  h->present |= 1u << field;
}

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

static void release_none(void *arg) {
  (void)arg;
}

grpc_byte_buffer *rpc_pack_tensor(const rpc_tensor_hdr *h, const void *data,
                                  size_t nbytes, rpc_release_fn release,
                                  void *arg) {
  uint8_t head[RPC_TENSOR_HDR_MAX];
  size_t n = 0;
  for (unsigned f = 1; f <= RPC_TENSOR_MAX_VARINT; f++) {
    if (h->present & (1u << f)) {
      head[n++] = (uint8_t)(f << 3);
      n += put_varint(head + n, h->v[f]);
    }
  }
  unsigned pf = h->payload_field ? h->payload_field : RPC_TENSOR_FIELD;
  head[n++] = (uint8_t)(pf << 3 | 2);
  n += put_varint(head + n, nbytes);
  grpc_slice slices[2];
  slices[0] = grpc_slice_from_copied_buffer((const char *)head, n);
  size_t ns = 1;
  if (nbytes > 0) {
    /* gRPC only reads the payload; the cast drops const for its API. */
    slices[1] = grpc_slice_new_with_user_data(
        (void *)data, nbytes, release ? release : release_none, arg);
    ns = 2;
  } else if (release) {
    release(arg);
  }
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(slices, ns);
  for (size_t i = 0; i < ns; i++)
    grpc_slice_unref(slices[i]);
  return bb;
}

grpc_byte_buffer *rpc_pack_message(const ProtobufCMessage *msg) {
  size_t len = protobuf_c_message_get_packed_size(msg);
  grpc_slice s = grpc_slice_malloc(len);
  protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}
