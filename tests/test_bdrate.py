"""Bjontegaard deltas against an independent PCHIP, the `bjontegaard` package and exact cases."""

from __future__ import annotations

import math
import warnings

import bjontegaard
import numpy as np
import pytest

from topiq_video.bdrate import LOW_OVERLAP, MIN_HULL_POINTS, bd_metric, bd_rate, upper_hull
from topiq_video.errors import InvalidInputError

# The widely used four-point example (rates in kbit/s, PSNR in dB): B spends more rate.
CLASSIC_A = ([686.76, 309.58, 157.11, 85.95], [40.28, 37.18, 34.24, 31.42])
CLASSIC_B = ([893.34, 407.8, 204.93, 112.75], [40.39, 37.21, 34.17, 31.24])
# The bjontegaard package's README example (libx265, two presets): B slightly better.
X265_A = ([9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851])
X265_B = ([9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987])


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson slopes as in Moler, *Numerical Computing with MATLAB*, ch. 3 (pchip)."""
    h = np.diff(x)
    delta = np.diff(y) / h
    d = np.zeros_like(y)
    for k in range(1, len(x) - 1):
        if delta[k - 1] * delta[k] > 0:
            w1 = 2 * h[k] + h[k - 1]
            w2 = h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])

    def end(h1: float, h2: float, del1: float, del2: float) -> float:
        slope = ((2 * h1 + h2) * del1 - h1 * del2) / (h1 + h2)
        if np.sign(slope) != np.sign(del1):
            return 0.0
        if np.sign(del1) != np.sign(del2) and abs(slope) > abs(3 * del1):
            return 3 * del1
        return slope

    d[0] = end(h[0], h[1], delta[0], delta[1])
    d[-1] = end(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _hermite_integral(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """Integral of the cubic Hermite interpolant from low to high, from its basis in closed form."""
    d = _pchip_slopes(x, y)

    def antiderivative(at: float) -> float:
        total = 0.0
        for k in range(len(x) - 1):
            h = x[k + 1] - x[k]
            t = min(max((at - x[k]) / h, 0.0), 1.0)
            # Integrals from 0 to t of the four Hermite basis polynomials.
            b00 = t**4 / 2 - t**3 + t
            b10 = t**4 / 4 - 2 * t**3 / 3 + t**2 / 2
            b01 = -(t**4) / 2 + t**3
            b11 = t**4 / 4 - t**3 / 3
            total += h * (y[k] * b00 + h * d[k] * b10 + y[k + 1] * b01 + h * d[k + 1] * b11)
        return total

    return antiderivative(high) - antiderivative(low)


def _independent(kind: str, curve_a: tuple, curve_b: tuple) -> float:
    """BD-rate (%) or BD-metric from the hand-written PCHIP above, on sorted points."""
    means = []
    spans = []
    for rates, metrics in (curve_a, curve_b):
        order = np.argsort(rates)
        log_r = np.log10(np.asarray(rates, dtype=float)[order])
        m = np.asarray(metrics, dtype=float)[order]
        spans.append((m, log_r) if kind == "rate" else (log_r, m))
    low = max(spans[0][0].min(), spans[1][0].min())
    high = min(spans[0][0].max(), spans[1][0].max())
    for x, y in spans:
        means.append(_hermite_integral(x, y, low, high) / (high - low))
    gap = means[1] - means[0]
    return (10**gap - 1) * 100 if kind == "rate" else gap


def _package(kind: str, curve_a: tuple, curve_b: tuple) -> float:
    """The `bjontegaard` package's PCHIP, points given in increasing rate."""
    ra, ma = (np.asarray(v, dtype=float)[np.argsort(curve_a[0])] for v in curve_a)
    rb, mb = (np.asarray(v, dtype=float)[np.argsort(curve_b[0])] for v in curve_b)
    fn = bjontegaard.bd_rate if kind == "rate" else bjontegaard.bd_psnr
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overlap warning would mean a different problem
        return float(
            fn(ra, ma, rb, mb, method="pchip", require_matching_points=False, min_overlap=0)
        )


@pytest.mark.parametrize("curves", [(CLASSIC_A, CLASSIC_B), (X265_A, X265_B)])
def test_equals_independent_pchip_and_the_bjontegaard_package(curves: tuple) -> None:
    a, b = curves
    rate = bd_rate(*a, *b)
    metric = bd_metric(*a, *b)
    assert rate.reason is None and metric.reason is None
    assert not (rate.hull_used_a or rate.hull_used_b)
    for kind, result in (("rate", rate), ("metric", metric)):
        assert result.value == pytest.approx(_independent(kind, a, b), abs=1e-6)
        assert result.value == pytest.approx(_package(kind, a, b), abs=1e-6)
    # Swapping the roles inverts the saving: (1 + r_ab)(1 + r_ba) = 1 only when the overlap
    # is the same, which it is; BD-metric changes sign.
    back = bd_rate(*b, *a)
    assert (1 + rate.value / 100) * (1 + back.value / 100) == pytest.approx(1.0, abs=1e-12)
    assert bd_metric(*b, *a).value == pytest.approx(-metric.value, abs=1e-12)


def test_classic_example_has_the_expected_sign_and_size() -> None:
    rate = bd_rate(*CLASSIC_A, *CLASSIC_B)
    metric = bd_metric(*CLASSIC_A, *CLASSIC_B)
    assert 20 < rate.value < 35  # B needs about 30 % more rate for the same PSNR
    assert -1.5 < metric.value < -0.5  # about 1 dB lower at the same rate
    assert rate.kind == "bd-rate" and metric.kind == "bd-metric"
    x265 = bd_rate(*X265_A, *X265_B)
    assert x265.value < 0  # the second preset saves rate


@pytest.mark.parametrize("factor", [0.8, 0.5, 1.25, 1.0])
def test_b_shifted_in_rate_by_a_known_factor(factor: float) -> None:
    rates, psnr = X265_A
    shifted = [r * factor for r in rates]
    result = bd_rate(rates, psnr, shifted, psnr)
    assert result.value == pytest.approx((factor - 1) * 100, abs=1e-9)
    assert result.overlap_fraction == 1.0
    assert result.interval == (min(psnr), max(psnr))


def test_b_shifted_in_metric_by_a_known_offset() -> None:
    rates, psnr = CLASSIC_A
    result = bd_metric(rates, psnr, rates, [p + 0.75 for p in psnr])
    assert result.value == pytest.approx(0.75, abs=1e-12)
    lo, hi = result.interval
    assert (lo, hi) == pytest.approx((math.log10(min(rates)), math.log10(max(rates))))


def test_point_order_does_not_matter() -> None:
    order = [2, 0, 3, 1]
    ra, ma = ([CLASSIC_A[i][j] for j in order] for i in (0, 1))
    shuffled = bd_rate(ra, ma, *CLASSIC_B)
    assert shuffled.value == pytest.approx(bd_rate(*CLASSIC_A, *CLASSIC_B).value, abs=1e-12)
    assert [p[0] for p in shuffled.points_a] == sorted(CLASSIC_A[0])


def test_non_monotonic_curve_uses_its_upper_hull_and_says_so() -> None:
    # A learned score that wobbles (point 3 dips) and saturates (the last two).
    rates_a = [500, 1000, 2000, 3000, 4000, 8000, 12000]
    score_a = [0.50, 0.65, 0.76, 0.74, 0.82, 0.86, 0.86]
    hull_a = [(500.0, 0.5), (1000.0, 0.65), (2000.0, 0.76), (4000.0, 0.82), (8000.0, 0.86)]
    rates_b = [400, 900, 1800, 3600, 7000]
    score_b = [0.52, 0.67, 0.78, 0.84, 0.87]
    result = bd_rate(rates_a, score_a, rates_b, score_b)
    assert result.hull_used_a and not result.hull_used_b
    assert list(result.points_a) == hull_a
    assert len(result.notes) == 1
    note = result.notes[0]
    assert "curve A is not monotonic" in note and "keeps 5 of 7" in note
    assert "(3000, 0.74)" in note and "(12000, 0.86)" in note
    # The value is the ordinary BD-rate of the hull points, checked independently.
    hull_rates, hull_scores = zip(*hull_a, strict=True)
    expected = _independent("rate", (hull_rates, hull_scores), (rates_b, score_b))
    assert result.value == pytest.approx(expected, abs=1e-6)
    direct = bd_rate(hull_rates, hull_scores, rates_b, score_b)
    assert not direct.hull_used_a and direct.value == pytest.approx(result.value, abs=1e-12)
    # BD-metric applies the same rule to the same curve.
    metric = bd_metric(rates_a, score_a, rates_b, score_b)
    assert metric.hull_used_a and list(metric.points_a) == hull_a


def test_upper_hull_drops_points_below_the_chord_and_keeps_edges() -> None:
    points = [(1.0, 1.0), (2.0, 1.5), (3.0, 3.0), (4.0, 3.5), (5.0, 4.0), (6.0, 3.9), (5.0, 2.0)]
    # (2, 1.5) lies below the chord (1, 1)-(3, 3); (4, 3.5) lies on the edge (3, 3)-(5, 4);
    # (6, 3.9) and (5, 2) give less quality for as much rate or more.
    assert upper_hull(points) == [(1.0, 1.0), (3.0, 3.0), (4.0, 3.5), (5.0, 4.0)]
    assert upper_hull([(1.0, 2.0), (1.0, 2.0), (2.0, 3.0)]) == [(1.0, 2.0), (2.0, 3.0)]


def test_too_few_points_on_the_hull_gives_a_reason() -> None:
    # Saturated from the second point on: the hull keeps 2 points.
    result = bd_rate([100, 200, 400, 800], [0.6, 0.9, 0.9, 0.9], *CLASSIC_B)
    assert result.value is None
    assert result.hull_used_a
    assert len(result.points_a) == 2 < MIN_HULL_POINTS
    assert "upper convex hull keeps only 2" in result.reason and "curve A" in result.reason


def test_fewer_than_four_points_gives_a_reason() -> None:
    result = bd_rate(CLASSIC_A[0][:3], CLASSIC_A[1][:3], *CLASSIC_B)
    assert result.value is None and "curve A has 3 point" in result.reason
    assert "at least 4" in result.reason
    other = bd_metric(*CLASSIC_A, [], [])
    assert other.value is None and "curve B has 0 point" in other.reason


def test_no_overlap_gives_a_reason() -> None:
    rates, psnr = CLASSIC_A
    higher = [p + 20 for p in psnr]  # every B point far above every A point
    result = bd_rate(rates, psnr, rates, higher)
    assert result.value is None and result.overlap_fraction == 0.0
    assert "metric ranges do not overlap" in result.reason
    far = bd_metric(rates, psnr, [r * 100 for r in rates], psnr)
    assert far.value is None and "log10(rate) ranges do not overlap" in far.reason


def test_overlap_fraction_is_intersection_over_union() -> None:
    rates = [100, 200, 400, 800]
    a = [30.0, 33.0, 35.0, 36.0]
    b = [34.0, 37.0, 39.0, 40.0]  # shares 34..36 of 30..40
    result = bd_rate(rates, a, rates, b)
    assert result.overlap_fraction == pytest.approx(2.0 / 10.0)
    assert result.interval == (34.0, 36.0)
    assert result.value is not None and result.overlap_fraction < LOW_OVERLAP
    assert any("share 20%" in note for note in result.notes)
    assert result.value == pytest.approx(_independent("rate", (rates, a), (rates, b)), abs=1e-6)


@pytest.mark.parametrize(
    ("rates", "metrics", "expected"),
    [
        ([100, 0, 400, 800], [30, 33, 35, 36], "rates must be finite and above 0"),
        ([100, -5, 400, 800], [30, 33, 35, 36], "rates must be finite and above 0"),
        ([100, 200, np.inf, 800], [30, 33, 35, 36], "rates must be finite and above 0"),
        ([100, 200, 400, 800], [30, 33, 35, np.inf], "metrics must be finite"),
        ([100, 200, 400, 800], [30, np.nan, 35, 36], "metrics must be finite"),
    ],
)
def test_bad_points_give_a_reason(rates: list, metrics: list, expected: str) -> None:
    result = bd_rate(*CLASSIC_A, rates, metrics)
    assert result.value is None and expected in result.reason and "curve B" in result.reason


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(InvalidInputError, match="same length"):
        bd_rate([1, 2, 3, 4], [1, 2, 3], *CLASSIC_B)
