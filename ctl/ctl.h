/* ctl.h: what fsps-ctl's files share: its options, exit codes, the
 * commands and the small table and JSON writers they print with. */
#ifndef FSPS_CTL_H
#define FSPS_CTL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <fsps/fsps.h>

/* Exit codes, for shell scripts. */
enum {
  CTL_OK = 0,          /* every server did what was asked */
  CTL_FAILED = 1,      /* a server refused or failed */
  CTL_USAGE = 2,       /* bad command line */
  CTL_UNREACHABLE = 3, /* a server did not answer */
};

typedef struct {
  const char *cmd;     /* "status", "checkpoint", "rollback" */
  const char *servers; /* --servers or FSPS_SERVERS */
  double timeout_s;    /* --timeout, per call */
  bool json;           /* status --json */
  bool have_version;   /* rollback --version N */
  uint64_t version;
  const char *token_file; /* --token-file (NULL: FSPS_TOKEN_FILE, FSPS_TOKEN) */
  /* TLS: --tls-* or FSPS_TLS_*; NULL for plaintext */
  const char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
} ctl_opts;

/* ctl_parse reads argv into o. Returns -1 to go on, or an exit code
 * (CTL_OK after --help, CTL_USAGE with a message on stderr). */
int ctl_parse(int argc, char **argv, ctl_opts *o);

/* ctl_exit_code maps an fsps_err to the tool's exit code. */
int ctl_exit_code(int rc);

/* The commands: each prints its result on stdout, problems on stderr,
 * and returns the exit code. */
int ctl_status(fsps_client *c, const ctl_opts *o);
int ctl_checkpoint(fsps_client *c, const ctl_opts *o);
int ctl_rollback(fsps_client *c, const ctl_opts *o);

/* ---- table.c: an aligned text table ---- */
#define CTL_TABLE_MAX_COLS 12

typedef struct {
  uint32_t ncols, nrows, cap;
  char **cells; /* nrows * ncols strings, row-major; row 0 the header */
} ctl_table;

/* ctl_table_init starts t with a header of ncols names. */
void ctl_table_init(ctl_table *t, uint32_t ncols, const char *const *header);

/* ctl_table_row appends a row of t->ncols cells (copied). Returns false
 * when out of memory. */
bool ctl_table_row(ctl_table *t, const char *const *cells);

/* ctl_table_print writes t with every column padded to its widest cell. */
void ctl_table_print(const ctl_table *t, FILE *f);
void ctl_table_free(ctl_table *t);

/* ---- json.c: writing JSON ---- */

/* ctl_json_str writes s as a JSON string (quoted, escaped). */
void ctl_json_str(FILE *f, const char *s);

/* ctl_json_ids writes n worker ranks as a JSON array. */
void ctl_json_ids(FILE *f, const uint32_t *ids, uint32_t n);

/* ctl_json_u64s writes n numbers as a JSON array. */
void ctl_json_u64s(FILE *f, const uint64_t *v, uint32_t n);

#endif
