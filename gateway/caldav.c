/* SPDX-License-Identifier: MIT */
/* CalDAV over the agent's HTTP listener (see include/caldav.h): discovery,
 * PROPFIND, PUT/GET/DELETE of calendar objects and REPORTs, each mapped
 * onto Graph calls for the linked user named in the URL. */
#include "caldav.h"

#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <jansson.h>
#include <libical/ical.h>
#include <libxml/tree.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ical_graph.h"
#include "log.h"
#include "policy.h"
#include "webdav_xml.h"
#include "xalloc.h"

#define CALDAV_NS_NEXTAL "https://nextal.example/ns"
#define CALDAV_PREFIX "/dav"
#define CALDAV_WELL_KNOWN "/.well-known/caldav"
#define CALDAV_CALENDAR_NAME "default"
#define CALDAV_OUTBOX_NAME "outbox"
#define CALDAV_FREEBUSY_ATTENDEES_MAX 20 /* getSchedule's limit per call */
#define CALDAV_SEGMENTS_MAX 5     /* below /dav: calendars/addr/default/name */
#define CALDAV_CREDENTIAL_MAX 256 /* user and password of Basic auth */
#define CALDAV_ETAG_HEX 32        /* hex digits of a derived ETag */
#define CALDAV_FREEBUSY_INTERVAL 15  /* getSchedule's availabilityView, min */
#define CALDAV_OCCURRENCES_MAX 1000  /* occurrences of a series compared */
#define CALDAV_SERIES_YEARS 5        /* horizon of a series without end */
#define CALDAV_LIST_PAGES_MAX 50     /* /events pages of 100 per PROPFIND */
#define CALDAV_INSTANCE_PAGES_MAX 20 /* /instances pages of 100 followed */
#define CALDAV_PREFER_IMMUTABLE "Prefer: IdType=\"ImmutableId\""
#define CALDAV_CONTENT_TYPE_ICAL "text/calendar; charset=utf-8"

/* What a request path names. */
enum caldav_kind {
  CALDAV_KIND_ROOT,      /* /dav/ */
  CALDAV_KIND_PRINCIPAL, /* /dav/principals/{address}/ */
  CALDAV_KIND_HOME,      /* /dav/calendars/{address}/ */
  CALDAV_KIND_CALENDAR,  /* /dav/calendars/{address}/default/ */
  CALDAV_KIND_OBJECT,    /* /dav/calendars/{address}/default/{name} */
  CALDAV_KIND_OUTBOX,    /* /dav/calendars/{address}/outbox/ */
};

/* One row of caldav_objects: Nextal's resource name and UID, the Graph
 * event id and the ETag last seen. */
struct caldav_row {
  char *name;
  char *uid;
  char *event_id;
  char *etag;
};

/* One href of a REPORT answer, fetched from Graph in turn. */
struct caldav_item {
  char *href;
  struct caldav_row row;
  bool found; /* the name is mapped */
};

struct caldav_req;

/* Called when caldav_load() has the event (found) or Graph has none. */
typedef void (*caldav_loaded_cb)(struct caldav_req *r, bool found);

/* An event loaded from Graph with what a calendar object needs. */
struct caldav_load {
  caldav_loaded_cb then;
  char *event_id;
  json_t *event;      /* the master or single event */
  json_t *instances;  /* a series' instances around its occurrences */
  json_t *exceptions; /* the instances of type exception */
  json_t *deleted;    /* occurrence starts Graph no longer lists */
  time_t *expected;   /* occurrence starts the pattern gives */
  size_t nexpected;
  unsigned pages;
  char *etag;
};

/* One request in progress; freed by caldav_finish(). */
struct caldav_req {
  const struct caldav_deps *deps;
  struct http_exchange *ex;
  const char *method;
  enum caldav_kind kind;
  char address[POLICY_ADDRESS_MAX + 1];
  char *name; /* object name, decoded */
  /* PUT */
  struct ical_graph_result tr;
  bool have_tr;
  struct caldav_row row;
  int put_status; /* 201 created, 204 updated */
  json_t *ops;    /* occurrence DELETEs and PATCHes still to send */
  size_t next_op;
  struct caldav_load ld;
  /* REPORT */
  struct webdav_request *wreq;
  struct webdav_multistatus *ms;
  struct caldav_item *items;
  size_t nitems;
  size_t next;
  unsigned pages;
  bool want_data, want_etag;
  bool expand; /* calendar-data asks for <C:expand> */
  time_t expand_start, expand_end;
  time_t fb_start, fb_end; /* free/busy window */
  json_t *listing; /* PROPFIND: the calendar's events, id and changeKey */
  json_t *pending; /* calendar-query: Outlook series masters to adopt */
  size_t next_pending;
  json_t *fb_attendees; /* outbox request: addresses asked about */
  char *fb_uid;         /* outbox request's UID, echoed */
  /* PUTs in progress, so that two at once cannot both create an object
   * (same name) or two objects with one UID: the list is deps->writes. */
  struct caldav_req **writes;
  struct caldav_req *write_next;
  bool writing;
};

/* ---- small helpers ----------------------------------------------------- */

static void caldav_row_clear(struct caldav_row *row)
{
  free(row->name);
  free(row->uid);
  free(row->event_id);
  free(row->etag);
  memset(row, 0, sizeof(*row));
}

static void caldav_load_reset(struct caldav_load *ld);

static void caldav_write_end(struct caldav_req *r)
{
  struct caldav_req **pp = r->writes;

  if (!r->writing)
    return;
  while (*pp != r)
    pp = &(*pp)->write_next;
  *pp = r->write_next;
  r->writing = false;
}

static void caldav_req_free(struct caldav_req *r)
{
  caldav_write_end(r);
  free(r->name);
  if (r->have_tr)
    ical_graph_result_free(&r->tr);
  caldav_row_clear(&r->row);
  json_decref(r->ops);
  json_decref(r->fb_attendees);
  json_decref(r->listing);
  json_decref(r->pending);
  free(r->fb_uid);
  caldav_load_reset(&r->ld);
  webdav_request_free(r->wreq);
  webdav_multistatus_free(r->ms);
  for (size_t i = 0; i < r->nitems; i++) {
    free(r->items[i].href);
    caldav_row_clear(&r->items[i].row);
  }
  free(r->items);
  free(r);
}

/* Answers and frees the request. */
static void caldav_finish(struct caldav_req *r, int status,
                          const char *const *headers, const char *body,
                          size_t len)
{
  log_trace(LOG_TRACE_CALDAV, "%s caldav answer method=%s status=%d",
            http_exchange_request(r->ex)->conn_id, r->method, status);
  http_exchange_respond(r->ex, status, headers, body != NULL ? body : "", len);
  caldav_req_free(r);
}

/* Why a WebDAV body was refused, in words a client author can act on. */
static const char *caldav_xml_error(int rc, const char *method)
{
  if (rc == -EPERM)
    return "DOCTYPE is not allowed";
  if (rc == -E2BIG)
    return "the request names more properties than the agent answers (256)";
  return strcmp(method, "REPORT") == 0 ? "the REPORT body is not valid XML"
                                       : "the PROPFIND body is not valid XML";
}

static void caldav_text(struct caldav_req *r, int status, const char *text)
{
  static const char *const headers[]
      = { "Content-Type: text/plain; charset=utf-8", NULL };

  caldav_finish(r, status, headers, text, strlen(text));
}

/* The Allow header of a resource kind: only what is implemented there. */
static const char *caldav_allow(enum caldav_kind kind)
{
  switch (kind) {
    case CALDAV_KIND_CALENDAR:
      return "Allow: OPTIONS, PROPFIND, REPORT";
    case CALDAV_KIND_OBJECT:
      return "Allow: OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND";
    case CALDAV_KIND_OUTBOX:
      return "Allow: OPTIONS, POST, PROPFIND";
    default:
      return "Allow: OPTIONS, PROPFIND";
  }
}

static void caldav_not_allowed(struct caldav_req *r)
{
  static const char text[] = "method not supported here";
  const char *headers[] = { caldav_allow(r->kind),
                            "Content-Type: text/plain; charset=utf-8", NULL };

  caldav_finish(r, 405, headers, text, sizeof(text) - 1);
}

/* Answers with a DAV error body: <D:error> holding the precondition
 * element ns:name and, when text is given, <N:tag> with the sentence. */
static void caldav_error_tagged(struct caldav_req *r, int status,
                                const char *ns, const char *name,
                                const char *tag, const char *text)
{
  static const char *const headers[]
      = { "Content-Type: application/xml; charset=utf-8", NULL };
  xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "error");
  xmlNsPtr dav = xmlNewNs(root, BAD_CAST WEBDAV_NS_DAV, BAD_CAST "D");
  xmlNsPtr pre = dav;
  xmlChar *out = NULL;
  int len = 0;

  xmlSetNs(root, dav);
  xmlDocSetRootElement(doc, root);
  if (strcmp(ns, WEBDAV_NS_CALDAV) == 0)
    pre = xmlNewNs(root, BAD_CAST WEBDAV_NS_CALDAV, BAD_CAST "C");
  xmlNewChild(root, pre, BAD_CAST name, NULL);
  if (text != NULL) {
    xmlNodePtr node = xmlNewTextChild(root, NULL, BAD_CAST tag, BAD_CAST text);
    xmlSetNs(node, xmlNewNs(node, BAD_CAST CALDAV_NS_NEXTAL, BAD_CAST "N"));
  }
  xmlDocDumpFormatMemoryEnc(doc, &out, &len, "UTF-8", 0);
  caldav_finish(r, status, headers, (const char *) out, (size_t) len);
  xmlFree(out);
  xmlFreeDoc(doc);
}

static void caldav_error(struct caldav_req *r, int status, const char *ns,
                         const char *name, const char *text)
{
  caldav_error_tagged(r, status, ns, name, "message", text);
}

/* The ETag of a Graph change key: quoted hex so that it never holds a
 * character that needs care in a header. */
static char *caldav_etag(const char *change_key)
{
  unsigned char digest[32];
  char hex[2 * sizeof(digest) + 1];

  gnutls_hash_fast(GNUTLS_DIG_SHA256, change_key, strlen(change_key), digest);
  for (size_t i = 0; i < sizeof(digest); i++)
    snprintf(hex + 2 * i, 3, "%02x", digest[i]);
  return xasprintf("\"%.*s\"", CALDAV_ETAG_HEX, hex);
}

/* The ETag of a Graph event JSON, or NULL without a changeKey. */
static char *caldav_event_etag(const json_t *event)
{
  const char *ck = json_string_value(json_object_get(event, "changeKey"));

  return ck != NULL && ck[0] != '\0' ? caldav_etag(ck) : NULL;
}

/* Whether an If-Match or If-None-Match list names etag (strong
 * comparison: a weak entry never matches) or is "*". */
static bool caldav_etag_listed(const char *list, const char *etag)
{
  size_t elen = etag != NULL ? strlen(etag) : 0;
  const char *p = list;

  while (*p != '\0') {
    const char *end;
    size_t len;

    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    end = strchr(p, ',');
    if (end == NULL)
      end = p + strlen(p);
    len = (size_t) (end - p);
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
      len--;
    if (len == 1 && p[0] == '*')
      return true;
    if (etag != NULL && len == elen && memcmp(p, etag, len) == 0)
      return true;
    p = end;
  }
  return false;
}

static char *caldav_escape(const char *text)
{
  char *esc = curl_easy_escape(NULL, text, 0);
  char *copy;

  if (esc == NULL)
    abort(); /* curl fails only when out of memory */
  copy = xstrdup(esc);
  curl_free(esc);
  return copy;
}

static char *caldav_href_principal(const char *address)
{
  return xasprintf(CALDAV_PREFIX "/principals/%s/", address);
}

static char *caldav_href_home(const char *address)
{
  return xasprintf(CALDAV_PREFIX "/calendars/%s/", address);
}

static char *caldav_href_calendar(const char *address)
{
  return xasprintf(CALDAV_PREFIX "/calendars/%s/" CALDAV_CALENDAR_NAME "/",
                   address);
}

static char *caldav_href_object(const char *address, const char *name)
{
  char *esc = caldav_escape(name);
  char *href = xasprintf(
      CALDAV_PREFIX "/calendars/%s/" CALDAV_CALENDAR_NAME "/%s", address, esc);

  free(esc);
  return href;
}

/* ---- the mapping table ------------------------------------------------- */

static sqlite3_stmt *caldav_prepare(struct store *store, const char *sql)
{
  sqlite3_stmt *st = NULL;

  if (sqlite3_prepare_v2(store->db, sql, -1, &st, NULL) != SQLITE_OK) {
    log_error("- store prepare_failed error=\"%s\"", sqlite3_errmsg(store->db));
    sqlite3_finalize(st);
    return NULL;
  }
  return st;
}

static char *caldav_column(sqlite3_stmt *st, int col)
{
  const unsigned char *text = sqlite3_column_text(st, col);

  return text != NULL ? xstrdup((const char *) text) : NULL;
}

/* Reads the row whose column key equals value. Returns 0, -ENOENT or
 * -EIO. */
static int caldav_row_find(struct store *store, const char *address,
                           const char *key, const char *value,
                           struct caldav_row *row)
{
  char *sql = xasprintf("SELECT name, uid, event_id, etag FROM caldav_objects"
                        " WHERE address = ?1 AND %s = ?2",
                        key);
  sqlite3_stmt *st = caldav_prepare(store, sql);
  int rc;

  free(sql);
  if (st == NULL)
    return -EIO;
  sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    row->name = caldav_column(st, 0);
    row->uid = caldav_column(st, 1);
    row->event_id = caldav_column(st, 2);
    row->etag = caldav_column(st, 3);
    rc = 0;
  } else {
    rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
  }
  sqlite3_finalize(st);
  return rc;
}

/* Runs one statement with up to five text parameters. Returns 0 or -EIO. */
static int caldav_store_run(struct store *store, const char *sql,
                            const char *const *params, int nparams)
{
  sqlite3_stmt *st = caldav_prepare(store, sql);
  int rc;

  if (st == NULL)
    return -EIO;
  for (int i = 0; i < nparams; i++)
    sqlite3_bind_text(st, i + 1, params[i], -1, SQLITE_STATIC);
  rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
  if (rc < 0)
    log_error("- store caldav_write_failed error=\"%s\"",
              sqlite3_errmsg(store->db));
  sqlite3_finalize(st);
  return rc;
}

static int caldav_row_put(struct store *store, const char *address,
                          const struct caldav_row *row)
{
  const char *params[]
      = { address, row->name, row->uid, row->event_id, row->etag };

  return caldav_store_run(store,
                          "INSERT OR REPLACE INTO caldav_objects"
                          " (address, name, uid, event_id, etag)"
                          " VALUES (?1, ?2, ?3, ?4, ?5)",
                          params, 5);
}

static void caldav_row_set_etag(struct store *store, const char *address,
                                const char *name, const char *etag)
{
  const char *params[] = { address, name, etag };

  caldav_store_run(store,
                   "UPDATE caldav_objects SET etag = ?3"
                   " WHERE address = ?1 AND name = ?2",
                   params, 3);
}

static void caldav_row_delete(struct store *store, const char *address,
                              const char *name)
{
  const char *params[] = { address, name };

  caldav_store_run(store,
                   "DELETE FROM caldav_objects WHERE address = ?1"
                   " AND name = ?2",
                   params, 2);
}

/* Makes an event that was not written through CalDAV (made in Outlook, or
 * an invitation the user received) an object of the calendar, named after
 * its event id, with Graph's iCalUId as UID. Returns 0, or -EIO. */
static int caldav_row_adopt(struct store *store, const char *address,
                            const char *event_id, const char *ical_uid)
{
  unsigned char digest[32];
  char name[CALDAV_ETAG_HEX + 16];
  const char *params[] = { address, name, ical_uid, event_id };
  int len;

  gnutls_hash_fast(GNUTLS_DIG_SHA256, event_id, strlen(event_id), digest);
  len = snprintf(name, sizeof(name), "outlook-");
  for (size_t i = 0; i < CALDAV_ETAG_HEX / 2; i++)
    len += snprintf(name + len, sizeof(name) - (size_t) len, "%02x", digest[i]);
  snprintf(name + len, sizeof(name) - (size_t) len, ".ics");
  return caldav_store_run(store,
                          "INSERT OR IGNORE INTO caldav_objects"
                          " (address, name, uid, event_id) VALUES"
                          " (?1, ?2, ?3, ?4)",
                          params, 4);
}

/* Drops other names of event_id: an adopted name of an event whose PUT
 * answer was lost and that its own name now maps again. */
static void caldav_row_unalias(struct store *store, const char *address,
                               const char *name, const char *event_id)
{
  const char *params[] = { address, name, event_id };

  caldav_store_run(store,
                   "DELETE FROM caldav_objects WHERE address = ?1"
                   " AND name != ?2 AND event_id = ?3",
                   params, 3);
}

/* Lists the rows of address, by name, at most CALDAV_OBJECTS_MAX. Returns
 * the count, or -EIO. */
static int caldav_rows_list(struct store *store, const char *address,
                            struct caldav_row **out)
{
  sqlite3_stmt *st
      = caldav_prepare(store, "SELECT name, uid, event_id, etag"
                              " FROM caldav_objects WHERE address = ?1"
                              " ORDER BY name LIMIT ?2");
  struct caldav_row *rows = NULL;
  int n = 0;
  int rc;

  *out = NULL;
  if (st == NULL)
    return -EIO;
  sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, CALDAV_OBJECTS_MAX);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    rows = xrealloc(rows, (size_t) (n + 1) * sizeof(*rows));
    rows[n].name = caldav_column(st, 0);
    rows[n].uid = caldav_column(st, 1);
    rows[n].event_id = caldav_column(st, 2);
    rows[n].etag = caldav_column(st, 3);
    n++;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    for (int i = 0; i < n; i++)
      caldav_row_clear(&rows[i]);
    free(rows);
    return -EIO;
  }
  *out = rows;
  return n;
}

static void caldav_rows_free(struct caldav_row *rows, int n)
{
  for (int i = 0; i < n; i++)
    caldav_row_clear(&rows[i]);
  free(rows);
}

/* The collection tag: a digest of every name and ETag, so that any create,
 * change or delete the agent has seen changes it. */
static char *caldav_ctag(struct caldav_row *rows, int n)
{
  gnutls_hash_hd_t hd;
  unsigned char digest[32];
  char hex[2 * sizeof(digest) + 1];

  if (gnutls_hash_init(&hd, GNUTLS_DIG_SHA256) < 0)
    abort(); /* fails only when out of memory */
  for (int i = 0; i < n; i++) {
    gnutls_hash(hd, rows[i].name, strlen(rows[i].name) + 1);
    if (rows[i].etag != NULL)
      gnutls_hash(hd, rows[i].etag, strlen(rows[i].etag) + 1);
  }
  gnutls_hash_deinit(hd, digest);
  for (size_t i = 0; i < sizeof(digest); i++)
    snprintf(hex + 2 * i, 3, "%02x", digest[i]);
  return xasprintf("%.*s", CALDAV_ETAG_HEX, hex);
}

/* ---- Graph ------------------------------------------------------------- */

static void caldav_graph(struct caldav_req *r, const char *method,
                         const char *path, const json_t *body,
                         const char *if_match, graph_done_cb done)
{
  struct graph_request req = { 0 };
  const char *headers[3] = { CALDAV_PREFER_IMMUTABLE, NULL, NULL };
  char *match = NULL;
  char *text = NULL;

  if (if_match != NULL) {
    match = xasprintf("If-Match: %s", if_match);
    headers[1] = match;
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

static char *caldav_event_path(const char *address, const char *event_id,
                               const char *suffix)
{
  char *esc = caldav_escape(event_id);
  char *path = xasprintf("/v1.0/users/%s/events/%s%s", address, esc, suffix);

  free(esc);
  return path;
}

/* Answers a Graph failure with the closest CalDAV status. */
static void caldav_graph_failed(struct caldav_req *r,
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

static json_t *caldav_json(const struct graph_response *resp)
{
  json_error_t err;

  return json_loadb(resp->body, resp->body_len, 0, &err);
}

/* ---- loading an object from Graph -------------------------------------- */

/* The event and, for a series, its exceptions and deleted occurrences,
 * found by comparing the instances Graph lists with the occurrences the
 * pattern gives (Graph lists no deleted occurrences itself). */

static void caldav_load_reset(struct caldav_load *ld)
{
  free(ld->event_id);
  json_decref(ld->event);
  json_decref(ld->instances);
  json_decref(ld->exceptions);
  json_decref(ld->deleted);
  free(ld->expected);
  free(ld->etag);
  memset(ld, 0, sizeof(*ld));
}

static void caldav_format_utc(time_t t, char *out, size_t size)
{
  struct tm tm;

  gmtime_r(&t, &tm);
  strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Reads Graph's "2030-03-04T08:00:00[.0000000][Z]" as a UTC time. */
static bool caldav_parse_utc(const char *text, time_t *out)
{
  struct tm tm = { 0 };

  if (text == NULL || strptime(text, "%Y-%m-%dT%H:%M:%S", &tm) == NULL)
    return false;
  *out = timegm(&tm);
  return true;
}

static void caldav_load_occurrence(icalcomponent *comp,
                                   struct icaltime_span *span, void *data)
{
  struct caldav_load *ld = data;

  if (ld->nexpected == CALDAV_OCCURRENCES_MAX)
    return;
  ld->expected
      = xrealloc(ld->expected, (ld->nexpected + 1) * sizeof(*ld->expected));
  ld->expected[ld->nexpected++] = span->start;
}

/* Lists the occurrence starts of the series in ld->event, from its start
 * for CALDAV_SERIES_YEARS at most. Returns 0 or -EINVAL. */
static int caldav_load_expand(struct caldav_load *ld)
{
  struct ical_graph_ical_options opt = { .uid = "series" };
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
  first = icaltime_as_timet_with_zone(
      dtstart, dtstart.zone != NULL ? dtstart.zone : utc);
  icalcomponent_foreach_recurrence(
      vev, icaltime_from_timet_with_zone(first - 1, 0, utc),
      icaltime_from_timet_with_zone(
          first + (time_t) CALDAV_SERIES_YEARS * 366 * 86400, 0, utc),
      caldav_load_occurrence, ld);
  icalcomponent_free(cal);
  return ld->nexpected > 0 ? 0 : -EINVAL;
}

/* The ETag of what was loaded: the change key alone for a plain event or
 * an untouched series, else a digest that also covers every exception's
 * change key and every deleted occurrence, so that an edit of one
 * occurrence in Outlook changes it too. */
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
    return caldav_etag(ck);
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
  etag = caldav_etag(text);
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
  const char *next;

  if (resp->status != 200) {
    caldav_graph_failed(r, resp);
    return;
  }
  page = caldav_json(resp);
  json_array_extend(ld->instances, json_object_get(page, "value"));
  next = json_string_value(json_object_get(page, "@odata.nextLink"));
  if (next != NULL && strstr(next, "/v1.0/") != NULL
      && ++ld->pages < CALDAV_INSTANCE_PAGES_MAX) {
    caldav_graph(r, "GET", strstr(next, "/v1.0/"), NULL, NULL,
                 caldav_load_on_instances);
    json_decref(page);
    return;
  }
  json_decref(page);
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

/* Loads event_id and calls then(r, found) on the loop; found is false when
 * Graph no longer has the event. Other Graph failures are answered here. */
static void caldav_load(struct caldav_req *r, const char *event_id,
                        caldav_loaded_cb then)
{
  char *path = caldav_event_path(r->address, event_id, "");

  caldav_load_reset(&r->ld);
  r->ld.then = then;
  r->ld.event_id = xstrdup(event_id);
  caldav_graph(r, "GET", path, NULL, NULL, caldav_load_on_event);
  free(path);
}

/* The calendar object of what was loaded; NULL with a sentence in err. */
static char *caldav_load_ical(struct caldav_req *r, const char *uid, char *err,
                              size_t errsize)
{
  struct ical_graph_ical_options opt = { .uid = uid,
                                         .exceptions = r->ld.exceptions,
                                         .deleted = r->ld.deleted };
  char *text = NULL;

  if (ical_graph_to_ical(r->ld.event, &opt, &text, err, errsize)
      != ICAL_GRAPH_OK)
    return NULL;
  return text;
}

/* ---- PUT --------------------------------------------------------------- */

/* Maps a translation error to its CalDAV precondition. */
static void caldav_put_refused(struct caldav_req *r, int rc)
{
  const char *pre;

  switch (rc) {
    case ICAL_GRAPH_EPARSE:
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
    caldav_text(r, 500,
                "the event was written but its mapping was not "
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

  if (op == NULL) {
    caldav_load(r, r->row.event_id, caldav_put_on_final);
    return;
  }
  path = caldav_event_path(r->address,
                           json_string_value(json_object_get(op, "id")), "");
  caldav_graph(r, json_string_value(json_object_get(op, "method")), path,
               json_object_get(op, "event"), NULL, caldav_put_on_op);
  free(path);
}

/* The instance of the loaded series that starts originally at key (a
 * {dateTime, timeZone: UTC} object), or NULL. */
static const char *caldav_instance_at(struct caldav_req *r, const json_t *key)
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
      return json_string_value(json_object_get(x, "id"));
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
    const char *id = caldav_instance_at(r, x);

    /* An EXDATE that names no occurrence changes nothing (RFC 5545). */
    if (id != NULL)
      json_array_append_new(
          r->ops, json_pack("{s:s, s:s}", "method", "DELETE", "id", id));
  }
  json_array_foreach(r->tr.overrides, i, x)
  {
    const char *id = caldav_instance_at(r, json_object_get(x, "originalStart"));

    if (id == NULL) {
      caldav_put_undo(r);
      return;
    }
    json_array_append_new(r->ops,
                          json_pack("{s:s, s:s, s:O}", "method", "PATCH", "id",
                                    id, "event", json_object_get(x, "event")));
  }
  r->next_op = 0;
  caldav_put_next_op(r);
}

/* After the master was written: the occurrences, then the answer. */
static void caldav_put_written(struct caldav_req *r, const json_t *event)
{
  char *etag;

  if (json_array_size(r->tr.exdates) > 0
      || json_array_size(r->tr.overrides) > 0) {
    /* Keep the mapping now: the event exists whatever happens next. */
    caldav_row_put(r->deps->store, r->address, &r->row);
    caldav_load(r, r->row.event_id, caldav_put_on_series);
    return;
  }
  etag = caldav_event_etag(event);
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
  r->put_status = 204;
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

/* Updates the mapped event; graph_etag (Graph's @odata.etag) guards the
 * PATCH when the client sent If-Match. */
static void caldav_put_update(struct caldav_req *r, const char *graph_etag)
{
  char *path;

  if (r->tr.cancelled) {
    json_t *body = json_pack("{s:s}", "comment", "");

    path = caldav_event_path(r->address, r->row.event_id, "/cancel");
    caldav_graph(r, "POST", path, body, NULL, caldav_put_on_cancelled);
    json_decref(body);
  } else {
    path = caldav_event_path(r->address, r->row.event_id, "");
    caldav_graph(r, "PATCH", path, r->tr.event, graph_etag,
                 caldav_put_on_patched);
  }
  free(path);
}

static void caldav_put_on_current(struct caldav_req *r, bool found)
{
  const char *graph_etag;

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
  graph_etag = json_string_value(json_object_get(r->ld.event, "@odata.etag"));
  caldav_put_update(r, graph_etag);
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

static void caldav_put(struct caldav_req *r)
{
  const struct http_server_request *hreq = http_exchange_request(r->ex);
  const char *ctype = http_exchange_header(r->ex, "Content-Type");
  const char *if_none = http_exchange_header(r->ex, "If-None-Match");
  const char *if_match = http_exchange_header(r->ex, "If-Match");
  struct ical_graph_options opt = {
    .user = r->address,
    /* The mailbox's own zone (mailboxSettings) is not read yet, so floating
     * times and all-day events are placed in UTC. */
    .default_zone = "UTC",
  };
  struct caldav_row other = { 0 };
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
  r->have_tr = true;
  rc = ical_graph_from_ical(hreq->body, hreq->body_len, &opt, &r->tr);
  if (rc != ICAL_GRAPH_OK) {
    caldav_put_refused(r, rc);
    return;
  }
  if (caldav_write_begin(r, if_none) < 0)
    return;
  rc = caldav_row_find(r->deps->store, r->address, "name", r->name, &r->row);
  if (rc == -EIO) {
    caldav_text(r, 500, "the agent's database failed");
    return;
  }
  if (rc == 0) {
    if (if_none != NULL && caldav_etag_listed(if_none, r->row.etag)) {
      caldav_text(r, 412, "the calendar object already exists");
      return;
    }
    if (strcmp(r->row.uid, r->tr.uid) != 0) {
      caldav_error(r, 403, WEBDAV_NS_CALDAV, "no-uid-conflict",
                   "a calendar object's UID cannot change");
      return;
    }
    if (if_match != NULL)
      caldav_load(r, r->row.event_id, caldav_put_on_current);
    else
      caldav_put_update(r, NULL);
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

/* ---- GET and DELETE ---------------------------------------------------- */

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

/* GET, HEAD and DELETE: all start from the mapped event. */
static void caldav_object_method(struct caldav_req *r)
{
  bool is_delete = strcmp(r->method, "DELETE") == 0;
  int rc;

  if (r->kind != CALDAV_KIND_OBJECT) {
    caldav_not_allowed(r);
    return;
  }
  rc = caldav_row_find(r->deps->store, r->address, "name", r->name, &r->row);
  if (rc < 0) {
    caldav_text(r, rc == -ENOENT ? 404 : 500,
                rc == -ENOENT ? "no such calendar object"
                              : "the agent's database failed");
    return;
  }
  if (!is_delete)
    caldav_load(r, r->row.event_id, caldav_get_on_loaded);
  else if (http_exchange_header(r->ex, "If-Match") != NULL)
    caldav_load(r, r->row.event_id, caldav_delete_on_current);
  else
    caldav_delete_now(r);
}

/* ---- PROPFIND ---------------------------------------------------------- */

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
      caldav_add_href(resp, node,
                      xasprintf(CALDAV_PREFIX
                                "/calendars/%s/" CALDAV_OUTBOX_NAME "/",
                                r->address));
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

static void caldav_multistatus_send(struct caldav_req *r)
{
  static const char *const headers[]
      = { "Content-Type: application/xml; charset=utf-8", NULL };
  char *out = NULL;
  size_t len = 0;

  webdav_multistatus_dump(r->ms, &out, &len);
  caldav_finish(r, 207, headers, out, len);
  free(out);
}

/* Depth infinity (or none) is served as depth 1: the tree is only three
 * levels deep and the calendar is its only large collection. */
static bool caldav_deep(const struct caldav_req *r)
{
  const char *depth = http_exchange_header(r->ex, "Depth");

  return depth == NULL || strcmp(depth, "0") != 0;
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
      caldav_propfind_one(r,
                          xasprintf(CALDAV_PREFIX
                                    "/calendars/%s/" CALDAV_OUTBOX_NAME "/",
                                    r->address),
                          r->kind, NULL, NULL);
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

/* ---- refreshing ETags before PROPFIND ---------------------------------- */

/* PROPFIND answers from the mapping table; these steps first bring its
 * ETags up to date with Graph, so that an edit or a deletion made in
 * Outlook shows in getetag and getctag as it does in GET. Plain events
 * take their change key from one listing of the calendar; a series is
 * loaded on its own, since its ETag covers its exceptions too. */

static void caldav_propfind_build(struct caldav_req *r);
static void caldav_item_add(struct caldav_req *r, char *href,
                            struct caldav_row *row, bool found);

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
      char *etag = caldav_etag(ck);

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
  const char *next;

  if (resp->status != 200) {
    caldav_graph_failed(r, resp);
    return;
  }
  page = caldav_json(resp);
  json_array_extend(r->listing, json_object_get(page, "value"));
  next = json_string_value(json_object_get(page, "@odata.nextLink"));
  if (next != NULL && strstr(next, "/v1.0/") != NULL
      && ++r->pages < CALDAV_LIST_PAGES_MAX) {
    caldav_graph(r, "GET", strstr(next, "/v1.0/"), NULL, NULL,
                 caldav_refresh_on_page);
    json_decref(page);
    return;
  }
  json_decref(page);
  caldav_refresh_listed(r, next == NULL);
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

static void caldav_propfind(struct caldav_req *r)
{
  const struct http_server_request *hreq = http_exchange_request(r->ex);
  int rc;

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

static void caldav_get_schedule(struct caldav_req *r, const json_t *attendees,
                                time_t start, time_t end, graph_done_cb done);

/* ---- expand (RFC 4791 9.6.5) ------------------------------------------- */

struct caldav_expansion {
  icalcomponent *master;
  icalcomponent *out; /* the new VCALENDAR */
  icalcomponent **overrides;
  size_t noverrides;
  time_t *override_ids; /* RECURRENCE-ID of each override, UTC */
  size_t count;
};

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

/* The instances of a recurring object that overlap [from, to), each as a
 * VEVENT with RECURRENCE-ID and UTC times, without VTIMEZONEs. Returns a
 * new string (free()), or NULL when text is not a series: it is sent as
 * it is then. */
static char *caldav_expand(const char *text, time_t from, time_t to)
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

/* ---- REPORT ------------------------------------------------------------ */

/* Adds the object of row (href) to the work list of a REPORT. */
static void caldav_item_add(struct caldav_req *r, char *href,
                            struct caldav_row *row, bool found)
{
  struct caldav_item *item;

  r->items = xrealloc(r->items, (r->nitems + 1) * sizeof(*r->items));
  item = &r->items[r->nitems++];
  item->href = href;
  item->found = found;
  if (found) {
    item->row = *row;
    memset(row, 0, sizeof(*row));
  } else {
    memset(&item->row, 0, sizeof(item->row));
  }
}

static void caldav_report_next(struct caldav_req *r);

static void caldav_report_on_loaded(struct caldav_req *r, bool found)
{
  struct caldav_item *item = &r->items[r->next];
  struct webdav_response *wr;
  const char *etag = r->ld.etag;
  char *text = NULL;
  char err[256];

  if (!found) {
    caldav_row_delete(r->deps->store, r->address, item->row.name);
    webdav_response_set_status(webdav_multistatus_add(r->ms, item->href), 404);
    r->next++;
    caldav_report_next(r);
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
  r->next++;
  caldav_report_next(r);
}

/* Fetches the next item of the work list, or sends the answer. */
static void caldav_report_next(struct caldav_req *r)
{
  while (r->next < r->nitems && !r->items[r->next].found) {
    webdav_response_set_status(
        webdav_multistatus_add(r->ms, r->items[r->next].href), 404);
    r->next++;
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
  const char *next;
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
  }
  next = json_string_value(json_object_get(page, "@odata.nextLink"));
  if (next != NULL && strstr(next, "/v1.0/") != NULL
      && ++r->pages < CALDAV_VIEW_PAGES_MAX) {
    caldav_graph(r, "GET", strstr(next, "/v1.0/"), NULL, NULL,
                 caldav_query_on_view);
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

static void caldav_report(struct caldav_req *r)
{
  const struct http_server_request *hreq = http_exchange_request(r->ex);
  int rc;

  if (r->kind != CALDAV_KIND_CALENDAR) {
    caldav_error(r, 403, WEBDAV_NS_DAV, "supported-report",
                 "REPORTs are answered on the calendar collection");
    return;
  }
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

/* ---- scheduling outbox: free/busy of several attendees (RFC 6638) ------ */

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

/* Asks Graph's getSchedule for attendees over [start, end) in one call. */
static void caldav_get_schedule(struct caldav_req *r, const json_t *attendees,
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

/* POST to the outbox: a VFREEBUSY request (METHOD:REQUEST) for up to
 * CALDAV_FREEBUSY_ATTENDEES_MAX attendees, answered from one getSchedule. */
static void caldav_outbox_post(struct caldav_req *r)
{
  const struct http_server_request *hreq = http_exchange_request(r->ex);
  icaltimezone *utc = icaltimezone_get_utc_timezone();
  icalcomponent *cal = NULL;
  icalcomponent *vfb = NULL;
  icalproperty *p;
  struct icaltimetype ts, te;
  char addr[POLICY_ADDRESS_MAX + 1];
  const char *why = NULL;

  if (hreq->body_len > 0 && hreq->body_len <= ICAL_GRAPH_TEXT_MAX)
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
  if (why == NULL
      && (icaltime_is_null_time(ts) || icaltime_is_null_time(te)
          || r->fb_end <= r->fb_start))
    why = "the request needs DTSTART and a later DTEND";
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

/* ---- dispatch ---------------------------------------------------------- */

/* Splits the path below /dav into r->kind, r->address and r->name.
 * Returns 0, or -ENOENT for a path that names nothing. */
static int caldav_parse_path(struct caldav_req *r, const char *path)
{
  char *decoded[CALDAV_SEGMENTS_MAX];
  size_t nseg = 0;
  const char *p = path + strlen(CALDAV_PREFIX);
  int rc = -ENOENT;

  while (*p != '\0') {
    const char *end;

    while (*p == '/')
      p++;
    if (*p == '\0')
      break;
    end = strchr(p, '/');
    if (end == NULL)
      end = p + strlen(p);
    if (nseg == CALDAV_SEGMENTS_MAX
        || http_percent_decode(p, (size_t) (end - p), 0, &decoded[nseg]) < 0)
      goto out;
    nseg++;
    p = end;
  }
  if (nseg == 0) {
    r->kind = CALDAV_KIND_ROOT;
    rc = 0;
    goto out;
  }
  if (nseg < 2 || strlen(decoded[1]) > POLICY_ADDRESS_MAX
      || strpbrk(decoded[1], "/?#%\"<>\\ ") != NULL)
    goto out;
  if (policy_address_normalize(decoded[1], r->address, sizeof(r->address)) < 0)
    snprintf(r->address, sizeof(r->address), "%s", decoded[1]);
  if (strcmp(decoded[0], "principals") == 0 && nseg == 2) {
    r->kind = CALDAV_KIND_PRINCIPAL;
    rc = 0;
  } else if (strcmp(decoded[0], "calendars") == 0 && nseg == 2) {
    r->kind = CALDAV_KIND_HOME;
    rc = 0;
  } else if (strcmp(decoded[0], "calendars") == 0 && nseg == 3
             && strcmp(decoded[2], CALDAV_CALENDAR_NAME) == 0) {
    r->kind = CALDAV_KIND_CALENDAR;
    rc = 0;
  } else if (strcmp(decoded[0], "calendars") == 0 && nseg == 3
             && strcmp(decoded[2], CALDAV_OUTBOX_NAME) == 0) {
    r->kind = CALDAV_KIND_OUTBOX;
    rc = 0;
  } else if (strcmp(decoded[0], "calendars") == 0 && nseg == 4
             && strcmp(decoded[2], CALDAV_CALENDAR_NAME) == 0
             && strlen(decoded[3]) <= CALDAV_NAME_MAX && decoded[3][0] != '.') {
    r->kind = CALDAV_KIND_OBJECT;
    r->name = xstrdup(decoded[3]);
    rc = 0;
  }
out:
  for (size_t i = 0; i < nseg; i++)
    free(decoded[i]);
  return rc;
}

/* HTTP Basic with the service credential; answers 401 itself. */
static bool caldav_authenticate(struct caldav_req *r)
{
  static const char *const headers[]
      = { "WWW-Authenticate: Basic realm=\"nextal\", charset=\"UTF-8\"",
          "Content-Type: text/plain; charset=utf-8", NULL };
  static const char text[] = "authentication required";
  char user[CALDAV_CREDENTIAL_MAX];
  char pass[CALDAV_CREDENTIAL_MAX];
  bool ok = false;

  if (http_exchange_basic_auth(r->ex, user, sizeof(user), pass, sizeof(pass))
      == 0)
    ok = credential_check(r->deps->credential, user, pass) == 0;
  explicit_bzero(pass, sizeof(pass));
  if (!ok) {
    log_info("%s caldav auth_failed peer=%s",
             http_exchange_request(r->ex)->conn_id,
             http_exchange_request(r->ex)->peer);
    caldav_finish(r, 401, headers, text, sizeof(text) - 1);
  }
  return ok;
}

static void caldav_options(struct caldav_req *r)
{
  const char *headers[]
      = { "DAV: 1, 3, calendar-access", caldav_allow(r->kind), NULL };

  caldav_finish(r, 200, headers, NULL, 0);
}

static void caldav_handle(void *arg, struct http_exchange *ex)
{
  const struct http_server_request *hreq = http_exchange_request(ex);
  struct caldav_req *r = xcalloc(1, sizeof(*r));
  struct policy_decision decision;
  const char *m = hreq->method;
  char esc[128];

  r->deps = arg;
  r->writes = &((struct caldav_deps *) arg)->writes;
  r->ex = ex;
  r->method = m;
  log_trace(LOG_TRACE_CALDAV, "%s caldav request method=%s path=%s",
            hreq->conn_id, m,
            log_escape(esc, sizeof(esc), hreq->path, strlen(hreq->path)));
  if (!caldav_authenticate(r))
    return;
  if (strcmp(hreq->path, CALDAV_WELL_KNOWN) == 0
      || strncmp(hreq->path, CALDAV_WELL_KNOWN "/",
                 strlen(CALDAV_WELL_KNOWN) + 1)
             == 0) {
    static const char *const headers[]
        = { "Location: " CALDAV_PREFIX "/", NULL };

    caldav_finish(r, 301, headers, NULL, 0);
    return;
  }
  if (caldav_parse_path(r, hreq->path) < 0) {
    caldav_text(r, 404, "no such CalDAV resource");
    return;
  }
  if (r->kind != CALDAV_KIND_ROOT) {
    policy_gate_check(r->deps->gate, POLICY_REQUEST_CALDAV, r->address,
                      &decision);
    if (decision.reason != POLICY_ALLOW) {
      char *text = xasprintf("%s: %s", decision.code, decision.sentence);

      log_info("%s caldav refused address=%s reason=%s", hreq->conn_id,
               r->address, decision.code);
      caldav_error_tagged(r, 403, WEBDAV_NS_DAV, "need-privileges",
                          "policy-refused", text);
      free(text);
      return;
    }
  }
  if (strcmp(m, "OPTIONS") == 0)
    caldav_options(r);
  else if (strcmp(m, "PROPFIND") == 0)
    caldav_propfind(r);
  else if (r->kind == CALDAV_KIND_OUTBOX && strcmp(m, "POST") == 0)
    caldav_outbox_post(r);
  else if (r->kind == CALDAV_KIND_ROOT || r->kind == CALDAV_KIND_OUTBOX)
    caldav_not_allowed(r);
  else if (strcmp(m, "PUT") == 0)
    caldav_put(r);
  else if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0
           || strcmp(m, "DELETE") == 0)
    caldav_object_method(r);
  else if (strcmp(m, "REPORT") == 0)
    caldav_report(r);
  else
    caldav_not_allowed(r);
}

int caldav_register(struct http_router *router, struct caldav_deps *deps)
{
  void *arg = (void *) deps;
  int rc;

  rc = http_router_add(router, NULL, CALDAV_WELL_KNOWN, caldav_handle, arg);
  if (rc == 0)
    rc = http_router_add(router, NULL, CALDAV_PREFIX, caldav_handle, arg);
  return rc;
}
