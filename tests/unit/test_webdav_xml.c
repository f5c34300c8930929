/* SPDX-License-Identifier: MIT */
/* WebDAV XML: hostile bodies refused, property requests listed, and the
 * multistatus we write read back with libxml2's XPath. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "webdav_xml.h"

static int parse(const char *text, struct webdav_request **out)
{
  return webdav_request_parse(text, strlen(text), out);
}

static void test_xxe_refused(void **state)
{
  static const char xxe[]
      = "<?xml version=\"1.0\"?>\n"
        "<!DOCTYPE d [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n"
        "<D:propfind xmlns:D=\"DAV:\"><D:prop><D:displayname>&xxe;"
        "</D:displayname></D:prop></D:propfind>";
  static const char laughs[]
      = "<!DOCTYPE d [<!ENTITY a \"aaaaaaaaaa\">"
        "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">"
        "<!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]>"
        "<D:propfind xmlns:D=\"DAV:\"><D:prop><D:x>&c;</D:x></D:prop>"
        "</D:propfind>";
  static const char external[]
      = "<!DOCTYPE D:propfind SYSTEM \"http://127.0.0.1:1/evil.dtd\">"
        "<D:propfind xmlns:D=\"DAV:\"><D:allprop/></D:propfind>";
  struct webdav_request *req = NULL;

  (void) state;
  assert_int_equal(parse(xxe, &req), -EPERM);
  assert_int_equal(parse(laughs, &req), -EPERM);
  assert_int_equal(parse(external, &req), -EPERM);
  assert_null(req);
}

static void test_malformed_refused(void **state)
{
  struct webdav_request *req = NULL;

  (void) state;
  assert_int_equal(parse("<D:propfind xmlns:D=\"DAV:\">", &req), -EINVAL);
  assert_int_equal(parse("not xml at all", &req), -EINVAL);
  /* An entity reference with nothing to define it. */
  assert_int_equal(
      parse("<D:propfind xmlns:D=\"DAV:\">&xxe;</D:propfind>", &req), -EINVAL);
  assert_null(req);
}

static double ms_since(const struct timespec *t0)
{
  struct timespec t1;

  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double) (t1.tv_sec - t0->tv_sec) * 1e3
         + (double) (t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* A propfind whose <D:prop> carries n namespace declarations, or n
 * attributes. */
static char *flood(size_t n, bool namespaces)
{
  size_t cap = n * 32 + 256, len = 0;
  char *text = malloc(cap);

  assert_non_null(text);
  len += (size_t) snprintf(text, cap, "<D:propfind xmlns:D=\"DAV:\"><D:prop");
  for (size_t i = 0; i < n; i++)
    len += (size_t) snprintf(
        text + len, cap - len,
        namespaces ? " xmlns:n%zu=\"urn:x\"" : " a%zu=\"v\"", i);
  snprintf(text + len, cap - len, "><D:getetag/></D:prop></D:propfind>");
  return text;
}

/* libxml2's work on namespaces and attributes grows with their square, so
 * 100,000 of them must be refused before libxml2 reads them, at once. */
static void test_floods_refused_quickly(void **state)
{
  struct webdav_request *req = NULL;
  struct timespec t0;
  char *text;

  text = flood(100000, true);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(parse(text, &req), WEBDAV_ENAMESPACES);
  assert_true(ms_since(&t0) < 200);
  free(text);

  text = flood(100000, false);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(parse(text, &req), WEBDAV_EATTRIBUTES);
  assert_true(ms_since(&t0) < 200);
  free(text);

  /* Up to the limits, a tag is read. */
  text = flood(WEBDAV_MAX_NAMESPACES - 1, true);
  assert_int_equal(parse(text, &req), 0);
  assert_int_equal(req->nprops, 1);
  webdav_request_free(req);
  free(text);
}

/* Declarations that stay in scope add up across elements. */
static void test_namespaces_in_scope_counted(void **state)
{
  char text[8192];
  size_t len = 0;
  struct webdav_request *req = NULL;

  len += (size_t) snprintf(text, sizeof(text), "<D:propfind xmlns:D=\"DAV:\">");
  for (int level = 0; level < 8; level++) {
    len += (size_t) snprintf(text + len, sizeof(text) - len, "<D:x");
    for (int i = 0; i < 10; i++)
      len += (size_t) snprintf(text + len, sizeof(text) - len,
                               " xmlns:n%d_%d=\"urn:x\"", level, i);
    len += (size_t) snprintf(text + len, sizeof(text) - len, ">");
  }
  for (int level = 0; level < 8; level++)
    len += (size_t) snprintf(text + len, sizeof(text) - len, "</D:x>");
  snprintf(text + len, sizeof(text) - len, "</D:propfind>");
  assert_int_equal(parse(text, &req), WEBDAV_ENAMESPACES);
}

static char *nested(int depth)
{
  size_t cap = (size_t) depth * 16 + 64, len = 0;
  char *text = malloc(cap);

  assert_non_null(text);
  len += (size_t) snprintf(text, cap, "<D:propfind xmlns:D=\"DAV:\">");
  for (int i = 1; i < depth; i++)
    len += (size_t) snprintf(text + len, cap - len, "<D:x>");
  for (int i = 1; i < depth; i++)
    len += (size_t) snprintf(text + len, cap - len, "</D:x>");
  snprintf(text + len, cap - len, "</D:propfind>");
  return text;
}

static void test_depth_and_elements_bounded(void **state)
{
  struct webdav_request *req = NULL;
  size_t cap = (WEBDAV_MAX_ELEMENTS + 1) * 8 + 64, len = 0;
  char *text;

  text = nested(WEBDAV_MAX_DEPTH);
  assert_int_equal(parse(text, &req), 0);
  webdav_request_free(req);
  free(text);
  text = nested(WEBDAV_MAX_DEPTH + 1);
  assert_int_equal(parse(text, &req), WEBDAV_EDEPTH);
  free(text);
  /* Deeper than libxml2's own limit (256) is still "too deep". */
  text = nested(1000);
  assert_int_equal(parse(text, &req), WEBDAV_EDEPTH);
  free(text);

  text = malloc(cap);
  assert_non_null(text);
  len += (size_t) snprintf(text, cap, "<D:propfind xmlns:D=\"DAV:\">");
  for (size_t i = 0; i < WEBDAV_MAX_ELEMENTS; i++)
    len += (size_t) snprintf(text + len, cap - len, "<D:x/>");
  snprintf(text + len, cap - len, "</D:propfind>");
  assert_int_equal(parse(text, &req), WEBDAV_EELEMENTS);
  free(text);
}

/* The largest REPORT the agent answers: a calendar-multiget of 2000
 * hrefs, here each declaring the DAV: namespace itself. */
static void test_large_multiget_read(void **state)
{
  size_t cap = 2000 * 128 + 512, len = 0;
  char *text = malloc(cap);
  struct webdav_request *req = NULL;
  size_t hrefs = 0;

  assert_non_null(text);
  len += (size_t) snprintf(
      text, cap,
      "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
      "<C:calendar-multiget xmlns:C=\"urn:ietf:params:xml:ns:caldav\">"
      "<prop xmlns=\"DAV:\"><getetag/><C:calendar-data/></prop>");
  for (int i = 0; i < 2000; i++)
    len += (size_t) snprintf(text + len, cap - len,
                             "\n<href xmlns=\"DAV:\">/dav/calendars/"
                             "alice%%40contoso.example/default/%d.ics</href>",
                             i);
  snprintf(text + len, cap - len, "</C:calendar-multiget>");
  assert_int_equal(parse(text, &req), 0);
  assert_int_equal(req->nprops, 2);
  for (xmlNodePtr c = req->root->children; c != NULL; c = c->next)
    hrefs += webdav_node_is(c, "DAV:", "href");
  assert_int_equal(hrefs, 2000);
  webdav_request_free(req);
  free(text);
}

/* Bodies are read as UTF-8 (the guards count its bytes): an encoding
 * declaration is ignored, and UTF-16 is refused. */
static void test_read_as_utf8(void **state)
{
  static const char utf16[] = "<\0D\0:\0p\0/\0>\0";
  struct webdav_request *req = NULL;

  assert_int_equal(parse("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>"
                         "<D:propfind xmlns:D=\"DAV:\"><D:prop><D:displayname/>"
                         "</D:prop></D:propfind>",
                         &req),
                   0);
  assert_string_equal(req->props[0].name, "displayname");
  webdav_request_free(req);
  assert_int_equal(parse("\xEF\xBB\xBF<D:propfind xmlns:D=\"DAV:\">"
                         "<D:allprop/></D:propfind>",
                         &req),
                   0);
  assert_int_equal(req->kind, WEBDAV_PROPFIND_ALLPROP);
  webdav_request_free(req);
  assert_int_equal(webdav_request_parse(utf16, sizeof(utf16) - 1, &req),
                   -EINVAL);
  assert_int_equal(parse("\x4C\x6F\xA7\x94", &req), -EINVAL);
}

static void test_allprop_and_empty(void **state)
{
  struct webdav_request *req = NULL;

  (void) state;
  assert_int_equal(
      parse("<propfind xmlns=\"DAV:\"><allprop/></propfind>", &req), 0);
  assert_int_equal(req->kind, WEBDAV_PROPFIND_ALLPROP);
  assert_string_equal(req->root_ns, "DAV:");
  assert_string_equal(req->root_name, "propfind");
  webdav_request_free(req);

  assert_int_equal(webdav_request_parse("", 0, &req), 0);
  assert_int_equal(req->kind, WEBDAV_PROPFIND_ALLPROP);
  assert_null(req->doc);
  webdav_request_free(req);

  assert_int_equal(
      parse("<D:propfind xmlns:D=\"DAV:\"><D:propname/></D:propfind>", &req),
      0);
  assert_int_equal(req->kind, WEBDAV_PROPFIND_PROPNAME);
  webdav_request_free(req);
}

static void test_prop_list(void **state)
{
  static const char body[]
      = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
        "<C:calendar-query xmlns:D=\"DAV:\" "
        "xmlns:C=\"urn:ietf:params:xml:ns:caldav\">\n"
        "  <D:prop>\n"
        "    <D:getetag/>\n"
        "    <C:calendar-data/>\n"
        "    <CS:getctag xmlns:CS=\"http://calendarserver.org/ns/\"/>\n"
        "    <plain/>\n"
        "  </D:prop>\n"
        "  <C:filter><C:comp-filter name=\"VCALENDAR\"/></C:filter>\n"
        "</C:calendar-query>";
  struct webdav_request *req = NULL;

  (void) state;
  assert_int_equal(parse(body, &req), 0);
  assert_string_equal(req->root_ns, WEBDAV_NS_CALDAV);
  assert_string_equal(req->root_name, "calendar-query");
  assert_int_equal(req->kind, WEBDAV_PROPFIND_PROP);
  assert_int_equal(req->nprops, 4);
  assert_string_equal(req->props[0].ns, WEBDAV_NS_DAV);
  assert_string_equal(req->props[0].name, "getetag");
  assert_string_equal(req->props[1].ns, WEBDAV_NS_CALDAV);
  assert_string_equal(req->props[1].name, "calendar-data");
  assert_string_equal(req->props[2].ns, WEBDAV_NS_CALSERVER);
  assert_string_equal(req->props[2].name, "getctag");
  assert_string_equal(req->props[3].ns, "");
  assert_string_equal(req->props[3].name, "plain");
  assert_non_null(webdav_node_child(req->root, WEBDAV_NS_CALDAV, "filter"));
  assert_null(webdav_node_child(req->root, WEBDAV_NS_DAV, "filter"));
  webdav_request_free(req);
}

static void test_prop_namespace_not_a_uri(void **state)
{
  struct webdav_request *req = NULL;

  (void) state;
  assert_int_equal(parse("<D:propfind xmlns:D=\"DAV:\"><D:prop>"
                         "<Y:bar xmlns:Y=\"urn:y&amp;&lt;z\"/>"
                         "</D:prop></D:propfind>",
                         &req),
                   -EINVAL);
  assert_null(req);
}

/* Evaluates expr on doc and returns its string value (caller frees). */
static char *xpath_string(xmlDocPtr doc, const char *expr)
{
  xmlXPathContextPtr ctx = xmlXPathNewContext(doc);
  xmlXPathObjectPtr obj;
  char *value;

  xmlXPathRegisterNs(ctx, (const xmlChar *) "d", (const xmlChar *) "DAV:");
  xmlXPathRegisterNs(ctx, (const xmlChar *) "c",
                     (const xmlChar *) WEBDAV_NS_CALDAV);
  xmlXPathRegisterNs(ctx, (const xmlChar *) "e",
                     (const xmlChar *) "urn:example:other");
  obj = xmlXPathEvalExpression((const xmlChar *) expr, ctx);
  assert_non_null(obj);
  value = (char *) xmlXPathCastToString(obj);
  xmlXPathFreeObject(obj);
  xmlXPathFreeContext(ctx);
  return value;
}

static void assert_xpath(xmlDocPtr doc, const char *expr, const char *want)
{
  char *got = xpath_string(doc, expr);

  if (strcmp(got, want) != 0)
    fail_msg("%s: got \"%s\", want \"%s\"", expr, got, want);
  xmlFree(got);
}

/* A property named in a namespace with '&' in it is answered in that
 * same namespace, in a well-formed document. */
static void test_prop_namespace_round_trip(void **state)
{
  struct webdav_request *req = NULL;
  struct webdav_multistatus *ms = webdav_multistatus_new();
  char *text = NULL;
  size_t len = 0;
  xmlDocPtr doc;

  (void) state;
  assert_int_equal(parse("<D:propfind xmlns:D=\"DAV:\"><D:prop>"
                         "<Y:bar xmlns:Y=\"urn:y&amp;z\"/>"
                         "</D:prop></D:propfind>",
                         &req),
                   0);
  webdav_response_prop(webdav_multistatus_add(ms, "/x"), req->props[0].ns,
                       req->props[0].name, 404, NULL);
  assert_int_equal(webdav_multistatus_dump(ms, &text, &len), 0);
  doc = xmlReadMemory(text, (int) len, NULL, NULL, XML_PARSE_NONET);
  assert_non_null(doc);
  /* libxml2 keeps the character reference in a namespace name as it
   * was written, both reading and writing; a conforming reader of the
   * answer gets "urn:y&z" back. */
  assert_non_null(strstr(text, "=\"urn:y&#38;z\""));
  xmlFreeDoc(doc);
  free(text);
  webdav_multistatus_free(ms);
  webdav_request_free(req);
}

/* A namespace name that is no URI reference cannot be written back. */
static void test_multistatus_round_trip(void **state)
{
  struct webdav_multistatus *ms = webdav_multistatus_new();
  struct webdav_response *resp;
  xmlNodePtr node;
  xmlDocPtr doc;
  char *text = NULL;
  size_t len = 0;

  (void) state;
  resp = webdav_multistatus_add(ms, "/dav/u%40example.com/calendar/");
  webdav_response_prop(resp, WEBDAV_NS_DAV, "displayname", 200,
                       "Interviews <R&D>");
  node = webdav_response_prop(resp, WEBDAV_NS_DAV, "resourcetype", 200, NULL);
  webdav_node_add(resp, node, WEBDAV_NS_DAV, "collection", NULL);
  webdav_node_add(resp, node, WEBDAV_NS_CALDAV, "calendar", NULL);
  webdav_response_prop(resp, "urn:example:other", "color", 404, NULL);
  webdav_response_prop(resp, WEBDAV_NS_DAV, "quota-used-bytes", 404, NULL);
  webdav_response_prop(resp, "", "plain", 404, NULL);
  resp = webdav_multistatus_add(ms, "/dav/u%40example.com/calendar/gone.ics");
  webdav_response_set_status(resp, 404);

  assert_int_equal(webdav_multistatus_dump(ms, &text, &len), 0);
  assert_int_equal(strlen(text), len);
  doc = xmlReadMemory(text, (int) len, NULL, NULL, XML_PARSE_NONET);
  assert_non_null(doc);

  assert_xpath(doc, "count(/d:multistatus/d:response)", "2");
  assert_xpath(doc, "/d:multistatus/d:response[1]/d:href",
               "/dav/u%40example.com/calendar/");
  assert_xpath(doc, "count(/d:multistatus/d:response[1]/d:propstat)", "2");
  assert_xpath(doc,
               "/d:multistatus/d:response[1]/d:propstat[d:status="
               "'HTTP/1.1 200 OK']/d:prop/d:displayname",
               "Interviews <R&D>");
  assert_xpath(doc,
               "count(/d:multistatus/d:response[1]/d:propstat[d:status="
               "'HTTP/1.1 200 OK']/d:prop/d:resourcetype/c:calendar)",
               "1");
  assert_xpath(doc,
               "count(/d:multistatus/d:response[1]/d:propstat[d:status="
               "'HTTP/1.1 404 Not Found']/d:prop/*)",
               "3");
  /* A property in no namespace stays in none, not in DAV:. */
  assert_xpath(doc,
               "count(/d:multistatus/d:response[1]/d:propstat[d:status="
               "'HTTP/1.1 404 Not Found']/d:prop/*[local-name()='plain' "
               "and namespace-uri()=''])",
               "1");

  assert_xpath(doc,
               "count(/d:multistatus/d:response[1]/d:propstat[d:status="
               "'HTTP/1.1 404 Not Found']/d:prop/e:color)",
               "1");
  assert_xpath(doc, "/d:multistatus/d:response[2]/d:status",
               "HTTP/1.1 404 Not Found");
  assert_xpath(doc, "count(/d:multistatus/d:response[2]/d:propstat)", "0");
  /* Clients look for the usual prefixes. */
  assert_non_null(strstr(text, "<D:multistatus xmlns:D=\"DAV:\""));
  assert_non_null(strstr(text, "xmlns:C=\"urn:ietf:params:xml:ns:caldav\""));

  xmlFreeDoc(doc);
  free(text);
  webdav_multistatus_free(ms);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_xxe_refused),
    cmocka_unit_test(test_malformed_refused),
    cmocka_unit_test(test_floods_refused_quickly),
    cmocka_unit_test(test_namespaces_in_scope_counted),
    cmocka_unit_test(test_depth_and_elements_bounded),
    cmocka_unit_test(test_large_multiget_read),
    cmocka_unit_test(test_read_as_utf8),
    cmocka_unit_test(test_allprop_and_empty),
    cmocka_unit_test(test_prop_list),
    cmocka_unit_test(test_prop_namespace_not_a_uri),
    cmocka_unit_test(test_prop_namespace_round_trip),
    cmocka_unit_test(test_multistatus_round_trip),
  };
  int rc;

  rc = cmocka_run_group_tests(tests, NULL, NULL);
  xmlCleanupParser();
  return rc;
}
