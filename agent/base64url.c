/* SPDX-License-Identifier: MIT */
/* base64url over GnuTLS's base64 (see include/base64url.h). */
#include "base64url.h"

#include <gnutls/gnutls.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

char *base64url_encode(const void *data, size_t len)
{
  gnutls_datum_t in = { (unsigned char *) data, (unsigned) len };
  gnutls_datum_t out = { NULL, 0 };
  char *text;
  size_t n;

  if (gnutls_base64_encode2(&in, &out) < 0)
    abort(); /* GnuTLS fails here only when out of memory */
  text = xstrndup((const char *) out.data, out.size);
  gnutls_free(out.data);
  for (n = 0; text[n] != '\0' && text[n] != '='; n++) {
    if (text[n] == '+')
      text[n] = '-';
    else if (text[n] == '/')
      text[n] = '_';
  }
  text[n] = '\0';
  return text;
}

char *base64url_decode(const char *text, size_t len)
{
  gnutls_datum_t in, out = { NULL, 0 };
  char *std = xmalloc(len + 4);
  char *result = NULL;
  size_t n;

  for (n = 0; n < len; n++)
    std[n] = text[n] == '-' ? '+' : text[n] == '_' ? '/' : text[n];
  while (n % 4 != 0)
    std[n++] = '=';
  in.data = (unsigned char *) std;
  in.size = (unsigned) n;
  if (gnutls_base64_decode2(&in, &out) == 0) {
    result = xstrndup((const char *) out.data, out.size);
    gnutls_free(out.data);
  }
  free(std);
  return result;
}
