"""`topiq-video report` end to end: scenes, pooled statistics, the files, and the page."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import media
import numpy as np
import pandas as pd
import pytest
from browser import Browser, browser_available
from click.testing import CliRunner

from topiq_video.cli import cli
from topiq_video.report.build import default_report_dir
from topiq_video.result import shipped_schema as load_schema

EVIL = "<script>alert(1)</script>"
STATS = ("mean", "harmonic_mean", "min", "p1", "p5", "p10", "median", "max", "std")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    common = {"n_frames": 60, "width": 128, "height": 72, "cuts": (20, 41)}
    ref = media.make_clip(d / "source.mp4", **common)
    # A title tag and a file path that try to inject script into the page (a file name
    # cannot hold "/", so the path spells it across a folder: .../<script>alert(1)</script>.mp4).
    (d / "<script>alert(1)<").mkdir()
    dist = media.make_trimmed_clip(
        d / "<script>alert(1)<" / "script>.mp4", 3, crf=36, metadata={"title": EVIL}, **common
    )
    assert f"{EVIL}.mp4" in str(dist)
    return ref, dist


@pytest.fixture(scope="module")
def fr_report(pair, tmp_path_factory):
    ref, dist = pair
    out = tmp_path_factory.mktemp("fr_report")
    result = CliRunner().invoke(
        cli, ["report", str(dist), "--ref", str(ref), "--metrics", "psnr_y,ssim_y", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def _recompute(values: np.ndarray) -> dict[str, float | None]:
    finite = values[np.isfinite(values)]
    return {
        "mean": finite.mean(),
        "harmonic_mean": len(finite) / np.sum(1.0 / finite)
        if finite.size and finite.min() > 0 and finite.max() <= 1
        else None,
        "min": finite.min(),
        "p1": np.percentile(finite, 1),
        "p5": np.percentile(finite, 5),
        "p10": np.percentile(finite, 10),
        "median": np.median(finite),
        "max": finite.max(),
        "std": finite.std(),
    }


def test_report_files_and_schema(fr_report):
    out, output = fr_report
    names = {p.name for p in out.iterdir()}
    assert names >= {"report.html", "report.json", "frames.csv", "frames.parquet", "gallery"}
    doc = json.loads((out / "report.json").read_text())
    jsonschema.validate(doc, load_schema())
    assert doc["schema"] == "topiq-video/report@2"
    assert doc["alignment"]["offset_frames"] == 3
    assert doc["models"] == []  # PSNR/SSIM only: no weights involved
    assert doc["frames"] == {
        "file": "frames.parquet",
        "count": 57,
        "columns": ["frame", "time", "ref_frame", "ref_time", "scene", "scene_score"]
        + ["psnr_y", "ssim_y"],
    }
    assert "psnr_y" in output and "ssim_y" in output  # the printed summary table


def test_report_numbers_equal_recomputation_from_frames_csv(fr_report):
    out, _ = fr_report
    doc = json.loads((out / "report.json").read_text())
    frames = pd.read_csv(out / "frames.csv")
    assert frames.equals(pd.read_parquet(out / "frames.parquet").astype(frames.dtypes.to_dict()))
    assert len(frames) == doc["frames"]["count"] == 57
    for metric in ("psnr_y", "ssim_y"):
        expected = _recompute(frames[metric].to_numpy())
        summary = doc["summary"][metric]
        assert summary["count"] == len(frames)
        for key in STATS:
            if expected[key] is None:
                assert summary[key] is None
            else:
                assert summary[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12)
        for scene in doc["scenes"]:
            rows = frames[frames["scene"] == scene["index"]]
            assert scene["stats"][metric]["count"] == len(rows) == scene["frame_count"]
            assert scene["stats"][metric]["mean"] == pytest.approx(rows[metric].mean(), rel=1e-9)
        worst = [w["frame"] for w in doc["worst_frames"][metric]]
        assert worst == list(frames.sort_values([metric, "frame"])["frame"][: len(worst)])


def test_scene_cuts_come_from_the_source(fr_report):
    out, _ = fr_report
    doc = json.loads((out / "report.json").read_text())
    assert doc["scene_source"] == "reference"
    # The source cuts at its frames 20 and 41; the encode dropped its first 3 frames.
    assert [s["start_frame"] for s in doc["scenes"]] == [0, 17, 38]
    assert doc["scenes"][-1]["end_frame"] == 56


def test_html_escapes_untrusted_strings(fr_report):
    out, _ = fr_report
    html = (out / "report.html").read_text()
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.browser
@pytest.mark.skipif(not browser_available(), reason="headless Chromium is not installed")
def test_report_page_renders_without_errors(fr_report):
    out, _ = fr_report
    with Browser(width=1280, height=900) as browser:
        browser.open(out / "report.html")
        state = browser.wait_for("document.documentElement.getAttribute('data-rendered')")
        assert state == "true", browser.log.errors
        assert (
            browser.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length") >= 3
        )
        assert EVIL in browser.evaluate("document.body.innerText")  # shown as text
        assert browser.log.dialogs == []
        assert browser.log.errors == []
        for url in browser.log.requests:
            assert url.startswith(("file://", "data:")), url


def test_scene_options(pair, tmp_path):
    ref, dist = pair
    cuts = tmp_path / "cuts.txt"
    cuts.write_text("# cuts of the source, in its frames\n30\n")
    runner = CliRunner()
    base = ["report", str(dist), "--ref", str(ref), "--metrics", "psnr_y", "--offset", "0.12"]
    result = runner.invoke(cli, [*base, "--scenes", str(cuts), "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "a" / "report.json").read_text())
    assert doc["scene_source"] == "file"
    assert [s["start_frame"] for s in doc["scenes"]] == [0, 27]
    result = runner.invoke(cli, [*base, "--no-scenes", "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "b" / "report.json").read_text())
    assert doc["scene_source"] == "none" and len(doc["scenes"]) == 1
    result = runner.invoke(cli, [*base, "--no-scenes", "--scenes", str(cuts)])
    assert result.exit_code != 0 and "contradict" in result.output


def test_nr_report_with_standin_weights(tmp_path, nr_checkpoint):
    clip = media.make_clip(tmp_path / "clip.mp4", n_frames=8, width=64, height=48)
    result = CliRunner().invoke(
        cli,
        [
            "report",
            str(clip),
            "--weights",
            str(nr_checkpoint),
            "--device",
            "cpu",
            "-o",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    jsonschema.validate(doc, load_schema())
    assert doc["scene_source"] == "input"
    assert doc["models"][0]["name"] == "topiq_nr" and len(doc["models"][0]["sha256"]) == 64
    assert doc["summary"]["topiq_nr"]["count"] == 8


def test_default_report_dir():
    assert str(default_report_dir("clips/encoded.mp4")) == "reports/encoded"
    assert str(default_report_dir("rtsp://cam.local:554/live/main")) == "reports/main"
    assert str(default_report_dir("udp://127.0.0.1:1234")) == "reports/127.0.0.1"


SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.mark.browser
@pytest.mark.skipif(not browser_available(), reason="headless Chromium is not installed")
def test_sample_report_renders(tmp_path):
    """The README's main job on the bundled samples (PSNR/SSIM: no weights needed here)."""
    result = CliRunner().invoke(
        cli,
        [
            "report",
            str(SAMPLES / "encoded.mp4"),
            "--ref",
            str(SAMPLES / "source.mp4"),
            "--metrics",
            "psnr_y,ssim_y",
            "-o",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(doc, load_schema())
    assert doc["alignment"]["offset_frames"] == 5  # make_samples.py drops 5 frames
    assert doc["alignment"]["scaling"].startswith("distorted 480x270 -> 640x360")
    assert doc["frames"]["count"] == 127 and doc["scenes"][0]["end_frame"] == 126
    assert "Blender Foundation" in (doc.get("credits") or "")
    with Browser(width=1280, height=900) as browser:
        browser.open(tmp_path / "report.html")
        state = browser.wait_for("document.documentElement.getAttribute('data-rendered')")
        assert state == "true", browser.log.errors
        assert (
            browser.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length") >= 4
        )
        assert browser.evaluate("document.querySelectorAll('img').length") >= 8
        assert browser.log.errors == []


def test_scene_end_times_are_exclusive(fr_report):
    out, _ = fr_report
    doc = json.loads((out / "report.json").read_text())
    scenes = doc["scenes"]
    for scene, following in zip(scenes, scenes[1:], strict=False):
        assert scene["end_time"] == pytest.approx(following["start_time"])
    last_time = pd.read_parquet(out / "frames.parquet")["time"].iloc[-1]
    assert scenes[-1]["end_time"] == pytest.approx(last_time + 1 / 25)


def test_offset_search_curve_is_drawn_in_seconds(fr_report):
    from topiq_video.report.figures import search_figure
    from topiq_video.result import ScoreResult

    out, _ = fr_report
    alignment = ScoreResult.load(out).report.alignment
    offsets = np.array(alignment.search.offsets)
    costs = np.array([np.inf if c is None else c for c in alignment.search.costs])
    assert offsets[np.argmin(costs)] == pytest.approx(alignment.offset_seconds)
    figure = search_figure(alignment)
    assert figure.layout["shapes"][0]["x0"] == pytest.approx(alignment.offset_seconds)


def test_cuts_survive_a_start_midway(pair, tmp_path):
    """min_scene_len must not swallow a source cut 5 frames after a mid-stream start."""
    ref, dist = pair
    result = CliRunner().invoke(
        cli,
        ["report", str(dist), "--ref", str(ref), "--metrics", "psnr_y", "--offset", "0.12"]
        + ["--start", "0.48", "-o", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    frames = pd.read_parquet(tmp_path / "frames.parquet")
    doc = json.loads((tmp_path / "report.json").read_text())
    assert frames["ref_frame"].iloc[0] == 15
    # Source cuts at 20 and 41 are distorted frames 17 and 38.
    assert [s["start_frame"] for s in doc["scenes"]] == [12, 17, 38]


def test_nr_warnings_validate_and_show(tmp_path, nr_checkpoint):
    clip = media.make_clip(tmp_path / "long.mkv", n_frames=40, width=64, height=48)
    cut = media.make_truncated_copy(clip, tmp_path / "cut.mkv")
    result = CliRunner().invoke(
        cli, ["report", str(cut), "--weights", str(nr_checkpoint), "-o", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    jsonschema.validate(doc, load_schema())
    assert any("stopped decoding at frame" in w for w in doc["warnings"])
    html = (tmp_path / "r" / "report.html").read_text()
    assert "stopped decoding at frame" in html


def test_negative_counts_are_refused_before_scoring(pair):
    ref, dist = pair
    for option in ("--gallery", "--worst"):
        result = CliRunner().invoke(cli, ["report", str(dist), "--ref", str(ref), option, "-1"])
        assert result.exit_code == 2 and "Invalid value" in result.output


SHARED_CLIP = Path(__file__).resolve().parents[2] / "shared" / "media" / "cockatoo_720p_yuv444.mp4"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CLIP.exists(), reason="needs ../shared/media (not part of the repo)")
def test_continuous_shot_with_heavy_motion_has_no_cut():
    """Handheld footage where a naive detector fires near frames 134 and 157."""
    from topiq_video.pipeline.options import ScoreOptions
    from topiq_video.pipeline.run import ScoringRun

    run = ScoringRun(
        str(SHARED_CLIP),
        str(SHARED_CLIP),
        ScoreOptions(metrics=("psnr_y",), offset=0, detect_scenes=True),
    )
    assert sum(1 for _ in run) == 280
    assert run.cuts == []
    assert np.nanmax(list(run.content_scores.values())) < ScoreOptions().scene_threshold
