#!/bin/bash
# SPDX-License-Identifier: MIT
# Runs the nextal-agent benchmarks (issue 7) and prints the table:
#   bench/run.sh [bench.py options, e.g. --only smtp]
# Installs the comparison software it needs (Postfix with smtp-sink,
# Radicale, ApacheBench) with apt-get when missing, builds a Release tree
# with the bench programs in build-bench/, and runs bench/bench.py. Needs
# root (apt-get, a private Postfix instance). Not part of the test suite.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
build=${NX_BENCH_BUILD:-$repo/build-bench}

missing=()
command -v postfix >/dev/null || missing+=(postfix)
command -v radicale >/dev/null || missing+=(radicale)
command -v ab >/dev/null || missing+=(apache2-utils)
if [ ${#missing[@]} -gt 0 ]; then
  # Postfix asks its questions through debconf: answer them beforehand.
  # The system instance is never started; bench.py runs its own.
  echo "postfix postfix/main_mailer_type select Local only" \
    | debconf-set-selections
  echo "postfix postfix/mailname string bench.invalid" | debconf-set-selections
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${missing[@]}"
fi

cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DNX_BENCH=ON \
  -DNX_SANITIZE=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" \
  --target nextal-agent nextal-policy smtp_load translate_bench >/dev/null

# 1,000 idle SMTP connections and 50 load clients need descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 || true

exec /usr/bin/python3 "$here/bench.py" --build-dir "$build" "$@"
