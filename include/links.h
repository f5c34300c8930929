/* SPDX-License-Identifier: MIT */
/* Linked users (table users) and the tenant's admin consent (table tenant).
 * Refresh tokens are opaque blobs here: the token module encrypts them
 * before they are stored and decrypts them after they are read. */
#ifndef NX_LINKS_H
#define NX_LINKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "store.h"

#define LINKS_LIST_MAX 100000  /* rows links_list returns at most */
#define LINKS_PENDING_MAX 1000 /* sign-ins and consent links in progress */

/* The admin consent link's state is kept as a pending row with an empty
 * address and this verifier, for as long as IT may take to open it. */
#define LINKS_CONSENT_MARKER "admin_consent"
#define LINKS_CONSENT_LIFETIME_S (14 * 86400)

/* One row of the users table. */
struct link_entry {
  char *address;                /* normalised */
  enum policy_link_state state; /* POLICY_LINK_OK or _NEEDS_RELINK */
  char *reason;                 /* why a re-link is needed, or NULL */
  char *graph_id;               /* the Graph user id, or NULL */
  char *display_name;           /* or NULL */
  bool has_token;               /* a refresh token is stored */
  int64_t linked_at;            /* ms since epoch */
  int64_t updated_at;
};

/* The link state of address: POLICY_LINK_NONE when there is no row. The
 * reason (empty when none) is copied into reason if it is not NULL.
 * Returns 0 or -EIO. */
int links_get(struct store *store, const char *address,
              enum policy_link_state *state, char *reason, size_t len);

/* Records address as linked (inserting or updating its row), clearing any
 * re-link reason; graph_id and display_name may be NULL. The stored token
 * is left as it is (see links_token_set). Returns 0 or -EIO. */
int links_set_linked(struct store *store, const char *address,
                     const char *graph_id, const char *display_name);

/* Marks address as needing a re-link for reason and wipes its refresh
 * token. Returns 0, -ENOENT if the user has no row, or -EIO. */
int links_mark_relink(struct store *store, const char *address,
                      const char *reason);

/* Marks every user needing a re-link for reason and wipes every refresh
 * token (the integration was switched off). Returns how many rows were
 * linked or still held a token, or -EIO. */
int links_mark_all_relink(struct store *store, const char *reason);

/* Deletes the row of address, token included. Returns 0, -ENOENT or -EIO. */
int links_remove(struct store *store, const char *address);

/* Offboards address (normalised) in one transaction: its row and token
 * removed, CalDAV mappings and sign-ins in progress deleted, its queued
 * and held mail failed with user_unlinked, and an audit record by actor.
 * *detail receives the audit sentence (caller frees). Returns 0, -ENOENT
 * when the user was neither linked nor had mail (nothing changed), or
 * -EIO. Shared by `nextal-policy unlink` and DELETE /v1/links/ADDRESS. */
int links_unlink(struct store *store, const char *actor, const char *address,
                 char **detail);

/* Counts the rows holding a refresh token into *n; 0 or -EIO. */
int links_token_count(struct store *store, int64_t *n);

/* Counts linked users and users needing a re-link; 0 or -EIO. */
int links_count(struct store *store, int64_t *linked, int64_t *needs_relink);

/* Loads every row, ordered by address, up to LINKS_LIST_MAX, into a new
 * array the caller frees with links_entries_free. Returns 0 or -EIO. */
int links_list(struct store *store, struct link_entry **out, size_t *n);

void links_entries_free(struct link_entry *v, size_t n);

/* Frees the strings of one entry and zeroes it. */
void links_entry_clear(struct link_entry *e);

/* Loads the row of address into *out, whose strings the caller releases
 * with links_entry_clear. Returns 0, -ENOENT when there is no row (out is
 * then zeroed), or -EIO. */
int links_entry_get(struct store *store, const char *address,
                    struct link_entry *out);

/* Stores an opaque (already encrypted) refresh token for address, which
 * must have a row; NULL blob clears it. Returns 0, -ENOENT or -EIO. */
int links_token_set(struct store *store, const char *address, const void *blob,
                    size_t len);

/* Loads the stored token of address into a new buffer (*blob, *len) the
 * caller frees. Returns 0, -ENOENT when there is no row or no token, or
 * -EIO. */
int links_token_get(struct store *store, const char *address, void **blob,
                    size_t *len);

/* Records a sign-in in progress (table link_pending): the OAuth state
 * names address (the user the start link was for; "" for the admin
 * consent link) and keeps verifier (the PKCE verifier, or a marker) for
 * lifetime_s. Expired rows are dropped first. Returns 0, -ENOSPC beyond
 * LINKS_PENDING_MAX, or -EIO. */
int links_pending_put(struct store *store, const char *state,
                      const char *address, const char *verifier,
                      unsigned lifetime_s);

/* Takes the row named by state: it is deleted whatever happens next, so a
 * state works once. Returns 0 with *address and *verifier (caller frees),
 * -ENOENT when unknown, -ETIMEDOUT when expired, or -EIO. */
int links_pending_take(struct store *store, const char *state, char **address,
                       char **verifier);

enum tenant_consent_state {
  TENANT_CONSENT_MISSING,
  TENANT_CONSENT_GRANTED,
  TENANT_CONSENT_FAILED,
};

/* The tenant row. */
struct tenant_consent {
  enum tenant_consent_state state;
  char tenant[128]; /* tenant id the grant named, or empty */
  char error[512];  /* the refusal, in Microsoft's words, or empty */
  int64_t at;       /* when it was recorded, 0 if never */
};

/* Reads the consent state into out; 0 or -EIO. */
int tenant_consent_get(struct store *store, struct tenant_consent *out);

/* Records a grant (granted true, error NULL) or a refusal (error says
 * why); tenant may be NULL. Returns 0 or -EIO. */
int tenant_consent_record(struct store *store, bool granted, const char *tenant,
                          const char *error);

/* "missing", "granted" or "failed". */
const char *tenant_consent_state_name(enum tenant_consent_state state);

/* "linked", "needs_relink" or "none". */
const char *links_state_name(enum policy_link_state state);

#endif
