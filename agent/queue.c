/* SPDX-License-Identifier: MIT */
/* The durable mail queue (see include/queue.h). */
#include "queue.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "xalloc.h"

#define QUEUE_COLUMNS                                                          \
  "id, queue_id, sender, recipients, message_id, size, spool_path, state, "    \
  "attempts, next_attempt_at, created_at, sent_at, error_code, error_text, "   \
  "verify_first, retried_at"

void queue_id_generate(char out[QUEUE_ID_SIZE])
{
  /* 12 random bytes as 24 hex digits would not fit with the NUL; 11 bytes
   * give 22 digits, plenty against collisions. */
  static const char hex[] = "0123456789ABCDEF";
  unsigned char raw[11];

  if (gnutls_rnd(GNUTLS_RND_NONCE, raw, sizeof(raw)) < 0)
    abort(); /* no randomness: nothing here can go on safely */
  for (size_t i = 0; i < sizeof(raw); i++) {
    out[2 * i] = hex[raw[i] >> 4];
    out[2 * i + 1] = hex[raw[i] & 0xf];
  }
  out[2 * sizeof(raw)] = '\0';
}

static int queue_prepare(struct store *store, const char *sql,
                         sqlite3_stmt **st)
{
  if (sqlite3_prepare_v2(store->db, sql, -1, st, NULL) != SQLITE_OK) {
    log_error("- store prepare_failed error=\"%s\"", sqlite3_errmsg(store->db));
    return -EIO;
  }
  return 0;
}

/* Steps a statement that returns no rows, then finalizes it. Returns the
 * number of rows changed or -EIO. */
static int queue_run(struct store *store, sqlite3_stmt *st)
{
  int rc = sqlite3_step(st);

  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    log_error("- store step_failed error=\"%s\"", sqlite3_errmsg(store->db));
    return -EIO;
  }
  return sqlite3_changes(store->db);
}

/* queue_run for a statement meant to change one row: 0 when it did,
 * none_err when no row matched (the row is gone or in another state). */
static int queue_run_one(struct store *store, sqlite3_stmt *st, int none_err)
{
  int rc = queue_run(store, st);

  if (rc < 0)
    return rc;
  return rc == 1 ? 0 : none_err;
}

static char *queue_rcpts_json(const char *const *rcpts, size_t n)
{
  json_t *arr = json_array();
  char *text;

  for (size_t i = 0; i < n; i++)
    json_array_append_new(arr, json_string(rcpts[i]));
  text = json_dumps(arr, JSON_COMPACT);
  json_decref(arr);
  if (text == NULL)
    abort(); /* jansson fails only on allocation */
  return text;
}

/* Inserts one queued row without a transaction of its own. */
static int queue_insert_row(struct store *store, const char *queue_id,
                            const char *sender, const char *const *rcpts,
                            size_t nrcpts, const char *message_id,
                            uint64_t size, const char *spool_path,
                            const char *digest)
{
  sqlite3_stmt *st = NULL;
  int64_t now = store_now_ms();
  char *rcpt_text = queue_rcpts_json(rcpts, nrcpts);
  int rc;

  rc = queue_prepare(store,
                     "INSERT INTO messages (queue_id, sender, recipients, "
                     "message_id, size, spool_path, state, next_attempt_at, "
                     "created_at, updated_at, envelope_digest) VALUES "
                     "(?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
                     &st);
  if (rc == 0) {
    sqlite3_bind_text(st, 1, queue_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sender, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, rcpt_text, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, message_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (sqlite3_int64) size);
    sqlite3_bind_text(st, 6, spool_path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, now);
    sqlite3_bind_int64(st, 8, now);
    sqlite3_bind_int64(st, 9, now);
    sqlite3_bind_text(st, 10, digest, -1, SQLITE_STATIC);
    rc = queue_run(store, st);
  }
  free(rcpt_text);
  return rc < 0 ? rc : 0;
}

int queue_insert(struct store *store, const char *queue_id, const char *sender,
                 const char *const *rcpts, size_t nrcpts,
                 const char *message_id, uint64_t size, const char *spool_path)
{
  return queue_insert_row(store, queue_id, sender, rcpts, nrcpts, message_id,
                          size, spool_path, NULL);
}

static int queue_cmp_str(const void *a, const void *b)
{
  return strcmp(*(const char *const *) a, *(const char *const *) b);
}

int queue_envelope_digest(const char *message_id, const char *sender,
                          const char *const *rcpts, size_t nrcpts,
                          char out[QUEUE_DIGEST_SIZE])
{
  static const char hex[] = "0123456789abcdef";
  unsigned char md[32];
  char **sorted;
  char *text;
  size_t len;

  if (message_id == NULL || message_id[0] == '\0')
    return -ENOENT;
  /* Addresses hold no line breaks (intake refuses them), so joining with
   * newlines is unambiguous. */
  sorted = xcalloc(nrcpts + 1, sizeof(char *));
  for (size_t i = 0; i < nrcpts; i++) {
    sorted[i] = xstrdup(rcpts[i]);
    for (char *c = sorted[i]; *c != '\0'; c++) {
      if (*c >= 'A' && *c <= 'Z')
        *c = (char) (*c - 'A' + 'a');
    }
  }
  qsort(sorted, nrcpts, sizeof(char *), queue_cmp_str);
  text = xasprintf("%s\n%s", message_id, sender);
  for (size_t i = 0; i < nrcpts; i++) {
    char *next = xasprintf("%s\n%s", text, sorted[i]);

    free(text);
    free(sorted[i]);
    text = next;
  }
  free(sorted);
  len = strlen(text);
  if (gnutls_hash_fast(GNUTLS_DIG_SHA256, text, len, md) < 0)
    abort(); /* SHA-256 is always there; failing here is a broken library */
  free(text);
  for (size_t i = 0; i < sizeof(md); i++) {
    out[2 * i] = hex[md[i] >> 4];
    out[2 * i + 1] = hex[md[i] & 0xf];
  }
  out[2 * sizeof(md)] = '\0';
  return 0;
}

/* The queue id of the newest row with digest created after since_ms;
 * 1 when found, 0 when not, or -EIO. */
static int queue_find_digest(struct store *store, const char *digest,
                             int64_t since_ms, char queue_id[QUEUE_ID_SIZE])
{
  sqlite3_stmt *st = NULL;
  int rc;

  if (queue_prepare(store,
                    "SELECT queue_id FROM messages WHERE envelope_digest = ? "
                    "AND created_at >= ? ORDER BY id DESC LIMIT 1",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_text(st, 1, digest, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, since_ms);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    snprintf(queue_id, QUEUE_ID_SIZE, "%s", sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  if (rc == SQLITE_ROW)
    return 1;
  return rc == SQLITE_DONE ? 0 : -EIO;
}

/* One message of a batch, inside its transaction: rc as in
 * struct queue_insert_req. */
static int queue_insert_one(struct store *store, struct queue_insert_req *req,
                            int64_t window_ms)
{
  int rc = 0;

  if (req->digest != NULL && window_ms > 0)
    rc = queue_find_digest(store, req->digest, store_now_ms() - window_ms,
                           req->original);
  if (rc == 0)
    rc = queue_insert_row(store, req->queue_id, req->sender, req->rcpts,
                          req->nrcpts, req->message_id, req->size,
                          req->spool_path, req->digest);
  return rc;
}

void queue_insert_batch(struct store *store, struct queue_insert_req **reqs,
                        size_t n, int64_t window_ms)
{
  if (store_begin(store) < 0) {
    for (size_t i = 0; i < n; i++)
      reqs[i]->rc = -EIO;
    return;
  }
  for (size_t i = 0; i < n; i++) {
    int rc = queue_insert_one(store, reqs[i], window_ms);

    reqs[i]->rc = rc < 0 ? -EIO : rc;
    /* A failed statement undoes only itself, unless SQLite had to end the
     * whole transaction (disk full, I/O error): then nothing after it may
     * run in autocommit and be taken for part of a failed batch. */
    if (rc < 0 && sqlite3_get_autocommit(store->db))
      break;
  }
  if (sqlite3_get_autocommit(store->db) || store_commit(store) < 0) {
    store_rollback(store);
    for (size_t i = 0; i < n; i++)
      reqs[i]->rc = -EIO;
  }
}

int queue_insert_once(struct store *store, const char *queue_id,
                      const char *sender, const char *const *rcpts,
                      size_t nrcpts, const char *message_id, uint64_t size,
                      const char *spool_path, const char *digest,
                      int64_t window_ms, char original[QUEUE_ID_SIZE])
{
  struct queue_insert_req req = {
    .queue_id = queue_id,
    .sender = sender,
    .rcpts = rcpts,
    .nrcpts = nrcpts,
    .message_id = message_id,
    .size = size,
    .spool_path = spool_path,
    .digest = digest,
  };
  struct queue_insert_req *reqs[1] = { &req };

  queue_insert_batch(store, reqs, 1, window_ms);
  if (req.rc == 1)
    memcpy(original, req.original, QUEUE_ID_SIZE);
  return req.rc;
}

int queue_defer(struct store *store, int64_t rowid, int64_t at)
{
  sqlite3_stmt *st = NULL;

  if (queue_prepare(store,
                    "UPDATE messages SET next_attempt_at = ? "
                    "WHERE id = ? AND state = 'queued'",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_int64(st, 1, at);
  sqlite3_bind_int64(st, 2, rowid);
  return queue_run_one(store, st, -ENOENT);
}

/* What the purge removes: records past their keep time. */
#define QUEUE_PURGE_EXPIRED                                                    \
  "((state = 'sent' AND sent_at < ?1) "                                        \
  "OR (state = 'failed' AND updated_at < ?2))"

int queue_purge(struct store *store, int64_t sent_before_ms,
                int64_t failed_before_ms, size_t max)
{
  sqlite3_stmt *st = NULL;
  int64_t *ids = xcalloc(max ? max : 1, sizeof(*ids));
  char **paths = xcalloc(max ? max : 1, sizeof(*paths));
  size_t n = 0;
  int deleted = 0;
  int rc = -EIO;

  if (queue_prepare(
          store,
          "SELECT id, spool_path FROM messages WHERE " QUEUE_PURGE_EXPIRED
          " ORDER BY id LIMIT ?3",
          &st)
      < 0)
    goto out;
  sqlite3_bind_int64(st, 1, sent_before_ms);
  sqlite3_bind_int64(st, 2, failed_before_ms);
  sqlite3_bind_int64(st, 3, (sqlite3_int64) max);
  while (n < max && sqlite3_step(st) == SQLITE_ROW) {
    const unsigned char *path = sqlite3_column_text(st, 1);

    ids[n] = sqlite3_column_int64(st, 0);
    paths[n++] = path ? xstrdup((const char *) path) : NULL;
  }
  sqlite3_finalize(st);

  /* Row by row, each still expired (an operator may have retried it
   * since), its body removed once its row is. A crash before the commit
   * leaves a record without a body, never a body without a record. */
  if (store_begin(store) < 0)
    goto out;
  for (size_t i = 0; i < n; i++) {
    if (queue_prepare(
            store,
            "DELETE FROM messages WHERE id = ?3 AND " QUEUE_PURGE_EXPIRED, &st)
        < 0)
      break;
    sqlite3_bind_int64(st, 1, sent_before_ms);
    sqlite3_bind_int64(st, 2, failed_before_ms);
    sqlite3_bind_int64(st, 3, ids[i]);
    if (queue_run(store, st) != 1)
      continue;
    deleted++;
    if (paths[i] != NULL && unlink(paths[i]) < 0 && errno != ENOENT)
      log_warn("- queue purge_unlink_failed path=%s error=\"%s\"", paths[i],
               strerror(errno));
  }
  if (store_commit(store) < 0) {
    store_rollback(store);
    goto out;
  }
  rc = deleted;

out:
  for (size_t i = 0; i < n; i++)
    free(paths[i]);
  free(paths);
  free(ids);
  return rc;
}

int queue_retry(struct store *store, int64_t rowid)
{
  sqlite3_stmt *st = NULL;
  int64_t now = store_now_ms();

  if (queue_prepare(store,
                    "UPDATE messages SET state = 'queued', attempts = 0, "
                    "verify_first = CASE WHEN error_code = 'verify_failed' "
                    "THEN 0 ELSE verify_first END, next_attempt_at = ?1, "
                    "updated_at = ?1, retried_at = ?1 "
                    "WHERE id = ?2 AND state IN ('failed', 'held')",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_int64(st, 1, now);
  sqlite3_bind_int64(st, 2, rowid);
  return queue_run_one(store, st, -EAGAIN);
}

int queue_drop(struct store *store, int64_t rowid, const char *reason)
{
  sqlite3_stmt *st = NULL;

  if (queue_prepare(store,
                    "UPDATE messages SET state = 'failed', "
                    "error_code = 'dropped', error_text = ?1, "
                    "updated_at = ?2 "
                    "WHERE id = ?3 AND state IN ('queued', 'held')",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_text(st, 1, reason, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, store_now_ms());
  sqlite3_bind_int64(st, 3, rowid);
  return queue_run_one(store, st, -EAGAIN);
}

int queue_recover(struct store *store, int64_t delay_ms)
{
  sqlite3_stmt *st = NULL;

  if (queue_prepare(store,
                    "UPDATE messages SET state = 'queued', verify_first = 1, "
                    "next_attempt_at = ? WHERE state = 'sending'",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_int64(st, 1, store_now_ms() + delay_ms);
  return queue_run(store, st);
}

int queue_recover_orphans(struct store *store, int64_t before_ms,
                          const char *running, int64_t delay_ms)
{
  sqlite3_stmt *st = NULL;

  if (queue_prepare(store,
                    "UPDATE messages SET state = 'queued', verify_first = 1, "
                    "next_attempt_at = ?1 WHERE state = 'sending' "
                    "AND updated_at < ?2 AND id NOT IN "
                    "(SELECT value FROM json_each(?3))",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_int64(st, 1, store_now_ms() + delay_ms);
  sqlite3_bind_int64(st, 2, before_ms);
  sqlite3_bind_text(st, 3, running, -1, SQLITE_STATIC);
  return queue_run(store, st);
}

static char *queue_column_text(sqlite3_stmt *st, int col)
{
  const unsigned char *t = sqlite3_column_text(st, col);

  return t ? xstrdup((const char *) t) : NULL;
}

static void queue_parse_rcpts(struct queue_entry *e, const char *text)
{
  json_t *arr = text ? json_loads(text, 0, NULL) : NULL;
  size_t n = json_is_array(arr) ? json_array_size(arr) : 0;

  e->rcpts = xcalloc(n + 1, sizeof(char *));
  for (size_t i = 0; i < n; i++) {
    const char *r = json_string_value(json_array_get(arr, i));

    e->rcpts[e->nrcpts++] = xstrdup(r ? r : "");
  }
  json_decref(arr);
}

/* Fills e from a row selected with QUEUE_COLUMNS. */
static void queue_entry_load(struct queue_entry *e, sqlite3_stmt *st)
{
  const unsigned char *qid = sqlite3_column_text(st, 1);

  memset(e, 0, sizeof(*e));
  e->rowid = sqlite3_column_int64(st, 0);
  snprintf(e->queue_id, sizeof(e->queue_id), "%s", qid ? (char *) qid : "");
  e->sender = queue_column_text(st, 2);
  queue_parse_rcpts(e, (const char *) sqlite3_column_text(st, 3));
  e->message_id = queue_column_text(st, 4);
  e->size = (uint64_t) sqlite3_column_int64(st, 5);
  e->spool_path = queue_column_text(st, 6);
  e->state = queue_column_text(st, 7);
  e->attempts = sqlite3_column_int(st, 8);
  e->next_attempt_at = sqlite3_column_int64(st, 9);
  e->created_at = sqlite3_column_int64(st, 10);
  e->sent_at = sqlite3_column_int64(st, 11);
  e->error_code = queue_column_text(st, 12);
  e->error_text = queue_column_text(st, 13);
  e->verify_first = sqlite3_column_int(st, 14);
  e->retried_at = sqlite3_column_int64(st, 15);
}

void queue_entry_free(struct queue_entry *e)
{
  if (e == NULL)
    return;
  free(e->sender);
  for (size_t i = 0; i < e->nrcpts; i++)
    free(e->rcpts[i]);
  free(e->rcpts);
  free(e->message_id);
  free(e->spool_path);
  free(e->state);
  free(e->error_code);
  free(e->error_text);
  memset(e, 0, sizeof(*e));
}

void queue_entries_free(struct queue_entry *v, size_t n)
{
  for (size_t i = 0; i < n; i++)
    queue_entry_free(&v[i]);
  free(v);
}

int64_t queue_next_due(struct store *store)
{
  sqlite3_stmt *st = NULL;
  int64_t next = -1;

  if (queue_prepare(store,
                    "SELECT MIN(next_attempt_at) FROM messages "
                    "WHERE state = 'queued'",
                    &st)
      < 0)
    return -1;
  if (sqlite3_step(st) == SQLITE_ROW
      && sqlite3_column_type(st, 0) != SQLITE_NULL)
    next = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return next;
}

/* The distinct senders of the rows in state. */
static int queue_senders_in(struct store *store, const char *state, char ***out)
{
  sqlite3_stmt *st = NULL;
  char **v = NULL;
  int n = 0;

  if (queue_prepare(store,
                    "SELECT DISTINCT sender FROM messages WHERE state = ?", &st)
      < 0)
    return -EIO;
  sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
  while (sqlite3_step(st) == SQLITE_ROW) {
    v = xrealloc(v, sizeof(char *) * (size_t) (n + 1));
    v[n++] = queue_column_text(st, 0);
  }
  sqlite3_finalize(st);
  *out = v;
  return n;
}

int queue_held_senders(struct store *store, char ***out)
{
  return queue_senders_in(store, "held", out);
}

int queue_queued_senders(struct store *store, char ***out)
{
  return queue_senders_in(store, "queued", out);
}

int queue_find(struct store *store, const char *queue_id,
               const char *message_id, struct queue_entry *out)
{
  sqlite3_stmt *st = NULL;
  int rc;

  if (queue_prepare(store,
                    "SELECT " QUEUE_COLUMNS " FROM messages "
                    "WHERE queue_id = ? OR message_id = ? "
                    "ORDER BY id DESC LIMIT 1",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_text(st, 1, queue_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, message_id, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    queue_entry_load(out, st);
  sqlite3_finalize(st);
  if (rc == SQLITE_ROW)
    return 0;
  return rc == SQLITE_DONE ? -ENOENT : -EIO;
}

/* Moves one row to state, with optional error fields and times. */
static int queue_set_state(struct store *store, int64_t rowid,
                           const char *state, const char *code,
                           const char *text, int64_t next_at, int add_attempt,
                           int verify_first)
{
  sqlite3_stmt *st = NULL;
  int64_t now = store_now_ms();

  if (queue_prepare(
          store,
          "UPDATE messages SET state = ?, error_code = ?, "
          "error_text = ?, next_attempt_at = ?, "
          "attempts = attempts + ?, updated_at = ?, "
          "sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END, "
          "verify_first = CASE WHEN ?9 < 0 THEN verify_first ELSE ?9 END "
          "WHERE id = ?10",
          &st)
      < 0)
    return -EIO;
  sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, code, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, next_at);
  sqlite3_bind_int(st, 5, add_attempt);
  sqlite3_bind_int64(st, 6, now);
  sqlite3_bind_text(st, 7, state, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 8, now);
  sqlite3_bind_int(st, 9, verify_first);
  sqlite3_bind_int64(st, 10, rowid);
  return queue_run_one(store, st, -ENOENT);
}

int queue_mark_sending(struct store *store, int64_t rowid)
{
  sqlite3_stmt *st = NULL;

  if (queue_prepare(store,
                    "UPDATE messages SET state = 'sending', "
                    "attempts = attempts + 1, updated_at = ? "
                    "WHERE id = ? AND state = 'queued'",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_int64(st, 1, store_now_ms());
  sqlite3_bind_int64(st, 2, rowid);
  return queue_run_one(store, st, -ENOENT);
}

int queue_mark_sent(struct store *store, int64_t rowid)
{
  return queue_set_state(store, rowid, "sent", NULL, NULL, 0, 0, 0);
}

int queue_mark_retry(struct store *store, int64_t rowid,
                     int64_t next_attempt_at, const char *code,
                     const char *text)
{
  return queue_set_state(store, rowid, "queued", code, text, next_attempt_at, 0,
                         0);
}

int queue_mark_verify(struct store *store, int64_t rowid,
                      int64_t next_attempt_at, const char *code,
                      const char *text)
{
  return queue_set_state(store, rowid, "queued", code, text, next_attempt_at, 0,
                         1);
}

int queue_mark_failed(struct store *store, int64_t rowid, const char *code,
                      const char *text)
{
  /* A row whose outcome is unknown stays so: a retry looks it up first. */
  return queue_set_state(store, rowid, "failed", code, text, 0, 0, -1);
}

int queue_mark_held(struct store *store, int64_t rowid, const char *code,
                    const char *text)
{
  return queue_set_state(store, rowid, "held", code, text, 0, 0, -1);
}

int queue_release_held(struct store *store, const char *sender)
{
  sqlite3_stmt *st = NULL;

  if (queue_prepare(store,
                    "UPDATE messages SET state = 'queued', "
                    "next_attempt_at = CASE WHEN verify_first "
                    "THEN max(next_attempt_at, ?1) ELSE ?1 END, "
                    "updated_at = ?2 "
                    "WHERE state = 'held' AND (?3 IS NULL OR sender = ?3)",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_int64(st, 1, store_now_ms());
  sqlite3_bind_int64(st, 2, store_now_ms());
  sqlite3_bind_text(st, 3, sender, -1, SQLITE_STATIC);
  return queue_run(store, st);
}

/* Moves the rows of sender that match which (an SQL condition) to state,
 * with a code and a sentence. Returns the number of rows, or -EIO. */
static int queue_sender_rows_set(struct store *store, const char *sender,
                                 const char *state, const char *which,
                                 const char *code, const char *text)
{
  sqlite3_stmt *st = NULL;
  char *sql = xasprintf("UPDATE messages SET state = ?, error_code = ?, "
                        "error_text = ?, updated_at = ? "
                        "WHERE sender = ? AND %s",
                        which);
  int rc = queue_prepare(store, sql, &st);

  free(sql);
  if (rc < 0)
    return -EIO;
  sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, code, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, store_now_ms());
  sqlite3_bind_text(st, 5, sender, -1, SQLITE_STATIC);
  return queue_run(store, st);
}

int queue_hold_sender(struct store *store, const char *sender, const char *code,
                      const char *text)
{
  return queue_sender_rows_set(store, sender, "held", "state = 'queued'", code,
                               text);
}

int queue_fail_sender(struct store *store, const char *sender, const char *code,
                      const char *text)
{
  return queue_sender_rows_set(store, sender, "failed",
                               "state IN ('queued', 'held')", code, text);
}

int queue_count(struct store *store, const char *state, int64_t *count)
{
  sqlite3_stmt *st = NULL;
  int rc;

  if (queue_prepare(store,
                    "SELECT COUNT(*) FROM messages "
                    "WHERE ?1 IS NULL OR state = ?1",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    *count = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? 0 : -EIO;
}

/* Loads every row a prepared, bound statement returns, then finalizes
 * it; returns the count. */
static int queue_collect(sqlite3_stmt *st, struct queue_entry **out)
{
  struct queue_entry *v = NULL;
  size_t n = 0;

  while (sqlite3_step(st) == SQLITE_ROW) {
    v = xrealloc(v, sizeof(*v) * (n + 1));
    queue_entry_load(&v[n++], st);
  }
  sqlite3_finalize(st);
  *out = v;
  return (int) n;
}

int queue_list(struct store *store, const char *state, struct queue_entry **out,
               size_t max)
{
  sqlite3_stmt *st = NULL;

  if (queue_prepare(store,
                    "SELECT " QUEUE_COLUMNS " FROM messages "
                    "WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT ?2",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64) max);
  return queue_collect(st, out);
}

int queue_find_all(struct store *store, const char *message_id,
                   struct queue_entry **out, size_t max)
{
  sqlite3_stmt *st = NULL;

  if (queue_prepare(store,
                    "SELECT " QUEUE_COLUMNS " FROM messages "
                    "WHERE message_id = ? ORDER BY id DESC LIMIT ?",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_text(st, 1, message_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64) max);
  return queue_collect(st, out);
}

int queue_each_sent_since(struct store *store, int64_t since_ms,
                          queue_sent_cb visit, void *arg)
{
  sqlite3_stmt *st = NULL;
  int n = 0;
  int rc;

  if (queue_prepare(store,
                    "SELECT sender, sent_at, json_array_length(recipients) "
                    "FROM messages WHERE state = 'sent' AND sent_at >= ? "
                    "ORDER BY sent_at",
                    &st)
      < 0)
    return -EIO;
  sqlite3_bind_int64(st, 1, since_ms);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *sender = (const char *) sqlite3_column_text(st, 0);

    visit(arg, sender ? sender : "", sqlite3_column_int64(st, 1),
          (size_t) sqlite3_column_int64(st, 2));
    n++;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? n : -EIO;
}

int queue_each_due_except(struct store *store, int64_t now_ms, size_t max,
                          const char *skip, queue_visit_cb visit, void *arg)
{
  sqlite3_stmt *st = NULL;
  struct queue_entry *rows = xcalloc(max ? max : 1, sizeof(*rows));
  size_t n = 0;
  int rc;

  if (queue_prepare(store,
                    "SELECT " QUEUE_COLUMNS " FROM messages "
                    "WHERE state = 'queued' AND next_attempt_at <= ?1 "
                    "AND (?3 IS NULL OR sender NOT IN "
                    "(SELECT value FROM json_each(?3))) "
                    "ORDER BY next_attempt_at, id LIMIT ?2",
                    &st)
      < 0) {
    free(rows);
    return -EIO;
  }
  sqlite3_bind_int64(st, 1, now_ms);
  sqlite3_bind_int64(st, 2, (sqlite3_int64) max);
  sqlite3_bind_text(st, 3, skip, -1, SQLITE_STATIC);
  /* A visit writes; inside an open read it could fail with SQLITE_BUSY
   * (the intake commits on its own connection), so read first. */
  while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
    queue_entry_load(&rows[n++], st);
  sqlite3_finalize(st);
  if (n < max && rc != SQLITE_DONE) {
    queue_entries_free(rows, n);
    return -EIO;
  }
  for (size_t i = 0; i < n; i++) {
    if (visit(arg, &rows[i]))
      break;
  }
  queue_entries_free(rows, n);
  return (int) n;
}
