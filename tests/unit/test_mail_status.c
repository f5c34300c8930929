/* SPDX-License-Identifier: MIT */
/* The status API behind a real listener and a real queue: the service
 * credential is required (401 with a Basic challenge), each state reads
 * as Nextal is told it will, Message-ID look-ups name the other messages
 * that share it, and unknown ids are 404 in JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "credential.h"
#include "http_router.h"
#include "http_server.h"
#include "mail_status.h"
#include "queue.h"
#include "store.h"

#define TEST_REPLY_MAX 8192
/* "nextal:pw" and "nextal:wrong" in base64. */
#define TEST_AUTH "Authorization: Basic bmV4dGFsOnB3\r\n"
#define TEST_BAD_AUTH "Authorization: Basic bmV4dGFsOndyb25n\r\n"

struct test_case {
  const char *target;
  const char *auth; /* header line or "" */
  int status;       /* filled by the client */
  int challenged;   /* a WWW-Authenticate: Basic came back */
  json_t *body;
};

static struct test_case test_cases[] = {
  { .target = "/v1/messages/Q1", .auth = "" },
  { .target = "/v1/messages/Q1", .auth = TEST_BAD_AUTH },
  { .target = "/v1/messages/Q1", .auth = TEST_AUTH },
  { .target = "/v1/messages/Q2", .auth = TEST_AUTH },
  { .target = "/v1/messages?message_id=%3Cm1%40x%3E", .auth = TEST_AUTH },
  { .target = "/v1/messages/Q4", .auth = TEST_AUTH },
  { .target = "/v1/messages/NOPE", .auth = TEST_AUTH },
  { .target = "/v1/messages", .auth = TEST_AUTH },
};

#define TEST_NCASES (sizeof(test_cases) / sizeof(*test_cases))

static int test_port;
static uv_async_t test_stop;

/* One request on its own connection; reads the answer to EOF. */
static void test_fetch(struct test_case *c)
{
  struct sockaddr_in sa = { .sin_family = AF_INET };
  char req[512];
  char reply[TEST_REPLY_MAX];
  size_t len = 0;
  ssize_t n;
  const char *body;
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  sa.sin_port = htons((uint16_t) test_port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
  snprintf(req, sizeof(req),
           "GET %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n",
           c->target, c->auth);
  assert_int_equal(write(fd, req, strlen(req)), (ssize_t) strlen(req));
  while (len < sizeof(reply) - 1
         && (n = read(fd, reply + len, sizeof(reply) - 1 - len)) > 0)
    len += (size_t) n;
  close(fd);
  reply[len] = '\0';
  assert_int_equal(sscanf(reply, "HTTP/1.1 %d", &c->status), 1);
  body = strstr(reply, "\r\n\r\n");
  assert_non_null(body);
  c->challenged = strstr(reply, "WWW-Authenticate: Basic") != NULL
                  && strstr(reply, "WWW-Authenticate: Basic") < body;
  c->body = json_loads(body + 4, 0, NULL);
}

static void *test_client(void *arg)
{
  (void) arg;
  for (size_t i = 0; i < TEST_NCASES; i++)
    test_fetch(&test_cases[i]);
  uv_async_send(&test_stop);
  return NULL;
}

static void test_stop_cb(uv_async_t *async)
{
  uv_close((uv_handle_t *) async, NULL);
  http_server_close(async->data);
}

/* Q1 sent and Q3 queued share m1 (other envelopes); Q2 failed; Q4
 * waits for pacing. */
static void test_fill_queue(struct store *store, const char *dir)
{
  static const char *const rcpts[] = { "cand@example.net" };
  const char *ids[] = { "Q1", "Q2", "Q3", "Q4" };
  const char *mids[] = { "m1@x", "m2@x", "m1@x", "m4@x" };
  struct queue_entry e;

  for (size_t i = 0; i < 4; i++) {
    char path[128];

    snprintf(path, sizeof(path), "%s/%s", dir, ids[i]);
    assert_int_equal(
        queue_insert(store, ids[i], "alice@c", rcpts, 1, mids[i], 10, path), 0);
    assert_int_equal(queue_find(store, ids[i], NULL, &e), 0);
    if (i == 0)
      queue_mark_sent(store, e.rowid);
    else if (i == 1)
      queue_mark_failed(store, e.rowid, "ErrorInvalidRecipients",
                        "Recipient isn't resolved");
    else if (i == 3)
      queue_defer(store, e.rowid, store_now_ms() + 60000);
    queue_entry_free(&e);
  }
}

static const char *test_str(json_t *obj, const char *key)
{
  return json_string_value(json_object_get(obj, key));
}

static void test_check_replies(void)
{
  struct test_case *c = test_cases;
  json_t *err;

  assert_int_equal(c[0].status, 401);
  assert_true(c[0].challenged);
  assert_string_equal(test_str(json_object_get(c[0].body, "error"), "code"),
                      "unauthenticated");
  assert_int_equal(c[1].status, 401);

  assert_int_equal(c[2].status, 200);
  assert_string_equal(test_str(c[2].body, "state"), "sent");
  assert_string_equal(test_str(c[2].body, "message_id"), "<m1@x>");
  assert_non_null(test_str(c[2].body, "sent_at"));
  assert_true(json_is_null(json_object_get(c[2].body, "error")));

  err = json_object_get(c[3].body, "error");
  assert_string_equal(test_str(c[3].body, "state"), "failed");
  assert_string_equal(test_str(err, "code"), "ErrorInvalidRecipients");
  assert_string_equal(test_str(err, "reason"), "Recipient isn't resolved");
  assert_true(json_is_null(json_object_get(c[3].body, "sent_at")));

  /* The newest with this Message-ID, naming the other. */
  assert_int_equal(c[4].status, 200);
  assert_string_equal(test_str(c[4].body, "queue_id"), "Q3");
  assert_string_equal(json_string_value(json_array_get(
                          json_object_get(c[4].body, "same_message_id"), 0)),
                      "Q1");

  assert_string_equal(test_str(c[5].body, "state"), "queued");
  assert_non_null(test_str(c[5].body, "next_attempt_at"));

  assert_int_equal(c[6].status, 404);
  assert_string_equal(test_str(json_object_get(c[6].body, "error"), "code"),
                      "not_found");
  assert_int_equal(c[7].status, 400);
}

static void test_status_api(void **state)
{
  struct mail_status_deps deps = { 0 };
  struct http_router *router = http_router_new();
  struct http_server *server = NULL;
  char dir[] = "/tmp/test_mail_status_XXXXXX";
  char db[128];
  char err[256];
  char *hash = NULL;
  uv_loop_t loop;
  pthread_t thread;

  (void) state;
  assert_non_null(mkdtemp(dir));
  snprintf(db, sizeof(db), "%s/agent.db", dir);
  assert_int_equal(store_open(db, &deps.store, err, sizeof(err)), 0);
  assert_int_equal(credential_hash("pw", &hash), 0);
  assert_int_equal(credential_new("nextal", hash, &deps.credential), 0);
  test_fill_queue(deps.store, dir);
  assert_int_equal(mail_status_register(router, &deps), 0);

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

  test_check_replies();
  for (size_t i = 0; i < TEST_NCASES; i++)
    json_decref(test_cases[i].body);
  http_router_free(router);
  credential_free(deps.credential);
  free(hash);
  store_close(deps.store);
  for (size_t i = 0; i < 3; i++) {
    static const char *const suffix[] = { "", "-wal", "-shm" };

    snprintf(err, sizeof(err), "%s%s", db, suffix[i]);
    unlink(err);
  }
  assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_status_api),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
