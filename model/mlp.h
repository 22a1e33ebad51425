/* mlp.h: a multi-layer perceptron computed one layer at a time on OpenBLAS,
 * with parameters that live elsewhere (gathered from fsps servers, or loaded
 * for serving). Shared by fsps-worker (training) and fsps-serve. */
#ifndef FSPS_MODEL_MLP_H
#define FSPS_MODEL_MLP_H

#include <stddef.h>
#include <stdint.h>

/* Largest width model_mlp_parse accepts. */
#define MLP_MAX_WIDTH 1000000u

/* The model. Widths w[0..L]: L dense layers, layer l maps w[l] inputs to
 * w[l+1] outputs; ReLU after every layer but the last; softmax cross-entropy
 * (mean over the batch) on the last layer's output (the logits).
 *
 * Parameters. Layer l's parameters are one flat float vector of
 * model_mlp_layer_size(m, l) = out*in + out elements: weight [out][in]
 * row-major (PyTorch's nn.Linear layout), then bias [out]. That is an fsps
 * layer with tensors "weight" dims [out, in] and "bias" dims [out]. Gradients
 * use the same layout. The mlp never owns parameters: each call takes the
 * layer's vector, so it may be a buffer gathered just in time.
 *
 * Initialisation, declared in the fsps model spec (the servers initialise):
 *   weight  he_uniform (kaiming_uniform_ for ReLU): U(-sqrt(6/in), +sqrt(6/in))
 *   bias    uniform(-1/sqrt(in), +1/sqrt(in))   (nn.Linear's bias init)
 * nn.Linear's own default weight init is kaiming_uniform_(a=sqrt(5)), i.e.
 * uniform(-1/sqrt(in), +1/sqrt(in)); declare that instead for exact parity.
 *
 * One step: model_mlp_forward_layer for l = 0 .. L-1, model_mlp_loss, then
 * model_mlp_backward_layer for l = L-1 down to 0, all with the same batch size
 * b.
 *
 * Thread-safety: an mlp holds the activations of one batch in flight, so a
 * given mlp is used by one thread at a time; distinct mlps are independent.
 * OpenBLAS uses its own threads as configured by the environment
 * (OPENBLAS_NUM_THREADS). Nothing below allocates after model_mlp_create. */
typedef struct mlp mlp;

/* model_mlp_parse reads a model description "mlp:W0,W1,...,WL" (e.g.
 * "mlp:784,512,256,10"): at least 2 and at most max widths, each a decimal
 * integer in 1..MLP_MAX_WIDTH. On success writes widths[0..*nwidths) and
 * returns 0; otherwise returns -1 with a sentence in err (when non-NULL and
 * errlen > 0) quoting the description and saying what is wrong. Thread-safe. */
int model_mlp_parse(const char *desc, uint32_t *widths, uint32_t max,
                     uint32_t *nwidths, char *err, size_t errlen);

/* model_mlp_workspace_bytes returns the bytes of activation and gradient
 * workspace model_mlp_create allocates for these widths and max_batch (for
 * memory budgets and error messages), or 0 if the arguments are invalid or the
 * size overflows. */
uint64_t model_mlp_workspace_bytes(const uint32_t *widths, uint32_t nwidths,
                                    uint32_t max_batch);

/* model_mlp_create returns a new mlp for widths[0..nwidths) (nwidths >= 2,
 * each width >= 1; widths are copied) whose workspaces serve batches of 1..
 * max_batch samples. The workspaces are allocated and touched here, once, so
 * no step page-faults. Returns NULL if an argument is invalid or memory runs
 * out (model_mlp_workspace_bytes tells how much was asked for). The caller
 * owns the result (model_mlp_destroy). */
mlp *model_mlp_create(const uint32_t *widths, uint32_t nwidths,
                       uint32_t max_batch);

/* model_mlp_destroy frees m and its workspaces; NULL is a no-op. */
void model_mlp_destroy(mlp *m);

/* model_mlp_num_layers returns L, the number of dense layers (nwidths - 1). */
uint32_t model_mlp_num_layers(const mlp *m);

/* model_mlp_width returns width i (0..L): w[0] inputs, w[L] classes. */
uint32_t model_mlp_width(const mlp *m, uint32_t i);

/* model_mlp_layer_size returns layer l's parameter count, out*in + out. */
uint64_t model_mlp_layer_size(const mlp *m, uint32_t l);

/* model_mlp_forward_layer computes layer l's output Y = X * W^T + bias for the
 * batch (sgemm), then ReLU unless l is the last layer; the output is kept
 * for the next layer and for backward. X is x_in ([b][w0], row-major) when
 * l == 0 — m keeps the pointer, not a copy, so x_in must stay unchanged
 * until model_mlp_backward_layer of layer 0 has returned — and layer l-1's
 * output otherwise (x_in is then ignored and may be NULL). params is layer l's
 * flat vector, read only during the call. Requires 1 <= b <= max_batch, the
 * same b for every layer of a pass, and layers in order 0, 1, ... */
void model_mlp_forward_layer(mlp *m, uint32_t l, const float *params,
                              const float *x_in, uint32_t b);

/* model_mlp_loss applies softmax cross-entropy to the last layer's output
 * (numerically stable: each row's maximum is subtracted first) and returns
 * the mean loss over the b samples. If correct is non-NULL it receives how
 * many rows' argmax (first maximum on ties) equals the label. Stores
 * dL/dlogits = (softmax - onehot) / b for model_mlp_backward_layer. Call after
 * the forward of every layer, with the same b. Every label must be below
 * model_mlp_width(m, L) (check the data's class count once at start-up); a
 * label out of range makes the result NaN, never an out-of-bounds access. */
float model_mlp_loss(mlp *m, const uint8_t *labels, uint32_t b,
                      uint32_t *correct);

/* model_mlp_backward_layer computes, from the stored gradient of layer l's
 * output dY [b][out], the layer's gradient into grad (model_mlp_layer_size
 * floats, same layout as params, overwritten): dW = dY^T * X, db = column sums
 * of dY; and for l > 0 the gradient of layer l-1's output, dY * W masked by
 * layer l-1's ReLU, stored for the next call. params is layer l's flat vector
 * (the same values as in forward), read only during the call; grad must not
 * overlap it. Call for l = L-1 down to 0, after model_mlp_loss, with the same
 * b. */
void model_mlp_backward_layer(mlp *m, uint32_t l, const float *params,
                               float *grad, uint32_t b);

/* model_mlp_backward_layer_inplace is model_mlp_backward_layer with the
 * gradient written over the parameters: params_grad holds layer l's parameters
 * on entry and its gradient on return, bit for bit the gradient that
 * model_mlp_backward_layer computes (for a trainer that keeps one buffer per
 * layer instead of two). Same requirements. */
void model_mlp_backward_layer_inplace(mlp *m, uint32_t l, float *params_grad,
                                       uint32_t b);

/* ---- Layers in pieces ----------------------------------------------------
 * The same layer computed from row blocks of its weight, so that only a
 * block need be held: forward calls model_mlp_forward_rows for blocks covering
 * rows [0, out) in ascending order, then model_mlp_forward_bias; backward
 * calls model_mlp_backward_bias, then model_mlp_backward_rows for the blocks
 * in descending order (the first ends at row out, the last starts at row 0).
 * The results equal the whole-layer calls' up to float rounding: bias is added
 * after the products, and dX sums the blocks' products one block at a time. */

/* model_mlp_forward_rows computes outputs [r0, r1) of layer l before bias and
 * ReLU, Y[:, r0:r1] = X * W_rows^T, where w_rows is weight rows r0..r1-1
 * ((r1 - r0) * in floats). x_in as for model_mlp_forward_layer (read at layer
 * 0's first block). */
void model_mlp_forward_rows(mlp *m, uint32_t l, uint32_t r0, uint32_t r1,
                             const float *w_rows, const float *x_in,
                             uint32_t b);

/* model_mlp_forward_bias ends layer l's forward: adds bias (out floats) to
 * every output, then ReLU unless l is the last layer. */
void model_mlp_forward_bias(mlp *m, uint32_t l, const float *bias, uint32_t b);

/* model_mlp_backward_bias writes layer l's bias gradient db (out floats): the
 * column sums of dY. */
void model_mlp_backward_bias(mlp *m, uint32_t l, float *db, uint32_t b);

/* model_mlp_backward_rows adds rows [r0, r1)'s share of dX (for l > 0; masked
 * by layer l-1's ReLU once r0 is 0), reading w_rows, then writes their weight
 * gradient dW_rows = dY[:, r0:r1]^T * X into g_rows, which may be w_rows
 * (the gradient written over the parameters). */
void model_mlp_backward_rows(mlp *m, uint32_t l, uint32_t r0, uint32_t r1,
                              const float *w_rows, float *g_rows, uint32_t b);

/* model_mlp_eval_batch runs the forward of every layer (params[l] is layer l's
 * vector) on x [b][w0] and returns model_mlp_loss(m, y, b, correct):
 * evaluation when all layers are at hand. Same requirements as the calls it
 * makes. */
float model_mlp_eval_batch(mlp *m, const float *const *params, const float *x,
                            const uint8_t *y, uint32_t b, uint32_t *correct);

/* model_mlp_output returns the logits [b][w[L]] of the last forward pass;
 * valid until the next model_mlp_forward_layer of the last layer or
 * model_mlp_destroy. */
const float *model_mlp_output(const mlp *m);

#endif
