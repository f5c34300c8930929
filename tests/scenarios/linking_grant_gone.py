#!/usr/bin/python3
"""When Microsoft says a user's grant is gone (account disabled 50057,
tokens revoked 50173, refresh token expired by inactivity 700082, consent
revoked 65001), the user is marked "needs re-link" with the reason: their
next SMTP MAIL is refused with link_expired, Nextal's link API shows why,
the mail that met the error is held, and signing in again releases it.
Unlinking one user over HTTP leaves another sending."""

import base64
import json
import smtplib
import threading
import time
import urllib.error
import urllib.request

from link_flow import LinkingTestCase, message, sandbox
from scenario import ALICE, BOB, CAROL, main
from sandbox import wait_for


class LinkingGrantGone(LinkingTestCase):

    def break_grant(self, user, action, undo, code):
        """Links user, breaks the grant with action, proves link_expired,
        then undoes it and links again."""
        self.link_by_sign_in(user)
        before = self.sent_count(user)
        self.send(user, ["x@example.net"], message(user, "before-%d" % code))
        self.wait_one_more(user, before)

        action()
        # Access tokens outlive a revocation; expiring them forces the
        # refresh that discovers the grant is gone.
        self.box.sim_post("/_sim/tokens", {"expire_access_tokens": True,
                                           "user": user})
        self.send(user, ["x@example.net"], message(user, "meets-%d" % code))
        state = self.wait_state(user, "needs_relink")
        self.assertIn("AADSTS%d" % code, state["reason"])
        self.assertIsNone(self.stored_token(user))
        # Mode is all: no policy list names the user, status does.
        status = json.loads(self.box.policy_cli("status", "--json").stdout)
        [entry] = [e for e in status["relink"] if e["address"] == user]
        self.assertIn("AADSTS%d" % code, entry["reason"])
        self.assertIn("  must link again: %s (" % user,
                      self.box.policy_cli("status").stdout)

        with self.assertRaises(smtplib.SMTPSenderRefused) as refused:
            self.send(user, ["x@example.net"], message(user, "after-%d" % code))
        self.assertEqual(refused.exception.smtp_code, 550)
        self.assertIn(b"link_expired", refused.exception.smtp_error)
        held = self.db().execute(
            "SELECT error_code FROM messages WHERE sender = ? AND state = 'held'",
            (user,)).fetchall()
        self.assertEqual(held, [("link_expired",)])

        undo()
        self.link_by_sign_in(user)
        self.assertEqual(self.link_state(user)["state"], "linked")
        status = json.loads(self.box.policy_cli("status", "--json").stdout)
        self.assertNotIn(user, [e["address"] for e in status["relink"]])
        # Held mail is released once the user is linked again.
        got = self.wait_one_more(user, before + 1, timeout=30)
        self.assertEqual(got[0]["resource"]["subject"], "meets-%d" % code)

    def caldav_propfind(self, user):
        """PROPFIND Depth 1 on the user's calendar; (status, body)."""
        cred = "%s:%s" % (sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
        req = urllib.request.Request(
            "http://127.0.0.1:%d/dav/calendars/%s/default/"
            % (self.box.http_port, user), method="PROPFIND",
            headers={"Depth": "1", "Content-Type": "application/xml",
                     "Authorization": "Basic "
                     + base64.b64encode(cred.encode()).decode()},
            data=b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop>'
                 b'<getetag/></prop></propfind>')
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def test_caldav_meets_a_revoked_grant(self):
        """The token cache marks the user, so CalDAV alone is enough to
        find out, and mail is refused from then on."""
        self.link_by_sign_in(BOB)
        status, _ = self.caldav_propfind(BOB)
        self.assertEqual(status, 207)
        self.box.sim_post("/_sim/users/" + BOB, {"revoke_tokens": True})
        self.box.sim_post("/_sim/tokens", {"expire_access_tokens": True,
                                           "user": BOB})
        status, body = self.caldav_propfind(BOB)
        self.assertEqual(status, 403, body)
        state = self.link_state(BOB)
        self.assertEqual(state["state"], "needs_relink")
        self.assertIn("AADSTS50173", state["reason"])
        status, body = self.caldav_propfind(BOB)
        self.assertEqual(status, 403)
        self.assertIn("link_expired", body)
        with self.assertRaises(smtplib.SMTPSenderRefused) as refused:
            self.send(BOB, ["x@example.net"], message(BOB, "after-caldav"))
        self.assertIn(b"link_expired", refused.exception.smtp_error)
        self.link_by_sign_in(BOB)
        status, _ = self.caldav_propfind(BOB)
        self.assertEqual(status, 207)

    def user_flags(self, user, **flags):
        return lambda: self.box.sim_post("/_sim/users/" + user, flags)

    def test_user_disabled_50057(self):
        self.break_grant(ALICE, self.user_flags(ALICE, disabled=True),
                         self.user_flags(ALICE, disabled=False), 50057)

    def test_tokens_revoked_50173(self):
        self.break_grant(ALICE, self.user_flags(ALICE, revoke_tokens=True),
                         lambda: None, 50173)

    def test_inactivity_700082(self):
        self.break_grant(ALICE,
                         self.user_flags(ALICE, expire_refresh_tokens=True),
                         lambda: None, 700082)

    def test_consent_revoked_65001(self):
        def revoke():
            self.box.sim_post("/_sim/consent", {"granted": False})

        def restore():
            self.box.sim_post("/_sim/consent", {"granted": True})
        self.break_grant(ALICE, revoke, restore, 65001)

    def test_unlinking_one_user_leaves_another_sending(self):
        self.link_by_sign_in(BOB)
        self.link_by_sign_in(CAROL)
        # Carol's mail waits in the queue (Graph is busy for her).
        self.box.sim_post("/_sim/faults", {"fault": "503", "mailbox": CAROL,
                                           "operation": "sendMail",
                                           "probability": 1.0,
                                           "retry_after": "60"})
        self.send(CAROL, ["x@example.net"], message(CAROL, "carol-queued"))
        wait_for(lambda: self.db().execute(
            "SELECT 1 FROM messages WHERE sender = ? AND state = 'queued'"
            " AND attempts > 0", (CAROL,)).fetchone(), 15, "a retry queued")
        before_bob = self.sent_count(BOB)
        stop = threading.Event()
        sent = []
        errors = []

        def bob_sends():
            i = 0
            try:
                while not stop.is_set() and i < 20:
                    self.send(BOB, ["x@example.net"],
                              message(BOB, "bob-%d" % i))
                    sent.append(i)
                    i += 1
                    time.sleep(0.05)
            except Exception as err:  # reported by the main thread below
                errors.append(err)
        worker = threading.Thread(target=bob_sends)
        worker.start()
        try:
            status, _ = self.api("DELETE", CAROL, auth=False)
            self.assertEqual(status, 401)
            status, body = self.api("DELETE", CAROL)
            self.assertEqual(status, 200, body)
            self.assertIn("1 queued or held messages failed", body["detail"])
        finally:
            stop.set()
            worker.join()
            self.box.sim_post("/_sim/faults", {"clear": True})

        self.assertEqual(self.link_state(CAROL)["state"], "not_linked")
        self.assertIsNone(self.stored_token(CAROL))
        with self.assertRaises(smtplib.SMTPSenderRefused) as refused:
            self.send(CAROL, ["x@example.net"], message(CAROL, "carol-after"))
        self.assertIn(b"user_not_linked", refused.exception.smtp_error)
        rows = self.db().execute(
            "SELECT state, error_code FROM messages WHERE sender = ?",
            (CAROL,)).fetchall()
        self.assertEqual(rows, [("failed", "user_unlinked")])

        # Bob was never refused while Carol was offboarded beside him.
        self.assertEqual(errors, [])
        self.assertGreater(len(sent), 0)
        self.box.wait_sent(BOB, before_bob + len(sent))
        self.assertEqual(self.link_state(BOB)["state"], "linked")
        self.assertIn("%s: link removed, tokens wiped" % CAROL,
                      self.box.policy_cli("audit").stdout)
        status, _ = self.api("DELETE", CAROL)
        self.assertEqual(status, 404)


if __name__ == "__main__":
    main()
