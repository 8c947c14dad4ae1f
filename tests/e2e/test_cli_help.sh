#!/usr/bin/env bash
# Every command's help, and every help hint a usage error prints, works:
#   - `qlora CMD --help` for each command `qlora --help` lists: exit 0, the
#     usage on stdout, nothing on stderr;
#   - an unknown flag: exit 2, one line naming the flag, then a hint
#     "(qlora ... --help lists the flags)"; the hint, run as printed, exits 0
#     with that command's usage (`qlora eval --code --help` once gave --code
#     the value "--help" and failed);
#   - no command, an unknown command: exit 2 and the list of commands, with
#     the nearest command for a typo; an override given as two words
#     (--lora.r 4) is shown as one.
set -u
: "${QLORA:?}"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$QLORA" --help >"$T/top" 2>"$T/top.err" || bad "qlora --help exit status"
cmds=$(awk '/^commands:/{f=1; next} f && /^  [a-z]/{print $1}' "$T/top")
[ "$(echo "$cmds" | wc -w)" -ge 10 ] || bad "qlora --help lists too few commands: $cmds"

# The spellings of a command's help: each command, its subcommands, and
# eval --code (a command of its own with its own flags).
forms=$(for c in $cmds; do [ "$c" = version ] || echo "$c"; done
        printf '%s\n' "eval --code" "ckpt verify" "ckpt inspect" "data stats")
while read -r form; do
    [ -n "$form" ] || continue
    name=${form// /_}
    # shellcheck disable=SC2086 # the form is words
    "$QLORA" $form --help >"$T/$name.out" 2>"$T/$name.err"
    rc=$?
    [ $rc = 0 ] || bad "qlora $form --help: exit $rc: $(head -2 "$T/$name.err")"
    head -1 "$T/$name.out" | grep -q "^usage: qlora ${form%% *}" ||
        bad "qlora $form --help: stdout does not start with its usage: $(head -1 "$T/$name.out")"
    [ ! -s "$T/$name.err" ] || bad "qlora $form --help wrote to stderr: $(head -2 "$T/$name.err")"
    case "$form" in
    ckpt | data) continue ;; # a subcommand comes first: "unknown subcommand", checked below
    "eval --code") form="eval --code x.jsonl" ;; # --code takes a value
    esac
    # shellcheck disable=SC2086
    "$QLORA" $form --no-such-flag >"$T/$name.bad.out" 2>"$T/$name.bad.err"
    rc=$?
    [ $rc = 2 ] || bad "qlora $form --no-such-flag: exit $rc, expected 2 (usage)"
    grep -q -- "--no-such-flag" "$T/$name.bad.err" ||
        bad "qlora $form --no-such-flag: the message does not name the flag: $(head -2 "$T/$name.bad.err")"
    hint=$(sed -n 's/^(\(qlora [^)]*--help\) lists the flags)$/\1/p' "$T/$name.bad.err")
    if [ -z "$hint" ]; then
        bad "qlora $form --no-such-flag: no '(qlora ... --help lists the flags)' hint: $(cat "$T/$name.bad.err")"
        continue
    fi
    # shellcheck disable=SC2086 # the hint is words
    "$QLORA" ${hint#qlora } >"$T/$name.hint.out" 2>&1 ||
        bad "the hint '$hint' fails: $(head -2 "$T/$name.hint.out")"
    head -1 "$T/$name.hint.out" | grep -q "^usage: qlora ${form%% *}" ||
        bad "the hint '$hint' does not print the usage of $form"
done <<<"$forms"

"$QLORA" >"$T/none.out" 2>"$T/none.err"
rc=$?
[ $rc = 2 ] || bad "qlora without a command: exit $rc, expected 2"
grep -q "^commands:" "$T/none.err" || bad "qlora without a command does not list the commands"
"$QLORA" trian >"$T/typo.out" 2>"$T/typo.err"
rc=$?
[ $rc = 2 ] || bad "qlora trian: exit $rc, expected 2"
grep -q "^qlora: unknown command 'trian' (did you mean 'train'?)$" "$T/typo.err" ||
    bad "qlora trian: $(head -1 "$T/typo.err")"
"$QLORA" frobnicate >/dev/null 2>"$T/far.err"
grep -q "^qlora: unknown command 'frobnicate'$" "$T/far.err" || bad "qlora frobnicate: $(head -1 "$T/far.err")"
"$QLORA" train x.yaml --lora.r 4 >/dev/null 2>"$T/space.err"
rc=$?
[ $rc = 2 ] && grep -q "(did you mean '--lora.r=4'?)" "$T/space.err" ||
    bad "--lora.r 4: exit $rc: $(head -1 "$T/space.err")"
"$QLORA" version >"$T/version" 2>&1 || bad "qlora version: exit status"
grep -q "^qlora [0-9]" "$T/version" || bad "qlora version: $(head -1 "$T/version")"
for sub in "ckpt verfiy" "data stat"; do
    # shellcheck disable=SC2086
    "$QLORA" $sub x >"$T/sub.out" 2>"$T/sub.err"
    rc=$?
    [ $rc = 2 ] || bad "qlora $sub: exit $rc, expected 2"
    grep -q "unknown subcommand '${sub#* }'" "$T/sub.err" ||
        bad "qlora $sub: $(head -1 "$T/sub.err")"
done

[ $fails = 0 ] && echo "ok: $(echo "$forms" | wc -l) command forms" && exit 0
exit 1
