/* fuzz_values.c: libFuzzer target for fsps.v1.ParameterServer/SetValues —
 * the chunk stream's decoding and every check below it (layer, offset,
 * size, epoch, NaN/Inf, init kind, training begun, other values) in the
 * real handlers and a real store, fresh each run, holding the fixture
 * model with every tensor of init client (fuzz.h), so each layer awaits
 * its values.
 *
 * Input: a config byte (bits 0-2: fuzz_config flags, i.e. mode and NaN
 * policy, which must not matter; 3-4: optimizer; 5: with the big layer,
 * two chunks a slice; 6: layer 0 drawn by the server), then up to 64
 * records, each a byte whose low two bits say what it is:
 *   0  a raw message: u16 length, then that many bytes (the other six
 *      bits choose how it is cut into slices);
 *   1  a chunk framed as libfsps frames it: layer, chunk index, offset
 *      delta, count delta (signed bytes), epoch and a fill byte (bits 0-1:
 *      zeros, ones, a ramp, or a NaN/Inf at element bits 2-6; bit 7: Inf);
 *   2  the client closes its side: the stream ends, a new one starts;
 *      bits 2 and 3 then push step 0 of layer bits 4-5 (3: layer 0) from
 *      worker 0 and 1;
 *   3  the client gives up: the call is cancelled, a new one starts.
 * Checks: a refused or cancelled stream, or a duplicate, changes no layer
 * (values, version, whether it awaits them, who pushed); an accepted one
 * gives exactly one layer its values; ValuesReply counts the layers still
 * awaiting; a layer awaiting values never answers a pull and refuses every
 * push, one holding them answers and takes them. */
#include <stdlib.h>
#include <string.h>

#include "fsps.pb-c.h"
#include "fuzz.h"

#define MAX_RECORDS 64
#define LAYERS 3

typedef struct {
  uint32_t layers;
  bool awaiting[LAYERS];
  uint64_t version[LAYERS], hash[LAYERS];
  bool pushed[LAYERS][FUZZ_WORKERS];
} state;

/* The most floats a layer here holds: the big layer's slice (fuzz.h)
 * with Adam's two state vectors. */
#define MOST_FLOATS (3 * 262160)

/* A copy of a layer's floats, kept between runs: a fresh 3 MiB buffer for
 * every snapshot would page-fault in each time. */
static uint64_t g_copy[MOST_FLOATS / 2 + 1];

/* hash_layer returns a hash of L's parameters and state: FNV-1a over
 * 64-bit words (coverage instrumentation makes each loop turn dear). */
static uint64_t hash_layer(store_layer *L) {
  size_t n = store_layer_floats(L);
  fuzz_check(n <= MOST_FLOATS);
  g_copy[n / 2] = 0; /* an odd count's last word: its upper half */
  store_copy_now(L, (float *)g_copy);
  uint64_t h = 0xcbf29ce484222325u;
  for (size_t i = 0; i < (n + 1) / 2; i++)
    h = (h ^ g_copy[i]) * 0x100000001b3u;
  return h;
}

static void snapshot(service *svc, state *s) {
  memset(s, 0, sizeof *s);
  s->layers = store_num_layers(svc->st);
  for (uint32_t l = 0; l < s->layers; l++) {
    store_layer *L = store_layer_get(svc->st, l);
    store_layer_info in;
    store_info(L, &in);
    s->awaiting[l] = in.awaiting;
    s->version[l] = in.version;
    s->hash[l] = hash_layer(L);
    bool absent[FUZZ_WORKERS];
    store_pushed(L, s->pushed[l], absent);
  }
}

static bool same(const state *a, const state *b) {
  return memcmp(a, b, sizeof *a) == 0;
}

/* given counts the layers that got their values between a and b, checking
 * that nothing else about them changed. */
static int given(const state *a, const state *b) {
  int n = 0;
  for (uint32_t l = 0; l < a->layers; l++) {
    if (a->awaiting[l] == b->awaiting[l]) {
      fuzz_check(a->hash[l] == b->hash[l]);
      continue;
    }
    fuzz_check(a->awaiting[l] && !b->awaiting[l]);
    fuzz_check(a->version[l] == 0 && b->version[l] == 0);
    n++;
  }
  return n;
}

/* framed reads a chunk record's fields and sends the chunk. */
static bool framed(service *svc, rpc_call *c, fuzz_in *in) {
  fuzz_chunk ch = {.bf16 = false}; /* values are always float32 */
  ch.layer = fuzz_u8(in);
  ch.chunk = fuzz_u8(in);
  ch.doff = (int8_t)fuzz_u8(in);
  ch.dcount = (int8_t)fuzz_u8(in);
  uint8_t epoch = fuzz_u8(in);
  ch.how = fuzz_u8(in);
  rpc_tensor_hdr h = {0};
  rpc_hdr_set(&h, WIRE_VALUES_LAYER, ch.layer);
  rpc_hdr_set(&h, WIRE_VALUES_EPOCH, epoch);
  return fuzz_chunk_send(svc, c, &ch, &h, WIRE_VALUES_OFFSET);
}

/* check_end checks a stream that ended with its call's code. */
static void check_end(rpc_call *c, const state *before, const state *after) {
  int code = fuzz_call_code(c);
  if (code != FSPS_OK) {
    fuzz_check(same(before, after));
    return;
  }
  size_t len;
  const uint8_t *bytes = fuzz_call_reply(c, &len);
  Fsps__V1__ValuesReply *r = fsps__v1__values_reply__unpack(NULL, len, bytes);
  fuzz_check(r != NULL);
  fuzz_check(given(before, after) == (r->duplicate ? 0 : 1));
  uint32_t awaiting = 0;
  for (uint32_t l = 0; l < after->layers; l++)
    awaiting += after->awaiting[l];
  fuzz_check(r->layers_awaiting == awaiting);
  fsps__v1__values_reply__free_unpacked(r, NULL);
}

static void on_ready(store_waiter *w, fbuf *params, uint64_t version) {
  (void)w, (void)params, (void)version;
  fuzz_fail(__FILE__, __LINE__, "a pull parked here was answered");
}

/* check_pulls asks every layer with a slice here for version 0: parked
 * while it awaits its values, answered at once when it holds them. */
static void check_pulls(service *svc) {
  for (uint32_t l = 0; l < store_num_layers(svc->st); l++) {
    store_layer *L = store_layer_get(svc->st, l);
    store_layer_info in;
    store_info(L, &in);
    store_waiter w = {.ready = on_ready};
    fbuf *params = NULL;
    uint64_t version;
    int rc = store_pull(L, &w, &params, &version);
    if (rc == STORE_PULL_READY)
      store_fbuf_unref(params);
    else if (rc == STORE_PULL_PARKED)
      fuzz_check(store_unpark(L, &w));
    fuzz_check(rc == (in.awaiting ? STORE_PULL_PARKED : STORE_PULL_READY));
  }
}

/* pushes pushes step 0 of a layer as record rec asks: refused while the
 * layer awaits its values, taken (or a duplicate) once it holds them. */
static void pushes(service *svc, unsigned rec) {
  uint32_t layer = (rec >> 4) & 3;
  layer = layer == 3 ? 0 : layer;
  store_layer *L = store_layer_get(svc->st, layer);
  if (L == NULL) /* the big layer, not declared */
    return;
  store_layer_info in;
  store_info(L, &in);
  for (uint32_t w = 0; w < FUZZ_WORKERS; w++) {
    if (!(rec & (4u << w)) || in.count == 0)
      continue;
    int code = fuzz_push_step(svc, layer, 0, w, 0.25f);
    fuzz_check(code == (in.awaiting ? FSPS_FAILED_PRECONDITION : FSPS_OK));
  }
}

/* stream runs one SetValues call over records until one ends it; false
 * once the input is used up. */
static bool stream(service *svc, fuzz_in *in, int *records) {
  state before, after;
  snapshot(svc, &before);
  rpc_call *c =
      fuzz_call_new(fuzz_method(svc, WIRE_PATH_SET_VALUES), NULL, NULL);
  fuzz_call_start(c, NULL);
  unsigned rec;
  unsigned op =
      fuzz_stream_records(svc, c, in, records, MAX_RECORDS, framed, &rec);
  bool finished = fuzz_call_finished(c);
  snapshot(svc, &after);
  if (finished)
    check_end(c, &before, &after);
  int code = fuzz_call_end(c);
  snapshot(svc, &after);
  fuzz_check(finished || (code == FSPS_CANCELLED && same(&before, &after)));
  check_pulls(svc);
  if (op == 2)
    pushes(svc, rec);
  return in->n > 0 && *records < MAX_RECORDS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  unsigned cfgbyte = fuzz_u8(&in);
  server_config c;
  service svc;
  fuzz_model model = {.big = (cfgbyte & 0x20) != 0,
                      .optim = (fuzz_optim)((cfgbyte >> 3) & 3),
                      .client = true,
                      .drawn_fc1 = (cfgbyte & 0x40) != 0};
  fuzz_quiet();
  fuzz_config(&c, cfgbyte & 7);
  fuzz_service_open(&svc, &c, &model);
  int records = 0;
  while (stream(&svc, &in, &records))
    ;
  fuzz_service_close(&svc);
  return 0;
}
