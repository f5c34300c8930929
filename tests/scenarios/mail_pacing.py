#!/usr/bin/python3
"""Exchange's sending rate is paced, not hit: with max_per_minute = 5, a
burst of 8 messages from one mailbox reaches Graph as 5 now and 3 a minute
later (never more than 5 in any minute, none refused), the waiting ones
show as queued with their next attempt in the status API, and a second
mailbox sending meanwhile is not slowed at all. A restart does not reset
the count: a message submitted after it still waits for the minute."""

import base64
import datetime
import json
import time
import urllib.request
import uuid

from scenario import ALICE, BOB, AgentTestCase, main
import sandbox

LIMIT = 5


def message(sender, tag):
    return ("From: %s\r\nTo: cand@example.net\r\nSubject: %s\r\n"
            "Message-ID: <%s@nextal.test>\r\n\r\nbody\r\n" % (sender, tag, tag)).encode()


def accepted_times(records):
    return sorted(datetime.datetime.strptime(r["accepted_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
                  .timestamp() for r in records)


class MailPacing(AgentTestCase):
    sandbox_options = {"extra_config": "[delivery]\nmax_per_minute = %d\n" % LIMIT}

    def status(self, msgid):
        token = base64.b64encode(("%s:%s" % (sandbox.SERVICE_USER,
                                             sandbox.SERVICE_PASSWORD)).encode())
        req = urllib.request.Request(
            "http://127.0.0.1:%d/v1/messages?message_id=%s" % (self.box.http_port, msgid),
            headers={"Authorization": "Basic " + token.decode()})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def test_burst_is_paced_per_mailbox(self):
        run = uuid.uuid4().hex[:6]
        alice_tags = ["burst-%s-%d" % (run, i) for i in range(8)]
        start = time.monotonic()
        for tag in alice_tags:
            self.send(ALICE, ["cand@example.net"], message(ALICE, tag))
        first = self.box.wait_sent(ALICE, LIMIT, timeout=20)
        time.sleep(2.0)
        self.assertEqual(len(self.box.sent(ALICE)), LIMIT,
                         "more than %d sends started within a minute" % LIMIT)

        # The rest wait as queued, with a next attempt about a minute out.
        waiting = [self.status("%s@nextal.test" % t) for t in alice_tags]
        queued = [w for w in waiting if w["state"] == "queued"]
        self.assertEqual(len(queued), 8 - LIMIT)
        for w in queued:
            self.assertIsNotNone(w["next_attempt_at"])
            self.assertEqual(w["attempts"], 0)

        # Bob is not held back by Alice's pace.
        bob_start = time.monotonic()
        for i in range(3):
            self.send(BOB, ["cand@example.net"], message(BOB, "free-%s-%d" % (run, i)))
        self.box.wait_sent(BOB, 3, timeout=20)
        self.assertLess(time.monotonic() - bob_start, 10)

        # After a restart the agent still knows what Alice sent this minute.
        self.box.restart_agent()
        late = "burst-%s-late" % run
        alice_tags.append(late)
        self.send(ALICE, ["cand@example.net"], message(ALICE, late))
        time.sleep(3.0)
        self.assertEqual(len(self.box.sent(ALICE)), LIMIT,
                         "the restart forgot the minute's sends")

        records = self.box.wait_sent(ALICE, 9, timeout=120)
        self.assertGreater(time.monotonic() - start, 50,
                           "the last four went before the minute was over")
        self.assertEqual(sorted(r["resource"]["subject"] for r in records),
                         sorted(alice_tags))
        times = accepted_times(records)
        for i, t in enumerate(times):
            in_minute = [u for u in times[i:] if u - t < 59.0]
            self.assertLessEqual(len(in_minute), LIMIT, times)
        stats = self.box.sim_get("/_sim/stats")["mailboxes"][ALICE]
        self.assertEqual(stats["throttled_total"], 0)


if __name__ == "__main__":
    main()
