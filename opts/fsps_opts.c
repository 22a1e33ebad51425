/* fsps_opts.c: parses a table of flags from FSPS_* variables then argv,
 * with errors that say what would be accepted, and renders --help. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fsps_opts.h"

/* getopt_long's values: defs from DEF_BASE on, above every character. */
enum { OPT_HELP = 1000, OPT_VERSION, OPT_TOKEN, DEF_BASE = 2000 };

/* Why a value was refused. */
typedef enum {
  OK,
  NOT_NUMBER,
  NOT_WHOLE,
  OUT_OF_RANGE,
  TOO_LONG,
  NOT_BOOL
} why;

/* A bad value is quoted up to SHOWN bytes, so that a long path still
 * leaves room for the flag's name and the reason. */
#define SHOWN 200

int opts_fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

static bool applies(const opts_def *d, unsigned tool) {
  return d->tools == 0 || (d->tools & tool) != 0;
}

static bool whole(opts_type t) {
  return t == OPTS_U32 || t == OPTS_U64 || t == OPTS_I64;
}

/* set_whole reads a whole decimal number (no sign but '+', no point, no
 * exponent, nothing after it) in the def's range. */
static why set_whole(const opts_def *d, const char *v, char *p) {
  char *end;
  errno = 0;
  if (strchr(v, '-')) /* strtoull would take -1 for its complement */
    return NOT_WHOLE;
  unsigned long long u = strtoull(v, &end, 10);
  if (end == v || *end)
    return NOT_WHOLE;
  if (errno == ERANGE || (double)u < d->lo || (double)u > d->hi)
    return OUT_OF_RANGE;
  if (d->type == OPTS_U32)
    *(uint32_t *)p = (uint32_t)u;
  else if (d->type == OPTS_I64)
    *(int64_t *)p = (int64_t)u;
  else
    *(uint64_t *)p = (uint64_t)u;
  return OK;
}

static why set_double(const opts_def *d, const char *v, char *p) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (end == v || *end || isnan(x))
    return NOT_NUMBER;
  if (errno || isinf(x) || x < d->lo || x > d->hi)
    return OUT_OF_RANGE;
  *(double *)p = x;
  return OK;
}

static why set_flag(const opts_def *d, const char *v, char *p) {
  bool on = !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes");
  if (!on && strcmp(v, "0") && strcmp(v, "false") && strcmp(v, "no"))
    return NOT_BOOL;
  *(bool *)p = d->type == OPTS_FLAG_OFF ? !on : on;
  return OK;
}

/* set stores v into d's field of dst, and marks it given. */
static why set(const opts_def *d, const char *v, char *dst) {
  char *p = dst + d->off;
  why w;
  if (d->type == OPTS_STR) {
    w = strlen(v) >= d->size ? TOO_LONG : OK;
    if (w == OK)
      memcpy(p, v, strlen(v) + 1);
  } else if (d->type == OPTS_FLAG || d->type == OPTS_FLAG_OFF) {
    w = set_flag(d, v, p);
  } else if (whole(d->type)) {
    w = set_whole(d, v, p);
  } else {
    w = set_double(d, v, p);
  }
  if (w == OK && d->given)
    *(bool *)(dst + d->given - 1) = true;
  return w;
}

/* reason describes what d accepts, after why a value was refused. */
static void reason(const opts_def *d, why w, char *buf, size_t len) {
  const char *kind = whole(d->type) ? "a whole number" : "a number";
  const char *fmt =
      whole(d->type) ? "%s%s from %.0f to %.0f" : "%s%s from %.15g to %.15g";
  const char *lead = w == NOT_NUMBER     ? "not a number; want "
                     : w == NOT_WHOLE    ? "not a whole number; want "
                     : w == OUT_OF_RANGE ? "out of range; want "
                                         : "";
  if (w == TOO_LONG)
    snprintf(buf, len, "longer than %zu bytes", d->size - 1);
  else if (w == NOT_BOOL)
    snprintf(buf, len, "want 1, true, yes, 0, false or no");
  else
    snprintf(buf, len, fmt, lead, kind, d->lo, d->hi);
}

/* refuse fills err for d's value v, refused for w; env when it came from
 * d's variable. */
static int refuse(const opts_def *d, const char *v, why w, bool env, char *err,
                  size_t errlen) {
  char r[128];
  reason(d, w, r, sizeof r);
  const char *cut = strlen(v) > SHOWN ? "..." : "";
  if (env)
    return opts_fail(err, errlen,
                     "bad value '%.*s%s' in %s (--%s): %s (see --help)", SHOWN,
                     v, cut, d->env, d->name, r);
  return opts_fail(err, errlen, "bad value '%.*s%s' for --%s: %s (see --help)",
                   SHOWN, v, cut, d->name, r);
}

static int from_env(const opts_spec *s, char *dst, char *err, size_t errlen) {
  for (size_t i = 0; i < s->ndefs; i++) {
    const opts_def *d = &s->defs[i];
    const char *v = applies(d, s->tool) ? getenv(d->env) : NULL;
    why w = v != NULL && *v ? set(d, v, dst) : OK;
    if (w != OK)
      return refuse(d, v, w, true, err, errlen);
  }
  return 0;
}

void opts_help(const opts_spec *s, FILE *out) {
  fputs(s->usage, out);
  fputs("Options (each also read from the environment variable shown):\n", out);
  for (size_t i = 0; i < s->ndefs; i++)
    if (applies(&s->defs[i], s->tool))
      fprintf(out, "  --%-22s %s [%s]\n", s->defs[i].name, s->defs[i].help,
              s->defs[i].env);
  fprintf(out, "  --%-22s %s\n  --%-22s %s\n", "help",
          "print this help and exit", "version", "print the version and exit");
  if (s->footer != NULL)
    fprintf(out, "\n%s", s->footer);
}

/* long_options fills lo (s->ndefs + 4 entries) with the applying defs,
 * --help, --version and the refused --token. */
static void long_options(const opts_spec *s, struct option *lo) {
  size_t n = 0;
  for (size_t i = 0; i < s->ndefs; i++) {
    const opts_def *d = &s->defs[i];
    bool flag = d->type == OPTS_FLAG || d->type == OPTS_FLAG_OFF;
    if (applies(d, s->tool))
      lo[n++] = (struct option){d->name, flag ? no_argument : required_argument,
                                NULL, DEF_BASE + (int)i};
  }
  lo[n++] = (struct option){"help", no_argument, NULL, OPT_HELP};
  lo[n++] = (struct option){"version", no_argument, NULL, OPT_VERSION};
  if (s->refuse_token)
    lo[n++] = (struct option){"token", required_argument, NULL, OPT_TOKEN};
  lo[n] = (struct option){NULL, 0, NULL, 0};
}

/* one_option acts on getopt_long's answer c; -1 on a bad one, 1 when
 * --help or --version was printed, else 0. */
static int one_option(const opts_spec *s, int c, char **argv, char *dst,
                      char *err, size_t errlen) {
  if (c == OPT_HELP || c == OPT_VERSION) {
    if (c == OPT_HELP)
      opts_help(s, stdout);
    else
      printf("%s\n", s->version);
    return 1;
  }
  if (c == OPT_TOKEN) /* its value is never shown */
    return opts_fail(err, errlen,
                     "no --token flag: a command line shows in ps; give "
                     "--token-file FILE, FSPS_TOKEN_FILE or FSPS_TOKEN");
  if (c < DEF_BASE) /* not a value given with '=': it may be a secret */
    return opts_fail(err, errlen,
                     "unknown or incomplete option '%.*s' (see --help)",
                     (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
  const opts_def *d = &s->defs[c - DEF_BASE];
  bool flag = d->type == OPTS_FLAG || d->type == OPTS_FLAG_OFF;
  const char *v = flag ? "1" : optarg;
  why w = set(d, v, dst);
  return w == OK ? 0 : refuse(d, v, w, false, err, errlen);
}

static int from_argv(const opts_spec *s, int argc, char **argv, char *dst,
                     char *err, size_t errlen) {
  struct option *lo = calloc(s->ndefs + 4, sizeof *lo);
  if (lo == NULL)
    return opts_fail(err, errlen, "out of memory parsing the flags");
  long_options(s, lo);
  int c, rc = 0;
  optind = 1;
  opterr = 0;
  while (rc == 0 && (c = getopt_long(argc, argv, "", lo, NULL)) != -1)
    rc = one_option(s, c, argv, dst, err, errlen);
  free(lo);
  if (rc == 0 && optind < argc)
    rc = opts_fail(err, errlen, "unexpected argument '%s' (see --help)",
                   argv[optind]);
  return rc;
}

int opts_parse(const opts_spec *s, int argc, char **argv, void *dst, char *err,
               size_t errlen) {
  int rc = from_env(s, dst, err, errlen);
  return rc == 0 ? from_argv(s, argc, argv, dst, err, errlen) : rc;
}
