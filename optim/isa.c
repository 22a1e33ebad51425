/* isa.c: which instruction set's kernels optim runs: the widest this CPU
 * has (or the one FSPS_OPTIM_ISA caps it to), decided once per process. */

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "optim_int.h"

static const char *const NAMES[] = {
    [OPTIM_ISA_PORTABLE] = "portable",
    [OPTIM_ISA_AVX2] = "avx2",
    [OPTIM_ISA_AVX512] = "avx512",
};

enum { NISA = sizeof NAMES / sizeof NAMES[0], UNDECIDED = -1 };

/* The optim_isa in use, UNDECIDED before the first call. Only this int is
 * shared, and every value it takes names a constant table, so relaxed
 * atomics suffice. */
static atomic_int chosen = UNDECIDED;

const char *optim_isa_name(optim_isa isa) {
  return (unsigned)isa < NISA ? NAMES[isa] : "unknown";
}

int optim_isa_parse(const char *name, optim_isa *isa) {
  for (int i = 0; i < NISA; i++)
    if (strcmp(name, NAMES[i]) == 0)
      return (*isa = (optim_isa)i, 0);
  return -1;
}

/* libgcc's (and compiler-rt's) CPU model is filled in by a constructor
 * before main, and these report a feature only where the OS also saves
 * its registers (XCR0), so they are safe from any thread. */
bool optim_isa_supported(optim_isa isa) {
  switch (isa) {
  case OPTIM_ISA_PORTABLE:
    return true;
#if OPTIM_X86
  case OPTIM_ISA_AVX2:
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  case OPTIM_ISA_AVX512:
    return __builtin_cpu_supports("avx512f");
#endif
  default:
    return false;
  }
}

/* The widest supported instruction set no wider than FSPS_OPTIM_ISA's. */
static optim_isa decide(void) {
  optim_isa cap = (optim_isa)(NISA - 1);
  const char *env = getenv("FSPS_OPTIM_ISA");
  if (env != NULL && optim_isa_parse(env, &cap) != 0)
    cap = (optim_isa)(NISA - 1);
  for (int i = (int)cap; i > OPTIM_ISA_PORTABLE; i--)
    if (optim_isa_supported((optim_isa)i))
      return (optim_isa)i;
  return OPTIM_ISA_PORTABLE;
}

optim_isa optim_isa_current(void) {
  int isa = atomic_load_explicit(&chosen, memory_order_relaxed);
  if (isa != UNDECIDED)
    return (optim_isa)isa;
  /* Racing first calls all decide the same; optim_isa_set, if it came
   * first, wins. */
  int undecided = UNDECIDED;
  atomic_compare_exchange_strong_explicit(&chosen, &undecided, (int)decide(),
                                          memory_order_relaxed,
                                          memory_order_relaxed);
  return (optim_isa)atomic_load_explicit(&chosen, memory_order_relaxed);
}

int optim_isa_set(optim_isa isa) {
  if (!optim_isa_supported(isa))
    return -1;
  atomic_store_explicit(&chosen, (int)isa, memory_order_relaxed);
  return 0;
}

const optim_kernels *optim_kernels_current(void) {
  switch (optim_isa_current()) {
#if OPTIM_X86
  case OPTIM_ISA_AVX512:
    return &optim_kernels_avx512;
  case OPTIM_ISA_AVX2:
    return &optim_kernels_avx2;
#endif
  default:
    return &optim_kernels_portable;
  }
}
