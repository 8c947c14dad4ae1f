#!/usr/bin/env bash
# `qlora data stats CONFIG` end to end, against numbers computed here in
# Python from the files themselves (an independent first-fit-decreasing
# packer, nearest-rank percentiles, the transformers reference ids of
# tests/fixtures/records):
#   - pre-tokenized records with truncation, a record without loss and a bad
#     record skipped: every count of the report and the JSON line, packed rows
#     and their fill;
#   - text and chat records through a real tokenizer (the Qwen2.5-style
#     fixture): tokens and loss tokens equal the reference's, rows as packed
#     by the Python packer;
#   - the cache: written, then read (identical report), a flipped byte is
#     reported and rebuilt, a changed data file or option is another entry,
#     data.cache: false writes nothing;
#   - data.valid_fraction holds out a seeded set (the same twice, another with
#     another seed), data.valid as a file, both at once refused;
#   - usage errors exit 2, bad data exits 1 naming file:line;
#   - `qlora train` after `data stats` reads the same cache entry and logs
#     the validation loss.
set -u
: "${QLORA:?}" "${QL_SOURCE_DIR:?}"
PY="$QL_SOURCE_DIR/.venv/bin/python"
[ -x "$PY" ] || { echo "skip: $PY missing (run scripts/setup.sh)"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

# 60 pre-tokenized records: lengths 3..70, every 4th with a masked half,
# record 17 all -100 (no loss), line 30 malformed.
"$PY" - <<'PYEOF' || exit 1
import json, random
r = random.Random(5)
with open("tok.jsonl", "w") as f:
    for i in range(60):
        if i == 29:
            f.write('{"input_ids": [1, 2, "three"]}\n'); continue
        n = r.randint(3, 70)
        ids = [r.randint(0, 90) for _ in range(n)]
        rec = {"input_ids": ids}
        if i % 4 == 0: rec["labels"] = [-100] * (n // 2) + ids[n // 2:]
        if i == 16: rec["labels"] = [-100] * n
        f.write(json.dumps(rec) + "\n")
PYEOF
cat >cfg.yaml <<'YAMLEOF'
model: nomodel
output_dir: run
seed: 11
data:
  train: tok.jsonl
  max_seq_len: 48
  on_bad_record: skip
train:
  global_batch: 4
  micro_batch: 2
YAMLEOF

# The expected report of a pre-tokenized file, from the file.
cat >expect.py <<'PYEOF'
import json, math, sys
path, L, out_json = sys.argv[1], int(sys.argv[2]), sys.argv[3]
got = json.loads(open(out_json).read().strip().split("\n")[-1])
read = kept = skipped = trunc = lost = no_loss = tokens = loss = 0
lens, kept_lens = [], []
for line in open(path):
    if not line.strip(): continue
    read += 1
    rec = json.loads(line)
    ids = rec["input_ids"]
    if not all(isinstance(x, int) for x in ids): skipped += 1; continue
    lab = rec.get("labels") or ids
    lens.append(len(ids))
    if len(ids) > L: trunc += 1; lost += len(ids) - L; ids, lab = ids[:L], lab[:L]
    n_loss = sum(1 for y in lab[1:] if y != -100)
    if n_loss == 0: no_loss += 1; continue
    kept += 1; tokens += len(ids); loss += n_loss; kept_lens.append(len(ids))
def pct(p):
    s = sorted(lens); return s[max(0, math.ceil(p / 100 * len(s)) - 1)]
# first-fit decreasing, longest first, ties in file order
free = []
for n in sorted(kept_lens, key=lambda x: -x):
    for k, f in enumerate(free):
        if f >= n: free[k] -= n; break
    else: free.append(L - n)
want = {"records_read": read, "records_kept": kept, "skipped": skipped, "truncated": trunc,
        "tokens_lost": lost, "no_loss": no_loss, "tokens": tokens, "loss_tokens": loss,
        "len_p50": pct(50), "len_p90": pct(90), "len_p99": pct(99), "len_max": max(lens),
        "rows": len(free), "row_fill": round(tokens / (len(free) * L), 6)}
ok = True
for k, v in want.items():
    if got.get(k) != v: print(f"{k}: got {got.get(k)}, want {v}"); ok = False
print(f"{read} read, {kept} kept, {len(free)} rows, fill {want['row_fill']}")
sys.exit(0 if ok else 1)
PYEOF

"$QLORA" data stats cfg.yaml >s1.out 2>s1.err
[ $? = 0 ] || { bad "data stats exited non-zero"; cat s1.err; }
"$PY" expect.py tok.jsonl 48 s1.out || bad "pre-tokenized report differs from the file's numbers"
grep -q '^data: tok.jsonl$' s1.out || bad "no report heading"
grep -q '^  skipped    1 (wrong type 1)$' s1.out || bad "skipped line: $(grep skipped s1.out)"
grep -Eq '^  packing    58 records in [0-9]+ rows of up to 48 tokens' s1.out ||
    bad "packing line: $(grep packing s1.out)"
grep -q '^  cache      written to run/data_cache/tokens-[0-9a-f]\{64\}\.bin$' s1.out ||
    bad "cache not written: $(grep cache s1.out)"
[ "$(ls run/data_cache | wc -l)" = 1 ] || bad "one cache file expected"

# second run: from the cache, the same report
"$QLORA" data stats cfg.yaml >s2.out 2>s2.err || bad "second data stats failed"
grep -q '^data: tok.jsonl: tokenized records from run/data_cache/' s2.err ||
    bad "no cache hit: $(cat s2.err)"
grep -q '"cached": true' s2.out || bad "JSON does not say cached"
cmp -s <(grep -v '^  cache' s1.out | sed 's/"cached": [a-z]*//') \
    <(grep -v '^  cache' s2.out | sed 's/"cached": [a-z]*//') || bad "the cached report differs"

# a flipped byte: reported, rebuilt, then read again
C=$(ls run/data_cache/tokens-*.bin)
"$PY" -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[len(b)//2]^=1; open(p,"wb").write(b)' "$C"
"$QLORA" data stats cfg.yaml >s3.out 2>s3.err || bad "data stats on a corrupt cache failed"
grep -q "was not used (checksum mismatch (corrupt)); tokenizing again" s3.err ||
    bad "corruption not reported: $(cat s3.err)"
grep -q '"cached": false' s3.out || bad "a corrupt cache was used"
"$PY" expect.py tok.jsonl 48 s3.out >/dev/null || bad "rebuilt report differs"
"$QLORA" data stats cfg.yaml >s4.out 2>&1 && grep -q '"cached": true' s4.out || bad "rebuilt cache not read"

# another option, another file: new entries
"$QLORA" data stats cfg.yaml --data.max_seq_len=40 >s5.out 2>&1 || bad "max_seq_len 40 failed"
"$PY" expect.py tok.jsonl 40 s5.out >/dev/null || bad "max_seq_len 40 report"
grep -q '"cached": false' s5.out || bad "another max_seq_len hit the cache"
cp tok.jsonl tok2.jsonl && echo '{"input_ids": [5, 6, 7]}' >>tok2.jsonl
"$QLORA" data stats cfg.yaml --data.train=tok2.jsonl >s6.out 2>&1 && grep -q '"cached": false' s6.out ||
    bad "changed data hit the cache"
[ "$(ls run/data_cache | wc -l)" = 3 ] || bad "three cache entries expected: $(ls run/data_cache)"
"$QLORA" data stats cfg.yaml --data.cache=false --output_dir=run_nc >s7.out 2>&1 || bad "cache off failed"
grep -q '^  cache      off$' s7.out && [ ! -e run_nc ] || bad "data.cache false wrote something"
"$QLORA" data stats cfg.yaml --data.packing=false >s8.out 2>&1 || bad "packing off failed"
grep -q '"packing": false, "row_fill": [0-9.]*, "packing_efficiency"' s8.out &&
    grep -q '"rows": 58,' s8.out || bad "packing off: $(tail -n1 s8.out)"

# validation sets
"$QLORA" data stats cfg.yaml --data.valid_fraction=0.25 >v1.out 2>&1 || bad "valid_fraction failed"
"$QLORA" data stats cfg.yaml --data.valid_fraction=0.25 >v2.out 2>&1
"$QLORA" data stats cfg.yaml --data.valid_fraction=0.25 --seed=12 >v3.out 2>&1
grep -q '"train_records": 43, .*"valid_records": 15,' v1.out ||
    bad "58 records, 0.25: 15 held out: $(tail -n1 v1.out)"
grep -q '^  valid      15 records held out for validation' v1.out || bad "no held-out line"
[ "$(grep '^valid:' v1.out)" = "$(grep '^valid:' v2.out)" ] || bad "held-out set differs with the same seed"
[ "$(grep '^valid:' v1.out)" != "$(grep '^valid:' v3.out)" ] || bad "held-out set the same with another seed"
"$QLORA" data stats cfg.yaml --data.valid=tok2.jsonl >v4.out 2>&1 || bad "data.valid failed"
grep -q '"valid_records": 59,' v4.out || bad "data.valid: $(tail -n1 v4.out)"
"$QLORA" data stats cfg.yaml --data.valid=tok2.jsonl --data.valid_fraction=0.1 >/dev/null 2>v5.err
[ $? = 1 ] && grep -q "data.valid_fraction (0.1) and data.valid (tok2.jsonl, command line) are both set" v5.err ||
    bad "both validation keys: $(cat v5.err)"

# errors
"$QLORA" data >/dev/null 2>&1
[ $? = 2 ] || bad "no subcommand is not a usage error"
"$QLORA" data stats >/dev/null 2>&1
[ $? = 2 ] || bad "no config is not a usage error"
"$QLORA" data stat cfg.yaml >/dev/null 2>&1
[ $? = 2 ] || bad "an unknown subcommand is not a usage error"
"$QLORA" data stats cfg.yaml --data.on_bad_record=error >/dev/null 2>e1.err
[ $? = 1 ] && grep -q '^qlora: error: tok.jsonl:30: input_ids\[2\]: expected a token id' e1.err ||
    bad "bad record: $(cat e1.err)"
"$QLORA" data stats cfg.yaml --data.train=missing.jsonl >/dev/null 2>e2.err
[ $? = 1 ] && grep -q 'missing.jsonl' e2.err || bad "missing file: $(cat e2.err)"

# text and chat records through a real tokenizer, against transformers' ids
FX="$QL_SOURCE_DIR/tests/fixtures/records"
cat >text.yaml <<YAMLEOF
model: $FX/qwen_chatml
output_dir: run_text
data:
  train: $FX/qwen_chatml.jsonl
  max_seq_len: 8192
  on_bad_record: skip
YAMLEOF
"$QLORA" data stats text.yaml >t1.out 2>t1.err || { bad "text records failed"; cat t1.err; }
"$PY" - "$FX/qwen_chatml.ref.jsonl" t1.out <<'PYEOF' || bad "text records vs the reference"
import json, sys
refs = [json.loads(l) for l in open(sys.argv[1])]
got = json.loads(open(sys.argv[2]).read().strip().split("\n")[-1])
lens = [len(r["ids"]) for r in refs]
want = {"records_kept": len(refs), "tokens": sum(lens),
        "loss_tokens": sum(1 for r in refs for t in r["targets"] if t != -100), "rows": 1}
ok = True
for k, v in want.items():
    if got.get(k) != v: print(f"{k}: got {got.get(k)}, want {v}"); ok = False
sys.exit(0 if ok else 1)
PYEOF
"$QLORA" data stats text.yaml --data.max_seq_len=64 --data.on_overlength=drop >t2.out 2>&1 ||
    bad "text records at 64 failed"
"$PY" - "$FX/qwen_chatml.ref.jsonl" t2.out <<'PYEOF' || bad "text records at 64 vs the reference"
import json, sys
refs = [json.loads(l) for l in open(sys.argv[1])]
got = json.loads(open(sys.argv[2]).read().strip().split("\n")[-1])
lens = [len(r["ids"]) for r in refs if len(r["ids"]) <= 64]
free = []
for n in sorted(lens, key=lambda x: -x):
    for k, f in enumerate(free):
        if f >= n: free[k] -= n; break
    else: free.append(64 - n)
want = {"records_kept": len(lens), "tokens": sum(lens), "rows": len(free),
        "row_fill": round(sum(lens) / (64 * len(free)), 6)}
ok = True
# the one record without an assistant turn is long enough to be dropped first
if got["dropped"] + got["no_loss"] != 15 - len(lens) or got["dropped"] < len(refs) - len(lens):
    print(f"dropped {got['dropped']}, no loss {got['no_loss']}"); ok = False
for k, v in want.items():
    if got.get(k) != v: print(f"{k}: got {got.get(k)}, want {v}"); ok = False
sys.exit(0 if ok else 1)
PYEOF
"$QLORA" data stats text.yaml >t3.out 2>t3.err && grep -q '"cached": true' t3.out ||
    bad "text records: no cache hit"
cmp -s <(grep -v '^  cache' t1.out | sed 's/"cached": [a-z]*//') \
    <(grep -v '^  cache' t3.out | sed 's/"cached": [a-z]*//') || bad "text records: the cached report differs"

# qlora train reads the entry data stats wrote, and evaluates the held-out set
"$PY" "$QL_SOURCE_DIR/tests/fixtures/make_tiny_hf_model.py" model --dtype f32 >/dev/null || exit 1
"$QLORA" data stats cfg.yaml --model=model --output_dir=run_t --data.valid_fraction=0.1 >/dev/null 2>&1 ||
    bad "stats for train"
"$QLORA" train cfg.yaml --model=model --output_dir=run_t --train.steps=2 --data.valid_fraction=0.1 \
    --lora.r=4 >tr.out 2>tr.err || { bad "train failed"; cat tr.err; }
grep -q '^data: tok.jsonl: tokenized records from run_t/data_cache/' tr.err ||
    bad "train did not read the cache"
grep -q '^eval: loss [0-9.]*, perplexity' tr.out || bad "train: no eval summary"
grep -q '^{"step": 2, "eval_loss": ' run_t/metrics.jsonl || bad "train: no eval_loss line in metrics.jsonl"

[ $fails = 0 ] && echo "all data stats checks passed"
exit $((fails > 0))
