/* fuzz_status.c: libFuzzer target for fsps.v1.ParameterServer/Status
 * against a store holding the fixture model (fuzz.h) with worker 0's push
 * of step 0 counted on layer 0. Input: one byte choosing how the request
 * is cut into slices, then the request. The call must succeed exactly when
 * the bytes are a StatusRequest, and the reply must describe the store. */
#include "fsps.pb-c.h"
#include "fuzz.h"

static int expected(const uint8_t *req, size_t n) {
  Fsps__V1__StatusRequest *r = fsps__v1__status_request__unpack(NULL, n, req);
  if (r == NULL)
    return FSPS_INVALID_ARGUMENT;
  fsps__v1__status_request__free_unpacked(r, NULL);
  return FSPS_OK;
}

static void check_layer(const Fsps__V1__LayerStatus *ls) {
  fuzz_check(ls->n_pushed + ls->n_missing == FUZZ_WORKERS);
  fuzz_check(ls->slice_offset + ls->slice_count <= ls->n);
}

static void check_reply(void *arg, rpc_call *c) {
  (void)arg;
  size_t len;
  const uint8_t *reply = fuzz_call_reply(c, &len);
  if (fuzz_call_code(c) != FSPS_OK)
    return;
  Fsps__V1__StatusReply *r = fsps__v1__status_reply__unpack(NULL, len, reply);
  fuzz_check(r != NULL && r->initialized && r->n_layers == 3);
  for (size_t l = 0; l < r->n_layers; l++)
    check_layer(r->layers[l]);
  fuzz_check(r->layers[0]->n_pushed == 1 && r->layers[0]->pushed[0] == 0);
  fsps__v1__status_reply__free_unpacked(r, NULL);
}

static const rpc_method *setup(service *svc) {
  server_config c;
  fuzz_model model = {.big = true, .optim = FUZZ_SGD};
  fuzz_quiet();
  fuzz_config(&c, 0);
  fuzz_service_open(svc, &c, &model);
  fuzz_check(fuzz_push_step(svc, 0, 0, 0, 1.0f) == FSPS_OK);
  return fuzz_method(svc, WIRE_PATH_STATUS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static service svc;
  static const rpc_method *m;
  if (m == NULL)
    m = setup(&svc);
  fuzz_in in = {data, size};
  unsigned split = fuzz_u8(&in);
  int code = fuzz_unary(m, in.p, in.n, split, check_reply, NULL);
  fuzz_check(code == expected(in.p, in.n));
  return 0;
}
