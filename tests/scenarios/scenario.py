"""Shared set-up for the black-box scenarios: a sandbox per test class,
helpers to submit mail with Python's smtplib and to read what the
simulator's Graph received."""

import os
import smtplib
import sqlite3
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "sandbox"))

import sandbox  # noqa: E402

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
CAROL = "carol@contoso.example"
DAVE = "dave@contoso.example"


class AgentTestCase(unittest.TestCase):
    """Starts one sandbox for the class; tests share it."""

    sandbox_options = {}

    @classmethod
    def setUpClass(cls):
        cls.box = sandbox.Sandbox(**cls.sandbox_options)
        try:
            cls.box.start()
        except Exception:
            cls.dump_logs()
            cls.box.close()
            raise

    @classmethod
    def tearDownClass(cls):
        rc = cls.box.stop_agent() if cls.box.agent else 0
        cls.box.close()
        # A clean stop is part of every scenario: SIGTERM must exit 0, and
        # under ASan a leak makes the exit status non-zero.
        if rc not in (0, None):
            raise AssertionError("agent exited with %s on SIGTERM" % rc)

    @classmethod
    def dump_logs(cls):
        try:
            sys.stderr.write("---- agent.log ----\n" + cls.box.agent_output())
        except OSError:
            pass

    def run(self, result=None):
        result = super().run(result)
        if result is not None and (result.failures or result.errors):
            self.dump_logs()
        return result

    # ---- SMTP ----

    def smtp(self, login=True):
        client = smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=30)
        client.ehlo("scenario.test")
        if login:
            client.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
        self.addCleanup(self.close_quietly, client)
        return client

    @staticmethod
    def close_quietly(client):
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            pass

    def send(self, sender, rcpts, data):
        with smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=30) as c:
            c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
            c.sendmail(sender, rcpts, data)

    # ---- what Graph got ----

    def sent_count(self, address):
        return len(self.box.sent(address))

    def wait_one_more(self, address, before, timeout=30):
        return self.box.wait_sent(address, before + 1, timeout)[before:]

    def db(self):
        conn = sqlite3.connect(self.box.path("agent.db"), timeout=10)
        self.addCleanup(conn.close)
        return conn


def main():
    unittest.main(verbosity=2)
