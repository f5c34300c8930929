/* SPDX-License-Identifier: MIT */
/* Unit tests for ical_graph: what Nextal writes over CalDAV reaches Graph as
 * the meeting it meant, what Graph holds reads back as iCalendar, and what
 * Graph cannot express is refused with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libical/ical.h>

#include "ical_graph.h"
#include "xalloc.h"

#define USER "recruiter@example.com"

static const struct ical_graph_options berlin = {
  .user = USER,
  .default_zone = "Europe/Berlin",
};

static char *data_load(const char *name)
{
  const char *dir = getenv("NX_TEST_DATA");
  char *path, *buf;
  FILE *f;
  long len;

  assert_non_null(dir);
  path = xasprintf("%s/ical/%s", dir, name);
  f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  len = ftell(f);
  assert_true(len > 0);
  rewind(f);
  buf = xmalloc((size_t) len + 1);
  assert_int_equal(fread(buf, 1, (size_t) len, f), (size_t) len);
  buf[len] = '\0';
  fclose(f);
  free(path);
  return buf;
}

static json_t *json_load_data(const char *name)
{
  char *text = data_load(name);
  json_error_t jerr;
  json_t *j = json_loads(text, 0, &jerr);

  free(text);
  assert_non_null(j);
  return j;
}

/* Follows "a.b.0.c" through objects and arrays. */
static json_t *jpath(json_t *j, const char *path)
{
  char *copy = xstrdup(path), *save = NULL, *key;

  for (key = strtok_r(copy, ".", &save); key && j;
       key = strtok_r(NULL, ".", &save)) {
    char *end;
    long idx = strtol(key, &end, 10);

    j = json_is_array(j) && *end == '\0' ? json_array_get(j, (size_t) idx)
                                         : json_object_get(j, key);
  }
  free(copy);
  return j;
}

static void assert_jstr(json_t *j, const char *path, const char *expected)
{
  const char *got = json_string_value(jpath(j, path));

  if (!got)
    fail_msg("%s: missing", path);
  assert_string_equal(got, expected);
}

static void assert_jint(json_t *j, const char *path, long long expected)
{
  assert_true(json_is_integer(jpath(j, path)));
  assert_int_equal(json_integer_value(jpath(j, path)), expected);
}

/* A VCALENDAR around one VEVENT with the given extra lines. */
static char *vevent(const char *lines)
{
  return xasprintf("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n"
                   "BEGIN:VEVENT\r\nUID:inline@nextal\r\n"
                   "DTSTAMP:20260101T120000Z\r\nSUMMARY:Inline\r\n%s"
                   "END:VEVENT\r\nEND:VCALENDAR\r\n",
                   lines);
}

static int translate_inline(const char *lines,
                            const struct ical_graph_options *opt,
                            struct ical_graph_result *res)
{
  char *text = vevent(lines);
  int rc = ical_graph_from_ical(text, strlen(text), opt, res);

  free(text);
  return rc;
}

static int translate_file(const char *name, struct ical_graph_result *res)
{
  char *text = data_load(name);
  int rc = ical_graph_from_ical(text, strlen(text), &berlin, res);

  free(text);
  return rc;
}

static void test_simple_event(void **state)
{
  struct ical_graph_result res;
  json_t *ev;

  assert_int_equal(translate_file("simple.ics", &res), ICAL_GRAPH_OK);
  ev = res.event;
  assert_jstr(ev, "subject", "Interview: Jane Doe, backend engineer");
  assert_jstr(ev, "body.contentType", "text");
  assert_jstr(ev, "body.content", "Second round.\nBring the CV.");
  assert_jstr(ev, "location.displayName", "Room 4.12");
  assert_jstr(ev, "start.dateTime", "2026-12-03T09:00:00");
  assert_jstr(ev, "start.timeZone", "W. Europe Standard Time");
  assert_jstr(ev, "end.dateTime", "2026-12-03T10:00:00");
  assert_true(json_is_false(jpath(ev, "isAllDay")));
  assert_jstr(ev, "sensitivity", "private");
  assert_jstr(ev, "showAs", "free");
  assert_jstr(ev, "categories.0", "Interview");
  assert_jstr(ev, "categories.1", "Onsite");
  assert_true(json_is_true(jpath(ev, "isReminderOn")));
  assert_jint(ev, "reminderMinutesBeforeStart", 15);
  assert_jstr(ev, "attendees.0.emailAddress.address", "jane@example.org");
  assert_null(jpath(ev, "recurrence"));
  assert_null(jpath(ev, "isOnlineMeeting"));
  assert_false(res.cancelled);
  assert_string_equal(res.uid, "simple-1@nextal");
  /* sha256("simple-1@nextal"): the same UID always gives the same id. */
  assert_string_equal(res.transaction_id,
                      "nextal-379b2ef034842cf4805913d59444a2f7"
                      "90563c4f4b1e3f4aa2579f4479726119");
  ical_graph_result_free(&res);
}

static void test_all_day(void **state)
{
  struct ical_graph_result res;

  assert_int_equal(translate_inline("DTSTART;VALUE=DATE:20261203\r\n"
                                    "DTEND;VALUE=DATE:20261205\r\n",
                                    &berlin, &res),
                   ICAL_GRAPH_OK);
  assert_true(json_is_true(jpath(res.event, "isAllDay")));
  assert_jstr(res.event, "start.dateTime", "2026-12-03T00:00:00");
  assert_jstr(res.event, "end.dateTime", "2026-12-05T00:00:00");
  assert_jstr(res.event, "start.timeZone", "W. Europe Standard Time");
  ical_graph_result_free(&res);

  /* Without DTEND a date lasts one day (RFC 5545 3.6.1). */
  assert_int_equal(
      translate_inline("DTSTART;VALUE=DATE:20261231\r\n", &berlin, &res),
      ICAL_GRAPH_OK);
  assert_jstr(res.event, "end.dateTime", "2027-01-01T00:00:00");
  ical_graph_result_free(&res);
}

static void test_attendee_roles(void **state)
{
  struct ical_graph_result res;
  json_t *a;

  assert_int_equal(translate_file("attendees.ics", &res), ICAL_GRAPH_OK);
  a = jpath(res.event, "attendees");
  /* The organizer is not invited to their own meeting; the candidate whom
   * Nextal invites itself (SCHEDULE-AGENT=CLIENT) is left to Nextal. */
  assert_int_equal(json_array_size(a), 4);
  assert_jstr(a, "0.emailAddress.address", "jane@example.org");
  assert_jstr(a, "0.emailAddress.name", "Jane Doe");
  assert_jstr(a, "0.type", "required");
  assert_jstr(a, "1.emailAddress.address", "observer@example.com");
  assert_jstr(a, "1.type", "optional");
  assert_jstr(a, "2.type", "resource");
  assert_jstr(a, "2.emailAddress.name", "Room 4.12");
  assert_jstr(a, "3.type", "resource");
  assert_int_equal(json_array_size(res.client_scheduled), 1);
  assert_jstr(res.client_scheduled, "0", "candidate@example.net");
  assert_jstr(res.event, "start.timeZone", "UTC");
  ical_graph_result_free(&res);
}

/* The master's client-scheduled attendees stay out of Graph but are kept,
 * each as its whole line, for the caller to remember; those of overridden
 * occurrences are not, and the kept ones are bounded. */
static void test_client_attendees_kept(void **state)
{
  static const char long_cn[]
      = "ATTENDEE;SCHEDULE-AGENT=NONE;CN=Alexandra Konstantinopoulou-"
        "Papadimitriou;ROLE=OPT-PARTICIPANT;PARTSTAT=ACCEPTED:mailto:ale"
        "xandra.konstantinopoulou@candidates.example.net";
  struct ical_graph_result res;
  char *lines, *text;

  assert_int_equal(translate_file("attendees.ics", &res), ICAL_GRAPH_OK);
  assert_int_equal(json_array_size(res.client_attendees), 1);
  assert_jstr(res.client_attendees, "0",
              "ATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:candidate@example.net");
  ical_graph_result_free(&res);

  /* A line libical folds comes back whole, parameters in their order. */
  lines = xasprintf("DTSTART:20261203T090000Z\r\n%.74s\r\n %s\r\n", long_cn,
                    long_cn + 74);
  assert_int_equal(translate_inline(lines, &berlin, &res), ICAL_GRAPH_OK);
  free(lines);
  assert_int_equal(json_array_size(jpath(res.event, "attendees")), 0);
  assert_jstr(res.client_attendees, "0", long_cn);
  ical_graph_result_free(&res);

  /* A plain object has none; an override's are left out of Graph only. */
  assert_int_equal(translate_file("simple.ics", &res), ICAL_GRAPH_OK);
  assert_int_equal(json_array_size(res.client_attendees), 0);
  ical_graph_result_free(&res);
  text = xasprintf(
      "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n"
      "BEGIN:VEVENT\r\nUID:o@nextal\r\nDTSTAMP:20260101T120000Z\r\n"
      "DTSTART:20261201T090000Z\r\nRRULE:FREQ=WEEKLY;COUNT=3\r\n"
      "ATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:a@example.net\r\n"
      "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:o@nextal\r\n"
      "DTSTAMP:20260101T120000Z\r\nRECURRENCE-ID:20261208T090000Z\r\n"
      "DTSTART:20261208T100000Z\r\n"
      "ATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:b@example.net\r\n"
      "END:VEVENT\r\nEND:VCALENDAR\r\n");
  assert_int_equal(ical_graph_from_ical(text, strlen(text), &berlin, &res),
                   ICAL_GRAPH_OK);
  free(text);
  assert_int_equal(json_array_size(res.client_scheduled), 2);
  assert_int_equal(json_array_size(res.client_attendees), 1);
  assert_jstr(res.client_attendees, "0",
              "ATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:a@example.net");
  assert_int_equal(json_array_size(jpath(res.overrides, "0.event.attendees")),
                   0);
  ical_graph_result_free(&res);

  /* One more than ICAL_GRAPH_CLIENT_ATTENDEES_MAX is refused. */
  lines = xstrdup("DTSTART:20261203T090000Z\r\n");
  for (int i = 0; i <= ICAL_GRAPH_CLIENT_ATTENDEES_MAX; i++) {
    char *more = xasprintf("%sATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:c%d@"
                           "example.net\r\n",
                           lines, i);

    free(lines);
    lines = more;
  }
  assert_int_equal(translate_inline(lines, &berlin, &res), ICAL_GRAPH_ELIMIT);
  assert_non_null(strstr(res.error, "more than 16 attendees with "
                                    "SCHEDULE-AGENT=CLIENT or NONE"));
  free(lines);
  ical_graph_result_free(&res);

  /* So is more than ICAL_GRAPH_CLIENT_TEXT_MAX bytes of them. */
  lines = xstrdup("DTSTART:20261203T090000Z\r\n");
  for (int i = 0; i < 12; i++) {
    char *more = xasprintf("%sATTENDEE;SCHEDULE-AGENT=CLIENT;CN=%0350d:"
                           "mailto:d%d@example.net\r\n",
                           lines, 0, i);

    free(lines);
    lines = more;
  }
  assert_int_equal(translate_inline(lines, &berlin, &res), ICAL_GRAPH_ELIMIT);
  assert_non_null(strstr(res.error, "4096 bytes"));
  free(lines);
  ical_graph_result_free(&res);
}

static void test_windows_tzid(void **state)
{
  struct ical_graph_result res;

  assert_int_equal(translate_file("outlook_windows_tzid.ics", &res),
                   ICAL_GRAPH_OK);
  assert_jstr(res.event, "start.timeZone", "W. Europe Standard Time");
  assert_jstr(res.event, "start.dateTime", "2026-10-27T14:00:00");
  /* A Windows name is remembered as written, to come back under it. */
  assert_string_equal(res.start_tzid, "W. Europe Standard Time");
  assert_string_equal(res.end_tzid, "W. Europe Standard Time");
  ical_graph_result_free(&res);
}

static void test_winnipeg_without_vtimezone(void **state)
{
  struct ical_graph_result res;

  /* A known IANA name needs no VTIMEZONE; DURATION gives the end. */
  assert_int_equal(
      translate_inline("DTSTART;TZID=America/Winnipeg:20261031T150000\r\n"
                       "DURATION:PT45M\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  assert_jstr(res.event, "start.timeZone", "Central Standard Time");
  assert_jstr(res.event, "end.dateTime", "2026-10-31T15:45:00");
  assert_jstr(res.event, "end.timeZone", "Central Standard Time");
  /* The zone the client wrote, for the caller to remember: Graph only
   * keeps the Windows zone, which America/Chicago shares. */
  assert_string_equal(res.start_tzid, "America/Winnipeg");
  assert_string_equal(res.end_tzid, "America/Winnipeg");
  ical_graph_result_free(&res);

  assert_int_equal(
      translate_inline("DTSTART;TZID=America/Winnipeg:20261031T150000\r\n"
                       "DTEND;TZID=America/New_York:20261031T170000\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  assert_string_equal(res.start_tzid, "America/Winnipeg");
  assert_string_equal(res.end_tzid, "America/New_York");
  ical_graph_result_free(&res);
}

static void test_alias_calcutta(void **state)
{
  struct ical_graph_result res;

  assert_int_equal(
      translate_inline("DTSTART;TZID=Asia/Calcutta:20261203T150000\r\n"
                       "DTEND;TZID=Asia/Calcutta:20261203T160000\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  assert_jstr(res.event, "start.timeZone", "India Standard Time");
  ical_graph_result_free(&res);
}

static void test_unknown_tzid(void **state)
{
  struct ical_graph_result res;

  assert_int_equal(
      translate_inline("DTSTART;TZID=Mars/Olympus_Mons:20261203T150000\r\n",
                       &berlin, &res),
      ICAL_GRAPH_ETZ);
  assert_non_null(strstr(res.error, "Mars/Olympus_Mons"));
  assert_null(res.event);
  ical_graph_result_free(&res);
}

static void test_custom_tzid_matched_by_rules(void **state)
{
  static const char text[]
      = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n"
        "BEGIN:VTIMEZONE\r\nTZID:Customized Time Zone\r\n"
        "BEGIN:STANDARD\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:-0500\r\n"
        "TZOFFSETTO:-0600\r\nRRULE:FREQ=YEARLY;BYDAY=1SU;BYMONTH=11\r\n"
        "END:STANDARD\r\nBEGIN:DAYLIGHT\r\nDTSTART:16010101T020000\r\n"
        "TZOFFSETFROM:-0600\r\nTZOFFSETTO:-0500\r\n"
        "RRULE:FREQ=YEARLY;BYDAY=2SU;BYMONTH=3\r\nEND:DAYLIGHT\r\n"
        "END:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:custom@nextal\r\n"
        "DTSTAMP:20260101T120000Z\r\n"
        "DTSTART;TZID=Customized Time Zone:20261203T150000\r\n"
        "DTEND;TZID=Customized Time Zone:20261203T160000\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n";
  struct ical_graph_result res;

  assert_int_equal(ical_graph_from_ical(text, strlen(text), &berlin, &res),
                   ICAL_GRAPH_OK);
  assert_jstr(res.event, "start.timeZone", "Central Standard Time");
  ical_graph_result_free(&res);
}

static void test_floating_and_utc(void **state)
{
  struct ical_graph_options nodefault = { .user = USER };
  struct ical_graph_result res;

  assert_int_equal(translate_inline("DTSTART:20261203T090000\r\n"
                                    "DTEND:20261203T100000\r\n",
                                    &berlin, &res),
                   ICAL_GRAPH_OK);
  assert_jstr(res.event, "start.timeZone", "W. Europe Standard Time");
  assert_jstr(res.event, "start.dateTime", "2026-12-03T09:00:00");
  /* A floating time was written in no zone: nothing to remember. */
  assert_string_equal(res.start_tzid, "");
  assert_string_equal(res.end_tzid, "");
  ical_graph_result_free(&res);

  /* Without a default zone the caller is told so, to find one. */
  assert_int_equal(
      translate_inline("DTSTART:20261203T090000\r\n", &nodefault, &res),
      ICAL_GRAPH_ENOZONE);
  assert_non_null(strstr(res.error, "DTSTART is a floating time"));
  ical_graph_result_free(&res);
  assert_int_equal(
      translate_inline("DTSTART;VALUE=DATE:20261203\r\n", &nodefault, &res),
      ICAL_GRAPH_ENOZONE);
  assert_non_null(strstr(res.error, "DTSTART is a date"));
  ical_graph_result_free(&res);

  assert_int_equal(translate_inline("DTSTART:20261203T090000Z\r\n"
                                    "DTEND:20261203T100000Z\r\n",
                                    &nodefault, &res),
                   ICAL_GRAPH_OK);
  assert_jstr(res.event, "start.timeZone", "UTC");
  assert_jstr(res.event, "end.dateTime", "2026-12-03T10:00:00");
  assert_string_equal(res.start_tzid, "");
  ical_graph_result_free(&res);
}

/* An all-day series' occurrences start at midnight in the default zone;
 * Graph keys them by that instant in UTC. */
static void test_all_day_series_exdate(void **state)
{
  struct ical_graph_result res;

  assert_int_equal(translate_inline("DTSTART;VALUE=DATE:20261203\r\n"
                                    "RRULE:FREQ=WEEKLY;COUNT=3\r\n"
                                    "EXDATE;VALUE=DATE:20261210\r\n",
                                    &berlin, &res),
                   ICAL_GRAPH_OK);
  assert_jstr(res.event, "recurrence.range.recurrenceTimeZone",
              "W. Europe Standard Time");
  assert_int_equal(json_array_size(res.exdates), 1);
  assert_jstr(res.exdates, "0.dateTime", "2026-12-09T23:00:00");
  assert_jstr(res.exdates, "0.timeZone", "UTC");
  ical_graph_result_free(&res);
}

static void test_weekly_byday_count(void **state)
{
  struct ical_graph_result res;
  json_t *rec;

  assert_int_equal(
      translate_inline("DTSTART;TZID=Europe/Berlin:20260303T090000\r\n"
                       "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH;COUNT=6\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  rec = jpath(res.event, "recurrence");
  assert_jstr(rec, "pattern.type", "weekly");
  assert_jint(rec, "pattern.interval", 2);
  assert_jstr(rec, "pattern.daysOfWeek.0", "tuesday");
  assert_jstr(rec, "pattern.daysOfWeek.1", "thursday");
  assert_jstr(rec, "pattern.firstDayOfWeek", "monday");
  assert_jstr(rec, "range.type", "numbered");
  assert_jint(rec, "range.numberOfOccurrences", 6);
  assert_jstr(rec, "range.startDate", "2026-03-03");
  assert_jstr(rec, "range.recurrenceTimeZone", "W. Europe Standard Time");
  ical_graph_result_free(&res);
}

static void test_monthly_relative(void **state)
{
  struct ical_graph_result res;
  json_t *rec;

  /* 2026-03-10 is the second Tuesday of March. */
  assert_int_equal(
      translate_inline("DTSTART;TZID=Europe/Berlin:20260310T090000\r\n"
                       "RRULE:FREQ=MONTHLY;BYDAY=2TU\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  rec = jpath(res.event, "recurrence");
  assert_jstr(rec, "pattern.type", "relativeMonthly");
  assert_jstr(rec, "pattern.index", "second");
  assert_jstr(rec, "pattern.daysOfWeek.0", "tuesday");
  assert_jstr(rec, "range.type", "noEnd");
  ical_graph_result_free(&res);

  /* The last weekday of the month. */
  assert_int_equal(
      translate_inline(
          "DTSTART;TZID=Europe/Berlin:20260331T090000\r\n"
          "RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1\r\n",
          &berlin, &res),
      ICAL_GRAPH_OK);
  rec = jpath(res.event, "recurrence");
  assert_jstr(rec, "pattern.index", "last");
  assert_int_equal(json_array_size(jpath(rec, "pattern.daysOfWeek")), 5);
  ical_graph_result_free(&res);
}

static void test_yearly(void **state)
{
  struct ical_graph_result res;
  json_t *rec;

  assert_int_equal(
      translate_inline("DTSTART;TZID=Europe/Berlin:20260415T090000\r\n"
                       "RRULE:FREQ=YEARLY\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  rec = jpath(res.event, "recurrence");
  assert_jstr(rec, "pattern.type", "absoluteYearly");
  assert_jint(rec, "pattern.month", 4);
  assert_jint(rec, "pattern.dayOfMonth", 15);
  ical_graph_result_free(&res);

  /* 2026-11-26 is the fourth Thursday of November. */
  assert_int_equal(
      translate_inline("DTSTART;TZID=Europe/Berlin:20261126T090000\r\n"
                       "RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  rec = jpath(res.event, "recurrence");
  assert_jstr(rec, "pattern.type", "relativeYearly");
  assert_jint(rec, "pattern.month", 11);
  assert_jstr(rec, "pattern.index", "fourth");
  assert_jstr(rec, "pattern.daysOfWeek.0", "thursday");
  ical_graph_result_free(&res);
}

/* Monthly by date: BYMONTHDAY, or the day of DTSTART when the rule names
 * none, is Graph's absoluteMonthly; the yearly forms name their month. */
static void test_monthly_and_yearly_by_date(void **state)
{
  struct ical_graph_result res;
  json_t *rec;

  assert_int_equal(
      translate_inline(
          "DTSTART;TZID=Europe/Berlin:20260115T090000\r\n"
          "RRULE:FREQ=MONTHLY;INTERVAL=2;BYMONTHDAY=15;COUNT=3\r\n",
          &berlin, &res),
      ICAL_GRAPH_OK);
  rec = jpath(res.event, "recurrence");
  assert_jstr(rec, "pattern.type", "absoluteMonthly");
  assert_jint(rec, "pattern.interval", 2);
  assert_jint(rec, "pattern.dayOfMonth", 15);
  assert_null(jpath(rec, "pattern.daysOfWeek"));
  assert_jstr(rec, "range.type", "numbered");
  assert_jint(rec, "range.numberOfOccurrences", 3);
  assert_jstr(rec, "range.startDate", "2026-01-15");
  ical_graph_result_free(&res);

  assert_int_equal(
      translate_inline("DTSTART;TZID=Europe/Berlin:20260128T090000\r\n"
                       "RRULE:FREQ=MONTHLY\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  rec = jpath(res.event, "recurrence");
  assert_jstr(rec, "pattern.type", "absoluteMonthly");
  assert_jint(rec, "pattern.interval", 1);
  assert_jint(rec, "pattern.dayOfMonth", 28);
  assert_jstr(rec, "range.type", "noEnd");
  ical_graph_result_free(&res);

  /* A BYMONTHDAY that DTSTART is not on would move the series' start. */
  assert_int_equal(
      translate_inline("DTSTART;TZID=Europe/Berlin:20260103T090000\r\n"
                       "RRULE:FREQ=MONTHLY;BYMONTHDAY=15\r\n",
                       &berlin, &res),
      ICAL_GRAPH_ERRULE);
  assert_non_null(strstr(res.error, "not an occurrence"));
  ical_graph_result_free(&res);

  assert_int_equal(
      translate_inline("DTSTART;TZID=Europe/Berlin:20260415T090000\r\n"
                       "RRULE:FREQ=YEARLY;BYMONTH=4;BYMONTHDAY=15;COUNT=5\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  rec = jpath(res.event, "recurrence");
  assert_jstr(rec, "pattern.type", "absoluteYearly");
  assert_jint(rec, "pattern.interval", 1);
  assert_jint(rec, "pattern.month", 4);
  assert_jint(rec, "pattern.dayOfMonth", 15);
  assert_jint(rec, "range.numberOfOccurrences", 5);
  ical_graph_result_free(&res);

  /* The fourth Thursday of November, written with BYSETPOS. */
  assert_int_equal(
      translate_inline("DTSTART;TZID=Europe/Berlin:20261126T090000\r\n"
                       "RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=TH;BYSETPOS=4\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  rec = jpath(res.event, "recurrence");
  assert_jstr(rec, "pattern.type", "relativeYearly");
  assert_jint(rec, "pattern.month", 11);
  assert_jstr(rec, "pattern.index", "fourth");
  assert_jstr(rec, "pattern.daysOfWeek.0", "thursday");
  assert_int_equal(json_array_size(jpath(rec, "pattern.daysOfWeek")), 1);
  ical_graph_result_free(&res);
}

static void test_until_end_date(void **state)
{
  struct ical_graph_result res;

  /* 09:00 in Berlin is 07:00Z after 29 March. An UNTIL one second before
   * the 31 March occurrence excludes it: Graph's last date is 30 March. */
  assert_int_equal(
      translate_inline("DTSTART;TZID=Europe/Berlin:20260303T090000\r\n"
                       "RRULE:FREQ=DAILY;UNTIL=20260331T065959Z\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  assert_jstr(res.event, "recurrence.range.type", "endDate");
  assert_jstr(res.event, "recurrence.range.endDate", "2026-03-30");
  assert_jstr(res.event, "recurrence.pattern.type", "daily");
  ical_graph_result_free(&res);

  assert_int_equal(
      translate_inline("DTSTART;TZID=Europe/Berlin:20260303T090000\r\n"
                       "RRULE:FREQ=DAILY;UNTIL=20260331T070000Z\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  assert_jstr(res.event, "recurrence.range.endDate", "2026-03-31");
  ical_graph_result_free(&res);
}

static void assert_refused(const char *lines, int rc, const char *why)
{
  struct ical_graph_result res;
  char *all
      = xasprintf("DTSTART;TZID=Europe/Berlin:20260303T090000\r\n%s", lines);

  assert_int_equal(translate_inline(all, &berlin, &res), rc);
  if (!strstr(res.error, why))
    fail_msg("error \"%s\" does not mention \"%s\"", res.error, why);
  assert_null(res.event == NULL ? NULL : jpath(res.event, "recurrence.range"));
  ical_graph_result_free(&res);
  free(all);
}

static void test_unsupported_rules(void **state)
{
  assert_refused("RRULE:FREQ=HOURLY\r\n", ICAL_GRAPH_ERRULE, "HOURLY");
  assert_refused("RRULE:FREQ=DAILY;BYHOUR=9,15\r\n", ICAL_GRAPH_ERRULE,
                 "BYHOUR");
  assert_refused("RRULE:FREQ=MONTHLY;BYDAY=TU,TH;BYSETPOS=1,2\r\n",
                 ICAL_GRAPH_ERRULE, "BYSETPOS");
  assert_refused("RRULE:FREQ=MONTHLY;BYMONTHDAY=3,17\r\n", ICAL_GRAPH_ERRULE,
                 "BYMONTHDAY");
  assert_refused("RRULE:FREQ=YEARLY;BYYEARDAY=62\r\n", ICAL_GRAPH_ERRULE,
                 "BYYEARDAY");
  assert_refused("RRULE:FREQ=YEARLY;BYWEEKNO=10;BYDAY=TU\r\n",
                 ICAL_GRAPH_ERRULE, "BYWEEKNO");
  assert_refused("RRULE:FREQ=MONTHLY;BYMONTHDAY=31\r\n", ICAL_GRAPH_ERRULE,
                 "day 31");
  assert_refused("RRULE:FREQ=MONTHLY;BYDAY=5TU\r\n", ICAL_GRAPH_ERRULE,
                 "position 5");
  assert_refused("RRULE:FREQ=WEEKLY;BYDAY=WE\r\n", ICAL_GRAPH_ERRULE,
                 "not an occurrence");
  assert_refused("RRULE:FREQ=WEEKLY\r\nRDATE:20260320T090000Z\r\n",
                 ICAL_GRAPH_ERRULE, "RDATE");
  /* Found by a newcomer: a second rule was dropped and a huge COUNT came
   * back wrapped by libical. */
  assert_refused("RRULE:FREQ=DAILY\r\nRRULE:FREQ=WEEKLY\r\n", ICAL_GRAPH_ERRULE,
                 "several RRULEs");
  assert_refused("RRULE:FREQ=DAILY;COUNT=99999999999\r\n", ICAL_GRAPH_ERRULE,
                 "COUNT above");
  /* The refusal says why Graph cannot hold the rule. */
  assert_refused("RRULE:FREQ=HOURLY;INTERVAL=4\r\n", ICAL_GRAPH_ERRULE,
                 "FREQ=HOURLY: Graph repeats at most daily");
  assert_refused("RRULE:FREQ=MINUTELY\r\n", ICAL_GRAPH_ERRULE,
                 "FREQ=MINUTELY: Graph repeats at most daily");
  assert_refused("RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=TU;BYSETPOS=1,-1\r\n",
                 ICAL_GRAPH_ERRULE,
                 "several BYSETPOS values: Graph repeats on one position");
  assert_refused("RRULE:FREQ=MONTHLY;BYDAY=1TU,3TU\r\n", ICAL_GRAPH_ERRULE,
                 "BYDAY mixes positions");
  assert_refused("RRULE:FREQ=MONTHLY;BYMONTHDAY=3;BYDAY=TU\r\n",
                 ICAL_GRAPH_ERRULE, "BYMONTHDAY with BYDAY");
  assert_refused("RRULE:FREQ=YEARLY;BYMONTH=3,9\r\n", ICAL_GRAPH_ERRULE,
                 "several BYMONTHDAY or BYMONTH values");
  assert_refused("RRULE:FREQ=YEARLY;BYDAY=1TU\r\n", ICAL_GRAPH_ERRULE,
                 "a yearly BYDAY needs BYMONTH");
  assert_refused("RRULE:FREQ=MONTHLY;BYMONTH=3\r\n", ICAL_GRAPH_ERRULE,
                 "BYMONTH in a MONTHLY rule");
  /* RFC 5545 forbids COUNT with UNTIL; libical rejects the value. */
  assert_refused("RRULE:FREQ=WEEKLY;COUNT=3;UNTIL=20260401T000000Z\r\n",
                 ICAL_GRAPH_EPARSE, "RRULE");
}

static void test_exdate_and_overrides(void **state)
{
  struct ical_graph_result res;
  json_t *o;

  assert_int_equal(translate_file("series.ics", &res), ICAL_GRAPH_OK);
  assert_jstr(res.event, "recurrence.pattern.type", "weekly");
  /* EXDATE and the cancelled override, as original starts in UTC. */
  assert_int_equal(json_array_size(res.exdates), 2);
  assert_jstr(res.exdates, "0.dateTime", "2026-03-10T08:00:00");
  assert_jstr(res.exdates, "0.timeZone", "UTC");
  assert_jstr(res.exdates, "1.dateTime", "2026-03-31T07:00:00");
  o = res.overrides;
  assert_int_equal(json_array_size(o), 1);
  assert_jstr(o, "0.originalStart.dateTime", "2026-03-17T08:00:00");
  assert_jstr(o, "0.event.start.dateTime", "2026-03-18T10:00:00");
  assert_jstr(o, "0.event.start.timeZone", "W. Europe Standard Time");
  assert_jstr(o, "0.event.subject", "Weekly sync (moved)");
  assert_null(jpath(o, "0.event.recurrence"));
  ical_graph_result_free(&res);
}

static void test_teams(void **state)
{
  struct ical_graph_result res;

  assert_int_equal(translate_inline("DTSTART:20261203T090000Z\r\n"
                                    "X-NEXTAL-ONLINE-MEETING:TEAMS\r\n",
                                    &berlin, &res),
                   ICAL_GRAPH_OK);
  assert_true(json_is_true(jpath(res.event, "isOnlineMeeting")));
  assert_jstr(res.event, "onlineMeetingProvider", "teamsForBusiness");
  ical_graph_result_free(&res);

  assert_int_equal(
      translate_inline("DTSTART:20261203T090000Z\r\n"
                       "X-MICROSOFT-SKYPETEAMSMEETINGURL:https://teams.example/"
                       "j/1\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  assert_true(json_is_true(jpath(res.event, "isOnlineMeeting")));
  ical_graph_result_free(&res);
}

static void test_scheduling_rules(void **state)
{
  static const char with_method[]
      = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n"
        "METHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:m@nextal\r\n"
        "DTSTAMP:20260101T120000Z\r\nDTSTART:20261203T090000Z\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n";
  struct ical_graph_result res;

  assert_int_equal(
      ical_graph_from_ical(with_method, strlen(with_method), &berlin, &res),
      ICAL_GRAPH_EMETHOD);
  assert_string_equal(res.method, "REQUEST");
  ical_graph_result_free(&res);

  assert_int_equal(translate_inline("DTSTART:20261203T090000Z\r\n"
                                    "ORGANIZER:mailto:someone@else.org\r\n",
                                    &berlin, &res),
                   ICAL_GRAPH_EORGANIZER);
  assert_non_null(strstr(res.error, USER));
  ical_graph_result_free(&res);

  assert_int_equal(translate_inline("DTSTART:20261203T090000Z\r\n"
                                    "STATUS:CANCELLED\r\n",
                                    &berlin, &res),
                   ICAL_GRAPH_OK);
  assert_true(res.cancelled);
  ical_graph_result_free(&res);
}

static void test_invalid_objects(void **state)
{
  static const char todo[]
      = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n"
        "BEGIN:VTODO\r\nUID:t@nextal\r\nDTSTAMP:20260101T120000Z\r\n"
        "END:VTODO\r\nEND:VCALENDAR\r\n";
  struct ical_graph_result res;

  assert_int_equal(ical_graph_from_ical(todo, strlen(todo), &berlin, &res),
                   ICAL_GRAPH_ECOMPONENT);
  ical_graph_result_free(&res);
  assert_int_equal(ical_graph_from_ical("hello", 5, &berlin, &res),
                   ICAL_GRAPH_EPARSE);
  ical_graph_result_free(&res);
  assert_int_equal(translate_inline("DTSTART:2026120\r\n", &berlin, &res),
                   ICAL_GRAPH_EPARSE);
  ical_graph_result_free(&res);
}

/* A date or time that does not exist is refused here, naming the property,
 * rather than sent to Graph (whose answer to it is no help to a client). */
static void test_impossible_dates(void **state)
{
  static const struct {
    const char *lines;
    const char *why;
  } cases[] = {
    { "DTSTART:20261345T250000Z\r\n",
      "DTSTART 20261345T250000: there is no month 13" },
    { "DTSTART:00000101T000000Z\r\n",
      "DTSTART 00000101T000000: year 0 is outside 1 to 9999" },
    { "DTSTART;VALUE=DATE:20270229\r\n",
      "DTSTART 20270229: 2027-02 has no day 29" },
    { "DTSTART:20260101T090000Z\r\nDTEND:20260101T246100Z\r\n",
      "DTEND 20260101T246100: there is no time of day 24:61" },
    { "DTSTART:20261231T235960Z\r\n",
      "DTSTART 20261231T235960: second 60 (a leap second)" },
    /* Floating: refused before the mailbox's zone is asked for. */
    { "DTSTART:20260132T090000\r\n",
      "DTSTART 20260132T090000: 2026-01 has no day 32" },
    { "DTSTART:99991231T230000Z\r\nDURATION:P2D\r\n",
      "DTEND (DTSTART plus DURATION) 100000102T230000: year 10000" },
    { "DTSTART:20260105T090000Z\r\nRRULE:FREQ=WEEKLY;UNTIL=20261305T090000Z"
      "\r\n",
      "RRULE UNTIL 20261305T090000: there is no month 13" },
    { "DTSTART:20260105T090000Z\r\nRRULE:FREQ=WEEKLY\r\n"
      "EXDATE:20260230T090000Z\r\n",
      "EXDATE 20260230T090000: 2026-02 has no day 30" },
  };
  static const struct ical_graph_options no_zone = { .user = USER };
  struct ical_graph_result res;

  for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
    assert_int_equal(translate_inline(cases[i].lines, &no_zone, &res),
                     ICAL_GRAPH_EPARSE);
    if (strstr(res.error, cases[i].why) == NULL)
      fail_msg("case %zu: \"%s\" lacks \"%s\"", i, res.error, cases[i].why);
    ical_graph_result_free(&res);
  }

  /* The last day of the years Graph holds, and 29 February of a leap year,
   * are real. */
  assert_int_equal(translate_inline("DTSTART:99991231T230000Z\r\n"
                                    "DTEND:99991231T235959Z\r\n",
                                    &berlin, &res),
                   ICAL_GRAPH_OK);
  assert_jstr(res.event, "start.dateTime", "9999-12-31T23:00:00");
  ical_graph_result_free(&res);
  assert_int_equal(
      translate_inline("DTSTART;VALUE=DATE:20280229\r\n", &berlin, &res),
      ICAL_GRAPH_OK);
  ical_graph_result_free(&res);
}

/* RFC 5545: EXDATE and RECURRENCE-ID take the value type of DTSTART. A
 * date on a date-time series names no occurrence and is refused, the
 * property named, before any zone is needed. */
static void test_exdate_value_type(void **state)
{
  static const struct ical_graph_options no_zone = { .user = USER };
  struct ical_graph_result res;
  char *text;

  assert_int_equal(
      translate_inline("DTSTART;TZID=Europe/Berlin:20300304T090000\r\n"
                       "RRULE:FREQ=DAILY;COUNT=3\r\n"
                       "EXDATE;VALUE=DATE:20300305\r\n",
                       &no_zone, &res),
      ICAL_GRAPH_EPARSE);
  assert_non_null(strstr(res.error, "EXDATE 20300305 is a date but the "
                                    "series' DTSTART is a date-time"));
  ical_graph_result_free(&res);

  assert_int_equal(translate_inline("DTSTART;VALUE=DATE:20300304\r\n"
                                    "RRULE:FREQ=DAILY;COUNT=3\r\n"
                                    "EXDATE:20300305T000000Z\r\n",
                                    &berlin, &res),
                   ICAL_GRAPH_EPARSE);
  assert_non_null(strstr(res.error, "EXDATE 20300305T000000 is a date-time"));
  ical_graph_result_free(&res);

  text = xasprintf(
      "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n"
      "BEGIN:VEVENT\r\nUID:vt@nextal\r\nDTSTAMP:20260101T120000Z\r\n"
      "DTSTART;TZID=Europe/Berlin:20300304T090000\r\n"
      "RRULE:FREQ=DAILY;COUNT=3\r\nSUMMARY:S\r\nEND:VEVENT\r\n"
      "BEGIN:VEVENT\r\nUID:vt@nextal\r\nDTSTAMP:20260101T120000Z\r\n"
      "RECURRENCE-ID;VALUE=DATE:20300305\r\n"
      "DTSTART;TZID=Europe/Berlin:20300305T150000\r\nSUMMARY:O\r\n"
      "END:VEVENT\r\nEND:VCALENDAR\r\n");
  assert_int_equal(ical_graph_from_ical(text, strlen(text), &berlin, &res),
                   ICAL_GRAPH_EPARSE);
  assert_non_null(strstr(res.error, "RECURRENCE-ID 20300305 is a date"));
  ical_graph_result_free(&res);
  free(text);
}

/* A VTIMEZONE with no observance defines no zone: its TZID resolves by name
 * as if it were missing, and an unknown name is refused, not taken as UTC. */
#define EMPTY_VTZ_CAL(tz)                                                      \
  "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n"                   \
  "BEGIN:VTIMEZONE\r\nTZID:" tz "\r\nEND:VTIMEZONE\r\n"                        \
  "BEGIN:VEVENT\r\nUID:etz@nextal\r\nDTSTAMP:20260101T120000Z\r\n"             \
  "DTSTART;TZID=" tz ":20300304T090000\r\n"                                    \
  "DTEND;TZID=" tz ":20300304T100000\r\nSUMMARY:S\r\n"                         \
  "END:VEVENT\r\nEND:VCALENDAR\r\n"

static void test_empty_vtimezone(void **state)
{
  static const char unknown[] = EMPTY_VTZ_CAL("Empty");
  static const char known[] = EMPTY_VTZ_CAL("Europe/Berlin");
  struct ical_graph_result res;

  assert_int_equal(
      ical_graph_from_ical(unknown, strlen(unknown), &berlin, &res),
      ICAL_GRAPH_ETZ);
  assert_non_null(strstr(res.error, "\"Empty\" is unknown and the calendar "
                                    "carries no VTIMEZONE"));
  ical_graph_result_free(&res);

  assert_int_equal(ical_graph_from_ical(known, strlen(known), &berlin, &res),
                   ICAL_GRAPH_OK);
  assert_jstr(res.event, "start.timeZone", "W. Europe Standard Time");
  ical_graph_result_free(&res);
}

/* An ATTENDEE's mailto: URI is percent-decoded (RFC 6068), its hfields
 * dropped, and what is left must be one ASCII local@domain. */
static void test_attendee_address(void **state)
{
  static const char *const bad[] = {
    "mailto:@",
    "mailto:a@",
    "mailto:@example.net",
    "mailto:a@b@c",
    "mailto:a b@example.net",
    "mailto:a%40b@example.net",
    "mailto:a@example.net,b@example.net",
    "mailto:\"quoted local\"@example.net",
    "mailto:<x@example.net>",
    "mailto:j\xc3\xbcrgen@example.net",
    "mailto:a%00@example.net",
    "mailto:a%zz@example.net",
    "mailto:a..b@example.net",
    "mailto:a@example..net",
    "mailto:?subject=x",
  };
  struct ical_graph_result res;
  char *lines;

  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    lines
        = xasprintf("DTSTART:20300304T090000Z\r\nATTENDEE;CN=X:%s\r\n", bad[i]);
    assert_int_equal(translate_inline(lines, &berlin, &res), ICAL_GRAPH_EPARSE);
    if (strstr(res.error, "is not one e-mail address") == NULL)
      fail_msg("case %zu: \"%s\"", i, res.error);
    ical_graph_result_free(&res);
    free(lines);
  }

  /* Too long: a 400-byte local part. */
  lines = xasprintf("DTSTART:20300304T090000Z\r\nATTENDEE:mailto:%0400d"
                    "@example.net\r\n",
                    0);
  assert_int_equal(translate_inline(lines, &berlin, &res), ICAL_GRAPH_EPARSE);
  ical_graph_result_free(&res);
  free(lines);

  /* Escapes decode, hfields go, the scheme is case-insensitive. */
  assert_int_equal(
      translate_inline("DTSTART:20300304T090000Z\r\n"
                       "ATTENDEE:mailto:j%2Bdoe@example.net?subject=x\r\n"
                       "ATTENDEE:MAILTO:UPPER@EXAMPLE.NET\r\n",
                       &berlin, &res),
      ICAL_GRAPH_OK);
  assert_jstr(res.event, "attendees.0.emailAddress.address",
              "j+doe@example.net");
  assert_jstr(res.event, "attendees.1.emailAddress.address",
              "UPPER@EXAMPLE.NET");
  ical_graph_result_free(&res);
}

/* Undoes RFC 5545 line folding in place, so tests can search lines. */
static char *unfold(char *text)
{
  char *r = text, *w = text;

  while (*r) {
    if (r[0] == '\r' && r[1] == '\n' && r[2] == ' ') {
      r += 3;
      continue;
    }
    *w++ = *r++;
  }
  *w = '\0';
  return text;
}

/* Parses generated iCalendar and returns its first VEVENT's parent. */
static icalcomponent *ical_parse_checked(const char *text)
{
  icalcomponent *c = icalparser_parse_string(text);

  assert_non_null(c);
  assert_int_equal(icalcomponent_isa(c), ICAL_VCALENDAR_COMPONENT);
  return c;
}

static const char *param_str(icalproperty *p, icalparameter_kind kind)
{
  icalparameter *param = icalproperty_get_first_parameter(p, kind);

  return param ? icalparameter_as_ical_string(param) : "";
}

static icalproperty *attendee_find(icalcomponent *ev, const char *addr)
{
  icalproperty *p;

  for (p = icalcomponent_get_first_property(ev, ICAL_ATTENDEE_PROPERTY); p;
       p = icalcomponent_get_next_property(ev, ICAL_ATTENDEE_PROPERTY)) {
    if (strcmp(icalproperty_get_attendee(p), addr) == 0)
      return p;
  }
  fail_msg("no attendee %s", addr);
  return NULL;
}

static void test_reverse(void **state)
{
  json_t *ev = json_load_data("graph_event.json");
  struct ical_graph_ical_options opt = { .uid = "simple-1@nextal" };
  icalcomponent *cal, *vev, *vtz, *alarm;
  icalproperty *p;
  char err[256], *text = NULL;
  icaltimetype t;

  assert_int_equal(ical_graph_to_ical(ev, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  cal = ical_parse_checked(text);
  vev = icalcomponent_get_first_component(cal, ICAL_VEVENT_COMPONENT);
  assert_string_equal(icalcomponent_get_uid(vev), "simple-1@nextal");
  assert_string_equal(icalcomponent_get_summary(vev), "Interview: Jane Doe");
  assert_string_equal(icalcomponent_get_description(vev),
                      "Second round.\nBring the CV.\n"
                      "________________\nMicrosoft Teams meeting");

  /* 08:00 UTC comes back as 09:00 in the zone the event was written in. */
  p = icalcomponent_get_first_property(vev, ICAL_DTSTART_PROPERTY);
  t = icalproperty_get_dtstart(p);
  assert_int_equal(t.hour, 9);
  assert_string_equal(param_str(p, ICAL_TZID_PARAMETER), "TZID=Europe/Berlin");
  vtz = icalcomponent_get_first_component(cal, ICAL_VTIMEZONE_COMPONENT);
  assert_non_null(vtz);
  assert_string_equal(icalproperty_get_tzid(icalcomponent_get_first_property(
                          vtz, ICAL_TZID_PROPERTY)),
                      "Europe/Berlin");

  p = attendee_find(vev, "mailto:jane@example.org");
  assert_string_equal(param_str(p, ICAL_PARTSTAT_PARAMETER),
                      "PARTSTAT=ACCEPTED");
  assert_string_equal(param_str(p, ICAL_ROLE_PARAMETER),
                      "ROLE=REQ-PARTICIPANT");
  p = attendee_find(vev, "mailto:bob@example.com");
  assert_string_equal(param_str(p, ICAL_PARTSTAT_PARAMETER),
                      "PARTSTAT=DECLINED");
  p = attendee_find(vev, "mailto:carol@example.com");
  assert_string_equal(param_str(p, ICAL_PARTSTAT_PARAMETER),
                      "PARTSTAT=TENTATIVE");
  assert_string_equal(param_str(p, ICAL_ROLE_PARAMETER),
                      "ROLE=OPT-PARTICIPANT");
  p = attendee_find(vev, "mailto:room412@example.com");
  assert_string_equal(param_str(p, ICAL_PARTSTAT_PARAMETER),
                      "PARTSTAT=NEEDS-ACTION");
  assert_string_equal(param_str(p, ICAL_CUTYPE_PARAMETER), "CUTYPE=RESOURCE");
  p = icalcomponent_get_first_property(vev, ICAL_ORGANIZER_PROPERTY);
  assert_string_equal(icalproperty_get_organizer(p),
                      "mailto:recruiter@example.com");

  p = icalcomponent_get_first_property(vev, ICAL_CONFERENCE_PROPERTY);
  assert_non_null(p);
  assert_non_null(strstr(icalproperty_get_conference(p), "meetup-join"));
  assert_string_equal(param_str(p, ICAL_FEATURE_PARAMETER), "FEATURE=VIDEO");
  assert_non_null(
      strstr(unfold(text), "X-MICROSOFT-SKYPETEAMSMEETINGURL:https://teams."));

  p = icalcomponent_get_first_property(vev, ICAL_RRULE_PROPERTY);
  assert_non_null(p);
  assert_non_null(strstr(icalproperty_get_value_as_string(p), "FREQ=WEEKLY"));
  assert_non_null(strstr(icalproperty_get_value_as_string(p), "BYDAY=TU"));
  /* Last occurrence 28 April 09:00 Berlin = 07:00Z. */
  assert_non_null(
      strstr(icalproperty_get_value_as_string(p), "UNTIL=20260428T070000Z"));

  alarm = icalcomponent_get_first_component(vev, ICAL_VALARM_COMPONENT);
  assert_non_null(alarm);
  assert_int_equal(
      icaldurationtype_as_int(
          icalproperty_get_trigger(
              icalcomponent_get_first_property(alarm, ICAL_TRIGGER_PROPERTY))
              .duration),
      -30 * 60);
  assert_int_equal(icalproperty_get_class(icalcomponent_get_first_property(
                       vev, ICAL_CLASS_PROPERTY)),
                   ICAL_CLASS_PRIVATE);
  assert_int_equal(icalproperty_get_transp(icalcomponent_get_first_property(
                       vev, ICAL_TRANSP_PROPERTY)),
                   ICAL_TRANSP_TRANSPARENT);
  assert_string_equal(
      icalproperty_get_categories(
          icalcomponent_get_first_property(vev, ICAL_CATEGORIES_PROPERTY)),
      "Interview");
  t = icalproperty_get_lastmodified(
      icalcomponent_get_first_property(vev, ICAL_LASTMODIFIED_PROPERTY));
  assert_int_equal(t.hour, 16);
  assert_int_equal(t.second, 12);
  assert_null(icalcomponent_get_first_property(vev, ICAL_STATUS_PROPERTY));

  icalcomponent_free(cal);
  free(text);
  json_decref(ev);
}

static void test_reverse_prefer_zone_and_all_day(void **state)
{
  json_t *ev = json_pack(
      "{s:s, s:{s:s, s:s}, s:{s:s, s:s}, s:b}", "subject", "Pacific", "start",
      "dateTime", "2026-07-01T10:00:00.0000000", "timeZone",
      "Pacific Standard Time", "end", "dateTime", "2026-07-01T11:00:00.0000000",
      "timeZone", "Pacific Standard Time", "isCancelled", 1);
  struct ical_graph_ical_options opt = { .uid = "p@nextal" };
  icalcomponent *cal, *vev;
  icalproperty *p;
  char err[256], *text = NULL;

  assert_int_equal(ical_graph_to_ical(ev, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  cal = ical_parse_checked(text);
  vev = icalcomponent_get_first_component(cal, ICAL_VEVENT_COMPONENT);
  p = icalcomponent_get_first_property(vev, ICAL_DTSTART_PROPERTY);
  assert_int_equal(icalproperty_get_dtstart(p).hour, 10);
  assert_string_equal(param_str(p, ICAL_TZID_PARAMETER),
                      "TZID=America/Los_Angeles");
  assert_int_equal(icalcomponent_get_status(vev), ICAL_STATUS_CANCELLED);
  icalcomponent_free(cal);
  free(text);
  json_decref(ev);

  ev = json_pack("{s:s, s:{s:s, s:s}, s:{s:s, s:s}, s:b}", "subject", "Day",
                 "start", "dateTime", "2026-12-03T00:00:00.0000000", "timeZone",
                 "UTC", "end", "dateTime", "2026-12-04T00:00:00.0000000",
                 "timeZone", "UTC", "isAllDay", 1);
  assert_int_equal(ical_graph_to_ical(ev, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  assert_non_null(strstr(text, "DTSTART;VALUE=DATE:20261203"));
  assert_non_null(strstr(text, "DTEND;VALUE=DATE:20261204"));
  free(text);
  json_decref(ev);
}

/* A Graph event written in America/Winnipeg: Graph keeps only "Central
 * Standard Time", whose IANA zone is America/Chicago. */
static json_t *central_event(const char *zone)
{
  return json_pack(
      "{s:s, s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s}, s:{s:{s:s, s:i, s:[s]},"
      " s:{s:s, s:s, s:s, s:s}}}",
      "subject", "Winnipeg weekly", "originalStartTimeZone", zone,
      "originalEndTimeZone", zone, "start", "dateTime",
      "2030-03-04T16:00:00.0000000", "timeZone", "UTC", "end", "dateTime",
      "2030-03-04T17:00:00.0000000", "timeZone", "UTC", "recurrence", "pattern",
      "type", "weekly", "interval", 1, "daysOfWeek", "monday", "range", "type",
      "endDate", "startDate", "2030-03-04", "endDate", "2030-03-11",
      "recurrenceTimeZone", zone);
}

static void test_reverse_remembered_zone(void **state)
{
  json_t *ev = central_event("Central Standard Time");
  json_t *del = json_pack("[s]", "2030-03-11T15:00:00Z");
  struct ical_graph_ical_options opt = { .uid = "w@nextal" };
  char err[256], *text = NULL;

  /* Nothing remembered (an event made in Outlook): ICU's zone. */
  assert_int_equal(ical_graph_to_ical(ev, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  unfold(text);
  assert_non_null(strstr(text, "DTSTART;TZID=America/Chicago:20300304T100000"));
  free(text);

  /* The zone the client wrote, with its own VTIMEZONE, in DTSTART, DTEND,
   * EXDATE and UNTIL alike. */
  opt.start_tzid = opt.end_tzid = "America/Winnipeg";
  opt.deleted = del;
  assert_int_equal(ical_graph_to_ical(ev, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  unfold(text);
  assert_non_null(
      strstr(text, "DTSTART;TZID=America/Winnipeg:20300304T100000"));
  assert_non_null(strstr(text, "DTEND;TZID=America/Winnipeg:20300304T110000"));
  assert_non_null(strstr(text, "EXDATE;TZID=America/Winnipeg:20300311T100000"));
  assert_non_null(strstr(text, "UNTIL=20300311T150000Z"));
  assert_non_null(strstr(text, "BEGIN:VTIMEZONE\r\nTZID:America/Winnipeg"));
  assert_non_null(strstr(text, "X-LIC-LOCATION:America/Winnipeg"));
  assert_null(strstr(text, "Chicago"));
  free(text);
  json_decref(ev);

  /* Moved to another zone in Outlook: Graph's zone wins. */
  ev = central_event("Eastern Standard Time");
  opt.deleted = NULL;
  assert_int_equal(ical_graph_to_ical(ev, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  unfold(text);
  assert_non_null(
      strstr(text, "DTSTART;TZID=America/New_York:20300304T110000"));
  assert_null(strstr(text, "America/Winnipeg"));
  free(text);
  json_decref(ev);
  json_decref(del);
}

/* The UTC time of property kind of vev, read with the VTIMEZONE of cal
 * that its TZID names, as a client reading the object would. */
static icaltimetype utc_of(icalcomponent *cal, icalcomponent *vev,
                           icalproperty_kind kind)
{
  icalproperty *p = icalcomponent_get_first_property(vev, kind);
  icalparameter *tzid
      = icalproperty_get_first_parameter(p, ICAL_TZID_PARAMETER);
  icaltimezone *zone;
  icaltimetype t;

  assert_non_null(tzid);
  zone = icalcomponent_get_timezone(cal, icalparameter_get_tzid(tzid));
  assert_non_null(zone);
  t = icalvalue_get_datetime(icalproperty_get_value(p));
  t.zone = zone;
  return icaltime_convert_to_zone(t, icaltimezone_get_utc_timezone());
}

/* A Windows name (or an alias) the client wrote comes back as written, with
 * a VTIMEZONE under that TZID carrying the rules of the IANA zone it names,
 * and reads back to the same Graph zone. */
static void test_reverse_windows_name(void **state)
{
  json_t *ev = central_event("Central Standard Time");
  json_t *del = json_pack("[s]", "2030-03-11T15:00:00Z");
  struct ical_graph_ical_options opt = {
    .uid = "w@nextal",
    .start_tzid = "Central Standard Time",
    .end_tzid = "US/Central",
    .deleted = del,
  };
  struct ical_graph_result res;
  icalcomponent *cal, *vev, *vtz;
  char err[256], *text = NULL;
  icaltimetype t;
  int zones = 0;

  assert_int_equal(ical_graph_to_ical(ev, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  unfold(text);
  assert_non_null(
      strstr(text, "DTSTART;TZID=Central Standard Time:20300304T100000"));
  assert_non_null(strstr(text, "DTEND;TZID=US/Central:20300304T110000"));
  assert_non_null(
      strstr(text, "EXDATE;TZID=Central Standard Time:20300311T100000"));
  assert_non_null(strstr(text, "UNTIL=20300311T150000Z"));
  assert_non_null(
      strstr(text, "BEGIN:VTIMEZONE\r\nTZID:Central Standard Time\r\n"));
  assert_non_null(strstr(text, "BEGIN:VTIMEZONE\r\nTZID:US/Central\r\n"));
  assert_null(strstr(text, "TZID=America/Chicago"));

  /* The VTIMEZONEs hold Chicago's rules: 10:00 on 4 March is still winter
   * time (UTC-6), 10:00 on 11 March already summer time (UTC-5). */
  cal = ical_parse_checked(text);
  for (vtz = icalcomponent_get_first_component(cal, ICAL_VTIMEZONE_COMPONENT);
       vtz;
       vtz = icalcomponent_get_next_component(cal, ICAL_VTIMEZONE_COMPONENT))
    zones++;
  assert_int_equal(zones, 2);
  vev = icalcomponent_get_first_component(cal, ICAL_VEVENT_COMPONENT);
  t = utc_of(cal, vev, ICAL_DTSTART_PROPERTY);
  assert_int_equal(t.hour, 16);
  t = utc_of(cal, vev, ICAL_DTEND_PROPERTY);
  assert_int_equal(t.hour, 17);
  t = utc_of(cal, vev, ICAL_EXDATE_PROPERTY);
  assert_int_equal(t.day, 11);
  assert_int_equal(t.hour, 15);
  icalcomponent_free(cal);

  /* Put back as it came: the same Graph zone, remembered as written. */
  assert_int_equal(ical_graph_from_ical(text, strlen(text), &berlin, &res),
                   ICAL_GRAPH_OK);
  assert_jstr(res.event, "start.timeZone", "Central Standard Time");
  assert_jstr(res.event, "start.dateTime", "2030-03-04T10:00:00");
  assert_jstr(res.event, "end.timeZone", "Central Standard Time");
  assert_string_equal(res.start_tzid, "Central Standard Time");
  assert_string_equal(res.end_tzid, "US/Central");
  ical_graph_result_free(&res);
  free(text);
  json_decref(ev);

  /* Moved to another zone in Outlook: Graph's zone wins here too. */
  ev = central_event("Eastern Standard Time");
  opt.deleted = NULL;
  assert_int_equal(ical_graph_to_ical(ev, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  unfold(text);
  assert_non_null(
      strstr(text, "DTSTART;TZID=America/New_York:20300304T110000"));
  assert_null(strstr(text, "Central"));
  free(text);
  json_decref(ev);
  json_decref(del);
}

/* A Graph series made in W. Europe Standard Time, start and end in UTC,
 * with recurrence {pattern, range} (references stolen), as iCalendar. */
static char *reverse_series(const char *start, const char *end, json_t *pattern,
                            json_t *range)
{
  struct ical_graph_ical_options opt = { .uid = "series@nextal" };
  json_t *ev = json_pack(
      "{s:s, s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s}, s:{s:o, s:o}}", "subject",
      "Panel", "originalStartTimeZone", "W. Europe Standard Time",
      "originalEndTimeZone", "W. Europe Standard Time", "start", "dateTime",
      start, "timeZone", "UTC", "end", "dateTime", end, "timeZone", "UTC",
      "recurrence", "pattern", pattern, "range", range);
  char err[256], *text = NULL;

  assert_non_null(ev);
  if (ical_graph_to_ical(ev, &opt, &text, err, sizeof(err)) != ICAL_GRAPH_OK)
    fail_msg("to_ical: %s", err);
  json_decref(ev);
  return text;
}

/* The RRULE of text's VEVENT holds each of parts, and the rule expanded
 * from DTSTART by libical, as a client would, gives exactly the dates
 * (YYYYMMDD, NULL-terminated) at 09:00 Berlin time. */
static void assert_rrule(const char *text, const char *const *parts,
                         const char *const *dates)
{
  icalcomponent *cal = ical_parse_checked(text);
  icalcomponent *vev
      = icalcomponent_get_first_component(cal, ICAL_VEVENT_COMPONENT);
  icalproperty *p = icalcomponent_get_first_property(vev, ICAL_RRULE_PROPERTY);
  struct icalrecurrencetype r;
  icalrecur_iterator *it;
  icaltimetype start, t;
  const char *rule;
  size_t i;

  assert_non_null(p);
  rule = icalproperty_get_value_as_string(p);
  for (; *parts; parts++) {
    if (!strstr(rule, *parts))
      fail_msg("RRULE %s lacks %s", rule, *parts);
  }
  start = icalcomponent_get_dtstart(vev);
  assert_int_equal(start.hour, 9);
  r = icalproperty_get_rrule(p);
  it = icalrecur_iterator_new(r, start);
  assert_non_null(it);
  for (i = 0; dates[i]; i++) {
    char got[16];

    t = icalrecur_iterator_next(it);
    assert_false(icaltime_is_null_time(t));
    snprintf(got, sizeof(got), "%04d%02d%02d", t.year, t.month, t.day);
    assert_string_equal(got, dates[i]);
    assert_int_equal(t.hour, 9);
  }
  assert_true(icaltime_is_null_time(icalrecur_iterator_next(it)));
  icalrecur_iterator_free(it);
  icalcomponent_free(cal);
}

/* text translated back: Graph's pattern again, field for field. */
static void assert_pattern_back(const char *text, const json_t *pattern)
{
  struct ical_graph_result res;
  const char *key;
  json_t *want, *got;

  assert_int_equal(ical_graph_from_ical(text, strlen(text), &berlin, &res),
                   ICAL_GRAPH_OK);
  json_object_foreach((json_t *) pattern, key, want)
  {
    if (strcmp(key, "firstDayOfWeek") == 0)
      continue;
    got = json_object_get(jpath(res.event, "recurrence.pattern"), key);
    if (!json_equal(got, want))
      fail_msg("pattern.%s differs after the round trip", key);
  }
  ical_graph_result_free(&res);
}

/* Graph's monthly and yearly patterns come back as RRULEs that expand to
 * the same dates, and translate back to the same patterns. */
static void test_reverse_monthly_and_yearly(void **state)
{
  static const struct {
    const char *start, *end, *pattern, *parts[4], *dates[4];
  } cases[] = {
    { "2026-01-15T08:00:00.0000000",
      "2026-01-15T09:00:00.0000000",
      "{\"type\": \"absoluteMonthly\", \"interval\": 2, \"dayOfMonth\": 15}",
      { "FREQ=MONTHLY", "INTERVAL=2", "BYMONTHDAY=15", NULL },
      { "20260115", "20260315", "20260515", NULL } },
    { "2026-03-10T08:00:00.0000000",
      "2026-03-10T09:00:00.0000000",
      "{\"type\": \"relativeMonthly\", \"interval\": 1, \"index\": "
      "\"second\", \"daysOfWeek\": [\"tuesday\"]}",
      { "FREQ=MONTHLY", "BYDAY=TU", "BYSETPOS=2", NULL },
      { "20260310", "20260414", "20260512", NULL } },
    { "2026-03-27T08:00:00.0000000",
      "2026-03-27T09:00:00.0000000",
      "{\"type\": \"relativeMonthly\", \"interval\": 1, \"index\": "
      "\"last\", \"daysOfWeek\": [\"friday\"]}",
      { "FREQ=MONTHLY", "BYDAY=FR", "BYSETPOS=-1", NULL },
      { "20260327", "20260424", "20260529", NULL } },
    { "2026-04-15T07:00:00.0000000",
      "2026-04-15T08:00:00.0000000",
      "{\"type\": \"absoluteYearly\", \"interval\": 1, \"month\": 4, "
      "\"dayOfMonth\": 15}",
      { "FREQ=YEARLY", "BYMONTH=4", "BYMONTHDAY=15", NULL },
      { "20260415", "20270415", "20280415", NULL } },
    { "2026-11-26T08:00:00.0000000",
      "2026-11-26T09:00:00.0000000",
      "{\"type\": \"relativeYearly\", \"interval\": 1, \"month\": 11, "
      "\"index\": \"fourth\", \"daysOfWeek\": [\"thursday\"]}",
      { "FREQ=YEARLY", "BYMONTH=11", "BYDAY=TH", "BYSETPOS=4" },
      { "20261126", "20271125", "20281123", NULL } },
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *parts[5] = { NULL };
    json_t *pattern = json_loads(cases[i].pattern, 0, NULL);
    /* Graph's startDate is the first occurrence's date. */
    json_t *range
        = json_pack("{s:s, s:s%, s:i}", "type", "numbered", "startDate",
                    cases[i].start, (size_t) 10, "numberOfOccurrences", 3);
    char *text;

    assert_non_null(pattern);
    assert_non_null(range);
    memcpy(parts, cases[i].parts, sizeof(cases[i].parts));
    json_incref(pattern);
    text = reverse_series(cases[i].start, cases[i].end, pattern, range);
    assert_rrule(text, parts, cases[i].dates);
    assert_pattern_back(text, pattern);
    json_decref(pattern);
    free(text);
  }
}

/* A deleted occurrence of an all-day series is the date of its original
 * start in the series' zone, not in UTC. */
static void test_reverse_all_day_series(void **state)
{
  json_t *ev = json_pack(
      "{s:s, s:b, s:s, s:{s:s, s:s}, s:{s:s, s:s}, s:{s:{s:s, s:i, s:[s]},"
      " s:{s:s, s:s, s:i}}}",
      "subject", "Assessment days", "isAllDay", 1, "originalStartTimeZone",
      "W. Europe Standard Time", "start", "dateTime",
      "2026-12-03T00:00:00.0000000", "timeZone", "UTC", "end", "dateTime",
      "2026-12-04T00:00:00.0000000", "timeZone", "UTC", "recurrence", "pattern",
      "type", "weekly", "interval", 1, "daysOfWeek", "thursday", "range",
      "type", "numbered", "startDate", "2026-12-03", "numberOfOccurrences", 3);
  json_t *del = json_pack("[s]", "2026-12-09T23:00:00Z");
  struct ical_graph_ical_options opt = { .uid = "d@nextal", .deleted = del };
  char err[256], *text = NULL;

  assert_int_equal(ical_graph_to_ical(ev, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  unfold(text);
  assert_non_null(strstr(text, "DTSTART;VALUE=DATE:20261203"));
  assert_non_null(strstr(text, "EXDATE;VALUE=DATE:20261210"));
  free(text);
  json_decref(del);
  json_decref(ev);
}

static void test_reverse_exceptions(void **state)
{
  json_t *ev = json_load_data("graph_event.json");
  json_t *moved
      = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s}}", "subject", "Moved",
                  "originalStart", "2026-03-17T08:00:00Z", "start", "dateTime",
                  "2026-03-18T09:00:00.0000000", "timeZone", "UTC", "end",
                  "dateTime", "2026-03-18T10:00:00.0000000", "timeZone", "UTC");
  json_t *exc = json_pack("[o]", moved);
  json_t *del = json_pack("[s]", "2026-03-10T08:00:00Z");
  struct ical_graph_ical_options opt
      = { .uid = "series-1@nextal", .exceptions = exc, .deleted = del };
  char err[256], *text = NULL;

  assert_int_equal(ical_graph_to_ical(ev, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  unfold(text);
  assert_non_null(strstr(text, "EXDATE;TZID=Europe/Berlin:20260310T090000"));
  assert_non_null(
      strstr(text, "RECURRENCE-ID;TZID=Europe/Berlin:20260317T090000"));
  assert_non_null(strstr(text, "SUMMARY:Moved"));
  free(text);
  json_decref(exc);
  json_decref(del);
  json_decref(ev);
}

static void test_round_trip(void **state)
{
  struct ical_graph_result res;
  struct ical_graph_ical_options opt = { .uid = "simple-1@nextal" };
  icalcomponent *cal, *vev;
  icalproperty *p;
  char err[256], *text = NULL;
  icaltimetype t;

  assert_int_equal(translate_file("simple.ics", &res), ICAL_GRAPH_OK);
  assert_int_equal(ical_graph_to_ical(res.event, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  cal = ical_parse_checked(text);
  vev = icalcomponent_get_first_component(cal, ICAL_VEVENT_COMPONENT);
  assert_string_equal(icalcomponent_get_summary(vev),
                      "Interview: Jane Doe, backend engineer");
  assert_string_equal(icalcomponent_get_description(vev),
                      "Second round.\nBring the CV.");
  p = icalcomponent_get_first_property(vev, ICAL_DTSTART_PROPERTY);
  t = icalproperty_get_dtstart(p);
  assert_int_equal(t.year, 2026);
  assert_int_equal(t.month, 12);
  assert_int_equal(t.day, 3);
  assert_int_equal(t.hour, 9);
  assert_string_equal(param_str(p, ICAL_TZID_PARAMETER), "TZID=Europe/Berlin");
  assert_int_equal(icalproperty_get_dtend(icalcomponent_get_first_property(
                                              vev, ICAL_DTEND_PROPERTY))
                       .hour,
                   10);
  attendee_find(vev, "mailto:jane@example.org");
  icalcomponent_free(cal);
  free(text);
  ical_graph_result_free(&res);
}

/* Remembered client-scheduled attendees come back on the master as they
 * were written, with their SCHEDULE-AGENT; Graph's own attendee of the
 * same address stands, and lines that are not ATTENDEEs are ignored. */
static void test_reverse_client_attendees(void **state)
{
  json_t *ev = json_load_data("graph_event.json");
  json_t *lines = json_pack(
      "[s, s, s, s, s, i]",
      "ATTENDEE;SCHEDULE-AGENT=CLIENT;CN=Sam Candidate;PARTSTAT=NEEDS-ACTION:"
      "mailto:sam@example.net",
      "ATTENDEE;CN=Jane Again;SCHEDULE-AGENT=CLIENT:mailto:JANE@example.org",
      "ATTENDEE;CN=Kim:mailto:kim@example.net", "SUMMARY:not an attendee",
      "ATTENDEE:mailto:x@example.net\r\nSUMMARY:smuggled", 7);
  struct ical_graph_ical_options opt
      = { .uid = "simple-1@nextal", .client_attendees = lines };
  icalcomponent *cal, *vev;
  icalproperty *p;
  char err[256], *text = NULL;
  int n = 0;

  assert_int_equal(ical_graph_to_ical(ev, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  cal = ical_parse_checked(text);
  vev = icalcomponent_get_first_component(cal, ICAL_VEVENT_COMPONENT);
  p = attendee_find(vev, "mailto:sam@example.net");
  assert_string_equal(param_str(p, ICAL_SCHEDULEAGENT_PARAMETER),
                      "SCHEDULE-AGENT=CLIENT");
  assert_string_equal(param_str(p, ICAL_CN_PARAMETER), "CN=Sam Candidate");
  assert_string_equal(param_str(p, ICAL_PARTSTAT_PARAMETER),
                      "PARTSTAT=NEEDS-ACTION");
  /* A line without SCHEDULE-AGENT gets CLIENT: Graph never scheduled it. */
  p = attendee_find(vev, "mailto:kim@example.net");
  assert_string_equal(param_str(p, ICAL_SCHEDULEAGENT_PARAMETER),
                      "SCHEDULE-AGENT=CLIENT");
  p = attendee_find(vev, "mailto:jane@example.org");
  assert_string_equal(param_str(p, ICAL_SCHEDULEAGENT_PARAMETER), "");
  for (p = icalcomponent_get_first_property(vev, ICAL_ATTENDEE_PROPERTY); p;
       p = icalcomponent_get_next_property(vev, ICAL_ATTENDEE_PROPERTY))
    n += strcasecmp(icalproperty_get_attendee(p), "mailto:jane@example.org")
         == 0;
  assert_int_equal(n, 1);
  assert_null(strstr(text, "x@example.net"));
  assert_null(strstr(text, "smuggled"));
  assert_null(strstr(text, "not an attendee"));
  icalcomponent_free(cal);
  free(text);
  json_decref(lines);
  json_decref(ev);
}

/* What a PUT keeps is what GET gives back, line for line. */
static void test_client_attendees_round_trip(void **state)
{
  struct ical_graph_result res;
  struct ical_graph_ical_options opt = { .uid = "attendees-1@nextal" };
  char err[256], *text = NULL;

  assert_int_equal(translate_file("attendees.ics", &res), ICAL_GRAPH_OK);
  opt.client_attendees = res.client_attendees;
  assert_int_equal(ical_graph_to_ical(res.event, &opt, &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  assert_non_null(strstr(
      text,
      "\r\nATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:candidate@example.net\r\n"));
  free(text);
  ical_graph_result_free(&res);
}

static void test_freebusy(void **state)
{
  json_t *sched = json_load_data("get_schedule.json");
  struct ical_graph_freebusy_request req = {
    .method = "REPLY",
    .organizer = USER,
    .uid = "fb-1@nextal",
    .start = 1796256000, /* 2026-12-03T00:00:00Z */
    .end = 1796342400,
  };
  char err[256], *text = NULL;

  assert_int_equal(ical_graph_freebusy_to_ical(jpath(sched, "value.0"), &req,
                                               &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  unfold(text);
  assert_non_null(strstr(text, "METHOD:REPLY"));
  assert_non_null(strstr(text, "UID:fb-1@nextal"));
  assert_non_null(strstr(text, "ATTENDEE:mailto:alice@example.com"));
  assert_non_null(strstr(text, "ORGANIZER:mailto:" USER));
  assert_non_null(strstr(text, "DTSTART:20261203T000000Z"));
  assert_non_null(strstr(text, "FREEBUSY;FBTYPE=BUSY:20261203T090000Z/"
                               "20261203T100000Z"));
  assert_non_null(strstr(text, "FREEBUSY;FBTYPE=BUSY-TENTATIVE:"
                               "20261203T110000Z/20261203T113000Z"));
  assert_null(strstr(text, "20261203T120000Z"));
  free(text);

  /* Pacific times become UTC (PST is UTC-8 in December). */
  req.method = NULL;
  assert_int_equal(ical_graph_freebusy_to_ical(jpath(sched, "value.1"), &req,
                                               &text, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  unfold(text);
  assert_null(strstr(text, "METHOD"));
  assert_non_null(strstr(text, "FREEBUSY;FBTYPE=BUSY-UNAVAILABLE:"
                               "20261203T160000Z/20261204T010000Z"));
  free(text);

  assert_int_equal(ical_graph_freebusy_to_ical(jpath(sched, "value.2"), &req,
                                               &text, err, sizeof(err)),
                   ICAL_GRAPH_ENOTFOUND);
  assert_null(text);
  assert_non_null(strstr(err, "nobody@example.com"));
  json_decref(sched);
}

/* An update sends Graph only what differs from the event as Graph holds
 * it: HTML bodies, UTC times, recurrence defaults, attendee status and
 * order are what Graph makes of the same thing. */
static void test_event_changes(void **state)
{
  static const char graph[]
      = "{\"subject\": \"Panel\", \"body\": {\"contentType\": \"html\","
        " \"content\": \"<html><body><p>Bring the CV.</p></body></html>\"},"
        " \"start\": {\"dateTime\": \"2030-03-04T08:00:00.0000000\","
        " \"timeZone\": \"UTC\"}, \"end\": {\"dateTime\":"
        " \"2030-03-04T09:00:00.0000000\", \"timeZone\": \"UTC\"},"
        " \"originalStartTimeZone\": \"W. Europe Standard Time\","
        " \"originalEndTimeZone\": \"W. Europe Standard Time\","
        " \"isAllDay\": false, \"location\": {\"displayName\": \"Room 4\","
        " \"locationType\": \"default\"}, \"sensitivity\": \"normal\","
        " \"showAs\": \"busy\", \"categories\": [\"B\", \"A\"],"
        " \"isReminderOn\": false, \"reminderMinutesBeforeStart\": 15,"
        " \"organizer\": {\"emailAddress\": {\"address\": \"" USER "\"}},"
        " \"attendees\": [{\"type\": \"optional\", \"status\": {\"response\":"
        " \"accepted\"}, \"emailAddress\": {\"name\": \"Bo\", \"address\":"
        " \"Bo@Example.org\"}}, {\"type\": \"required\", \"status\":"
        " {\"response\": \"none\"}, \"emailAddress\": {\"name\": \"Jo\","
        " \"address\": \"jo@example.org\"}}],"
        " \"recurrence\": {\"pattern\": {\"type\": \"daily\", \"interval\": 1,"
        " \"month\": 0, \"dayOfMonth\": 0, \"firstDayOfWeek\": \"sunday\","
        " \"index\": \"first\"}, \"range\": {\"type\": \"numbered\","
        " \"startDate\": \"2030-03-04\", \"endDate\": \"0001-01-01\","
        " \"recurrenceTimeZone\": \"W. Europe Standard Time\","
        " \"numberOfOccurrences\": 5}}}";
  static const char *const same
      = "DTSTART;TZID=Europe/Berlin:20300304T090000\r\n"
        "DTEND;TZID=Europe/Berlin:20300304T100000\r\n"
        "RRULE:FREQ=DAILY;COUNT=5\r\nDESCRIPTION:Bring the CV.\r\n"
        "LOCATION:Room 4\r\nCATEGORIES:A,B\r\n"
        "ATTENDEE;CN=Jo:mailto:jo@example.org\r\n"
        "ATTENDEE;ROLE=OPT-PARTICIPANT:mailto:bo@example.org\r\n";
  struct ical_graph_result res;
  json_t *current = json_loads(graph, 0, NULL);
  json_t *changes = NULL;
  char *lines;
  char err[256];

  (void) state;
  assert_non_null(current);
  json_object_set_new(current, "subject", json_string("Inline"));
  assert_int_equal(translate_inline(same, &berlin, &res), ICAL_GRAPH_OK);
  assert_int_equal(ical_graph_event_changes(current, res.event, &berlin,
                                            &changes, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  assert_int_equal(json_object_size(changes), 0);
  json_decref(changes);
  ical_graph_result_free(&res);

  /* Another hour, another attendee type, another pattern: each is sent,
   * nothing else. */
  lines = xasprintf("DTSTART;TZID=Europe/Berlin:20300304T093000\r\n"
                    "DTEND;TZID=Europe/Berlin:20300304T100000\r\n"
                    "RRULE:FREQ=DAILY;COUNT=6\r\nDESCRIPTION:Bring the CV.\r\n"
                    "LOCATION:Room 4\r\nCATEGORIES:A,B\r\n"
                    "ATTENDEE;CN=Jo:mailto:jo@example.org\r\n"
                    "ATTENDEE:mailto:bo@example.org\r\n");
  assert_int_equal(translate_inline(lines, &berlin, &res), ICAL_GRAPH_OK);
  assert_int_equal(ical_graph_event_changes(current, res.event, &berlin,
                                            &changes, err, sizeof(err)),
                   ICAL_GRAPH_OK);
  assert_int_equal(json_object_size(changes), 3);
  assert_jstr(changes, "start.dateTime", "2030-03-04T09:30:00");
  assert_jint(changes, "recurrence.range.numberOfOccurrences", 6);
  assert_jstr(changes, "attendees.1.type", "required");
  json_decref(changes);
  ical_graph_result_free(&res);
  free(lines);
  json_decref(current);
}

static int teardown_zones(void **state)
{
  icaltimezone_free_builtin_timezones();
  return 0;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_simple_event),
    cmocka_unit_test(test_all_day),
    cmocka_unit_test(test_attendee_roles),
    cmocka_unit_test(test_client_attendees_kept),
    cmocka_unit_test(test_windows_tzid),
    cmocka_unit_test(test_winnipeg_without_vtimezone),
    cmocka_unit_test(test_alias_calcutta),
    cmocka_unit_test(test_unknown_tzid),
    cmocka_unit_test(test_custom_tzid_matched_by_rules),
    cmocka_unit_test(test_floating_and_utc),
    cmocka_unit_test(test_all_day_series_exdate),
    cmocka_unit_test(test_weekly_byday_count),
    cmocka_unit_test(test_monthly_relative),
    cmocka_unit_test(test_yearly),
    cmocka_unit_test(test_monthly_and_yearly_by_date),
    cmocka_unit_test(test_until_end_date),
    cmocka_unit_test(test_unsupported_rules),
    cmocka_unit_test(test_exdate_and_overrides),
    cmocka_unit_test(test_exdate_value_type),
    cmocka_unit_test(test_empty_vtimezone),
    cmocka_unit_test(test_attendee_address),
    cmocka_unit_test(test_teams),
    cmocka_unit_test(test_scheduling_rules),
    cmocka_unit_test(test_invalid_objects),
    cmocka_unit_test(test_impossible_dates),
    cmocka_unit_test(test_reverse),
    cmocka_unit_test(test_reverse_prefer_zone_and_all_day),
    cmocka_unit_test(test_reverse_remembered_zone),
    cmocka_unit_test(test_reverse_windows_name),
    cmocka_unit_test(test_reverse_monthly_and_yearly),
    cmocka_unit_test(test_reverse_all_day_series),
    cmocka_unit_test(test_reverse_exceptions),
    cmocka_unit_test(test_round_trip),
    cmocka_unit_test(test_reverse_client_attendees),
    cmocka_unit_test(test_client_attendees_round_trip),
    cmocka_unit_test(test_freebusy),
    cmocka_unit_test(test_event_changes),
  };

  return cmocka_run_group_tests(tests, NULL, teardown_zones);
}
