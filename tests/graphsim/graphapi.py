"""Request pipeline of the simulated Graph API (/v1.0/...).

Order per request: bearer token (401) -> resolve the mailbox (/me or
/users/{id}) -> per (app, mailbox) concurrency gate (429 ApplicationThrottled)
-> latency -> injected faults -> permission checks (403) -> mailbox checks
(404) -> operation -> optional "after" fault.
"""

import time

import control
import faults
import mail
from simcore import graph_error, json_reply

GRAPH_SCOPE_PREFIX = "https://graph.microsoft.com/"

OPERATION_MODULES = [mail]


def register(module):
    """Add another operation module (e.g. events) with a match() function."""
    if module not in OPERATION_MODULES:
        OPERATION_MODULES.append(module)


def bearer(state, req):
    """Return the token record or None [obs] 401 InvalidAuthenticationToken (§5)."""
    auth = req.headers.get("Authorization") or ""
    if not auth.lower().startswith("bearer "):
        return None, "Access token is empty."
    tok = auth[7:].strip()
    with state.lock:
        rec = state.access_tokens.get(tok)
    if rec is None:
        return None, "IDX14100: JWT is not well formed, there are no dots (.)."
    if time.time() >= rec["expires"]:
        return None, "Access token has expired or is not yet valid."
    return rec, None


def short_scope(s):
    return s[len(GRAPH_SCOPE_PREFIX):] if s.startswith(GRAPH_SCOPE_PREFIX) else s


def has_scope(token, wanted):
    """Delegated permission check; .default grants all configured permissions."""
    have = {short_scope(s).lower() for s in token["scopes"]}
    if ".default" in have:
        return True
    return any(w.lower() in have for w in wanted)


def find_operation(method, rest):
    for module in OPERATION_MODULES:
        found = module.match(method, rest)
        if found:
            return found
    return None


def access_denied(req):
    # Token lacks the role/scope or targets another user's mailbox [unverified] (§5).
    return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and "
                       "try again.", req.request_id)


def handle(state, req):
    rel = req.path[len("/v1.0/"):].strip("/")
    segs = [s for s in rel.split("/") if s != ""]
    token, why = bearer(state, req)
    if token is None:
        return graph_error(401, "InvalidAuthenticationToken", why, req.request_id)
    if not segs:
        return graph_error(400, "BadRequest", "Invalid request.", req.request_id)
    if segs[0].lower() == "me":
        if token["user"] is None:
            # [obs] Graph's answer to /me with an app-only token.
            return graph_error(400, "BadRequest", "/me request is only valid with delegated "
                               "authentication flow.", req.request_id)
        ident, rest = token["user"], segs[1:]
    elif segs[0].lower() == "users" and len(segs) >= 2:
        ident, rest = segs[1], segs[2:]
    else:
        return graph_error(400, "BadRequest", "Resource not found for the segment '%s'."
                           % segs[0], req.request_id)
    if not rest and req.method == "GET":
        op = ("getUser", get_user, ("User.Read", "User.ReadBasic.All", "User.Read.All"))
    else:
        op = find_operation(req.method, rest)
    if op is None:
        return graph_error(400, "BadRequest", "Resource not found for the segment '%s'."
                           % (rest[-1] if rest else ident), req.request_id)
    user = state.find_user(ident)
    mailbox = user.address if user else ident.lower()
    return run_operation(state, req, token, user, ident, mailbox, op, rest)


def sim_get_requests(state, req, segs, body):
    """GET /_sim/requests[?mailbox=a&operation=name]: Graph requests, oldest
    first: {at (arrival, epoch seconds), done (answer written), mailbox,
    operation, status (0: connection dropped, None: still in flight),
    fault}. Tests read the spacing of retries from it."""
    mailbox = (req.query.get("mailbox") or "").lower() or None
    operation = req.query.get("operation")
    with state.lock:
        entries = [dict(e) for e in state.graph_requests
                   if (mailbox is None or e["mailbox"] == mailbox)
                   and (operation is None or e["operation"] == operation)]
    return json_reply(200, {"requests": entries})


control.EXTRA_ROUTES.append(("GET", "requests", sim_get_requests))


def run_operation(state, req, token, user, ident, mailbox, op, rest):
    entry = {"at": time.time(), "done": None, "mailbox": mailbox,
             "operation": op[0], "status": None, "fault": None}
    with state.lock:
        state.graph_requests.append(entry)
    reply = run_gated(state, req, token, user, ident, mailbox, op, rest, entry)
    with state.lock:
        entry["status"] = reply.status
        entry["done"] = time.time()
    return reply


def run_gated(state, req, token, user, ident, mailbox, op, rest, entry):
    name, func, scopes = op
    with state.lock:
        state.stats.bucket(mailbox)["requests"] += 1
    with faults.InFlight(state, token["client_id"], mailbox) as gate:
        if not gate.admitted:
            return faults.concurrency_reply(req.request_id, state.throttle_retry_after)
        delay = state.latency_ms
        if delay:
            time.sleep(delay / 1000.0)
        rule = faults.pick_fault(state, mailbox, name, token["client_id"], after=False)
        if rule:
            faults.record_injected(state, mailbox, rule)
            entry["fault"] = rule.fault
            return faults.fault_reply(rule, req.request_id)
        reply = authorise_and_run(state, req, token, user, ident, name, func, scopes, rest)
        rule = faults.pick_fault(state, mailbox, name, token["client_id"], after=True)
        if rule:
            faults.record_injected(state, mailbox, rule)
            entry["fault"] = rule.fault + " after"
            return faults.fault_reply(rule, req.request_id)
        return reply


def authorise_and_run(state, req, token, user, ident, name, func, scopes, rest):
    if user is None:
        if name == "getUser":
            # Directory lookup of an unknown user [obs] microsoft-graph-docs-contrib#7618.
            return graph_error(404, "Request_ResourceNotFound", "Resource '%s' does not exist "
                               "or one of its queried reference-property objects are not "
                               "present." % ident, req.request_id)
        # [obs] graph-api.md §5 ErrorInvalidUser
        return graph_error(404, "ErrorInvalidUser", "The requested user '%s' is invalid."
                           % ident, req.request_id)
    if token["user"] is None:
        if not token["roles"]:
            # App-only token issued without consent carries no roles [E-CC].
            return access_denied(req)
    else:
        if name != "getUser" and token["user"] != user.address:
            return access_denied(req)
        if not has_scope(token, scopes):
            return access_denied(req)
    if name != "getUser" and not user.mailbox:
        # No Exchange Online mailbox [obs] graph-api.md §5.
        return graph_error(404, "MailboxNotEnabledForRESTAPI", "The mailbox is either "
                           "inactive, soft-deleted, or is hosted on-premise.", req.request_id)
    return func(state, req, user, token, rest)


def get_user(state, req, user, token, rest):
    """GET /users/{id|upn} -> user resource
    https://learn.microsoft.com/en-us/graph/api/user-get"""
    return json_reply(200, user.resource())
