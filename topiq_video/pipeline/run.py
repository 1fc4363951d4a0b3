"""From video sources to per-frame scores.

One pass over the distorted stream (and, in full-reference mode, the reference stream,
decoded in its own thread): frame selection, time alignment, YUV->RGB on the scoring
device, scaling to a common size, TOPIQ in batches, PSNR-Y/SSIM-Y, and scene cuts on
the frames already decoded. :class:`ScoringRun` yields one :class:`FrameScores` per frame
with constant memory, so it serves live streams as well as files; :func:`score_video`
collects a whole file into a pandas DataFrame.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from topiq_video.errors import InvalidInputError, WeightsError
from topiq_video.metrics import METRICS, compute_metric
from topiq_video.model.registry import (
    DEFAULT_FR_MODEL,
    DEFAULT_NR_MODEL,
    checkpoint_names,
    get_checkpoint,
)
from topiq_video.pipeline.options import (
    FrameSelection,
    ScoreOptions,
)
from topiq_video.video.align import (
    DEFAULT_SEARCH_WINDOW,
    OffsetEstimate,
    PairingStats,
    estimate_offset,
    pair_streams,
    search_span,
)
from topiq_video.video.color import frames_to_luma, frames_to_rgb, luma_thumbnails
from topiq_video.video.decode import (
    VideoFrame,
    VideoInfo,
    open_video,
    probe,
    redact_source,
)

logger = logging.getLogger(__name__)

DEFAULT_PIPELINE_BATCH = 8  # frames per step when no TOPIQ model sets the batch size
THUMBNAIL_SIZE = (36, 64)  # (h, w) luma thumbnails for the offset search
DURATION_MISMATCH_S = 1.0
MAX_OFFSET_LIMIT = 60.0  # the search compares every candidate: keep its cost bounded
HDR_TRANSFERS = frozenset({"pq", "hlg", "smpte2084", "arib-std-b67"})
TABLE_COLUMNS = ("frame", "time", "ref_frame", "ref_time")


def select_frames(self: FrameSelection, frames: Iterable[VideoFrame]) -> Iterator[VideoFrame]:
    """Thin the decoded frames (start/duration are applied by the decoder's seek)."""
    kept = 0
    next_sample: float | None = None
    grid_start = 0.0
    for position, frame in enumerate(frames):
        if position % self.every:
            continue
        if self.sample_fps is not None:
            if next_sample is not None and frame.time + 1e-6 < next_sample:
                continue
            # Stay on the ideal grid (t0 + k / fps), so the rate does not drift.
            if next_sample is None:
                grid_start = frame.time
            step = 1.0 / self.sample_fps
            k = math.floor((frame.time + 1e-6 - grid_start) / step) + 1
            next_sample = grid_start + k * step
        yield frame
        kept += 1
        if self.max_frames is not None and kept >= self.max_frames:
            return


def expected_count(self: FrameSelection, info: VideoInfo) -> int | None:
    """Frames this selection will yield, when the source says how long it is."""
    total = info.frame_count
    fps = float(info.fps) if info.fps else None
    if total is None and info.duration and fps:
        total = int(round(info.duration * fps))
    if total is None:
        return self.max_frames
    if fps:
        first = int(round((self.start or 0.0) * fps))
        last = total if self.duration is None else min(total, first + int(self.duration * fps))
        total = max(0, last - first)
        if self.sample_fps is not None:
            total = math.ceil(total * min(1.0, self.sample_fps / fps))
    total = math.ceil(total / self.every)
    return total if self.max_frames is None else min(total, self.max_frames)


@dataclass(frozen=True)
class FrameScores:
    """The scores of one distorted frame (and the reference frame it was compared with)."""

    frame: int
    time: float
    ref_frame: int | None
    ref_time: float | None
    values: Mapping[str, float]


@dataclass(frozen=True)
class Alignment:
    """How the two streams were paired; what ``report.json`` calls ``alignment``."""

    offset: OffsetEstimate
    scaling: str | None
    warnings: tuple[str, ...]
    pairing: PairingStats | None = None

    def to_dict(self) -> dict[str, Any]:
        est = self.offset
        offsets, costs = est.curve
        pairing = self.pairing
        return {
            "offset_frames": est.offset_frames,
            "offset_seconds": est.offset_seconds,
            "confidence": est.confidence,
            "method": est.method,
            "message": est.message,
            "matched": pairing.paired if pairing else None,
            "unmatched_dist": pairing.unmatched_dist if pairing else None,
            "unmatched_ref": pairing.unmatched_ref if pairing else None,
            "pairing_complete": pairing.complete if pairing else None,
            "scaling": self.scaling,
            "warnings": list(self.warnings),
            "search": {
                "offsets": [float(x) for x in offsets],
                "costs": [None if not math.isfinite(c) else float(c) for c in costs],
            },
        }


def resolve_metrics(
    model: str | None, metrics: Sequence[str] | None, has_ref: bool
) -> tuple[str, ...]:
    """The metric columns of a run, checked against the mode."""
    default_model = model or (DEFAULT_FR_MODEL if has_ref else DEFAULT_NR_MODEL)
    if metrics is None:
        names: list[str] = [default_model, *(("psnr_y", "ssim_y") if has_ref else ())]
    else:
        names = []
        for raw in metrics:
            name = raw.strip()
            if not name:
                continue
            name = default_model if name == "topiq" else name
            if name not in names:
                names.append(name)
    if not names:
        raise InvalidInputError("--metrics is empty: name at least one metric.")
    known = set(checkpoint_names()) | set(METRICS)
    for name in names:
        if name not in known:
            raise InvalidInputError(
                f"Unknown metric {name!r}. Valid: {', '.join(sorted(known))} "
                "(or 'topiq' for the selected model)."
            )
        needs_ref = name in METRICS or get_checkpoint(name).use_ref
        if needs_ref and not has_ref:
            raise InvalidInputError(
                f"{name} is a full-reference metric: pass the source with --ref, or use "
                f"a no-reference model such as {DEFAULT_NR_MODEL}."
            )
    return tuple(names)


def parse_scale_to(scale_to: str) -> str | tuple[int, int]:
    if scale_to in ("ref", "dist"):
        return scale_to
    match = re.fullmatch(r"(\d+)[x:](\d+)", scale_to.strip())
    if not match or int(match.group(1)) < 8 or int(match.group(2)) < 8:
        raise InvalidInputError(
            f"--scale-to {scale_to!r} is not understood: use 'ref', 'dist' or WIDTHxHEIGHT "
            "(e.g. 1920x1080)."
        )
    return int(match.group(1)), int(match.group(2))


def compare_streams(dist: VideoInfo, ref: VideoInfo | None) -> list[str]:
    """Human-readable warnings about inputs that will not compare cleanly."""
    warnings: list[str] = []
    for role, info in (("distorted", dist), ("reference", ref)):
        if info is None:
            continue
        if info.color.transfer.lower() in HDR_TRANSFERS:
            warnings.append(
                f"The {role} input is HDR ({info.color.transfer.upper()} transfer): TOPIQ was "
                "trained on SDR images, so its scores on HDR video are not calibrated."
            )
        if info.is_vfr:
            consequence = (
                "frames are paired by timestamp, so check the alignment section"
                if ref is not None
                else "frame numbers are not a clock: use the time column"
            )
            warnings.append(f"The {role} input has a variable frame rate: {consequence}.")
    if ref is None:
        return warnings
    if dist.fps and ref.fps and abs(float(dist.fps) - float(ref.fps)) > 1e-3:
        warnings.append(
            f"Frame rates differ ({float(dist.fps):.3f} vs {float(ref.fps):.3f} fps): each "
            "distorted frame is compared with the reference frame shown at its instant."
        )
    if (dist.width, dist.height) != (ref.width, ref.height):
        warnings.append(
            f"Resolutions differ ({dist.width}x{dist.height} vs {ref.width}x{ref.height}): "
            "frames are scaled to a common size before comparison."
        )
    if dist.duration and ref.duration and abs(dist.duration - ref.duration) > DURATION_MISMATCH_S:
        warnings.append(
            f"Durations differ by {abs(dist.duration - ref.duration):.2f} s "
            f"({dist.duration:.2f} vs {ref.duration:.2f} s): only the common overlap is scored."
        )
    if "unknown" not in (dist.scan_type, ref.scan_type) and dist.scan_type != ref.scan_type:
        warnings.append(
            f"Scan types differ ({dist.scan_type} vs {ref.scan_type}): deinterlace both the "
            "same way before comparing for meaningful scores."
        )
    return warnings


def video_info_dict(info: VideoInfo) -> dict[str, Any]:
    """A JSON-friendly probe (fractions become floats, URL secrets masked)."""
    data = asdict(info)
    data["source"] = redact_source(info.source)
    data["path"] = data["source"]
    data["fps"] = float(info.fps) if info.fps else None
    data["time_base"] = str(info.time_base)
    return data


def _read_thumbnails(source: str, span: float) -> tuple[np.ndarray, np.ndarray]:
    thumbs: list[torch.Tensor] = []
    times: list[float] = []
    chunk: list[VideoFrame] = []
    with open_video(source, duration=span) as reader:
        for frame in reader:
            chunk.append(frame)
            if len(chunk) == 32:
                thumbs.append(luma_thumbnails(chunk, size=THUMBNAIL_SIZE))
                times.extend(f.time for f in chunk)
                chunk = []
        if chunk:
            thumbs.append(luma_thumbnails(chunk, size=THUMBNAIL_SIZE))
            times.extend(f.time for f in chunk)
    return torch.cat(thumbs).cpu().numpy(), np.asarray(times)


class ScoringRun:
    """One scoring pass. Iterate it for :class:`FrameScores`; the attributes describe it.

    Construction probes the inputs, resolves the metrics, loads the weights and (with a
    reference and ``offset="auto"``) estimates the offset, so every input or weights error
    is raised before any frame is scored. ``models`` may pass already loaded TOPIQ models
    (e.g. one reference feeding several encodes).
    """

    def __init__(
        self,
        dist: str,
        ref: str | None = None,
        options: ScoreOptions | None = None,
        *,
        models: Mapping[str, Any] | None = None,
    ) -> None:
        self.options = options or ScoreOptions()
        opts = self.options
        self.dist_source = str(dist)
        self.ref_source = None if ref is None else str(ref)
        self.metrics = resolve_metrics(opts.model, opts.metrics, ref is not None)
        self._scale = parse_scale_to(opts.scale_to)
        self.inputs: dict[str, VideoInfo] = {"dist": probe(self.dist_source)}
        if self.ref_source is not None:
            self.inputs["ref"] = probe(self.ref_source)
        self.warnings = compare_streams(self.inputs["dist"], self.inputs.get("ref"))
        for message in self.warnings:
            logger.warning("%s", message)

        self.models = dict(models or {})
        topiq_names = [m for m in self.metrics if m not in METRICS]
        if opts.weights is not None and len(topiq_names) > 1:
            raise InvalidInputError(
                "--weights names one checkpoint file, but several TOPIQ models were asked for "
                f"({', '.join(topiq_names)}): score them in separate runs."
            )
        from topiq_video.model import load_model

        for name in topiq_names:
            if name not in self.models:
                try:
                    self.models[name] = load_model(
                        name,
                        weights=opts.weights,
                        device=opts.device,
                        precision=opts.precision,
                        batch_size=opts.batch_size,
                        progress=opts.progress,
                    )
                except WeightsError as exc:
                    if self.ref_source is None or opts.weights is not None:
                        raise
                    raise WeightsError(
                        f"{exc}\nPSNR and SSIM need no weights: `--metrics psnr_y,ssim_y` "
                        "(metrics=... in Python) scores without TOPIQ."
                    ) from exc
        if self.models:
            self.device = next(iter(self.models.values())).device
        else:
            from topiq_video.scoring import resolve_device

            self.device = resolve_device(opts.device)
        self.batch_size = opts.batch_size or min(
            [m.batch_size for m in self.models.values()] or [DEFAULT_PIPELINE_BATCH]
        )

        self.offset: OffsetEstimate | None = None
        if self.ref_source is not None:
            self.offset = self._estimate_offset()
        self.pairing: PairingStats | None = None
        self.decode_stats: dict[str, Any] = {}
        # Scene cuts, numbered as frames of the stream they were found in (the reference in
        # FR mode, the input otherwise): the report maps them onto the scored rows.
        self.cuts: list[int] = []
        self.content_scores: pd.Series | None = None
        self.frames_scored = 0
        self._detector = None
        self._last_scene_frame = -1
        self._oom_warned = False
        if opts.detect_scenes:
            from topiq_video.scenes import ContentDetector

            self._detector = ContentDetector(
                threshold=opts.scene_threshold, min_scene_len=opts.min_scene_len
            )

    # -- set-up ------------------------------------------------------------------------
    def _estimate_offset(self) -> OffsetEstimate:
        opts = self.options
        ref_info = self.inputs["ref"]
        ref_fps = float(ref_info.fps) if ref_info.fps else None
        if opts.offset != "auto":
            try:
                seconds = float(opts.offset)
                if not math.isfinite(seconds):
                    raise ValueError
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f"--offset {opts.offset!r}: use 'auto' or a finite number of seconds "
                    "(positive when the encode starts later in the source)."
                ) from exc
            return OffsetEstimate.manual(seconds, 1.0 / ref_fps if ref_fps else 1.0 / 30)
        if not (math.isfinite(opts.max_offset) and 0 <= opts.max_offset <= MAX_OFFSET_LIMIT):
            raise InvalidInputError(
                f"--max-offset must be between 0 and {MAX_OFFSET_LIMIT:g} seconds, got "
                f"{opts.max_offset}; for larger shifts pass --offset SECONDS."
            )
        live = [role for role, info in self.inputs.items() if info.is_live]
        if live:
            # Each connection to a live source starts at "now": an offset measured on one
            # connection says nothing about the next.
            raise InvalidInputError(
                "--offset auto needs seekable inputs, but the "
                + " and ".join("reference" if r == "ref" else "distorted input" for r in live)
                + " is a live stream: pass --offset SECONDS (0 when both are captured together)."
            )
        span = search_span(DEFAULT_SEARCH_WINDOW, opts.max_offset)
        dist_thumbs, dist_times = _read_thumbnails(self.dist_source, span)
        ref_thumbs, ref_times = _read_thumbnails(self.ref_source or "", span)
        if len(ref_times) < 2 or len(dist_times) < 2:
            duration = 1.0 / ref_fps if ref_fps else 1.0 / 30
            logger.warning("Too few frames to search for an offset; assuming 0.")
            return OffsetEstimate.manual(0.0, duration)
        estimate = estimate_offset(
            dist_thumbs, dist_times, ref_thumbs, ref_times, max_offset=opts.max_offset
        )
        logger.info(
            "Offset %+.3f s (%s reference frames), confidence %.2f",
            estimate.offset_seconds,
            estimate.offset_frames,
            estimate.confidence,
        )
        if estimate.message:
            self.warnings.append(estimate.message)
            logger.warning("%s", estimate.message)
        return estimate

    @property
    def expected_frames(self) -> int | None:
        """How many frames the run will score, when the input says (for progress bars)."""
        return expected_count(self.options.selection, self.inputs["dist"])

    @property
    def scaling(self) -> str | None:
        if self.ref_source is None:
            return None
        dist, ref = self.inputs["dist"], self.inputs["ref"]
        target = self._target_size()
        parts = []
        if (dist.width, dist.height) != target:
            parts.append(f"distorted {dist.width}x{dist.height} -> {target[0]}x{target[1]}")
        if (ref.width, ref.height) != target:
            parts.append(f"reference {ref.width}x{ref.height} -> {target[0]}x{target[1]}")
        return ", ".join(parts) + " (bicubic)" if parts else None

    def _target_size(self) -> tuple[int, int]:
        dist = self.inputs["dist"]
        ref = self.inputs.get("ref") or dist
        if self._scale == "ref":
            return ref.width, ref.height
        if self._scale == "dist":
            return dist.width, dist.height
        return self._scale  # type: ignore[return-value]

    @property
    def alignment(self) -> Alignment | None:
        if self.offset is None:
            return None
        return Alignment(self.offset, self.scaling, tuple(self.warnings), self.pairing)

    # -- the pass ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[FrameScores]:
        sel = self.options.selection
        with open_video(self.dist_source, start=sel.start, duration=sel.duration) as dist_reader:
            dist_frames = select_frames(sel, dist_reader)
            try:
                if self.ref_source is None:
                    yield from self._score_batches((f, None) for f in dist_frames)
                else:
                    yield from self._score_pairs(dist_frames)
            finally:
                self.decode_stats["dist"] = asdict(dist_reader.stats)
                if self._detector is not None:
                    self.cuts = list(self._detector.finish())
                    self.content_scores = self._detector.content_scores

    def _score_pairs(self, dist_frames: Iterator[VideoFrame]) -> Iterator[FrameScores]:
        assert self.offset is not None and self.ref_source is not None
        sel = self.options.selection
        offset = self.offset.offset_seconds
        # Seek the reference near the first distorted instant, a second early for safety.
        ref_start = None
        if sel.start:
            ref_start = max(0.0, sel.start + offset - 1.0) or None
        with open_video(self.ref_source, start=ref_start) as ref_reader:
            pairer = pair_streams(
                dist_frames,
                ref_reader,
                offset,
                ref_frame_duration=self.offset.ref_frame_duration,
                # Count every unmatched frame of a whole file; a capped run or a live
                # stream stops as soon as no more pairs are possible.
                drain=sel.max_frames is None
                and sel.duration is None
                and not any(info.is_live for info in self.inputs.values()),
            )
            try:
                yield from self._score_batches(pairer)
            finally:
                self.pairing = pairer.stats
                self.decode_stats["ref"] = asdict(ref_reader.stats)

    def _score_batches(
        self, pairs: Iterable[tuple[VideoFrame, VideoFrame | None]]
    ) -> Iterator[FrameScores]:
        batch: list[tuple[VideoFrame, VideoFrame | None]] = []
        for pair in pairs:
            # A stream may change size or format mid-way (an HLS rendition switch): frames
            # of one batch are converted together, so start a new batch there.
            if batch and _layout(pair) != _layout(batch[0]):
                yield from self._score_batch(batch)
                batch = []
            batch.append(pair)
            if len(batch) >= self.batch_size:
                yield from self._score_batch(batch)
                batch = []
        if batch:
            yield from self._score_batch(batch)

    def _score_batch(
        self, batch: Sequence[tuple[VideoFrame, VideoFrame | None]]
    ) -> list[FrameScores]:
        """Score one batch; on a GPU out-of-memory, in halves (never losing a frame)."""
        try:
            return self._score_batch_once(batch)
        except torch.cuda.OutOfMemoryError:
            if len(batch) == 1:
                raise
            if not self._oom_warned:
                logger.warning(
                    "GPU out of memory with %d frames per batch: continuing with %d.",
                    len(batch),
                    len(batch) // 2,
                )
                self._oom_warned = True
            torch.cuda.empty_cache()
            self.batch_size = max(1, len(batch) // 2)
            half = len(batch) // 2
            return self._score_batch(batch[:half]) + self._score_batch(batch[half:])

    def _score_batch_once(
        self, batch: Sequence[tuple[VideoFrame, VideoFrame | None]]
    ) -> list[FrameScores]:
        dist = [d for d, _ in batch]
        ref = [r for _, r in batch if r is not None]
        has_ref = len(ref) == len(batch) and bool(ref)
        target = self._target_size() if has_ref else None
        columns: dict[str, np.ndarray] = {}

        native: dict[str, torch.Tensor] = {}  # each side converted to RGB once per batch

        def rgb(role: str) -> torch.Tensor:
            if role not in native:
                native[role] = frames_to_rgb(dist if role == "dist" else ref, self.device)
            return native[role]

        if self.models:
            dist_rgb = _resize_rgb(rgb("dist"), target)
            ref_rgb = _resize_rgb(rgb("ref"), target) if has_ref else None
            for name, model in self.models.items():
                # NR models judge the encode as delivered, at its own resolution.
                if model.info.use_ref:
                    scores = model.score(dist_rgb, ref_rgb)
                else:
                    scores = model.score(rgb("dist"))
                columns[name] = scores.float().cpu().numpy().astype(np.float64)
            del dist_rgb, ref_rgb
        if self._detector is not None:
            # Cuts come from the source in FR mode (the encode's damage must not fake cuts),
            # numbered as the source's frames; a reference frame shown twice is seen once.
            role = "ref" if has_ref else "dist"
            source = ref if has_ref else dist
            fresh: list[int] = []  # positions in the batch of frames the detector has not seen
            for i, frame in enumerate(source):
                last = source[fresh[-1]].index if fresh else self._last_scene_frame
                if frame.index > last:
                    fresh.append(i)
            if fresh:
                from topiq_video.scenes import downscale_for_scenes

                small = downscale_for_scenes(rgb(role)[fresh])
                self._detector.update([source[i].index for i in fresh], small)
                self._last_scene_frame = source[fresh[-1]].index
        native.clear()  # free the full-size RGB before the luma metrics

        luma_metrics = [m for m in self.metrics if m in METRICS]
        if luma_metrics and has_ref:
            ref_depth = ref[0].color.bit_depth
            dist_y = _resize_luma(
                frames_to_luma(dist, self.device), target, dist[0].color.bit_depth, ref_depth
            )
            ref_y = _resize_luma(frames_to_luma(ref, self.device), target, ref_depth, ref_depth)
            for name in luma_metrics:
                values = compute_metric(name, dist_y, ref_y, ref_depth)
                columns[name] = values.double().cpu().numpy()

        rows = []
        for i, (d, r) in enumerate(batch):
            rows.append(
                FrameScores(
                    frame=d.index,
                    time=d.time,
                    ref_frame=None if r is None else r.index,
                    ref_time=None if r is None else r.time,
                    values={name: float(columns[name][i]) for name in self.metrics},
                )
            )
        self.frames_scored += len(rows)
        return rows

    def model_dict(self) -> dict[str, Any] | None:
        """What ``report.json`` calls ``model`` (None when no TOPIQ model ran)."""
        if not self.models:
            return None
        entries = []
        for name, model in self.models.items():
            weights = model.weights
            entries.append(
                {
                    "name": name,
                    "mode": model.info.mode,
                    "train_set": model.info.train_set,
                    "weights_file": None if weights is None else str(weights.path.name),
                    "sha256": None if weights is None else weights.sha256,
                    "weights_source": None if weights is None else weights.source,
                    "precision": model.precision,
                    "device": str(model.device),
                    "batch_size": model.batch_size,
                    "terms": model.info.terms,
                }
            )
        first = dict(entries[0])
        first["models"] = entries
        return first

    def metadata(self) -> dict[str, Any]:
        """Inputs, alignment, model and decode facts, JSON-friendly."""
        alignment = self.alignment
        return {
            "inputs": {role: video_info_dict(info) for role, info in self.inputs.items()},
            "alignment": None if alignment is None else alignment.to_dict(),
            "warnings": list(self.warnings),
            "model": self.model_dict(),
            "metrics": list(self.metrics),
            "decode": dict(self.decode_stats),
            "scene_cuts": list(self.cuts),
            "frames_scored": self.frames_scored,
        }


def _layout(pair: tuple[VideoFrame, VideoFrame | None]) -> tuple[Any, ...]:
    """What frames must share to be converted in one batch."""
    return tuple(
        None if f is None else (f.width, f.height, f.pix_fmt, f.color, f.planes[0].shape)
        for f in pair
    )


def _resize_rgb(rgb: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None or (rgb.shape[-1], rgb.shape[-2]) == size:
        return rgb
    width, height = size
    out = F.interpolate(
        rgb, size=(height, width), mode="bicubic", align_corners=False, antialias=True
    )
    return out.clamp_(0.0, 1.0)


def _resize_luma(
    luma: torch.Tensor, size: tuple[int, int] | None, depth: int, target_depth: int
) -> torch.Tensor:
    peak = float(2**target_depth - 1)
    if depth != target_depth:
        luma = luma * (2.0 ** (target_depth - depth))
    if size is not None and (luma.shape[-1], luma.shape[-2]) != size:
        width, height = size
        luma = F.interpolate(
            luma[:, None].float(),
            size=(height, width),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )[:, 0]
        luma = luma.round_().clamp_(0.0, peak)
    return luma


def frames_table(
    rows: Iterable[FrameScores], metrics: Sequence[str], has_ref: bool
) -> pd.DataFrame:
    """The per-frame table: frame, time, [ref_frame, ref_time], then one column per metric."""
    records = []
    for row in rows:
        record: dict[str, Any] = {"frame": row.frame, "time": row.time}
        if has_ref:
            record["ref_frame"] = row.ref_frame
            record["ref_time"] = row.ref_time
        record.update(row.values)
        records.append(record)
    columns = ["frame", "time", *(["ref_frame", "ref_time"] if has_ref else []), *metrics]
    table = pd.DataFrame.from_records(records, columns=columns)
    table["frame"] = table["frame"].astype("int64")
    if has_ref:
        table["ref_frame"] = table["ref_frame"].astype("Int64")
    for name in metrics:
        table[name] = table[name].astype("float64")
    return table


def score_video(
    dist: str,
    ref: str | None = None,
    *,
    on_frame: Callable[[FrameScores], None] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Score a video file or stream; returns the per-frame table.

    ``options`` are the fields of :class:`ScoreOptions`; frame selection may be given
    flat (``start``, ``duration``, ``every``, ``sample_fps``, ``max_frames``). The
    DataFrame's ``attrs`` hold the inputs, alignment, model and decode metadata.
    """
    selection_keys = {"start", "duration", "every", "sample_fps", "max_frames"}
    selection = {k: options.pop(k) for k in list(options) if k in selection_keys}
    if selection:
        if "selection" in options:
            raise InvalidInputError("Pass either selection= or its fields, not both.")
        options["selection"] = FrameSelection(**selection)
    if isinstance(options.get("metrics"), str):
        options["metrics"] = tuple(options["metrics"].split(","))
    try:
        opts = ScoreOptions(**options)
    except TypeError as exc:
        raise InvalidInputError(f"score_video: {exc}") from exc
    run = ScoringRun(dist, ref, opts)
    rows: list[FrameScores] = []
    for row in run:
        rows.append(row)
        if on_frame is not None:
            on_frame(row)
    table = frames_table(rows, run.metrics, ref is not None)
    table.attrs.update(run.metadata())
    return table
