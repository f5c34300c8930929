/* SPDX-License-Identifier: MIT */
/* The audit trail in SQLite (see include/audit.h). */
#include "audit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "xalloc.h"

int audit_record(struct store *store, const char *actor, const char *action,
                 const char *detail)
{
  sqlite3_stmt *st = NULL;
  int rc = -EIO;

  if (sqlite3_prepare_v2(store->db,
                         "INSERT INTO audit (at, actor, action, detail) "
                         "VALUES (?, ?, ?, ?)",
                         -1, &st, NULL)
      != SQLITE_OK)
    goto out;
  sqlite3_bind_int64(st, 1, store_now_ms());
  sqlite3_bind_text(st, 2, actor, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, action, -1, SQLITE_STATIC);
  if (detail != NULL)
    sqlite3_bind_text(st, 4, detail, (int) strnlen(detail, AUDIT_DETAIL_MAX),
                      SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_DONE)
    rc = 0;

out:
  if (rc < 0)
    log_error("- store audit_failed action=%s error=\"%s\"", action,
              sqlite3_errmsg(store->db));
  sqlite3_finalize(st);
  return rc;
}

static char *audit_column_dup(sqlite3_stmt *st, int col)
{
  const unsigned char *text = sqlite3_column_text(st, col);

  return text ? xstrdup((const char *) text) : NULL;
}

int audit_list(struct store *store, int64_t since_ms, struct audit_entry **out,
               size_t *n)
{
  sqlite3_stmt *st = NULL;
  struct audit_entry *v = NULL;
  size_t count = 0;
  int step;
  int rc = -EIO;

  /* The newest rows win when there are too many; they are put back in
   * time order by the outer query. */
  if (sqlite3_prepare_v2(store->db,
                         "SELECT id, at, actor, action, detail FROM ("
                         " SELECT * FROM audit WHERE at >= ?"
                         " ORDER BY id DESC LIMIT ?) ORDER BY id",
                         -1, &st, NULL)
      != SQLITE_OK)
    goto out;
  sqlite3_bind_int64(st, 1, since_ms);
  sqlite3_bind_int(st, 2, AUDIT_LIST_MAX);
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    struct audit_entry *e;

    v = xrealloc(v, (count + 1) * sizeof(*v));
    e = &v[count++];
    e->id = sqlite3_column_int64(st, 0);
    e->at = sqlite3_column_int64(st, 1);
    e->actor = audit_column_dup(st, 2);
    e->action = audit_column_dup(st, 3);
    e->detail = audit_column_dup(st, 4);
  }
  if (step == SQLITE_DONE)
    rc = 0;

out:
  sqlite3_finalize(st);
  if (rc < 0) {
    log_error("- store audit_list_failed error=\"%s\"",
              sqlite3_errmsg(store->db));
    audit_entries_free(v, count);
    return rc;
  }
  *out = v;
  *n = count;
  return 0;
}

void audit_entries_free(struct audit_entry *v, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    free(v[i].actor);
    free(v[i].action);
    free(v[i].detail);
  }
  free(v);
}
