/* opts.c: fsps-ctl's command line — the command, its flags (with
 * FSPS_SERVERS for --servers) and the help texts. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

#define DEFAULT_TIMEOUT_S 30.0

static const char TOOL_HELP[] =
    "usage: fsps-ctl COMMAND --servers HOST:PORT,... [options]\n"
    "\n"
    "Operates a running fsps cluster through libfsps.\n"
    "\n"
    "commands:\n"
    "  status      each server's layers: version, pending step, the workers\n"
    "              it still waits for (table, or --json)\n"
    "  checkpoint  every server writes a checkpoint now\n"
    "  rollback    every server goes back to --version N, in a new epoch\n"
    "\n"
    "`fsps-ctl COMMAND --help` describes a command. `fsps-ctl --version`\n"
    "prints the version of libfsps.\n"
    "\n"
    "exit codes: 0 ok, 1 a server refused or failed, 2 bad usage,\n"
    "            3 a server could not be reached\n";

static const char COMMON_HELP[] =
    "  --servers LIST  the servers, server 0 first: host:port,host:port\n"
    "                  (env FSPS_SERVERS)\n"
    "  --timeout SEC   seconds each call may take (default 30)\n"
    "  --token-file F  read the bearer token for servers with --auth-tokens\n"
    "                  from file F (env FSPS_TOKEN_FILE; else the token\n"
    "                  itself in env FSPS_TOKEN; never a flag: ps shows\n"
    "                  flags). status needs a reader token, checkpoint\n"
    "                  and rollback an admin one\n"
    "  --tls-ca FILE   TLS: PEM file of the CAs that sign the servers'\n"
    "                  certificates (env FSPS_TLS_CA)\n"
    "  --tls-cert FILE mutual TLS: PEM file of this client's certificate\n"
    "                  chain (env FSPS_TLS_CERT)\n"
    "  --tls-key FILE  its PEM private key (env FSPS_TLS_KEY)\n"
    "  --tls-server-name NAME  the name the servers' certificates must\n"
    "                  carry, instead of each address's host\n"
    "                  (env FSPS_TLS_SERVER_NAME)\n"
    "  --help          this text\n";

static const char STATUS_HELP[] =
    "usage: fsps-ctl status --servers LIST [--json] [--timeout SEC]\n"
    "\n"
    "Asks every server for its state (Status) and prints two tables: the\n"
    "servers (model, mode, workers, epoch, incarnation, checkpoints held),\n"
    "then every layer on every server: its version, the step being\n"
    "collected, and the workers that step still waits for. --json prints\n"
    "one JSON document instead. A server that does not answer is listed\n"
    "with the reason, and the exit code is 3.\n"
    "\n"
    "  --json          one JSON document on stdout\n";

static const char CHECKPOINT_HELP[] =
    "usage: fsps-ctl checkpoint --servers LIST [--json] [--timeout SEC]\n"
    "\n"
    "Asks every server to write a checkpoint of its slices now (the server\n"
    "needs --checkpoint-dir) and prints each file written. Taken while\n"
    "workers push, the files may hold layers at different versions.\n"
    "\n"
    "  --json          one JSON document on stdout: {\"servers\": [{\"server\",\n"
    "                  \"ok\", \"path\", \"version\", \"bytes\"} or {\"server\",\n"
    "                  \"ok\": false, \"error\", \"message\"}], \"ok\"}\n";

static const char ROLLBACK_HELP[] =
    "usage: fsps-ctl rollback --servers LIST --version N [--json]\n"
    "                         [--timeout SEC]\n"
    "\n"
    "Takes every server back to version N and into a new epoch: running\n"
    "workers are refused and recover from version N. Every server must hold\n"
    "the same model and be able to go back to N (a checkpoint of N, all its\n"
    "layers at N, or N = 0, the initial values); otherwise nothing changes.\n"
    "\n"
    "  --version N     the version to go back to\n"
    "  --json          one JSON document on stdout: {\"ok\", \"version\",\n"
    "                  \"epoch\", \"servers\"} or {\"ok\": false, \"version\",\n"
    "                  \"error\", \"message\"}\n";

static void print_help(const char *cmd) {
  const char *text = cmd == NULL                      ? TOOL_HELP
                     : strcmp(cmd, "status") == 0     ? STATUS_HELP
                     : strcmp(cmd, "checkpoint") == 0 ? CHECKPOINT_HELP
                                                      : ROLLBACK_HELP;
  fputs(text, stdout);
  if (cmd != NULL)
    fputs(COMMON_HELP, stdout);
}

static int usage(const char *cmd, const char *what, const char *arg) {
  fprintf(stderr, "fsps-ctl%s%s: %s%s%s\n", cmd ? " " : "", cmd ? cmd : "",
          what, arg ? arg : "", arg ? "'" : "");
  fprintf(stderr, "Try 'fsps-ctl %s%s--help'.\n", cmd ? cmd : "",
          cmd ? " " : "");
  return CTL_USAGE;
}

static bool parse_u64(const char *s, uint64_t *out) {
  if (s == NULL || *s < '0' || *s > '9')
    return false;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0')
    return false;
  *out = v;
  return true;
}

static bool parse_seconds(const char *s, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end != '\0' || !(v > 0) || v > 86400)
    return false;
  *out = v;
  return true;
}

static bool known(const char *cmd) {
  return strcmp(cmd, "status") == 0 || strcmp(cmd, "checkpoint") == 0 ||
         strcmp(cmd, "rollback") == 0;
}

enum {
  OPT_SERVERS = 1,
  OPT_TIMEOUT,
  OPT_JSON,
  OPT_VERSION,
  OPT_HELP,
  OPT_TOKEN_FILE,
  OPT_TOKEN, /* refused: see one_flag */
};
enum { OPT_TLS_CA = 100, OPT_TLS_CERT, OPT_TLS_KEY, OPT_TLS_SERVER_NAME };

/* tls_flag stores a --tls-* value; false when f is not one. */
static bool tls_flag(int f, const char *arg, ctl_opts *o) {
  const char **dst = f == OPT_TLS_CA            ? &o->tls_ca
                     : f == OPT_TLS_CERT        ? &o->tls_cert
                     : f == OPT_TLS_KEY         ? &o->tls_key
                     : f == OPT_TLS_SERVER_NAME ? &o->tls_server_name
                                                : NULL;
  if (dst != NULL)
    *dst = arg;
  return dst != NULL;
}

/* one_flag applies flag f (argument arg) to o; -1 to go on, else an exit
 * code. */
static int one_flag(int f, const char *arg, ctl_opts *o) {
  bool rollback = strcmp(o->cmd, "rollback") == 0;
  if (tls_flag(f, arg, o))
    return -1;
  switch (f) {
  case OPT_SERVERS:
    o->servers = arg;
    return -1;
  case OPT_TIMEOUT:
    return parse_seconds(arg, &o->timeout_s)
               ? -1
               : usage(o->cmd, "--timeout wants seconds > 0, not '", arg);
  case OPT_JSON:
    o->json = true;
    return -1;
  case OPT_VERSION:
    if (!rollback)
      return usage(o->cmd, "--version is an option of rollback only", NULL);
    o->have_version = parse_u64(arg, &o->version);
    return o->have_version ? -1
                           : usage(o->cmd,
                                   "--version wants a non-negative integer, "
                                   "not '",
                                   arg);
  case OPT_HELP:
    print_help(o->cmd);
    return CTL_OK;
  case OPT_TOKEN_FILE:
    o->token_file = arg;
    return -1;
  case OPT_TOKEN: /* named so that getopt does not take it for an
                     abbreviation of --token-file; its value never shown */
    return usage(o->cmd,
                 "no --token flag: a command line shows in ps; give "
                 "--token-file FILE, FSPS_TOKEN_FILE or FSPS_TOKEN",
                 NULL);
  default:
    return usage(o->cmd, "unknown option or missing argument: '", arg);
  }
}

static int parse_flags(int argc, char **argv, ctl_opts *o) {
  static const struct option longs[] = {
      {"servers", required_argument, NULL, OPT_SERVERS},
      {"timeout", required_argument, NULL, OPT_TIMEOUT},
      {"json", no_argument, NULL, OPT_JSON},
      {"version", required_argument, NULL, OPT_VERSION},
      {"help", no_argument, NULL, OPT_HELP},
      {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
      {"token", required_argument, NULL, OPT_TOKEN},
      {"tls-ca", required_argument, NULL, OPT_TLS_CA},
      {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
      {"tls-key", required_argument, NULL, OPT_TLS_KEY},
      {"tls-server-name", required_argument, NULL, OPT_TLS_SERVER_NAME},
      {NULL, 0, NULL, 0}};
  opterr = 0;
  optind = 1;
  int f, rc = -1;
  char bad[128]; /* an unknown option, without a value after '=' */
  while (rc < 0 && (f = getopt_long(argc, argv, "+", longs, NULL)) != -1) {
    if (f == '?')
      snprintf(bad, sizeof bad, "%.*s", (int)strcspn(argv[optind - 1], "="),
               argv[optind - 1]);
    rc = one_flag(f, f == '?' ? bad : optarg, o);
  }
  if (rc < 0 && optind < argc)
    rc = usage(o->cmd, "unexpected argument '", argv[optind]);
  return rc;
}

static int check_required(ctl_opts *o) {
  if (o->servers == NULL || o->servers[0] == '\0')
    return usage(o->cmd,
                 "no servers: give --servers HOST:PORT,... or set "
                 "FSPS_SERVERS",
                 NULL);
  if (strcmp(o->cmd, "rollback") == 0 && !o->have_version)
    return usage(o->cmd, "which version? give --version N", NULL);
  return -1;
}

/* env returns variable name's value, NULL when unset or empty. */
static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

static void tls_from_env(ctl_opts *o) {
  o->tls_ca = env("FSPS_TLS_CA");
  o->tls_cert = env("FSPS_TLS_CERT");
  o->tls_key = env("FSPS_TLS_KEY");
  o->tls_server_name = env("FSPS_TLS_SERVER_NAME");
}

int ctl_parse(int argc, char **argv, ctl_opts *o) {
  *o = (ctl_opts){.servers = getenv("FSPS_SERVERS"),
                  .timeout_s = DEFAULT_TIMEOUT_S};
  tls_from_env(o);
  if (argc < 2)
    return usage(NULL, "no command (status, checkpoint, rollback)", NULL);
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    print_help(NULL);
    return CTL_OK;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("fsps-ctl (libfsps %s)\n", fsps_version());
    return CTL_OK;
  }
  if (!known(argv[1]))
    return usage(NULL, "unknown command '", argv[1]);
  o->cmd = argv[1];
  int rc = parse_flags(argc - 1, argv + 1, o);
  return rc < 0 ? check_required(o) : rc;
}
