/* fuzz_push.c: libFuzzer target for fsps.v1.ParameterServer/Push — the
 * chunk stream's decoding and every check below it (layer, offset, size,
 * step, worker, NaN/Inf) in the real handlers and a real store, fresh each
 * run, holding the fixture model (fuzz.h).
 *
 * Input: a config byte (bits 0-2: fuzz_config flags, i.e. mode and NaN
 * policy; 3-4: optimizer; 5: with the big layer, whose 1 MiB buffers make
 * a run some 50 times slower; 6: the model's wire dtype is bf16; 7: chunk
 * records are framed in the other dtype than the model's, which the server
 * refuses), then up to 64 records, each a byte whose low two bits say what
 * it is:
 *   0  a raw message: u16 length, then that many bytes (the other six
 *      bits choose how it is cut into slices);
 *   1  a chunk framed as libfsps frames it: layer, step, worker, chunk
 *      index, offset delta, count delta (signed bytes) and a fill byte
 *      (bits 0-1: zeros, ones, a ramp, or a NaN/Inf at element bits 2-6;
 *      bit 7: Inf instead of NaN), as float32 or bf16 (config bits 6-7);
 *   2  the client closes its side: the push ends, a new one starts;
 *   3  the client gives up: the call is cancelled, a new one starts.
 * Checks: a refused, cancelled or duplicate push changes no layer's
 * version or record of who pushed; `applied` says whether a version moved;
 * an accepted new push (BSP, ASP) leaves a trace. */
#include <stdlib.h>
#include <string.h>

#include "fsps.pb-c.h"
#include "fuzz.h"

#define MAX_RECORDS 64
#define LAYERS 3

/* How chunk records are framed this run: as bf16 (data_bf16) or not. */
static bool g_bf16_chunks;

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

/* framed reads a chunk record's fields and sends the chunk. */
static bool framed(service *svc, rpc_call *c, fuzz_in *in) {
  fuzz_chunk ch;
  ch.layer = fuzz_u8(in);
  uint8_t step = fuzz_u8(in), worker = fuzz_u8(in);
  ch.chunk = fuzz_u8(in);
  ch.doff = (int8_t)fuzz_u8(in);
  ch.dcount = (int8_t)fuzz_u8(in);
  ch.how = fuzz_u8(in);
  ch.bf16 = g_bf16_chunks;
  rpc_tensor_hdr h = {0};
  rpc_hdr_set(&h, WIRE_PUSH_LAYER, ch.layer);
  rpc_hdr_set(&h, WIRE_PUSH_STEP, step);
  rpc_hdr_set(&h, WIRE_PUSH_WORKER, worker);
  return fuzz_chunk_send(svc, c, &ch, &h, WIRE_PUSH_OFFSET);
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
  rpc_call *c = fuzz_call_new(fuzz_method(svc, WIRE_PATH_PUSH), NULL, NULL);
  fuzz_call_start(c, NULL);
  fuzz_stream_records(svc, c, in, records, MAX_RECORDS, framed, NULL);
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
                      .optim = (fuzz_optim)((cfgbyte >> 3) & 3),
                      .bf16 = (cfgbyte & 0x40) != 0};
  g_bf16_chunks = model.bf16 != ((cfgbyte & 0x80) != 0);
  fuzz_quiet();
  fuzz_config(&c, cfgbyte & 7);
  fuzz_service_open(&svc, &c, &model);
  int records = 0;
  while (stream(&svc, &c, &in, &records))
    ;
  fuzz_service_close(&svc);
  return 0;
}
