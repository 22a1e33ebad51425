/* shard_int.h: shard-internal declarations shared by the module's .c files
 * and its unit test; not part of the public shard.h API. */
#ifndef FSPS_SHARD_INT_H
#define FSPS_SHARD_INT_H

#include <stdint.h>

/* shard_philox4x32_10 computes the Philox4x32-10 block of Salmon et al.,
 * "Parallel Random Numbers: As Easy as 1, 2, 3" (SC11), bit-compatible with
 * Random123's philox4x32(ctr, key) at 10 rounds. Thread-safe. */
void shard_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2],
                         uint32_t out[4]);

#endif
