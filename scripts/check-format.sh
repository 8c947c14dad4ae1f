#!/usr/bin/env bash
# Fails if any tracked C, header or CUDA file is not formatted as .clang-format says.
# `scripts/check-format.sh --fix` rewrites them in place.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cu' '*.cuh')
[ ${#files[@]} -gt 0 ] || exit 0
if [ "${1:-}" = "--fix" ]; then
    clang-format -i "${files[@]}"
    exit 0
fi
if ! clang-format --dry-run --Werror "${files[@]}" 2>/tmp/qlora-format.$$; then
    grep -E '^[^ ].*: (error|warning):' /tmp/qlora-format.$$ | cut -d: -f1 | sort -u |
        sed 's/^/not formatted: /' >&2
    rm -f /tmp/qlora-format.$$
    echo "format check failed: run scripts/check-format.sh --fix" >&2
    exit 1
fi
rm -f /tmp/qlora-format.$$
echo "format check: ${#files[@]} files ok"
