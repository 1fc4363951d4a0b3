"""VMAF and XPSNR from FFmpeg on the pipeline's own pairs, checked against FFmpeg itself.

The oracle is the same FFmpeg binary (the ``vmaf`` extra's) run directly: on the two files
when they pair frame for frame, and on files holding exactly the pairs the pipeline made
when they do not (a trimmed start, another resolution).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch
from media import make_10bit_clip, make_clip, make_trimmed_clip

from topiq_video import score_video
from topiq_video.errors import DependencyError, InvalidInputError, ScoringInterrupted
from topiq_video.pipeline.options import VMAF_MODEL_NAMES, ScoreOptions
from topiq_video.pipeline.run import _resize_luma
from topiq_video.vmaf import (
    VMAF_MODELS,
    FFmpegMetrics,
    ffmpeg_executable,
    read_xpsnr_log,
    shifted_harmonic_mean,
)

FFMPEG = ffmpeg_executable()
TOLERANCE = 1e-3  # what the README claims; the values agree to libvmaf's printed digits
ALL = ("vmaf", "vmaf_neg", "xpsnr_y")


def ffmpeg_direct(dist: Path, ref: Path, tmp: Path, *, model: str = "vmaf_v0.6.1",
                  inputs: list[str] | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """libvmaf (the model and NEG) and xpsnr run by FFmpeg on two inputs, no help from us."""
    spec = VMAF_MODELS[model].replace(":", "\\\\:")
    neg = VMAF_MODELS["vmaf_v0.6.1neg"]
    graph = (
        "[0:v]split[d1][d2];[1:v]split[r1][r2];"
        f"[d1][r1]libvmaf=log_path=oracle.json:log_fmt=json:model={spec}\\\\:name=vmaf|"
        f"{neg}\\\\:name=vmaf_neg[o1];[d2][r2]xpsnr=stats_file=oracle_xpsnr.txt[o2]"
    )
    args = inputs or ["-i", str(dist), "-i", str(ref)]
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", *args, "-filter_complex", graph,
         "-map", "[o1]", "-f", "null", "-", "-map", "[o2]", "-f", "null", "-"],
        cwd=tmp, check=True,
    )  # fmt: skip
    log = json.loads((tmp / "oracle.json").read_text())
    frames = sorted(log["frames"], key=lambda f: f["frameNum"])
    return {
        "vmaf": np.array([f["metrics"]["vmaf"] for f in frames]),
        "vmaf_neg": np.array([f["metrics"]["vmaf_neg"] for f in frames]),
        "xpsnr_y": read_xpsnr_log(tmp / "oracle_xpsnr.txt"),
        "pooled_vmaf_hm": np.array(log["pooled_metrics"]["vmaf"]["harmonic_mean"]),
    }


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("vmaf")
    ref = make_clip(folder / "ref.mkv", n_frames=40, crf=12)
    dist = make_clip(folder / "dist.mkv", n_frames=40, crf=40)
    return dist, ref


def test_vmaf_and_xpsnr_equal_ffmpeg_on_the_files(pair, tmp_path):
    dist, ref = pair
    result = score_video(dist, ref, metrics=("psnr_y", *ALL), offset=0)
    oracle = ffmpeg_direct(dist, ref, tmp_path)
    frames = result.frames
    assert len(frames) == 40 and (frames["ref_frame"] == frames["frame"]).all()
    for name in ALL:
        ours = frames[name].to_numpy()
        assert np.isfinite(ours).all()
        np.testing.assert_allclose(ours, oracle[name], rtol=0, atol=TOLERANCE, err_msg=name)
    # VMAF's own pooling beside ours, as libvmaf pools it.
    stats = result.report.summary["vmaf"]
    assert stats.shifted_harmonic_mean == pytest.approx(float(oracle["pooled_vmaf_hm"]), abs=1e-3)
    assert stats.harmonic_mean == pytest.approx(len(ours) / np.sum(1 / frames["vmaf"]), rel=1e-12)
    assert stats.harmonic_mean < stats.mean
    assert result.report.summary["psnr_y"].shifted_harmonic_mean is None
    described = {m.name: m.description for m in result.report.metrics}
    assert "vmaf_v0.6.1" in described["vmaf"]


@pytest.mark.parametrize("model", ["vmaf_4k_v0.6.1", "vmaf_v0.6.1_phone"])
def test_the_vmaf_model_is_the_one_asked_for(pair, tmp_path, model):
    dist, ref = pair
    result = score_video(dist, ref, metrics=("vmaf",), offset=0, vmaf_model=model)
    oracle = ffmpeg_direct(dist, ref, tmp_path, model=model)
    default = score_video(dist, ref, metrics=("vmaf",), offset=0).frames["vmaf"].to_numpy()
    ours = result.frames["vmaf"].to_numpy()
    np.testing.assert_allclose(ours, oracle["vmaf"], rtol=0, atol=TOLERANCE)
    assert np.abs(ours - default).mean() > 1.0  # another model, other scores
    assert model in result.report.metrics[0].description


def test_every_model_name_is_known_to_libvmaf_table():
    assert set(VMAF_MODELS) == set(VMAF_MODEL_NAMES)
    with pytest.raises(InvalidInputError, match="vmaf_4k_v0.6.1"):
        ScoreOptions(vmaf_model="vmaf_v9")


def _raw_planes(path: Path, out: Path) -> Path:
    """A decoded clip's planes written tightly (no row padding) as raw video."""
    with av.open(str(path)) as container, open(out, "wb") as sink:
        for frame in container.decode(video=0):
            for plane in frame.planes:
                samples = np.frombuffer(plane, np.uint16).reshape(plane.height, -1)
                sink.write(samples[:, : plane.width].tobytes())
    return out


def test_ten_bit_pairs_reach_ffmpeg_at_ten_bits(tmp_path):
    ref = make_10bit_clip(tmp_path / "ref10.mkv", n_frames=20, width=90, height=50, crf=10)
    dist = make_10bit_clip(tmp_path / "dist10.mkv", n_frames=20, width=90, height=50, crf=38)
    result = score_video(dist, ref, metrics=ALL, offset=0)
    oracle = ffmpeg_direct(dist, ref, tmp_path)
    for name in ("vmaf", "vmaf_neg"):
        np.testing.assert_allclose(
            result.frames[name].to_numpy(), oracle[name], rtol=0, atol=TOLERANCE, err_msg=name
        )
    # FFmpeg 9.0.2's xpsnr misreads 10-bit frames whose rows are padded, as decoded frames
    # are (it reports negative dB on them): its oracle reads the same planes packed tightly.
    raw = ["-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", "90x50", "-framerate", "25", "-i"]
    packed = ffmpeg_direct(dist, ref, tmp_path, inputs=[
        *raw, str(_raw_planes(dist, tmp_path / "d.yuv")),
        *raw, str(_raw_planes(ref, tmp_path / "r.yuv")),
    ])  # fmt: skip
    np.testing.assert_allclose(
        result.frames["xpsnr_y"].to_numpy(), packed["xpsnr_y"], rtol=0, atol=TOLERANCE
    )
    assert (result.frames["xpsnr_y"] > 0).all()
    np.testing.assert_allclose(packed["vmaf"], oracle["vmaf"], atol=TOLERANCE)


def _luma(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray()[: f.height].copy() for f in container.decode(video=0)]


def _write_raw(path: Path, planes: list[np.ndarray]) -> None:
    """Planes as raw yuv420p with neutral chroma: what FFmpeg reads as a plain input."""
    with open(path, "wb") as out:
        for y in planes:
            h, w = y.shape
            out.write(y.astype(np.uint8).tobytes())
            out.write(np.full(2 * ((h + 1) // 2) * ((w + 1) // 2), 128, np.uint8).tobytes())


def test_a_trimmed_rescaled_encode_is_scored_on_the_pipelines_pairs(tmp_path):
    ref = make_clip(tmp_path / "ref.mkv", n_frames=60, crf=12)
    # The encode starts 8 frames in and is a half-size rung of the ladder.
    dist = make_trimmed_clip(
        tmp_path / "dist.mkv", 8, n_frames=60, width=80, height=44, render_factor=2, crf=30
    )
    result = score_video(dist, ref, metrics=ALL)
    frames = result.frames
    assert (frames["ref_frame"].to_numpy() == frames["frame"].to_numpy() + 8).all()

    # The pairs the pipeline made: each encode frame scaled to the source's size (as the
    # pipeline scales) beside the source frame it was paired with.
    dist_y, ref_y = _luma(dist), _luma(ref)
    scaled = _resize_luma(torch.tensor(np.stack(dist_y)).float(), (160, 90), 8, 8).numpy()
    paired_ref = [ref_y[i] for i in frames["ref_frame"].to_numpy()]
    _write_raw(tmp_path / "dist.yuv", list(scaled[frames["frame"].to_numpy()]))
    _write_raw(tmp_path / "ref.yuv", paired_ref)
    raw = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "160x90", "-framerate", "25", "-i"]
    oracle = ffmpeg_direct(dist, ref, tmp_path, inputs=[*raw, "dist.yuv", *raw, "ref.yuv"])
    for name in ALL:
        np.testing.assert_allclose(
            frames[name].to_numpy(), oracle[name], rtol=0, atol=TOLERANCE, err_msg=name
        )

    # Naive frame-index pairs (what a tool without alignment would score) differ a lot.
    _write_raw(tmp_path / "naive_ref.yuv", ref_y[: len(scaled)])
    _write_raw(tmp_path / "naive_dist.yuv", list(scaled))
    naive = ffmpeg_direct(
        dist, ref, tmp_path, inputs=[*raw, "naive_dist.yuv", *raw, "naive_ref.yuv"]
    )
    assert frames["vmaf"].mean() - naive["vmaf"].mean() > 10


def test_compare_scores_each_encode_like_score(pair, tmp_path):
    from topiq_video import compare_encodes

    dist, ref = pair
    other = make_clip(tmp_path / "other.mkv", n_frames=40, crf=28)
    result = compare_encodes(ref, [dist, other], metrics=("vmaf", "xpsnr_y"), offset=0)
    for path in (dist, other):
        oracle = ffmpeg_direct(path, ref, tmp_path)
        rows = result.frames[result.frames["encode"] == path.stem].sort_values("frame")
        for name in ("vmaf", "xpsnr_y"):
            np.testing.assert_allclose(rows[name].to_numpy(), oracle[name], atol=TOLERANCE)
    means = result.frames.groupby("encode")["vmaf"].mean()
    assert means["other"] > means["dist"]  # CRF 28 beats CRF 40


def _ffmpeg_children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        # The scoring process reads the pairs from its standard input (not the probe).
        if (
            ppid == pid
            and b"ffmpeg" in Path(os.fsdecode(command[0])).name.encode()
            and (b"pipe:0" in command)
        ):
            out.append(int(entry.name))
    return out


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_ctrl_c_leaves_no_ffmpeg_behind(tmp_path):
    ref, dist = tmp_path / "ref.mkv", tmp_path / "dist.mkv"
    for path, crf in ((ref, 10), (dist, 40)):
        subprocess.run(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
             "testsrc2=s=480x270:r=25:d=240", "-c:v", "libx264", "-preset", "ultrafast",
             "-crf", str(crf), str(path)],
            check=True,
        )  # fmt: skip
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "topiq_video", "report", str(dist), "--ref", str(ref),
         "--metrics", "psnr_y,vmaf,xpsnr_y", "--offset", "0", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        children: list[int] = []
        deadline = time.monotonic() + 60
        while not children and time.monotonic() < deadline and proc.poll() is None:
            children = _ffmpeg_children(proc.pid)
            time.sleep(0.1)
        assert children, "FFmpeg never started"
        time.sleep(2.0)  # let some frames through
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in children), f"FFmpeg {children} outlived Ctrl-C"
    # What was scored before Ctrl-C is written, VMAF included (FFmpeg had it).
    assert (out / "frames.parquet").exists(), stderr
    frames = pd.read_parquet(out / "frames.parquet")
    assert 0 < len(frames) < 6000
    assert frames["vmaf"].notna().mean() > 0.9


def test_a_library_interrupt_stops_ffmpeg(pair):
    dist, ref = pair
    seen: list[int] = []

    def stop(row):
        seen.extend(_ffmpeg_children(os.getpid()))
        if row.frame == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        score_video(dist, ref, metrics=("vmaf",), offset=0, on_frame=stop)
    assert seen and all(_gone(pid) for pid in set(seen))
    partial = caught.value.partial_result
    assert 20 <= len(partial.frames) < 40


def test_ffmpeg_errors_come_with_its_own_words(pair, monkeypatch):
    dist, ref = pair
    monkeypatch.setitem(VMAF_MODELS, "vmaf_v0.6.1", "version=no_such_model")
    with pytest.raises(ScoringInterrupted) as caught:
        score_video(dist, ref, metrics=("psnr_y", "vmaf"), offset=0)
    message = str(caught.value)
    assert "FFmpeg" in message and "no_such_model" in message
    # What was computed before FFmpeg's failure was seen is kept: PSNR, no VMAF.
    frames = caught.value.result.frames
    assert len(frames) and frames["psnr_y"].notna().all() and frames["vmaf"].isna().all()


def test_a_crashed_ffmpeg_is_an_error_not_a_silent_nan(pair):
    dist, ref = pair

    def crash(row):
        if row.frame == 10:
            for pid in _ffmpeg_children(os.getpid()):
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(ScoringInterrupted, match="SIGKILL"):
        score_video(dist, ref, metrics=("psnr_y", "vmaf"), offset=0, on_frame=crash)


def test_tiny_pictures_are_refused_before_libvmaf_crashes():
    metrics = FFmpegMetrics(["vmaf"], vmaf_model="vmaf_v0.6.1", rate=25)
    with metrics, pytest.raises(InvalidInputError, match="17x17"):
        metrics.feed(torch.zeros(2, 16, 64), torch.zeros(2, 16, 64), 8)


def test_without_the_extra_the_error_names_it(pair):
    dist, ref = pair
    code = (
        "import sys; sys.modules['imageio_ffmpeg'] = None\n"
        "from topiq_video.cli import main\n"
        f"sys.argv = ['topiq-video', 'score', {str(dist)!r}, '--ref', {str(ref)!r}, "
        "'--metrics', 'vmaf', '--offset', '0']\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "pip install 'topiq-video[vmaf]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_the_extra_the_library_raises_before_decoding(pair, monkeypatch):
    dist, ref = pair
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(DependencyError, match=r"topiq-video\[vmaf\]"):
        score_video(dist, ref, metrics=("xpsnr_y",), offset=0)


def test_shifted_harmonic_mean_is_libvmafs():
    values = np.array([90.0, 10.0, np.nan])
    assert shifted_harmonic_mean(values) == pytest.approx(2 / (1 / 91 + 1 / 11) - 1)
    assert shifted_harmonic_mean(np.array([np.nan])) is None
