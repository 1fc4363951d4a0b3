"""The CLI around a run: start-up, signals, rendering again, and errors that stay one line."""

from __future__ import annotations

import array
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import media
import pandas as pd
import pytest
from click.testing import CliRunner

from topiq_video.cli import cli

CLI = [sys.executable, "-m", "topiq_video.cli"]
HEAVY = ("torch", "av", "numpy", "pandas", "pydantic", "jinja2", "plotly", "pyarrow")


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TOPIQ_VIDEO_DEBUG", None)
    return env


@pytest.mark.parametrize(
    "args",
    [["--help"], ["report", "--help"], ["score", "x.mp4", "--every", "0"], ["score"]],
)
def test_help_and_argument_errors_load_nothing_heavy(args):
    """--help and argument errors answer before torch, PyAV or pandas are imported."""
    code = (
        "import sys\n"
        "from topiq_video.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_clean_env()
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_help_answers_quickly():
    """Start-up is measured as the fastest of a few runs (a shared CI machine is noisy)."""
    best = min(_timed(CLI + ["--help"]) for _ in range(3))
    print(f"topiq-video --help: {best:.3f} s")
    assert best < 1.0


def _timed(cmd: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(cmd, capture_output=True, timeout=60, check=True, env=_clean_env())
    return time.monotonic() - started


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_run")
    ref = media.make_clip(d / "ref.mkv", n_frames=40, width=96, height=64)
    dist = media.make_trimmed_clip(d / "dist.mkv", 2, n_frames=40, width=96, height=64, crf=34)
    return ref, dist


def test_render_makes_the_same_page_from_saved_files(pair, tmp_path):
    ref, dist = pair
    # Copies, deleted after the report: rendering again needs no video.
    ref_copy, dist_copy = tmp_path / "r.mkv", tmp_path / "d.mkv"
    ref_copy.write_bytes(ref.read_bytes())
    dist_copy.write_bytes(dist.read_bytes())
    out = tmp_path / "report"
    args = ["report", str(dist_copy), "--ref", str(ref_copy), "--metrics", "psnr_y,ssim_y"]
    result = CliRunner().invoke(cli, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    ref_copy.unlink()
    dist_copy.unlink()
    again = tmp_path / "again"
    result = CliRunner().invoke(cli, ["render", str(out / "report.json"), "-o", str(again)])
    assert result.exit_code == 0, result.output
    assert (again / "report.html").read_text() == (out / "report.html").read_text()
    assert (again / "frames.parquet").exists() and (again / "gallery").is_dir()
    # In place (the folder given instead of the file) works too.
    (out / "report.html").unlink()
    result = CliRunner().invoke(cli, ["render", str(out)])
    assert result.exit_code == 0 and (out / "report.html").exists(), result.output


def test_render_refuses_what_is_not_a_report(tmp_path):
    bogus = tmp_path / "report.json"
    bogus.write_text('{"schema": "something/else"}')
    result = CliRunner().invoke(cli, ["render", str(bogus)])
    assert result.exit_code == 1 and "Error:" in result.output and "schema" in result.output


def _wait_until_idle(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``proc`` has read all of its stdin and stopped using the CPU: it has
    scored what came and waits for more (a fixed sleep fails on a loaded machine)."""
    import fcntl
    import termios

    def cpu_ticks() -> int:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    deadline = time.monotonic() + timeout
    buffered = array.array("i", [0])
    last, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        fcntl.ioctl(proc.stdin.fileno(), termios.FIONREAD, buffered)
        ticks = cpu_ticks()
        if ticks != last or buffered[0] > 0:
            last, still_since = ticks, time.monotonic()
        elif time.monotonic() - still_since > 2.0:
            return
        time.sleep(0.25)
    raise AssertionError("the run never went idle")


def test_sigterm_writes_what_was_scored(tmp_path):
    """systemd, Docker and `timeout` send SIGTERM: the report is written, marked as
    terminated, and the exit status is 143."""
    ref = media.make_clip(tmp_path / "ref.mkv", n_frames=250, width=64, height=48)
    live = media.make_clip(tmp_path / "live.ts", n_frames=200, width=64, height=48)
    out = tmp_path / "report"
    proc = subprocess.Popen(
        [*CLI, "report", "pipe:", "--ref", str(ref), "--metrics", "psnr_y", "--offset", "0"]
        + ["--timeout", "60", "-o", str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_clean_env(),
    )
    # The whole clip, then silence with the pipe left open: the run waits for more.
    proc.stdin.write(live.read_bytes())
    proc.stdin.flush()
    _wait_until_idle(proc)
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr.decode()
    doc = json.loads((out / "report.json").read_text())
    assert doc["interruption"]["kind"] == "terminated"
    frames = pd.read_parquet(out / "frames.parquet")
    # Frames still in the decoder or an unfinished batch when the signal came are not scored.
    assert 150 < len(frames) == doc["interruption"]["frames_scored"] <= 200
    assert (out / "report.html").exists()
    assert b"Traceback" not in stderr


def test_a_stream_lost_midway_is_not_a_silent_success(pair, tmp_path):
    """A pipe that stops sending: what came is scored and written, the loss is reported
    and the exit status says the output is incomplete."""
    ref, _ = pair
    live = media.make_clip(tmp_path / "live.ts", n_frames=40, width=96, height=64)
    data = live.read_bytes()
    out = tmp_path / "frames.csv"
    proc = subprocess.Popen(
        [*CLI, "score", "pipe:", "--ref", str(ref), "--metrics", "psnr_y", "--offset", "0"]
        + ["--timeout", "1", "-o", str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_clean_env(),
    )
    proc.stdin.write(data[: len(data) * 2 // 3])
    proc.stdin.flush()
    try:
        _, stderr = proc.communicate(timeout=60)  # stdin stays open: no end of file
    finally:
        proc.kill()
    assert proc.returncode == 3, stderr.decode()
    assert b"was lost" in stderr and b"frames" in stderr
    assert 0 < len(pd.read_csv(out)) < 40


def test_a_file_name_that_is_not_utf8_still_gets_its_report(pair, tmp_path):
    ref, dist = pair
    odd = os.fsencode(tmp_path) + b"/caf\xe9-\xff.mkv"
    with open(odd, "wb") as fh:
        fh.write(dist.read_bytes())
    name = os.fsdecode(odd)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli, ["report", name, "--ref", str(ref), "--metrics", "psnr_y", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert doc["inputs"]["dist"]["path"].endswith("caf\ufffd-\ufffd.mkv")
    assert "caf\ufffd-\ufffd.mkv" in (out / "report.html").read_text(encoding="utf-8")


def test_binary_cut_list_is_a_clean_error_before_scoring(pair, tmp_path):
    ref, dist = pair
    cuts = tmp_path / "cuts.csv"
    cuts.write_bytes(bytes(range(256)) * 4)
    started = time.monotonic()
    result = CliRunner().invoke(
        cli, ["report", str(dist), "--ref", str(ref), "--metrics", "psnr_y", "--scenes", str(cuts)]
    )
    assert result.exit_code == 1 and "not a text cut list" in result.output
    assert "Traceback" not in result.output
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--offset", "1e308"], "beyond any video"),
        (["--start", "1e308"], "beyond any video"),
        (["--duration", "1e308"], "beyond any video"),
        (["--scale-to", "100000x100000"], "max_pixels"),
        (["--model", "foo"], "Unknown model 'foo'"),
        (["--start", "100"], "past the end"),
    ],
)
def test_impossible_values_are_one_line_errors(pair, args, needle):
    ref, dist = pair
    result = CliRunner().invoke(
        cli, ["score", str(dist), "--ref", str(ref), "--metrics", "psnr_y", *args]
    )
    assert result.exit_code == 1, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_unwritable_outputs_are_refused_before_scoring(pair):
    ref, dist = pair
    started = time.monotonic()
    for args in (["score", "-o", "/proc/x.csv"], ["report", "-o", "/proc/topiq-report"]):
        result = CliRunner().invoke(
            cli, [args[0], str(dist), "--ref", str(ref), "--metrics", "psnr_y", *args[1:]]
        )
        assert result.exit_code == 1 and "Cannot write" in result.output, result.output
        assert "Errno" not in result.output and "Traceback" not in result.output
    assert time.monotonic() - started < 10


def test_memory_and_os_errors_become_messages(pair, monkeypatch):
    from topiq_video.pipeline import run as run_module

    ref, dist = pair

    def out_of_memory(self, batch):
        raise MemoryError()

    monkeypatch.setattr(run_module.ScoringRun, "_score_batch_once", out_of_memory)
    result = CliRunner().invoke(
        cli, ["score", str(dist), "--ref", str(ref), "--metrics", "psnr_y", "--offset", "0"]
    )
    assert result.exit_code == 1 and "Out of memory" in result.output
    assert "Traceback" not in result.output


def test_an_interrupted_library_report_is_written_then_raised(pair, tmp_path, monkeypatch):
    from topiq_video.errors import ScoringInterrupted, VideoError
    from topiq_video.pipeline import run as run_module
    from topiq_video.report.build import build_report

    ref, dist = pair
    original = run_module.ScoringRun._score_batch_once
    calls = {"n": 0}

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise VideoError("connection reset (simulated)")
        return original(self, batch)

    monkeypatch.setattr(run_module.ScoringRun, "_score_batch_once", failing)
    with pytest.raises(ScoringInterrupted) as err:
        build_report(dist, ref, tmp_path / "r", metrics="psnr_y", offset=0, batch_size=4)
    assert err.value.written == tmp_path / "r"
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["interruption"]["kind"] == "error" and doc["frames"]["count"] == 4
    assert (tmp_path / "r" / "report.html").exists()
    assert Path(err.value.written).is_dir()
