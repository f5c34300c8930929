/* SPDX-License-Identifier: MIT */
/* The durable mail queue in SQLite: one row per accepted message, its body
 * in the spool. States: queued -> sending -> sent | failed, and held while
 * the policy refuses the sender. */
#ifndef NX_QUEUE_H
#define NX_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define QUEUE_ID_SIZE 24 /* printable id plus NUL */

struct queue_entry {
  int64_t rowid;
  char queue_id[QUEUE_ID_SIZE];
  char *sender;
  char **rcpts;
  size_t nrcpts;
  char *message_id;
  uint64_t size;
  char *spool_path;
  char *state;
  int attempts;
  int64_t next_attempt_at; /* ms since epoch */
  int64_t created_at;
  int64_t sent_at; /* 0 if not sent */
  char *error_code;
  char *error_text;
  int verify_first;   /* outcome of an earlier send unknown: look it up */
  int64_t retried_at; /* last operator retry, ms; 0 if none */
};

/* Makes a new random queue id (printable, unique in practice). */
void queue_id_generate(char out[QUEUE_ID_SIZE]);

/* Inserts an accepted message in state queued and commits (durable when it
 * returns 0). The spool file must already be durable. */
int queue_insert(struct store *store, const char *queue_id, const char *sender,
                 const char *const *rcpts, size_t nrcpts,
                 const char *message_id, uint64_t size, const char *spool_path);

#define QUEUE_DIGEST_SIZE 65 /* SHA-256 in hex plus NUL */

/* The digest that recognises a resubmission: SHA-256 over the Message-ID,
 * the sender and the recipients (sorted, ASCII letters folded to lower
 * case), in hex. Returns 0, or -ENOENT when message_id is NULL or empty:
 * a message without one cannot be recognised. */
int queue_envelope_digest(const char *message_id, const char *sender,
                          const char *const *rcpts, size_t nrcpts,
                          char out[QUEUE_DIGEST_SIZE]);

/* Inserts like queue_insert, recording digest (may be NULL), unless a row
 * with the same digest was created in the last window_ms: then nothing is
 * inserted and that row's queue id is copied to original. The look-up and
 * the insert share one write transaction, so two identical submissions
 * racing each other yield one row. Returns 0 when inserted, 1 for a
 * resubmission, or -EIO. */
int queue_insert_once(struct store *store, const char *queue_id,
                      const char *sender, const char *const *rcpts,
                      size_t nrcpts, const char *message_id, uint64_t size,
                      const char *spool_path, const char *digest,
                      int64_t window_ms, char original[QUEUE_ID_SIZE]);

/* One message for queue_insert_batch: queue_insert_once's arguments (the
 * strings are the caller's) and what became of it. */
struct queue_insert_req {
  const char *queue_id;
  const char *sender;
  const char *const *rcpts;
  size_t nrcpts;
  const char *message_id; /* may be NULL */
  uint64_t size;
  const char *spool_path;
  const char *digest;           /* may be NULL */
  int rc;                       /* 0 inserted, 1 resubmission, or -EIO */
  char original[QUEUE_ID_SIZE]; /* the first submission's id, with rc 1 */
};

/* Does queue_insert_once for each of reqs[0..n-1] in one write
 * transaction, so that n messages cost one commit and one sync rather than
 * n. A resubmission is recognised within the batch too. When the commit
 * fails, every rc is -EIO and nothing was recorded. */
void queue_insert_batch(struct store *store, struct queue_insert_req **reqs,
                        size_t n, int64_t window_ms);

/* Moves a queued row's next attempt to at without counting an attempt
 * (pacing). Returns 0, or -ENOENT when the row is no longer queued. */
int queue_defer(struct store *store, int64_t rowid, int64_t at);

/* Deletes sent rows sent before sent_before_ms and failed rows failed
 * before failed_before_ms, at most max of them, oldest first, removing any
 * spool file they still have. Returns the number of rows deleted (max:
 * call again for more), or -EIO. */
int queue_purge(struct store *store, int64_t sent_before_ms,
                int64_t failed_before_ms, size_t max);

/* The operator's retry: a failed or held row is queued again now with a
 * fresh attempt count, its age (for max_age) counted from now. A row whose
 * last send's outcome is unknown is still looked up in Sent Items first,
 * unless that look-up is what failed (code verify_failed): then the retry
 * is the operator's decision to send it. Returns 0, or -EAGAIN when the
 * row is in neither state (any more). */
int queue_retry(struct store *store, int64_t rowid);

/* The operator's drop: a queued or held row fails with code "dropped" and
 * reason as its text. The caller removes the spool file. Returns 0, or
 * -EAGAIN when the row is in neither state (any more). */
int queue_drop(struct store *store, int64_t rowid, const char *reason);

/* Loads every row with this Message-ID, newest first, up to max; the
 * caller frees *out with queue_entries_free. Returns the count or -EIO. */
int queue_find_all(struct store *store, const char *message_id,
                   struct queue_entry **out, size_t max);

/* Visits every message sent at or after since_ms, oldest first, with its
 * sender, sent time and recipient count (to rebuild sending-rate windows
 * after a start). Returns the number visited or -EIO. */
typedef void (*queue_sent_cb)(void *arg, const char *sender, int64_t sent_at,
                              size_t nrcpts);
int queue_each_sent_since(struct store *store, int64_t since_ms,
                          queue_sent_cb visit, void *arg);

/* Rows left in sending by a crash go back to queued, to be looked up in
 * Sent Items no earlier than now + delay_ms; returns how many. */
int queue_recover(struct store *store, int64_t delay_ms);

/* Visits due rows (state queued, next_attempt_at <= now), earliest
 * first, until visit returns nonzero or max rows were seen, leaving out
 * the rows of the senders in skip (a JSON array of addresses, or NULL),
 * so that a mailbox with a long backlog it cannot start now does not fill
 * every batch. The rows are read before the first visit, so visits may
 * write; an entry is valid only during its visit (copy what you keep).
 * Returns the number of rows read or a negative errno. */
typedef int (*queue_visit_cb)(void *arg, const struct queue_entry *e);
int queue_each_due_except(struct store *store, int64_t now_ms, size_t max,
                          const char *skip, queue_visit_cb visit, void *arg);

/* Like queue_recover, at run time: rows left in 'sending' since before
 * before_ms whose id is not in running (a JSON array of row ids, the sends
 * in progress) are queued to be looked up in Sent Items after delay_ms.
 * Such a row is one whose outcome could not be recorded (the database was
 * locked or failing when the send ended). Returns the number, or -EIO. */
int queue_recover_orphans(struct store *store, int64_t before_ms,
                          const char *running, int64_t delay_ms);

/* Earliest next_attempt_at among queued rows, or -1 if none. */
int64_t queue_next_due(struct store *store);

/* Senders that have held rows, for re-checking the policy; each string
 * and the array are freed by the caller. Returns the count, or -EIO. */
int queue_held_senders(struct store *store, char ***out);

/* Senders that have queued rows, likewise. */
int queue_queued_senders(struct store *store, char ***out);

/* Holds every queued row of sender, with the policy's code and sentence;
 * a row whose last send must first be looked up in Sent Items keeps that
 * flag and its due time. Returns the number of rows held, or -EIO. */
int queue_hold_sender(struct store *store, const char *sender, const char *code,
                      const char *text);

/* Loads one row by queue id or Message-ID; 0, -ENOENT or -EIO. */
int queue_find(struct store *store, const char *queue_id,
               const char *message_id, struct queue_entry *out);

/* Moves a queued row to sending; -ENOENT when it is no longer queued (an
 * operator dropped it meanwhile), and then it must not be sent. */
int queue_mark_sending(struct store *store, int64_t rowid);
int queue_mark_sent(struct store *store, int64_t rowid);
int queue_mark_retry(struct store *store, int64_t rowid,
                     int64_t next_attempt_at, const char *code,
                     const char *text);
/* Queues the row again with its outcome unknown (crash, lost reply): the
 * next attempt first looks for it in Sent Items. */
int queue_mark_verify(struct store *store, int64_t rowid,
                      int64_t next_attempt_at, const char *code,
                      const char *text);
/* Fails the row; its verify_first flag is kept (see queue_retry). */
int queue_mark_failed(struct store *store, int64_t rowid, const char *code,
                      const char *text);
int queue_mark_held(struct store *store, int64_t rowid, const char *code,
                    const char *text);

/* Held messages of sender (all senders if NULL) go back to queued, due
 * now (a row awaiting its Sent Items look-up: not before it was due);
 * returns how many. */
int queue_release_held(struct store *store, const char *sender);

/* Fails every queued or held message of sender with code and text (the
 * offboarding path); returns how many. */
int queue_fail_sender(struct store *store, const char *sender, const char *code,
                      const char *text);

/* Counts rows in a state (NULL: all). */
int queue_count(struct store *store, const char *state, int64_t *count);

/* Lists rows in a state (NULL: all), newest first, up to max. */
int queue_list(struct store *store, const char *state, struct queue_entry **out,
               size_t max);

void queue_entry_free(struct queue_entry *e);
void queue_entries_free(struct queue_entry *v, size_t n);

#endif
