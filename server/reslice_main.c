/* reslice_main.c: fsps-reslice's command line — re-slices the checkpoints
 * S servers wrote into checkpoints for S' servers (see reslice.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsps_err.h"
#include "reslice.h"

#ifndef FSPS_VERSION
#define FSPS_VERSION "0.0.0"
#endif

#define STR(x) #x
#define XSTR(x) STR(x) /* a macro's value as a string */

static const char usage[] =
    "Usage: fsps-reslice --from DIR --to DIR --num-servers S'\n"
    "                    [--checkpoint-version V]\n"
    "\n"
    "Re-slices the checkpoint files that S fsps-servers wrote into --from\n"
    "(ckpt-s<s>of<S>-v<version>.fsps, one per server) into files for S'\n"
    "servers in --to, so training resumes on another number of servers:\n"
    "start server s' of S' with --checkpoint-dir set to --to, --index s'\n"
    "and --num-servers S'. It takes the newest version for which the file\n"
    "of every server s = 0..S-1 is present and sound (length and CRC32C\n"
    "checked, same S, spec hash and workers). Each layer's parameters and\n"
    "optimizer state are joined and cut again into S' slices; each layer\n"
    "keeps its version. The files are written like the server writes them\n"
    "(temporary name, fsync, rename) and renamed into place only once all\n"
    "S' are complete: on any refusal or failure --to gets nothing.\n"
    "\n"
    "Options:\n"
    "  --from DIR               the folder the S servers checkpointed into\n"
    "  --to DIR                 the folder for the S' files; created if\n"
    "                           missing; must not hold checkpoints for\n"
    "                           another S' or as new as the version written\n"
    "  --num-servers S'         the new number of servers, 1.." XSTR(SHARD_MAX_SERVERS) "\n"
    "  --checkpoint-version V   re-slice version V instead of the newest\n"
    "  --help                   print this help and exit\n"
    "  --version                print the tool's version and exit\n"
    "\n"
    "Exit status: 0 written, 1 refused or failed (--to unchanged), 2 bad\n"
    "usage.\n";

enum { OPT_FROM = 1000, OPT_TO, OPT_NUM, OPT_CKPT_VERSION, OPT_HELP, OPT_VER };

static const struct option options[] = {
    {"from", required_argument, NULL, OPT_FROM},
    {"to", required_argument, NULL, OPT_TO},
    {"num-servers", required_argument, NULL, OPT_NUM},
    {"checkpoint-version", required_argument, NULL, OPT_CKPT_VERSION},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VER},
    {NULL, 0, NULL, 0},
};

/* parse_u64 reads a whole decimal number. */
static bool parse_u64(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  if (*s < '0' || *s > '9')
    return false;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0')
    return false;
  *out = v;
  return true;
}

static int usage_error(const char *what, const char *arg) {
  fprintf(stderr, "fsps-reslice: %s%s%s (see --help)\n", what, arg ? " " : "",
          arg ? arg : "");
  return 2;
}

/* set applies one option; 0, or the exit status to stop with. */
static int set(int opt, const char *arg, reslice_opts *o, uint64_t *num) {
  switch (opt) {
  case OPT_FROM:
    o->from = arg;
    return 0;
  case OPT_TO:
    o->to = arg;
    return 0;
  case OPT_NUM:
    return parse_u64(arg, num) ? 0 : usage_error("bad --num-servers", arg);
  case OPT_CKPT_VERSION:
    o->pick_version = true;
    return parse_u64(arg, &o->version)
               ? 0
               : usage_error("bad --checkpoint-version", arg);
  default:
    return usage_error("unknown option", NULL);
  }
}

/* check_opts refuses a run without its three required options or with an
 * S' no server runs as. */
static int check_opts(reslice_opts *o, uint64_t num, bool have_num) {
  if (o->from == NULL || o->to == NULL || !have_num)
    return usage_error("needs --from DIR, --to DIR and --num-servers S'", NULL);
  if (num == 0 || num > RESLICE_MAX_SERVERS) {
    fprintf(stderr,
            "fsps-reslice: --num-servers must be 1..%d (as fsps-server "
            "accepts), not %" PRIu64 "\n",
            RESLICE_MAX_SERVERS, num);
    return 2;
  }
  o->num_servers = (uint32_t)num;
  return 0;
}

/* parse fills o from argv; 0 to run, else the exit status. --version
 * stands alone, so `--version V` (a checkpoint version meant) is not read
 * as a request for the tool's version. */
static int parse(int argc, char **argv, reslice_opts *o) {
  uint64_t num = 0;
  bool have_num = false;
  int opt, rc = 0;
  opterr = 0;
  while (rc == 0 && (opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
    if (opt == OPT_HELP) {
      fputs(usage, stdout);
      return -1;
    }
    if (opt == OPT_VER && argc == 2) {
      printf("fsps-reslice %s\n", FSPS_VERSION);
      return -1;
    }
    if (opt == '?')
      return usage_error("unknown or incomplete option", argv[optind - 1]);
    if (opt == OPT_VER)
      return usage_error("--version takes no value and stands alone; to pick "
                         "a checkpoint version use --checkpoint-version V",
                         NULL);
    have_num |= opt == OPT_NUM;
    rc = set(opt, optarg, o, &num);
  }
  if (rc == 0 && optind < argc)
    return usage_error("unexpected argument", argv[optind]);
  return rc ? rc : check_opts(o, num, have_num);
}

int main(int argc, char **argv) {
  reslice_opts o = {0};
  reslice_result res = {0};
  char msg[16384];
  int rc = parse(argc, argv, &o);
  if (rc != 0)
    return rc < 0 ? 0 : rc;
  if (reslice_run(&o, &res, msg, sizeof msg) != FSPS_OK) {
    fprintf(stderr,
            "fsps-reslice: %s\nfsps-reslice: nothing was written to %s\n", msg,
            o.to);
    return 1;
  }
  if (res.idle)
    fprintf(stderr,
            "fsps-reslice: warning: %" PRIu32 " of the %" PRIu32
            " servers hold no element of any layer (the layers are too small "
            "to spread over that many)\n",
            res.idle, o.num_servers);
  printf("fsps-reslice: version %" PRIu64 " of %" PRIu32 " servers (%s) "
         "re-sliced for %" PRIu32 " servers into %s: %" PRIu32
         " files, %" PRIu64 " bytes\n",
         res.version, res.from_servers, o.from, o.num_servers, o.to,
         o.num_servers, res.bytes);
  return 0;
}
