/* SPDX-License-Identifier: MIT */
/* Translates CalDAV calendar objects (iCalendar, read with libical) into
 * Microsoft Graph events and back, and Graph free/busy into VFREEBUSY.
 * Pure translation: no I/O. The rules are written down in docs/caldav.md. */
#ifndef NX_ICAL_GRAPH_H
#define NX_ICAL_GRAPH_H

#include <jansson.h>
#include <libical/ical.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Largest calendar object accepted, in bytes. */
#define ICAL_GRAPH_TEXT_MAX (1024 * 1024)
/* Graph's limit of attendees per event (graph-api.md section 3.1). */
#define ICAL_GRAPH_ATTENDEES_MAX 500
/* Overridden occurrences (RECURRENCE-ID components) per calendar object. */
#define ICAL_GRAPH_OVERRIDES_MAX 200
/* EXDATE values per series. */
#define ICAL_GRAPH_EXDATES_MAX 1000
/* The master's client-scheduled ATTENDEEs (SCHEDULE-AGENT=CLIENT or NONE)
 * the caller remembers per object, and the bytes their lines may take
 * together: the CalDAV layer keeps them in its mapping table and lists up
 * to CALDAV_OBJECTS_MAX rows at once. */
#define ICAL_GRAPH_CLIENT_ATTENDEES_MAX 16
#define ICAL_GRAPH_CLIENT_TEXT_MAX 4096
/* Room for "nextal-" and a SHA-256 in hex, terminator included. */
#define ICAL_GRAPH_TXID_SIZE 72
/* Longest zone name in a result, terminator included (TZ_MAP_NAME_MAX). */
#define ICAL_GRAPH_ZONE_MAX 128

/* The years a Graph dateTime can hold. graph-api.md does not say; these are
 * the bounds of the .NET DateTime behind Graph's dateTime strings
 * ("0001-01-01" to "9999-12-31"), assumed rather than documented. */
#define ICAL_GRAPH_YEAR_MIN 1
#define ICAL_GRAPH_YEAR_MAX 9999

/* Why a translation failed; the CalDAV layer maps each to a status and a
 * precondition element. res->error or err holds a sentence for the body. */
enum ical_graph_error {
  ICAL_GRAPH_OK = 0,
  ICAL_GRAPH_EPARSE = -1,     /* not valid iCalendar: valid-calendar-data */
  ICAL_GRAPH_ECOMPONENT = -2, /* not VEVENT: supported-calendar-component */
  ICAL_GRAPH_EINVALID = -3,   /* valid iCalendar CalDAV or Graph refuses */
  ICAL_GRAPH_ETZ = -4,        /* a time zone that does not resolve, named */
  ICAL_GRAPH_ERRULE = -5,     /* a recurrence Graph cannot express, explained */
  ICAL_GRAPH_EORGANIZER = -6, /* organizer is not the linked user */
  ICAL_GRAPH_EMETHOD = -7,    /* METHOD in a calendar object (RFC 4791 4.1) */
  ICAL_GRAPH_ELIMIT = -8,     /* one of the limits above */
  ICAL_GRAPH_EGRAPH = -9,     /* Graph JSON lacking what a VEVENT needs */
  ICAL_GRAPH_ENOTFOUND = -10, /* free/busy: Graph does not know the address */
  ICAL_GRAPH_ENOZONE = -11,   /* a floating time or a date, no default zone */
};

/* What the caller knows about the calendar the object is written to. */
struct ical_graph_options {
  const char *user; /* linked user's address; NULL skips organizer check */
  const char *default_zone; /* any TZID form, for floating and all-day times;
                               NULL: they fail with ICAL_GRAPH_ENOZONE */
};

/* The translation of one calendar object (one UID). */
struct ical_graph_result {
  json_t *event; /* Graph event for POST or PATCH, without transactionId */
  char *uid;     /* the object's UID */
  char transaction_id[ICAL_GRAPH_TXID_SIZE]; /* "nextal-" + sha256(uid) hex */
  bool cancelled; /* master has STATUS:CANCELLED: cancel, don't create */
  char *method;   /* METHOD value when present (the call then fails) */
  json_t *client_scheduled; /* addresses left out: SCHEDULE-AGENT=CLIENT */
  /* The master's client-scheduled ATTENDEE properties as libical writes
   * them, parameters included: one unfolded line each, without CRLF, for
   * the caller to remember and pass back to ical_graph_to_ical. */
  json_t *client_attendees;
  json_t *exdates;   /* original starts to delete, dateTimeTimeZone objects */
  json_t *overrides; /* [{"originalStart": dateTimeTimeZone, "event": {}}] */
  /* The TZIDs the master's DTSTART and DTEND were written in, as written
   * ("W. Europe Standard Time", "America/Winnipeg"), for the caller to
   * remember and pass back to ical_graph_to_ical; "" for UTC, floating
   * times, dates and zones only a VTIMEZONE explains. */
  char start_tzid[ICAL_GRAPH_ZONE_MAX];
  char end_tzid[ICAL_GRAPH_ZONE_MAX];
  char error[256]; /* sentence naming what was refused and why */
};

/* Parses text (len bytes of a VCALENDAR with VEVENTs of one UID) and builds
 * the Graph event of its master component. EXDATEs and cancelled overrides
 * land in res->exdates, other overrides in res->overrides, each keyed by
 * its original start in UTC ({"dateTime", "timeZone": "UTC"}; for all-day
 * series, midnight of the date in the default zone, as UTC): the caller
 * applies them to the series' instances after creating it. A floating
 * time or a date without opt->default_zone fails with ICAL_GRAPH_ENOZONE,
 * so that the caller can find the zone and translate again. Returns
 * ICAL_GRAPH_OK and fills res, or a negative ical_graph_error with res->error
 * set; in both cases the caller releases res with ical_graph_result_free. */
int ical_graph_from_ical(const char *text, size_t len,
                         const struct ical_graph_options *opt,
                         struct ical_graph_result *res);

void ical_graph_result_free(struct ical_graph_result *res);

/* Checks that t, the value of the property what ("DTSTART"), is a date
 * (and time) that exists and that Graph can hold: a year from
 * ICAL_GRAPH_YEAR_MIN to ICAL_GRAPH_YEAR_MAX, a real month and day, a time
 * of day below 24:00 and no leap second. libical reads any digits into
 * the fields, and its icaltime_is_valid_time() checks only that the year
 * is 0 to 3000. Returns ICAL_GRAPH_OK, or ICAL_GRAPH_EPARSE with a
 * sentence naming the property and the value in err (errsize bytes). */
int ical_graph_time_check(const char *what, struct icaltimetype t, char *err,
                          size_t errsize);

/* What goes with a Graph event when it becomes a calendar object. */
struct ical_graph_ical_options {
  const char *uid;          /* the UID Nextal wrote, from the UID map */
  const json_t *exceptions; /* Graph instances of type "exception" with
                               "originalStart", or NULL */
  const json_t *deleted;    /* original starts of deleted occurrences, as
                               DateTimeOffset strings, or NULL */
  const char *start_tzid;   /* zones the client wrote DTSTART and DTEND in */
  const char *end_tzid;     /* (result's start_tzid, end_tzid), or NULL */
  const json_t *client_attendees; /* remembered ATTENDEE lines (result's
                                     client_attendees), or NULL */
};

/* Builds a VCALENDAR with one VEVENT (plus one per exception) from a Graph
 * event, whether its times are in UTC or in a Prefer: outlook.timezone zone.
 * Times are written in the zone the event was created in (its
 * originalStartTimeZone and originalEndTimeZone) with a VTIMEZONE from
 * libical's zone data; opt->start_tzid and end_tzid replace those while
 * they map to the same Windows zone, so that a time written in
 * America/Winnipeg comes back there and not in America/Chicago, the IANA
 * zone of "Central Standard Time", and one written in "W. Europe Standard
 * Time" comes back under that TZID, its VTIMEZONE holding the rules of
 * Europe/Berlin. The lines of opt->client_attendees
 * that are ATTENDEEs are added to the master VEVENT as they were written
 * (SCHEDULE-AGENT=CLIENT added where missing), except an address Graph
 * lists itself, which Graph's line stands for. On success returns ICAL_GRAPH_OK
 * and stores in *text a string the caller frees with free(); otherwise a
 * negative ical_graph_error with a sentence in err (errsize bytes). */
int ical_graph_to_ical(const json_t *event,
                       const struct ical_graph_ical_options *opt, char **text,
                       char *err, size_t errsize);

/* What an update must send: the properties of wanted (a translated
 * event, ical_graph_from_ical()'s res->event or an override's event) whose
 * value differs from what current (Graph's event or instance, as read)
 * holds. current is first translated to a calendar object and back with
 * opt, so that what Graph rewrites compares as what it stands for: an HTML
 * body as its text, UTC times as wall times in the event's zone,
 * recurrence without Graph's defaults. Attendees compare as a set of
 * address (any case), type and, where wanted names one, name; categories
 * as a set. Properties wanted leaves out are not compared (a PATCH keeps
 * them). Returns ICAL_GRAPH_OK with *changes a new object, empty when
 * nothing differs (json_decref() it), or a negative ical_graph_error with
 * a sentence in err when current cannot be read that way; the caller then
 * sends wanted whole. */
int ical_graph_event_changes(const json_t *current, const json_t *wanted,
                             const struct ical_graph_options *opt,
                             json_t **changes, char *err, size_t errsize);

/* The question a free/busy answer responds to. */
struct ical_graph_freebusy_request {
  const char *method;    /* "REPLY" for a schedule-outbox answer, NULL for the
                            free-busy-query REPORT */
  const char *organizer; /* requester's address or NULL */
  const char *uid;       /* the request's UID to echo, or NULL */
  time_t start, end;     /* the window asked about */
};

/* Builds a VCALENDAR with one VFREEBUSY for one element of a Graph
 * getSchedule "value" array: busy, tentative and out-of-office items become
 * FREEBUSY periods in UTC with FBTYPE BUSY, BUSY-TENTATIVE and
 * BUSY-UNAVAILABLE. Returns ICAL_GRAPH_OK with *text to free(), or
 * ICAL_GRAPH_ENOTFOUND when Graph reports an error for the address (the
 * caller answers RFC 6638 request-status 3.7), or another negative
 * ical_graph_error; err receives a sentence. */
int ical_graph_freebusy_to_ical(const json_t *schedule,
                                const struct ical_graph_freebusy_request *req,
                                char **text, char *err, size_t errsize);

#endif
