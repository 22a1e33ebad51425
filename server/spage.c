/* spage.c: fsps-server's status page — a snapshot of the store's layers
 * (each under its own lock, as Status takes it) and of the metrics'
 * counters (atomics), rendered as JSON, and as HTML whose inline script
 * polls that JSON. Layer names come from clients: they are escaped. */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "smetrics.h"
#include "spage.h"
#include "store.h"

enum { C_PUSH_CALLS, C_PULL_CALLS, C_COUNTED, C_RX, C_TX, NCOUNTERS };
static const char *const counter_names[NCOUNTERS] = {
    "push_calls", "pull_calls", "pushes_counted", "received_bytes",
    "sent_bytes"};

#define RING 11 /* a sample a second: rates over the last 10 s */

typedef struct {
  double t, c[NCOUNTERS];
} sample;

struct server_page {
  const server_metrics *m;
  double start;
  pthread_mutex_t mu; /* the ring: sampled on the loop, read by HTTP */
  sample ring[RING];
  unsigned first, n;
};

static void read_counters(const server_metrics *m, sample *s) {
  s->t = metrics_now_s();
  s->c[C_PUSH_CALLS] = metrics_value(m->pushes);
  s->c[C_PULL_CALLS] = metrics_value(m->pulls);
  s->c[C_COUNTED] = metrics_value(m->pushes_counted);
  s->c[C_RX] = metrics_value(m->rx_bytes);
  s->c[C_TX] = metrics_value(m->tx_bytes);
}

server_page *server_page_create(const server_metrics *m) {
  server_page *p = calloc(1, sizeof *p);
  if (p == NULL)
    return NULL;
  p->m = m;
  pthread_mutex_init(&p->mu, NULL);
  read_counters(m, &p->ring[0]); /* the first sample: the start */
  p->start = p->ring[0].t;
  p->n = 1;
  return p;
}

void server_page_destroy(server_page *p) {
  if (p == NULL)
    return;
  pthread_mutex_destroy(&p->mu);
  free(p);
}

void server_page_sample(server_page *p) {
  sample s;
  read_counters(p->m, &s);
  pthread_mutex_lock(&p->mu);
  if (p->n < RING) {
    p->ring[(p->first + p->n++) % RING] = s;
  } else {
    p->ring[p->first] = s;
    p->first = (p->first + 1) % RING;
  }
  pthread_mutex_unlock(&p->mu);
}

/* ---- the snapshot ---- */

typedef struct {
  const char *name; /* the spec's, which lives as long as the store */
  uint64_t version, pending;
  bool awaiting;
  uint32_t nmissing, nabsent;
  uint32_t *missing, *absent;
} layer_row;

typedef struct {
  const server_config *cfg;
  bool ready;
  uint64_t epoch;
  double uptime, window, rate[NCOUNTERS];
  sample now;
  double ckpt_last, ckpt_written, ckpt_failed;
  uint32_t nlayers;
  layer_row *rows;
  uint32_t *ids; /* each row's missing and absent workers, 2W a row */
  bool *flags;   /* 2W, for store_pushed */
} snap;

/* take_rates sets each counter's rate since the oldest sample kept. */
static void take_rates(server_page *p, snap *s) {
  pthread_mutex_lock(&p->mu);
  sample old = p->ring[p->first];
  pthread_mutex_unlock(&p->mu);
  read_counters(p->m, &s->now);
  s->uptime = s->now.t - p->start;
  s->window = s->now.t - old.t;
  for (int i = 0; i < NCOUNTERS; i++)
    s->rate[i] = s->window > 0 ? (s->now.c[i] - old.c[i]) / s->window : 0.0;
}

/* take_layer reads layer L as Status does: a worker has pushed the
 * pending step, or the step no longer waits for it (absent), or it is
 * missing. */
static void take_layer(const snap *s, store_layer *L, layer_row *r,
                       uint32_t *ids) {
  uint32_t W = s->cfg->workers;
  bool *pushed = s->flags, *absent = s->flags + W;
  store_layer_info in;
  store_info(L, &in);
  *r = (layer_row){.name = in.name,
                   .version = in.version,
                   .awaiting = in.awaiting,
                   .missing = ids,
                   .absent = ids + W};
  r->pending = store_pushed(L, pushed, absent);
  if (s->cfg->mode == MODE_ASP) /* no step to wait for */
    return;
  for (uint32_t w = 0; w < W; w++) {
    if (pushed[w])
      continue;
    if (absent[w])
      r->absent[r->nabsent++] = w;
    else
      r->missing[r->nmissing++] = w;
  }
}

static int take_layers(snap *s, store *st) {
  uint32_t L = store_num_layers(st), W = s->cfg->workers;
  s->rows = calloc(L ? L : 1, sizeof *s->rows);
  s->ids = calloc(2 * (size_t)L * W + 1, sizeof *s->ids);
  s->flags = calloc(2 * (size_t)W + 1, sizeof *s->flags);
  if (s->rows == NULL || s->ids == NULL || s->flags == NULL)
    return -1;
  for (uint32_t l = 0; l < L; l++) {
    store_layer *Lp = store_layer_get(st, l);
    if (Lp == NULL)
      break;
    take_layer(s, Lp, &s->rows[l], s->ids + 2 * (size_t)l * W);
    s->nlayers = l + 1;
  }
  return 0;
}

static void snap_free(snap *s) {
  free(s->rows);
  free(s->ids);
  free(s->flags);
}

static int take(server_page *p, snap *s) {
  const server_metrics *m = p->m;
  *s = (snap){.cfg = store_config(m->st)};
  s->ready = store_ready(m->st);
  s->epoch = store_epoch(m->st);
  take_rates(p, s);
  s->ckpt_last = metrics_value(m->ckpt_last_success);
  s->ckpt_written = metrics_value(m->ckpt_writes);
  s->ckpt_failed = metrics_value(m->ckpt_failures);
  if (take_layers(s, m->st) == 0)
    return 0;
  snap_free(s);
  return -1;
}

static bool asp(const snap *s) {
  return s->cfg->mode == MODE_ASP;
}

static bool rolling_back(const snap *s) {
  return s->epoch == STORE_EPOCH_CHANGING;
}

/* ---- JSON ---- */

static void json_ids(metrics_text *t, const uint32_t *ids, uint32_t n) {
  metrics_text_put(t, "[");
  for (uint32_t i = 0; i < n; i++)
    metrics_text_printf(t, "%s%" PRIu32, i ? "," : "", ids[i]);
  metrics_text_put(t, "]");
}

static void json_layer(metrics_text *t, const snap *s, uint32_t l) {
  const layer_row *r = &s->rows[l];
  metrics_text_printf(t, "%s\n{\"index\":%" PRIu32 ",\"name\":", l ? "," : "",
                      l);
  metrics_text_json(t, r->name);
  metrics_text_printf(t,
                      ",\"version\":%" PRIu64 ",\"pending_step\":", r->version);
  if (asp(s))
    metrics_text_put(t, "null");
  else
    metrics_text_printf(t, "%" PRIu64, r->pending);
  metrics_text_printf(t, ",\"awaiting_values\":%s,\"missing\":",
                      r->awaiting ? "true" : "false");
  json_ids(t, r->missing, r->nmissing);
  metrics_text_put(t, ",\"absent\":");
  json_ids(t, r->absent, r->nabsent);
  metrics_text_put(t, "}");
}

static void json_head(metrics_text *t, const snap *s) {
  const server_config *c = s->cfg;
  metrics_text_printf(
      t,
      "{\"process\":\"fsps-server\",\"server\":%" PRIu32 ",\"servers\":%" PRIu32
      ",\"workers\":%" PRIu32 ",\"mode\":\"%s\",\"staleness\":%" PRIu32
      ",\"deterministic\":%s,\"model\":%s,\"epoch\":",
      c->index, c->num_servers, c->workers, server_config_mode_name(c->mode),
      c->staleness, c->deterministic ? "true" : "false",
      s->ready ? "true" : "false");
  if (rolling_back(s))
    metrics_text_put(t, "null");
  else
    metrics_text_printf(t, "%" PRIu64, s->epoch);
  metrics_text_put(t, ",\"uptime_s\":");
  metrics_text_json_num(t, s->uptime);
}

/* json_counts writes "totals" and "rates" (per second, over window_s). */
static void json_counts(metrics_text *t, const snap *s) {
  for (int k = 0; k < 2; k++) {
    metrics_text_put(t, k ? ",\n\"rates\":{\"window_s\":" : ",\n\"totals\":{");
    if (k)
      metrics_text_json_num(t, s->window);
    for (int i = 0; i < NCOUNTERS; i++) {
      metrics_text_printf(t, "%s\"%s\":", i || k ? "," : "", counter_names[i]);
      metrics_text_json_num(t, k ? s->rate[i] : s->now.c[i]);
    }
    metrics_text_put(t, "}");
  }
  metrics_text_put(t, ",\n\"checkpoints\":{\"written\":");
  metrics_text_json_num(t, s->ckpt_written);
  metrics_text_put(t, ",\"failed\":");
  metrics_text_json_num(t, s->ckpt_failed);
  metrics_text_put(t, ",\"last_success_unix\":");
  metrics_text_json_num(t, s->ckpt_last > 0 ? s->ckpt_last : NAN);
  metrics_text_put(t, "}");
}

static void render_json(metrics_text *t, const snap *s) {
  json_head(t, s);
  json_counts(t, s);
  metrics_text_put(t, ",\n\"layers\":[");
  for (uint32_t l = 0; l < s->nlayers; l++)
    json_layer(t, s, l);
  metrics_text_put(t, "]}\n");
}

char *server_page_json(void *arg, size_t *len) {
  snap s;
  if (take(arg, &s) != 0)
    return NULL;
  metrics_text t = {0};
  render_json(&t, &s);
  snap_free(&s);
  return metrics_text_take(&t, len);
}

/* ---- HTML ---- */

/* put_ranges writes ids as "0, 2–4" (the script's ranges() too). */
static void put_ranges(metrics_text *t, const uint32_t *ids, uint32_t n) {
  for (uint32_t i = 0, j; i < n; i = j + 1) {
    for (j = i; j + 1 < n && ids[j + 1] == ids[j] + 1;)
      j++;
    metrics_text_printf(t, "%s%" PRIu32, i ? ", " : "", ids[i]);
    if (j > i)
      metrics_text_printf(t, "\xe2\x80\x93%" PRIu32, ids[j]);
  }
}

/* put_waiting writes the missing-workers cell (the script's waiting()). */
static void put_waiting(metrics_text *t, const snap *s, const layer_row *r) {
  const char *cls = asp(s) || r->awaiting ? "dim" : r->nmissing ? "miss" : "ok";
  metrics_text_printf(t, "<td class=\"missing %s\">", cls);
  if (asp(s))
    metrics_text_put(t, "\xe2\x80\x93 (asp: no step barrier)");
  else if (r->nmissing == 0)
    metrics_text_put(t, "none");
  else
    put_ranges(t, r->missing, r->nmissing);
  if (r->nabsent > 0) {
    metrics_text_put(t, " (absent: ");
    put_ranges(t, r->absent, r->nabsent);
    metrics_text_put(t, ")");
  }
  metrics_text_put(t, "</td>");
}

static void html_layer(metrics_text *t, const snap *s, uint32_t l) {
  const layer_row *r = &s->rows[l];
  metrics_text_printf(t,
                      "<tr id=\"layer-%" PRIu32 "\"><td class=\"n\">%" PRIu32
                      "</td><td class=\"name\">",
                      l, l);
  metrics_text_html(t, r->name);
  metrics_text_printf(t,
                      "</td><td class=\"n version\">%" PRIu64
                      "</td><td class=\"n pending\">",
                      r->version);
  if (asp(s))
    metrics_text_put(t, "\xe2\x80\x93");
  else if (r->awaiting)
    metrics_text_put(t, "awaiting values");
  else
    metrics_text_printf(t, "%" PRIu64, r->pending);
  metrics_text_put(t, "</td>");
  put_waiting(t, s, r);
  metrics_text_put(t, "</tr>\n");
}

static void card(metrics_text *t, const char *id, const char *key,
                 const char *value) {
  metrics_text_printf(t,
                      "<div class=\"card\"><div class=\"k\">%s</div>"
                      "<div class=\"v\" id=\"%s\">",
                      key, id);
  metrics_text_html(t, value);
  metrics_text_put(t, "</div></div>\n");
}

/* fmt writes v with d decimals into out (the script's fix()). */
static const char *fmt(char *out, size_t n, double v, int d) {
  snprintf(out, n, "%.*f", d, v);
  return out;
}

/* hms writes seconds as h:mm:ss (the script's hms()). */
static const char *hms(char *out, size_t n, double secs) {
  uint64_t s = secs > 0 ? (uint64_t)secs : 0;
  snprintf(out, n, "%" PRIu64 ":%02u:%02u", s / 3600, (unsigned)(s / 60 % 60),
           (unsigned)(s % 60));
  return out;
}

/* ckpt_text says how many checkpoint files were written, when the last
 * was, and how many failed (the script's ckpt()). */
static const char *ckpt_text(char *out, size_t n, const snap *s) {
  char when[32] = "";
  time_t last = (time_t)s->ckpt_last;
  struct tm tm;
  if (s->ckpt_last > 0 && gmtime_r(&last, &tm) != NULL)
    strftime(when, sizeof when, " \xc2\xb7 last %H:%M:%S UTC", &tm);
  int k = snprintf(out, n, "%.0f%s", s->ckpt_written, when);
  if (s->ckpt_failed > 0 && k > 0 && (size_t)k < n)
    snprintf(out + k, n - (size_t)k, " \xc2\xb7 %.0f failed", s->ckpt_failed);
  return out;
}

static void html_state(metrics_text *t, const snap *s) {
  char v[96], mode[96], stale[32] = "";
  const server_config *c = s->cfg;
  if (c->mode == MODE_SSP)
    snprintf(stale, sizeof stale, ", staleness %" PRIu32, c->staleness);
  snprintf(mode, sizeof mode, "%s%s%s", server_config_mode_name(c->mode), stale,
           c->deterministic ? ", deterministic" : "");
  metrics_text_put(t, "<h2>Server</h2>\n<div class=\"cards\">\n");
  card(t, "mode", "mode", mode);
  snprintf(v, sizeof v, "%" PRIu32, c->workers);
  card(t, "workers", "workers", v);
  snprintf(v, sizeof v, "%" PRIu64, s->epoch);
  card(t, "epoch", "epoch", rolling_back(s) ? "rolling back" : v);
  card(t, "uptime", "up", hms(v, sizeof v, s->uptime));
  snprintf(v, sizeof v, "%.0f", s->now.c[C_COUNTED]);
  card(t, "counted", "pushes counted", v);
  card(t, "ckpt", "checkpoint files", ckpt_text(v, sizeof v, s));
  metrics_text_put(t, "</div>\n");
}

static void html_rates(metrics_text *t, const snap *s) {
  char v[64];
  metrics_text_printf(t,
                      "<h2>Traffic, over the last <span id=\"window\">%.0f"
                      "</span> s</h2>\n<div class=\"cards\">\n",
                      s->window);
  card(t, "push-rate", "push calls/s",
       fmt(v, sizeof v, s->rate[C_PUSH_CALLS], 1));
  card(t, "pull-rate", "pull calls/s",
       fmt(v, sizeof v, s->rate[C_PULL_CALLS], 1));
  card(t, "rx-rate", "received MB/s", fmt(v, sizeof v, s->rate[C_RX] / 1e6, 2));
  card(t, "tx-rate", "sent MB/s", fmt(v, sizeof v, s->rate[C_TX] / 1e6, 2));
  metrics_text_put(t, "</div>\n");
}

static void html_layers(metrics_text *t, const snap *s) {
  metrics_text_printf(t,
                      "<h2>Layers (this server's slice of each)</h2>\n"
                      "<p id=\"no-model\"%s>No model declared yet: the "
                      "first worker declares it.</p>\n",
                      s->ready ? " hidden" : "");
  metrics_text_put(t, "<table><thead><tr><th>#</th><th>name</th>"
                      "<th>version</th><th>pending step</th>"
                      "<th>workers it waits for</th></tr></thead>\n"
                      "<tbody id=\"layers\">\n");
  for (uint32_t l = 0; l < s->nlayers; l++)
    html_layer(t, s, l);
  metrics_text_put(t, "</tbody></table>\n");
}

/* The page's own script: the same cells as the HTML above, from the JSON
 * every two seconds. */
static const char script[] =
    "function ranges(a){var o=[];for(var i=0,j;i<a.length;i=j+1){"
    "for(j=i;j+1<a.length&&a[j+1]===a[j]+1;)j++;"
    "o.push(j>i?a[i]+'\\u2013'+a[j]:String(a[i]));}return o.join(', ');}\n"
    "function hms(s){s=Math.max(0,Math.floor(s));"
    "var m=Math.floor(s/60)%60,x=s%60;return Math.floor(s/3600)+':'+"
    "(m<10?'0':'')+m+':'+(x<10?'0':'')+x;}\n"
    "function ckpt(c){var s=String(c.written);"
    "if(c.last_success_unix!==null)s+=' \\u00b7 last '+"
    "new Date(c.last_success_unix*1000).toISOString().substr(11,8)+' UTC';"
    "if(c.failed>0)s+=' \\u00b7 '+c.failed+' failed';return s;}\n"
    "function waiting(l,asp){if(asp)return['\\u2013 (asp: no step barrier)',"
    "'dim'];var s=l.missing.length?ranges(l.missing):'none';"
    "if(l.absent.length)s+=' (absent: '+ranges(l.absent)+')';"
    "return[s,l.awaiting_values?'dim':l.missing.length?'miss':'ok'];}\n"
    "function cell(tr,cls,text){var td=document.createElement('td');"
    "td.className=cls;td.textContent=text;tr.appendChild(td);}\n"
    "function row(l,asp){var tr=document.createElement('tr');"
    "tr.id='layer-'+l.index;cell(tr,'n',String(l.index));"
    "cell(tr,'name',l.name);cell(tr,'n version',String(l.version));"
    "cell(tr,'n pending',asp?'\\u2013':l.awaiting_values?'awaiting values':"
    "String(l.pending_step));var w=waiting(l,asp);"
    "cell(tr,'missing '+w[1],w[0]);return tr;}\n"
    "function show(d){var r=d.rates,asp=d.mode==='asp';\n"
    " setText('epoch',d.epoch===null?'rolling back':String(d.epoch));\n"
    " setText('uptime',hms(d.uptime_s));\n"
    " setText('counted',String(d.totals.pushes_counted));\n"
    " setText('ckpt',ckpt(d.checkpoints));\n"
    " setText('window',fix(r.window_s,0));\n"
    " setText('push-rate',fix(r.push_calls,1));\n"
    " setText('pull-rate',fix(r.pull_calls,1));\n"
    " setText('rx-rate',fix(r.received_bytes/1e6,2));\n"
    " setText('tx-rate',fix(r.sent_bytes/1e6,2));\n"
    " el('no-model').hidden=d.model;\n"
    " var b=el('layers');b.replaceChildren.apply(b,"
    "d.layers.map(function(l){return row(l,asp);}));}\n"
    "poll('/status.json',2000,show);\n";

static void render_html(metrics_text *t, const snap *s) {
  char title[96];
  snprintf(title, sizeof title, "fsps-server %" PRIu32 " of %" PRIu32,
           s->cfg->index, s->cfg->num_servers);
  metrics_page_begin(t, title);
  html_state(t, s);
  html_rates(t, s);
  html_layers(t, s);
  metrics_page_end(t, "/status.json", script);
}

char *server_page_html(void *arg, size_t *len) {
  snap s;
  if (take(arg, &s) != 0)
    return NULL;
  metrics_text t = {0};
  render_html(&t, &s);
  snap_free(&s);
  return metrics_text_take(&t, len);
}
