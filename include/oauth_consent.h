/* SPDX-License-Identifier: MIT */
/* The redirect URI of the tenant-wide admin consent link: Microsoft's
 * identity platform sends the administrator's browser here with the grant
 * or the refusal, which is recorded and explained in plain words. */
#ifndef NX_OAUTH_CONSENT_H
#define NX_OAUTH_CONSENT_H

#include "http_router.h"
#include "store.h"

#define OAUTH_CONSENT_PATH "/oauth/consent"

/* Adds GET OAUTH_CONSENT_PATH to router; store must outlive it. */
int oauth_consent_register(struct http_router *router, struct store *store);

#endif
