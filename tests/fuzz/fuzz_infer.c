/* fuzz_infer.c: libFuzzer target for serve/infer.c, the ModelInfer decoder
 * and checks fsps-serve runs on every client's bytes. Input: one byte
 * choosing the model served (width 1 + b % 8 inputs, 1 + (b >> 3) % 4
 * classes), then the request. Beyond not crashing: a refusal carries a
 * message and a status the protocol names; an accepted request holds rows
 * x width finite values, and the reply built for it packs and reads back
 * with its outputs' sizes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "infer.h"

static void check_accepted(const serve_infer_req *r,
                           const serve_infer_model *m) {
  fuzz_check(r->rows >= 1 && r->width == m->width);
  fuzz_check(r->noutputs >= 1 && r->noutputs <= 2);
  for (size_t i = 0; i < (size_t)r->rows * r->width; i++)
    fuzz_check(isfinite(r->x[i]));
  float *probs = calloc((size_t)r->rows * m->classes, sizeof(float));
  uint32_t *cls = calloc(r->rows, sizeof(uint32_t));
  fuzz_check(probs != NULL && cls != NULL);
  serve_infer_reply rep;
  serve_infer_batch bt = {.seq = 1, .requests = 1, .rows = r->rows};
  fuzz_check(serve_infer_reply_build(&rep, r, m->name, m->version, m->classes,
                                     probs, cls, &bt) == 0);
  size_t len = protobuf_c_message_get_packed_size(&rep.msg.base);
  uint8_t *buf = malloc(len ? len : 1);
  fuzz_check(buf != NULL);
  protobuf_c_message_pack(&rep.msg.base, buf);
  Inference__ModelInferResponse *back =
      inference__model_infer_response__unpack(NULL, len, buf);
  fuzz_check(back != NULL && back->n_outputs == r->noutputs);
  for (uint32_t i = 0; i < r->noutputs; i++)
    fuzz_check(back->raw_output_contents[i].len ==
               (size_t)r->rows * (r->outputs[i] == SERVE_OUT_PROBS
                                      ? m->classes * sizeof(float)
                                      : sizeof(int64_t)));
  inference__model_infer_response__free_unpacked(back, NULL);
  free(buf);
  serve_infer_reply_free(&rep);
  free(probs);
  free(cls);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  uint8_t b = fuzz_u8(&in);
  serve_infer_model m = {.name = "fsps-mlp",
                         .width = 1 + b % 8u,
                         .classes = 1 + (b >> 3) % 4u,
                         .version = 3};
  Inference__ModelInferRequest *req =
      inference__model_infer_request__unpack(NULL, in.n, in.p);
  if (req == NULL)
    return 0;
  serve_infer_req r;
  char msg[512] = "";
  int rc = serve_infer_check(req, &m, &r, msg, sizeof msg);
  if (rc == FSPS_OK) {
    check_accepted(&r, &m);
    serve_infer_req_free(&r);
  } else {
    fuzz_check(msg[0] != '\0');
    fuzz_check(rc == FSPS_NOT_FOUND || rc == FSPS_INVALID_ARGUMENT ||
               rc == FSPS_RESOURCE_EXHAUSTED);
    fuzz_check(r.own == NULL);
  }
  inference__model_infer_request__free_unpacked(req, NULL);
  return 0;
}
