/* test_logfmt.c: logfmt's JSON escaping of awkward strings (quotes,
 * backslashes, control characters, UTF-8 valid and not), cuts that never
 * split an escape or a character, fields, and whole log lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "logfmt.h"

static void expect_escape(const char *in, const char *want) {
  char out[256];
  size_t n = logfmt_escape(out, sizeof out, in);
  assert_string_equal(out, want);
  assert_int_equal(n, strlen(want));
}

static void escapes_json_specials(void **state) {
  (void)state;
  expect_escape("plain", "plain");
  expect_escape("", "");
  expect_escape("say \"hi\"", "say \\\"hi\\\"");
  expect_escape("C:\\dir\\", "C:\\\\dir\\\\");
  expect_escape("a\nb\tc\rd\be\ff", "a\\nb\\tc\\rd\\be\\ff");
  expect_escape("\x01\x1f\x7f", "\\u0001\\u001f\\u007f");
  expect_escape("\"\\\"", "\\\"\\\\\\\"");
  expect_escape("bnrtf", "bnrtf"); /* the letters of escapes stay letters */
}

static void passes_utf8_replaces_the_rest(void **state) {
  (void)state;
  expect_escape("h\xc3\xa9llo \xe2\x80\x94 \xe6\x97\xa5 \xf0\x9f\x98\x80",
                "h\xc3\xa9llo \xe2\x80\x94 \xe6\x97\xa5 \xf0\x9f\x98\x80");
  expect_escape("\xff", "\\ufffd");
  expect_escape("a\xc3", "a\\ufffd");          /* cut before its end */
  expect_escape("\xc0\xaf", "\\ufffd\\ufffd"); /* overlong '/' */
  expect_escape("\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd"); /* surrogate */
  expect_escape("\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd");
  expect_escape("\xe6\x97x", "\\ufffd\\ufffdx");
}

static void cuts_between_characters(void **state) {
  (void)state;
  char out[8];
  assert_int_equal(logfmt_escape(out, 4, "ab\"cd"), 2);
  assert_string_equal(out, "ab"); /* never half of \" */
  assert_int_equal(logfmt_escape(out, 3, "a\xc3\xa9"), 1);
  assert_string_equal(out, "a"); /* never half of an e-acute */
  assert_int_equal(logfmt_escape(out, 7, "\x01"), 6);
  assert_int_equal(logfmt_escape(out, 6, "\x01"), 0);
  assert_int_equal(logfmt_escape(out, 1, "abc"), 0);
  assert_string_equal(out, "");
}

static void builds_fields(void **state) {
  (void)state;
  logfmt_fields f;
  logfmt_fields_init(&f);
  assert_string_equal(f.buf, "");
  logfmt_field_str(&f, "path", "a\"b");
  logfmt_field_u64(&f, "step", UINT64_MAX);
  logfmt_field_num(&f, "loss", 0.25, 6);
  logfmt_field_num(&f, "nan", 0.0 / 0.0, 6);
  logfmt_field_num(&f, "inf", 1.0 / 0.0, 6);
  logfmt_field_str(&f, "none", NULL);
  assert_string_equal(f.buf, "\"path\":\"a\\\"b\",\"step\":18446744073709551615,"
                             "\"loss\":0.25,\"nan\":null,\"inf\":null,"
                             "\"none\":null");
  assert_false(f.truncated);
}

static void drops_a_field_that_does_not_fit(void **state) {
  (void)state;
  logfmt_fields f;
  char big[sizeof f.buf];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  logfmt_fields_init(&f);
  logfmt_field_u64(&f, "a", 1);
  logfmt_field_str(&f, "big", big);
  logfmt_field_u64(&f, "b", 2);
  assert_true(f.truncated);
  assert_string_equal(f.buf, "\"a\":1,\"b\":2");
}

/* check_line checks a line's frame: time, level, process, ident, the
 * message as given, fields, and the newline that ends it. */
static void check_line(const char *line, size_t n, const char *msg_json,
                       const char *fields_json) {
  int y, mo, d, h, mi, s, ms, used = 0;
  assert_int_equal(sscanf(line,
                          "{\"time\":\"%4d-%2d-%2dT%2d:%2d:%2d.%3dZ\",%n", &y,
                          &mo, &d, &h, &mi, &s, &ms, &used),
                   7);
  assert_int_equal(used, 35);
  char want[4096];
  snprintf(want, sizeof want,
           "\"level\":\"warn\",\"process\":\"fsps-worker\",\"rank\":3,"
           "\"message\":\"%s\",\"fields\":{%s}}\n",
           msg_json, fields_json);
  assert_string_equal(line + used, want);
  assert_int_equal(n, strlen(line));
}

static void formats_whole_lines(void **state) {
  (void)state;
  logfmt_fields id, f;
  logfmt_fields_init(&id);
  logfmt_field_u64(&id, "rank", 3);
  logfmt_fields_init(&f);
  logfmt_field_str(&f, "file", "/tmp/\"x\"\n");
  char line[2048];
  size_t n = logfmt_line(line, sizeof line, "warn", "fsps-worker", &id,
                         "cannot open \"/tmp/\\x\"\n\t\xff", &f);
  check_line(line, n, "cannot open \\\"/tmp/\\\\x\\\"\\n\\t\\ufffd",
             "\"file\":\"/tmp/\\\"x\\\"\\n\"");
  n = logfmt_line(line, sizeof line, "warn", "fsps-worker", &id, "", NULL);
  check_line(line, n, "", "");
}

static void cuts_a_long_message_keeps_the_frame(void **state) {
  (void)state;
  logfmt_fields id;
  logfmt_fields_init(&id);
  logfmt_field_u64(&id, "rank", 3);
  char msg[3000], line[1024];
  memset(msg, '"', sizeof msg - 1);
  msg[sizeof msg - 1] = '\0';
  size_t n = logfmt_line(line, sizeof line, "warn", "fsps-worker", &id, msg,
                         NULL);
  assert_true(n > 900 && n < sizeof line);
  assert_string_equal(line + n - 15, "\",\"fields\":{}}\n");
  char *m = strstr(line, "\"message\":\"") + 11;
  for (char *p = m; p < line + n - 15; p += 2) /* whole \" pairs only */
    assert_memory_equal(p, "\\\"", 2);
  assert_int_equal(logfmt_line(line, 40, "warn", "fsps-worker", &id, "x",
                               NULL),
                   0);
}

static void parses_formats(void **state) {
  (void)state;
  assert_int_equal(logfmt_parse_format("text"), LOGFMT_TEXT);
  assert_int_equal(logfmt_parse_format("json"), LOGFMT_JSON);
  assert_int_equal(logfmt_parse_format("JSON"), -1);
  assert_int_equal(logfmt_parse_format(""), -1);
}

static void formats_rfc3339_time(void **state) {
  (void)state;
  char t[40];
  size_t n = logfmt_time(t, sizeof t);
  assert_int_equal(n, 24);
  assert_int_equal(t[4], '-');
  assert_int_equal(t[10], 'T');
  assert_int_equal(t[19], '.');
  assert_int_equal(t[23], 'Z');
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(escapes_json_specials),
      cmocka_unit_test(passes_utf8_replaces_the_rest),
      cmocka_unit_test(cuts_between_characters),
      cmocka_unit_test(builds_fields),
      cmocka_unit_test(drops_a_field_that_does_not_fit),
      cmocka_unit_test(formats_whole_lines),
      cmocka_unit_test(cuts_a_long_message_keeps_the_frame),
      cmocka_unit_test(parses_formats),
      cmocka_unit_test(formats_rfc3339_time),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
