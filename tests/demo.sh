#!/bin/sh
# The README's first command: on a fresh Debian 12 machine, installs what
# is missing, builds, starts the Graph simulator and the agent with a demo
# tenant, sends one real SMTP message and one real CalDAV event through
# them, and shows what Graph received. Pass --keep to leave it running.
set -eu
cd "$(dirname "$0")/.."

sh packaging/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target nextal-agent nextal-policy >/dev/null
exec /usr/bin/python3 tests/sandbox/sandbox.py --build-dir build --demo "$@"
