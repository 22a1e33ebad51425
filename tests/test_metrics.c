/* test_metrics.c: the metrics registry (counters, gauges, histograms,
 * labels), its text exposition, the process_* metrics, the /metrics
 * HTTP endpoint and the pages served beside it, and the HTML and JSON
 * escaping those pages use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"

/* render returns r's text (the test frees it). */
static char *render(metrics_registry *r) {
  char *s = metrics_render(r, NULL);
  assert_non_null(s);
  return s;
}

static void has(const char *text, const char *line) {
  if (strstr(text, line) == NULL)
    fail_msg("missing \"%s\" in:\n%s", line, text);
}

static void test_counter_and_gauge(void **state) {
  (void)state;
  metrics_registry *r = metrics_registry_create();
  metrics_series *c = metrics_counter_declare(r, "t_things_total", "Things.");
  metrics_series *g = metrics_gauge_declare(r, "t_level", "A level.");
  metrics_add(c, 3);
  metrics_add(c, 4);
  metrics_add_f(c, 0.5);
  metrics_set(g, -2.25);
  assert_true(metrics_value(c) == 7.5);
  char *s = render(r);
  has(s, "# HELP t_things_total Things.\n# TYPE t_things_total counter\n"
         "t_things_total 7.5\n");
  has(s, "# TYPE t_level gauge\nt_level -2.25\n");
  free(s);
  metrics_set(g, 1e300 * 1e300);
  s = render(r);
  has(s, "t_level +Inf\n");
  free(s);
  metrics_add(NULL, 1); /* metrics off: no-ops */
  metrics_observe(NULL, 1);
  metrics_registry_destroy(r);
}

static void test_labels_escaped(void **state) {
  (void)state;
  metrics_registry *r = metrics_registry_create();
  metrics_family *f = metrics_family_add(r, METRICS_COUNTER, "t_req_total",
                                         "Help with \\ and\nnewline.", "a,b");
  assert_non_null(f);
  const char *v1[] = {"x", "q\"uo\\te\n"};
  metrics_series *s1 = metrics_series_get(f, v1);
  assert_ptr_equal(s1, metrics_series_get(f, v1)); /* found, not made */
  metrics_add(s1, 2);
  metrics_add(metrics_series_get1(metrics_family_add(r, METRICS_GAUGE, "t_one",
                                                     "", "layer"),
                                  "7"),
              5);
  char *s = render(r);
  has(s, "# HELP t_req_total Help with \\\\ and\\nnewline.\n");
  has(s, "t_req_total{a=\"x\",b=\"q\\\"uo\\\\te\\n\"} 2\n");
  has(s, "t_one{layer=\"7\"} 5\n");
  free(s);
  metrics_registry_destroy(r);
}

static void test_histogram(void **state) {
  (void)state;
  metrics_registry *r = metrics_registry_create();
  const double b[] = {0.1, 1, 10};
  metrics_series *h = metrics_series_get(
      metrics_histogram_add(r, "t_lat_seconds", "Latency.", NULL, b, 3), NULL);
  const double obs[] = {0.05, 0.1, 0.5, 5, 50};
  for (size_t i = 0; i < 5; i++)
    metrics_observe(h, obs[i]);
  assert_int_equal(metrics_count(h), 5);
  char *s = render(r);
  has(s, "# TYPE t_lat_seconds histogram\n"
         "t_lat_seconds_bucket{le=\"0.1\"} 2\n"
         "t_lat_seconds_bucket{le=\"1\"} 3\n"
         "t_lat_seconds_bucket{le=\"10\"} 4\n"
         "t_lat_seconds_bucket{le=\"+Inf\"} 5\n"
         "t_lat_seconds_sum 55.65\n"
         "t_lat_seconds_count 5\n");
  free(s);
  metrics_registry_destroy(r);
}

static void test_refused_declarations(void **state) {
  (void)state;
  metrics_registry *r = metrics_registry_create();
  assert_non_null(metrics_counter_declare(r, "t_a_total", ""));
  assert_null(metrics_family_add(r, METRICS_COUNTER, "t_a_total", "", NULL));
  assert_null(metrics_family_add(r, METRICS_GAUGE, "9bad", "", NULL));
  assert_null(metrics_family_add(r, METRICS_GAUGE, "t-bad", "", NULL));
  assert_null(metrics_family_add(r, METRICS_GAUGE, "t_b", "", "le"));
  assert_null(metrics_family_add(r, METRICS_GAUGE, "t_c", "", "a,b,c,d,e"));
  const double unordered[] = {1, 0.5};
  assert_null(metrics_histogram_add(r, "t_h", "", NULL, unordered, 2));
  assert_null(metrics_series_get(NULL, NULL));
  metrics_registry_destroy(r);
}

typedef struct {
  metrics_series *c, *h;
} hammer_arg;

static void *hammer(void *p) {
  hammer_arg *a = p;
  for (int i = 0; i < 100000; i++) {
    metrics_add(a->c, 1);
    metrics_observe(a->h, 0.5);
  }
  return NULL;
}

/* Four threads update one counter and one histogram while a fifth
 * renders: no update is lost. */
static void test_concurrent_updates(void **state) {
  (void)state;
  metrics_registry *r = metrics_registry_create();
  const double b[] = {1};
  hammer_arg a = {
      metrics_counter_declare(r, "t_n_total", ""),
      metrics_series_get(metrics_histogram_add(r, "t_h", "", NULL, b, 1), NULL)};
  pthread_t th[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&th[i], NULL, hammer, &a);
  for (int i = 0; i < 20; i++)
    free(render(r));
  for (int i = 0; i < 4; i++)
    pthread_join(th[i], NULL);
  assert_true(metrics_value(a.c) == 400000);
  assert_int_equal(metrics_count(a.h), 400000);
  assert_true(metrics_value(a.h) == 200000);
  metrics_registry_destroy(r);
}

static void set_from_collector(void *arg) {
  metrics_family *f = arg;
  metrics_set(metrics_series_get1(f, "late"), 42);
}

static void test_collector_and_process(void **state) {
  (void)state;
  metrics_registry *r = metrics_registry_create();
  metrics_family *f = metrics_family_add(r, METRICS_GAUGE, "t_g", "", "k");
  assert_int_equal(metrics_on_collect(r, set_from_collector, f), 0);
  assert_int_equal(metrics_process_register(r), 0);
  char *s = render(r);
  has(s, "t_g{k=\"late\"} 42\n");
  const char *names[] = {"\nprocess_cpu_seconds_total ",
                         "\nprocess_resident_memory_bytes ",
                         "\nprocess_virtual_memory_bytes ",
                         "\nprocess_open_fds ", "\nprocess_max_fds ",
                         "\nprocess_start_time_seconds "};
  for (size_t i = 0; i < 6; i++) {
    const char *line = strstr(s, names[i]);
    if (line == NULL)
      fail_msg("no sample of %s", names[i] + 1);
    double v = strtod(line + strlen(names[i]), NULL);
    if (i > 0 && !(v > 0)) /* the CPU time may still be 0 */
      fail_msg("%s is %g", names[i], v);
  }
  free(s);
  metrics_registry_destroy(r);
}

/* request sends `method path` to 127.0.0.1:port; returns the whole
 * response (the test frees it). */
static char *request(int port, const char *method, const char *path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  char req[256];
  int n = snprintf(req, sizeof req,
                   "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                   method, path);
  assert_int_equal(write(fd, req, (size_t)n), n);
  size_t cap = 1 << 16, len = 0;
  char *out = malloc(cap);
  for (ssize_t k; (k = read(fd, out + len, cap - 1 - len)) > 0;)
    len += (size_t)k;
  out[len] = '\0';
  close(fd);
  return out;
}

static char *get(int port, const char *path) {
  return request(port, "GET", path);
}

static void test_http(void **state) {
  (void)state;
  metrics_registry *r = metrics_registry_create();
  metrics_add(metrics_counter_declare(r, "t_served_total", "x"), 9);
  char err[256];
  metrics_http *h = metrics_http_start(r, "127.0.0.1:0", err, sizeof err);
  assert_non_null(h);
  int port = metrics_http_port(h);
  assert_true(port > 0);
  char *resp = get(port, "/metrics");
  has(resp, "HTTP/1.1 200");
  has(resp, "Content-Type: " METRICS_CONTENT_TYPE);
  has(resp, "\nt_served_total 9\n");
  free(resp);
  resp = get(port, "/nothing");
  has(resp, "HTTP/1.1 404");
  free(resp);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  assert_null(metrics_http_start(r, addr, err, sizeof err));
  has(err, "in use");
  metrics_http_stop(h);
  metrics_registry_destroy(r);
}

static void test_http_bad_addresses(void **state) {
  (void)state;
  metrics_registry *r = metrics_registry_create();
  char err[256];
  const char *bad[] = {"nocolon", "127.0.0.1:", "127.0.0.1:http",
                       "192.0.2.1:0", "no-such-host.invalid:0"};
  for (size_t i = 0; i < 5; i++) {
    err[0] = '\0';
    if (metrics_http_start(r, bad[i], err, sizeof err) != NULL)
      fail_msg("%s was accepted", bad[i]);
    if (strstr(err, bad[i]) == NULL)
      fail_msg("the error for %s does not name it: %s", bad[i], err);
  }
  metrics_registry_destroy(r);
}

/* html and json return s escaped (the test frees it). */
static char *html(const char *s) {
  metrics_text t = {0};
  metrics_text_html(&t, s);
  return metrics_text_take(&t, NULL);
}

static char *json(const char *s) {
  metrics_text t = {0};
  metrics_text_json(&t, s);
  return metrics_text_take(&t, NULL);
}

static void same(char *got, const char *want) {
  if (strcmp(got, want) != 0)
    fail_msg("got \"%s\", want \"%s\"", got, want);
  free(got);
}

static void test_escaping(void **state) {
  (void)state;
  same(html("<img src=x onerror=\"a('b')\">&amp;"),
       "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;amp;");
  same(json("</script>\"q\" \\ \n\t\x01&"),
       "\"\\u003c/script\\u003e\\\"q\\\" \\\\ \\n\\t\\u0001\\u0026\"");
  /* Valid UTF-8 stays; invalid bytes (a stray continuation, an overlong
   * '/', a surrogate, a cut sequence, past U+10FFFF) become U+FFFD. */
  const char *ok = "caf\xc3\xa9 \xe2\x80\x93 \xf0\x9f\x99\x82";
  same(html(ok), ok);
  same(html("a\x80" "b\xc0\xaf" "c\xed\xa0\x80" "d\xe2\x82"),
       "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd" "c\xef\xbf\xbd\xef\xbf\xbd"
       "\xef\xbf\xbd" "d\xef\xbf\xbd\xef\xbf\xbd");
  same(json("\xf4\x90\x80\x80!"),
       "\"\\ufffd\\ufffd\\ufffd\\ufffd!\"");
  same(html("bell\x07" "del\x7f"), "bell\xef\xbf\xbd" "del\xef\xbf\xbd");
  same(html(NULL), "");
  same(json(NULL), "\"\"");
}

static void test_text_numbers(void **state) {
  (void)state;
  metrics_text t = {0};
  char *empty = metrics_text_take(&t, NULL);
  assert_non_null(empty);
  assert_string_equal(empty, "");
  free(empty);
  double v[] = {3, -0.5, 1e300 * 1e300, 0.0 / 0.0, 123456789012.0, 0.1};
  for (size_t i = 0; i < 6; i++) {
    metrics_text_json_num(&t, v[i]);
    metrics_text_put(&t, " ");
  }
  size_t len = 0;
  char *s = metrics_text_take(&t, &len);
  assert_string_equal(s, "3 -0.5 null null 123456789012 0.1 ");
  assert_int_equal(len, strlen(s));
  free(s);
  for (int i = 0; i < 2000; i++) /* grows past any first guess */
    metrics_text_printf(&t, "%d,", i);
  s = metrics_text_take(&t, &len);
  assert_int_equal(strncmp(s, "0,1,2,", 6), 0);
  assert_int_equal(strcmp(s + len - 5, "1999,"), 0);
  free(s);
}

/* The shared look: every page says what it is, escapes its title, and
 * loads nothing from anywhere (no src, stylesheet link, import or url()). */
static void test_page_chrome(void **state) {
  (void)state;
  metrics_text t = {0};
  metrics_page_begin(&t, "<b>\"x\"</b>");
  metrics_text_put(&t, "<p>body</p>\n");
  metrics_page_end(&t, "/status.json", "poll('/status.json',2000,show);\n");
  char *s = metrics_text_take(&t, NULL);
  has(s, "<!DOCTYPE html>");
  has(s, "<meta charset=\"utf-8\">");
  has(s, "<title>&lt;b&gt;&quot;x&quot;&lt;/b&gt;</title>");
  has(s, "<span id=\"live\">");
  has(s, "<a href=\"/status.json\">/status.json</a>");
  has(s, "function poll(url,ms,show)");
  has(s, "poll('/status.json',2000,show);\n</script>\n</body></html>\n");
  const char *external[] = {"<b>", " src=", "stylesheet", "@import", "url(",
                            "http:", "https:", "@font-face"};
  for (size_t i = 0; i < sizeof external / sizeof external[0]; i++)
    if (strstr(s, external[i]) != NULL)
      fail_msg("the page holds \"%s\":\n%s", external[i], s);
  free(s);
}

static int renders;

static char *render_page(void *arg, size_t *len) {
  renders++;
  const char *body = arg;
  if (body == NULL)
    return NULL; /* out of memory, say */
  *len = strlen(body);
  return strdup(body);
}

static void test_http_pages(void **state) {
  (void)state;
  metrics_registry *r = metrics_registry_create();
  metrics_add(metrics_counter_declare(r, "t_served_total", "x"), 9);
  metrics_page pages[] = {
      {"/", "text/html; charset=utf-8", render_page, "<p>hello</p>"},
      {"/status.json", "application/json", render_page, "{\"a\":1}"},
      {"/broken", "text/plain", render_page, NULL}};
  char err[256];
  metrics_http *h =
      metrics_http_start_pages(r, "127.0.0.1:0", pages, 3, err, sizeof err);
  assert_non_null(h);
  int port = metrics_http_port(h);
  renders = 0;
  char *resp = get(port, "/");
  has(resp, "HTTP/1.1 200");
  has(resp, "Content-Type: text/html; charset=utf-8");
  has(resp, "Cache-Control: no-store");
  has(resp, "Content-Security-Policy: default-src 'none'; ");
  has(resp, "\r\n\r\n<p>hello</p>");
  free(resp);
  resp = get(port, "/status.json");
  has(resp, "Content-Type: application/json");
  has(resp, "\r\n\r\n{\"a\":1}");
  free(resp);
  resp = request(port, "HEAD", "/");
  has(resp, "HTTP/1.1 200");
  assert_null(strstr(resp, "hello")); /* no body */
  free(resp);
  resp = get(port, "/metrics"); /* still there */
  has(resp, "\nt_served_total 9\n");
  free(resp);
  resp = get(port, "/broken");
  has(resp, "HTTP/1.1 500");
  free(resp);
  resp = request(port, "POST", "/");
  has(resp, "HTTP/1.1 405");
  free(resp);
  resp = get(port, "/status.json/x");
  has(resp, "HTTP/1.1 404");
  has(resp, "not found: try /metrics, /, /status.json, /broken\n");
  free(resp);
  assert_int_equal(renders, 4); /* GET /, /status.json, HEAD /, /broken */
  metrics_http_stop(h);
  assert_null(metrics_http_start_pages(r, "127.0.0.1:0", pages,
                                       METRICS_MAX_PAGES + 1, err, sizeof err));
  metrics_registry_destroy(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counter_and_gauge),
      cmocka_unit_test(test_labels_escaped),
      cmocka_unit_test(test_histogram),
      cmocka_unit_test(test_refused_declarations),
      cmocka_unit_test(test_concurrent_updates),
      cmocka_unit_test(test_collector_and_process),
      cmocka_unit_test(test_http),
      cmocka_unit_test(test_http_bad_addresses),
      cmocka_unit_test(test_escaping),
      cmocka_unit_test(test_text_numbers),
      cmocka_unit_test(test_page_chrome),
      cmocka_unit_test(test_http_pages),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
