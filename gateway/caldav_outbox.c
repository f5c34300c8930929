/* SPDX-License-Identifier: MIT */
/* The scheduling outbox (RFC 6638): free/busy of several attendees,
 * answered from one Graph getSchedule (see include/caldav_request.h). */
#include <jansson.h>
#include <libical/ical.h>
#include <libxml/tree.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "caldav_request.h"
#include "log.h"
#include "policy.h"
#include "xalloc.h"

#define CALDAV_FREEBUSY_ATTENDEES_MAX 20 /* getSchedule's limit per call */
#define CALDAV_FREEBUSY_INTERVAL 15      /* availabilityView, minutes */

/* The mailto: address of a calendar-user property, lower-cased into out.
 * Returns false when the value is not a usable mailto: address. */
static bool caldav_mailto(icalproperty *p, char *out, size_t size)
{
  const char *value = p != NULL ? icalproperty_get_value_as_string(p) : NULL;

  if (value == NULL || strncasecmp(value, "mailto:", 7) != 0)
    return false;
  return policy_address_normalize(value + 7, out, size) == 0;
}

static void caldav_outbox_answer(struct caldav_req *r, json_t *schedules)
{
  static const char *const headers[]
      = { "Content-Type: application/xml; charset=utf-8", NULL };
  xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "schedule-response");
  xmlNsPtr cal = xmlNewNs(root, BAD_CAST WEBDAV_NS_CALDAV, BAD_CAST "C");
  xmlNsPtr dav = xmlNewNs(root, BAD_CAST WEBDAV_NS_DAV, BAD_CAST "D");
  xmlChar *out = NULL;
  int len = 0;
  const json_t *who;
  size_t i;

  xmlSetNs(root, cal);
  xmlDocSetRootElement(doc, root);
  json_array_foreach(r->fb_attendees, i, who)
  {
    const char *addr = json_string_value(who);
    struct ical_graph_freebusy_request fb = {
      .method = "REPLY",
      .organizer = r->address,
      .uid = r->fb_uid,
      .start = r->fb_start,
      .end = r->fb_end,
    };
    xmlNodePtr resp = xmlNewChild(root, cal, BAD_CAST "response", NULL);
    xmlNodePtr rcpt = xmlNewChild(resp, cal, BAD_CAST "recipient", NULL);
    const json_t *schedule = NULL;
    const json_t *x;
    size_t k;
    char *href = xasprintf("mailto:%s", addr);
    char *text = NULL;
    char err[256];
    int rc = ICAL_GRAPH_ENOTFOUND;

    xmlNewTextChild(rcpt, dav, BAD_CAST "href", BAD_CAST href);
    free(href);
    json_array_foreach(schedules, k, x)
    {
      const char *id = json_string_value(json_object_get(x, "scheduleId"));

      if (id != NULL && strcasecmp(id, addr) == 0)
        schedule = x;
    }
    if (schedule != NULL)
      rc = ical_graph_freebusy_to_ical(schedule, &fb, &text, err, sizeof(err));
    if (rc == ICAL_GRAPH_OK) {
      xmlNewTextChild(resp, cal, BAD_CAST "request-status",
                      BAD_CAST "2.0;Success");
      xmlNewTextChild(resp, cal, BAD_CAST "calendar-data", BAD_CAST text);
    } else {
      xmlNewTextChild(resp, cal, BAD_CAST "request-status",
                      BAD_CAST "3.7;Invalid calendar user");
    }
    free(text);
  }
  xmlDocDumpFormatMemoryEnc(doc, &out, &len, "UTF-8", 0);
  caldav_finish(r, 200, headers, (const char *) out, (size_t) len);
  xmlFree(out);
  xmlFreeDoc(doc);
}

static void caldav_outbox_on_schedule(void *arg,
                                      const struct graph_response *resp)
{
  struct caldav_req *r = arg;
  json_t *body;

  if (resp->status != 200) {
    caldav_graph_failed(r, resp);
    return;
  }
  body = caldav_json(resp);
  caldav_outbox_answer(r, json_object_get(body, "value"));
  json_decref(body);
}

void caldav_get_schedule(struct caldav_req *r, const json_t *attendees,
                         time_t start, time_t end, graph_done_cb done)
{
  char from[32], to[32];
  json_t *body;
  char *path;

  /* Graph takes the zone separately: no "Z". */
  caldav_format_utc(start, from, sizeof(from));
  caldav_format_utc(end, to, sizeof(to));
  from[strlen(from) - 1] = '\0';
  to[strlen(to) - 1] = '\0';
  body = json_pack("{s:O, s:{s:s, s:s}, s:{s:s, s:s}, s:i}", "schedules",
                   attendees, "startTime", "dateTime", from, "timeZone", "UTC",
                   "endTime", "dateTime", to, "timeZone", "UTC",
                   "availabilityViewInterval", CALDAV_FREEBUSY_INTERVAL);
  path = xasprintf("/v1.0/users/%s/calendar/getSchedule", r->address);
  caldav_graph(r, "POST", path, body, NULL, done);
  json_decref(body);
  free(path);
}

void caldav_outbox_post(struct caldav_req *r)
{
  const struct http_server_request *hreq = http_exchange_request(r->ex);
  icaltimezone *utc = icaltimezone_get_utc_timezone();
  icalcomponent *cal = NULL;
  icalcomponent *vfb = NULL;
  icalproperty *p;
  struct icaltimetype ts, te;
  char addr[POLICY_ADDRESS_MAX + 1];
  char bad_time[256];
  const char *why = NULL;

  if (!caldav_body_fits(r, ICAL_GRAPH_TEXT_MAX))
    return;
  if (hreq->body_len > 0)
    cal = icalparser_parse_string(hreq->body);
  if (cal != NULL)
    vfb = icalcomponent_get_first_component(cal, ICAL_VFREEBUSY_COMPONENT);
  if (vfb == NULL || icalcomponent_get_method(cal) != ICAL_METHOD_REQUEST) {
    icalcomponent_free(cal);
    caldav_error(r, 400, WEBDAV_NS_CALDAV, "valid-scheduling-message",
                 "the outbox takes a VCALENDAR with METHOD:REQUEST and one "
                 "VFREEBUSY");
    return;
  }
  if (!caldav_mailto(
          icalcomponent_get_first_property(vfb, ICAL_ORGANIZER_PROPERTY), addr,
          sizeof(addr))
      || strcmp(addr, r->address) != 0) {
    icalcomponent_free(cal);
    caldav_error(r, 403, WEBDAV_NS_CALDAV, "organizer-allowed",
                 "the ORGANIZER must be the owner of this outbox");
    return;
  }
  ts = icalcomponent_get_dtstart(vfb);
  te = icalcomponent_get_dtend(vfb);
  r->fb_start = icaltime_as_timet_with_zone(ts, ts.zone ? ts.zone : utc);
  r->fb_end = icaltime_as_timet_with_zone(te, te.zone ? te.zone : utc);
  r->fb_attendees = json_array();
  for (p = icalcomponent_get_first_property(vfb, ICAL_ATTENDEE_PROPERTY);
       p != NULL && why == NULL;
       p = icalcomponent_get_next_property(vfb, ICAL_ATTENDEE_PROPERTY)) {
    if (!caldav_mailto(p, addr, sizeof(addr)))
      why = "every ATTENDEE must be a mailto: address";
    else if (json_array_size(r->fb_attendees) == CALDAV_FREEBUSY_ATTENDEES_MAX)
      why = "too many attendees for one free/busy request (20 at most)";
    else
      json_array_append_new(r->fb_attendees, json_string(addr));
  }
  if (why == NULL && json_array_size(r->fb_attendees) == 0)
    why = "the request names no ATTENDEE";
  /* An impossible date would reach getSchedule as some other time. */
  if (why == NULL && !icaltime_is_null_time(ts)
      && ical_graph_time_check("DTSTART", ts, bad_time, sizeof(bad_time)) < 0)
    why = bad_time;
  if (why == NULL && !icaltime_is_null_time(te)
      && ical_graph_time_check("DTEND", te, bad_time, sizeof(bad_time)) < 0)
    why = bad_time;
  if (why == NULL
      && (icaltime_is_null_time(ts) || icaltime_is_null_time(te)
          || r->fb_end <= r->fb_start))
    why = "the request needs DTSTART and a later DTEND";
  if (why == NULL && r->fb_end - r->fb_start > CALDAV_FREEBUSY_SPAN_MAX_S)
    why = CALDAV_FREEBUSY_SPAN_TEXT;
  if (icalcomponent_get_uid(vfb) != NULL)
    r->fb_uid = xstrdup(icalcomponent_get_uid(vfb));
  icalcomponent_free(cal);
  if (why != NULL) {
    caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-scheduling-message", why);
    return;
  }
  caldav_get_schedule(r, r->fb_attendees, r->fb_start, r->fb_end,
                      caldav_outbox_on_schedule);
}
