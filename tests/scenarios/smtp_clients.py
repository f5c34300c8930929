#!/usr/bin/python3
"""Real SMTP clients against the agent: swaks, curl's SMTP client and
nodemailer each submit a message that reaches Graph."""

import hashlib
import os
import shutil
import subprocess
import unittest


from scenario import ALICE, AgentTestCase, main, sandbox

CLIENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "clients")


class SmtpClients(AgentTestCase):

    def test_swaks(self):
        if not shutil.which("swaks"):
            self.fail("swaks is not installed (apt-get install swaks)")
        before = self.sent_count(ALICE)
        out = subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(self.box.smtp_port),
             "--auth", "PLAIN", "--auth-user", sandbox.SERVICE_USER,
             "--auth-password", sandbox.SERVICE_PASSWORD,
             "--from", ALICE, "--to", "swaks@example.net",
             "--header", "Subject: sent with swaks", "--body", "swaks body",
             "--pipeline"], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertRegex(out.stdout, r"<-  250 2\.0\.0 .*queued as")
        [record] = self.wait_one_more(ALICE, before)
        self.assertEqual(record["resource"]["subject"], "sent with swaks")
        self.assertEqual([r["address"] for r in record["recipients"]],
                         ["swaks@example.net"])

    def test_swaks_pipelined_with_one_refused_recipient(self):
        # swaks pipelines MAIL, both RCPTs and DATA in one write; the agent
        # refuses the malformed recipient and the message goes to the other.
        before = self.sent_count(ALICE)
        out = subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(self.box.smtp_port),
             "--auth", "PLAIN", "--auth-user", sandbox.SERVICE_USER,
             "--auth-password", sandbox.SERVICE_PASSWORD,
             "--from", ALICE, "--to", "good@example.net,bad@@example.net",
             "--header", "Subject: pipelined with swaks", "--body", "x",
             "--pipeline"], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertRegex(out.stdout, r"<\*\* +501 5\.1\.3 ")
        self.assertRegex(out.stdout, r"<-  250 2\.0\.0 .*queued as")
        [record] = self.wait_one_more(ALICE, before)
        self.assertEqual(record["resource"]["subject"], "pipelined with swaks")
        self.assertEqual([r["address"] for r in record["recipients"]],
                         ["good@example.net"])

    def test_curl(self):
        before = self.sent_count(ALICE)
        message = ("From: Alice <%s>\r\nTo: curl@example.net\r\n"
                   "Subject: sent with curl\r\n\r\ncurl body\r\n" % ALICE)
        out = subprocess.run(
            ["curl", "-sS", "--url", "smtp://127.0.0.1:%d" % self.box.smtp_port,
             "--mail-from", ALICE, "--mail-rcpt", "curl@example.net",
             "--user", "%s:%s" % (sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD),
             "--upload-file", "-"], input=message, capture_output=True,
            text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        [record] = self.wait_one_more(ALICE, before)
        self.assertEqual(record["resource"]["subject"], "sent with curl")
        self.assertIn("curl body", record["resource"]["body"]["content"])

    def test_nodemailer(self):
        if not os.path.isdir(os.path.join(CLIENTS, "node_modules", "nodemailer")):
            self.fail("nodemailer missing: run npm ci in tests/clients")
        before = self.sent_count(ALICE)
        out = subprocess.run(
            ["node", os.path.join(CLIENTS, "send_nodemailer.js"),
             str(self.box.smtp_port), sandbox.SERVICE_USER,
             sandbox.SERVICE_PASSWORD, ALICE, "node@example.net",
             "sent with nodemailer"], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("250 2.0.0", out.stdout)
        [record] = self.wait_one_more(ALICE, before)
        res = record["resource"]
        self.assertEqual(res["subject"], "sent with nodemailer")
        self.assertEqual(res["body"]["contentType"].lower(), "html")
        [att] = record["attachments"]
        self.assertEqual(att["name"], "note.txt")
        self.assertEqual(att["sha256"],
                         hashlib.sha256(b"attached by nodemailer\n").hexdigest())


if __name__ == "__main__":
    main()
