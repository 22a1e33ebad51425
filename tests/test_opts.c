/* test_opts.c: opts/'s table-driven flags: each type parsed, the variable
 * read first and the command line overriding it, values refused (out of
 * range, not a number, trailing garbage, too long) with messages naming the
 * flag, the value, the range and the variable, unknown flags, a flag of
 * another tool, --token refused, and --help listing one tool's flags. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fsps_opts.h"

enum { TOOL_A = 1, TOOL_B = 2 };

typedef struct {
  char name[8];
  uint32_t count;
  uint64_t big;
  int64_t ms;
  double ratio;
  bool on, check;
  char only_b[16];
  uint64_t ver;
  bool ver_given;
} cfg;

#define F(field) OPTS_FIELD(cfg, field)

static const opts_def defs[] = {
    {"name", "FSPS_T_NAME", "a short name", OPTS_STR, F(name), 0, 0, 0, 0},
    {"count", "FSPS_T_COUNT", "a count (3)", OPTS_U32, F(count), 1, 100, 0, 0},
    {"big", "FSPS_T_BIG", "a big one", OPTS_U64, F(big), 0, 1.8e19, 0, 0},
    {"ms", "FSPS_T_MS", "milliseconds", OPTS_I64, F(ms), 1, 1e9, 0, 0},
    {"ratio", "FSPS_T_RATIO", "a share", OPTS_DBL, F(ratio), 0, 1, 0, 0},
    {"on", "FSPS_T_ON", "switch it on", OPTS_FLAG, F(on), 0, 0, 0, 0},
    {"no-check", "FSPS_T_NO_CHECK", "skip the check", OPTS_FLAG_OFF, F(check),
     0, 0, 0, 0},
    {"only-b", "FSPS_T_ONLY_B", "tool B's own flag", OPTS_STR, F(only_b), 0, 0,
     TOOL_B, 0},
    {"ver", "FSPS_T_VER", "a version", OPTS_U64, F(ver), 0, 1e6,
     TOOL_A | TOOL_B, OPTS_GIVEN(cfg, ver_given)},
};

static const char *const envs[] = {
    "FSPS_T_NAME",     "FSPS_T_COUNT",  "FSPS_T_BIG",
    "FSPS_T_MS",       "FSPS_T_RATIO",  "FSPS_T_ON",
    "FSPS_T_NO_CHECK", "FSPS_T_ONLY_B", "FSPS_T_VER"};

static opts_spec spec_for(unsigned tool) {
  return (opts_spec){.defs = defs,
                     .ndefs = sizeof defs / sizeof defs[0],
                     .tool = tool,
                     .usage = "Usage: t [options]\n\n",
                     .footer = tool == TOOL_B ? "Exit status: 0.\n" : NULL,
                     .version = "t 1.2.3",
                     .refuse_token = true};
}

static void defaults(cfg *c) {
  memset(c, 0, sizeof *c);
  strcpy(c->name, "dflt");
  c->count = 3;
  c->check = true;
}

/* parse runs opts_parse for tool over the NULL-terminated flags. */
static int parse(unsigned tool, cfg *c, char *err, size_t errlen, ...) {
  char *argv[32] = {"t"};
  int argc = 1;
  va_list ap;
  va_start(ap, errlen);
  for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
    argv[argc++] = a;
  va_end(ap);
  defaults(c);
  err[0] = '\0';
  opts_spec s = spec_for(tool);
  return opts_parse(&s, argc, argv, c, err, errlen);
}

static int clear_env(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++)
    unsetenv(envs[i]);
  return 0;
}

static void parses_each_type(void **state) {
  (void)state;
  cfg c;
  char err[512];
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--name", "abc",
                         "--count", "100", "--big", "18000000000000000000",
                         "--ms=250", "--ratio", "0.25", "--on", "--no-check",
                         NULL),
                   0);
  assert_string_equal(err, "");
  assert_string_equal(c.name, "abc");
  assert_int_equal(c.count, 100);
  assert_true(c.big == 18000000000000000000ull);
  assert_int_equal(c.ms, 250);
  assert_true(c.ratio == 0.25);
  assert_true(c.on);
  assert_false(c.check);
  assert_false(c.ver_given);
  /* nothing given: the defaults stay */
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, NULL), 0);
  assert_string_equal(c.name, "dflt");
  assert_int_equal(c.count, 3);
  assert_true(c.check);
  assert_false(c.on);
  /* given marks the flag even at its default value */
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--ver", "0", NULL), 0);
  assert_true(c.ver_given);
  assert_int_equal(c.ver, 0);
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--count", "+7", NULL),
                   0);
  assert_int_equal(c.count, 7);
}

static void env_first_then_argv(void **state) {
  (void)state;
  cfg c;
  char err[512];
  setenv("FSPS_T_COUNT", "5", 1);
  setenv("FSPS_T_NAME", "", 1); /* empty: as if unset */
  setenv("FSPS_T_RATIO", "0.5", 1);
  setenv("FSPS_T_VER", "9", 1);
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, NULL), 0);
  assert_int_equal(c.count, 5);
  assert_string_equal(c.name, "dflt");
  assert_true(c.ratio == 0.5);
  assert_true(c.ver_given);
  assert_int_equal(c.ver, 9);
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--count", "9", NULL), 0);
  assert_int_equal(c.count, 9); /* the command line wins */
  assert_true(c.ratio == 0.5);  /* the rest still from the variables */
  /* flags from variables: yes/no words, and the inverted one */
  setenv("FSPS_T_ON", "yes", 1);
  setenv("FSPS_T_NO_CHECK", "true", 1);
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, NULL), 0);
  assert_true(c.on);
  assert_false(c.check);
  setenv("FSPS_T_ON", "0", 1);
  setenv("FSPS_T_NO_CHECK", "no", 1);
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, NULL), 0);
  assert_false(c.on);
  assert_true(c.check);
  /* the flag on the command line overrides its variable */
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--on", NULL), 0);
  assert_true(c.on);
  setenv("FSPS_T_ON", "maybe", 1);
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, NULL), -1);
  assert_string_equal(err, "bad value 'maybe' in FSPS_T_ON (--on): want 1, "
                           "true, yes, 0, false or no (see --help)");
}

static void refuses_out_of_range(void **state) {
  (void)state;
  cfg c;
  char err[512];
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--count", "0", NULL),
                   -1);
  assert_string_equal(err, "bad value '0' for --count: out of range; want a "
                           "whole number from 1 to 100 (see --help)");
  assert_int_equal(c.count, 3); /* unchanged */
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--count", "101", NULL),
                   -1);
  assert_non_null(strstr(err, "'101' for --count: out of range"));
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--count",
                         "99999999999999999999999", NULL),
                   -1);
  assert_non_null(strstr(err, "out of range"));
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--ms", "0", NULL), -1);
  assert_non_null(strstr(err, "from 1 to 1000000000"));
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--ratio", "1.5", NULL),
                   -1);
  assert_string_equal(err, "bad value '1.5' for --ratio: out of range; want "
                           "a number from 0 to 1 (see --help)");
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--ratio", "inf", NULL),
                   -1);
  /* from the variable: the message names it and its flag */
  setenv("FSPS_T_COUNT", "500", 1);
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, NULL), -1);
  assert_string_equal(err, "bad value '500' in FSPS_T_COUNT (--count): out of "
                           "range; want a whole number from 1 to 100 (see "
                           "--help)");
}

static void refuses_what_is_not_a_number(void **state) {
  (void)state;
  static const char *const bad_whole[] = {"abc", "",    "1.5",  "-1", "-0",
                                          "1e3", "1E3", "0x10", "nan"};
  cfg c;
  char err[512];
  for (size_t i = 0; i < sizeof bad_whole / sizeof bad_whole[0]; i++) {
    assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--count",
                           (char *)bad_whole[i], NULL),
                     -1);
    assert_non_null(strstr(err, "not a whole number; want a whole number "
                                "from 1 to 100"));
    assert_int_equal(c.count, 3);
  }
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--ratio", "half", NULL),
                   -1);
  assert_string_equal(err, "bad value 'half' for --ratio: not a number; want "
                           "a number from 0 to 1 (see --help)");
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--ratio", "nan", NULL),
                   -1);
  assert_non_null(strstr(err, "not a number"));
}

static void refuses_trailing_garbage(void **state) {
  (void)state;
  cfg c;
  char err[512];
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--count", "12abc", NULL),
                   -1);
  assert_non_null(strstr(err, "bad value '12abc' for --count"));
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--count", "5 ", NULL),
                   -1);
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--ratio", "0.5x", NULL),
                   -1);
  assert_non_null(strstr(err, "bad value '0.5x' for --ratio: not a number"));
  setenv("FSPS_T_BIG", "7 apples", 1);
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, NULL), -1);
  assert_non_null(strstr(err, "bad value '7 apples' in FSPS_T_BIG (--big)"));
}

static void refuses_long_strings_quoting_a_cut(void **state) {
  (void)state;
  cfg c;
  char err[512];
  assert_int_equal(
      parse(TOOL_A, &c, err, sizeof err, "--name", "1234567", NULL), 0);
  assert_string_equal(c.name, "1234567");
  assert_int_equal(
      parse(TOOL_A, &c, err, sizeof err, "--name", "12345678", NULL), -1);
  assert_string_equal(err, "bad value '12345678' for --name: longer than 7 "
                           "bytes (see --help)");
  assert_string_equal(c.name, "dflt");
  char big[1000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--name", big, NULL), -1);
  /* a long value is quoted cut, so that the reason still shows */
  assert_non_null(strstr(err, "xxx...' for --name: longer than 7 bytes"));
  assert_true(strlen(err) < 300);
}

static void refuses_unknown_flags_and_arguments(void **state) {
  (void)state;
  cfg c;
  char err[512];
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--nope", NULL), -1);
  assert_string_equal(err, "unknown or incomplete option '--nope' (see "
                           "--help)");
  /* a value given with '=' may be a secret: never shown */
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--nope=s3cret", NULL),
                   -1);
  assert_null(strstr(err, "s3cret"));
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--count", NULL), -1);
  assert_string_equal(err, "unknown or incomplete option '--count' (see "
                           "--help)");
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "extra", NULL), -1);
  assert_string_equal(err, "unexpected argument 'extra' (see --help)");
  /* tokens are never flags: refused, the value never shown */
  assert_int_equal(
      parse(TOOL_A, &c, err, sizeof err, "--token", "s3cret", NULL), -1);
  assert_non_null(strstr(err, "no --token flag"));
  assert_null(strstr(err, "s3cret"));
}

static void keeps_each_tool_to_its_flags(void **state) {
  (void)state;
  cfg c;
  char err[512];
  assert_int_equal(parse(TOOL_B, &c, err, sizeof err, "--only-b", "yes", NULL),
                   0);
  assert_string_equal(c.only_b, "yes");
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--only-b", "yes", NULL),
                   -1);
  assert_string_equal(err, "unknown or incomplete option '--only-b' (see "
                           "--help)");
  /* another tool's variable is not read, even when bad */
  setenv("FSPS_T_ONLY_B", "much too long for it", 1);
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, NULL), 0);
  assert_string_equal(c.only_b, "");
  assert_int_equal(parse(TOOL_B, &c, err, sizeof err, NULL), -1);
  assert_non_null(strstr(err, "in FSPS_T_ONLY_B (--only-b): longer than 15"));
}

/* help_of returns tool's --help text (free it). */
static char *help_of(unsigned tool) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  assert_non_null(f);
  opts_spec s = spec_for(tool);
  opts_help(&s, f);
  fclose(f);
  return text;
}

static void help_lists_the_tools_flags_only(void **state) {
  (void)state;
  char *a = help_of(TOOL_A), *b = help_of(TOOL_B);
  assert_non_null(strstr(a, "Usage: t [options]\n\nOptions (each also read "
                            "from the environment variable shown):\n"));
  assert_non_null(strstr(a, "  --count                  a count (3) "
                            "[FSPS_T_COUNT]\n"));
  assert_non_null(strstr(a, "--no-check"));
  assert_null(strstr(a, "only-b"));
  assert_null(strstr(a, "Exit status"));
  assert_non_null(strstr(b, "  --only-b                 tool B's own flag "
                            "[FSPS_T_ONLY_B]\n"));
  const char *tail = "  --help                   print this help and exit\n"
                     "  --version                print the version and exit\n";
  size_t n = strlen(tail);
  assert_true(strlen(a) > n);
  assert_string_equal(a + strlen(a) - n, tail); /* no footer: ends here */
  assert_non_null(strstr(b, "print the version and exit\n\nExit status: 0.\n"));
  free(a);
  free(b);
  cfg c;
  char err[512];
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--version", NULL), 1);
  assert_int_equal(parse(TOOL_A, &c, err, sizeof err, "--help", NULL), 1);
  assert_string_equal(err, "");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(parses_each_type, clear_env),
      cmocka_unit_test_setup(env_first_then_argv, clear_env),
      cmocka_unit_test_setup(refuses_out_of_range, clear_env),
      cmocka_unit_test_setup(refuses_what_is_not_a_number, clear_env),
      cmocka_unit_test_setup(refuses_trailing_garbage, clear_env),
      cmocka_unit_test_setup(refuses_long_strings_quoting_a_cut, clear_env),
      cmocka_unit_test_setup(refuses_unknown_flags_and_arguments, clear_env),
      cmocka_unit_test_setup(keeps_each_tool_to_its_flags, clear_env),
      cmocka_unit_test_setup(help_lists_the_tools_flags_only, clear_env),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
