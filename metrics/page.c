/* page.c: what the status pages beside /metrics share — the start of the
 * document with its inline style, and the inline script helpers that keep
 * a page up to date from its JSON. Nothing is loaded from elsewhere: the
 * clusters these run on are often cut off from the Internet. */
#include <time.h>

#include "metrics.h"

/* System fonts only, so no font is fetched. */
static const char style[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,"
    "sans-serif;margin:0;background:#f5f6f8;color:#1d2330}"
    "header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;"
    "align-items:baseline;gap:18px;flex-wrap:wrap}"
    "h1{font-size:18px;margin:0;font-weight:600}"
    "#live{font-size:12px;color:#b8c0cc}"
    "#live.live::before{content:'\\25CF  ';color:#3fb950}"
    "#live.down{color:#ffb4a8}"
    "main{padding:6px 20px 12px;max-width:1100px}"
    "h2{font-size:12px;margin:18px 0 6px;color:#4a5568;"
    "text-transform:uppercase;letter-spacing:.05em}"
    ".cards{display:flex;flex-wrap:wrap;gap:8px}"
    ".card{background:#fff;border:1px solid #dde1e7;border-radius:6px;"
    "padding:6px 12px;min-width:110px}"
    ".card .k{font-size:12px;color:#5a6472}"
    ".card .v{font-size:20px;font-variant-numeric:tabular-nums}"
    "table{border-collapse:collapse;background:#fff;border:1px solid #dde1e7}"
    "th,td{padding:4px 12px;border-bottom:1px solid #eceff3;text-align:left}"
    "th{font-size:12px;color:#5a6472;font-weight:600}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".ok{color:#2f7d32}.dim{color:#8a94a3}"
    ".charts{display:flex;flex-wrap:wrap;gap:12px}"
    "figure{margin:0}figcaption{font-size:12px;color:#5a6472}"
    "svg.chart{background:#fff;border:1px solid #dde1e7;border-radius:6px;"
    "width:520px;max-width:100%;height:auto}"
    "svg text{font-size:11px;fill:#5a6472}"
    "svg .frame{fill:none;stroke:#dde1e7}"
    "svg .line{fill:none;stroke-width:2;stroke-linejoin:round}"
    "footer{padding:8px 20px 16px;color:#5a6472;font-size:12px}"
    "a{color:#2456a6}";

/* The helpers a page's own script uses: el, setText, fix (a number with
 * d decimals, or a dash), and poll, which fetches url every ms
 * milliseconds, hands the JSON to show and says in #live whether the
 * process answers. Page values are set with textContent only, never as
 * HTML, so that names from clients stay text. */
static const char helpers[] =
    "'use strict';\n"
    "function el(id){return document.getElementById(id);}\n"
    "function setText(id,s){var e=el(id);"
    "if(e&&e.textContent!==s)e.textContent=s;}\n"
    "function fix(v,d){return typeof v==='number'&&isFinite(v)?"
    "v.toFixed(d):'\\u2013';}\n"
    "function poll(url,ms,show){var live=el('live');\n"
    " function go(){fetch(url,{cache:'no-store'}).then(function(r){\n"
    "  if(!r.ok)throw new Error('HTTP '+r.status);return r.json();})\n"
    " .then(function(d){show(d);live.className='live';\n"
    "  live.textContent='live \\u00b7 updated '+"
    "new Date().toLocaleTimeString();})\n"
    " .catch(function(e){live.className='down';\n"
    "  live.textContent='cannot update ('+e.message+') \\u00b7 retrying';})\n"
    " .then(function(){setTimeout(go,ms);});}\n"
    " go();}\n";

void metrics_page_begin(metrics_text *t, const char *title) {
  char when[32] = "";
  time_t now = time(NULL);
  struct tm tm;
  if (gmtime_r(&now, &tm) != NULL)
    strftime(when, sizeof when, "%H:%M:%S UTC", &tm);
  metrics_text_put(t, "<!DOCTYPE html>\n<html lang=\"en\"><head>"
                      "<meta charset=\"utf-8\">\n<meta name=\"viewport\" "
                      "content=\"width=device-width, initial-scale=1\">\n"
                      "<link rel=\"icon\" href=\"data:,\">\n<title>");
  metrics_text_html(t, title);
  metrics_text_printf(t, "</title>\n<style>%s</style>\n</head>\n<body>\n",
                      style);
  metrics_text_put(t, "<header><h1>");
  metrics_text_html(t, title);
  metrics_text_printf(t,
                      "</h1><span id=\"live\">rendered at %s \xc2\xb7 "
                      "refreshes itself where JavaScript runs</span>"
                      "</header>\n<main>\n",
                      when);
}

void metrics_page_end(metrics_text *t, const char *json_path,
                      const char *script) {
  metrics_text_put(t, "</main>\n<footer>Also here: <a href=\"");
  metrics_text_html(t, json_path);
  metrics_text_put(t, "\">");
  metrics_text_html(t, json_path);
  metrics_text_put(t, "</a> (what this page shows, as JSON) \xc2\xb7 <a "
                      "href=\"/metrics\">/metrics</a> (Prometheus)</footer>\n");
  metrics_text_printf(t, "<script>\n%s%s</script>\n</body></html>\n", helpers,
                      script ? script : "");
}
