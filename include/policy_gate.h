/* SPDX-License-Identifier: MIT */
/* The running agent's view of the policy: the last valid policy file,
 * watched and reloaded within a second, every applied version audited,
 * and the facts (consent, link state) gathered from the store for each
 * decision. Fails closed: with no valid policy everything is refused. */
#ifndef NX_POLICY_GATE_H
#define NX_POLICY_GATE_H

#include <uv.h>

#include "policy.h"
#include "store.h"

struct policy_gate;

/* Called on the loop after a new valid policy has been applied. */
typedef void (*policy_gate_change_cb)(void *arg);

/* Loads path (an invalid or missing file leaves the gate closed and is
 * logged and recorded in policy_state) and starts watching it. */
int policy_gate_new(uv_loop_t *loop, struct store *store, const char *path,
                    policy_gate_change_cb on_change, void *arg,
                    struct policy_gate **out);

/* Decides a request with the current policy and the stored facts. */
void policy_gate_check(struct policy_gate *gate, enum policy_request req,
                       const char *address, struct policy_decision *out);

/* Whether the master switch is on in the current policy (false with no
 * valid policy). */
bool policy_gate_enabled(struct policy_gate *gate);

/* Rereads the file now (SIGHUP); returns 0 if a valid policy is in force
 * afterwards. */
int policy_gate_reload(struct policy_gate *gate);

/* Stops watching; the gate is freed once its handles have closed. */
void policy_gate_close(struct policy_gate *gate);

#endif
