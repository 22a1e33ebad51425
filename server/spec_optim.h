/* spec_optim.h: a shard spec's optimizer as optim's configuration — the one
 * mapping of shard's optimizer and schedule enums onto optim's, shared by
 * the store and fsps-reslice. */
#ifndef FSPS_SERVER_SPEC_OPTIM_H
#define FSPS_SERVER_SPEC_OPTIM_H

#include <stddef.h>

#include "optim/optim.h"
#include "shard/shard.h"

/* server_spec_optim_config fills *c and *s from o, whose kind and schedule must
 * be in range (as shard_spec_validate leaves them). */
void server_spec_optim_config(const shard_optim_spec *o, optim_config *c,
                              optim_schedule *s);

/* server_spec_optim_state_per_elem returns the optimizer state floats the store
 * keeps per element for o (what checkpoint files hold after each layer's
 * parameters). */
size_t server_spec_optim_state_per_elem(const shard_optim_spec *o);

#endif
