#!/usr/bin/python3
"""A demo tenant: the Graph simulator and nextal-agent side by side.

Used by the README's first command (``--demo``), by anyone who wants to
play with the agent (``--keep``), and by every scenario test (imported as a
module). Everything lives in one temporary directory: the simulator's
config, the agent's config, policy file, SQLite database and spool.
"""

import argparse
import configparser
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GRAPHSIM = os.path.join(REPO, "tests", "graphsim", "graphsim.py")

TENANT_ID = "11111111-2222-3333-4444-555555555555"
TENANT_DOMAIN = "contoso.example"
CLIENT_ID = "aaaaaaaa-0000-0000-0000-000000000001"
CLIENT_SECRET = "demo-client-secret"
SERVICE_USER = "nextal"
SERVICE_PASSWORD = "demo-service-password"

DEMO_USERS = [
    ("alice@contoso.example", "Alice Adams"),
    ("bob@contoso.example", "Bob Brown"),
    ("carol@contoso.example", "Carol Chen"),
    ("dave@contoso.example", "Dave Dunn"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError("timed out waiting for " + what)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def find_binary(build_dir, name):
    env = {"nextal-agent": "NEXTAL_AGENT", "nextal-policy": "NEXTAL_POLICY"}
    path = os.environ.get(env[name]) or os.path.join(build_dir, name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(
            "%s not found at %s (build first, or set %s)" % (name, path, env[name]))
    return os.path.abspath(path)


class Sandbox:
    """A running simulator + agent pair in a private directory."""

    def __init__(self, build_dir=None, workdir=None, link_mode="application",
                 latency_ms=0, users=DEMO_USERS, policy=None, agent_args=(),
                 extra_config="", client_certificate=False):
        self.build_dir = build_dir or os.environ.get(
            "NEXTAL_BUILD_DIR", os.path.join(REPO, "build"))
        self.agent_bin = find_binary(self.build_dir, "nextal-agent")
        self.policy_bin = find_binary(self.build_dir, "nextal-policy")
        self.own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="nextal-sandbox-")
        self.link_mode = link_mode
        self.latency_ms = latency_ms
        self.users = list(users)
        self.policy_text = policy
        self.agent_args = list(agent_args)
        # INI text appended to the agent's configuration, e.g.
        # "[delivery]\nmax_per_minute = 5": a repeated section adds keys
        # and a repeated key overrides the generated one.
        self.extra_config = extra_config
        # True: the agent authenticates with a self-signed certificate
        # (client.crt / client.key here, registered with the simulator)
        # instead of the client secret.
        self.client_certificate = client_certificate
        self.sim = None
        self.agent = None
        self.smtp_port = free_port()
        self.http_port = free_port()
        self.sim_port = None

    # ---- files ----------------------------------------------------------

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def make_certificate(self, name="client"):
        """A self-signed RSA certificate and its key (mode 0600) in the
        sandbox directory; returns (certificate path, key path)."""
        crt, key = self.path(name + ".crt"), self.path(name + ".key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-sha256", "-days", "30",
                        "-subj", "/CN=nextal-agent sandbox " + name,
                        "-keyout", key, "-out", crt],
                       check=True, capture_output=True)
        os.chmod(key, 0o600)
        return crt, key

    def certificate_pem(self, name="client"):
        with open(self.path(name + ".crt")) as f:
            return f.read()

    def write_sim_config(self):
        if self.client_certificate:
            self.make_certificate()
        config = {
            "tenant_id": TENANT_ID,
            "tenant_domain": TENANT_DOMAIN,
            "clients": [{
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "certificates": ([self.certificate_pem()]
                                 if self.client_certificate else []),
                "redirect_uris": [
                    "http://127.0.0.1:%d/oauth/callback" % self.http_port,
                    "http://127.0.0.1:%d/oauth/consent" % self.http_port,
                ],
                "name": "nextal-agent",
            }],
            "users": [{"address": a, "display_name": n,
                       "id": "%08x-0000-4000-8000-%012x" % (i + 1, i + 1)}
                      for i, (a, n) in enumerate(self.users)],
            "token_lifetime_s": 3599,
        }
        with open(self.path("graphsim.json"), "w") as f:
            json.dump(config, f, indent=2)

    def hash_password(self):
        out = subprocess.run([self.agent_bin, "--hash-password"],
                             input=SERVICE_PASSWORD + "\n", text=True,
                             capture_output=True, check=True)
        return out.stdout.strip()

    def agent_config_text(self):
        sim = "http://127.0.0.1:%d" % self.sim_port
        return "\n".join([
            "; nextal-agent sandbox configuration (generated)",
            "[agent]",
            "database = agent.db",
            "spool = spool",
            "policy_file = policy.ini",
            "log_level = debug",
            "",
            "[smtp]",
            "listen = 127.0.0.1:%d" % self.smtp_port,
            "hostname = agent.sandbox.test",
            "",
            "[http]",
            "listen = 127.0.0.1:%d" % self.http_port,
            "public_url = http://127.0.0.1:%d" % self.http_port,
            "",
            "[service]",
            "username = " + SERVICE_USER,
            "password_hash = " + self.password_hash,
            "",
            "[microsoft]",
            "tenant = " + TENANT_DOMAIN,
            "client_id = " + CLIENT_ID,
        ] + ([
            "client_certificate = " + os.path.abspath(self.path("client.crt")),
            "client_key = " + os.path.abspath(self.path("client.key")),
        ] if self.client_certificate else [
            "client_secret = " + CLIENT_SECRET,
        ]) + [
            "login_base_url = " + sim,
            "graph_base_url = " + sim,
            "link_mode = " + self.link_mode,
            "link_secret = sandbox-link-secret-0123456789",
            "",
            "[delivery]",
            "max_in_flight_per_mailbox = 4",
            "recovery_delay = 5",
            "",
        ]) + (self.extra_config or "")

    def default_policy(self):
        return ("# Nextal Office 365 integration policy (sandbox)\n"
                "[integration]\nenabled = true\nmode = all\n")

    def write_agent_files(self):
        self.password_hash = self.hash_password()
        with open(self.path("agent.ini"), "w") as f:
            f.write(self.agent_config_text())
        with open(self.path("policy.ini"), "w") as f:
            f.write(self.policy_text or self.default_policy())

    # ---- processes ------------------------------------------------------

    def start_sim(self):
        port_file = self.path("graphsim.port")
        args = ["/usr/bin/python3", GRAPHSIM, "--port", "0",
                "--port-file", port_file, "--config", self.path("graphsim.json")]
        if self.latency_ms:
            args += ["--latency-ms", str(self.latency_ms)]
        self.sim_log = open(self.path("graphsim.log"), "ab")
        self.sim = subprocess.Popen(args, stdout=self.sim_log,
                                    stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(port_file), what="the simulator")
        with open(port_file) as f:
            self.sim_port = int(f.read().strip())

    def start_agent(self):
        self.agent_log = open(self.path("agent.log"), "ab")
        self.agent = subprocess.Popen(
            [self.agent_bin, "--config", self.path("agent.ini")]
            + self.agent_args, stdout=self.agent_log,
            stderr=subprocess.STDOUT, cwd=self.dir)
        # Ready is when its heartbeat names it: the agent writes that file
        # only once both listeners are open. An open port alone could be
        # another process's, on a port taken since free_port chose it.
        try:
            wait_for(lambda: self.agent_ready() or self.agent.poll() is not None,
                     what="the agent")
        except TimeoutError:
            raise RuntimeError("agent did not start:\n" + self.agent_output())
        if self.agent.poll() is not None:
            raise RuntimeError("agent exited with %s:\n%s"
                               % (self.agent.returncode, self.agent_output()))

    def agent_ready(self):
        """Whether the running agent's heartbeat, beside the database its
        agent.ini names now (a test may point it elsewhere), names it."""
        ini = configparser.ConfigParser(interpolation=None, strict=False)
        ini.read(self.path("agent.ini"))
        database = ini.get("agent", "database", fallback="agent.db")
        try:
            with open(os.path.join(self.dir, database + ".heartbeat")) as f:
                return "pid=%d\n" % self.agent.pid in f.read()
        except FileNotFoundError:
            return False

    def stop_agent(self, sig=signal.SIGTERM, timeout=30):
        if self.agent is None:
            return None
        if self.agent.poll() is None:
            self.agent.send_signal(sig)
        rc = self.agent.wait(timeout=timeout)
        self.agent = None
        self.agent_log.close()
        return rc

    def restart_agent(self):
        self.stop_agent()
        self.start_agent()

    def agent_output(self):
        with open(self.path("agent.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def start(self, link=True):
        # free_port's ports are free when chosen, not when the agent binds
        # them: under ctest -j another sandbox may take one in between. Then
        # the whole start is tried again on fresh ports.
        for attempt in range(3):
            self.write_sim_config()
            self.start_sim()
            self.write_agent_files()
            try:
                self.start_agent()
                break
            except RuntimeError as e:
                if attempt == 2 or "address already in use" not in str(e):
                    raise
                self.stop_agent()
                self.stop_sim()
                self.smtp_port = free_port()
                self.http_port = free_port()
        if link:
            self.grant_consent()
            for address, _ in self.users:
                self.link(address)
        return self

    def close(self):
        try:
            self.stop_agent()
        finally:
            self.stop_sim()
            if self.own_dir and not os.environ.get("NEXTAL_KEEP_SANDBOX"):
                shutil.rmtree(self.dir, ignore_errors=True)

    def stop_sim(self):
        if self.sim is not None:
            self.sim.terminate()
            self.sim.wait(timeout=10)
            self.sim_log.close()
            self.sim = None
            os.unlink(self.path("graphsim.port"))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # ---- administration -------------------------------------------------

    def policy_cli(self, *args, check=True, input=None):
        env = dict(os.environ, NEXTAL_AGENT_CONFIG=self.path("agent.ini"))
        out = subprocess.run([self.policy_bin] + list(args), env=env,
                             capture_output=True, text=True, input=input,
                             cwd=self.dir)
        if check and out.returncode != 0:
            raise RuntimeError("nextal-policy %s failed (%d): %s%s" % (
                " ".join(args), out.returncode, out.stdout, out.stderr))
        return out

    def grant_consent(self):
        """Follows the admin consent link the way a browser would."""
        link = self.policy_cli("consent-link").stdout.strip().splitlines()[-1]
        return http_get(link)

    def link(self, address):
        return self.policy_cli("link", address)

    # ---- the simulator's read side --------------------------------------

    def sim_url(self, path):
        return "http://127.0.0.1:%d%s" % (self.sim_port, path)

    def sim_get(self, path):
        with urllib.request.urlopen(self.sim_url(path), timeout=10) as r:
            return json.load(r)

    def sim_post(self, path, body):
        req = urllib.request.Request(
            self.sim_url(path), data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return json.loads(text) if text else None

    def sent(self, address):
        """Every message Graph accepted from address, oldest first."""
        quoted = urllib.parse.quote(address)
        return self.sim_get("/_sim/mailboxes/%s/sent" % quoted)["messages"]

    def graph_get(self, path):
        """GETs path from the simulator's Graph API as another application
        of the tenant would read it (client credentials), not through the
        /_sim/ control side."""
        form = urllib.parse.urlencode({
            "grant_type": "client_credentials", "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scope": "https://graph.microsoft.com/.default"}).encode()
        with urllib.request.urlopen(
                self.sim_url("/%s/oauth2/v2.0/token" % TENANT_ID), form,
                timeout=10) as r:
            token = json.load(r)["access_token"]
        req = urllib.request.Request(
            self.sim_url(path), headers={"Authorization": "Bearer " + token})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def wait_sent(self, address, count, timeout=30):
        def enough():
            items = self.sent(address)
            return items if len(items) >= count else None
        return wait_for(enough, timeout, "%d messages from %s" % (count, address))


def http_get(url, max_redirects=10):
    """GET following redirects; returns (status, final_url, body)."""
    for _ in range(max_redirects):
        req = urllib.request.Request(url)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(req, timeout=10) as r:
                return r.status, url, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            if e.code in (301, 302, 303, 307, 308) and e.headers.get("Location"):
                url = urllib.parse.urljoin(url, e.headers["Location"])
                continue
            return e.code, url, e.read().decode("utf-8", "replace")
    raise RuntimeError("too many redirects")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def watch(box):
    """Waits for Ctrl-C or SIGTERM; says so if the agent dies meanwhile."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while box.agent.poll() is None:
            time.sleep(0.5)
        print("\nnextal-agent exited with status %s; the last lines of %s:\n%s"
              % (box.agent.returncode, box.path("agent.log"),
                 "\n".join(box.agent_output().splitlines()[-15:])))
    except KeyboardInterrupt:
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    parser.add_argument("--dir", help="sandbox directory (default: a new temp dir)")
    parser.add_argument("--demo", action="store_true",
                        help="send one SMTP message and one CalDAV event, show what Graph got")
    parser.add_argument("--client-certificate", action="store_true",
                        help="authenticate the agent with a self-signed "
                        "certificate instead of the client secret")
    parser.add_argument("--keep", action="store_true",
                        help="leave the sandbox running until Ctrl-C")
    args = parser.parse_args()
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    box = Sandbox(build_dir=args.build_dir, workdir=args.dir,
                  client_certificate=args.client_certificate)
    try:
        box.start()
        print("sandbox: %s" % box.dir)
        print("  SMTP    127.0.0.1:%d  (AUTH %s / %s)" % (box.smtp_port, SERVICE_USER, SERVICE_PASSWORD))
        print("  HTTP    127.0.0.1:%d  (CalDAV, consent, linking)" % box.http_port)
        print("  Graph   127.0.0.1:%d  (simulator; read side under /_sim/)" % box.sim_port)
        print("  users   " + ", ".join(a for a, _ in box.users))
        print("  config  %s   policy %s" % (box.path("agent.ini"), box.path("policy.ini")))
        print("  database %s" % box.path("agent.db"))
        if args.demo:
            import demo
            demo.run(box)
        if args.keep:
            print("\nRunning; Ctrl-C stops it. Logs: %s, %s"
                  % (box.path("agent.log"), box.path("graphsim.log")))
            # nextal-policy reads NEXTAL_AGENT_CONFIG (or --config); without
            # it, it looks for /etc/nextal-agent/agent.ini.
            import shlex
            print("Administer it from another shell with nextal-policy:\n"
                  "  export NEXTAL_AGENT_CONFIG=%s\n  %s status"
                  % (shlex.quote(os.path.abspath(box.path("agent.ini"))),
                     shlex.quote(box.policy_bin)))
            watch(box)
    finally:
        if args.keep or args.dir:
            os.environ["NEXTAL_KEEP_SANDBOX"] = "1"
        box.close()


if __name__ == "__main__":
    sys.exit(main())
