/* SPDX-License-Identifier: MIT */
/* A CalDAV request's Graph calls (see include/caldav_request.h): sending,
 * answering a failure, and loading an event with what a calendar object
 * needs: for a series, its exceptions and its deleted occurrences. */
#include <errno.h>
#include <jansson.h>
#include <libical/ical.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "caldav_expand.h"
#include "caldav_request.h"
#include "log.h"
#include "tz_map.h"
#include "xalloc.h"

#define CALDAV_SERIES_YEARS 5        /* horizon of a series without end */
#define CALDAV_INSTANCE_PAGES_MAX 20 /* /instances pages of 100 followed */

void caldav_graph(struct caldav_req *r, const char *method, const char *path,
                  const json_t *body, const char *if_match, graph_done_cb done)
{
  struct graph_request req = { 0 };
  /* graph_client_send() adds Prefer: IdType="ImmutableId" itself. */
  const char *headers[2] = { NULL, NULL };
  char *match = NULL;
  char *text = NULL;

  if (if_match != NULL) {
    match = xasprintf("If-Match: %s", if_match);
    headers[0] = match;
  }
  if (body != NULL) {
    text = json_dumps(body, JSON_COMPACT);
    if (text == NULL)
      abort(); /* jansson fails only when out of memory */
    req.content_type = "application/json";
    req.body = text;
    req.body_len = strlen(text);
  }
  req.mailbox = r->address;
  req.method = method;
  req.path = path;
  req.headers = headers;
  log_trace(LOG_TRACE_CALDAV, "%s caldav graph method=%s path=%s",
            http_exchange_request(r->ex)->conn_id, method, path);
  graph_client_send(r->deps->graph, &req, done, r);
  free(text);
  free(match);
}

char *caldav_event_path(const char *address, const char *event_id,
                        const char *suffix)
{
  char *esc = caldav_escape(event_id);
  char *path = xasprintf("/v1.0/users/%s/events/%s%s", address, esc, suffix);

  free(esc);
  return path;
}

void caldav_graph_failed(struct caldav_req *r,
                         const struct graph_response *resp)
{
  char esc[256];
  char *text;

  log_warn(
      "%s caldav graph_failed address=%s status=%ld code=%s",
      http_exchange_request(r->ex)->conn_id, r->address, resp->status,
      log_escape(esc, sizeof(esc), resp->error_code, strlen(resp->error_code)));
  if (resp->status == 400) {
    /* Graph refused the event itself (a zone, a pattern, a property). */
    text = xasprintf("Microsoft Graph refused the event: %s (%s)",
                     resp->error_message, resp->error_code);
    caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-calendar-object-resource",
                 text);
  } else if (resp->status == 412) {
    text = xstrdup("the event changed in Outlook meanwhile; read it again");
    caldav_text(r, 412, text);
  } else if (resp->status == 429 || resp->status == 503) {
    static const char *const headers[]
        = { "Retry-After: 5", "Content-Type: text/plain", NULL };

    text
        = xasprintf("Microsoft Graph is busy (%ld); retry later", resp->status);
    caldav_finish(r, 503, headers, text, strlen(text));
  } else if (resp->status == 0 && resp->token_permanent) {
    text = xasprintf("the user must link their mailbox again (%s)",
                     resp->error_code);
    caldav_error_tagged(r, 403, WEBDAV_NS_DAV, "need-privileges",
                        "policy-refused", text);
  } else {
    text = xasprintf("Microsoft Graph failed: %ld %s %s", resp->status,
                     resp->error_code, resp->error_message);
    caldav_text(r, resp->status == 0 ? 504 : 502, text);
  }
  free(text);
}

json_t *caldav_json(const struct graph_response *resp)
{
  json_error_t err;

  return json_loadb(resp->body, resp->body_len, 0, &err);
}

bool caldav_graph_next_page(struct caldav_req *r, const json_t *page,
                            unsigned *pages, unsigned max, graph_done_cb done)
{
  const char *next
      = json_string_value(json_object_get(page, "@odata.nextLink"));
  const char *path = next != NULL ? strstr(next, "/v1.0/") : NULL;

  /* Graph's nextLink is absolute; the client joins its own base URL to a
   * path, so only the part from the version on is sent. */
  if (path == NULL || ++*pages >= max)
    return false;
  caldav_graph(r, "GET", path, NULL, NULL, done);
  return true;
}

/* The event and, for a series, its exceptions and deleted occurrences,
 * found by comparing the instances Graph lists with the occurrences the
 * pattern gives (Graph lists no deleted occurrences itself). */

void caldav_load_reset(struct caldav_load *ld)
{
  free(ld->event_id);
  json_decref(ld->event);
  json_decref(ld->instances);
  json_decref(ld->exceptions);
  json_decref(ld->deleted);
  free(ld->expected);
  free(ld->client_attendees);
  free(ld->etag);
  memset(ld, 0, sizeof(*ld));
}

void caldav_format_utc(time_t t, char *out, size_t size)
{
  struct tm tm;

  gmtime_r(&t, &tm);
  strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

bool caldav_parse_utc(const char *text, time_t *out)
{
  struct tm tm = { 0 };

  if (text == NULL || strptime(text, "%Y-%m-%dT%H:%M:%S", &tm) == NULL)
    return false;
  *out = timegm(&tm);
  return true;
}

/* What the occurrence callback needs. */
struct caldav_expand_ctx {
  struct caldav_load *ld;
  icaltimezone *days; /* an all-day series' zone, else NULL */
};

static void caldav_load_occurrence(icalcomponent *comp,
                                   struct icaltime_span *span, void *data)
{
  struct caldav_expand_ctx *ctx = data;
  struct caldav_load *ld = ctx->ld;
  time_t start = span->start;

  if (ld->nexpected == CALDAV_OCCURRENCES_MAX)
    return;
  /* libical places a date at midnight UTC; an all-day series' occurrences
   * start at midnight in its zone, and Graph's originalStart says so. */
  if (ctx->days != NULL) {
    icaltimetype day = icaltime_from_timet_with_zone(
        start, 1, icaltimezone_get_utc_timezone());

    day.is_date = 0;
    day.hour = day.minute = day.second = 0;
    day.zone = NULL;
    start = icaltime_as_timet_with_zone(day, ctx->days);
  }
  ld->expected
      = xrealloc(ld->expected, (ld->nexpected + 1) * sizeof(*ld->expected));
  ld->expected[ld->nexpected++] = start;
}

/* The zone an all-day series' occurrences start their days in: its
 * recurrence zone, else the zone it was created in, else UTC. */
static icaltimezone *caldav_load_day_zone(const json_t *event)
{
  const char *names[] = {
    json_string_value(json_object_get(
        json_object_get(json_object_get(event, "recurrence"), "range"),
        "recurrenceTimeZone")),
    json_string_value(json_object_get(event, "originalStartTimeZone")),
  };

  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    icaltimezone *zone = names[i] != NULL ? tz_map_ical_zone(names[i]) : NULL;

    if (zone != NULL)
      return zone;
  }
  return icaltimezone_get_utc_timezone();
}

/* Lists the occurrence starts of the series in ld->event, from its start
 * for CALDAV_SERIES_YEARS at most. Returns 0 or -EINVAL. */
static int caldav_load_expand(struct caldav_load *ld)
{
  struct ical_graph_ical_options opt = { .uid = "series" };
  struct caldav_expand_ctx ctx = { .ld = ld };
  icaltimezone *utc = icaltimezone_get_utc_timezone();
  icalcomponent *cal;
  icalcomponent *vev;
  struct icaltimetype dtstart;
  time_t first;
  char *text = NULL;
  char err[256];

  if (ical_graph_to_ical(ld->event, &opt, &text, err, sizeof(err))
      != ICAL_GRAPH_OK)
    return -EINVAL;
  cal = icalparser_parse_string(text);
  free(text);
  vev = cal != NULL
            ? icalcomponent_get_first_component(cal, ICAL_VEVENT_COMPONENT)
            : NULL;
  if (vev == NULL) {
    icalcomponent_free(cal);
    return -EINVAL;
  }
  dtstart = icalcomponent_get_dtstart(vev);
  if (dtstart.is_date)
    ctx.days = caldav_load_day_zone(ld->event);
  first = icaltime_as_timet_with_zone(
      dtstart, dtstart.zone != NULL ? dtstart.zone : utc);
  icalcomponent_foreach_recurrence(
      vev, icaltime_from_timet_with_zone(first - 1, 0, utc),
      icaltime_from_timet_with_zone(
          first + (time_t) CALDAV_SERIES_YEARS * 366 * 86400, 0, utc),
      caldav_load_occurrence, &ctx);
  icalcomponent_free(cal);
  return ld->nexpected > 0 ? 0 : -EINVAL;
}

/* The ETag of what was loaded: the change key alone for a plain event or
 * an untouched series, else a digest that also covers every exception's
 * change key and every deleted occurrence, so that an edit of one
 * occurrence in Outlook changes it too; either with the remembered
 * client-scheduled attendees (caldav_object_etag()). */
static char *caldav_load_etag(const struct caldav_load *ld)
{
  const char *ck = json_string_value(json_object_get(ld->event, "changeKey"));
  char *text;
  char *etag;
  const json_t *x;
  size_t i;

  if (ck == NULL || ck[0] == '\0')
    return NULL;
  if (json_array_size(ld->exceptions) == 0 && json_array_size(ld->deleted) == 0)
    return caldav_object_etag(ck, ld->client_attendees);
  text = xstrdup(ck);
  json_array_foreach(ld->exceptions, i, x)
  {
    const char *start = json_string_value(json_object_get(x, "originalStart"));
    const char *xck = json_string_value(json_object_get(x, "changeKey"));
    char *more
        = xasprintf("%s|%s=%s", text, start ? start : "", xck ? xck : "");

    free(text);
    text = more;
  }
  json_array_foreach(ld->deleted, i, x)
  {
    char *more = xasprintf("%s|-%s", text, json_string_value(x));

    free(text);
    text = more;
  }
  etag = caldav_object_etag(text, ld->client_attendees);
  free(text);
  return etag;
}

static void caldav_load_done(struct caldav_req *r)
{
  struct caldav_load *ld = &r->ld;
  const json_t *x;
  size_t i;

  ld->exceptions = json_array();
  ld->deleted = json_array();
  json_array_foreach(ld->instances, i, x)
  {
    const char *type = json_string_value(json_object_get(x, "type"));

    if (type != NULL && strcmp(type, "exception") == 0)
      json_array_append(ld->exceptions, (json_t *) x);
  }
  for (size_t k = 0; k < ld->nexpected && ld->instances != NULL; k++) {
    bool present = false;
    char when[32];

    json_array_foreach(ld->instances, i, x)
    {
      time_t t;

      if (caldav_parse_utc(
              json_string_value(json_object_get(x, "originalStart")), &t)
          && t == ld->expected[k]) {
        present = true;
        break;
      }
    }
    if (!present) {
      caldav_format_utc(ld->expected[k], when, sizeof(when));
      json_array_append_new(ld->deleted, json_string(when));
    }
  }
  ld->etag = caldav_load_etag(ld);
  ld->then(r, true);
}

static void caldav_load_on_instances(void *arg,
                                     const struct graph_response *resp)
{
  struct caldav_req *r = arg;
  struct caldav_load *ld = &r->ld;
  json_t *page;
  bool followed;

  if (resp->status != 200) {
    caldav_graph_failed(r, resp);
    return;
  }
  page = caldav_json(resp);
  json_array_extend(ld->instances, json_object_get(page, "value"));
  followed = caldav_graph_next_page(
      r, page, &ld->pages, CALDAV_INSTANCE_PAGES_MAX, caldav_load_on_instances);
  json_decref(page);
  if (!followed)
    caldav_load_done(r);
}

static void caldav_load_on_event(void *arg, const struct graph_response *resp)
{
  struct caldav_req *r = arg;
  struct caldav_load *ld = &r->ld;
  char from[32], to[32];
  char *suffix;
  char *path;

  if (resp->status == 404) {
    ld->then(r, false);
    return;
  }
  if (resp->status != 200) {
    caldav_graph_failed(r, resp);
    return;
  }
  ld->event = caldav_json(resp);
  if (!json_is_object(json_object_get(ld->event, "recurrence"))
      || caldav_load_expand(ld) < 0) {
    ld->etag = caldav_load_etag(ld);
    ld->then(r, true);
    return;
  }
  /* A week either side: an exception may have moved that far. */
  caldav_format_utc(ld->expected[0] - 7 * 86400, from, sizeof(from));
  caldav_format_utc(ld->expected[ld->nexpected - 1] + 7 * 86400, to,
                    sizeof(to));
  ld->instances = json_array();
  suffix = xasprintf("/instances?startDateTime=%s&endDateTime=%s&$top=100",
                     from, to);
  path = caldav_event_path(r->address, ld->event_id, suffix);
  caldav_graph(r, "GET", path, NULL, NULL, caldav_load_on_instances);
  free(path);
  free(suffix);
}

/* Starts r->ld for event_id with the attendees the client schedules
 * itself; a store error only leaves them out. */
static void caldav_load_start(struct caldav_req *r, const char *event_id)
{
  caldav_load_reset(&r->ld);
  r->ld.event_id = xstrdup(event_id);
  caldav_row_client(r->deps->store, r->address, event_id,
                    &r->ld.client_attendees);
}

void caldav_load(struct caldav_req *r, const char *event_id,
                 caldav_loaded_cb then)
{
  char *path = caldav_event_path(r->address, event_id, "");

  caldav_load_start(r, event_id);
  r->ld.then = then;
  caldav_graph(r, "GET", path, NULL, NULL, caldav_load_on_event);
  free(path);
}

bool caldav_load_given(struct caldav_req *r, const char *event_id,
                       json_t *event)
{
  const char *type = json_string_value(json_object_get(event, "type"));

  /* A series needs its instances: only a single event is whole here. */
  if (type == NULL || strcmp(type, "singleInstance") != 0
      || json_is_object(json_object_get(event, "recurrence")))
    return false;
  caldav_load_start(r, event_id);
  r->ld.event = json_incref(event);
  r->ld.etag = caldav_load_etag(&r->ld);
  return true;
}

/* The zones the client wrote the object in come from its mapping row, so
 * that times come back in them (ical_graph_to_ical() decides whether Graph
 * still holds the same zone). A store error only loses that preference.
 * The attendees the client schedules itself, which Graph never had, come
 * back from what caldav_load() read. */
char *caldav_load_ical(struct caldav_req *r, const char *uid, char *err,
                       size_t errsize)
{
  struct ical_graph_ical_options opt = { .uid = uid,
                                         .exceptions = r->ld.exceptions,
                                         .deleted = r->ld.deleted };
  json_t *client = NULL;
  char *start_tzid = NULL;
  char *end_tzid = NULL;
  char *text = NULL;

  if (r->ld.client_attendees != NULL)
    client = json_loads(r->ld.client_attendees, 0, NULL);
  opt.client_attendees = client;

  if (r->ld.event_id != NULL)
    caldav_row_zones(r->deps->store, r->address, uid, r->ld.event_id,
                     &start_tzid, &end_tzid);
  opt.start_tzid = start_tzid;
  opt.end_tzid = end_tzid;
  if (ical_graph_to_ical(r->ld.event, &opt, &text, err, errsize)
      != ICAL_GRAPH_OK)
    text = NULL;
  json_decref(client);
  free(start_tzid);
  free(end_tzid);
  return text;
}
