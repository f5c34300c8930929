/* SPDX-License-Identifier: MIT */
/* Records the outcome of the admin consent redirect (graph-api.md 1.2) and
 * explains a refusal in plain words, with Microsoft's own text below. */
#include "oauth_consent.h"

#include <libxml/HTMLtree.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "links.h"
#include "log.h"
#include "http_page.h"
#include "xalloc.h"

#define OAUTH_CONSENT_PARAM_MAX 1024

/* What a refusal means to the person who opened the consent link. */
enum oauth_consent_outcome {
  OAUTH_CONSENT_DECLINED,
  OAUTH_CONSENT_NEEDS_ADMIN,
  OAUTH_CONSENT_REQUIRED,
  OAUTH_CONSENT_UNKNOWN_APP,
  OAUTH_CONSENT_APP_SETUP,
  OAUTH_CONSENT_TRY_LATER,
  OAUTH_CONSENT_OTHER,
};

static const char *const oauth_consent_outcome_names[] = {
  [OAUTH_CONSENT_DECLINED] = "declined",
  [OAUTH_CONSENT_NEEDS_ADMIN] = "needs_admin",
  [OAUTH_CONSENT_REQUIRED] = "consent_required",
  [OAUTH_CONSENT_UNKNOWN_APP] = "unknown_app",
  [OAUTH_CONSENT_APP_SETUP] = "app_setup",
  [OAUTH_CONSENT_TRY_LATER] = "try_later",
  [OAUTH_CONSENT_OTHER] = "other",
};

/* What happened, then what to do. A consent link works only once, so every
 * next step starts from a new one. */
static const char *const oauth_consent_sentences[] = {
  [OAUTH_CONSENT_DECLINED]
  = "The permission request was declined or cancelled on Microsoft's "
    "consent page, so Nextal was given no access. If that was not "
    "intended, run nextal-policy consent-link for a new link and have an "
    "administrator open it and choose Accept.",
  [OAUTH_CONSENT_NEEDS_ADMIN]
  = "Only an administrator who may consent for the whole organisation "
    "(for example a Global Administrator) can allow Nextal, and the "
    "account that opened the link cannot. Run nextal-policy consent-link "
    "for a new link and ask such an administrator to open it.",
  [OAUTH_CONSENT_REQUIRED]
  = "Microsoft still needs an administrator's consent for the whole "
    "organisation before Nextal may use its mailboxes and calendars. Run "
    "nextal-policy consent-link for a new link and have an administrator "
    "open it and choose Accept.",
  [OAUTH_CONSENT_UNKNOWN_APP]
  = "Microsoft does not know, or does not accept, the application this "
    "agent presents: the client ID or tenant in the agent's configuration "
    "is probably wrong, or the app registration was removed or disabled. "
    "Ask whoever set up the agent to check them, then run nextal-policy "
    "consent-link for a new link.",
  [OAUTH_CONSENT_APP_SETUP]
  = "The application's registration in Microsoft Entra does not match what "
    "it asks for, so consent cannot be given yet. Whoever manages the "
    "registration must correct it (the details below say what Microsoft "
    "found); then run nextal-policy consent-link for a new link.",
  [OAUTH_CONSENT_TRY_LATER]
  = "Microsoft had a temporary problem and could not record the consent. "
    "Wait a few minutes, then run nextal-policy consent-link for a new "
    "link and open it again.",
  [OAUTH_CONSENT_OTHER]
  = "Microsoft did not grant consent. Pass the details below to your IT "
    "department; once the cause is fixed, run nextal-policy consent-link "
    "for a new link.",
};

/* AADSTS codes with a plainer meaning than their `error` value, from the
 * error code reference (graph-api.md [E-ERR], 1.7) and the consent
 * troubleshooting page
 * (learn.microsoft.com/entra/identity/enterprise-apps/
 * application-sign-in-unexpected-user-consent-error). Microsoft says to
 * react to `error`, not to the description; the code only picks the
 * sentence, and the answer is recorded and shown as it came. */
static const struct {
  long code;
  enum oauth_consent_outcome outcome;
} oauth_consent_codes[] = {
  { 65004, OAUTH_CONSENT_DECLINED },      /* UserDeclinedConsent */
  { 90094, OAUTH_CONSENT_NEEDS_ADMIN },   /* AdminConsentRequired */
  { 90095, OAUTH_CONSENT_NEEDS_ADMIN },   /* admin consent workflow */
  { 90093, OAUTH_CONSENT_NEEDS_ADMIN },   /* may not grant; policy blocks */
  { 65001, OAUTH_CONSENT_REQUIRED },      /* DelegationDoesNotExist */
  { 700016, OAUTH_CONSENT_UNKNOWN_APP },  /* app not found in the tenant */
  { 700011, OAUTH_CONSENT_UNKNOWN_APP },  /* app not found in the tenant */
  { 7000112, OAUTH_CONSENT_UNKNOWN_APP }, /* application disabled */
  { 70001, OAUTH_CONSENT_UNKNOWN_APP },   /* application disabled */
  { 90008, OAUTH_CONSENT_APP_SETUP },     /* must request User.Read */
  { 65005, OAUTH_CONSENT_APP_SETUP },     /* MisconfiguredApplication */
  { 650056, OAUTH_CONSENT_APP_SETUP },    /* misconfigured application */
  { 650057, OAUTH_CONSENT_APP_SETUP },    /* resource not in registration */
  { 650052, OAUTH_CONSENT_APP_SETUP },    /* service not subscribed */
  { 90090, OAUTH_CONSENT_TRY_LATER },     /* intermittent, retry */
  { 90033, OAUTH_CONSENT_TRY_LATER },     /* directory unavailable */
  { 90006, OAUTH_CONSENT_TRY_LATER },     /* temporarily unavailable */
  { 50033, OAUTH_CONSENT_TRY_LATER },     /* RetryableError */
};

/* The `error` values of the consent and authorization answers
 * (graph-api.md 1.2, 1.4), for an answer without a known code.
 * permission_denied is the v1 endpoint's "the admin canceled the
 * request"; access_denied may come without a description at all
 * (github.com/MicrosoftDocs/azure-docs/issues/41053). */
static const struct {
  const char *error;
  enum oauth_consent_outcome outcome;
} oauth_consent_errors[] = {
  { "access_denied", OAUTH_CONSENT_DECLINED },
  { "permission_denied", OAUTH_CONSENT_DECLINED },
  { "consent_required", OAUTH_CONSENT_REQUIRED },
  { "invalid_client", OAUTH_CONSENT_UNKNOWN_APP },
  { "unauthorized_client", OAUTH_CONSENT_UNKNOWN_APP },
  { "server_error", OAUTH_CONSENT_TRY_LATER },
  { "temporarily_unavailable", OAUTH_CONSENT_TRY_LATER },
};

static const char *oauth_consent_param(struct http_exchange *ex,
                                       const char *name)
{
  const char *value = NULL;

  if (http_exchange_query(ex, name, &value) < 0 || value == NULL
      || strlen(value) > OAUTH_CONSENT_PARAM_MAX)
    return NULL;
  return value;
}

/* The first "AADSTSnnnn" in description, or 0. */
static long oauth_consent_code(const char *description)
{
  const char *p = description ? strstr(description, "AADSTS") : NULL;
  char *end;
  long code;

  if (p == NULL || p[6] < '0' || p[6] > '9')
    return 0;
  code = strtol(p + 6, &end, 10);
  return end - (p + 6) <= 9 ? code : 0;
}

static enum oauth_consent_outcome oauth_consent_classify(const char *error,
                                                         long code)
{
  size_t ncodes = sizeof(oauth_consent_codes) / sizeof(*oauth_consent_codes);
  size_t nerrors = sizeof(oauth_consent_errors) / sizeof(*oauth_consent_errors);

  for (size_t i = 0; code != 0 && i < ncodes; i++) {
    if (oauth_consent_codes[i].code == code)
      return oauth_consent_codes[i].outcome;
  }
  for (size_t i = 0; i < nerrors; i++) {
    if (strcmp(oauth_consent_errors[i].error, error) == 0)
      return oauth_consent_errors[i].outcome;
  }
  return OAUTH_CONSENT_OTHER;
}

/* Microsoft's answer for the IT paragraph: line breaks kept, other control
 * characters and (when it is not valid UTF-8) non-ASCII bytes replaced,
 * so that libxml2 can escape all of it. */
static char *oauth_consent_details(const char *error, const char *description)
{
  char *text = xasprintf("error: %s\n%s", error,
                         description ? description : "(no description)");
  bool utf8 = xmlCheckUTF8((const xmlChar *) text) != 0;

  for (unsigned char *p = (unsigned char *) text; *p; p++) {
    if ((*p < 0x20 && *p != '\n') || *p == 0x7f || (*p >= 0x80 && !utf8))
      *p = *p == '\r' ? ' ' : '?';
  }
  return text;
}

/* The refusal page: title, the plain sentence, then Microsoft's answer for
 * IT in a <pre>, every text escaped by libxml2. */
static void oauth_consent_page(struct http_exchange *ex, const char *title,
                               const char *sentence, const char *details)
{
  static const char *const headers[]
      = { "Content-Type: text/html; charset=utf-8", "Cache-Control: no-store",
          NULL };
  xmlDocPtr doc = htmlNewDocNoDtD(NULL, NULL);
  xmlNodePtr html = xmlNewNode(NULL, BAD_CAST "html");
  xmlNodePtr body;
  xmlChar *out = NULL;
  int len = 0;

  xmlDocSetRootElement(doc, html);
  xmlNewTextChild(xmlNewChild(html, NULL, BAD_CAST "head", NULL), NULL,
                  BAD_CAST "title", BAD_CAST title);
  body = xmlNewChild(html, NULL, BAD_CAST "body", NULL);
  xmlNewTextChild(body, NULL, BAD_CAST "h1", BAD_CAST title);
  xmlNewTextChild(body, NULL, BAD_CAST "p", BAD_CAST sentence);
  xmlNewTextChild(body, NULL, BAD_CAST "p",
                  BAD_CAST "For your IT department, Microsoft's answer:");
  xmlNewTextChild(body, NULL, BAD_CAST "pre", BAD_CAST details);
  htmlDocDumpMemory(doc, &out, &len);
  http_exchange_respond(ex, 403, headers, (const char *) out, (size_t) len);
  xmlFree(out);
  xmlFreeDoc(doc);
}

/* A refusal is recorded unless a grant is: declining a later consent
 * request (or a non-administrator opening the link) does not take back
 * what Microsoft already granted, so it must not stop the integration. */
static void oauth_consent_refused(struct http_exchange *ex, struct store *store,
                                  const char *error, const char *description)
{
  long code = oauth_consent_code(description);
  enum oauth_consent_outcome outcome = oauth_consent_classify(error, code);
  struct tenant_consent before;
  bool granted = tenant_consent_get(store, &before) == 0
                 && before.state == TENANT_CONSENT_GRANTED;
  char *why = xasprintf("%s: %s", error, description ? description : "");
  char *details = oauth_consent_details(error, description);
  char esc[256];

  if (!granted)
    tenant_consent_record(store, false, NULL, why);
  log_warn("- http consent_refused error=%s code=%ld outcome=%s kept_grant=%d",
           log_escape(esc, sizeof(esc), error, strlen(error)), code,
           oauth_consent_outcome_names[outcome], granted);
  if (granted) {
    oauth_consent_page(ex, "Consent not changed",
                       "This consent request was not granted, but the "
                       "consent given earlier still stands: Nextal keeps "
                       "working and nothing was changed.",
                       details);
  } else {
    oauth_consent_page(ex, "Consent not granted",
                       oauth_consent_sentences[outcome], details);
  }
  free(details);
  free(why);
}

/* Takes the state the answer carries; true only for one that
 * `nextal-policy consent-link` issued and that was not used yet. Anyone
 * can send a browser here with made-up parameters (graph-api.md 1.2). */
static bool oauth_consent_state_ok(struct http_exchange *ex,
                                   struct store *store)
{
  const char *state = oauth_consent_param(ex, "state");
  char *address = NULL, *marker = NULL;
  bool ok;

  if (state == NULL || links_pending_take(store, state, &address, &marker) < 0)
    return false;
  ok = *address == '\0' && strcmp(marker, LINKS_CONSENT_MARKER) == 0;
  free(address);
  free(marker);
  return ok;
}

static void oauth_consent_handle(void *arg, struct http_exchange *ex)
{
  struct store *store = arg;
  const char *granted = oauth_consent_param(ex, "admin_consent");
  const char *error = oauth_consent_param(ex, "error");
  const char *tenant = oauth_consent_param(ex, "tenant");

  if (!oauth_consent_state_ok(ex, store)) {
    log_warn("%s http consent_state_unknown peer=%s",
             http_exchange_request(ex)->conn_id,
             http_exchange_request(ex)->peer);
    http_page_respond(ex, 400, "Consent answer not recognised",
                      "This answer does not belong to a consent link this "
                      "agent issued, or it was already used; nothing was "
                      "recorded. Run nextal-policy consent-link for a new "
                      "link.");
    return;
  }

  /* Microsoft's documented failure keeps admin_consent=True next to the
   * error, so the error decides. */
  if (error != NULL) {
    oauth_consent_refused(ex, store, error,
                          oauth_consent_param(ex, "error_description"));
    return;
  }
  if (granted == NULL || strcasecmp(granted, "true") != 0) {
    http_page_respond(ex, 400, "Not a consent answer",
                      "This address receives Microsoft's answer to the "
                      "admin consent link; open the link from "
                      "nextal-policy consent-link instead.");
    return;
  }
  /* The returned tenant is recorded for the operator, not trusted for
   * anything (graph-api.md 1.2): tokens are still requested for the
   * configured tenant. */
  tenant_consent_record(store, true, tenant, NULL);
  log_info("- http consent_granted tenant=%s", tenant ? tenant : "-");
  http_page_respond(ex, 200, "Consent granted",
                    "Nextal may now work with your organisation's Microsoft "
                    "365 mailboxes and calendars. Each user links their own "
                    "mailbox from Nextal.");
}

int oauth_consent_register(struct http_router *router, struct store *store)
{
  return http_router_add(router, "GET", OAUTH_CONSENT_PATH,
                         oauth_consent_handle, store);
}
