/* SPDX-License-Identifier: MIT */
/* iCalendar <-> Graph event translation for the CalDAV endpoint: libical
 * reads and writes the calendar side, jansson the Graph side, tz_map the
 * zones in between. docs/caldav.md lists every rule implemented here. */
#include "ical_graph.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <libical/ical.h>
#include <libxml/HTMLparser.h>
#include <libxml/tree.h>

#include "http_server.h"
#include "tz_map.h"
#include "xalloc.h"

#define IG_PRODID "-//Nextal//nextal-agent//EN"
/* Longest e-mail address (RFC 5321 4.5.3.1.3: a 256-byte path less the
 * angle brackets). */
#define IG_ADDRESS_MAX 254

/* Graph's names for RFC 5545 weekdays, indexed by icalrecurrencetype_weekday
 * (1 = Sunday). */
static const char *const ig_graph_days[] = {
  NULL,        "sunday",   "monday", "tuesday",
  "wednesday", "thursday", "friday", "saturday",
};
static const char *const ig_ical_days[] = {
  NULL, "SU", "MO", "TU", "WE", "TH", "FR", "SA",
};
/* Graph's week-of-month index names for BYDAY/BYSETPOS positions 1..4. */
static const char *const ig_graph_index[] = {
  NULL, "first", "second", "third", "fourth",
};

/* State of one iCalendar -> Graph translation. */
struct ig_in {
  icalcomponent *vcal;
  const struct ical_graph_options *opt;
  struct ical_graph_result *res;
  char default_win[TZ_MAP_NAME_MAX]; /* "" when the caller gave no zone */
  size_t client_text; /* bytes of the lines in res->client_attendees */
};

_Static_assert(ICAL_GRAPH_ZONE_MAX == TZ_MAP_NAME_MAX,
               "result zone names hold any tz_map name");

/* A DTSTART (or another time) resolved for Graph. */
struct ig_when {
  icaltimetype t;              /* wall time as written */
  char win[TZ_MAP_NAME_MAX];   /* the Windows zone Graph gets */
  icaltimezone *zone;          /* for conversions to UTC */
  char named[TZ_MAP_NAME_MAX]; /* TZID as written when it names a zone */
};

static int ig_fail(char *err, size_t size, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int ig_fail(char *err, size_t size, int rc, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(err, size, fmt, ap);
  va_end(ap);
  return rc;
}

#define IN_FAIL(in, rc, ...)                                                   \
  ig_fail((in)->res->error, sizeof((in)->res->error), (rc), __VA_ARGS__)

/* Sets key to a JSON string; text that is not UTF-8 is refused. */
static int ig_set_string(struct ig_in *in, json_t *obj, const char *key,
                         const char *value)
{
  json_t *s = json_string(value);

  if (!s)
    return IN_FAIL(in, ICAL_GRAPH_EPARSE, "%s is not valid UTF-8", key);
  json_object_set_new(obj, key, s);
  return ICAL_GRAPH_OK;
}

static json_t *ig_json_time(icaltimetype t, const char *zone)
{
  char buf[32];

  snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d", t.year, t.month,
           t.day, t.is_date ? 0 : t.hour, t.is_date ? 0 : t.minute,
           t.is_date ? 0 : t.second);
  return json_pack("{s:s, s:s}", "dateTime", buf, "timeZone", zone);
}

/* Strips a "mailto:" scheme; other calendar user addresses are refused
 * because Graph addresses attendees by e-mail only. */
static const char *ig_mailto(const char *value)
{
  if (value && strncasecmp(value, "mailto:", 7) == 0 && value[7] != '\0')
    return value + 7;
  return NULL;
}

/* RFC 5322 atext, the characters of a dot-atom local part. */
static bool ig_atext(unsigned char c)
{
  return c < 0x80
         && (isalnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c)));
}

/* Whether s[0..len) is a dot-atom of chars accepted by ok: no empty part,
 * no dot at either end. */
static bool ig_dot_atom(const char *s, size_t len, bool (*ok)(unsigned char))
{
  if (len == 0 || s[0] == '.' || s[len - 1] == '.')
    return false;
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '.' ? s[i + 1] == '.' : !ok((unsigned char) s[i]))
      return false;
  }
  return true;
}

static bool ig_domain_char(unsigned char c)
{
  return c < 0x80 && (isalnum(c) || c == '-');
}

/* Whether addr is one ASCII local@domain Exchange can address: a dot-atom
 * local part of at most 64 bytes, a host name, 254 bytes in all. Quoted
 * local parts, address literals and non-ASCII (EAI) addresses are not. */
static bool ig_address_valid(const char *addr)
{
  const char *at = strchr(addr, '@');
  size_t len = strlen(addr);

  if (at == NULL || len > IG_ADDRESS_MAX || at - addr > 64)
    return false;
  return ig_dot_atom(addr, (size_t) (at - addr), ig_atext)
         && ig_dot_atom(at + 1, strlen(at + 1), ig_domain_char);
}

/* The one address of a mailto: URI (RFC 6068), percent-decoded, into *out
 * (free()): hfields after '?' (subject=, body=) say nothing about who is
 * invited and are dropped; a list of addresses, or anything that is not
 * local@domain once decoded, is refused. Returns ICAL_GRAPH_OK, or the
 * error with *out NULL. */
static int ig_mailto_decode(struct ig_in *in, const char *what, const char *uri,
                            char **out)
{
  const char *to = ig_mailto(uri);

  *out = NULL;
  if (to == NULL)
    return IN_FAIL(in, ICAL_GRAPH_EINVALID,
                   "%s \"%s\" is not a mailto: address", what, uri ? uri : "");
  if (http_percent_decode(to, strcspn(to, "?"), 0, out) < 0
      || !ig_address_valid(*out)) {
    free(*out);
    *out = NULL;
    return IN_FAIL(in, ICAL_GRAPH_EPARSE,
                   "%s \"%s\" is not one e-mail address of the form "
                   "local@domain (ASCII, at most %d bytes)",
                   what, uri, IG_ADDRESS_MAX);
  }
  return ICAL_GRAPH_OK;
}

/* The time as the client wrote it, fields unchecked: "20261345T250000". */
static void ig_time_text(icaltimetype t, char *out, size_t size)
{
  if (t.is_date)
    snprintf(out, size, "%04d%02d%02d", t.year, t.month, t.day);
  else
    snprintf(out, size, "%04d%02d%02dT%02d%02d%02d", t.year, t.month, t.day,
             t.hour, t.minute, t.second);
}

int ical_graph_time_check(const char *what, struct icaltimetype t, char *err,
                          size_t errsize)
{
  char text[64];

  ig_time_text(t, text, sizeof(text));
  if (t.year < ICAL_GRAPH_YEAR_MIN || t.year > ICAL_GRAPH_YEAR_MAX)
    return ig_fail(err, errsize, ICAL_GRAPH_EPARSE,
                   "%s %s: year %d is outside %d to %d, the years Graph "
                   "accepts",
                   what, text, t.year, ICAL_GRAPH_YEAR_MIN,
                   ICAL_GRAPH_YEAR_MAX);
  if (t.month < 1 || t.month > 12)
    return ig_fail(err, errsize, ICAL_GRAPH_EPARSE,
                   "%s %s: there is no month %d", what, text, t.month);
  if (t.day < 1 || t.day > icaltime_days_in_month(t.month, t.year))
    return ig_fail(err, errsize, ICAL_GRAPH_EPARSE,
                   "%s %s: %04d-%02d has no day %d", what, text, t.year,
                   t.month, t.day);
  if (t.is_date)
    return ICAL_GRAPH_OK;
  if (t.hour > 23 || t.minute > 59)
    return ig_fail(err, errsize, ICAL_GRAPH_EPARSE,
                   "%s %s: there is no time of day %02d:%02d", what, text,
                   t.hour, t.minute);
  /* RFC 5545 allows second 60 for a leap second; Graph's times have none. */
  if (t.second > 59)
    return ig_fail(err, errsize, ICAL_GRAPH_EPARSE,
                   "%s %s: second %d (a leap second) cannot be written to "
                   "Graph",
                   what, text, t.second);
  return ICAL_GRAPH_OK;
}

static int ig_time_check(struct ig_in *in, const char *what, icaltimetype t)
{
  return ical_graph_time_check(what, t, in->res->error, sizeof(in->res->error));
}

/* Resolves the zone of a time property, after checking that the time
 * exists at all (before any zone is looked for, so that an impossible date
 * is refused without reading the mailbox's zone). Floating times and dates
 * take the caller's default zone; a TZID no table knows is matched by its
 * VTIMEZONE; anything else is an error that names the zone. */
static int ig_zone_resolve(struct ig_in *in, icalproperty *prop,
                           struct ig_when *w)
{
  icalparameter *param;
  icaltimezone *vzone;
  const char *tzid;
  int rc;

  rc = ig_time_check(in, icalproperty_kind_to_string(icalproperty_isa(prop)),
                     w->t);
  if (rc < 0)
    return rc;
  param = icalproperty_get_first_parameter(prop, ICAL_TZID_PARAMETER);
  if (icaltime_is_utc(w->t)) {
    snprintf(w->win, sizeof(w->win), "UTC");
    w->zone = icaltimezone_get_utc_timezone();
    return ICAL_GRAPH_OK;
  }
  if (w->t.is_date || !param) {
    if (in->default_win[0] == '\0')
      return IN_FAIL(in, ICAL_GRAPH_ENOZONE,
                     "%s is %s and needs the calendar's default time zone",
                     icalproperty_kind_to_string(icalproperty_isa(prop)),
                     w->t.is_date ? "a date" : "a floating time (no TZID)");
    snprintf(w->win, sizeof(w->win), "%s", in->default_win);
    w->zone = tz_map_ical_zone(in->opt->default_zone);
    return ICAL_GRAPH_OK;
  }

  tzid = icalparameter_get_tzid(param);
  rc = tz_map_to_windows(tzid, w->win, sizeof(w->win));
  vzone = icalcomponent_get_timezone(in->vcal, tzid);
  /* A VTIMEZONE without STANDARD or DAYLIGHT defines no offset at all (it
   * would read as UTC): the TZID is taken as if it had none. */
  if (vzone && !tz_map_vtimezone_has_rules(icaltimezone_get_component(vzone)))
    vzone = NULL;
  if (rc == TZ_MAP_OK) {
    w->zone = tz_map_ical_zone(tzid);
    /* Remembered as written (a Windows name, an alias, a vendor prefix) so
     * that the time comes back under the same TZID. tz_map_to_windows()
     * refused names longer than the buffer. */
    if (w->zone && w->zone != icaltimezone_get_utc_timezone())
      snprintf(w->named, sizeof(w->named), "%s", tzid);
    if (!w->zone)
      w->zone = vzone;
    return ICAL_GRAPH_OK;
  }
  if (rc == TZ_MAP_ENOWINDOWS)
    return IN_FAIL(in, ICAL_GRAPH_ETZ,
                   "time zone \"%s\" has no Windows equivalent, and Graph "
                   "accepts only Windows zones",
                   tzid);
  if (!vzone)
    return IN_FAIL(in, ICAL_GRAPH_ETZ,
                   "time zone \"%s\" is unknown and the calendar carries no "
                   "VTIMEZONE for it",
                   tzid);
  rc = tz_map_match_vtimezone(icaltimezone_get_component(vzone), w->t.year,
                              w->win, sizeof(w->win));
  if (rc < 0)
    return IN_FAIL(in, ICAL_GRAPH_ETZ,
                   "time zone \"%s\" is unknown and its VTIMEZONE matches no "
                   "Windows zone",
                   tzid);
  w->zone = vzone;
  return ICAL_GRAPH_OK;
}

/* The UTC dateTimeTimeZone of a time in its zone. A date is midnight in
 * the default zone, where an all-day series' occurrences start: Graph's
 * originalStart of such an occurrence is that instant in UTC. */
static int ig_utc_key(struct ig_in *in, const struct ig_when *w, json_t **out)
{
  icaltimetype t = w->t;

  if (!w->zone)
    return IN_FAIL(in, ICAL_GRAPH_ETZ,
                   "no zone data to convert a time in \"%s\" to UTC", w->win);
  if (t.is_date) {
    t.is_date = 0;
    t.hour = t.minute = t.second = 0;
  }
  t.zone = w->zone;
  t = icaltime_convert_to_zone(t, icaltimezone_get_utc_timezone());
  *out = ig_json_time(t, "UTC");
  return ICAL_GRAPH_OK;
}

static int ig_add_texts(struct ig_in *in, icalcomponent *ev, json_t *obj)
{
  const char *summary = icalcomponent_get_summary(ev);
  const char *description = icalcomponent_get_description(ev);
  const char *location = icalcomponent_get_location(ev);
  int rc;

  rc = ig_set_string(in, obj, "subject", summary ? summary : "");
  if (rc == ICAL_GRAPH_OK && description) {
    json_t *body = json_pack("{s:s}", "contentType", "text");

    json_object_set_new(obj, "body", body);
    rc = ig_set_string(in, body, "content", description);
  }
  if (rc == ICAL_GRAPH_OK && location) {
    json_t *loc = json_object();

    json_object_set_new(obj, "location", loc);
    rc = ig_set_string(in, loc, "displayName", location);
  }
  return rc;
}

/* Start and end: DTEND, or DTSTART plus DURATION, or the RFC 5545 defaults
 * (one day for a date, zero length for a date-time). The master's zones
 * go into the result for the caller to remember. */
static int ig_add_times(struct ig_in *in, icalcomponent *ev, bool master,
                        json_t *obj, struct ig_when *start)
{
  icalproperty *sp
      = icalcomponent_get_first_property(ev, ICAL_DTSTART_PROPERTY);
  icalproperty *ep = icalcomponent_get_first_property(ev, ICAL_DTEND_PROPERTY);
  icalproperty *dp
      = icalcomponent_get_first_property(ev, ICAL_DURATION_PROPERTY);
  struct ig_when end = { 0 };
  int rc;

  if (!sp)
    return IN_FAIL(in, ICAL_GRAPH_EINVALID, "VEVENT has no DTSTART");
  start->t = icalproperty_get_dtstart(sp);
  rc = ig_zone_resolve(in, sp, start);
  if (rc < 0)
    return rc;

  if (ep) {
    end.t = icalproperty_get_dtend(ep);
    rc = ig_zone_resolve(in, ep, &end);
    if (rc < 0)
      return rc;
  } else {
    struct icaldurationtype d = icaldurationtype_null_duration();

    if (dp)
      d = icalproperty_get_duration(dp);
    else if (start->t.is_date)
      d.days = 1;
    end = *start;
    end.t = icaltime_add(start->t, d);
    /* A long DURATION can carry the end past the years Graph accepts. */
    rc = ig_time_check(in, "DTEND (DTSTART plus DURATION)", end.t);
    if (rc < 0)
      return rc;
  }
  if (start->t.is_date != end.t.is_date)
    return IN_FAIL(in, ICAL_GRAPH_EINVALID,
                   "DTSTART and DTEND must both be dates or both date-times");
  json_object_set_new(obj, "start", ig_json_time(start->t, start->win));
  json_object_set_new(obj, "end", ig_json_time(end.t, end.win));
  json_object_set_new(obj, "isAllDay", json_boolean(start->t.is_date));
  if (master) {
    snprintf(in->res->start_tzid, sizeof(in->res->start_tzid), "%s",
             start->named);
    snprintf(in->res->end_tzid, sizeof(in->res->end_tzid), "%s", end.named);
  }
  return ICAL_GRAPH_OK;
}

/* RFC 6638: the agent stores only the organizer's copy, and Graph can only
 * create meetings the mailbox owner organizes; another organizer means an
 * attendee's copy, which the agent refuses rather than re-inviting. */
static int ig_check_organizer(struct ig_in *in, icalcomponent *ev)
{
  icalproperty *p
      = icalcomponent_get_first_property(ev, ICAL_ORGANIZER_PROPERTY);
  const char *addr;

  if (!p || !in->opt->user)
    return ICAL_GRAPH_OK;
  addr = ig_mailto(icalproperty_get_organizer(p));
  if (addr && strcasecmp(addr, in->opt->user) == 0)
    return ICAL_GRAPH_OK;
  return IN_FAIL(in, ICAL_GRAPH_EORGANIZER,
                 "the organizer must be the calendar's owner %s; attendee "
                 "copies of other people's meetings are not supported",
                 in->opt->user);
}

static const char *ig_attendee_type(icalproperty *p)
{
  icalparameter *cu
      = icalproperty_get_first_parameter(p, ICAL_CUTYPE_PARAMETER);
  icalparameter *role
      = icalproperty_get_first_parameter(p, ICAL_ROLE_PARAMETER);

  if (cu
      && (icalparameter_get_cutype(cu) == ICAL_CUTYPE_RESOURCE
          || icalparameter_get_cutype(cu) == ICAL_CUTYPE_ROOM))
    return "resource";
  if (role
      && (icalparameter_get_role(role) == ICAL_ROLE_OPTPARTICIPANT
          || icalparameter_get_role(role) == ICAL_ROLE_NONPARTICIPANT))
    return "optional";
  return "required";
}

/* True when the client schedules this attendee itself (RFC 6638 7.1):
 * Graph would mail an invitation of its own, so the attendee stays out.
 * libical 3 reads SCHEDULE-AGENT=NONE as an X value (its
 * ICAL_SCHEDULEAGENT_NONE means "no value"), so the text is compared;
 * other unknown values are SERVER, as RFC 6638 asks. */
static bool ig_client_scheduled(icalproperty *p)
{
  icalparameter *sa;
  const char *x;

  sa = icalproperty_get_first_parameter(p, ICAL_SCHEDULEAGENT_PARAMETER);
  if (!sa)
    return false;
  if (icalparameter_get_scheduleagent(sa) == ICAL_SCHEDULEAGENT_CLIENT)
    return true;
  x = icalparameter_get_scheduleagent(sa) == ICAL_SCHEDULEAGENT_X
          ? icalparameter_get_xvalue(sa)
          : NULL;
  return x && strcasecmp(x, "NONE") == 0;
}

/* The master's client-scheduled ATTENDEE, kept as libical writes it (one
 * unfolded line, parameters in the client's order) so that the caller can
 * give it back on reading; within the ICAL_GRAPH_CLIENT_* limits. */
static int ig_keep_client_attendee(struct ig_in *in, icalproperty *p)
{
  char *text = icalproperty_as_ical_string_r(p);
  size_t n = 0;

  /* Line ends go, and the blank that starts a folded line with them. */
  for (size_t i = 0; text[i] != '\0'; i++) {
    if (text[i] != '\r' && text[i] != '\n') {
      text[n++] = text[i];
      continue;
    }
    if (text[i] == '\r' && text[i + 1] == '\n')
      i++;
    if (text[i + 1] == ' ' || text[i + 1] == '\t')
      i++;
  }
  text[n] = '\0';
  if (json_array_size(in->res->client_attendees)
          >= ICAL_GRAPH_CLIENT_ATTENDEES_MAX
      || in->client_text + n > ICAL_GRAPH_CLIENT_TEXT_MAX) {
    free(text);
    return IN_FAIL(in, ICAL_GRAPH_ELIMIT,
                   "more than %d attendees with SCHEDULE-AGENT=CLIENT or "
                   "NONE, or more than %d bytes of them: the calendar "
                   "remembers no more of the attendees a client invites",
                   ICAL_GRAPH_CLIENT_ATTENDEES_MAX, ICAL_GRAPH_CLIENT_TEXT_MAX);
  }
  in->client_text += n;
  json_array_append_new(in->res->client_attendees, json_string(text));
  free(text);
  return ICAL_GRAPH_OK;
}

static int ig_add_attendee(struct ig_in *in, icalproperty *p, bool master,
                           json_t *list)
{
  icalparameter *cn = icalproperty_get_first_parameter(p, ICAL_CN_PARAMETER);
  char *addr;
  json_t *email;
  int rc;

  rc = ig_mailto_decode(in, "attendee", icalproperty_get_attendee(p), &addr);
  if (rc < 0)
    return rc;
  if (in->opt->user && strcasecmp(addr, in->opt->user) == 0)
    goto out; /* the organizer is not invited to their meeting */
  if (ig_client_scheduled(p)) {
    json_array_append_new(in->res->client_scheduled, json_string(addr));
    if (master)
      rc = ig_keep_client_attendee(in, p);
    goto out;
  }
  if (json_array_size(list) >= ICAL_GRAPH_ATTENDEES_MAX) {
    rc = IN_FAIL(in, ICAL_GRAPH_ELIMIT, "more than %d attendees, Graph's limit",
                 ICAL_GRAPH_ATTENDEES_MAX);
    goto out;
  }

  email = json_object();
  json_array_append_new(list, json_pack("{s:o, s:s}", "emailAddress", email,
                                        "type", ig_attendee_type(p)));
  rc = ig_set_string(in, email, "address", addr);
  if (rc == ICAL_GRAPH_OK && cn)
    rc = ig_set_string(in, email, "name", icalparameter_get_cn(cn));
out:
  free(addr);
  return rc;
}

static int ig_add_attendees(struct ig_in *in, icalcomponent *ev, bool master,
                            json_t *obj)
{
  json_t *list = json_array();
  icalproperty *p;
  int rc = ICAL_GRAPH_OK;

  json_object_set_new(obj, "attendees", list);
  for (p = icalcomponent_get_first_property(ev, ICAL_ATTENDEE_PROPERTY);
       p && rc == ICAL_GRAPH_OK;
       p = icalcomponent_get_next_property(ev, ICAL_ATTENDEE_PROPERTY))
    rc = ig_add_attendee(in, p, master, list);
  return rc;
}

/* The first display or audio alarm set relative to the start, at or before
 * it, becomes Graph's single reminder; Graph has no other kind. */
static void ig_add_reminder(icalcomponent *ev, json_t *obj)
{
  icalcomponent *a;

  for (a = icalcomponent_get_first_component(ev, ICAL_VALARM_COMPONENT); a;
       a = icalcomponent_get_next_component(ev, ICAL_VALARM_COMPONENT)) {
    icalproperty *ap
        = icalcomponent_get_first_property(a, ICAL_ACTION_PROPERTY);
    icalproperty *tp
        = icalcomponent_get_first_property(a, ICAL_TRIGGER_PROPERTY);
    icalparameter *rel;
    struct icaltriggertype trig;
    int secs;

    if (!ap || !tp)
      continue;
    if (icalproperty_get_action(ap) != ICAL_ACTION_DISPLAY
        && icalproperty_get_action(ap) != ICAL_ACTION_AUDIO)
      continue;
    trig = icalproperty_get_trigger(tp);
    rel = icalproperty_get_first_parameter(tp, ICAL_RELATED_PARAMETER);
    if (!icaltime_is_null_time(trig.time)
        || (rel && icalparameter_get_related(rel) == ICAL_RELATED_END))
      continue;
    secs = icaldurationtype_as_int(trig.duration);
    if (secs > 0)
      continue;
    json_object_set_new(obj, "isReminderOn", json_true());
    json_object_set_new(obj, "reminderMinutesBeforeStart",
                        json_integer(-secs / 60));
    return;
  }
  json_object_set_new(obj, "isReminderOn", json_false());
}

/* Teams: the property Outlook writes, or the one Nextal sets to ask. */
static bool ig_wants_teams(icalcomponent *ev)
{
  icalproperty *p;

  for (p = icalcomponent_get_first_property(ev, ICAL_X_PROPERTY); p;
       p = icalcomponent_get_next_property(ev, ICAL_X_PROPERTY)) {
    const char *name = icalproperty_get_x_name(p);
    const char *value = icalproperty_get_x(p);

    if (strcasecmp(name, "X-MICROSOFT-SKYPETEAMSMEETINGURL") == 0)
      return true;
    if (strcasecmp(name, "X-NEXTAL-ONLINE-MEETING") == 0 && value
        && strcasecmp(value, "TEAMS") == 0)
      return true;
  }
  return false;
}

static int ig_add_flags(struct ig_in *in, icalcomponent *ev, json_t *obj)
{
  icalproperty *cls = icalcomponent_get_first_property(ev, ICAL_CLASS_PROPERTY);
  icalproperty *tr = icalcomponent_get_first_property(ev, ICAL_TRANSP_PROPERTY);
  const char *sensitivity = "normal";
  json_t *cats = json_array();
  icalproperty *p;
  int rc = ICAL_GRAPH_OK;

  if (cls && icalproperty_get_class(cls) == ICAL_CLASS_PRIVATE)
    sensitivity = "private";
  else if (cls && icalproperty_get_class(cls) == ICAL_CLASS_CONFIDENTIAL)
    sensitivity = "confidential";
  json_object_set_new(obj, "sensitivity", json_string(sensitivity));
  json_object_set_new(
      obj, "showAs",
      json_string(tr && icalproperty_get_transp(tr) == ICAL_TRANSP_TRANSPARENT
                      ? "free"
                      : "busy"));

  /* libical splits a comma list into one property per category. */
  json_object_set_new(obj, "categories", cats);
  for (p = icalcomponent_get_first_property(ev, ICAL_CATEGORIES_PROPERTY);
       p && rc == ICAL_GRAPH_OK;
       p = icalcomponent_get_next_property(ev, ICAL_CATEGORIES_PROPERTY)) {
    json_t *s = json_string(icalproperty_get_categories(p));

    if (!s)
      rc = IN_FAIL(in, ICAL_GRAPH_EPARSE, "CATEGORIES is not valid UTF-8");
    json_array_append_new(cats, s);
  }
  ig_add_reminder(ev, obj);
  if (ig_wants_teams(ev)) {
    json_object_set_new(obj, "isOnlineMeeting", json_true());
    json_object_set_new(obj, "onlineMeetingProvider",
                        json_string("teamsForBusiness"));
  }
  return rc;
}

/* --- RRULE to patternedRecurrence ------------------------------------- */

static int ig_count(const short *by, int size)
{
  int n = 0;

  while (n < size && by[n] != ICAL_RECURRENCE_ARRAY_MAX)
    n++;
  return n;
}

#define IG_COUNT(r, field)                                                     \
  ig_count((r)->field, (int) (sizeof((r)->field) / sizeof((r)->field[0])))

static json_t *ig_index_json(int pos)
{
  if (pos == -1)
    return json_string("last");
  assert(pos >= 1 && pos <= 4);
  return json_string(ig_graph_index[pos]);
}

/* Fills daysOfWeek from BYDAY; with_pos receives the common position of
 * the days (0 when none carry one), or the call fails when they differ. */
static int ig_days(struct ig_in *in, const struct icalrecurrencetype *r,
                   json_t *pattern, int *with_pos)
{
  json_t *days = json_array();
  int n = IG_COUNT(r, by_day);
  int i, pos = 0;

  json_object_set_new(pattern, "daysOfWeek", days);
  for (i = 0; i < n; i++) {
    int p = icalrecurrencetype_day_position(r->by_day[i]);
    int d = (int) icalrecurrencetype_day_day_of_week(r->by_day[i]);

    if (i > 0 && p != pos)
      return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                     "BYDAY mixes positions; Graph repeats on one week of "
                     "the month");
    pos = p;
    json_array_append_new(days, json_string(ig_graph_days[d]));
  }
  *with_pos = pos;
  return ICAL_GRAPH_OK;
}

/* Graph's index is first..fourth or last; the RFC allows any position. */
static int ig_index(struct ig_in *in, int pos, json_t *pattern)
{
  if (pos != -1 && (pos < 1 || pos > 4))
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "position %d in the month: Graph knows only the first to "
                   "fourth and the last",
                   pos);
  json_object_set_new(pattern, "index", ig_index_json(pos));
  return ICAL_GRAPH_OK;
}

/* Exchange moves day 29-31 to the last day of shorter months where RFC 5545
 * skips the month; that would be an approximation, so it is refused. */
static int ig_day_of_month(struct ig_in *in, const struct icalrecurrencetype *r,
                           const struct ig_when *start, json_t *pattern)
{
  int day = IG_COUNT(r, by_month_day) ? r->by_month_day[0] : start->t.day;

  if (day < 1 || day > 28)
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "day %d of the month: Graph moves it in shorter months "
                   "where iCalendar skips them; only days 1-28 translate",
                   day);
  json_object_set_new(pattern, "dayOfMonth", json_integer(day));
  return ICAL_GRAPH_OK;
}

/* Relative patterns: BYDAY=2TU, or BYDAY=MO,TU;BYSETPOS=1. */
static int ig_relative(struct ig_in *in, const struct icalrecurrencetype *r,
                       json_t *pattern, const char *type)
{
  int npos = IG_COUNT(r, by_set_pos);
  int pos, rc;

  rc = ig_days(in, r, pattern, &pos);
  if (rc < 0)
    return rc;
  if (pos != 0 && npos == 0 && IG_COUNT(r, by_day) == 1)
    return ig_index(in, pos, pattern);
  if (pos == 0 && npos == 1)
    return ig_index(in, r->by_set_pos[0], pattern);
  return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                 "BYDAY in a %s rule needs one position (BYDAY=2TU, or days "
                 "with one BYSETPOS value)",
                 type);
}

static int ig_pattern_monthly(struct ig_in *in,
                              const struct icalrecurrencetype *r,
                              const struct ig_when *start, json_t *pattern)
{
  if (IG_COUNT(r, by_day) == 0) {
    json_object_set_new(pattern, "type", json_string("absoluteMonthly"));
    return ig_day_of_month(in, r, start, pattern);
  }
  if (IG_COUNT(r, by_month_day))
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "BYMONTHDAY with BYDAY: Graph has no such pattern");
  json_object_set_new(pattern, "type", json_string("relativeMonthly"));
  return ig_relative(in, r, pattern, "monthly");
}

static int ig_pattern_yearly(struct ig_in *in,
                             const struct icalrecurrencetype *r,
                             const struct ig_when *start, json_t *pattern)
{
  int month = IG_COUNT(r, by_month) ? r->by_month[0] : start->t.month;

  json_object_set_new(pattern, "month", json_integer(month));
  if (IG_COUNT(r, by_day) == 0) {
    json_object_set_new(pattern, "type", json_string("absoluteYearly"));
    return ig_day_of_month(in, r, start, pattern);
  }
  if (IG_COUNT(r, by_month_day) || IG_COUNT(r, by_month) == 0)
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "a yearly BYDAY needs BYMONTH and no BYMONTHDAY for "
                   "Graph");
  json_object_set_new(pattern, "type", json_string("relativeYearly"));
  return ig_relative(in, r, pattern, "yearly");
}

/* Weekly, and daily rules limited to weekdays (FREQ=DAILY;BYDAY=MO,...,FR
 * is Graph's "every weekday"). */
static int ig_pattern_weekly(struct ig_in *in,
                             const struct icalrecurrencetype *r,
                             const struct ig_when *start, json_t *pattern)
{
  int pos, rc;

  json_object_set_new(pattern, "type", json_string("weekly"));
  json_object_set_new(
      pattern, "firstDayOfWeek",
      json_string(ig_graph_days[r->week_start ? (int) r->week_start : 2]));
  if (IG_COUNT(r, by_day) == 0) {
    json_t *days = json_array();

    json_array_append_new(
        days, json_string(ig_graph_days[icaltime_day_of_week(start->t)]));
    json_object_set_new(pattern, "daysOfWeek", days);
    return ICAL_GRAPH_OK;
  }
  rc = ig_days(in, r, pattern, &pos);
  if (rc == ICAL_GRAPH_OK && pos != 0)
    rc = IN_FAIL(in, ICAL_GRAPH_ERRULE,
                 "positions in a weekly BYDAY: Graph has no such pattern");
  return rc;
}

/* Refuses the parts of RFC 5545 rules Graph has no field for. */
static int ig_rule_check(struct ig_in *in, const struct icalrecurrencetype *r)
{
  if (r->freq == ICAL_SECONDLY_RECURRENCE || r->freq == ICAL_MINUTELY_RECURRENCE
      || r->freq == ICAL_HOURLY_RECURRENCE)
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "FREQ=%s: Graph repeats at most daily",
                   icalrecur_freq_to_string(r->freq));
  if (IG_COUNT(r, by_second) || IG_COUNT(r, by_minute) || IG_COUNT(r, by_hour))
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "BYHOUR, BYMINUTE or BYSECOND: Graph repeats an event at "
                   "its start time only");
  if (IG_COUNT(r, by_year_day) || IG_COUNT(r, by_week_no))
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "BYYEARDAY or BYWEEKNO: Graph has no such pattern");
  if (IG_COUNT(r, by_month_day) > 1 || IG_COUNT(r, by_month) > 1)
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "several BYMONTHDAY or BYMONTH values: Graph repeats on "
                   "one day of one month");
  if (IG_COUNT(r, by_set_pos) > 1)
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "several BYSETPOS values: Graph repeats on one position");
  if (IG_COUNT(r, by_month) && r->freq != ICAL_YEARLY_RECURRENCE)
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "BYMONTH in a %s rule: Graph has no such pattern",
                   icalrecur_freq_to_string(r->freq));
  if (IG_COUNT(r, by_set_pos) && r->freq != ICAL_MONTHLY_RECURRENCE
      && r->freq != ICAL_YEARLY_RECURRENCE)
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "BYSETPOS in a %s rule: Graph has no such pattern",
                   icalrecur_freq_to_string(r->freq));
  if ((r->freq == ICAL_DAILY_RECURRENCE || r->freq == ICAL_WEEKLY_RECURRENCE)
      && IG_COUNT(r, by_month_day))
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "BYMONTHDAY in a %s rule: Graph has no such pattern",
                   icalrecur_freq_to_string(r->freq));
  if (r->freq == ICAL_DAILY_RECURRENCE && IG_COUNT(r, by_day)
      && r->interval > 1)
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "a daily rule with BYDAY and INTERVAL above 1: Graph has "
                   "no such pattern");
  return ICAL_GRAPH_OK;
}

static int ig_pattern(struct ig_in *in, const struct icalrecurrencetype *r,
                      const struct ig_when *start, json_t *pattern)
{
  json_object_set_new(pattern, "interval",
                      json_integer(r->interval > 0 ? r->interval : 1));
  switch (r->freq) {
    case ICAL_DAILY_RECURRENCE:
      if (IG_COUNT(r, by_day) == 0) {
        json_object_set_new(pattern, "type", json_string("daily"));
        return ICAL_GRAPH_OK;
      }
      return ig_pattern_weekly(in, r, start, pattern);
    case ICAL_WEEKLY_RECURRENCE:
      return ig_pattern_weekly(in, r, start, pattern);
    case ICAL_MONTHLY_RECURRENCE:
      return ig_pattern_monthly(in, r, start, pattern);
    case ICAL_YEARLY_RECURRENCE:
      return ig_pattern_yearly(in, r, start, pattern);
    default:
      return IN_FAIL(in, ICAL_GRAPH_ERRULE, "RRULE without a usable FREQ");
  }
}

/* Graph's startDate is the event's start date and its first occurrence the
 * first match of the pattern on or after it; RFC 5545 leaves a DTSTART off
 * the pattern undefined. Only a DTSTART that is itself an occurrence keeps
 * both meaning the same, and libical's iterator tells. */
static int ig_check_sync(struct ig_in *in, struct icalrecurrencetype r,
                         icaltimetype dtstart)
{
  icalrecur_iterator *it;
  icaltimetype first;

  r.count = 0;
  r.until = icaltime_null_time();
  dtstart.zone = NULL;
  it = icalrecur_iterator_new(r, dtstart);
  if (!it)
    return IN_FAIL(in, ICAL_GRAPH_ERRULE, "libical cannot expand the RRULE");
  first = icalrecur_iterator_next(it);
  icalrecur_iterator_free(it);
  if (icaltime_is_null_time(first) || icaltime_compare(first, dtstart) != 0)
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "DTSTART is not an occurrence of its RRULE; Graph would "
                   "start the series on another day");
  return ICAL_GRAPH_OK;
}

/* UNTIL is an inclusive instant, Graph's endDate an inclusive date: the
 * last day an occurrence can fall on is UNTIL's local date, or the day
 * before when UNTIL comes earlier in the day than the start time. */
static int ig_until_date(struct ig_in *in, icaltimetype until,
                         const struct ig_when *start, icaltimetype *date)
{
  if (!until.is_date && icaltime_is_utc(until)) {
    if (!start->zone)
      return IN_FAIL(in, ICAL_GRAPH_ETZ,
                     "no zone data to place UNTIL in \"%s\"", start->win);
    until = icaltime_convert_to_zone(until, start->zone);
  }
  if (!until.is_date && !start->t.is_date) {
    int u = until.hour * 3600 + until.minute * 60 + until.second;
    int s = start->t.hour * 3600 + start->t.minute * 60 + start->t.second;

    if (u < s)
      icaltime_adjust(&until, -1, 0, 0, 0);
  }
  until.is_date = 1;
  *date = until;
  return ICAL_GRAPH_OK;
}

static int ig_range(struct ig_in *in, const struct icalrecurrencetype *r,
                    const struct ig_when *start, json_t *range)
{
  char buf[16];
  int rc;

  snprintf(buf, sizeof(buf), "%04d-%02d-%02d", start->t.year, start->t.month,
           start->t.day);
  json_object_set_new(range, "startDate", json_string(buf));
  json_object_set_new(range, "recurrenceTimeZone", json_string(start->win));
  if (r->count > 0) {
    json_object_set_new(range, "type", json_string("numbered"));
    json_object_set_new(range, "numberOfOccurrences", json_integer(r->count));
  } else if (!icaltime_is_null_time(r->until)) {
    icaltimetype end = icaltime_null_time();

    rc = ig_until_date(in, r->until, start, &end);
    if (rc < 0)
      return rc;
    snprintf(buf, sizeof(buf), "%04d-%02d-%02d", end.year, end.month, end.day);
    json_object_set_new(range, "type", json_string("endDate"));
    json_object_set_new(range, "endDate", json_string(buf));
  } else {
    json_object_set_new(range, "type", json_string("noEnd"));
  }
  return ICAL_GRAPH_OK;
}

/* libical reads COUNT into an int without a range check, so a huge COUNT
 * comes back wrapped; the rule's text is checked first. */
#define ICAL_GRAPH_COUNT_MAX 99999

static bool ig_count_too_large(const char *rule)
{
  const char *c = rule ? strcasestr(rule, "COUNT=") : NULL;
  long long n;

  if (c == NULL)
    return false;
  errno = 0;
  n = strtoll(c + 6, NULL, 10);
  return errno != 0 || n > ICAL_GRAPH_COUNT_MAX;
}

static int ig_add_recurrence(struct ig_in *in, icalcomponent *ev,
                             const struct ig_when *start, json_t *obj)
{
  icalproperty *p = icalcomponent_get_first_property(ev, ICAL_RRULE_PROPERTY);
  struct icalrecurrencetype r;
  json_t *pattern, *range;
  int rc;

  if (icalcomponent_get_first_property(ev, ICAL_RDATE_PROPERTY))
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "RDATE: Graph series have no extra dates");
  if (!p)
    return ICAL_GRAPH_OK;
  if (icalcomponent_count_properties(ev, ICAL_RRULE_PROPERTY) > 1)
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "several RRULEs: Graph series have one pattern");
  if (ig_count_too_large(icalproperty_get_value_as_string(p)))
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "COUNT above %d: no interview series is that long, and "
                   "libical would wrap the number",
                   ICAL_GRAPH_COUNT_MAX);
  r = icalproperty_get_rrule(p);
  rc = icaltime_is_null_time(r.until)
           ? ICAL_GRAPH_OK
           : ig_time_check(in, "RRULE UNTIL", r.until);
  if (rc == ICAL_GRAPH_OK)
    rc = ig_rule_check(in, &r);
  if (rc < 0)
    return rc;

  pattern = json_object();
  range = json_object();
  json_object_set_new(
      obj, "recurrence",
      json_pack("{s:o, s:o}", "pattern", pattern, "range", range));
  rc = ig_pattern(in, &r, start, pattern);
  if (rc == ICAL_GRAPH_OK)
    rc = ig_range(in, &r, start, range);
  if (rc == ICAL_GRAPH_OK)
    rc = ig_check_sync(in, r, start->t);
  return rc;
}

/* One VEVENT (master or override) as a Graph event. */
static int ig_event_build(struct ig_in *in, icalcomponent *ev, bool master,
                          json_t **out, struct ig_when *start)
{
  json_t *obj = json_object();
  int rc;

  *out = obj;
  rc = ig_check_organizer(in, ev);
  if (rc == ICAL_GRAPH_OK)
    rc = ig_add_texts(in, ev, obj);
  if (rc == ICAL_GRAPH_OK)
    rc = ig_add_times(in, ev, master, obj, start);
  if (rc == ICAL_GRAPH_OK)
    rc = ig_add_attendees(in, ev, master, obj);
  if (rc == ICAL_GRAPH_OK)
    rc = ig_add_flags(in, ev, obj);
  if (rc == ICAL_GRAPH_OK && master)
    rc = ig_add_recurrence(in, ev, start, obj);
  else if (rc == ICAL_GRAPH_OK
           && icalcomponent_get_first_property(ev, ICAL_RRULE_PROPERTY))
    rc = IN_FAIL(in, ICAL_GRAPH_ERRULE,
                 "an overridden occurrence cannot carry its own RRULE");
  return rc;
}

/* RFC 5545 3.8.5.1 and 3.8.4.4: an EXDATE or RECURRENCE-ID has the value
 * type of the series' DTSTART. A date on a date-time series (or the other
 * way round) names no occurrence at all, so it is refused rather than
 * silently ignored. Checked before any zone is resolved. */
static int ig_value_type_check(struct ig_in *in, icalproperty *p,
                               icaltimetype t, icaltimetype start)
{
  char text[64];

  if (t.is_date == start.is_date)
    return ICAL_GRAPH_OK;
  ig_time_text(t, text, sizeof(text));
  return IN_FAIL(in, ICAL_GRAPH_EPARSE,
                 "%s %s is a %s but the series' DTSTART is a %s; RFC 5545 "
                 "requires the same value type",
                 icalproperty_kind_to_string(icalproperty_isa(p)), text,
                 t.is_date ? "date" : "date-time",
                 start.is_date ? "date" : "date-time");
}

static int ig_add_exdates(struct ig_in *in, icalcomponent *ev)
{
  icaltimetype start = icalcomponent_get_dtstart(ev);
  icalproperty *p;
  int rc = ICAL_GRAPH_OK;

  for (p = icalcomponent_get_first_property(ev, ICAL_EXDATE_PROPERTY);
       p && rc == ICAL_GRAPH_OK;
       p = icalcomponent_get_next_property(ev, ICAL_EXDATE_PROPERTY)) {
    struct ig_when w = { .t = icalproperty_get_exdate(p) };
    json_t *key = NULL;

    if (json_array_size(in->res->exdates) >= ICAL_GRAPH_EXDATES_MAX)
      return IN_FAIL(in, ICAL_GRAPH_ELIMIT, "more than %d EXDATE values",
                     ICAL_GRAPH_EXDATES_MAX);
    rc = ig_value_type_check(in, p, w.t, start);
    if (rc == ICAL_GRAPH_OK)
      rc = ig_zone_resolve(in, p, &w);
    if (rc == ICAL_GRAPH_OK)
      rc = ig_utc_key(in, &w, &key);
    if (key)
      json_array_append_new(in->res->exdates, key);
  }
  return rc;
}

/* An override: cancelled ones delete their occurrence, others replace it. */
static int ig_add_override(struct ig_in *in, icalcomponent *master,
                           icalcomponent *ev)
{
  icalproperty *p
      = icalcomponent_get_first_property(ev, ICAL_RECURRENCEID_PROPERTY);
  struct ig_when rid = { .t = icalproperty_get_recurrenceid(p) };
  struct ig_when start = { 0 };
  icalparameter *range;
  json_t *key = NULL, *obj = NULL;
  int rc;

  range = icalproperty_get_first_parameter(p, ICAL_RANGE_PARAMETER);
  if (range)
    return IN_FAIL(in, ICAL_GRAPH_ERRULE,
                   "RECURRENCE-ID with RANGE: Graph changes occurrences one "
                   "at a time");
  if (json_array_size(in->res->overrides) >= ICAL_GRAPH_OVERRIDES_MAX)
    return IN_FAIL(in, ICAL_GRAPH_ELIMIT, "more than %d overridden occurrences",
                   ICAL_GRAPH_OVERRIDES_MAX);
  rc = ig_value_type_check(in, p, rid.t, icalcomponent_get_dtstart(master));
  if (rc == ICAL_GRAPH_OK)
    rc = ig_zone_resolve(in, p, &rid);
  if (rc == ICAL_GRAPH_OK)
    rc = ig_utc_key(in, &rid, &key);
  if (rc < 0)
    return rc;
  if (icalcomponent_get_status(ev) == ICAL_STATUS_CANCELLED) {
    json_array_append_new(in->res->exdates, key);
    return ICAL_GRAPH_OK;
  }
  rc = ig_event_build(in, ev, false, &obj, &start);
  json_array_append_new(
      in->res->overrides,
      json_pack("{s:o, s:o}", "originalStart", key, "event", obj));
  return rc;
}

/* Collects the VEVENTs: one UID, one master, the rest overrides. */
static int ig_components(struct ig_in *in, icalcomponent **master)
{
  icalcomponent *c;

  *master = NULL;
  for (c = icalcomponent_get_first_component(in->vcal, ICAL_ANY_COMPONENT); c;
       c = icalcomponent_get_next_component(in->vcal, ICAL_ANY_COMPONENT)) {
    icalcomponent_kind kind = icalcomponent_isa(c);
    const char *uid;

    if (kind == ICAL_VTIMEZONE_COMPONENT)
      continue;
    if (kind != ICAL_VEVENT_COMPONENT)
      return IN_FAIL(in, ICAL_GRAPH_ECOMPONENT, "%s: only VEVENT is supported",
                     icalcomponent_kind_to_string(kind));
    uid = icalcomponent_get_uid(c);
    if (!uid || !*uid)
      return IN_FAIL(in, ICAL_GRAPH_EINVALID, "VEVENT without UID");
    if (!in->res->uid)
      in->res->uid = xstrdup(uid);
    else if (strcmp(uid, in->res->uid) != 0)
      return IN_FAIL(in, ICAL_GRAPH_EINVALID,
                     "VEVENTs with different UIDs in one calendar object");
    if (icalcomponent_get_first_property(c, ICAL_RECURRENCEID_PROPERTY))
      continue;
    if (*master)
      return IN_FAIL(in, ICAL_GRAPH_EINVALID,
                     "two VEVENTs without RECURRENCE-ID for one UID");
    *master = c;
  }
  if (!*master)
    return IN_FAIL(in, ICAL_GRAPH_EINVALID,
                   "no VEVENT without RECURRENCE-ID (the series itself)");
  return ICAL_GRAPH_OK;
}

/* libical keeps going past errors, marking them with X-LIC-ERROR; a
 * calendar object that needed one is not valid calendar data. */
static int ig_check_errors(struct ig_in *in, icalcomponent *c)
{
  icalproperty *p
      = icalcomponent_get_first_property(c, ICAL_XLICERROR_PROPERTY);
  icalcomponent *sub;
  int rc = ICAL_GRAPH_OK;

  if (p)
    return IN_FAIL(in, ICAL_GRAPH_EPARSE, "invalid iCalendar: %s",
                   icalproperty_get_xlicerror(p));
  for (sub = icalcomponent_get_first_component(c, ICAL_ANY_COMPONENT);
       sub && rc == ICAL_GRAPH_OK;
       sub = icalcomponent_get_next_component(c, ICAL_ANY_COMPONENT))
    rc = ig_check_errors(in, sub);
  return rc;
}

static void ig_transaction_id(struct ical_graph_result *res)
{
  unsigned char digest[32];
  size_t i;
  int n;

  gnutls_hash_fast(GNUTLS_DIG_SHA256, res->uid, strlen(res->uid), digest);
  n = snprintf(res->transaction_id, sizeof(res->transaction_id), "nextal-");
  for (i = 0; i < sizeof(digest); i++)
    n += snprintf(res->transaction_id + n, sizeof(res->transaction_id) - n,
                  "%02x", digest[i]);
}

static int ig_translate(struct ig_in *in)
{
  struct ical_graph_result *res = in->res;
  icalproperty *method;
  icalcomponent *master, *c;
  struct ig_when start = { 0 };
  int rc;

  method = icalcomponent_get_first_property(in->vcal, ICAL_METHOD_PROPERTY);
  if (method) {
    res->method = xstrdup(icalproperty_get_value_as_string(method));
    return IN_FAIL(in, ICAL_GRAPH_EMETHOD,
                   "calendar objects must not carry METHOD (RFC 4791 4.1); "
                   "the agent does the scheduling");
  }
  rc = ig_components(in, &master);
  if (rc < 0)
    return rc;
  ig_transaction_id(res);
  res->cancelled = icalcomponent_get_status(master) == ICAL_STATUS_CANCELLED;
  rc = ig_event_build(in, master, true, &res->event, &start);
  if (rc == ICAL_GRAPH_OK)
    rc = ig_add_exdates(in, master);

  for (c = icalcomponent_get_first_component(in->vcal, ICAL_VEVENT_COMPONENT);
       c && rc == ICAL_GRAPH_OK;
       c = icalcomponent_get_next_component(in->vcal, ICAL_VEVENT_COMPONENT)) {
    if (c != master && !json_object_get(res->event, "recurrence"))
      rc = IN_FAIL(in, ICAL_GRAPH_EINVALID,
                   "RECURRENCE-ID in an object without RRULE");
    else if (c != master)
      rc = ig_add_override(in, master, c);
  }
  return rc;
}

int ical_graph_from_ical(const char *text, size_t len,
                         const struct ical_graph_options *opt,
                         struct ical_graph_result *res)
{
  struct ig_in in = { .opt = opt, .res = res };
  char *copy = NULL;
  int rc;

  memset(res, 0, sizeof(*res));
  res->client_scheduled = json_array();
  res->client_attendees = json_array();
  res->exdates = json_array();
  res->overrides = json_array();
  if (len > ICAL_GRAPH_TEXT_MAX)
    return IN_FAIL(&in, ICAL_GRAPH_ELIMIT,
                   "calendar object larger than %d bytes", ICAL_GRAPH_TEXT_MAX);
  if (opt->default_zone
      && tz_map_to_windows(opt->default_zone, in.default_win,
                           sizeof(in.default_win))
             < 0)
    return IN_FAIL(&in, ICAL_GRAPH_ETZ, "default time zone \"%s\" is unknown",
                   opt->default_zone);

  copy = xstrndup(text, len);
  in.vcal = icalparser_parse_string(copy);
  if (!in.vcal || icalcomponent_isa(in.vcal) != ICAL_VCALENDAR_COMPONENT) {
    rc = IN_FAIL(&in, ICAL_GRAPH_EPARSE, "not an iCalendar VCALENDAR");
    goto out;
  }
  rc = ig_check_errors(&in, in.vcal);
  if (rc == ICAL_GRAPH_OK)
    rc = ig_translate(&in);

out:
  if (rc < 0) {
    json_decref(res->event);
    res->event = NULL;
  }
  if (in.vcal)
    icalcomponent_free(in.vcal);
  free(copy);
  return rc;
}

void ical_graph_result_free(struct ical_graph_result *res)
{
  json_decref(res->event);
  json_decref(res->client_scheduled);
  json_decref(res->client_attendees);
  json_decref(res->exdates);
  json_decref(res->overrides);
  free(res->uid);
  free(res->method);
  memset(res, 0, sizeof(*res));
}

/* --- Graph event to iCalendar ----------------------------------------- */

/* Names a client can have written an object's times in: DTSTART's and
 * DTEND's (ical_graph_ical_options start_tzid, end_tzid). */
#define IG_ALIASES_MAX 2

/* State of one Graph -> iCalendar translation. */
struct ig_out {
  icalcomponent *vcal;
  const struct ical_graph_ical_options *opt; /* NULL for free/busy */
  char *err;
  size_t errsize;
  /* Zones under a TZID the client wrote that is not libical's name for
   * them ("W. Europe Standard Time" for Europe/Berlin); owned, freed by
   * ig_out_aliases_free(). */
  icaltimezone *aliases[IG_ALIASES_MAX];
};

#define OUT_FAIL(o, rc, ...) ig_fail((o)->err, (o)->errsize, (rc), __VA_ARGS__)

static const char *ig_str(const json_t *obj, const char *key)
{
  return json_string_value(json_object_get(obj, key));
}

/* Parses Graph's "2026-12-03T10:00:00.0000000", with an optional "Z" or
 * "+hh:mm" offset (DateTimeOffset values). The result is floating unless an
 * offset was given, in which case it is UTC. */
static int ig_parse_graph_time(const char *s, icaltimetype *t)
{
  struct tm tm = { 0 };
  const char *rest;
  int sign, oh, om;

  if (!s || !(rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)))
    return -1;
  if (*rest == '.') {
    rest++;
    while (isdigit((unsigned char) *rest))
      rest++;
  }
  *t = icaltime_null_time();
  t->year = tm.tm_year + 1900;
  t->month = tm.tm_mon + 1;
  t->day = tm.tm_mday;
  t->hour = tm.tm_hour;
  t->minute = tm.tm_min;
  t->second = tm.tm_sec;
  if (*rest == '\0')
    return 0;
  if (strcmp(rest, "Z") == 0) {
    t->zone = icaltimezone_get_utc_timezone();
    return 0;
  }
  if ((*rest != '+' && *rest != '-') || strlen(rest) != 6
      || !isdigit((unsigned char) rest[1]) || !isdigit((unsigned char) rest[2])
      || rest[3] != ':' || !isdigit((unsigned char) rest[4])
      || !isdigit((unsigned char) rest[5]))
    return -1;
  sign = *rest == '-' ? 1 : -1;
  oh = (rest[1] - '0') * 10 + (rest[2] - '0');
  om = (rest[4] - '0') * 10 + (rest[5] - '0');
  icaltime_adjust(t, 0, sign * oh, sign * om, 0);
  t->zone = icaltimezone_get_utc_timezone();
  return 0;
}

/* Reads a dateTimeTimeZone; *zone receives its zone. */
static int ig_graph_dt(struct ig_out *o, const json_t *dt, const char *what,
                       icaltimetype *t, icaltimezone **zone)
{
  const char *tz = ig_str(dt, "timeZone");

  if (ig_parse_graph_time(ig_str(dt, "dateTime"), t) < 0)
    return OUT_FAIL(o, ICAL_GRAPH_EGRAPH, "event %s has no valid dateTime",
                    what);
  *zone = tz ? tz_map_ical_zone(tz) : icaltimezone_get_utc_timezone();
  if (!*zone)
    return OUT_FAIL(o, ICAL_GRAPH_ETZ,
                    "event %s is in unknown time zone "
                    "\"%s\"",
                    what, tz);
  t->zone = *zone;
  return ICAL_GRAPH_OK;
}

static bool ig_is_alias(const struct ig_out *o, const icaltimezone *zone)
{
  size_t i;

  for (i = 0; i < IG_ALIASES_MAX; i++) {
    if (o->aliases[i] == zone)
      return true;
  }
  return false;
}

/* The TZID a zone is written under: the client's name for an alias,
 * otherwise the plain IANA name rather than libical's prefixed TZID. */
static const char *ig_zone_tzid(const struct ig_out *o, icaltimezone *zone)
{
  if (ig_is_alias(o, zone))
    return icaltimezone_get_tzid(zone);
  /* Loading the component may replace the zone's strings: it goes first. */
  (void) icaltimezone_get_component(zone);
  return icaltimezone_get_location(zone);
}

/* Zone's rules under the TZID tzid, made once per name for this calendar
 * from libical's component (X-LIC-LOCATION kept, naming the IANA zone).
 * Returns zone itself when the names are used up, which the two
 * remembered names cannot do. */
static icaltimezone *ig_zone_alias(struct ig_out *o, icaltimezone *zone,
                                   const char *tzid)
{
  icalcomponent *comp;
  icaltimezone *alias;
  size_t i;

  for (i = 0; i < IG_ALIASES_MAX && o->aliases[i]; i++) {
    if (strcmp(icaltimezone_get_tzid(o->aliases[i]), tzid) == 0)
      return o->aliases[i];
  }
  if (i == IG_ALIASES_MAX)
    return zone;
  comp = icalcomponent_new_clone(icaltimezone_get_component(zone));
  icalproperty_set_tzid(
      icalcomponent_get_first_property(comp, ICAL_TZID_PROPERTY), tzid);
  alias = icaltimezone_new();
  /* The zone owns comp from here, freed with it. */
  if (!icaltimezone_set_component(alias, comp)) {
    icalcomponent_free(comp);
    icaltimezone_free(alias, 1);
    return zone;
  }
  o->aliases[i] = alias;
  return alias;
}

static void ig_out_aliases_free(struct ig_out *o)
{
  size_t i;

  for (i = 0; i < IG_ALIASES_MAX; i++) {
    if (o->aliases[i])
      icaltimezone_free(o->aliases[i], 1);
    o->aliases[i] = NULL;
  }
}

/* Adds the zone's VTIMEZONE once, under the TZID ig_zone_tzid() gives. */
static void ig_add_vtimezone(struct ig_out *o, icaltimezone *zone)
{
  const char *tzid = ig_zone_tzid(o, zone);
  icalcomponent *c, *copy;
  icalproperty *p;

  for (c = icalcomponent_get_first_component(o->vcal, ICAL_VTIMEZONE_COMPONENT);
       c; c = icalcomponent_get_next_component(o->vcal,
                                               ICAL_VTIMEZONE_COMPONENT)) {
    p = icalcomponent_get_first_property(c, ICAL_TZID_PROPERTY);
    if (p && strcmp(icalproperty_get_tzid(p), tzid) == 0)
      return;
  }
  copy = icalcomponent_new_clone(icaltimezone_get_component(zone));
  p = icalcomponent_get_first_property(copy, ICAL_TZID_PROPERTY);
  icalproperty_set_tzid(p, tzid);
  icalcomponent_add_component(o->vcal, copy);
}

/* A time property in target's zone: UTC values end in Z, others carry
 * TZID=<ig_zone_tzid()> and a VTIMEZONE; dates are plain dates. */
static icalproperty *ig_time_prop(struct ig_out *o, icalproperty_kind kind,
                                  icaltimetype t, icaltimezone *target)
{
  icalproperty *p = icalproperty_new(kind);
  bool utc = target == icaltimezone_get_utc_timezone();

  if (!t.is_date) {
    t = icaltime_convert_to_zone(t, target);
    if (!utc) {
      t.zone = NULL;
      ig_add_vtimezone(o, target);
      icalproperty_add_parameter(
          p, icalparameter_new_tzid(ig_zone_tzid(o, target)));
    }
  }
  icalproperty_set_value(p, t.is_date ? icalvalue_new_date(t)
                                      : icalvalue_new_datetime(t));
  return p;
}

/* The zone Graph says a time was created in: the event's key
 * (originalStartTimeZone, originalEndTimeZone) when it names a zone, else
 * fallback (a zone name already known to resolve). */
static const char *ig_graph_zone(const json_t *ev, const char *key,
                                 const char *fallback)
{
  const char *name = ig_str(ev, key);

  return name && tz_map_ical_zone(name) ? name : fallback;
}

/* The zone to write a time in: the one the client wrote it in (written,
 * from the caller's mapping) while Graph still holds the same Windows zone,
 * so that America/Winnipeg is not read back as America/Chicago, nor
 * "W. Europe Standard Time" as Europe/Berlin; Graph's own zone once the
 * event was moved to another zone in Outlook. A written name that is not
 * libical's becomes an alias zone with the rules of the zone it names. */
static icaltimezone *ig_target_zone(struct ig_out *o, const char *graph_name,
                                    const char *written)
{
  char graph_win[TZ_MAP_NAME_MAX], written_win[TZ_MAP_NAME_MAX];
  icaltimezone *zone;

  if (written && *written
      && tz_map_to_windows(written, written_win, sizeof(written_win))
             == TZ_MAP_OK
      && tz_map_to_windows(graph_name, graph_win, sizeof(graph_win))
             == TZ_MAP_OK
      && strcmp(written_win, graph_win) == 0) {
    zone = tz_map_ical_zone(written);
    if (zone && zone != icaltimezone_get_utc_timezone()
        && strcmp(ig_zone_tzid(o, zone), written) != 0)
      zone = ig_zone_alias(o, zone, written);
    if (zone)
      return zone;
  }
  return tz_map_ical_zone(graph_name);
}

static int ig_out_times(struct ig_out *o, const json_t *ev, icalcomponent *vev,
                        icaltimetype *start_out, icaltimezone **zone_out)
{
  bool allday = json_is_true(json_object_get(ev, "isAllDay"));
  const char *sname, *ename;
  icaltimezone *sz, *ez, *starget, *etarget;
  icaltimetype s, e;
  int rc;

  rc = ig_graph_dt(o, json_object_get(ev, "start"), "start", &s, &sz);
  if (rc == ICAL_GRAPH_OK)
    rc = ig_graph_dt(o, json_object_get(ev, "end"), "end", &e, &ez);
  if (rc < 0)
    return rc;
  /* ig_graph_dt() checked that the dateTimeTimeZone zones resolve. */
  sname = ig_str(json_object_get(ev, "start"), "timeZone");
  sname = ig_graph_zone(ev, "originalStartTimeZone", sname ? sname : "UTC");
  ename = ig_graph_zone(ev, "originalEndTimeZone", sname);
  starget = ig_target_zone(o, sname, o->opt ? o->opt->start_tzid : NULL);
  etarget = ig_target_zone(o, ename, o->opt ? o->opt->end_tzid : NULL);
  assert(starget != NULL && etarget != NULL);
  if (allday) {
    /* All-day events are midnight to midnight in whatever zone Graph
     * reports them; the dates are what matters. */
    s.is_date = e.is_date = 1;
    s.zone = e.zone = NULL;
  }
  icalcomponent_add_property(
      vev, ig_time_prop(o, ICAL_DTSTART_PROPERTY, s, starget));
  icalcomponent_add_property(vev,
                             ig_time_prop(o, ICAL_DTEND_PROPERTY, e, etarget));
  *start_out = allday ? s : icaltime_convert_to_zone(s, starget);
  *zone_out = starget;
  return ICAL_GRAPH_OK;
}

/* Appends text, collapsing HTML white space, into a bounded buffer. */
struct ig_text {
  char *buf;
  size_t len, cap;
};

static void ig_text_put(struct ig_text *t, const char *s, size_t n)
{
  if (t->len + n + 1 > t->cap) {
    t->cap = (t->len + n + 1) * 2;
    t->buf = xrealloc(t->buf, t->cap);
  }
  memcpy(t->buf + t->len, s, n);
  t->len += n;
  t->buf[t->len] = '\0';
}

static void ig_text_words(struct ig_text *t, const char *s)
{
  for (; *s; s++) {
    bool space = isspace((unsigned char) *s);
    char last = t->len ? t->buf[t->len - 1] : '\n';

    if (space && (last == ' ' || last == '\n'))
      continue;
    ig_text_put(t, space ? " " : s, 1);
  }
}

static bool ig_html_is(const xmlNode *n, const char *const *names)
{
  for (; *names; names++) {
    if (xmlStrcasecmp(n->name, (const xmlChar *) *names) == 0)
      return true;
  }
  return false;
}

static void ig_html_walk(const xmlNode *n, struct ig_text *t)
{
  static const char *const hidden[]
      = { "head", "script", "style", "title", NULL };
  static const char *const blocks[]
      = { "p",  "div", "br", "li",    "tr", "h1", "h2", "h3",
          "h4", "h5",  "h6", "table", "ul", "ol", NULL };

  for (; n; n = n->next) {
    if (n->type == XML_TEXT_NODE && n->content) {
      ig_text_words(t, (const char *) n->content);
    } else if (n->type == XML_ELEMENT_NODE && !ig_html_is(n, hidden)) {
      ig_html_walk(n->children, t);
      if (ig_html_is(n, blocks)) {
        while (t->len && t->buf[t->len - 1] == ' ')
          t->buf[--t->len] = '\0';
        ig_text_put(t, "\n", 1);
      }
    }
  }
}

/* Graph bodies are often HTML; CalDAV's DESCRIPTION is plain text. */
static char *ig_html_to_text(const char *html)
{
  struct ig_text t = { 0 };
  htmlDocPtr doc;

  ig_text_put(&t, "", 0);
  doc = htmlReadMemory(html, (int) strlen(html), NULL, "UTF-8",
                       HTML_PARSE_NONET | HTML_PARSE_NOERROR
                           | HTML_PARSE_NOWARNING | HTML_PARSE_RECOVER);
  if (doc) {
    ig_html_walk(xmlDocGetRootElement(doc), &t);
    xmlFreeDoc(doc);
  }
  while (t.len && isspace((unsigned char) t.buf[t.len - 1]))
    t.buf[--t.len] = '\0';
  return t.buf;
}

static void ig_out_texts(const json_t *ev, icalcomponent *vev)
{
  const json_t *body = json_object_get(ev, "body");
  const char *content = ig_str(body, "content");
  const char *type = ig_str(body, "contentType");
  const char *location = ig_str(json_object_get(ev, "location"), "displayName");

  icalcomponent_set_summary(vev,
                            ig_str(ev, "subject") ? ig_str(ev, "subject") : "");
  if (content && type && strcasecmp(type, "html") == 0) {
    char *text = ig_html_to_text(content);

    if (*text)
      icalcomponent_set_description(vev, text);
    free(text);
  } else if (content && *content) {
    icalcomponent_set_description(vev, content);
  }
  if (location && *location)
    icalcomponent_set_location(vev, location);
}

static icalparameter_partstat ig_partstat(const char *response)
{
  if (!response)
    return ICAL_PARTSTAT_NEEDSACTION;
  if (strcmp(response, "accepted") == 0 || strcmp(response, "organizer") == 0)
    return ICAL_PARTSTAT_ACCEPTED;
  if (strcmp(response, "declined") == 0)
    return ICAL_PARTSTAT_DECLINED;
  if (strcmp(response, "tentativelyAccepted") == 0)
    return ICAL_PARTSTAT_TENTATIVE;
  return ICAL_PARTSTAT_NEEDSACTION;
}

static icalproperty *ig_address_prop(icalproperty_kind kind,
                                     const json_t *email)
{
  const char *addr = ig_str(email, "address");
  const char *name = ig_str(email, "name");
  char *uri;
  icalproperty *p;

  if (!addr)
    return NULL;
  uri = xasprintf("mailto:%s", addr);
  p = icalproperty_new(kind);
  icalproperty_set_value(p, icalvalue_new_caladdress(uri));
  free(uri);
  if (name && *name)
    icalproperty_add_parameter(p, icalparameter_new_cn(name));
  return p;
}

static void ig_out_people(const json_t *ev, icalcomponent *vev)
{
  const json_t *org
      = json_object_get(json_object_get(ev, "organizer"), "emailAddress");
  const json_t *a;
  icalproperty *p;
  size_t i;

  p = ig_address_prop(ICAL_ORGANIZER_PROPERTY, org);
  if (p)
    icalcomponent_add_property(vev, p);
  json_array_foreach(json_object_get(ev, "attendees"), i, a)
  {
    const char *type = ig_str(a, "type");
    const char *resp = ig_str(json_object_get(a, "status"), "response");

    p = ig_address_prop(ICAL_ATTENDEE_PROPERTY,
                        json_object_get(a, "emailAddress"));
    if (!p)
      continue;
    if (type && strcmp(type, "resource") == 0) {
      icalproperty_add_parameter(
          p, icalparameter_new_cutype(ICAL_CUTYPE_RESOURCE));
      icalproperty_add_parameter(
          p, icalparameter_new_role(ICAL_ROLE_NONPARTICIPANT));
    } else {
      icalproperty_add_parameter(
          p, icalparameter_new_role(type && strcmp(type, "optional") == 0
                                        ? ICAL_ROLE_OPTPARTICIPANT
                                        : ICAL_ROLE_REQPARTICIPANT));
    }
    icalproperty_add_parameter(p,
                               icalparameter_new_partstat(ig_partstat(resp)));
    icalcomponent_add_property(vev, p);
  }
}

static void ig_out_flags(const json_t *ev, icalcomponent *vev)
{
  const char *sens = ig_str(ev, "sensitivity");
  const char *show = ig_str(ev, "showAs");
  const json_t *cat;
  enum icalproperty_class cls = ICAL_CLASS_PUBLIC;
  size_t i;

  if (sens && (strcmp(sens, "private") == 0 || strcmp(sens, "personal") == 0))
    cls = ICAL_CLASS_PRIVATE;
  else if (sens && strcmp(sens, "confidential") == 0)
    cls = ICAL_CLASS_CONFIDENTIAL;
  icalcomponent_add_property(vev, icalproperty_new_class(cls));
  icalcomponent_add_property(
      vev, icalproperty_new_transp(
               show
                       && (strcmp(show, "free") == 0
                           || strcmp(show, "workingElsewhere") == 0)
                   ? ICAL_TRANSP_TRANSPARENT
                   : ICAL_TRANSP_OPAQUE));
  json_array_foreach(json_object_get(ev, "categories"), i, cat)
  {
    if (json_is_string(cat))
      icalcomponent_add_property(
          vev, icalproperty_new_categories(json_string_value(cat)));
  }
  if (json_is_true(json_object_get(ev, "isCancelled")))
    icalcomponent_set_status(vev, ICAL_STATUS_CANCELLED);
}

static void ig_out_reminder(const json_t *ev, icalcomponent *vev)
{
  json_int_t minutes;
  icalcomponent *alarm;
  struct icaltriggertype trig = { 0 };

  if (!json_is_true(json_object_get(ev, "isReminderOn")))
    return;
  minutes
      = json_integer_value(json_object_get(ev, "reminderMinutesBeforeStart"));
  trig.time = icaltime_null_time();
  trig.duration = icaldurationtype_from_int((int) -minutes * 60);
  alarm = icalcomponent_new(ICAL_VALARM_COMPONENT);
  icalcomponent_add_property(alarm,
                             icalproperty_new_action(ICAL_ACTION_DISPLAY));
  icalcomponent_add_property(alarm, icalproperty_new_trigger(trig));
  icalcomponent_add_property(alarm, icalproperty_new_description("Reminder"));
  icalcomponent_add_component(vev, alarm);
}

static void ig_out_meeting(const json_t *ev, icalcomponent *vev)
{
  const char *url = ig_str(json_object_get(ev, "onlineMeeting"), "joinUrl");
  icalproperty *p;

  if (!url || !*url)
    return;
  p = icalproperty_new_conference(url);
  icalproperty_add_parameter(p, icalparameter_new_value(ICAL_VALUE_URI));
  icalproperty_add_parameter(p, icalparameter_new_feature(ICAL_FEATURE_VIDEO));
  icalproperty_add_parameter(
      p, icalparameter_new_label("Microsoft Teams meeting"));
  icalcomponent_add_property(vev, p);
  p = icalproperty_new_x(url);
  icalproperty_set_x_name(p, "X-MICROSOFT-SKYPETEAMSMEETINGURL");
  icalcomponent_add_property(vev, p);
}

static void ig_out_stamps(const json_t *ev, icalcomponent *vev)
{
  icaltimetype t;

  if (ig_parse_graph_time(ig_str(ev, "createdDateTime"), &t) == 0) {
    t.zone = icaltimezone_get_utc_timezone();
    icalcomponent_add_property(vev, icalproperty_new_created(t));
  }
  if (ig_parse_graph_time(ig_str(ev, "lastModifiedDateTime"), &t) == 0) {
    t.zone = icaltimezone_get_utc_timezone();
    icalcomponent_add_property(vev, icalproperty_new_lastmodified(t));
  } else {
    t = icaltime_current_time_with_zone(icaltimezone_get_utc_timezone());
  }
  icalcomponent_add_property(vev, icalproperty_new_dtstamp(t));
}

/* patternedRecurrence back to an RRULE, in RFC 5545 text that libical
 * reads; UNTIL is the last possible occurrence in UTC. */
static int ig_out_rrule(struct ig_out *o, const json_t *rec, icaltimetype start,
                        icaltimezone *zone, icalcomponent *vev)
{
  static const char *const index_pos[]
      = { "first", "second", "third", "fourth", "last" };
  const json_t *pat = json_object_get(rec, "pattern");
  const json_t *range = json_object_get(rec, "range");
  const char *type = ig_str(pat, "type");
  const char *rtype = ig_str(range, "type");
  const char *idx = ig_str(pat, "index");
  char rule[256], days[64] = "";
  const json_t *d;
  size_t i, n = 0;
  int pos = 1;
  json_int_t interval;
  struct icalrecurrencetype r;

  if (!type || !rtype)
    return OUT_FAIL(o, ICAL_GRAPH_EGRAPH, "recurrence without pattern type");
  json_array_foreach(json_object_get(pat, "daysOfWeek"), i, d)
  {
    int k;

    for (k = 1; k <= 7; k++) {
      if (json_is_string(d)
          && strcmp(json_string_value(d), ig_graph_days[k]) == 0)
        n += (size_t) snprintf(days + n, sizeof(days) - n, "%s%s", n ? "," : "",
                               ig_ical_days[k]);
    }
  }
  for (i = 0; idx && i < 5; i++) {
    if (strcmp(idx, index_pos[i]) == 0)
      pos = i == 4 ? -1 : (int) i + 1;
  }

  interval = json_integer_value(json_object_get(pat, "interval"));
  n = (size_t) snprintf(rule, sizeof(rule), "INTERVAL=%d",
                        interval > 0 ? (int) interval : 1);
  if (strcmp(type, "daily") == 0) {
    n += (size_t) snprintf(rule + n, sizeof(rule) - n, ";FREQ=DAILY");
  } else if (strcmp(type, "weekly") == 0) {
    const char *wkst = ig_str(pat, "firstDayOfWeek");
    int k, w = 1;

    for (k = 1; wkst && k <= 7; k++) {
      if (strcmp(wkst, ig_graph_days[k]) == 0)
        w = k;
    }
    n += (size_t) snprintf(rule + n, sizeof(rule) - n,
                           ";FREQ=WEEKLY;BYDAY=%s;WKST=%s", days,
                           ig_ical_days[w]);
  } else if (strcmp(type, "absoluteMonthly") == 0) {
    n += (size_t) snprintf(
        rule + n, sizeof(rule) - n, ";FREQ=MONTHLY;BYMONTHDAY=%d",
        (int) json_integer_value(json_object_get(pat, "dayOfMonth")));
  } else if (strcmp(type, "relativeMonthly") == 0) {
    n += (size_t) snprintf(rule + n, sizeof(rule) - n,
                           ";FREQ=MONTHLY;BYDAY=%s;BYSETPOS=%d", days, pos);
  } else if (strcmp(type, "absoluteYearly") == 0) {
    n += (size_t) snprintf(
        rule + n, sizeof(rule) - n, ";FREQ=YEARLY;BYMONTH=%d;BYMONTHDAY=%d",
        (int) json_integer_value(json_object_get(pat, "month")),
        (int) json_integer_value(json_object_get(pat, "dayOfMonth")));
  } else if (strcmp(type, "relativeYearly") == 0) {
    n += (size_t) snprintf(
        rule + n, sizeof(rule) - n,
        ";FREQ=YEARLY;BYMONTH=%d;BYDAY=%s;"
        "BYSETPOS=%d",
        (int) json_integer_value(json_object_get(pat, "month")), days, pos);
  } else {
    return OUT_FAIL(o, ICAL_GRAPH_EGRAPH, "unknown recurrence type \"%s\"",
                    type);
  }

  if (strcmp(rtype, "numbered") == 0) {
    n += (size_t) snprintf(rule + n, sizeof(rule) - n, ";COUNT=%d",
                           (int) json_integer_value(
                               json_object_get(range, "numberOfOccurrences")));
  } else if (strcmp(rtype, "endDate") == 0) {
    icaltimetype until;
    struct tm tm = { 0 };
    const char *ed = ig_str(range, "endDate");

    if (!ed || !strptime(ed, "%Y-%m-%d", &tm))
      return OUT_FAIL(o, ICAL_GRAPH_EGRAPH, "recurrence without endDate");
    until = start;
    until.year = tm.tm_year + 1900;
    until.month = tm.tm_mon + 1;
    until.day = tm.tm_mday;
    if (!until.is_date) {
      until.zone = zone;
      until = icaltime_convert_to_zone(until, icaltimezone_get_utc_timezone());
    }
    char *s = icaltime_as_ical_string_r(until);
    n += (size_t) snprintf(rule + n, sizeof(rule) - n, ";UNTIL=%s", s);
    free(s);
  }
  if (n >= sizeof(rule))
    return OUT_FAIL(o, ICAL_GRAPH_EGRAPH, "recurrence too long");
  r = icalrecurrencetype_from_string(rule);
  if (r.freq == ICAL_NO_RECURRENCE)
    return OUT_FAIL(o, ICAL_GRAPH_EGRAPH, "recurrence not expressible: %s",
                    rule);
  icalcomponent_add_property(vev, icalproperty_new_rrule(r));
  return ICAL_GRAPH_OK;
}

/* Whether vev has an ATTENDEE with the mailto: address addr already. */
static bool ig_has_attendee(icalcomponent *vev, const char *addr)
{
  icalproperty *p;

  for (p = icalcomponent_get_first_property(vev, ICAL_ATTENDEE_PROPERTY); p;
       p = icalcomponent_get_next_property(vev, ICAL_ATTENDEE_PROPERTY)) {
    const char *have = ig_mailto(icalproperty_get_attendee(p));

    if (have && strcasecmp(have, addr) == 0)
      return true;
  }
  return false;
}

/* One remembered client-scheduled ATTENDEE line as a property, or NULL
 * when it is not one (a line end in it could smuggle in others). */
static icalproperty *ig_client_attendee(const char *line)
{
  icalproperty *p;
  const char *addr;

  if (!line || strpbrk(line, "\r\n") || strncasecmp(line, "ATTENDEE", 8) != 0)
    return NULL;
  p = icalproperty_new_from_string(line);
  if (!p)
    return NULL;
  addr = icalproperty_isa(p) == ICAL_ATTENDEE_PROPERTY
             ? ig_mailto(icalproperty_get_attendee(p))
             : NULL;
  if (!addr) {
    icalproperty_free(p);
    return NULL;
  }
  if (!icalproperty_get_first_parameter(p, ICAL_SCHEDULEAGENT_PARAMETER))
    icalproperty_add_parameter(
        p, icalparameter_new_scheduleagent(ICAL_SCHEDULEAGENT_CLIENT));
  return p;
}

/* The attendees the client schedules itself never reached Graph: they come
 * back from what the CalDAV layer remembered, unless Graph now lists the
 * address (added in Outlook), whose line then stands. */
static void ig_out_client_attendees(const json_t *lines, icalcomponent *vev)
{
  const json_t *x;
  size_t i;

  json_array_foreach(lines, i, x)
  {
    icalproperty *p = ig_client_attendee(json_string_value(x));

    if (!p)
      continue;
    if (ig_has_attendee(vev, ig_mailto(icalproperty_get_attendee(p))))
      icalproperty_free(p);
    else
      icalcomponent_add_property(vev, p);
  }
}

/* One VEVENT from a Graph event; a RECURRENCE-ID when rid is given. */
static int ig_out_event(struct ig_out *o, const json_t *ev, const char *uid,
                        icalcomponent **vev_out, icaltimetype *start,
                        icaltimezone **zone)
{
  icalcomponent *vev = icalcomponent_new(ICAL_VEVENT_COMPONENT);
  int rc;

  *vev_out = vev;
  icalcomponent_set_uid(vev, uid);
  ig_out_stamps(ev, vev);
  ig_out_texts(ev, vev);
  rc = ig_out_times(o, ev, vev, start, zone);
  if (rc < 0)
    return rc;
  ig_out_people(ev, vev);
  ig_out_flags(ev, vev);
  ig_out_reminder(ev, vev);
  ig_out_meeting(ev, vev);
  return ICAL_GRAPH_OK;
}

/* An original start (DateTimeOffset, UTC) in the series' own form: for an
 * all-day series, the date of that instant in the series' zone, where its
 * occurrences start at midnight. */
static int ig_original(struct ig_out *o, const char *s, icaltimetype start,
                       icaltimezone *zone, icaltimetype *t)
{
  if (ig_parse_graph_time(s, t) < 0)
    return OUT_FAIL(o, ICAL_GRAPH_EGRAPH,
                    "occurrence without a valid "
                    "original start");
  if (!t->zone)
    t->zone = icaltimezone_get_utc_timezone();
  if (start.is_date) {
    *t = icaltime_convert_to_zone(*t, zone);
    t->is_date = 1;
    t->zone = NULL;
  }
  return ICAL_GRAPH_OK;
}

static int ig_out_series(struct ig_out *o, const json_t *master,
                         const struct ical_graph_ical_options *opt,
                         icaltimetype start, icaltimezone *zone,
                         icalcomponent *mev)
{
  const json_t *x;
  size_t i;
  int rc = ICAL_GRAPH_OK;

  json_array_foreach(opt->deleted, i, x)
  {
    icaltimetype t;

    rc = ig_original(o, json_string_value(x), start, zone, &t);
    if (rc < 0)
      return rc;
    icalcomponent_add_property(mev,
                               ig_time_prop(o, ICAL_EXDATE_PROPERTY, t, zone));
  }
  json_array_foreach(opt->exceptions, i, x)
  {
    icalcomponent *vev = NULL;
    icaltimetype t, xs;
    icaltimezone *xz;

    rc = ig_out_event(o, x, opt->uid, &vev, &xs, &xz);
    if (rc == ICAL_GRAPH_OK)
      rc = ig_original(o, ig_str(x, "originalStart"), start, zone, &t);
    if (rc == ICAL_GRAPH_OK)
      icalcomponent_add_property(
          vev, ig_time_prop(o, ICAL_RECURRENCEID_PROPERTY, t, zone));
    icalcomponent_add_component(o->vcal, vev);
    if (rc < 0)
      return rc;
  }
  (void) master;
  return rc;
}

static icalcomponent *ig_new_vcalendar(const char *method)
{
  icalcomponent *vcal = icalcomponent_new(ICAL_VCALENDAR_COMPONENT);

  icalcomponent_add_property(vcal, icalproperty_new_version("2.0"));
  icalcomponent_add_property(vcal, icalproperty_new_prodid(IG_PRODID));
  if (method)
    icalcomponent_add_property(
        vcal, icalproperty_new_method(icalenum_string_to_method(method)));
  return vcal;
}

int ical_graph_to_ical(const json_t *event,
                       const struct ical_graph_ical_options *opt, char **text,
                       char *err, size_t errsize)
{
  struct ig_out o = { .opt = opt, .err = err, .errsize = errsize };
  icalcomponent *vev = NULL;
  const json_t *rec = json_object_get(event, "recurrence");
  icaltimetype start;
  icaltimezone *zone;
  int rc;

  *text = NULL;
  if (!json_is_object(event) || !opt->uid)
    return OUT_FAIL(&o, ICAL_GRAPH_EGRAPH, "no event or no UID");
  o.vcal = ig_new_vcalendar(NULL);
  rc = ig_out_event(&o, event, opt->uid, &vev, &start, &zone);
  if (rc == ICAL_GRAPH_OK)
    ig_out_client_attendees(opt->client_attendees, vev);
  if (rc == ICAL_GRAPH_OK && json_is_object(rec))
    rc = ig_out_rrule(&o, rec, start, zone, vev);
  if (rc == ICAL_GRAPH_OK && json_is_object(rec))
    rc = ig_out_series(&o, event, opt, start, zone, vev);
  if (vev)
    icalcomponent_add_component(o.vcal, vev);
  if (rc == ICAL_GRAPH_OK)
    *text = icalcomponent_as_ical_string_r(o.vcal);
  icalcomponent_free(o.vcal);
  ig_out_aliases_free(&o);
  return rc;
}

/* --- getSchedule to VFREEBUSY ----------------------------------------- */

static icalparameter_fbtype ig_fbtype(const char *status)
{
  if (!status || strcmp(status, "busy") == 0)
    return ICAL_FBTYPE_BUSY;
  if (strcmp(status, "tentative") == 0)
    return ICAL_FBTYPE_BUSYTENTATIVE;
  if (strcmp(status, "oof") == 0)
    return ICAL_FBTYPE_BUSYUNAVAILABLE;
  return ICAL_FBTYPE_FREE; /* free, workingElsewhere, unknown */
}

static int ig_fb_periods(struct ig_out *o, const json_t *items,
                         icalcomponent *vfb)
{
  const json_t *item;
  icaltimezone *utc = icaltimezone_get_utc_timezone();
  size_t i;

  json_array_foreach(items, i, item)
  {
    icalparameter_fbtype fb = ig_fbtype(ig_str(item, "status"));
    struct icalperiodtype period = icalperiodtype_null_period();
    icaltimezone *z;
    icalproperty *p;
    int rc;

    if (fb == ICAL_FBTYPE_FREE)
      continue;
    rc = ig_graph_dt(o, json_object_get(item, "start"), "start", &period.start,
                     &z);
    if (rc == ICAL_GRAPH_OK)
      rc = ig_graph_dt(o, json_object_get(item, "end"), "end", &period.end, &z);
    if (rc < 0)
      return rc;
    period.start = icaltime_convert_to_zone(period.start, utc);
    period.end = icaltime_convert_to_zone(period.end, utc);
    p = icalproperty_new_freebusy(period);
    icalproperty_add_parameter(p, icalparameter_new_fbtype(fb));
    icalcomponent_add_property(vfb, p);
  }
  return ICAL_GRAPH_OK;
}

int ical_graph_freebusy_to_ical(const json_t *schedule,
                                const struct ical_graph_freebusy_request *req,
                                char **text, char *err, size_t errsize)
{
  struct ig_out o = { .err = err, .errsize = errsize };
  icaltimezone *utc = icaltimezone_get_utc_timezone();
  const char *id = ig_str(schedule, "scheduleId");
  icalcomponent *vfb;
  json_t *attendee;
  icalproperty *p;
  int rc;

  *text = NULL;
  if (!id)
    return OUT_FAIL(&o, ICAL_GRAPH_EGRAPH, "schedule without scheduleId");
  if (json_object_get(schedule, "error"))
    return OUT_FAIL(&o, ICAL_GRAPH_ENOTFOUND, "no free/busy for %s: %s", id,
                    ig_str(json_object_get(schedule, "error"), "message")
                        ? ig_str(json_object_get(schedule, "error"), "message")
                        : "unknown");

  o.vcal = ig_new_vcalendar(req->method);
  vfb = icalcomponent_new(ICAL_VFREEBUSY_COMPONENT);
  icalcomponent_add_component(o.vcal, vfb);
  if (req->uid)
    icalcomponent_set_uid(vfb, req->uid);
  icalcomponent_add_property(
      vfb, icalproperty_new_dtstamp(icaltime_current_time_with_zone(utc)));
  icalcomponent_add_property(
      vfb, icalproperty_new_dtstart(
               icaltime_from_timet_with_zone(req->start, 0, utc)));
  icalcomponent_add_property(
      vfb,
      icalproperty_new_dtend(icaltime_from_timet_with_zone(req->end, 0, utc)));
  if (req->organizer) {
    json_t *org = json_pack("{s:s}", "address", req->organizer);

    p = ig_address_prop(ICAL_ORGANIZER_PROPERTY, org);
    json_decref(org);
    icalcomponent_add_property(vfb, p);
  }
  attendee = json_pack("{s:s}", "address", id);
  icalcomponent_add_property(vfb,
                             ig_address_prop(ICAL_ATTENDEE_PROPERTY, attendee));
  json_decref(attendee);

  rc = ig_fb_periods(&o, json_object_get(schedule, "scheduleItems"), vfb);
  if (rc == ICAL_GRAPH_OK)
    *text = icalcomponent_as_ical_string_r(o.vcal);
  icalcomponent_free(o.vcal);
  return rc;
}

/* --- what an update changes ------------------------------------------- */

/* The event as a PUT of its own GET would translate it: Graph's event to a
 * calendar object and back, so that what Graph rewrites (HTML bodies, UTC
 * times, recurrence defaults, attendee status) compares as what it stands
 * for. *out is a new reference on success. */
static int ig_normalise(const json_t *event,
                        const struct ical_graph_options *opt, json_t **out,
                        char *err, size_t errsize)
{
  struct ical_graph_ical_options io = { .uid = "nextal-compare" };
  struct ical_graph_result res;
  char *text = NULL;
  int rc;

  *out = NULL;
  rc = ical_graph_to_ical(event, &io, &text, err, errsize);
  if (rc != ICAL_GRAPH_OK)
    return rc;
  rc = ical_graph_from_ical(text, strlen(text), opt, &res);
  if (rc == ICAL_GRAPH_OK)
    *out = json_incref(res.event);
  else
    snprintf(err, errsize, "%s", res.error);
  ical_graph_result_free(&res);
  free(text);
  return rc;
}

/* One attendee stands for another: the same address (case-insensitive),
 * the same type, and the same name when a is given one. */
static bool ig_same_attendee(const json_t *a, const json_t *b)
{
  const json_t *ea = json_object_get(a, "emailAddress");
  const json_t *eb = json_object_get(b, "emailAddress");
  const char *aa = ig_str(ea, "address"), *ba = ig_str(eb, "address");
  const char *at = ig_str(a, "type"), *bt = ig_str(b, "type");
  const char *an = ig_str(ea, "name"), *bn = ig_str(eb, "name");

  if (!aa || !ba || strcasecmp(aa, ba) != 0)
    return false;
  if (!at || !bt || strcmp(at, bt) != 0)
    return false;
  return !an || (bn && strcmp(an, bn) == 0);
}

/* Whether every element of a has its match in b (attendees as above,
 * other values by json_equal). */
static bool ig_contained(const json_t *a, const json_t *b, bool attendees)
{
  const json_t *x, *y;
  size_t i, j;

  json_array_foreach(a, i, x)
  {
    bool found = false;

    json_array_foreach(b, j, y)
    {
      if (attendees ? ig_same_attendee(x, y) : json_equal(x, y)) {
        found = true;
        break;
      }
    }
    if (!found)
      return false;
  }
  return true;
}

/* Attendees and categories are sets: their order means nothing to Graph.
 * Anything else is the same JSON value. */
static bool ig_same_value(const char *key, const json_t *want,
                          const json_t *have)
{
  bool attendees = strcmp(key, "attendees") == 0;

  if (attendees || strcmp(key, "categories") == 0) {
    if (!json_is_array(want) || !json_is_array(have)
        || json_array_size(want) != json_array_size(have))
      return false;
    /* Graph holds an address once; a name only wanted gives counts. */
    return ig_contained(want, have, attendees)
           && (attendees || ig_contained(have, want, false));
  }
  return have != NULL && json_equal(want, have);
}

int ical_graph_event_changes(const json_t *current, const json_t *wanted,
                             const struct ical_graph_options *opt,
                             json_t **changes, char *err, size_t errsize)
{
  json_t *have = NULL;
  const char *key;
  json_t *want;
  int rc;

  *changes = NULL;
  rc = ig_normalise(current, opt, &have, err, errsize);
  if (rc != ICAL_GRAPH_OK)
    return rc;
  *changes = json_object();
  json_object_foreach((json_t *) wanted, key, want)
  {
    if (!ig_same_value(key, want, json_object_get(have, key)))
      json_object_set(*changes, key, want);
  }
  json_decref(have);
  return ICAL_GRAPH_OK;
}
