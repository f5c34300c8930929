/* SPDX-License-Identifier: MIT */
/* base64url without padding (RFC 4648 section 5), as JWTs and PKCE use it,
 * on top of GnuTLS's base64. */
#ifndef NX_BASE64URL_H
#define NX_BASE64URL_H

#include <stddef.h>

/* Encodes len bytes; returns a new string. */
char *base64url_encode(const void *data, size_t len);

/* Decodes text (len bytes, padding optional) into a new NUL-terminated
 * buffer; NULL when it is not base64url. */
char *base64url_decode(const char *text, size_t len);

#endif
