"""A whole run collected into a typed :class:`~topiq_video.result.ScoreResult`.

Rows are kept in columns (a few numbers per frame), scenes come from the detector, a cut
list or nowhere, statistics are pooled, and the gallery comes from the frames captured in
the pass. A run that stops early (an error, Ctrl-C, SIGTERM, a lost stream) still gives a
result of everything scored until then, with the interruption recorded in it.
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import av.error
import numpy as np
import pandas as pd

from topiq_video import __version__
from topiq_video.errors import ScoringInterrupted, Terminated, TopiqVideoError
from topiq_video.files import describe_os_error, display_text
from topiq_video.metrics import FFMPEG_METRICS, REFERENCE_METRICS
from topiq_video.model.registry import get_checkpoint
from topiq_video.pipeline.options import FrameSelection, ScoreOptions
from topiq_video.pipeline.run import FrameScores, ScoringRun
from topiq_video.pooling import pool
from topiq_video.result import (
    FRAMES_FILE,
    Alignment,
    DecodeSummary,
    FramesTable,
    InputInfo,
    Interruption,
    MetricInfo,
    ModelInfo,
    OffsetSearch,
    Pairing,
    Report,
    RunInfo,
    ScoreResult,
    TimestampGap,
)
from topiq_video.video.probe import VideoInfo
from topiq_video.video.source import DecodeStats, redact_source

logger = logging.getLogger(__name__)

CREDIT_TAGS = ("copyright", "artist", "comment", "license")
# Failures during a pass that still leave a useful partial result.
RUN_FAILURES = (TopiqVideoError, OSError, MemoryError, RuntimeError, av.error.FFmpegError)


class RowColumns:
    """Rows of a run as growing typed arrays: 8 bytes a value, not an object a frame.

    ``ref_frame`` is -1 where a row has no reference frame; :meth:`table` gives the
    per-frame DataFrame (with a nullable ``ref_frame``)."""

    def __init__(self, metrics: Sequence[str], has_ref: bool) -> None:
        self.metrics = tuple(metrics)
        self.has_ref = has_ref
        self.frame = array("q")
        self.time = array("d")
        self.ref_frame = array("q")
        self.ref_time = array("d")
        self.scene_score = array("d")
        self.values = {m: array("d") for m in self.metrics}
        self.any_scene_score = False

    def add(self, row: FrameScores) -> None:
        self.frame.append(row.frame)
        self.time.append(row.time)
        if self.has_ref:
            self.ref_frame.append(-1 if row.ref_frame is None else row.ref_frame)
            self.ref_time.append(math.nan if row.ref_time is None else row.ref_time)
        if row.scene_score is not None:
            self.any_scene_score = True
        self.scene_score.append(math.nan if row.scene_score is None else row.scene_score)
        for m in self.metrics:
            self.values[m].append(row.values[m])

    def __len__(self) -> int:
        return len(self.frame)

    def fill(self, metric: str, values: np.ndarray) -> None:
        """Set a metric known only at the end (VMAF, XPSNR), row by row from the first; rows
        beyond ``values`` (never fed to FFmpeg) keep NaN."""
        count = min(len(values), len(self.frame))
        column = np.frombuffer(self.values[metric], dtype=np.float64)
        column[:count] = np.asarray(values[:count], dtype=np.float64)

    def table(self, scene_of: np.ndarray | None = None) -> pd.DataFrame:
        data: dict[str, Any] = {
            "frame": np.frombuffer(self.frame, dtype=np.int64).copy(),
            "time": np.frombuffer(self.time, dtype=np.float64).copy(),
        }
        if self.has_ref:
            ref = np.frombuffer(self.ref_frame, dtype=np.int64)
            data["ref_frame"] = pd.array(np.where(ref < 0, None, ref), dtype="Int64")
            data["ref_time"] = np.frombuffer(self.ref_time, dtype=np.float64).copy()
        if scene_of is not None:
            data["scene"] = scene_of.astype(np.int64)
        if self.any_scene_score:
            data["scene_score"] = np.frombuffer(self.scene_score, dtype=np.float64).copy()
        for m in self.metrics:
            data[m] = np.frombuffer(self.values[m], dtype=np.float64).copy()
        return pd.DataFrame(data)


def run_rows(
    run: ScoringRun, on_frame: Callable[[FrameScores], None] | None = None
) -> tuple[RowColumns, BaseException | None]:
    """Iterate ``run``, keeping every row even when it stops early (the reason is returned)."""
    columns = RowColumns(run.metrics, run.has_ref)
    failure: BaseException | None = None
    try:
        for row in run:
            columns.add(row)
            if on_frame is not None:
                on_frame(row)
    except (*RUN_FAILURES, KeyboardInterrupt) as exc:
        failure = exc
    finally:
        run.close()
    for name, values in (run.ffmpeg_values or {}).items():
        columns.fill(name, values)
    return columns, failure


def interruption_of(
    run: ScoringRun, failure: BaseException | None, rows: int
) -> Interruption | None:
    """Why the run ended early, if it did (an error, a signal, a lost live source)."""
    expected = run.expected_frames
    if failure is not None:
        return interruption_kind(failure, rows, run.last_time, expected)
    for role, stats in run.decode_stats.items():
        if stats.connection_lost:
            label = "reference" if role == "ref" else "input"
            when = f" at {run.last_time:.3f} s" if run.last_time is not None else ""
            asked = f" of the {expected} asked for" if expected else ""
            message = (
                f"The live {label} was lost{when} ({stats.connection_lost}): {rows} frames"
                f"{asked} were scored."
            )
            return Interruption("connection_lost", message, rows, run.last_time, expected)
    return None


def interruption_kind(
    failure: BaseException,
    rows: int,
    at_time: float | None = None,
    expected: int | None = None,
) -> Interruption:
    """The interruption a failure makes: an error, Ctrl-C or a termination signal."""
    if isinstance(failure, Terminated):
        kind, message = "terminated", "The run was stopped by a termination signal."
    elif isinstance(failure, KeyboardInterrupt):
        kind, message = "interrupted", "The run was interrupted (Ctrl-C)."
    else:
        kind, message = "error", failure_message(failure)
    return Interruption(kind, message, rows, at_time, expected)


def failure_message(exc: BaseException) -> str:
    """An exception as a sentence fit for a report or a CLI line."""
    if isinstance(exc, TopiqVideoError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({display_text(str(exc.filename))})" if exc.filename else ""
        return f"System error{where}: {describe_os_error(exc)}."
    if isinstance(exc, MemoryError):
        return "Out of memory. Score fewer or smaller frames at a time (batch size, scale)."
    return f"{type(exc).__name__}: {display_text(str(exc))}"


def build_result(
    run: ScoringRun,
    columns: RowColumns,
    *,
    interruption: Interruption | None = None,
    command: Sequence[str] | None = None,
    started: float | None = None,
) -> ScoreResult:
    """The typed result of a finished (or stopped) run from its collected rows."""
    from topiq_video.scenes import scenes_from_cuts

    opts = run.options
    frames = np.frombuffer(columns.frame, dtype=np.int64)
    times = np.frombuffer(columns.time, dtype=np.float64).tolist()
    source_column = np.frombuffer(columns.ref_frame, dtype=np.int64) if run.has_ref else frames
    if run.file_cuts is not None:
        cut_numbers, scene_source = run.file_cuts, "file"
    elif opts.detect_scenes:
        cut_numbers, scene_source = run.cuts, ("reference" if run.has_ref else "input")
    else:
        cut_numbers, scene_source = [], "none"
    cuts = _map_cuts_to_rows(source_column, frames, cut_numbers)
    scenes = scenes_from_cuts(cuts, frames.tolist(), times) if len(frames) else []
    scene_of = np.zeros(len(frames), dtype=np.int64)
    for scene in scenes:
        scene_of[(frames >= scene.start_frame) & (frames <= scene.end_frame)] = scene.index
    table = columns.table(scene_of)
    pooled = pool(table, list(run.metrics), scenes, worst_n=opts.worst_n)
    agreement, agreement_images = late_pictures(run, table, pooled.scenes)
    gallery, images = run.capture.gallery() if run.capture is not None else ((), {})
    images = {**images, **agreement_images}

    warnings = list(run.warnings) + run.source_warnings()
    pairing = run.pairing
    if pairing is not None and pairing.ref_skipped:
        warnings.append(
            f"{pairing.ref_skipped} reference frame(s) inside the compared span were shown by "
            "no distorted frame (a lower frame rate, or frames missing from the encode)."
        )
    if interruption is not None:
        warnings.append(interruption.message)
    report = Report(
        run=RunInfo(
            tool_version=__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            command=None if command is None else tuple(redact_command(command)),
            duration_s=None if started is None else round(time.monotonic() - started, 3),
            options=opts,
        ),
        inputs={
            role: input_info(info, run.decode_stats[role]) for role, info in run.inputs.items()
        },
        models=tuple(model_info(m) for m in run.models.values()),
        metrics=tuple(metric_info(m, opts) for m in run.metrics),
        alignment=alignment_info(run),
        warnings=tuple(dict.fromkeys(warnings)),
        interruption=interruption,
        scene_source=scene_source,
        scenes=pooled.scenes,
        summary=pooled.summary,
        worst_frames=pooled.worst_frames,
        worst_scenes=pooled.worst_scenes,
        per_second=pooled.per_second,
        gallery=gallery,
        frames=FramesTable(file=FRAMES_FILE, count=len(table), columns=tuple(table.columns)),
        credits=credits_of(run.inputs),
        agreement=agreement,
    )
    return ScoreResult(report=report, frames=table, images=images)


def late_pictures(
    run: ScoringRun, table: pd.DataFrame, scenes: Sequence[Any]
) -> tuple[Any, dict[str, bytes]]:
    """What only the whole run tells, with its pictures: where TOPIQ and VMAF (or PSNR)
    disagree, and the worst frames of metrics FFmpeg gave at the end (into the gallery).
    Returns the agreement (None without the two metrics) and its pictures' files."""
    import dataclasses

    from topiq_video.agreement import disagreement, metric_pair, shown_frames
    from topiq_video.pipeline.options import GALLERY_SPACING_S
    from topiq_video.pipeline.revisit import PairAt, attach_pictures, pair_of
    from topiq_video.pooling import pick_worst

    opts = run.options
    pair = metric_pair(run.metrics)
    agreement = disagreement(table, *pair, scenes) if pair and len(table) else None
    wanted: dict[int, PairAt] = {}
    late: dict[str, list[tuple[int, float]]] = {}  # metric -> (frame, value), worst first
    if opts.gallery > 0 and len(table):
        times = table["time"].to_numpy(dtype=np.float64)
        for metric in (m for m in run.metrics if m in FFMPEG_METRICS):
            values = table[metric].to_numpy(dtype=np.float64)
            picks = pick_worst(values, times, opts.gallery, spacing=GALLERY_SPACING_S)
            late[metric] = [(int(table["frame"].iat[i]), float(values[i])) for i in picks]
            for i in picks:
                wanted.setdefault(int(table["frame"].iat[i]), _pair_at(table, i))
        if agreement is not None:
            for frame in shown_frames(agreement):
                wanted.setdefault(frame.frame, pair_of(frame))
    note = run.revisit_note() if wanted else None
    pictures = run.fetch_pictures(list(wanted.values())) if wanted and note is None else {}
    if run.capture is not None:
        for metric, picks in late.items():
            run.capture.set_late(
                metric,
                [dataclasses.replace(pictures[f], value=v) for f, v in picks if f in pictures],
            )
    if agreement is None:
        return None, {}
    if opts.gallery == 0:
        note = "no pictures were asked for (gallery 0)"
    return attach_pictures(agreement, pictures, note=note)


def _pair_at(table: pd.DataFrame, i: int) -> Any:
    from topiq_video.pipeline.revisit import PairAt

    row = table.iloc[i]
    has_ref = "ref_frame" in table.columns and not pd.isna(row["ref_frame"])
    return PairAt(
        frame=int(row["frame"]),
        time=float(row["time"]),
        ref_frame=int(row["ref_frame"]) if has_ref else None,
        ref_time=float(row["ref_time"]) if has_ref else None,
    )


def _map_cuts_to_rows(source: np.ndarray, frames: np.ndarray, cuts: Sequence[int]) -> list[int]:
    """Cuts numbered in the source stream -> the distorted frame of the first row at or after."""
    mapped = []
    for cut in cuts:
        positions = np.nonzero(source >= cut)[0]
        if positions.size:
            mapped.append(int(frames[positions[0]]))
    return sorted(set(mapped))


def input_info(info: VideoInfo, stats: DecodeStats) -> InputInfo:
    color = info.color
    return InputInfo(
        path=display_text(redact_source(info.source)),
        container=info.container,
        codec=info.codec,
        width=info.width,
        height=info.height,
        pix_fmt=info.pix_fmt,
        bit_depth=info.bit_depth,
        fps=float(info.fps) if info.fps else None,
        fps_exact=str(info.fps) if info.fps else None,
        time_base=str(info.time_base),
        start_time=info.start_time,
        duration=info.duration,
        frame_count=info.frame_count,
        color=color,
        rotation=info.rotation,
        scan_type=info.scan_type,
        is_vfr=info.is_vfr,
        is_live=info.is_live,
        metadata=dict(info.metadata),
        decode=DecodeSummary(
            frames_decoded=stats.frames_decoded,
            decode_errors=stats.decode_errors,
            corrupt_frames=stats.corrupt_frames,
            lost_frames=stats.lost_frames,
            gaps=tuple(TimestampGap(at_frame=f, at_time=t, missing=n) for f, t, n in stats.gaps),
            truncated_at=stats.truncated_at,
            stopped_early=stats.connection_lost or stats.stopped_early,
            error_messages=tuple(stats.error_messages),
            bytes_read=stats.bytes_read,
        ),
    )


def model_info(model: Any) -> ModelInfo:
    weights = model.weights
    return ModelInfo(
        name=model.info.name,
        mode=model.info.mode,
        train_set=model.info.train_set,
        weights_file=None if weights is None else display_text(weights.path.name),
        sha256=None if weights is None else weights.sha256,
        weights_source=None if weights is None else weights.source,
        precision=model.precision,
        device=str(model.device),
        batch_size=model.batch_size,
        terms=model.info.terms,
    )


def metric_info(name: str, options: ScoreOptions | None = None) -> MetricInfo:
    if name in REFERENCE_METRICS:
        info = REFERENCE_METRICS[name]
        low, high = info.range
        description = info.description
        if name == "vmaf":
            model = (options or ScoreOptions()).vmaf_model
            description = f"VMAF, model {model} (libvmaf through FFmpeg), on the aligned pairs"
        return MetricInfo(
            name=name,
            unit=info.unit or None,
            higher_is_better=info.higher_is_better,
            range=(_finite_or_none(low), _finite_or_none(high)),
            description=description,
        )
    ckpt = get_checkpoint(name)
    return MetricInfo(
        name=name,
        unit=None,
        higher_is_better=ckpt.higher_is_better,
        range=(float(ckpt.score_range[0]), float(ckpt.score_range[1])),
        description=f"TOPIQ {ckpt.mode.upper()} ({ckpt.train_set})",
    )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def alignment_info(run: ScoringRun) -> Alignment | None:
    est = run.offset
    if est is None:
        return None
    offsets, costs = est.curve
    search = None
    if len(offsets):
        search = OffsetSearch(
            offsets=tuple(float(x) for x in offsets),
            costs=tuple(float(c) if math.isfinite(c) else None for c in costs),
        )
    stats = run.pairing
    pairing = None
    if stats is not None:
        pairing = Pairing(
            paired=stats.paired,
            dist_before=stats.dist_before,
            dist_after=stats.dist_after,
            ref_before=stats.ref_before,
            ref_after=stats.ref_after,
            ref_skipped=stats.ref_skipped,
            complete=stats.complete,
            conversion=stats.conversion,
            conversion_counts={
                key: int(value)
                for key, value in stats.conversion_summary().items()
                if key != "conversion" and value is not None
            },
        )
    scaling, target = run.scaling()
    return Alignment(
        offset_seconds=float(est.offset_seconds),
        offset_frames=float(est.offset_frames),
        ref_frame_duration=float(est.ref_frame_duration),
        confidence=float(est.confidence),
        method=est.method,
        message=est.message,
        search=search,
        pairing=pairing,
        scaling=scaling,
        width=None if target is None else target[0],
        height=None if target is None else target[1],
    )


def credits_of(inputs: dict[str, VideoInfo]) -> str | None:
    parts: dict[str, str] = {}  # credit text -> who carries it (once, even if both do)
    for role, info in inputs.items():
        tags = {k.lower(): v for k, v in info.metadata.items()}
        for key in CREDIT_TAGS:
            if tags.get(key) and tags[key] not in parts:
                parts[tags[key]] = f"{'reference' if role == 'ref' else 'input'} {key}"
    return "; ".join(f"{who}: {text}" for text, who in parts.items()) or None


def redact_command(command: Sequence[str]) -> list[str]:
    return [display_text(redact_source(part)) for part in command]


def collect(
    run: ScoringRun,
    *,
    on_frame: Callable[[FrameScores], None] | None = None,
    command: Sequence[str] | None = None,
    started: float | None = None,
) -> tuple[ScoreResult | None, BaseException | None]:
    """Run ``run`` to its end (or until it stops) and build its result.

    Returns the result (None when nothing was scored) and the exception that stopped the
    run (None when it ended by itself). Callers decide what to write before raising.
    """
    started = time.monotonic() if started is None else started
    columns, failure = run_rows(run, on_frame)
    interruption = interruption_of(run, failure, len(columns))
    if not len(columns):
        return None, failure
    result = build_result(run, columns, interruption=interruption, command=command, started=started)
    if interruption is not None:
        logger.warning("%s", interruption.message)
    return result, failure


def raise_partial(
    failure: BaseException, result: ScoreResult | None, written: Path | None = None
) -> None:
    """Raise the failure that stopped a run, carrying what was scored.

    Errors become :class:`ScoringInterrupted` (``.result``, ``.written``); Ctrl-C and
    SIGTERM stay what they are, with ``partial_result`` (and ``written``) attached.
    """
    if isinstance(failure, KeyboardInterrupt):
        failure.partial_result = result  # type: ignore[attr-defined]
        failure.written = written  # type: ignore[attr-defined]
        raise failure
    if result is None:
        raise failure
    kept = f" The {len(result.frames)} frames scored before it" + (
        f" were written to {written}." if written else " are in the result."
    )
    raise ScoringInterrupted(
        failure_message(failure) + kept, result=result, written=written
    ) from failure


def score_video(
    dist: str | Path,
    ref: str | Path | None = None,
    *,
    options: ScoreOptions | None = None,
    on_frame: Callable[[FrameScores], None] | None = None,
    **kwargs: Any,
) -> ScoreResult:
    """Score a video file or stream (against ``ref``); the typed result of the whole run.

    Options are a :class:`ScoreOptions` or its fields as keywords; frame selection may be
    given flat (``start``, ``duration``, ``every``, ``sample_fps``, ``max_frames``). A run
    stopped by an error raises :class:`~topiq_video.errors.ScoringInterrupted` whose
    ``result`` holds every frame scored before it.
    """
    opts = options_from(options, kwargs)
    run = ScoringRun(dist, ref, opts)
    result, failure = collect(run, on_frame=on_frame)
    if failure is not None:
        raise_partial(failure, result)
    if result is None:
        from topiq_video.errors import InvalidInputError

        raise InvalidInputError(
            "No frame was scored: check the frame selection (start, duration) and the "
            "alignment (offset)."
        )
    return result


def options_from(options: ScoreOptions | None, kwargs: dict[str, Any]) -> ScoreOptions:
    """A :class:`ScoreOptions` from an instance or from its fields given as keywords."""
    from topiq_video.errors import InvalidInputError

    if options is not None:
        if kwargs:
            raise InvalidInputError("Pass either options= or option keywords, not both.")
        return options
    selection_keys = {"start", "duration", "every", "sample_fps", "max_frames"}
    selection = {k: kwargs.pop(k) for k in list(kwargs) if k in selection_keys}
    if selection:
        if "selection" in kwargs:
            raise InvalidInputError("Pass either selection= or its fields, not both.")
        kwargs["selection"] = FrameSelection(**selection)
    try:
        return ScoreOptions(**kwargs)
    except TypeError as exc:
        raise InvalidInputError(f"Unknown option: {exc}.") from exc
