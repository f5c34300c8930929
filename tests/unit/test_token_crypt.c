/* SPDX-License-Identifier: MIT */
/* token_crypt: the key file's creation and permission rules, and sealed
 * tokens that open only with the same key and address. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "token_crypt.h"

struct fixture {
  char dir[64];
  char key[128];
  struct token_crypt *crypt;
};

static int setup(void **state)
{
  struct fixture *fx = calloc(1, sizeof(*fx));
  char err[512];

  assert_non_null(fx);
  snprintf(fx->dir, sizeof(fx->dir), "/tmp/nx-crypt-XXXXXX");
  assert_non_null(mkdtemp(fx->dir));
  snprintf(fx->key, sizeof(fx->key), "%s/agent.db.key", fx->dir);
  assert_int_equal(
      token_crypt_open(fx->key, false, &fx->crypt, err, sizeof(err)), 0);
  *state = fx;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *fx = *state;
  char path[160];

  token_crypt_free(fx->crypt);
  unlink(fx->key);
  snprintf(path, sizeof(path), "%s/other.key", fx->dir);
  unlink(path);
  rmdir(fx->dir);
  free(fx);
  return 0;
}

static void test_seal_binds_address(void **state)
{
  struct fixture *fx = *state;
  char *text = NULL;
  void *blob;
  size_t len;

  assert_int_equal(
      token_crypt_seal(fx->crypt, "a@example.com", "rt-9", 4, &blob, &len), 0);
  assert_null(memmem(blob, len, "rt-9", 4));
  assert_int_equal(
      token_crypt_unseal(fx->crypt, "b@example.com", blob, len, &text),
      -EBADMSG);
  assert_int_equal(
      token_crypt_unseal(fx->crypt, "a@example.com", blob, len, &text), 0);
  assert_string_equal(text, "rt-9");
  free(text);

  /* One flipped bit, or a token stored in clear, is refused. */
  ((unsigned char *) blob)[len - 1] ^= 1;
  assert_int_equal(
      token_crypt_unseal(fx->crypt, "a@example.com", blob, len, &text),
      -EBADMSG);
  assert_int_equal(token_crypt_unseal(fx->crypt, "a@example.com",
                                      "plain-refresh-token-text", 24, &text),
                   -EBADMSG);
  free(blob);
}

static void test_same_token_seals_differently(void **state)
{
  struct fixture *fx = *state;
  void *one, *two;
  size_t len1, len2;

  assert_int_equal(
      token_crypt_seal(fx->crypt, "a@example.com", "rt-1", 4, &one, &len1), 0);
  assert_int_equal(
      token_crypt_seal(fx->crypt, "a@example.com", "rt-1", 4, &two, &len2), 0);
  assert_int_equal(len1, len2);
  assert_memory_not_equal(one, two, len1); /* a fresh nonce each time */
  free(one);
  free(two);
}

static void test_other_key_cannot_open(void **state)
{
  struct fixture *fx = *state;
  struct token_crypt *other = NULL;
  char path[160], err[512];
  char *text = NULL;
  void *blob;
  size_t len;

  snprintf(path, sizeof(path), "%s/other.key", fx->dir);
  assert_int_equal(token_crypt_open(path, false, &other, err, sizeof(err)), 0);
  assert_int_equal(
      token_crypt_seal(fx->crypt, "a@example.com", "rt-1", 4, &blob, &len), 0);
  assert_int_equal(token_crypt_unseal(other, "a@example.com", blob, len, &text),
                   -EBADMSG);
  token_crypt_free(other);
  free(blob);
}

static void test_key_file_rules(void **state)
{
  struct fixture *fx = *state;
  struct token_crypt *crypt = NULL;
  char path[160], err[512];
  struct stat st;
  FILE *f;

  assert_int_equal(stat(fx->key, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(st.st_size, TOKEN_CRYPT_KEY_SIZE);

  /* Missing while tokens exist: refused, and no new key is made. */
  snprintf(path, sizeof(path), "%s/other.key", fx->dir);
  assert_int_equal(token_crypt_open(path, true, &crypt, err, sizeof(err)),
                   -ENOENT);
  assert_non_null(strstr(err, "missing"));
  assert_int_equal(access(path, F_OK), -1);

  /* Readable by others: refused until put right. */
  assert_int_equal(chmod(fx->key, 0644), 0);
  assert_int_equal(token_crypt_open(fx->key, true, &crypt, err, sizeof(err)),
                   -EPERM);
  assert_non_null(strstr(err, "644"));
  assert_int_equal(chmod(fx->key, 0600), 0);
  assert_int_equal(token_crypt_open(fx->key, true, &crypt, err, sizeof(err)),
                   0);
  token_crypt_free(crypt);

  /* A file that is not a key. */
  f = fopen(path, "w");
  assert_non_null(f);
  fputs("short", f);
  fclose(f);
  assert_int_equal(chmod(path, 0600), 0);
  assert_int_equal(token_crypt_open(path, true, &crypt, err, sizeof(err)),
                   -EINVAL);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_seal_binds_address, setup, teardown),
    cmocka_unit_test_setup_teardown(test_same_token_seals_differently, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_other_key_cannot_open, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_key_file_rules, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
