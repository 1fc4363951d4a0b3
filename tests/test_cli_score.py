"""`topiq-video score`: output tables, and clean errors for every kind of bad input."""

from __future__ import annotations

import time

import media
import pandas as pd
import pytest
from click.testing import CliRunner
from net import closed_port

from topiq_video.cli import cli


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_score")
    return {
        "ref": media.make_clip(d / "ref.mp4", n_frames=30, width=96, height=64),
        "dist": media.make_trimmed_clip(
            d / "dist.mp4", 4, n_frames=30, width=96, height=64, crf=32
        ),
        "long_mkv": media.make_clip(d / "long.mkv", n_frames=80, width=96, height=64),
        "long_ts": media.make_clip(d / "long.ts", n_frames=80, width=96, height=64),
    }


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_clean_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "Error:" in result.output
    for needle in needles:
        assert needle in result.output


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_score_writes_table(clips, tmp_path, suffix):
    out = tmp_path / f"frames{suffix}"
    result = invoke(
        "score",
        str(clips["dist"]),
        "--ref",
        str(clips["ref"]),
        "--metrics",
        "psnr_y,ssim_y",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    table = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": pd.read_json}[suffix](out)
    assert list(table.columns) == ["frame", "time", "ref_frame", "ref_time", "scene", "psnr_y"] + [
        "ssim_y"
    ]
    assert len(table) == 26
    assert (table["ref_frame"] - table["frame"] == 4).all()
    assert "offset +0.160 s (4 reference frames" in result.output


def test_score_csv_to_stdout_when_no_output(clips):
    result = invoke(
        "score",
        str(clips["ref"]),
        "--ref",
        str(clips["ref"]),
        "--metrics",
        "psnr_y",
        "--max-frames",
        "3",
    )
    assert result.exit_code == 0, result.output
    assert "frame,time,ref_frame,ref_time,scene,psnr_y" in result.output
    assert "0,0.0,0,0.0,0,inf" in result.output  # identical frames: +inf, never a silent 100


def test_score_offline_metrics_need_no_weights(clips, monkeypatch):
    # An unreachable mirror proves nothing is downloaded when no TOPIQ model is asked for.
    monkeypatch.setenv("TOPIQ_VIDEO_WEIGHTS_URL", "http://127.0.0.1:9/")
    result = invoke(
        "score", str(clips["dist"]), "--ref", str(clips["ref"]), "--metrics", "psnr_y,ssim_y"
    )
    assert result.exit_code == 0, result.output


def test_missing_weights_give_the_clear_message(clips, monkeypatch):
    monkeypatch.setenv("TOPIQ_VIDEO_WEIGHTS_URL", f"http://127.0.0.1:{closed_port()}")
    result = invoke("score", str(clips["dist"]))
    assert_clean_error(
        result,
        "cfanet_nr_koniq_res50-9a73138b.pth",
        "--weights",
        "TOPIQ_VIDEO_WEIGHTS_URL",
        "weights download",
    )


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: d / "missing.mp4", "does not exist"),
        (lambda d: d, "directory"),
        (lambda d: media.make_text_file(d / "notes.mp4"), "not a readable video"),
        (lambda d: media.make_audio_only(d / "sound.m4a"), "no video stream"),
        (lambda d: media.make_zero_frame_clip(d / "zero.mkv"), "No frame"),
    ],
)
def test_bad_inputs_exit_cleanly_offline_metrics(tmp_path, clips, make, needle):
    result = invoke(
        "score",
        str(make(tmp_path)),
        "--ref",
        str(clips["ref"]),
        "--metrics",
        "psnr_y",
        "--offset",
        "0",
    )
    assert_clean_error(result, needle)


def test_truncated_file_keeps_results_and_exits_zero(clips, tmp_path):
    cut = media.make_truncated_copy(clips["long_mkv"], tmp_path / "cut.mkv")
    out = tmp_path / "frames.csv"
    result = invoke(
        "score",
        str(cut),
        "--ref",
        str(clips["long_mkv"]),
        "--metrics",
        "psnr_y",
        "--offset",
        "0",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert 20 < len(table) < 80
    assert "stopped" in result.output.lower() or "truncat" in result.output.lower()


def test_corrupted_bytes_are_counted_and_scoring_goes_on(clips, tmp_path):
    bad = media.make_corrupted_copy(clips["long_ts"], tmp_path / "bad.ts")
    out = tmp_path / "frames.csv"
    result = invoke(
        "score",
        str(bad),
        "--ref",
        str(clips["long_ts"]),
        "--metrics",
        "psnr_y",
        "--offset",
        "0",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out)["frame"].max() > 70


def test_reference_shorter_than_encode(clips, tmp_path):
    short = media.make_clip(tmp_path / "short.mp4", n_frames=10, width=96, height=64)
    out = tmp_path / "frames.csv"
    result = invoke(
        "score",
        str(clips["ref"]),
        "--ref",
        str(short),
        "--metrics",
        "psnr_y",
        "--offset",
        "0",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 10


def test_unreachable_url_fails_fast_and_cleanly():
    t0 = time.monotonic()
    result = invoke("score", f"http://127.0.0.1:{closed_port()}/live.m3u8", "--metrics", "topiq_nr")
    assert time.monotonic() - t0 < 30
    assert_clean_error(result)


def test_traceback_only_with_debug(tmp_path, monkeypatch):
    monkeypatch.setenv("TOPIQ_VIDEO_DEBUG", "1")
    result = invoke("score", str(tmp_path / "missing.mp4"))
    assert result.exit_code != 0
    assert result.exception is not None and "does not exist" in str(result.exception)


def test_bad_output_format_is_refused_before_scoring(clips, tmp_path):
    t0 = time.monotonic()
    result = invoke(
        "score", str(clips["dist"]), "--ref", str(clips["ref"]), "-o", str(tmp_path / "x.xlsx")
    )
    assert_clean_error(result, "unknown table format", ".csv")
    assert time.monotonic() - t0 < 5
