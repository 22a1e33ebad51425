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

int ctl_checkpoint(fsps_client *c, const ctl_opts *o) {
  (void)o;
  int code = CTL_OK;
  uint32_t S = fsps_num_servers(c);
  for (uint32_t s = 0; s < S; s++) {
    char path[4096];
    uint64_t version = 0, bytes = 0;
    int rc = fsps_checkpoint(c, s, path, sizeof path, &version, &bytes);
    if (rc == FSPS_OK)
      printf("server %" PRIu32 ": wrote %s (version %" PRIu64 ", %" PRIu64
             " bytes)\n",
             s, path, version, bytes);
    else
      fprintf(stderr, "fsps-ctl checkpoint: %s (%s)\n", fsps_last_error(c),
              fsps_err_name(rc));
    code = worse(code, ctl_exit_code(rc));
  }
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
    return ctl_exit_code(rc);
  }
  printf("rolled %" PRIu32 " server(s) back to version %" PRIu64
         "; new epoch %016" PRIx64 "\n",
         fsps_num_servers(c), o->version, epoch);
  return CTL_OK;
}
