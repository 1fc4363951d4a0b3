"""Deterministic stand-in CFANet weights, so the benchmark runs without the published files.

The recipe is the parity fixture's (``tests/standin.py``, run from the repository root):
each tensor seeded from ``crc32(f"{salt}:{key}")``. Scores from these weights mean nothing about quality; the
benchmark only uses them for timing and for numerical deviation between execution paths.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.standin import standin_state_dict
from topiq_video.model.cfanet import cfanet_key_shapes


def write_standin_weights(path: str | Path, use_ref: bool, salt: int = 0) -> Path:
    """Write ``{"params": state_dict}`` for the NR (``use_ref=False``) or FR CFANet; reuse if present."""
    path = Path(path)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    state = standin_state_dict(cfanet_key_shapes(use_ref), salt)
    tmp = path.with_suffix(".part")
    torch.save({"params": state}, tmp)
    tmp.replace(path)
    return path
