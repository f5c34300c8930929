#!/usr/bin/python3
"""The SMTP conversation as clients see it: AUTH rules, pipelining with a
refused recipient, enhanced status codes, limits and policy refusals."""

import base64
import socket
import time


from scenario import ALICE, AgentTestCase, main, sandbox


class RawClient:
    """A line-level SMTP client, to send exactly what a test wants."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def reply(self):
        """Reads one (possibly multi-line) reply; returns (code, text)."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed after %r" % lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return int(lines[-1][:3]), "\n".join(lines)

    def command(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def login(self):
        token = base64.b64encode(("\0%s\0%s" % (sandbox.SERVICE_USER,
                                                sandbox.SERVICE_PASSWORD)).encode())
        return self.command("AUTH PLAIN " + token.decode())


class RawSmtpCase(AgentTestCase):
    """A scenario that talks SMTP line by line to the sandbox's agent."""

    def client(self, greet=True):
        """A new connection, closed at the end of the test; with greet,
        the 220 greeting is read and checked."""
        c = RawClient(self.box.smtp_port)
        self.addCleanup(c.close)
        if greet:
            code, text = c.reply()
            self.assertEqual(code, 220, text)
        return c

    def logged_in(self):
        """A connection past EHLO and AUTH as the service."""
        c = self.client()
        self.assertEqual(c.command("EHLO client.test")[0], 250)
        self.assertEqual(c.login()[0], 235)
        return c


class SmtpProtocol(RawSmtpCase):

    def test_ehlo_advertises_extensions(self):
        c = self.client()
        code, text = c.command("EHLO client.test")
        self.assertEqual(code, 250)
        for ext in ("PIPELINING", "SIZE ", "8BITMIME", "ENHANCEDSTATUSCODES",
                    "AUTH PLAIN LOGIN"):
            self.assertIn(ext, text)

    def test_mail_without_auth_is_refused(self):
        c = self.client()
        c.command("EHLO client.test")
        code, text = c.command("MAIL FROM:<%s>" % ALICE)
        self.assertEqual(code, 530)
        self.assertIn("5.7.0", text)

    def test_bad_password(self):
        c = self.client()
        c.command("EHLO client.test")
        token = base64.b64encode(b"\0nextal\0wrong").decode()
        code, text = c.command("AUTH PLAIN " + token)
        self.assertEqual(code, 535)
        self.assertIn("5.7.8", text)

    def test_auth_login(self):
        c = self.client()
        c.command("EHLO client.test")
        self.assertEqual(c.command("AUTH LOGIN")[0], 334)
        self.assertEqual(c.command(base64.b64encode(b"nextal").decode())[0], 334)
        code, text = c.command(base64.b64encode(
            sandbox.SERVICE_PASSWORD.encode()).decode())
        self.assertEqual(code, 235)
        self.assertIn("2.7.0", text)

    def test_pipelined_transaction_with_one_refused_recipient(self):
        before = self.sent_count(ALICE)
        c = self.client()
        c.command("EHLO client.test")
        self.assertEqual(c.login()[0], 235)
        body = "From: %s\r\nTo: ok@example.net\r\nSubject: pipelined\r\n\r\nhi\r\n.\r\n" % ALICE
        c.send("MAIL FROM:<%s>\r\nRCPT TO:<ok@example.net>\r\n"
               "RCPT TO:<not an address>\r\nRCPT TO:<also-ok@example.net>\r\n"
               "DATA\r\n" % ALICE)
        replies = [c.reply() for _ in range(5)]
        self.assertEqual([r[0] for r in replies], [250, 250, 501, 250, 354])
        self.assertIn("5.1.3", replies[2][1])
        c.send(body)
        code, text = c.reply()
        self.assertEqual(code, 250, text)
        self.assertRegex(text, r"2\.0\.0 .*queued as [0-9A-F]+")
        [record] = self.wait_one_more(ALICE, before)
        self.assertEqual(sorted(r["address"] for r in record["recipients"]),
                         ["also-ok@example.net", "ok@example.net"])

    def test_unknown_command_and_vrfy(self):
        c = self.client()
        c.command("EHLO client.test")
        code, text = c.command("FROB")
        self.assertEqual(code, 500)
        self.assertIn("5.5.2", text)
        code, text = c.command("VRFY alice")
        self.assertEqual(code, 252)

    def test_line_too_long(self):
        c = self.client()
        c.command("EHLO client.test")
        code, text = c.command("NOOP " + "x" * 2000)
        self.assertEqual(code, 500)
        self.assertIn("5.5.2", text)
        self.assertEqual(c.command("NOOP")[0], 250)

    def test_size_declared_too_big(self):
        c = self.client()
        c.command("EHLO client.test")
        c.login()
        code, text = c.command("MAIL FROM:<%s> SIZE=999999999999" % ALICE)
        self.assertEqual(code, 552)
        self.assertIn("5.3.4", text)
        # Too large for 64 bits is still a well-formed size, over the limit.
        code, text = c.command("MAIL FROM:<%s> SIZE=%s" % (ALICE, "9" * 23))
        self.assertEqual(code, 552, text)
        self.assertIn("5.3.4", text)
        code, text = c.command("MAIL FROM:<%s> SIZE=1e9" % ALICE)
        self.assertEqual(code, 501, text)

    def test_sender_not_linked_is_refused_with_reason(self):
        c = self.client()
        c.command("EHLO client.test")
        c.login()
        code, text = c.command("MAIL FROM:<stranger@contoso.example>")
        self.assertEqual(code, 550)
        self.assertIn("5.7.1", text)
        self.assertIn("user_not_linked", text)

    def test_bare_lf_dot_is_not_end_of_data(self):
        before = self.sent_count(ALICE)
        c = self.client()
        c.command("EHLO client.test")
        c.login()
        self.assertEqual(c.command("MAIL FROM:<%s>" % ALICE)[0], 250)
        self.assertEqual(c.command("RCPT TO:<lf@example.net>")[0], 250)
        self.assertEqual(c.command("DATA")[0], 354)
        c.send("From: %s\r\nTo: lf@example.net\r\nSubject: lf\r\n\r\n"
               "line one\n.\nstill data\r\n" % ALICE)
        # Nothing may have ended the data yet: a NOOP now is message text.
        c.send("NOOP\r\n.\r\n")
        code, text = c.reply()
        self.assertEqual(code, 250, text)
        [record] = self.wait_one_more(ALICE, before)
        self.assertIn("still data", record["resource"]["body"]["content"])
        self.assertIn("NOOP", record["resource"]["body"]["content"])

    def test_quit(self):
        c = self.client()
        code, text = c.command("QUIT")
        self.assertEqual(code, 221)
        self.assertIn("2.0.0", text)


class SmtpAuthDeadline(AgentTestCase):
    """A connection that does not log in within auth_timeout is closed,
    however often it sends a command; one that logs in is not."""
    sandbox_options = {"extra_config": "[smtp]\nauth_timeout = 2\n"}

    def test_connection_that_never_logs_in_is_closed(self):
        idle = RawClient(self.box.smtp_port)
        self.addCleanup(idle.close)
        self.assertEqual(idle.reply()[0], 220)
        logged_in = RawClient(self.box.smtp_port)
        self.addCleanup(logged_in.close)
        self.assertEqual(logged_in.reply()[0], 220)
        self.assertEqual(logged_in.command("EHLO client.example")[0], 250)
        self.assertEqual(logged_in.login()[0], 235)
        started = time.time()
        # NOOPs keep the idle timer fresh, but not the deadline to log in.
        with self.assertRaises(ConnectionError):
            while time.time() - started < 10:
                code, text = idle.command("NOOP")
                if code == 421:
                    self.assertIn("4.4.2", text)
                    idle.reply()  # then the connection closes
                time.sleep(0.3)
        self.assertLess(time.time() - started, 4)
        self.assertEqual(logged_in.command("NOOP")[0], 250)


if __name__ == "__main__":
    main()
