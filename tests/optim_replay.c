/* optim_replay.c: runs optim/'s real kernels on data from stdin and writes
 * every step's parameters and state to stdout, so that tests/optim_torch.py
 * can hold them against torch.optim bit for bit.
 *
 * usage: optim_replay KIND N STEPS key=value...
 *        optim_replay --isa
 *   KIND   sgd, adam, adamw or adagrad
 *   keys   lr, momentum, dampening, nesterov, weight_decay, beta1, beta2,
 *          eps, lr_decay, initial_accumulator_value, maximize, grad_scale
 *          (doubles as strtod reads them; unnamed keys keep
 *          optim_config_defaults' values, grad_scale 1)
 * stdin:  N float32 initial parameters, then STEPS x N float32 gradients
 * stdout: for each step t = 1..STEPS, N float32 parameters followed by
 *         optim_state_per_elem x N float32 state (native byte order)
 * The kernels run on the instruction set optim chooses (FSPS_OPTIM_ISA caps
 * it); --isa prints that choice, what the CPU supports and the compiler
 * that built it (gcc or other), as
 *   isa=NAME supported=NAME,NAME... compiler=gcc
 * Exits 0, or 2 with a message on stderr for bad arguments or short input. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"

typedef struct {
  optim_config cfg;
  float grad_scale;
  size_t n;
  unsigned long steps;
} replay;

static int usage(const char *why) {
  fprintf(stderr,
          "optim_replay: %s\nusage: optim_replay KIND N STEPS "
          "key=value...\n       optim_replay --isa\n",
          why);
  return 2;
}

static int parse_kind(const char *s, optim_kind *kind) {
  static const char *const names[] = {"sgd", "adam", "adamw", "adagrad"};
  static const optim_kind kinds[] = {OPTIM_SGD, OPTIM_ADAM, OPTIM_ADAMW,
                                     OPTIM_ADAGRAD};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (strcmp(s, names[i]) == 0)
      return (*kind = kinds[i], 0);
  return -1;
}

/* Points at the double field of cfg named key, or returns NULL. */
static double *double_field(optim_config *c, const char *key) {
  struct {
    const char *key;
    double *field;
  } f[] = {{"lr", &c->lr},
           {"momentum", &c->momentum},
           {"dampening", &c->dampening},
           {"weight_decay", &c->weight_decay},
           {"beta1", &c->beta1},
           {"beta2", &c->beta2},
           {"eps", &c->eps},
           {"lr_decay", &c->lr_decay},
           {"initial_accumulator_value", &c->initial_accumulator_value}};
  for (size_t i = 0; i < sizeof f / sizeof *f; i++)
    if (strcmp(key, f[i].key) == 0)
      return f[i].field;
  return NULL;
}

/* Sets one key=value; returns 0, or -1 for an unknown key or bad number. */
static int set_param(replay *r, const char *arg) {
  char key[64];
  const char *eq = strchr(arg, '=');
  if (eq == NULL || (size_t)(eq - arg) >= sizeof key)
    return -1;
  memcpy(key, arg, (size_t)(eq - arg));
  key[eq - arg] = '\0';
  char *end;
  double v = strtod(eq + 1, &end);
  if (end == eq + 1 || *end != '\0')
    return -1;
  double *d = double_field(&r->cfg, key);
  if (d != NULL)
    *d = v;
  else if (strcmp(key, "nesterov") == 0)
    r->cfg.nesterov = v != 0.0;
  else if (strcmp(key, "maximize") == 0)
    r->cfg.maximize = v != 0.0;
  else if (strcmp(key, "grad_scale") == 0)
    r->grad_scale = (float)v;
  else
    return -1;
  return 0;
}

static int parse_args(int argc, char **argv, replay *r) {
  optim_kind kind;
  if (argc < 4 || parse_kind(argv[1], &kind) != 0)
    return -1;
  optim_config_defaults(kind, &r->cfg);
  r->grad_scale = 1.0f;
  r->n = strtoul(argv[2], NULL, 10);
  r->steps = strtoul(argv[3], NULL, 10);
  if (r->n == 0 || r->steps == 0)
    return -1;
  for (int i = 4; i < argc; i++)
    if (set_param(r, argv[i]) != 0)
      return -1;
  return 0;
}

static int read_floats(float *x, size_t n) {
  return fread(x, sizeof *x, n, stdin) == n ? 0 : -1;
}

/* Runs the steps; p, g and state hold n, n and 2n floats. */
static int run(const replay *r, float *p, float *g, float *state) {
  size_t k = optim_state_per_elem(&r->cfg);
  if (read_floats(p, r->n) != 0)
    return usage("short input: initial parameters");
  optim_state_init(&r->cfg, state, r->n);
  for (unsigned long t = 1; t <= r->steps; t++) {
    if (read_floats(g, r->n) != 0)
      return usage("short input: gradients");
    optim_step(&r->cfg, t, r->cfg.lr, r->grad_scale, p, g, state, r->n);
    if (fwrite(p, sizeof *p, r->n, stdout) != r->n ||
        fwrite(state, sizeof *state, k * r->n, stdout) != k * r->n)
      return usage("cannot write the results");
  }
  return fflush(stdout) == 0 ? 0 : usage("cannot write the results");
}

static int print_isa(void) {
  printf("isa=%s supported=", optim_isa_name(optim_isa_current()));
  const char *sep = "";
  for (int i = OPTIM_ISA_PORTABLE; i <= OPTIM_ISA_AVX512; i++) {
    if (optim_isa_supported((optim_isa)i)) {
      printf("%s%s", sep, optim_isa_name((optim_isa)i));
      sep = ",";
    }
  }
#if defined(__GNUC__) && !defined(__clang__)
  printf(" compiler=gcc\n");
#else
  printf(" compiler=other\n");
#endif
  return fflush(stdout) == 0 ? 0 : 2;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--isa") == 0)
    return print_isa();
  replay r;
  if (parse_args(argc, argv, &r) != 0)
    return usage("bad arguments");
  float *p = malloc(r.n * sizeof *p), *g = malloc(r.n * sizeof *g);
  float *state = malloc(2 * r.n * sizeof *state);
  int rc = p && g && state ? run(&r, p, g, state) : usage("out of memory");
  free(p);
  free(g);
  free(state);
  return rc;
}
