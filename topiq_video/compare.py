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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from topiq_video.errors import AlignmentError, InvalidInputError, TopiqVideoError
from topiq_video.files import describe_os_error, display_text
from topiq_video.metrics import METRICS, compute_metric
from topiq_video.pipeline.capture import WorstFrameCapture
from topiq_video.pipeline.options import ScoreOptions
from topiq_video.pipeline.run import (
    FrameScores,
    ScoringRun,
    _resize_luma,
    _resize_rgb,
    compare_streams,
    select_frames,
)
from topiq_video.video.align import DEFAULT_SEARCH_WINDOW, estimate_offset, pair_streams, search_span
from topiq_video.video.color import frames_to_luma, frames_to_rgb
from topiq_video.video.source import VideoFrame, open_source, show_source

logger = logging.getLogger(__name__)

DEFAULT_COMPARE_GALLERY = 3  # scenes where the encodes differ most, per encode
MANIFEST_COLUMNS = ("file", "encoder", "rate")


@dataclass(frozen=True)
class EncodeSpec:
    """One encode to compare: its file, its label, and (from a manifest) its encoder and
    the rate it was made at (a CRF, QP or target bitrate, as written)."""

    path: str
    label: str
    encoder: str | None = None
    rate: float | None = None


def encode_specs(
    paths: Sequence[str], labels: Mapping[str, str] | None = None
) -> list[EncodeSpec]:
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
            raise InvalidInputError(f"{os.fsdecode(manifest)!r} line {n}: file and encoder are required.")
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
    rows: list[FrameScores] | None = None
    warnings: list[str] | None = None


class ComparePass:
    """The single pass (see the module docstring). Iterate :meth:`run` to drive it."""

    def __init__(
        self,
        ref: str | os.PathLike[str],
        encodes: Sequence[EncodeSpec],
        options: ScoreOptions | None = None,
        *,
        gallery: int = DEFAULT_COMPARE_GALLERY,
    ) -> None:
        opts = options or ScoreOptions()
        if opts.scale_to == "dist":
            raise InvalidInputError(
                "compare scales every encode to the source's size (scale_to 'ref' or WxH): "
                "'dist' would give each encode another size and nothing could be shared."
            )
        if not encodes:
            raise InvalidInputError("Give at least one encode to compare with the source.")
        # The source side is a ScoringRun without an encode: it loads the models, opens the
        # source once and checks the options, exactly as `report` does.
        self.run_options = replace(opts, gallery=0)
        self.source_run = ScoringRun(str(ref), str(ref), self.run_options)
        self.metrics = self.source_run.metrics
        self.models = self.source_run.models
        self.device = self.source_run.device
        self.gallery = gallery
        self.encodes: list[_Encode] = []
        for spec in encodes:
            entry = _Encode(spec=spec, rows=[], warnings=[])
            try:
                entry.source = open_source(
                    spec.path,
                    start=opts.selection.start,
                    duration=opts.selection.duration,
                    thumbnails=True,
                    timeout=opts.timeout,
                    max_pixels=opts.max_pixels,
                )
            except TopiqVideoError as exc:
                entry.error = str(exc)
                entry.done = True
                logger.error("Encode %s left out: %s", spec.label, exc)
            self.encodes.append(entry)
        if all(e.error for e in self.encodes):
            self.close()
            raise InvalidInputError(
                "No encode could be opened: "
                + "; ".join(f"{e.spec.label}: {e.error}" for e in self.encodes)
            )
        self.captures = {
            e.spec.label: WorstFrameCapture([m for m in self.metrics], gallery)
            for e in self.encodes
        }
        self.frames_scored = 0
        self.source_frames_seen = 0
        self.feature_batches = 0

    @property
    def ref_source(self) -> Any:
        return self.source_run._sources["ref"]

    def close(self) -> None:
        self.source_run.close()
        for entry in self.encodes:
            if entry.source is not None:
                entry.source.close()

    # -- alignment ---------------------------------------------------------------------
    def _align(self) -> None:
        opts = self.run_options
        ref_info = self.ref_source.info
        frame_s = ref_info.frame_duration or 1.0 / 30
        ref_seen = None
        if opts.offset == "auto":
            span = search_span(DEFAULT_SEARCH_WINDOW, opts.max_offset)
            ref_seen = self.ref_source.lookahead(span + opts.max_offset)
        from topiq_video.video.align import OffsetEstimate

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
        """Score every encode; yields (label, row) as rows are made."""
        try:
            self._align()
            shared = SharedFrames(self.ref_source.frames())
            selection = self.run_options.selection
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
            batch = self.source_run.batch_size
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
                for entry in active:
                    taken = []
                    while entry.peeked is not None and entry.peeked[1].index < first + batch:
                        taken.append(entry.peeked)
                        entry.peeked = None
                        self._peek(entry)
                    if taken:
                        window[entry.spec.label] = taken
                for label, row in self._score_window(window):
                    yield label, row
                limit = selection.max_frames
                if limit is not None:
                    for entry in self.encodes:
                        if entry.rows is not None and len(entry.rows) >= limit:
                            entry.done = True
        finally:
            self.close()
            detector = self.source_run._detector
            if detector is not None:
                self.source_run.cuts = list(detector.finish())

    def _peek(self, entry: _Encode) -> None:
        if entry.peeked is not None or entry.done:
            return
        try:
            entry.peeked = next(entry.pairs)  # type: ignore[arg-type]
        except StopIteration:
            entry.done = True
        except TopiqVideoError as exc:
            # One unreadable encode must not stop the others: it keeps what it scored.
            entry.error = str(exc)
            entry.done = True
            logger.error("Encode %s stopped: %s", entry.spec.label, exc)

    def _compare_inputs(self) -> None:
        ref_info = self.ref_source.info
        for entry in self.encodes:
            if entry.source is not None and not entry.error:
                entry.warnings.extend(compare_streams(entry.source.info, ref_info))

    def _score_window(
        self, window: Mapping[str, list[tuple[VideoFrame, VideoFrame]]]
    ) -> Iterator[tuple[str, FrameScores]]:
        """Score every encode's pairs of a window of source frames, sharing the source's
        conversion, luma, scene detection and model features."""
        run = self.source_run
        sources: dict[int, VideoFrame] = {}
        for pairs in window.values():
            for _, ref in pairs:
                sources.setdefault(ref.index, ref)
        ref_frames = [sources[i] for i in sorted(sources)]
        position = {frame.index: i for i, frame in enumerate(ref_frames)}
        self.source_frames_seen += len(ref_frames)
        # Source frames of one conversion share a size and format (a rendition switch in
        # the source splits the work).
        ref_rgb = frames_to_rgb(ref_frames, self.device)
        ref_luma = None
        if any(m in METRICS for m in self.metrics):
            ref_luma = frames_to_luma(ref_frames, self.device)
        run._detect_scenes(ref_frames, ref_frames, lambda role: ref_rgb)
        target = run._target_size(
            (ref_frames[0].width, ref_frames[0].height), (ref_frames[0].width, ref_frames[0].height)
        )
        ref_rgb = _resize_rgb(ref_rgb, target)
        features = {}
        for name, model in self.models.items():
            if model.info.use_ref:
                features[name] = model.reference_features(ref_rgb)
                self.feature_batches += 1
        ref_depth = ref_frames[0].color.bit_depth
        if ref_luma is not None:
            ref_luma = _resize_luma(ref_luma, target, ref_depth, ref_depth)
        for label, pairs in window.items():
            entry = next(e for e in self.encodes if e.spec.label == label)
            for chunk in _split_layouts(pairs):
                rows = self._score_encode(entry, chunk, position, ref_rgb, ref_luma, features, target)
                entry.rows.extend(rows)  # type: ignore[union-attr]
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
        features: Mapping[str, list[torch.Tensor]],
        target: tuple[int, int],
    ) -> list[FrameScores]:
        dist = [d for d, _ in pairs]
        rows_idx = torch.tensor([position[r.index] for _, r in pairs], device=ref_rgb.device)
        native = frames_to_rgb(dist, self.device)
        dist_rgb = _resize_rgb(native, target)
        pair_ref = ref_rgb.index_select(0, rows_idx)
        columns: dict[str, np.ndarray] = {}
        for name, model in self.models.items():
            if model.info.use_ref:
                gathered = [f.index_select(0, rows_idx.to(f.device)) for f in features[name]]
                scores = model.score(dist_rgb, ref_features=gathered)
            else:
                scores = model.score(native)
            columns[name] = scores.float().cpu().numpy().astype(np.float64)
        luma_metrics = [m for m in self.metrics if m in METRICS]
        if luma_metrics and ref_luma is not None:
            ref_color = pairs[0][1].color
            depth = ref_color.bit_depth
            dist_luma = frames_to_luma(
                dist, self.device, rgb_matrix=ref_color.matrix, rgb_range=ref_color.range
            )
            dist_y = _resize_luma(dist_luma, target, dist[0].color.bit_depth, depth)
            ref_y = ref_luma.index_select(0, rows_idx.to(ref_luma.device))
            for name in luma_metrics:
                columns[name] = compute_metric(name, dist_y, ref_y, depth).double().cpu().numpy()
        capture = self.captures[entry.spec.label]
        for name in self.metrics:
            capture.offer(
                name,
                columns[name].tolist(),
                [d.index for d in dist],
                [d.time for d in dist],
                dist_rgb,
                pair_ref,
                [r.index for _, r in pairs],
                [r.time for _, r in pairs],
            )
        scene_scores = [self.source_run.content_scores.get(r.index) for _, r in pairs]
        return [
            FrameScores(
                frame=d.index,
                time=d.time,
                ref_frame=r.index,
                ref_time=r.time,
                values={name: float(columns[name][i]) for name in self.metrics},
                scene_score=scene_scores[i],
            )
            for i, (d, r) in enumerate(pairs)
        ]


def _split_layouts(
    pairs: Sequence[tuple[VideoFrame, VideoFrame]],
) -> list[list[tuple[VideoFrame, VideoFrame]]]:
    """Consecutive runs of pairs whose encode frames share size and format."""
    runs: list[list[tuple[VideoFrame, VideoFrame]]] = []
    for pair in pairs:
        d = pair[0]
        key = (d.width, d.height, d.pix_fmt, d.color)
        if runs and runs[-1][0][0].width == d.width and (
            runs[-1][0][0].width,
            runs[-1][0][0].height,
            runs[-1][0][0].pix_fmt,
            runs[-1][0][0].color,
        ) == key:
            runs[-1].append(pair)
        else:
            runs.append([pair])
    return runs


_ = (time, pd, show_source)
