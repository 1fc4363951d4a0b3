"""Bjontegaard delta rate and delta metric between two rate-quality curves (A the anchor, B the test).

The common way (JCT-VC/JVET common test conditions, Netflix's vmaf ``bd_rate.py``, the
``bjontegaard`` package): interpolate each curve with PCHIP (piecewise cubic Hermite, which
never overshoots between points as a single cubic fit can) and average the gap between the
two interpolants over the range where both are defined.

* **BD-rate**: ``log10(rate)`` as a function of the metric, averaged over the common metric
  range; ``(10 ** mean_gap - 1) * 100`` percent.  Negative: B needs less rate for the same
  quality.
* **BD-metric** (BD-PSNR for PSNR): the metric as a function of ``log10(rate)``, averaged over
  the common log-rate range, in the metric's unit.  Positive: B scores higher at the same
  rate (every metric here is higher-is-better).

The integrals are exact (the interpolant is integrated piece by piece), not sampled.

Checks, each giving ``value=None`` and a ``reason`` instead of a number:

* at least ``MIN_POINTS`` (4) points per curve, every rate finite and above 0, every metric
  finite (PSNR of a lossless encode is +inf: cap it before calling);
* **monotonicity**: sorted by rate, the metric must rise strictly with it.  A curve that does
  not (a learned score can saturate or wobble) is replaced by its **upper convex hull in
  linear rate-quality space**: first every point that does not improve on the best quality at
  a lower rate is dropped (it costs more and gives no more), then every point below the chord
  of its neighbours (an encoder could match it by switching between those two encodes part of
  the time).  ``notes`` says so and names the points dropped.  At least
  ``MIN_HULL_POINTS`` (3) points must remain: two would make the "curve" a single straight
  chord, and the result would depend on nothing but the two end points;
* **overlap**: the two curves' ranges of the integration variable (the metric for BD-rate,
  ``log10(rate)`` for BD-metric) must overlap.  ``overlap_fraction`` is the length of the
  intersection over the length of the union of those ranges (1 for identical ranges); below
  ``LOW_OVERLAP`` a note warns that the average covers only part of the quality range.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from topiq_video.errors import InvalidInputError

logger = logging.getLogger(__name__)

MIN_POINTS = 4
"""Fewest rate points per curve (the common test conditions' four)."""
MIN_HULL_POINTS = 3
"""Fewest points left on a non-monotonic curve's upper convex hull."""
LOW_OVERLAP = 0.75
"""Overlap fraction below which the result carries a note."""

KIND_RATE = "bd-rate"
KIND_METRIC = "bd-metric"

Point = tuple[float, float]
"""(rate, metric)."""


@dataclass(frozen=True)
class BDResult:
    """A Bjontegaard delta, or the reason there is none.

    ``value``: percent for ``kind == "bd-rate"`` (negative: B saves rate), the metric's unit
    for ``"bd-metric"`` (positive: B scores higher). ``interval`` is the common range the
    gap was averaged over (metric for BD-rate, log10 rate for BD-metric).
    ``points_a``/``points_b`` are the (rate, metric) points used, sorted by rate: the hull's
    when ``hull_used_a``/``hull_used_b``.
    """

    kind: str
    value: float | None
    reason: str | None
    overlap_fraction: float | None
    interval: tuple[float, float] | None
    hull_used_a: bool
    hull_used_b: bool
    notes: tuple[str, ...]
    points_a: tuple[Point, ...]
    points_b: tuple[Point, ...]


def bd_rate(
    rates_a: Sequence[float] | np.ndarray,
    metric_a: Sequence[float] | np.ndarray,
    rates_b: Sequence[float] | np.ndarray,
    metric_b: Sequence[float] | np.ndarray,
) -> BDResult:
    """Bjontegaard delta rate of B against A, in percent, at equal quality (PCHIP)."""
    return _bd(KIND_RATE, rates_a, metric_a, rates_b, metric_b)


def bd_metric(
    rates_a: Sequence[float] | np.ndarray,
    metric_a: Sequence[float] | np.ndarray,
    rates_b: Sequence[float] | np.ndarray,
    metric_b: Sequence[float] | np.ndarray,
) -> BDResult:
    """Bjontegaard delta metric of B against A (BD-PSNR for PSNR), at equal rate (PCHIP)."""
    return _bd(KIND_METRIC, rates_a, metric_a, rates_b, metric_b)


def upper_hull(points: Iterable[Point]) -> list[Point]:
    """The points on the upper convex hull of a rate-quality curve, sorted by rate.

    Points that do not raise the best quality of every lower rate are dropped first, so the
    hull only rises; points on a hull edge (collinear) are kept.
    """
    # Highest metric first among equal rates, so the sweep keeps the best of them.
    ordered = sorted(points, key=lambda p: (p[0], -p[1]))
    rising: list[Point] = []
    for p in ordered:
        if not rising or p[1] > rising[-1][1]:
            rising.append(p)
    hull: list[Point] = []
    for p in rising:
        # Pop the last point while it lies strictly below the chord from its predecessor to p.
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) > 0:
            hull.pop()
        hull.append(p)
    return hull


def _cross(o: Point, a: Point, b: Point) -> float:
    """z of (a - o) x (b - o): positive when o -> a -> b turns left (a below the chord o-b)."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


@dataclass(frozen=True)
class _Curve:
    points: tuple[Point, ...]
    hull_used: bool
    note: str | None


def _bd(
    kind: str,
    rates_a: Sequence[float] | np.ndarray,
    metric_a: Sequence[float] | np.ndarray,
    rates_b: Sequence[float] | np.ndarray,
    metric_b: Sequence[float] | np.ndarray,
) -> BDResult:
    raw_a = _points(rates_a, metric_a, "a")
    raw_b = _points(rates_b, metric_b, "b")

    def fail(
        reason: str,
        curve_a: _Curve | None = None,
        curve_b: _Curve | None = None,
        notes: Sequence[str] = (),
        overlap: float | None = None,
    ) -> BDResult:
        logger.debug("%s: no value: %s", kind, reason)
        return BDResult(
            kind=kind,
            value=None,
            reason=reason,
            overlap_fraction=overlap,
            interval=None,
            hull_used_a=curve_a.hull_used if curve_a else False,
            hull_used_b=curve_b.hull_used if curve_b else False,
            notes=tuple(notes),
            points_a=curve_a.points if curve_a else tuple(sorted(raw_a)),
            points_b=curve_b.points if curve_b else tuple(sorted(raw_b)),
        )

    for label, raw in (("A", raw_a), ("B", raw_b)):
        problem = _check_points(label, raw)
        if problem:
            return fail(problem)

    curve_a = _curve("A", raw_a)
    curve_b = _curve("B", raw_b)
    notes = [c.note for c in (curve_a, curve_b) if c.note]
    for label, curve in (("A", curve_a), ("B", curve_b)):
        if len(curve.points) < MIN_HULL_POINTS:
            return fail(
                f"curve {label} is not monotonic and its upper convex hull keeps only "
                f"{len(curve.points)} point(s); at least {MIN_HULL_POINTS} are needed for a "
                f"curve: add rate points where its quality still rises",
                curve_a,
                curve_b,
                notes,
            )

    # x: the integration variable; y: what is averaged.
    if kind == KIND_RATE:
        xa, ya = _metric_axis(curve_a), _log_rate_axis(curve_a)
        xb, yb = _metric_axis(curve_b), _log_rate_axis(curve_b)
        axis = "metric"
    else:
        xa, ya = _log_rate_axis(curve_a), _metric_axis(curve_a)
        xb, yb = _log_rate_axis(curve_b), _metric_axis(curve_b)
        axis = "log10(rate)"

    low = float(max(xa[0], xb[0]))
    high = float(min(xa[-1], xb[-1]))
    union = float(max(xa[-1], xb[-1]) - min(xa[0], xb[0]))
    overlap = max(0.0, high - low) / union
    if high <= low:
        return fail(
            f"the curves' {axis} ranges do not overlap (A {xa[0]:.6g} to {xa[-1]:.6g}, "
            f"B {xb[0]:.6g} to {xb[-1]:.6g}): a Bjontegaard delta compares the curves where "
            f"both are measured; add rate points that reach a common range",
            curve_a,
            curve_b,
            notes,
            overlap=0.0,
        )
    if overlap < LOW_OVERLAP:
        notes.append(
            f"the curves share {overlap:.0%} of their combined {axis} range "
            f"({low:.6g} to {high:.6g}); the average covers only that part"
        )

    mean_a = PchipInterpolator(xa, ya).integrate(low, high) / (high - low)
    mean_b = PchipInterpolator(xb, yb).integrate(low, high) / (high - low)
    gap = float(mean_b - mean_a)
    value = (10.0**gap - 1.0) * 100.0 if kind == KIND_RATE else gap
    return BDResult(
        kind=kind,
        value=value,
        reason=None,
        overlap_fraction=overlap,
        interval=(low, high),
        hull_used_a=curve_a.hull_used,
        hull_used_b=curve_b.hull_used,
        notes=tuple(notes),
        points_a=curve_a.points,
        points_b=curve_b.points,
    )


def _points(
    rates: Sequence[float] | np.ndarray, metrics: Sequence[float] | np.ndarray, name: str
) -> list[Point]:
    r = np.asarray(rates, dtype=np.float64)
    m = np.asarray(metrics, dtype=np.float64)
    if r.ndim != 1 or m.ndim != 1 or r.shape != m.shape:
        raise InvalidInputError(
            f"rates_{name} and metric_{name} must be two 1-D sequences of the same length, one "
            f"entry per encode of curve {name.upper()}; got shapes {r.shape} and {m.shape}"
        )
    return [(float(x), float(y)) for x, y in zip(r, m, strict=True)]


def _check_points(label: str, points: list[Point]) -> str | None:
    if len(points) < MIN_POINTS:
        return (
            f"curve {label} has {len(points)} point(s); a Bjontegaard delta needs at least "
            f"{MIN_POINTS} rate points per curve"
        )
    for i, (rate, metric) in enumerate(points):
        if not (math.isfinite(rate) and rate > 0):
            return (
                f"curve {label} point {i} has rate {rate!r}; rates must be finite and above 0 "
                f"(they are compared on a log scale)"
            )
        if not math.isfinite(metric):
            return (
                f"curve {label} point {i} has metric {metric!r}; metrics must be finite (cap "
                f"an infinite PSNR, e.g. of a lossless encode, before comparing)"
            )
    return None


def _curve(label: str, points: list[Point]) -> _Curve:
    ordered = sorted(points)
    monotonic = all(
        r1 < r2 and m1 < m2 for (r1, m1), (r2, m2) in zip(ordered, ordered[1:], strict=False)
    )
    if monotonic:
        return _Curve(points=tuple(ordered), hull_used=False, note=None)
    hull = upper_hull(ordered)
    # A multiset difference, so a repeated point kept once is reported as dropped once.
    dropped = sorted((Counter(ordered) - Counter(hull)).elements())
    shown = ", ".join(f"({r:.6g}, {m:.6g})" for r, m in dropped)
    note = (
        f"curve {label} is not monotonic (quality must rise with rate): its upper convex hull "
        f"in rate-quality space keeps {len(hull)} of {len(ordered)} points"
        + (f"; dropped (rate, metric): {shown}" if shown else "")
    )
    return _Curve(points=tuple(hull), hull_used=True, note=note)


def _metric_axis(curve: _Curve) -> np.ndarray:
    return np.array([m for _, m in curve.points])


def _log_rate_axis(curve: _Curve) -> np.ndarray:
    return np.log10([r for r, _ in curve.points])
