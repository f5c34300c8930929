#!/usr/bin/python3
"""The policy decision as clients see it, over the whole matrix: switch
on/off x mode all/specific x user listed or not x linked or not, for an
SMTP transaction (MAIL FROM), a CalDAV request (PROPFIND on the user's
calendar: the DAV error body a client parses) and a link attempt through
the running agent (Nextal's start-url API and the signed start link a
person opens), in both link modes: application (the start link links at
once) and delegated (the start link sends the browser to Microsoft's
authorize endpoint).

"Linked" means the user linked before the cell's switch was set. Switching
the integration off disconnects every linked user (their tokens are wiped
and they must link again), so an off x linked cell is a user whose link
needs renewing (needs_relink, reason org_disabled); the test asserts that
state, not "linked".

Also: a CLI edit that changes the decision reaches the running agent
within a second, and a broken hand edit keeps the last valid policy."""

import base64
import itertools
import os
import smtplib
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

from link_flow import LinkingTestCase
from scenario import CAROL, main, sandbox
from sandbox import wait_for

# The DAV error body of a policy refusal (gateway/caldav.c,
# caldav_error_tagged; tests/unit/test_caldav.c):
#   <D:error xmlns:D="DAV:"><D:need-privileges/>
#     <N:policy-refused xmlns:N="...">CODE: sentence</N:policy-refused></D:error>
DAV_ERROR = "{DAV:}error"
DAV_NEED_PRIVILEGES = "{DAV:}need-privileges"
NEXTAL_POLICY_REFUSED = "{https://nextal.example/ns}policy-refused"
DAV_MULTISTATUS = "{DAV:}multistatus"

# How long the agent may take to apply an edit, and the measuring slack.
APPLY_S = 1.0
SLACK_S = 0.2


def expected(enabled, mode, listed, linked):
    """The reason code the policy must give per request kind (None:
    allowed)."""
    if not enabled:
        return {"smtp": "org_disabled", "caldav": "org_disabled", "link": "org_disabled"}
    if mode == "specific" and not listed:
        code = "user_not_permitted"
        return {"smtp": code, "caldav": code, "link": code}
    if not linked:
        return {"smtp": "user_not_linked", "caldav": "user_not_linked", "link": None}
    return {"smtp": None, "caldav": None, "link": None}


def expected_link_state(enabled, linked):
    """(state, reason) of GET /v1/links/ADDRESS in the cell: switching off
    disconnected a linked user, who must link again."""
    if not linked:
        return "not_linked", None
    if not enabled:
        return "needs_relink", "org_disabled"
    return "linked", None


class MatrixCells:
    """The matrix and its helpers; mixed into one test case per link
    mode."""

    # ---- the three clients ----

    def smtp_answer(self):
        with smtplib.SMTP("127.0.0.1", self.box.smtp_port, timeout=15) as c:
            c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
            code, text = c.mail(CAROL)
            c.rset()
            return code, text.decode()

    def caldav_answer(self):
        """(status, Content-Type, body) of a PROPFIND of Carol's calendar."""
        url = "http://127.0.0.1:%d/dav/calendars/%s/default/" % (self.box.http_port, CAROL)
        req = urllib.request.Request(url, method="PROPFIND", headers={
            "Authorization": self.basic_auth(), "Depth": "0"})
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read().decode()

    @staticmethod
    def basic_auth():
        cred = "%s:%s" % (sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
        return "Basic " + base64.b64encode(cred.encode()).decode()

    def start_url_answer(self):
        """Nextal's call for a start link: POST /v1/links/ADDRESS/start-url."""
        return self.api("POST", CAROL, "/start-url")

    # ---- what a client must see ----

    def assert_smtp(self, want, code, text):
        if want is None:
            self.assertEqual(code, 250, text)
        else:
            self.assertEqual(code, 550, text)
            # The code leads the text ("org_disabled" alone would also match
            # "link_expired: ... (reason: org_disabled)").
            self.assertTrue(text.startswith("5.7.1 %s: " % want), text)

    def assert_caldav(self, want):
        status, ctype, body = self.caldav_answer()
        root = ET.fromstring(body.encode()) if body.lstrip().startswith("<") else None
        if want is None:
            self.assertEqual(status, 207, body)
            self.assertIsNotNone(root, body)
            self.assertEqual(root.tag, DAV_MULTISTATUS, body)
            return
        self.assertEqual(status, 403, body)
        self.assertTrue(ctype.startswith("application/xml"), ctype)
        self.assertIsNotNone(root, body)
        self.assertEqual(root.tag, DAV_ERROR, body)
        # The precondition comes first, then Nextal's sentence with its code.
        children = list(root)
        self.assertGreaterEqual(len(children), 2, body)
        self.assertEqual(children[0].tag, DAV_NEED_PRIVILEGES, body)
        self.assertEqual(len(children[0]), 0, body)
        refused = root.find(NEXTAL_POLICY_REFUSED)
        self.assertIsNotNone(refused, body)
        self.assertTrue((refused.text or "").startswith(want + ": "), body)

    def assert_link(self, want):
        status, body = self.start_url_answer()
        if want is not None:
            # Nextal's API says why, in JSON it can show the user.
            self.assertEqual(status, 403, body)
            self.assertEqual(body["error"], want, body)
            self.assertTrue(body.get("message"), body)
            # A start link handed out before (validly signed) is refused by
            # the agent with a page naming the reason; nothing is linked.
            before = self.link_state(CAROL)
            url = self.signed_url(CAROL, int(time.time()) + 300)
            status, final, page = self.browse(url)
            self.assertEqual(status, 403, page)
            self.assertEqual(final, url, "a refused start link must not redirect")
            self.assertIn("Link refused", page)
            self.assertIn("does not let %s link a mailbox (%s)" % (CAROL, want), page)
            self.assertEqual(self.link_state(CAROL), before)
            return
        self.assertEqual(status, 200, body)
        self.assertIn("/link/start?user=carol%40contoso.example&exp=", body["url"])
        self.assert_start_link_allowed(body["url"])

    def assert_link_state(self, enabled, linked):
        state, reason = expected_link_state(enabled, linked)
        got = self.link_state(CAROL)
        self.assertEqual(got["state"], state, got)
        self.assertEqual(got.get("reason"), reason, got)
        if self.box.link_mode == "delegated" and linked:
            stored = self.stored_token(CAROL)
            if enabled:
                self.assertIsNotNone(stored, "a linked user keeps a token")
            else:
                self.assertIsNone(stored, "switching off must wipe the token")

    # ---- arranging a cell ----

    def wait_link_allowed(self):
        """Until the agent has applied a policy that lets Carol link."""
        wait_for(lambda: self.start_url_answer()[0] == 200, 3 * APPLY_S,
                 "the agent letting carol link")

    def link_carol(self):
        """Links Carol the way she would: Nextal's start link, opened."""
        self.wait_link_allowed()
        status, body = self.start_url_answer()
        self.assertEqual(status, 200, body)
        status, final, page = self.browse(body["url"])
        self.assertEqual(status, 200, page)
        self.assertIn("Mailbox linked", page)
        self.assertEqual(self.link_state(CAROL)["state"], "linked")

    def arrange(self, enabled, mode, listed, linked):
        """Brings policy and link state to one cell of the matrix; returns
        what `disable` printed, if the cell is off."""
        cli = self.box.policy_cli
        cli("enable")
        cli("mode", mode)
        if listed:
            cli("allow", CAROL, check=False)   # already listed is fine
        else:
            cli("remove", CAROL, check=False)  # not listed is fine
        if linked:
            cli("mode", "all")
            self.link_carol()
            cli("mode", mode)
        else:
            cli("unlink", CAROL, check=False)  # not linked is fine
        if not enabled:
            # Switching off disconnects every linked user, and says so.
            return cli("disable", "--yes").stdout
        return None

    def wait_applied(self, want_smtp):
        """The agent applies file changes within a second; poll a little
        longer than that so a slow machine does not make this flaky."""
        def settled():
            code, text = self.smtp_answer()
            ok = (code == 250 if want_smtp is None
                  else code == 550 and text.startswith("5.7.1 %s: " % want_smtp))
            return (code, text) if ok else None
        try:
            return wait_for(settled, 3 * APPLY_S, "policy applied")
        except TimeoutError:
            return self.smtp_answer()

    def test_matrix(self):
        cells = itertools.product([True, False], ["all", "specific"], [True, False],
                                  [True, False])
        try:
            for enabled, mode, listed, linked in cells:
                want = expected(enabled, mode, listed, linked)
                with self.subTest(link_mode=self.box.link_mode, enabled=enabled,
                                  mode=mode, listed=listed, linked=linked):
                    said = self.arrange(enabled, mode, listed, linked)
                    if not enabled:
                        self.assertIn("%d linked users were disconnected"
                                      % (1 if linked else 0), said)
                    self.assert_smtp(want["smtp"], *self.wait_applied(want["smtp"]))
                    self.assert_link_state(enabled, linked)
                    self.assert_caldav(want["caldav"])
                    self.assert_link(want["link"])
        finally:
            self.box.policy_cli("enable")
            self.box.policy_cli("mode", "all")


class PolicyMatrix(MatrixCells, LinkingTestCase):
    """Application mode, the sandbox's default."""

    sandbox_options = {"link_mode": "application"}

    def assert_start_link_allowed(self, url):
        # No sign-in: the agent looks the mailbox up and links it.
        status, final, page = self.browse(url)
        self.assertEqual(status, 200, page)
        self.assertIn("/link/start", final)
        self.assertIn("Mailbox linked", page)
        self.assertEqual(self.link_state(CAROL)["state"], "linked")

    def test_cli_edit_applied_within_a_second(self):
        cli = self.box.policy_cli
        cli("enable")
        cli("mode", "specific")
        cli("allow", CAROL, check=False)
        self.link_carol()
        wait_for(lambda: self.smtp_answer()[0] == 250, 3 * APPLY_S, "carol allowed")
        try:
            # The edit that changes the decision, timed from just before
            # the CLI runs.
            started = time.monotonic()
            cli("remove", CAROL)
            took = None
            while time.monotonic() - started < 5 * APPLY_S:
                code, text = self.smtp_answer()
                if code == 550 and text.startswith("5.7.1 user_not_permitted: "):
                    took = time.monotonic() - started
                    break
                time.sleep(0.05)
            self.assertIsNotNone(took, "carol still allowed 5 s after the edit")
            self.assertLessEqual(took, APPLY_S + SLACK_S,
                                 "the edit took %.2f s to apply" % took)
        finally:
            cli("mode", "all")

    def test_broken_hand_edit_keeps_last_policy(self):
        self.box.policy_cli("enable")
        self.box.policy_cli("mode", "all")
        self.link_carol()
        wait_for(lambda: self.smtp_answer()[0] == 250, 3 * APPLY_S, "carol allowed")
        path = self.box.path("policy.ini")
        with open(path) as f:
            good = f.read()
        with open(path + ".tmp", "w") as f:
            f.write(good.replace("enabled = true", "enabled = maybe"))
        os.rename(path + ".tmp", path)
        time.sleep(2 * APPLY_S)
        self.assertEqual(self.smtp_answer()[0], 250, "a broken file must not change the policy")
        status = self.box.policy_cli("status", check=False)
        self.assertRegex(status.stdout, r"policy\.ini:\d+: enabled must be true or false")
        self.assertIn("keeps the last valid policy", status.stdout)
        with open(path + ".tmp", "w") as f:
            f.write(good)
        os.rename(path + ".tmp", path)


class PolicyMatrixDelegated(MatrixCells, LinkingTestCase):
    """Delegated mode: an allowed start link is a sign-in at Microsoft."""

    sandbox_options = {"link_mode": "delegated"}

    def assert_start_link_allowed(self, url):
        before = self.link_state(CAROL)
        location = self.redirect_of(url)
        authorize = "http://127.0.0.1:%d/%s/oauth2/v2.0/authorize?" % (
            self.box.sim_port, sandbox.TENANT_DOMAIN)
        self.assertTrue(location.startswith(authorize), location)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        self.assertEqual(query["login_hint"], [CAROL], location)
        self.assertEqual(query["code_challenge_method"], ["S256"], location)
        # Nothing changes until the sign-in comes back.
        self.assertEqual(self.link_state(CAROL), before)


if __name__ == "__main__":
    main()
