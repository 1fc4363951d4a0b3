"""Pooled statistics of per-frame scores: whole video, per scene, worst frames, per second, live.

Conventions (all metrics are higher-is-better):

* Statistics are computed over the *finite* values only.  NaN, +inf and -inf are counted
  (``nan_count``, ``posinf_count``, ``neginf_count``) and reported, never replaced: PSNR of two
  identical frames is +inf, and a mean of +inf would hide every other frame.
* Percentiles use numpy's default linear interpolation between order statistics.
* ``std`` is the population standard deviation (``ddof=0``): the frames are the whole video,
  not a sample of it.
* ``harmonic_mean`` is given only for metrics whose finite values all lie in (0, 1] (e.g. SSIM,
  normalised quality scores); it weighs bad frames more than the mean does.  Otherwise None.
  VMAF is the exception: its harmonic mean is given on its own 0-100 scale (when every value
  is above 0), beside ``shifted_harmonic_mean``, the pooling libvmaf and the VMAF tools
  report (the harmonic mean of value + 1, minus 1).  On that scale the shift of 1 barely
  matters, so the two are close to each other, and close to the plain mean unless some
  frames score very low.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from topiq_video.errors import InvalidInputError
from topiq_video.pipeline.options import DEFAULT_WORST_N
from topiq_video.result import (
    MetricStats,
    PerSecond,
    SceneResult,
    WorstFrame,
    nonfinite_flag,
)
from topiq_video.vmaf import VMAF_COLUMNS, shifted_harmonic_mean

if TYPE_CHECKING:
    from topiq_video.scenes import Scene

logger = logging.getLogger(__name__)

DEFAULT_RESERVOIR_SIZE = 4096
"""Values kept by :class:`StreamingSummary` for approximate percentiles (exact below this)."""
DEFAULT_ROLLING_WINDOW_S = 10.0
"""Window of :class:`RollingStats` in seconds."""
PERCENTILES = (1, 5, 10, 50)


@dataclass(frozen=True)
class PooledResult:
    """Everything :func:`pool` computes."""

    summary: dict[str, MetricStats]
    scenes: tuple[SceneResult, ...]
    worst_frames: dict[str, tuple[WorstFrame, ...]]
    worst_scenes: dict[str, tuple[int, ...]]
    per_second: PerSecond


def _in_unit_interval(finite: np.ndarray) -> bool:
    return finite.size > 0 and bool(np.all((finite > 0) & (finite <= 1)))


def summarize(
    values: Iterable[float] | np.ndarray,
    *,
    harmonic: bool | None = None,
    vmaf_scale: bool = False,
) -> MetricStats:
    """Statistics of one metric's values.

    ``harmonic``: None decides from the values (all finite values in (0, 1]); False never gives
    a harmonic mean; True gives it when the values allow it (else None). ``vmaf_scale``: the
    values are VMAF's (0-100): the harmonic mean needs them above 0, not within (0, 1], and
    VMAF's own shifted harmonic mean is added.
    """
    array = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
    array = array.ravel()
    finite = array[np.isfinite(array)]
    nan_count = int(np.isnan(array).sum())
    posinf_count = int(np.isposinf(array).sum())
    neginf_count = int(np.isneginf(array).sum())
    if finite.size == 0:
        return MetricStats(
            0, None, None, None, None, None, None, None, None, None,
            nan_count, posinf_count, neginf_count,
        )  # fmt: skip
    p1, p5, p10, median = (float(v) for v in np.percentile(finite, PERCENTILES))
    harmonic_mean = None
    allowed = bool(np.all(finite > 0)) if vmaf_scale else _in_unit_interval(finite)
    if harmonic is not False and allowed:
        harmonic_mean = float(finite.size / np.sum(1.0 / finite))
    return MetricStats(
        count=int(finite.size),
        mean=float(finite.mean()),
        harmonic_mean=harmonic_mean,
        min=float(finite.min()),
        p1=p1,
        p5=p5,
        p10=p10,
        median=median,
        max=float(finite.max()),
        std=float(finite.std(ddof=0)),
        nan_count=nan_count,
        posinf_count=posinf_count,
        neginf_count=neginf_count,
        shifted_harmonic_mean=shifted_harmonic_mean(finite) if vmaf_scale else None,
    )


def pick_worst(
    values: np.ndarray, times: np.ndarray, count: int, *, spacing: float = 0.0
) -> list[int]:
    """Positions of the ``count`` lowest values (NaN never), worst first.

    With ``spacing`` > 0 the picks are at least that many seconds apart (neighbours of one bad
    moment look alike), topped up with the next worst when too few moments qualify. Ties keep
    time order. The one rule for every worst-frame list and gallery.
    """
    values = np.asarray(values, dtype=np.float64)
    if count <= 0 or values.size == 0:
        return []
    order = [int(i) for i in np.argsort(values, kind="stable") if not np.isnan(values[i])]
    if spacing <= 0:
        return order[:count]
    times = np.asarray(times, dtype=np.float64)
    chosen: list[int] = []
    for i in order:
        if len(chosen) >= count:
            break
        if all(abs(times[i] - times[j]) >= spacing for j in chosen):
            chosen.append(i)
    for i in order:
        if len(chosen) >= count:
            break
        if i not in chosen:
            chosen.append(i)
    return chosen


def worst_frames(frames_df: pd.DataFrame, metric: str, count: int) -> tuple[WorstFrame, ...]:
    """The ``count`` lowest-scoring frames of ``metric`` (earliest first among equals)."""
    values = frames_df[metric].to_numpy(dtype=np.float64)
    times = frames_df["time"].to_numpy(dtype=np.float64)
    frames = frames_df["frame"].to_numpy()
    out = []
    for i in pick_worst(values, times, count):
        value = float(values[i])
        out.append(
            WorstFrame(
                frame=int(frames[i]),
                time=float(times[i]),
                value=value if math.isfinite(value) else None,
                value_nonfinite=nonfinite_flag(value),
            )
        )
    return tuple(out)


def per_second(frames_df: pd.DataFrame, metrics: Sequence[str]) -> PerSecond:
    """Mean and min of finite values per whole second; non-finite values are counted."""
    if not len(frames_df):
        return PerSecond()
    second = np.floor(frames_df["time"].to_numpy(dtype=np.float64)).astype(np.int64)
    data: dict[str, np.ndarray] = {"second": second}
    for metric in metrics:
        values = frames_df[metric].to_numpy(dtype=np.float64)
        data[metric] = np.where(np.isfinite(values), values, np.nan)
        data[f"{metric}\0nonfinite"] = ~np.isfinite(values)
    grouped = pd.DataFrame(data).groupby("second", sort=True)

    def column(series: pd.Series) -> tuple[float | None, ...]:
        return tuple(None if math.isnan(v) else float(v) for v in series.tolist())

    means = {m: column(grouped[m].mean()) for m in metrics}
    mins = {m: column(grouped[m].min()) for m in metrics}
    nonfinite = {
        m: tuple(int(v) for v in grouped[f"{m}\0nonfinite"].sum().tolist()) for m in metrics
    }
    seconds = tuple(int(s) for s in grouped.size().index.tolist())
    return PerSecond(second=seconds, mean=means, min=mins, nonfinite=nonfinite)


def pool(
    frames_df: pd.DataFrame,
    metrics: Sequence[str],
    scenes: Sequence[Scene],
    *,
    worst_n: int = DEFAULT_WORST_N,
) -> PooledResult:
    """Pool per-frame scores (columns ``frame``, ``time`` and each metric) overall and per scene.

    ``worst_scenes`` lists, per metric, the indices of scenes that have finite values, by
    ascending mean (worst first).
    """
    missing = [c for c in ("frame", "time", *metrics) if c not in frames_df.columns]
    if missing:
        raise InvalidInputError(
            f"per-frame table lacks columns {missing}; it has {list(frames_df.columns)}"
        )
    if worst_n < 0:
        raise InvalidInputError(f"worst_n must be >= 0, got {worst_n}")
    frame_numbers = frames_df["frame"].to_numpy()
    columns = {m: frames_df[m].to_numpy(dtype=np.float64) for m in metrics}
    # Decide per metric on the whole video, so that every scene reports the same statistics.
    vmaf_scale = {m: m in VMAF_COLUMNS for m in metrics}
    harmonic = {
        m: bool(np.all(_finite(columns[m]) > 0))
        if vmaf_scale[m]
        else _in_unit_interval(_finite(columns[m]))
        for m in metrics
    }

    def stats(m: str, values: np.ndarray) -> MetricStats:
        return summarize(values, harmonic=harmonic[m], vmaf_scale=vmaf_scale[m])

    summary = {m: stats(m, columns[m]) for m in metrics}
    scene_results: list[SceneResult] = []
    for scene in scenes:
        rows = (frame_numbers >= scene.start_frame) & (frame_numbers <= scene.end_frame)
        scene_results.append(
            SceneResult(
                index=scene.index,
                start_frame=scene.start_frame,
                end_frame=scene.end_frame,
                start_time=scene.start_time,
                end_time=scene.end_time,
                frame_count=int(rows.sum()),
                stats={m: stats(m, columns[m][rows]) for m in metrics},
            )
        )
    worst_scenes: dict[str, tuple[int, ...]] = {}
    for m in metrics:
        ranked = [s for s in scene_results if s.stats[m].mean is not None]
        ranked.sort(key=lambda s: (s.stats[m].mean, s.index))
        worst_scenes[m] = tuple(s.index for s in ranked)
    return PooledResult(
        summary=summary,
        scenes=tuple(scene_results),
        worst_frames={m: worst_frames(frames_df, m, worst_n) for m in metrics},
        worst_scenes=worst_scenes,
        per_second=per_second(frames_df, metrics),
    )


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


class StreamingSummary:
    """Constant-memory summary of an unbounded stream of one metric's values.

    count, mean, min, max and std (Welford/Chan updates) are exact; percentiles come from a
    uniform reservoir sample of ``reservoir_size`` values (exact until that many finite values
    were seen, approximate after).  The harmonic mean is exact while all values lie in (0, 1].
    """

    def __init__(self, reservoir_size: int = DEFAULT_RESERVOIR_SIZE, seed: int = 0) -> None:
        if reservoir_size < 1:
            raise InvalidInputError(f"reservoir_size must be >= 1, got {reservoir_size}")
        self.reservoir_size = reservoir_size
        self._rng = np.random.default_rng(seed)
        self._reservoir = np.empty(reservoir_size, dtype=np.float64)
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._reciprocal_sum = 0.0
        self._unit_interval = True
        self._nan = 0
        self._posinf = 0
        self._neginf = 0

    def update(self, values: Iterable[float] | np.ndarray | float) -> None:
        """Add one value or a batch of values."""
        array = np.atleast_1d(np.asarray(values, dtype=np.float64)).ravel()
        self._nan += int(np.isnan(array).sum())
        self._posinf += int(np.isposinf(array).sum())
        self._neginf += int(np.isneginf(array).sum())
        finite = _finite(array)
        if finite.size == 0:
            return
        # Chan et al.'s pairwise combination of (count, mean, M2): stable for large streams.
        n_a, n_b = self._count, finite.size
        mean_b = float(finite.mean())
        m2_b = float(np.sum((finite - mean_b) ** 2))
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean += delta * n_b / n
        self._m2 += m2_b + delta * delta * n_a * n_b / n
        self._min = min(self._min, float(finite.min()))
        self._max = max(self._max, float(finite.max()))
        if self._unit_interval and _in_unit_interval(finite):
            self._reciprocal_sum += float(np.sum(1.0 / finite))
        else:
            self._unit_interval = False
        self._sample(finite)
        self._count = n

    def _sample(self, finite: np.ndarray) -> None:
        """Reservoir sampling (Algorithm R) so every value seen is kept with equal probability."""
        seen = self._count
        fill = max(0, min(self.reservoir_size - seen, finite.size))
        self._reservoir[seen : seen + fill] = finite[:fill]
        rest = finite[fill:]
        if rest.size == 0:
            return
        positions = self._rng.integers(0, np.arange(seen + fill, seen + fill + rest.size) + 1)
        for value, slot in zip(rest, positions, strict=True):
            if slot < self.reservoir_size:
                self._reservoir[slot] = value

    def result(self) -> MetricStats:
        """Statistics so far."""
        if self._count == 0:
            return MetricStats(
                0, None, None, None, None, None, None, None, None, None,
                self._nan, self._posinf, self._neginf,
            )  # fmt: skip
        kept = self._reservoir[: min(self._count, self.reservoir_size)]
        p1, p5, p10, median = (float(v) for v in np.percentile(kept, PERCENTILES))
        return MetricStats(
            count=self._count,
            mean=self._mean,
            harmonic_mean=self._count / self._reciprocal_sum if self._unit_interval else None,
            min=self._min,
            p1=p1,
            p5=p5,
            p10=p10,
            median=median,
            max=self._max,
            std=math.sqrt(max(self._m2, 0.0) / self._count),
            nan_count=self._nan,
            posinf_count=self._posinf,
            neginf_count=self._neginf,
        )


class RollingStats:
    """Statistics over the last ``window_seconds`` of a live stream (exact within the window).

    Memory is bounded by the window: about ``window_seconds * frame rate`` values.
    """

    def __init__(self, window_seconds: float = DEFAULT_ROLLING_WINDOW_S) -> None:
        if not window_seconds > 0:
            raise InvalidInputError(f"window_seconds must be > 0, got {window_seconds}")
        self.window_seconds = float(window_seconds)
        self._items: deque[tuple[float, float]] = deque()

    def update(self, time: float, value: float) -> None:
        """Add the value of the frame at ``time`` (seconds, non-decreasing)."""
        if self._items and time < self._items[-1][0]:
            raise InvalidInputError(
                f"rolling statistics need non-decreasing times, got {time} after "
                f"{self._items[-1][0]}"
            )
        self._items.append((float(time), float(value)))
        self.advance(time)

    def advance(self, now: float) -> None:
        """Forget values older than the window at ``now`` (a quiet stream's window empties)."""
        # Keep (now - window, now]: a window of exactly window_seconds.
        while self._items and self._items[0][0] <= now - self.window_seconds:
            self._items.popleft()

    def items(self) -> list[tuple[float, float]]:
        """The (time, value) pairs in the window, oldest first."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def result(self) -> MetricStats:
        """Statistics of the values in the current window."""
        return summarize(np.fromiter((v for _, v in self._items), dtype=np.float64))
