#!/usr/bin/python3
"""The policy decision as clients see it, over the whole matrix: switch
on/off x mode all/specific x user listed or not x linked or not, for an
SMTP transaction (MAIL FROM), a CalDAV request (PROPFIND on the user's
calendar) and a link attempt (nextal-policy link, application mode).
Also: a CLI edit reaches the running agent within a second, and a broken
hand edit keeps the last valid policy."""

import base64
import itertools
import os
import smtplib
import time
import urllib.error
import urllib.request

from scenario import CAROL, AgentTestCase, main, sandbox
from sandbox import wait_for

EX_NOPERM = 77


def expected(enabled, mode, listed, linked):
    """The reason code the policy must give, per request kind."""
    if not enabled:
        return {"smtp": "org_disabled", "caldav": "org_disabled", "link": "org_disabled"}
    if mode == "specific" and not listed:
        code = "user_not_permitted"
        return {"smtp": code, "caldav": code, "link": code}
    if not linked:
        return {"smtp": "user_not_linked", "caldav": "user_not_linked", "link": None}
    return {"smtp": None, "caldav": None, "link": None}


class PolicyMatrix(AgentTestCase):

    def smtp_answer(self):
        with smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=15) as c:
            c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
            code, text = c.mail(CAROL)
            c.rset()
            return code, text.decode()

    def caldav_answer(self):
        url = "http://127.0.0.1:%d/dav/calendars/%s/default/" % (self.box.http_port, CAROL)
        token = base64.b64encode(("%s:%s" % (sandbox.SERVICE_USER,
                                             sandbox.SERVICE_PASSWORD)).encode()).decode()
        req = urllib.request.Request(url, method="PROPFIND", headers={
            "Authorization": "Basic " + token, "Depth": "0"})
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def arrange(self, enabled, mode, listed, linked):
        """Brings policy and link state to one cell of the matrix."""
        cli = self.box.policy_cli
        cli("enable")
        cli("mode", mode)
        if listed:
            cli("allow", CAROL, check=False)   # already listed is fine
        else:
            cli("remove", CAROL, check=False)  # not listed is fine
        if linked:
            cli("mode", "all")
            self.box.link(CAROL)
            cli("mode", mode)
        else:
            cli("unlink", CAROL, check=False)
        if not enabled:
            cli("disable", "--yes")

    def wait_applied(self, want_smtp):
        """The agent applies file changes within a second; poll a little
        longer than that so a slow machine does not make this flaky."""
        def settled():
            code, text = self.smtp_answer()
            ok = code == 250 if want_smtp is None else (code == 550 and want_smtp in text)
            return (code, text) if ok else None
        try:
            return wait_for(settled, 3.0, "policy applied")
        except TimeoutError:
            return self.smtp_answer()

    def test_matrix(self):
        cells = itertools.product([True, False], ["all", "specific"], [True, False],
                                  [True, False])
        for enabled, mode, listed, linked in cells:
            want = expected(enabled, mode, listed, linked)
            with self.subTest(enabled=enabled, mode=mode, listed=listed, linked=linked):
                self.arrange(enabled, mode, listed, linked)
                code, text = self.wait_applied(want["smtp"])
                if want["smtp"] is None:
                    self.assertEqual(code, 250, text)
                else:
                    self.assertEqual(code, 550, text)
                    self.assertIn("5.7.1", text)
                    self.assertIn(want["smtp"], text)

                status, body = self.caldav_answer()
                if want["caldav"] is None:
                    self.assertEqual(status, 207, body)
                else:
                    self.assertEqual(status, 403, body)
                    self.assertIn(want["caldav"], body)

                out = self.box.policy_cli("link", CAROL, check=False)
                if want["link"] is None:
                    self.assertEqual(out.returncode, 0, out.stderr)
                else:
                    self.assertEqual(out.returncode, EX_NOPERM, out.stderr)
                    self.assertIn(want["link"], out.stderr)
        self.box.policy_cli("enable")
        self.box.policy_cli("mode", "all")
        self.box.link(CAROL)

    def test_cli_edit_applied_within_a_second(self):
        self.box.policy_cli("enable")
        self.box.policy_cli("mode", "all")
        self.box.link(CAROL)
        wait_for(lambda: self.smtp_answer()[0] == 250, 3, "carol allowed")
        self.box.policy_cli("mode", "specific")
        self.box.policy_cli("remove", CAROL, check=False)
        edited = time.monotonic()
        wait_for(lambda: self.smtp_answer()[0] == 550, 5, "carol refused")
        self.assertLess(time.monotonic() - edited, 1.5)
        self.box.policy_cli("mode", "all")

    def test_broken_hand_edit_keeps_last_policy(self):
        self.box.policy_cli("enable")
        self.box.policy_cli("mode", "all")
        self.box.link(CAROL)
        wait_for(lambda: self.smtp_answer()[0] == 250, 3, "carol allowed")
        path = self.box.path("policy.ini")
        with open(path) as f:
            good = f.read()
        with open(path + ".tmp", "w") as f:
            f.write(good.replace("enabled = true", "enabled = maybe"))
        os.rename(path + ".tmp", path)
        time.sleep(2.0)
        self.assertEqual(self.smtp_answer()[0], 250, "a broken file must not change the policy")
        status = self.box.policy_cli("status", check=False)
        self.assertRegex(status.stdout, r"policy\.ini:\d+: enabled must be true or false")
        self.assertIn("keeps the last valid policy", status.stdout)
        with open(path + ".tmp", "w") as f:
            f.write(good)
        os.rename(path + ".tmp", path)


if __name__ == "__main__":
    main()
