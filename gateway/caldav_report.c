/* SPDX-License-Identifier: MIT */
/* REPORTs on the calendar (see include/caldav_request.h):
 * calendar-multiget, calendar-query over Graph's calendarView, and
 * free-busy-query over getSchedule. */
#include <errno.h>
#include <jansson.h>
#include <libical/ical.h>
#include <libxml/tree.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caldav_expand.h"
#include "caldav_request.h"
#include "http_server.h"
#include "log.h"
#include "xalloc.h"

static void caldav_report_next(struct caldav_req *r);

/* Adds the item loaded into r->ld (or gone from Graph) to the answer. */
static void caldav_report_add_loaded(struct caldav_req *r, bool found)
{
  struct caldav_item *item = &r->items[r->next];
  struct webdav_response *wr;
  const char *etag = r->ld.etag;
  char *text = NULL;
  char err[256];

  if (!found) {
    caldav_row_delete(r->deps->store, r->address, item->row.name);
    webdav_response_set_status(webdav_multistatus_add(r->ms, item->href), 404);
    return;
  }
  if (r->want_data)
    text = caldav_load_ical(r, item->row.uid, err, sizeof(err));
  if (text != NULL && r->expand) {
    char *instances = caldav_expand(text, r->expand_start, r->expand_end);

    if (instances != NULL) {
      free(text);
      text = instances;
    }
  }
  wr = webdav_multistatus_add(r->ms, item->href);
  if (etag != NULL
      && (item->row.etag == NULL || strcmp(etag, item->row.etag) != 0))
    caldav_row_set_etag(r->deps->store, r->address, item->row.name, etag);
  if (r->want_etag)
    webdav_response_prop(wr, WEBDAV_NS_DAV, "getetag", etag ? 200 : 404, etag);
  if (r->want_data)
    webdav_response_prop(wr, WEBDAV_NS_CALDAV, "calendar-data",
                         text != NULL ? 200 : 500, text);
  for (size_t i = 0;
       r->wreq->kind == WEBDAV_PROPFIND_PROP && i < r->wreq->nprops; i++) {
    const struct webdav_prop *p = &r->wreq->props[i];

    if (!(strcmp(p->ns, WEBDAV_NS_DAV) == 0 && strcmp(p->name, "getetag") == 0)
        && !(strcmp(p->ns, WEBDAV_NS_CALDAV) == 0
             && strcmp(p->name, "calendar-data") == 0))
      webdav_response_prop(wr, p->ns, p->name, 404, NULL);
  }
  free(text);
}

static void caldav_report_on_loaded(struct caldav_req *r, bool found)
{
  caldav_report_add_loaded(r, found);
  r->next++;
  caldav_report_next(r);
}

/* Adds the items of the work list that need no Graph call, fetches the
 * next one that does, or sends the answer. */
static void caldav_report_next(struct caldav_req *r)
{
  for (; r->next < r->nitems; r->next++) {
    struct caldav_item *item = &r->items[r->next];

    if (!item->found) {
      webdav_response_set_status(webdav_multistatus_add(r->ms, item->href),
                                 404);
      continue;
    }
    if (item->view == NULL
        || !caldav_load_given(r, item->row.event_id, item->view))
      break;
    caldav_report_add_loaded(r, true);
  }
  if (r->next == r->nitems) {
    caldav_multistatus_send(r);
    return;
  }
  caldav_load(r, r->items[r->next].row.event_id, caldav_report_on_loaded);
}

/* The object name an href names in this calendar, or NULL. */
static char *caldav_href_name(const struct caldav_req *r, const char *href)
{
  char *base = caldav_href_calendar(r->address);
  const char *path = href;
  const char *p;
  char *name = NULL;

  /* An absolute URL is reduced to its path. */
  p = strstr(href, "://");
  if (p != NULL) {
    path = strchr(p + 3, '/');
    if (path == NULL)
      path = "";
  }
  /* The address may arrive percent-encoded: compare the decoded path. */
  if (http_percent_decode(path, strlen(path), 0, &name) < 0) {
    free(base);
    return NULL;
  }
  p = strncmp(name, base, strlen(base)) == 0 ? name + strlen(base) : NULL;
  if (p == NULL || *p == '\0' || strchr(p, '/') != NULL) {
    free(name);
    free(base);
    return NULL;
  }
  memmove(name, p, strlen(p) + 1);
  free(base);
  return name;
}

static void caldav_report_multiget(struct caldav_req *r)
{
  for (xmlNodePtr c = r->wreq->root->children; c != NULL; c = c->next) {
    struct caldav_row row = { 0 };
    xmlChar *href;
    char *name;
    bool found = false;

    if (!webdav_node_is(c, WEBDAV_NS_DAV, "href"))
      continue;
    if (r->nitems == CALDAV_OBJECTS_MAX) {
      caldav_error(r, 403, WEBDAV_NS_DAV, "number-of-matches-within-limits",
                   "too many hrefs in one calendar-multiget");
      return;
    }
    href = xmlNodeGetContent(c);
    name = caldav_href_name(r, (const char *) href);
    if (name != NULL)
      found = caldav_row_find(r->deps->store, r->address, "name", name, &row)
              == 0;
    caldav_item_add(r, xstrdup((const char *) href), &row, found);
    free(name);
    xmlFree(href);
  }
  caldav_report_next(r);
}

/* Reads a CALDAV:time-range attribute (UTC date-time) into Graph's form
 * and a time_t. Returns false when it is absent or not a UTC time. */
static bool caldav_range_time(xmlNodePtr range, const char *attr, char *out,
                              size_t size, time_t *when)
{
  xmlChar *value = range != NULL ? xmlGetProp(range, BAD_CAST attr) : NULL;
  struct icaltimetype t;
  bool ok = false;

  if (value == NULL)
    return false;
  t = icaltime_from_string((const char *) value);
  if (!icaltime_is_null_time(t) && !icaltime_is_date(t) && icaltime_is_utc(t)) {
    snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02dZ", t.year, t.month,
             t.day, t.hour, t.minute, t.second);
    *when = icaltime_as_timet(t);
    ok = true;
  }
  xmlFree(value);
  return ok;
}

static bool caldav_range_has(xmlNodePtr range, const char *attr)
{
  xmlChar *value = xmlGetProp(range, BAD_CAST attr);
  bool has = value != NULL;

  xmlFree(value);
  return has;
}

/* Remembers the master of an Outlook series met in calendarView. */
static void caldav_pending_add(struct caldav_req *r, const char *master)
{
  const json_t *x;
  size_t i;

  if (r->pending == NULL)
    r->pending = json_array();
  json_array_foreach(r->pending, i, x)
  {
    if (strcmp(json_string_value(x), master) == 0)
      return;
  }
  if (json_array_size(r->pending) < CALDAV_OBJECTS_MAX)
    json_array_append_new(r->pending, json_string(master));
}

static void caldav_adopt_next(struct caldav_req *r);

static void caldav_adopt_on_master(struct caldav_req *r, bool found)
{
  const char *id
      = json_string_value(json_array_get(r->pending, r->next_pending));
  const char *uid = json_string_value(json_object_get(r->ld.event, "iCalUId"));
  struct caldav_row row = { 0 };

  if (found && uid != NULL && r->nitems < CALDAV_OBJECTS_MAX
      && caldav_row_adopt(r->deps->store, r->address, id, uid) == 0
      && caldav_row_find(r->deps->store, r->address, "event_id", id, &row) == 0)
    caldav_item_add(r, caldav_href_object(r->address, row.name), &row, true);
  caldav_row_clear(&row);
  r->next_pending++;
  caldav_adopt_next(r);
}

/* Reads the masters of Outlook series met in calendarView, one at a time,
 * then fetches every object of the answer. */
static void caldav_adopt_next(struct caldav_req *r)
{
  const char *id
      = json_string_value(json_array_get(r->pending, r->next_pending));

  if (id == NULL) {
    caldav_report_next(r);
    return;
  }
  caldav_load(r, id, caldav_adopt_on_master);
}

static void caldav_query_on_view(void *arg, const struct graph_response *resp)
{
  struct caldav_req *r = arg;
  json_t *page;
  json_t *items;
  json_t *item;
  size_t i;

  if (resp->status != 200) {
    caldav_graph_failed(r, resp);
    return;
  }
  page = caldav_json(resp);
  items = json_object_get(page, "value");
  json_array_foreach(items, i, item)
  {
    const char *id = json_string_value(json_object_get(item, "seriesMasterId"));
    struct caldav_row row = { 0 };
    bool seen = false;

    bool occurrence = id != NULL;

    if (id == NULL)
      id = json_string_value(json_object_get(item, "id"));
    if (id == NULL)
      continue;
    for (size_t k = 0; k < r->nitems && !seen; k++)
      seen = strcmp(r->items[k].row.event_id, id) == 0;
    if (seen || r->nitems == CALDAV_OBJECTS_MAX)
      continue;
    if (caldav_row_find(r->deps->store, r->address, "event_id", id, &row)
        == -ENOENT) {
      /* Made in Outlook: a single event is adopted now, a series once its
       * master (and the master's iCalUId) has been read. */
      const char *uid = json_string_value(json_object_get(item, "iCalUId"));

      if (occurrence) {
        caldav_pending_add(r, id);
        continue;
      }
      if (uid == NULL
          || caldav_row_adopt(r->deps->store, r->address, id, uid) < 0
          || caldav_row_find(r->deps->store, r->address, "event_id", id, &row)
                 < 0)
        continue;
    } else if (row.name == NULL) {
      continue;
    }
    caldav_item_add(r, caldav_href_object(r->address, row.name), &row, true);
    /* calendarView lists events with the properties a GET of each gives
     * (learn.microsoft.com/graph/api/user-list-calendarview, its example
     * response): a single event needs no second request. */
    if (!occurrence)
      r->items[r->nitems - 1].view = json_incref(item);
  }
  if (caldav_graph_next_page(r, page, &r->pages, CALDAV_VIEW_PAGES_MAX,
                             caldav_query_on_view)) {
    json_decref(page);
    return;
  }
  json_decref(page);
  r->next_pending = 0;
  caldav_adopt_next(r);
}

static void caldav_report_query(struct caldav_req *r)
{
  xmlNodePtr filter
      = webdav_node_child(r->wreq->root, WEBDAV_NS_CALDAV, "filter");
  xmlNodePtr cal
      = filter ? webdav_node_child(filter, WEBDAV_NS_CALDAV, "comp-filter")
               : NULL;
  xmlNodePtr comp = NULL;
  xmlNodePtr range = NULL;
  xmlChar *comp_name = NULL;
  const char *uid_match = NULL;
  xmlChar *uid_text = NULL;
  char start[32], end[32];
  time_t ts = 0, te = 0;
  struct caldav_row *rows;
  int n;

  if (cal == NULL) {
    caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-filter",
                 "calendar-query needs a VCALENDAR comp-filter");
    return;
  }
  for (xmlNodePtr c = cal->children; c != NULL; c = c->next) {
    if (webdav_node_is(c, WEBDAV_NS_CALDAV, "comp-filter"))
      comp = c;
  }
  if (comp != NULL) {
    comp_name = xmlGetProp(comp, BAD_CAST "name");
    if (comp_name == NULL || strcmp((const char *) comp_name, "VEVENT") != 0) {
      /* Only VEVENTs live here: any other component matches nothing. */
      xmlFree(comp_name);
      r->ms = webdav_multistatus_new();
      caldav_multistatus_send(r);
      return;
    }
    xmlFree(comp_name);
    for (xmlNodePtr c = comp->children; c != NULL; c = c->next) {
      xmlChar *pname;

      if (webdav_node_is(c, WEBDAV_NS_CALDAV, "time-range")) {
        range = c;
        continue;
      }
      if (c->type != XML_ELEMENT_NODE)
        continue;
      pname = webdav_node_is(c, WEBDAV_NS_CALDAV, "prop-filter")
                  ? xmlGetProp(c, BAD_CAST "name")
                  : NULL;
      if (pname != NULL && strcmp((const char *) pname, "UID") == 0
          && webdav_node_child(c, WEBDAV_NS_CALDAV, "text-match") != NULL
          && uid_text == NULL) {
        uid_text = xmlNodeGetContent(
            webdav_node_child(c, WEBDAV_NS_CALDAV, "text-match"));
        uid_match = (const char *) uid_text;
        xmlFree(pname);
        continue;
      }
      xmlFree(pname);
      xmlFree(uid_text);
      caldav_error(r, 403, WEBDAV_NS_CALDAV, "supported-filter",
                   "only time-range and a UID text-match are supported in "
                   "calendar-query");
      return;
    }
  }
  r->ms = webdav_multistatus_new();
  if (range != NULL) {
    bool has_start
        = caldav_range_time(range, "start", start, sizeof(start), &ts);
    bool has_end = caldav_range_time(range, "end", end, sizeof(end), &te);
    char *path;

    xmlFree(uid_text);
    if (!has_start && !has_end) {
      caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-filter",
                   "time-range needs a start or an end in UTC");
      return;
    }
    /* A bound that is there but unreadable is an error, not "no bound";
     * and the end must come after the start (RFC 4791 9.9). */
    if ((!has_start && caldav_range_has(range, "start"))
        || (!has_end && caldav_range_has(range, "end"))
        || (has_start && has_end && te <= ts)) {
      caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-filter",
                   "time-range start and end must be UTC date-times "
                   "(YYYYMMDDTHHMMSSZ), the end after the start");
      return;
    }
    /* Graph's calendarView needs both ends of the window. */
    if (!has_start)
      snprintf(start, sizeof(start), "1970-01-01T00:00:00Z");
    if (!has_end)
      snprintf(end, sizeof(end), "2200-01-01T00:00:00Z");
    path = xasprintf("/v1.0/users/%s/calendarView?startDateTime=%s"
                     "&endDateTime=%s&$top=100",
                     r->address, start, end);
    caldav_graph(r, "GET", path, NULL, NULL, caldav_query_on_view);
    free(path);
    return;
  }
  n = caldav_rows_list(r->deps->store, r->address, &rows);
  for (int i = 0; i < n; i++) {
    if (uid_match != NULL && strcasestr(rows[i].uid, uid_match) == NULL)
      continue;
    caldav_item_add(r, caldav_href_object(r->address, rows[i].name), &rows[i],
                    true);
  }
  caldav_rows_free(rows, n > 0 ? n : 0);
  xmlFree(uid_text);
  caldav_report_next(r);
}

static void caldav_freebusy_on_schedule(void *arg,
                                        const struct graph_response *resp)
{
  struct caldav_req *r = arg;
  struct ical_graph_freebusy_request fb = { 0 };
  json_t *body;
  char *text = NULL;
  char err[256];
  int rc;

  if (resp->status != 200) {
    caldav_graph_failed(r, resp);
    return;
  }
  body = caldav_json(resp);
  fb.start = r->fb_start;
  fb.end = r->fb_end;
  rc = ical_graph_freebusy_to_ical(
      json_array_get(json_object_get(body, "value"), 0), &fb, &text, err,
      sizeof(err));
  json_decref(body);
  if (rc != ICAL_GRAPH_OK) {
    caldav_text(r, 502, err);
    return;
  }
  {
    static const char *const headers[]
        = { "Content-Type: " CALDAV_CONTENT_TYPE_ICAL, NULL };

    caldav_finish(r, 200, headers, text, strlen(text));
  }
  free(text);
}

static void caldav_report_freebusy(struct caldav_req *r)
{
  xmlNodePtr range
      = webdav_node_child(r->wreq->root, WEBDAV_NS_CALDAV, "time-range");
  char start[32], end[32];
  json_t *who;

  if (!caldav_range_time(range, "start", start, sizeof(start), &r->fb_start)
      || !caldav_range_time(range, "end", end, sizeof(end), &r->fb_end)
      || r->fb_end <= r->fb_start) {
    caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-filter",
                 "free-busy-query needs a time-range with start and end in "
                 "UTC");
    return;
  }
  if (r->fb_end - r->fb_start > CALDAV_FREEBUSY_SPAN_MAX_S) {
    caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-filter",
                 CALDAV_FREEBUSY_SPAN_TEXT);
    return;
  }
  who = json_pack("[s]", r->address);
  caldav_get_schedule(r, who, r->fb_start, r->fb_end,
                      caldav_freebusy_on_schedule);
  json_decref(who);
}

/* Reads <C:calendar-data><C:expand start end/></C:calendar-data> into r.
 * Returns 0, or -EINVAL after answering a malformed one. */
static int caldav_report_expand(struct caldav_req *r)
{
  xmlNodePtr prop = webdav_node_child(r->wreq->root, WEBDAV_NS_DAV, "prop");
  xmlNodePtr data = prop != NULL ? webdav_node_child(prop, WEBDAV_NS_CALDAV,
                                                     "calendar-data")
                                 : NULL;
  xmlNodePtr expand = data != NULL
                          ? webdav_node_child(data, WEBDAV_NS_CALDAV, "expand")
                          : NULL;
  char start[32], end[32];

  if (expand == NULL)
    return 0;
  if (!caldav_range_time(expand, "start", start, sizeof(start),
                         &r->expand_start)
      || !caldav_range_time(expand, "end", end, sizeof(end), &r->expand_end)
      || r->expand_end <= r->expand_start) {
    caldav_error(r, 403, WEBDAV_NS_CALDAV, "valid-filter",
                 "expand needs a start and a later end in UTC");
    return -EINVAL;
  }
  r->expand = true;
  return 0;
}

void caldav_report(struct caldav_req *r)
{
  const struct http_server_request *hreq = http_exchange_request(r->ex);
  int rc;

  if (r->kind != CALDAV_KIND_CALENDAR) {
    caldav_error(r, 403, WEBDAV_NS_DAV, "supported-report",
                 "REPORTs are answered on the calendar collection");
    return;
  }
  if (!caldav_body_fits(r, CALDAV_XML_BODY_MAX))
    return;
  rc = webdav_request_parse(hreq->body, hreq->body_len, &r->wreq);
  if (rc < 0 || r->wreq->doc == NULL) {
    caldav_text(r, 400, caldav_xml_error(rc, "REPORT"));
    return;
  }
  r->want_etag = r->wreq->kind != WEBDAV_PROPFIND_PROP;
  r->want_data = r->wreq->kind != WEBDAV_PROPFIND_PROP;
  for (size_t i = 0; i < r->wreq->nprops; i++) {
    const struct webdav_prop *p = &r->wreq->props[i];

    if (strcmp(p->ns, WEBDAV_NS_DAV) == 0 && strcmp(p->name, "getetag") == 0)
      r->want_etag = true;
    if (strcmp(p->ns, WEBDAV_NS_CALDAV) == 0
        && strcmp(p->name, "calendar-data") == 0)
      r->want_data = true;
  }
  rc = caldav_report_expand(r);
  if (rc < 0)
    return;
  if (strcmp(r->wreq->root_ns, WEBDAV_NS_CALDAV) == 0
      && strcmp(r->wreq->root_name, "calendar-multiget") == 0) {
    r->ms = webdav_multistatus_new();
    caldav_report_multiget(r);
  } else if (strcmp(r->wreq->root_ns, WEBDAV_NS_CALDAV) == 0
             && strcmp(r->wreq->root_name, "calendar-query") == 0) {
    caldav_report_query(r);
  } else if (strcmp(r->wreq->root_ns, WEBDAV_NS_CALDAV) == 0
             && strcmp(r->wreq->root_name, "free-busy-query") == 0) {
    caldav_report_freebusy(r);
  } else {
    caldav_error(r, 403, WEBDAV_NS_DAV, "supported-report",
                 "supported REPORTs: calendar-multiget, calendar-query, "
                 "free-busy-query");
  }
}
