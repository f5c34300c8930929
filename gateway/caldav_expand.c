/* SPDX-License-Identifier: MIT */
/* Recurrence expansion (see include/caldav_expand.h): libical walks the
 * rule, overrides replace the occurrences they name. */
#include "caldav_expand.h"

#include <libical/ical.h>
#include <stdbool.h>
#include <stdlib.h>

#include "xalloc.h"

/* The work of one caldav_expand() call. */
struct caldav_expansion {
  icalcomponent *master;
  icalcomponent *out; /* the new VCALENDAR */
  icalcomponent **overrides;
  size_t noverrides;
  time_t *override_ids; /* RECURRENCE-ID of each override, UTC */
  size_t count;
};

/* A time property of vev as a UTC time, read in the zone its TZID names;
 * 0 when vev has none. */
static time_t caldav_prop_timet(icalcomponent *vev, icalproperty_kind kind)
{
  icaltimezone *utc = icaltimezone_get_utc_timezone();
  icalproperty *p = icalcomponent_get_first_property(vev, kind);
  struct icaltimetype t;
  icalparameter *tzid;
  icaltimezone *zone = NULL;

  if (p == NULL)
    return 0;
  if (kind == ICAL_RECURRENCEID_PROPERTY)
    t = icalproperty_get_recurrenceid(p);
  else if (kind == ICAL_DTEND_PROPERTY)
    t = icalproperty_get_dtend(p);
  else
    t = icalproperty_get_dtstart(p);
  tzid = icalproperty_get_first_parameter(p, ICAL_TZID_PARAMETER);
  if (tzid != NULL)
    zone = icalcomponent_get_timezone(icalcomponent_get_parent(vev),
                                      icalparameter_get_tzid(tzid));
  if (zone == NULL)
    zone = t.zone != NULL ? (icaltimezone *) t.zone : utc;
  return icaltime_as_timet_with_zone(t, zone);
}

/* Replaces the time properties of an instance with UTC values. */
static void caldav_instance_times(icalcomponent *vev, time_t start, time_t end,
                                  time_t original, bool date)
{
  icaltimezone *utc = icaltimezone_get_utc_timezone();
  icalproperty_kind kinds[]
      = { ICAL_DTSTART_PROPERTY,  ICAL_DTEND_PROPERTY,
          ICAL_DURATION_PROPERTY, ICAL_RECURRENCEID_PROPERTY,
          ICAL_RRULE_PROPERTY,    ICAL_RDATE_PROPERTY,
          ICAL_EXDATE_PROPERTY };
  icalproperty *p;

  for (size_t i = 0; i < sizeof(kinds) / sizeof(*kinds); i++) {
    while ((p = icalcomponent_get_first_property(vev, kinds[i])) != NULL) {
      icalcomponent_remove_property(vev, p);
      icalproperty_free(p);
    }
  }
  icalcomponent_add_property(
      vev, icalproperty_new_dtstart(
               icaltime_from_timet_with_zone(start, date, utc)));
  icalcomponent_add_property(
      vev,
      icalproperty_new_dtend(icaltime_from_timet_with_zone(end, date, utc)));
  icalcomponent_add_property(
      vev, icalproperty_new_recurrenceid(
               icaltime_from_timet_with_zone(original, date, utc)));
}

static void caldav_expand_one(icalcomponent *comp, struct icaltime_span *span,
                              void *data)
{
  struct caldav_expansion *x = data;
  icalcomponent *inst;

  if (x->count == CALDAV_OCCURRENCES_MAX)
    return;
  for (size_t i = 0; i < x->noverrides; i++) {
    if (x->override_ids[i] == span->start)
      return; /* the override stands for it */
  }
  inst = icalcomponent_new_clone(x->master);
  caldav_instance_times(inst, span->start, span->end, span->start,
                        icalcomponent_get_dtstart(x->master).is_date);
  icalcomponent_add_component(x->out, inst);
  x->count++;
}

char *caldav_expand(const char *text, time_t from, time_t to)
{
  icaltimezone *utc = icaltimezone_get_utc_timezone();
  icalcomponent *cal = icalparser_parse_string(text);
  struct caldav_expansion x = { 0 };
  icalcomponent *c;
  char *out = NULL;

  for (c = cal ? icalcomponent_get_first_component(cal, ICAL_VEVENT_COMPONENT)
               : NULL;
       c != NULL;
       c = icalcomponent_get_next_component(cal, ICAL_VEVENT_COMPONENT)) {
    if (icalcomponent_get_first_property(c, ICAL_RECURRENCEID_PROPERTY)
        == NULL) {
      x.master = c;
      continue;
    }
    x.overrides
        = xrealloc(x.overrides, (x.noverrides + 1) * sizeof(*x.overrides));
    x.override_ids = xrealloc(x.override_ids,
                              (x.noverrides + 1) * sizeof(*x.override_ids));
    x.overrides[x.noverrides] = c;
    x.override_ids[x.noverrides++]
        = caldav_prop_timet(c, ICAL_RECURRENCEID_PROPERTY);
  }
  if (x.master == NULL
      || icalcomponent_get_first_property(x.master, ICAL_RRULE_PROPERTY)
             == NULL)
    goto out;
  x.out = icalcomponent_new(ICAL_VCALENDAR_COMPONENT);
  icalcomponent_add_property(x.out, icalproperty_new_version("2.0"));
  icalcomponent_add_property(
      x.out, icalproperty_new_prodid("-//Nextal//nextal-agent//EN"));
  icalcomponent_foreach_recurrence(
      x.master, icaltime_from_timet_with_zone(from, 0, utc),
      icaltime_from_timet_with_zone(to, 0, utc), caldav_expand_one, &x);
  for (size_t i = 0; i < x.noverrides; i++) {
    time_t start = caldav_prop_timet(x.overrides[i], ICAL_DTSTART_PROPERTY);
    time_t end = caldav_prop_timet(x.overrides[i], ICAL_DTEND_PROPERTY);
    icalcomponent *inst;

    if (end < start)
      end = start;
    if (start >= to || end <= from)
      continue;
    inst = icalcomponent_new_clone(x.overrides[i]);
    caldav_instance_times(inst, start, end, x.override_ids[i],
                          icalcomponent_get_dtstart(x.overrides[i]).is_date);
    icalcomponent_add_component(x.out, inst);
  }
  out = icalcomponent_as_ical_string_r(x.out);
  icalcomponent_free(x.out);
out:
  free(x.overrides);
  free(x.override_ids);
  icalcomponent_free(cal);
  return out;
}
