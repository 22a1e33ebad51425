/* test_auth.c: unit tests of server/auth.h — the token file's parser and
 * its refusals (each naming the line, none quoting a token), the file's
 * checks, lookups, the bearer header's form and the role table — and of
 * libfsps's fsps_token_load, the tools' way to find a client's token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fsps/fsps.h>

#include "auth.h"
#include "wire.h"

#define ADMIN "admin-token-0123456789abcdef"
#define WORKER "worker.token_0123456789+/="
#define READER "reader~token~0123456789"

static char err[1400];

/* parse parses text as file "tokens"; err gets the message. */
static server_tokens *parse(const char *text) {
  err[0] = '\0';
  return server_tokens_parse(text, strlen(text), "tokens", err, sizeof err);
}

static int find(const server_tokens *t, const char *token) {
  return server_tokens_find(t, token, strlen(token));
}

/* refused checks that text is refused with a message holding want and
 * none of the file's tokens. */
static void refused(const char *text, const char *want) {
  server_tokens *t = parse(text);
  if (t != NULL)
    fail_msg("accepted: %s", text);
  if (strstr(err, want) == NULL)
    fail_msg("message '%s' lacks '%s'", err, want);
  assert_null(strstr(err, ADMIN));
  assert_null(strstr(err, WORKER));
  assert_null(strstr(err, READER));
}

static void test_parse(void **unused) {
  (void)unused;
  server_tokens *t = parse("# fsps tokens\n"
                           "\n"
                           "admin " ADMIN "\n"
                           "   # indented comment\n"
                           "\tworker\t\t" WORKER "   \r\n"
                           "reader " READER); /* no newline at the end */
  assert_non_null(t);
  assert_int_equal(server_tokens_count(t, AUTH_OPEN), 3);
  assert_int_equal(server_tokens_count(t, AUTH_ADMIN), 1);
  assert_int_equal(server_tokens_count(t, AUTH_WORKER), 1);
  assert_int_equal(server_tokens_count(t, AUTH_READER), 1);
  assert_int_equal(find(t, ADMIN), AUTH_ADMIN);
  assert_int_equal(find(t, WORKER), AUTH_WORKER);
  assert_int_equal(find(t, READER), AUTH_READER);
  /* Only the whole token: no prefix, no extension, no other case. */
  assert_int_equal(find(t, "admin-token-0123456789abcde"), -1);
  assert_int_equal(find(t, ADMIN "f"), -1);
  assert_int_equal(find(t, "ADMIN-TOKEN-0123456789ABCDEF"), -1);
  assert_int_equal(find(t, ""), -1);
  assert_int_equal(server_tokens_find(t, ADMIN "\0xyz", sizeof ADMIN + 3), -1);
  server_tokens_free(t);
  server_tokens_free(NULL);
}

static void test_parse_refusals(void **unused) {
  (void)unused;
  refused("admin " ADMIN "\nworker\n", "tokens line 2: expected `ROLE TOKEN`");
  refused("admin " ADMIN " extra\n", "tokens line 1: expected `ROLE TOKEN`, "
                                     "found more than two words");
  refused("\n\nwriter " WORKER "\n", "tokens line 3: unknown role 'writer'");
  refused("Admin " ADMIN "\n", "unknown role 'Admin'");
  /* A first word that may be a token (the order swapped) is not shown. */
  refused(ADMIN " admin\n", "tokens line 1: unknown role (not shown");
  refused("admin short\n", "tokens line 1: the token is 5 characters long");
  refused("admin " ADMIN "\nworker " ADMIN "\n",
          "tokens line 2: the same token as line 1");
  refused("admin admin-token-\x01x0123456789\n",
          "character 13 of the token is not visible ASCII");
  refused("admin admin-token-\xc3\xa9x0123456789\n", "not visible ASCII");
  refused("", "tokens holds no token");
  refused("# only\n\n   \n# comments\n", "tokens holds no token");
  static const char nul[] = "admin " ADMIN "\nworker wor\0ker-token-0123456\n";
  assert_null(
      server_tokens_parse(nul, sizeof nul - 1, "tokens", err, sizeof err));
  assert_non_null(strstr(err, "tokens line 2: character 4 of the token"));
  char big[AUTH_TOKEN_MAX + 20];
  memset(big, 'x', sizeof big);
  memcpy(big, "admin ", 6);
  big[sizeof big - 1] = '\0';
  refused(big, "longer than 4096");
}

/* write_file writes text to a new file of mode `mode` in dir. */
static void write_file(const char *path, const char *text, mode_t mode) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  assert_int_equal(chmod(path, mode), 0);
}

static void test_read_file(void **unused) {
  (void)unused;
  char dir[] = "/tmp/fsps-test-auth-XXXXXX", path[256];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/tokens", dir);
  write_file(path, "admin " ADMIN "\nreader " READER "\n", 0640);
  server_tokens *t = server_tokens_read(path, err, sizeof err);
  assert_non_null(t);
  assert_int_equal(find(t, READER), AUTH_READER);
  server_tokens_free(t);
  assert_int_equal(chmod(path, 0644), 0); /* every user could read it */
  assert_null(server_tokens_read(path, err, sizeof err));
  assert_non_null(strstr(err, "can be read or written by every user"));
  assert_non_null(strstr(err, "0644"));
  assert_int_equal(chmod(path, 0602), 0);
  assert_null(server_tokens_read(path, err, sizeof err));
  write_file(path, "admin " ADMIN "\nworker bad\n", 0600);
  assert_null(server_tokens_read(path, err, sizeof err));
  assert_non_null(strstr(err, "line 2"));
  assert_non_null(strstr(err, path));
  assert_null(strstr(err, ADMIN));
  assert_null(server_tokens_read(dir, err, sizeof err)); /* a directory */
  assert_non_null(strstr(err, "not a regular file"));
  unlink(path);
  assert_null(server_tokens_read(path, err, sizeof err));
  assert_non_null(strstr(err, "cannot read"));
  rmdir(dir);
}

static void test_bearer(void **unused) {
  (void)unused;
  static const struct {
    const char *v, *token; /* token NULL: refused */
  } cases[] = {
      {"Bearer " ADMIN, ADMIN},
      {"bearer   " ADMIN, ADMIN},
      {"BEARER\t" ADMIN, ADMIN},
      {"Basic xyz", NULL},
      {"Bearer", NULL},
      {"Bearer ", NULL},
      {"Bearer  ", NULL},
      {"Bearer a b", NULL},
      {"Bearer " ADMIN " ", NULL},
      {"Bearer" ADMIN, NULL},
      {ADMIN, NULL},
      {"", NULL},
      {"Bearer caf\xc3\xa9", NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *tok = NULL;
    size_t n = 0;
    bool ok = server_auth_bearer(cases[i].v, strlen(cases[i].v), &tok, &n);
    if (ok != (cases[i].token != NULL))
      fail_msg("'%s': %s", cases[i].v, ok ? "accepted" : "refused");
    if (ok &&
        (n != strlen(cases[i].token) || memcmp(tok, cases[i].token, n) != 0))
      fail_msg("'%s': wrong token", cases[i].v);
  }
}

/* The role table, method by method: D deny, A allow, J join (Init of the
 * declared model only), for open, reader, worker, admin. */
static void test_rights(void **unused) {
  (void)unused;
  static const struct {
    const char *path, *r; /* open reader worker admin */
  } want[] = {
      {WIRE_PATH_INIT, "ADJA"},
      {WIRE_PATH_PULL, "AAAA"},
      {WIRE_PATH_PUSH, "ADAA"},
      {WIRE_PATH_SET_VALUES, "ADDA"},
      {WIRE_PATH_STATUS, "AAAA"},
      {WIRE_PATH_CHECKPOINT, "ADDA"},
      {WIRE_PATH_ROLLBACK, "ADDA"},
      {WIRE_PATH_HEALTH_CHECK, "AAAA"},
      {"/fsps.v1.ParameterServer/Nope", "AAAA"},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    for (int role = AUTH_OPEN; role <= AUTH_ADMIN; role++) {
      auth_right r = server_auth_may((auth_role)role, want[i].path);
      char got = r == AUTH_DENY ? 'D' : r == AUTH_JOIN ? 'J' : 'A';
      if (got != want[i].r[role])
        fail_msg("%s for %s: %c, want %c", want[i].path,
                 server_auth_role_name((auth_role)role), got, want[i].r[role]);
    }
  assert_int_equal(server_auth_may((auth_role)7, WIRE_PATH_PULL), AUTH_DENY);
  assert_false(server_auth_needs_token(WIRE_PATH_HEALTH_CHECK));
  assert_false(server_auth_needs_token("/grpc.health.v1.Health/Watch"));
  for (size_t i = 0; i < WIRE_NUM_METHODS; i++)
    if (strcmp(wire_method_paths[i], WIRE_PATH_HEALTH_CHECK) != 0)
      assert_true(server_auth_needs_token(wire_method_paths[i]));
  assert_true(server_auth_needs_token("/grpc.health.v1.HealthX/Check"));
  assert_string_equal(server_auth_method_name(WIRE_PATH_PUSH), "Push");
  assert_string_equal(server_auth_role_name(AUTH_READER), "reader");
  assert_string_equal(server_auth_role_rights(AUTH_READER), "Pull and Status");
}

/* load runs fsps_token_load; err gets the message. */
static int load(const char *path, char *out, size_t outlen) {
  err[0] = '\0';
  return fsps_token_load(path, out, outlen, err, sizeof err);
}

static void test_client_token_load(void **unused) {
  (void)unused;
  char dir[] = "/tmp/fsps-test-token-XXXXXX", path[256], tok[4097];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/token", dir);
  unsetenv("FSPS_TOKEN_FILE");
  unsetenv("FSPS_TOKEN");
  assert_int_equal(load(NULL, tok, sizeof tok), FSPS_NOT_FOUND);
  assert_string_equal(tok, "");
  write_file(path, "# the worker's token\n\n  " WORKER " \r\n", 0600);
  assert_int_equal(load(path, tok, sizeof tok), FSPS_OK);
  assert_string_equal(tok, WORKER);
  assert_int_equal(load(path, tok, 10), FSPS_INVALID_ARGUMENT); /* room */
  setenv("FSPS_TOKEN", READER, 1);
  assert_int_equal(load("", tok, sizeof tok), FSPS_OK);
  assert_string_equal(tok, READER);
  setenv("FSPS_TOKEN_FILE", path, 1); /* the file wins over the value */
  assert_int_equal(load(NULL, tok, sizeof tok), FSPS_OK);
  assert_string_equal(tok, WORKER);
  unsetenv("FSPS_TOKEN_FILE");
  setenv("FSPS_TOKEN", "two words", 1);
  assert_int_equal(load(NULL, tok, sizeof tok), FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "FSPS_TOKEN"));
  assert_null(strstr(err, "two words"));
  unsetenv("FSPS_TOKEN");
  write_file(path, WORKER "\n" READER "\n", 0600);
  assert_int_equal(load(path, tok, sizeof tok), FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "more than one line"));
  write_file(path, "# nothing\n\n", 0600);
  assert_int_equal(load(path, tok, sizeof tok), FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "holds no token"));
  write_file(path, WORKER "\n", 0644);
  assert_int_equal(load(path, tok, sizeof tok), FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "every user"));
  assert_null(strstr(err, WORKER));
  unlink(path);
  assert_int_equal(load(path, tok, sizeof tok), FSPS_IO);
  assert_non_null(strstr(err, path));
  rmdir(dir);
}

/* fsps_connect refuses a token a header cannot carry, without quoting
 * it; a good one connects (lazily: no server needed). */
static void test_client_connect_token(void **unused) {
  (void)unused;
  fsps_options o;
  fsps_options_init(&o);
  assert_null(o.token);
  o.servers = "127.0.0.1:1";
  o.token = "secret with spaces";
  fsps_client *c = NULL;
  assert_int_equal(fsps_connect(&o, &c, err, sizeof err),
                   FSPS_INVALID_ARGUMENT);
  assert_null(c);
  assert_non_null(strstr(err, "fsps_options.token"));
  assert_null(strstr(err, "secret"));
  char token[32];
  strcpy(token, WORKER);
  o.token = token;
  assert_int_equal(fsps_connect(&o, &c, err, sizeof err), FSPS_OK);
  memset(token, 0, sizeof token); /* the client keeps its own copy */
  fsps_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse),
      cmocka_unit_test(test_parse_refusals),
      cmocka_unit_test(test_read_file),
      cmocka_unit_test(test_bearer),
      cmocka_unit_test(test_rights),
      cmocka_unit_test(test_client_token_load),
      cmocka_unit_test(test_client_connect_token),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
