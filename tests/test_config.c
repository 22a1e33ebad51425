/* test_config.c: unit tests of server/config.h — fsps-server's defaults,
 * every flag and its FSPS_* variable, and the refusal of bad values with a
 * message naming them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc_fail.h"
#include "config.h"
#include "log.h"

static const char *env_names[] = {
    "FSPS_LISTEN",
    "FSPS_INDEX",
    "FSPS_NUM_SERVERS",
    "FSPS_WORKERS",
    "FSPS_THREADS",
    "FSPS_MODE",
    "FSPS_STALENESS",
    "FSPS_DETERMINISTIC",
    "FSPS_NAN_POLICY",
    "FSPS_GRACE_MS",
    "FSPS_PORT_FILE",
    "FSPS_LOG_LEVEL",
    "FSPS_CHECKPOINT_DIR",
    "FSPS_CHECKPOINT_EVERY",
    "FSPS_KEEP",
    "FSPS_WORKER_TIMEOUT",
    "FSPS_ON_WORKER_TIMEOUT",
    "FSPS_INJECT_REPLY_DROPS",
};

/* The TLS and health-port options' variables. */
static const char *tls_env_names[] = {
    "FSPS_TLS_CERT",      "FSPS_TLS_KEY",          "FSPS_TLS_CLIENT_CA",
    "FSPS_HEALTH_LISTEN", "FSPS_HEALTH_PORT_FILE",
};

/* clean_env unsets every FSPS_* variable the parser reads, so the tests
 * see only what they set. */
static int clean_env(void **unused) {
  (void)unused;
  for (size_t i = 0; i < sizeof env_names / sizeof *env_names; i++)
    unsetenv(env_names[i]);
  for (size_t i = 0; i < sizeof tls_env_names / sizeof *tls_env_names; i++)
    unsetenv(tls_env_names[i]);
  return 0;
}

static char err[512];

/* parse runs server_config_parse on "fsps-server" followed by the NULL-ended
 * arguments. */
static int parse(server_config *c, ...) {
  char *argv[64] = {"fsps-server"};
  int argc = 1;
  va_list ap;
  va_start(ap, c);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
    argv[argc++] = (char *)a;
  va_end(ap);
  err[0] = '\0';
  return server_config_parse(argc, argv, c, err, sizeof err);
}

/* refused checks that the arguments are refused with a message holding
 * want. */
#define refused(want, ...)                                                     \
  do {                                                                         \
    server_config c_;                                                          \
    assert_int_equal(parse(&c_, __VA_ARGS__, NULL), -1);                       \
    if (strstr(err, want) == NULL)                                             \
      fail_msg("message '%s' lacks '%s'", err, want);                          \
  } while (0)

static void test_defaults(void **unused) {
  (void)unused;
  server_config c;
  assert_int_equal(parse(&c, NULL), 0);
  assert_string_equal(c.listen, "0.0.0.0:7070");
  assert_int_equal(c.index, 0);
  assert_int_equal(c.num_servers, 1);
  assert_int_equal(c.workers, 1);
  assert_int_equal(c.threads, 2);
  assert_int_equal(c.mode, MODE_BSP);
  assert_int_equal(c.staleness, 0);
  assert_false(c.deterministic);
  assert_false(c.nan_skip);
  assert_int_equal(c.log_level, LOG_INFO);
  assert_int_equal(c.grace_ms, 5000);
  assert_string_equal(c.port_file, "");
  assert_string_equal(c.checkpoint_dir, "");
  assert_int_equal(c.checkpoint_every, 0);
  assert_int_equal(c.keep, 3);
  assert_int_equal(c.worker_timeout_s, 0);
  assert_false(c.timeout_proceed);
  assert_true(c.reply_drops == 0.0);
  assert_string_equal(server_config_mode_name(MODE_BSP), "bsp");
  assert_string_equal(server_config_mode_name(MODE_SSP), "ssp");
  assert_string_equal(server_config_mode_name(MODE_ASP), "asp");
}

/* check_all checks the values the every-flag tests set. */
static void check_all(const server_config *c) {
  assert_string_equal(c->listen, "127.0.0.1:9000");
  assert_int_equal(c->index, 2);
  assert_int_equal(c->num_servers, 3);
  assert_int_equal(c->workers, 8);
  assert_int_equal(c->threads, 4);
  assert_int_equal(c->mode, MODE_SSP);
  assert_int_equal(c->staleness, 2);
  assert_true(c->deterministic);
  assert_true(c->nan_skip);
  assert_int_equal(c->grace_ms, 250);
  assert_string_equal(c->port_file, "/tmp/port");
  assert_int_equal(c->log_level, LOG_DEBUG);
  assert_string_equal(c->checkpoint_dir, "/tmp/ck");
  assert_int_equal(c->checkpoint_every, 10);
  assert_int_equal(c->keep, 5);
  assert_int_equal(c->worker_timeout_s, 30);
  assert_true(c->timeout_proceed);
  assert_true(c->reply_drops == 0.25);
}

static void test_every_flag(void **unused) {
  (void)unused;
  server_config c;
  assert_int_equal(
      parse(&c, "--listen", "127.0.0.1:9000", "--index", "2", "--num-servers",
            "3", "--workers", "8", "--threads", "4", "--mode", "ssp",
            "--staleness", "2", "--deterministic", "--nan-policy", "skip",
            "--grace-ms", "250", "--port-file", "/tmp/port", "--log-level",
            "debug", "--checkpoint-dir", "/tmp/ck", "--checkpoint-every", "10",
            "--keep", "5", "--worker-timeout", "30", "--on-worker-timeout",
            "proceed", "--inject-reply-drops", "0.25", NULL),
      0);
  check_all(&c);
  /* --flag=value is the same. */
  assert_int_equal(parse(&c, "--mode=asp", "--workers=65536", NULL), 0);
  assert_int_equal(c.mode, MODE_ASP);
  assert_int_equal(c.workers, 65536);
}

static void test_env(void **unused) {
  (void)unused;
  static const char *values[] = {"127.0.0.1:9000",
                                 "2",
                                 "3",
                                 "8",
                                 "4",
                                 "ssp",
                                 "2",
                                 "yes",
                                 "skip",
                                 "250",
                                 "/tmp/port",
                                 "debug",
                                 "/tmp/ck",
                                 "10",
                                 "5",
                                 "30",
                                 "proceed",
                                 "0.25"};
  for (size_t i = 0; i < sizeof env_names / sizeof *env_names; i++)
    setenv(env_names[i], values[i], 1);
  server_config c;
  assert_int_equal(parse(&c, NULL), 0);
  check_all(&c);
  /* A flag wins over its variable. */
  assert_int_equal(
      parse(&c, "--workers", "2", "--mode", "bsp", "--staleness", "0", NULL),
      0);
  assert_int_equal(c.workers, 2);
  assert_int_equal(c.mode, MODE_BSP);
  assert_int_equal(c.index, 2);
  clean_env(NULL);
}

static void test_bools(void **unused) {
  (void)unused;
  static const struct {
    const char *v;
    bool want;
  } cases[] = {{"1", true},      {"true", true}, {"yes", true}, {"0", false},
               {"false", false}, {"no", false},  {"", false}};
  server_config c;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    setenv("FSPS_DETERMINISTIC", cases[i].v, 1);
    assert_int_equal(parse(&c, NULL), 0);
    assert_int_equal(c.deterministic, cases[i].want);
  }
  setenv("FSPS_DETERMINISTIC", "maybe", 1);
  assert_int_equal(parse(&c, NULL), -1);
  assert_string_equal(err,
                      "bad value 'maybe' in FSPS_DETERMINISTIC (see --help)");
  clean_env(NULL);
}

/* Bounds: the limits themselves pass, one past them is refused. */
static void test_bounds(void **unused) {
  (void)unused;
  server_config c;
  assert_int_equal(parse(&c, "--index", "65535", "--num-servers", "65536",
                         "--threads", "256", "--grace-ms", "3600000", "--keep",
                         "1000", "--worker-timeout", "604800", NULL),
                   0);
  assert_int_equal(c.index, 65535);
  assert_int_equal(c.grace_ms, 3600000);
  assert_int_equal(c.worker_timeout_s, 604800);
  assert_int_equal(parse(&c, "--mode", "ssp", "--staleness", "1000",
                         "--inject-reply-drops", "1", NULL),
                   0);
  assert_int_equal(c.staleness, 1000);
  assert_true(c.reply_drops == 1.0);
  char listen[256];
  memset(listen, 'a', 255);
  listen[255] = '\0';
  assert_int_equal(parse(&c, "--listen", listen, NULL), 0);
  assert_string_equal(c.listen, listen);
}

static void test_bad_values(void **unused) {
  (void)unused;
  refused("bad value '65536' for --index (see --help)", "--index", "65536");
  refused("bad value '0' for --num-servers", "--num-servers", "0");
  refused("bad value '65537' for --workers", "--workers", "65537");
  refused("bad value '0' for --workers", "--workers", "0");
  refused("bad value '257' for --threads", "--threads", "257");
  refused("bad value 'bsp2' for --mode", "--mode", "bsp2");
  refused("bad value '1001' for --staleness", "--staleness", "1001");
  refused("bad value 'drop' for --nan-policy", "--nan-policy", "drop");
  refused("bad value '-1' for --grace-ms", "--grace-ms", "-1");
  refused("bad value 'loud' for --log-level", "--log-level", "loud");
  refused("bad value '1x' for --checkpoint-every", "--checkpoint-every", "1x");
  refused("bad value '0' for --keep", "--keep", "0");
  refused("bad value '604801' for --worker-timeout", "--worker-timeout",
          "604801");
  refused("bad value 'wait' for --on-worker-timeout", "--on-worker-timeout",
          "wait");
  refused("bad value '1.5' for --inject-reply-drops", "--inject-reply-drops",
          "1.5");
  refused("bad value 'nan' for --inject-reply-drops", "--inject-reply-drops",
          "nan");
  refused("bad value '' for --listen", "--listen", "");
  refused("bad value '' for --workers", "--workers", "");
  refused("bad value '99999999999999999999' for --index", "--index",
          "99999999999999999999");
  static char longpath[1100];
  memset(longpath, 'p', sizeof longpath - 1);
  refused("ppp...' for --port-file (see --help)", "--port-file", longpath);
  refused("ppp...' for --checkpoint-dir", "--checkpoint-dir", longpath);
  setenv("FSPS_WORKERS", "many", 1);
  refused("bad value 'many' in FSPS_WORKERS (see --help)", "--workers", "2");
  clean_env(NULL);
}

static void test_bad_usage(void **unused) {
  (void)unused;
  refused("unknown or incomplete option '--nope'", "--nope");
  refused("unknown or incomplete option '--index'", "--index");
  refused("unexpected argument 'extra'", "--workers", "2", "extra");
  refused("--index 3 is out of range: with --num-servers 3 it must be 0..2",
          "--index", "3", "--num-servers", "3");
  refused("--checkpoint-every needs --checkpoint-dir", "--checkpoint-every",
          "5");
  refused("--staleness needs --mode ssp", "--staleness", "1");
  refused("--worker-timeout needs --mode bsp or ssp", "--mode", "asp",
          "--worker-timeout", "5");
  refused("--deterministic cannot apply to --mode asp", "--mode", "asp",
          "--deterministic");
}

/* TLS: off by default; the files and the health port from flags or
 * variables; options that only go together refused alone. */
static void test_tls(void **unused) {
  (void)unused;
  server_config c;
  assert_int_equal(parse(&c, NULL), 0);
  assert_string_equal(c.tls_cert, "");
  assert_string_equal(c.health_listen, "");
  assert_int_equal(parse(&c, "--tls-cert", "/s.crt", "--tls-key", "/s.key",
                         "--tls-client-ca", "/ca.crt", "--health-listen",
                         "0.0.0.0:7071", "--health-port-file", "/hp", NULL),
                   0);
  assert_string_equal(c.tls_cert, "/s.crt");
  assert_string_equal(c.tls_key, "/s.key");
  assert_string_equal(c.tls_client_ca, "/ca.crt");
  assert_string_equal(c.health_listen, "0.0.0.0:7071");
  assert_string_equal(c.health_port_file, "/hp");
  static const char *values[] = {"/e.crt", "/e.key", "/eca.crt", "h:1", "/ehp"};
  for (size_t i = 0; i < sizeof tls_env_names / sizeof *tls_env_names; i++)
    setenv(tls_env_names[i], values[i], 1);
  assert_int_equal(parse(&c, "--tls-key", "/flag.key", NULL), 0);
  assert_string_equal(c.tls_cert, "/e.crt");
  assert_string_equal(c.tls_key, "/flag.key"); /* the flag wins */
  assert_string_equal(c.tls_client_ca, "/eca.crt");
  assert_string_equal(c.health_listen, "h:1");
  assert_string_equal(c.health_port_file, "/ehp");
  clean_env(NULL);
  refused("--tls-cert and --tls-key go together", "--tls-cert", "/s.crt");
  refused("--tls-cert and --tls-key go together", "--tls-key", "/s.key");
  refused("--tls-client-ca (mutual TLS) needs --tls-cert", "--tls-client-ca",
          "/ca.crt");
  refused("--health-port-file needs --health-listen", "--health-port-file",
          "/hp");
  char longer[1100];
  memset(longer, 'a', sizeof longer - 1);
  longer[sizeof longer - 1] = '\0';
  refused("bad value", "--tls-cert", longer, "--tls-key", "/k");
}

/* --help and --version print and ask the caller to exit 0. */
static void test_help_version(void **unused) {
  (void)unused;
  server_config c;
  fflush(stdout);
  FILE *saved = stdout;
  stdout = fopen("/dev/null", "w");
  int help = parse(&c, "--help", NULL);
  int version = parse(&c, "--workers", "2", "--version", NULL);
  fclose(stdout);
  stdout = saved;
  assert_int_equal(help, 1);
  assert_int_equal(version, 1);
}

/* ---- allocation failures (alloc_fail.h) ---- */

typedef struct {
  server_config c;
  int rc;
} alloc_ctx;

static void parse_op(void *arg) {
  alloc_ctx *x = arg;
  x->rc = parse(&x->c, "--listen", "127.0.0.1:9000", "--index", "2",
                "--num-servers", "3", "--workers", "8", "--threads", "4",
                "--mode", "ssp", "--staleness", "2", "--deterministic",
                "--nan-policy", "skip", "--grace-ms", "250", "--port-file",
                "/tmp/port", "--log-level", "debug", "--checkpoint-dir",
                "/tmp/ck", "--checkpoint-every", "10", "--keep", "5",
                "--worker-timeout", "30", "--on-worker-timeout", "proceed",
                "--inject-reply-drops", "0.25", NULL);
}

static void parse_check(void *arg, bool failed) {
  alloc_ctx *x = arg;
  assert_false(failed);
  assert_int_equal(x->rc, 0);
  check_all(&x->c);
}

/* The parser allocates nothing of its own (getopt's work is libc's, not
 * counted), so it has no allocation failure to handle: the first run
 * meets none. */
/* --auth-tokens and FSPS_AUTH_TOKENS: a path (the file is read at
 * start, not here), off by default, never off by an empty value. */
static void test_auth_tokens(void **unused) {
  (void)unused;
  unsetenv("FSPS_AUTH_TOKENS");
  server_config c;
  assert_int_equal(parse(&c, NULL), 0);
  assert_string_equal(c.auth_tokens, "");
  assert_int_equal(parse(&c, "--auth-tokens", "/etc/fsps/tokens", NULL), 0);
  assert_string_equal(c.auth_tokens, "/etc/fsps/tokens");
  setenv("FSPS_AUTH_TOKENS", "/env/tokens", 1);
  assert_int_equal(parse(&c, NULL), 0);
  assert_string_equal(c.auth_tokens, "/env/tokens");
  assert_int_equal(parse(&c, "--auth-tokens=/flag/tokens", NULL), 0);
  assert_string_equal(c.auth_tokens, "/flag/tokens");
  setenv("FSPS_AUTH_TOKENS", "", 1);
  assert_int_equal(parse(&c, NULL), -1);
  assert_non_null(strstr(err, "FSPS_AUTH_TOKENS"));
  unsetenv("FSPS_AUTH_TOKENS");
  refused("--auth-tokens", "--auth-tokens", "");
}

static void test_alloc(void **unused) {
  (void)unused;
  alloc_ctx x;
  assert_int_equal(alloc_fail_loop(NULL, parse_op, parse_check, &x, 10), 0);
}

int main(void) {
#define T(f) cmocka_unit_test_setup(f, clean_env)
  const struct CMUnitTest tests[] = {
      T(test_defaults),    T(test_every_flag),   T(test_env),
      T(test_bools),       T(test_bounds),       T(test_bad_values),
      T(test_bad_usage),   T(test_help_version), T(test_alloc),
      T(test_auth_tokens), T(test_tls),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
