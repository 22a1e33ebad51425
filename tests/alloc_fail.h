/* alloc_fail.h: allocation-failure injection for unit tests, SQLite
 * style — the Nth allocation fails, for N = 1, 2, 3, ... in turn. */
#ifndef FSPS_TESTS_ALLOC_FAIL_H
#define FSPS_TESTS_ALLOC_FAIL_H

#include <stdbool.h>
#include <stdint.h>

/* How it works: a test executable linked with fsps_alloc_fail_wrap()
 * (tests/CMakeLists.txt) has the linker route every call its own objects
 * and our static libraries make to malloc, calloc, realloc, strdup and
 * aligned_alloc through this module (-Wl,--wrap=...), so production code
 * is unchanged. Calls made inside shared libraries (libc's own fopen,
 * protobuf-c, gRPC, cmocka) are not counted and never fail. */

/* alloc_fail_arm makes the nth allocation from now fail (n >= 1) and
 * every one after it succeed; alloc_fail_disarm stops counting. */
void alloc_fail_arm(uint64_t n);
void alloc_fail_disarm(void);

/* alloc_fail_hit returns whether the armed failure was injected. */
bool alloc_fail_hit(void);

/* alloc_fail_count returns the allocations counted since arming. */
uint64_t alloc_fail_count(void);

/* alloc_fail_loop runs, for n = 1, 2, 3, ..., setup(arg) (may be NULL),
 * then op(arg) with failure n armed, then check(arg, failed) (failed: the
 * injection was hit) to assert what op did and release what setup made,
 * until a run meets no injected failure. setup rebuilds the same state
 * each time, so every run makes the same allocations up to the failing
 * one. Returns the number of allocations the successful run made; fails
 * the test past `limit` runs. */
uint64_t alloc_fail_loop(void (*setup)(void *arg), void (*op)(void *arg),
                         void (*check)(void *arg, bool failed), void *arg,
                         uint64_t limit);

#endif
