#!/usr/bin/python3
"""Application mode (client credentials): linking checks that the mailbox
exists in the tenant. A mailbox Microsoft 365 does not have is refused by
`nextal-policy link` (EX_NOUSER, with a sentence) and by the start link's
page; an existing one links through the start link with no sign-in and
no per-user token. `nextal-policy status` reports consent and token."""

import json
import os

from link_flow import LinkingTestCase, message
from scenario import DAVE, main

NOBODY = "nobody@contoso.example"
EX_NOUSER = 67


class LinkingApplication(LinkingTestCase):

    sandbox_options = {"link_mode": "application"}

    def test_cli_link_of_a_missing_mailbox(self):
        out = self.box.policy_cli("link", NOBODY, check=False)
        self.assertEqual(out.returncode, EX_NOUSER)
        self.assertIn("Microsoft 365 has no mailbox %s" % NOBODY, out.stderr)
        self.assertEqual(self.link_state(NOBODY)["state"], "not_linked")

    def test_start_link_of_a_missing_mailbox(self):
        status, _, page = self.browse(self.start_url(NOBODY))
        self.assertEqual(status, 404)
        self.assertIn("Microsoft 365 has no mailbox %s" % NOBODY, page)
        self.assertEqual(self.link_state(NOBODY)["state"], "not_linked")

    def test_start_link_links_an_existing_mailbox(self):
        status, final, page = self.browse(self.start_url(DAVE))
        self.assertEqual(status, 200, page)
        self.assertIn("/link/start", final)  # no trip to a sign-in page
        self.assertIn("Mailbox linked", page)
        self.assertEqual(self.link_state(DAVE)["state"], "linked")
        self.assertIsNone(self.stored_token(DAVE))
        before = self.sent_count(DAVE)
        self.send(DAVE, ["x@example.net"], message(DAVE, "app-mode"))
        self.wait_one_more(DAVE, before)

    def test_consent_answer_works_once(self):
        link = self.box.policy_cli("consent-link").stdout.strip()
        answer = self.redirect_of(link)
        self.assertIn("/oauth/consent?admin_consent=True", answer)
        status, _, page = self.browse(answer)
        self.assertEqual(status, 200, page)
        status, _, page = self.browse(answer)
        self.assertEqual(status, 400)
        self.assertIn("already used", page)

    def test_status_names_what_is_missing(self):
        status = json.loads(self.box.policy_cli("status", "--json").stdout)
        self.assertTrue(status["token"]["ok"])
        self.assertTrue(status["active"])

        # A wrong client secret: consent is there, a token is not.
        ini = self.box.path("agent.ini")
        with open(ini) as f:
            good = f.read()
        with open(ini, "w") as f:
            f.write(good.replace("client_secret = ", "client_secret = wrong-"))
        try:
            text = self.box.policy_cli("status").stdout
        finally:
            with open(ini, "w") as f:
                f.write(good)
        self.assertIn("token:         NOT OBTAINED", text)
        self.assertIn("active:        no: no token can be obtained", text)
        self.assertTrue(os.path.exists(ini))


class LinkingApplicationNoConsent(LinkingTestCase):

    sandbox_options = {"link_mode": "application"}
    grant_consent = False

    def test_forged_consent_answer_records_nothing(self):
        base = "http://127.0.0.1:%d/oauth/consent?" % self.box.http_port
        for query in ("admin_consent=True&tenant=evil",
                      "admin_consent=True&tenant=evil&state=made-up",
                      "error=access_denied&error_description=x&state=0"):
            status, _, page = self.browse(base + query)
            self.assertEqual(status, 400, query)
            self.assertIn("does not belong to a consent link", page)
        self.assertIn("admin consent: missing",
                      self.box.policy_cli("status").stdout)

    def test_status_says_consent_is_missing(self):
        text = self.box.policy_cli("status").stdout
        self.assertIn("admin consent: missing", text)
        self.assertIn("active:        no: admin consent is not recorded", text)

    def test_start_link_without_consent_links_nothing(self):
        status, _, page = self.browse(self.start_url(DAVE))
        self.assertEqual(status, 403)
        self.assertIn("consent", page)
        self.assertEqual(self.link_state(DAVE)["state"], "not_linked")


if __name__ == "__main__":
    main()
