"""The scoring run: frames -> pairs -> scores, in one pass over each source, opened once.

Construction checks the options, loads the weights and opens the sources (their headers
only), so every option, input or weights error is raised before any frame is decoded.
Iterating the run (once) starts decoding: with a reference and ``offset="auto"`` the first
seconds of both streams are looked at for the offset search (and then decoded again from
their kept packets, never fetched again), every distorted frame is paired with the
reference frame its picture came from, colour is converted and pictures scaled on the
scoring device, TOPIQ and PSNR/SSIM score each batch, the scene detector sees the frames
already decoded and the worst frames are captured for the gallery as they go by.

:class:`ScoringRun` yields one :class:`FrameScores` per frame in constant memory, so it
serves live streams as well as files; :func:`score_video` turns a whole run into a
:class:`~topiq_video.result.ScoreResult`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from topiq_video.errors import AlignmentError, InvalidInputError, WeightsError
from topiq_video.metrics import FFMPEG_METRICS, METRICS, REFERENCE_METRICS, compute_metric
from topiq_video.model.registry import (
    DEFAULT_FR_MODEL,
    DEFAULT_NR_MODEL,
    checkpoint_names,
    get_checkpoint,
)
from topiq_video.pipeline.options import FrameSelection, ScoreOptions
from topiq_video.video.align import (
    DEFAULT_SEARCH_WINDOW,
    OffsetEstimate,
    PairingStats,
    estimate_offset,
    pair_streams,
    search_span,
)
from topiq_video.video.color import frames_to_luma, frames_to_rgb
from topiq_video.video.probe import VideoInfo
from topiq_video.video.source import FrameSource, VideoFrame, open_source, show_source

if TYPE_CHECKING:
    from topiq_video.vmaf import FFmpegMetrics

logger = logging.getLogger(__name__)

DEFAULT_PIPELINE_BATCH = 8  # frames per step when no TOPIQ model sets the batch size
DURATION_MISMATCH_S = 1.0
HDR_TRANSFERS = frozenset({"pq", "hlg", "smpte2084", "arib-std-b67"})
REF_LEAD_S = 1.0  # decode the reference this much before the first distorted instant


@dataclass(frozen=True)
class FrameScores:
    """The scores of one distorted frame (and the reference frame it was compared with).

    ``scene_score`` is the scene detector's content score of the frame its cuts are found
    in (the reference frame in full-reference mode), when it ran.
    """

    frame: int
    time: float
    ref_frame: int | None
    ref_time: float | None
    values: Mapping[str, float]
    scene_score: float | None = None


# ---------------------------------------------------------------------------- options


def resolve_metrics(
    model: str | None, metrics: Sequence[str] | None, has_ref: bool
) -> tuple[str, ...]:
    """The metric columns of a run, checked against the mode."""
    known = set(checkpoint_names()) | set(REFERENCE_METRICS)
    if model is not None and model not in checkpoint_names():
        get_checkpoint(model)  # raises "Unknown model ..." with the valid names
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
        raise InvalidInputError("metrics is empty: name at least one metric.")
    for name in names:
        if name not in known:
            raise InvalidInputError(
                f"Unknown metric {name!r}. Valid: {', '.join(sorted(known))} "
                "(or 'topiq' for the selected model)."
            )
        needs_ref = name in REFERENCE_METRICS or get_checkpoint(name).use_ref
        if needs_ref and not has_ref:
            raise InvalidInputError(
                f"{name} is a full-reference metric: give the source as the reference, or use "
                f"a no-reference model such as {DEFAULT_NR_MODEL}."
            )
    return tuple(names)


def parse_scale_to(scale_to: str, max_pixels: int) -> str | tuple[int, int]:
    """``"ref"``, ``"dist"`` or a (width, height) within ``max_pixels``."""
    if scale_to in ("ref", "dist"):
        return scale_to
    match = re.fullmatch(r"(\d{1,6})[x:](\d{1,6})", scale_to.strip())
    if not match or int(match.group(1)) < 8 or int(match.group(2)) < 8:
        raise InvalidInputError(
            f"scale_to {scale_to!r} is not understood: use 'ref', 'dist' or WIDTHxHEIGHT "
            "(e.g. 1920x1080)."
        )
    width, height = int(match.group(1)), int(match.group(2))
    if width * height > max_pixels:
        raise InvalidInputError(
            f"scale_to {width}x{height} is {width * height / 1e6:.0f} megapixels, more than "
            f"max_pixels ({max_pixels / 1e6:.0f}); choose a smaller size or raise max_pixels."
        )
    return width, height


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
            "distorted frame is compared with the reference frame its picture came from."
        )
    if dist.rotation != ref.rotation:
        which = [
            f"the {role} by {info.rotation} degrees"
            for role, info in (("distorted input", dist), ("reference", ref))
            if info.rotation
        ]
        warnings.append(
            f"Rotation metadata differs: {' and '.join(which)} is turned upright before "
            f"comparison (displayed {dist.width}x{dist.height} vs {ref.width}x{ref.height}). "
            "If one file was rotated by mistake, the scores compare different orientations."
        )
    elif (dist.width, dist.height) != (ref.width, ref.height):
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


def select_frames(selection: FrameSelection, frames: Iterable[VideoFrame]) -> Iterator[VideoFrame]:
    """Thin the decoded frames by ``every`` and ``sample_fps`` (start/duration are applied by
    the decoder; ``max_frames`` counts scored rows, after pairing)."""
    next_sample: float | None = None
    grid_start = 0.0
    for position, frame in enumerate(frames):
        if position % selection.every:
            continue
        if selection.sample_fps is not None:
            if next_sample is not None and frame.time + 1e-6 < next_sample:
                continue
            # Stay on the ideal grid (t0 + k / fps), so the rate does not drift.
            if next_sample is None:
                grid_start = frame.time
            step = 1.0 / selection.sample_fps
            k = math.floor((frame.time + 1e-6 - grid_start) / step) + 1
            next_sample = grid_start + k * step
        yield frame


def expected_count(selection: FrameSelection, info: VideoInfo) -> int | None:
    """Frames a selection will yield, when the source says how long it is."""
    total = info.frame_count
    fps = float(info.fps) if info.fps else None
    if total is None and info.duration and fps:
        total = int(round(info.duration * fps))
    if total is None and selection.duration and fps:  # a live stream asked for a while
        total = int(round(((selection.start or 0.0) + selection.duration) * fps))
    if total is None:
        return selection.max_frames
    if fps:
        first = int(round((selection.start or 0.0) * fps))
        last = (
            total
            if selection.duration is None
            else min(total, first + int(selection.duration * fps))
        )
        total = max(0, last - first)
        if selection.sample_fps is not None:
            total = math.ceil(total * min(1.0, selection.sample_fps / fps))
    total = math.ceil(total / selection.every)
    return total if selection.max_frames is None else min(total, selection.max_frames)


def rows_rate(selection: FrameSelection, info: VideoInfo) -> Fraction | None:
    """Frames per second of the scored rows, when known (XPSNR weighs motion by it)."""
    if selection.sample_fps is not None:
        return Fraction(selection.sample_fps).limit_denominator(1001000)
    if info.fps:
        return Fraction(info.fps) / selection.every
    return None


def ffmpeg_metrics(
    metrics: Sequence[str], options: ScoreOptions, info: VideoInfo
) -> FFmpegMetrics | None:
    """The owner of the FFmpeg process computing a run's VMAF/XPSNR (None without them).
    Made before anything is decoded, so a missing extra is reported at once."""
    names = [m for m in metrics if m in FFMPEG_METRICS]
    if not names:
        return None
    from topiq_video.vmaf import FFmpegMetrics

    return FFmpegMetrics(
        names, vmaf_model=options.vmaf_model, rate=rows_rate(options.selection, info)
    )


def load_models(
    metrics: Sequence[str],
    options: ScoreOptions,
    *,
    has_ref: bool,
    given: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The TOPIQ models a run's metrics need, loaded once (``given`` ones reused)."""
    models = dict(given or {})
    topiq_names = [m for m in metrics if m not in REFERENCE_METRICS]
    if options.weights is not None and len(topiq_names) > 1:
        raise InvalidInputError(
            "weights names one checkpoint file, but several TOPIQ models were asked for "
            f"({', '.join(topiq_names)}): score them in separate runs."
        )
    from topiq_video.model import load_model

    for name in topiq_names:
        if name in models:
            continue
        try:
            models[name] = load_model(
                name,
                weights=options.weights,
                device=options.device,
                precision=options.precision,
                batch_size=options.batch_size,
                progress=options.progress,
            )
        except WeightsError as exc:
            if not has_ref or options.weights is not None:
                raise
            raise WeightsError(
                f"{exc}\nPSNR, SSIM, VMAF and XPSNR need no weights: metrics such as "
                "psnr_y,ssim_y score without TOPIQ."
            ) from exc
    return models


def step_batcher(options: ScoreOptions, models: Mapping[str, Any]) -> tuple[Any, Any]:
    """The scoring device and the pipeline's own step (colour, PSNR/SSIM, scenes), which is
    independent of the models': they split what they get into their own batches."""
    from topiq_video.batching import HalvingBatcher

    if models:
        device = next(iter(models.values())).device
    else:
        from topiq_video.scoring import resolve_device

        device = resolve_device(options.device)
    size = options.batch_size or max(
        [DEFAULT_PIPELINE_BATCH, *(m.batch_size for m in models.values())]
    )
    return device, HalvingBatcher(size, device=device, item_name="frame")


def target_size(
    scale: str | tuple[int, int], dist_wh: tuple[int, int], ref_wh: tuple[int, int]
) -> tuple[int, int]:
    """The common size of a pair under a parsed ``scale_to``."""
    if scale == "ref":
        return ref_wh
    if scale == "dist":
        return dist_wh
    return scale  # type: ignore[return-value]


class SceneTracker:
    """The scene detector fed with frames already decoded, each source frame once; keeps
    the content score of every frame it saw (for the timeline)."""

    def __init__(self, options: ScoreOptions) -> None:
        from topiq_video.scenes import ContentDetector

        self.detector = ContentDetector(
            threshold=options.scene_threshold, min_scene_len=options.min_scene_len
        )
        self.content: dict[int, float] = {}
        self._last = -1

    def feed(self, frames: Sequence[VideoFrame], rgb: Callable[[], torch.Tensor]) -> list[float]:
        """Feed a batch of frames (``rgb()`` gives their pictures); their content scores."""
        fresh: list[int] = []  # positions of frames the detector has not seen
        for i, frame in enumerate(frames):
            last = frames[fresh[-1]].index if fresh else self._last
            if frame.index > last:
                fresh.append(i)
        if fresh:
            from topiq_video.scenes import downscale_for_scenes

            small = downscale_for_scenes(rgb()[fresh])
            numbers = [frames[i].index for i in fresh]
            self.detector.update(numbers, small)
            scores = self.detector.last_scores(len(numbers))
            self.content.update(zip(numbers, scores, strict=True))
            self._last = frames[fresh[-1]].index
        return [self.content.get(f.index, math.nan) for f in frames]

    def finish(self) -> list[int]:
        return list(self.detector.finish())


# ---------------------------------------------------------------------------- the run


class ScoringRun:
    """One scoring pass. Iterate it (once) for :class:`FrameScores`; close it when done (or
    use it as a context manager). Attributes describe the run as it goes.

    ``dist`` and ``ref`` are paths, URLs or :class:`~topiq_video.video.source.FrameSource`
    objects. ``models`` may pass already loaded TOPIQ models.
    """

    def __init__(
        self,
        dist: str | Path | FrameSource,
        ref: str | Path | FrameSource | None = None,
        options: ScoreOptions | None = None,
        *,
        models: Mapping[str, Any] | None = None,
    ) -> None:
        self.options = options or ScoreOptions()
        opts = self.options
        self.dist_source = dist if isinstance(dist, FrameSource) else str(dist)
        self.ref_source = None if ref is None or isinstance(ref, FrameSource) else str(ref)
        self.has_ref = ref is not None
        self.metrics = resolve_metrics(opts.model, opts.metrics, self.has_ref)
        self._scale = parse_scale_to(opts.scale_to, opts.max_pixels)
        self.models: dict[str, Any] = {}
        self.offset: OffsetEstimate | None = None
        self.pairing: PairingStats | None = None
        self.warnings: list[str] = []
        self.cuts: list[int] = []  # numbered as frames of the stream they were found in
        self.frames_scored = 0
        self.last_time: float | None = None
        self._iterated = False
        self._closed = False
        self._scenes = SceneTracker(opts) if opts.detect_scenes else None
        self._capture = None
        if opts.gallery > 0:
            from topiq_video.pipeline.capture import WorstFrameCapture

            self._capture = WorstFrameCapture(self.metrics, opts.gallery)
        self._sources: dict[str, FrameSource] = {}
        self._ffmpeg: FFmpegMetrics | None = None
        self.ffmpeg_values: dict[str, np.ndarray] | None = None  # VMAF/XPSNR, at the end
        self._ffmpeg_failure: Exception | None = None
        try:
            # Inputs first: a wrong path should not wait for a weights download.
            self._open_sources(dist, ref)
            self.file_cuts = self._load_cut_list()
            self._ffmpeg = ffmpeg_metrics(self.metrics, opts, self.inputs["dist"])
            self.models = load_models(self.metrics, opts, has_ref=self.has_ref, given=models)
        except BaseException:
            self.close()
            raise
        self.device, self._batcher = step_batcher(opts, self.models)

    # -- set-up ------------------------------------------------------------------------
    def _open_sources(self, dist: Any, ref: Any) -> None:
        opts = self.options
        sel = opts.selection
        common = {"timeout": opts.timeout, "max_pixels": opts.max_pixels}
        self._sources["dist"] = open_source(
            dist, start=sel.start, duration=sel.duration, thumbnails=self.has_ref, **common
        )
        if ref is None:
            return
        ref_start = None
        if sel.start:
            if opts.offset == "auto":
                ref_start = sel.start - opts.max_offset - REF_LEAD_S
            else:
                ref_start = sel.start + float(opts.offset) - REF_LEAD_S
            ref_start = ref_start if ref_start > 0 else None
        self._sources["ref"] = open_source(ref, start=ref_start, thumbnails=True, **common)
        if opts.offset == "auto":
            live = [role for role, info in self.inputs.items() if info.is_live]
            if live:
                # Each connection to a live source starts at "now": an offset measured
                # on one connection says nothing about the next.
                raise InvalidInputError(
                    "An automatic offset needs seekable inputs, but the "
                    + " and ".join("reference" if r == "ref" else "distorted input" for r in live)
                    + " is a live stream: give the offset in seconds (0 when both are "
                    "captured together)."
                )

    def _load_cut_list(self) -> list[int] | None:
        if self.options.scenes_file is None:
            return None
        from topiq_video.scenes import load_cut_list

        fps = self.inputs["ref" if self.has_ref else "dist"].fps
        return load_cut_list(self.options.scenes_file, fps=float(fps) if fps else None)

    @property
    def inputs(self) -> dict[str, VideoInfo]:
        """What is known of each input (refined once decoding started)."""
        return {role: source.info for role, source in self._sources.items()}

    @property
    def decode_stats(self) -> dict[str, Any]:
        return {role: source.stats for role, source in self._sources.items()}

    @property
    def expected_frames(self) -> int | None:
        """How many frames the run will score, when the input says (for progress bars)."""
        return expected_count(self.options.selection, self.inputs["dist"])

    @property
    def content_scores(self) -> Mapping[int, float]:
        """Scene-detector content score per source frame seen so far."""
        return self._scenes.content if self._scenes is not None else {}

    @property
    def capture(self) -> Any:
        return self._capture

    def scaling(self) -> tuple[str | None, tuple[int, int] | None]:
        """How frames were scaled for comparison, and the common size (FR only)."""
        if not self.has_ref:
            return None, None
        dist, ref = self.inputs["dist"], self.inputs["ref"]
        target = target_size(self._scale, (dist.width, dist.height), (ref.width, ref.height))
        parts = []
        if (dist.width, dist.height) != target:
            parts.append(f"distorted {dist.width}x{dist.height} -> {target[0]}x{target[1]}")
        if (ref.width, ref.height) != target:
            parts.append(f"reference {ref.width}x{ref.height} -> {target[0]}x{target[1]}")
        return (", ".join(parts) + " (bicubic)" if parts else None), target

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Close the sources and stop FFmpeg (idempotent); the run cannot be iterated
        afterwards."""
        self._close_sources()
        if self._ffmpeg is not None:
            self._ffmpeg.close()

    def _close_sources(self) -> None:
        self._closed = True
        for source in self._sources.values():
            source.close()

    def __enter__(self) -> ScoringRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the pass ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[FrameScores]:
        if self._iterated:
            raise InvalidInputError(
                "A ScoringRun can be iterated only once: make a new one to score again."
            )
        if self._closed:
            raise InvalidInputError("This ScoringRun was closed: make a new one.")
        self._iterated = True
        return self._run()

    def _run(self) -> Iterator[FrameScores]:
        stopped = True
        try:
            dist = self._sources["dist"]
            if self.has_ref:
                self.align()
            dist_frames = select_frames(self.options.selection, dist.frames())
            if self.has_ref:
                pairs: Iterable[tuple[VideoFrame, VideoFrame | None]] = self._pairs(dist_frames)
            else:
                pairs = ((f, None) for f in dist_frames)
            yield from self._score_batches(pairs)
            stopped = False
        finally:
            self._close_sources()
            if self._scenes is not None:
                self.cuts = self._scenes.finish()
            self._finish_ffmpeg(stopped)

    def _finish_ffmpeg(self, stopped: bool) -> None:
        """Collect FFmpeg's VMAF/XPSNR of every pair fed. A run that stopped keeps its own
        reason: FFmpeg failing then is a warning, not a second error."""
        if self._ffmpeg is None:
            return
        from topiq_video.vmaf import FFmpegMetricError

        try:
            self.ffmpeg_values = self._ffmpeg.finish(stopped=stopped)
        except FFmpegMetricError as exc:
            if not stopped:
                raise
            self._warn(f"{', '.join(self._ffmpeg.metrics)} of this stopped run are lost: {exc}")

    def align(self) -> OffsetEstimate:
        """The offset between encode and source (searched on the first seconds of both when
        the offset option is "auto"); done once, before scoring, also when called early."""
        if self.offset is None:
            if self._closed:
                raise InvalidInputError("This ScoringRun was closed: make a new one.")
            self.offset = self._estimate_offset()
        return self.offset

    def _estimate_offset(self) -> OffsetEstimate:
        if not self.has_ref:
            raise InvalidInputError("Only a run with a reference has an offset to find.")
        opts = self.options
        ref_info = self.inputs["ref"]
        ref_duration = ref_info.frame_duration or 1.0 / 30
        if opts.offset != "auto":
            return OffsetEstimate.manual(float(opts.offset), ref_duration)
        span = search_span(DEFAULT_SEARCH_WINDOW, opts.max_offset)
        dist_seen = self._sources["dist"].lookahead(span)
        ref_seen = self._sources["ref"].lookahead(span + opts.max_offset)
        if len(ref_seen) < 2 or len(dist_seen) < 2:
            logger.warning("Too few frames to search for an offset; assuming 0.")
            return OffsetEstimate.manual(0.0, ref_duration)
        try:
            estimate = estimate_offset(
                np.stack([p.thumb for p in dist_seen]),
                np.array([p.time for p in dist_seen]),
                np.stack([p.thumb for p in ref_seen]),
                np.array([p.time for p in ref_seen]),
                max_offset=opts.max_offset,
            )
        except AlignmentError:
            raise
        logger.info(
            "Offset %+.3f s (%s reference frames), confidence %.2f",
            estimate.offset_seconds,
            estimate.offset_frames,
            estimate.confidence,
        )
        if estimate.message:
            self._warn(estimate.message)
        return estimate

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            logger.warning("%s", message)

    def _pairs(self, dist_frames: Iterator[VideoFrame]) -> Iterator[tuple[VideoFrame, VideoFrame]]:
        assert self.offset is not None
        sel = self.options.selection
        ref = self._sources["ref"]
        pairer = pair_streams(
            dist_frames,
            ref.frames(),
            self.offset.offset_seconds,
            ref_frame_duration=self.offset.ref_frame_duration,
            # Count every unmatched frame of a whole file; a capped run or a live
            # stream stops as soon as no more pairs are possible.
            drain=sel.max_frames is None
            and sel.duration is None
            and not any(info.is_live for info in self.inputs.values()),
        )
        try:
            yield from pairer
        finally:
            self.pairing = pairer.stats

    def _score_batches(
        self, pairs: Iterable[tuple[VideoFrame, VideoFrame | None]]
    ) -> Iterator[FrameScores]:
        limit = self.options.selection.max_frames
        batch: list[tuple[VideoFrame, VideoFrame | None]] = []
        compared = False
        for pair in pairs:
            if not compared:
                for message in compare_streams(
                    self.inputs["dist"], self.inputs.get("ref") if self.has_ref else None
                ):
                    self._warn(message)
                compared = True
            # A stream may change size or format mid-way (an HLS rendition switch): frames
            # of one batch are converted together, so start a new batch there.
            if batch and _layout(pair) != _layout(batch[0]):
                yield from self._score_batch(batch)
                batch = []
            batch.append(pair)
            if limit is not None and self.frames_scored + len(batch) >= limit:
                yield from self._score_batch(batch)
                return
            if len(batch) >= self.batch_size:
                yield from self._score_batch(batch)
                batch = []
        if batch:
            yield from self._score_batch(batch)

    @property
    def batch_size(self) -> int:
        """Frames per pipeline step (smaller for good after an out-of-memory)."""
        return self._batcher.batch_size

    def _score_batch(
        self, batch: Sequence[tuple[VideoFrame, VideoFrame | None]]
    ) -> Iterator[FrameScores]:
        """Score one batch; on a GPU out-of-memory, in halves (never losing a frame). If
        FFmpeg failed on it, its rows (other metrics scored) still come first."""
        yield from (
            row for part in self._batcher.run(batch, self._score_batch_once) for row in part
        )
        if self._ffmpeg_failure is not None:
            raise self._ffmpeg_failure

    def _score_batch_once(
        self, batch: Sequence[tuple[VideoFrame, VideoFrame | None]]
    ) -> list[FrameScores]:
        dist = [d for d, _ in batch]
        ref = [r for _, r in batch if r is not None]
        has_ref = self.has_ref and len(ref) == len(batch) and bool(ref)
        target = (
            target_size(self._scale, (dist[0].width, dist[0].height), (ref[0].width, ref[0].height))
            if has_ref
            else None
        )
        columns: dict[str, np.ndarray] = {}
        native: dict[str, torch.Tensor] = {}  # each side converted to RGB once per batch

        def rgb(role: str) -> torch.Tensor:
            if role not in native:
                native[role] = frames_to_rgb(dist if role == "dist" else ref, self.device)
            return native[role]

        need_rgb = bool(self.models) or self._capture is not None
        dist_rgb = ref_rgb = None
        if need_rgb:
            dist_rgb = _resize_rgb(rgb("dist"), target) if has_ref else rgb("dist")
            ref_rgb = _resize_rgb(rgb("ref"), target) if has_ref else None
        for name, model in self.models.items():
            # NR models judge the encode as delivered, at its own resolution.
            if model.info.use_ref:
                scores = model.score(dist_rgb, ref_rgb)
            else:
                scores = model.score(rgb("dist"))
            columns[name] = scores.float().cpu().numpy().astype(np.float64)
        scene_scores = self._detect_scenes(dist, ref if has_ref else None, rgb)

        luma_metrics = [m for m in self.metrics if m in METRICS]
        for name in self.metrics:
            if name in FFMPEG_METRICS:
                columns[name] = np.full(len(batch), math.nan)  # filled when FFmpeg ends
        fed: tuple[torch.Tensor, torch.Tensor, int] | None = None
        if (luma_metrics or self._ffmpeg is not None) and has_ref:
            ref_depth = ref[0].color.bit_depth
            # An RGB side (a PNG reference) derives its luma as the other side's matrix
            # and range did, or the two lumas differ by the matrices alone.
            dist_color, ref_color = dist[0].color, ref[0].color
            dist_luma = frames_to_luma(
                dist, self.device, rgb_matrix=ref_color.matrix, rgb_range=ref_color.range
            )
            ref_luma = frames_to_luma(
                ref, self.device, rgb_matrix=dist_color.matrix, rgb_range=dist_color.range
            )
            dist_y = _resize_luma(dist_luma, target, dist_color.bit_depth, ref_depth)
            ref_y = _resize_luma(ref_luma, target, ref_depth, ref_depth)
            del dist_luma, ref_luma
            for name in luma_metrics:
                values = compute_metric(name, dist_y, ref_y, ref_depth)
                columns[name] = values.double().cpu().numpy()
            if self._ffmpeg is not None:
                fed = (dist_y, ref_y, ref_depth)
            del dist_y, ref_y

        if self._capture is not None:
            assert dist_rgb is not None
            for name in self.metrics:
                if name in FFMPEG_METRICS:
                    continue  # known only when FFmpeg ends
                self._capture.offer(
                    name,
                    columns[name].tolist(),
                    [d.index for d in dist],
                    [d.time for d in dist],
                    dist_rgb,
                    ref_rgb,
                    [r.index for r in ref] if has_ref else None,
                    [r.time for r in ref] if has_ref else None,
                )
        native.clear()
        if fed is not None:
            # Last, once nothing can fail for want of memory: a batch retried in halves
            # must not reach FFmpeg twice.
            assert self._ffmpeg is not None
            from topiq_video.vmaf import FFmpegMetricError

            try:
                self._ffmpeg.feed(*fed)
            except FFmpegMetricError as exc:
                self._ffmpeg_failure = exc
            fed = None
        rows = []
        for i, (d, r) in enumerate(batch):
            rows.append(
                FrameScores(
                    frame=d.index,
                    time=d.time,
                    ref_frame=None if r is None else r.index,
                    ref_time=None if r is None else r.time,
                    values={name: float(columns[name][i]) for name in self.metrics},
                    scene_score=scene_scores[i] if scene_scores is not None else None,
                )
            )
        self.frames_scored += len(rows)
        self.last_time = rows[-1].time
        return rows

    def _detect_scenes(
        self, dist: Sequence[VideoFrame], ref: Sequence[VideoFrame] | None, rgb: Any
    ) -> list[float] | None:
        """Feed the scene detector; the content score of each row's source frame."""
        if self._scenes is None:
            return None
        # Cuts come from the source in FR mode (the encode's damage must not fake cuts),
        # numbered as the source's frames; a reference frame shown twice is seen once.
        role = "ref" if ref is not None else "dist"
        return self._scenes.feed(ref if ref is not None else dist, lambda: rgb(role))

    def revisit_note(self) -> str | None:
        """Why pictures cannot be fetched after the pass (None: they can)."""
        from topiq_video.pipeline.revisit import why_not_seekable

        for role, source in (("dist", self.dist_source), ("ref", self.ref_source)):
            if role == "ref" and not self.has_ref:
                continue
            given = source if source is not None else self._sources.get(role)
            reason = why_not_seekable(given, self.inputs[role])
            if reason:
                label = "reference" if role == "ref" else "input"
                return f"no pictures: {reason} ({label})"
        return None

    def fetch_pictures(self, pairs: Sequence[Any]) -> dict[int, Any]:
        """Pictures of scored rows, fetched by seeking the inputs after the pass (see
        :mod:`topiq_video.pipeline.revisit`), drawn as the pass draws them."""
        from topiq_video.pipeline.revisit import fetch_pictures

        _, size = self.scaling()
        assert isinstance(self.dist_source, str)
        return fetch_pictures(
            self.dist_source, self.ref_source, pairs, size=size, device=self.device
        )

    def source_warnings(self) -> list[str]:
        """What decoding met that a reader must know (truncation, damage, gaps, loss)."""
        out: list[str] = []
        for role, source in self._sources.items():
            stats = source.stats
            label = "reference" if role == "ref" else "input"
            if stats.truncated_at is not None:
                out.append(
                    f"The {label} stopped decoding at frame {stats.truncated_at} (truncated "
                    "file?): frames after it are missing from this report."
                )
            if stats.gaps:
                first = stats.gaps[0]
                missing = sum(g[2] for g in stats.gaps)
                out.append(
                    f"The {label} skips frames: its timestamps jump over {missing} frame(s) in "
                    f"{len(stats.gaps)} place(s), first {first[2]} at {first[1]:.3f} s (frame "
                    f"{first[0]}); they are counted as lost."
                )
            damaged = stats.decode_errors + stats.corrupt_frames
            if damaged:
                out.append(
                    f"The {label} had {damaged} damaged packet(s) or frame(s); scores near them "
                    "reflect the damage."
                )
            if stats.connection_lost:
                out.append(
                    f"The {label} {show_source(source.info.source)!r} was lost "
                    f"({stats.connection_lost}) after {stats.frames_decoded} frames."
                )
        return out


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
