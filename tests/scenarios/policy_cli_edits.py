#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""nextal-policy on its own, against a temporary configuration, database
and policy file: racing edits both land, comments survive, validate names
the bad line, unlink fails only that user's mail, and each change is
audited. Needs NEXTAL_POLICY (the binary)."""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import unittest

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
                    "[service]\npassword_hash = unused-by-the-cli\n"
                    "[microsoft]\ntenant = contoso.example\n"
                    "client_id = 11111111-2222\nclient_secret = s\n"
                    "login_base_url = https://login.example\n"
                    "[http]\npublic_url = https://agent.example\n")
        with open(self.policy, "w") as f:
            f.write(ORIGINAL)

    def tearDown(self):
        self.tmp.cleanup()

    def run_cli(self, *args, check=True, stdin=subprocess.DEVNULL):
        p = subprocess.run([POLICY, "--config", self.config, *args],
                           stdin=stdin, capture_output=True, text=True,
                           timeout=30)
        if check and p.returncode != 0:
            self.fail("%s exited %d: %s" % (args, p.returncode, p.stderr))
        return p

    def read_policy(self):
        with open(self.policy) as f:
            return f.read()

    def audit(self):
        return json.loads(self.run_cli("audit", "--json").stdout)

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

    def test_disable_needs_confirmation_off_a_terminal(self):
        p = self.run_cli("disable", check=False)
        self.assertEqual(p.returncode, 64)  # EX_USAGE
        self.assertIn("--yes", p.stderr)
        self.assertEqual(self.read_policy(), ORIGINAL)

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


if __name__ == "__main__":
    unittest.main(verbosity=2)
