/* SPDX-License-Identifier: MIT */
/* Access tokens for Graph. Application mode: one client-credentials token
 * for the tenant. Delegated mode: one per user, from the user's stored
 * refresh token. Tokens are cached until shortly before they expire and at
 * most one refresh per key runs at a time; waiters share its result. */
#ifndef NX_TOKEN_CACHE_H
#define NX_TOKEN_CACHE_H

#include <stdbool.h>
#include <uv.h>

#include "config.h"
#include "http_client.h"
#include "store.h"
#include "token_crypt.h"

/* What the application asks for in client-credentials mode and in the
 * admin consent link: every permission the tenant granted it
 * (graph-api.md 1.3). */
#define TOKEN_CACHE_SCOPE "https://graph.microsoft.com/.default"

/* What a delegated link grants: sending mail, drafts and reading Sent
 * Items (large mail, recovery), calendars (graph-api.md 2.4, 3). The
 * sign-in asks for these and every refresh asks for them again. */
#define TOKEN_CACHE_USER_SCOPES                                                \
  "https://graph.microsoft.com/Mail.Send "                                     \
  "https://graph.microsoft.com/Mail.ReadWrite "                                \
  "https://graph.microsoft.com/Calendars.ReadWrite "                           \
  "https://graph.microsoft.com/MailboxSettings.Read"

struct token_cache;

/* token is NULL on failure; then error is the OAuth "error" value (or
 * "token_network" when the token endpoint gave no answer; never
 * "network", which Graph's callers read as a request that may have
 * reached Graph) and description the error_description, and permanent says
 * whether the grant is gone (the user must link again). */
typedef void (*token_cache_cb)(void *arg, const char *token, const char *error,
                               const char *description, bool permanent);

/* Creates a cache that borrows loop, http, cfg, store and crypt (store
 * and crypt may be NULL in application mode; in delegated mode refresh
 * tokens are stored encrypted with crypt). A grant found gone on refresh
 * marks the user "needs re-link" with the reason (links_mark_relink).
 * Returns 0 or -EINVAL. */
int token_cache_new(uv_loop_t *loop, struct http_client *http,
                    const struct config *cfg, struct store *store,
                    struct token_crypt *crypt, struct token_cache **out);

/* Gets a token for mailbox (ignored in application mode). cb runs on the
 * loop, possibly before this returns: when the token is cached, or when
 * the failure is known at once (delegated user with no stored refresh
 * token: error "not_linked", permanent). */
void token_cache_get(struct token_cache *cache, const char *mailbox,
                     token_cache_cb cb, void *arg);

/* Forgets the cached token for mailbox (after Graph answered 401). */
void token_cache_invalidate(struct token_cache *cache, const char *mailbox);

/* Frees the cache. A refresh still in progress finishes first (at the
 * latest when the HTTP client closes) and its waiters are still called;
 * token_cache_get must not be called afterwards. */
void token_cache_free(struct token_cache *cache);

#endif
