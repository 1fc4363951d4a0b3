"""`topiq-video compare`: encoder A/B on one pass over the source.

The source is opened once and decoded once; every encode is decoded in its own thread and
paired on the source's timeline, each with its own offset search and scaling to the
source's size. Work that depends on the source alone is done once per source frame and
shared by every encode: its colour conversion, its luma for PSNR/SSIM, the scene detector,
and the full-reference model's backbone features. Scenes are cut from the source and
shared. Statistics, per-scene differences with block-bootstrap intervals, RD points and
BD-rates are computed from the rows at the end (:mod:`topiq_video.compare_stats`).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from topiq_video.errors import AlignmentError, InvalidInputError, TopiqVideoError
from topiq_video.files import describe_os_error, display_text
from topiq_video.metrics import FFMPEG_METRICS, METRICS, compute_metric
from topiq_video.pipeline.capture import WorstFrameCapture
from topiq_video.pipeline.options import DEFAULT_COMPARE_GALLERY, ScoreOptions
from topiq_video.pipeline.run import (
    FrameScores,
    SceneTracker,
    _resize_luma,
    _resize_rgb,
    compare_streams,
    ffmpeg_metrics,
    load_models,
    parse_scale_to,
    resolve_metrics,
    select_frames,
    step_batcher,
    target_size,
)
from topiq_video.video.align import (
    DEFAULT_SEARCH_WINDOW,
    estimate_offset,
    pair_streams,
    search_span,
)
from topiq_video.video.color import frames_to_luma, frames_to_rgb
from topiq_video.video.source import VideoFrame, open_source

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("file", "encoder", "rate")


@dataclass(frozen=True)
class EncodeSpec:
    """One encode to compare: its file, its label, and (from a manifest) its encoder and
    the rate it was made at (a CRF, QP or target bitrate, as written)."""

    path: str
    label: str
    encoder: str | None = None
    rate: float | None = None


def encode_specs(paths: Sequence[str], labels: Mapping[str, str] | None = None) -> list[EncodeSpec]:
    """Encodes from file names; ``labels`` maps a label to a file (``--label NAME=FILE``),
    otherwise the label is the file's stem (made unique)."""
    by_file = {os.fsdecode(v): k for k, v in (labels or {}).items()}
    for label, file in (labels or {}).items():
        if os.fsdecode(file) not in [os.fsdecode(p) for p in paths]:
            raise InvalidInputError(
                f"label {label!r} names {file!r}, which is not one of the encodes given."
            )
    specs: list[EncodeSpec] = []
    taken: set[str] = set()
    for path in paths:
        label = by_file.get(os.fsdecode(path)) or display_text(Path(os.fsdecode(path)).stem)
        base, n = label, 2
        while label in taken:
            label, n = f"{base}-{n}", n + 1
        taken.add(label)
        specs.append(EncodeSpec(path=str(path), label=label))
    return specs


def load_manifest(path: str | os.PathLike[str]) -> list[EncodeSpec]:
    """Encodes from a CSV with columns ``file``, ``encoder`` and an optional ``rate``;
    relative files are found beside the manifest."""
    manifest = Path(path)
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = describe_os_error(exc) if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidInputError(
            f"Cannot read the manifest {os.fsdecode(manifest)!r}: {reason}."
        ) from exc
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "file" not in rows[0] or "encoder" not in rows[0]:
        raise InvalidInputError(
            f"{os.fsdecode(manifest)!r} needs a header with the columns file, encoder and "
            "optionally rate (e.g. `file,encoder,rate`)."
        )
    specs = []
    taken: set[str] = set()
    for n, row in enumerate(rows, start=2):
        file = (row.get("file") or "").strip()
        encoder = (row.get("encoder") or "").strip()
        if not file or not encoder:
            raise InvalidInputError(
                f"{os.fsdecode(manifest)!r} line {n}: file and encoder are required."
            )
        rate_text = (row.get("rate") or "").strip()
        try:
            rate = float(rate_text) if rate_text else None
        except ValueError as exc:
            raise InvalidInputError(
                f"{os.fsdecode(manifest)!r} line {n}: rate {rate_text!r} is not a number."
            ) from exc
        full = Path(file) if Path(file).is_absolute() else manifest.parent / file
        label = f"{encoder}@{rate_text}" if rate_text else encoder
        base, k = label, 2
        while label in taken:
            label, k = f"{base}-{k}", k + 1
        taken.add(label)
        specs.append(EncodeSpec(path=str(full), label=label, encoder=encoder, rate=rate))
    return specs


class SharedFrames:
    """One pass over the source, read by several cursors (one per encode's pairer).

    Frames are kept only while some cursor has not passed them, so memory follows the
    spread between the slowest and the fastest encode, not the length of the video."""

    def __init__(self, frames: Iterator[VideoFrame]) -> None:
        self._frames = frames
        self._buffer: deque[VideoFrame] = deque()
        self._base = 0  # position of _buffer[0]
        self._positions: list[int] = []
        self._exhausted = False

    def cursor(self) -> Iterator[VideoFrame]:
        slot = len(self._positions)
        self._positions.append(0)
        return self._read(slot)

    def _read(self, slot: int) -> Iterator[VideoFrame]:
        while True:
            position = self._positions[slot]
            while position >= self._base + len(self._buffer):
                if self._exhausted:
                    self._positions[slot] = math.inf  # type: ignore[assignment]
                    self._trim()
                    return
                try:
                    self._buffer.append(next(self._frames))
                except StopIteration:
                    self._exhausted = True
            frame = self._buffer[position - self._base]
            self._positions[slot] = position + 1
            self._trim()
            yield frame

    def _trim(self) -> None:
        lowest = min(self._positions)
        while self._buffer and self._base < lowest:
            self._buffer.popleft()
            self._base += 1

    def __len__(self) -> int:
        return len(self._buffer)


@dataclass
class _Encode:
    """One encode during the pass."""

    spec: EncodeSpec
    source: Any = None
    offset: Any = None
    pairer: Any = None
    pairs: Iterator[tuple[VideoFrame, VideoFrame]] | None = None
    peeked: tuple[VideoFrame, VideoFrame] | None = None
    done: bool = False
    error: str | None = None
    rows: Any = None  # RowColumns: the rows, 8 bytes a value
    warnings: list[str] | None = None
    ffmpeg: Any = None  # FFmpegMetrics: this encode's VMAF/XPSNR process


class ComparePass:
    """The single pass (see the module docstring). Iterate :meth:`run` to drive it."""

    def __init__(
        self,
        ref: str | os.PathLike[str],
        encodes: Sequence[EncodeSpec],
        options: ScoreOptions | None = None,
        *,
        baseline: str | None = None,
        gallery: int = DEFAULT_COMPARE_GALLERY,
        models: Mapping[str, Any] | None = None,
    ) -> None:
        opts = options or ScoreOptions()
        if opts.scale_to == "dist":
            raise InvalidInputError(
                "compare scales every encode to the source's size (scale_to 'ref' or WxH): "
                "'dist' would give each encode another size and nothing could be shared."
            )
        if not encodes:
            raise InvalidInputError("Give at least one encode to compare with the source.")
        labels = [e.label for e in encodes]
        if baseline is not None and baseline not in labels:
            raise InvalidInputError(
                f"baseline {baseline!r} is none of the encodes ({', '.join(labels)})."
            )
        self.options = opts
        self.baseline = baseline or labels[0]
        self.metrics = resolve_metrics(opts.model, opts.metrics, has_ref=True)
        self._scale = parse_scale_to(opts.scale_to, opts.max_pixels)
        self.gallery = gallery
        self.scenes = SceneTracker(opts) if opts.detect_scenes else None
        self.cuts: list[int] = []
        self.frames_scored = 0
        self.source_frames_seen = 0
        self.feature_batches = 0
        from topiq_video.pipeline.collect import RowColumns

        self.encodes: list[_Encode] = [
            _Encode(spec=e, rows=RowColumns(self.metrics, has_ref=True), warnings=[])
            for e in encodes
        ]
        sel = opts.selection
        ref_start = None
        if sel.start:
            lead = opts.max_offset if opts.offset == "auto" else -float(opts.offset)
            ref_start = max(0.0, sel.start - lead - 1.0) or None
        self.ref_path = str(ref)
        self.source = open_source(
            str(ref),
            start=ref_start,
            thumbnails=True,
            timeout=opts.timeout,
            max_pixels=opts.max_pixels,
        )
        try:
            for entry in self.encodes:
                try:
                    entry.source = open_source(
                        entry.spec.path,
                        start=sel.start,
                        duration=sel.duration,
                        thumbnails=True,
                        timeout=opts.timeout,
                        max_pixels=opts.max_pixels,
                    )
                except TopiqVideoError as exc:
                    # One unreadable encode must not stop the others.
                    entry.error = str(exc)
                    entry.done = True
                    logger.error("Encode %s left out: %s", entry.spec.label, exc)
            if all(e.error for e in self.encodes):
                raise InvalidInputError(
                    "No encode could be opened: "
                    + "; ".join(f"{e.spec.label}: {e.error}" for e in self.encodes)
                )
            for entry in self.encodes:
                if entry.source is not None:
                    entry.ffmpeg = ffmpeg_metrics(self.metrics, opts, entry.source.info)
            self.models = load_models(self.metrics, opts, has_ref=True, given=models)
        except BaseException:
            self.close()
            raise
        self.device, self._batcher = step_batcher(opts, self.models)
        self.captures = {
            e.spec.label: WorstFrameCapture(list(self.metrics), gallery)
            for e in self.encodes
            if e.spec.label != self.baseline
        }

    def close(self) -> None:
        """Close every source and stop every FFmpeg process (idempotent)."""
        self._close_sources()
        for entry in self.encodes:
            if entry.ffmpeg is not None:
                entry.ffmpeg.close()

    def _close_sources(self) -> None:
        self.source.close()
        for entry in self.encodes:
            if entry.source is not None:
                entry.source.close()

    def _finish_ffmpeg(self, stopped: bool) -> None:
        """Join each encode's VMAF/XPSNR to its rows. FFmpeg failing for one encode is that
        encode's error (its other metrics stay); after a stop it is only a warning."""
        from topiq_video.vmaf import FFmpegMetricError

        for entry in self.encodes:
            if entry.ffmpeg is None:
                continue
            try:
                values = entry.ffmpeg.finish(stopped=stopped)
            except FFmpegMetricError as exc:
                message = f"{', '.join(entry.ffmpeg.metrics)} are missing: {exc}"
                if stopped:
                    entry.warnings.append(message)
                else:
                    entry.error = entry.error or message
                logger.error("Encode %s: %s", entry.spec.label, message)
                continue
            for name, column in values.items():
                entry.rows.fill(name, column)

    @property
    def content_scores(self) -> Mapping[int, float]:
        return self.scenes.content if self.scenes is not None else {}

    # -- alignment ---------------------------------------------------------------------
    def _align(self) -> None:
        from topiq_video.video.align import OffsetEstimate

        opts = self.options
        frame_s = self.source.info.frame_duration or 1.0 / 30
        ref_seen = None
        if opts.offset == "auto":
            span = search_span(DEFAULT_SEARCH_WINDOW, opts.max_offset)
            # The source's first seconds are looked at once, for every encode's search.
            ref_seen = self.source.lookahead(span + opts.max_offset)
        for entry in self.encodes:
            if entry.error:
                continue
            try:
                if ref_seen is None:
                    entry.offset = OffsetEstimate.manual(float(opts.offset), frame_s)
                    continue
                seen = entry.source.lookahead(search_span(DEFAULT_SEARCH_WINDOW, opts.max_offset))
                if len(seen) < 2 or len(ref_seen) < 2:
                    entry.offset = OffsetEstimate.manual(0.0, frame_s)
                    continue
                entry.offset = estimate_offset(
                    np.stack([p.thumb for p in seen]),
                    np.array([p.time for p in seen]),
                    np.stack([p.thumb for p in ref_seen]),
                    np.array([p.time for p in ref_seen]),
                    max_offset=opts.max_offset,
                )
                if entry.offset.message:
                    entry.warnings.append(entry.offset.message)
            except (TopiqVideoError, AlignmentError) as exc:
                entry.error = str(exc)
                entry.done = True

    # -- the pass ----------------------------------------------------------------------
    def run(self) -> Iterator[tuple[str, FrameScores]]:
        """Score every encode; yields (label, row) as rows are made (VMAF and XPSNR, known
        only when FFmpeg ends, are NaN there and filled in the rows kept)."""
        stopped = True
        try:
            self._align()
            shared = SharedFrames(self.source.frames())
            selection = self.options.selection
            for entry in self.encodes:
                if entry.error:
                    continue
                entry.pairer = pair_streams(
                    select_frames(selection, entry.source.frames()),
                    shared.cursor(),
                    entry.offset.offset_seconds,
                    ref_frame_duration=entry.offset.ref_frame_duration,
                    drain=False,
                )
                entry.pairs = iter(entry.pairer)
            compared = False
            while True:
                active = [e for e in self.encodes if not e.done and not e.error]
                for entry in active:
                    self._peek(entry)
                active = [e for e in active if e.peeked is not None]
                if not active:
                    break
                if not compared:
                    self._compare_inputs()
                    compared = True
                first = min(e.peeked[1].index for e in active)  # type: ignore[index]
                window: dict[str, list[tuple[VideoFrame, VideoFrame]]] = {}
                limit = selection.max_frames
                for entry in active:
                    taken = []
                    room = math.inf if limit is None else limit - len(entry.rows)
                    while (
                        entry.peeked is not None
                        and entry.peeked[1].index < first + self._batcher.batch_size
                        and len(taken) < room
                    ):
                        taken.append(entry.peeked)
                        entry.peeked = None
                        if len(taken) < room:
                            self._peek(entry)
                    if taken:
                        window[entry.spec.label] = taken
                    if len(taken) >= room:
                        entry.done = True  # max_frames counts scored rows
                yield from self._score_window(window)
            stopped = False
        finally:
            self._close_sources()
            if self.scenes is not None:
                self.cuts = self.scenes.finish()
            try:
                self._finish_ffmpeg(stopped)
            finally:
                self.close()

    def _peek(self, entry: _Encode) -> None:
        if entry.peeked is not None or entry.done:
            return
        try:
            entry.peeked = next(entry.pairs)  # type: ignore[arg-type]
        except StopIteration:
            entry.done = True
        except TopiqVideoError as exc:
            # One encode breaking midway must not stop the others: it keeps what it scored.
            entry.error = str(exc)
            entry.done = True
            logger.error("Encode %s stopped: %s", entry.spec.label, exc)

    def _compare_inputs(self) -> None:
        ref_info = self.source.info
        for entry in self.encodes:
            if entry.source is not None and not entry.error:
                entry.warnings.extend(compare_streams(entry.source.info, ref_info))

    def _score_window(
        self, window: Mapping[str, list[tuple[VideoFrame, VideoFrame]]]
    ) -> Iterator[tuple[str, FrameScores]]:
        """Score every encode's pairs of a window of source frames, sharing the source's
        conversion, luma, scene detection and model features."""
        sources: dict[int, VideoFrame] = {}
        for pairs in window.values():
            for _, ref in pairs:
                sources.setdefault(ref.index, ref)
        ref_frames = [sources[i] for i in sorted(sources)]
        for group in _split_sources(ref_frames):
            position = {frame.index: i for i, frame in enumerate(group)}
            sub = {
                label: [p for p in pairs if p[1].index in position]
                for label, pairs in window.items()
            }
            yield from self._score_group(group, position, {k: v for k, v in sub.items() if v})

    def _score_group(
        self,
        ref_frames: list[VideoFrame],
        position: Mapping[int, int],
        window: Mapping[str, list[tuple[VideoFrame, VideoFrame]]],
    ) -> Iterator[tuple[str, FrameScores]]:
        self.source_frames_seen += len(ref_frames)
        native = frames_to_rgb(ref_frames, self.device)
        if self.scenes is not None:
            self.scenes.feed(ref_frames, lambda: native)
        size = (ref_frames[0].width, ref_frames[0].height)
        target = target_size(self._scale, size, size)
        ref_rgb = _resize_rgb(native, target)
        ref_color = ref_frames[0].color
        ref_luma = None
        if any(m in METRICS or m in FFMPEG_METRICS for m in self.metrics):
            depth = ref_color.bit_depth
            ref_luma = _resize_luma(frames_to_luma(ref_frames, self.device), target, depth, depth)
        features = {}
        for name, model in self.models.items():
            if model.info.use_ref:
                features[name] = model.reference_features(ref_rgb)
                self.feature_batches += 1
        # The baseline first: its pictures and values meet each other encode's, frame by frame.
        order = sorted(window, key=lambda label: label != self.baseline)
        base: dict[int, tuple[torch.Tensor, dict[str, float]]] = {}
        for label in order:
            entry = next(e for e in self.encodes if e.spec.label == label)
            for chunk in _split_layouts(window[label]):
                rows, dist_rgb = self._score_encode(
                    entry, chunk, position, ref_rgb, ref_luma, ref_color, features, target
                )
                if label == self.baseline:
                    for i, row in enumerate(rows):
                        base.setdefault(int(row.ref_frame), (dist_rgb[i], dict(row.values)))
                else:
                    self._capture_differences(label, rows, dist_rgb, ref_rgb, position, base)
                for row in rows:
                    entry.rows.add(row)
                self.frames_scored += len(rows)
                for row in rows:
                    yield label, row

    def _score_encode(
        self,
        entry: _Encode,
        pairs: Sequence[tuple[VideoFrame, VideoFrame]],
        position: Mapping[int, int],
        ref_rgb: torch.Tensor,
        ref_luma: torch.Tensor | None,
        ref_color: Any,
        features: Mapping[str, list[torch.Tensor]],
        target: tuple[int, int],
    ) -> tuple[list[FrameScores], torch.Tensor]:
        dist = [d for d, _ in pairs]
        rows_idx = torch.tensor([position[r.index] for _, r in pairs], device=ref_rgb.device)
        native = frames_to_rgb(dist, self.device)
        dist_rgb = _resize_rgb(native, target)
        columns: dict[str, np.ndarray] = {}
        for name, model in self.models.items():
            if model.info.use_ref:
                gathered = [f.index_select(0, rows_idx.to(f.device)) for f in features[name]]
                scores = model.score(dist_rgb, ref_features=gathered)
            else:
                scores = model.score(native)
            columns[name] = scores.float().cpu().numpy().astype(np.float64)
        del native
        if ref_luma is not None:
            depth = ref_color.bit_depth
            dist_luma = frames_to_luma(
                dist, self.device, rgb_matrix=ref_color.matrix, rgb_range=ref_color.range
            )
            dist_y = _resize_luma(dist_luma, target, dist[0].color.bit_depth, depth)
            ref_y = ref_luma.index_select(0, rows_idx.to(ref_luma.device))
            for name in (m for m in self.metrics if m in METRICS):
                columns[name] = compute_metric(name, dist_y, ref_y, depth).double().cpu().numpy()
            if entry.ffmpeg is not None:
                entry.ffmpeg.feed(dist_y, ref_y, depth)
        for name in self.metrics:
            if name in FFMPEG_METRICS:
                columns[name] = np.full(len(pairs), math.nan)  # filled when FFmpeg ends
        content = self.content_scores
        rows = [
            FrameScores(
                frame=d.index,
                time=d.time,
                ref_frame=r.index,
                ref_time=r.time,
                values={name: float(columns[name][i]) for name in self.metrics},
                scene_score=content.get(r.index),
            )
            for i, (d, r) in enumerate(pairs)
        ]
        return rows, dist_rgb

    def _capture_differences(
        self,
        label: str,
        rows: Sequence[FrameScores],
        dist_rgb: torch.Tensor,
        ref_rgb: torch.Tensor,
        position: Mapping[int, int],
        base: Mapping[int, tuple[torch.Tensor, dict[str, float]]],
    ) -> None:
        """Offer the frames where this encode and the baseline differ, for the gallery."""
        common = [i for i, row in enumerate(rows) if int(row.ref_frame) in base]
        if not common or self.gallery <= 0:
            return
        capture = self.captures[label]
        picture = dist_rgb[common]
        baseline = torch.stack([base[int(rows[i].ref_frame)][0] for i in common])
        source = ref_rgb[[position[int(rows[i].ref_frame)] for i in common]]
        for metric in self.metrics:
            if metric in FFMPEG_METRICS:
                continue  # known only when FFmpeg ends
            gaps = []
            for i in common:
                a = base[int(rows[i].ref_frame)][1][metric]
                b = rows[i].values[metric]
                gap = abs(b - a) if math.isfinite(a) and math.isfinite(b) else math.nan
                gaps.append(-gap)  # the capture keeps the lowest: the largest gap
            capture.offer(
                metric,
                gaps,
                [int(rows[i].ref_frame) for i in common],
                [float(rows[i].ref_time) for i in common],
                picture,
                baseline,
                extra={"source": source},
            )


def _split_sources(frames: list[VideoFrame]) -> list[list[VideoFrame]]:
    """Runs of source frames that share size and format (converted together)."""
    runs: list[list[VideoFrame]] = []
    for frame in frames:
        key = (frame.width, frame.height, frame.pix_fmt, frame.color)
        if runs and _key(runs[-1][0]) == key:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return runs


def _key(frame: VideoFrame) -> tuple[Any, ...]:
    return (frame.width, frame.height, frame.pix_fmt, frame.color)


def _split_layouts(
    pairs: Sequence[tuple[VideoFrame, VideoFrame]],
) -> list[list[tuple[VideoFrame, VideoFrame]]]:
    """Consecutive runs of pairs whose encode frames share size and format."""
    runs: list[list[tuple[VideoFrame, VideoFrame]]] = []
    for pair in pairs:
        if runs and _key(runs[-1][0][0]) == _key(pair[0]):
            runs[-1].append(pair)
        else:
            runs.append([pair])
    return runs


# ---------------------------------------------------------------------------- the result

RD_STATS = ("mean", "p5")


def _scene_spans(compare_pass: ComparePass, source_rows: pd.DataFrame) -> list[Any]:
    """Scenes of the source from its cuts (or a cut list), over the source frames seen."""
    from topiq_video.scenes import load_cut_list, scenes_from_cuts

    opts = compare_pass.options
    if opts.scenes_file is not None:
        fps = compare_pass.source.info.fps
        cuts = load_cut_list(opts.scenes_file, fps=float(fps) if fps else None)
    else:
        cuts = compare_pass.cuts
    frames = source_rows["ref_frame"].tolist()
    times = source_rows["ref_time"].tolist()
    return scenes_from_cuts(cuts, frames, times) if frames else []


def _per_source_frame(table: pd.DataFrame, metric: str) -> pd.Series:
    """An encode's metric per source frame (the mean where several frames show one)."""
    return table.groupby("ref_frame")[metric].mean()


def build_compare_result(
    compare_pass: ComparePass,
    *,
    started: float,
    command: Sequence[str] | None = None,
    interruption: Any = None,
) -> Any:
    """Statistics, differences, RD points and BD-rates of a finished pass, as a result."""
    from datetime import datetime, timezone

    from topiq_video import __version__
    from topiq_video.bdrate import bd_metric, bd_rate
    from topiq_video.pipeline.collect import input_info, metric_info, model_info
    from topiq_video.pooling import pool
    from topiq_video.result import (
        FRAMES_FILE,
        BDEntry,
        CompareGalleryEntry,
        CompareReport,
        CompareResult,
        EncodeComparison,
        EncodeResult,
        FramesTable,
        MetricComparison,
        RDPoint,
        RunInfo,
        SceneDifference,
        SceneSpan,
    )
    from topiq_video.stats import overall, paired_difference

    metrics = list(compare_pass.metrics)
    tables = {}
    for e in compare_pass.encodes:
        table = e.rows.table()
        table["ref_frame"] = table["ref_frame"].astype("int64")  # every compare row has one
        tables[e.spec.label] = table.drop(columns=["scene_score"], errors="ignore")
    source_rows = (
        pd.concat([t[["ref_frame", "ref_time"]] for t in tables.values()])
        .drop_duplicates("ref_frame")
        .sort_values("ref_frame")
    )
    scenes = _scene_spans(compare_pass, source_rows)
    starts = np.array([s.start_frame for s in scenes], dtype=np.int64)

    def scene_of(ref_frames: np.ndarray) -> np.ndarray:
        if not len(starts):
            return np.zeros(len(ref_frames), dtype=np.int64)
        return np.maximum(np.searchsorted(starts, ref_frames, side="right") - 1, 0)

    encodes: list[Any] = []
    long_parts = []
    for entry in compare_pass.encodes:
        label = entry.spec.label
        table = tables[label]
        table.insert(4, "scene", scene_of(table["ref_frame"].to_numpy()))
        # Pooled on the source's timeline, so every encode's scenes are the same scenes.
        view = table.assign(frame=table["ref_frame"], time=table["ref_time"])
        pooled = pool(view, metrics, scenes, worst_n=0) if len(table) else None
        info = entry.source.info if entry.source is not None else None
        stats = entry.source.stats if entry.source is not None else None
        duration = info.duration if info is not None else None
        bitrate = None
        if stats is not None and stats.bytes_read and duration:
            bitrate = stats.bytes_read * 8.0 / duration
        try:
            size = os.path.getsize(entry.spec.path)
        except OSError:
            size = None
        encodes.append(
            EncodeResult(
                label=label,
                path=display_text(entry.spec.path),
                encoder=entry.spec.encoder,
                rate=entry.spec.rate,
                error=entry.error,
                input=input_info(info, stats) if info is not None else None,
                file_size=size,
                bitrate=bitrate,
                duration=duration,
                alignment=_alignment(entry, compare_pass) if entry.offset is not None else None,
                warnings=tuple(dict.fromkeys(entry.warnings or [])),
                frames_scored=len(table),
                summary=pooled.summary if pooled else {},
                scenes=pooled.scenes if pooled else (),
            )
        )
        long_parts.append(table.assign(encode=label))
    long = pd.concat(long_parts, ignore_index=True) if long_parts else pd.DataFrame()
    if len(long):
        long = long[["encode", *[c for c in long.columns if c != "encode"]]]

    comparisons = []
    base = compare_pass.baseline
    for entry in compare_pass.encodes:
        label = entry.spec.label
        if label == base or not len(tables[label]) or not len(tables[base]):
            continue
        per_metric = []
        for metric in metrics:
            a = _per_source_frame(tables[base], metric)
            b = _per_source_frame(tables[label], metric)
            common = a.index.intersection(b.index)
            a, b = a.loc[common].to_numpy(), b.loc[common].to_numpy()
            frames = np.asarray(common)
            scene_diffs = []
            for scene in scenes:
                inside = (frames >= scene.start_frame) & (frames <= scene.end_frame)
                scene_diffs.append(
                    SceneDifference(scene.index, paired_difference(a[inside], b[inside]))
                )
            counts = overall([d.difference for d in scene_diffs])
            per_metric.append(
                MetricComparison(
                    metric=metric,
                    overall=paired_difference(a, b),
                    scenes=tuple(scene_diffs),
                    won=counts.won,
                    tied=counts.tied,
                    lost=counts.lost,
                    no_data=counts.no_data,
                )
            )
        comparisons.append(EncodeComparison(label, base, tuple(per_metric)))

    rd = tuple(
        RDPoint(
            label=e.label,
            encoder=e.encoder,
            rate=e.rate,
            bitrate=e.bitrate,
            values={
                m: {stat: getattr(e.summary[m], stat) for stat in RD_STATS}
                for m in metrics
                if m in e.summary
            },
        )
        for e in encodes
        if e.error is None or e.frames_scored
    )
    bd = _bd_entries(encodes, base, metrics, bd_rate, bd_metric, BDEntry)

    gallery, images = _compare_gallery(compare_pass, tables, scene_of, CompareGalleryEntry)
    agreements, agreement_images = _agreements(compare_pass, tables, encodes)
    images = {**images, **agreement_images}
    source_info = compare_pass.source.info
    warnings = []
    for e in encodes:
        warnings.extend(f"{e.label}: {w}" for w in e.warnings)
        if e.error:
            warnings.append(f"{e.label} could not be fully scored: {e.error}")
    report = CompareReport(
        run=RunInfo(
            tool_version=__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            command=None if command is None else tuple(display_text(c) for c in command),
            duration_s=round(time.monotonic() - started, 3),
            options=compare_pass.options,
        ),
        source=input_info(source_info, compare_pass.source.stats),
        models=tuple(model_info(m) for m in compare_pass.models.values()),
        metrics=tuple(metric_info(m, compare_pass.options) for m in metrics),
        baseline=base,
        encodes=tuple(encodes),
        scene_source=(
            "file"
            if compare_pass.options.scenes_file
            else "reference"
            if compare_pass.scenes is not None
            else "none"
        ),
        scenes=tuple(
            SceneSpan(s.index, s.start_frame, s.end_frame, s.start_time, s.end_time) for s in scenes
        ),
        comparisons=tuple(comparisons),
        rd=rd,
        bd=bd,
        gallery=gallery,
        warnings=tuple(dict.fromkeys(warnings)),
        interruption=interruption,
        frames=FramesTable(file=FRAMES_FILE, count=len(long), columns=tuple(long.columns)),
        agreements=agreements,
    )
    return CompareResult(report=report, frames=long, images=images)


def _agreements(
    compare_pass: ComparePass, tables: Mapping[str, pd.DataFrame], encodes: Sequence[Any]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Per encode, where TOPIQ and VMAF (or PSNR) disagree, with pictures of the source,
    the encode and their difference fetched after the pass (see pipeline.revisit)."""
    from topiq_video.agreement import disagreement, metric_pair, shown_frames
    from topiq_video.pipeline.revisit import (
        attach_pictures,
        fetch_pictures,
        pair_of,
        why_not_seekable,
    )

    pair = metric_pair(compare_pass.metrics)
    if pair is None:
        return {}, {}
    source_note = why_not_seekable(compare_pass.ref_path, compare_pass.source.info)
    src = compare_pass.source.info
    size = target_size(compare_pass._scale, (src.width, src.height), (src.width, src.height))
    out: dict[str, Any] = {}
    images: dict[str, bytes] = {}
    for entry, result in zip(compare_pass.encodes, encodes, strict=True):
        table = tables[entry.spec.label]
        if not len(table):
            continue
        agreement = disagreement(table, *pair, result.scenes)
        info = entry.source.info if entry.source is not None else None
        note = source_note or why_not_seekable(entry.spec.path, info)
        pictures = {}
        if compare_pass.gallery <= 0:
            note = "no pictures were asked for (gallery 0)"
        elif note is None:
            pictures = fetch_pictures(
                entry.spec.path,
                compare_pass.ref_path,
                [pair_of(f) for f in shown_frames(agreement)],
                size=size,
                device=compare_pass.device,
            )
        agreement, files = attach_pictures(
            agreement, pictures, prefix=f"agree-{entry.spec.label}", note=note
        )
        out[entry.spec.label] = agreement
        images.update(files)
    return out, images


def _alignment(entry: _Encode, compare_pass: ComparePass) -> Any:
    from topiq_video.result import Alignment, OffsetSearch, Pairing

    est = entry.offset
    offsets, costs = est.curve
    stats = entry.pairer.stats if entry.pairer is not None else None
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
        )
    src = compare_pass.source.info
    width, height = target_size(
        compare_pass._scale, (src.width, src.height), (src.width, src.height)
    )
    return Alignment(
        offset_seconds=float(est.offset_seconds),
        offset_frames=float(est.offset_frames),
        ref_frame_duration=float(est.ref_frame_duration),
        confidence=float(est.confidence),
        method=est.method,
        message=est.message,
        search=OffsetSearch(
            tuple(float(x) for x in offsets),
            tuple(float(c) if math.isfinite(c) else None for c in costs),
        )
        if len(offsets)
        else None,
        pairing=pairing,
        scaling=None,
        width=width,
        height=height,
    )


def _bd_entries(
    encodes: Sequence[Any],
    base: str,
    metrics: Sequence[str],
    bd_rate: Any,
    bd_metric: Any,
    entry_type: Any,
) -> tuple[Any, ...]:
    """Each encoder against the baseline's, when the encodes carry rates (a manifest)."""
    baseline = next((e for e in encodes if e.label == base), None)
    if baseline is None or baseline.encoder is None:
        return ()
    by_encoder: dict[str, list[Any]] = {}
    for e in encodes:
        if e.encoder is not None and e.bitrate and e.summary:
            by_encoder.setdefault(e.encoder, []).append(e)
    reference = sorted(by_encoder.get(baseline.encoder, []), key=lambda e: e.bitrate)
    entries = []
    for encoder, points in sorted(by_encoder.items()):
        if encoder == baseline.encoder:
            continue
        points = sorted(points, key=lambda e: e.bitrate)
        for metric in metrics:
            for stat in RD_STATS:
                ra, ma = _curve(reference, metric, stat)
                rb, mb = _curve(points, metric, stat)
                per_scene = []
                scene_ids = [s.index for s in reference[0].scenes] if reference else []
                for k, scene in enumerate(scene_ids):
                    qa = [getattr(e.scenes[k].stats[metric], stat) for e in reference]
                    qb = [getattr(e.scenes[k].stats[metric], stat) for e in points]
                    if None in qa or None in qb:
                        per_scene.append((scene, None))
                        continue
                    value = bd_rate(
                        [e.bitrate for e in reference], qa, [e.bitrate for e in points], qb
                    ).value
                    per_scene.append((scene, value))
                entries.append(
                    entry_type(
                        encoder=encoder,
                        baseline=baseline.encoder,
                        metric=metric,
                        stat=stat,
                        bd_rate=bd_rate(ra, ma, rb, mb),
                        bd_metric=bd_metric(ra, ma, rb, mb),
                        scenes=tuple(per_scene) if stat == "mean" else (),
                    )
                )
    return tuple(entries)


def _value_at(table: pd.DataFrame, metric: str, ref_frame: int) -> float | None:
    """An encode's (mean) value at a source frame, None if it has none or it is not finite."""
    values = table.loc[table["ref_frame"] == ref_frame, metric].to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _curve(encodes: Sequence[Any], metric: str, stat: str) -> tuple[list[float], list[float]]:
    """(bitrates, qualities) of encodes that have the statistic."""
    pairs = [
        (e.bitrate, getattr(e.summary[metric], stat))
        for e in encodes
        if metric in e.summary and getattr(e.summary[metric], stat) is not None
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _compare_gallery(
    compare_pass: ComparePass, tables: Mapping[str, pd.DataFrame], scene_of: Any, entry_type: Any
) -> tuple[tuple[Any, ...], dict[str, bytes]]:
    from topiq_video.pipeline.capture import file_slug
    from topiq_video.result import GALLERY_DIR

    entries = []
    images: dict[str, bytes] = {}
    for label, capture in compare_pass.captures.items():
        for metric, picked in capture.picked().items():
            for rank, c in enumerate(picked, start=1):
                stem = f"{GALLERY_DIR}/{file_slug(label)}-{file_slug(metric)}-{rank}"
                roles = {"encode": "dist", "baseline": "ref", "diff": "diff", "source": "source"}
                names = {}
                for role, key in roles.items():
                    if key in c.pictures:
                        names[role] = f"{stem}-{role}.jpg"
                        images[names[role]] = c.pictures[key]
                value = _value_at(tables[label], metric, c.frame)
                base_value = _value_at(tables[compare_pass.baseline], metric, c.frame)
                entries.append(
                    entry_type(
                        label=label,
                        baseline=compare_pass.baseline,
                        metric=metric,
                        rank=rank,
                        ref_frame=c.frame,
                        time=c.time,
                        scene=int(scene_of(np.array([c.frame]))[0]),
                        value=value,
                        baseline_value=base_value,
                        images=names,
                    )
                )
    return tuple(entries), images


# ---------------------------------------------------------------------------- entry points

DEFAULT_COMPARE_DIR = Path("reports")
COMPARE_HTML = "compare.html"


def default_compare_dir(ref: str | os.PathLike[str]) -> Path:
    """``reports/compare-<source stem>/``."""
    from topiq_video.report.build import default_report_dir

    return DEFAULT_COMPARE_DIR / f"compare-{default_report_dir(ref).name}"


def compare_encodes(
    ref: str | os.PathLike[str],
    encodes: Sequence[str | os.PathLike[str] | EncodeSpec],
    *,
    baseline: str | None = None,
    options: ScoreOptions | None = None,
    gallery: int = DEFAULT_COMPARE_GALLERY,
    on_frame: Any = None,
    command: Sequence[str] | None = None,
    models: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Compare encodes of ``ref`` on one pass over it; a typed :class:`CompareResult`.

    ``encodes`` are paths (labelled by their stem) or :class:`EncodeSpec` objects; the
    first, or ``baseline`` (a label), is the baseline. Options are a :class:`ScoreOptions`
    or its fields as keywords (scenes are detected in the source unless told otherwise).
    A pass stopped by an error raises ScoringInterrupted carrying the partial result.
    """
    from topiq_video.pipeline.collect import interruption_kind, options_from, raise_partial

    if options is None and "scenes_file" not in kwargs:
        kwargs.setdefault("detect_scenes", True)
    opts = options_from(options, kwargs)
    specs = [e if isinstance(e, EncodeSpec) else encode_specs([os.fsdecode(e)])[0] for e in encodes]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        specs = encode_specs([s.path for s in specs])
    started = time.monotonic()
    compare_pass = ComparePass(ref, specs, opts, baseline=baseline, gallery=gallery, models=models)
    failure: BaseException | None = None
    try:
        for label, row in compare_pass.run():
            if on_frame is not None:
                on_frame(label, row)
    except (TopiqVideoError, OSError, MemoryError, RuntimeError, KeyboardInterrupt) as exc:
        failure = exc
    interruption = interruption_kind(failure, compare_pass.frames_scored) if failure else None
    if compare_pass.frames_scored == 0:
        if failure is not None:
            raise failure
        raise InvalidInputError(
            "No frame was scored: check the encodes, the frame selection and the offset."
        )
    result = build_compare_result(
        compare_pass, started=started, command=command, interruption=interruption
    )
    if failure is not None:
        raise_partial(failure, result)
    return result


def write_compare(result: Any, out_dir: str | os.PathLike[str]) -> Any:
    """Save a comparison (compare.json last) and its page."""
    from topiq_video.files import check_output_dir
    from topiq_video.result import SavedReport

    out = check_output_dir(out_dir)
    from topiq_video.report.compare_render import write_compare_html

    saved = result.save(out)
    html = write_compare_html(result, out / COMPARE_HTML)
    return SavedReport(saved.out_dir, saved.json_path, saved.frames_path, saved.csv_path, html)
