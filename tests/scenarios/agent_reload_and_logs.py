#!/usr/bin/python3
"""What an operator meets around the running agent: SIGHUP applies a new
[smtp] limit and policy to new sessions and refuses a broken edit (file:line
in the log, old configuration kept); the log escapes what clients send and
never holds a secret or a message body; --check-config names file:line for
each kind of mistake and exits 78 (EX_CONFIG)."""

import base64
import os
import re
import signal
import subprocess
import time

from scenario import ALICE, BOB, main, sandbox
from smtp_protocol import RawSmtpCase

EX_CONFIG = 78
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
                      r"(error|warn|info|debug|trace) ")
# Every access token the simulator issues starts with this JWT-like header
# (tests/graphsim/simcore.py issue_access_token), every refresh token with
# "0.ARsim.": a leaked token, even cut short, shows one of them.
ACCESS_TOKEN_PREFIX = "eyJ0eXAiOiJKV1QiLCJzaW0iOiJncmFwaHNpbSJ9"
REFRESH_TOKEN_PREFIX = "0.ARsim."
LINK_SECRET = "sandbox-link-secret-0123456789"

POLICY_ALL = "[integration]\nenabled = true\nmode = all\n"
POLICY_BOB_ONLY = ("[integration]\nenabled = true\nmode = specific\n"
                   "[users]\nuser = %s\n" % BOB)


class OperatorCase(RawSmtpCase):

    def log(self):
        return self.box.agent_output()

    def write_config(self, extra):
        self.box.extra_config = extra
        with open(self.box.path("agent.ini"), "w") as f:
            f.write(self.box.agent_config_text())

    def write_policy(self, text):
        with open(self.box.path("policy.ini"), "w") as f:
            f.write(text)

    def sighup(self, outcome):
        """Sends SIGHUP; waits for one more log line containing outcome."""
        before = self.log().count(outcome)
        self.box.agent.send_signal(signal.SIGHUP)
        sandbox.wait_for(lambda: self.log().count(outcome) > before, 10,
                         "'%s' after SIGHUP" % outcome)
        [line] = [l for l in self.log().splitlines() if outcome in l][-1:]
        return line

    def rcpt_limit(self, client):
        """How many RCPTs client's session accepts (at most 10)."""
        self.assertEqual(client.command("MAIL FROM:<%s>" % BOB)[0], 250)
        for i in range(10):
            code, text = client.command("RCPT TO:<n%d@example.net>" % i)
            if code != 250:
                self.assertEqual(text, "452 4.5.3 Too many recipients")
                break
        else:
            i = 10
        self.assertEqual(client.command("RSET")[0], 250)
        return i


class Reload(OperatorCase):
    sandbox_options = {"extra_config": "[smtp]\nmax_recipients = 3\n"}

    def tearDown(self):
        # Each test starts from the configuration the class began with.
        if self.box.agent is not None:
            self.write_config("[smtp]\nmax_recipients = 3\n")
            self.write_policy(POLICY_ALL)
            self.sighup("agent reloaded")

    def test_sighup_applies_new_limits_and_policy_to_new_sessions(self):
        old = self.logged_in()
        self.assertEqual(self.rcpt_limit(old), 3)

        self.write_config("[smtp]\nmax_recipients = 2\nidle_timeout = 2\n")
        self.write_policy(POLICY_BOB_ONLY)
        applied = self.log().count("policy applied")
        self.sighup("agent reloaded")
        sandbox.wait_for(lambda: self.log().count("policy applied") > applied,
                         5, "the new policy")

        new = self.logged_in()
        self.assertEqual(self.rcpt_limit(new), 2)
        # A session opened before keeps the limits it started with.
        self.assertEqual(self.rcpt_limit(old), 3)
        # The new policy: Alice is no longer permitted, Bob is.
        code, text = new.command("MAIL FROM:<%s>" % ALICE)
        self.assertEqual(code, 550, text)
        self.assertIn("5.7.1 user_not_permitted", text)
        self.assertEqual(new.command("MAIL FROM:<%s>" % BOB)[0], 250)
        self.assertEqual(new.command("RSET")[0], 250)
        # The new idle timeout.
        idle = self.logged_in()
        started = time.monotonic()
        idle.sock.settimeout(10)
        self.assertEqual(idle.reply(),
                         (421, "421 4.4.2 Timeout, closing connection"))
        self.assertLess(time.monotonic() - started, 4.5)

    def test_broken_edit_is_refused_and_the_old_config_kept(self):
        self.write_config("[smtp]\nmax_recipients = 2\n")
        self.sighup("agent reloaded")
        self.write_config("[smtp]\nmax_recipients = 1\nmax_connections = lots\n")
        lineno = self.box.agent_config_text().splitlines().index(
            "max_connections = lots") + 1
        line = self.sighup("reload_failed")
        self.assertIn("%s:%d: max_connections must be a whole number"
                      % (self.box.path("agent.ini"), lineno), line)
        self.assertIn("keeping the running configuration", line)
        # One log line, its quotes escaped: the value is still one field.
        self.assertRegex(line, r'error="[^"]*\\x22lots\\x22[^"]*"')
        self.assertIsNone(self.box.agent.poll())
        # Neither the valid key before the bad one nor anything else of the
        # broken file applies: the running limit stays 2.
        self.assertEqual(self.rcpt_limit(self.logged_in()), 2)


class LogSafety(OperatorCase):
    # Every trace category too: the most the agent ever logs.
    sandbox_options = {"extra_config": "[agent]\ntrace = all\n"}

    def test_client_text_is_escaped_and_secrets_never_logged(self):
        marker = "BODY-MARKER-7f3a9c"
        evil_user = 'eve"\x1b[31m\r\n2026-01-01T00:00:00.000Z info forged\\'
        c = self.client()
        self.assertEqual(c.command("EHLO client.test")[0], 250)
        token = base64.b64encode(("\0%s\0%s" % (
            evil_user, sandbox.SERVICE_PASSWORD)).encode()).decode()
        code, text = c.command("AUTH PLAIN " + token)
        self.assertEqual(code, 535, text)
        # AUTH LOGIN sends the user name on its own line.
        self.assertEqual(c.command("AUTH LOGIN")[0], 334)
        self.assertEqual(c.command(base64.b64encode(
            evil_user.encode()).decode())[0], 334)
        self.assertEqual(c.command(base64.b64encode(
            sandbox.CLIENT_SECRET.encode()).decode())[0], 535)
        c.command("MAIL FROM:<a\x1b[2Jb\"c>")

        before = self.sent_count(ALICE)
        ok = self.logged_in()
        self.assertEqual(ok.command("MAIL FROM:<%s>" % ALICE)[0], 250)
        self.assertEqual(ok.command("RCPT TO:<logs@example.net>")[0], 250)
        self.assertEqual(ok.command("DATA")[0], 354)
        ok.send("From: %s\r\nTo: logs@example.net\r\nSubject: %s\r\n\r\n"
                "%s\r\npassword %s\r\nsecret %s\r\nlink %s\r\n.\r\n" % (
                    ALICE, marker, marker, sandbox.SERVICE_PASSWORD,
                    sandbox.CLIENT_SECRET, LINK_SECRET))
        self.assertEqual(ok.reply()[0], 250)
        self.wait_one_more(ALICE, before)
        time.sleep(0.5)

        with open(self.box.path("agent.log"), "rb") as f:
            raw = f.read()
        self.assertNotIn(b"\x1b", raw)
        self.assertNotIn(b"\r", raw)
        text = raw.decode("utf-8")
        for line in text.splitlines():
            # One line per event: nothing a client sent started a line.
            self.assertRegex(line, LOG_LINE)
        self.assertNotIn("info forged", re.sub(r'"[^"]*"', "", text))
        failed = [l for l in text.splitlines() if "smtp auth failed" in l]
        self.assertEqual(len(failed), 2, failed)
        for l in failed:
            self.assertIn(r'user="eve\x22\x1b[31m\x0d\x0a2026-01-01T00:00:00'
                          r'.000Z info forged\x5c"', l)
        refused = [l for l in text.splitlines() if "mail refused" in l]
        self.assertTrue(refused)
        self.assertIn(r'a\x1b[2Jb\x22c', refused[0])
        for secret in (sandbox.SERVICE_PASSWORD, sandbox.CLIENT_SECRET,
                       LINK_SECRET, marker, ACCESS_TOKEN_PREFIX,
                       REFRESH_TOKEN_PREFIX, "Bearer "):
            self.assertNotIn(secret, text)
        for secret in (sandbox.SERVICE_PASSWORD, sandbox.CLIENT_SECRET):
            self.assertNotIn(base64.b64encode(secret.encode()).decode()[:12],
                             text)


class CheckConfig(OperatorCase):

    def check(self, path):
        out = subprocess.run([self.box.agent_bin, "--check-config",
                              "--config", path], capture_output=True,
                             text=True, timeout=30)
        return out.returncode, out.stdout + out.stderr

    def broken(self, name, extra):
        """A copy of the sandbox's valid config with extra appended; returns
        its path and the line number of extra's last line."""
        text = self.box.agent_config_text().rstrip("\n") + "\n" + extra
        path = self.box.path(name)
        with open(path, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path, len(text.rstrip("\n").splitlines())

    def replaced(self, name, section, key, value):
        """A copy of the sandbox's valid config with key's line in [section]
        set to value; returns its path and that line's number."""
        lines = self.box.agent_config_text().splitlines()
        start = lines.index("[%s]" % section)
        at = next(i for i in range(start, len(lines))
                  if lines[i].startswith(key + " ="))
        lines[at] = "%s = %s" % (key, value)
        path = self.box.path(name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.addCleanup(os.unlink, path)
        return path, at + 1

    def start(self, path):
        """Starts the agent itself on path; it must stop at once."""
        out = subprocess.run([self.box.agent_bin, "--config", path],
                             capture_output=True, text=True, timeout=30)
        return out.returncode, out.stdout + out.stderr

    def test_the_sandbox_config_is_valid(self):
        self.assertEqual(self.check(self.box.path("agent.ini")),
                         (0, "%s: configuration is valid\n"
                          % self.box.path("agent.ini")))

    def test_each_mistake_names_file_and_line_and_exits_78(self):
        cases = [
            ("unknown key", "[smtp]\nmax_rcpts = 5\n",
             'unknown key "max_rcpts" in [smtp]'),
            ("non-numeric", "[smtp]\nmax_recipients = many\n",
             'max_recipients must be a whole number, not "many"'),
            ("negative", "[smtp]\nidle_timeout = -5\n",
             'idle_timeout must be a whole number, not "-5"'),
            ("over maximum", "[smtp]\nmax_recipients = 501\n",
             "max_recipients is 501, above its maximum of 500"),
            ("no connections", "[smtp]\nmax_connections = 0\n",
             "max_connections is 0, below its minimum of 1"),
            ("no recipients", "[smtp]\nmax_recipients = 0\n",
             "max_recipients is 0, below its minimum of 1"),
            ("no commands", "[smtp]\nmax_commands = 0\n",
             "max_commands is 0, below its minimum of 1"),
            ("zero idle", "[smtp]\nidle_timeout = 0\n",
             "idle_timeout is 0, below its minimum of 1"),
            ("zero data", "[smtp]\ndata_timeout = 0\n",
             "data_timeout is 0, below its minimum of 1"),
            ("zero size", "[smtp]\nmax_message_size = 0\n",
             "max_message_size is 0, below its minimum of 1"),
            ("no '='", "[smtp]\njust some words\n",
             "not a key = value line"),
            ("unknown section", "[smpt]\nmax_recipients = 5\n",
             "unknown section [smpt]"),
        ]
        for i, (what, extra, message) in enumerate(cases):
            with self.subTest(what):
                path, line = self.broken("broken-%d.ini" % i, extra)
                rc, out = self.check(path)
                self.assertEqual(rc, EX_CONFIG, out)
                self.assertEqual(out, "nextal-agent: %s:%d: %s\n"
                                 % (path, line, message))
        # 0 stays valid where it means "off" or "none".
        for i, extra in enumerate(("[smtp]\nauth_timeout = 0\n",
                                   "[delivery]\nmax_per_minute = 0\n",
                                   "[delivery]\ndedup_window = 0\n")):
            with self.subTest(extra):
                path, _ = self.broken("zero-ok-%d.ini" % i, extra)
                self.assertEqual(self.check(path)[0], 0)

    def test_each_bad_value_names_file_and_line_and_exits_78(self):
        listen = ("listen must be an IP address and port such as "
                  "127.0.0.1:2525 or [::1]:2525, not \"%s\" (host names are "
                  "not resolved)")
        url = "%s must be an http:// or https:// URL, not \"%s\""
        # The sandbox sets these keys already: a second line would be
        # refused as a key set twice, so the sandbox's own line changes.
        cases = [
            ("delivery", "max_in_flight_per_mailbox", "0",
             "max_in_flight_per_mailbox is 0, below its minimum of 1"),
            ("microsoft", "link_mode", "both",
             'link_mode must be "delegated" or "application", not "both"'),
            ("service", "password_hash", "plaintext",
             "password_hash is not a hash from nextal-agent --hash-password"),
            ("service", "password_hash", "pbkdf2-sha256$0$AAAA$AAAA",
             "password_hash is not a hash from nextal-agent --hash-password"),
            ("service", "username", "", "username must not be empty"),
            ("smtp", "listen", "localhost:2525", listen % "localhost:2525"),
            ("smtp", "listen", "127.0.0.1", listen % "127.0.0.1"),
            ("http", "listen", "localhost:8025", listen % "localhost:8025"),
            ("http", "listen", "::1:8025", listen % "::1:8025"),
            ("http", "public_url", "ftp://x/", url % ("public_url", "ftp://x/")),
            ("microsoft", "graph_base_url", "not a url",
             url % ("graph_base_url", "not a url")),
            ("microsoft", "login_base_url", "file:///etc/passwd",
             url % ("login_base_url", "file:///etc/passwd")),
            ("microsoft", "login_base_url", "",
             url % ("login_base_url", "")),
            ("smtp", "listen", "127.0.0.1:+2525", listen % "127.0.0.1:+2525"),
            ("smtp", "hostname", "",
             "hostname must be a domain name such as mail.example.com "
             "(letters, digits, '-' and '.'), not \"\""),
            ("smtp", "hostname", "agent sandbox",
             "hostname must be a domain name such as mail.example.com "
             "(letters, digits, '-' and '.'), not \"agent sandbox\""),
            ("microsoft", "tenant", "", "tenant must not be empty"),
            ("microsoft", "client_secret", "",
             "client_secret must not be empty"),
        ]
        for i, (section, key, value, message) in enumerate(cases):
            with self.subTest(key=key, value=value):
                path, line = self.replaced("bad-%d.ini" % i, section, key,
                                           value)
                expected = "nextal-agent: %s:%d: %s\n" % (path, line, message)
                self.assertEqual(self.check(path), (EX_CONFIG, expected))
                # Start-up loads the same way, so it refuses the same line
                # with the same words before it opens anything.
                self.assertEqual(self.start(path), (EX_CONFIG, expected))

    def test_a_key_before_any_section_is_named(self):
        path = self.box.path("no-section.ini")
        with open(path, "w") as f:
            f.write("stray = 1\n" + self.box.agent_config_text())
        self.addCleanup(os.unlink, path)
        self.assertEqual(self.check(path), (
            EX_CONFIG, "nextal-agent: %s:1: stray stands before any "
            "[section]; every key belongs to one\n" % path))

    def test_smtp_and_http_on_one_address_is_refused(self):
        smtp = next(l for l in self.box.agent_config_text().splitlines()
                    if l.startswith("listen = ")).split(" = ")[1]
        path, _ = self.replaced("same-listen.ini", "http", "listen", smtp)
        expected = ("nextal-agent: %s: [smtp] listen and [http] listen are "
                    "both %s; they need different ports\n" % (path, smtp))
        self.assertEqual(self.check(path), (EX_CONFIG, expected))
        self.assertEqual(self.start(path), (EX_CONFIG, expected))

    def test_a_key_set_twice_names_both_lines(self):
        text = self.box.agent_config_text().splitlines()
        hostname = text.index("hostname = agent.sandbox.test") + 1
        for i, (extra, first, message) in enumerate([
                ("[smtp]\nmax_recipients = 5\nmax_recipients = 6\n", None,
                 "max_recipients is set twice in [smtp] (first on line %d)"),
                # Also when the second one stands under a second [smtp].
                ("[smtp]\nhostname = other.test\n", hostname,
                 "hostname is set twice in [smtp] (first on line %d)"),
                # inih would read "  b" as more of max_recipients' value.
                ("[smtp]\nmax_recipients = 5\n  6\n", None,
                 "an indented line continues max_recipients from line %d; "
                 "write the value on one line")]):
            with self.subTest(extra):
                path, line = self.broken("twice-%d.ini" % i, extra)
                rc, out = self.check(path)
                self.assertEqual(rc, EX_CONFIG, out)
                self.assertEqual(out, "nextal-agent: %s:%d: %s\n" % (
                    path, line, message % (first or line - 1)))

    def test_valid_listen_and_urls_pass(self):
        for i, (section, key, value) in enumerate([
                ("smtp", "listen", "[::1]:0"),
                ("http", "listen", "0.0.0.0:0"),
                ("http", "public_url", "https://nextal-agent.contoso.example"),
                ("http", "public_url", "http://localhost:8025"),
                ("microsoft", "graph_base_url", "https://graph.microsoft.com"),
                ("microsoft", "login_base_url", "http://[::1]:9/")]):
            with self.subTest(value):
                path, _ = self.replaced("good-%d.ini" % i, section, key, value)
                self.assertEqual(self.check(path),
                                 (0, "%s: configuration is valid\n" % path))

    def test_plain_http_to_another_machine_warns_but_passes(self):
        path, line = self.replaced("plain-http.ini", "microsoft",
                                   "graph_base_url", "http://graph.example")
        rc, out = self.check(path)
        self.assertEqual(rc, 0, out)
        self.assertEqual(out.splitlines(), [
            "%s: configuration is valid" % path,
            "nextal-agent: warning: %s:%d: graph_base_url "
            "\"http://graph.example\" is plain http to another machine: what "
            "it carries can be read on the way (use https)" % (path, line)])

    def test_missing_file_is_named_and_exits_78(self):
        path = self.box.path("no-such.ini")
        rc, out = self.check(path)
        self.assertEqual(rc, EX_CONFIG, out)
        self.assertEqual(out, "nextal-agent: %s: cannot open: No such file or "
                         "directory\n" % path)


if __name__ == "__main__":
    main()
