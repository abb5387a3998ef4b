#!/usr/bin/env python3
"""Draws append p99 latency against offered load, one line per system, from the
open-loop JSON files `pos-hub bench --compare --rate R --json open-R.json` wrote.
Plain SVG, no plotting library needed.  Usage: plot.py DIR OUT.svg"""
import json
import math
import pathlib
import sys

COLOURS = {"pos-hub": "#1b7f3b", "NATS JetStream": "#2a5caa", "etcd": "#b0452b"}


def series(directory):
    lines = {}
    for path in sorted(pathlib.Path(directory).glob("open-*.json")):
        run = json.loads(path.read_text())
        rate = float(path.stem.split("-", 1)[1])
        systems = [("pos-hub", run.get("append_latency_ms"))]
        systems += [(p["system"], p.get("append_latency_ms")) for p in run.get("peers", [])]
        for name, latency in systems:
            if latency:
                lines.setdefault(name, []).append((rate, latency["p99"]))
    return {name: sorted(points) for name, points in lines.items()}


def svg(lines):
    width, height, left, bottom, top, right = 640, 400, 70, 50, 30, 150
    rates = [r for pts in lines.values() for r, _ in pts] or [1]
    lats = [l for pts in lines.values() for _, l in pts] or [1]
    x_max = max(rates) * 1.05
    y_max = 10 ** math.ceil(math.log10(max(lats)))
    y_min = min(0.1, 10 ** math.floor(math.log10(max(min(lats), 0.01))))

    def x(rate):
        return left + (width - left - right) * rate / x_max

    def y(ms):
        span = math.log10(y_max) - math.log10(y_min)
        return top + (height - top - bottom) * (1 - (math.log10(max(ms, y_min)) - math.log10(y_min)) / span)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18">append p99 latency (ms, log scale) against offered load, 3 nodes each</text>']
    decade = y_min
    while decade <= y_max * 1.0001:
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(decade):.1f}" y2="{y(decade):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(decade) + 4:.1f}" text-anchor="end">{decade:g}</text>')
        decade *= 10
    for rate in sorted(set(rates)):
        out.append(f'<text x="{x(rate):.1f}" y="{height - bottom + 18}" text-anchor="middle">{rate:g}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 10}" text-anchor="middle">offered appends/s</text>')
    for i, (name, points) in enumerate(sorted(lines.items())):
        colour = COLOURS.get(name, "#555")
        path = " ".join(f"{x(r):.1f},{y(l):.1f}" for r, l in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for r, l in points:
            out.append(f'<circle cx="{x(r):.1f}" cy="{y(l):.1f}" r="3" fill="{colour}"/>')
        out.append(f'<text x="{width - right + 10}" y="{top + 20 + 18 * i}" fill="{colour}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py DIR OUT.svg")
    data = series(sys.argv[1])
    if not data:
        sys.exit(f"no open-*.json results in {sys.argv[1]}")
    pathlib.Path(sys.argv[2]).write_text(svg(data))
