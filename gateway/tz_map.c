/* SPDX-License-Identifier: MIT */
/* Time zone name resolution for the CalDAV translation: every TZID a client
 * writes becomes a Windows zone name for Graph, through ICU's CLDR tables;
 * zones no table knows are matched by the rules of their VTIMEZONE. */
#include "tz_map.h"

#include <assert.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unicode/ucal.h>
#include <unicode/uenum.h>
#include <unicode/ustring.h>

/* UTC spellings ICU does not know as zone ids. */
static const char *const tz_utc_names[] = {
  "Z",
  "tzone://Microsoft/Utc",
  "Coordinated Universal Time",
};

/* A resolved zone: its canonical IANA id and its Windows name ("" when
 * Windows has none), plus the IANA name as the client spelled it. */
struct tz_names {
  char iana[TZ_MAP_NAME_MAX];
  char windows[TZ_MAP_NAME_MAX];
  char given[TZ_MAP_NAME_MAX];
};

static int tz_copy(char *out, size_t size, const char *s)
{
  size_t len = strlen(s);

  if (len >= size)
    return TZ_MAP_ENAME;
  memcpy(out, s, len + 1);
  return TZ_MAP_OK;
}

/* Copies tzid without surrounding blanks and double quotes. */
static int tz_trim(const char *tzid, char *out, size_t size)
{
  const char *end;

  while (isspace((unsigned char) *tzid) || *tzid == '"')
    tzid++;
  end = tzid + strlen(tzid);
  while (end > tzid && (isspace((unsigned char) end[-1]) || end[-1] == '"'))
    end--;
  if (end == tzid || (size_t) (end - tzid) >= size)
    return TZ_MAP_ENAME;
  memcpy(out, tzid, (size_t) (end - tzid));
  out[end - tzid] = '\0';
  return TZ_MAP_OK;
}

static int tz_to_uchars(const char *s, UChar *out, int32_t cap)
{
  UErrorCode st = U_ZERO_ERROR;

  u_strFromUTF8(out, cap, NULL, s, -1, &st);
  return U_SUCCESS(st) && st != U_STRING_NOT_TERMINATED_WARNING ? TZ_MAP_OK
                                                                : TZ_MAP_ENAME;
}

/* Converts an ICU result of len units to UTF-8; len 0 is ICU's way of
 * saying "unknown" (graph-api.md section 6), so it is an error here. */
static int tz_from_uchars(const UChar *s, int32_t len, UErrorCode st, char *out,
                          size_t size)
{
  if (U_FAILURE(st) || len <= 0)
    return TZ_MAP_EUNKNOWN;
  st = U_ZERO_ERROR;
  u_strToUTF8(out, (int32_t) size, NULL, s, len, &st);
  if (U_FAILURE(st) || st == U_STRING_NOT_TERMINATED_WARNING)
    return TZ_MAP_ENAME;
  return TZ_MAP_OK;
}

/* Fills names when name is a Windows zone name. */
static int tz_resolve_windows(const char *name, struct tz_names *names)
{
  UChar in[TZ_MAP_NAME_MAX], id[TZ_MAP_NAME_MAX];
  UErrorCode st = U_ZERO_ERROR;
  int32_t len;
  int rc;

  rc = tz_to_uchars(name, in, TZ_MAP_NAME_MAX);
  if (rc < 0)
    return rc;
  len = ucal_getTimeZoneIDForWindowsID(in, -1, NULL, id, TZ_MAP_NAME_MAX, &st);
  rc = tz_from_uchars(id, len, st, names->iana, sizeof(names->iana));
  if (rc < 0)
    return rc;
  return tz_copy(names->windows, sizeof(names->windows), name);
}

/* Fills names when name is an IANA zone id or alias ICU knows. */
static int tz_resolve_iana(const char *name, struct tz_names *names)
{
  UChar in[TZ_MAP_NAME_MAX], id[TZ_MAP_NAME_MAX], win[TZ_MAP_NAME_MAX];
  UErrorCode st = U_ZERO_ERROR;
  UBool system = 0;
  int32_t len;
  int rc;

  rc = tz_to_uchars(name, in, TZ_MAP_NAME_MAX);
  if (rc < 0)
    return rc;
  len = ucal_getCanonicalTimeZoneID(in, -1, id, TZ_MAP_NAME_MAX, &system, &st);
  if (!system)
    return TZ_MAP_EUNKNOWN;
  rc = tz_from_uchars(id, len, st, names->iana, sizeof(names->iana));
  if (rc < 0)
    return rc;

  /* A real zone may lack a Windows equivalent (Antarctica/Troll). */
  names->windows[0] = '\0';
  st = U_ZERO_ERROR;
  len = ucal_getWindowsTimeZoneID(id, -1, win, TZ_MAP_NAME_MAX, &st);
  if (len > 0)
    tz_from_uchars(win, len, st, names->windows, sizeof(names->windows));
  return tz_copy(names->given, sizeof(names->given), name);
}

/* Vendor prefixes put the IANA id last: "/mozilla.org/20070129_1/Europe/
 * Berlin", "/softwarestudio.org/Olson_20011030_5/America/New_York". Tries
 * every suffix that follows a slash, longest first. */
static int tz_resolve_prefixed(const char *name, struct tz_names *names)
{
  const char *p;

  for (p = strchr(name, '/'); p; p = strchr(p + 1, '/')) {
    if (p[1] != '\0' && tz_resolve_iana(p + 1, names) == TZ_MAP_OK)
      return TZ_MAP_OK;
  }
  return TZ_MAP_EUNKNOWN;
}

static int tz_resolve(const char *tzid, struct tz_names *names)
{
  char name[TZ_MAP_NAME_MAX];
  size_t i;
  int rc;

  memset(names, 0, sizeof(*names));
  rc = tz_trim(tzid, name, sizeof(name));
  if (rc < 0)
    return rc;
  for (i = 0; i < sizeof(tz_utc_names) / sizeof(tz_utc_names[0]); i++) {
    if (strcasecmp(name, tz_utc_names[i]) == 0)
      return tz_resolve_windows("UTC", names);
  }
  if (tz_resolve_windows(name, names) == TZ_MAP_OK)
    return TZ_MAP_OK;
  if (tz_resolve_iana(name, names) == TZ_MAP_OK)
    return TZ_MAP_OK;
  return tz_resolve_prefixed(name, names);
}

int tz_map_to_windows(const char *tzid, char *out, size_t size)
{
  struct tz_names names;
  int rc;

  rc = tz_resolve(tzid, &names);
  if (rc < 0)
    return rc;
  if (names.windows[0] == '\0')
    return TZ_MAP_ENOWINDOWS;
  return tz_copy(out, size, names.windows);
}

int tz_map_to_iana(const char *tzid, char *out, size_t size)
{
  struct tz_names names;
  int rc;

  rc = tz_resolve(tzid, &names);
  if (rc < 0)
    return rc;
  return tz_copy(out, size, names.iana);
}

icaltimezone *tz_map_ical_zone(const char *tzid)
{
  struct tz_names names;
  icaltimezone *zone = NULL;

  if (tz_resolve(tzid, &names) < 0)
    return NULL;
  if (strcmp(names.windows, "UTC") == 0 || strcmp(names.iana, "Etc/UTC") == 0)
    return icaltimezone_get_utc_timezone();

  /* The client's own spelling first, so Asia/Kolkata stays Asia/Kolkata. */
  if (names.given[0] != '\0')
    zone = icaltimezone_get_builtin_timezone(names.given);
  if (!zone)
    zone = icaltimezone_get_builtin_timezone(names.iana);
  return zone;
}

/* One day's noon of the given year, as UTC seconds. */
static icaltimetype tz_sample_time(int year, int day)
{
  icaltimetype t = icaltime_from_day_of_year(day + 1, year);

  t.is_date = 0;
  t.hour = 12;
  t.zone = icaltimezone_get_utc_timezone();
  return t;
}

/* True when ICU's zone id has the offsets in offsets[0..ndays). */
static bool tz_offsets_match(const UChar *id, int year, const int *offsets,
                             int ndays)
{
  UErrorCode st = U_ZERO_ERROR;
  UCalendar *cal;
  bool match = true;
  int day;

  cal = ucal_open(id, -1, NULL, UCAL_GREGORIAN, &st);
  if (U_FAILURE(st))
    return false;
  for (day = 0; day < ndays && match; day++) {
    icaltimetype t = tz_sample_time(year, day);
    int32_t off;

    ucal_setMillis(cal, (UDate) icaltime_as_timet(t) * 1000.0, &st);
    off = ucal_get(cal, UCAL_ZONE_OFFSET, &st)
          + ucal_get(cal, UCAL_DST_OFFSET, &st);
    match = U_SUCCESS(st) && off == offsets[day] * 1000;
  }
  ucal_close(cal);
  return match;
}

/* Scores a matching candidate: its city named in the TZID counts most, being
 * the zone CLDR lists first for its Windows name next. */
static int tz_candidate_score(const char *iana, const UChar *win,
                              const char *tzid)
{
  UChar golden[TZ_MAP_NAME_MAX];
  char city[TZ_MAP_NAME_MAX], gold[TZ_MAP_NAME_MAX];
  UErrorCode st = U_ZERO_ERROR;
  const char *slash = strrchr(iana, '/');
  int32_t len;
  int score = 0;
  char *p;

  if (tz_copy(city, sizeof(city), slash ? slash + 1 : iana) == TZ_MAP_OK) {
    for (p = city; *p; p++) {
      if (*p == '_')
        *p = ' ';
    }
    if (tzid && strcasestr(tzid, city))
      score += 2;
  }
  len = ucal_getTimeZoneIDForWindowsID(win, -1, NULL, golden, TZ_MAP_NAME_MAX,
                                       &st);
  if (tz_from_uchars(golden, len, st, gold, sizeof(gold)) == TZ_MAP_OK
      && strcmp(gold, iana) == 0)
    score += 1;
  return score;
}

/* Walks ICU's canonical zones for the best one whose offsets match. */
static int tz_match_offsets(const int *offsets, int ndays, int year,
                            const char *tzid, char *out, size_t size)
{
  UErrorCode st = U_ZERO_ERROR;
  UEnumeration *ids;
  const UChar *id;
  int32_t idlen;
  int best = -1;
  int rc = TZ_MAP_EUNKNOWN;

  ids = ucal_openTimeZoneIDEnumeration(UCAL_ZONE_TYPE_CANONICAL_LOCATION, NULL,
                                       NULL, &st);
  if (U_FAILURE(st))
    return TZ_MAP_EUNKNOWN;
  while ((id = uenum_unext(ids, &idlen, &st)) && U_SUCCESS(st)) {
    UChar win[TZ_MAP_NAME_MAX];
    char iana[TZ_MAP_NAME_MAX], winname[TZ_MAP_NAME_MAX];
    UErrorCode wst = U_ZERO_ERROR;
    int32_t wlen;
    int score;

    wlen = ucal_getWindowsTimeZoneID(id, idlen, win, TZ_MAP_NAME_MAX, &wst);
    if (tz_from_uchars(win, wlen, wst, winname, sizeof(winname)) < 0
        || tz_from_uchars(id, idlen, U_ZERO_ERROR, iana, sizeof(iana)) < 0
        || !tz_offsets_match(id, year, offsets, ndays))
      continue;
    score = tz_candidate_score(iana, win, tzid);
    if (score > best && tz_copy(out, size, winname) == TZ_MAP_OK) {
      best = score;
      rc = TZ_MAP_OK;
    }
  }
  uenum_close(ids);
  return rc;
}

bool tz_map_vtimezone_has_rules(icalcomponent *vtimezone)
{
  return icalcomponent_get_first_component(vtimezone, ICAL_XSTANDARD_COMPONENT)
             != NULL
         || icalcomponent_get_first_component(vtimezone,
                                              ICAL_XDAYLIGHT_COMPONENT)
                != NULL;
}

int tz_map_match_vtimezone(icalcomponent *vtimezone, int year, char *out,
                           size_t size)
{
  int offsets[366];
  icalproperty *prop;
  icalcomponent *copy;
  icaltimezone *zone;
  const char *tzid = NULL;
  char *location;
  int ndays, day, rc;

  assert(icalcomponent_isa(vtimezone) == ICAL_VTIMEZONE_COMPONENT);
  if (!tz_map_vtimezone_has_rules(vtimezone))
    return TZ_MAP_EUNKNOWN;
  location = icaltimezone_get_location_from_vtimezone(vtimezone);
  if (location) {
    rc = tz_map_to_windows(location, out, size);
    free(location);
    if (rc == TZ_MAP_OK)
      return rc;
  }

  /* libical computes the component's offsets from its own rules; the zone
   * owns the copy only once it accepted it. */
  zone = icaltimezone_new();
  copy = icalcomponent_new_clone(vtimezone);
  if (!icaltimezone_set_component(zone, copy)) {
    icalcomponent_free(copy);
    icaltimezone_free(zone, 1);
    return TZ_MAP_EUNKNOWN;
  }
  ndays = icaltime_days_in_year(year);
  for (day = 0; day < ndays; day++) {
    icaltimetype t = tz_sample_time(year, day);
    int dst;

    offsets[day] = icaltimezone_get_utc_offset_of_utc_time(zone, &t, &dst);
  }
  prop = icalcomponent_get_first_property(vtimezone, ICAL_TZID_PROPERTY);
  if (prop)
    tzid = icalproperty_get_tzid(prop);
  rc = tz_match_offsets(offsets, ndays, year, tzid, out, size);
  icaltimezone_free(zone, 1);
  return rc;
}
