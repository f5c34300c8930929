/* SPDX-License-Identifier: MIT */
/* graph_client against an in-process stub playing both the token endpoint
 * and Graph: per-mailbox concurrency, headers, the 401 retry, error bodies
 * and failures without an HTTP answer. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "graph_client.h"
#include "http_client.h"
#include "token_cache.h"
#include "xalloc.h"

#include "http_stub.c"

#define TEST_GUARD_MS 10000
#define TEST_MAX_IN_FLIGHT 4
#define TEST_HOLD_MS 80 /* how long the stub holds each Graph request */

enum token_mode {
  TOKEN_OK,
  TOKEN_INVALID_GRANT,
};

struct fixture {
  uv_loop_t loop;
  uv_timer_t guard;
  struct stub_server stub;
  struct http_client *http;
  struct config cfg;
  struct token_cache *tokens;
  struct graph_client *graph;
  enum token_mode token_mode;
  unsigned issued; /* access tokens handed out */
  unsigned token_requests;
  unsigned graph_requests;
  unsigned now_a, max_a; /* concurrent requests for mailbox a, seen by stub */
  unsigned now_b, max_b;
  int arrivals_a[32]; /* X-Seq of mailbox a's requests, in arrival order */
  unsigned narrivals_a;
  char last_headers[1024]; /* of the last Graph request, "name=value;" */
  bool upload_had_auth;    /* the last upload URL request had Authorization */
  char upload_range[64];
  unsigned done;
  unsigned done_order; /* completion counter */
};

struct result {
  struct fixture *fx;
  bool called;
  long status;
  char code[64];
  char message[512];
  char body[256];
  double retry_after;
  bool permanent;
  unsigned order; /* 1 for the first completion of the test, ... */
};

/* Set while a test's fixture is torn down: callbacks then ignore results. */
static bool tearing_down;

static void on_guard(uv_timer_t *timer)
{
  fail_msg("test did not finish within %d ms", TEST_GUARD_MS);
}

static void token_endpoint(struct fixture *fx, struct stub_conn *conn)
{
  char body[256];

  fx->token_requests++;
  if (fx->token_mode == TOKEN_INVALID_GRANT) {
    stub_reply(conn, 400, NULL,
               "{\"error\":\"invalid_grant\",\"error_description\":"
               "\"AADSTS700082: expired\",\"error_codes\":[700082]}",
               0);
    return;
  }
  fx->issued++;
  snprintf(body, sizeof(body),
           "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
           "\"access_token\":\"tok-%u\"}",
           fx->issued);
  stub_reply(conn, 200, NULL, body, 0);
}

/* Counts a request as in flight for its mailbox until the reply is sent. */
static void count_mailbox(struct fixture *fx, struct stub_conn *conn,
                          const struct stub_request *req, const char *user)
{
  const char *seq = stub_header(req, "X-Seq");

  snprintf(conn->tag, sizeof(conn->tag), "%s", user);
  if (strcmp(user, "a@x.test") == 0) {
    if (++fx->now_a > fx->max_a)
      fx->max_a = fx->now_a;
    assert_true(graph_client_in_flight(fx->graph, "A@X.test")
                <= TEST_MAX_IN_FLIGHT);
    if (seq && fx->narrivals_a < 32)
      fx->arrivals_a[fx->narrivals_a++] = (int) strtol(seq, NULL, 10);
  } else if (strcmp(user, "b@x.test") == 0) {
    if (++fx->now_b > fx->max_b)
      fx->max_b = fx->now_b;
  }
}

static void on_sent(struct stub_server *srv, struct stub_conn *conn)
{
  struct fixture *fx = srv->data;

  if (strcmp(conn->tag, "a@x.test") == 0)
    fx->now_a--;
  else if (strcmp(conn->tag, "b@x.test") == 0)
    fx->now_b--;
  conn->tag[0] = '\0';
}

static void graph_endpoint(struct fixture *fx, struct stub_conn *conn,
                           const struct stub_request *req, const char *user,
                           const char *rest)
{
  const char *auth = stub_header(req, "Authorization");
  size_t n = 0;

  fx->graph_requests++;
  fx->last_headers[0] = '\0';
  for (size_t i = 0; i < req->nheaders; i++) {
    int w = snprintf(fx->last_headers + n, sizeof(fx->last_headers) - n,
                     "%s=%s;", req->names[i], req->values[i]);

    if (w > 0 && (size_t) w < sizeof(fx->last_headers) - n)
      n += (size_t) w;
  }
  if (!auth || strncmp(auth, "Bearer tok-", 11) != 0) {
    stub_reply(conn, 401, NULL, "{\"error\":{\"code\":\"NoToken\"}}", 0);
  } else if (strcmp(rest, "/hold") == 0) {
    count_mailbox(fx, conn, req, user);
    stub_reply(conn, 202, NULL, NULL, TEST_HOLD_MS);
  } else if (strcmp(rest, "/expired") == 0
             && strcmp(auth, "Bearer tok-1") == 0) {
    stub_reply(conn, 401, NULL,
               "{\"error\":{\"code\":\"InvalidAuthenticationToken\","
               "\"message\":\"Access token has expired or is not yet "
               "valid.\"}}",
               0);
  } else if (strcmp(rest, "/expired") == 0) {
    stub_reply(conn, 200, NULL, "{\"ok\":true}", 0);
  } else if (strcmp(rest, "/always401") == 0) {
    stub_reply(conn, 401, NULL,
               "{\"error\":{\"code\":\"InvalidAuthenticationToken\","
               "\"message\":\"nope\"}}",
               0);
  } else if (strcmp(rest, "/throttled") == 0) {
    stub_reply(conn, 429, "Retry-After: 2.128\r\n",
               "{\"error\":{\"code\":\"ApplicationThrottled\",\"message\":"
               "\"Application is over its MailboxConcurrency limit.\"}}",
               0);
  } else if (strcmp(rest, "/echo") == 0) {
    stub_reply(conn, 201, NULL, req->body, 0);
  } else if (strcmp(rest, "/huge") == 0) {
    size_t len = 17 * 1024 * 1024;
    char *big = malloc(len + 1);

    assert_non_null(big);
    memset(big, 'x', len);
    big[len] = '\0';
    stub_reply(conn, 200, NULL, big, 0);
    free(big);
  } else {
    stub_reply(conn, 404, NULL,
               "{\"error\":{\"code\":\"ErrorItemNotFound\",\"message\":"
               "\"The specified object was not found in the store.\"}}",
               0);
  }
}

static void handler(struct stub_server *srv, struct stub_conn *conn,
                    const struct stub_request *req)
{
  struct fixture *fx = srv->data;
  char user[128];
  const char *p;
  const char *slash;

  if (strcmp(req->url, "/tenant-1/oauth2/v2.0/token") == 0) {
    token_endpoint(fx, conn);
    return;
  }
  if (strncmp(req->url, "/upload/", 8) == 0) {
    /* An upload session URL: pre-authenticated, must come without a
     * bearer token. */
    const char *range = stub_header(req, "Content-Range");

    fx->upload_had_auth = stub_header(req, "Authorization") != NULL;
    snprintf(fx->upload_range, sizeof(fx->upload_range), "%s",
             range ? range : "");
    stub_reply(conn, 200, NULL, req->body, 0);
    return;
  }
  p = strncmp(req->url, "/v1.0/users/", 12) == 0 ? req->url + 12 : NULL;
  slash = p ? strchr(p, '/') : NULL;
  if (!slash || (size_t) (slash - p) >= sizeof(user)) {
    stub_reply(conn, 400, NULL, "{}", 0);
    return;
  }
  memcpy(user, p, (size_t) (slash - p));
  user[slash - p] = '\0';
  graph_endpoint(fx, conn, req, user, slash);
}

static int setup_with_graph_url(void **state, const char *graph_url)
{
  struct fixture *fx = calloc(1, sizeof(*fx));
  char url[64];

  assert_non_null(fx);
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  uv_timer_init(&fx->loop, &fx->guard);
  uv_timer_start(&fx->guard, on_guard, TEST_GUARD_MS, 0);
  assert_int_equal(stub_start(&fx->stub, &fx->loop, handler, fx), 0);
  fx->stub.sent = on_sent;
  assert_int_equal(http_client_new(&fx->loop, &fx->http), 0);

  snprintf(url, sizeof(url), "http://127.0.0.1:%d", fx->stub.port);
  config_defaults(&fx->cfg);
  free(fx->cfg.login_base_url);
  fx->cfg.login_base_url = xstrdup(url);
  fx->cfg.tenant = xstrdup("tenant-1");
  fx->cfg.client_id = xstrdup("client-1");
  fx->cfg.client_secret = xstrdup("secret");
  fx->cfg.link_mode = CONFIG_LINK_APPLICATION;
  assert_int_equal(
      token_cache_new(&fx->loop, fx->http, &fx->cfg, NULL, NULL, &fx->tokens),
      0);
  assert_int_equal(graph_client_new(&fx->loop, fx->http, fx->tokens,
                                    graph_url ? graph_url : url,
                                    TEST_MAX_IN_FLIGHT, &fx->graph),
                   0);
  *state = fx;
  return 0;
}

static int setup(void **state)
{
  return setup_with_graph_url(state, NULL);
}

static int setup_dead_graph(void **state)
{
  return setup_with_graph_url(state, "http://127.0.0.1:1/");
}

static int teardown(void **state)
{
  struct fixture *fx = *state;

  tearing_down = true;

  if (fx->graph)
    graph_client_close(fx->graph);
  token_cache_free(fx->tokens);
  http_client_close(fx->http);
  stub_close(&fx->stub);
  uv_close((uv_handle_t *) &fx->guard, NULL);
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&fx->loop), 0);
  config_free(&fx->cfg);
  free(fx);
  tearing_down = false;
  return 0;
}

static void on_done(void *arg, const struct graph_response *resp)
{
  struct result *r = arg;

  /* After a failed assertion the results lived on a frame that is gone. */
  if (tearing_down)
    return;

  assert_false(r->called);
  r->called = true;
  r->status = resp->status;
  snprintf(r->code, sizeof(r->code), "%s", resp->error_code);
  snprintf(r->message, sizeof(r->message), "%s", resp->error_message);
  snprintf(r->body, sizeof(r->body), "%s", resp->body ? resp->body : "");
  r->retry_after = resp->retry_after;
  r->permanent = resp->token_permanent;
  r->order = ++r->fx->done_order;
  r->fx->done++;
}

static void send_req(struct fixture *fx, const char *mailbox,
                     const char *method, const char *rest, const char *body,
                     int seq, struct result *r)
{
  char path[256];
  char seqh[32];
  const char *headers[] = { seqh, NULL };
  struct graph_request req = {
    .mailbox = mailbox,
    .method = method,
    .path = path,
    .content_type = body ? "application/json" : NULL,
    .body = body,
    .body_len = body ? strlen(body) : 0,
    .headers = headers,
  };
  char lower[128];

  snprintf(lower, sizeof(lower), "%s", mailbox);
  for (char *c = lower; *c; c++)
    *c = (char) tolower((unsigned char) *c);
  snprintf(path, sizeof(path), "/v1.0/users/%s%s", lower, rest);
  snprintf(seqh, sizeof(seqh), "X-Seq: %d", seq);
  r->fx = fx;
  graph_client_send(fx->graph, &req, on_done, r);
  assert_false(r->called); /* never from inside graph_client_send */
}

static void run_until(struct fixture *fx, unsigned done)
{
  while (fx->done < done)
    uv_run(&fx->loop, UV_RUN_ONCE);
}

#define NA 10
#define NB 2

static void test_per_mailbox_limit_and_fairness(void **state)
{
  struct fixture *fx = *state;
  struct result a[NA];
  struct result b[NB];

  memset(a, 0, sizeof(a));
  memset(b, 0, sizeof(b));
  for (int i = 0; i < NA; i++)
    send_req(fx, i % 2 ? "A@X.test" : "a@x.test", "POST", "/hold", "{}", i,
             &a[i]);
  for (int i = 0; i < NB; i++)
    send_req(fx, "b@x.test", "POST", "/hold", "{}", i, &b[i]);
  run_until(fx, NA + NB);

  /* Mailbox a never had more than the limit at Graph, but did reach it. */
  assert_int_equal(fx->max_a, TEST_MAX_IN_FLIGHT);
  assert_int_equal(fx->max_b, NB);
  for (int i = 0; i < NA; i++) {
    assert_int_equal(a[i].status, 202);
    assert_int_equal(fx->arrivals_a[i], i); /* FIFO */
  }
  /* b did not wait behind a's queue: it finished within a's first wave. */
  for (int i = 0; i < NB; i++) {
    assert_int_equal(b[i].status, 202);
    assert_true(b[i].order <= TEST_MAX_IN_FLIGHT + NB);
  }
  assert_true(a[NA - 1].order > TEST_MAX_IN_FLIGHT + NB);
  assert_int_equal(fx->token_requests, 1);
  assert_int_equal(graph_client_in_flight(fx->graph, "a@x.test"), 0);
}

static void test_headers_and_body(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };

  send_req(fx, "a@x.test", "POST", "/echo", "{\"m\":1}", 7, &r);
  run_until(fx, 1);
  assert_int_equal(r.status, 201);
  assert_string_equal(r.body, "{\"m\":1}");
  assert_string_equal(r.code, "");
  assert_non_null(strstr(fx->last_headers, "Authorization=Bearer tok-1;"));
  assert_non_null(strstr(fx->last_headers, "Accept=application/json;"));
  assert_non_null(strstr(fx->last_headers, "Content-Type=application/json;"));
  assert_non_null(strstr(fx->last_headers, "Prefer=IdType=\"ImmutableId\";"));
  /* Once: callers add no second copy. */
  assert_null(strstr(strstr(fx->last_headers, "Prefer=") + 1, "Prefer="));
  assert_non_null(strstr(fx->last_headers, "X-Seq=7;"));

  const char *rid = strstr(fx->last_headers, "client-request-id=");

  assert_non_null(rid);
  rid += strlen("client-request-id=");
  assert_int_equal(strcspn(rid, ";"), 36);
  assert_int_equal(rid[8], '-');
  assert_int_equal(rid[14], '4');
}

/* An upload URL is sent as given, without Authorization and without
 * asking the token cache, its body read from a file. */
static void test_upload_url_without_token(void **state)
{
  struct fixture *fx = *state;
  char path[] = "/tmp/nx-graph-upload-XXXXXX";
  int fd = mkstemp(path);
  char url[128];
  const char *headers[] = { "Content-Range: bytes 2-5/8", NULL };
  struct result r = { 0 };
  struct graph_request req = {
    .mailbox = "a@x.test",
    .method = "PUT",
    .upload_url = url,
    .content_type = "application/octet-stream",
    .headers = headers,
    .body_file = path,
    .body_offset = 2,
    .body_len = 4,
  };

  assert_true(fd >= 0);
  assert_int_equal(write(fd, "abcdefgh", 8), 8);
  close(fd);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/upload/s1?authtoken=x",
           fx->stub.port);
  r.fx = fx;
  graph_client_send(fx->graph, &req, on_done, &r);
  run_until(fx, 1);
  unlink(path);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "cdef");
  assert_false(fx->upload_had_auth);
  assert_string_equal(fx->upload_range, "bytes 2-5/8");
  assert_int_equal(fx->token_requests, 0);
}

static void test_expired_token_refreshed_and_retried_once(void **state)
{
  struct fixture *fx = *state;
  struct result ok = { 0 };
  struct result bad = { 0 };

  send_req(fx, "a@x.test", "GET", "/expired", NULL, 0, &ok);
  run_until(fx, 1);
  assert_int_equal(ok.status, 200);
  assert_int_equal(fx->token_requests, 2);
  assert_int_equal(fx->graph_requests, 2);

  /* A token that keeps failing is retried once, then reported. */
  send_req(fx, "a@x.test", "GET", "/always401", NULL, 0, &bad);
  run_until(fx, 2);
  assert_int_equal(bad.status, 401);
  assert_string_equal(bad.code, "InvalidAuthenticationToken");
  assert_int_equal(fx->graph_requests, 4);
  assert_int_equal(fx->token_requests, 3);
}

static void test_error_body_and_retry_after(void **state)
{
  struct fixture *fx = *state;
  struct result missing = { 0 };
  struct result throttled = { 0 };

  send_req(fx, "a@x.test", "GET", "/events/nope", NULL, 0, &missing);
  send_req(fx, "a@x.test", "POST", "/throttled", "{}", 1, &throttled);
  run_until(fx, 2);
  assert_int_equal(missing.status, 404);
  assert_string_equal(missing.code, "ErrorItemNotFound");
  assert_string_equal(missing.message,
                      "The specified object was not found in the store.");
  assert_int_equal(throttled.status, 429);
  assert_string_equal(throttled.code, "ApplicationThrottled");
  assert_float_equal(throttled.retry_after, 2.128, 1e-9);
}

static void test_token_failure_reported(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };

  fx->token_mode = TOKEN_INVALID_GRANT;
  send_req(fx, "a@x.test", "GET", "/hold", NULL, 0, &r);
  run_until(fx, 1);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.code, "invalid_grant");
  assert_non_null(strstr(r.message, "AADSTS700082"));
  assert_true(r.permanent);
  assert_int_equal(fx->graph_requests, 0);
}

static void test_transport_failure_is_network(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };

  send_req(fx, "a@x.test", "GET", "/hold", NULL, 0, &r);
  run_until(fx, 1);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.code, "network");
  assert_false(r.permanent);
  assert_int_not_equal(r.message[0], '\0');
}

static void test_reply_over_the_limit_is_not_network(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };

  send_req(fx, "a@x.test", "GET", "/huge", NULL, 0, &r);
  run_until(fx, 1);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.code, GRAPH_REPLY_TOO_LARGE);
  assert_non_null(strstr(r.message, "limit"));
}

static void test_close_cancels_queued(void **state)
{
  struct fixture *fx = *state;
  struct result r[6];

  memset(r, 0, sizeof(r));
  for (int i = 0; i < 6; i++)
    send_req(fx, "a@x.test", "POST", "/hold", "{}", i, &r[i]);
  graph_client_close(fx->graph);
  fx->graph = NULL;
  for (int i = 0; i < 6; i++) {
    assert_true(r[i].called);
    assert_string_equal(r[i].code, "cancelled");
  }
  assert_int_equal(fx->graph_requests, 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_per_mailbox_limit_and_fairness, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_headers_and_body, setup, teardown),
    cmocka_unit_test_setup_teardown(test_upload_url_without_token, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(
        test_expired_token_refreshed_and_retried_once, setup, teardown),
    cmocka_unit_test_setup_teardown(test_error_body_and_retry_after, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_token_failure_reported, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_reply_over_the_limit_is_not_network,
                                    setup, teardown),
    cmocka_unit_test_setup_teardown(test_transport_failure_is_network,
                                    setup_dead_graph, teardown),
    cmocka_unit_test_setup_teardown(test_close_cancels_queued, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
