"""Shared fixtures: an isolated weights cache, stand-in checkpoints and a local weights server."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from standin import write_standin_checkpoint


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need CUDA: skip them, visibly, on machines without it (CI)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run `pytest -m gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_weights_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may touch the user's cache or the internet for weights."""
    monkeypatch.setenv("TOPIQ_VIDEO_CACHE", str(tmp_path / "topiq-cache"))
    monkeypatch.delenv("TOPIQ_VIDEO_WEIGHTS_URL", raising=False)
    monkeypatch.delenv("TOPIQ_VIDEO_DEBUG", raising=False)


@pytest.fixture(scope="session")
def fr_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in FR checkpoint (official {"params": ...} format, ~144 MB). Scores mean nothing."""
    return write_standin_checkpoint(tmp_path_factory.mktemp("ckpt") / "standin_fr.pth", "fr")


@pytest.fixture(scope="session")
def nr_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in NR checkpoint (official format, ~181 MB). Scores mean nothing."""
    return write_standin_checkpoint(tmp_path_factory.mktemp("ckpt") / "standin_nr.pth", "nr")


@dataclass
class WeightsServer:
    """A local HTTP server: ``files`` maps URL file names to local paths.

    ``truncate_to`` makes it announce the full Content-Length but send only that many bytes.
    """

    url: str
    files: dict[str, Path] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    truncate_to: int | None = None


@pytest.fixture
def weights_server() -> Iterator[WeightsServer]:
    state = WeightsServer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            name = self.path.lstrip("/")
            state.requests.append(name)
            path = state.files.get(name)
            if path is None:
                self.send_error(404, "not found")
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if state.truncate_to is not None:
                data = data[: state.truncate_to]
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)  # the client may hang up on a truncated body

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
