/* SPDX-License-Identifier: MIT */
/* Client secret or signed client assertion for the token endpoint (see
 * include/client_auth.h). The assertion is built with jansson and signed
 * with GnuTLS; nothing here is hand-written JSON or base64. */
#include "client_auth.h"

#include <curl/curl.h>
#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "base64url.h"
#include "xalloc.h"

#define CLIENT_AUTH_ASSERTION_TYPE                                             \
  "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

/* The loaded certificate and key of one request. */
struct client_auth_keys {
  gnutls_x509_crt_t crt;
  gnutls_privkey_t key;
};

int client_auth_uses_certificate(const struct config *cfg)
{
  return cfg->client_certificate != NULL && cfg->client_key != NULL;
}

void client_auth_form_field(char **form, const char *name, const char *value)
{
  char *esc = curl_easy_escape(NULL, value, 0);
  char *next;

  if (esc == NULL)
    abort(); /* curl fails here only when out of memory */
  next
      = xasprintf("%s%s%s=%s", *form ? *form : "", *form ? "&" : "", name, esc);
  curl_free(esc);
  free(*form);
  *form = next;
}

static int client_auth_read(const char *path, gnutls_datum_t *out, char *err,
                            size_t errlen)
{
  int rc = gnutls_load_file(path, out);

  if (rc < 0) {
    snprintf(err, errlen, "cannot read %s: %s", path, gnutls_strerror(rc));
    return -EIO;
  }
  if (out->size > CLIENT_AUTH_PEM_MAX) {
    snprintf(err, errlen, "%s is larger than %d bytes", path,
             CLIENT_AUTH_PEM_MAX);
    gnutls_free(out->data);
    return -EINVAL;
  }
  return 0;
}

static void client_auth_keys_free(struct client_auth_keys *k)
{
  if (k->crt != NULL)
    gnutls_x509_crt_deinit(k->crt);
  if (k->key != NULL)
    gnutls_privkey_deinit(k->key);
}

/* Loads the certificate and its private key (PEM). */
static int client_auth_keys_load(const struct config *cfg,
                                 struct client_auth_keys *k, char *err,
                                 size_t errlen)
{
  gnutls_datum_t crt = { NULL, 0 }, key = { NULL, 0 };
  int rc;

  memset(k, 0, sizeof(*k));
  if ((rc = client_auth_read(cfg->client_certificate, &crt, err, errlen)) < 0
      || (rc = client_auth_read(cfg->client_key, &key, err, errlen)) < 0)
    goto out;
  rc = -EINVAL;
  if (gnutls_x509_crt_init(&k->crt) < 0
      || gnutls_x509_crt_import(k->crt, &crt, GNUTLS_X509_FMT_PEM) < 0) {
    snprintf(err, errlen, "%s is not a PEM certificate",
             cfg->client_certificate);
    goto out;
  }
  if (gnutls_privkey_init(&k->key) < 0
      || gnutls_privkey_import_x509_raw(k->key, &key, GNUTLS_X509_FMT_PEM, NULL,
                                        0)
             < 0) {
    snprintf(err, errlen, "%s is not an unencrypted PEM private key",
             cfg->client_key);
    goto out;
  }
  rc = 0;

out:
  if (key.data != NULL) {
    gnutls_memset(key.data, 0, key.size);
    gnutls_free(key.data);
  }
  gnutls_free(crt.data);
  if (rc < 0)
    client_auth_keys_free(k);
  return rc;
}

/* base64url(SHA-256 of the certificate's DER), the x5t#S256 header. */
static char *client_auth_thumbprint(gnutls_x509_crt_t crt)
{
  unsigned char digest[32];
  size_t len = sizeof(digest);

  if (gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, digest, &len) < 0)
    return NULL;
  return base64url_encode(digest, len);
}

/* Encodes a JSON object as base64url and releases it. */
static char *client_auth_part(json_t *obj)
{
  char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
  char *part;

  json_decref(obj);
  if (text == NULL)
    abort(); /* jansson fails here only when out of memory */
  part = base64url_encode(text, strlen(text));
  free(text);
  return part;
}

/* Builds and signs the assertion (graph-api.md 1.3, E-CERT). */
static char *client_auth_assertion(const struct config *cfg,
                                   struct client_auth_keys *k, int64_t now)
{
  unsigned char rnd[16];
  char jti[33];
  char *x5t = client_auth_thumbprint(k->crt);
  char *aud
      = xasprintf("%s/%s/oauth2/v2.0/token", cfg->login_base_url, cfg->tenant);
  char *header, *claims, *input, *sig_text = NULL, *jwt = NULL;
  gnutls_datum_t data, sig = { NULL, 0 };

  if (x5t == NULL || gnutls_rnd(GNUTLS_RND_NONCE, rnd, sizeof(rnd)) < 0) {
    free(x5t);
    free(aud);
    return NULL;
  }
  for (size_t i = 0; i < sizeof(rnd); i++)
    snprintf(jti + 2 * i, 3, "%02x", rnd[i]);
  header = client_auth_part(json_pack("{s:s, s:s, s:s}", "alg", "PS256", "typ",
                                      "JWT", "x5t#S256", x5t));
  claims = client_auth_part(json_pack(
      "{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "aud", aud, "iss", cfg->client_id,
      "sub", cfg->client_id, "jti", jti, "nbf", (json_int_t) now, "iat",
      (json_int_t) now, "exp", (json_int_t) (now + CLIENT_AUTH_ASSERTION_S)));
  input = xasprintf("%s.%s", header, claims);
  data.data = (unsigned char *) input;
  data.size = (unsigned) strlen(input);
  if (gnutls_privkey_sign_data2(k->key, GNUTLS_SIGN_RSA_PSS_RSAE_SHA256, 0,
                                &data, &sig)
      == 0) {
    sig_text = base64url_encode(sig.data, sig.size);
    jwt = xasprintf("%s.%s", input, sig_text);
    gnutls_free(sig.data);
  }
  free(sig_text);
  free(input);
  free(claims);
  free(header);
  free(aud);
  free(x5t);
  return jwt;
}

int client_auth_form_add(const struct config *cfg, int64_t now, char **form)
{
  struct client_auth_keys keys;
  char err[512];
  char *jwt;

  client_auth_form_field(form, "client_id",
                         cfg->client_id ? cfg->client_id : "");
  if (!client_auth_uses_certificate(cfg)) {
    if (cfg->client_secret != NULL)
      client_auth_form_field(form, "client_secret", cfg->client_secret);
    return 0;
  }
  if (client_auth_keys_load(cfg, &keys, err, sizeof(err)) < 0) {
    log_error("- token client_certificate_failed error=\"%s\"", err);
    return -EIO;
  }
  jwt = client_auth_assertion(cfg, &keys, now);
  client_auth_keys_free(&keys);
  if (jwt == NULL) {
    log_error("- token client_assertion_failed (is the key RSA and the "
              "certificate's own?)");
    return -EIO;
  }
  client_auth_form_field(form, "client_assertion_type",
                         CLIENT_AUTH_ASSERTION_TYPE);
  client_auth_form_field(form, "client_assertion", jwt);
  free(jwt);
  return 0;
}

int client_auth_check(const struct config *cfg, char *err, size_t errlen)
{
  struct client_auth_keys keys;
  gnutls_pubkey_t pub = NULL;
  gnutls_datum_t data = { (unsigned char *) "check", 5 };
  gnutls_datum_t sig = { NULL, 0 };
  int rc;

  if (!client_auth_uses_certificate(cfg))
    return 0;
  if ((rc = client_auth_keys_load(cfg, &keys, err, errlen)) < 0)
    return rc;

  /* Sign and verify once: proves the key is RSA, can do PSS, and belongs
   * to the certificate Microsoft will check it against. */
  rc = -EINVAL;
  if (gnutls_privkey_sign_data2(keys.key, GNUTLS_SIGN_RSA_PSS_RSAE_SHA256, 0,
                                &data, &sig)
          < 0
      || gnutls_pubkey_init(&pub) < 0
      || gnutls_pubkey_import_x509(pub, keys.crt, 0) < 0
      || gnutls_pubkey_verify_data2(pub, GNUTLS_SIGN_RSA_PSS_RSAE_SHA256, 0,
                                    &data, &sig)
             < 0)
    snprintf(err, errlen,
             "%s cannot sign for %s (PS256 needs an RSA key that belongs to "
             "the certificate)",
             cfg->client_key, cfg->client_certificate);
  else
    rc = 0;
  gnutls_free(sig.data);
  if (pub != NULL)
    gnutls_pubkey_deinit(pub);
  client_auth_keys_free(&keys);
  return rc;
}
