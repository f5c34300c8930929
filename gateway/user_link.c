/* SPDX-License-Identifier: MIT */
/* Per-user linking over HTTP (see include/user_link.h): start links, the
 * authorization code flow with PKCE (graph-api.md 1.4), the check that the
 * account that signed in is the one the link was for, and Nextal's API. */
#include "user_link.h"

#include <curl/curl.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <libxml/HTMLtree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "audit.h"
#include "client_auth.h"
#include "link_url.h"
#include "links.h"
#include "log.h"
#include "base64url.h"
#include "http_page.h"
#include "xalloc.h"

#define USER_LINK_PARAM_MAX 2048 /* longest query value we accept */
#define USER_LINK_CREDENTIAL_MAX 256
#define USER_LINK_RANDOM_BYTES 32 /* state and PKCE verifier entropy */
#define USER_LINK_TIMEOUT_MS 30000L
#define USER_LINK_ACTOR "nextal" /* audit actor for the service's requests */

/* Mail and calendar as the user, a refresh token, an id_token that names
 * who signed in (graph-api.md 1.4), and User.Read for GET /me, which is
 * how the agent learns the account's mail address and UPN (the id_token's
 * preferred_username is only sent with the profile scope and is often
 * the UPN, not the mail address: learn.microsoft.com/en-us/entra/
 * identity-platform/id-token-claims-reference). profile also brings the
 * display name the link records. */
#define USER_LINK_SCOPE                                                        \
  "openid profile offline_access "                                             \
  "https://graph.microsoft.com/User.Read " TOKEN_CACHE_USER_SCOPES

/* One sign-in waiting for the token endpoint, or one application-mode
 * lookup waiting for Graph. */
struct user_link_call {
  struct user_link_deps *deps;
  struct http_exchange *ex;
  char *address; /* the user the start link was for */
  char *verifier;
  json_t *answer; /* the token endpoint's answer, while /me is asked */
};

/* ---- answers ------------------------------------------------------------ */

/* Answers with a JSON value and releases it. */
static void user_link_json(struct http_exchange *ex, int status, json_t *value)
{
  static const char *const headers[]
      = { "Content-Type: application/json", "Cache-Control: no-store", NULL };
  char *text = json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS);

  json_decref(value);
  if (text == NULL)
    abort(); /* jansson fails here only when out of memory */
  http_exchange_respond(ex, status, headers, text, strlen(text));
  free(text);
}

static void user_link_json_error(struct http_exchange *ex, int status,
                                 const char *code, const char *message)
{
  user_link_json(ex, status,
                 json_pack("{s:s, s:s}", "error", code, "message", message));
}

static const char *user_link_param(struct http_exchange *ex, const char *name)
{
  const char *value = NULL;

  if (http_exchange_query(ex, name, &value) < 0 || value == NULL
      || strlen(value) > USER_LINK_PARAM_MAX)
    return NULL;
  return value;
}

static void user_link_call_free(struct user_link_call *call)
{
  json_decref(call->answer);
  free(call->address);
  if (call->verifier != NULL) {
    explicit_bzero(call->verifier, strlen(call->verifier));
    free(call->verifier);
  }
  free(call);
}

/* Appends "ADDRESS: what" to the audit trail. */
static void user_link_audit(struct user_link_deps *deps, const char *action,
                            const char *address, const char *what)
{
  char *detail = xasprintf("%s: %s", address, what);

  if (audit_record(deps->store, "agent", action, detail) < 0)
    log_error("- link audit_failed action=%s", action);
  free(detail);
}

static char *user_link_random(void)
{
  unsigned char rnd[USER_LINK_RANDOM_BYTES];

  if (gnutls_rnd(GNUTLS_RND_NONCE, rnd, sizeof(rnd)) < 0)
    abort(); /* no randomness: going on would hand out guessable state */
  return base64url_encode(rnd, sizeof(rnd));
}

/* ---- GET /link/start ---------------------------------------------------- */

/* Verifies the start link and the policy; on success *address is the
 * normalised user. Answers the exchange itself otherwise. */
static int user_link_start_check(struct user_link_deps *deps,
                                 struct http_exchange *ex,
                                 char address[POLICY_ADDRESS_MAX])
{
  const char *user = user_link_param(ex, "user");
  const char *exp = user_link_param(ex, "exp");
  const char *sig = user_link_param(ex, "sig");
  enum link_url_verdict verdict;
  struct policy_decision d;
  char *text;
  char esc[160];

  if (user == NULL || exp == NULL || sig == NULL
      || policy_address_normalize(user, address, POLICY_ADDRESS_MAX) < 0) {
    http_page_respond(ex, 400, "Not a start link",
                      "This address links a mailbox when opened from the link "
                      "Nextal gives you; this one lacks its user, expiry or "
                      "signature.");
    return -EINVAL;
  }
  verdict = link_url_verify(deps->cfg->link_secret, user, exp, sig,
                            (int64_t) time(NULL));
  if (verdict != LINK_URL_OK) {
    log_warn("%s link start_refused user=%s verdict=%d peer=%s",
             http_exchange_request(ex)->conn_id,
             log_escape(esc, sizeof(esc), user, strlen(user)), (int) verdict,
             http_exchange_request(ex)->peer);
    text = xasprintf("Nothing was linked: %s.", link_url_verdict_text(verdict));
    http_page_respond(ex, 403, "Link refused", text);
    free(text);
    return -EPERM;
  }
  policy_gate_check(deps->gate, POLICY_REQUEST_LINK, address, &d);
  if (d.reason != POLICY_ALLOW) {
    log_info("- link start_denied user=%s code=%s", address, d.code);
    text = xasprintf("Your organisation's policy does not let %s link a "
                     "mailbox (%s): %s",
                     address, d.code, d.sentence);
    http_page_respond(ex, 403, "Link refused", text);
    free(text);
    return -EPERM;
  }
  return 0;
}

/* The authorize URL for a sign-in as address (graph-api.md 1.4). */
static char *user_link_authorize_url(const struct config *cfg,
                                     const char *address, const char *state,
                                     const char *challenge)
{
  char *redirect
      = xasprintf("%s%s", cfg->http_public_url, USER_LINK_CALLBACK_PATH);
  const char *values[]
      = { cfg->tenant, cfg->client_id, redirect, USER_LINK_SCOPE, address };
  char *esc[5];
  char *url;

  for (size_t i = 0; i < 5; i++) {
    esc[i] = curl_easy_escape(NULL, values[i], 0);
    if (esc[i] == NULL)
      abort(); /* curl fails here only when out of memory */
  }
  url = xasprintf("%s/%s/oauth2/v2.0/authorize?client_id=%s"
                  "&response_type=code&response_mode=query&redirect_uri=%s"
                  "&scope=%s&state=%s&code_challenge=%s"
                  "&code_challenge_method=S256&login_hint=%s",
                  cfg->login_base_url, esc[0], esc[1], esc[2], esc[3], state,
                  challenge, esc[4]);
  for (size_t i = 0; i < 5; i++)
    curl_free(esc[i]);
  free(redirect);
  return url;
}

static void user_link_start_delegated(struct user_link_deps *deps,
                                      struct http_exchange *ex,
                                      const char *address)
{
  const char *headers[] = { NULL, "Cache-Control: no-store", NULL };
  unsigned char digest[32];
  char *state = user_link_random();
  char *verifier = user_link_random();
  char *challenge = NULL;
  char *url = NULL;
  char *location = NULL;
  int rc;

  /* PKCE S256: the challenge is the verifier's SHA-256, base64url. */
  if (gnutls_hash_fast(GNUTLS_DIG_SHA256, verifier, strlen(verifier), digest)
      < 0)
    abort(); /* SHA-256 is always available in GnuTLS */
  challenge = base64url_encode(digest, sizeof(digest));
  rc = links_pending_put(deps->store, state, address, verifier,
                         USER_LINK_PENDING_S);
  if (rc < 0) {
    http_page_respond(ex, 503, "Try again later",
                      rc == -ENOSPC ? "Too many sign-ins are in progress; try "
                                      "again in a few minutes."
                                    : "The agent cannot record the sign-in.");
    goto out;
  }
  url = user_link_authorize_url(deps->cfg, address, state, challenge);
  location = xasprintf("Location: %s", url);
  headers[0] = location;
  log_info("- link sign_in_started user=%s", address);
  http_exchange_respond(ex, 302, headers, "", 0);

out:
  explicit_bzero(verifier, strlen(verifier));
  free(verifier);
  free(state);
  free(challenge);
  free(url);
  free(location);
}

/* Application mode: Graph must know the mailbox; then the link is
 * recorded (no per-user token exists in this mode). */
static void user_link_on_lookup(void *arg, const struct graph_response *resp)
{
  struct user_link_call *call = arg;
  json_t *user = NULL;
  char *text;

  if (resp->status == 200)
    user = json_loadb(resp->body, resp->body_len, 0, NULL);
  if (user != NULL && !json_is_string(json_object_get(user, "mail"))) {
    /* A directory user without an Exchange mailbox: Graph answers 200
     * with mail null. 404, as for an unknown address: what the link is
     * for, a mailbox, does not exist (Graph itself answers mail calls
     * for such a user with 404 MailboxNotEnabledForRESTAPI). */
    log_info("- link no_mailbox user=%s mode=application", call->address);
    text = xasprintf("%s is a user in your organisation but has no Exchange "
                     "Online mailbox, so Nextal cannot send mail or manage "
                     "a calendar for it. Nothing was linked; your "
                     "administrator must give the user a mailbox first.",
                     call->address);
    http_page_respond(call->ex, 404, "No mailbox", text);
  } else if (user != NULL
             && links_set_linked(
                    call->deps->store, call->address,
                    json_string_value(json_object_get(user, "id")),
                    json_string_value(json_object_get(user, "displayName")))
                    == 0) {
    user_link_audit(call->deps, "link", call->address,
                    "linked in application mode (start link)");
    log_info("- link linked user=%s mode=application", call->address);
    text = xasprintf("%s is linked: Nextal may now send mail and manage "
                     "interviews for this mailbox.",
                     call->address);
    http_page_respond(call->ex, 200, "Mailbox linked", text);
  } else if (resp->status == 404) {
    text = xasprintf("Microsoft 365 has no mailbox %s in your organisation "
                     "(%s), so nothing was linked.",
                     call->address, resp->error_code);
    http_page_respond(call->ex, 404, "No such mailbox", text);
  } else if (resp->status == 401 || resp->status == 403) {
    text = xasprintf("Microsoft refused to look up %s (%s): your "
                     "organisation's administrator must grant admin consent "
                     "first. Nothing was linked.",
                     call->address, resp->error_code);
    http_page_respond(call->ex, 403, "Not linked", text);
  } else {
    text = xasprintf("Microsoft did not answer the lookup of %s (%ld %s %s); "
                     "try again later.",
                     call->address, resp->status, resp->error_code,
                     resp->error_message);
    http_page_respond(call->ex, 502, "Not linked", text);
  }
  free(text);
  json_decref(user);
  user_link_call_free(call);
}

static void user_link_start_application(struct user_link_deps *deps,
                                        struct http_exchange *ex,
                                        const char *address)
{
  struct user_link_call *call = xcalloc(1, sizeof(*call));
  char *who = curl_easy_escape(NULL, address, 0);
  char *path;

  if (who == NULL)
    abort(); /* curl fails here only when out of memory */
  path = xasprintf("/v1.0/users/%s?$select=id,displayName,mail", who);
  call->deps = deps;
  call->ex = ex;
  call->address = xstrdup(address);
  graph_client_send(deps->graph,
                    &(struct graph_request){
                        .mailbox = address, .method = "GET", .path = path },
                    user_link_on_lookup, call);
  curl_free(who);
  free(path);
}

static void user_link_start(void *arg, struct http_exchange *ex)
{
  struct user_link_deps *deps = arg;
  char address[POLICY_ADDRESS_MAX];

  if (user_link_start_check(deps, ex, address) < 0)
    return;
  if (deps->cfg->link_mode == CONFIG_LINK_APPLICATION)
    user_link_start_application(deps, ex, address);
  else
    user_link_start_delegated(deps, ex, address);
}

/* ---- GET /oauth/callback ------------------------------------------------ */

/* The id_token's claims (its signature is not checked: it came straight
 * from the token endpoint over TLS, which OpenID Connect allows). */
static json_t *user_link_id_claims(const char *id_token)
{
  const char *dot1 = id_token ? strchr(id_token, '.') : NULL;
  const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
  char *payload;
  json_t *claims;

  if (dot2 == NULL)
    return NULL;
  payload = base64url_decode(dot1 + 1, (size_t) (dot2 - dot1 - 1));
  if (payload == NULL)
    return NULL;
  claims = json_loads(payload, 0, NULL);
  free(payload);
  return json_is_object(claims) ? claims : (json_decref(claims), NULL);
}

/* Stores the sealed refresh token and the link in one transaction. */
static int user_link_store(struct user_link_deps *deps, const char *address,
                           const char *refresh, json_t *claims)
{
  void *blob = NULL;
  size_t len = 0;
  int rc = token_crypt_seal(deps->crypt, address, refresh, strlen(refresh),
                            &blob, &len);

  if (rc < 0)
    return rc;
  if ((rc = store_begin(deps->store)) < 0)
    goto out;
  if ((rc
       = links_set_linked(deps->store, address,
                          json_string_value(json_object_get(claims, "oid")),
                          json_string_value(json_object_get(claims, "name"))))
          < 0
      || (rc = links_token_set(deps->store, address, blob, len)) < 0
      || (rc = store_commit(deps->store)) < 0)
    store_rollback(deps->store);

out:
  free(blob);
  return rc;
}

/* Whether the account /me describes is the one the link is for: its id
 * is the id_token's oid, and the address is its mail or its UPN (either
 * may differ from the other; both are case-insensitive). */
static bool user_link_account_matches(const char *address, json_t *claims,
                                      json_t *me)
{
  const char *oid = json_string_value(json_object_get(claims, "oid"));
  const char *id = json_string_value(json_object_get(me, "id"));
  const char *mail = json_string_value(json_object_get(me, "mail"));
  const char *upn = json_string_value(json_object_get(me, "userPrincipalName"));

  if (oid == NULL || id == NULL || strcasecmp(oid, id) != 0)
    return false;
  return (mail != NULL && strcasecmp(mail, address) == 0)
         || (upn != NULL && strcasecmp(upn, address) == 0);
}

/* Refuses a sign-in by another account: nothing is stored. */
static void user_link_refuse_account(struct user_link_call *call, json_t *me)
{
  const char *who = json_string_value(json_object_get(me, "mail"));
  char *text;
  char esc[160];

  if (who == NULL)
    who = json_string_value(json_object_get(me, "userPrincipalName"));
  if (who == NULL || strcasecmp(who, call->address) == 0)
    who = "an account Microsoft did not confirm"; /* /me's id is not oid */
  /* Linking someone else's mailbox must be impossible. */
  log_warn("- link wrong_account expected=%s signed_in=%s", call->address,
           log_escape(esc, sizeof(esc), who, strlen(who)));
  text = xasprintf("refused: the sign-in was by %s", who);
  user_link_audit(call->deps, "link_refused", call->address, text);
  free(text);
  text = xasprintf("You signed in as %s, but this link is for %s. Nothing "
                   "was linked; sign out of Microsoft and open the link "
                   "again as %s.",
                   who, call->address, call->address);
  http_page_respond(call->ex, 403, "Wrong account", text);
  free(text);
}

/* The code was redeemed and Graph said who signed in (me): checks the
 * policy and the account, then links. */
static void user_link_accept(struct user_link_call *call, json_t *me)
{
  struct user_link_deps *deps = call->deps;
  const char *refresh
      = json_string_value(json_object_get(call->answer, "refresh_token"));
  json_t *claims = user_link_id_claims(
      json_string_value(json_object_get(call->answer, "id_token")));
  struct policy_decision d;
  char *text = NULL;

  /* The policy may have changed while the user was signing in. */
  policy_gate_check(deps->gate, POLICY_REQUEST_LINK, call->address, &d);
  if (d.reason != POLICY_ALLOW) {
    text = xasprintf("Your organisation's policy no longer lets %s link a "
                     "mailbox (%s): %s",
                     call->address, d.code, d.sentence);
    http_page_respond(call->ex, 403, "Link refused", text);
  } else if (claims == NULL || refresh == NULL) {
    http_page_respond(call->ex, 502, "Not linked",
                      "Microsoft's answer named no signed-in account or "
                      "carried no refresh token; nothing was linked.");
  } else if (!user_link_account_matches(call->address, claims, me)) {
    user_link_refuse_account(call, me);
  } else if (user_link_store(deps, call->address, refresh, claims) < 0) {
    http_page_respond(call->ex, 500, "Not linked",
                      "The agent could not store the link; try again later.");
  } else {
    token_cache_invalidate(deps->tokens, call->address);
    user_link_audit(deps, "link", call->address,
                    "linked by the user's own sign-in (delegated)");
    log_info("- link linked user=%s mode=delegated", call->address);
    text = xasprintf("%s is linked: Nextal may now send mail and manage "
                     "interviews as you. You can close this page.",
                     call->address);
    http_page_respond(call->ex, 200, "Mailbox linked", text);
  }
  free(text);
  json_decref(claims);
}

static void user_link_on_me(void *arg, const struct http_response *resp)
{
  struct user_link_call *call = arg;
  json_t *me = resp->status == 200
                   ? json_loadb(resp->body, resp->body_len, 0, NULL)
                   : NULL;
  char status[16];
  char *text;

  snprintf(status, sizeof(status), "%ld", resp->status);
  if (json_is_object(me)) {
    user_link_accept(call, me);
  } else {
    log_warn("- link whoami_failed user=%s status=%ld", call->address,
             resp->status);
    text = xasprintf("Microsoft did not say which account signed in (%s%s); "
                     "nothing was linked. Open the link from Nextal again.",
                     resp->status ? "Graph answered " : "no answer: ",
                     resp->status ? status : resp->curl_message);
    http_page_respond(call->ex, 502, "Not linked", text);
    free(text);
  }
  json_decref(me);
  user_link_call_free(call);
}

/* Asks Graph, with the new delegated access token, who signed in (GET
 * /me, graph-api.md 1.4): the id_token alone cannot say whether the
 * account owns the address. Takes call; answers the exchange later. */
static void user_link_ask_me(struct user_link_call *call, json_t *answer)
{
  const char *token
      = json_string_value(json_object_get(answer, "access_token"));
  char *auth = NULL;
  char *url = NULL;
  const char *headers[] = { NULL, "Accept: application/json", NULL };

  call->answer = json_incref(answer);
  if (token == NULL) {
    http_page_respond(call->ex, 502, "Not linked",
                      "Microsoft's answer carried no access token; nothing "
                      "was linked.");
    user_link_call_free(call);
    return;
  }
  auth = xasprintf("Authorization: Bearer %s", token);
  url = xasprintf("%s/v1.0/me?$select=id,mail,userPrincipalName",
                  call->deps->cfg->graph_base_url);
  headers[0] = auth;
  if (http_client_send(
          call->deps->http,
          &(struct http_request){ .method = "GET",
                                  .url = url,
                                  .headers = headers,
                                  .timeout_ms = USER_LINK_TIMEOUT_MS },
          user_link_on_me, call)
      < 0) {
    http_page_respond(call->ex, 503, "Not linked",
                      "The agent is shutting down; try again in a minute.");
    user_link_call_free(call);
  }
  explicit_bzero(auth, strlen(auth));
  free(auth);
  free(url);
}

static void user_link_on_token(void *arg, const struct http_response *resp)
{
  struct user_link_call *call = arg;
  json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
  const char *error = json_string_value(json_object_get(root, "error"));
  const char *desc
      = json_string_value(json_object_get(root, "error_description"));
  char *text;

  if (resp->status == 200 && root != NULL) {
    user_link_ask_me(call, root);
    json_decref(root);
    return;
  }
  log_warn("- link code_exchange_failed user=%s status=%ld error=%s",
           call->address, resp->status, error ? error : "-");
  text = xasprintf("Microsoft did not complete the sign-in (%s): %s "
                   "Nothing was linked; open the link from Nextal again.",
                   error          ? error
                   : resp->status ? "no answer"
                                  : "network",
                   desc ? desc : resp->curl_message);
  http_page_respond(call->ex, 502, "Not linked", text);
  free(text);
  json_decref(root);
  user_link_call_free(call);
}

/* Redeems the code without blocking the loop; the answer comes later. */
static void user_link_redeem(struct user_link_call *call, const char *code)
{
  static const char *const headers[]
      = { "Content-Type: application/x-www-form-urlencoded",
          "Accept: application/json", NULL };
  const struct config *cfg = call->deps->cfg;
  char *redirect
      = xasprintf("%s%s", cfg->http_public_url, USER_LINK_CALLBACK_PATH);
  char *url
      = xasprintf("%s/%s/oauth2/v2.0/token", cfg->login_base_url, cfg->tenant);
  char *form = NULL;
  struct http_request req = { .method = "POST",
                              .url = url,
                              .headers = headers,
                              .timeout_ms = USER_LINK_TIMEOUT_MS };

  if (client_auth_form_add(cfg, (int64_t) time(NULL), &form) < 0) {
    http_page_respond(call->ex, 500, "Not linked",
                      "The agent cannot authenticate to Microsoft (its client "
                      "certificate is unusable); tell your administrator.");
    user_link_call_free(call);
    goto out;
  }
  client_auth_form_field(&form, "grant_type", "authorization_code");
  client_auth_form_field(&form, "code", code);
  client_auth_form_field(&form, "redirect_uri", redirect);
  client_auth_form_field(&form, "code_verifier", call->verifier);
  client_auth_form_field(&form, "scope", USER_LINK_SCOPE);
  req.body = form;
  req.body_len = strlen(form);
  if (http_client_send(call->deps->http, &req, user_link_on_token, call) < 0) {
    http_page_respond(call->ex, 503, "Not linked",
                      "The agent is shutting down; try again in a minute.");
    user_link_call_free(call);
  }
  explicit_bzero(form, strlen(form));

out:
  free(form);
  free(url);
  free(redirect);
}

static void user_link_callback(void *arg, struct http_exchange *ex)
{
  struct user_link_deps *deps = arg;
  const char *state = user_link_param(ex, "state");
  const char *code = user_link_param(ex, "code");
  const char *error = user_link_param(ex, "error");
  struct user_link_call *call;
  char *address = NULL, *verifier = NULL;
  char *text;
  int rc = state ? links_pending_take(deps->store, state, &address, &verifier)
                 : -ENOENT;

  if (rc == 0 && *address == '\0') {
    /* An admin consent state: never a user's sign-in. */
    free(address);
    free(verifier);
    rc = -ENOENT;
  }
  if (rc < 0) {
    http_page_respond(
        ex, 400, "Sign-in not recognised",
        rc == -ETIMEDOUT ? "This sign-in took too long or was already used; "
                           "open the link from Nextal again."
                         : "This sign-in was not started by this agent, or was "
                           "already completed; open the link from Nextal "
                           "again.");
    return;
  }
  if (error != NULL || code == NULL) {
    const char *desc = user_link_param(ex, "error_description");

    log_info("- link sign_in_refused user=%s error=%s", address,
             error ? "microsoft" : "no_code");
    text = xasprintf("Microsoft did not link %s (%s). %s Nothing was linked; "
                     "you can open the link from Nextal again.",
                     address, error ? error : "no authorization code",
                     desc ? desc : "");
    http_page_respond(ex, 403, "Not linked", text);
    free(text);
    free(address);
    free(verifier);
    return;
  }
  call = xcalloc(1, sizeof(*call));
  call->deps = deps;
  call->ex = ex;
  call->address = address;
  call->verifier = verifier;
  user_link_redeem(call, code);
}

/* ---- /v1/links/ADDRESS -------------------------------------------------- */

static bool user_link_api_auth(struct user_link_deps *deps,
                               struct http_exchange *ex)
{
  static const char *const headers[]
      = { "WWW-Authenticate: Basic realm=\"nextal\", charset=\"UTF-8\"",
          "Content-Type: application/json", NULL };
  static const char body[] = "{\"error\":\"unauthorized\"}";
  char user[USER_LINK_CREDENTIAL_MAX];
  char pass[USER_LINK_CREDENTIAL_MAX];
  bool ok = false;

  if (http_exchange_basic_auth(ex, user, sizeof(user), pass, sizeof(pass)) == 0)
    ok = credential_check(deps->credential, user, pass) == 0;
  explicit_bzero(pass, sizeof(pass));
  if (!ok) {
    log_info("%s link auth_failed peer=%s", http_exchange_request(ex)->conn_id,
             http_exchange_request(ex)->peer);
    http_exchange_respond(ex, 401, headers, body, sizeof(body) - 1);
  }
  return ok;
}

static void user_link_api_get(struct user_link_deps *deps,
                              struct http_exchange *ex, const char *address)
{
  struct link_entry e;
  char when[32] = "";
  int rc = links_entry_get(deps->store, address, &e);

  if (rc == -EIO) {
    user_link_json_error(ex, 500, "store", "cannot read the database");
    return;
  }
  if (e.linked_at > 0) {
    time_t t = (time_t) (e.linked_at / 1000);
    struct tm tm;

    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
  }
  user_link_json(
      ex, 200,
      json_pack("{s:s, s:s, s:s?, s:s?}", "address", address, "state",
                rc == -ENOENT               ? "not_linked"
                : e.state == POLICY_LINK_OK ? "linked"
                                            : "needs_relink",
                "reason", e.reason, "linked_at", when[0] ? when : NULL));
  links_entry_clear(&e);
}

static void user_link_api_delete(struct user_link_deps *deps,
                                 struct http_exchange *ex, const char *address)
{
  char *detail = NULL;
  int rc = links_unlink(deps->store, USER_LINK_ACTOR, address, &detail);

  if (rc == -ENOENT) {
    user_link_json_error(ex, 404, "not_linked",
                         "the user is not linked and has no queued mail");
    return;
  }
  if (rc < 0) {
    user_link_json_error(ex, 500, "store", "cannot update the database");
    return;
  }
  token_cache_invalidate(deps->tokens, address);
  log_info("- link unlinked user=%s actor=%s", address, USER_LINK_ACTOR);
  user_link_json(ex, 200,
                 json_pack("{s:s, s:s, s:s}", "address", address, "state",
                           "not_linked", "detail", detail));
  free(detail);
}

static void user_link_api_start_url(struct user_link_deps *deps,
                                    struct http_exchange *ex,
                                    const char *address)
{
  struct policy_decision d;
  char *url = NULL;
  int64_t exp = 0;

  policy_gate_check(deps->gate, POLICY_REQUEST_LINK, address, &d);
  if (d.reason != POLICY_ALLOW) {
    user_link_json_error(ex, 403, d.code, d.sentence);
    return;
  }
  if (link_url_build(deps->cfg, address, (int64_t) time(NULL), &url, &exp)
      < 0) {
    user_link_json_error(ex, 503, "no_link_secret",
                         "the agent has no link_secret configured");
    return;
  }
  user_link_json(ex, 200,
                 json_pack("{s:s, s:s, s:I}", "address", address, "url", url,
                           "expires_at", (json_int_t) exp));
  free(url);
}

/* Routes /v1/links/ADDRESS and /v1/links/ADDRESS/start-url. */
static void user_link_api(void *arg, struct http_exchange *ex)
{
  struct user_link_deps *deps = arg;
  const struct http_server_request *req = http_exchange_request(ex);
  const char *rest = req->path + strlen(USER_LINK_API_PATH);
  const char *slash;
  char norm[POLICY_ADDRESS_MAX];
  char *raw = NULL;
  bool start_url;

  if (!user_link_api_auth(deps, ex))
    return;
  slash = *rest == '/' ? strchr(rest + 1, '/') : NULL;
  start_url = slash != NULL && strcmp(slash, "/start-url") == 0;
  if (*rest != '/' || (slash != NULL && !start_url)
      || http_percent_decode(
             rest + 1, slash ? (size_t) (slash - rest - 1) : strlen(rest + 1),
             0, &raw)
             < 0
      || policy_address_normalize(raw, norm, sizeof(norm)) < 0) {
    user_link_json_error(ex, 404, "not_found",
                         "expected /v1/links/ADDRESS[/start-url]");
  } else if (start_url && strcmp(req->method, "POST") == 0) {
    user_link_api_start_url(deps, ex, norm);
  } else if (!start_url && strcmp(req->method, "GET") == 0) {
    user_link_api_get(deps, ex, norm);
  } else if (!start_url && strcmp(req->method, "DELETE") == 0) {
    user_link_api_delete(deps, ex, norm);
  } else {
    static const char *const headers[]
        = { "Allow: GET, DELETE (POST for .../start-url)",
            "Content-Type: application/json", NULL };
    static const char body[] = "{\"error\":\"method_not_allowed\"}";

    http_exchange_respond(ex, 405, headers, body, sizeof(body) - 1);
  }
  free(raw);
}

int user_link_register(struct http_router *router, struct user_link_deps *deps)
{
  int rc;

  if ((rc
       = http_router_add(router, "GET", LINK_URL_PATH, user_link_start, deps))
          < 0
      || (rc = http_router_add(router, "GET", USER_LINK_CALLBACK_PATH,
                               user_link_callback, deps))
             < 0
      || (rc = http_router_add(router, NULL, USER_LINK_API_PATH, user_link_api,
                               deps))
             < 0)
    return rc;
  if (deps->cfg->link_secret == NULL || *deps->cfg->link_secret == '\0')
    log_warn("- link no_link_secret: start links are refused until "
             "[microsoft] link_secret is set");
  return 0;
}
