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
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from topiq_video.errors import InvalidInputError
from topiq_video.scenes import Scene

logger = logging.getLogger(__name__)

DEFAULT_WORST_N = 10
"""How many lowest-scoring frames to list per metric."""
DEFAULT_RESERVOIR_SIZE = 4096
"""Values kept by :class:`StreamingSummary` for approximate percentiles (exact below this)."""
DEFAULT_ROLLING_WINDOW_S = 10.0
"""Window of :class:`RollingStats` in seconds."""
PERCENTILES = (1, 5, 10, 50)
_FRAME_COLUMNS = ("frame", "time", "ref_frame", "ref_time")


@dataclass(frozen=True)
class MetricStats:
    """Summary of one metric; statistics are over finite values and None when there are none."""

    count: int
    mean: float | None
    harmonic_mean: float | None
    min: float | None
    p1: float | None
    p5: float | None
    p10: float | None
    median: float | None
    max: float | None
    std: float | None
    nan_count: int
    posinf_count: int
    neginf_count: int

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain dict (JSON-ready: no NaN or inf, missing statistics are None)."""
        return asdict(self)


@dataclass(frozen=True)
class WorstFrame:
    """One of the lowest-scoring frames of a metric."""

    frame: int
    time: float
    value: float


@dataclass(frozen=True)
class SceneStats:
    """Statistics of every metric within one scene."""

    scene: Scene
    stats: dict[str, MetricStats]


@dataclass(frozen=True)
class PooledResult:
    """Everything :func:`pool` computes; ``per_second`` is indexed by whole second."""

    summary: dict[str, MetricStats]
    scenes: list[SceneStats]
    worst_frames: dict[str, list[WorstFrame]]
    worst_scenes: dict[str, list[int]]
    per_second: pd.DataFrame


def _in_unit_interval(finite: np.ndarray) -> bool:
    return finite.size > 0 and bool(np.all((finite > 0) & (finite <= 1)))


def summarize(values: Iterable[float] | np.ndarray, *, harmonic: bool | None = None) -> MetricStats:
    """Statistics of one metric's values.

    ``harmonic``: None decides from the values (all finite values in (0, 1]); False never gives
    a harmonic mean; True gives it when the values allow it (else None).
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
    if harmonic is not False and _in_unit_interval(finite):
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
    )


def metric_columns(frames_df: pd.DataFrame) -> list[str]:
    """The metric columns of a per-frame table (everything but frame/time columns)."""
    return [c for c in frames_df.columns if c not in _FRAME_COLUMNS]


def _worst_frames(frames_df: pd.DataFrame, metric: str, worst_n: int) -> list[WorstFrame]:
    values = frames_df[metric].to_numpy(dtype=np.float64)
    keep = ~np.isnan(values)
    frames = frames_df["frame"].to_numpy()[keep]
    times = frames_df["time"].to_numpy(dtype=np.float64)[keep]
    values = values[keep]
    # Stable sort: ties keep frame order, so the earliest of equal frames comes first.
    order = np.argsort(values, kind="stable")[:worst_n]
    return [WorstFrame(int(frames[i]), float(times[i]), float(values[i])) for i in order]


def _per_second(frames_df: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Mean and min of finite values per whole second; non-finite values are counted."""
    second = np.floor(frames_df["time"].to_numpy(dtype=np.float64)).astype(np.int64)
    data: dict[str, np.ndarray] = {"second": second}
    for metric in metrics:
        values = frames_df[metric].to_numpy(dtype=np.float64)
        data[metric] = np.where(np.isfinite(values), values, np.nan)
        data[f"{metric}_nonfinite"] = ~np.isfinite(values)
    table = pd.DataFrame(data)
    grouped = table.groupby("second", sort=True)
    columns: dict[str, pd.Series] = {}
    for metric in metrics:
        columns[f"{metric}_mean"] = grouped[metric].mean()
        columns[f"{metric}_min"] = grouped[metric].min()
        columns[f"{metric}_nonfinite"] = grouped[f"{metric}_nonfinite"].sum().astype(np.int64)
    result = pd.DataFrame(columns)
    result.index.name = "second"
    return result


def pool(
    frames_df: pd.DataFrame,
    metrics: Sequence[str],
    scenes: Sequence[Scene],
    *,
    worst_n: int = DEFAULT_WORST_N,
) -> PooledResult:
    """Pool per-frame scores (columns ``frame``, ``time`` and each metric) overall and per scene.

    ``worst_scenes`` lists, per metric, the indices of scenes that have finite values, by
    ascending mean (worst first).  ``per_second`` has ``<metric>_mean``, ``<metric>_min`` (finite
    values) and ``<metric>_nonfinite`` (count) for each second ``floor(time)``.
    """
    missing = [c for c in ("frame", "time", *metrics) if c not in frames_df.columns]
    if missing:
        raise InvalidInputError(
            f"per-frame table lacks columns {missing}; it has {list(frames_df.columns)}"
        )
    if worst_n < 0:
        raise InvalidInputError(f"worst_n must be >= 0, got {worst_n}")
    frame_numbers = frames_df["frame"].to_numpy()
    # Decide per metric on the whole video, so that every scene reports the same statistics.
    harmonic = {
        m: _in_unit_interval(_finite(frames_df[m].to_numpy(dtype=np.float64))) for m in metrics
    }
    summary = {
        m: summarize(frames_df[m].to_numpy(dtype=np.float64), harmonic=harmonic[m]) for m in metrics
    }
    scene_stats: list[SceneStats] = []
    for scene in scenes:
        rows = (frame_numbers >= scene.start_frame) & (frame_numbers <= scene.end_frame)
        part = frames_df.loc[rows]
        scene_stats.append(
            SceneStats(
                scene=scene,
                stats={
                    m: summarize(part[m].to_numpy(dtype=np.float64), harmonic=harmonic[m])
                    for m in metrics
                },
            )
        )
    worst_scenes: dict[str, list[int]] = {}
    for m in metrics:
        ranked = [s for s in scene_stats if s.stats[m].mean is not None]
        ranked.sort(key=lambda s: (s.stats[m].mean, s.scene.index))
        worst_scenes[m] = [s.scene.index for s in ranked]
    return PooledResult(
        summary=summary,
        scenes=scene_stats,
        worst_frames={m: _worst_frames(frames_df, m, worst_n) for m in metrics},
        worst_scenes=worst_scenes,
        per_second=_per_second(frames_df, metrics),
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
        # Keep (time_now - window, time_now]: a window of exactly window_seconds.
        while self._items and self._items[0][0] <= time - self.window_seconds:
            self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)

    def result(self) -> MetricStats:
        """Statistics of the values in the current window."""
        return summarize(np.fromiter((v for _, v in self._items), dtype=np.float64))
