/* SPDX-License-Identifier: MIT */
/* The agent's SQLite database: opening it in WAL mode and migrating its
 * schema. Tables belong to the modules that use them (queue.c, links.c,
 * audit.c, ...); this module owns only the file and the schema version. */
#ifndef NX_STORE_H
#define NX_STORE_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

struct store {
  sqlite3 *db;
  char *path;
};

/* Opens (creating if needed) the database at path, sets WAL mode,
 * synchronous=FULL and a busy timeout, and applies every migration the file
 * has not seen. Returns 0 and a new store, or a negative errno with a
 * sentence in err. */
int store_open(const char *path, struct store **out, char *err, size_t errlen);

/* Closes the database and frees the store; NULL is allowed. */
void store_close(struct store *store);

/* Schema version the file is at (PRAGMA user_version). */
int store_schema_version(struct store *store);

/* Runs sql (no result rows) and logs sqlite's message on failure; returns
 * 0 or -EIO. */
int store_exec(struct store *store, const char *sql);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK; return 0 or -EIO. */
int store_begin(struct store *store);
int store_commit(struct store *store);
void store_rollback(struct store *store);

/* Milliseconds since the epoch, the unit of every time column. */
int64_t store_now_ms(void);

#endif
