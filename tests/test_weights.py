"""Weights: download from a local mirror, atomic writes, cache hits, corruption and refusals.

All checkpoints are deterministic stand-ins (tests/standin.py), served by a local HTTP
server on 127.0.0.1; nothing here reaches the internet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import io
import os
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from net import closed_port
from standin import fixture_key_shapes, standin_state_dict

from topiq_video.errors import WeightsError
from topiq_video.model import weights as W
from topiq_video.model.cfanet import cfanet_from_state_dict
from topiq_video.model.registry import get_checkpoint

FR = get_checkpoint("topiq_fr")
NR = get_checkpoint("topiq_nr")


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
    for way_out in ("--weights PATH", W.ENV_WEIGHTS_URL, f"weights download --force {FR.name}"):
        assert way_out in msg
    assert mirror.requests == [FR.filename]
    assert W.verify_cached(FR).state == "corrupt"


def test_unreachable_mirror_gives_actionable_message(monkeypatch) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
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
    dead = f"http://127.0.0.1:{closed_port()}/{FR.filename}"
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


_WAYS_OUT = ("--weights PATH", W.ENV_WEIGHTS_URL, f"topiq-video weights download {FR.name}")


@pytest.mark.parametrize(
    ("content", "looks_like"),
    [
        (b"this is not a checkpoint\n", "looks like a text file (it starts with 'this is not"),
        (b'{"model": "topiq_fr", "epochs": 20}\n', "looks like a text file"),
        (b"<!DOCTYPE html>\n<html><body>Sign in</body></html>\n", "looks like an HTML page"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n", "Git LFS pointer"),
        (bytes(range(7, 250)) * 4, "unknown format (it starts with bytes 07 08 09"),
        (b"", "is empty"),
    ],
)
def test_non_pytorch_files_say_so_with_ways_out(content, looks_like, tmp_path) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as err:
        W.load_state_dict(path, FR)
    msg = str(err.value)
    assert f"{path} is not a PyTorch checkpoint" in msg and looks_like in msg
    assert FR.filename in msg
    for way_out in _WAYS_OUT:
        assert way_out in msg
    # Only files that ask to run code are described as holding Python objects.
    assert "Python objects" not in msg and "may contain code" not in msg
    assert "weights_only" not in msg


def test_text_in_the_cache_and_from_a_mirror_is_named_once(weights_server, monkeypatch) -> None:
    target = W.weights_dir() / FR.filename
    target.parent.mkdir(parents=True)
    target.write_text("placeholder, the real file goes here\n")
    with pytest.raises(WeightsError) as err:
        W.resolve_weights(FR, download=False)
    msg = str(err.value)
    assert "corrupted" in msg and "looks like a text file" in msg and str(target) in msg
    assert msg.count("Ways out") == 1  # the cache message gives them, not twice

    target.unlink()
    page = W.weights_dir().parent / "page.html"
    page.write_text("<html><body>rate limited</body></html>")
    weights_server.files[FR.filename] = page
    monkeypatch.setenv(W.ENV_WEIGHTS_URL, weights_server.url)
    with pytest.raises(WeightsError) as err:
        W.resolve_weights(FR, progress=False)
    msg = str(err.value)
    assert "downloaded, but not a valid checkpoint" in msg and "HTML page" in msg
    assert msg.count("Ways out") == 1
    assert not target.exists()


def test_damaged_zip_checkpoint_is_not_called_code(fr_checkpoint, tmp_path) -> None:
    path = tmp_path / "half.pth"
    with open(fr_checkpoint, "rb") as fh:
        path.write_bytes(fh.read(4096))
    with pytest.raises(WeightsError) as err:
        W.load_state_dict(path, FR)
    msg = str(err.value)
    assert "cannot be read" in msg and "truncated" in msg and str(path) in msg
    assert "may contain code" not in msg and "weights_only" not in msg
    for way_out in _WAYS_OUT:
        assert way_out in msg


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"params": {"x": _RunsCode(marker)}}, evil)
    with pytest.raises(WeightsError) as err:
        W.load_state_dict(evil, FR)
    assert not marker.exists()
    msg = str(err.value)
    assert str(evil) in msg and FR.filename in msg
    assert "not a plain tensor checkpoint" in msg and "may contain code" in msg
    assert "GLOBAL" in msg and "system" in msg  # what was refused is named
    assert "not a PyTorch checkpoint" not in msg  # its own message, not the format one
    # PyTorch's advice to load it unsafely must not reach our users.
    assert "weights_only" not in msg and "False" not in msg and "Re-run" not in msg


def test_wrong_architecture_names_the_model_it_fits(nr_checkpoint, fr_checkpoint) -> None:
    with pytest.raises(WeightsError) as err:
        W.load_state_dict(nr_checkpoint, FR)
    msg = str(err.value)
    assert "looks like an NR checkpoint: use --model topiq_nr (or another NR model" in msg
    assert "topiq_nr-flive" in msg and FR.filename in msg
    with pytest.raises(WeightsError) as err:
        W.load_state_dict(fr_checkpoint, NR)
    assert "looks like an FR checkpoint: use --model topiq_fr (or another FR model" in str(
        err.value
    )


@pytest.fixture(scope="module")
def fr_state() -> dict[str, torch.Tensor]:
    return standin_state_dict(fixture_key_shapes("fr"), salt=5)


def _first_key(state: dict[str, torch.Tensor], suffix: str) -> str:
    return next(k for k in state if k.endswith(suffix))


@pytest.mark.parametrize("case", ["all_int8", "one_long", "float_counter"])
def test_wrong_tensor_dtypes_are_refused(case, fr_state, tmp_path) -> None:
    state = dict(fr_state)
    if case == "all_int8":
        state = {k: v.to(torch.int8) for k, v in state.items()}
        culprit = "torch.int8"  # every float tensor is wrong; which ones are named may vary
    elif case == "one_long":
        culprit = _first_key(state, "sa_attn_blks.0.layers.0.linear1.weight")
        state[culprit] = state[culprit].long()
    else:
        culprit = _first_key(state, "num_batches_tracked")
        state[culprit] = state[culprit].float()
    path = tmp_path / f"{case}.pth"
    torch.save({"params": state}, path)
    with pytest.raises(WeightsError) as err:
        W.load_state_dict(path, FR)
    msg = str(err.value)
    assert str(path) in msg and culprit in msg and FR.filename in msg
    assert ("model: integer" if case == "float_counter" else "model: floating point") in msg
    # The in-memory loader refuses it too, instead of failing inside torch.
    with pytest.raises(WeightsError, match="dtype mismatch"):
        cfanet_from_state_dict(state, use_ref=True)


def _details(message: str) -> list[str]:
    # The lines that describe the tensors; the first names the source, the last the advice.
    return message.splitlines()[1:-1]


@pytest.mark.parametrize("case", ["nr_for_fr", "aesthetics_head", "missing_and_int"])
def test_file_and_in_memory_checks_are_one_check(case, fr_state, tmp_path) -> None:
    """Loading a file and building from a dict report the same problems, in the same words,
    the file's message adding which file it was and which checkpoint was expected."""
    if case == "nr_for_fr":
        state = standin_state_dict(fixture_key_shapes("nr"), salt=5)
    elif case == "aesthetics_head":  # TOPIQ's IAA models end in a 10-class distribution
        state = dict(fr_state)
        state["score_linear.6.weight"] = torch.zeros(10, 256)
        state["score_linear.6.bias"] = torch.zeros(10)
    else:
        state = {k: v for k, v in fr_state.items() if not k.startswith("attn_pool.")}
        state["h_emb"] = state["h_emb"].long()
    path = tmp_path / f"{case}.pth"
    torch.save({"params": state}, path)
    with pytest.raises(WeightsError) as from_file:
        W.load_state_dict(path, FR)
    with pytest.raises(WeightsError) as in_memory:
        cfanet_from_state_dict(state, use_ref=True)
    file_msg, memory_msg = str(from_file.value), str(in_memory.value)
    assert file_msg.startswith(f"{path} does not fit the TOPIQ CFANet FR")
    assert (
        file_msg.splitlines()[-1]
        == f"Expected {FR.filename}, the official checkpoint for 'topiq_fr'."
    )
    if case == "nr_for_fr":
        # The file check knows the registry: it names the models this checkpoint fits.
        assert "use --model topiq_nr" in file_msg and "use --model" not in memory_msg
        assert _details(file_msg)[1:] == memory_msg.splitlines()[2:]
    else:
        assert _details(file_msg) == memory_msg.splitlines()[1:]
    if case == "aesthetics_head":
        assert "aesthetics (IAA)" in file_msg
        assert "score_linear.6.weight: file (10, 256), model (1, 256)" in file_msg
    if case == "missing_and_int":
        assert "12 missing keys: attn_pool." in file_msg
        assert "1 dtype mismatches: h_emb: torch.int64 (model: floating point)" in file_msg


def test_load_model_checks_the_weights_once(fr_checkpoint, monkeypatch) -> None:
    from topiq_video.model import cfanet, load_model

    calls: list[bool] = []
    real = cfanet.check_cfanet_state_dict

    def counting(*args, **kwargs):
        calls.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(cfanet, "check_cfanet_state_dict", counting)
    model = load_model("topiq_fr", weights=fr_checkpoint, device="cpu")
    assert len(calls) == 1
    expected = W.load_state_dict(fr_checkpoint, FR)
    loaded = model.network.state_dict()
    assert all(torch.equal(loaded[k].float(), v.float()) for k, v in expected.items())


def test_half_precision_weights_load_as_float32(fr_state, tmp_path) -> None:
    state = {k: v.half() if v.is_floating_point() else v.int() for k, v in fr_state.items()}
    path = tmp_path / "half.pth"
    torch.save(state, path)
    loaded = W.load_state_dict(path, FR)
    model = cfanet_from_state_dict(loaded, use_ref=True)
    by_kind: dict[bool, set[torch.dtype]] = {}
    for key, value in model.state_dict().items():
        by_kind.setdefault(key.endswith("num_batches_tracked"), set()).add(value.dtype)
    assert by_kind == {True: {torch.int64}, False: {torch.float32}}


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
        assert Path(path).name.endswith(".tmp")  # the complete download sits in a temp file
        raise KeyboardInterrupt

    monkeypatch.setattr(W, "load_state_dict", interrupt)
    with pytest.raises(KeyboardInterrupt):
        W.resolve_weights(FR, progress=False)
    assert _weights_dir_entries() == []


# --------------------------------------------------------------------------- download limits


@dataclasses.dataclass
class _RawServer:
    """Serves ``bodies`` without a Content-Length (close-delimited) and ``redirects``."""

    url: str = ""
    bodies: dict[str, bytes] = dataclasses.field(default_factory=dict)
    redirects: dict[str, str] = dataclasses.field(default_factory=dict)


@pytest.fixture
def raw_server() -> Iterator[_RawServer]:
    state = _RawServer()

    class Handler(http.server.BaseHTTPRequestHandler):  # HTTP/1.0: the body ends at close
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            name = self.path.lstrip("/")
            if name in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[name])
                self.end_headers()
            elif name in state.bodies:
                self.send_response(200)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(state.bodies[name])
            else:
                self.send_error(404, "not found")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_over_the_size_cap_by_content_length(mirror, monkeypatch) -> None:
    monkeypatch.setattr(W, "MAX_DOWNLOAD_BYTES", 1000)
    with pytest.raises(WeightsError) as err:
        W.resolve_weights(FR, progress=False)
    assert "too large" in str(err.value) and "Content-Length" in str(err.value)
    assert _weights_dir_entries() == []


def test_download_over_the_size_cap_without_content_length(raw_server, monkeypatch) -> None:
    raw_server.bodies[FR.filename] = b"x" * 5000
    monkeypatch.setenv(W.ENV_WEIGHTS_URL, raw_server.url)
    monkeypatch.setattr(W, "MAX_DOWNLOAD_BYTES", 1000)
    with pytest.raises(WeightsError) as err:
        W.resolve_weights(FR, progress=False)
    assert "too large" in str(err.value) and "more than 1000 bytes" in str(err.value)
    assert _weights_dir_entries() == []


def test_redirects_are_followed_but_never_off_http(
    raw_server, weights_server, fr_checkpoint, monkeypatch
) -> None:
    weights_server.files[FR.filename] = fr_checkpoint
    monkeypatch.setenv(W.ENV_WEIGHTS_URL, raw_server.url)
    raw_server.redirects[FR.filename] = f"{weights_server.url}/{FR.filename}"
    assert W.resolve_weights(FR, progress=False).source == "download"  # http -> http is fine

    monkeypatch.setenv(W.ENV_WEIGHTS_URL, raw_server.url + "/ftp")
    raw_server.redirects[f"ftp/{FR.filename}"] = f"ftp://127.0.0.1:1/{FR.filename}"
    with pytest.raises(WeightsError, match="refused redirect"):
        W.download_weights(FR, force=True, progress=False)


def test_https_to_http_redirect_is_refused() -> None:
    handler = W._SafeRedirectHandler()
    request = urllib.request.Request("https://weights.example/cfanet.pth")
    with pytest.raises(OSError, match="refused redirect"):
        handler.redirect_request(
            request, io.BytesIO(), 302, "Found", {}, "http://weights.example/cfanet.pth"
        )
    same = handler.redirect_request(
        request, io.BytesIO(), 302, "Found", {}, "https://cdn.example/cfanet.pth"
    )
    assert same is not None and same.full_url == "https://cdn.example/cfanet.pth"


# --------------------------------------------------------------------------- sidecar


def test_sidecar_write_leaves_other_writers_temp_files_alone(mirror) -> None:
    # Another download's temp sidecar, mid-write under the name the old code always used.
    W.weights_dir().mkdir(parents=True)
    other = W.weights_dir() / f"{FR.filename}.sha256.tmp"
    other.write_text("another writer's sidecar\n")
    resolved = W.resolve_weights(FR, progress=False)
    assert other.read_text() == "another writer's sidecar\n"
    assert W.verify_cached(FR).state == "ok"
    assert _weights_dir_entries() == sorted([FR.filename, FR.filename + ".sha256", other.name])
    assert resolved.path.with_name(FR.filename + ".sha256").read_text().split()[0] == (
        resolved.sha256
    )


def test_concurrent_sidecar_writes_never_fail(tmp_path) -> None:
    target = tmp_path / "model.pth"
    errors: list[BaseException] = []

    def write(digit: str) -> None:
        try:
            for _ in range(50):
                W._write_sidecar(target, digit * 64)
        except BaseException as exc:  # collected: a worker's exception would vanish
            errors.append(exc)

    workers = [threading.Thread(target=write, args=(d,)) for d in "0123456789abcdef"[:8]]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert W._read_sidecar(target) in {d * 64 for d in "01234567"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth.sha256"]
