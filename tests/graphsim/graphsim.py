#!/usr/bin/env python3
"""Microsoft Graph + identity platform simulator for nextal-agent tests.

Standard library only.  Serves, on 127.0.0.1:

* the Microsoft identity platform endpoints the agent uses (token grants,
  headless authorize, admin consent)                       -> identity.py
* a subset of Microsoft Graph v1.0 for mail and calendar   -> graphapi.py,
  mail.py, events.py
* a control / inspection API for tests under /_sim/        -> control.py

Usage:
    python3 tests/graphsim/graphsim.py --port 0 --port-file FILE \
        --config CONFIG.json [--latency-ms N] [--verbose]

With --port 0 an ephemeral port is bound and its number written to
--port-file (atomically) once the server listens.  SIGTERM/SIGINT stop it.
Facts and their sources: /work/shared/reference/graph-api.md (keys in
brackets in comments) and README.md next to this file.
"""

import argparse
import http.server
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import control  # noqa: E402
import graphapi  # noqa: E402
import identity  # noqa: E402
from simcore import Config, Request, State, graph_error, json_reply  # noqa: E402

try:
    import events  # noqa: E402  (calendar support; optional while developing)
    events.install(graphapi, control)
except ImportError:  # pragma: no cover
    events = None

import drafts  # noqa: E402
drafts.install(graphapi, control)

# Graph rejects request bodies over 4 MB (4,194,304 bytes) [obs] graph-api.md §2.3;
# the answer seen is 413 "The maximum request length supported is 4MB."
# (github.com/O365/python-o365/issues/472); the code string is [unverified].
GRAPH_MAX_BODY = 4 * 1024 * 1024
READ_LIMIT = 64 * 1024 * 1024  # beyond this we refuse to buffer and close


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "graphsim/1.0"
    # Each response leaves in one write (the handler flushes after every
    # request) and without Nagle's algorithm: unbuffered, headers and body
    # went out separately and a keep-alive client waited ~40 ms for its
    # delayed ACK on every call, a cost real Graph does not have.
    wbufsize = -1
    disable_nagle_algorithm = True

    def version_string(self):
        return self.server_version

    # -- plumbing ----------------------------------------------------------
    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("graphsim %s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))

    def read_body(self):
        """Read the request body (Content-Length or chunked); None if too big."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > READ_LIMIT:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        if length > READ_LIMIT:
            return None
        return self.rfile.read(length) if length else b""

    def dispatch(self):
        st = self.server.state
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(split.query,
                                                           keep_blank_values=True).items()}
        body = self.read_body()
        req = Request(self.command, path, query, self.headers, body or b"")
        req.base_url = "http://%s:%d" % self.server.server_address[:2]
        if body is None:
            self.close_connection = True
            reply = too_large(req)
        else:
            reply = route(st, req)
        self.send(reply, req)

    def send(self, reply, req):
        if reply.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(reply.status)
        names = set()
        for name, value in reply.headers:
            names.add(name.lower())
            self.send_header(name, value)
        if req.path.startswith("/v1.0/"):
            self.send_header("request-id", req.request_id)
            self.send_header("client-request-id",
                             req.headers.get("client-request-id") or req.request_id)
        if "cache-control" not in names:
            self.send_header("Cache-Control", "no-store, no-cache")
        self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and reply.body:
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = dispatch


def too_large(req):
    return graph_error(413, "RequestEntityTooLarge", "The maximum request length supported "
                       "is 4MB.", req.request_id)


def route(state, req):
    """Top-level routing: /_sim/, /v1.0/, else identity platform."""
    try:
        if req.path.startswith("/_sim/"):
            return control.handle(state, req)
        if req.path.startswith("/v1.0/") or req.path == "/v1.0":
            if len(req.body) > GRAPH_MAX_BODY:
                return too_large(req)
            return graphapi.handle(state, req)
        if req.path.startswith("/api/v2.0/"):
            reply = drafts.handle_upload(state, req)
            if reply is not None:
                return reply
        reply = identity.route(state, req)
        if reply is not None:
            return reply
        return json_reply(404, {"error": "not_found", "path": req.path})
    except Exception as exc:  # keep the server alive, but make the bug loud
        import traceback
        traceback.print_exc()
        return graph_error(500, "generalException", "Simulator bug: %r" % exc, req.request_id)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def write_port_file(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write("%d\n" % port)
    os.replace(tmp, path)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--config", required=True)
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--host", default="127.0.0.1")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    state = State(Config.load(args.config), latency_ms=args.latency_ms)
    server = Server((args.host, args.port), Handler)
    server.state = state
    server.verbose = args.verbose

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = server.server_address[1]
    if args.port_file:
        write_port_file(args.port_file, port)
    if args.verbose:
        sys.stderr.write("graphsim listening on %s:%d\n" % (args.host, port))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
