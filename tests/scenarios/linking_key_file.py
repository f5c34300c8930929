#!/usr/bin/python3
"""The key that encrypts refresh tokens: created owner-only on first start;
the agent refuses to start when the key file is readable by others or
missing while tokens are stored, and starts again once it is put right,
with the stored tokens still usable."""

import os
import stat
import subprocess

from link_flow import LinkingTestCase, message
from scenario import ALICE, main


class LinkingKeyFile(LinkingTestCase):

    def key_path(self):
        return self.box.path("agent.db.key")

    def start_fails(self):
        """Runs the agent in the foreground; returns (status, output)."""
        out = subprocess.run(
            [self.box.agent_bin, "--config", self.box.path("agent.ini")],
            capture_output=True, text=True, cwd=self.box.dir, timeout=30)
        return out.returncode, out.stdout + out.stderr

    def test_key_file_rules(self):
        key = self.key_path()
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        self.assertEqual(os.path.getsize(key), 32)
        self.link_by_sign_in(ALICE)
        self.box.stop_agent()

        os.chmod(key, 0o644)
        status, output = self.start_fails()
        self.assertNotEqual(status, 0)
        self.assertIn("key_file_refused", output)
        self.assertIn("has mode 644: group or others may read it", output)
        os.chmod(key, 0o600)

        os.rename(key, key + ".away")
        status, output = self.start_fails()
        self.assertNotEqual(status, 0)
        self.assertIn("is missing but the database holds encrypted refresh "
                      "tokens", output)
        self.assertFalse(os.path.exists(key), "a new key was made")
        os.rename(key + ".away", key)

        self.box.start_agent()
        before = self.sent_count(ALICE)
        self.send(ALICE, ["x@example.net"], message(ALICE, "after-restart"))
        self.wait_one_more(ALICE, before)


if __name__ == "__main__":
    main()
