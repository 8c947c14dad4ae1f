#!/usr/bin/python3
"""Build data/code: a code-instruction set from Debian's Python standard library.

Each record is one function of /usr/lib/python3.X as Debian ships it
(packages libpython3.X-minimal and libpython3.X-stdlib, under the Python
License; the files Debian's copyright file gives other licenses are left out):

    prompt      a header comment naming the module (and class, for a method),
                then the decorator and `def` lines and the docstring, exactly
                as in the source but with the function moved to column 0
    completion  the rest of the function: the source lines after the
                docstring, moved by the same amount (so the body sits at
                four spaces), whitespace-only lines emptied
    source      path relative to the stdlib root, ":" and the `def` line
    has_doctest whether the docstring holds ">>>" examples
    test        (validation records with doctests only) Python code that,
                appended to prompt + completion and run as a script, runs the
                docstring's examples against that function and exits 0 when
                all pass (qlora eval --code, docs/evaluation.md)

prompt + completion is the function, and it parses to the same AST as the
function in the installed file (checked for every record). Only functions
that a reader of the prompt could write are kept: every name the body reads
is a parameter, a local, a builtin, a module imported by a plain top-level
`import`, the function itself or its enclosing class. Methods are those
directly in a top-level class; nothing nested in a function is taken.

Run with Debian's interpreter: /usr/bin/python3 scripts/make_code_dataset.py
[--out DIR]. The output depends only on the installed package files and the
constants below; two runs give identical bytes.
"""

import argparse
import ast
import builtins
import fnmatch
import hashlib
import io
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import tokenize

SCRIPT_VERSION = 2
SEED = 20240611
N_TRAIN = 400
N_VALID = 50
MIN_BODY_LINES = 3
MAX_BODY_LINES = 40
MAX_PROMPT_CHARS = 3000
MIN_DOCSTRING_CHARS = 20
MAX_PER_FILE = 6
# Test suites are not "library functions", and their docstrings describe tests.
EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages"}

LICENSE = (
    "Python License (PSF-2.0 with the BeOpen, CNRI and CWI agreements), "
    "permissive; text in LICENSE, from Debian's copyright file"
)


def dpkg(args):
    return subprocess.run(
        ["dpkg-query"] + args, check=True, capture_output=True, text=True
    ).stdout


def packages():
    ver = "%d.%d" % sys.version_info[:2]
    names = ["libpython%s-minimal" % ver, "libpython%s-stdlib" % ver]
    out = []
    for name in names:
        fields = dpkg(
            ["-W", "-f=${Package}\t${Version}\t${source:Package}\t${source:Version}", name]
        ).split("\t")
        out.append(
            {"name": fields[0], "version": fields[1], "source": fields[2], "source_version": fields[3]}
        )
    return out


def other_license_patterns(copyright_path):
    """Lib/ patterns of the copyright file's "Files with other licenses than
    the Python License" part, relative to the stdlib root. Those licenses are
    permissive too, but leaving the files out keeps one license (PSF-2.0) for
    the whole set. fnmatch's "*" also crosses "/", so "async*" takes asyncio/
    as well as asyncore.py, as the pattern literally says."""
    with open(copyright_path, encoding="utf-8") as f:
        text = f.read()
    tail = text[text.index("Files with other licenses than the Python License") :]
    return sorted(m for m in re.findall(r"^Files: Lib/(\S+)$", tail, re.MULTILINE))


def license_text(copyright_text):
    """The Python License and the notices of incorporated software, as the
    copyright file has them (it ends before the software merely linked to)."""
    start = copyright_text.index("Python License\n==============")
    end = copyright_text.index("Licenses for Software linked to")
    return copyright_text[start:end].rstrip() + "\n"


def stdlib_files(root, pkgs, other_licenses):
    """The .py files the packages install under root, minus test suites and
    files under another license."""
    listed = dpkg(["-L"] + [p["name"] for p in pkgs]).splitlines()
    files = set()
    for path in listed:
        if not path.startswith(root + "/") or not path.endswith(".py"):
            continue
        rel = path[len(root) + 1 :]
        if EXCLUDED_DIRS & set(rel.split("/")[:-1]):
            continue
        if any(fnmatch.fnmatchcase(rel, pat) for pat in other_licenses):
            continue
        if os.path.isfile(path) and not os.path.islink(path):
            files.add(rel)
    return sorted(files)


def module_name(rel):
    parts = rel[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_source(path):
    """Text with "\\n" line ends, decoded as the interpreter would."""
    with open(path, "rb") as f:
        raw = f.read()
    enc, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    text = raw.decode(enc)
    return raw, text.replace("\r\n", "\n").replace("\r", "\n")


def top_level_imports(tree):
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
    return names


def bound_names(fn):
    """Every name the function binds: parameters and all stores inside it."""
    a = fn.args
    names = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
    for x in (a.vararg, a.kwarg):
        if x is not None:
            names.add(x.arg)
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
    return names


BUILTINS = set(dir(builtins))
# doctest's own rule for an example: a line whose first non-blank is ">>>".
DOCTEST = re.compile(r"^[ \t]*>>>", re.MULTILINE)


def self_contained(fn, allowed_globals):
    for node in ast.walk(fn):
        if node is not fn and isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        ):
            return False
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            return False
    known = bound_names(fn) | BUILTINS | allowed_globals
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in known:
                return False
    # Decorators and defaults are evaluated outside the function but are
    # shown in the prompt, so they need no extra check.
    return True


def shift(lines, col):
    """Remove exactly `col` leading spaces from each line and empty the
    whitespace-only ones, or None where a line starts further left. (A
    string literal that this changes fails the AST comparison later.)"""
    out = []
    for line in lines:
        if line.strip() == "":
            out.append("")
        elif line.startswith(" " * col):
            out.append(line[col:])
        else:
            return None
    return out


def docstring_node(fn):
    if not fn.body:
        return None
    first = fn.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return first
    return None


def clean_docstring(fn):
    """The docstring as inspect.cleandoc leaves it, minus trailing blanks on
    each line: cleandoc keeps a whitespace-only last line as it is, and that
    line's indentation is what moving a method to column 0 changes."""
    doc = ast.get_docstring(fn, clean=True)
    return "\n".join(line.rstrip() for line in doc.split("\n")).strip()


def comparable(fn):
    """ast.dump of fn with its docstring cleaned: moving a method to column 0
    changes the indentation inside the docstring literal and nothing else;
    every other string must come out unchanged."""
    saved = fn.body[0].value.value
    fn.body[0].value.value = clean_docstring(fn)
    try:
        return ast.dump(fn)
    finally:
        fn.body[0].value.value = saved


def make_record(rel, module, cls, fn, lines):
    doc = docstring_node(fn)
    if doc is None or len(fn.body) < 2:
        return None
    docstring = doc.value.value
    if len(docstring.strip()) < MIN_DOCSTRING_CHARS:
        return None
    # The body must start on the line after the docstring, at 4 more spaces.
    if fn.body[1].lineno <= doc.end_lineno:
        return None
    if any(s.col_offset != fn.col_offset + 4 for s in fn.body):
        return None
    start = min([fn.lineno] + [d.lineno for d in fn.decorator_list])
    head = lines[start - 1 : doc.end_lineno]
    body = lines[doc.end_lineno : fn.end_lineno]
    if not (MIN_BODY_LINES <= len(body) <= MAX_BODY_LINES):
        return None
    if any("\t" in line[: len(line) - len(line.lstrip())] for line in head + body):
        return None
    head = shift(head, fn.col_offset)
    body = shift(body, fn.col_offset)
    if head is None or body is None:
        return None
    # A string literal running out to a lower column (a page of HTML, say)
    # is text, not code to learn from, and breaks the body's indentation.
    if any(line and not line.startswith("    ") for line in body):
        return None
    note = "# module %s" % module if cls is None else "# module %s, class %s" % (module, cls)
    prompt = note + "\n" + "\n".join(head) + "\n"
    completion = "\n".join(body) + "\n"
    if len(prompt) > MAX_PROMPT_CHARS:
        return None
    try:
        tree = ast.parse(prompt + completion)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or comparable(tree.body[0]) != comparable(fn):
        return None
    return {
        "prompt": prompt,
        "completion": completion,
        "source": "%s:%d" % (rel, fn.lineno),
        "has_doctest": DOCTEST.search(docstring) is not None,
    }


def candidates_in(root, rel):
    raw, text = read_source(os.path.join(root, rel))
    tree = ast.parse(text, filename=rel)
    lines = text.split("\n")
    module = module_name(rel)
    imports = top_level_imports(tree)
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found.append((node, None))
        elif isinstance(node, ast.ClassDef):
            found += [(x, node.name) for x in node.body if isinstance(x, ast.FunctionDef)]
    records = []
    for fn, cls in found:
        # A function may call itself; a method may name its class.
        if self_contained(fn, imports | {cls or fn.name}):
            r = make_record(rel, module, cls, fn, lines)
            if r is not None:
                records.append(r)
    return hashlib.sha256(raw).hexdigest(), records


def dedupe(records):
    """Keep the first of records with the same completion or the same docstring."""
    seen, out = set(), []
    for r in records:
        body_key = r["completion"].strip()
        doc = ast.get_docstring(ast.parse(r["prompt"] + r["completion"]).body[0])
        keys = {("c", body_key), ("d", doc.strip())}
        if keys & seen:
            continue
        seen |= keys
        out.append(r)
    return out


def select(records):
    """Doctest records first, then the rest, each in a seeded order; at most
    MAX_PER_FILE per file so no single module dominates."""
    rng = random.Random(SEED)
    with_doc = [r for r in records if r["has_doctest"]]
    without = [r for r in records if not r["has_doctest"]]
    rng.shuffle(with_doc)
    rng.shuffle(without)
    per_file, chosen = {}, []
    for r in with_doc + without:
        f = r["source"].rsplit(":", 1)[0]
        if per_file.get(f, 0) >= MAX_PER_FILE:
            continue
        per_file[f] = per_file.get(f, 0) + 1
        chosen.append(r)
        if len(chosen) == N_TRAIN + N_VALID:
            break
    # Validation takes whole files (no module in both splits), chosen in a
    # seeded order until it holds N_VALID records or just over.
    # Files with doctest records go first until a tenth of it has doctests.
    files = sorted(per_file)
    rng.shuffle(files)
    n_doc = {f: 0 for f in files}
    for r in chosen:
        n_doc[r["source"].rsplit(":", 1)[0]] += r["has_doctest"]
    valid_files, n, d = set(), 0, 0
    for f in [f for f in files if n_doc[f]] + [f for f in files if not n_doc[f]]:
        if n >= N_VALID:
            break
        if n_doc[f] == 0 or d < N_VALID // 10:
            valid_files.add(f)
            n += per_file[f]
            d += n_doc[f]
    key = lambda r: (r["source"].rsplit(":", 1)[0], int(r["source"].rsplit(":", 1)[1]))
    train = sorted((r for r in chosen if r["source"].rsplit(":", 1)[0] not in valid_files), key=key)
    valid = sorted((r for r in chosen if r["source"].rsplit(":", 1)[0] in valid_files), key=key)
    return train, valid


def jsonl(records):
    return "".join(
        json.dumps(
            {k: r[k] for k in ("prompt", "completion", "source", "has_doctest", "test") if k in r},
            ensure_ascii=False,
        )
        + "\n"
        for r in records
    ).encode("utf-8")


# The unit test of a record with doctests. Appended to a candidate body
# (prompt + completion + "\n" + test, run as a script), it takes the source
# above its own first line, executes it in a copy of the real module's
# namespace (a method inside a subclass of its real class, so private names
# are mangled as in the original), and runs the docstring's examples against
# the result with doctest. Exit 0: every example passed.
TEST_MARK = "# qlora-test:"
TEST_TEMPLATE = """\
{mark} the docstring's examples, run by doctest against the function above
import doctest as _doctest, importlib as _importlib, sys as _sys
_module, _class, _name = {module!r}, {cls!r}, {name!r}
_src = open(__file__, encoding="utf-8").read().split("\\n{mark}")[0] + "\\n"
_mod = _importlib.import_module(_module)
_g = dict(vars(_mod))
if _class is None:
    exec(compile(_src, __file__, "exec"), _g)
    _f = _g[_name]
else:
    _g["_qlora_base"] = getattr(_mod, _class)
    _body = "".join(("    " + _l) if _l.strip() else _l for _l in _src.splitlines(True))
    exec(compile("class %s(_qlora_base):\\n" % _class + _body, __file__, "exec"), _g)
    _f = getattr(_g[_class], _name)
_t = _doctest.DocTestParser().get_doctest(_f.__doc__ or "", _g, _name, __file__, 0)
_r = _doctest.DocTestRunner(verbose=False).run(_t)
print("doctest: %d of %d examples failed" % (_r.failed, _r.attempted))
_sys.exit(1 if _r.failed or not _r.attempted else 0)
"""


def make_test(r):
    """The test of a doctest record, or None when the reference body does not
    pass it or a stand-in body (`pass`) does (a test that cannot tell them
    apart is left out)."""
    m = re.fullmatch(r"# module ([\w.]+)(?:, class (\w+))?", r["prompt"].split("\n", 1)[0])
    fn = ast.parse(r["prompt"] + r["completion"]).body[0]
    test = TEST_TEMPLATE.format(mark=TEST_MARK, module=m.group(1), cls=m.group(2), name=fn.name)

    def passes(completion):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "test.py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(r["prompt"] + completion + "\n" + test)
            run = subprocess.run(
                [sys.executable, "-I", path], cwd=tmp, capture_output=True, timeout=60
            )
        return run.returncode == 0

    return test if passes(r["completion"]) and not passes("    pass\n") else None


README = """\
# data/code: functions of the Python {pyver} standard library

A code-instruction set for `qlora train` in the prompt/completion format
(loss on the completion only). Generated by `scripts/make_code_dataset.py`
(version {script_version}); do not edit by hand. `tests/e2e/test_code_dataset.sh`
regenerates it and checks every record.

## Provenance and license

- Source: `{root}` as installed by the Debian packages {pkg_list}
  (source package `{src}` {src_ver}), parsed with that interpreter's `ast`
  (Python {pyfull}). Test suites (`test/`, `tests/`, `idle_test/`) are left out.
- License: the Python License (Python Software Foundation License Version 2,
  PSF-2.0, with the historical BeOpen, CNRI and CWI agreements), a permissive
  license that allows copying, modification and redistribution provided the
  license and its copyright notice are kept. `LICENSE` here is that text and
  the notices for software incorporated in the standard library, copied by
  the script from Debian's `{copyright}`. The files that this copyright file
  lists with other (also permissive) licenses are left out, so every record
  is under the Python License: {other}. The records are excerpts of the
  standard library, changed only by moving methods to column 0 and adding a
  one-line module/class comment.
- `manifest.json` names the package versions, the sha256 of the copyright
  file and of the list of scanned files, every source file that gave a record
  with its sha256, the selection constants and the counts.

## Records

One JSON object per line:

| field | holds |
|---|---|
| `prompt` | `# module M` (or `# module M, class C` for a method), then the decorator and `def` lines and the docstring exactly as in the source, moved to column 0 |
| `completion` | the rest of the function (its body after the docstring), moved by the same amount, so the body is at four spaces; whitespace-only lines are empty; ends with a newline |
| `source` | file relative to `{root}`, `:`, line of the `def` |
| `has_doctest` | the docstring holds `>>>` examples (the "unit tests" of the function) |
| `test` | validation records with doctests only: Python code that, appended to `prompt` + a body + a newline and run as a script, runs the docstring's examples with `doctest` against that function (a method inside a subclass of its real class, in a copy of its real module's namespace) and exits 0 when every example passes |

`prompt + completion` is a complete function whose AST equals the one in
the installed file, the docstring compared as `inspect.cleandoc` leaves it (less trailing blanks)
(moving a method to column 0 changes only the indentation inside its
docstring literal). The comment names the module and the class because a
method's body uses `self` and sibling methods the prompt does not show.
Doctest examples are kept as they stand in the docstring. In the
validation split they are also the record's unit test (`test`): the generator
keeps a test only when it passes with the record's own completion and fails
with a body of `pass` ({n_test} of the {d_valid} doctest records), and
`qlora eval --code` runs it against a generated body to report pass@1.

Kept are functions at module level and methods directly in a module-level
class with a docstring of at least {min_doc} characters, {min_lines} to {max_lines} body lines
after it, each blank or at four spaces or more (no string literal running out
to a lower column), no nested function or class, no `global`/`nonlocal`, and
a body that reads only its parameters, its locals, builtins, modules imported
by a top-level `import`, itself or its class. Duplicates (same body or same
docstring) are removed, the first in path order kept. Selection: records with
doctests first, then the others, each in an order shuffled with seed
{seed}, at most {per_file} per file. The validation split takes whole files, so
no module is in both; files with doctest records go to it first until a tenth
of it has doctests.

## Counts

| | records | with doctest | bytes |
|---|---|---|---|
| train.jsonl | {n_train} | {d_train} | {b_train} |
| valid.jsonl | {n_valid} | {d_valid} | {b_valid} |

From {n_files} scanned files: {n_cand} functions passed the filters,
{n_dedup} after removing duplicates ({n_dedup_doc} with doctests).
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "data", "code")))
    args = ap.parse_args()

    root = "/usr/lib/python%d.%d" % sys.version_info[:2]
    pkgs = packages()
    copyright_path = "/usr/share/doc/%s/copyright" % pkgs[1]["name"]
    other_licenses = other_license_patterns(copyright_path)
    with open(copyright_path, "rb") as f:
        copyright_raw = f.read()
    copyright_sha = hashlib.sha256(copyright_raw).hexdigest()
    files = stdlib_files(root, pkgs, other_licenses)
    all_records, sha = [], {}
    for rel in files:
        sha[rel], recs = candidates_in(root, rel)
        all_records += recs
    unique = dedupe(all_records)
    train, valid = select(unique)
    for r in valid:
        if r["has_doctest"]:
            test = make_test(r)
            if test is not None:
                r["test"] = test

    outputs = {"train.jsonl": jsonl(train), "valid.jsonl": jsonl(valid)}
    used = sorted({r["source"].rsplit(":", 1)[0] for r in train + valid})
    counts = {
        "scanned_files": len(files),
        "candidates": len(all_records),
        "after_dedupe": len(unique),
        "after_dedupe_with_doctest": sum(r["has_doctest"] for r in unique),
        "train": len(train),
        "train_with_doctest": sum(r["has_doctest"] for r in train),
        "valid": len(valid),
        "valid_with_doctest": sum(r["has_doctest"] for r in valid),
        "valid_with_test": sum("test" in r for r in valid),
    }
    scanned_list = "".join("%s %s\n" % (sha[f], f) for f in files).encode()
    manifest = {
        "script": "scripts/make_code_dataset.py",
        "script_version": SCRIPT_VERSION,
        "python_version": platform.python_version(),
        "source_package": {"name": pkgs[0]["source"], "version": pkgs[0]["source_version"]},
        "binary_packages": [{"name": p["name"], "version": p["version"]} for p in pkgs],
        "license": LICENSE,
        "license_file": {"path": copyright_path, "sha256": copyright_sha},
        "excluded_other_licenses": other_licenses,
        "root": root,
        "selection": {
            "seed": SEED,
            "n_train": N_TRAIN,
            "n_valid": N_VALID,
            "min_body_lines": MIN_BODY_LINES,
            "max_body_lines": MAX_BODY_LINES,
            "max_prompt_chars": MAX_PROMPT_CHARS,
            "min_docstring_chars": MIN_DOCSTRING_CHARS,
            "max_per_file": MAX_PER_FILE,
            "excluded_dirs": sorted(EXCLUDED_DIRS),
        },
        "scanned_files_sha256": hashlib.sha256(scanned_list).hexdigest(),
        "counts": counts,
        "outputs": {
            name: {"records": len(r), "sha256": hashlib.sha256(outputs[name]).hexdigest()}
            for name, r in (("train.jsonl", train), ("valid.jsonl", valid))
        },
        "files": [
            {
                "path": f,
                "sha256": sha[f],
                "records": sum(r["source"].rsplit(":", 1)[0] == f for r in train + valid),
            }
            for f in used
        ],
    }
    pyver = "%d.%d" % sys.version_info[:2]
    readme = README.format(
        pyver=pyver,
        pyfull=platform.python_version(),
        copyright=copyright_path,
        other=", ".join("`%s`" % p for p in other_licenses),
        script_version=SCRIPT_VERSION,
        root=root,
        pkg_list=", ".join("`%s` %s" % (p["name"], p["version"]) for p in pkgs),
        src=pkgs[0]["source"],
        src_ver=pkgs[0]["source_version"],
        min_doc=MIN_DOCSTRING_CHARS,
        min_lines=MIN_BODY_LINES,
        max_lines=MAX_BODY_LINES,
        seed=SEED,
        per_file=MAX_PER_FILE,
        n_train=len(train),
        d_train=counts["train_with_doctest"],
        b_train=len(outputs["train.jsonl"]),
        n_valid=len(valid),
        d_valid=counts["valid_with_doctest"],
        n_test=counts["valid_with_test"],
        b_valid=len(outputs["valid.jsonl"]),
        n_files=len(files),
        n_cand=len(all_records),
        n_dedup=len(unique),
        n_dedup_doc=counts["after_dedupe_with_doctest"],
    )
    outputs["manifest.json"] = (json.dumps(manifest, indent=1) + "\n").encode()
    outputs["README.md"] = readme.encode()
    outputs["LICENSE"] = license_text(copyright_raw.decode("utf-8")).encode()

    os.makedirs(args.out, exist_ok=True)
    for name, data in outputs.items():
        tmp = os.path.join(args.out, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(args.out, name))
    print(
        "%s: %d train (%d with doctests), %d valid (%d with doctests) from %d candidates"
        % (
            args.out,
            len(train),
            counts["train_with_doctest"],
            len(valid),
            counts["valid_with_doctest"],
            len(all_records),
        )
    )


if __name__ == "__main__":
    main()
