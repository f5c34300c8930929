/* SPDX-License-Identifier: MIT */
/* Linked users and tenant consent in SQLite (see include/links.h). Token
 * columns are opaque blobs: encryption belongs to the token module. */
#include "links.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "log.h"
#include "queue.h"
#include "xalloc.h"

static const char *const links_state_names[] = {
  [POLICY_LINK_NONE] = "none",
  [POLICY_LINK_OK] = "linked",
  [POLICY_LINK_NEEDS_RELINK] = "needs_relink",
};

static const char *const tenant_consent_names[] = {
  [TENANT_CONSENT_MISSING] = "missing",
  [TENANT_CONSENT_GRANTED] = "granted",
  [TENANT_CONSENT_FAILED] = "failed",
};

const char *links_state_name(enum policy_link_state state)
{
  assert((size_t) state < sizeof(links_state_names) / sizeof(char *));
  return links_state_names[state];
}

const char *tenant_consent_state_name(enum tenant_consent_state state)
{
  assert((size_t) state < sizeof(tenant_consent_names) / sizeof(char *));
  return tenant_consent_names[state];
}

static enum policy_link_state links_state_parse(const unsigned char *text)
{
  if (text != NULL && strcmp((const char *) text, "linked") == 0)
    return POLICY_LINK_OK;
  if (text != NULL && strcmp((const char *) text, "needs_relink") == 0)
    return POLICY_LINK_NEEDS_RELINK;
  return POLICY_LINK_NONE;
}

static sqlite3_stmt *links_prepare(struct store *store, const char *sql)
{
  sqlite3_stmt *st = NULL;

  if (sqlite3_prepare_v2(store->db, sql, -1, &st, NULL) != SQLITE_OK) {
    log_error("- store prepare_failed error=\"%s\"", sqlite3_errmsg(store->db));
    return NULL;
  }
  return st;
}

/* Steps a statement that returns no rows and finalizes it. Returns the
 * number of rows changed, or -EIO. */
static int links_run(struct store *store, sqlite3_stmt *st)
{
  int rc;

  if (st == NULL)
    return -EIO;
  if (sqlite3_step(st) == SQLITE_DONE) {
    rc = sqlite3_changes(store->db);
  } else {
    log_error("- store links_failed error=\"%s\"", sqlite3_errmsg(store->db));
    rc = -EIO;
  }
  sqlite3_finalize(st);
  return rc;
}

static void links_bind_text(sqlite3_stmt *st, int col, const char *text)
{
  if (text == NULL)
    sqlite3_bind_null(st, col);
  else
    sqlite3_bind_text(st, col, text, -1, SQLITE_STATIC);
}

int links_get(struct store *store, const char *address,
              enum policy_link_state *state, char *reason, size_t len)
{
  sqlite3_stmt *st
      = links_prepare(store, "SELECT state, reason FROM users WHERE address=?");
  int step;

  if (st == NULL)
    return -EIO;
  links_bind_text(st, 1, address);
  step = sqlite3_step(st);
  *state = POLICY_LINK_NONE;
  if (reason != NULL && len > 0)
    reason[0] = '\0';
  if (step == SQLITE_ROW) {
    const unsigned char *why = sqlite3_column_text(st, 1);

    *state = links_state_parse(sqlite3_column_text(st, 0));
    if (reason != NULL && why != NULL)
      snprintf(reason, len, "%s", (const char *) why);
  }
  sqlite3_finalize(st);
  return step == SQLITE_ROW || step == SQLITE_DONE ? 0 : -EIO;
}

int links_set_linked(struct store *store, const char *address,
                     const char *graph_id, const char *display_name)
{
  sqlite3_stmt *st = links_prepare(
      store, "INSERT INTO users (address, state, graph_id, display_name,"
             " linked_at, updated_at) VALUES (?1, 'linked', ?2, ?3, ?4, ?4)"
             " ON CONFLICT (address) DO UPDATE SET state='linked',"
             " reason=NULL, graph_id=?2, display_name=?3, linked_at=?4,"
             " updated_at=?4");
  int rc;

  if (st == NULL)
    return -EIO;
  links_bind_text(st, 1, address);
  links_bind_text(st, 2, graph_id);
  links_bind_text(st, 3, display_name);
  sqlite3_bind_int64(st, 4, store_now_ms());
  rc = links_run(store, st);
  return rc < 0 ? rc : 0;
}

int links_mark_relink(struct store *store, const char *address,
                      const char *reason)
{
  sqlite3_stmt *st = links_prepare(
      store, "UPDATE users SET state='needs_relink', reason=?,"
             " refresh_token=NULL, updated_at=? WHERE address=?");
  int rc;

  if (st == NULL)
    return -EIO;
  links_bind_text(st, 1, reason);
  sqlite3_bind_int64(st, 2, store_now_ms());
  links_bind_text(st, 3, address);
  rc = links_run(store, st);
  if (rc < 0)
    return rc;
  return rc == 0 ? -ENOENT : 0;
}

int links_mark_all_relink(struct store *store, const char *reason)
{
  sqlite3_stmt *st = links_prepare(
      store, "UPDATE users SET state='needs_relink', reason=?,"
             " refresh_token=NULL, updated_at=?"
             " WHERE state='linked' OR refresh_token IS NOT NULL");

  if (st == NULL)
    return -EIO;
  links_bind_text(st, 1, reason);
  sqlite3_bind_int64(st, 2, store_now_ms());
  return links_run(store, st);
}

int links_remove(struct store *store, const char *address)
{
  sqlite3_stmt *st = links_prepare(store, "DELETE FROM users WHERE address=?");
  int rc;

  if (st == NULL)
    return -EIO;
  links_bind_text(st, 1, address);
  rc = links_run(store, st);
  if (rc < 0)
    return rc;
  return rc == 0 ? -ENOENT : 0;
}

/* Runs sql, a query of one row of n integers, into counts[0..n-1].
 * Returns 0, leaving counts untouched on failure, or -EIO. */
static int links_count_query(struct store *store, const char *sql,
                             int64_t *counts, int n)
{
  sqlite3_stmt *st = links_prepare(store, sql);
  int rc = -EIO;

  if (st == NULL)
    return -EIO;
  if (sqlite3_step(st) == SQLITE_ROW) {
    for (int i = 0; i < n; i++)
      counts[i] = sqlite3_column_int64(st, i);
    rc = 0;
  }
  sqlite3_finalize(st);
  return rc;
}

int links_count(struct store *store, int64_t *linked, int64_t *needs_relink)
{
  int64_t counts[2];
  int rc = links_count_query(store,
                             "SELECT coalesce(sum(state='linked'), 0),"
                             " coalesce(sum(state='needs_relink'), 0)"
                             " FROM users",
                             counts, 2);

  if (rc == 0) {
    *linked = counts[0];
    *needs_relink = counts[1];
  }
  return rc;
}

static char *links_column_dup(sqlite3_stmt *st, int col)
{
  const unsigned char *text = sqlite3_column_text(st, col);

  return text ? xstrdup((const char *) text) : NULL;
}

/* The columns of a link_entry, in the order links_entry_read takes them. */
#define LINKS_ENTRY_COLUMNS                                                    \
  "address, state, reason, graph_id, display_name,"                            \
  " refresh_token IS NOT NULL, linked_at, updated_at"

/* Fills e from the current row of a statement that selected
 * LINKS_ENTRY_COLUMNS first; the strings are new copies. */
static void links_entry_read(sqlite3_stmt *st, struct link_entry *e)
{
  e->address = links_column_dup(st, 0);
  e->state = links_state_parse(sqlite3_column_text(st, 1));
  e->reason = links_column_dup(st, 2);
  e->graph_id = links_column_dup(st, 3);
  e->display_name = links_column_dup(st, 4);
  e->has_token = sqlite3_column_int(st, 5) != 0;
  e->linked_at = sqlite3_column_int64(st, 6);
  e->updated_at = sqlite3_column_int64(st, 7);
}

int links_list(struct store *store, struct link_entry **out, size_t *n)
{
  sqlite3_stmt *st
      = links_prepare(store, "SELECT " LINKS_ENTRY_COLUMNS " FROM users"
                             " ORDER BY address LIMIT ?");
  struct link_entry *v = NULL;
  size_t count = 0;
  int step;

  if (st == NULL)
    return -EIO;
  sqlite3_bind_int(st, 1, LINKS_LIST_MAX);
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    v = xrealloc(v, (count + 1) * sizeof(*v));
    links_entry_read(st, &v[count++]);
  }
  sqlite3_finalize(st);
  if (step != SQLITE_DONE) {
    links_entries_free(v, count);
    return -EIO;
  }
  *out = v;
  *n = count;
  return 0;
}

void links_entry_clear(struct link_entry *e)
{
  free(e->address);
  free(e->reason);
  free(e->graph_id);
  free(e->display_name);
  memset(e, 0, sizeof(*e));
}

void links_entries_free(struct link_entry *v, size_t n)
{
  for (size_t i = 0; i < n; i++)
    links_entry_clear(&v[i]);
  free(v);
}

int links_token_set(struct store *store, const char *address, const void *blob,
                    size_t len)
{
  sqlite3_stmt *st = links_prepare(
      store, "UPDATE users SET refresh_token=?, updated_at=? WHERE address=?");
  int rc;

  if (st == NULL)
    return -EIO;
  if (blob == NULL)
    sqlite3_bind_null(st, 1);
  else
    sqlite3_bind_blob64(st, 1, blob, len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, store_now_ms());
  links_bind_text(st, 3, address);
  rc = links_run(store, st);
  if (rc < 0)
    return rc;
  return rc == 0 ? -ENOENT : 0;
}

int links_token_get(struct store *store, const char *address, void **blob,
                    size_t *len)
{
  sqlite3_stmt *st
      = links_prepare(store, "SELECT refresh_token FROM users WHERE address=?"
                             " AND refresh_token IS NOT NULL");
  int step;
  int rc = -ENOENT;

  if (st == NULL)
    return -EIO;
  links_bind_text(st, 1, address);
  step = sqlite3_step(st);
  if (step == SQLITE_ROW) {
    size_t n = (size_t) sqlite3_column_bytes(st, 0);
    const void *data = sqlite3_column_blob(st, 0);

    *blob = xmalloc(n);
    if (n > 0)
      memcpy(*blob, data, n);
    *len = n;
    rc = 0;
  } else if (step != SQLITE_DONE) {
    rc = -EIO;
  }
  sqlite3_finalize(st);
  return rc;
}

int tenant_consent_get(struct store *store, struct tenant_consent *out)
{
  sqlite3_stmt *st
      = links_prepare(store, "SELECT consent_state, consent_tenant, consent_at,"
                             " consent_error FROM tenant WHERE id=1");
  int rc = -EIO;

  memset(out, 0, sizeof(*out));
  if (st == NULL)
    return -EIO;
  if (sqlite3_step(st) == SQLITE_ROW) {
    const char *state = (const char *) sqlite3_column_text(st, 0);
    const unsigned char *tenant = sqlite3_column_text(st, 1);
    const unsigned char *error = sqlite3_column_text(st, 3);

    if (state != NULL && strcmp(state, "granted") == 0)
      out->state = TENANT_CONSENT_GRANTED;
    else if (state != NULL && strcmp(state, "failed") == 0)
      out->state = TENANT_CONSENT_FAILED;
    if (tenant != NULL)
      snprintf(out->tenant, sizeof(out->tenant), "%s", tenant);
    out->at = sqlite3_column_int64(st, 2);
    if (error != NULL)
      snprintf(out->error, sizeof(out->error), "%s", error);
    rc = 0;
  }
  sqlite3_finalize(st);
  return rc;
}

int tenant_consent_record(struct store *store, bool granted, const char *tenant,
                          const char *error)
{
  sqlite3_stmt *st = links_prepare(
      store, "UPDATE tenant SET consent_state=?, consent_tenant=?,"
             " consent_at=?, consent_error=? WHERE id=1");
  int rc;

  if (st == NULL)
    return -EIO;
  links_bind_text(st, 1, granted ? "granted" : "failed");
  links_bind_text(st, 2, tenant);
  sqlite3_bind_int64(st, 3, store_now_ms());
  links_bind_text(st, 4, granted ? NULL : error);
  rc = links_run(store, st);
  if (rc < 0)
    return rc;
  return rc == 1 ? 0 : -EIO;
}

int links_token_count(struct store *store, int64_t *n)
{
  return links_count_query(
      store, "SELECT count(*) FROM users WHERE refresh_token IS NOT NULL", n,
      1);
}

/* Deletes what else is kept per user: CalDAV's resource mappings and
 * sign-ins in progress. Returns 0 or -EIO. */
static int links_forget(struct store *store, const char *address)
{
  static const char *const sql[] = {
    "DELETE FROM caldav_objects WHERE address=?",
    "DELETE FROM link_pending WHERE address=?",
  };

  for (size_t i = 0; i < sizeof(sql) / sizeof(*sql); i++) {
    sqlite3_stmt *st = links_prepare(store, sql[i]);

    if (st == NULL)
      return -EIO;
    links_bind_text(st, 1, address);
    if (links_run(store, st) < 0)
      return -EIO;
  }
  return 0;
}

int links_unlink(struct store *store, const char *actor, const char *address,
                 char **detail)
{
  int removed, failed;

  *detail = NULL;
  /* Row, tokens, mappings and mail go together or not at all. */
  if (store_begin(store) < 0)
    return -EIO;
  removed = links_remove(store, address);
  failed = queue_fail_sender(store, address, "user_unlinked",
                             "The user was unlinked by an administrator");
  if ((removed < 0 && removed != -ENOENT) || failed < 0
      || links_forget(store, address) < 0)
    goto fail;
  if (removed == -ENOENT && failed == 0) {
    store_rollback(store);
    return -ENOENT;
  }
  *detail = xasprintf("%s: link %s, tokens wiped, %d queued or held messages "
                      "failed (user_unlinked)",
                      address, removed == 0 ? "removed" : "absent", failed);
  if (audit_record(store, actor, "unlink", *detail) < 0
      || store_commit(store) < 0)
    goto fail;
  return 0;

fail:
  store_rollback(store);
  free(*detail);
  *detail = NULL;
  return -EIO;
}

int links_entry_get(struct store *store, const char *address,
                    struct link_entry *out)
{
  sqlite3_stmt *st = links_prepare(store, "SELECT " LINKS_ENTRY_COLUMNS
                                          " FROM users WHERE address=?");
  int step;

  memset(out, 0, sizeof(*out));
  if (st == NULL)
    return -EIO;
  links_bind_text(st, 1, address);
  step = sqlite3_step(st);
  if (step == SQLITE_ROW)
    links_entry_read(st, out);
  sqlite3_finalize(st);
  if (step == SQLITE_ROW)
    return 0;
  return step == SQLITE_DONE ? -ENOENT : -EIO;
}

/* Records a sign-in; expired ones are dropped first so the table stays
 * small. Returns 0, -ENOSPC beyond LINKS_PENDING_MAX, or -EIO. */
int links_pending_put(struct store *store, const char *state,
                      const char *address, const char *verifier,
                      unsigned lifetime_s)
{
  sqlite3_stmt *st = NULL;
  int64_t now = store_now_ms();
  int rc = -EIO;

  if (sqlite3_prepare_v2(store->db,
                         "DELETE FROM link_pending WHERE expires_at < ?1", -1,
                         &st, NULL)
      != SQLITE_OK)
    goto out;
  sqlite3_bind_int64(st, 1, now);
  sqlite3_step(st);
  sqlite3_finalize(st);
  st = NULL;
  if (sqlite3_prepare_v2(store->db,
                         "INSERT INTO link_pending (state, address, verifier,"
                         " expires_at, created_at) SELECT ?1, ?2, ?3, ?4, ?5"
                         " WHERE (SELECT count(*) FROM link_pending) < ?6",
                         -1, &st, NULL)
      != SQLITE_OK)
    goto out;
  sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, address, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, verifier, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, now + (int64_t) lifetime_s * 1000);
  sqlite3_bind_int64(st, 5, now);
  sqlite3_bind_int(st, 6, LINKS_PENDING_MAX);
  if (sqlite3_step(st) == SQLITE_DONE)
    rc = sqlite3_changes(store->db) == 1 ? 0 : -ENOSPC;

out:
  if (rc == -EIO)
    log_error("- link pending_failed error=\"%s\"", sqlite3_errmsg(store->db));
  sqlite3_finalize(st);
  return rc;
}

/* Takes the sign-in named by state: it is deleted whatever happens next,
 * so a state works once. Returns 0 with *address and *verifier (caller
 * frees), -ENOENT when unknown, -ETIMEDOUT when expired, or -EIO. */
int links_pending_take(struct store *store, const char *state, char **address,
                       char **verifier)
{
  sqlite3_stmt *st = NULL;
  int64_t expires = 0;
  int rc = -EIO;

  if (sqlite3_prepare_v2(store->db,
                         "DELETE FROM link_pending WHERE state = ?1"
                         " RETURNING address, verifier, expires_at",
                         -1, &st, NULL)
      != SQLITE_OK)
    goto out;
  sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
  switch (sqlite3_step(st)) {
    case SQLITE_ROW:
      *address = xstrdup((const char *) sqlite3_column_text(st, 0));
      *verifier = xstrdup((const char *) sqlite3_column_text(st, 1));
      expires = sqlite3_column_int64(st, 2);
      rc = 0;
      break;
    case SQLITE_DONE:
      rc = -ENOENT;
      break;
  }
  if (rc == 0 && expires < store_now_ms()) {
    free(*address);
    free(*verifier);
    rc = -ETIMEDOUT;
  }

out:
  if (rc == -EIO)
    log_error("- link pending_failed error=\"%s\"", sqlite3_errmsg(store->db));
  sqlite3_finalize(st);
  return rc;
}
