/* SPDX-License-Identifier: MIT */
/* Application-mode linking for the CLI (see include/policy_link.h). */
#include "policy_link.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "client_auth.h"
#include "links.h"
#include "token_cache.h"
#include "xalloc.h"

#define POLICY_LINK_BODY_MAX (1 << 20)
#define POLICY_LINK_TIMEOUT_MS 30000L

struct policy_link_buffer {
  char *data;
  size_t len;
};

static size_t policy_link_collect(char *ptr, size_t size, size_t nmemb,
                                  void *arg)
{
  struct policy_link_buffer *buf = arg;
  size_t n = size * nmemb;

  if (buf->len + n > POLICY_LINK_BODY_MAX)
    return 0;
  buf->data = xrealloc(buf->data, buf->len + n + 1);
  memcpy(buf->data + buf->len, ptr, n);
  buf->len += n;
  buf->data[buf->len] = '\0';
  return n;
}

/* One blocking request; returns the HTTP status (0 if none) and the body
 * in *body (freed by the caller). */
static long policy_link_fetch(const char *url, const char *form,
                              const char *bearer, json_t **body)
{
  struct policy_link_buffer buf = { NULL, 0 };
  struct curl_slist *headers = NULL;
  CURL *curl = curl_easy_init();
  char *auth = NULL;
  long status = 0;

  if (curl == NULL)
    return 0;
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, POLICY_LINK_TIMEOUT_MS);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, policy_link_collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &buf);
  if (form != NULL)
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, form);
  if (bearer != NULL) {
    auth = xasprintf("Authorization: Bearer %s", bearer);
    headers = curl_slist_append(headers, auth);
    headers = curl_slist_append(headers, "Accept: application/json");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  }
  if (curl_easy_perform(curl) == CURLE_OK)
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  *body = buf.data ? json_loadb(buf.data, buf.len, 0, NULL) : NULL;
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  free(auth);
  free(buf.data);
  return status;
}

/* Client-credentials token (graph-api.md 1.3); NULL with msg set. */
static char *policy_link_token(const struct config *cfg, char *msg,
                               size_t msglen)
{
  char *form = NULL;
  char *url
      = xasprintf("%s/%s/oauth2/v2.0/token", cfg->login_base_url, cfg->tenant);
  json_t *body = NULL;
  long status = 0;
  const char *token = NULL;
  char *out = NULL;

  if (client_auth_form_add(cfg, (int64_t) time(NULL), &form) < 0) {
    snprintf(msg, msglen,
             "the client certificate or key cannot be used "
             "(see the message above)");
    goto out;
  }
  client_auth_form_field(&form, "grant_type", "client_credentials");
  client_auth_form_field(&form, "scope", TOKEN_CACHE_SCOPE);
  status = policy_link_fetch(url, form, NULL, &body);
  token = json_string_value(json_object_get(body, "access_token"));
  if (status == 200 && token != NULL)
    out = xstrdup(token);
  else if (status == 0)
    snprintf(msg, msglen, "cannot reach the token endpoint %s", url);
  else
    snprintf(msg, msglen, "the token endpoint refused the client: %s",
             json_string_value(json_object_get(body, "error_description"))
                 ?: "no description");

out:
  json_decref(body);
  free(form);
  free(url);
  return out;
}

int policy_link_token_check(const struct config *cfg, char *msg, size_t msglen)
{
  char *token = policy_link_token(cfg, msg, msglen);

  if (token == NULL)
    return -EIO;
  explicit_bzero(token, strlen(token));
  free(token);
  snprintf(msg, msglen, "the client-credentials grant returned a token");
  return 0;
}

static int policy_link_decide(const struct config *cfg, struct store *store,
                              const char *address, char *msg, size_t msglen)
{
  struct policy *policy = NULL;
  struct policy_facts facts = { .link = POLICY_LINK_NONE };
  struct tenant_consent consent;
  struct policy_decision d;
  char err[512];

  if (policy_load(cfg->policy_file, &policy, err, sizeof(err)) < 0) {
    snprintf(msg, msglen, "the policy file is not valid: %s", err);
    return -EPERM;
  }
  if (tenant_consent_get(store, &consent) == 0)
    facts.consent_granted = consent.state == TENANT_CONSENT_GRANTED;
  policy_decide(policy, POLICY_REQUEST_LINK, address, &facts, &d);
  policy_free(policy);
  if (d.reason == POLICY_ALLOW)
    return 0;
  snprintf(msg, msglen, "%s: %s", d.code, d.sentence);
  return -EPERM;
}

static int policy_link_lookup(const struct config *cfg, const char *token,
                              const char *address, json_t **user, char *msg,
                              size_t msglen)
{
  char *who = curl_easy_escape(NULL, address, 0);
  char *url = xasprintf("%s/v1.0/users/%s?$select=id,displayName,mail",
                        cfg->graph_base_url, who);
  long status = policy_link_fetch(url, NULL, token, user);
  const char *code = json_string_value(
      json_object_get(json_object_get(*user, "error"), "code"));

  curl_free(who);
  free(url);
  if (status == 200 && !json_is_string(json_object_get(*user, "mail"))) {
    /* Graph answers 200 with mail null for a user without an Exchange
     * mailbox: nothing Nextal could send from. */
    snprintf(msg, msglen,
             "%s is a user without an Exchange Online mailbox (mail is "
             "empty in Microsoft 365); give the user a mailbox first",
             address);
    return -ENOENT;
  }
  if (status == 200)
    return 0;
  if (status == 404) {
    snprintf(msg, msglen, "Microsoft 365 has no mailbox %s (%s)", address,
             code ? code : "404");
    return -ENOENT;
  }
  if (status == 401 || status == 403) {
    snprintf(msg, msglen,
             "Graph refused to look up %s (%s): is admin consent granted?",
             address, code ? code : "forbidden");
    return -EACCES;
  }
  snprintf(msg, msglen, "Graph did not answer the lookup of %s (status %ld)",
           address, status);
  return -EIO;
}

int policy_link_application(const struct config *cfg, struct store *store,
                            const char *address, char *msg, size_t msglen)
{
  json_t *user = NULL;
  char *token = NULL;
  int rc = policy_link_decide(cfg, store, address, msg, msglen);

  if (rc < 0)
    goto out;
  token = policy_link_token(cfg, msg, msglen);
  if (token == NULL) {
    rc = -EIO;
    goto out;
  }
  rc = policy_link_lookup(cfg, token, address, &user, msg, msglen);
  if (rc < 0)
    goto out;
  rc = links_set_linked(
      store, address, json_string_value(json_object_get(user, "id")),
      json_string_value(json_object_get(user, "displayName")));
  if (rc == 0)
    snprintf(msg, msglen, "%s is linked (application mode)", address);
  else
    snprintf(msg, msglen, "cannot record the link in the database");

out:
  json_decref(user);
  free(token);
  return rc;
}
