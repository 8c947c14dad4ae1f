#!/usr/bin/env python3
"""Reads back what `qlora report RUN` drew and compares it with
RUN/metrics.jsonl, for tests/e2e/test_report.sh. Python's standard library
only (xml.etree, zlib, struct).

The expected points come from metrics.jsonl as the docs define it: training
lines have "step" and "loss" (null = not finite, not drawn), eval lines
"step" and "eval_loss"; for a step written twice (a resumed run) the later
line counts; other lines are ignored.

RUN/report.html: the inline <svg> is parsed as XML. The pixel <-> value
scale of each axis is fitted to the tick labels (a tick's printed value and
its x or y attribute) and must be linear; every vertex of the "train" and
"eval" polylines (and every "eval-point" marker) is mapped back and must
equal a metrics point to within 0.01 pixel. Without --thinned they must be
exactly the metrics points, in order; with it, an ordered subset of at most
2001 that keeps the first and the last.

RUN/loss.png: chunks and CRCs checked, IDAT inflated by zlib, every row's
filter byte 0, the image as large as the SVG; the pixel under each plotted
point has its series' colour (a training point may sit under an eval marker).

usage: check_report.py RUN [--expect-eval N] [--thinned]
"""
import json
import math
import os
import struct
import sys
import xml.etree.ElementTree as ET
import zlib

NS = "{http://www.w3.org/2000/svg}"
COLORS = {"train": (0x1F, 0x77, 0xB4), "eval": (0xE4, 0x57, 0x2E)}


def expected(run):
    train, ev = {}, {}
    for line in open(os.path.join(run, "metrics.jsonl")):
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if not isinstance(o, dict) or not isinstance(o.get("step"), int):
            continue
        if "eval_loss" in o:
            if isinstance(o["eval_loss"], (int, float)):
                ev[o["step"]] = float(o["eval_loss"])
        elif "loss" in o:
            train[o["step"]] = o["loss"]
    train = sorted((s, float(v)) for s, v in train.items() if v is not None)
    return train, sorted(ev.items())


def fit(pairs):
    """value = a * pixel + b through the ticks (least squares); max residual."""
    n = len(pairs)
    mp = sum(p for _, p in pairs) / n
    mv = sum(v for v, _ in pairs) / n
    a = sum((p - mp) * (v - mv) for v, p in pairs) / sum((p - mp) ** 2 for _, p in pairs)
    b = mv - a * mp
    res = max(abs(a * p + b - v) / abs(a) for v, p in pairs)  # in pixels
    return a, b, res


def main():
    run = sys.argv[1]
    want_eval = None
    if "--expect-eval" in sys.argv:
        want_eval = int(sys.argv[sys.argv.index("--expect-eval") + 1])
    thinned = "--thinned" in sys.argv
    fails = []
    train, ev = expected(run)

    html = open(os.path.join(run, "report.html"), encoding="utf-8").read()
    svg = ET.fromstring(html[html.index("<svg"):html.index("</svg>") + 6])
    W, H = int(svg.get("width")), int(svg.get("height"))
    texts = list(svg.iter(NS + "text"))
    xt = [(float(t.text), float(t.get("x"))) for t in texts if t.get("class") == "xtick"]
    yt = [(float(t.text), float(t.get("y"))) for t in texts if t.get("class") == "ytick"]
    if len(xt) < 2 or len(yt) < 2:
        print(f"FAIL: too few tick labels ({len(xt)} x, {len(yt)} y)")
        return 1
    ax, bx, rx = fit(xt)
    ay, by, ry = fit(yt)
    if rx > 0.01 or ry > 0.01:
        fails.append(f"tick labels are not on a linear scale (residual {rx:.3g}, {ry:.3g} px)")

    def back(points_attr):
        out = []
        for xy in points_attr.split():
            x, y = map(float, xy.split(","))
            out.append((ax * x + bx, ay * y + by, x, y))
        return out

    drawn = {}
    for cls, ref in (("train", train), ("eval", ev)):
        polys = [p for p in svg.iter(NS + "polyline") if p.get("class") == cls]
        if not ref:
            if polys and polys[0].get("points"):
                fails.append(f"{cls}: drawn although metrics.jsonl has none")
            continue
        if len(polys) != 1:
            fails.append(f"{cls}: {len(polys)} polylines, want 1")
            continue
        got = back(polys[0].get("points"))
        drawn[cls] = got
        tol_x, tol_y = 0.01 * abs(ax), 0.01 * abs(ay)  # 0.01 pixel in data units
        ref_of = dict(ref)
        steps = []
        for s, v, _, _ in got:
            k = round(s)
            if abs(s - k) > tol_x or k not in ref_of:
                fails.append(f"{cls}: vertex at step {s:.4f} is no logged step")
                break
            if abs(v - ref_of[k]) > tol_y:
                fails.append(f"{cls}: step {k}: drawn at loss {v:.6f}, metrics say {ref_of[k]:.6f}")
                break
            steps.append(k)
        if thinned:
            ok = (steps == sorted(set(steps)) and steps[0] == ref[0][0]
                  and steps[-1] == ref[-1][0] and len(steps) <= 2001)
            if not ok:
                fails.append(f"{cls}: thinned vertices not an ordered subset with both ends")
        elif steps != [s for s, _ in ref]:
            fails.append(f"{cls}: {len(steps)} vertices for {len(ref)} logged points")
        if cls == "eval":
            marks = [(float(c.get("cx")), float(c.get("cy"))) for c in svg.iter(NS + "circle")
                     if c.get("class") == "eval-point"]
            if [(round(x, 2), round(y, 2)) for _, _, x, y in got] != \
                    [(round(x, 2), round(y, 2)) for x, y in marks]:
                fails.append("eval: markers are not at the polyline's vertices")
    if want_eval is not None and len(ev) != want_eval:
        fails.append(f"metrics.jsonl has {len(ev)} eval lines, the test expects {want_eval}")

    # --- the PNG
    data = open(os.path.join(run, "loss.png"), "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fails.append("loss.png: not a PNG signature")
    pos, chunks = 8, {}
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        crc = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        if zlib.crc32(typ + body) != crc:
            fails.append(f"loss.png: bad CRC in {typ}")
        chunks.setdefault(typ, b"")
        chunks[typ] += body
        pos += 12 + n
    w, h, depth, ctype = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    if (w, h, depth, ctype) != (W, H, 8, 3):
        fails.append(f"loss.png: {w}x{h} depth {depth} type {ctype}, want {W}x{H} 8-bit palette")
    pal = chunks[b"PLTE"]
    raw = zlib.decompress(chunks[b"IDAT"])
    if len(raw) != h * (w + 1) or any(raw[y * (w + 1)] != 0 for y in range(h)):
        fails.append("loss.png: rows not w+1 bytes with filter 0")
    else:
        def rgb(x, y):
            i = raw[y * (w + 1) + 1 + x]
            return tuple(pal[3 * i:3 * i + 3])
        for cls, got in drawn.items():
            allowed = {COLORS[cls], COLORS["eval"]}
            for _, _, x, y in got:
                c = rgb(int(round(x)), int(round(y)))
                if c not in allowed:
                    fails.append(f"loss.png: pixel ({x:.0f}, {y:.0f}) of a {cls} point is {c}")
                    break
    print(f"check_report {run}: {len(train)} train and {len(ev)} eval points; plot "
          f"{sum(len(g) for g in drawn.values())} vertices; png {len(data)} bytes: "
          + ("ok" if not fails else f"{len(fails)} problem(s)"))
    for f in fails:
        print("FAIL: " + f)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
