/* store_pool.c: the store's float buffers — huge-page-aligned allocation,
 * each layer's pool of recycled, refcounted slice buffers, and the bf16
 * copies of a bf16 model's parameters that its pulls send. */
#include <stdlib.h>
#include <sys/mman.h>

#include "store_int.h"
#include "wire.h"

/* Buffers of a huge page or more are aligned to one and advised to use
 * huge pages: first touching memory costs 10-15 us per 4 KiB page on some
 * VMs (230 ms for a 64 MiB slice), about 20x less in 2 MiB pages. That
 * cost hits a layer's first push, and a pull-time copy of parameters
 * (apply) whenever the pool has no free buffer. */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)

void *store_big_alloc(size_t bytes) {
  if (bytes < HUGE_PAGE_BYTES)
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
  bytes = (bytes + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1);
  void *p = aligned_alloc(HUGE_PAGE_BYTES, bytes);
  if (p != NULL)
    madvise(p, bytes, MADV_HUGEPAGE); /* only a hint: failure is harmless */
  return p;
}

fbuf *store_fbuf_get(store_layer *L) {
  pthread_mutex_lock(&L->pool_mu);
  fbuf *b = L->free_list;
  if (b)
    L->free_list = b->next_free;
  pthread_mutex_unlock(&L->pool_mu);
  if (b == NULL) {
    b = calloc(1, sizeof *b);
    size_t bytes = (L->cnt ? L->cnt : 1) * sizeof(float);
    if (b == NULL || (b->data = store_big_alloc(bytes)) == NULL) {
      free(b);
      return NULL;
    }
    b->layer = L;
  }
  atomic_init(&b->refs, 1);
  b->wire_ok = false; /* whatever it held before */
  return b;
}

static void fbuf_put(fbuf *b) {
  store_layer *L = b->layer;
  pthread_mutex_lock(&L->pool_mu);
  b->next_free = L->free_list;
  L->free_list = b;
  pthread_mutex_unlock(&L->pool_mu);
}

void store_fbuf_ref(fbuf *b) {
  atomic_fetch_add(&b->refs, 1);
}

void store_fbuf_unref(fbuf *b) {
  if (atomic_fetch_sub(&b->refs, 1) == 1)
    fbuf_put(b);
}

void store_pool_free(store_layer *L) {
  for (fbuf *b = L->free_list, *next; b != NULL; b = next) {
    next = b->next_free;
    free(b->data);
    free(b->wire);
    free(b);
  }
  L->free_list = NULL;
}

/* ---- bf16 copies ---- */

int store_fbuf_wire(store_layer *L, fbuf *b) {
  if (L->st->wire != SHARD_WIRE_BF16 || b->wire != NULL)
    return FSPS_OK;
  b->wire = store_big_alloc((L->cnt ? L->cnt : 1) * sizeof *b->wire);
  b->wire_ok = false;
  return b->wire != NULL ? FSPS_OK : FSPS_NOMEM;
}

void store_params_changed_locked(store_layer *L) {
  L->cur->wire_ok = false;
}

void store_params_out_locked(store_layer *L) {
  fbuf *b = L->cur;
  if (L->st->wire != SHARD_WIRE_BF16 || b->wire_ok)
    return;
  wire_bf16_encode(b->wire, b->data, L->cnt);
  b->wire_ok = true;
}
