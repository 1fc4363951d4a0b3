"""The report's plotly figures, built from a :class:`~topiq_video.result.ScoreResult`.

Each figure is a plain dict (``data`` + ``layout``) ready for ``Plotly.newPlot``. Sizes do not
grow with the video: above :data:`EXACT_MAX_POINTS` frames the timeline is a min/max envelope
over :data:`TIMELINE_BUCKETS` buckets of consecutive frames (every dip stays visible) that
always passes through the worst frames exactly; histograms are binned here; the ECDF keeps
its lowest values exactly and samples the rest. A figure that was reduced says so in its
``notes``, which the page shows beside it.

Plotly draws its strings (titles, hover templates) as a subset of HTML, so every name taken
from the report goes through :func:`markupsafe.escape`, the escaping the templates use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from markupsafe import escape

if TYPE_CHECKING:
    import pandas as pd

    from topiq_video.result import Agreement, Alignment, MetricInfo, MetricStats, ScoreResult

EXACT_MAX_POINTS = 5_000
"""Series of at most this many frames are drawn point for point."""
TIMELINE_BUCKETS = EXACT_MAX_POINTS // 2
"""Buckets of the min/max envelope above EXACT_MAX_POINTS (two points each, so a decimated
trace has about as many points as the largest exact one)."""
HISTOGRAM_BINS = 60
ECDF_MAX_POINTS = 2_000
"""The ECDF of more values than this is drawn through this many of its order statistics..."""
ECDF_TAIL_POINTS = 250
"""...of which the lowest ones, where quality is worst, are all kept."""
NONFINITE_STRIPS_MAX = 400
"""Runs of non-finite frames drawn per metric; closer runs are merged above this."""
AGREE_FAR_POINTS = 1_000
"""Above EXACT_MAX_POINTS frames, the agreement plot keeps this many of the frames the two
metrics rank furthest apart and spreads the rest of its points evenly over the video."""

METRIC_COLORS = ("#2563eb", "#0f9d76", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d")
WORST_COLOR = "#dc2626"
AGREE_POINT_COLOR = "rgba(71, 85, 105, 0.45)"
SCENE_FRAME_COLOR = "#d97706"
INK = "#1f2933"
EVENT_BAND_COLOR = "rgba(220, 38, 38, 0.12)"
SCENE_BAND_COLOR = "rgba(100, 116, 139, 0.10)"
POSINF_COLOR = "rgba(15, 157, 118, 0.55)"
NOSCORE_COLOR = "rgba(100, 116, 139, 0.65)"
FONT_STACK = (
    'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, '
    '"Noto Sans", "Liberation Sans", sans-serif'
)


@dataclass
class Figure:
    """One plotly figure and what the page should say about how it was drawn."""

    id: str
    data: list[dict[str, Any]]
    layout: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    decimated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "data": self.data, "layout": self.layout}


def metric_color(index: int) -> str:
    return METRIC_COLORS[index % len(METRIC_COLORS)]


def _label(text: object) -> str:
    return str(escape(str(text)))


def _values(array: np.ndarray) -> list[float | None]:
    """Floats for JSON: non-finite values become null (a gap in a line)."""
    out = np.asarray(array, dtype=np.float64).astype(object)
    out[~np.isfinite(np.asarray(array, dtype=np.float64))] = None
    return out.tolist()


def _axis(**extra: Any) -> dict[str, Any]:
    axis = {
        "gridcolor": "#e9edf2",
        "zerolinecolor": "#d5dbe3",
        "linecolor": "#c9d1db",
        "ticks": "outside",
        "tickcolor": "#c9d1db",
        "automargin": True,
    }
    axis.update({k: v for k, v in extra.items() if v is not None})
    return axis


def _layout(**extra: Any) -> dict[str, Any]:
    layout = {
        "font": {"family": FONT_STACK, "size": 12, "color": INK},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#ffffff",
        "margin": {"l": 60, "r": 20, "t": 30, "b": 45},
        "hovermode": "closest",
        "hoverlabel": {"font": {"family": FONT_STACK}},
        "showlegend": False,
    }
    layout.update(extra)
    return layout


# ---------------------------------------------------------------------------- decimation


def bucket_edges(n: int, buckets: int) -> np.ndarray:
    """Where each of ``buckets`` runs of consecutive rows starts (and, last, ``n``)."""
    return np.linspace(0, n, buckets + 1).astype(np.int64)


def envelope_rows(values: np.ndarray, buckets: int) -> np.ndarray:
    """Rows to draw so that a line keeps the shape of ``values`` at ``buckets`` resolution.

    The rows are cut into ``buckets`` runs of consecutive rows; each keeps its lowest and
    highest finite value and its first non-finite one (drawn as a gap). Sorted row indices.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n <= 2 * buckets:
        return np.arange(n)
    edges = bucket_edges(n, buckets)
    bucket = np.repeat(np.arange(buckets), np.diff(edges))
    finite = np.isfinite(values)
    low = np.where(finite, values, np.inf)
    high = np.where(finite, values, -np.inf)
    bucket_min = np.minimum.reduceat(low, edges[:-1])
    bucket_max = np.maximum.reduceat(high, edges[:-1])

    def first_per_bucket(mask: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(mask)
        _, first = np.unique(bucket[rows], return_index=True)
        return rows[first]

    picks = (
        first_per_bucket(finite & (low == bucket_min[bucket])),
        first_per_bucket(finite & (high == bucket_max[bucket])),
        first_per_bucket(~finite),
    )
    return np.unique(np.concatenate(picks))


def ecdf_ranks(n: int) -> np.ndarray:
    """Order statistics (0-based ranks) to draw an ECDF of ``n`` values through."""
    if n <= ECDF_MAX_POINTS:
        return np.arange(n)
    spread = np.rint(np.linspace(0, n - 1, ECDF_MAX_POINTS - ECDF_TAIL_POINTS)).astype(np.int64)
    return np.unique(np.concatenate([np.arange(ECDF_TAIL_POINTS), spread]))


def ecdf_points(finite_sorted: np.ndarray) -> tuple[list[float], list[float]]:
    """(values, cumulative percent) of the ECDF of sorted finite values, through the order
    statistics :func:`ecdf_ranks` keeps."""
    ranks = ecdf_ranks(finite_sorted.size)
    return (
        finite_sorted[ranks].tolist(),
        ((ranks + 1) / finite_sorted.size * 100.0).tolist(),
    )


def ecdf_note(drawn: int, total: int) -> str:
    return (
        f"Decimated: the cumulative line passes through {drawn:,} of the {total:,} sorted "
        f"values (the lowest {ECDF_TAIL_POINTS:,} all kept, the rest evenly spaced)."
    )


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) row of each run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    change = np.diff(padded)
    return np.flatnonzero(change == 1), np.flatnonzero(change == -1) - 1


def _strips(mask: np.ndarray, times: np.ndarray, step: float) -> list[tuple[float, float]]:
    """Time spans of runs of flagged frames, the closest runs merged beyond the cap."""
    first, last = _runs(mask)
    if first.size > NONFINITE_STRIPS_MAX:
        gaps = times[first[1:]] - times[last[:-1]]
        keep = np.sort(np.argsort(gaps, kind="stable")[first.size - NONFINITE_STRIPS_MAX :])
        first = np.concatenate([first[:1], first[1:][keep]])
        last = np.concatenate([last[:-1][keep], last[-1:]])
    return [(float(times[a]), float(times[b] + step)) for a, b in zip(first, last, strict=True)]


# ---------------------------------------------------------------------------- timeline


def frame_step(times: np.ndarray) -> float:
    """The typical time between consecutive rows (the median positive step)."""
    if times.size < 2:
        return 0.04
    diffs = np.diff(times)
    diffs = diffs[diffs > 0]
    return float(np.median(diffs)) if diffs.size else 0.04


def axis_suffix(row: int) -> str:
    """Plotly's axis suffix of the ``row``-th stacked row ("", "2", "3", ...)."""
    return "" if row == 0 else str(row + 1)


def stacked_layout(titles: list[str], *, x_title: str = "time (s)") -> dict[str, Any]:
    """A layout of rows stacked top to bottom, one y axis each (``titles``, already
    escaped), sharing one x axis: zooming one row zooms them all."""
    count = len(titles)
    gap = 0.05 if count > 1 else 0.0
    height = (1.0 - gap * (count - 1)) / count
    layout = _layout(height=max(260, 190 * count + 60), margin={"l": 64, "r": 20, "t": 12, "b": 45})
    for i, title in enumerate(titles):
        ax = axis_suffix(i)
        top = 1.0 - i * (height + gap)
        layout[f"yaxis{ax}"] = _axis(domain=[max(0.0, top - height), top], title={"text": title})
        layout[f"xaxis{ax}"] = _axis(
            anchor=f"y{ax}",
            matches="x" if i else None,
            showticklabels=i == count - 1,
            title={"text": x_title} if i == count - 1 else None,
        )
    return layout


def drawn_rows(values: np.ndarray, forced: np.ndarray | None = None) -> np.ndarray:
    """Rows of a series to draw: every row up to EXACT_MAX_POINTS, else the min/max envelope
    over TIMELINE_BUCKETS buckets, plus the ``forced`` rows and both ends when given."""
    n = len(values)
    if n <= EXACT_MAX_POINTS:
        return np.arange(n)
    rows = envelope_rows(values, TIMELINE_BUCKETS)
    if forced is not None:
        rows = np.union1d(rows, np.r_[forced, 0, n - 1].astype(np.int64))
    return rows


def decimation_note(
    n: int, drawn_points: int, *, of: str = "frames", per: str = "row", exact: str = "the worst"
) -> str:
    """What the page says under a decimated timeline."""
    return (
        f"Decimated: {n:,} {of} are drawn as the lowest and highest value of each of "
        f"{TIMELINE_BUCKETS:,} runs of about {n / TIMELINE_BUCKETS:.0f} consecutive frames "
        f"(at most {drawn_points:,} points per {per}), so every dip stays visible and {exact} "
        "frames are drawn exactly; zooming in does not add detail. Every frame's value is in "
        "the per-frame table."
    )


def nonfinite_shapes(
    values: np.ndarray,
    times: np.ndarray,
    step: float,
    ax: str,
    band: tuple[float, float] = (0.94, 1.0),
) -> tuple[list[dict[str, Any]], int, int]:
    """Strips marking where a series is +inf (green) or NaN/-inf (grey), drawn in the
    ``band`` of row ``ax``'s height; and the two counts."""
    finite = np.isfinite(values)
    posinf_mask = np.isposinf(values)
    noscore_mask = ~finite & ~posinf_mask
    shapes = []
    for mask, color in ((posinf_mask, POSINF_COLOR), (noscore_mask, NOSCORE_COLOR)):
        for x0, x1 in _strips(mask, times, step) if mask.any() else ():
            shapes.append(
                {
                    "type": "rect",
                    "xref": f"x{ax}",
                    "yref": f"y{ax} domain",
                    "x0": x0,
                    "x1": x1,
                    "y0": band[0],
                    "y1": band[1],
                    "fillcolor": color,
                    "line": {"width": 0},
                    "layer": "above",
                }
            )
    return shapes, int(posinf_mask.sum()), int(noscore_mask.sum())


def nonfinite_counts_text(posinf: int, other: int) -> str:
    parts = []
    if posinf:
        parts.append(f"{posinf:,} +∞ (green)")
    if other:
        parts.append(f"{other:,} NaN or −∞ (grey)")
    return " and ".join(parts)


def scene_band_shapes(spans: Iterable[tuple[float, float]]) -> list[dict[str, Any]]:
    """Shaded bands behind every row over alternate scenes (``(start, end)`` times)."""
    return [
        {
            "type": "rect",
            "xref": "x",
            "yref": "paper",
            "x0": x0,
            "x1": x1,
            "y0": 0,
            "y1": 1,
            "fillcolor": SCENE_BAND_COLOR,
            "line": {"width": 0},
            "layer": "below",
        }
        for k, (x0, x1) in enumerate(spans)
        if k % 2 == 0
    ]


def timeline_figure(result: ScoreResult) -> Figure | None:
    """Per-frame scores over time, one row per metric, plus the scene-change score."""
    report, frames = result.report, result.frames
    # Colours follow the metric's place in the report, as on the rest of the page.
    colors = {m.name: metric_color(k) for k, m in enumerate(report.metrics)}
    metrics = [m for m in report.metrics if m.name in frames.columns]
    n = len(frames)
    if n == 0 or not metrics:
        return None
    times = frames["time"].to_numpy(np.float64)
    frame_no = frames["frame"].to_numpy(np.int64)
    step = frame_step(times)
    scene_score = None
    if "scene_score" in frames.columns:
        scene_score = frames["scene_score"].to_numpy(np.float64)
        if not np.isfinite(scene_score).any():
            scene_score = None
    rows: list[tuple[str, str | None]] = [(m.name, m.unit) for m in metrics]
    if scene_score is not None:
        rows.append(("scene change", "detector"))
    count = len(rows)
    layout = stacked_layout(
        [_label(label) + (f" ({_label(hint)})" if hint else "") for label, hint in rows]
    )
    decimated = n > EXACT_MAX_POINTS
    traces: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    notes: list[str] = []
    drawn_points = 0
    for i, m in enumerate(metrics):
        ax = axis_suffix(i)
        values = frames[m.name].to_numpy(np.float64)
        worst = report.worst_frames.get(m.name, ())
        worst_rows = np.flatnonzero(np.isin(frame_no, [w.frame for w in worst]))
        rows_drawn = drawn_rows(values, worst_rows)
        drawn_points = max(drawn_points, rows_drawn.size)
        finite = np.isfinite(values)
        traces.append(
            {
                "type": "scatter",
                # Markers too when values are missing: a lone point between gaps has no line.
                "mode": "lines" if finite.all() or decimated else "lines+markers",
                "x": times[rows_drawn].tolist(),
                "y": _values(values[rows_drawn]),
                "customdata": frame_no[rows_drawn].tolist(),
                "name": _label(m.name),
                "line": {"color": colors[m.name], "width": 1.4},
                "marker": {"size": 3},
                "xaxis": f"x{ax}",
                "yaxis": f"y{ax}",
                "hovertemplate": f"frame %{{customdata}}<br>%{{x:.3f}} s<br>{_label(m.name)} "
                "%{y:.4g}<extra></extra>",
            }
        )
        rings = [w for w in worst if w.value is not None]
        if rings:
            traces.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "x": [w.time for w in rings],
                    "y": [w.value for w in rings],
                    "customdata": [w.frame for w in rings],
                    "name": f"worst {_label(m.name)}",
                    "marker": {
                        "color": WORST_COLOR,
                        "size": 8,
                        "symbol": "circle-open",
                        "line": {"width": 2},
                    },
                    "xaxis": f"x{ax}",
                    "yaxis": f"y{ax}",
                    "hovertemplate": f"worst {_label(m.name)}<br>frame %{{customdata}}<br>"
                    "%{x:.3f} s · %{y:.4g}<extra></extra>",
                }
            )
        strips, posinf, other = nonfinite_shapes(values, times, step, ax)
        shapes += strips
        if posinf or other:
            notes.append(
                f"{m.name}: {nonfinite_counts_text(posinf, other)} frames have no point on the "
                "line; a strip along the top of the row marks where they are."
            )
    if scene_score is not None:
        ax = str(count)
        rows_drawn = drawn_rows(scene_score)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": times[rows_drawn].tolist(),
                "y": _values(scene_score[rows_drawn]),
                "customdata": frame_no[rows_drawn].tolist(),
                "name": "scene-change score",
                "line": {"color": "#64748b", "width": 1.2},
                "fill": "tozeroy",
                "fillcolor": "rgba(100,116,139,0.15)",
                "xaxis": f"x{ax}",
                "yaxis": f"y{ax}",
                "hovertemplate": "frame %{customdata}<br>%{x:.3f} s · %{y:.4g}<extra></extra>",
            }
        )
        threshold = report.run.options.scene_threshold
        shapes.append(
            {
                "type": "line",
                "xref": "paper",
                "yref": f"y{ax}",
                "x0": 0,
                "x1": 1,
                "y0": threshold,
                "y1": threshold,
                "line": {"color": WORST_COLOR, "width": 1, "dash": "dot"},
            }
        )
        layout[f"yaxis{ax}"]["range"] = [
            0,
            max(float(np.nanmax(scene_score)), threshold) * 1.08,
        ]
    shapes += scene_band_shapes((s.start_time, s.end_time) for s in report.scenes)
    end_of_time = float(times[-1]) + step
    for event in report.events:
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": event.start,
                "x1": event.end if event.end is not None else end_of_time,
                "y0": 0,
                "y1": 1,
                "fillcolor": EVENT_BAND_COLOR,
                "line": {"width": 0},
                "layer": "below",
                "label": {"text": _label(event.rule), "textposition": "top left"},
            }
        )
    layout["shapes"] = shapes
    if report.events:
        notes.append(f"Red bands mark the {len(report.events)} alert episode(s) of this session.")
    if decimated:
        notes.insert(0, decimation_note(n, drawn_points))
    return Figure("fig-timeline", traces, layout, notes, decimated)


# ---------------------------------------------------------------------------- distributions


def distribution_figure(
    index: int, metric: MetricInfo, values: np.ndarray, stats: MetricStats | None
) -> Figure | None:
    """Histogram (binned here) and ECDF of one metric's finite values, with mean, 5 % and 1 %
    lows marked."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.sort(values[np.isfinite(values)])
    if finite.size == 0:
        return None
    color = metric_color(index)
    counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS)
    percent = counts / finite.size * 100.0
    keep = counts > 0
    centers = (edges[:-1] + edges[1:]) / 2
    ecdf_x, ecdf_y = ecdf_points(finite)
    shapes, notes_on_plot = [], []
    marks = (
        ("mean", "mean", "solid", 0),
        ("p5", "5 % low", "dash", -14),
        ("p1", "1 % low", "dot", -28),
    )
    for key, label, dash, shift in marks:
        v = getattr(stats, key, None) if stats is not None else None
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
                    "color": WORST_COLOR if key != "mean" else INK,
                    "width": 1.2,
                    "dash": dash,
                },
            }
        )
        notes_on_plot.append(
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
            "type": "bar",
            "x": centers[keep].tolist(),
            "y": percent[keep].tolist(),
            "width": float(edges[1] - edges[0]),
            "customdata": np.stack([edges[:-1], edges[1:], counts], axis=1)[keep].tolist(),
            "marker": {"color": color, "opacity": 0.55},
            "name": "histogram",
            "hovertemplate": "%{customdata[0]:.4g} to %{customdata[1]:.4g}<br>"
            "%{y:.1f} % of frames (%{customdata[2]:,})<extra></extra>",
        },
        {
            "type": "scatter",
            "mode": "lines",
            "x": ecdf_x,
            "y": ecdf_y,
            "yaxis": "y2",
            "line": {"color": INK, "width": 1.6, "shape": "hv"},
            "name": "ECDF",
            "hovertemplate": "%{y:.2f} % of frames ≤ %{x:.4g}<extra>ECDF</extra>",
        },
    ]
    unit = f" ({_label(metric.unit)})" if metric.unit else ""
    layout = _layout(
        height=300,
        margin={"l": 56, "r": 56, "t": 26, "b": 45},
        bargap=0.04,
        xaxis=_axis(title={"text": _label(metric.name) + unit}),
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
        annotations=notes_on_plot,
    )
    notes = []
    decimated = len(ecdf_x) < finite.size
    if decimated:
        notes.append(ecdf_note(len(ecdf_x), finite.size))
    left_out = values.size - finite.size
    if left_out:
        notes.append(
            f"{left_out:,} non-finite values (+∞, −∞ or NaN) are not in the histogram or the "
            "cumulative line."
        )
    return Figure(f"fig-dist-{index}", traces, layout, notes, decimated)


# ---------------------------------------------------------------------------- alignment


def search_figure(alignment: Alignment | None) -> Figure | None:
    """The offset search curve: mismatch cost per candidate offset, the choice marked."""
    if alignment is None or alignment.search is None:
        return None
    offsets, costs = alignment.search.offsets, alignment.search.costs
    if not offsets or len(offsets) != len(costs):
        return None
    shapes = [
        {
            "type": "line",
            "xref": "x",
            "yref": "paper",
            "x0": alignment.offset_seconds,
            "x1": alignment.offset_seconds,
            "y0": 0,
            "y1": 1,
            "line": {"color": WORST_COLOR, "width": 1.5, "dash": "dash"},
        }
    ]
    trace = {
        "type": "scatter",
        "mode": "lines+markers",
        "x": list(offsets),
        "y": _values(np.array([np.nan if c is None else c for c in costs], dtype=np.float64)),
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
    notes = []
    if any(c is None for c in costs):
        notes.append("Offsets without a point had too little overlap to compare.")
    return Figure("fig-search", [trace], layout, notes)


# ---------------------------------------------------------------------------- agreement


def agreement_rows(gap: np.ndarray) -> np.ndarray:
    """Rows of the agreement plot: every row with a gap (not NaN) up to EXACT_MAX_POINTS;
    above, the AGREE_FAR_POINTS largest gaps and the rest evenly spaced. Sorted."""
    gap = np.asarray(gap, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(gap))
    if valid.size <= EXACT_MAX_POINTS:
        return valid
    far = valid[np.argsort(-gap[valid], kind="stable")[:AGREE_FAR_POINTS]]
    rest = np.setdiff1d(valid, far, assume_unique=True)
    spread = rest[np.rint(np.linspace(0, rest.size - 1, EXACT_MAX_POINTS - far.size)).astype(int)]
    return np.union1d(far, spread)


def _rounded(values: np.ndarray, digits: int = 6) -> list[float | None]:
    """Values for hover text, to ``digits`` significant digits (keeps the page small)."""
    return [
        None if not np.isfinite(v) else float(f"{v:.{digits}g}")
        for v in np.asarray(values, dtype=np.float64)
    ]


def agreement_figure(
    frames: pd.DataFrame, agreement: Agreement, figure_id: str = "fig-agree"
) -> Figure | None:
    """Each frame placed by its percentile under both metrics (the other metric across,
    TOPIQ up): on the diagonal they rank it alike. The frames and scenes' frames the
    agreement lists are ringed and numbered as on the page."""
    from topiq_video.agreement import percentiles

    metric, other = agreement.metric, agreement.other
    if metric not in frames.columns or other not in frames.columns or not len(frames):
        return None
    a = frames[metric].to_numpy(np.float64)
    b = frames[other].to_numpy(np.float64)
    both = ~np.isnan(a) & ~np.isnan(b)
    if not both.any():
        return None
    # The same ranks as the engine's: over the frames with a value on both metrics.
    pa = np.full(a.size, np.nan)
    pb = np.full(b.size, np.nan)
    pa[both] = percentiles(a[both])
    pb[both] = percentiles(b[both])
    rows = agreement_rows(np.abs(pa - pb))
    frame_no = frames["frame"].to_numpy(np.int64)
    times = frames["time"].to_numpy(np.float64)
    name, other_name = _label(metric), _label(other)
    hover = (
        "frame %{customdata[0]} · %{customdata[1]:.3f} s<br>"
        f"{name} %{{customdata[2]:.4g}} (beats %{{y:.1f}} %)<br>"
        f"{other_name} %{{customdata[3]:.4g}} (beats %{{x:.1f}} %)<extra></extra>"
    )
    traces: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": "frames",
            "x": np.round(pb[rows] * 100, 3).tolist(),
            "y": np.round(pa[rows] * 100, 3).tolist(),
            "customdata": [
                list(c)
                for c in zip(
                    frame_no[rows].tolist(),
                    np.round(times[rows], 3).tolist(),
                    _rounded(a[rows]),
                    _rounded(b[rows]),
                    strict=True,
                )
            ],
            "marker": {"color": AGREE_POINT_COLOR, "size": 5},
            "hovertemplate": hover,
        }
    ]
    listed = {f.frame for f in agreement.frames}
    marked = [
        ("listed frames", WORST_COLOR, "circle-open", list(enumerate(agreement.frames, 1))),
        (
            "scenes' frames",
            SCENE_FRAME_COLOR,
            "diamond-open",
            [
                (f"s{s.scene}", s.frame)
                for s in agreement.scenes
                if s.frame is not None and s.frame.frame not in listed
            ],
        ),
    ]
    for label, color, symbol, items in marked:
        if not items:
            continue
        traces.append(
            {
                "type": "scatter",
                "mode": "markers+text",
                "name": label,
                "x": [f.other_percentile * 100 for _, f in items],
                "y": [f.percentile * 100 for _, f in items],
                "text": [str(k) for k, _ in items],
                "textposition": "top center",
                "cliponaxis": False,  # a label above a frame at the top stays visible
                "textfont": {"color": color, "size": 11},
                "customdata": [[f.frame, f.time, f.value, f.other_value] for _, f in items],
                "marker": {"color": color, "size": 12, "symbol": symbol, "line": {"width": 2}},
                "hovertemplate": f"{label}<br>{hover}",
            }
        )
    diagonal = {
        "type": "line",
        "xref": "x",
        "yref": "y",
        "x0": 0,
        "y0": 0,
        "x1": 100,
        "y1": 100,
        "line": {"color": "#94a3b8", "width": 1, "dash": "dash"},
        "layer": "below",
    }
    layout = _layout(
        height=450,
        margin={"l": 60, "r": 20, "t": 34, "b": 50},
        xaxis=_axis(
            title={"text": f"{other_name}: % of frames it beats"},
            range=[-2, 102],
            dtick=25,
            zeroline=False,
            constrain="domain",
        ),
        yaxis=_axis(
            title={"text": f"{name}: % of frames it beats"},
            range=[-2, 102],
            dtick=25,
            zeroline=False,
            scaleanchor="x",
            constrain="domain",
        ),
        shapes=[diagonal],
        annotations=[
            {
                "x": 0,
                "y": 1,
                "xref": "paper",
                "yref": "paper",
                "xanchor": "left",
                "yanchor": "bottom",
                "yshift": 6,
                "text": f"above the diagonal: {name} ranks the frame higher; below: {other_name}",
                "showarrow": False,
                "font": {"size": 11, "color": "#64748b"},
            }
        ],
    )
    notes = []
    decimated = rows.size < int(both.sum())
    if decimated:
        notes.append(
            f"Decimated: {rows.size:,} of the {int(both.sum()):,} frames are drawn: the "
            f"{AGREE_FAR_POINTS:,} the two metrics rank furthest apart, and the rest spread "
            "evenly over the video. Every frame's values are in the per-frame table."
        )
    left_out = int((~both).sum())
    if left_out:
        notes.append(
            f"{left_out:,} frames without a value on both metrics (NaN) are not ranked or drawn."
        )
    return Figure(figure_id, traces, layout, notes, decimated)
