#!/usr/bin/python3
"""The Graph simulator as the benchmarks run it: unchanged, except that
each response leaves in one write. Unbuffered, the simulator writes the
headers and the body separately, and on a keep-alive connection Nagle's
algorithm then holds the body until the client's delayed ACK (~40 ms),
which real Graph does not cost and which would swamp every latency
measured through it."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "graphsim"))

import graphsim  # noqa: E402

# socketserver's default buffer; BaseHTTPRequestHandler flushes it at the
# end of every request.
graphsim.Handler.wbufsize = -1

if __name__ == "__main__":
    sys.exit(graphsim.main())
