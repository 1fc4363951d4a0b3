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


def _value(frame: pd.DataFrame, column: str, i: int) -> Any:
    if column not in frame.columns:
        return None
    value = frame[column].iloc[i]
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value.item() if hasattr(value, "item") else value


def _href(item_id: str, status: str) -> str | None:
    if status == "done":
        return f"items/{item_id}/report.html"
    if status == "failed":
        return f"items/{item_id}/failed.json"
    return None


def _worst_first(frame: pd.DataFrame, metric: str, higher_is_better: bool) -> list[int]:
    """Row positions of done items with a mean, worst first."""
    column = f"{metric}_mean"
    if column not in frame.columns:
        return []
    values = frame[column].to_numpy(np.float64, na_value=np.nan)
    done = (frame["status"] == "done").to_numpy(bool) & np.isfinite(values)
    rows = np.flatnonzero(done)
    order = np.argsort(values[rows] if higher_is_better else -values[rows], kind="stable")
    return rows[order].tolist()


def _rows(frame: pd.DataFrame, metrics: list[MetricInfo]) -> tuple[list[ItemRow], int]:
    n = len(frame)
    order = list(range(n))
    if n > INDEX_MAX_ROWS:
        first = metrics[0] if metrics else None
        worst = _worst_first(frame, first.name, first.higher_is_better) if first else []
        failed = [i for i in order if frame["status"].iloc[i] == "failed"]
        rest = [i for i in order if i not in set(failed) | set(worst)]
        order = (failed + worst + rest)[:INDEX_MAX_ROWS]
    rows = []
    for i in order:
        get = lambda c, i=i: _value(frame, c, i)  # noqa: E731
        status = get("status")
        duration = get("duration_s")
        cells = [
            Cell(fmt_num(get("frames")), _sort_key(get("frames"))),
            Cell(fmt_time(duration), _sort_key(duration)),
        ]
        for m in metrics:
            for stat in TABLE_STATS:
                v = get(f"{m.name}_{stat}")
                cells.append(Cell(fmt_num(v), _sort_key(v)))
        texts = [get("label"), get("dist"), get("ref"), get("error"), get("id")]
        rows.append(
            ItemRow(
                id=get("id"),
                row=get("row"),
                label=get("label"),
                dist=get("dist"),
                ref=get("ref"),
                status=status,
                status_rank=STATUS_ORDER.get(status, 3),
                href=_href(get("id"), status),
                error=get("error"),
                text=" ".join(str(t) for t in texts if t).lower(),
                cells=cells,
            )
        )
    return rows, n - len(order)


def _worst(frame: pd.DataFrame, m: MetricInfo) -> list[WorstItem]:
    out = []
    for rank, i in enumerate(_worst_first(frame, m.name, m.higher_is_better)[:WORST_TITLES], 1):
        start = _value(frame, f"{m.name}_worst_scene_start_s", i)
        scene = _value(frame, f"{m.name}_worst_scene", i)
        scene_mean = _value(frame, f"{m.name}_worst_scene_mean", i)
        where = (
            f"scene {scene} at {fmt_time(start)}, mean {fmt_num(scene_mean)}"
            if scene is not None
            else "—"
        )
        out.append(
            WorstItem(
                rank=rank,
                label=_value(frame, "label", i),
                href=f"items/{_value(frame, 'id', i)}/report.html",
                mean=fmt_num(_value(frame, f"{m.name}_mean", i)),
                p5=fmt_num(_value(frame, f"{m.name}_p5", i)),
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
    rows, left_out = _rows(frame, infos)
    counts = {s: int((frame["status"] == s).sum()) if len(frame) else 0 for s in STATUS_ORDER}
    distributions = []
    for i, m in enumerate(infos):
        fig = catalog_figure(i, m, frame)
        if fig is not None:
            distributions.append((m, fig))
    worst = [(m, items) for m in infos if (items := _worst(frame, m))]
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
