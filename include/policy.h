/* SPDX-License-Identifier: MIT */
/* The organisation's policy: master switch, access mode and allow-list,
 * read from an INI file, and the one function that decides every SMTP,
 * CalDAV and linking request. Pure: no I/O beyond reading the file. */
#ifndef NX_POLICY_H
#define NX_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#define POLICY_ADDRESS_MAX 320

enum policy_mode {
  POLICY_MODE_ALL,
  POLICY_MODE_SPECIFIC,
};

struct policy {
  bool enabled; /* the master switch */
  enum policy_mode mode;
  char **users; /* normalised addresses, sorted */
  size_t nusers;
  char digest[65]; /* SHA-256 of the file, hex */
};

enum policy_request {
  POLICY_REQUEST_SMTP,
  POLICY_REQUEST_CALDAV,
  POLICY_REQUEST_LINK,     /* a user linking or re-linking */
  POLICY_REQUEST_DELIVERY, /* the queue about to call Graph */
};

enum policy_reason {
  POLICY_ALLOW = 0,
  POLICY_DENY_NO_POLICY, /* no valid policy loaded: fail closed */
  POLICY_DENY_ORG_DISABLED,
  POLICY_DENY_CONSENT_MISSING,
  POLICY_DENY_USER_NOT_PERMITTED,
  POLICY_DENY_USER_NOT_LINKED,
  POLICY_DENY_LINK_EXPIRED,
  POLICY_DENY_INVALID_ADDRESS,
};

enum policy_link_state {
  POLICY_LINK_NONE,
  POLICY_LINK_OK,
  POLICY_LINK_NEEDS_RELINK,
};

/* What the caller knows about the world, gathered from the store. */
struct policy_facts {
  bool consent_granted; /* tenant-wide admin consent recorded */
  enum policy_link_state link;
  const char *link_reason; /* why a re-link is needed, or NULL */
};

struct policy_decision {
  enum policy_reason reason;
  const char *code;   /* stable: "org_disabled", "user_not_linked", ... */
  char sentence[256]; /* for a person: what refused and what to do */
};

/* Longest policy file and list we accept; beyond them the file is refused. */
#define POLICY_FILE_MAX (4u << 20)
#define POLICY_USERS_MAX 100000

/* Parses the policy file at path. On error returns a negative errno and
 * writes "path:line: what is wrong" to err; *out is untouched. The file
 * format is described in docs/policy.md. */
int policy_load(const char *path, struct policy **out, char *err,
                size_t errlen);

/* Parses len bytes of policy text; name stands for the file in messages.
 * Same contract as policy_load (which reads the file and calls this). */
int policy_parse(const char *name, const char *text, size_t len,
                 struct policy **out, char *err, size_t errlen);

void policy_free(struct policy *policy);

/* Lower-cases and checks an address (local@domain, no spaces, brackets
 * removed). Returns 0, or -EINVAL if it is not an address. */
int policy_address_normalize(const char *in, char *out, size_t outlen);

/* Whether address is on the list (specific mode) or everyone is allowed. */
bool policy_permits_user(const struct policy *policy, const char *address);

/* The decision. policy NULL means no valid policy: everything is refused.
 * Order: policy present, switch on, consent, user permitted, linked (not
 * for POLICY_REQUEST_LINK). */
void policy_decide(const struct policy *policy, enum policy_request req,
                   const char *address, const struct policy_facts *facts,
                   struct policy_decision *out);

/* The stable reason code for a reason. */
const char *policy_reason_code(enum policy_reason reason);

#endif
