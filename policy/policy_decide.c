/* SPDX-License-Identifier: MIT */
/* The one decision every SMTP, CalDAV, linking and delivery request goes
 * through (see include/policy.h). Pure: the caller gathers the facts. */
#include "policy.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

/* Stable codes, indexed by enum policy_reason: Nextal shows them to users
 * and scripts match on them, so they never change once shipped. */
static const char *const policy_reason_codes[] = {
  [POLICY_ALLOW] = "allowed",
  [POLICY_DENY_NO_POLICY] = "no_policy",
  [POLICY_DENY_ORG_DISABLED] = "org_disabled",
  [POLICY_DENY_CONSENT_MISSING] = "consent_missing",
  [POLICY_DENY_USER_NOT_PERMITTED] = "user_not_permitted",
  [POLICY_DENY_USER_NOT_LINKED] = "user_not_linked",
  [POLICY_DENY_LINK_EXPIRED] = "link_expired",
  [POLICY_DENY_INVALID_ADDRESS] = "invalid_address",
};

const char *policy_reason_code(enum policy_reason reason)
{
  assert((size_t) reason
         < sizeof(policy_reason_codes) / sizeof(*policy_reason_codes));
  return policy_reason_codes[reason];
}

static void policy_decision_set(struct policy_decision *out,
                                enum policy_reason reason, const char *sentence,
                                const char *detail)
{
  out->reason = reason;
  out->code = policy_reason_code(reason);
  snprintf(out->sentence, sizeof(out->sentence), "%s%s%s", sentence,
           detail ? " " : "", detail ? detail : "");
}

void policy_decide(const struct policy *policy, enum policy_request req,
                   const char *address, const struct policy_facts *facts,
                   struct policy_decision *out)
{
  char norm[POLICY_ADDRESS_MAX];
  char why[128];

  /* Fail closed: without a policy, or without facts, nothing passes. */
  if (policy == NULL) {
    policy_decision_set(out, POLICY_DENY_NO_POLICY,
                        "No valid integration policy is loaded; an "
                        "administrator must fix the policy file.",
                        NULL);
    return;
  }
  if (!policy->enabled) {
    policy_decision_set(out, POLICY_DENY_ORG_DISABLED,
                        "The organisation has switched the Office 365 "
                        "integration off.",
                        NULL);
    return;
  }
  if (facts == NULL || !facts->consent_granted) {
    policy_decision_set(out, POLICY_DENY_CONSENT_MISSING,
                        "An administrator of the Microsoft tenant has not "
                        "granted consent to the integration yet.",
                        NULL);
    return;
  }
  if (address == NULL
      || policy_address_normalize(address, norm, sizeof(norm)) < 0) {
    policy_decision_set(out, POLICY_DENY_INVALID_ADDRESS,
                        "The request does not name a valid mail address.",
                        NULL);
    return;
  }
  if (!policy_permits_user(policy, norm)) {
    policy_decision_set(out, POLICY_DENY_USER_NOT_PERMITTED,
                        "This user is not on the organisation's list of "
                        "users allowed to use the integration.",
                        NULL);
    return;
  }

  /* Linking is how a user gets out of the two states below. */
  if (req != POLICY_REQUEST_LINK && facts->link == POLICY_LINK_NONE) {
    policy_decision_set(out, POLICY_DENY_USER_NOT_LINKED,
                        "This user has not linked their mailbox yet.", NULL);
    return;
  }
  if (req != POLICY_REQUEST_LINK && facts->link == POLICY_LINK_NEEDS_RELINK) {
    snprintf(why, sizeof(why), "(reason: %s)",
             facts->link_reason ? facts->link_reason : "unknown");
    policy_decision_set(out, POLICY_DENY_LINK_EXPIRED,
                        "This user's link to their mailbox has expired; "
                        "they must link it again.",
                        why);
    return;
  }
  policy_decision_set(out, POLICY_ALLOW, "Allowed.", NULL);
}
