/* SPDX-License-Identifier: MIT */
/* Signing and checking start links (see include/link_url.h). */
#include "link_url.h"

#include <curl/curl.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define LINK_URL_EXP_DIGITS_MAX 19 /* an int64 in decimal */

static const char *const link_url_texts[] = {
  [LINK_URL_OK] = "the link is valid",
  [LINK_URL_NO_SECRET] = "this agent has no link_secret configured, so it "
                         "accepts no start links",
  [LINK_URL_MALFORMED] = "the link is damaged (its expiry or signature is "
                         "not readable); ask Nextal for a new one",
  [LINK_URL_BAD_SIG] = "the link's signature does not match: it was not "
                       "issued by Nextal for this address",
  [LINK_URL_EXPIRED] = "the link has expired; start again from Nextal to "
                       "get a fresh one",
  [LINK_URL_TOO_FAR] = "the link claims to be valid for too long, which "
                       "Nextal never issues",
};

const char *link_url_verdict_text(enum link_url_verdict verdict)
{
  return link_url_texts[verdict];
}

int link_url_sign(const char *secret, const char *address, int64_t exp,
                  char hex[LINK_URL_SIG_HEX + 1])
{
  unsigned char mac[32];
  char *msg = xasprintf("%s\n%lld", address, (long long) exp);
  int rc = 0;

  if (gnutls_hmac_fast(GNUTLS_MAC_SHA256, secret, strlen(secret), msg,
                       strlen(msg), mac)
      < 0)
    rc = -EIO;
  for (size_t i = 0; rc == 0 && i < sizeof(mac); i++)
    snprintf(hex + 2 * i, 3, "%02x", mac[i]);
  free(msg);
  return rc;
}

/* Parses exp exactly as link_url_sign writes it: decimal digits only, so
 * "+5" or "05" cannot be signed differently from what is checked. */
static int link_url_parse_exp(const char *text, int64_t *exp)
{
  size_t len = strlen(text);
  int64_t v = 0;

  if (len == 0 || len > LINK_URL_EXP_DIGITS_MAX - 1
      || (text[0] == '0' && len > 1))
    return -EINVAL;
  for (size_t i = 0; i < len; i++) {
    if (text[i] < '0' || text[i] > '9')
      return -EINVAL;
    v = v * 10 + (text[i] - '0');
  }
  *exp = v;
  return 0;
}

enum link_url_verdict link_url_verify(const char *secret, const char *address,
                                      const char *exp_text, const char *sig,
                                      int64_t now)
{
  char want[LINK_URL_SIG_HEX + 1];
  char got[LINK_URL_SIG_HEX + 1];
  int64_t exp;

  if (secret == NULL || *secret == '\0')
    return LINK_URL_NO_SECRET;
  if (link_url_parse_exp(exp_text, &exp) < 0 || strlen(sig) != LINK_URL_SIG_HEX)
    return LINK_URL_MALFORMED;
  for (size_t i = 0; i <= LINK_URL_SIG_HEX; i++)
    got[i] = (char) (sig[i] >= 'A' && sig[i] <= 'F' ? sig[i] + 32 : sig[i]);
  if (link_url_sign(secret, address, exp, want) < 0
      || gnutls_memcmp(want, got, LINK_URL_SIG_HEX) != 0)
    return LINK_URL_BAD_SIG;
  if (exp < now)
    return LINK_URL_EXPIRED;
  if (exp > now + LINK_URL_MAX_AHEAD_S)
    return LINK_URL_TOO_FAR;
  return LINK_URL_OK;
}

int link_url_build(const struct config *cfg, const char *address, int64_t now,
                   char **url, int64_t *exp)
{
  char sig[LINK_URL_SIG_HEX + 1];
  char *user;

  if (cfg->link_secret == NULL || *cfg->link_secret == '\0')
    return -ENOKEY;
  *exp = now + LINK_URL_LIFETIME_S;
  if (link_url_sign(cfg->link_secret, address, *exp, sig) < 0)
    return -EIO;
  user = curl_easy_escape(NULL, address, 0);
  if (user == NULL)
    abort(); /* curl fails here only when out of memory */
  *url = xasprintf("%s%s?user=%s&exp=%lld&sig=%s", cfg->http_public_url,
                   LINK_URL_PATH, user, (long long) *exp, sig);
  curl_free(user);
  return 0;
}
