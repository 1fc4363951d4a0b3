"""The self-contained HTML report page, rendered from a :class:`ScoreResult` alone.

A saved report (``report.json`` + ``frames.parquet`` + ``gallery/``) renders again without
the videos. The page is one file: plotly.js, the style sheet and the script are inlined,
pictures are ``data:`` URIs, and a Content-Security-Policy forbids every request, so it works
offline and leaks nothing when opened.

Everything from the inputs (file names, container tags, warnings, credits) is untrusted. The
Jinja2 templates escape every value (``autoescape``, with ``StrictUndefined`` so a mistake in
a template fails instead of printing nothing); JSON placed in a ``<script>`` element goes
through :func:`script_json` only. Python code here never writes markup.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import os
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from topiq_video.agreement import shown_frames
from topiq_video.files import atomic_write_text, display_text
from topiq_video.pipeline.options import GALLERY_SPACING_S
from topiq_video.report.figures import (
    Figure,
    agreement_figure,
    distribution_figure,
    metric_color,
    search_figure,
    timeline_figure,
)
from topiq_video.result import DIFF_CAPTION, DIFF_GAIN

if TYPE_CHECKING:
    from collections.abc import Callable

    from topiq_video.result import (
        Agreement,
        Alignment,
        CompareReport,
        DisagreeFrame,
        GalleryEntry,
        InputInfo,
        Interruption,
        MetricInfo,
        MetricStats,
        ModelInfo,
        Report,
        ScoreResult,
    )

logger = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'; media-src 'none'; "
    "object-src 'none'; frame-src 'none'; worker-src 'none'; base-uri 'none'; "
    "form-action 'none'"
)
"""Only what is inside the file may run or show: no request of any kind leaves the page."""
WORST_SHOWN = 3
"""Worst scenes and worst frames per metric in "where quality drops"."""
JSON_KWARGS: dict[str, Any] = {
    "allow_nan": False,
    "ensure_ascii": True,  # escapes U+2028/U+2029 and every other non-ASCII character
    "separators": (",", ":"),
    "sort_keys": False,
}
DEFAULT_TERMS_NOTE = (
    "TOPIQ weights are published by their authors under their own licence terms; check those "
    "terms before using scores from them commercially."
)
INTERRUPTION_LABELS = {
    "error": "stopped by an error",
    "interrupted": "interrupted",
    "terminated": "terminated",
    "connection_lost": "connection lost",
}
SCENE_SOURCES = {
    "reference": "cuts found in the reference",
    "input": "cuts found in the input",
    "file": "cuts imported from a cut list",
    "none": "no scene detection: the whole video is one scene",
}
_STAT_ROWS = (
    ("p1", "1 % low"),
    ("p5", "5 % low"),
    ("harmonic_mean", "harmonic mean"),
    ("min", "min"),
    ("median", "median"),
    ("max", "max"),
)
SHIFTED_HEADING = ("VMAF harmonic mean", "libvmaf, +1 shifted")
"""The name of VMAF's own pooling (``shifted_harmonic_mean``), and what it is."""
SHIFTED_LABEL = f"{SHIFTED_HEADING[0]} ({SHIFTED_HEADING[1]})"
SHIFTED_NOTE = (
    "Two harmonic means of VMAF: ours is taken on VMAF's own 0–100 scale; libvmaf's adds 1 to "
    "every frame's score first and takes 1 off the result. The +1 only matters for frames "
    "scoring near 0, so on this scale the two are nearly equal, and both stay close to the "
    "plain mean unless some frames score very low."
)
"""Beside a metric that has ``shifted_harmonic_mean`` (VMAF's own pooling)."""
MIN_SCENES_CORRELATED = 3
"""The correlation over scenes is shown from this many scenes on."""
SCENE_ZOOM_PAD = 0.15
"""A scene link shows this share of the scene's length either side (at least 0.5 s)."""
_SCRIPT_END = re.compile(r"</(script)", re.IGNORECASE)
_STYLE_END = re.compile(r"</(style)", re.IGNORECASE)


# ---------------------------------------------------------------------------- escaping, format


def script_json(value: Any) -> Markup:
    """JSON that is safe inside a ``<script>`` element: ``<``, ``>``, ``&``, ``'`` and every
    non-ASCII character (U+2028/U+2029 included) are escaped; NaN and infinity are refused.

    The templates' ``tojson`` filter is this function."""
    return htmlsafe_json_dumps(value, dumps=json.dumps, **JSON_KWARGS)


def fmt_num(value: Any, digits: int = 4) -> str:
    """A compact number: 4 significant digits, thousands separators, ±∞ and NaN spelled."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
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
    return f"{f:.{digits}g}"


def fmt_time(seconds: Any) -> str:
    """``m:ss.ss``, or ``h:mm:ss.s`` from an hour on."""
    if seconds is None:
        return "—"
    s = float(seconds)
    if not math.isfinite(s):
        return "—"
    sign = "−" if s < 0 else ""
    h, rem = divmod(abs(s), 3600)
    m, sec = divmod(rem, 60)
    if h >= 1:
        return f"{sign}{int(h)}:{int(m):02d}:{sec:04.1f}"
    return f"{sign}{int(m)}:{sec:05.2f}"


def _basename(path: str) -> str:
    name = PureWindowsPath(path).name if "\\" in path else path.rstrip("/").rsplit("/", 1)[-1]
    return name or path


def _sort_key(value: float | int | None) -> str:
    """A ``data-v`` attribute for the table sorter (empty: no value, sorted last)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"  # what JavaScript's parseFloat reads
    return repr(value)


# ---------------------------------------------------------------------------- view model


@dataclass(frozen=True)
class MetricView:
    index: int
    name: str
    unit: str
    color: str
    higher_is_better: bool
    description: str

    def value(self, v: float | None) -> str:
        text = fmt_num(v)
        return f"{text} {self.unit}" if self.unit and v is not None else text

    @property
    def hint(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        return f"{self.unit} · {direction}" if self.unit else direction

    @property
    def identical_means_posinf(self) -> bool:
        return self.name.lower().startswith(("psnr", "xpsnr"))


@dataclass(frozen=True)
class Card:
    metric: MetricView
    headline: str
    unit: str
    headline_label: str
    pooled_note: str | None
    stats: list[tuple[str, str]]
    footer: str
    wide_stats: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    stats_note: str | None = None


@dataclass(frozen=True)
class Chip:
    text: str
    href: str | None
    title: str
    kind: str  # "scene" or "frame"


@dataclass(frozen=True)
class Cell:
    text: str
    sort: str
    small: str | None = None
    style: str | None = None


@dataclass(frozen=True)
class SceneRow:
    index: int
    worst: bool
    cells: list[Cell]


@dataclass(frozen=True)
class ShotImage:
    label: str
    alt: str
    src: str | None  # None: the picture is not in the result
    name: str


@dataclass(frozen=True)
class Shot:
    anchor: str
    rank: int
    frame: int
    time: str
    value: str
    metric: MetricView
    images: list[ShotImage]


@dataclass(frozen=True)
class WorstRow:
    rank: int
    frame: int
    time: str
    value: str
    href: str
    where: str


@dataclass(frozen=True)
class GalleryGroup:
    metric: MetricView
    shots: list[Shot]
    worst: list[WorstRow]


def _metric_views(report: Report) -> list[MetricView]:
    infos: list[MetricInfo | str] = list(report.metrics)
    known = set(report.metric_names)
    for name in [*report.summary, *(g.metric for g in report.gallery)]:
        if name not in known:
            known.add(name)
            infos.append(name)
    return [metric_view(i, info) for i, info in enumerate(infos)]


def metric_view(index: int, info: MetricInfo | str) -> MetricView:
    """How the page shows the ``index``-th metric (a bare name: higher is better)."""
    if isinstance(info, str):
        return MetricView(index, info, "", metric_color(index), True, "")
    return MetricView(
        index,
        info.name,
        info.unit or "",
        metric_color(index),
        info.higher_is_better,
        info.description,
    )


def _nonfinite_parts(m: MetricView, s: MetricStats) -> list[tuple[int, str, str]]:
    """(count, short label, headline symbol) of each non-finite kind present, most first."""
    posinf = "identical (+∞)" if m.identical_means_posinf else "+∞"
    parts = [
        (s.posinf_count, posinf, "+∞"),
        (s.nan_count, "NaN", "NaN"),
        (s.neginf_count, "−∞", "−∞"),
    ]
    return sorted((p for p in parts if p[0]), key=lambda p: -p[0])


def headline(m: MetricView, s: MetricStats) -> tuple[str, str, str | None]:
    """(headline, its label, what was left out) of a metric card.

    The headline is the mean of the finite frames and says how many of all frames it pooled
    when some were non-finite. When finite frames are half or fewer of all frames, the
    headline is instead the most common non-finite value (e.g. +∞ for a PSNR where most
    frames are identical to the reference), and the mean of the rest is given beside it.
    """
    parts = _nonfinite_parts(m, s)
    total = s.count + sum(p[0] for p in parts)
    if total == 0:
        return "—", "no frames", None
    if not parts:
        return fmt_num(s.mean), "mean", None
    left_out = ", ".join(f"{n:,} {label}" for n, label, _ in parts)
    if s.count * 2 > total:
        return (
            fmt_num(s.mean),
            f"mean of {s.count:,} of {total:,} frames",
            f"{left_out} not in the mean.",
        )
    n, label, symbol = parts[0]
    rest = (
        f"Mean of the other {s.count:,} finite frames: {m.value(s.mean)}."
        if s.count
        else "No frame has a finite value."
    )
    return symbol, f"{n:,} of {total:,} frames {label}", f"{rest} Not in a mean: {left_out}."


def _card(m: MetricView, s: MetricStats) -> Card:
    big, label, note = headline(m, s)
    foot = [f"{s.count:,} finite frames"]
    for n, short, _ in _nonfinite_parts(m, s):
        foot.append(f"{n:,} {short}")
    shifted = s.shifted_harmonic_mean is not None
    return Card(
        metric=m,
        headline=big,
        unit=m.unit if big not in ("—", "NaN") else "",
        headline_label=label,
        pooled_note=note,
        stats=[(label_, m.value(getattr(s, key))) for key, label_ in _STAT_ROWS],
        footer=" · ".join(foot),
        wide_stats=[(SHIFTED_LABEL, m.value(s.shifted_harmonic_mean))] if shifted else [],
        stats_note=shifted_note(m, s) if shifted else None,
    )


def shifted_note(m: MetricView, s: MetricStats | None = None) -> str:
    """The note beside VMAF's two harmonic means, with this video's figures when given."""
    if s is None or None in (s.mean, s.harmonic_mean, s.shifted_harmonic_mean):
        return SHIFTED_NOTE
    return (
        f"{SHIFTED_NOTE} Here: mean {m.value(s.mean)}, harmonic mean "
        f"{m.value(s.harmonic_mean)}, libvmaf's {m.value(s.shifted_harmonic_mean)}."
    )


class _Anchors:
    """Which in-page targets exist, so that every link points at one."""

    def __init__(self, result: ScoreResult, metrics: Mapping[str, MetricView]) -> None:
        frames = result.frames
        self._frame_no = frames["frame"].to_numpy(np.int64) if len(frames) else np.zeros(0, int)
        self._scene_col = frames["scene"].to_numpy(np.int64) if "scene" in frames.columns else None
        self.scene_ids = {s.index for s in result.report.scenes}
        self.shots = {
            (g.metric, g.frame): gallery_anchor(metrics[g.metric], g.frame)
            for g in result.report.gallery
            if g.metric in metrics
        }
        self.scenes = {s.index: s for s in result.report.scenes}

    def scene_of(self, frame: int) -> int | None:
        if self._scene_col is not None:
            rows = np.flatnonzero(self._frame_no == frame)
            if rows.size:
                return int(self._scene_col[rows[0]])
        for s in self.scenes.values():  # no per-frame row: fall back to the scene's range
            if s.start_frame <= frame <= s.end_frame:
                return s.index
        return None

    def frame(self, metric: str, frame: int) -> tuple[str, str]:
        """(href, where it leads) for a frame: its picture, else its scene row, else the
        timeline."""
        shot = self.shots.get((metric, frame))
        if shot is not None:
            return f"#{shot}", "its picture in the gallery"
        scene = self.scene_of(frame)
        if scene is not None and scene in self.scene_ids:
            return f"#scene-{scene}", f"scene {scene} in the scene table"
        return "#timeline", "the timeline"


def gallery_anchor(m: MetricView, frame: int) -> str:
    return f"g-{m.index}-{frame}"


def _flagged_scenes(report: Report) -> set[int]:
    """Scenes badged as worst: the first few of each metric's worst-first ranking."""
    n = len(report.scenes)
    if n < 2:
        return set()
    keep = max(1, min(WORST_SHOWN, n // 4))
    return {i for ranked in report.worst_scenes.values() for i in ranked[:keep]}


def _hotspots(
    result: ScoreResult, metrics: list[MetricView], anchors: _Anchors
) -> list[tuple[MetricView, list[Chip]]]:
    report = result.report
    flagged = _flagged_scenes(report)
    rows = []
    for m in metrics:
        chips = []
        ranked = [i for i in report.worst_scenes.get(m.name, ()) if i in flagged]
        for idx in ranked[:WORST_SHOWN]:
            s = anchors.scenes.get(idx)
            if s is None:
                continue
            st = s.stats.get(m.name)
            chips.append(
                Chip(
                    f"scene {idx} · {fmt_time(s.start_time)}–{fmt_time(s.end_time)} · "
                    f"mean {m.value(st.mean if st else None)}",
                    f"#scene-{idx}",
                    f"scene {idx} in the scene table",
                    "scene",
                )
            )
        for w in report.worst_frames.get(m.name, ())[:WORST_SHOWN]:
            href, where = anchors.frame(m.name, w.frame)
            chips.append(
                Chip(
                    f"frame {w.frame} · {fmt_time(w.time)} · {m.value(w.number)}",
                    href,
                    f"go to {where}",
                    "frame",
                )
            )
        if chips:
            rows.append((m, chips))
    return rows


def _heat(value: float | None, lo: float, hi: float, higher_is_better: bool) -> str | None:
    """A red tint for a scene mean: the worse within [lo, hi], the stronger."""
    if value is None or not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return None
    t = (value - lo) / (hi - lo)
    badness = 1.0 - t if higher_is_better else t
    alpha = 0.32 * max(0.0, min(1.0, badness)) ** 1.5
    return f"background:rgba(220,38,38,{alpha:.3f})" if alpha > 0.01 else None


def _scene_rows(report: Report, metrics: list[MetricView]) -> list[SceneRow]:
    flagged = _flagged_scenes(report)
    ranges = {}
    for m in metrics:
        means = [s.stats[m.name].mean for s in report.scenes if m.name in s.stats]
        finite = [v for v in means if v is not None and math.isfinite(v)]
        ranges[m.name] = (min(finite), max(finite)) if finite else (math.nan, math.nan)
    rows = []
    for s in report.scenes:
        duration = s.end_time - s.start_time
        cells = [
            Cell(fmt_time(s.start_time), _sort_key(s.start_time), f"#{s.start_frame}"),
            Cell(fmt_time(s.end_time), _sort_key(s.end_time), f"#{s.end_frame}"),
            Cell(f"{fmt_num(duration, 3)} s", _sort_key(duration)),
            Cell(fmt_num(s.frame_count), _sort_key(s.frame_count)),
        ]
        for m in metrics:
            st = s.stats.get(m.name)
            mean = st.mean if st else None
            low = st.min if st else None
            cells.append(
                Cell(
                    fmt_num(mean),
                    _sort_key(mean),
                    None,
                    _heat(mean, *ranges[m.name], m.higher_is_better),
                )
            )
            cells.append(Cell(fmt_num(low), _sort_key(low)))
        rows.append(SceneRow(s.index, s.index in flagged, cells))
    return rows


def _data_uri(data: bytes) -> str:
    kind = "png" if data.startswith(b"\x89PNG") else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def pictures(
    images: Mapping[str, bytes], shown: Sequence[tuple[str, str]], subject: str
) -> list[ShotImage]:
    """(caption, file name) pairs as pictures; a name missing from ``images`` is shown as
    missing. ``subject`` ends each picture's alt text."""
    out = []
    for label, name in shown:
        data = images.get(name)
        out.append(
            ShotImage(
                label=label,
                alt=f"{label}, {subject}",
                src=_data_uri(data) if data else None,
                name=name,
            )
        )
    return out


def frame_pictures(
    images: Mapping[str, bytes],
    *,
    frame: int,
    ref_frame: int | None,
    dist_image: str | None,
    ref_image: str | None,
    diff_image: str | None,
    subject: str,
    diff_gain: int | None = DIFF_GAIN,
    reference: str = "reference",
    encode: str = "encode",
) -> list[ShotImage]:
    """A frame's pictures as the gallery lays them out: reference, encode, difference."""
    shown = []
    if ref_image:
        ref = f" · frame {ref_frame}" if ref_frame is not None else ""
        shown.append((f"{reference}{ref}", ref_image))
    if dist_image:
        shown.append((f"{encode} · frame {frame}", dist_image))
    if diff_image:
        gain = f" × {diff_gain}" if diff_gain else ""
        shown.append((f"difference{gain}", diff_image))
    return pictures(images, shown, subject)


def _number(value: float | None, flag: str | None) -> float | None:
    """A value as a float, its non-finite flag included (None: no value)."""
    if value is None and flag:
        return {"+inf": math.inf, "-inf": -math.inf}.get(flag, math.nan)
    return value


def _shot(
    g: GalleryEntry, m: MetricView, images: Mapping[str, bytes], diff_gain: int | None
) -> Shot:
    return Shot(
        anchor=gallery_anchor(m, g.frame),
        rank=g.rank,
        frame=g.frame,
        time=fmt_time(g.time),
        value=m.value(_number(g.value, g.value_nonfinite)),
        metric=m,
        images=frame_pictures(
            images,
            frame=g.frame,
            ref_frame=g.ref_frame,
            dist_image=g.dist_image,
            ref_image=g.ref_image,
            diff_image=g.diff_image,
            subject=f"{m.name} worst frame {g.rank}",
            diff_gain=diff_gain,
        ),
    )


def _gallery(
    result: ScoreResult, metrics: list[MetricView], anchors: _Anchors, diff_gain: int | None
) -> list[GalleryGroup]:
    report = result.report
    groups = []
    for m in metrics:
        entries = sorted((g for g in report.gallery if g.metric == m.name), key=lambda g: g.rank)
        shots = [_shot(g, m, result.images, diff_gain) for g in entries]
        worst = []
        for rank, w in enumerate(report.worst_frames.get(m.name, ()), 1):
            href, where = anchors.frame(m.name, w.frame)
            worst.append(WorstRow(rank, w.frame, fmt_time(w.time), m.value(w.number), href, where))
        if shots or worst:
            groups.append(GalleryGroup(m, shots, worst))
    return groups


# ---------------------------------------------------------------------------- agreement


@dataclass(frozen=True)
class SceneLink:
    """A scene, and the time range the timeline zooms to when it is clicked."""

    index: int
    span: str
    x0: float
    x1: float


def scene_link(index: int, start: float, end: float) -> SceneLink:
    """A link to a scene that shows it in the timeline, with some context either side."""
    pad = max((end - start) * SCENE_ZOOM_PAD, 0.5)
    return SceneLink(index, f"{fmt_time(start)}–{fmt_time(end)}", start - pad, end + pad)


@dataclass(frozen=True)
class AgreeFrame:
    """A frame two metrics rank far apart, as the page shows it."""

    anchor: str
    mark: str  # its label on the plot: "1", "2"... for the listed frames, "s4" for scene 4
    title: str
    frame: int  # the frame number the page counts in (the source's on the comparison page)
    frame_note: str | None  # the other frame number
    time: str
    value: str
    other_value: str
    percentile: str
    other_percentile: str
    favoured: str  # the metric that ranks it higher
    favours_first: bool
    gap: str
    scene: SceneLink | None
    images: list[ShotImage]


@dataclass(frozen=True)
class AgreeScene:
    scene: SceneLink
    mean: str
    other_mean: str
    rank: str
    other_rank: str
    favoured: str
    favours_first: bool
    frame: AgreeFrame | None


@dataclass(frozen=True)
class AgreementView:
    """Where two metrics disagree over one video (or one encode), ready for a template."""

    metric: MetricView
    other: MetricView
    frames_compared: str
    spearman: str
    pearson: str
    scene_spearman: str
    scenes_sentence: str | None
    other_note: str | None
    frames: list[AgreeFrame]
    scenes: list[AgreeScene]
    cards: list[AgreeFrame]  # every frame shown, once, with its pictures
    pictures_note: str | None
    has_diff: bool
    figure: Figure | None
    zoom: str | None  # the id of the figure scene links zoom, None: no links
    frame_heading: str
    time_heading: str


def fmt_share(p: float) -> str:
    """A percentile (share of frames beaten, 0 to 1) as a percentage."""
    return f"{p * 100:.1f} %"


def _correlation(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}".replace("-", "−")


def _agree_frame(
    f: DisagreeFrame,
    m: MetricView,
    o: MetricView,
    images: Mapping[str, bytes],
    *,
    anchor: str,
    mark: str,
    title: str,
    scene: SceneLink | None,
    on_source: bool,
    reference: str,
    encode: str,
) -> AgreeFrame:
    if on_source and f.ref_frame is not None:
        frame, note, t = f.ref_frame, f"encode frame {f.frame}", f.ref_time
    else:
        note = f"reference frame {f.ref_frame}" if f.ref_frame is not None else None
        frame, t = f.frame, f.time
    first = f.gap > 0
    return AgreeFrame(
        anchor=anchor,
        mark=mark,
        title=title,
        frame=frame,
        frame_note=note,
        time=fmt_time(t),
        value=m.value(_number(f.value, f.value_nonfinite)),
        other_value=o.value(_number(f.other_value, f.other_value_nonfinite)),
        percentile=fmt_share(f.percentile),
        other_percentile=fmt_share(f.other_percentile),
        favoured=m.name if first else o.name,
        favours_first=first,
        gap=f"{abs(f.gap) * 100:.0f} points",
        scene=scene,
        images=frame_pictures(
            images,
            frame=f.frame,
            ref_frame=f.ref_frame,
            dist_image=f.dist_image,
            ref_image=f.ref_image,
            diff_image=f.diff_image,
            subject=f"{title}, where {m.name} and {o.name} disagree",
            reference=reference,
            encode=encode,
        ),
    )


def agreement_view(
    agreement: Agreement,
    metrics: Mapping[str, MetricView],
    images: Mapping[str, bytes],
    *,
    anchor: Callable[[int], str],
    scene_of: Callable[[int], SceneLink | None],
    zoom: str | None,
    figure: Figure | None = None,
    on_source: bool = False,
    reference: str = "reference",
    encode: str = "encode",
) -> AgreementView | None:
    """The view of an agreement (None when no frame was compared). ``anchor`` names a
    frame's card from its frame number; ``scene_of`` gives a scene's link; ``on_source``:
    frames are counted and timed on the source (the comparison page)."""
    if agreement.frames_compared == 0:
        return None
    m = metrics.get(agreement.metric) or metric_view(len(metrics), agreement.metric)
    o = metrics.get(agreement.other) or metric_view(len(metrics) + 1, agreement.other)

    def view(f: DisagreeFrame, mark: str, title: str) -> AgreeFrame:
        return _agree_frame(
            f,
            m,
            o,
            images,
            anchor=anchor(f.frame),
            mark=mark,
            title=title,
            scene=scene_of(f.scene) if f.scene is not None else None,
            on_source=on_source,
            reference=reference,
            encode=encode,
        )

    frames = [view(f, str(k), f"#{k}") for k, f in enumerate(agreement.frames, 1)]
    cards = {f.frame: v for f, v in zip(agreement.frames, frames, strict=True)}
    scenes = []
    count = agreement.scenes_compared
    for s in agreement.scenes:
        link = scene_of(s.scene)
        if link is None:
            continue
        shown = None
        if s.frame is not None:
            shown = cards.get(s.frame.frame)
            if shown is None:
                shown = view(s.frame, f"s{s.scene}", f"scene {s.scene}")
                cards[s.frame.frame] = shown
        first = s.rank > s.other_rank  # rank 1 is the worst scene
        scenes.append(
            AgreeScene(
                scene=link,
                mean=m.value(s.mean),
                other_mean=o.value(s.other_mean),
                rank=f"{s.rank:,} of {count:,}",
                other_rank=f"{s.other_rank:,} of {count:,}",
                favoured=m.name if first else o.name,
                favours_first=first,
                frame=shown,
            )
        )
    if count >= MIN_SCENES_CORRELATED:
        scene_spearman = _correlation(agreement.scene_spearman)
        scenes_sentence = (
            f"Over the mean scores of {count:,} scenes, Spearman's ρ = {scene_spearman}."
        )
    else:
        scene_spearman = f"— ({count} scene{'' if count == 1 else 's'}: too few)"
        scenes_sentence = None
    other_note = None
    if not o.name.startswith("vmaf"):
        other_note = f"VMAF was not computed in this run, so {m.name} is held against {o.name}."
    return AgreementView(
        metric=m,
        other=o,
        frames_compared=fmt_num(agreement.frames_compared),
        spearman=_correlation(agreement.spearman),
        pearson=_correlation(agreement.pearson),
        scene_spearman=scene_spearman,
        scenes_sentence=scenes_sentence,
        other_note=other_note,
        frames=frames,
        scenes=scenes,
        cards=list(cards.values()),
        pictures_note=agreement.pictures_note,
        has_diff=any(f.diff_image for f in shown_frames(agreement)),
        figure=figure,
        zoom=zoom,
        frame_heading="source frame" if on_source else "frame",
        time_heading="source time" if on_source else "time",
    )


def _report_agreement(
    result: ScoreResult, metrics: Mapping[str, MetricView], zoom: str | None
) -> AgreementView | None:
    agreement = result.report.agreement
    if agreement is None:
        return None
    spans = {s.index: s for s in result.report.scenes}

    def scene_of(index: int) -> SceneLink | None:
        s = spans.get(index)
        return None if s is None else scene_link(index, s.start_time, s.end_time)

    return agreement_view(
        agreement,
        metrics,
        result.images,
        anchor=lambda frame: f"agree-{frame}",
        scene_of=scene_of,
        zoom=zoom,
        figure=agreement_figure(result.frames, agreement),
    )


def _alignment_rows(a: Alignment | None) -> list[tuple[str, str]]:
    if a is None:
        return []
    rows = [
        ("offset", f"{fmt_num(a.offset_frames)} frames · {fmt_num(a.offset_seconds)} s"),
        ("method", a.method),
        ("confidence", fmt_num(a.confidence, 3)),
        ("finding", a.message),
    ]
    p = a.pairing
    if p is not None:
        counts = ", ".join(f"{k}: {v:,}" for k, v in p.conversion_counts.items())
        rows += [
            ("frame-rate conversion", p.conversion + (f" ({counts} frames)" if counts else "")),
            ("paired frames", fmt_num(p.paired)),
            ("encode frames before / after the overlap", f"{p.dist_before:,} / {p.dist_after:,}"),
            ("reference frames before / after", f"{p.ref_before:,} / {p.ref_after:,}"),
            ("reference frames skipped inside the overlap", fmt_num(p.ref_skipped)),
            ("read to the end", "yes" if p.complete else "no"),
        ]
    rows.append(("scaling", a.scaling or "none"))
    if a.width and a.height:
        rows.append(("compared at", f"{a.width}×{a.height}"))
    return rows


def _input_rows(info: InputInfo) -> list[tuple[str, str]]:
    c, d = info.color, info.decode
    rate = info.fps_exact or fmt_num(info.fps)
    colour = f"{c.matrix} matrix, {c.range} range, {c.transfer} transfer, {c.primaries} primaries"
    rows = [
        ("file", info.path),
        ("container", info.container),
        ("codec", info.codec),
        ("size", f"{info.width}×{info.height}"),
        ("pixel format", f"{info.pix_fmt} ({info.bit_depth}-bit)"),
        ("frame rate", f"{rate} fps" + (" (variable)" if info.is_vfr else "")),
        ("time base", info.time_base),
        ("start time", f"{fmt_num(info.start_time)} s"),
        ("duration", fmt_time(info.duration) if info.duration is not None else "—"),
        ("frames", fmt_num(info.frame_count)),
        ("colour", colour + (" (guessed: untagged)" if c.guessed else "")),
        ("rotation", f"{info.rotation}°"),
        ("scan", info.scan_type),
        ("live", "yes" if info.is_live else "no"),
        ("frames decoded", fmt_num(d.frames_decoded)),
        ("decode errors", fmt_num(d.decode_errors)),
        ("corrupt / lost frames", f"{d.corrupt_frames:,} / {d.lost_frames:,}"),
    ]
    if d.gaps:
        rows.append(
            (
                "timestamp gaps",
                "; ".join(
                    f"{g.missing:,} missing at frame {g.at_frame} ({fmt_time(g.at_time)})"
                    for g in d.gaps
                ),
            )
        )
    if d.truncated_at is not None:
        rows.append(("truncated at frame", fmt_num(d.truncated_at)))
    if d.stopped_early:
        rows.append(("stopped early", d.stopped_early))
    if d.error_messages:
        rows.append(("decoder messages", " | ".join(d.error_messages)))
    if d.bytes_read is not None:
        rows.append(("bytes read", fmt_num(d.bytes_read)))
    return rows


def _inputs(report: Report) -> dict[str, Any]:
    return probe_table(
        [
            (label, report.inputs[k])
            for k, label in (("dist", "encode"), ("ref", "reference"))
            if k in report.inputs
        ]
    )


def probe_table(columns: Sequence[tuple[str, InputInfo | None]]) -> dict[str, Any]:
    """The inputs side by side: a column per (heading, input); None: not probed."""
    per_col = [dict(_input_rows(info)) if info is not None else {} for _, info in columns]
    labels: list[str] = []
    for rows in per_col:
        labels += [k for k in rows if k not in labels]
    rows = [(label, [r.get(label, "—") for r in per_col]) for label in labels]
    metadata = [info.metadata if info is not None else {} for _, info in columns]
    tag_keys: list[str] = []
    for tags_of in metadata:
        tag_keys += [t for t in tags_of if t not in tag_keys]
    tags = [(t, [tags_of.get(t, "—") for tags_of in metadata]) for t in tag_keys]
    return {"columns": [label for label, _ in columns], "rows": rows, "tags": tags}


def _models(models: Sequence[ModelInfo]) -> list[dict[str, Any]]:
    out = []
    for model in models:
        rows = [
            ("name", model.name),
            ("mode", model.mode),
            ("trained on", model.train_set),
            ("weights file", model.weights_file or "—"),
            ("sha256", model.sha256 or "—"),
            ("weights from", model.weights_source or "—"),
            ("device", model.device),
            ("precision", model.precision),
            ("batch size", fmt_num(model.batch_size)),
        ]
        out.append({"name": model.name, "rows": rows, "terms": model.terms or DEFAULT_TERMS_NOTE})
    return out


def _run(report: Report | CompareReport) -> dict[str, Any]:
    run = report.run
    rows = [
        ("topiq-video", run.tool_version),
        ("created", run.created),
        ("took", f"{fmt_num(run.duration_s)} s" if run.duration_s is not None else "—"),
        ("scenes", SCENE_SOURCES.get(report.scene_source, report.scene_source)),
    ]
    options = json.dumps(dataclasses.asdict(run.options), indent=1, ensure_ascii=False, default=str)
    command = shlex.join(run.command) if run.command else None
    return {"rows": rows, "command": command, "options": options}


def _interruption(i: Interruption | None) -> dict[str, Any] | None:
    if i is None:
        return None
    scored = f"{i.frames_scored:,}"
    if i.frames_expected is not None:
        scored += f" of {i.frames_expected:,} expected"
    return {
        "kind": i.kind,
        "label": INTERRUPTION_LABELS.get(i.kind, i.kind),
        "message": i.message,
        "frames": scored,
        "at": fmt_time(i.at_time) if i.at_time is not None else None,
    }


def _pills(report: Report, n_frames: int) -> list[tuple[str, str]]:
    dist = report.inputs.get("dist")
    pills = [("mode", "full-reference" if report.full_reference else "no-reference")]
    for model in report.models:
        pills.append(("model", model.name))
        pills.append(("on", f"{model.device} {model.precision}"))
    if dist is not None:
        pills.append(("size", f"{dist.width}×{dist.height}"))
        pills.append(("codec", dist.codec))
    pills.append(("frames scored", fmt_num(n_frames)))
    if dist is not None and dist.duration is not None:
        pills.append(("duration", fmt_time(dist.duration)))
    pills.append(("created", report.run.created))
    return pills


# ---------------------------------------------------------------------------- page


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("topiq_video.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # A file name with undecodable bytes must not stop the page being written as UTF-8.
        finalize=lambda v: display_text(v) if type(v) is str else v,
    )
    env.filters["tojson"] = script_json
    env.filters["num"] = fmt_num
    env.filters["time"] = fmt_time
    return env


@cache
def _static(name: str) -> str:
    return resources.files("topiq_video.report").joinpath("static", name).read_text("utf-8")


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _inline_script(text: str) -> Markup:
    """Trusted package code placed in a ``<script>``: nothing in it may close the element."""
    return Markup(_SCRIPT_END.sub(r"<\\/\1", text))


def page_assets() -> dict[str, Any]:
    """The parts every page inlines: its policy, style sheet, page script and plotly.js."""
    return {
        "csp": CSP,
        "css": Markup(_STYLE_END.sub(r"<\\/\1", _static("report.css"))),
        "page_js": _inline_script(_static("report.js")),
        "plotly_js": _inline_script(_plotly_js()),
    }


def render_html(result: ScoreResult) -> str:
    """The report page of a result, as one self-contained HTML string."""
    started = time.perf_counter()
    report = result.report
    metrics = _metric_views(report)
    by_name = {m.name: m for m in metrics}
    anchors = _Anchors(result, by_name)
    dist = report.inputs.get("dist")

    timeline = timeline_figure(result)
    infos = {i.name: i for i in report.metrics}
    scored = [m for m in metrics if m.name in infos]  # metrics with a column of scores
    distributions = []
    for m in scored:
        if m.name not in result.frames.columns:
            continue
        values = result.frames[m.name].to_numpy(np.float64)
        fig = distribution_figure(m.index, infos[m.name], values, report.summary.get(m.name))
        if fig is not None:
            distributions.append((m, fig))
    search = search_figure(report.alignment)
    agreement = _report_agreement(result, by_name, timeline.id if timeline else None)
    figures: list[Figure] = [
        f
        for f in (
            timeline,
            *(f for _, f in distributions),
            agreement.figure if agreement else None,
            search,
        )
        if f is not None
    ]
    gallery = _gallery(result, metrics, anchors, DIFF_GAIN)
    sections = [
        ("summary", "Summary"),
        ("timeline", "Timeline"),
        ("scenes", "Scenes"),
        ("distribution", "Distribution"),
        ("gallery", "Worst frames"),
        *([("agreement", "Where metrics disagree")] if agreement else []),
        ("alignment", "Alignment"),
        ("inputs", "Inputs & model"),
    ]
    context = {
        **page_assets(),
        "dist_name": _basename(dist.path) if dist else "input",
        "ref_name": _basename(report.inputs["ref"].path) if report.full_reference else None,
        "title_tag": dist.metadata.get("title") if dist else None,
        "pills": _pills(report, len(result.frames)),
        "sections": sections,
        "interruption": _interruption(report.interruption),
        "warnings": list(report.warnings),
        "has_alignment": report.alignment is not None,
        "cards": [_card(m, report.summary[m.name]) for m in metrics if m.name in report.summary],
        "hotspots": _hotspots(result, metrics, anchors),
        "timeline": timeline,
        "scene_threshold": report.run.options.scene_threshold,
        "has_scene_scores": timeline is not None
        and any(t.get("name") == "scene-change score" for t in timeline.data),
        "scene_metrics": scored,
        "scene_rows": _scene_rows(report, scored),
        "scene_source": SCENE_SOURCES.get(report.scene_source, report.scene_source),
        "distributions": distributions,
        "gallery": gallery,
        "has_diff": any(g.diff_image for g in report.gallery),
        "diff_caption": DIFF_CAPTION,
        "agreement": agreement,
        # How far apart the engine keeps the listed frames (the result does not record it).
        "agree_spacing": fmt_num(GALLERY_SPACING_S),
        "alignment_rows": _alignment_rows(report.alignment),
        "search": search,
        "inputs": _inputs(report),
        "models": _models(report.models),
        "metric_infos": metrics,
        "run": _run(report),
        "credits": report.credits,
        "version": report.run.tool_version,
        "figures": [f.to_json() for f in figures],
    }
    page = _environment().get_template("report.html").render(context)
    logger.debug(
        "rendered the report page: %.1f MB in %.2f s",
        len(page) / 1e6,
        time.perf_counter() - started,
    )
    return page


def write_html(result: ScoreResult, path: str | os.PathLike[str]) -> Path:
    """Write the report page of a result to ``path``, atomically."""
    return atomic_write_text(path, render_html(result))


__all__ = ["CSP", "fmt_num", "fmt_time", "headline", "render_html", "script_json", "write_html"]
