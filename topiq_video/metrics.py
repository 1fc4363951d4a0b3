"""Classic full-reference metrics on luma planes (PSNR-Y, SSIM-Y), matching FFmpeg's filters.

Both functions take batches of luma planes as ``(N, H, W)`` float tensors holding integer code
values at their native bit depth (0..255 for 8-bit, 0..1023 for 10-bit) and return one value per
frame, computed in torch on the tensors' own device. They work through the batch about
``WORK_PIXELS`` samples at a time (whole small frames, or strips of large ones), in exact integer
arithmetic, so their working memory does not grow with the batch size.

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

WORK_PIXELS = 1 << 20
"""Samples per plane that psnr_y/ssim_y process at once (several small frames, or a strip of a
large one): bounds their working memory to a few tens of MB whatever the batch size."""

# Largest code magnitude whose doubled square still fits int32: (2 * 23170) ** 2 < 2**31.
_INT32_SAFE_CODE = 23170
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


FFMPEG_METRICS: dict[str, MetricInfo] = {
    "vmaf": MetricInfo(
        name="vmaf",
        unit="",
        higher_is_better=True,
        range=(0.0, 100.0),
        description="VMAF (libvmaf through FFmpeg) on the aligned, scaled pairs",
    ),
    "vmaf_neg": MetricInfo(
        name="vmaf_neg",
        unit="",
        higher_is_better=True,
        range=(0.0, 100.0),
        description="VMAF NEG (no enhancement gain, vmaf_v0.6.1neg) through FFmpeg",
    ),
    "xpsnr_y": MetricInfo(
        name="xpsnr_y",
        unit="dB",
        higher_is_better=True,
        range=(0.0, math.inf),
        description="XPSNR of the luma plane, as FFmpeg's xpsnr filter; +inf if identical",
    ),
}
"""Metrics computed by an FFmpeg process (the ``vmaf`` extra): see :mod:`topiq_video.vmaf`."""

REFERENCE_METRICS: dict[str, MetricInfo] = {**METRICS, **FFMPEG_METRICS}
"""Every full-reference metric besides TOPIQ's."""


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


def _codes_dtype(dist_y: torch.Tensor, ref_y: torch.Tensor) -> torch.dtype:
    """The narrowest integer type the metrics can work in without overflow.

    int32 holds every product the pixel-level steps make (a difference squared, a sum of two
    squares) while codes stay within +-_INT32_SAFE_CODE, which covers 8- to 14-bit planes;
    anything else (16-bit, out-of-range or non-finite values) takes int64. Block and window
    sums are always int64.
    """
    if not dist_y.is_floating_point() or not ref_y.is_floating_point():
        small = (torch.uint8, torch.int8)
        return torch.int32 if dist_y.dtype in small and ref_y.dtype in small else torch.int64
    extremes = torch.stack([*torch.aminmax(dist_y), *torch.aminmax(ref_y)])
    biggest = float(extremes.abs().max())  # NaN fails the test below and takes int64
    return torch.int32 if math.ceil(biggest) <= _INT32_SAFE_CODE else torch.int64


def _to_codes(plane: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Integer code values in a fresh tensor (callers update it in place), as FFmpeg's ints."""
    if plane.is_floating_point():
        return torch.round(plane).to(dtype)
    return plane.to(dtype, copy=True)


def _steps(n: int, h: int, w: int, row_multiple: int) -> tuple[int, int]:
    """(frames, rows) to process at once so that one step covers about WORK_PIXELS samples:
    several whole frames when a frame fits, else one frame in strips of ``rows`` rows
    (a multiple of ``row_multiple``)."""
    if h * w <= WORK_PIXELS:
        return max(1, min(n, WORK_PIXELS // (h * w))), h
    rows = WORK_PIXELS // w // row_multiple * row_multiple
    return 1, max(row_multiple, rows)


def psnr_y(dist_y: torch.Tensor, ref_y: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """Per-frame luma PSNR in dB, as FFmpeg's ``psnr`` filter reports in ``lavfi.psnr.psnr.y``.

    Inputs are rounded to integer code values. Identical planes give ``+inf``.
    Returns a float64 tensor of shape (N,) (float32 on MPS) on the inputs' device.
    Works on about WORK_PIXELS samples at a time, whatever N.
    """
    _check_pair(dist_y, ref_y, bit_depth)
    n, h, w = dist_y.shape
    out_dtype = _result_dtype(dist_y.device)
    if n == 0:
        return torch.empty(0, dtype=out_dtype, device=dist_y.device)
    if h == 0 or w == 0:
        raise InvalidInputError(f"luma planes must not be empty; got shape {tuple(dist_y.shape)}")
    sse = torch.zeros(n, dtype=torch.int64, device=dist_y.device)
    step_frames, step_rows = _steps(n, h, w, 1)
    for f0 in range(0, n, step_frames):
        frames = slice(f0, f0 + step_frames)
        for r0 in range(0, h, step_rows):
            dist, ref = dist_y[frames, r0 : r0 + step_rows], ref_y[frames, r0 : r0 + step_rows]
            codes = _codes_dtype(dist, ref)
            diff = _to_codes(dist, codes).sub_(_to_codes(ref, codes))
            # Integer sums are exact, so splitting the plane cannot change the result.
            sse[frames] += diff.mul_(diff).sum(dim=(1, 2), dtype=torch.int64)
    mse = sse.to(out_dtype) / float(h * w)
    peak = float((1 << bit_depth) - 1)
    # log10(peak^2 / 0) is +inf, which is what FFmpeg reports for identical frames.
    return 10.0 * torch.log10((peak * peak) / mse)


def _block_sums(plane: torch.Tensor) -> torch.Tensor:
    """Sum each SSIM_BLOCK x SSIM_BLOCK block of a (N, H, W) tensor whose sides are whole
    blocks -> (N, H/4, W/4) int64."""
    n, h, w = plane.shape
    blocks = plane.reshape(n, h // SSIM_BLOCK, SSIM_BLOCK, w // SSIM_BLOCK, SSIM_BLOCK)
    return blocks.sum(dim=(2, 4), dtype=torch.int64)


def _window_sums(blocks: torch.Tensor) -> torch.Tensor:
    """Sum every 2x2 group of neighbouring blocks: the overlapping 8x8 windows, stride 4."""
    return blocks[:, :-1, :-1] + blocks[:, :-1, 1:] + blocks[:, 1:, :-1] + blocks[:, 1:, 1:]


def _ssim_windows(dist: torch.Tensor, ref: torch.Tensor, c1: int, c2: int) -> torch.Tensor:
    """Per-window SSIM (float32) of (N, H, W) planes whose sides are whole blocks."""
    codes = _codes_dtype(dist, ref)
    a = _to_codes(dist, codes)
    b = _to_codes(ref, codes)
    # Window sums of a, b, a*b and a^2 + b^2, all exact integers as in FFmpeg; the squares
    # are made in place so that at most three plane-sized integer tensors are alive.
    s1 = _window_sums(_block_sums(a))
    s2 = _window_sums(_block_sums(b))
    s12 = _window_sums(_block_sums(a * b))
    ss = _window_sums(_block_sums(a.mul_(a).add_(b.mul_(b))))
    del a, b

    vars_ = ss * _SSIM_WINDOW_PIXELS - s1 * s1 - s2 * s2
    covar = s12 * _SSIM_WINDOW_PIXELS - s1 * s2
    # FFmpeg converts each of the four integer factors to single precision before combining
    # them; doing the same keeps rounding identical for high-bit-depth sums.
    f32 = torch.float32
    num = (2 * s1 * s2 + c1).to(f32) * (2 * covar + c2).to(f32)
    den = (s1 * s1 + s2 * s2 + c1).to(f32) * (vars_ + c2).to(f32)
    return num / den


def ssim_y(dist_y: torch.Tensor, ref_y: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """Per-frame luma SSIM, as FFmpeg's ``ssim`` filter reports in ``lavfi.ssim.Y``.

    Inputs are rounded to integer code values; planes must be at least 8x8.
    Returns a float64 tensor of shape (N,) (float32 on MPS) on the inputs' device.
    Works on about WORK_PIXELS samples at a time, whatever N (large frames in strips).
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
    peak = (1 << bit_depth) - 1
    # FFmpeg rounds the constants to integers scaled for sums over 64 samples (c2 also by 63,
    # its unbiased-variance factor); int() of value + 0.5 mirrors its C cast.
    c1 = int(SSIM_K1 * SSIM_K1 * peak * peak * _SSIM_WINDOW_PIXELS + 0.5)
    c2 = int(
        SSIM_K2 * SSIM_K2 * peak * peak * _SSIM_WINDOW_PIXELS * (_SSIM_WINDOW_PIXELS - 1) + 0.5
    )
    # Trailing rows/columns that do not fill a block are ignored, as FFmpeg does.
    blocks_h, blocks_w = h // SSIM_BLOCK, w // SSIM_BLOCK
    used_w = blocks_w * SSIM_BLOCK
    step_frames, step_rows = _steps(n, blocks_h * SSIM_BLOCK, used_w, SSIM_BLOCK)
    # A strip of B block rows gives B - 1 window rows; the next strip starts one block row
    # before this one ends, the overlap that FFmpeg's stride-4 windows need.
    step_windows = max(1, step_rows // SSIM_BLOCK - 1)
    out = torch.empty(n, dtype=out_dtype, device=dist_y.device)
    for f0 in range(0, n, step_frames):
        frames = slice(f0, f0 + step_frames)
        count = len(range(n)[frames])
        windows = torch.empty(
            (count, blocks_h - 1, blocks_w - 1), dtype=torch.float32, device=dist_y.device
        )
        for r0 in range(0, blocks_h - 1, step_windows):
            r1 = min(blocks_h - 1, r0 + step_windows)
            pixels = slice(r0 * SSIM_BLOCK, (r1 + 1) * SSIM_BLOCK)
            windows[:, r0:r1] = _ssim_windows(
                dist_y[frames, pixels, :used_w], ref_y[frames, pixels, :used_w], c1, c2
            )
        # The frame score is the plain mean over all its windows, in double like FFmpeg.
        out[frames] = windows.to(out_dtype).mean(dim=(1, 2))
    return out


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
