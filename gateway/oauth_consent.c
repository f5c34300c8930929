/* SPDX-License-Identifier: MIT */
/* Records the outcome of the admin consent redirect (graph-api.md 1.2). */
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

static const char *oauth_consent_param(struct http_exchange *ex,
                                       const char *name)
{
  const char *value = NULL;

  if (http_exchange_query(ex, name, &value) < 0 || value == NULL
      || strlen(value) > OAUTH_CONSENT_PARAM_MAX)
    return NULL;
  return value;
}

static void oauth_consent_refused(struct http_exchange *ex, struct store *store,
                                  const char *error, const char *description)
{
  char *text;
  char *why = xasprintf("%s: %s", error, description ? description : "");
  char esc[256];

  tenant_consent_record(store, false, NULL, why);
  log_warn("- http consent_refused error=%s",
           log_escape(esc, sizeof(esc), error, strlen(error)));
  text = xasprintf("Microsoft did not grant consent (%s). %s The integration "
                   "stays inactive; an administrator can open the consent "
                   "link again.",
                   error, description ? description : "");
  http_page_respond(ex, 403, "Consent not granted", text);
  free(text);
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
