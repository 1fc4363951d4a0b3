"""What shapes a scoring run: frame selection and options, each default defined here once.

This module imports nothing heavy (no torch, PyAV or numpy), so the command line can show
every default in ``--help`` without loading them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from topiq_video.errors import InvalidInputError

DEFAULT_OFFSET = "auto"
"""Offset between encode and source: "auto" searches it, a number forces it (seconds)."""
DEFAULT_MAX_OFFSET = 5.0
"""Largest offset (seconds, either sign) that the automatic search tries."""
MAX_OFFSET_LIMIT = 60.0
"""The search compares every candidate: its cost grows with this, so it is capped."""
DEFAULT_SCALE_TO = "ref"
DEFAULT_EVERY = 1
DEFAULT_SCENE_THRESHOLD = 27.0
"""Content score (PySceneDetect's HSV scale) at or above which a frame starts a new scene."""
DEFAULT_MIN_SCENE_LEN = 15
"""Shortest scene, in frames."""
DEFAULT_WORST_N = 10
"""Worst frames listed per metric."""
DEFAULT_GALLERY_FRAMES = 4
"""Worst frames captured as pictures per metric by `report`."""
DEFAULT_COMPARE_GALLERY = 3
"""Frames where an encode differs most from the baseline, shown per metric by `compare`."""
DEFAULT_DISAGREE_FRAMES = 6
"""Frames where TOPIQ and VMAF (or PSNR) disagree most, listed and pictured in reports."""
DEFAULT_DISAGREE_SCENES = 5
"""Scenes the two rank furthest apart, listed in reports."""
GALLERY_SPACING_S = 1.0
"""Pictures of one metric's gallery are at least this far apart (neighbours look alike)."""
DEFAULT_TIMEOUT = 10.0
"""Seconds to open a network source, and to wait for its data before calling it lost."""
DEFAULT_MAX_PIXELS = 40_000_000
"""Largest picture (width x height) accepted: a little above 8K UHD (7680x4320). A file
declaring more is refused before anything is decoded; raise it for larger pictures."""
DEFAULT_VMAF_MODEL = "vmaf_v0.6.1"
VMAF_MODEL_NAMES = ("vmaf_v0.6.1", "vmaf_4k_v0.6.1", "vmaf_v0.6.1_phone", "vmaf_v0.6.1neg")
"""libvmaf's built-in models: the default (1080p TV viewing), 4K, the phone model (the
default model's phone transform) and NEG (no enhancement gain)."""
PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_PRECISION_CPU = "fp32"
DEFAULT_PRECISION_CUDA = "fp16"
# Batching does not pay on a CPU: one frame at a time was the fastest per frame at 360p and
# 720p, NR and FR, in bench/cpu_batch.py (batch 4 up to 1.2x slower), and never slower than
# the reference implementation's per-frame loop.
DEFAULT_BATCH_SIZE_CPU = 1
DEFAULT_BATCH_SIZE_CUDA = 16
MAX_SECONDS = 1e9
"""Times and offsets beyond this (about 31 years) are refused as input mistakes."""


def _check_seconds(name: str, value: float | None, *, low: float | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number of seconds, got {value!r}.")
    if abs(value) > MAX_SECONDS:
        raise InvalidInputError(
            f"{name} = {value:g} s is beyond any video ({MAX_SECONDS:g} s at most); check the "
            "value and its unit (seconds)."
        )
    if low is not None and value < low:
        raise InvalidInputError(f"{name} must be >= {low:g} seconds, got {value:g}.")


@dataclass(frozen=True)
class FrameSelection:
    """Which distorted frames to score. Times are seconds of the distorted stream.

    ``max_frames`` counts scored frames (rows), after alignment.
    """

    start: float | None = None
    duration: float | None = None
    every: int = DEFAULT_EVERY
    sample_fps: float | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        _check_seconds("start", self.start, low=0.0)
        _check_seconds("duration", self.duration)
        if self.duration is not None and self.duration <= 0:
            raise InvalidInputError(f"duration must be > 0 seconds, got {self.duration:g}.")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise InvalidInputError(f"every must be a whole number >= 1, got {self.every!r}.")
        if self.sample_fps is not None and not (
            math.isfinite(self.sample_fps) and 0 < self.sample_fps <= 1e6
        ):
            raise InvalidInputError(
                f"sample_fps must be a number of frames per second > 0, got {self.sample_fps!r}."
            )
        if self.max_frames is not None and (
            isinstance(self.max_frames, bool)
            or not isinstance(self.max_frames, int)
            or self.max_frames < 1
        ):
            raise InvalidInputError(f"max_frames must be >= 1, got {self.max_frames!r}.")

    @property
    def end(self) -> float | None:
        """Where the selection ends (seconds of the distorted stream), if it does."""
        if self.duration is None:
            return None
        return (self.start or 0.0) + self.duration


@dataclass(frozen=True)
class ScoreOptions:
    """Everything that shapes a scoring run."""

    model: str | None = None  # TOPIQ checkpoint; None: topiq_fr with a reference, else topiq_nr
    metrics: tuple[str, ...] | None = None  # None: the model, plus psnr_y/ssim_y with a reference
    device: str | None = None
    batch_size: int | None = None
    precision: str | None = None
    weights: str | None = None
    offset: float | str = DEFAULT_OFFSET  # "auto" or seconds added to distorted times
    max_offset: float = DEFAULT_MAX_OFFSET
    scale_to: str = DEFAULT_SCALE_TO  # "ref", "dist" or "WxH"
    selection: FrameSelection = field(default_factory=FrameSelection)
    detect_scenes: bool = False
    scenes_file: str | None = None  # a cut list to import instead of detecting
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD
    min_scene_len: int = DEFAULT_MIN_SCENE_LEN
    worst_n: int = DEFAULT_WORST_N
    gallery: int = 0  # worst frames captured as pictures per metric
    timeout: float = DEFAULT_TIMEOUT
    max_pixels: int = DEFAULT_MAX_PIXELS
    vmaf_model: str = DEFAULT_VMAF_MODEL  # the model of the "vmaf" metric
    progress: bool | None = None  # download progress bar for weights

    def __post_init__(self) -> None:
        if isinstance(self.metrics, str):
            object.__setattr__(self, "metrics", tuple(self.metrics.split(",")))
        elif self.metrics is not None:
            object.__setattr__(self, "metrics", tuple(self.metrics))
        if self.offset != DEFAULT_OFFSET:
            try:
                seconds = float(self.offset)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f"offset {self.offset!r}: use {DEFAULT_OFFSET!r} or a number of seconds "
                    "(positive when the encode starts later in the source)."
                ) from exc
            _check_seconds("offset", seconds)
            object.__setattr__(self, "offset", seconds)
        if not (
            isinstance(self.max_offset, (int, float))
            and math.isfinite(self.max_offset)
            and 0 <= self.max_offset <= MAX_OFFSET_LIMIT
        ):
            raise InvalidInputError(
                f"max_offset must be between 0 and {MAX_OFFSET_LIMIT:g} seconds, got "
                f"{self.max_offset!r}; for larger shifts give the offset itself."
            )
        if not (math.isfinite(self.scene_threshold) and self.scene_threshold > 0):
            raise InvalidInputError(f"scene_threshold must be > 0, got {self.scene_threshold!r}.")
        for name in ("min_scene_len", "worst_n", "gallery"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInputError(f"{name} must be a whole number >= 0, got {value!r}.")
        if not (math.isfinite(self.timeout) and 0 < self.timeout <= 86400):
            raise InvalidInputError(
                f"timeout must be between 0 and 86400 seconds, got {self.timeout!r}."
            )
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int):
            raise InvalidInputError(f"max_pixels must be a whole number, got {self.max_pixels!r}.")
        if self.max_pixels < 64:
            raise InvalidInputError(f"max_pixels must be at least 64, got {self.max_pixels}.")
        if self.vmaf_model not in VMAF_MODEL_NAMES:
            raise InvalidInputError(
                f"Unknown VMAF model {self.vmaf_model!r}. Built-in models: "
                f"{', '.join(VMAF_MODEL_NAMES)}."
            )
        if self.scenes_file is not None and self.detect_scenes:
            raise InvalidInputError(
                "scenes_file and detect_scenes contradict each other: import the cut list or "
                "detect cuts, not both."
            )
