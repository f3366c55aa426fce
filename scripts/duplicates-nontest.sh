#!/usr/bin/env bash
# `duplicates` over the non-test code only (docs/DUPLICATES.md): the library sources of crd,
# state, metrics and controller (and state/examples) copied to a temporary directory, without
# test files (tests/, tests.rs, *_tests.rs) and with inline `#[cfg(test)] mod … { … }` blocks
# blanked (line numbers kept). Extra arguments go to `duplicates` (default: --most 200
# --seconds 120).
set -euo pipefail
root=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$root"
git ls-files controller/src state/src crd/src metrics/src state/examples | grep '\.rs$' \
    | grep -v -E '(^|/)tests?(/|\.rs$)|_tests\.rs$' > "$out/.files"
tar cf - -T "$out/.files" | tar xf - -C "$out"
python3 - "$out" <<'PY'
import re, sys, pathlib
root = pathlib.Path(sys.argv[1])
for name in (root / ".files").read_text().split():
    path = root / name
    lines = path.read_text().split("\n")
    for i, line in enumerate(lines):
        if not line.strip().startswith("#[cfg(test)]"):
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip().startswith("#"):
            j += 1
        if j < len(lines) and re.match(r"\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{", lines[j]):
            indent = len(lines[j]) - len(lines[j].lstrip())
            k = j + 1
            while k < len(lines) and not (
                lines[k].startswith(" " * indent + "}")
                and len(lines[k]) - len(lines[k].lstrip()) == indent
            ):
                k += 1
            for x in range(i, min(k + 1, len(lines))):
                lines[x] = ""
    path.write_text("\n".join(lines))
PY
rm "$out/.files"
cd "$out"
if [ $# -eq 0 ]; then set -- --most 200 --seconds 120; fi
duplicates "$@"
