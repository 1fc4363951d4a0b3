"""Video decoding with PyAV: probing, a threaded frame reader and random frame access.

Decoding runs in a background thread that feeds a small bounded queue, so demuxing and
decoding overlap with scoring; any exception in the thread is re-raised in the consumer,
and the thread is always joined, also when the consumer stops early.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from urllib.parse import urlparse

import av
import av.error
import numpy as np

from topiq_video.errors import VideoError

logger = logging.getLogger(__name__)

DEFAULT_OPEN_TIMEOUT = 10.0  # seconds to open a network source or wait for its data
DEFAULT_QUEUE_SIZE = 8  # decoded frames buffered ahead of the consumer
UNTAGGED_HD_HEIGHT = 720  # untagged sources at least this tall are assumed BT.709
TRUNCATION_TOLERANCE_FRAMES = 2  # container frame counts may be off by this much
NETWORK_SCHEMES = frozenset(
    {"rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp", "http", "https", "hls"}
)

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
_PLANAR_YUV = {
    f"yuv{s}p{d}"
    for s in ("420", "422", "444", "440")
    for d in ("", "10le", "12le", "16le", "9le", "14le")
} | {"yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p"}
_GRAY = {"gray", "gray10le", "gray12le", "gray16le", "gray9le", "gray14le"}
_SEMI_PLANAR = {"nv12": False, "nv21": True}  # value: whether V comes first
_RGB_PACKED = {"rgb24": False, "bgr24": True}  # value: whether channels are reversed
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
    """What :func:`probe` learns about a source without decoding all of it."""

    source: str
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
    is_vfr: bool | None
    metadata: dict[str, str]  # container tags: untrusted strings
    is_live: bool


@dataclass(frozen=True)
class VideoFrame:
    """One decoded, upright picture at native bit depth."""

    index: int
    pts: int
    time_base: Fraction
    time: float  # seconds since the stream's first frame
    planes: tuple[np.ndarray, ...]
    pix_fmt: str
    color: ColorInfo
    width: int
    height: int


@dataclass
class DecodeStats:
    """Running counts, updated by the decoding thread; read them after iteration."""

    frames_decoded: int = 0
    decode_errors: int = 0
    corrupt_frames: int = 0
    truncated_at: int | None = None
    stopped_early: str | None = None
    error_messages: list[str] = field(default_factory=list)


def is_network_source(source: str | Path) -> bool:
    """True for URLs read over a network (RTSP, UDP, HTTP(S), HLS ...)."""
    if isinstance(source, Path):
        return False
    return urlparse(str(source)).scheme.lower() in NETWORK_SCHEMES


def _open_container(source: str | Path, open_timeout: float) -> av.container.InputContainer:
    src = str(source)
    if is_network_source(source):
        micro = str(int(open_timeout * 1_000_000))
        scheme = urlparse(src).scheme.lower()
        # rw_timeout bounds every protocol's reads; rtsp and udp/http also take "timeout"
        # (all in microseconds); av.open's own timeout bounds it via the interrupt callback.
        options = {"rw_timeout": micro, "timeout": micro}
        if scheme.startswith("rtsp"):
            options["rtsp_transport"] = "tcp"
        try:
            return av.open(src, options=options, timeout=(open_timeout, open_timeout))
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoError(
                f"Could not open the stream {src!r} within {open_timeout:g} s ({exc}). "
                "Check that the URL is right and the server is reachable, or raise the "
                "open timeout."
            ) from exc
    path = Path(src)
    if not path.exists():
        raise VideoError(f"Video file {src!r} does not exist. Check the path.")
    if path.is_dir():
        raise VideoError(f"{src!r} is a directory. Pass a video file inside it.")
    try:
        return av.open(src)
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(
            f"{src!r} is not a readable video file ({exc}). Check that it is a complete "
            "video (e.g. MP4, MKV, MOV, TS) and not a partial download or another file type."
        ) from exc


def _video_stream(container: av.container.InputContainer, source: str) -> av.video.VideoStream:
    if not container.streams.video:
        raise VideoError(
            f"{source!r} has no video stream (it may be audio-only). Pass a file with video."
        )
    return container.streams.video[0]


def _bit_depth(pix_fmt: str | None) -> int:
    if not pix_fmt:
        return 8
    try:
        return int(av.VideoFormat(pix_fmt).components[0].bits)
    except (ValueError, IndexError):
        return 8


def color_info(
    colorspace: int,
    color_range: int,
    transfer: int,
    primaries: int,
    pix_fmt: str,
    height: int,
) -> ColorInfo:
    """Resolve stream/frame tags (AVColor* numbers) into a :class:`ColorInfo`.

    Untagged sources follow the common player rule: BT.709 when at least 720 lines tall,
    else BT.601; limited range unless the pix_fmt is a JPEG-range (yuvj*) one.
    """
    bit_depth = _bit_depth(pix_fmt)
    fmt_rgb = pix_fmt in _RGB_PACKED or pix_fmt.startswith("gbr")
    guessed = False
    if pix_fmt in _GRAY:
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
        bit_depth=bit_depth,
        guessed=guessed,
    )


def _stream_rotation(stream: av.video.VideoStream) -> int:
    rot = 0
    try:
        tag = stream.metadata.get("rotate")
        if tag is not None:
            # The legacy "rotate" tag is clockwise; we use counter-clockwise degrees.
            rot = -int(float(tag))
    except ValueError:
        rot = 0
    return _normalise_rotation(rot)


def _normalise_rotation(degrees: float) -> int:
    return int(round(degrees / 90.0)) * 90 % 360


def probe(source: str | Path, *, open_timeout: float = DEFAULT_OPEN_TIMEOUT) -> VideoInfo:
    """Read a source's stream parameters (decodes at most one frame, for rotation)."""
    container = _open_container(source, open_timeout)
    try:
        return _describe(container, source, peek=not is_network_source(source))
    finally:
        container.close()


def _describe(
    container: av.container.InputContainer, source: str | Path, *, peek: bool
) -> VideoInfo:
    src = str(source)
    stream = _video_stream(container, src)
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
    if peek:
        # Display-matrix side data reaches PyAV on decoded frames; peek at one.
        try:
            for frame in container.decode(stream):
                rotation = _normalise_rotation(getattr(frame, "rotation", 0) or 0)
                break
        except av.error.FFmpegError:
            pass
    width, height = cc.width, cc.height
    if rotation in (90, 270):
        width, height = height, width
    base = stream.base_rate
    is_vfr = None
    if fps and base:
        is_vfr = abs(float(base) - float(fps)) > 0.01 * float(fps)
    return VideoInfo(
        source=src,
        container=container.format.name,
        codec=cc.name,
        width=width,
        height=height,
        pix_fmt=pix_fmt,
        bit_depth=_bit_depth(cc.pix_fmt),
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
        is_vfr=is_vfr,
        metadata={str(k): str(v) for k, v in container.metadata.items()},
        is_live=is_network_source(source),
    )


def rotate_planes(planes: tuple[np.ndarray, ...], rotation: int) -> tuple[np.ndarray, ...]:
    """Turn every plane ``rotation`` degrees counter-clockwise (0/90/180/270)."""
    k = _normalise_rotation(rotation) // 90
    if k == 0:
        return planes
    return tuple(np.ascontiguousarray(np.rot90(p, k=k, axes=(0, 1))) for p in planes)


def _plane_array(
    plane: av.video.plane.VideoPlane, dtype: np.dtype, channels: int = 1
) -> np.ndarray:
    buf = np.frombuffer(plane, dtype=dtype)
    row = plane.line_size // dtype.itemsize
    arr = buf.reshape(plane.height, row)[:, : plane.width * channels]
    if channels > 1:
        arr = arr.reshape(plane.height, plane.width, channels)
    return np.ascontiguousarray(arr)


def _fallback_format(fmt: av.VideoFormat) -> str:
    """Nearest supported format for swscale when the decoder gives something exotic."""
    bits = fmt.components[0].bits if fmt.components else 8
    if fmt.is_rgb:
        return "rgb24"
    if len(fmt.components) <= 2:
        return (
            "gray"
            if bits <= 8
            else "gray16le"
            if bits > 12
            else f"gray{bits if bits in (10, 12) else 16}le"
        )
    sub_w = fmt.chroma_width(64) < 64
    sub_h = fmt.chroma_height(64) < 64
    layout = "420" if sub_w and sub_h else "422" if sub_w else "444"
    depth = "" if bits <= 8 else "10le" if bits <= 10 else "12le" if bits <= 12 else "16le"
    return f"yuv{layout}p{depth}"


def frame_planes(frame: av.VideoFrame) -> tuple[tuple[np.ndarray, ...], str]:
    """Native planes of a decoded frame and the pix_fmt they are in (see VideoFrame)."""
    name = frame.format.name
    if name in _PLANAR_YUV or name in _GRAY:
        dtype = np.dtype("<u2") if _bit_depth(name) > 8 else np.dtype(np.uint8)
        n = 1 if name in _GRAY else 3
        return tuple(_plane_array(frame.planes[i], dtype) for i in range(n)), name
    if name in _SEMI_PLANAR:
        y = _plane_array(frame.planes[0], np.dtype(np.uint8))
        uv = _plane_array(frame.planes[1], np.dtype(np.uint8), channels=2)
        u, v = np.ascontiguousarray(uv[..., 0]), np.ascontiguousarray(uv[..., 1])
        if _SEMI_PLANAR[name]:
            u, v = v, u
        return (y, u, v), "yuv420p"
    if name in _RGB_PACKED:
        rgb = _plane_array(frame.planes[0], np.dtype(np.uint8), channels=3)
        if _RGB_PACKED[name]:
            rgb = np.ascontiguousarray(rgb[..., ::-1])
        return (rgb,), "rgb24"
    if name == "gbrp":
        g, b, r = (_plane_array(frame.planes[i], np.dtype(np.uint8)) for i in range(3))
        return (np.stack([r, g, b], axis=-1),), "rgb24"
    target = _fallback_format(frame.format)
    # Keep the source matrix/range: swscale's YUV->YUV is a repack, not a recolour.
    return frame_planes(frame.reformat(format=target))


_END = object()


class VideoReader:
    """Iterator of :class:`VideoFrame`; use as a context manager so the thread is joined.

    Open errors are raised by the constructor; decode-thread errors by iteration.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        start: float | None = None,
        duration: float | None = None,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self.source = str(source)
        self.stats = DecodeStats()
        self._start = start
        self._duration = duration
        self._container = _open_container(source, open_timeout)
        try:
            self.info = _describe(self._container, source, peek=False)
        except BaseException:
            self._container.close()
            raise
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = False

    # -- consumer side -------------------------------------------------------------
    def __iter__(self) -> Iterator[VideoFrame]:
        if self._thread is not None:
            raise VideoError("A VideoReader can be iterated only once; open the video again.")
        self._thread = threading.Thread(target=self._run, name="topiq-decode", daemon=True)
        self._thread.start()
        return self._consume()

    def _consume(self) -> Iterator[VideoFrame]:
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()
        if self.stats.frames_decoded == 0 and self.stats.stopped_early is None:
            raise VideoError(
                f"No frame of {self.source!r} could be decoded"
                + (
                    f" ({self.stats.decode_errors} decode errors)"
                    if self.stats.decode_errors
                    else ""
                )
                + ". The file holds no pictures or is corrupt; re-encode or re-download it"
                + (
                    ", or check the start/duration window."
                    if self._start or self._duration
                    else "."
                )
            )

    def close(self) -> None:
        """Stop the decoding thread, join it and close the container (idempotent)."""
        if self._done:
            return
        self._stop.set()
        if self._thread is not None:
            # The producer polls the stop flag while waiting to put, so this returns soon.
            self._thread.join()
            while not self._queue.empty():  # drop buffered frames now, not at GC time
                self._queue.get_nowait()
        self._container.close()
        self._done = True

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is not None and self._thread.is_alive() and not self._done:
            self.stats.stopped_early = self.stats.stopped_early or "consumer stopped"
        self.close()

    # -- producer side -------------------------------------------------------------
    def _put(self, item: object) -> bool:
        """Block until queued or stopped; False when the consumer has gone away."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            self._decode_loop()
        except BaseException as exc:  # re-raised in the consumer
            self._put(exc)
            return
        self._put(_END)

    def _presentation_pts(self) -> list[int]:
        """Every packet pts from the stream start, sorted: the exact index of any frame."""
        pts: list[int] = []
        with av.open(self.source) as c:
            s = c.streams.video[0]
            for packet in c.demux(s):
                if packet.pts is not None and packet.size:
                    pts.append(packet.pts)
        pts.sort()
        return pts

    def _decode_loop(self) -> None:
        stream = self._stream
        tb = Fraction(stream.time_base)
        info = self.info
        start_pts = stream.start_time
        fps = info.fps
        frame_ticks = int(round(1 / (fps * tb))) if fps and tb else 1
        index_pts: list[int] | None = None
        skip_before: float | None = None
        if self._start and self._start > 0:
            if info.is_live:
                raise VideoError("Cannot seek in a live stream; drop the start option.")
            index_pts = self._presentation_pts()
            target = int((start_pts or 0) + self._start / tb)
            self._container.seek(target, stream=stream, backward=True, any_frame=False)
            skip_before = self._start
        end_time = (self._start or 0.0) + self._duration if self._duration else None
        index = -1
        prev_pts: int | None = None
        first_pts = start_pts
        frames_seen = 0
        packets = self._container.demux(stream)
        while True:
            if self._stop.is_set():
                self.stats.stopped_early = self.stats.stopped_early or "consumer stopped"
                return
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                # The demuxer cannot go on (cut-off file, broken index): keep what we have.
                self.stats.error_messages.append(f"demux: {exc}")
                if index >= 0:
                    self._report_truncation(index + 1, None)
                return
            try:
                decoded = packet.decode()
            except av.error.EOFError:
                break
            except av.error.FFmpegError as exc:
                # One bad packet (bit rot): count it and carry on with the next.
                self.stats.decode_errors += 1
                if len(self.stats.error_messages) < 20:
                    self.stats.error_messages.append(str(exc))
                continue
            for frame in decoded:
                pts = frame.pts
                if pts is None:
                    pts = (prev_pts + frame_ticks) if prev_pts is not None else 0
                if first_pts is None:
                    first_pts = pts
                prev_pts = pts
                if index_pts is not None:
                    pos = bisect.bisect_left(index_pts, pts)
                    exact = pos < len(index_pts) and index_pts[pos] == pts
                    index = pos if exact else index + 1
                else:
                    index += 1
                t = float((pts - first_pts) * tb)
                if skip_before is not None and t < skip_before - 1e-6:
                    continue
                if end_time is not None and t >= end_time - 1e-6:
                    self.stats.stopped_early = "duration reached"
                    return
                frames_seen += 1
                if frame.is_corrupt:
                    self.stats.corrupt_frames += 1
                planes, pix_fmt = frame_planes(frame)
                rotation = _normalise_rotation(getattr(frame, "rotation", 0) or 0)
                if not rotation:
                    rotation = info.rotation
                planes = rotate_planes(planes, rotation)
                height, width = planes[0].shape[:2]
                color = color_info(
                    frame.colorspace,
                    frame.color_range,
                    frame.color_trc,
                    frame.color_primaries,
                    frame.format.name,
                    frame.height,
                )
                vf = VideoFrame(
                    index=index,
                    pts=int(pts),
                    time_base=tb,
                    time=t,
                    planes=planes,
                    pix_fmt=pix_fmt,
                    color=color,
                    width=width,
                    height=height,
                )
                self.stats.frames_decoded += 1
                if not self._put(vf):
                    self.stats.stopped_early = "consumer stopped"
                    return
        self._check_truncation(index, prev_pts, tb)

    def _check_truncation(self, last_index: int, last_pts: int | None, tb: Fraction) -> None:
        """Compare what decoded with what the header announced (count, else duration)."""
        info = self.info
        if info.is_live or self._duration or last_pts is None or last_index < 0:
            return
        got = last_index + 1
        if info.frame_count:
            if got < info.frame_count - TRUNCATION_TOLERANCE_FRAMES:
                self._report_truncation(got, info.frame_count)
            return
        if info.duration and info.fps:
            # Containers disagree on whether duration counts from 0 or from the start
            # time, so accept either reading before calling the file short.
            frame_s = 1 / float(info.fps)
            end = float(last_pts * tb) + frame_s
            slack = max(TRUNCATION_TOLERANCE_FRAMES * frame_s, 0.02 * info.duration)
            if end < info.duration - slack and end - info.start_time < info.duration - slack:
                self._report_truncation(got, int(round(info.duration * float(info.fps))))

    def _report_truncation(self, at: int, expected: int | None) -> None:
        self.stats.truncated_at = at
        logger.warning(
            "%s stops at frame index %d%s: the file looks truncated (an interrupted copy or "
            "download?); results cover only the frames before it.",
            self.source,
            at,
            f" but its header announces about {expected} frames" if expected else "",
        )


def open_video(
    source: str | Path,
    *,
    start: float | None = None,
    duration: float | None = None,
    open_timeout: float = DEFAULT_OPEN_TIMEOUT,
    queue_size: int = DEFAULT_QUEUE_SIZE,
) -> VideoReader:
    """Open a file or URL for decoding; ``start``/``duration`` in seconds of stream time."""
    return VideoReader(
        source, start=start, duration=duration, open_timeout=open_timeout, queue_size=queue_size
    )


def read_frames_at(source: str | Path, indices: Iterable[int]) -> dict[int, VideoFrame]:
    """Decode the frames with the given presentation indices (sequential decode)."""
    wanted = set(int(i) for i in indices)
    if not wanted:
        return {}
    last = max(wanted)
    found: dict[int, VideoFrame] = {}
    with open_video(source) as reader:
        for frame in reader:
            if frame.index in wanted:
                found[frame.index] = frame
            if frame.index >= last:
                break
    missing = sorted(wanted - found.keys())
    if missing:
        raise VideoError(
            f"{str(source)!r} has no frames at indices {missing[:10]}; it holds "
            f"{reader.stats.frames_decoded} decodable frames. Ask for indices below that."
        )
    return found
