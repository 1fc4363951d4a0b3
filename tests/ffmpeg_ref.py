"""Test helper: FFmpeg's own per-frame PSNR-Y / SSIM-Y, run through PyAV's filter graph.

The graph is ``buffer(main) + buffer(reference) -> psnr|ssim -> buffersink``; the filters write
their per-frame results into the output frame's metadata (``lavfi.psnr.psnr.y``,
``lavfi.ssim.Y``), printed with six decimals.

Frames are either 2-D numpy luma planes (uint8 for 8-bit, uint16 for deeper formats; pushed as
``gray``/``grayNNle`` so no chroma is involved) or ready-made ``av.VideoFrame`` objects (any pixel
format the filters accept, e.g. yuv420p10le).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np
from av.filter import Graph

PSNR_Y_KEY = "lavfi.psnr.psnr.y"
SSIM_Y_KEY = "lavfi.ssim.Y"

_GRAY_FORMATS = {8: "gray", 10: "gray10le", 12: "gray12le", 16: "gray16le"}
_TIME_BASE = Fraction(1, 25)

Frame = np.ndarray | av.VideoFrame


def _to_video_frame(frame: Frame, bit_depth: int, index: int) -> av.VideoFrame:
    if isinstance(frame, av.VideoFrame):
        out = frame
    else:
        if frame.ndim != 2:
            raise ValueError(f"expected a 2-D luma plane, got shape {frame.shape}")
        dtype = np.uint8 if bit_depth == 8 else np.uint16
        out = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(frame, dtype=dtype), format=_GRAY_FORMATS[bit_depth]
        )
    # framesync pairs main and reference frames by timestamp.
    out.pts = index
    out.time_base = _TIME_BASE
    return out


def _drain(sink: av.filter.context.FilterContext, into: list[dict[str, str]]) -> None:
    while True:
        try:
            frame = sink.pull()
        except (av.BlockingIOError, av.EOFError):
            return
        into.append(dict(frame.metadata))


def run_dual_filter(
    filter_name: str, dist: Sequence[Frame], ref: Sequence[Frame], bit_depth: int = 8
) -> list[dict[str, str]]:
    """Run a two-input FFmpeg filter (main = dist, reference = ref); metadata of each output frame."""
    if len(dist) != len(ref) or not dist:
        raise ValueError(f"need equally many frames, got {len(dist)} and {len(ref)}")
    first = _to_video_frame(dist[0], bit_depth, 0)
    graph = Graph()
    srcs = [
        graph.add_buffer(
            width=first.width,
            height=first.height,
            format=first.format.name,
            time_base=_TIME_BASE,
        )
        for _ in range(2)
    ]
    filt = graph.add(filter_name)
    sink = graph.add("buffersink")
    srcs[0].link_to(filt, 0, 0)
    srcs[1].link_to(filt, 0, 1)
    filt.link_to(sink)
    graph.configure()

    results: list[dict[str, str]] = []
    for i, (d, r) in enumerate(zip(dist, ref, strict=True)):
        srcs[0].push(_to_video_frame(d, bit_depth, i))
        srcs[1].push(_to_video_frame(r, bit_depth, i))
        _drain(sink, results)
    for src in srcs:
        src.push(None)
    _drain(sink, results)
    if len(results) != len(dist):
        raise RuntimeError(f"{filter_name} returned {len(results)} frames for {len(dist)} pairs")
    return results


def ffmpeg_psnr_y(dist: Sequence[Frame], ref: Sequence[Frame], bit_depth: int = 8) -> np.ndarray:
    """FFmpeg's per-frame PSNR of the luma plane (``inf`` for identical frames)."""
    meta = run_dual_filter("psnr", dist, ref, bit_depth)
    return np.array([float(m[PSNR_Y_KEY]) for m in meta])


def ffmpeg_ssim_y(dist: Sequence[Frame], ref: Sequence[Frame], bit_depth: int = 8) -> np.ndarray:
    """FFmpeg's per-frame SSIM of the luma plane."""
    meta = run_dual_filter("ssim", dist, ref, bit_depth)
    return np.array([float(m[SSIM_Y_KEY]) for m in meta])
