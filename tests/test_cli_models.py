"""CLI: `models`, `weights download|verify`, and the one-line error handling."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from net import closed_port

from topiq_video import __version__
from topiq_video.cli import cli
from topiq_video.model.registry import get_checkpoint, list_checkpoints
from topiq_video.model.weights import ENV_WEIGHTS_URL, weights_dir

FR = get_checkpoint("topiq_fr")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner) -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_models_lists_registry_and_terms(runner) -> None:
    result = runner.invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    for info in list_checkpoints():
        assert info.name in result.output and info.train_set in result.output
    assert "shorter side 384px" in result.output
    assert "non-commercial" in result.output and "Chaofeng Chen" in result.output


def test_error_is_one_line_without_traceback(runner) -> None:
    result = runner.invoke(cli, ["weights", "download", "topiq-nr"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Unknown model 'topiq-nr'")
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_debug_env_shows_traceback(tmp_path) -> None:
    env = {**os.environ, "TOPIQ_VIDEO_DEBUG": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(
        [sys.executable, "-m", "topiq_video.cli", "weights", "download", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "InvalidInputError" in proc.stderr


def test_download_verify_cycle(runner, weights_server, fr_checkpoint, monkeypatch) -> None:
    weights_server.files[FR.filename] = fr_checkpoint
    monkeypatch.setenv(ENV_WEIGHTS_URL, weights_server.url)
    result = runner.invoke(cli, ["weights", "download", "topiq_fr", "--progress"])
    assert result.exit_code == 0, result.output
    assert "topiq_fr: downloaded" in result.stdout and "100%" in result.stderr

    listed = runner.invoke(cli, ["models"])
    fr_row = next(line for line in listed.stdout.splitlines() if line.startswith("topiq_fr "))
    assert fr_row.rstrip().endswith("yes")

    ok = runner.invoke(cli, ["weights", "verify", "topiq_fr", "topiq_nr"])
    assert ok.exit_code == 0, ok.output
    assert "topiq_fr: ok" in ok.stdout and "topiq_nr: missing" in ok.stdout

    cached = weights_dir() / FR.filename
    with open(cached, "r+b") as fh:
        fh.write(b"\0" * 64)
    bad = runner.invoke(cli, ["weights", "verify"])
    assert bad.exit_code == 1
    assert "topiq_fr: corrupt" in bad.stdout
    assert "Error:" in bad.stderr and "weights download --force topiq_fr" in bad.stderr


def test_download_failure_names_ways_out(runner, monkeypatch) -> None:
    monkeypatch.setenv(ENV_WEIGHTS_URL, f"http://127.0.0.1:{closed_port()}")
    result = runner.invoke(cli, ["weights", "download", "topiq_fr"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Could not obtain the checkpoint " + FR.filename)
    assert "--weights" in result.stderr and "Traceback" not in result.output
