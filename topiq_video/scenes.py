"""Scene (shot) detection on frames already decoded for scoring, plus scene lists and cut imports.

The detector follows the idea of PySceneDetect's ``ContentDetector``: each frame is converted to
HSV with OpenCV's 8-bit scale (hue 0-179, saturation and value 0-255), and the *content score* of
frame ``k`` is the mean over hue, saturation and value of the mean absolute per-pixel difference
to the previous frame.  A cut is a frame whose score reaches the threshold (default 27, the same
scale as PySceneDetect's ``detect-content -t``).  It is written in torch so that it runs on the
scoring device on the frames the scorer already decoded (no second decode), on a small copy made
by :func:`downscale_for_scenes`.

Differences from PySceneDetect, on purpose:

* ``robust_hue`` (default on): hue differences are circular and count only where both pixels
  are saturated (see :func:`content_distance`).  On the handheld cockatoo clip (one shot, heavy
  motion, white bird) plain OpenCV-style hue differences of 30-37 pushed the score to 29 (a
  false cut at frame 157); with robust hue the maximum is about 21.  ``robust_hue=False`` gives
  PySceneDetect's score.

* Flash suppression compares frames *after* a candidate cut with the frame *before* it: if within
  ``flash_window`` sampled frames the picture returns to what it was (score against the pre-cut
  frame below the threshold), the candidate was a flash (photo flash, strobe, a few white
  frames) and no cut is reported.  PySceneDetect's merge filter still reports the start of a
  flash as a cut.
* ``min_scene_len`` suppresses any cut that comes less than ``min_scene_len`` frames (distorted
  stream frame numbers) after the previous cut or the first frame.
* Sampling: with ``--every N`` the detector only sees the sampled frames and compares consecutive
  *sampled* frames, so cuts are found at sampled granularity: a cut is reported at the first
  sampled frame of the new scene, which may be up to ``N - 1`` frames after the real cut.  Heavy
  motion over a large gap can also raise scores; raise the threshold if that happens.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from topiq_video.errors import InvalidInputError
from topiq_video.files import describe_os_error
from topiq_video.pipeline.options import DEFAULT_MIN_SCENE_LEN, DEFAULT_SCENE_THRESHOLD

logger = logging.getLogger(__name__)

DEFAULT_FLASH_WINDOW = 4
"""How many sampled frames after a candidate cut may still return to the pre-cut picture."""
DEFAULT_SCENE_WIDTH = 256
"""Target width of the copy the detector works on (PySceneDetect also downscales to ~256 px)."""
HUE_SATURATION_GATE = 32.0
"""Saturation (0-255) from which a pixel's hue difference counts fully (``robust_hue``)."""
CONTENT_SCORE_NAME = "content_score"
# Timecodes in scene lists are rounded to milliseconds; a cut time may precede its frame by this.
_TIME_TOLERANCE_S = 0.0005


@dataclass(frozen=True)
class Scene:
    """A run of consecutive scored frames between two cuts.

    ``end_frame`` is the scene's last frame (inclusive); ``end_time`` is when the scene
    ends (exclusive): the next scene's start, or the last frame's time plus one frame.
    """

    index: int
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float


def downscale_for_scenes(
    rgb: torch.Tensor, target_width: int = DEFAULT_SCENE_WIDTH
) -> torch.Tensor:
    """Shrink frames (N,3,H,W) by an integer factor so the width is about ``target_width``.

    Averaging whole blocks (like an area resize) keeps the mean colour and damps noise and
    compression artefacts, which is what the content score needs.
    """
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise InvalidInputError(
            f"expected RGB frames shaped (N, 3, H, W), got {tuple(rgb.shape)}; "
            "stack decoded frames channel-first before scene detection"
        )
    factor = max(1, rgb.shape[-1] // max(1, target_width))
    if factor == 1:
        return rgb.float()
    return F.avg_pool2d(rgb.float(), kernel_size=factor, stride=factor)


def rgb_to_hsv255(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (N,3,h,w) to HSV on OpenCV's 8-bit scale: H in [0, 180), S and V in [0, 255]."""
    rgb = rgb.float().clamp(0.0, 1.0)
    r, g, b = rgb.unbind(dim=1)
    value, _ = rgb.max(dim=1)
    minimum, _ = rgb.min(dim=1)
    delta = value - minimum
    safe_value = torch.where(value > 0, value, torch.ones_like(value))
    saturation = torch.where(value > 0, delta / safe_value, torch.zeros_like(value))
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    # Hue in degrees, picking the sector by which channel is the maximum (OpenCV's order: R, G, B).
    hue = torch.where(
        value == r,
        60.0 * (g - b) / safe_delta,
        torch.where(
            value == g, 120.0 + 60.0 * (b - r) / safe_delta, 240.0 + 60.0 * (r - g) / safe_delta
        ),
    )
    hue = torch.where(hue < 0, hue + 360.0, hue)
    hue = torch.where(delta > 0, hue, torch.zeros_like(hue))
    return torch.stack((hue / 2.0, saturation * 255.0, value * 255.0), dim=1)


def content_distance(a: torch.Tensor, b: torch.Tensor, robust_hue: bool = True) -> torch.Tensor:
    """Content score between HSV frames (..,3,h,w): mean over H, S, V of the mean absolute difference.

    With ``robust_hue`` the hue difference is circular (red 179 is next to red 0) and weighted by
    ``min(saturation) / HUE_SATURATION_GATE`` (at most 1): hue of near-grey pixels is noise, and
    on low-saturation footage (white feathers, skin, overcast sky) OpenCV-style hue differences
    alone exceed the threshold under motion.  Without it the score is PySceneDetect's.
    """
    diff = (a - b).abs()
    if robust_hue:
        hue = diff[..., 0, :, :]
        hue = torch.minimum(hue, 180.0 - hue)
        weight = (torch.minimum(a[..., 1, :, :], b[..., 1, :, :]) / HUE_SATURATION_GATE).clamp(
            max=1.0
        )
        diff = torch.cat(((hue * weight).unsqueeze(-3), diff[..., 1:, :, :]), dim=-3)
    return diff.mean(dim=(-3, -2, -1))


class ContentDetector:
    """Streaming cut detector; feed batches of downscaled frames in order with :meth:`update`.

    Memory is constant: the previous frame's HSV, and while a cut is pending the pre-cut frame's
    HSV.  The per-frame content scores (one float per frame) are kept for plots.

    With ``flash_filter`` a cut is confirmed ``flash_window`` sampled frames after it (or at
    :meth:`finish`), so :meth:`update` reports it that much later; a flash longer than the window
    counts as a cut, and a second cut inside the window of a first one is not seen (the default
    ``min_scene_len`` would suppress it anyway).  Gradual fades and dissolves are not detected.
    """

    def __init__(
        self,
        threshold: float = DEFAULT_SCENE_THRESHOLD,
        min_scene_len: int = DEFAULT_MIN_SCENE_LEN,
        flash_filter: bool = True,
        flash_window: int = DEFAULT_FLASH_WINDOW,
        robust_hue: bool = True,
    ) -> None:
        if threshold <= 0:
            raise InvalidInputError(f"scene threshold must be > 0, got {threshold}")
        if min_scene_len < 0:
            raise InvalidInputError(f"min_scene_len must be >= 0 frames, got {min_scene_len}")
        if flash_window < 1:
            raise InvalidInputError(f"flash_window must be >= 1 frame, got {flash_window}")
        self.threshold = float(threshold)
        self.min_scene_len = int(min_scene_len)
        self.flash_filter = flash_filter
        self.flash_window = int(flash_window)
        self.robust_hue = robust_hue
        self._prev: torch.Tensor | None = None  # HSV of the last frame seen, (3,h,w)
        self._prev_frame: int | None = None
        self._scene_start: int | None = None  # first frame of the current scene
        self._cuts: list[int] = []
        self._pending_frame: int | None = None  # candidate cut waiting for flash confirmation
        self._pending_ref: torch.Tensor | None = None  # HSV of the frame before the candidate
        self._pending_seen = 0
        self._frames: list[int] = []
        self._scores: list[float] = []
        self._finished = False

    @property
    def cuts(self) -> list[int]:
        """Cuts confirmed so far (frame numbers where a new scene starts)."""
        return list(self._cuts)

    @property
    def content_scores(self) -> pd.Series:
        """Content score per frame seen (NaN for the first frame, which has no predecessor)."""
        return pd.Series(
            self._scores, index=pd.Index(self._frames, name="frame"), name=CONTENT_SCORE_NAME
        )

    def last_scores(self, count: int) -> list[float]:
        """Content scores of the last ``count`` frames seen."""
        return self._scores[-count:] if count > 0 else []

    @property
    def max_score(self) -> float:
        """Highest content score seen so far (NaN before two frames were seen)."""
        finite = [s for s in self._scores if not math.isnan(s)]
        return max(finite) if finite else math.nan

    def update(self, frame_indices: Sequence[int], rgb: torch.Tensor) -> list[int]:
        """Process frames (N,3,h,w) in [0, 1] with their frame numbers; return all cuts confirmed."""
        if self._finished:
            raise InvalidInputError(
                "ContentDetector.update() called after finish(); make a new one"
            )
        if rgb.ndim != 4 or rgb.shape[1] != 3 or rgb.shape[0] != len(frame_indices):
            raise InvalidInputError(
                f"expected {len(frame_indices)} RGB frames shaped (N, 3, h, w), got "
                f"{tuple(rgb.shape)}; pass one frame number per frame"
            )
        if len(frame_indices) == 0:
            return self.cuts
        indices = [int(i) for i in frame_indices]
        last = self._prev_frame
        for i in indices:
            if last is not None and i <= last:
                raise InvalidInputError(
                    f"frame numbers must increase strictly, got {i} after {last}; feed frames in "
                    "decode order and start a new detector for a new stream"
                )
            last = i
        hsv = rgb_to_hsv255(rgb)
        if self._prev is not None and self._prev.shape != hsv.shape[1:]:
            raise InvalidInputError(
                f"frame size changed from {tuple(self._prev.shape[1:])} to "
                f"{tuple(hsv.shape[2:])}; downscale every batch to the same size"
            )
        # One vectorised pass for consecutive differences; one host sync per batch.
        previous = hsv[:-1] if self._prev is None else torch.cat((self._prev[None], hsv[:-1]))
        consecutive = content_distance(
            hsv[1:] if self._prev is None else hsv, previous, self.robust_hue
        )
        consecutive = consecutive.cpu().tolist()
        if self._prev is None:
            consecutive = [math.nan, *consecutive]
            # A pass that starts mid-stream (--start, a trimmed encode) does not know when
            # its first scene began, so min_scene_len cannot hold against that scene.
            self._scene_start = indices[0] if indices[0] == 0 else None

        for n, (frame, score) in enumerate(zip(indices, consecutive, strict=True)):
            self._frames.append(frame)
            self._scores.append(score)
            self._step(frame, score, hsv[n], hsv[n - 1] if n > 0 else self._prev)
        self._prev = hsv[-1].clone()
        self._prev_frame = indices[-1]
        return self.cuts

    def _step(
        self, frame: int, score: float, current: torch.Tensor, previous: torch.Tensor | None
    ) -> None:
        if self._pending_frame is not None:
            assert self._pending_ref is not None
            back = float(content_distance(current, self._pending_ref, self.robust_hue))
            if back < self.threshold:
                logger.debug(
                    "flash at frame %d ignored: frame %d is back to the pre-cut picture (%.1f)",
                    self._pending_frame,
                    frame,
                    back,
                )
                self._clear_pending()
                return
            self._pending_seen += 1
            if self._pending_seen >= self.flash_window:
                self._confirm(self._pending_frame)
            # A new candidate is not opened while one is pending: its window covers this frame.
            return
        if math.isnan(score) or score < self.threshold:
            return
        if self._scene_start is not None and frame - self._scene_start < self.min_scene_len:
            logger.debug("cut at frame %d suppressed by min_scene_len", frame)
            return
        if not self.flash_filter:
            self._confirm(frame)
            return
        assert previous is not None
        self._pending_frame = frame
        self._pending_ref = previous.clone()
        self._pending_seen = 0

    def _confirm(self, frame: int) -> None:
        self._cuts.append(frame)
        self._scene_start = frame
        self._clear_pending()

    def _clear_pending(self) -> None:
        self._pending_frame = None
        self._pending_ref = None
        self._pending_seen = 0

    def finish(self) -> list[int]:
        """End of stream: confirm a pending cut (nothing returned to the old picture) and return all."""
        if self._pending_frame is not None:
            self._confirm(self._pending_frame)
        self._finished = True
        self._prev = None
        return self.cuts


def scenes_from_cuts(
    cuts: Sequence[int], frames: Sequence[int], times: Sequence[float]
) -> list[Scene]:
    """Split the scored frames (ascending frame numbers with their times) into scenes at ``cuts``.

    A cut that falls between two scored frames starts its scene at the next scored frame; cuts
    outside the scored range are ignored.  With no cuts there is a single scene.
    """
    if len(frames) != len(times):
        raise InvalidInputError(
            f"got {len(frames)} frame numbers but {len(times)} times; pass one time per frame"
        )
    if len(frames) == 0:
        return []
    frames = [int(f) for f in frames]
    if any(b <= a for a, b in zip(frames, frames[1:], strict=False)):
        raise InvalidInputError("scored frame numbers must increase strictly; sort the frames")
    starts = {0}
    for cut in cuts:
        pos = bisect_left(frames, int(cut))
        if 0 < pos < len(frames):
            starts.add(pos)
    bounds = sorted(starts) + [len(frames)]
    times = [float(t) for t in times]
    # The last scene lasts one (typical) frame past its last frame's time.
    last_gap = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    return [
        Scene(
            index=n,
            start_frame=frames[a],
            end_frame=frames[b - 1],
            start_time=times[a],
            end_time=times[b] if b < len(times) else times[-1] + last_gap,
        )
        for n, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False))
    ]


_TIMECODE = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")
_SECONDS = re.compile(r"^\d+(?:\.\d*)?(?:s)?$|^\.\d+s?$")
_FRAME = re.compile(r"^\d+$")


def _parse_timecode(text: str) -> float | None:
    """``HH:MM:SS.mmm`` or ``MM:SS.mmm`` to seconds; None when it is not a timecode."""
    match = _TIMECODE.match(text)
    if match is None:
        return None
    hours = int(match.group(1) or 0)
    minutes = int(match.group(2))
    seconds = float(match.group(3))
    if minutes >= 60 or seconds >= 60:
        return None
    return hours * 3600 + minutes * 60 + seconds


class _TimeToFrame:
    """Maps a time in seconds to the first distorted frame shown at or after it."""

    def __init__(self, fps: float | None, frame_times: Sequence[float] | None) -> None:
        self.fps = fps
        self.frame_times = [float(t) for t in frame_times] if frame_times is not None else None

    @property
    def available(self) -> bool:
        return self.fps is not None or self.frame_times is not None

    def __call__(self, seconds: float) -> int | None:
        if self.frame_times is not None:
            pos = bisect_left(self.frame_times, seconds - _TIME_TOLERANCE_S)
            return pos if pos < len(self.frame_times) else None
        assert self.fps is not None
        return max(0, math.ceil((seconds - _TIME_TOLERANCE_S) * self.fps))


def load_cut_list(
    path: str | Path,
    *,
    fps: float | None = None,
    frame_times: Sequence[float] | None = None,
) -> list[int]:
    """Read cuts (frame numbers of the distorted stream where a scene starts) from a file.

    Two formats are accepted:

    * PySceneDetect's ``list-scenes`` CSV (optionally with the ``Timecode List:`` first line).
      The ``Start Time (seconds)`` column is used when ``frame_times`` or ``fps`` is given, since
      it does not depend on the version.  Otherwise ``Start Frame`` is used: PySceneDetect 0.6+
      writes it 1-based (first scene starts at 1), older versions 0-based; the base is taken
      from the first scene, which always starts the video.
    * A plain list, one cut per line: an integer is a frame number; ``12.5`` / ``12.5s`` are
      seconds and ``HH:MM:SS.mmm`` a timecode (both need ``frame_times`` or ``fps``).  ``#``
      starts a comment; blank lines are skipped.

    ``frame_times[i]`` is the presentation time of distorted frame ``i``; a time maps to the
    first frame at or after it (0.5 ms tolerance for rounded timecodes).  Cuts at frame 0 or past
    the last frame are dropped; the result is sorted and unique.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(
            f"Cannot read the cut list {os.fsdecode(path)!r}: {describe_os_error(exc)}. Check "
            "the path."
        ) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{os.fsdecode(path)!r} is not a text cut list (it holds bytes that are not UTF-8 "
            "text). Pass PySceneDetect's CSV or a text file with one time or frame per line."
        ) from exc
    if "\0" in text:
        raise InvalidInputError(
            f"{os.fsdecode(path)!r} is not a text cut list (it holds binary data). Pass "
            "PySceneDetect's CSV or a text file with one time or frame per line."
        )
    to_frame = _TimeToFrame(fps, frame_times)
    if "Scene Number" in text and "Start Frame" in text:
        cuts = _parse_scenedetect_csv(path, text, to_frame)
    else:
        cuts = _parse_plain_cuts(path, text, to_frame)
    last = len(to_frame.frame_times) - 1 if to_frame.frame_times is not None else None
    result = sorted({c for c in cuts if c > 0 and (last is None or c <= last)})
    dropped = len(set(cuts)) - len(result)
    if dropped:
        logger.warning("%s: %d cut(s) at frame 0 or beyond the stream were dropped", path, dropped)
    return result


def _parse_scenedetect_csv(path: Path, text: str, to_frame: _TimeToFrame) -> list[int]:
    rows = list(csv.reader(io.StringIO(text)))
    header_at = next(
        (n for n, row in enumerate(rows) if row and row[0].strip() == "Scene Number"), None
    )
    if header_at is None:
        raise InvalidInputError(
            f"{path}: no 'Scene Number,...' header row; export it with `scenedetect list-scenes`"
        )
    header = [h.strip() for h in rows[header_at]]
    try:
        frame_col = header.index("Start Frame")
        time_col = header.index("Start Time (seconds)")
    except ValueError as exc:
        raise InvalidInputError(
            f"{path}: header lacks 'Start Frame' or 'Start Time (seconds)'; export it with "
            "`scenedetect list-scenes`"
        ) from exc
    starts: list[tuple[int, int, float]] = []  # (line, start frame, start seconds)
    for n, row in enumerate(rows[header_at + 1 :], start=header_at + 2):
        if not row or not any(cell.strip() for cell in row):
            continue
        try:
            starts.append((n, int(row[frame_col]), float(row[time_col])))
        except (ValueError, IndexError) as exc:
            raise InvalidInputError(
                f"{path}, line {n}: cannot read the start frame/time of a scene ({exc}); "
                "fix or remove that line"
            ) from exc
    if not starts:
        return []
    if to_frame.available:
        frames = []
        for line, _, seconds in starts[1:]:
            frame = to_frame(seconds)
            if frame is None:
                logger.warning("%s, line %d: %.3f s is past the last frame", path, line, seconds)
                continue
            frames.append(frame)
        return frames
    base = starts[0][1]
    if base not in (0, 1):
        logger.warning(
            "%s: first scene starts at frame %d, not 0/1; assuming 1-based frame numbers "
            "(PySceneDetect 0.6+); pass fps or frame times to use the seconds instead",
            path,
            base,
        )
        base = 1
    return [frame - base for _, frame, _ in starts[1:]]


def _parse_plain_cuts(path: Path, text: str, to_frame: _TimeToFrame) -> list[int]:
    cuts: list[int] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if _FRAME.match(line):
            cuts.append(int(line))
            continue
        seconds = float(line.rstrip("s")) if _SECONDS.match(line) else _parse_timecode(line)
        if seconds is None:
            raise InvalidInputError(
                f"{path}, line {n}: {line!r} is neither a frame number (e.g. 250), seconds "
                "(e.g. 12.5) nor a timecode (e.g. 00:00:12.500); fix or comment out that line"
            )
        if not to_frame.available:
            raise InvalidInputError(
                f"{path}, line {n}: {line!r} is a time, but no frame rate or frame times are "
                "known to turn it into a frame number; give frame numbers or the stream's fps"
            )
        frame = to_frame(seconds)
        if frame is None:
            logger.warning("%s, line %d: %.3f s is past the last frame", path, n, seconds)
            continue
        cuts.append(frame)
    return cuts
