#!/usr/bin/env bash
# The PEFT adapter writer against the PyPI safetensors package and Python's
# json: tests/unit/test_peft.c's hand-made adapter (`unit_test_peft --write`)
# is checked by tests/e2e/check_peft.py for PEFT's keys, shapes, dtypes,
# metadata, the exact adapter_config.json layout and every value. A tampered
# copy must be rejected, so the checker is shown to be able to fail.
set -u
: "${QL_SOURCE_DIR:?}" "${QL_BUILD_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
BIN="$QL_BUILD_DIR/unit_test_peft"
[ -x "$BIN" ] || { echo "FAIL: $BIN not built"; exit 1; }
CHK="$QL_SOURCE_DIR/tests/e2e/check_peft.py"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$BIN" --write "$T/adapter" || bad "unit_test_peft --write failed"
"$PY" "$CHK" "$T/adapter" --hand-made || bad "check_peft.py rejected the adapter"

# tampering that the checker must notice
cp -r "$T/adapter" "$T/t1"
sed -i 's/"r": 4/"r": 5/' "$T/t1/adapter_config.json"
"$PY" "$CHK" "$T/t1" --hand-made >/dev/null && bad "checker accepted r = 5"
cp -r "$T/adapter" "$T/t2"
"$PY" - "$T/t2/adapter_config.json" <<'PYEOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
open(p, "w").write(json.dumps(c, indent=4, sort_keys=True))
PYEOF
"$PY" "$CHK" "$T/t2" --hand-made >/dev/null && bad "checker accepted indent 4"
cp -r "$T/adapter" "$T/t3"
"$PY" - "$T/t3/adapter_model.safetensors" <<'PYEOF'
import sys
from safetensors.numpy import load_file, save_file
p = sys.argv[1]
t = load_file(p)
k = sorted(t)[0]
t[k] = t[k].copy()
t[k].flat[0] += 1
save_file(t, p, metadata={"format": "pt"})
PYEOF
"$PY" "$CHK" "$T/t3" --hand-made >/dev/null && bad "checker accepted a changed value"

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
