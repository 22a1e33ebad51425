/* shard.h: the model spec, slice arithmetic, wire chunking and deterministic
 * initialisation shared by fsps servers and clients. Pure C, no I/O. */
#ifndef FSPS_SHARD_H
#define FSPS_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsps_err.h"

#define SHARD_STRIPE                                                           \
  16 /* slice stride granularity, elements (a cache line)                      \
      */
#define SHARD_CHUNK_BYTES (1u << 20) /* max payload bytes per wire chunk */
#define SHARD_CHUNK_ELEMS (SHARD_CHUNK_BYTES / 4)
#define SHARD_NAME_MAX 64 /* bytes of a layer or tensor name, including NUL */
#define SHARD_MAX_DIMS 4
#define SHARD_MAX_LAYERS 4096
/* The most servers (S) and workers (W) a cluster may have: servers,
 * clients and tools check against these, so what one accepts the others do
 * too. */
#define SHARD_MAX_SERVERS 65536
#define SHARD_MAX_WORKERS 65536
#define SHARD_MAX_TENSORS 64 /* per layer */
/* Largest layer accepted by validation, in elements (4 TiB of float32). */
#define SHARD_MAX_LAYER_ELEMS (UINT64_C(1) << 40)

/* ---- Enumerations and their names ------------------------------------- */

/* Init parameters a, b by kind:
 *   ZEROS           (unused)
 *   CONSTANT        value a
 *   UNIFORM         U(a, b), a <= b
 *   NORMAL          N(mean a, std b), b >= 0
 *   XAVIER_UNIFORM  gain a (0 means 1); bound = gain*sqrt(6/(fan_in+fan_out))
 *   HE_UNIFORM      kaiming_uniform_ for relu; bound = sqrt(6/fan_in)
 *   CLIENT          (unused) the values are given by a client (SetValues),
 *                   not drawn; shard_init_fill writes zeros for them
 * fan_in/fan_out follow PyTorch: dims[0] is out, dims[1] is in, each times
 * the product of dims[2..] (the receptive field). A 1-D tensor has no fan, so
 * validation refuses xavier/he on it. A client gives a whole layer's values
 * at once, so validation refuses a layer mixing CLIENT with other kinds. */
typedef enum {
  SHARD_INIT_ZEROS,
  SHARD_INIT_CONSTANT,
  SHARD_INIT_UNIFORM,
  SHARD_INIT_NORMAL,
  SHARD_INIT_XAVIER_UNIFORM,
  SHARD_INIT_HE_UNIFORM,
  SHARD_INIT_CLIENT
} shard_init_kind;

typedef enum {
  SHARD_OPT_SGD,
  SHARD_OPT_ADAM,
  SHARD_OPT_ADAMW,
  SHARD_OPT_ADAGRAD
} shard_opt_kind;

typedef enum {
  SHARD_SCHED_CONSTANT,
  SHARD_SCHED_STEP,
  SHARD_SCHED_COSINE
} shard_sched_kind;

/* How a model's parameters and gradients travel (pulls and pushes): as
 * float32, or as bfloat16 (float32's top 16 bits, rounded to nearest even).
 * Servers keep float32 parameters and optimizer state and sum in float32
 * either way; wire/ says how each is encoded. */
typedef enum { SHARD_WIRE_FP32, SHARD_WIRE_BF16 } shard_wire_dtype;

/* The *_parse functions map a lower-case name ("sgd", "adam", "adamw",
 * "adagrad"; "zeros", "constant", "uniform", "normal", "xavier_uniform",
 * "he_uniform", "client"; "constant", "step", "cosine") to its enum value. They
 * return FSPS_OK and set *out, or FSPS_INVALID_ARGUMENT (NULL or unknown name,
 * *out untouched). Thread-safe. */
int shard_opt_kind_parse(const char *name, shard_opt_kind *out);
int shard_init_kind_parse(const char *name, shard_init_kind *out);
int shard_sched_kind_parse(const char *name, shard_sched_kind *out);
/* Wire dtypes: "fp32", "bf16". */
int shard_wire_dtype_parse(const char *name, shard_wire_dtype *out);

/* The *_parse_msg variants do the same and, on failure, also write into msg
 * (when msg is non-NULL and msglen > 0; always NUL-terminated) a sentence
 * naming the bad value and listing the accepted ones, e.g. "unknown
 * optimizer 'adamx'; expected one of: sgd, adam, adamw, adagrad". msg is
 * untouched on success. Thread-safe. */
int shard_opt_kind_parse_msg(const char *name, shard_opt_kind *out, char *msg,
                             size_t msglen);
int shard_init_kind_parse_msg(const char *name, shard_init_kind *out, char *msg,
                              size_t msglen);
int shard_sched_kind_parse_msg(const char *name, shard_sched_kind *out,
                               char *msg, size_t msglen);
int shard_wire_dtype_parse_msg(const char *name, shard_wire_dtype *out,
                               char *msg, size_t msglen);

/* The *_name functions return the static name of a kind (the inverse of
 * *_parse), or "unknown" for a value outside the enum. Thread-safe. */
const char *shard_opt_kind_name(shard_opt_kind kind);
const char *shard_init_kind_name(shard_init_kind kind);
const char *shard_sched_kind_name(shard_sched_kind kind);
const char *shard_wire_dtype_name(shard_wire_dtype dtype);

/* ---- Model spec -------------------------------------------------------- */

typedef struct {
  char name[SHARD_NAME_MAX];
  uint32_t ndims;
  uint64_t dims[SHARD_MAX_DIMS];
  shard_init_kind init;
  double init_a, init_b;
  uint64_t offset; /* computed: first element within the layer */
  uint64_t numel;  /* computed: product of dims (0 when ndims is 0),
                      UINT64_MAX when it overflows */
} shard_tensor;

typedef struct {
  char name[SHARD_NAME_MAX];
  uint32_t ntensors;
  shard_tensor *tensors;
  uint64_t n; /* computed: total elements; UINT64_MAX on overflow */
} shard_layer;

/* Optimizer and learning-rate schedule. Fields an optimizer does not use are
 * still part of the spec (hashed and compared) but only range-checked where
 * they matter. Schedules: STEP multiplies lr by gamma every step_size steps;
 * COSINE anneals from lr to eta_min over t_max steps; a linear warmup from
 * warmup_start_factor*lr over warmup_steps steps precedes either (0 = none).
 */
typedef struct {
  shard_opt_kind kind;
  double lr, momentum, dampening, weight_decay, beta1, beta2, eps, lr_decay,
      initial_accumulator_value;
  bool nesterov;
  shard_sched_kind schedule;
  uint64_t step_size;
  double gamma;
  uint64_t t_max;
  double eta_min;
  uint64_t warmup_steps;
  double warmup_start_factor;
} shard_optim_spec;

/* shard_optim_defaults fills *o (every field) with PyTorch's (1.13)
 * defaults for kind: sgd momentum 0, dampening 0; adam/adamw lr 1e-3, betas
 * 0.9 and 0.999, eps 1e-8, weight_decay 0 (adam) or 0.01 (adamw); adagrad
 * lr 0.01, lr_decay 0, eps 1e-10, initial_accumulator_value 0. torch.optim.SGD
 * has no default lr; sgd's lr here is 0.01, fsps's own, for a spec built
 * without one (a ModelSpec that leaves it unset is refused by wire/). Fields
 * the kind does not use are 0. Schedule constant, gamma 0.1 (StepLR),
 * warmup_start_factor 1/3 (LinearLR), other schedule fields 0. Returns FSPS_OK,
 * or FSPS_INVALID_ARGUMENT when o is NULL or kind is out of range (then *o
 * holds the SGD defaults with o->kind = kind, which validation refuses).
 * Thread-safe. */
int shard_optim_defaults(shard_opt_kind kind, shard_optim_spec *o);

/* An opaque model spec: seed, ordered layers of tensors, optimizer. It owns
 * its layers and tensors. Not thread-safe for mutation; once built, any
 * number of threads may call the const functions concurrently. */
typedef struct shard_spec shard_spec;

/* shard_spec_create returns a new empty spec with the given init seed and
 * the SGD defaults as optimizer; the caller owns it and frees it with
 * shard_spec_destroy. Returns NULL when out of memory. */
shard_spec *shard_spec_create(uint64_t seed);

/* shard_spec_destroy frees spec and everything it owns. NULL is a no-op. */
void shard_spec_destroy(shard_spec *spec);

/* shard_spec_add_layer appends an empty layer named name (copied); its index
 * is the number of layers added before it. Returns FSPS_OK, FSPS_NOMEM, or
 * FSPS_INVALID_ARGUMENT when spec is NULL, name is NULL or too long
 * (>= SHARD_NAME_MAX bytes), or SHARD_MAX_LAYERS is reached; the layer is
 * then not added and the spec remembers the problem, so shard_spec_validate
 * reports it. Empty and duplicate names are accepted here and refused by
 * validation. Invalidates pointers from shard_spec_layer. */
int shard_spec_add_layer(shard_spec *spec, const char *name);

/* shard_spec_add_tensor appends a tensor to the last layer added: name is
 * copied, dims[0..ndims) is copied (dims may be NULL when ndims is 0). The
 * tensor's offset and numel and the layer's n are computed here. Returns
 * FSPS_OK, FSPS_NOMEM, or FSPS_INVALID_ARGUMENT when spec is NULL, no layer
 * exists yet, name is NULL or too long, ndims > SHARD_MAX_DIMS, dims is NULL
 * with ndims > 0, or the layer already has SHARD_MAX_TENSORS tensors; the
 * tensor is then not added and the spec remembers the problem for
 * shard_spec_validate. Content problems (zero dims, bad init parameters) are
 * left to validation. */
int shard_spec_add_tensor(shard_spec *spec, const char *name, uint32_t ndims,
                          const uint64_t *dims, shard_init_kind init, double a,
                          double b);

/* shard_spec_set_optim copies *o into spec. NULL spec or o is a no-op. */
void shard_spec_set_optim(shard_spec *spec, const shard_optim_spec *o);

/* shard_spec_set_wire_dtype sets how the model travels (SHARD_WIRE_FP32
 * when never set). A value outside the enum is stored and refused by
 * validation. NULL spec is a no-op. */
void shard_spec_set_wire_dtype(shard_spec *spec, shard_wire_dtype dtype);

/* Accessors; spec must be non-NULL. shard_spec_layer returns a pointer
 * owned by spec, valid until the next add or destroy, or NULL when l is out
 * of range. shard_spec_optim returns a pointer owned by spec. */
uint64_t shard_spec_seed(const shard_spec *spec);
uint32_t shard_spec_num_layers(const shard_spec *spec);
const shard_layer *shard_spec_layer(const shard_spec *spec, uint32_t l);
const shard_optim_spec *shard_spec_optim(const shard_spec *spec);
shard_wire_dtype shard_spec_wire_dtype(const shard_spec *spec);

/* shard_layer_client returns whether layer L's values are given by a
 * client (its tensors' init is SHARD_INIT_CLIENT; validation makes it all
 * or none of them) rather than drawn by the servers. Thread-safe. */
bool shard_layer_client(const shard_layer *L);

/* shard_spec_find_layer sets *index to the first layer named name and
 * returns FSPS_OK, or returns FSPS_NOT_FOUND (FSPS_INVALID_ARGUMENT for NULL
 * arguments). Linear in the number of layers. */
int shard_spec_find_layer(const shard_spec *spec, const char *name,
                          uint32_t *index);

/* shard_spec_validate checks everything a server must refuse before it
 * allocates anything: names (empty, too long, duplicate layers, duplicate
 * tensors within a layer), empty layers, shapes (ndims, zero dims, layer
 * size > SHARD_MAX_LAYER_ELEMS), init kinds and parameters, and the
 * optimizer and schedule fields. Returns FSPS_OK, or FSPS_INVALID_ARGUMENT
 * and writes into msg (when non-NULL with msglen > 0; NUL-terminated,
 * truncated to fit) one sentence naming the first culprit's layer, tensor or
 * field and what is expected. Thread-safe on a spec nobody mutates. */
int shard_spec_validate(const shard_spec *spec, char *msg, size_t msglen);

/* shard_spec_hash returns a stable 64-bit hash of every field of the spec
 * (seed, layer and tensor names, dims, init kinds and parameters, every
 * optimizer and schedule field, the wire dtype), computed over an explicit
 * little-endian encoding, so it is the same on every machine and build. The
 * wire dtype adds to the hash only when it is not fp32, so a float32
 * model's hash is what it was before the dtype existed (checkpoints of it
 * still match). Computed fields
 * (offsets, sizes) are implied by the inputs. Thread-safe on a spec nobody
 * mutates. NULL hashes as 0. */
uint64_t shard_spec_hash(const shard_spec *spec);

/* shard_spec_hash_hex writes hash as 16 lower-case hex digits and a NUL into
 * out. Thread-safe. */
void shard_spec_hash_hex(uint64_t hash, char out[17]);

/* shard_spec_equal returns true when a and b agree on every hashed field
 * (doubles compared by bit pattern, as the hash sees them). Two NULLs are
 * equal. Thread-safe on specs nobody mutates. */
bool shard_spec_equal(const shard_spec *a, const shard_spec *b);

/* ---- Slices and chunks ------------------------------------------------- */

/* shard_stride returns c, the slice stride of a layer of n elements over S
 * servers: ceil(n/S) rounded up to a multiple of SHARD_STRIPE. Returns 0
 * when n or S is 0. n must be at most 2^64 - 16. Thread-safe. */
uint64_t shard_stride(uint64_t n, uint32_t S);

/* shard_slice sets *offset and *count to server s's slice of a layer of n
 * elements over S servers: [s*c, min(n, (s+1)*c)). A slice is empty when
 * s*c >= n (or s >= S); its *offset is then n, so slices in server order
 * always tile [0, n). Either pointer may be NULL. Thread-safe. */
void shard_slice(uint64_t n, uint32_t S, uint32_t s, uint64_t *offset,
                 uint64_t *count);

/* shard_owner returns the server owning element e of a layer of n elements
 * over S servers, or S when e >= n or S is 0. Thread-safe. */
uint32_t shard_owner(uint64_t n, uint32_t S, uint64_t e);

/* shard_num_chunks returns how many wire chunks carry a slice of count
 * elements: ceil(count / SHARD_CHUNK_ELEMS), 0 for an empty slice.
 * Thread-safe. */
uint64_t shard_num_chunks(uint64_t count);

/* shard_chunk sets *offset (relative to the slice start) and *len of chunk i
 * of a slice of count elements; chunks are contiguous and all but the last
 * hold SHARD_CHUNK_ELEMS. For i >= shard_num_chunks(count) it sets *offset
 * to count and *len to 0. Either pointer may be NULL. Thread-safe. */
void shard_chunk(uint64_t count, uint64_t i, uint64_t *offset, uint64_t *len);

/* ---- Deterministic initialisation ------------------------------------- */

/* shard_init_fill writes elements [offset, offset+count) of layer l's
 * flattened initial vector into out[0..count), crossing tensor boundaries as
 * needed. Element i's value depends only on the seed, l, i and the owning
 * tensor's init kind and parameters (Philox4x32-10 keyed by the seed, with
 * counter (i, l)), never on offset, count or S, so every slicing yields the
 * same bits. Elements of SHARD_INIT_CLIENT tensors are 0: a placeholder
 * until a client gives the values. The spec should have passed
 * shard_spec_validate. Returns FSPS_OK, or FSPS_INVALID_ARGUMENT when spec is
 * NULL, l is out of range, the range exceeds the layer, or out is NULL with
 * count > 0. The caller owns out. Thread-safe on a spec nobody mutates. */
int shard_init_fill(const shard_spec *spec, uint32_t l, uint64_t offset,
                    uint64_t count, float *out);

/* shard_rand_uniform returns the uniform double in [0, 1) (53 random bits)
 * that initialisation draws for element index of layer l under seed; it is
 * exposed for tests and tools. Thread-safe. */
double shard_rand_uniform(uint64_t seed, uint32_t layer, uint64_t index);

#endif
