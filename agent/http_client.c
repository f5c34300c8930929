/* SPDX-License-Identifier: MIT */
/* libcurl's multi interface on the libuv loop (see include/http_client.h):
 * curl tells us which sockets to watch and when to wake it, uv_poll and a
 * uv_timer do the watching, and finished transfers are reported from the
 * loop, never from inside a call the caller made. */
#include "http_client.h"

#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "xalloc.h"

/* A response body larger than this fails the transfer: Graph answers are
 * small JSON documents, and a runaway body must not eat the agent. */
#define HTTP_CLIENT_MAX_BODY ((size_t) 16 * 1024 * 1024)

/* Whole-transfer timeout when the request gives none. */
#define HTTP_CLIENT_DEFAULT_TIMEOUT_MS 60000L

/* Connecting (TCP and TLS) must not take longer than this. */
#define HTTP_CLIENT_CONNECT_TIMEOUT_MS 15000L

/* TCP keepalive probes on idle pooled connections, in seconds. */
#define HTTP_CLIENT_KEEPALIVE_IDLE 60L
#define HTTP_CLIENT_KEEPALIVE_INTERVAL 30L

struct http_transfer {
  struct http_client *client;
  CURL *easy;
  struct curl_slist *headers;
  char *request_body;   /* our copy, alive until the transfer ends */
  int body_fd;          /* request body read from a file, or -1 */
  uint64_t body_offset; /* next file offset to send */
  uint64_t body_left;   /* bytes of the file still to send */
  char *body;           /* response body, NUL-terminated */
  size_t body_len;
  size_t body_cap;
  bool body_too_large;
  http_client_done_cb done;
  void *arg;
  char errbuf[CURL_ERROR_SIZE];
  struct http_transfer *prev;
  struct http_transfer *next;
};

/* One watched socket; curl_multi_assign() ties it to curl's socket. */
struct http_socket {
  uv_poll_t poll;
  struct http_client *client;
  curl_socket_t fd;
  struct http_socket *prev;
  struct http_socket *next;
};

struct http_client {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer; /* curl's timeout, started with 0 to defer work */
  struct http_transfer *transfers; /* in progress */
  size_t active;
  struct http_socket *sockets; /* being polled */
  unsigned open_handles;       /* uv handles not yet through their close cb */
  bool closing;
};

static void http_client_process(struct http_client *client, curl_socket_t fd,
                                int events);

/* Frees the client once the last of its uv handles has closed. */
static void http_client_handle_closed(struct http_client *client)
{
  assert(client->open_handles > 0);
  if (--client->open_handles > 0)
    return;
  free(client);
  curl_global_cleanup();
}

static void http_client_timer_closed(uv_handle_t *handle)
{
  http_client_handle_closed(handle->data);
}

static void http_socket_closed(uv_handle_t *handle)
{
  struct http_socket *sock = handle->data;
  struct http_client *client = sock->client;

  free(sock);
  http_client_handle_closed(client);
}

static void http_socket_unlink(struct http_socket *sock)
{
  struct http_client *client = sock->client;

  if (sock->prev)
    sock->prev->next = sock->next;
  else
    client->sockets = sock->next;
  if (sock->next)
    sock->next->prev = sock->prev;
  sock->prev = sock->next = NULL;
}

/* Stops watching a socket; the struct is freed in its close callback. */
static void http_socket_close(struct http_socket *sock)
{
  http_socket_unlink(sock);
  uv_close((uv_handle_t *) &sock->poll, http_socket_closed);
}

static void http_socket_on_poll(uv_poll_t *poll, int status, int events)
{
  struct http_socket *sock = poll->data;
  int flags = 0;

  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  http_client_process(sock->client, sock->fd, flags);
}

static struct http_socket *http_socket_new(struct http_client *client,
                                           curl_socket_t fd)
{
  struct http_socket *sock = xcalloc(1, sizeof(*sock));
  int rc;

  rc = uv_poll_init_socket(client->loop, &sock->poll, fd);
  if (rc < 0) {
    log_error("- http poll_init_failed fd=%d error=%s", (int) fd,
              uv_strerror(rc));
    free(sock);
    return NULL;
  }
  sock->poll.data = sock;
  sock->client = client;
  sock->fd = fd;
  client->open_handles++;
  sock->next = client->sockets;
  if (client->sockets)
    client->sockets->prev = sock;
  client->sockets = sock;
  return sock;
}

/* CURLMOPT_SOCKETFUNCTION: curl says which events it wants on a socket. */
static int http_client_on_socket(CURL *easy, curl_socket_t fd, int what,
                                 void *userp, void *socketp)
{
  struct http_client *client = userp;
  struct http_socket *sock = socketp;
  int events = 0;

  /* During close every poll handle is closed by http_client_close itself. */
  if (client->closing)
    return 0;

  if (what == CURL_POLL_REMOVE) {
    if (sock) {
      curl_multi_assign(client->multi, fd, NULL);
      http_socket_close(sock);
    }
    return 0;
  }

  if (!sock) {
    sock = http_socket_new(client, fd);
    if (!sock)
      return -1;
    curl_multi_assign(client->multi, fd, sock);
  }
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  uv_poll_start(&sock->poll, events, http_socket_on_poll);
  return 0;
}

static void http_client_on_timer(uv_timer_t *timer)
{
  http_client_process(timer->data, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_TIMERFUNCTION. A timeout of 0 still goes through the uv timer,
 * so curl never does work (and completes transfers) inside the caller's
 * curl_multi_add_handle(), that is inside http_client_send(). */
static int http_client_on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
  struct http_client *client = userp;

  if (client->closing)
    return 0;
  if (timeout_ms < 0)
    uv_timer_stop(&client->timer);
  else
    uv_timer_start(&client->timer, http_client_on_timer, (uint64_t) timeout_ms,
                   0);
  return 0;
}

static size_t http_transfer_on_write(char *data, size_t size, size_t nmemb,
                                     void *userp)
{
  struct http_transfer *t = userp;
  size_t len = size * nmemb;

  if (len > HTTP_CLIENT_MAX_BODY - t->body_len) {
    t->body_too_large = true;
    return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
  }
  if (t->body_len + len + 1 > t->body_cap) {
    size_t cap = t->body_cap ? t->body_cap : 4096;

    while (cap < t->body_len + len + 1)
      cap *= 2;
    t->body = xrealloc(t->body, cap);
    t->body_cap = cap;
  }
  memcpy(t->body + t->body_len, data, len);
  t->body_len += len;
  t->body[t->body_len] = '\0';
  return len;
}

/* Parses a Retry-After value: delta seconds, which Graph sends with a
 * fraction ("2.128"), or an HTTP date. Returns 0 and the delay in seconds
 * (never negative), or -EINVAL. */
static int http_client_retry_after_parse(const char *value, double *out)
{
  const char *p = value;
  double seconds = 0;
  double scale = 0.1;

  while (*p == ' ' || *p == '\t')
    p++;
  if (*p >= '0' && *p <= '9') {
    /* Digits by hand rather than strtod(), whose decimal point follows the
     * locale. */
    for (; *p >= '0' && *p <= '9'; p++)
      seconds = seconds * 10 + (*p - '0');
    if (*p == '.') {
      for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
        seconds += (*p - '0') * scale;
    }
    while (*p == ' ' || *p == '\t')
      p++;
    if (*p != '\0')
      return -EINVAL;
    *out = seconds;
    return 0;
  }

  time_t when = curl_getdate(p, NULL);

  if (when == (time_t) -1)
    return -EINVAL;
  seconds = difftime(when, time(NULL));
  *out = seconds > 0 ? seconds : 0;
  return 0;
}

/* Reads the headers we report from the last response curl received. */
static void http_transfer_headers(struct http_transfer *t,
                                  struct http_response *resp)
{
  struct curl_header *h = NULL;

  resp->retry_after = -1;
  resp->location = NULL;
  if (curl_easy_header(t->easy, "Retry-After", 0, CURLH_HEADER, -1, &h)
          == CURLHE_OK
      && http_client_retry_after_parse(h->value, &resp->retry_after) < 0) {
    log_debug("- http bad_retry_after value_len=%zu", strlen(h->value));
    resp->retry_after = -1;
  }
  if (curl_easy_header(t->easy, "Location", 0, CURLH_HEADER, -1, &h)
      == CURLHE_OK)
    resp->location = xstrdup(h->value);
}

static void http_transfer_unlink(struct http_transfer *t)
{
  struct http_client *client = t->client;

  if (t->prev)
    t->prev->next = t->next;
  else
    client->transfers = t->next;
  if (t->next)
    t->next->prev = t->prev;
  t->prev = t->next = NULL;
  assert(client->active > 0);
  client->active--;
}

static void http_transfer_free(struct http_transfer *t)
{
  if (t->body_fd >= 0)
    close(t->body_fd);
  curl_easy_cleanup(t->easy);
  curl_slist_free_all(t->headers);
  free(t->request_body);
  free(t->body);
  free(t);
}

/* Removes a finished (or aborted) transfer from the client, reports it and
 * frees it. The callback may send new requests or close the client. */
static void http_transfer_finish(struct http_transfer *t, CURLcode result)
{
  struct http_response resp = { 0 };

  curl_multi_remove_handle(t->client->multi, t->easy);
  http_transfer_unlink(t);

  resp.curl_error = (int) result;
  resp.retry_after = -1;
  if (result == CURLE_OK) {
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &resp.status);
    http_transfer_headers(t, &resp);
  } else if (t->body_too_large || result == CURLE_FILESIZE_EXCEEDED) {
    /* Past the limit while reading, or told so by Content-Length up
     * front (CURLOPT_MAXFILESIZE): the same answer either way. */
    resp.too_large = true;
    snprintf(resp.curl_message, sizeof(resp.curl_message),
             "response body exceeds the %zu byte limit", HTTP_CLIENT_MAX_BODY);
  } else {
    snprintf(resp.curl_message, sizeof(resp.curl_message), "%s",
             t->errbuf[0] ? t->errbuf : curl_easy_strerror(result));
  }
  resp.body = t->body ? t->body : "";
  resp.body_len = t->body_len;

  t->done(t->arg, &resp);
  free(resp.location);
  http_transfer_free(t);
}

/* Hands socket activity or a timeout to curl, then reports every transfer
 * that has finished. */
static void http_client_process(struct http_client *client, curl_socket_t fd,
                                int events)
{
  int running = 0;
  int pending = 0;
  CURLMsg *msg;

  if (client->closing)
    return;
  curl_multi_socket_action(client->multi, fd, events, &running);

  while (!client->closing
         && (msg = curl_multi_info_read(client->multi, &pending)) != NULL) {
    struct http_transfer *t = NULL;

    if (msg->msg != CURLMSG_DONE)
      continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
    assert(t && t->easy == msg->easy_handle);
    http_transfer_finish(t, msg->data.result);
  }
}

int http_client_new(uv_loop_t *loop, struct http_client **out)
{
  struct http_client *client;
  int rc;

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return -EIO;
  client = xcalloc(1, sizeof(*client));
  client->loop = loop;
  client->multi = curl_multi_init();
  if (!client->multi) {
    rc = -ENOMEM;
    goto out;
  }
  rc = uv_timer_init(loop, &client->timer);
  if (rc < 0)
    goto out;
  client->timer.data = client;
  client->open_handles = 1;

  curl_multi_setopt(client->multi, CURLMOPT_SOCKETFUNCTION,
                    http_client_on_socket);
  curl_multi_setopt(client->multi, CURLMOPT_SOCKETDATA, client);
  curl_multi_setopt(client->multi, CURLMOPT_TIMERFUNCTION,
                    http_client_on_curl_timer);
  curl_multi_setopt(client->multi, CURLMOPT_TIMERDATA, client);
  *out = client;
  return 0;

out:
  if (client->multi)
    curl_multi_cleanup(client->multi);
  free(client);
  curl_global_cleanup();
  return rc;
}

/* CURLOPT_READFUNCTION for a body sent from a file: reads the next piece
 * with pread, so curl's upload buffer is all the memory it takes. A file
 * that shrank under us aborts the transfer. */
static size_t http_transfer_on_read(char *buf, size_t size, size_t nitems,
                                    void *userp)
{
  struct http_transfer *t = userp;
  size_t want = size * nitems;
  ssize_t n;

  if (want > t->body_left)
    want = (size_t) t->body_left;
  if (want == 0)
    return 0;
  do
    n = pread(t->body_fd, buf, want, (off_t) t->body_offset);
  while (n < 0 && errno == EINTR);
  if (n <= 0)
    return CURL_READFUNC_ABORT;
  t->body_offset += (uint64_t) n;
  t->body_left -= (uint64_t) n;
  return (size_t) n;
}

/* Streams the body from req->body_file; returns 0 or a negative errno. */
static int http_transfer_set_file_body(struct http_transfer *t,
                                       const struct http_request *req)
{
  CURL *easy = t->easy;

  t->body_fd = open(req->body_file, O_RDONLY | O_CLOEXEC);
  if (t->body_fd < 0)
    return -errno;
  t->body_offset = req->body_offset;
  t->body_left = req->body_len;
  curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(easy, CURLOPT_READFUNCTION, http_transfer_on_read);
  curl_easy_setopt(easy, CURLOPT_READDATA, t);
  curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t) req->body_len);
  t->headers = curl_slist_append(t->headers, "Expect:");
  if (strcmp(req->method, "PUT") != 0)
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);
  return 0;
}

/* Sets the method and body; curl's defaults would turn a body into a POST
 * and add "Expect: 100-continue", which costs a round trip. */
static void http_transfer_set_method(struct http_transfer *t,
                                     const struct http_request *req)
{
  CURL *easy = t->easy;
  bool has_body = req->body != NULL;

  if (strcmp(req->method, "GET") == 0 && !has_body) {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    return;
  }
  if (strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0
      || strcmp(req->method, "PATCH") == 0)
    has_body = true; /* an empty body still sends Content-Length: 0 */
  if (has_body) {
    t->request_body = xmalloc(req->body_len + 1);
    if (req->body_len)
      memcpy(t->request_body, req->body, req->body_len);
    t->request_body[req->body_len] = '\0';
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, t->request_body);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t) req->body_len);
    t->headers = curl_slist_append(t->headers, "Expect:");
  }
  if (strcmp(req->method, "POST") != 0 || !has_body)
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);
}

static void http_transfer_set_options(struct http_transfer *t,
                                      const struct http_request *req)
{
  CURL *easy = t->easy;
  long timeout
      = req->timeout_ms > 0 ? req->timeout_ms : HTTP_CLIENT_DEFAULT_TIMEOUT_MS;

  curl_easy_setopt(easy, CURLOPT_URL, req->url);
  curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->errbuf);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, timeout);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                   timeout < HTTP_CLIENT_CONNECT_TIMEOUT_MS
                       ? timeout
                       : HTTP_CLIENT_CONNECT_TIMEOUT_MS);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPIDLE, HTTP_CLIENT_KEEPALIVE_IDLE);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPINTVL, HTTP_CLIENT_KEEPALIVE_INTERVAL);
  curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                   (curl_off_t) HTTP_CLIENT_MAX_BODY);
  curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, http_transfer_on_write);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, t);
  /* libcurl sends a request again, unasked, when a reused connection dies
   * before any answer came; a POST could then run twice (a sendMail Graph
   * took, whose reply was lost, would go out again). A POST takes a fresh
   * connection, which curl never resends on. */
  if (strcmp(req->method, "POST") == 0)
    curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, 1L);
}

int http_client_send(struct http_client *client, const struct http_request *req,
                     http_client_done_cb done, void *arg)
{
  struct http_transfer *t;

  assert(req->method && req->url && done);
  if (client->closing)
    return -ECANCELED;

  t = xcalloc(1, sizeof(*t));
  t->client = client;
  t->done = done;
  t->arg = arg;
  t->easy = curl_easy_init();
  if (!t->easy) {
    free(t);
    return -ENOMEM;
  }
  t->body_fd = -1;
  http_transfer_set_options(t, req);
  if (req->body_file) {
    int rc = http_transfer_set_file_body(t, req);

    if (rc < 0) {
      http_transfer_free(t);
      return rc;
    }
  } else {
    http_transfer_set_method(t, req);
  }
  for (size_t i = 0; req->headers && req->headers[i]; i++)
    t->headers = curl_slist_append(t->headers, req->headers[i]);
  if (t->headers)
    curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);

  if (curl_multi_add_handle(client->multi, t->easy) != CURLM_OK) {
    http_transfer_free(t);
    return -EIO;
  }
  t->next = client->transfers;
  if (client->transfers)
    client->transfers->prev = t;
  client->transfers = t;
  client->active++;
  return 0;
}

size_t http_client_active(const struct http_client *client)
{
  return client->active;
}

void http_client_close(struct http_client *client)
{
  struct http_transfer *t;

  if (client->closing)
    return;

  /* Abort first, while curl can still tell us nothing: the socket and
   * timer callbacks ignore a closing client. */
  client->closing = true;
  while ((t = client->transfers) != NULL)
    http_transfer_finish(t, CURLE_ABORTED_BY_CALLBACK);

  while (client->sockets) {
    curl_multi_assign(client->multi, client->sockets->fd, NULL);
    http_socket_close(client->sockets);
  }
  curl_multi_cleanup(client->multi);
  client->multi = NULL;
  uv_close((uv_handle_t *) &client->timer, http_client_timer_closed);
}
