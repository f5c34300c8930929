#!/usr/bin/python3
"""Delegated linking as a person does it: the start link Nextal hands out,
followed by a browser (curl -L) through Microsoft's sign-in and back to
the agent, which then sends that user's mail. Forged, expired and
over-long start links link nothing; signing in as someone else links
nothing (who signed in is what Graph's /me says: its mail or UPN must be
the address, its id the id_token's oid); refresh tokens rotate and are stored only encrypted."""

import base64
import glob
import smtplib
import time
import urllib.error
import urllib.parse
import urllib.request

from link_flow import SIM_REFRESH_PREFIX, LinkingTestCase, message
from scenario import ALICE, BOB, CAROL, DAVE, main, sandbox


class LinkingDelegated(LinkingTestCase):

    def test_full_link_then_mail_is_sent_as_the_user(self):
        self.assertEqual(self.link_state(ALICE)["state"], "not_linked")
        with self.assertRaises(smtplib.SMTPSenderRefused) as refused:
            self.send(ALICE, ["x@example.net"], message(ALICE, "too-early"))
        self.assertIn(b"user_not_linked", refused.exception.smtp_error)

        self.link_by_sign_in(ALICE)
        state = self.link_state(ALICE)
        self.assertEqual(state["state"], "linked")
        self.assertRegex(state["linked_at"], r"^\d{4}-\d\d-\d\dT")
        self.assertNotClear(self.stored_token(ALICE))

        before = self.sent_count(ALICE)
        self.send(ALICE, ["x@example.net"], message(ALICE, "linked-mail"))
        got = self.wait_one_more(ALICE, before)
        self.assertEqual(got[0]["resource"]["subject"], "linked-mail")

        # No file of the database holds a refresh token in clear.
        for path in glob.glob(self.box.path("agent.db*")):
            if path.endswith(".key"):
                continue
            with open(path, "rb") as f:
                self.assertNotIn(SIM_REFRESH_PREFIX, f.read(), path)
        audit = self.box.policy_cli("audit").stdout
        self.assertIn("%s: linked by the user's own sign-in" % ALICE, audit)

    def test_forged_expired_and_too_long_links_are_refused(self):
        now = int(time.time())
        good = self.signed_url(CAROL, now + 300)
        forged = good[:-1] + ("0" if good[-1] != "0" else "1")
        other_secret = self.signed_url(CAROL, now + 300, secret="guessed")
        someone_else = self.signed_url(DAVE, now + 300).replace(
            "dave%40", "carol%40")
        cases = [
            (forged, "signature does not match"),
            (other_secret, "signature does not match"),
            (someone_else, "signature does not match"),
            (self.signed_url(CAROL, now - 5), "has expired"),
            (self.signed_url(CAROL, now + 3600), "valid for too long"),
        ]
        for url, reason in cases:
            status, _, page = self.browse(url)
            self.assertEqual(status, 403, url)
            self.assertIn(reason, page)
            self.assertIn("Nothing was linked", page)
        status, _, page = self.browse(
            "http://127.0.0.1:%d/link/start?user=%s" % (self.box.http_port, CAROL))
        self.assertEqual(status, 400)
        self.assertEqual(self.link_state(CAROL)["state"], "not_linked")

    def test_signing_in_as_someone_else_links_nothing(self):
        self.box.sim_post("/_sim/signin", {"as": BOB, "once": True})
        status, final, page = self.browse(self.start_url(CAROL))
        self.assertEqual(status, 403)
        self.assertIn("/oauth/callback", final)
        self.assertIn("signed in as %s, but this link is for %s" % (BOB, CAROL),
                      page)
        self.assertEqual(self.link_state(CAROL)["state"], "not_linked")
        self.assertEqual(self.link_state(BOB)["state"], "not_linked")
        self.assertIsNone(self.stored_token(CAROL))
        self.assertIsNone(self.stored_token(BOB))
        # The state was used up: replaying the callback does nothing.
        status, _, _ = self.browse(final)
        self.assertEqual(status, 400)
        self.assertEqual(self.link_state(CAROL)["state"], "not_linked")

    def link_afresh(self, address):
        """Links address by sign-in, from not linked (an earlier test may
        have linked it); returns the page."""
        if self.link_state(address)["state"] != "not_linked":
            status, body = self.api("DELETE", address)
            self.assertEqual(status, 200, body)
        self.assertEqual(self.link_state(address)["state"], "not_linked")
        page = self.link_by_sign_in(address)
        self.assertEqual(self.link_state(address)["state"], "linked")
        self.assertNotClear(self.stored_token(address))
        return page

    def test_id_token_without_preferred_username_links(self):
        """Who signed in is Graph's /me, not preferred_username (a claim
        Microsoft sends only with the profile scope)."""
        self.box.sim_post("/_sim/signin",
                          {"omit_claims": ["preferred_username"]})
        self.addCleanup(self.box.sim_post, "/_sim/signin", {"omit_claims": []})
        self.link_afresh(ALICE)

    def test_user_whose_upn_differs_from_mail_links(self):
        upn = "a.liddell@contoso.onmicrosoft.com"
        self.box.sim_post("/_sim/users/" + ALICE, {"upn": upn})
        self.addCleanup(self.box.sim_post, "/_sim/users/" + ALICE,
                        {"upn": None})
        self.link_afresh(ALICE)
        before = self.sent_count(ALICE)
        self.send(ALICE, ["x@example.net"], message(ALICE, "upn-mail"))
        self.wait_one_more(ALICE, before)

    def test_account_with_another_mail_but_the_right_upn_is_refused(self):
        """The address must be the account's own (mail or UPN) and /me
        must be the account the id_token names: BOB whose UPN is not
        CAROL's address still cannot link CAROL."""
        self.box.sim_post("/_sim/users/" + BOB,
                          {"upn": "bob.b@contoso.onmicrosoft.com"})
        self.addCleanup(self.box.sim_post, "/_sim/users/" + BOB, {"upn": None})
        self.box.sim_post("/_sim/signin", {"as": BOB, "once": True})
        status, _, page = self.browse(self.start_url(CAROL))
        self.assertEqual(status, 403, page)
        self.assertIn("<h1>Wrong account</h1>", page)
        self.assertIn("signed in as %s, but this link is for %s" % (BOB, CAROL),
                      page)
        self.assertEqual(self.link_state(CAROL)["state"], "not_linked")
        self.assertIsNone(self.stored_token(CAROL))
        self.assertIn("%s: refused: the sign-in was by %s" % (CAROL, BOB),
                      self.box.policy_cli("audit").stdout)

    def test_linked_user_floating_time_lands_in_mailbox_zone(self):
        """The sign-in grants MailboxSettings.Read, so a delegated user's
        floating time takes the mailbox's own zone (without it Graph
        refuses to tell the zone and the PUT is refused)."""
        if self.link_state(ALICE)["state"] != "linked":
            self.link_by_sign_in(ALICE)
        self.box.sim_post("/_sim/mailboxsettings/" + ALICE,
                          {"timeZone": "Tokyo Standard Time"})
        text = "\r\n".join([
            "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Nextal//scenario//EN",
            "BEGIN:VEVENT", "UID:delegated-floating", "DTSTAMP:20300101T000000Z",
            "DTSTART:20300304T090000", "DTEND:20300304T100000",
            "SUMMARY:Delegated floating interview", "END:VEVENT",
            "END:VCALENDAR", ""]).encode()
        cred = "%s:%s" % (sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
        req = urllib.request.Request(
            "http://127.0.0.1:%d/dav/calendars/%s/default/delegated.ics"
            % (self.box.http_port, ALICE), data=text, method="PUT",
            headers={"Content-Type": "text/calendar; charset=utf-8",
                     "If-None-Match": "*", "Authorization": "Basic "
                     + base64.b64encode(cred.encode()).decode()})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            self.fail("PUT answered %d: %s" % (e.code, e.read().decode()))
        self.assertEqual(status, 201)
        events = self.box.sim_get("/_sim/calendars/%s/events"
                                  % urllib.parse.quote(ALICE))["events"]
        [ev] = [e for e in events
                if e.get("subject") == "Delegated floating interview"]
        self.assertEqual(ev["originalStartTimeZone"], "Tokyo Standard Time")
        # 09:00 in Tokyo (UTC+9) is midnight UTC.
        self.assertEqual(ev["start"]["dateTime"][:19], "2030-03-04T00:00:00")

    def test_policy_checked_again_when_the_sign_in_returns(self):
        authorize = self.redirect_of(self.start_url(CAROL))
        self.assertIn("/oauth2/v2.0/authorize?", authorize)
        self.assertIn("code_challenge_method=S256", authorize)
        callback = self.redirect_of(authorize)
        self.assertIn("/oauth/callback?code=", callback)
        try:
            self.box.policy_cli("mode", "specific")
            self.box.policy_cli("allow", BOB)
            time.sleep(1.5)  # the agent applies the file within a second
            status, _, page = self.browse(callback)
        finally:
            self.box.policy_cli("mode", "all")
            time.sleep(1.5)
        self.assertEqual(status, 403)
        self.assertIn("no longer lets %s link" % CAROL, page)
        self.assertEqual(self.link_state(CAROL)["state"], "not_linked")

    def test_declined_sign_in_is_explained(self):
        self.box.sim_post("/_sim/signin", {"decline": 1})
        status, _, page = self.browse(self.start_url(CAROL))
        self.assertEqual(status, 403)
        self.assertIn("access_denied", page)
        self.assertIn("Nothing was linked", page)
        self.assertEqual(self.link_state(CAROL)["state"], "not_linked")

    def token_requests(self, address):
        return self.box.sim_get("/_sim/tokens?user=" + address)["requests"]

    def test_refresh_token_rotates_and_stays_encrypted(self):
        """Each refresh presents the refresh token the previous answer
        issued, as the simulator saw it; a stored ciphertext that merely
        changes would not show that (its nonce is random)."""
        self.link_by_sign_in(DAVE)
        first = bytes(self.stored_token(DAVE))

        # The first send refreshes (the sign-in's access token is not kept).
        before = self.sent_count(DAVE)
        self.send(DAVE, ["x@example.net"], message(DAVE, "rotate-1"))
        self.wait_one_more(DAVE, before)
        second = bytes(self.stored_token(DAVE))

        # Graph forgets the access token: the agent refreshes again.
        self.box.sim_post("/_sim/tokens", {"expire_access_tokens": True,
                                           "user": DAVE})
        self.send(DAVE, ["x@example.net"], message(DAVE, "rotate-2"))
        self.wait_one_more(DAVE, before + 1)
        third = bytes(self.stored_token(DAVE))

        log = self.token_requests(DAVE)
        self.assertEqual([e["grant_type"] for e in log],
                         ["authorization_code", "refresh_token",
                          "refresh_token"], log)
        self.assertTrue(all(e["status"] == 200 for e in log), log)
        issued = [e["issued_refresh_token"] for e in log]
        self.assertEqual(len(set(issued)), 3, "each answer rotates")
        self.assertEqual(log[1]["presented_refresh_token"], issued[0])
        self.assertEqual(log[2]["presented_refresh_token"], issued[1])
        for blob in (first, second, third):
            self.assertNotClear(blob)
        self.assertEqual(self.link_state(DAVE)["state"], "linked")

    def test_start_url_over_http_needs_the_service_credential(self):
        status, _ = self.api("POST", CAROL, "/start-url", auth=False)
        self.assertEqual(status, 401)
        status, body = self.api("POST", CAROL, "/start-url")
        self.assertEqual(status, 200, body)
        self.assertIn("/link/start?user=carol%40contoso.example&exp=",
                      body["url"])
        self.assertLessEqual(body["expires_at"], int(time.time()) + 900)


if __name__ == "__main__":
    main()
