"""PyAV decoding in a background thread: the file/URL implementation of a FrameSource.

One thread demuxes and decodes into a small bounded queue, so decoding overlaps with
scoring; any exception in it is re-raised in the consumer, and it always ends when the
consumer closes the source (a source that can block, such as a pipe or a network stream,
has a read timeout, and close() waits at most that long).

The source is opened once. A lookahead (the offset search's first seconds) decodes the
start of the stream while keeping its compressed packets (bounded by bytes); the frame pass
then flushes the decoder and decodes those packets again before reading on, so no byte is
fetched twice and memory stays bounded by the compressed size, not the decoded one.

Frame numbers are presentation positions counted from the demuxed packets' timestamps
(exact without seeking, robust to damage). On a constant-rate stream a timestamp jump of k
frame durations counts k - 1 missing frames: numbers keep following the clock, and the
missing frames are reported as lost, with where they were.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import av.error
import numpy as np
import torch
import torch.nn.functional as F

from topiq_video.errors import InvalidInputError, VideoError
from topiq_video.video.probe import (
    GRAY,
    PLANAR_YUV,
    RGB_PACKED,
    SEMI_PLANAR,
    VideoInfo,
    bit_depth_of,
    color_info,
    describe,
    fallback_format,
    normalise_rotation,
    timestamps_vary,
    typical_gaps,
)
from topiq_video.video.source import (
    _BLOCKING_SCHEMES,
    DEFAULT_OPEN_TIMEOUT,
    AudioChunk,
    DecodeStats,
    FramePreview,
    VideoFrame,
    open_container,
    scheme_of,
    scrub,
    show_source,
)

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 8  # decoded frames buffered ahead of the consumer
TRUNCATION_TOLERANCE_FRAMES = 2  # container frame counts may be off by this much
MAX_SKIP_BUFFER_BYTES = 64 * 1024 * 1024  # compressed packets held while skipping to start=
LOOKAHEAD_MAX_BYTES = 256 * 1024 * 1024  # compressed packets kept to replay after a lookahead
RATE_PROBE_PACKETS = 120  # packets read before decoding, to judge the frame rate (files)
RATE_PROBE_PACKETS_LIVE = 24  # fewer on live streams: each packet costs real time
MAX_LISTED = 20  # gaps and error messages kept per source
THUMBNAIL_SIZE = (36, 64)  # (h, w) luma thumbnails for alignment
FILE_CLOSE_WAIT_S = 30.0  # how long close() waits for a local file's decoder to stop

_END = object()
_LOOKAHEAD_END = object()


# ---------------------------------------------------------------------------- planes


def rotate_planes(planes: tuple[np.ndarray, ...], rotation: int) -> tuple[np.ndarray, ...]:
    """Turn every plane ``rotation`` degrees counter-clockwise (0/90/180/270)."""
    k = normalise_rotation(rotation) // 90
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


def frame_planes(frame: av.VideoFrame) -> tuple[tuple[np.ndarray, ...], str]:
    """Native planes of a decoded frame and the pix_fmt they are in (see VideoFrame)."""
    name = frame.format.name
    if name in PLANAR_YUV or name in GRAY:
        dtype = np.dtype("<u2") if bit_depth_of(name) > 8 else np.dtype(np.uint8)
        n = 1 if name in GRAY else 3
        return tuple(_plane_array(frame.planes[i], dtype) for i in range(n)), name
    if name in SEMI_PLANAR:
        y = _plane_array(frame.planes[0], np.dtype(np.uint8))
        uv = _plane_array(frame.planes[1], np.dtype(np.uint8), channels=2)
        u, v = np.ascontiguousarray(uv[..., 0]), np.ascontiguousarray(uv[..., 1])
        if SEMI_PLANAR[name]:
            u, v = v, u
        return (y, u, v), "yuv420p"
    if name in RGB_PACKED:
        rgb = _plane_array(frame.planes[0], np.dtype(np.uint8), channels=3)
        if RGB_PACKED[name]:
            rgb = np.ascontiguousarray(rgb[..., ::-1])
        return (rgb,), "rgb24"
    if name == "gbrp":
        g, b, r = (_plane_array(frame.planes[i], np.dtype(np.uint8)) for i in range(3))
        return (np.stack([r, g, b], axis=-1),), "rgb24"
    # Keep the source matrix/range: swscale's YUV->YUV is a repack, not a recolour.
    return frame_planes(frame.reformat(format=fallback_format(frame.format)))


def upright_planes(frame: av.VideoFrame, rotation: int) -> tuple[tuple[np.ndarray, ...], str, Any]:
    """A decoded frame's native planes turned upright, their pix_fmt and colour facts."""
    planes, pix_fmt = frame_planes(frame)
    color = color_info(
        frame.colorspace,
        frame.color_range,
        frame.color_trc,
        frame.color_primaries,
        frame.format.name,
        frame.height,
    )
    return rotate_planes(planes, rotation), pix_fmt, color


SEEK_RETRY_S = 10.0  # how much earlier a second seek starts when the first overshot


def frames_at(source: str | Path, times: Iterable[float]) -> dict[float, VideoFrame]:
    """The frames shown at ``times`` (seconds since the stream's first frame, as the pass
    numbered them) of a seekable file, each found by seeking to the keyframe before it.

    For the few pictures chosen after a pass (where only the whole run tells which), not
    for reading a stream: a time with no frame within half a frame of it is left out.
    """
    wanted = sorted(set(float(t) for t in times))
    found: dict[float, VideoFrame] = {}
    if not wanted:
        return found
    container = open_container(source)
    try:
        info = describe(container, source)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        first_pts = stream.start_time or 0
        half = 0.5 * (info.frame_duration or 1.0 / 30)
        for t in wanted:
            for lead in (0.0, SEEK_RETRY_S):
                frame = _decode_at(container, stream, first_pts, tb, t, lead, half)
                if frame is not None:
                    break
            if frame is None:
                logger.info("%s: no frame found at %.3f s", show_source(source), t)
                continue
            planes, pix_fmt, color = upright_planes(frame, info.rotation)
            height, width = planes[0].shape[:2]
            found[t] = VideoFrame(
                index=-1,
                pts=int(frame.pts),
                time_base=tb,
                time=float((frame.pts - first_pts) * tb),
                planes=planes,
                pix_fmt=pix_fmt,
                color=color,
                width=width,
                height=height,
            )
    except av.error.FFmpegError as exc:
        logger.warning("%s: seeking for pictures failed: %s", show_source(source), exc)
    finally:
        container.close()
    return found


def _decode_at(
    container: Any, stream: Any, first_pts: int, tb: Fraction, t: float, lead: float,
    half: float,
) -> av.VideoFrame | None:  # fmt: skip
    """The frame shown at ``t`` after a seek to the keyframe at or before ``t - lead``;
    None when the seek landed past it or no frame lies within ``half`` of it."""
    target = first_pts + int(round(max(0.0, t - lead) / tb))
    container.seek(target, stream=stream, backward=True, any_frame=False)
    best: tuple[float, av.VideoFrame] | None = None
    for packet in container.demux(stream):
        try:
            decoded = packet.decode()
        except av.error.FFmpegError:
            continue
        for frame in decoded:
            if frame.pts is None:
                continue
            at = float((frame.pts - first_pts) * tb)
            if best is None and at > t + half:
                return None  # the seek overshot: try from earlier
            if abs(at - t) <= half and (best is None or abs(at - t) < best[0]):
                best = (abs(at - t), frame)
            if at > t + half:
                return best[1] if best is not None else None
    return best[1] if best is not None else None


def luma_thumbnail(planes: tuple[np.ndarray, ...], bit_depth: int, full_range: bool) -> np.ndarray:
    """A (36, 64) float32 picture of the luma in [0, 1], area-averaged (for alignment:
    matching is by correlation, so RGB frames use plain BT.709 weights)."""
    first = planes[0]
    if first.ndim == 3:  # RGB
        rgb = torch.from_numpy(first).to(torch.float32)
        y = (0.2126 * rgb[..., 0] + 0.7152 * rgb[..., 1] + 0.0722 * rgb[..., 2]) / 255.0
    else:
        raw = first.astype(np.int32) if first.dtype == np.uint16 else first
        y = torch.from_numpy(raw).to(torch.float32)
        peak = float(2**bit_depth - 1)
        if full_range:
            y = y / peak
        else:
            scale = 2.0 ** (bit_depth - 8)
            y = (y - 16.0 * scale) / (219.0 * scale)
    small = F.adaptive_avg_pool2d(y[None, None], THUMBNAIL_SIZE)[0, 0]
    return small.clamp_(0.0, 1.0).numpy()


def _pts_or_dts(packet: av.Packet) -> int:
    return packet.pts if packet.pts is not None else (packet.dts or 0)


class _PositionCounter:
    """Presentation positions of decoded frames, from the demuxed packets' timestamps.

    A decoder outputs a picture only after every packet presented before it, so the
    picture's index is the number of packets with a smaller pts; packets of pictures that
    fail to decode were still demuxed and keep their place. Only packets not yet passed by
    a decoded picture are held (a small heap: the reorder depth plus decoder latency).

    With ``fill_gaps`` (a constant-rate stream) a timestamp jump of k frame durations also
    counts the k - 1 positions whose packets are missing.
    """

    def __init__(self, frame_ticks: float | None) -> None:
        self.ticks = frame_ticks
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
        if not self.fill_gaps or not self.ticks or before is None or after <= before:
            return 0
        steps = (after - before) / self.ticks
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


# ---------------------------------------------------------------------------- the source


class PyAVSource:
    """A file or URL decoded by PyAV (see the module docstring). Use as a context manager.

    Open errors (missing file, refused connection, unreadable header, pictures above
    ``max_pixels``, a ``start`` past the end) are raised by the constructor; decode-thread
    errors by iteration.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        start: float | None = None,
        duration: float | None = None,
        timeout: float = DEFAULT_OPEN_TIMEOUT,
        thumbnails: bool = False,
        max_pixels: int | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        rtsp_transport: str = "tcp",
        tap: Callable[[av.Packet], None] | None = None,
        on_audio: Callable[[AudioChunk], None] | None = None,
    ) -> None:
        self.source = str(source)
        self._safe = show_source(source)
        self._stats = DecodeStats()
        self._start = start if start else None
        self._duration = duration
        self._timeout = float(timeout)
        self._thumbnails = thumbnails
        self._max_pixels = max_pixels
        self._stop = threading.Event()
        self._container = open_container(
            source, timeout=timeout, stop=self._stop, rtsp_transport=rtsp_transport
        )
        try:
            self._info = describe(self._container, source)
            self._stream = self._container.streams.video[0]
            self._tap = tap
            self._on_audio = on_audio
            audio = self._container.streams.audio
            self._audio = audio[0] if audio and on_audio is not None else None
            self._audio_start: int | None = None
            cc = self._stream.codec_context
            self._check_size(cc.width, cc.height)
            self._check_window()
        except BaseException:
            self._container.close()
            raise
        self._stream.thread_type = "AUTO"
        self._blocking = scheme_of(source) in _BLOCKING_SCHEMES
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._thread: threading.Thread | None = None
        self._container_closed = False
        self._close_lock = threading.Lock()
        self._closed = False
        self._frames_started = False
        self._lookahead_s: float | None = None
        self._lookahead_cut = False
        # Set by the thread.
        self._positions = _PositionCounter(None)
        self._known: dict[int, tuple[int, np.ndarray | None]] = {}  # pts -> (index, thumb)
        self._first_expected: int | None = None
        self._reached_end = False
        self._demux_failed = False
        self._damaged = False
        self._restarted = False

    # -- facts -----------------------------------------------------------------------
    @property
    def info(self) -> VideoInfo:
        """The header's facts, refined by the first picture and packets once decoding ran."""
        return self._info

    @property
    def stats(self) -> DecodeStats:
        return self._stats

    @property
    def has_audio(self) -> bool:
        """True when audio is decoded for ``on_audio``."""
        return self._audio is not None

    @property
    def lookahead_cut(self) -> bool:
        """True when the lookahead stopped early to bound memory."""
        return self._lookahead_cut

    def _check_size(self, width: int, height: int) -> None:
        if self._max_pixels and width * height > self._max_pixels:
            raise InvalidInputError(
                f"{self._safe!r} has {width}x{height} pictures ({width * height / 1e6:.0f} "
                f"megapixels), more than max_pixels ({self._max_pixels / 1e6:.0f} megapixels). "
                "Raise max_pixels if you mean to score pictures this large (memory grows with "
                "them), or check that the file is what you think it is."
            )

    def _check_window(self) -> None:
        info = self._info
        if self._start and info.is_live:
            raise InvalidInputError(
                f"{self._safe!r} is a live stream, which cannot start later: drop the start."
            )
        if self._start and info.duration is not None and self._start >= info.duration:
            raise InvalidInputError(
                f"start = {self._start:g} s is past the end of {self._safe!r}, which lasts "
                f"{info.duration:.3f} s: choose a start below that."
            )

    # -- consumer side ---------------------------------------------------------------
    def lookahead(self, seconds: float) -> list[FramePreview]:
        """Previews of the first ``seconds`` after the first frame (fewer when the kept
        packets would exceed LOOKAHEAD_MAX_BYTES). Call before :meth:`frames`."""
        if self._thread is not None:
            raise VideoError("lookahead() must come before frames() on a source.")
        self._lookahead_s = max(0.0, float(seconds))
        self._start_thread()
        previews: list[FramePreview] = []
        while True:
            item = self._get()
            if item is _LOOKAHEAD_END:
                return previews
            if item is _END:
                return previews
            if isinstance(item, BaseException):
                raise item
            previews.append(item)

    def frames(self) -> Iterator[VideoFrame]:
        """Every frame (after ``start``, within ``duration``), once."""
        if self._frames_started:
            raise VideoError("A source's frames can be read only once; open it again.")
        self._frames_started = True
        if self._thread is None:
            self._start_thread()
        return self._consume()

    __iter__ = frames

    def _start_thread(self) -> None:
        if self._closed:
            raise VideoError(f"The source {self._safe!r} was closed; open it again.")
        self._thread = threading.Thread(target=self._run, name="topiq-decode", daemon=True)
        self._thread.start()

    def _get(self) -> object:
        while True:
            try:
                return self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._closed:
                    return _END  # closed from another thread: the iteration just ends
                thread = self._thread
                if thread is None or not thread.is_alive():
                    # The thread always ends with a last item; this only guards a crash.
                    try:
                        return self._queue.get_nowait()
                    except queue.Empty:
                        return VideoError(f"The decoder of {self._safe!r} stopped unexpectedly.")

    def _consume(self) -> Iterator[VideoFrame]:
        try:
            while True:
                item = self._get()
                if item is _END:
                    break
                if item is _LOOKAHEAD_END:
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()
        stats = self._stats
        if stats.frames_decoded == 0 and stats.stopped_early is None:
            if stats.connection_lost:
                raise VideoError(
                    f"{self._safe!r} delivered no frame before it stopped ({stats.connection_lost})."
                    " Check that the stream is running."
                )
            errors = stats.decode_errors
            cause = stats.error_messages[0] if stats.error_messages else None
            details = [f"{errors} decode errors"] if errors else []
            if cause:
                details.append(f"first error: {cause}")
            raise VideoError(
                f"No frame of {self._safe!r} could be decoded"
                + (f" ({'; '.join(details)})" if details else "")
                + ". The file holds no pictures or is corrupt; re-encode or re-download it"
                + (
                    ", or check the start/duration window."
                    if self._start or self._duration
                    else "."
                )
            )

    def close(self) -> None:
        """Stop the decoding thread and close the container (idempotent). Waits at most
        the read timeout for a thread blocked on data, then leaves it to end by itself."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is None:
            self._close_container()
            return
        thread.join(timeout=self._timeout + 1.0 if self._blocking else FILE_CLOSE_WAIT_S)
        if thread.is_alive():
            logger.warning(
                "The decoder of %s is still waiting for data; it was left to stop by itself.",
                self._safe,
            )
        while not self._queue.empty():  # drop buffered frames now, not at GC time
            self._queue.get_nowait()

    def _close_container(self) -> None:
        with self._close_lock:
            if not self._container_closed:
                self._container_closed = True
                self._container.close()

    @contextlib.contextmanager
    def kept_open(self) -> Iterator[bool]:
        """Hold the container open (True) while the block uses its streams, e.g. as
        templates for remuxing tapped packets; False when it is already closed."""
        with self._close_lock:
            yield not self._container_closed

    def __enter__(self) -> PyAVSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is not None and self._thread.is_alive() and not self._closed:
            self._stats.stopped_early = self._stats.stopped_early or "consumer stopped"
        self.close()

    # -- producer side ---------------------------------------------------------------
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
            packets: Iterable[av.Packet] = self._packets_to_decode()
            if self._lookahead_s is not None:
                replay = self._run_lookahead(packets)
                if replay is None:
                    return
                self._put(_LOOKAHEAD_END)
                self._stream.codec_context.flush_buffers()
                packets = itertools.chain(replay, packets)
            self._decode_frames(packets)
        except BaseException as exc:  # re-raised in the consumer
            self._put(exc)
            return
        finally:
            self._close_container()
        self._put(_END)

    # -- demuxing --------------------------------------------------------------------
    def _demux(self) -> Iterator[av.Packet]:
        """The video stream's packets; a failure or an unasked-for end is recorded. Every
        packet read (audio too) passes the tap; audio is decoded for ``on_audio``."""
        wanted = [self._stream] if self._audio is None else [self._stream, self._audio]
        packets = self._container.demux(wanted)
        live = self._info.is_live
        while not self._stop.is_set():
            try:
                packet = next(packets)
            except StopIteration:
                if live and not self._stop.is_set() and not self._reached_end:
                    self._stats.connection_lost = (
                        f"the stream ended, or sent nothing for {self._timeout:g} s"
                    )
                return
            except (av.error.FFmpegError, OSError) as exc:
                message = scrub(str(exc), self.source)
                self._stats.error_messages.append(f"demux: {message}")
                if live:
                    self._stats.connection_lost = message
                self._demux_failed = True
                return
            if self._tap is not None:
                self._tap(packet)
            if self._audio is not None and packet.stream.index == self._audio.index:
                self._decode_audio(packet)
                continue
            yield packet

    def _decode_audio(self, packet: av.Packet) -> None:
        """Audio as mono float samples with their stream time, for level detectors."""
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            return  # audio damage does not stop the video
        assert self._audio is not None and self._on_audio is not None
        tb = Fraction(self._audio.time_base) if self._audio.time_base else None
        for frame in frames:
            if frame.pts is None or tb is None:
                continue
            if self._audio_start is None:
                self._audio_start = frame.pts
            samples = frame.to_ndarray()
            if samples.dtype.kind in "iu":  # integer PCM: scale to [-1, 1]
                samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
            samples = samples.astype(np.float32, copy=False)
            if frame.format.is_planar:
                mono = samples.mean(axis=0)
            else:
                channels = len(frame.layout.channels)
                mono = samples.reshape(-1, channels).mean(axis=1)
            self._on_audio(
                AudioChunk(
                    time=float((frame.pts - self._audio_start) * tb),
                    samples=mono,
                    sample_rate=int(frame.sample_rate),
                )
            )

    def _judge_rate(self, packets: list[av.Packet]) -> None:
        """Frame duration and constant/variable rate from the first packets' timestamps
        (container rate fields cannot: H.264 often reports twice the frame rate there)."""
        pts = [p.pts for p in packets if p.pts is not None and p.size]
        is_vfr = timestamps_vary(pts)
        gaps = typical_gaps(pts)
        tb = self._info.time_base
        if gaps is not None and not is_vfr:
            ticks = float(np.median(gaps))
        elif self._info.fps:
            ticks = float(1 / (self._info.fps * tb))
        else:
            ticks = None
        self._positions.ticks = ticks
        # Count the frames that timestamps jump over only where the rate is constant.
        self._positions.fill_gaps = bool(ticks) and is_vfr is not True
        self._info = replace(self._info, is_vfr=is_vfr)

    def _registered(self) -> Iterator[av.Packet]:
        """Demuxed packets, each counted by the position counter as it passes."""
        demux = self._demux()
        probe_count = RATE_PROBE_PACKETS_LIVE if self._info.is_live else RATE_PROBE_PACKETS
        head = list(itertools.islice(demux, probe_count))
        self._judge_rate(head)
        last_dts: int | None = None
        for packet in itertools.chain(head, demux):
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
                self._stats.bytes_read += packet.size
                if packet.is_corrupt:
                    self._damaged = True
            yield packet

    def _target_pts(self) -> int | None:
        if not self._start:
            return None
        first = self._stream.start_time or 0
        return first + int(round(self._start / self._info.time_base))

    def _packets_to_decode(self) -> Iterator[av.Packet]:
        """Packets, minus those a decode from the keyframe before ``start`` does not need.

        Until the first packet presented at or after the target, packets are only counted
        (every presentation position stays known, so indices are exact without seeking)
        and the last two GOPs are held: decoding restarts from the older keyframe, early
        enough for open-GOP leading pictures. A stream with too long a GOP for the buffer
        is decoded from where the buffer overflowed instead; frames before the target are
        dropped later either way.
        """
        target_pts = self._target_pts()
        gops: list[list[av.Packet]] = []
        held = 0
        for packet in self._registered():
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

    # -- decoding --------------------------------------------------------------------
    def _pictures(
        self, packets: Iterable[av.Packet], stats: DecodeStats, replay: bool = False
    ) -> Iterator[tuple[av.VideoFrame, int, int, float]]:
        """Decoded pictures inside the window as (frame, index, pts, seconds)."""
        tb = self._info.time_base
        first_pts = self._stream.start_time or 0
        target_pts = self._target_pts()
        end_time = (self._start or 0.0) + self._duration if self._duration else None
        frame_s = self._info.frame_duration
        last_index = -1
        prev_pts: int | None = None
        prev_time: float | None = None
        for packet in packets:
            if self._stop.is_set():
                return
            try:
                decoded = packet.decode()
            except av.error.EOFError:
                break
            except av.error.FFmpegError as exc:
                # One bad packet (bit rot): count it and carry on with the next.
                stats.decode_errors += 1
                self._damaged = True
                if len(stats.error_messages) < MAX_LISTED:
                    stats.error_messages.append(scrub(str(exc), self.source))
                continue
            for frame in decoded:
                pts = frame.pts
                known = self._known.get(pts) if replay and pts is not None else None
                if known is not None:
                    index = known[0]
                elif pts is None:
                    ticks = self._positions.ticks or 1
                    pts = (prev_pts + int(round(ticks))) if prev_pts is not None else 0
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
                        self._safe,
                        last_index + 1,
                    )
                    self._positions.usable = False
                    index = last_index + 1
                elif self._positions.usable:
                    index = max(self._positions.position(pts), last_index + 1)
                else:
                    index = last_index + 1
                if frame.is_corrupt:
                    self._damaged = True
                t = float((pts - first_pts) * tb)
                if self._start and t < self._start - 1e-6:
                    continue
                if end_time is not None and t >= end_time - 1e-6:
                    self._reached_end = True
                    stats.stopped_early = "duration reached"
                    return
                if last_index < 0:
                    if self._first_expected is None:
                        self._first_expected = index if target_pts is not None else 0
                    expected = self._first_expected
                    self._refine_info(frame)
                else:
                    expected = last_index + 1
                if index > expected:
                    stats.lost_frames += index - expected
                    if len(stats.gaps) < MAX_LISTED:
                        at = prev_time + frame_s if prev_time is not None and frame_s else t
                        stats.gaps.append((expected, at, index - expected))
                if frame.is_corrupt:
                    stats.corrupt_frames += 1
                self._check_size(frame.width, frame.height)
                last_index, prev_pts, prev_time = index, pts, t
                yield frame, index, int(pts), t
        if self._stop.is_set():
            return
        if replay:
            self._finish(stats, last_index, prev_pts)

    def _refine_info(self, frame: av.VideoFrame) -> None:
        """Rotation reaches PyAV as side data of decoded frames: the first one says."""
        rotation = normalise_rotation(getattr(frame, "rotation", 0) or 0) or self._info.rotation
        width, height = frame.width, frame.height
        if rotation in (90, 270):
            width, height = height, width
        if (rotation, width, height) != (self._info.rotation, self._info.width, self._info.height):
            self._info = replace(self._info, rotation=rotation, width=width, height=height)

    def _run_lookahead(self, packets: Iterator[av.Packet]) -> list[av.Packet] | None:
        """Decode the first seconds into previews, keeping their packets for the replay;
        None when the consumer went away."""
        recorded: list[av.Packet] = []
        held = 0

        def recording() -> Iterator[av.Packet]:
            nonlocal held
            for packet in packets:
                recorded.append(packet)
                held += packet.size
                yield packet
                if held > LOOKAHEAD_MAX_BYTES:
                    self._lookahead_cut = True
                    return

        scratch = DecodeStats()  # the frame pass counts everything again
        limit: float | None = None
        assert self._lookahead_s is not None
        for frame, index, pts, t in self._pictures(recording(), scratch):
            if limit is None:
                limit = t + self._lookahead_s
            planes, _, color = self._planes(frame)
            thumb = luma_thumbnail(planes, color.bit_depth, color.range == "full")
            self._known[pts] = (index, thumb)
            if not self._put(FramePreview(index=index, time=t, thumb=thumb)):
                return None
            if t >= limit:
                break
        if self._lookahead_cut:
            logger.info(
                "%s: the lookahead stopped after %d frames to bound memory.",
                self._safe,
                len(self._known),
            )
        self._reached_end = False
        return recorded

    def _planes(self, frame: av.VideoFrame) -> tuple[tuple[np.ndarray, ...], str, object]:
        return upright_planes(frame, self._info.rotation)

    def _decode_frames(self, packets: Iterable[av.Packet]) -> None:
        tb = self._info.time_base
        for frame, index, pts, t in self._pictures(packets, self._stats, replay=True):
            planes, pix_fmt, color = self._planes(frame)
            thumb = None
            if self._thumbnails:
                known = self._known.pop(pts, None)
                thumb = known[1] if known is not None else None
                if thumb is None:
                    thumb = luma_thumbnail(planes, color.bit_depth, color.range == "full")
            height, width = planes[0].shape[:2]
            video_frame = VideoFrame(
                index=index,
                pts=pts,
                time_base=tb,
                time=t,
                planes=planes,
                pix_fmt=pix_fmt,
                color=color,
                width=width,
                height=height,
                thumb=thumb,
            )
            self._stats.frames_decoded += 1
            if not self._put(video_frame):
                self._stats.stopped_early = "consumer stopped"
                return
        if self._stop.is_set():
            self._stats.stopped_early = self._stats.stopped_early or "consumer stopped"

    def _finish(self, stats: DecodeStats, last_index: int, last_pts: int | None) -> None:
        """At the end of the frame pass: the tail's lost frames and truncation."""
        if self._reached_end:
            return
        if self._demux_failed:
            if last_index >= 0 and not self._info.is_live:
                self._report_truncation(last_index + 1, None)
            return
        if last_pts is not None:
            # Packets presented after the last picture that never decoded: damage at the
            # tail of a whole file (a cut-off file stops demuxing instead).
            stats.lost_frames += self._positions.pending_after(last_pts)
        self._check_truncation(last_index)

    def _check_truncation(self, last_index: int) -> None:
        """Compare how far the demuxer got with what the header announced (frame count,
        else duration). Pictures lost to damage inside a whole file do not count: their
        packets were still demuxed."""
        info = self._info
        if info.is_live or self._duration or last_index < 0:
            return
        got = max(self._positions.total, last_index + 1)
        if info.frame_count:
            if got < info.frame_count - TRUNCATION_TOLERANCE_FRAMES:
                self._report_truncation(last_index + 1, info.frame_count)
            return
        last_pts = self._positions.max_pts
        # A container's duration covers all its streams (audio often outlasts the video):
        # judge by it only when it is the video stream's own or the only stream's.
        own_duration = self._stream.duration is not None or len(self._container.streams) == 1
        if info.duration and info.fps and last_pts is not None and own_duration:
            # Containers disagree on whether duration counts from 0 or from the start
            # time, so accept either reading before calling the file short.
            frame_s = 1 / float(info.fps)
            end = float(last_pts * info.time_base) + frame_s
            slack = max(TRUNCATION_TOLERANCE_FRAMES * frame_s, 0.02 * info.duration)
            if end < info.duration - slack and end - info.start_time < info.duration - slack:
                self._report_truncation(last_index + 1, int(round(info.duration * float(info.fps))))

    def _report_truncation(self, at: int, expected: int | None) -> None:
        self._stats.truncated_at = at
        logger.warning(
            "%s stops at frame index %d%s: the file looks truncated (an interrupted copy or "
            "download?); results cover only the frames before it.",
            self._safe,
            at,
            f" but its header announces about {expected} frames" if expected else "",
        )


def open_video(source: str | Path, **options: Any) -> PyAVSource:
    """Open a file or URL for decoding (options: those of :class:`PyAVSource`); iterate it
    (once) for its frames."""
    return PyAVSource(source, **options)


__all__ = ["PyAVSource", "frame_planes", "luma_thumbnail", "open_video", "rotate_planes"]
