/* schedule.c: learning-rate schedules in closed form (constant, step,
 * cosine annealing) with an optional linear warm-up, matching PyTorch's. */

#include "optim.h"

#include <math.h>

static const double PI = 3.14159265358979323846;

/* StepLR: base * gamma^floor(step / step_size). */
static double step_lr(const optim_schedule *s, double base, uint64_t step) {
  if (s->step_size == 0)
    return base;
  return base * pow(s->gamma, (double)(step / s->step_size));
}

/* CosineAnnealingLR's closed form, held at eta_min once step >= t_max. */
static double cosine_lr(const optim_schedule *s, double base, uint64_t step) {
  double eta_min = s->eta_min;
  if (step >= s->t_max)
    return eta_min;
  double x = (double)step / (double)s->t_max;
  return eta_min + (base - eta_min) * (1.0 + cos(PI * x)) / 2.0;
}

/* LinearLR from warmup_start_factor to 1 over warmup_steps steps. */
static double warmup_factor(const optim_schedule *s, uint64_t step) {
  if (s->warmup_steps == 0 || step >= s->warmup_steps)
    return 1.0;
  double start = s->warmup_start_factor;
  return start + (1.0 - start) * (double)step / (double)s->warmup_steps;
}

double optim_schedule_lr(const optim_schedule *s, double base_lr,
                         uint64_t step) {
  double base = base_lr, lr = base;
  switch (s->kind) {
  case OPTIM_SCHED_CONSTANT:
    break;
  case OPTIM_SCHED_STEP:
    lr = step_lr(s, base, step);
    break;
  case OPTIM_SCHED_COSINE:
    lr = cosine_lr(s, base, step);
    break;
  }
  return lr * warmup_factor(s, step);
}
