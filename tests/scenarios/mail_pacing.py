#!/usr/bin/python3
"""Exchange's sending rate is paced, not hit: with max_per_minute = 5, a
burst of 8 messages from one mailbox reaches Graph as 5 now and 3 a minute
later (never more than 5 in any minute, none refused), the waiting ones
show as queued with their next attempt in the status API, and a second
mailbox sending meanwhile is not slowed at all. A restart does not reset
the count: a message submitted after it still waits for the minute. The
recipients-per-day budget is paced the same way, per mailbox."""

import base64
import datetime
import json
import time
import urllib.request
import uuid

from scenario import ALICE, BOB, CAROL, DAVE, AgentTestCase, main
import sandbox

LIMIT = 5
RCPTS_PER_DAY = 12


def message(sender, tag, rcpts=("cand@example.net",)):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\n"
            "Message-ID: <%s@nextal.test>\r\n\r\nbody\r\n"
            % (sender, ", ".join(rcpts), tag, tag)).encode()


def accepted_times(records):
    return sorted(datetime.datetime.strptime(r["accepted_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
                  .timestamp() for r in records)


class MailPacing(AgentTestCase):
    sandbox_options = {"extra_config": "[delivery]\nmax_per_minute = %d\n"
                       "max_recipients_per_day = %d\n" % (LIMIT, RCPTS_PER_DAY)}

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

    def test_recipients_per_day_are_paced(self):
        run = uuid.uuid4().hex[:6]
        ten = ["c%d@example.net" % i for i in range(10)]
        three = ["d%d@example.net" % i for i in range(3)]
        self.send(DAVE, ten, message(DAVE, "day-%s-ten" % run, ten))
        self.box.wait_sent(DAVE, 1)
        # Three more would make 13 of 12 today: the message waits, queued,
        # until the first ten are a day old.
        self.send(DAVE, three, message(DAVE, "day-%s-three" % run, three))
        # Carol's own budget is untouched.
        self.send(CAROL, three, message(CAROL, "day-%s-carol" % run, three))
        self.box.wait_sent(CAROL, 1)
        time.sleep(2.0)
        self.assertEqual(len(self.box.sent(DAVE)), 1)
        waiting = self.status("day-%s-three@nextal.test" % run)
        self.assertEqual(waiting["state"], "queued")
        due = datetime.datetime.strptime(waiting["next_attempt_at"],
                                         "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                                             tzinfo=datetime.timezone.utc)
        now = datetime.datetime.now(datetime.timezone.utc)
        hours = (due - now).total_seconds() / 3600
        self.assertGreater(hours, 23.5)
        self.assertLess(hours, 24.2)


if __name__ == "__main__":
    main()
