/* SPDX-License-Identifier: MIT */
/* The CalDAV endpoint on a real loop, listener, database and policy file,
 * for everything it decides before Graph is called: authentication, the
 * policy refusal, discovery, OPTIONS, and refused calendar data. A curl
 * client on its own thread sends the requests; Graph calls are end to end
 * in tests/scenarios/caldav_events.py. */
#include <curl/curl.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include <cmocka.h>

#include "caldav.h"
#include "caldav_objects.h"
#include "caldav_request.h"
#include "credential.h"
#include "http_router.h"
#include "http_server.h"
#include "links.h"
#include "policy_gate.h"
#include "store.h"

#define ALICE "alice@contoso.example"
#define CAL "/dav/calendars/" ALICE "/default/"
#define MAX_EXCHANGES 40
#define CAPTURE_MAX (256 * 1024)

/* One request the client thread sends and what came back. */
struct exchange {
  const char *method;
  const char *path;
  const char *userpwd; /* NULL: no Authorization */
  const char *headers[4];
  const char *body;
  long status;
  char head[8192];
  char *answer;
  size_t answer_len;
};

struct fixture {
  char dir[64];
  char db[128];
  char policy[128];
  uv_loop_t loop;
  uv_async_t done;
  struct store *store;
  struct policy_gate *gate;
  struct credential *cred;
  struct http_router *router;
  struct http_server *server;
  struct caldav_deps deps;
  int port;
  struct exchange ex[MAX_EXCHANGES];
  size_t nex;
};

static size_t on_head(char *data, size_t size, size_t n, void *arg)
{
  struct exchange *e = arg;
  size_t have = strlen(e->head);
  size_t len = size * n;

  if (have + len < sizeof(e->head)) {
    memcpy(e->head + have, data, len);
    e->head[have + len] = '\0';
  }
  return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
  struct exchange *e = arg;
  size_t len = size * n;

  if (e->answer_len + len > CAPTURE_MAX)
    return 0;
  e->answer = realloc(e->answer, e->answer_len + len + 1);
  memcpy(e->answer + e->answer_len, data, len);
  e->answer_len += len;
  e->answer[e->answer_len] = '\0';
  return len;
}

/* Runs on the client thread: every exchange in turn, then wakes the loop. */
static void client_thread(void *arg)
{
  struct fixture *f = arg;

  for (size_t i = 0; i < f->nex; i++) {
    struct exchange *e = &f->ex[i];
    CURL *c = curl_easy_init();
    struct curl_slist *list = NULL;
    char url[512];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", f->port, e->path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, e->method);
    if (e->userpwd != NULL) {
      curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
      curl_easy_setopt(c, CURLOPT_USERPWD, e->userpwd);
    }
    for (size_t h = 0; h < 4 && e->headers[h] != NULL; h++)
      list = curl_slist_append(list, e->headers[h]);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    if (e->body != NULL)
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, e->body);
    if (strcmp(e->method, "HEAD") == 0)
      curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_head);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, e);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, e);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    if (curl_easy_perform(c) == CURLE_OK)
      curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &e->status);
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
  }
  uv_async_send(&f->done);
}

static void on_done(uv_async_t *async)
{
  uv_stop(async->loop);
}

static struct exchange *add(struct fixture *f, const char *method,
                            const char *path, const char *body)
{
  struct exchange *e = &f->ex[f->nex++];

  assert_true(f->nex <= MAX_EXCHANGES);
  e->method = method;
  e->path = path;
  e->body = body;
  e->userpwd = "nextal:s3cret";
  return e;
}

/* Sends every queued exchange while the loop serves them. */
static void run(struct fixture *f)
{
  uv_thread_t thread;

  assert_int_equal(uv_thread_create(&thread, client_thread, f), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_thread_join(&thread), 0);
}

static const char *answer(const struct exchange *e)
{
  return e->answer != NULL ? e->answer : "";
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  char err[256];
  char *hash = NULL;
  FILE *fp;

  snprintf(f->dir, sizeof(f->dir), "/tmp/test_caldav_XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->db, sizeof(f->db), "%s/agent.db", f->dir);
  snprintf(f->policy, sizeof(f->policy), "%s/policy.ini", f->dir);
  fp = fopen(f->policy, "w");
  assert_non_null(fp);
  fputs("[integration]\nenabled = true\nmode = all\n", fp);
  fclose(fp);
  assert_int_equal(store_open(f->db, &f->store, err, sizeof(err)), 0);
  assert_int_equal(tenant_consent_record(f->store, true, "t1", NULL), 0);
  assert_int_equal(links_set_linked(f->store, ALICE, "id-a", "Alice"), 0);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  assert_int_equal(uv_async_init(&f->loop, &f->done, on_done), 0);
  assert_int_equal(
      policy_gate_new(&f->loop, f->store, f->policy, NULL, NULL, &f->gate), 0);
  assert_int_equal(credential_hash("s3cret", &hash), 0);
  assert_int_equal(credential_new("nextal", hash, &f->cred), 0);
  free(hash);
  /* Nothing tested here reaches Graph: a call would crash on NULL. */
  f->deps = (struct caldav_deps){ .store = f->store,
                                  .graph = NULL,
                                  .gate = f->gate,
                                  .credential = f->cred,
                                  .zones = caldav_zones_new() };
  f->router = http_router_new();
  assert_int_equal(caldav_register(f->router, &f->deps), 0);
  assert_int_equal(http_server_new(&f->loop, "127.0.0.1", 0, NULL,
                                   http_router_dispatch, f->router, &f->server),
                   0);
  f->port = http_server_port(f->server);
  assert_true(f->port > 0);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  char cmd[128];

  http_server_close(f->server);
  policy_gate_close(f->gate);
  uv_close((uv_handle_t *) &f->done, NULL);
  while (uv_loop_alive(&f->loop))
    uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  http_router_free(f->router);
  caldav_zones_free(f->deps.zones);
  credential_free(f->cred);
  store_close(f->store);
  for (size_t i = 0; i < f->nex; i++)
    free(f->ex[i].answer);
  snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
  assert_int_equal(system(cmd), 0);
  free(f);
  return 0;
}

static void test_authentication(void **state)
{
  struct fixture *f = *state;
  struct exchange *none = add(f, "PROPFIND", CAL, NULL);
  struct exchange *wrong = add(f, "PROPFIND", CAL, NULL);
  struct exchange *user = add(f, "PROPFIND", CAL, NULL);

  none->userpwd = NULL;
  wrong->userpwd = "nextal:guess";
  user->userpwd = "someone:s3cret";
  run(f);
  assert_int_equal(none->status, 401);
  assert_non_null(
      strstr(none->head, "WWW-Authenticate: Basic realm=\"nextal\""));
  assert_int_equal(wrong->status, 401);
  assert_int_equal(user->status, 401);
}

static void test_policy_refusal_names_the_reason(void **state)
{
  struct fixture *f = *state;
  struct exchange *bob
      = add(f, "PROPFIND", "/dav/calendars/bob@contoso.example/", NULL);
  struct exchange *bad = add(f, "GET", "/dav/principals/not-an-address/", NULL);

  run(f);
  assert_int_equal(bob->status, 403);
  assert_non_null(strstr(answer(bob), "<D:error xmlns:D=\"DAV:\">"));
  assert_non_null(strstr(answer(bob), "<D:need-privileges/>"));
  assert_non_null(strstr(answer(bob), "user_not_linked: "));
  assert_int_equal(bad->status, 403);
  assert_non_null(strstr(answer(bad), "invalid_address"));
}

static void test_discovery(void **state)
{
  struct fixture *f = *state;
  struct exchange *wk = add(f, "GET", "/.well-known/caldav", NULL);
  struct exchange *opt = add(f, "OPTIONS", CAL, NULL);
  struct exchange *outbox
      = add(f, "OPTIONS", "/dav/calendars/" ALICE "/outbox/", NULL);
  struct exchange *principal = add(
      f, "PROPFIND", "/dav/principals/alice%40contoso.example/",
      "<D:propfind xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">"
      "<D:prop><D:current-user-principal/><C:calendar-home-set/>"
      "<C:schedule-outbox-URL/><D:resourcetype/><D:nothing-like-this/>"
      "</D:prop></D:propfind>");
  struct exchange *home
      = add(f, "PROPFIND", "/dav/calendars/" ALICE "/",
            "<D:propfind xmlns:D=\"DAV:\"><D:prop><D:resourcetype/>"
            "</D:prop></D:propfind>");
  struct exchange *calendar
      = add(f, "PROPFIND", CAL,
            "<D:propfind xmlns:D=\"DAV:\"><D:prop><D:displayname/>"
            "</D:prop></D:propfind>");

  principal->headers[0] = "Depth: 0";
  home->headers[0] = "Depth: 1";
  calendar->headers[0] = "Depth: 0";
  run(f);
  assert_int_equal(wk->status, 301);
  assert_non_null(strstr(wk->head, "Location: /dav/"));
  assert_int_equal(opt->status, 200);
  assert_non_null(strstr(opt->head, "DAV: 1, 3, calendar-access"));
  assert_non_null(strstr(opt->head, "Allow: OPTIONS, PROPFIND, REPORT\r\n"));
  assert_non_null(strstr(outbox->head, "Allow: OPTIONS, POST, PROPFIND"));

  assert_int_equal(principal->status, 207);
  assert_non_null(strstr(
      answer(principal),
      "<D:current-user-principal><D:href>/dav/principals/" ALICE "/</D:href>"));
  assert_non_null(strstr(answer(principal),
                         "<C:calendar-home-set><D:href>/dav/calendars/" ALICE
                         "/</D:href>"));
  assert_non_null(strstr(answer(principal),
                         "<C:schedule-outbox-URL><D:href>/dav/calendars/" ALICE
                         "/outbox/</D:href>"));
  assert_non_null(strstr(answer(principal),
                         "<D:resourcetype><D:collection/><D:principal/>"));
  assert_non_null(strstr(answer(principal),
                         "<D:nothing-like-this/></D:prop><D:status>HTTP/1.1 "
                         "404 Not Found"));

  assert_int_equal(home->status, 207);
  assert_non_null(strstr(answer(home),
                         "<D:href>/dav/calendars/" ALICE "/default/</D:href>"
                         "<D:propstat><D:prop><D:resourcetype><D:collection/>"
                         "<C:calendar/>"));
  assert_int_equal(calendar->status, 207);
  assert_non_null(
      strstr(answer(calendar), "<D:displayname>Calendar</D:displayname>"));
}

static const char event_text[]
    = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
      "BEGIN:VEVENT\r\nUID:u1\r\nDTSTAMP:20300101T000000Z\r\n"
      "DTSTART:20300304T090000Z\r\nDTEND:20300304T100000Z\r\n"
      "SUMMARY:Interview\r\n%s"
      "END:VEVENT\r\nEND:VCALENDAR\r\n";

static struct exchange *put(struct fixture *f, const char *name,
                            const char *text)
{
  char *path;
  struct exchange *e;

  /* The path lives as long as the fixture: kept in a static ring. */
  static char paths[MAX_EXCHANGES][128];
  static size_t next;

  snprintf(paths[next % MAX_EXCHANGES], sizeof(paths[0]), CAL "%s", name);
  path = paths[next++ % MAX_EXCHANGES];
  e = add(f, "PUT", path, text);
  e->headers[0] = "Content-Type: text/calendar; charset=utf-8";
  return e;
}

static void test_refused_calendar_data(void **state)
{
  struct fixture *f = *state;
  static char method[1024], organizer[1024], hourly[1024], plain[1024];
  struct exchange *junk, *todo, *json, *meth, *org, *rrule, *ifmatch;

  snprintf(method, sizeof(method), "%s",
           "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
           "METHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:u2\r\n"
           "DTSTAMP:20300101T000000Z\r\nDTSTART:20300304T090000Z\r\n"
           "DTEND:20300304T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
  snprintf(organizer, sizeof(organizer), event_text,
           "ORGANIZER:mailto:someone@else.example\r\n");
  snprintf(hourly, sizeof(hourly), event_text, "RRULE:FREQ=HOURLY\r\n");
  snprintf(plain, sizeof(plain), event_text, "");

  junk = put(f, "junk.ics", "BEGIN:VCALENDAR\r\nnot iCalendar at all\r\n");
  todo = put(f, "todo.ics",
             "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
             "BEGIN:VTODO\r\nUID:t1\r\nDTSTAMP:20300101T000000Z\r\n"
             "END:VTODO\r\nEND:VCALENDAR\r\n");
  json = add(f, "PUT", CAL "json.ics", "{}");
  json->headers[0] = "Content-Type: application/json";
  meth = put(f, "method.ics", method);
  org = put(f, "organizer.ics", organizer);
  rrule = put(f, "hourly.ics", hourly);
  ifmatch = put(f, "u1.ics", plain);
  ifmatch->headers[1] = "If-Match: \"abc\"";
  run(f);

  assert_int_equal(junk->status, 403);
  assert_non_null(strstr(answer(junk), "<C:valid-calendar-data/>"));
  assert_int_equal(todo->status, 403);
  assert_non_null(strstr(answer(todo), "<C:supported-calendar-component/>"));
  assert_int_equal(json->status, 415);
  assert_non_null(strstr(answer(json), "<C:supported-calendar-data/>"));
  assert_int_equal(meth->status, 403);
  assert_non_null(strstr(answer(meth), "<C:valid-calendar-object-resource/>"));
  assert_int_equal(org->status, 403);
  assert_non_null(strstr(answer(org), "<C:same-organizer-in-all-components/>"));
  assert_int_equal(rrule->status, 403);
  assert_non_null(strstr(answer(rrule), "HOURLY"));
  /* If-Match on an object that does not exist fails before Graph. */
  assert_int_equal(ifmatch->status, 412);
}

static void test_wrong_places_and_methods(void **state)
{
  struct fixture *f = *state;
  struct exchange *nowhere
      = add(f, "PROPFIND", "/dav/calendars/" ALICE "/work/", NULL);
  struct exchange *missing = add(f, "GET", CAL "missing.ics", NULL);
  struct exchange *head = add(f, "HEAD", CAL "missing.ics", NULL);
  struct exchange *delcal = add(f, "DELETE", CAL, NULL);
  struct exchange *putcal = add(f, "PUT", CAL, "x");
  struct exchange *rootput = add(f, "PUT", "/dav/", "x");
  struct exchange *move = add(f, "MOVE", CAL "a.ics", NULL);
  struct exchange *doctype
      = add(f, "PROPFIND", CAL,
            "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e \"e\">]>"
            "<D:propfind xmlns:D=\"DAV:\"><D:allprop/></D:propfind>");
  struct exchange *report_home
      = add(f, "REPORT", "/dav/calendars/" ALICE "/",
            "<C:calendar-query xmlns:C=\"urn:ietf:params:xml:ns:caldav\"/>");
  struct exchange *report_other
      = add(f, "REPORT", CAL,
            "<D:sync-collection xmlns:D=\"DAV:\"><D:sync-token/>"
            "</D:sync-collection>");
  struct exchange *fb_organizer
      = add(f, "POST", "/dav/calendars/" ALICE "/outbox/",
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
            "METHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:f1\r\n"
            "DTSTAMP:20300101T000000Z\r\nDTSTART:20300304T000000Z\r\n"
            "DTEND:20300305T000000Z\r\nORGANIZER:mailto:bob@contoso.example\r\n"
            "ATTENDEE:mailto:carol@contoso.example\r\n"
            "END:VFREEBUSY\r\nEND:VCALENDAR\r\n");
  struct exchange *fb_nobody
      = add(f, "POST", "/dav/calendars/" ALICE "/outbox/",
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
            "METHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:f2\r\n"
            "DTSTAMP:20300101T000000Z\r\nDTSTART:20300304T000000Z\r\n"
            "DTEND:20300305T000000Z\r\nORGANIZER:mailto:" ALICE "\r\n"
            "END:VFREEBUSY\r\nEND:VCALENDAR\r\n");

  run(f);
  assert_int_equal(nowhere->status, 404);
  assert_int_equal(missing->status, 404);
  assert_int_equal(head->status, 404);
  assert_int_equal(delcal->status, 405);
  assert_non_null(strstr(delcal->head, "Allow: OPTIONS, PROPFIND, REPORT\r\n"));
  assert_int_equal(putcal->status, 405);
  assert_int_equal(rootput->status, 405);
  assert_int_equal(move->status, 405);
  assert_non_null(strstr(move->head, "Allow: OPTIONS, GET, HEAD, PUT, DELETE, "
                                     "PROPFIND\r\n"));
  assert_non_null(strstr(rootput->head, "Allow: OPTIONS, PROPFIND\r\n"));
  assert_int_equal(doctype->status, 400);
  assert_int_equal(report_home->status, 403);
  assert_non_null(strstr(answer(report_home), "<D:supported-report/>"));
  assert_int_equal(report_other->status, 403);
  assert_int_equal(fb_organizer->status, 403);
  assert_non_null(strstr(answer(fb_organizer), "<C:organizer-allowed/>"));
  assert_int_equal(fb_nobody->status, 403);
  assert_non_null(strstr(answer(fb_nobody), "<C:valid-scheduling-message/>"));
}

/* Impossible dates are refused before Graph (which the fixture does not
 * have: a call would crash), with the precondition and the property. */
static void test_impossible_dates_refused(void **state)
{
  struct fixture *f = *state;
  static char month[1024], year[1024], floating[1024];
  struct exchange *m, *y, *fl, *fb;

  snprintf(month, sizeof(month), "%s",
           "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
           "BEGIN:VEVENT\r\nUID:m1\r\nDTSTAMP:20300101T000000Z\r\n"
           "DTSTART:20261345T250000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
  snprintf(year, sizeof(year), "%s",
           "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
           "BEGIN:VEVENT\r\nUID:y1\r\nDTSTAMP:20300101T000000Z\r\n"
           "DTSTART:00000101T000000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
  /* Floating: no mailbox zone is read for it either. */
  snprintf(floating, sizeof(floating), "%s",
           "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
           "BEGIN:VEVENT\r\nUID:f1\r\nDTSTAMP:20300101T000000Z\r\n"
           "DTSTART:20300230T090000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
  m = put(f, "m1.ics", month);
  y = put(f, "y1.ics", year);
  fl = put(f, "f1.ics", floating);
  fb = add(f, "POST", "/dav/calendars/" ALICE "/outbox/",
           "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
           "METHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:f3\r\n"
           "DTSTAMP:20300101T000000Z\r\nDTSTART:20301304T000000Z\r\n"
           "DTEND:20301305T000000Z\r\nORGANIZER:mailto:" ALICE "\r\n"
           "ATTENDEE:mailto:carol@contoso.example\r\n"
           "END:VFREEBUSY\r\nEND:VCALENDAR\r\n");
  run(f);
  assert_int_equal(m->status, 403);
  assert_non_null(strstr(answer(m), "<C:valid-calendar-data/>"));
  assert_non_null(
      strstr(answer(m), "DTSTART 20261345T250000: there is no month 13"));
  assert_int_equal(y->status, 403);
  assert_non_null(strstr(answer(y), "<C:valid-calendar-data/>"));
  assert_non_null(strstr(answer(y), "DTSTART 00000101T000000: year 0"));
  assert_int_equal(fl->status, 403);
  assert_non_null(strstr(answer(fl), "2030-02 has no day 30"));
  assert_int_equal(fb->status, 403);
  assert_non_null(strstr(answer(fb), "<C:valid-scheduling-message/>"));
  assert_non_null(strstr(answer(fb), "DTSTART 20301304T000000"));
}

/* Graph's getSchedule takes less than 62 days: a longer window is refused
 * with that reason before Graph is asked, not as a refused event. */
static void test_free_busy_window_bounded(void **state)
{
  struct fixture *f = *state;
  struct exchange *post, *report;

  post = add(f, "POST", "/dav/calendars/" ALICE "/outbox/",
             "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
             "METHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:w1\r\n"
             "DTSTAMP:20300101T000000Z\r\nDTSTART:20300101T000000Z\r\n"
             "DTEND:20400101T000000Z\r\nORGANIZER:mailto:" ALICE "\r\n"
             "ATTENDEE:mailto:carol@contoso.example\r\n"
             "END:VFREEBUSY\r\nEND:VCALENDAR\r\n");
  report = add(f, "REPORT", "/dav/calendars/" ALICE "/default/",
               "<C:free-busy-query xmlns:C=\"urn:ietf:params:xml:ns:caldav\">"
               "<C:time-range start=\"20300101T000000Z\" "
               "end=\"20300304T000000Z\"/></C:free-busy-query>");
  run(f);
  assert_int_equal(post->status, 403);
  assert_non_null(strstr(answer(post), "<C:valid-scheduling-message/>"));
  assert_non_null(strstr(answer(post), "shorter than 62 days"));
  assert_int_equal(report->status, 403);
  assert_non_null(strstr(answer(report), "<C:valid-filter/>"));
  assert_non_null(strstr(answer(report), "shorter than 62 days"));
}

/* A body of n copies of unit between head and tail. free() it. */
static char *repeat(const char *head, const char *unit, size_t n,
                    const char *tail)
{
  size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
  char *text = malloc(hl + ul * n + tl + 1);
  char *p = text;

  assert_non_null(text);
  memcpy(p, head, hl);
  p += hl;
  for (size_t i = 0; i < n; i++, p += ul)
    memcpy(p, unit, ul);
  memcpy(p, tail, tl + 1);
  return text;
}

/* What bounds the work of one XML body before and while libxml2 reads it,
 * each with a sentence saying which limit was met. */
static void test_xml_bodies_bounded(void **state)
{
  struct fixture *f = *state;
  static const char prop[] = "<D:displayname/>";
  char *big = repeat("<D:propfind xmlns:D=\"DAV:\"><D:prop>", prop,
                     CALDAV_XML_BODY_MAX / (sizeof(prop) - 1) + 1,
                     "</D:prop></D:propfind>");
  char *flood = repeat("<D:propfind xmlns:D=\"DAV:\"", " xmlns:n=\"urn:x\"",
                       100000, "><D:allprop/></D:propfind>");
  char *deep = repeat("<C:calendar-query xmlns:C=\"urn:ietf:params:xml:ns:"
                      "caldav\">",
                      "<C:filter>", 40, "</C:calendar-query>");
  static const char pad[] = "X-PAD:padding padding\r\n";
  char *outbox = repeat("BEGIN:VCALENDAR\r\n", pad,
                        ICAL_GRAPH_TEXT_MAX / (sizeof(pad) - 1) + 1,
                        "END:VCALENDAR\r\n");
  struct exchange *b = add(f, "PROPFIND", CAL, big);
  struct exchange *r = add(f, "REPORT", CAL, big);
  struct exchange *n = add(f, "PROPFIND", CAL, flood);
  struct exchange *d = add(f, "REPORT", CAL, deep);
  struct exchange *o
      = add(f, "POST", "/dav/calendars/" ALICE "/outbox/", outbox);
  struct timespec t0, t1;

  b->headers[0] = "Depth: 0";
  clock_gettime(CLOCK_MONOTONIC, &t0);
  run(f);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  assert_int_equal(b->status, 413);
  assert_non_null(strstr(answer(b), "the PROPFIND body is larger than "
                                    "2951536 bytes"));
  assert_int_equal(r->status, 413);
  assert_non_null(strstr(answer(r), "the REPORT body is larger than"));
  assert_int_equal(n->status, 400);
  assert_non_null(strstr(answer(n), "declares too many namespaces"));
  assert_int_equal(d->status, 400);
  assert_non_null(strstr(answer(d), "nested too deep"));
  assert_int_equal(o->status, 413);
  assert_non_null(strstr(answer(o), "the POST body is larger than 1048576"));
  /* Five bodies of up to 3 MB in well under the seconds a flood costs. */
  assert_true(t1.tv_sec - t0.tv_sec < 5);
  free(big);
  free(flood);
  free(deep);
  free(outbox);
}

static void test_depth_and_escapes_checked(void **state)
{
  struct fixture *f = *state;
  struct exchange *seven = add(f, "PROPFIND", CAL, NULL);
  struct exchange *report
      = add(f, "REPORT", CAL,
            "<C:calendar-query xmlns:C=\"urn:ietf:params:xml:ns:caldav\"/>");
  struct exchange *infinity = add(f, "PROPFIND", "/dav/calendars/" ALICE "/",
                                  "<D:propfind xmlns:D=\"DAV:\"><D:prop>"
                                  "<D:resourcetype/></D:prop></D:propfind>");
  struct exchange *bad = add(f, "GET", CAL "a%ZZ.ics", NULL);
  struct exchange *nul = add(f, "GET", CAL "a%00.ics", NULL);
  struct exchange *short_escape
      = add(f, "PROPFIND", "/dav/calendars/%4/", NULL);

  seven->headers[0] = "Depth: 7";
  report->headers[0] = "Depth: one";
  infinity->headers[0] = "Depth: Infinity";
  run(f);
  assert_int_equal(seven->status, 400);
  assert_non_null(strstr(answer(seven), "Depth header must be 0, 1 or "
                                        "infinity"));
  assert_non_null(strstr(answer(seven), "no Depth is served as 1"));
  assert_int_equal(report->status, 400);
  /* RFC 4918 9.1: refused with the precondition, not served as depth 1. */
  assert_int_equal(infinity->status, 403);
  assert_non_null(strstr(answer(infinity), "propfind-finite-depth"));
  assert_int_equal(bad->status, 400);
  assert_non_null(strstr(answer(bad), "malformed percent escape"));
  assert_int_equal(nul->status, 400);
  assert_int_equal(short_escape->status, 400);
}

/* Each endpoint has its own cache of mailbox zones, which keeps a zone an
 * hour and gives the oldest slot to a new user once full. */
static void test_zone_cache(void **state)
{
  struct caldav_zones *a = caldav_zones_new();
  struct caldav_zones *b = caldav_zones_new();
  char addr[64];

  (void) state;
  assert_null(caldav_zones_get(a, ALICE, 1000));
  caldav_zones_put(a, ALICE, "Tokyo Standard Time", 1000);
  assert_string_equal(caldav_zones_get(a, ALICE, 1000), "Tokyo Standard Time");
  assert_null(caldav_zones_get(b, ALICE, 1000));
  assert_non_null(caldav_zones_get(a, ALICE, 1000 + CALDAV_ZONE_TTL_MS - 1));
  assert_null(caldav_zones_get(a, ALICE, 1000 + CALDAV_ZONE_TTL_MS));
  /* A new answer replaces the user's own slot. */
  caldav_zones_put(a, ALICE, "UTC", 2000);
  assert_string_equal(caldav_zones_get(a, ALICE, 2000), "UTC");

  /* Full: the entry that expires first (Alice's) makes room. */
  for (int i = 0; i < CALDAV_ZONE_CACHE_MAX - 1; i++) {
    snprintf(addr, sizeof(addr), "user%d@contoso.example", i);
    caldav_zones_put(a, addr, "UTC", 3000 + i);
  }
  assert_string_equal(caldav_zones_get(a, ALICE, 3000), "UTC");
  caldav_zones_put(a, "late@contoso.example", "UTC", 5000);
  assert_null(caldav_zones_get(a, ALICE, 5000));
  assert_non_null(caldav_zones_get(a, "late@contoso.example", 5000));
  assert_non_null(caldav_zones_get(a, "user0@contoso.example", 5000));
  caldav_zones_free(a);
  caldav_zones_free(b);
}

/* The mapping keeps the zones the client wrote (migration 8) through every
 * write that is not the PUT itself, and hands them back for the event. */
static void test_mapping_remembers_zones(void **state)
{
  struct fixture *f = *state;
  struct caldav_row row = { .name = "w.ics",
                            .uid = "w-uid",
                            .event_id = "EV1",
                            .start_tzid = "America/Winnipeg",
                            .end_tzid = "America/New_York" };
  struct caldav_row got = { 0 };
  struct caldav_row *rows = NULL;
  char *start = NULL, *end = NULL;

  assert_true(store_schema_version(f->store) >= 8);
  assert_int_equal(caldav_row_put(f->store, ALICE, &row), 0);
  caldav_row_set_etag(f->store, ALICE, "w.ics", "\"e1\"");
  assert_int_equal(caldav_row_find(f->store, ALICE, "uid", "w-uid", &got), 0);
  assert_string_equal(got.etag, "\"e1\"");
  assert_string_equal(got.start_tzid, "America/Winnipeg");
  assert_string_equal(got.end_tzid, "America/New_York");
  caldav_row_clear(&got);

  assert_int_equal(
      caldav_row_zones(f->store, ALICE, "w-uid", "EV1", &start, &end), 0);
  assert_string_equal(start, "America/Winnipeg");
  assert_string_equal(end, "America/New_York");
  free(start);
  free(end);
  /* Another event under the same UID is not this object. */
  assert_int_equal(
      caldav_row_zones(f->store, ALICE, "w-uid", "EV2", &start, &end), -ENOENT);
  assert_null(start);
  assert_null(end);

  /* An adopted Outlook event has no zones of the client's. */
  assert_int_equal(caldav_row_adopt(f->store, ALICE, "EV3", "outlook-uid"), 0);
  assert_int_equal(caldav_rows_list(f->store, ALICE, &rows), 2);
  assert_null(rows[0].start_tzid);
  assert_string_equal(rows[1].name, "w.ics");
  assert_string_equal(rows[1].start_tzid, "America/Winnipeg");
  caldav_rows_free(rows, 2);
}

/* The mapping keeps the client-scheduled attendees of the last PUT
 * (migration 9), an adopted alias of the same event does not hide them,
 * and they count in the ETag. */
static void test_mapping_remembers_client_attendees(void **state)
{
  static const char sam[]
      = "[\"ATTENDEE;SCHEDULE-AGENT=CLIENT;CN=Sam:mailto:sam@example.net\"]";
  static const char samantha[] = "[\"ATTENDEE;SCHEDULE-AGENT=CLIENT;"
                                 "CN=Samantha:mailto:sam@example.net\"]";
  struct fixture *f = *state;
  struct caldav_row row = { .name = "c.ics",
                            .uid = "c-uid",
                            .event_id = "EV1",
                            .client_attendees = (char *) sam };
  struct caldav_row got = { 0 };
  char *lines = NULL;
  char *plain, *e1, *e2, *e3;

  assert_true(store_schema_version(f->store) >= 9);
  assert_int_equal(caldav_row_put(f->store, ALICE, &row), 0);
  assert_int_equal(caldav_row_find(f->store, ALICE, "name", "c.ics", &got), 0);
  assert_string_equal(got.client_attendees, sam);
  caldav_row_clear(&got);

  /* The adopted name of the same event sorts first but has none. */
  assert_int_equal(caldav_row_adopt(f->store, ALICE, "EV1", "outlook-uid"), 0);
  assert_int_equal(caldav_row_client(f->store, ALICE, "EV1", &lines), 0);
  assert_string_equal(lines, sam);
  free(lines);
  assert_int_equal(caldav_row_client(f->store, ALICE, "EV2", &lines), -ENOENT);
  assert_null(lines);

  /* A PUT without them forgets them. */
  row.client_attendees = NULL;
  assert_int_equal(caldav_row_put(f->store, ALICE, &row), 0);
  assert_int_equal(caldav_row_client(f->store, ALICE, "EV1", &lines), 0);
  assert_null(lines);

  /* Same change key: the ETag still follows the attendees. */
  plain = caldav_etag("CK1");
  e1 = caldav_object_etag("CK1", NULL);
  e2 = caldav_object_etag("CK1", sam);
  e3 = caldav_object_etag("CK1", samantha);
  assert_string_equal(e1, plain);
  assert_string_not_equal(e2, plain);
  assert_string_not_equal(e3, e2);
  assert_int_equal(strlen(e2), CALDAV_ETAG_HEX + 2);
  free(plain);
  free(e1);
  free(e2);
  free(e3);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_authentication, setup, teardown),
    cmocka_unit_test_setup_teardown(test_policy_refusal_names_the_reason, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_discovery, setup, teardown),
    cmocka_unit_test_setup_teardown(test_refused_calendar_data, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_wrong_places_and_methods, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_mapping_remembers_zones, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_mapping_remembers_client_attendees,
                                    setup, teardown),
    cmocka_unit_test_setup_teardown(test_free_busy_window_bounded, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_impossible_dates_refused, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_xml_bodies_bounded, setup, teardown),
    cmocka_unit_test_setup_teardown(test_depth_and_escapes_checked, setup,
                                    teardown),
    cmocka_unit_test(test_zone_cache),
  };

  int failed;

  curl_global_init(CURL_GLOBAL_DEFAULT);
  failed = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return failed;
}
