/* SPDX-License-Identifier: MIT */
/* SMTP connections on the libuv loop (see include/smtp_server.h). */
#include "smtp_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "policy.h"
#include "smtp_session.h"
#include "xalloc.h"

#define SMTP_WRITE_BACKLOG_MAX (256 * 1024) /* stop reading above this */
#define SMTP_READ_BUFFER 65536

struct smtp_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  struct smtp_server_deps deps;
  struct smtp_limits limits;
  char *hostname;
  unsigned max_connections;
  unsigned idle_timeout_ms;
  unsigned auth_timeout_ms; /* connect to AUTH; 0: no deadline */
  unsigned data_timeout_ms;
  unsigned nconns;
  unsigned long next_conn_id;
  struct smtp_conn *conns; /* doubly linked list of open connections */
  int port;
  int open_handles; /* listener plus connections still closing */
  void (*closed_cb)(void *arg);
  void *closed_arg;
  int closing;
};

struct smtp_conn {
  uv_tcp_t tcp;     /* tcp.data = this */
  uv_timer_t timer; /* idle and data timeouts */
  uv_shutdown_t shutdown_req;
  struct smtp_server *server;
  struct smtp_session *session;
  struct smtp_intake_msg *msg; /* message being received */
  struct smtp_conn *prev, *next;
  char id[24];
  char peer[64];
  char sender[POLICY_ADDRESS_MAX]; /* normalised MAIL FROM */
  int handles_open;                /* 2 until both handles have closed */
  int closing;
  int committing;         /* a commit runs on the thread pool */
  uint64_t auth_deadline; /* loop time by which AUTH must succeed, or 0 */
  int reading;
};

struct smtp_write {
  uv_write_t req;
  struct smtp_conn *conn;
  char data[]; /* the reply bytes */
};

static void smtp_conn_begin_close(struct smtp_conn *conn);

/* ---- writing ------------------------------------------------------- */

static void smtp_conn_read_start(struct smtp_conn *conn);

static void smtp_conn_on_write(uv_write_t *req, int status)
{
  struct smtp_write *w = (struct smtp_write *) req;
  struct smtp_conn *conn = w->conn;

  free(w);
  if (status < 0 && status != UV_ECANCELED)
    log_debug("%s smtp write_failed error=%s", conn->id, uv_strerror(status));
  if (!conn->closing && !conn->reading
      && conn->tcp.write_queue_size < SMTP_WRITE_BACKLOG_MAX)
    smtp_conn_read_start(conn);
}

static void smtp_conn_reply(void *ctx, const char *text, size_t len)
{
  struct smtp_conn *conn = ctx;
  struct smtp_write *w;
  uv_buf_t buf;

  if (conn->closing == 2)
    return; /* handles already closing: nothing more can be sent */
  w = xmalloc(sizeof(*w) + len);
  w->conn = conn;
  memcpy(w->data, text, len);
  buf = uv_buf_init(w->data, (unsigned) len);
  if (uv_write(&w->req, (uv_stream_t *) &conn->tcp, &buf, 1, smtp_conn_on_write)
      < 0)
    free(w);
}

/* ---- session callbacks -------------------------------------------- */

static int smtp_conn_authenticate(void *ctx, const char *user,
                                  const char *password)
{
  struct smtp_conn *conn = ctx;

  return credential_check(conn->server->deps.credential, user, password);
}

static void smtp_conn_deny_text(const struct policy_decision *d, char *reason,
                                size_t len)
{
  snprintf(reason, len, "%s: %s", d->code, d->sentence);
}

static int smtp_conn_check_service(void *ctx, char *reason, size_t len)
{
  struct smtp_conn *conn = ctx;
  struct policy_decision d;

  if (policy_gate_enabled(conn->server->deps.gate))
    return 0;
  /* No user is named yet: the decision for an empty address still says
   * whether the organisation switch (or a missing policy) refuses. */
  policy_gate_check(conn->server->deps.gate, POLICY_REQUEST_SMTP, "", &d);
  smtp_conn_deny_text(&d, reason, len);
  return -EPERM;
}

static int smtp_conn_decide_sender(struct smtp_conn *conn, const char *address,
                                   char *reason, size_t len)
{
  struct policy_decision d;

  policy_gate_check(conn->server->deps.gate, POLICY_REQUEST_SMTP, address, &d);
  if (d.reason == POLICY_ALLOW)
    return 0;
  smtp_conn_deny_text(&d, reason, len);
  return -EPERM;
}

static int smtp_conn_check_sender(void *ctx, const char *address, char *reason,
                                  size_t len)
{
  struct smtp_conn *conn = ctx;

  if (policy_address_normalize(address, conn->sender, sizeof(conn->sender))
      < 0) {
    snprintf(reason, len,
             "invalid_address: the sender must be the linked user's "
             "address");
    return -EINVAL;
  }
  return smtp_conn_decide_sender(conn, conn->sender, reason, len);
}

static void smtp_conn_restart_timer(struct smtp_conn *conn, unsigned ms);

static int smtp_conn_data_open(void *ctx)
{
  struct smtp_conn *conn = ctx;

  if (conn->msg != NULL)
    smtp_intake_abort(conn->msg);
  conn->msg = NULL;
  smtp_conn_restart_timer(conn, conn->server->data_timeout_ms);
  return smtp_intake_begin(conn->server->deps.intake, &conn->msg);
}

static int smtp_conn_data_write(void *ctx, const char *buf, size_t len)
{
  struct smtp_conn *conn = ctx;

  if (conn->msg == NULL)
    return -EIO;
  return smtp_intake_write(conn->msg, buf, len);
}

static void smtp_conn_free_if_done(struct smtp_conn *conn);

static void smtp_conn_committed(void *arg, int code, const char *enhanced,
                                const char *text)
{
  struct smtp_conn *conn = arg;

  conn->committing = 0;
  if (conn->closing) {
    if (code == 250)
      log_warn("%s smtp reply_lost queue_id=%s peer=%s (queued; the client "
               "did not wait for the 250)",
               conn->id, text, conn->peer);
    smtp_conn_free_if_done(conn);
    return;
  }
  smtp_session_data_done(conn->session, code, enhanced, text);
}

static void smtp_conn_data_close(void *ctx, const struct smtp_envelope *env)
{
  struct smtp_conn *conn = ctx;
  struct smtp_intake_msg *msg = conn->msg;
  char reason[320];

  conn->msg = NULL;
  smtp_conn_restart_timer(conn, conn->server->idle_timeout_ms);
  /* The policy may have changed while the data arrived. */
  if (smtp_conn_decide_sender(conn, conn->sender, reason, sizeof(reason)) < 0) {
    smtp_intake_abort(msg);
    smtp_session_data_done(conn->session, 550, "5.7.1", reason);
    return;
  }
  conn->committing = 1;
  smtp_intake_commit(msg, conn->sender, env, smtp_conn_committed, conn);
}

static void smtp_conn_data_abort(void *ctx)
{
  struct smtp_conn *conn = ctx;

  if (conn->closing && conn->msg != NULL)
    log_warn("%s smtp data_abandoned peer=%s (connection closed before the "
             "end of data; nothing was queued)",
             conn->id, conn->peer);
  smtp_intake_abort(conn->msg);
  conn->msg = NULL;
}

static void smtp_conn_session_close(void *ctx)
{
  smtp_conn_begin_close(ctx);
}

static const struct smtp_session_ops smtp_conn_ops = {
  .reply = smtp_conn_reply,
  .authenticate = smtp_conn_authenticate,
  .check_service = smtp_conn_check_service,
  .check_sender = smtp_conn_check_sender,
  .data_open = smtp_conn_data_open,
  .data_write = smtp_conn_data_write,
  .data_close = smtp_conn_data_close,
  .data_abort = smtp_conn_data_abort,
  .close = smtp_conn_session_close,
};

/* ---- timers, reading and closing ----------------------------------- */

static void smtp_conn_on_timeout(uv_timer_t *timer)
{
  struct smtp_conn *conn = timer->data;

  log_warn("%s smtp timeout peer=%s state=%s", conn->id, conn->peer,
           smtp_state_name(smtp_session_state(conn->session)));
  smtp_session_timeout(conn->session);
}

/* Restarts the connection's timer for ms, or for less: until AUTH
 * succeeds a connection also has a deadline from its start, so that idle
 * connections that never log in cannot hold every slot (each command
 * would otherwise buy another idle_timeout). */
static void smtp_conn_restart_timer(struct smtp_conn *conn, unsigned ms)
{
  uint64_t now = uv_now(conn->server->loop);

  if (conn->closing)
    return;
  if (conn->auth_deadline != 0 && !smtp_session_authenticated(conn->session)) {
    uint64_t left = conn->auth_deadline > now ? conn->auth_deadline - now : 1;

    if (left < ms)
      ms = (unsigned) left;
  }
  uv_timer_start(&conn->timer, smtp_conn_on_timeout, ms, 0);
}

static void smtp_conn_alloc(uv_handle_t *handle, size_t suggested,
                            uv_buf_t *buf)
{
  static char slab[SMTP_READ_BUFFER]; /* one loop thread: reads never nest */

  buf->base = slab;
  buf->len = sizeof(slab);
}

static void smtp_conn_on_read(uv_stream_t *stream, ssize_t nread,
                              const uv_buf_t *buf)
{
  struct smtp_conn *conn = stream->data;
  enum smtp_state state;

  if (nread < 0) {
    if (nread != UV_EOF)
      log_debug("%s smtp read_failed error=%s", conn->id,
                uv_strerror((int) nread));
    smtp_conn_begin_close(conn);
    return;
  }
  if (nread == 0)
    return;
  state = smtp_session_state(conn->session);
  smtp_conn_restart_timer(conn, state == SMTP_STATE_DATA
                                    ? conn->server->data_timeout_ms
                                    : conn->server->idle_timeout_ms);
  if (smtp_session_feed(conn->session, buf->base, (size_t) nread) < 0)
    return; /* the session asked to close */
  /* Logged in by this read: the deadline to log in no longer applies. */
  if (conn->auth_deadline != 0 && smtp_session_authenticated(conn->session)) {
    conn->auth_deadline = 0;
    smtp_conn_restart_timer(conn,
                            smtp_session_state(conn->session) == SMTP_STATE_DATA
                                ? conn->server->data_timeout_ms
                                : conn->server->idle_timeout_ms);
  }
  if (conn->tcp.write_queue_size >= SMTP_WRITE_BACKLOG_MAX) {
    uv_read_stop(stream);
    conn->reading = 0;
  }
}

static void smtp_conn_read_start(struct smtp_conn *conn)
{
  if (uv_read_start((uv_stream_t *) &conn->tcp, smtp_conn_alloc,
                    smtp_conn_on_read)
      == 0)
    conn->reading = 1;
}

static void smtp_server_maybe_done(struct smtp_server *server)
{
  if (server->closing && server->open_handles == 0) {
    void (*cb)(void *) = server->closed_cb;
    void *arg = server->closed_arg;

    free(server->hostname);
    free(server);
    if (cb != NULL)
      cb(arg);
  }
}

static void smtp_conn_unlink(struct smtp_conn *conn)
{
  struct smtp_server *server = conn->server;

  if (conn->prev != NULL)
    conn->prev->next = conn->next;
  else
    server->conns = conn->next;
  if (conn->next != NULL)
    conn->next->prev = conn->prev;
  server->nconns--;
}

/* Frees the connection once both handles have closed and no commit is
 * running on the thread pool (its callback still points here). */
static void smtp_conn_free_if_done(struct smtp_conn *conn)
{
  struct smtp_server *server = conn->server;

  if (conn->handles_open > 0 || conn->committing)
    return;
  if (conn->session != NULL)
    smtp_session_free(conn->session);
  smtp_intake_abort(conn->msg);
  smtp_conn_unlink(conn);
  free(conn);
  server->open_handles--;
  smtp_server_maybe_done(server);
}

static void smtp_conn_on_close(uv_handle_t *handle)
{
  struct smtp_conn *conn = handle->data;

  conn->handles_open--;
  smtp_conn_free_if_done(conn);
}

static void smtp_conn_close_handles(struct smtp_conn *conn)
{
  if (conn->closing == 2)
    return;
  conn->closing = 2;
  log_debug("%s smtp disconnect peer=%s", conn->id, conn->peer);
  uv_close((uv_handle_t *) &conn->timer, smtp_conn_on_close);
  uv_close((uv_handle_t *) &conn->tcp, smtp_conn_on_close);
}

static void smtp_conn_on_shutdown(uv_shutdown_t *req, int status)
{
  smtp_conn_close_handles(req->data);
}

/* Flushes pending replies (uv_shutdown waits for queued writes), then
 * closes both handles. */
static void smtp_conn_begin_close(struct smtp_conn *conn)
{
  if (conn->closing)
    return;
  conn->closing = 1;
  uv_timer_stop(&conn->timer);
  uv_read_stop((uv_stream_t *) &conn->tcp);
  conn->shutdown_req.data = conn;
  if (uv_shutdown(&conn->shutdown_req, (uv_stream_t *) &conn->tcp,
                  smtp_conn_on_shutdown)
      < 0)
    smtp_conn_close_handles(conn);
}

/* ---- accepting ------------------------------------------------------ */

static int smtp_peer_is_loopback(const struct sockaddr_storage *ss)
{
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *) ss;

    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) ss;

    return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)
           || (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)
               && in6->sin6_addr.s6_addr[12] == 127);
  }
  return 0;
}

static void smtp_conn_describe_peer(struct smtp_conn *conn,
                                    struct sockaddr_storage *ss)
{
  int len = sizeof(*ss);
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;

  memset(ss, 0, sizeof(*ss));
  uv_tcp_getpeername(&conn->tcp, (struct sockaddr *) ss, &len);
  if (ss->ss_family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *) ss;

    uv_ip4_name(in, host, sizeof(host));
    port = ntohs(in->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ss;

    uv_ip6_name(in6, host, sizeof(host));
    port = ntohs(in6->sin6_port);
  }
  snprintf(conn->peer, sizeof(conn->peer), "%s:%d", host, port);
}

static struct smtp_conn *smtp_conn_new(struct smtp_server *server)
{
  struct smtp_conn *conn = xcalloc(1, sizeof(*conn));

  conn->server = server;
  snprintf(conn->id, sizeof(conn->id), "s%lu", ++server->next_conn_id);
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
  server->open_handles++;
  return conn;
}

static void smtp_server_on_connection(uv_stream_t *listener, int status)
{
  struct smtp_server *server = listener->data;
  struct sockaddr_storage ss;
  struct smtp_conn *conn;
  int secure;

  if (status < 0) {
    log_warn("- smtp accept_failed error=%s", uv_strerror(status));
    return;
  }
  conn = smtp_conn_new(server);
  if (uv_accept(listener, (uv_stream_t *) &conn->tcp) < 0) {
    smtp_conn_close_handles(conn);
    return;
  }
  smtp_conn_describe_peer(conn, &ss);
  secure = smtp_peer_is_loopback(&ss);
  conn->session = smtp_session_new(conn->id, server->hostname, secure,
                                   &server->limits, &smtp_conn_ops, conn);
  log_info("%s smtp connect peer=%s", conn->id, conn->peer);
  if (server->nconns > server->max_connections) {
    static const char busy[] = "421 4.7.0 Too many connections, try later\r\n";

    log_warn("%s smtp connection_limit peer=%s max=%u", conn->id, conn->peer,
             server->max_connections);
    /* sizeof - 1: the reply goes without the string's NUL. */
    smtp_conn_reply(conn, busy, sizeof(busy) - 1);
    smtp_conn_begin_close(conn);
    return;
  }
  if (server->auth_timeout_ms != 0)
    conn->auth_deadline = uv_now(server->loop) + server->auth_timeout_ms;
  smtp_conn_restart_timer(conn, server->idle_timeout_ms);
  smtp_conn_read_start(conn);
  smtp_session_start(conn->session);
}

/* ---- the listener --------------------------------------------------- */

static int smtp_server_bind(struct smtp_server *server, const char *listen)
{
  struct sockaddr_storage ss;
  char *host = NULL;
  int port = 0;
  int rc;

  if (config_parse_hostport(listen, &host, &port) < 0)
    return UV_EINVAL;
  rc = uv_ip4_addr(host, port, (struct sockaddr_in *) &ss);
  if (rc < 0)
    rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *) &ss);
  free(host);
  if (rc == 0)
    rc = uv_tcp_bind(&server->listener, (struct sockaddr *) &ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *) &server->listener, 128,
                   smtp_server_on_connection);
  if (rc == 0) {
    int len = sizeof(ss);

    uv_tcp_getsockname(&server->listener, (struct sockaddr *) &ss, &len);
    server->port = ntohs(((struct sockaddr_in *) &ss)->sin_port);
  }
  return rc;
}

void smtp_server_set_limits(struct smtp_server *server,
                            const struct config *cfg)
{
  server->limits.max_message_size = cfg->smtp_max_message_size;
  server->limits.max_recipients = cfg->smtp_max_recipients;
  server->limits.max_commands = cfg->smtp_max_commands;
  server->max_connections = cfg->smtp_max_connections;
  server->idle_timeout_ms = cfg->smtp_idle_timeout * 1000;
  server->auth_timeout_ms = cfg->smtp_auth_timeout * 1000;
  server->data_timeout_ms = cfg->smtp_data_timeout * 1000;
  free(server->hostname);
  server->hostname = xstrdup(cfg->smtp_hostname);
}

static void smtp_server_on_listener_close(uv_handle_t *handle)
{
  struct smtp_server *server = handle->data;

  server->open_handles--;
  smtp_server_maybe_done(server);
}

int smtp_server_new(uv_loop_t *loop, const struct config *cfg,
                    const struct smtp_server_deps *deps,
                    struct smtp_server **out)
{
  struct smtp_server *server = xcalloc(1, sizeof(*server));
  int rc;

  server->loop = loop;
  server->deps = *deps;
  smtp_server_set_limits(server, cfg);
  uv_tcp_init(loop, &server->listener);
  server->listener.data = server;
  server->open_handles = 1;
  rc = smtp_server_bind(server, cfg->smtp_listen);
  if (rc < 0) {
    log_error("- smtp listen_failed address=%s error=\"%s\"", cfg->smtp_listen,
              uv_strerror(rc));
    server->closing = 1;
    uv_close((uv_handle_t *) &server->listener, smtp_server_on_listener_close);
    return rc;
  }
  log_info("- smtp listening address=%s port=%d", cfg->smtp_listen,
           server->port);
  *out = server;
  return 0;
}

int smtp_server_port(const struct smtp_server *server)
{
  return server->port;
}

void smtp_server_close(struct smtp_server *server, void (*done)(void *arg),
                       void *arg)
{
  server->closing = 1;
  server->closed_cb = done;
  server->closed_arg = arg;
  uv_close((uv_handle_t *) &server->listener, smtp_server_on_listener_close);
  for (struct smtp_conn *c = server->conns; c != NULL; c = c->next) {
    if (!c->closing && c->session != NULL)
      smtp_session_shutdown(c->session);
  }
}
