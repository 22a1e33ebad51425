/* fuzz_ckpt_read.c: libFuzzer target for the checkpoint reader
 * (server/checkpoint.c). Each run writes the input as this server's
 * checkpoint file into a fresh folder on /dev/shm and calls ckpt_restore on
 * an empty store, as fsps-server does at start. Input: a control byte (bit
 * 0: overwrite the file's last 4 bytes with the right CRC32C, so mutations
 * get past the checksum to the parser; bits 1-3: fuzz_config flags), then
 * the file. Checks: the result is OK (model declared), NOT_FOUND (store
 * still empty) or DATA_LOSS, with a message; after a restore the store
 * takes pushes, and writing it out and reading that back into a second
 * store gives the same layers bit for bit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "fsps.pb-c.h"
#include "fuzz.h"

#define BLOB_AT 48 /* magic, format, S, s, W, hash, tag, layers, length */

/* affordable skips files whose model spec is too large to declare within
 * the fuzzer's memory budget (fuzz_model_fits). */
static bool affordable(const uint8_t *f, size_t n, const server_config *c) {
  uint32_t len;
  if (n < BLOB_AT)
    return true;
  memcpy(&len, f + BLOB_AT - 4, 4);
  if (len > n - BLOB_AT)
    return true;
  Fsps__V1__ModelSpec *m = fsps__v1__model_spec__unpack(NULL, len, f + 48);
  bool ok = m == NULL || fuzz_model_fits(m, c);
  if (m)
    fsps__v1__model_spec__free_unpacked(m, NULL);
  return ok;
}

static void write_file(const char *path, const uint8_t *p, size_t n,
                       bool fix_crc) {
  FILE *f = fopen(path, "wb");
  fuzz_check(f != NULL);
  if (fix_crc && n >= 4) {
    uint32_t crc = fuzz_crc32c(p, n - 4);
    fuzz_check(fwrite(p, 1, n - 4, f) == n - 4 && fwrite(&crc, 4, 1, f) == 1);
  } else {
    fuzz_check(fwrite(p, 1, n, f) == n);
  }
  fuzz_check(fclose(f) == 0);
}

/* restore loads the newest checkpoint of dir into a new service. */
static int restore(service *svc, const server_config *c) {
  char msg[512] = "";
  fuzz_service_open(svc, c, NULL);
  svc->ck = ckpt_create(svc->st, c, msg, sizeof msg);
  fuzz_check(svc->ck != NULL);
  int rc = ckpt_restore(svc->ck, msg, sizeof msg);
  fuzz_check(msg[0] != '\0');
  fuzz_check(rc == FSPS_OK || rc == FSPS_NOT_FOUND || rc == FSPS_DATA_LOSS);
  fuzz_check((rc == FSPS_NOT_FOUND) == !store_ready(svc->st));
  return rc;
}

static void close_service(service *svc) {
  ckpt_destroy(svc->ck);
  fuzz_service_close(svc);
}

/* push_round has every worker push the step each layer is at. */
static void push_round(service *svc) {
  for (uint32_t l = 0; l < store_num_layers(svc->st); l++) {
    store_layer_info in;
    store_info(store_layer_get(svc->st, l), &in);
    for (uint32_t w = 0; in.count > 0 && w < FUZZ_WORKERS; w++)
      fuzz_push_step(svc, l, in.version, w, 0.25f);
  }
}

static void same_layers(service *a, service *b) {
  fuzz_check(store_num_layers(a->st) == store_num_layers(b->st));
  for (uint32_t l = 0; l < store_num_layers(a->st); l++) {
    store_layer *La = store_layer_get(a->st, l),
                *Lb = store_layer_get(b->st, l);
    size_t n = store_layer_floats(La);
    fuzz_check(n == store_layer_floats(Lb));
    float *x = malloc(n * sizeof(float) + 1),
          *y = malloc(n * sizeof(float) + 1);
    fuzz_check(x != NULL && y != NULL);
    store_layer_info ia, ib;
    store_info(La, &ia);
    store_info(Lb, &ib);
    uint64_t va = ia.count ? store_copy_now(La, x) : ia.version;
    uint64_t vb = ib.count ? store_copy_now(Lb, y) : ib.version;
    fuzz_check(va == vb && (ia.count == 0 || !memcmp(x, y, n * sizeof(float))));
    free(x);
    free(y);
  }
}

/* round_trip writes svc's store to a file and reads it into another. */
static void round_trip(service *svc, const server_config *c, const char *in) {
  char path[1200], msg[512];
  uint64_t bytes, lowest;
  unlink(in);
  fuzz_check(ckpt_write_now(svc->ck, path, sizeof path, &bytes, &lowest, msg,
                            sizeof msg) == FSPS_OK);
  service back;
  fuzz_check(restore(&back, c) == FSPS_OK);
  same_layers(svc, &back);
  close_service(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  unsigned ctl = fuzz_u8(&in);
  server_config c;
  fuzz_quiet();
  fuzz_config(&c, (ctl >> 1) & 7);
  if (!affordable(in.p, in.n, &c))
    return 0;
  char dir[256], file[1200];
  fuzz_tmpdir(dir, sizeof dir);
  snprintf(c.checkpoint_dir, sizeof c.checkpoint_dir, "%s", dir);
  snprintf(file, sizeof file, "%s/ckpt-s%uof%u-v%020u.fsps", dir, FUZZ_INDEX,
           FUZZ_SERVERS, 7u);
  write_file(file, in.p, in.n, ctl & 1);
  service svc;
  if (restore(&svc, &c) == FSPS_OK) {
    push_round(&svc);
    round_trip(&svc, &c, file);
  }
  close_service(&svc);
  fuzz_rmdir(dir);
  return 0;
}
