"""End to end: video files in, per-frame table out (alignment, scaling, metrics, selection)."""

from __future__ import annotations

import math
import threading

import av
import media
import numpy as np
import pytest
import torch
from ffmpeg_ref import ffmpeg_psnr_y, ffmpeg_ssim_y

from topiq_video.errors import InvalidInputError
from topiq_video.pipeline import run as pipeline
from topiq_video.pipeline.collect import score_video
from topiq_video.pipeline.options import FrameSelection, ScoreOptions
from topiq_video.pipeline.run import ScoringRun
from topiq_video.video.color import frames_to_rgb
from topiq_video.video.reader import open_video
from topiq_video.video.source import redact_source

LUMA = "psnr_y,ssim_y"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    common = {"n_frames": 60, "width": 160, "height": 96}
    return {
        "ref": media.make_clip(d / "ref.mp4", **common),
        "trimmed": media.make_trimmed_clip(d / "trimmed.mp4", 12, crf=30, **common),
        "ref30": media.make_rate_variant(d / "ref30.mp4", 30, seconds=2.0, width=160, height=96),
        "dist25": media.make_rate_variant(
            d / "dist25.mp4", 25, seconds=2.0, width=160, height=96, crf=30
        ),
        "short_ref": media.make_clip(d / "short_ref.mp4", n_frames=30, width=160, height=96),
        "cuts_ref": media.make_clip(
            d / "cuts_ref.mp4", n_frames=60, width=160, height=96, cuts=(20, 41)
        ),
        "cuts_dist": media.make_clip(
            d / "cuts_dist.mp4", n_frames=60, width=160, height=96, cuts=(20, 41), crf=38
        ),
    }


def test_trimmed_encode_aligned_at_offset_12(clips):
    result = score_video(str(clips["trimmed"]), str(clips["ref"]), metrics=LUMA)
    table = result.frames
    alignment = result.report.alignment
    assert alignment.offset_frames == 12
    assert alignment.offset_seconds == pytest.approx(12 / 25)
    assert alignment.confidence > 0.5
    assert list(table["ref_frame"]) == [f + 12 for f in table["frame"]]
    pairing = alignment.pairing
    assert pairing.paired == 48 and pairing.dist_before + pairing.dist_after == 0
    assert pairing.ref_before == 12 and pairing.conversion == "equal rate"
    # Aligned frames of the same content compare well; misaligned ones would not.
    assert table["psnr_y"].min() > 28


def test_forced_offset_overrides_search(clips):
    result = score_video(str(clips["trimmed"]), str(clips["ref"]), metrics=LUMA, offset=0.2)
    table = result.frames
    assert result.report.alignment.method == "manual"
    assert list(table["ref_frame"]) == [f + 5 for f in table["frame"]]


def test_different_frame_rates_pair_by_time(clips):
    """Rendered at both rates (no conversion): the picture at each instant is the nearest."""
    result = score_video(str(clips["dist25"]), str(clips["ref30"]), metrics=LUMA)
    table = result.frames
    assert result.report.alignment.offset_frames == 0
    expected = [round(f * 30 / 25) for f in table["frame"]]
    assert list(table["ref_frame"]) == expected
    assert np.allclose(table["ref_time"], table["time"], atol=0.5 / 30 + 1e-6)
    assert any("Frame rates differ" in w for w in result.warnings)


def test_reference_shorter_than_encode_scores_only_overlap(clips):
    result = score_video(str(clips["ref"]), str(clips["short_ref"]), metrics=LUMA, offset=0)
    table = result.frames
    assert list(table["frame"]) == list(range(30))
    assert list(table["ref_frame"]) == list(range(30))
    pairing = result.report.alignment.pairing
    assert pairing.paired == 30 and pairing.dist_after == 30
    assert pairing.ref_before + pairing.ref_after + pairing.ref_skipped == 0
    assert pairing.complete is True


def test_downscaled_encode_is_scaled_to_reference(tmp_path):
    ref = media.make_clip(tmp_path / "ref720.mp4", n_frames=6, width=1280, height=720)
    dist = media.make_clip(
        tmp_path / "dist360.mp4", n_frames=6, width=640, height=360, render_factor=2
    )
    result = score_video(str(dist), str(ref), metrics=LUMA, offset=0)
    table = result.frames
    assert len(table) == 6
    assert "640x360 -> 1280x720" in result.report.alignment.scaling
    assert any("Resolutions differ" in w for w in result.warnings)
    assert table["psnr_y"].min() > 25  # the same picture at half size, upscaled
    # Scaling the other way gives the other size and still compares the same content.
    down = score_video(str(dist), str(ref), metrics=LUMA, offset=0, scale_to="dist")
    assert "1280x720 -> 640x360" in down.report.alignment.scaling
    assert down.frames["psnr_y"].min() > table["psnr_y"].min()


def test_psnr_ssim_agree_with_ffmpeg_filters_on_aligned_pairs(clips):
    table = score_video(
        str(clips["trimmed"]), str(clips["ref"]), metrics=LUMA, max_frames=20
    ).frames
    with open_video(clips["trimmed"]) as reader:
        dist_y = {f.index: f.planes[0] for f in reader}
    with open_video(clips["ref"]) as reader:
        ref_y = {f.index: f.planes[0] for f in reader}
    d = [dist_y[i] for i in table["frame"]]
    r = [ref_y[int(i)] for i in table["ref_frame"]]
    # FFmpeg prints six decimals of a float: the oracle itself is good to about this.
    assert np.abs(table["psnr_y"].to_numpy() - ffmpeg_psnr_y(d, r)).max() <= 3e-6
    assert np.abs(table["ssim_y"].to_numpy() - ffmpeg_ssim_y(d, r)).max() <= 6e-7


def test_identical_inputs_give_infinite_psnr_and_unit_ssim(clips):
    result = score_video(str(clips["ref"]), str(clips["ref"]), metrics=LUMA, max_frames=10)
    table = result.frames
    assert result.report.alignment.offset_frames == 0
    assert np.isposinf(table["psnr_y"]).all()
    assert np.allclose(table["ssim_y"], 1.0)


def test_scene_cuts_come_from_reference_in_fr_mode(clips):
    run = ScoringRun(
        str(clips["cuts_dist"]),
        str(clips["cuts_ref"]),
        ScoreOptions(metrics=("psnr_y",), offset=0, detect_scenes=True),
    )
    rows = list(run)
    assert len(rows) == 60
    assert run.cuts == [20, 41]


def test_frame_selection(clips):
    every = score_video(
        str(clips["ref"]), str(clips["ref"]), metrics="psnr_y", every=3, offset=0
    ).frames
    assert list(every["frame"]) == list(range(0, 60, 3))
    sampled = score_video(
        str(clips["ref"]), str(clips["ref"]), metrics="psnr_y", sample_fps=5, offset=0
    ).frames
    assert list(sampled["frame"]) == list(range(0, 60, 5))
    window = score_video(
        str(clips["ref"]), str(clips["ref"]), metrics="psnr_y", start=1.0, duration=0.4, offset=0
    ).frames
    assert list(window["frame"]) == list(range(25, 35))
    assert list(window["ref_frame"]) == list(range(25, 35))
    capped = score_video(str(clips["ref"]), str(clips["ref"]), metrics="psnr_y", max_frames=7)
    assert len(capped.frames) == 7


def test_expected_count_matches_selection(clips):
    run = ScoringRun(
        str(clips["ref"]),
        str(clips["ref"]),
        ScoreOptions(metrics=("psnr_y",), offset=0, selection=FrameSelection(every=4)),
    )
    assert run.expected_frames == 15
    assert len(list(run)) == 15


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metrics": "psnr_y"}, "full-reference"),
        ({"metrics": "vmaf_v2"}, "Unknown metric"),
        ({"metrics": "vmaf"}, "full-reference"),
        ({"model": "topiq_fr"}, "full-reference"),
        ({"metrics": "psnr_y", "every": 0}, "every must be"),
    ],
)
def test_bad_options_without_reference(clips, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        score_video(str(clips["ref"]), **kwargs)


def test_bad_scale_and_offset(clips):
    with pytest.raises(InvalidInputError, match="scale_to"):
        score_video(str(clips["ref"]), str(clips["ref"]), metrics=LUMA, scale_to="huge")
    with pytest.raises(InvalidInputError, match="offset"):
        score_video(str(clips["ref"]), str(clips["ref"]), metrics=LUMA, offset="soon")


def test_metric_resolution_defaults():
    assert pipeline.resolve_metrics(None, None, True) == ("topiq_fr", "psnr_y", "ssim_y")
    assert pipeline.resolve_metrics(None, None, False) == ("topiq_nr",)
    assert pipeline.resolve_metrics("topiq_nr-flive", None, False) == ("topiq_nr-flive",)
    assert pipeline.resolve_metrics("topiq_fr-pipal", ("topiq", "psnr_y"), True) == (
        "topiq_fr-pipal",
        "psnr_y",
    )


def test_fr_topiq_scores_equal_direct_model_call(tmp_path, fr_checkpoint):
    """The pipeline feeds the model exactly the decoded, aligned RGB frames (stand-in weights)."""
    ref = media.make_clip(tmp_path / "r.mp4", n_frames=6, width=96, height=64)
    dist = media.make_clip(tmp_path / "d.mp4", n_frames=6, width=96, height=64, crf=40)
    result = score_video(
        str(dist), str(ref), weights=str(fr_checkpoint), offset=0, device="cpu", batch_size=4
    )
    table = result.frames
    assert list(table.columns) == [
        "frame",
        "time",
        "ref_frame",
        "ref_time",
        "scene",
        "topiq_fr",
        "psnr_y",
        "ssim_y",
    ]
    model = result.report.models[0]
    assert model.sha256 and model.precision == "fp32"
    from topiq_video.model import load_model

    model = load_model("topiq_fr", weights=str(fr_checkpoint), device="cpu")
    with open_video(dist) as reader:
        d = frames_to_rgb(list(reader))
    with open_video(ref) as reader:
        r = frames_to_rgb(list(reader))
    direct = model.score(d, r).numpy()
    assert np.allclose(table["topiq_fr"].to_numpy(), direct, atol=1e-5)


def test_nr_run_has_no_reference_columns(tmp_path, nr_checkpoint):
    clip = media.make_clip(tmp_path / "c.mp4", n_frames=5, width=64, height=48)
    result = score_video(str(clip), weights=str(nr_checkpoint), device="cpu")
    table = result.frames
    assert list(table.columns) == ["frame", "time", "scene", "topiq_nr"]
    assert np.isfinite(table["topiq_nr"]).all()
    assert result.report.alignment is None


def test_luma_resize_keeps_code_value_scale():
    luma = torch.full((1, 4, 6), 100.0)
    out = pipeline._resize_luma(luma, (12, 8), depth=8, target_depth=10)
    assert out.shape == (1, 8, 12)
    assert math.isclose(float(out.mean()), 400.0, abs_tol=1e-3)


def test_av_is_the_decoder():
    # Guard for the documented decode stack (the wheel bundles FFmpeg with libx264).
    assert "libx264" in av.codecs_available


def test_stream_that_changes_size_midway(tmp_path, nr_checkpoint):
    """Like an HLS rendition switch: batches split where the frame size changes."""
    first = media.make_clip(tmp_path / "a.ts", n_frames=6, width=96, height=64)
    second = media.make_clip(tmp_path / "b.ts", n_frames=6, width=64, height=48)
    # Transport-stream segments appended byte-wise, as a player appends HLS segments.
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    with open_video(joined) as reader:
        sizes = [(f.width, f.height) for f in reader]
    assert sizes[0] == (96, 64) and sizes[-1] == (64, 48)
    table = score_video(str(joined), weights=str(nr_checkpoint), device="cpu", batch_size=4).frames
    assert len(table) == len(sizes)
    assert np.isfinite(table["topiq_nr"]).all()


def test_url_secrets_are_masked_in_metadata():
    assert (
        redact_source("rtsp://admin:hunter2@cam.local:554/live?token=abc")
        == "rtsp://***@cam.local:554/live?***"
    )
    assert redact_source("udp://127.0.0.1:1234") == "udp://127.0.0.1:1234"
    assert redact_source("/videos/a?b.mp4") == "/videos/a?b.mp4"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start": float("nan")}, "start must be a finite"),
        ({"duration": float("inf")}, "duration must be a finite"),
        ({"sample_fps": float("inf")}, "sample_fps"),
        ({"offset": "inf"}, "offset must be a finite"),
        ({"offset": "nan"}, "offset must be a finite"),
        ({"max_offset": float("nan")}, "max_offset"),
        ({"max_offset": 1e9}, "max_offset"),
        ({"offset": 1e308}, "beyond any video"),
        ({"start": 1e308}, "beyond any video"),
        ({"duration": 1e308}, "beyond any video"),
    ],
)
def test_non_finite_options_are_refused(clips, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        score_video(str(clips["ref"]), str(clips["ref"]), metrics="psnr_y", **kwargs)


def test_huge_sample_rate_keeps_every_frame_and_ends(clips):
    table = score_video(
        str(clips["ref"]), str(clips["ref"]), metrics="psnr_y", offset=0, sample_fps=1e6
    ).frames
    assert list(table["frame"]) == list(range(60))


def test_auto_offset_refused_for_live_sources(clips, monkeypatch):
    from dataclasses import replace

    from topiq_video.video import reader

    real_describe = reader.describe
    monkeypatch.setattr(reader, "describe", lambda *a: replace(real_describe(*a), is_live=True))
    with pytest.raises(InvalidInputError, match="live stream: give the offset"):
        score_video(str(clips["ref"]), str(clips["ref"]), metrics="psnr_y")


def test_out_of_memory_in_a_batch_is_split_without_losing_frames(clips, monkeypatch, caplog):
    expected = score_video(str(clips["trimmed"]), str(clips["ref"]), metrics=LUMA, offset=0.48)
    original = ScoringRun._score_batch_once

    def flaky(self, batch):
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, batch)

    monkeypatch.setattr(ScoringRun, "_score_batch_once", flaky)
    with caplog.at_level("WARNING", logger="topiq_video"):
        table = score_video(
            str(clips["trimmed"]), str(clips["ref"]), metrics=LUMA, offset=0.48, batch_size=8
        ).frames
    assert list(table["frame"]) == list(expected.frames["frame"])
    assert np.array_equal(table["psnr_y"], expected.frames["psnr_y"])
    assert sum("memory with 8 frames per batch" in r.getMessage() for r in caplog.records) == 1


def _info(**changes):
    from dataclasses import replace

    from topiq_video.video.probe import ColorInfo, VideoInfo

    base = VideoInfo(
        source="x.mp4",
        container="mp4",
        codec="h264",
        width=1920,
        height=1080,
        pix_fmt="yuv420p",
        bit_depth=8,
        fps=__import__("fractions").Fraction(25),
        time_base=__import__("fractions").Fraction(1, 12800),
        start_time=0.0,
        duration=10.0,
        frame_count=250,
        color=ColorInfo("bt709", "limited", "bt709", "bt709", 8, False),
        rotation=0,
        scan_type="progressive",
        is_vfr=False,
        metadata={},
        is_live=False,
    )
    return replace(base, **changes)


def test_stream_mismatch_warnings():
    from topiq_video.video.probe import ColorInfo

    assert pipeline.compare_streams(_info(), _info()) == []
    pq = ColorInfo("bt2020", "limited", "pq", "bt2020", 10, False)
    checks = {
        "HDR": (_info(color=pq), _info()),
        "variable frame rate": (_info(is_vfr=True), _info()),
        "Frame rates differ": (_info(fps=__import__("fractions").Fraction(30)), _info()),
        "Resolutions differ": (_info(width=1280, height=720), _info()),
        "Durations differ": (_info(duration=12.5), _info()),
        "Scan types differ": (_info(scan_type="interlaced"), _info()),
    }
    for needle, (dist, ref) in checks.items():
        warnings = pipeline.compare_streams(dist, ref)
        assert len(warnings) == 1 and needle in warnings[0], (needle, warnings)
    # No reference: only the warnings about the input itself.
    assert len(pipeline.compare_streams(_info(color=pq), None)) == 1


# -- pairing that follows the picture, end to end ------------------------------------------


@pytest.mark.parametrize(
    ("convert", "out_fps", "convention"),
    [
        ("sample_and_hold", 30, "sample-and-hold"),
        ("ffmpeg_fps", 30, "nearest"),
        ("ffmpeg_fps", 24, "nearest"),
    ],
)
def test_converted_frame_rates_pair_with_the_source_picture(tmp_path, convert, out_fps, convention):
    """Each row's reference frame is the one its picture came from (>= 97 %), and the
    report names the conversion."""
    import conversions

    pictures = media.clip_frames_rgb(75, 160, 96, 25)
    source = conversions.encode_pictures(tmp_path / "src.mp4", pictures, 25)
    converted, truth = getattr(conversions, convert)(pictures, 25, out_fps)
    encode = conversions.encode_pictures(tmp_path / "enc.mp4", converted, out_fps)
    result = score_video(encode, source, metrics="psnr_y", offset=0)
    table = result.frames
    pairs = zip(table["frame"], table["ref_frame"], strict=True)
    right = np.mean([int(r) == truth[int(f)] for f, r in pairs])
    assert right >= 0.97, right
    assert result.report.alignment.pairing.conversion == convention


# -- review findings -------------------------------------------------------------------------


def test_max_frames_counts_scored_rows_not_decoded_ones(tmp_path):
    """An encode with 12 extra leading frames: max_frames=3 gives 3 paired rows."""
    ref = media.make_clip(tmp_path / "ref.mp4", n_frames=40, width=96, height=64)
    dist = media.make_clip(
        tmp_path / "dist.mp4", n_frames=52, width=96, height=64, time_offset=-12 / 25
    )
    result = score_video(dist, ref, metrics="psnr_y", max_frames=3)
    assert result.report.alignment.offset_frames == -12
    assert list(result.frames["frame"]) == [12, 13, 14]
    assert list(result.frames["ref_frame"]) == [0, 1, 2]


@pytest.mark.parametrize("n_frames", [1, 2, 3, 4])
def test_tiny_clips_compare_with_themselves(tmp_path, n_frames):
    clip = media.make_clip(tmp_path / "tiny.mp4", n_frames=n_frames, width=64, height=48)
    result = score_video(clip, clip, metrics=LUMA)
    assert len(result.frames) == n_frames
    assert np.isposinf(result.frames["psnr_y"]).all()


def test_png_reference_against_untagged_sd_video_uses_the_videos_matrix(tmp_path):
    """The RGB side's luma follows the video's (guessed BT.601) matrix: about 51 dB, not 28."""
    picture = media.clip_frames_rgb(1, 320, 180, 25)[0]
    png = tmp_path / "ref.png"
    with av.open(str(png), "w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    video = media.make_clip(tmp_path / "sd.mp4", n_frames=1, width=320, height=180, crf=4)
    result = score_video(video, png, metrics="psnr_y", offset=0)
    assert result.report.inputs["dist"].color.matrix == "bt601"
    assert result.report.inputs["dist"].color.guessed
    assert result.frames["psnr_y"].iloc[0] > 45


def test_a_run_opens_nothing_until_iterated_and_is_iterated_once(clips):
    before = {t.name for t in threading.enumerate()}
    run = ScoringRun(clips["ref"], clips["ref"], ScoreOptions(metrics=("psnr_y",), offset=0))
    assert {t.name for t in threading.enumerate()} == before  # no decoder yet
    rows = list(run)
    assert len(rows) == 60
    with pytest.raises(InvalidInputError, match="only once"):
        list(run)
    closed = ScoringRun(clips["ref"], clips["ref"], ScoreOptions(metrics=("psnr_y",), offset=0))
    closed.close()
    with pytest.raises(InvalidInputError, match="closed"):
        list(closed)


def test_an_error_mid_run_keeps_every_scored_row(clips, monkeypatch):
    from topiq_video.errors import ScoringInterrupted, VideoError

    original = ScoringRun._score_batch_once
    calls = {"n": 0}

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise VideoError("the decoder met garbage (simulated)")
        return original(self, batch)

    monkeypatch.setattr(ScoringRun, "_score_batch_once", failing)
    with pytest.raises(ScoringInterrupted, match="garbage.*16 frames scored") as err:
        score_video(clips["ref"], clips["ref"], metrics="psnr_y", offset=0, batch_size=8)
    result = err.value.result
    assert len(result.frames) == 16 and list(result.frames["frame"]) == list(range(16))
    assert result.interruption.kind == "error" and result.interruption.frames_scored == 16
    assert isinstance(err.value.__cause__, VideoError)


def test_rotation_applied_to_one_side_is_named(tmp_path):
    """A phone clip with rotation metadata against an unrotated source: the warning says
    rotation, not just "resolutions differ"."""
    ref = media.make_clip(tmp_path / "ref.mp4", n_frames=4, width=96, height=64)
    dist = media.make_clip(tmp_path / "rot.mp4", n_frames=4, width=96, height=64, rotation=90)
    result = score_video(dist, ref, metrics="psnr_y", offset=0)
    assert result.report.inputs["dist"].rotation == 90
    assert (result.report.inputs["dist"].width, result.report.inputs["dist"].height) == (64, 96)
    warning = next(w for w in result.warnings if "Rotation" in w)
    assert "distorted input by 90 degrees" in warning and "64x96 vs 96x64" in warning
    assert not any(w.startswith("Resolutions differ") for w in result.warnings)
