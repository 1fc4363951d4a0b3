"""Test helper: frame-rate conversions with a known answer, and encodes of given pictures.

Each converted frame carries the picture of one source frame; the helpers return that source
frame's index beside the pictures, so pairing can be checked against the truth:

- :func:`sample_and_hold`: frame k at k / out_fps shows the latest source frame at or before
  that instant (what a capture card or a naive player does);
- :func:`ffmpeg_fps`: FFmpeg's own ``fps`` filter, run through PyAV's filter graph; which
  source frame each output frame carries is found by exact pixel equality with the inputs
  (the filter only repeats or drops frames, it never changes their pixels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.filter import Graph


def sample_and_hold(
    pictures: Sequence[np.ndarray], in_fps: int | Fraction, out_fps: int | Fraction
) -> tuple[list[np.ndarray], list[int]]:
    """Re-time to ``out_fps`` by holding each picture until the next one is due."""
    in_fps, out_fps = Fraction(in_fps), Fraction(out_fps)
    n_out = math.floor(len(pictures) * out_fps / in_fps)
    # Exact rational arithmetic: frame k at k / out_fps shows floor(k * in_fps / out_fps).
    source = [math.floor(k * in_fps / out_fps) for k in range(n_out)]
    return [pictures[i] for i in source], source


def ffmpeg_fps(
    pictures: Sequence[np.ndarray], in_fps: int | Fraction, out_fps: int | Fraction
) -> tuple[list[np.ndarray], list[int]]:
    """Re-time RGB pictures with FFmpeg's ``fps`` filter (default rounding, ``near``)."""
    in_fps = Fraction(in_fps)
    height, width = pictures[0].shape[:2]
    graph = Graph()
    src = graph.add_buffer(width=width, height=height, format="rgb24", time_base=1 / in_fps)
    fps = graph.add("fps", f"fps={Fraction(out_fps)}")
    sink = graph.add("buffersink")
    src.link_to(fps)
    fps.link_to(sink)
    graph.configure()

    out: list[np.ndarray] = []

    def drain() -> None:
        while True:
            try:
                frame = sink.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            out.append(frame.to_ndarray(format="rgb24"))

    for i, rgb in enumerate(pictures):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = i
        frame.time_base = 1 / in_fps
        src.push(frame)
        drain()
    src.push(None)
    drain()
    return out, [_identify(picture, pictures) for picture in out]


def _identify(picture: np.ndarray, pictures: Sequence[np.ndarray]) -> int:
    matches = [i for i, p in enumerate(pictures) if np.array_equal(p, picture)]
    if len(matches) != 1:
        raise AssertionError(f"output picture matches source frames {matches}, not exactly one")
    return matches[0]


def encode_pictures(
    path: str | Path, pictures: Sequence[np.ndarray], fps: int | Fraction, *, crf: int = 18
) -> Path:
    """Encode RGB pictures as H.264 (libx264, yuv420p) at a constant ``fps``."""
    path = Path(path)
    height, width = pictures[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"crf": str(crf), "preset": "veryfast"}
        for i, rgb in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i  # the encoder's time base is 1 / fps
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
