"""Full-reference alignment: pair distorted and reference frames by presentation time, and
estimate a constant time offset between the two streams from small luma thumbnails.

Conventions: times are seconds from each stream's start (floats or Fractions). An offset is
what to add to a distorted frame's time to find the reference instant it shows, so an encode
whose first 12 frames were trimmed has offset +12 reference frames, and an encode with 7
extra leading frames has offset -7.

Time rule: reference frame j is *shown* over ``[b_j, b_{j+1})`` where
``b_j = r_j - tolerance * (r_j - r_{j-1})``; with the default tolerance of half a frame this is
the nearest reference frame in time, which absorbs timestamp rounding (ms time bases, 29.97
vs 30000/1001) so equal-rate streams pair 1:1. The last reference frame is shown for one
frame duration; distorted frames outside ``[b_0, end)`` are unmatched and never padded.

Picture rule: when the frame rates differ, the nearest frame is often not the one whose
picture an encode shows: a sample-and-hold conversion shows the latest frame at or before
each instant (half the rows of 25 -> 30 fps differ from the nearest), FFmpeg's ``fps`` filter
the nearest with ties going to the earlier frame. Given luma thumbnails, each distorted
frame is paired with the neighbour of its nearest frame whose thumbnail it matches clearly
best, never going back before the previous row's frame; where the thumbnails cannot tell,
the time rule stays. :attr:`PairingStats.conversion` names the convention found.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from topiq_video.errors import AlignmentError, InvalidInputError
from topiq_video.pipeline.options import DEFAULT_MAX_OFFSET

logger = logging.getLogger(__name__)

DEFAULT_SEARCH_WINDOW = 10.0
"""Seconds of common content compared for each candidate offset."""
PAIR_TOLERANCE = 0.5
"""Fraction of a reference frame by which a distorted time may precede a reference frame."""
FALLBACK_FRAME_DURATION = 1.0 / 30.0
"""Frame duration assumed only for a single-frame reference given no duration."""
LOW_CONFIDENCE = 0.5
"""Estimates below this confidence are flagged ``ambiguous``."""
EQUAL_RATE_TOLERANCE = 5e-4
"""Relative difference of mean frame durations below which two streams have the same rate
(29.97 and 30000/1001 fps do; 29.97 and 30 do not), on top of what timestamp rounding hides."""
TIMESTAMP_ROUNDING = 1e-3
"""Seconds by which container timestamps may be rounded (millisecond time bases)."""
MIN_SPLIT_ROWS = 5
"""Rows telling sample-and-hold from nearest needed before a conversion is named."""
CONVENTION_SHARE = 0.85
"""Share of those rows one convention needs to be named; below it the conversion is "mixed"."""

# Cost-curve analysis. Costs are (1 - mean spatial corr) + (1 - mean temporal corr), in [0, 4].
_COST_FLOOR = 0.02  # below this cost spread the curve is noise (static content)
_PROMINENCE_FRACTION = 0.1  # a rival minimum must rise this much (of the spread) to count
_TIE = 0.1  # distinct minima this close (of the spread) to the best count as ties
_MIN_OVERLAP_FRACTION = 0.5  # candidates overlapping less than this of the best are skipped
_MIN_PAIRS = 4
_PASS1_ELEMENTS = 1 << 19  # (candidate, frame) times placed at once in the first pass
_STAT_CHUNK = 256  # frames per pass when computing per-frame statistics
_BLOCK_ROWS = 128  # distorted frames per block of the offset search
_BLOCK_COLS = 768  # most reference frames per block (their float64 copy dominates memory)
_BLOCK_CANDIDATES = 1024  # candidate offsets whose reference frames are looked up at once
_FLAT_STD = 1.0 / 255.0  # thumbnails flatter than this (black, fades) carry no pattern
_MOTION_RMS = 2e-3  # frame differences below this RMS count as "no change"
_QUALITY_LOW, _QUALITY_HIGH = 0.5, 0.9  # spatial correlation mapped to match quality 0..1

# Picture-following pairing (unit-norm thumbnails; squared distance = 2 - 2 correlation).
_PICK_MARGIN = 0.3  # the gain over the time rule's frame, as a share of how much they differ
_PICK_NOISE = 0.7  # ... and as a multiple of the best match's own residual (compression)
_PICK_MIN_CHANGE = 1e-3  # candidates closer than this are the same picture
_PHASE_TIE = 0.05  # instants this close (reference frames) to a frame or a midpoint are ties
_PICTURE_COUNTS = (
    "picked_earlier",
    "picked_later",
    "compared",
    "unclear",
    "split_rows",
    "split_hold",
    "split_nearest",
)

Time = float | Fraction | int
D = TypeVar("D")
R = TypeVar("R")


@dataclass(frozen=True)
class PairingStats:
    """Counts of a pairing. ``ref_skipped`` are reference frames inside the overlap that no
    distorted frame showed (a lower distorted frame rate); ``complete`` is False when a stream
    was not read to its end (``drain=False``), making the trailing counts lower bounds.

    How the frame-rate conversion was followed (see :attr:`conversion`): ``equal_rate``
    (None while either stream has fewer than two frames); ``picked_earlier`` and
    ``picked_later``: rows paired with an earlier or later reference frame than the nearest
    in time; ``compared``: rows whose thumbnails were matched (frame rates differ), of which
    ``unclear`` could not tell the candidates apart and kept the time rule. ``split_rows``
    are compared rows where "sample-and-hold" (the latest reference frame at or before the
    instant) and "nearest" name different frames and the pictures told them apart:
    ``split_hold`` followed the first, ``split_nearest`` the second.
    """

    paired: int
    dist_before: int
    dist_after: int
    ref_before: int
    ref_after: int
    ref_skipped: int
    complete: bool = True
    # What the pictures followed: descriptive, so left out of equality (two pairings with
    # the same counts compare equal whatever was measured about the conversion).
    equal_rate: bool | None = field(default=None, compare=False)
    picked_earlier: int = field(default=0, compare=False)
    picked_later: int = field(default=0, compare=False)
    compared: int = field(default=0, compare=False)
    unclear: int = field(default=0, compare=False)
    split_rows: int = field(default=0, compare=False)
    split_hold: int = field(default=0, compare=False)
    split_nearest: int = field(default=0, compare=False)

    @property
    def unmatched_dist(self) -> int:
        return self.dist_before + self.dist_after

    @property
    def unmatched_ref(self) -> int:
        """Reference frames never paired with any distorted frame."""
        return self.ref_before + self.ref_after + self.ref_skipped

    @property
    def picked_nearest(self) -> int:
        """Rows paired with the reference frame nearest their instant (the time rule)."""
        return self.paired - self.picked_earlier - self.picked_later

    @property
    def hold_share(self) -> float:
        """Share of ``split_rows`` that followed sample-and-hold (NaN without any)."""
        return self.split_hold / self.split_rows if self.split_rows else math.nan

    @property
    def nearest_share(self) -> float:
        """Share of ``split_rows`` that followed the nearest frame (NaN without any)."""
        return self.split_nearest / self.split_rows if self.split_rows else math.nan

    @property
    def conversion(self) -> str:
        """Which frame-rate conversion the distorted pictures followed: "equal rate",
        "sample-and-hold", "nearest", "mixed", or "unknown" (rates not measurable, or too
        few rows where the conventions differ and the thumbnails could tell)."""
        if self.equal_rate:
            return "equal rate"
        if self.equal_rate is None or self.split_rows < MIN_SPLIT_ROWS:
            return "unknown"
        if self.hold_share >= CONVENTION_SHARE:
            return "sample-and-hold"
        if self.nearest_share >= CONVENTION_SHARE:
            return "nearest"
        return "mixed"

    def conversion_summary(self) -> dict[str, Any]:
        """The conversion and the counts behind it, JSON-friendly (for reports)."""
        return {
            "conversion": self.conversion,
            "equal_rate": self.equal_rate,
            "picked_nearest": self.picked_nearest,
            "picked_earlier": self.picked_earlier,
            "picked_later": self.picked_later,
            "compared": self.compared,
            "unclear": self.unclear,
            "split_rows": self.split_rows,
            "split_hold": self.split_hold,
            "split_nearest": self.split_nearest,
        }


@dataclass(frozen=True, eq=False)
class PairingResult:
    """``pairs``: (K, 2) int64 array of (dist_idx, ref_idx), in distorted order."""

    pairs: np.ndarray
    stats: PairingStats
    offset: float

    @property
    def unmatched_dist(self) -> int:
        return self.stats.unmatched_dist

    @property
    def unmatched_ref(self) -> int:
        return self.stats.unmatched_ref


@dataclass(frozen=True, eq=False)
class OffsetEstimate:
    """A constant offset between the streams and how sure we are of it.

    ``offset_seconds`` is added to distorted times to find the reference time;
    ``offset_frames`` is the same in reference frames (an int for automatic estimates).
    ``candidate_offsets`` (seconds) and ``costs`` (NaN where the streams overlapped too
    little) are the search curve, lower is better. ``match`` is the mean thumbnail
    correlation at the chosen offset. ``message`` explains a low confidence ("" otherwise).
    """

    offset_seconds: float
    offset_frames: int | float
    ref_frame_duration: float
    confidence: float
    method: str
    candidate_offsets: np.ndarray = field(default_factory=lambda: np.zeros(0))
    costs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    match: float = float("nan")
    pairs_used: int = 0
    ambiguous: bool = False
    message: str = ""

    @property
    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        return self.candidate_offsets, self.costs

    @classmethod
    def manual(cls, offset_seconds: float, ref_frame_duration: float) -> OffsetEstimate:
        """An offset given by the user (``--offset SECONDS``)."""
        frames = offset_seconds / ref_frame_duration
        whole = round(frames)
        return cls(
            offset_seconds=float(offset_seconds),
            offset_frames=whole if abs(frames - whole) < 1e-6 else frames,
            ref_frame_duration=float(ref_frame_duration),
            confidence=1.0,
            method="manual",
        )


# --------------------------------------------------------------------------- pairing


def _as_times(times: Iterable[Time] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray([float(t) for t in times], dtype=np.float64)
    if arr.size and not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{what} frame times contain NaN or infinity; check the input.")
    if arr.size > 1 and np.any(np.diff(arr) < 0):
        i = int(np.flatnonzero(np.diff(arr) < 0)[0])
        raise InvalidInputError(
            f"{what} frame times go backwards at frame {i + 1} ({arr[i]:.6f} s -> "
            f"{arr[i + 1]:.6f} s); frames must be in presentation order with monotonic times."
        )
    return arr


def _boundaries(
    ref: np.ndarray, tolerance: float, ref_frame_duration: float | None
) -> tuple[np.ndarray, float]:
    """Start instants b_j from which each reference frame is shown, and the end instant.

    The streaming pairer evaluates the very same float expressions one frame at a time, so
    both paths pair identically.
    """
    n = ref.size
    gaps = np.diff(ref)
    first = ref_frame_duration if ref_frame_duration is not None else _first_gap(ref)
    last = ref_frame_duration if ref_frame_duration is not None else _last_gap(ref)
    b = np.empty(n, dtype=np.float64)
    b[0] = ref[0] - tolerance * first
    b[1:] = ref[1:] - tolerance * gaps
    end = float(ref[-1]) + (1.0 - tolerance) * last
    return b, end


def _first_gap(ref: np.ndarray) -> float:
    return float(ref[1] - ref[0]) if ref.size > 1 else FALLBACK_FRAME_DURATION


def _last_gap(ref: np.ndarray) -> float:
    return float(ref[-1] - ref[-2]) if ref.size > 1 else FALLBACK_FRAME_DURATION


def _check_tolerance(tolerance: float) -> None:
    if not 0.0 <= tolerance < 1.0:
        raise InvalidInputError(f"tolerance must be in [0, 1) reference frames, got {tolerance}.")


def _no_overlap_error(offset: float, detail: str) -> AlignmentError:
    return AlignmentError(
        f"The distorted and reference streams do not overlap in time at offset {offset:+.3f} s "
        f"({detail}). Check that the reference matches the encode, or pass --offset SECONDS "
        "(reference time = distorted time + offset)."
    )


def pair_by_time(
    dist_times: Sequence[Time] | np.ndarray,
    ref_times: Sequence[Time] | np.ndarray,
    offset: float = 0.0,
    *,
    tolerance: float = PAIR_TOLERANCE,
    ref_frame_duration: float | None = None,
    dist_thumbs: Any = None,
    ref_thumbs: Any = None,
) -> PairingResult:
    """Pair each distorted frame with the reference frame shown at its time + ``offset``.

    ``ref_frame_duration`` sets how long the first/last reference frames are shown (default:
    the neighbouring frame gap). Given both ``dist_thumbs`` and ``ref_thumbs`` ((N, h, w)
    luma thumbnails, one per time), frames of streams whose rates differ are paired with the
    reference frame their picture came from, exactly as :class:`StreamPairer` does; without
    them the pairing is by time alone. Raises AlignmentError when nothing overlaps.
    """
    _check_tolerance(tolerance)
    offset = float(offset)
    d = _as_times(dist_times, "distorted")
    r = _as_times(ref_times, "reference")
    if d.size == 0 or r.size == 0:
        raise AlignmentError(
            f"Cannot pair: the {'distorted' if d.size == 0 else 'reference'} stream has no "
            "frames. Check the input file and any time range options."
        )
    if dist_thumbs is not None and ref_thumbs is not None:
        return _pair_arrays_by_picture(
            d,
            r,
            _as_thumbs(dist_thumbs),
            _as_thumbs(ref_thumbs),
            offset,
            tolerance,
            ref_frame_duration,
        )
    b, end = _boundaries(r, tolerance, ref_frame_duration)
    s = d + offset
    j = np.searchsorted(b, s, side="right") - 1
    before = j < 0
    after = ~before & (s >= end)
    ok = ~before & ~after
    dist_idx = np.flatnonzero(ok)
    ref_idx = j[ok]
    if dist_idx.size == 0:
        raise _no_overlap_error(
            offset,
            f"distorted {d[0]:.3f}-{d[-1]:.3f} s maps to {s[0]:.3f}-{s[-1]:.3f} s, "
            f"reference covers {b[0]:.3f}-{end:.3f} s",
        )
    lo, hi = int(ref_idx[0]), int(ref_idx[-1])
    used = np.unique(ref_idx).size
    stats = PairingStats(
        paired=int(dist_idx.size),
        dist_before=int(before.sum()),
        dist_after=int(after.sum()),
        ref_before=lo,
        ref_after=int(r.size - 1 - hi),
        ref_skipped=int(hi - lo + 1 - used),
        equal_rate=_rates_equal(_RateMeter.of(d), _RateMeter.of(r)),
    )
    pairs = np.stack([dist_idx, ref_idx], axis=1).astype(np.int64)
    return PairingResult(pairs=pairs, stats=stats, offset=offset)


class _Indexed(NamedTuple):
    index: int
    time: float
    thumb: np.ndarray


def _pair_arrays_by_picture(
    d: np.ndarray,
    r: np.ndarray,
    d_thumbs: np.ndarray,
    r_thumbs: np.ndarray,
    offset: float,
    tolerance: float,
    ref_frame_duration: float | None,
) -> PairingResult:
    for name, th, t in (("distorted", d_thumbs, d), ("reference", r_thumbs, r)):
        if th.shape[0] != t.size:
            raise InvalidInputError(
                f"{name} thumbnails must be one per frame time; got {th.shape[0]} for "
                f"{t.size} times."
            )
    pairer = StreamPairer(
        (_Indexed(i, float(t), th) for i, (t, th) in enumerate(zip(d, d_thumbs, strict=True))),
        (_Indexed(j, float(t), th) for j, (t, th) in enumerate(zip(r, r_thumbs, strict=True))),
        offset,
        tolerance=tolerance,
        ref_frame_duration=ref_frame_duration,
    )
    pairs = np.array([(a.index, b.index) for a, b in pairer], dtype=np.int64).reshape(-1, 2)
    assert pairer.stats is not None
    return PairingResult(pairs=pairs, stats=pairer.stats, offset=offset)


def _default_time(item: Any) -> float:
    return float(item.time)


def _default_thumb(item: Any) -> Any:
    return getattr(item, "thumb", None)


def _default_index(item: Any) -> int | None:
    index = getattr(item, "index", None)
    return None if index is None else int(index)


_END = object()


class _RateMeter:
    """A stream's frame duration from its timestamps so far, in constant memory.

    Frames are counted by their stream index where items have one, so a thinned stream
    (every other frame, a lower sampling rate) still measures the stream's own rate."""

    def __init__(self) -> None:
        self.count = 0
        self.first = self.last = math.nan
        self.first_index = self.last_index = 0
        self.min_gap, self.max_gap = math.inf, -math.inf

    def add(self, t: float, index: int | None = None) -> None:
        index = self.count if index is None else index
        if self.count:
            steps = index - self.last_index
            if steps > 0:
                gap = (t - self.last) / steps
                self.min_gap = min(self.min_gap, gap)
                self.max_gap = max(self.max_gap, gap)
        else:
            self.first, self.first_index = t, index
        self.last, self.last_index = t, index
        self.count += 1

    @classmethod
    def of(cls, times: np.ndarray) -> _RateMeter:
        meter = cls()
        meter.count = int(times.size)
        if times.size:
            meter.first, meter.last = float(times[0]), float(times[-1])
            meter.last_index = int(times.size - 1)
        if times.size > 1:
            gaps = np.diff(times)
            meter.min_gap, meter.max_gap = float(gaps.min()), float(gaps.max())
        return meter

    def duration(self) -> tuple[float, float] | None:
        """(mean frame duration, its relative uncertainty), or None before two frames.

        The uncertainty is what uneven gaps could hide: the mean is off by the first and
        last timestamps' errors over the span (rounding, jitter), or by a dropped frame's
        extra gap over the frame count; twice the gaps' spread covers both."""
        span = self.last - self.first
        frames = self.last_index - self.first_index
        if frames < 1 or not span > 0:
            return None
        slack = 2.0 * (self.max_gap - self.min_gap) + TIMESTAMP_ROUNDING
        return span / frames, slack / span


def _rates_equal(a: _RateMeter, b: _RateMeter) -> bool | None:
    """Whether two streams have the same frame rate; None until each has two frames."""
    da, db = a.duration(), b.duration()
    if da is None or db is None:
        return None
    return abs(da[0] / db[0] - 1.0) <= EQUAL_RATE_TOLERANCE + da[1] + db[1]


class _Thumbs:
    """Unit-norm, mean-removed thumbnails (so brightness and contrast do not matter), made
    once per frame; flat ones (black, fades) are zero: they match no pattern."""

    def __init__(self, thumb_of: Callable[[Any], Any]) -> None:
        self._thumb_of = thumb_of
        self._ref: dict[int, np.ndarray | None] = {}
        self._size: int | None = None
        self._warned = False

    def unit(self, item: Any) -> np.ndarray | None:
        thumb = self._thumb_of(item)
        if thumb is None:
            return None
        x = _as_thumbs(thumb).astype(np.float64).ravel()
        if self._size is None:
            self._size = x.size
        elif x.size != self._size:
            if not self._warned:
                logger.warning(
                    "Thumbnails of different sizes (%d and %d values): pairing by time only.",
                    self._size,
                    x.size,
                )
                self._warned = True
            return None
        x -= x.mean()
        norm = float(np.linalg.norm(x))
        return x / norm if norm / math.sqrt(x.size) >= _FLAT_STD else np.zeros_like(x)

    def ref_unit(self, pos: int, item: Any) -> np.ndarray | None:
        if pos not in self._ref:
            self._ref[pos] = self.unit(item)
        return self._ref[pos]

    def forget_before(self, pos: int) -> None:
        for old in [p for p in self._ref if p < pos]:
            del self._ref[old]


def _clearly_better(dist_a: float, dist_b: float, sep: float) -> bool:
    """Candidate a explains the distorted picture clearly better than candidate b.

    ``dist_*`` are squared distances of the distorted thumbnail to each candidate, ``sep``
    that between the two candidates (all unit-norm). The gain must be a good part of how
    much the candidates differ (the picture lies well on a's side, not halfway) and exceed
    a's own residual (the compression noise), and the candidates must differ at all."""
    gain = dist_b - dist_a
    return sep >= _PICK_MIN_CHANGE and gain >= _PICK_MARGIN * sep and gain >= _PICK_NOISE * dist_a


class StreamPairer(Generic[D, R]):
    """Iterator of (distorted item, reference item) pairs, by the rule of :func:`pair_by_time`.

    Reads both iterables once, in step, holding at most three reference items (the one
    shown, the one before and the next). Items need a ``.time`` in seconds (or pass
    ``time_of``). ``stats`` is None until the iterator is exhausted. With ``drain`` (default)
    the stream that outlasts the other is read to its end to count its unmatched frames;
    pass ``drain=False`` to stop as soon as no more pairs are possible (e.g. when the
    distorted stream was cut short).

    Where the frame rates differ, each distorted frame is paired with the reference frame
    its picture came from: among the reference frames before, at and after its instant (no
    earlier than the previous row's), the one whose luma thumbnail matches best, read with
    ``thumb_of`` (default: the item's ``thumb``, a small luma array such as
    ``luma_thumbnails`` makes; None pairs by time). Where the thumbnails cannot tell (static
    content, a near-tie within the compression noise) the time rule stays. Equal-rate
    streams are always paired by time; rates are measured from the times and, through
    ``index_of`` (default: the item's ``index``), the stream positions, so a thinned
    distorted stream keeps its own rate. ``match_pictures=False`` pairs by time only.
    """

    def __init__(
        self,
        dist: Iterable[D],
        ref: Iterable[R],
        offset: float = 0.0,
        *,
        tolerance: float = PAIR_TOLERANCE,
        ref_frame_duration: float | None = None,
        drain: bool = True,
        time_of: Callable[[Any], float] = _default_time,
        thumb_of: Callable[[Any], Any] = _default_thumb,
        index_of: Callable[[Any], int | None] = _default_index,
        match_pictures: bool = True,
    ) -> None:
        _check_tolerance(tolerance)
        self.offset = float(offset)
        self.stats: PairingStats | None = None
        self._tol = float(tolerance)
        self._dur = None if ref_frame_duration is None else float(ref_frame_duration)
        self._drain = drain
        self._time_of = time_of
        self._index_of = index_of
        self._thumbs = _Thumbs(thumb_of) if match_pictures else None
        self._gen = self._run(iter(dist), iter(ref))

    def __iter__(self) -> StreamPairer[D, R]:
        return self

    def __next__(self) -> tuple[D, R]:
        return next(self._gen)

    def _time(self, item: Any, what: str) -> float:
        t = float(self._time_of(item))
        if not math.isfinite(t):
            raise InvalidInputError(f"{what} frame time is {t}; check the input.")
        return t

    def _run(self, dist_it: Iterator[D], ref_it: Iterator[R]) -> Iterator[tuple[D, R]]:
        tol, dur, offset = self._tol, self._dur, self.offset
        d_rate, r_rate = _RateMeter(), _RateMeter()
        cur = next(ref_it, _END)
        if cur is _END:
            raise AlignmentError("Cannot pair: the reference stream has no frames.")
        r_cur = self._time(cur, "reference")
        r_rate.add(r_cur, self._index_of(cur))
        r_prev: float | None = None
        prv: Any = _END
        cur_pos = 0  # position of `cur` in the reference stream

        def read_next() -> tuple[Any, float]:
            item = next(ref_it, _END)
            if item is _END:
                return _END, math.nan
            t = self._time(item, "reference")
            if t < r_cur:
                raise InvalidInputError(
                    f"reference frame times go backwards ({r_cur:.6f} s -> {t:.6f} s); "
                    "frames must be in presentation order with monotonic times."
                )
            r_rate.add(t, self._index_of(item))
            return item, t

        nxt, r_nxt = read_next()
        if dur is not None:
            first = dur
        else:
            first = r_nxt - r_cur if nxt is not _END else FALLBACK_FRAME_DURATION
        b_cur = r_cur - tol * first
        one_minus_tol = 1.0 - tol

        paired = dist_before = dist_after = 0
        counts = dict.fromkeys(_PICTURE_COUNTS, 0)
        lo_pos = last_pos = -1  # first and latest reference positions paired
        used = 0  # distinct reference frames paired
        last_s = -math.inf
        dist_done = True
        for item in dist_it:
            t = self._time(item, "distorted")
            s = t + offset
            if s < last_s:
                raise InvalidInputError(
                    f"distorted frame times go backwards ({last_s - offset:.6f} s -> "
                    f"{s - offset:.6f} s); frames must be in presentation order."
                )
            last_s = s
            d_rate.add(t, self._index_of(item))
            while nxt is not _END:
                b_next = r_nxt - tol * (r_nxt - r_cur)
                if s < b_next:
                    break
                prv, r_prev = cur, r_cur
                cur, r_cur, b_cur, cur_pos = nxt, r_nxt, b_next, cur_pos + 1
                nxt, r_nxt = read_next()
            if s < b_cur:
                dist_before += 1
                continue
            if nxt is _END:
                if dur is not None:
                    last = dur
                else:
                    last = r_cur - r_prev if r_prev is not None else FALLBACK_FRAME_DURATION
                if s >= r_cur + one_minus_tol * last:
                    dist_after += 1
                    if not self._drain:
                        dist_done = False
                        break
                    continue
            # The time rule's frame, unless an earlier row already took the next one.
            pos, pick = (cur_pos, cur) if last_pos <= cur_pos else (cur_pos + 1, nxt)
            if self._thumbs is not None and _rates_equal(d_rate, r_rate) is False:
                window = [(cur_pos - 1, prv, r_prev), (cur_pos, cur, r_cur)]
                if nxt is not _END:
                    window.append((cur_pos + 1, nxt, r_nxt))
                window = [w for w in window if w[0] >= max(last_pos, 0) and w[1] is not _END]
                pos, pick = self._follow_picture(item, s, window, pos, cur_pos, counts)
                self._thumbs.forget_before(cur_pos - 1)
            if pos != last_pos:
                used += 1
                if lo_pos < 0:
                    lo_pos = pos
            last_pos = pos
            if pos < cur_pos:
                counts["picked_earlier"] += 1
            elif pos > cur_pos:
                counts["picked_later"] += 1
            paired += 1
            yield item, pick

        ref_read = cur_pos + (1 if nxt is _END else 2)
        ref_done = nxt is _END
        if not ref_done and self._drain:
            for rest in ref_it:
                r_rate.add(float(self._time_of(rest)), self._index_of(rest))
                ref_read += 1
            ref_done = True
        self.stats = PairingStats(
            paired=paired,
            dist_before=dist_before,
            dist_after=dist_after,
            ref_before=max(lo_pos, 0),
            ref_after=ref_read - 1 - last_pos,
            ref_skipped=last_pos - lo_pos + 1 - used if paired else 0,
            complete=dist_done and ref_done,
            equal_rate=_rates_equal(d_rate, r_rate),
            **counts,
        )
        logger.debug("stream pairing finished: %s", self.stats)
        if paired == 0:
            raise _no_overlap_error(
                offset,
                f"{dist_before} distorted frames before the reference start, "
                f"{dist_after} after its end",
            )

    def _follow_picture(
        self,
        item: Any,
        s: float,
        window: list[tuple[int, Any, float | None]],
        pos: int,
        cur_pos: int,
        counts: dict[str, int],
    ) -> tuple[int, Any]:
        """The reference frame (position, item) among ``window`` whose thumbnail matches the
        distorted item's, or ``pos`` (the time rule) where the thumbnails cannot tell."""
        assert self._thumbs is not None
        by_pos = {w[0]: w for w in window}
        fallback = (pos, by_pos[pos][1])
        x = self._thumbs.unit(item)
        if x is None or not x.any() or len(window) < 2:
            return fallback
        units = [self._thumbs.ref_unit(p, it) for p, it, _ in window]
        if any(u is None for u in units):
            return fallback
        counts["compared"] += 1
        sq = [float(np.sum((x - u) ** 2)) for u in units]
        index = {w[0]: k for k, w in enumerate(window)}

        def clearly(a: int, b: int) -> bool:
            ka, kb = index[a], index[b]
            sep = float(np.sum((units[ka] - units[kb]) ** 2))
            return _clearly_better(sq[ka], sq[kb], sep)

        best = min(index, key=lambda p: (sq[index[p]], p != pos))
        choice = best if best != pos and clearly(best, pos) else pos
        runner_up = min((p for p in index if p != choice), key=lambda p: sq[index[p]])
        if not clearly(choice, runner_up):
            counts["unclear"] += 1
        # Rows where sample-and-hold (the frame before) and nearest (cur) name different
        # frames, away from a tie, tell the conventions apart.
        hold, near = cur_pos - 1, cur_pos
        if hold in index and near in index:
            r_hold, r_near = by_pos[hold][2], by_pos[near][2]
            assert r_hold is not None and r_near is not None
            eps = _PHASE_TIE * (r_near - r_hold)
            if r_near > s + eps and s - 0.5 * (r_hold + r_near) > eps:
                others = [p for p in (hold, near) if p != choice]
                if all(clearly(choice, p) for p in others):
                    counts["split_rows"] += 1
                    if choice == hold:
                        counts["split_hold"] += 1
                    elif choice == near:
                        counts["split_nearest"] += 1
        return choice, by_pos[choice][1]


def pair_streams(
    dist: Iterable[D],
    ref: Iterable[R],
    offset: float = 0.0,
    **options: Any,
) -> StreamPairer[D, R]:
    """Streaming :func:`pair_by_time` over frame objects; see :class:`StreamPairer`."""
    return StreamPairer(dist, ref, offset, **options)


# --------------------------------------------------------------------------- offset search


def search_span(
    window: float = DEFAULT_SEARCH_WINDOW, max_offset: float = DEFAULT_MAX_OFFSET
) -> float:
    """Seconds to decode from the start of *each* stream for :func:`estimate_offset`."""
    return float(window) + float(max_offset)


def nominal_frame_duration(times: Sequence[Time] | np.ndarray) -> float:
    """Typical frame gap: the mean of gaps near the median gap, so millisecond rounding
    (33/34 ms at 29.97 fps) averages out and dropped frames do not inflate it."""
    t = _as_times(times, "frame")
    if t.size < 2:
        raise InvalidInputError("Need at least two frames to measure a frame duration.")
    gaps = np.diff(t)
    med = float(np.median(gaps))
    if med <= 0:
        raise InvalidInputError("Frame times do not advance; check the input timestamps.")
    near = gaps[(gaps > 0.5 * med) & (gaps < 1.5 * med)]
    return float(near.mean()) if near.size else med


def _as_thumbs(x: Any) -> np.ndarray:
    """The thumbnails as a float numpy array, without copying what is already one (a long
    search passes thousands of frames; only small blocks are ever converted to float64)."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    return arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)


@dataclass(frozen=True, eq=False)
class _Frames:
    """One stream's thumbnails as (N, P) rows, left in their own dtype, and per-frame facts
    computed a chunk at a time, so nothing of size N x P is ever copied."""

    th: np.ndarray
    mean: np.ndarray
    norm: np.ndarray
    flat: np.ndarray
    inv_norm: np.ndarray  # 0 for flat frames, which correlate with no pattern

    @classmethod
    def of(cls, th: np.ndarray) -> _Frames:
        n = th.shape[0]
        mean = np.empty(n)
        norm = np.empty(n)
        for lo in range(0, n, _STAT_CHUNK):
            rows = th[lo : lo + _STAT_CHUNK].astype(np.float64)
            hi = lo + rows.shape[0]
            mean[lo:hi] = rows.mean(axis=1)
            rows -= mean[lo:hi, None]
            norm[lo:hi] = np.linalg.norm(rows, axis=1)
        flat = norm / math.sqrt(th.shape[1]) < _FLAT_STD
        inv_norm = np.where(flat, 0.0, 1.0 / np.where(flat, 1.0, norm))
        return cls(th, mean, norm, flat, inv_norm)

    def centred(self, lo: int, hi: int) -> np.ndarray:
        """Frames ``lo:hi`` as float64 rows with their own mean removed."""
        rows = self.th[lo:hi].astype(np.float64)
        rows -= self.mean[lo:hi, None]
        return rows

    def step_norms(self, step: int) -> np.ndarray:
        """``|c[i + step] - c[i]|`` of the mean-removed frames ``c`` for every ``i``, computed
        directly (the only Gram entries the search needs are these near-diagonal ones)."""
        n = self.th.shape[0]
        out = np.zeros(max(n - step, 0))
        if step == 0:
            return out
        for lo in range(0, n - step, _STAT_CHUNK):
            hi = min(lo + _STAT_CHUNK, n - step)
            rows = self.centred(lo, hi + step)
            out[lo:hi] = np.linalg.norm(rows[step:] - rows[:-step], axis=1)
        return out


def _pair_sums(
    dist: _Frames,
    ref: _Frames,
    dt: np.ndarray,
    b: np.ndarray,
    offsets: np.ndarray,
    first: np.ndarray,
    n_pairs: np.ndarray,
    valid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate offset, over its pairs (distorted frames ``first .. first + n - 1`` with
    the reference frame shown at their time + offset): the sum of spatial correlations, the
    sum of frame-difference correlations of consecutive pairs, and how many of those both
    moved.

    Works through blocks of distorted frames x the reference frames candidates reach from
    them, so memory is about ``_BLOCK_ROWS x _BLOCK_COLS`` dot products plus that many
    thumbnails, whatever the search range. A block is one float64 product ``G`` of
    mean-removed thumbnails: spatial terms are ``G`` over the norms, difference terms
    ``(d[i+1] - d[i]) . (r[j1] - r[j0])`` combine four of its entries.
    """
    npix = dist.th.shape[1]
    nd, nr = dist.th.shape[0], ref.th.shape[0]
    sp_sum, tp_sum, both_n = (np.zeros(offsets.size) for _ in range(3))
    last = first + n_pairs - 1
    cand = np.flatnonzero(valid)
    dd_norm = dist.step_norms(1)
    dd_moves = dd_norm / math.sqrt(npix) >= _MOTION_RMS
    step_norms: dict[int, np.ndarray] = {}
    for r0 in range(int(first[cand].min()), int(last[cand].max()) + 1, _BLOCK_ROWS):
        r1 = r0 + _BLOCK_ROWS  # pairs start at rows r0 .. r1-1; row r1 may end a difference
        ext = min(r1 + 1, nd)
        here = cand[(first[cand] < r1) & (last[cand] >= r0)]
        if here.size == 0:
            continue
        rows = dist.centred(r0, ext)
        i = np.arange(r0, ext)
        t = np.arange(ext - r0)[None, :]
        for g0 in range(0, here.size, _BLOCK_CANDIDATES):
            group = here[g0 : g0 + _BLOCK_CANDIDATES]
            # The same float expressions as the first pass, hence the same reference frames.
            s = dt[r0:ext][None, :] + offsets[group][:, None]
            j = np.searchsorted(b, s, side="right") - 1
            in_sp = (i >= first[group, None]) & (i <= last[group, None]) & (i < r1)
            in_tp = in_sp & (i < last[group, None])  # frame i + 1 is paired too
            need = in_sp.copy()
            need[:, 1:] |= in_tp[:, :-1]
            j_lo = np.where(need, j, nr).min(axis=1)
            j_hi = np.where(need, j, -1).max(axis=1)
            start = 0
            while start < group.size:
                # Consecutive candidates reach overlapping reference frames: share a block.
                lo, hi, stop = int(j_lo[start]), int(j_hi[start]), start + 1
                while stop < group.size:
                    lo2, hi2 = min(lo, int(j_lo[stop])), max(hi, int(j_hi[stop]))
                    if hi2 - lo2 + 1 > _BLOCK_COLS:
                        break
                    lo, hi, stop = lo2, hi2, stop + 1
                sel, who = slice(start, stop), group[start:stop]
                start = stop
                # (reference x distorted: OpenBLAS threads this shape far better)
                g = ref.centred(lo, hi + 1) @ rows.T
                jj = np.clip(j[sel], lo, hi)  # frames outside the pairs: any valid column
                c = jj - lo
                m_sp = in_sp[sel]
                sp = g[c, t] * dist.inv_norm[i] * ref.inv_norm[jj]
                sp = np.where(dist.flat[i] & ref.flat[jj], 1.0, sp)  # two flat frames agree
                sp_sum[who] += np.where(m_sp, sp, 0.0).sum(axis=1)

                m_tp = in_tp[sel][:, :-1]
                if not m_tp.any():
                    continue
                t0, t1, c0, c1 = t[:, :-1], t[:, 1:], c[:, :-1], c[:, 1:]
                num = (g[c1, t1] - g[c1, t0]) - (g[c0, t1] - g[c0, t0])
                j0 = jj[:, :-1]
                step = jj[:, 1:] - j0
                rd = np.zeros(step.shape)
                for m in np.flatnonzero(np.bincount(step[m_tp])).tolist():
                    if m not in step_norms:
                        step_norms[m] = ref.step_norms(m)
                    at = m_tp & (step == m)
                    rd[at] = step_norms[m][j0[at]]
                d_moves = dd_moves[i[:-1]][None, :]
                r_moves = rd / math.sqrt(npix) >= _MOTION_RMS
                both = d_moves & r_moves
                den = np.where(both, dd_norm[i[:-1]][None, :] * rd, 1.0)
                # Both still: they agree; only one moves: no match.
                temporal = np.where(both, num / den, np.where(d_moves | r_moves, 0.0, 1.0))
                tp_sum[who] += np.where(m_tp, temporal, 0.0).sum(axis=1)
                both_n[who] += (both & m_tp).sum(axis=1)
    return sp_sum, tp_sum, both_n


def _distinct_minima(costs: np.ndarray, min_prominence: float) -> list[int]:
    """Indices of local minima that stand out by ``min_prominence`` above the col on the way
    to any lower point (the global minimum always counts). Ties are broken by index so a
    plateau counts once; NaN (skipped candidates) acts as an impassable wall."""
    c = np.where(np.isfinite(costs), costs, np.inf).tolist()  # floats: fast scalar access
    n = len(c)

    def lower(k: int, m: int) -> bool:
        return (c[k], k) < (c[m], m)

    found = []
    for m in range(n):
        if not math.isfinite(c[m]):
            continue
        if (m > 0 and lower(m - 1, m)) or (m < n - 1 and lower(m + 1, m)):
            continue
        prominence = math.inf
        for step in (-1, 1):
            peak, k = c[m], m + step
            while 0 <= k < n and not lower(k, m):
                peak = max(peak, c[k])
                k += step
            if 0 <= k < n:  # reached a lower point: the col on this side is `peak`
                prominence = min(prominence, peak - c[m])
        if prominence >= min_prominence:
            found.append(m)
    return found


def estimate_offset(
    dist_thumbs: Any,
    dist_times: Sequence[Time] | np.ndarray,
    ref_thumbs: Any,
    ref_times: Sequence[Time] | np.ndarray,
    *,
    max_offset: float = DEFAULT_MAX_OFFSET,
    window: float = DEFAULT_SEARCH_WINDOW,
    tolerance: float = PAIR_TOLERANCE,
) -> OffsetEstimate:
    """Find the constant offset (on the reference frame grid, within ``max_offset`` seconds
    either way) that best matches the distorted thumbnails to the reference thumbnails.

    Thumbnails are (N, h, w) luma arrays (numpy or torch) of the same size for both streams,
    covering at least :func:`search_span` seconds of each stream's start where available.
    For each candidate offset the first ``window`` seconds of overlap are paired by time and
    scored by per-frame thumbnail correlation (mean-removed and normalised, so brightness and
    contrast changes do not matter) plus correlation of frame differences (motion, which
    compression barely changes). Memory grows with ``window`` times the number of frames,
    not with its square. Clips shorter than 4 frames are compared whole, with a low
    confidence. Raises AlignmentError when no candidate overlaps.
    """
    _check_tolerance(tolerance)
    if max_offset < 0 or window <= 0:
        raise InvalidInputError(
            f"max_offset must be >= 0 and window > 0 seconds (got {max_offset}, {window})."
        )
    dt = _as_times(dist_times, "distorted")
    rt = _as_times(ref_times, "reference")
    dth = _as_thumbs(dist_thumbs)
    rth = _as_thumbs(ref_thumbs)
    for name, th, t in (("distorted", dth, dt), ("reference", rth, rt)):
        if th.ndim != 3 or th.shape[0] != t.size:
            raise InvalidInputError(
                f"{name} thumbnails must be (N, h, w) with one per frame time; got shape "
                f"{th.shape} for {t.size} times."
            )
    if dth.shape[1:] != rth.shape[1:]:
        raise InvalidInputError(
            f"distorted and reference thumbnails differ in size ({dth.shape[1:]} vs "
            f"{rth.shape[1:]}); make both with the same thumbnail size."
        )
    if dt.size < 2 or rt.size < 2:
        raise AlignmentError(
            "Need at least two frames of each stream to estimate an offset; "
            "pass --offset SECONDS instead."
        )

    # Only the data any candidate can reach (callers may pass whole clips). Times are
    # sorted, so that is a prefix of each stream: views, not copies.
    d_limit = max(dt[0], rt[0] + max_offset) + window
    r_limit = max(dt[0] + max_offset, rt[0]) + window
    t_ref = nominal_frame_duration(rt)
    nd = int(np.searchsorted(dt, d_limit + t_ref, side="right"))
    nr = int(np.searchsorted(rt, r_limit + 2 * t_ref, side="right"))
    dt, rt = dt[:nd], rt[:nr]
    dist = _Frames.of(dth[:nd].reshape(nd, -1))
    ref = _Frames.of(rth[:nr].reshape(nr, -1))

    b, end = _boundaries(rt, tolerance, None)
    k_max = int(math.floor(max_offset / t_ref + 1e-9))
    ks = np.arange(-k_max, k_max + 1)
    offsets = ks * t_ref
    costs = np.full(ks.size, np.nan)
    spatial_mean = np.full(ks.size, np.nan)
    overlap = np.zeros(ks.size)
    n_pairs = np.zeros(ks.size, dtype=np.int64)
    first = np.zeros(ks.size, dtype=np.int64)
    motion_frac = np.zeros(ks.size)
    # Pass 1: which distorted frames each candidate pairs: one contiguous run, from the
    # first frame shown inside the reference to the end of the window or of the overlap.
    chunk = max(1, _PASS1_ELEMENTS // nd)
    for c0 in range(0, ks.size, chunk):
        s = dt[None, :] + offsets[c0 : c0 + chunk, None]
        ok = (s >= b[0]) & (s < end)  # shown by some reference frame (j >= 0) and not after
        has = ok.any(axis=1)
        lo = np.argmax(ok, axis=1)
        hi = nd - 1 - np.argmax(ok[:, ::-1], axis=1)
        hi = np.minimum(hi, np.searchsorted(dt, dt[lo] + window, side="left") - 1)
        sl = slice(c0, c0 + s.shape[0])
        first[sl] = np.where(has, lo, 0)
        n_pairs[sl] = np.where(has, hi - lo + 1, 0)
        overlap[sl] = np.where(has, dt[hi] - dt[lo] + t_ref, 0.0)
    # A clip shorter than _MIN_PAIRS frames is compared whole (only full overlaps count).
    min_pairs = min(_MIN_PAIRS, nd, nr)
    valid = (n_pairs >= min_pairs) & (overlap >= _MIN_OVERLAP_FRACTION * overlap.max())
    if not np.any(valid):
        raise AlignmentError(
            f"The streams overlap too little to estimate an offset within +/-{max_offset:g} s "
            "(is the reference much shorter, or the wrong file?). Pass --offset SECONDS "
            "(reference time = distorted time + offset) or check the inputs."
        )
    # Pass 2: the correlations of those pairs, block by block.
    sp_sum, tp_sum, both_n = _pair_sums(dist, ref, dt, b, offsets, first, n_pairs, valid)
    n = n_pairs[valid].astype(np.float64)
    n_diff = np.maximum(n - 1, 1)
    sp = sp_sum[valid] / n
    tp = np.where(n > 1, tp_sum[valid] / n_diff, 1.0)
    motion_frac[valid] = np.where(n > 1, both_n[valid] / n_diff, 0.0)
    spatial_mean[valid] = sp
    costs[valid] = (1.0 - sp) + (1.0 - tp)

    best = int(np.nanargmin(costs))
    c1 = float(costs[best])
    flat = float(np.nanmax(costs)) - c1 < _COST_FLOOR
    scale = max(float(np.nanmedian(costs)) - c1, _COST_FLOOR)
    minima = _distinct_minima(costs, _PROMINENCE_FRACTION * scale)
    zero = k_max  # index of offset 0
    short = min(nd, nr) < _MIN_PAIRS
    method = "thumbnail+motion correlation"
    if flat and valid[zero]:
        # Nothing to measure: offset 0 is the least surprising answer.
        chosen = zero
        method += " (short clip: offset 0 assumed)" if short else " (flat curve: offset 0 assumed)"
    else:
        # Near-equal distinct minima (repetitive content): the smallest shift is likeliest.
        ties = [m for m in minima if costs[m] - c1 <= _TIE * scale]
        chosen = min(ties, key=lambda m: (abs(int(ks[m])), m))
    c_chosen = float(costs[chosen])
    rivals = [m for m in minima if m != chosen]
    rival = min(rivals, key=lambda m: costs[m]) if rivals else -1
    c2 = float(costs[rival]) if rival >= 0 else float(np.nanmax(costs))
    separation = float(np.clip((c2 - c_chosen) / scale, 0.0, 1.0))
    match = float(spatial_mean[chosen])
    quality = float(np.clip((match - _QUALITY_LOW) / (_QUALITY_HIGH - _QUALITY_LOW), 0.0, 1.0))
    confidence = separation * quality
    if short:
        # A few frames cannot rule out a shift, however well they match.
        confidence = min(confidence, LOW_CONFIDENCE * int(n_pairs[chosen]) / (_MIN_PAIRS + 1))

    problems = []
    if short:
        problems.append(
            f"the {'distorted' if nd <= nr else 'reference'} clip has only {min(nd, nr)} "
            "frames, too few to measure an offset reliably"
        )
    elif flat:
        problems.append(
            "the content barely changes over the search window (static or blank), so every "
            "offset matches equally well"
        )
    elif rival >= 0 and separation < LOW_CONFIDENCE:
        problems.append(
            f"offsets {offsets[chosen]:+.3f} s and {offsets[rival]:+.3f} s match almost "
            "equally well (repetitive content)"
        )
    if quality < LOW_CONFIDENCE:
        problems.append(
            f"even the best match is weak (thumbnail correlation {match:.2f}), so the inputs "
            "may be different videos"
        )
    ambiguous = confidence < LOW_CONFIDENCE
    message = ""
    if ambiguous:
        reason = "; ".join(problems) or "the best offset does not stand out clearly"
        message = (
            f"Automatic alignment is unsure (confidence {confidence:.2f}): {reason}. "
            f"Using {offsets[chosen]:+.3f} s; pass --offset SECONDS if the streams are "
            "misaligned."
        )
    estimate = OffsetEstimate(
        offset_seconds=float(offsets[chosen]),
        offset_frames=int(ks[chosen]),
        ref_frame_duration=t_ref,
        confidence=confidence,
        method=method,
        candidate_offsets=offsets,
        costs=costs,
        match=match,
        pairs_used=int(n_pairs[chosen]),
        ambiguous=ambiguous,
        message=message,
    )
    logger.debug(
        "offset estimate %+d frames (%+.4f s), confidence %.2f, match %.3f, motion %.2f",
        estimate.offset_frames,
        estimate.offset_seconds,
        confidence,
        match,
        motion_frac[chosen],
    )
    return estimate
