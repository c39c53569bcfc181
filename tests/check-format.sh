#!/usr/bin/env bash
# Every C file reads the same: clang-format with the repository's
# .clang-format changes nothing.  Fix with: clang-format -i FILE...
set -euo pipefail
cd "$(dirname "$0")/.."
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	mapfile -t files < <(git ls-files '*.c' '*.h')
else
	mapfile -t files < <(find common config cli proxy cutover replicator tests -name '*.c' -o -name '*.h')
fi
clang-format --dry-run -Werror "${files[@]}"
