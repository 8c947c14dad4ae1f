#!/usr/bin/env python3
"""Hugging Face `tokenizers` side of bench/bench_tokenizer.c.

Usage: tokenizer_hf.py TOKENIZER_JSON DOCS_BIN_GZ REPEATS
Encodes every document of DOCS_BIN_GZ (the format of
tests/fixtures/make_tokenizer_reference.py) with Tokenizer.encode(doc,
add_special_tokens=False), one call per document on one thread, REPEATS times,
and prints one JSON line: best seconds per pass, bytes, ids, an FNV-1a checksum
of the ids (so the C side can check both produced the same), the version.
The caller sets RAYON_NUM_THREADS=1; encode_batch is not used.
"""

import gzip
import json
import os
import struct
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402


def load_docs(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    assert data[:6] == b"QLTD1\n"
    (n,) = struct.unpack_from("<I", data, 6)
    at, docs = 10, []
    for _ in range(n):
        (m,) = struct.unpack_from("<I", data, at)
        docs.append(data[at + 4:at + 4 + m].decode("utf-8"))
        at += 4 + m
    return docs


def main():
    tok_path, docs_path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    docs = load_docs(docs_path)
    tok = tokenizers.Tokenizer.from_file(tok_path)
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    best, ids_total, h = None, 0, 0xCBF29CE484222325
    for r in range(repeats):
        t0 = time.perf_counter()
        encs = [tok.encode(d, add_special_tokens=False) for d in docs]
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
        if r == 0:
            for e in encs:
                for i in e.ids:
                    h = ((h ^ i) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
                ids_total += len(e.ids)
    print(json.dumps({"seconds": best, "bytes": nbytes, "ids": ids_total, "checksum": "%016x" % h,
                      "tokenizers": tokenizers.__version__,
                      "rayon_threads": os.environ.get("RAYON_NUM_THREADS")}))


if __name__ == "__main__":
    main()
