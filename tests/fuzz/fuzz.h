/* fuzz.h: what fsps's libFuzzer targets share — reading a fuzz input piece
 * by piece, received messages built from its bytes, a stand-in for rpc's
 * server calls that drives a method's handlers the way rpc/server.c does,
 * and small real stores declared through the real Init handler. */
#ifndef FSPS_FUZZ_H
#define FSPS_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "rpc_int.h"
#include "service.h"

/* fuzz_check aborts with a message when an invariant the harness checks
 * does not hold: libFuzzer then reports it as a crash with the input. */
#define fuzz_check(cond)                                                       \
  ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, #cond))
_Noreturn void fuzz_fail(const char *file, int line, const char *what);

/* Every target defines libFuzzer's entry point. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- reading the fuzz input ---- */

typedef struct {
  const uint8_t *p;
  size_t n;
} fuzz_in;

/* fuzz_u8 / fuzz_u16 take the next byte(s), 0 once the input is used up. */
uint8_t fuzz_u8(fuzz_in *in);
uint16_t fuzz_u16(fuzz_in *in);

/* fuzz_bytes takes up to want bytes; *out points into the input. */
size_t fuzz_bytes(fuzz_in *in, size_t want, const uint8_t **out);

/* ---- received messages ---- */

/* A message as rpc/server.c hands it to a handler: a gRPC byte buffer of
 * several slices, opened with rpc_msg_open. */
typedef struct {
  grpc_byte_buffer *bb;
  rpc_msg m;
} fuzz_msg;

/* fuzz_msg_bytes makes a message of data[0..n) cut into 1 + split % 40
 * slices at points drawn from split (some may be empty), so parsers meet
 * fields and varints torn across slices. Returns FSPS_OK or another
 * fsps_err. */
int fuzz_msg_bytes(fuzz_msg *fm, const void *data, size_t n, unsigned split);

/* fuzz_msg_tensor makes a message as a client sends one: rpc's own
 * hand-framed tensor message whose payload slice points at data. */
int fuzz_msg_tensor(fuzz_msg *fm, const rpc_tensor_hdr *h, const void *data,
                    size_t nbytes);

void fuzz_msg_close(fuzz_msg *fm);

/* ---- the stand-in for rpc's server calls (fake_call.c) ---- */

/* Called with every tensor message a handler sends, after rpc's framing
 * has been parsed back: its header and payload. */
typedef void (*fuzz_tensor_fn)(void *arg, const rpc_tensor_hdr *h,
                               const void *payload, size_t nbytes);

/* fuzz_call_new starts a call of method m, as rpc does when one arrives. */
rpc_call *fuzz_call_new(const rpc_method *m, fuzz_tensor_fn on_tensor,
                        void *arg);

/* fuzz_call_start hands the request (NULL for client streaming) to
 * on_start, then completes sends until none is in flight. */
void fuzz_call_start(rpc_call *c, rpc_msg *msg);

/* fuzz_call_message hands the next client-stream message (NULL: the client
 * closed its side) to on_message; false, delivering nothing, once the call
 * has finished, since rpc then reads no more. */
bool fuzz_call_message(rpc_call *c, rpc_msg *msg);

/* fuzz_call_step completes the send in flight, if any (its on_sent may
 * start the next); false when there was none. */
bool fuzz_call_step(rpc_call *c);

/* fuzz_call_pump completes the send in flight, and those its on_sent
 * starts, until none is left. */
void fuzz_call_pump(rpc_call *c);

/* fuzz_call_finished / fuzz_call_code / fuzz_call_reply: whether the call
 * has finished, its status code as a client reads it (a local fsps_err
 * such as FSPS_NOMEM becomes its wire code), and the reply message it sent
 * (packed; NULL when none). Valid until fuzz_call_end. */
bool fuzz_call_finished(const rpc_call *c);

/* fuzz_call_wait waits (30 s at most, then fails the run) until the call
 * is answered: from the checkpoint thread, for methods doing file work. */
void fuzz_call_wait(rpc_call *c);
int fuzz_call_code(const rpc_call *c);
const uint8_t *fuzz_call_reply(const rpc_call *c, size_t *len);

/* fuzz_call_end ends the call as its deadline would: on_cancel and a
 * CANCELLED status if it has not finished, then the call's own reference is
 * dropped (on_done runs once no other is held). Returns the status code. */
int fuzz_call_end(rpc_call *c);

/* fuzz_unary runs one unary call of m whose request is in[0..n) cut by
 * split (see fuzz_msg_bytes), checks that the handler answered it, lets
 * check (may be NULL) look at the finished call, ends it and returns its
 * status code. */
int fuzz_unary(const rpc_method *m, const uint8_t *in, size_t n, unsigned split,
               void (*check)(void *arg, rpc_call *c), void *arg);

/* ---- services over real stores (support.c) ---- */

/* The model the fixtures declare, as server 1 of 2 with 2 workers:
 * layer 0 "fc1" (weight 4x6 he_uniform, bias 4: 28 elements, 12 here),
 * layer 1 "tiny" (8 elements, none here), and, with big, layer 2 "big"
 * (524320 zeros, 262160 here: two push chunks, 262144 + 16). With client,
 * every tensor's init is client (values given by SetValues), but fc1's
 * with drawn_fc1. With bf16, its wire dtype is bf16 (pulls and pushes in
 * data_bf16). */
#define FUZZ_SERVERS 2
#define FUZZ_INDEX 1
#define FUZZ_WORKERS 2

typedef enum { FUZZ_SGD, FUZZ_MOMENTUM, FUZZ_ADAM, FUZZ_ADAGRAD } fuzz_optim;

typedef struct {
  bool big;
  fuzz_optim optim;
  bool client, drawn_fc1;
  bool bf16;
} fuzz_model;

/* fuzz_config fills c for server FUZZ_INDEX of FUZZ_SERVERS; bits of
 * flags: 0-1 mode (bsp, ssp with staleness 1, asp, bsp --deterministic),
 * 2 --nan-policy skip. */
void fuzz_config(server_config *c, unsigned flags);

/* fuzz_init_request packs an InitRequest declaring model for this server;
 * free the result. */
uint8_t *fuzz_init_request(const fuzz_model *model, size_t *len);

/* fuzz_service_open makes a service over a new store for c; with model
 * non-NULL it declares it through the Init handler (aborting on failure). */
void fuzz_service_open(service *svc, const server_config *c,
                       const fuzz_model *model);
void fuzz_service_close(service *svc);

/* fuzz_method returns svc's handler table entry for path (WIRE_PATH_PUSH,
 * ...). */
const rpc_method *fuzz_method(service *svc, const char *path);

/* fuzz_push_step pushes one complete, valid gradient of constant value g
 * for (layer, step, worker) through the Push handler, in the model's wire
 * dtype; returns its status. */
int fuzz_push_step(service *svc, uint32_t layer, uint64_t step, uint32_t worker,
                   float g);

/* ---- client streams of chunks (support.c) ---- */

/* fuzz_send_tensor sends a tensor message of header h and payload
 * data[0..nbytes) on client stream c, as libfsps frames one; returns
 * whether it was delivered (false once the call has finished). */
bool fuzz_send_tensor(rpc_call *c, const rpc_tensor_hdr *h, const void *data,
                      size_t nbytes);

/* A chunk record of the stream targets (fuzz_push, fuzz_values): chunk
 * `chunk` of layer's slice here, its offset and length off by doff and
 * dcount elements, filled as `how` says (bits 0-1: zeros, ones, a ramp, or
 * a NaN/Inf at element bits 2-6; bit 7: Inf instead of NaN), sent as
 * float32 (data) or, with bf16, as bfloat16 (data_bf16). */
typedef struct {
  uint8_t layer, chunk;
  int8_t doff, dcount;
  unsigned how;
  bool bf16;
} fuzz_chunk;

/* fuzz_chunk_send sends ch on c with header h (the method's other fields
 * set), setting h's offset_field to the chunk's layer offset; returns
 * whether it was delivered. */
bool fuzz_chunk_send(service *svc, rpc_call *c, const fuzz_chunk *ch,
                     rpc_tensor_hdr *h, unsigned offset_field);

/* Reads a chunk record's fields from in and sends it (fuzz_chunk_send). */
typedef bool (*fuzz_framed_fn)(service *svc, rpc_call *c, fuzz_in *in);

/* fuzz_stream_records feeds c the stream targets' records, each a byte
 * whose low two bits say what it is: 0 a raw message (u16 length, then
 * that many bytes, cut into slices as the other six bits say), 1 a chunk
 * that framed reads, 2 the client closes its side, 3 it gives up. It stops
 * at a 2 or 3, or when the input or `most` records all told (counted in
 * *records) are used up, and then closes the client's side unless the
 * last record was 3. Returns the last record's kind (2 when there was
 * none), and sets *last (if not NULL) to its byte (0 when none). */
unsigned fuzz_stream_records(service *svc, rpc_call *c, fuzz_in *in,
                             int *records, int most, fuzz_framed_fn framed,
                             unsigned *last);

/* fuzz_model_fits returns false for a model spec that validation accepts
 * and whose slices here would exceed the harness's memory and time budget
 * yet fit the machine (a real server would declare it: it is a resource
 * cost, not a bug). Models too large for the machine pass: the store
 * refuses them before allocating. */
bool fuzz_model_fits(const struct Fsps__V1__ModelSpec *m,
                     const server_config *c);

/* ---- files ---- */

/* fuzz_tmpdir creates a fresh folder under /dev/shm (or $TMPDIR) into
 * path; fuzz_rmdir removes it and the files in it. */
void fuzz_tmpdir(char *path, size_t len);
void fuzz_rmdir(const char *path);

/* fuzz_crc32c returns the CRC32C (Castagnoli) of p[0..n). */
uint32_t fuzz_crc32c(const void *p, size_t n);

/* fuzz_quiet sets the server log to errors only (everything when
 * FSPS_FUZZ_LOG is set, to follow one input), once per process. */
void fuzz_quiet(void);

#endif
