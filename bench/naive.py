"""The naive way to score a video with CFANet, as the baseline the pipeline is measured against.

Per frame: FFmpeg converts to packed RGB on the CPU (``to_ndarray(format="rgb24")``), the
array is copied to the device as float32, and the CFANet module is called on a batch of
one, with cuDNN in deterministic mode and no autotuning. Reading ``.item()`` per frame
synchronises every step, as a simple loop would.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class NaiveResult:
    scores: np.ndarray  # one float64 score per frame, in decode order
    seconds: float  # wall-clock of the timed loop (decode + convert + forward)

    @property
    def frames(self) -> int:
        return int(self.scores.shape[0])


@contextlib.contextmanager
def cudnn_naive_flags() -> Iterator[None]:
    """cudnn deterministic, no benchmark autotuning; the previous flags are restored after."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _rgb_frames(path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if max_frames is not None and i >= max_frames:
                return
            yield frame.to_ndarray(format="rgb24")


def _to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    # HWC -> NCHW made contiguous: the default layout a plain script feeds the network.
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()
    return x.to(device).float() / 255.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_naive(
    network: nn.Module,
    dist: str | Path,
    ref: str | Path | None = None,
    *,
    device: torch.device | str = "cpu",
    max_frames: int | None = None,
) -> NaiveResult:
    """Score ``dist`` (paired frame by frame with ``ref`` for an FR network), one frame at a time.

    ``network`` must already be float32, in eval mode and on ``device``.
    """
    device = torch.device(device)
    scores: list[float] = []
    with cudnn_naive_flags(), torch.no_grad():
        _sync(device)
        start = time.perf_counter()
        if ref is None:
            for rgb in _rgb_frames(Path(dist), max_frames):
                scores.append(float(network(_to_tensor(rgb, device)).item()))
        else:
            pairs = zip(
                _rgb_frames(Path(dist), max_frames),
                _rgb_frames(Path(ref), max_frames),
                strict=False,
            )
            for d, r in pairs:
                scores.append(float(network(_to_tensor(d, device), _to_tensor(r, device)).item()))
        _sync(device)
        seconds = time.perf_counter() - start
    return NaiveResult(np.asarray(scores, dtype=np.float64), seconds)
