# Shared by the export e2e tests (sourced after they define `bad`): the
# training data they train on and the check of a refused export.

# 24 records of arithmetic progressions mod 40 (learnable in a few steps; ids
# below 40 fit every fixture model's vocabulary) into FILE.
progressions_jsonl() {
    "$PY" - "$1" <<'PYEOF'
import json, random, sys
r = random.Random(5)
with open(sys.argv[1], "w") as f:
    for i in range(24):
        n, start = r.randint(8, 16), r.randint(0, 39)
        f.write(json.dumps({"input_ids": [(start + 3 * t) % 40 for t in range(n)]}) + "\n")
PYEOF
}

# `qlora export ARGS...` must exit CODE with PATTERN in its output.
expect_fail() { # code pattern args...
    local code=$1 pat=$2
    shift 2
    "$QLORA" export "$@" >err.out 2>&1
    local rc=$?
    [ $rc = "$code" ] || bad "export $*: exit $rc, want $code"
    grep -q -- "$pat" err.out || bad "export $*: message lacks '$pat': $(cat err.out)"
}

# `qlora eval --data train.jsonl ARGS...` into OUT (stderr OUT.err); prints
# the loss of its JSON line.
evloss() { # out args...
    "$QLORA" eval --quiet --data train.jsonl "${@:2}" >"$1" 2>"$1.err" || { bad "qlora eval ${*:2}"; cat "$1.err"; }
    "$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["loss"])' "$1"
}
