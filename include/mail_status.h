/* SPDX-License-Identifier: MIT */
/* What became of a message, for Nextal: GET /v1/messages/QUEUEID and
 * GET /v1/messages?message_id=ID on the HTTP listener, behind HTTP Basic
 * with the service credential, answered in JSON from the queue table. */
#ifndef NX_MAIL_STATUS_H
#define NX_MAIL_STATUS_H

#include "credential.h"
#include "http_router.h"
#include "store.h"

#define MAIL_STATUS_PATH "/v1/messages"

struct mail_status_deps {
  struct store *store;           /* the loop's connection */
  struct credential *credential; /* the service credential */
};

/* Adds GET MAIL_STATUS_PATH (and everything under it) to router. deps is
 * not copied: it must outlive the router. Returns 0 or http_router_add's
 * error. */
int mail_status_register(struct http_router *router,
                         struct mail_status_deps *deps);

#endif
