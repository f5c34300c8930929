#!/usr/bin/python3
"""The master switch as an administrator uses it: switching off while mail
is queued sends nothing more to Graph and loses nothing (the mail is held),
new SMTP transactions are refused with the reason, and switching back on
(and re-linking, since switching off disconnects every user) delivers the
held mail exactly once. Removing one user in specific mode holds only that
user's mail."""

import smtplib
import time

from scenario import ALICE, BOB, CAROL, AgentTestCase, main
from sandbox import wait_for


def message(sender, tag):
    return ("From: %s\r\nTo: held@example.net\r\nSubject: %s\r\n"
            "Message-ID: <%s@nextal.test>\r\n\r\n%s\r\n" % (sender, tag, tag, tag)).encode()


class PolicySwitchHoldsMail(AgentTestCase):

    def states(self, sender):
        rows = self.db().execute(
            "SELECT state, COUNT(*) FROM messages WHERE sender = ? GROUP BY state",
            (sender,)).fetchall()
        return dict(rows)

    def test_disable_holds_then_enable_delivers_once(self):
        # Carol's sends fail transiently, so her mail sits in the queue.
        self.box.sim_post("/_sim/faults", {"fault": "503", "mailbox": CAROL,
                                           "operation": "sendMail",
                                           "probability": 1.0, "retry_after": "1"})
        tags = ["switch-%d" % i for i in range(3)]
        for tag in tags:
            self.send(CAROL, ["held@example.net"], message(CAROL, tag))
        self.box.policy_cli("disable", "--yes")
        self.box.sim_post("/_sim/faults", {"clear": True})
        wait_for(lambda: self.states(CAROL).get("held") == 3, 15, "mail held")
        time.sleep(2.5)
        self.assertEqual(self.sent_count(CAROL), 0, "mail left after the switch-off")

        with self.assertRaises(smtplib.SMTPSenderRefused) as refused:
            self.send(ALICE, ["x@example.net"], message(ALICE, "refused"))
        self.assertEqual(refused.exception.smtp_code, 550)
        self.assertIn(b"org_disabled", refused.exception.smtp_error)

        self.box.policy_cli("enable")
        time.sleep(1.5)
        self.assertEqual(self.sent_count(CAROL), 0, "sent before the user linked again")
        self.box.link(CAROL)
        self.box.wait_sent(CAROL, 3, timeout=30)
        time.sleep(2)
        self.assertEqual(sorted(r["resource"]["subject"] for r in self.box.sent(CAROL)), tags)
        self.assertEqual(self.states(CAROL), {"sent": 3})
        for user in (ALICE, BOB):
            self.box.link(user)

    def test_removing_one_user_holds_only_theirs(self):
        self.box.policy_cli("mode", "specific")
        self.box.policy_cli("allow", ALICE)
        time.sleep(1.5)  # the agent applies the file within a second
        before_alice = self.sent_count(ALICE)
        self.send(ALICE, ["ok@example.net"], message(ALICE, "allowed"))
        with self.assertRaises(smtplib.SMTPSenderRefused) as refused:
            self.send(BOB, ["x@example.net"], message(BOB, "not-listed"))
        self.assertIn(b"user_not_permitted", refused.exception.smtp_error)
        self.box.wait_sent(ALICE, before_alice + 1)
        check = self.box.policy_cli("check", BOB, check=False)
        self.assertEqual(check.returncode, 1)
        self.assertIn("user_not_permitted", check.stdout + check.stderr)
        self.box.policy_cli("mode", "all")


if __name__ == "__main__":
    main()
