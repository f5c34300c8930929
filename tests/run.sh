#!/bin/sh
# The README's second command, and what CI runs: installs what is missing,
# builds with warnings as errors under AddressSanitizer and UBSan, and runs
# every unit test and scenario with ctest.
set -eu
cd "$(dirname "$0")/.."

sh packaging/install-deps.sh
(cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DNX_WERROR=ON \
  -DNX_SANITIZE=ON >/dev/null
cmake --build build-test -j"$(nproc)"
cd build-test
exec ctest --output-on-failure -j2 --timeout 600 "$@"
