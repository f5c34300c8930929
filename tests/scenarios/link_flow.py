"""Helpers shared by the linking scenarios: a delegated sandbox started
without links, a person's browser played by `curl -L`, Nextal's link API
with the service credential, and start links signed the way Nextal signs
them."""

import base64
import hashlib
import hmac
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from scenario import AgentTestCase, sandbox

LINK_SECRET = "sandbox-link-secret-0123456789"  # as sandbox.py writes it
SIM_REFRESH_PREFIX = b"0.ARsim."  # tests/graphsim/simcore.py


class LinkingTestCase(AgentTestCase):
    """A sandbox whose users are not linked; the tests link them."""

    sandbox_options = {"link_mode": "delegated"}
    grant_consent = True

    @classmethod
    def setUpClass(cls):
        cls.box = sandbox.Sandbox(**cls.sandbox_options)
        try:
            cls.box.start(link=False)
            if cls.grant_consent:
                cls.box.grant_consent()
        except Exception:
            cls.dump_logs()
            cls.box.close()
            raise

    # ---- start links ----

    def start_url(self, address):
        """A start link minted by the CLI (what Nextal would hand out)."""
        return self.box.policy_cli("link-url", address).stdout.strip()

    def signed_url(self, address, exp, secret=LINK_SECRET):
        sig = hmac.new(secret.encode(), ("%s\n%d" % (address, exp)).encode(),
                       hashlib.sha256).hexdigest()
        return "http://127.0.0.1:%d/link/start?%s" % (
            self.box.http_port,
            urllib.parse.urlencode({"user": address, "exp": exp, "sig": sig}))

    def browse(self, url):
        """Opens url as a browser would, following every redirect (through
        the simulator's authorize endpoint back to /oauth/callback).
        Returns (status, final URL, page)."""
        out = subprocess.run(
            ["curl", "-sS", "-L", "--max-redirs", "10", "--max-time", "30",
             "-w", "\n%{http_code} %{url_effective}", url],
            capture_output=True, text=True, check=True)
        page, _, tail = out.stdout.rpartition("\n")
        status, final = tail.split(" ", 1)
        return int(status), final, page

    def redirect_of(self, url):
        """The Location a GET of url answers with (no following)."""
        opener = urllib.request.build_opener(sandbox.NoRedirect)
        try:
            opener.open(url, timeout=10)
        except urllib.error.HTTPError as e:
            self.assertIn(e.code, (302, 303), e.read())
            return urllib.parse.urljoin(url, e.headers["Location"])
        self.fail("no redirect from " + url)

    def link_by_sign_in(self, address):
        status, final, page = self.browse(self.start_url(address))
        self.assertEqual(status, 200, page)
        self.assertIn("/oauth/callback", final)
        self.assertIn("Mailbox linked", page)
        return page

    # ---- Nextal's link API ----

    def api(self, method, address, suffix="", auth=True):
        url = "http://127.0.0.1:%d/v1/links/%s%s" % (
            self.box.http_port, urllib.parse.quote(address), suffix)
        req = urllib.request.Request(url, method=method)
        if auth:
            cred = "%s:%s" % (sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
            req.add_header("Authorization", "Basic "
                           + base64.b64encode(cred.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            body = e.read()
            return e.code, json.loads(body) if body else None

    def link_state(self, address):
        status, body = self.api("GET", address)
        self.assertEqual(status, 200, body)
        return body

    def wait_state(self, address, state, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.link_state(address)
            if body["state"] == state:
                return body
            time.sleep(0.1)
        self.fail("%s never reached %s: %s" % (address, state, body))

    # ---- the database ----

    def stored_token(self, address):
        row = self.db().execute(
            "SELECT refresh_token FROM users WHERE address = ?",
            (address,)).fetchone()
        return row[0] if row else None

    def assertNotClear(self, blob):
        """The stored token must be ciphertext: every refresh token the
        simulator issues starts with SIM_REFRESH_PREFIX, so a token kept in
        clear (whole or in part) would show it."""
        self.assertIsNotNone(blob)
        self.assertNotIn(SIM_REFRESH_PREFIX, bytes(blob))
        self.assertGreater(len(blob), 40)


def message(sender, tag, to="someone@example.net"):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@nextal.test>"
            "\r\n\r\n%s\r\n" % (sender, to, tag, tag, tag)).encode()
