"""Fault injection and concurrency throttling for the simulated Graph API.

Fault rules (POST /_sim/faults) are either scripted ("the next N matching
requests fail") or probabilistic ("each matching request fails with
probability p").  Scripted rules are consulted first, in insertion order.

Error shapes:
* 429 TooManyRequests body + Retry-After (may be fractional) [G-THR]
* 429 ApplicationThrottled "MailboxConcurrency" for >4 concurrent requests per
  app+mailbox [G-THRL] [obs] stackoverflow.com/questions/58527581
* 503 serviceNotAvailable with Retry-After [G-ERRS]
* 500 generalException [G-ERRS]
* 504 with a generic body [G-ERRS] (503/504 listed as retryable)
* "drop": the connection is closed without an answer
* "400": a permanent refusal, by default 400 ErrorInvalidRecipients as Graph
  sends for an unresolvable recipient (graph-api.md 5); "status", "code" and
  "message" in the rule replace it

The token endpoint is the operation TOKEN_OPERATION ("token"). Only a rule
that names it reaches it: a rule without an operation keeps meaning "every
Graph operation", so adding token faults changed no existing rule. Its
answers are OAuth-shaped (see token_fault_reply).
"""

import random

from simcore import drop_reply, graph_error, new_guid, oauth_error, text_reply

FAULT_KINDS = ("429", "503", "500", "504", "drop", "400")
TOKEN_OPERATION = "token"


class FaultRule:
    def __init__(self, spec):
        self.fault = str(spec.get("fault", "503"))
        if self.fault not in FAULT_KINDS:
            raise ValueError("fault must be one of %s" % ", ".join(FAULT_KINDS))
        self.mailbox = (spec.get("mailbox") or "").lower() or None
        self.operation = spec.get("operation") or None
        self.count = spec.get("count")
        self.probability = float(spec.get("probability", 0 if self.count is not None else 1))
        if self.count is not None:
            self.count = int(self.count)
        self.retry_after = spec.get("retry_after")
        self.after = bool(spec.get("after", False))
        self.client_id = spec.get("client_id")
        self.status = int(spec.get("status", 400))
        self.code = spec.get("code") or "ErrorInvalidRecipients"
        self.message = spec.get("message") or (
            "At least one recipient isn't valid., Recipient "
            "'candidate@example.net' isn't resolved. All recipients must be "
            "resolved before a message can be submitted.")
        self.id = new_guid()
        self.fired = 0

    def matches(self, mailbox, operation, client_id):
        if self.mailbox and self.mailbox != mailbox:
            return False
        wanted = (self.operation or "").lower()
        if operation == TOKEN_OPERATION and wanted != TOKEN_OPERATION:
            return False
        if wanted and wanted != (operation or "").lower():
            return False
        if self.client_id and self.client_id != client_id:
            return False
        return True

    def view(self):
        return {"id": self.id, "fault": self.fault, "mailbox": self.mailbox,
                "operation": self.operation, "count": self.count,
                "probability": None if self.count is not None else self.probability,
                "retry_after": self.retry_after, "after": self.after,
                "client_id": self.client_id, "fired": self.fired}


def pick_fault(state, mailbox, operation, client_id, after):
    """Consume/roll the rules; return the FaultRule that fires, or None.
    Every request reaches here once with after=False, so that is where it
    is counted per operation for /_sim/stats."""
    with state.lock:
        if not after and mailbox:
            ops = state.stats.bucket(mailbox).setdefault("operations", {})
            ops[operation] = ops.get(operation, 0) + 1
        rules = [r for r in state.fault_rules
                 if r.after == after and r.matches(mailbox, operation, client_id)]
        for r in rules:
            if r.count is not None and r.count > 0:
                r.count -= 1
                r.fired += 1
                return r
        for r in rules:
            if r.count is None and random.random() < r.probability:
                r.fired += 1
                return r
    return None


def throttled_body(request_id, retry_after):
    """429 body and headers as in the throttling doc sample [G-THR]."""
    return graph_error(429, "TooManyRequests", "Please retry again later.", request_id,
                       [("Retry-After", retry_after)],
                       inner={"code": "429", "message": "Please retry after",
                              "status": "429"})


def fault_reply(rule, request_id):
    ra = str(rule.retry_after) if rule.retry_after is not None else None
    if rule.fault == "429":
        return throttled_body(request_id, ra or "2.128")
    if rule.fault == "503":
        return graph_error(503, "serviceNotAvailable", "The service is temporarily "
                           "unavailable. Please retry after the Retry-After interval.",
                           request_id, [("Retry-After", ra or "5")])
    if rule.fault == "500":
        return graph_error(500, "generalException", "An unspecified error has occurred.",
                           request_id)
    if rule.fault == "400":
        return graph_error(rule.status, rule.code, rule.message, request_id)
    if rule.fault == "504":
        headers = [("Retry-After", ra)] if ra else None
        return graph_error(504, "UnknownError", "Gateway Timeout", request_id, headers)
    return drop_reply()


def token_fault_reply(rule):
    """A fault at the token endpoint, in the OAuth error shape [E-ERR]. The
    `error` values are the documented retry ones (temporarily_unavailable:
    "retry the request"; server_error); which HTTP status and AADSTS code
    Entra pairs with them is [unverified]: 90006 ExternalServerRetryableError
    "The service is temporarily unavailable", 90055 TenantThrottlingError
    "There are too many incoming requests", 50000 TokenIssuanceError [E-ERR].
    A 504 comes from a gateway in front, so it has no OAuth body."""
    ra = str(rule.retry_after) if rule.retry_after is not None else None
    if rule.fault == "drop":
        return drop_reply()
    if rule.fault == "504":
        reply = text_reply(504, "Gateway Timeout")
    elif rule.fault == "503":
        reply = oauth_error(503, "temporarily_unavailable", 90006,
                            "The service is temporarily unavailable.")
        ra = ra or "5"
    elif rule.fault == "429":
        reply = oauth_error(429, "temporarily_unavailable", 90055,
                            "There are too many incoming requests.")
        ra = ra or "2"
    elif rule.fault == "500":
        reply = oauth_error(500, "server_error", 50000,
                            "There's an issue with the sign-in service.")
    else:
        reply = oauth_error(rule.status, "invalid_request", 9002313,
                            "Invalid request. Request is malformed or invalid.")
    if ra:
        reply.header("Retry-After", ra)
    return reply


def concurrency_reply(request_id, retry_after):
    """Concurrency breach body [obs] (graph-api.md §4.1); fractional Retry-After [G-THR]."""
    return graph_error(429, "ApplicationThrottled",
                       "Application is over its MailboxConcurrency limit.", request_id,
                       [("Retry-After", retry_after)])


class InFlight:
    """Context manager counting a request against (client app, mailbox) [G-THRL]."""

    def __init__(self, state, client_id, mailbox):
        self.state = state
        self.key = (client_id, mailbox)
        self.mailbox = mailbox
        self.admitted = False

    def __enter__(self):
        st = self.state
        with st.lock:
            current = st.inflight.get(self.key, 0)
            bucket = st.stats.bucket(self.mailbox)
            if current >= st.concurrency_limit:
                bucket["throttled_concurrency"] += 1
                return self
            st.inflight[self.key] = current + 1
            bucket["max_concurrency"] = max(bucket["max_concurrency"], current + 1)
            self.admitted = True
        return self

    def __exit__(self, *exc):
        if self.admitted:
            with self.state.lock:
                # reset_runtime() may have replaced the table meanwhile
                left = self.state.inflight.get(self.key, 1) - 1
                self.state.inflight[self.key] = max(0, left)
        return False


def record_injected(state, mailbox, rule):
    with state.lock:
        b = state.stats.bucket(mailbox)
        if rule.fault == "429":
            b["throttled_injected"] += 1
        b["faults_injected"][rule.fault] = b["faults_injected"].get(rule.fault, 0) + 1

