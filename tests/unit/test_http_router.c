/* SPDX-License-Identifier: MIT */
/* The router behind a real listener: requests from a client thread reach
 * the handler of the longest matching prefix and method, or get 404 and
 * 405 with Allow. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "http_router.h"
#include "http_server.h"

#define TEST_REQUESTS 7
#define TEST_TEXT_MAX 512

/* One answer as the client saw it. */
struct test_reply {
  int status;
  char allow[TEST_TEXT_MAX]; /* the Allow header, "" when absent */
  char body[TEST_TEXT_MAX];
  int in_allow; /* header callbacks: the field being read is Allow */
};

static const char *const test_requests[TEST_REQUESTS] = {
  "GET /.well-known/caldav",
  "PROPFIND /dav/principals/u",
  "PUT /dav/principals/u", /* PROPFIND-only subtree: falls back to /dav */
  "PROPFIND /dav",
  "GET /davx", /* not under /dav */
  "DELETE /link",
  "POST /link/start?x=1",
};

static struct test_reply test_replies[TEST_REQUESTS];
static int test_port;
static uv_async_t test_stop;

/* Each handler answers with its own name. */
static void test_named(void *arg, struct http_exchange *ex)
{
  const char *name = arg;

  http_exchange_respond(ex, 200, NULL, name, strlen(name));
}

static int test_on_field(http_parser *p, const char *at, size_t len)
{
  struct test_reply *r = p->data;

  r->in_allow = len == 5 && strncasecmp(at, "Allow", 5) == 0;
  return 0;
}

static int test_on_value(http_parser *p, const char *at, size_t len)
{
  struct test_reply *r = p->data;

  if (r->in_allow)
    snprintf(r->allow, sizeof(r->allow), "%.*s", (int) len, at);
  return 0;
}

static int test_on_body(http_parser *p, const char *at, size_t len)
{
  struct test_reply *r = p->data;
  size_t used = strlen(r->body);

  snprintf(r->body + used, sizeof(r->body) - used, "%.*s", (int) len, at);
  return 0;
}

static int test_on_headers(http_parser *p)
{
  ((struct test_reply *) p->data)->status = (int) p->status_code;
  return 0;
}

static const http_parser_settings test_settings = {
  .on_header_field = test_on_field,
  .on_header_value = test_on_value,
  .on_headers_complete = test_on_headers,
  .on_body = test_on_body,
};

/* Sends one request with Connection: close and reads the answer to EOF. */
static void test_fetch(const char *line, struct test_reply *r)
{
  struct sockaddr_in sin = { .sin_family = AF_INET };
  struct timeval tv = { .tv_sec = 5 };
  char req[256];
  char buf[1024];
  http_parser p;
  ssize_t n;
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  sin.sin_port = htons((uint16_t) test_port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *) &sin, sizeof(sin)) != 0)
    abort();
  snprintf(req, sizeof(req),
           "%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", line);
  if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t) strlen(req))
    abort();
  http_parser_init(&p, HTTP_RESPONSE);
  p.data = r;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
    http_parser_execute(&p, &test_settings, buf, (size_t) n);
  close(fd);
}

static void *test_client(void *arg)
{
  (void) arg;
  for (int i = 0; i < TEST_REQUESTS; i++)
    test_fetch(test_requests[i], &test_replies[i]);
  uv_async_send(&test_stop);
  return NULL;
}

static void test_stop_cb(uv_async_t *async)
{
  uv_close((uv_handle_t *) async, NULL);
  http_server_close(async->data);
}

static void test_dispatch(void **state)
{
  struct http_router *router = http_router_new();
  struct http_server *server = NULL;
  uv_loop_t loop;
  pthread_t thread;

  (void) state;
  assert_int_equal(http_router_add(router, "GET", "/.well-known/caldav",
                                   test_named, "wellknown"),
                   0);
  assert_int_equal(http_router_add(router, NULL, "/dav/", test_named, "dav"),
                   0);
  assert_int_equal(http_router_add(router, "PROPFIND", "/dav/principals",
                                   test_named, "principals"),
                   0);
  assert_int_equal(http_router_add(router, "GET", "/link", test_named, "link"),
                   0);
  assert_int_equal(
      http_router_add(router, "POST", "/link", test_named, "link-post"), 0);

  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(http_server_new(&loop, "127.0.0.1", 0, NULL,
                                   http_router_dispatch, router, &server),
                   0);
  test_port = http_server_port(server);
  uv_async_init(&loop, &test_stop, test_stop_cb);
  test_stop.data = server;
  assert_int_equal(pthread_create(&thread, NULL, test_client, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  pthread_join(thread, NULL);
  assert_int_equal(uv_loop_close(&loop), 0);
  http_router_free(router);

  assert_int_equal(test_replies[0].status, 200);
  assert_string_equal(test_replies[0].body, "wellknown");
  assert_string_equal(test_replies[1].body, "principals");
  assert_string_equal(test_replies[2].body, "dav");
  assert_string_equal(test_replies[3].body, "dav");
  assert_int_equal(test_replies[4].status, 404);
  assert_string_equal(test_replies[4].body, "no such resource\n");
  assert_int_equal(test_replies[5].status, 405);
  assert_string_equal(test_replies[5].allow, "GET, POST");
  assert_string_equal(test_replies[5].body,
                      "method not allowed on this path\n");
  assert_string_equal(test_replies[6].body, "link-post");
}

static void test_add_errors(void **state)
{
  struct http_router *router = http_router_new();
  char prefix[32];

  (void) state;
  assert_int_equal(http_router_add(router, "GET", "dav", test_named, ""),
                   -EINVAL);
  assert_int_equal(http_router_add(router, "GET", "/dav", test_named, ""), 0);
  assert_int_equal(http_router_add(router, "GET", "/dav/", test_named, ""),
                   -EEXIST);
  assert_int_equal(http_router_add(router, NULL, "/dav", test_named, ""), 0);
  assert_int_equal(http_router_add(router, NULL, "/dav", test_named, ""),
                   -EEXIST);
  for (int i = 2; i < HTTP_ROUTER_MAX_ROUTES; i++) {
    snprintf(prefix, sizeof(prefix), "/p%d", i);
    assert_int_equal(http_router_add(router, "GET", prefix, test_named, ""), 0);
  }
  assert_int_equal(http_router_add(router, "GET", "/full", test_named, ""),
                   -ENOSPC);
  http_router_free(router);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_dispatch),
    cmocka_unit_test(test_add_errors),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
