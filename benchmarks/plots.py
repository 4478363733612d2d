"""Scale-curve plots of the benchmark as hand-written SVG (no plotting library needed offline).

`write_scale_plots(result, assets_dir)` draws log-log line charts from the benchmark's JSON result
into ``assets/bench_*.svg``; README embeds them. Missing points (None: skipped or out of budget)
break the line.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any, Sequence

from neuroalign.io_utils import atomic_write_text

COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
W, H = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 72, 170, 40, 56


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if lo <= v <= hi:
                ticks.append(v)
    return ticks or [lo, hi]


def _fmt(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def line_chart_svg(title: str, xlabel: str, ylabel: str,
                   series: Sequence[tuple[str, Sequence[float], Sequence[float | None]]]) -> str:
    """A log-log line chart: `series` = [(name, xs, ys)]; ys may hold None (gaps)."""
    pts = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys) if y is not None and y > 0 and x > 0]
    if not pts:
        raise ValueError(f"no positive data points to plot for {title!r}")
    xlo, xhi = min(p[0] for p in pts), max(p[0] for p in pts)
    ylo, yhi = min(p[1] for p in pts), max(p[1] for p in pts)
    xlo, xhi = (xlo / 1.2, xhi * 1.2) if xlo == xhi else (xlo, xhi)
    ylo, yhi = ylo / 1.5, yhi * 1.5
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + pw * (math.log10(x) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo))

    def sy(y: float) -> float:
        return TOP + ph * (1 - (math.log10(y) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2 - RIGHT / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>']
    for t in _log_ticks(ylo, yhi):
        y = sy(t)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in sorted({x for x, _ in pts}):
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + ph}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{x:.1f}" y="{TOP + ph + 16}" text-anchor="middle">{_fmt(t)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 12}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text transform="translate(16 {TOP + ph / 2}) rotate(-90)" text-anchor="middle">{escape(ylabel)}</text>')
    for i, (name, xs, ys) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        segment: list[str] = []
        segments = []
        for x, y in zip(xs, ys):
            if y is None or y <= 0:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{sx(x):.1f},{sy(y):.1f}")
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        if segment:
            segments.append(segment)
        for seg in segments:
            out.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = TOP + 10 + 20 * i
        out.append(f'<line x1="{W - RIGHT + 12}" y1="{ly}" x2="{W - RIGHT + 32}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{W - RIGHT + 38}" y="{ly + 4}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_scale_plots(result: dict[str, Any], assets_dir: str | Path) -> list[str]:
    """Write the benchmark's scale curves as SVG files; returns their paths."""
    assets = Path(assets_dir)
    assets.mkdir(parents=True, exist_ok=True)
    written = []
    device = result.get("device", "")

    def save(name: str, svg: str) -> None:
        path = assets / name
        atomic_write_text(path, svg)
        written.append(str(path))

    sn = result.get("scale_neurons")
    if sn:
        ks = sn["n_neurons"]
        save("bench_neurons_time.svg", line_chart_svg(
            f"Train step vs neurons (B={sn['batch_size']}, {device})", "neurons", "ms per step",
            [("reference", ks, sn["train_reference_ms"]), ("neuroalign", ks, sn["train_neuroalign_ms"])]))
        save("bench_neurons_memory.svg", line_chart_svg(
            f"Peak memory growth vs neurons (B={sn['batch_size']})", "neurons", "MB",
            [("reference", ks, sn["train_reference_peak_mb"]), ("neuroalign", ks, sn["train_neuroalign_peak_mb"]),
             ("tower: plain", ks, sn["tower_plain_peak_mb"]), ("tower: folded", ks, sn["tower_folded_peak_mb"])]))
        save("bench_tower_neurons.svg", line_chart_svg(
            f"Neural tower fwd+bwd vs neurons (B={sn['batch_size']})", "neurons", "ms",
            [("per-neuron loop", ks, sn["tower_reference_ms"]), ("plain vectorised", ks, sn["tower_plain_ms"]),
             ("folded", ks, sn["tower_folded_ms"]), ("latent (64)", ks, sn["tower_latent_ms"])]))
    si = result.get("scale_images")
    if si:
        ns = si["n_images"]
        save("bench_images.svg", line_chart_svg(
            "Epoch time vs images", "images", "seconds per epoch",
            [("reference", ns, si["reference_epoch_s"]), ("neuroalign", ns, si["neuroalign_epoch_s"]),
             ("feature cache (once)", ns, si["neuroalign_feature_cache_once_s"])]))
    return written
