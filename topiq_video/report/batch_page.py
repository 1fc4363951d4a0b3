"""A batch's ``index.html``: every item in a sortable, filterable table linking to its
report, the distribution of scores across the catalog, and the worst titles.

Built as the report page is (:mod:`topiq_video.report.render`): the same Jinja2 environment
(autoescape, ``StrictUndefined``), Content-Security-Policy, style sheet and page script
(sortable tables, figures from one JSON block) and embedded plotly.js, so it works offline.
Labels, paths and error messages come from manifests and files: untrusted text, escaped by
the template. Python code here never writes markup.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from markupsafe import Markup

from topiq_video.files import atomic_write_text
from topiq_video.report.figures import (
    HISTOGRAM_BINS,
    INK,
    Figure,
    _axis,
    _label,
    _layout,
    metric_color,
)
from topiq_video.report.render import (
    _STYLE_END,
    CSP,
    Cell,
    _environment,
    _inline_script,
    _plotly_js,
    _sort_key,
    _static,
    fmt_num,
    fmt_time,
)

if TYPE_CHECKING:
    import pandas as pd

    from topiq_video.result import MetricInfo

WORST_TITLES = 10
"""Lowest-scoring items listed per metric."""
INDEX_MAX_ROWS = 20_000
"""Items shown in the page's table (failed first, then the lowest scores); the catalog
holds them all."""
STATUS_ORDER = {"failed": 0, "done": 1, "skipped": 2}
TABLE_STATS = ("mean", "p5")
"""Per-metric columns of the items table."""


@dataclass(frozen=True)
class ItemRow:
    id: str
    row: int
    label: str
    dist: str
    ref: str | None
    status: str
    status_rank: int
    href: str | None
    error: str | None
    text: str  # what the filter searches, lower case
    cells: list[Cell]


@dataclass(frozen=True)
class WorstItem:
    rank: int
    label: str
    href: str
    mean: str
    p5: str
    scene: str


class _Columns:
    """The catalog's columns as Python lists (missing values as None), read once."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._cache: dict[str, list[Any]] = {}

    def __call__(self, name: str) -> list[Any]:
        if name not in self._cache:
            if name not in self.frame.columns:
                values: list[Any] = [None] * len(self.frame)
            else:
                series = self.frame[name]
                missing = series.isna().tolist()
                values = [None if m else v for v, m in zip(series.tolist(), missing, strict=True)]
            self._cache[name] = values
        return self._cache[name]


def _href(item_id: str, status: str) -> str | None:
    if status == "done":
        return f"items/{item_id}/report.html"
    if status == "failed":
        return f"items/{item_id}/failed.json"
    return None


def _worst_first(col: _Columns, metric: str, higher_is_better: bool) -> list[int]:
    """Row positions of done items with a finite mean, worst first."""
    means, status = col(f"{metric}_mean"), col("status")
    rows = [
        i
        for i, (v, s) in enumerate(zip(means, status, strict=True))
        if s == "done" and v is not None and np.isfinite(v)
    ]
    sign = 1.0 if higher_is_better else -1.0
    return sorted(rows, key=lambda i: sign * means[i])


def _rows(col: _Columns, metrics: list[MetricInfo]) -> tuple[list[ItemRow], int]:
    n = len(col.frame)
    order = list(range(n))
    if n > INDEX_MAX_ROWS:
        first = metrics[0] if metrics else None
        worst = _worst_first(col, first.name, first.higher_is_better) if first else []
        failed = [i for i, s in enumerate(col("status")) if s == "failed"]
        shown = set(failed) | set(worst)
        order = (failed + worst + [i for i in order if i not in shown])[:INDEX_MAX_ROWS]
    stats = [(m, stat, col(f"{m.name}_{stat}")) for m in metrics for stat in TABLE_STATS]
    ids, labels, status = col("id"), col("label"), col("status")
    frames, durations, errors = col("frames"), col("duration_s"), col("error")
    dists, refs, numbers = col("dist"), col("ref"), col("row")
    rows = []
    for i in order:
        cells = [
            Cell(fmt_num(frames[i]), _sort_key(frames[i])),
            Cell(fmt_time(durations[i]), _sort_key(durations[i])),
        ]
        cells += [Cell(fmt_num(values[i]), _sort_key(values[i])) for _, _, values in stats]
        texts = (labels[i], dists[i], refs[i], errors[i], ids[i])
        rows.append(
            ItemRow(
                id=ids[i],
                row=numbers[i],
                label=labels[i],
                dist=dists[i],
                ref=refs[i],
                status=status[i],
                status_rank=STATUS_ORDER.get(status[i], 3),
                href=_href(ids[i], status[i]),
                error=errors[i],
                text=" ".join(str(t) for t in texts if t).lower(),
                cells=cells,
            )
        )
    return rows, n - len(order)


def _worst(col: _Columns, m: MetricInfo) -> list[WorstItem]:
    out = []
    for rank, i in enumerate(_worst_first(col, m.name, m.higher_is_better)[:WORST_TITLES], 1):
        scene = col(f"{m.name}_worst_scene")[i]
        where = (
            f"scene {scene} at {fmt_time(col(f'{m.name}_worst_scene_start_s')[i])}, mean "
            f"{fmt_num(col(f'{m.name}_worst_scene_mean')[i])}"
            if scene is not None
            else "—"
        )
        out.append(
            WorstItem(
                rank=rank,
                label=col("label")[i],
                href=f"items/{col('id')[i]}/report.html",
                mean=fmt_num(col(f"{m.name}_mean")[i]),
                p5=fmt_num(col(f"{m.name}_p5")[i]),
                scene=where,
            )
        )
    return out


def catalog_figure(index: int, metric: MetricInfo, frame: pd.DataFrame) -> Figure | None:
    """Histogram (binned here) of the items' mean scores of one metric, with the median
    item marked."""
    column = f"{metric.name}_mean"
    if column not in frame.columns:
        return None
    values = frame[column].to_numpy(np.float64, na_value=np.nan)
    values = values[np.isfinite(values) & (frame["status"] == "done").to_numpy(bool)]
    if values.size == 0:
        return None
    bins = max(1, min(HISTOGRAM_BINS, values.size))
    counts, edges = np.histogram(values, bins=bins)
    keep = counts > 0
    centers = (edges[:-1] + edges[1:]) / 2
    width = float(edges[1] - edges[0]) if edges[1] > edges[0] else 1.0
    median = float(np.median(values))
    unit = f" ({_label(metric.unit)})" if metric.unit else ""
    layout = _layout(
        xaxis=_axis(title={"text": f"mean {_label(metric.name)} per item{unit}"}),
        yaxis=_axis(title={"text": "items"}, rangemode="tozero"),
        bargap=0.02,
        height=280,
        shapes=[
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": median,
                "x1": median,
                "y0": 0,
                "y1": 1,
                "line": {"color": INK, "width": 1.2, "dash": "dash"},
            }
        ],
        annotations=[
            {
                "x": median,
                "y": 1.0,
                "xref": "x",
                "yref": "paper",
                "yanchor": "bottom",
                "xanchor": "left",
                "text": "median item",
                "showarrow": False,
                "font": {"size": 10, "color": "#475467"},
            }
        ],
    )
    trace = {
        "type": "bar",
        "x": centers[keep].tolist(),
        "y": counts[keep].tolist(),
        "width": width,
        "customdata": np.stack([edges[:-1], edges[1:]], axis=1)[keep].tolist(),
        "marker": {"color": metric_color(index), "opacity": 0.7},
        "hovertemplate": "%{customdata[0]:.4g} to %{customdata[1]:.4g}<br>"
        "%{y:,} item(s)<extra></extra>",
    }
    return Figure(id=f"catalog-{index}", data=[trace], layout=layout)


def render_index(frame: pd.DataFrame, metrics: Mapping[str, MetricInfo], *, title: str) -> str:
    """The batch's page, as one self-contained HTML string."""
    infos = list(metrics.values())
    col = _Columns(frame)
    rows, left_out = _rows(col, infos)
    counts = {s: int((frame["status"] == s).sum()) if len(frame) else 0 for s in STATUS_ORDER}
    distributions = []
    for i, m in enumerate(infos):
        fig = catalog_figure(i, m, frame)
        if fig is not None:
            distributions.append((m, fig))
    worst = [(m, items) for m in infos if (items := _worst(col, m))]
    created = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    pills = [
        ("items", fmt_num(len(frame))),
        ("done", fmt_num(counts["done"])),
        ("failed", fmt_num(counts["failed"])),
        ("not run yet", fmt_num(counts["skipped"])),
        ("updated", created),
    ]
    context = {
        "csp": CSP,
        "css": Markup(_STYLE_END.sub(r"<\\/\1", _static("report.css") + _static("batch.css"))),
        "page_js": _inline_script(_static("report.js")),
        "batch_js": _inline_script(_static("batch.js")),
        "plotly_js": _inline_script(_plotly_js()),
        "title": title,
        "pills": pills,
        "metrics": infos,
        "stats": TABLE_STATS,
        "rows": rows,
        "left_out": left_out,
        "statuses": list(STATUS_ORDER),
        "distributions": distributions,
        "worst": worst,
        "worst_n": WORST_TITLES,
        "version": _version(),
        "figures": [f.to_json() for _, f in distributions],
    }
    return _environment().get_template("batch.html").render(context)


def _version() -> str:
    from topiq_video import __version__

    return __version__


def write_index(
    frame: pd.DataFrame,
    metrics: Mapping[str, MetricInfo],
    path: str | os.PathLike[str],
    *,
    title: str,
) -> Path:
    """Write the batch's page to ``path``, atomically."""
    return atomic_write_text(path, render_index(frame, metrics, title=title))


__all__ = ["catalog_figure", "render_index", "write_index"]
