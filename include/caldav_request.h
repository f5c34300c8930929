/* SPDX-License-Identifier: MIT */
/* Internal to the CalDAV endpoint, shared by gateway/caldav*.c and by
 * nothing else: one request in progress, the answers every handler gives,
 * the Graph calls a request makes, and the handler of each method. The
 * endpoint's public interface is include/caldav.h. */
#ifndef NX_CALDAV_REQUEST_H
#define NX_CALDAV_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "caldav.h"
#include "caldav_objects.h"
#include "graph_client.h"
#include "http_server.h"
#include "ical_graph.h"
#include "policy.h"
#include "webdav_xml.h"

#define CALDAV_PREFIX "/dav"
#define CALDAV_CONTENT_TYPE_ICAL "text/calendar; charset=utf-8"

/* The longest href a calendar-multiget can name, as the agent writes them
 * (caldav_href_object(): the address as it is, the object name with every
 * byte percent-encoded at worst), after an absolute URL's scheme and
 * authority ("https://", a 253-byte host, ":65535"): 1,379 bytes. */
#define CALDAV_HREF_AUTHORITY_MAX 270
#define CALDAV_HREF_MAX                                                        \
  (CALDAV_HREF_AUTHORITY_MAX + sizeof(CALDAV_PREFIX "/calendars/") - 1         \
   + POLICY_ADDRESS_MAX + sizeof("/default/") - 1 + 3 * CALDAV_NAME_MAX)
/* Around each href: <D:href></D:href>, a namespace declared on it, a line
 * break and indentation. */
#define CALDAV_HREF_MARKUP_MAX 64
/* The root element, the properties asked for and a filter. */
#define CALDAV_XML_FRAME_MAX (64 * 1024)
/* Largest PROPFIND or REPORT body read, in bytes (2,951,536, inside the
 * listener's default [http] max_body of 4 MiB): a calendar-multiget of
 * CALDAV_OBJECTS_MAX of the longest hrefs fits. Past it the answer is 413
 * before libxml2 sees a byte. */
#define CALDAV_XML_BODY_MAX                                                    \
  (CALDAV_OBJECTS_MAX * (CALDAV_HREF_MAX + CALDAV_HREF_MARKUP_MAX)             \
   + CALDAV_XML_FRAME_MAX)

/* What a request path names. */
enum caldav_kind {
  CALDAV_KIND_ROOT,      /* /dav/ */
  CALDAV_KIND_PRINCIPAL, /* /dav/principals/{address}/ */
  CALDAV_KIND_HOME,      /* /dav/calendars/{address}/ */
  CALDAV_KIND_CALENDAR,  /* /dav/calendars/{address}/default/ */
  CALDAV_KIND_OBJECT,    /* /dav/calendars/{address}/default/{name} */
  CALDAV_KIND_OUTBOX,    /* /dav/calendars/{address}/outbox/ */
};

/* One object of a REPORT answer or of a PROPFIND refresh, fetched from
 * Graph in turn unless the answer that listed it already holds it. */
struct caldav_item {
  char *href;
  struct caldav_row row;
  bool found;   /* the name is mapped */
  json_t *view; /* a single event as calendarView gave it, or NULL */
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
  char *client_attendees; /* the object's remembered client-scheduled
                             ATTENDEE lines (JSON array), or NULL */
  char *etag;             /* covers client_attendees too */
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
  int put_status;  /* 201 created, 204 updated */
  bool completing; /* finishing an incomplete create (caldav_object.c) */
  bool unchanged;  /* nothing written to Graph yet: r->ld is current */
  json_t *ops;     /* occurrence DELETEs and PATCHes still to send */
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

/* ---- answers and names (caldav.c) -------------------------------------- */

/* Answers with status, headers (NULL-terminated, or NULL) and body (NULL
 * for none), then frees the request: r is gone when this returns. */
void caldav_finish(struct caldav_req *r, int status, const char *const *headers,
                   const char *body, size_t len);

/* Answers with a text/plain sentence. */
void caldav_text(struct caldav_req *r, int status, const char *text);

/* Answers that the agent's own database failed (locked, full, failing):
 * 503 with Retry-After, since a client's retry is likely to succeed. */
void caldav_store_failed(struct caldav_req *r, const char *text);

/* Answers 405 with the Allow header of the resource. */
void caldav_not_allowed(struct caldav_req *r);

/* Answers with a DAV error body: <D:error> holding the precondition
 * element ns:name and, when text is given, a Nextal <N:tag> element with
 * the sentence. caldav_error() uses the tag "message". */
void caldav_error_tagged(struct caldav_req *r, int status, const char *ns,
                         const char *name, const char *tag, const char *text);
void caldav_error(struct caldav_req *r, int status, const char *ns,
                  const char *name, const char *text);

/* Why a PROPFIND or REPORT body was refused (rc from
 * webdav_request_parse()), in words a client author can act on. */
const char *caldav_xml_error(int rc, const char *method);

/* Whether the request body is at most max bytes; answers 413 with a
 * sentence naming the limit when it is not (r is then gone). */
bool caldav_body_fits(struct caldav_req *r, size_t max);

/* Sends r->ms as a 207 and frees the request. */
void caldav_multistatus_send(struct caldav_req *r);

/* Appends an object to r->items; found rows are moved into the item (row
 * is zeroed), href is owned by the item. */
void caldav_item_add(struct caldav_req *r, char *href, struct caldav_row *row,
                     bool found);

/* The ETag of a Graph event JSON, or NULL without a changeKey. */
char *caldav_event_etag(const json_t *event);

/* Whether an If-Match or If-None-Match list names etag (strong
 * comparison: a weak entry never matches) or is "*". */
bool caldav_etag_listed(const char *list, const char *etag);

/* text percent-encoded for a URL path segment. free() it. */
char *caldav_escape(const char *text);

/* The hrefs of a user's resources; each is a new string (free()). */
char *caldav_href_principal(const char *address);
char *caldav_href_home(const char *address);
char *caldav_href_calendar(const char *address);
char *caldav_href_outbox(const char *address);
char *caldav_href_object(const char *address, const char *name);

/* ---- Graph (caldav_graph.c) -------------------------------------------- */

/* Sends a Graph request as the user r names, asking for immutable ids;
 * body (JSON, or NULL) is copied, if_match (or NULL) guards a write. done
 * is called with r on the loop. */
void caldav_graph(struct caldav_req *r, const char *method, const char *path,
                  const json_t *body, const char *if_match, graph_done_cb done);

/* Answers a Graph failure with the closest CalDAV status. */
void caldav_graph_failed(struct caldav_req *r,
                         const struct graph_response *resp);

/* The JSON body of a Graph answer, or NULL. json_decref() it. */
json_t *caldav_json(const struct graph_response *resp);

/* Follows a listing page's @odata.nextLink with a GET answered by done,
 * unless *pages has reached max (it counts the pages followed). Returns
 * true when a request was sent; page stays the caller's. */
bool caldav_graph_next_page(struct caldav_req *r, const json_t *page,
                            unsigned *pages, unsigned max, graph_done_cb done);

/* The Graph path of one of the user's events, with suffix ("" for none)
 * appended. free() it. */
char *caldav_event_path(const char *address, const char *event_id,
                        const char *suffix);

/* Loads event_id into r->ld and calls then(r, found) on the loop; found is
 * false when Graph no longer has the event. Other Graph failures are
 * answered here, then is not called. The client-scheduled attendees the
 * mapping remembers for event_id are read first, for the ETag and the
 * calendar object. */
void caldav_load(struct caldav_req *r, const char *event_id,
                 caldav_loaded_cb then);

/* Fills r->ld with event_id's event as a listing already gave it, without
 * a Graph call, when that is the whole object: an event that is not a
 * series. Returns true when it did, false when caldav_load() is needed. */
bool caldav_load_given(struct caldav_req *r, const char *event_id,
                       json_t *event);

/* Frees what ld holds and zeroes it. */
void caldav_load_reset(struct caldav_load *ld);

/* The calendar object of what r->ld holds, with uid; NULL with a sentence
 * in err. free() it. */
char *caldav_load_ical(struct caldav_req *r, const char *uid, char *err,
                       size_t errsize);

/* A UTC time as "2030-03-04T08:00:00Z", and Graph's
 * "2030-03-04T08:00:00[.0000000][Z]" read back as a UTC time (false when
 * text is not one). */
void caldav_format_utc(time_t t, char *out, size_t size);
bool caldav_parse_utc(const char *text, time_t *out);

/* ---- mailbox zones (caldav_object.c) ----------------------------------- */

/* The zone read for address less than CALDAV_ZONE_TTL_MS before now_ms
 * (monotonic milliseconds), or NULL. The string belongs to zones and lasts
 * until the next caldav_zones_put(). */
const char *caldav_zones_get(const struct caldav_zones *zones,
                             const char *address, int64_t now_ms);

/* Keeps zone for address from now_ms on, in its own slot, a free or
 * expired one, or else the one that expires first. */
void caldav_zones_put(struct caldav_zones *zones, const char *address,
                      const char *zone, int64_t now_ms);

/* ---- the methods ------------------------------------------------------- */

/* Each answers the request and frees it, now or once Graph has answered. */
void caldav_put(struct caldav_req *r);           /* caldav_object.c */
void caldav_object_method(struct caldav_req *r); /* GET, HEAD, DELETE */
void caldav_propfind(struct caldav_req *r);      /* caldav_propfind.c */
void caldav_report(struct caldav_req *r);        /* caldav_report.c */
void caldav_outbox_post(struct caldav_req *r);   /* caldav_outbox.c */

/* getSchedule takes windows shorter than 62 days (graph-api.md 3.8,
 * learn.microsoft.com/graph/api/calendar-getschedule); a longer one is
 * refused before Graph is asked, with this sentence. */
#define CALDAV_FREEBUSY_SPAN_MAX_S (62 * 86400 - 1)
#define CALDAV_FREEBUSY_SPAN_TEXT                                              \
  "a free/busy window must be shorter than 62 days (Microsoft Graph's "        \
  "getSchedule limit)"

/* Asks Graph's getSchedule for attendees (a JSON array of addresses)
 * over [start, end) in one call; done gets Graph's answer. */
void caldav_get_schedule(struct caldav_req *r, const json_t *attendees,
                         time_t start, time_t end, graph_done_cb done);

#endif
