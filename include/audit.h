/* SPDX-License-Identifier: MIT */
/* The append-only audit trail (table audit): who changed what, and when.
 * Rows are only ever inserted. */
#ifndef NX_AUDIT_H
#define NX_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define AUDIT_LIST_MAX 10000  /* rows audit_list returns at most */
#define AUDIT_DETAIL_MAX 4096 /* longer details are cut to this */

struct audit_entry {
  int64_t id;
  int64_t at;   /* ms since epoch */
  char *actor;  /* "agent", or the OS user who ran the CLI */
  char *action; /* e.g. "policy_applied", "policy_disable", "unlink" */
  char *detail; /* what changed, or NULL */
};

/* Appends a record stamped now; detail may be NULL. Returns 0 or -EIO. */
int audit_record(struct store *store, const char *actor, const char *action,
                 const char *detail);

/* Loads records at or after since_ms, oldest first; when there are more
 * than AUDIT_LIST_MAX, the newest AUDIT_LIST_MAX. The caller frees the
 * array with audit_entries_free. Returns 0 or -EIO. */
int audit_list(struct store *store, int64_t since_ms, struct audit_entry **out,
               size_t *n);

void audit_entries_free(struct audit_entry *v, size_t n);

#endif
