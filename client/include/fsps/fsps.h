/* fsps.h: libfsps, the client library of the fsps parameter server.
 *
 * A trainer links libfsps to hold a model whose parameters live, sharded, on
 * S fsps-server processes. Each layer is one flat float32 vector; server s
 * owns one slice of every layer. The trainer gathers a layer just in time
 * (all S slices pulled in parallel straight into one buffer, the next layer
 * prefetched), computes, and pushes the layer's gradient reduce-scattered:
 * slice s goes to server s, which averages the W workers' slices and applies
 * the optimizer.
 *
 * Errors: every function that can fail returns an fsps_err (0 = FSPS_OK) and
 * never aborts or exits; fsps_last_error() gives the message.
 *
 * Threads: an fsps_client is used by one trainer thread at a time (calls on
 * one client must not overlap); libfsps runs its own network threads inside.
 * Distinct clients are independent. fsps_spec objects are not thread-safe. */
#ifndef FSPS_H
#define FSPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fsps/fsps_err.h>

#ifdef __cplusplus
extern "C" {
#endif

/* libfsps.so is built with hidden visibility; what this header declares is
 * its API, exported. */
#pragma GCC visibility push(default)

/* ---- version -----------------------------------------------------------
 * The version of this header; CMake's project version is read from here.
 * ABI promise: within one major version (the SONAME libfsps.so.MAJOR)
 * a program built against an older header runs with a newer library:
 * functions are only added, never removed or changed in meaning; enum
 * values and error codes are only added; fsps_options only grows at its
 * end (its size field tells the library how much the caller knows). Opaque
 * types (fsps_client, fsps_spec) may change freely. A new major version
 * may break any of this. */
#define FSPS_VERSION_MAJOR 0
#define FSPS_VERSION_MINOR 5
#define FSPS_VERSION_PATCH 0

/* fsps_version returns the library's version, "MAJOR.MINOR.PATCH" (which
 * may be newer than the FSPS_VERSION_* a program was compiled with). */
const char *fsps_version(void);

/* ---- model spec --------------------------------------------------------
 * Layers in order, each a list of named tensors; the optimizer; a seed. */
typedef struct fsps_spec fsps_spec;

/* fsps_spec_create returns an empty spec (NULL when out of memory). The
 * optimizer defaults to Adam with PyTorch's defaults. Free it with
 * fsps_spec_destroy. */
fsps_spec *fsps_spec_create(uint64_t seed);
void fsps_spec_destroy(fsps_spec *spec);

/* The builders below return FSPS_OK, or FSPS_INVALID_ARGUMENT when their
 * input cannot be stored (unknown name or key, bad value, NULL); the spec
 * then remembers the first such problem and fsps_spec_validate reports it.
 *
 * fsps_spec_add_layer appends a layer; its index is the number of layers
 * added before it. */
int fsps_spec_add_layer(fsps_spec *spec, const char *name);

/* fsps_spec_add_tensor appends a tensor to the last layer added. init is
 * "zeros", "constant" (a), "uniform" (a, b), "normal" (mean a, std b),
 * "xavier_uniform" (gain a, 0 = 1), "he_uniform", or "client" (the values
 * are given by fsps_set_values; every tensor of the layer must have it, or
 * none); dims in PyTorch order ([out, in] for a weight). */
int fsps_spec_add_tensor(fsps_spec *spec, const char *name, uint32_t ndims,
                         const uint64_t *dims, const char *init, double a,
                         double b);

/* fsps_spec_set_optimizer picks "sgd", "adam", "adamw" or "adagrad" with
 * PyTorch's defaults and learning rate lr. It resets the optimizer's other
 * hyper-parameters (so call it before fsps_spec_set_param) and keeps the
 * learning-rate schedule. */
int fsps_spec_set_optimizer(fsps_spec *spec, const char *name, double lr);

/* fsps_spec_set_param sets one hyper-parameter by name: "lr", "momentum",
 * "dampening", "nesterov" (0/1), "weight_decay", "beta1", "beta2", "eps",
 * "lr_decay", "initial_accumulator_value", "step_size", "gamma", "t_max",
 * "eta_min", "warmup_steps", "warmup_start_factor". */
int fsps_spec_set_param(fsps_spec *spec, const char *key, double value);

/* fsps_spec_set_schedule picks the learning-rate schedule: "constant",
 * "step" or "cosine". */
int fsps_spec_set_schedule(fsps_spec *spec, const char *name);

/* fsps_spec_set_wire_dtype picks how the model travels: "fp32" (the
 * default) or "bf16". With "bf16", parameters are gathered and gradients
 * pushed as bfloat16 (float32's top 16 bits, rounded to nearest, ties to
 * even): half the bytes. The servers keep float32 parameters and optimizer
 * state and sum the workers' gradients in float32 either way (as PyTorch
 * FSDP's MixedPrecision(param_dtype=bf16, reduce_dtype=bf16)); each
 * worker's gradient is rounded to bf16 before it is sent. What the gather
 * calls hand out is still float32 (the bf16 values, exactly). Checkpoints
 * and fsps_set_values stay float32. The dtype is part of the spec and its
 * hash (an fp32 spec hashes as it did before the dtype existed), so a
 * worker declaring another dtype than the servers hold is refused like any
 * other spec mismatch. Added in 0.5. */
int fsps_spec_set_wire_dtype(fsps_spec *spec, const char *dtype);

/* fsps_spec_wire_dtype returns the spec's wire dtype, "fp32" or "bf16".
 * Added in 0.5. */
const char *fsps_spec_wire_dtype(const fsps_spec *spec);

/* fsps_spec_validate checks the whole spec; on failure msg says what is
 * wrong (the same checks the server makes). */
int fsps_spec_validate(const fsps_spec *spec, char *msg, size_t msglen);

/* fsps_spec_num_layers / fsps_spec_layer_size: the layer count and a
 * layer's element count (0 when out of range). */
uint32_t fsps_spec_num_layers(const fsps_spec *spec);
uint64_t fsps_spec_layer_size(const fsps_spec *spec, uint32_t layer);

/* fsps_spec_hash returns the spec's stable 64-bit hash (what servers
 * compare). */
uint64_t fsps_spec_hash(const fsps_spec *spec);

/* fsps_spec_decode returns a new spec from an encoded ModelSpec (what
 * fsps_status_model_spec hands out, or a checkpoint file holds), for a
 * program that reads a model it did not declare (fsps_attach with it); NULL
 * with a message in err when the bytes are not a valid spec. Free it with
 * fsps_spec_destroy. Thread-safe. */
fsps_spec *fsps_spec_decode(const void *bytes, size_t len, char *err,
                            size_t errlen);

/* ---- client ------------------------------------------------------------ */
typedef enum {
  FSPS_BSP = 0, /* step t gathers version t: every worker in lock-step */
  FSPS_SSP = 1, /* step t gathers version >= t - staleness */
  FSPS_ASP = 2, /* gathers never wait */
} fsps_mode;

/* fsps_options.wire_dtype: the spec's wire dtype, or one that replaces it
 * (see fsps_spec_set_wire_dtype). Added in 0.5. */
typedef enum {
  FSPS_WIRE_AS_SPEC = 0, /* as the spec declared or attached says */
  FSPS_WIRE_FP32 = 1,    /* float32 */
  FSPS_WIRE_BF16 = 2,    /* bfloat16 */
} fsps_wire_dtype;

typedef struct {
  uint32_t size;              /* sizeof(fsps_options): set by _init */
  const char *servers;        /* "host:port,host:port": server 0 first */
  uint32_t rank;              /* this worker, 0 <= rank < world */
  uint32_t world;             /* W, the number of workers */
  fsps_mode mode;             /* must match the servers' --mode */
  uint32_t staleness;         /* SSP's tau */
  uint32_t prefetch;          /* layers gathered ahead (default 1) */
  bool reshard_after_forward; /* free each layer after forward */
  int64_t timeout_ms;         /* per call; 0 = default 120000 */
  uint32_t retries;           /* retries on UNAVAILABLE; 0 = none */
  uint32_t io_threads;        /* threads receiving and copying; 0 = 1 */
  /* Added in 0.4. */
  const char *token; /* bearer token for servers with --auth-tokens */
  /* TLS (libfsps 0.4): paths of PEM files, read by fsps_connect. */
  const char *tls_ca;          /* the CAs that sign the servers'
                                  certificates; set: TLS to every server */
  const char *tls_cert;        /* mutual TLS: this client's certificate
                                  chain (NULL: none) */
  const char *tls_key;         /* its private key, unencrypted */
  const char *tls_server_name; /* the name each server's certificate must
                                  carry; NULL: its address's host */
  /* Added in 0.5. */
  fsps_wire_dtype wire_dtype; /* replaces the spec's (0: as the spec says) */
} fsps_options;

typedef struct fsps_client fsps_client;

/* fsps_options_init fills o with defaults (rank 0 of 1, BSP, prefetch 1,
 * reshard_after_forward on, timeout 120000 ms, 8 retries, one I/O thread;
 * servers NULL) and sets o->size, which fsps_connect requires: always start
 * from fsps_options_init, then set fields (new fields are added at the end,
 * and a library reading options from an older program takes defaults for
 * the fields that program did not know). A call to a server that answers
 * UNAVAILABLE (down, restarting) is made again up to `retries` more times,
 * after 100 ms doubling to at most 5 s (8 retries span about 16 s); a retried
 * push is never counted twice. One I/O thread serves every server connection
 * and copies what they bring, which costs the least CPU per byte; more (at most
 * one per server) spread the copies of many fast links over cores. A
 * wire_dtype other than FSPS_WIRE_AS_SPEC makes fsps_declare and fsps_attach
 * use the spec with that wire dtype instead of its own (its hash changes
 * with it): how a program whose spec is built elsewhere (fsps.torch, a
 * flag) picks bf16. */
void fsps_options_init(fsps_options *o);

/* Tokens (0.4). Servers started with --auth-tokens take only calls that
 * carry a known bearer token, and only the calls its role allows. With
 * o->token set (NULL or "" sends none) every call carries the metadata
 * `authorization: Bearer TOKEN`; fsps_connect copies the token, and libfsps
 * never prints it, in messages or anywhere else. A server that refuses a
 * call answers FSPS_UNAUTHENTICATED (no token, or one it does not know) or
 * FSPS_PERMISSION_DENIED (the token's role may not make that call), which
 * are never retried; fsps_last_error says "server ADDR refused the call"
 * and why. A token is 1 to 4096 visible ASCII characters, no spaces
 * (servers want at least 16). */

/* fsps_token_load finds a token the way fsps's tools do, for o->token:
 * from the file `path` if it is neither NULL nor "", else from the file
 * the environment variable FSPS_TOKEN_FILE names, else from the variable
 * FSPS_TOKEN itself. A token file holds the token alone on one line;
 * blank lines and lines starting with # are skipped. The file must be a
 * regular file other users can neither read nor write (chmod o-rwx).
 * Returns FSPS_OK with the token in out (outlen bytes, 4097 hold any);
 * FSPS_NOT_FOUND with out "" when no source is set; FSPS_IO when the file
 * cannot be read; FSPS_INVALID_ARGUMENT when the token or the file is
 * unusable (empty, two tokens, a character a header cannot carry, too
 * long for out, readable by other users). err (if not NULL) names the
 * source and never quotes the token. Thread-safe. */
int fsps_token_load(const char *path, char *out, size_t outlen, char *err,
                    size_t errlen);

/* fsps_options_init_size is fsps_options_init for options of `size` bytes,
 * sizeof *o as the caller's header has it: it writes none past them, and
 * o->size = size tells fsps_connect which fields the caller knows. The
 * macro below makes every fsps_options_init call pass that size, so a
 * program built against a shorter fsps_options is never written beyond its
 * end by a newer library; the function fsps_options_init, which programs
 * built before 0.4 call, fills the fields 0.3 had (through io_threads).
 * Added in 0.4. */
void fsps_options_init_size(fsps_options *o, size_t size);
#define fsps_options_init(o) fsps_options_init_size((o), sizeof *(o))

/* fsps_connect opens channels to every server (connection is lazy: a server
 * that is down shows on the first call). On success *out is the client;
 * close it with fsps_close. On failure err (if not NULL) says why.
 *
 * With tls_ca set, every connection is TLS (gRPC's SSL credentials), and
 * the server's certificate must be signed by a CA of that file and name
 * the host of the server's address (a DNS name or an IP address in its
 * subjectAltName), or tls_server_name when set (for one certificate shared
 * by all servers, or addresses the certificates do not name, as through a
 * port-forward). tls_cert and tls_key add this client's certificate, for
 * servers that require one (mutual TLS). The files are read and checked
 * here: an unreadable file is FSPS_IO; a file holding no PEM certificate or
 * key, a key that is not the certificate's, tls_cert without tls_ca or
 * tls_key, or an expired client certificate is FSPS_INVALID_ARGUMENT; err
 * names the file. The client keeps what it read for its life: a renewed
 * client certificate is used by clients connected after the renewal. A
 * handshake that fails (a server certificate of another CA, expired, or
 * not naming the host; a client certificate missing or refused; a
 * plaintext server) fails calls as a server that is down does:
 * FSPS_UNAVAILABLE after the retries, with OpenSSL's reason in the
 * message when the client saw it (FSPS_DEADLINE_EXCEEDED if the call's
 * time ran out first). */
int fsps_connect(const fsps_options *o, fsps_client **out, char *err,
                 size_t errlen);

/* fsps_close waits for pushes in flight, closes the channels and frees the
 * client and every buffer it handed out. NULL is fine. */
void fsps_close(fsps_client *c);

/* fsps_last_error returns the message of the client's last failure ("" if
 * none); valid until the next call on c. */
const char *fsps_last_error(const fsps_client *c);

/* fsps_tune_malloc keeps glibc malloc from handing freed memory back to
 * the kernel (M_TRIM_THRESHOLD 512 MiB, M_MMAP_THRESHOLD 256 MiB). Call it
 * once at start-up, before threads allocate, in any program that gathers
 * large layers. gRPC receives into fresh 64 KiB buffers and frees them once
 * a message is copied out; with glibc's defaults each free trims the heap
 * (madvise) and the next receive faults the pages in again, which on VMs
 * where a page fault costs 10-15 us made gathers 10x slower (0.3 instead of
 * 3 GB/s). These settings are process-wide, so libfsps never changes them
 * on its own; MALLOC_TRIM_THRESHOLD_=536870912 in the environment does the
 * same without code. Returns FSPS_OK, or FSPS_INTERNAL if glibc refused. */
int fsps_tune_malloc(void);

/* fsps_declare declares spec on every server (Init). Idempotent: the same
 * spec is OK, another one is FSPS_FAILED_PRECONDITION naming both hashes.
 * The client keeps its own copy of the spec. */
int fsps_declare(fsps_client *c, const fsps_spec *spec);

/* fsps_attach waits (up to timeout_ms) until every server has a model
 * declared, then checks that it is spec (by hash): what workers other than
 * the one that declares call. */
int fsps_attach(fsps_client *c, const fsps_spec *spec, int64_t timeout_ms);

/* fsps_layer_version returns, in *version, the version of layer l on every
 * server (the lowest of them, over the servers owning a non-empty slice of
 * it); for resuming after a restart. */
int fsps_layer_version(fsps_client *c, uint32_t layer, uint64_t *version);

/* fsps_recover brings the cluster back to a step every worker can go on
 * from, after a step failed (a server down beyond the retries, restarted,
 * or rolled back: FSPS_UNAVAILABLE, FSPS_FAILED_PRECONDITION or
 * FSPS_DEADLINE_EXCEEDED). It drops what the failed step left, waits (up
 * to the timeout) until every server answers, declares the model again on
 * a server that lost it, and when a server restarted since this client
 * last saw it (its incarnation changed), rolls every server back to the
 * lowest layer version any server holds: the restarted one's checkpoint,
 * which the others load from theirs (Rollback). *step gets the step to go
 * on from: in BSP and SSP the lowest layer version (for a worker starting
 * or restarting, the step the others are at); in ASP, which never rolls
 * back, 0. Call it from the trainer thread, outside a step; every worker
 * of the cluster may call it at once. */
int fsps_recover(fsps_client *c, uint64_t *step);

/* fsps_set_values gives the version-0 values of layer l, whose tensors
 * all have init "client": values holds its n floats (all finite), read
 * only, the caller's again when the call returns. Each server is sent its
 * slice, streamed in 1 MiB chunks like a push, and takes it whole or not at
 * all; a server's pulls of the layer wait until its slice is there, so a
 * gather of it succeeds only once every server holds the values. One
 * worker (rank 0, say) gives them and every worker gathers; giving the
 * same values again (a retry, or several workers giving the same) is OK.
 * Blocking; a server answering UNAVAILABLE is asked again as a push is.
 * Returns FSPS_OK, or: FSPS_INVALID_ARGUMENT (no such layer, values NULL
 * or holding NaN or Inf), FSPS_FAILED_PRECONDITION (the layer's init is not
 * "client"; it has begun training, a push of it counted; no model),
 * FSPS_ALREADY_EXISTS (a server holds other values for it), or what a
 * server said; a refusal changes nothing on that server. The servers keep
 * the values through checkpoints and rollbacks to version 0; a server that
 * restarts without a checkpoint holding them has lost them and awaits them
 * again (its gathers wait): call fsps_set_values again after fsps_recover,
 * the other servers take the same values as a duplicate. */
int fsps_set_values(fsps_client *c, uint32_t layer, const float *values);

/* ---- gather and push ---------------------------------------------------
 * The building blocks; most trainers use the step scheduler below. */

/* fsps_gather pulls layer l from all servers in parallel into dst (the
 * layer's n floats), waiting until every slice is at version >= min_version.
 * *version (if not NULL) gets the lowest version received. Blocking. */
int fsps_gather(fsps_client *c, uint32_t layer, uint64_t min_version,
                float *dst, uint64_t *version);

/* fsps_gather_range is fsps_gather of elements [offset, offset + count)
 * of layer l into dst (count floats): a part of a layer, pulled from the
 * servers whose slices hold it. */
int fsps_gather_range(fsps_client *c, uint32_t layer, uint64_t min_version,
                      uint64_t offset, uint64_t count, float *dst,
                      uint64_t *version);

/* fsps_push sends grad (the layer's n floats) for step: slice s to server s,
 * without waiting. grad must stay unchanged until fsps_push_wait returns. */
int fsps_push(fsps_client *c, uint32_t layer, uint64_t step, const float *grad);

/* fsps_push_wait waits for every push in flight; returns the first error. */
int fsps_push_wait(fsps_client *c);

/* ---- step scheduler ----------------------------------------------------
 * One synchronous step: forward over layers 0..L-1, backward over L-1..0.
 *
 *   fsps_step_begin(c, t);
 *   for l in 0..L-1: fsps_forward(c, l, &w); ...compute...;
 * fsps_forward_done(c, l); for l in L-1..0: fsps_backward(c, l, &w, &g);
 * ...write g...; fsps_backward_done(c, l); fsps_step_end(c);
 *
 * fsps_forward returns layer l's parameters gathered at the step's version,
 * having started gathers of the next `prefetch` layers; backward does the
 * same in reverse order, re-gathering layers freed after forward. Buffers
 * come from a pool sized by the layers in use, so memory is bounded by the
 * gathered layers, not the model. In backward a prefetch starts once the
 * gradients pushed before it are gone and reuses one of their buffers, so
 * with reshard_after_forward and fsps_backward_inplace a worker holds at
 * most prefetch + 1 layer buffers at a time. Once a step has shown the
 * pool's buffers, forward also keeps the layers whose buffers the rest of
 * the step would not reuse (it may add small buffers, at most 1/64 of the
 * pool, for small layers that would otherwise take a big one), so they
 * need not be gathered again. */

/* fsps_step_begin starts step t: gathers ask for version t (BSP), t - tau
 * (SSP) or 0 (ASP), and the first layer's gather starts now. */
int fsps_step_begin(fsps_client *c, uint64_t step);

/* fsps_forward sets *params to layer l's parameters (n floats, read-only,
 * valid until fsps_forward_done or, when not resharding, fsps_step_end). */
int fsps_forward(fsps_client *c, uint32_t layer, const float **params);

/* fsps_forward_done releases layer l after forward (frees it when
 * reshard_after_forward, except the last layer and the `prefetch` layers
 * before it, which backward needs first: gathering them again would take
 * as much memory as keeping them; and except layers the step scheduler's
 * plan keeps, see above). */
int fsps_forward_done(fsps_client *c, uint32_t layer);

/* fsps_backward sets *params to layer l's parameters and *grad to a buffer
 * of n floats for its gradient (contents undefined: overwrite it). It
 * waits while more than `prefetch` (at least one) earlier gradients are
 * still being pushed, which bounds the memory they hold. */
int fsps_backward(fsps_client *c, uint32_t layer, const float **params,
                  float **grad);

/* fsps_backward_inplace is fsps_backward for a trainer that writes the
 * gradient over the parameters, which saves a layer-sized buffer: *buf is
 * layer l's parameters (n floats) in a buffer the trainer owns until
 * fsps_backward_done; it reads them as parameters, then overwrites all n
 * floats with the gradient, which fsps_backward_done pushes. Called again
 * before fsps_backward_done, it returns the same buffer as it is. Layers
 * may mix the two calls; fsps_backward_inplace never waits for pushes. */
int fsps_backward_inplace(fsps_client *c, uint32_t layer, float **buf);

/* fsps_backward_done pushes layer l's gradient (without waiting) and
 * releases the layer's parameters. */
int fsps_backward_done(fsps_client *c, uint32_t layer);

/* ---- layers in pieces ---------------------------------------------------
 * A layer too big to hold whole (FSDP's memory bound is one layer) can be
 * cut into pieces that the step scheduler gathers, prefetches, frees and
 * pushes one at a time: the worker then holds `prefetch` + 1 pieces, not
 * layers. Piece i of layer l is elements [bounds[i], bounds[i + 1]).
 *
 *   for each layer l, forward: for p in 0..P-1: fsps_forward_piece(c, l,
 *     p, &w); ...; fsps_forward_piece_done(c, l, p);
 *   backward, layers L-1..0: for p in P-1..0: fsps_backward_piece(c, l, p,
 *     &buf); ...overwrite buf with the piece's gradient...;
 *     fsps_backward_piece_done(c, l, p);
 *
 * Each piece's gradient is copied, as it is done, into 1 MiB chunks of a
 * push that streams the layer's slices to the servers while the next
 * pieces compute (at most 4 such chunks wait for the network at a time).
 * Unlike a whole layer's push, such a push cannot be retried once its
 * pieces are gone: if a server fails it, fsps_step_end reports the error
 * (UNAVAILABLE and the like) and the step must be computed again (see
 * fsps_recover). The layer-wide calls (fsps_forward, ...) refuse a layer in
 * pieces; the piece calls take piece 0 of a layer in one piece. */

/* fsps_set_pieces cuts layer l into npieces at bounds[0..npieces] (0 =
 * bounds[0] < bounds[1] < ... < bounds[npieces] = the layer's size;
 * npieces 1 and bounds NULL make it whole again). Between steps. */
int fsps_set_pieces(fsps_client *c, uint32_t layer, uint32_t npieces,
                    const uint64_t *bounds);

/* fsps_num_pieces returns how many pieces layer l is in (0: no layer). */
uint32_t fsps_num_pieces(const fsps_client *c, uint32_t layer);

/* fsps_forward_piece / fsps_forward_piece_done: fsps_forward and
 * fsps_forward_done for piece p of layer l (its elements only). */
int fsps_forward_piece(fsps_client *c, uint32_t layer, uint32_t piece,
                       const float **params);
int fsps_forward_piece_done(fsps_client *c, uint32_t layer, uint32_t piece);

/* fsps_backward_piece / fsps_backward_piece_done: fsps_backward_inplace
 * and fsps_backward_done for piece p of layer l: *buf holds the piece's
 * parameters; overwrite them with its gradient. */
int fsps_backward_piece(fsps_client *c, uint32_t layer, uint32_t piece,
                        float **buf);
int fsps_backward_piece_done(fsps_client *c, uint32_t layer, uint32_t piece);

/* fsps_step_end waits for the step's pushes; returns the first error. */
int fsps_step_end(fsps_client *c);

/* ---- operating a cluster ----------------------------------------------
 * What an operator's tool (fsps-ctl) calls: each server's state, and the
 * Checkpoint and Rollback calls. A client for these needs no model: connect
 * with the servers' addresses (rank 0 of world 1 is fine) and call them.
 * Added in 0.3. */

/* fsps_num_servers returns S, the number of servers c was given. */
uint32_t fsps_num_servers(const fsps_client *c);

/* What every server said to one Status call: opaque, read with the
 * fsps_status_* accessors below, freed with fsps_status_free. Strings and
 * arrays it hands out live as long as it does. */
typedef struct fsps_status fsps_status;

/* fsps_status_get asks every server, in order, for its state (Status;
 * UNAVAILABLE is retried as c's options say). Returns FSPS_OK when every
 * server answered; otherwise the code of the first server that did not,
 * with fsps_last_error naming it. In both cases *out is a new status
 * object holding what each server said or why it did not answer
 * (fsps_status_error); only when out of memory or given NULL is *out NULL.
 * Free it with fsps_status_free. */
int fsps_status_get(fsps_client *c, fsps_status **out);

/* fsps_status_free frees st and everything its accessors handed out. NULL
 * is fine. */
void fsps_status_free(fsps_status *st);

/* Accessors. s is the server's position in the client's list (0..S-1), l a
 * layer index. Out of range, or for a server that did not answer, they
 * return 0, false, "" or an empty list. Each takes a const status and may
 * be called from any thread while none frees it. */

/* fsps_status_num_servers returns S; fsps_status_address server s's
 * address as the client was given it. */
uint32_t fsps_status_num_servers(const fsps_status *st);
const char *fsps_status_address(const fsps_status *st, uint32_t s);

/* fsps_status_error returns FSPS_OK if server s answered, else the error
 * of its call; *msg (if msg is not NULL) gets a message ("" when OK). */
int fsps_status_error(const fsps_status *st, uint32_t s, const char **msg);

/* Server s as it describes itself: whether a model is declared, its index
 * and S (which fsps_status_get does not check against the list), the
 * number of workers W it waits for, its mode ("bsp", "ssp", "asp"), the
 * declared model's hash, its incarnation (random, drawn at start: a
 * change means a restart) and the cluster epoch it is in (UINT64_MAX while
 * a rollback runs). */
bool fsps_status_initialized(const fsps_status *st, uint32_t s);
uint32_t fsps_status_server_index(const fsps_status *st, uint32_t s);
uint32_t fsps_status_server_count(const fsps_status *st, uint32_t s);
uint32_t fsps_status_num_workers(const fsps_status *st, uint32_t s);
const char *fsps_status_mode(const fsps_status *st, uint32_t s);
uint64_t fsps_status_spec_hash(const fsps_status *st, uint32_t s);
uint64_t fsps_status_incarnation(const fsps_status *st, uint32_t s);
uint64_t fsps_status_epoch(const fsps_status *st, uint32_t s);

/* fsps_status_checkpoints returns how many checkpoint versions server s
 * holds files of and sets *versions (if not NULL) to them, newest first:
 * the versions fsps_rollback can take it back to (besides 0). */
uint32_t fsps_status_checkpoints(const fsps_status *st, uint32_t s,
                                 const uint64_t **versions);

/* fsps_status_num_layers returns the number of layers server s holds. */
/* fsps_status_model_spec returns server s's declared model as an encoded
 * ModelSpec (fsps_spec_decode reads it) and sets *len to its size; NULL
 * with *len 0 when it has none, or is an older server that does not say. */
const void *fsps_status_model_spec(const fsps_status *st, uint32_t s,
                                   size_t *len);

uint32_t fsps_status_num_layers(const fsps_status *st, uint32_t s);

/* Layer l on server s: its name, its element count n and server s's
 * slice of it (count 0: an empty slice, whose version never moves), its
 * version (optimizer updates applied), the step being collected, and
 * whether it awaits its values (init "client", fsps_set_values). */
const char *fsps_status_layer_name(const fsps_status *st, uint32_t s,
                                   uint32_t l);
uint64_t fsps_status_layer_size(const fsps_status *st, uint32_t s, uint32_t l);
uint64_t fsps_status_layer_slice_count(const fsps_status *st, uint32_t s,
                                       uint32_t l);
uint64_t fsps_status_layer_version(const fsps_status *st, uint32_t s,
                                   uint32_t l);
uint64_t fsps_status_layer_pending_step(const fsps_status *st, uint32_t s,
                                        uint32_t l);
bool fsps_status_layer_awaiting_values(const fsps_status *st, uint32_t s,
                                       uint32_t l);

/* Workers (ranks, ascending) of layer l's pending step on server s: those
 * whose push arrived, those it still waits for, and those it stopped
 * waiting for (--on-worker-timeout proceed). Each returns the count and
 * sets *workers (if not NULL) to the array. */
uint32_t fsps_status_layer_pushed(const fsps_status *st, uint32_t s,
                                  uint32_t l, const uint32_t **workers);
uint32_t fsps_status_layer_missing(const fsps_status *st, uint32_t s,
                                   uint32_t l, const uint32_t **workers);
uint32_t fsps_status_layer_absent(const fsps_status *st, uint32_t s,
                                  uint32_t l, const uint32_t **workers);

/* fsps_checkpoint asks server s (0..S-1) to write a checkpoint of its
 * slices now (Checkpoint; the server needs --checkpoint-dir). path (if
 * not NULL) gets the file's path, truncated to pathlen; *min_version and
 * *bytes (each may be NULL) the lowest layer version the file holds and
 * its size. Blocking. Taken while workers push, the file may hold layers
 * at different versions, which a rollback cannot use; files written by
 * --checkpoint-every are step boundaries. Returns FSPS_OK or what the
 * server said (FSPS_FAILED_PRECONDITION without --checkpoint-dir or while
 * a layer awaits its values, FSPS_IO and the like), fsps_last_error naming
 * the server. */
int fsps_checkpoint(fsps_client *c, uint32_t s, char *path, size_t pathlen,
                    uint64_t *min_version, uint64_t *bytes);

/* fsps_rollback takes every server back to version and into a new cluster
 * epoch (Rollback), so that nothing computed before counts after: workers'
 * pulls and pushes of the old epoch are refused (FSPS_FAILED_PRECONDITION)
 * and fsps_recover takes them on from version. It first asks every server
 * for its state and changes nothing unless all answered, hold the same
 * model (c's, if it has one) and can go back to version: a version their
 * layers have not passed and that they hold a checkpoint of, or all their
 * layers are at, or 0 (the initial values). The spec hash and the new
 * epoch (*epoch, if not NULL; c's pulls and pushes carry it from then on)
 * are derived from the servers' states, so a call repeated after a
 * failure on the same states chooses the same epoch. Blocking. Returns
 * FSPS_OK; FSPS_FAILED_PRECONDITION (nothing changed: no model, models
 * differ, a server cannot go back to version; or a server refused,
 * fsps_last_error then says which servers were rolled back already);
 * FSPS_ABORTED (a rollback by someone else is running: try again); or the
 * error of a server that did not answer. */
int fsps_rollback(fsps_client *c, uint64_t version, uint64_t *epoch);

/* Counters for progress reports: seconds the trainer thread spent blocked
 * on the network (gather waits, push waits) since connect. */
double fsps_wait_seconds(const fsps_client *c);

/* fsps_peak_buffer_bytes returns the most bytes of layer and gradient
 * buffers held at once. */
uint64_t fsps_peak_buffer_bytes(const fsps_client *c);

/* fsps_bytes_moved sets *gathered and *pushed (either may be NULL) to the
 * bytes of layers gathered and of gradients pushed since connect, as they
 * travel (2 bytes an element with the bf16 wire dtype, 4 with fp32), each
 * counted once however often it was retried. Same thread rule as every
 * call on c. */
void fsps_bytes_moved(const fsps_client *c, uint64_t *gathered,
                      uint64_t *pushed);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif

#endif
