/* status.c: `fsps-ctl status` — every server's state from one Status call
 * each, as two aligned tables (servers, then layers) or one JSON document. */
#include <inttypes.h>
#include <string.h>

#include "ctl.h"

#define IDS_MAX 256 /* characters of a list of ranks shown in a table */

/* ids writes n ranks as "0,1,3" ("-" for none) into buf. */
static const char *ids(const uint32_t *w, uint32_t n, char *buf, size_t len) {
  size_t at = 0;
  buf[0] = '\0';
  for (uint32_t i = 0; i < n && at < len; i++)
    at += (size_t)snprintf(buf + at, len - at, "%s%" PRIu32, i ? "," : "",
                           w[i]);
  return n ? buf : "-";
}

static const char *state(const fsps_status *st, uint32_t s, char *buf,
                         size_t len) {
  if (fsps_status_error(st, s, NULL) != FSPS_OK)
    snprintf(buf, len, "%s", fsps_err_name(fsps_status_error(st, s, NULL)));
  else if (!fsps_status_initialized(st, s))
    snprintf(buf, len, "no model");
  else if (fsps_status_server_index(st, s) != s ||
           fsps_status_server_count(st, s) != fsps_status_num_servers(st))
    snprintf(buf, len, "is %" PRIu32 " of %" PRIu32 ", listed %" PRIu32
             " of %" PRIu32,
             fsps_status_server_index(st, s), fsps_status_server_count(st, s),
             s, fsps_status_num_servers(st));
  else
    snprintf(buf, len, "ok");
  return buf;
}

static void server_row(ctl_table *t, const fsps_status *st, uint32_t s) {
  char idx[16], stat[64], workers[16], epoch[24], inc[24], ck[IDS_MAX];
  bool up = fsps_status_error(st, s, NULL) == FSPS_OK;
  const uint64_t *v;
  uint32_t nck = fsps_status_checkpoints(st, s, &v);
  size_t at = 0;
  ck[0] = '\0';
  for (uint32_t i = 0; i < nck && at < sizeof ck; i++)
    at += (size_t)snprintf(ck + at, sizeof ck - at, "%s%" PRIu64,
                           i ? "," : "", v[i]);
  snprintf(idx, sizeof idx, "%" PRIu32, s);
  snprintf(workers, sizeof workers, "%" PRIu32, fsps_status_num_workers(st, s));
  snprintf(epoch, sizeof epoch, "%016" PRIx64, fsps_status_epoch(st, s));
  snprintf(inc, sizeof inc, "%016" PRIx64, fsps_status_incarnation(st, s));
  const char *row[] = {idx,
                       fsps_status_address(st, s),
                       state(st, s, stat, sizeof stat),
                       up ? fsps_status_mode(st, s) : "-",
                       up ? workers : "-",
                       up ? epoch : "-",
                       up ? inc : "-",
                       nck ? ck : "-"};
  ctl_table_row(t, row);
}

static void layer_row(ctl_table *t, const fsps_status *st, uint32_t s,
                      uint32_t l) {
  char srv[16], idx[16], ver[24], pend[24], pushed[IDS_MAX], miss[IDS_MAX],
      absent[IDS_MAX];
  const uint32_t *w;
  snprintf(srv, sizeof srv, "%" PRIu32, s);
  snprintf(idx, sizeof idx, "%" PRIu32, l);
  snprintf(ver, sizeof ver, "%" PRIu64, fsps_status_layer_version(st, s, l));
  snprintf(pend, sizeof pend, "%" PRIu64,
           fsps_status_layer_pending_step(st, s, l));
  uint32_t n = fsps_status_layer_pushed(st, s, l, &w);
  const char *p = ids(w, n, pushed, sizeof pushed);
  n = fsps_status_layer_missing(st, s, l, &w);
  const char *m = fsps_status_layer_awaiting_values(st, s, l)
                      ? "its values"
                      : ids(w, n, miss, sizeof miss);
  n = fsps_status_layer_absent(st, s, l, &w);
  const char *row[] = {srv, idx, fsps_status_layer_name(st, s, l), ver, pend,
                       p,   m,   ids(w, n, absent, sizeof absent)};
  ctl_table_row(t, row);
}

static void print_tables(const fsps_status *st) {
  static const char *const servers[] = {
      "SERVER", "ADDRESS", "STATE",       "MODE",
      "WORKERS", "EPOCH",  "INCARNATION", "CHECKPOINTS"};
  static const char *const layers[] = {"SERVER",  "LAYER",  "NAME",
                                       "VERSION", "PENDING", "PUSHED",
                                       "WAITING FOR", "ABSENT"};
  ctl_table t;
  ctl_table_init(&t, 8, servers);
  for (uint32_t s = 0; s < fsps_status_num_servers(st); s++)
    server_row(&t, st, s);
  ctl_table_print(&t, stdout);
  ctl_table_free(&t);
  fputc('\n', stdout);
  ctl_table_init(&t, 8, layers);
  for (uint32_t s = 0; s < fsps_status_num_servers(st); s++)
    for (uint32_t l = 0; l < fsps_status_num_layers(st, s); l++)
      layer_row(&t, st, s, l);
  ctl_table_print(&t, stdout);
  ctl_table_free(&t);
}

/* ---- JSON ---- */

static void json_layer(FILE *f, const fsps_status *st, uint32_t s,
                       uint32_t l) {
  const uint32_t *w;
  fprintf(f, "{\"index\":%" PRIu32 ",\"name\":", l);
  ctl_json_str(f, fsps_status_layer_name(st, s, l));
  fprintf(f,
          ",\"n\":%" PRIu64 ",\"slice_count\":%" PRIu64 ",\"version\":%" PRIu64
          ",\"pending_step\":%" PRIu64 ",\"awaiting_values\":%s,\"pushed\":",
          fsps_status_layer_size(st, s, l),
          fsps_status_layer_slice_count(st, s, l),
          fsps_status_layer_version(st, s, l),
          fsps_status_layer_pending_step(st, s, l),
          fsps_status_layer_awaiting_values(st, s, l) ? "true" : "false");
  uint32_t n = fsps_status_layer_pushed(st, s, l, &w);
  ctl_json_ids(f, w, n);
  fputs(",\"missing\":", f);
  n = fsps_status_layer_missing(st, s, l, &w);
  ctl_json_ids(f, w, n);
  fputs(",\"absent\":", f);
  n = fsps_status_layer_absent(st, s, l, &w);
  ctl_json_ids(f, w, n);
  fputc('}', f);
}

static void json_error(FILE *f, const fsps_status *st, uint32_t s) {
  const char *msg;
  int rc = fsps_status_error(st, s, &msg);
  if (rc == FSPS_OK) {
    fputs("null", f);
    return;
  }
  fprintf(f, "{\"code\":\"%s\",\"message\":", fsps_err_name(rc));
  ctl_json_str(f, msg);
  fputc('}', f);
}

static void json_server(FILE *f, const fsps_status *st, uint32_t s) {
  const uint64_t *v;
  fprintf(f, "{\"server\":%" PRIu32 ",\"address\":", s);
  ctl_json_str(f, fsps_status_address(st, s));
  fputs(",\"error\":", f);
  json_error(f, st, s);
  fprintf(f,
          ",\"initialized\":%s,\"server_index\":%" PRIu32
          ",\"num_servers\":%" PRIu32 ",\"num_workers\":%" PRIu32
          ",\"mode\":\"%s\",\"spec_hash\":\"%016" PRIx64
          "\",\"incarnation\":\"%016" PRIx64 "\",\"epoch\":\"%016" PRIx64
          "\",\"checkpoints\":",
          fsps_status_initialized(st, s) ? "true" : "false",
          fsps_status_server_index(st, s), fsps_status_server_count(st, s),
          fsps_status_num_workers(st, s), fsps_status_mode(st, s),
          fsps_status_spec_hash(st, s), fsps_status_incarnation(st, s),
          fsps_status_epoch(st, s));
  uint32_t nck = fsps_status_checkpoints(st, s, &v);
  ctl_json_u64s(f, v, nck);
  fputs(",\"layers\":[", f);
  for (uint32_t l = 0; l < fsps_status_num_layers(st, s); l++) {
    fputs(l ? "," : "", f);
    json_layer(f, st, s, l);
  }
  fputs("]}", f);
}

static void print_json(const fsps_status *st) {
  fputs("{\"servers\":[", stdout);
  for (uint32_t s = 0; s < fsps_status_num_servers(st); s++) {
    fputs(s ? ",\n" : "\n", stdout);
    json_server(stdout, st, s);
  }
  fputs("\n]}\n", stdout);
}

/* report names every server that did not answer, on stderr, and returns
 * the exit code. */
static int report(const fsps_status *st) {
  int code = CTL_OK;
  for (uint32_t s = 0; s < fsps_status_num_servers(st); s++) {
    const char *msg;
    int rc = fsps_status_error(st, s, &msg);
    if (rc == FSPS_OK)
      continue;
    fprintf(stderr, "fsps-ctl status: server %" PRIu32 " (%s): %s (%s)\n", s,
            fsps_status_address(st, s), msg, fsps_err_name(rc));
    int c = ctl_exit_code(rc);
    code = code == CTL_UNREACHABLE ? code : c;
  }
  return code;
}

int ctl_status(fsps_client *c, const ctl_opts *o) {
  fsps_status *st = NULL;
  int rc = fsps_status_get(c, &st);
  if (st == NULL) {
    fprintf(stderr, "fsps-ctl status: %s (%s)\n", fsps_last_error(c),
            fsps_err_name(rc));
    return ctl_exit_code(rc);
  }
  if (o->json)
    print_json(st);
  else
    print_tables(st);
  int code = report(st);
  fsps_status_free(st);
  return code;
}
