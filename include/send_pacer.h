/* SPDX-License-Identifier: MIT */
/* Exchange Online's sending limits per mailbox, kept in memory as sliding
 * windows: at most max_per_minute sends started in any 60 seconds and at
 * most max_rcpts_per_day recipients in any 24 hours (graph-api.md 4.4).
 * Delivery asks before it starts a send and waits when told to, so the
 * limits are paced rather than hit. Mailboxes are independent. The
 * accounting starts empty when the agent starts. */
#ifndef NX_SEND_PACER_H
#define NX_SEND_PACER_H

#include <stddef.h>
#include <stdint.h>

#define SEND_PACER_MAX_MAILBOXES 100000 /* tracked at once; idle ones go */

struct send_pacer;

/* Creates a pacer; a limit of 0 turns that limit off. Free with
 * send_pacer_free. */
struct send_pacer *send_pacer_new(unsigned max_per_minute,
                                  unsigned max_rcpts_per_day);

void send_pacer_free(struct send_pacer *pacer);

/* Milliseconds mailbox must wait before it may start a send to nrcpts
 * recipients at now_ms; 0 means now. A message with more recipients than
 * the daily limit waits for an empty window, then goes. */
int64_t send_pacer_wait(struct send_pacer *pacer, const char *mailbox,
                        size_t nrcpts, int64_t now_ms);

/* Records a send started at now_ms (after send_pacer_wait said 0). */
void send_pacer_start(struct send_pacer *pacer, const char *mailbox,
                      size_t nrcpts, int64_t now_ms);

/* Gives back a start recorded at started_ms that Graph refused without
 * sending (429, 503): it must not hold back the retry. Unknown starts are
 * ignored. */
void send_pacer_refund(struct send_pacer *pacer, const char *mailbox,
                       size_t nrcpts, int64_t started_ms);

#endif
