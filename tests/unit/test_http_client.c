/* SPDX-License-Identifier: MIT */
/* http_client against an in-process HTTP stub on the same libuv loop:
 * round trips, headers we report, failures, concurrency and shutdown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "http_client.h"

#include "http_stub.c"

/* A test that has not finished after this long has hung. */
#define TEST_GUARD_MS 10000

struct fixture {
  uv_loop_t loop;
  uv_timer_t guard;
  uv_timer_t aux; /* for tests that act later */
  struct stub_server stub;
  struct http_client *http;
  bool in_send; /* true while http_client_send runs */
  unsigned done;
  char url[256];
};

struct result {
  struct fixture *fx;
  bool called;
  long status;
  int curl_error;
  bool too_large;
  char body[256];
  size_t body_len;
  double retry_after;
  char location[256];
};

/* Set while a test's fixture is torn down: callbacks then ignore results. */
static bool tearing_down;

static void on_guard(uv_timer_t *timer)
{
  fail_msg("test did not finish within %d ms", TEST_GUARD_MS);
}

/* Answers by path; the stub is the "server side" of every test here. */
static void handler(struct stub_server *srv, struct stub_conn *conn,
                    const struct stub_request *req)
{
  const char *url = req->url;

  if (strcmp(url, "/hello") == 0) {
    const char *x = stub_header(req, "X-Test");

    stub_reply(conn, 200, NULL, x ? x : "hello", 0);
  } else if (strcmp(url, "/echo") == 0) {
    char hdr[64];

    snprintf(hdr, sizeof(hdr), "Location: /made/%s\r\n", req->method);
    stub_reply(conn, 201, hdr, req->body, 0);
  } else if (strcmp(url, "/throttle") == 0) {
    stub_reply(conn, 429, "Retry-After: 2.128\r\n", "{}", 0);
  } else if (strcmp(url, "/throttle-date") == 0) {
    char hdr[128];
    time_t when = time(NULL) + 30;
    struct tm tm;

    gmtime_r(&when, &tm);
    strftime(hdr, sizeof(hdr), "Retry-After: %a, %d %b %Y %H:%M:%S GMT\r\n",
             &tm);
    stub_reply(conn, 503, hdr, NULL, 0);
  } else if (strcmp(url, "/slow") == 0) {
    stub_reply(conn, 200, NULL, "late", 3000);
  } else if (strcmp(url, "/huge") == 0) {
    size_t len = 17 * 1024 * 1024;
    char *big = malloc(len + 1);

    assert_non_null(big);
    memset(big, 'x', len);
    big[len] = '\0';
    stub_reply(conn, 200, NULL, big, 0);
    free(big);
  } else if (strncmp(url, "/n/", 3) == 0) {
    stub_reply(conn, 200, NULL, url + 3, 20);
  } else {
    stub_reply(conn, 404, NULL, "none", 0);
  }
}

static int setup(void **state)
{
  struct fixture *fx = calloc(1, sizeof(*fx));

  assert_non_null(fx);
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  uv_timer_init(&fx->loop, &fx->guard);
  uv_timer_start(&fx->guard, on_guard, TEST_GUARD_MS, 0);
  assert_int_equal(stub_start(&fx->stub, &fx->loop, handler, fx), 0);
  assert_int_equal(http_client_new(&fx->loop, &fx->http), 0);
  snprintf(fx->url, sizeof(fx->url), "http://127.0.0.1:%d", fx->stub.port);
  *state = fx;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *fx = *state;

  tearing_down = true;

  if (fx->http)
    http_client_close(fx->http);
  stub_close(&fx->stub);
  uv_close((uv_handle_t *) &fx->guard, NULL);
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&fx->loop), 0);
  free(fx);
  tearing_down = false;
  return 0;
}

static void on_done(void *arg, const struct http_response *resp)
{
  struct result *r = arg;

  /* After a failed assertion the results lived on a frame that is gone. */
  if (tearing_down)
    return;

  assert_false(r->fx->in_send);
  assert_false(r->called);
  r->called = true;
  r->status = resp->status;
  r->curl_error = resp->curl_error;
  r->too_large = resp->too_large;
  r->body_len = resp->body_len;
  snprintf(r->body, sizeof(r->body), "%s", resp->body);
  r->retry_after = resp->retry_after;
  snprintf(r->location, sizeof(r->location), "%s",
           resp->location ? resp->location : "");
  r->fx->done++;
}

static void send_one(struct fixture *fx, const char *method, const char *path,
                     const char *body, long timeout_ms, struct result *r)
{
  static const char *const headers[] = { "X-Test: custom", NULL };
  char url[512];
  struct http_request req = {
    .method = method,
    .url = url,
    .headers = strcmp(path, "/hello") == 0 ? headers : NULL,
    .body = body,
    .body_len = body ? strlen(body) : 0,
    .timeout_ms = timeout_ms,
  };

  r->fx = fx;
  snprintf(url, sizeof(url), "%s%s", fx->url, path);
  fx->in_send = true;
  assert_int_equal(http_client_send(fx->http, &req, on_done, r), 0);
  fx->in_send = false;
}

static void run_until(struct fixture *fx, unsigned done)
{
  while (fx->done < done)
    uv_run(&fx->loop, UV_RUN_ONCE);
}

static void test_get_round_trip(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };

  send_one(fx, "GET", "/hello", NULL, 0, &r);
  assert_int_equal(http_client_active(fx->http), 1);
  assert_false(r.called);
  run_until(fx, 1);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.curl_error, 0);
  assert_string_equal(r.body, "custom"); /* our header reached the server */
  assert_int_equal(r.body_len, 6);
  assert_true(r.retry_after < 0);
  assert_string_equal(r.location, "");
  assert_int_equal(http_client_active(fx->http), 0);
}

static void test_post_and_patch_send_body(void **state)
{
  struct fixture *fx = *state;
  struct result post = { 0 };
  struct result patch = { 0 };
  struct result missing = { 0 };

  send_one(fx, "POST", "/echo", "{\"a\":1}", 0, &post);
  send_one(fx, "PATCH", "/echo", "patched", 0, &patch);
  send_one(fx, "DELETE", "/nothing", NULL, 0, &missing);
  run_until(fx, 3);
  assert_int_equal(post.status, 201);
  assert_string_equal(post.body, "{\"a\":1}");
  assert_string_equal(post.location, "/made/POST");
  assert_int_equal(patch.status, 201);
  assert_string_equal(patch.body, "patched");
  assert_string_equal(patch.location, "/made/PATCH");
  assert_int_equal(missing.status, 404);
  assert_string_equal(missing.body, "none");
}

/* A body streamed from a file: exactly the asked-for slice goes out as
 * a PUT, with its Content-Length; a missing file is refused at once. */
static void test_put_body_from_file(void **state)
{
  struct fixture *fx = *state;
  char path[] = "/tmp/nx-http-body-XXXXXX";
  int fd = mkstemp(path);
  const char *text = "0123456789abcdefghij";
  struct result r = { 0 };
  char url[512];
  struct http_request req = {
    .method = "PUT",
    .url = url,
    .body_file = path,
    .body_offset = 5,
    .body_len = 10,
  };

  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
  close(fd);
  snprintf(url, sizeof(url), "%s/echo", fx->url);
  r.fx = fx;
  assert_int_equal(http_client_send(fx->http, &req, on_done, &r), 0);
  run_until(fx, 1);
  assert_int_equal(r.status, 201);
  assert_string_equal(r.body, "56789abcde");
  assert_string_equal(r.location, "/made/PUT");

  unlink(path);
  assert_int_equal(http_client_send(fx->http, &req, on_done, &r), -ENOENT);
}

static void test_retry_after_fractional_and_date(void **state)
{
  struct fixture *fx = *state;
  struct result frac = { 0 };
  struct result date = { 0 };

  send_one(fx, "GET", "/throttle", NULL, 0, &frac);
  send_one(fx, "GET", "/throttle-date", NULL, 0, &date);
  run_until(fx, 2);
  assert_int_equal(frac.status, 429);
  assert_float_equal(frac.retry_after, 2.128, 1e-9);
  assert_int_equal(date.status, 503);
  assert_true(date.retry_after >= 28 && date.retry_after <= 30);
}

static void test_timeout(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };
  uint64_t start = uv_now(&fx->loop);

  send_one(fx, "GET", "/slow", NULL, 200, &r);
  run_until(fx, 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.curl_error, CURLE_OPERATION_TIMEDOUT);
  assert_true(uv_now(&fx->loop) - start < 2000);
}

static void test_connection_refused(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };
  uv_tcp_t probe;
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  char path[64];

  /* Take a free port and give it back, so nothing listens there. */
  uv_tcp_init(&fx->loop, &probe);
  uv_ip4_addr("127.0.0.1", 0, &addr);
  assert_int_equal(uv_tcp_bind(&probe, (struct sockaddr *) &addr, 0), 0);
  uv_tcp_getsockname(&probe, (struct sockaddr *) &bound, &len);
  uv_close((uv_handle_t *) &probe, NULL);
  uv_run(&fx->loop, UV_RUN_NOWAIT);

  snprintf(fx->url, sizeof(fx->url), "http://127.0.0.1:%d",
           ntohs(((struct sockaddr_in *) &bound)->sin_port));
  snprintf(path, sizeof(path), "/hello");
  send_one(fx, "GET", path, NULL, 0, &r);
  run_until(fx, 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.curl_error, CURLE_COULDNT_CONNECT);
}

static void test_body_limit(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };

  send_one(fx, "GET", "/huge", NULL, 0, &r);
  run_until(fx, 1);
  assert_int_equal(r.status, 0);
  assert_int_not_equal(r.curl_error, 0);
  /* An answer too long to keep is told apart from a network failure. */
  assert_true(r.too_large);
}

#define MANY 40

static void test_many_concurrent(void **state)
{
  struct fixture *fx = *state;
  struct result r[MANY];

  memset(r, 0, sizeof(r));
  for (int i = 0; i < MANY; i++) {
    char path[32];

    snprintf(path, sizeof(path), "/n/%d", i);
    send_one(fx, "GET", path, NULL, 0, &r[i]);
  }
  assert_int_equal(http_client_active(fx->http), MANY);
  run_until(fx, MANY);
  for (int i = 0; i < MANY; i++) {
    char want[32];

    snprintf(want, sizeof(want), "%d", i);
    assert_int_equal(r[i].status, 200);
    assert_string_equal(r[i].body, want);
  }
  assert_int_equal(fx->stub.requests, MANY);
}

static void test_keepalive_reuses_connection(void **state)
{
  struct fixture *fx = *state;
  struct result r[5];

  memset(r, 0, sizeof(r));
  for (unsigned i = 0; i < 5; i++) {
    send_one(fx, "GET", "/hello", NULL, 0, &r[i]);
    run_until(fx, i + 1);
    assert_int_equal(r[i].status, 200);
  }
  assert_int_equal(fx->stub.connections, 1);
}

static void on_close_timer(uv_timer_t *timer)
{
  struct fixture *fx = timer->data;

  http_client_close(fx->http);
  fx->http = NULL;
  uv_close((uv_handle_t *) timer, NULL);
}

static void test_close_aborts_in_flight(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };

  send_one(fx, "GET", "/slow", NULL, 0, &r);
  uv_timer_init(&fx->loop, &fx->aux);
  fx->aux.data = fx;
  uv_timer_start(&fx->aux, on_close_timer, 100, 0);
  run_until(fx, 1);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.curl_error, CURLE_ABORTED_BY_CALLBACK);
  assert_null(fx->http);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_get_round_trip, setup, teardown),
    cmocka_unit_test_setup_teardown(test_post_and_patch_send_body, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_put_body_from_file, setup, teardown),
    cmocka_unit_test_setup_teardown(test_retry_after_fractional_and_date, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
    cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_body_limit, setup, teardown),
    cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
    cmocka_unit_test_setup_teardown(test_keepalive_reuses_connection, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_close_aborts_in_flight, setup,
                                    teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
