/* SPDX-License-Identifier: MIT */
/* The message status API over HTTP (see include/mail_status.h). */
#include "mail_status.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "queue.h"
#include "xalloc.h"

#define MAIL_STATUS_CREDENTIAL_MAX 256 /* user and password of Basic auth */
#define MAIL_STATUS_MESSAGE_ID_MAX 998 /* RFC 5322 line length */
#define MAIL_STATUS_SAME_ID_MAX 20     /* rows listed for one Message-ID */

/* Sends value (taken over) as the JSON body. */
static void mail_status_reply(struct http_exchange *ex, int status,
                              json_t *value)
{
  static const char *const headers[]
      = { "Content-Type: application/json", "Cache-Control: no-store", NULL };
  static const char *const auth_headers[]
      = { "Content-Type: application/json", "Cache-Control: no-store",
          "WWW-Authenticate: Basic realm=\"nextal\", charset=\"UTF-8\"", NULL };
  char *text = json_dumps(value, JSON_COMPACT);

  if (text == NULL)
    abort(); /* jansson fails only on allocation */
  json_decref(value);
  http_exchange_respond(ex, status, status == 401 ? auth_headers : headers,
                        text, strlen(text));
  free(text);
}

static void mail_status_error(struct http_exchange *ex, int status,
                              const char *code, const char *reason)
{
  mail_status_reply(
      ex, status,
      json_pack("{s:{s:s, s:s}}", "error", "code", code, "reason", reason));
}

/* HTTP Basic with the service credential; answers 401 itself. */
static int mail_status_authenticate(struct mail_status_deps *deps,
                                    struct http_exchange *ex)
{
  char user[MAIL_STATUS_CREDENTIAL_MAX];
  char pass[MAIL_STATUS_CREDENTIAL_MAX];
  int rc = -EPERM;

  if (http_exchange_basic_auth(ex, user, sizeof(user), pass, sizeof(pass)) == 0)
    rc = credential_check(deps->credential, user, pass);
  explicit_bzero(pass, sizeof(pass));
  if (rc < 0) {
    log_info("%s http status_auth_failed peer=%s",
             http_exchange_request(ex)->conn_id,
             http_exchange_request(ex)->peer);
    mail_status_error(ex, 401, "unauthenticated",
                      "HTTP Basic with the service credential is required.");
  }
  return rc;
}

/* ms since the epoch as RFC 3339 UTC, or JSON null for 0. */
static json_t *mail_status_time(int64_t ms)
{
  time_t t = (time_t) (ms / 1000);
  struct tm tm;
  char date[32];
  char text[48];

  if (ms <= 0 || gmtime_r(&t, &tm) == NULL)
    return json_null();
  strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(text, sizeof(text), "%s.%03dZ", date, (int) (ms % 1000));
  return json_string(text);
}

static json_t *mail_status_entry_json(const struct queue_entry *e)
{
  json_t *rcpts = json_array();
  json_t *error = json_null();
  json_t *mid = json_null();
  int queued = strcmp(e->state, "queued") == 0;

  for (size_t i = 0; i < e->nrcpts; i++)
    json_array_append_new(rcpts, json_string(e->rcpts[i]));
  if (e->message_id != NULL)
    mid = json_sprintf("<%s>", e->message_id);
  /* A queued row keeps the last transient error as the reason it waits. */
  if (e->error_code != NULL || e->error_text != NULL)
    error = json_pack("{s:s?, s:s?}", "code", e->error_code, "reason",
                      e->error_text);
  return json_pack("{s:s, s:o, s:s, s:o, s:s, s:o, s:o, s:i, s:o, s:o}",
                   "queue_id", e->queue_id, "message_id", mid, "sender",
                   e->sender, "recipients", rcpts, "state", e->state,
                   "created_at", mail_status_time(e->created_at), "sent_at",
                   mail_status_time(e->sent_at), "attempts", e->attempts,
                   "next_attempt_at",
                   queued ? mail_status_time(e->next_attempt_at) : json_null(),
                   "error", error);
}

static void mail_status_by_queue_id(struct mail_status_deps *deps,
                                    struct http_exchange *ex,
                                    const char *queue_id)
{
  struct queue_entry e;
  int rc;

  if (strlen(queue_id) >= QUEUE_ID_SIZE) {
    mail_status_error(ex, 404, "not_found", "No message has this queue id.");
    return;
  }
  rc = queue_find(deps->store, queue_id, NULL, &e);
  if (rc == -ENOENT) {
    mail_status_error(ex, 404, "not_found", "No message has this queue id.");
    return;
  }
  if (rc < 0) {
    mail_status_error(ex, 503, "store_unavailable",
                      "The queue cannot be read now; try again.");
    return;
  }
  mail_status_reply(ex, 200, mail_status_entry_json(&e));
  queue_entry_free(&e);
}

/* The newest message with this Message-ID; others that share it (sent to
 * another envelope) are named in same_message_id. */
static void mail_status_by_message_id(struct mail_status_deps *deps,
                                      struct http_exchange *ex,
                                      const char *message_id)
{
  struct queue_entry *v = NULL;
  size_t len = strlen(message_id);
  char *bare;
  json_t *body;
  json_t *others;
  int n;

  /* Accept "<id>" as written in the header, or the bare id we store. */
  if (len >= 2 && message_id[0] == '<' && message_id[len - 1] == '>')
    bare = xstrndup(message_id + 1, len - 2);
  else
    bare = xstrdup(message_id);
  n = queue_find_all(deps->store, bare, &v, MAIL_STATUS_SAME_ID_MAX);
  free(bare);
  if (n < 0) {
    mail_status_error(ex, 503, "store_unavailable",
                      "The queue cannot be read now; try again.");
    return;
  }
  if (n == 0) {
    free(v);
    mail_status_error(ex, 404, "not_found", "No message has this Message-ID.");
    return;
  }
  body = mail_status_entry_json(&v[0]);
  others = json_array();
  for (int i = 1; i < n; i++)
    json_array_append_new(others, json_string(v[i].queue_id));
  json_object_set_new(body, "same_message_id", others);
  queue_entries_free(v, (size_t) n);
  mail_status_reply(ex, 200, body);
}

static void mail_status_handle(void *arg, struct http_exchange *ex)
{
  struct mail_status_deps *deps = arg;
  const struct http_server_request *req = http_exchange_request(ex);
  const char *rest = req->path + strlen(MAIL_STATUS_PATH);
  const char *message_id = NULL;
  char *queue_id = NULL;

  if (mail_status_authenticate(deps, ex) < 0)
    return;
  if (rest[0] == '\0' || strcmp(rest, "/") == 0) {
    if (http_exchange_query(ex, "message_id", &message_id) < 0
        || message_id[0] == '\0'
        || strlen(message_id) > MAIL_STATUS_MESSAGE_ID_MAX) {
      mail_status_error(ex, 400, "bad_request",
                        "Ask for /v1/messages/QUEUEID or "
                        "/v1/messages?message_id=ID.");
      return;
    }
    mail_status_by_message_id(deps, ex, message_id);
    return;
  }
  if (http_percent_decode(rest + 1, strlen(rest + 1), 0, &queue_id) < 0
      || strchr(queue_id, '/') != NULL) {
    free(queue_id);
    mail_status_error(ex, 404, "not_found", "No message has this queue id.");
    return;
  }
  mail_status_by_queue_id(deps, ex, queue_id);
  free(queue_id);
}

int mail_status_register(struct http_router *router,
                         struct mail_status_deps *deps)
{
  return http_router_add(router, "GET", MAIL_STATUS_PATH, mail_status_handle,
                         deps);
}
