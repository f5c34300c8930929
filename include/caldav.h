/* SPDX-License-Identifier: MIT */
/* The CalDAV endpoint: each linked user's default Outlook calendar as one
 * CalDAV calendar under /dav/, every request authenticated with Nextal's
 * service credential and decided by the policy before Graph is called.
 * The protocol surface and its limits are described in docs/caldav.md. */
#ifndef NX_CALDAV_H
#define NX_CALDAV_H

#include "credential.h"
#include "graph_client.h"
#include "http_router.h"
#include "policy_gate.h"
#include "store.h"

/* Longest object name (last path segment) accepted, in bytes. */
#define CALDAV_NAME_MAX 255
/* Objects listed or fetched by one PROPFIND or REPORT. */
#define CALDAV_OBJECTS_MAX 2000
/* calendarView pages followed for one calendar-query. */
#define CALDAV_VIEW_PAGES_MAX 50

/* How long a mailbox's time zone is trusted once read, and for how many
 * users it is kept: a user who changes it in Outlook sees floating times
 * placed in the new zone within the hour. */
#define CALDAV_ZONE_TTL_MS (60 * 60 * 1000)
#define CALDAV_ZONE_CACHE_MAX 256

/* The mailbox time zones (mailboxSettings/timeZone) the endpoint has read
 * from Graph, for floating times and dates in PUTs. */
struct caldav_zones;

/* A new, empty cache for one endpoint; never NULL (out of memory is
 * fatal). Its creator frees it with caldav_zones_free() once the router is
 * freed. */
struct caldav_zones *caldav_zones_new(void);

void caldav_zones_free(struct caldav_zones *zones);

/* What the endpoint works with. None is owned: every pointer must stay
 * valid until the router is freed and the last answer has been given. */
struct caldav_deps {
  struct store *store; /* holds the caldav_objects table (migration 3) */
  struct graph_client *graph;
  struct policy_gate *gate;
  struct credential *credential; /* HTTP Basic, the same as SMTP AUTH */
  struct caldav_zones *zones;    /* from caldav_zones_new(), never NULL */
  struct caldav_req *writes; /* PUTs in progress: caldav.c's own, start NULL */
};

/* Routes /.well-known/caldav (301 to /dav/) and everything under /dav to
 * the CalDAV handler. deps itself is kept (not copied) as the handlers'
 * argument, so it must outlive the router. Returns 0 or the negative
 * error of http_router_add(). */
int caldav_register(struct http_router *router, struct caldav_deps *deps);

#endif
