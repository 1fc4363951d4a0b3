"""Weights: download from a local mirror, atomic writes, cache hits, corruption and refusals.

All checkpoints are deterministic stand-ins (tests/standin.py), served by a local HTTP
server on 127.0.0.1; nothing here reaches the internet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from pathlib import Path

import pytest
import torch
from standin import fixture_key_shapes, standin_state_dict

from topiq_video.errors import WeightsError
from topiq_video.model import weights as W
from topiq_video.model.registry import get_checkpoint

FR = get_checkpoint("topiq_fr")


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _weights_dir_entries() -> list[str]:
    folder = W.weights_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def mirror(weights_server, fr_checkpoint, monkeypatch):
    weights_server.files[FR.filename] = fr_checkpoint
    monkeypatch.setenv(W.ENV_WEIGHTS_URL, weights_server.url + "/")
    return weights_server


def test_download_then_cache_hit(mirror, fr_checkpoint, capsys) -> None:
    first = W.resolve_weights(FR, progress=True)
    assert first.source == "download"
    assert first.path == W.weights_dir() / FR.filename
    expected_sha = hashlib.sha256(fr_checkpoint.read_bytes()).hexdigest()
    assert first.sha256 == expected_sha
    sidecar = first.path.with_name(FR.filename + ".sha256").read_text()
    assert sidecar.split()[0] == expected_sha
    assert mirror.requests == [FR.filename]
    err = capsys.readouterr().err
    assert FR.filename in err and "100%" in err  # the progress bar ran to completion

    second = W.resolve_weights(FR)
    assert (second.source, second.path, second.sha256) == ("cache", first.path, expected_sha)
    assert mirror.requests == [FR.filename]  # the cache hit made no request
    assert W.verify_cached(FR).state == "ok"
    assert _weights_dir_entries() == sorted([FR.filename, FR.filename + ".sha256"])


def test_truncated_download_leaves_nothing(mirror, fr_checkpoint) -> None:
    mirror.truncate_to = fr_checkpoint.stat().st_size // 2
    with pytest.raises(WeightsError) as err:
        W.resolve_weights(FR, progress=False)
    assert "truncated" in str(err.value)
    assert _weights_dir_entries() == []  # no final file, no .part left behind


def test_corrupted_cache_is_detected(mirror) -> None:
    path = W.resolve_weights(FR, progress=False).path
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(WeightsError) as err:
        W.resolve_weights(FR)
    msg = str(err.value)
    assert "corrupt" in msg and str(path) in msg
    assert f"topiq-video weights download {FR.name}" in msg
    assert mirror.requests == [FR.filename]
    assert W.verify_cached(FR).state == "corrupt"


def test_unreachable_mirror_gives_actionable_message(monkeypatch) -> None:
    url = _closed_port_url()
    monkeypatch.setenv(W.ENV_WEIGHTS_URL, url)
    with pytest.raises(WeightsError) as err:
        W.resolve_weights(FR, progress=False)
    msg = str(err.value)
    assert FR.filename in msg
    assert f"{url}/{FR.filename}" in msg and "unreachable" in msg
    assert "huggingface" not in msg  # a mirror replaces the published URLs
    for way_out in ("--weights", W.ENV_WEIGHTS_URL, "topiq-video weights download"):
        assert way_out in msg
    assert _weights_dir_entries() == []


def test_published_urls_are_tried_in_order(weights_server, fr_checkpoint) -> None:
    weights_server.files[FR.filename] = fr_checkpoint
    dead = f"{_closed_port_url()}/{FR.filename}"
    info = dataclasses.replace(FR, urls=(dead, f"{weights_server.url}/{FR.filename}"))
    resolved = W.resolve_weights(info, progress=False)
    assert resolved.source == "download"
    assert weights_server.requests == [FR.filename]


def test_http_404_and_no_download(weights_server, monkeypatch) -> None:
    monkeypatch.setenv(W.ENV_WEIGHTS_URL, weights_server.url)
    with pytest.raises(WeightsError, match="HTTP 404"):
        W.resolve_weights(FR, progress=False)
    with pytest.raises(WeightsError, match="not in the cache"):
        W.resolve_weights(FR, download=False)


def test_downloaded_garbage_is_refused_and_removed(weights_server, tmp_path, monkeypatch) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(4096))
    weights_server.files[FR.filename] = junk
    monkeypatch.setenv(W.ENV_WEIGHTS_URL, weights_server.url)
    with pytest.raises(WeightsError, match="not a valid checkpoint"):
        W.resolve_weights(FR, progress=False)
    assert _weights_dir_entries() == []


def test_local_weights_path(fr_checkpoint, tmp_path) -> None:
    resolved = W.resolve_weights(FR, fr_checkpoint)
    assert (resolved.source, resolved.path) == ("local", fr_checkpoint)
    with pytest.raises(WeightsError, match="does not exist") as err:
        W.resolve_weights(FR, tmp_path / "nope.pth")
    assert FR.filename in str(err.value)


def test_official_and_bare_state_dicts_load(fr_checkpoint, tmp_path) -> None:
    state = W.load_state_dict(fr_checkpoint, FR)
    assert {k: tuple(v.shape) for k, v in state.items()} == fixture_key_shapes("fr")
    bare = tmp_path / "bare.pth"
    torch.save(standin_state_dict(fixture_key_shapes("fr"), salt=3), bare)
    assert W.load_state_dict(bare, FR).keys() == state.keys()


@pytest.mark.parametrize("kind", ["random", "text", "truncated"])
def test_non_checkpoints_are_refused(kind, fr_checkpoint, tmp_path) -> None:
    path = tmp_path / f"{kind}.pth"
    if kind == "random":
        path.write_bytes(os.urandom(10_000))
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    else:
        with open(fr_checkpoint, "rb") as fh:
            path.write_bytes(fh.read(fr_checkpoint.stat().st_size // 3))
    with pytest.raises(WeightsError) as err:
        W.load_state_dict(path, FR)
    assert str(path) in str(err.value)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"params": {"x": _RunsCode(marker)}}, evil)
    with pytest.raises(WeightsError, match="weights_only"):
        W.load_state_dict(evil, FR)
    assert not marker.exists()


def test_wrong_architecture_is_refused(nr_checkpoint) -> None:
    with pytest.raises(WeightsError) as err:
        W.load_state_dict(nr_checkpoint, FR)
    msg = str(err.value)
    assert "no-reference (NR) checkpoint" in msg and FR.filename in msg


def test_unverified_cache_file_is_checked_by_loading(fr_checkpoint) -> None:
    # A checkpoint copied into the cache by hand (no sidecar) is accepted once it loads.
    target = W.weights_dir() / FR.filename
    target.parent.mkdir(parents=True)
    target.write_bytes(fr_checkpoint.read_bytes())
    assert W.cache_status(FR).state == "unverified"
    resolved = W.resolve_weights(FR, download=False)
    assert resolved.source == "cache"
    assert W.cache_status(FR).state == "present"


def test_interrupted_download_leaves_nothing(mirror, monkeypatch) -> None:
    def interrupt(path, info):
        assert Path(path).name.endswith(".part")  # the complete download sits in a temp file
        raise KeyboardInterrupt

    monkeypatch.setattr(W, "load_state_dict", interrupt)
    with pytest.raises(KeyboardInterrupt):
        W.resolve_weights(FR, progress=False)
    assert _weights_dir_entries() == []
