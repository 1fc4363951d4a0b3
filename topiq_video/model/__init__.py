"""CFANet network, checkpoint registry and weight handling.

:func:`load_model` is the one-call builder: registry record -> weights (local, cache or
download) -> strictly loaded CFANet on the chosen device -> :class:`~topiq_video.scoring.TopiqModel`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from topiq_video.model.registry import (
    DEFAULT_FR_MODEL,
    DEFAULT_NR_MODEL,
    CheckpointInfo,
    ResizePolicy,
    get_checkpoint,
    list_checkpoints,
)
from topiq_video.model.weights import (
    ResolvedWeights,
    cache_dir,
    download_weights,
    load_network,
    load_state_dict,
    resolve_weights,
    verify_cached,
)

if TYPE_CHECKING:
    import torch

    from topiq_video.scoring import TopiqModel

__all__ = [
    "DEFAULT_FR_MODEL",
    "DEFAULT_NR_MODEL",
    "CheckpointInfo",
    "ResizePolicy",
    "ResolvedWeights",
    "cache_dir",
    "download_weights",
    "get_checkpoint",
    "list_checkpoints",
    "load_model",
    "load_network",
    "load_state_dict",
    "resolve_weights",
    "verify_cached",
]


def load_model(
    name: str = DEFAULT_FR_MODEL,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    precision: str | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> TopiqModel:
    """Build the TOPIQ model ``name`` with its weights, ready to score.

    ``weights`` is a local checkpoint file (else the cache, else a download); ``device``
    defaults to cuda when available; ``precision`` (fp32/fp16/bf16) and ``batch_size``
    default per device (see :mod:`topiq_video.scoring`).
    """
    # Imported here: scoring pulls in torch/torchvision, which listing the registry does not
    # need, and scoring imports this package for its types.
    from topiq_video.scoring import (
        TopiqModel,
        resolve_device,
        resolve_precision,
        validate_batch_size,
    )

    info = get_checkpoint(name)
    # Validate the cheap options before a possibly long download.
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    bs = validate_batch_size(batch_size, dev)
    resolved = resolve_weights(info, weights, progress=progress)
    network = load_network(resolved.path, info)  # read and checked once
    return TopiqModel(network, info, device=dev, precision=prec, batch_size=bs, weights=resolved)
