/* fsps_opts.h: table-driven command-line flags shared by fsps's binaries:
 * each flag names a field of the caller's struct, its type and range, its
 * FSPS_* variable (read first; the command line overrides it) and the tools
 * that take it. libc only; it prints nothing but --help and --version. */
#ifndef FSPS_OPTS_H
#define FSPS_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
  OPTS_STR,      /* char[size], NUL-terminated; longer values are refused */
  OPTS_U32,      /* uint32_t, a whole decimal number in [lo, hi] */
  OPTS_U64,      /* uint64_t, likewise */
  OPTS_I64,      /* int64_t, likewise (lo >= 0) */
  OPTS_DBL,      /* double, a finite number in [lo, hi] */
  OPTS_FLAG,     /* bool: the flag alone sets it; the variable takes
                    1/true/yes or 0/false/no */
  OPTS_FLAG_OFF, /* bool, stored inverted: --no-eval clears `eval` */
} opts_type;

typedef struct {
  const char *name; /* the long flag, without "--" */
  const char *env;  /* its environment variable */
  const char *help; /* its line in --help */
  opts_type type;
  size_t off, size; /* the field in the caller's struct: OPTS_FIELD */
  double lo, hi;    /* numbers: the range accepted, both ends included */
  unsigned tools;   /* the tools that take it (opts_spec.tool bits); 0: all */
  size_t given;     /* OPTS_GIVEN: a bool set when the flag is given (by the
                       variable or the command line); 0: none */
} opts_def;

/* OPTS_FIELD(type, field) is a def's off and size; OPTS_GIVEN(type, field)
 * its given. */
#define OPTS_FIELD(type, field)                                                \
  offsetof(type, field), sizeof(((type *)0)->field)
#define OPTS_GIVEN(type, field) (offsetof(type, field) + 1)

typedef struct {
  const opts_def *defs;
  size_t ndefs;
  unsigned tool;       /* this tool's bit: only defs that take it apply */
  const char *usage;   /* --help's text before the list of options */
  const char *footer;  /* after the list and a blank line; NULL: none */
  const char *version; /* --version's line, without its newline */
  /* Name --token only to refuse it (a command line shows in ps) rather
   * than let getopt take it for an abbreviation of --token-file. */
  bool refuse_token;
} opts_spec;

/* opts_parse sets the fields of dst (the struct the defs' offsets point
 * into, already holding the defaults) from each applying def's environment
 * variable when it is set and not empty, then from argv. Returns 0 to go
 * on; 1 when --help or --version was printed on stdout (exit 0); -1 with
 * err filled on a bad flag or value (exit 2): the message names the flag
 * (and the variable when the value came from there), the value and what
 * would be accepted. Uses getopt_long: not thread-safe. */
int opts_parse(const opts_spec *s, int argc, char **argv, void *dst, char *err,
               size_t errlen);

/* opts_help writes s's --help text to out: usage, one line per applying
 * def with its variable, --help, --version, then the footer. */
void opts_help(const opts_spec *s, FILE *out);

/* opts_fail formats a message into err (truncated to errlen) and returns
 * -1, for the callers' own checks across flags. */
int opts_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
