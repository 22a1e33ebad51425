/* fuzz_rollback.c: libFuzzer target for fsps.v1.ParameterServer/Rollback on
 * a server with a --checkpoint-dir (a fresh folder on /dev/shm, removed at
 * exit) holding the small fixture model, made afresh each run: layer "fc1"
 * trained to version 3, with a checkpoint file of version 2.
 *
 * Input: a control byte (bits 0-5: how the request is cut into slices;
 * bit 6: if the bytes decode, give the request the model's true spec hash,
 * so that versions are explored past the hash check), then the request.
 * Checks: the status is the one the request calls for (unreadable:
 * INVALID_ARGUMENT; other model, forward, or a version without a file:
 * FAILED_PRECONDITION; 3, 2 or 0: OK), the layer is then at that version
 * (unchanged on refusal), and back at 0 it holds its initial values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "fsps.pb-c.h"
#include "fuzz.h"

static char g_dir[256];

static void teardown(void) {
  fuzz_rmdir(g_dir);
}

/* fixture opens the service: version 2, a checkpoint of it, version 3. */
static const rpc_method *fixture(service *svc, float *init) {
  server_config c;
  fuzz_model model = {.big = false, .optim = FUZZ_ADAM};
  char msg[512], path[1200];
  uint64_t bytes, lowest;
  fuzz_config(&c, 0);
  snprintf(c.checkpoint_dir, sizeof c.checkpoint_dir, "%s", g_dir);
  fuzz_service_open(svc, &c, &model);
  svc->ck = ckpt_create(svc->st, &c, msg, sizeof msg);
  fuzz_check(svc->ck != NULL);
  store_layer *L = store_layer_get(svc->st, 0);
  store_copy_now(L, init);
  for (uint64_t t = 0; t < 3; t++) {
    for (uint32_t w = 0; w < FUZZ_WORKERS; w++)
      fuzz_check(fuzz_push_step(svc, 0, t, w, 0.5f + (float)t) == FSPS_OK);
    if (t == 1)
      fuzz_check(ckpt_write_now(svc->ck, path, sizeof path, &bytes, &lowest,
                                msg, sizeof msg) == FSPS_OK);
  }
  return fuzz_method(svc, WIRE_PATH_ROLLBACK);
}

/* request returns the bytes to send (a fresh copy with the true hash when
 * asked and possible, else the input itself). */
static uint8_t *request(const service *svc, bool fix, const uint8_t *in,
                        size_t *n) {
  Fsps__V1__RollbackRequest *r =
      fix ? fsps__v1__rollback_request__unpack(NULL, *n, in) : NULL;
  if (r == NULL)
    return NULL;
  r->spec_hash = store_hash(svc->st);
  *n = protobuf_c_message_get_packed_size(&r->base);
  uint8_t *out = malloc(*n + 1);
  fuzz_check(out != NULL);
  protobuf_c_message_pack(&r->base, out);
  fsps__v1__rollback_request__free_unpacked(r, NULL);
  return out;
}

/* expected returns the status the request calls for, and the version the
 * layer must be at afterwards. */
static int expected(const service *svc, const uint8_t *req, size_t n,
                    uint64_t *version) {
  Fsps__V1__RollbackRequest *r =
      fsps__v1__rollback_request__unpack(NULL, n, req);
  *version = 3;
  if (r == NULL)
    return FSPS_INVALID_ARGUMENT;
  uint64_t v = r->version;
  bool ours = r->spec_hash == store_hash(svc->st);
  fsps__v1__rollback_request__free_unpacked(r, NULL);
  if (!ours || (v != 0 && v != 2 && v != 3))
    return FSPS_FAILED_PRECONDITION;
  *version = v;
  return FSPS_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static float init[64], now[64];
  if (g_dir[0] == '\0') {
    fuzz_quiet();
    fuzz_tmpdir(g_dir, sizeof g_dir);
    atexit(teardown);
  }
  service svc;
  const rpc_method *m = fixture(&svc, init);
  fuzz_in in = {data, size};
  unsigned ctl = fuzz_u8(&in);
  size_t n = in.n;
  uint8_t *fixed = request(&svc, ctl & 0x40, in.p, &n);
  const uint8_t *req = fixed ? fixed : in.p;
  uint64_t want;
  int code = expected(&svc, req, n, &want);
  fuzz_check(fuzz_unary(m, req, n, ctl & 0x3f, NULL, NULL) == code);
  store_layer *L = store_layer_get(svc.st, 0);
  store_layer_info info;
  store_info(L, &info);
  fuzz_check(info.version == want);
  store_copy_now(L, now);
  fuzz_check(want != 0 ||
             memcmp(now, init, store_layer_floats(L) * sizeof(float)) == 0);
  free(fixed);
  ckpt_destroy(svc.ck);
  fuzz_service_close(&svc);
  return 0;
}
