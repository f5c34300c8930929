/* SPDX-License-Identifier: MIT */
/* The agent's policy gate on a real loop, database and file: fails closed,
 * keeps the last valid policy over a broken file, applies a renamed-in
 * change within a second, audits it and disconnects users on switch-off.
 * Also covers links.c and audit.c through it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "audit.h"
#include "links.h"
#include "policy_gate.h"

struct fixture {
  char dir[64];
  char path[128];
  char db[128];
  uv_loop_t loop;
  struct store *store;
  int changes; /* on_change calls */
};

static void write_policy(struct fixture *f, const char *text)
{
  char tmp[160];
  FILE *fp;

  /* Replace by rename, as editors and the CLI do. */
  snprintf(tmp, sizeof(tmp), "%s.new", f->path);
  fp = fopen(tmp, "w");
  assert_non_null(fp);
  fputs(text, fp);
  fclose(fp);
  assert_int_equal(rename(tmp, f->path), 0);
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  char err[256];

  snprintf(f->dir, sizeof(f->dir), "/tmp/test_gate_XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof(f->path), "%s/policy.ini", f->dir);
  snprintf(f->db, sizeof(f->db), "%s/agent.db", f->dir);
  assert_int_equal(store_open(f->db, &f->store, err, sizeof(err)), 0);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  char cmd[128];

  assert_int_equal(uv_loop_close(&f->loop), 0);
  store_close(f->store);
  snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
  assert_int_equal(system(cmd), 0);
  free(f);
  return 0;
}

static void on_change(void *arg)
{
  struct fixture *f = arg;

  f->changes++;
  uv_stop(&f->loop);
}

static void on_timeout(uv_timer_t *t)
{
  uv_stop(t->loop);
}

/* Runs the loop until on_change fires or ms pass; returns elapsed ms. */
static uint64_t run_until_change(struct fixture *f, uint64_t ms)
{
  uv_timer_t timer;
  uint64_t start;

  uv_update_time(&f->loop);
  start = uv_now(&f->loop);
  uv_timer_init(&f->loop, &timer);
  uv_timer_start(&timer, on_timeout, ms, 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *) &timer, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  return uv_now(&f->loop) - start;
}

static void gate_close(struct fixture *f, struct policy_gate *gate)
{
  policy_gate_close(gate);
  /* on_change may have stopped the loop; run until the handles closed. */
  while (uv_loop_alive(&f->loop))
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

static const char *check(struct policy_gate *gate, enum policy_request req,
                         const char *who)
{
  static struct policy_decision d;

  policy_gate_check(gate, req, who, &d);
  return d.code;
}

static int count_audit(struct fixture *f, const char *action)
{
  struct audit_entry *v;
  size_t n;
  int count = 0;

  assert_int_equal(audit_list(f->store, 0, &v, &n), 0);
  for (size_t i = 0; i < n; i++)
    count += strcmp(v[i].action, action) == 0;
  audit_entries_free(v, n);
  return count;
}

static void test_fails_closed_then_opens(void **state)
{
  struct fixture *f = *state;
  struct policy_gate *gate = NULL;

  assert_int_equal(
      policy_gate_new(&f->loop, f->store, f->path, on_change, f, &gate), 0);
  assert_false(policy_gate_enabled(gate));
  assert_string_equal(check(gate, POLICY_REQUEST_SMTP, "a@b.example"),
                      "no_policy");

  assert_int_equal(tenant_consent_record(f->store, true, "t1", NULL), 0);
  assert_int_equal(links_set_linked(f->store, "a@b.example", "id", "A"), 0);
  write_policy(f, "[integration]\nenabled = true\nmode = all\n");
  assert_true(run_until_change(f, 3000) < 1500);
  assert_int_equal(f->changes, 1);
  assert_true(policy_gate_enabled(gate));
  assert_string_equal(check(gate, POLICY_REQUEST_SMTP, "A@B.example"),
                      "allowed");
  assert_string_equal(check(gate, POLICY_REQUEST_CALDAV, "c@b.example"),
                      "user_not_linked");
  assert_string_equal(check(gate, POLICY_REQUEST_LINK, "c@b.example"),
                      "allowed");
  assert_int_equal(count_audit(f, "policy_applied"), 1);
  gate_close(f, gate);
}

static void test_broken_file_keeps_last_policy(void **state)
{
  struct fixture *f = *state;
  struct policy_gate *gate = NULL;
  sqlite3_stmt *st;

  assert_int_equal(tenant_consent_record(f->store, true, "t1", NULL), 0);
  assert_int_equal(links_set_linked(f->store, "a@b.example", NULL, NULL), 0);
  write_policy(f, "[integration]\nenabled = true\nmode = specific\n"
                  "[users]\nuser = a@b.example\n");
  assert_int_equal(
      policy_gate_new(&f->loop, f->store, f->path, on_change, f, &gate), 0);
  assert_string_equal(check(gate, POLICY_REQUEST_SMTP, "a@b.example"),
                      "allowed");

  /* A broken file on disk: the agent goes on with the last valid one and
   * records the error with its line. */
  write_policy(f, "[integration]\nenabled = false\nmode = specific\n"
                  "[users]\nuser = nonsense\n");
  assert_int_not_equal(policy_gate_reload(gate), -1);
  assert_string_equal(check(gate, POLICY_REQUEST_SMTP, "a@b.example"),
                      "allowed");
  assert_int_equal(sqlite3_prepare_v2(f->store->db,
                                      "SELECT error FROM policy_state", -1, &st,
                                      NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_non_null(strstr((const char *) sqlite3_column_text(st, 0),
                         "policy.ini:5: \"nonsense\" is not a mail address"));
  sqlite3_finalize(st);
  assert_int_equal(f->changes, 0);

  /* Removing the user refuses them at once. */
  write_policy(f, "[integration]\nenabled = true\nmode = specific\n");
  assert_int_equal(policy_gate_reload(gate), 0);
  assert_string_equal(check(gate, POLICY_REQUEST_SMTP, "a@b.example"),
                      "user_not_permitted");
  gate_close(f, gate);
}

static void test_switch_off_disconnects_everyone(void **state)
{
  struct fixture *f = *state;
  struct policy_gate *gate = NULL;
  enum policy_link_state ls;
  char reason[64];
  void *blob = NULL;
  size_t len = 0;
  int64_t linked, relink;

  assert_int_equal(tenant_consent_record(f->store, true, "t1", NULL), 0);
  assert_int_equal(links_set_linked(f->store, "a@b.example", NULL, NULL), 0);
  assert_int_equal(links_set_linked(f->store, "c@b.example", NULL, NULL), 0);
  assert_int_equal(links_token_set(f->store, "a@b.example", "tok", 3), 0);
  assert_int_equal(links_token_get(f->store, "a@b.example", &blob, &len), 0);
  assert_int_equal(len, 3);
  free(blob);
  write_policy(f, "[integration]\nenabled = true\nmode = all\n");
  assert_int_equal(
      policy_gate_new(&f->loop, f->store, f->path, on_change, f, &gate), 0);

  write_policy(f, "[integration]\nenabled = false\nmode = all\n");
  assert_true(run_until_change(f, 3000) < 1500);
  assert_false(policy_gate_enabled(gate));
  assert_string_equal(check(gate, POLICY_REQUEST_SMTP, "a@b.example"),
                      "org_disabled");
  assert_int_equal(links_count(f->store, &linked, &relink), 0);
  assert_int_equal(linked, 0);
  assert_int_equal(relink, 2);
  assert_int_equal(
      links_get(f->store, "a@b.example", &ls, reason, sizeof(reason)), 0);
  assert_int_equal(ls, POLICY_LINK_NEEDS_RELINK);
  assert_string_equal(reason, "org_disabled");
  assert_int_equal(links_token_get(f->store, "a@b.example", &blob, &len),
                   -ENOENT);
  assert_int_equal(count_audit(f, "users_disconnected"), 1);
  assert_int_equal(count_audit(f, "policy_applied"), 2);

  /* Back on: users must link again before their requests pass. */
  write_policy(f, "[integration]\nenabled = true\nmode = all\n");
  assert_int_equal(policy_gate_reload(gate), 0);
  assert_string_equal(check(gate, POLICY_REQUEST_SMTP, "a@b.example"),
                      "link_expired");
  assert_string_equal(check(gate, POLICY_REQUEST_LINK, "a@b.example"),
                      "allowed");
  assert_int_equal(links_remove(f->store, "a@b.example"), 0);
  assert_int_equal(links_remove(f->store, "a@b.example"), -ENOENT);
  gate_close(f, gate);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_fails_closed_then_opens, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_broken_file_keeps_last_policy, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_switch_off_disconnects_everyone, setup,
                                    teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
