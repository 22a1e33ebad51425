/* fuzz_checkpoint.c: libFuzzer target for fsps.v1.ParameterServer/
 * Checkpoint on a server with a --checkpoint-dir (a fresh folder on
 * /dev/shm, removed at exit) holding the small fixture model. Input: one
 * byte choosing how the request is cut into slices, then the request. The
 * call must succeed exactly when the bytes are a CheckpointRequest, and the
 * file it names must exist with the size it reports. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "fsps.pb-c.h"
#include "fuzz.h"

static service g_svc;
static char g_dir[256];

static int expected(const uint8_t *req, size_t n) {
  Fsps__V1__CheckpointRequest *r =
      fsps__v1__checkpoint_request__unpack(NULL, n, req);
  if (r == NULL)
    return FSPS_INVALID_ARGUMENT;
  fsps__v1__checkpoint_request__free_unpacked(r, NULL);
  return FSPS_OK;
}

static void check_reply(void *arg, rpc_call *c) {
  (void)arg;
  size_t len;
  const uint8_t *reply = fuzz_call_reply(c, &len);
  if (fuzz_call_code(c) != FSPS_OK)
    return;
  Fsps__V1__CheckpointReply *r =
      fsps__v1__checkpoint_reply__unpack(NULL, len, reply);
  fuzz_check(r != NULL);
  struct stat sb;
  fuzz_check(stat(r->path, &sb) == 0 && (uint64_t)sb.st_size == r->bytes);
  fsps__v1__checkpoint_reply__free_unpacked(r, NULL);
}

static void teardown(void) {
  ckpt_destroy(g_svc.ck);
  fuzz_service_close(&g_svc);
  fuzz_rmdir(g_dir);
}

static const rpc_method *setup(void) {
  server_config c;
  fuzz_model model = {.big = false, .optim = FUZZ_ADAM};
  char msg[512];
  fuzz_quiet();
  fuzz_config(&c, 0);
  fuzz_tmpdir(g_dir, sizeof g_dir);
  snprintf(c.checkpoint_dir, sizeof c.checkpoint_dir, "%s", g_dir);
  fuzz_service_open(&g_svc, &c, &model);
  g_svc.ck = ckpt_create(g_svc.st, &c, msg, sizeof msg);
  fuzz_check(g_svc.ck != NULL);
  atexit(teardown);
  return fuzz_method(&g_svc, WIRE_PATH_CHECKPOINT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const rpc_method *m;
  if (m == NULL)
    m = setup();
  fuzz_in in = {data, size};
  unsigned split = fuzz_u8(&in);
  int code = fuzz_unary(m, in.p, in.n, split, check_reply, NULL);
  fuzz_check(code == expected(in.p, in.n));
  return 0;
}
