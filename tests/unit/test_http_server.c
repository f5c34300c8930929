/* SPDX-License-Identifier: MIT */
/* The HTTP listener seen from the wire: a server on 127.0.0.1:0 with an
 * echoing handler, driven by libcurl and by raw sockets from a thread, the
 * answers read back with http-parser. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "http_server.h"
#include "log.h"
#include "xalloc.h"

/* cmocka's assertions cannot fail in the client thread (they jump to the
 * main thread's stack), so the client checks its own steps this way. */
#define CLIENT_CHECK(cond)                                                     \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: client check failed: %s\n", __FILE__, __LINE__,  \
              #cond);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#define TEST_MAX_RESPONSES 8
#define TEST_HEADERS_MAX 2048
#define TEST_BODY_MAX 65536

enum test_mode {
  TEST_ECHO,  /* answer inside the handler */
  TEST_LATER, /* answer from a timer, 30 ms later */
  TEST_HOLD,  /* keep the exchange; answer on cancel or at stop */
};

struct fixture;
typedef void (*test_client_fn)(struct fixture *fx);

struct fixture {
  uv_loop_t loop;
  struct http_server *server;
  uv_async_t stop;
  uv_timer_t later;
  int port;
  enum test_mode mode;
  struct http_exchange *held[TEST_MAX_RESPONSES]; /* for LATER and HOLD */
  size_t nheld;
  atomic_int handled; /* requests given to the handler */
  int cancelled;
  int late_rc;    /* what the last delayed respond returned */
  bool stop_sent; /* the client thread stopped the server itself */
  test_client_fn client;
};

/* ---- server side ------------------------------------------------- */

static void test_answer(struct http_exchange *ex)
{
  const struct http_server_request *req = http_exchange_request(ex);
  const char *q = NULL;
  const char *x = http_exchange_header(ex, "x-test");
  char user[64];
  char pass[64];
  int auth
      = http_exchange_basic_auth(ex, user, sizeof(user), pass, sizeof(pass));
  int qrc = http_exchange_query(ex, "q", &q);
  const char *headers[] = { "Content-Type: text/plain", NULL };
  char *body;

  body = xasprintf("%s %s q=%s x=%s auth=%d:%s:%s body=%.*s", req->method,
                   req->path,
                   qrc == 0         ? q
                   : qrc == -ENOENT ? "-"
                                    : "bad",
                   x != NULL ? x : "-", auth, auth == 0 ? user : "-",
                   auth == 0 ? pass : "-", (int) req->body_len, req->body);
  http_exchange_respond(ex, 200, headers, body, strlen(body));
  free(body);
}

static void test_later_cb(uv_timer_t *timer)
{
  struct fixture *fx = timer->data;

  for (size_t i = 0; i < fx->nheld; i++)
    test_answer(fx->held[i]);
  fx->nheld = 0;
}

static void test_cancel_cb(void *arg, struct http_exchange *ex)
{
  struct fixture *fx = arg;

  fx->cancelled++;
  for (size_t i = 0; i < fx->nheld; i++) {
    if (fx->held[i] == ex)
      fx->held[i] = fx->held[--fx->nheld];
  }
  fx->late_rc = http_exchange_respond(ex, 200, NULL, "late", 4);
}

static void test_handler(void *arg, struct http_exchange *ex)
{
  struct fixture *fx = arg;

  atomic_fetch_add(&fx->handled, 1);
  if (fx->mode == TEST_ECHO) {
    test_answer(ex);
    return;
  }
  assert_true(fx->nheld < TEST_MAX_RESPONSES);
  fx->held[fx->nheld++] = ex;
  if (fx->mode == TEST_LATER) {
    uv_timer_start(&fx->later, test_later_cb, 30, 0);
    return;
  }
  assert_int_equal(http_exchange_on_cancel(ex, test_cancel_cb, fx), 0);
}

/* The client thread is done: stop the server. Held exchanges are answered
 * after the close, which shows that pending answers still go out. */
static void test_stop_cb(uv_async_t *async)
{
  struct fixture *fx = async->data;

  uv_close((uv_handle_t *) &fx->stop, NULL);
  http_server_close(fx->server);
  if (fx->nheld > 0) {
    uv_timer_start(&fx->later, test_later_cb, 10, 0);
    return;
  }
  uv_close((uv_handle_t *) &fx->later, NULL);
}

static void *test_client_main(void *arg)
{
  struct fixture *fx = arg;

  fx->client(fx);
  if (!fx->stop_sent)
    uv_async_send(&fx->stop);
  return NULL;
}

/* Runs client in a thread against a fresh server until both are done. */
static void test_run(const struct http_server_limits *limits,
                     enum test_mode mode, test_client_fn client,
                     struct fixture *fx)
{
  pthread_t thread;

  memset(fx, 0, sizeof(*fx));
  fx->mode = mode;
  fx->client = client;
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  assert_int_equal(http_server_new(&fx->loop, "127.0.0.1", 0, limits,
                                   test_handler, fx, &fx->server),
                   0);
  fx->port = http_server_port(fx->server);
  assert_true(fx->port > 0);
  uv_async_init(&fx->loop, &fx->stop, test_stop_cb);
  uv_timer_init(&fx->loop, &fx->later);
  fx->stop.data = fx;
  fx->later.data = fx;

  assert_int_equal(pthread_create(&thread, NULL, test_client_main, fx), 0);
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  pthread_join(thread, NULL);

  /* The later timer closes once held exchanges are answered. */
  if (!uv_is_closing((uv_handle_t *) &fx->later))
    uv_close((uv_handle_t *) &fx->later, NULL);
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&fx->loop), 0);
}

static struct http_server_limits test_limits(void)
{
  struct http_server_limits l;

  http_server_limits_defaults(&l);
  return l;
}

/* ---- raw client (in the thread) ------------------------------------ */

struct test_response {
  int status;
  char headers[TEST_HEADERS_MAX]; /* "name: value\n" lines as received */
  size_t headers_len;
  char body[TEST_BODY_MAX];
  size_t body_len;
};

struct test_conn {
  int fd;
  http_parser parser;
  struct test_response r[TEST_MAX_RESPONSES];
  int n;          /* complete responses */
  bool head;      /* the next responses answer HEAD: no body */
  bool in_value;  /* header callbacks: inside a value */
  bool eof;       /* the server closed */
  size_t raw_len; /* bytes received in all */
};

static void test_append(char *buf, size_t *len, size_t cap, const char *at,
                        size_t n)
{
  if (*len + n >= cap)
    n = cap - *len - 1;
  memcpy(buf + *len, at, n);
  *len += n;
  buf[*len] = '\0';
}

static int test_on_field(http_parser *p, const char *at, size_t len)
{
  struct test_conn *c = p->data;
  struct test_response *r = &c->r[c->n];

  if (c->in_value)
    test_append(r->headers, &r->headers_len, TEST_HEADERS_MAX, "\n", 1);
  c->in_value = false;
  test_append(r->headers, &r->headers_len, TEST_HEADERS_MAX, at, len);
  return 0;
}

static int test_on_value(http_parser *p, const char *at, size_t len)
{
  struct test_conn *c = p->data;
  struct test_response *r = &c->r[c->n];

  if (!c->in_value)
    test_append(r->headers, &r->headers_len, TEST_HEADERS_MAX, ": ", 2);
  c->in_value = true;
  test_append(r->headers, &r->headers_len, TEST_HEADERS_MAX, at, len);
  return 0;
}

static int test_on_headers(http_parser *p)
{
  struct test_conn *c = p->data;

  c->r[c->n].status = (int) p->status_code;
  test_append(c->r[c->n].headers, &c->r[c->n].headers_len, TEST_HEADERS_MAX,
              "\n", 1);
  c->in_value = false;
  return c->head ? 1 : 0;
}

static int test_on_body(http_parser *p, const char *at, size_t len)
{
  struct test_conn *c = p->data;
  struct test_response *r = &c->r[c->n];

  test_append(r->body, &r->body_len, TEST_BODY_MAX, at, len);
  return 0;
}

static int test_on_complete(http_parser *p)
{
  struct test_conn *c = p->data;

  if (c->n < TEST_MAX_RESPONSES - 1)
    c->n++;
  return 0;
}

static const http_parser_settings test_settings = {
  .on_header_field = test_on_field,
  .on_header_value = test_on_value,
  .on_headers_complete = test_on_headers,
  .on_body = test_on_body,
  .on_message_complete = test_on_complete,
};

static struct test_conn *test_connect(int port)
{
  struct test_conn *c = xcalloc(1, sizeof(*c));
  struct sockaddr_in sin = { .sin_family = AF_INET };
  struct timeval tv = { .tv_sec = 5 };

  sin.sin_port = htons((uint16_t) port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  CLIENT_CHECK(c->fd >= 0);
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  CLIENT_CHECK(connect(c->fd, (struct sockaddr *) &sin, sizeof(sin)) == 0);
  http_parser_init(&c->parser, HTTP_RESPONSE);
  c->parser.data = c;
  return c;
}

static void test_send(struct test_conn *c, const char *text)
{
  size_t len = strlen(text);

  CLIENT_CHECK(send(c->fd, text, len, MSG_NOSIGNAL) == (ssize_t) len);
}

/* Reads until count responses are complete or the server closes. */
static void test_read(struct test_conn *c, int count)
{
  char buf[4096];

  while (c->n < count && !c->eof) {
    ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

    if (n <= 0) {
      c->eof = true;
      http_parser_execute(&c->parser, &test_settings, buf, 0);
      break;
    }
    c->raw_len += (size_t) n;
    http_parser_execute(&c->parser, &test_settings, buf, (size_t) n);
    CLIENT_CHECK(HTTP_PARSER_ERRNO(&c->parser) == HPE_OK);
  }
}

/* True when the server closes the connection within the receive timeout. */
static bool test_wait_eof(struct test_conn *c)
{
  char buf[512];
  ssize_t n;

  while ((n = recv(c->fd, buf, sizeof(buf), 0)) > 0)
    c->raw_len += (size_t) n;
  c->eof = n == 0;
  return c->eof;
}

/* The client thread hangs up before it ends, so the server need not wait
 * for it; the results stay for the test to check. */
static void test_hangup(struct test_conn *c)
{
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
}

static void test_close(struct test_conn *c)
{
  test_hangup(c);
  free(c);
}

static bool test_has_header(const struct test_response *r, const char *line)
{
  return strstr(r->headers, line) != NULL;
}

static void test_wait_handled(struct fixture *fx, int count)
{
  for (int i = 0; i < 500 && atomic_load(&fx->handled) < count; i++)
    usleep(10000);
}

/* Results of the client threads, checked by the test afterwards. */
static struct test_conn *test_result;
static struct test_conn *test_result2;

/* ---- libcurl -------------------------------------------------------- */

struct test_curl_out {
  char body[TEST_BODY_MAX];
  size_t body_len;
  char headers[TEST_HEADERS_MAX];
  size_t headers_len;
};

static size_t test_curl_write(char *data, size_t size, size_t n, void *arg)
{
  struct test_curl_out *o = arg;

  test_append(o->body, &o->body_len, TEST_BODY_MAX, data, size * n);
  return size * n;
}

static size_t test_curl_header(char *data, size_t size, size_t n, void *arg)
{
  struct test_curl_out *o = arg;

  test_append(o->headers, &o->headers_len, TEST_HEADERS_MAX, data, size * n);
  return size * n;
}

static struct test_curl_out test_curl_get;
static struct test_curl_out test_curl_post;
static long test_curl_status[2];
static long test_curl_connects[2];

static void test_curl_one(CURL *curl, struct test_curl_out *o, int i)
{
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, test_curl_write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, o);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, test_curl_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, o);
  CLIENT_CHECK(curl_easy_perform(curl) == CURLE_OK);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &test_curl_status[i]);
  curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &test_curl_connects[i]);
}

static void test_client_curl(struct fixture *fx)
{
  CURL *curl = curl_easy_init();
  char url[128];

  snprintf(url, sizeof(url), "http://127.0.0.1:%d/dav/a%%40b?q=x%%20y+z",
           fx->port);
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_USERPWD, "nextal:s3cr:et");
  test_curl_one(curl, &test_curl_get, 0);

  /* Same handle: the connection is kept alive and reused. */
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "hello body");
  test_curl_one(curl, &test_curl_post, 1);
  curl_easy_cleanup(curl);
}

static void test_curl_keepalive(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  test_run(&l, TEST_ECHO, test_client_curl, &fx);
  assert_int_equal(test_curl_status[0], 200);
  assert_string_equal(test_curl_get.body,
                      "GET /dav/a%40b q=x y z x=- auth=0:nextal:s3cr:et body=");
  assert_non_null(strstr(test_curl_get.headers, "Date: "));
  assert_non_null(strstr(test_curl_get.headers, "Content-Length: 54"));
  assert_int_equal(test_curl_status[1], 200);
  assert_non_null(strstr(test_curl_post.body, "POST /dav/a%40b"));
  assert_non_null(strstr(test_curl_post.body, "body=hello body"));
  assert_int_equal(test_curl_connects[0], 1);
  assert_int_equal(test_curl_connects[1], 0);
  assert_int_equal(atomic_load(&fx.handled), 2);
}

/* ---- raw clients ------------------------------------------------------ */

static void test_client_pipeline(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  test_send(c, "GET /one HTTP/1.1\r\nHost: t\r\n\r\n"
               "POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
               "GET /three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  test_read(c, 3);
  test_wait_eof(c);
  test_hangup(c);
  test_result = c;
}

static void test_pipelining_in_order(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  test_run(&l, TEST_LATER, test_client_pipeline, &fx);
  assert_int_equal(test_result->n, 3);
  assert_string_equal(test_result->r[0].body,
                      "GET /one q=- x=- auth=-2:-:- body=");
  assert_string_equal(test_result->r[1].body,
                      "POST /two q=- x=- auth=-2:-:- body=abc");
  assert_string_equal(test_result->r[2].body,
                      "GET /three q=- x=- auth=-2:-:- body=");
  assert_false(test_has_header(&test_result->r[1], "Connection: close"));
  assert_true(test_has_header(&test_result->r[2], "Connection: close"));
  assert_true(test_result->eof);
  test_close(test_result);
}

static void test_client_big_header(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);
  char *pad = xmalloc(20001);
  char *req;

  memset(pad, 'a', 20000);
  pad[20000] = '\0';
  req = xasprintf("GET / HTTP/1.1\r\nHost: t\r\nX-Pad: %s\r\n\r\n", pad);
  test_send(c, req);
  test_read(c, 1);
  test_wait_eof(c);
  free(req);
  free(pad);
  test_hangup(c);
  test_result = c;
}

static void test_header_too_large(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  test_run(&l, TEST_ECHO, test_client_big_header, &fx);
  assert_int_equal(test_result->r[0].status, 431);
  assert_string_equal(test_result->r[0].body,
                      "request header fields too large\n");
  assert_true(test_has_header(&test_result->r[0], "Connection: close"));
  assert_true(test_result->eof);
  assert_int_equal(atomic_load(&fx.handled), 0);
  test_close(test_result);
}

static void test_client_many_headers(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  test_send(c, "GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
  test_read(c, 1);
  test_hangup(c);
  test_result = c;
}

static void test_too_many_headers(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  l.max_headers = 3;
  test_run(&l, TEST_ECHO, test_client_many_headers, &fx);
  assert_int_equal(test_result->r[0].status, 431);
  assert_string_equal(test_result->r[0].body,
                      "too many request header fields\n");
  test_close(test_result);
}

/* The declared length alone is refused: no body byte is ever sent. */
static void test_client_declared_too_large(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  test_send(c, "PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
  test_read(c, 1);
  test_wait_eof(c);
  test_hangup(c);
  test_result = c;
}

static void test_body_too_large_declared(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  l.max_body_size = 1000;
  test_run(&l, TEST_ECHO, test_client_declared_too_large, &fx);
  assert_int_equal(test_result->r[0].status, 413);
  assert_string_equal(test_result->r[0].body, "request body too large\n");
  assert_true(test_result->eof);
  test_close(test_result);
}

static void test_client_chunked_too_large(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  test_send(c, "PUT /x HTTP/1.1\r\nHost: t\r\n"
               "Transfer-Encoding: chunked\r\n\r\n"
               "8\r\n12345678\r\n8\r\n12345678\r\n");
  test_read(c, 1);
  test_hangup(c);
  test_result = c;
}

static void test_body_too_large_chunked(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  l.max_body_size = 10;
  test_run(&l, TEST_ECHO, test_client_chunked_too_large, &fx);
  assert_int_equal(test_result->r[0].status, 413);
  assert_int_equal(atomic_load(&fx.handled), 0);
  test_close(test_result);
}

static void test_client_chunked(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  test_send(c, "PUT /cal/1.ics HTTP/1.1\r\nHost: t\r\n"
               "Transfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n");
  usleep(20000);
  test_send(c, "5\r\npedia\r\n0\r\n\r\n");
  test_read(c, 1);
  test_hangup(c);
  test_result = c;
}

static void test_chunked_body(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  test_run(&l, TEST_ECHO, test_client_chunked, &fx);
  assert_int_equal(test_result->r[0].status, 200);
  assert_string_equal(test_result->r[0].body,
                      "PUT /cal/1.ics q=- x=- auth=-2:-:- body=Wikipedia");
  test_close(test_result);
}

static void test_client_expect(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  test_send(c, "PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
               "Expect: 100-continue\r\n\r\n");
  test_read(c, 1);
  if (c->n == 1 && c->r[0].status == 100)
    test_send(c, "hello");
  test_read(c, 2);
  test_hangup(c);
  test_result = c;
}

static void test_expect_continue(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  test_run(&l, TEST_ECHO, test_client_expect, &fx);
  assert_int_equal(test_result->n, 2);
  assert_int_equal(test_result->r[0].status, 100);
  assert_int_equal(test_result->r[1].status, 200);
  assert_string_equal(test_result->r[1].body,
                      "PUT /e q=- x=- auth=-2:-:- body=hello");
  test_close(test_result);
}

static void test_client_expect_too_large(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  test_send(c, "PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n"
               "Expect: 100-continue\r\n\r\n");
  test_read(c, 1);
  test_hangup(c);
  test_result = c;
}

static void test_expect_continue_too_large(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  l.max_body_size = 10;
  test_run(&l, TEST_ECHO, test_client_expect_too_large, &fx);
  assert_int_equal(test_result->r[0].status, 413);
  test_close(test_result);
}

static void test_client_slow(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  test_send(c, "GET / HTTP/1.1\r\nHost: t\r\n");
  test_read(c, 1);
  test_wait_eof(c);
  test_hangup(c);
  test_result = c;
}

static void test_request_timeout(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  l.request_timeout_ms = 150;
  test_run(&l, TEST_ECHO, test_client_slow, &fx);
  assert_int_equal(test_result->r[0].status, 408);
  assert_string_equal(test_result->r[0].body, "request not received in time\n");
  assert_true(test_result->eof);
  test_close(test_result);
}

static void test_client_idle(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  test_wait_eof(c);
  test_hangup(c);
  test_result = c;
}

static void test_idle_timeout_closes_quietly(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  l.idle_timeout_ms = 100;
  test_run(&l, TEST_ECHO, test_client_idle, &fx);
  assert_true(test_result->eof);
  assert_int_equal(test_result->raw_len, 0);
  test_close(test_result);
}

static void test_client_garbage(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);
  struct test_conn *d = test_connect(fx->port);

  test_send(c, "GET / HTTP/9.x\r\nHost: t\r\n\r\n");
  test_read(c, 1);
  test_send(d, "GET / HTTP/1.1\r\n\r\n");
  test_read(d, 1);
  test_hangup(c);
  test_hangup(d);
  test_result = c;
  test_result2 = d;
}

static void test_malformed_request(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  test_run(&l, TEST_ECHO, test_client_garbage, &fx);
  assert_int_equal(test_result->r[0].status, 400);
  assert_string_equal(test_result->r[0].body, "invalid HTTP version\n");
  assert_true(test_has_header(&test_result->r[0], "Content-Length: 21"));
  assert_true(test_has_header(&test_result->r[0], "Date: "));
  assert_int_equal(test_result2->r[0].status, 400);
  assert_string_equal(test_result2->r[0].body, "missing Host header\n");
  assert_int_equal(atomic_load(&fx.handled), 0);
  test_close(test_result);
  test_close(test_result2);
}

/* A version other than 1.x, and a target past 8 kB within the header
 * limit. */
static void test_client_version_and_target(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);
  struct test_conn *d = test_connect(fx->port);
  char *path = xmalloc(9001);
  char *req;

  test_send(c, "GET / HTTP/9.9\r\nHost: t\r\n\r\n");
  test_read(c, 1);
  memset(path, 'a', 9000);
  path[9000] = '\0';
  req = xasprintf("GET /%s HTTP/1.1\r\nHost: t\r\n\r\n", path);
  test_send(d, req);
  test_read(d, 1);
  free(req);
  free(path);
  test_hangup(c);
  test_hangup(d);
  test_result = c;
  test_result2 = d;
}

static void test_version_and_target_refused(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  test_run(&l, TEST_ECHO, test_client_version_and_target, &fx);
  assert_int_equal(test_result->r[0].status, 505);
  assert_string_equal(test_result->r[0].body, "HTTP version not supported\n");
  assert_int_equal(test_result2->r[0].status, 414);
  assert_string_equal(test_result2->r[0].body, "request target too long\n");
  assert_int_equal(atomic_load(&fx.handled), 0);
  test_close(test_result);
  test_close(test_result2);
}

static struct test_conn *test_result3;

/* Requests http-parser accepts and RFC 7230 does not: a second Host, and a
 * space before the colon that would make the body chunked unseen. */
static void test_client_bad_fields(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);
  struct test_conn *d = test_connect(fx->port);
  struct test_conn *e = test_connect(fx->port);

  test_send(c, "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n");
  test_read(c, 1);
  test_wait_eof(c);
  test_send(d, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked"
               "\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
  test_read(d, 1);
  test_wait_eof(d);
  /* Other repeated fields are still joined, not refused. */
  test_send(e, "GET / HTTP/1.1\r\nHost: t\r\nX-Test: a\r\nX-Test: b\r\n"
               "Connection: close\r\n\r\n");
  test_read(e, 1);
  test_hangup(c);
  test_hangup(d);
  test_hangup(e);
  test_result = c;
  test_result2 = d;
  test_result3 = e;
}

static void test_bad_header_fields(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  test_run(&l, TEST_ECHO, test_client_bad_fields, &fx);
  assert_int_equal(test_result->r[0].status, 400);
  assert_string_equal(test_result->r[0].body, "more than one Host header\n");
  assert_true(test_result->eof);
  assert_int_equal(test_result2->r[0].status, 400);
  assert_string_equal(test_result2->r[0].body,
                      "whitespace between a header field name and its "
                      "colon\n");
  assert_true(test_result2->eof);
  assert_int_equal(test_result3->r[0].status, 200);
  assert_non_null(strstr(test_result3->r[0].body, " x=a, b "));
  assert_int_equal(atomic_load(&fx.handled), 1);
  test_close(test_result);
  test_close(test_result2);
  test_close(test_result3);
}

static void test_client_busy(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);
  struct test_conn *d;

  test_send(c, "GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
  test_read(c, 1);
  d = test_connect(fx->port);
  test_read(d, 1);
  test_wait_eof(d);
  test_hangup(c);
  test_hangup(d);
  test_result = c;
  test_result2 = d;
}

static void test_max_connections(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  l.max_connections = 1;
  test_run(&l, TEST_ECHO, test_client_busy, &fx);
  assert_int_equal(test_result->r[0].status, 200);
  assert_int_equal(test_result2->r[0].status, 503);
  assert_true(test_has_header(&test_result2->r[0], "Retry-After: 5"));
  assert_string_equal(test_result2->r[0].body,
                      "too many connections, retry later\n");
  assert_true(test_result2->eof);
  test_close(test_result);
  test_close(test_result2);
}

static void test_client_disconnect(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  test_send(c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
  test_wait_handled(fx, 1);
  test_close(c);
  usleep(50000);
}

static void test_disconnect_before_answer(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  test_run(&l, TEST_HOLD, test_client_disconnect, &fx);
  assert_int_equal(atomic_load(&fx.handled), 1);
  assert_int_equal(fx.cancelled, 1);
  assert_int_equal(fx.late_rc, -ECONNRESET);
}

/* The server closes while an answer is pending: the answer still comes,
 * with Connection: close. */
static void test_client_drain(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  test_send(c, "GET /pending HTTP/1.1\r\nHost: t\r\n\r\n");
  test_wait_handled(fx, 1);
  fx->stop_sent = true;
  uv_async_send(&fx->stop);
  test_read(c, 1);
  test_wait_eof(c);
  test_hangup(c);
  test_result = c;
}

static void test_close_drains_pending(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  test_run(&l, TEST_HOLD, test_client_drain, &fx);
  assert_int_equal(test_result->r[0].status, 200);
  assert_string_equal(test_result->r[0].body,
                      "GET /pending q=- x=- auth=-2:-:- body=");
  assert_true(test_has_header(&test_result->r[0], "Connection: close"));
  assert_true(test_result->eof);
  assert_int_equal(fx.cancelled, 0);
  test_close(test_result);
}

static void test_client_head(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  c->head = true;
  test_send(c, "HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n");
  test_read(c, 1);
  c->head = false;
  test_send(c, "GET /g HTTP/1.0\r\nX-Test: a\r\nX-TEST: b \r\n\r\n");
  test_read(c, 2);
  test_wait_eof(c);
  test_hangup(c);
  test_result = c;
}

static void test_head_and_http10(void **state)
{
  char line[64];
  struct fixture fx;
  struct http_server_limits l = test_limits();

  (void) state;
  test_run(&l, TEST_ECHO, test_client_head, &fx);
  assert_int_equal(test_result->n, 2);
  assert_int_equal(test_result->r[0].status, 200);
  snprintf(line, sizeof(line), "Content-Length: %zu",
           strlen("HEAD /h q=- x=- auth=-2:-:- body="));
  assert_true(test_has_header(&test_result->r[0], line));
  assert_int_equal(test_result->r[0].body_len, 0);
  /* Had the HEAD answer carried a body, this would not parse as "GET". */
  assert_string_equal(test_result->r[1].body,
                      "GET /g q=- x=a, b auth=-2:-:- body=");
  assert_true(test_has_header(&test_result->r[1], "Connection: close"));
  assert_true(test_result->eof);
  test_close(test_result);
}

static void test_client_auth(struct fixture *fx)
{
  struct test_conn *c = test_connect(fx->port);

  /* "user:pass" in base64, then a value that is not base64. */
  test_send(c, "GET /a?q=%zz HTTP/1.1\r\nHost: t\r\n"
               "Authorization: Basic dXNlcjpwYXNz\r\n\r\n");
  test_read(c, 1);
  test_send(c, "GET /b?q HTTP/1.1\r\nHost: t\r\n"
               "Authorization: Basic !!!notbase64\r\n\r\n");
  test_read(c, 2);
  test_send(c, "GET /c HTTP/1.1\r\nHost: t\r\n"
               "Authorization: Basic bm9jb2xvbg==\r\n\r\n");
  test_read(c, 3);
  test_hangup(c);
  test_result = c;
}

static void test_basic_auth_and_access_log(void **state)
{
  struct fixture fx;
  struct http_server_limits l = test_limits();
  char logbuf[8192];
  FILE *logf = tmpfile();
  int saved = dup(2);
  size_t n;

  (void) state;
  assert_non_null(logf);
  fflush(stderr);
  dup2(fileno(logf), 2);
  test_run(&l, TEST_ECHO, test_client_auth, &fx);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  rewind(logf);
  n = fread(logbuf, 1, sizeof(logbuf) - 1, logf);
  logbuf[n] = '\0';
  fclose(logf);

  assert_string_equal(test_result->r[0].body,
                      "GET /a q=bad x=- auth=0:user:pass body=");
  assert_string_equal(test_result->r[1].body,
                      "GET /b q= x=- auth=-22:-:- body=");
  assert_string_equal(test_result->r[2].body,
                      "GET /c q=- x=- auth=-22:-:- body=");
  assert_non_null(strstr(logbuf, " http request method=GET path=/a "
                                 "status=200 bytes=39 ms="));
  assert_null(strstr(logbuf, "dXNlcjpwYXNz"));
  assert_null(strstr(logbuf, "pass"));
  test_close(test_result);
}

static void test_percent_decode(void **state)
{
  char *out = NULL;

  (void) state;
  assert_int_equal(http_percent_decode("a%40b+c", 7, 1, &out), 0);
  assert_string_equal(out, "a@b c");
  free(out);
  assert_int_equal(http_percent_decode("a%40b+c", 7, 0, &out), 0);
  assert_string_equal(out, "a@b+c");
  free(out);
  assert_int_equal(http_percent_decode("%4", 2, 0, &out), -EINVAL);
  assert_int_equal(http_percent_decode("%g0", 3, 0, &out), -EINVAL);
  assert_int_equal(http_percent_decode("a%00b", 5, 0, &out), -EINVAL);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_curl_keepalive),
    cmocka_unit_test(test_pipelining_in_order),
    cmocka_unit_test(test_header_too_large),
    cmocka_unit_test(test_too_many_headers),
    cmocka_unit_test(test_body_too_large_declared),
    cmocka_unit_test(test_body_too_large_chunked),
    cmocka_unit_test(test_chunked_body),
    cmocka_unit_test(test_expect_continue),
    cmocka_unit_test(test_expect_continue_too_large),
    cmocka_unit_test(test_request_timeout),
    cmocka_unit_test(test_idle_timeout_closes_quietly),
    cmocka_unit_test(test_malformed_request),
    cmocka_unit_test(test_version_and_target_refused),
    cmocka_unit_test(test_bad_header_fields),
    cmocka_unit_test(test_max_connections),
    cmocka_unit_test(test_disconnect_before_answer),
    cmocka_unit_test(test_close_drains_pending),
    cmocka_unit_test(test_head_and_http10),
    cmocka_unit_test(test_basic_auth_and_access_log),
    cmocka_unit_test(test_percent_decode),
  };
  int rc;

  curl_global_init(CURL_GLOBAL_DEFAULT);
  rc = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
