/* infer.h: the open inference protocol's ModelInfer request checked against
 * the model served (name, datatype, shape, data, finite values, size
 * limits) and its reply built, with no network: the decoder that every
 * client's bytes reach, kept apart so that it is fuzzed on its own. */
#ifndef FSPS_SERVE_INFER_H
#define FSPS_SERVE_INFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grpc_predict_v2.pb-c.h"

/* The largest request and reply message, in bytes (gRPC refuses a larger
 * request with RESOURCE_EXHAUSTED before fsps-serve sees it). A request
 * whose shape names more input bytes than this, or whose reply would be
 * larger, is refused with RESOURCE_EXHAUSTED too. */
#define SERVE_INFER_MAX_MESSAGE (64 << 20)

/* The protocol's names for the one input and the two outputs. */
#define SERVE_INFER_INPUT "input"
#define SERVE_INFER_PROBS "probabilities"
#define SERVE_INFER_CLASS "class"

/* The outputs a reply carries, in the order the client asked for. */
typedef enum { SERVE_OUT_PROBS, SERVE_OUT_CLASS } serve_out;

/* What the model served looks like when a request is checked. */
typedef struct {
  const char *name; /* the model's name in the protocol */
  uint32_t width;   /* inputs per row (widths[0]) */
  uint32_t classes; /* outputs per row (widths[L]) */
  uint64_t version; /* the version now served */
} serve_infer_model;

/* A checked request. x points into the decoded message (or into own when
 * the message's bytes were not aligned for floats) and stays valid while
 * the message lives. */
typedef struct {
  uint32_t rows, width;
  const float *x; /* rows * width floats, all finite */
  float *own;     /* a copy of x's data, or NULL */
  const char *id; /* the request's id ("" if none), in the message */
  serve_out outputs[2];
  uint32_t noutputs;
  bool pinned;      /* the client asked for one version ... */
  uint64_t version; /* ... this one */
} serve_infer_req;

/* serve_infer_check checks req against model and fills out. Returns 0
 * (FSPS_OK), or the status to answer with and a sentence in msg:
 * NOT_FOUND for another model name or a version not served;
 * INVALID_ARGUMENT for anything else malformed (input count, name,
 * datatype, shape, data size or place, an empty batch, a value that is
 * NaN or infinite, an unknown output); RESOURCE_EXHAUSTED when the input or
 * the reply would exceed SERVE_INFER_MAX_MESSAGE. On success release out
 * with serve_infer_req_free; on failure nothing is held. Thread-safe. */
int serve_infer_check(const Inference__ModelInferRequest *req,
                      const serve_infer_model *model, serve_infer_req *out,
                      char *msg, size_t msglen);

void serve_infer_req_free(serve_infer_req *r);

/* How a batch computed a reply, sent back in the reply's parameters so a
 * client (or a test) can see how requests were batched. */
typedef struct {
  uint64_t seq;      /* "fsps_batch": the computation's number, from 1 */
  uint32_t requests; /* "fsps_batch_requests": requests it answered */
  uint32_t rows;     /* "fsps_batch_rows": the rows of its one sgemm per
                        layer (max_batch for a request computed in
                        pieces) */
  uint32_t offset;   /* "fsps_batch_offset": this request's first row in
                        it (0 for a request computed in pieces) */
} serve_infer_batch;

/* A reply and the storage its message points into. */
typedef struct {
  Inference__ModelInferResponse msg;
  Inference__ModelInferResponse__InferOutputTensor out[2], *outp[2];
  int64_t shape[2][2];
  ProtobufCBinaryData raw[2];
  Inference__ModelInferResponse__ParametersEntry par[4], *parp[4];
  Inference__InferParameter val[4];
  char version[24];
  int64_t *classes; /* the class output as INT64 */
} serve_infer_reply;

/* serve_infer_reply_build fills rep for request r answered by the model
 * named name at version, from probs [rows][classes] and cls [rows]; rep's
 * message points into probs, r and name, which must outlive its packing.
 * Returns 0, or -1 when memory runs out. Release with
 * serve_infer_reply_free. */
int serve_infer_reply_build(serve_infer_reply *rep, const serve_infer_req *r,
                            const char *name, uint64_t version,
                            uint32_t classes, const float *probs,
                            const uint32_t *cls,
                            const serve_infer_batch *batch);

void serve_infer_reply_free(serve_infer_reply *rep);

#endif
