/* SPDX-License-Identifier: MIT */
/* Outgoing HTTP for the agent: libcurl's multi interface driven by the
 * libuv loop (sockets watched with uv_poll, curl timers on a uv_timer), so
 * no call ever blocks the loop. */
#ifndef NX_HTTP_CLIENT_H
#define NX_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_client;

struct http_response {
  long status;    /* 0 when no HTTP answer came (see curl_error) */
  int curl_error; /* CURLcode, 0 if the transfer completed */
  /* The answer was longer than the client keeps (16 MB): status is 0 and
   * the body empty, although the server did answer. Not a network
   * failure, so callers must not treat it as one. */
  bool too_large;
  char *body; /* NUL-terminated, owned by the response */
  size_t body_len;
  double retry_after; /* seconds from Retry-After, -1 when absent */
  char *location;     /* Location header or NULL */
  char curl_message[256];
};

/* Completion callback: the response is freed when it returns. */
typedef void (*http_client_done_cb)(void *arg,
                                    const struct http_response *resp);

struct http_request {
  const char *method; /* "GET", "POST", "PATCH", "PUT", "DELETE" */
  const char *url;
  const char *const *headers; /* "Name: value", NULL-terminated, or NULL */
  const char *body;           /* copied before http_client_send returns */
  size_t body_len;
  long timeout_ms; /* whole transfer; 0 means 60 s */
  /* Instead of body: send body_len bytes of this file from body_offset,
   * read as curl asks for them, so a large upload never sits in memory.
   * The file is opened by http_client_send (an open failure is its
   * negative errno) and closed when the transfer ends. */
  const char *body_file;
  uint64_t body_offset;
};

int http_client_new(uv_loop_t *loop, struct http_client **out);

/* Starts a request; done is called exactly once, on the loop, never from
 * inside http_client_send. Returns 0 or a negative errno (then done is
 * not called). */
int http_client_send(struct http_client *client, const struct http_request *req,
                     http_client_done_cb done, void *arg);

/* Number of transfers in progress. */
size_t http_client_active(const struct http_client *client);

/* Cancels every transfer (their callbacks run with curl_error set to
 * CURLE_ABORTED_BY_CALLBACK) and frees the client after its handles have
 * closed. */
void http_client_close(struct http_client *client);

#endif
