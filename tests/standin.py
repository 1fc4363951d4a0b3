"""Deterministic stand-in weights for CFANet tests (recipe: tests/data README / fixtures README).

The published TOPIQ checkpoints cannot be downloaded in CI, so tests fill the official
state_dict layout with seeded pseudo-random tensors. Scores from these weights carry no
quality meaning; they only pin the numerics against the reference implementation.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

FIXTURE_PATH = Path(__file__).parent / "data" / "cfanet_parity.npz"
_POS_EMB_KEYS = frozenset({"h_emb", "w_emb"})


def _standin_tensor(key: str, shape: tuple[int, ...], salt: int) -> torch.Tensor:
    g = torch.Generator()
    g.manual_seed(zlib.crc32(f"{salt}:{key}".encode()))
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if leaf == "running_mean":
        return 0.1 * torch.randn(shape, generator=g)
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=g)
    if len(shape) >= 2 and key not in _POS_EMB_KEYS:
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=g) / math.sqrt(fan_in)
    if leaf == "weight":
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    return 0.02 * torch.randn(shape, generator=g)


def standin_state_dict(
    key_shapes: dict[str, tuple[int, ...]], salt: int = 0
) -> dict[str, torch.Tensor]:
    """Stand-in tensors for every key, each seeded from (salt, key) only, so order is irrelevant."""
    return {key: _standin_tensor(key, tuple(shape), salt) for key, shape in key_shapes.items()}


def fixture_key_shapes(mode: str) -> dict[str, tuple[int, ...]]:
    """The reference state_dict layout (key -> shape) for ``mode`` "nr" or "fr"."""
    if mode not in ("nr", "fr"):
        raise ValueError(f"mode must be 'nr' or 'fr', got {mode!r}")
    with np.load(FIXTURE_PATH) as data:
        raw = json.loads(str(data[f"{mode}_keys"]))
    return {key: tuple(shape) for key, shape in raw.items()}


def fixture_salt() -> int:
    """The salt the fixture's reference scores were computed with."""
    with np.load(FIXTURE_PATH) as data:
        return int(data["salt"])


def write_standin_checkpoint(path: str | Path, mode: str, salt: int = 0) -> Path:
    """Save stand-in weights in the official checkpoint format ``{"params": state_dict}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params": standin_state_dict(fixture_key_shapes(mode), salt)}, path)
    return path
