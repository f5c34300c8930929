/* SPDX-License-Identifier: MIT */
/* Nextal's service credential, kept as a salted PBKDF2-SHA256 hash:
 * "pbkdf2-sha256$<iterations>$<salt base64>$<hash base64>". Used for SMTP
 * AUTH and HTTP Basic. */
#ifndef NX_CREDENTIAL_H
#define NX_CREDENTIAL_H

struct credential;

/* Hashes password with a fresh random salt; *out is a new string. */
int credential_hash(const char *password, char **out);

/* Parses a stored hash for user; returns 0 or -EINVAL when the text is not
 * a hash this module wrote. */
int credential_new(const char *user, const char *hash_text,
                   struct credential **out);

void credential_free(struct credential *cred);

/* Checks a user name and password: 0 on a match, -EPERM otherwise. The
 * last accepted password is remembered as a digest so that every new
 * connection does not pay for PBKDF2 again. */
int credential_check(struct credential *cred, const char *user,
                     const char *password);

#endif
