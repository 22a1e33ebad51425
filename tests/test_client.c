/* test_client.c: libfsps without servers — the spec builder and its Init
 * message, connect's argument checks, slicing plans, the buffer pool and
 * scheduler bookkeeping, failures against an address nobody serves, and
 * a fake Pull server whose bad answers must be refused. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <fsps/fsps.h>

#include "../client/client_int.h"

/* ---- helpers ---- */

/* two_layer_spec builds fc1 (weight [4,3] + bias [4]) and fc2 (weight
 * [2,4]) with SGD + momentum and a step schedule. */
static fsps_spec *two_layer_spec(void) {
  fsps_spec *spec = fsps_spec_create(42);
  assert_non_null(spec);
  assert_int_equal(fsps_spec_add_layer(spec, "fc1"), FSPS_OK);
  assert_int_equal(fsps_spec_add_tensor(spec, "weight", 2, (uint64_t[]){4, 3},
                                        "xavier_uniform", 0, 0),
                   FSPS_OK);
  assert_int_equal(
      fsps_spec_add_tensor(spec, "bias", 1, (uint64_t[]){4}, "zeros", 0, 0),
      FSPS_OK);
  assert_int_equal(fsps_spec_add_layer(spec, "fc2"), FSPS_OK);
  assert_int_equal(fsps_spec_add_tensor(spec, "weight", 2, (uint64_t[]){2, 4},
                                        "normal", 0.0, 0.02),
                   FSPS_OK);
  assert_int_equal(fsps_spec_set_optimizer(spec, "sgd", 0.1), FSPS_OK);
  assert_int_equal(fsps_spec_set_param(spec, "momentum", 0.9), FSPS_OK);
  assert_int_equal(fsps_spec_set_param(spec, "nesterov", 1), FSPS_OK);
  assert_int_equal(fsps_spec_set_schedule(spec, "step"), FSPS_OK);
  assert_int_equal(fsps_spec_set_param(spec, "step_size", 10), FSPS_OK);
  return spec;
}

/* the same model built directly with shard/ */
static shard_spec *two_layer_shard(void) {
  shard_spec *s = shard_spec_create(42);
  shard_spec_add_layer(s, "fc1");
  shard_spec_add_tensor(s, "weight", 2, (uint64_t[]){4, 3},
                        SHARD_INIT_XAVIER_UNIFORM, 0, 0);
  shard_spec_add_tensor(s, "bias", 1, (uint64_t[]){4}, SHARD_INIT_ZEROS, 0, 0);
  shard_spec_add_layer(s, "fc2");
  shard_spec_add_tensor(s, "weight", 2, (uint64_t[]){2, 4}, SHARD_INIT_NORMAL,
                        0.0, 0.02);
  shard_optim_spec o;
  shard_optim_defaults(SHARD_OPT_SGD, &o);
  o.lr = 0.1;
  o.momentum = 0.9;
  o.nesterov = true;
  o.schedule = SHARD_SCHED_STEP;
  o.step_size = 10;
  shard_spec_set_optim(s, &o);
  return s;
}

/* dead_address returns "127.0.0.1:port" for a port nobody listens on. */
static void dead_address(char *out, size_t len) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t alen = sizeof a;
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
  close(fd); /* bound but never listening, and now closed */
  snprintf(out, len, "127.0.0.1:%u", ntohs(a.sin_port));
}

static fsps_client *connect_dead_retries(const char *servers, uint32_t prefetch,
                                         uint32_t retries) {
  fsps_options o;
  fsps_options_init(&o);
  o.servers = servers;
  o.timeout_ms = 2000;
  o.retries = retries;
  o.prefetch = prefetch;
  fsps_client *c = NULL;
  char err[256] = "";
  assert_int_equal(fsps_connect(&o, &c, err, sizeof err), FSPS_OK);
  assert_non_null(c);
  assert_string_equal(fsps_last_error(c), "");
  return c;
}

static fsps_client *connect_dead(const char *servers, uint32_t prefetch) {
  return connect_dead_retries(servers, prefetch, 1);
}

static double seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- spec ---- */

static void test_spec_builder_matches_shard(void **state) {
  (void)state;
  fsps_spec *spec = two_layer_spec();
  char msg[256] = "";
  assert_int_equal(fsps_spec_validate(spec, msg, sizeof msg), FSPS_OK);
  assert_int_equal(fsps_spec_num_layers(spec), 2);
  assert_int_equal(fsps_spec_layer_size(spec, 0), 16);
  assert_int_equal(fsps_spec_layer_size(spec, 1), 8);
  assert_int_equal(fsps_spec_layer_size(spec, 2), 0);
  shard_spec *s = two_layer_shard();
  assert_true(shard_spec_equal(client_spec_shard(spec), s));
  assert_true(fsps_spec_hash(spec) == shard_spec_hash(s));
  assert_true(fsps_spec_hash(spec) != 0);
  shard_spec_destroy(s);
  fsps_spec_destroy(spec);
}

static void test_spec_defaults_to_adam(void **state) {
  (void)state;
  fsps_spec *spec = fsps_spec_create(7);
  const shard_optim_spec *o = shard_spec_optim(client_spec_shard(spec));
  assert_int_equal(o->kind, SHARD_OPT_ADAM);
  assert_true(o->lr == 1e-3 && o->beta1 == 0.9 && o->beta2 == 0.999);
  assert_true(o->eps == 1e-8);
  fsps_spec_destroy(spec);
}

static void test_spec_optimizer_keeps_schedule(void **state) {
  (void)state;
  fsps_spec *spec = two_layer_spec();
  assert_int_equal(fsps_spec_set_optimizer(spec, "adamw", 0.5), FSPS_OK);
  const shard_optim_spec *o = shard_spec_optim(client_spec_shard(spec));
  assert_int_equal(o->kind, SHARD_OPT_ADAMW);
  assert_true(o->lr == 0.5);
  assert_true(o->weight_decay == 0.01);
  assert_true(o->momentum == 0.0); /* sgd's setting is gone */
  assert_int_equal(o->schedule, SHARD_SCHED_STEP);
  assert_int_equal(o->step_size, 10);
  fsps_spec_destroy(spec);
}

/* expect_invalid checks that spec fails validation naming `needle`. */
static void expect_invalid(fsps_spec *spec, const char *needle) {
  char msg[256] = "";
  assert_int_equal(fsps_spec_validate(spec, msg, sizeof msg),
                   FSPS_INVALID_ARGUMENT);
  if (strstr(msg, needle) == NULL)
    fail_msg("message '%s' does not mention '%s'", msg, needle);
}

static void test_spec_bad_names_are_remembered(void **state) {
  (void)state;
  fsps_spec *spec = two_layer_spec();
  assert_int_equal(
      fsps_spec_add_tensor(spec, "w2", 1, (uint64_t[]){3}, "gaussian", 0, 1),
      FSPS_INVALID_ARGUMENT);
  assert_int_equal(fsps_spec_num_layers(spec), 2);
  assert_int_equal(fsps_spec_layer_size(spec, 1), 8); /* nothing added */
  expect_invalid(spec, "gaussian");
  fsps_spec_destroy(spec);

  spec = two_layer_spec();
  assert_int_equal(fsps_spec_set_optimizer(spec, "adamx", 0.1),
                   FSPS_INVALID_ARGUMENT);
  expect_invalid(spec, "adamx");
  fsps_spec_destroy(spec);

  spec = two_layer_spec();
  assert_int_equal(fsps_spec_set_param(spec, "mommentum", 0.9),
                   FSPS_INVALID_ARGUMENT);
  expect_invalid(spec, "mommentum");
  fsps_spec_destroy(spec);

  spec = two_layer_spec();
  assert_int_equal(fsps_spec_set_schedule(spec, "linear"),
                   FSPS_INVALID_ARGUMENT);
  expect_invalid(spec, "linear");
  fsps_spec_destroy(spec);
}

static void test_spec_bad_values(void **state) {
  (void)state;
  fsps_spec *spec = two_layer_spec();
  assert_int_equal(fsps_spec_set_param(spec, "nesterov", 2),
                   FSPS_INVALID_ARGUMENT);
  expect_invalid(spec, "nesterov");
  fsps_spec_destroy(spec);

  spec = two_layer_spec();
  assert_int_equal(fsps_spec_set_param(spec, "step_size", 1.5),
                   FSPS_INVALID_ARGUMENT);
  assert_int_equal(fsps_spec_set_param(spec, "t_max", -1),
                   FSPS_INVALID_ARGUMENT);
  expect_invalid(spec, "step_size"); /* the first problem is reported */
  fsps_spec_destroy(spec);

  spec = two_layer_spec();
  assert_int_equal(fsps_spec_set_param(spec, "momentum", -1.0), FSPS_OK);
  expect_invalid(spec, "momentum"); /* ranges are left to validation */
  fsps_spec_destroy(spec);

  spec = two_layer_spec();
  assert_int_equal(fsps_spec_add_layer(spec, "empty"), FSPS_OK);
  expect_invalid(spec, "empty");
  fsps_spec_destroy(spec);

  assert_int_equal(fsps_spec_add_layer(NULL, "x"), FSPS_INVALID_ARGUMENT);
  assert_int_equal(fsps_spec_validate(NULL, NULL, 0), FSPS_INVALID_ARGUMENT);
}

static void test_spec_message_fields(void **state) {
  (void)state;
  fsps_spec *spec = two_layer_spec();
  wire_spec_msg m;
  assert_int_equal(wire_spec_to_proto(&m, client_spec_shard(spec)), FSPS_OK);
  /* pack and unpack, as the server sees it */
  size_t len = protobuf_c_message_get_packed_size(&m.model.base);
  uint8_t *buf = malloc(len);
  protobuf_c_message_pack(&m.model.base, buf);
  Fsps__V1__ModelSpec *r = fsps__v1__model_spec__unpack(NULL, len, buf);
  assert_non_null(r);
  assert_int_equal(r->seed, 42);
  assert_int_equal(r->n_layers, 2);
  assert_string_equal(r->layers[0]->name, "fc1");
  assert_int_equal(r->layers[0]->n_tensors, 2);
  Fsps__V1__TensorSpec *w = r->layers[0]->tensors[0];
  assert_string_equal(w->name, "weight");
  assert_int_equal(w->n_dims, 2);
  assert_int_equal(w->dims[0], 4);
  assert_int_equal(w->dims[1], 3);
  assert_int_equal(w->init, FSPS__V1__INIT_KIND__INIT_XAVIER_UNIFORM);
  assert_int_equal(r->layers[0]->tensors[1]->init,
                   FSPS__V1__INIT_KIND__INIT_ZEROS);
  Fsps__V1__TensorSpec *w2 = r->layers[1]->tensors[0];
  assert_int_equal(w2->init, FSPS__V1__INIT_KIND__INIT_NORMAL);
  assert_true(w2->init_b == 0.02);
  Fsps__V1__OptimizerSpec *o = r->optimizer;
  assert_string_equal(o->name, "sgd");
  assert_true(o->lr == 0.1 && o->momentum == 0.9 && o->nesterov);
  assert_int_equal(o->schedule, FSPS__V1__SCHEDULE__SCHEDULE_STEP);
  assert_int_equal(o->step_size, 10);
  assert_true(o->gamma == 0.1);
  fsps__v1__model_spec__free_unpacked(r, NULL);
  free(buf);
  wire_spec_msg_free(&m);
  fsps_spec_destroy(spec);
}

static void test_spec_clone_is_equal(void **state) {
  (void)state;
  fsps_spec *spec = two_layer_spec();
  shard_spec *copy = client_spec_clone(client_spec_shard(spec));
  assert_non_null(copy);
  assert_true(shard_spec_equal(copy, client_spec_shard(spec)));
  assert_true(shard_spec_hash(copy) == fsps_spec_hash(spec));
  fsps_spec_destroy(spec); /* the copy owns its own memory */
  assert_int_equal(shard_spec_layer(copy, 0)->n, 16);
  shard_spec_destroy(copy);
}

/* ---- connect ---- */

static int try_connect(const char *servers, uint32_t rank, uint32_t world,
                       char *err, size_t len) {
  fsps_options o;
  fsps_options_init(&o);
  o.servers = servers;
  o.rank = rank;
  o.world = world;
  fsps_client *c = (fsps_client *)1;
  int rc = fsps_connect(&o, &c, err, len);
  if (rc == FSPS_OK)
    fsps_close(c);
  else
    assert_null(c);
  return rc;
}

static void expect_refused(const char *servers, uint32_t rank, uint32_t world,
                           const char *needle) {
  char err[256] = "";
  assert_int_equal(try_connect(servers, rank, world, err, sizeof err),
                   FSPS_INVALID_ARGUMENT);
  if (strstr(err, needle) == NULL)
    fail_msg("'%s': message '%s' does not mention '%s'",
             servers ? servers : "(null)", err, needle);
}

static void test_connect_validates_arguments(void **state) {
  (void)state;
  expect_refused(NULL, 0, 1, "no servers");
  expect_refused("", 0, 1, "no servers");
  expect_refused(" , ", 0, 1, "no servers");
  expect_refused("127.0.0.1:7000", 2, 2, "rank 2");
  expect_refused("127.0.0.1:7000", 0, 0, "world 0");
  expect_refused("localhost", 0, 1, "host:port");
  expect_refused("localhost:0", 0, 1, "port");
  expect_refused("localhost:99999", 0, 1, "port");
  expect_refused("localhost:7x", 0, 1, "port");
  expect_refused(":7000", 0, 1, "host is empty");
  expect_refused("::1:7000", 0, 1, "brackets");
  expect_refused("a:1,,b:2", 0, 1, "server 1 of 3");
  expect_refused("a:1,b:2,", 0, 1, "empty");
  fsps_options o;
  fsps_options_init(&o);
  fsps_client *c;
  assert_int_equal(fsps_connect(&o, NULL, NULL, 0), FSPS_INVALID_ARGUMENT);
  assert_int_equal(fsps_connect(NULL, &c, NULL, 0), FSPS_INVALID_ARGUMENT);
}

static void test_connect_accepts_addresses(void **state) {
  (void)state;
  char err[256] = "";
  assert_int_equal(try_connect("127.0.0.1:7000", 0, 1, err, sizeof err),
                   FSPS_OK);
  assert_int_equal(try_connect(" a.example:1 ,[::1]:7001,unix:/tmp/x", 1, 4,
                               err, sizeof err),
                   FSPS_OK);
  fsps_close(NULL);
}

static void test_options_defaults(void **state) {
  (void)state;
  fsps_options o;
  memset(&o, 0xff, sizeof o);
  fsps_options_init(&o);
  assert_null(o.servers);
  assert_int_equal(o.rank, 0);
  assert_int_equal(o.world, 1);
  assert_int_equal(o.mode, FSPS_BSP);
  assert_int_equal(o.prefetch, 1);
  assert_true(o.reshard_after_forward);
  assert_int_equal(o.timeout_ms, 120000);
  assert_int_equal(o.retries, 8);
  assert_int_equal(o.size, sizeof o);
}

/* older_options fills options of an older header's `old` bytes inside a
 * buffer of 0xab (init: the function a program of that header calls), and
 * checks nothing past them is written and that they connect with the later
 * fields' defaults: the 0xab bytes where those fields lie are never read
 * (a token pointer or a wire_dtype of 0xab would fail or crash). */
static void older_options(size_t old, void (*init)(fsps_options *, size_t)) {
  union {
    fsps_options o;
    unsigned char b[sizeof(fsps_options) + 16];
  } u;
  memset(&u, 0xab, sizeof u);
  init(&u.o, old);
  assert_int_equal(u.o.size, old);
  for (size_t i = old; i < sizeof u.b; i++)
    assert_int_equal(u.b[i], 0xab);
  assert_int_equal(u.o.retries, 8);
  u.o.servers = "127.0.0.1:7000";
  fsps_client *c = NULL;
  char err[256] = "";
  assert_int_equal(fsps_connect(&u.o, &c, err, sizeof err), FSPS_OK);
  fsps_close(c);
}

/* What a program built against 0.3's header calls: the function
 * fsps_options_init (not the macro), on options of 0.3's size. */
static void init_0_3(fsps_options *o, size_t size) {
  assert_int_equal(size, offsetof(fsps_options, io_threads) + sizeof(uint32_t));
  (fsps_options_init)(o);
}

/* Programs built against older headers: 0.3's (through io_threads; it
 * calls the function fsps_options_init) and 0.4's (through the TLS fields,
 * without wire_dtype; its fsps_options_init is the macro passing its
 * sizeof). A newer program's longer options have their extra bytes
 * zeroed, and are refused. */
static void test_options_of_an_older_program(void **state) {
  (void)state;
  older_options(offsetof(fsps_options, io_threads) + sizeof(uint32_t),
                init_0_3);
  size_t v0_4 = offsetof(fsps_options, tls_server_name) + sizeof(const char *);
  assert_true(v0_4 < sizeof(fsps_options)); /* wire_dtype lies past it */
  assert_true(offsetof(fsps_options, wire_dtype) >= v0_4);
  older_options(v0_4, fsps_options_init_size);
  union {
    fsps_options o;
    unsigned char b[sizeof(fsps_options) + 16];
  } u;
  memset(&u, 0xab, sizeof u);
  fsps_options_init_size(&u.o, sizeof u.o + 8);
  assert_int_equal(u.o.size, sizeof u.o + 8);
  for (size_t i = sizeof u.o; i < sizeof u.o + 8; i++)
    assert_int_equal(u.b[i], 0);
  assert_int_equal(u.b[sizeof u.o + 8], 0xab);
  u.o.servers = "127.0.0.1:7000";
  fsps_client *c = NULL;
  char err[256] = "";
  assert_int_equal(fsps_connect(&u.o, &c, err, sizeof err),
                   FSPS_INVALID_ARGUMENT);
}

/* Options not filled by fsps_options_init, or from a newer header, are
 * refused with a message saying what to do. */
static void test_options_size(void **state) {
  (void)state;
  fsps_options o;
  fsps_options_init(&o);
  o.servers = "127.0.0.1:7000";
  fsps_client *c = NULL;
  char err[256] = "";
  o.size = 0;
  assert_int_equal(fsps_connect(&o, &c, err, sizeof err),
                   FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "fsps_options_init"));
  o.size = sizeof o + 8;
  assert_int_equal(fsps_connect(&o, &c, err, sizeof err),
                   FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "newer libfsps"));
  assert_null(c);
  o.size = sizeof o;
  assert_int_equal(fsps_connect(&o, &c, err, sizeof err), FSPS_OK);
  fsps_close(c);
}

static void test_version(void **state) {
  (void)state;
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", FSPS_VERSION_MAJOR,
           FSPS_VERSION_MINOR, FSPS_VERSION_PATCH);
  assert_string_equal(fsps_version(), want);
  assert_string_equal(fsps_err_name(FSPS_UNAVAILABLE), "UNAVAILABLE");
  assert_string_equal(fsps_strerror(FSPS_NOMEM), "out of memory");
  assert_string_equal(fsps_err_name(1000), "?");
}

/* retries = 0 asks for none: a gather from a dead server fails on its
 * first attempt (its message says no retries ran out). */
static void test_zero_retries(void **state) {
  (void)state;
  char a0[64];
  dead_address(a0, sizeof a0);
  for (uint32_t retries = 0; retries < 2; retries++) {
    fsps_client *c = connect_dead_retries(a0, 1, retries);
    shard_spec *s = two_layer_shard();
    assert_int_equal(client_adopt_spec(c, s), FSPS_OK);
    float buf[16];
    int rc = fsps_gather(c, 0, 0, buf, NULL);
    assert_true(rc == FSPS_UNAVAILABLE || rc == FSPS_DEADLINE_EXCEEDED);
    bool exhausted = strstr(fsps_last_error(c), "retries exhausted") != NULL;
    if (exhausted != (retries > 0))
      fail_msg("retries %u: '%s'", retries, fsps_last_error(c));
    fsps_close(c);
    shard_spec_destroy(s);
  }
}

/* ---- plans ---- */

static void test_plan_skips_empty_slices(void **state) {
  (void)state;
  /* 20 elements over 4 servers: stride 16, so servers 2 and 3 own none */
  uint64_t off, cnt, covered = 0;
  uint32_t seen[4], k = 0;
  for (uint32_t s = 0; client_plan_next(20, 4, &s, &off, &cnt); s++) {
    assert_int_equal(off, covered);
    covered += cnt;
    seen[k++] = s;
  }
  assert_int_equal(k, 2);
  assert_int_equal(seen[0], 0);
  assert_int_equal(seen[1], 1);
  assert_int_equal(covered, 20);
  uint32_t s = 0;
  assert_true(client_plan_next(1000, 3, &s, &off, &cnt));
  assert_int_equal(s, 0);
  s = 3;
  assert_false(client_plan_next(1000, 3, &s, &off, &cnt));
}

static void test_plan_tiles_big_layer_in_chunks(void **state) {
  (void)state;
  /* 3 full chunks and 5 floats over 2 servers: each slice is cut into
   * SHARD_CHUNK_ELEMS-sized chunks, the last one shorter */
  uint64_t n = 3 * (uint64_t)SHARD_CHUNK_ELEMS + 5, off, cnt, total = 0;
  uint32_t parts = 0;
  for (uint32_t s = 0; client_plan_next(n, 2, &s, &off, &cnt); s++, parts++) {
    uint64_t nch = shard_num_chunks(cnt), sum = 0;
    for (uint64_t i = 0; i < nch; i++) {
      uint64_t o, len;
      shard_chunk(cnt, i, &o, &len);
      assert_int_equal(o, i * SHARD_CHUNK_ELEMS);
      assert_true(len == SHARD_CHUNK_ELEMS || i == nch - 1);
      assert_true(len > 0 && len <= SHARD_CHUNK_ELEMS);
      sum += len;
    }
    assert_int_equal(sum, cnt);
    assert_int_equal(off, total);
    total += cnt;
  }
  assert_int_equal(parts, 2);
  assert_int_equal(total, n);
}

static void test_min_versions(void **state) {
  (void)state;
  assert_int_equal(client_sched_min_version(FSPS_BSP, 3, 10), 10);
  assert_int_equal(client_sched_min_version(FSPS_SSP, 3, 10), 7);
  assert_int_equal(client_sched_min_version(FSPS_SSP, 3, 2), 0);
  assert_int_equal(client_sched_min_version(FSPS_SSP, 0, 5), 5);
  assert_int_equal(client_sched_min_version(FSPS_ASP, 3, 10), 0);
}

static void test_backoff_doubles_to_cap(void **state) {
  (void)state;
  assert_int_equal(client_backoff_ms(1), 100);
  assert_int_equal(client_backoff_ms(2), 200);
  assert_int_equal(client_backoff_ms(4), 800);
  assert_int_equal(client_backoff_ms(7), 5000);
  assert_int_equal(client_backoff_ms(1000), 5000);
}

/* ---- buffer pool ---- */

static void test_pool_reuses_buffers(void **state) {
  (void)state;
  char addr[64];
  dead_address(addr, sizeof addr);
  fsps_client *c = connect_dead(addr, 1);
  pool_buf *a = client_pool_get(c, 1000);
  assert_non_null(a);
  assert_int_equal(a->cap, 1000);
  assert_int_equal(((uintptr_t)a->p) % 64, 0);
  a->p[999] = 1.0f; /* writable to the end */
  assert_int_equal(fsps_peak_buffer_bytes(c), 4000);
  client_pool_put(c, a);
  pool_buf *b = client_pool_get(c, 500); /* fits in a: reused, no new bytes */
  assert_ptr_equal(b, a);
  assert_int_equal(fsps_peak_buffer_bytes(c), 4000);
  pool_buf *d = client_pool_get(c, 2000); /* nothing free fits: allocated */
  assert_ptr_not_equal(d, a);
  assert_int_equal(fsps_peak_buffer_bytes(c), 12000);
  client_pool_put(c, b);
  client_pool_put(c, d);
  pool_buf *e = client_pool_get(c, 900); /* best fit: the 1000, not the 2000 */
  assert_ptr_equal(e, a);
  client_pool_put(c, e);
  assert_int_equal(fsps_peak_buffer_bytes(c), 12000);
  fsps_close(c);
}

/* ---- keep plan ---- */

/* vector_shard builds layers of the given sizes (one vector each). */
static shard_spec *vector_shard(const uint64_t *sizes, uint32_t L) {
  shard_spec *s = shard_spec_create(1);
  for (uint32_t l = 0; l < L; l++) {
    char name[16];
    snprintf(name, sizeof name, "l%u", l);
    shard_spec_add_layer(s, name);
    shard_spec_add_tensor(s, "v", 1, &sizes[l], SHARD_INIT_ZEROS, 0, 0);
  }
  return s;
}

/* plan_case gives a client (prefetch 1) the model sizes[0..L) and a pool
 * of buffers caps[0..n), and returns its plan's bit mask. */
static unsigned plan_case(const uint64_t *sizes, uint32_t L,
                          const uint64_t *caps, uint32_t n, uint64_t grown) {
  char addr[64];
  dead_address(addr, sizeof addr);
  fsps_client *c = connect_dead(addr, 1);
  shard_spec *s = vector_shard(sizes, L);
  assert_int_equal(client_adopt_spec(c, s), FSPS_OK);
  pool_buf *b[8];
  for (uint32_t i = 0; i < n; i++)
    assert_non_null(b[i] = client_pool_get(c, caps[i]));
  for (uint32_t i = 0; i < n; i++)
    client_pool_put(c, b[i]);
  bool keep[8];
  assert_int_equal(client_plan_keep(c, keep, c->bytes, c->bytes + grown),
                   FSPS_OK);
  unsigned mask = 0;
  for (uint32_t l = 0; l < L; l++)
    mask |= (unsigned)keep[l] << l;
  shard_spec_destroy(s);
  fsps_close(c);
  return mask;
}

/* The pool strict resharding builds for a small, two big and a tiny layer
 * holds the whole model (the small layer's buffer fits no big one): forward
 * keeps every layer, with one more buffer for the tiny one; without room
 * for that buffer, none. With four big layers, the small one and the last
 * big one (the tail backward starts with holds only one big layer); the
 * others need both big buffers in turn. With two big buffers and room for
 * a tiny one, the second layer (the first needs its buffer back). */
static void test_plan_keeps_what_is_not_reused(void **state) {
  (void)state;
  const uint64_t wide[] = {1000, 300000, 300000, 10};
  const uint64_t pool[] = {1000, 300000, 300000};
  assert_int_equal(plan_case(wide, 4, pool, 3, 0), 0x3);
  assert_int_equal(plan_case(wide, 4, pool, 3, 601000 * 4 / 64), 0x0);
  const uint64_t deep[] = {1000, 300000, 300000, 300000, 300000, 10};
  assert_int_equal(plan_case(deep, 6, pool, 3, 0), 0x9);
  const uint64_t two[] = {300000, 300000};
  assert_int_equal(plan_case(wide, 4, two, 2, 0), 0x2);
}

/* ---- failures without servers ---- */

static void test_calls_need_a_model(void **state) {
  (void)state;
  char addr[64];
  dead_address(addr, sizeof addr);
  fsps_client *c = connect_dead(addr, 1);
  float buf[16];
  assert_int_equal(fsps_gather(c, 0, 0, buf, NULL), FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(fsps_last_error(c), "fsps_declare"));
  assert_int_equal(fsps_push(c, 0, 0, buf), FSPS_FAILED_PRECONDITION);
  assert_int_equal(fsps_step_begin(c, 0), FSPS_FAILED_PRECONDITION);
  assert_int_equal(fsps_push_wait(c), FSPS_OK);
  fsps_close(c);
}

static void test_declare_unreachable(void **state) {
  (void)state;
  char addr[64];
  dead_address(addr, sizeof addr);
  fsps_client *c = connect_dead(addr, 1);
  fsps_spec *spec = two_layer_spec();
  double t0 = seconds();
  int rc = fsps_declare(c, spec);
  assert_true(rc == FSPS_UNAVAILABLE || rc == FSPS_DEADLINE_EXCEEDED);
  assert_true(seconds() - t0 < 10.0);
  if (strstr(fsps_last_error(c), addr) == NULL)
    fail_msg("message '%s' does not name %s", fsps_last_error(c), addr);
  assert_int_equal(fsps_spec_num_layers(spec), 2);
  fsps_spec_add_layer(spec, "empty");
  assert_int_equal(fsps_declare(c, spec), FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(fsps_last_error(c), "empty"));
  fsps_spec_destroy(spec);
  fsps_close(c);
}

static void test_gather_unreachable(void **state) {
  (void)state;
  char a0[64], a1[64], servers[160];
  dead_address(a0, sizeof a0);
  dead_address(a1, sizeof a1);
  snprintf(servers, sizeof servers, "%s,%s", a0, a1);
  fsps_client *c = connect_dead(servers, 1);
  shard_spec *s = two_layer_shard();
  assert_int_equal(client_adopt_spec(c, s), FSPS_OK);
  float buf[16];
  double t0 = seconds();
  int rc = fsps_gather(c, 0, 0, buf, NULL);
  assert_true(rc == FSPS_UNAVAILABLE || rc == FSPS_DEADLINE_EXCEEDED);
  assert_true(seconds() - t0 < 10.0);
  const char *msg = fsps_last_error(c);
  if (strstr(msg, "layer 0") == NULL ||
      (strstr(msg, a0) == NULL && strstr(msg, a1) == NULL))
    fail_msg("message '%s' names no layer or server", msg);
  assert_int_equal(fsps_gather(c, 5, 0, buf, NULL), FSPS_INVALID_ARGUMENT);
  /* Ranges of layer 0 (16 floats) that are empty or leave it: refused
   * before anything is sent. */
  static const uint64_t bad[][2] = {
      {0, 0}, {16, 1}, {17, 0}, {15, 2}, {1, UINT64_MAX}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(
        fsps_gather_range(c, 0, 0, bad[i][0], bad[i][1], buf, NULL),
        FSPS_INVALID_ARGUMENT);
    assert_non_null(strstr(fsps_last_error(c), "outside layer 0"));
  }
  rc = fsps_gather_range(c, 0, 0, 3, 5, buf, NULL); /* a valid one goes out */
  assert_true(rc == FSPS_UNAVAILABLE || rc == FSPS_DEADLINE_EXCEEDED);
  shard_spec_destroy(s);
  fsps_close(c);
}

static void test_push_unreachable(void **state) {
  (void)state;
  char addr[64];
  dead_address(addr, sizeof addr);
  fsps_client *c = connect_dead(addr, 1);
  shard_spec *s = two_layer_shard();
  assert_int_equal(client_adopt_spec(c, s), FSPS_OK);
  float grad[16] = {0};
  assert_int_equal(fsps_push(c, 0, 3, grad), FSPS_OK); /* does not wait */
  int rc = fsps_push_wait(c);
  assert_true(rc == FSPS_UNAVAILABLE || rc == FSPS_DEADLINE_EXCEEDED);
  const char *msg = fsps_last_error(c);
  if (strstr(msg, "push layer 0 step 3") == NULL || strstr(msg, addr) == NULL)
    fail_msg("message '%s' names no layer, step or server", msg);
  assert_int_equal(fsps_push_wait(c), FSPS_OK); /* the error was reported */
  shard_spec_destroy(s);
  fsps_close(c);
}

static void test_adopt_refuses_other_model(void **state) {
  (void)state;
  char addr[64];
  dead_address(addr, sizeof addr);
  fsps_client *c = connect_dead(addr, 1);
  shard_spec *s = two_layer_shard();
  assert_int_equal(client_adopt_spec(c, s), FSPS_OK);
  assert_int_equal(client_adopt_spec(c, s), FSPS_OK);
  shard_spec *other = shard_spec_create(43);
  assert_int_equal(client_adopt_spec(c, other), FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(fsps_last_error(c), "already holds"));
  shard_spec_destroy(other);
  shard_spec_destroy(s);
  fsps_close(c);
}

/* The scheduler's bookkeeping holds even when every gather fails: buffers
 * are taken at the layers' sizes, reused the next step, and errors name the
 * layer. */
static void test_scheduler_bookkeeping(void **state) {
  (void)state;
  char addr[64];
  dead_address(addr, sizeof addr);
  fsps_client *c = connect_dead(addr, 1);
  shard_spec *s = two_layer_shard();
  assert_int_equal(client_adopt_spec(c, s), FSPS_OK);
  const float *w;
  float *g;
  assert_int_equal(fsps_forward(c, 0, &w), FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(fsps_last_error(c), "fsps_step_begin"));
  assert_int_equal(fsps_step_begin(c, 5), FSPS_OK);
  /* layer 0 (16 floats) and, prefetched, layer 1 (8 floats) */
  assert_int_equal(fsps_peak_buffer_bytes(c), (16 + 8) * sizeof(float));
  int rc = fsps_forward(c, 0, &w);
  assert_true(rc == FSPS_UNAVAILABLE || rc == FSPS_DEADLINE_EXCEEDED);
  assert_non_null(strstr(fsps_last_error(c), "pull layer 0"));
  assert_int_equal(fsps_forward(c, 2, &w), FSPS_INVALID_ARGUMENT);
  assert_int_equal(fsps_backward_done(c, 1), FSPS_FAILED_PRECONDITION);
  assert_int_equal(fsps_step_end(c), FSPS_OK);
  assert_true(fsps_wait_seconds(c) > 0.0);
  assert_int_equal(fsps_step_begin(c, 6), FSPS_OK); /* buffers reused */
  assert_int_equal(fsps_peak_buffer_bytes(c), (16 + 8) * sizeof(float));
  rc = fsps_backward(c, 1, &w, &g);
  assert_true(rc == FSPS_UNAVAILABLE || rc == FSPS_DEADLINE_EXCEEDED);
  assert_int_equal(fsps_step_end(c), FSPS_OK);
  shard_spec_destroy(s);
  fsps_close(c);
}

/* ---- a fake server that answers Pull as told ---- */

static float g_payload[64];

/* fake_pull answers by the request's min_version: 0 a good answer (two
 * chunks), 1 a chunk outside the slice, 2 half the slice, 3 two versions,
 * 4 a chunk for another layer. */
static void fake_pull(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)ctx;
  ProtobufCMessage *m;
  if (rpc_msg_unpack(msg, &fsps__v1__pull_request__descriptor, &m, NULL)) {
    rpc_call_finish(call, NULL, FSPS_INVALID_ARGUMENT, "bad request");
    return;
  }
  uint64_t how = ((Fsps__V1__PullRequest *)m)->min_version;
  protobuf_c_message_free_unpacked(m, NULL);
  rpc_tensor_hdr h = {0};
  rpc_hdr_set(&h, WIRE_PULL_LAYER, how == 4 ? 1 : 0);
  rpc_hdr_set(&h, WIRE_PULL_VERSION, how);
  rpc_hdr_set(&h, WIRE_PULL_OFFSET, how == 1 ? 10 : 0);
  /* one send at a time: the second chunk goes from on_sent */
  rpc_call_set_user(call, (void *)(uintptr_t)(how + 1));
  rpc_call_send_tensor(call, &h, g_payload, 8 * sizeof(float), NULL, NULL);
}

static void fake_sent(rpc_call *call, bool ok, void *ctx) {
  (void)ctx;
  uintptr_t how = (uintptr_t)rpc_call_user(call) - 1;
  rpc_call_set_user(call, (void *)(uintptr_t)100);
  if (!ok || how == 2 || how >= 99) {
    rpc_call_finish(call, NULL, FSPS_OK, NULL);
    return;
  }
  rpc_tensor_hdr h = {0};
  rpc_hdr_set(&h, WIRE_PULL_VERSION, how == 3 ? 7 : how);
  rpc_hdr_set(&h, WIRE_PULL_OFFSET, 8);
  rpc_call_send_tensor(call, &h, g_payload + 8, 8 * sizeof(float), NULL, NULL);
}

static const rpc_method fake_methods[] = {
    {.path = WIRE_PATH_PULL,
     .kind = RPC_SERVER_STREAMING,
     .on_start = fake_pull,
     .on_sent = fake_sent},
};

static void test_gather_checks_server_answers(void **state) {
  (void)state;
  for (int i = 0; i < 64; i++)
    g_payload[i] = (float)i + 0.5f;
  rpc_status st;
  rpc_server_opts so = {.listen = "127.0.0.1:0",
                        .threads = 1,
                        .max_message_bytes = WIRE_MAX_MESSAGE_BYTES};
  rpc_server *srv = rpc_server_create(&so, fake_methods, 1, &st);
  assert_non_null(srv);
  assert_int_equal(rpc_server_start(srv, &st), FSPS_OK);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", rpc_server_port(srv));
  fsps_client *c = connect_dead(addr, 1);
  shard_spec *s = two_layer_shard(); /* layer 0: 16 floats */
  assert_int_equal(client_adopt_spec(c, s), FSPS_OK);
  float dst[16 + 8]; /* guard after the layer */
  for (int i = 0; i < 24; i++)
    dst[i] = -1.0f;
  uint64_t v = 99;
  assert_int_equal(fsps_gather(c, 0, 0, dst, &v), FSPS_OK);
  assert_int_equal(v, 0);
  for (int i = 0; i < 16; i++)
    assert_true(dst[i] == (float)i + 0.5f);
  const struct {
    uint64_t how;
    int rc;
    const char *needle;
  } bad[] = {{1, FSPS_DATA_LOSS, "does not continue"},
             {2, FSPS_DATA_LOSS, "ended after 8 of 16"},
             {3, FSPS_DATA_LOSS, "version 7 after version 3"},
             {4, FSPS_DATA_LOSS, "chunk for layer 1"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(fsps_gather(c, 0, bad[i].how, dst, &v), bad[i].rc);
    if (strstr(fsps_last_error(c), bad[i].needle) == NULL)
      fail_msg("case %zu: '%s' lacks '%s'", i, fsps_last_error(c),
               bad[i].needle);
    assert_non_null(strstr(fsps_last_error(c), addr));
  }
  for (int i = 16; i < 24; i++)
    assert_true(dst[i] == -1.0f); /* nothing written past the layer */
  shard_spec_destroy(s);
  fsps_close(c);
  rpc_server_shutdown(srv, 1000);
  rpc_server_destroy(srv);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spec_builder_matches_shard),
      cmocka_unit_test(test_spec_defaults_to_adam),
      cmocka_unit_test(test_spec_optimizer_keeps_schedule),
      cmocka_unit_test(test_spec_bad_names_are_remembered),
      cmocka_unit_test(test_spec_bad_values),
      cmocka_unit_test(test_spec_message_fields),
      cmocka_unit_test(test_spec_clone_is_equal),
      cmocka_unit_test(test_connect_validates_arguments),
      cmocka_unit_test(test_connect_accepts_addresses),
      cmocka_unit_test(test_options_defaults),
      cmocka_unit_test(test_options_size),
      cmocka_unit_test(test_options_of_an_older_program),
      cmocka_unit_test(test_version),
      cmocka_unit_test(test_zero_retries),
      cmocka_unit_test(test_plan_skips_empty_slices),
      cmocka_unit_test(test_plan_tiles_big_layer_in_chunks),
      cmocka_unit_test(test_min_versions),
      cmocka_unit_test(test_backoff_doubles_to_cap),
      cmocka_unit_test(test_pool_reuses_buffers),
      cmocka_unit_test(test_plan_keeps_what_is_not_reused),
      cmocka_unit_test(test_calls_need_a_model),
      cmocka_unit_test(test_declare_unreachable),
      cmocka_unit_test(test_gather_unreachable),
      cmocka_unit_test(test_push_unreachable),
      cmocka_unit_test(test_adopt_refuses_other_model),
      cmocka_unit_test(test_scheduler_bookkeeping),
      cmocka_unit_test(test_gather_checks_server_answers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
