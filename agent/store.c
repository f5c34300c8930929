/* SPDX-License-Identifier: MIT */
/* SQLite file, pragmas and schema migrations (see include/store.h). */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "xalloc.h"

/* Each entry moves the schema from version i to i + 1. Never edit an entry
 * that has shipped; append a new one. */
static const char *const store_migrations[] = {
  /* 1: queue, linked users, tenant consent, policy state, audit trail. */
  "CREATE TABLE messages ("
  "  id INTEGER PRIMARY KEY,"
  "  queue_id TEXT NOT NULL UNIQUE,"
  "  sender TEXT NOT NULL,"
  "  recipients TEXT NOT NULL," /* JSON array of envelope recipients */
  "  message_id TEXT,"
  "  size INTEGER NOT NULL,"
  "  spool_path TEXT NOT NULL,"
  "  state TEXT NOT NULL CHECK (state IN"
  "    ('queued', 'sending', 'sent', 'failed', 'held')),"
  "  attempts INTEGER NOT NULL DEFAULT 0,"
  "  next_attempt_at INTEGER NOT NULL,"
  "  created_at INTEGER NOT NULL,"
  "  updated_at INTEGER NOT NULL,"
  "  sent_at INTEGER,"
  "  error_code TEXT,"
  "  error_text TEXT"
  ");"
  "CREATE INDEX messages_due ON messages (state, next_attempt_at);"
  "CREATE INDEX messages_sender ON messages (sender, state);"
  "CREATE INDEX messages_message_id ON messages (message_id);"
  "CREATE TABLE users ("
  "  address TEXT PRIMARY KEY," /* normalised, lower case */
  "  state TEXT NOT NULL CHECK (state IN ('linked', 'needs_relink')),"
  "  reason TEXT,"
  "  graph_id TEXT,"
  "  display_name TEXT,"
  "  refresh_token BLOB," /* encrypted; NULL in application mode */
  "  linked_at INTEGER NOT NULL,"
  "  updated_at INTEGER NOT NULL"
  ");"
  "CREATE TABLE tenant ("
  "  id INTEGER PRIMARY KEY CHECK (id = 1),"
  "  consent_state TEXT NOT NULL DEFAULT 'missing' CHECK (consent_state IN"
  "    ('missing', 'granted', 'failed')),"
  "  consent_tenant TEXT,"
  "  consent_at INTEGER,"
  "  consent_error TEXT"
  ");"
  "INSERT INTO tenant (id) VALUES (1);"
  "CREATE TABLE policy_state ("
  "  id INTEGER PRIMARY KEY CHECK (id = 1),"
  "  loaded_at INTEGER," /* last valid policy the agent applied */
  "  digest TEXT,"
  "  error TEXT," /* last rejected file, with its line */
  "  error_at INTEGER"
  ");"
  "INSERT INTO policy_state (id) VALUES (1);"
  "CREATE TABLE audit ("
  "  id INTEGER PRIMARY KEY,"
  "  at INTEGER NOT NULL,"
  "  actor TEXT NOT NULL,"
  "  action TEXT NOT NULL,"
  "  detail TEXT"
  ");",
  /* 2: sends whose outcome is unknown (crash, lost reply) are looked up in
   * Sent Items before they are sent again. */
  "ALTER TABLE messages ADD COLUMN verify_first INTEGER NOT NULL DEFAULT 0;",
  /* 3: CalDAV objects: Nextal's resource name and UID to the Graph event
   * (immutable id) and the ETag last derived from its change key. */
  "CREATE TABLE caldav_objects ("
  "  address TEXT NOT NULL,"
  "  name TEXT NOT NULL,"
  "  uid TEXT NOT NULL,"
  "  event_id TEXT NOT NULL,"
  "  etag TEXT,"
  "  PRIMARY KEY (address, name)"
  ");"
  "CREATE INDEX caldav_objects_uid ON caldav_objects (address, uid);"
  "CREATE INDEX caldav_objects_event ON caldav_objects (address, event_id);",
  /* 4: a digest of Message-ID and envelope recognises a resubmission of
   * the same message (see queue_insert_once). */
  "ALTER TABLE messages ADD COLUMN envelope_digest TEXT;"
  "CREATE INDEX messages_envelope ON messages (envelope_digest, created_at);",
  /* 5: delegated sign-ins in progress: the OAuth state names the user the
   * start link was for and holds the PKCE verifier until the callback. */
  "CREATE TABLE link_pending ("
  "  state TEXT PRIMARY KEY,"
  "  address TEXT NOT NULL,"
  "  verifier TEXT NOT NULL,"
  "  expires_at INTEGER NOT NULL," /* ms since epoch */
  "  created_at INTEGER NOT NULL"
  ");",
  /* 6: large mail goes out as a draft; its id lets a retry resume the
   * same draft rather than make another (see mail_upload.c). */
  "ALTER TABLE messages ADD COLUMN draft_id TEXT;",
  /* 7: an operator's retry restarts the age limit (max_age) of a message
   * without rewriting when it was accepted. */
  "ALTER TABLE messages ADD COLUMN retried_at INTEGER;",
  /* 8: the zones a CalDAV client wrote DTSTART and DTEND in (IANA names),
   * so that GET answers in them while Graph still holds the same Windows
   * zone (see docs/caldav.md); NULL for UTC, floating and all-day times. */
  "ALTER TABLE caldav_objects ADD COLUMN start_tzid TEXT;"
  "ALTER TABLE caldav_objects ADD COLUMN end_tzid TEXT;",
  /* 9: the ATTENDEEs with SCHEDULE-AGENT=CLIENT or NONE of a CalDAV
   * object's master, which Graph never sees, as a JSON array of their
   * iCalendar lines, so that GET gives them back (see docs/caldav.md);
   * NULL for none and for events made in Outlook. */
  "ALTER TABLE caldav_objects ADD COLUMN client_attendees TEXT;",
  /* 10: what the policy the agent applies says, so that nextal-policy
   * status can show it while the file on disk is broken; all NULL, with
   * digest, while the agent has no valid policy and refuses everything. */
  "ALTER TABLE policy_state ADD COLUMN enabled INTEGER;"
  "ALTER TABLE policy_state ADD COLUMN mode TEXT;"
  "ALTER TABLE policy_state ADD COLUMN users INTEGER;",
};

#define STORE_NMIGRATIONS                                                      \
  ((int) (sizeof(store_migrations) / sizeof(*store_migrations)))

int64_t store_now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int store_exec(struct store *store, const char *sql)
{
  char *msg = NULL;

  if (sqlite3_exec(store->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    log_error("- store exec_failed path=%s error=\"%s\"", store->path,
              msg ? msg : sqlite3_errmsg(store->db));
    sqlite3_free(msg);
    return -EIO;
  }
  return 0;
}

int store_begin(struct store *store)
{
  return store_exec(store, "BEGIN IMMEDIATE");
}

int store_commit(struct store *store)
{
  return store_exec(store, "COMMIT");
}

void store_rollback(struct store *store)
{
  sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
}

int store_schema_version(struct store *store)
{
  sqlite3_stmt *st = NULL;
  int version = -1;

  if (sqlite3_prepare_v2(store->db, "PRAGMA user_version", -1, &st, NULL)
          == SQLITE_OK
      && sqlite3_step(st) == SQLITE_ROW)
    version = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return version;
}

/* Applies the migrations the file lacks, each in its own transaction with
 * the version bump, so a crash leaves a consistent version. */
static int store_migrate(struct store *store, char *err, size_t errlen)
{
  int version = store_schema_version(store);

  if (version < 0 || version > STORE_NMIGRATIONS) {
    snprintf(err, errlen,
             "%s: schema version %d is newer than this agent knows (%d)",
             store->path, version, STORE_NMIGRATIONS);
    return -EPROTO;
  }
  for (; version < STORE_NMIGRATIONS; version++) {
    char bump[64];

    /* Another process (the CLI and the agent starting together) may have
     * migrated meanwhile: look again once the write lock is ours. */
    if (store_begin(store) < 0) {
      snprintf(err, errlen, "%s: cannot lock for migration", store->path);
      return -EIO;
    }
    if (store_schema_version(store) > version) {
      store_commit(store);
      version = store_schema_version(store) - 1;
      continue;
    }
    snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", version + 1);
    if (store_exec(store, store_migrations[version]) < 0
        || store_exec(store, bump) < 0 || store_commit(store) < 0) {
      store_rollback(store);
      snprintf(err, errlen, "%s: migration to schema %d failed", store->path,
               version + 1);
      return -EIO;
    }
    log_info("- store migrated path=%s version=%d", store->path, version + 1);
  }
  return 0;
}

int store_open(const char *path, struct store **out, char *err, size_t errlen)
{
  struct store *store = xcalloc(1, sizeof(*store));
  int rc;

  store->path = xstrdup(path);
  rc = sqlite3_open_v2(
      path, &store->db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "%s: cannot open database: %s", path,
             store->db ? sqlite3_errmsg(store->db) : sqlite3_errstr(rc));
    rc = -EIO;
    goto out;
  }
  sqlite3_busy_timeout(store->db, 5000);
  /* WAL lets the CLI read while the agent writes; FULL makes every commit
   * durable before we answer 250. */
  if (store_exec(store, "PRAGMA journal_mode = WAL") < 0
      || store_exec(store, "PRAGMA synchronous = FULL") < 0
      || store_exec(store, "PRAGMA foreign_keys = ON") < 0) {
    snprintf(err, errlen, "%s: cannot set up database: %s", path,
             sqlite3_errmsg(store->db));
    rc = -EIO;
    goto out;
  }
  rc = store_migrate(store, err, errlen);

out:
  if (rc < 0) {
    store_close(store);
    return rc;
  }
  *out = store;
  return 0;
}

void store_close(struct store *store)
{
  if (store == NULL)
    return;
  sqlite3_close(store->db);
  free(store->path);
  free(store);
}
