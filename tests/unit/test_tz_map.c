/* SPDX-License-Identifier: MIT */
/* Unit tests for tz_map: the TZIDs clients write resolve to the Windows
 * names Graph accepts, unknown zones are errors, VTIMEZONE rules match. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tz_map.h"

static void assert_windows(const char *tzid, const char *expected)
{
  char out[TZ_MAP_NAME_MAX];

  assert_int_equal(tz_map_to_windows(tzid, out, sizeof(out)), TZ_MAP_OK);
  assert_string_equal(out, expected);
}

static void test_iana_names(void **state)
{
  assert_windows("Europe/Berlin", "W. Europe Standard Time");
  assert_windows("America/Winnipeg", "Central Standard Time");
  assert_windows("America/New_York", "Eastern Standard Time");
  assert_windows("Europe/Kyiv", "FLE Standard Time");
}

static void test_aliases(void **state)
{
  assert_windows("Asia/Calcutta", "India Standard Time");
  assert_windows("Asia/Kolkata", "India Standard Time");
  assert_windows("US/Eastern", "Eastern Standard Time");
  assert_windows("US/Pacific", "Pacific Standard Time");
}

static void test_windows_names(void **state)
{
  assert_windows("W. Europe Standard Time", "W. Europe Standard Time");
  assert_windows("\"Pacific Standard Time\"", "Pacific Standard Time");
  assert_windows(" India Standard Time ", "India Standard Time");
}

static void test_prefixed(void **state)
{
  assert_windows("/mozilla.org/20070129_1/Europe/Berlin",
                 "W. Europe Standard Time");
  assert_windows("/freeassociation.sourceforge.net/Tzfile/America/Winnipeg",
                 "Central Standard Time");
  assert_windows("/citadel.org/20190914_1/Asia/Calcutta",
                 "India Standard Time");
}

static void test_utc(void **state)
{
  assert_windows("UTC", "UTC");
  assert_windows("Z", "UTC");
  assert_windows("Etc/UTC", "UTC");
  assert_windows("GMT", "UTC");
  assert_windows("tzone://Microsoft/Utc", "UTC");
}

static void test_unknown(void **state)
{
  char out[TZ_MAP_NAME_MAX] = "untouched";

  assert_int_equal(tz_map_to_windows("Mars/Olympus_Mons", out, sizeof(out)),
                   TZ_MAP_EUNKNOWN);
  assert_int_equal(tz_map_to_windows("Customized Time Zone", out, sizeof(out)),
                   TZ_MAP_EUNKNOWN);
  assert_int_equal(
      tz_map_to_windows("tzone://Microsoft/Custom", out, sizeof(out)),
      TZ_MAP_EUNKNOWN);
  assert_int_equal(tz_map_to_windows("", out, sizeof(out)), TZ_MAP_ENAME);
  assert_int_equal(tz_map_to_windows("Antarctica/Troll", out, sizeof(out)),
                   TZ_MAP_ENOWINDOWS);
}

static void test_small_buffer(void **state)
{
  char out[8];

  assert_int_equal(tz_map_to_windows("Europe/Berlin", out, sizeof(out)),
                   TZ_MAP_ENAME);
}

static void test_to_iana(void **state)
{
  char out[TZ_MAP_NAME_MAX];

  assert_int_equal(tz_map_to_iana("W. Europe Standard Time", out, sizeof(out)),
                   TZ_MAP_OK);
  assert_string_equal(out, "Europe/Berlin");
  assert_int_equal(tz_map_to_iana("US/Eastern", out, sizeof(out)), TZ_MAP_OK);
  assert_string_equal(out, "America/New_York");
  assert_int_equal(tz_map_to_iana("UTC", out, sizeof(out)), TZ_MAP_OK);
  assert_string_equal(out, "Etc/UTC");
  assert_int_equal(tz_map_to_iana("Nowhere Standard Time", out, sizeof(out)),
                   TZ_MAP_EUNKNOWN);
}

static void test_ical_zone(void **state)
{
  icaltimezone *zone;

  zone = tz_map_ical_zone("Central Standard Time");
  assert_non_null(zone);
  assert_string_equal(icaltimezone_get_location(zone), "America/Chicago");
  zone = tz_map_ical_zone("Asia/Kolkata");
  assert_non_null(zone);
  assert_string_equal(icaltimezone_get_location(zone), "Asia/Kolkata");
  assert_ptr_equal(tz_map_ical_zone("UTC"), icaltimezone_get_utc_timezone());
  assert_null(tz_map_ical_zone("Mars/Olympus_Mons"));
}

/* A VTIMEZONE as desktop Outlook writes it for Amsterdam/Berlin, under a
 * display-name TZID no table knows. */
static const char outlook_vtimezone[]
    = "BEGIN:VTIMEZONE\r\n"
      "TZID:(UTC+01:00) Amsterdam\\, Berlin\\, Bern\\, Rome\\, Stockholm\r\n"
      "BEGIN:STANDARD\r\n"
      "DTSTART:16010101T030000\r\n"
      "TZOFFSETFROM:+0200\r\n"
      "TZOFFSETTO:+0100\r\n"
      "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r\n"
      "END:STANDARD\r\n"
      "BEGIN:DAYLIGHT\r\n"
      "DTSTART:16010101T020000\r\n"
      "TZOFFSETFROM:+0100\r\n"
      "TZOFFSETTO:+0200\r\n"
      "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\n"
      "END:DAYLIGHT\r\n"
      "END:VTIMEZONE\r\n";

/* US Central rules under a name of the client's invention. */
static const char custom_central[]
    = "BEGIN:VTIMEZONE\r\n"
      "TZID:Customized Time Zone\r\n"
      "BEGIN:STANDARD\r\n"
      "DTSTART:16010101T020000\r\n"
      "TZOFFSETFROM:-0500\r\n"
      "TZOFFSETTO:-0600\r\n"
      "RRULE:FREQ=YEARLY;BYDAY=1SU;BYMONTH=11\r\n"
      "END:STANDARD\r\n"
      "BEGIN:DAYLIGHT\r\n"
      "DTSTART:16010101T020000\r\n"
      "TZOFFSETFROM:-0600\r\n"
      "TZOFFSETTO:-0500\r\n"
      "RRULE:FREQ=YEARLY;BYDAY=2SU;BYMONTH=3\r\n"
      "END:DAYLIGHT\r\n"
      "END:VTIMEZONE\r\n";

/* Offsets no real zone has. */
static const char custom_bogus[] = "BEGIN:VTIMEZONE\r\n"
                                   "TZID:Bogus\r\n"
                                   "BEGIN:STANDARD\r\n"
                                   "DTSTART:16010101T000000\r\n"
                                   "TZOFFSETFROM:+0117\r\n"
                                   "TZOFFSETTO:+0117\r\n"
                                   "END:STANDARD\r\n"
                                   "END:VTIMEZONE\r\n";

static void assert_vtimezone(const char *text, int expected_rc,
                             const char *expected)
{
  icalcomponent *vtz = icalparser_parse_string(text);
  char out[TZ_MAP_NAME_MAX];

  assert_non_null(vtz);
  assert_int_equal(tz_map_match_vtimezone(vtz, 2026, out, sizeof(out)),
                   expected_rc);
  if (expected)
    assert_string_equal(out, expected);
  icalcomponent_free(vtz);
}

static void test_match_vtimezone(void **state)
{
  /* Amsterdam is named in the TZID and maps to W. Europe Standard Time,
   * although Romance or Central Europe Standard Time share the rules. */
  assert_vtimezone(outlook_vtimezone, TZ_MAP_OK, "W. Europe Standard Time");
  assert_vtimezone(custom_central, TZ_MAP_OK, "Central Standard Time");
  assert_vtimezone(custom_bogus, TZ_MAP_EUNKNOWN, NULL);
}

/* A VTIMEZONE with no STANDARD or DAYLIGHT has no offsets: libical reads it
 * as UTC, which must not match a zone that happens to be UTC all year
 * (Africa/Sao_Tome), nor does an X-LIC-LOCATION make it a zone. */
static void test_match_vtimezone_empty(void **state)
{
  static const char empty[] = "BEGIN:VTIMEZONE\r\n"
                              "TZID:Empty\r\n"
                              "END:VTIMEZONE\r\n";
  static const char located[] = "BEGIN:VTIMEZONE\r\n"
                                "TZID:Empty\r\n"
                                "X-LIC-LOCATION:Europe/Berlin\r\n"
                                "END:VTIMEZONE\r\n";
  icalcomponent *vtz = icalparser_parse_string(empty);

  assert_false(tz_map_vtimezone_has_rules(vtz));
  icalcomponent_free(vtz);
  vtz = icalparser_parse_string(outlook_vtimezone);
  assert_true(tz_map_vtimezone_has_rules(vtz));
  icalcomponent_free(vtz);
  assert_vtimezone(empty, TZ_MAP_EUNKNOWN, NULL);
  assert_vtimezone(located, TZ_MAP_EUNKNOWN, NULL);
}

static void test_match_x_lic_location(void **state)
{
  static const char text[] = "BEGIN:VTIMEZONE\r\n"
                             "TZID:/example.org/zone-17\r\n"
                             "X-LIC-LOCATION:Asia/Tokyo\r\n"
                             "BEGIN:STANDARD\r\n"
                             "DTSTART:19700101T000000\r\n"
                             "TZOFFSETFROM:+0900\r\n"
                             "TZOFFSETTO:+0900\r\n"
                             "END:STANDARD\r\n"
                             "END:VTIMEZONE\r\n";

  assert_vtimezone(text, TZ_MAP_OK, "Tokyo Standard Time");
}

static int teardown_zones(void **state)
{
  icaltimezone_free_builtin_timezones();
  return 0;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_iana_names),
    cmocka_unit_test(test_aliases),
    cmocka_unit_test(test_windows_names),
    cmocka_unit_test(test_prefixed),
    cmocka_unit_test(test_utc),
    cmocka_unit_test(test_unknown),
    cmocka_unit_test(test_small_buffer),
    cmocka_unit_test(test_to_iana),
    cmocka_unit_test(test_ical_zone),
    cmocka_unit_test(test_match_vtimezone),
    cmocka_unit_test(test_match_vtimezone_empty),
    cmocka_unit_test(test_match_x_lic_location),
  };

  return cmocka_run_group_tests(tests, NULL, teardown_zones);
}
