"""The self-contained HTML page of an encoder comparison, rendered from a :class:`CompareResult`.

It is built as the report page is (:mod:`topiq_video.report.render`): the same Jinja2
environment (autoescape, ``StrictUndefined``), the same Content-Security-Policy, style sheet,
page script and embedded plotly.js, JSON in ``<script>`` only through ``script_json``, and
figures that stay small at any length (:mod:`topiq_video.report.compare_figures`). Labels,
file names, tags, warnings and errors come from files and the command line: untrusted text,
escaped by the templates. Python code here never writes markup.

Sections with nothing to show are left out, with their link in the table of contents: the
per-scene differences with fewer than two encodes scored, the rate-quality section without
an encode of known bitrate, the gallery without pictures.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from topiq_video.files import atomic_write_text
from topiq_video.report.compare_figures import (
    STAT_NAMES,
    VERDICT_COLORS,
    compare_distribution_figure,
    compare_timeline_figure,
    encode_color,
    encode_series,
    rd_figure,
    scene_bd_figure,
    whisker_figure,
)
from topiq_video.report.figures import Figure
from topiq_video.report.render import (
    DEFAULT_TERMS_NOTE,
    SCENE_SOURCES,
    SHIFTED_HEADING,
    AgreementView,
    Cell,
    MetricView,
    SceneLink,
    ShotImage,
    _alignment_rows,
    _basename,
    _data_uri,
    _environment,
    _interruption,
    _models,
    _run,
    _sort_key,
    agreement_view,
    fmt_num,
    fmt_time,
    headline,
    metric_view,
    page_assets,
    probe_table,
    scene_link,
    shifted_note,
)
from topiq_video.result import DIFF_CAPTION
from topiq_video.stats import VERDICT_BETTER, VERDICT_NO_DATA, VERDICT_SAME, VERDICT_WORSE

if TYPE_CHECKING:
    from topiq_video.bdrate import BDResult
    from topiq_video.result import (
        CompareGalleryEntry,
        CompareReport,
        CompareResult,
        EncodeResult,
        MetricComparison,
        MetricStats,
    )
    from topiq_video.stats import Difference

logger = logging.getLogger(__name__)

LOSSES_SHOWN = 10
"""Rows of each "where it loses most" table (the worst scenes first)."""
LOSSES_OPEN = 4
"""Up to this many encodes compared, every "where it loses most" table starts open; with
more (a ladder of encodes) they start closed, one click away."""
ROLE_ORDER = ("source", "baseline", "encode", "diff")
"""How a gallery entry's pictures are laid out, left to right (other roles follow)."""
VERDICT_CLASSES = {
    VERDICT_BETTER: "v-better",
    VERDICT_WORSE: "v-worse",
    VERDICT_SAME: "v-same",
    VERDICT_NO_DATA: "v-none",
}


# ---------------------------------------------------------------------------- formatting


def fmt_signed(value: float | None, unit: str = "") -> str:
    """A difference with its sign always written (+, − or ±0)."""
    if value is None or not math.isfinite(value):
        return fmt_num(value)
    sign = "+" if value > 0 else "−" if value < 0 else "±"
    text = sign + fmt_num(abs(value))
    return f"{text} {unit}" if unit else text


def fmt_bitrate(bits_per_second: float | None) -> str:
    if bits_per_second is None or not math.isfinite(bits_per_second):
        return "—"
    return f"{fmt_num(bits_per_second / 1000)} kbit/s"


def fmt_bytes(size: int | None) -> str:
    if size is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{fmt_num(size / scale, 3)} {unit}"
    return f"{size:,} B"


def _interval(d: Difference, unit: str) -> str:
    if d.low is None or d.high is None:
        return "—"
    text = f"[{fmt_signed(d.low)}, {fmt_signed(d.high)}]"
    return f"{text} {unit}" if unit else text


# ---------------------------------------------------------------------------- view model


@dataclass(frozen=True)
class EncodeView:
    index: int
    label: str
    color: str
    is_baseline: bool
    path: str
    name: str
    encoder: str
    rate: str
    bitrate: str
    size: str
    duration: str
    frames: str
    alignment: str
    error: str | None
    status: str  # "scored", "failed" (nothing scored) or "partial" (broke off)
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class DiffView:
    mean: str
    interval: str
    verdict: str
    css: str
    detail: str  # frame pairs, and what was left out
    remark: str | None  # the part of the detail worth showing under the number


@dataclass(frozen=True)
class SummaryRow:
    encode: EncodeView
    cells: list[Cell]
    difference: DiffView | None
    tally: str | None


@dataclass(frozen=True)
class SummaryTable:
    metric: MetricView
    confidence: str
    harmonic: bool
    rows: list[SummaryRow]
    shifted: tuple[str, str] | None = None  # VMAF's own pooling's heading, when a row has it
    note: str | None = None


@dataclass(frozen=True)
class LossRow:
    rank: int
    scene: SceneLink
    frames: str
    baseline_mean: str
    encode_mean: str
    difference: DiffView


@dataclass(frozen=True)
class LossTable:
    encode: EncodeView
    metric: MetricView
    rows: list[LossRow]
    summary: str


@dataclass(frozen=True)
class SceneGroup:
    metric: MetricView
    figure: Figure | None
    losses: list[LossTable]


@dataclass(frozen=True)
class BDCell:
    value: str | None
    reason: str | None
    overlap: str


@dataclass(frozen=True)
class BDRow:
    encoder: str
    baseline: str
    metric: MetricView
    stat: str
    rate: BDCell
    metric_delta: BDCell
    notes: list[str]


@dataclass(frozen=True)
class CompareShot:
    anchor: str
    rank: int
    encode: EncodeView
    baseline: str
    metric: MetricView
    frame: int
    time: str
    scene: SceneLink | None
    value: str
    baseline_value: str
    difference: str
    images: list[ShotImage]


@dataclass(frozen=True)
class ShotGroup:
    encode: EncodeView
    metric: MetricView
    shots: list[CompareShot]


def _encode_view(i: int, e: EncodeResult, baseline: str) -> EncodeView:
    if e.error and not e.frames_scored:
        status = "failed"
    elif e.error:
        status = "partial"
    else:
        status = "scored"
    a = e.alignment
    if a is None:
        aligned = "—"
    else:
        aligned = f"{fmt_num(a.offset_frames)} frames ({fmt_num(a.offset_seconds)} s)"
        if a.pairing is not None:
            aligned += f" · {a.pairing.conversion}"
    return EncodeView(
        index=i,
        label=e.label,
        color=encode_color(i),
        is_baseline=e.label == baseline,
        path=e.path,
        name=_basename(e.path),
        encoder=e.encoder or "—",
        rate="—" if e.rate is None else f"{e.rate:g}",
        bitrate=fmt_bitrate(e.bitrate),
        size=fmt_bytes(e.file_size),
        duration=fmt_time(e.duration) if e.duration is not None else "—",
        frames=fmt_num(e.frames_scored),
        alignment=aligned,
        error=e.error,
        status=status,
        warnings=e.warnings,
    )


def _diff_view(d: Difference, unit: str) -> DiffView:
    remarks = []
    if d.dropped:
        remarks.append(f"{d.dropped:,} frame pairs left out (non-finite)")
    remarks += list(d.notes)
    return DiffView(
        mean=fmt_signed(d.mean, unit) if d.mean is not None else "—",
        interval=_interval(d, unit),
        verdict=d.verdict,
        css=VERDICT_CLASSES.get(d.verdict, "v-none"),
        detail="; ".join([f"mean of {d.n:,} frame pairs", *remarks]),
        remark="; ".join(remarks) or None,
    )


def _stat_cell(m: MetricView, s: MetricStats | None, key: str) -> Cell:
    value = getattr(s, key) if s is not None else None
    return Cell(m.value(value), _sort_key(value))


def _summary_tables(
    report: CompareReport, metrics: list[MetricView], encodes: list[EncodeView]
) -> list[SummaryTable]:
    by_label = {e.label: e for e in report.encodes}
    comparisons: dict[tuple[str, str], MetricComparison] = {
        (c.label, mc.metric): mc for c in report.comparisons for mc in c.metrics
    }
    tables = []
    for m in metrics:
        harmonic = any(
            (s := e.summary.get(m.name)) is not None and s.harmonic_mean is not None
            for e in report.encodes
        )
        shifted = any(
            (s := e.summary.get(m.name)) is not None and s.shifted_harmonic_mean is not None
            for e in report.encodes
        )
        confidence = None
        rows = []
        for view in encodes:
            e = by_label[view.label]
            s = e.summary.get(m.name)
            if s is not None:
                big, label, _ = headline(m, s)
                mean = Cell(
                    f"{big} {m.unit}".strip() if big not in ("—", "NaN") else big,
                    _sort_key(s.mean),
                    None if label == "mean" else label,
                )
            else:
                mean = Cell("—", "")
            cells = [mean, _stat_cell(m, s, "p5")]
            if harmonic:
                cells.append(_stat_cell(m, s, "harmonic_mean"))
            if shifted:
                cells.append(_stat_cell(m, s, "shifted_harmonic_mean"))
            mc = comparisons.get((view.label, m.name))
            diff = tally = None
            if mc is not None:
                diff = _diff_view(mc.overall, m.unit)
                confidence = confidence or mc.overall.confidence
                tally = f"{mc.won:,} / {mc.tied:,} / {mc.lost:,}"
                if mc.no_data:
                    tally += f" ({mc.no_data:,} without data)"
            rows.append(SummaryRow(view, cells, diff, tally))
        tables.append(
            SummaryTable(
                m,
                f"{(confidence or 0.95) * 100:g} %",
                harmonic,
                rows,
                SHIFTED_HEADING if shifted else None,
                shifted_note(m) if shifted else None,
            )
        )
    return tables


def _scene_link(index: int, spans: Mapping[int, tuple[float, float]]) -> SceneLink | None:
    if index not in spans:
        return None
    return scene_link(index, *spans[index])


def _loss_table(
    view: EncodeView,
    m: MetricView,
    mc: MetricComparison,
    spans: Mapping[int, tuple[float, float]],
    baseline: EncodeResult | None,
    encode: EncodeResult,
) -> LossTable:
    ranked = sorted(
        (d for d in mc.scenes if d.difference.mean is not None and d.scene in spans),
        key=lambda d: (d.difference.mean, d.scene),
    )

    def scene_mean(e: EncodeResult | None, index: int) -> str:
        if e is None:
            return "—"
        s = next((s for s in e.scenes if s.index == index), None)
        st = s.stats.get(m.name) if s is not None else None
        return m.value(st.mean if st is not None else None)

    rows = []
    for rank, d in enumerate(ranked[:LOSSES_SHOWN], 1):
        link = _scene_link(d.scene, spans)
        assert link is not None  # filtered above
        rows.append(
            LossRow(
                rank,
                link,
                fmt_num(d.difference.n),
                scene_mean(baseline, d.scene),
                scene_mean(encode, d.scene),
                _diff_view(d.difference, m.unit),
            )
        )
    shown = f"the {len(rows)} worst of {len(ranked):,}" if len(ranked) > len(rows) else "all"
    summary = (
        f"{view.label} is worse than the baseline in {mc.lost:,} of {len(mc.scenes):,} scenes, "
        f"better in {mc.won:,}, indistinguishable in {mc.tied:,}; {shown} scenes with data "
        "are listed, the lowest difference first."
    )
    return LossTable(view, m, rows, summary)


def _scene_groups(
    report: CompareReport,
    metrics: list[MetricView],
    encodes: Mapping[str, EncodeView],
    spans: Mapping[int, tuple[float, float]],
) -> list[SceneGroup]:
    infos = {i.name: i for i in report.metrics}
    by_label = {e.label: e for e in report.encodes}
    baseline = by_label.get(report.baseline)
    groups = []
    for m in metrics:
        pairs = [
            (c.label, mc)
            for c in report.comparisons
            for mc in c.metrics
            if mc.metric == m.name and c.label in by_label
        ]
        if not pairs:
            continue
        figure = whisker_figure(m.index, infos[m.name], pairs, spans) if m.name in infos else None
        losses = [
            _loss_table(encodes[label], m, mc, spans, baseline, by_label[label])
            for label, mc in pairs
            if label in encodes
        ]
        groups.append(SceneGroup(m, figure, losses))
    return groups


def _bd_cell(r: BDResult, unit: str) -> BDCell:
    overlap = "—" if r.overlap_fraction is None else f"{r.overlap_fraction * 100:.0f} %"
    if r.value is None:
        return BDCell(None, r.reason or "no value", overlap)
    return BDCell(fmt_signed(r.value, unit), None, overlap)


def _bd_rows(report: CompareReport, metrics: Mapping[str, MetricView]) -> list[BDRow]:
    rows = []
    for e in report.bd:
        m = metrics.get(e.metric)
        if m is None:
            continue
        notes: list[str] = []
        for r in (e.bd_rate, e.bd_metric):
            if r.hull_used_a:
                notes.append(f"convex hull used for {e.baseline} ({r.kind})")
            if r.hull_used_b:
                notes.append(f"convex hull used for {e.encoder} ({r.kind})")
            notes += list(r.notes)
        rows.append(
            BDRow(
                encoder=e.encoder,
                baseline=e.baseline,
                metric=m,
                stat=STAT_NAMES.get(e.stat, e.stat),
                rate=_bd_cell(e.bd_rate, "%"),
                metric_delta=_bd_cell(e.bd_metric, m.unit),
                notes=list(dict.fromkeys(notes)),
            )
        )
    return rows


def _group_colors(report: CompareReport) -> dict[str, str]:
    """An RD group's colour: that of its first encode (groups are encoders, or the label of
    an encode without one)."""
    colors: dict[str, str] = {}
    for i, e in enumerate(report.encodes):
        colors.setdefault(e.encoder if e.encoder is not None else e.label, encode_color(i))
    return colors


def _gallery_anchor(entry: CompareGalleryEntry, encode: EncodeView, m: MetricView) -> str:
    return f"g-{encode.index}-{m.index}-{entry.rank}"


def _shot(
    g: CompareGalleryEntry,
    encode: EncodeView,
    m: MetricView,
    images: Mapping[str, bytes],
    spans: Mapping[int, tuple[float, float]],
) -> CompareShot:
    labels = {
        "source": f"source · frame {g.ref_frame}",
        "baseline": f"baseline · {g.baseline}",
        "encode": g.label,
        "diff": "difference from the baseline",
    }
    roles = [r for r in ROLE_ORDER if r in g.images] + [r for r in g.images if r not in ROLE_ORDER]
    pictures = []
    for role in roles:
        name = g.images[role]
        data = images.get(name)
        label = labels.get(role, role)
        pictures.append(
            ShotImage(
                label=label,
                alt=f"{label}, source frame {g.ref_frame}",
                src=_data_uri(data) if data else None,
                name=name,
            )
        )
    delta = (
        g.value - g.baseline_value if g.value is not None and g.baseline_value is not None else None
    )
    return CompareShot(
        anchor=_gallery_anchor(g, encode, m),
        rank=g.rank,
        encode=encode,
        baseline=g.baseline,
        metric=m,
        frame=g.ref_frame,
        time=fmt_time(g.time),
        scene=_scene_link(g.scene, spans) if g.scene is not None else None,
        value=m.value(g.value),
        baseline_value=m.value(g.baseline_value),
        difference=fmt_signed(delta, m.unit),
        images=pictures,
    )


def _gallery(
    result: CompareResult,
    metrics: Mapping[str, MetricView],
    encodes: Mapping[str, EncodeView],
    spans: Mapping[int, tuple[float, float]],
) -> list[ShotGroup]:
    groups: dict[tuple[str, str], list[CompareGalleryEntry]] = {}
    for g in result.report.gallery:
        if g.label in encodes and g.metric in metrics:
            groups.setdefault((g.label, g.metric), []).append(g)
    out = []
    for (label, metric), entries in sorted(
        groups.items(), key=lambda kv: (encodes[kv[0][0]].index, metrics[kv[0][1]].index)
    ):
        e, m = encodes[label], metrics[metric]
        shots = [
            _shot(g, e, m, result.images, spans) for g in sorted(entries, key=lambda g: g.rank)
        ]
        out.append(ShotGroup(e, m, shots))
    return out


@dataclass(frozen=True)
class EncodeAgreement:
    encode: EncodeView
    view: AgreementView


def _agreements(
    result: CompareResult,
    metrics: Mapping[str, MetricView],
    encodes: list[EncodeView],
    spans: Mapping[int, tuple[float, float]],
    zoom: str | None,
) -> list[EncodeAgreement]:
    """Where TOPIQ and VMAF (or PSNR) disagree, per encode in the report's order; frames
    counted and timed on the source, as everywhere on this page."""
    out = []
    for e in encodes:
        agreement = result.report.agreements.get(e.label)
        if agreement is None:
            continue
        view = agreement_view(
            agreement,
            metrics,
            result.images,
            anchor=lambda frame, i=e.index: f"agree-{i}-{frame}",
            scene_of=lambda index: _scene_link(index, spans),
            zoom=zoom,
            on_source=True,
            reference="source",
            encode=e.label,
        )
        if view is not None:
            out.append(EncodeAgreement(e, view))
    return out


def _pills(report: CompareReport, encodes: list[EncodeView]) -> list[tuple[str, str]]:
    src = report.source
    pills = [("encodes", fmt_num(len(encodes)))]
    for model in report.models:
        pills.append(("model", model.name))
        pills.append(("on", f"{model.device} {model.precision}"))
    pills += [
        ("source", f"{src.width}×{src.height} {src.codec}"),
        ("source frames", fmt_num(src.frame_count)),
    ]
    if src.duration is not None:
        pills.append(("duration", fmt_time(src.duration)))
    pills.append(("created", report.run.created))
    return pills


def _warnings(report: CompareReport) -> list[str]:
    """The report's warnings, then any encode's own not already among them (as the engine
    words them: "label: warning")."""
    out = list(report.warnings)
    for e in report.encodes:
        out += [f"{e.label}: {w}" for w in e.warnings if f"{e.label}: {w}" not in out]
    return list(dict.fromkeys(out))


def _credits(report: CompareReport) -> str | None:
    terms = [f"{m.name}: {m.terms or DEFAULT_TERMS_NOTE}" for m in report.models]
    return "\n".join(dict.fromkeys(terms)) or None


# ---------------------------------------------------------------------------- page


def render_compare_html(result: CompareResult) -> str:
    """The comparison page of a result, as one self-contained HTML string."""
    started = time.perf_counter()
    report = result.report
    metrics = [metric_view(i, info) for i, info in enumerate(report.metrics)]
    by_name = {m.name: m for m in metrics}
    encodes = [_encode_view(i, e, report.baseline) for i, e in enumerate(report.encodes)]
    by_label = {e.label: e for e in encodes}
    spans = {s.index: (s.start_time, s.end_time) for s in report.scenes}
    infos = {i.name: i for i in report.metrics}
    series = encode_series(result)

    timeline = compare_timeline_figure(result, series)
    scene_groups = _scene_groups(report, metrics, by_label, spans)
    colors = _group_colors(report)
    rd_figures = [
        (m, f)
        for m in metrics
        if (f := rd_figure(m.index, infos[m.name], report.rd, report.baseline, colors))
    ]
    bd_rows = _bd_rows(report, by_name)
    scene_bd = scene_bd_figure(
        [(by_name[e.metric].index, e) for e in report.bd if e.metric in by_name], spans
    )
    distributions = [
        (m, f)
        for m in metrics
        if m.name in result.frames.columns
        and (f := compare_distribution_figure(m.index, infos[m.name], series))
    ]
    gallery = _gallery(result, by_name, by_label, spans)
    agreements = _agreements(result, by_name, encodes, spans, timeline.id if timeline else None)
    figures: list[Figure] = [
        f
        for f in (
            timeline,
            *(g.figure for g in scene_groups),
            *(f for _, f in rd_figures),
            scene_bd,
            *(f for _, f in distributions),
        )
        if f is not None
    ]
    sections = [("summary", "Summary"), ("timeline", "Timeline")]
    if scene_groups:
        sections.append(("scenes", "Scenes"))
    if rd_figures:
        sections.append(("rd", "Rate–quality"))
    sections.append(("distribution", "Distribution"))
    if gallery:
        sections.append(("gallery", "Where they differ"))
    if agreements:
        sections.append(("agreement", "Where metrics disagree"))
    sections.append(("inputs", "Inputs & model"))
    alignments = [
        (view, _alignment_rows(e.alignment))
        for view, e in zip(encodes, report.encodes, strict=True)
        if e.alignment is not None
    ]
    if alignments:
        sections.append(("alignment", "Alignment"))
    context = {
        **page_assets(),
        "source_name": _basename(report.source.path),
        "source_path": report.source.path,
        "title_tag": report.source.metadata.get("title"),
        "baseline": report.baseline,
        "encodes": encodes,
        "failed": [e for e in encodes if e.error],
        "pills": _pills(report, encodes),
        "sections": sections,
        "interruption": _interruption(report.interruption),
        "warnings": _warnings(report),
        "summary_tables": _summary_tables(report, metrics, encodes),
        "compared": bool(report.comparisons),
        "scored_count": sum(1 for e in report.encodes if e.frames_scored),
        "timeline": timeline,
        "scene_groups": scene_groups,
        "scene_count": len(report.scenes),
        "scene_source": SCENE_SOURCES.get(report.scene_source, report.scene_source),
        "losses_open": len(report.comparisons) <= LOSSES_OPEN,
        "verdict_colors": VERDICT_COLORS,
        "rd_figures": rd_figures,
        "bd_rows": bd_rows,
        "scene_bd": scene_bd,
        "distributions": distributions,
        "gallery": gallery,
        # The engine captures each encode against the baseline: the difference is theirs.
        "diff_caption": f"{DIFF_CAPTION}; here the reference is the baseline",
        "has_diff": any("diff" in g.images for g in report.gallery),
        "agreements": agreements,
        "agreement_caption": f"{DIFF_CAPTION}; here the reference is the source",
        "agreements_open": len(agreements) <= LOSSES_OPEN,
        "alignments": alignments,
        "inputs": probe_table(
            [("source", report.source)] + [(e.label, e.input) for e in report.encodes]
        ),
        "models": _models(report.models),
        "metric_infos": metrics,
        "run": _run(report),
        "credits": _credits(report),
        "version": report.run.tool_version,
        "figures": [f.to_json() for f in figures],
    }
    page = _environment().get_template("compare.html").render(context)
    logger.debug(
        "rendered the comparison page: %.1f MB in %.2f s",
        len(page) / 1e6,
        time.perf_counter() - started,
    )
    return page


def write_compare_html(result: CompareResult, path: str | os.PathLike[str]) -> Path:
    """Write the comparison page of a result to ``path``, atomically."""
    return atomic_write_text(path, render_compare_html(result))


__all__ = ["LOSSES_SHOWN", "fmt_signed", "render_compare_html", "write_compare_html"]
