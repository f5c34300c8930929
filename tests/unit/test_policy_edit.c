/* SPDX-License-Identifier: MIT */
/* In-place policy edits keep comments and order; the locked file edit
 * writes only valid text and leaves the file alone otherwise. */
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

#include "policy_edit.h"

static const char original[] = "# Nextal Office 365 integration policy\n"
                               "[integration]\n"
                               "enabled = true   ; master switch\n"
                               "mode = specific          ; all | specific\n"
                               "\n"
                               "[users]\n"
                               "# recruiting\n"
                               "user = alice@contoso.example\n"
                               "user = Bob@Contoso.Example ; team lead\n"
                               "\n"
                               "# end of list\n";

static struct policy_edit *edit_of(const char *text)
{
  struct policy_edit *e = NULL;

  assert_int_equal(policy_edit_parse(text, strlen(text), &e), 0);
  return e;
}

static void assert_text(struct policy_edit *e, const char *want)
{
  size_t len;
  char *got = policy_edit_text(e, &len);

  assert_string_equal(got, want);
  assert_int_equal(len, strlen(want));
  free(got);
}

static void test_roundtrip(void **state)
{
  struct policy_edit *e = edit_of(original);

  assert_text(e, original);
  policy_edit_free(e);
  e = edit_of("[integration]\nenabled = true");
  assert_text(e, "[integration]\nenabled = true");
  policy_edit_free(e);
}

static void test_switch_and_mode_in_place(void **state)
{
  struct policy_edit *e = edit_of(original);
  bool changed = false;

  assert_int_equal(policy_edit_set_enabled(e, false, &changed), 0);
  assert_true(changed);
  assert_int_equal(policy_edit_set_mode(e, POLICY_MODE_ALL, &changed), 0);
  assert_true(changed);
  assert_text(e, "# Nextal Office 365 integration policy\n"
                 "[integration]\n"
                 "enabled = false   ; master switch\n"
                 "mode = all          ; all | specific\n"
                 "\n"
                 "[users]\n"
                 "# recruiting\n"
                 "user = alice@contoso.example\n"
                 "user = Bob@Contoso.Example ; team lead\n"
                 "\n"
                 "# end of list\n");

  /* Setting what is already there changes nothing. */
  assert_int_equal(policy_edit_set_mode(e, POLICY_MODE_ALL, &changed), 0);
  assert_false(changed);
  policy_edit_free(e);
}

/* A value spelt another way that policy_parse reads the same is already
 * set: the CLI must not rewrite it and audit a change that is none. */
static void test_switch_synonym_is_no_change(void **state)
{
  struct policy_edit *e = edit_of("[integration]\nenabled = Yes ; on\n"
                                  "mode = SPECIFIC\n");
  bool changed = true;

  assert_int_equal(policy_edit_set_enabled(e, true, &changed), 0);
  assert_false(changed);
  assert_int_equal(policy_edit_set_mode(e, POLICY_MODE_SPECIFIC, &changed), 0);
  assert_false(changed);
  assert_int_equal(policy_edit_set_enabled(e, false, &changed), 0);
  assert_true(changed);
  assert_text(e, "[integration]\nenabled = false ; on\nmode = SPECIFIC\n");
  policy_edit_free(e);
}

static void test_allow_and_remove(void **state)
{
  struct policy_edit *e = edit_of(original);

  assert_int_equal(policy_edit_allow(e, "Carol@Contoso.Example"), 0);
  assert_int_equal(policy_edit_allow(e, "BOB@contoso.example"), -EEXIST);
  assert_int_equal(policy_edit_allow(e, "not-an-address"), -EINVAL);
  assert_int_equal(policy_edit_remove(e, "alice@CONTOSO.example"), 0);
  assert_int_equal(policy_edit_remove(e, "alice@contoso.example"), -ENOENT);
  assert_text(e, "# Nextal Office 365 integration policy\n"
                 "[integration]\n"
                 "enabled = true   ; master switch\n"
                 "mode = specific          ; all | specific\n"
                 "\n"
                 "[users]\n"
                 "# recruiting\n"
                 "user = Bob@Contoso.Example ; team lead\n"
                 "user = carol@contoso.example\n"
                 "\n"
                 "# end of list\n");
  policy_edit_free(e);
}

static void test_missing_sections(void **state)
{
  struct policy_edit *e = edit_of("# only a comment\n");
  bool changed;

  assert_int_equal(policy_edit_set_enabled(e, true, &changed), 0);
  assert_int_equal(policy_edit_set_mode(e, POLICY_MODE_SPECIFIC, &changed), 0);
  assert_int_equal(policy_edit_allow(e, "a@b.example"), 0);
  assert_text(e, "# only a comment\n"
                 "[integration]\n"
                 "mode = specific\n"
                 "enabled = true\n"
                 "\n"
                 "[users]\n"
                 "user = a@b.example\n");
  policy_edit_free(e);
}

static int cb_allow(struct policy_edit *e, void *arg, bool *changed)
{
  int rc = policy_edit_allow(e, arg);

  *changed = rc == 0;
  return rc == -EEXIST ? 0 : rc;
}

static char *read_all(const char *path)
{
  FILE *f = fopen(path, "r");
  char *buf = calloc(1, 4096);

  assert_non_null(f);
  assert_true(fread(buf, 1, 4095, f) > 0);
  fclose(f);
  return buf;
}

static void test_file_edit(void **state)
{
  char dir[] = "/tmp/test_policy_edit_XXXXXX";
  char path[256], lock[300], err[512] = "";
  FILE *f;
  char *text;
  struct stat st;

  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/policy.ini", dir);
  snprintf(lock, sizeof(lock), "%s.lock", path);
  f = fopen(path, "w");
  fputs(original, f);
  fclose(f);
  chmod(path, 0640);

  assert_int_equal(policy_edit_file(path, cb_allow, "dave@contoso.example", err,
                                    sizeof(err)),
                   0);
  text = read_all(path);
  assert_non_null(strstr(text, "team lead\nuser = dave@contoso.example\n"));
  assert_non_null(strstr(text, "# end of list\n"));
  free(text);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0640);

  /* A hand-broken file is not made worse, and stays as it was. */
  f = fopen(path, "a");
  fputs("bogus line\n", f);
  fclose(f);
  assert_int_equal(policy_edit_file(path, cb_allow, "erin@contoso.example", err,
                                    sizeof(err)),
                   -EINVAL);
  assert_non_null(strstr(err, "policy.ini:13:"));
  text = read_all(path);
  assert_null(strstr(text, "erin@"));
  free(text);

  unlink(path);
  unlink(lock);
  rmdir(dir);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_roundtrip),
    cmocka_unit_test(test_switch_and_mode_in_place),
    cmocka_unit_test(test_switch_synonym_is_no_change),
    cmocka_unit_test(test_allow_and_remove),
    cmocka_unit_test(test_missing_sections),
    cmocka_unit_test(test_file_edit),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
