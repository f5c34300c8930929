/* SPDX-License-Identifier: MIT */
/* Large mail: draft, attachments, upload sessions, send (see
 * include/mail_upload.h). One upload is a small state machine driven by
 * Graph's answers on the loop. */
#include "mail_upload.h"

#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "xalloc.h"

enum mail_upload_state {
  MAIL_UPLOAD_CHECK_DRAFT, /* resuming: is the remembered draft still one? */
  MAIL_UPLOAD_COUNT,       /* resuming: how many attachments it has */
  MAIL_UPLOAD_CREATE_DRAFT,
  MAIL_UPLOAD_ATTACH,  /* one small attachment in a POST */
  MAIL_UPLOAD_SESSION, /* createUploadSession for a large one */
  MAIL_UPLOAD_CHUNK,   /* one PUT of the upload session */
  MAIL_UPLOAD_SEND,
  MAIL_UPLOAD_DISCARD, /* Graph refused an attachment: delete the draft */
};

static const char *const mail_upload_state_names[] = {
  [MAIL_UPLOAD_CHECK_DRAFT] = "check_draft",
  [MAIL_UPLOAD_COUNT] = "count",
  [MAIL_UPLOAD_CREATE_DRAFT] = "create_draft",
  [MAIL_UPLOAD_ATTACH] = "attach",
  [MAIL_UPLOAD_SESSION] = "session",
  [MAIL_UPLOAD_CHUNK] = "chunk",
  [MAIL_UPLOAD_SEND] = "send",
  [MAIL_UPLOAD_DISCARD] = "discard",
};

struct mail_upload {
  enum mail_upload_state state;
  struct graph_client *graph;
  struct store *store;
  int64_t rowid;
  char *queue_id;
  char *mailbox;
  char *draft_json;
  const struct mail_upload_file *files;
  size_t nfiles;
  char *draft_id;   /* Graph's (immutable) id of the draft */
  size_t next_file; /* first attachment not yet on the draft */
  char *upload_url; /* the session's pre-authenticated URL */
  uint64_t sent;    /* bytes of the current file the session has */
  mail_upload_done_cb done;
  void *arg;
  bool (*may_continue)(void *arg);
  struct graph_response refusal; /* reported after the draft is deleted */
};

static void mail_upload_step(struct mail_upload *u);

/* ---- the draft id in the queue row ------------------------------------ */

/* The messages table belongs to queue.c; this one column (migration 6) is
 * this module's. Returns a new string or NULL. */
static char *mail_upload_draft_load(struct store *store, int64_t rowid)
{
  sqlite3_stmt *st = NULL;
  char *id = NULL;

  if (sqlite3_prepare_v2(store->db,
                         "SELECT draft_id FROM messages WHERE id = ?1", -1, &st,
                         NULL)
      != SQLITE_OK) {
    log_error("- store prepare_failed error=\"%s\"", sqlite3_errmsg(store->db));
    return NULL;
  }
  sqlite3_bind_int64(st, 1, rowid);
  if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
    id = xstrdup((const char *) sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  return id;
}

/* Remembers (or with NULL forgets) the draft; a failure only costs a
 * second draft on a retry, so it is logged, not fatal. */
static void mail_upload_draft_save(struct mail_upload *u, const char *id)
{
  sqlite3_stmt *st = NULL;
  int rc;

  rc = sqlite3_prepare_v2(u->store->db,
                          "UPDATE messages SET draft_id = ?1 WHERE id = ?2", -1,
                          &st, NULL);
  if (rc == SQLITE_OK) {
    if (id)
      sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    else
      sqlite3_bind_null(st, 1);
    sqlite3_bind_int64(st, 2, u->rowid);
    rc = sqlite3_step(st);
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE && rc != SQLITE_OK)
    log_error("%s queue draft_save_failed error=\"%s\"", u->queue_id,
              sqlite3_errmsg(u->store->db));
}

/* ---- life cycle ------------------------------------------------------- */

static void mail_upload_enter_state(struct mail_upload *u,
                                    enum mail_upload_state state)
{
  log_trace(LOG_TRACE_GRAPH, "%s graph upload_state from=%s to=%s file=%zu",
            u->queue_id, mail_upload_state_names[u->state],
            mail_upload_state_names[state], u->next_file);
  u->state = state;
}

static void mail_upload_free(struct mail_upload *u)
{
  free(u->queue_id);
  free(u->mailbox);
  free(u->draft_json);
  free(u->draft_id);
  if (u->upload_url)
    explicit_bzero(u->upload_url, strlen(u->upload_url));
  free(u->upload_url);
  free(u);
}

/* Reports the outcome and frees the upload. */
static void mail_upload_finish(struct mail_upload *u,
                               const struct graph_response *resp)
{
  mail_upload_done_cb done = u->done;
  void *arg = u->arg;
  bool at_send = u->state == MAIL_UPLOAD_SEND;

  mail_upload_free(u);
  done(arg, resp, at_send);
}

/* Graph refused a step for good (a 4xx other than 408 and 429: too large
 * for the mailbox, a name it will not take): the message will fail, so
 * its draft must not stay in the user's Drafts folder. The refusal is
 * reported once the draft is deleted. */
static bool mail_upload_refused(const struct mail_upload *u,
                                const struct graph_response *resp)
{
  return u->draft_id && resp->status >= 400 && resp->status < 500
         && resp->status != 408 && resp->status != 429;
}

static void mail_upload_fail(struct mail_upload *u,
                             const struct graph_response *resp)
{
  if (u->state == MAIL_UPLOAD_SEND || !mail_upload_refused(u, resp)) {
    mail_upload_finish(u, resp);
    return;
  }
  u->refusal = *resp;
  u->refusal.body = "";
  u->refusal.body_len = 0;
  u->refusal.location = NULL;
  mail_upload_enter_state(u, MAIL_UPLOAD_DISCARD);
  mail_upload_step(u);
}

/* Moves to the next attachment, or to the send when all are there. */
static void mail_upload_next_file(struct mail_upload *u)
{
  if (u->next_file >= u->nfiles) {
    mail_upload_enter_state(u, MAIL_UPLOAD_SEND);
  } else if (u->files[u->next_file].size < MIME_GRAPH_SMALL_ATTACHMENT_MAX) {
    mail_upload_enter_state(u, MAIL_UPLOAD_ATTACH);
  } else {
    u->sent = 0;
    mail_upload_enter_state(u, MAIL_UPLOAD_SESSION);
  }
  mail_upload_step(u);
}

/* ---- answers ------------------------------------------------------------ */

static json_t *mail_upload_json(const struct graph_response *resp)
{
  return json_loadb(resp->body, resp->body_len, 0, NULL);
}

static void mail_upload_on_check(struct mail_upload *u,
                                 const struct graph_response *resp)
{
  json_t *root;

  if (resp->status == 404) {
    /* The draft is gone (deleted in Outlook, expired): start again. */
    mail_upload_draft_save(u, NULL);
    free(u->draft_id);
    u->draft_id = NULL;
    mail_upload_enter_state(u, MAIL_UPLOAD_CREATE_DRAFT);
    mail_upload_step(u);
    return;
  }
  if (resp->status != 200) {
    mail_upload_finish(u, resp);
    return;
  }
  root = mail_upload_json(resp);
  if (json_is_false(json_object_get(root, "isDraft"))) {
    /* The send went through before the answer was lost. */
    struct graph_response sent
        = { .status = 202, .body = "", .retry_after = -1 };

    json_decref(root);
    log_info("%s queue draft_already_sent sender=%s", u->queue_id, u->mailbox);
    mail_upload_finish(u, &sent);
    return;
  }
  json_decref(root);
  mail_upload_enter_state(u, MAIL_UPLOAD_COUNT);
  mail_upload_step(u);
}

/* How many of the listed attachments are ours, in order: the same name
 * and size as the file at that place. */
static size_t mail_upload_count_ours(const struct mail_upload *u, json_t *value)
{
  size_t have = 0;

  while (have < u->nfiles && have < json_array_size(value)) {
    json_t *att = json_array_get(value, have);
    const char *name = json_string_value(json_object_get(att, "name"));
    json_int_t size = json_integer_value(json_object_get(att, "size"));

    if (!name || strcmp(name, u->files[have].name) != 0
        || (uint64_t) size != u->files[have].size)
      break;
    have++;
  }
  if (have < json_array_size(value))
    log_warn("%s queue draft_attachments_differ sender=%s listed=%zu ours=%zu",
             u->queue_id, u->mailbox, json_array_size(value), have);
  return have;
}

/* Attachments are added in order, so their count says where to go on; a
 * POST whose answer was lost is counted here rather than sent twice. */
static void mail_upload_on_count(struct mail_upload *u,
                                 const struct graph_response *resp)
{
  json_t *root;

  if (resp->status != 200) {
    mail_upload_finish(u, resp);
    return;
  }
  root = mail_upload_json(resp);
  u->next_file = mail_upload_count_ours(u, json_object_get(root, "value"));
  json_decref(root);
  log_info("%s queue draft_resumed sender=%s attachments=%zu/%zu", u->queue_id,
           u->mailbox, u->next_file, u->nfiles);
  mail_upload_next_file(u);
}

static void mail_upload_on_created(struct mail_upload *u,
                                   const struct graph_response *resp)
{
  json_t *root;
  const char *id;

  root = resp->status == 201 ? mail_upload_json(resp) : NULL;
  id = json_string_value(json_object_get(root, "id"));
  if (!id) {
    json_decref(root);
    mail_upload_finish(u, resp);
    return;
  }
  u->draft_id = xstrdup(id);
  json_decref(root);
  mail_upload_draft_save(u, u->draft_id);
  u->next_file = 0;
  mail_upload_next_file(u);
}

static void mail_upload_on_session(struct mail_upload *u,
                                   const struct graph_response *resp)
{
  json_t *root = resp->status == 201 ? mail_upload_json(resp) : NULL;
  const char *url = json_string_value(json_object_get(root, "uploadUrl"));

  if (!url) {
    json_decref(root);
    mail_upload_fail(u, resp);
    return;
  }
  u->upload_url = xstrdup(url);
  json_decref(root);
  u->sent = 0;
  mail_upload_enter_state(u, MAIL_UPLOAD_CHUNK);
  mail_upload_step(u);
}

/* 200: more to send; 201: the attachment is on the draft. */
static void mail_upload_on_chunk(struct mail_upload *u,
                                 const struct graph_response *resp)
{
  const struct mail_upload_file *f = &u->files[u->next_file];
  uint64_t len = f->size - u->sent;

  if (len > MAIL_UPLOAD_CHUNK_SIZE)
    len = MAIL_UPLOAD_CHUNK_SIZE;
  if (resp->status == 200 && u->sent + len < f->size) {
    u->sent += len;
    mail_upload_step(u);
    return;
  }
  if (resp->status == 401 || resp->status == 404 || resp->status == 410
      || resp->status == 416) {
    /* The session expired or lost our place: not the message's fault. A
     * retry counts the draft's attachments and opens a new session. */
    struct graph_response lost = *resp;

    lost.status = 0;
    snprintf(lost.error_code, sizeof lost.error_code, "upload_session_lost");
    mail_upload_finish(u, &lost);
    return;
  }
  if (resp->status != 201) {
    mail_upload_fail(u, resp);
    return;
  }
  explicit_bzero(u->upload_url, strlen(u->upload_url));
  free(u->upload_url);
  u->upload_url = NULL;
  u->next_file++;
  mail_upload_next_file(u);
}

static void mail_upload_on_answer(void *arg, const struct graph_response *resp)
{
  struct mail_upload *u = arg;
  struct graph_response refusal;

  switch (u->state) {
    case MAIL_UPLOAD_CHECK_DRAFT:
      mail_upload_on_check(u, resp);
      break;
    case MAIL_UPLOAD_COUNT:
      mail_upload_on_count(u, resp);
      break;
    case MAIL_UPLOAD_CREATE_DRAFT:
      mail_upload_on_created(u, resp);
      break;
    case MAIL_UPLOAD_ATTACH:
      if (resp->status != 201) {
        mail_upload_fail(u, resp);
        break;
      }
      u->next_file++;
      mail_upload_next_file(u);
      break;
    case MAIL_UPLOAD_SESSION:
      mail_upload_on_session(u, resp);
      break;
    case MAIL_UPLOAD_CHUNK:
      mail_upload_on_chunk(u, resp);
      break;
    case MAIL_UPLOAD_SEND:
      mail_upload_finish(u, resp);
      break;
    case MAIL_UPLOAD_DISCARD:
      /* Deleted or not, the row forgets it: a failed message is not
       * resumed, and a draft left behind is only clutter. */
      if (resp->status != 204)
        log_warn("%s queue draft_not_deleted sender=%s status=%ld", u->queue_id,
                 u->mailbox, resp->status);
      mail_upload_draft_save(u, NULL);
      refusal = u->refusal; /* u is freed before done runs */
      mail_upload_finish(u, &refusal);
      break;
  }
}

/* ---- requests ------------------------------------------------------------ */

/* Reads a small attachment back (under 3 MB) into a fileAttachment. */
static char *mail_upload_attachment_json(const struct mail_upload_file *f)
{
  gnutls_datum_t in = { NULL, 0 }, out = { NULL, 0 };
  json_t *att;
  char *raw = xmalloc(f->size + 1), *dump;
  int fd = open(f->path, O_RDONLY | O_CLOEXEC);
  ssize_t n = fd < 0 ? -1 : pread(fd, raw, f->size, 0);

  if (fd >= 0)
    close(fd);
  if (n != (ssize_t) f->size) {
    free(raw);
    return NULL;
  }
  in = (gnutls_datum_t){ (unsigned char *) raw, (unsigned) f->size };
  if (f->size > 0 && gnutls_base64_encode2(&in, &out) < 0)
    abort(); /* only on out of memory, which is fatal */
  free(raw);
  att = json_pack("{s:s, s:s, s:s, s:s%, s:b}", "@odata.type",
                  "#microsoft.graph.fileAttachment", "name", f->name,
                  "contentType", f->content_type, "contentBytes",
                  out.data ? (const char *) out.data : "", (size_t) out.size,
                  "isInline", f->is_inline);
  gnutls_free(out.data);
  if (f->content_id)
    json_object_set_new(att, "contentId", json_string(f->content_id));
  dump = json_dumps(att, JSON_COMPACT);
  json_decref(att);
  return dump;
}

static char *mail_upload_session_json(const struct mail_upload_file *f)
{
  json_t *item
      = json_pack("{s:s, s:s, s:I, s:s, s:b}", "attachmentType", "file", "name",
                  f->name, "size", (json_int_t) f->size, "contentType",
                  f->content_type, "isInline", f->is_inline);
  json_t *root;
  char *dump;

  if (f->content_id)
    json_object_set_new(item, "contentId", json_string(f->content_id));
  root = json_pack("{s:o}", "AttachmentItem", item);
  dump = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return dump;
}

/* Sends one PUT of the upload session, read from the file by curl. */
static void mail_upload_put_chunk(struct mail_upload *u)
{
  const struct mail_upload_file *f = &u->files[u->next_file];
  uint64_t len = f->size - u->sent;
  char *range;
  const char *headers[2];
  struct graph_request req = { 0 };

  if (len > MAIL_UPLOAD_CHUNK_SIZE)
    len = MAIL_UPLOAD_CHUNK_SIZE;
  range = xasprintf(
      "Content-Range: bytes %llu-%llu/%llu", (unsigned long long) u->sent,
      (unsigned long long) (u->sent + len - 1), (unsigned long long) f->size);
  headers[0] = range;
  headers[1] = NULL;
  req.mailbox = u->mailbox;
  req.method = "PUT";
  req.upload_url = u->upload_url;
  req.content_type = "application/octet-stream";
  req.headers = headers;
  req.body_file = f->path;
  req.body_offset = u->sent;
  req.body_len = (size_t) len;
  graph_client_send(u->graph, &req, mail_upload_on_answer, u);
  free(range);
}

/* Stops before the next request when the caller says so (the policy
 * switch went off); the draft stays and a later attempt resumes it. */
static bool mail_upload_stopped(struct mail_upload *u)
{
  struct graph_response stop = { .body = "", .retry_after = -1 };

  if (!u->may_continue || u->may_continue(u->arg)
      || u->state == MAIL_UPLOAD_DISCARD)
    return false;
  snprintf(stop.error_code, sizeof stop.error_code, "%s", MAIL_UPLOAD_STOPPED);
  snprintf(stop.error_message, sizeof stop.error_message,
           "stopped before the next request");
  mail_upload_finish(u, &stop);
  return true;
}

/* Sends the request of the current state. */
static void mail_upload_step(struct mail_upload *u)
{
  struct graph_request req = { .mailbox = u->mailbox, .method = "POST" };
  const struct mail_upload_file *f
      = u->next_file < u->nfiles ? &u->files[u->next_file] : NULL;
  char *path = NULL, *body = NULL;

  if (mail_upload_stopped(u))
    return;
  switch (u->state) {
    case MAIL_UPLOAD_CHECK_DRAFT:
      req.method = "GET";
      path = xasprintf("/v1.0/users/%s/messages/%s?$select=isDraft", u->mailbox,
                       u->draft_id);
      break;
    case MAIL_UPLOAD_COUNT:
      /* Only what the count needs: without $select each attachment comes
       * with its contentBytes, megabytes past the reply limit. $top keeps
       * one page enough, whatever else the draft holds. */
      req.method = "GET";
      path = xasprintf("/v1.0/users/%s/messages/%s/attachments"
                       "?$select=id,name,size&$top=%zu",
                       u->mailbox, u->draft_id, u->nfiles + 1);
      break;
    case MAIL_UPLOAD_CREATE_DRAFT:
      path = xasprintf("/v1.0/users/%s/messages", u->mailbox);
      body = xstrdup(u->draft_json);
      break;
    case MAIL_UPLOAD_ATTACH:
      path = xasprintf("/v1.0/users/%s/messages/%s/attachments", u->mailbox,
                       u->draft_id);
      body = mail_upload_attachment_json(f);
      break;
    case MAIL_UPLOAD_SESSION:
      path = xasprintf("/v1.0/users/%s/messages/%s/attachments/"
                       "createUploadSession",
                       u->mailbox, u->draft_id);
      body = mail_upload_session_json(f);
      break;
    case MAIL_UPLOAD_CHUNK:
      mail_upload_put_chunk(u);
      return;
    case MAIL_UPLOAD_SEND:
      path = xasprintf("/v1.0/users/%s/messages/%s/send", u->mailbox,
                       u->draft_id);
      body = xstrdup("");
      break;
    case MAIL_UPLOAD_DISCARD:
      req.method = "DELETE";
      path = xasprintf("/v1.0/users/%s/messages/%s", u->mailbox, u->draft_id);
      break;
  }
  if (u->state == MAIL_UPLOAD_ATTACH && !body) {
    struct graph_response fail = { .body = "", .retry_after = -1 };

    /* Our own temporary file went missing: decode again on a retry. */
    snprintf(fail.error_code, sizeof fail.error_code, "local_file");
    snprintf(fail.error_message, sizeof fail.error_message,
             "cannot read the decoded attachment");
    free(path);
    mail_upload_finish(u, &fail);
    return;
  }
  req.path = path;
  req.body = body;
  req.body_len = body ? strlen(body) : 0;
  req.content_type = body && *body ? "application/json" : NULL;
  graph_client_send(u->graph, &req, mail_upload_on_answer, u);
  free(path);
  free(body);
}

void mail_upload_start(const struct mail_upload_spec *spec,
                       mail_upload_done_cb done, void *arg)
{
  struct mail_upload *u = xcalloc(1, sizeof(*u));

  u->graph = spec->graph;
  u->store = spec->store;
  u->rowid = spec->rowid;
  u->queue_id = xstrdup(spec->queue_id);
  u->mailbox = xstrdup(spec->mailbox);
  u->draft_json = xstrdup(spec->draft_json);
  u->files = spec->files;
  u->nfiles = spec->nfiles;
  u->done = done;
  u->arg = arg;
  u->draft_id = mail_upload_draft_load(spec->store, spec->rowid);
  u->state = u->draft_id ? MAIL_UPLOAD_CHECK_DRAFT : MAIL_UPLOAD_CREATE_DRAFT;
  log_info("%s queue upload_start sender=%s attachments=%zu resume=%s",
           u->queue_id, u->mailbox, u->nfiles, u->draft_id ? "yes" : "no");
  mail_upload_step(u); /* the caller has just checked the first */
  u->may_continue = spec->may_continue;
}

/* ---- decoding to temporary files (worker thread) -------------------- */

void mail_upload_files_free(struct mail_upload_file *files, size_t nfiles)
{
  for (size_t i = 0; files && i < nfiles; i++) {
    if (files[i].path)
      unlink(files[i].path);
    free(files[i].path);
    free(files[i].name);
    free(files[i].content_type);
    free(files[i].content_id);
  }
  free(files);
}

/* "<dir of spool_path>/tmp/<queue id>.<n>" */
static char *mail_upload_tmp_path(const char *spool_path, const char *queue_id,
                                  size_t n)
{
  const char *slash = strrchr(spool_path, '/');
  int dirlen = slash ? (int) (slash - spool_path) : 1;

  return xasprintf("%.*s/tmp/%s.%zu", dirlen, slash ? spool_path : ".",
                   queue_id, n);
}

int mail_upload_prepare(const char *spool_path, const char *queue_id,
                        const struct mime_graph_result *res,
                        struct mail_upload_file **files, size_t *nfiles,
                        char *err, size_t errlen)
{
  struct mail_upload_file *out = xcalloc(res->nparts + 1, sizeof(*out));
  int rc = 0;

  for (size_t i = 0; i < res->nparts && rc == 0; i++) {
    const struct mime_graph_part *p = &res->parts[i];
    struct mail_upload_file *f = &out[i];
    int fd;

    f->path = mail_upload_tmp_path(spool_path, queue_id, i);
    f->name = xstrdup(p->name);
    f->content_type = xstrdup(p->content_type);
    f->content_id = p->content_id ? xstrdup(p->content_id) : NULL;
    f->is_inline = p->is_inline;
    fd = open(f->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
      rc = -errno;
      break;
    }
    rc = mime_graph_part_extract(spool_path, p, fd, &f->size);
    close(fd);
  }
  if (rc < 0) {
    snprintf(err, errlen, "cannot decode the attachments: %s", strerror(-rc));
    mail_upload_files_free(out, res->nparts);
    return rc;
  }
  *files = out;
  *nfiles = res->nparts;
  return 0;
}
