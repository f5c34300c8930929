/* SPDX-License-Identifier: MIT */
/* The delivery loop for queued mail (see include/delivery.h). */
#include "delivery.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "links.h"
#include "log.h"
#include "mail_upload.h"
#include "mime_to_graph.h"
#include "queue.h"
#include "send_pacer.h"
#include "spool.h"
#include "xalloc.h"

#define DELIVERY_MAX_JOBS 64          /* sends in progress, all mailboxes */
#define DELIVERY_SCAN_BATCH 512       /* due rows looked at per scan */
#define DELIVERY_IDLE_SCAN_MS 1000    /* rescan even when nothing is due */
#define DELIVERY_HELD_RECHECK_MS 5000 /* held mail: links change outside */
#define DELIVERY_BACKOFF_BASE_MS 1000
#define DELIVERY_BACKOFF_MAX_MS (5 * 60 * 1000)
#define DELIVERY_CLEANUP_MS (60 * 1000) /* expired records removed */
#define DELIVERY_PURGE_BATCH 1000       /* records removed per loop turn */
#define DELIVERY_DAY_MS ((int64_t) 24 * 3600 * 1000)
#define DELIVERY_VERIFY_TOP 50 /* Sent Items copies read per look-up */
#define DELIVERY_UNLINKED_TEXT "The user was unlinked by an administrator"

struct delivery_job {
  uv_work_t work; /* translation on the thread pool */
  struct delivery *d;
  struct delivery_job *next;
  int64_t rowid;
  char queue_id[QUEUE_ID_SIZE];
  char *sender;
  char **rcpts;
  size_t nrcpts;
  char *spool_path;
  int attempts; /* before this one */
  int64_t created_at;
  int verify;       /* recovery: look the message up in Sent Items first */
  int64_t paced_at; /* when the pacer counted this send, 0 if not */
  char *message_id;
  /* Set by the worker. */
  char *body; /* sendMail body: JSON, or base64 MIME (content_type) */
  const char *content_type;
  int translate_rc;
  int local_error; /* the failure was ours (disk), not the message's */
  char translate_error[256];
  enum mime_graph_form form;
  char *draft_json; /* large form: the draft, and its decoded files */
  struct mail_upload_file *files;
  size_t nfiles;
};

struct delivery {
  uv_loop_t *loop;
  struct store *store;
  struct graph_client *graph;
  struct policy_gate *gate;
  uv_timer_t timer;
  struct delivery_job *jobs; /* in progress */
  unsigned njobs;
  unsigned per_mailbox; /* jobs a mailbox may have at once */
  unsigned max_attempts;
  int64_t max_age_ms;
  int64_t recovery_delay_ms;
  int64_t held_checked_at;  /* last look at held mail, ms */
  struct send_pacer *pacer; /* Exchange's per-mailbox sending rates */
  int64_t keep_sent_ms;
  int64_t keep_failed_ms;
  int64_t cleaned_at; /* last removal of expired records, ms */
  int stopping;
  unsigned grace_ms;
  void (*stopped_cb)(void *arg);
  void *stopped_arg;
};

static void delivery_schedule(struct delivery *d, int64_t delay_ms);
static void delivery_release_allowed(struct delivery *d);
static void delivery_maybe_stopped(struct delivery *d);

/* ---- jobs ------------------------------------------------------------ */

static unsigned delivery_jobs_for(const struct delivery *d, const char *sender)
{
  unsigned n = 0;

  for (const struct delivery_job *j = d->jobs; j != NULL; j = j->next)
    n += strcmp(j->sender, sender) == 0;
  return n;
}

static int delivery_job_running(const struct delivery *d, int64_t rowid)
{
  for (const struct delivery_job *j = d->jobs; j != NULL; j = j->next) {
    if (j->rowid == rowid)
      return 1;
  }
  return 0;
}

static struct delivery_job *delivery_job_new(struct delivery *d,
                                             const struct queue_entry *e)
{
  struct delivery_job *job = xcalloc(1, sizeof(*job));

  job->d = d;
  job->rowid = e->rowid;
  memcpy(job->queue_id, e->queue_id, sizeof(job->queue_id));
  job->sender = xstrdup(e->sender);
  job->rcpts = xcalloc(e->nrcpts + 1, sizeof(char *));
  for (size_t i = 0; i < e->nrcpts; i++)
    job->rcpts[i] = xstrdup(e->rcpts[i]);
  job->nrcpts = e->nrcpts;
  job->spool_path = xstrdup(e->spool_path);
  job->message_id = e->message_id ? xstrdup(e->message_id) : NULL;
  job->attempts = e->attempts;
  /* The age limit runs from acceptance, or from an operator's retry. */
  job->created_at
      = e->retried_at > e->created_at ? e->retried_at : e->created_at;
  job->work.data = job;
  job->next = d->jobs;
  d->jobs = job;
  d->njobs++;
  return job;
}

static void delivery_job_finish(struct delivery_job *job)
{
  struct delivery *d = job->d;
  struct delivery_job **pp = &d->jobs;

  while (*pp != job)
    pp = &(*pp)->next;
  *pp = job->next;
  d->njobs--;
  for (size_t i = 0; i < job->nrcpts; i++)
    free(job->rcpts[i]);
  free(job->rcpts);
  free(job->sender);
  free(job->spool_path);
  free(job->message_id);
  free(job->body);
  free(job->draft_json);
  mail_upload_files_free(job->files, job->nfiles);
  free(job);
  if (d->stopping)
    delivery_maybe_stopped(d);
  else
    delivery_schedule(d, 0);
}

/* ---- pacing and expiry ------------------------------------------------ */

/* Exchange counts what a mailbox sends per minute and recipients per day
 * (graph-api.md 4.4). A send that would go over waits, not fails: its row
 * is deferred to when it fits, so that it also stops taking the scan's
 * attention from other mailboxes' rows. Returns 1 when the row waits. */
static int delivery_pace(struct delivery *d, const struct queue_entry *e)
{
  int64_t now = store_now_ms();
  int64_t wait = send_pacer_wait(d->pacer, e->sender, e->nrcpts, now);

  if (wait <= 0)
    return 0;
  queue_defer(d->store, e->rowid, now + wait);
  log_debug("%s queue paced sender=%s rcpts=%zu wait_ms=%lld", e->queue_id,
            e->sender, e->nrcpts, (long long) wait);
  return 1;
}

static void delivery_pace_start(struct delivery_job *job)
{
  job->paced_at = store_now_ms();
  send_pacer_start(job->d->pacer, job->sender, job->nrcpts, job->paced_at);
}

/* Graph refused the send without taking it (429, 503): the retry must not
 * wait for a slot the refusal used. */
static void delivery_pace_refund(struct delivery_job *job)
{
  if (job->paced_at == 0)
    return;
  send_pacer_refund(job->d->pacer, job->sender, job->nrcpts, job->paced_at);
  job->paced_at = 0;
}

static void delivery_pace_seed_one(void *arg, const char *sender,
                                   int64_t sent_at, size_t nrcpts)
{
  send_pacer_start(arg, sender, nrcpts, sent_at);
}

/* The windows live in memory: after a restart they are rebuilt from the
 * last day's sent mail, so a restart does not reset Exchange's count. */
static void delivery_pace_seed(struct delivery *d)
{
  int n = queue_each_sent_since(d->store, store_now_ms() - DELIVERY_DAY_MS,
                                delivery_pace_seed_one, d->pacer);

  if (n < 0)
    log_error("- queue pace_seed_failed");
  else if (n > 0)
    log_debug("- queue pace_seeded sent_last_day=%d", n);
}

/* Rows left in 'sending' by no running send: their outcome could not be
 * written (the database was locked or failing as the send ended), and
 * without this they would wait for the next start. They are looked up in
 * Sent Items, as after a crash. */
static void delivery_recover_orphans(struct delivery *d, int64_t now)
{
  json_t *running = json_array();
  char *text;
  int n;

  for (const struct delivery_job *j = d->jobs; j != NULL; j = j->next)
    json_array_append_new(running, json_integer(j->rowid));
  text = json_dumps(running, JSON_COMPACT);
  if (text == NULL)
    abort(); /* jansson fails only when out of memory */
  n = queue_recover_orphans(d->store, now - DELIVERY_CLEANUP_MS, text,
                            d->recovery_delay_ms);
  if (n > 0)
    log_warn("- queue recovering orphaned=%d verify_after_ms=%lld", n,
             (long long) d->recovery_delay_ms);
  free(text);
  json_decref(running);
}

/* Removes records past their keep time (and any body they still have),
 * and recovers orphaned sends, at most once every DELIVERY_CLEANUP_MS. */
static void delivery_cleanup(struct delivery *d, int64_t now)
{
  int n;

  if (d->cleaned_at != 0 && now - d->cleaned_at < DELIVERY_CLEANUP_MS)
    return;
  d->cleaned_at = now;
  delivery_recover_orphans(d, now);
  n = queue_purge(d->store, now - d->keep_sent_ms, now - d->keep_failed_ms,
                  DELIVERY_PURGE_BATCH);
  if (n > 0)
    log_info("- queue expired records=%d", n);
  else if (n < 0)
    log_error("- queue expire_failed");
  /* A full batch leaves more: the next scan goes on, the loop between. */
  if (n == DELIVERY_PURGE_BATCH)
    d->cleaned_at = 0;
}

/* ---- outcomes ------------------------------------------------------- */

/* Whether sender has no link row at all. Mail is accepted only from a
 * linked sender and only nextal-policy unlink removes the row (a grant
 * that is gone or a switch-off leaves it, as needs_relink), so accepted
 * mail meeting this was unlinked while it waited or was in flight. A
 * row that cannot be read is not taken for unlinked. */
static int delivery_sender_unlinked(struct delivery *d, const char *sender)
{
  enum policy_link_state state = POLICY_LINK_OK;
  char norm[POLICY_ADDRESS_MAX];

  if (policy_address_normalize(sender, norm, sizeof(norm)) < 0)
    return 0;
  if (links_get(d->store, norm, &state, NULL, 0) < 0)
    return 0;
  return state == POLICY_LINK_NONE;
}

/* The policy refuses a row's sender: its mail waits, held, unless the
 * sender was unlinked, which fails it as unlink does (keeping what
 * queue_retry needs to look its last send up first). Returns the code. */
static const char *delivery_refuse_row(struct delivery *d, int64_t rowid,
                                       const char *sender,
                                       const struct policy_decision *dec)
{
  if (dec->reason == POLICY_DENY_USER_NOT_LINKED
      && delivery_sender_unlinked(d, sender)) {
    queue_mark_failed(d->store, rowid, "user_unlinked", DELIVERY_UNLINKED_TEXT);
    return "user_unlinked";
  }
  queue_mark_held(d->store, rowid, dec->code, dec->sentence);
  return dec->code;
}

static int64_t delivery_backoff_ms(int attempts)
{
  int64_t ms = DELIVERY_BACKOFF_BASE_MS;

  for (int i = 1; i < attempts && ms < DELIVERY_BACKOFF_MAX_MS; i++)
    ms *= 2;
  if (ms > DELIVERY_BACKOFF_MAX_MS)
    ms = DELIVERY_BACKOFF_MAX_MS;
  /* Up to a quarter of jitter keeps retries of many messages apart. */
  return ms + (int64_t) (rand() % (int) (ms / 4 + 1));
}

static void delivery_sent(struct delivery_job *job)
{
  struct delivery *d = job->d;

  if (queue_mark_sent(d->store, job->rowid) == -EIO) {
    /* Sent, but not recorded: the row stays 'sending', is recovered by
     * delivery_recover_orphans and found in Sent Items; its body stays
     * until then. */
    log_error("%s queue record_failed state=sent sender=%s", job->queue_id,
              job->sender);
    return;
  }
  spool_remove(job->spool_path);
  log_info("%s queue sent sender=%s rcpts=%zu attempts=%d", job->queue_id,
           job->sender, job->nrcpts, job->attempts + 1);
}

static void delivery_failed(struct delivery_job *job, const char *code,
                            const char *text)
{
  if (queue_mark_failed(job->d->store, job->rowid, code, text) == -EIO)
    log_error("%s queue record_failed state=failed sender=%s", job->queue_id,
              job->sender);
  log_warn("%s queue failed sender=%s code=%s reason=\"%s\"", job->queue_id,
           job->sender, code, text);
}

/* Graph refused the message itself: sending the same bytes again cannot
 * succeed, so its body goes now; the record stays for keep_failed. Mail
 * that failed for other reasons (gave up, user unlinked) keeps its body
 * until then, for nextal-policy retry. */
static void delivery_refused(struct delivery_job *job, const char *code,
                             const char *text)
{
  delivery_failed(job, code, text);
  spool_remove(job->spool_path);
}

/* A transient failure: retry after Retry-After or the backoff, whichever
 * is later, unless the message has run out of attempts or time. */
static void delivery_retry(struct delivery_job *job, long status,
                           double retry_after, const char *code,
                           const char *text)
{
  struct delivery *d = job->d;
  int64_t now = store_now_ms();
  int64_t wait = delivery_backoff_ms(job->attempts + 1);
  int told = retry_after >= 0;
  int throttled = told && status == 429;

  delivery_pace_refund(job);
  /* When Graph says how long to wait, that is the wait (graph-api.md 4.2,
   * 4.3); our own backoff is for answers that do not say. Throttling
   * (429) is Graph pacing us, not a failure, so it does not use up
   * attempts: only max_age ends it. */
  if (told)
    wait = (int64_t) (retry_after * 1000.0 + 0.5);
  if ((!throttled && (unsigned) job->attempts + 1 >= d->max_attempts)
      || now + wait - job->created_at > d->max_age_ms) {
    char *why
        = xasprintf("gave up after %d attempts: %s", job->attempts + 1, text);

    delivery_failed(job, code, why);
    free(why);
    return;
  }
  if (queue_mark_retry(d->store, job->rowid, now + wait, code, text) == -EIO)
    log_error("%s queue record_failed state=queued sender=%s", job->queue_id,
              job->sender);
  log_info("%s queue retry sender=%s code=%s wait_ms=%lld attempts=%d",
           job->queue_id, job->sender, code, (long long) wait,
           job->attempts + 1);
}

static void delivery_hold(struct delivery_job *job, const char *code,
                          const char *text)
{
  queue_mark_held(job->d->store, job->rowid, code, text);
  log_warn("%s queue held sender=%s code=%s reason=\"%s\"", job->queue_id,
           job->sender, code, text);
}

static int delivery_is_transient(long status)
{
  return status == 0 || status == 408 || status == 429 || status >= 500;
}

/* Graph refused access (401, 403 ErrorAccessDenied): admin consent
 * revoked, a permission removed, an application access policy. That is
 * the tenant's state, not the message's fault, and an administrator can
 * mend it: the message is retried with the backoff, and should it run out
 * of attempts its body is kept for nextal-policy retry. */
static int delivery_is_access_refused(long status)
{
  return status == 401 || status == 403;
}

/* A lost reply or a gateway timeout after the body went out: Graph may
 * have taken the message. A refused connection is not ambiguous, but curl
 * does not tell the two apart cheaply, so both are verified. */
static int delivery_is_ambiguous(const struct graph_response *resp)
{
  return (resp->status == 0 && strcmp(resp->error_code, "network") == 0)
         || resp->status == 504;
}

static void delivery_on_sent(void *arg, const struct graph_response *resp)
{
  struct delivery_job *job = arg;

  if (resp->status == 202) {
    delivery_sent(job);
  } else if (resp->status == 0 && job->d->stopping) {
    /* Cut off by shutdown: Graph may or may not have taken it. The row
     * stays "sending" so that the next start looks it up first. */
    log_info("%s queue interrupted sender=%s", job->queue_id, job->sender);
  } else if (resp->status == 0 && resp->token_permanent
             && delivery_sender_unlinked(job->d, job->sender)) {
    /* Unlink wiped the token under this request, which sent nothing. */
    delivery_failed(job, "user_unlinked", DELIVERY_UNLINKED_TEXT);
  } else if (resp->status == 0 && resp->token_permanent) {
    /* The grant is gone: the user must link again; keep the mail. */
    links_mark_relink(job->d->store, job->sender, resp->error_message);
    delivery_hold(job, "link_expired", resp->error_message);
  } else if (delivery_is_ambiguous(resp)) {
    /* The request may have reached Graph: look before sending again. */
    queue_mark_verify(job->d->store, job->rowid,
                      store_now_ms() + job->d->recovery_delay_ms,
                      resp->error_code, resp->error_message);
    log_warn("%s queue outcome_unknown sender=%s code=%s", job->queue_id,
             job->sender, resp->error_code);
  } else if (delivery_is_transient(resp->status)
             || delivery_is_access_refused(resp->status)) {
    delivery_retry(job, resp->status, resp->retry_after, resp->error_code,
                   resp->error_message);
  } else {
    char *why = xasprintf("Graph answered %ld: %s", resp->status,
                          resp->error_message);

    delivery_refused(job, resp->error_code, why);
    free(why);
  }
  delivery_job_finish(job);
}

/* ---- translation and sending ------------------------------------------ */

/* Worker thread, after the form is chosen: the request body for the
 * sendMail forms, or the draft and the decoded attachment files for the
 * large form (docs/mail-forms.md). */
static int delivery_translate_form(struct delivery_job *job,
                                   const struct mime_graph_result *res)
{
  size_t len;
  int rc = 0;

  job->form = res->form;
  switch (res->form) {
    case MIME_GRAPH_FORM_JSON:
      job->body = json_dumps(res->request, JSON_COMPACT);
      job->content_type = "application/json";
      break;
    case MIME_GRAPH_FORM_MIME:
      rc = mime_graph_mime_body(job->spool_path, res, &job->body, &len);
      job->content_type = "text/plain";
      if (rc < 0)
        snprintf(job->translate_error, sizeof(job->translate_error),
                 "spooled message unreadable: %s", strerror(-rc));
      break;
    case MIME_GRAPH_FORM_LARGE:
      job->draft_json = json_dumps(res->request, JSON_COMPACT);
      rc = mail_upload_prepare(job->spool_path, job->queue_id, res, &job->files,
                               &job->nfiles, job->translate_error,
                               sizeof(job->translate_error));
      break;
  }
  job->local_error = rc < 0;
  return rc;
}

/* Worker thread: the spooled message becomes what Graph is sent. */
static void delivery_translate(uv_work_t *work)
{
  struct delivery_job *job = work->data;
  struct mime_graph_envelope env = {
    .sender = job->sender,
    .rcpts = (const char *const *) job->rcpts,
    .nrcpts = job->nrcpts,
    .message_id = job->message_id, /* what intake gave a message with none */
  };
  struct mime_graph_result res;

  job->translate_rc = mime_to_graph_file(job->spool_path, &env, &res);
  if (job->translate_rc == MIME_GRAPH_OK) {
    job->translate_rc = delivery_translate_form(job, &res);
  } else if (job->translate_rc == MIME_GRAPH_EIO) {
    job->local_error = 1; /* the file, not the message */
    snprintf(job->translate_error, sizeof(job->translate_error), "%s",
             res.error);
  } else {
    snprintf(job->translate_error, sizeof(job->translate_error), "%s",
             res.error);
  }
  mime_graph_result_free(&res);
}

/* The end of a large message's upload. A step before the send that lost
 * its answer is not ambiguous (nothing was sent; the draft resumes), so
 * it is retried rather than looked up in Sent Items. */
static void delivery_on_uploaded(void *arg, const struct graph_response *resp,
                                 bool at_send)
{
  struct delivery_job *job = arg;
  struct graph_response copy = *resp;

  /* Stopped between two steps: the switch went off (the mail is held by
   * delivery_upload_may_continue) or the agent is stopping (nothing of
   * the next step was sent: queued again, not looked up). Either way the
   * remembered draft is resumed later. */
  if (strcmp(resp->error_code, MAIL_UPLOAD_STOPPED) == 0) {
    if (job->d->stopping)
      queue_mark_retry(job->d->store, job->rowid, store_now_ms(), NULL, NULL);
    delivery_job_finish(job);
    return;
  }
  if (!at_send && copy.status == 0 && strcmp(copy.error_code, "network") == 0)
    snprintf(copy.error_code, sizeof(copy.error_code), "upload_network");
  if (!at_send && copy.status == 504)
    copy.status = 503;
  delivery_on_sent(arg, &copy);
}

static int delivery_recheck(struct delivery_job *job)
{
  struct policy_decision dec;
  const char *code;

  policy_gate_check(job->d->gate, POLICY_REQUEST_DELIVERY, job->sender, &dec);
  if (dec.reason == POLICY_ALLOW)
    return 0;
  code = delivery_refuse_row(job->d, job->rowid, job->sender, &dec);
  log_warn("%s queue %s sender=%s code=%s", job->queue_id,
           strcmp(code, dec.code) == 0 ? "held" : "failed", job->sender, code);
  return -EPERM;
}

/* Between two steps of a large upload: a stopping agent starts no new
 * step, and the policy is asked again, as before any send (a refusal
 * holds the mail). */
static bool delivery_upload_may_continue(void *arg)
{
  struct delivery_job *job = arg;

  if (job->d->stopping)
    return false;
  return delivery_recheck(job) == 0;
}

static void delivery_after_translate(uv_work_t *work, int status)
{
  struct delivery_job *job = work->data;
  struct delivery *d = job->d;
  struct graph_request req = { 0 };
  char *path;

  if (status == UV_ECANCELED || d->stopping) {
    queue_mark_retry(d->store, job->rowid, store_now_ms(), NULL, NULL);
    delivery_job_finish(job);
    return;
  }
  if (job->local_error) {
    delivery_retry(job, 0, -1, "local_file", job->translate_error);
    delivery_job_finish(job);
    return;
  }
  if (job->translate_rc != 0
      || (job->body == NULL && job->form != MIME_GRAPH_FORM_LARGE)) {
    delivery_failed(job, "translation", job->translate_error);
    delivery_job_finish(job);
    return;
  }
  /* The switch may have been turned off while the worker ran: no Graph
   * request may leave after that. */
  if (delivery_recheck(job) < 0) {
    delivery_job_finish(job);
    return;
  }
  log_debug("%s queue form=%s sender=%s", job->queue_id,
            job->form == MIME_GRAPH_FORM_LARGE  ? "large"
            : job->form == MIME_GRAPH_FORM_MIME ? "mime"
                                                : "json",
            job->sender);
  if (job->form == MIME_GRAPH_FORM_LARGE) {
    struct mail_upload_spec spec = {
      .graph = d->graph,
      .store = d->store,
      .rowid = job->rowid,
      .queue_id = job->queue_id,
      .mailbox = job->sender,
      .draft_json = job->draft_json,
      .files = job->files,
      .nfiles = job->nfiles,
      .may_continue = delivery_upload_may_continue,
    };

    mail_upload_start(&spec, delivery_on_uploaded, job);
    return;
  }
  path = xasprintf("/v1.0/users/%s/sendMail", job->sender);
  req.mailbox = job->sender;
  req.method = "POST";
  req.path = path;
  req.content_type = job->content_type;
  req.body = job->body;
  req.body_len = strlen(job->body);
  graph_client_send(d->graph, &req, delivery_on_sent, job);
  free(path);
}

static void delivery_start_send(struct delivery_job *job)
{
  /* An operator may have dropped the row since the scan read it. */
  if (queue_mark_sending(job->d->store, job->rowid) < 0) {
    delivery_job_finish(job);
    return;
  }
  uv_queue_work(job->d->loop, &job->work, delivery_translate,
                delivery_after_translate);
}

/* ---- recovery: was a message caught mid-send already sent? ------------ */

static const char *const delivery_rcpt_fields[]
    = { "toRecipients", "ccRecipients", "bccRecipients" };

static const char *delivery_rcpt_address(json_t *recipient)
{
  json_t *email = json_object_get(recipient, "emailAddress");

  return json_string_value(json_object_get(email, "address"));
}

static int delivery_copy_lists(json_t *msg, const char *addr)
{
  for (size_t f = 0; f < 3; f++) {
    json_t *list = json_object_get(msg, delivery_rcpt_fields[f]);

    for (size_t i = 0; i < json_array_size(list); i++) {
      const char *a = delivery_rcpt_address(json_array_get(list, i));

      if (a != NULL && strcasecmp(a, addr) == 0)
        return 1;
    }
  }
  return 0;
}

static int delivery_job_lists(const struct delivery_job *job, const char *addr)
{
  for (size_t i = 0; i < job->nrcpts; i++) {
    if (strcasecmp(job->rcpts[i], addr) == 0)
      return 1;
  }
  return 0;
}

/* Whether a Sent Items message is this row's send: the same Message-ID
 * may go to other envelopes (a different transaction), so its To, Cc and
 * Bcc addresses must be the envelope's, as a set, case aside. */
static int delivery_copy_is_ours(const struct delivery_job *job, json_t *msg)
{
  for (size_t i = 0; i < job->nrcpts; i++) {
    if (!delivery_copy_lists(msg, job->rcpts[i]))
      return 0;
  }
  for (size_t f = 0; f < 3; f++) {
    json_t *list = json_object_get(msg, delivery_rcpt_fields[f]);

    for (size_t i = 0; i < json_array_size(list); i++) {
      const char *a = delivery_rcpt_address(json_array_get(list, i));

      if (a == NULL || !delivery_job_lists(job, a))
        return 0;
    }
  }
  return 1;
}

static int delivery_copies_include_ours(const struct delivery_job *job,
                                        json_t *value)
{
  for (size_t i = 0; i < json_array_size(value); i++) {
    if (delivery_copy_is_ours(job, json_array_get(value, i)))
      return 1;
  }
  return 0;
}

/* Graph refused the look-up itself (a 4xx other than throttling, a
 * timeout or an expired token): asking again cannot tell whether the
 * message went, and sending could make a second copy. The operator
 * decides (docs/mail-durability.md). */
static int delivery_verify_refused(long status)
{
  return status >= 400 && status < 500 && status != 401 && status != 408
         && status != 429;
}

static void delivery_verify_failed(struct delivery_job *job,
                                   const struct graph_response *resp)
{
  char *why = xasprintf("The Sent Items look-up %s (Graph answered "
                        "%ld %s: %s), so whether it was sent is unknown; "
                        "check the mailbox's Sent Items, then retry (sends "
                        "it) or drop it",
                        delivery_verify_refused(resp->status)
                            ? "was refused"
                            : "kept failing past max_age",
                        resp->status, resp->error_code, resp->error_message);

  delivery_failed(job, "verify_failed", why);
  free(why);
}

static void delivery_on_verified(void *arg, const struct graph_response *resp)
{
  struct delivery_job *job = arg;
  struct delivery *d = job->d;
  json_t *root = NULL;
  json_t *value;

  if (resp->status == 200)
    root = json_loadb(resp->body, resp->body_len, 0, NULL);
  value = json_object_get(root, "value");
  if (json_is_array(value) && delivery_copies_include_ours(job, value)) {
    log_info("%s queue found_in_sent_items sender=%s", job->queue_id,
             job->sender);
    /* Sent before the restart but after the windows were rebuilt. */
    send_pacer_start(d->pacer, job->sender, job->nrcpts, store_now_ms());
    delivery_sent(job);
  } else if (json_is_array(value)) {
    /* Not in Sent Items: send it. Graph offers no idempotency key for
     * sendMail, so a send still in transport when we looked would go
     * twice; the recovery delay makes that unlikely, not impossible. */
    queue_mark_retry(d->store, job->rowid, store_now_ms(), NULL, NULL);
  } else if (delivery_verify_refused(resp->status)
             || store_now_ms() - job->created_at > d->max_age_ms) {
    /* Refused, or failing for longer than mail may wait: an operator
     * decides, since sending blindly could send it twice. */
    delivery_verify_failed(job, resp);
  } else {
    log_info("%s queue verify_retry sender=%s status=%ld code=%s",
             job->queue_id, job->sender, resp->status, resp->error_code);
    queue_mark_verify(d->store, job->rowid,
                      store_now_ms() + delivery_backoff_ms(job->attempts + 1),
                      resp->error_code, resp->error_message);
  }
  json_decref(root);
  delivery_job_finish(job);
}

/* The OData string literal for text: quotes, a quote inside doubled. */
static char *delivery_odata_literal(const char *text)
{
  size_t n = strlen(text);
  char *out = xmalloc(2 * n + 3);
  char *p = out;

  *p++ = '\'';
  for (const char *c = text; *c != '\0'; c++) {
    if (*c == '\'')
      *p++ = '\'';
    *p++ = *c;
  }
  *p++ = '\'';
  *p = '\0';
  return out;
}

static void delivery_verify(struct delivery *d, const struct queue_entry *e)
{
  struct delivery_job *job = delivery_job_new(d, e);
  struct graph_request req = { 0 };
  char *mid = xasprintf("<%s>", e->message_id);
  char *literal = delivery_odata_literal(mid);
  char *filter;
  char *escaped;
  char *path;

  job->verify = 1;
  filter = xasprintf("internetMessageId eq %s", literal);
  escaped = curl_easy_escape(NULL, filter, 0);
  path = xasprintf("/v1.0/users/%s/mailFolders/sentitems/messages"
                   "?$select=id,toRecipients,ccRecipients,bccRecipients"
                   "&$top=%d&$filter=%s",
                   e->sender, DELIVERY_VERIFY_TOP, escaped ? escaped : "");
  curl_free(escaped);
  free(filter);
  free(literal);
  free(mid);
  req.mailbox = e->sender;
  req.method = "GET";
  req.path = path;
  graph_client_send(d->graph, &req, delivery_on_verified, job);
  free(path);
}

/* Rows left in "sending" by a crash are looked up in Sent Items, after
 * a delay that lets requests the dead process had sent complete. */
static void delivery_recover(struct delivery *d)
{
  int n = queue_recover(d->store, d->recovery_delay_ms);

  if (n > 0)
    log_info("- queue recovering interrupted=%d verify_after_ms=%lld", n,
             (long long) d->recovery_delay_ms);
}

/* ---- scanning --------------------------------------------------------- */

static int delivery_visit(void *arg, const struct queue_entry *e)
{
  struct delivery *d = arg;
  struct policy_decision dec;
  struct delivery_job *job;

  if (d->njobs >= DELIVERY_MAX_JOBS)
    return 1;
  if (delivery_job_running(d, e->rowid))
    return 0;
  /* Paced before the in-flight limit is looked at, so that a mailbox over
   * its rate has its whole backlog deferred at once. */
  if (!e->verify_first && delivery_pace(d, e))
    return 0;
  if (delivery_jobs_for(d, e->sender) >= d->per_mailbox)
    return 0;
  /* Asked before the Sent Items look-up too: a refused sender's mailbox
   * gets no request at all. */
  policy_gate_check(d->gate, POLICY_REQUEST_DELIVERY, e->sender, &dec);
  if (dec.reason != POLICY_ALLOW) {
    const char *code = delivery_refuse_row(d, e->rowid, e->sender, &dec);

    log_warn("%s queue %s sender=%s code=%s", e->queue_id,
             strcmp(code, dec.code) == 0 ? "held" : "failed", e->sender, code);
    return 0;
  }
  if (e->verify_first) {
    if (e->message_id != NULL && e->message_id[0] != '\0')
      delivery_verify(d, e);
    else /* nothing to look for: Graph assigned the id */
      queue_mark_retry(d->store, e->rowid, store_now_ms(), NULL, NULL);
    return 0;
  }
  job = delivery_job_new(d, e);
  delivery_pace_start(job);
  delivery_start_send(job);
  return 0;
}

/* The mailboxes that cannot start another send now, as a JSON array for
 * the scan to leave out (NULL if none): their backlog must not fill the
 * batch and keep other mailboxes' rows from being seen. */
static char *delivery_full_mailboxes(struct delivery *d)
{
  json_t *full = json_array();
  char *text = NULL;

  for (const struct delivery_job *j = d->jobs; j != NULL; j = j->next) {
    int listed = 0;

    for (size_t i = 0; i < json_array_size(full); i++)
      listed
          |= strcmp(json_string_value(json_array_get(full, i)), j->sender) == 0;
    if (!listed && delivery_jobs_for(d, j->sender) >= d->per_mailbox)
      json_array_append_new(full, json_string(j->sender));
  }
  if (json_array_size(full) > 0)
    text = json_dumps(full, JSON_COMPACT);
  json_decref(full);
  return text;
}

static void delivery_scan(struct delivery *d)
{
  int64_t now = store_now_ms();
  int64_t next;
  char *skip;

  if (d->stopping)
    return;
  delivery_cleanup(d, now);
  /* A user re-linked with the CLI or over HTTP changes no policy, so held
   * mail is also looked at now and then. */
  if (now - d->held_checked_at >= DELIVERY_HELD_RECHECK_MS) {
    d->held_checked_at = now;
    delivery_release_allowed(d);
  }
  skip = delivery_full_mailboxes(d);
  if (queue_each_due_except(d->store, now, DELIVERY_SCAN_BATCH, skip,
                            delivery_visit, d)
      < 0)
    log_error("- queue scan_failed");
  free(skip);
  /* Rows already due were skipped for a full mailbox or a full job table;
   * a finishing job or new mail scans again, so wait for the next row that
   * becomes due, or the idle rescan. */
  next = queue_next_due(d->store);
  if (next <= now || next - now > DELIVERY_IDLE_SCAN_MS)
    next = now + DELIVERY_IDLE_SCAN_MS;
  delivery_schedule(d, next - now);
}

static void delivery_on_timer(uv_timer_t *timer)
{
  delivery_scan(timer->data);
}

/* Runs a scan after delay_ms, or sooner if one is already due earlier. */
static void delivery_schedule(struct delivery *d, int64_t delay_ms)
{
  uint64_t due = uv_timer_get_due_in(&d->timer);

  if (d->stopping)
    return;
  if (uv_is_active((uv_handle_t *) &d->timer) && due <= (uint64_t) delay_ms)
    return;
  uv_timer_start(&d->timer, delivery_on_timer, (uint64_t) delay_ms, 0);
}

void delivery_kick(struct delivery *d)
{
  delivery_schedule(d, 0);
}

/* Releases the held mail of every sender the policy now allows. */
static void delivery_release_allowed(struct delivery *d)
{
  char **senders = NULL;
  int n = queue_held_senders(d->store, &senders);

  for (int i = 0; i < n; i++) {
    struct policy_decision dec;

    policy_gate_check(d->gate, POLICY_REQUEST_DELIVERY, senders[i], &dec);
    if (dec.reason == POLICY_ALLOW) {
      int released = queue_release_held(d->store, senders[i]);

      log_info("- queue released sender=%s messages=%d", senders[i], released);
    }
    free(senders[i]);
  }
  free(senders);
}

/* Holds at once the queued mail of every sender the policy now refuses,
 * rather than at its next attempt, so that what is held is what the
 * status shows. Rows being sent finish their request and are held (or
 * sent) by its outcome. */
static void delivery_hold_refused(struct delivery *d)
{
  char **senders = NULL;
  int n = queue_queued_senders(d->store, &senders);

  for (int i = 0; i < n; i++) {
    struct policy_decision dec;

    policy_gate_check(d->gate, POLICY_REQUEST_DELIVERY, senders[i], &dec);
    if (dec.reason != POLICY_ALLOW) {
      int held
          = queue_hold_sender(d->store, senders[i], dec.code, dec.sentence);

      if (held > 0)
        log_warn("- queue held sender=%s messages=%d code=%s", senders[i], held,
                 dec.code);
    }
    free(senders[i]);
  }
  free(senders);
}

void delivery_policy_changed(struct delivery *d)
{
  delivery_hold_refused(d);
  delivery_release_allowed(d);
  delivery_kick(d);
}

/* ---- life cycle ------------------------------------------------------- */

int delivery_new(uv_loop_t *loop, struct store *store,
                 struct graph_client *graph, struct policy_gate *gate,
                 const struct config *cfg, struct delivery **out)
{
  struct delivery *d = xcalloc(1, sizeof(*d));

  d->loop = loop;
  d->store = store;
  d->graph = graph;
  d->gate = gate;
  /* Twice Graph's in-flight limit keeps the next request ready without
   * loading a mailbox's whole backlog into memory. */
  d->per_mailbox = cfg->delivery_max_in_flight * 2;
  d->max_attempts = cfg->delivery_max_attempts;
  d->max_age_ms = (int64_t) cfg->delivery_max_age * 1000;
  d->recovery_delay_ms = (int64_t) cfg->delivery_recovery_delay * 1000;
  d->pacer = send_pacer_new(cfg->delivery_max_per_minute,
                            cfg->delivery_max_rcpts_per_day);
  delivery_pace_seed(d);
  d->keep_sent_ms = (int64_t) cfg->delivery_keep_sent * 1000;
  d->keep_failed_ms = (int64_t) cfg->delivery_keep_failed * 1000;
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  delivery_recover(d);
  delivery_schedule(d, 0);
  *out = d;
  return 0;
}

static void delivery_on_timer_closed(uv_handle_t *handle)
{
  struct delivery *d = handle->data;
  void (*cb)(void *) = d->stopped_cb;
  void *arg = d->stopped_arg;

  send_pacer_free(d->pacer);
  free(d);
  if (cb != NULL)
    cb(arg);
}

static void delivery_maybe_stopped(struct delivery *d)
{
  if (d->njobs > 0 || d->stopping != 1)
    return;
  d->stopping = 2;
  uv_close((uv_handle_t *) &d->timer, delivery_on_timer_closed);
}

void delivery_stop(struct delivery *d, void (*done)(void *arg), void *arg)
{
  d->stopping = 1;
  d->stopped_cb = done;
  d->stopped_arg = arg;
  uv_timer_stop(&d->timer);
  if (d->njobs > 0)
    log_info("- queue stopping in_flight=%u", d->njobs);
  delivery_maybe_stopped(d);
}
