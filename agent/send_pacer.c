/* SPDX-License-Identifier: MIT */
/* Sliding-window send pacing per mailbox (see include/send_pacer.h). */
#include "send_pacer.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define SEND_PACER_MINUTE_MS 60000
/* One more minute than a day, so that the window never ends early. */
#define SEND_PACER_DAY_BUCKETS (24 * 60 + 1)

struct send_pacer_mailbox {
  struct send_pacer_mailbox *next;
  char *address;
  int64_t *starts;     /* ring of start times in the last minute */
  unsigned head;       /* index of the oldest start */
  unsigned nstarts;    /* starts in the ring */
  uint32_t *rcpts;     /* recipients per minute, by minute % buckets */
  int64_t last_minute; /* newest minute rcpts holds */
  uint64_t day_total;  /* sum of rcpts */
  int64_t last_start;  /* ms, to forget idle mailboxes */
};

struct send_pacer {
  unsigned per_minute;
  unsigned rcpts_per_day;
  struct send_pacer_mailbox *mailboxes;
  size_t nmailboxes;
};

struct send_pacer *send_pacer_new(unsigned max_per_minute,
                                  unsigned max_rcpts_per_day)
{
  struct send_pacer *pacer = xcalloc(1, sizeof(*pacer));

  pacer->per_minute = max_per_minute;
  pacer->rcpts_per_day = max_rcpts_per_day;
  return pacer;
}

static void send_pacer_mailbox_free(struct send_pacer_mailbox *m)
{
  free(m->address);
  free(m->starts);
  free(m->rcpts);
  free(m);
}

void send_pacer_free(struct send_pacer *pacer)
{
  if (pacer == NULL)
    return;
  while (pacer->mailboxes != NULL) {
    struct send_pacer_mailbox *m = pacer->mailboxes;

    pacer->mailboxes = m->next;
    send_pacer_mailbox_free(m);
  }
  free(pacer);
}

/* Drops mailboxes that started nothing for a day: they hold no state
 * that could make anyone wait. */
static void send_pacer_forget_idle(struct send_pacer *pacer, int64_t now_ms)
{
  struct send_pacer_mailbox **pp = &pacer->mailboxes;

  while (*pp != NULL) {
    struct send_pacer_mailbox *m = *pp;

    if (now_ms - m->last_start
        > (int64_t) SEND_PACER_DAY_BUCKETS * SEND_PACER_MINUTE_MS) {
      *pp = m->next;
      send_pacer_mailbox_free(m);
      pacer->nmailboxes--;
    } else {
      pp = &m->next;
    }
  }
}

/* Finds mailbox; creates it when create is set (NULL if the table is
 * full even after forgetting idle mailboxes: that one goes unpaced). */
static struct send_pacer_mailbox *send_pacer_find(struct send_pacer *pacer,
                                                  const char *mailbox,
                                                  int create, int64_t now_ms)
{
  struct send_pacer_mailbox *m;

  for (m = pacer->mailboxes; m != NULL; m = m->next) {
    if (strcmp(m->address, mailbox) == 0)
      return m;
  }
  if (!create)
    return NULL;
  if (pacer->nmailboxes >= SEND_PACER_MAX_MAILBOXES)
    send_pacer_forget_idle(pacer, now_ms);
  if (pacer->nmailboxes >= SEND_PACER_MAX_MAILBOXES)
    return NULL;
  m = xcalloc(1, sizeof(*m));
  m->address = xstrdup(mailbox);
  if (pacer->per_minute > 0)
    m->starts = xcalloc(pacer->per_minute, sizeof(*m->starts));
  if (pacer->rcpts_per_day > 0)
    m->rcpts = xcalloc(SEND_PACER_DAY_BUCKETS, sizeof(*m->rcpts));
  m->last_minute = now_ms / SEND_PACER_MINUTE_MS;
  m->next = pacer->mailboxes;
  pacer->mailboxes = m;
  pacer->nmailboxes++;
  return m;
}

/* Forgets starts that left the one-minute window. */
static void send_pacer_minute_advance(struct send_pacer *pacer,
                                      struct send_pacer_mailbox *m,
                                      int64_t now_ms)
{
  while (m->nstarts > 0
         && m->starts[m->head] <= now_ms - SEND_PACER_MINUTE_MS) {
    m->head = (m->head + 1) % pacer->per_minute;
    m->nstarts--;
  }
}

/* Empties the buckets of minutes that left the day window. */
static void send_pacer_day_advance(struct send_pacer_mailbox *m, int64_t now_ms)
{
  int64_t minute = now_ms / SEND_PACER_MINUTE_MS;
  int64_t from = m->last_minute + 1;

  if (minute - from >= SEND_PACER_DAY_BUCKETS)
    from = minute - SEND_PACER_DAY_BUCKETS + 1;
  for (int64_t k = from; k <= minute; k++) {
    uint32_t *slot = &m->rcpts[k % SEND_PACER_DAY_BUCKETS];

    m->day_total -= *slot;
    *slot = 0;
  }
  if (minute > m->last_minute)
    m->last_minute = minute;
}

static int64_t send_pacer_minute_wait(struct send_pacer *pacer,
                                      struct send_pacer_mailbox *m,
                                      int64_t now_ms)
{
  send_pacer_minute_advance(pacer, m, now_ms);
  if (m->nstarts < pacer->per_minute)
    return 0;
  return m->starts[m->head] + SEND_PACER_MINUTE_MS - now_ms;
}

/* When enough of the oldest minutes have left the window for need more
 * recipients to fit. */
static int64_t send_pacer_day_wait(struct send_pacer *pacer,
                                   struct send_pacer_mailbox *m, size_t need,
                                   int64_t now_ms)
{
  uint64_t total;
  int64_t oldest;

  send_pacer_day_advance(m, now_ms);
  if (need > pacer->rcpts_per_day)
    need = pacer->rcpts_per_day;
  total = m->day_total;
  if (total + need <= pacer->rcpts_per_day)
    return 0;
  oldest = m->last_minute - SEND_PACER_DAY_BUCKETS + 1;
  for (int64_t k = oldest; k <= m->last_minute; k++) {
    total -= m->rcpts[k % SEND_PACER_DAY_BUCKETS];
    if (total + need <= pacer->rcpts_per_day)
      return (k + SEND_PACER_DAY_BUCKETS) * SEND_PACER_MINUTE_MS - now_ms;
  }
  /* Unreachable: an empty window takes any need up to the limit. */
  return SEND_PACER_MINUTE_MS;
}

int64_t send_pacer_wait(struct send_pacer *pacer, const char *mailbox,
                        size_t nrcpts, int64_t now_ms)
{
  struct send_pacer_mailbox *m = send_pacer_find(pacer, mailbox, 0, now_ms);
  int64_t wait = 0;
  int64_t day;

  if (m == NULL)
    return 0;
  if (pacer->per_minute > 0)
    wait = send_pacer_minute_wait(pacer, m, now_ms);
  if (pacer->rcpts_per_day > 0) {
    day = send_pacer_day_wait(pacer, m, nrcpts, now_ms);
    if (day > wait)
      wait = day;
  }
  return wait;
}

void send_pacer_start(struct send_pacer *pacer, const char *mailbox,
                      size_t nrcpts, int64_t now_ms)
{
  struct send_pacer_mailbox *m = send_pacer_find(pacer, mailbox, 1, now_ms);

  if (m == NULL)
    return;
  m->last_start = now_ms;
  if (pacer->per_minute > 0) {
    send_pacer_minute_advance(pacer, m, now_ms);
    if (m->nstarts == pacer->per_minute) { /* started without asking */
      m->head = (m->head + 1) % pacer->per_minute;
      m->nstarts--;
    }
    m->starts[(m->head + m->nstarts) % pacer->per_minute] = now_ms;
    m->nstarts++;
  }
  if (pacer->rcpts_per_day > 0) {
    send_pacer_day_advance(m, now_ms);
    m->rcpts[m->last_minute % SEND_PACER_DAY_BUCKETS] += (uint32_t) nrcpts;
    m->day_total += nrcpts;
  }
}

/* Removes one start at started_ms from the minute ring, keeping order. */
static void send_pacer_minute_refund(struct send_pacer *pacer,
                                     struct send_pacer_mailbox *m,
                                     int64_t started_ms)
{
  unsigned cap = pacer->per_minute;

  for (unsigned i = 0; i < m->nstarts; i++) {
    if (m->starts[(m->head + i) % cap] != started_ms)
      continue;
    for (unsigned j = i; j + 1 < m->nstarts; j++)
      m->starts[(m->head + j) % cap] = m->starts[(m->head + j + 1) % cap];
    m->nstarts--;
    return;
  }
}

void send_pacer_refund(struct send_pacer *pacer, const char *mailbox,
                       size_t nrcpts, int64_t started_ms)
{
  struct send_pacer_mailbox *m = send_pacer_find(pacer, mailbox, 0, started_ms);
  int64_t minute = started_ms / SEND_PACER_MINUTE_MS;

  if (m == NULL)
    return;
  if (pacer->per_minute > 0)
    send_pacer_minute_refund(pacer, m, started_ms);
  /* The bucket may have left the window (nothing to give back) or hold
   * less than nrcpts after a restart of the window (never negative). */
  if (pacer->rcpts_per_day > 0 && minute <= m->last_minute
      && m->last_minute - minute < SEND_PACER_DAY_BUCKETS) {
    uint32_t *slot = &m->rcpts[minute % SEND_PACER_DAY_BUCKETS];
    uint32_t back = *slot < nrcpts ? *slot : (uint32_t) nrcpts;

    *slot -= back;
    m->day_total -= back;
  }
  assert(m->nstarts <= pacer->per_minute);
}
