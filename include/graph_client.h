/* SPDX-License-Identifier: MIT */
/* Microsoft Graph calls on behalf of a mailbox: adds the bearer token from
 * the token cache, keeps at most N requests in flight per mailbox (Graph's
 * Outlook limit is 4), queues the rest in order, retries once on an expired
 * token, and parses Graph's error body. */
#ifndef NX_GRAPH_CLIENT_H
#define NX_GRAPH_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http_client.h"
#include "token_cache.h"

struct graph_client;

struct graph_response {
  long status;      /* HTTP status, 0 on a transport failure */
  const char *body; /* raw body, NUL-terminated */
  size_t body_len;
  double retry_after; /* seconds, -1 if absent */
  const char *location;
  /* From {"error":{"code","message"}}, or for transport failures
   * "network" and curl's message, or GRAPH_REPLY_TOO_LARGE when Graph
   * answered with more than the HTTP client keeps, or for token failures
   * the token endpoint's error and AADSTS description. */
  char error_code[64];
  char error_message[512];
  /* For token failures: the grant is gone and the user must link again
   * (error_code is then the OAuth error, e.g. "invalid_grant"). */
  bool token_permanent;
};

/* error_code of an answer over the HTTP client's size limit (status 0):
 * Graph did answer, so the request is not lost and not ambiguous; asking
 * for less ($select, $top) is the cure, not sending it again. */
#define GRAPH_REPLY_TOO_LARGE "reply_too_large"

typedef void (*graph_done_cb)(void *arg, const struct graph_response *resp);

struct graph_request {
  const char *mailbox; /* the user; the concurrency and token key */
  const char *method;
  const char *path;         /* after the base URL: "/v1.0/users/x/sendMail" */
  const char *content_type; /* NULL when there is no body */
  const char *body;
  size_t body_len;
  /* Extra headers, NULL-terminated, or NULL. Authorization, Accept,
   * client-request-id, Prefer: IdType="ImmutableId" (ids that survive a
   * move between folders) and Content-Type are always sent: not here. */
  const char *const *headers;
  /* An upload session's pre-authenticated URL (absolute, used instead of
   * path): sent WITHOUT the Authorization header, as Graph requires
   * (graph-api.md 2.4), and never logged, since it carries a credential.
   * It still counts against the mailbox's in-flight limit. */
  const char *upload_url;
  /* Instead of body: body_len bytes of this file from body_offset,
   * streamed by http_client (see struct http_request). */
  const char *body_file;
  uint64_t body_offset;
};

int graph_client_new(uv_loop_t *loop, struct http_client *http,
                     struct token_cache *tokens, const char *graph_base_url,
                     unsigned max_in_flight, struct graph_client **out);

/* Queues a request for its mailbox; done runs exactly once on the loop.
 * The request's strings are copied (a body_file is opened when the request
 * is dispatched). */
void graph_client_send(struct graph_client *client,
                       const struct graph_request *req, graph_done_cb done,
                       void *arg);

/* Requests in flight for mailbox (for tests and the status API). */
unsigned graph_client_in_flight(const struct graph_client *client,
                                const char *mailbox);

/* Fails queued requests, lets in-flight ones finish through http_client,
 * and frees the client. */
void graph_client_close(struct graph_client *client);

#endif
