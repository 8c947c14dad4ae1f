#!/usr/bin/env python3
"""Checks a directory written by `qlora quantize` against its source model.

Independent of qlora's C code: tensors are read with the PyPI `safetensors`
package, the 4-bit data is re-derived in numpy from the original weights
following bitsandbytes' CUDA kernels as described in shared FORMATS.md §1-§2
(reciprocal multiply, strict-> thresholds, high nibble first, double quant
with a float64 mean and dQuantize<0>'s binary search), and dequantized with
the two-step formula of FORMATS §8.

usage: check_bnb4.py --orig DIR --quant DIR [--quant-type nf4|fp4]
                     [--no-double-quant] [--blocksize N] [--shards N]
Exits 0 when everything matches, 1 with one line per problem otherwise.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
from safetensors import deserialize

LINEAR = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# safetensors' Dtype enum order (FORMATS §4.5)
ST_ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
            "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64",
            "F64", "I64", "U64"]
SIDE_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "generation_config.json"]

# bitsandbytes functional.py get_4bit_type("nf4"), as printed in the source
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=np.float32)
# get_4bit_type("fp4"): [0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3] / 12
FP4 = (np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3],
                dtype=np.float32) / np.float32(12))
# What bitsandbytes stores as the FP4 quant_map: Python's `-0` in that list is
# the integer 0, so entry 8 is +0.0 in the file (the CUDA decode still gives
# -0.0 for code 8, which FP4 above keeps for dequantization).
FP4_FILE = FP4.copy()
FP4_FILE[8] = np.float32(0.0)

problems = []


def fail(msg):
    problems.append(msg)


def dynamic_map():
    """create_dynamic_map(signed=True) with torch's FMA linspace (FORMATS §1.8).
    fmaf is emulated in float64: the product and sum are exact there."""
    vals = []
    for i in range(7):
        n = 2 ** i + 1
        step = np.float32(np.float32(1.0) - np.float32(0.1)) / np.float32(n - 1)
        b = []
        for k in range(n):
            if k < n // 2:
                b.append(np.float32(float(step) * k + float(np.float32(0.1))))
            else:
                b.append(np.float32(-float(step) * (n - 1 - k) + 1.0))
        sc = np.float32(10.0 ** (i - 6))
        for k in range(n - 1):
            m = np.float32((b[k] + b[k + 1]) / np.float32(2))
            v = np.float32(sc * m)
            vals += [v, -v]
    vals += [np.float32(0), np.float32(1)]
    return np.sort(np.array(vals, dtype=np.float32))


def nf4_encode(x):
    thr = ((NF4[:-1] + NF4[1:]) / np.float32(2)).astype(np.float32)
    return (x[:, None] > thr[None, :]).sum(axis=1).astype(np.uint8)


def fp4_encode(x):
    f = np.float32
    sign = np.where(x < 0, 8, 0)
    a = np.abs(x)
    hi = np.where(a > f(0.583333), np.where(a > f(0.8333333), 3, 2), np.where(a > f(0.4166667), 5, 4))
    lo = np.where(a > f(0.0859375), np.where(a > f(0.20833333), 7, 6), np.where(a > f(0.00260417), 1, 0))
    return (np.where(a > f(0.29166667), hi, lo) | sign).astype(np.uint8)


def dyn_encode(code, x):
    """kernels.cu dQuantize<0>, vectorized."""
    n = x.shape[0]
    pivot = np.full(n, 127)
    upper_p = np.full(n, 255)
    lower_p = np.zeros(n, dtype=np.int64)
    lower = np.full(n, -1.0, dtype=np.float32)
    upper = np.full(n, 1.0, dtype=np.float32)
    val = code[pivot]
    i = 64
    while i > 0:
        gt = x > val
        lower_p = np.where(gt, pivot, lower_p)
        lower = np.where(gt, val, lower)
        upper_p = np.where(gt, upper_p, pivot)
        upper = np.where(gt, upper, val)
        pivot = np.where(gt, pivot + i, pivot - i)
        val = code[pivot]
        i >>= 1
    upper = np.where(upper_p == 255, code[255], upper)
    lower = np.where(lower_p == 0, code[0], lower)
    gt = x > val
    mid_up = ((upper + val) * np.float32(0.5)).astype(np.float32)
    mid_lo = ((lower + val) * np.float32(0.5)).astype(np.float32)
    res = np.where(gt, np.where(x > mid_up, upper_p, pivot), np.where(x < mid_lo, lower_p, pivot))
    return res.astype(np.uint8)


def quantize(w, qtype, bs, dq, dmap):
    """The whole bnb quantize_4bit on a float32 [rows, cols] matrix."""
    flat = w.reshape(-1).astype(np.float32)
    n = flat.size
    nb = (n + bs - 1) // bs
    padded = np.zeros(nb * bs, dtype=np.float32)
    padded[:n] = flat
    blocks = padded.reshape(nb, bs)
    absmax = np.abs(blocks).max(axis=1).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (np.float32(1) / absmax).astype(np.float32)
        scaled = (blocks * r[:, None]).astype(np.float32).reshape(-1)
    enc = nf4_encode if qtype == "nf4" else fp4_encode
    codes = enc(scaled)[: n + (n & 1)]  # an odd tail keeps its zero-padded partner
    if codes.size & 1:
        codes = np.append(codes, enc(np.zeros(1, dtype=np.float32)))
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
    out = {"packed": packed, "absmax_f32": absmax}
    if dq:
        offset = np.float32(math.fsum(float(a) for a in absmax) / nb)
        y = (absmax - offset).astype(np.float32)
        nn = (nb + 255) // 256
        yp = np.zeros(nn * 256, dtype=np.float32)
        yp[:nb] = y
        a2 = np.abs(yp.reshape(nn, 256)).max(axis=1).astype(np.float32)
        # padding zeros can't raise the max: |y| >= 0
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = (np.float32(1) / a2).astype(np.float32)
            ys = (y * np.repeat(r2, 256)[:nb]).astype(np.float32)
        out.update(offset=offset, nested_absmax=a2, absmax_q=dyn_encode(dmap, ys))
    return out


def dequantize(packed, absmax, qtype, bs, n):
    table = NF4 if qtype == "nf4" else FP4
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2] = packed >> 4
    codes[1::2] = packed & 0x0F
    codes = codes[:n]
    return (table[codes] * np.repeat(absmax, bs)[:n]).astype(np.float32)


def read_header(path):
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    pairs = json.loads(raw[8:8 + hlen].decode("utf-8"), object_pairs_hook=lambda p: p)
    return raw, hlen, pairs


def load_dir(d, what, check_layout):
    """All tensors of a model directory: name -> (dtype, shape, bytes)."""
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(single):
        files = ["model.safetensors"]
        index = None
    else:
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            index = json.load(f)
        files = sorted(set(index["weight_map"].values()))
    tensors = {}
    where = {}
    for fn in files:
        path = os.path.join(d, fn)
        raw, hlen, pairs = read_header(path)
        if check_layout:
            if hlen % 8:
                fail(f"{what}/{fn}: header length {hlen} is not a multiple of 8")
            if not pairs or pairs[0][0] != "__metadata__" or pairs[0][1] != [("format", "pt")]:
                fail(f"{what}/{fn}: header does not start with __metadata__ {{format: pt}}")
            entries = [(k, dict(v)) for k, v in pairs if k != "__metadata__"]
            want = sorted(entries, key=lambda kv: (-ST_ORDER.index(kv[1]["dtype"]), kv[0].encode()))
            if [k for k, _ in entries] != [k for k, _ in want]:
                fail(f"{what}/{fn}: tensors not in (dtype desc, name) order")
            pos = 0
            for k, v in entries:
                if v["data_offsets"] != [pos, v["data_offsets"][1]]:
                    fail(f"{what}/{fn}: tensor {k} data not laid out in header order")
                pos = v["data_offsets"][1]
            compact = json.dumps(dict([("__metadata__", {"format": "pt"})] + entries),
                                 separators=(",", ":"))
            hdr = raw[8:8 + hlen].decode()
            if hdr.rstrip(" ") != compact or len(hdr) - len(compact) >= 8:
                fail(f"{what}/{fn}: header is not compact JSON padded with < 8 spaces")
        for name, info in deserialize(raw):
            tensors[name] = (info["dtype"], list(info["shape"]), bytes(info["data"]))
            where[name] = fn
    if index is not None:
        for name, fn in index["weight_map"].items():
            if where.get(name) != fn:
                fail(f"{what}: index maps {name} to {fn} but it is in {where.get(name)}")
        if set(index["weight_map"]) != set(tensors):
            fail(f"{what}: index weight_map does not list exactly the tensors in the shards")
        if check_layout and index.get("metadata", {}).get("total_size") != sum(len(t[2]) for t in tensors.values()):
            fail(f"{what}: index total_size is not the sum of the tensor sizes")
    return tensors, len(files)


def to_f32(dtype, data, shape):
    if dtype == "F32":
        a = np.frombuffer(data, dtype="<f4")
    elif dtype == "F16":
        a = np.frombuffer(data, dtype="<f2").astype(np.float32)
    elif dtype == "BF16":
        a = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        raise ValueError(dtype)
    return a.reshape(shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--orig", required=True)
    ap.add_argument("--quant", required=True)
    ap.add_argument("--quant-type", default="nf4", choices=["nf4", "fp4"])
    ap.add_argument("--no-double-quant", action="store_true")
    ap.add_argument("--blocksize", type=int, default=64)
    ap.add_argument("--shards", type=int, default=1)
    a = ap.parse_args()
    qt, bs, dq = a.quant_type, a.blocksize, not a.no_double_quant
    table = NF4 if qt == "nf4" else FP4_FILE
    dmap = dynamic_map()

    orig, _ = load_dir(a.orig, "original", False)
    quant, nfiles = load_dir(a.quant, "output", True)
    if nfiles != a.shards:
        fail(f"output has {nfiles} safetensors files, expected {a.shards}")

    with open(os.path.join(a.orig, "config.json")) as f:
        ocfg = json.load(f)
    with open(os.path.join(a.quant, "config.json")) as f:
        qtext = f.read()
    qcfg = json.loads(qtext)
    tdtype = ocfg.get("torch_dtype", "float32")
    want_qc = {"_load_in_4bit": True, "_load_in_8bit": False, "bnb_4bit_compute_dtype": tdtype,
               "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": qt,
               "bnb_4bit_use_double_quant": dq, "llm_int8_enable_fp32_cpu_offload": False,
               "llm_int8_has_fp16_weight": False, "llm_int8_skip_modules": None,
               "llm_int8_threshold": 6.0, "load_in_4bit": True, "load_in_8bit": False,
               "quant_method": "bitsandbytes"}
    if qcfg.get("quantization_config") != want_qc:
        fail(f"quantization_config = {qcfg.get('quantization_config')}, expected {want_qc}")
    rest = {k: v for k, v in qcfg.items() if k != "quantization_config"}
    if rest != ocfg:
        fail("config.json keys other than quantization_config were not preserved")
    if qtext != json.dumps(qcfg, indent=2, sort_keys=True) + "\n":
        fail("config.json is not formatted as json.dumps(indent=2, sort_keys=True)")
    for s in SIDE_FILES:
        src, dst = os.path.join(a.orig, s), os.path.join(a.quant, s)
        if os.path.exists(src) and (not os.path.exists(dst) or open(src, "rb").read() != open(dst, "rb").read()):
            fail(f"{s} was not copied unchanged")

    expected = set()
    n_lin = 0
    worst = 0.0
    for name, (dtype, shape, data) in sorted(orig.items()):
        is_lin = name.endswith(".weight") and any(name.endswith(p + ".weight") for p in LINEAR)
        if not is_lin:
            expected.add(name)
            got = quant.get(name)
            if got != (dtype, shape, data):
                fail(f"{name}: kept tensor differs (dtype/shape/bytes)")
            continue
        n_lin += 1
        w = to_f32(dtype, data, shape)
        rows, cols = shape
        n = rows * cols
        nb = (n + bs - 1) // bs
        suffix = f"quant_state.bitsandbytes__{qt}"
        keys = ["", "absmax", "quant_map", suffix] + (["nested_absmax", "nested_quant_map"] if dq else [])
        full = {k: name + ("." + k if k else "") for k in keys}
        expected.update(full.values())
        missing = [v for v in full.values() if v not in quant]
        if missing:
            fail(f"{name}: missing keys {missing}")
            continue

        def arr(k, dt, shp, npdt):
            d, s, b = quant[full[k]]
            if d != dt or s != shp:
                fail(f"{full[k]}: {d} {s}, expected {dt} {shp}")
                return None
            return np.frombuffer(b, dtype=npdt)

        packed = arr("", "U8", [(n + 1) // 2, 1], np.uint8)
        qmap = arr("quant_map", "F32", [16], "<f4")
        if qmap is not None and qmap.view(np.uint32).tolist() != table.view(np.uint32).tolist():
            fail(f"{full['quant_map']}: not the {qt} code book")
        ref = quantize(w, qt, bs, dq, dmap)
        blob = quant[full[suffix]]
        if blob[0] != "U8" or len(blob[1]) != 1:
            fail(f"{full[suffix]}: not a 1-D U8 tensor")
        text = blob[2].rstrip(b"\0").decode()
        state = json.loads(text)
        # QuantState.dtype is the dtype of the weight that was quantized
        want = {"quant_type": qt, "blocksize": bs,
                "dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype],
                "shape": [rows, cols]}
        if dq:
            want.update(nested_blocksize=256, nested_dtype="float32",
                        nested_offset=float(state.get("nested_offset", float("nan"))))
        if text != json.dumps(want):
            fail(f"{full[suffix]}: blob {text!r} != json.dumps {json.dumps(want)!r}")
        if dq:
            absq = arr("absmax", "U8", [nb], np.uint8)
            a2 = arr("nested_absmax", "F32", [(nb + 255) // 256], "<f4")
            nmap = arr("nested_quant_map", "F32", [256], "<f4")
            if any(x is None for x in (absq, a2, nmap)):
                continue
            if nmap.view(np.uint32).tolist() != dmap.view(np.uint32).tolist():
                fail(f"{full['nested_quant_map']}: not the signed dynamic map")
            off = np.float32(state["nested_offset"])
            if float(off) != state["nested_offset"]:
                fail(f"{full[suffix]}: nested_offset {state['nested_offset']!r} is not a float32 value")
            if off.view(np.uint32) != ref["offset"].view(np.uint32):
                fail(f"{name}: nested_offset {float(off)!r}, numpy mean gives {float(ref['offset'])!r}")
            if absq.tolist() != ref["absmax_q"].tolist():
                fail(f"{name}: absmax codes differ from the numpy re-quantization")
            if a2.view(np.uint32).tolist() != ref["nested_absmax"].view(np.uint32).tolist():
                fail(f"{name}: nested_absmax differs from the numpy re-quantization")
            # FORMATS §8: two roundings, multiply then add
            amax = ((nmap[absq] * np.repeat(a2, 256)[:nb]).astype(np.float32) + off).astype(np.float32)
            err_a = np.abs(amax - ref["absmax_f32"])
            lim_a = np.repeat(a2, 256)[:nb] * np.float32(0.00704) + np.float32(1e-7)
            if not np.all(err_a <= lim_a):
                fail(f"{name}: double-quantized absmax error {err_a.max()} too large")
        else:
            amax = arr("absmax", "F32", [nb], "<f4")
            if amax is None:
                continue
            if amax.view(np.uint32).tolist() != ref["absmax_f32"].view(np.uint32).tolist():
                fail(f"{name}: absmax differs from the numpy re-quantization")
        if packed is None:
            continue
        if packed.tobytes() != ref["packed"].tobytes():
            diff = int(np.count_nonzero(packed != ref["packed"]))
            fail(f"{name}: packed nibbles differ from the numpy re-quantization in {diff} bytes")
        deq = dequantize(packed, amax, qt, bs, n)
        half_gap = np.float32(np.diff(np.sort(table)).max() / 2)
        true_a = np.repeat(ref["absmax_f32"], bs)[:n]
        lim = half_gap * true_a + np.abs(np.repeat(amax, bs)[:n] - true_a) + np.float32(1e-6) * true_a
        err = np.abs(deq - w.reshape(-1))
        if not np.all(err <= lim):
            i = int(np.argmax(err - lim))
            fail(f"{name}: dequantized element {i} off by {err[i]} (bound {lim[i]})")
        nz = true_a > 0  # all-zero blocks dequantize to -absmax' (CUDA's code 0)
        if nz.any():
            worst = max(worst, float((err[nz] / true_a[nz]).max()))
    extra = set(quant) - expected
    if extra:
        fail(f"unexpected keys in the output: {sorted(extra)[:5]}")
    missing = expected - set(quant)
    if missing:
        fail(f"keys missing from the output: {sorted(missing)[:5]}")
    if n_lin == 0:
        fail("no linear weights found in the original model")
    for p in problems:
        print("check_bnb4: " + p)
    print(f"check_bnb4: {n_lin} linear weights, {len(quant)} keys, worst |error|/absmax {worst:.4f}, "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
