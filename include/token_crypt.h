/* SPDX-License-Identifier: MIT */
/* Refresh tokens encrypted at rest: a 32-byte key in an owner-only key
 * file, AES-256-GCM through GnuTLS, a fresh random nonce per value stored
 * in front of it, and the user's address bound in as associated data so a
 * token copied to another row does not decrypt. */
#ifndef NX_TOKEN_CRYPT_H
#define NX_TOKEN_CRYPT_H

#include <stdbool.h>
#include <stddef.h>

#define TOKEN_CRYPT_KEY_SIZE 32
#define TOKEN_CRYPT_VALUE_MAX                                                  \
  65536 /* plaintext bytes, a refresh token is                                 \
         * a few kilobytes */

struct token_crypt;

/* Loads the key at path, or creates it (O_EXCL, mode 0600, random bytes)
 * when it does not exist and tokens_exist is false. Refuses, with a
 * sentence for the operator in err: a key file readable or writable by
 * group or others (-EPERM), a missing file while tokens are stored
 * (-ENOENT: they could never be decrypted), a file of the wrong size
 * (-EINVAL), or an I/O error (negative errno). Returns 0 and *out. */
int token_crypt_open(const char *path, bool tokens_exist,
                     struct token_crypt **out, char *err, size_t errlen);

/* Wipes the key and frees; NULL is allowed. */
void token_crypt_free(struct token_crypt *crypt);

/* Encrypts text[0..len) for address into a new blob (*blob, *bloblen) the
 * caller frees. Returns 0, -EMSGSIZE beyond TOKEN_CRYPT_VALUE_MAX or -EIO
 * when GnuTLS fails. */
int token_crypt_seal(struct token_crypt *crypt, const char *address,
                     const char *text, size_t len, void **blob,
                     size_t *bloblen);

/* Decrypts a blob sealed for address into a new NUL-terminated string
 * *text the caller wipes and frees. Returns 0, or -EBADMSG when the blob
 * is not ours (wrong key, other address, tampered, or plaintext). */
int token_crypt_unseal(struct token_crypt *crypt, const char *address,
                       const void *blob, size_t bloblen, char **text);

#endif
