#!/usr/bin/env bash
# Checkpoints under faults, with qlora train and qlora ckpt:
#   - an error on one rank of two while saving and while loading: every rank
#     exits 1 (in bounded time), the message names the rank and the file;
#   - disk full while a shard is written (output_dir on a 1 MiB tmpfs, when
#     mount works; and a file-size limit, ulimit -f), while the manifest and
#     while LATEST is written (the checkpoints directory on a tmpfs sized to
#     the page from a first run's files; and injected ENOSPC): exit 1 with a message that
#     names the file, the previous checkpoint intact and still LATEST's, no
#     temporary or half-written directory promoted; the next run resumes;
#   - corruption of the newest checkpoint (a flipped byte, a truncated shard,
#     a missing shard, the manifest of another run): qlora ckpt verify exits 1
#     naming the file; resume: auto says which checkpoint is damaged and why
#     and falls back to the previous one; resume: PATH to the damaged one is
#     an error naming the file; all of them damaged is an error;
#   - refusal: another base model, lora.r, the training data; an allowed
#     change (train.steps) is listed;
#   - resume: never with checkpoints present; the checkpoints directory's
#     lock held by another process; locks unsupported (injected ENOLCK) under
#     strict and best-effort.
set -u
. "$(dirname "$0")/ckpt_lib.sh"
T=$(mktemp -d)
mnt=""
cleanup() {
    [ -n "$mnt" ] && umount "$mnt" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
cd "$T" || exit 1
ckpt_setup
Q="$QLORA"
OV=(--data.cache_dir="$T/cache")

# previous_intact DIR STEP: LATEST names step STEP, which verifies; no
# temporary directories; no step directory newer than STEP.
previous_intact() {
    [ "$(cat "$1/checkpoints/LATEST")" = "$(printf 'step-%08d' "$2")" ] ||
        bad "$1: LATEST is $(cat "$1/checkpoints/LATEST"), want step $2"
    "$Q" ckpt verify "$1" >/dev/null 2>&1 || bad "$1: checkpoints do not verify"
    ls "$1/checkpoints" | grep -q '\.tmp-' && bad "$1: a temporary directory was left"
    for d in "$1"/checkpoints/step-*; do
        s=$((10#${d##*step-}))
        [ "$s" -le "$2" ] || bad "$1: $d promoted"
    done
}

# --- disk full ---------------------------------------------------------------
mkdir -p full
if mount -t tmpfs -o size=1m tmpfs full 2>/dev/null; then
    mnt=$T/full
    # checkpoints of ~180 KiB, all kept: the disk fills at a shard write.
    train 1 full/run "${OV[@]}" --checkpoint.every_steps=1 --checkpoint.keep_last=100
    [ $rc = 1 ] || bad "tmpfs: exit $rc, want 1"
    grep -q "^qlora: error: checkpoint at step [0-9]* failed (the previous one, full/run/checkpoints/step-[0-9]*, is intact): .*shard-00000-of-00001.h5: .*failed" full/run.err ||
        bad "tmpfs: message: $(grep error full/run.err)"
    last=$(sed -n 's/^checkpoint: step \([0-9]*\) .*/\1/p' full/run.err | tail -n 1)
    previous_intact full/run "$last"
    echo "tmpfs full: stopped after the checkpoint of step $last: $(grep '^qlora: error' full/run.err | cut -c1-240)"
    umount full && mnt=""

    # Exactly full at the manifest, then at LATEST, of the second checkpoint:
    # OUTPUT_DIR/checkpoints is a tmpfs sized from the pages a first run used.
    pg=$(getconf PAGESIZE)
    mount -t tmpfs -o size=8m tmpfs full && mnt=$T/full
    mkdir -p m0 && ln -s "$T/full" m0/checkpoints
    train 1 m0 "${OV[@]}" --train.steps=6 --checkpoint.keep_last=5
    pages() { du -B"$pg" "$1" | cut -f1; }
    lock=$(pages full/.lock) latest=$(pages full/LATEST)
    shard=$(pages full/step-00000003/shard-00000-of-00001.h5) man=$(pages full/step-00000003/manifest.pb)
    umount full && mnt=""
    for what in manifest LATEST; do
        n=$((lock + shard + man + latest + shard))
        [ $what = LATEST ] && n=$((n + man))
        mount -t tmpfs -o size=$((n * pg)) tmpfs full && mnt=$T/full
        rm -rf m-$what && mkdir m-$what && ln -s "$T/full" m-$what/checkpoints
        train 1 m-$what "${OV[@]}" --train.steps=6 --checkpoint.keep_last=5
        [ $rc = 1 ] || bad "$what full: exit $rc, want 1"
        want="full/step-00000006.tmp-[^/]*/manifest.pb"
        [ $what = LATEST ] && want="m-LATEST/checkpoints/LATEST"
        grep -q "^qlora: error: checkpoint at step 6 failed (the previous one, m-$what/checkpoints/step-00000003, is intact): .*$want.*No space left on device" m-$what.err ||
            grep -q "^qlora: error: checkpoint at step 6 failed (the previous one, m-$what/checkpoints/step-00000003, is intact): .*No space left on device" m-$what.err ||
            bad "$what full: message: $(grep error m-$what.err)"
        [ "$(cat full/LATEST)" = step-00000003 ] || bad "$what full: LATEST is $(cat full/LATEST)"
        "$Q" ckpt verify full/step-00000003 >/dev/null 2>&1 || bad "$what full: step 3 damaged"
        ls full | grep -q '\.tmp-' && bad "$what full: temporary directory left"
        [ $what = manifest ] && [ -d full/step-00000006 ] && bad "manifest full: step 6 promoted"
        echo "$what full: $(grep '^qlora: error' m-$what.err | cut -c1-240)"
        umount full && mnt=""
    done
else
    echo "note: cannot mount a tmpfs here; the disk-full case runs with ulimit -f only"
fi
# a file-size limit of 100 blocks: shards of ~180 KiB do not fit
( ulimit -f 100; exec "$Q" train cfg.yaml --output_dir=fsize "${OV[@]}" --checkpoint.every_steps=3 ) \
    >fsize.out 2>fsize.err
rc=$?
[ $rc = 1 ] || bad "ulimit -f: exit $rc, want 1"
grep -q "^qlora: error: checkpoint at step 3 failed (no earlier checkpoint; nothing half-written is left): .*shard-00000-of-00001.h5" fsize.err ||
    bad "ulimit -f: message: $(tail -n 1 fsize.err)"
ls fsize/checkpoints | grep -q step- && bad "ulimit -f: a step directory was promoted"

# injected ENOSPC in the manifest and LATEST writes, after a good checkpoint
for point in manifest-enospc latest-enospc shard-write; do
    train 1 inj-$point "${OV[@]}" --train.steps=3
    [ $rc = 0 ] || bad "$point: first run exit $rc"
    QL_CKPT_FAULT=$point train 1 inj-$point "${OV[@]}" --train.steps=6
    [ $rc = 1 ] || bad "$point: exit $rc, want 1"
    grep -q "^qlora: error: checkpoint at step 6 failed (the previous one, inj-$point/checkpoints/step-00000003, is intact)" inj-$point.err ||
        bad "$point: message: $(tail -n 1 inj-$point.err)"
    [ "$(cat inj-$point/checkpoints/LATEST)" = step-00000003 ] || bad "$point: LATEST moved"
    "$Q" ckpt verify inj-$point/checkpoints/step-00000003 >/dev/null 2>&1 || bad "$point: previous damaged"
    ls inj-$point/checkpoints | grep -q '\.tmp-' && bad "$point: temporary directory left"
    [ $point = latest-enospc ] || [ ! -d inj-$point/checkpoints/step-00000006 ] || bad "$point: step 6 promoted"
    train 1 inj-$point "${OV[@]}" --train.steps=6
    [ $rc = 0 ] || bad "$point: the next run exit $rc"
    grep -q "^resume: inj-$point/checkpoints/step-00000003: step 3" inj-$point.err || bad "$point: did not resume from step 3"
done

# an error on one rank of two, in the save and in the load: every rank ends,
# exit 1, the failing rank named
train 2 r2 "${OV[@]}" --train.steps=3
[ $rc = 0 ] || bad "2 ranks: exit $rc"
QL_CKPT_FAULT=shard-write@1 timeout 60 "${MPIRUN[@]}" -np 2 "$Q" train cfg.yaml --output_dir=r2 \
    "${OV[@]}" --train.steps=6 >r2.out 2>r2.err
rc=$?
[ $rc = 1 ] && grep -q "^qlora: error: .*checkpoint at step 6 failed (the previous one, r2/checkpoints/step-00000003, is intact): rank 1 (.*): .*shard-00001-of-00002.h5: writing the shard failed: injected fault" r2.err ||
    bad "save fault on rank 1: exit $rc: $(grep error r2.err | head -n 2)"
QL_CKPT_FAULT=shard-read@1 timeout 60 "${MPIRUN[@]}" -np 2 "$Q" train cfg.yaml --output_dir=r2 \
    "${OV[@]}" --train.steps=6 >r2.out 2>r2.err
rc=$?
[ $rc = 1 ] && grep -q "^qlora: error: .*rank 1 (.*): .*shard-0000[01]-of-00002.h5: reading .* failed: injected fault" r2.err ||
    bad "load fault on rank 1: exit $rc: $(grep error r2.err | head -n 2)"
[ "$(cat r2/checkpoints/LATEST)" = step-00000003 ] || bad "2 ranks: LATEST moved"

# --- corruption ----------------------------------------------------------------
train 1 good "${OV[@]}"
[ $rc = 0 ] || bad "good run exit $rc"
train 1 other "${OV[@]}" --seed=99
shard=shard-00000-of-00001.h5
# corrupt NAME: a copy of the good run with its step-12 checkpoint damaged
corrupt() {
    rm -rf "c-$1" && cp -r good "c-$1"
    local d="c-$1/checkpoints/step-00000012"
    case $1 in
    flip) "$PY" -c "
import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[len(b) // 2] ^= 1; open(p, 'wb').write(b)" "$d/$shard" ;;
    trunc) truncate -s 5000 "$d/$shard" ;;
    missing) rm "$d/$shard" ;;
    foreign) cp other/checkpoints/step-00000012/manifest.pb "$d/manifest.pb" ;;
    esac
}
for kind in flip trunc missing foreign; do
    corrupt $kind
    want=$shard
    [ $kind = foreign ] && want=manifest.pb
    "$Q" ckpt verify c-$kind/checkpoints/step-00000012 >v.out 2>v.err
    rc=$?
    [ $rc = 1 ] || bad "$kind: verify exit $rc"
    grep -q "^FAULT c-$kind/checkpoints/step-00000012/$want: " v.err || bad "$kind: verify: $(cat v.err)"
    "$Q" ckpt verify c-$kind >/dev/null 2>&1 && bad "$kind: verify of the run passed"
    echo "$kind: $(head -n 1 v.err | cut -c1-150)"
    train 1 c-$kind "${OV[@]}" --train.steps=14
    [ $rc = 0 ] || { bad "$kind: resume exit $rc"; tail -n 3 c-$kind.err; }
    grep -q "^warning: the checkpoint c-$kind/checkpoints/step-00000012 is damaged: .*$want.*; falling back to the previous one$" c-$kind.err ||
        bad "$kind: no fallback warning: $(grep -i damaged c-$kind.err)"
    grep -q "^resume: c-$kind/checkpoints/step-00000009: step 9" c-$kind.err || bad "$kind: did not resume from step 9"
    [ "$(wc -l <c-$kind/metrics.jsonl)" = 14 ] || bad "$kind: metrics has $(wc -l <c-$kind/metrics.jsonl) lines"
done
# resume: PATH to a damaged checkpoint is an error; all damaged is an error
corrupt flip
train 1 c-flip "${OV[@]}" --resume=c-flip/checkpoints/step-00000012
[ $rc = 1 ] && grep -q "^qlora: error: c-flip/checkpoints/step-00000012/$shard: checksum mismatch" c-flip.err ||
    bad "resume PATH damaged: exit $rc: $(tail -n 1 c-flip.err)"
for d in c-flip/checkpoints/step-*; do rm -f "$d/$shard"; done
train 1 c-flip "${OV[@]}"
[ $rc = 1 ] && grep -q "^qlora: error: no usable checkpoint in c-flip/checkpoints (" c-flip.err ||
    bad "all damaged: exit $rc: $(tail -n 1 c-flip.err)"

# --- refusal -------------------------------------------------------------------
"$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" model2 --dtype f32 --seed 7 >/dev/null
cp -r good ref-model && train 1 ref-model "${OV[@]}" --model=model2 --train.steps=14
[ $rc = 1 ] && grep -q "^qlora: error: cannot resume from ref-model/checkpoints/step-00000012: the checkpoint was trained on another base model (same shapes, other weights)" ref-model.err ||
    bad "another model: exit $rc: $(tail -n 1 ref-model.err)"
cp -r good ref-r && train 1 ref-r "${OV[@]}" --lora.r=4 --train.steps=14
[ $rc = 1 ] && grep -q "lora.r is 8 in the checkpoint and 4 now" ref-r.err || bad "lora.r: $(tail -n 1 ref-r.err)"
head -n 40 train.jsonl >train2.jsonl
cp -r good ref-data && train 1 ref-data "${OV[@]}" --data.train=train2.jsonl --train.steps=14
[ $rc = 1 ] && grep -q "the training data differs from the checkpoint's" ref-data.err ||
    bad "data: $(tail -n 1 ref-data.err)"
cp -r good more && train 1 more "${OV[@]}" --train.steps=14 --train.lr=5e-3
[ $rc = 0 ] || bad "more steps: exit $rc"
grep -q "^train.steps: 12 in the checkpoint, 14 now$" more.err && grep -q "^train.lr: 0.01 in the checkpoint, 0.005 now$" more.err ||
    bad "allowed changes not listed: $(grep -A3 'settings changed' more.err)"

# --- resume: never, locks ---------------------------------------------------------
cp -r good nev && train 1 nev "${OV[@]}" --resume=never
[ $rc = 1 ] && grep -q "holds 4 checkpoint(s) and resume is never" nev.err || bad "never: $(tail -n 1 nev.err)"
train 1 nev "${OV[@]}" --resume=never --overwrite_output_dir=true --train.steps=2
[ $rc = 0 ] && [ ! -d nev/checkpoints/step-00000012 ] || bad "never + overwrite: exit $rc, old checkpoints kept"
cp -r good lk
flock lk/checkpoints/.lock sleep 30 &
holder=$!
sleep 0.3
train 1 lk "${OV[@]}" --train.steps=14
kill $holder 2>/dev/null
[ $rc = 1 ] && grep -q "^qlora: error: lk/checkpoints/.lock is locked by another process" lk.err ||
    bad "held lock: exit $rc: $(tail -n 1 lk.err)"
QL_CKPT_FAULT=lock-enolck train 1 lk "${OV[@]}" --train.steps=14 --checkpoint.file_locking=strict
[ $rc = 1 ] && grep -q "No locks available.*set checkpoint.file_locking: best-effort (or off)" lk.err ||
    bad "ENOLCK strict: exit $rc: $(tail -n 1 lk.err)"
QL_CKPT_FAULT=lock-enolck train 1 lk "${OV[@]}" --train.steps=14
[ $rc = 0 ] && grep -q "^warning: cannot lock lk/checkpoints/.lock: No locks available; going on without a lock$" lk.err ||
    bad "ENOLCK best-effort: exit $rc: $(grep -i lock lk.err | tail -n 2)"

[ $fails = 0 ] && echo "passed" || echo "$fails failed"
[ $fails = 0 ]
