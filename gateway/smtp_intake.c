/* SPDX-License-Identifier: MIT */
/* From end of data to a durable queue row (see include/smtp_intake.h). */
#include "smtp_intake.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mime_to_graph.h"
#include "queue.h"
#include "spool.h"
#include "store.h"
#include "xalloc.h"

/* Rows are committed in groups: a worker thread that finds no commit in
 * progress commits every row waiting, its own included, in one
 * transaction, while the others wait for it on committed. Messages whose
 * data ended together then share one sync of the database, and each 250
 * still follows its own row's commit. */
struct smtp_intake {
  uv_loop_t *loop;
  char *spool_dir;
  struct store *store; /* used only by the worker thread committing */
  pthread_mutex_t lock;
  pthread_cond_t committed;        /* a group commit ended */
  struct smtp_intake_msg *waiting; /* rows for the next group, newest first */
  bool committing;                 /* a worker thread is committing a group */
  smtp_intake_queued_cb queued;
  void *queued_arg;
  int64_t dedup_window_ms; /* 0: every submission is queued */
};

struct smtp_intake_msg {
  uv_work_t work; /* work.data points back here */
  struct smtp_intake *intake;
  char queue_id[QUEUE_ID_SIZE];
  struct spool_file *file;
  int write_error; /* first failed write, reported at commit */

  /* Copied at commit time, used on the worker thread. */
  char *sender;
  char **rcpts;
  size_t nrcpts;
  smtp_intake_done_cb done;
  void *done_arg;

  /* Its row, while it waits for a group commit (under intake->lock). */
  struct queue_insert_req row;
  struct smtp_intake_msg *next_waiting;
  bool row_done;
  bool message_id_given; /* the message had none: the agent's is used */

  /* The worker's answer. */
  int code;
  char enhanced[16];
  char text[320];
};

int smtp_intake_new(uv_loop_t *loop, const char *spool_dir, const char *db_path,
                    smtp_intake_queued_cb queued, void *arg,
                    struct smtp_intake **out)
{
  struct smtp_intake *intake = xcalloc(1, sizeof(*intake));
  char err[512];
  int rc;

  rc = spool_prepare(spool_dir);
  if (rc < 0) {
    log_error("- smtp spool_unusable dir=%s error=\"%s\"", spool_dir,
              strerror(-rc));
    free(intake);
    return rc;
  }
  rc = store_open(db_path, &intake->store, err, sizeof(err));
  if (rc < 0) {
    log_error("- store open_failed error=\"%s\"", err);
    free(intake);
    return rc;
  }
  intake->loop = loop;
  intake->spool_dir = xstrdup(spool_dir);
  intake->queued = queued;
  intake->queued_arg = arg;
  pthread_mutex_init(&intake->lock, NULL);
  pthread_cond_init(&intake->committed, NULL);
  *out = intake;
  return 0;
}

void smtp_intake_set_dedup_window(struct smtp_intake *intake, unsigned seconds)
{
  intake->dedup_window_ms = (int64_t) seconds * 1000;
}

void smtp_intake_free(struct smtp_intake *intake)
{
  if (intake == NULL)
    return;
  store_close(intake->store);
  pthread_cond_destroy(&intake->committed);
  pthread_mutex_destroy(&intake->lock);
  free(intake->spool_dir);
  free(intake);
}

int smtp_intake_begin(struct smtp_intake *intake, struct smtp_intake_msg **out)
{
  struct smtp_intake_msg *msg = xcalloc(1, sizeof(*msg));
  int rc;

  msg->intake = intake;
  queue_id_generate(msg->queue_id);
  rc = spool_create(intake->spool_dir, msg->queue_id, &msg->file);
  if (rc < 0) {
    log_error("%s smtp spool_create_failed error=\"%s\"", msg->queue_id,
              strerror(-rc));
    free(msg);
    return rc;
  }
  *out = msg;
  return 0;
}

int smtp_intake_write(struct smtp_intake_msg *msg, const char *buf, size_t len)
{
  int rc;

  if (msg->write_error != 0)
    return msg->write_error;
  rc = spool_write(msg->file, buf, len);
  if (rc < 0) {
    log_error("%s smtp spool_write_failed error=\"%s\"", msg->queue_id,
              strerror(-rc));
    msg->write_error = rc;
  }
  return rc;
}

const char *smtp_intake_queue_id(const struct smtp_intake_msg *msg)
{
  return msg->queue_id;
}

static void smtp_intake_msg_free(struct smtp_intake_msg *msg)
{
  for (size_t i = 0; i < msg->nrcpts; i++)
    free(msg->rcpts[i]);
  free(msg->rcpts);
  free(msg->sender);
  free(msg);
}

void smtp_intake_abort(struct smtp_intake_msg *msg)
{
  if (msg == NULL)
    return;
  spool_abort(msg->file);
  smtp_intake_msg_free(msg);
}

static void smtp_intake_answer(struct smtp_intake_msg *msg, int code,
                               const char *enhanced, const char *text)
{
  msg->code = code;
  snprintf(msg->enhanced, sizeof(msg->enhanced), "%s", enhanced);
  snprintf(msg->text, sizeof(msg->text), "%s", text);
}

/* Maps a translation failure to the SMTP reply that explains it. */
static void smtp_intake_refuse(struct smtp_intake_msg *msg, int rc,
                               const char *why)
{
  switch (rc) {
    case MIME_GRAPH_ETOOBIG:
      smtp_intake_answer(msg, 552, "5.3.4", why);
      break;
    case MIME_GRAPH_ECHARSET:
      smtp_intake_answer(msg, 554, "5.6.3", why);
      break;
    case MIME_GRAPH_ERECIPIENT:
      smtp_intake_answer(msg, 553, "5.1.3", why);
      break;
    default:
      smtp_intake_answer(msg, 554, "5.6.0", why);
      break;
  }
}

/* Translates the durable file once, in the form delivery will use, to
 * prove Graph will take it; returns 0 with the Message-ID (or NULL) in
 * *message_id. A large message is read piece by piece here too: only its
 * structure is parsed, nothing is decoded. */
static int smtp_intake_validate(struct smtp_intake_msg *msg, char **message_id)
{
  const char *at = strrchr(msg->sender, '@');
  /* A message without a Message-ID gets one, as a submission server may
   * add it (RFC 6409 section 8.3): without it a send whose outcome was
   * lost could not be looked up in Sent Items, only sent again. */
  char *given = xasprintf("%s@%s", msg->queue_id, at ? at + 1 : "nextal");
  struct mime_graph_envelope env = {
    .sender = msg->sender,
    .rcpts = (const char *const *) msg->rcpts,
    .nrcpts = msg->nrcpts,
    .message_id = given,
  };
  struct mime_graph_result res;
  int rc;

  rc = mime_to_graph_file(msg->file->path, &env, &res);
  free(given);
  if (rc == MIME_GRAPH_EIO) {
    /* The file we just made durable cannot be read. */
    smtp_intake_answer(msg, 451, "4.3.0", "Cannot read the spooled message");
    return rc;
  }
  if (rc != MIME_GRAPH_OK) {
    smtp_intake_refuse(msg, rc, res.error);
    mime_graph_result_free(&res);
    return -EINVAL;
  }
  *message_id = res.message_id ? xstrdup(res.message_id) : NULL;
  msg->message_id_given = res.message_id_added;
  mime_graph_result_free(&res);
  return 0;
}

/* Commits every row waiting, in one transaction, then wakes their
 * threads. Called and returns with intake->lock held; drops it meanwhile. */
static void smtp_intake_commit_group(struct smtp_intake *intake)
{
  struct queue_insert_req **rows;
  struct smtp_intake_msg *group = intake->waiting;
  size_t n = 0;
  size_t i;

  for (struct smtp_intake_msg *m = group; m != NULL; m = m->next_waiting)
    n++;
  rows = xcalloc(n, sizeof(*rows));
  /* Oldest first, so that rows are numbered in the order data ended. */
  i = n;
  for (struct smtp_intake_msg *m = group; m != NULL; m = m->next_waiting)
    rows[--i] = &m->row;
  intake->waiting = NULL;
  intake->committing = true;
  pthread_mutex_unlock(&intake->lock);

  queue_insert_batch(intake->store, rows, n, intake->dedup_window_ms);
  free(rows);

  pthread_mutex_lock(&intake->lock);
  for (struct smtp_intake_msg *m = group; m != NULL; m = m->next_waiting)
    m->row_done = true;
  intake->committing = false;
  pthread_cond_broadcast(&intake->committed);
}

/* Records the message, unless it is a resubmission of one recorded
 * within the window (same Message-ID and envelope): then its queue id is
 * copied to original and 1 returned. 0 when queued, or -EIO. Returns once
 * the row is durable, committed with the others waiting at that time. */
static int smtp_intake_insert(struct smtp_intake_msg *msg,
                              const char *message_id,
                              char original[QUEUE_ID_SIZE])
{
  struct smtp_intake *intake = msg->intake;
  char digest[QUEUE_DIGEST_SIZE];
  int have_digest;

  /* A Message-ID the agent made recognises no resubmission. */
  have_digest = !msg->message_id_given
                && queue_envelope_digest(message_id, msg->sender,
                                         (const char *const *) msg->rcpts,
                                         msg->nrcpts, digest)
                       == 0;
  msg->row = (struct queue_insert_req){
    .queue_id = msg->queue_id,
    .sender = msg->sender,
    .rcpts = (const char *const *) msg->rcpts,
    .nrcpts = msg->nrcpts,
    .message_id = message_id,
    .size = msg->file->size,
    .spool_path = msg->file->path,
    .digest = have_digest ? digest : NULL,
  };

  pthread_mutex_lock(&intake->lock);
  msg->row_done = false;
  msg->next_waiting = intake->waiting;
  intake->waiting = msg;
  while (!msg->row_done) {
    if (!intake->committing)
      smtp_intake_commit_group(intake);
    else
      pthread_cond_wait(&intake->committed, &intake->lock);
  }
  pthread_mutex_unlock(&intake->lock);

  if (msg->row.rc == 1)
    memcpy(original, msg->row.original, QUEUE_ID_SIZE);
  return msg->row.rc;
}

/* Worker thread: durable file, validation, durable row. */
static void smtp_intake_work(uv_work_t *work)
{
  struct smtp_intake_msg *msg = work->data;
  char original[QUEUE_ID_SIZE];
  char *message_id = NULL;
  int rc;

  if (msg->write_error != 0) {
    smtp_intake_answer(msg, 451, "4.3.0",
                       "Local error while storing the message; try again");
    return;
  }
  rc = spool_commit(msg->file);
  if (rc < 0) {
    /* Nothing half-made stays behind: the file under either name. */
    spool_remove(msg->file->tmp_path);
    spool_remove(msg->file->path);
    if (rc == -ENOSPC || rc == -EDQUOT)
      smtp_intake_answer(msg, 452, "4.3.1", "Insufficient system storage");
    else
      smtp_intake_answer(msg, 451, "4.3.0",
                         "Cannot make the message durable; try again");
    return;
  }
  if (smtp_intake_validate(msg, &message_id) < 0) {
    spool_remove(msg->file->path);
    return;
  }
  rc = smtp_intake_insert(msg, message_id, original);
  free(message_id);
  if (rc < 0) {
    spool_remove(msg->file->path);
    smtp_intake_answer(msg, 451, "4.3.0",
                       "Cannot record the message in the queue; try again");
    return;
  }
  if (rc == 1) {
    /* The client did not see our first 250 and sent the message again:
     * answer as we did then, and keep one copy. */
    spool_remove(msg->file->path);
    log_info("%s smtp resubmission original=%s", msg->queue_id, original);
    smtp_intake_answer(msg, 250, "2.0.0", original);
    return;
  }
  smtp_intake_answer(msg, 250, "2.0.0", msg->queue_id);
}

static void smtp_intake_after_work(uv_work_t *work, int status)
{
  struct smtp_intake_msg *msg = work->data;
  struct smtp_intake *intake = msg->intake;

  if (status == UV_ECANCELED) {
    spool_remove(msg->file->tmp_path);
    smtp_intake_answer(msg, 421, "4.3.2", "Service shutting down");
  }
  msg->done(msg->done_arg, msg->code, msg->enhanced, msg->text);
  if (msg->code == 250 && intake->queued != NULL)
    intake->queued(intake->queued_arg);
  spool_file_free(msg->file);
  smtp_intake_msg_free(msg);
}

void smtp_intake_commit(struct smtp_intake_msg *msg, const char *sender,
                        const struct smtp_envelope *env,
                        smtp_intake_done_cb done, void *arg)
{
  msg->sender = xstrdup(sender);
  msg->rcpts = xcalloc(env->nrcpts + 1, sizeof(char *));
  for (size_t i = 0; i < env->nrcpts; i++)
    msg->rcpts[i] = xstrdup(env->rcpts[i]);
  msg->nrcpts = env->nrcpts;
  msg->done = done;
  msg->done_arg = arg;
  msg->work.data = msg;
  uv_queue_work(msg->intake->loop, &msg->work, smtp_intake_work,
                smtp_intake_after_work);
}
