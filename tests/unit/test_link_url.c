/* SPDX-License-Identifier: MIT */
/* link_url: start links signed with the shared secret, refused when
 * forged, for another address, expired, too long-lived or malformed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "link_url.h"
#include "xalloc.h"

#define NOW 1800000000LL
#define SECRET "test-link-secret"

static void verify_expect(const char *address, const char *exp, const char *sig,
                          enum link_url_verdict want)
{
  assert_int_equal(link_url_verify(SECRET, address, exp, sig, NOW), want);
}

static void test_sign_is_hmac_sha256_hex(void **state)
{
  char hex[LINK_URL_SIG_HEX + 1];

  /* What Nextal computes: Python's hmac.new(SECRET,
   * b"a@example.com\n1800000300", hashlib.sha256).hexdigest(). */
  assert_int_equal(link_url_sign(SECRET, "a@example.com", NOW + 300, hex), 0);
  assert_string_equal(
      hex, "b89195f37da09689390b99d73c42f48254a882fb929341a7e36f70a75efb81e5");
}

static void test_verdicts(void **state)
{
  char hex[LINK_URL_SIG_HEX + 1];
  char upper[LINK_URL_SIG_HEX + 1];
  char exp[32];

  snprintf(exp, sizeof(exp), "%lld", NOW + 300);
  assert_int_equal(link_url_sign(SECRET, "a@example.com", NOW + 300, hex), 0);
  verify_expect("a@example.com", exp, hex, LINK_URL_OK);
  for (size_t i = 0; i <= LINK_URL_SIG_HEX; i++)
    upper[i] = (char) (hex[i] >= 'a' && hex[i] <= 'f' ? hex[i] - 32 : hex[i]);
  verify_expect("a@example.com", exp, upper, LINK_URL_OK);

  verify_expect("b@example.com", exp, hex, LINK_URL_BAD_SIG);
  hex[10] = hex[10] == '0' ? '1' : '0';
  verify_expect("a@example.com", exp, hex, LINK_URL_BAD_SIG);
  assert_int_equal(link_url_verify("other", "a@example.com", exp, upper, NOW),
                   LINK_URL_BAD_SIG);

  /* The expiry as signed, not a number that merely equals it. */
  snprintf(exp, sizeof(exp), "0%lld", NOW + 300);
  verify_expect("a@example.com", exp, upper, LINK_URL_MALFORMED);
  verify_expect("a@example.com", "+1800000300", upper, LINK_URL_MALFORMED);
  verify_expect("a@example.com", "", upper, LINK_URL_MALFORMED);
  verify_expect("a@example.com", "1800000300", "abc", LINK_URL_MALFORMED);
  assert_int_equal(link_url_verify(NULL, "a@example.com", "1", upper, NOW),
                   LINK_URL_NO_SECRET);
}

static void test_expiry_window(void **state)
{
  char hex[LINK_URL_SIG_HEX + 1];
  char exp[32];
  const long long cases[][2] = {
    { NOW - 1, LINK_URL_EXPIRED },
    { NOW, LINK_URL_OK },
    { NOW + LINK_URL_MAX_AHEAD_S, LINK_URL_OK },
    { NOW + LINK_URL_MAX_AHEAD_S + 1, LINK_URL_TOO_FAR },
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
    snprintf(exp, sizeof(exp), "%lld", cases[i][0]);
    assert_int_equal(link_url_sign(SECRET, "a@example.com", cases[i][0], hex),
                     0);
    verify_expect("a@example.com", exp, hex,
                  (enum link_url_verdict) cases[i][1]);
  }
}

static void test_build_round_trips(void **state)
{
  struct config cfg;
  char *url = NULL;
  int64_t exp = 0;
  char sig[LINK_URL_SIG_HEX + 1];
  char exp_text[32];
  const char *p;

  config_defaults(&cfg);
  assert_int_equal(link_url_build(&cfg, "a@example.com", NOW, &url, &exp),
                   -ENOKEY);
  cfg.link_secret = xstrdup(SECRET);
  assert_int_equal(link_url_build(&cfg, "a@example.com", NOW, &url, &exp), 0);
  assert_int_equal(exp, NOW + LINK_URL_LIFETIME_S);
  assert_non_null(strstr(url, "http://127.0.0.1:8025/link/start?user="
                              "a%40example.com&exp="));
  p = strstr(url, "&sig=");
  assert_non_null(p);
  snprintf(sig, sizeof(sig), "%s", p + 5);
  snprintf(exp_text, sizeof(exp_text), "%lld", (long long) exp);
  verify_expect("a@example.com", exp_text, sig, LINK_URL_OK);
  free(url);
  config_free(&cfg);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_sign_is_hmac_sha256_hex),
    cmocka_unit_test(test_verdicts),
    cmocka_unit_test(test_expiry_window),
    cmocka_unit_test(test_build_round_trips),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
