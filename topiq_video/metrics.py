"""Classic full-reference metrics on luma planes (PSNR-Y, SSIM-Y), matching FFmpeg's filters.

Both functions take batches of luma planes as ``(N, H, W)`` float tensors holding integer code
values at their native bit depth (0..255 for 8-bit, 0..1023 for 10-bit) and return one value per
frame, computed in torch on the tensors' own device.

``psnr_y`` follows FFmpeg's ``psnr`` filter: MSE over the whole plane, peak ``2**bit_depth - 1``
(1023 for 10-bit, not 255 * 4), and ``+inf`` for identical planes.

``ssim_y`` follows FFmpeg's ``ssim`` filter, which is not the Gaussian-windowed SSIM of Wang et
al.: the plane is cut into 4x4 blocks (trailing rows/columns that do not fill a block are
ignored), each 8x8 window made of 2x2 neighbouring blocks (so windows overlap with a stride of 4)
gets an SSIM from integer sums with constants scaled for 64 samples, and the frame score is the
plain mean over the ``(H//4 - 1) * (W//4 - 1)`` windows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from topiq_video.errors import InvalidInputError

logger = logging.getLogger(__name__)

SUPPORTED_BIT_DEPTHS: tuple[int, ...] = (8, 9, 10, 12, 14, 16)
"""Luma bit depths accepted; the same set FFmpeg's psnr/ssim filters accept for planar YUV."""

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_BLOCK = 4
"""Side of the blocks whose sums SSIM windows are built from; a window is 2x2 blocks."""

_SSIM_WINDOW_PIXELS = (2 * SSIM_BLOCK) ** 2  # 64 samples in one 8x8 window
_SSIM_MIN_SIDE = 2 * SSIM_BLOCK  # a plane needs at least one whole 8x8 window


@dataclass(frozen=True)
class MetricInfo:
    """Static description of one metric, for reports and CLI listings."""

    name: str
    unit: str
    higher_is_better: bool
    range: tuple[float, float]
    description: str = ""


METRICS: dict[str, MetricInfo] = {
    "psnr_y": MetricInfo(
        name="psnr_y",
        unit="dB",
        higher_is_better=True,
        range=(0.0, math.inf),
        description="PSNR of the luma plane, as FFmpeg's psnr filter (psnr.y); +inf if identical",
    ),
    "ssim_y": MetricInfo(
        name="ssim_y",
        unit="",
        higher_is_better=True,
        range=(-1.0, 1.0),
        description="SSIM of the luma plane, as FFmpeg's ssim filter (ssim.Y; 8x8 windows, stride 4)",
    ),
}


def _result_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everywhere else keep the double precision FFmpeg uses for the means.
    return torch.float32 if device.type == "mps" else torch.float64


def _check_pair(dist_y: torch.Tensor, ref_y: torch.Tensor, bit_depth: int) -> None:
    if not isinstance(dist_y, torch.Tensor) or not isinstance(ref_y, torch.Tensor):
        raise InvalidInputError(
            "dist_y and ref_y must be torch tensors of shape (N, H, W); "
            f"got {type(dist_y).__name__} and {type(ref_y).__name__}"
        )
    if dist_y.dim() != 3 or ref_y.dim() != 3:
        raise InvalidInputError(
            "dist_y and ref_y must be batches of luma planes of shape (N, H, W); got shapes "
            f"{tuple(dist_y.shape)} and {tuple(ref_y.shape)} (add a batch axis with unsqueeze(0))"
        )
    if dist_y.shape != ref_y.shape:
        raise InvalidInputError(
            f"dist_y and ref_y must have the same shape; got {tuple(dist_y.shape)} and "
            f"{tuple(ref_y.shape)} (scale or crop the distorted frames to the reference size)"
        )
    if dist_y.device != ref_y.device:
        raise InvalidInputError(
            f"dist_y is on {dist_y.device} but ref_y is on {ref_y.device}; move both to one device"
        )
    if dist_y.is_complex() or ref_y.is_complex():
        raise InvalidInputError("dist_y and ref_y must be real-valued code values")
    if isinstance(bit_depth, bool) or bit_depth not in SUPPORTED_BIT_DEPTHS:
        raise InvalidInputError(
            f"bit_depth must be one of {list(SUPPORTED_BIT_DEPTHS)}; got {bit_depth!r}"
        )


def _to_codes(plane: torch.Tensor) -> torch.Tensor:
    """Integer code values as int64, so sums are exact like FFmpeg's integer arithmetic."""
    if plane.is_floating_point():
        plane = torch.round(plane)
    return plane.to(torch.int64)


def psnr_y(dist_y: torch.Tensor, ref_y: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """Per-frame luma PSNR in dB, as FFmpeg's ``psnr`` filter reports in ``lavfi.psnr.psnr.y``.

    Inputs are rounded to integer code values. Identical planes give ``+inf``.
    Returns a float64 tensor of shape (N,) (float32 on MPS) on the inputs' device.
    """
    _check_pair(dist_y, ref_y, bit_depth)
    n, h, w = dist_y.shape
    out_dtype = _result_dtype(dist_y.device)
    if n == 0:
        return torch.empty(0, dtype=out_dtype, device=dist_y.device)
    if h == 0 or w == 0:
        raise InvalidInputError(f"luma planes must not be empty; got shape {tuple(dist_y.shape)}")
    diff = _to_codes(dist_y) - _to_codes(ref_y)
    sse = (diff * diff).sum(dim=(1, 2))  # exact in int64 for any realistic frame size
    mse = sse.to(out_dtype) / float(h * w)
    peak = float((1 << bit_depth) - 1)
    # log10(peak^2 / 0) is +inf, which is what FFmpeg reports for identical frames.
    return 10.0 * torch.log10((peak * peak) / mse)


def _block_sums(plane: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Sum each SSIM_BLOCK x SSIM_BLOCK block of an (N, H, W) int64 tensor -> (N, rows, cols)."""
    n = plane.shape[0]
    cropped = plane[:, : rows * SSIM_BLOCK, : cols * SSIM_BLOCK]
    return cropped.reshape(n, rows, SSIM_BLOCK, cols, SSIM_BLOCK).sum(dim=(2, 4))


def _window_sums(blocks: torch.Tensor) -> torch.Tensor:
    """Sum every 2x2 group of neighbouring blocks: the overlapping 8x8 windows, stride 4."""
    return blocks[:, :-1, :-1] + blocks[:, :-1, 1:] + blocks[:, 1:, :-1] + blocks[:, 1:, 1:]


def ssim_y(dist_y: torch.Tensor, ref_y: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """Per-frame luma SSIM, as FFmpeg's ``ssim`` filter reports in ``lavfi.ssim.Y``.

    Inputs are rounded to integer code values; planes must be at least 8x8.
    Returns a float64 tensor of shape (N,) (float32 on MPS) on the inputs' device.
    """
    _check_pair(dist_y, ref_y, bit_depth)
    n, h, w = dist_y.shape
    out_dtype = _result_dtype(dist_y.device)
    if n == 0:
        return torch.empty(0, dtype=out_dtype, device=dist_y.device)
    if h < _SSIM_MIN_SIDE or w < _SSIM_MIN_SIDE:
        raise InvalidInputError(
            f"ssim_y needs luma planes of at least {_SSIM_MIN_SIDE}x{_SSIM_MIN_SIDE}; "
            f"got {h}x{w} (use a larger frame or psnr_y)"
        )
    a = _to_codes(dist_y)
    b = _to_codes(ref_y)
    rows, cols = h // SSIM_BLOCK, w // SSIM_BLOCK

    # Window sums of a, b, a^2 + b^2 and a*b, all exact integers as in FFmpeg.
    s1 = _window_sums(_block_sums(a, rows, cols))
    s2 = _window_sums(_block_sums(b, rows, cols))
    ss = _window_sums(_block_sums(a * a + b * b, rows, cols))
    s12 = _window_sums(_block_sums(a * b, rows, cols))

    peak = (1 << bit_depth) - 1
    # FFmpeg rounds the constants to integers scaled for sums over 64 samples (c2 also by 63,
    # its unbiased-variance factor); int() of value + 0.5 mirrors its C cast.
    c1 = int(SSIM_K1 * SSIM_K1 * peak * peak * _SSIM_WINDOW_PIXELS + 0.5)
    c2 = int(
        SSIM_K2 * SSIM_K2 * peak * peak * _SSIM_WINDOW_PIXELS * (_SSIM_WINDOW_PIXELS - 1) + 0.5
    )
    vars_ = ss * _SSIM_WINDOW_PIXELS - s1 * s1 - s2 * s2
    covar = s12 * _SSIM_WINDOW_PIXELS - s1 * s2

    # FFmpeg converts each of the four integer factors to single precision before combining
    # them; doing the same keeps rounding identical for high-bit-depth sums.
    f32 = torch.float32
    num = (2 * s1 * s2 + c1).to(f32) * (2 * covar + c2).to(f32)
    den = (s1 * s1 + s2 * s2 + c1).to(f32) * (vars_ + c2).to(f32)
    per_window = num / den
    return per_window.to(out_dtype).mean(dim=(1, 2))


_METRIC_FUNCS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "psnr_y": psnr_y,
    "ssim_y": ssim_y,
}


def compute_metric(
    name: str, dist_y: torch.Tensor, ref_y: torch.Tensor, bit_depth: int
) -> torch.Tensor:
    """Compute the metric registered under ``name`` (a key of ``METRICS``) per frame."""
    func = _METRIC_FUNCS.get(name)
    if func is None:
        raise InvalidInputError(
            f"unknown metric {name!r}; valid metrics are: {', '.join(sorted(METRICS))}"
        )
    return func(dist_y, ref_y, bit_depth)
