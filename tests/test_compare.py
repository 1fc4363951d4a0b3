"""`compare`: one pass over the source for every encode, differences with intervals, BD-rate."""

from __future__ import annotations

import json

import jsonschema
import media
import numpy as np
import pytest
from click.testing import CliRunner

from topiq_video.bdrate import bd_rate
from topiq_video.cli import cli
from topiq_video.compare import (
    ComparePass,
    EncodeSpec,
    SharedFrames,
    compare_encodes,
    encode_specs,
    load_manifest,
)
from topiq_video.errors import InvalidInputError
from topiq_video.pipeline.options import FrameSelection, ScoreOptions
from topiq_video.result import CompareResult, compare_schema, shipped_schema

LUMA = "psnr_y,ssim_y"
CLIP = {"n_frames": 60, "width": 128, "height": 72, "cuts": (20, 41)}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    return {
        "ref": media.make_clip(d / "source.mp4", **CLIP),
        "good": media.make_clip(d / "good.mp4", crf=22, **CLIP),
        "bad": media.make_clip(d / "bad.mp4", crf=40, **CLIP),
        "good_again": media.make_clip(d / "good_again.mp4", crf=22, **CLIP),
        "trimmed": media.make_trimmed_clip(d / "trimmed.mp4", 4, crf=30, **CLIP),
    }


def test_the_better_encode_wins_every_scene(clips):
    result = compare_encodes(clips["ref"], [clips["bad"], clips["good"]], metrics=LUMA)
    assert result.report.baseline == "bad"
    assert [s.start_frame for s in result.report.scenes] == [0, 20, 41]
    (comparison,) = result.report.comparisons
    psnr = next(m for m in comparison.metrics if m.metric == "psnr_y")
    assert psnr.overall.verdict == "better" and psnr.overall.low > 0
    assert (psnr.won, psnr.tied, psnr.lost) == (3, 0, 0)
    for scene in psnr.scenes:
        assert scene.difference.verdict == "better" and scene.difference.low > 0
    # The interval is of the mean per-frame difference, recomputed here from the table.
    table = result.table("psnr_y")
    assert psnr.overall.mean == pytest.approx((table["good"] - table["bad"]).mean(), rel=1e-12)


def test_identical_encodes_make_no_difference(clips):
    result = compare_encodes(clips["ref"], [clips["good"], clips["good_again"]], metrics=LUMA)
    for metric in result.report.comparisons[0].metrics:
        assert metric.overall.mean == 0 and metric.overall.verdict == "no difference"
        assert metric.overall.low == metric.overall.high == 0
        assert (metric.won, metric.lost) == (0, 0)


def test_a_trimmed_encode_still_aligns(clips):
    result = compare_encodes(clips["ref"], [clips["good"], clips["trimmed"]], metrics="psnr_y")
    trimmed = result.report.encode("trimmed")
    assert trimmed.alignment.offset_frames == 4
    rows = result.frames[result.frames["encode"] == "trimmed"]
    assert list(rows["ref_frame"]) == list(rows["frame"] + 4)


class CountingModel:
    """A stand-in full-reference model that counts the reference frames it computes features
    for and the frames it scores (its scores: the mean absolute difference of features)."""

    def __init__(self, model):
        self.model = model
        self.reference_frames = 0
        self.scored = 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def reference_features(self, ref):
        self.reference_frames += ref.shape[0]
        return self.model.reference_features(ref)

    def score(self, dist, ref=None, *, ref_features=None):
        self.scored += dist.shape[0]
        return self.model.score(dist, ref, ref_features=ref_features)


def test_one_pass_over_the_source(clips, fr_checkpoint):
    """The source is decoded once and its model features computed once per source frame,
    whatever the number of encodes; the scores equal scoring each encode on its own."""
    from topiq_video.model import load_model
    from topiq_video.pipeline.collect import score_video

    model = CountingModel(load_model("topiq_fr", weights=str(fr_checkpoint), device="cpu"))
    encodes = encode_specs([str(clips["good"]), str(clips["bad"]), str(clips["trimmed"])])
    options = ScoreOptions(
        metrics=("topiq_fr", "psnr_y"), selection=FrameSelection(max_frames=12), detect_scenes=False
    )
    compare_pass = ComparePass(clips["ref"], encodes, options, models={"topiq_fr": model})
    rows = list(compare_pass.run())
    assert len(rows) == 36
    assert compare_pass.source.stats.frames_decoded <= 12 + 4 + 10  # one pass, bounded lookahead
    assert model.reference_frames == compare_pass.source_frames_seen <= 16
    assert model.scored == 36
    alone = score_video(
        clips["bad"],
        clips["ref"],
        metrics="topiq_fr,psnr_y",
        weights=str(fr_checkpoint),
        max_frames=12,
        device="cpu",
    ).frames
    together = [r.values["topiq_fr"] for label, r in rows if label == "bad"]
    assert np.allclose(together, alone["topiq_fr"].to_numpy(), atol=1e-5)


def test_shared_frames_keep_only_what_a_cursor_still_needs():
    shared = SharedFrames(iter(range(1000)))
    fast, slow = shared.cursor(), shared.cursor()
    for _ in range(10):
        next(fast)
    assert len(shared) == 10
    for _ in range(10):
        next(slow)
    assert len(shared) == 0
    assert next(fast) == 10 and next(slow) == 10


def test_an_unreadable_encode_is_named_and_the_others_go_on(clips, tmp_path):
    broken = media.make_text_file(tmp_path / "broken.mp4")
    result = compare_encodes(clips["ref"], [clips["good"], broken, clips["bad"]], metrics="psnr_y")
    entry = result.report.encode("broken")
    assert entry.error and "broken.mp4" in entry.error and entry.frames_scored == 0
    assert result.report.encode("bad").frames_scored == 60
    assert any("broken" in w for w in result.report.warnings)
    with pytest.raises(InvalidInputError, match="No encode could be opened"):
        compare_encodes(clips["ref"], [broken], metrics="psnr_y")


def test_manifest_gives_rd_points_and_bd_rates_equal_to_an_independent_computation(tmp_path, clips):
    lines = ["file,encoder,rate"]
    # Two "encoders": full size, and half size scaled back up (worse at the same rate).
    for crf in (20, 26, 32, 38):
        for name, size in (("full", {}), ("half", {"width": 64, "height": 36})):
            path = tmp_path / f"{name}{crf}.mkv"
            media.make_clip(path, crf=crf, **{**CLIP, **size})
            lines.append(f"{path.name},{name},{crf}")
    (tmp_path / "encodes.csv").write_text("\n".join(lines) + "\n")
    specs = load_manifest(tmp_path / "encodes.csv")
    assert specs[0] == EncodeSpec(str(tmp_path / "full20.mkv"), "full@20", "full", 20.0)
    result = compare_encodes(clips["ref"], specs, metrics="psnr_y", detect_scenes=False)
    assert len(result.report.rd) == 8
    entry = next(e for e in result.report.bd if e.metric == "psnr_y" and e.stat == "mean")
    points = {p.label: p for p in result.report.rd}

    def curve(name):
        chosen = sorted((p for p in points.values() if p.encoder == name), key=lambda p: p.bitrate)
        return [p.bitrate for p in chosen], [p.values["psnr_y"]["mean"] for p in chosen]

    expected = bd_rate(*curve("full"), *curve("half"))
    assert entry.encoder == "half" and entry.baseline == "full"
    if expected.value is None:  # the curves may not overlap: then both say why
        assert entry.bd_rate.value is None and entry.bd_rate.reason == expected.reason
    else:
        assert entry.bd_rate.value == pytest.approx(expected.value, abs=1e-6)
    assert len(entry.scenes) == 1 and entry.scenes[0][0] == 0


def test_compare_json_follows_its_generated_schema_and_loads_back(clips, tmp_path):
    assert shipped_schema("compare.schema.json") == compare_schema()
    result = compare_encodes(clips["ref"], [clips["bad"], clips["good"]], metrics=LUMA, gallery=2)
    saved = result.save(tmp_path)
    doc = json.loads(saved.json_path.read_text())
    jsonschema.validate(doc, shipped_schema("compare.schema.json"))
    assert doc["schema"] == "topiq-video/compare@1"
    assert CompareResult.load(tmp_path) == result
    gallery = result.report.gallery
    assert gallery and {"source", "baseline", "encode", "diff"} <= set(gallery[0].images)
    assert all(result.images[name][:2] == b"\xff\xd8" for g in gallery for name in g.files())


def test_cli_compare_writes_its_files_and_table(clips, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--ref", str(clips["ref"]), str(clips["bad"]), str(clips["good"])]
    result = CliRunner().invoke(
        cli, [*args, "--label", f"A={clips['bad']}", "--metrics", "psnr_y", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert {"compare.json", "frames.parquet"} <= {p.name for p in out.iterdir()}
    assert "A" in result.output and "better" in result.output and "baseline" in result.output
    result = CliRunner().invoke(cli, ["compare", str(clips["bad"])])
    assert result.exit_code == 1 and "--ref SOURCE" in result.output
    result = CliRunner().invoke(cli, [*args, "--baseline", "nope", "--metrics", "psnr_y"])
    assert result.exit_code == 1 and "baseline 'nope'" in result.output
