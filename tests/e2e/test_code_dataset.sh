#!/usr/bin/env bash
# data/code, the code-instruction set made by scripts/make_code_dataset.py:
#   - every record of train.jsonl and valid.jsonl: one JSON object with
#     exactly prompt/completion/source/has_doctest of the right types (and
#     in valid.jsonl, for records with doctests, a "test" that passes with
#     the record's completion and fails with a body of `pass`); the
#     prompt is a module/class comment, the def line(s) and the docstring and
#     nothing more; prompt + completion parses with Python's ast to one
#     complete function; has_doctest says whether the docstring has ">>>"
#     examples; no source, body or docstring twice, no file in both splits;
#   - where the installed stdlib file has the sha256 the manifest names, the
#     record is that function's lines, def to last line, moved to column 0;
#   - the manifest's counts and sha256 match the files, and the set is under
#     1.5 MB;
#   - copies with one defect each (a line cut off the body, has_doctest
#     flipped, an extra field, broken syntax, a cut JSON line, a repeated
#     record, a prompt running into the body) are rejected with their message;
#   - the generator run again into a temporary directory gives the same bytes
#     for every file (exit 77 before this when the Debian package or Python
#     version differs from the manifest's).
set -u
: "${QL_SOURCE_DIR:?}"
PY=/usr/bin/python3
[ -x "$PY" ] || { echo "skip: $PY missing"; exit 77; }
D="$QL_SOURCE_DIR/data/code"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

cat >"$T/check.py" <<'EOF'
import ast, hashlib, json, os, re, sys

d = sys.argv[1]
errors = []
def err(msg):
    errors.append(msg)

man = json.load(open(os.path.join(d, "manifest.json")))
sel = man["selection"]
root = man["root"]
installed_ok = {}
for f in man["files"]:
    p = os.path.join(root, f["path"])
    if os.path.isfile(p):
        installed_ok[f["path"]] = hashlib.sha256(open(p, "rb").read()).hexdigest() == f["sha256"]

def no_dupes(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)

DOCTEST = re.compile(r"^[ \t]*>>>", re.M)
HEADER = re.compile(r"# module ([A-Za-z_][\w.]*)(?:, class ([A-Za-z_]\w*))?")
seen_src, seen_body, seen_doc, split_of_file = set(), set(), set(), {}
tests = []
per_file, parsed = {}, {}
for split in ("train.jsonl", "valid.jsonl"):
    raw = open(os.path.join(d, split), "rb").read()
    if hashlib.sha256(raw).hexdigest() != man["outputs"][split]["sha256"]:
        err("%s: sha256 differs from manifest" % split)
    lines = raw.decode("utf-8").split("\n")
    if lines[-1] != "":
        err("%s: no newline at end" % split)
    lines = lines[:-1]
    if len(lines) != man["outputs"][split]["records"]:
        err("%s: %d records, manifest says %d" % (split, len(lines), man["outputs"][split]["records"]))
    for no, line in enumerate(lines, 1):
        where = "%s:%d" % (split, no)
        try:
            r = json.loads(line, object_pairs_hook=no_dupes)
        except ValueError as e:
            err("%s: not JSON (%s)" % (where, e)); continue
        base_fields = {"prompt", "completion", "source", "has_doctest"}
        if not isinstance(r, dict) or set(r) not in (base_fields, base_fields | {"test"}):
            err("%s: fields are %s" % (where, sorted(r) if isinstance(r, dict) else type(r).__name__)); continue
        if "test" in r and (split != "valid.jsonl" or r["has_doctest"] is not True
                            or not isinstance(r["test"], str)):
            err("%s: a test outside the validation records with doctests" % where); continue
        if "test" in r:
            tests.append((where, r))
        p, c, s, h = r["prompt"], r["completion"], r["source"], r["has_doctest"]
        if not (isinstance(p, str) and isinstance(c, str) and isinstance(s, str) and isinstance(h, bool)):
            err("%s: field types" % where); continue
        m = re.fullmatch(r"([\w/.]+\.py):([1-9][0-9]*)", s)
        if not m:
            err("%s: source %r" % (where, s)); continue
        path, lineno = m.group(1), int(m.group(2))
        if s in seen_src:
            err("%s: source %s twice" % (where, s))
        seen_src.add(s)
        if split_of_file.setdefault(path, split) != split:
            err("%s: %s is in both splits" % (where, path))
        per_file[path] = per_file.get(path, 0) + 1
        head = p.split("\n", 1)[0]
        hm = HEADER.fullmatch(head)
        mod = path[:-3].replace("/", ".")
        if mod.endswith(".__init__"):
            mod = mod[: -len(".__init__")]
        if not hm or hm.group(1) != mod:
            err("%s: first prompt line %r does not name module %s" % (where, head, mod)); continue
        if not p.endswith("\n") or not c.endswith("\n"):
            err("%s: prompt or completion without final newline" % where); continue
        body_lines = c[:-1].split("\n")
        if not (sel["min_body_lines"] <= len(body_lines) <= sel["max_body_lines"]):
            err("%s: completion has %d lines" % (where, len(body_lines)))
        if any(l.strip() and not l.startswith("    ") for l in body_lines):
            err("%s: completion line not indented by 4" % where)
        try:
            full = ast.parse(p + c)
        except SyntaxError as e:
            err("%s: prompt+completion does not parse (%s)" % (where, e)); continue
        if len(full.body) != 1 or not isinstance(full.body[0], ast.FunctionDef):
            err("%s: prompt+completion is not one function" % where); continue
        fn = full.body[0]
        doc = ast.get_docstring(fn, clean=False)
        if doc is None or len(fn.body) < 2:
            err("%s: no docstring or no body" % where); continue
        # The prompt alone is the signature and docstring: with a stand-in
        # body it is a function whose only other statement is that body.
        try:
            stub = ast.parse(p + "    pass\n").body
        except SyntaxError as e:
            err("%s: prompt is not a def and docstring (%s)" % (where, e)); continue
        if (len(stub) != 1 or not isinstance(stub[0], ast.FunctionDef) or len(stub[0].body) != 2
                or ast.get_docstring(stub[0], clean=False) != doc):
            err("%s: prompt is not exactly a def and its docstring" % where); continue
        if h != bool(DOCTEST.search(doc)):
            err("%s: has_doctest is %s but the docstring says otherwise" % (where, h))
        bkey, dkey = c.strip(), ast.get_docstring(fn).strip()
        if bkey in seen_body or dkey in seen_doc:
            err("%s: body or docstring seen before" % where)
        seen_body.add(bkey); seen_doc.add(dkey)
        # Against the installed file: the function at that line, def (or
        # first decorator) to its last line, minus its indentation.
        if installed_ok.get(path):
            if path not in parsed:
                text = open(os.path.join(root, path), encoding="utf-8").read()
                parsed[path] = (text.split("\n"), ast.parse(text))
            src, tree = parsed[path]
            found = None
            for node in tree.body:
                cands = [(node, None)] if isinstance(node, ast.FunctionDef) else []
                if isinstance(node, ast.ClassDef):
                    cands = [(x, node.name) for x in node.body if isinstance(x, ast.FunctionDef)]
                for x, cls in cands:
                    if x.lineno == lineno:
                        found = (x, cls)
            if found is None:
                err("%s: no function at %s" % (where, s)); continue
            x, cls = found
            if cls != hm.group(2):
                err("%s: class %s in the prompt, %s in the source" % (where, hm.group(2), cls))
            first = min([x.lineno] + [dd.lineno for dd in x.decorator_list])
            want = [l[x.col_offset:] if l.strip() else "" for l in src[first - 1 : x.end_lineno]]
            got = (p.split("\n", 1)[1] + c)[:-1].split("\n")
            if got != want:
                err("%s: not the complete function at %s (%d lines, source has %d)" % (where, s, len(got), len(want)))
# Each test passes with the record's own body and fails with `pass`.
import subprocess, tempfile
def run_test(r, completion):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "test.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(r["prompt"] + completion + "\n" + r["test"])
        return subprocess.run([sys.executable, "-I", path], cwd=tmp, capture_output=True,
                              timeout=60).returncode
for where, r in tests:
    if run_test(r, r["completion"]) != 0:
        err("%s: the test fails with the record's own completion" % where)
    if run_test(r, "    pass\n") == 0:
        err("%s: the test passes with a body of pass" % where)
if len(tests) != man["counts"].get("valid_with_test", 0):
    err("manifest: valid_with_test is %s, files have %d tests" % (man["counts"].get("valid_with_test"), len(tests)))
for f in man["files"]:
    if per_file.get(f["path"], 0) != f["records"]:
        err("manifest: %s has %d records, files have %d" % (f["path"], f["records"], per_file.get(f["path"], 0)))
if set(per_file) != {f["path"] for f in man["files"]}:
    err("manifest: file list differs from the records' files")
size = sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d))
if size > 1_500_000:
    err("data/code is %d bytes, over 1.5 MB" % size)
for e in errors[:20]:
    print("error:", e)
checked = sum(1 for k, v in installed_ok.items() if v)
print("%d records (%d with tests); %d of %d source files compared with the installed copy; %d errors"
      % (len(seen_src), len(tests), checked, len(man["files"]), len(errors)))
sys.exit(1 if errors else 0)
EOF

# The committed set.
"$PY" "$T/check.py" "$D" || bad "committed data/code fails the checks"

# Copies with one defect each; the manifest's sha256 is updated so that only
# the record checks can catch them. The defect is Python run with `recs` (the
# parsed train records) and `lines` (their text); put(i) writes recs[i] back.
tamper() {
    local name=$1 expect=$2 code=$3 out
    rm -rf "$T/$name" && cp -r "$D" "$T/$name"
    "$PY" - "$T/$name" "$code" <<'EOF' || { bad "$name: could not make the copy"; return; }
import ast, hashlib, json, sys
d, code = sys.argv[1], sys.argv[2]
path = d + "/train.jsonl"
lines = open(path, encoding="utf-8").read().split("\n")[:-1]
recs = [json.loads(l) for l in lines]
def put(i):
    lines[i] = json.dumps(recs[i], ensure_ascii=False)
exec(code)
open(path, "w", encoding="utf-8").write("".join(l + "\n" for l in lines))
man = json.load(open(d + "/manifest.json"))
man["outputs"]["train.jsonl"]["sha256"] = hashlib.sha256(open(path, "rb").read()).hexdigest()
json.dump(man, open(d + "/manifest.json", "w"), indent=1)
EOF
    out=$("$PY" "$T/check.py" "$T/$name" 2>&1) && { bad "$name: tampered copy accepted"; return; }
    grep -q -- "$expect" <<<"$out" || bad "$name: expected '$expect' in: $out"
}
# The first record whose body still parses without its last line loses it.
tamper cut_line "not the complete function" "
for i, r in enumerate(recs):
    c = r['completion'].rstrip('\n').rsplit('\n', 1)[0] + '\n'
    try:
        ast.parse(r['prompt'] + c)
        break
    except SyntaxError:
        pass
recs[i]['completion'] = c
put(i)"
tamper flip_doctest "has_doctest is" "recs[0]['has_doctest'] = not recs[0]['has_doctest']; put(0)"
tamper extra_field "fields are" "recs[1]['license'] = 'x'; put(1)"
tamper test_in_train "a test outside" "recs[1]['test'] = 'pass'; put(1)"
tamper syntax "does not parse" "recs[2]['completion'] = '    return (\n' + recs[2]['completion']; put(2)"
tamper cut_json "not JSON" "lines[3] = lines[3][:-5]"
tamper repeated "source .* twice" "lines[6] = lines[5]"
tamper prompt_into_body "prompt is not" "
b = recs[4]['completion'].split('\n', 1)
recs[4]['prompt'] += b[0] + '\n'
recs[4]['completion'] = b[1]
put(4)"

# Regeneration needs the same Debian packages and interpreter.
mismatch=$("$PY" - "$D/manifest.json" <<'EOF'
import json, platform, subprocess, sys
m = json.load(open(sys.argv[1]))
def q(fmt, pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=" + fmt, pkg], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else "(not installed)"
have = {"python": platform.python_version()}
want = {"python": m["python_version"]}
for p in m["binary_packages"]:
    have[p["name"]] = q("${Version}", p["name"])
    want[p["name"]] = p["version"]
    have["source of " + p["name"]] = q("${source:Package} ${source:Version}", p["name"])
    want["source of " + p["name"]] = m["source_package"]["name"] + " " + m["source_package"]["version"]
print("; ".join("%s: manifest %s, here %s" % (k, want[k], have[k]) for k in want if want[k] != have[k]))
EOF
)
if [ -n "$mismatch" ]; then
    [ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
    echo "skip regeneration: $mismatch"
    exit 77
fi
"$PY" "$QL_SOURCE_DIR/scripts/make_code_dataset.py" --out "$T/gen" >/dev/null || bad "generator failed"
diff -r "$D" "$T/gen" >"$T/diff" || bad "regenerated data/code differs: $(head -c 2000 "$T/diff")"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "data/code: records valid, tampered copies rejected, regeneration identical"
