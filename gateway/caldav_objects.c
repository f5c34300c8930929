/* SPDX-License-Identifier: MIT */
/* The CalDAV mapping table (see include/caldav_objects.h): one row per
 * object name, read and written with prepared statements. */
#include "caldav_objects.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caldav.h"
#include "log.h"
#include "xalloc.h"

void caldav_row_clear(struct caldav_row *row)
{
  free(row->name);
  free(row->uid);
  free(row->event_id);
  free(row->etag);
  free(row->start_tzid);
  free(row->end_tzid);
  free(row->client_attendees);
  memset(row, 0, sizeof(*row));
}

/* The first CALDAV_ETAG_HEX hex digits of a SHA-256 digest. */
static void caldav_tag_hex(const unsigned char digest[32],
                           char out[CALDAV_ETAG_HEX + 1])
{
  static const char hex[] = "0123456789abcdef";

  for (size_t i = 0; i < CALDAV_ETAG_HEX / 2; i++) {
    out[2 * i] = hex[digest[i] >> 4];
    out[2 * i + 1] = hex[digest[i] & 0xf];
  }
  out[CALDAV_ETAG_HEX] = '\0';
}

static sqlite3_stmt *caldav_prepare(struct store *store, const char *sql)
{
  sqlite3_stmt *st = NULL;

  if (sqlite3_prepare_v2(store->db, sql, -1, &st, NULL) != SQLITE_OK) {
    log_error("- store prepare_failed error=\"%s\"", sqlite3_errmsg(store->db));
    sqlite3_finalize(st);
    return NULL;
  }
  return st;
}

static char *caldav_column(sqlite3_stmt *st, int col)
{
  const unsigned char *text = sqlite3_column_text(st, col);

  return text != NULL ? xstrdup((const char *) text) : NULL;
}

/* The columns caldav_row_load() reads, in its order. */
#define CALDAV_ROW_COLUMNS                                                     \
  "name, uid, event_id, etag, start_tzid, end_tzid, client_attendees"

/* Fills row from the CALDAV_ROW_COLUMNS of st. */
static void caldav_row_load(struct caldav_row *row, sqlite3_stmt *st)
{
  row->name = caldav_column(st, 0);
  row->uid = caldav_column(st, 1);
  row->event_id = caldav_column(st, 2);
  row->etag = caldav_column(st, 3);
  row->start_tzid = caldav_column(st, 4);
  row->end_tzid = caldav_column(st, 5);
  row->client_attendees = caldav_column(st, 6);
}

int caldav_row_find(struct store *store, const char *address, const char *key,
                    const char *value, struct caldav_row *row)
{
  char *sql = xasprintf("SELECT " CALDAV_ROW_COLUMNS " FROM caldav_objects"
                        " WHERE address = ?1 AND %s = ?2",
                        key);
  sqlite3_stmt *st = caldav_prepare(store, sql);
  int rc;

  free(sql);
  if (st == NULL)
    return -EIO;
  sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    caldav_row_load(row, st);
    rc = 0;
  } else {
    rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
  }
  sqlite3_finalize(st);
  return rc;
}

int caldav_row_zones(struct store *store, const char *address, const char *uid,
                     const char *event_id, char **start_tzid, char **end_tzid)
{
  sqlite3_stmt *st
      = caldav_prepare(store, "SELECT start_tzid, end_tzid FROM caldav_objects"
                              " WHERE address = ?1 AND uid = ?2"
                              " AND event_id = ?3 ORDER BY name LIMIT 1");
  int rc;

  *start_tzid = *end_tzid = NULL;
  if (st == NULL)
    return -EIO;
  sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, uid, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, event_id, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *start_tzid = caldav_column(st, 0);
    *end_tzid = caldav_column(st, 1);
    rc = 0;
  } else {
    rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
  }
  sqlite3_finalize(st);
  return rc;
}

int caldav_row_client(struct store *store, const char *address,
                      const char *event_id, char **client_attendees)
{
  /* An adopted alias of the same event (a lost PUT answer) has none: the
   * row the client wrote is preferred. */
  sqlite3_stmt *st = caldav_prepare(
      store, "SELECT client_attendees FROM caldav_objects"
             " WHERE address = ?1 AND event_id = ?2"
             " ORDER BY client_attendees IS NULL, name LIMIT 1");
  int rc;

  *client_attendees = NULL;
  if (st == NULL)
    return -EIO;
  sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, event_id, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *client_attendees = caldav_column(st, 0);
    rc = 0;
  } else {
    rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
  }
  sqlite3_finalize(st);
  return rc;
}

/* Runs one statement with up to eight text parameters. Returns 0 or -EIO. */
static int caldav_store_run(struct store *store, const char *sql,
                            const char *const *params, int nparams)
{
  sqlite3_stmt *st = caldav_prepare(store, sql);
  int rc;

  if (st == NULL)
    return -EIO;
  for (int i = 0; i < nparams; i++)
    sqlite3_bind_text(st, i + 1, params[i], -1, SQLITE_STATIC);
  rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
  if (rc < 0)
    log_error("- store caldav_write_failed error=\"%s\"",
              sqlite3_errmsg(store->db));
  sqlite3_finalize(st);
  return rc;
}

int caldav_row_put(struct store *store, const char *address,
                   const struct caldav_row *row)
{
  const char *params[]
      = { address,   row->name,       row->uid,      row->event_id,
          row->etag, row->start_tzid, row->end_tzid, row->client_attendees };

  return caldav_store_run(store,
                          "INSERT OR REPLACE INTO caldav_objects"
                          " (address, name, uid, event_id, etag, start_tzid,"
                          " end_tzid, client_attendees)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                          params, 8);
}

void caldav_row_set_etag(struct store *store, const char *address,
                         const char *name, const char *etag)
{
  const char *params[] = { address, name, etag, CALDAV_ETAG_INCOMPLETE };

  caldav_store_run(store,
                   "UPDATE caldav_objects SET etag = ?3"
                   " WHERE address = ?1 AND name = ?2"
                   " AND etag IS NOT ?4",
                   params, 4);
}

void caldav_row_delete(struct store *store, const char *address,
                       const char *name)
{
  const char *params[] = { address, name };

  caldav_store_run(store,
                   "DELETE FROM caldav_objects WHERE address = ?1"
                   " AND name = ?2",
                   params, 2);
}

int caldav_row_adopt(struct store *store, const char *address,
                     const char *event_id, const char *ical_uid)
{
  unsigned char digest[32];
  char hex[CALDAV_ETAG_HEX + 1];
  char name[CALDAV_ETAG_HEX + 16];
  const char *params[] = { address, name, ical_uid, event_id };

  gnutls_hash_fast(GNUTLS_DIG_SHA256, event_id, strlen(event_id), digest);
  caldav_tag_hex(digest, hex);
  snprintf(name, sizeof(name), "outlook-%s.ics", hex);
  return caldav_store_run(store,
                          "INSERT OR IGNORE INTO caldav_objects"
                          " (address, name, uid, event_id) VALUES"
                          " (?1, ?2, ?3, ?4)",
                          params, 4);
}

void caldav_row_unalias(struct store *store, const char *address,
                        const char *name, const char *event_id)
{
  const char *params[] = { address, name, event_id };

  caldav_store_run(store,
                   "DELETE FROM caldav_objects WHERE address = ?1"
                   " AND name != ?2 AND event_id = ?3",
                   params, 3);
}

int caldav_rows_list(struct store *store, const char *address,
                     struct caldav_row **out)
{
  sqlite3_stmt *st
      = caldav_prepare(store, "SELECT " CALDAV_ROW_COLUMNS
                              " FROM caldav_objects WHERE address = ?1"
                              " ORDER BY name LIMIT ?2");
  struct caldav_row *rows = NULL;
  int n = 0;
  int rc;

  *out = NULL;
  if (st == NULL)
    return -EIO;
  sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, CALDAV_OBJECTS_MAX);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    rows = xrealloc(rows, (size_t) (n + 1) * sizeof(*rows));
    caldav_row_load(&rows[n++], st);
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    caldav_rows_free(rows, n);
    return -EIO;
  }
  *out = rows;
  return n;
}

void caldav_rows_free(struct caldav_row *rows, int n)
{
  for (int i = 0; i < n; i++)
    caldav_row_clear(&rows[i]);
  free(rows);
}

char *caldav_etag(const char *change_key)
{
  unsigned char digest[32];
  char hex[CALDAV_ETAG_HEX + 1];

  gnutls_hash_fast(GNUTLS_DIG_SHA256, change_key, strlen(change_key), digest);
  caldav_tag_hex(digest, hex);
  return xasprintf("\"%s\"", hex);
}

char *caldav_object_etag(const char *key, const char *client_attendees)
{
  gnutls_hash_hd_t hd;
  unsigned char digest[32];
  char hex[CALDAV_ETAG_HEX + 1];

  if (client_attendees == NULL)
    return caldav_etag(key);
  if (gnutls_hash_init(&hd, GNUTLS_DIG_SHA256) < 0)
    abort(); /* fails only when out of memory */
  gnutls_hash(hd, key, strlen(key) + 1);
  gnutls_hash(hd, client_attendees, strlen(client_attendees));
  gnutls_hash_deinit(hd, digest);
  caldav_tag_hex(digest, hex);
  return xasprintf("\"%s\"", hex);
}

char *caldav_ctag(const struct caldav_row *rows, int n)
{
  gnutls_hash_hd_t hd;
  unsigned char digest[32];
  char hex[CALDAV_ETAG_HEX + 1];

  if (gnutls_hash_init(&hd, GNUTLS_DIG_SHA256) < 0)
    abort(); /* fails only when out of memory */
  for (int i = 0; i < n; i++) {
    gnutls_hash(hd, rows[i].name, strlen(rows[i].name) + 1);
    if (rows[i].etag != NULL)
      gnutls_hash(hd, rows[i].etag, strlen(rows[i].etag) + 1);
  }
  gnutls_hash_deinit(hd, digest);
  caldav_tag_hex(digest, hex);
  return xstrdup(hex);
}
