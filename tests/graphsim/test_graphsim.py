"""Tests for the Graph simulator itself, over HTTP (stdlib unittest + urllib).

Run from the repository root:
    /usr/bin/python3 -m unittest tests/graphsim/test_graphsim.py
"""

import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SIM = os.path.join(HERE, "graphsim.py")
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "aaaaaaaa-0000-0000-0000-000000000001"
SECRET = "s3cret-value"
REDIRECT = "http://127.0.0.1:8025/oauth/callback"
ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
CAROL = "carol@contoso.example"

CONFIG = {
    "tenant_id": TENANT, "tenant_domain": "contoso.example",
    "clients": [{"client_id": CLIENT, "client_secret": SECRET,
                 "redirect_uris": [REDIRECT]}],
    "users": [
        {"address": ALICE, "display_name": "Alice Adams",
         "id": "a1a1a1a1-0000-0000-0000-000000000001", "disabled": False, "mailbox": True},
        {"address": BOB, "display_name": "Bob Brown",
         "id": "b1b1b1b1-0000-0000-0000-000000000002"},
        {"address": CAROL, "display_name": "Carol NoMailbox",
         "id": "c1c1c1c1-0000-0000-0000-000000000003", "mailbox": False},
    ],
    "token_lifetime_s": 3599,
}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class SimTestCase(unittest.TestCase):
    """Starts one simulator for the class; resets runtime state per test."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cfg = os.path.join(cls.tmp.name, "config.json")
        with open(cfg, "w") as fh:
            json.dump(CONFIG, fh)
        port_file = os.path.join(cls.tmp.name, "port")
        cls.proc = subprocess.Popen([sys.executable, SIM, "--port", "0", "--port-file",
                                     port_file, "--config", cfg])
        deadline = time.time() + 10
        while not os.path.exists(port_file):
            if time.time() > deadline or cls.proc.poll() is not None:
                raise RuntimeError("simulator did not start")
            time.sleep(0.05)
        with open(port_file) as fh:
            cls.base = "http://127.0.0.1:%d" % int(fh.read())

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(10)
        cls.tmp.cleanup()

    def setUp(self):
        self.ctl("POST", "reset")
        self.ctl("POST", "latency", {"ms": 0})
        self.ctl("POST", "throttle", {"limit": 4, "retry_after": "0.5"})
        self.ctl("POST", "consent", {"granted": True})
        for u in (ALICE, BOB):
            self.ctl("POST", "users/" + u, {"disabled": False, "mailbox": True})
        self.ctl("POST", "users/" + CAROL, {"disabled": False, "mailbox": False})

    # -- HTTP helpers --------------------------------------------------------
    def http(self, method, path, body=None, headers=None, json_body=None, form=None):
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if isinstance(body, str):
            body = body.encode()
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers=headers)
        try:
            with OPENER.open(req, timeout=30) as r:
                return Resp(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Resp(e.code, e.headers, e.read())

    def ctl(self, method, path, body=None):
        r = self.http(method, "/_sim/" + path, json_body=body if body is not None else None)
        self.assertLess(r.status, 300, r.body)
        return r.json()

    def token(self, form, tenant=TENANT):
        return self.http("POST", "/%s/oauth2/v2.0/token" % tenant, form=form)

    def app_token(self):
        r = self.token({"grant_type": "client_credentials", "client_id": CLIENT,
                        "client_secret": SECRET,
                        "scope": "https://graph.microsoft.com/.default"})
        self.assertEqual(r.status, 200, r.body)
        return r.json()["access_token"]

    def graph(self, method, path, token, json_body=None, body=None, headers=None):
        h = {"Authorization": "Bearer " + token}
        h.update(headers or {})
        return self.http(method, "/v1.0" + path, json_body=json_body, body=body, headers=h)

    def authorize(self, login_hint=ALICE, scope="openid offline_access Mail.Send Mail.Read",
                  verifier=None, method="S256", redirect=REDIRECT, state="xyz"):
        params = {"client_id": CLIENT, "response_type": "code", "redirect_uri": redirect,
                  "scope": scope, "state": state, "login_hint": login_hint}
        if verifier:
            if method == "S256":
                digest = hashlib.sha256(verifier.encode()).digest()
                params["code_challenge"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            else:
                params["code_challenge"] = verifier
            params["code_challenge_method"] = method
        return self.http("GET", "/%s/oauth2/v2.0/authorize?%s"
                         % (TENANT, urllib.parse.urlencode(params)))

    def sign_in(self, login_hint=ALICE,
                scope="openid profile offline_access Mail.Send Mail.Read"):
        verifier = secrets.token_urlsafe(40)
        r = self.authorize(login_hint, scope, verifier)
        self.assertEqual(r.status, 302, r.body)
        q = location_query(r)
        t = self.token({"grant_type": "authorization_code", "client_id": CLIENT,
                        "client_secret": SECRET, "code": q["code"], "redirect_uri": REDIRECT,
                        "code_verifier": verifier})
        self.assertEqual(t.status, 200, t.body)
        return t.json()

    def assertOAuthError(self, r, status, error, code):
        self.assertEqual(r.status, status, r.body)
        j = r.json()
        self.assertEqual(j["error"], error)
        self.assertEqual(j["error_codes"], [code])
        self.assertTrue(j["error_description"].startswith("AADSTS%d:" % code))
        for k in ("timestamp", "trace_id", "correlation_id"):
            self.assertIn(k, j)

    def assertGraphError(self, r, status, code):
        self.assertEqual(r.status, status, r.body)
        self.assertEqual(r.json()["error"]["code"], code, r.body)


def location_query(r):
    loc = r.headers["Location"]
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))


def jwt_payload(tok):
    part = tok.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def mail_json(to=("bob@contoso.example",), **extra):
    msg = {"subject": "Hello", "body": {"contentType": "Text", "content": "Hi there"},
           "toRecipients": [{"emailAddress": {"address": a}} for a in to]}
    msg.update(extra)
    return {"message": msg, "saveToSentItems": True}


# ---------------------------------------------------------------------------

class IdentityTests(SimTestCase):
    def test_client_credentials(self):
        r = self.token({"grant_type": "client_credentials", "client_id": CLIENT,
                        "client_secret": SECRET,
                        "scope": "https://graph.microsoft.com/.default"})
        self.assertEqual(r.status, 200)
        j = r.json()
        self.assertEqual(j["token_type"], "Bearer")
        self.assertEqual(j["expires_in"], 3599)
        self.assertIn("ext_expires_in", j)
        self.assertNotIn("refresh_token", j)

    def test_client_credentials_basic_auth_and_domain_tenant(self):
        basic = base64.b64encode(("%s:%s" % (CLIENT, SECRET)).encode()).decode()
        r = self.http("POST", "/contoso.example/oauth2/v2.0/token",
                      form={"grant_type": "client_credentials",
                            "scope": "https://graph.microsoft.com/.default"},
                      headers={"Authorization": "Basic " + basic})
        self.assertEqual(r.status, 200, r.body)

    def test_client_credentials_errors(self):
        base = {"grant_type": "client_credentials", "client_id": CLIENT,
                "client_secret": SECRET, "scope": "https://graph.microsoft.com/.default"}
        self.assertOAuthError(self.token(dict(base, client_secret="wrong")), 401,
                              "invalid_client", 7000215)
        self.assertOAuthError(self.token(base, tenant="common"), 400,
                              "invalid_request", 9001023)
        self.assertOAuthError(self.token(dict(base, scope="Mail.Send")), 400,
                              "invalid_scope", 70011)
        self.assertOAuthError(self.token(base, tenant="nope.example"), 400,
                              "invalid_request", 90002)

    def test_no_consent_token_then_403(self):
        self.ctl("POST", "consent", {"granted": False})
        tok = self.app_token()  # issued anyway, without roles
        r = self.graph("GET", "/users/%s/mailFolders/sentitems/messages" % ALICE, tok)
        self.assertGraphError(r, 403, "ErrorAccessDenied")

    def test_admin_consent_flow(self):
        self.ctl("POST", "consent", {"granted": False})
        q = urllib.parse.urlencode({"client_id": CLIENT, "redirect_uri": REDIRECT,
                                    "scope": "https://graph.microsoft.com/.default",
                                    "state": "s1"})
        r = self.http("GET", "/organizations/v2.0/adminconsent?" + q)
        self.assertEqual(r.status, 302)
        got = location_query(r)
        self.assertEqual(got["admin_consent"], "True")
        self.assertEqual(got["tenant"], TENANT)
        self.assertEqual(got["state"], "s1")
        tok = self.app_token()
        r = self.graph("GET", "/users/" + ALICE, tok)
        self.assertEqual(r.status, 200, r.body)

    def test_admin_consent_failures(self):
        q = urllib.parse.urlencode({"client_id": CLIENT, "redirect_uri": REDIRECT,
                                    "scope": "https://graph.microsoft.com/.default",
                                    "state": "s2"})
        self.ctl("POST", "consent", {"next_failure": "consent_required"})
        got = location_query(self.http("GET", "/%s/v2.0/adminconsent?%s" % (TENANT, q)))
        self.assertEqual(got["error"], "consent_required")
        self.assertIn("AADSTS65004", got["error_description"])
        self.ctl("POST", "consent", {"next_failure": "access_denied"})
        got = location_query(self.http("GET", "/%s/adminconsent?%s" % (TENANT, q)))
        self.assertEqual(got["error"], "permission_denied")
        self.ctl("POST", "consent", {"next_failure": "admin_required"})
        got = location_query(self.http("GET", "/%s/v2.0/adminconsent?%s" % (TENANT, q)))
        self.assertEqual(got["error"], "access_denied")
        self.assertTrue(got["error_description"].startswith("AADSTS90094: "))
        self.assertIn("Trace ID: ", got["error_description"])
        self.assertEqual(got["state"], "s2")
        self.assertNotIn("admin_consent", got)
        self.ctl("POST", "consent", {"next_failure": "server_error"})
        got = location_query(self.http("GET", "/%s/v2.0/adminconsent?%s" % (TENANT, q)))
        self.assertEqual(got["error"], "server_error")
        self.assertIn("AADSTS90090", got["error_description"])
        r = self.http("POST", "/_sim/consent", json_body={"next_failure": "made_up"})
        self.assertEqual(r.status, 400)
        # one failure each: the next answer is a grant again
        got = location_query(self.http("GET", "/%s/v2.0/adminconsent?%s" % (TENANT, q)))
        self.assertEqual(got["admin_consent"], "True")
        self.assertNotIn("error", got)
        bad = urllib.parse.urlencode({"client_id": CLIENT, "redirect_uri": "http://evil/",
                                      "scope": "x"})
        r = self.http("GET", "/%s/v2.0/adminconsent?%s" % (TENANT, bad))
        self.assertEqual(r.status, 400)
        r = self.http("GET", "/common/v2.0/adminconsent?" + q)
        self.assertEqual(r.status, 400)

    def test_auth_code_pkce_s256_and_id_token(self):
        j = self.sign_in()
        self.assertIn("refresh_token", j)
        claims = jwt_payload(j["id_token"])
        self.assertEqual(claims["preferred_username"], ALICE)
        self.assertEqual(claims["tid"], TENANT)
        self.assertEqual(claims["oid"], CONFIG["users"][0]["id"])
        r = self.graph("GET", "/me/mailFolders/sentitems/messages", j["access_token"])
        self.assertEqual(r.status, 200, r.body)

    def test_id_token_profile_claims_and_me(self):
        """preferred_username and name need the profile scope; /me with
        User.Read says mail and UPN, which may differ."""
        j = self.sign_in(scope="openid offline_access Mail.Send")
        claims = jwt_payload(j["id_token"])
        self.assertNotIn("preferred_username", claims)
        self.assertNotIn("name", claims)
        self.assertEqual(claims["oid"], CONFIG["users"][0]["id"])
        r = self.graph("GET", "/me?$select=id,mail,userPrincipalName", j["access_token"])
        self.assertEqual(r.status, 403, r.body)  # no User.Read
        self.ctl("POST", "users/" + ALICE, {"upn": "a.liddell@contoso.onmicrosoft.com"})
        self.ctl("POST", "signin", {"omit_claims": ["name"]})
        j = self.sign_in(scope="openid profile offline_access User.Read")
        claims = jwt_payload(j["id_token"])
        self.assertEqual(claims["preferred_username"], "a.liddell@contoso.onmicrosoft.com")
        self.assertNotIn("name", claims)
        me = self.graph("GET", "/me?$select=id,mail,userPrincipalName", j["access_token"])
        self.assertEqual(me.status, 200, me.body)
        self.assertEqual(me.json()["mail"], ALICE)
        self.assertEqual(me.json()["userPrincipalName"], "a.liddell@contoso.onmicrosoft.com")
        self.assertEqual(me.json()["id"], claims["oid"])
        self.ctl("POST", "users/" + ALICE, {"upn": None})
        self.ctl("POST", "signin", {"omit_claims": []})

    def test_auth_code_plain_pkce_and_errors(self):
        verifier = "plain-verifier-" + secrets.token_hex(8)
        r = self.authorize(verifier=verifier, method="plain")
        code = location_query(r)["code"]
        self.assertEqual(location_query(r)["state"], "xyz")
        form = {"grant_type": "authorization_code", "client_id": CLIENT,
                "client_secret": SECRET, "code": code, "redirect_uri": REDIRECT,
                "code_verifier": "wrong"}
        self.assertOAuthError(self.token(form), 400, "invalid_grant", 501481)
        # code is consumed even by a failed redemption -> reuse
        self.assertOAuthError(self.token(dict(form, code_verifier=verifier)), 400,
                              "invalid_grant", 54005)
        r = self.authorize(verifier=verifier, method="plain")
        code = location_query(r)["code"]
        ok = self.token(dict(form, code=code, code_verifier=verifier))
        self.assertEqual(ok.status, 200, ok.body)
        self.assertOAuthError(self.token(dict(form, code=code, code_verifier=verifier)),
                              400, "invalid_grant", 54005)
        r = self.authorize(verifier=verifier, method="plain")
        code = location_query(r)["code"]
        bad_redirect = dict(form, code=code, code_verifier=verifier,
                            redirect_uri="http://127.0.0.1:9/other")
        self.assertEqual(self.token(bad_redirect).json()["error"], "invalid_grant")

    def test_authorize_errors_and_overrides(self):
        r = self.authorize(redirect="http://127.0.0.1:1/unregistered")
        self.assertEqual(r.status, 400)
        self.assertIn(b"AADSTS50011", r.body)
        self.ctl("POST", "signin", {"decline": True})
        q = location_query(self.authorize())
        self.assertEqual(q["error"], "access_denied")
        self.assertEqual(q["state"], "xyz")
        self.ctl("POST", "signin", {"as": BOB, "once": True})
        j = self.sign_in(login_hint=ALICE)
        self.assertEqual(jwt_payload(j["id_token"])["preferred_username"], BOB)
        j = self.sign_in(login_hint=ALICE)  # override was one-shot
        self.assertEqual(jwt_payload(j["id_token"])["preferred_username"], ALICE)

    def test_refresh_rotation(self):
        j = self.sign_in()
        rt1 = j["refresh_token"]
        form = {"grant_type": "refresh_token", "client_id": CLIENT, "client_secret": SECRET,
                "refresh_token": rt1}
        r2 = self.token(form)
        self.assertEqual(r2.status, 200, r2.body)
        rt2 = r2.json()["refresh_token"]
        self.assertNotEqual(rt1, rt2)
        self.assertEqual(self.token(form).status, 200)  # old one still valid
        self.assertEqual(self.token(dict(form, refresh_token=rt2)).status, 200)

    def test_token_log_shows_the_refresh_token_presented(self):
        first = self.sign_in()
        form = {"grant_type": "refresh_token", "client_id": CLIENT, "client_secret": SECRET,
                "refresh_token": first["refresh_token"]}
        second = self.token(form).json()
        self.token(dict(form, refresh_token=second["refresh_token"]))
        self.sign_in(login_hint=BOB)
        log = self.ctl("GET", "tokens?user=" + ALICE)["requests"]
        self.assertEqual([e["grant_type"] for e in log],
                         ["authorization_code", "refresh_token", "refresh_token"])
        self.assertIsNone(log[0]["presented_refresh_token"])
        self.assertEqual(log[0]["issued_refresh_token"], first["refresh_token"])
        self.assertEqual(log[1]["presented_refresh_token"], first["refresh_token"])
        self.assertEqual(log[1]["issued_refresh_token"], second["refresh_token"])
        self.assertEqual(log[2]["presented_refresh_token"], second["refresh_token"])
        self.assertEqual([e["status"] for e in log], [200, 200, 200])
        self.assertEqual(len(self.ctl("GET", "tokens")["requests"]), 4)
        self.ctl("POST", "reset")
        self.assertEqual(self.ctl("GET", "tokens")["requests"], [])

    def test_token_endpoint_faults(self):
        rt = self.sign_in()["refresh_token"]
        form = {"grant_type": "refresh_token", "client_id": CLIENT, "client_secret": SECRET,
                "refresh_token": rt}
        # A rule without an operation stays a Graph rule: tokens still come.
        self.ctl("POST", "faults", {"fault": "500", "probability": 1.0})
        self.assertEqual(self.token(form).status, 200)
        self.ctl("POST", "faults", {"clear": True})

        self.ctl("POST", "faults", {"fault": "503", "operation": "token", "count": 1,
                                    "retry_after": "2", "mailbox": ALICE})
        self.ctl("POST", "faults", {"fault": "drop", "operation": "token", "count": 1,
                                    "mailbox": ALICE})
        bob = self.sign_in(login_hint=BOB)  # another user's grant is not touched
        self.assertIn("refresh_token", bob)
        r = self.token(form)
        self.assertOAuthError(r, 503, "temporarily_unavailable", 90006)
        self.assertEqual(r.headers["Retry-After"], "2")
        with self.assertRaises((urllib.error.URLError, http.client.HTTPException,
                                ConnectionError)):
            self.token(form)
        ok = self.token(form)
        self.assertEqual(ok.status, 200, ok.body)
        log = self.ctl("GET", "tokens?user=" + ALICE)["requests"]
        self.assertEqual([(e["status"], e["fault"]) for e in log[-3:]],
                         [(503, "503"), (0, "drop"), (200, None)])
        self.assertIsNone(log[-3]["issued_refresh_token"])
        st = self.ctl("GET", "stats")["mailboxes"][ALICE]
        self.assertEqual(st["faults_injected"], {"503": 1, "drop": 1})
        self.assertEqual(st["operations"]["token"], 5)

        # App-only tokens, and "after": issued, then the answer is lost.
        self.ctl("POST", "faults", {"fault": "500", "operation": "token", "count": 1,
                                    "after": True})
        app = {"grant_type": "client_credentials", "client_id": CLIENT,
               "client_secret": SECRET, "scope": "https://graph.microsoft.com/.default"}
        self.assertOAuthError(self.token(app), 500, "server_error", 50000)
        self.assertEqual(self.token(app).status, 200)
        r = self.token(dict(app, client_secret="wrong"))  # no rule left: the real answer
        self.assertOAuthError(r, 401, "invalid_client", 7000215)

    def test_refresh_grant_gone_paths(self):
        form = {"grant_type": "refresh_token", "client_id": CLIENT, "client_secret": SECRET}
        rt = self.sign_in()["refresh_token"]
        self.ctl("POST", "users/" + ALICE, {"disabled": True})
        self.assertOAuthError(self.token(dict(form, refresh_token=rt)), 400,
                              "invalid_grant", 50057)
        self.ctl("POST", "users/" + ALICE, {"disabled": False})

        rt = self.sign_in()["refresh_token"]
        self.ctl("POST", "users/" + ALICE, {"revoke_tokens": True})
        self.assertOAuthError(self.token(dict(form, refresh_token=rt)), 400,
                              "invalid_grant", 50173)

        rt = self.sign_in()["refresh_token"]
        self.ctl("POST", "users/" + ALICE, {"expire_refresh_tokens": True})
        self.assertOAuthError(self.token(dict(form, refresh_token=rt)), 400,
                              "invalid_grant", 700082)

        rt = self.sign_in()["refresh_token"]
        self.ctl("POST", "consent", {"granted": False})
        self.assertOAuthError(self.token(dict(form, refresh_token=rt)), 400,
                              "invalid_grant", 65001)

    def test_delegated_cannot_reach_other_mailbox(self):
        j = self.sign_in()
        r = self.graph("POST", "/users/%s/sendMail" % BOB, j["access_token"],
                       json_body=mail_json())
        self.assertGraphError(r, 403, "ErrorAccessDenied")
        r = self.graph("POST", "/me/sendMail", j["access_token"], json_body=mail_json())
        self.assertEqual(r.status, 202, r.body)

    def test_expired_and_bad_access_tokens(self):
        self.assertGraphError(self.graph("GET", "/users/" + ALICE, "garbage"), 401,
                              "InvalidAuthenticationToken")
        r = self.http("GET", "/v1.0/users/" + ALICE)
        self.assertGraphError(r, 401, "InvalidAuthenticationToken")
        tok = self.app_token()
        self.ctl("POST", "tokens", {"expire_access_tokens": True})
        self.assertGraphError(self.graph("GET", "/users/" + ALICE, tok), 401,
                              "InvalidAuthenticationToken")


def openssl(*args, data=None):
    return subprocess.run(("openssl",) + args, input=data, check=True,
                          capture_output=True).stdout


def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class CertificateTests(SimTestCase):
    """Client authentication with a certificate assertion [E-CERT]; keys
    and signatures made with the openssl tool, as the simulator only
    verifies."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for name in ("one", "two"):
            key = os.path.join(cls.tmp.name, name + ".key")
            crt = os.path.join(cls.tmp.name, name + ".crt")
            openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                    "-days", "2", "-subj", "/CN=" + name, "-keyout", key,
                    "-out", crt)
            with open(crt) as fh:
                setattr(cls, name + "_pem", fh.read())
            setattr(cls, name + "_key", key)

    def setUp(self):
        super().setUp()
        self.ctl("POST", "certificates", {"certificates": [self.one_pem]})
        self.addCleanup(self.ctl, "POST", "certificates", {"certificates": []})

    def assertion(self, pem=None, key=None, alg="PS256", **claims):
        pem, key = pem or self.one_pem, key or self.one_key
        der = openssl("x509", "-outform", "DER", data=pem.encode())
        header = {"alg": alg, "typ": "JWT",
                  "x5t#S256": b64u(hashlib.sha256(der).digest())}
        now = int(time.time())
        body = {"aud": self.base + "/%s/oauth2/v2.0/token" % TENANT,
                "iss": CLIENT, "sub": CLIENT, "jti": secrets.token_hex(16),
                "nbf": now, "iat": now, "exp": now + 300}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        signed = b64u(json.dumps(header)) + "." + b64u(json.dumps(body))
        opts = ["-sigopt", "rsa_padding_mode:pss", "-sigopt",
                "rsa_pss_saltlen:32"] if alg == "PS256" else []
        sig = openssl("dgst", "-sha256", "-sign", key, *opts, data=signed.encode())
        return signed + "." + b64u(sig)

    def cert_token(self, assertion):
        return self.token({
            "grant_type": "client_credentials", "client_id": CLIENT,
            "scope": "https://graph.microsoft.com/.default",
            "client_assertion_type":
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion})

    def test_ps256_and_rs256_assertions_get_a_token(self):
        for alg in ("PS256", "RS256"):
            r = self.cert_token(self.assertion(alg=alg))
            self.assertEqual(r.status, 200, r.body)
            self.assertIn("access_token", r.json())
        log = self.ctl("GET", "tokens")["requests"]
        self.assertEqual([e["credential"] for e in log[-2:]],
                         ["assertion", "assertion"])

    def test_tampered_signature_is_refused(self):
        a = self.assertion()
        head, claims, sig = a.split(".")
        raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
        raw[10] ^= 0x01
        self.assertOAuthError(self.cert_token("%s.%s.%s" % (head, claims, b64u(bytes(raw)))),
                              401, "invalid_client", 700027)

    def test_tampered_claims_are_refused(self):
        head, _, sig = self.assertion().split(".")
        now = int(time.time())
        claims = b64u(json.dumps({
            "aud": self.base + "/%s/oauth2/v2.0/token" % TENANT, "iss": CLIENT,
            "sub": CLIENT, "jti": "x", "nbf": now, "exp": now + 3000}))
        self.assertOAuthError(self.cert_token("%s.%s.%s" % (head, claims, sig)),
                              401, "invalid_client", 700027)

    def test_pkcs1_signature_labelled_ps256_is_refused(self):
        head, claims, sig = self.assertion(alg="RS256").split(".")
        ps_head = b64u(json.dumps(dict(json.loads(base64.urlsafe_b64decode(
            head + "=" * (-len(head) % 4))), alg="PS256")))
        # Re-sign the new header with PKCS#1 v1.5: the padding is wrong.
        signed = ps_head + "." + claims
        sig = openssl("dgst", "-sha256", "-sign", self.one_key, data=signed.encode())
        self.assertOAuthError(self.cert_token(signed + "." + b64u(sig)),
                              401, "invalid_client", 700027)

    def test_other_certificate_is_refused_until_registered(self):
        a = self.assertion(pem=self.two_pem, key=self.two_key)
        r = self.cert_token(a)
        self.assertOAuthError(r, 401, "invalid_client", 700027)
        self.assertIn("The key was not found", r.json()["error_description"])
        # Rotation: register both; the same assertion is taken.
        self.ctl("POST", "certificates", {"certificates": [self.one_pem, self.two_pem]})
        self.assertEqual(self.cert_token(a).status, 200)

    def test_key_of_another_certificate_is_refused(self):
        # x5t#S256 names the registered certificate, the key is not its own.
        a = self.assertion(pem=self.one_pem, key=self.two_key)
        self.assertOAuthError(self.cert_token(a), 401, "invalid_client", 700027)

    def test_expired_or_early_assertion(self):
        now = int(time.time())
        self.assertOAuthError(self.cert_token(self.assertion(nbf=now - 4000, exp=now - 3000)),
                              400, "invalid_client", 700024)
        self.assertOAuthError(self.cert_token(self.assertion(nbf=now + 3000, exp=now + 3600)),
                              400, "invalid_client", 700024)

    def test_claims_must_name_endpoint_and_client(self):
        other = "bbbbbbbb-0000-0000-0000-000000000002"
        for claims in ({"aud": "https://login.microsoftonline.com/%s/oauth2/v2.0/token"
                        % TENANT}, {"iss": other}, {"sub": other}, {"jti": None}):
            self.assertOAuthError(self.cert_token(self.assertion(**claims)),
                                  400, "invalid_request", 50027)
        # The tenant's domain in aud names the same endpoint [E-CERT].
        aud = self.base + "/contoso.example/oauth2/v2.0/token"
        self.assertEqual(self.cert_token(self.assertion(aud=aud)).status, 200)

    def test_assertion_is_single_use(self):
        a = self.assertion()
        self.assertEqual(self.cert_token(a).status, 200)
        self.assertOAuthError(self.cert_token(a), 401, "invalid_client", 700027)

    def test_rotation_rejects_bad_pem(self):
        r = self.http("POST", "/_sim/certificates",
                      json_body={"certificates": ["not a certificate"]})
        self.assertEqual(r.status, 400, r.body)


class MailTests(SimTestCase):
    def setUp(self):
        super().setUp()
        self.tok = self.app_token()

    def send(self, body, user=ALICE, **kw):
        return self.graph("POST", "/users/%s/sendMail" % user, self.tok, json_body=body, **kw)

    def sent(self, user=ALICE):
        return self.ctl("GET", "mailboxes/%s/sent" % user)["messages"]

    def test_users(self):
        r = self.graph("GET", "/users/" + CONFIG["users"][1]["id"], self.tok)
        self.assertEqual(r.json()["mail"], BOB)
        self.assertGraphError(self.graph("GET", "/users/nobody@contoso.example", self.tok),
                              404, "Request_ResourceNotFound")
        self.assertGraphError(self.send(mail_json(), user="nobody@contoso.example"), 404,
                              "ErrorInvalidUser")
        self.assertGraphError(self.send(mail_json(), user=CAROL), 404,
                              "MailboxNotEnabledForRESTAPI")

    def test_send_json_with_attachments_and_read_back(self):
        data = os.urandom(3000)
        body = mail_json(
            to=(BOB, "ext@example.org"),
            ccRecipients=[{"emailAddress": {"address": "cc@example.org"}}],
            internetMessageHeaders=[{"name": "X-Nextal-Id", "value": "42"}],
            attachments=[{"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.bin",
                          "contentType": "application/octet-stream",
                          "contentBytes": base64.b64encode(data).decode()},
                         {"@odata.type": "#microsoft.graph.fileAttachment", "name": "i.png",
                          "contentType": "image/png", "isInline": True, "contentId": "img1",
                          "contentBytes": base64.b64encode(b"png").decode()}])
        r = self.send(body)
        self.assertEqual(r.status, 202, r.body)
        self.assertEqual(r.body, b"")
        self.assertEqual(r.headers["Content-Length"], "0")
        rec = self.sent()[0]
        self.assertEqual(len(rec["recipients"]), 3)
        att = {a["name"]: a for a in rec["attachments"]}
        self.assertEqual(att["a.bin"]["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(att["a.bin"]["size"], 3000)
        self.assertTrue(att["i.png"]["isInline"])
        self.assertEqual(att["i.png"]["contentId"], "img1")
        imid = rec["resource"]["internetMessageId"]

        q = urllib.parse.quote("internetMessageId eq '%s'" % imid)
        lst = self.graph("GET", "/users/%s/mailFolders/sentitems/messages?$filter=%s"
                         "&$select=id,internetMessageId,sentDateTime&$expand=attachments"
                         % (ALICE, q), self.tok).json()["value"]
        self.assertEqual(len(lst), 1)
        self.assertIn("sentDateTime", lst[0])
        self.assertNotIn("subject", lst[0])
        self.assertEqual(len(lst[0]["attachments"]), 2)
        mid = lst[0]["id"]
        msg = self.graph("GET", "/users/%s/messages/%s" % (ALICE, mid), self.tok).json()
        self.assertEqual(msg["subject"], "Hello")
        atts = self.graph("GET", "/users/%s/messages/%s/attachments" % (ALICE, mid),
                          self.tok).json()["value"]
        got = [a for a in atts if a["name"] == "a.bin"][0]
        self.assertEqual(base64.b64decode(got["contentBytes"]), data)
        mime = self.graph("GET", "/users/%s/messages/%s/$value" % (ALICE, mid), self.tok)
        self.assertEqual(mime.status, 200)
        self.assertIn(b"X-Nextal-Id: 42", mime.body)
        self.assertGraphError(self.graph("GET", "/users/%s/messages/nope" % ALICE, self.tok),
                              404, "ErrorItemNotFound")

    def test_send_as_denied(self):
        body = mail_json(**{"from": {"emailAddress": {"address": BOB}}})
        self.assertGraphError(self.send(body), 403, "ErrorSendAsDenied")
        body = mail_json(**{"from": {"emailAddress": {"address": ALICE.upper()}}})
        self.assertEqual(self.send(body).status, 202)

    def test_send_json_save_false(self):
        body = mail_json()
        body["saveToSentItems"] = "false"
        self.assertEqual(self.send(body).status, 202)
        lst = self.graph("GET", "/users/%s/mailFolders/sentitems/messages" % ALICE,
                         self.tok).json()["value"]
        self.assertEqual(lst, [])
        self.assertFalse(self.sent()[0]["savedToSentItems"])

    def test_send_mime(self):
        mime = ("From: Alice <alice@contoso.example>\r\nTo: Bob <bob@contoso.example>\r\n"
                "Cc: x@example.org\r\nSubject: MIME test\r\n"
                "Message-ID: <abc123@nextal.test>\r\nMIME-Version: 1.0\r\n"
                "Content-Type: multipart/mixed; boundary=BB\r\n\r\n"
                "--BB\r\nContent-Type: text/plain\r\n\r\nbody text\r\n"
                "--BB\r\nContent-Type: application/pdf\r\n"
                "Content-Disposition: attachment; filename=\"r.pdf\"\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--BB--\r\n").encode()
        r = self.graph("POST", "/users/%s/sendMail" % ALICE, self.tok,
                       body=base64.b64encode(mime), headers={"Content-Type": "text/plain"})
        self.assertEqual(r.status, 202, r.body)
        rec = self.sent()[0]
        self.assertEqual(rec["source"], "mime")
        self.assertEqual(rec["resource"]["internetMessageId"], "<abc123@nextal.test>")
        self.assertEqual(rec["attachments"][0]["name"], "r.pdf")
        self.assertEqual(rec["attachments"][0]["size"], 5)
        self.assertEqual(sorted(x["address"] for x in rec["recipients"]),
                         [BOB, "x@example.org"])
        mid = rec["resource"]["id"]
        got = self.graph("GET", "/users/%s/messages/%s/$value" % (ALICE, mid), self.tok)
        self.assertEqual(got.body, mime)

    def test_send_validation_errors(self):
        self.assertGraphError(self.send(mail_json(to=())), 400, "ErrorInvalidRecipients")
        self.assertGraphError(self.send(mail_json(to=("not an address",))), 400,
                              "ErrorInvalidRecipients")
        r = self.send(mail_json(internetMessageHeaders=[{"name": "List-Unsubscribe",
                                                         "value": "<mailto:x@y>"}]))
        self.assertGraphError(r, 400, "InvalidInternetMessageHeader")
        self.assertIn("'List-Unsubscribe' should start with 'x-' or 'X-'",
                      r.json()["error"]["message"])
        r = self.graph("POST", "/users/%s/sendMail" % ALICE, self.tok, body=b"!!not base64!!",
                       headers={"Content-Type": "text/plain"})
        self.assertGraphError(r, 400, "ErrorMimeContentInvalidBase64String")
        bad_att = mail_json(attachments=[{"@odata.type": "#microsoft.graph.fileAttachment",
                                          "name": "x", "contentBytes": "%%%"}])
        self.assertEqual(self.send(bad_att).status, 400)
        big = mail_json(attachments=[{"@odata.type": "#microsoft.graph.fileAttachment",
                                      "name": "big", "contentBytes":
                                      base64.b64encode(b"x" * 3200000).decode()}])
        self.assertEqual(self.send(big).status, 413)
        self.assertEqual(self.sent(), [])
        stats = self.ctl("GET", "stats")["mailboxes"][ALICE]
        self.assertEqual(stats["sendmail_accepted"], 0)


class ThrottleFaultTests(SimTestCase):
    def setUp(self):
        super().setUp()
        self.tok = self.app_token()

    def fire(self, n, path="/users/%s/mailFolders/sentitems/messages" % ALICE):
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            return list(ex.map(lambda _: self.graph("GET", path, self.tok), range(n)))

    def test_concurrency_throttling(self):
        self.ctl("POST", "latency", {"ms": 400})
        results = self.fire(8)
        codes = sorted(r.status for r in results)
        self.assertEqual(codes.count(200), 4, codes)
        self.assertEqual(codes.count(429), 4, codes)
        for r in results:
            if r.status == 429:
                self.assertEqual(r.json()["error"]["code"], "ApplicationThrottled")
                self.assertEqual(r.json()["error"]["message"],
                                 "Application is over its MailboxConcurrency limit.")
                self.assertEqual(float(r.headers["Retry-After"]), 0.5)
        st = self.ctl("GET", "stats")["mailboxes"][ALICE]
        self.assertEqual(st["throttled_concurrency"], 4)
        self.assertEqual(st["max_concurrency"], 4)
        self.assertEqual(st["requests"], 8)

    def test_other_mailbox_not_affected(self):
        self.ctl("POST", "latency", {"ms": 300})
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            futs = [ex.submit(self.graph, "GET", "/users/%s/messages" % u, self.tok)
                    for u in (ALICE, BOB) for _ in range(4)]
            self.assertTrue(all(f.result().status == 200 for f in futs))

    def test_scripted_faults(self):
        self.ctl("POST", "faults", {"mailbox": ALICE, "operation": "sendMail", "count": 2,
                                    "fault": "503", "retry_after": "1"})
        r = self.graph("POST", "/users/%s/sendMail" % ALICE, self.tok, json_body=mail_json())
        self.assertGraphError(r, 503, "serviceNotAvailable")
        self.assertEqual(r.headers["Retry-After"], "1")
        # other operations and mailboxes are not affected
        self.assertEqual(self.graph("GET", "/users/%s/messages" % ALICE, self.tok).status, 200)
        r = self.graph("POST", "/users/%s/sendMail" % BOB, self.tok, json_body=mail_json())
        self.assertEqual(r.status, 202)
        self.assertEqual(self.graph("POST", "/users/%s/sendMail" % ALICE, self.tok,
                                    json_body=mail_json()).status, 503)
        self.assertEqual(self.graph("POST", "/users/%s/sendMail" % ALICE, self.tok,
                                    json_body=mail_json()).status, 202)
        st = self.ctl("GET", "stats")["mailboxes"][ALICE]
        self.assertEqual(st["faults_injected"], {"503": 2})
        self.assertEqual(st["sendmail_accepted"], 1)
        self.assertEqual(st["operations"], {"sendMail": 3, "listMessages": 1})

    def test_request_log(self):
        self.ctl("POST", "faults", {"mailbox": ALICE, "operation": "sendMail", "count": 1,
                                    "fault": "429", "retry_after": "1"})
        self.graph("POST", "/users/%s/sendMail" % ALICE, self.tok, json_body=mail_json())
        self.graph("POST", "/users/%s/sendMail" % ALICE, self.tok, json_body=mail_json())
        self.graph("GET", "/users/%s/messages" % ALICE, self.tok)
        self.graph("POST", "/users/%s/sendMail" % BOB, self.tok, json_body=mail_json())
        got = self.ctl("GET", "requests?mailbox=%s&operation=sendMail" % ALICE)["requests"]
        self.assertEqual([(e["status"], e["fault"]) for e in got], [(429, "429"), (202, None)])
        self.assertLessEqual(got[0]["at"], got[0]["done"])
        self.assertLessEqual(got[0]["done"], got[1]["at"])
        self.assertEqual(len(self.ctl("GET", "requests")["requests"]), 4)
        self.ctl("POST", "reset")
        self.assertEqual(self.ctl("GET", "requests")["requests"], [])

    def test_rate_faults_and_429_shape(self):
        self.ctl("POST", "faults", {"fault": "429", "probability": 1.0, "retry_after": "2.128"})
        r = self.graph("GET", "/users/%s/messages" % ALICE, self.tok)
        self.assertGraphError(r, 429, "TooManyRequests")
        self.assertEqual(r.headers["Retry-After"], "2.128")
        self.assertEqual(r.json()["error"]["innerError"]["status"], "429")
        st = self.ctl("GET", "stats")["mailboxes"][ALICE]
        self.assertEqual(st["throttled_injected"], 1)
        self.ctl("POST", "faults", {"clear": True})
        self.ctl("POST", "faults", {"fault": "500", "count": 1})
        self.assertGraphError(self.graph("GET", "/users/%s/messages" % ALICE, self.tok), 500,
                              "generalException")

    def test_drop_and_after_faults(self):
        self.ctl("POST", "faults", {"fault": "drop", "count": 1, "operation": "sendMail",
                                    "after": True})
        with self.assertRaises((urllib.error.URLError, http.client.HTTPException,
                                ConnectionError)):
            self.graph("POST", "/users/%s/sendMail" % ALICE, self.tok, json_body=mail_json())
        # the send happened before the reply was lost
        self.assertEqual(len(self.ctl("GET", "mailboxes/%s/sent" % ALICE)["messages"]), 1)


def ev_body(subject="Sync", start="2030-03-04T09:00:00", end="2030-03-04T10:00:00",
            tz="W. Europe Standard Time", **extra):
    body = {"subject": subject, "body": {"contentType": "HTML", "content": "<p>x</p>"},
            "start": {"dateTime": start, "timeZone": tz},
            "end": {"dateTime": end, "timeZone": tz}}
    body.update(extra)
    return body


ATTENDEES = [{"emailAddress": {"address": BOB, "name": "Bob"}, "type": "required"},
             {"emailAddress": {"address": "ext@example.org"}, "type": "optional"}]


class CalendarTests(SimTestCase):
    def setUp(self):
        super().setUp()
        self.tok = self.app_token()

    def create(self, body, user=ALICE, headers=None):
        return self.graph("POST", "/users/%s/events" % user, self.tok, json_body=body,
                          headers=headers)

    def invitations(self, user=ALICE):
        return self.ctl("GET", "calendars/%s/invitations" % user)["invitations"]

    def window(self, path, start, end, headers=None):
        q = urllib.parse.urlencode({"startDateTime": start, "endDateTime": end})
        return self.graph("GET", "%s?%s" % (path, q), self.tok, headers=headers)

    def test_create_teams_event_utc_and_prefer_zone(self):
        r = self.create(ev_body(attendees=ATTENDEES, isOnlineMeeting=True,
                                onlineMeetingProvider="teamsForBusiness"))
        self.assertEqual(r.status, 201, r.body)
        ev = r.json()
        self.assertEqual(ev["start"], {"dateTime": "2030-03-04T08:00:00.0000000",
                                       "timeZone": "UTC"})
        self.assertEqual(ev["originalStartTimeZone"], "W. Europe Standard Time")
        self.assertTrue(ev["onlineMeeting"]["joinUrl"].startswith("https://teams.microsoft.com/"))
        self.assertEqual(ev["attendees"][0]["status"]["response"], "none")
        self.assertEqual(ev["@odata.etag"], 'W/"%s"' % ev["changeKey"])
        inv = self.invitations()
        self.assertEqual(inv[0]["kind"], "request")
        self.assertEqual(inv[0]["to"], [BOB, "ext@example.org"])
        got = self.graph("GET", "/users/%s/events/%s" % (ALICE, ev["id"]), self.tok,
                         headers={"Prefer": 'outlook.timezone="Pacific Standard Time"'})
        self.assertEqual(got.json()["start"]["dateTime"], "2030-03-04T00:00:00.0000000")
        self.assertEqual(got.json()["start"]["timeZone"], "Pacific Standard Time")
        self.assertIn("outlook.timezone", got.headers["Preference-Applied"])

    def test_time_zones(self):
        r = self.create(ev_body(tz="Mars Standard Time"))
        self.assertGraphError(r, 400, "TimeZoneNotSupportedException")
        self.assertIn("'Mars Standard Time'", r.json()["error"]["message"])
        r = self.create(ev_body(tz="Asia/Kolkata"))
        self.assertEqual(r.status, 201, r.body)
        self.assertEqual(r.json()["start"]["dateTime"], "2030-03-04T03:30:00.0000000")
        r = self.create(ev_body(end="2030-03-04T08:00:00"))
        self.assertEqual(r.status, 400)

    def test_transaction_id_dedup(self):
        a = self.create(ev_body(transactionId="txn-1", attendees=ATTENDEES)).json()
        b = self.create(ev_body(transactionId="txn-1", attendees=ATTENDEES)).json()
        self.assertEqual(a["id"], b["id"])
        self.assertEqual(b["transactionId"], "txn-1")
        self.assertEqual(len(self.ctl("GET", "calendars/%s/events" % ALICE)["events"]), 1)
        self.assertEqual(len(self.invitations()), 1)

    def test_patch_changes_change_key_and_if_match(self):
        ev = self.create(ev_body(attendees=ATTENDEES)).json()
        path = "/users/%s/events/%s" % (ALICE, ev["id"])
        r = self.graph("PATCH", path, self.tok, json_body={"subject": "Moved",
                       "start": {"dateTime": "2030-03-05T09:00:00", "timeZone": "UTC"},
                       "end": {"dateTime": "2030-03-05T10:00:00", "timeZone": "UTC"}})
        self.assertEqual(r.status, 200, r.body)
        ev2 = r.json()
        self.assertNotEqual(ev2["changeKey"], ev["changeKey"])
        self.assertNotEqual(ev2["@odata.etag"], ev["@odata.etag"])
        self.assertEqual(ev2["subject"], "Moved")
        self.assertEqual(self.invitations()[-1]["kind"], "update")
        # attendee-only change mails only the added/removed ones
        self.graph("PATCH", path, self.tok, json_body={"attendees": ATTENDEES[:1] + [
            {"emailAddress": {"address": CAROL}}]})
        kinds = {(i["kind"], tuple(i["to"])) for i in self.invitations()[-2:]}
        self.assertEqual(kinds, {("request", (CAROL,)), ("cancel", ("ext@example.org",))})
        stale = self.graph("PATCH", path, self.tok, json_body={"subject": "x"},
                           headers={"If-Match": ev["@odata.etag"]})
        self.assertEqual(stale.status, 412)
        # an edit "in Outlook" changes the change key too
        before = self.graph("GET", path, self.tok).json()["changeKey"]
        r = self.http("PATCH", "/_sim/calendars/%s/events/%s" % (ALICE, ev["id"]),
                      json_body={"location": {"displayName": "Room 1"}})
        self.assertEqual(r.status, 200, r.body)
        after = self.graph("GET", path, self.tok).json()
        self.assertNotEqual(after["changeKey"], before)
        self.assertEqual(after["location"]["displayName"], "Room 1")

    def test_delete_and_cancel(self):
        ev = self.create(ev_body(attendees=ATTENDEES)).json()
        r = self.graph("POST", "/users/%s/events/%s/cancel" % (ALICE, ev["id"]), self.tok,
                       json_body={"comment": "sorry"})
        self.assertEqual(r.status, 202)
        self.assertEqual(r.body, b"")
        inv = self.invitations()[-1]
        self.assertEqual((inv["kind"], inv["comment"]), ("cancel", "sorry"))
        self.assertGraphError(self.graph("GET", "/users/%s/events/%s" % (ALICE, ev["id"]),
                                         self.tok), 404, "ErrorItemNotFound")
        ev = self.create(ev_body(attendees=ATTENDEES)).json()
        r = self.graph("DELETE", "/users/%s/events/%s" % (ALICE, ev["id"]), self.tok)
        self.assertEqual(r.status, 204)
        self.assertEqual(self.invitations()[-1]["kind"], "cancel")
        # attendee's copy cannot be cancelled
        copy = self.http("POST", "/_sim/calendars/%s/events" % BOB, json_body=ev_body(
            organizer={"emailAddress": {"address": ALICE, "name": "Alice"}})).json()
        r = self.graph("POST", "/users/%s/events/%s/cancel" % (BOB, copy["id"]), self.tok,
                       json_body={})
        self.assertEqual(r.status, 400)
        self.assertIn("organizer", r.json()["error"]["message"])

    def test_weekly_series_instances_and_exceptions(self):
        rec = {"pattern": {"type": "weekly", "interval": 1,
                           "daysOfWeek": ["monday", "wednesday"]},
               "range": {"type": "numbered", "startDate": "2030-03-04",
                         "numberOfOccurrences": 6}}
        bad = dict(rec, range=dict(rec["range"], startDate="2030-03-05"))
        self.assertGraphError(self.create(ev_body(recurrence=bad)), 400,
                              "ErrorPropertyValidationFailure")
        master = self.create(ev_body(recurrence=rec, attendees=ATTENDEES)).json()
        self.assertEqual(master["type"], "seriesMaster")
        path = "/users/%s/events/%s/instances" % (ALICE, master["id"])
        occ = self.window(path, "2030-03-01T00:00:00Z", "2030-04-30T00:00:00Z").json()["value"]
        self.assertEqual([o["start"]["dateTime"][:10] for o in occ],
                         ["2030-03-04", "2030-03-06", "2030-03-11", "2030-03-13",
                          "2030-03-18", "2030-03-20"])
        self.assertTrue(all(o["seriesMasterId"] == master["id"] for o in occ))
        self.assertEqual(len({o["iCalUId"] for o in occ}), 6)
        # delete one occurrence, move another (exception)
        r = self.graph("DELETE", "/users/%s/events/%s" % (ALICE, occ[1]["id"]), self.tok)
        self.assertEqual(r.status, 204)
        self.assertEqual(self.invitations()[-1]["occurrence"], occ[1]["id"])
        r = self.graph("PATCH", "/users/%s/events/%s" % (ALICE, occ[2]["id"]), self.tok,
                       json_body={"subject": "Special",
                                  "start": {"dateTime": "2030-03-12T10:00:00", "timeZone": "UTC"},
                                  "end": {"dateTime": "2030-03-12T11:00:00", "timeZone": "UTC"}})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["type"], "exception")
        r = self.graph("PATCH", "/users/%s/events/%s" % (ALICE, occ[3]["id"]), self.tok,
                       json_body={"start": {"dateTime": "2030-03-18T10:00:00",
                                            "timeZone": "UTC"},
                                  "end": {"dateTime": "2030-03-18T11:00:00", "timeZone": "UTC"}})
        self.assertGraphError(r, 400, "ErrorOccurrenceCrossingBoundary")
        occ2 = self.window(path, "2030-03-01T00:00:00Z", "2030-04-30T00:00:00Z").json()["value"]
        self.assertEqual(len(occ2), 5)
        special = [o for o in occ2 if o["type"] == "exception"][0]
        self.assertEqual(special["subject"], "Special")
        self.assertEqual(special["start"]["dateTime"], "2030-03-12T10:00:00.0000000")

    def test_other_patterns(self):
        cases = [
            ({"type": "daily", "interval": 2}, {"type": "endDate", "startDate": "2030-03-04",
                                                "endDate": "2030-03-10"},
             ["2030-03-04", "2030-03-06", "2030-03-08", "2030-03-10"]),
            ({"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 4},
             {"type": "numbered", "startDate": "2030-03-04", "numberOfOccurrences": 3},
             ["2030-03-04", "2030-04-04", "2030-05-04"]),
            ({"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["monday"],
              "index": "first"},
             {"type": "numbered", "startDate": "2030-03-04", "numberOfOccurrences": 3},
             ["2030-03-04", "2030-04-01", "2030-05-06"]),
            ({"type": "absoluteYearly", "interval": 1, "dayOfMonth": 4, "month": 3},
             {"type": "noEnd", "startDate": "2030-03-04"},
             ["2030-03-04", "2031-03-04", "2032-03-04"]),
        ]
        for pattern, rng, want in cases:
            with self.subTest(pattern=pattern["type"]):
                m = self.create(ev_body(recurrence={"pattern": pattern, "range": rng}))
                self.assertEqual(m.status, 201, m.body)
                occ = self.window("/users/%s/events/%s/instances" % (ALICE, m.json()["id"]),
                                  "2030-03-01T00:00:00Z", "2032-12-31T00:00:00Z",
                                  headers={"Prefer": "odata.maxpagesize=50"}).json()["value"]
                self.assertEqual([o["start"]["dateTime"][:10] for o in occ], want)

    def test_calendar_view_paging(self):
        rec = {"pattern": {"type": "daily", "interval": 1},
               "range": {"type": "numbered", "startDate": "2030-03-04",
                         "numberOfOccurrences": 12}}
        self.create(ev_body(recurrence=rec))
        self.create(ev_body(subject="single", start="2030-03-05T12:00:00",
                            end="2030-03-05T13:00:00"))
        r = self.window("/users/%s/calendarView" % ALICE, "2030-03-01T00:00:00Z",
                        "2030-04-01T00:00:00Z")
        seen = []
        while True:
            self.assertEqual(r.status, 200, r.body)
            j = r.json()
            seen.extend(j["value"])
            if "@odata.nextLink" not in j:
                break
            link = j["@odata.nextLink"]
            self.assertTrue(link.startswith(self.base))
            r = self.graph("GET", link[len(self.base) + len("/v1.0"):], self.tok)
        self.assertEqual(len(seen), 13)
        self.assertTrue(all(o["type"] != "seriesMaster" for o in seen))
        self.assertEqual(self.http("GET", "/v1.0/users/%s/calendarView" % ALICE,
                                   headers={"Authorization": "Bearer " + self.tok}).status, 400)

    def test_get_schedule(self):
        self.create(ev_body(start="2030-03-04T10:00:00", end="2030-03-04T11:00:00", tz="UTC"))
        body = {"schedules": [ALICE, "nobody@contoso.example"],
                "startTime": {"dateTime": "2030-03-04T09:00:00", "timeZone": "UTC"},
                "endTime": {"dateTime": "2030-03-04T12:00:00", "timeZone": "UTC"},
                "availabilityViewInterval": 60}
        r = self.graph("POST", "/users/%s/calendar/getSchedule" % ALICE, self.tok,
                       json_body=body)
        self.assertEqual(r.status, 200, r.body)
        v = r.json()["value"]
        self.assertEqual(v[0]["availabilityView"], "020")
        self.assertEqual(v[0]["scheduleItems"][0]["status"], "busy")
        self.assertIn("error", v[1])
        too_many = dict(body, schedules=["u%d@contoso.example" % i for i in range(21)])
        self.assertEqual(self.graph("POST", "/users/%s/calendar/getSchedule" % ALICE, self.tok,
                                    json_body=too_many).status, 400)
        too_long = dict(body, endTime={"dateTime": "2030-05-06T00:00:00", "timeZone": "UTC"})
        self.assertEqual(self.graph("POST", "/users/%s/calendar/getSchedule" % ALICE, self.tok,
                                    json_body=too_long).status, 400)

    def test_delegated_scopes(self):
        j = self.sign_in(scope="openid offline_access Mail.Send")
        r = self.graph("POST", "/me/events", j["access_token"], json_body=ev_body())
        self.assertGraphError(r, 403, "ErrorAccessDenied")
        j = self.sign_in(scope="openid offline_access "
                         "https://graph.microsoft.com/Calendars.ReadWrite")
        r = self.graph("POST", "/me/events", j["access_token"], json_body=ev_body())
        self.assertEqual(r.status, 201, r.body)
        self.assertEqual(r.json()["organizer"]["emailAddress"]["address"], ALICE)

    def test_attendee_response(self):
        ev = self.create(ev_body(attendees=ATTENDEES)).json()
        r = self.http("POST", "/_sim/calendars/%s/events/%s/respond" % (ALICE, ev["id"]),
                      json_body={"attendee": BOB, "response": "accepted"})
        self.assertEqual(r.status, 200, r.body)
        got = self.graph("GET", "/users/%s/events/%s" % (ALICE, ev["id"]), self.tok).json()
        self.assertEqual(got["attendees"][0]["status"]["response"], "accepted")
        self.assertNotEqual(got["changeKey"], ev["changeKey"])


class LargeMailTests(SimTestCase):
    """Drafts, attachments, upload sessions and send (graph-api.md 2.4)."""

    CHUNK = 10 * 320 * 1024

    def draft(self, tok, **extra):
        msg = mail_json(**extra)["message"]
        r = self.graph("POST", "/users/%s/messages" % ALICE, tok, json_body=msg)
        self.assertEqual(r.status, 201, r.body)
        self.assertTrue(r.json()["isDraft"])
        return r.json()["id"]

    def session(self, tok, mid, size, name="big.bin"):
        return self.graph("POST", "/users/%s/messages/%s/attachments/createUploadSession"
                          % (ALICE, mid), tok,
                          json_body={"AttachmentItem": {"attachmentType": "file",
                                                        "name": name, "size": size}})

    def put(self, url, data, start, total, headers=None):
        h = {"Content-Type": "application/octet-stream",
             "Content-Range": "bytes %d-%d/%d" % (start, start + len(data) - 1, total)}
        h.update(headers or {})
        parts = urllib.parse.urlsplit(url)
        return self.http("PUT", parts.path + "?" + parts.query, body=data, headers=h)

    def upload(self, url, data):
        last = None
        for start in range(0, len(data), self.CHUNK):
            last = self.put(url, data[start:start + self.CHUNK], start, len(data))
        return last

    def test_draft_upload_send_lands_in_sent_items(self):
        tok = self.app_token()
        mid = self.draft(tok)
        small = b"small attachment"
        r = self.graph("POST", "/users/%s/messages/%s/attachments" % (ALICE, mid), tok,
                       json_body={"@odata.type": "#microsoft.graph.fileAttachment",
                                  "name": "a.txt",
                                  "contentBytes": base64.b64encode(small).decode()})
        self.assertEqual(r.status, 201, r.body)
        data = secrets.token_bytes(7 * 1024 * 1024 + 123)
        r = self.session(tok, mid, len(data))
        self.assertEqual(r.status, 201, r.body)
        self.assertEqual(r.json()["nextExpectedRanges"], ["0-"])
        url = r.json()["uploadUrl"]
        first = self.put(url, data[:self.CHUNK], 0, len(data))
        self.assertEqual(first.status, 200, first.body)
        self.assertEqual(first.json()["nextExpectedRanges"], [str(self.CHUNK)])
        last = None
        for start in range(self.CHUNK, len(data), self.CHUNK):
            last = self.put(url, data[start:start + self.CHUNK], start, len(data))
        self.assertEqual(last.status, 201, last.body)
        self.assertIn("Attachments(", last.headers.get("Location"))
        r = self.graph("GET", "/users/%s/messages/%s/attachments" % (ALICE, mid), tok)
        self.assertEqual(len(r.json()["value"]), 2)
        [draft] = self.ctl("GET", "drafts/" + ALICE)["drafts"]
        self.assertEqual(len(draft["attachments"]), 2)
        self.assertIsNone(draft["accepted_at"])
        self.assertEqual(self.ctl("GET", "mailboxes/%s/sent" % ALICE)["messages"], [])
        r = self.graph("POST", "/users/%s/messages/%s/send" % (ALICE, mid), tok, body=b"")
        self.assertEqual(r.status, 202, r.body)
        sent = self.ctl("GET", "mailboxes/%s/sent" % ALICE)["messages"]
        self.assertEqual(len(sent), 1)
        self.assertEqual(sent[0]["source"], "draft")
        shas = sorted(a["sha256"] for a in sent[0]["attachments"])
        self.assertEqual(shas, sorted([hashlib.sha256(small).hexdigest(),
                                       hashlib.sha256(data).hexdigest()]))
        self.assertEqual(self.ctl("GET", "drafts/" + ALICE)["drafts"], [])
        r = self.graph("POST", "/users/%s/messages/%s/send" % (ALICE, mid), tok, body=b"")
        self.assertGraphError(r, 404, "ErrorItemNotFound")

    def test_attachment_listing_honours_select_and_top(self):
        # A resumed upload counts a draft's attachments with $select: the
        # listing must not carry megabytes of contentBytes it did not ask for.
        tok = self.app_token()
        mid = self.draft(tok)
        for name in ("a.bin", "b.bin"):
            data = secrets.token_bytes(3 * 1024 * 1024 + 5)
            url = self.session(tok, mid, len(data), name).json()["uploadUrl"]
            self.assertEqual(self.upload(url, data).status, 201)
        path = "/users/%s/messages/%s/attachments" % (ALICE, mid)
        full = self.graph("GET", path, tok)
        self.assertIn("contentBytes", full.json()["value"][0])
        r = self.graph("GET", path + "?$select=id,name,size", tok)
        self.assertEqual(r.status, 200, r.body)
        self.assertLess(len(r.body), 2000)
        self.assertEqual([sorted(a) for a in r.json()["value"]],
                         [["@odata.type", "id", "name", "size"]] * 2)
        self.assertEqual([a["name"] for a in r.json()["value"]], ["a.bin", "b.bin"])
        r = self.graph("GET", path + "?$select=id&$top=1", tok)
        self.assertEqual(len(r.json()["value"]), 1)
        self.assertIn("$skip=1", urllib.parse.unquote(r.json()["@odata.nextLink"]))
        r = self.graph("GET", path + "?$select=id&$top=1&$skip=1", tok)
        self.assertEqual(len(r.json()["value"]), 1)
        self.assertNotIn("@odata.nextLink", r.json())

    def test_upload_session_rules(self):
        tok = self.app_token()
        mid = self.draft(tok)
        r = self.session(tok, mid, 3 * 1024 * 1024 - 1)
        self.assertGraphError(r, 400, "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize")
        data = secrets.token_bytes(5 * 1024 * 1024)
        url = self.session(tok, mid, len(data)).json()["uploadUrl"]
        tok_hdr = {"Authorization": "Bearer " + tok}
        self.assertEqual(self.put(url, data[:self.CHUNK], 0, len(data), tok_hdr).status, 401)
        self.assertEqual(self.put(url, data[:1000], 0, len(data)).status, 416)  # unaligned
        self.assertEqual(self.put(url, data[:5 * 1024 * 1024], 0, len(data)).status, 416)
        self.assertEqual(self.put(url, data[self.CHUNK:], self.CHUNK, len(data)).status, 416)
        self.assertEqual(self.put(url, data[:self.CHUNK], 0, len(data)).status, 200)
        self.assertEqual(self.put(url, data[self.CHUNK:], self.CHUNK, len(data)).status, 201)
        bad = urllib.parse.urlsplit(url)
        r = self.http("PUT", bad.path + "?authtoken=wrong", body=b"x",
                      headers={"Content-Range": "bytes 0-0/1"})
        self.assertIn(r.status, (401, 404))

    def test_message_size_limit(self):
        tok = self.app_token()
        self.ctl("POST", "limits", {"max_message_size": 4 * 1024 * 1024})
        mid = self.draft(tok)
        r = self.session(tok, mid, 5 * 1024 * 1024)
        self.assertGraphError(r, 400, "ErrorMessageSizeExceeded")
        self.ctl("POST", "reset")
        self.assertEqual(self.ctl("POST", "limits", {})["max_message_size"],
                         35 * 1024 * 1024)

    def test_draft_delete_and_small_attachment_limit(self):
        tok = self.app_token()
        mid = self.draft(tok)
        big = base64.b64encode(b"x" * (3 * 1024 * 1024)).decode()
        r = self.graph("POST", "/users/%s/messages/%s/attachments" % (ALICE, mid), tok,
                       json_body={"name": "big", "contentBytes": big})
        self.assertEqual(r.status, 413)
        self.assertEqual(self.graph("DELETE", "/users/%s/messages/%s" % (ALICE, mid),
                                    tok).status, 204)
        r = self.graph("POST", "/users/%s/messages/%s/send" % (ALICE, mid), tok, body=b"")
        self.assertGraphError(r, 404, "ErrorItemNotFound")

    def test_mime_calendar_part_is_an_invitation(self):
        tok = self.app_token()
        raw = ("From: alice@contoso.example\r\nTo: bob@contoso.example\r\n"
               "Subject: Interview\r\nMIME-Version: 1.0\r\n"
               "Content-Type: text/calendar; method=REQUEST; charset=utf-8\r\n\r\n"
               "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n")
        r = self.graph("POST", "/users/%s/sendMail" % ALICE, tok,
                       body=base64.b64encode(raw.encode()),
                       headers={"Content-Type": "text/plain"})
        self.assertEqual(r.status, 202, r.body)
        sent = self.ctl("GET", "mailboxes/%s/sent" % ALICE)["messages"][0]
        self.assertEqual(sent["calendar"][0]["method"], "REQUEST")
        self.assertEqual(sent["resource"]["meetingMessageType"], "meetingRequest")


if __name__ == "__main__":
    unittest.main()
