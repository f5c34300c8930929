"""Control and test read-side API of the simulator, under /_sim/ (no auth, JSON).

  GET  /_sim/health                          200 {"status":"ok"}
  GET  /_sim/stats                           per-mailbox counters
  POST /_sim/reset                           clear mail, events, faults, stats
  GET  /_sim/faults   POST /_sim/faults      list / add rule / {"clear":true}
  POST /_sim/latency  {"ms": N}
  POST /_sim/throttle {"limit": 4, "retry_after": "0.5"}
  POST /_sim/signin   {"as": addr|null, "once": bool, "decline": N|bool,
                       "omit_claims": [claim, ...]}  (id_token claims to drop)
  POST /_sim/consent  {"client_id"?, "granted": bool, "next_failure": ...}
  POST /_sim/certificates {"client_id"?, "certificates": [pem, ...]}
                                             replace the app's certificates
  GET  /_sim/tokens[?user=addr]              token requests, oldest first
  POST /_sim/users/{address} {"disabled","mailbox","upn","revoke_tokens",
                              "expire_refresh_tokens"}
  POST /_sim/tokens   {"expire_access_tokens": true, "user"?: addr}
  GET  /_sim/mailboxes/{address}/sent        accepted messages (full records)
  GET  /_sim/deliveries                      per-recipient delivery records
  (calendar routes are added by events.py)
"""

import time

import certs
import faults
import identity
import mail
from simcore import json_reply

EXTRA_ROUTES = []  # (method, first path segment, handler) registered by other modules


def bad_request(message):
    return json_reply(400, {"error": message})


def not_found(message="not found"):
    return json_reply(404, {"error": message})


def handle(state, req):
    segs = [s for s in req.path[len("/_sim/"):].split("/") if s]
    if not segs:
        return not_found()
    body = req.json() if req.body else {}
    if req.body and body is None:
        return bad_request("body is not JSON")
    body = body or {}
    key = (req.method, segs[0])
    table = {
        ("GET", "health"): lambda: json_reply(200, {"status": "ok"}),
        ("GET", "stats"): lambda: stats(state),
        ("POST", "reset"): lambda: reset(state),
        ("GET", "faults"): lambda: list_faults(state),
        ("POST", "faults"): lambda: add_fault(state, body),
        ("POST", "latency"): lambda: set_latency(state, body),
        ("POST", "throttle"): lambda: set_throttle(state, body),
        ("POST", "signin"): lambda: set_signin(state, body),
        ("POST", "consent"): lambda: set_consent(state, body),
        ("GET", "consent"): lambda: get_consent(state),
        ("POST", "certificates"): lambda: set_certificates(state, body),
        ("POST", "users"): lambda: modify_user(state, segs, body),
        ("GET", "users"): lambda: list_users(state),
        ("POST", "tokens"): lambda: expire_tokens(state, body),
        ("GET", "tokens"): lambda: token_requests(state, req.query.get("user")),
        ("GET", "mailboxes"): lambda: mailbox_sent(state, segs),
        ("GET", "deliveries"): lambda: deliveries(state),
    }
    fn = table.get(key)
    if fn:
        return fn()
    for method, first, handler in EXTRA_ROUTES:
        if method == req.method and first == segs[0]:
            return handler(state, req, segs, body)
    return not_found("no control route %s %s" % (req.method, req.path))


def stats(state):
    with state.lock:
        snap = state.stats.snapshot()
        for counters in snap.values():
            counters["operations"] = dict(counters.get("operations", {}))
        inflight = {"%s|%s" % k: v for k, v in state.inflight.items() if v}
    return json_reply(200, {"mailboxes": snap, "inflight": inflight,
                            "latency_ms": state.latency_ms,
                            "concurrency_limit": state.concurrency_limit})


def reset(state):
    state.reset_runtime()
    with state.lock:
        state.signin_override = None
        state.signin_decline = 0
        state.id_token_omit = set()
        state.consent_failure = None
        identity.token_log(state).clear()
    return json_reply(200, {"reset": True})


def list_faults(state):
    with state.lock:
        return json_reply(200, {"rules": [r.view() for r in state.fault_rules]})


def add_fault(state, body):
    if body.get("clear"):
        with state.lock:
            state.fault_rules = []
        return json_reply(200, {"rules": []})
    try:
        rule = faults.FaultRule(body)
    except (ValueError, TypeError) as exc:
        return bad_request(str(exc))
    with state.lock:
        state.fault_rules.append(rule)
    return json_reply(200, rule.view())


def set_latency(state, body):
    try:
        state.latency_ms = max(0, int(body.get("ms", body.get("latency_ms", 0))))
    except (TypeError, ValueError):
        return bad_request("ms must be an integer")
    return json_reply(200, {"latency_ms": state.latency_ms})


def set_throttle(state, body):
    with state.lock:
        if "limit" in body:
            state.concurrency_limit = int(body["limit"])
        if "retry_after" in body:
            state.throttle_retry_after = str(body["retry_after"])
    return json_reply(200, {"limit": state.concurrency_limit,
                            "retry_after": state.throttle_retry_after})


def set_signin(state, body):
    with state.lock:
        if "as" in body:
            who = body["as"]
            state.signin_override = {"as": who, "once": bool(body.get("once"))} if who else None
        if "decline" in body:
            d = body["decline"]
            state.signin_decline = (1 if d else 0) if isinstance(d, bool) else int(d)
        if "omit_claims" in body:
            state.id_token_omit = set(body["omit_claims"] or [])
        view = {"override": state.signin_override, "decline": state.signin_decline,
                "omit_claims": sorted(state.id_token_omit)}
    return json_reply(200, view)


def default_client(state, body):
    cid = body.get("client_id")
    if cid:
        return cid if cid in state.config.clients else None
    return next(iter(state.config.clients), None)


def set_consent(state, body):
    """granted true/false sets admin consent; false also drops user consents.
    next_failure: a kind of identity.CONSENT_FAILURES for the next adminconsent."""
    cid = default_client(state, body)
    if cid is None:
        return bad_request("unknown client_id")
    kind = body.get("next_failure")
    if kind and kind not in identity.CONSENT_FAILURES:
        return bad_request("next_failure must be one of %s"
                           % ", ".join(sorted(identity.CONSENT_FAILURES)))
    with state.lock:
        entry = state.consent.setdefault(cid, {"admin": False, "users": set()})
        if "granted" in body:
            entry["admin"] = bool(body["granted"])
            if not body["granted"]:
                entry["users"].clear()
                if body.get("revoke_app_tokens"):
                    for rec in state.access_tokens.values():
                        if rec["client_id"] == cid and rec["user"] is None:
                            rec["roles"] = False
        if "next_failure" in body:
            state.consent_failure = body["next_failure"] or None
    return get_consent(state)


def set_certificates(state, body):
    """Replaces the certificates registered on an app (a rotation in
    Entra's Certificates & secrets [E-CERT]); 400 on a PEM openssl refuses."""
    cid = default_client(state, body)
    pems = body.get("certificates")
    if cid is None:
        return bad_request("no such client_id")
    if not isinstance(pems, list) or not all(isinstance(p, str) for p in pems):
        return bad_request('"certificates" must be a list of PEM strings')
    try:
        loaded = [certs.load(p) for p in pems]
    except certs.CertError as e:
        return bad_request("not a PEM certificate: %s" % e)
    with state.lock:
        client = state.config.clients[cid]
        client["_certs"] = loaded
    return json_reply(200, {"client_id": cid,
                            "x5t#S256": [c["x5t#S256"] for c in loaded]})


def get_consent(state):
    with state.lock:
        view = {cid: {"admin": c["admin"], "users": sorted(c["users"])}
                for cid, c in state.consent.items()}
        view["_next_failure"] = state.consent_failure
    return json_reply(200, view)


def modify_user(state, segs, body):
    if len(segs) < 2:
        return bad_request("POST /_sim/users/{address}")
    user = state.find_user(segs[1])
    if user is None:
        return not_found("unknown user")
    now = time.time()
    with state.lock:
        if "disabled" in body:
            user.disabled = bool(body["disabled"])
        if "mailbox" in body:
            user.mailbox = bool(body["mailbox"])
        if "upn" in body:
            # The UPN (sign-in name) may differ from the mail address.
            user.upn = body["upn"] or user.address
        if body.get("revoke_tokens"):
            user.tokens_valid_from = now + 0.001
        if body.get("expire_refresh_tokens"):
            for rec in state.refresh_tokens.values():
                if rec["user"] == user.address:
                    rec["last_used"] = now - state.config.refresh_inactivity_s - 1
        if body.get("expire_access_tokens"):
            expire_access(state, user.address)
    return json_reply(200, user_view(user))


def user_view(u):
    return {"address": u.address, "id": u.id, "display_name": u.display_name,
            "upn": u.upn, "disabled": u.disabled, "mailbox": u.mailbox,
            "tokens_valid_from": u.tokens_valid_from}


def list_users(state):
    with state.lock:
        return json_reply(200, {"users": [user_view(u) for u in state.users.values()]})


def expire_access(state, address=None):
    for rec in state.access_tokens.values():
        if address is None or rec["user"] == address:
            rec["expires"] = 0


def expire_tokens(state, body):
    with state.lock:
        if body.get("expire_access_tokens"):
            who = body.get("user")
            expire_access(state, who.lower() if who else None)
    return json_reply(200, {"ok": True})


def token_requests(state, user):
    """Every token request kept (identity.TOKEN_LOG_MAX), or one user's:
    grant_type, user, the refresh token presented and the one issued,
    the status the client got (0: connection dropped) and the fault."""
    log = identity.token_log(state)
    with state.lock:
        entries = [dict(e) for e in log
                   if user is None or e["user"] == user.lower()]
    return json_reply(200, {"requests": entries})


def mailbox_sent(state, segs):
    if len(segs) != 3 or segs[2] != "sent":
        return not_found("GET /_sim/mailboxes/{address}/sent")
    address = segs[1].lower()
    with state.lock:
        msgs = list(state.mail.get(address, []))
    return json_reply(200, {"mailbox": address, "messages": [mail.sim_view(m) for m in msgs]})


def deliveries(state):
    with state.lock:
        return json_reply(200, {"deliveries": list(state.deliveries)})
