/* SPDX-License-Identifier: MIT */
/* Key file and AES-256-GCM for stored refresh tokens (see
 * include/token_crypt.h). Blob layout: version byte, 12-byte nonce,
 * ciphertext, 16-byte tag. */
#include "token_crypt.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "xalloc.h"

#define TOKEN_CRYPT_VERSION 1
#define TOKEN_CRYPT_NONCE_SIZE 12
#define TOKEN_CRYPT_TAG_SIZE 16
#define TOKEN_CRYPT_HEADER (1 + TOKEN_CRYPT_NONCE_SIZE)

struct token_crypt {
  gnutls_aead_cipher_hd_t cipher;
};

/* Reads exactly the key from fd; returns 0 or -EINVAL when the file holds
 * more or less than TOKEN_CRYPT_KEY_SIZE bytes. */
static int token_crypt_read_key(int fd, unsigned char *key)
{
  unsigned char extra;
  size_t got = 0;

  while (got < TOKEN_CRYPT_KEY_SIZE) {
    ssize_t n = read(fd, key + got, TOKEN_CRYPT_KEY_SIZE - got);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      return -EINVAL;
    got += (size_t) n;
  }
  return read(fd, &extra, 1) == 0 ? 0 : -EINVAL;
}

/* Creates the key file with fresh random bytes; O_EXCL so that two
 * starting processes never overwrite each other's key. */
static int token_crypt_create(const char *path, unsigned char *key, char *err,
                              size_t errlen)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  int rc = 0;

  if (fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot create the key file %s: %s", path,
             strerror(errno));
    return rc;
  }
  if (gnutls_rnd(GNUTLS_RND_KEY, key, TOKEN_CRYPT_KEY_SIZE) < 0) {
    snprintf(err, errlen, "no random bytes for the key file %s", path);
    rc = -EIO;
  } else if (write(fd, key, TOKEN_CRYPT_KEY_SIZE) != TOKEN_CRYPT_KEY_SIZE
             || fsync(fd) < 0) {
    rc = -EIO;
    snprintf(err, errlen, "cannot write the key file %s", path);
  }
  close(fd);
  if (rc < 0)
    unlink(path);
  else
    log_info("- token key_created path=%s", path);
  return rc;
}

/* Opens an existing key file after checking who may read it. */
static int token_crypt_load(const char *path, unsigned char *key, char *err,
                            size_t errlen)
{
  struct stat st;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  int rc;

  if (fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot open the key file %s: %s", path,
             strerror(errno));
    return rc;
  }
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    rc = -EINVAL;
    snprintf(err, errlen, "the key file %s is not a regular file", path);
  } else if ((st.st_mode & 077) != 0) {
    rc = -EPERM;
    snprintf(err, errlen,
             "the key file %s has mode %03o: group or others may read it; "
             "run chmod 600 on it (and consider the tokens exposed)",
             path, (unsigned) (st.st_mode & 0777));
  } else if ((rc = token_crypt_read_key(fd, key)) < 0) {
    snprintf(err, errlen, "the key file %s does not hold a %d-byte key", path,
             TOKEN_CRYPT_KEY_SIZE);
  }
  close(fd);
  return rc;
}

int token_crypt_open(const char *path, bool tokens_exist,
                     struct token_crypt **out, char *err, size_t errlen)
{
  unsigned char key[TOKEN_CRYPT_KEY_SIZE];
  gnutls_datum_t datum = { key, sizeof(key) };
  struct token_crypt *crypt;
  int rc;

  if (access(path, F_OK) < 0 && errno == ENOENT) {
    if (tokens_exist) {
      snprintf(err, errlen,
               "the key file %s is missing but the database holds "
               "encrypted refresh tokens; restore the key file (a new key "
               "cannot decrypt them), or unlink the users so they link "
               "again",
               path);
      return -ENOENT;
    }
    rc = token_crypt_create(path, key, err, errlen);
  } else {
    rc = token_crypt_load(path, key, err, errlen);
  }
  if (rc < 0)
    goto out;

  crypt = xcalloc(1, sizeof(*crypt));
  if (gnutls_aead_cipher_init(&crypt->cipher, GNUTLS_CIPHER_AES_256_GCM, &datum)
      < 0) {
    free(crypt);
    snprintf(err, errlen, "GnuTLS has no AES-256-GCM");
    rc = -EIO;
    goto out;
  }
  *out = crypt;

out:
  gnutls_memset(key, 0, sizeof(key));
  return rc;
}

void token_crypt_free(struct token_crypt *crypt)
{
  if (crypt == NULL)
    return;
  gnutls_aead_cipher_deinit(crypt->cipher);
  free(crypt);
}

int token_crypt_seal(struct token_crypt *crypt, const char *address,
                     const char *text, size_t len, void **blob, size_t *bloblen)
{
  size_t outlen = len + TOKEN_CRYPT_TAG_SIZE;
  unsigned char *out;

  if (len > TOKEN_CRYPT_VALUE_MAX)
    return -EMSGSIZE;
  out = xmalloc(TOKEN_CRYPT_HEADER + outlen);
  out[0] = TOKEN_CRYPT_VERSION;
  if (gnutls_rnd(GNUTLS_RND_NONCE, out + 1, TOKEN_CRYPT_NONCE_SIZE) < 0
      || gnutls_aead_cipher_encrypt(crypt->cipher, out + 1,
                                    TOKEN_CRYPT_NONCE_SIZE, address,
                                    strlen(address), TOKEN_CRYPT_TAG_SIZE, text,
                                    len, out + TOKEN_CRYPT_HEADER, &outlen)
             < 0) {
    free(out);
    log_error("%s token encrypt_failed", address);
    return -EIO;
  }
  *blob = out;
  *bloblen = TOKEN_CRYPT_HEADER + outlen;
  return 0;
}

int token_crypt_unseal(struct token_crypt *crypt, const char *address,
                       const void *blob, size_t bloblen, char **text)
{
  const unsigned char *in = blob;
  size_t outlen;
  char *out;

  if (bloblen < TOKEN_CRYPT_HEADER + TOKEN_CRYPT_TAG_SIZE
      || in[0] != TOKEN_CRYPT_VERSION)
    return -EBADMSG;
  outlen = bloblen - TOKEN_CRYPT_HEADER;
  out = xmalloc(outlen + 1);
  if (gnutls_aead_cipher_decrypt(crypt->cipher, in + 1, TOKEN_CRYPT_NONCE_SIZE,
                                 address, strlen(address), TOKEN_CRYPT_TAG_SIZE,
                                 in + TOKEN_CRYPT_HEADER, outlen, out, &outlen)
      < 0) {
    free(out);
    return -EBADMSG;
  }
  out[outlen] = '\0';
  *text = out;
  return 0;
}
