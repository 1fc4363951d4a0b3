"""Frame sources: the decoder backend interface, and opening a file or URL once.

A run opens each source once (:func:`open_source`): a live stream has no second connection
to give, and a long file should not be read twice. Everything the run needs comes from that
one open: the header (:mod:`~topiq_video.video.probe`), the first seconds for the offset
search (:meth:`FrameSource.lookahead`) and then every frame (:meth:`FrameSource.frames`),
starting again from the beginning. Any object with this interface can stand in for a
decoder, e.g. frames made in memory by a test.
"""

from __future__ import annotations

import errno
import io
import os
import re
import select
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit
from urllib.request import url2pathname

import numpy as np

from topiq_video.errors import VideoError
from topiq_video.files import display_text

if TYPE_CHECKING:
    import av.container

    from topiq_video.video.probe import ColorInfo, VideoInfo

DEFAULT_OPEN_TIMEOUT = 10.0  # seconds to open a network source or wait for its data
# Sources whose data arrives in real time: no seeking, no end to compare against.
LIVE_SCHEMES = frozenset(
    {"rtsp", "rtsps", "rtmp", "rtmps", "rtmpe", "rtmpt", "udp", "rtp", "srt", "srtp", "tcp"}
)
NETWORK_SCHEMES = LIVE_SCHEMES | frozenset(
    {"http", "https", "hls", "ftp", "sftp", "smb", "mmsh", "mmst", "tls", "ipfs", "ipns"}
)
# URL schemes handed to FFmpeg as they are (its protocols); anything else is a path.
FFMPEG_SCHEMES = NETWORK_SCHEMES | frozenset({"file", "data", "pipe", "concat", "subfile"})
# Sources that can block forever waiting for data: they get a read timeout.
_BLOCKING_SCHEMES = NETWORK_SCHEMES | frozenset({"pipe"})
_ERRNO_PREFIX = re.compile(r"\[Errno -?\d+\]\s*")


@dataclass(frozen=True, eq=False)
class VideoFrame:
    """One decoded, upright picture at native bit depth.

    ``thumb`` is a small luma picture (36x64, values in [0, 1]) when the source was
    opened with thumbnails: alignment matches pictures with it.
    """

    index: int
    pts: int
    time_base: Fraction
    time: float  # seconds since the stream's first frame
    planes: tuple[np.ndarray, ...]
    pix_fmt: str
    color: ColorInfo
    width: int
    height: int
    thumb: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class FramePreview:
    """A frame seen during the lookahead: when it is shown, and its luma thumbnail."""

    index: int
    time: float
    thumb: np.ndarray


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """Decoded audio as mono float samples in [-1, 1], ``time`` seconds from the audio
    stream's start."""

    time: float
    samples: np.ndarray
    sample_rate: int


@dataclass
class DecodeStats:
    """Running counts, updated by the decoding thread; read them after iteration."""

    frames_decoded: int = 0
    decode_errors: int = 0
    corrupt_frames: int = 0
    lost_frames: int = 0  # frames that never decoded inside the stream (damage, gaps)
    gaps: list[tuple[int, float, int]] = field(default_factory=list)  # (frame, time, missing)
    truncated_at: int | None = None
    stopped_early: str | None = None
    connection_lost: str | None = None  # a live source that ended: why
    bytes_read: int = 0  # compressed video bytes demuxed
    error_messages: list[str] = field(default_factory=list)


@runtime_checkable
class FrameSource(Protocol):
    """What a run needs from a decoder. Use as a context manager so it is closed."""

    @property
    def info(self) -> VideoInfo: ...

    @property
    def stats(self) -> DecodeStats: ...

    def lookahead(self, seconds: float) -> list[FramePreview]:
        """Previews of the first ``seconds`` of the stream (fewer where memory or the
        stream runs out); :meth:`frames` still starts from the first frame."""
        ...

    def frames(self) -> Iterator[VideoFrame]:
        """Every frame, once, in presentation order."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> FrameSource: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


# ---------------------------------------------------------------------------- naming


def redact_source(source: str | Path) -> str:
    """A source fit to print or save: a URL loses its user:password and its query string
    (stream keys and tokens travel there); plain paths are returned unchanged."""
    text = str(source)
    parts = urlsplit(text)
    # One-letter "schemes" are Windows drive letters, not URLs.
    if len(parts.scheme) <= 1 or not (parts.username or parts.password or parts.query):
        return text
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username or parts.password:
        netloc = "***@" + netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def show_source(source: str | Path) -> str:
    """A source as it may appear in messages and reports: redacted, valid UTF-8."""
    return display_text(redact_source(source))


def scrub(text: str, source: str | Path) -> str:
    """An error text fit to show: copies of ``source`` redacted (FFmpeg errors quote the
    URL) and raw ``[Errno N]`` numbers dropped."""
    src = str(source)
    safe = redact_source(src)
    if safe != src:
        text = text.replace(src, safe)
    return display_text(_ERRNO_PREFIX.sub("", text))


def scheme_of(source: str | Path) -> str:
    if isinstance(source, Path):
        return ""
    scheme = urlsplit(str(source)).scheme.lower()
    return scheme if len(scheme) > 1 else ""


def is_network_source(source: str | Path) -> bool:
    """True for URLs read over a network (RTSP, UDP, HTTP(S), HLS, FTP ...)."""
    return scheme_of(source) in NETWORK_SCHEMES


def is_live_scheme(source: str | Path) -> bool:
    """True for real-time protocols (RTSP, RTMP, UDP, RTP, SRT, TCP)."""
    return scheme_of(source) in LIVE_SCHEMES


# ---------------------------------------------------------------------------- opening


def _network_failure(exc: BaseException, src: str, timeout: float) -> VideoError:
    code = getattr(exc, "errno", None)
    reason = scrub(str(exc), src)
    safe = show_source(src)
    if code in (errno.ECONNREFUSED, -errno.ECONNREFUSED) or "refused" in reason.lower():
        return VideoError(
            f"The server refused the connection to {safe!r}: nothing is listening there. "
            "Check the address and port, and that the stream is running."
        )
    if code in (errno.ETIMEDOUT, -errno.ETIMEDOUT) or any(
        words in reason.lower() for words in ("timed out", "exit requested")
    ):
        return VideoError(
            f"No answer from {safe!r} within {timeout:g} s. Check that the stream is running "
            "and reachable, or allow more time with the timeout option."
        )
    return VideoError(
        f"Could not open the stream {safe!r} ({reason}). Check the URL and that the server "
        "is reachable."
    )


class PipeReader(io.RawIOBase):
    """A pipe read with a timeout and a stop flag: FFmpeg's own pipe reads block in the
    kernel until data comes, so a stalled writer would hang the decoder for ever. Reads
    that wait longer than ``timeout`` (or are stopped) end the stream instead."""

    def __init__(self, fd: int, timeout: float, stop: threading.Event | None) -> None:
        super().__init__()
        self.fd = fd
        self.timeout = timeout
        self.stop = stop or threading.Event()
        self.stalled = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                data = os.read(self.fd, len(buffer))
                buffer[: len(data)] = data
                return len(data)
            if time.monotonic() > deadline:
                self.stalled = True
                return 0
        return 0


def _pipe_fd(src: str) -> int:
    rest = src.split(":", 1)[1]
    if not rest:
        return 0
    try:
        return int(rest)
    except ValueError as exc:
        raise VideoError(f"{src!r}: a pipe is 'pipe:' (standard input) or 'pipe:N'.") from exc


def open_container(
    source: str | Path,
    *,
    timeout: float = DEFAULT_OPEN_TIMEOUT,
    stop: threading.Event | None = None,
    rtsp_transport: str = "tcp",
) -> av.container.InputContainer:
    """Open ``source`` with PyAV for reading, with errors that say what to fix.

    Container tags that are not valid UTF-8 (older muxers) are decoded with replacement
    characters instead of failing. Network and pipe sources get open and read timeouts;
    setting ``stop`` ends a pipe's blocked read.
    """
    import av
    import av.error

    src = str(source)
    safe = show_source(src)
    scheme = scheme_of(source)
    kwargs: dict = {"metadata_errors": "replace"}
    if scheme in _BLOCKING_SCHEMES:
        kwargs["timeout"] = (timeout, timeout)
    if scheme == "pipe":
        reader = PipeReader(_pipe_fd(src), timeout, stop)
        try:
            return av.open(reader, mode="r", metadata_errors="replace")
        except (av.error.FFmpegError, OSError) as exc:
            reason = "no data came" if reader.stalled else scrub(str(exc), src)
            raise VideoError(
                f"Could not read a video from {safe!r} ({reason}). Check what writes to it."
            ) from exc
    if is_network_source(source):
        micro = str(int(timeout * 1_000_000))
        # rw_timeout bounds every protocol's reads; rtsp and udp/http also take "timeout"
        # (all in microseconds); av.open's own timeout bounds it via the interrupt callback.
        # RTMP's "timeout" is a listen timeout instead: it would make the client a server.
        options = {"rw_timeout": micro}
        if not scheme.startswith("rtmp"):
            options["timeout"] = micro
        if scheme.startswith("rtsp"):
            options["rtsp_transport"] = rtsp_transport
        try:
            return av.open(src, options=options, **kwargs)
        except (av.error.FFmpegError, OSError) as exc:
            raise _network_failure(exc, src, timeout) from exc
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
        return av.open(src, **kwargs)
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(
            f"{safe!r} is not a readable video file ({scrub(str(exc), src)}). Check that it "
            "is a complete video (e.g. MP4, MKV, MOV, TS) and not a partial download or "
            "another file type."
        ) from exc


def video_stream(container: av.container.InputContainer, source: str) -> av.video.VideoStream:
    if not container.streams.video:
        raise VideoError(
            f"{show_source(source)!r} has no video stream (it may be audio-only). Pass a "
            "file with video."
        )
    return container.streams.video[0]


def open_source(source: str | Path | FrameSource, **options: Any) -> FrameSource:
    """Open a file or URL for decoding (options: those of
    :class:`~topiq_video.video.reader.PyAVSource`: ``start``, ``duration``, ``timeout``,
    ``thumbnails``, ``max_pixels``). A :class:`FrameSource` given instead is returned as it
    is (decoders made by tests)."""
    if isinstance(source, FrameSource):
        return source
    from topiq_video.video.reader import PyAVSource

    return PyAVSource(source, **options)
