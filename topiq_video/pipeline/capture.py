"""The worst-frame gallery, captured during the pass: no second decode, fixed memory.

For each metric a few candidate worst moments are kept as they go by, already reduced to
display size and JPEG-encoded: the encode, the reference and their amplified difference
(computed at comparison size, so downscaling cannot hide it). A new frame replaces the
candidates within ``spacing`` seconds of it only if it is worse (neighbours of one bad
moment look alike), and the pool never holds more than a fixed number. At the end the
gallery is picked from the pool with the same rule the pooled worst-frame lists use
(:func:`topiq_video.pooling.pick_worst`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from topiq_video.pipeline.options import GALLERY_SPACING_S
from topiq_video.pooling import pick_worst
from topiq_video.result import DIFF_GAIN, GALLERY_DIR, GalleryEntry, nonfinite_flag

GALLERY_MAX_WIDTH = 640
JPEG_QUALITY = 85
POOL_FACTOR = 4  # candidates kept per picture shown
MIN_POOL = 8

# Anchor colours sampled along the perceptually uniform "inferno" ramp; the lookup table
# interpolates linearly between them, visually indistinguishable at 256 steps.
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


def _colormap_lut() -> torch.Tensor:
    x = np.linspace(0.0, 1.0, len(_INFERNO_ANCHORS))
    t = np.linspace(0.0, 1.0, 256)
    channels = [np.interp(t, x, _INFERNO_ANCHORS[:, c]) for c in range(3)]
    lut = np.clip(np.rint(np.stack(channels, axis=1)), 0, 255).astype(np.uint8)
    return torch.from_numpy(lut)


_LUT = _colormap_lut()


def display_size(height: int, width: int, max_width: int = GALLERY_MAX_WIDTH) -> tuple[int, int]:
    if width <= max_width:
        return height, width
    return max(1, round(height * max_width / width)), max_width


def _to_display(rgb: torch.Tensor, max_width: int) -> torch.Tensor:
    """(3, H, W) floats in [0, 1] -> (3, h, w) uint8 at display size, on the CPU."""
    h, w = display_size(rgb.shape[-2], rgb.shape[-1], max_width)
    x = rgb[None].float()
    if (h, w) != tuple(rgb.shape[-2:]):
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return (x[0].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu()


def difference_picture(dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Colour-mapped ``|dist - ref| x DIFF_GAIN`` (mean over RGB) of two (3, H, W) pictures
    in [0, 1], as (3, H, W) uint8."""
    diff = (dist.float() - ref.float()).abs().mean(dim=0) * (255.0 * DIFF_GAIN)
    codes = diff.round().clamp(0, 255).to(torch.long).cpu()
    return _LUT[codes].permute(2, 0, 1).contiguous()


def encode_jpeg(chw: torch.Tensor) -> bytes:
    from torchvision.io import encode_jpeg as _encode

    # torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they still work
    # and avoid a new dependency, so the warning is silenced here rather than shown to users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _encode(chw.contiguous(), quality=JPEG_QUALITY).numpy().tobytes()


def pictures_of(
    dist: torch.Tensor,
    ref: torch.Tensor | None,
    max_width: int = GALLERY_MAX_WIDTH,
    extra: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, bytes], tuple[int, int]]:
    """The JPEG pictures of one frame: the encode, the reference and their amplified
    difference (computed at comparison size, so downscaling cannot hide it), and ``extra``
    pictures by role; (3, H, W) in [0, 1]. Also the (height, width) they are shown at."""
    shown = _to_display(dist, max_width)
    pictures = {"dist": encode_jpeg(shown)}
    if ref is not None:
        pictures["ref"] = encode_jpeg(_to_display(ref, max_width))
        full_diff = difference_picture(dist, ref).float() / 255.0
        pictures["diff"] = encode_jpeg(_to_display(full_diff, max_width))
    for role, picture in (extra or {}).items():
        pictures[role] = encode_jpeg(_to_display(picture, max_width))
    return pictures, (int(shown.shape[-2]), int(shown.shape[-1]))


@dataclass(frozen=True)
class Candidate:
    """A captured frame: its value and its pictures (JPEG) by role ("dist", "ref",
    "diff", and any extra the caller gave, e.g. "source")."""

    frame: int
    time: float
    value: float
    ref_frame: int | None
    ref_time: float | None
    pictures: dict[str, bytes]
    width: int
    height: int


class WorstFrameCapture:
    """Keeps, per metric, a bounded pool of worst-frame pictures as batches go by."""

    def __init__(
        self,
        metrics: Sequence[str],
        per_metric: int,
        *,
        spacing: float = GALLERY_SPACING_S,
        max_width: int = GALLERY_MAX_WIDTH,
    ) -> None:
        self.per_metric = int(per_metric)
        self.spacing = float(spacing)
        self.max_width = int(max_width)
        self.pool_size = max(MIN_POOL, POOL_FACTOR * self.per_metric)
        # Distinct bad moments (at least `spacing` apart), and the plain worst frames that
        # top the gallery up when a short video has too few distinct moments.
        self._pools: dict[str, list[Candidate]] = {m: [] for m in metrics}
        self._plain: dict[str, list[Candidate]] = {m: [] for m in metrics}
        # Metrics known only when the run ends (VMAF): their pictures, fetched afterwards.
        self._late: dict[str, list[Candidate]] = {}

    def set_late(self, metric: str, candidates: Sequence[Candidate]) -> None:
        """The pictures of a metric whose values came after the pass, worst first (picked
        with :func:`topiq_video.pooling.pick_worst` by the caller)."""
        self._late[metric] = list(candidates)[: self.per_metric]

    def _admits(self, pool: list[Candidate], time: float, value: float) -> bool:
        if math.isnan(value):
            return False
        for c in pool:
            if abs(c.time - time) < self.spacing and c.value <= value:
                return False  # a frame of this moment that is as bad is already kept
        if len(pool) < self.pool_size:
            return True
        return value < max(c.value for c in pool)

    def _admits_plain(self, plain: list[Candidate], value: float) -> bool:
        if math.isnan(value):
            return False
        return len(plain) < self.per_metric or value < max(c.value for c in plain)

    def offer(
        self,
        metric: str,
        values: Sequence[float],
        frames: Sequence[int],
        times: Sequence[float],
        dist_rgb: torch.Tensor,
        ref_rgb: torch.Tensor | None = None,
        ref_frames: Sequence[int | None] | None = None,
        ref_times: Sequence[float | None] | None = None,
        extra: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Consider a batch's frames of ``metric``; (N, 3, H, W) pictures in [0, 1].
        ``extra`` pictures (same frames) are kept beside them under their names."""
        if self.per_metric <= 0 or metric not in self._pools:
            return
        pool, plain = self._pools[metric], self._plain[metric]
        order = np.argsort(np.asarray(values, dtype=np.float64), kind="stable")
        for i in order.tolist():
            value = float(values[i])
            t = float(times[i])
            spaced = self._admits(pool, t, value)
            top = self._admits_plain(plain, value)
            if not (spaced or top):
                continue
            pictures, (height, width) = pictures_of(
                dist_rgb[i],
                None if ref_rgb is None else ref_rgb[i],
                self.max_width,
                {role: batch[i] for role, batch in (extra or {}).items()},
            )
            ref_frame = None if ref_frames is None else ref_frames[i]
            ref_time = None if ref_times is None else ref_times[i]
            candidate = Candidate(
                frame=int(frames[i]),
                time=t,
                value=value,
                ref_frame=None if ref_frame is None else int(ref_frame),
                ref_time=None if ref_time is None else float(ref_time),
                pictures=pictures,
                width=width,
                height=height,
            )
            if spaced:
                pool[:] = [c for c in pool if abs(c.time - t) >= self.spacing]
                pool.append(candidate)
                if len(pool) > self.pool_size:
                    pool.remove(max(pool, key=lambda c: (c.value, c.time)))
            if top:
                plain.append(candidate)
                if len(plain) > self.per_metric:
                    plain.remove(max(plain, key=lambda c: (c.value, c.time)))

    def picked(self) -> dict[str, list[Candidate]]:
        """Per metric, the candidates to show, worst first (see the module docstring)."""
        out: dict[str, list[Candidate]] = {}
        for metric, spaced in self._pools.items():
            if metric in self._late:
                out[metric] = self._late[metric]
                continue
            unique = {c.frame: c for c in [*spaced, *self._plain[metric]]}
            pool = sorted(unique.values(), key=lambda c: c.time)
            order = pick_worst(
                np.array([c.value for c in pool]),
                np.array([c.time for c in pool]),
                self.per_metric,
                spacing=self.spacing,
            )
            out[metric] = [pool[i] for i in order]
        return out

    def gallery(self) -> tuple[tuple[GalleryEntry, ...], dict[str, bytes]]:
        """The pictures to show, worst first per metric, and their JPEG files."""
        entries: list[GalleryEntry] = []
        images: dict[str, bytes] = {}
        for metric, picked in self.picked().items():
            slug = file_slug(metric)
            for rank, c in enumerate(picked, start=1):
                names = {role: f"{GALLERY_DIR}/{slug}-{rank}-{role}.jpg" for role in c.pictures}
                for role, name in names.items():
                    images[name] = c.pictures[role]
                entries.append(
                    GalleryEntry(
                        metric=metric,
                        rank=rank,
                        frame=c.frame,
                        time=c.time,
                        value=c.value if math.isfinite(c.value) else None,
                        value_nonfinite=nonfinite_flag(c.value),
                        ref_frame=c.ref_frame,
                        ref_time=c.ref_time,
                        dist_image=names["dist"],
                        ref_image=names.get("ref"),
                        diff_image=names.get("diff"),
                        width=c.width,
                        height=c.height,
                    )
                )
        return tuple(entries), images


def file_slug(text: str) -> str:
    """``text`` reduced to characters safe in a file name."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)
