#!/usr/bin/python3
"""Delivery that survives Graph and the agent misbehaving: a storm of 429
and 503 answers still delivers every message exactly once, never more than
four requests in flight per mailbox; and an agent killed with SIGKILL right
after its 250 delivers the message, once, after a restart."""

import signal
import time
import uuid


from scenario import ALICE, BOB, CAROL, AgentTestCase, main
from sandbox import wait_for


def message(sender, rcpt, tag):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@nextal.test>\r\n"
            "\r\nbody of %s\r\n" % (sender, rcpt, tag, tag, tag)).encode()


def subjects(records):
    return sorted(r["resource"]["subject"] for r in records)


class DeliveryResilience(AgentTestCase):
    sandbox_options = {"latency_ms": 50}

    def test_429_storm_delivers_each_message_once(self):
        self.box.sim_post("/_sim/reset", {})
        self.box.sim_post("/_sim/faults", {"fault": "429", "mailbox": CAROL,
                                           "operation": "sendMail",
                                           "probability": 0.5,
                                           "retry_after": "0.2"})
        self.box.sim_post("/_sim/faults", {"fault": "503", "mailbox": CAROL,
                                           "operation": "sendMail", "count": 5,
                                           "retry_after": "0.1"})
        tags = ["storm-%02d-%s" % (i, uuid.uuid4().hex[:6]) for i in range(30)]
        for tag in tags:
            self.send(CAROL, ["storm@example.net"], message(CAROL, "storm@example.net", tag))
        records = self.box.wait_sent(CAROL, len(tags), timeout=120)
        time.sleep(1.0)  # anything sent twice would show up now
        records = self.box.sent(CAROL)
        self.assertEqual(subjects(records), sorted(tags))
        stats = self.box.sim_get("/_sim/stats")["mailboxes"][CAROL]
        self.assertGreater(stats["throttled_injected"], 0)
        self.assertLessEqual(stats["max_concurrency"], 4)
        self.assertEqual(stats["throttled_concurrency"], 0,
                         "the agent itself went over 4 requests in flight")
        self.box.sim_post("/_sim/faults", {"clear": True})

    def test_sigkill_after_250_then_restart_delivers_once(self):
        self.box.sim_post("/_sim/faults", {"clear": True})
        # Hold Bob's sends so that the kill lands before delivery.
        self.box.sim_post("/_sim/latency", {"ms": 3000})
        tag = "crash-" + uuid.uuid4().hex[:8]
        before = self.sent_count(BOB)
        self.send(BOB, ["crash@example.net"], message(BOB, "crash@example.net", tag))
        self.box.agent.send_signal(signal.SIGKILL)
        self.box.agent.wait(timeout=10)
        self.box.agent = None
        self.box.agent_log.close()
        self.box.sim_post("/_sim/latency", {"ms": 0})
        row = self.db().execute("SELECT state FROM messages WHERE message_id = ?",
                                (tag + "@nextal.test",)).fetchone()
        self.assertIsNotNone(row, "the 250 was given before the row was durable")
        self.box.start_agent()
        wait_for(lambda: len(self.box.sent(BOB)) > before, 30, "delivery after restart")
        time.sleep(4.0)  # an in-flight duplicate from the killed agent would land now
        got = [r for r in self.box.sent(BOB) if r["resource"]["subject"] == tag]
        self.assertEqual(len(got), 1)
        state = self.db().execute("SELECT state FROM messages WHERE message_id = ?",
                                  (tag + "@nextal.test",)).fetchone()[0]
        self.assertEqual(state, "sent")

    def test_throttled_mailbox_does_not_slow_another(self):
        self.box.sim_post("/_sim/faults", {"clear": True})
        self.box.sim_post("/_sim/faults", {"fault": "429", "mailbox": CAROL,
                                           "operation": "sendMail",
                                           "probability": 1.0, "retry_after": "30"})
        before_alice = self.sent_count(ALICE)
        for i in range(5):
            self.send(CAROL, ["slow@example.net"], message(CAROL, "slow@example.net", "blocked-%d" % i))
        start = time.monotonic()
        for i in range(5):
            self.send(ALICE, ["fast@example.net"], message(ALICE, "fast@example.net", "free-%d" % i))
        self.box.wait_sent(ALICE, before_alice + 5, timeout=20)
        self.assertLess(time.monotonic() - start, 15)
        self.box.sim_post("/_sim/faults", {"clear": True})


if __name__ == "__main__":
    main()
