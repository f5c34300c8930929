/* SPDX-License-Identifier: MIT */
/* PROPFIND (see include/caldav_request.h): answered from the mapping
 * table, whose ETags are first brought up to date with Graph when the
 * request asks for them. */
#include <errno.h>
#include <jansson.h>
#include <libxml/tree.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "caldav_request.h"
#include "log.h"
#include "xalloc.h"

#define CALDAV_LIST_PAGES_MAX 50 /* /events pages of 100 per PROPFIND */

static void caldav_add_href(struct webdav_response *resp, xmlNodePtr parent,
                            char *href)
{
  webdav_node_add(resp, parent, WEBDAV_NS_DAV, "href", href);
  free(href);
}

/* Adds property ns:name of a resource when it has it (value false: the
 * name only, for propname). Returns false when it does not. */
static bool caldav_prop(struct caldav_req *r, struct webdav_response *resp,
                        enum caldav_kind kind, const struct caldav_row *row,
                        const char *ctag, const struct webdav_prop *p,
                        bool value)
{
  bool dav = strcmp(p->ns, WEBDAV_NS_DAV) == 0;
  bool cal = strcmp(p->ns, WEBDAV_NS_CALDAV) == 0;
  bool user = kind != CALDAV_KIND_ROOT;
  xmlNodePtr node;

  if (dav && strcmp(p->name, "resourcetype") == 0) {
    node = webdav_response_prop(resp, p->ns, p->name, 200, NULL);
    if (!value || kind == CALDAV_KIND_OBJECT)
      return true;
    webdav_node_add(resp, node, WEBDAV_NS_DAV, "collection", NULL);
    if (kind == CALDAV_KIND_PRINCIPAL)
      webdav_node_add(resp, node, WEBDAV_NS_DAV, "principal", NULL);
    if (kind == CALDAV_KIND_CALENDAR)
      webdav_node_add(resp, node, WEBDAV_NS_CALDAV, "calendar", NULL);
    if (kind == CALDAV_KIND_OUTBOX)
      webdav_node_add(resp, node, WEBDAV_NS_CALDAV, "schedule-outbox", NULL);
    return true;
  }
  if (dav && strcmp(p->name, "displayname") == 0) {
    const char *names[] = { "CalDAV",
                            r->address,
                            "Calendars",
                            "Calendar",
                            row != NULL ? row->name : "",
                            "Outbox" };

    webdav_response_prop(resp, p->ns, p->name, 200, value ? names[kind] : NULL);
    return true;
  }
  if (dav && user
      && (strcmp(p->name, "current-user-principal") == 0
          || strcmp(p->name, "principal-URL") == 0
          || strcmp(p->name, "owner") == 0)) {
    node = webdav_response_prop(resp, p->ns, p->name, 200, NULL);
    if (value)
      caldav_add_href(resp, node, caldav_href_principal(r->address));
    return true;
  }
  if (cal && user && strcmp(p->name, "calendar-home-set") == 0) {
    node = webdav_response_prop(resp, p->ns, p->name, 200, NULL);
    if (value)
      caldav_add_href(resp, node, caldav_href_home(r->address));
    return true;
  }
  if (cal && kind == CALDAV_KIND_PRINCIPAL
      && strcmp(p->name, "schedule-outbox-URL") == 0) {
    node = webdav_response_prop(resp, p->ns, p->name, 200, NULL);
    if (value)
      caldav_add_href(resp, node, caldav_href_outbox(r->address));
    return true;
  }
  if (cal && kind == CALDAV_KIND_PRINCIPAL
      && strcmp(p->name, "calendar-user-address-set") == 0) {
    node = webdav_response_prop(resp, p->ns, p->name, 200, NULL);
    if (value)
      caldav_add_href(resp, node, xasprintf("mailto:%s", r->address));
    return true;
  }
  if (cal && kind == CALDAV_KIND_CALENDAR
      && strcmp(p->name, "supported-calendar-component-set") == 0) {
    node = webdav_response_prop(resp, p->ns, p->name, 200, NULL);
    if (value)
      xmlNewProp(webdav_node_add(resp, node, WEBDAV_NS_CALDAV, "comp", NULL),
                 BAD_CAST "name", BAD_CAST "VEVENT");
    return true;
  }
  if (cal && kind == CALDAV_KIND_CALENDAR
      && strcmp(p->name, "supported-calendar-data") == 0) {
    node = webdav_response_prop(resp, p->ns, p->name, 200, NULL);
    if (value) {
      node = webdav_node_add(resp, node, WEBDAV_NS_CALDAV, "calendar-data",
                             NULL);
      xmlNewProp(node, BAD_CAST "content-type", BAD_CAST "text/calendar");
      xmlNewProp(node, BAD_CAST "version", BAD_CAST "2.0");
    }
    return true;
  }
  if (dav && kind == CALDAV_KIND_CALENDAR
      && strcmp(p->name, "supported-report-set") == 0) {
    static const char *const reports[]
        = { "calendar-multiget", "calendar-query", "free-busy-query" };

    node = webdav_response_prop(resp, p->ns, p->name, 200, NULL);
    for (size_t i = 0; value && i < 3; i++) {
      xmlNodePtr sr = webdav_node_add(resp, node, WEBDAV_NS_DAV,
                                      "supported-report", NULL);

      webdav_node_add(resp,
                      webdav_node_add(resp, sr, WEBDAV_NS_DAV, "report", NULL),
                      WEBDAV_NS_CALDAV, reports[i], NULL);
    }
    return true;
  }
  if (dav && (kind == CALDAV_KIND_CALENDAR || kind == CALDAV_KIND_OBJECT)
      && strcmp(p->name, "current-user-privilege-set") == 0) {
    static const char *const privileges[]
        = { "read", "write", "write-content", "bind", "unbind" };

    node = webdav_response_prop(resp, p->ns, p->name, 200, NULL);
    for (size_t i = 0; value && i < 5; i++)
      webdav_node_add(
          resp, webdav_node_add(resp, node, WEBDAV_NS_DAV, "privilege", NULL),
          WEBDAV_NS_DAV, privileges[i], NULL);
    return true;
  }
  if (strcmp(p->ns, WEBDAV_NS_CALSERVER) == 0 && kind == CALDAV_KIND_CALENDAR
      && strcmp(p->name, "getctag") == 0) {
    webdav_response_prop(resp, p->ns, p->name, 200, value ? ctag : NULL);
    return true;
  }
  if (dav && kind == CALDAV_KIND_OBJECT && strcmp(p->name, "getetag") == 0
      && row->etag != NULL) {
    webdav_response_prop(resp, p->ns, p->name, 200, value ? row->etag : NULL);
    return true;
  }
  if (dav && strcmp(p->name, "getcontenttype") == 0
      && kind == CALDAV_KIND_OBJECT) {
    webdav_response_prop(resp, p->ns, p->name, 200,
                         value ? CALDAV_CONTENT_TYPE_ICAL "; component=VEVENT"
                               : NULL);
    return true;
  }
  return false;
}

/* Every property caldav_prop() knows, for allprop and propname. */
static const struct webdav_prop caldav_all_props[] = {
  { WEBDAV_NS_DAV, "resourcetype" },
  { WEBDAV_NS_DAV, "displayname" },
  { WEBDAV_NS_DAV, "current-user-principal" },
  { WEBDAV_NS_DAV, "principal-URL" },
  { WEBDAV_NS_DAV, "owner" },
  { WEBDAV_NS_CALDAV, "calendar-home-set" },
  { WEBDAV_NS_CALDAV, "calendar-user-address-set" },
  { WEBDAV_NS_CALDAV, "schedule-outbox-URL" },
  { WEBDAV_NS_CALDAV, "supported-calendar-component-set" },
  { WEBDAV_NS_CALDAV, "supported-calendar-data" },
  { WEBDAV_NS_DAV, "supported-report-set" },
  { WEBDAV_NS_DAV, "current-user-privilege-set" },
  { WEBDAV_NS_CALSERVER, "getctag" },
  { WEBDAV_NS_DAV, "getetag" },
  { WEBDAV_NS_DAV, "getcontenttype" },
};

#define CALDAV_NALL_PROPS (sizeof(caldav_all_props) / sizeof(*caldav_all_props))

static void caldav_propfind_one(struct caldav_req *r, char *href,
                                enum caldav_kind kind,
                                const struct caldav_row *row, const char *ctag)
{
  struct webdav_response *resp = webdav_multistatus_add(r->ms, href);
  const struct webdav_request *w = r->wreq;

  free(href);
  if (w->kind != WEBDAV_PROPFIND_PROP) {
    for (size_t i = 0; i < CALDAV_NALL_PROPS; i++)
      caldav_prop(r, resp, kind, row, ctag, &caldav_all_props[i],
                  w->kind == WEBDAV_PROPFIND_ALLPROP);
    return;
  }
  for (size_t i = 0; i < w->nprops; i++) {
    if (!caldav_prop(r, resp, kind, row, ctag, &w->props[i], true))
      webdav_response_prop(resp, w->props[i].ns, w->props[i].name, 404, NULL);
  }
}

/* Depth 1, or none, lists the members of a collection. A missing Depth
 * header is served as depth 1 rather than refused as the infinity RFC 4918
 * 9.1 says it SHOULD mean: clients that leave it out want an answer, and
 * depth 1 on the calendar already lists every object. */
static bool caldav_deep(const struct caldav_req *r)
{
  const char *depth = http_exchange_header(r->ex, "Depth");

  return depth == NULL || strcmp(depth, "0") != 0;
}

/* An explicit Depth: infinity, which RFC 4918 9.1 lets a server refuse
 * with 403 and DAV:propfind-finite-depth; a client told so asks again
 * with depth 1 instead of taking a depth-1 answer for the whole tree.
 * caldav.c has already checked that the value is 0, 1 or infinity. */
static bool caldav_depth_infinite(const struct caldav_req *r)
{
  const char *depth = http_exchange_header(r->ex, "Depth");

  return depth != NULL && strcasecmp(depth, "infinity") == 0;
}

/* Answers a PROPFIND from the mapping table. */
static void caldav_propfind_build(struct caldav_req *r)
{
  bool deep = caldav_deep(r);
  struct caldav_row *rows = NULL;
  char *ctag = NULL;
  int n = 0;

  if (r->kind == CALDAV_KIND_CALENDAR || r->kind == CALDAV_KIND_OBJECT) {
    n = caldav_rows_list(r->deps->store, r->address, &rows);
    if (n < 0) {
      caldav_text(r, 500, "the agent's database failed");
      return;
    }
    ctag = caldav_ctag(rows, n);
  }
  r->ms = webdav_multistatus_new();
  switch (r->kind) {
    case CALDAV_KIND_ROOT:
      caldav_propfind_one(r, xstrdup(CALDAV_PREFIX "/"), r->kind, NULL, NULL);
      break;
    case CALDAV_KIND_PRINCIPAL:
      caldav_propfind_one(r, caldav_href_principal(r->address), r->kind, NULL,
                          NULL);
      break;
    case CALDAV_KIND_HOME:
      caldav_propfind_one(r, caldav_href_home(r->address), r->kind, NULL, NULL);
      if (deep) {
        n = caldav_rows_list(r->deps->store, r->address, &rows);
        ctag = caldav_ctag(rows, n > 0 ? n : 0);
        caldav_propfind_one(r, caldav_href_calendar(r->address),
                            CALDAV_KIND_CALENDAR, NULL, ctag);
      }
      break;
    case CALDAV_KIND_CALENDAR:
      caldav_propfind_one(r, caldav_href_calendar(r->address), r->kind, NULL,
                          ctag);
      for (int i = 0; deep && i < n; i++)
        caldav_propfind_one(r, caldav_href_object(r->address, rows[i].name),
                            CALDAV_KIND_OBJECT, &rows[i], NULL);
      break;
    case CALDAV_KIND_OUTBOX:
      caldav_propfind_one(r, caldav_href_outbox(r->address), r->kind, NULL,
                          NULL);
      break;
    case CALDAV_KIND_OBJECT: {
      int i = 0;

      while (i < n && strcmp(rows[i].name, r->name) != 0)
        i++;
      if (i == n) {
        caldav_rows_free(rows, n);
        free(ctag);
        caldav_text(r, 404, "no such calendar object");
        return;
      }
      caldav_propfind_one(r, caldav_href_object(r->address, r->name), r->kind,
                          &rows[i], NULL);
      break;
    }
  }
  caldav_rows_free(rows, n > 0 ? n : 0);
  free(ctag);
  caldav_multistatus_send(r);
}

/* PROPFIND answers from the mapping table; these steps first bring its
 * ETags up to date with Graph, so that an edit or a deletion made in
 * Outlook shows in getetag and getctag as it does in GET. Plain events
 * take their change key from one listing of the calendar; a series is
 * loaded on its own, since its ETag covers its exceptions too. */

/* Whether the request asks for ns:name (allprop counts as asking). */
static bool caldav_wants(const struct caldav_req *r, const char *ns,
                         const char *name)
{
  if (r->wreq->kind == WEBDAV_PROPFIND_ALLPROP)
    return true;
  for (size_t i = 0; i < r->wreq->nprops; i++) {
    if (strcmp(r->wreq->props[i].ns, ns) == 0
        && strcmp(r->wreq->props[i].name, name) == 0)
      return true;
  }
  return false;
}

static void caldav_refresh_next(struct caldav_req *r);

static void caldav_refresh_on_loaded(struct caldav_req *r, bool found)
{
  struct caldav_item *item = &r->items[r->next];

  if (!found)
    caldav_row_delete(r->deps->store, r->address, item->row.name);
  else if (r->ld.etag != NULL
           && (item->row.etag == NULL
               || strcmp(item->row.etag, r->ld.etag) != 0))
    caldav_row_set_etag(r->deps->store, r->address, item->row.name, r->ld.etag);
  r->next++;
  caldav_refresh_next(r);
}

static void caldav_refresh_next(struct caldav_req *r)
{
  if (r->next == r->nitems) {
    caldav_propfind_build(r);
    return;
  }
  caldav_load(r, r->items[r->next].row.event_id, caldav_refresh_on_loaded);
}

/* The listing is in: plain events are settled here, series queued. */
static void caldav_refresh_listed(struct caldav_req *r, bool complete)
{
  struct caldav_row *rows;
  const json_t *ev;
  size_t e;
  int n;

  json_array_foreach(r->listing, e, ev)
  {
    const char *id = json_string_value(json_object_get(ev, "id"));
    const char *uid = json_string_value(json_object_get(ev, "iCalUId"));
    struct caldav_row row = { 0 };

    if (id != NULL && uid != NULL
        && caldav_row_find(r->deps->store, r->address, "event_id", id, &row)
               == -ENOENT)
      caldav_row_adopt(r->deps->store, r->address, id, uid);
    caldav_row_clear(&row);
  }
  n = caldav_rows_list(r->deps->store, r->address, &rows);

  for (int i = 0; i < n; i++) {
    const json_t *hit = NULL;
    const json_t *x;
    size_t k;
    const char *type;
    const char *ck;

    json_array_foreach(r->listing, k, x)
    {
      const char *id = json_string_value(json_object_get(x, "id"));

      if (id != NULL && strcmp(id, rows[i].event_id) == 0) {
        hit = x;
        break;
      }
    }
    if (hit == NULL) {
      /* Absent from a complete listing: deleted in Outlook. */
      if (complete)
        caldav_row_delete(r->deps->store, r->address, rows[i].name);
      continue;
    }
    type = json_string_value(json_object_get(hit, "type"));
    ck = json_string_value(json_object_get(hit, "changeKey"));
    if (type != NULL && strcmp(type, "seriesMaster") == 0) {
      caldav_item_add(r, NULL, &rows[i], true);
    } else if (ck != NULL && ck[0] != '\0') {
      char *etag = caldav_object_etag(ck, rows[i].client_attendees);

      if (rows[i].etag == NULL || strcmp(rows[i].etag, etag) != 0)
        caldav_row_set_etag(r->deps->store, r->address, rows[i].name, etag);
      free(etag);
    }
  }
  caldav_rows_free(rows, n > 0 ? n : 0);
  r->next = 0;
  caldav_refresh_next(r);
}

static void caldav_refresh_on_page(void *arg, const struct graph_response *resp)
{
  struct caldav_req *r = arg;
  json_t *page;
  bool complete;

  if (resp->status != 200) {
    caldav_graph_failed(r, resp);
    return;
  }
  page = caldav_json(resp);
  json_array_extend(r->listing, json_object_get(page, "value"));
  if (caldav_graph_next_page(r, page, &r->pages, CALDAV_LIST_PAGES_MAX,
                             caldav_refresh_on_page)) {
    json_decref(page);
    return;
  }
  complete = json_object_get(page, "@odata.nextLink") == NULL;
  json_decref(page);
  caldav_refresh_listed(r, complete);
}

static void caldav_refresh_object(struct caldav_req *r, bool found)
{
  if (!found)
    caldav_row_delete(r->deps->store, r->address, r->name);
  else if (r->ld.etag != NULL
           && (r->row.etag == NULL || strcmp(r->row.etag, r->ld.etag) != 0))
    caldav_row_set_etag(r->deps->store, r->address, r->name, r->ld.etag);
  caldav_propfind_build(r);
}

/* Starts the refresh a PROPFIND needs, or builds the answer at once. */
static void caldav_propfind_refresh(struct caldav_req *r, bool deep)
{
  bool etag = caldav_wants(r, WEBDAV_NS_DAV, "getetag");
  bool ctag = caldav_wants(r, WEBDAV_NS_CALSERVER, "getctag");
  char *path;

  if (r->kind == CALDAV_KIND_OBJECT && etag
      && caldav_row_find(r->deps->store, r->address, "name", r->name, &r->row)
             == 0) {
    caldav_load(r, r->row.event_id, caldav_refresh_object);
    return;
  }
  if (r->kind != CALDAV_KIND_CALENDAR || !(ctag || (deep && etag))) {
    caldav_propfind_build(r);
    return;
  }
  r->listing = json_array();
  path = xasprintf("/v1.0/users/%s/events?$select=id,changeKey,type,iCalUId"
                   "&$top=100",
                   r->address);
  caldav_graph(r, "GET", path, NULL, NULL, caldav_refresh_on_page);
  free(path);
}

void caldav_propfind(struct caldav_req *r)
{
  const struct http_server_request *hreq = http_exchange_request(r->ex);
  int rc;

  if (caldav_depth_infinite(r)) {
    caldav_error(r, 403, WEBDAV_NS_DAV, "propfind-finite-depth",
                 "PROPFIND with Depth: infinity is not served; ask with "
                 "Depth: 1 for the members of a collection");
    return;
  }
  if (!caldav_body_fits(r, CALDAV_XML_BODY_MAX))
    return;
  rc = webdav_request_parse(hreq->body, hreq->body_len, &r->wreq);
  if (rc < 0) {
    caldav_text(r, 400, caldav_xml_error(rc, "PROPFIND"));
    return;
  }
  if (r->wreq->doc != NULL
      && !webdav_node_is(r->wreq->root, WEBDAV_NS_DAV, "propfind")) {
    caldav_text(r, 400, "the body is not a DAV:propfind");
    return;
  }
  caldav_propfind_refresh(r, caldav_deep(r));
}
