#!/usr/bin/python3
"""The token endpoint fails for a while (connections dropped, then 503 with
Retry-After) while a linked user's mail waits: the mail is retried and
delivered exactly once afterwards, the user stays linked, and since no
request had reached Graph the agent never asks Graph whether it took the
mail (no Sent Items lookup)."""

from link_flow import LinkingTestCase, message
from sandbox import wait_for
from scenario import ALICE, main

FAULTS = ("drop", "503")  # in this order, twice each
PER_FAULT = 2


class LinkingTokenOutage(LinkingTestCase):

    def faults_fired(self):
        return sum(r["fired"] for r in self.box.sim_get("/_sim/faults")["rules"])

    def test_mail_waits_out_a_token_outage(self):
        self.link_by_sign_in(ALICE)
        for fault in FAULTS:
            self.box.sim_post("/_sim/faults", {
                "fault": fault, "operation": "token", "mailbox": ALICE,
                "count": PER_FAULT, "retry_after": "1"})
        self.addCleanup(self.box.sim_post, "/_sim/faults", {"clear": True})

        self.send(ALICE, ["x@example.net"], message(ALICE, "outage-1"))
        wait_for(lambda: self.faults_fired() > 0, 20, "a token fault")
        # Mid-outage the user is still linked and may submit more mail.
        self.assertEqual(self.link_state(ALICE)["state"], "linked")
        self.send(ALICE, ["x@example.net"], message(ALICE, "outage-2"))

        got = self.box.wait_sent(ALICE, 2, timeout=90)
        self.assertEqual(sorted(m["resource"]["subject"] for m in got),
                         ["outage-1", "outage-2"])
        self.assertEqual(self.faults_fired(), len(FAULTS) * PER_FAULT)
        log = self.box.sim_get("/_sim/tokens?user=" + ALICE)["requests"]
        self.assertEqual([e["status"] for e in log],
                         [200, 0, 0, 503, 503, 200], log)

        # Nothing is sent twice, and nothing had to be looked up: the
        # failures came before any request to Graph.
        wait_for(lambda: self.db().execute(
            "SELECT count(*) FROM messages WHERE sender = ? AND state = 'sent'",
            (ALICE,)).fetchone()[0] == 2, 10, "both rows sent")
        self.assertEqual(len(self.box.sent(ALICE)), 2)
        ops = self.box.sim_get("/_sim/stats")["mailboxes"][ALICE]["operations"]
        self.assertEqual(ops.get("sendMail"), 2, ops)
        self.assertNotIn("listMessages", ops)
        self.assertNotIn("outcome_unknown", self.box.agent_output())
        state = self.link_state(ALICE)
        self.assertEqual(state["state"], "linked", state)


if __name__ == "__main__":
    main()
