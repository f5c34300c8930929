/* SPDX-License-Identifier: MIT */
/* Resolves the time zone names calendar clients write (IANA names and their
 * aliases, Windows names, vendor-prefixed TZIDs, UTC) to the Windows names
 * Graph wants and back, with ICU's CLDR tables and libical's zone data. */
#ifndef NX_TZ_MAP_H
#define NX_TZ_MAP_H

#include <libical/ical.h>
#include <stdbool.h>
#include <stddef.h>

/* Longest zone name accepted or produced, terminator included. Windows names
 * reach about 40 bytes, IANA names about 32; vendor prefixes add more. */
#define TZ_MAP_NAME_MAX 128

/* Why a name did not resolve; the caller names the zone in its message. */
enum tz_map_error {
  TZ_MAP_OK = 0,
  TZ_MAP_EUNKNOWN = -1,   /* no zone of that name is known */
  TZ_MAP_ENOWINDOWS = -2, /* a real zone without a Windows equivalent */
  TZ_MAP_ENAME = -3,      /* empty, too long or not UTF-8 */
};

/* Resolves tzid to the Windows zone name Graph accepts and copies it into
 * out (size bytes). Accepted forms: Windows names ("W. Europe Standard
 * Time"), IANA names and aliases ("Europe/Berlin", "Asia/Calcutta",
 * "US/Eastern"), vendor-prefixed IANA names ("/mozilla.org/20070129_1/
 * Europe/Berlin", "/freeassociation.sourceforge.net/Tzfile/Europe/Berlin"),
 * surrounding quotes, and the UTC spellings "UTC", "Z", "GMT", "Etc/UTC",
 * "tzone://Microsoft/Utc". Returns TZ_MAP_OK or a negative tz_map_error;
 * never falls back to UTC. */
int tz_map_to_windows(const char *tzid, char *out, size_t size);

/* Resolves tzid (any form tz_map_to_windows accepts) to an IANA zone id as
 * ICU spells it canonically; CLDR's canonical ids are sometimes the older
 * names ("Asia/Calcutta"). UTC resolves to "Etc/UTC". Returns TZ_MAP_OK or a
 * negative tz_map_error. */
int tz_map_to_iana(const char *tzid, char *out, size_t size);

/* Returns libical's built-in zone for tzid (any form tz_map_to_windows
 * accepts), or NULL when none is known. UTC gives libical's UTC zone. The
 * zone belongs to libical and lives until icaltimezone_free_builtin_timezones;
 * the caller frees nothing. */
icaltimezone *tz_map_ical_zone(const char *tzid);

/* Whether the VTIMEZONE component vtimezone has at least one STANDARD or
 * DAYLIGHT observance, without which it defines no zone (RFC 5545 3.6.5
 * requires one). */
bool tz_map_vtimezone_has_rules(icalcomponent *vtimezone);

/* Finds the Windows zone whose UTC offsets equal those of the VTIMEZONE
 * component vtimezone at every day of the given year, for TZIDs no table
 * knows (Outlook's "(UTC+01:00) Amsterdam, Berlin, ..." or "Customized Time
 * Zone"). Its X-LIC-LOCATION is tried first. When several zones match, one
 * whose city is named in the TZID wins, then the zone CLDR lists first for
 * its Windows name. Copies the Windows name into out; returns TZ_MAP_OK or
 * TZ_MAP_EUNKNOWN when no zone matches or the component has no observance
 * to match (tz_map_vtimezone_has_rules()). The component is not modified. */
int tz_map_match_vtimezone(icalcomponent *vtimezone, int year, char *out,
                           size_t size);

#endif
