#!/usr/bin/python3
"""The Graph simulator as the benchmarks run it: unchanged, except that
each response leaves in one write, without Nagle's algorithm. Unbuffered, the simulator writes the
headers and the body separately, and on a keep-alive connection Nagle's
algorithm then holds the body until the client's delayed ACK (~40 ms),
which real Graph does not cost and which would swamp every latency
measured through it."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "graphsim"))

import graphsim  # noqa: E402

# socketserver's default buffer, which BaseHTTPRequestHandler flushes at
# the end of every request; and TCP_NODELAY for responses larger than it.
graphsim.Handler.wbufsize = -1
graphsim.Handler.disable_nagle_algorithm = True

if __name__ == "__main__":
    sys.exit(graphsim.main())
