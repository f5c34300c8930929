/* SPDX-License-Identifier: MIT */
/* Unit tests for the queue's durability pieces: the resubmission digest,
 * insert-once within a window, operator retry and drop, the guard that
 * keeps a dropped row from being sent, expiry of old records with their
 * bodies, and the sent-mail history that rebuilds pacing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue.h"
#include "store.h"

struct fixture {
  char dir[64];
  char db[128];
  struct store *store;
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  char err[256];

  snprintf(f->dir, sizeof(f->dir), "/tmp/test_queue_XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->db, sizeof(f->db), "%s/agent.db", f->dir);
  assert_int_equal(store_open(f->db, &f->store, err, sizeof(err)), 0);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  char path[160];

  store_close(f->store);
  snprintf(path, sizeof(path), "%s/agent.db-wal", f->dir);
  unlink(path);
  snprintf(path, sizeof(path), "%s/agent.db-shm", f->dir);
  unlink(path);
  unlink(f->db);
  rmdir(f->dir);
  free(f);
  return 0;
}

static const char *const rcpts_ab[] = { "a@example.net", "B@Example.net" };
static const char *const rcpts_ba[] = { "b@example.net", "a@example.net" };
static const char *const rcpts_ac[] = { "a@example.net", "c@example.net" };

static void test_digest(void **state)
{
  char d1[QUEUE_DIGEST_SIZE], d2[QUEUE_DIGEST_SIZE], d3[QUEUE_DIGEST_SIZE];

  (void) state;
  assert_int_equal(queue_envelope_digest("m@x", "alice@c", rcpts_ab, 2, d1), 0);
  /* Order and letter case of recipients do not matter. */
  assert_int_equal(queue_envelope_digest("m@x", "alice@c", rcpts_ba, 2, d2), 0);
  assert_string_equal(d1, d2);
  assert_int_equal(strlen(d1), 64);
  /* Another recipient, sender or Message-ID does. */
  queue_envelope_digest("m@x", "alice@c", rcpts_ac, 2, d3);
  assert_string_not_equal(d1, d3);
  queue_envelope_digest("m@x", "bob@c", rcpts_ab, 2, d3);
  assert_string_not_equal(d1, d3);
  queue_envelope_digest("n@x", "alice@c", rcpts_ab, 2, d3);
  assert_string_not_equal(d1, d3);
  /* Only a subset of the recipients is another envelope. */
  queue_envelope_digest("m@x", "alice@c", rcpts_ab, 1, d3);
  assert_string_not_equal(d1, d3);
  assert_int_equal(queue_envelope_digest(NULL, "alice@c", rcpts_ab, 2, d3),
                   -ENOENT);
  assert_int_equal(queue_envelope_digest("", "alice@c", rcpts_ab, 2, d3),
                   -ENOENT);
}

static int insert(struct fixture *f, const char *qid, const char *digest,
                  int64_t window_ms, char original[QUEUE_ID_SIZE])
{
  char path[160];

  snprintf(path, sizeof(path), "%s/%s", f->dir, qid);
  return queue_insert_once(f->store, qid, "alice@c", rcpts_ab, 2, "m@x", 10,
                           path, digest, window_ms, original);
}

static void test_insert_once(void **state)
{
  struct fixture *f = *state;
  char original[QUEUE_ID_SIZE] = "";
  int64_t n = 0;

  assert_int_equal(insert(f, "Q1", "d1", 60000, original), 0);
  assert_int_equal(insert(f, "Q2", "d1", 60000, original), 1);
  assert_string_equal(original, "Q1");
  /* Another digest, no digest, or no window: a new message. */
  assert_int_equal(insert(f, "Q3", "d2", 60000, original), 0);
  assert_int_equal(insert(f, "Q4", NULL, 60000, original), 0);
  assert_int_equal(insert(f, "Q5", "d1", 0, original), 0);
  assert_int_equal(queue_count(f->store, NULL, &n), 0);
  assert_int_equal(n, 4);
  /* Out of the window, the same digest is queued again. */
  assert_int_equal(store_exec(f->store, "UPDATE messages SET created_at = "
                                        "created_at - 120000"),
                   0);
  assert_int_equal(insert(f, "Q6", "d1", 60000, original), 0);
  assert_int_equal(insert(f, "Q7", "d1", 60000, original), 1);
  assert_string_equal(original, "Q6");
}

static int64_t rowid_of(struct fixture *f, const char *qid)
{
  struct queue_entry e;
  int64_t rowid;

  assert_int_equal(queue_find(f->store, qid, NULL, &e), 0);
  rowid = e.rowid;
  queue_entry_free(&e);
  return rowid;
}

/* A group commit: several rows in one transaction, a resubmission found
 * within the group itself, and ids numbered in the group's order. */
static void test_insert_batch(void **state)
{
  struct fixture *f = *state;
  struct queue_insert_req r1 = { .queue_id = "B1",
                                 .sender = "alice@c",
                                 .rcpts = rcpts_ab,
                                 .nrcpts = 2,
                                 .message_id = "m@x",
                                 .size = 10,
                                 .spool_path = "/nowhere/B1",
                                 .digest = "d1" };
  struct queue_insert_req r2 = r1;
  struct queue_insert_req r3 = r1;
  struct queue_insert_req *rows[] = { &r1, &r2, &r3 };
  int64_t n = 0;

  r2.queue_id = "B2";
  r2.message_id = "n@x";
  r2.spool_path = "/nowhere/B2";
  r2.digest = NULL;
  r3.queue_id = "B3";
  r3.spool_path = "/nowhere/B3";

  queue_insert_batch(f->store, rows, 3, 60000);
  assert_int_equal(r1.rc, 0);
  assert_int_equal(r2.rc, 0);
  assert_int_equal(r3.rc, 1);
  assert_string_equal(r3.original, "B1");
  assert_int_equal(queue_count(f->store, NULL, &n), 0);
  assert_int_equal(n, 2);
  assert_true(rowid_of(f, "B1") < rowid_of(f, "B2"));
}

static void assert_state(struct fixture *f, const char *qid, const char *state)
{
  struct queue_entry e;

  assert_int_equal(queue_find(f->store, qid, NULL, &e), 0);
  assert_string_equal(e.state, state);
  queue_entry_free(&e);
}

/* Rows left in 'sending' by no running send are queued for a look-up;
 * a running one, or one too recent, is left alone. */
static void test_recover_orphans(void **state)
{
  struct fixture *f = *state;
  char original[QUEUE_ID_SIZE];
  char running[64];
  int64_t r1, r2;

  assert_int_equal(insert(f, "O1", NULL, 0, original), 0);
  assert_int_equal(insert(f, "O2", NULL, 0, original), 0);
  r1 = rowid_of(f, "O1");
  r2 = rowid_of(f, "O2");
  assert_int_equal(queue_mark_sending(f->store, r1), 0);
  assert_int_equal(queue_mark_sending(f->store, r2), 0);
  snprintf(running, sizeof(running), "[%lld]", (long long) r2);
  /* Both were marked just now: too recent for a cut-off in the past. */
  assert_int_equal(
      queue_recover_orphans(f->store, store_now_ms() - 60000, running, 0), 0);
  assert_int_equal(
      queue_recover_orphans(f->store, store_now_ms() + 1, running, 0), 1);
  assert_state(f, "O1", "queued");
  assert_state(f, "O2", "sending");
}

static void test_retry_and_drop(void **state)
{
  struct fixture *f = *state;
  char original[QUEUE_ID_SIZE];
  struct queue_entry e;
  int64_t q1, q2;

  insert(f, "Q1", NULL, 0, original);
  insert(f, "Q2", NULL, 0, original);
  q1 = rowid_of(f, "Q1");
  q2 = rowid_of(f, "Q2");

  /* Queued mail cannot be retried; it can be dropped, once. */
  assert_int_equal(queue_retry(f->store, q1), -EAGAIN);
  assert_int_equal(queue_drop(f->store, q1, "withdrawn"), 0);
  assert_int_equal(queue_drop(f->store, q1, "again"), -EAGAIN);
  assert_int_equal(queue_find(f->store, "Q1", NULL, &e), 0);
  assert_string_equal(e.state, "failed");
  assert_string_equal(e.error_code, "dropped");
  assert_string_equal(e.error_text, "withdrawn");
  queue_entry_free(&e);
  /* A dropped row is never moved to sending. */
  assert_int_equal(queue_mark_sending(f->store, q1), -ENOENT);
  assert_state(f, "Q1", "failed");

  /* Failed mail is retried with a fresh count of attempts. */
  assert_int_equal(queue_mark_sending(f->store, q2), 0);
  assert_int_equal(queue_drop(f->store, q2, "busy"), -EAGAIN);
  assert_int_equal(queue_mark_failed(f->store, q2, "x", "gave up"), 0);
  assert_int_equal(queue_retry(f->store, q2), 0);
  assert_int_equal(queue_find(f->store, "Q2", NULL, &e), 0);
  assert_string_equal(e.state, "queued");
  assert_int_equal(e.attempts, 0);
  assert_true(e.retried_at >= e.created_at);
  queue_entry_free(&e);
  assert_int_equal(queue_mark_held(f->store, q2, "policy", "off"), 0);
  assert_int_equal(queue_retry(f->store, q2), 0);
  assert_state(f, "Q2", "queued");
}

static void test_defer(void **state)
{
  struct fixture *f = *state;
  char original[QUEUE_ID_SIZE];
  int64_t q1;

  insert(f, "Q1", NULL, 0, original);
  q1 = rowid_of(f, "Q1");
  assert_int_equal(queue_defer(f->store, q1, store_now_ms() + 60000), 0);
  assert_true(queue_next_due(f->store) > store_now_ms() + 50000);
  assert_int_equal(queue_mark_sending(f->store, q1), 0);
  assert_int_equal(queue_defer(f->store, q1, 0), -ENOENT);
}

static void test_purge(void **state)
{
  struct fixture *f = *state;
  char original[QUEUE_ID_SIZE];
  char path[160];
  int64_t now = store_now_ms();
  FILE *fp;

  insert(f, "OLD", NULL, 0, original);
  insert(f, "NEW", NULL, 0, original);
  insert(f, "FAIL", NULL, 0, original);
  insert(f, "WAIT", NULL, 0, original);
  snprintf(path, sizeof(path), "%s/FAIL", f->dir);
  fp = fopen(path, "w");
  assert_non_null(fp);
  fclose(fp);
  queue_mark_sent(f->store, rowid_of(f, "OLD"));
  queue_mark_sent(f->store, rowid_of(f, "NEW"));
  queue_mark_failed(f->store, rowid_of(f, "FAIL"), "x", "y");
  assert_int_equal(store_exec(f->store, "UPDATE messages SET sent_at = "
                                        "sent_at - 100000, updated_at = "
                                        "updated_at - 100000 WHERE queue_id "
                                        "IN ('OLD', 'FAIL')"),
                   0);

  /* Sent records older than 50 s go; failed ones are kept for 200 s. */
  assert_int_equal(queue_purge(f->store, now - 50000, now - 200000, 10), 1);
  assert_int_equal(queue_find(f->store, "OLD", NULL, &(struct queue_entry){}),
                   -ENOENT);
  assert_state(f, "NEW", "sent");
  assert_state(f, "FAIL", "failed");
  assert_int_equal(access(path, F_OK), 0);
  /* Now the failure expires too, with the body it kept. */
  assert_int_equal(queue_purge(f->store, now - 50000, now - 50000, 10), 1);
  assert_int_equal(access(path, F_OK), -1);
  assert_state(f, "WAIT", "queued");
  /* At most max rows a call; the rest on the next. */
  queue_mark_sent(f->store, rowid_of(f, "WAIT"));
  assert_int_equal(queue_purge(f->store, now + 1000, now, 1), 1);
  assert_int_equal(queue_purge(f->store, now + 1000, now, 1), 1);
  assert_int_equal(queue_purge(f->store, now + 1000, now, 1), 0);
}

static int collect_sender(void *arg, const struct queue_entry *e)
{
  char *seen = arg;

  strncat(seen, e->sender, 63 - strlen(seen));
  strncat(seen, ";", 63 - strlen(seen));
  return 0;
}

static void test_due_except(void **state)
{
  struct fixture *f = *state;
  char seen[64] = "";
  char path[160];

  snprintf(path, sizeof(path), "%s/x", f->dir);
  for (int i = 0; i < 3; i++) {
    char qid[8];

    snprintf(qid, sizeof(qid), "C%d", i);
    queue_insert(f->store, qid, "carol@c", rcpts_ab, 2, NULL, 1, path);
  }
  queue_insert(f->store, "A0", "alice@c", rcpts_ab, 2, NULL, 1, path);
  /* A batch of two holds only Carol's backlog... */
  assert_int_equal(queue_each_due_except(f->store, store_now_ms(), 2, NULL,
                                         collect_sender, seen),
                   2);
  assert_string_equal(seen, "carol@c;carol@c;");
  /* ...unless Carol, who cannot start more now, is left out. */
  seen[0] = '\0';
  assert_int_equal(queue_each_due_except(f->store, store_now_ms(), 2,
                                         "[\"carol@c\"]", collect_sender, seen),
                   1);
  assert_string_equal(seen, "alice@c;");
}

struct sent_seen {
  int n;
  size_t rcpts;
};

static void on_sent(void *arg, const char *sender, int64_t sent_at,
                    size_t nrcpts)
{
  struct sent_seen *seen = arg;

  assert_string_equal(sender, "alice@c");
  assert_true(sent_at > 0);
  seen->n++;
  seen->rcpts += nrcpts;
}

static void test_sent_since(void **state)
{
  struct fixture *f = *state;
  char original[QUEUE_ID_SIZE];
  struct sent_seen seen = { 0 };

  insert(f, "S1", NULL, 0, original);
  insert(f, "S2", NULL, 0, original);
  insert(f, "Q3", NULL, 0, original);
  queue_mark_sent(f->store, rowid_of(f, "S1"));
  queue_mark_sent(f->store, rowid_of(f, "S2"));
  assert_int_equal(
      queue_each_sent_since(f->store, store_now_ms() - 60000, on_sent, &seen),
      2);
  assert_int_equal(seen.n, 2);
  assert_int_equal(seen.rcpts, 4);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_digest),
    cmocka_unit_test_setup_teardown(test_insert_once, setup, teardown),
    cmocka_unit_test_setup_teardown(test_insert_batch, setup, teardown),
    cmocka_unit_test_setup_teardown(test_recover_orphans, setup, teardown),
    cmocka_unit_test_setup_teardown(test_retry_and_drop, setup, teardown),
    cmocka_unit_test_setup_teardown(test_defer, setup, teardown),
    cmocka_unit_test_setup_teardown(test_purge, setup, teardown),
    cmocka_unit_test_setup_teardown(test_sent_since, setup, teardown),
    cmocka_unit_test_setup_teardown(test_due_except, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
