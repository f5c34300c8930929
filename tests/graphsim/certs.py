"""Certificate credentials: a client may authenticate at the token endpoint
with a JWT signed by a certificate registered on the app [E-CERT].

Checked as Entra documents it [E-CERT]: header `alg` PS256 (RS256 also
taken, as older revisions and MSAL used it; graph-api.md §1.3
[unverified]), `x5t#S256` = base64url SHA-256 of the certificate's DER;
claims `aud` = the token endpoint URL, `iss` = `sub` = client id, `jti`
present, `nbf`/`exp` bounding now. The signature is verified by the
`openssl` command-line tool (Debian package openssl), never by Python code
of ours: the simulator stays standard library only.

Registration: `clients[].certificates` in the config JSON (PEM strings),
or `POST /_sim/certificates {"client_id"?, "certificates": [pem, ...]}`,
which replaces the app's list (a rotation on the Entra side).
"""

import base64
import binascii
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

from simcore import b64url, oauth_error

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Clock skew allowed on nbf/exp. Entra's value is not documented; five
# minutes is the usual tolerance [unverified].
SKEW_S = 300


class CertError(Exception):
    pass


def openssl(args, data=None):
    """Runs openssl; returns its stdout bytes or raises CertError."""
    try:
        out = subprocess.run(["openssl"] + args, input=data,
                             capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CertError("openssl: %s" % e)
    if out.returncode != 0:
        raise CertError(out.stderr.decode("utf-8", "replace").strip())
    return out.stdout


def load(pem):
    """{"pem", "x5t#S256", "pubkey"} of one PEM certificate."""
    der = openssl(["x509", "-outform", "DER"], pem.encode("ascii"))
    pub = openssl(["x509", "-pubkey", "-noout"], pem.encode("ascii"))
    return {"pem": pem, "x5t#S256": b64url(hashlib.sha256(der).digest()),
            "pubkey": pub}


def registered(client):
    """The app's certificates; one the config names that openssl cannot
    read is left out (and said on stderr), as Entra would not take it."""
    if "_certs" not in client:
        loaded = []
        for pem in client.get("certificates", []):
            try:
                loaded.append(load(pem))
            except CertError as e:
                sys.stderr.write("graphsim: certificate ignored: %s\n" % e)
        client["_certs"] = loaded
    return client["_certs"]


def b64url_decode(part):
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise CertError("not base64url")


def verify_signature(alg, pubkey, signed, sig):
    """RS256: PKCS#1 v1.5 + SHA-256; PS256: RSASSA-PSS + SHA-256, MGF1
    SHA-256, salt length = hash length (32) (RFC 7518 §3.5)."""
    opts = []
    if alg == "PS256":
        opts = ["-sigopt", "rsa_padding_mode:pss",
                "-sigopt", "rsa_pss_saltlen:32", "-sigopt", "rsa_mgf1_md:sha256"]
    with tempfile.TemporaryDirectory(prefix="graphsim-jwt-") as d:
        pub_path = os.path.join(d, "pub.pem")
        sig_path = os.path.join(d, "sig.bin")
        with open(pub_path, "wb") as f:
            f.write(pubkey)
        with open(sig_path, "wb") as f:
            f.write(sig)
        try:
            openssl(["dgst", "-sha256"] + opts
                    + ["-verify", pub_path, "-signature", sig_path], signed)
        except CertError:
            return False
    return True


def invalid_signature(cid, reason):
    # AADSTS700027 "Client assertion failed signature validation" [E-ERR]
    # (listed in the page's table);
    # Entra adds a "[Reason - ...]" such as "The key was not found." [obs].
    # invalid_client + 401 as for a bad secret (identity.py) [unverified].
    return oauth_error(401, "invalid_client", 700027, "Client assertion failed "
                       "signature validation. [Reason - %s, Client id: %s]"
                       % (reason, cid))


def malformed(reason):
    # AADSTS50027 "Invalid JWT token" [E-ERR]; which code Entra gives for a
    # wrong aud/iss/sub is [unverified].
    return oauth_error(400, "invalid_request", 50027, "JWT token is invalid or "
                       "malformed: %s." % reason)


def check_assertion(state, client, cid, assertion, endpoint_urls):
    """None when the assertion authenticates client, else the error Reply.
    endpoint_urls: the token endpoint URLs aud may name (tenant GUID or
    domain in the path, as the doc's own example uses a domain [E-CERT])."""
    parts = assertion.split(".")
    if len(parts) != 3:
        return malformed("not three dot-separated parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        sig = b64url_decode(parts[2])
    except (CertError, ValueError):
        return malformed("header or claims are not base64url JSON")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return malformed("header or claims are not JSON objects")
    alg = header.get("alg")
    if alg not in ("PS256", "RS256"):
        return malformed("alg %r is not PS256 or RS256" % alg)
    if claims.get("aud") not in endpoint_urls:
        return malformed("aud %r is not this token endpoint" % claims.get("aud"))
    if claims.get("iss") != cid or claims.get("sub") != cid:
        return malformed("iss and sub must be the client id")
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        return malformed("jti is missing")
    now = time.time()
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, (int, float)) or not isinstance(nbf, (int, float)):
        return malformed("exp and nbf must be numbers")
    if now >= exp + SKEW_S or now < nbf - SKEW_S:
        # AADSTS700024 "Client assertion is not within its valid time
        # range": E-ERR's table does not list 700024; the code and text are
        # what Entra answers as quoted in public reports [unverified].
        return oauth_error(400, "invalid_client", 700024, "Client assertion is "
                           "not within its valid time range. Current time: %d, "
                           "assertion valid from %d, expiry time of assertion "
                           "%d." % (now, nbf, exp))
    x5t = header.get("x5t#S256")
    cert = next((c for c in registered(client) if c["x5t#S256"] == x5t), None)
    if cert is None:
        return invalid_signature(cid, "The key was not found.")
    signed = (parts[0] + "." + parts[1]).encode("ascii")
    if not verify_signature(alg, cert["pubkey"], signed, sig):
        return invalid_signature(cid, "The signature does not verify")
    # Replay: Entra keeps jti values seen; its error code for a replayed
    # assertion is not documented [unverified], 700027 is our choice.
    with state.lock:
        seen = state.__dict__.setdefault("assertion_jtis", {})
        for old in [j for j, t in seen.items() if t < now - 3600]:
            del seen[old]
        if (cid, claims["jti"]) in seen:
            return invalid_signature(cid, "The assertion (jti) was already used")
        seen[(cid, claims["jti"])] = exp
    return None
