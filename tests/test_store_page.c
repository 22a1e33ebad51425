/* test_store_page.c: test_store's group for the server's status page
 * (spage.c) over a real store: layer names a client chose, however
 * hostile, come out as text in the HTML and as strings in the JSON; the
 * pending step and the workers it waits for are Status's; the rates are
 * taken over the last ten samples; a server with no model says so. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smetrics.h"
#include "spage.h"
#include "store_fixture.h"

#define EVIL "<img src=x onerror=alert(1)>"

static void contains(const char *text, const char *want) {
  if (strstr(text, want) == NULL)
    fail_msg("missing \"%s\" in:\n%s", want, text);
}

/* The model: layer 0 named EVIL, layer 1 "q\"uote\\s" then a byte that
 * is not UTF-8; 20 and 8 elements. */
static store *open_store(const server_config *c) {
  store *st = store_create(c);
  shard_spec *s = shard_spec_create(5);
  uint64_t a[] = {A_N}, b[] = {8};
  shard_spec_add_layer(s, EVIL);
  shard_spec_add_tensor(s, "w", 1, a, SHARD_INIT_CONSTANT, 1.0, 0);
  shard_spec_add_layer(s, "q\"uote\\s\xff");
  shard_spec_add_tensor(s, "w", 1, b, SHARD_INIT_ZEROS, 0, 0);
  shard_optim_spec o;
  shard_optim_defaults(SHARD_OPT_SGD, &o);
  o.lr = 0.5;
  shard_spec_set_optim(s, &o);
  char msg[512] = "";
  bool created;
  if (store_init(st, s, "spec", 4, &created, msg, sizeof msg) != FSPS_OK)
    fail_msg("store_init: %s", msg);
  return st;
}

static void test_page_names_and_waiting(void **state) {
  (void)state;
  server_config c = fx_config(5);
  store *st = open_store(&c);
  server_metrics *m = server_metrics_create(st, &c);
  fx_push_const(st, 0, 0, 0, 1.0f); /* workers 0, 2 and 3 of 5 pushed */
  fx_push_const(st, 0, 0, 2, 1.0f);
  fx_push_const(st, 0, 0, 3, 1.0f);
  char *j = server_page_json(m->page, NULL);
  contains(j, "\"servers\":1,\"workers\":5,\"mode\":\"bsp\"");
  contains(j, "\"model\":true,\"epoch\":0,");
  contains(j, "{\"index\":0,\"name\":\"\\u003cimg src=x onerror=alert(1)"
              "\\u003e\",\"version\":0,\"pending_step\":0,\"awaiting_values\":"
              "false,\"missing\":[1,4],\"absent\":[]}");
  contains(j, "{\"index\":1,\"name\":\"q\\\"uote\\\\s\\ufffd\",\"version\":0,"
              "\"pending_step\":0,\"awaiting_values\":false,\"missing\":"
              "[0,1,2,3,4],\"absent\":[]}");
  free(j);
  char *h = server_page_html(m->page, NULL);
  contains(h, "<title>fsps-server 0 of 1</title>");
  contains(h, "<td class=\"name\">&lt;img src=x onerror=alert(1)&gt;</td>");
  contains(h, "<td class=\"name\">q&quot;uote\\s\xef\xbf\xbd</td>");
  assert_null(strstr(h, "<img"));
  contains(h, "<td class=\"missing miss\">1, 4</td>");
  contains(h, "<td class=\"missing miss\">0\xe2\x80\x93"
              "4</td>");
  contains(h, "<p id=\"no-model\" hidden>");
  free(h);
  server_metrics_destroy(m);
  store_destroy(st);
}

/* rate reads "name":value from the JSON's "rates". */
static double rate(const char *json, const char *name) {
  char key[64];
  const char *r = strstr(json, "\"rates\":");
  snprintf(key, sizeof key, "\"%s\":", name);
  const char *at = r ? strstr(r, key) : NULL;
  if (at == NULL)
    fail_msg("no rate %s in %s", name, json);
  return strtod(at + strlen(key), NULL);
}

/* Rates come from the samples the main loop takes each second (the test
 * moves the store's clock instead of sleeping): since start at first,
 * then over the last ten. */
static void test_page_rates(void **state) {
  (void)state;
  server_config c = fx_config(1);
  store *st = store_create(&c);
  server_metrics *m = server_metrics_create(st, &c);
  metrics_add(m->pushes, 50);
  metrics_add(m->rx_bytes, 4000000);
  fx_skew += 10;
  server_metrics_tick(m);
  char *j = server_page_json(m->page, NULL);
  assert_true(fabs(rate(j, "push_calls") - 5) < 0.01);
  assert_true(fabs(rate(j, "received_bytes") - 400000) < 1000);
  assert_true(rate(j, "window_s") >= 10 && rate(j, "window_s") < 10.1);
  free(j);
  for (int i = 0; i < 10; i++) { /* the push falls out of the window */
    fx_skew += 1;
    server_metrics_tick(m);
  }
  j = server_page_json(m->page, NULL);
  assert_true(rate(j, "push_calls") == 0);
  assert_true(rate(j, "window_s") >= 9.9 && rate(j, "window_s") < 10.1);
  contains(j, "\"totals\":{\"push_calls\":50,");
  free(j);
  fx_skew = 0;
  server_metrics_destroy(m);
  store_destroy(st);
}

static void test_page_no_model_and_asp(void **state) {
  (void)state;
  server_config c = fx_config(2);
  c.mode = MODE_ASP;
  store *st = store_create(&c);
  server_metrics *m = server_metrics_create(st, &c);
  char *j = server_page_json(m->page, NULL);
  contains(j, "\"mode\":\"asp\"");
  contains(j, "\"model\":false");
  contains(j, "\"layers\":[]}");
  free(j);
  char *h = server_page_html(m->page, NULL);
  contains(h, "<p id=\"no-model\">No model declared yet");
  free(h);
  server_metrics_destroy(m);
  store_destroy(st);
  st = open_store(&c);
  m = server_metrics_create(st, &c);
  j = server_page_json(m->page, NULL); /* ASP: no step to wait for */
  contains(j, "\"pending_step\":null,\"awaiting_values\":false,"
              "\"missing\":[],\"absent\":[]}");
  free(j);
  server_metrics_destroy(m);
  store_destroy(st);
}

int store_page_tests(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_page_names_and_waiting),
      cmocka_unit_test(test_page_rates),
      cmocka_unit_test(test_page_no_model_and_asp),
  };
  return cmocka_run_group_tests_name("store_page", tests, NULL, NULL);
}
