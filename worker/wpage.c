/* wpage.c: fsps-worker's status page — a copy of its progress history
 * rendered as JSON, and as HTML with inline SVG charts whose inline script
 * redraws them, and the figures, from that JSON. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "wpage.h"

typedef struct {
  const worker_page *page;
  worker_now now;
  worker_point *pts;
  size_t n;
} snap;

static int take(const worker_page *p, snap *s) {
  *s = (snap){.page = p};
  s->pts = malloc(worker_history_cap(p->history) * sizeof *s->pts);
  if (s->pts == NULL)
    return -1;
  s->n = worker_history_read(p->history, &s->now, s->pts,
                             worker_history_cap(p->history));
  return 0;
}

/* ---- JSON ---- */

/* json_series writes one column of the history: seconds (which 0), step
 * (1), loss (2) or samples_per_s (3). */
static void json_series(metrics_text *t, const snap *s, const char *name,
                        int which) {
  metrics_text_printf(t, "%s\"%s\":[", which ? "," : "", name);
  for (size_t i = 0; i < s->n; i++) {
    const worker_point *p = &s->pts[i];
    double v = which == 0   ? p->seconds
               : which == 1 ? (double)p->step
               : which == 2 ? p->loss
                            : p->samples_per_s;
    if (i)
      metrics_text_put(t, ",");
    metrics_text_json_num(t, v);
  }
  metrics_text_put(t, "]");
}

static void json_num(metrics_text *t, const char *name, double v) {
  metrics_text_printf(t, ",\"%s\":", name);
  metrics_text_json_num(t, v);
}

static void render_json(metrics_text *t, const snap *s) {
  const worker_now *w = &s->now;
  metrics_text_printf(t,
                      "{\"process\":\"fsps-worker\",\"rank\":%" PRIu32
                      ",\"world\":%" PRIu32 ",\"model\":",
                      s->page->rank, s->page->world);
  metrics_text_json(t, s->page->model);
  metrics_text_put(t, ",\"mode\":");
  metrics_text_json(t, s->page->mode);
  json_num(t, "seconds", w->seconds);
  metrics_text_printf(t,
                      ",\"epoch\":%" PRIu32 ",\"epochs\":%" PRIu32
                      ",\"step\":%" PRIu64 ",\"total_steps\":%" PRIu64
                      ",\"samples\":%" PRIu64,
                      w->epoch, w->epochs, w->step, w->total_steps, w->samples);
  json_num(t, "loss", w->loss);
  json_num(t, "samples_per_s", w->samples_per_s);
  json_num(t, "wait_fraction", w->wait_fraction);
  json_num(t, "test_accuracy", w->accuracy);
  metrics_text_put(t, ",\n\"history\":{");
  json_series(t, s, "seconds", 0);
  json_series(t, s, "step", 1);
  json_series(t, s, "loss", 2);
  json_series(t, s, "samples_per_s", 3);
  metrics_text_put(t, "}}\n");
}

char *worker_page_json(void *arg, size_t *len) {
  snap s;
  if (take(arg, &s) != 0)
    return NULL;
  metrics_text t = {0};
  render_json(&t, &s);
  free(s.pts);
  return metrics_text_take(&t, len);
}

/* ---- HTML ---- */

/* The charts' plot area in SVG units (the script's X0, X1, Y0, Y1). */
#define X0 50.0
#define X1 550.0
#define Y0 8.0
#define Y1 142.0

/* label writes an axis value as the script's label() does. */
static const char *label(char *out, size_t n, double v) {
  snprintf(out, n, "%.*f", v >= 100 ? 0 : v >= 1 ? 2 : 3, v);
  return out;
}

static double value(const worker_point *p, int which) {
  return which == 2 ? p->loss : p->samples_per_s;
}

/* top returns the chart's y range, 0 to the largest value (1 if none). */
static double top(const snap *s, int which) {
  double hi = 0;
  for (size_t i = 0; i < s->n; i++)
    if (isfinite(value(&s->pts[i], which)) && value(&s->pts[i], which) > hi)
      hi = value(&s->pts[i], which);
  return hi > 0 ? hi : 1;
}

/* put_points writes the polyline's points (the script's chart()). */
static void put_points(metrics_text *t, const snap *s, int which, double hi) {
  double lo = s->n ? (double)s->pts[0].step : 0;
  double span = s->n ? (double)s->pts[s->n - 1].step - lo : 0;
  for (size_t i = 0, k = 0; i < s->n; i++) {
    double v = value(&s->pts[i], which);
    if (!isfinite(v))
      continue;
    double x =
        X0 + ((double)s->pts[i].step - lo) / (span > 1 ? span : 1) * (X1 - X0);
    metrics_text_printf(t, "%s%.1f,%.1f", k++ ? " " : "", x,
                        Y1 - v / hi * (Y1 - Y0));
  }
}

static void put_chart(metrics_text *t, const snap *s, const char *id,
                      const char *caption, int which, const char *color) {
  char buf[64];
  double hi = top(s, which);
  metrics_text_printf(
      t,
      "<figure><figcaption>%s</figcaption>\n<svg class=\"chart\" "
      "id=\"%s-chart\" viewBox=\"0 0 560 166\" role=\"img\" "
      "aria-label=\"%s\">\n<rect class=\"frame\" x=\"%.0f\" y=\"%.0f\" "
      "width=\"%.0f\" height=\"%.0f\"/>\n",
      caption, id, caption, X0, Y0, X1 - X0, Y1 - Y0);
  metrics_text_printf(t,
                      "<text id=\"%s-ymax\" x=\"46\" y=\"16\" "
                      "text-anchor=\"end\">%s</text>\n<text x=\"46\" "
                      "y=\"142\" text-anchor=\"end\">0</text>\n",
                      id, label(buf, sizeof buf, hi));
  metrics_text_printf(
      t,
      "<text id=\"%s-x0\" x=\"50\" y=\"158\">%" PRIu64 "</text>\n"
      "<text x=\"300\" y=\"158\" text-anchor=\"middle\">step</text>\n"
      "<text id=\"%s-x1\" x=\"550\" y=\"158\" text-anchor=\"end\">%" PRIu64
      "</text>\n<polyline class=\"line\" id=\"%s-line\" stroke=\"%s\" "
      "points=\"",
      id, s->n ? s->pts[0].step : 0, id, s->n ? s->pts[s->n - 1].step : 0, id,
      color);
  put_points(t, s, which, hi);
  metrics_text_put(t, "\"/>\n</svg></figure>\n");
}

static void card(metrics_text *t, const char *id, const char *key,
                 const char *value_text) {
  metrics_text_printf(t,
                      "<div class=\"card\"><div class=\"k\">%s</div>"
                      "<div class=\"v\" id=\"%s\">",
                      key, id);
  metrics_text_html(t, value_text);
  metrics_text_put(t, "</div></div>\n");
}

/* fix writes v with d decimals, or a dash (the script's fix()). */
static const char *fix(char *out, size_t n, double v, int d) {
  if (isfinite(v))
    snprintf(out, n, "%.*f", d, v);
  else
    snprintf(out, n, "\xe2\x80\x93");
  return out;
}

static void html_cards(metrics_text *t, const snap *s) {
  const worker_now *w = &s->now;
  char v[96];
  metrics_text_put(t, "<h2>Training</h2>\n<div class=\"cards\">\n");
  snprintf(v, sizeof v, "%" PRIu32 " of %" PRIu32, w->epoch, w->epochs);
  card(t, "epoch", "epoch", v);
  snprintf(v, sizeof v, "%" PRIu64 " of %" PRIu64, w->step, w->total_steps);
  card(t, "step", "step", v);
  card(t, "loss", "loss (epoch mean)", fix(v, sizeof v, w->loss, 4));
  card(t, "rate", "samples/s", fix(v, sizeof v, w->samples_per_s, 0));
  fix(v, sizeof v, w->wait_fraction * 100, 0);
  snprintf(v + strlen(v), sizeof v - strlen(v), "%%");
  card(t, "wait", "waiting on network", v);
  card(t, "accuracy", "test accuracy", fix(v, sizeof v, w->accuracy, 4));
  metrics_text_put(t, "</div>\n<p class=\"dim\">model <code id=\"model\">");
  metrics_text_html(t, s->page->model);
  metrics_text_put(t, "</code> \xc2\xb7 ");
  metrics_text_html(t, s->page->mode);
  metrics_text_put(t, "</p>\n");
}

/* The page's own script: the figures and the charts from the JSON every
 * two seconds, drawn as the C above draws them. */
static const char script[] =
    "var X0=50,X1=550,Y0=8,Y1=142;\n"
    "function label(v){return v.toFixed(v>=100?0:v>=1?2:3);}\n"
    "function chart(id,xs,ys){var lo=xs.length?xs[0]:0,"
    "hi=xs.length?xs[xs.length-1]:0,top=0,p=[];\n"
    " ys.forEach(function(v){if(typeof v==='number'&&v>top)top=v;});\n"
    " if(!(top>0))top=1;\n"
    " for(var i=0;i<xs.length;i++){var v=ys[i];"
    "if(typeof v!=='number')continue;\n"
    "  p.push((X0+(xs[i]-lo)/Math.max(hi-lo,1)*(X1-X0)).toFixed(1)+','+"
    "(Y1-v/top*(Y1-Y0)).toFixed(1));}\n"
    " el(id+'-line').setAttribute('points',p.join(' '));\n"
    " setText(id+'-ymax',label(top));setText(id+'-x0',String(lo));"
    "setText(id+'-x1',String(hi));}\n"
    "function show(d){\n"
    " setText('epoch',d.epoch+' of '+d.epochs);\n"
    " setText('step',d.step+' of '+d.total_steps);\n"
    " setText('loss',fix(d.loss,4));\n"
    " setText('rate',fix(d.samples_per_s,0));\n"
    " setText('wait',fix(d.wait_fraction*100,0)+'%');\n"
    " setText('accuracy',fix(d.test_accuracy,4));\n"
    " var h=d.history;chart('loss',h.step,h.loss);"
    "chart('rate',h.step,h.samples_per_s);}\n"
    "poll('/status.json',2000,show);\n";

static void render_html(metrics_text *t, const snap *s) {
  char title[96];
  snprintf(title, sizeof title, "fsps-worker %" PRIu32 " of %" PRIu32,
           s->page->rank, s->page->world);
  metrics_page_begin(t, title);
  html_cards(t, s);
  metrics_text_put(t, "<h2>So far</h2>\n<div class=\"charts\">\n");
  put_chart(t, s, "loss", "loss, mean over each interval", 2, "#c2410c");
  put_chart(t, s, "rate", "samples/s, over each interval", 3, "#2456a6");
  metrics_text_put(t, "</div>\n");
  metrics_page_end(t, "/status.json", script);
}

char *worker_page_html(void *arg, size_t *len) {
  snap s;
  if (take(arg, &s) != 0)
    return NULL;
  metrics_text t = {0};
  render_html(&t, &s);
  free(s.pts);
  return metrics_text_take(&t, len);
}
