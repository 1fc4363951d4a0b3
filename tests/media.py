"""Tiny synthetic test clips generated with PyAV (shared by all test modules).

Content is a deterministic function of (normalised position, time in seconds, scene), so a
25 fps and a 30 fps render show the same picture at the same instant, a clip trimmed by K
frames shows frame K of the untrimmed clip first, and a downscaled render is the box
average of the full-size render. Everything here is test support: it never imports the
package under test.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

DEFAULT_FRAMES = 48
DEFAULT_WIDTH = 160
DEFAULT_HEIGHT = 90
DEFAULT_FPS = 25
DEFAULT_CRF = 18
DEFAULT_SEED = 1234

# Encoder names we pass to PyAV's reformatter for tagging the RGB->YUV conversion.
_MATRIX_TO_SWS = {"bt709": "ITU709", "bt601": "ITU601", "bt2020": "BT2020"}
# AVColorSpace numbers written into the stream so decoders see the tag.
_MATRIX_TO_AVCOL = {"bt709": 1, "bt601": 6, "bt2020": 9}
_PRIMARIES_FOR_MATRIX = {"bt709": 1, "bt601": 6, "bt2020": 9}
_TRC_FOR_MATRIX = {"bt709": 1, "bt601": 6, "bt2020": 14}
_RANGE_TO_AV = {"limited": 1, "full": 2}


def scene_index(t: float, cut_times: Sequence[float]) -> int:
    """Scene number at time ``t``: how many cuts lie at or before it."""
    return sum(1 for c in cut_times if t + 1e-9 >= c)


def render_rgb(
    t: float,
    width: int,
    height: int,
    *,
    scene: int = 0,
    seed: int = DEFAULT_SEED,
    content: str = "moving",
) -> np.ndarray:
    """One (H, W, 3) uint8 RGB picture at time ``t`` seconds.

    ``content``: "moving" (drifting gradient, sinusoid texture, two moving shapes),
    "static" (the same at t=0 for every t) or "flat" (mid grey).
    """
    if content == "flat":
        return np.full((height, width, 3), 128, np.uint8)
    if content == "static":
        t = 0.0
    elif content != "moving":
        raise ValueError(f"unknown content {content!r}")
    rng = np.random.default_rng(seed + 7919 * scene)
    # Pixel centres in normalised coordinates so every size samples the same scene.
    u = (np.arange(width, dtype=np.float64) + 0.5) / width
    v = (np.arange(height, dtype=np.float64) + 0.5) / height
    uu, vv = np.meshgrid(u, v)
    base = rng.uniform(0.2, 0.8, size=3)
    slope = rng.uniform(-0.3, 0.3, size=(3, 2))
    img = np.empty((height, width, 3), np.float64)
    for c in range(3):
        img[..., c] = base[c] + slope[c, 0] * (uu - 0.5) + slope[c, 1] * (vv - 0.5)
    # Texture: a sum of oriented sinusoids that drift with time (pan-like motion).
    tex = np.zeros_like(uu)
    for _ in range(8):
        fx, fy = rng.uniform(-40, 40, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.02, 0.06)
        tex += amp * np.sin(2 * np.pi * (fx * (uu - 0.15 * t) + fy * (vv - 0.05 * t)) + phase)
    img += tex[..., None] * rng.uniform(0.5, 1.0, size=3)
    # A disc and a box moving along smooth paths.
    cx = 0.5 + 0.3 * np.sin(2 * np.pi * 0.4 * t + rng.uniform(0, 6))
    cy = 0.5 + 0.25 * np.cos(2 * np.pi * 0.3 * t + rng.uniform(0, 6))
    disc = ((uu - cx) * width) ** 2 + ((vv - cy) * height) ** 2 < (0.18 * height) ** 2
    img[disc] = rng.uniform(0.0, 1.0, size=3)
    bx = (0.1 + 0.35 * t) % 1.0
    box = (np.abs(uu - bx) < 0.08) & (np.abs(vv - 0.3) < 0.12)
    img[box] = rng.uniform(0.0, 1.0, size=3)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _box_downscale(img: np.ndarray, factor: int) -> np.ndarray:
    h, w = img.shape[0] // factor, img.shape[1] // factor
    blocks = img[: h * factor, : w * factor].reshape(h, factor, w, factor, 3).astype(np.float64)
    return (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def clip_frames_rgb(
    n_frames: int = DEFAULT_FRAMES,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    fps: int | Fraction = DEFAULT_FPS,
    *,
    content: str = "moving",
    cuts: Sequence[int] = (),
    time_offset: float = 0.0,
    render_factor: int = 1,
    seed: int = DEFAULT_SEED,
) -> list[np.ndarray]:
    """The RGB pictures that :func:`make_clip` encodes (the pristine source)."""
    fps = Fraction(fps)
    cut_times = [float(c / fps) for c in cuts]
    out = []
    for i in range(n_frames):
        t = time_offset + float(i / fps)
        img = render_rgb(
            t,
            width * render_factor,
            height * render_factor,
            scene=scene_index(t, cut_times),
            seed=seed,
            content=content,
        )
        out.append(_box_downscale(img, render_factor) if render_factor > 1 else img)
    return out


def make_clip(
    path: str | Path,
    *,
    n_frames: int = DEFAULT_FRAMES,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    fps: int | Fraction = DEFAULT_FPS,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    content: str = "moving",
    start_pts: int | None = None,
    color_range: str | None = None,
    colorspace: str | None = None,
    crf: int = DEFAULT_CRF,
    cuts: Sequence[int] = (),
    time_offset: float = 0.0,
    render_factor: int = 1,
    rotation: int = 0,
    metadata: dict[str, str] | None = None,
    seed: int = DEFAULT_SEED,
    gop: int | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode a synthetic clip and return its path.

    ``cuts``: frame indices (at this ``fps``) where a new scene starts.
    ``start_pts``: pts of the first frame in units of 1/fps (container permitting).
    ``color_range`` ("limited"/"full") and ``colorspace`` ("bt601"/"bt709"/"bt2020"):
    the matrix and range used for RGB->YUV *and* written as tags; None leaves the stream
    untagged (the pixels then use swscale's default, BT.601 limited).
    ``time_offset``: content time of the first frame, in seconds.
    ``render_factor``: render at this multiple of the size, then box-average down.
    ``rotation``: display-matrix rotation in degrees (counter-clockwise, as PyAV reads back).
    ``gop``: fixed keyframe interval in frames (libx264: no scene-cut keyframes either);
    None keeps the encoder's default.
    ``container_options``: muxer options, e.g. ``{"movflags": "faststart"}``.
    """
    path = Path(path)
    fps = Fraction(fps)
    pictures = clip_frames_rgb(
        n_frames,
        width,
        height,
        fps,
        content=content,
        cuts=cuts,
        time_offset=time_offset,
        render_factor=render_factor,
        seed=seed,
    )
    with av.open(str(path), "w", options=container_options or {}) as out:
        if metadata:
            out.metadata.update(metadata)
        stream = out.add_stream(codec, rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = pix_fmt
        cc = stream.codec_context
        if codec in ("libx264", "libx265"):
            cc.options = {"crf": str(crf), "preset": "veryfast"}
            if codec == "libx265":
                cc.options["x265-params"] = "log-level=none"
            if gop is not None and codec == "libx264":
                cc.options["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        if gop is not None:
            cc.gop_size = gop
        if colorspace is not None:
            cc.colorspace = _MATRIX_TO_AVCOL[colorspace]
            cc.color_primaries = _PRIMARIES_FOR_MATRIX[colorspace]
            cc.color_trc = _TRC_FOR_MATRIX[colorspace]
        if color_range is not None:
            cc.color_range = _RANGE_TO_AV[color_range]
        if rotation:
            stream.set_display_rotation(rotation)
        for i, rgb in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            kwargs = {}
            if colorspace is not None:
                kwargs["dst_colorspace"] = _MATRIX_TO_SWS[colorspace]
            if color_range is not None:
                kwargs["dst_color_range"] = "JPEG" if color_range == "full" else "MPEG"
            yuv = frame.reformat(format=pix_fmt, **kwargs)
            if colorspace is not None:
                yuv.colorspace = _MATRIX_TO_AVCOL[colorspace]
            if color_range is not None:
                yuv.color_range = _RANGE_TO_AV[color_range]
            # The encoder's time base is 1/fps (PyAV's default for ``rate``); setting
            # stream.time_base explicitly makes PyAV 18 emit bad pts, so we don't.
            yuv.pts = (start_pts or 0) + i
            for packet in stream.encode(yuv):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def make_trimmed_clip(path: str | Path, trim: int, **kwargs) -> Path:
    """The clip ``make_clip(**kwargs)`` would give, minus its first ``trim`` frames."""
    fps = Fraction(kwargs.get("fps", DEFAULT_FPS))
    n = kwargs.pop("n_frames", DEFAULT_FRAMES)
    # Cuts stay in the untrimmed clip's frame numbers: make_clip turns them into times,
    # and this clip's frame times already start ``trim`` frames late.
    offset = kwargs.pop("time_offset", 0.0) + float(trim / fps)
    return make_clip(path, n_frames=n - trim, time_offset=offset, **kwargs)


def make_rate_variant(
    path: str | Path, fps: int | Fraction, *, seconds: float | None = None, **kwargs
) -> Path:
    """The same content rendered at another frame rate (same scene at the same instant).

    ``seconds`` defaults to the duration of the default 25 fps clip. Cuts given in frame
    indices of the 25 fps clip via ``cuts`` are converted to this rate.
    """
    base_fps = Fraction(kwargs.pop("base_fps", DEFAULT_FPS))
    if seconds is None:
        seconds = float(kwargs.pop("base_frames", DEFAULT_FRAMES) / base_fps)
    fps = Fraction(fps)
    # A cut at base frame c lies at c/base_fps; the first frame at or after it starts the scene.
    cuts = [int(-(-(c * fps) // base_fps)) for c in kwargs.pop("cuts", ())]
    n = int(round(seconds * fps))
    return make_clip(path, n_frames=n, fps=fps, cuts=cuts, **kwargs)


def make_downscaled_clip(path: str | Path, factor: int = 2, **kwargs) -> Path:
    """The content at 1/``factor`` of the size, rounded down to even dimensions.

    Like an ABR ladder rung scaled full-frame (FFmpeg ``scale=w:h``): the picture is
    rendered at ``factor`` times the output size and box-averaged, so with the default
    160x90 source the result is 80x44 showing the whole frame (a 1 % vertical squeeze).
    """
    width = kwargs.pop("width", DEFAULT_WIDTH)
    height = kwargs.pop("height", DEFAULT_HEIGHT)
    out_w = max(2, (width // factor) // 2 * 2)
    out_h = max(2, (height // factor) // 2 * 2)
    return make_clip(path, width=out_w, height=out_h, render_factor=factor, **kwargs)


def make_10bit_clip(path: str | Path, **kwargs) -> Path:
    """yuv420p10le H.264 (High 10)."""
    return make_clip(path, pix_fmt=kwargs.pop("pix_fmt", "yuv420p10le"), **kwargs)


def make_yuv444_clip(path: str | Path, **kwargs) -> Path:
    """yuv444p H.264 (High 4:4:4)."""
    return make_clip(path, pix_fmt="yuv444p", **kwargs)


def make_gray_clip(path: str | Path, **kwargs) -> Path:
    """Monochrome FFV1 (use a .mkv path): FFmpeg's H.264 decoder would return gray
    H.264 as yuv420p with flat chroma, so that would not exercise a gray decode path."""
    kwargs.setdefault("codec", "ffv1")
    return make_clip(path, pix_fmt=kwargs.pop("pix_fmt", "gray"), **kwargs)


def make_raw_clip(path: str | Path, pix_fmt: str, **kwargs) -> Path:
    """Uncompressed frames in any pix_fmt (nv12, rgb24, bgr24, gbrp, gray10le,
    yuv420p12le, yuyv422, ...). Use a .nut path: NUT stores them all as-is."""
    kwargs.setdefault("n_frames", 6)
    return make_clip(path, codec="rawvideo", pix_fmt=pix_fmt, **kwargs)


def make_audio_only(path: str | Path, seconds: float = 0.5) -> Path:
    """An AAC-only file with no video stream."""
    path = Path(path)
    rate = 48000
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        n = int(seconds * rate)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
        for start in range(0, n, 1024):
            chunk = tone[start : start + 1024][None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def make_zero_frame_clip(path: str | Path, width: int = 64, height: int = 48) -> Path:
    """A container whose video stream has packets but not one decodable frame.

    (A truly empty track does not survive: the MP4 demuxer drops it, MKV fails to open.)
    Use .mp4 or .mkv. The packets hold zero bytes where H.264 NAL units should be.
    """
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=DEFAULT_FPS)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        for i in range(3):
            packet = av.Packet(bytes(64))
            packet.stream = stream
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, DEFAULT_FPS)
            out.mux(packet)
    return path


def make_text_file(path: str | Path) -> Path:
    """A plain text file (give it a video suffix to test bad-input handling)."""
    path = Path(path)
    path.write_text("this is not a video\n" * 20)
    return path


def make_truncated_copy(src: str | Path, dst: str | Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes (an interrupted download)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def make_corrupted_copy(
    src: str | Path,
    dst: str | Path,
    *,
    start_fraction: float = 0.4,
    length_fraction: float = 0.1,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Copy ``src`` with a span of random bytes overwritten mid-file (bit rot)."""
    data = bytearray(Path(src).read_bytes())
    start = int(len(data) * start_fraction)
    n = max(1, int(len(data) * length_fraction))
    rng = np.random.default_rng(seed)
    data[start : start + n] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst
