/* SPDX-License-Identifier: MIT */
/* Salted PBKDF2 hashes of the service credential (see credential.h). */
#include "credential.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define CREDENTIAL_PREFIX "pbkdf2-sha256"
#define CREDENTIAL_ITERATIONS 200000 /* OWASP 2023 guidance for SHA-256 */
#define CREDENTIAL_SALT_LEN 16
#define CREDENTIAL_KEY_LEN 32
#define CREDENTIAL_ITERATIONS_MAX 10000000

struct credential {
  char *user;
  unsigned iterations;
  unsigned char salt[64];
  size_t salt_len;
  unsigned char key[CREDENTIAL_KEY_LEN];
  bool cached; /* cache holds the digest of the last accepted password */
  unsigned char cache[CREDENTIAL_KEY_LEN];
};

static int credential_derive(const char *password, const unsigned char *salt,
                             size_t salt_len, unsigned iterations,
                             unsigned char key[CREDENTIAL_KEY_LEN])
{
  gnutls_datum_t pw
      = { (unsigned char *) password, (unsigned) strlen(password) };
  gnutls_datum_t s = { (unsigned char *) salt, (unsigned) salt_len };

  if (gnutls_pbkdf2(GNUTLS_MAC_SHA256, &pw, &s, iterations, key,
                    CREDENTIAL_KEY_LEN)
      < 0)
    return -EIO;
  return 0;
}

static char *credential_b64(const unsigned char *data, size_t len)
{
  gnutls_datum_t in = { (unsigned char *) data, (unsigned) len };
  gnutls_datum_t out = { NULL, 0 };
  char *text;

  if (gnutls_base64_encode2(&in, &out) < 0)
    return NULL;
  text = xstrndup((const char *) out.data, out.size);
  gnutls_free(out.data);
  return text;
}

static int credential_unb64(const char *text, size_t len, unsigned char *out,
                            size_t cap, size_t *outlen)
{
  gnutls_datum_t in = { (unsigned char *) text, (unsigned) len };
  gnutls_datum_t raw = { NULL, 0 };
  int rc = 0;

  if (gnutls_base64_decode2(&in, &raw) < 0)
    return -EINVAL;
  if (raw.size > cap)
    rc = -EINVAL;
  else {
    memcpy(out, raw.data, raw.size);
    *outlen = raw.size;
  }
  gnutls_free(raw.data);
  return rc;
}

int credential_hash(const char *password, char **out)
{
  unsigned char salt[CREDENTIAL_SALT_LEN];
  unsigned char key[CREDENTIAL_KEY_LEN];
  char *salt64 = NULL;
  char *key64 = NULL;
  int rc = -EIO;

  if (gnutls_rnd(GNUTLS_RND_RANDOM, salt, sizeof(salt)) < 0
      || credential_derive(password, salt, sizeof(salt), CREDENTIAL_ITERATIONS,
                           key)
             < 0)
    goto out;
  salt64 = credential_b64(salt, sizeof(salt));
  key64 = credential_b64(key, sizeof(key));
  if (salt64 == NULL || key64 == NULL)
    goto out;
  *out = xasprintf("%s$%u$%s$%s", CREDENTIAL_PREFIX, CREDENTIAL_ITERATIONS,
                   salt64, key64);
  rc = 0;

out:
  free(salt64);
  free(key64);
  return rc;
}

/* Splits "prefix$iter$salt$key" into its parts inside cred. */
static int credential_parse(struct credential *cred, const char *text)
{
  const char *p = text;
  const char *salt;
  const char *key;
  char *end = NULL;
  unsigned long iter;
  size_t key_len = 0;

  if (strncmp(p, CREDENTIAL_PREFIX "$", strlen(CREDENTIAL_PREFIX) + 1) != 0)
    return -EINVAL;
  p += strlen(CREDENTIAL_PREFIX) + 1;
  errno = 0;
  iter = strtoul(p, &end, 10);
  if (errno != 0 || end == p || *end != '$' || iter == 0
      || iter > CREDENTIAL_ITERATIONS_MAX)
    return -EINVAL;
  cred->iterations = (unsigned) iter;
  salt = end + 1;
  key = strchr(salt, '$');
  if (key == NULL)
    return -EINVAL;
  if (credential_unb64(salt, (size_t) (key - salt), cred->salt,
                       sizeof(cred->salt), &cred->salt_len)
      < 0)
    return -EINVAL;
  key++;
  if (credential_unb64(key, strlen(key), cred->key, sizeof(cred->key), &key_len)
          < 0
      || key_len != CREDENTIAL_KEY_LEN)
    return -EINVAL;
  return 0;
}

int credential_new(const char *user, const char *hash_text,
                   struct credential **out)
{
  struct credential *cred = xcalloc(1, sizeof(*cred));

  if (credential_parse(cred, hash_text) < 0) {
    free(cred);
    return -EINVAL;
  }
  cred->user = xstrdup(user);
  *out = cred;
  return 0;
}

void credential_free(struct credential *cred)
{
  if (cred == NULL)
    return;
  free(cred->user);
  gnutls_memset(cred, 0, sizeof(*cred));
  free(cred);
}

/* A cheap keyed digest of the password, for the accepted-password cache. */
static int credential_quick_digest(const struct credential *cred,
                                   const char *password,
                                   unsigned char out[CREDENTIAL_KEY_LEN])
{
  return gnutls_hmac_fast(GNUTLS_MAC_SHA256, cred->key, sizeof(cred->key),
                          password, strlen(password), out)
                 < 0
             ? -EIO
             : 0;
}

int credential_check(struct credential *cred, const char *user,
                     const char *password)
{
  unsigned char quick[CREDENTIAL_KEY_LEN];
  unsigned char key[CREDENTIAL_KEY_LEN];
  bool user_ok = strcmp(user, cred->user) == 0;

  if (credential_quick_digest(cred, password, quick) < 0)
    return -EPERM;
  if (cred->cached && gnutls_memcmp(quick, cred->cache, sizeof(quick)) == 0)
    return user_ok ? 0 : -EPERM;
  if (credential_derive(password, cred->salt, cred->salt_len, cred->iterations,
                        key)
      < 0)
    return -EPERM;
  if (gnutls_memcmp(key, cred->key, sizeof(key)) != 0 || !user_ok)
    return -EPERM;
  memcpy(cred->cache, quick, sizeof(quick));
  cred->cached = true;
  return 0;
}
