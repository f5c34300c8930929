"""Microsoft identity platform endpoints of the simulator.

* POST /{tenant}/oauth2/v2.0/token      client_credentials, authorization_code
                                         (+PKCE), refresh_token  [E-CC] [E-CODE] [E-RT]
* GET  /{tenant}/oauth2/v2.0/authorize  headless sign-in -> 302 with code [E-CODE]
* GET  /{tenant}/v2.0/adminconsent      admin consent (v2) [E-AC]
* GET  /{tenant}/adminconsent           admin consent (v1 style) [E-CC]

The token endpoint answers behind fault rules for the operation "token"
(faults.py) and notes every request it gets (GET /_sim/tokens), so tests
can see which refresh token a client presented.

Error texts paraphrase the AADSTS reference [E-ERR]; which `error` string goes
with which AADSTS code is partly [unverified] (graph-api.md §1.7), choices are
commented where made.
"""

import base64
import binascii
import collections
import hashlib
import html
import json
import time
import urllib.parse

import certs
import faults
from simcore import (Reply, b64url, json_reply, new_guid, oauth_error,
                     random_token, text_reply)

GRAPH_DEFAULT = "https://graph.microsoft.com/.default"
GRAPH_PREFIX = "https://graph.microsoft.com/"
OIDC_SCOPES = {"openid", "profile", "email", "offline_access"}
CODE_LIFETIME_S = 600  # authorization codes live ~10 minutes [E-CODE]
TOKEN_LOG_MAX = 500    # token requests kept for GET /_sim/tokens


# ---------------------------------------------------------------------------
# routing

def route(state, req):
    """Return a Reply for an identity-platform path, or None if not ours."""
    parts = req.path.strip("/").split("/")
    if len(parts) < 2:
        return None
    tenant, rest = parts[0], "/".join(parts[1:])
    if rest == "oauth2/v2.0/token" and req.method == "POST":
        return token_endpoint(state, req, tenant)
    if rest == "oauth2/v2.0/authorize" and req.method == "GET":
        return authorize(state, req, tenant)
    if rest == "v2.0/adminconsent" and req.method == "GET":
        return admin_consent(state, req, tenant, v2=True)
    if rest == "adminconsent" and req.method == "GET":
        return admin_consent(state, req, tenant, v2=False)
    return None


def error_page(status, code, text):
    """Interactive endpoints show an error page instead of redirecting when the
    redirect target cannot be trusted (e.g. AADSTS50011) [E-CODE] [E-ERR]."""
    body = ("<!DOCTYPE html><html><head><title>Sign in to your account</title></head>"
            "<body><h1>Sorry, but we're having trouble signing you in.</h1>"
            "<p id=\"error\">AADSTS%d: %s</p></body></html>" % (code, html.escape(text)))
    return text_reply(status, body, "text/html; charset=utf-8")


def redirect(uri, params, response_mode="query"):
    """302 to uri with params in the query (default for code) or fragment [E-CODE]."""
    encoded = urllib.parse.urlencode(params)
    if response_mode == "fragment":
        location = uri + "#" + encoded
    else:
        location = uri + ("&" if "?" in uri else "?") + encoded
    return Reply(302, b"", [("Location", location)])


def form_post(uri, params):
    """response_mode=form_post: an auto-submitting HTML form [E-CODE]."""
    fields = "".join('<input type="hidden" name="%s" value="%s"/>'
                     % (html.escape(k), html.escape(v)) for k, v in params.items())
    body = ('<html><body onload="document.forms[0].submit()"><form method="POST" action="%s">'
            "%s</form></body></html>" % (html.escape(uri), fields))
    return text_reply(200, body, "text/html; charset=utf-8")


def send_back(uri, params, mode):
    return form_post(uri, params) if mode == "form_post" else redirect(uri, params, mode)


def tenant_error(state, tenant, allow_orgs):
    """None if the tenant segment is acceptable, else the AADSTS code/text."""
    t = tenant.lower()
    if state.tenant_matches(t):
        return None
    if t == "organizations" and allow_orgs:
        return None
    if t in ("common", "consumers", "organizations"):
        # single-tenant app on a multi-tenant endpoint [E-ERR] 50194
        return 50194, ("Application is not configured as a multi-tenant application. "
                       "Usage of the /common endpoint is not supported for such "
                       "applications created after '10/15/2018'. Use a tenant-specific "
                       "endpoint or configure the application to be multi-tenant.")
    return 90002, "Tenant '%s' not found." % tenant  # [E-ERR] 90002


# ---------------------------------------------------------------------------
# authorize (headless)

def authorize(state, req, tenant):
    q = req.query
    client = state.config.clients.get(q.get("client_id", ""))
    if client is None:
        return error_page(400, 700016, "Application with identifier '%s' was not found in "
                          "the directory '%s'." % (q.get("client_id", ""), tenant))
    redirect_uri = q.get("redirect_uri", "")
    if redirect_uri not in client.get("redirect_uris", []):
        # Unregistered redirect URI: error page, never a redirect [E-ERR] 50011.
        return error_page(400, 50011, "The redirect URI '%s' specified in the request does "
                          "not match the redirect URIs configured for the application '%s'."
                          % (redirect_uri, client["client_id"]))
    terr = tenant_error(state, tenant, allow_orgs=True)
    if terr:
        return error_page(400, terr[0], terr[1])
    mode = q.get("response_mode", "query")
    back = {"state": q["state"]} if "state" in q else {}

    def fail(error, text):
        params = {"error": error, "error_description": text}
        params.update(back)
        return send_back(redirect_uri, params, mode)

    if q.get("response_type") != "code":
        return fail("unsupported_response_type", "AADSTS700054: response_type '%s' is not "
                    "enabled for the application." % q.get("response_type", ""))
    if not q.get("scope"):
        return fail("invalid_request", "AADSTS900144: The request body must contain the "
                    "following parameter: 'scope'.")
    method = q.get("code_challenge_method", "plain" if q.get("code_challenge") else "")
    if method not in ("", "plain", "S256"):
        return fail("invalid_request", "AADSTS501491: Invalid code_challenge_method.")

    with state.lock:
        decline = state.signin_decline > 0
        if decline:
            state.signin_decline -= 1
        override = state.signin_override
        if override and override.get("once"):
            state.signin_override = None
    if decline:
        # The user cancels on the consent/sign-in page: access_denied [E-CODE];
        # 65004 = user declined consent [E-ERR].
        return fail("access_denied", "AADSTS65004: User declined to consent to access the app.")

    who = override["as"] if override else q.get("login_hint")
    if not who:
        who = next(iter(state.users), None)
    user = state.find_user(who)
    if user is None:
        # Sign-in page error, no redirect: user not in directory [E-ERR] 50034.
        return error_page(400, 50034, "The user account %s does not exist in the %s "
                          "directory." % (who, state.config.tenant_domain))
    if user.disabled:
        return error_page(400, 50057, "The user account is disabled.")  # [E-ERR]

    scopes = q["scope"].split()
    with state.lock:
        # Headless user consent: the simulated user accepts whatever is asked.
        state.consent.setdefault(client["client_id"], {"admin": False, "users": set()})
        state.consent[client["client_id"]]["users"].add(user.address)
        code = "0.AQsim." + random_token(40)
        state.auth_codes[code] = {
            "client_id": client["client_id"], "redirect_uri": redirect_uri,
            "user": user.address, "scopes": scopes,
            "challenge": q.get("code_challenge"), "method": method or None,
            "expires": time.time() + CODE_LIFETIME_S, "used": False,
            "nonce": q.get("nonce"),
        }
    params = {"code": code}
    params.update(back)
    params["session_state"] = new_guid()
    return send_back(redirect_uri, params, mode)


# ---------------------------------------------------------------------------
# admin consent

# What POST /_sim/consent {"next_failure": kind} makes the next adminconsent
# answer: kind -> (error, AADSTS code, description). Codes and meanings are
# from [E-ERR] and the consent troubleshooting page [E-UCE]
# (learn.microsoft.com/entra/identity/enterprise-apps/
# application-sign-in-unexpected-user-consent-error); the `error` value
# paired with 90094 and 90090 on this redirect is [unverified].
CONSENT_FAILURES = {
    # The doc example: admin_consent=True kept next to the error [E-AC].
    "consent_required": ("consent_required", 65004,
                         "User declined to consent to access the app."),
    "access_denied": ("access_denied", 65004,
                      "User declined to consent to access the app."),
    # Someone without an admin role opened the link [E-UCE].
    "admin_required": ("access_denied", 90094,
                       "Administrator consent is required for the permissions "
                       "this application asks for."),
    # An intermittent problem recording the grant; retrying helps [E-UCE].
    "server_error": ("server_error", 90090,
                     "The service is temporarily unavailable."),
}


def aadsts_description(code, text):
    """error_description as Entra writes it on redirects and token errors:
    the code, the text, then trace and correlation ids [E-ERR]."""
    return ("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\n"
            "Timestamp: %s" % (code, text, new_guid(), new_guid(),
                               time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())))


def consent_failure_params(kind, v2, back):
    error, code, text = CONSENT_FAILURES[kind]
    if kind == "access_denied" and not v2:
        # v1-style failure example [E-CC].
        params = {"error": "permission_denied",
                  "error_description": "The admin canceled the request"}
    else:
        params = {"error": error, "error_description": aadsts_description(code, text)}
    if kind == "consent_required":
        params = dict({"admin_consent": "True"}, **params)
    params.update(back)
    return params


def admin_consent(state, req, tenant, v2):
    q = req.query
    client = state.config.clients.get(q.get("client_id", ""))
    if client is None:
        return error_page(400, 700016, "Application with identifier '%s' was not found in "
                          "the directory '%s'." % (q.get("client_id", ""), tenant))
    redirect_uri = q.get("redirect_uri", "")
    if redirect_uri not in client.get("redirect_uris", []):
        return error_page(400, 50011, "The redirect URI '%s' specified in the request does "
                          "not match the redirect URIs configured for the application '%s'."
                          % (redirect_uri, client["client_id"]))
    # v2 adminconsent: tenant GUID/domain or organizations, not common [E-AC].
    terr = tenant_error(state, tenant, allow_orgs=True)
    if terr:
        return error_page(400, terr[0], terr[1])
    if v2 and not q.get("scope"):
        return error_page(400, 900144, "The request body must contain the following "
                          "parameter: 'scope'.")
    back = {"state": q["state"]} if "state" in q else {}
    with state.lock:
        failure = state.consent_failure
        state.consent_failure = None
    if failure in CONSENT_FAILURES:
        return redirect(redirect_uri, consent_failure_params(failure, v2, back))
    with state.lock:
        state.consent.setdefault(client["client_id"], {"admin": False, "users": set()})
        state.consent[client["client_id"]]["admin"] = True
    params = {"admin_consent": "True", "tenant": state.config.tenant_id}
    if v2:
        params["scope"] = q.get("scope", GRAPH_DEFAULT)
    params.update(back)
    return redirect(redirect_uri, params)


# ---------------------------------------------------------------------------
# token endpoint

def parse_form(req):
    ctype = req.content_type()
    if ctype and ctype != "application/x-www-form-urlencoded":
        return None
    try:
        pairs = urllib.parse.parse_qsl(req.body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return None
    return dict(pairs)


def client_credentials_from(req, form):
    """client_secret in the body or HTTP Basic (RFC 6749 §2.3.1) [E-CC]."""
    auth = req.headers.get("Authorization") or ""
    if auth.lower().startswith("basic "):
        try:
            raw = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
            cid, _, secret = raw.partition(":")
            return urllib.parse.unquote(cid), urllib.parse.unquote(secret)
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
    return form.get("client_id", ""), form.get("client_secret")


def authenticate_client(state, req, form, tenant):
    """Return (client, None) or (None, error Reply)."""
    cid, secret = client_credentials_from(req, form)
    if not cid:
        return None, oauth_error(400, "invalid_request", 900144, "The request body must "
                                 "contain the following parameter: 'client_id'.")
    client = state.config.clients.get(cid)
    if client is None:
        return None, oauth_error(400, "unauthorized_client", 700016, "Application with "
                                 "identifier '%s' was not found in the directory '%s'."
                                 % (cid, tenant))
    if "client_assertion" in form or "client_assertion_type" in form:
        return assertion_client(state, req, form, tenant, cid, client)
    expected = client.get("client_secret")
    if expected is None and certs.registered(client):
        # A confidential client with only a certificate [E-CERT].
        return None, oauth_error(401, "invalid_client", 7000218, "The request body "
                                 "must contain the following parameter: "
                                 "'client_assertion' or 'client_secret'.")
    if expected is not None:
        if secret is None and "client_assertion" not in form:
            # invalid_client + 401 is our choice; status is [unverified] (§1.7).
            return None, oauth_error(401, "invalid_client", 7000218, "The request body must "
                                     "contain the following parameter: 'client_assertion' "
                                     "or 'client_secret'.")
        if secret != expected:
            return None, oauth_error(401, "invalid_client", 7000215, "Invalid client secret "
                                     "provided. Ensure the secret being sent in the request "
                                     "is the client secret value, not the client secret ID, "
                                     "for a secret added to app '%s'." % cid)
    return client, None


def assertion_client(state, req, form, tenant, cid, client):
    """Client authentication by certificate assertion [E-CERT]: (client,
    None) or (None, error Reply)."""
    if form.get("client_assertion_type") != certs.ASSERTION_TYPE:
        return None, oauth_error(400, "invalid_request", 50027, "JWT token is "
                                 "invalid or malformed: client_assertion_type "
                                 "must be '%s'." % certs.ASSERTION_TYPE)
    if not certs.registered(client):
        return None, certs.invalid_signature(cid, "The key was not found.")
    # aud must be the token endpoint the request was sent to [E-CERT]; the
    # tenant may be named by GUID or domain.
    host = req.headers.get("Host", "")
    urls = {"http://%s/%s/oauth2/v2.0/token" % (host, t)
            for t in (tenant, state.config.tenant_id, state.config.tenant_domain)}
    err = certs.check_assertion(state, client, cid,
                                form.get("client_assertion", ""), urls)
    return (None, err) if err else (client, None)


def token_endpoint(state, req, tenant):
    """The token endpoint behind injected faults (operation "token"), with
    every request noted for GET /_sim/tokens."""
    form = parse_form(req) or {}
    client_id = client_credentials_from(req, form)[0]
    user = token_user(state, form)
    issued = None
    rule = faults.pick_fault(state, user, faults.TOKEN_OPERATION, client_id, after=False)
    if rule is None:
        issued = token_grant(state, req, tenant)
        rule = faults.pick_fault(state, user, faults.TOKEN_OPERATION, client_id,
                                 after=True)
    reply = issued
    if rule is not None:
        if user:
            faults.record_injected(state, user, rule)
        reply = faults.token_fault_reply(rule)
    token_log_add(state, form, user, issued, reply, rule)
    return reply


def token_user(state, form):
    """The user a token request is for, when the grant names one."""
    with state.lock:
        if form.get("grant_type") == "refresh_token":
            rec = state.refresh_tokens.get(form.get("refresh_token", ""))
        elif form.get("grant_type") == "authorization_code":
            rec = state.auth_codes.get(form.get("code", ""))
        else:
            rec = None
    return rec["user"] if rec else None


def token_log(state):
    """The last TOKEN_LOG_MAX token requests (kept on the state, created on
    first use, emptied by /_sim/reset)."""
    with state.lock:
        if not hasattr(state, "token_requests"):
            state.token_requests = collections.deque(maxlen=TOKEN_LOG_MAX)
        return state.token_requests


def token_log_add(state, form, user, issued, reply, rule):
    """issued: what the grant answered (None when a fault came first);
    reply: what the client got. A refresh token issued under an "after"
    fault was never seen by the client, as in a lost reply."""
    granted = {}
    if issued is not None and issued.status == 200:
        granted = json.loads(issued.body.decode("utf-8"))
    entry = {
        "at": time.time(), "grant_type": form.get("grant_type"), "user": user,
        "presented_refresh_token": form.get("refresh_token"),
        "issued_refresh_token": granted.get("refresh_token"),
        # How the client authenticated: "secret", "assertion" or None.
        "credential": ("assertion" if "client_assertion" in form else
                       "secret" if form.get("client_secret") else None),
        "status": 0 if reply.drop else reply.status,
        "fault": rule.fault if rule else None,
    }
    log = token_log(state)
    with state.lock:
        log.append(entry)


def token_grant(state, req, tenant):
    form = parse_form(req)
    if form is None:
        return oauth_error(400, "invalid_request", 900144, "The request body must contain "
                           "the following parameter: 'grant_type'.")
    grant = form.get("grant_type", "")
    if not grant:
        return oauth_error(400, "invalid_request", 900144, "The request body must contain "
                           "the following parameter: 'grant_type'.")
    t = tenant.lower()
    if grant == "client_credentials" and t in ("common", "consumers", "organizations"):
        # AADSTS9001023: grant not supported over /common or /consumers [E-ERR];
        # /organizations gives no tenant for app-only either [inferred].
        return oauth_error(400, "invalid_request", 9001023, "The grant type isn't supported "
                           "over the /common or /consumers endpoints. Please use the "
                           "/organizations or tenant-specific endpoint.")
    terr = tenant_error(state, tenant, allow_orgs=True)
    if terr:
        return oauth_error(400, "invalid_request", terr[0], terr[1])
    client, err = authenticate_client(state, req, form, tenant)
    if err:
        return err
    if grant == "client_credentials":
        return grant_client_credentials(state, client, form)
    if grant == "authorization_code":
        return grant_authorization_code(state, client, form)
    if grant == "refresh_token":
        return grant_refresh_token(state, client, form)
    return oauth_error(400, "unsupported_grant_type", 70003, "The app requested an "
                       "unsupported grant type '%s'." % grant)


def grant_client_credentials(state, client, form):
    scope = form.get("scope", "")
    if not scope:
        return oauth_error(400, "invalid_scope", 70011, "The provided request must include "
                           "a 'scope' input parameter.")
    if scope.strip() != GRAPH_DEFAULT:
        # App-only needs resource/.default; anything else is 70011 [E-CC] [E-ERR].
        return oauth_error(400, "invalid_scope", 70011, "The provided value for the input "
                           "parameter 'scope' is not valid. The scope %s is not valid." % scope)
    # Tokens are issued even without consent; they just lack the roles claim and
    # the resource rejects them [E-CC].
    roles = state.has_consent(client["client_id"])
    token = state.issue_access_token(client["client_id"], None, [GRAPH_DEFAULT], roles)
    life = state.config.token_lifetime_s
    return json_reply(200, {"token_type": "Bearer", "expires_in": life,
                            "ext_expires_in": life, "access_token": token})


def split_scopes(scope_str):
    """Split a delegated scope string into (graph scopes, oidc scopes)."""
    graph, oidc = [], []
    for s in scope_str.split():
        (oidc if s in OIDC_SCOPES else graph).append(s)
    return graph, oidc


def verify_pkce(record, verifier):
    challenge = record.get("challenge")
    if not challenge:
        return True
    if not verifier:
        return False
    if record.get("method") == "S256":
        digest = b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
        return digest == challenge
    return verifier == challenge  # plain (default when method omitted) [E-CODE]


def grant_authorization_code(state, client, form):
    code = form.get("code", "")
    with state.lock:
        rec = state.auth_codes.get(code)
        reused = rec is not None and rec["used"]
        if rec is not None:
            rec["used"] = True
    if rec is None or rec["client_id"] != client["client_id"]:
        return oauth_error(400, "invalid_grant", 9002313, "Invalid request. Request is "
                           "malformed or invalid.")
    if reused:
        # Codes are single-use [E-ERR] 54005.
        return oauth_error(400, "invalid_grant", 54005, "OAuth2 Authorization code was "
                           "already redeemed, please retry with a new valid code or use an "
                           "existing refresh token.")
    if time.time() > rec["expires"]:
        return oauth_error(400, "invalid_grant", 70008, "The provided authorization code or "
                           "refresh token has expired due to inactivity. Send a new "
                           "interactive authorization request for this user and resource.")
    if form.get("redirect_uri", "") != rec["redirect_uri"]:
        # Same redirect_uri as on authorize [E-CODE]; code number [unverified].
        return oauth_error(400, "invalid_grant", 500112, "The reply address '%s' does not "
                           "match the reply address '%s' provided when requesting "
                           "Authorization code." % (form.get("redirect_uri", ""),
                                                    rec["redirect_uri"]))
    if not verify_pkce(rec, form.get("code_verifier")):
        return oauth_error(400, "invalid_grant", 501481, "The Code_Verifier does not match "
                           "the code_challenge supplied in the authorization request.")
    user = state.find_user(rec["user"])
    if user is None or user.disabled:
        return oauth_error(400, "invalid_grant", 50057, "The user account is disabled.")
    return delegated_tokens(state, client, user, rec["scopes"], rec.get("nonce"))


def grant_refresh_token(state, client, form):
    rt = form.get("refresh_token", "")
    now = time.time()
    with state.lock:
        rec = state.refresh_tokens.get(rt)
    if rec is None or rec["client_id"] != client["client_id"]:
        return oauth_error(400, "invalid_grant", 9002313, "Invalid request. Request is "
                           "malformed or invalid.")
    user = state.find_user(rec["user"])
    issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rec["issued"]))
    if user is not None and rec["issued"] < user.tokens_valid_from:
        # Revoked grant [E-RT] [E-ERR] 50173.
        valid_from = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(user.tokens_valid_from))
        return oauth_error(400, "invalid_grant", 50173, "The provided grant has expired due "
                           "to it being revoked, a fresh auth token is needed. The user might "
                           "have changed or reset their password. The grant was issued on "
                           "'%s' and the TokensValidFrom date (before which tokens are not "
                           "valid) for this user is '%s'." % (issued, valid_from))
    if now - rec["last_used"] > state.config.refresh_inactivity_s:
        # Inactivity expiry [E-RT] [E-ERR] 700082.
        return oauth_error(400, "invalid_grant", 700082, "The refresh token has expired due "
                           "to inactivity. The token was issued on %s and was inactive for "
                           "%d seconds." % (issued, int(now - rec["last_used"])))
    if user is None or user.disabled:
        return oauth_error(400, "invalid_grant", 50057, "The user account is disabled.")
    if not state.has_consent(client["client_id"], user.address):
        # Consent gone -> 65001 with invalid_grant [E-ERR]; mapping [inferred] (§1.7).
        return oauth_error(400, "invalid_grant", 65001, "The user or administrator has not "
                           "consented to use the application with ID '%s' named '%s'. Send an "
                           "interactive authorization request for this user and resource."
                           % (client["client_id"], client.get("name", client["client_id"])))
    scopes = rec["scopes"]
    if form.get("scope"):
        asked = form["scope"].split()
        graph_asked, _ = split_scopes(" ".join(asked))
        graph_had, _ = split_scopes(" ".join(scopes))
        if any(s not in graph_had and GRAPH_DEFAULT not in graph_had for s in graph_asked):
            return oauth_error(400, "invalid_grant", 65001, "The user or administrator has "
                               "not consented to use the application with ID '%s'."
                               % client["client_id"])
        scopes = asked
    with state.lock:
        rec["last_used"] = now  # the old token stays valid [E-RT]
    return delegated_tokens(state, client, user, scopes, None)


def delegated_tokens(state, client, user, scopes, nonce):
    graph, oidc = split_scopes(" ".join(scopes))
    token = state.issue_access_token(client["client_id"], user, graph, roles=True)
    life = state.config.token_lifetime_s
    body = {"token_type": "Bearer", "scope": " ".join(graph + [s for s in oidc
                                                                if s != "offline_access"]),
            "expires_in": life, "ext_expires_in": life, "access_token": token}
    if "offline_access" in oidc:
        # refresh_token only with offline_access; rotates on every use [E-CODE] [E-RT].
        body["refresh_token"] = state.issue_refresh_token(client["client_id"], user, scopes)
    if "openid" in oidc:
        body["id_token"] = make_id_token(state, client, user, oidc, nonce)
    return json_reply(200, body)


def make_id_token(state, client, user, oidc, nonce):
    """Unsigned JWT-shaped id_token (alg none) with the claims the agent reads [E-CODE].

    name and preferred_username (the UPN here) come only with the profile
    scope: https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference
    Claims named by POST /_sim/signin {"omit_claims"} are left out."""
    now = int(time.time())
    header = {"typ": "JWT", "alg": "none"}
    payload = {"aud": client["client_id"],
               "iss": "https://login.microsoftonline.com/%s/v2.0" % state.config.tenant_id,
               "iat": now, "nbf": now, "exp": now + 3600,
               "oid": user.id, "sub": b64url(user.id.encode()),
               "tid": state.config.tenant_id, "ver": "2.0"}
    if "profile" in oidc:
        payload["name"] = user.display_name
        payload["preferred_username"] = user.upn
    with state.lock:
        for claim in state.id_token_omit:
            payload.pop(claim, None)
    if nonce:
        payload["nonce"] = nonce
    enc = lambda obj: b64url(json.dumps(obj, separators=(",", ":")).encode("utf-8"))
    return enc(header) + "." + enc(payload) + "."
