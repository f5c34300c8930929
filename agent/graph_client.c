/* SPDX-License-Identifier: MIT */
/* Graph requests on behalf of mailboxes (see include/graph_client.h): a
 * FIFO per mailbox with at most max_in_flight requests out, a bearer token
 * per request, one retry after an expired token, and Graph's error body. */
#include "graph_client.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "xalloc.h"

/* Requests waiting behind one mailbox's in-flight ones; more means the
 * caller lost control, and they fail with "queue_full". */
#define GRAPH_CLIENT_MAX_QUEUED 10000

/* Extra headers a caller may add to one request. */
#define GRAPH_CLIENT_MAX_HEADERS 16

/* Hash buckets for the mailboxes with work; idle mailboxes are dropped. */
#define GRAPH_CLIENT_BUCKETS 64

/* Graph answers within this or the request counts as failed. */
#define GRAPH_CLIENT_TIMEOUT_MS 120000L

struct graph_call {
  struct graph_client *client;
  struct graph_mailbox *box;
  char *mailbox;
  char *method;
  char *path;
  char *content_type;
  char *body;
  size_t body_len;
  char *upload_url; /* absolute, pre-authenticated: no token, not logged */
  char *body_file;
  uint64_t body_offset;
  char *headers[GRAPH_CLIENT_MAX_HEADERS];
  size_t nheaders;
  graph_done_cb done;
  void *arg;
  char request_id[37]; /* client-request-id, a random GUID */
  bool retried;        /* already retried after a 401 */
  uint64_t started;    /* uv_now() when dispatched */
  struct graph_call *next;
};

struct graph_mailbox {
  char *key; /* lower-cased address */
  unsigned in_flight;
  struct graph_call *queue; /* FIFO of waiting calls */
  struct graph_call **queue_tail;
  size_t queued;
  struct graph_mailbox *next; /* in its bucket */
};

struct graph_client {
  uv_loop_t *loop;
  struct http_client *http;
  struct token_cache *tokens;
  char *base_url;
  unsigned max_in_flight;
  struct graph_mailbox *buckets[GRAPH_CLIENT_BUCKETS];
  uv_timer_t kick; /* zero timeout: dispatch from the loop, not the caller */
  struct graph_call *rejected; /* to fail on the next kick */
  unsigned active;             /* calls dispatched and not yet completed */
  bool closing;
  bool kick_closed;
};

static void graph_client_kick(struct graph_client *client);

static char *graph_key(const char *mailbox)
{
  char *key = xstrdup(mailbox);

  for (char *p = key; *p; p++)
    *p = (char) tolower((unsigned char) *p);
  return key;
}

static size_t graph_key_bucket(const char *key)
{
  uint32_t h = 2166136261u; /* FNV-1a */

  for (const char *p = key; *p; p++)
    h = (h ^ (unsigned char) *p) * 16777619u;
  return h % GRAPH_CLIENT_BUCKETS;
}

static struct graph_mailbox *graph_mailbox_find(const struct graph_client *c,
                                                const char *key)
{
  struct graph_mailbox *box = c->buckets[graph_key_bucket(key)];

  while (box && strcmp(box->key, key) != 0)
    box = box->next;
  return box;
}

static struct graph_mailbox *graph_mailbox_get(struct graph_client *client,
                                               const char *mailbox)
{
  char *key = graph_key(mailbox);
  struct graph_mailbox *box = graph_mailbox_find(client, key);
  size_t b;

  if (box) {
    free(key);
    return box;
  }
  b = graph_key_bucket(key);
  box = xcalloc(1, sizeof(*box));
  box->key = key;
  box->queue_tail = &box->queue;
  box->next = client->buckets[b];
  client->buckets[b] = box;
  return box;
}

/* Runs once nothing is in flight; the mailbox entries left are idle. */
static void graph_client_free(struct graph_client *client)
{
  assert(client->active == 0 && !client->rejected);
  for (size_t b = 0; b < GRAPH_CLIENT_BUCKETS; b++) {
    struct graph_mailbox *box;

    while ((box = client->buckets[b]) != NULL) {
      assert(box->in_flight == 0 && !box->queue);
      client->buckets[b] = box->next;
      free(box->key);
      free(box);
    }
  }
  free(client->base_url);
  free(client);
}

static void graph_call_free(struct graph_call *call)
{
  free(call->mailbox);
  free(call->method);
  free(call->path);
  free(call->content_type);
  free(call->body);
  if (call->upload_url)
    explicit_bzero(call->upload_url, strlen(call->upload_url));
  free(call->upload_url);
  free(call->body_file);
  for (size_t i = 0; i < call->nheaders; i++)
    free(call->headers[i]);
  free(call);
}

/* Fills resp->error_code and error_message from Graph's error body. */
static void graph_response_parse_error(struct graph_response *resp)
{
  json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
  json_t *error = json_object_get(root, "error");
  const char *code = json_string_value(json_object_get(error, "code"));
  const char *message = json_string_value(json_object_get(error, "message"));

  if (code)
    snprintf(resp->error_code, sizeof(resp->error_code), "%s", code);
  if (message)
    snprintf(resp->error_message, sizeof(resp->error_message), "%s", message);
  json_decref(root);
}

static void graph_call_trace(const struct graph_call *call, long status)
{
  char mailbox[128];
  char path[256];

  log_trace(LOG_TRACE_GRAPH,
            "%s graph request method=%s path=%s status=%ld ms=%llu"
            " request_id=%s",
            log_escape(mailbox, sizeof(mailbox), call->mailbox,
                       strlen(call->mailbox)),
            call->method,
            log_escape(path, sizeof(path), call->path, strlen(call->path)),
            status,
            (unsigned long long) (uv_now(call->client->loop) - call->started),
            call->request_id);
}

/* Reports a dispatched call, frees it and lets its mailbox move on. The
 * callback may send more requests or close the client. */
static void graph_call_complete(struct graph_call *call,
                                const struct graph_response *resp)
{
  struct graph_client *client = call->client;

  graph_call_trace(call, resp->status);
  assert(call->box->in_flight > 0 && client->active > 0);
  call->box->in_flight--;
  client->active--;
  graph_client_kick(client);

  call->done(call->arg, resp);
  graph_call_free(call);
  if (client->closing && client->active == 0 && client->kick_closed)
    graph_client_free(client);
}

/* Fails a call with no HTTP answer: status 0 and code. */
static void graph_call_fail(struct graph_call *call, const char *code,
                            const char *message, bool permanent)
{
  struct graph_response resp = { .body = "", .retry_after = -1 };

  snprintf(resp.error_code, sizeof(resp.error_code), "%s", code);
  snprintf(resp.error_message, sizeof(resp.error_message), "%s",
           message ? message : "");
  resp.token_permanent = permanent;
  graph_call_complete(call, &resp);
}

static void graph_call_on_token(void *arg, const char *token, const char *error,
                                const char *description, bool permanent);

/* An answer longer than http_client keeps: said once, as a warning, since
 * only a request that asks for less will ever get through. */
static void graph_call_too_large(const struct graph_call *call,
                                 struct graph_response *resp, const char *why)
{
  char mailbox[128];
  char path[256];

  snprintf(resp->error_code, sizeof(resp->error_code), "%s",
           GRAPH_REPLY_TOO_LARGE);
  snprintf(resp->error_message, sizeof(resp->error_message), "%s", why);
  log_warn("%s graph reply_too_large method=%s path=%s request_id=%s"
           " error=\"%s\"",
           log_escape(mailbox, sizeof(mailbox), call->mailbox,
                      strlen(call->mailbox)),
           call->method,
           log_escape(path, sizeof(path), call->path, strlen(call->path)),
           call->request_id, why);
}

static void graph_call_on_http(void *arg, const struct http_response *hresp)
{
  struct graph_call *call = arg;
  struct graph_client *client = call->client;
  struct graph_response resp = {
    .status = hresp->status,
    .body = hresp->body,
    .body_len = hresp->body_len,
    .retry_after = hresp->retry_after,
    .location = hresp->location,
  };

  if (hresp->too_large) {
    graph_call_too_large(call, &resp, hresp->curl_message);
  } else if (hresp->status == 0) {
    snprintf(resp.error_code, sizeof(resp.error_code), "network");
    snprintf(resp.error_message, sizeof(resp.error_message), "%s",
             hresp->curl_message);
  } else if (hresp->status >= 400) {
    graph_response_parse_error(&resp);
  }

  /* An expired or revoked token: fetch a new one and try once more. The
   * token cache is gone once the client is closing, so no retry then. */
  if (hresp->status == 401 && !call->upload_url
      && strcmp(resp.error_code, "InvalidAuthenticationToken") == 0
      && !call->retried && !client->closing) {
    graph_call_trace(call, hresp->status);
    call->retried = true;
    token_cache_invalidate(client->tokens, call->mailbox);
    token_cache_get(client->tokens, call->mailbox, graph_call_on_token, call);
    return;
  }
  graph_call_complete(call, &resp);
}

/* Sends the call with its token (NULL for an upload URL, which must go
 * without one); http_client_send copies the headers and body, so they are
 * freed here (the token wiped first). */
static void graph_call_send(struct graph_call *call, const char *token)
{
  struct graph_client *client = call->client;
  char *auth = token ? xasprintf("Authorization: Bearer %s", token) : NULL;
  char *ctype = call->content_type
                    ? xasprintf("Content-Type: %s", call->content_type)
                    : NULL;
  char *rid = xasprintf("client-request-id: %s", call->request_id);
  char *url = call->upload_url
                  ? xstrdup(call->upload_url)
                  : xasprintf("%s%s", client->base_url, call->path);
  const char *headers[GRAPH_CLIENT_MAX_HEADERS + 8];
  size_t n = 0;
  struct http_request req = {
    .method = call->method,
    .url = url,
    .headers = headers,
    .body = call->body,
    .body_len = call->body_len,
    .timeout_ms = GRAPH_CLIENT_TIMEOUT_MS,
    .body_file = call->body_file,
    .body_offset = call->body_offset,
  };
  int rc;

  if (auth)
    headers[n++] = auth;
  headers[n++] = "Accept: application/json";
  headers[n++] = rid;
  headers[n++] = "Prefer: IdType=\"ImmutableId\"";
  if (ctype)
    headers[n++] = ctype;
  for (size_t i = 0; i < call->nheaders; i++)
    headers[n++] = call->headers[i];
  headers[n] = NULL;

  call->started = uv_now(client->loop);
  rc = http_client_send(client->http, &req, graph_call_on_http, call);
  if (auth)
    explicit_bzero(auth, strlen(auth));
  explicit_bzero(url, strlen(url));
  free(auth);
  free(ctype);
  free(rid);
  free(url);
  if (rc == -ECANCELED)
    graph_call_fail(call, "network", "the HTTP client is shutting down", false);
  else if (rc < 0)
    graph_call_fail(call, "local_file", strerror(-rc), false);
}

static void graph_call_on_token(void *arg, const char *token, const char *error,
                                const char *description, bool permanent)
{
  struct graph_call *call = arg;

  if (!token) {
    graph_call_fail(call, error, description, permanent);
    return;
  }
  if (call->client->closing) {
    graph_call_fail(call, "cancelled", "the Graph client is closing", false);
    return;
  }
  graph_call_send(call, token);
}

/* Starts one call: from here on it counts against its mailbox. */
static void graph_call_dispatch(struct graph_call *call)
{
  struct graph_client *client = call->client;

  call->box->in_flight++;
  client->active++;
  call->started = uv_now(client->loop);
  if (call->upload_url)
    graph_call_send(call, NULL);
  else
    token_cache_get(client->tokens, call->mailbox, graph_call_on_token, call);
}

/* Fails the calls rejected by graph_client_send. */
static void graph_client_fail_rejected(struct graph_client *client)
{
  struct graph_call *call;

  while ((call = client->rejected) != NULL) {
    client->rejected = call->next;
    call->box->in_flight++; /* balanced in graph_call_complete */
    client->active++;
    call->started = uv_now(client->loop);
    graph_call_fail(call, "queue_full",
                    "too many Graph requests wait for this mailbox", false);
  }
}

/* Dispatches what each mailbox's limit allows and drops idle mailboxes.
 * Runs from the kick timer only, so completions that happen at once (a
 * token failure) never recurse into here. */
static void graph_client_pump(struct graph_client *client)
{
  for (size_t b = 0; b < GRAPH_CLIENT_BUCKETS; b++) {
    struct graph_mailbox **p = &client->buckets[b];

    while (*p) {
      struct graph_mailbox *box = *p;

      while (!client->closing && box->queue
             && box->in_flight < client->max_in_flight) {
        struct graph_call *call = box->queue;

        box->queue = call->next;
        if (!box->queue)
          box->queue_tail = &box->queue;
        box->queued--;
        call->next = NULL;
        graph_call_dispatch(call);
      }
      if (box->in_flight == 0 && !box->queue) {
        *p = box->next;
        free(box->key);
        free(box);
      } else {
        p = &box->next;
      }
    }
  }
}

static void graph_client_on_kick(uv_timer_t *timer)
{
  struct graph_client *client = timer->data;

  graph_client_fail_rejected(client);
  graph_client_pump(client);
}

static void graph_client_kick(struct graph_client *client)
{
  if (!client->closing)
    uv_timer_start(&client->kick, graph_client_on_kick, 0, 0);
}

int graph_client_new(uv_loop_t *loop, struct http_client *http,
                     struct token_cache *tokens, const char *graph_base_url,
                     unsigned max_in_flight, struct graph_client **out)
{
  struct graph_client *client;
  size_t len = strlen(graph_base_url);
  int rc;

  if (max_in_flight == 0)
    return -EINVAL;
  client = xcalloc(1, sizeof(*client));
  rc = uv_timer_init(loop, &client->kick);
  if (rc < 0) {
    free(client);
    return rc;
  }
  client->kick.data = client;
  client->loop = loop;
  client->http = http;
  client->tokens = tokens;
  while (len > 0 && graph_base_url[len - 1] == '/')
    len--; /* paths start with "/" */
  client->base_url = xstrndup(graph_base_url, len);
  client->max_in_flight = max_in_flight;
  *out = client;
  return 0;
}

static void graph_call_new_request_id(struct graph_call *call)
{
  unsigned char b[16];

  if (gnutls_rnd(GNUTLS_RND_NONCE, b, sizeof(b)) < 0) {
    log_error("- graph random_failed");
    abort(); /* the system has no randomness; nothing sensible is left */
  }
  b[6] = (unsigned char) ((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (unsigned char) ((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  snprintf(call->request_id, sizeof(call->request_id),
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
           "%02x%02x%02x%02x%02x%02x",
           b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
           b[11], b[12], b[13], b[14], b[15]);
}

static struct graph_call *graph_call_new(struct graph_client *client,
                                         const struct graph_request *req,
                                         graph_done_cb done, void *arg)
{
  struct graph_call *call = xcalloc(1, sizeof(*call));

  call->client = client;
  call->mailbox = xstrdup(req->mailbox);
  call->method = xstrdup(req->method);
  /* The upload URL holds a credential: logs show a placeholder. */
  call->path = xstrdup(req->upload_url ? "(upload session)" : req->path);
  call->upload_url = req->upload_url ? xstrdup(req->upload_url) : NULL;
  call->body_file = req->body_file ? xstrdup(req->body_file) : NULL;
  call->body_offset = req->body_offset;
  if (req->body_file)
    call->body_len = req->body_len;
  call->content_type = req->content_type ? xstrdup(req->content_type) : NULL;
  if (req->body) {
    call->body = xmalloc(req->body_len + 1);
    memcpy(call->body, req->body, req->body_len);
    call->body[req->body_len] = '\0';
    call->body_len = req->body_len;
  }
  for (size_t i = 0; req->headers && req->headers[i]; i++) {
    assert(i < GRAPH_CLIENT_MAX_HEADERS); /* our callers add one or two */
    call->headers[call->nheaders++] = xstrdup(req->headers[i]);
  }
  call->done = done;
  call->arg = arg;
  graph_call_new_request_id(call);
  return call;
}

void graph_client_send(struct graph_client *client,
                       const struct graph_request *req, graph_done_cb done,
                       void *arg)
{
  struct graph_call *call;
  struct graph_mailbox *box;

  assert(!client->closing && req->mailbox && req->method
         && (req->path || req->upload_url));
  call = graph_call_new(client, req, done, arg);
  box = graph_mailbox_get(client, req->mailbox);
  call->box = box;

  if (box->queued >= GRAPH_CLIENT_MAX_QUEUED) {
    log_warn("%s graph queue_full limit=%d", box->key, GRAPH_CLIENT_MAX_QUEUED);
    call->next = client->rejected;
    client->rejected = call;
  } else {
    *box->queue_tail = call;
    box->queue_tail = &call->next;
    box->queued++;
  }
  graph_client_kick(client);
}

unsigned graph_client_in_flight(const struct graph_client *client,
                                const char *mailbox)
{
  char *key = graph_key(mailbox);
  struct graph_mailbox *box = graph_mailbox_find(client, key);

  free(key);
  return box ? box->in_flight : 0;
}

static void graph_client_kick_closed(uv_handle_t *handle)
{
  struct graph_client *client = handle->data;

  client->kick_closed = true;
  if (client->active == 0)
    graph_client_free(client);
}

/* Fails every queued call with "cancelled"; callbacks run from here. */
static void graph_client_cancel_queued(struct graph_client *client)
{
  struct graph_call *call;

  graph_client_fail_rejected(client);
  for (size_t b = 0; b < GRAPH_CLIENT_BUCKETS; b++) {
    for (struct graph_mailbox *box = client->buckets[b]; box; box = box->next) {
      while ((call = box->queue) != NULL) {
        box->queue = call->next;
        box->queued--;
        box->in_flight++; /* balanced in graph_call_complete */
        client->active++;
        call->started = uv_now(client->loop);
        graph_call_fail(call, "cancelled", "the Graph client is closing",
                        false);
      }
      box->queue_tail = &box->queue;
    }
  }
}

void graph_client_close(struct graph_client *client)
{
  assert(!client->closing);
  client->closing = true;
  graph_client_cancel_queued(client);
  uv_close((uv_handle_t *) &client->kick, graph_client_kick_closed);
}
