#!/usr/bin/python3
"""The [smtp] limits as a client meets them, against the real daemon: the
connection limit, 500 recipients a message, the idle and DATA timeouts and
the count of commands outside a transaction. Each asserts the exact reply
and that the agent then closes the connection; the log must show each
session's timeout and disconnect once."""

import re
import socket
import time

from scenario import ALICE, main
from smtp_protocol import RawClient, RawSmtpCase


def closed_by_peer(client, timeout=5):
    """True when the agent closed the connection (EOF, or a reset)."""
    client.sock.settimeout(timeout)
    try:
        return client.buf == b"" and client.sock.recv(1) == b""
    except ConnectionResetError:
        return True


class LimitsCase(RawSmtpCase):

    def session_id(self, client):
        """The agent's id for client's connection, from its connect line."""
        port = client.sock.getsockname()[1]
        pattern = re.compile(r" (s\d+) smtp connect peer=127\.0\.0\.1:%d\b"
                             % port)

        def find():
            m = pattern.search(self.box.agent_output())
            return m.group(1) if m else None
        from sandbox import wait_for
        return wait_for(find, 10, "the connect line")

    def session_lines(self, sid, what):
        """The agent's log lines of session sid saying `smtp <what>`."""
        pattern = re.compile(r" %s smtp %s\b" % (sid, what))
        return [l for l in self.box.agent_output().splitlines()
                if pattern.search(l)]

    def assert_logged_once(self, sid, what):
        from sandbox import wait_for
        wait_for(lambda: self.session_lines(sid, what), 10,
                 "%s %s in the log" % (sid, what))
        time.sleep(0.2)  # a second line, if any, would follow at once
        self.assertEqual(len(self.session_lines(sid, what)), 1,
                         self.session_lines(sid, what))


class ConnectionLimit(LimitsCase):
    sandbox_options = {"extra_config": "[smtp]\nmax_connections = 2\n"}

    def test_connection_beyond_the_limit_gets_421_and_is_closed(self):
        # The sandbox's start-up probe must have left its slot first.
        from sandbox import wait_for
        log = self.box.agent_output
        wait_for(lambda: log().count(" smtp connect ")
                 == log().count(" smtp disconnect "), 10, "idle agent")
        first, second = self.client(), self.client()
        third = self.client(greet=False)
        self.assertEqual(third.reply(),
                         (421, "421 4.7.0 Too many connections, try later"))
        self.assertTrue(closed_by_peer(third))
        # The two within the limit are unaffected.
        self.assertEqual(first.command("NOOP")[0], 250)
        self.assertEqual(second.command("NOOP")[0], 250)
        # A slot freed by QUIT is usable again.
        self.assertEqual(first.command("QUIT")[0], 221)
        self.assertTrue(closed_by_peer(first))

        def admitted():
            c = RawClient(self.box.smtp_port)
            self.addCleanup(c.close)
            return c if c.reply()[0] == 220 else None
        fourth = wait_for(admitted, 10, "a free slot")
        self.assertEqual(fourth.command("NOOP")[0], 250)


class SmtpLimits(LimitsCase):
    # max_recipients stays at its default (500). Timeouts are small so the
    # test is quick; data_timeout is longer than idle_timeout so that a
    # session in DATA is seen to use it and not the idle one.
    sandbox_options = {"extra_config": "[smtp]\nidle_timeout = 2\n"
                       "data_timeout = 5\nmax_commands = 6\n"}

    def test_501st_recipient_gets_452_and_the_message_goes_to_500(self):
        before = self.sent_count(ALICE)
        c = self.logged_in()
        self.assertEqual(c.command("MAIL FROM:<%s>" % ALICE)[0], 250)
        rcpts = ["r%03d@example.net" % i for i in range(501)]
        # Pipelined: 501 commands in one write, faster than the idle timer.
        c.send("".join("RCPT TO:<%s>\r\n" % r for r in rcpts))
        replies = [c.reply() for _ in rcpts]
        self.assertEqual({r for r in replies[:500]},
                         {(250, "250 2.1.5 Recipient ok")})
        self.assertEqual(replies[500], (452, "452 4.5.3 Too many recipients"))
        self.assertEqual(c.command("DATA")[0], 354)
        c.send("From: %s\r\nTo: undisclosed-recipients:;\r\nSubject: 500\r\n"
               "\r\nmany\r\n.\r\n" % ALICE)
        code, text = c.reply()
        self.assertEqual(code, 250, text)
        [record] = self.wait_one_more(ALICE, before, timeout=60)
        self.assertEqual(sorted(r["address"] for r in record["recipients"]),
                         rcpts[:500])

    def test_idle_connection_gets_421_and_is_closed(self):
        c = self.logged_in()
        sid = self.session_id(c)
        started = time.monotonic()
        c.sock.settimeout(10)
        self.assertEqual(c.reply(),
                         (421, "421 4.4.2 Timeout, closing connection"))
        elapsed = time.monotonic() - started
        self.assertGreater(elapsed, 1.5)
        self.assertLess(elapsed, 4.5)
        self.assertTrue(closed_by_peer(c))
        self.assert_logged_once(sid, "timeout")
        self.assert_logged_once(sid, "disconnect")

    def test_data_timeout_is_421_and_nothing_is_queued(self):
        before = self.sent_count(ALICE)
        c = self.logged_in()
        sid = self.session_id(c)
        self.assertEqual(c.command("MAIL FROM:<%s>" % ALICE)[0], 250)
        self.assertEqual(c.command("RCPT TO:<late@example.net>")[0], 250)
        self.assertEqual(c.command("DATA")[0], 354)
        c.send("From: %s\r\nTo: late@example.net\r\nSubject: never ends\r\n"
               "\r\npart of a body\r\n" % ALICE)
        started = time.monotonic()
        # Past idle_timeout (2 s) the DATA session is still open ...
        c.sock.settimeout(3.5)
        with self.assertRaises(socket.timeout):
            c.reply()
        # ... and data_timeout (5 s from the last data) ends it.
        c.sock.settimeout(10)
        self.assertEqual(c.reply(),
                         (421, "421 4.4.2 Timeout, closing connection"))
        elapsed = time.monotonic() - started
        self.assertGreater(elapsed, 4.5)
        self.assertLess(elapsed, 8)
        self.assertTrue(closed_by_peer(c))
        self.assert_logged_once(sid, "timeout")
        self.assert_logged_once(sid, "disconnect")
        self.assertIn("state=data", self.session_lines(sid, "timeout")[0])
        time.sleep(1)
        self.assertEqual(self.sent_count(ALICE), before)
        self.assertEqual(self.db().execute(
            "SELECT count(*) FROM messages WHERE recipients LIKE ?",
            ("%late@example.net%",)).fetchone()[0], 0)

    def test_commands_outside_a_transaction_are_counted(self):
        before = self.sent_count(ALICE)
        c = self.logged_in()  # EHLO and AUTH: 2 of 6
        sid = self.session_id(c)
        for _ in range(4):
            self.assertEqual(c.command("NOOP")[0], 250)
        # MAIL, RCPT and DATA do not count, and a finished transaction
        # starts the count again.
        self.assertEqual(c.command("MAIL FROM:<%s>" % ALICE)[0], 250)
        self.assertEqual(c.command("RCPT TO:<count@example.net>")[0], 250)
        self.assertEqual(c.command("DATA")[0], 354)
        c.send("From: %s\r\nSubject: count\r\n\r\nx\r\n.\r\n" % ALICE)
        self.assertEqual(c.reply()[0], 250)
        self.wait_one_more(ALICE, before)
        for _ in range(6):
            self.assertEqual(c.command("NOOP")[0], 250)
        self.assertEqual(c.command("NOOP"),
                         (421, "421 4.7.0 Too many commands, closing "
                          "connection"))
        self.assertTrue(closed_by_peer(c))
        self.assert_logged_once(sid, "command limit reached")
        self.assert_logged_once(sid, "disconnect")

    def test_refused_mail_is_logged_once(self):
        c = self.logged_in()
        sid = self.session_id(c)
        self.assertEqual(c.command("MAIL FROM:alice-no-brackets"),
                         (501, "501 5.5.4 Syntax: MAIL FROM:<address>"))
        self.assert_logged_once(sid, "mail refused")
        [line] = self.session_lines(sid, "mail refused")
        self.assertIn('reason=syntax args="FROM:alice-no-brackets"', line)


if __name__ == "__main__":
    main()
