"""Where TOPIQ and another metric disagree, and pictures fetched after the pass."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from media import make_clip, make_trimmed_clip

from topiq_video.agreement import disagreement, metric_pair, percentiles
from topiq_video.pipeline.revisit import PairAt, fetch_pictures
from topiq_video.pooling import pool
from topiq_video.report.build import build_report
from topiq_video.result import ScoreResult
from topiq_video.scenes import scenes_from_cuts
from topiq_video.video.source import open_source


def test_percentiles_are_shares_of_frames_beaten():
    got = percentiles(np.array([30.0, 10.0, 20.0, 20.0, math.nan, math.inf]))
    # Five known values; ranks 4, 1, 2.5, 2.5 and 5 (+inf is above every finite value).
    expected = [(4 - 0.5) / 5, (1 - 0.5) / 5, (2.5 - 0.5) / 5, (2.5 - 0.5) / 5, math.nan, 0.9]
    np.testing.assert_allclose(got, expected)


def test_metric_pair_prefers_vmaf_then_psnr():
    assert metric_pair(["topiq_fr", "psnr_y", "vmaf"]) == ("topiq_fr", "vmaf")
    assert metric_pair(["psnr_y", "topiq_nr", "ssim_y"]) == ("topiq_nr", "psnr_y")
    assert metric_pair(["psnr_y", "vmaf"]) is None
    assert metric_pair(["topiq_fr"]) is None


def _table(a, b, fps=10.0):
    n = len(a)
    return pd.DataFrame({"frame": np.arange(n), "time": np.arange(n) / fps, "topiq": a, "vmaf": b})


def test_the_frames_ranked_furthest_apart_come_first():
    n = 100
    a = np.linspace(0.2, 0.9, n)
    b = np.linspace(20.0, 95.0, n)
    # Frame 10: TOPIQ finds it bad, VMAF finds it the best; frame 80: the reverse.
    b[10], b[80] = 99.0, 1.0
    table = _table(a, b)
    agreement = disagreement(table, "topiq", "vmaf", frames=3, spacing=0.0)
    assert [f.frame for f in agreement.frames[:2]] == [10, 80]
    first = agreement.frames[0]
    assert first.percentile == pytest.approx(10.5 / n) and first.other_percentile == 1 - 0.5 / n
    assert first.gap < 0  # TOPIQ thinks worse of it than VMAF
    assert agreement.frames[1].gap > 0
    # Spearman without ties: 1 - 6 * sum(d^2) / (n (n^2 - 1)), from the ranks by hand.
    ranks_a = np.arange(1, n + 1)
    ranks_b = np.argsort(np.argsort(b)) + 1
    d = ranks_a - ranks_b
    assert agreement.spearman == pytest.approx(1 - 6 * np.sum(d * d) / (n * (n * n - 1)))
    assert agreement.pearson == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert agreement.frames_compared == n


def test_disagreeing_frames_are_spread_out_in_time():
    n = 60
    a = np.linspace(0, 1, n)
    b = a[::-1].copy()  # full disagreement at both ends
    agreement = disagreement(_table(a, b, fps=10.0), "topiq", "vmaf", frames=4, spacing=1.0)
    times = sorted(f.time for f in agreement.frames)
    assert len(times) == 4 and all(t2 - t1 >= 1.0 for t1, t2 in itertools.pairwise(times))
    assert agreement.spearman == pytest.approx(-1.0)


def test_missing_values_are_left_out_and_infinities_skip_pearson():
    a = np.array([0.1, 0.2, 0.3, 0.4, 0.5, math.nan])
    b = np.array([10.0, 20.0, 30.0, 40.0, math.inf, 60.0])
    agreement = disagreement(_table(a, b), "topiq", "vmaf", spacing=0.0)
    assert agreement.frames_compared == 5
    assert agreement.spearman == pytest.approx(1.0)  # +inf is simply the best rank
    assert agreement.pearson == pytest.approx(1.0)  # on the four finite pairs
    assert agreement.frames == ()  # they agree on every rank


def test_scenes_ranked_furthest_apart_with_their_frame():
    n = 90
    rng = np.random.default_rng(0)
    a = np.repeat([0.3, 0.5, 0.7], 30) + rng.normal(0, 0.01, n)
    b = np.repeat([80.0, 50.0, 60.0], 30) + rng.normal(0, 1.0, n)
    table = _table(a, b)
    scenes = scenes_from_cuts([30, 60], table["frame"].tolist(), table["time"].tolist())
    table["scene"] = np.repeat([0, 1, 2], 30)
    pooled = pool(table, ["topiq", "vmaf"], scenes, worst_n=0)
    agreement = disagreement(table, "topiq", "vmaf", pooled.scenes, scene_count=2)
    first = agreement.scenes[0]
    # Scene 0 is TOPIQ's worst (rank 1) and VMAF's best (rank 3).
    assert (first.scene, first.rank, first.other_rank) == (0, 1, 3)
    assert first.frame is not None and first.frame.scene == 0 and 0 <= first.frame.frame < 30
    assert agreement.scenes_compared == 3 and agreement.scene_spearman == pytest.approx(-0.5)


@pytest.fixture(scope="module")
def encodes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("agree")
    ref = make_clip(folder / "ref.mkv", n_frames=60, crf=12, gop=12, cuts=(30,))
    dist = make_trimmed_clip(
        folder / "dist.mkv", 6, n_frames=60, width=80, height=44, render_factor=2, crf=34,
        gop=12, cuts=(30,),
    )  # fmt: skip
    return dist, ref


def test_pictures_fetched_by_seeking_equal_those_captured_in_the_pass(encodes, tmp_path):
    dist, ref = encodes
    result, _ = build_report(dist, ref, tmp_path / "r", metrics=("psnr_y", "ssim_y"), gallery=4)
    entries = [g for g in result.report.gallery if g.metric == "psnr_y"]
    assert len(entries) == 4 and all(g.ref_frame == g.frame + 6 for g in entries)
    fetched = fetch_pictures(
        str(dist),
        str(ref),
        [PairAt(g.frame, g.time, g.ref_frame, g.ref_time) for g in entries],
        size=(160, 90),
    )
    for g in entries:
        pictures = fetched[g.frame].pictures
        assert pictures["dist"] == result.images[g.dist_image]
        assert pictures["ref"] == result.images[g.ref_image]
        assert pictures["diff"] == result.images[g.diff_image]


def test_a_report_shows_where_topiq_and_psnr_disagree(encodes, fr_checkpoint, tmp_path):
    dist, ref = encodes
    result, saved = build_report(
        dist, ref, tmp_path / "r", metrics=("topiq_fr", "psnr_y"), weights=str(fr_checkpoint)
    )
    agreement = result.report.agreement
    assert agreement is not None and (agreement.metric, agreement.other) == ("topiq_fr", "psnr_y")
    expected = disagreement(result.frames, "topiq_fr", "psnr_y", result.scenes)
    assert agreement.spearman == pytest.approx(expected.spearman)
    assert [f.frame for f in agreement.frames] == [f.frame for f in expected.frames]
    assert agreement.pictures_note is None
    for frame in agreement.frames:
        assert frame.dist_image and frame.ref_image and frame.diff_image
        assert result.images[frame.dist_image][:2] == b"\xff\xd8"  # a JPEG
    # Saved and loaded with its pictures.
    assert ScoreResult.load(saved.out_dir) == result


def test_sources_that_cannot_be_sought_get_a_note_not_pictures(encodes, fr_checkpoint, tmp_path):
    dist, ref = encodes
    result, _ = build_report(
        open_source(str(dist), thumbnails=True),
        open_source(str(ref), thumbnails=True),
        tmp_path / "r",
        metrics=("topiq_fr", "psnr_y"),
        weights=str(fr_checkpoint),
    )
    agreement = result.report.agreement
    assert agreement.frames and all(f.dist_image is None for f in agreement.frames)
    assert "decoder object" in agreement.pictures_note
