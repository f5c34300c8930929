/* SPDX-License-Identifier: MIT */
/* The agent's HTTP/1.1 listener on the libuv loop (CalDAV, consent and
 * linking endpoints). Requests are parsed by http-parser; each complete
 * request becomes an exchange that the handler answers, at once or later. */
#ifndef NX_HTTP_SERVER_H
#define NX_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Limits, each answered with a precise status, a short text body and
 * Connection: close. The request timeout runs from the first byte of a
 * request until it is complete; a connection that sends nothing within the
 * idle timeout (before its first request or between keep-alive requests)
 * is closed without an answer, since a 408 there would race with the
 * client's next request. "Expect: 100-continue" is answered by the server
 * itself once the declared length is within max_body_size (413 if not). */
struct http_server_limits {
  size_t max_header_size;      /* request line and fields, bytes: 431 beyond */
  unsigned max_headers;        /* header fields per request: 431 beyond */
  uint64_t max_body_size;      /* decoded body bytes: 413 beyond */
  unsigned max_connections;    /* open at once: 503 with Retry-After beyond */
  unsigned request_timeout_ms; /* first byte to last byte: 408 beyond */
  unsigned idle_timeout_ms;    /* keep-alive wait for the next request */
};

/* The request as the handler sees it. Every string is NUL-terminated and
 * owned by the exchange: valid until http_exchange_respond() returns. */
struct http_server_request {
  const char *method; /* "GET", "PROPFIND", ... (http-parser's names) */
  const char *target; /* request-target exactly as received */
  const char *path;   /* target's path, still percent-encoded; "*" allowed */
  const char *query;  /* raw query without '?', "" when none */
  const char *body;   /* decoded body (chunks joined), NUL after body_len */
  size_t body_len;
  const char *peer;    /* client address, "127.0.0.1:53124" or "[::1]:53124" */
  const char *conn_id; /* names the connection in log lines, "h12" */
  unsigned short http_minor; /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
};

struct http_server;
struct http_exchange;

/* Called on the loop once per complete request. The handler now holds the
 * exchange and must end it with exactly one http_exchange_respond(), from
 * inside this call or later. Requests of one connection are handed over
 * one at a time: the next pipelined request waits for this answer. Every
 * http_exchange_* function must be called on the loop's thread.
 *
 * Ownership: the connection is freed only in its libuv close callback;
 * the exchange is a separate object that outlives it when the client goes
 * away first (it is then "cancelled": no longer linked to any socket), so
 * a handler may keep the pointer across a Graph call without checks. */
typedef void (*http_server_handler_cb)(void *arg, struct http_exchange *ex);

/* Called at most once, on the loop, when the connection behind an
 * unanswered exchange goes away (client disconnect or write error, or the
 * drain period of http_server_close() ending). The exchange stays valid; the
 * handler should stop its work and must still call http_exchange_respond(),
 * which then only frees. */
typedef void (*http_exchange_cancel_cb)(void *arg, struct http_exchange *ex);

/* Fills limits with the built-in defaults (16 KiB of headers, 100 fields,
 * 4 MiB of body, 64 connections, 30 s per request, 60 s idle). */
void http_server_limits_defaults(struct http_server_limits *limits);

/* Listens on host:port, host being a numeric IPv4 or IPv6 address (port 0
 * picks a free one, see http_server_port()). limits is copied; NULL means
 * the defaults. handler and arg are kept for the server's life. Returns 0
 * and *out, or a negative libuv error: then the server's handles are
 * already closing and the next uv_run() frees them. */
int http_server_new(uv_loop_t *loop, const char *host, int port,
                    const struct http_server_limits *limits,
                    http_server_handler_cb handler, void *arg,
                    struct http_server **out);

/* The bound TCP port, or a negative libuv error. */
int http_server_port(const struct http_server *server);

/* Stops accepting and ends every connection: idle or half-read ones are
 * closed now; one whose handler has not answered yet gets its answer (with
 * Connection: close) if that comes within a short drain period, and is
 * closed (its exchange cancelled) otherwise. The server frees itself once
 * its last handle has closed, so uv_run() returns after it. The pointer
 * must not be used after this call. */
void http_server_close(struct http_server *server);

/* The request of an exchange; see struct http_server_request. */
const struct http_server_request *
http_exchange_request(const struct http_exchange *ex);

/* Looks a header field up by name, case-insensitively. Repeated fields are
 * joined with ", " as RFC 9110 allows. Returns the value without
 * surrounding whitespace, owned by the exchange, or NULL when absent. */
const char *http_exchange_header(const struct http_exchange *ex,
                                 const char *name);

/* Finds the first query parameter called name (compared after decoding)
 * and stores its decoded value ('+' is a space) in *value, owned by the
 * exchange. Returns 0, -ENOENT when absent, or -EINVAL when the query
 * is badly encoded or the value holds a NUL byte. */
int http_exchange_query(struct http_exchange *ex, const char *name,
                        const char **value);

/* Decodes the credentials of "Authorization: Basic ..." into user and
 * pass, NUL-terminated. Returns 0, -ENOENT when there is no Basic
 * authorization, -EINVAL when it is malformed (bad base64, no colon, NUL
 * byte), -ENOSPC when a part does not fit its buffer. The decoded
 * password is wiped from intermediate memory; never log it. */
int http_exchange_basic_auth(const struct http_exchange *ex, char *user,
                             size_t userlen, char *pass, size_t passlen);

/* Registers cb to hear that the client went away before the answer (see
 * http_exchange_cancel_cb); a later call replaces the earlier one. Returns
 * 0, or -ECONNRESET when the client has already gone: cb is then never
 * called and the handler should respond (which only frees) at once. */
int http_exchange_on_cancel(struct http_exchange *ex,
                            http_exchange_cancel_cb cb, void *arg);

/* Answers the exchange and frees it; ex must not be used afterwards.
 * headers are "Name: value" strings, NULL-terminated, or NULL; the server
 * adds Date, Content-Length (not for 1xx, 204 and 304) and Connection
 * itself, so they must not be given. body (len bytes) is copied; HEAD
 * requests get the headers only. A header holding CR or LF is refused
 * and a 500 is sent instead. Returns 0 when the answer was queued, or
 * -ECONNRESET when the client had gone (the answer is dropped). */
int http_exchange_respond(struct http_exchange *ex, int status,
                          const char *const *headers, const char *body,
                          size_t len);

/* Decodes percent escapes of text[0..len) into a new NUL-terminated string
 * stored in *out (caller frees); plus_is_space decodes '+' as in query
 * strings. Returns 0, or -EINVAL on a bad escape or a NUL byte. */
int http_percent_decode(const char *text, size_t len, int plus_is_space,
                        char **out);

#endif
