/* SPDX-License-Identifier: MIT */
/* Linking one user's mailbox over the HTTP listener: the signed start link
 * Nextal hands the user (GET /link/start), the sign-in redirect back from
 * Microsoft (GET /oauth/callback, authorization code with PKCE), and
 * Nextal's link API under /v1/links (HTTP Basic, service credential). */
#ifndef NX_USER_LINK_H
#define NX_USER_LINK_H

#include "config.h"
#include "credential.h"
#include "graph_client.h"
#include "http_client.h"
#include "http_router.h"
#include "policy_gate.h"
#include "store.h"
#include "token_cache.h"
#include "token_crypt.h"

#define USER_LINK_CALLBACK_PATH "/oauth/callback"
#define USER_LINK_API_PATH "/v1/links"
#define USER_LINK_PENDING_S 600 /* a sign-in must come back within this */

/* Everything the handlers borrow; it must outlive the router and every
 * exchange in progress (the agent keeps it until the loop has ended). */
struct user_link_deps {
  const struct config *cfg;
  struct store *store;
  struct http_client *http;      /* the code exchange */
  struct token_crypt *crypt;     /* NULL in application mode */
  struct token_cache *tokens;    /* forgets a user's token on re-link */
  struct graph_client *graph;    /* application mode: the mailbox lookup */
  struct policy_gate *gate;      /* POLICY_REQUEST_LINK */
  struct credential *credential; /* HTTP Basic for /v1/links */
};

/* Adds GET /link/start, GET /oauth/callback and /v1/links/ADDRESS (GET,
 * DELETE; POST .../start-url) to router. Returns 0 or a negative errno
 * from http_router_add. */
int user_link_register(struct http_router *router, struct user_link_deps *deps);

#endif
