"""The comparison page's plotly figures, built from a :class:`~topiq_video.result.CompareResult`.

They follow the report page's rules (:mod:`topiq_video.report.figures`, whose helpers they
use): sizes do not grow with the video (timelines above ``EXACT_MAX_POINTS`` frames are
min/max envelopes, histograms are binned here, ECDFs keep their low tail and sample the
rest), every string taken from the result is escaped for plotly's HTML subset, and a figure
that was reduced says so in its notes.

Colours: one per encode (its place in the report), the same in every figure; verdicts are
green (better than the baseline), red (worse) and grey (no difference).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from topiq_video.report.figures import (
    EXACT_MAX_POINTS,
    HISTOGRAM_BINS,
    INK,
    Figure,
    _axis,
    _label,
    _layout,
    _values,
    axis_suffix,
    decimation_note,
    drawn_rows,
    ecdf_note,
    ecdf_points,
    frame_step,
    metric_color,
    nonfinite_counts_text,
    nonfinite_shapes,
    scene_band_shapes,
    stacked_layout,
)
from topiq_video.stats import VERDICT_BETTER, VERDICT_SAME, VERDICT_WORSE

if TYPE_CHECKING:
    import pandas as pd

    from topiq_video.result import BDEntry, CompareResult, MetricComparison, MetricInfo, RDPoint

VERDICT_COLORS = {
    VERDICT_BETTER: "#0f9d76",
    VERDICT_SAME: "#64748b",
    VERDICT_WORSE: "#dc2626",
}
"""Colour of a per-scene difference by its verdict."""
STAT_NAMES = {"mean": "mean", "p5": "5 % low"}
RD_STATS = tuple(STAT_NAMES.items())
"""The pooled statistics drawn on the rate-quality plane, and their names on the page."""
STRIP_BAND = 0.3
"""Share of a timeline row's height that the non-finite strips of all encodes may take."""
LEGEND = {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom"}


ENCODE_COLORS = (
    "#2563eb", "#0f9d76", "#d97706", "#7c3aed", "#db2777", "#0891b2",
    "#65a30d", "#b45309", "#4f46e5", "#be123c", "#0d9488", "#a16207",
)  # fmt: skip
"""One colour per encode (the report page's metric colours first, then more), so that a
ladder of encodes stays apart."""
SCENE_BD_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "star")


def encode_color(index: int) -> str:
    """The colour of the ``index``-th encode of the report, everywhere on the page."""
    return ENCODE_COLORS[index % len(ENCODE_COLORS)]


@dataclass(frozen=True)
class Series:
    """One encode's rows, in source order."""

    label: str
    color: str
    ref_time: np.ndarray
    frame: np.ndarray
    ref_frame: np.ndarray
    frames: pd.DataFrame

    def values(self, metric: str) -> np.ndarray:
        return self.frames[metric].to_numpy(np.float64)


def encode_series(result: CompareResult) -> list[Series]:
    """Each encode that has rows, in the report's order, sorted by source frame."""
    frames = result.frames
    if not len(frames) or "encode" not in frames.columns:
        return []
    groups = {str(k): g for k, g in frames.groupby("encode", sort=False, observed=True)}
    out = []
    for i, enc in enumerate(result.report.encodes):
        part = groups.get(enc.label)
        if part is None or not len(part):
            continue
        part = part.sort_values("ref_frame", kind="stable")
        out.append(
            Series(
                enc.label,
                encode_color(i),
                part["ref_time"].to_numpy(np.float64, na_value=np.nan),
                part["frame"].to_numpy(np.int64),
                part["ref_frame"].to_numpy(np.float64, na_value=np.nan),
                part,
            )
        )
    return out


def _unit(info: MetricInfo) -> str:
    return f" ({_label(info.unit)})" if info.unit else ""


# ---------------------------------------------------------------------------- timeline


def compare_timeline_figure(result: CompareResult, series: Sequence[Series]) -> Figure | None:
    """Every encode's per-frame scores on the source's time axis, one row per metric,
    scene bands behind; the gallery's source frames are always drawn exactly."""
    report = result.report
    metrics = [m for m in report.metrics if m.name in result.frames.columns]
    if not series or not metrics:
        return None
    layout = stacked_layout([_label(m.name) + _unit(m) for m in metrics], x_title="source time (s)")
    layout.update(showlegend=True, legend=LEGEND, hovermode="x")
    layout["margin"] = {**layout["margin"], "t": 36}
    shown = {g.ref_frame for g in report.gallery}
    band = min(0.06, STRIP_BAND / len(series))
    traces: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    notes: list[str] = []
    decimated = any(s.ref_time.size > EXACT_MAX_POINTS for s in series)
    drawn_points = 0
    longest = max(s.ref_time.size for s in series)
    for i, m in enumerate(metrics):
        ax = axis_suffix(i)
        for k, s in enumerate(series):
            values = s.values(m.name)
            forced = np.flatnonzero(np.isin(s.ref_frame, list(shown))) if shown else np.zeros(0)
            rows = drawn_rows(values, forced.astype(np.int64))
            drawn_points = max(drawn_points, rows.size)
            finite = np.isfinite(values)
            exact = rows.size == values.size
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines" if finite.all() or not exact else "lines+markers",
                    "x": s.ref_time[rows].tolist(),
                    "y": _values(values[rows]),
                    "customdata": s.frame[rows].tolist(),
                    "name": _label(s.label),
                    "legendgroup": f"enc{k}",
                    "showlegend": i == 0,
                    "line": {"color": s.color, "width": 1.3},
                    "marker": {"size": 3},
                    "xaxis": f"x{ax}",
                    "yaxis": f"y{ax}",
                    "hovertemplate": f"{_label(s.label)}: %{{y:.4g}} "
                    "(encode frame %{customdata})<extra></extra>",
                }
            )
            top = 1.0 - k * band
            strips, posinf, other = nonfinite_shapes(
                values, s.ref_time, frame_step(s.ref_time), ax, (top - band, top)
            )
            shapes += strips
            if posinf or other:
                notes.append(
                    f"{m.name}, {s.label}: {nonfinite_counts_text(posinf, other)} frames have "
                    f"no point on the line; strips along the top of the row mark where they "
                    f"are (encode {k + 1} of the legend in line {k + 1} from the top)."
                )
    shapes += scene_band_shapes((sc.start_time, sc.end_time) for sc in report.scenes)
    layout["shapes"] = shapes
    if decimated:
        notes.insert(
            0,
            decimation_note(
                longest,
                drawn_points,
                of="frames of each encode",
                per="line",
                exact="the gallery's",
            ),
        )
    return Figure("fig-timeline", traces, layout, notes, decimated)


# ---------------------------------------------------------------------------- per-scene


def whisker_figure(
    index: int,
    metric: MetricInfo,
    comparisons: Sequence[tuple[str, MetricComparison]],
    scenes: Mapping[int, tuple[float, float]],
) -> Figure | None:
    """Per scene, each encode's mean difference from the baseline with its interval: one
    row per encode, a point per scene at the scene's middle (a horizontal bar spans the
    scene), coloured by verdict, and a zero line."""
    rows = [
        (label, mc)
        for label, mc in comparisons
        if any(d.difference.mean is not None for d in mc.scenes)
    ]
    if not rows:
        return None
    layout = stacked_layout(
        [f"{_label(label)}{_unit(metric)}" for label, _ in rows], x_title="source time (s)"
    )
    layout.update(showlegend=True, legend=LEGEND)
    layout["margin"] = {**layout["margin"], "t": 36}
    layout["height"] = max(240, 170 * len(rows) + 70)
    traces: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    legend_done: set[str] = set()
    for i, (label, mc) in enumerate(rows):
        ax = axis_suffix(i)
        shapes.append(
            {
                "type": "line",
                "xref": "paper",
                "yref": f"y{ax}",
                "x0": 0,
                "x1": 1,
                "y0": 0,
                "y1": 0,
                "line": {"color": INK, "width": 1},
            }
        )
        for verdict, color in VERDICT_COLORS.items():
            picked = [
                d
                for d in mc.scenes
                if d.difference.verdict == verdict
                and d.difference.mean is not None
                and d.scene in scenes
            ]
            if not picked:
                continue
            mids, halves, ys, plus, minus, custom = [], [], [], [], [], []
            for d in picked:
                start, end = scenes[d.scene]
                diff = d.difference
                mids.append((start + end) / 2)
                halves.append((end - start) / 2)
                ys.append(diff.mean)
                low = diff.low if diff.low is not None else diff.mean
                high = diff.high if diff.high is not None else diff.mean
                plus.append(high - diff.mean)
                minus.append(diff.mean - low)
                custom.append([d.scene, low, high, diff.n])
            traces.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "x": mids,
                    "y": ys,
                    "customdata": custom,
                    "name": verdict,
                    "legendgroup": verdict,
                    "showlegend": verdict not in legend_done,
                    "marker": {"color": color, "size": 6},
                    "error_y": {
                        "type": "data",
                        "symmetric": False,
                        "array": plus,
                        "arrayminus": minus,
                        "color": color,
                        "thickness": 1.2,
                        "width": 3,
                    },
                    "error_x": {
                        "type": "data",
                        "array": halves,
                        "color": color,
                        "thickness": 1,
                        "width": 0,
                    },
                    "xaxis": f"x{ax}",
                    "yaxis": f"y{ax}",
                    "hovertemplate": f"{_label(label)} − baseline, scene %{{customdata[0]}}<br>"
                    "difference %{y:.4g} [%{customdata[1]:.4g}, %{customdata[2]:.4g}]<br>"
                    f"{_label(verdict)} · %{{customdata[3]:,}} frame pairs<extra></extra>",
                }
            )
            legend_done.add(verdict)
    layout["shapes"] = shapes
    notes = []
    missing = sum(
        1 for _, mc in rows for d in mc.scenes if d.difference.mean is None or d.scene not in scenes
    )
    if missing:
        notes.append(f"{missing:,} scene(s) without frames both encodes scored are not drawn.")
    return Figure(f"fig-whisker-{index}", traces, layout, notes)


# ---------------------------------------------------------------------------- rate-quality


def _rd_groups(points: Sequence[RDPoint]) -> dict[str, list[RDPoint]]:
    """Points by encoder (an encode without one stands alone), each sorted by bitrate."""
    groups: dict[str, list[RDPoint]] = {}
    for p in points:
        if p.bitrate is None or not math.isfinite(p.bitrate) or p.bitrate <= 0:
            continue
        groups.setdefault(p.encoder if p.encoder is not None else p.label, []).append(p)
    return {k: sorted(v, key=lambda p: p.bitrate or 0.0) for k, v in groups.items()}


def rd_figure(
    index: int,
    metric: MetricInfo,
    points: Sequence[RDPoint],
    baseline: str,
    colors: Mapping[str, str],
) -> Figure | None:
    """A metric's mean and 5 % low against measured bitrate (log axis), one line per
    encoder through its encodes, each point labelled; the baseline ringed. ``colors`` maps
    an encoder (or the label of an encode without one) to its colour."""
    groups = _rd_groups(points)
    if not groups:
        return None
    layout = _layout(
        height=360,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        showlegend=True,
        legend=LEGEND | {"y": 1.08},
        hovermode="closest",
    )
    traces: list[dict[str, Any]] = []
    drawn = False
    for col, (stat, stat_name) in enumerate(RD_STATS):
        ax = axis_suffix(col)
        left, right = (0.0, 0.47) if col == 0 else (0.53, 1.0)
        layout[f"xaxis{ax}"] = _axis(
            domain=[left, right],
            type="log",
            anchor=f"y{ax}",
            title={"text": "measured bitrate (kbit/s)"},
        )
        layout[f"yaxis{ax}"] = _axis(
            anchor=f"x{ax}", title={"text": f"{_label(metric.name)} {stat_name}{_unit(metric)}"}
        )
        for g, (encoder, group) in enumerate(groups.items()):
            kept = [
                p
                for p in group
                if p.values.get(metric.name, {}).get(stat) is not None
                and math.isfinite(p.values[metric.name][stat] or math.nan)
            ]
            if not kept:
                continue
            drawn = True
            color = colors.get(encoder, metric_color(g))
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers+text",
                    "x": [p.bitrate / 1000 for p in kept],
                    "y": [p.values[metric.name][stat] for p in kept],
                    "text": [_label(p.label) for p in kept],
                    "textposition": "top center",
                    "textfont": {"size": 10, "color": "#475467"},
                    "customdata": [
                        [_label(p.label), "—" if p.rate is None else f"{p.rate:g}"] for p in kept
                    ],
                    "name": _label(encoder),
                    "legendgroup": f"rd{g}",
                    "showlegend": col == 0,
                    "line": {"color": color, "width": 1.6},
                    "marker": {
                        "color": color,
                        "size": [12 if p.label == baseline else 7 for p in kept],
                        "symbol": [
                            "circle-open" if p.label == baseline else "circle" for p in kept
                        ],
                        "line": {"width": 2, "color": color},
                    },
                    "xaxis": f"x{ax}",
                    "yaxis": f"y{ax}",
                    "hovertemplate": f"{_label(encoder)} · %{{customdata[0]}} "
                    "(rate setting %{customdata[1]})<br>%{x:,.0f} kbit/s<br>"
                    f"{_label(metric.name)} {stat_name} %{{y:.4g}}<extra></extra>",
                }
            )
    if not drawn:
        return None
    notes = ["A ringed point is the baseline. Rate settings are as given for each encode."]
    return Figure(f"fig-rd-{index}", traces, layout, notes)


def scene_bd_figure(
    entries: Sequence[tuple[int, BDEntry]],
    scenes: Mapping[int, tuple[float, float]],
) -> Figure | None:
    """Per-scene BD-rate (negative: fewer bits for the same quality) of each (metric index,
    entry) with per-scene values, at the scenes' middles on the source's time axis: colour
    by metric, marker by encoder."""
    entries = [(i, e) for i, e in entries if e.scenes]
    if not entries:
        return None
    symbols: dict[str, str] = {}
    traces = []
    notes = []
    for index, e in entries:
        symbol = symbols.setdefault(e.encoder, SCENE_BD_SYMBOLS[len(symbols) % 6])
        pairs = [(s, v) for s, v in e.scenes if s in scenes]
        with_value = [(s, v) for s, v in pairs if v is not None and math.isfinite(v)]
        name = f"{e.metric} {STAT_NAMES.get(e.stat, e.stat)}: {e.encoder} vs {e.baseline}"
        if len(with_value) < len(pairs):
            notes.append(
                f"{name}: {len(pairs) - len(with_value):,} of {len(pairs):,} scenes have no "
                "BD-rate (too few points or no overlap in the scene)."
            )
        if not with_value:
            continue
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [sum(scenes[s]) / 2 for s, _ in with_value],
                "y": [v for _, v in with_value],
                "customdata": [s for s, _ in with_value],
                "name": _label(name),
                "marker": {"color": metric_color(index), "size": 7, "symbol": symbol},
                "hovertemplate": "scene %{customdata}<br>BD-rate %{y:+.1f} %<extra>"
                + _label(name)
                + "</extra>",
            }
        )
    if not traces:
        return None
    layout = _layout(
        height=340,
        showlegend=True,
        legend=LEGEND,
        margin={"l": 60, "r": 20, "t": 40, "b": 45},
        xaxis=_axis(title={"text": "source time (s)"}),
        yaxis=_axis(title={"text": "BD-rate (%)"}),
        shapes=[
            {
                "type": "line",
                "xref": "paper",
                "yref": "y",
                "x0": 0,
                "x1": 1,
                "y0": 0,
                "y1": 0,
                "line": {"color": INK, "width": 1},
            }
        ],
    )
    return Figure("fig-scene-bd", traces, layout, notes)


# ---------------------------------------------------------------------------- distributions


def compare_distribution_figure(
    index: int, metric: MetricInfo, series: Sequence[Series]
) -> Figure | None:
    """Each encode's histogram (binned here, shared bins) and ECDF of one metric, side by
    side."""
    finite = {}
    left_out = {}
    for s in series:
        v = s.values(metric.name)
        ok = np.isfinite(v)
        if ok.any():
            finite[s.label] = np.sort(v[ok])
        if (~ok).any():
            left_out[s.label] = int((~ok).sum())
    if not finite:
        return None
    edges = np.histogram_bin_edges(np.concatenate(list(finite.values())), bins=HISTOGRAM_BINS)
    centers = (edges[:-1] + edges[1:]) / 2
    traces = []
    decimated = []
    for k, s in enumerate(series):
        values = finite.get(s.label)
        if values is None:
            continue
        counts, _ = np.histogram(values, bins=edges)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": centers.tolist(),
                "y": (counts / values.size * 100.0).tolist(),
                "line": {"color": s.color, "width": 1.6, "shape": "hvh"},
                "name": _label(s.label),
                "legendgroup": f"enc{k}",
                "hovertemplate": f"{_label(s.label)}<br>%{{x:.4g}}: %{{y:.1f}} % of frames"
                "<extra></extra>",
            }
        )
        x, y = ecdf_points(values)
        if len(x) < values.size:
            decimated.append(f"{s.label}: {ecdf_note(len(x), values.size)}")
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": x,
                "y": y,
                "xaxis": "x2",
                "yaxis": "y2",
                "line": {"color": s.color, "width": 1.6, "shape": "hv"},
                "name": _label(s.label),
                "legendgroup": f"enc{k}",
                "showlegend": False,
                "hovertemplate": f"{_label(s.label)}<br>%{{y:.2f}} % of frames ≤ %{{x:.4g}}"
                "<extra></extra>",
            }
        )
    title = _label(metric.name) + _unit(metric)
    layout = _layout(
        height=320,
        showlegend=True,
        legend=LEGEND | {"y": 1.02},
        margin={"l": 56, "r": 20, "t": 40, "b": 45},
        xaxis=_axis(domain=[0, 0.47], title={"text": title}),
        yaxis=_axis(title={"text": "% of frames"}, rangemode="tozero"),
        xaxis2=_axis(domain=[0.53, 1], anchor="y2", title={"text": title}),
        yaxis2=_axis(
            anchor="x2",
            range=[0, 101],
            tickmode="linear",
            tick0=0,
            dtick=25,
            title={"text": "cumulative %"},
        ),
    )
    notes = list(decimated)
    for label, n in left_out.items():
        notes.append(f"{label}: {n:,} non-finite values (+∞, −∞ or NaN) are not drawn.")
    return Figure(f"fig-dist-{index}", traces, layout, notes, bool(decimated))
