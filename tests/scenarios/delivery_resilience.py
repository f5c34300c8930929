#!/usr/bin/python3
"""Delivery that survives Graph and the agent misbehaving: a storm of 429
and 503 answers still delivers every message exactly once, never more than
four requests in flight per mailbox, and with mail waiting and Graph slow,
all four of them are used; a 429 or 503 with Retry-After is
waited out before the one retry; an agent killed with SIGKILL right
after its 250 delivers the message, once, after a restart; and an agent
stopped with SIGTERM amid many submissions gives each the true answer: a
250 is sent once, anything else is never sent."""

import base64
import collections
import json
import signal
import smtplib
import threading
import time
import urllib.parse
import urllib.request
import uuid


from scenario import ALICE, BOB, CAROL, DAVE, AgentTestCase, main, sandbox
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

    def status(self, msgid):
        token = base64.b64encode(("%s:%s" % (sandbox.SERVICE_USER,
                                             sandbox.SERVICE_PASSWORD)).encode())
        req = urllib.request.Request(
            "http://127.0.0.1:%d/v1/messages?message_id=%s"
            % (self.box.http_port, urllib.parse.quote(msgid)),
            headers={"Authorization": "Basic " + token.decode()})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def sendmail_log(self, mailbox, since):
        """The simulator's record of sendMail requests for mailbox since
        the epoch time since: arrival, answer time and status of each."""
        got = self.box.sim_get("/_sim/requests?mailbox=%s&operation=sendMail"
                               % mailbox)["requests"]
        return [r for r in got if r["at"] >= since]

    def check_retry_after_waited(self, fault, retry_after):
        """One message from Dave; Graph answers its first sendMail with
        fault and Retry-After: retry_after. The agent must send nothing
        more for it until the time is up, then send it once."""
        self.box.sim_post("/_sim/faults", {"clear": True})
        self.box.sim_post("/_sim/faults", {"fault": fault, "mailbox": DAVE,
                                           "operation": "sendMail", "count": 1,
                                           "retry_after": retry_after})
        tag = "wait-%s-%s" % (fault, uuid.uuid4().hex[:8])
        since = time.time()
        before = self.sent_count(DAVE)
        self.send(DAVE, ["wait@example.net"], message(DAVE, "wait@example.net", tag))
        wait_for(lambda: [r for r in self.sendmail_log(DAVE, since)
                          if r["status"] is not None], 20, "the first sendMail")
        first = self.sendmail_log(DAVE, since)[0]
        self.assertEqual(first["status"], int(fault), first)
        # While it waits, the status API shows one attempt made and the
        # next one where Retry-After puts it.
        wait_for(lambda: self.status(tag + "@nextal.test")["attempts"] == 1, 10,
                 "the failed attempt to be recorded")
        waiting = self.status(tag + "@nextal.test")
        self.assertEqual(waiting["state"], "queued", waiting)
        self.assertIsNotNone(waiting["next_attempt_at"])
        self.wait_one_more(DAVE, before, timeout=30)
        time.sleep(1.5)  # a second retry or duplicate would land now
        log = self.sendmail_log(DAVE, since)
        self.assertEqual([r["status"] for r in log], [int(fault), 202],
                         "not exactly one retry: %s" % log)
        gap = log[1]["at"] - log[0]["done"]
        # The agent reads the answer after the simulator wrote it, so the
        # gap may only be shorter by the clocks' rounding.
        self.assertGreaterEqual(gap, float(retry_after) - 0.02,
                                "retried before Retry-After was up")
        self.assertLess(gap, float(retry_after) + 3.0,
                        "waited far longer than Retry-After asked")
        got = [r for r in self.box.sent(DAVE) if r["resource"]["subject"] == tag]
        self.assertEqual(len(got), 1)
        done = self.status(tag + "@nextal.test")
        self.assertEqual((done["state"], done["attempts"]), ("sent", 2), done)

    def test_429_retry_after_is_waited_out(self):
        # Longer than the agent's own first backoff (1 s to 1.25 s), so a
        # retry that ignored the header would come visibly early.
        self.check_retry_after_waited("429", "3.5")

    def test_503_retry_after_is_waited_out(self):
        self.check_retry_after_waited("503", "2.5")

    def test_queued_mail_uses_four_requests_in_flight(self):
        # With Graph slow and eight messages waiting, the agent uses all
        # four slots Outlook allows per mailbox, and never a fifth.
        self.box.sim_post("/_sim/faults", {"clear": True})
        self.box.sim_post("/_sim/latency", {"ms": 1500})
        self.addCleanup(self.box.sim_post, "/_sim/latency", {"ms": 50})
        since = time.time()
        before = self.sent_count(DAVE)
        tags = ["four-%d-%s" % (i, uuid.uuid4().hex[:6]) for i in range(8)]
        for tag in tags:
            self.send(DAVE, ["four@example.net"], message(DAVE, "four@example.net", tag))
        records = self.box.wait_sent(DAVE, before + len(tags), timeout=60)
        self.assertEqual(subjects(records[before:]), sorted(tags))
        log = self.sendmail_log(DAVE, since)
        self.assertEqual([r["status"] for r in log], [202] * len(tags))
        # The most requests in flight at once: at each arrival, count the
        # requests that had arrived and were not answered yet.
        most = max(sum(1 for o in log if o["at"] <= r["at"] < o["done"])
                   for r in log)
        self.assertEqual(most, 4, log)
        stats = self.box.sim_get("/_sim/stats")["mailboxes"][DAVE]
        self.assertEqual(stats["throttled_concurrency"], 0)

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


class SigtermAmidSubmissions(AgentTestCase):
    """Its own sandbox: the burst would use up the pacing budget of the
    mailboxes the tests above share."""

    sandbox_options = {"extra_config": "[delivery]\nmax_per_minute = 0\n"}

    def submit(self, sender, tag):
        """One submission without a Message-ID (so the agent's duplicate
        check cannot hide a second copy); returns the final reply code, or
        None when the connection failed before one."""
        code = None
        try:
            c = smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=20)
        except (smtplib.SMTPException, OSError):
            return None
        try:
            c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
            c.mail(sender)
            c.rcpt("term@example.net")
            code = c.data(("From: %s\r\nTo: term@example.net\r\n"
                           "Subject: %s\r\n\r\nbody\r\n" % (sender, tag)).encode())[0]
        except smtplib.SMTPResponseException as e:
            code = e.smtp_code
        except (smtplib.SMTPException, OSError):
            pass
        try:
            c.close()
        except OSError:
            pass
        return code

    def burst_then_sigterm(self, prefix, senders, results):
        """Submits from 16 clients at once, stops the agent with SIGTERM
        amid them, and starts it again; results gets each subject's final
        reply code."""
        stop = threading.Event()

        def worker(k):
            i = 0
            while not stop.is_set():
                tag = "%s-%d-%d" % (prefix, k, i)
                results[tag] = self.submit(senders[k % 3], tag)
                i += 1

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        self.box.agent.send_signal(signal.SIGTERM)
        stop.set()
        self.assertEqual(self.box.agent.wait(timeout=30), 0)
        for t in threads:
            t.join(timeout=60)
        self.box.agent = None
        self.box.agent_log.close()
        self.box.start_agent()

    def test_sigterm_amid_submissions_answers_truthfully(self):
        self.box.sim_post("/_sim/faults", {"clear": True})
        self.box.sim_post("/_sim/latency", {"ms": 0})
        prefix = "term-" + uuid.uuid4().hex[:6]
        senders = [ALICE, BOB, CAROL]
        results = {}
        # Which sessions are committing when the signal lands is a race:
        # a few rounds make meeting one near certain.
        for rnd in range(3):
            self.burst_then_sigterm("%s-%d" % (prefix, rnd), senders, results)

        accepted = {t for t, code in results.items() if code == 250}
        self.assertGreater(len(accepted), 0)
        self.assertGreater(len(results), len(accepted),
                           "no submission met the stop")

        def sent():
            return collections.Counter(
                r["resource"]["subject"] for who in senders
                for r in self.box.sent(who)
                if r["resource"]["subject"].startswith(prefix + "-"))
        wait_for(lambda: accepted <= set(sent()), 60, "every 250 sent")
        time.sleep(3.0)  # a message sent without a 250 would land now
        counts = sent()
        self.assertEqual({t for t, n in counts.items() if n > 1}, set(),
                         "sent twice")
        refused = {t: results[t] for t in set(counts) - accepted}
        self.assertEqual(refused, {}, "sent although not answered 250")


if __name__ == "__main__":
    main()
