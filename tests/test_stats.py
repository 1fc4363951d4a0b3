"""Paired differences: the circular block bootstrap against exact formulas and by simulation."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.signal import lfilter

from topiq_video.errors import InvalidInputError
from topiq_video.stats import (
    MIN_BLOCKS,
    Difference,
    _circular_block_means,
    optimal_block_length,
    overall,
    paired_difference,
)


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Stationary AR(1) noise: x[t] = phi * x[t-1] + e[t], started from its own distribution."""
    shocks = rng.standard_normal(n + 1)
    shocks[0] /= np.sqrt(1.0 - phi**2)
    return lfilter([1.0], [1.0, -phi], shocks)[1:]


def test_identical_inputs_give_zero_with_a_zero_width_interval() -> None:
    a = np.random.default_rng(1).uniform(0.3, 0.9, 500)
    result = paired_difference(a, a.copy())
    assert result.mean == 0.0
    assert result.low == 0.0 and result.high == 0.0
    assert result.verdict == "no difference"
    assert result.n == 500 and result.dropped == 0


def test_constant_shift_and_single_frame_give_a_zero_width_interval_at_the_mean() -> None:
    a = np.zeros(40)
    shifted = paired_difference(a, a + 0.25)
    assert (shifted.mean, shifted.low, shifted.high) == (0.25, 0.25, 0.25)
    assert shifted.verdict == "better"
    one = paired_difference([0.8], [0.5])
    assert one.n == 1 and one.mean == one.low == one.high == pytest.approx(-0.3)
    assert one.verdict == "worse"


def test_no_data_when_no_frame_has_both_values() -> None:
    result = paired_difference([np.nan, 1.0, np.inf], [2.0, np.nan, 3.0])
    assert result.n == 0 and result.dropped == 3
    assert result.mean is None and result.low is None and result.high is None
    assert result.verdict == "no data"
    empty = paired_difference([], [])
    assert empty.verdict == "no data" and empty.n == 0 and empty.dropped == 0


def test_clear_shift_is_better_and_reversed_is_worse() -> None:
    rng = np.random.default_rng(7)
    a = 30.0 + _ar1(rng, 3000, 0.8)
    b = a + 1.0 + 0.5 * _ar1(rng, 3000, 0.8)
    up = paired_difference(a, b)
    assert up.verdict == "better"
    assert 0.0 < up.low < up.mean < up.high
    assert up.mean == pytest.approx(1.0, abs=0.1)  # the true shift
    assert up.mean == pytest.approx(np.mean(b - a))
    down = paired_difference(b, a)
    assert down.verdict == "worse" and down.high < 0.0
    assert down.mean == pytest.approx(-up.mean)


def test_nan_and_inf_are_dropped_pairwise_and_counted() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(0.5, 0.05, 200)
    b = a + rng.normal(0.02, 0.05, 200)
    a_bad, b_bad = a.copy(), b.copy()
    a_bad[[5, 50]] = np.nan
    b_bad[[50, 120]] = np.inf  # frame 50 bad on both sides: one drop
    b_bad[199] = -np.inf
    result = paired_difference(a_bad, b_bad, block=4)
    keep = np.ones(200, dtype=bool)
    keep[[5, 50, 120, 199]] = False
    assert result.dropped == 4 and result.n == 196
    assert result.mean == pytest.approx(np.mean(b[keep] - a[keep]))
    clean = paired_difference(a[keep], b[keep], block=4)
    assert (clean.low, clean.high) == (result.low, result.high)


def test_same_inputs_and_seed_give_the_identical_interval() -> None:
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=1000), rng.normal(0.05, 1.0, size=1000)
    first = paired_difference(a, b, seed=42)
    again = paired_difference(list(a), list(b), seed=42)
    assert first == again
    other = paired_difference(a, b, seed=43)
    assert (other.low, other.high) != (first.low, first.high)
    assert other.mean == first.mean


def test_resample_means_have_the_exact_circular_block_bootstrap_distribution() -> None:
    """Each resample is n / L independent draws of a circular block sum: mean and variance known."""
    rng = np.random.default_rng(5)
    n, block = 600, 20
    x = _ar1(rng, n, 0.7) + 2.0
    # The n circular block sums, by a plain loop: the population each block is drawn from.
    block_sums = np.array([sum(x[(s + j) % n] for j in range(block)) for s in range(n)])
    k = n // block
    exact_mean = k * block_sums.mean() / n
    exact_var = k * block_sums.var() / n**2
    means = _circular_block_means(x, block, 40000, seed=9)
    assert exact_mean == pytest.approx(x.mean(), abs=1e-12)  # circular: centred on the mean
    assert means.mean() == pytest.approx(exact_mean, abs=4 * np.sqrt(exact_var / 40000))
    assert means.var() == pytest.approx(exact_var, rel=0.05)  # Monte Carlo error ~0.7 %

    # A last, shorter block when L does not divide n: variance of the mixed draw.
    n2 = 610
    x2 = np.concatenate([x, x[:10]])
    sums_full = np.array([x2[(s + np.arange(block)) % n2].sum() for s in range(n2)])
    sums_tail = np.array([x2[(s + np.arange(10)) % n2].sum() for s in range(n2)])
    exact_var2 = (k * sums_full.var() + sums_tail.var()) / n2**2
    means2 = _circular_block_means(x2, block, 40000, seed=10)
    assert means2.var() == pytest.approx(exact_var2, rel=0.05)


def test_automatic_block_length_follows_the_correlation() -> None:
    rng = np.random.default_rng(21)
    n = 10000
    white = [optimal_block_length(rng.standard_normal(n)) for _ in range(5)]
    assert max(white) <= 3  # uncorrelated frames need no blocks
    # For AR(1) the Politis-White optimum is (1.5 (G/g)^2)^(1/3) n^(1/3), G/g = 2 phi / (1 - phi^2).
    phi = 0.9
    theory = (1.5 * (2 * phi / (1 - phi**2)) ** 2) ** (1 / 3) * n ** (1 / 3)
    estimates = [optimal_block_length(_ar1(rng, n, phi)) for _ in range(9)]
    assert np.median(estimates) == pytest.approx(theory, rel=0.25)
    result = paired_difference(np.zeros(n), _ar1(rng, n, phi))
    assert result.block_rule == "politis-white" and 40 < result.block < 250


def test_block_coverage_with_correlated_frames_beats_the_iid_bootstrap() -> None:
    """AR(1) noise, phi 0.9, true difference 0: blocks keep the 95 % interval near 95 %."""
    rng = np.random.default_rng(2024)
    n, trials = 10000, 400
    series = [_ar1(rng, n, 0.9) for _ in range(trials)]
    zeros = np.zeros(n)
    covered = [
        r.low <= 0.0 <= r.high
        for r in (paired_difference(zeros, d, resamples=1000, seed=i) for i, d in enumerate(series))
    ]
    block_coverage = np.mean(covered)
    assert 0.90 <= block_coverage <= 0.98
    # The same series, frames treated as independent (block=1): far too narrow.
    iid = [
        paired_difference(zeros, d, block=1, resamples=200, seed=i)
        for i, d in enumerate(series[:60])
    ]
    iid_coverage = np.mean([r.low <= 0.0 <= r.high for r in iid])
    assert iid_coverage < 0.6
    assert iid_coverage < block_coverage - 0.3


def test_given_block_is_used_and_capped_to_leave_enough_blocks() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=300), rng.normal(size=300)
    given = paired_difference(a, b, block=25)
    assert given.block == 25 and given.block_rule == "given" and given.notes == ()
    short = paired_difference(a[:30], b[:30], block=25)
    assert short.block == 30 // MIN_BLOCKS
    assert short.low < short.mean < short.high  # not collapsed to a point
    assert "shortened" in short.notes[0]


def test_two_thousand_resamples_of_ten_thousand_frames_are_fast() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=10000)
    b = a + 0.01 + 0.1 * _ar1(rng, 10000, 0.5)
    paired_difference(a, b, block=1, resamples=10)  # warm-up
    for block in (None, 1):
        start = time.perf_counter()
        paired_difference(a, b, block=block, resamples=2000)
        assert time.perf_counter() - start < 1.0


def test_overall_counts_scenes_and_pools_by_frames() -> None:
    def diff(mean: float | None, n: int, verdict: str) -> Difference:
        return Difference(
            mean=mean,
            low=None if mean is None else mean - 1,
            high=None if mean is None else mean + 1,
            n=n,
            dropped=0,
            block=1,
            confidence=0.95,
            verdict=verdict,
            resamples=2000,
            seed=0,
        )

    scenes = [
        diff(2.0, 100, "better"),
        diff(1.0, 300, "better"),
        diff(-1.0, 100, "worse"),
        diff(0.1, 500, "no difference"),
        diff(None, 0, "no data"),
    ]
    summary = overall(scenes)
    assert (summary.won, summary.tied, summary.lost, summary.no_data) == (2, 1, 1, 1)
    assert summary.scenes == 5 and summary.frames == 1000
    assert summary.mean == pytest.approx((200 + 300 - 100 + 50) / 1000)
    assert overall([]).mean is None


def test_bad_arguments_raise_with_what_to_fix() -> None:
    with pytest.raises(InvalidInputError, match="same frames"):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(InvalidInputError, match="confidence"):
        paired_difference([1, 2], [1, 2], confidence=95)
    with pytest.raises(InvalidInputError, match="block"):
        paired_difference([1, 2], [1, 2], block=0)
    with pytest.raises(InvalidInputError, match="resamples"):
        paired_difference([1, 2], [1, 2], resamples=0)
    with pytest.raises(InvalidInputError, match="1-D"):
        paired_difference(np.zeros((2, 2)), np.zeros((2, 2)))
