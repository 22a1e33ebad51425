/* gen_corpus.c: writes the fuzz targets' seed corpus — small valid and
 * near-valid inputs in each target's input format — into DIR/<target>/.
 * The seeds are committed under tests/fuzz/corpus; after a change to a
 * message, the fixture model or the checkpoint format, regenerate them:
 *   rm -rf tests/fuzz/corpus
 *   build-fuzz/tests/fuzz/fuzz_gen_corpus tests/fuzz/corpus
 * Requests are packed by protobuf-c, tensor messages framed by rpc/, and
 * checkpoint files written by a real store, so the seeds follow the code. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "fsps.pb-c.h"
#include "fuzz.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc_predict_v2.pb-c.h"

static const char *g_root;

/* seed writes g_root/target/name holding the byte ctl, then body. */
static void seed(const char *target, const char *name, uint8_t ctl,
                 const void *body, size_t len) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", g_root, target);
  mkdir(g_root, 0755);
  mkdir(path, 0755);
  snprintf(path, sizeof path, "%s/%s/%s", g_root, target, name);
  FILE *f = fopen(path, "wb");
  fuzz_check(f != NULL);
  fuzz_check(fwrite(&ctl, 1, 1, f) == 1);
  fuzz_check(len == 0 || fwrite(body, 1, len, f) == len);
  fuzz_check(fclose(f) == 0);
}

/* SEED_LIT writes a seed whose body is a string literal (NULs included). */
#define SEED_LIT(target, name, ctl, lit)                                       \
  seed(target, name, ctl, lit, sizeof lit - 1)

/* seed_msg packs m and writes it as a seed. */
static void seed_msg(const char *target, const char *name, uint8_t ctl,
                     const ProtobufCMessage *m) {
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(len + 1);
  fuzz_check(buf != NULL);
  protobuf_c_message_pack(m, buf);
  seed(target, name, ctl, buf, len);
  free(buf);
}

/* ---- Init ---- */

static Fsps__V1__InitRequest *fixture_init(fuzz_optim o, bool big) {
  fuzz_model m = {.big = big, .optim = o};
  size_t len;
  uint8_t *bytes = fuzz_init_request(&m, &len);
  Fsps__V1__InitRequest *r = fsps__v1__init_request__unpack(NULL, len, bytes);
  free(bytes);
  fuzz_check(r != NULL);
  return r;
}

static void set_name(char **field, const char *name) {
  free(*field);
  *field = strdup(name);
  fuzz_check(*field != NULL);
}

static void edit_none(Fsps__V1__InitRequest *r) {
  (void)r;
}
static void edit_zero_dim(Fsps__V1__InitRequest *r) {
  r->spec->layers[0]->tensors[0]->dims[1] = 0;
}
static void edit_dup_layer(Fsps__V1__InitRequest *r) {
  set_name(&r->spec->layers[1]->name, "fc1");
}
static void edit_xavier_1d(Fsps__V1__InitRequest *r) {
  r->spec->layers[1]->tensors[0]->init =
      FSPS__V1__INIT_KIND__INIT_XAVIER_UNIFORM;
}
static void edit_bad_optim(Fsps__V1__InitRequest *r) {
  set_name(&r->spec->optimizer->name, "adamx");
}
static void edit_huge(Fsps__V1__InitRequest *r) {
  r->spec->layers[0]->tensors[0]->dims[0] = UINT64_C(1) << 21;
  r->spec->layers[0]->tensors[0]->dims[1] = UINT64_C(1) << 21;
}
static void edit_no_memory(Fsps__V1__InitRequest *r) { /* 2^40: valid */
  r->spec->layers[0]->tensors[0]->dims[0] = UINT64_C(1) << 20;
  r->spec->layers[0]->tensors[0]->dims[1] = UINT64_C(1) << 19;
  r->spec->layers[0]->tensors[1]->dims[0] = UINT64_C(1) << 39;
}
static void edit_no_spec(Fsps__V1__InitRequest *r) {
  fsps__v1__model_spec__free_unpacked(r->spec, NULL);
  r->spec = NULL;
}
static void edit_placement(Fsps__V1__InitRequest *r) {
  r->num_servers = 3;
}
static void edit_init_kind(Fsps__V1__InitRequest *r) {
  r->spec->layers[0]->tensors[1]->init = (Fsps__V1__InitKind)9;
}
static void edit_client(Fsps__V1__InitRequest *r) {
  r->spec->layers[0]->tensors[0]->init = FSPS__V1__INIT_KIND__INIT_CLIENT;
  r->spec->layers[0]->tensors[1]->init = FSPS__V1__INIT_KIND__INIT_CLIENT;
}
static void edit_client_mixed(Fsps__V1__InitRequest *r) {
  r->spec->layers[0]->tensors[0]->init = FSPS__V1__INIT_KIND__INIT_CLIENT;
}
static void edit_nan_lr(Fsps__V1__InitRequest *r) {
  r->spec->optimizer->lr = NAN;
}
static void edit_step_sched(Fsps__V1__InitRequest *r) {
  r->spec->optimizer->schedule = FSPS__V1__SCHEDULE__SCHEDULE_STEP;
  r->spec->optimizer->step_size = 0;
}
static void edit_five_dims(Fsps__V1__InitRequest *r) {
  Fsps__V1__TensorSpec *t = r->spec->layers[1]->tensors[0];
  free(t->dims);
  t->dims = calloc(5, sizeof *t->dims);
  fuzz_check(t->dims != NULL);
  for (int i = 0; i < 5; i++)
    t->dims[i] = 2;
  t->n_dims = 5;
}
static void edit_bf16(Fsps__V1__InitRequest *r) {
  r->spec->wire_dtype = FSPS__V1__WIRE_DTYPE__WIRE_DTYPE_BF16;
}
static void edit_bad_dtype(Fsps__V1__InitRequest *r) {
  r->spec->wire_dtype = (Fsps__V1__WireDtype)7; /* a newer peer's */
}
static void edit_long_name(Fsps__V1__InitRequest *r) {
  set_name(&r->spec->layers[0]->name,
           "a-layer-name-of-exactly-sixty-four-bytes-which-is-one-too-many--");
}

static void init_seed(const char *name, uint8_t ctl, fuzz_optim o,
                      void (*edit)(Fsps__V1__InitRequest *)) {
  Fsps__V1__InitRequest *r = fixture_init(o, false);
  edit(r);
  seed_msg("fuzz_init", name, ctl, &r->base);
  fsps__v1__init_request__free_unpacked(r, NULL);
}

/* many_layers writes an Init of n layers: "l0", "l1", ... with one
 * 4-element tensor each when named, else nameless and empty. */
static void many_layers(const char *seedname, size_t n, bool named) {
  Fsps__V1__InitRequest *r = fixture_init(FUZZ_SGD, false);
  Fsps__V1__ModelSpec *m = r->spec;
  Fsps__V1__LayerSpec *L = calloc(n, sizeof *L), **lp = calloc(n, sizeof *lp);
  Fsps__V1__TensorSpec *t = m->layers[0]->tensors[1]; /* bias, 4 zeros */
  char(*names)[16] = calloc(n, sizeof *names);
  fuzz_check(L != NULL && lp != NULL && names != NULL);
  for (size_t l = 0; l < n; l++) {
    snprintf(names[l], sizeof names[l], "l%zu", l);
    fsps__v1__layer_spec__init(&L[l]);
    L[l].name = named ? names[l] : "";
    L[l].n_tensors = named ? 1 : 0;
    L[l].tensors = named ? &t : NULL;
    lp[l] = &L[l];
  }
  size_t n0 = m->n_layers;
  Fsps__V1__LayerSpec **l0 = m->layers;
  m->n_layers = n;
  m->layers = lp;
  seed_msg("fuzz_init", seedname, 0x00, &r->base);
  m->n_layers = n0; /* give back what protobuf-c allocated, to free it */
  m->layers = l0;
  fsps__v1__init_request__free_unpacked(r, NULL);
  free(L);
  free(lp);
  free(names);
}

static void init_seeds(void) {
  init_seed("sgd", 0x00, FUZZ_SGD, edit_none);
  init_seed("momentum-twice", 0x80, FUZZ_MOMENTUM, edit_none);
  init_seed("adam-asp-sliced", 0x45, FUZZ_ADAM, edit_none);
  init_seed("adagrad", 0x03, FUZZ_ADAGRAD, edit_none);
  init_seed("zero-dim", 0x00, FUZZ_SGD, edit_zero_dim);
  init_seed("duplicate-layer", 0x80, FUZZ_SGD, edit_dup_layer);
  init_seed("xavier-1d", 0x00, FUZZ_SGD, edit_xavier_1d);
  init_seed("bad-optimizer", 0x00, FUZZ_SGD, edit_bad_optim);
  init_seed("huge-layer", 0x00, FUZZ_ADAM, edit_huge);
  init_seed("more-than-memory", 0x80, FUZZ_ADAM, edit_no_memory);
  init_seed("no-spec", 0x00, FUZZ_SGD, edit_no_spec);
  init_seed("wrong-placement", 0x00, FUZZ_SGD, edit_placement);
  init_seed("bad-init-kind", 0x00, FUZZ_SGD, edit_init_kind);
  init_seed("client-layer", 0x80, FUZZ_SGD, edit_client);
  init_seed("client-mixed", 0x00, FUZZ_SGD, edit_client_mixed);
  init_seed("nan-lr", 0x00, FUZZ_ADAM, edit_nan_lr);
  init_seed("step-size-0", 0x00, FUZZ_SGD, edit_step_sched);
  init_seed("five-dims", 0x00, FUZZ_SGD, edit_five_dims);
  init_seed("long-name", 0x00, FUZZ_SGD, edit_long_name);
  init_seed("bf16-twice", 0x80, FUZZ_ADAM, edit_bf16);
  init_seed("unknown-wire-dtype", 0x00, FUZZ_SGD, edit_bad_dtype);
  Fsps__V1__InitRequest *r = fixture_init(FUZZ_SGD, true);
  seed_msg("fuzz_init", "big", 0x80, &r->base);
  fsps__v1__init_request__free_unpacked(r, NULL);
  many_layers("many-layers", 600, true);
  many_layers("too-many-layers", SHARD_MAX_LAYERS + 1, false);
  SEED_LIT("fuzz_init", "garbage", 0x00, "\x0a\xff\xff\x01");
}

/* ---- Pull ---- */

static void pull_seed(const char *name, uint8_t ctl, uint32_t layer,
                      uint64_t min_version, uint64_t offset, uint64_t count) {
  Fsps__V1__PullRequest r = FSPS__V1__PULL_REQUEST__INIT;
  r.layer = layer;
  r.min_version = min_version;
  r.offset = offset;
  r.count = count;
  seed_msg("fuzz_pull", name, ctl, &r.base);
}

static void pull_seeds(void) {
  pull_seed("fc1-whole", 0x00, 0, 0, 0, 0);
  pull_seed("fc1-range", 0x03, 0, 0, 20, 4);
  pull_seed("fc1-to-end", 0x00, 0, 0, 20, 0);
  pull_seed("fc1-below-slice", 0x00, 0, 0, 0, 4);
  pull_seed("fc1-count-overflow", 0x00, 0, 0, 20, UINT64_MAX);
  pull_seed("tiny-empty-slice", 0x00, 1, 0, 0, 0);
  pull_seed("tiny-offset", 0x00, 1, 0, 8, 0);
  pull_seed("no-such-layer", 0x00, 9, 0, 0, 0);
  pull_seed("big-whole", 0x21, 2, 0, 0, 0);
  pull_seed("big-second-chunk", 0x20, 2, 0, 262160 + 262144, 16);
  pull_seed("fc1-wait-1-wake-1", 0x40, 0, 1, 0, 0);
  pull_seed("big-wait-2-wake-3", 0xe0, 2, 2, 0, 0);
  pull_seed("fc1-wait-5-cancel", 0x00, 0, 5, 0, 0);
  pull_seed("bf16-fc1-wait-1-wake-1", 0x50, 0, 1, 0, 0);
  pull_seed("bf16-big-wait-1-wake-2", 0xb0, 2, 1, 262160, 0);
  SEED_LIT("fuzz_pull", "garbage", 0x00, "\x08\x80\x80");
  /* epoch 7 (field 5, fixed64): a pull of an epoch this server is not in */
  SEED_LIT("fuzz_pull", "other-epoch", 0x00,
           "\x29\x07\x00\x00\x00\x00\x00\x00\x00");
}

/* ---- Push ---- */

typedef struct {
  uint8_t b[512];
  size_t n;
} recs;

static void r8(recs *r, unsigned v) {
  fuzz_check(r->n < sizeof r->b);
  r->b[r->n++] = (uint8_t)v;
}

/* framed appends a record of a chunk framed as libfsps frames it. */
static void framed(recs *r, unsigned layer, unsigned step, unsigned worker,
                   unsigned chunk, int doff, int dcount, unsigned how) {
  unsigned v[] = {
      1, layer, step, worker, chunk, (uint8_t)doff, (uint8_t)dcount, how};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    r8(r, v[i]);
}

/* push appends a whole push of (layer, step, worker) and its close. */
static void push(recs *r, unsigned layer, unsigned step, unsigned worker) {
  unsigned chunks = layer == 2 ? 2 : 1;
  for (unsigned i = 0; i < chunks; i++)
    framed(r, layer, step, worker, i, 0, 0, 2);
  r8(r, 2);
}

static void raw_chunk(recs *r) {
  float g[12] = {0.5f, -0.5f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  Fsps__V1__PushChunk c = FSPS__V1__PUSH_CHUNK__INIT;
  c.offset = 16;
  c.data.data = (uint8_t *)g;
  c.data.len = sizeof g;
  size_t len = fsps__v1__push_chunk__get_packed_size(&c);
  r8(r, 3 << 2); /* raw, cut into four slices */
  r8(r, len & 0xff);
  r8(r, len >> 8);
  fuzz_check(r->n + len <= sizeof r->b);
  r->n += fsps__v1__push_chunk__pack(&c, r->b + r->n);
  r8(r, 2);
}

static void push_valid_seeds(void) {
  recs r = {.n = 0};
  r8(&r, 0);
  push(&r, 0, 0, 0);
  push(&r, 0, 0, 1);
  seed("fuzz_push", "step-fc1", r.b[0], r.b + 1, r.n - 1);
  r = (recs){.n = 0};
  r8(&r, 0x20 | FUZZ_ADAM << 3);
  push(&r, 2, 0, 0);
  push(&r, 2, 0, 1);
  push(&r, 2, 0, 1);
  seed("fuzz_push", "step-big-adam-dup", r.b[0], r.b + 1, r.n - 1);
  r = (recs){.n = 0};
  r8(&r, 2 | FUZZ_ADAGRAD << 3);
  push(&r, 0, 0, 0);
  push(&r, 0, 5, 1);
  seed("fuzz_push", "asp-adagrad", r.b[0], r.b + 1, r.n - 1);
  r = (recs){.n = 0};
  r8(&r, 1);
  push(&r, 0, 1, 0);
  push(&r, 0, 2, 0);
  push(&r, 0, 0, 0);
  push(&r, 0, 0, 1);
  seed("fuzz_push", "ssp", r.b[0], r.b + 1, r.n - 1);
  r = (recs){.n = 0};
  r8(&r, 0x20 | 3 | FUZZ_MOMENTUM << 3);
  push(&r, 2, 0, 1);
  push(&r, 2, 0, 0);
  seed("fuzz_push", "deterministic-momentum", r.b[0], r.b + 1, r.n - 1);
  r = (recs){.n = 0};
  r8(&r, 0);
  raw_chunk(&r);
  seed("fuzz_push", "raw-chunk", r.b[0], r.b + 1, r.n - 1);
}

static void push_nan_seeds(void) {
  recs r = {.n = 0};
  r8(&r, 0);
  framed(&r, 0, 0, 0, 0, 0, 0, 3 | 5 << 2);
  r8(&r, 2);
  seed("fuzz_push", "nan-reject", r.b[0], r.b + 1, r.n - 1);
  r = (recs){.n = 0};
  r8(&r, 4);
  framed(&r, 0, 0, 0, 0, 0, 0, 0x83 | 2 << 2);
  r8(&r, 2);
  push(&r, 0, 0, 1);
  seed("fuzz_push", "inf-skip", r.b[0], r.b + 1, r.n - 1);
}

/* push_bad_seed writes one stream that the server must refuse. */
static void push_bad_seed(const char *name, unsigned layer, unsigned step,
                          unsigned worker, unsigned chunk, int doff,
                          int dcount) {
  recs r = {.n = 0};
  r8(&r, layer == 2 ? 0x20 : 0); /* the big layer is there on request */
  framed(&r, layer, step, worker, chunk, doff, dcount, 1);
  r8(&r, 2);
  seed("fuzz_push", name, r.b[0], r.b + 1, r.n - 1);
}

/* bf16 models (config bit 6): a step in bf16 chunks, a NaN in one (bit 2
 * of the config: zeroed), and float32 chunks, which the server refuses
 * (bit 7). */
static void push_bf16_seeds(void) {
  recs r = {.n = 0};
  r8(&r, 0x40 | 0x20 | FUZZ_ADAM << 3);
  push(&r, 2, 0, 0);
  push(&r, 0, 0, 0);
  push(&r, 2, 0, 1);
  push(&r, 0, 0, 1);
  seed("fuzz_push", "bf16-step-big-adam", r.b[0], r.b + 1, r.n - 1);
  r = (recs){.n = 0};
  r8(&r, 0x40 | 4);
  framed(&r, 0, 0, 0, 0, 0, 0, 3 | 7 << 2);
  r8(&r, 2);
  push(&r, 0, 0, 1);
  seed("fuzz_push", "bf16-nan-skip", r.b[0], r.b + 1, r.n - 1);
  r = (recs){.n = 0};
  r8(&r, 0x40 | 0x80);
  push(&r, 0, 0, 0);
  seed("fuzz_push", "bf16-model-fp32-chunks", r.b[0], r.b + 1, r.n - 1);
  r = (recs){.n = 0};
  r8(&r, 0x80);
  push(&r, 0, 0, 0);
  seed("fuzz_push", "fp32-model-bf16-chunks", r.b[0], r.b + 1, r.n - 1);
}

static void push_stream_seeds(void) {
  recs r = {.n = 0};
  r8(&r, 0x20);
  framed(&r, 2, 0, 0, 0, 0, 0, 1);
  framed(&r, 2, 0, 0, 0, 0, 0, 1);
  r8(&r, 2);
  framed(&r, 2, 0, 0, 0, 0, 0, 1);
  r8(&r, 2);
  framed(&r, 2, 0, 0, 0, 0, 0, 1);
  framed(&r, 0, 0, 0, 0, 0, 0, 1);
  r8(&r, 2);
  framed(&r, 2, 0, 0, 1, 0, 0, 1);
  r8(&r, 3);
  r8(&r, 2);
  seed("fuzz_push", "twice-missing-mixed-cancel-empty", r.b[0], r.b + 1,
       r.n - 1);
}

static void push_seeds(void) {
  push_valid_seeds();
  push_nan_seeds();
  push_bf16_seeds();
  push_stream_seeds();
  push_bad_seed("worker-out-of-range", 0, 0, 5, 0, 0, 0);
  push_bad_seed("empty-slice", 1, 0, 0, 0, 0, 0);
  push_bad_seed("no-such-layer", 9, 0, 0, 0, 0, 0);
  push_bad_seed("short-chunk", 0, 0, 0, 0, 0, -1);
  push_bad_seed("long-chunk", 0, 0, 0, 0, 0, 1);
  push_bad_seed("offset-off-by-one", 0, 0, 0, 0, 1, 0);
  push_bad_seed("step-ahead", 0, 3, 0, 0, 0, 0);
  push_bad_seed("chunk-past-slice", 2, 0, 0, 2, 0, 0);
}

/* ---- SetValues ---- */

/* vframed appends a record of a values chunk framed as libfsps frames it
 * (fill 2: a ramp; 3 | k << 2: a NaN at element k; 0x80 more: an Inf). */
static void vframed(recs *r, unsigned layer, unsigned chunk, int doff,
                    int dcount, unsigned epoch, unsigned how) {
  unsigned v[] = {1, layer, chunk, (uint8_t)doff, (uint8_t)dcount, epoch, how};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    r8(r, v[i]);
}

/* vgive appends whole values of layer (filled as `how`) and the close. */
static void vgive(recs *r, unsigned layer, unsigned how) {
  unsigned chunks = layer == 2 ? 2 : 1;
  for (unsigned i = 0; i < chunks; i++)
    vframed(r, layer, i, 0, 0, 0, how);
  r8(r, 2);
}

static void vseed(const char *name, const recs *r) {
  seed("fuzz_values", name, r->b[0], r->b + 1, r->n - 1);
}

/* Given, again (a duplicate), other values (refused) then a push from
 * worker 0, the same values once training began (refused), worker 1. */
static void values_once_seed(uint8_t cfg, const char *name) {
  recs r = {.n = 0};
  r8(&r, cfg);
  r8(&r, 2 | 4 | 8); /* an empty stream; pushes before the values */
  vgive(&r, 0, 2);
  vgive(&r, 0, 2);
  vframed(&r, 0, 0, 0, 0, 0, 1);
  r8(&r, 2 | 4);
  vgive(&r, 0, 2);
  r8(&r, 2 | 8);
  vseed(name, &r);
}

static void values_raw_seed(void) {
  float v[12] = {0.5f, -0.5f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  Fsps__V1__ValuesChunk c = FSPS__V1__VALUES_CHUNK__INIT;
  c.offset = 16;
  c.data.data = (uint8_t *)v;
  c.data.len = sizeof v;
  size_t len = fsps__v1__values_chunk__get_packed_size(&c);
  recs r = {.n = 0};
  r8(&r, 0);
  r8(&r, 3 << 2); /* raw, cut into four slices */
  r8(&r, len & 0xff);
  r8(&r, len >> 8);
  fuzz_check(r.n + len < sizeof r.b);
  r.n += fsps__v1__values_chunk__pack(&c, r.b + r.n);
  r8(&r, 2);
  vseed("raw-chunk", &r);
}

/* values_bad_seed writes one stream the server must refuse, then the
 * layer's values in full. */
static void values_bad_seed(const char *name, uint8_t cfg, unsigned layer,
                            unsigned chunk, int doff, int dcount,
                            unsigned epoch, unsigned how) {
  recs r = {.n = 0};
  r8(&r, cfg);
  vframed(&r, layer, chunk, doff, dcount, epoch, how);
  r8(&r, 2);
  vgive(&r, layer < 3 ? layer : 0, 2);
  vseed(name, &r);
}

static void values_stream_seeds(void) {
  recs r = {.n = 0};
  r8(&r, 0x20);
  vframed(&r, 2, 0, 0, 0, 0, 2); /* one chunk of two */
  r8(&r, 2);
  vframed(&r, 2, 0, 0, 0, 0, 2); /* mixed layers */
  vframed(&r, 0, 0, 0, 0, 0, 2);
  r8(&r, 2);
  vframed(&r, 0, 0, 0, 0, 0, 2); /* a chunk twice */
  vframed(&r, 0, 0, 0, 0, 0, 2);
  r8(&r, 2);
  vframed(&r, 2, 1, 0, 0, 0, 2); /* cancelled */
  r8(&r, 3);
  vgive(&r, 2, 2);
  r8(&r, 2 | 4 | 8 | 2 << 4); /* both workers push the big layer */
  vseed("big-missing-mixed-twice-cancel-given", &r);
}

static void values_seeds(void) {
  values_once_seed(0, "given-once-bsp");
  values_once_seed(2 | FUZZ_ADAM << 3, "given-once-asp-adam");
  values_once_seed(3 | FUZZ_MOMENTUM << 3, "given-once-deterministic");
  values_raw_seed();
  values_stream_seeds();
  values_bad_seed("nan", 0, 0, 0, 0, 0, 0, 3 | 5 << 2);
  values_bad_seed("inf-under-nan-skip", 4, 0, 0, 0, 0, 0, 0x83 | 2 << 2);
  values_bad_seed("short-chunk", 0, 0, 0, 0, -1, 0, 2);
  values_bad_seed("offset-off-by-one", 0, 0, 0, 1, 0, 0, 2);
  values_bad_seed("other-epoch", 0, 0, 0, 0, 0, 7, 2);
  values_bad_seed("no-such-layer", 0, 9, 0, 0, 0, 0, 2);
  values_bad_seed("empty-slice", 0, 1, 0, 0, 0, 0, 2);
  values_bad_seed("drawn-layer", 0x40, 0, 0, 0, 0, 0, 2);
  values_bad_seed("chunk-past-slice", 0x20, 2, 2, 0, 0, 0, 2);
}

/* ---- Status, Checkpoint, health ---- */

static void empty_seeds(const char *target) {
  seed(target, "empty", 0x00, NULL, 0);
  SEED_LIT(target, "unknown-fields", 0x05,
           "\x28\x01\x32\x02hi\x39\0\0\0\0\0\0\0\0");
  SEED_LIT(target, "truncated", 0x00, "\x0a\x05");
}

static void health_seed(const char *name, uint8_t ctl, const char *svc) {
  Grpc__Health__V1__HealthCheckRequest r =
      GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  r.service = (char *)svc;
  seed_msg("fuzz_health", name, ctl, &r.base);
}

static void rollback_seed(const char *name, uint8_t ctl, uint64_t version,
                          uint64_t hash) {
  Fsps__V1__RollbackRequest r = FSPS__V1__ROLLBACK_REQUEST__INIT;
  r.version = version;
  r.spec_hash = hash;
  seed_msg("fuzz_rollback", name, ctl, &r.base);
}

static void rollback_seeds(void) {
  empty_seeds("fuzz_rollback");
  rollback_seed("to-checkpoint", 0x40, 2, 1);
  rollback_seed("to-start-sliced", 0x45, 0, 1);
  rollback_seed("no-file", 0x40, 1, 1);
  rollback_seed("forward", 0x40, 9, 1);
  rollback_seed("other-model", 0x00, 2, 12345);
}

static void unary_seeds(void) {
  rollback_seeds();
  empty_seeds("fuzz_status");
  empty_seeds("fuzz_checkpoint");
  empty_seeds("fuzz_health");
  health_seed("fsps", 0x00, WIRE_SERVICE);
  health_seed("other-service", 0x02, "other");
}

/* ---- rpc/msg.c framing ---- */

static void msg_seeds(void) {
  float g[6] = {1, 2, 3, 4, 5, 6};
  Fsps__V1__PushChunk c = FSPS__V1__PUSH_CHUNK__INIT;
  c.layer = 2;
  c.step = 300;
  c.worker = 1;
  c.offset = 262160;
  c.data.data = (uint8_t *)g;
  c.data.len = sizeof g;
  seed_msg("fuzz_msg", "push-chunk", 0x00, &c.base);
  seed_msg("fuzz_msg", "push-chunk-sliced", 0x07, &c.base);
  Fsps__V1__PullChunk p = FSPS__V1__PULL_CHUNK__INIT;
  p.version = 7;
  p.data.data = (uint8_t *)g;
  p.data.len = 8;
  seed_msg("fuzz_msg", "pull-chunk", 0x02, &p.base);
  SEED_LIT("fuzz_msg", "unknown-fields", 0x03,
           "\x08\x01\x51\1\2\3\4\5\6\7\x08\x5d\1\2\3\4\x52\x01z\x42\x04\0\0\x80"
           "\x3f");
  SEED_LIT("fuzz_msg", "two-payloads", 0x00, "\x42\x04\0\0\0\0\x42\x00");
  SEED_LIT("fuzz_msg", "data-and-bf16", 0x01, "\x42\x04\0\0\0\0\x4a\x02\0\0");
  SEED_LIT("fuzz_msg", "bf16-as-varint", 0x00, "\x08\x01\x48\x02");
  c.data.len = 0;
  c.data_bf16.data = (uint8_t *)g;
  c.data_bf16.len = 7; /* odd: whole bf16 elements are the server's check */
  seed_msg("fuzz_msg", "push-chunk-bf16-sliced", 0x05, &c.base);
  SEED_LIT("fuzz_msg", "payload-truncated", 0x01, "\x08\x02\x42\x08\0\0\0\0");
  SEED_LIT("fuzz_msg", "field-zero", 0x00, "\x00\x01");
  SEED_LIT("fuzz_msg", "long-varint", 0x04,
           "\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01");
  seed("fuzz_msg", "empty", 0x00, NULL, 0);
}

/* ---- checkpoint files ---- */

/* ckpt_file writes a checkpoint of the fixture model after one step and
 * returns its bytes (free them). */
static uint8_t *ckpt_file(fuzz_optim o, size_t *len) {
  server_config c;
  char dir[256], path[1200], msg[512];
  uint64_t bytes, lowest;
  fuzz_model model = {.big = false, .optim = o};
  fuzz_config(&c, 0);
  fuzz_tmpdir(dir, sizeof dir);
  snprintf(c.checkpoint_dir, sizeof c.checkpoint_dir, "%s", dir);
  service svc;
  fuzz_service_open(&svc, &c, &model);
  for (uint32_t w = 0; w < FUZZ_WORKERS; w++)
    fuzz_check(fuzz_push_step(&svc, 0, 0, w, 0.5f) == FSPS_OK);
  svc.ck = ckpt_create(svc.st, &c, msg, sizeof msg);
  fuzz_check(svc.ck != NULL);
  fuzz_check(ckpt_write_now(svc.ck, path, sizeof path, &bytes, &lowest, msg,
                            sizeof msg) == FSPS_OK);
  uint8_t *buf = malloc(bytes);
  FILE *f = fopen(path, "rb");
  fuzz_check(buf != NULL && f != NULL && fread(buf, 1, bytes, f) == bytes);
  fclose(f);
  ckpt_destroy(svc.ck);
  fuzz_service_close(&svc);
  fuzz_rmdir(dir);
  *len = bytes;
  return buf;
}

/* mangled writes a copy of the file f[0..n) with byte `at` xor-ed with x. */
static void mangled(const char *name, uint8_t ctl, const uint8_t *f, size_t n,
                    size_t at, uint8_t x) {
  uint8_t *copy = malloc(n);
  fuzz_check(copy != NULL && at < n);
  memcpy(copy, f, n);
  copy[at] ^= x;
  seed("fuzz_ckpt_read", name, ctl, copy, n);
  free(copy);
}

static void ckpt_seeds(void) {
  size_t n;
  uint8_t *f = ckpt_file(FUZZ_ADAM, &n);
  uint32_t bloblen;
  memcpy(&bloblen, f + 44, 4);
  size_t param = 48 + bloblen + 28 + 3; /* top byte of layer 0's first float */
  seed("fuzz_ckpt_read", "adam", 0x00, f, n);
  seed("fuzz_ckpt_read", "adam-asp", 0x05, f, n);
  seed("fuzz_ckpt_read", "truncated", 0x00, f, n / 2);
  mangled("flipped-bit", 0x00, f, n, param, 0x40);
  mangled("flipped-bit-crc-fixed", 0x01, f, n, param, 0x40);
  mangled("other-server", 0x01, f, n, 16, 1); /* s: 0 instead of 1 */
  mangled("bad-magic", 0x01, f, n, 0, 0x20);
  mangled("bad-spec", 0x01, f, n, 48 + 5, 0x10);
  mangled("layer-count", 0x01, f, n, 40, 3);
  uint8_t *copy = malloc(n);
  fuzz_check(copy != NULL);
  memcpy(copy, f, n);
  memset(copy + 48 + bloblen + 12, 0xff, 8); /* layer 0 at version 2^64-1 */
  seed("fuzz_ckpt_read", "version-max-crc-fixed", 0x01, copy, n);
  free(copy);
  free(f);
  f = ckpt_file(FUZZ_MOMENTUM, &n);
  seed("fuzz_ckpt_read", "momentum", 0x01, f, n);
  free(f);
}

/* ---- ModelInfer (fsps-serve) ---- */

/* The control byte of fuzz_infer seeds: a model of 4 inputs, 3 classes. */
#define INFER_CTL (3 + 8 * 2)

/* infer_seed writes a request of `rows` rows of 4 inputs (raw or in
 * fp32_contents) for model, one value replaced by bad when bad is not 0,
 * naming output `out` when not NULL. */
static void infer_seed(const char *name, const char *model, int64_t rows,
                       bool raw, float bad, const char *out) {
  float x[8 * 4];
  for (int i = 0; i < 8 * 4; i++)
    x[i] = (float)i / 7 - 2;
  if (bad != 0)
    x[5] = bad;
  Inference__ModelInferRequest r = INFERENCE__MODEL_INFER_REQUEST__INIT;
  Inference__ModelInferRequest__InferInputTensor in =
      INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
  Inference__ModelInferRequest__InferInputTensor *inp = &in;
  Inference__InferTensorContents c = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
  Inference__ModelInferRequest__InferRequestedOutputTensor o =
      INFERENCE__MODEL_INFER_REQUEST__INFER_REQUESTED_OUTPUT_TENSOR__INIT;
  Inference__ModelInferRequest__InferRequestedOutputTensor *op = &o;
  int64_t shape[2] = {rows, 4};
  /* at most the 8 rows of x (a shape may claim more) */
  size_t shown = rows < 0 ? 0 : (size_t)(rows > 8 ? 8 : rows);
  ProtobufCBinaryData bytes = {shown * 16, (uint8_t *)x};
  r.model_name = (char *)model;
  r.id = "seed";
  in.name = "input";
  in.datatype = "FP32";
  in.shape = shape;
  in.n_shape = 2;
  r.inputs = &inp;
  r.n_inputs = 1;
  if (raw) {
    r.raw_input_contents = &bytes;
    r.n_raw_input_contents = 1;
  } else {
    c.fp32_contents = x;
    c.n_fp32_contents = bytes.len / 4;
    in.contents = &c;
  }
  if (out != NULL) {
    o.name = (char *)out;
    r.outputs = &op;
    r.n_outputs = 1;
  }
  seed_msg("fuzz_infer", name, INFER_CTL, &r.base);
}

static void infer_seeds(void) {
  empty_seeds("fuzz_infer");
  infer_seed("raw", "fsps-mlp", 2, true, 0, NULL);
  infer_seed("fp32-contents", "fsps-mlp", 8, false, 0, NULL);
  infer_seed("class-only", "fsps-mlp", 1, true, 0, "class");
  infer_seed("nan", "fsps-mlp", 2, true, NAN, NULL);
  infer_seed("inf", "fsps-mlp", 2, false, INFINITY, NULL);
  infer_seed("other-model", "resnet", 1, true, 0, NULL);
  infer_seed("empty-batch", "fsps-mlp", 0, true, 0, NULL);
  infer_seed("huge-shape", "fsps-mlp", INT64_C(1) << 40, true, 0, NULL);
}

int main(int argc, char **argv) {
  if (argc != 2 || argv[1][0] == '-') {
    fprintf(stderr,
            "usage: %s DIR\n"
            "writes the fuzz seeds as DIR/<target>/<seed> "
            "(the committed ones: tests/fuzz/corpus)\n",
            argv[0]);
    return argc == 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
  }
  g_root = argv[1];
  fuzz_quiet();
  init_seeds();
  pull_seeds();
  push_seeds();
  values_seeds();
  unary_seeds();
  msg_seeds();
  ckpt_seeds();
  infer_seeds();
  return 0;
}
