"""Deterministic stand-in CFANet weights, so the benchmark runs without the published files.

Same recipe as the test fixtures (``/work/shared/fixtures/README.md``): each tensor seeded
from ``crc32(f"{salt}:{key}")``. Scores from these weights mean nothing about quality; the
benchmark only uses them for timing and for numerical deviation between execution paths.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch

from topiq_video.model.cfanet import cfanet_key_shapes

_POS_EMB_KEYS = frozenset({"h_emb", "w_emb"})


def _tensor(key: str, shape: tuple[int, ...], salt: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(f"{salt}:{key}".encode()))
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if leaf == "running_mean":
        return 0.1 * torch.randn(shape, generator=g)
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=g)
    if len(shape) >= 2 and key not in _POS_EMB_KEYS:
        return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    if leaf == "weight":
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    return 0.02 * torch.randn(shape, generator=g)


def write_standin_weights(path: str | Path, use_ref: bool, salt: int = 0) -> Path:
    """Write ``{"params": state_dict}`` for the NR (``use_ref=False``) or FR CFANet; reuse if present."""
    path = Path(path)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: _tensor(key, shape, salt) for key, shape in cfanet_key_shapes(use_ref).items()}
    tmp = path.with_suffix(".part")
    torch.save({"params": state}, tmp)
    tmp.replace(path)
    return path
