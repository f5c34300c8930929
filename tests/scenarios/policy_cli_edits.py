#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""nextal-policy on its own, against a temporary configuration, database
and policy file: racing edits both land, comments survive, validate names
the bad line (a miscased section at its header, a non-ASCII user with
the reason), unlink fails only that user's mail, an edit that changes
nothing says so and is not audited, disable says what it does before
doing it, drop --all-held fails every held message at once, held says
when there is none, and each change is audited with the administrator
behind sudo. Also what nextal-agent says about the same configuration
file: its exit statuses and [http] max_connections; and, against a
running agent in the sandbox, that status says whether the agent runs
(its pid), stopped cleanly, or stopped responding. Needs NEXTAL_POLICY
and NEXTAL_AGENT (the binaries)."""
import json
import os
import pty
import pwd
import re
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

import scenario  # the sandbox, for the tests against a running agent

POLICY = os.environ.get("NEXTAL_POLICY", "nextal-policy")

ORIGINAL = """\
# Nextal Office 365 integration policy
[integration]
enabled = true   ; the master switch
mode = specific          ; all | specific

[users]
# recruiting team
user = alice@contoso.example

# end of list
"""


class PolicyCli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        d = self.tmp.name
        self.policy = os.path.join(d, "policy.ini")
        self.db = os.path.join(d, "agent.db")
        self.config = os.path.join(d, "agent.ini")
        with open(self.config, "w") as f:
            f.write("[agent]\ndatabase = agent.db\npolicy_file = policy.ini\n"
                    "[service]\npassword_hash = pbkdf2-sha256$1$AAAAAAAAAAAAAAAAAAAAAA==$"
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
                    "[microsoft]\ntenant = contoso.example\n"
                    "client_id = 11111111-2222\nclient_secret = s\n"
                    "login_base_url = https://login.example\n"
                    "[http]\npublic_url = https://agent.example\n")
        with open(self.policy, "w") as f:
            f.write(ORIGINAL)

    def tearDown(self):
        self.tmp.cleanup()

    def run_cli(self, *args, check=True, stdin=subprocess.DEVNULL, env=None):
        # SUDO_USER only where a test sets it: the actor must not depend on
        # how the suite itself was started.
        full = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
        full.update(env or {})
        p = subprocess.run([POLICY, "--config", self.config, *args],
                           stdin=stdin, capture_output=True, text=True,
                           timeout=30, env=full)
        if check and p.returncode != 0:
            self.fail("%s exited %d: %s" % (args, p.returncode, p.stderr))
        return p

    def read_policy(self):
        with open(self.policy) as f:
            return f.read()

    def audit(self):
        return json.loads(self.run_cli("audit", "--json").stdout)

    def actions(self):
        return [a["action"] for a in self.audit()]

    def seed(self, users=(), messages=()):
        """Linked users with a token, and messages as (queue_id, sender,
        state); each message gets a spool file, whose path is returned."""
        self.run_cli("status")  # creates the database
        spool = {}
        db = sqlite3.connect(self.db)
        for who in users:
            db.execute("INSERT INTO users (address, state, refresh_token,"
                       " linked_at, updated_at) VALUES (?, 'linked', x'01',"
                       " 0, 0)", (who,))
        for queue_id, who, state in messages:
            spool[queue_id] = os.path.join(self.tmp.name, queue_id + ".eml")
            with open(spool[queue_id], "w") as f:
                f.write("Subject: %s\r\n\r\nbody\r\n" % queue_id)
            db.execute("INSERT INTO messages (queue_id, sender, recipients,"
                       " size, spool_path, state, next_attempt_at,"
                       " created_at, updated_at) VALUES (?, ?, '[]', 1,"
                       " ?, ?, 0, 0, 0)",
                       (queue_id, who, spool[queue_id], state))
        db.commit()
        db.close()
        return spool

    def messages(self):
        db = sqlite3.connect(self.db)
        rows = {r[0]: r[1:] for r in db.execute(
            "SELECT queue_id, state, error_code, error_text FROM messages")}
        db.close()
        return rows

    def linked(self):
        db = sqlite3.connect(self.db)
        n = db.execute("SELECT COUNT(*) FROM users WHERE state = 'linked'"
                       " AND refresh_token IS NOT NULL").fetchone()[0]
        db.close()
        return n

    def assert_disable_warning(self, text, linked, queued):
        """What disabling does, as the issue has it: Graph traffic stops,
        tokens are wiped and each user must link again, mail is held."""
        self.assertIn("stops all Graph traffic", text)
        self.assertIn("disconnects every linked user (%d now)" % linked, text)
        self.assertIn("tokens are wiped", text)
        self.assertIn("must link again", text)
        self.assertIn("holds queued mail (%d now)" % queued, text)

    def test_racing_edits_all_land_and_comments_survive(self):
        # Many CLI processes at once: the lock serialises them and none of
        # their additions is lost.
        names = ["user%02d@contoso.example" % i for i in range(16)]
        procs = [subprocess.Popen([POLICY, "--config", self.config, "allow",
                                   n], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
                 for n in names]
        for p in procs:
            self.assertEqual(p.wait(timeout=60), 0, p.stderr.read())
            p.stderr.close()
        listed = [u["address"] for u in
                  json.loads(self.run_cli("list", "--json").stdout)]
        self.assertEqual(sorted(listed),
                         sorted(names + ["alice@contoso.example"]))
        text = self.read_policy()
        for line in ("# Nextal Office 365 integration policy",
                     "enabled = true   ; the master switch",
                     "mode = specific          ; all | specific",
                     "# recruiting team", "# end of list"):
            self.assertIn(line + "\n", text)
        # New users follow the existing ones, before the closing comment.
        self.assertLess(text.index("user = alice@"), text.index("user = user"))
        self.assertLess(text.rindex("user = user"), text.index("# end of"))
        allowed = [a for a in self.audit() if a["action"] == "policy_allow"]
        self.assertEqual(len(allowed), 16)
        self.assertTrue(all(a["actor"] for a in allowed))

    def test_mode_and_switch_edit_values_in_place(self):
        self.run_cli("mode", "all")
        self.run_cli("disable", "--yes")
        text = self.read_policy()
        self.assertIn("enabled = false   ; the master switch\n", text)
        self.assertIn("mode = all          ; all | specific\n", text)
        status = json.loads(self.run_cli("status", "--json").stdout)
        self.assertFalse(status["enabled"])
        self.assertEqual(status["mode"], "all")

    def test_status_without_the_agent_does_not_blame_the_token(self):
        # No agent has ever run on this database, and no token can be had
        # (login.example): status says the first, and the active line does
        # not send anyone after the second.
        text = self.run_cli("status").stdout
        self.assertIn("agent:         not running (never started on this "
                      "database: no %s.heartbeat)\n" % self.db, text)
        active = text[text.index("active:"):text.index("agent applied:")]
        self.assertIn("no: the agent is not running, so whether it delivers "
                      "cannot be", active)
        self.assertNotIn("no token can be obtained", active)
        agent = json.loads(self.run_cli("status", "--json").stdout)["agent"]
        self.assertEqual((agent["state"], agent["running"], agent["pid"]),
                         ("unknown", False, None))

    def test_disable_needs_confirmation_off_a_terminal(self):
        p = self.run_cli("disable", check=False)
        self.assertEqual(p.returncode, 64)  # EX_USAGE
        self.assertIn("--yes", p.stderr)
        self.assert_disable_warning(p.stderr, 0, 0)
        self.assertEqual(self.read_policy(), ORIGINAL)

    def test_noop_edits_say_so_and_audit_nothing(self):
        p = self.run_cli("enable")
        self.assertEqual(p.stdout,
                         "The integration is already enabled; nothing "
                         "changed.\n")
        p = self.run_cli("mode", "specific")
        self.assertEqual(p.stdout, "Access mode is already specific users; "
                         "nothing changed.\n")
        self.assertEqual(self.read_policy(), ORIGINAL)
        self.assertEqual(self.actions(), [])

        self.run_cli("disable", "--yes")
        self.run_cli("mode", "all")
        p = self.run_cli("disable", "--yes")
        self.assertEqual(p.stdout, "The integration is already switched off; "
                         "nothing changed.\n")
        self.assertNotIn("Graph", p.stderr)  # nothing to warn about
        p = self.run_cli("mode", "all")
        self.assertIn("already all users; nothing changed", p.stdout)
        self.assertEqual(self.actions(), ["policy_disable", "policy_mode"])

        # "yes" already means true: the file keeps what a person wrote.
        with open(self.policy, "w") as f:
            f.write(ORIGINAL.replace("enabled = true", "enabled = Yes"))
        p = self.run_cli("enable")
        self.assertIn("already enabled; nothing changed", p.stdout)
        self.assertIn("enabled = Yes   ; the master switch\n",
                      self.read_policy())
        self.assertEqual(self.actions(), ["policy_disable", "policy_mode"])

    def test_disable_says_what_it_does_before_acting(self):
        self.seed(users=("alice@contoso.example", "bob@contoso.example"),
                  messages=(("q1", "alice@contoso.example", "queued"),))

        # The edit fails (its lock cannot be taken): the warning has been
        # given already, before the error, and nothing was done.
        lock = self.policy + ".lock"
        os.mkdir(lock)
        p = self.run_cli("disable", "--yes", check=False)
        self.assertEqual(p.returncode, 74, p.stderr)  # EX_IOERR
        self.assert_disable_warning(p.stderr, 2, 1)
        self.assertLess(p.stderr.index("stops all Graph traffic"),
                        p.stderr.index("cannot lock"))
        self.assertEqual(self.read_policy(), ORIGINAL)
        self.assertEqual(self.linked(), 2)
        os.rmdir(lock)

        # On a terminal the same warning comes with the prompt; "no"
        # changes nothing.
        master, slave = pty.openpty()
        try:
            os.write(master, b"no\n")
            p = self.run_cli("disable", check=False, stdin=slave)
        finally:
            os.close(slave)
            os.close(master)
        self.assertEqual(p.returncode, 75, p.stderr)  # EX_TEMPFAIL
        self.assert_disable_warning(p.stderr, 2, 1)
        self.assertLess(p.stderr.index("must link again"),
                        p.stderr.index('Type "yes"'))
        self.assertEqual(self.read_policy(), ORIGINAL)
        self.assertEqual(self.linked(), 2)

        # With --yes too, then it acts.
        p = self.run_cli("disable", "--yes")
        self.assert_disable_warning(p.stderr, 2, 1)
        self.assertIn("2 linked users were disconnected", p.stdout)
        self.assertEqual(self.linked(), 0)
        # status names who must link again, and why.
        status = json.loads(self.run_cli("status", "--json",
                                         check=False).stdout)
        self.assertEqual(len(status["relink"]), 2, status["relink"])
        self.assertEqual(status["needs_relink"], 2)
        for entry in status["relink"]:
            self.assertEqual(entry["reason"], "org_disabled")
            self.assertIn("  must link again: %s (org_disabled)"
                          % entry["address"],
                          self.run_cli("status", check=False).stdout)
        self.assertEqual(self.actions(),
                         ["policy_disable", "users_disconnected"])

    def test_audit_names_the_admin_behind_sudo(self):
        me = pwd.getpwuid(os.getuid()).pw_name
        self.run_cli("mode", "all", env={"SUDO_USER": "alice-admin"})
        self.run_cli("mode", "specific", env={"SUDO_USER": me})
        self.run_cli("allow", "bob@contoso.example")
        actors = [(a["action"], a["actor"]) for a in self.audit()]
        self.assertEqual(actors, [
            ("policy_mode", "%s (sudo by alice-admin)" % me),
            ("policy_mode", me), ("policy_allow", me)])
        self.assertIn("%s (sudo by alice-admin)" % me,
                      self.run_cli("audit").stdout)

    def test_held_mail_is_sent_when_allowed_or_failed_by_drop_all(self):
        # The texts say what the agent does: held mail goes out by itself
        # once its sender is allowed and linked again, or an administrator
        # fails it.
        for text in (self.run_cli("enable", "--help").stdout,
                     self.run_cli("disable", "--yes").stderr,
                     self.run_cli("enable").stdout):
            text = " ".join(text.split())
            self.assertNotIn("until released", text)
            self.assertIn("linked again", text)
            self.assertIn("drop --all-held --reason TEXT", text)

        spool = self.seed(messages=(
            ("h1", "alice@contoso.example", "held"),
            ("h2", "alice@contoso.example", "held"),
            ("h3", "bob@contoso.example", "held"),
            ("q1", "carol@contoso.example", "queued")))
        before = self.actions()

        p = self.run_cli("drop", "--all-held", "--reason", "offboarded",
                         check=False)
        self.assertEqual(p.returncode, 64, p.stderr)  # EX_USAGE: no --yes
        self.assertIn("Every held message (3 now) fails", p.stderr)
        self.assertEqual(self.messages()["h1"][0], "held")
        p = self.run_cli("drop", "--all-held", "--reason", "x", "h1",
                         check=False)
        self.assertEqual(p.returncode, 64)

        p = self.run_cli("drop", "--all-held", "--reason",
                         "tenant offboarded", "--yes")
        self.assertIn("3 held messages failed (dropped: tenant offboarded)",
                      p.stdout)
        self.assertEqual(self.messages(), {
            "h1": ("failed", "dropped", "tenant offboarded"),
            "h2": ("failed", "dropped", "tenant offboarded"),
            "h3": ("failed", "dropped", "tenant offboarded"),
            "q1": ("queued", None, None)})
        for queue_id in ("h1", "h2", "h3"):
            self.assertFalse(os.path.exists(spool[queue_id]), queue_id)
        self.assertTrue(os.path.exists(spool["q1"]))
        new = self.audit()[len(before):]
        self.assertEqual([a["action"] for a in new], ["mail_drop_held"])
        self.assertEqual(new[0]["detail"], "3 held messages -> failed "
                         "(dropped: tenant offboarded)")

        # Nothing held any more: nothing to do, nothing audited.
        p = self.run_cli("drop", "--all-held", "--reason", "again", "--yes")
        self.assertEqual(p.stdout, "No mail is held; nothing changed.\n")
        self.assertEqual(len(self.audit()), len(before) + 1)

    def test_validate_names_the_line_and_edits_refuse_broken_file(self):
        with open(self.policy, "a") as f:
            f.write("user = not-an-address\n")
        p = self.run_cli("validate", check=False)
        self.assertEqual(p.returncode, 65)  # EX_DATAERR
        self.assertIn("policy.ini:11:", p.stderr)
        self.assertIn("not-an-address", p.stderr)
        before = self.read_policy()
        p = self.run_cli("allow", "bob@contoso.example", check=False)
        self.assertEqual(p.returncode, 65)
        self.assertEqual(self.read_policy(), before)
        # validate FILE works without any configuration.
        good = os.path.join(self.tmp.name, "good.ini")
        with open(good, "w") as f:
            f.write(ORIGINAL)
        p = subprocess.run([POLICY, "--config", "/nonexistent", "validate",
                            good], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_invalid_address_changes_nothing(self):
        p = self.run_cli("allow", "bob@contoso.example", "bogus", check=False)
        self.assertEqual(p.returncode, 65)
        self.assertEqual(self.read_policy(), ORIGINAL)

    def test_non_ascii_address_is_refused_with_the_reason(self):
        # The SMTP listener has no SMTPUTF8 (553 5.6.7): such a user could
        # be listed but never send.
        p = self.run_cli("allow", "bob@contoso.example",
                         "j\u00fcrgen@contoso.example", check=False)
        self.assertEqual(p.returncode, 65)  # EX_DATAERR
        self.assertIn("j\u00fcrgen@contoso.example", p.stderr)
        self.assertIn("non-ASCII", p.stderr)
        self.assertIn("SMTPUTF8", p.stderr)
        self.assertEqual(self.read_policy(), ORIGINAL)
        # Written by hand, validate names the line and says why.
        with open(self.policy, "a") as f:
            f.write("user = j\u00fcrgen@contoso.example\n")
        p = self.run_cli("validate", check=False)
        self.assertEqual(p.returncode, 65)
        self.assertIn("policy.ini:11:", p.stderr)
        self.assertIn("SMTPUTF8", p.stderr)

    def test_miscased_section_names_its_own_line(self):
        with open(self.policy, "w") as f:
            f.write("[Integration]\nenabled = true\nmode = all\n")
        p = self.run_cli("validate", check=False)
        self.assertEqual(p.returncode, 65)
        self.assertIn("policy.ini:1: unknown section [Integration]", p.stderr)

    def test_held_says_when_there_is_none(self):
        p = self.run_cli("held")
        self.assertEqual(p.stdout, "No held or failed mail.\n")
        self.assertEqual(json.loads(self.run_cli("--json", "held").stdout), [])
        self.seed(messages=(("h1", "alice@contoso.example", "held"),))
        p = self.run_cli("held")
        self.assertIn("h1", p.stdout)
        self.assertNotIn("No held", p.stdout)

    def test_check_exit_codes(self):
        p = self.run_cli("check", "alice@contoso.example", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("consent_missing", p.stdout)
        db = sqlite3.connect(self.db)
        db.execute("UPDATE tenant SET consent_state='granted'")
        db.execute("INSERT INTO users (address, state, linked_at, updated_at)"
                   " VALUES ('alice@contoso.example', 'linked', 0, 0)")
        db.commit()
        db.close()
        self.run_cli("check", "Alice@Contoso.Example")
        p = self.run_cli("--json", "check", "carol@contoso.example",
                         check=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(json.loads(p.stdout)["smtp"]["code"],
                         "user_not_permitted")

    def test_unlink_fails_only_that_users_mail(self):
        self.run_cli("status")  # creates the database
        db = sqlite3.connect(self.db)
        for who in ("alice@contoso.example", "bob@contoso.example"):
            db.execute("INSERT INTO users (address, state, refresh_token,"
                       " linked_at, updated_at) VALUES (?, 'linked', x'01',"
                       " 0, 0)", (who,))
        for i, (who, state) in enumerate([
                ("alice@contoso.example", "queued"),
                ("alice@contoso.example", "held"),
                ("bob@contoso.example", "queued")]):
            db.execute("INSERT INTO messages (queue_id, sender, recipients,"
                       " size, spool_path, state, next_attempt_at,"
                       " created_at, updated_at) VALUES (?, ?, '[]', 1,"
                       " '/x', ?, 0, 0, 0)", ("q%d" % i, who, state))
        db.commit()
        self.run_cli("unlink", "ALICE@contoso.example")
        rows = dict(db.execute("SELECT queue_id, state FROM messages"))
        self.assertEqual(rows, {"q0": "failed", "q1": "failed",
                                "q2": "queued"})
        users = [r[0] for r in db.execute("SELECT address FROM users")]
        self.assertEqual(users, ["bob@contoso.example"])
        code = db.execute("SELECT error_code FROM messages WHERE"
                          " queue_id='q0'").fetchone()[0]
        self.assertEqual(code, "user_unlinked")
        db.close()
        unlinks = [a for a in self.audit() if a["action"] == "unlink"]
        self.assertEqual(len(unlinks), 1)
        self.assertIn("alice@contoso.example", unlinks[0]["detail"])
        p = self.run_cli("unlink", "alice@contoso.example", check=False)
        self.assertEqual(p.returncode, 67)  # EX_NOUSER

    def test_consent_link(self):
        url = self.run_cli("consent-link").stdout.strip()
        self.assertTrue(url.startswith(
            "https://login.example/contoso.example/v2.0/adminconsent?"
            "client_id=11111111-2222&scope=https%3A%2F%2Fgraph.microsoft.com"
            "%2F.default&redirect_uri=https%3A%2F%2Fagent.example%2Foauth"
            "%2Fconsent&state="), url)
        self.assertNotEqual(url, self.run_cli("consent-link").stdout.strip())

    COMMANDS = ("status", "enable", "disable", "mode", "allow", "remove",
                "list", "check", "validate", "unlink", "audit",
                "consent-link", "held", "retry", "drop", "link-url", "link")

    def test_unexpected_arguments_are_refused_and_named(self):
        # Each line: a command with one argument too many, which must be
        # refused with EX_USAGE, naming it, before anything changes.
        self.seed(users=["alice@contoso.example"])
        too_many = [
            ("status", "extra"), ("enable", "extra"), ("list", "extra"),
            ("disable", "extra", "--yes"), ("disable", "--yes", "extra"),
            ("mode", "all", "extra"), ("check", "a@contoso.example", "extra"),
            ("validate", self.policy, "extra"), ("audit", "extra"),
            ("unlink", "alice@contoso.example", "extra"),
            ("consent-link", "extra"), ("held", "extra"),
            ("retry", "q1", "extra"), ("link-url", "a@contoso.example",
                                       "extra"),
            ("link", "a@contoso.example", "extra"),
            ("drop", "--reason", "r", "q1", "extra"),
            ("drop", "--all-held", "--reason", "r", "extra"),
            ("audit", "--since", "1h", "extra"),
        ]
        before = self.read_policy()
        for args in too_many:
            p = self.run_cli(*args, check=False)
            self.assertEqual(p.returncode, 64, (args, p.stdout, p.stderr))
            self.assertIn('unexpected "extra"', p.stderr, args)
            self.assertNotIn("confirm with --yes", p.stderr, args)
        self.assertEqual(self.read_policy(), before)
        self.assertEqual(self.linked(), 1)
        self.assertNotIn("policy_disable", self.actions())
        # An option a command does not take is named too.
        p = self.run_cli("enable", "--yes", check=False)
        self.assertEqual(p.returncode, 64)
        self.assertIn("enable does not take --yes", p.stderr)
        # A mode that is not one says so, not that the count is wrong.
        p = self.run_cli("mode", "ALL", check=False)
        self.assertEqual(p.returncode, 64)
        self.assertIn('mode is all or specific (in lower case), not "ALL"',
                      p.stderr)
        self.assertEqual(self.read_policy(), before)

    def test_options_may_follow_the_arguments(self):
        self.seed(users=["alice@contoso.example"])
        p = self.run_cli("disable", "--yes")
        self.assertIn("switched off", p.stdout)
        self.assertIn("enabled = false", self.read_policy())
        self.run_cli("enable")
        full = json.loads(self.run_cli("check", "alice@contoso.example",
                                       "--json", check=False).stdout)
        self.assertEqual(set(full), {"smtp", "caldav", "link"})
        self.assertEqual(json.loads(self.run_cli(
            "validate", self.policy, "--json").stdout)["valid"], True)
        # "--" ends the options.
        p = self.run_cli("check", "--", "--json", check=False)
        self.assertNotIn('"smtp"', p.stdout)

    def test_every_subcommand_has_help(self):
        for name in self.COMMANDS:
            p = self.run_cli(name, "--help", check=False)
            self.assertEqual(p.returncode, 0, (name, p.stderr))
            self.assertTrue(p.stdout.startswith(
                "usage: nextal-policy [--config FILE] %s " % name), p.stdout)
            self.assertGreater(len(p.stdout.splitlines()), 2, name)
        # --help after an argument still helps and changes nothing.
        p = self.run_cli("allow", "bob@contoso.example", "--help")
        self.assertIn("usage: nextal-policy", p.stdout)
        self.assertNotIn("bob@contoso.example", self.read_policy())

    def test_json_outputs_parse_and_validate_missing_file(self):
        full = json.loads(self.run_cli("validate", "--json").stdout)
        self.assertEqual((full["file"], full["valid"]), (self.policy, True))
        self.assertIsNone(full.get("error"))
        with open(self.policy, "a") as f:
            f.write("mode = sometimes\n")
        p = self.run_cli("validate", "--json", check=False)
        self.assertEqual(p.returncode, 65)
        full = json.loads(p.stdout)
        self.assertFalse(full["valid"])
        self.assertIn("policy.ini:11:", full["error"])
        url = json.loads(self.run_cli("consent-link", "--json").stdout)["url"]
        self.assertTrue(url.startswith("https://login.example/"), url)
        p = self.run_cli("validate", "/nonexistent", check=False)
        self.assertEqual(p.returncode, 66, p.stderr)  # EX_NOINPUT
        self.assertIn("/nonexistent", p.stderr)
        p = self.run_cli("validate", "/nonexistent", "--json", check=False)
        self.assertEqual(p.returncode, 66)
        self.assertFalse(json.loads(p.stdout)["valid"])

    def test_status_with_a_broken_file_and_no_agent(self):
        with open(self.policy, "a") as f:
            f.write("user = not-an-address\n")
        text = self.run_cli("status").stdout
        self.assertRegex(text, r"(?m)^policy file: +INVALID: .*policy\.ini:11: ")
        self.assertIn("the file is invalid: an agent starting now has no "
                      "valid\n               policy and refuses every request "
                      "(no_policy)\n", text)
        self.assertNotIn("keeps the last valid policy", text)
        full = json.loads(self.run_cli("status", "--json").stdout)
        self.assertEqual((full["enabled"], full["mode"], full["policy_source"],
                          full["file_valid"]), (None, None, "none", False))
        self.assertIn("policy.ini:11:", full["file_error"])
        p = self.run_cli("check", "alice@contoso.example", check=False)
        self.assertEqual(p.returncode, 65)
        self.assertIn("nextal-policy status says which", p.stderr)

    def test_audit_since(self):
        self.run_cli("allow", "bob@contoso.example")
        # Entries older than an hour, which --since must leave out.
        db = sqlite3.connect(self.db)
        old = int(time.time() * 1000) - 3 * 3600 * 1000
        db.execute("INSERT INTO audit (at, actor, action, detail) VALUES "
                   "(?, 'root', 'policy_mode', 'mode = all')", (old,))
        db.execute("INSERT INTO audit (at, actor, action, detail) VALUES "
                   "(?, 'root', 'policy_enable', 'enabled = true')",
                   (86400 * 1000,))  # 1970-01-02
        db.commit()
        db.close()

        def since(value):
            out = self.run_cli("audit", "--json", "--since", value).stdout
            return sorted(a["action"] for a in json.loads(out))

        self.assertEqual(since("1970-01-01"),
                         ["policy_allow", "policy_enable", "policy_mode"])
        self.assertEqual(since("1970-01-03"), ["policy_allow", "policy_mode"])
        self.assertEqual(since("1h"), ["policy_allow"])
        self.assertEqual(since("4h"), ["policy_allow", "policy_mode"])
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S",
                              time.gmtime(time.time() - 2 * 3600))
        self.assertEqual(since(stamp), ["policy_allow"])
        # The form audit prints itself, with its "Z", is taken back.
        printed = self.run_cli("audit").stdout.splitlines()[-1].split()[0]
        self.assertTrue(printed.endswith("Z"), printed)
        self.assertIn("policy_allow", since(printed))
        self.assertEqual(since(stamp + "Z"), ["policy_allow"])
        p = self.run_cli("audit", "--since", "1h")  # text form too
        self.assertIn("bob@contoso.example", p.stdout)
        self.assertNotIn("mode = all", p.stdout)
        for bad in ("yesterday", "1w", "-1h", "2026-13-40", "",
                    "2026-12-04T07:00:00ZZ"):
            p = self.run_cli("audit", "--since", bad, check=False)
            self.assertEqual(p.returncode, 64, bad)
            self.assertIn("--since takes", p.stderr)


class AgentStatusHeartbeat(scenario.AgentTestCase):
    """status against the real agent, which records its pid at start, a
    heartbeat every 30 s and a clean stop in <database>.heartbeat."""

    def status(self):
        text = self.box.policy_cli("status").stdout
        full = json.loads(self.box.policy_cli("status", "--json").stdout)
        return text, full["agent"], full["active"]

    def active_line(self, text):
        return text[text.index("active:"):text.index("agent applied:")]

    def age_heartbeat(self, seconds):
        """Makes the last beat look `seconds` old, as after a crash or a
        hung loop."""
        path = self.box.path("agent.db.heartbeat")
        with open(path) as f:
            text = f.read()
        old = int(time.time() * 1000) - seconds * 1000
        with open(path, "w") as f:
            f.write(re.sub(r"(?m)^seen_at=\d+$", "seen_at=%d" % old, text))

    def assert_running(self, pid):
        text, agent, _ = self.status()
        self.assertRegex(text, r"(?m)^agent: +running \(pid %d, up \d+ s, "
                         r"last seen \d+ s ago\)$" % pid)
        self.assertEqual((agent["state"], agent["running"], agent["pid"]),
                         ("running", True, pid))
        self.assertIsNone(agent["stopped_at"])

    def test_status_follows_the_agent_through_stop_restart_and_crash(self):
        first = self.box.agent.pid
        self.assert_running(first)

        # A clean stop is on record; the active line says what cannot be
        # checked rather than blaming the token.
        self.box.stop_agent()
        text, agent, active = self.status()
        self.assertRegex(text, r"(?m)^agent: +not running \(stopped cleanly "
                         r"at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)$")
        self.assertIn("active:        no: the agent is not running",
                      self.active_line(text))
        self.assertEqual((agent["state"], agent["running"], agent["pid"]),
                         ("stopped", False, first))
        self.assertIsNotNone(agent["stopped_at"])
        self.assertFalse(active)

        self.box.start_agent()
        second = self.box.agent.pid
        self.assert_running(second)

        # Beats gone stale: kill(pid, 0) tells a hung agent from a dead one.
        self.age_heartbeat(300)
        text, agent, _ = self.status()
        self.assertRegex(text, r"(?m)^agent: +not responding \(last seen 5 "
                         r"min ago; pid %d alive but silent\)$" % second)
        self.assertEqual((agent["state"], agent["pid_alive"]),
                         ("not_responding", True))
        self.box.stop_agent(signal.SIGKILL)
        self.age_heartbeat(300)
        text, agent, active = self.status()
        self.assertRegex(text, r"(?m)^agent: +not responding \(last seen 5 "
                         r"min ago; pid %d not alive\)$" % second)
        self.assertIn("active:        no: the agent is not responding",
                      self.active_line(text))
        self.assertEqual((agent["state"], agent["pid_alive"], agent["pid"]),
                         ("not_responding", False, second))
        self.assertFalse(active)

        self.box.start_agent()  # tearDownClass stops it, and wants a 0
        self.assert_running(self.box.agent.pid)


AGENT = os.environ.get("NEXTAL_AGENT", "nextal-agent")


class AgentCommandLine(unittest.TestCase):
    """What the daemon says about the configuration the CLI shares."""

    setUp = PolicyCli.setUp
    tearDown = PolicyCli.tearDown

    def run_agent(self, *args, stdin=""):
        return subprocess.run([AGENT, *args], input=stdin,
                              capture_output=True, text=True, timeout=30)

    def test_help_lists_every_exit_status(self):
        text = self.run_agent("--help").stdout
        for status in ("0", "64", "65", "69", "70", "78"):
            self.assertRegex(text, r"\n +%s  " % status)
        p = self.run_agent("--hash-password", stdin="")
        self.assertEqual(p.returncode, 65)  # EX_DATAERR, listed above

    def test_hash_password_on_a_terminal_does_not_echo(self):
        """An administrator types the service password at a prompt: it
        must not appear on the screen, and what is printed is a salted
        hash (two runs, two different hashes)."""
        hashes = []
        for _ in range(2):
            pid, fd = pty.fork()
            if pid == 0:
                os.execv(AGENT, [AGENT, "--hash-password"])
            screen = b""
            deadline = time.monotonic() + 20
            while b"Password: " not in screen and time.monotonic() < deadline:
                if select.select([fd], [], [], 1)[0]:
                    screen += os.read(fd, 1024)
            os.write(fd, b"typed-secret\n")
            try:
                while time.monotonic() < deadline:
                    if not select.select([fd], [], [], 1)[0]:
                        continue
                    chunk = os.read(fd, 1024)
                    if not chunk:
                        break
                    screen += chunk
            except OSError:  # the child closed the terminal
                pass
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            os.close(fd)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0, screen)
            self.assertNotIn(b"typed-secret", screen)
            found = re.search(rb"pbkdf2-sha256\$\S+", screen)
            self.assertIsNotNone(found, screen)
            hashes.append(found.group(0))
        self.assertNotEqual(hashes[0], hashes[1])
        # A password longer than the agent reads is refused, not cut.
        p = self.run_agent("--hash-password", stdin="a" * 1100 + "\n")
        self.assertEqual(p.returncode, 65)
        self.assertIn("longer than", p.stderr)

    def test_http_max_connections_is_checked(self):
        with open(self.config) as f:
            base = f.read()
        for value, status in (("0", 78), ("16", 0), ("100001", 78)):
            with open(self.config, "w") as f:
                f.write(base + "max_connections = %s\n" % value)  # [http]
            p = self.run_agent("--config", self.config, "--check-config")
            self.assertEqual(p.returncode, status, p.stderr)
        p = self.run_agent("--config", self.config, "--check-config")
        self.assertIn("agent.ini:13: max_connections is 100001, above its "
                      "maximum of 100000", p.stderr)
        with open(self.config, "w") as f:
            f.write(base + "max_connections = 0\n")
        p = self.run_agent("--config", self.config, "--check-config")
        self.assertIn("agent.ini:13: max_connections is 0, below its "
                      "minimum of 1", p.stderr)

    def test_http_timeouts_are_checked(self):
        with open(self.config) as f:
            base = f.read()
        for key in ("request_timeout", "idle_timeout"):
            for value, status, why in (
                    ("0", 78, "%s is 0, below its minimum of 1" % key),
                    ("45", 0, None),
                    ("3601", 78,
                     "%s is 3601, above its maximum of 3600" % key),
                    ("soon", 78, key)):
                with open(self.config, "w") as f:
                    f.write(base + "%s = %s\n" % (key, value))  # [http]
                p = self.run_agent("--config", self.config, "--check-config")
                self.assertEqual(p.returncode, status, (key, value, p.stderr))
                if why:
                    self.assertIn("agent.ini:13: " + why, p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
