/* SPDX-License-Identifier: MIT */
/* Linking a user in application mode (client credentials), run by
 * `nextal-policy link`: the policy must allow the user to link, and Graph
 * must know their mailbox. No per-user token is involved. */
#ifndef NX_POLICY_LINK_H
#define NX_POLICY_LINK_H

#include <stddef.h>

#include "config.h"
#include "policy.h"
#include "store.h"

/* Checks address (normalised) against the policy file and the stored
 * facts, then looks the mailbox up in Graph and records the link. Returns
 * 0, -EPERM (policy refused), -ENOENT (no such mailbox), -EACCES (Graph
 * refused the app), -EIO (Microsoft unreachable); msg always holds a
 * sentence for the administrator. Blocking: for the CLI only. */
int policy_link_application(const struct config *cfg, struct store *store,
                            const char *address, char *msg, size_t msglen);

/* Asks the token endpoint for a client-credentials token, proving that the
 * client id and secret work. Returns 0, or -EIO with msg saying why not
 * (unreachable, or the endpoint's refusal). Blocking: for the CLI only. */
int policy_link_token_check(const struct config *cfg, char *msg, size_t msglen);

#endif
