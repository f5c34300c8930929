#!/usr/bin/python3
"""Large mail and fidelity, end to end through the simulator: a 30 MB
attachment goes out as a draft with upload sessions, byte-identical,
while the agent's memory stays far below the message size, and so does a
40 MB one where the tenant's limit allows it (Graph takes up to 150 MB
through upload sessions); the forms
around Graph's 4 MB request limit; replies keep their threading and
invitations arrive as invitations (MIME form); attachment names, 8-bit
text and long lines survive; SMTPUTF8 is refused plainly; a From that is
not the linked user never turns into "send as denied" after a 250."""

import hashlib
import os
import re
import signal
import smtplib
import time
from email.message import EmailMessage
from email.utils import make_msgid

from scenario import ALICE, AgentTestCase, main, sandbox

MB = 1024 * 1024
# The agent's peak resident memory may grow by at most this much while it
# takes in and delivers a message of 41 MB (ASan included, its quarantine
# off): a fifth of the message. Streamed from disk, it grows by about
# 1.5 MB; holding the message, or any one attachment, would pass 30 MB.
RSS_GROWTH_MAX_KB = 8 * 1024


class BigSandbox(sandbox.Sandbox):
    """SMTP accepts messages of 64 MB: a 30 MB attachment is 41 MB once
    base64-encoded, a 40 MB one 55 MB, and what the mailbox accepts (35 MB
    of content by default in the simulator) is Graph's to say."""

    def agent_config_text(self):
        return super().agent_config_text() + "\n[smtp]\nmax_message_size = 67108864\n"


class LargeTestCase(AgentTestCase):

    @classmethod
    def setUpClass(cls):
        cls.box = BigSandbox()
        try:
            cls.box.start()
        except Exception:
            cls.dump_logs()
            cls.box.close()
            raise

    def message(self, subject, attachment=None, name="file.bin", **headers):
        msg = EmailMessage()
        msg["From"] = headers.pop("From", ALICE)
        msg["To"] = headers.pop("To", "jordan@example.net")
        msg["Subject"] = subject
        msg["Message-ID"] = make_msgid(domain="nextal.example")
        for key, value in headers.items():
            msg[key.replace("_", "-")] = value
        msg.set_content("Please find the file attached.\n")
        if attachment is not None:
            msg.add_attachment(attachment, maintype="application",
                               subtype="octet-stream", filename=name)
        return msg

    def deliver(self, msg, rcpts=("jordan@example.net",), timeout=120):
        before = self.sent_count(ALICE)
        self.send(ALICE, list(rcpts), msg.as_bytes())
        [record] = self.box.wait_sent(ALICE, before + 1, timeout)[before:]
        return record

    def start_upload(self, subject, megabytes, latency_ms):
        """Sends a message of random bytes with Graph slowed to latency_ms
        a request, and returns (message, bytes, sent count before) once
        its draft exists: the upload is under way."""
        self.box.sim_post("/_sim/latency", {"ms": latency_ms})
        self.addCleanup(self.box.sim_post, "/_sim/latency", {"ms": 0})
        data = os.urandom(megabytes * MB)
        msg = self.message(subject, data)
        before = self.sent_count(ALICE)
        self.send(ALICE, ["jordan@example.net"], msg.as_bytes())
        deadline = time.time() + 60
        while not self.box.sim_get("/_sim/drafts/" + ALICE)["drafts"]:
            self.assertLess(time.time(), deadline, "no draft was created")
            time.sleep(0.2)
        return msg, data, before

    def assert_attachment(self, record, data, name="file.bin"):
        by_name = {a["name"]: a for a in record["attachments"]}
        self.assertIn(name, by_name)
        self.assertEqual(by_name[name]["size"], len(data))
        self.assertEqual(by_name[name]["sha256"], hashlib.sha256(data).hexdigest())
        return by_name[name]

    def vm_hwm_kb(self):
        with open("/proc/%d/status" % self.box.agent.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")


class LargeAttachment(LargeTestCase):
    """Its own agent, so that the memory high-water mark measures this
    message alone. Under ASan, freed memory is held in a quarantine (up to
    256 MB) on purpose, which would count every byte ever allocated rather
    than what the agent keeps; it is switched off for this agent."""

    @classmethod
    def setUpClass(cls):
        saved = os.environ.get("ASAN_OPTIONS")
        os.environ["ASAN_OPTIONS"] = ((saved + ":") if saved else "") + \
            "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
        try:
            super().setUpClass()
        finally:
            if saved is None:
                del os.environ["ASAN_OPTIONS"]
            else:
                os.environ["ASAN_OPTIONS"] = saved

    def test_30mb_attachment_byte_identical_with_bounded_memory(self):
        # Warm up (first token, first Graph connection), then take the
        # idle high-water mark.
        self.deliver(self.message("warm-up"))
        idle = self.vm_hwm_kb()

        data = os.urandom(30 * MB)
        record = self.deliver(self.message("Portfolio", data, "portfolio.bin"))
        peak = self.vm_hwm_kb()

        self.assertEqual(record["source"], "draft")
        att = self.assert_attachment(record, data, "portfolio.bin")
        self.assertGreaterEqual(att["chunks"], 10)  # ordered chunks of <= 4 MB
        self.assertEqual(record["resource"]["subject"], "Portfolio")
        self.assertLess(peak - idle, RSS_GROWTH_MAX_KB,
                        "agent peak RSS grew by %d kB for a %d kB message"
                        % (peak - idle, len(data) * 4 // 3 // 1024))
        # The spool file and the decoded temporary files are gone once sent.
        time.sleep(0.5)
        left = [n for n in os.listdir(self.box.path("spool", "tmp"))]
        self.assertEqual(left, [])
        spooled = [n for n in os.listdir(self.box.path("spool"))
                   if n.endswith(".eml")]
        self.assertEqual(spooled, [])

    def test_40mb_attachment_where_the_tenant_allows_it(self):
        # An administrator may raise a mailbox's limit up to 150 MB; the
        # agent has no 35 MB limit of its own beyond what SMTP was told.
        self.box.sim_post("/_sim/limits", {"max_message_size": 150 * MB})
        self.addCleanup(self.box.sim_post, "/_sim/limits",
                        {"max_message_size": 35 * MB})
        self.deliver(self.message("warm-up 40"))
        idle = self.vm_hwm_kb()

        data = os.urandom(40 * MB)
        record = self.deliver(self.message("Archive", data, "archive.bin"))
        peak = self.vm_hwm_kb()

        self.assertEqual(record["source"], "draft")
        att = self.assert_attachment(record, data, "archive.bin")
        self.assertGreaterEqual(att["chunks"], 10)
        self.assertEqual(record["resource"]["subject"], "Archive")
        # idle is the high-water mark of the runs before (the 30 MB one
        # included): holding this message would still pass it by far.
        self.assertLess(peak - idle, RSS_GROWTH_MAX_KB,
                        "agent peak RSS grew by %d kB for a %d kB message"
                        % (peak - idle, len(data) * 4 // 3 // 1024))
        self.assertEqual(self.box.sim_get("/_sim/drafts/" + ALICE)["drafts"], [])

    def test_over_the_mailbox_limit_fails_with_graphs_reason(self):
        # The simulator's mailbox takes 35 MB of content; 36 MB fits the
        # SMTP limit but not the mailbox: the failure is recorded with
        # Graph's code, not lost.
        data = os.urandom(36 * MB)
        msg = self.message("Too big", data)
        self.send(ALICE, ["jordan@example.net"], msg.as_bytes())
        deadline = time.time() + 120
        row = None
        while time.time() < deadline:
            row = self.db().execute(
                "SELECT state, error_code FROM messages WHERE message_id = ?",
                (msg["Message-ID"].strip("<>"),)).fetchone()
            if row and row[0] == "failed":
                break
            time.sleep(0.5)
        self.assertEqual(row, ("failed", "ErrorMessageSizeExceeded"))
        # The draft made before Graph refused is not left in Drafts.
        self.assertEqual(self.box.sim_get("/_sim/drafts/" + ALICE)["drafts"], [])


    def test_sigkill_mid_upload_resumes_the_draft_after_restart(self):
        # Killed while chunks are going up: on restart the row is looked up
        # (not in Sent Items), then the remembered draft is resumed, and
        # the message is sent once with nothing left in Drafts.
        msg, data, before = self.start_upload("Killed mid-upload", 20, 700)
        time.sleep(1.5)  # a chunk or two are in
        self.box.stop_agent(signal.SIGKILL)
        self.box.sim_post("/_sim/latency", {"ms": 0})
        stale = self.box.path("spool", "tmp", "left-by-a-crash.0")
        with open(stale, "wb") as f:
            f.write(b"x" * 1000)
        self.box.start_agent()
        self.assertFalse(os.path.exists(stale))  # swept at start
        [record] = self.box.wait_sent(ALICE, before + 1, 120)[before:]
        self.assert_attachment(record, data, "file.bin")
        time.sleep(1)
        sent = [m for m in self.box.sent(ALICE)
                if m["resource"]["internetMessageId"] == msg["Message-ID"]]
        self.assertEqual(len(sent), 1)
        self.assertEqual(self.box.sim_get("/_sim/drafts/" + ALICE)["drafts"], [])
        self.assertIn("queue draft_resumed", self.box.agent_output())


class Fidelity(LargeTestCase):

    def test_3_2mb_message_goes_in_one_json_request(self):
        data = os.urandom(2300 * 1000)  # 3.2 MB once encoded
        msg = self.message("3.2 MB", data)
        self.assertGreater(len(msg.as_bytes()), 3100 * 1000)
        record = self.deliver(msg)
        self.assertEqual(record["source"], "json")
        self.assert_attachment(record, data)

    def test_4_2mb_message_with_small_attachment_goes_as_draft(self):
        data = os.urandom(3120 * 1000)  # under 3 MiB: one POST on the draft
        msg = self.message("4.2 MB", data)
        self.assertGreater(len(msg.as_bytes().replace(b"\n", b"\r\n")), 4 * MB)
        record = self.deliver(msg)
        self.assertEqual(record["source"], "draft")
        att = self.assert_attachment(record, data)
        self.assertEqual(att["chunks"], 0)

    def test_4_5mb_message_goes_as_draft_with_upload_session(self):
        data = os.urandom(3300 * 1000)  # 4.5 MB once encoded
        msg = self.message("4.5 MB", data)
        self.assertGreater(len(msg.as_bytes()), 4400 * 1000)
        record = self.deliver(msg)
        self.assertEqual(record["source"], "draft")
        att = self.assert_attachment(record, data)
        self.assertEqual(att["chunks"], 2)
        self.assertEqual(record["resource"]["internetMessageId"], msg["Message-ID"])

    def test_text_too_long_for_graph_is_refused_at_end_of_data(self):
        # A 5 MB body text cannot go in any Graph request (the draft's JSON
        # carries it): refused before 250, not failed after it.
        words = "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n" * 90000
        raw = ("From: %s\r\nTo: jordan@example.net\r\nSubject: essay\r\n\r\n%s\r\n"
               % (ALICE, words)).encode()
        with smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=60) as c:
            c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
            c.mail(ALICE)
            c.rcpt("jordan@example.net")
            code, text = c.data(raw)
        self.assertEqual(code, 552)
        self.assertIn(b"5.3.4", text)

    def fault(self, **rule):
        self.box.sim_post("/_sim/faults", rule)
        self.addCleanup(self.box.sim_post, "/_sim/faults", {"clear": True})

    def assert_one_send_no_draft_left(self, msg, data):
        sent = [m for m in self.box.sent(ALICE)
                if m["resource"]["internetMessageId"] == msg["Message-ID"]]
        self.assertEqual(len(sent), 1)
        self.assert_attachment(sent[0], data)
        # A retry that made a second draft would leave the first behind.
        self.assertEqual(self.box.sim_get("/_sim/drafts/" + ALICE)["drafts"], [])

    def test_failed_chunk_resumes_the_same_draft(self):
        # A 503 on one PUT and a lost answer to another: each retry finds
        # the remembered draft, counts its attachments and goes on.
        self.fault(fault="503", operation="uploadChunk", count=1, retry_after="0.2")
        self.fault(fault="drop", operation="uploadChunk", count=1, after=True)
        data = os.urandom(7 * MB)
        msg = self.message("Resumed", data)
        record = self.deliver(msg, timeout=60)
        self.assertEqual(record["source"], "draft")
        self.assert_one_send_no_draft_left(msg, data)
        self.assertIn("queue draft_resumed", self.box.agent_output())

    def test_lost_answer_to_send_is_not_sent_twice(self):
        # Graph takes the send but the answer is lost: the next attempt sees
        # the message is no longer a draft (or finds it in Sent Items).
        self.fault(fault="drop", operation="sendDraft", count=1, after=True)
        data = os.urandom(4 * MB)
        msg = self.message("Sent once", data)
        self.deliver(msg, timeout=60)
        deadline = time.time() + 30
        state = None
        while time.time() < deadline:
            state = self.db().execute("SELECT state FROM messages WHERE message_id = ?",
                                      (msg["Message-ID"].strip("<>"),)).fetchone()
            if state and state[0] != "queued" and state[0] != "sending":
                break
            time.sleep(0.3)
        self.assertEqual(state, ("sent",))
        time.sleep(1)
        self.assert_one_send_no_draft_left(msg, data)
        log = self.box.agent_output()
        self.assertTrue("queue draft_already_sent" in log
                        or "queue found_in_sent_items" in log)

    def test_503_on_send_resumes_a_13mb_draft_without_its_bytes(self):
        # The retry counts the draft's attachments; a listing with their
        # contentBytes (about 18 MB here) would pass the agent's 16 MB reply
        # limit on every attempt, so the count selects id, name and size.
        self.fault(fault="503", operation="sendDraft", count=1, retry_after="0.2")
        data = os.urandom(13 * MB)
        msg = self.message("Resumed after a 503 on send", data)
        record = self.deliver(msg, timeout=90)
        self.assertEqual(record["source"], "draft")
        time.sleep(1)
        self.assert_one_send_no_draft_left(msg, data)
        log = self.box.agent_output()
        self.assertIn("queue draft_resumed", log)
        self.assertNotIn("reply_too_large", log)

    def test_sigterm_mid_upload_resumes_after_restart(self):
        # Each request takes 1.5 s, so the 10 s grace ends near the send:
        # whatever was cut off, the restarted agent resumes the remembered
        # draft, and the message goes once, byte-identical, with nothing
        # left in Drafts.
        msg, data, before = self.start_upload("Stopped mid-upload", 15, 1500)
        # A stopping agent lets the request in flight finish (1.5 s) but
        # starts no further step: it exits well inside its 10 s grace,
        # with the row queued again (nothing to look up) and its draft kept.
        started = time.time()
        self.box.stop_agent(signal.SIGTERM)
        self.assertLess(time.time() - started, 5.0, "upload went on after SIGTERM")
        self.box.sim_post("/_sim/latency", {"ms": 0})
        mid = msg["Message-ID"].strip("<>")
        [(draft_id, state)] = self.db().execute(
            "SELECT draft_id, state FROM messages WHERE message_id = ?",
            (mid,)).fetchall()
        if self.sent_count(ALICE) == before:
            self.assertIsNotNone(draft_id)  # remembered for the restart
            self.assertEqual(state, "queued")
        self.box.start_agent()
        [record] = self.box.wait_sent(ALICE, before + 1, 120)[before:]
        self.assert_attachment(record, data)
        time.sleep(1)
        self.assert_one_send_no_draft_left(msg, data)
        self.assertNotIn("reply_too_large", self.box.agent_output())

    def test_switch_off_mid_upload_holds_then_resumes_the_draft(self):
        # Requests take a second each, so the upload is still going when
        # the integration is switched off: nothing more goes to Graph, the
        # mail is held with its draft, and switching on again (and linking
        # again, which the switch-off requires) finishes that same draft.
        self.box.sim_post("/_sim/latency", {"ms": 1000})
        self.addCleanup(self.box.sim_post, "/_sim/latency", {"ms": 0})
        self.addCleanup(self.box.link, ALICE)
        self.addCleanup(self.box.policy_cli, "enable", check=False)
        data = os.urandom(20 * MB)
        msg = self.message("Held mid-upload", data)
        mid = msg["Message-ID"].strip("<>")
        before = self.sent_count(ALICE)
        self.send(ALICE, ["jordan@example.net"], msg.as_bytes())
        deadline = time.time() + 60
        while not self.box.sim_get("/_sim/drafts/" + ALICE)["drafts"]:
            self.assertLess(time.time(), deadline, "no draft was created")
            time.sleep(0.2)
        self.box.policy_cli("disable", "--yes")

        def state():
            row = self.db().execute("SELECT state, draft_id FROM messages "
                                    "WHERE message_id = ?", (mid,)).fetchone()
            return row
        deadline = time.time() + 60
        while state()[0] != "held":
            self.assertLess(time.time(), deadline, "mail not held: %r" % (state(),))
            time.sleep(0.2)
        [draft] = self.box.sim_get("/_sim/drafts/" + ALICE)["drafts"]
        self.assertIsNotNone(state()[1])
        self.assertLess(len(draft["attachments"]), 1)  # stopped mid-way
        self.assertEqual(self.sent_count(ALICE), before)

        self.box.sim_post("/_sim/latency", {"ms": 0})
        self.box.policy_cli("enable")
        self.box.link(ALICE)  # switching off unlinks every user
        [record] = self.box.wait_sent(ALICE, before + 1, 120)[before:]
        self.assert_attachment(record, data)
        self.assert_one_send_no_draft_left(msg, data)
        self.assertIn("queue draft_resumed", self.box.agent_output())

    def test_reply_thread_keeps_in_reply_to_and_references(self):
        first = make_msgid(domain="candidate.example")
        second = make_msgid(domain="nextal.example")
        msg = self.message("Re: Interview", In_Reply_To=first,
                           References="%s %s" % (first, second))
        record = self.deliver(msg, rcpts=("jordan@example.net", "hidden@example.net"))
        self.assertEqual(record["source"], "mime")
        # Exactly as Nextal wrote them (Python folds long References).
        raw = re.sub(r"\r?\n[ \t]+", " ", record["raw_request"])
        self.assertIn("In-Reply-To: %s" % first, raw)
        self.assertIn("References: %s %s" % (first, second), raw)
        self.assertIn("Message-ID: %s" % msg["Message-ID"], raw)
        rcpts = sorted((r["type"], r["address"]) for r in record["recipients"])
        self.assertEqual(rcpts, [("bcc", "hidden@example.net"),
                                 ("to", "jordan@example.net")])

    def test_imip_invitation_arrives_as_invitation(self):
        ics = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Nextal//EN\r\n"
               "METHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:iv-42@nextal.example\r\n"
               "DTSTAMP:20300101T090000Z\r\nDTSTART:20300304T090000Z\r\n"
               "DTEND:20300304T100000Z\r\nSUMMARY:Interview\r\n"
               "ORGANIZER:mailto:%s\r\nATTENDEE;RSVP=TRUE:mailto:jordan@example.net\r\n"
               "END:VEVENT\r\nEND:VCALENDAR\r\n" % ALICE)
        msg = self.message("Invitation: Interview")
        msg.add_alternative(ics, subtype="calendar", params={"method": "REQUEST"})
        record = self.deliver(msg)
        self.assertEqual(record["source"], "mime")
        [cal] = record["calendar"]
        self.assertEqual(cal["method"], "REQUEST")
        self.assertIn("UID:iv-42@nextal.example", cal["content"])
        self.assertEqual(record["resource"]["meetingMessageType"], "meetingRequest")
        self.assertEqual([a["name"] for a in record["attachments"]], [])

    def test_rfc2231_and_rfc2047_attachment_names(self):
        raw = ("From: %s\r\nTo: jordan@example.net\r\nSubject: names\r\n"
               "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
               "--b\r\nContent-Type: text/plain\r\n\r\nNames.\r\n"
               "--b\r\nContent-Type: application/pdf\r\n"
               "Content-Disposition: attachment; filename*=UTF-8''%%E2%%82%%AC%%20rates.pdf\r\n"
               "Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
               "--b\r\nContent-Type: application/pdf\r\n"
               "Content-Disposition: attachment;\r\n"
               " filename*0*=iso-8859-1''Lebenslauf%%20J%%FCrgen;\r\n"
               " filename*1=\".pdf\"\r\n"
               "Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
               "--b\r\nContent-Type: application/pdf;\r\n"
               " name=\"=?UTF-8?B?T2ZmZXJ0ZSBSw6luw6llLnBkZg==?=\"\r\n"
               "Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
               "--b--\r\n" % ALICE)
        before = self.sent_count(ALICE)
        self.send(ALICE, ["jordan@example.net"], raw.encode())
        [record] = self.wait_one_more(ALICE, before)
        names = sorted(a["name"] for a in record["attachments"])
        self.assertEqual(names, sorted(["\u20ac rates.pdf", "Lebenslauf J\u00fcrgen.pdf",
                                        "Offerte R\u00e9n\u00e9e.pdf"]))

    def test_latin1_without_a_label(self):
        raw = (b"From: " + ALICE.encode() + b"\r\nTo: jordan@example.net\r\n"
               b"Subject: Caf\xe9\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
               b"Gr\xfc\xdfe aus K\xf6ln, caf\xe9 \xe0 9h.\r\n")
        before = self.sent_count(ALICE)
        self.send(ALICE, ["jordan@example.net"], raw)
        [record] = self.wait_one_more(ALICE, before)
        res = record["resource"]
        self.assertEqual(res["subject"], "Caf\u00e9")
        self.assertIn("Gr\u00fc\u00dfe aus K\u00f6ln, caf\u00e9 \u00e0 9h.",
                      res["body"]["content"])

    def test_5000_character_line(self):
        line = "".join("%04d " % i for i in range(1000))  # 5,000 characters
        raw = ("From: %s\r\nTo: jordan@example.net\r\nSubject: long line\r\n"
               "\r\n%s\r\n" % (ALICE, line))
        before = self.sent_count(ALICE)
        self.send(ALICE, ["jordan@example.net"], raw.encode())
        [record] = self.wait_one_more(ALICE, before)
        self.assertEqual(record["resource"]["body"]["content"].strip(), line.strip())

    def test_smtputf8_is_refused_plainly(self):
        client = self.smtp()
        self.assertFalse(client.has_extn("smtputf8"))
        code, text = client.docmd("MAIL FROM:<%s> SMTPUTF8" % ALICE)
        self.assertEqual(code, 555)
        self.assertIn(b"SMTPUTF8", text)
        code, _ = client.docmd("MAIL FROM:<%s>" % ALICE)
        self.assertEqual(code, 250)
        client.send("RCPT TO:<j\u00fcrgen@example.net>\r\n".encode())
        code, text = client.getreply()
        self.assertEqual((code, text[:5]), (553, b"5.6.7"))
        self.assertIn(b"SMTPUTF8", text)
        client.docmd("RSET")
        client.send("MAIL FROM:<al\u00efce@contoso.example>\r\n".encode())
        code, text = client.getreply()
        self.assertEqual((code, text[:5]), (553, b"5.6.7"))
        client.docmd("RSET")
        # UTF-8 in display names and subjects (8BITMIME) is not SMTPUTF8
        # and goes through.
        raw = ("From: Al\u00efce <%s>\r\nTo: J\u00fcrgen <jordan@example.net>\r\n"
               "Subject: \u00c0 bient\u00f4t\r\n\r\nMerci.\r\n" % ALICE).encode()
        before = self.sent_count(ALICE)
        self.send(ALICE, ["jordan@example.net"], raw)
        [record] = self.wait_one_more(ALICE, before)
        res = record["resource"]
        self.assertEqual(res["subject"], "\u00c0 bient\u00f4t")
        self.assertEqual(res["toRecipients"][0]["emailAddress"]["name"], "J\u00fcrgen")

    def test_from_not_the_user_is_sent_as_the_user_with_reply_to(self):
        # Plain and as a reply (which would otherwise take the MIME form):
        # both are sent as Alice, the recruiter's address becomes Reply-To,
        # and neither ends as ErrorSendAsDenied after our 250.
        for extra in ({}, {"In_Reply_To": make_msgid(domain="candidate.example")}):
            msg = self.message("From the recruiter", From="Rita <rita@agency.example>",
                               **extra)
            with smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=30) as c:
                c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
                c.mail(ALICE)
                c.rcpt("jordan@example.net")
                code, text = c.data(msg.as_bytes())
            self.assertEqual(code, 250)
            queue_id = text.decode().split()[-1]
            before = self.sent_count(ALICE)
            deadline = time.time() + 30
            state = None
            while time.time() < deadline:
                row = self.db().execute("SELECT state, error_code FROM messages "
                                        "WHERE queue_id = ?", (queue_id,)).fetchone()
                state = row
                if row and row[0] in ("sent", "failed"):
                    break
                time.sleep(0.2)
            self.assertEqual(state, ("sent", None))
            record = [m for m in self.box.sent(ALICE)
                      if m["resource"]["internetMessageId"] == msg["Message-ID"]][0]
            self.assertLessEqual(before, self.sent_count(ALICE))
            self.assertEqual(record["source"], "json")
            res = record["resource"]
            self.assertEqual(res["from"]["emailAddress"]["address"], ALICE)
            self.assertEqual([r["emailAddress"]["address"] for r in res["replyTo"]],
                             ["rita@agency.example"])


if __name__ == "__main__":
    main()
