"""Deterministic benchmark clips: procedural moving content encoded with libx264.

Flat colour would flatter both the encoder and the network (empty blocks, trivial
features), so each frame mixes two panning 1/f-noise textures (natural-image-like spectra)
through a drifting soft mask, adds hard-edged discs on Lissajous paths and a slowly moving
light gradient. Textures are periodic (built in the Fourier domain), so panning wraps
without seams. The same seed always gives the same pixels; generation runs in torch on the
chosen device because 300 frames of 2160p are slow in numpy.

One raw sequence is encoded twice: a high-quality "source" (low CRF) and a low-quality
"distorted" encode (high CRF) of the same frames, which is the FR pair; NR runs on the
distorted clip.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
import torch

SIZES: dict[str, tuple[int, int]] = {
    "smoke": (128, 72),
    "smoke-large": (192, 108),
    "360p": (640, 360),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
    "2160p": (3840, 2160),
}
DEFAULT_FPS = 30
SOURCE_CRF = 12
DIST_CRF = 38
DEFAULT_PRESET = "veryfast"
SEED = 20240607
N_DISCS = 5


@dataclass(frozen=True)
class ClipSpec:
    """What to generate; two equal specs always give identical files."""

    width: int
    height: int
    frames: int
    fps: int = DEFAULT_FPS
    seed: int = SEED
    source_crf: int = SOURCE_CRF
    dist_crf: int = DIST_CRF
    preset: str = DEFAULT_PRESET

    @property
    def stem(self) -> str:
        return (
            f"{self.width}x{self.height}_{self.frames}f_{self.fps}fps_s{self.seed}"
            f"_crf{self.source_crf}-{self.dist_crf}_{self.preset}"
        )


@dataclass(frozen=True)
class ClipPair:
    """The encoded files: ``source`` (high quality) and ``dist`` (low-quality encode)."""

    spec: ClipSpec
    source: Path
    dist: Path
    generate_seconds: float  # 0 when reused from an earlier run


def parse_size(text: str) -> tuple[int, int]:
    """'1080p' (a preset in SIZES) or 'WxH' -> (width, height); even sizes for yuv420p."""
    text = text.strip().lower()
    if text in SIZES:
        return SIZES[text]
    parts = text.replace(":", "x").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"size {text!r}: use one of {', '.join(SIZES)} or WIDTHxHEIGHT")
    width, height = int(parts[0]), int(parts[1])
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise ValueError(f"size {text!r}: width and height must be even and >= 32")
    return width, height


def _periodic_noise(
    height: int, width: int, slope: float, gen: torch.Generator, channels: int = 3
) -> torch.Tensor:
    """(C, H, W) noise with a 1/f**slope amplitude spectrum, zero mean, unit std, tileable."""
    white = torch.randn(channels, height, width, generator=gen)
    spectrum = torch.fft.rfft2(white)
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    radius = torch.sqrt(fy**2 + fx**2)
    radius[0, 0] = 1.0
    spectrum = spectrum / radius**slope
    spectrum[..., 0, 0] = 0
    noise = torch.fft.irfft2(spectrum, s=(height, width))
    noise = noise - noise.mean(dim=(1, 2), keepdim=True)
    return noise / noise.std(dim=(1, 2), keepdim=True).clamp_min(1e-8)


class SceneGenerator:
    """Renders frame ``t`` of the procedural scene as (H, W, 3) uint8 RGB."""

    def __init__(self, spec: ClipSpec, device: torch.device | str = "cpu") -> None:
        self.spec = spec
        self.device = torch.device(device)
        h, w = spec.height, spec.width
        gen = torch.Generator().manual_seed(spec.seed)
        # Correlated colour: mostly luminance with some chroma, like natural images.
        mix = torch.tensor([[1.0, 0.35, 0.1], [1.0, -0.1, 0.2], [1.0, -0.25, -0.35]])
        far = _periodic_noise(h, w, 1.6, gen)
        near = _periodic_noise(h, w, 1.1, gen)
        self.far = torch.einsum("oc,chw->ohw", mix, far).to(self.device)
        self.near = torch.einsum("oc,chw->ohw", mix, near).to(self.device)
        self.mask = _periodic_noise(h, w, 2.2, gen, channels=1).to(self.device)
        self.disc_params = torch.rand(N_DISCS, 8, generator=gen).tolist()
        self.yy = torch.arange(h, device=self.device, dtype=torch.float32)[:, None]
        self.xx = torch.arange(w, device=self.device, dtype=torch.float32)[None, :]

    def frame(self, t: int) -> np.ndarray:
        h, w = self.spec.height, self.spec.width
        # Pan speeds scale with the frame so motion looks alike at every resolution.
        unit = max(1, round(w / 640))
        far = torch.roll(self.far, shifts=(t * unit // 2, t * unit), dims=(1, 2))
        near = torch.roll(self.near, shifts=(-t * unit, 2 * t * unit), dims=(1, 2))
        mask = torch.roll(self.mask, shifts=(t * unit // 3, -t * unit // 2), dims=(1, 2))
        alpha = torch.sigmoid(3.0 * mask)
        img = 0.5 + 0.16 * (alpha * near + (1 - alpha) * far)
        phase = 2 * math.pi * t / 120.0
        img = img + 0.12 * torch.cos(2 * math.pi * self.xx / w - phase) * torch.sin(
            math.pi * self.yy / h
        )
        radius_unit = min(h, w)
        for p in self.disc_params:
            cx = w * (0.5 + 0.4 * math.sin(phase * (0.5 + p[0]) + 6 * p[1]))
            cy = h * (0.5 + 0.4 * math.cos(phase * (0.4 + p[2]) + 6 * p[3]))
            radius = radius_unit * (0.04 + 0.1 * p[4])
            inside = ((self.xx - cx) ** 2 + (self.yy - cy) ** 2) < radius**2
            colour = torch.tensor(p[5:8], device=self.device)[:, None, None]
            img = torch.where(inside, 0.15 + 0.7 * colour + 0.05 * near, img)
        img = (img.clamp(0, 1) * 255).round().to(torch.uint8)
        return img.permute(1, 2, 0).contiguous().cpu().numpy()

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(self.spec.frames):
            yield self.frame(t)


def _open_encoder(
    path: Path, spec: ClipSpec, crf: int
) -> tuple[av.container.OutputContainer, av.video.stream.VideoStream]:
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=spec.fps)
    stream.width, stream.height = spec.width, spec.height
    stream.pix_fmt = "yuv420p"
    # Tag BT.709 limited range so every reader converts to RGB the same way.
    cc = stream.codec_context
    cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1
    stream.options = {"crf": str(crf), "preset": spec.preset}
    return container, stream


def generate_clips(
    spec: ClipSpec, out_dir: str | Path, device: torch.device | str = "cpu"
) -> ClipPair:
    """Encode (or reuse) the source/distorted pair for ``spec`` under ``out_dir``."""
    import time

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = out_dir / f"{spec.stem}_source.mp4"
    dist = out_dir / f"{spec.stem}_dist.mp4"
    marker = out_dir / f"{spec.stem}.json"
    if marker.is_file() and source.is_file() and dist.is_file():
        return ClipPair(spec, source, dist, 0.0)
    start = time.perf_counter()
    tmp_source = source.with_suffix(".part.mp4")
    tmp_dist = dist.with_suffix(".part.mp4")
    encoders = [
        _open_encoder(tmp_source, spec, spec.source_crf),
        _open_encoder(tmp_dist, spec, spec.dist_crf),
    ]
    try:
        for rgb in SceneGenerator(spec, device):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            yuv = frame.reformat(format="yuv420p", dst_colorspace="ITU709")
            for container, stream in encoders:
                for packet in stream.encode(yuv):
                    container.mux(packet)
        for container, stream in encoders:
            for packet in stream.encode(None):
                container.mux(packet)
    finally:
        for container, _ in encoders:
            container.close()
    tmp_source.replace(source)
    tmp_dist.replace(dist)
    marker.write_text(json.dumps(asdict(spec)))
    return ClipPair(spec, source, dist, time.perf_counter() - start)
