/* spec_optim.c: shard's optimizer spec mapped onto optim's configuration,
 * one table per enum, checked to cover every value at compile time. */
#include "spec_optim.h"

/* Indexed by shard's values, so a reordered enum still maps by name. */
static const optim_kind kinds[] = {
    [SHARD_OPT_SGD] = OPTIM_SGD,
    [SHARD_OPT_ADAM] = OPTIM_ADAM,
    [SHARD_OPT_ADAMW] = OPTIM_ADAMW,
    [SHARD_OPT_ADAGRAD] = OPTIM_ADAGRAD,
};
static const optim_sched_kind scheds[] = {
    [SHARD_SCHED_CONSTANT] = OPTIM_SCHED_CONSTANT,
    [SHARD_SCHED_STEP] = OPTIM_SCHED_STEP,
    [SHARD_SCHED_COSINE] = OPTIM_SCHED_COSINE,
};
/* A value added at the end of a shard enum without its entry here fails
 * the build instead of reading past the table. */
_Static_assert(sizeof kinds / sizeof *kinds == SHARD_OPT_ADAGRAD + 1,
               "every shard optimizer maps onto one of optim's");
_Static_assert(sizeof scheds / sizeof *scheds == SHARD_SCHED_COSINE + 1,
               "every shard schedule maps onto one of optim's");

void server_spec_optim_config(const shard_optim_spec *o, optim_config *c,
                              optim_schedule *s) {
  optim_config_defaults(kinds[o->kind], c);
  /* Doubles both sides: optim rounds what it derives from them once, as
   * PyTorch does with its Python floats. */
  c->lr = o->lr;
  c->momentum = o->momentum;
  c->dampening = o->dampening;
  c->nesterov = o->nesterov;
  c->weight_decay = o->weight_decay;
  c->beta1 = o->beta1;
  c->beta2 = o->beta2;
  c->eps = o->eps;
  c->lr_decay = o->lr_decay;
  c->initial_accumulator_value = o->initial_accumulator_value;
  *s = (optim_schedule){scheds[o->schedule],
                        o->step_size,
                        o->gamma,
                        o->t_max,
                        o->eta_min,
                        o->warmup_steps,
                        o->warmup_start_factor};
}

size_t server_spec_optim_state_per_elem(const shard_optim_spec *o) {
  optim_config c;
  optim_schedule s;
  server_spec_optim_config(o, &c, &s);
  return optim_state_per_elem(&c);
}
