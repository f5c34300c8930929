/* SPDX-License-Identifier: MIT */
/* PUT, GET, HEAD and DELETE of one calendar object (see
 * include/caldav_request.h): an event of the user's Outlook calendar, a
 * series written as the master, then its cancelled and moved
 * occurrences. */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "caldav_request.h"
#include "log.h"
#include "tz_map.h"
#include "xalloc.h"

/* A mailbox's own time zone (mailboxSettings), as Graph gave it. */
struct caldav_zone_entry {
  char address[POLICY_ADDRESS_MAX + 1];
  char zone[TZ_MAP_NAME_MAX]; /* a name tz_map_to_windows() resolves */
  int64_t until_ms;           /* monotonic time it expires, 0: free slot */
};

struct caldav_zones {
  struct caldav_zone_entry entries[CALDAV_ZONE_CACHE_MAX];
};

struct caldav_zones *caldav_zones_new(void)
{
  return xcalloc(1, sizeof(struct caldav_zones));
}

void caldav_zones_free(struct caldav_zones *zones)
{
  free(zones);
}

const char *caldav_zones_get(const struct caldav_zones *zones,
                             const char *address, int64_t now_ms)
{
  for (size_t i = 0; i < CALDAV_ZONE_CACHE_MAX; i++) {
    const struct caldav_zone_entry *e = &zones->entries[i];

    if (e->until_ms > now_ms && strcmp(e->address, address) == 0)
      return e->zone;
  }
  return NULL;
}

void caldav_zones_put(struct caldav_zones *zones, const char *address,
                      const char *zone, int64_t now_ms)
{
  struct caldav_zone_entry *slot = &zones->entries[0];

  for (size_t i = 0; i < CALDAV_ZONE_CACHE_MAX; i++) {
    struct caldav_zone_entry *e = &zones->entries[i];

    if (strcmp(e->address, address) == 0 || e->until_ms <= now_ms) {
      slot = e;
      break;
    }
    if (e->until_ms < slot->until_ms)
      slot = e;
  }
  snprintf(slot->address, sizeof(slot->address), "%s", address);
  snprintf(slot->zone, sizeof(slot->zone), "%s", zone);
  slot->until_ms = now_ms + CALDAV_ZONE_TTL_MS;
}

static int64_t caldav_monotonic_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Maps a translation error to its CalDAV precondition. */
static void caldav_put_refused(struct caldav_req *r, int rc)
{
  const char *pre;

  switch (rc) {
    case ICAL_GRAPH_EPARSE:
    case ICAL_GRAPH_ENOZONE:
      pre = "valid-calendar-data";
      break;
    case ICAL_GRAPH_ECOMPONENT:
      pre = "supported-calendar-component";
      break;
    case ICAL_GRAPH_EORGANIZER:
      pre = "same-organizer-in-all-components";
      break;
    case ICAL_GRAPH_ELIMIT:
      pre = "max-resource-size";
      break;
    default:
      pre = "valid-calendar-object-resource";
      break;
  }
  log_info("%s caldav put_refused address=%s precondition=%s",
           http_exchange_request(r->ex)->conn_id, r->address, pre);
  caldav_error(r, 403, WEBDAV_NS_CALDAV, pre, r->tr.error);
}

/* Stores the mapping with etag and answers the PUT. */
static void caldav_put_answer(struct caldav_req *r, const char *etag)
{
  char *header = NULL;
  const char *headers[2] = { NULL, NULL };

  free(r->row.etag);
  r->row.etag = etag != NULL ? xstrdup(etag) : NULL;
  if (caldav_row_put(r->deps->store, r->address, &r->row) < 0) {
    caldav_store_failed(r, "the event was written but its mapping was not "
                           "stored; retry the request");
    return;
  }
  caldav_row_unalias(r->deps->store, r->address, r->row.name, r->row.event_id);
  if (etag != NULL) {
    header = xasprintf("ETag: %s", etag);
    headers[0] = header;
  }
  log_info("%s caldav %s address=%s event=%s",
           http_exchange_request(r->ex)->conn_id,
           r->put_status == 201 ? "created" : "updated", r->address,
           r->row.event_id);
  caldav_finish(r, r->put_status, headers, NULL, 0);
  free(header);
}

static void caldav_put_on_final(struct caldav_req *r, bool found)
{
  if (!found) {
    caldav_row_delete(r->deps->store, r->address, r->name);
    caldav_text(r, 409, "the event was deleted in Outlook meanwhile");
    return;
  }
  caldav_put_answer(r, r->ld.etag);
}

static void caldav_put_next_op(struct caldav_req *r);

/* Whether two optional strings are the same. */
static bool caldav_same_text(const char *a, const char *b)
{
  return (a == NULL && b == NULL)
         || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The translation options of this PUT, for comparing with Graph. */
static struct ical_graph_options caldav_put_options(struct caldav_req *r)
{
  struct ical_graph_options opt = {
    .user = r->address,
    .default_zone
    = caldav_zones_get(r->deps->zones, r->address, caldav_monotonic_ms()),
  };

  return opt;
}

static void caldav_put_on_op(void *arg, const struct graph_response *resp)
{
  struct caldav_req *r = arg;

  /* An occurrence already gone is what a DELETE wanted. */
  if (resp->status / 100 != 2 && resp->status != 404) {
    caldav_graph_failed(r, resp);
    return;
  }
  r->next_op++;
  caldav_put_next_op(r);
}

/* Applies the next EXDATE (DELETE) or override (PATCH) to its instance;
 * after the last one, reloads the series for its ETag. */
static void caldav_put_next_op(struct caldav_req *r)
{
  json_t *op = json_array_get(r->ops, r->next_op);
  char *path;

  if (op == NULL && r->unchanged
      && caldav_same_text(r->ld.client_attendees, r->row.client_attendees)) {
    /* Nothing was written: the ETag read is still the object's. */
    caldav_put_answer(r, r->ld.etag);
    return;
  }
  if (op == NULL) {
    caldav_load(r, r->row.event_id, caldav_put_on_final);
    return;
  }
  r->unchanged = false;
  path = caldav_event_path(r->address,
                           json_string_value(json_object_get(op, "id")), "");
  caldav_graph(r, json_string_value(json_object_get(op, "method")), path,
               json_object_get(op, "event"), NULL, caldav_put_on_op);
  free(path);
}

/* The instance of the loaded series that starts originally at key (a
 * {dateTime, timeZone: UTC} object), or NULL: Graph lists no deleted
 * occurrence, so an EXDATE already applied finds none. */
static const json_t *caldav_instance_at(struct caldav_req *r, const json_t *key)
{
  const json_t *x;
  time_t want, t;
  size_t i;

  if (!caldav_parse_utc(json_string_value(json_object_get(key, "dateTime")),
                        &want))
    return NULL;
  json_array_foreach(r->ld.instances, i, x)
  {
    if (caldav_parse_utc(json_string_value(json_object_get(x, "originalStart")),
                         &t)
        && t == want)
      return x;
  }
  return NULL;
}

static void caldav_put_on_undone(void *arg, const struct graph_response *resp)
{
  struct caldav_req *r = arg;

  if (resp->status == 204 || resp->status == 200 || resp->status == 404) {
    caldav_row_delete(r->deps->store, r->address, r->name);
    caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-calendar-object-resource",
                 "a RECURRENCE-ID names no occurrence of the series; nothing "
                 "was stored (the series Graph had created was deleted)");
    return;
  }
  caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-calendar-object-resource",
               "a RECURRENCE-ID names no occurrence of the series; the series "
               "was written without its overrides and could not be removed");
}

/* An override names no occurrence, which only Graph's instances show, so
 * after the series is written. A series this PUT created is deleted again
 * so that the 403 means nothing was stored; an updated series keeps the
 * update (the previous version cannot be restored). */
static void caldav_put_undo(struct caldav_req *r)
{
  char *path;

  if (r->put_status != 201) {
    caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-calendar-object-resource",
                 "a RECURRENCE-ID names no occurrence of the series; the "
                 "series was updated without its overrides");
    return;
  }
  path = caldav_event_path(r->address, r->row.event_id, "");
  caldav_graph(r, "DELETE", path, NULL, NULL, caldav_put_on_undone);
  free(path);
}

/* What to PATCH so that current (Graph's event or instance) holds wanted:
 * the properties that differ, or all of wanted when current cannot be
 * compared. A new reference, empty when nothing differs. */
static json_t *caldav_put_changes(struct caldav_req *r, const json_t *current,
                                  const json_t *wanted)
{
  struct ical_graph_options opt = caldav_put_options(r);
  json_t *changes = NULL;
  char err[256];

  if (ical_graph_event_changes(current, wanted, &opt, &changes, err,
                               sizeof(err))
      != ICAL_GRAPH_OK) {
    log_debug("%s caldav compare_failed address=%s",
              http_exchange_request(r->ex)->conn_id, r->address);
    return json_incref((json_t *) wanted);
  }
  return changes;
}

static void caldav_put_on_series(struct caldav_req *r, bool found)
{
  const json_t *x;
  size_t i;

  if (!found) {
    caldav_row_delete(r->deps->store, r->address, r->name);
    caldav_text(r, 409, "the event was deleted in Outlook meanwhile");
    return;
  }
  r->ops = json_array();
  json_array_foreach(r->tr.exdates, i, x)
  {
    const json_t *inst = caldav_instance_at(r, x);

    /* An EXDATE that names no occurrence changes nothing (RFC 5545), nor
     * does one whose occurrence is deleted already. */
    if (inst != NULL)
      json_array_append_new(r->ops,
                            json_pack("{s:s, s:O}", "method", "DELETE", "id",
                                      json_object_get(inst, "id")));
  }
  json_array_foreach(r->tr.overrides, i, x)
  {
    const json_t *inst
        = caldav_instance_at(r, json_object_get(x, "originalStart"));
    json_t *changes;

    if (inst == NULL) {
      caldav_put_undo(r);
      return;
    }
    changes = caldav_put_changes(r, inst, json_object_get(x, "event"));
    if (json_object_size(changes) > 0)
      json_array_append_new(
          r->ops, json_pack("{s:s, s:O, s:O}", "method", "PATCH", "id",
                            json_object_get(inst, "id"), "event", changes));
    json_decref(changes);
  }
  r->next_op = 0;
  caldav_put_next_op(r);
}

/* The zones the client wrote DTSTART and DTEND in go into the mapping, so
 * that GET and REPORT answer in them (caldav_load_ical()), and so do the
 * attendees the client schedules itself, which Graph never saw: this PUT's
 * replace the last one's. */
static void caldav_put_remember(struct caldav_req *r)
{
  free(r->row.start_tzid);
  free(r->row.end_tzid);
  free(r->row.client_attendees);
  r->row.start_tzid
      = r->tr.start_tzid[0] != '\0' ? xstrdup(r->tr.start_tzid) : NULL;
  r->row.end_tzid = r->tr.end_tzid[0] != '\0' ? xstrdup(r->tr.end_tzid) : NULL;
  r->row.client_attendees = NULL;
  if (json_array_size(r->tr.client_attendees) > 0) {
    r->row.client_attendees = json_dumps(r->tr.client_attendees, JSON_COMPACT);
    if (r->row.client_attendees == NULL)
      abort(); /* jansson fails only when out of memory */
  }
}

/* After the master was written: the occurrences, then the answer. */
static void caldav_put_written(struct caldav_req *r, const json_t *event)
{
  const char *ck = json_string_value(json_object_get(event, "changeKey"));
  char *etag = NULL;

  caldav_put_remember(r);

  if (json_array_size(r->tr.exdates) > 0
      || json_array_size(r->tr.overrides) > 0) {
    /* Keep the mapping now: the event exists whatever happens next. A
     * create is marked incomplete until its occurrences are done, so that
     * the client's retry with If-None-Match: * can finish it. */
    if (r->put_status == 201) {
      free(r->row.etag);
      r->row.etag = xstrdup(CALDAV_ETAG_INCOMPLETE);
    }
    caldav_row_put(r->deps->store, r->address, &r->row);
    caldav_load(r, r->row.event_id, caldav_put_on_series);
    return;
  }
  /* The ETag GET will give: the change key and these attendees. */
  if (ck != NULL && ck[0] != '\0')
    etag = caldav_object_etag(ck, r->row.client_attendees);
  caldav_put_answer(r, etag);
  free(etag);
}

static void caldav_put_on_created(void *arg, const struct graph_response *resp)
{
  struct caldav_req *r = arg;
  json_t *event;
  const char *id;

  if (resp->status != 201 && resp->status != 200) {
    caldav_graph_failed(r, resp);
    return;
  }
  event = caldav_json(resp);
  id = json_string_value(json_object_get(event, "id"));
  if (id == NULL) {
    json_decref(event);
    caldav_text(r, 502, "Microsoft Graph answered without an event id");
    return;
  }
  r->row.event_id = xstrdup(id);
  r->put_status = 201;
  caldav_put_written(r, event);
  json_decref(event);
}

static void caldav_put_create(struct caldav_req *r)
{
  char *path;

  if (r->tr.cancelled) {
    caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-calendar-object-resource",
                 "a new calendar object cannot be cancelled already "
                 "(STATUS:CANCELLED); there is no meeting to cancel");
    return;
  }
  json_object_set_new(r->tr.event, "transactionId",
                      json_string(r->tr.transaction_id));
  path = xasprintf("/v1.0/users/%s/events", r->address);
  caldav_graph(r, "POST", path, r->tr.event, NULL, caldav_put_on_created);
  free(path);
}

static void caldav_put_on_patched(void *arg, const struct graph_response *resp)
{
  struct caldav_req *r = arg;
  json_t *event;

  if (resp->status == 404 && http_exchange_header(r->ex, "If-Match") == NULL) {
    /* Deleted in Outlook meanwhile: without a precondition the PUT makes
     * the event again. */
    caldav_row_delete(r->deps->store, r->address, r->name);
    free(r->row.event_id);
    r->row.event_id = NULL;
    caldav_put_create(r);
    return;
  }
  if (resp->status == 404) {
    caldav_row_delete(r->deps->store, r->address, r->name);
    caldav_text(r, 412, "the event no longer exists in Outlook");
    return;
  }
  if (resp->status != 200 && resp->status != 204) {
    caldav_graph_failed(r, resp);
    return;
  }
  event = caldav_json(resp);
  r->put_status = r->completing ? 201 : 204;
  caldav_put_written(r, event);
  json_decref(event);
}

static void caldav_put_on_cancelled(void *arg,
                                    const struct graph_response *resp)
{
  struct caldav_req *r = arg;

  if (resp->status != 202 && resp->status != 204 && resp->status != 404) {
    caldav_graph_failed(r, resp);
    return;
  }
  /* Graph removes a cancelled meeting from the organizer's calendar, so
   * the object is gone too. */
  caldav_row_delete(r->deps->store, r->address, r->name);
  log_info("%s caldav cancelled address=%s event=%s",
           http_exchange_request(r->ex)->conn_id, r->address, r->row.event_id);
  caldav_finish(r, 204, NULL, NULL, 0);
}

/* Updates the mapped event with body (r->tr.event or the part of it that
 * differs from Graph's); graph_etag (Graph's @odata.etag) guards the PATCH
 * when the client sent If-Match. */
static void caldav_put_update(struct caldav_req *r, const json_t *body,
                              const char *graph_etag)
{
  char *path;

  if (r->tr.cancelled) {
    json_t *cancel = json_pack("{s:s}", "comment", "");

    path = caldav_event_path(r->address, r->row.event_id, "/cancel");
    caldav_graph(r, "POST", path, cancel, NULL, caldav_put_on_cancelled);
    json_decref(cancel);
  } else {
    path = caldav_event_path(r->address, r->row.event_id, "");
    caldav_graph(r, "PATCH", path, body, graph_etag, caldav_put_on_patched);
  }
  free(path);
}

/* The master holds what the PUT says already: nothing is sent for it.
 * Only occurrences still to delete or to change are written, and with
 * none, the answer is 204 with the ETag just read. */
static void caldav_put_unchanged(struct caldav_req *r)
{
  log_debug("%s caldav unchanged address=%s event=%s",
            http_exchange_request(r->ex)->conn_id, r->address, r->row.event_id);
  r->put_status = 204;
  r->unchanged = true;
  caldav_put_remember(r);
  /* A reload for the ETag reads the client-scheduled attendees from here. */
  caldav_row_put(r->deps->store, r->address, &r->row);
  if (json_is_object(json_object_get(r->ld.event, "recurrence"))
      && r->ld.instances != NULL) {
    caldav_put_on_series(r, true);
    return;
  }
  if (json_array_size(r->tr.exdates) > 0
      || json_array_size(r->tr.overrides) > 0) {
    /* The series was not read whole (or is none): load it again. */
    caldav_load(r, r->row.event_id, caldav_put_on_series);
    return;
  }
  r->next_op = 0;
  json_decref(r->ops);
  r->ops = json_array();
  caldav_put_next_op(r);
}

/* The event as Graph holds it now is in r->ld: the client's If-Match is
 * checked against it, and only what the PUT changes is sent, since
 * Exchange mails every attendee on each update of the organizer's. */
static void caldav_put_on_current(struct caldav_req *r, bool found)
{
  const char *if_match = http_exchange_header(r->ex, "If-Match");
  const char *graph_etag = NULL;
  json_t *changes;

  if (!found && if_match == NULL) {
    /* Deleted in Outlook meanwhile: without a precondition the PUT makes
     * the event again. */
    caldav_row_delete(r->deps->store, r->address, r->name);
    free(r->row.event_id);
    r->row.event_id = NULL;
    caldav_put_create(r);
    return;
  }
  if (!found) {
    caldav_row_delete(r->deps->store, r->address, r->name);
    caldav_text(r, 412, "the event no longer exists in Outlook");
    return;
  }
  if (if_match != NULL && !caldav_etag_listed(if_match, r->ld.etag)) {
    caldav_text(r, 412,
                "If-Match does not name the current ETag; the "
                "event changed (perhaps in Outlook)");
    return;
  }
  if (if_match != NULL)
    graph_etag = json_string_value(json_object_get(r->ld.event, "@odata.etag"));
  if (r->tr.cancelled) {
    caldav_put_update(r, r->tr.event, graph_etag);
    return;
  }

  changes = caldav_put_changes(r, r->ld.event, r->tr.event);
  if (json_object_size(changes) == 0) {
    json_decref(changes);
    caldav_put_unchanged(r);
    return;
  }
  caldav_put_update(r, changes, graph_etag);
  json_decref(changes);
}

/* Claims the object's name and UID for this PUT while it talks to Graph.
 * A PUT that meets another in progress is answered as if that one had
 * finished: a second create of a name fails its If-None-Match, a second
 * object for a UID is a UID conflict, and an update waits for nobody but
 * asks the client to retry. Returns 0, or -EBUSY after answering. */
static int caldav_write_begin(struct caldav_req *r, const char *if_none)
{
  for (struct caldav_req *w = *r->writes; w != NULL; w = w->write_next) {
    if (strcmp(w->address, r->address) != 0)
      continue;
    if (strcmp(w->name, r->name) == 0) {
      if (if_none != NULL)
        caldav_text(r, 412, "the calendar object is being created already");
      else
        caldav_text(r, 409,
                    "another write to this calendar object is in "
                    "progress; retry");
      return -EBUSY;
    }
    if (strcmp(w->tr.uid, r->tr.uid) == 0) {
      caldav_error(r, 403, WEBDAV_NS_CALDAV, "no-uid-conflict",
                   "the UID is being written to another calendar object");
      return -EBUSY;
    }
  }
  r->write_next = *r->writes;
  *r->writes = r;
  r->writing = true;
  return 0;
}

/* Translates the PUT body into r->tr, floating times and dates placed in
 * default_zone (NULL: they fail with ICAL_GRAPH_ENOZONE). */
static int caldav_put_translate(struct caldav_req *r, const char *default_zone)
{
  const struct http_server_request *hreq = http_exchange_request(r->ex);
  struct ical_graph_options opt = {
    .user = r->address,
    .default_zone = default_zone,
  };

  if (r->have_tr)
    ical_graph_result_free(&r->tr);
  r->have_tr = true;
  return ical_graph_from_ical(hreq->body, hreq->body_len, &opt, &r->tr);
}

static void caldav_put_translated(struct caldav_req *r);

/* The mailbox's zone could not be read: a floating time or a date is
 * refused rather than placed in UTC, which would move it. */
static void caldav_put_zone_unknown(struct caldav_req *r, const char *why)
{
  char *text = xasprintf("%s, the mailbox's own, which %s; nothing was "
                         "written (times with a TZID or in UTC do not need "
                         "it)",
                         r->tr.error, why);

  log_warn("%s caldav mailbox_zone_unknown address=%s",
           http_exchange_request(r->ex)->conn_id, r->address);
  caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-calendar-data", text);
  free(text);
}

/* Graph answers GET .../mailboxSettings/timeZone with the bare property,
 * {"@odata.context": "...", "value": "Pacific Standard Time"}, a Windows
 * name by default or an IANA one when the tenant set that format up
 * (learn.microsoft.com/graph/api/user-get-mailboxsettings, "Get user
 * mailbox settings": a string for timeZone, and its example of a single
 * setting, userPurpose, answered as "value"). */
static void caldav_put_on_zone(void *arg, const struct graph_response *resp)
{
  struct caldav_req *r = arg;
  char win[TZ_MAP_NAME_MAX];
  char *why = NULL;
  json_t *body;
  const char *zone;
  int rc;

  /* Busy, unreachable or no longer linked: answered as for any Graph call,
   * so that a client retries what can succeed later. */
  if (resp->status == 429 || resp->status == 503 || resp->status == 0) {
    caldav_graph_failed(r, resp);
    return;
  }
  if (resp->status != 200) {
    why = xasprintf("could not be read from Microsoft Graph (%ld %s)",
                    resp->status, resp->error_code);
    caldav_put_zone_unknown(r, why);
    free(why);
    return;
  }
  body = caldav_json(resp);
  zone = json_string_value(json_object_get(body, "value"));
  if (zone == NULL || tz_map_to_windows(zone, win, sizeof(win)) != TZ_MAP_OK) {
    why = xasprintf("Microsoft Graph gave as \"%s\", not a zone Graph "
                    "events accept",
                    zone != NULL ? zone : "(nothing)");
    caldav_put_zone_unknown(r, why);
    free(why);
    json_decref(body);
    return;
  }
  caldav_zones_put(r->deps->zones, r->address, zone, caldav_monotonic_ms());
  log_debug("%s caldav mailbox_zone address=%s zone=\"%s\"",
            http_exchange_request(r->ex)->conn_id, r->address, win);
  rc = caldav_put_translate(r, zone);
  json_decref(body);
  if (rc != ICAL_GRAPH_OK) {
    caldav_put_refused(r, rc);
    return;
  }
  caldav_put_translated(r);
}

void caldav_put(struct caldav_req *r)
{
  const char *ctype = http_exchange_header(r->ex, "Content-Type");
  const char *zone;
  char *path;
  int rc;

  if (r->kind != CALDAV_KIND_OBJECT) {
    caldav_not_allowed(r);
    return;
  }
  if (ctype != NULL && strncasecmp(ctype, "text/calendar", 13) != 0) {
    caldav_error(r, 415, WEBDAV_NS_CALDAV, "supported-calendar-data",
                 "calendar objects are sent as text/calendar");
    return;
  }

  /* Floating times and dates take the mailbox's own zone, read from Graph
   * only when the object has some and it is not cached. */
  zone = caldav_zones_get(r->deps->zones, r->address, caldav_monotonic_ms());
  rc = caldav_put_translate(r, zone);
  if (rc == ICAL_GRAPH_ENOZONE && zone == NULL) {
    path = xasprintf("/v1.0/users/%s/mailboxSettings/timeZone", r->address);
    caldav_graph(r, "GET", path, NULL, NULL, caldav_put_on_zone);
    free(path);
    return;
  }
  if (rc != ICAL_GRAPH_OK) {
    caldav_put_refused(r, rc);
    return;
  }
  caldav_put_translated(r);
}

/* A create whose series was written but whose EXDATEs or overrides were
 * not (CALDAV_ETAG_INCOMPLETE) is finished by the client's natural retry,
 * the same name and UID with If-None-Match: *: the master is written again
 * and every occurrence applied, answered 201 as the first PUT would have
 * been. Returns true when r went that way. */
static bool caldav_put_completes(struct caldav_req *r, const char *if_none)
{
  if (if_none == NULL || strcmp(if_none, "*") != 0 || r->row.etag == NULL
      || strcmp(r->row.etag, CALDAV_ETAG_INCOMPLETE) != 0
      || strcmp(r->row.uid, r->tr.uid) != 0)
    return false;
  log_info("%s caldav complete address=%s event=%s",
           http_exchange_request(r->ex)->conn_id, r->address, r->row.event_id);
  r->completing = true;
  caldav_put_update(r, r->tr.event, NULL);
  return true;
}

/* The PUT once its body is translated: create, update or refuse. */
static void caldav_put_translated(struct caldav_req *r)
{
  const char *if_none = http_exchange_header(r->ex, "If-None-Match");
  const char *if_match = http_exchange_header(r->ex, "If-Match");
  struct caldav_row other = { 0 };
  int rc;

  if (caldav_write_begin(r, if_none) < 0)
    return;
  rc = caldav_row_find(r->deps->store, r->address, "name", r->name, &r->row);
  if (rc == -EIO) {
    caldav_store_failed(r, "the agent's database failed; retry the request");
    return;
  }
  if (rc == 0) {
    if (caldav_put_completes(r, if_none))
      return;
    if (if_none != NULL && caldav_etag_listed(if_none, r->row.etag)) {
      caldav_text(r, 412, "the calendar object already exists");
      return;
    }
    if (strcmp(r->row.uid, r->tr.uid) != 0) {
      caldav_error(r, 403, WEBDAV_NS_CALDAV, "no-uid-conflict",
                   "a calendar object's UID cannot change");
      return;
    }
    if (if_match == NULL && r->tr.cancelled)
      caldav_put_update(r, r->tr.event, NULL);
    else
      caldav_load(r, r->row.event_id, caldav_put_on_current);
    return;
  }
  if (if_match != NULL) {
    caldav_text(r, 412,
                "If-Match names a calendar object that does not "
                "exist");
    return;
  }
  rc = caldav_row_find(r->deps->store, r->address, "uid", r->tr.uid, &other);
  if (rc == 0) {
    char *href = caldav_href_object(r->address, other.name);
    char *text = xasprintf("the UID is already used by %s", href);

    caldav_error(r, 403, WEBDAV_NS_CALDAV, "no-uid-conflict", text);
    free(text);
    free(href);
    caldav_row_clear(&other);
    return;
  }
  r->row.name = xstrdup(r->name);
  r->row.uid = xstrdup(r->tr.uid);
  caldav_put_create(r);
}

static void caldav_get_on_loaded(struct caldav_req *r, bool found)
{
  char *text;
  char *etag_header;
  char err[256];

  if (!found) {
    /* Deleted in Outlook: the object is gone for Nextal too. */
    caldav_row_delete(r->deps->store, r->address, r->name);
    caldav_text(r, 404, "the event was deleted in Outlook");
    return;
  }
  text = caldav_load_ical(r, r->row.uid, err, sizeof(err));
  if (text == NULL || r->ld.etag == NULL) {
    caldav_text(r, 502, text == NULL ? err : "Graph sent no changeKey");
    free(text);
    return;
  }
  if (r->row.etag == NULL || strcmp(r->row.etag, r->ld.etag) != 0)
    caldav_row_set_etag(r->deps->store, r->address, r->name, r->ld.etag);
  etag_header = xasprintf("ETag: %s", r->ld.etag);
  {
    const char *headers[]
        = { "Content-Type: " CALDAV_CONTENT_TYPE_ICAL, etag_header, NULL };

    caldav_finish(r, 200, headers, text, strlen(text));
  }
  free(etag_header);
  free(text);
}

static void caldav_delete_on_done(void *arg, const struct graph_response *resp)
{
  struct caldav_req *r = arg;

  if (resp->status != 204 && resp->status != 200 && resp->status != 404) {
    caldav_graph_failed(r, resp);
    return;
  }
  caldav_row_delete(r->deps->store, r->address, r->name);
  log_info("%s caldav deleted address=%s event=%s",
           http_exchange_request(r->ex)->conn_id, r->address, r->row.event_id);
  caldav_finish(r, 204, NULL, NULL, 0);
}

static void caldav_delete_now(struct caldav_req *r)
{
  char *path = caldav_event_path(r->address, r->row.event_id, "");

  caldav_graph(r, "DELETE", path, NULL, NULL, caldav_delete_on_done);
  free(path);
}

static void caldav_delete_on_current(struct caldav_req *r, bool found)
{
  if (!found) {
    caldav_row_delete(r->deps->store, r->address, r->name);
    caldav_text(r, 412, "the event no longer exists in Outlook");
    return;
  }
  if (!caldav_etag_listed(http_exchange_header(r->ex, "If-Match"),
                          r->ld.etag)) {
    caldav_text(r, 412,
                "If-Match does not name the current ETag; the "
                "event changed (perhaps in Outlook)");
    return;
  }
  caldav_delete_now(r);
}

void caldav_object_method(struct caldav_req *r)
{
  bool is_delete = strcmp(r->method, "DELETE") == 0;
  int rc;

  if (r->kind != CALDAV_KIND_OBJECT) {
    caldav_not_allowed(r);
    return;
  }
  rc = caldav_row_find(r->deps->store, r->address, "name", r->name, &r->row);
  if (rc == -ENOENT) {
    caldav_text(r, 404, "no such calendar object");
    return;
  }
  if (rc < 0) {
    caldav_store_failed(r, "the agent's database failed; retry the request");
    return;
  }
  if (!is_delete)
    caldav_load(r, r->row.event_id, caldav_get_on_loaded);
  else if (http_exchange_header(r->ex, "If-Match") != NULL)
    caldav_load(r, r->row.event_id, caldav_delete_on_current);
  else
    caldav_delete_now(r);
}
