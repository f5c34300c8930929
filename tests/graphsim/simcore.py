"""Shared plumbing for the Microsoft Graph simulator.

Holds the reply type, the error-body builders (OAuth and Graph shapes), the
configuration loader and the mutable simulator state (users, tokens, consent,
faults, stats, concurrency counters).  Everything mutable is guarded by
``State.lock``; handlers keep their critical sections short.

Source keys in brackets refer to /work/shared/reference/graph-api.md §0.
"""

import base64
import collections
import datetime as _dt
import json
import secrets
import threading
import time
import uuid

REQUEST_LOG_MAX = 2000  # Graph requests kept for GET /_sim/requests


# ---------------------------------------------------------------------------
# small helpers

def new_guid():
    return str(uuid.uuid4())


def utcnow():
    return _dt.datetime.now(_dt.timezone.utc)


def iso_z(when=None, frac=False):
    """ISO-8601 UTC with trailing Z, as Graph prints sentDateTime etc. [G-MSG]."""
    when = when or utcnow()
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if frac else "%Y-%m-%dT%H:%M:%SZ"
    return when.astimezone(_dt.timezone.utc).strftime(fmt)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def random_token(nbytes=32):
    return secrets.token_urlsafe(nbytes)


def immutable_id():
    """Opaque, case-sensitive, base64-looking id like Outlook's [G-IMM]."""
    return "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A" + b64url(secrets.token_bytes(33))


class Reply:
    """An HTTP answer: status, headers and a body of bytes."""

    def __init__(self, status, body=b"", headers=None, content_type=None):
        self.status = status
        self.body = body if isinstance(body, bytes) else body.encode("utf-8")
        self.headers = list(headers or [])
        if content_type and self.body:
            self.headers.append(("Content-Type", content_type))
        self.drop = False  # close the socket without writing anything

    def header(self, name, value):
        self.headers.append((name, value))
        return self


def json_reply(status, obj, headers=None):
    body = json.dumps(obj, indent=None, separators=(",", ":")).encode("utf-8")
    return Reply(status, body, headers, "application/json; charset=utf-8")


def text_reply(status, text, ctype="text/plain; charset=utf-8"):
    return Reply(status, text, None, ctype)


def drop_reply():
    r = Reply(0)
    r.drop = True
    return r


# ---------------------------------------------------------------------------
# error bodies

def oauth_error(status, error, code, description):
    """OAuth JSON error of the v2 token endpoint [E-CC] [E-ERR]:
    error, error_description ("AADSTSnnnn: ..."), error_codes, timestamp,
    trace_id, correlation_id (error_uri optional)."""
    now = utcnow()
    body = {
        "error": error,
        "error_description": "AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s"
        % (code, description, new_guid(), new_guid(), now.strftime("%Y-%m-%d %H:%M:%SZ")),
        "error_codes": [code],
        "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": new_guid(),
        "correlation_id": new_guid(),
        "error_uri": "https://login.microsoftonline.com/error?code=%d" % code,
    }
    return json_reply(status, body)


def graph_error(status, code, message, request_id=None, headers=None, inner=None):
    """Graph error shape [G-ERRS]: {"error":{"code","message","innerError":
    {"request-id","date","client-request-id"}}}."""
    rid = request_id or new_guid()
    inner_err = {"date": utcnow().strftime("%Y-%m-%dT%H:%M:%S"),
                 "request-id": rid, "client-request-id": rid}
    if inner:
        inner_err.update(inner)
    return json_reply(status, {"error": {"code": code, "message": message,
                                         "innerError": inner_err}}, headers)


# ---------------------------------------------------------------------------
# configuration

class Config:
    """Parsed CONFIG.json (format documented in README.md)."""

    def __init__(self, raw):
        self.raw = raw
        self.tenant_id = raw["tenant_id"].lower()
        self.tenant_domain = raw.get("tenant_domain", "contoso.example").lower()
        self.token_lifetime_s = int(raw.get("token_lifetime_s", 3599))
        # Refresh tokens expire after 90 days of inactivity [E-RT].
        self.refresh_inactivity_s = int(raw.get("refresh_token_inactivity_s", 90 * 86400))
        self.concurrency_limit = int(raw.get("concurrency_limit", 4))
        self.throttle_retry_after = str(raw.get("throttle_retry_after", "0.5"))
        self.clients = {c["client_id"]: dict(c) for c in raw.get("clients", [])}
        self.users = [dict(u) for u in raw.get("users", [])]

    @classmethod
    def load(cls, path):
        with open(path, "r", encoding="utf-8") as fh:
            return cls(json.load(fh))


class User:
    """A directory user; the mailbox lives in ``State.mail`` / ``State.events``."""

    def __init__(self, spec, domain):
        self.address = spec["address"].lower()
        self.display_name = spec.get("display_name", self.address.split("@")[0])
        self.id = spec.get("id") or new_guid()
        self.upn = spec.get("upn", spec["address"])
        self.disabled = bool(spec.get("disabled", False))
        self.mailbox = bool(spec.get("mailbox", True))
        # addresses this mailbox may put in `from` (Send As / on Behalf) [G-OTHER]
        self.send_as = {a.lower() for a in spec.get("send_as", [])}
        self.tokens_valid_from = 0.0  # refresh tokens issued before this are revoked

    def resource(self):
        # user resource subset [G-OTHER]/https://learn.microsoft.com/en-us/graph/api/resources/user
        # A directory user without an Exchange Online mailbox (no licence)
        # is still found (200) with mail null [obs]; only mailbox calls
        # answer 404 MailboxNotEnabledForRESTAPI (graph-api.md §5).
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
            "businessPhones": [], "displayName": self.display_name,
            "givenName": self.display_name.split(" ")[0],
            "surname": self.display_name.split(" ")[-1],
            "jobTitle": None, "mail": self.address if self.mailbox else None,
            "mobilePhone": None, "officeLocation": None, "preferredLanguage": "en-US",
            "userPrincipalName": self.upn, "id": self.id,
        }


class Stats:
    """Per-mailbox counters for /_sim/stats."""

    def __init__(self):
        self.per_mailbox = {}

    def bucket(self, mailbox):
        return self.per_mailbox.setdefault(mailbox, {
            "requests": 0, "throttled_concurrency": 0, "throttled_injected": 0,
            "faults_injected": {}, "max_concurrency": 0, "sendmail_accepted": 0,
        })

    def snapshot(self):
        out = {}
        for mbx, b in self.per_mailbox.items():
            c = dict(b)
            c["faults_injected"] = dict(b["faults_injected"])
            c["throttled_total"] = c["throttled_concurrency"] + c["throttled_injected"]
            out[mbx] = c
        return out


class State:
    """All mutable simulator state."""

    def __init__(self, config, latency_ms=0):
        self.config = config
        self.lock = threading.RLock()
        self.latency_ms = latency_ms
        self.concurrency_limit = config.concurrency_limit
        self.throttle_retry_after = config.throttle_retry_after
        self.users = {}
        for spec in config.users:
            u = User(spec, config.tenant_domain)
            self.users[u.address] = u
        # consent: client_id -> {"admin": bool, "users": set(addresses)}
        self.consent = {}
        for cid, c in config.clients.items():
            self.consent[cid] = {"admin": bool(c.get("admin_consent_granted", False)),
                                 "users": set()}
        self.access_tokens = {}   # token -> dict
        self.refresh_tokens = {}  # token -> dict
        self.auth_codes = {}      # code -> dict
        self.signin_override = None   # {"as": addr, "once": bool}
        self.signin_decline = 0       # number of next sign-ins to decline
        self.id_token_omit = set()    # claims left out of every id_token
        self.consent_failure = None   # next adminconsent failure kind
        self.reset_runtime()

    def reset_runtime(self):
        """Clear mail, events, faults, stats (config, tokens and consent stay)."""
        with self.lock:
            self.mail = {}          # address -> list of stored sent messages
            self.deliveries = []    # per-recipient delivery records
            self.events = {}        # address -> {event_id: event}
            self.invitations = {}   # address -> list of invitation records
            self.fault_rules = []
            self.stats = Stats()
            self.inflight = {}      # (client_id, mailbox) -> count
            self.transactions = {}  # (address, transactionId) -> event id
            self.occurrences = {}   # address -> {occurrence id: (master id, key)}
            self.drafts = {}        # address -> {draft id: stored draft}
            self.upload_sessions = {}  # session id -> upload in progress
            self.max_message_size = None  # POST /_sim/limits override
            # the last REQUEST_LOG_MAX Graph requests, for GET /_sim/requests
            self.graph_requests = collections.deque(maxlen=REQUEST_LOG_MAX)

    # -- users -------------------------------------------------------------
    def find_user(self, ident):
        """Look a user up by address, UPN or object id (case-insensitive)."""
        if not ident:
            return None
        key = ident.lower()
        if key in self.users:
            return self.users[key]
        for u in self.users.values():
            if u.id.lower() == key or u.upn.lower() == key:
                return u
        return None

    # -- tenant ------------------------------------------------------------
    def tenant_matches(self, segment):
        s = segment.lower()
        return s in (self.config.tenant_id, self.config.tenant_domain)

    # -- tokens ------------------------------------------------------------
    def issue_access_token(self, client_id, user=None, scopes=(), roles=False):
        tok = "eyJ0eXAiOiJKV1QiLCJzaW0iOiJncmFwaHNpbSJ9." + random_token(32)
        rec = {"client_id": client_id, "user": user.address if user else None,
               "scopes": list(scopes), "roles": roles,
               "expires": time.time() + self.config.token_lifetime_s}
        with self.lock:
            self.access_tokens[tok] = rec
        return tok

    def issue_refresh_token(self, client_id, user, scopes):
        tok = "0.ARsim." + random_token(48)
        now = time.time()
        with self.lock:
            self.refresh_tokens[tok] = {"client_id": client_id, "user": user.address,
                                        "scopes": list(scopes), "issued": now,
                                        "last_used": now}
        return tok

    def has_consent(self, client_id, address=None):
        c = self.consent.get(client_id)
        if not c:
            return False
        return c["admin"] or (address is not None and address in c["users"])


class Request:
    """What a route handler sees of an HTTP request."""

    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path            # percent-decoded path without query
        self.query = query          # dict name -> first value
        self.headers = headers      # http.client.HTTPMessage (case-insensitive)
        self.body = body
        self.request_id = new_guid()

    def json(self):
        """Parse the body as JSON; returns None when it is not valid JSON."""
        try:
            return json.loads(self.body.decode("utf-8") or "null")
        except (ValueError, UnicodeDecodeError):
            return None

    def content_type(self):
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
