/* SPDX-License-Identifier: MIT */
/* Delivery of queued mail through Graph sendMail: picks due messages,
 * checks the policy for each (refused senders' mail is held, not sent and
 * not lost), translates the spooled message on the thread pool, sends it,
 * and records the outcome: sent, retried later (429, 503, network, 5xx,
 * honouring Retry-After) or failed with Graph's code. */
#ifndef NX_DELIVERY_H
#define NX_DELIVERY_H

#include <uv.h>

#include "config.h"
#include "graph_client.h"
#include "policy_gate.h"
#include "store.h"

struct delivery;

int delivery_new(uv_loop_t *loop, struct store *store,
                 struct graph_client *graph, struct policy_gate *gate,
                 const struct config *cfg, struct delivery **out);

/* New mail was queued: look for due messages now. */
void delivery_kick(struct delivery *d);

/* The policy changed: release held mail of senders now allowed, then
 * look for due messages. */
void delivery_policy_changed(struct delivery *d);

/* Starts no more sends; calls done once every send in progress has
 * finished (to cut them short, close the Graph client: interrupted sends
 * stay "sending" and are looked up at the next start). Frees d before
 * calling done. */
void delivery_stop(struct delivery *d, void (*done)(void *arg), void *arg);

#endif
