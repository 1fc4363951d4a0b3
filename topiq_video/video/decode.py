"""Video decoding with PyAV: probing, a threaded frame reader and random frame access.

Decoding runs in a background thread that feeds a small bounded queue, so demuxing and
decoding overlap with scoring; any exception in the thread is re-raised in the consumer,
and the thread is always joined, also when the consumer stops early.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit
from urllib.request import url2pathname

import av
import av.error
import numpy as np

from topiq_video.errors import VideoError

logger = logging.getLogger(__name__)

DEFAULT_OPEN_TIMEOUT = 10.0  # seconds to open a network source or wait for its data
VFR_PROBE_PACKETS = 240  # packets read by probe() to judge the frame rate
VFR_GAP_TOLERANCE = 0.25  # a gap this far (relative) from the typical one is irregular
VFR_FRACTION = 0.05  # more irregular gaps than this: variable frame rate
DEFAULT_QUEUE_SIZE = 8  # decoded frames buffered ahead of the consumer
UNTAGGED_HD_HEIGHT = 720  # untagged sources at least this tall are assumed BT.709
TRUNCATION_TOLERANCE_FRAMES = 2  # container frame counts may be off by this much
MAX_SKIP_BUFFER_BYTES = 64 * 1024 * 1024  # compressed packets held while skipping to start=
# Sources whose data arrives in real time: no seeking, no end to compare against.
LIVE_SCHEMES = frozenset(
    {"rtsp", "rtsps", "rtmp", "rtmps", "rtmpe", "rtmpt", "udp", "rtp", "srt", "srtp", "tcp"}
)
NETWORK_SCHEMES = LIVE_SCHEMES | frozenset(
    {"http", "https", "hls", "ftp", "sftp", "smb", "mmsh", "mmst", "tls", "ipfs", "ipns"}
)
# URL schemes handed to FFmpeg as they are (its protocols); anything else is a path.
FFMPEG_SCHEMES = NETWORK_SCHEMES | frozenset({"file", "data", "pipe", "concat", "subfile"})

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
    lost_frames: int = 0  # presentation positions that never decoded (damage), not the tail
    truncated_at: int | None = None
    stopped_early: str | None = None
    error_messages: list[str] = field(default_factory=list)


def redact_source(source: str) -> str:
    """A source fit to print or save: a URL loses its user:password and its query string
    (stream keys and tokens travel there); plain paths are returned unchanged."""
    parts = urlsplit(source)
    # One-letter "schemes" are Windows drive letters, not URLs.
    if len(parts.scheme) <= 1 or not (parts.username or parts.password or parts.query):
        return source
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username or parts.password:
        netloc = "***@" + netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def _scrub(text: str, source: str) -> str:
    """``text`` with every copy of ``source`` redacted (FFmpeg errors quote the URL)."""
    safe = redact_source(source)
    return text.replace(source, safe) if safe != source else text


def _scheme(source: str | Path) -> str:
    if isinstance(source, Path):
        return ""
    scheme = urlsplit(str(source)).scheme.lower()
    return scheme if len(scheme) > 1 else ""


def is_network_source(source: str | Path) -> bool:
    """True for URLs read over a network (RTSP, UDP, HTTP(S), HLS, FTP ...)."""
    return _scheme(source) in NETWORK_SCHEMES


def is_live_scheme(source: str | Path) -> bool:
    """True for real-time protocols (RTSP, RTMP, UDP, RTP, SRT, TCP)."""
    return _scheme(source) in LIVE_SCHEMES


def _open_container(source: str | Path, open_timeout: float) -> av.container.InputContainer:
    src = str(source)
    safe = redact_source(src)
    scheme = _scheme(source)
    if is_network_source(source):
        micro = str(int(open_timeout * 1_000_000))
        # rw_timeout bounds every protocol's reads; rtsp and udp/http also take "timeout"
        # (all in microseconds); av.open's own timeout bounds it via the interrupt callback.
        options = {"rw_timeout": micro, "timeout": micro}
        if scheme.startswith("rtsp"):
            options["rtsp_transport"] = "tcp"
        try:
            return av.open(src, options=options, timeout=(open_timeout, open_timeout))
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoError(
                f"Could not open the stream {safe!r} within {open_timeout:g} s "
                f"({_scrub(str(exc), src)}). Check that the URL is right and the server is "
                "reachable, or raise the open timeout."
            ) from exc
    if scheme in FFMPEG_SCHEMES and scheme != "file":
        local = None  # data:, pipe:, concat: ... only FFmpeg can tell whether they exist
    elif scheme == "file":
        local = Path(url2pathname(urlsplit(src).path))
    else:
        local = Path(src)
    if local is not None and not local.exists():
        raise VideoError(f"Video file {safe!r} does not exist. Check the path.")
    if local is not None and local.is_dir():
        raise VideoError(f"{safe!r} is a directory. Pass a video file inside it.")
    try:
        return av.open(src)
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(
            f"{safe!r} is not a readable video file ({_scrub(str(exc), src)}). Check that it "
            "is a complete video (e.g. MP4, MKV, MOV, TS) and not a partial download or "
            "another file type."
        ) from exc


def _video_stream(container: av.container.InputContainer, source: str) -> av.video.VideoStream:
    if not container.streams.video:
        raise VideoError(
            f"{redact_source(source)!r} has no video stream (it may be audio-only). Pass a "
            "file with video."
        )
    return container.streams.video[0]


def _bit_depth(pix_fmt: str | None) -> int:
    if not pix_fmt:
        return 8
    try:
        return int(av.VideoFormat(pix_fmt).components[0].bits)
    except (ValueError, IndexError):
        return 8


def delivered_pix_fmt(pix_fmt: str) -> str:
    """The pix_fmt of the planes a :class:`VideoFrame` carries for a decoder's ``pix_fmt``
    (see :func:`frame_planes`): native planar YUV/gray as is, every RGB layout as rgb24."""
    if pix_fmt in _PLANAR_YUV or pix_fmt in _GRAY:
        return pix_fmt
    if pix_fmt in _SEMI_PLANAR:
        return "yuv420p"
    if pix_fmt in _RGB_PACKED or pix_fmt == "gbrp":
        return "rgb24"
    try:
        return _fallback_format(av.VideoFormat(pix_fmt))
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
    :class:`ColorInfo` of the planes delivered for it (see :func:`delivered_pix_fmt`).

    Untagged sources follow the common player rule: BT.709 when at least 720 lines tall,
    else BT.601; limited range unless the pix_fmt is a JPEG-range (yuvj*) one.
    """
    delivered = delivered_pix_fmt(pix_fmt)
    bit_depth = _bit_depth(delivered)
    # RGB of any depth or layout (gbrp10le, rgb48le, rgba ...) is delivered as rgb24.
    fmt_rgb = delivered == "rgb24"
    guessed = False
    if delivered in _GRAY:
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


def _timestamps_vary(pts: list[int]) -> bool | None:
    """Variable frame rate from presentation timestamps: many gaps far from the typical one
    (a CFR stream with ms rounding or a dropped frame stays constant)."""
    if len(pts) < 8:
        return None
    gaps = np.diff(np.sort(np.asarray(pts, dtype=np.int64)))
    gaps = gaps[gaps > 0]
    if gaps.size < 4:
        return None
    typical = float(np.median(gaps))
    off = np.abs(gaps - typical) > VFR_GAP_TOLERANCE * typical
    return bool(off.mean() > VFR_FRACTION)


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
    is_vfr = None
    if peek:
        # Display-matrix side data reaches PyAV on decoded frames: decode the first one.
        # The same pass reads the first packets' timestamps to tell a variable frame rate
        # (container rate fields cannot: H.264 often reports twice the frame rate there).
        pts: list[int] = []
        seen_frame = False
        try:
            for packet in container.demux(stream):
                if packet.pts is not None:
                    pts.append(packet.pts)
                if not seen_frame:
                    for frame in packet.decode():
                        rotation = _normalise_rotation(getattr(frame, "rotation", 0) or 0)
                        seen_frame = True
                        break
                if len(pts) >= VFR_PROBE_PACKETS:
                    break
        except av.error.FFmpegError:
            pass
        is_vfr = _timestamps_vary(pts)
    width, height = cc.width, cc.height
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(
        source=src,
        container=container.format.name,
        codec=cc.name,
        width=width,
        height=height,
        pix_fmt=pix_fmt,
        bit_depth=_bit_depth(delivered_pix_fmt(pix_fmt)),
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
        # Real-time protocols are live; so is a URL with no end (e.g. live HLS), while
        # HTTP(S)/FTP files with a duration are ordinary files. A local file without a
        # duration (a raw elementary stream) is still a file.
        is_live=is_live_scheme(source)
        or (duration is None and _scheme(source) not in ("", "file")),
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


def _pts_or_dts(packet: av.Packet) -> int:
    return packet.pts if packet.pts is not None else (packet.dts or 0)


class _PositionCounter:
    """Presentation positions of decoded frames, from the demuxed packets' timestamps.

    A decoder outputs a picture only after every packet presented before it, so the
    picture's index is the number of packets with a smaller pts; packets of pictures that
    fail to decode were still demuxed and keep their place. Only packets not yet passed by
    a decoded picture are held (a small heap: the reorder depth plus decoder latency).

    With ``fill_gaps`` (set once damage is seen on a constant-rate stream) a timestamp
    jump of k frame durations also counts the k - 1 positions whose packets the demuxer
    lost, e.g. to a damaged MPEG-TS span.
    """

    def __init__(self, frame_ticks: float | None) -> None:
        self._ticks = frame_ticks
        self._heap: list[int] = []
        self._below = 0  # positions below the highest pts passed
        self._passed: int | None = None  # highest pts passed
        self.fill_gaps = False
        self.usable = True  # False once a packet comes without a pts
        self.total = 0
        self.max_pts: int | None = None

    def add(self, pts: int | None) -> None:
        if pts is None:
            self.usable = False
            return
        heapq.heappush(self._heap, pts)
        self.total += 1
        self.max_pts = pts if self.max_pts is None else max(self.max_pts, pts)

    def _missing(self, before: int | None, after: int) -> int:
        if not self.fill_gaps or not self._ticks or before is None or after <= before:
            return 0
        steps = (after - before) / self._ticks
        k = round(steps)
        return k - 1 if k >= 2 and abs(steps - k) <= 0.25 else 0

    def settle_below(self, pts: int) -> None:
        """Count (and forget) the packets presented before ``pts``."""
        while self._heap and self._heap[0] < pts:
            passed = heapq.heappop(self._heap)
            self._below += 1 + self._missing(self._passed, passed)
            if self._passed is None or passed > self._passed:
                self._passed = passed

    def position(self, pts: int) -> int:
        """Index of the picture presented at ``pts``; call with non-decreasing pts."""
        self.settle_below(pts)
        return self._below + self._missing(self._passed, pts)

    def pending_after(self, pts: int) -> int:
        """Packets presented after ``pts`` that no picture has passed."""
        return sum(1 for p in self._heap if p > pts)


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
            errors = self.stats.decode_errors
            cause = self.stats.error_messages[0] if self.stats.error_messages else None
            details = [f"{errors} decode errors"] if errors else []
            if cause:
                details.append(f"first error: {cause}")
            raise VideoError(
                f"No frame of {redact_source(self.source)!r} could be decoded"
                + (f" ({'; '.join(details)})" if details else "")
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

    def _demux(self) -> Iterator[av.Packet]:
        """The stream's packets, each registered with the position counter; records a
        demuxer failure (cut-off file, broken index) in ``self._demux_failed``."""
        packets = self._container.demux(self._stream)
        last_dts: int | None = None
        while True:
            if self._stop.is_set():
                return
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                self.stats.error_messages.append(f"demux: {_scrub(str(exc), self.source)}")
                self._demux_failed = True
                return
            if packet.dts is not None:
                if last_dts is not None and packet.dts < last_dts:
                    # Decode timestamps restart (appended segments, a wrap): positions
                    # from timestamps no longer hold, so count decoded frames from here.
                    self._positions.usable = False
                    self._restarted = True
                last_dts = packet.dts
            if packet.size and not packet.is_discard:
                # Discarded packets (before an edit-list start) are never presented.
                self._positions.add(packet.pts)
                if packet.is_corrupt:
                    self._saw_damage()
            yield packet

    def _packets_to_decode(self, target_pts: int | None) -> Iterator[av.Packet]:
        """Demuxed packets, minus those a decode from the keyframe before ``target_pts``
        does not need.

        Until the first packet presented at or after the target, packets are only counted
        (every presentation position stays known, so indices are exact without seeking)
        and the last two GOPs are held: decoding restarts from the older keyframe, early
        enough for open-GOP leading pictures. A stream with too long a GOP for the buffer
        is decoded from where the buffer overflowed instead; frames before the target are
        dropped by the caller either way.
        """
        gops: list[list[av.Packet]] = []
        held = 0
        packets = self._demux()
        for packet in packets:
            if target_pts is None:
                yield packet
                continue
            when = packet.pts if packet.pts is not None else packet.dts
            if packet.size and when is not None and when < target_pts:
                if packet.is_keyframe or not gops:
                    gops.append([])
                    if len(gops) > 2:
                        held -= sum(p.size for p in gops.pop(0))
                        # Positions below the held packets need no more than a count.
                        self._positions.settle_below(min(_pts_or_dts(p) for p in gops[0]))
                gops[-1].append(packet)
                held += packet.size
                if held <= MAX_SKIP_BUFFER_BYTES:
                    continue
                packet = None  # already held: decode from the buffer on
            for gop in gops:
                yield from gop
            gops = []
            target_pts = None
            if packet is not None:
                yield packet
        for gop in gops:  # the target lies past the end: decode the tail, drop it all
            yield from gop

    def _decode_loop(self) -> None:
        stream = self._stream
        tb = Fraction(stream.time_base)
        info = self.info
        fps = info.fps
        frame_ticks = 1 / (fps * tb) if fps and tb else None
        first_pts = stream.start_time
        if first_pts is None:
            first_pts = 0
        target_pts: int | None = None
        if self._start and self._start > 0:
            if info.is_live:
                raise VideoError("Cannot seek in a live stream; drop the start option.")
            target_pts = first_pts + int(round(self._start / tb))
        # Gaps in the timestamps are only filled (as frames the demuxer lost) on a stream
        # that claims a constant rate and only once damage has been seen in it.
        self._can_fill_gaps = bool(frame_ticks) and info.is_vfr is not True
        self._positions = _PositionCounter(frame_ticks)
        self._damaged = False
        self._restarted = False
        self._demux_failed = False
        end_time = (self._start or 0.0) + self._duration if self._duration else None
        last_index = -1
        prev_pts: int | None = None
        for packet in self._packets_to_decode(target_pts):
            if self._stop.is_set():
                break
            try:
                decoded = packet.decode()
            except av.error.EOFError:
                break
            except av.error.FFmpegError as exc:
                # One bad packet (bit rot): count it and carry on with the next.
                self.stats.decode_errors += 1
                self._saw_damage()
                if len(self.stats.error_messages) < 20:
                    self.stats.error_messages.append(_scrub(str(exc), self.source))
                continue
            for frame in decoded:
                pts = frame.pts
                if pts is None:
                    pts = (prev_pts + int(round(frame_ticks or 1))) if prev_pts is not None else 0
                    index = last_index + 1
                elif prev_pts is not None and pts <= prev_pts:
                    if self._damaged and not self._restarted:
                        # A decoder confused by damage can go back in time; downstream
                        # needs presentation order, and the position was counted as lost.
                        logger.debug("Dropped a frame presented out of order (pts %d)", pts)
                        continue
                    # Timestamps restart (appended segments, a wrap): keep the frame;
                    # from here on, positions can only be counted.
                    logger.info(
                        "%s: timestamps jump back at frame %d; later frame indices count "
                        "decoded frames.",
                        redact_source(self.source),
                        last_index + 1,
                    )
                    self._positions.usable = False
                    index = last_index + 1
                elif self._positions.usable:
                    index = max(self._positions.position(pts), last_index + 1)
                else:
                    index = last_index + 1
                if frame.is_corrupt:
                    self._saw_damage()
                t = float((pts - first_pts) * tb)
                if self._start and t < self._start - 1e-6:
                    continue
                if end_time is not None and t >= end_time - 1e-6:
                    self.stats.stopped_early = "duration reached"
                    return
                if last_index < 0 and target_pts is not None and self._positions.usable:
                    expected = self._positions.position(target_pts)
                else:
                    expected = last_index + 1
                self.stats.lost_frames += max(0, index - expected)
                if frame.is_corrupt:
                    self.stats.corrupt_frames += 1
                vf = self._video_frame(frame, index, int(pts), tb, t)
                last_index, prev_pts = index, pts
                self.stats.frames_decoded += 1
                if not self._put(vf):
                    self.stats.stopped_early = "consumer stopped"
                    return
        if self._stop.is_set():
            self.stats.stopped_early = self.stats.stopped_early or "consumer stopped"
            return
        if self._demux_failed:
            if last_index >= 0:
                self._report_truncation(last_index + 1, None)
            return
        if prev_pts is not None:
            # Packets presented after the last picture that never decoded: damage at the
            # tail of a whole file (a cut-off file stops demuxing instead).
            self.stats.lost_frames += self._positions.pending_after(prev_pts)
        self._check_truncation(last_index, tb)

    def _saw_damage(self) -> None:
        self._damaged = True
        self._positions.fill_gaps = self._can_fill_gaps

    def _video_frame(
        self, frame: av.VideoFrame, index: int, pts: int, tb: Fraction, t: float
    ) -> VideoFrame:
        planes, pix_fmt = frame_planes(frame)
        rotation = _normalise_rotation(getattr(frame, "rotation", 0) or 0)
        if not rotation:
            rotation = self.info.rotation
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
        return VideoFrame(
            index=index,
            pts=pts,
            time_base=tb,
            time=t,
            planes=planes,
            pix_fmt=pix_fmt,
            color=color,
            width=width,
            height=height,
        )

    def _check_truncation(self, last_index: int, tb: Fraction) -> None:
        """Compare how far the demuxer got with what the header announced (frame count,
        else duration). Pictures lost to damage inside a whole file do not count: their
        packets were still demuxed."""
        info = self.info
        if info.is_live or self._duration or last_index < 0:
            return
        got = max(self._positions.total, last_index + 1)
        if info.frame_count:
            if got < info.frame_count - TRUNCATION_TOLERANCE_FRAMES:
                self._report_truncation(last_index + 1, info.frame_count)
            return
        last_pts = self._positions.max_pts
        if info.duration and info.fps and last_pts is not None:
            # Containers disagree on whether duration counts from 0 or from the start
            # time, so accept either reading before calling the file short.
            frame_s = 1 / float(info.fps)
            end = float(last_pts * tb) + frame_s
            slack = max(TRUNCATION_TOLERANCE_FRAMES * frame_s, 0.02 * info.duration)
            if end < info.duration - slack and end - info.start_time < info.duration - slack:
                self._report_truncation(last_index + 1, int(round(info.duration * float(info.fps))))

    def _report_truncation(self, at: int, expected: int | None) -> None:
        self.stats.truncated_at = at
        logger.warning(
            "%s stops at frame index %d%s: the file looks truncated (an interrupted copy or "
            "download?); results cover only the frames before it.",
            redact_source(self.source),
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
            f"{redact_source(str(source))!r} has no frames at indices {missing[:10]}; it holds "
            f"{reader.stats.frames_decoded} decodable frames. Ask for indices below that."
        )
    return found
