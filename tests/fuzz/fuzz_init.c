/* fuzz_init.c: libFuzzer target for fsps.v1.ParameterServer/Init — the
 * request's decoding, spec_from_proto, validation and the store's Init —
 * on a fresh server 1 of 2 each run. Input: one control byte (bits 0-5:
 * how the request is cut into slices; 6: ASP instead of BSP; 7: send the
 * request twice), then the request. Checks: a refused Init declares
 * nothing; an accepted one replies with the store's hash, S, s, W and a
 * version 0 per layer; the same request again is OK and not created. */
#include <stdlib.h>

#include "fsps.pb-c.h"
#include "fuzz.h"

typedef struct {
  service *svc;
  bool created;
  uint64_t hash;
} init_seen;

/* check_reply checks an accepted Init's reply against the store. */
static void check_reply(void *arg, rpc_call *c) {
  init_seen *seen = arg;
  service *svc = seen->svc;
  size_t len;
  const uint8_t *bytes = fuzz_call_reply(c, &len);
  if (fuzz_call_code(c) != FSPS_OK) {
    fuzz_check(!store_ready(svc->st));
    return;
  }
  Fsps__V1__InitReply *r = fsps__v1__init_reply__unpack(NULL, len, bytes);
  fuzz_check(r != NULL && store_ready(svc->st));
  fuzz_check(r->spec_hash == store_hash(svc->st));
  fuzz_check(r->num_servers == FUZZ_SERVERS && r->server_index == FUZZ_INDEX &&
             r->num_workers == FUZZ_WORKERS);
  fuzz_check(r->n_layer_versions == store_num_layers(svc->st));
  for (size_t l = 0; l < r->n_layer_versions; l++)
    fuzz_check(r->layer_versions[l] == 0);
  seen->created = r->created;
  seen->hash = r->spec_hash;
  fsps__v1__init_reply__free_unpacked(r, NULL);
}

/* affordable skips requests that declare a valid model too large for the
 * fuzzer's memory budget (fuzz_model_fits). */
static bool affordable(const uint8_t *req, size_t n, const server_config *c) {
  Fsps__V1__InitRequest *r = fsps__v1__init_request__unpack(NULL, n, req);
  bool ok = r == NULL || r->spec == NULL || fuzz_model_fits(r->spec, c);
  if (r)
    fsps__v1__init_request__free_unpacked(r, NULL);
  return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  unsigned ctl = fuzz_u8(&in);
  server_config c;
  service svc;
  fuzz_quiet();
  fuzz_config(&c, ctl & 0x40 ? 2 : 0);
  if (!affordable(in.p, in.n, &c))
    return 0;
  fuzz_service_open(&svc, &c, NULL);
  const rpc_method *m = fuzz_method(&svc, WIRE_PATH_INIT);
  init_seen first = {.svc = &svc}, again = {.svc = &svc};
  int code = fuzz_unary(m, in.p, in.n, ctl & 0x3f, check_reply, &first);
  fuzz_check(code != FSPS_OK || first.created);
  if (ctl & 0x80) {
    int code2 = fuzz_unary(m, in.p, in.n, ctl + 1, check_reply, &again);
    fuzz_check(code2 == code);
    fuzz_check(code != FSPS_OK || (!again.created && again.hash == first.hash));
  }
  fuzz_service_close(&svc);
  return 0;
}
