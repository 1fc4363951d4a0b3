"""YUV/gray/RGB frames to tensors on the scoring device.

Native planes (uint8/uint16) are uploaded as they are and converted on the device, so the
host only moves 1.5 (4:2:0) instead of 3 samples per pixel and the GPU does the maths.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from topiq_video.errors import InvalidInputError
from topiq_video.video.source import VideoFrame

DEFAULT_THUMBNAIL_SIZE = (36, 64)  # (height, width) of luma thumbnails

# (Kr, Kb) luma coefficients of the non-constant-luminance matrices.
_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}
# RGB frames have no Y plane; without a partner's matrix to copy, derive an 8-bit
# limited-range one with BT.709 weights for luma-only metrics.
RGB_LUMA_MATRIX = "bt709"
RGB_LUMA_RANGE = "limited"
# Partner matrices that carry no YUV weights to copy: an RGB partner (both sides then use the
# defaults alike) and a gray one (its weights are unknown; only its range is honoured).
_NO_WEIGHTS = ("rgb", "gray")
_RANGES = ("limited", "full")


def _check_uniform(frames: Sequence[VideoFrame]) -> VideoFrame:
    if not frames:
        raise InvalidInputError("No frames given; pass at least one VideoFrame.")
    first = frames[0]
    for f in frames[1:]:
        if (
            f.pix_fmt != first.pix_fmt
            or f.width != first.width
            or f.height != first.height
            or f.color != first.color
        ):
            raise InvalidInputError(
                "Frames in one batch must share size, pix_fmt and colour tags; got "
                f"{first.width}x{first.height} {first.pix_fmt} {first.color.matrix}/"
                f"{first.color.range} and {f.width}x{f.height} {f.pix_fmt} {f.color.matrix}/"
                f"{f.color.range}. Split the batch where the stream parameters change."
            )
    return first


def _upload(arrays: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """Stack same-shaped planes and move them to ``device`` without widening on the host."""
    host = torch.from_numpy(np.stack(arrays))
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _plane_batch(
    frames: Sequence[VideoFrame], i: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    t = _upload([f.planes[i] for f in frames], device)
    # uint16 has few kernels in torch: go through int32 before floating point.
    if t.dtype == torch.uint16:
        t = t.to(torch.int32)
    return t.to(dtype)


def _upsample2(x: torch.Tensor, dim: int, centred: bool) -> torch.Tensor:
    """Double ``x`` along ``dim`` by linear interpolation.

    ``centred``: chroma sits midway between two luma samples (MPEG-2/H.264 4:2:0
    vertically); otherwise co-sited with the even luma samples (horizontally).
    """
    n = x.shape[dim]
    prev = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim=dim)
    nxt = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim=dim)
    if centred:
        even = 0.75 * x + 0.25 * prev
        odd = 0.75 * x + 0.25 * nxt
    else:
        even = x
        odd = 0.5 * (x + nxt)
    out = torch.stack([even, odd], dim=dim + 1)
    shape = list(x.shape)
    shape[dim] = 2 * n
    return out.reshape(shape)


def _to_luma_size(c: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Upsample a (N, h, w) chroma plane to (N, height, width)."""
    if c.shape[-2] * 2 <= height + 1 and c.shape[-2] < height:
        c = _upsample2(c, 1, centred=True)
    if c.shape[-1] * 2 <= width + 1 and c.shape[-1] < width:
        c = _upsample2(c, 2, centred=False)
    # Odd luma sizes: the last chroma row/column covered a half-size block.
    c = c[:, :height, :width]
    if c.shape[-2:] != (height, width):
        raise InvalidInputError(
            f"Chroma planes of {tuple(c.shape[-2:])} do not fit {height}x{width} luma; "
            "only 4:4:4, 4:2:2, 4:4:0 and 4:2:0 layouts are supported."
        )
    return c


def _normalise_luma(y: torch.Tensor, bit_depth: int, full_range: bool) -> torch.Tensor:
    scale = float(1 << (bit_depth - 8))
    if full_range:
        return y / float((1 << bit_depth) - 1)
    return (y - 16.0 * scale) / (219.0 * scale)


def _normalise_chroma(c: torch.Tensor, bit_depth: int, full_range: bool) -> torch.Tensor:
    scale = float(1 << (bit_depth - 8))
    if full_range:
        return (c - 128.0 * scale) / float((1 << bit_depth) - 1)
    return (c - 128.0 * scale) / (224.0 * scale)


def frames_to_rgb(
    frames: Sequence[VideoFrame],
    device: torch.device | str = "cpu",
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1], converted on ``device`` honouring matrix/range/depth."""
    first = _check_uniform(frames)
    device = torch.device(device)
    color = first.color
    full = color.range == "full"
    if first.planes[0].ndim == 3:  # packed RGB
        rgb = _upload([f.planes[0] for f in frames], device)
        return (rgb.permute(0, 3, 1, 2).to(dtype) / 255.0).clamp_(0.0, 1.0)
    y = _normalise_luma(_plane_batch(frames, 0, device, dtype), color.bit_depth, full)
    if len(first.planes) == 1 or color.matrix == "gray":
        return y.clamp_(0.0, 1.0).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    h, w = y.shape[-2:]
    cb = _normalise_chroma(_plane_batch(frames, 1, device, dtype), color.bit_depth, full)
    cr = _normalise_chroma(_plane_batch(frames, 2, device, dtype), color.bit_depth, full)
    cb = _to_luma_size(cb, h, w)
    cr = _to_luma_size(cr, h, w)
    kr, kb = _KR_KB.get(color.matrix, _KR_KB["bt709"])
    kg = 1.0 - kr - kb
    r = y + 2.0 * (1.0 - kr) * cr
    b = y + 2.0 * (1.0 - kb) * cb
    g = (y - kr * r - kb * b) / kg
    return torch.stack([r, g, b], dim=1).clamp_(0.0, 1.0)


def _rgb_luma_params(rgb_matrix: str | None, rgb_range: str | None) -> tuple[str, str]:
    """The (matrix, range) to derive an RGB frame's Y with, from a partner's tags."""
    if rgb_matrix is not None and rgb_matrix not in _KR_KB and rgb_matrix not in _NO_WEIGHTS:
        raise InvalidInputError(
            f"rgb_matrix must be one of {sorted(_KR_KB) + list(_NO_WEIGHTS)} or None; "
            f"got {rgb_matrix!r} (pass the other input's ColorInfo.matrix)"
        )
    if rgb_range is not None and rgb_range not in _RANGES:
        raise InvalidInputError(
            f"rgb_range must be one of {list(_RANGES)} or None; got {rgb_range!r} "
            "(pass the other input's ColorInfo.range)"
        )
    if rgb_matrix is None or rgb_matrix == "rgb":
        return RGB_LUMA_MATRIX, RGB_LUMA_RANGE
    matrix = rgb_matrix if rgb_matrix in _KR_KB else RGB_LUMA_MATRIX
    return matrix, rgb_range or RGB_LUMA_RANGE


def _rgb_luma(
    frames: Sequence[VideoFrame], device: torch.device, matrix: str, full_range: bool
) -> torch.Tensor:
    """(N, H, W) float32 8-bit Y code values of packed RGB frames, unrounded."""
    rgb = _upload([f.planes[0] for f in frames], device).to(torch.float32) / 255.0
    kr, kb = _KR_KB[matrix]
    luma = kr * rgb[..., 0] + (1.0 - kr - kb) * rgb[..., 1] + kb * rgb[..., 2]
    return 255.0 * luma if full_range else 16.0 + 219.0 * luma


def frames_to_luma(
    frames: Sequence[VideoFrame],
    device: torch.device | str = "cpu",
    *,
    rgb_matrix: str | None = None,
    rgb_range: str | None = None,
) -> torch.Tensor:
    """(N, H, W) float32 Y code values at native bit depth (for PSNR/SSIM on luma).

    RGB frames get 8-bit Y computed from their RGB values. To compare them with a YUV
    input, pass that input's ``ColorInfo.matrix`` and ``.range`` as ``rgb_matrix`` and
    ``rgb_range`` so both Y planes come from the same matrix; the default (None, or an
    "rgb" partner) is limited-range BT.709. A "gray" partner lends only its range.
    The arguments are ignored for YUV and gray frames, whose Y plane is returned as is.
    """
    first = _check_uniform(frames)
    device = torch.device(device)
    matrix, rng = _rgb_luma_params(rgb_matrix, rgb_range)
    if first.planes[0].ndim == 3:
        return _rgb_luma(frames, device, matrix, rng == "full")
    return _plane_batch(frames, 0, device, torch.float32)


def luma_thumbnails(
    frames: Sequence[VideoFrame],
    size: tuple[int, int] = DEFAULT_THUMBNAIL_SIZE,
    device: torch.device | str = "cpu",
    *,
    rgb_matrix: str | None = None,
    rgb_range: str | None = None,
) -> torch.Tensor:
    """(N, h, w) small luma pictures in [0, 1] (area-averaged) for alignment and cuts.

    ``size`` is (height, width). ``rgb_matrix``/``rgb_range``: as in :func:`frames_to_luma`.
    """
    first = _check_uniform(frames)
    y = frames_to_luma(frames, device, rgb_matrix=rgb_matrix, rgb_range=rgb_range)
    if first.planes[0].ndim == 3:
        _, rng = _rgb_luma_params(rgb_matrix, rgb_range)
        y = _normalise_luma(y, 8, rng == "full")
    else:
        y = _normalise_luma(y, first.color.bit_depth, first.color.range == "full")
    thumbs = F.interpolate(y.unsqueeze(1), size=size, mode="area").squeeze(1)
    return thumbs.clamp_(0.0, 1.0)
