#!/usr/bin/python3
"""Application mode (client credentials): linking checks that the mailbox
exists in the tenant. A mailbox Microsoft 365 does not have is refused by
`nextal-policy link` (EX_NOUSER, with a sentence) and by the start link's
page, and so is a directory user without an Exchange mailbox (Graph
finds the user, with mail null); an existing one links through the start link with no sign-in and
no per-user token. `nextal-policy status` reports consent and token.
A refused admin consent is explained in plain words, with Microsoft's
answer below for IT, and recorded; a refusal after a grant keeps it."""

import json
import os
import urllib.parse

from link_flow import LinkingTestCase, message
from scenario import BOB, CAROL, DAVE, main

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

    def without_mailbox(self, address):
        """The user stays in the directory but loses the mailbox (Graph
        then answers the lookup with 200 and mail null)."""
        self.box.sim_post("/_sim/users/" + address, {"mailbox": False})
        self.addCleanup(self.box.sim_post, "/_sim/users/" + address,
                        {"mailbox": True})

    def test_cli_link_of_a_user_without_a_mailbox(self):
        self.without_mailbox(BOB)
        out = self.box.policy_cli("link", BOB, check=False)
        self.assertEqual(out.returncode, EX_NOUSER, out.stderr)
        self.assertIn("%s is a user without an Exchange Online mailbox" % BOB,
                      out.stderr)
        self.assertEqual(self.link_state(BOB)["state"], "not_linked")
        self.assertNotIn("%s: linked" % BOB,
                         self.box.policy_cli("audit").stdout)

    def test_start_link_of_a_user_without_a_mailbox(self):
        self.without_mailbox(CAROL)
        status, final, page = self.browse(self.start_url(CAROL))
        self.assertEqual(status, 404, page)
        self.assertIn("/link/start", final)
        self.assertIn("<h1>No mailbox</h1>", page)
        self.assertIn("%s is a user in your organisation but has no Exchange "
                      "Online mailbox" % CAROL, page)
        self.assertNotIn("Mailbox linked", page)
        self.assertEqual(self.link_state(CAROL)["state"], "not_linked")

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

    def test_refusal_after_a_grant_keeps_the_grant(self):
        """Someone declining (or a non-administrator opening) a later
        consent link takes nothing back at Microsoft."""
        self.box.sim_post("/_sim/consent", {"next_failure": "admin_required"})
        link = self.box.policy_cli("consent-link").stdout.strip().splitlines()[-1]
        status, _, page = self.browse(link)
        self.assertEqual(status, 403, page)
        self.assertIn("Consent not changed", page)
        self.assertIn("consent given earlier still stands", page)
        self.assertIn("AADSTS90094", page)
        status = json.loads(self.box.policy_cli("status", "--json").stdout)
        self.assertEqual(status["consent"]["state"], "granted")
        self.assertTrue(status["active"])

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


class LinkingConsentRefused(LinkingTestCase):
    """Microsoft's admin consent endpoint answers with an error for a
    consent link the agent issued (its state is valid)."""

    sandbox_options = {"link_mode": "application"}
    grant_consent = False

    def consent_link(self):
        return self.box.policy_cli("consent-link").stdout.strip().splitlines()[-1]

    def refuse(self, failure):
        """Opens a consent link while the simulator refuses; returns the
        page the person sees and the status `nextal-policy status --json`
        then reports."""
        self.box.sim_post("/_sim/consent", {"next_failure": failure})
        status, final, page = self.browse(self.consent_link())
        self.assertIn("/oauth/consent?", final)
        self.assertEqual(status, 403, page)
        self.assertIn("<h1>Consent not granted</h1>", page)
        self.assertIn("nextal-policy consent-link", page)
        self.assertNotIn("Nextal may now work", page)
        return page, json.loads(self.box.policy_cli("status", "--json").stdout)

    def assertRecorded(self, status, error, code):
        self.assertEqual(status["consent"]["state"], "failed")
        self.assertTrue(status["consent"]["error"].startswith(
            "%s: AADSTS%d:" % (error, code)), status["consent"])
        self.assertFalse(status["active"])
        text = self.box.policy_cli("status").stdout
        self.assertRegex(text, r"admin consent: failed at .*: %s: AADSTS%d:"
                         % (error, code))
        self.assertIn("active:        no: admin consent is not recorded", text)

    def test_admin_declined(self):
        page, status = self.refuse("access_denied")
        self.assertIn("declined or cancelled on Microsoft's consent page", page)
        # Microsoft's own text, for IT, below the sentence.
        self.assertIn("error: access_denied\nAADSTS65004: User declined", page)
        self.assertIn("Trace ID: ", page)
        self.assertRecorded(status, "access_denied", 65004)

    def test_not_an_administrator(self):
        page, status = self.refuse("admin_required")
        self.assertIn("Only an administrator who may consent for the whole "
                      "organisation", page)
        self.assertIn("AADSTS90094", page)
        self.assertRecorded(status, "access_denied", 90094)

    def test_consent_required_with_the_documented_decline(self):
        # The doc's example: consent_required with AADSTS65004 (declined).
        page, status = self.refuse("consent_required")
        self.assertIn("declined or cancelled", page)
        self.assertRecorded(status, "consent_required", 65004)

    def test_temporary_problem(self):
        page, status = self.refuse("server_error")
        self.assertIn("Microsoft had a temporary problem", page)
        self.assertRecorded(status, "server_error", 90090)

    def test_answer_text_is_escaped_and_unknown_errors_are_generic(self):
        """The description is shown as text: markup in it stays inert."""
        cases = [
            ("invalid_client", "AADSTS700016: Application with identifier "
             "'<b>x</b>' was not found & \"that\" is all",
             "Microsoft does not know, or does not accept, the application"),
            ("made_up_error", "<script>alert(1)</script>",
             "Microsoft did not grant consent. Pass the details below"),
        ]
        pages = []
        for error, description, sentence in cases:
            state = urllib.parse.parse_qs(
                urllib.parse.urlsplit(self.consent_link()).query)["state"][0]
            url = "http://127.0.0.1:%d/oauth/consent?%s" % (
                self.box.http_port, urllib.parse.urlencode(
                    {"error": error, "error_description": description,
                     "state": state}))
            status, _, page = self.browse(url)
            self.assertEqual(status, 403, page)
            self.assertIn(sentence, page)
            self.assertNotIn("<b>x</b>", page)
            self.assertNotIn("<script>", page)
            pages.append(page)
        self.assertIn("&lt;b&gt;x&lt;/b&gt;' was not found &amp; \"that\"",
                      pages[0])
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", pages[1])
        status = json.loads(self.box.policy_cli("status", "--json").stdout)
        self.assertEqual(status["consent"]["error"],
                         "made_up_error: <script>alert(1)</script>")


if __name__ == "__main__":
    main()
