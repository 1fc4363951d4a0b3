"""Self-contained, offline HTML report: summary cards, timelines, scenes, distributions, gallery.

The page is one file. plotly.js is inlined, images are ``data:`` URIs, and a Content Security
Policy forbids every network request, so the report works offline and cannot leak anything
when opened. Strings that come from the inputs (file names, container tags, warnings) are
untrusted: they are HTML-escaped, and JSON placed inside ``<script>`` has ``<``, ``>`` and ``&``
escaped so that no value can close the script element.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from topiq_video.report.document import atomic_write_text
from topiq_video.report.gallery import DIFF_CAPTION, DIFF_GAIN, GalleryFrame

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'; media-src 'none'; "
    "object-src 'none'; frame-src 'none'; worker-src 'none'; base-uri 'none'; "
    "form-action 'none'"
)
METRIC_COLORS = ("#2563eb", "#0f9d76", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d")
WORST_COLOR = "#dc2626"
WORST_SCENES_SHOWN = 3
SCENE_BAND_COLOR = "rgba(100, 116, 139, 0.10)"
FONT_STACK = (
    'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, '
    '"Noto Sans", "Liberation Sans", sans-serif'
)
DEFAULT_TERMS_NOTE = (
    "TOPIQ weights are published by their authors under their own licence terms; check those "
    "terms before using scores from them commercially. Scores are only as meaningful as the "
    "weights that produced them."
)
_STAT_ROWS = (
    ("p1", "1 % low"),
    ("p5", "5 % low"),
    ("harmonic_mean", "harmonic mean"),
    ("min", "min"),
    ("median", "median"),
    ("max", "max"),
)


# ----------------------------------------------------------------------------- formatting


def esc(value: Any) -> str:
    """HTML-escape any value (quotes included, so it is safe inside attributes too)."""
    return html.escape("" if value is None else str(value), quote=True)


def script_json(value: Any) -> str:
    """JSON that is safe to place inside a ``<script>`` element."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def fmt_num(value: Any, digits: int = 4) -> str:
    """Compact human number: 4 significant digits, thousands separators for big values."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+∞" if f > 0 else "−∞"
    if abs(f) >= 10 ** (digits - 1):
        return f"{f:,.0f}"
    if f != 0 and abs(f) < 1e-3:
        return f"{f:.{digits - 1}e}"
    text = f"{f:.{digits}g}"
    return text


def fmt_time(seconds: Any) -> str:
    """``m:ss.ss`` (or ``h:mm:ss.s``) for a time in seconds."""
    if seconds is None:
        return "—"
    s = float(seconds)
    if not math.isfinite(s):
        return "—"
    sign = "−" if s < 0 else ""
    s = abs(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h >= 1:
        return f"{sign}{int(h)}:{int(m):02d}:{sec:04.1f}"
    return f"{sign}{int(m)}:{sec:05.2f}"


def _worst_value(w: Mapping[str, Any]) -> Any:
    """A worst-frame value, or its non-finite flag turned back into a float."""
    flag = w.get("value_nonfinite")
    if w.get("value") is None and flag:
        return {"+inf": math.inf, "-inf": -math.inf}.get(flag, math.nan)
    return w.get("value")


def _basename(path: Any) -> str:
    text = "" if path is None else str(path)
    name = PureWindowsPath(text).name if "\\" in text else text.rsplit("/", 1)[-1]
    return name or text


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "m"


# ----------------------------------------------------------------------------- metric info


class _Metric:
    def __init__(self, name: str, info: Mapping[str, Any] | None, color: str) -> None:
        info = info or {}
        self.name = name
        self.unit = info.get("unit") or ""
        self.higher_is_better = bool(info.get("higher_is_better", True))
        rng = info.get("range")
        self.range = tuple(rng) if isinstance(rng, (list, tuple)) and len(rng) == 2 else None
        self.color = color
        self.slug = _slug(name)

    def value(self, v: Any) -> str:
        text = fmt_num(v)
        return f"{text} {self.unit}" if self.unit and v is not None else text

    @property
    def hint(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        return f"{self.unit} · {direction}" if self.unit else direction


def _metrics(doc: Mapping[str, Any]) -> list[_Metric]:
    info = {m.get("name"): m for m in doc.get("metrics") or []}
    names = [m["name"] for m in doc.get("metrics") or [] if "name" in m]
    for name in doc.get("summary") or {}:
        if name not in names:
            names.append(name)
    return [
        _Metric(n, info.get(n), METRIC_COLORS[i % len(METRIC_COLORS)]) for i, n in enumerate(names)
    ]


# ----------------------------------------------------------------------------- figures


def _axis(**extra: Any) -> dict[str, Any]:
    axis = {
        "gridcolor": "#e9edf2",
        "zerolinecolor": "#d5dbe3",
        "linecolor": "#c9d1db",
        "ticks": "outside",
        "tickcolor": "#c9d1db",
        "automargin": True,
    }
    axis.update(extra)
    return axis


def _layout(**extra: Any) -> dict[str, Any]:
    layout = {
        "font": {"family": FONT_STACK, "size": 12, "color": "#1f2933"},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#ffffff",
        "margin": {"l": 60, "r": 20, "t": 30, "b": 45},
        "hovermode": "closest",
        "hoverlabel": {"font": {"family": FONT_STACK}},
        "showlegend": False,
    }
    layout.update(extra)
    return layout


def _column(frames: list[Mapping[str, Any]], key: str) -> list[Any]:
    return [row.get(key) for row in frames]


def _scene_score_points(
    frames: list[Mapping[str, Any]], scene_scores: Any
) -> tuple[list[Any], list[Any], list[Any]] | None:
    """(times, frame numbers, scores) of the scene-change detector, or None.

    A pandas Series is matched by its index (frame numbers; ``ref_frame`` when the index is so
    named), anything else is taken as aligned with the frame rows.
    """
    if scene_scores is None:
        return None
    index = getattr(scene_scores, "index", None)
    if index is not None and hasattr(scene_scores, "to_numpy"):
        key = "ref_frame" if getattr(index, "name", None) == "ref_frame" else "frame"
        lookup = {row.get(key): row for row in frames}
        pairs = [
            (lookup[int(k)], float(v))
            for k, v in zip(
                index.tolist(), scene_scores.to_numpy(dtype=float).tolist(), strict=True
            )
            if int(k) in lookup
        ]
    else:
        values = np.asarray(scene_scores, dtype=float).ravel().tolist()
        pairs = list(zip(frames, values, strict=False))
    if not pairs:
        return None
    return (
        [row.get("time") for row, _ in pairs],
        [row.get("frame") for row, _ in pairs],
        [v if math.isfinite(v) else None for _, v in pairs],
    )


def _timeline_figure(
    doc: Mapping[str, Any], metrics: list[_Metric], scene_scores: Any
) -> dict[str, Any] | None:
    frames = doc.get("frames") or []
    if not frames or not metrics:
        return None
    times = _column(frames, "time")
    frame_no = _column(frames, "frame")
    rows: list[tuple[str, str]] = [(m.name, m.unit) for m in metrics]
    scores = _scene_score_points(frames, scene_scores)
    if scores is not None:
        rows.append(("scene change", "detector"))
    n = len(rows)
    gap = 0.05 if n > 1 else 0.0
    height = (1.0 - gap * (n - 1)) / n
    traces: list[dict[str, Any]] = []
    layout = _layout(height=max(260, 190 * n + 60), margin={"l": 64, "r": 20, "t": 12, "b": 45})
    for i, (label, hint) in enumerate(rows):
        ax = "" if i == 0 else str(i + 1)
        top = 1.0 - i * (height + gap)
        layout[f"yaxis{ax}"] = _axis(
            domain=[max(0.0, top - height), top],
            title={"text": esc(label) + (f" ({esc(hint)})" if hint else "")},
        )
        layout[f"xaxis{ax}"] = _axis(
            anchor=f"y{ax}",
            matches="x" if i else None,
            showticklabels=i == n - 1,
            title={"text": "time (s)"} if i == n - 1 else None,
        )
    by_frame = {row.get("frame"): row for row in frames}
    for i, m in enumerate(metrics):
        ax = "" if i == 0 else str(i + 1)
        values = _column(frames, m.name)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": times,
                "y": values,
                "customdata": frame_no,
                "name": m.name,
                "line": {"color": m.color, "width": 1.4},
                "xaxis": f"x{ax}",
                "yaxis": f"y{ax}",
                "hovertemplate": f"frame %{{customdata}}<br>%{{x:.3f}} s<br>{esc(m.name)} "
                f"%{{y:.4g}}<extra></extra>",
            }
        )
        worst = (doc.get("worst_frames") or {}).get(m.name) or []
        wx, wy, wf = [], [], []
        for w in worst:
            row = by_frame.get(w.get("frame"), {})
            wx.append(w.get("time") if w.get("time") is not None else row.get("time"))
            wy.append(w.get("value"))
            wf.append(w.get("frame"))
        if wx:
            traces.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "x": wx,
                    "y": wy,
                    "customdata": wf,
                    "name": f"worst {m.name}",
                    "marker": {
                        "color": WORST_COLOR,
                        "size": 8,
                        "symbol": "circle-open",
                        "line": {"width": 2},
                    },
                    "xaxis": f"x{ax}",
                    "yaxis": f"y{ax}",
                    "hovertemplate": f"worst {esc(m.name)}<br>frame %{{customdata}}<br>"
                    f"%{{x:.3f}} s · %{{y:.4g}}<extra></extra>",
                }
            )
    if scores is not None:
        ax = str(n)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": scores[0],
                "y": scores[2],
                "customdata": scores[1],
                "name": "scene-change score",
                "line": {"color": "#64748b", "width": 1.2},
                "fill": "tozeroy",
                "fillcolor": "rgba(100,116,139,0.15)",
                "xaxis": f"x{ax}",
                "yaxis": f"y{ax}",
                "hovertemplate": "frame %{customdata}<br>%{x:.3f} s · %{y:.4g}<extra></extra>",
            }
        )
    shapes = []
    threshold = ((doc.get("run") or {}).get("options") or {}).get("scene_threshold")
    if scores is not None and isinstance(threshold, (int, float)):
        shapes.append(
            {
                "type": "line",
                "xref": "paper",
                "yref": f"y{n}" if n > 1 else "y",
                "x0": 0,
                "x1": 1,
                "y0": threshold,
                "y1": threshold,
                "line": {"color": WORST_COLOR, "width": 1, "dash": "dot"},
            }
        )
    for k, scene in enumerate(doc.get("scenes") or []):
        if k % 2 or scene.get("start_time") is None or scene.get("end_time") is None:
            continue
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": scene["start_time"],
                "x1": scene["end_time"],
                "y0": 0,
                "y1": 1,
                "fillcolor": SCENE_BAND_COLOR,
                "line": {"width": 0},
                "layer": "below",
            }
        )
    layout["shapes"] = shapes
    return {"id": "fig-timeline", "data": traces, "layout": layout}


def _distribution_figure(doc: Mapping[str, Any], m: _Metric) -> dict[str, Any] | None:
    raw = [row.get(m.name) for row in doc.get("frames") or []]
    values = np.array([v for v in raw if v is not None], dtype=float)
    if values.size == 0:
        return None
    ordered = np.sort(values)
    ecdf = (np.arange(1, ordered.size + 1) / ordered.size * 100.0).tolist()
    stats = (doc.get("summary") or {}).get(m.name) or {}
    shapes, notes = [], []
    marks = (
        ("mean", "mean", "solid", 0),
        ("p5", "5 % low", "dash", -14),
        ("p1", "1 % low", "dot", -28),
    )
    for key, label, dash, shift in marks:
        v = stats.get(key)
        if v is None:
            continue
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": v,
                "x1": v,
                "y0": 0,
                "y1": 1,
                "line": {
                    "color": WORST_COLOR if key != "mean" else "#1f2933",
                    "width": 1.2,
                    "dash": dash,
                },
            }
        )
        notes.append(
            {
                "x": v,
                "y": 1.0,
                "xref": "x",
                "yref": "paper",
                "yanchor": "bottom",
                "text": label,
                "yshift": shift,
                "xanchor": "left",
                "bgcolor": "rgba(255,255,255,0.85)",
                "showarrow": False,
                "font": {"size": 10, "color": "#475467"},
            }
        )
    traces = [
        {
            "type": "histogram",
            "x": values.tolist(),
            "histnorm": "percent",
            "nbinsx": 60,
            "marker": {"color": m.color, "opacity": 0.55},
            "name": "histogram",
            "hovertemplate": "%{x}<br>%{y:.1f} % of frames<extra></extra>",
        },
        {
            "type": "scatter",
            "mode": "lines",
            "x": ordered.tolist(),
            "y": ecdf,
            "yaxis": "y2",
            "line": {"color": "#1f2933", "width": 1.6, "shape": "hv"},
            "name": "ECDF",
            "hovertemplate": "%{y:.1f} % of frames ≤ %{x:.4g}<extra>ECDF</extra>",
        },
    ]
    layout = _layout(
        height=300,
        margin={"l": 56, "r": 56, "t": 26, "b": 45},
        bargap=0.04,
        xaxis=_axis(title={"text": f"{esc(m.name)}" + (f" ({esc(m.unit)})" if m.unit else "")}),
        yaxis=_axis(title={"text": "% of frames"}, rangemode="tozero"),
        yaxis2=_axis(
            overlaying="y",
            side="right",
            range=[0, 101],
            tickmode="linear",
            tick0=0,
            dtick=25,
            title={"text": "cumulative %"},
            showgrid=False,
        ),
        shapes=shapes,
        annotations=notes,
    )
    return {"id": f"fig-dist-{m.slug}", "data": traces, "layout": layout}


def _search_figure(alignment: Mapping[str, Any]) -> dict[str, Any] | None:
    curve = alignment.get("search") or alignment.get("search_curve")
    if not isinstance(curve, Mapping):
        return None
    offsets, costs = list(curve.get("offsets") or []), list(curve.get("costs") or [])
    if not offsets or len(offsets) != len(costs):
        return None
    shapes = []
    chosen = alignment.get("offset_seconds")
    if chosen is not None:
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": chosen,
                "x1": chosen,
                "y0": 0,
                "y1": 1,
                "line": {"color": WORST_COLOR, "width": 1.5, "dash": "dash"},
            }
        )
    trace = {
        "type": "scatter",
        "mode": "lines+markers",
        "x": offsets,
        "y": costs,
        "line": {"color": METRIC_COLORS[0], "width": 1.6},
        "marker": {"size": 4},
        "hovertemplate": "offset %{x:.3f} s<br>cost %{y:.4g}<extra></extra>",
    }
    layout = _layout(
        height=260,
        xaxis=_axis(title={"text": "offset (s): reference time − encode time"}),
        yaxis=_axis(title={"text": "mismatch cost (lower = better match)"}),
        shapes=shapes,
    )
    return {"id": "fig-search", "data": [trace], "layout": layout}


# ----------------------------------------------------------------------------- sections


def _card_html(m: _Metric, stats: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<div><dt>{esc(label)}</dt><dd>{esc(m.value(stats.get(key)))}</dd></div>"
        for key, label in _STAT_ROWS
    )
    foot = [f"{fmt_num(stats.get('count', 0))} frames"]
    for key, label in (
        ("nan_count", "NaN"),
        ("posinf_count", "+∞"),
        ("neginf_count", "−∞"),
    ):
        if stats.get(key):
            foot.append(f"{fmt_num(stats[key])} {label}")
    note = ""
    if stats.get("posinf_count"):
        note = (
            "<p class='note'>+∞ frames are identical to the reference; they are not in the "
            "mean.</p>"
            if m.name.startswith("psnr")
            else ""
        )
    return (
        f"<article class='card metric-card' style='--accent:{m.color}'>"
        f"<header><h3>{esc(m.name)}</h3><span class='hint'>{esc(m.hint)}</span></header>"
        f"<div class='big'><span class='num'>{esc(fmt_num(stats.get('mean')))}</span>"
        f"<span class='unit'>{esc(m.unit)}</span><span class='lbl'>mean</span></div>"
        f"<dl class='stats'>{rows}</dl>"
        f"<footer>{esc(' · '.join(foot))}</footer>{note}</article>"
    )


def _hotspots_html(doc: Mapping[str, Any], metrics: list[_Metric]) -> str:
    scenes = {s.get("index"): s for s in doc.get("scenes") or []}
    items = []
    for m in metrics:
        parts = []
        flagged = _flagged_scenes(doc)
        ranked = (doc.get("worst_scenes") or {}).get(m.name) or []
        for idx in [i for i in ranked if i in flagged][:WORST_SCENES_SHOWN]:
            s = scenes.get(idx)
            if s is None:
                continue
            mean = ((s.get("stats") or {}).get(m.name) or {}).get("mean")
            parts.append(
                f"<a href='#scene-{esc(idx)}' class='chip'>scene {esc(idx)} · "
                f"{esc(fmt_time(s.get('start_time')))}–{esc(fmt_time(s.get('end_time')))} · "
                f"mean {esc(m.value(mean))}</a>"
            )
        frames = []
        for w in ((doc.get("worst_frames") or {}).get(m.name) or [])[:WORST_SCENES_SHOWN]:
            frames.append(
                f"<a href='#g-{esc(m.slug)}-{esc(w.get('frame'))}' class='chip chip-frame'>"
                f"frame {esc(w.get('frame'))} · {esc(fmt_time(w.get('time')))} · "
                f"{esc(m.value(_worst_value(w)))}</a>"
            )
        if parts or frames:
            items.append(
                f"<div class='hot-row'><span class='hot-metric' style='--accent:{m.color}'>"
                f"{esc(m.name)}</span><div class='chips'>{''.join(parts)}{''.join(frames)}</div>"
                "</div>"
            )
    if not items:
        return ""
    return (
        "<div class='card hotspots'><h3>Where quality drops</h3>"
        "<p class='muted'>Worst scenes and worst frames per metric; click to jump.</p>"
        + "".join(items)
        + "</div>"
    )


def _heat(value: Any, lo: float, hi: float, higher_is_better: bool) -> str:
    """Red tint for a cell: the worse the value within [lo, hi], the stronger the tint."""
    if value is None or not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return ""
    t = (float(value) - lo) / (hi - lo)
    badness = 1.0 - t if higher_is_better else t
    alpha = 0.32 * max(0.0, min(1.0, badness)) ** 1.5
    return f" style='background:rgba(220,38,38,{alpha:.3f})'" if alpha > 0.01 else ""


def _flagged_scenes(doc: Mapping[str, Any]) -> set[int]:
    """Scenes to badge as worst: the first few of each metric's worst-first ranking."""
    n_scenes = len(doc.get("scenes") or [])
    if n_scenes < 2:
        return set()
    keep = max(1, min(WORST_SCENES_SHOWN, n_scenes // 4))
    return {i for v in (doc.get("worst_scenes") or {}).values() for i in v[:keep]}


def _scenes_html(doc: Mapping[str, Any], metrics: list[_Metric]) -> str:
    scenes = doc.get("scenes") or []
    if not scenes:
        return "<p class='muted'>No scenes were detected or given.</p>"
    worst = _flagged_scenes(doc)
    ranges: dict[str, tuple[float, float]] = {}
    for m in metrics:
        means = [((s.get("stats") or {}).get(m.name) or {}).get("mean") for s in scenes]
        finite = [v for v in means if v is not None]
        ranges[m.name] = (min(finite), max(finite)) if finite else (math.nan, math.nan)
    head = [
        ("Scene", "num"),
        ("Start", "num"),
        ("End", "num"),
        ("Duration", "num"),
        ("Frames", "num"),
    ]
    head_html = "".join(
        f"<th data-type='{t}' scope='col' tabindex='0'>{esc(label)}</th>" for label, t in head
    )
    for m in metrics:
        head_html += (
            f"<th data-type='num' scope='col' tabindex='0'>{esc(m.name)}<small>mean</small></th>"
            f"<th data-type='num' scope='col' tabindex='0'>{esc(m.name)}<small>min</small></th>"
        )
    body = []
    for s in scenes:
        idx = s.get("index")
        start, end = s.get("start_time"), s.get("end_time")
        dur = end - start if start is not None and end is not None else None
        nframes = s.get("end_frame", 0) - s.get("start_frame", 0) + 1
        cells = [
            f"<td data-v='{esc(idx)}'>{esc(idx)}"
            + (" <span class='badge'>worst</span>" if idx in worst else "")
            + "</td>",
            f"<td data-v='{esc(start)}'>{esc(fmt_time(start))}"
            f"<small>#{esc(s.get('start_frame'))}</small></td>",
            f"<td data-v='{esc(end)}'>{esc(fmt_time(end))}"
            f"<small>#{esc(s.get('end_frame'))}</small></td>",
            f"<td data-v='{esc(dur)}'>{esc(fmt_num(dur, 3))} s</td>",
            f"<td data-v='{nframes}'>{nframes}</td>",
        ]
        for m in metrics:
            st = (s.get("stats") or {}).get(m.name) or {}
            lo, hi = ranges[m.name]
            for key in ("mean", "min"):
                v = st.get(key)
                tint = _heat(v, lo, hi, m.higher_is_better) if key == "mean" else ""
                sort_v = "" if v is None else repr(float(v))
                cells.append(f"<td data-v='{sort_v}'{tint}>{esc(fmt_num(v))}</td>")
        body.append(
            f"<tr id='scene-{esc(idx)}'{' class=worst' if idx in worst else ''}>"
            + "".join(cells)
            + "</tr>"
        )
    return (
        "<p class='muted'>Click a column header to sort. The mean cells are tinted red the "
        "further they fall below the best scene.</p>"
        "<div class='table-wrap'><table class='sortable scenes'><thead><tr>"
        + head_html
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></div>"
    )


def _gallery_html(
    doc: Mapping[str, Any], metrics: list[_Metric], gallery: Sequence[GalleryFrame]
) -> str:
    if not gallery:
        return "<p class='muted'>No frame images were embedded in this report.</p>"
    info = {m.name: m for m in metrics}
    by_metric: dict[str, list[GalleryFrame]] = {}
    for g in gallery:
        by_metric.setdefault(g.metric, []).append(g)
    parts = []
    has_diff = any(g.diff_jpeg for g in gallery)
    for metric, items in by_metric.items():
        m = info.get(metric) or _Metric(metric, None, METRIC_COLORS[0])
        cards = []
        for rank, g in enumerate(items, 1):
            images = []
            if g.ref_jpeg:
                label = "reference" + (f" · frame {g.ref_frame}" if g.ref_frame is not None else "")
                images.append((label, g.ref_jpeg))
            images.append(("encode", g.dist_jpeg))
            if g.diff_jpeg:
                images.append((f"difference × {DIFF_GAIN}", g.diff_jpeg))
            figs = "".join(
                f"<figure><img alt='{esc(label)}, frame {esc(g.frame)}' decoding='async' "
                f"src='{_data_uri(data)}'><figcaption>{esc(label)}</figcaption></figure>"
                for label, data in images
            )
            cards.append(
                f"<article class='card shot' id='g-{esc(m.slug)}-{esc(g.frame)}'>"
                f"<header><span class='rank'>#{rank}</span>"
                f"<span>frame <b>{esc(g.frame)}</b></span>"
                f"<span>{esc(fmt_time(g.time))}</span>"
                f"<span class='score' style='--accent:{m.color}'>{esc(m.name)} "
                f"<b>{esc(m.value(g.value))}</b></span></header>"
                f"<div class='imgs n{len(images)}'>{figs}</div></article>"
            )
        parts.append(f"<h3 class='gal-h'>{esc(metric)}: worst frames</h3>" + "".join(cards))
    note = f"<p class='muted'>Difference images: {esc(DIFF_CAPTION)}.</p>" if has_diff else ""
    return note + "".join(parts)


def _kv_table(rows: Iterable[tuple[str, Any]], cls: str = "kv") -> str:
    body = "".join(
        f"<tr><th scope='row'>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows if v is not None
    )
    return f"<table class='{cls}'><tbody>{body}</tbody></table>"


def _alignment_html(doc: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
    a = doc.get("alignment")
    if not a:
        return "<p class='muted'>No reference: no-reference (NR) scores only.</p>", None
    conf = a.get("confidence")
    rows = [
        (
            "offset",
            esc(f"{fmt_num(a.get('offset_frames'))} frames · {fmt_num(a.get('offset_seconds'))} s"),
        ),
        ("confidence", esc(fmt_num(conf, 3))),
        ("matched frames", esc(fmt_num(a.get("matched")))),
        ("unmatched encode frames", esc(fmt_num(a.get("unmatched_dist")))),
        ("unmatched reference frames", esc(fmt_num(a.get("unmatched_ref")))),
        ("scaling", esc(a.get("scaling") or "none")),
    ]
    warnings = a.get("warnings") or []
    warn_html = ""
    if warnings:
        warn_html = (
            "<div class='callout warn'><b>Alignment warnings</b><ul>"
            + "".join(f"<li>{esc(w)}</li>" for w in warnings)
            + "</ul></div>"
        )
    fig = _search_figure(a)
    plot = (
        "<div class='card'><h3>Offset search</h3><div id='fig-search' class='plot'></div></div>"
        if fig
        else ""
    )
    return (
        warn_html + f"<div class='grid2'><div class='card'>{_kv_table(rows)}</div>{plot}</div>",
        fig,
    )


_PROBE_FIELDS = (
    ("path", "file"),
    ("container", "container"),
    ("codec", "codec"),
    ("width", "width"),
    ("height", "height"),
    ("pix_fmt", "pixel format"),
    ("fps", "frame rate"),
    ("duration", "duration (s)"),
    ("frame_count", "frames"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "<span class='muted'>—</span>"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return f"<code>{esc(json.dumps(value, ensure_ascii=False))}</code>"
    if isinstance(value, float):
        return esc(fmt_num(value, 6))
    return esc(value)


def _inputs_html(doc: Mapping[str, Any]) -> str:
    inputs = doc.get("inputs") or {}
    cols = [(k, label) for k, label in (("dist", "encode"), ("ref", "reference")) if inputs.get(k)]
    if not cols:
        return ""
    keys: list[str] = [k for k, _ in _PROBE_FIELDS]
    for k, _ in cols:
        for key in inputs[k]:
            if key not in keys and key != "metadata":
                keys.append(key)
    labels = dict(_PROBE_FIELDS)
    head = "".join(f"<th scope='col'>{esc(label)}</th>" for _, label in cols)
    body = []
    for key in keys:
        if all(inputs[k].get(key) is None for k, _ in cols):
            continue
        cells = "".join(f"<td>{_cell(inputs[k].get(key))}</td>" for k, _ in cols)
        body.append(f"<tr><th scope='row'>{esc(labels.get(key, key))}</th>{cells}</tr>")
    meta_keys: list[str] = []
    for k, _ in cols:
        for key in inputs[k].get("metadata") or {}:
            if key not in meta_keys:
                meta_keys.append(key)
    for key in meta_keys:
        cells = "".join(
            f"<td>{_cell((inputs[k].get('metadata') or {}).get(key))}</td>" for k, _ in cols
        )
        body.append(f"<tr><th scope='row'>tag: {esc(key)}</th>{cells}</tr>")
    return (
        "<div class='table-wrap'><table class='probe'><thead><tr><th></th>"
        + head
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></div>"
    )


def _model_html(doc: Mapping[str, Any]) -> str:
    model = doc.get("model")
    if not model:
        return "<p class='muted'>No neural model ran: classic metrics only.</p>"
    rows = [(str(k), _cell(v)) for k, v in model.items() if k not in ("terms", "license")]
    terms = model.get("terms") or model.get("license") or DEFAULT_TERMS_NOTE
    return _kv_table(rows) + f"<p class='terms'>{esc(terms)}</p>"


def _run_html(doc: Mapping[str, Any]) -> str:
    run = doc.get("run") or {}
    rows = []
    for key, value in run.items():
        if key == "options" and isinstance(value, Mapping):
            rows.append((key, f"<pre>{esc(json.dumps(value, indent=1, ensure_ascii=False))}</pre>"))
        elif key in ("command", "command_line"):
            text = " ".join(map(str, value)) if isinstance(value, list) else value
            rows.append((key, f"<pre>{esc(text)}</pre>"))
        else:
            rows.append((key, _cell(value)))
    return _kv_table(rows)


# ----------------------------------------------------------------------------- page


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    # Guard: nothing in the inlined library may close the <script> element early.
    return re.sub(r"</(script)", r"<\\/\1", get_plotlyjs(), flags=re.IGNORECASE)


_CSS = """
:root{--bg:#f4f6f9;--card:#fff;--ink:#1d2733;--muted:#667085;--line:#e4e8ee;--brand:#2563eb;
--bad:#dc2626;--warn-bg:#fff7e6;--warn-line:#f5b44a;--radius:12px;
--shadow:0 1px 2px rgba(16,24,40,.06),0 1px 3px rgba(16,24,40,.08)}
*{box-sizing:border-box}
html{scroll-behavior:smooth;scroll-padding-top:64px}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.5 FONTS;
-webkit-font-smoothing:antialiased}
a{color:var(--brand);text-decoration:none}
a:hover{text-decoration:underline}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;
font-size:12.5px}
pre{margin:0;white-space:pre-wrap;word-break:break-all}
.wrap{max-width:1280px;margin:0 auto;padding:0 24px}
.top{background:#0f172a;color:#e2e8f0;padding:28px 0 22px}
.top .kicker{font-size:12px;letter-spacing:.08em;text-transform:uppercase;color:#94a3b8;margin:0}
.top h1{margin:4px 0 6px;font-size:26px;font-weight:650;color:#fff;word-break:break-all}
.top .vs{color:#cbd5e1;font-size:15px;margin:0;word-break:break-all}
.top .vs b{color:#fff;font-weight:600}
.meta{display:flex;flex-wrap:wrap;gap:8px;margin-top:14px}
.pill{display:inline-flex;gap:6px;align-items:center;background:rgba(255,255,255,.08);
border:1px solid rgba(255,255,255,.12);border-radius:999px;padding:3px 11px;font-size:12.5px;
color:#e2e8f0}
.pill b{color:#fff;font-weight:600}
nav.toc{position:sticky;top:0;z-index:10;background:rgba(255,255,255,.92);
backdrop-filter:blur(6px);border-bottom:1px solid var(--line)}
nav.toc .wrap{display:flex;gap:4px;overflow-x:auto;padding-top:8px;padding-bottom:8px}
nav.toc a{color:#344054;font-size:13.5px;padding:5px 10px;border-radius:8px;white-space:nowrap}
nav.toc a:hover{background:#eef2f7;text-decoration:none}
section{padding:26px 0 6px}
section>h2{font-size:19px;margin:0 0 14px;font-weight:650}
h3{font-size:15px;margin:0 0 10px;font-weight:650}
.muted{color:var(--muted);font-size:13.5px;margin:0 0 12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:var(--radius);
box-shadow:var(--shadow);padding:16px 18px;min-width:0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:14px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px}
.metric-card{border-top:4px solid var(--accent)}
.metric-card header{display:flex;justify-content:space-between;align-items:baseline;gap:8px}
.metric-card h3{margin:0;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:14px}
.hint{color:var(--muted);font-size:12px;text-align:right}
.big{display:flex;align-items:baseline;gap:6px;margin:8px 0 10px}
.big .num{font-size:34px;font-weight:700;letter-spacing:-.02em;font-variant-numeric:tabular-nums}
.big .unit{font-size:15px;color:#475467}
.big .lbl{margin-left:auto;font-size:12px;color:var(--muted);text-transform:uppercase;
letter-spacing:.06em}
dl.stats{display:grid;grid-template-columns:1fr 1fr;gap:6px 16px;margin:0}
dl.stats div{display:flex;justify-content:space-between;border-bottom:1px dashed var(--line);
padding-bottom:3px}
dl.stats dt{color:var(--muted);font-size:13px}
dl.stats dd{margin:0;font-weight:600;font-variant-numeric:tabular-nums;font-size:13.5px}
dl.stats div:nth-child(-n+2) dd{color:var(--bad)}
.metric-card footer{margin-top:10px;color:var(--muted);font-size:12px}
.note{font-size:12px;color:var(--muted);margin:6px 0 0}
.hotspots{margin-top:14px}
.hot-row{display:flex;gap:12px;align-items:flex-start;padding:8px 0;
border-top:1px solid var(--line)}
.hot-metric{min-width:90px;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:13px;font-weight:600;border-left:3px solid var(--accent);padding-left:8px}
.chips{display:flex;flex-wrap:wrap;gap:6px}
.chip{font-size:12.5px;background:#f1f5f9;border:1px solid #e2e8f0;border-radius:999px;
padding:2px 10px;color:#1e293b;font-variant-numeric:tabular-nums}
.chip-frame{background:#fef2f2;border-color:#fecaca;color:#991b1b}
.plot{width:100%;min-height:240px}
.table-wrap{overflow:auto;max-height:560px;border:1px solid var(--line);border-radius:var(--radius);
background:var(--card);box-shadow:var(--shadow)}
table{border-collapse:collapse;width:100%;font-size:13.5px;font-variant-numeric:tabular-nums}
th,td{padding:7px 12px;text-align:left;border-bottom:1px solid var(--line);vertical-align:top}
td small,th small{display:block;color:var(--muted);font-size:11px;font-weight:400}
table.sortable thead th{position:sticky;top:0;background:#f8fafc;cursor:pointer;
user-select:none;white-space:nowrap;z-index:1}
table.sortable thead th:hover{background:#eef2f7}
table.sortable th[aria-sort=ascending]::after{content:" ▲";font-size:10px;color:var(--brand)}
table.sortable th[aria-sort=descending]::after{content:" ▼";font-size:10px;color:var(--brand)}
table.scenes td,table.scenes th{text-align:right}
table.scenes td:first-child,table.scenes th:first-child{text-align:left}
tr.worst td:first-child{box-shadow:inset 3px 0 0 var(--bad)}
tr:target td{outline:2px solid var(--brand);outline-offset:-2px}
.badge{display:inline-block;background:#fee2e2;color:#991b1b;border-radius:6px;font-size:10.5px;
padding:0 6px;margin-left:4px;font-weight:600;vertical-align:1px}
table.kv th{width:38%;color:var(--muted);font-weight:500}
table.kv td,table.probe td{word-break:break-word}
table.probe thead th{background:#f8fafc}
table.probe tbody th{color:var(--muted);font-weight:500;white-space:nowrap}
.callout{border-radius:var(--radius);padding:12px 16px;margin:0 0 14px}
.callout ul{margin:6px 0 0;padding-left:20px}
.warn{background:var(--warn-bg);border:1px solid var(--warn-line);color:#7a4a00}
.gal-h{margin:18px 0 10px;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.shot{margin-bottom:14px;padding:12px 14px}
.shot header{display:flex;flex-wrap:wrap;gap:14px;align-items:baseline;margin-bottom:10px;
font-size:13.5px;font-variant-numeric:tabular-nums}
.shot .rank{font-weight:700;color:var(--bad)}
.shot .score{margin-left:auto;border-left:3px solid var(--accent);padding-left:8px}
.imgs{display:grid;gap:10px}
.imgs.n2{grid-template-columns:repeat(2,minmax(0,1fr))}
.imgs.n3{grid-template-columns:repeat(3,minmax(0,1fr))}
.imgs figure{margin:0}
.imgs img{width:100%;height:auto;display:block;border-radius:8px;background:#0f172a;
image-rendering:auto}
.imgs figcaption{font-size:12px;color:var(--muted);margin-top:4px}
.terms{font-size:12.5px;color:var(--muted);margin:10px 0 0}
footer.page{margin:30px 0 0;padding:22px 0 40px;border-top:1px solid var(--line);
color:var(--muted);font-size:12.5px}
footer.page pre{font-family:inherit;font-size:12.5px}
@media (max-width:720px){.grid2{grid-template-columns:1fr}.imgs.n3{grid-template-columns:1fr}
.big .num{font-size:28px}}
""".replace("FONTS", FONT_STACK)

_JS = """
(function(){
  function num(td){var v=td.getAttribute('data-v');if(v===null||v===''||v==='None')return NaN;
    return parseFloat(v);}
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads=table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads,function(th,col){
      function sort(){
        var dir=th.getAttribute('aria-sort')==='ascending'?'descending':'ascending';
        Array.prototype.forEach.call(heads,function(h){h.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',dir);
        var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
        var sign=dir==='ascending'?1:-1;
        rows.sort(function(a,b){var x=num(a.cells[col]),y=num(b.cells[col]);
          if(isNaN(x)&&isNaN(y))return 0;if(isNaN(x))return 1;if(isNaN(y))return -1;
          return sign*(x-y);});
        rows.forEach(function(r){body.appendChild(r);});
      }
      th.addEventListener('click',sort);
      th.addEventListener('keydown',function(e){if(e.key==='Enter'||e.key===' '){
        e.preventDefault();sort();}});
    });
  });
  var root=document.documentElement;
  var figs=JSON.parse(document.getElementById('report-figures').textContent);
  if(typeof Plotly==='undefined'){root.setAttribute('data-rendered','error');
    console.error('plotly.js failed to load');return;}
  var config={displaylogo:false,responsive:true,
    modeBarButtonsToRemove:['select2d','lasso2d','autoScale2d']};
  Promise.all(figs.map(function(f){
    var el=document.getElementById(f.id);
    return el?Plotly.newPlot(el,f.data,f.layout,config):null;
  })).then(function(){root.setAttribute('data-rendered','true');},
    function(err){root.setAttribute('data-rendered','error');console.error(err);});
})();
"""


def render_report_html(
    doc: Mapping[str, Any],
    *,
    gallery: Sequence[GalleryFrame] = (),
    scene_scores: Sequence[float] | np.ndarray | None = None,
) -> str:
    """The report page as one HTML string (see module docstring for the security rules)."""
    metrics = _metrics(doc)
    summary = doc.get("summary") or {}
    inputs = doc.get("inputs") or {}
    dist = inputs.get("dist") or {}
    ref = inputs.get("ref") or None
    run = doc.get("run") or {}
    model = doc.get("model") or None
    alignment = doc.get("alignment") or {}

    dist_name = _basename(dist.get("path")) or "input"
    title_tag = (dist.get("metadata") or {}).get("title")
    figures: list[dict[str, Any]] = []

    pills = [("mode", "full-reference" if ref else "no-reference")]
    if model:
        pills.append(("model", model.get("name")))
        if model.get("device") or model.get("precision"):
            pills.append(
                ("on", " ".join(str(x) for x in (model.get("device"), model.get("precision")) if x))
            )
    if dist.get("width") and dist.get("height"):
        pills.append(("size", f"{dist['width']}×{dist['height']}"))
    if dist.get("codec"):
        pills.append(("codec", dist["codec"]))
    frames_n = len(doc.get("frames") or [])
    pills.append(("frames", fmt_num(frames_n)))
    if dist.get("duration") is not None:
        pills.append(("duration", fmt_time(dist["duration"])))
    if run.get("created"):
        pills.append(("created", run["created"]))
    pill_html = "".join(f"<span class='pill'>{esc(k)} <b>{esc(v)}</b></span>" for k, v in pills)
    vs = (
        f"<p class='vs'>compared with reference <b>{esc(_basename(ref.get('path')))}</b></p>"
        if ref
        else "<p class='vs'>no reference: no-reference scores only</p>"
    )
    title_html = f"<p class='vs'>title tag: {esc(title_tag)}</p>" if title_tag else ""

    warnings = list(
        dict.fromkeys([*(doc.get("warnings") or []), *((alignment or {}).get("warnings") or [])])
    )
    see = " — see <a href='#alignment'>Alignment</a>" if alignment else ""
    top_warn = (
        "<div class='callout warn'><b>"
        + esc(f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}")
        + f"</b>{see}.<ul>"
        + "".join(f"<li>{esc(w)}</li>" for w in warnings)
        + "</ul></div>"
        if warnings
        else ""
    )

    cards = "".join(_card_html(m, summary[m.name]) for m in metrics if m.name in summary)

    timeline = _timeline_figure(doc, metrics, scene_scores)
    if timeline:
        figures.append(timeline)
        timeline_html = (
            "<p class='muted'>Per-frame scores over time. Shaded bands mark alternate scenes; "
            "red rings mark the worst frames. Drag to zoom (all rows follow), double-click to "
            "reset.</p><div class='card'><div id='fig-timeline' class='plot'></div></div>"
        )
    else:
        timeline_html = "<p class='muted'>No per-frame scores.</p>"

    dist_cards = []
    for m in metrics:
        fig = _distribution_figure(doc, m)
        if fig:
            figures.append(fig)
            dist_cards.append(
                f"<div class='card'><h3>{esc(m.name)}</h3>"
                f"<div id='{esc(fig['id'])}' class='plot'></div></div>"
            )

    align_html, search_fig = _alignment_html(doc)
    if search_fig:
        figures.append(search_fig)

    credits = doc.get("credits")
    credits_html = f"<h3>Credits</h3><pre>{esc(credits)}</pre>" if credits else ""
    version = run.get("version") or run.get("tool_version") or ""

    sections = [
        (
            "summary",
            "Summary",
            top_warn + f"<div class='cards'>{cards}</div>" + _hotspots_html(doc, metrics),
        ),
        ("timeline", "Timeline", timeline_html),
        ("scenes", "Scenes", _scenes_html(doc, metrics)),
        (
            "distribution",
            "Distribution",
            "<p class='muted'>Histogram (bars, left axis) and cumulative distribution (line, "
            "right axis) of the per-frame scores; vertical lines mark the mean and the 1 % and "
            "5 % lows.</p><div class='grid2'>" + "".join(dist_cards) + "</div>",
        ),
        ("gallery", "Worst frames", _gallery_html(doc, metrics, gallery)),
        ("alignment", "Alignment", align_html),
        (
            "inputs",
            "Inputs & model",
            _inputs_html(doc) + "<div class='grid2' style='margin-top:14px'>"
            f"<div class='card'><h3>Model</h3>{_model_html(doc)}</div>"
            f"<div class='card'><h3>Run</h3>{_run_html(doc)}</div></div>",
        ),
    ]
    nav = "".join(f"<a href='#{sid}'>{esc(label)}</a>" for sid, label, _ in sections)
    body = "".join(
        f"<section id='{sid}'><div class='wrap'><h2>{esc(label)}</h2>{content}</div></section>"
        for sid, label, content in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta name='referrer' content='no-referrer'>"
        f"<title>{esc(dist_name)} · topiq-video report</title>"
        f"<style>{_CSS}</style></head><body>"
        "<header class='top'><div class='wrap'>"
        "<p class='kicker'>topiq-video quality report</p>"
        f"<h1>{esc(dist_name)}</h1>{vs}{title_html}<div class='meta'>{pill_html}</div>"
        "</div></header>"
        f"<nav class='toc'><div class='wrap'>{nav}</div></nav><main>{body}</main>"
        "<footer class='page'><div class='wrap'>"
        f"<p>Generated by topiq-video {esc(version)}. All metrics in this report are "
        "higher-is-better unless marked otherwise. This file is self-contained and makes no "
        "network requests.</p>"
        f"{credits_html}</div></footer>"
        f"<script type='application/json' id='report-figures'>{script_json(figures)}</script>"
        f"<script>{_plotly_js()}</script><script>{_JS}</script>"
        "</body></html>\n"
    )


def write_report_html(
    doc: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    gallery: Sequence[GalleryFrame] = (),
    scene_scores: Sequence[float] | np.ndarray | None = None,
) -> Path:
    """Write the self-contained HTML report, atomically.

    ``scene_scores`` is an optional per-frame scene-change detector score (aligned with
    ``doc["frames"]``), drawn as an extra row under the metric timelines.
    """
    return atomic_write_text(
        path, render_report_html(doc, gallery=gallery, scene_scores=scene_scores)
    )


__all__ = ["CSP", "esc", "render_report_html", "script_json", "write_report_html"]
