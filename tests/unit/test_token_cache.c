/* SPDX-License-Identifier: MIT */
/* token_cache against an in-process token endpoint stub: client
 * credentials, caching, shared refreshes, error mapping, the delegated
 * refresh-token grant with rotation (stored encrypted) and the re-link
 * mark when the grant is gone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "http_client.h"
#include "links.h"
#include "store.h"
#include "token_cache.h"
#include "token_crypt.h"
#include "xalloc.h"

#include "http_stub.c"

#define TEST_GUARD_MS 10000

enum endpoint_mode {
  ENDPOINT_OK,
  ENDPOINT_INVALID_GRANT,
  ENDPOINT_UNAVAILABLE,
  ENDPOINT_CONSENT_GONE,
};

struct fixture {
  uv_loop_t loop;
  uv_timer_t guard;
  struct stub_server stub;
  struct http_client *http;
  struct config cfg;
  struct store *store;
  char dir[64];
  char db[128];
  char key[128];
  struct token_crypt *crypt;
  struct token_cache *tokens;
  enum endpoint_mode mode;
  unsigned issued;      /* access tokens handed out */
  int expires_in;       /* seconds the endpoint gives a token (0: 3599) */
  char last_form[1024]; /* body of the last token request */
  unsigned done;
};

struct result {
  struct fixture *fx;
  bool called;
  char token[64];
  char error[64];
  char description[256];
  bool permanent;
};

/* Set while a test's fixture is torn down: callbacks then ignore results. */
static bool tearing_down;

static void on_guard(uv_timer_t *timer)
{
  fail_msg("test did not finish within %d ms", TEST_GUARD_MS);
}

static void endpoint(struct stub_server *srv, struct stub_conn *conn,
                     const struct stub_request *req)
{
  struct fixture *fx = srv->data;
  char body[512];

  snprintf(fx->last_form, sizeof(fx->last_form), "%s", req->body);
  if (strcmp(req->url, "/tenant-1/oauth2/v2.0/token") != 0
      || strcmp(req->method, "POST") != 0) {
    stub_reply(conn, 404, NULL, "{}", 0);
    return;
  }
  switch (fx->mode) {
    case ENDPOINT_OK:
      fx->issued++;
      snprintf(body, sizeof(body),
               "{\"token_type\":\"Bearer\",\"expires_in\":%d,"
               "\"access_token\":\"tok-%u\",\"refresh_token\":\"rt-%u\"}",
               fx->expires_in ? fx->expires_in : 3599, fx->issued,
               fx->issued + 1);
      /* The delay lets concurrent callers pile up behind one refresh. */
      stub_reply(conn, 200, "Content-Type: application/json\r\n", body, 50);
      break;
    case ENDPOINT_INVALID_GRANT:
      stub_reply(conn, 400, NULL,
                 "{\"error\":\"invalid_grant\",\"error_description\":"
                 "\"AADSTS50057: The user account is disabled.\","
                 "\"error_codes\":[50057]}",
                 0);
      break;
    case ENDPOINT_CONSENT_GONE:
      stub_reply(conn, 400, NULL,
                 "{\"error\":\"interaction_required\",\"error_description\":"
                 "\"AADSTS65001: The user or administrator has not "
                 "consented.\"}",
                 0);
      break;
    case ENDPOINT_UNAVAILABLE:
      stub_reply(conn, 503, NULL,
                 "{\"error\":\"temporarily_unavailable\","
                 "\"error_description\":\"AADSTS50057: try later\"}",
                 0);
      break;
  }
}

static int setup_mode(void **state, enum config_link_mode mode)
{
  struct fixture *fx = calloc(1, sizeof(*fx));
  char err[256];

  assert_non_null(fx);
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  uv_timer_init(&fx->loop, &fx->guard);
  uv_timer_start(&fx->guard, on_guard, TEST_GUARD_MS, 0);
  assert_int_equal(stub_start(&fx->stub, &fx->loop, endpoint, fx), 0);
  assert_int_equal(http_client_new(&fx->loop, &fx->http), 0);

  config_defaults(&fx->cfg);
  free(fx->cfg.login_base_url);
  fx->cfg.login_base_url = xasprintf("http://127.0.0.1:%d", fx->stub.port);
  fx->cfg.tenant = xstrdup("tenant-1");
  fx->cfg.client_id = xstrdup("client-1");
  fx->cfg.client_secret = xstrdup("s&cret=1");
  fx->cfg.link_mode = mode;

  snprintf(fx->dir, sizeof(fx->dir), "/tmp/nx-token-XXXXXX");
  assert_non_null(mkdtemp(fx->dir));
  snprintf(fx->db, sizeof(fx->db), "%s/agent.db", fx->dir);
  assert_int_equal(store_open(fx->db, &fx->store, err, sizeof(err)), 0);
  snprintf(fx->key, sizeof(fx->key), "%s/agent.db.key", fx->dir);
  assert_int_equal(
      token_crypt_open(fx->key, false, &fx->crypt, err, sizeof(err)), 0);
  assert_int_equal(token_cache_new(&fx->loop, fx->http, &fx->cfg, fx->store,
                                   fx->crypt, &fx->tokens),
                   0);
  *state = fx;
  return 0;
}

static int setup_app(void **state)
{
  return setup_mode(state, CONFIG_LINK_APPLICATION);
}

static int setup_delegated(void **state)
{
  return setup_mode(state, CONFIG_LINK_DELEGATED);
}

static int teardown(void **state)
{
  struct fixture *fx = *state;

  tearing_down = true;
  char path[160];

  token_cache_free(fx->tokens);
  http_client_close(fx->http);
  stub_close(&fx->stub);
  uv_close((uv_handle_t *) &fx->guard, NULL);
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&fx->loop), 0);
  store_close(fx->store);
  token_crypt_free(fx->crypt);
  config_free(&fx->cfg);
  unlink(fx->key);
  unlink(fx->db);
  snprintf(path, sizeof(path), "%s-wal", fx->db);
  unlink(path);
  snprintf(path, sizeof(path), "%s-shm", fx->db);
  unlink(path);
  rmdir(fx->dir);
  free(fx);
  tearing_down = false;
  return 0;
}

static void on_token(void *arg, const char *token, const char *error,
                     const char *description, bool permanent)
{
  struct result *r = arg;

  /* After a failed assertion the results lived on a frame that is gone. */
  if (tearing_down)
    return;

  assert_false(r->called);
  r->called = true;
  snprintf(r->token, sizeof(r->token), "%s", token ? token : "");
  snprintf(r->error, sizeof(r->error), "%s", error ? error : "");
  snprintf(r->description, sizeof(r->description), "%s",
           description ? description : "");
  r->permanent = permanent;
  r->fx->done++;
}

static void get(struct fixture *fx, const char *mailbox, struct result *r)
{
  r->fx = fx;
  token_cache_get(fx->tokens, mailbox, on_token, r);
}

static void run_until(struct fixture *fx, unsigned done)
{
  while (fx->done < done)
    uv_run(&fx->loop, UV_RUN_ONCE);
}

static void test_app_token_cached_and_reused(void **state)
{
  struct fixture *fx = *state;
  struct result first = { 0 };
  struct result again = { 0 };
  struct result fresh = { 0 };

  get(fx, "a@example.com", &first);
  assert_false(first.called);
  run_until(fx, 1);
  assert_string_equal(first.token, "tok-1");
  assert_non_null(strstr(fx->last_form, "client_id=client-1"));
  assert_non_null(strstr(fx->last_form, "client_secret=s%26cret%3D1"));
  assert_non_null(strstr(fx->last_form, "grant_type=client_credentials"));
  assert_non_null(strstr(fx->last_form,
                         "scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"));

  /* Any mailbox shares the tenant's token, straight from the cache. */
  get(fx, "b@example.com", &again);
  assert_true(again.called);
  assert_string_equal(again.token, "tok-1");
  assert_int_equal(fx->stub.requests, 1);

  token_cache_invalidate(fx->tokens, "a@example.com");
  get(fx, "a@example.com", &fresh);
  run_until(fx, 3);
  assert_string_equal(fresh.token, "tok-2");
  assert_int_equal(fx->stub.requests, 2);
}

#define WAITERS 12

static void test_one_refresh_for_many_waiters(void **state)
{
  struct fixture *fx = *state;
  struct result r[WAITERS];

  memset(r, 0, sizeof(r));
  for (int i = 0; i < WAITERS; i++)
    get(fx, "a@example.com", &r[i]);
  run_until(fx, WAITERS);
  for (int i = 0; i < WAITERS; i++)
    assert_string_equal(r[i].token, "tok-1");
  assert_int_equal(fx->stub.requests, 1);
}

static void on_wait(uv_timer_t *timer)
{
  (void) timer;
}

/* Runs the loop for ms milliseconds of loop time. */
static void wait_ms(struct fixture *fx, uint64_t ms)
{
  uv_timer_t timer;

  uv_timer_init(&fx->loop, &timer);
  uv_timer_start(&timer, on_wait, ms, 0);
  uv_run(&fx->loop, UV_RUN_ONCE);
  while (uv_is_active((uv_handle_t *) &timer))
    uv_run(&fx->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *) &timer, NULL);
  uv_run(&fx->loop, UV_RUN_NOWAIT);
}

/* A token is replaced before it expires: with a 2 s lifetime the margin
 * is 10% (200 ms), so the token is reused at 1 s and replaced at 1.85 s,
 * while the endpoint would still accept it. */
static void test_token_refreshed_ahead_of_expiry(void **state)
{
  struct fixture *fx = *state;
  struct result first = { 0 };
  struct result early = { 0 };
  struct result late = { 0 };

  fx->expires_in = 2;
  get(fx, NULL, &first);
  run_until(fx, 1);
  assert_string_equal(first.token, "tok-1");

  wait_ms(fx, 1000);
  get(fx, NULL, &early);
  assert_true(early.called);
  assert_string_equal(early.token, "tok-1");
  assert_int_equal(fx->stub.requests, 1);

  wait_ms(fx, 850);
  get(fx, NULL, &late);
  assert_false(late.called);
  run_until(fx, 3);
  assert_string_equal(late.token, "tok-2");
  assert_int_equal(fx->stub.requests, 2);
}

static void test_invalid_grant_is_permanent(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };

  fx->mode = ENDPOINT_INVALID_GRANT;
  get(fx, NULL, &r);
  run_until(fx, 1);
  assert_string_equal(r.token, "");
  assert_string_equal(r.error, "invalid_grant");
  assert_true(r.permanent);
  assert_non_null(strstr(r.description, "AADSTS50057"));
}

static void test_consent_gone_is_permanent(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };

  fx->mode = ENDPOINT_CONSENT_GONE;
  get(fx, NULL, &r);
  run_until(fx, 1);
  assert_string_equal(r.error, "interaction_required");
  assert_true(r.permanent);
}

static void test_unavailable_is_transient(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };
  struct result later = { 0 };

  fx->mode = ENDPOINT_UNAVAILABLE;
  get(fx, NULL, &r);
  run_until(fx, 1);
  assert_string_equal(r.error, "temporarily_unavailable");
  assert_false(r.permanent);

  /* Failures are not cached: the next caller tries again. */
  fx->mode = ENDPOINT_OK;
  get(fx, NULL, &later);
  run_until(fx, 2);
  assert_string_equal(later.token, "tok-1");
}

static void test_network_error_is_transient(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };

  free(fx->cfg.login_base_url);
  fx->cfg.login_base_url = xstrdup("http://127.0.0.1:1");
  get(fx, NULL, &r);
  run_until(fx, 1);
  assert_string_equal(r.error, "token_network");
  assert_false(r.permanent);
}

/* The stored blob of address, decrypted; NULL when there is none. The
 * blob itself must never hold the token in clear. */
static char *stored_refresh_token(struct fixture *fx, const char *address)
{
  sqlite3_stmt *st;
  char *token = NULL;

  assert_int_equal(sqlite3_prepare_v2(fx->store->db,
                                      "SELECT refresh_token FROM users"
                                      " WHERE address = ?1",
                                      -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_ROW
      && sqlite3_column_type(st, 0) != SQLITE_NULL) {
    const void *blob = sqlite3_column_blob(st, 0);
    size_t len = (size_t) sqlite3_column_bytes(st, 0);

    assert_null(memmem(blob, len, "rt-", 3));
    assert_int_equal(token_crypt_unseal(fx->crypt, address, blob, len, &token),
                     0);
  }
  sqlite3_finalize(st);
  return token;
}

static void seed_user(struct fixture *fx, const char *address,
                      const char *refresh)
{
  void *blob;
  size_t len;

  assert_int_equal(links_set_linked(fx->store, address, NULL, NULL), 0);
  assert_int_equal(token_crypt_seal(fx->crypt, address, refresh,
                                    strlen(refresh), &blob, &len),
                   0);
  assert_int_equal(links_token_set(fx->store, address, blob, len), 0);
  free(blob);
}

static void test_delegated_refresh_rotates_token(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };
  struct result cached = { 0 };
  struct result unknown = { 0 };
  char *stored;

  seed_user(fx, "a@example.com", "rt-1");
  get(fx, "A@Example.com", &r);
  run_until(fx, 1);
  assert_string_equal(r.token, "tok-1");
  assert_non_null(strstr(fx->last_form, "grant_type=refresh_token"));
  assert_non_null(strstr(fx->last_form, "refresh_token=rt-1"));
  stored = stored_refresh_token(fx, "a@example.com");
  assert_string_equal(stored, "rt-2");
  free(stored);

  get(fx, "a@example.com", &cached);
  assert_true(cached.called);
  assert_string_equal(cached.token, "tok-1");

  /* Another mailbox has its own key, and no token stored. */
  get(fx, "b@example.com", &unknown);
  run_until(fx, 3);
  assert_string_equal(unknown.error, "not_linked");
  assert_true(unknown.permanent);
  assert_int_equal(fx->stub.requests, 1);
}

/* One refresh per user at a time: many callers for one user share one
 * token request; another user gets a request of its own. */
static void test_delegated_one_refresh_per_user(void **state)
{
  struct fixture *fx = *state;
  struct result a[WAITERS];
  struct result b[WAITERS];

  memset(a, 0, sizeof(a));
  memset(b, 0, sizeof(b));
  seed_user(fx, "a@example.com", "rt-a");
  seed_user(fx, "b@example.com", "rt-b");
  for (int i = 0; i < WAITERS; i++)
    get(fx, "a@example.com", &a[i]);
  assert_int_equal(fx->done, 0);
  run_until(fx, WAITERS);
  assert_int_equal(fx->stub.requests, 1);
  assert_non_null(strstr(fx->last_form, "refresh_token=rt-a"));

  /* Both users at once: one request each, each user's own token. */
  token_cache_invalidate(fx->tokens, "a@example.com");
  for (int i = 0; i < WAITERS; i++) {
    memset(&a[i], 0, sizeof(a[i]));
    get(fx, "a@example.com", &a[i]);
    get(fx, "b@example.com", &b[i]);
  }
  run_until(fx, 3 * WAITERS);
  assert_int_equal(fx->stub.requests, 3);
  for (int i = 1; i < WAITERS; i++) {
    assert_string_equal(a[i].token, a[0].token);
    assert_string_equal(b[i].token, b[0].token);
  }
  assert_string_not_equal(a[0].token, b[0].token);
  assert_string_not_equal(a[0].token, "tok-1");
}

static void test_delegated_grant_gone_marks_relink(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };
  enum policy_link_state link;
  char reason[256];
  char *stored;

  seed_user(fx, "a@example.com", "rt-1");
  fx->mode = ENDPOINT_INVALID_GRANT;
  get(fx, "a@example.com", &r);
  run_until(fx, 1);
  assert_true(r.permanent);
  assert_int_equal(
      links_get(fx->store, "a@example.com", &link, reason, sizeof(reason)), 0);
  assert_int_equal(link, POLICY_LINK_NEEDS_RELINK);
  assert_non_null(strstr(reason, "AADSTS50057"));
  stored = stored_refresh_token(fx, "a@example.com");
  assert_null(stored);
}

/* A token the current key cannot open (stored in clear, or under a key
 * file since replaced) is no grant: the user must link again, told why. */
static void test_undecryptable_token_marks_relink(void **state)
{
  struct fixture *fx = *state;
  struct result r = { 0 };
  enum policy_link_state link;
  char reason[256];

  assert_int_equal(links_set_linked(fx->store, "a@example.com", NULL, NULL), 0);
  assert_int_equal(
      links_token_set(fx->store, "a@example.com", "rt-in-clear", 11), 0);
  get(fx, "a@example.com", &r);
  run_until(fx, 1);
  assert_string_equal(r.error, "token_unreadable");
  assert_true(r.permanent);
  assert_int_equal(fx->stub.requests, 0);
  assert_int_equal(
      links_get(fx->store, "a@example.com", &link, reason, sizeof(reason)), 0);
  assert_int_equal(link, POLICY_LINK_NEEDS_RELINK);
  assert_non_null(strstr(reason, "cannot be decrypted"));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_app_token_cached_and_reused, setup_app,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_one_refresh_for_many_waiters,
                                    setup_app, teardown),
    cmocka_unit_test_setup_teardown(test_token_refreshed_ahead_of_expiry,
                                    setup_app, teardown),
    cmocka_unit_test_setup_teardown(test_invalid_grant_is_permanent, setup_app,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_consent_gone_is_permanent, setup_app,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_unavailable_is_transient, setup_app,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_network_error_is_transient, setup_app,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_delegated_refresh_rotates_token,
                                    setup_delegated, teardown),
    cmocka_unit_test_setup_teardown(test_delegated_one_refresh_per_user,
                                    setup_delegated, teardown),
    cmocka_unit_test_setup_teardown(test_delegated_grant_gone_marks_relink,
                                    setup_delegated, teardown),
    cmocka_unit_test_setup_teardown(test_undecryptable_token_marks_relink,
                                    setup_delegated, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
