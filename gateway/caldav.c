/* SPDX-License-Identifier: MIT */
/* CalDAV over the agent's HTTP listener (see include/caldav.h): the
 * request's life from authentication, path and policy to the method
 * handlers of caldav_object.c, caldav_propfind.c, caldav_report.c and
 * caldav_outbox.c, and the answers and hrefs they share. */
#include "caldav.h"

#include <curl/curl.h>
#include <errno.h>
#include <libxml/tree.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "caldav_request.h"
#include "log.h"
#include "policy.h"
#include "webdav_xml.h"
#include "xalloc.h"

#define CALDAV_NS_NEXTAL "https://nextal.example/ns"
#define CALDAV_WELL_KNOWN "/.well-known/caldav"
#define CALDAV_CALENDAR_NAME "default"
#define CALDAV_OUTBOX_NAME "outbox"
#define CALDAV_SEGMENTS_MAX 5     /* below /dav: calendars/addr/default/name */
#define CALDAV_CREDENTIAL_MAX 256 /* user and password of Basic auth */

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
    json_decref(r->items[i].view);
  }
  free(r->items);
  free(r);
}

void caldav_finish(struct caldav_req *r, int status, const char *const *headers,
                   const char *body, size_t len)
{
  log_trace(LOG_TRACE_CALDAV, "%s caldav answer method=%s status=%d",
            http_exchange_request(r->ex)->conn_id, r->method, status);
  http_exchange_respond(r->ex, status, headers, body != NULL ? body : "", len);
  caldav_req_free(r);
}

#define CALDAV_STR(x) CALDAV_STR_(x)
#define CALDAV_STR_(x) #x

_Static_assert(CALDAV_XML_BODY_MAX == 2951536,
               "the size docs/caldav.md and caldav_request.h give");
_Static_assert(WEBDAV_MAX_ELEMENTS > CALDAV_OBJECTS_MAX + WEBDAV_MAX_PROPS + 64,
               "a full calendar-multiget is readable");

const char *caldav_xml_error(int rc, const char *method)
{
  switch (rc) {
    case -EPERM:
      return "DOCTYPE is not allowed";
    case -E2BIG:
      return "the request names more properties than the agent answers "
             "(" CALDAV_STR(WEBDAV_MAX_PROPS) ")";
    case WEBDAV_EDEPTH:
      return "the XML body is nested too deep: more than " CALDAV_STR(
          WEBDAV_MAX_DEPTH) " elements inside one another";
    case WEBDAV_EELEMENTS:
      return "the XML body has too many elements: more than " CALDAV_STR(
          WEBDAV_MAX_ELEMENTS);
    case WEBDAV_ENAMESPACES:
      return "the XML body declares too many namespaces: more than " CALDAV_STR(
          WEBDAV_MAX_NAMESPACES) " in scope at one element";
    case WEBDAV_EATTRIBUTES:
      return "the XML body has an element with too many attributes: more "
             "than " CALDAV_STR(WEBDAV_MAX_ATTRIBUTES);
    default:
      return strcmp(method, "REPORT") == 0
                 ? "the REPORT body is not valid XML (in UTF-8)"
                 : "the PROPFIND body is not valid XML (in UTF-8)";
  }
}

bool caldav_body_fits(struct caldav_req *r, size_t max)
{
  char *text;

  if (http_exchange_request(r->ex)->body_len <= max)
    return true;
  text = xasprintf("the %s body is larger than %zu bytes, the most the agent "
                   "reads for it",
                   r->method, max);
  log_warn("%s caldav body_too_large method=%s bytes=%zu peer=%s",
           http_exchange_request(r->ex)->conn_id, r->method,
           http_exchange_request(r->ex)->body_len,
           http_exchange_request(r->ex)->peer);
  caldav_text(r, 413, text);
  free(text);
  return false;
}

void caldav_text(struct caldav_req *r, int status, const char *text)
{
  static const char *const headers[]
      = { "Content-Type: text/plain; charset=utf-8", NULL };

  caldav_finish(r, status, headers, text, strlen(text));
}

void caldav_store_failed(struct caldav_req *r, const char *text)
{
  static const char *const headers[]
      = { "Content-Type: text/plain; charset=utf-8", "Retry-After: 5", NULL };

  caldav_finish(r, 503, headers, text, strlen(text));
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

void caldav_not_allowed(struct caldav_req *r)
{
  static const char text[] = "method not supported here";
  const char *headers[] = { caldav_allow(r->kind),
                            "Content-Type: text/plain; charset=utf-8", NULL };

  caldav_finish(r, 405, headers, text, sizeof(text) - 1);
}

void caldav_error_tagged(struct caldav_req *r, int status, const char *ns,
                         const char *name, const char *tag, const char *text)
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

void caldav_error(struct caldav_req *r, int status, const char *ns,
                  const char *name, const char *text)
{
  caldav_error_tagged(r, status, ns, name, "message", text);
}

char *caldav_event_etag(const json_t *event)
{
  const char *ck = json_string_value(json_object_get(event, "changeKey"));

  return ck != NULL && ck[0] != '\0' ? caldav_etag(ck) : NULL;
}

bool caldav_etag_listed(const char *list, const char *etag)
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

char *caldav_escape(const char *text)
{
  char *esc = curl_easy_escape(NULL, text, 0);
  char *copy;

  if (esc == NULL)
    abort(); /* curl fails only when out of memory */
  copy = xstrdup(esc);
  curl_free(esc);
  return copy;
}

char *caldav_href_principal(const char *address)
{
  return xasprintf(CALDAV_PREFIX "/principals/%s/", address);
}

char *caldav_href_home(const char *address)
{
  return xasprintf(CALDAV_PREFIX "/calendars/%s/", address);
}

char *caldav_href_calendar(const char *address)
{
  return xasprintf(CALDAV_PREFIX "/calendars/%s/" CALDAV_CALENDAR_NAME "/",
                   address);
}

char *caldav_href_outbox(const char *address)
{
  return xasprintf(CALDAV_PREFIX "/calendars/%s/" CALDAV_OUTBOX_NAME "/",
                   address);
}

char *caldav_href_object(const char *address, const char *name)
{
  char *esc = caldav_escape(name);
  char *href = xasprintf(
      CALDAV_PREFIX "/calendars/%s/" CALDAV_CALENDAR_NAME "/%s", address, esc);

  free(esc);
  return href;
}

void caldav_multistatus_send(struct caldav_req *r)
{
  static const char *const headers[]
      = { "Content-Type: application/xml; charset=utf-8", NULL };
  char *out = NULL;
  size_t len = 0;

  webdav_multistatus_dump(r->ms, &out, &len);
  caldav_finish(r, 207, headers, out, len);
  free(out);
}

void caldav_item_add(struct caldav_req *r, char *href, struct caldav_row *row,
                     bool found)
{
  struct caldav_item *item;

  r->items = xrealloc(r->items, (r->nitems + 1) * sizeof(*r->items));
  item = &r->items[r->nitems++];
  item->href = href;
  item->found = found;
  item->view = NULL;
  if (found) {
    item->row = *row;
    memset(row, 0, sizeof(*row));
  } else {
    memset(&item->row, 0, sizeof(item->row));
  }
}

/* Splits the path below /dav into r->kind, r->address and r->name.
 * Returns 0, -EINVAL for a malformed percent escape (or an escaped NUL),
 * or -ENOENT for a path that names nothing. */
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
    if (nseg == CALDAV_SEGMENTS_MAX)
      goto out;
    if (http_percent_decode(p, (size_t) (end - p), 0, &decoded[nseg]) < 0) {
      rc = -EINVAL;
      goto out;
    }
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

/* RFC 4918 10.2: Depth is "0", "1" or "infinity"; PROPFIND and REPORT
 * refuse anything else rather than guess. Absent is infinity. */
static bool caldav_depth_valid(const struct caldav_req *r)
{
  const char *depth = http_exchange_header(r->ex, "Depth");

  return depth == NULL || strcmp(depth, "0") == 0 || strcmp(depth, "1") == 0
         || strcasecmp(depth, "infinity") == 0;
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
  int rc;

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
  rc = caldav_parse_path(r, hreq->path);
  if (rc == -EINVAL) {
    caldav_text(r, 400,
                "the path has a malformed percent escape (a '%' must be "
                "followed by two hexadecimal digits, and %00 is not allowed)");
    return;
  }
  if (rc < 0) {
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
  if ((strcmp(m, "PROPFIND") == 0 || strcmp(m, "REPORT") == 0)
      && !caldav_depth_valid(r)) {
    caldav_text(r, 400,
                "the Depth header must be 0, 1 or infinity (a PROPFIND "
                "refuses infinity with 403 propfind-finite-depth; no Depth "
                "is served as 1)");
    return;
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
