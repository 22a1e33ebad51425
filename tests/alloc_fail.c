/* alloc_fail.c: the --wrap'ed allocators of alloc_fail.h, counting calls
 * and failing the armed one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "alloc_fail.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__real_aligned_alloc(size_t align, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
void *__wrap_aligned_alloc(size_t align, size_t n);

static atomic_bool armed;
static atomic_bool hit;
static atomic_uint_fast64_t fail_at, count;

void alloc_fail_arm(uint64_t n) {
  atomic_store(&count, 0);
  atomic_store(&fail_at, n);
  atomic_store(&hit, false);
  atomic_store(&armed, true);
}

void alloc_fail_disarm(void) {
  atomic_store(&armed, false);
}

bool alloc_fail_hit(void) {
  return atomic_load(&hit);
}

uint64_t alloc_fail_count(void) {
  return atomic_load(&count);
}

/* fail_now counts one allocation; true when it is the one to fail. */
static bool fail_now(void) {
  if (!atomic_load(&armed))
    return false;
  if (atomic_fetch_add(&count, 1) + 1 != atomic_load(&fail_at))
    return false;
  atomic_store(&hit, true);
  return true;
}

void *__wrap_malloc(size_t n) {
  return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n) {
  return fail_now() ? NULL : __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n) {
  return fail_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s) {
  return fail_now() ? NULL : __real_strdup(s);
}

void *__wrap_aligned_alloc(size_t align, size_t n) {
  return fail_now() ? NULL : __real_aligned_alloc(align, n);
}

uint64_t alloc_fail_loop(void (*setup)(void *arg), void (*op)(void *arg),
                         void (*check)(void *arg, bool failed), void *arg,
                         uint64_t limit) {
  for (uint64_t n = 1; n <= limit; n++) {
    if (setup)
      setup(arg);
    alloc_fail_arm(n);
    op(arg);
    alloc_fail_disarm();
    bool failed = alloc_fail_hit();
    check(arg, failed);
    if (!failed)
      return alloc_fail_count();
  }
  fail_msg("still meeting injected failures after %llu runs",
           (unsigned long long)limit);
  return 0;
}
