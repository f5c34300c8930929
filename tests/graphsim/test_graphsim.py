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

    def sign_in(self, login_hint=ALICE, scope="openid offline_access Mail.Send Mail.Read"):
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


if __name__ == "__main__":
    unittest.main()
