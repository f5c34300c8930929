/* SPDX-License-Identifier: MIT */
/* A tiny HTTP/1.1 server on the test's libuv loop, included by the unit
 * tests that need one: requests are parsed with http-parser, handed to the
 * test's handler, and answered (optionally after a delay) with canned
 * responses. Keep-alive is supported, pipelining is not needed. */
#include <assert.h>
#include <http_parser.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#define STUB_MAX_HEADERS 32
#define STUB_MAX_FIELD 512
#define STUB_MAX_BODY (1024 * 1024)

struct stub_server;
struct stub_conn;

struct stub_request {
  const char *method;
  char url[1024];
  char names[STUB_MAX_HEADERS][STUB_MAX_FIELD];
  char values[STUB_MAX_HEADERS][STUB_MAX_FIELD];
  size_t nheaders;
  char *body; /* NUL-terminated */
  size_t body_len;
};

/* Called for each complete request; must call stub_reply() once. */
typedef void (*stub_handler)(struct stub_server *srv, struct stub_conn *conn,
                             const struct stub_request *req);

/* Called when a reply has been handed to the socket. */
typedef void (*stub_sent_cb)(struct stub_server *srv, struct stub_conn *conn);

struct stub_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  struct stub_server *srv;
  http_parser parser;
  struct stub_request req;
  bool in_value;
  char *pending; /* delayed reply */
  size_t pending_len;
  char tag[256]; /* free for the handler */
  int open_handles;
  bool closing;
  struct stub_conn *next;
};

struct stub_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int port;
  stub_handler handler;
  stub_sent_cb sent;
  void *data;
  unsigned connections; /* accepted so far */
  unsigned requests;    /* parsed so far */
  struct stub_conn *conns;
};

static inline const char *stub_header(const struct stub_request *req,
                                      const char *name)
{
  for (size_t i = 0; i < req->nheaders; i++) {
    if (strcasecmp(req->names[i], name) == 0)
      return req->values[i];
  }
  return NULL;
}

static void stub_conn_closed(uv_handle_t *handle)
{
  struct stub_conn *conn = handle->data;

  if (--conn->open_handles == 0) {
    free(conn->req.body);
    free(conn->pending);
    free(conn);
  }
}

static void stub_conn_close(struct stub_conn *conn)
{
  struct stub_server *srv = conn->srv;
  struct stub_conn **p;

  if (conn->closing)
    return;
  conn->closing = true;
  for (p = &srv->conns; *p; p = &(*p)->next) {
    if (*p == conn) {
      *p = conn->next;
      break;
    }
  }
  uv_close((uv_handle_t *) &conn->tcp, stub_conn_closed);
  uv_close((uv_handle_t *) &conn->timer, stub_conn_closed);
}

static void stub_on_written(uv_write_t *wr, int status)
{
  free(wr->data);
  free(wr);
}

static void stub_write(struct stub_conn *conn, char *buf, size_t len)
{
  uv_write_t *wr = calloc(1, sizeof(*wr));
  uv_buf_t b = uv_buf_init(buf, (unsigned) len);

  assert(wr);
  wr->data = buf;
  if (uv_write(wr, (uv_stream_t *) &conn->tcp, &b, 1, stub_on_written) < 0) {
    free(buf);
    free(wr);
  }
  if (conn->srv->sent)
    conn->srv->sent(conn->srv, conn);
}

static void stub_on_delay(uv_timer_t *timer)
{
  struct stub_conn *conn = timer->data;
  char *buf = conn->pending;

  conn->pending = NULL;
  stub_write(conn, buf, conn->pending_len);
}

/* Answers the current request of conn. headers is "Name: value\r\n" lines
 * or NULL; body may be NULL. */
static void stub_reply(struct stub_conn *conn, int status, const char *headers,
                       const char *body, unsigned delay_ms)
{
  size_t body_len = body ? strlen(body) : 0;
  size_t cap = 256 + (headers ? strlen(headers) : 0) + body_len;
  char *buf = malloc(cap);
  int n;

  assert(buf);
  n = snprintf(buf, cap, "HTTP/1.1 %d Stub\r\nContent-Length: %zu\r\n%s\r\n%s",
               status, body_len, headers ? headers : "", body ? body : "");
  assert(n > 0 && (size_t) n < cap);
  if (delay_ms == 0) {
    stub_write(conn, buf, (size_t) n);
    return;
  }
  assert(!conn->pending);
  conn->pending = buf;
  conn->pending_len = (size_t) n;
  uv_timer_start(&conn->timer, stub_on_delay, delay_ms, 0);
}

static void stub_append(char *dst, const char *at, size_t len)
{
  size_t have = strlen(dst);

  if (len > STUB_MAX_FIELD - 1 - have)
    len = STUB_MAX_FIELD - 1 - have;
  memcpy(dst + have, at, len);
  dst[have + len] = '\0';
}

static int stub_on_message_begin(http_parser *p)
{
  struct stub_conn *conn = p->data;

  free(conn->req.body);
  memset(&conn->req, 0, sizeof(conn->req));
  conn->in_value = false;
  return 0;
}

static int stub_on_url(http_parser *p, const char *at, size_t len)
{
  struct stub_conn *conn = p->data;
  size_t have = strlen(conn->req.url);

  if (len > sizeof(conn->req.url) - 1 - have)
    return 1;
  memcpy(conn->req.url + have, at, len);
  conn->req.url[have + len] = '\0';
  return 0;
}

static int stub_on_header_field(http_parser *p, const char *at, size_t len)
{
  struct stub_conn *conn = p->data;
  struct stub_request *req = &conn->req;

  if (conn->in_value || req->nheaders == 0) {
    if (req->nheaders == STUB_MAX_HEADERS)
      return 1;
    req->nheaders++;
    conn->in_value = false;
  }
  stub_append(req->names[req->nheaders - 1], at, len);
  return 0;
}

static int stub_on_header_value(http_parser *p, const char *at, size_t len)
{
  struct stub_conn *conn = p->data;

  conn->in_value = true;
  stub_append(conn->req.values[conn->req.nheaders - 1], at, len);
  return 0;
}

static int stub_on_body(http_parser *p, const char *at, size_t len)
{
  struct stub_request *req = &((struct stub_conn *) p->data)->req;

  if (len > STUB_MAX_BODY - req->body_len)
    return 1;
  req->body = realloc(req->body, req->body_len + len + 1);
  assert(req->body);
  memcpy(req->body + req->body_len, at, len);
  req->body_len += len;
  req->body[req->body_len] = '\0';
  return 0;
}

static int stub_on_message_complete(http_parser *p)
{
  struct stub_conn *conn = p->data;

  conn->req.method = http_method_str(p->method);
  if (!conn->req.body)
    conn->req.body = calloc(1, 1);
  conn->srv->requests++;
  conn->srv->handler(conn->srv, conn, &conn->req);
  return 0;
}

static const http_parser_settings stub_settings = {
  .on_message_begin = stub_on_message_begin,
  .on_url = stub_on_url,
  .on_header_field = stub_on_header_field,
  .on_header_value = stub_on_header_value,
  .on_body = stub_on_body,
  .on_message_complete = stub_on_message_complete,
};

static void stub_on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
  buf->base = malloc(size);
  buf->len = size;
}

static void stub_on_read(uv_stream_t *stream, ssize_t nread,
                         const uv_buf_t *buf)
{
  struct stub_conn *conn = stream->data;

  if (nread < 0) {
    stub_conn_close(conn);
  } else if (nread > 0) {
    size_t used = http_parser_execute(&conn->parser, &stub_settings, buf->base,
                                      (size_t) nread);

    if (used != (size_t) nread || conn->parser.http_errno != HPE_OK)
      stub_conn_close(conn);
  }
  free(buf->base);
}

static void stub_on_connection(uv_stream_t *listener, int status)
{
  struct stub_server *srv = listener->data;
  struct stub_conn *conn;

  if (status < 0)
    return;
  conn = calloc(1, sizeof(*conn));
  assert(conn);
  conn->srv = srv;
  uv_tcp_init(srv->loop, &conn->tcp);
  uv_timer_init(srv->loop, &conn->timer);
  conn->tcp.data = conn;
  conn->timer.data = conn;
  conn->open_handles = 2;
  http_parser_init(&conn->parser, HTTP_REQUEST);
  conn->parser.data = conn;
  if (uv_accept(listener, (uv_stream_t *) &conn->tcp) < 0) {
    stub_conn_close(conn);
    return;
  }
  conn->next = srv->conns;
  srv->conns = conn;
  srv->connections++;
  uv_read_start((uv_stream_t *) &conn->tcp, stub_on_alloc, stub_on_read);
}

/* Listens on 127.0.0.1 and an ephemeral port (srv->port). */
static int stub_start(struct stub_server *srv, uv_loop_t *loop,
                      stub_handler handler, void *data)
{
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  int rc;

  memset(srv, 0, sizeof(*srv));
  srv->loop = loop;
  srv->handler = handler;
  srv->data = data;
  uv_tcp_init(loop, &srv->listener);
  srv->listener.data = srv;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *) &addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *) &srv->listener, 128, stub_on_connection);
  if (rc == 0)
    rc = uv_tcp_getsockname(&srv->listener, (struct sockaddr *) &bound, &len);
  if (rc == 0)
    srv->port = ntohs(((struct sockaddr_in *) &bound)->sin_port);
  return rc;
}

static void stub_close(struct stub_server *srv)
{
  while (srv->conns)
    stub_conn_close(srv->conns);
  uv_close((uv_handle_t *) &srv->listener, NULL);
}
