#!/usr/bin/python3
"""Exactly once under fire: a few hundred messages from four mailboxes while
the simulator answers 429 and 503 at random and sometimes takes a send but
drops the reply, and the agent is killed with SIGKILL three times and
restarted: once while sendMail requests are in flight (Graph then takes
them without the agent seeing it, and the agent must find them in Sent
Items after the restart instead of sending them again), twice at random
moments. Nextal's side behaves as it should: a message whose 250 it did
not see is submitted again. In the end every message is in the
simulator's Sent Items exactly once and the status API says sent."""

import base64
import json
import random
import re
import signal
import smtplib
import sys
import threading
import time
import urllib.request
import uuid

from scenario import ALICE, BOB, CAROL, DAVE, AgentTestCase, main
import sandbox
from sandbox import wait_for

MESSAGES = 240
KILLS = 3
SENDERS = (ALICE, BOB, CAROL, DAVE)


FAULTS = ({"fault": "429", "probability": 0.15, "retry_after": "0.2"},
          {"fault": "503", "probability": 0.1, "retry_after": "0.1"},
          {"fault": "drop", "probability": 0.04, "after": True},
          {"fault": "drop", "probability": 0.02})
LATENCY_MS = 20
# Graph's latency while the kill mid-send is aimed: requests stay
# outstanding long enough that the kill surely lands before they end.
AIM_LATENCY_MS = 400


def message(sender, tag):
    return ("From: %s\r\nTo: cand@example.net\r\nSubject: %s\r\n"
            "Message-ID: <%s@nextal.test>\r\n\r\nbody of %s\r\n"
            % (sender, tag, tag, tag)).encode()


class MailCrashLoad(AgentTestCase):
    sandbox_options = {
        "latency_ms": LATENCY_MS,
        # Pacing is shown elsewhere; here it would only make the test long.
        "extra_config": "[delivery]\nmax_per_minute = 0\n",
    }

    def submit_until_accepted(self, sender, tag, accepted, stop):
        """Like Nextal: try again until a 250 is read."""
        data = message(sender, tag)
        while not stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=20) as c:
                    c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
                    c.mail(sender)
                    c.rcpt("cand@example.net")
                    code, reply = c.data(data)
                if code == 250:
                    accepted[tag] = reply.decode().rsplit(" ", 1)[-1]
                    return
                if code >= 500:
                    raise AssertionError("%s refused: %d %s" % (tag, code, reply))
            except (OSError, smtplib.SMTPException):
                pass
            time.sleep(0.1)

    def submitter(self, sender, tags, accepted, stop):
        for tag in tags:
            self.submit_until_accepted(sender, tag, accepted, stop)

    def status(self, queue_id):
        token = base64.b64encode(("%s:%s" % (sandbox.SERVICE_USER,
                                             sandbox.SERVICE_PASSWORD)).encode())
        req = urllib.request.Request(
            "http://127.0.0.1:%d/v1/messages/%s" % (self.box.http_port, queue_id),
            headers={"Authorization": "Basic " + token.decode()})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def add_faults(self):
        for rule in FAULTS:
            self.box.sim_post("/_sim/faults", dict(rule, operation="sendMail"))

    def kill(self):
        self.box.agent.send_signal(signal.SIGKILL)
        self.box.agent.wait(timeout=10)
        self.box.agent = None
        self.box.agent_log.close()

    def kill_and_restart(self):
        self.kill()
        self.box.start_agent()

    def sendmail_in_flight(self, since):
        return [r for r in self.box.sim_get("/_sim/requests?operation=sendMail")
                ["requests"] if r["at"] >= since and r["status"] is None]

    def kill_mid_send_and_restart(self):
        """Kills the agent while sendMail requests are in flight, with the
        faults off for a moment so that Graph takes each of them (as it
        does when a process dies after its request went out). Returns the
        queue ids of the rows the dead agent left in 'sending' and how many
        of its sendMail requests Graph then took."""
        box = self.box
        box.sim_post("/_sim/faults", {"clear": True})
        box.sim_post("/_sim/latency", {"ms": AIM_LATENCY_MS})
        since = time.time()
        wait_for(lambda: self.sendmail_in_flight(since), 30,
                 "a sendMail in flight")
        self.kill()
        killed_at = time.time()
        conn = self.db()
        sending = {q for (q,) in conn.execute(
            "SELECT queue_id FROM messages WHERE state = 'sending'")}
        # The requests of the dead agent run to their end without it.
        wait_for(lambda: not self.sendmail_in_flight(since - 1), 30,
                 "the dead agent's requests to end")
        taken = [r for r in box.sim_get("/_sim/requests?operation=sendMail")
                 ["requests"] if since <= r["at"] < killed_at
                 and r["done"] > killed_at and r["status"] == 202]
        box.sim_post("/_sim/latency", {"ms": LATENCY_MS})
        self.add_faults()
        box.start_agent()
        return sending, len(taken)

    def test_sigkill_during_load_sends_each_accepted_message_once(self):
        box = self.box
        self.add_faults()
        run = uuid.uuid4().hex[:6]
        tags = {s: ["load-%s-%s-%03d" % (run, s.split("@")[0], i)
                    for i in range(MESSAGES // len(SENDERS))] for s in SENDERS}
        accepted, stop = {}, threading.Event()
        threads = [threading.Thread(target=self.submitter,
                                    args=(s, tags[s], accepted, stop))
                   for s in SENDERS]
        for t in threads:
            t.start()
        seed = random.randrange(1 << 30)
        print("mail_crash_load: kill seed %d" % seed, file=sys.stderr)
        interrupted, taken = set(), 0
        try:
            rng = random.Random(seed)
            for k in range(KILLS):
                # Kill somewhere in the run, once the agent has taken more
                # mail since its last start (or all of it, so that a late
                # kill falls in the delivery of the backlog). The first
                # kill waits for sends in flight: with the load just
                # begun, there are some.
                floor = len(accepted)
                time.sleep(rng.uniform(0.3, 4.0))
                wait_for(lambda: len(accepted) > floor
                         or len(accepted) == MESSAGES, 60,
                         "the agent to accept mail after its restart")
                if k == 0:
                    interrupted, taken = self.kill_mid_send_and_restart()
                else:
                    self.kill_and_restart()
            for t in threads:
                t.join(timeout=120)
        finally:
            stop.set()
        self.assertEqual(len(accepted), MESSAGES, "not every message got its 250")

        def sent_subjects():
            return [r["resource"]["subject"] for s in SENDERS for r in box.sent(s)]
        wait_for(lambda: len(set(sent_subjects())) >= MESSAGES, 240,
                 "every accepted message to be sent")
        box.sim_post("/_sim/faults", {"clear": True})
        # Sends whose outcome was unknown are looked up after recovery_delay
        # (5 s); anything sent twice would be there after it.
        time.sleep(8.0)
        subjects = sent_subjects()
        twice = sorted({s for s in subjects if subjects.count(s) > 1})
        self.assertEqual(twice, [], "sent more than once")
        self.assertEqual(sorted(subjects), sorted(accepted))
        stats = box.sim_get("/_sim/stats")["mailboxes"]
        # Every kind of fault really happened during the run.
        for fault in ("429", "503", "drop"):
            self.assertGreater(sum(m["faults_injected"].get(fault, 0)
                                   for m in stats.values()), 0, fault)
        for tag, queue_id in accepted.items():
            self.assertEqual(self.status(queue_id)["state"], "sent", tag)
        # The kill landed mid-send: Graph took sends the agent never saw
        # answered, and the restarted agent found each of them in Sent
        # Items (a second send of one would be a duplicate above).
        print("mail_crash_load: kill mid-send left %d sending, Graph took %d"
              % (len(interrupted), taken), file=sys.stderr)
        self.assertGreater(taken, 0, "no sendMail was in flight at the kill")
        found = set(re.findall(r" (\S+) queue found_in_sent_items ",
                               box.agent_output()))
        self.assertGreaterEqual(len(interrupted & found), taken,
                                "interrupted sends not found in Sent Items: "
                                "%s" % sorted(interrupted - found))


if __name__ == "__main__":
    main()
