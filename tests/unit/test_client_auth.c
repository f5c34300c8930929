/* SPDX-License-Identifier: MIT */
/* client_auth: the client secret in the form, or a PS256 client assertion
 * whose header, claims and signature Microsoft would accept, and the
 * start-up check that refuses a key that does not match its certificate.
 * The test certificate and keys are throwaway files in data/client_auth. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <jansson.h>

#include "client_auth.h"
#include "config.h"
#include "xalloc.h"

#define NOW 1800000000LL

static char *data_path(const char *name)
{
  const char *dir = getenv("NX_TEST_DATA");

  assert_non_null(dir);
  return xasprintf("%s/client_auth/%s", dir, name);
}

static void cfg_init(struct config *cfg, const char *key)
{
  config_defaults(cfg);
  cfg->tenant = xstrdup("tenant-1");
  cfg->client_id = xstrdup("client-1");
  if (key != NULL) {
    cfg->client_certificate = data_path("cert.pem");
    cfg->client_key = data_path(key);
  } else {
    cfg->client_secret = xstrdup("s&cret");
  }
}

/* The decoded value of name in an x-www-form-urlencoded body. */
static char *form_value(const char *form, const char *name)
{
  char *key = xasprintf("%s=", name);
  const char *p = strstr(form, key);
  const char *end;
  char *raw, *value;

  assert_non_null(p);
  p += strlen(key);
  end = strchr(p, '&');
  raw = xstrndup(p, end ? (size_t) (end - p) : strlen(p));
  value = curl_easy_unescape(NULL, raw, 0, NULL);
  assert_non_null(value);
  free(key);
  free(raw);
  raw = xstrdup(value);
  curl_free(value);
  return raw;
}

/* Decodes one base64url part into *out (gnutls-allocated). */
static void b64url_decode(const char *text, size_t len, gnutls_datum_t *out)
{
  char *std = xmalloc(len + 4);
  gnutls_datum_t in;
  size_t n;

  for (n = 0; n < len; n++)
    std[n] = text[n] == '-' ? '+' : text[n] == '_' ? '/' : text[n];
  while (n % 4 != 0)
    std[n++] = '=';
  in.data = (unsigned char *) std;
  in.size = (unsigned) n;
  assert_int_equal(gnutls_base64_decode2(&in, out), 0);
  free(std);
}

static json_t *b64url_json(const char *text, size_t len)
{
  gnutls_datum_t raw;
  json_t *v;

  b64url_decode(text, len, &raw);
  v = json_loadb((const char *) raw.data, raw.size, 0, NULL);
  gnutls_free(raw.data);
  assert_non_null(v);
  return v;
}

static void test_secret_goes_in_the_form(void **state)
{
  struct config cfg;
  char *form = NULL;

  cfg_init(&cfg, NULL);
  assert_int_equal(client_auth_form_add(&cfg, NOW, &form), 0);
  assert_string_equal(form, "client_id=client-1&client_secret=s%26cret");
  assert_int_equal(client_auth_check(&cfg, NULL, 0), 0);
  free(form);
  config_free(&cfg);
}

/* Checks the assertion the way the identity platform does. */
static void check_assertion(const char *jwt, const char *cert_path)
{
  const char *dot1 = strchr(jwt, '.');
  const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
  gnutls_datum_t pem, sig, data;
  gnutls_x509_crt_t crt;
  gnutls_pubkey_t pub;
  unsigned char digest[32];
  size_t dlen = sizeof(digest);
  json_t *header, *claims;
  gnutls_datum_t thumb;

  assert_non_null(dot2);
  header = b64url_json(jwt, (size_t) (dot1 - jwt));
  claims = b64url_json(dot1 + 1, (size_t) (dot2 - dot1 - 1));
  assert_string_equal(json_string_value(json_object_get(header, "alg")),
                      "PS256");
  assert_string_equal(json_string_value(json_object_get(claims, "aud")),
                      "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/"
                      "token");
  assert_string_equal(json_string_value(json_object_get(claims, "iss")),
                      "client-1");
  assert_string_equal(json_string_value(json_object_get(claims, "sub")),
                      "client-1");
  assert_int_equal(json_integer_value(json_object_get(claims, "nbf")), NOW);
  assert_int_equal(json_integer_value(json_object_get(claims, "exp")),
                   NOW + CLIENT_AUTH_ASSERTION_S);
  assert_int_equal(strlen(json_string_value(json_object_get(claims, "jti"))),
                   32);

  /* x5t#S256 is the certificate's SHA-256 thumbprint, and the signature
   * verifies with the certificate's public key. */
  assert_int_equal(gnutls_load_file(cert_path, &pem), 0);
  assert_int_equal(gnutls_x509_crt_init(&crt), 0);
  assert_int_equal(gnutls_x509_crt_import(crt, &pem, GNUTLS_X509_FMT_PEM), 0);
  assert_int_equal(
      gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, digest, &dlen),
      0);
  b64url_decode(json_string_value(json_object_get(header, "x5t#S256")),
                strlen(json_string_value(json_object_get(header, "x5t#S256"))),
                &thumb);
  assert_int_equal(thumb.size, 32);
  assert_memory_equal(thumb.data, digest, 32);
  assert_int_equal(gnutls_pubkey_init(&pub), 0);
  assert_int_equal(gnutls_pubkey_import_x509(pub, crt, 0), 0);
  b64url_decode(dot2 + 1, strlen(dot2 + 1), &sig);
  data.data = (unsigned char *) jwt;
  data.size = (unsigned) (dot2 - jwt);
  assert_int_equal(gnutls_pubkey_verify_data2(
                       pub, GNUTLS_SIGN_RSA_PSS_RSAE_SHA256, 0, &data, &sig),
                   0);

  gnutls_free(thumb.data);
  gnutls_free(sig.data);
  gnutls_free(pem.data);
  gnutls_pubkey_deinit(pub);
  gnutls_x509_crt_deinit(crt);
  json_decref(header);
  json_decref(claims);
}

static void test_certificate_signs_an_assertion(void **state)
{
  struct config cfg;
  char *form = xstrdup("grant_type=client_credentials");
  char *type, *jwt;

  cfg_init(&cfg, "key.pem");
  free(cfg.login_base_url);
  cfg.login_base_url = xstrdup("https://login.microsoftonline.com");
  assert_int_equal(client_auth_form_add(&cfg, NOW, &form), 0);
  assert_null(strstr(form, "client_secret"));
  assert_non_null(strstr(form, "grant_type=client_credentials&client_id="
                               "client-1&client_assertion_type="));
  type = form_value(form, "client_assertion_type");
  assert_string_equal(type,
                      "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
  jwt = form_value(form, "client_assertion");
  check_assertion(jwt, cfg.client_certificate);
  free(type);
  free(jwt);
  free(form);
  config_free(&cfg);
}

static void test_check_refuses_what_cannot_sign(void **state)
{
  struct config cfg;
  char err[512] = "";
  char *form = NULL;

  cfg_init(&cfg, "key.pem");
  assert_int_equal(client_auth_check(&cfg, err, sizeof(err)), 0);
  config_free(&cfg);

  /* A key that is not the certificate's. */
  cfg_init(&cfg, "other-key.pem");
  assert_int_equal(client_auth_check(&cfg, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "cannot sign for"));
  config_free(&cfg);

  /* A file that is not there: the form cannot be built either. */
  cfg_init(&cfg, "missing.pem");
  assert_int_equal(client_auth_check(&cfg, err, sizeof(err)), -EIO);
  assert_non_null(strstr(err, "missing.pem"));
  assert_int_equal(client_auth_form_add(&cfg, NOW, &form), -EIO);
  free(form);
  config_free(&cfg);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_secret_goes_in_the_form),
    cmocka_unit_test(test_certificate_signs_an_assertion),
    cmocka_unit_test(test_check_refuses_what_cannot_sign),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
