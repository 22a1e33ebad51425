/* fuzz_push.c: libFuzzer target for fsps.v1.ParameterServer/Push — the
 * chunk stream's decoding and every check below it (layer, offset, size,
 * step, worker, NaN/Inf) in the real handlers and a real store, fresh each
 * run, holding the fixture model (fuzz.h).
 *
 * Input: a config byte (bits 0-2: fuzz_config flags, i.e. mode and NaN
 * policy; 3-4: optimizer; 5: with the big layer, whose 1 MiB buffers make
 * a run some 50 times slower), then up to 64 records, each a byte whose low
 * two bits say what it is:
 *   0  a raw message: u16 length, then that many bytes (the other six
 *      bits choose how it is cut into slices);
 *   1  a chunk framed as libfsps frames it: layer, step, worker, chunk
 *      index, offset delta, count delta (signed bytes) and a fill byte
 *      (bits 0-1: zeros, ones, a ramp, or a NaN/Inf at element bits 2-6;
 *      bit 7: Inf instead of NaN);
 *   2  the client closes its side: the push ends, a new one starts;
 *   3  the client gives up: the call is cancelled, a new one starts.
 * Checks: a refused, cancelled or duplicate push changes no layer's
 * version or record of who pushed; `applied` says whether a version moved;
 * an accepted new push (BSP, ASP) leaves a trace. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fsps.pb-c.h"
#include "fuzz.h"

#define MAX_RECORDS 64
#define LAYERS 3

typedef struct {
  uint32_t layers;
  uint64_t version[LAYERS];
  bool pushed[LAYERS][FUZZ_WORKERS];
} state;

static void snapshot(service *svc, state *s) {
  memset(s, 0, sizeof *s);
  s->layers = store_num_layers(svc->st);
  for (uint32_t l = 0; l < s->layers; l++) {
    store_layer *L = store_layer_get(svc->st, l);
    store_layer_info in;
    store_info(L, &in);
    s->version[l] = in.version;
    bool absent[FUZZ_WORKERS];
    store_pushed(L, s->pushed[l], absent);
  }
}

/* moved returns 0 if nothing changed, 1 if only who pushed, 2 if a
 * version moved. */
static int moved(const state *a, const state *b) {
  for (uint32_t l = 0; l < LAYERS; l++)
    if (a->version[l] != b->version[l])
      return 2;
  return memcmp(a->pushed, b->pushed, sizeof a->pushed) != 0;
}

static float g_payload[SHARD_CHUNK_ELEMS + 128];

static void fill(float *d, uint64_t n, unsigned how) {
  for (uint64_t i = 0; i < n; i++)
    d[i] = (how & 3) == 1 ? 1.0f : (how & 3) == 2 ? (float)i * 1e-3f : 0.0f;
  uint64_t at = (how >> 2) & 31;
  if ((how & 3) == 3 && at < n)
    d[at] = how & 0x80 ? INFINITY : NAN;
}

/* framed sends a chunk built from the record's fields. */
static bool framed(service *svc, rpc_call *c, fuzz_in *in) {
  uint8_t layer = fuzz_u8(in), step = fuzz_u8(in), worker = fuzz_u8(in);
  uint8_t chunk = fuzz_u8(in);
  int8_t doff = (int8_t)fuzz_u8(in), dcount = (int8_t)fuzz_u8(in);
  unsigned how = fuzz_u8(in);
  store_layer *L = store_layer_get(svc->st, layer);
  store_layer_info info = {0};
  if (L)
    store_info(L, &info);
  uint64_t o, len;
  shard_chunk(info.count, chunk, &o, &len);
  int64_t count = (int64_t)len + dcount;
  count = count < 0 ? 0 : count;
  fill(g_payload, (uint64_t)count, how);
  rpc_tensor_hdr h = {0};
  rpc_hdr_set(&h, WIRE_PUSH_LAYER, layer);
  rpc_hdr_set(&h, WIRE_PUSH_STEP, step);
  rpc_hdr_set(&h, WIRE_PUSH_WORKER, worker);
  rpc_hdr_set(&h, WIRE_PUSH_OFFSET,
              info.offset + chunk * (uint64_t)SHARD_CHUNK_ELEMS + doff);
  fuzz_msg fm;
  fuzz_check(fuzz_msg_tensor(&fm, &h, g_payload,
                             (size_t)count * sizeof(float)) == FSPS_OK);
  bool delivered = fuzz_call_message(c, &fm.m);
  fuzz_msg_close(&fm);
  return delivered;
}

static bool raw(rpc_call *c, fuzz_in *in, unsigned split) {
  const uint8_t *p;
  size_t n = fuzz_bytes(in, fuzz_u16(in), &p);
  fuzz_msg fm;
  if (fuzz_msg_bytes(&fm, p, n, split) != FSPS_OK)
    return false;
  bool delivered = fuzz_call_message(c, &fm.m);
  fuzz_msg_close(&fm);
  return delivered;
}

/* check_end checks a push that ended with code against the store. */
static void check_end(rpc_call *c, const state *before, const state *after,
                      const server_config *cfg) {
  int code = fuzz_call_code(c), change = moved(before, after);
  if (code != FSPS_OK) {
    fuzz_check(change == 0);
    return;
  }
  size_t len;
  const uint8_t *bytes = fuzz_call_reply(c, &len);
  Fsps__V1__PushReply *r = fsps__v1__push_reply__unpack(NULL, len, bytes);
  fuzz_check(r != NULL);
  fuzz_check(r->applied == (change == 2));
  if (r->duplicate)
    fuzz_check(change == 0);
  else if (cfg->mode != MODE_SSP)
    fuzz_check(change != 0);
  fsps__v1__push_reply__free_unpacked(r, NULL);
}

/* stream runs one push call over records until one ends it; false once
 * the input is used up. */
static bool stream(service *svc, const server_config *cfg, fuzz_in *in,
                   int *records) {
  state before, after;
  snapshot(svc, &before);
  rpc_call *c = fuzz_call_new(fuzz_method(svc, WIRE_PATH_PUSH),
                              NULL, NULL);
  fuzz_call_start(c, NULL);
  unsigned op = 2;
  while (in->n > 0 && (*records)++ < MAX_RECORDS) {
    unsigned rec = fuzz_u8(in);
    if ((op = rec & 3) >= 2)
      break;
    if (op == 0)
      raw(c, in, rec >> 2);
    else
      framed(svc, c, in);
  }
  if (op != 3)
    fuzz_call_message(c, NULL);
  bool finished = fuzz_call_finished(c);
  snapshot(svc, &after);
  if (finished)
    check_end(c, &before, &after, cfg);
  int code = fuzz_call_end(c);
  if (!finished) { /* cancelled: what it staged must be gone, unused */
    snapshot(svc, &after);
    fuzz_check(code == FSPS_CANCELLED && moved(&before, &after) == 0);
  }
  return in->n > 0 && *records < MAX_RECORDS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  unsigned cfgbyte = fuzz_u8(&in);
  server_config c;
  service svc;
  fuzz_model model = {.big = (cfgbyte & 0x20) != 0,
                      .optim = (fuzz_optim)((cfgbyte >> 3) & 3)};
  fuzz_quiet();
  fuzz_config(&c, cfgbyte & 7);
  fuzz_service_open(&svc, &c, &model);
  int records = 0;
  while (stream(&svc, &c, &in, &records))
    ;
  fuzz_service_close(&svc);
  return 0;
}
