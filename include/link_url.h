/* SPDX-License-Identifier: MIT */
/* Start links: the URL Nextal hands a user so that they can link their
 * mailbox, "{public_url}/link/start?user=ADDR&exp=UNIX&sig=HEX" with
 * sig = hex(HMAC-SHA256(link_secret, "ADDR\nEXP")). Bound to one address
 * and valid for minutes, so a leaked link is of little use. */
#ifndef NX_LINK_URL_H
#define NX_LINK_URL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define LINK_URL_PATH "/link/start"
#define LINK_URL_LIFETIME_S 600  /* the links this module mints */
#define LINK_URL_MAX_AHEAD_S 900 /* links expiring later are refused */
#define LINK_URL_SIG_HEX 64      /* hex digits of an HMAC-SHA256 */

enum link_url_verdict {
  LINK_URL_OK,
  LINK_URL_NO_SECRET, /* link_secret is not configured */
  LINK_URL_MALFORMED, /* exp or sig is not what this module writes */
  LINK_URL_BAD_SIG,   /* not signed with our secret for this address */
  LINK_URL_EXPIRED,   /* exp is in the past */
  LINK_URL_TOO_FAR,   /* exp is further ahead than LINK_URL_MAX_AHEAD_S */
};

/* Computes the signature of address and exp into hex (LINK_URL_SIG_HEX
 * digits and a NUL). Returns 0 or -EIO. */
int link_url_sign(const char *secret, const char *address, int64_t exp,
                  char hex[LINK_URL_SIG_HEX + 1]);

/* Checks a start link's parameters as received (exp_text and sig as
 * sent) at time now (seconds). The signature is compared in constant
 * time. */
enum link_url_verdict link_url_verify(const char *secret, const char *address,
                                      const char *exp_text, const char *sig,
                                      int64_t now);

/* A sentence for the person holding a refused link. */
const char *link_url_verdict_text(enum link_url_verdict verdict);

/* Mints a start link for address (normalised) valid LINK_URL_LIFETIME_S
 * from now into a new string *url; *exp receives its expiry. Returns 0,
 * -ENOKEY when link_secret is not set, or -EIO. */
int link_url_build(const struct config *cfg, const char *address, int64_t now,
                   char **url, int64_t *exp);

#endif
