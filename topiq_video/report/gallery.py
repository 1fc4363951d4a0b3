"""Worst-frame gallery images: the encode, the reference and an amplified difference, as JPEG."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import encode_jpeg

from topiq_video.errors import InvalidInputError

GALLERY_MAX_WIDTH = 640
JPEG_QUALITY = 85
DIFF_GAIN = 4
DIFF_CAPTION = (
    f"|encode − reference| × {DIFF_GAIN}, mean over RGB, shown with the inferno colour map "
    "(black = identical, yellow = large difference)"
)

# Anchor colours sampled along the perceptually uniform "inferno" ramp; the lookup table
# below interpolates linearly between them, which is visually indistinguishable at 256 steps.
_INFERNO_ANCHORS = np.array(
    [
        (0, 0, 4),
        (40, 11, 84),
        (101, 21, 110),
        (159, 42, 99),
        (212, 72, 66),
        (245, 125, 21),
        (250, 193, 39),
        (252, 255, 164),
    ],
    dtype=np.float64,
)


def _colormap_lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, len(_INFERNO_ANCHORS))
    t = np.linspace(0.0, 1.0, 256)
    channels = [np.interp(t, x, _INFERNO_ANCHORS[:, c]) for c in range(3)]
    return np.clip(np.rint(np.stack(channels, axis=1)), 0, 255).astype(np.uint8)


_LUT = _colormap_lut()


@dataclass(frozen=True)
class GalleryFrame:
    """One worst frame of one metric, with its images JPEG-encoded for the HTML report."""

    frame: int
    time: float
    metric: str
    value: float
    dist_jpeg: bytes
    ref_jpeg: bytes | None = None
    diff_jpeg: bytes | None = None
    ref_frame: int | None = None


def _check_rgb(name: str, image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidInputError(f"{name} must be an HxWx3 RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InvalidInputError(f"{name} must be uint8 RGB (0..255), got dtype {arr.dtype}")
    return arr


def _to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def _resize(chw: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if chw.shape[1] == height and chw.shape[2] == width:
        return chw
    out = F.interpolate(
        chw.unsqueeze(0).float(), size=(height, width), mode="bilinear", antialias=True
    )
    return out.squeeze(0).round().clamp(0, 255).to(torch.uint8)


def _target_size(height: int, width: int, max_width: int) -> tuple[int, int]:
    if width <= max_width:
        return height, width
    return max(1, round(height * max_width / width)), max_width


def _jpeg(chw: torch.Tensor) -> bytes:
    # torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they still work and
    # avoid a new dependency, so the warning is silenced here rather than shown to users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return encode_jpeg(chw.contiguous(), quality=JPEG_QUALITY).numpy().tobytes()


def difference_image(dist_rgb: np.ndarray, ref_rgb: np.ndarray) -> np.ndarray:
    """Colour-mapped ``|dist − ref| × DIFF_GAIN`` (mean over RGB) as uint8 HxWx3."""
    dist = _check_rgb("dist_rgb", dist_rgb)
    ref = _check_rgb("ref_rgb", ref_rgb)
    if ref.shape != dist.shape:
        ref = _resize(_to_chw(ref), dist.shape[0], dist.shape[1]).permute(1, 2, 0).numpy()
    diff = np.abs(dist.astype(np.int16) - ref.astype(np.int16)).mean(axis=2) * DIFF_GAIN
    return _LUT[np.clip(np.rint(diff), 0, 255).astype(np.uint8)]


def make_gallery_frame(
    frame: int,
    time: float,
    metric: str,
    value: float,
    dist_rgb: np.ndarray,
    ref_rgb: np.ndarray | None,
    *,
    max_width: int = GALLERY_MAX_WIDTH,
    ref_frame: int | None = None,
) -> GalleryFrame:
    """Encode one worst frame (and, in FR mode, its reference and difference) as JPEGs.

    Images wider than ``max_width`` are downscaled with antialiasing; the difference is computed
    at full resolution (the reference is resized to the encode's size if they differ) so that
    downscaling does not hide it.
    """
    if max_width < 16:
        raise InvalidInputError(f"max_width must be at least 16 pixels, got {max_width}")
    dist = _check_rgb("dist_rgb", dist_rgb)
    h, w = _target_size(dist.shape[0], dist.shape[1], max_width)
    dist_jpeg = _jpeg(_resize(_to_chw(dist), h, w))
    ref_jpeg = diff_jpeg = None
    if ref_rgb is not None:
        ref = _check_rgb("ref_rgb", ref_rgb)
        rh, rw = _target_size(ref.shape[0], ref.shape[1], max_width)
        ref_jpeg = _jpeg(_resize(_to_chw(ref), rh, rw))
        diff_jpeg = _jpeg(_resize(_to_chw(difference_image(dist, ref)), h, w))
    return GalleryFrame(
        frame=int(frame),
        time=float(time),
        metric=str(metric),
        value=float(value),
        dist_jpeg=dist_jpeg,
        ref_jpeg=ref_jpeg,
        diff_jpeg=diff_jpeg,
        ref_frame=None if ref_frame is None else int(ref_frame),
    )
