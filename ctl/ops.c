/* ops.c: fsps-ctl's commands that change servers: checkpoint (every
 * server writes a file) and rollback (every server back to a version). */
#include <inttypes.h>

#include "ctl.h"

/* worse keeps the exit code a script most needs to see: unreachable over
 * refused over ok. */
static int worse(int a, int b) {
  if (a == CTL_UNREACHABLE || b == CTL_UNREACHABLE)
    return CTL_UNREACHABLE;
  return a != CTL_OK ? a : b;
}

/* The JSON forms (--json): one document on stdout whatever happened, so
 * a script reads the outcome of every server from it; the messages also
 * go to stderr as without --json. */
static void json_ckpt_ok(uint32_t s, const char *path, uint64_t version,
                         uint64_t bytes) {
  printf("%s{\"server\":%" PRIu32 ",\"ok\":true,\"path\":", s ? "," : "",
         s);
  ctl_json_str(stdout, path);
  printf(",\"version\":%" PRIu64 ",\"bytes\":%" PRIu64 "}", version, bytes);
}

static void json_failure(fsps_client *c, int rc) {
  printf("\"ok\":false,\"error\":");
  ctl_json_str(stdout, fsps_err_name(rc));
  printf(",\"message\":");
  ctl_json_str(stdout, fsps_last_error(c));
}

static int checkpoint_one(fsps_client *c, const ctl_opts *o, uint32_t s) {
  char path[4096];
  uint64_t version = 0, bytes = 0;
  int rc = fsps_checkpoint(c, s, path, sizeof path, &version, &bytes);
  if (rc == FSPS_OK && o->json)
    json_ckpt_ok(s, path, version, bytes);
  else if (rc == FSPS_OK)
    printf("server %" PRIu32 ": wrote %s (version %" PRIu64 ", %" PRIu64
           " bytes)\n",
           s, path, version, bytes);
  if (rc == FSPS_OK)
    return CTL_OK;
  fprintf(stderr, "fsps-ctl checkpoint: %s (%s)\n", fsps_last_error(c),
          fsps_err_name(rc));
  if (o->json) {
    printf("%s{\"server\":%" PRIu32 ",", s ? "," : "", s);
    json_failure(c, rc);
    putchar('}');
  }
  return ctl_exit_code(rc);
}

int ctl_checkpoint(fsps_client *c, const ctl_opts *o) {
  int code = CTL_OK;
  uint32_t S = fsps_num_servers(c);
  if (o->json)
    printf("{\"servers\":[");
  for (uint32_t s = 0; s < S; s++)
    code = worse(code, checkpoint_one(c, o, s));
  if (o->json)
    printf("],\"ok\":%s}\n", code == CTL_OK ? "true" : "false");
  if (code != CTL_OK)
    fprintf(stderr, "fsps-ctl checkpoint: not every server wrote one\n");
  return code;
}

int ctl_rollback(fsps_client *c, const ctl_opts *o) {
  uint64_t epoch = 0;
  int rc = fsps_rollback(c, o->version, &epoch);
  if (rc != FSPS_OK) {
    fprintf(stderr, "fsps-ctl rollback: %s (%s)\n", fsps_last_error(c),
            fsps_err_name(rc));
    if (o->json) {
      printf("{\"version\":%" PRIu64 ",", o->version);
      json_failure(c, rc);
      printf("}\n");
    }
    return ctl_exit_code(rc);
  }
  if (o->json)
    printf("{\"ok\":true,\"version\":%" PRIu64 ",\"epoch\":\"%016" PRIx64
           "\",\"servers\":%" PRIu32 "}\n",
           o->version, epoch, fsps_num_servers(c));
  else
    printf("rolled %" PRIu32 " server(s) back to version %" PRIu64
           "; new epoch %016" PRIx64 "\n",
           fsps_num_servers(c), o->version, epoch);
  return CTL_OK;
}
