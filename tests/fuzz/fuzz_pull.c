/* fuzz_pull.c: libFuzzer target for fsps.v1.ParameterServer/Pull on a
 * fresh store each run holding the fixture model (BSP, plain SGD). Input:
 * one control byte (bits 0-3: how the request is cut into slices; 4: the
 * model's wire dtype is bf16; 5: with the big layer, whose 1 MiB buffers
 * make a run some 50 times slower; 6-7: how many steps the workers then
 * push, to wake a pull parked on min_version), then the request. Checks:
 * the status is the one the proto's contract calls for; an answer's chunks
 * tile the requested range in order, at most 262144 elements each, all at
 * one version >= min_version, in the model's payload field, and carry the
 * parameters of that version (as bf16, for a bf16 model: the float32 ones
 * rounded) even when a step is applied between two chunks. */
#include <stdlib.h>
#include <string.h>

#include "fsps.pb-c.h"
#include "fuzz.h"

typedef struct {
  store_layer *L;
  uint32_t layer;
  uint64_t lo, next, end, min_version;
  float *expect; /* the layer when the first chunk arrived */
  uint64_t version;
  shard_wire_dtype dtype; /* the model's */
} watch;

/* same_payload checks a chunk's payload (n elements) against the
 * parameters expected at element `at` of the slice. */
static void same_payload(const watch *w, const void *payload, uint64_t at,
                         uint64_t n) {
  if (w->dtype != SHARD_WIRE_BF16) {
    fuzz_check(memcmp(payload, w->expect + at, n * sizeof(float)) == 0);
    return;
  }
  uint16_t *want = malloc(n * sizeof *want);
  fuzz_check(want != NULL);
  wire_bf16_encode(want, w->expect + at, n);
  fuzz_check(memcmp(payload, want, n * sizeof *want) == 0);
  free(want);
}

static void on_chunk(void *arg, const rpc_tensor_hdr *h, const void *payload,
                     size_t nbytes) {
  watch *w = arg;
  size_t eb = wire_dtype_bytes(w->dtype);
  uint64_t n = nbytes / eb;
  if (w->expect == NULL) {
    w->expect = malloc(store_layer_floats(w->L) * sizeof(float) + 1);
    fuzz_check(w->expect != NULL);
    w->version = store_copy_now(w->L, w->expect);
  }
  fuzz_check(h->v[WIRE_PULL_LAYER] == w->layer &&
             h->v[WIRE_PULL_OFFSET] == w->next);
  fuzz_check(h->v[WIRE_PULL_VERSION] == w->version &&
             w->version >= w->min_version);
  fuzz_check(h->payload_field == wire_data_field(w->dtype));
  fuzz_check(nbytes % eb == 0 && n > 0 && n <= SHARD_CHUNK_ELEMS);
  fuzz_check(n <= w->end - w->next);
  same_payload(w, payload, w->next - w->lo, n);
  w->next += n;
}

/* expect_range states the contract: offset 0 with count 0 is the slice;
 * count 0 runs to its end; any other range must lie inside it. */
static int expect_range(const Fsps__V1__PullRequest *r, watch *w) {
  store_layer_info in;
  store_info(w->L, &in);
  uint64_t lo = in.offset, hi = in.offset + in.count;
  bool whole = r->offset == 0 && r->count == 0;
  w->lo = lo;
  w->next = whole ? lo : r->offset;
  w->end = whole || r->count == 0 ? hi : r->offset + r->count;
  w->min_version = r->min_version;
  if (whole)
    return FSPS_OK;
  bool inside = r->offset >= lo && r->offset < hi &&
                (r->count == 0 || r->count <= hi - r->offset);
  return inside ? FSPS_OK : FSPS_INVALID_ARGUMENT;
}

/* expected returns the refusal the request calls for, or FSPS_OK. */
static int expected(service *svc, const uint8_t *req, size_t n, watch *w) {
  Fsps__V1__PullRequest *r = fsps__v1__pull_request__unpack(NULL, n, req);
  if (r == NULL)
    return FSPS_INVALID_ARGUMENT;
  w->layer = r->layer;
  w->L = store_layer_get(svc->st, r->layer);
  int code = w->L ? expect_range(r, w) : FSPS_NOT_FOUND;
  store_layer_info in;
  if (code == FSPS_OK) /* no worker of a cluster can ask past version + 1 */
    store_info(w->L, &in);
  if (code == FSPS_OK && r->epoch != store_epoch(svc->st))
    code = FSPS_FAILED_PRECONDITION; /* another epoch's: refused */
  if (code == FSPS_OK && r->min_version > in.version + 1)
    code = FSPS_FAILED_PRECONDITION;
  fsps__v1__pull_request__free_unpacked(r, NULL);
  return code;
}

/* wake has both workers push `rounds` steps of the layer, completing one
 * send of the pull after each, so steps land between its chunks. */
static void wake(service *svc, rpc_call *pull, watch *w, unsigned rounds) {
  store_layer_info in;
  store_info(w->L, &in);
  for (unsigned r = 0; r < rounds && in.count > 0; r++) {
    for (uint32_t k = 0; k < FUZZ_WORKERS; k++)
      fuzz_check(fuzz_push_step(svc, w->layer, in.version, k, 0.5f) == FSPS_OK);
    store_info(w->L, &in);
    fuzz_call_step(pull);
  }
}

/* fixture returns the service for this run: a fresh one when workers
 * will push (they change the store), else one kept across runs, since a
 * pull alone leaves the store as it found it. */
static service *fixture(service *fresh, bool big, bool bf16, bool pushes) {
  static service kept[2][2];
  static bool made[2][2];
  server_config c;
  fuzz_model model = {.big = big, .optim = FUZZ_SGD, .bf16 = bf16};
  fuzz_config(&c, 0);
  if (pushes) {
    fuzz_service_open(fresh, &c, &model);
    return fresh;
  }
  if (!made[bf16][big])
    fuzz_service_open(&kept[bf16][big], &c, &model);
  made[bf16][big] = true;
  return &kept[bf16][big];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  unsigned ctl = fuzz_u8(&in), rounds = ctl >> 6;
  service fresh;
  fuzz_quiet();
  service *svc =
      fixture(&fresh, (ctl & 0x20) != 0, (ctl & 0x10) != 0, rounds > 0);
  watch w = {.dtype = store_wire_dtype(svc->st)};
  int want = expected(svc, in.p, in.n, &w);
  fuzz_msg fm;
  fuzz_check(fuzz_msg_bytes(&fm, in.p, in.n, ctl & 0x0f) == FSPS_OK);
  rpc_call *call = fuzz_call_new(
      fuzz_method(svc, WIRE_PATH_PULL), on_chunk, &w);
  fuzz_call_start(call, &fm.m);
  fuzz_msg_close(&fm);
  if (want == FSPS_OK && !fuzz_call_finished(call))
    wake(svc, call, &w, rounds);
  int code = fuzz_call_end(call);
  if (want == FSPS_OK) {
    store_layer_info now;
    store_info(w.L, &now);
    want = now.version >= w.min_version ? FSPS_OK : FSPS_CANCELLED;
  }
  fuzz_check(code == want);
  fuzz_check(code != FSPS_OK || w.next == w.end);
  free(w.expect);
  if (svc == &fresh)
    fuzz_service_close(&fresh);
  return 0;
}
