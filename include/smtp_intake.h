/* SPDX-License-Identifier: MIT */
/* Taking an SMTP message into the queue: its bytes go to a spool file as
 * they arrive; at the end of data, on libuv's thread pool, the file is made
 * durable, the message is checked by translating it for Graph (so that no
 * 250 is followed by a translation failure), and its queue row is
 * committed. Only then does the caller answer 250. */
#ifndef NX_SMTP_INTAKE_H
#define NX_SMTP_INTAKE_H

#include <stddef.h>
#include <uv.h>

#include "smtp_session.h"

struct smtp_intake;
struct smtp_intake_msg;

/* Called on the loop once a message has been committed to the queue. */
typedef void (*smtp_intake_queued_cb)(void *arg);

/* The SMTP reply for a commit: 250 with the queue id as text, or a
 * failure. */
typedef void (*smtp_intake_done_cb)(void *arg, int code, const char *enhanced,
                                    const char *text);

/* Opens its own database connection (commits run on worker threads) and
 * prepares the spool directory. */
int smtp_intake_new(uv_loop_t *loop, const char *spool_dir, const char *db_path,
                    smtp_intake_queued_cb queued, void *arg,
                    struct smtp_intake **out);

void smtp_intake_free(struct smtp_intake *intake);

/* Recognise resubmissions for this long: a message with the same
 * Message-ID and envelope (sender and recipients) as one committed in the
 * last seconds is answered 250 with that message's queue id and not queued
 * again. 0 (the default) queues every submission. Set before the first
 * message. */
void smtp_intake_set_dedup_window(struct smtp_intake *intake, unsigned seconds);

/* Starts a message with a fresh queue id. */
int smtp_intake_begin(struct smtp_intake *intake, struct smtp_intake_msg **out);

/* Appends message bytes to the spool file. */
int smtp_intake_write(struct smtp_intake_msg *msg, const char *buf, size_t len);

/* Commits the message as sent by sender (the normalised linked user) to
 * the envelope's recipients. done runs on the loop exactly once; msg is
 * freed after it. */
void smtp_intake_commit(struct smtp_intake_msg *msg, const char *sender,
                        const struct smtp_envelope *env,
                        smtp_intake_done_cb done, void *arg);

/* Drops an uncommitted message and its spool file. */
void smtp_intake_abort(struct smtp_intake_msg *msg);

/* The queue id of a message in progress. */
const char *smtp_intake_queue_id(const struct smtp_intake_msg *msg);

#endif
