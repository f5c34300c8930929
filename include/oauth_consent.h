/* SPDX-License-Identifier: MIT */
/* The redirect URI of the tenant-wide admin consent link: Microsoft's
 * identity platform sends the administrator's browser here with the grant
 * or the refusal, which is recorded and explained in plain words. */
#ifndef NX_OAUTH_CONSENT_H
#define NX_OAUTH_CONSENT_H

#include "http_router.h"
#include "store.h"

#define OAUTH_CONSENT_PATH "/oauth/consent"

/* Adds GET OAUTH_CONSENT_PATH to router; store must outlive it. Only an
 * answer carrying an unused state from `nextal-policy consent-link` is
 * recorded. A refusal is shown as a plain sentence with what to do next,
 * Microsoft's error and description below it, and recorded as the
 * consent state unless a grant is already recorded (a later refusal does
 * not undo Microsoft's grant). */
int oauth_consent_register(struct http_router *router, struct store *store);

#endif
