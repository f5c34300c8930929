/* SPDX-License-Identifier: MIT */
/* The HTTP/1.1 listener: libuv connections, http-parser for requests, one
 * exchange at a time per connection so that pipelined answers stay in
 * order, and every limit answered with a precise status and reason. */
#include "http_server.h"

#include <assert.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <http_parser.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "xalloc.h"

#define HTTP_READ_BUFFER_MAX 65536 /* unparsed input held per connection */
#define HTTP_WRITE_QUEUE_MAX                                                   \
  (1u << 20)                /* queued answer bytes: stop parsing               \
                             */
#define HTTP_LINGER_MS 2000 /* reading to discard after the final answer */
#define HTTP_SERVER_DRAIN_MS 10000 /* shutdown wait for pending answers */
#define HTTP_RETRY_AFTER_S 5       /* advertised with 503 at max connections */
#define HTTP_LISTEN_BACKLOG 128
#define HTTP_LOG_PATH_MAX 256  /* escaped path bytes in the access line */
#define HTTP_HEADER_OVERHEAD 4 /* ": " and CRLF counted per header field */
/* Longest request target: RFC 9110 4.1 asks for at least 8000 octets. */
#define HTTP_TARGET_MAX 8192

enum http_conn_state {
  HTTP_CONN_IDLE,     /* waiting for the first byte of a request */
  HTTP_CONN_READING,  /* a request has begun and is not complete */
  HTTP_CONN_HANDLING, /* a complete request is with the handler */
  HTTP_CONN_CLOSING,  /* final answer queued; input is discarded */
  HTTP_CONN_CLOSED,   /* uv_close() called on both handles */
};

static const char *const http_conn_state_names[] = {
  [HTTP_CONN_IDLE] = "idle",         [HTTP_CONN_READING] = "reading",
  [HTTP_CONN_HANDLING] = "handling", [HTTP_CONN_CLOSING] = "closing",
  [HTTP_CONN_CLOSED] = "closed",
};

struct http_header {
  char *name;
  char *value;
};

struct http_exchange {
  struct http_server_request req; /* points into the fields below */
  struct http_conn *conn;         /* NULL once the connection is gone */
  char *target;
  size_t target_len;
  char *path;
  char *query;
  struct http_header *headers;
  size_t nheaders;
  char *body;
  size_t body_len;
  size_t body_cap;
  char **decoded; /* query values handed out, freed with the exchange */
  size_t ndecoded;
  http_exchange_cancel_cb cancel_cb;
  void *cancel_arg;
  uint64_t start_ns; /* uv_hrtime() at the first byte */
  bool head;         /* HEAD: answer without body */
  char peer[64];
  char conn_id[24];
};

struct http_write {
  uv_write_t req;
  char *data;
};

struct http_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown;
  struct http_server *server;
  struct http_conn *prev;
  struct http_conn *next;
  enum http_conn_state state;
  http_parser parser;
  char *in; /* HTTP_READ_BUFFER_MAX bytes, in_len of them unparsed */
  size_t in_len;
  struct http_exchange *ex; /* request being read or handled */
  size_t header_bytes;
  bool in_value;     /* last header callback was a value */
  bool message_done; /* parser paused at the end of a request */
  bool keep_alive;   /* for the request in hand */
  bool reading;      /* uv_read_start() in effect */
  bool pumping;      /* inside http_conn_pump(): no re-entry */
  int reject_status; /* set by a parser callback that refuses */
  const char *reject_reason;
  int handles_open;
  char id[24];
  char peer[64];
};

struct http_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_timer_t drain;
  struct http_server_limits limits;
  http_server_handler_cb handler;
  void *arg;
  struct http_conn *conns;
  unsigned nconns;
  unsigned long next_id;
  int handles_open;
  bool closing;
  bool drain_closed;
};

static void http_conn_close(struct http_conn *conn);
static void http_conn_pump(struct http_conn *conn);
static void http_conn_reject(struct http_conn *conn, int status,
                             const char *reason);
static void http_server_conn_gone(struct http_server *server);

/* ---- small helpers -------------------------------------------------- */

struct http_buf {
  char *data;
  size_t len;
  size_t cap;
};

static void http_buf_append(struct http_buf *b, const char *data, size_t len)
{
  if (b->len + len + 1 > b->cap) {
    b->cap = (b->len + len + 1) * 2;
    b->data = xrealloc(b->data, b->cap);
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
}

static void http_buf_printf(struct http_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void http_buf_printf(struct http_buf *b, const char *fmt, ...)
{
  va_list ap;
  char *text;

  va_start(ap, fmt);
  text = xvasprintf(fmt, ap);
  va_end(ap);
  http_buf_append(b, text, strlen(text));
  free(text);
}

/* Appends len bytes to a heap string, keeping it NUL-terminated. */
static void http_str_append(char **str, size_t *slen, const char *at,
                            size_t len)
{
  *str = xrealloc(*str, *slen + len + 1);
  memcpy(*str + *slen, at, len);
  *slen += len;
  (*str)[*slen] = '\0';
}

/* IMF-fixdate (RFC 9110 5.6.7) without the locale that strftime uses. */
static void http_date_format(char *buf, size_t size)
{
  static const char days[7][4]
      = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
  static const char months[12][4]
      = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
  time_t now = time(NULL);
  struct tm tm;

  gmtime_r(&now, &tm);
  snprintf(buf, size, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
           tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
           tm.tm_min, tm.tm_sec);
}

static int http_hex_value(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int http_percent_decode(const char *text, size_t len, int plus_is_space,
                        char **out)
{
  char *dec = xmalloc(len + 1);
  size_t n = 0;

  for (size_t i = 0; i < len; i++) {
    char c = text[i];

    if (c == '%') {
      int hi = i + 2 < len ? http_hex_value(text[i + 1]) : -1;
      int lo = hi >= 0 ? http_hex_value(text[i + 2]) : -1;

      if (lo < 0)
        goto bad;
      c = (char) (hi << 4 | lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    if (c == '\0')
      goto bad;
    dec[n++] = c;
  }
  dec[n] = '\0';
  *out = dec;
  return 0;

bad:
  free(dec);
  return -EINVAL;
}

/* ---- exchanges ---------------------------------------------------- */

static struct http_exchange *http_exchange_new(struct http_conn *conn)
{
  struct http_exchange *ex = xcalloc(1, sizeof(*ex));

  ex->conn = conn;
  ex->start_ns = uv_hrtime();
  memcpy(ex->peer, conn->peer, sizeof(ex->peer));
  memcpy(ex->conn_id, conn->id, sizeof(ex->conn_id));
  ex->req.peer = ex->peer;
  ex->req.conn_id = ex->conn_id;
  ex->req.method = "-";
  ex->req.path = "-";
  ex->req.query = "";
  ex->req.target = "";
  ex->body = xmalloc(1);
  ex->body[0] = '\0';
  ex->body_cap = 1;
  return ex;
}

static void http_exchange_free(struct http_exchange *ex)
{
  for (size_t i = 0; i < ex->nheaders; i++) {
    /* The credentials of Basic authorization are as good as a password. */
    if (ex->headers[i].value != NULL
        && strcasecmp(ex->headers[i].name, "Authorization") == 0)
      gnutls_memset(ex->headers[i].value, 0, strlen(ex->headers[i].value));
    free(ex->headers[i].name);
    free(ex->headers[i].value);
  }
  free(ex->headers);
  for (size_t i = 0; i < ex->ndecoded; i++)
    free(ex->decoded[i]);
  free(ex->decoded);
  free(ex->target);
  free(ex->path);
  free(ex->query);
  free(ex->body);
  free(ex);
}

const struct http_server_request *
http_exchange_request(const struct http_exchange *ex)
{
  return &ex->req;
}

const char *http_exchange_header(const struct http_exchange *ex,
                                 const char *name)
{
  for (size_t i = 0; i < ex->nheaders; i++) {
    if (strcasecmp(ex->headers[i].name, name) == 0)
      return ex->headers[i].value;
  }
  return NULL;
}

static const char *http_exchange_keep(struct http_exchange *ex, char *value)
{
  ex->decoded = xrealloc(ex->decoded, (ex->ndecoded + 1) * sizeof(char *));
  ex->decoded[ex->ndecoded++] = value;
  return value;
}

int http_exchange_query(struct http_exchange *ex, const char *name,
                        const char **value)
{
  const char *p = ex->req.query;

  while (*p != '\0') {
    size_t len = strcspn(p, "&");
    const char *eq = memchr(p, '=', len);
    size_t klen = eq != NULL ? (size_t) (eq - p) : len;
    char *key = NULL;
    char *val = NULL;
    bool match;

    if (http_percent_decode(p, klen, 1, &key) < 0)
      return -EINVAL;
    match = strcmp(key, name) == 0;
    free(key);
    if (match) {
      if (eq == NULL)
        val = xstrdup("");
      else if (http_percent_decode(eq + 1, len - klen - 1, 1, &val) < 0)
        return -EINVAL;
      *value = http_exchange_keep(ex, val);
      return 0;
    }
    p += len;
    if (*p == '&')
      p++;
  }
  return -ENOENT;
}

int http_exchange_basic_auth(const struct http_exchange *ex, char *user,
                             size_t userlen, char *pass, size_t passlen)
{
  const char *value = http_exchange_header(ex, "Authorization");
  gnutls_datum_t in;
  gnutls_datum_t dec = { NULL, 0 };
  const char *colon;
  size_t ulen;
  size_t plen;
  int rc;

  if (value == NULL || strncasecmp(value, "Basic", 5) != 0
      || (value[5] != ' ' && value[5] != '\t'))
    return -ENOENT;
  value += 5;
  value += strspn(value, " \t");
  in.data = (unsigned char *) value;
  in.size = (unsigned) strlen(value);
  if (in.size == 0 || gnutls_base64_decode2(&in, &dec) < 0)
    return -EINVAL;

  colon = memchr(dec.data, ':', dec.size);
  if (colon == NULL || memchr(dec.data, '\0', dec.size) != NULL) {
    rc = -EINVAL;
    goto out;
  }
  ulen = (size_t) (colon - (const char *) dec.data);
  plen = dec.size - ulen - 1;
  if (ulen >= userlen || plen >= passlen) {
    rc = -ENOSPC;
    goto out;
  }
  memcpy(user, dec.data, ulen);
  user[ulen] = '\0';
  memcpy(pass, colon + 1, plen);
  pass[plen] = '\0';
  rc = 0;

out:
  gnutls_memset(dec.data, 0, dec.size);
  gnutls_free(dec.data);
  return rc;
}

int http_exchange_on_cancel(struct http_exchange *ex,
                            http_exchange_cancel_cb cb, void *arg)
{
  if (ex->conn == NULL)
    return -ECONNRESET;
  ex->cancel_cb = cb;
  ex->cancel_arg = arg;
  return 0;
}

/* The access line: one per request, whatever answered it. */
static void http_exchange_log(const struct http_exchange *ex, int status,
                              size_t bytes, const char *note)
{
  char path[HTTP_LOG_PATH_MAX];
  unsigned long long ms = (uv_hrtime() - ex->start_ns) / 1000000u;

  log_escape(path, sizeof(path), ex->req.path, strlen(ex->req.path));
  log_info("%s http request method=%s path=%s status=%d bytes=%zu ms=%llu%s",
           ex->conn_id, ex->req.method, path, status, bytes, ms, note);
}

/* ---- connection state and output ---------------------------------- */

static void http_conn_enter_state(struct http_conn *conn,
                                  enum http_conn_state state)
{
  log_trace(LOG_TRACE_HTTP, "%s http state from=%s to=%s", conn->id,
            http_conn_state_names[conn->state], http_conn_state_names[state]);
  conn->state = state;
}

static void http_conn_timer_cb(uv_timer_t *timer);

static void http_conn_timer_start(struct http_conn *conn, uint64_t ms)
{
  uv_timer_start(&conn->timer, http_conn_timer_cb, ms, 0);
}

static void http_conn_alloc_cb(uv_handle_t *handle, size_t suggested,
                               uv_buf_t *buf)
{
  struct http_conn *conn = handle->data;

  (void) suggested;
  *buf = uv_buf_init(conn->in + conn->in_len,
                     (unsigned) (HTTP_READ_BUFFER_MAX - conn->in_len));
}

static void http_conn_read_cb(uv_stream_t *stream, ssize_t nread,
                              const uv_buf_t *buf);

/* Reads while there is room; in CLOSING everything read is discarded. */
static void http_conn_update_reading(struct http_conn *conn)
{
  bool want
      = conn->state != HTTP_CONN_CLOSED && conn->in_len < HTTP_READ_BUFFER_MAX;

  if (want && !conn->reading) {
    if (uv_read_start((uv_stream_t *) &conn->tcp, http_conn_alloc_cb,
                      http_conn_read_cb)
        == 0)
      conn->reading = true;
  } else if (!want && conn->reading) {
    uv_read_stop((uv_stream_t *) &conn->tcp);
    conn->reading = false;
  }
}

static void http_conn_written(uv_write_t *req, int status)
{
  struct http_write *w = (struct http_write *) req;
  struct http_conn *conn = req->handle->data;

  free(w->data);
  free(w);
  if (conn->state == HTTP_CONN_CLOSED)
    return;
  if (status < 0) {
    log_debug("%s http write-failed error=%s", conn->id, uv_strerror(status));
    http_conn_close(conn);
    return;
  }
  if (conn->state == HTTP_CONN_IDLE) {
    /* The client is reading: that is progress, and room to parse more. */
    http_conn_timer_start(conn, conn->server->limits.idle_timeout_ms);
    http_conn_pump(conn);
  }
}

/* Queues data (which it takes) for writing; on failure closes the
 * connection, so callers check the state afterwards. */
static void http_conn_write(struct http_conn *conn, char *data, size_t len)
{
  struct http_write *w = xmalloc(sizeof(*w));
  uv_buf_t buf = uv_buf_init(data, (unsigned) len);
  int rc;

  w->data = data;
  rc = uv_write(&w->req, (uv_stream_t *) &conn->tcp, &buf, 1,
                http_conn_written);
  if (rc < 0) {
    free(data);
    free(w);
    log_debug("%s http write-failed error=%s", conn->id, uv_strerror(rc));
    http_conn_close(conn);
  }
}

/* Builds the status line and headers, then the body unless head. */
static void http_conn_send(struct http_conn *conn, int status,
                           const char *const *headers, const char *body,
                           size_t len, bool head, bool keep_alive,
                           unsigned short http_minor)
{
  struct http_buf b = { NULL, 0, 0 };
  char date[64];
  bool has_length = status >= 200 && status != 204 && status != 304;

  http_date_format(date, sizeof(date));
  http_buf_printf(&b, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
                  http_status_str((enum http_status) status), date);
  if (has_length)
    http_buf_printf(&b, "Content-Length: %zu\r\n", len);
  if (!keep_alive)
    http_buf_printf(&b, "Connection: close\r\n");
  else if (http_minor == 0)
    http_buf_printf(&b, "Connection: keep-alive\r\n");
  for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
    http_buf_printf(&b, "%s\r\n", headers[i]);
  http_buf_append(&b, "\r\n", 2);
  if (!head && has_length)
    http_buf_append(&b, body, len);
  http_conn_write(conn, b.data, b.len);
}

static void http_conn_shutdown_cb(uv_shutdown_t *req, int status)
{
  struct http_conn *conn = req->data;

  if (conn->state != HTTP_CONN_CLOSING)
    return;
  if (status < 0) {
    http_conn_close(conn);
    return;
  }
  /* Our side is done; read what the client still sends so that the kernel
   * does not reset the connection before it has read our answer. */
  http_conn_timer_start(conn, HTTP_LINGER_MS);
}

/* After the final answer: shut our side down once the writes are out. */
static void http_conn_finish(struct http_conn *conn)
{
  if (conn->state == HTTP_CONN_CLOSED || conn->state == HTTP_CONN_CLOSING)
    return;
  http_conn_enter_state(conn, HTTP_CONN_CLOSING);
  conn->in_len = 0;
  conn->shutdown.data = conn;
  if (uv_shutdown(&conn->shutdown, (uv_stream_t *) &conn->tcp,
                  http_conn_shutdown_cb)
      < 0) {
    http_conn_close(conn);
    return;
  }
  http_conn_timer_start(conn, conn->server->limits.idle_timeout_ms);
  http_conn_update_reading(conn);
}

/* The server refuses the request in hand (or the connection): a short text
 * body says why, the access line records it, and the connection closes. */
static void http_conn_reject(struct http_conn *conn, int status,
                             const char *reason)
{
  struct http_exchange *ex = conn->ex;
  char *body = xasprintf("%s\n", reason);
  size_t len = strlen(body);
  bool head = ex != NULL && ex->head;
  char retry[32];
  const char *headers[]
      = { "Content-Type: text/plain; charset=utf-8", NULL, NULL };

  assert(conn->state != HTTP_CONN_HANDLING && conn->state != HTTP_CONN_CLOSED);
  log_warn("%s http refused peer=%s status=%d reason=\"%s\"", conn->id,
           conn->peer, status, reason);
  if (status == 503) {
    snprintf(retry, sizeof(retry), "Retry-After: %d", HTTP_RETRY_AFTER_S);
    headers[1] = retry;
  }

  /* Detached first: a failed write closes the connection. */
  conn->ex = NULL;
  http_conn_send(conn, status, headers, body, len, head, false, 1);
  if (ex != NULL) {
    http_exchange_log(ex, status, head ? 0 : len, "");
    http_exchange_free(ex);
  }
  free(body);
  http_conn_finish(conn);
}

static void http_conn_handle_closed(uv_handle_t *handle)
{
  struct http_conn *conn = handle->data;
  struct http_server *server = conn->server;

  if (--conn->handles_open > 0)
    return;
  if (conn->prev != NULL)
    conn->prev->next = conn->next;
  else
    server->conns = conn->next;
  if (conn->next != NULL)
    conn->next->prev = conn->prev;
  server->nconns--;
  free(conn->in);
  free(conn);
  http_server_conn_gone(server);
}

/* Closes both handles; an unanswered exchange is cancelled and stays with
 * the handler until it responds. Safe to call more than once. */
static void http_conn_close(struct http_conn *conn)
{
  struct http_exchange *ex = conn->ex;
  enum http_conn_state was = conn->state;

  if (was == HTTP_CONN_CLOSED)
    return;
  http_conn_enter_state(conn, HTTP_CONN_CLOSED);
  conn->ex = NULL;
  uv_close((uv_handle_t *) &conn->timer, http_conn_handle_closed);
  uv_close((uv_handle_t *) &conn->tcp, http_conn_handle_closed);

  if (ex == NULL)
    return;
  if (was != HTTP_CONN_HANDLING) {
    http_exchange_free(ex);
    return;
  }
  ex->conn = NULL;
  log_debug("%s http cancelled peer=%s", conn->id, conn->peer);
  /* The callback may respond, which frees ex: nothing touches it after. */
  if (ex->cancel_cb != NULL)
    ex->cancel_cb(ex->cancel_arg, ex);
}

/* ---- parser callbacks ------------------------------------------- */

static bool http_conn_count_header(struct http_conn *conn, size_t len)
{
  conn->header_bytes += len;
  if (conn->header_bytes > conn->server->limits.max_header_size) {
    conn->reject_status = 431;
    conn->reject_reason = "request header fields too large";
    return false;
  }
  return true;
}

static int http_on_message_begin(http_parser *p)
{
  struct http_conn *conn = p->data;

  assert(conn->ex == NULL);
  conn->ex = http_exchange_new(conn);
  conn->header_bytes = 0;
  conn->in_value = false;
  http_conn_enter_state(conn, HTTP_CONN_READING);
  http_conn_timer_start(conn, conn->server->limits.request_timeout_ms);
  return 0;
}

static int http_on_url(http_parser *p, const char *at, size_t len)
{
  struct http_conn *conn = p->data;
  struct http_exchange *ex = conn->ex;

  if (ex->target_len + len > HTTP_TARGET_MAX) {
    conn->reject_status = 414;
    conn->reject_reason = "request target too long";
    return -1;
  }
  if (!http_conn_count_header(conn, len))
    return -1;
  http_str_append(&ex->target, &ex->target_len, at, len);
  return 0;
}

static int http_on_header_field(http_parser *p, const char *at, size_t len)
{
  struct http_conn *conn = p->data;
  struct http_exchange *ex = conn->ex;
  struct http_header *h;
  size_t nlen;

  if (!http_conn_count_header(conn, len + HTTP_HEADER_OVERHEAD))
    return -1;
  if (ex->nheaders == 0 || conn->in_value) {
    if (ex->nheaders >= conn->server->limits.max_headers) {
      conn->reject_status = 431;
      conn->reject_reason = "too many request header fields";
      return -1;
    }
    ex->headers
        = xrealloc(ex->headers, (ex->nheaders + 1) * sizeof(*ex->headers));
    ex->headers[ex->nheaders++] = (struct http_header){ xstrdup(""), NULL };
    conn->in_value = false;
  }
  h = &ex->headers[ex->nheaders - 1];
  nlen = strlen(h->name);
  http_str_append(&h->name, &nlen, at, len);
  return 0;
}

static int http_on_header_value(http_parser *p, const char *at, size_t len)
{
  struct http_conn *conn = p->data;
  struct http_header *h = &conn->ex->headers[conn->ex->nheaders - 1];
  size_t vlen;

  if (!http_conn_count_header(conn, len))
    return -1;
  if (h->value == NULL)
    h->value = xstrdup("");
  vlen = strlen(h->value);
  http_str_append(&h->value, &vlen, at, len);
  conn->in_value = true;
  return 0;
}

/* RFC 7230 3.2.6: a field name is a token. */
static bool http_field_name_valid(const char *name)
{
  static const char tchar[] = "!#$%&'*+-.^_`|~";

  if (name[0] == '\0')
    return false;
  for (const char *p = name; *p != '\0'; p++) {
    bool alnum = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                 || (*p >= '0' && *p <= '9');

    if (!alnum && strchr(tchar, *p) == NULL)
      return false;
  }
  return true;
}

/* What http-parser lets through and RFC 7230 refuses: whitespace between a
 * field name and its colon (3.2.4; http-parser takes "Transfer-Encoding :
 * chunked" as chunked, so a proxy and we could disagree on where the body
 * ends) and more than one Host (5.4). Runs before repeated fields are
 * joined. Returns why the request is refused, or NULL. */
static const char *http_exchange_check_fields(const struct http_exchange *ex)
{
  unsigned hosts = 0;

  for (size_t i = 0; i < ex->nheaders; i++) {
    const char *name = ex->headers[i].name;

    if (strpbrk(name, " \t") != NULL)
      return "whitespace between a header field name and its colon";
    if (!http_field_name_valid(name))
      return "invalid header field name";
    if (strcasecmp(name, "Host") == 0 && ++hosts > 1)
      return "more than one Host header";
  }
  return NULL;
}

/* Trims values and joins repeated fields with ", " (RFC 9110 5.3). */
static void http_exchange_fold_headers(struct http_exchange *ex)
{
  size_t kept = 0;

  for (size_t i = 0; i < ex->nheaders; i++) {
    struct http_header *h = &ex->headers[i];
    size_t vlen;
    bool merged = false;

    if (h->value == NULL)
      h->value = xstrdup("");
    vlen = strlen(h->value);
    while (vlen > 0
           && (h->value[vlen - 1] == ' ' || h->value[vlen - 1] == '\t'))
      h->value[--vlen] = '\0';
    for (size_t j = 0; j < kept && !merged; j++) {
      struct http_header *k = &ex->headers[j];
      size_t klen = strlen(k->value);

      if (strcasecmp(k->name, h->name) != 0)
        continue;
      http_str_append(&k->value, &klen, ", ", 2);
      http_str_append(&k->value, &klen, h->value, vlen);
      free(h->name);
      free(h->value);
      merged = true;
    }
    if (!merged)
      ex->headers[kept++] = *h;
  }
  ex->nheaders = kept;
}

/* Splits the target into path and query with http-parser's URL parser;
 * "*" (OPTIONS) and absolute-form targets are accepted. */
static bool http_exchange_split_target(struct http_exchange *ex)
{
  struct http_parser_url u;
  const char *t = ex->target != NULL ? ex->target : "";

  if (strcmp(t, "*") == 0) {
    ex->path = xstrdup("*");
    ex->query = xstrdup("");
    return true;
  }
  http_parser_url_init(&u);
  if (ex->target_len == 0 || ex->target_len > UINT16_MAX
      || http_parser_parse_url(t, ex->target_len, 0, &u) != 0)
    return false;
  if (u.field_set & (1 << UF_PATH))
    ex->path
        = xstrndup(t + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
  else
    ex->path = xstrdup("/");
  if (u.field_set & (1 << UF_QUERY))
    ex->query
        = xstrndup(t + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
  else
    ex->query = xstrdup("");
  return true;
}

static int http_conn_refuse(struct http_conn *conn, int status,
                            const char *reason)
{
  conn->reject_status = status;
  conn->reject_reason = reason;
  return -1;
}

/* Answers "Expect: 100-continue" once the declared size is acceptable. */
static int http_conn_expect(struct http_conn *conn, const char *expect)
{
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  http_parser *p = &conn->parser;

  if (expect == NULL || p->http_minor == 0)
    return 0;
  if (strcasecmp(expect, "100-continue") != 0)
    return http_conn_refuse(conn, 417, "only 100-continue is expected");
  if ((p->flags & F_CHUNKED) || p->content_length > 0)
    http_conn_write(conn, xstrdup(cont), sizeof(cont) - 1);
  return conn->state == HTTP_CONN_CLOSED ? -1 : 0;
}

static int http_on_headers_complete(http_parser *p)
{
  struct http_conn *conn = p->data;
  struct http_exchange *ex = conn->ex;
  const struct http_server_limits *lim = &conn->server->limits;
  const char *bad_fields;

  /* http-parser reads any digit as a version; only HTTP/1.x is spoken. */
  if (p->http_major != 1)
    return http_conn_refuse(conn, 505, "HTTP version not supported");
  ex->req.method = http_method_str((enum http_method) p->method);
  ex->req.http_minor = p->http_minor;
  ex->head = p->method == HTTP_HEAD;
  bad_fields = http_exchange_check_fields(ex);
  if (bad_fields != NULL)
    return http_conn_refuse(conn, 400, bad_fields);
  http_exchange_fold_headers(ex);
  if (p->method == HTTP_CONNECT)
    return http_conn_refuse(conn, 501, "CONNECT is not supported");
  if (!http_exchange_split_target(ex))
    return http_conn_refuse(conn, 400, "malformed request target");
  ex->req.target = ex->target;
  ex->req.path = ex->path;
  ex->req.query = ex->query;
  if (p->http_minor == 1 && http_exchange_header(ex, "Host") == NULL)
    return http_conn_refuse(conn, 400, "missing Host header");

  /* A declared size beyond the limit is refused before reading it. */
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > lim->max_body_size)
    return http_conn_refuse(conn, 413, "request body too large");
  return http_conn_expect(conn, http_exchange_header(ex, "Expect"));
}

static int http_on_body(http_parser *p, const char *at, size_t len)
{
  struct http_conn *conn = p->data;
  struct http_exchange *ex = conn->ex;

  if (ex->body_len + len > conn->server->limits.max_body_size)
    return http_conn_refuse(conn, 413, "request body too large");
  if (ex->body_len + len + 1 > ex->body_cap) {
    ex->body_cap = (ex->body_len + len + 1) * 2;
    ex->body = xrealloc(ex->body, ex->body_cap);
  }
  memcpy(ex->body + ex->body_len, at, len);
  ex->body_len += len;
  ex->body[ex->body_len] = '\0';
  return 0;
}

static int http_on_message_complete(http_parser *p)
{
  struct http_conn *conn = p->data;

  /* One request at a time: the parser stops here until it is answered. */
  conn->message_done = true;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings http_settings = {
  .on_message_begin = http_on_message_begin,
  .on_url = http_on_url,
  .on_header_field = http_on_header_field,
  .on_header_value = http_on_header_value,
  .on_headers_complete = http_on_headers_complete,
  .on_body = http_on_body,
  .on_message_complete = http_on_message_complete,
};

/* ---- input ------------------------------------------------------ */

static void http_conn_parser_reset(struct http_conn *conn)
{
  http_parser_init(&conn->parser, HTTP_REQUEST);
  conn->parser.data = conn;
  conn->message_done = false;
}

/* Maps a parser error that no callback explained to a status. */
static void http_conn_parse_error(struct http_conn *conn, enum http_errno err)
{
  if (err == HPE_HEADER_OVERFLOW)
    http_conn_reject(conn, 431, "request header fields too large");
  else if (err == HPE_INVALID_METHOD)
    http_conn_reject(conn, 501, "unknown request method");
  else
    http_conn_reject(conn, 400, http_errno_description(err));
}

/* Feeds buffered input to the parser; it stops after a complete request
 * (message_done), on an error (the connection is then refused), or when
 * the input is used up. */
static void http_conn_parse(struct http_conn *conn)
{
  size_t n = http_parser_execute(&conn->parser, &http_settings, conn->in,
                                 conn->in_len);
  enum http_errno err = HTTP_PARSER_ERRNO(&conn->parser);

  if (conn->state == HTTP_CONN_CLOSED)
    return;
  assert(n <= conn->in_len);
  memmove(conn->in, conn->in + n, conn->in_len - n);
  conn->in_len -= n;
  if (conn->reject_status != 0)
    http_conn_reject(conn, conn->reject_status, conn->reject_reason);
  else if (err != HPE_OK && err != HPE_PAUSED)
    http_conn_parse_error(conn, err);
}

/* Hands a complete request to the handler, which may answer inside. */
static void http_conn_dispatch(struct http_conn *conn)
{
  struct http_server *server = conn->server;
  struct http_exchange *ex = conn->ex;

  conn->keep_alive = http_should_keep_alive(&conn->parser) && !server->closing;
  http_conn_parser_reset(conn);
  ex->req.body = ex->body;
  ex->req.body_len = ex->body_len;
  uv_timer_stop(&conn->timer);
  http_conn_enter_state(conn, HTTP_CONN_HANDLING);
  server->handler(server->arg, ex);
}

/* Processes buffered requests one by one while the previous one has been
 * answered and the client reads our answers. Re-entry (a handler that
 * answers inside the call) returns at once; the outer loop goes on. */
static void http_conn_pump(struct http_conn *conn)
{
  if (conn->pumping)
    return;
  conn->pumping = true;
  while ((conn->state == HTTP_CONN_IDLE || conn->state == HTTP_CONN_READING)
         && conn->in_len > 0
         && uv_stream_get_write_queue_size((uv_stream_t *) &conn->tcp)
                < HTTP_WRITE_QUEUE_MAX) {
    http_conn_parse(conn);
    if (conn->state == HTTP_CONN_READING && conn->message_done)
      http_conn_dispatch(conn);
  }
  conn->pumping = false;
  http_conn_update_reading(conn);
}

static void http_conn_read_cb(uv_stream_t *stream, ssize_t nread,
                              const uv_buf_t *buf)
{
  struct http_conn *conn = stream->data;

  (void) buf;
  if (nread < 0) {
    if (conn->state == HTTP_CONN_READING || conn->state == HTTP_CONN_HANDLING)
      log_debug("%s http client-closed state=%s error=%s", conn->id,
                http_conn_state_names[conn->state], uv_err_name((int) nread));
    http_conn_close(conn);
    return;
  }
  if (conn->state == HTTP_CONN_CLOSING)
    return;
  conn->in_len += (size_t) nread;
  http_conn_pump(conn);
}

static void http_conn_timer_cb(uv_timer_t *timer)
{
  struct http_conn *conn = timer->data;

  switch (conn->state) {
    case HTTP_CONN_READING:
      http_conn_reject(conn, 408, "request not received in time");
      break;
    case HTTP_CONN_IDLE:
      log_debug("%s http idle-timeout peer=%s", conn->id, conn->peer);
      http_conn_close(conn);
      break;
    case HTTP_CONN_CLOSING:
      http_conn_close(conn);
      break;
    case HTTP_CONN_HANDLING:
    case HTTP_CONN_CLOSED:
      break;
  }
}

/* ---- answering -------------------------------------------------- */

static bool http_headers_valid(const char *const *headers)
{
  for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
    if (strpbrk(headers[i], "\r\n") != NULL || strchr(headers[i], ':') == NULL)
      return false;
  }
  return true;
}

int http_exchange_respond(struct http_exchange *ex, int status,
                          const char *const *headers, const char *body,
                          size_t len)
{
  static const char bad[] = "the server built an invalid answer\n";
  static const char *const bad_headers[]
      = { "Content-Type: text/plain; charset=utf-8", NULL };
  struct http_conn *conn = ex->conn;
  bool keep_alive;

  assert(status >= 200 && status <= 999);
  if (!http_headers_valid(headers)) {
    log_error("%s http invalid-response-header status=%d", ex->conn_id, status);
    status = 500;
    headers = bad_headers;
    body = bad;
    len = sizeof(bad) - 1;
  }
  if (conn == NULL) {
    http_exchange_log(ex, status, 0, " client=gone");
    http_exchange_free(ex);
    return -ECONNRESET;
  }

  assert(conn->ex == ex && conn->state == HTTP_CONN_HANDLING);
  keep_alive = conn->keep_alive && !conn->server->closing;
  conn->ex = NULL;
  http_conn_send(conn, status, headers, body, len, ex->head, keep_alive,
                 ex->req.http_minor);
  http_exchange_log(ex, status, ex->head ? 0 : len, "");
  http_exchange_free(ex);
  if (conn->state == HTTP_CONN_CLOSED)
    return 0;

  if (!keep_alive) {
    http_conn_finish(conn);
    return 0;
  }
  http_conn_enter_state(conn, HTTP_CONN_IDLE);
  http_conn_timer_start(conn, conn->server->limits.idle_timeout_ms);
  http_conn_pump(conn);
  return 0;
}

/* ---- the listener ----------------------------------------------- */

static void http_conn_peer_format(struct http_conn *conn)
{
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  char ip[48] = "?";
  int port = 0;

  if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *) &ss, &len) == 0) {
    if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *) &ss;

      uv_ip6_name(s6, ip, sizeof(ip));
      port = ntohs(s6->sin6_port);
      snprintf(conn->peer, sizeof(conn->peer), "[%s]:%d", ip, port);
      return;
    }
    uv_ip4_name((struct sockaddr_in *) &ss, ip, sizeof(ip));
    port = ntohs(((struct sockaddr_in *) &ss)->sin_port);
  }
  snprintf(conn->peer, sizeof(conn->peer), "%s:%d", ip, port);
}

static void http_server_accept_cb(uv_stream_t *listener, int status)
{
  struct http_server *server = listener->data;
  struct http_conn *conn;

  if (status < 0) {
    log_warn("- http accept-failed error=%s", uv_strerror(status));
    return;
  }
  conn = xcalloc(1, sizeof(*conn));
  conn->server = server;
  conn->in = xmalloc(HTTP_READ_BUFFER_MAX);
  snprintf(conn->id, sizeof(conn->id), "h%lu", ++server->next_id);
  uv_tcp_init(server->loop, &conn->tcp);
  uv_timer_init(server->loop, &conn->timer);
  conn->tcp.data = conn;
  conn->timer.data = conn;
  conn->handles_open = 2;
  conn->next = server->conns;
  if (server->conns != NULL)
    server->conns->prev = conn;
  server->conns = conn;
  server->nconns++;

  if (uv_accept(listener, (uv_stream_t *) &conn->tcp) < 0) {
    http_conn_close(conn);
    return;
  }
  uv_tcp_nodelay(&conn->tcp, 1);
  http_conn_peer_format(conn);
  http_conn_parser_reset(conn);
  log_debug("%s http connect peer=%s", conn->id, conn->peer);

  if (server->nconns > server->limits.max_connections) {
    http_conn_reject(conn, 503, "too many connections, retry later");
    return;
  }
  http_conn_enter_state(conn, HTTP_CONN_IDLE);
  http_conn_timer_start(conn, server->limits.idle_timeout_ms);
  http_conn_update_reading(conn);
}

void http_server_limits_defaults(struct http_server_limits *limits)
{
  *limits = (struct http_server_limits){
    .max_header_size = 16384,
    .max_headers = 100,
    .max_body_size = 4u << 20,
    .max_connections = 64,
    .request_timeout_ms = 30000,
    .idle_timeout_ms = 60000,
  };
}

static void http_server_handle_closed(uv_handle_t *handle)
{
  struct http_server *server = handle->data;

  if (--server->handles_open == 0)
    free(server);
}

/* Called when a connection's memory is gone; the last one lets a closing
 * server go. */
static void http_server_conn_gone(struct http_server *server)
{
  if (server->closing && server->nconns == 0 && !server->drain_closed) {
    server->drain_closed = true;
    uv_close((uv_handle_t *) &server->drain, http_server_handle_closed);
  }
}

static int http_server_bind(struct http_server *server, const char *host,
                            int port)
{
  struct sockaddr_storage ss;
  int rc;

  if (uv_ip4_addr(host, port, (struct sockaddr_in *) &ss) != 0) {
    rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *) &ss);
    if (rc < 0)
      return rc;
  }
  rc = uv_tcp_bind(&server->listener, (struct sockaddr *) &ss, 0);
  if (rc < 0)
    return rc;
  return uv_listen((uv_stream_t *) &server->listener, HTTP_LISTEN_BACKLOG,
                   http_server_accept_cb);
}

int http_server_new(uv_loop_t *loop, const char *host, int port,
                    const struct http_server_limits *limits,
                    http_server_handler_cb handler, void *arg,
                    struct http_server **out)
{
  struct http_server *server = xcalloc(1, sizeof(*server));
  int rc;

  server->loop = loop;
  server->handler = handler;
  server->arg = arg;
  if (limits != NULL)
    server->limits = *limits;
  else
    http_server_limits_defaults(&server->limits);
  uv_tcp_init(loop, &server->listener);
  uv_timer_init(loop, &server->drain);
  server->listener.data = server;
  server->drain.data = server;
  server->handles_open = 2;

  rc = http_server_bind(server, host, port);
  if (rc < 0) {
    log_error("- http listen-failed host=%s port=%d error=%s", host, port,
              uv_strerror(rc));
    server->closing = true;
    server->drain_closed = true;
    uv_close((uv_handle_t *) &server->listener, http_server_handle_closed);
    uv_close((uv_handle_t *) &server->drain, http_server_handle_closed);
    return rc;
  }
  log_info("- http listening host=%s port=%d", host, http_server_port(server));
  *out = server;
  return 0;
}

int http_server_port(const struct http_server *server)
{
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  int rc = uv_tcp_getsockname(&server->listener, (struct sockaddr *) &ss, &len);

  if (rc < 0)
    return rc;
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
  return ntohs(((struct sockaddr_in *) &ss)->sin_port);
}

static void http_server_drain_cb(uv_timer_t *timer)
{
  struct http_server *server = timer->data;

  for (struct http_conn *c = server->conns; c != NULL; c = c->next)
    http_conn_close(c);
}

void http_server_close(struct http_server *server)
{
  assert(!server->closing);
  server->closing = true;
  uv_close((uv_handle_t *) &server->listener, http_server_handle_closed);

  /* Pending answers still go out (with Connection: close); the rest ends
   * now. Closing does not unlink, so the walk is safe. */
  for (struct http_conn *c = server->conns; c != NULL; c = c->next) {
    if (c->state == HTTP_CONN_IDLE)
      http_conn_finish(c);
    else if (c->state == HTTP_CONN_READING)
      http_conn_close(c);
  }
  if (server->nconns == 0) {
    server->drain_closed = true;
    uv_close((uv_handle_t *) &server->drain, http_server_handle_closed);
  } else {
    uv_timer_start(&server->drain, http_server_drain_cb, HTTP_SERVER_DRAIN_MS,
                   0);
  }
}
