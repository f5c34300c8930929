#!/usr/bin/python3
"""The key that encrypts refresh tokens: created owner-only on first start;
the agent refuses to start when the key file is readable by others or
missing while tokens are stored, and starts again once it is put right,
with the stored tokens still usable. A client certificate whose key does
not belong to it also stops the start, with the reason."""

import os
import shutil
import stat
import subprocess

from link_flow import LinkingTestCase, message
from scenario import ALICE, HERE, main

CERT_DATA = os.path.join(os.path.dirname(HERE), "unit", "data", "client_auth")


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

    def test_mismatched_client_certificate_refused(self):
        ini = self.box.path("agent.ini")
        with open(ini) as f:
            good = f.read()
        for name in ("cert.pem", "other-key.pem"):
            shutil.copy(os.path.join(CERT_DATA, name), self.box.path(name))
        self.box.stop_agent()
        try:
            with open(ini, "w") as f:
                f.write(good.replace("[microsoft]\n", "[microsoft]\n"
                                     "client_certificate = cert.pem\n"
                                     "client_key = other-key.pem\n"))
            status, output = self.start_fails()
        finally:
            with open(ini, "w") as f:
                f.write(good)
            self.box.start_agent()
        self.assertNotEqual(status, 0)
        self.assertIn("client_certificate_refused", output)
        self.assertIn("other-key.pem cannot sign for", output)


if __name__ == "__main__":
    main()
