/* SPDX-License-Identifier: MIT */
/* Access tokens from the Microsoft identity platform (see
 * include/token_cache.h): client credentials for the tenant, or a refresh
 * token grant per linked user, cached and refreshed one at a time per key. */
#include "token_cache.h"

#include <assert.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client_auth.h"
#include "links.h"
#include "log.h"
#include "xalloc.h"

/* A token is replaced this long before it expires, or 10% of its lifetime
 * when that is shorter, so a request never carries an expiring token. */
#define TOKEN_CACHE_MARGIN_MS ((int64_t) 5 * 60 * 1000)

/* The token endpoint must answer within this time. */
#define TOKEN_CACHE_TIMEOUT_MS 30000L

/* Callers waiting for one key's refresh; more is a runaway caller. */
#define TOKEN_CACHE_MAX_WAITERS 10000

/* AADSTS codes after which the grant is gone and only a new link helps
 * (graph-api.md 1.7): no consent, user disabled, refresh token expired or
 * revoked, sign-in frequency, user not in the directory. */
static const long token_cache_permanent_codes[] = {
  65001, 50057, 700082, 70008, 50173, 70043, 50034,
};

struct token_waiter {
  token_cache_cb cb;
  void *arg;
  struct token_waiter *next;
};

struct token_entry {
  struct token_cache *cache;
  char *key;          /* lower-cased mailbox, "" in application mode */
  char *token;        /* NULL when none is cached */
  int64_t refresh_at; /* uv_now() after which token is not used */
  bool refreshing;
  struct token_waiter *waiters; /* in arrival order */
  struct token_waiter **waiters_tail;
  size_t nwaiters;
  struct token_entry *next;
};

struct token_cache {
  uv_loop_t *loop;
  struct http_client *http;
  const struct config *cfg;
  struct store *store;
  struct token_crypt *crypt; /* NULL in application mode */
  struct token_entry *entries;
  unsigned refreshing; /* entries with a request out */
  bool freeing;        /* token_cache_free ran; free after the last refresh */
};

/* The outcome of one refresh, handed to every waiter. */
struct token_result {
  const char *token;
  const char *error;
  const char *description;
  bool permanent;
};

static bool token_cache_delegated(const struct token_cache *cache)
{
  return cache->cfg->link_mode != CONFIG_LINK_APPLICATION;
}

/* Reads and decrypts the stored refresh token of key into *token.
 * Returns 0, -ENOENT when none is stored, -EBADMSG when it cannot be
 * decrypted (the key file was replaced), or -EIO. */
static int token_store_read(struct token_cache *cache, const char *key,
                            char **token)
{
  sqlite3_stmt *st = NULL;
  int rc = -EIO;
  int step;

  if (sqlite3_prepare_v2(cache->store->db,
                         "SELECT refresh_token FROM users"
                         " WHERE address = ?1 AND state = 'linked'",
                         -1, &st, NULL)
      != SQLITE_OK)
    goto out;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  step = sqlite3_step(st);
  if (step == SQLITE_DONE
      || (step == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 0)) {
    rc = -ENOENT;
  } else if (step == SQLITE_ROW) {
    rc = token_crypt_unseal(cache->crypt, key, sqlite3_column_blob(st, 0),
                            (size_t) sqlite3_column_bytes(st, 0), token);
    if (rc < 0)
      log_error("%s token decrypt_failed (was the key file replaced?)", key);
  }

out:
  if (rc == -EIO)
    log_error("%s token store_read_failed error=\"%s\"", key,
              sqlite3_errmsg(cache->store->db));
  sqlite3_finalize(st);
  return rc;
}

/* Encrypts and stores the rotated refresh token of key; returns 0 or a
 * negative errno. */
static int token_store_write(struct token_cache *cache, const char *key,
                             const char *token)
{
  sqlite3_stmt *st = NULL;
  void *blob = NULL;
  size_t len = 0;
  int rc
      = token_crypt_seal(cache->crypt, key, token, strlen(token), &blob, &len);

  if (rc < 0)
    return rc;
  rc = -EIO;
  if (sqlite3_prepare_v2(cache->store->db,
                         "UPDATE users SET refresh_token = ?1,"
                         " updated_at = ?2 WHERE address = ?3"
                         " AND state = 'linked'",
                         -1, &st, NULL)
      != SQLITE_OK)
    goto out;
  sqlite3_bind_blob(st, 1, blob, (int) len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, store_now_ms());
  sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_DONE)
    rc = 0;

out:
  if (rc < 0)
    log_error("%s token store_write_failed error=\"%s\"", key,
              sqlite3_errmsg(cache->store->db));
  sqlite3_finalize(st);
  free(blob);
  return rc;
}

/* The grant of key is gone: the user must link again, whoever asked for
 * the token (delivery, CalDAV), and the reason is kept for the status. */
static void token_store_mark_relink(struct token_cache *cache, const char *key,
                                    const char *error, const char *desc)
{
  char *reason = xasprintf("%s: %s", error, desc ? desc : "");

  if (links_mark_relink(cache->store, key, reason) == 0)
    log_warn("%s token grant_gone: the user must link again", key);
  free(reason);
}

static void token_entry_free(struct token_entry *entry)
{
  assert(!entry->waiters && !entry->refreshing);
  free(entry->key);
  free(entry->token);
  free(entry);
}

static void token_cache_destroy(struct token_cache *cache)
{
  struct token_entry *entry;

  while ((entry = cache->entries) != NULL) {
    cache->entries = entry->next;
    token_entry_free(entry);
  }
  free(cache);
}

/* Ends a refresh: every waiter queued so far gets the result. Waiters may
 * call token_cache_get again; they then queue behind a new refresh. */
static void token_entry_finish(struct token_entry *entry,
                               const struct token_result *res)
{
  struct token_cache *cache = entry->cache;
  struct token_waiter *w = entry->waiters;

  assert(entry->refreshing);
  entry->refreshing = false;
  entry->waiters = NULL;
  entry->waiters_tail = &entry->waiters;
  entry->nwaiters = 0;
  assert(cache->refreshing > 0);
  cache->refreshing--;

  while (w) {
    struct token_waiter *next = w->next;

    w->cb(w->arg, res->token, res->error, res->description, res->permanent);
    free(w);
    w = next;
  }
  if (cache->freeing && cache->refreshing == 0)
    token_cache_destroy(cache);
}

static bool token_cache_code_permanent(long code)
{
  size_t n = sizeof(token_cache_permanent_codes)
             / sizeof(*token_cache_permanent_codes);

  for (size_t i = 0; i < n; i++) {
    if (token_cache_permanent_codes[i] == code)
      return true;
  }
  return false;
}

/* Decides whether an OAuth error means the grant is gone, from the error
 * value and the AADSTS codes (error_codes[] or the description's
 * "AADSTSnnnn:" prefix). Server trouble is never permanent. */
static bool token_cache_error_permanent(long status, const char *error,
                                        json_t *codes, const char *desc)
{
  size_t i;
  json_t *code;

  if (status >= 500 || strcmp(error, "temporarily_unavailable") == 0)
    return false;
  if (strcmp(error, "invalid_grant") == 0)
    return true;
  json_array_foreach(codes, i, code)
  {
    if (json_is_integer(code)
        && token_cache_code_permanent((long) json_integer_value(code)))
      return true;
  }
  if (desc && strncmp(desc, "AADSTS", 6) == 0) {
    char *end;
    long n = strtol(desc + 6, &end, 10);

    if (end != desc + 6 && token_cache_code_permanent(n))
      return true;
  }
  return false;
}

/* Reads expires_in, which v2 sends as a number and v1 as a string. */
static int64_t token_cache_expires_in(json_t *root)
{
  json_t *v = json_object_get(root, "expires_in");

  if (json_is_integer(v))
    return (int64_t) json_integer_value(v);
  if (json_is_string(v)) {
    char *end;
    long n = strtol(json_string_value(v), &end, 10);

    if (end != json_string_value(v) && *end == '\0')
      return n;
  }
  return 3599; /* the documented default */
}

/* Caches a token from a successful answer and stores the rotated refresh
 * token. Returns the cached token, or NULL when the answer has none. */
static const char *token_entry_accept(struct token_entry *entry, json_t *root)
{
  struct token_cache *cache = entry->cache;
  const char *token = json_string_value(json_object_get(root, "access_token"));
  const char *refresh
      = json_string_value(json_object_get(root, "refresh_token"));
  int64_t lifetime_ms = token_cache_expires_in(root) * 1000;
  int64_t margin = lifetime_ms / 10;

  if (!token || !*token)
    return NULL;
  if (margin > TOKEN_CACHE_MARGIN_MS)
    margin = TOKEN_CACHE_MARGIN_MS;
  free(entry->token);
  entry->token = xstrdup(token);
  entry->refresh_at = (int64_t) uv_now(cache->loop) + lifetime_ms - margin;

  /* Refresh tokens rotate: the new one replaces the stored one each time. */
  if (token_cache_delegated(cache) && refresh && *refresh)
    token_store_write(cache, entry->key, refresh);
  log_trace(LOG_TRACE_GRAPH, "%s token refreshed expires_in=%lld",
            *entry->key ? entry->key : "-", (long long) (lifetime_ms / 1000));
  return entry->token;
}

static void token_entry_on_http(void *arg, const struct http_response *resp)
{
  struct token_entry *entry = arg;
  struct token_result res = { 0 };
  char fallback[96];
  json_t *root = NULL;

  /* Not "network": to Graph's callers that means a request that may have
   * reached Graph, and nothing has been sent to Graph yet. */
  if (resp->status == 0) {
    res.error = "token_network";
    res.description = resp->curl_message;
    goto out;
  }
  root = json_loadb(resp->body, resp->body_len, 0, NULL);
  if (resp->status == 200 && root
      && (res.token = token_entry_accept(entry, root)) != NULL)
    goto out;

  res.error = json_string_value(json_object_get(root, "error"));
  res.description
      = json_string_value(json_object_get(root, "error_description"));
  if (!res.error) {
    res.error = resp->status >= 500 ? "temporarily_unavailable" : "http_error";
    snprintf(fallback, sizeof(fallback),
             "token endpoint answered HTTP %ld without an OAuth error",
             resp->status);
    res.description = fallback;
  }
  res.permanent = token_cache_error_permanent(
      resp->status, res.error, json_object_get(root, "error_codes"),
      res.description);
  if (res.permanent && token_cache_delegated(entry->cache))
    token_store_mark_relink(entry->cache, entry->key, res.error,
                            res.description);

out:
  if (!res.token) {
    const char *desc = res.description ? res.description : "";
    char esc_error[96];
    char esc_desc[256];

    log_warn(
        "%s token refresh_failed status=%ld error=%s permanent=%d"
        " description=\"%s\"",
        *entry->key ? entry->key : "-", resp->status,
        log_escape(esc_error, sizeof(esc_error), res.error, strlen(res.error)),
        res.permanent,
        log_escape(esc_desc, sizeof(esc_desc), desc, strlen(desc)));
  }
  token_entry_finish(entry, &res);
  json_decref(root);
}

/* Builds the token request body for entry into *out. Returns 0, or for a
 * delegated user token_store_read's error, or -EACCES when the client
 * cannot authenticate (certificate unreadable; logged). */
static int token_entry_form(struct token_entry *entry, char **out)
{
  struct token_cache *cache = entry->cache;
  char *form = NULL;
  char *refresh = NULL;
  int rc = 0;

  if (token_cache_delegated(cache)
      && (rc = token_store_read(cache, entry->key, &refresh)) < 0)
    return rc;
  if (client_auth_form_add(cache->cfg, (int64_t) time(NULL), &form) < 0) {
    rc = -EACCES;
    goto out;
  }
  if (refresh) {
    client_auth_form_field(&form, "grant_type", "refresh_token");
    client_auth_form_field(&form, "refresh_token", refresh);
    client_auth_form_field(&form, "scope",
                           TOKEN_CACHE_USER_SCOPES " offline_access");
  } else {
    client_auth_form_field(&form, "grant_type", "client_credentials");
    client_auth_form_field(&form, "scope", TOKEN_CACHE_SCOPE);
  }
  *out = form;
  form = NULL;

out:
  free(form);
  if (refresh) {
    explicit_bzero(refresh, strlen(refresh));
    free(refresh);
  }
  return rc;
}

static void token_entry_refresh(struct token_entry *entry)
{
  struct token_cache *cache = entry->cache;
  static const char *const headers[] = {
    "Content-Type: application/x-www-form-urlencoded",
    "Accept: application/json",
    NULL,
  };
  struct token_result res = { 0 };
  struct http_request req = { 0 };
  char *url = NULL;
  char *form = NULL;
  int rc;

  assert(!entry->refreshing);
  entry->refreshing = true;
  cache->refreshing++;

  rc = token_entry_form(entry, &form);
  if (rc == -ENOENT) {
    res.error = "not_linked";
    res.description = "no refresh token is stored for this mailbox";
    res.permanent = true;
  } else if (rc == -EBADMSG) {
    res.error = "token_unreadable";
    res.description = "the stored refresh token cannot be decrypted with "
                      "the current key file";
    res.permanent = true;
    token_store_mark_relink(cache, entry->key, res.error, res.description);
  } else if (rc == -EACCES) {
    /* Our configuration, not the user's grant: never a re-link. */
    res.error = "client_auth";
    res.description = "the client certificate or key cannot be used";
  } else if (rc < 0) {
    res.error = "store";
    res.description = "the database could not be read; retried later";
  }
  if (rc < 0) {
    token_entry_finish(entry, &res);
    return;
  }
  url = xasprintf("%s/%s/oauth2/v2.0/token", cache->cfg->login_base_url,
                  cache->cfg->tenant ? cache->cfg->tenant : "");
  req.method = "POST";
  req.url = url;
  req.headers = headers;
  req.body = form;
  req.body_len = strlen(form);
  req.timeout_ms = TOKEN_CACHE_TIMEOUT_MS;
  if (http_client_send(cache->http, &req, token_entry_on_http, entry) < 0) {
    res.error = "token_network";
    res.description = "the HTTP client is shutting down";
    token_entry_finish(entry, &res);
  }
  explicit_bzero(form, strlen(form));
  free(form);
  free(url);
}

static struct token_entry *token_cache_entry(struct token_cache *cache,
                                             const char *mailbox)
{
  struct token_entry *entry;
  char *key = xstrdup(token_cache_delegated(cache) && mailbox ? mailbox : "");

  for (char *p = key; *p; p++)
    *p = (char) tolower((unsigned char) *p);
  for (entry = cache->entries; entry; entry = entry->next) {
    if (strcmp(entry->key, key) == 0) {
      free(key);
      return entry;
    }
  }
  entry = xcalloc(1, sizeof(*entry));
  entry->cache = cache;
  entry->key = key;
  entry->waiters_tail = &entry->waiters;
  entry->next = cache->entries;
  cache->entries = entry;
  return entry;
}

int token_cache_new(uv_loop_t *loop, struct http_client *http,
                    const struct config *cfg, struct store *store,
                    struct token_crypt *crypt, struct token_cache **out)
{
  struct token_cache *cache;

  if (cfg->link_mode != CONFIG_LINK_APPLICATION && (!store || !crypt))
    return -EINVAL;
  cache = xcalloc(1, sizeof(*cache));
  cache->loop = loop;
  cache->http = http;
  cache->cfg = cfg;
  cache->store = store;
  cache->crypt = crypt;
  *out = cache;
  return 0;
}

void token_cache_get(struct token_cache *cache, const char *mailbox,
                     token_cache_cb cb, void *arg)
{
  struct token_entry *entry;
  struct token_waiter *w;

  assert(!cache->freeing);
  entry = token_cache_entry(cache, mailbox);
  if (entry->token && (int64_t) uv_now(cache->loop) < entry->refresh_at) {
    cb(arg, entry->token, NULL, NULL, false);
    return;
  }
  if (entry->nwaiters >= TOKEN_CACHE_MAX_WAITERS) {
    log_warn("%s token too_many_waiters limit=%d",
             *entry->key ? entry->key : "-", TOKEN_CACHE_MAX_WAITERS);
    cb(arg, NULL, "too_many_waiters", "too many requests wait for a token",
       false);
    return;
  }

  w = xcalloc(1, sizeof(*w));
  w->cb = cb;
  w->arg = arg;
  *entry->waiters_tail = w;
  entry->waiters_tail = &w->next;
  entry->nwaiters++;
  if (!entry->refreshing)
    token_entry_refresh(entry);
}

void token_cache_invalidate(struct token_cache *cache, const char *mailbox)
{
  struct token_entry *entry = token_cache_entry(cache, mailbox);

  /* A refresh already on its way will bring a new token anyway. */
  free(entry->token);
  entry->token = NULL;
}

void token_cache_free(struct token_cache *cache)
{
  if (!cache)
    return;
  cache->freeing = true;
  if (cache->refreshing == 0)
    token_cache_destroy(cache);
}
