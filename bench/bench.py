#!/usr/bin/python3
"""nextal-agent benchmarks (issue 7): the agent beside Postfix, smtp-sink,
Radicale and the Graph simulator's own ceiling, measured in one run on one
machine. Prints a Markdown table and writes the raw figures as JSON.

Run through bench/run.sh, which installs the packages and builds first.
Not a test: nothing here asserts, it measures.
"""

import argparse
import base64
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
import uuid
from email.message import EmailMessage

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "sandbox"))
import sandbox  # noqa: E402

# The simulator with one write per response (see graphsim_bench.py).
sandbox.GRAPHSIM = os.path.join(HERE, "graphsim_bench.py")
USERS = [a for a, _ in sandbox.DEMO_USERS]
AUTH_PLAIN = base64.b64encode(("\0%s\0%s" % (
    sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)).encode()).decode()
BASIC = "Basic " + base64.b64encode(("%s:%s" % (
    sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)).encode()).decode()
# Parks the agent's deliveries while acceptance is measured (milliseconds).
PARKED_LATENCY_MS = 600000


def log(*args):
    print("[bench %s]" % time.strftime("%H:%M:%S"), *args, file=sys.stderr,
          flush=True)


def proc_status(pid):
    """VmRSS and VmHWM of pid in kB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid):
    """User plus system CPU time of pid and its waited-for children."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / ticks


def pct(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


class BenchBox(sandbox.Sandbox):
    """The sandbox with benchmark settings: quiet logs, room for 2,000 SMTP
    connections, and a close that does not wait for parked requests."""

    def agent_config_text(self):
        text = super().agent_config_text()
        text = text.replace("log_level = debug", "log_level = warn")
        text = text.replace("[smtp]\n", "[smtp]\nmax_connections = 2000\n", 1)
        # Exchange's 30 sends a minute per mailbox would hide the delivery
        # engine behind pacing; figure 2 measures the concurrency ceiling.
        return text.replace("[delivery]\n", "[delivery]\nmax_per_minute = 0\n"
                            "max_recipients_per_day = 0\n", 1)

    def close(self):
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        self.agent = None
        if self.sim is not None:
            self.sim.kill()
            self.sim.wait()
            self.sim = None
        if self.own_dir and not os.environ.get("NEXTAL_KEEP_SANDBOX"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def token(self):
        """An application token from the simulator, for direct calls."""
        form = urllib.parse.urlencode({
            "grant_type": "client_credentials",
            "client_id": sandbox.CLIENT_ID,
            "client_secret": sandbox.CLIENT_SECRET,
            "scope": "https://graph.microsoft.com/.default"}).encode()
        url = self.sim_url("/%s/oauth2/v2.0/token" % sandbox.TENANT_DOMAIN)
        with urllib.request.urlopen(url, data=form, timeout=10) as r:
            return json.load(r)["access_token"]


# ---- 1. SMTP accept rate ---------------------------------------------------

def smtp_load(args, port, n, clients, sender="alice@contoso.example",
              auth=True, size=10240):
    cmd = [os.path.join(args.build_dir, "bench", "smtp_load"), "-p", str(port),
           "-c", str(clients), "-n", str(n), "-s", str(size), "-f", sender,
           "-k", "100"]
    if auth:
        cmd += ["-a", AUTH_PLAIN]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0 and not out.stdout:
        raise RuntimeError("smtp_load failed: " + out.stderr)
    return json.loads(out.stdout)


class Postfix:
    """A private Postfix instance on a loopback port whose smtp transport
    is deferred, so that a run measures acceptance only. Its queue file is
    fsynced before 250, as Postfix always does."""

    def __init__(self, workdir, port):
        self.dir = os.path.join(workdir, "postfix")
        self.conf = os.path.join(self.dir, "conf")
        self.port = port

    def postconf(self, *args):
        subprocess.run(["postconf", "-c", self.conf] + list(args), check=True,
                       capture_output=True)

    def start(self):
        os.makedirs(self.conf, exist_ok=True)
        for name in ("main.cf", "master.cf"):
            shutil.copy(os.path.join("/etc/postfix", name), self.conf)
        for sub in ("queue", "data"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.postconf(
            "-e", "queue_directory=%s/queue" % self.dir,
            "data_directory=%s/data" % self.dir,
            "maillog_file_prefixes=/var,/dev/stdout,%s" % self.dir,
            "maillog_file=%s/maillog" % self.dir,
            "inet_interfaces=loopback-only", "inet_protocols=ipv4",
            "myhostname=bench.invalid", "myorigin=bench.invalid",
            "mydestination=", "mynetworks=127.0.0.0/8", "relayhost=",
            "default_transport=smtp", "relay_transport=smtp",
            "defer_transports=smtp", "disable_dns_lookups=yes",
            "smtp_dns_support_level=disabled", "smtpd_peername_lookup=no",
            "smtpd_client_connection_count_limit=0",
            "default_process_limit=200", "alias_maps=", "alias_database=",
            "smtpd_relay_restrictions=permit_mynetworks,reject",
            "message_size_limit=52428800", "compatibility_level=3.6",
            "smtpd_banner=$myhostname ESMTP bench")
        self.postconf("-MX", "smtp/inet")
        self.postconf("-M", "127.0.0.1:%d/inet=127.0.0.1:%d inet n - n - - "
                      "smtpd" % (self.port, self.port))
        # The postfix command accepts a private -c directory only when the
        # default main.cf lists it.
        subprocess.run(["postconf", "-e", "alternate_config_directories=%s"
                        % self.conf], check=True)
        subprocess.run(["postfix", "-c", self.conf, "set-permissions"],
                       capture_output=True)
        subprocess.run(["postfix", "-c", self.conf, "start"], check=True,
                       capture_output=True)
        sandbox.wait_for(lambda: sandbox.port_open(self.port), what="postfix")
        return self

    def queued(self):
        out = subprocess.run(["postqueue", "-c", self.conf, "-j"],
                             capture_output=True, text=True)
        return len([x for x in out.stdout.splitlines() if x.strip()])

    def stop(self):
        subprocess.run(["postfix", "-c", self.conf, "stop"],
                       capture_output=True)
        subprocess.run(["postconf", "-X", "alternate_config_directories"],
                       capture_output=True)


def bench_smtp(args, workdir, res):
    """The three servers run side by side and are measured in interleaved
    rounds, so that a burst of other load on the machine hits all three;
    the table gives the median round of each and the median ratio."""
    n, c = args.smtp_messages, args.smtp_clients
    out = res["smtp"] = {"messages": n, "clients": c, "size": 10240,
                         "rounds": []}
    box = BenchBox(build_dir=args.build_dir).start()
    pf = sink = None
    try:
        # Deliveries hang in the simulator for the whole run, so the agent
        # spends its CPU on acceptance only, as Postfix's deferred transport.
        box.sim_post("/_sim/latency", {"ms": PARKED_LATENCY_MS})
        pf = Postfix(workdir, sandbox.free_port()).start()
        sink_port = sandbox.free_port()
        sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "-m", "1000",
                                 "127.0.0.1:%d" % sink_port, "1000"],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        sandbox.wait_for(lambda: sandbox.port_open(sink_port),
                         what="smtp-sink")
        targets = [("agent", box.smtp_port, True, n),
                   ("postfix", pf.port, False, n),
                   ("sink", sink_port, False, 3 * n)]
        for _, port, auth, _ in targets:
            smtp_load(args, port, 200, c, auth=auth)
        for r in range(args.smtp_rounds):
            row = {}
            for name, port, auth, count in targets:
                log("SMTP round %d: %s" % (r + 1, name))
                row[name] = smtp_load(args, port, count, c, auth=auth)
            out["rounds"].append(row)
        with sqlite3.connect(box.path("agent.db"), timeout=30) as db:
            out["agent_queued_rows"] = db.execute(
                "SELECT count(*) FROM messages").fetchone()[0]
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait()
        if pf is not None:
            pf.stop()
        box.close()
    for name in ("agent", "postfix", "sink"):
        rounds = sorted(out["rounds"], key=lambda x: x[name]["rate"])
        out[name] = rounds[len(rounds) // 2][name]
        out[name]["failed"] = sum(x[name]["failed"] for x in out["rounds"])
        out[name]["all_rates"] = [round(x[name]["rate"])
                                  for x in out["rounds"]]
    out["ratio_postfix"] = statistics.median(
        x["agent"]["rate"] / x["postfix"]["rate"] for x in out["rounds"])
    out["ratio_sink"] = statistics.median(
        x["agent"]["rate"] / x["sink"]["rate"] for x in out["rounds"])


# ---- 2. Delivery against Graph's ceiling -----------------------------------

def graph_send_body(size=10240):
    text = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n"
            * (size // 57 + 1))[:size]
    return json.dumps({"message": {
        "subject": "bench", "body": {"contentType": "text", "content": text},
        "toRecipients": [{"emailAddress": {"address": "jordan@example.net"}}]},
        "saveToSentItems": True}).encode()


def ab_run(url, n, c, token, body_file=None, method=None, content_type=None):
    """One ab run; returns requests/s, non-2xx count and percentiles."""
    cmd = ["ab", "-q", "-n", str(n), "-c", str(c),
           "-H", "Authorization: " + token]
    if body_file:
        cmd += ["-p", body_file, "-T", content_type or "application/json"]
    if method:
        cmd += ["-m", method]
    out = subprocess.run(cmd + [url], capture_output=True, text=True,
                         timeout=600)
    r = {"non2xx": 0, "failed": 0}
    for line in out.stdout.splitlines():
        parts = line.split()
        if line.startswith("Requests per second:"):
            r["rate"] = float(parts[3])
        elif line.startswith("Non-2xx responses:"):
            r["non2xx"] = int(parts[2])
        elif line.startswith("Failed requests:"):
            r["failed"] = int(parts[2])
        elif line.startswith("Time taken for tests:"):
            r["seconds"] = float(parts[4])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            r["p" + parts[0][:-1] + "_ms"] = float(parts[1])
    if "rate" not in r:
        raise RuntimeError("ab failed: %s %s" % (out.stdout, out.stderr))
    return r


def parse_iso(text):
    # "2026-12-03T19:00:01.123456Z" (the simulator's iso_z with fractions)
    text = text.rstrip("Z")
    main, _, frac = text.partition(".")
    t = time.mktime(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return t + (float("0." + frac) if frac else 0.0)


def agent_delivery(args, box, users, per, lat):
    """Queues per messages for each of users with the simulator stopped,
    releases it and times the sendMail acceptances."""
    log("delivery: agent, %d mailboxes, %d messages each" % (len(users), per))
    ideal = 4 * len(users) / (lat / 1000.0)
    out = {"mailboxes": len(users), "ideal_rate": ideal}
    box.sim_post("/_sim/reset", {})
    time.sleep(1)
    # The simulator is stopped while the mail is submitted, so that the
    # whole batch is queued before the first sendMail completes: the
    # agent's requests wait on their sockets (well inside curl's 60 s).
    os.kill(box.sim.pid, signal.SIGSTOP)
    t0 = time.time()
    subs = [None] * len(users)

    def submit(i, addr):
        subs[i] = smtp_load(args, box.smtp_port, per, 10, sender=addr)
    threads = [threading.Thread(target=submit, args=(i, a))
               for i, a in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["submit_seconds"] = time.time() - t0
    out["submit_failed"] = sum(s["failed"] for s in subs)
    total = sum(s["sent"] for s in subs)
    sim_cpu0, agent_cpu0 = cpu_seconds(box.sim.pid), cpu_seconds(
        box.agent.pid)
    released = time.time()
    os.kill(box.sim.pid, signal.SIGCONT)

    inflight = []

    def accepted():
        st = box.sim_get("/_sim/stats")
        inflight.append(sum(st.get("inflight", {}).values()))
        return sum(st.get("mailboxes", st).get(a, {}).get(
            "sendmail_accepted", 0) for a in users)
    deadline = time.time() + max(120, 3 * total / ideal)
    while accepted() < total and time.time() < deadline:
        time.sleep(0.1)
    # Samples from the drain (the last one is taken after it).
    out["mean_in_flight"] = statistics.mean(inflight[:-1] or [0])
    out["sim_cpu_s"] = cpu_seconds(box.sim.pid) - sim_cpu0
    out["agent_cpu_s"] = cpu_seconds(box.agent.pid) - agent_cpu0
    stats = box.sim_get("/_sim/stats")
    stats = stats.get("mailboxes", stats)
    times = []
    for a in users:
        times += [parse_iso(m["accepted_at"]) for m in box.sent(a)]
    times.sort()
    out["delivered"] = len(times)
    out["submitted"] = total
    span = times[-1] - times[0] if len(times) > 1 else 0
    out["span_s"] = span
    out["rate"] = (len(times) - 1) / span if span else 0
    out["fraction"] = out["rate"] / ideal
    out["release_to_last_s"] = times[-1] - released if times else 0
    out["rate_from_release"] = (len(times) / out["release_to_last_s"]
                                if times else 0)
    out["throttled_concurrency"] = sum(
        stats.get(a, {}).get("throttled_concurrency", 0) for a in users)
    out["max_concurrency"] = max(
        stats.get(a, {}).get("max_concurrency", 0) for a in users)
    out["sim_cpu_pct"] = 100 * out["sim_cpu_s"] / span if span else 0
    out["agent_cpu_pct"] = 100 * out["agent_cpu_s"] / span if span else 0
    return out


def bench_delivery(args, workdir, res):
    lat, users = args.latency_ms, USERS[:args.mailboxes]
    per = args.delivery_per_mailbox
    ideal = 4 * len(users) / (lat / 1000.0)
    out = res["delivery"] = {"latency_ms": lat, "mailboxes": len(users),
                             "per_mailbox": per, "ideal_rate": ideal}
    box = BenchBox(build_dir=args.build_dir, latency_ms=lat).start()
    try:
        token = "Bearer " + box.token()
        body = os.path.join(workdir, "sendmail.json")
        with open(body, "wb") as f:
            f.write(graph_send_body())

        # The simulator's own ceiling: ab sending straight to Graph, 4 in
        # flight per mailbox, as many mailboxes, same latency.
        log("delivery: simulator ceiling with ab")
        results = [None] * len(users)

        def direct(i, addr):
            url = box.sim_url("/v1.0/users/%s/sendMail" % addr)
            results[i] = ab_run(url, per // 2, 4, token, body)
        threads = [threading.Thread(target=direct, args=(i, a))
                   for i, a in enumerate(users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["sim_direct"] = {
            "rate": sum(r["rate"] for r in results),
            "non2xx": sum(r["non2xx"] for r in results)}
        # And with no latency at all, all mailboxes: the simulator's CPU cap.
        box.sim_post("/_sim/latency", {"ms": 0})
        threads = [threading.Thread(target=direct, args=(i, a))
                   for i, a in enumerate(users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["sim_cpu_ceiling"] = sum(r["rate"] for r in results)
        box.sim_post("/_sim/latency", {"ms": lat})

        out["agent"] = agent_delivery(args, box, users, per, lat)
        # One mailbox alone: tells a per-mailbox limit from a shared one.
        out["agent_one"] = agent_delivery(args, box, users[:1], per // 2, lat)
        out.update(out["agent"])
    finally:
        box.close()


# ---- 3. CalDAV ---------------------------------------------------------------

def vevent(uid, day=4):
    return "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Nextal//bench//EN",
        "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20300101T000000Z",
        "DTSTART;TZID=Europe/Berlin:203003%02dT090000" % day,
        "DTEND;TZID=Europe/Berlin:203003%02dT100000" % day,
        "SUMMARY:Interview " + uid[:8],
        "DESCRIPTION:Technical interview with the candidate.",
        "LOCATION:Room 4",
        "ORGANIZER;CN=Alice Adams:mailto:alice@contoso.example",
        "ATTENDEE;CN=Jordan Candidate;ROLE=REQ-PARTICIPANT:"
        "mailto:jordan@example.net",
        "END:VEVENT", "END:VCALENDAR", ""])


PROPFIND_BODY = ('<?xml version="1.0" encoding="utf-8"?>'
                 '<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/>'
                 '<d:resourcetype/></d:prop></d:propfind>')
REPORT_BODY = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
    '<d:prop><d:getetag/><c:calendar-data/></d:prop>'
    '<c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT">'
    '<c:time-range start="20300301T000000Z" end="20300401T000000Z"/>'
    '</c:comp-filter></c:comp-filter></c:filter></c:calendar-query>')


class HttpTarget:
    """Where one kind of request goes: a function making (method, path,
    body, headers) for request number i."""

    def __init__(self, port, make):
        self.port = port
        self.make = make


def http_run(target, n, clients):
    """n requests over `clients` keep-alive connections; returns rate,
    latency percentiles and the status codes seen."""
    lock = threading.Lock()
    counter = [0]
    lats, codes = [], {}

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", target.port,
                                          timeout=60)
        mine = []
        while True:
            with lock:
                i = counter[0]
                counter[0] += 1
            if i >= n:
                break
            method, path, body, headers = target.make(i)
            t = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", target.port,
                                                  timeout=60)
                status = 0
            mine.append(time.perf_counter() - t)
            with lock:
                codes[status] = codes.get(status, 0) + 1
        conn.close()
        with lock:
            lats.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    el = time.perf_counter() - t0
    return {"rate": n / el, "p50_ms": 1000 * pct(lats, 50),
            "p99_ms": 1000 * pct(lats, 99), "codes": codes}


class Radicale:
    def __init__(self, workdir, port):
        self.dir = os.path.join(workdir, "radicale")
        self.port = port

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "config")
        with open(conf, "w") as f:
            f.write("[server]\nhosts = 127.0.0.1:%d\n"
                    "[auth]\ntype = none\n"
                    "[storage]\nfilesystem_folder = %s/collections\n"
                    "[logging]\nlevel = warning\n" % (self.port, self.dir))
        self.log = open(os.path.join(self.dir, "radicale.log"), "ab")
        self.proc = subprocess.Popen(["radicale", "--config", conf],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        sandbox.wait_for(lambda: sandbox.port_open(self.port), what="radicale")
        return self

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def http_once(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data


def caldav_targets(port, collection, auth, seeded):
    """The four request kinds against one CalDAV server."""
    hdr = {"Authorization": auth}
    ical = dict(hdr, **{"Content-Type": "text/calendar; charset=utf-8"})
    xml1 = dict(hdr, **{"Content-Type": "application/xml; charset=utf-8",
                        "Depth": "1"})

    def put(i):
        uid = str(uuid.uuid4())
        return ("PUT", collection + uid + ".ics", vevent(uid, 5 + i % 20),
                dict(ical, **{"If-None-Match": "*"}))
    return {
        "PROPFIND": HttpTarget(port, lambda i: (
            "PROPFIND", collection, PROPFIND_BODY, xml1)),
        "GET": HttpTarget(port, lambda i: (
            "GET", collection + seeded[i % len(seeded)] + ".ics", None, hdr)),
        "REPORT": HttpTarget(port, lambda i: (
            "REPORT", collection, REPORT_BODY, xml1)),
        "PUT": HttpTarget(port, put),
    }


def graph_targets(box, token, event_ids, addr):
    """The Graph requests the agent makes for each CalDAV request kind."""
    hdr = {"Authorization": token}
    js = dict(hdr, **{"Content-Type": "application/json"})
    event = json.dumps({
        "subject": "Interview", "body": {"contentType": "text",
                                         "content": "Technical interview."},
        "start": {"dateTime": "2030-03-05T09:00:00",
                  "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": "2030-03-05T10:00:00",
                "timeZone": "W. Europe Standard Time"},
        "location": {"displayName": "Room 4"},
        "attendees": [{"type": "required", "emailAddress": {
            "address": "jordan@example.net", "name": "Jordan Candidate"}}]})
    view = ("/v1.0/users/%s/calendarView?startDateTime=2030-03-01T00:00:00Z"
            "&endDateTime=2030-04-01T00:00:00Z&$top=100" % addr)
    return {
        "PROPFIND": HttpTarget(box.sim_port, lambda i: ("GET", view, None,
                                                        hdr)),
        "GET": HttpTarget(box.sim_port, lambda i: (
            "GET", "/v1.0/users/%s/events/%s" % (
                addr, event_ids[i % len(event_ids)]), None, hdr)),
        "REPORT": HttpTarget(box.sim_port, lambda i: ("GET", view, None,
                                                      hdr)),
        "PUT": HttpTarget(box.sim_port, lambda i: (
            "POST", "/v1.0/users/%s/events" % addr, event, js)),
    }


def sim_requests(box, addr):
    st = box.sim_get("/_sim/stats")
    return st.get("mailboxes", st).get(addr, {}).get("requests", 0)


def bench_caldav(args, workdir, res):
    out = res["caldav"] = {"ops": {}}
    addr = USERS[0]
    nlat, nrate, conc = args.caldav_requests, args.caldav_requests, 4
    box = BenchBox(build_dir=args.build_dir).start()
    rad = Radicale(workdir, sandbox.free_port()).start()
    try:
        agent_coll = "/dav/calendars/%s/default/" % addr
        seeded = [str(uuid.uuid4()) for _ in range(args.caldav_events)]
        for uid in seeded:
            st, _, body = http_once(
                box.http_port, "PUT", agent_coll + uid + ".ics", vevent(uid),
                {"Authorization": BASIC,
                 "Content-Type": "text/calendar; charset=utf-8"})
            if st not in (201, 204):
                out["ready"] = False
                out["why"] = "PUT answered %d: %s" % (st, body[:200])
                log("CalDAV not ready: " + out["why"])
                return
        out["ready"] = True
        rad_coll = "/%s/default/" % sandbox.SERVICE_USER
        st, _, body = http_once(rad.port, "MKCALENDAR", rad_coll,
                                headers={"Authorization": BASIC})
        if st not in (201, 405):
            raise RuntimeError("radicale MKCALENDAR %d %s" % (st, body))
        for uid in seeded:
            http_once(rad.port, "PUT", rad_coll + uid + ".ics", vevent(uid),
                      {"Authorization": BASIC,
                       "Content-Type": "text/calendar; charset=utf-8"})
        token = "Bearer " + box.token()
        st, _, data = http_once(
            box.sim_port, "GET", "/v1.0/users/%s/events?$top=100&$select=id"
            % addr, headers={"Authorization": token})
        event_ids = [e["id"] for e in json.loads(data)["value"]]
        out["events"] = len(seeded)
        targets = {
            "agent": caldav_targets(box.http_port, agent_coll, BASIC, seeded),
            "radicale": caldav_targets(rad.port, rad_coll, BASIC, seeded),
            "graph": graph_targets(box, token, event_ids, addr),
        }
        def slow_reads():
            # The same reads with Graph as slow as the delivery figure's: what
            # a request costs that makes several Graph calls one after another.
            lat = args.latency_ms
            box.sim_post("/_sim/latency", {"ms": lat})
            out["slow"] = {"latency_ms": lat}
            for op in ("GET", "REPORT"):
                row = out["slow"][op] = {}
                for who in ("agent", "graph"):
                    log("CalDAV %s %s at %d ms" % (op, who, lat))
                    r = http_run(targets[who][op], args.caldav_slow_requests, 1)
                    row[who] = {"p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                                "codes": r["codes"]}
            box.sim_post("/_sim/latency", {"ms": 0})

        # PUT last: it grows the calendar the others read.
        for op in ("PROPFIND", "GET", "REPORT", "PUT"):
            if op == "PUT":
                slow_reads()
            row = out["ops"][op] = {}
            for who in ("agent", "radicale", "graph"):
                log("CalDAV %s %s" % (op, who))
                before = sim_requests(box, addr)
                serial = http_run(targets[who][op], nlat, 1)
                calls = (sim_requests(box, addr) - before) / nlat
                loaded = http_run(targets[who][op], nrate, conc)
                row[who] = {"p50_ms": serial["p50_ms"],
                            "p99_ms": serial["p99_ms"],
                            "rate": loaded["rate"],
                            "codes": dict(serial["codes"], **{
                                "loaded_%s" % k: v
                                for k, v in loaded["codes"].items()}),
                            "graph_calls": calls}
        out["concurrency"] = conc
    finally:
        rad.stop()
        box.close()


# ---- 4. Memory -----------------------------------------------------------------

def big_message(size):
    msg = EmailMessage()
    msg["From"] = USERS[0]
    msg["To"] = "jordan@example.net"
    msg["Subject"] = "Large attachment"
    msg.set_content("The documents are attached.")
    raw = os.urandom(size * 3 // 4)
    msg.add_attachment(raw, maintype="application", subtype="octet-stream",
                       filename="big.bin")
    return msg.as_bytes()


def bench_memory(args, workdir, res):
    out = res["memory"] = {}
    box = BenchBox(build_dir=args.build_dir).start()
    try:
        pid = box.agent.pid
        time.sleep(1)
        out["idle_kb"] = proc_status(pid)["VmRSS"]

        log("memory: one 30 MB message")
        data = big_message(30 * 1000 * 1000)
        out["big_bytes"] = len(data)
        import smtplib
        before = proc_status(pid)["VmHWM"]
        try:
            with smtplib.SMTP("127.0.0.1", box.smtp_port, timeout=300) as c:
                c.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
                c.sendmail(USERS[0], ["jordan@example.net"], data)
            out["big_reply"] = "250 accepted"
        except smtplib.SMTPException as e:
            out["big_reply"] = str(e)[:200]
        # Wait for delivery (or failure) so the peak includes the Graph side.
        deadline = time.time() + (60 if out["big_reply"].startswith("250")
                                  else 0)
        while time.time() < deadline:
            if box.sent(USERS[0]):
                out["big_delivered"] = True
                break
            time.sleep(0.5)
        else:
            out["big_delivered"] = False
        st = proc_status(pid)
        out["hwm_before_kb"], out["hwm_kb"] = before, st["VmHWM"]
        out["rss_after_big_kb"] = st["VmRSS"]

        log("memory: 1000 idle SMTP connections")
        socks = []
        base = proc_status(pid)["VmRSS"]
        for _ in range(args.idle_connections):
            s = socket.create_connection(("127.0.0.1", box.smtp_port),
                                         timeout=30)
            socks.append(s)
        greeted = 0
        for s in socks:
            if s.recv(512).startswith(b"220"):
                greeted += 1
        for s in socks:
            s.sendall(b"EHLO bench.invalid\r\n")
        for s in socks:
            s.recv(4096)
        time.sleep(1)
        now = proc_status(pid)["VmRSS"]
        out["connections"] = len(socks)
        out["greeted"] = greeted
        out["conn_base_kb"] = base
        out["conn_rss_kb"] = now
        out["per_conn_kb"] = (now - base) / max(1, len(socks))
        for s in socks:
            s.close()
    finally:
        box.close()


# ---- 5. Translation ----------------------------------------------------------------

def bench_translate(args, workdir, res):
    out = res["translate"] = {}
    msg = EmailMessage()
    msg["From"] = USERS[0]
    msg["To"] = "Jordan <jordan@example.net>"
    msg["Subject"] = "Your documents"
    msg["Message-ID"] = "<bench-translate@bench.invalid>"
    msg.set_content("Hello Jordan,\n\nthe contract and the handbook are "
                    "attached.\n" * 20)
    msg.add_alternative("<p>Hello Jordan,</p><p>the contract and the handbook "
                        "are attached.</p>" * 20, subtype="html")
    for name, size in (("contract.pdf", 1200000), ("handbook.pdf", 1200000)):
        msg.add_attachment(os.urandom(size), maintype="application",
                           subtype="pdf", filename=name)
    mime = os.path.join(workdir, "attachments.eml")
    with open(mime, "wb") as f:
        f.write(msg.as_bytes())
    # The large form: a 30 MB attachment, read from the spool line by line
    # and decoded piece by piece, as delivery does past Graph's 4 MB.
    big = EmailMessage()
    big["From"] = USERS[0]
    big["To"] = "Jordan <jordan@example.net>"
    big["Subject"] = "Your portfolio"
    big["Message-ID"] = "<bench-translate-big@bench.invalid>"
    big.set_content("Hello Jordan,\n\nthe portfolio is attached.\n")
    big.add_attachment(os.urandom(30 * 1000 * 1000), maintype="application",
                       subtype="pdf", filename="portfolio.pdf")
    large = os.path.join(workdir, "large.eml")
    with open(large, "wb") as f:  # CRLF, as the spool holds it
        f.write(big.as_bytes(policy=big.policy.clone(linesep="\r\n")))
    ical = os.path.join(workdir, "event.ics")
    lines = [
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Nextal//bench//EN",
        "BEGIN:VEVENT", "UID:bench-translate-1", "DTSTAMP:20300101T000000Z",
        "DTSTART;TZID=Europe/Berlin:20300304T090000",
        "DTEND;TZID=Europe/Berlin:20300304T100000",
        "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10",
        "EXDATE;TZID=Europe/Berlin:20300311T090000",
        "SUMMARY:Interview loop", "LOCATION:Room 4",
        "DESCRIPTION:Technical interview with the candidate.\\nBring a CV.",
        "ORGANIZER;CN=Alice Adams:mailto:alice@contoso.example"]
    for i in range(5):
        lines.append("ATTENDEE;CN=Panel %d;ROLE=REQ-PARTICIPANT:"
                     "mailto:panel%d@contoso.example" % (i, i))
    lines += ["CATEGORIES:Interview", "BEGIN:VALARM", "ACTION:DISPLAY",
              "DESCRIPTION:Reminder", "TRIGGER:-PT15M", "END:VALARM",
              "END:VEVENT", "END:VCALENDAR", ""]
    with open(ical, "w") as f:
        f.write("\r\n".join(lines))
    exe = os.path.join(args.build_dir, "bench", "translate_bench")
    for what, path in (("mime", mime), ("mime-file", large), ("ical", ical)):
        r = subprocess.run([exe, what, path, str(args.translate_seconds)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            out[what] = {"error": r.stderr.strip()[:200]}
        else:
            out[what] = json.loads(r.stdout)


# ---- report ----------------------------------------------------------------------

def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_mb": mem,
            "loadavg": load,
            "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def fmt(x, digits=0):
    return ("%%.%df" % digits) % x


def table(res):
    rows = []
    m = res["machine"]
    rows.append("Machine: %d CPUs (%s), %d MB RAM, Linux %s; %s; load "
                "average at start %s, at end %s"
                % (m["nproc"], m["cpu"], m["ram_mb"], m["kernel"], m["date"],
                   m.get("loadavg", "?"), res.get("loadavg_end", "?")))
    rows.append("")
    rows.append("| # | measure | nextal-agent | beside it | ratio / note | "
                "target |")
    rows.append("|---|---|---|---|---|---|")
    s = res.get("smtp")
    if s:
        a, p, k = s["agent"], s["postfix"], s["sink"]
        rows.append(
            "| 1 | SMTP accept, 10 kB, %d clients (msg/s, median of %d "
            "rounds: %s) | %s (p50 %s ms, p99 %s ms) | Postfix %s (%s), "
            "smtp-sink %s (%s) | %.2f× Postfix, %.2f× sink | ≥ Postfix: "
            "%s |" % (
                s["clients"], len(s["rounds"]),
                "/".join(str(x) for x in a["all_rates"]), fmt(a["rate"]),
                fmt(a["p50_ms"], 1), fmt(a["p99_ms"], 1), fmt(p["rate"]),
                "/".join(str(x) for x in p["all_rates"]), fmt(k["rate"]),
                "/".join(str(x) for x in k["all_rates"]),
                s["ratio_postfix"], s["ratio_sink"],
                "met" if s["ratio_postfix"] >= 1 else "missed"))
        if a.get("failed") or p.get("failed"):
            rows.append("|   | failures | %d (%s) | Postfix %d | | |" % (
                a["failed"], a["last_error"], p["failed"]))
    d = res.get("delivery")
    if d:
        rows.append(
            "| 2 | delivery, %d mailboxes, %d ms, 4 in flight (msg/s) | %s = "
            "%.0f%% of ideal %s; %d × 429 self-inflicted | ab direct to "
            "simulator %s (%.0f%%); simulator CPU ceiling %s | simulator "
            "CPU %.0f%%, agent CPU %.0f%% of a core | ≥ 90%%, no 429: %s |"
            % (d["mailboxes"], d["latency_ms"], fmt(d["rate"], 1),
               100 * d["fraction"], fmt(d["ideal_rate"]),
               d["throttled_concurrency"], fmt(d["sim_direct"]["rate"], 1),
               100 * d["sim_direct"]["rate"] / d["ideal_rate"],
               fmt(d["sim_cpu_ceiling"]), d["sim_cpu_pct"],
               d["agent_cpu_pct"],
               "met" if d["fraction"] >= 0.9
               and d["throttled_concurrency"] == 0 else "missed"))
        o = d["agent_one"]
        rows.append(
            "| 2 | same, 1 mailbox alone (msg/s) | %s = %.0f%% of ideal %s; "
            "%d × 429 | | mean in flight %.1f of 4 (%.1f of %d with %d "
            "mailboxes) | |" % (
                fmt(o["rate"], 1), 100 * o["fraction"], fmt(o["ideal_rate"]),
                o["throttled_concurrency"], o["mean_in_flight"],
                d["mean_in_flight"], 4 * d["mailboxes"], d["mailboxes"]))
    c = res.get("caldav")
    if c:
        if not c.get("ready"):
            rows.append("| 3 | CalDAV | not measured: %s | | | |"
                        % c.get("why", "endpoint not ready"))
        else:
            for op, row in c["ops"].items():
                a, r, g = row["agent"], row["radicale"], row["graph"]
                rows.append(
                    "| 3 | CalDAV %s: req/s at %d; p50/p99 ms serial | %s; "
                    "%s/%s (%.1f Graph calls) | Radicale %s; %s/%s · "
                    "Graph direct %s; %s/%s | added vs Graph: p50 +%s ms, "
                    "p99 +%s ms | |" % (
                        op, c["concurrency"], fmt(a["rate"]),
                        fmt(a["p50_ms"], 1), fmt(a["p99_ms"], 1),
                        a["graph_calls"], fmt(r["rate"]),
                        fmt(r["p50_ms"], 1), fmt(r["p99_ms"], 1),
                        fmt(g["rate"]), fmt(g["p50_ms"], 1),
                        fmt(g["p99_ms"], 1),
                        fmt(a["p50_ms"] - g["p50_ms"], 1),
                        fmt(a["p99_ms"] - g["p99_ms"], 1)))
    if c and c.get("ready") and "slow" in c:
        for op in ("GET", "REPORT"):
            a, g = c["slow"][op]["agent"], c["slow"][op]["graph"]
            rows.append(
                "| 3 | CalDAV %s, %d events, Graph at %d ms: p50/p99 ms "
                "serial | %s/%s (%.0f Graph calls) | Graph direct %s/%s | "
                "added: p50 +%s ms | |" % (
                    op, c["events"], c["slow"]["latency_ms"], fmt(a["p50_ms"]),
                         fmt(a["p99_ms"]), c["ops"][op]["agent"]["graph_calls"],
                         fmt(g["p50_ms"]), fmt(g["p99_ms"]),
                         fmt(a["p50_ms"] - g["p50_ms"])))
    mem = res.get("memory")
    if mem:
        rows.append("| 4 | RSS idle | %s MB | | | |"
                    % fmt(mem["idle_kb"] / 1024, 1))
        rows.append("| 4 | RSS per idle SMTP connection (%d open, %d "
                    "greeted) | %s kB | | %s MB for all | |" % (
                        mem["connections"], mem["greeted"],
                        fmt(mem["per_conn_kb"], 1),
                        fmt((mem["conn_rss_kb"] - mem["conn_base_kb"]) / 1024,
                            1)))
        rows.append("| 4 | peak RSS (VmHWM), one %s MB message | %s MB | | "
                    "reply: %s; delivered: %s | |" % (
                        fmt(mem["big_bytes"] / 1e6), fmt(mem["hwm_kb"] / 1024,
                                                         1),
                        mem["big_reply"].replace("|", "/"),
                        "yes" if mem["big_delivered"] else "no"))
    t = res.get("translate")
    if t:
        mi, ic = t["mime"], t["ical"]
        if "error" in mi:
            rows.append("| 5 | MIME → Graph | error: %s | | | |" % mi["error"])
        else:
            rows.append("| 5 | MIME → Graph, %s MB message with 2 attachments "
                        "| %s MB/s (%s ms/message) | | request %s MB | |" % (
                            fmt(mi["input_bytes"] / 1e6, 1),
                            fmt(mi["mb_per_s"], 1),
                            fmt(mi["ms_per_message"], 1),
                            fmt(mi["request_bytes"] / 1e6, 1)))
        mf = t.get("mime-file")
        if mf and "error" in mf:
            rows.append("| 5 | MIME → Graph, large form | error: %s | | | |"
                        % mf["error"])
        elif mf:
            rows.append("| 5 | MIME → Graph, large form (%s MB message, one "
                        "30 MB attachment, streamed and decoded) | %s MB/s "
                        "(%s ms/message) | | decoded %s MB | |" % (
                            fmt(mf["input_bytes"] / 1e6, 1),
                            fmt(mf["mb_per_s"], 1),
                            fmt(mf["ms_per_message"], 1),
                            fmt(mf["decoded_bytes"] / 1e6, 1)))
        if "error" in ic:
            rows.append("| 5 | iCalendar → Graph | error: %s | | | |"
                        % ic["error"])
        else:
            rows.append("| 5 | iCalendar → Graph event (weekly, 5 attendees, "
                        "alarm) | %s events/s (%s µs/event) | | | |" % (
                            fmt(ic["events_per_s"]),
                            fmt(ic["us_per_event"], 1)))
    return "\n".join(rows)


SECTIONS = {"smtp": bench_smtp, "delivery": bench_delivery,
            "caldav": bench_caldav, "memory": bench_memory,
            "translate": bench_translate}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", default=os.path.join(REPO, "build-bench"))
    p.add_argument("--only", action="append", choices=sorted(SECTIONS),
                   help="run only this section (repeatable)")
    p.add_argument("--json", help="raw figures (default: "
                   "<build-dir>/bench-results.json)")
    p.add_argument("--smtp-messages", type=int, default=3000)
    p.add_argument("--smtp-clients", type=int, default=50)
    p.add_argument("--smtp-rounds", type=int, default=3)
    p.add_argument("--latency-ms", type=int, default=100)
    p.add_argument("--mailboxes", type=int, default=4)
    p.add_argument("--delivery-per-mailbox", type=int, default=400)
    p.add_argument("--caldav-requests", type=int, default=100)
    p.add_argument("--caldav-events", type=int, default=20)
    p.add_argument("--caldav-slow-requests", type=int, default=10)
    p.add_argument("--idle-connections", type=int, default=1000)
    p.add_argument("--translate-seconds", type=float, default=3.0)
    args = p.parse_args()
    args.build_dir = os.path.abspath(args.build_dir)
    args.json = args.json or os.path.join(args.build_dir, "bench-results.json")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    res = {"machine": machine()}
    workdir = tempfile.mkdtemp(prefix="nextal-bench-", dir="/var/tmp")
    # Postfix's daemons run as the postfix user and must reach its queue.
    os.chmod(workdir, 0o755)
    try:
        for name in args.only or list(SECTIONS):
            try:
                SECTIONS[name](args, workdir, res)
            except Exception as e:  # one broken section must not hide others
                log("%s failed: %s" % (name, traceback.format_exc()))
                res.setdefault("errors", {})[name] = repr(e)
                res.pop(name, None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    with open("/proc/loadavg") as f:
        res["loadavg_end"] = " ".join(f.read().split()[:3])
    with open(args.json, "w") as f:
        json.dump(res, f, indent=2)
    print(table(res))
    for name, err in res.get("errors", {}).items():
        print("\n%s: failed: %s" % (name, err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
