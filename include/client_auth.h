/* SPDX-License-Identifier: MIT */
/* How the agent proves to the token endpoint that it is the registered
 * application (graph-api.md 1.3): the client secret, or, when
 * [microsoft] client_certificate and client_key are set, a JWT client
 * assertion signed with the certificate's RSA key (PS256, x5t#S256), as
 * Microsoft recommends for production. Token requests are rare (one per
 * token lifetime), so the PEM files are read at each request: a renewed
 * certificate is used without a restart. */
#ifndef NX_CLIENT_AUTH_H
#define NX_CLIENT_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define CLIENT_AUTH_ASSERTION_S 300 /* lifetime of one assertion, seconds */
#define CLIENT_AUTH_PEM_MAX 65536   /* larger PEM files are refused */

/* Appends "client_id=...&client_secret=..." or "client_id=...&
 * client_assertion_type=...&client_assertion=..." (URL-encoded, joined to
 * *form with '&' when *form is not NULL) for a request made at now
 * (seconds). *form is replaced by a new string. Returns 0, or a negative
 * errno with the reason logged (unreadable or mismatched files). */
int client_auth_form_add(const struct config *cfg, int64_t now, char **form);

/* Appends "name=value" to a form body, value URL-encoded, joined to *form
 * with '&' when *form is not NULL. *form is replaced by a new string. */
void client_auth_form_field(char **form, const char *name, const char *value);

/* Checks once, at start, that the configured certificate and key can sign
 * an assertion; with a client secret there is nothing to check. Returns 0
 * or a negative errno with a sentence for the operator in err. */
int client_auth_check(const struct config *cfg, char *err, size_t errlen);

/* Whether cfg authenticates with a certificate rather than a secret. */
int client_auth_uses_certificate(const struct config *cfg);

#endif
