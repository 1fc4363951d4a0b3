"""Batched TOPIQ scoring of frame tensors: validation, resize policy, precision, OOM fallback.

:class:`TopiqModel` wraps a loaded CFANet and its registry record. Build one with
:func:`topiq_video.model.load_model`. Inputs are float RGB tensors in [0, 1] shaped
(N, 3, H, W); the output is one float32 score per frame, on the CPU.

No-reference models reject a ``ref`` (passing one is almost always a mix-up of model and
mode, and silently ignoring it would hide that); full-reference models require one of the
same shape as ``dist``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from topiq_video.batching import HalvingBatcher, check_batch_size
from topiq_video.errors import InvalidInputError
from topiq_video.pipeline.options import (
    DEFAULT_BATCH_SIZE_CPU,
    DEFAULT_BATCH_SIZE_CUDA,
    DEFAULT_PRECISION_CPU,
    DEFAULT_PRECISION_CUDA,
    PRECISIONS,
)

if TYPE_CHECKING:
    from topiq_video.model.registry import CheckpointInfo
    from topiq_video.model.weights import ResolvedWeights

logger = logging.getLogger(__name__)

# Frames decoded and converted from YUV can land a hair outside [0, 1]; clamp those,
# reject anything further off (usually 0..255 data that was not divided by 255).
RANGE_TOLERANCE = 1e-3

_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def default_precision(device: torch.device) -> str:
    return DEFAULT_PRECISION_CUDA if device.type == "cuda" else DEFAULT_PRECISION_CPU


def default_batch_size(device: torch.device) -> int:
    return DEFAULT_BATCH_SIZE_CUDA if device.type == "cuda" else DEFAULT_BATCH_SIZE_CPU


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> cuda if available else cpu; strings are parsed and checked."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(
            f"Invalid device {device!r}: use 'cpu', 'cuda' or 'cuda:N'."
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(
                f"Device {device!r} requested, but CUDA is not available (no GPU, or a CPU-only "
                "PyTorch build). Use --device cpu, or install a CUDA build of PyTorch."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidInputError(
                f"Device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) "
                "visible. Use cuda:0 or check CUDA_VISIBLE_DEVICES."
            )
    elif dev.type != "cpu":
        raise InvalidInputError(f"Unsupported device {device!r}: use 'cpu', 'cuda' or 'cuda:N'.")
    return dev


def resolve_precision(precision: str | None, device: torch.device) -> str:
    if precision is None:
        return default_precision(device)
    value = str(precision).lower()
    if value not in PRECISIONS:
        raise InvalidInputError(
            f"Unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}."
        )
    if value == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InvalidInputError("This GPU does not support bf16: use --precision fp16 or fp32.")
    return value


def validate_batch_size(batch_size: int | None, device: torch.device) -> int:
    if batch_size is None:
        return default_batch_size(device)
    return check_batch_size(batch_size)


def _check_frames(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(
            f"`{name}` must be a torch.Tensor shaped (N, 3, H, W), got {type(x).__name__}."
        )
    if x.ndim != 4 or x.shape[1] != 3:
        raise InvalidInputError(
            f"`{name}` must be RGB frames shaped (N, 3, H, W); got shape {tuple(x.shape)}. "
            "Add a batch dimension (x[None]) and put channels first (x.permute(2, 0, 1))."
        )
    if not x.is_floating_point():
        raise InvalidInputError(
            f"`{name}` has dtype {x.dtype}; pass floats in [0, 1] (e.g. uint8 frames / 255)."
        )
    if x.numel() == 0:
        return x
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError(
            f"`{name}` contains NaN or infinite values; check the decoding/conversion step."
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        hint = " It looks like 0..255 data: divide by 255." if hi > 2.0 else ""
        raise InvalidInputError(f"`{name}` values span [{lo:.4g}, {hi:.4g}], outside [0, 1].{hint}")
    return x


@dataclass(frozen=True)
class _FeatureBatch:
    """One batch's backbone feature levels; its length is its number of frames."""

    levels: tuple[torch.Tensor, ...]

    def __len__(self) -> int:
        return int(self.levels[0].shape[0])


class TopiqModel:
    """A loaded TOPIQ network plus its checkpoint record, scoring frames in batches."""

    def __init__(
        self,
        network: nn.Module,
        info: CheckpointInfo,
        *,
        device: torch.device | str = "cpu",
        precision: str | None = None,
        batch_size: int | None = None,
        weights: ResolvedWeights | None = None,
    ) -> None:
        self._device = resolve_device(device)
        self._precision = resolve_precision(precision, self._device)
        self._batcher = HalvingBatcher(
            validate_batch_size(batch_size, self._device), device=self._device, item_name="frame"
        )
        self._info = info
        self._weights = weights
        self.network = network.to(self._device, memory_format=torch.channels_last).eval()

    @property
    def info(self) -> CheckpointInfo:
        return self._info

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def batch_size(self) -> int:
        """Current batch size; shrinks for good after an out-of-memory fallback."""
        return self._batcher.batch_size

    @property
    def weights(self) -> ResolvedWeights | None:
        return self._weights

    @property
    def use_ref(self) -> bool:
        return self._info.use_ref

    def __repr__(self) -> str:
        return (
            f"TopiqModel({self._info.name!r}, device={str(self._device)!r}, "
            f"precision={self._precision!r}, batch_size={self.batch_size})"
        )

    def validate(self, dist: torch.Tensor, ref: torch.Tensor | None = None) -> None:
        """Raise :class:`InvalidInputError` (with how to fix it) unless ``score`` would accept these."""
        _check_frames("dist", dist)
        if self.use_ref:
            if ref is None:
                raise InvalidInputError(
                    f"Model {self._info.name!r} is full-reference: pass the reference frames "
                    "as `ref`, or use a no-reference model such as 'topiq_nr'."
                )
            _check_frames("ref", ref)
            if ref.shape != dist.shape:
                raise InvalidInputError(
                    f"`ref` shape {tuple(ref.shape)} differs from `dist` shape "
                    f"{tuple(dist.shape)}: scale/crop the reference to the distorted size "
                    "and pair the same number of frames."
                )
        elif ref is not None:
            raise InvalidInputError(
                f"Model {self._info.name!r} is no-reference and takes no `ref`: drop it, or "
                "use a full-reference model such as 'topiq_fr'."
            )

    def reference_features(self, ref: torch.Tensor) -> list[torch.Tensor]:
        """A full-reference model's backbone features of reference frames (N, 3, H, W), to
        score several encodes of the same source without computing them again (see
        :meth:`score`'s ``ref_features``). They stay on the model's device."""
        if not self.use_ref:
            raise InvalidInputError(
                f"Model {self._info.name!r} is no-reference: it has no reference features."
            )
        _check_frames("ref", ref)

        def run(positions: Sequence[int]) -> list[torch.Tensor]:
            part = slice(positions[0], positions[-1] + 1)
            with torch.inference_mode(), self._autocast():
                return _FeatureBatch(
                    tuple(self.network.backbone_features(self._prepare(ref[part])))
                )

        parts = self._batcher.run(
            range(ref.shape[0]), run, oom_message=lambda: self._oom_message(ref.shape[-2:])
        )
        levels = len(parts[0].levels)
        return [torch.cat([p.levels[level] for p in parts]) for level in range(levels)]

    def score(
        self,
        dist: torch.Tensor,
        ref: torch.Tensor | None = None,
        *,
        ref_features: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One score per frame, shape (N,), float32 on the CPU. A full-reference model takes
        the reference frames as ``ref``, or their :meth:`reference_features` (one frame's
        features per distorted frame)."""
        if ref_features is not None:
            if ref is not None:
                raise InvalidInputError("Pass ref or ref_features, not both.")
            _check_frames("dist", dist)
            if not self.use_ref or ref_features[0].shape[0] != dist.shape[0]:
                raise InvalidInputError(
                    "ref_features need a full-reference model and one frame's features per "
                    f"distorted frame (got {ref_features[0].shape[0]} for {dist.shape[0]})."
                )
        else:
            self.validate(dist, ref)
        n = dist.shape[0]
        if n == 0:
            return torch.empty(0, dtype=torch.float32)

        def run(positions: Sequence[int]) -> torch.Tensor:
            part = slice(positions[0], positions[-1] + 1)  # consecutive frames
            if ref_features is not None:
                return self._score_batch(dist[part], None, [f[part] for f in ref_features])
            return self._score_batch(dist[part], None if ref is None else ref[part])

        parts = self._batcher.run(
            range(n), run, oom_message=lambda: self._oom_message(dist.shape[-2:])
        )
        return torch.cat(parts)

    def _oom_message(self, frame_hw: tuple[int, ...]) -> str:
        h, w = self._info.resize.output_size(int(frame_hw[0]), int(frame_hw[1]))
        return (
            f"Out of {self._device} memory scoring a single {w}x{h} frame with "
            f"{self._info.name!r} in {self._precision}. Use precision 'fp16' (precision=), a "
            "smaller input resolution, free GPU memory used by other processes, or score on "
            "the CPU (device='cpu')."
        )

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self._device, dtype=torch.float32, non_blocking=True)
        size = self._info.resize.shorter_side
        if size is not None:
            h, w = self._info.resize.output_size(x.shape[-2], x.shape[-1])
            if (h, w) != tuple(x.shape[-2:]):
                x = F.interpolate(
                    x, size=(h, w), mode="bilinear", align_corners=False, antialias=True
                )
        return x.clamp(0.0, 1.0).contiguous(memory_format=torch.channels_last)

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        dtype = _AUTOCAST_DTYPES.get(self._precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self._device.type, dtype=dtype)

    def _score_batch(
        self,
        dist: torch.Tensor,
        ref: torch.Tensor | None,
        ref_features: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            d = self._prepare(dist)
            if ref_features is not None:
                scores = self.network(d, ref_features=ref_features)
            else:
                r = None if ref is None else self._prepare(ref)
                scores = self.network(d) if r is None else self.network(d, r)
        scores = scores.reshape(-1).float().cpu()
        if scores.shape[0] != dist.shape[0]:
            raise RuntimeError(
                f"network returned {scores.shape[0]} scores for {dist.shape[0]} frames"
            )
        return scores
