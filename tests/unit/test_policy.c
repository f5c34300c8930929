/* SPDX-License-Identifier: MIT */
/* The policy file parser (valid files, errors naming their line, address
 * normalisation) and the decision over the whole request matrix. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <gnutls/crypto.h>

#include "policy.h"

static const char valid_text[] = "# Nextal Office 365 integration policy\n"
                                 "[integration]\n"
                                 "enabled = true\n"
                                 "mode = specific          ; all | specific\n"
                                 "\n"
                                 "[users]\n"
                                 "; people in recruiting\n"
                                 "user = Bob@Contoso.Example\n"
                                 "user = <alice@contoso.example>\n";

/* Parses text and expects it to fail with err starting with want. */
static void expect_error(const char *text, const char *want)
{
  struct policy *p = NULL;
  char err[512] = "";
  int rc = policy_parse("policy.ini", text, strlen(text), &p, err, sizeof(err));

  assert_int_not_equal(rc, 0);
  assert_null(p);
  if (strncmp(err, want, strlen(want)) != 0)
    fail_msg("error \"%s\" does not start with \"%s\"", err, want);
}

static void test_parse_valid(void **state)
{
  struct policy *p = NULL;
  char err[256] = "";
  unsigned char sum[32];
  char hex[65];

  assert_int_equal(policy_parse("policy.ini", valid_text, strlen(valid_text),
                                &p, err, sizeof(err)),
                   0);
  assert_true(p->enabled);
  assert_int_equal(p->mode, POLICY_MODE_SPECIFIC);
  assert_int_equal(p->nusers, 2);
  assert_string_equal(p->users[0], "alice@contoso.example");
  assert_string_equal(p->users[1], "bob@contoso.example");

  gnutls_hash_fast(GNUTLS_DIG_SHA256, valid_text, strlen(valid_text), sum);
  for (int i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02x", sum[i]);
  assert_string_equal(p->digest, hex);

  assert_true(policy_permits_user(p, "ALICE@contoso.example"));
  assert_true(policy_permits_user(p, "<bob@contoso.example>"));
  assert_false(policy_permits_user(p, "carol@contoso.example"));
  assert_false(policy_permits_user(p, "not an address"));
  policy_free(p);
}

static void test_parse_mode_all_and_off(void **state)
{
  const char *text = "[integration]\nenabled = off\nmode = ALL\n";
  struct policy *p = NULL;
  char err[256] = "";

  assert_int_equal(policy_parse("p", text, strlen(text), &p, err, sizeof(err)),
                   0);
  assert_false(p->enabled);
  assert_int_equal(p->mode, POLICY_MODE_ALL);
  assert_int_equal(p->nusers, 0);
  assert_true(policy_permits_user(p, "anyone@example.org"));
  assert_false(policy_permits_user(p, "nobody"));
  policy_free(p);
}

static void test_parse_errors_name_line(void **state)
{
  /* A bare address is not accepted: Debian's inih lacks ALLOW_NO_VALUE. */
  expect_error("[integration]\nenabled = true\nmode = all\n[users]\n"
               "alice@contoso.example\n",
               "policy.ini:5: ");
  expect_error("[integration]\nenabled = true\nmode = all\ncolour = red\n",
               "policy.ini:4: unknown key \"colour\" in [integration]");
  expect_error("[integration]\nenabled = true\nmode = all\n[users]\n"
               "user = a@b.example\nuser = c@d.example\n"
               "user = A@B.example\n",
               "policy.ini:7: a@b.example is listed twice (first on line 5)");
  expect_error("[integration]\nenabled = true\nmode = all\n[users]\n"
               "user = alice\n",
               "policy.ini:5: \"alice\" is not a mail address");
  expect_error("[integration]\nenabled = maybe\nmode = all\n",
               "policy.ini:2: enabled must be true or false");
  expect_error("[integration]\nenabled = true\nmode = some\n",
               "policy.ini:3: mode must be all or specific");
  expect_error("[integration]\nenabled = true\nenabled = false\nmode = all\n",
               "policy.ini:3: enabled is set twice");
  expect_error("enabled = true\n", "policy.ini:1: \"enabled\" stands before");
  expect_error("[integration]\nenabled = true\nmode = all\n[groups]\nx = y\n",
               "policy.ini:4: unknown section [groups]");
  expect_error("[users]\nname = a@b.example\n",
               "policy.ini:2: unknown key \"name\" in [users]");
  expect_error("[integration]\nmode = all\n",
               "policy.ini: [integration] needs enabled");
  expect_error("[integration]\nenabled = yes\n",
               "policy.ini: [integration] needs mode");
  expect_error("", "policy.ini: [integration] needs enabled");
}

static void test_parse_section_names_its_header(void **state)
{
  /* inih calls back for keys only: the header's own line is named. */
  expect_error("[Integration]\nenabled = true\nmode = all\n",
               "policy.ini:1: unknown section [Integration] (section names "
               "are [integration] and [users], in lower case)");
  expect_error("\xEF\xBB\xBF  [Integration] ; x\nenabled = true\n",
               "policy.ini:1: unknown section [Integration]");
  /* An empty one too, which inih would never report. */
  expect_error("[integration]\nenabled = true\nmode = all\n\n[user]\n",
               "policy.ini:5: unknown section [user]");
  /* After a key, a blank-led line continues its value: no header. */
  expect_error("[integration]\nenabled = true\nmode = all\n[users]\n"
               "user = a@b.example\n  [x]\n",
               "policy.ini:6: \"[x]\" is not a mail address");
}

static void test_parse_refuses_non_ascii_user(void **state)
{
  /* Such a sender needs SMTPUTF8, which the SMTP listener refuses. */
  expect_error("[integration]\nenabled = true\nmode = specific\n[users]\n"
               "user = alice@contoso.example\n"
               "user = j\xC3\xBCrgen@contoso.example\n",
               "policy.ini:6: \"j\xC3\xBCrgen@contoso.example\" has "
               "non-ASCII characters; the agent's SMTP listener has no "
               "SMTPUTF8, so this user could never send");
}

static void test_parse_first_error_wins(void **state)
{
  /* The earliest bad line is reported, whoever found it. */
  expect_error("[integration]\nenabled = true\nmode = all\n[users]\n"
               "user = x\nthis is not ini\nuser = y\n",
               "policy.ini:5: \"x\" is not a mail address");
  expect_error("[integration]\nenabled = true\nmode = all\n[users]\n"
               "garbage\nuser = y\n",
               "policy.ini:5: not a [section]");
}

static void test_parse_long_line(void **state)
{
  char text[1024];
  char local[600];

  memset(local, 'a', sizeof(local) - 1);
  local[sizeof(local) - 1] = '\0';
  snprintf(text, sizeof(text),
           "[integration]\nenabled = true\nmode = all\n[users]\n"
           "user = %s@example.org\n",
           local);
  expect_error(text, "policy.ini:5: line is longer than");
}

static void test_load_file(void **state)
{
  char path[] = "/tmp/test_policy_XXXXXX";
  int fd = mkstemp(path);
  struct policy *p = NULL;
  char err[512] = "";

  assert_true(fd >= 0);
  assert_int_equal(write(fd, valid_text, strlen(valid_text)),
                   (ssize_t) strlen(valid_text));
  close(fd);
  assert_int_equal(policy_load(path, &p, err, sizeof(err)), 0);
  assert_int_equal(p->nusers, 2);
  policy_free(p);
  unlink(path);

  assert_int_not_equal(policy_load(path, &p, err, sizeof(err)), 0);
  assert_non_null(strstr(err, "cannot read"));
}

static void test_normalize(void **state)
{
  char out[POLICY_ADDRESS_MAX];
  static const char *const bad[] = {
    "",      "alice",  "@example.org", "alice@", "a@b@c",
    "a b@c", "a@b..c", ".a@b",         "a.@b",   "a@.b",
    "a@b.",  "a\"b@c", "<a@b",         "a@b\n",  "(x)@y",
  };

  assert_int_equal(
      policy_address_normalize("Alice.Smith@Contoso.EXAMPLE", out, sizeof(out)),
      0);
  assert_string_equal(out, "alice.smith@contoso.example");
  assert_int_equal(
      policy_address_normalize("<b+tag@x.example>", out, sizeof(out)), 0);
  assert_string_equal(out, "b+tag@x.example");
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    if (policy_address_normalize(bad[i], out, sizeof(out)) != -EINVAL)
      fail_msg("\"%s\" was accepted as an address", bad[i]);
  }
  /* Too small a buffer is refused, not truncated. */
  assert_int_equal(policy_address_normalize("alice@example.org", out, 8),
                   -EINVAL);
}

/* The rule the decision must follow, written independently of the code
 * under test as the issue states it. */
static enum policy_reason matrix_expect(bool on, bool consent, bool permitted,
                                        enum policy_link_state link,
                                        enum policy_request req)
{
  if (!on)
    return POLICY_DENY_ORG_DISABLED;
  if (!consent)
    return POLICY_DENY_CONSENT_MISSING;
  if (!permitted)
    return POLICY_DENY_USER_NOT_PERMITTED;
  if (req == POLICY_REQUEST_LINK)
    return POLICY_ALLOW;
  if (link == POLICY_LINK_NONE)
    return POLICY_DENY_USER_NOT_LINKED;
  if (link == POLICY_LINK_NEEDS_RELINK)
    return POLICY_DENY_LINK_EXPIRED;
  return POLICY_ALLOW;
}

static void test_decide_matrix(void **state)
{
  static const enum policy_request reqs[] = {
    POLICY_REQUEST_SMTP,
    POLICY_REQUEST_CALDAV,
    POLICY_REQUEST_LINK,
    POLICY_REQUEST_DELIVERY,
  };
  static const enum policy_link_state links[] = {
    POLICY_LINK_NONE,
    POLICY_LINK_OK,
    POLICY_LINK_NEEDS_RELINK,
  };
  char *users[] = { "alice@contoso.example" };
  struct policy p = { .users = users, .nusers = 1 };
  int checked = 0;

  for (int on = 0; on < 2; on++)
    for (int consent = 0; consent < 2; consent++)
      for (int mode = 0; mode < 2; mode++)
        for (int listed = 0; listed < 2; listed++)
          for (size_t l = 0; l < 3; l++)
            for (size_t r = 0; r < 4; r++) {
              const char *who
                  = listed ? "Alice@Contoso.Example" : "carol@contoso.example";
              struct policy_facts facts = {
                .consent_granted = consent,
                .link = links[l],
                .link_reason = "invalid_grant",
              };
              struct policy_decision d;
              bool permitted = mode == 0 || listed;
              enum policy_reason want;

              p.enabled = on;
              p.mode = mode == 0 ? POLICY_MODE_ALL : POLICY_MODE_SPECIFIC;
              want = matrix_expect(on, consent, permitted, links[l], reqs[r]);
              policy_decide(&p, reqs[r], who, &facts, &d);
              if (d.reason != want)
                fail_msg("on=%d consent=%d mode=%d listed=%d link=%zu req=%zu:"
                         " got %s, want %s",
                         on, consent, mode, listed, l, r, d.code,
                         policy_reason_code(want));
              assert_string_equal(d.code, policy_reason_code(want));
              assert_true(d.sentence[0] != '\0');
              checked++;
            }
  assert_int_equal(checked, 2 * 2 * 2 * 2 * 3 * 4);
}

static void test_decide_codes_and_sentences(void **state)
{
  char *users[] = { "alice@contoso.example" };
  struct policy p = {
    .enabled = true, .mode = POLICY_MODE_SPECIFIC, .users = users, .nusers = 1
  };
  struct policy_facts facts = { .consent_granted = true,
                                .link = POLICY_LINK_NEEDS_RELINK,
                                .link_reason = "org_disabled" };
  struct policy_decision d;

  /* Fail closed without a policy, whatever the facts. */
  policy_decide(NULL, POLICY_REQUEST_SMTP, "alice@contoso.example", &facts, &d);
  assert_int_equal(d.reason, POLICY_DENY_NO_POLICY);
  assert_string_equal(d.code, "no_policy");

  policy_decide(&p, POLICY_REQUEST_SMTP, "alice@contoso.example", NULL, &d);
  assert_string_equal(d.code, "consent_missing");

  policy_decide(&p, POLICY_REQUEST_CALDAV, "alice@contoso.example", &facts, &d);
  assert_string_equal(d.code, "link_expired");
  assert_non_null(strstr(d.sentence, "org_disabled"));

  policy_decide(&p, POLICY_REQUEST_SMTP, "bogus", &facts, &d);
  assert_string_equal(d.code, "invalid_address");
  policy_decide(&p, POLICY_REQUEST_SMTP, NULL, &facts, &d);
  assert_string_equal(d.code, "invalid_address");

  assert_string_equal(policy_reason_code(POLICY_ALLOW), "allowed");
  assert_string_equal(policy_reason_code(POLICY_DENY_ORG_DISABLED),
                      "org_disabled");
  assert_string_equal(policy_reason_code(POLICY_DENY_USER_NOT_PERMITTED),
                      "user_not_permitted");
  assert_string_equal(policy_reason_code(POLICY_DENY_USER_NOT_LINKED),
                      "user_not_linked");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse_valid),
    cmocka_unit_test(test_parse_mode_all_and_off),
    cmocka_unit_test(test_parse_errors_name_line),
    cmocka_unit_test(test_parse_section_names_its_header),
    cmocka_unit_test(test_parse_refuses_non_ascii_user),
    cmocka_unit_test(test_parse_first_error_wins),
    cmocka_unit_test(test_parse_long_line),
    cmocka_unit_test(test_load_file),
    cmocka_unit_test(test_normalize),
    cmocka_unit_test(test_decide_matrix),
    cmocka_unit_test(test_decide_codes_and_sentences),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
