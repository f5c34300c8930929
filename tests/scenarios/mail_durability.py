#!/usr/bin/python3
"""What Nextal can rely on after a 250: the reply names a queue id that the
status API (HTTP Basic, service credential) answers for, by queue id and by
Message-ID, through sent and through Graph's permanent refusal; a message
resubmitted because the client lost our 250 is sent once; two transactions
that share a Message-ID but not the envelope are both sent; the operator's
retry and drop act on failed and queued mail and leave an audit record."""

import base64
import json
import re
import signal
import smtplib
import sqlite3
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from scenario import ALICE, BOB, CAROL, DAVE, AgentTestCase, main
import sandbox
from sandbox import wait_for


def message(sender, rcpts, tag, msgid=None):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s>\r\n"
            "\r\nbody of %s\r\n" % (sender, ", ".join(rcpts), tag,
                                    msgid or tag + "@nextal.test", tag)).encode()


def queue_id_of(reply):
    found = re.search(rb"queued as (\S+)", reply)
    assert found, reply
    return found.group(1).decode()


class MailDurability(AgentTestCase):
    sandbox_options = {"extra_config": "[delivery]\ndedup_window = 3600\n"
                                       "max_attempts = 2\n"}

    # ---- helpers ----

    def submit(self, sender, rcpts, data):
        """One SMTP transaction; returns the queue id named by the 250."""
        with smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=30) as c:
            c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
            c.mail(sender)
            for r in rcpts:
                self.assertEqual(c.rcpt(r)[0], 250)
            code, reply = c.data(data)
            self.assertEqual(code, 250, reply)
            return queue_id_of(reply)

    def status(self, path, auth=(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)):
        """GET on the agent's HTTP listener; returns (status, JSON, headers)."""
        headers = {}
        if auth:
            token = base64.b64encode(("%s:%s" % auth).encode()).decode()
            headers["Authorization"] = "Basic " + token
        req = urllib.request.Request(
            "http://127.0.0.1:%d%s" % (self.box.http_port, path), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.load(r), r.headers
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null"), e.headers

    def by_queue_id(self, queue_id):
        return self.status("/v1/messages/" + queue_id)

    def by_message_id(self, msgid):
        return self.status("/v1/messages?message_id=" + urllib.parse.quote(msgid))

    def wait_state(self, queue_id, state, timeout=30):
        def reached():
            code, body, _ = self.by_queue_id(queue_id)
            return body if code == 200 and body["state"] == state else None
        return wait_for(reached, timeout, "%s to be %s" % (queue_id, state))

    def sent_with_subject(self, address, tag):
        return [r for r in self.box.sent(address) if r["resource"]["subject"] == tag]

    # ---- the status API ----

    def test_250_names_a_queue_id_the_status_api_reports_sent(self):
        tag = "status-" + uuid.uuid4().hex[:8]
        queue_id = self.submit(ALICE, ["cand@example.net"],
                               message(ALICE, ["cand@example.net"], tag))
        body = self.wait_state(queue_id, "sent")
        self.assertEqual(body["queue_id"], queue_id)
        self.assertEqual(body["message_id"], "<%s@nextal.test>" % tag)
        self.assertEqual(body["sender"], ALICE)
        self.assertEqual(body["recipients"], ["cand@example.net"])
        self.assertIsNotNone(body["sent_at"])
        self.assertEqual(body["attempts"], 1)
        self.assertIsNone(body["error"])
        self.assertEqual(len(self.sent_with_subject(ALICE, tag)), 1)
        # The same record by Message-ID, with or without angle brackets.
        for form in ("<%s@nextal.test>" % tag, "%s@nextal.test" % tag):
            code, got, _ = self.by_message_id(form)
            self.assertEqual(code, 200)
            self.assertEqual(got["queue_id"], queue_id)
            self.assertEqual(got["state"], "sent")

    def test_status_needs_the_service_credential(self):
        code, body, headers = self.status("/v1/messages/ANY", auth=None)
        self.assertEqual(code, 401)
        self.assertIn("Basic", headers["WWW-Authenticate"])
        code, _, _ = self.status("/v1/messages/ANY", auth=("nextal", "wrong"))
        self.assertEqual(code, 401)

    def test_unknown_messages_are_404_in_json(self):
        code, body, _ = self.by_queue_id("0000000000NOSUCHID")
        self.assertEqual(code, 404)
        self.assertEqual(body["error"]["code"], "not_found")
        code, body, _ = self.by_message_id("<never-sent@nextal.test>")
        self.assertEqual(code, 404)
        code, body, _ = self.status("/v1/messages")
        self.assertEqual(code, 400)

    def test_permanent_graph_failure_is_queryable_with_graphs_code(self):
        self.box.sim_post("/_sim/faults", {"fault": "400", "mailbox": DAVE,
                                           "operation": "sendMail", "count": 1})
        tag = "refused-" + uuid.uuid4().hex[:8]
        queue_id = self.submit(DAVE, ["cand@example.net"],
                               message(DAVE, ["cand@example.net"], tag))
        body = self.wait_state(queue_id, "failed")
        self.assertEqual(body["error"]["code"], "ErrorInvalidRecipients")
        self.assertIn("isn't resolved", body["error"]["reason"])
        self.assertIsNone(body["sent_at"])
        self.assertEqual(self.sent_with_subject(DAVE, tag), [])
        # The body went with the refusal; the record stays.
        spool = self.db().execute("SELECT spool_path FROM messages WHERE queue_id = ?",
                                  (queue_id,)).fetchone()[0]
        self.assertFalse(__import__("os").path.exists(spool))
        code, body, _ = self.by_message_id("<%s@nextal.test>" % tag)
        self.assertEqual((code, body["state"]), (200, "failed"))
        # Refused mail cannot be retried: its body is gone.
        out = self.box.policy_cli("retry", queue_id, check=False)
        self.assertEqual(out.returncode, 66, out.stderr)

    # ---- resubmissions ----

    def test_resubmission_after_a_lost_250_is_sent_once(self):
        tag = "lost250-" + uuid.uuid4().hex[:8]
        data = message(BOB, ["cand@example.net"], tag)
        # A client that sends the whole message and goes away before it can
        # read our answer.
        s = socket.create_connection(("127.0.0.1", self.box.smtp_port), timeout=10)
        f = s.makefile("rb")
        f.readline()
        token = base64.b64encode(b"\0%s\0%s" % (sandbox.SERVICE_USER.encode(),
                                                 sandbox.SERVICE_PASSWORD.encode()))
        s.sendall(b"EHLO lost.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        for line in (b"AUTH PLAIN " + token, b"MAIL FROM:<%s>" % BOB.encode(),
                     b"RCPT TO:<cand@example.net>", b"DATA"):
            s.sendall(line + b"\r\n")
            f.readline()
        s.sendall(data + b".\r\n")
        s.close()
        first = wait_for(lambda: self.db().execute(
            "SELECT queue_id FROM messages WHERE message_id = ?",
            (tag + "@nextal.test",)).fetchone(), 20, "the first copy's row")[0]
        # Nextal never saw the 250, so it sends the message again.
        again = self.submit(BOB, ["cand@example.net"], data)
        self.assertEqual(again, first, "the retry must get the original queue id")
        self.wait_state(first, "sent")
        time.sleep(2.0)  # a second copy would have gone by now
        self.assertEqual(len(self.sent_with_subject(BOB, tag)), 1)
        rows = self.db().execute("SELECT COUNT(*) FROM messages WHERE message_id = ?",
                                 (tag + "@nextal.test",)).fetchone()[0]
        self.assertEqual(rows, 1)

    def test_lost_reply_to_a_message_without_message_id_is_sent_once(self):
        # Graph takes the send but the reply is lost. A message that came
        # without a Message-ID was given one at intake, so the agent finds
        # the send in Sent Items instead of sending it a second time.
        self.box.sim_post("/_sim/faults", {"fault": "drop", "mailbox": CAROL,
                                           "operation": "sendMail", "count": 1,
                                           "after": True})
        tag = "no-msgid-" + uuid.uuid4().hex[:8]
        data = ("From: %s\r\nTo: n@example.net\r\nSubject: %s\r\n\r\n"
                "hello\r\n" % (CAROL, tag)).encode()
        queue_id = self.submit(CAROL, ["n@example.net"], data)
        body = self.wait_state(queue_id, "sent", timeout=60)
        time.sleep(2.0)  # a second copy would have gone by now
        got = self.sent_with_subject(CAROL, tag)
        self.assertEqual(len(got), 1, "sent %d times" % len(got))
        given = "<%s@contoso.example>" % queue_id
        self.assertEqual(got[0]["resource"]["internetMessageId"], given)
        self.assertEqual(body["message_id"], given)
        self.assertIn("found_in_sent_items", self.box.agent_output())

    def test_two_identical_submissions_at_once_are_one_message(self):
        tag = "race-" + uuid.uuid4().hex[:8]
        data = message(CAROL, ["a@example.net", "b@example.net"], tag)
        ids = []

        def one(rcpts):
            ids.append(self.submit(CAROL, rcpts, data))
        threads = [threading.Thread(target=one, args=(r,)) for r in
                   (["a@example.net", "b@example.net"],
                    ["b@example.net", "a@example.net"],  # same envelope, other order
                    ["a@example.net", "b@example.net"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(set(ids)), 1, ids)
        self.wait_state(ids[0], "sent")
        time.sleep(1.0)
        self.assertEqual(len(self.sent_with_subject(CAROL, tag)), 1)

    def test_same_message_id_other_envelope_is_sent_again(self):
        tag = "shared-" + uuid.uuid4().hex[:8]
        msgid = tag + "@nextal.test"
        first = self.submit(ALICE, ["one@example.net"],
                            message(ALICE, ["one@example.net"], tag, msgid))
        second = self.submit(ALICE, ["two@example.net"],
                             message(ALICE, ["two@example.net"], tag, msgid))
        self.assertNotEqual(first, second)
        self.wait_state(first, "sent")
        self.wait_state(second, "sent")
        got = self.sent_with_subject(ALICE, tag)
        self.assertEqual(sorted(r["recipients"][0]["address"] for r in got),
                         ["one@example.net", "two@example.net"])
        code, body, _ = self.by_message_id("<%s>" % msgid)
        self.assertEqual(body["queue_id"], second)
        self.assertEqual(body["same_message_id"], [first])

    # ---- a send whose outcome is unknown ----

    def test_lookup_counts_only_a_copy_to_the_rows_own_envelope(self):
        # The first transaction is sent; the second, same Message-ID, other
        # envelope, is lost before Graph took it. Its Sent Items look-up
        # finds the first copy, which is not this send.
        tag = "samemid-" + uuid.uuid4().hex[:8]
        msgid = tag + "@nextal.test"
        first = self.submit(CAROL, ["one@example.net"],
                            message(CAROL, ["one@example.net"], tag, msgid))
        self.wait_state(first, "sent")
        self.box.sim_post("/_sim/faults", {"fault": "drop", "mailbox": CAROL,
                                           "operation": "sendMail", "count": 1})
        second = self.submit(CAROL, ["Two@example.net"],
                             message(CAROL, ["Two@example.net"], tag, msgid))
        self.wait_state(second, "sent", timeout=60)
        got = self.sent_with_subject(CAROL, tag)
        self.assertEqual(sorted(r["recipients"][0]["address"].lower()
                                for r in got),
                         ["one@example.net", "two@example.net"])

    def test_message_id_with_a_quote_is_looked_up(self):
        self.box.sim_post("/_sim/faults", {"fault": "drop", "mailbox": BOB,
                                           "operation": "sendMail", "count": 1,
                                           "after": True})
        tag = "quote-" + uuid.uuid4().hex[:8]
        queue_id = self.submit(BOB, ["c@example.net"],
                               message(BOB, ["c@example.net"], tag,
                                       "o'brien." + tag + "@nextal.test"))
        self.wait_state(queue_id, "sent", timeout=60)
        time.sleep(2.0)  # a second copy would have gone by now
        self.assertEqual(len(self.sent_with_subject(BOB, tag)), 1)
        self.assertIn("found_in_sent_items", self.box.agent_output())

    def test_refused_lookup_is_failed_for_the_operator(self):
        self.box.sim_post("/_sim/faults", {"fault": "drop", "mailbox": ALICE,
                                           "operation": "sendMail", "count": 1})
        self.box.sim_post("/_sim/faults", {"fault": "400", "mailbox": ALICE,
                                           "operation": "listMessages",
                                           "count": 1, "status": 400,
                                           "code": "ErrorInvalidUrlQueryFilter",
                                           "message": "invalid nodes"})
        tag = "refused-" + uuid.uuid4().hex[:8]
        queue_id = self.submit(ALICE, ["c@example.net"],
                               message(ALICE, ["c@example.net"], tag))
        body = self.wait_state(queue_id, "failed", timeout=60)
        self.assertEqual(body["error"]["code"], "verify_failed")
        self.assertIn("ErrorInvalidUrlQueryFilter", body["error"]["reason"])
        self.assertIn(queue_id, self.box.policy_cli("held").stdout)
        self.assertEqual(self.sent_with_subject(ALICE, tag), [])
        # The operator's retry sends it, without another look-up.
        self.box.policy_cli("retry", queue_id)
        self.wait_state(queue_id, "sent")
        self.assertEqual(len(self.sent_with_subject(ALICE, tag)), 1)

    def test_access_denied_keeps_the_mail_for_the_operator(self):
        """Consent revoked or a permission removed (403 ErrorAccessDenied)
        is the tenant's state, not the message's fault: the message is
        retried and, once out of attempts (max_attempts = 2 here), failed
        with its body kept, so that retry sends it once consent is back."""
        denied = {"fault": "400", "mailbox": ALICE, "operation": "sendMail",
                  "status": 403, "code": "ErrorAccessDenied",
                  "message": "Access is denied. Check credentials and try again."}
        self.box.sim_post("/_sim/faults", dict(denied, count=1))
        tag = "denied-once-" + uuid.uuid4().hex[:8]
        queue_id = self.submit(ALICE, ["c@example.net"],
                               message(ALICE, ["c@example.net"], tag))
        self.wait_state(queue_id, "sent")
        self.assertEqual(len(self.sent_with_subject(ALICE, tag)), 1)

        self.box.sim_post("/_sim/faults", dict(denied, count=2))
        tag = "denied-twice-" + uuid.uuid4().hex[:8]
        queue_id = self.submit(ALICE, ["c@example.net"],
                               message(ALICE, ["c@example.net"], tag))
        body = self.wait_state(queue_id, "failed", timeout=30)
        self.assertEqual(body["error"]["code"], "ErrorAccessDenied")
        self.assertEqual(self.sent_with_subject(ALICE, tag), [])
        self.box.policy_cli("retry", queue_id)
        self.wait_state(queue_id, "sent")
        self.assertEqual(len(self.sent_with_subject(ALICE, tag)), 1)

    def test_retry_after_unlink_looks_an_unknown_send_up_first(self):
        # Graph takes the send, the reply is lost; the user is unlinked
        # before the look-up, re-linked, and the operator retries.
        self.box.sim_post("/_sim/faults", {"fault": "drop", "mailbox": DAVE,
                                           "operation": "sendMail", "count": 1,
                                           "after": True})
        tag = "unlinkverify-" + uuid.uuid4().hex[:8]
        queue_id = self.submit(DAVE, ["c@example.net"],
                               message(DAVE, ["c@example.net"], tag))
        wait_for(lambda: self.sent_with_subject(DAVE, tag), 20, "Graph's copy")
        try:
            self.box.policy_cli("unlink", DAVE)
            body = self.wait_state(queue_id, "failed")
            self.assertEqual(body["error"]["code"], "user_unlinked")
        finally:
            self.box.link(DAVE)
        self.box.policy_cli("retry", queue_id)
        self.wait_state(queue_id, "sent", timeout=30)
        time.sleep(2.0)
        self.assertEqual(len(self.sent_with_subject(DAVE, tag)), 1)

    def test_mail_in_flight_at_unlink_is_not_sent_after_relink(self):
        self.box.sim_post("/_sim/latency", {"ms": 2000})
        self.box.sim_post("/_sim/faults", {"fault": "429", "mailbox": DAVE,
                                           "operation": "sendMail",
                                           "probability": 1.0,
                                           "retry_after": "1"})
        tag = "inflight-" + uuid.uuid4().hex[:8]
        try:
            queue_id = self.submit(DAVE, ["c@example.net"],
                                   message(DAVE, ["c@example.net"], tag))
            self.wait_state(queue_id, "sending", timeout=10)
            self.box.policy_cli("unlink", DAVE)
            body = self.wait_state(queue_id, "failed", timeout=15)
            self.assertEqual(body["error"]["code"], "user_unlinked")
        finally:
            self.box.sim_post("/_sim/faults", {"clear": True})
            self.box.sim_post("/_sim/latency", {"ms": 0})
            self.box.link(DAVE)
        time.sleep(7.0)  # past the held-mail recheck
        self.assertEqual(self.by_queue_id(queue_id)[1]["state"], "failed")
        self.assertEqual(self.sent_with_subject(DAVE, tag), [])

    def test_switch_off_stops_lookups_until_on_again(self):
        self.box.sim_post("/_sim/faults", {"fault": "drop", "mailbox": CAROL,
                                           "operation": "sendMail", "count": 1,
                                           "after": True})
        tag = "verifyoff-" + uuid.uuid4().hex[:8]
        queue_id = self.submit(CAROL, ["c@example.net"],
                               message(CAROL, ["c@example.net"], tag))
        wait_for(lambda: self.sent_with_subject(CAROL, tag), 20, "Graph's copy")
        policy = self.box.path("policy.ini")

        def lookups():
            ops = self.box.sim_get("/_sim/stats")["mailboxes"][CAROL]
            return ops.get("operations", {}).get("listMessages", 0)
        try:
            with open(policy, "w") as f:
                f.write("[integration]\nenabled = false\nmode = all\n")
            self.wait_state(queue_id, "held", timeout=20)
            before = lookups()
            time.sleep(7.0)  # past recovery_delay
            self.assertEqual(lookups(), before)
            self.assertEqual(self.by_queue_id(queue_id)[1]["state"], "held")
        finally:
            with open(policy, "w") as f:
                f.write(self.box.default_policy())
            time.sleep(0.5)
            for user in (ALICE, BOB, CAROL, DAVE):  # a switch-off unlinks
                self.box.link(user)
        self.wait_state(queue_id, "sent", timeout=30)
        self.assertEqual(len(self.sent_with_subject(CAROL, tag)), 1)

    # ---- the operator's retry and drop ----

    def test_retry_sends_failed_mail_again_and_is_audited(self):
        # Transient failures until the agent gives up: max_attempts = 2.
        self.box.sim_post("/_sim/faults", {"fault": "503", "mailbox": CAROL,
                                           "operation": "sendMail", "count": 2,
                                           "retry_after": "0.1"})
        tag = "retry-" + uuid.uuid4().hex[:8]
        queue_id = self.submit(CAROL, ["cand@example.net"],
                               message(CAROL, ["cand@example.net"], tag))
        body = self.wait_state(queue_id, "failed")
        self.assertEqual(body["error"]["code"], "serviceNotAvailable")
        held = self.box.policy_cli("held").stdout
        self.assertIn(queue_id, held)
        out = self.box.policy_cli("retry", queue_id)
        self.assertIn("-> queued", out.stdout)
        body = self.wait_state(queue_id, "sent")
        self.assertEqual(len(self.sent_with_subject(CAROL, tag)), 1)
        audit = self.box.policy_cli("audit").stdout
        self.assertRegex(audit, r"mail_retry.*%s" % queue_id)
        # Sent mail is not retried.
        out = self.box.policy_cli("retry", queue_id, check=False)
        self.assertEqual(out.returncode, 65)
        out = self.box.policy_cli("retry", "NOSUCHQUEUEID", check=False)
        self.assertEqual(out.returncode, 66)

    def test_drop_fails_queued_mail_with_the_reason(self):
        # Hold Bob's sends back so that the message is still queued.
        self.box.sim_post("/_sim/faults", {"fault": "429", "mailbox": BOB,
                                           "operation": "sendMail",
                                           "probability": 1.0, "retry_after": "60"})
        tag = "drop-" + uuid.uuid4().hex[:8]
        queue_id = self.submit(BOB, ["cand@example.net"],
                               message(BOB, ["cand@example.net"], tag))
        self.wait_state(queue_id, "queued")
        wait_for(lambda: self.by_queue_id(queue_id)[1]["attempts"] >= 1, 20,
                 "a throttled attempt")
        out = self.box.policy_cli("drop", queue_id, check=False)
        self.assertEqual(out.returncode, 64)  # --reason is required
        self.assertIn("--reason", self.box.policy_cli("drop", "--help").stdout)
        out = self.box.policy_cli("drop", "--reason", "candidate withdrew", queue_id)
        self.assertIn("dropped", out.stdout)
        self.box.sim_post("/_sim/faults", {"clear": True})
        code, body, _ = self.by_queue_id(queue_id)
        self.assertEqual(body["state"], "failed")
        self.assertEqual(body["error"], {"code": "dropped",
                                         "reason": "candidate withdrew"})
        spool = self.db().execute("SELECT spool_path FROM messages WHERE queue_id = ?",
                                  (queue_id,)).fetchone()[0]
        self.assertFalse(__import__("os").path.exists(spool))
        time.sleep(2.0)
        self.assertEqual(self.sent_with_subject(BOB, tag), [])
        self.assertRegex(self.box.policy_cli("audit").stdout,
                         r"mail_drop.*%s.*candidate withdrew" % queue_id)
        out = self.box.policy_cli("drop", "--reason", "again", queue_id, check=False)
        self.assertEqual(out.returncode, 65)


class MailRecordExpiry(AgentTestCase):
    """keep_sent: a sent record is removed once its time is up."""
    sandbox_options = {"extra_config": "[delivery]\nkeep_sent = 1\n"}

    def test_sent_records_expire(self):
        tag = "expire-" + uuid.uuid4().hex[:8]
        with smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=30) as c:
            c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
            c.sendmail(ALICE, ["cand@example.net"],
                       message(ALICE, ["cand@example.net"], tag))
        self.box.wait_sent(ALICE, 1)
        time.sleep(1.5)
        # The clean-up runs when the agent starts and every minute after.
        self.box.restart_agent()
        wait_for(lambda: self.db().execute(
            "SELECT COUNT(*) FROM messages WHERE message_id = ?",
            (tag + "@nextal.test",)).fetchone()[0] == 0, 20, "the record to expire")


class MailVerifyGivesUp(AgentTestCase):
    """A Sent Items look-up that keeps failing ends at max_age with the
    message failed for an operator, never sent blindly."""
    sandbox_options = {"extra_config": "[delivery]\nmax_age = 8\n"}

    def test_lookup_failing_past_max_age_is_failed_for_the_operator(self):
        self.box.sim_post("/_sim/faults", {"fault": "drop", "mailbox": BOB,
                                           "operation": "sendMail", "count": 1})
        self.box.sim_post("/_sim/faults", {"fault": "503", "mailbox": BOB,
                                           "operation": "listMessages",
                                           "probability": 1.0,
                                           "retry_after": "1"})
        tag = "giveup-" + uuid.uuid4().hex[:8]
        with smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=30) as c:
            c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
            c.mail(BOB)
            c.rcpt("c@example.net")
            code, reply = c.data(message(BOB, ["c@example.net"], tag))
        self.assertEqual(code, 250)
        queue_id = queue_id_of(reply)

        def failed():
            row = self.db().execute(
                "SELECT state, error_code, error_text FROM messages"
                " WHERE queue_id = ?", (queue_id,)).fetchone()
            return row if row and row[0] == "failed" else None
        state, code, text = wait_for(failed, 40, "the look-up to give up")
        self.assertEqual(code, "verify_failed")
        self.assertIn("past max_age", text)
        self.assertEqual([r for r in self.box.sent(BOB)
                          if r["resource"]["subject"] == tag], [])
        self.box.sim_post("/_sim/faults", {"clear": True})
        self.box.policy_cli("retry", queue_id)
        wait_for(lambda: [r for r in self.box.sent(BOB)
                          if r["resource"]["subject"] == tag], 30, "the send")


class MailOutcomeNotRecorded(AgentTestCase):
    """A send that ends while the database is locked cannot be recorded;
    the row is not left in 'sending' until the next start: within the
    minute it is looked up in Sent Items and sent (once)."""

    def test_send_ending_during_a_database_lock_is_recovered(self):
        self.box.sim_post("/_sim/latency", {"ms": 3000})
        self.addCleanup(self.box.sim_post, "/_sim/latency", {"ms": 0})
        self.box.sim_post("/_sim/faults", {"fault": "503", "mailbox": CAROL,
                                           "operation": "sendMail", "count": 1,
                                           "retry_after": "1"})
        tag = "locked-" + uuid.uuid4().hex[:8]
        with smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=30) as c:
            c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
            c.mail(CAROL)
            c.rcpt("c@example.net")
            code, reply = c.data(message(CAROL, ["c@example.net"], tag))
        self.assertEqual(code, 250)
        queue_id = queue_id_of(reply)
        wait_for(lambda: self.db().execute(
            "SELECT 1 FROM messages WHERE queue_id = ? AND state = 'sending'",
            (queue_id,)).fetchone(), 10, "the send to start")
        # Another process holds the database while Graph's 503 comes back,
        # until the agent's busy timeout (5 s) gives up recording it.
        lock = sqlite3.connect(self.box.path("agent.db"), isolation_level=None,
                               timeout=10)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            wait_for(lambda: "record_failed" in self.box.agent_output(), 30,
                     "the agent to fail recording the outcome")
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        wait_for(lambda: [r for r in self.box.sent(CAROL)
                          if r["resource"]["subject"] == tag], 100,
                 "the orphaned send to be recovered and sent")
        time.sleep(2)
        self.assertEqual(len([r for r in self.box.sent(CAROL)
                              if r["resource"]["subject"] == tag]), 1)
        self.assertIn("recovering orphaned=1", self.box.agent_output())


if __name__ == "__main__":
    main()
