#!/usr/bin/python3
"""The master switch as an administrator uses it: switching off while mail
is queued sends nothing more to Graph (not one request for the user reaches
the simulator once the switch is applied) and loses nothing (the mail is held),
new SMTP transactions are refused with the reason, and switching back on
(and re-linking, since switching off disconnects every user) delivers the
held mail exactly once. Removing one user in specific mode holds only that
user's mail."""

import json
import smtplib
import time

from scenario import ALICE, BOB, CAROL, AgentTestCase, main, sandbox
from sandbox import wait_for

APPLY_S = 1.0  # the agent applies a policy edit within a second


def message(sender, tag):
    return ("From: %s\r\nTo: held@example.net\r\nSubject: %s\r\n"
            "Message-ID: <%s@nextal.test>\r\n\r\n%s\r\n" % (sender, tag, tag, tag)).encode()


class PolicySwitchHoldsMail(AgentTestCase):

    def states(self, sender):
        rows = self.db().execute(
            "SELECT state, COUNT(*) FROM messages WHERE sender = ? GROUP BY state",
            (sender,)).fetchall()
        return dict(rows)

    def graph_requests(self, address):
        """Every Graph request for address the simulator has seen."""
        boxes = self.box.sim_get("/_sim/stats")["mailboxes"]
        return boxes.get(address, {}).get("requests", 0)

    def mail_from_answer(self, sender):
        """The reply to MAIL FROM (nothing is queued: RSET follows)."""
        with smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=15) as c:
            c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
            code, text = c.mail(sender)
            c.rset()
            return code, text.decode()

    def wait_refused(self, sender, reason):
        """Until the agent refuses sender with reason: the policy just
        edited is applied. The code must lead the text: "org_disabled"
        alone also matches "link_expired: ... (reason: org_disabled)",
        what the agent says while the CLI has wiped the tokens but the
        agent has not read the file yet."""
        prefix = "5.7.1 %s: " % reason

        def refused():
            code, text = self.mail_from_answer(sender)
            return (code, text) if code == 550 and text.startswith(prefix) else None
        return wait_for(refused, 3 * APPLY_S, "%s refused with %s" % (sender, reason))

    def test_disable_holds_then_enable_delivers_once(self):
        # Carol's sends fail transiently, so her mail sits in the queue.
        self.box.sim_post("/_sim/faults", {"fault": "503", "mailbox": CAROL,
                                           "operation": "sendMail",
                                           "probability": 1.0, "retry_after": "1"})
        tags = ["switch-%d" % i for i in range(3)]
        for tag in tags:
            self.send(CAROL, ["held@example.net"], message(CAROL, tag))
        self.box.policy_cli("disable", "--yes")
        # The faults stay until the agent has applied the switch-off (up to
        # a second after the CLI returns): a retry before that must not
        # succeed. From then on not one Graph request for Carol may leave.
        self.wait_refused(ALICE, "org_disabled")
        requests_at_switch = self.graph_requests(CAROL)
        self.assertGreater(requests_at_switch, 0, "the counter sees carol's failed sends")
        self.box.sim_post("/_sim/faults", {"clear": True})
        wait_for(lambda: self.states(CAROL).get("held") == 3, 15, "mail held")
        time.sleep(2.5)
        self.assertEqual(self.sent_count(CAROL), 0, "mail left after the switch-off")
        self.assertEqual(self.graph_requests(CAROL), requests_at_switch,
                         "a Graph request for carol reached the simulator while "
                         "the integration was off")

        with self.assertRaises(smtplib.SMTPSenderRefused) as refused:
            self.send(ALICE, ["x@example.net"], message(ALICE, "refused"))
        self.assertEqual(refused.exception.smtp_code, 550)
        self.assertTrue(refused.exception.smtp_error.startswith(b"5.7.1 org_disabled: "),
                        refused.exception.smtp_error)
        # The administrator's status agrees: not active while switched off.
        status = json.loads(self.box.policy_cli("status", "--json").stdout)
        self.assertFalse(status["enabled"])
        self.assertFalse(status["active"])
        self.assertIn("active:        no: the integration is switched off",
                      self.box.policy_cli("status").stdout)

        # Back on, but switching off disconnected Carol: she must link
        # again, and until she does nothing of hers goes to Graph.
        self.box.policy_cli("enable")
        code, text = self.wait_refused(CAROL, "link_expired")
        self.assertIn("(reason: org_disabled)", text)
        time.sleep(1.5)
        self.assertEqual(self.sent_count(CAROL), 0, "sent before the user linked again")
        self.assertEqual(self.graph_requests(CAROL), requests_at_switch,
                         "a Graph request for carol before she linked again")
        self.assertEqual(self.states(CAROL), {"held": 3})
        self.box.link(CAROL)
        self.box.wait_sent(CAROL, 3, timeout=30)
        time.sleep(2)
        self.assertEqual(sorted(r["resource"]["subject"] for r in self.box.sent(CAROL)), tags)
        self.assertEqual(self.states(CAROL), {"sent": 3})
        for user in (ALICE, BOB):
            self.box.link(user)

    def test_mail_waiting_to_retry_is_held_when_the_switch_is_applied(self):
        # Bob's mail waits out a minute of Retry-After. Switching off holds
        # it at once, not at its next attempt: the administrator sees it
        # held, with the reason, while the switch is off.
        self.box.sim_post("/_sim/faults", {"fault": "503", "mailbox": BOB,
                                           "operation": "sendMail", "count": 1,
                                           "retry_after": "60"})
        self.send(BOB, ["held@example.net"], message(BOB, "waiting"))
        wait_for(lambda: self.db().execute(
            "SELECT 1 FROM messages WHERE sender = ? AND state = 'queued'"
            " AND attempts > 0", (BOB,)).fetchone(), 15, "a retry queued")
        self.box.policy_cli("disable", "--yes")
        self.wait_refused(ALICE, "org_disabled")
        wait_for(lambda: self.states(BOB).get("held") == 1, APPLY_S,
                 "bob's waiting mail held")
        held = self.box.policy_cli("held")
        self.assertIn("org_disabled", held.stdout)
        self.box.policy_cli("enable")
        for user in (ALICE, BOB, CAROL):
            self.box.link(user)
        self.box.sim_post("/_sim/faults", {"clear": True})
        wait_for(lambda: self.states(BOB).get("sent") == 1, 30,
                 "bob's mail sent once linked again")

    def test_refusal_right_after_disable_names_the_switch(self):
        # The CLI wipes the tokens as it writes the file; a request that
        # comes before the agent has read the file is still told the
        # switch is off, not that the user must link again.
        for _ in range(5):
            self.box.policy_cli("disable", "--yes")
            code, text = self.mail_from_answer(ALICE)
            self.assertEqual(code, 550)
            self.assertTrue(text.startswith("5.7.1 org_disabled: "), text)
            self.box.policy_cli("enable")
            self.wait_refused(ALICE, "link_expired")
            for user in (ALICE, BOB, CAROL):
                self.box.link(user)

    def test_removing_one_user_holds_only_theirs(self):
        self.box.policy_cli("mode", "specific")
        self.box.policy_cli("allow", ALICE, BOB)
        self.addCleanup(self.box.policy_cli, "mode", "all")
        time.sleep(1.5)  # the agent applies the file within a second
        # Bob's sends fail transiently, so his mail is still queued when
        # he is removed from the list.
        self.box.sim_post("/_sim/faults", {"fault": "503", "mailbox": BOB,
                                           "operation": "sendMail",
                                           "probability": 1.0, "retry_after": "1"})
        self.addCleanup(self.box.sim_post, "/_sim/faults", {"clear": True})
        before_alice, before_bob = self.sent_count(ALICE), self.sent_count(BOB)
        earlier = self.states(BOB)  # other tests' mail, all settled
        self.assertNotIn("held", earlier)
        tags = ["removed-%d" % i for i in range(2)]
        for tag in tags:
            self.send(BOB, ["x@example.net"], message(BOB, tag))
        wait_for(lambda: self.db().execute(
            "SELECT COUNT(*) FROM messages WHERE sender = ? AND state = 'queued'"
            " AND attempts > 0", (BOB,)).fetchone()[0] == 2, 15,
            "bob's mail tried and queued")

        self.box.policy_cli("remove", BOB)
        self.wait_refused(BOB, "user_not_permitted")
        requests_at_removal = self.graph_requests(BOB)
        self.box.sim_post("/_sim/faults", {"clear": True})
        wait_for(lambda: self.states(BOB).get("held") == 2, 15, "bob's mail held")
        rows = self.db().execute(
            "SELECT error_code FROM messages WHERE sender = ? AND state = 'held'",
            (BOB,)).fetchall()
        self.assertEqual([r[0] for r in rows], ["user_not_permitted"] * 2)
        held = self.box.policy_cli("held").stdout
        self.assertEqual(held.count("user_not_permitted"), 2, held)

        # Alice, still listed, is delivered meanwhile; nothing of Bob's
        # reaches the simulator.
        self.send(ALICE, ["ok@example.net"], message(ALICE, "still-allowed"))
        self.box.wait_sent(ALICE, before_alice + 1)
        time.sleep(2.5)  # past the 1 s Retry-After of Bob's failed sends
        self.assertEqual(self.sent_count(BOB), before_bob)
        self.assertEqual(self.graph_requests(BOB), requests_at_removal,
                         "a Graph request for bob after he was removed")
        self.assertEqual(self.states(BOB), dict(earlier, held=2))
        with self.assertRaises(smtplib.SMTPSenderRefused) as refused:
            self.send(BOB, ["x@example.net"], message(BOB, "not-listed"))
        self.assertIn(b"user_not_permitted", refused.exception.smtp_error)
        check = self.box.policy_cli("check", BOB, check=False)
        self.assertEqual(check.returncode, 1)
        self.assertIn("user_not_permitted", check.stdout + check.stderr)

        # Listed again, his held mail goes out once, by itself.
        self.box.policy_cli("allow", BOB)
        self.box.wait_sent(BOB, before_bob + 2, timeout=30)
        time.sleep(1.5)
        self.assertEqual(sorted(r["resource"]["subject"]
                                for r in self.box.sent(BOB)[before_bob:]), tags)

if __name__ == "__main__":
    main()
