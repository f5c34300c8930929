/* SPDX-License-Identifier: MIT */
/* Unit tests for send_pacer: the per-minute and per-day windows make a
 * mailbox wait exactly as long as needed, refunds give a slot back, and
 * one mailbox's pace never touches another's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "send_pacer.h"

#define T0 ((int64_t) 1800000000000) /* a fixed "now", ms */
#define MIN 60000
#define DAY (24 * 60 * MIN)

static const char alice[] = "alice@contoso.example";
static const char bob[] = "bob@contoso.example";

static void test_minute_window(void **state)
{
  struct send_pacer *p = send_pacer_new(3, 0);

  (void) state;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(send_pacer_wait(p, alice, 1, T0 + i * 1000), 0);
    send_pacer_start(p, alice, 1, T0 + i * 1000);
  }
  /* The fourth waits until the first start is a minute old. */
  assert_int_equal(send_pacer_wait(p, alice, 1, T0 + 5000), MIN - 5000);
  assert_int_equal(send_pacer_wait(p, alice, 1, T0 + MIN - 1), 1);
  assert_int_equal(send_pacer_wait(p, alice, 1, T0 + MIN), 0);
  send_pacer_start(p, alice, 1, T0 + MIN);
  /* The second start (T0 + 1 s) is next to leave. */
  assert_int_equal(send_pacer_wait(p, alice, 1, T0 + MIN), 1000);
  send_pacer_free(p);
}

static void test_mailboxes_are_independent(void **state)
{
  struct send_pacer *p = send_pacer_new(2, 100);

  (void) state;
  send_pacer_start(p, alice, 1, T0);
  send_pacer_start(p, alice, 1, T0);
  assert_true(send_pacer_wait(p, alice, 1, T0) > 0);
  assert_int_equal(send_pacer_wait(p, bob, 1, T0), 0);
  assert_int_equal(send_pacer_wait(p, "never@contoso.example", 50, T0), 0);
  send_pacer_free(p);
}

static void test_refund(void **state)
{
  struct send_pacer *p = send_pacer_new(2, 10);

  (void) state;
  send_pacer_start(p, alice, 5, T0);
  send_pacer_start(p, alice, 5, T0 + 10);
  assert_true(send_pacer_wait(p, alice, 1, T0 + 20) > 0);
  /* Graph said 429 to the second: it did not count. */
  send_pacer_refund(p, alice, 5, T0 + 10);
  assert_int_equal(send_pacer_wait(p, alice, 5, T0 + 20), 0);
  assert_true(send_pacer_wait(p, alice, 6, T0 + 20) > 0);
  /* An unknown start changes nothing. */
  send_pacer_refund(p, alice, 5, T0 - 12345);
  assert_true(send_pacer_wait(p, alice, 6, T0 + 20) > 0);
  send_pacer_free(p);
}

static void test_day_window(void **state)
{
  struct send_pacer *p = send_pacer_new(0, 10);
  int64_t wait;

  (void) state;
  send_pacer_start(p, alice, 4, T0);
  send_pacer_start(p, alice, 6, T0 + 2 * 3600 * 1000);
  assert_int_equal(send_pacer_wait(p, alice, 0, T0 + 3 * 3600 * 1000), 0);
  /* One more recipient must wait for the first four to be a day old
   * (to the minute, never earlier). */
  wait = send_pacer_wait(p, alice, 1, T0 + 3 * 3600 * 1000);
  assert_true(wait >= DAY - 3 * 3600 * 1000);
  assert_true(wait <= DAY - 3 * 3600 * 1000 + 2 * MIN);
  assert_int_equal(send_pacer_wait(p, alice, 4, T0 + DAY + 2 * MIN), 0);
  assert_true(send_pacer_wait(p, alice, 5, T0 + DAY + 2 * MIN) > 0);
  /* Two days on, everything has left the window. */
  assert_int_equal(send_pacer_wait(p, alice, 10, T0 + 2 * DAY + 3 * MIN), 0);
  send_pacer_free(p);
}

static void test_oversized_message_goes_alone(void **state)
{
  struct send_pacer *p = send_pacer_new(0, 10);

  (void) state;
  /* More recipients than a day allows: it waits for an empty window
   * rather than forever. */
  assert_int_equal(send_pacer_wait(p, alice, 50, T0), 0);
  send_pacer_start(p, alice, 50, T0);
  assert_true(send_pacer_wait(p, alice, 1, T0 + MIN) > 0);
  send_pacer_free(p);
}

static void test_limits_off(void **state)
{
  struct send_pacer *p = send_pacer_new(0, 0);

  (void) state;
  for (int i = 0; i < 1000; i++)
    send_pacer_start(p, alice, 500, T0);
  assert_int_equal(send_pacer_wait(p, alice, 500, T0), 0);
  send_pacer_free(p);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_minute_window),
    cmocka_unit_test(test_mailboxes_are_independent),
    cmocka_unit_test(test_refund),
    cmocka_unit_test(test_day_window),
    cmocka_unit_test(test_oversized_message_goes_alone),
    cmocka_unit_test(test_limits_off),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
