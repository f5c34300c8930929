#!/bin/sh
# Fails when a C file does not follow the committed .clang-format: layout
# is checked by a machine so that reviews never argue about it.
set -eu
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find agent gateway policy include tests bench -name '*.[ch]')
clang-format --dry-run -Werror $files
echo "format: $(echo "$files" | wc -w) files follow .clang-format"
