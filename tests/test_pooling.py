"""Pooled statistics against numpy recomputation; streaming and rolling summaries."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from topiq_video.errors import InvalidInputError
from topiq_video.pooling import (
    MetricStats,
    RollingStats,
    StreamingSummary,
    pool,
    summarize,
)
from topiq_video.scenes import scenes_from_cuts


def _sprinkled(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    values = rng.uniform(low, high, n)
    spots = rng.choice(n, size=9, replace=False)
    values[spots[:3]] = np.nan
    values[spots[3:6]] = np.inf
    values[spots[6:]] = -np.inf
    return values


def _check_against_numpy(stats: MetricStats, values: np.ndarray) -> None:
    finite = values[np.isfinite(values)]
    assert stats.count == finite.size
    assert stats.nan_count == np.isnan(values).sum()
    assert stats.posinf_count == np.isposinf(values).sum()
    assert stats.neginf_count == np.isneginf(values).sum()
    assert stats.mean == pytest.approx(np.mean(finite))
    assert stats.std == pytest.approx(np.std(finite))
    assert stats.min == finite.min()
    assert stats.max == finite.max()
    assert stats.median == pytest.approx(np.median(finite))
    for name, q in (("p1", 1), ("p5", 5), ("p10", 10)):
        assert getattr(stats, name) == pytest.approx(np.percentile(finite, q))


def test_summarize_matches_numpy_with_non_finite_values_counted() -> None:
    rng = np.random.default_rng(0)
    values = _sprinkled(rng, 500, 20.0, 50.0)
    stats = summarize(values)
    _check_against_numpy(stats, values)
    assert (stats.nan_count, stats.posinf_count, stats.neginf_count) == (3, 3, 3)
    assert stats.harmonic_mean is None  # values are not in (0, 1]
    assert all(math.isfinite(v) for v in asdict(stats).values() if v is not None)


def test_harmonic_mean_only_for_unit_interval_metrics() -> None:
    rng = np.random.default_rng(1)
    values = rng.uniform(0.05, 1.0, 200)
    values[[3, 50]] = np.nan
    stats = summarize(values)
    finite = values[np.isfinite(values)]
    assert stats.harmonic_mean == pytest.approx(len(finite) / np.sum(1.0 / finite))
    assert stats.harmonic_mean < stats.mean
    assert summarize(np.append(values, 0.0)).harmonic_mean is None  # 0 is outside (0, 1]
    assert summarize(np.append(values, 1.5)).harmonic_mean is None
    assert summarize(values, harmonic=False).harmonic_mean is None


def test_summarize_of_no_finite_values() -> None:
    stats = summarize([np.nan, np.inf])
    assert stats.count == 0
    assert stats.mean is None and stats.median is None and stats.std is None
    assert (stats.nan_count, stats.posinf_count) == (1, 1)


@pytest.fixture(scope="module")
def frames_df() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    n = 130
    frames = np.arange(0, 2 * n, 2)  # every other frame was scored
    return pd.DataFrame(
        {
            "frame": frames,
            "time": frames / 25.0,
            "topiq_fr": _sprinkled(rng, n, 0.1, 0.95),
            "psnr_y": _sprinkled(rng, n, 25.0, 45.0),
        }
    )


def test_pool_summary_and_scene_stats_match_slicing(frames_df: pd.DataFrame) -> None:
    metrics = ["topiq_fr", "psnr_y"]
    scenes = scenes_from_cuts([60, 181], frames_df["frame"], frames_df["time"])
    result = pool(frames_df, metrics, scenes)
    for m in metrics:
        _check_against_numpy(result.summary[m], frames_df[m].to_numpy())
    assert len(result.scenes) == 3
    for scene_stats, (lo, hi) in zip(result.scenes, [(0, 58), (60, 180), (182, 258)], strict=True):
        assert (scene_stats.start_frame, scene_stats.end_frame) == (lo, hi)
        part = frames_df[(frames_df.frame >= lo) & (frames_df.frame <= hi)]
        for m in metrics:
            _check_against_numpy(scene_stats.stats[m], part[m].to_numpy())
    # Worst scenes: ascending mean of finite values.
    for m in metrics:
        means = [s.stats[m].mean for s in result.scenes]
        assert result.worst_scenes[m] == tuple(sorted(range(3), key=lambda i: means[i]))


def test_pool_harmonic_mean_decided_per_metric(frames_df: pd.DataFrame) -> None:
    # topiq_fr has -inf values, but its finite values are in (0, 1]: harmonic mean given.
    scenes = scenes_from_cuts([], frames_df["frame"], frames_df["time"])
    result = pool(frames_df, ["topiq_fr", "psnr_y"], scenes)
    finite = frames_df["topiq_fr"].to_numpy()
    finite = finite[np.isfinite(finite)]
    assert result.summary["topiq_fr"].harmonic_mean == pytest.approx(
        finite.size / np.sum(1 / finite)
    )
    assert result.summary["psnr_y"].harmonic_mean is None
    assert result.scenes[0].stats["topiq_fr"].harmonic_mean is not None


def test_worst_frames_are_lowest_values_in_order(frames_df: pd.DataFrame) -> None:
    scenes = scenes_from_cuts([], frames_df["frame"], frames_df["time"])
    result = pool(frames_df, ["psnr_y"], scenes, worst_n=5)
    worst = result.worst_frames["psnr_y"]
    assert len(worst) == 5
    valid = frames_df[~frames_df["psnr_y"].isna()].sort_values("psnr_y", kind="stable")
    assert [(w.frame, w.time, w.number) for w in worst] == [
        (int(r.frame), float(r.time), float(r.psnr_y)) for r in valid.head(5).itertuples()
    ]
    # -inf is the worst possible value; JSON keeps it as a flag.
    assert [(w.value, w.value_nonfinite) for w in worst[:3]] == [(None, "-inf")] * 3
    assert all(not math.isnan(w.number) for w in worst)
    values = [w.number for w in worst]
    assert values == sorted(values)


def test_per_second_groups_by_whole_second(frames_df: pd.DataFrame) -> None:
    scenes = scenes_from_cuts([], frames_df["frame"], frames_df["time"])
    per_second = pool(frames_df, ["psnr_y"], scenes).per_second
    seconds = np.floor(frames_df["time"]).astype(int)
    assert list(per_second.second) == sorted(seconds.unique())
    for i, second in enumerate(per_second.second):
        values = frames_df.loc[seconds == second, "psnr_y"].to_numpy()
        finite = values[np.isfinite(values)]
        assert per_second.mean["psnr_y"][i] == pytest.approx(finite.mean())
        assert per_second.min["psnr_y"][i] == finite.min()
        assert per_second.nonfinite["psnr_y"][i] == (~np.isfinite(values)).sum()


def test_pool_rejects_missing_columns(frames_df: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="ssim_y"):
        pool(frames_df, ["ssim_y"], [])


def test_psnr_of_identical_frames_does_not_make_the_mean_inf() -> None:
    df = pd.DataFrame(
        {"frame": [0, 1, 2, 3], "time": [0, 0.04, 0.08, 0.12], "psnr_y": [np.inf, 40, 42, np.inf]}
    )
    scenes = scenes_from_cuts([], df["frame"], df["time"])
    stats = pool(df, ["psnr_y"], scenes).scenes[0].stats["psnr_y"]
    assert stats.mean == 41.0
    assert stats.posinf_count == 2


@pytest.mark.parametrize("batch", [1, 7, 100])
def test_streaming_summary_equals_batch_statistics(batch: int) -> None:
    rng = np.random.default_rng(3)
    values = _sprinkled(rng, 1000, 0.01, 1.0)
    stream = StreamingSummary(reservoir_size=2000)
    for start in range(0, values.size, batch):
        stream.update(values[start : start + batch])
    got, want = stream.result(), summarize(values)
    assert got.count == want.count
    assert got.mean == pytest.approx(want.mean, rel=1e-12)
    assert got.std == pytest.approx(want.std, rel=1e-9)
    assert (got.min, got.max) == (want.min, want.max)
    assert got.harmonic_mean == pytest.approx(want.harmonic_mean, rel=1e-12)
    assert (got.nan_count, got.posinf_count, got.neginf_count) == (3, 3, 3)
    # Below the reservoir size percentiles are exact.
    assert (got.p1, got.p5, got.p10, got.median) == pytest.approx(
        (want.p1, want.p5, want.p10, want.median)
    )


def test_streaming_percentiles_are_approximate_beyond_reservoir() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(50.0, 10.0, 50_000)
    stream = StreamingSummary(reservoir_size=1000, seed=1)
    for start in range(0, values.size, 333):
        stream.update(values[start : start + 333])
    got, want = stream.result(), summarize(values)
    assert got.count == 50_000
    assert got.mean == pytest.approx(want.mean, rel=1e-12)
    assert got.std == pytest.approx(want.std, rel=1e-9)
    assert got.median == pytest.approx(want.median, abs=1.5)  # ~ 0.15 sigma
    assert got.p10 == pytest.approx(want.p10, abs=2.0)
    # A scalar update and an out-of-range value switch the harmonic mean off.
    stream.update(2.0)
    assert stream.result().harmonic_mean is None


def test_rolling_stats_cover_the_last_window() -> None:
    rolling = RollingStats(window_seconds=2.0)
    times = np.arange(0, 10, 0.25)
    values = np.sin(times) * 10 + 30
    for t, v in zip(times, values, strict=True):
        rolling.update(t, v)
    inside = values[times > times[-1] - 2.0]
    stats = rolling.result()
    assert len(rolling) == inside.size == 8
    assert stats.mean == pytest.approx(inside.mean())
    assert stats.min == inside.min()
    with pytest.raises(InvalidInputError):
        rolling.update(1.0, 5.0)
