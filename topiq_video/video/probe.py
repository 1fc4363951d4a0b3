"""What a video source is: stream parameters and colour, read from the open container.

:func:`describe` reads the container's header only; a :class:`~topiq_video.video.reader.PyAVSource`
refines the result from the first decoded picture (rotation side data) and the first packets'
timestamps (variable frame rate). :func:`probe` does both for callers who only want to know.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from topiq_video.files import display_text
from topiq_video.video.source import (
    DEFAULT_OPEN_TIMEOUT,
    is_live_scheme,
    redact_source,
    scheme_of,
    video_stream,
)

if TYPE_CHECKING:
    import av.container

UNTAGGED_HD_HEIGHT = 720  # untagged sources at least this tall are assumed BT.709
VFR_GAP_TOLERANCE = 0.25  # a gap this far (relative) from the typical one is irregular
VFR_FRACTION = 0.05  # more irregular gaps than this: variable frame rate
MAX_TAG_CHARS = 2000  # container tags are untrusted: keep them short

# AVColorSpace -> our matrix names.
_MATRIX_NAMES = {0: "rgb", 1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020", 10: "bt2020"}
_TRANSFER_NAMES = {
    1: "bt709",
    4: "gamma22",
    5: "gamma28",
    6: "bt601",
    8: "linear",
    13: "srgb",
    14: "bt709",  # BT.2020 10-bit uses the BT.709 curve
    15: "bt709",
    16: "pq",
    18: "hlg",
}
_PRIMARIES_NAMES = {1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020", 11: "p3", 12: "p3"}
_FIELD_ORDER = {
    1: "progressive",
    2: "interlaced",
    3: "interlaced",
    4: "interlaced",
    5: "interlaced",
}

# Native formats handed out without conversion, by plane layout.
PLANAR_YUV = {
    f"yuv{s}p{d}"
    for s in ("420", "422", "444", "440")
    for d in ("", "10le", "12le", "16le", "9le", "14le")
} | {"yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p"}
GRAY = {"gray", "gray10le", "gray12le", "gray16le", "gray9le", "gray14le"}
SEMI_PLANAR = {"nv12": False, "nv21": True}  # value: whether V comes first
RGB_PACKED = {"rgb24": False, "bgr24": True}  # value: whether channels are reversed
_JPEG_RANGE = {"yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p"}


@dataclass(frozen=True)
class ColorInfo:
    """How to turn code values into RGB. ``guessed`` is True when matrix or range came
    from the untagged-source rule rather than from the stream."""

    matrix: str  # "bt601" | "bt709" | "bt2020" | "rgb" | "gray"
    range: str  # "limited" | "full"
    transfer: str
    primaries: str
    bit_depth: int
    guessed: bool


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a source: from its header, refined by its first frames."""

    source: str  # fit to show: URL secrets masked, undecodable bytes replaced
    container: str
    codec: str
    width: int  # as displayed, after rotation
    height: int
    pix_fmt: str
    bit_depth: int
    fps: Fraction | None
    time_base: Fraction
    start_time: float
    duration: float | None
    frame_count: int | None
    color: ColorInfo
    rotation: int  # counter-clockwise degrees to turn coded pictures upright
    scan_type: str  # "progressive" | "interlaced" | "unknown"
    is_vfr: bool | None  # None until enough timestamps were seen
    metadata: dict[str, str]  # container tags: untrusted strings
    is_live: bool

    @property
    def frame_duration(self) -> float | None:
        return 1.0 / float(self.fps) if self.fps else None


def bit_depth_of(pix_fmt: str | None) -> int:
    import av

    if not pix_fmt:
        return 8
    try:
        return int(av.VideoFormat(pix_fmt).components[0].bits)
    except (ValueError, IndexError):
        return 8


def fallback_format(fmt: av.VideoFormat) -> str:
    """Nearest supported format for swscale when the decoder gives something exotic."""
    bits = fmt.components[0].bits if fmt.components else 8
    if fmt.is_rgb:
        return "rgb24"
    if len(fmt.components) <= 2:
        if bits <= 8:
            return "gray"
        return "gray16le" if bits > 12 else f"gray{bits if bits in (10, 12) else 16}le"
    sub_w = fmt.chroma_width(64) < 64
    sub_h = fmt.chroma_height(64) < 64
    layout = "420" if sub_w and sub_h else "422" if sub_w else "444"
    depth = "" if bits <= 8 else "10le" if bits <= 10 else "12le" if bits <= 12 else "16le"
    return f"yuv{layout}p{depth}"


def delivered_pix_fmt(pix_fmt: str) -> str:
    """The pix_fmt of the planes a VideoFrame carries for a decoder's ``pix_fmt``:
    native planar YUV/gray as is, every RGB layout as rgb24."""
    import av

    if pix_fmt in PLANAR_YUV or pix_fmt in GRAY:
        return pix_fmt
    if pix_fmt in SEMI_PLANAR:
        return "yuv420p"
    if pix_fmt in RGB_PACKED or pix_fmt == "gbrp":
        return "rgb24"
    try:
        return fallback_format(av.VideoFormat(pix_fmt))
    except ValueError:  # "unknown" before the first frame, or a name FFmpeg lacks
        return pix_fmt


def color_info(
    colorspace: int,
    color_range: int,
    transfer: int,
    primaries: int,
    pix_fmt: str,
    height: int,
) -> ColorInfo:
    """Resolve stream/frame tags (AVColor* numbers) of a decoder's ``pix_fmt`` into the
    :class:`ColorInfo` of the planes delivered for it.

    Untagged sources follow the common player rule: BT.709 when at least 720 lines tall,
    else BT.601; limited range unless the pix_fmt is a JPEG-range (yuvj*) one.
    """
    delivered = delivered_pix_fmt(pix_fmt)
    fmt_rgb = delivered == "rgb24"
    guessed = False
    if delivered in GRAY:
        matrix = "gray"
    elif fmt_rgb:
        matrix = "rgb"
    elif colorspace in _MATRIX_NAMES and colorspace != 0:
        matrix = _MATRIX_NAMES[colorspace]
    else:
        matrix = "bt709" if height >= UNTAGGED_HD_HEIGHT else "bt601"
        guessed = True
    if fmt_rgb or pix_fmt in _JPEG_RANGE or color_range == 2:
        rng = "full"
    elif color_range == 1:
        rng = "limited"
    else:
        rng = "limited"
        guessed = True
    return ColorInfo(
        matrix=matrix,
        range=rng,
        transfer=_TRANSFER_NAMES.get(int(transfer or 2), "unknown"),
        primaries=_PRIMARIES_NAMES.get(int(primaries or 2), "unknown"),
        bit_depth=bit_depth_of(delivered),
        guessed=guessed,
    )


def normalise_rotation(degrees: float) -> int:
    return int(round(degrees / 90.0)) * 90 % 360


def _stream_rotation(stream: av.video.VideoStream) -> int:
    try:
        tag = stream.metadata.get("rotate")
        # The legacy "rotate" tag is clockwise; we use counter-clockwise degrees.
        return normalise_rotation(-int(float(tag))) if tag is not None else 0
    except ValueError:
        return 0


def timestamps_vary(pts: list[int]) -> bool | None:
    """Variable frame rate from presentation timestamps: many gaps far from the typical one
    (a CFR stream with ms rounding or a dropped frame stays constant)."""
    gaps = typical_gaps(pts)
    if gaps is None:
        return None
    typical = float(np.median(gaps))
    # Whole multiples of the typical gap are frames missing from a constant-rate stream
    # (drops, damage), not a variable rate.
    steps = np.maximum(np.round(gaps / typical), 1.0)
    off = np.abs(gaps - steps * typical) > VFR_GAP_TOLERANCE * typical
    return bool(off.mean() > VFR_FRACTION)


def typical_gaps(pts: list[int]) -> np.ndarray | None:
    """Positive gaps between sorted timestamps, or None when too few to judge."""
    if len(pts) < 8:
        return None
    gaps = np.diff(np.sort(np.asarray(pts, dtype=np.int64)))
    gaps = gaps[gaps > 0]
    return gaps if gaps.size >= 4 else None


def _tags(metadata: dict) -> dict[str, str]:
    return {
        display_text(str(k))[:200]: display_text(str(v))[:MAX_TAG_CHARS]
        for k, v in metadata.items()
    }


def describe(container: av.container.InputContainer, source: str | Path) -> VideoInfo:
    """The source's parameters from its open container (its header; nothing decoded)."""
    src = str(source)
    stream = video_stream(container, src)
    cc = stream.codec_context
    pix_fmt = cc.pix_fmt or "unknown"
    fps = stream.average_rate or stream.guessed_rate
    fps = Fraction(fps) if fps else None
    tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1_000_000)
    start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
    if stream.duration is not None:
        duration = float(stream.duration * tb)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = None
    rotation = _stream_rotation(stream)
    width, height = cc.width, cc.height
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(
        source=display_text(redact_source(src)),
        container=container.format.name,
        codec=cc.name,
        width=width,
        height=height,
        pix_fmt=pix_fmt,
        bit_depth=bit_depth_of(delivered_pix_fmt(pix_fmt)),
        fps=fps,
        time_base=tb,
        start_time=start,
        duration=duration,
        frame_count=stream.frames or None,
        color=color_info(
            cc.colorspace, cc.color_range, cc.color_trc, cc.color_primaries, pix_fmt, cc.height
        ),
        rotation=rotation,
        scan_type=_FIELD_ORDER.get(int(cc.field_order or 0), "unknown"),
        is_vfr=None,
        metadata=_tags(dict(container.metadata)),
        # Real-time protocols are live; so is a URL with no end (e.g. live HLS), while
        # HTTP(S)/FTP files with a duration are ordinary files. A local file without a
        # duration (a raw elementary stream) is still a file.
        is_live=is_live_scheme(source)
        or (duration is None and scheme_of(source) not in ("", "file")),
    )


def probe(source: str | Path, *, timeout: float = DEFAULT_OPEN_TIMEOUT) -> VideoInfo:
    """Open ``source``, read its header and first picture, and close it."""
    from topiq_video.video.reader import PyAVSource

    with PyAVSource(source, timeout=timeout) as src:
        src.lookahead(0.0)
        return src.info
