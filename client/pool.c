/* pool.c: the buffer pool — layer and gradient buffers allocated once, at
 * a layer's size, and reused from a free list, because page-faulting fresh
 * memory every step is what makes a worker slow here (GRPC_NOTES.md). */
#include <stdlib.h>

#include "client_int.h"

#define POOL_ALIGN 64

/* take_best_locked removes and returns the smallest free buffer holding at
 * least n floats, or NULL (c->mu held). */
static pool_buf *take_best_locked(fsps_client *c, uint64_t n) {
  pool_buf **best = NULL;
  for (pool_buf **b = &c->free_bufs; *b != NULL; b = &(*b)->next)
    if ((*b)->cap >= n && (best == NULL || (*b)->cap < (*best)->cap))
      best = b;
  if (best == NULL)
    return NULL;
  pool_buf *found = *best;
  *best = found->next;
  found->next = NULL;
  return found;
}

static pool_buf *pool_alloc(uint64_t n) {
  pool_buf *b = calloc(1, sizeof *b);
  void *p = NULL;
  if (b == NULL || n > SIZE_MAX / sizeof(float) ||
      posix_memalign(&p, POOL_ALIGN, (size_t)n * sizeof(float)) != 0) {
    free(b);
    return NULL;
  }
  b->p = p;
  b->cap = n;
  return b;
}

uint64_t client_pool_size_class(uint64_t n) {
  uint64_t step = 1;
  while (step <= n / 32)
    step <<= 1;
  return (n + step - 1) / step * step;
}

pool_buf *client_pool_get(fsps_client *c, uint64_t n) {
  pthread_mutex_lock(&c->mu);
  pool_buf *b = take_best_locked(c, n);
  pthread_mutex_unlock(&c->mu);
  if (b != NULL)
    return b;
  b = pool_alloc(n);
  if (b == NULL)
    return NULL;
  pthread_mutex_lock(&c->mu);
  c->bytes += n * sizeof(float);
  if (c->bytes > c->peak_bytes)
    c->peak_bytes = c->bytes;
  pthread_mutex_unlock(&c->mu);
  return b;
}

void client_pool_put_locked(fsps_client *c, pool_buf *b) {
  b->next = c->free_bufs;
  c->free_bufs = b;
}

void client_pool_put(fsps_client *c, pool_buf *b) {
  pthread_mutex_lock(&c->mu);
  client_pool_put_locked(c, b);
  pthread_mutex_unlock(&c->mu);
}

void client_pool_destroy(fsps_client *c) {
  while (c->free_bufs != NULL) {
    pool_buf *b = c->free_bufs;
    c->free_bufs = b->next;
    c->bytes -= b->cap * sizeof(float);
    free(b->p);
    free(b);
  }
}
