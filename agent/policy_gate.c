/* SPDX-License-Identifier: MIT */
/* The running agent's policy: loads the file, watches it (directory events
 * plus a one-second poll), applies and audits each valid version, and
 * decides requests with the facts from the store (see policy_gate.h). */
#include "policy_gate.h"

#include <assert.h>
#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "links.h"
#include "log.h"
#include "xalloc.h"

#define POLICY_GATE_POLL_MS 1000    /* fallback when events are missed */
#define POLICY_GATE_SETTLE_MS 50    /* let a burst of events settle */
#define POLICY_GATE_DETAIL_USERS 20 /* addresses named per audit list */
#define POLICY_GATE_NHANDLES 3

struct policy_gate {
  uv_loop_t *loop;
  struct store *store;
  char *path;
  char *dir; /* watched: editors and the CLI replace the file by rename */
  char *base;
  struct policy *policy; /* last valid policy; NULL means closed */
  policy_gate_change_cb on_change;
  void *arg;
  uv_fs_event_t event;
  uv_fs_poll_t poll;
  uv_timer_t settle;
  int open_handles;     /* freed when the last one has closed */
  char last_error[512]; /* the rejection last logged, to log it once */
  bool rereading;       /* policy_gate_check is reading the file itself */
};

/* A growing audit detail, cut at AUDIT_DETAIL_MAX. */
struct policy_gate_text {
  char buf[AUDIT_DETAIL_MAX];
  size_t len;
};

static void policy_gate_text_add(struct policy_gate_text *t, const char *fmt,
                                 ...) __attribute__((format(printf, 2, 3)));

static void policy_gate_text_add(struct policy_gate_text *t, const char *fmt,
                                 ...)
{
  va_list ap;
  int n;

  if (t->len >= sizeof(t->buf) - 1)
    return;
  va_start(ap, fmt);
  n = vsnprintf(t->buf + t->len, sizeof(t->buf) - t->len, fmt, ap);
  va_end(ap);
  if (n > 0)
    t->len += (size_t) n;
  if (t->len > sizeof(t->buf) - 1)
    t->len = sizeof(t->buf) - 1;
}

static const char *policy_gate_mode_name(enum policy_mode mode)
{
  return mode == POLICY_MODE_ALL ? "all" : "specific";
}

/* Names the addresses in a but not in b (both sorted). */
static void policy_gate_diff_users(struct policy_gate_text *t,
                                   const char *label, const struct policy *a,
                                   const struct policy *b)
{
  size_t i = 0, j = 0, named = 0, more = 0;

  while (i < a->nusers) {
    int c = j < b->nusers ? strcmp(a->users[i], b->users[j]) : -1;

    if (c > 0) {
      j++;
      continue;
    }
    if (c < 0) {
      if (named < POLICY_GATE_DETAIL_USERS)
        policy_gate_text_add(t, "%s%s", named++ ? ", " : label, a->users[i]);
      else
        more++;
    } else {
      j++;
    }
    i++;
  }
  if (more > 0)
    policy_gate_text_add(t, " and %zu more", more);
  if (named > 0)
    policy_gate_text_add(t, "; ");
}

/* What changed from old to new, for a person reading the audit trail. */
static void policy_gate_describe(const struct policy *old,
                                 const struct policy *new,
                                 struct policy_gate_text *t)
{
  if (old == NULL) {
    policy_gate_text_add(t, "enabled=%s mode=%s users=%zu",
                         new->enabled ? "true" : "false",
                         policy_gate_mode_name(new->mode), new->nusers);
  } else {
    if (old->enabled != new->enabled)
      policy_gate_text_add(t, "switch %s; ", new->enabled ? "on" : "off");
    if (old->mode != new->mode)
      policy_gate_text_add(t, "mode %s -> %s; ",
                           policy_gate_mode_name(old->mode),
                           policy_gate_mode_name(new->mode));
    policy_gate_diff_users(t, "users added: ", new, old);
    policy_gate_diff_users(t, "users removed: ", old, new);
    if (t->len == 0)
      policy_gate_text_add(t, "no effective change (comments or layout)");
  }
  while (t->len > 0 && (t->buf[t->len - 1] == ' ' || t->buf[t->len - 1] == ';'))
    t->len--;
  t->buf[t->len] = '\0';
  policy_gate_text_add(t, " digest=%.12s", new->digest);
}

/* The digest of the policy this database saw applied last, if any. */
static void policy_gate_stored_digest(struct policy_gate *gate, char *out,
                                      size_t len)
{
  sqlite3_stmt *st = NULL;

  out[0] = '\0';
  if (sqlite3_prepare_v2(gate->store->db,
                         "SELECT digest FROM policy_state WHERE id=1", -1, &st,
                         NULL)
          == SQLITE_OK
      && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
    snprintf(out, len, "%s", (const char *) sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
}

/* Records the policy the agent applies (error cleared), or none when
 * applied is NULL and error is NULL, or only the rejection error. */
static int policy_gate_state_write(struct policy_gate *gate,
                                   const struct policy *applied,
                                   const char *error)
{
  sqlite3_stmt *st = NULL;
  int rc = -EIO;
  const char *sql
      = applied ? "UPDATE policy_state SET loaded_at=?1, digest=?2,"
                  " enabled=?3, mode=?4, users=?5, error=NULL,"
                  " error_at=NULL WHERE id=1"
        : error ? "UPDATE policy_state SET error_at=?1, error=?2 WHERE id=1"
                : "UPDATE policy_state SET loaded_at=NULL, digest=NULL,"
                  " enabled=NULL, mode=NULL, users=NULL WHERE id=1";

  if (sqlite3_prepare_v2(gate->store->db, sql, -1, &st, NULL) == SQLITE_OK) {
    if (applied != NULL || error != NULL)
      sqlite3_bind_int64(st, 1, store_now_ms());
    if (applied != NULL) {
      sqlite3_bind_text(st, 2, applied->digest, -1, SQLITE_STATIC);
      sqlite3_bind_int(st, 3, applied->enabled ? 1 : 0);
      sqlite3_bind_text(st, 4, policy_gate_mode_name(applied->mode), -1,
                        SQLITE_STATIC);
      sqlite3_bind_int64(st, 5, (sqlite3_int64) applied->nusers);
    } else if (error != NULL) {
      sqlite3_bind_text(st, 2, error, -1, SQLITE_STATIC);
    }
    if (sqlite3_step(st) == SQLITE_DONE)
      rc = 0;
  }
  if (rc < 0)
    log_error("- policy state_write_failed error=\"%s\"",
              sqlite3_errmsg(gate->store->db));
  sqlite3_finalize(st);
  return rc;
}

static void policy_gate_reject(struct policy_gate *gate, const char *err)
{
  char esc[1024];

  if (strcmp(err, gate->last_error) == 0)
    return;
  snprintf(gate->last_error, sizeof(gate->last_error), "%s", err);
  log_error("- policy load_rejected error=\"%s\" keeping=%s",
            log_escape(esc, sizeof(esc), err, strlen(err)),
            gate->policy ? "last_valid" : "none_refusing_all");
  policy_gate_state_write(gate, NULL, err);
}

/* Records the new version and its consequences in one transaction. Store
 * failures are logged but do not stop the policy from taking effect: the
 * file is the administrator's word, and refusing it would keep a switch
 * that was just turned off turned on. */
static void policy_gate_record(struct policy_gate *gate,
                               const struct policy *old,
                               const struct policy *new)
{
  struct policy_gate_text detail = { .len = 0 };
  char stored[65];
  int n = 0;

  policy_gate_stored_digest(gate, stored, sizeof(stored));
  policy_gate_describe(old, new, &detail);
  if (store_begin(gate->store) < 0)
    return;
  if (policy_gate_state_write(gate, new, NULL) < 0)
    goto fail;
  if (strcmp(stored, new->digest) != 0
      && audit_record(gate->store, "agent", "policy_applied", detail.buf) < 0)
    goto fail;

  /* While the switch is off nobody stays linked; checked on every version
   * so a change made while the agent was down is honoured too. */
  if (!new->enabled) {
    char text[128];

    n = links_mark_all_relink(gate->store, "org_disabled");
    if (n < 0)
      goto fail;
    snprintf(text, sizeof(text),
             "%d linked users disconnected, tokens wiped (org_disabled)", n);
    if (n > 0
        && audit_record(gate->store, "agent", "users_disconnected", text) < 0)
      goto fail;
  }
  if (store_commit(gate->store) == 0) {
    if (n > 0)
      log_info("- policy users_disconnected count=%d reason=org_disabled", n);
    return;
  }

fail:
  store_rollback(gate->store);
  log_error("- policy record_failed digest=%.12s", new->digest);
}

/* Loads the file and applies it if valid and new. Returns 0 when a valid
 * policy is in force afterwards. */
static int policy_gate_load(struct policy_gate *gate, bool notify)
{
  struct policy *fresh = NULL;
  struct policy *old = gate->policy;
  char err[512];
  int rc;

  rc = policy_load(gate->path, &fresh, err, sizeof(err));
  if (rc < 0) {
    policy_gate_reject(gate, err);
    return gate->policy ? 0 : rc;
  }
  if (old != NULL && strcmp(old->digest, fresh->digest) == 0) {
    /* Same bytes again: only an earlier rejection needs clearing. */
    if (gate->last_error[0] != '\0')
      policy_gate_state_write(gate, fresh, NULL);
    gate->last_error[0] = '\0';
    policy_free(fresh);
    return 0;
  }

  gate->last_error[0] = '\0';
  policy_gate_record(gate, old, fresh);
  gate->policy = fresh;
  log_info("- policy applied digest=%.12s enabled=%s mode=%s users=%zu",
           fresh->digest, fresh->enabled ? "true" : "false",
           policy_gate_mode_name(fresh->mode), fresh->nusers);
  policy_free(old);
  if (notify && gate->on_change != NULL)
    gate->on_change(gate->arg);
  return 0;
}

static void policy_gate_settle_cb(uv_timer_t *timer)
{
  policy_gate_load(timer->data, true);
}

static void policy_gate_schedule(struct policy_gate *gate)
{
  uv_timer_start(&gate->settle, policy_gate_settle_cb, POLICY_GATE_SETTLE_MS,
                 0);
}

static void policy_gate_event_cb(uv_fs_event_t *handle, const char *filename,
                                 int events, int status)
{
  struct policy_gate *gate = handle->data;

  if (status < 0 || filename == NULL || strcmp(filename, gate->base) == 0)
    policy_gate_schedule(gate);
}

static void policy_gate_poll_cb(uv_fs_poll_t *handle, int status,
                                const uv_stat_t *prev, const uv_stat_t *curr)
{
  policy_gate_schedule(handle->data);
}

int policy_gate_new(uv_loop_t *loop, struct store *store, const char *path,
                    policy_gate_change_cb on_change, void *arg,
                    struct policy_gate **out)
{
  struct policy_gate *gate = xcalloc(1, sizeof(*gate));
  char *copy = xstrdup(path);
  int rc;

  gate->loop = loop;
  gate->store = store;
  gate->path = xstrdup(path);
  gate->dir = xstrdup(dirname(copy));
  free(copy);
  copy = xstrdup(path);
  gate->base = xstrdup(basename(copy));
  free(copy);
  gate->on_change = on_change;
  gate->arg = arg;

  uv_fs_event_init(loop, &gate->event);
  uv_fs_poll_init(loop, &gate->poll);
  uv_timer_init(loop, &gate->settle);
  gate->event.data = gate->poll.data = gate->settle.data = gate;
  gate->open_handles = POLICY_GATE_NHANDLES;

  /* A missing or broken file leaves the gate closed, not the agent down;
   * the record of what an earlier run applied goes, so that status does
   * not claim this run keeps it. */
  policy_gate_load(gate, false);
  if (gate->policy == NULL) {
    log_warn("- policy closed path=%s reason=no_valid_policy", path);
    policy_gate_state_write(gate, NULL, NULL);
  }

  rc = uv_fs_event_start(&gate->event, policy_gate_event_cb, gate->dir, 0);
  if (rc < 0)
    log_warn("- policy watch_failed dir=%s error=%s polling_only", gate->dir,
             uv_strerror(rc));
  rc = uv_fs_poll_start(&gate->poll, policy_gate_poll_cb, path,
                        POLICY_GATE_POLL_MS);
  if (rc < 0) {
    log_error("- policy poll_failed path=%s error=%s", path, uv_strerror(rc));
    policy_gate_close(gate);
    return rc;
  }
  *out = gate;
  return 0;
}

void policy_gate_check(struct policy_gate *gate, enum policy_request req,
                       const char *address, struct policy_decision *out)
{
  struct policy_facts facts = { .consent_granted = false };
  struct tenant_consent consent;
  char norm[POLICY_ADDRESS_MAX];
  char reason[128] = "";

  /* Facts that cannot be read count as missing: the decision fails
   * closed. */
  if (tenant_consent_get(gate->store, &consent) == 0)
    facts.consent_granted = consent.state == TENANT_CONSENT_GRANTED;
  facts.link = POLICY_LINK_NONE;
  if (address != NULL
      && policy_address_normalize(address, norm, sizeof(norm)) == 0
      && links_get(gate->store, norm, &facts.link, reason, sizeof(reason)) < 0)
    facts.link = POLICY_LINK_NONE;
  facts.link_reason = reason[0] ? reason : NULL;

  policy_decide(gate->policy, req, address, &facts, out);

  /* nextal-policy disable wipes every token as it writes the file, and
   * this gate reads the file a moment later: a user disconnected by a
   * switch-off the gate has not seen yet would be told link_expired.
   * Reading the file now gives the reason the administrator set. */
  if (facts.link == POLICY_LINK_NEEDS_RELINK && facts.link_reason != NULL
      && strcmp(facts.link_reason, "org_disabled") == 0
      && policy_gate_enabled(gate) && !gate->rereading) {
    gate->rereading = true;
    uv_timer_stop(&gate->settle);
    policy_gate_load(gate, true);
    gate->rereading = false;
    policy_decide(gate->policy, req, address, &facts, out);
  }
  log_trace(LOG_TRACE_POLICY, "- policy decided req=%d code=%s", (int) req,
            out->code);
}

bool policy_gate_enabled(struct policy_gate *gate)
{
  return gate->policy != NULL && gate->policy->enabled;
}

int policy_gate_reload(struct policy_gate *gate)
{
  /* An explicit reload logs a rejection again even if it is unchanged. */
  gate->last_error[0] = '\0';
  return policy_gate_load(gate, true);
}

static void policy_gate_close_cb(uv_handle_t *handle)
{
  struct policy_gate *gate = handle->data;

  assert(gate->open_handles > 0);
  if (--gate->open_handles > 0)
    return;
  policy_free(gate->policy);
  free(gate->path);
  free(gate->dir);
  free(gate->base);
  free(gate);
}

void policy_gate_close(struct policy_gate *gate)
{
  uv_close((uv_handle_t *) &gate->event, policy_gate_close_cb);
  uv_close((uv_handle_t *) &gate->poll, policy_gate_close_cb);
  uv_close((uv_handle_t *) &gate->settle, policy_gate_close_cb);
}
