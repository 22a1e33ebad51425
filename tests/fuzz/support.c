/* support.c: the fuzz targets' shared helpers — input reading, messages
 * made of fuzz bytes, the fixture model, services over real stores, temp
 * folders and CRC32C (see fuzz.h). */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsps.pb-c.h"
#include "fuzz.h"
#include "log.h"

_Noreturn void fuzz_fail(const char *file, int line, const char *what) {
  fprintf(stderr, "%s:%d: fuzz check failed: %s\n", file, line, what);
  abort();
}

/* ---- reading the fuzz input ---- */

uint8_t fuzz_u8(fuzz_in *in) {
  if (in->n == 0)
    return 0;
  in->n--;
  return *in->p++;
}

uint16_t fuzz_u16(fuzz_in *in) {
  uint16_t lo = fuzz_u8(in);
  return (uint16_t)(lo | fuzz_u8(in) << 8);
}

size_t fuzz_bytes(fuzz_in *in, size_t want, const uint8_t **out) {
  size_t n = want < in->n ? want : in->n;
  *out = in->p;
  in->p += n;
  in->n -= n;
  return n;
}

/* ---- received messages ---- */

#define MAX_SLICES 40

static int cmp_size(const void *a, const void *b) {
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return x < y ? -1 : x > y;
}

/* cut_points fills cut[0..k] with 0 = cut[0] <= ... <= cut[k] = n. */
static void cut_points(size_t n, size_t k, unsigned split, size_t *cut) {
  uint32_t x = split * 2654435761u;
  cut[0] = 0;
  cut[k] = n;
  for (size_t i = 1; i < k; i++) {
    x = x * 1103515245u + 12345u;
    cut[i] = (x >> 8) % (n + 1);
  }
  qsort(cut + 1, k - 1, sizeof *cut, cmp_size);
}

static void free_piece(void *p) {
  free(p);
}

/* piece copies p[0..n) into a slice of its own exact allocation, so that
 * AddressSanitizer sees any read past the end of a slice. */
static grpc_slice piece(const uint8_t *p, size_t n) {
  if (n == 0)
    return grpc_empty_slice();
  void *copy = malloc(n);
  fuzz_check(copy != NULL);
  memcpy(copy, p, n);
  return grpc_slice_new(copy, n, free_piece);
}

static int msg_open(fuzz_msg *fm) {
  fuzz_check(fm->bb != NULL);
  int rc = rpc_msg_open(&fm->m, fm->bb);
  if (rc != FSPS_OK) {
    grpc_byte_buffer_destroy(fm->bb);
    fm->bb = NULL;
  }
  return rc;
}

int fuzz_msg_bytes(fuzz_msg *fm, const void *data, size_t n, unsigned split) {
  size_t k = 1 + split % MAX_SLICES, cut[MAX_SLICES + 1];
  grpc_slice s[MAX_SLICES];
  cut_points(n, k, split, cut);
  for (size_t i = 0; i < k; i++)
    s[i] = piece((const uint8_t *)data + cut[i], cut[i + 1] - cut[i]);
  fm->bb = grpc_raw_byte_buffer_create(s, k);
  for (size_t i = 0; i < k; i++)
    grpc_slice_unref(s[i]);
  return msg_open(fm);
}

int fuzz_msg_tensor(fuzz_msg *fm, const rpc_tensor_hdr *h, const void *data,
                    size_t nbytes) {
  fm->bb = rpc_pack_tensor(h, data, nbytes, NULL, NULL);
  return msg_open(fm);
}

void fuzz_msg_close(fuzz_msg *fm) {
  if (fm->bb == NULL)
    return;
  rpc_msg_close(&fm->m);
  grpc_byte_buffer_destroy(fm->bb);
  fm->bb = NULL;
}

/* ---- the fixture model ---- */

void fuzz_config(server_config *c, unsigned flags) {
  static const server_mode modes[] = {MODE_BSP, MODE_SSP, MODE_ASP, MODE_BSP};
  memset(c, 0, sizeof *c);
  snprintf(c->listen, sizeof c->listen, "127.0.0.1:0");
  c->index = FUZZ_INDEX;
  c->num_servers = FUZZ_SERVERS;
  c->workers = FUZZ_WORKERS;
  c->threads = 1;
  c->mode = modes[flags & 3];
  c->staleness = c->mode == MODE_SSP ? 1 : 0;
  c->deterministic = (flags & 3) == 3;
  c->nan_skip = (flags & 4) != 0;
  c->log_level = LOG_ERROR;
  c->keep = 1;
}

static void tensor(Fsps__V1__TensorSpec *t, const char *name, size_t ndims,
                   uint64_t *dims, Fsps__V1__InitKind init, double a) {
  fsps__v1__tensor_spec__init(t);
  t->name = (char *)name;
  t->n_dims = ndims;
  t->dims = dims;
  t->init = init;
  t->init_a = a;
}

static void layer(Fsps__V1__LayerSpec *L, const char *name, size_t n,
                  Fsps__V1__TensorSpec **t) {
  fsps__v1__layer_spec__init(L);
  L->name = (char *)name;
  L->n_tensors = n;
  L->tensors = t;
}

/* Sets the hyper-parameters each kind needs and leaves the others unset
 * (PyTorch's defaults); sgd must carry its lr. */
static void optimizer(Fsps__V1__OptimizerSpec *o, fuzz_optim kind) {
  static char *names[] = {"sgd", "sgd", "adam", "adagrad"};
  fsps__v1__optimizer_spec__init(o);
  o->name = names[kind];
  o->lr = kind == FUZZ_ADAM ? 1e-3 : 1e-2;
  o->_lr_case = FSPS__V1__OPTIMIZER_SPEC___LR_LR;
  if (kind == FUZZ_MOMENTUM) {
    o->momentum = 0.9;
    o->_momentum_case = FSPS__V1__OPTIMIZER_SPEC___MOMENTUM_MOMENTUM;
  }
  o->schedule = kind == FUZZ_ADAM ? FSPS__V1__SCHEDULE__SCHEDULE_COSINE
                                  : FSPS__V1__SCHEDULE__SCHEDULE_CONSTANT;
  o->t_max = kind == FUZZ_ADAM ? 100 : 0;
}

uint8_t *fuzz_init_request(const fuzz_model *model, size_t *len) {
  uint64_t wd[] = {4, 6}, bd[] = {4}, td[] = {8}, gd[] = {2, 262160};
  Fsps__V1__TensorSpec w, b, t, g;
  tensor(&w, "weight", 2, wd, FSPS__V1__INIT_KIND__INIT_HE_UNIFORM, 0);
  tensor(&b, "bias", 1, bd, FSPS__V1__INIT_KIND__INIT_ZEROS, 0);
  tensor(&t, "w", 1, td, FSPS__V1__INIT_KIND__INIT_CONSTANT, 0.5);
  tensor(&g, "w", 2, gd, FSPS__V1__INIT_KIND__INIT_ZEROS, 0);
  if (model->client) {
    Fsps__V1__InitKind k = FSPS__V1__INIT_KIND__INIT_CLIENT;
    t.init = g.init = k;
    if (!model->drawn_fc1)
      w.init = b.init = k;
  }
  Fsps__V1__TensorSpec *fc1_t[] = {&w, &b}, *tiny_t[] = {&t}, *big_t[] = {&g};
  Fsps__V1__LayerSpec fc1, tiny, big, *layers[] = {&fc1, &tiny, &big};
  layer(&fc1, "fc1", 2, fc1_t);
  layer(&tiny, "tiny", 1, tiny_t);
  layer(&big, "big", 1, big_t);
  Fsps__V1__OptimizerSpec o;
  optimizer(&o, model->optim);
  Fsps__V1__ModelSpec m = FSPS__V1__MODEL_SPEC__INIT;
  m.n_layers = model->big ? 3 : 2;
  m.layers = layers;
  m.optimizer = &o;
  m.seed = 42;
  m.wire_dtype = model->bf16 ? FSPS__V1__WIRE_DTYPE__WIRE_DTYPE_BF16
                             : FSPS__V1__WIRE_DTYPE__WIRE_DTYPE_FP32;
  Fsps__V1__InitRequest r = FSPS__V1__INIT_REQUEST__INIT;
  r.spec = &m;
  r.num_servers = FUZZ_SERVERS;
  r.server_index = FUZZ_INDEX;
  *len = fsps__v1__init_request__get_packed_size(&r);
  uint8_t *buf = malloc(*len);
  fuzz_check(buf != NULL);
  fsps__v1__init_request__pack(&r, buf);
  return buf;
}

/* ---- services ---- */

const rpc_method *fuzz_method(service *svc, const char *path) {
  size_t n;
  const rpc_method *m = server_service_methods(svc, &n);
  for (size_t i = 0; i < n; i++)
    if (strcmp(m[i].path, path) == 0)
      return &m[i];
  fuzz_fail(__FILE__, __LINE__, path);
}

int fuzz_unary(const rpc_method *m, const uint8_t *in, size_t n, unsigned split,
               void (*check)(void *arg, rpc_call *c), void *arg) {
  fuzz_msg fm;
  if (fuzz_msg_bytes(&fm, in, n, split) != FSPS_OK)
    return FSPS_RESOURCE_EXHAUSTED; /* as rpc/server.c answers it */
  rpc_call *c = fuzz_call_new(m, NULL, NULL);
  fuzz_call_start(c, &fm.m);
  fuzz_msg_close(&fm);
  fuzz_call_wait(c); /* a unary handler always answers, maybe later */
  if (check)
    check(arg, c);
  return fuzz_call_end(c);
}

static void declare(service *svc, const fuzz_model *model) {
  size_t len;
  uint8_t *req = fuzz_init_request(model, &len);
  const rpc_method *m = fuzz_method(svc, WIRE_PATH_INIT);
  fuzz_check(fuzz_unary(m, req, len, 0, NULL, NULL) == FSPS_OK);
  free(req);
}

void fuzz_service_open(service *svc, const server_config *c,
                       const fuzz_model *model) {
  memset(svc, 0, sizeof *svc);
  svc->st = store_create(c);
  fuzz_check(svc->st != NULL);
  if (model)
    declare(svc, model);
}

void fuzz_service_close(service *svc) {
  store_destroy(svc->st);
  svc->st = NULL;
}

/* push_chunk sends chunk i of the slice [off, off + cnt) on call c, in
 * dtype (g holds it so encoded). */
static bool push_chunk(rpc_call *c, uint32_t layer, uint64_t step,
                       uint32_t worker, uint64_t off, uint64_t cnt, uint64_t i,
                       const void *g, shard_wire_dtype dtype) {
  uint64_t o, len;
  shard_chunk(cnt, i, &o, &len);
  rpc_tensor_hdr h = {0};
  rpc_hdr_set(&h, WIRE_PUSH_LAYER, layer);
  rpc_hdr_set(&h, WIRE_PUSH_STEP, step);
  rpc_hdr_set(&h, WIRE_PUSH_WORKER, worker);
  rpc_hdr_set(&h, WIRE_PUSH_OFFSET, off + o);
  h.payload_field = wire_data_field(dtype);
  return fuzz_send_tensor(c, &h, g, len * wire_dtype_bytes(dtype));
}

int fuzz_push_step(service *svc, uint32_t layer, uint64_t step, uint32_t worker,
                   float g) {
  store_layer *L = store_layer_get(svc->st, layer);
  fuzz_check(L != NULL);
  store_layer_info in;
  store_info(L, &in);
  uint64_t most = in.count < SHARD_CHUNK_ELEMS ? in.count : SHARD_CHUNK_ELEMS;
  float *buf = malloc((most ? most : 1) * sizeof(float));
  uint16_t *b16 = malloc((most ? most : 1) * sizeof *b16);
  fuzz_check(buf != NULL && b16 != NULL);
  for (uint64_t i = 0; i < most; i++)
    buf[i] = g;
  shard_wire_dtype dtype = store_wire_dtype(svc->st);
  wire_bf16_encode(b16, buf, most);
  const void *send = dtype == SHARD_WIRE_BF16 ? (void *)b16 : (void *)buf;
  rpc_call *c = fuzz_call_new(fuzz_method(svc, WIRE_PATH_PUSH), NULL, NULL);
  fuzz_call_start(c, NULL);
  bool go = true;
  for (uint64_t i = 0; go && i < shard_num_chunks(in.count); i++)
    go =
        push_chunk(c, layer, step, worker, in.offset, in.count, i, send, dtype);
  fuzz_call_message(c, NULL);
  free(buf);
  free(b16);
  return fuzz_call_end(c);
}

/* ---- client streams of chunks ---- */

bool fuzz_send_tensor(rpc_call *c, const rpc_tensor_hdr *h, const void *data,
                      size_t nbytes) {
  fuzz_msg fm;
  fuzz_check(fuzz_msg_tensor(&fm, h, data, nbytes) == FSPS_OK);
  bool delivered = fuzz_call_message(c, &fm.m);
  fuzz_msg_close(&fm);
  return delivered;
}

/* A chunk's payload: the longest chunk, and more for a count too long;
 * and the same as bf16. */
static float g_payload[SHARD_CHUNK_ELEMS + 128];
static uint16_t g_payload16[SHARD_CHUNK_ELEMS + 128];

/* fill writes n floats as the record's fill byte says: zeros, ones, a
 * ramp, or zeros with a NaN (Inf with bit 7) at element bits 2-6. */
static void fill(float *d, uint64_t n, unsigned how) {
  for (uint64_t i = 0; i < n; i++)
    d[i] = (how & 3) == 1 ? 1.0f : (how & 3) == 2 ? (float)i * 1e-3f : 0.0f;
  uint64_t at = (how >> 2) & 31;
  if ((how & 3) == 3 && at < n)
    d[at] = how & 0x80 ? INFINITY : NAN;
}

bool fuzz_chunk_send(service *svc, rpc_call *c, const fuzz_chunk *ch,
                     rpc_tensor_hdr *h, unsigned offset_field) {
  store_layer *L = store_layer_get(svc->st, ch->layer);
  store_layer_info info = {0};
  if (L)
    store_info(L, &info);
  uint64_t o, len;
  shard_chunk(info.count, ch->chunk, &o, &len);
  int64_t count = (int64_t)len + ch->dcount;
  count = count < 0 ? 0 : count;
  fill(g_payload, (uint64_t)count, ch->how);
  rpc_hdr_set(h, offset_field,
              info.offset + ch->chunk * (uint64_t)SHARD_CHUNK_ELEMS + ch->doff);
  if (!ch->bf16)
    return fuzz_send_tensor(c, h, g_payload, (size_t)count * sizeof(float));
  wire_bf16_encode(g_payload16, g_payload, (size_t)count);
  h->payload_field = WIRE_PUSH_DATA_BF16;
  return fuzz_send_tensor(c, h, g_payload16, (size_t)count * 2);
}

/* raw sends a message of the input's next u16-counted bytes, cut as split
 * says. */
static bool raw(rpc_call *c, fuzz_in *in, unsigned split) {
  const uint8_t *p;
  size_t n = fuzz_bytes(in, fuzz_u16(in), &p);
  fuzz_msg fm;
  if (fuzz_msg_bytes(&fm, p, n, split) != FSPS_OK)
    return false;
  bool delivered = fuzz_call_message(c, &fm.m);
  fuzz_msg_close(&fm);
  return delivered;
}

unsigned fuzz_stream_records(service *svc, rpc_call *c, fuzz_in *in,
                             int *records, int most, fuzz_framed_fn framed,
                             unsigned *last) {
  unsigned op = 2, rec = 0;
  while (in->n > 0 && (*records)++ < most) {
    rec = fuzz_u8(in);
    if ((op = rec & 3) >= 2)
      break;
    if (op == 0)
      raw(c, in, rec >> 2);
    else
      framed(svc, c, in);
  }
  if (op != 3)
    fuzz_call_message(c, NULL);
  if (last != NULL)
    *last = rec;
  return op;
}

/* slice_elems returns the elements of a layer of n on server c->index. */
static uint64_t slice_elems(uint64_t n, const server_config *c) {
  uint64_t off, cnt;
  shard_slice(n, c->num_servers, c->index, &off, &cnt);
  return cnt;
}

/* At most this many elements of slices per input: with parameters, a
 * staging buffer and up to two floats of optimizer state each, 8 MiB, and
 * a fill of the initial values that stays in the milliseconds. */
#define FITS_ELEMS (512u << 10)

/* surely_refused tells whether the store refuses a model of `elems` slice
 * elements here for want of memory before allocating anything: it needs
 * at least 8 bytes an element (parameters and staging) and takes at most
 * 3/4 of the memory it may use (store_memory_bytes). */
static bool surely_refused(double elems) {
  static double have;
  if (have == 0)
    have = store_memory_bytes();
  return 8.0 * elems > have;
}

bool fuzz_model_fits(const Fsps__V1__ModelSpec *m, const server_config *c) {
  char msg[512];
  shard_spec *spec = wire_spec_from_proto(m, msg, sizeof msg);
  if (spec == NULL)
    return true;
  bool fits = true;
  if (shard_spec_validate(spec, msg, sizeof msg) == FSPS_OK) {
    double elems = 0;
    for (uint32_t l = 0; l < shard_spec_num_layers(spec); l++)
      elems += (double)slice_elems(shard_spec_layer(spec, l)->n, c);
    fits = elems <= FITS_ELEMS || surely_refused(elems);
  }
  shard_spec_destroy(spec);
  return fits;
}

/* ---- files ---- */

void fuzz_tmpdir(char *path, size_t len) {
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NULL;
  if (base == NULL && (base = getenv("TMPDIR")) == NULL)
    base = "/tmp";
  snprintf(path, len, "%s/fsps-fuzz-XXXXXX", base);
  fuzz_check(mkdtemp(path) != NULL);
}

void fuzz_rmdir(const char *path) {
  DIR *d = opendir(path);
  if (d == NULL)
    return;
  struct dirent *de;
  char file[1400];
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    snprintf(file, sizeof file, "%s/%s", path, de->d_name);
    unlink(file);
  }
  closedir(d);
  rmdir(path);
}

uint32_t fuzz_crc32c(const void *p, size_t n) {
  const uint8_t *b = p;
  uint32_t crc = ~0u;
  for (size_t i = 0; i < n; i++) {
    crc ^= b[i];
    for (int k = 0; k < 8; k++)
      crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}

void fuzz_quiet(void) {
  static bool done;
  if (!done)
    server_log_set(getenv("FSPS_FUZZ_LOG") ? LOG_DEBUG : LOG_ERROR, "fuzz");
  done = true;
}
