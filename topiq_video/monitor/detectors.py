"""Streaming freeze, black and silence detectors with FFmpeg's rules and defaults.

Each detector is fed in presentation order, keeps constant memory (one reduced reference plane
for freezes, a few numbers otherwise) and reports *episodes*: an :class:`Episode` with
``end=None`` when one starts and the same episode with its ``end`` when it ends. Nothing is
reported for a condition shorter than ``min_duration``; an episode's ``start`` is back-dated to
where the condition began, as FFmpeg reports it.

How each follows FFmpeg (``freezedetect``, ``blackdetect``, ``silencedetect``):

* :class:`FreezeDetector`: a frame is frozen when its mean absolute difference to the
  *reference* (the last frame that was not frozen), on code values divided by ``2**bit_depth``,
  is at most ``10**(noise_db / 20)``. A freeze starts at the reference's time and is reported
  once the next frame is ``min_duration`` past it; it ends at the first changed frame.
  FFmpeg pools the difference over every plane: pass ``chroma`` to do the same (tested: the
  same start and end frames as FFmpeg on 8- and 10-bit H.264). Luma alone is cheaper but can
  disagree when the encoder refines a new still picture's luma for a few frames while its
  chroma stays put (tested: a freeze starting 4 frames late on the 10-bit clip). Planes above
  ``max_pixels`` are compared on every ``step``-th row and column (1080p and 720p: every 2nd,
  2160p: every 4th), about 0.5 ms (luma) or 0.9 ms (with chroma) per 1080p frame.
* :class:`BlackDetector`: a pixel is black when its luma is at most ``pixel_threshold`` of the
  luma range above its floor (full range: ``th * (2**depth - 1)``; limited:
  ``(16 + th * 219) * 2**(depth - 8)``, truncated to an integer as FFmpeg does); a picture is
  black when at least ``picture_ratio`` of its pixels are. Counted on the whole plane. A black
  run from its first black frame to the first non-black one is an episode when it lasts
  ``min_duration`` (FFmpeg's metadata marks every run; its log line keeps only those).
* :class:`SilenceDetector`: a sample instant is silent when every channel's sample is strictly
  inside ``(-noise, noise)``, ``noise = 10**(noise_db / 20)`` of full scale; silence starts at
  the first silent sample and is reported once ``min_duration`` seconds of samples were silent;
  it ends at the first loud sample.

Times are the caller's clock in seconds (stream presentation time, or wall-clock time); the
detectors only compare and subtract them. A clock that jumps back (more than
``CLOCK_BACK_TOLERANCE``), or a picture whose size changes, ends any active episode and starts
afresh, as a graph reconfiguration would; a smaller step back counts as no time passing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from topiq_video.errors import InvalidInputError
from topiq_video.monitor.state import DETECTORS

logger = logging.getLogger(__name__)

DEFAULT_FREEZE_NOISE_DB = -60.0
DEFAULT_FREEZE_MIN_DURATION = 2.0
DEFAULT_FREEZE_MAX_PIXELS = 1 << 19
"""Planes with more pixels are reduced to every ``step``-th row and column (1080p: step 2)."""
DEFAULT_BLACK_PIXEL_THRESHOLD = 0.10
DEFAULT_BLACK_PICTURE_RATIO = 0.98
DEFAULT_BLACK_MIN_DURATION = 2.0
DEFAULT_SILENCE_NOISE_DB = -60.0
DEFAULT_SILENCE_MIN_DURATION = 5.0

TIME_EPSILON = 1e-6
"""FFmpeg compares durations in microseconds; float times get this much slack."""
CLOCK_BACK_TOLERANCE = 0.5
"""A time this far (seconds) before the last one starts afresh; less is timestamp jitter."""

FREEZE, BLACK, SILENCE = DETECTORS  # the episode kinds, as the snapshot names them

_INT_FULL_SCALE = {np.dtype(np.int16): 32767.0, np.dtype(np.int32): 2147483647.0}


def db_to_amplitude(db: float) -> float:
    """An amplitude ratio from decibels (-60 dB -> 0.001)."""
    return 10.0 ** (db / 20.0)


@dataclass(frozen=True)
class Episode:
    """One freeze, black or silence episode: ``end`` is None while it lasts.

    ``value`` is what was measured over the episode so far: for a freeze the largest mean
    absolute difference to the frozen picture (normalised, 0 for an exact repeat), for black
    the smallest share of black pixels, for silence the largest absolute sample (full scale 1).
    """

    kind: str
    start: float
    end: float | None
    value: float | None

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


class Detector:
    """What every detector shares: the active episode and the ``*_seconds_total`` counter."""

    kind = ""

    def __init__(self, min_duration: float) -> None:
        if not (math.isfinite(min_duration) and min_duration >= 0):
            raise InvalidInputError(
                f"min_duration must be a number of seconds >= 0, got {min_duration!r}"
            )
        self.min_duration = float(min_duration)
        self._active_since: float | None = None
        self._closed_seconds = 0.0
        self._last_time: float | None = None

    @property
    def active(self) -> bool:
        """True while an episode lasts (after ``min_duration``, until its end)."""
        return self._active_since is not None

    @property
    def active_since(self) -> float | None:
        """The active episode's start (back-dated to where the condition began), or None."""
        return self._active_since

    @property
    def total_seconds(self) -> float:
        """Seconds in episodes so far, the active one counted up to the last update."""
        total = self._closed_seconds
        if self._active_since is not None and self._last_time is not None:
            total += max(0.0, self._last_time - self._active_since)
        return total

    @property
    def last_time(self) -> float | None:
        """The time of the last frame or sample seen (for audio: the end of the last chunk)."""
        return self._last_time

    def _open(self, start: float, value: float | None) -> Episode:
        self._active_since = start
        return Episode(self.kind, start, None, value)

    def _close(self, end: float, value: float | None) -> Episode:
        start = self._active_since
        assert start is not None
        self._closed_seconds += max(0.0, end - start)
        self._active_since = None
        return Episode(self.kind, start, end, value)

    def _check_time(self, time: float) -> float:
        time = float(time)
        if not math.isfinite(time):
            raise InvalidInputError(f"time must be a finite number of seconds, got {time!r}")
        return time

    def _advance(self, time: float) -> tuple[float, list[Episode]]:
        """The checked time of the next input, and what a jump back ended: back by more than
        CLOCK_BACK_TOLERANCE is a new stream (end what was, start afresh); a smaller step back
        is timestamp jitter and counts as no time passing."""
        time = self._check_time(time)
        last = self._last_time
        if last is None or time >= last:
            return time, []
        if last - time > CLOCK_BACK_TOLERANCE:
            logger.debug("%s detector: the clock went back from %s to %s", self.kind, last, time)
            return time, self.finish(last)
        return last, []

    def finish(self, time: float | None = None) -> list[Episode]:
        """End the feed at ``time`` (default: the last time seen): a condition that has
        lasted ``min_duration`` by then is reported, an active episode ends there. The next
        update starts afresh (use it after a reconnect); ``total_seconds`` is kept."""
        raise NotImplementedError


def _check_plane(plane: np.ndarray, bit_depth: int | None, what: str) -> int:
    if not isinstance(plane, np.ndarray) or plane.ndim != 2 or plane.size == 0:
        shape = getattr(plane, "shape", None)
        raise InvalidInputError(f"{what} must be a non-empty 2-D numpy array, got shape {shape}")
    if plane.dtype == np.uint8:
        depth = 8 if bit_depth is None else bit_depth
        if depth != 8:
            raise InvalidInputError(f"a uint8 {what} has bit_depth 8, got bit_depth={bit_depth}")
        return 8
    if plane.dtype == np.uint16:
        if bit_depth is None or not 9 <= bit_depth <= 16:
            raise InvalidInputError(
                f"a uint16 {what} needs its bit_depth (9 to 16, e.g. bit_depth=10), "
                f"got {bit_depth!r}"
            )
        return int(bit_depth)
    raise InvalidInputError(
        f"{what} must hold uint8 or uint16 code values (with bit_depth), got {plane.dtype}"
    )


def _sum_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    # int16 holds any difference of 8-bit values; deeper formats need int32.
    work = np.int16 if a.dtype == np.uint8 else np.int32
    diff = np.subtract(a, b, dtype=work)
    np.abs(diff, out=diff)
    return int(diff.sum(dtype=np.int64))


class FreezeDetector(Detector):
    """FFmpeg ``freezedetect``: the picture stays within ``noise_db`` of one reference frame
    for ``min_duration`` seconds.

    ``max_pixels``: a plane above this many pixels is compared on every ``step``-th row and
    column, ``step`` the smallest that brings it under (None: always the whole plane).
    """

    kind = FREEZE

    def __init__(
        self,
        noise_db: float = DEFAULT_FREEZE_NOISE_DB,
        min_duration: float = DEFAULT_FREEZE_MIN_DURATION,
        *,
        max_pixels: int | None = DEFAULT_FREEZE_MAX_PIXELS,
    ) -> None:
        super().__init__(min_duration)
        if not (math.isfinite(noise_db) and noise_db <= 0):
            raise InvalidInputError(f"noise_db must be <= 0 dB (e.g. -60.0), got {noise_db!r}")
        if max_pixels is not None and max_pixels < 1:
            raise InvalidInputError(f"max_pixels must be >= 1 or None, got {max_pixels!r}")
        self.noise_db = float(noise_db)
        self.noise = db_to_amplitude(noise_db)
        self.max_pixels = max_pixels
        self._reference: tuple[np.ndarray, ...] | None = None
        self._reference_time = 0.0
        self._layout: tuple = ()
        self._step = 1
        self._peak = 0.0

    def _step_for(self, plane: np.ndarray) -> int:
        if self.max_pixels is None or plane.size <= self.max_pixels:
            return 1
        return math.ceil(math.sqrt(plane.size / self.max_pixels))

    def update(
        self,
        time: float,
        luma: np.ndarray,
        *,
        bit_depth: int | None = None,
        chroma: Sequence[np.ndarray] = (),
    ) -> list[Episode]:
        """Feed one frame: its time in seconds and its luma plane (uint8, or uint16 with
        ``bit_depth``). ``chroma``: the other planes, to pool them in as FFmpeg does."""
        depth = _check_plane(luma, bit_depth, "luma")
        for plane in chroma:
            if _check_plane(plane, bit_depth, "chroma plane") != depth:
                raise InvalidInputError("chroma planes must have the luma plane's dtype")
        planes = (luma, *chroma)
        layout = (depth, tuple(p.shape for p in planes))
        time, out = self._advance(time)
        if self._reference is not None and layout != self._layout:
            # A new picture size or format: the old reference means nothing now.
            out += self.finish(time)
        if self._reference is None:
            self._layout = layout
            self._step = self._step_for(luma)
            self._set_reference(time, self._sample(planes))
            self._last_time = time
            return out

        sampled = self._sample(planes)
        sad = sum(_sum_abs_diff(a, b) for a, b in zip(sampled, self._reference, strict=True))
        count = sum(a.size for a in sampled)
        mafd = sad / count / float(1 << depth)
        frozen = mafd <= self.noise
        if frozen:
            self._peak = max(self._peak, mafd)
        self._last_time = time
        if time - self._reference_time >= self.min_duration - TIME_EPSILON:
            if not self.active:
                out.append(self._open(self._reference_time, self._peak))
            if not frozen:
                out.append(self._close(time, self._peak))
        if not frozen:
            self._set_reference(time, sampled)
        return out

    def _sample(self, planes: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        step = self._step
        if step == 1:
            return tuple(planes)
        # One contiguous copy: faster to difference, and kept as is if it becomes the reference.
        return tuple(np.ascontiguousarray(p[::step, ::step]) for p in planes)

    def _set_reference(self, time: float, sampled: Sequence[np.ndarray]) -> None:
        # The caller's planes may be reused buffers: keep our own copy (sampled ones are ours).
        own = self._step > 1
        self._reference = tuple(p if own else np.array(p, copy=True) for p in sampled)
        self._reference_time = time
        self._peak = 0.0

    def finish(self, time: float | None = None) -> list[Episode]:
        out: list[Episode] = []
        end = self._last_time if time is None else self._check_time(time)
        if self._reference is not None and end is not None:
            if not self.active and end - self._reference_time >= self.min_duration - TIME_EPSILON:
                out.append(self._open(self._reference_time, self._peak))
            if self.active:
                self._last_time = max(end, self._reference_time)
                out.append(self._close(self._last_time, self._peak))
        self._reference = None
        self._peak = 0.0
        return out


def black_pixel_threshold(pixel_threshold: float, bit_depth: int, full_range: bool) -> int:
    """The highest code value blackdetect counts as black (truncated, as FFmpeg does)."""
    if full_range:
        value = pixel_threshold * ((1 << bit_depth) - 1)
    else:
        factor = 1 << (bit_depth - 8)
        value = 16 * factor + pixel_threshold * (235 - 16) * factor
    return int(value)


class BlackDetector(Detector):
    """FFmpeg ``blackdetect``: at least ``picture_ratio`` of the luma is at most
    ``pixel_threshold`` of the range above black, for ``min_duration`` seconds."""

    kind = BLACK

    def __init__(
        self,
        pixel_threshold: float = DEFAULT_BLACK_PIXEL_THRESHOLD,
        picture_ratio: float = DEFAULT_BLACK_PICTURE_RATIO,
        min_duration: float = DEFAULT_BLACK_MIN_DURATION,
    ) -> None:
        super().__init__(min_duration)
        for name, value in (("pixel_threshold", pixel_threshold), ("picture_ratio", picture_ratio)):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise InvalidInputError(f"{name} must lie in [0, 1], got {value!r}")
        self.pixel_threshold = float(pixel_threshold)
        self.picture_ratio = float(picture_ratio)
        self._run_start: float | None = None
        self._run_min_ratio = 1.0
        self.last_ratio: float | None = None
        """The share of black pixels in the last frame."""

    def update(
        self,
        time: float,
        luma: np.ndarray,
        *,
        bit_depth: int | None = None,
        full_range: bool = False,
    ) -> list[Episode]:
        """Feed one frame: its time, its luma plane (uint8, or uint16 with ``bit_depth``) and
        its range (``full_range=True`` for full/JPEG range, as the frame's tag or a yuvj
        format says; limited otherwise, as blackdetect assumes)."""
        depth = _check_plane(luma, bit_depth, "luma")
        time, out = self._advance(time)
        threshold = black_pixel_threshold(self.pixel_threshold, depth, full_range)
        ratio = int(np.count_nonzero(luma <= threshold)) / luma.size
        self.last_ratio = ratio
        black = ratio >= self.picture_ratio
        self._last_time = time
        if black:
            if self._run_start is None:
                self._run_start = time
                self._run_min_ratio = ratio
            else:
                self._run_min_ratio = min(self._run_min_ratio, ratio)
        start = self._run_start
        if start is None:
            return out
        if not self.active and time - start >= self.min_duration - TIME_EPSILON:
            out.append(self._open(start, self._run_min_ratio))
        if not black:
            if self.active:
                out.append(self._close(time, self._run_min_ratio))
            self._run_start = None
        return out

    def finish(self, time: float | None = None) -> list[Episode]:
        out: list[Episode] = []
        end = self._last_time if time is None else self._check_time(time)
        start = self._run_start
        if start is not None and end is not None:
            if not self.active and end - start >= self.min_duration - TIME_EPSILON:
                out.append(self._open(start, self._run_min_ratio))
            if self.active:
                self._last_time = max(end, start)
                out.append(self._close(self._last_time, self._run_min_ratio))
        self._run_start = None
        return out


class SilenceDetector(Detector):
    """FFmpeg ``silencedetect`` (peak mode, all channels together): every channel within
    ``noise_db`` of zero for ``min_duration`` seconds."""

    kind = SILENCE

    def __init__(
        self,
        noise_db: float = DEFAULT_SILENCE_NOISE_DB,
        min_duration: float = DEFAULT_SILENCE_MIN_DURATION,
    ) -> None:
        super().__init__(min_duration)
        if not math.isfinite(noise_db):
            raise InvalidInputError(f"noise_db must be a finite number of dB, got {noise_db!r}")
        self.noise_db = float(noise_db)
        self.noise = db_to_amplitude(noise_db)
        self._rate: int | None = None
        self._run_start: float | None = None
        self._run_samples = 0
        self._run_peak = 0.0

    def _needed(self, rate: int) -> int:
        # FFmpeg turns the duration into microseconds, then into samples, rounding.
        micros = round(self.min_duration * 1e6)
        return max(1, (micros * rate + 500_000) // 1_000_000)

    def update(
        self,
        time: float,
        samples: np.ndarray,
        sample_rate: int,
        *,
        channels: int | None = None,
    ) -> list[Episode]:
        """Feed one chunk of decoded audio starting at ``time`` seconds.

        ``samples``: planar ``(channels, n)``, or interleaved (1-D, or PyAV's packed
        ``(1, n * channels)``) with ``channels`` given. Float samples have full scale 1;
        int16 and int32 samples their type's maximum.
        """
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
            raise InvalidInputError(f"sample_rate must be an integer (Hz), got {sample_rate!r}")
        if sample_rate <= 0:
            raise InvalidInputError(f"sample_rate must be > 0 Hz, got {sample_rate}")
        rate = int(sample_rate)
        planar = self._planar(samples, channels)
        n = planar.shape[1]
        time, out = self._advance(time)
        if self._rate is not None and rate != self._rate:
            # FFmpeg rescales the silent-sample count to the new rate.
            self._run_samples = self._run_samples * rate // self._rate
        self._rate = rate
        self._last_time = time + n / rate
        if n == 0:
            return out
        if planar.dtype in _INT_FULL_SCALE:
            scale = _INT_FULL_SCALE[planar.dtype]
            noise = self.noise * scale
        elif np.issubdtype(planar.dtype, np.floating):
            scale = 1.0
            noise = self.noise
        else:
            raise InvalidInputError(
                f"samples must be float, int16 or int32 (decoded audio), got {planar.dtype}"
            )
        # NaN compares false both ways, so (like FFmpeg) it counts as sound.
        silent = (planar < noise).all(axis=0) & (planar > -noise).all(axis=0)
        loud = np.flatnonzero(~silent)
        needed = self._needed(rate)

        def run_to(stop: int, begin: int) -> None:
            # Extend the open run over samples [begin, stop), all silent.
            if stop <= begin:
                return
            if self._run_start is None:
                self._run_start = time + begin / rate
                self._run_samples = 0
                self._run_peak = 0.0
            self._run_samples += stop - begin
            peak = float(np.abs(planar[:, begin:stop].astype(np.float64)).max()) / scale
            self._run_peak = max(self._run_peak, peak)
            if not self.active and self._run_samples >= needed:
                out.append(self._open(self._run_start, self._run_peak))

        def break_at(index: int) -> None:
            if self.active:
                out.append(self._close(time + index / rate, self._run_peak))
            self._run_start = None
            self._run_samples = 0
            self._run_peak = 0.0

        if loud.size == 0:
            run_to(n, 0)
            return out
        run_to(int(loud[0]), 0)
        break_at(int(loud[0]))
        # Only gaps long enough to become episodes matter between the first and last loud sample.
        gaps = np.flatnonzero(np.diff(loud) - 1 >= needed)
        for k in gaps:
            begin = int(loud[k]) + 1
            stop = int(loud[k + 1])
            run_to(stop, begin)
            break_at(stop)
        run_to(n, int(loud[-1]) + 1)
        return out

    @staticmethod
    def _planar(samples: np.ndarray, channels: int | None) -> np.ndarray:
        if not isinstance(samples, np.ndarray):
            raise InvalidInputError(f"samples must be a numpy array, got {type(samples).__name__}")
        if channels is not None:
            if channels < 1 or samples.size % channels:
                raise InvalidInputError(
                    f"interleaved samples of size {samples.size} do not split into "
                    f"{channels} channels; give channels= the stream's channel count"
                )
            return samples.reshape(-1, channels).T
        if samples.ndim == 1:
            return samples[None, :]
        if samples.ndim == 2:
            return samples
        raise InvalidInputError(
            f"samples must be planar (channels, n) or interleaved with channels=, "
            f"got shape {samples.shape}"
        )

    def finish(self, time: float | None = None) -> list[Episode]:
        out: list[Episode] = []
        end = self._last_time if time is None else self._check_time(time)
        start = self._run_start
        if start is not None and end is not None:
            if not self.active and end - start >= self.min_duration - TIME_EPSILON:
                out.append(self._open(start, self._run_peak))
            if self.active:
                self._last_time = max(end, start)
                out.append(self._close(self._last_time, self._run_peak))
        self._run_start = None
        self._run_samples = 0
        self._run_peak = 0.0
        return out
