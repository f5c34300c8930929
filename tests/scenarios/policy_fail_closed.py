#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The policy fails closed, as a client and an administrator see it:
connections opened before a real switch-off (nextal-policy disable) are
refused on their next command (an SMTP session at MAIL, a transaction in
progress at DATA, a CalDAV keep-alive connection with 403 and the DAV
error body); an agent started with a broken policy file refuses
everything with no_policy, nextal-policy status says so, and fixing the
file is applied within a second; a broken hand edit while the agent runs
is logged with its file and line, the last valid policy stays in force,
and status shows that policy rather than the broken file."""

import base64
import http.client
import json
import os
import re
import smtplib
import time
import xml.etree.ElementTree as ET

from scenario import ALICE, BOB, CAROL, AgentTestCase, main, sandbox
from sandbox import wait_for

APPLY_S = 1.0  # the agent applies a policy edit within a second
SLACK_S = 0.5  # the measuring loop's own delays

# The DAV error body of a policy refusal (gateway/caldav.c,
# caldav_error_tagged).
DAV_ERROR = "{DAV:}error"
DAV_NEED_PRIVILEGES = "{DAV:}need-privileges"
NEXTAL_POLICY_REFUSED = "{https://nextal.example/ns}policy-refused"
DAV_MULTISTATUS = "{DAV:}multistatus"

VALID = ("# Nextal Office 365 integration policy (sandbox)\n"
         "[integration]\nenabled = true\nmode = all\n")
BROKEN = ("# Nextal Office 365 integration policy (sandbox)\n"
          "[integration]\nenabled = maybe\nmode = all\n")


def basic_auth():
    cred = "%s:%s" % (sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
    return "Basic " + base64.b64encode(cred.encode()).decode()


class FailClosed(AgentTestCase):

    # ---- clients ----

    def mail_from_answer(self, sender=ALICE):
        """The reply to MAIL FROM on a fresh session (RSET follows)."""
        with smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=15) as c:
            c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
            code, text = c.mail(sender)
            c.rset()
            return code, text.decode()

    def wait_mail_refused(self, code_name, timeout=3 * APPLY_S):
        prefix = "5.7.1 %s: " % code_name

        def refused():
            code, text = self.mail_from_answer()
            return code == 550 and text.startswith(prefix)
        wait_for(refused, timeout, "MAIL refused with %s" % code_name)

    def propfind(self, conn, address=CAROL):
        """PROPFIND of address's calendar on conn: (status, type, body)."""
        conn.request("PROPFIND", "/dav/calendars/%s/default/" % address,
                     headers={"Authorization": basic_auth(), "Depth": "0"})
        return self.propfind_response(conn)

    @staticmethod
    def propfind_response(conn):
        r = conn.getresponse()
        return (r.status, r.getheader("Content-Type", ""),
                r.read().decode())

    def caldav_answer(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.box.http_port,
                                          timeout=15)
        try:
            return self.propfind(conn)
        finally:
            conn.close()

    def assert_dav_refused(self, answer, code_name):
        status, ctype, body = answer
        self.assertEqual(status, 403, body)
        self.assertTrue(ctype.startswith("application/xml"), ctype)
        root = ET.fromstring(body.encode())
        self.assertEqual(root.tag, DAV_ERROR, body)
        self.assertEqual(list(root)[0].tag, DAV_NEED_PRIVILEGES, body)
        refused = root.find(NEXTAL_POLICY_REFUSED)
        self.assertIsNotNone(refused, body)
        self.assertTrue((refused.text or "").startswith(code_name + ": "),
                        body)

    def assert_dav_allowed(self, answer):
        status, _, body = answer
        self.assertEqual(status, 207, body)
        self.assertEqual(ET.fromstring(body.encode()).tag, DAV_MULTISTATUS)

    # ---- the administrator ----

    def write_policy(self, text):
        """Replaces the file the way an editor does: write, then rename."""
        path = self.box.path("policy.ini")
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.rename(path + ".tmp", path)

    def status(self):
        text = self.box.policy_cli("status").stdout
        full = json.loads(self.box.policy_cli("status", "--json").stdout)
        return text, full

    def restore(self):
        """Back to the sandbox's start: valid file, switch on, all linked."""
        self.write_policy(VALID)
        wait_for(lambda: self.status()[1]["agent"]["digest"] is not None
                 and self.status()[1]["file_valid"], 3 * APPLY_S,
                 "the valid policy applied")
        for user in (ALICE, BOB, CAROL):
            self.box.link(user)
        wait_for(lambda: self.mail_from_answer()[0] == 250, 3 * APPLY_S,
                 "alice allowed again")

    def messages(self):
        return self.db().execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    # ---- open connections after a real switch-off ----

    def test_open_smtp_sessions_are_refused_after_disable(self):
        self.addCleanup(self.restore)
        idle = self.smtp()  # authenticated, no transaction yet
        busy = self.smtp()
        self.assertEqual(busy.mail(ALICE)[0], 250)
        self.assertEqual(busy.rcpt("someone@example.net")[0], 250)
        before = self.messages()

        self.box.policy_cli("disable", "--yes")
        self.wait_mail_refused("org_disabled")

        code, text = idle.mail(ALICE)
        self.assertEqual(code, 550, text)
        self.assertTrue(text.startswith(b"5.7.1 org_disabled: "), text)
        code, text = busy.docmd("DATA")
        self.assertEqual(code, 550, text)
        self.assertTrue(text.startswith(b"5.7.1 org_disabled: "), text)
        self.assertEqual(self.messages(), before, "a refused DATA queued mail")

    def test_open_caldav_connection_is_refused_after_disable(self):
        self.addCleanup(self.restore)
        conn = http.client.HTTPConnection("127.0.0.1", self.box.http_port,
                                          timeout=15)
        self.addCleanup(conn.close)
        self.assert_dav_allowed(self.propfind(conn))
        sock = conn.sock
        self.assertIsNotNone(sock, "the agent closed a keep-alive connection")

        self.box.policy_cli("disable", "--yes")
        self.wait_mail_refused("org_disabled")

        conn.request("PROPFIND", "/dav/calendars/%s/default/" % CAROL,
                     headers={"Authorization": basic_auth(), "Depth": "0"})
        # The request went out on the connection opened before.
        self.assertIs(conn.sock, sock)
        self.assert_dav_refused(self.propfind_response(conn), "org_disabled")

    # ---- a broken file ----

    def test_broken_file_at_start_refuses_everything_until_fixed(self):
        self.addCleanup(self.restore)
        self.box.stop_agent()
        self.write_policy(BROKEN)
        self.box.start_agent()

        code, text = self.mail_from_answer()
        self.assertEqual(code, 550, text)
        self.assertTrue(text.startswith("5.7.1 no_policy: "), text)
        self.assert_dav_refused(self.caldav_answer(), "no_policy")
        self.assertRegex(
            self.box.agent_output(),
            r'policy load_rejected error="[^"]*policy\.ini:3: [^"]*" '
            r'keeping=none_refusing_all')

        # status names what the agent does, not only the file.
        text, full = self.status()
        self.assertRegex(text, r"(?m)^policy file: +INVALID: .*policy\.ini:3: ")
        self.assertIn("agent applied: NONE: the agent has no valid policy, so "
                      "it refuses every\n               request (no_policy) "
                      "until the file is fixed", text)
        self.assertNotIn("keeps the last valid policy", text)
        self.assertIn("active:        no: the agent has no valid policy", text)
        self.assertIsNone(full["enabled"])
        self.assertEqual((full["policy_source"], full["file_valid"],
                          full["active"]), ("none", False, False))
        self.assertIsNone(full["agent"]["digest"])
        self.assertIn("policy.ini:3:", full["agent"]["load_error"])

        # Fixed: applied within a second.
        self.write_policy(VALID)
        fixed = time.monotonic()
        took = None
        while time.monotonic() - fixed < 5:
            if self.mail_from_answer()[0] == 250:
                took = time.monotonic() - fixed
                break
            time.sleep(0.05)
        self.assertIsNotNone(took, "still refused 5 s after the fix")
        self.assertLessEqual(took, APPLY_S + SLACK_S,
                             "the fix took %.2f s to apply" % took)
        self.assert_dav_allowed(self.caldav_answer())
        text, full = self.status()
        self.assertNotIn("INVALID", text)
        self.assertEqual((full["enabled"], full["policy_source"]),
                         (True, "agent"))

    def test_broken_hand_edit_is_logged_and_last_policy_kept(self):
        self.addCleanup(self.restore)
        self.box.policy_cli("mode", "specific")
        self.box.policy_cli("allow", ALICE)
        wait_for(lambda: self.mail_from_answer(BOB)[0] == 550, 3 * APPLY_S,
                 "mode specific applied")
        with open(self.box.path("policy.ini")) as f:
            good = f.read()
        lines = good.splitlines(keepends=True)
        bad_line = next(i for i, l in enumerate(lines)
                        if l.startswith("mode")) + 1
        lines[bad_line - 1] = "mode = sometimes\n"
        logged = len(self.box.agent_output())
        self.write_policy("".join(lines))

        pattern = (r'policy load_rejected error="[^"]*policy\.ini:%d: '
                   r'[^"]*" keeping=last_valid' % bad_line)
        wait_for(lambda: re.search(pattern, self.box.agent_output()[logged:]),
                 3 * APPLY_S, "the rejection logged")
        # The last valid policy (specific, alice listed) stays in force.
        self.assertEqual(self.mail_from_answer(ALICE)[0], 250)
        code, text = self.mail_from_answer(BOB)
        self.assertEqual(code, 550, text)
        self.assertTrue(text.startswith("5.7.1 user_not_permitted: "), text)

        text, full = self.status()
        self.assertIn("integration:   enabled\nmode:          specific users\n"
                      "permitted:     1 listed\n", text)
        self.assertRegex(text, r"(?m)^policy file: +INVALID: .*policy\.ini:%d: "
                         % bad_line)
        self.assertIn("the file is invalid: the agent keeps the last valid "
                      "policy", text)
        self.assertEqual((full["enabled"], full["mode"], full["permitted"]),
                         (True, "specific", 1))
        self.assertEqual((full["policy_source"], full["file_valid"]),
                         ("agent", False))
        self.assertIsNotNone(full["agent"]["applied_at"])


if __name__ == "__main__":
    main()
