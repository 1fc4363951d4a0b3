"""Real live-stream servers on 127.0.0.1 for tests, each a context manager that cleans up.

- :class:`RtspServer`: Debian's GStreamer RTSP server (``tests/servers/gst_server.py`` under
  ``/usr/bin/python3``) serving a moving test pattern, H.264 (+ AAC tone), or a TS file in a loop.
- :class:`SrtServer`: the same script sending MPEG-TS from an SRT listener (GStreamer srtsink).
- :class:`UdpTsSender`: a thread that encodes a synthetic picture to MPEG-TS with PyAV and sends it
  in real time as UDP (or RTP) datagrams, with deliberate loss, outages, frozen/black/silent spans.
- :class:`HttpTsServer`: the same live MPEG-TS as one endless HTTP response per client.
- :class:`RtmpServer`: an RTMP server (written here) playing the synthetic stream in FLV tags.
- :class:`HlsServer`: a live HLS origin, a sliding-window playlist whose segments are encoded as
  their time comes.
- :class:`WebhookReceiver`: records POSTed JSON; can fail the first N requests.

Every server binds 127.0.0.1 only, picks a free port unless given one, and leaves no process or
thread behind after ``stop()``/the ``with`` block (subprocesses run in their own process group,
are killed as a group, and exit by themselves when this process dies). Frame ``i`` of every
synthetic stream shows :meth:`SyntheticStream.picture` ``(i)``, so tests can tell what a client
should see. Test support only: never imports the package under test.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import http.server
import io
import json
import os
import queue
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

HOST = "127.0.0.1"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's interpreter, where python3-gi lives
GST_SERVER_SCRIPT = Path(__file__).resolve().parent / "servers" / "gst_server.py"
# CI sets this so that a missing GStreamer stack fails the server tests instead of skipping them.
REQUIRE_ENV = "TOPIQ_VIDEO_REQUIRE_SERVERS"

DEFAULT_WIDTH = 320
DEFAULT_HEIGHT = 180
DEFAULT_FPS = 25
DEFAULT_GOP = 25  # one keyframe a second: a client joining mid-stream waits at most 1 s
DEFAULT_CRF = 23
DEFAULT_SEED = 1234
DEFAULT_AUDIO_RATE = 48000
DEFAULT_TONE_HZ = 440.0
TS_PACKET = 188
DATAGRAM_TS_PACKETS = 7  # 7 x 188 = 1316 bytes: the usual MPEG-TS-over-UDP payload
RTP_PAYLOAD_MP2T = 33  # RFC 3551 static payload type for MPEG-TS
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0

Span = tuple[float, float]  # (start, duration) in seconds of stream time


# --------------------------------------------------------------------------- ports, cleanup


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def free_udp_port(*, pair: bool = False) -> int:
    """A UDP port on 127.0.0.1 free a moment ago; ``pair``: an even port whose successor is
    free too (an ``rtp://`` reader also binds PORT+1 for RTCP)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
            if not pair:
                return port
            if port % 2 or port + 1 > 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtcp:
                try:
                    rtcp.bind((HOST, port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free pair of UDP ports on 127.0.0.1")


def udp_port_bound(port: int) -> bool:
    """True when some socket on this machine is bound to UDP ``port`` on 127.0.0.1 or any
    address (read from /proc/net/udp, so checking never takes the port away)."""
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    with contextlib.suppress(OSError), open("/proc/net/udp") as table:
        next(table)
        return any(line.split()[1] in wanted for line in table)
    return False


_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    """Last resort when a test forgot a ``with``: nothing outlives the test session."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


class _Lifecycle:
    """start/stop/restart and the context-manager protocol shared by every server."""

    def start(self) -> _Lifecycle:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> _Lifecycle:
        """Stop, then start again on the same port."""
        self.stop()
        return self.start()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kill_group(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the child's process group, SIGKILL it if it lingers, and reap the child."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    # The group may hold grandchildren even after the leader exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


# --------------------------------------------------------------------------- GStreamer servers


@functools.lru_cache(maxsize=1)
def gstreamer_missing() -> str | None:
    """Why the GStreamer servers cannot run here (a sentence), or None when they can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    try:
        done = subprocess.run(
            [SYSTEM_PYTHON, str(GST_SERVER_SCRIPT), "--check"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {SYSTEM_PYTHON}: {exc}"
    if done.returncode != 0:
        return (done.stdout + done.stderr).strip().splitlines()[-1]
    return None


def gstreamer_available() -> bool:
    """True when the GStreamer server tests can run, or when CI demands them (they then fail)."""
    return gstreamer_missing() is None or bool(os.environ.get(REQUIRE_ENV))


class _GstProcess(_Lifecycle):
    """One ``gst_server.py`` subprocess: started, awaited until ready, killed as a group."""

    def __init__(self, port: int | None, ready_timeout: float) -> None:
        self.port = port or free_tcp_port()
        self.ready_timeout = ready_timeout
        self.starts = 0
        self._proc: subprocess.Popen | None = None
        self._log: Any = None

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _await_ready(self, deadline: float) -> None:
        """Extra readiness check after the script said READY."""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_text(self) -> str:
        """What the server wrote on standard error (GStreamer warnings) so far."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def start(self) -> _GstProcess:
        if self.running:
            return self
        deadline = time.monotonic() + self.ready_timeout
        # The port may still be held a moment by the previous run: retry until the deadline.
        while True:
            error = self._spawn_once(deadline)
            if error is None:
                break
            self._cleanup_proc()
            if "cannot listen" not in error or time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start: {error}")
            time.sleep(0.1)
        try:
            self._await_ready(deadline)
        except BaseException:
            self.stop()
            raise
        self.starts += 1
        _LIVE.add(self)
        return self

    def _spawn_once(self, deadline: float) -> str | None:
        if self._log is not None:
            self._log.close()
        # A file, not a pipe: GStreamer's warnings can never fill a pipe and block the server.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for log_text()
        self._proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(GST_SERVER_SCRIPT), *self._args()],
            stdin=subprocess.PIPE,  # the script exits when this closes: it dies with us
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                return (
                    f"no READY line within {self.ready_timeout} s; log: {self.log_text()[-2000:]}"
                )
            ready, _, _ = select.select([self._proc.stdout], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._proc.stdout.fileno(), 4096)
            if not chunk:
                return f"exited with {self._proc.wait()}; log: {self.log_text()[-2000:]}"
            line += chunk
        text = line.decode(errors="replace").strip()
        if text.startswith("READY"):
            return None
        return text

    def _cleanup_proc(self) -> None:
        if self._proc is not None:
            _kill_group(self._proc)
            self._proc = None

    def stop(self) -> None:
        """Kill the server (clients see their connection close). Safe to call twice."""
        self._cleanup_proc()
        _LIVE.discard(self)


def rtsp_describe(url: str, timeout: float = 5.0) -> str:
    """Send one RTSP DESCRIBE and return the whole reply (status line, headers, SDP)."""
    rest = url.split("://", 1)[1]
    hostport = rest.split("/", 1)[0]
    host, _, port = hostport.partition(":")
    request = f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    with socket.create_connection((host, int(port or 554)), timeout=timeout) as sock:
        sock.sendall(request.encode())
        reply = b""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
            head, sep, body = reply.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if len(body) >= length:
                    break
    return reply.decode(errors="replace")


class RtspServer(_GstProcess):
    """GStreamer's RTSP server at ``rtsp://127.0.0.1:PORT/MOUNT`` (see :attr:`url`).

    Serves a live moving test pattern (videotestsrc ``pattern``, scrolling ``speed`` pixels a
    frame) as H.264 (x264, ``gop`` frames between keyframes), with an AAC sine tone when
    ``audio``; or, with ``file``, an MPEG-TS file holding H.264 played in a loop. Each client
    gets its own pipeline unless ``shared``. Ready means: the script listens, a TCP connect
    succeeds and a DESCRIBE of the mount answers 200 with an SDP.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        mount: str = "/test",
        width: int = DEFAULT_WIDTH,
        height: int = DEFAULT_HEIGHT,
        fps: int = DEFAULT_FPS,
        gop: int = DEFAULT_GOP,
        bitrate_kbps: int = 600,
        pattern: str = "smpte",
        speed: int = 4,
        audio: bool = False,
        tone_hz: float = DEFAULT_TONE_HZ,
        file: str | Path | None = None,
        shared: bool = False,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        super().__init__(port, ready_timeout)
        self.mount = mount if mount.startswith("/") else "/" + mount
        self.options = dict(
            width=width,
            height=height,
            fps=fps,
            gop=gop,
            bitrate=bitrate_kbps,
            pattern=pattern,
            speed=speed,
            tone=tone_hz,
        )
        self.audio = audio
        self.file = Path(file).resolve() if file is not None else None
        self.shared = shared
        self.last_describe = ""

    @property
    def url(self) -> str:
        return f"rtsp://{HOST}:{self.port}{self.mount}"

    def _args(self) -> list[str]:
        args = ["rtsp", "--port", str(self.port), "--mount", self.mount]
        for name, value in self.options.items():
            args += [f"--{name}", str(value)]
        if self.audio:
            args.append("--audio")
        if self.file is not None:
            args += ["--file", str(self.file)]
        if self.shared:
            args.append("--shared")
        return args

    def _await_ready(self, deadline: float) -> None:
        error = ""
        while time.monotonic() < deadline:
            try:
                reply = rtsp_describe(self.url, timeout=max(0.5, deadline - time.monotonic()))
            except OSError as exc:
                error = str(exc)
                time.sleep(0.05)
                continue
            if reply.startswith("RTSP/1.0 200") and "m=video" in reply:
                self.last_describe = reply
                return
            error = reply[:500]
            time.sleep(0.1)
        raise RuntimeError(
            f"RTSP server on port {self.port} never answered DESCRIBE: {error}; "
            f"log: {self.log_text()[-2000:]}"
        )


class SrtServer(_GstProcess):
    """An SRT listener at ``srt://127.0.0.1:PORT`` (GStreamer srtsink) sending live MPEG-TS
    (moving test pattern, H.264, optional AAC tone) to every caller that connects.

    PyAV's FFmpeg has no SRT: read it through a relay, e.g. an FFmpeg binary built with libsrt
    (``ffmpeg -i srt://127.0.0.1:PORT?mode=caller -c copy -f mpegts pipe:1``). Ready means the
    script is running with its pipeline playing and the UDP port is bound.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        width: int = DEFAULT_WIDTH,
        height: int = DEFAULT_HEIGHT,
        fps: int = DEFAULT_FPS,
        gop: int = DEFAULT_GOP,
        bitrate_kbps: int = 600,
        pattern: str = "smpte",
        speed: int = 4,
        audio: bool = False,
        latency_ms: int = 120,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        super().__init__(port or free_udp_port(), ready_timeout)
        self.options = dict(
            width=width,
            height=height,
            fps=fps,
            gop=gop,
            bitrate=bitrate_kbps,
            pattern=pattern,
            speed=speed,
            latency=latency_ms,
        )
        self.audio = audio

    @property
    def url(self) -> str:
        """The URL a caller uses."""
        return f"srt://{HOST}:{self.port}?mode=caller"

    def _args(self) -> list[str]:
        args = ["srt", "--port", str(self.port)]
        for name, value in self.options.items():
            args += [f"--{name}", str(value)]
        if self.audio:
            args.append("--audio")
        return args


@functools.lru_cache(maxsize=1)
def ffmpeg_with_srt() -> str | None:
    """Path of an FFmpeg binary that reads ``srt://`` (imageio-ffmpeg's if that package is
    installed, else one on PATH), or None. Not a dependency: SRT tests use it when present."""
    candidates = []
    with contextlib.suppress(Exception):
        import imageio_ffmpeg

        candidates.append(imageio_ffmpeg.get_ffmpeg_exe())
    candidates.append(shutil.which("ffmpeg"))
    for exe in filter(None, candidates):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [exe, "-hide_banner", "-protocols"], capture_output=True, text=True, timeout=20
            )
            inputs = done.stdout.split("Output:")[0].split()
            if "srt" in inputs:
                return exe
    return None


class SrtRelay(_Lifecycle):
    """Receives an SRT stream as a caller and writes its MPEG-TS to :attr:`stdout`, for PyAV:
    ``av.open(relay.stdout, format="mpegts")``. Uses ``ffmpeg`` (a binary with SRT, ``-c
    copy``) when given, else GStreamer's srtsrc through ``gst_server.py srt-relay``."""

    def __init__(self, url: str, *, ffmpeg: str | None = None) -> None:
        self.url = url
        self.ffmpeg = ffmpeg
        self._proc: subprocess.Popen | None = None

    @property
    def stdout(self) -> Any:
        assert self._proc is not None, "start the relay first"
        return self._proc.stdout

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def wait(self, timeout: float) -> int:
        """Wait for the relay to end by itself (the stream ended); its exit status."""
        assert self._proc is not None
        return self._proc.wait(timeout)

    def command(self) -> list[str]:
        if self.ffmpeg:
            # 1.5 s of analysis: a caller joins mid-GOP and needs one keyframe (1 s apart).
            return [
                self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
                "-analyzeduration", "1500000", "-i", self.url,
                "-map", "0", "-c", "copy", "-f", "mpegts", "pipe:1",
            ]  # fmt: skip
        return [SYSTEM_PYTHON, str(GST_SERVER_SCRIPT), "srt-relay", "--uri", self.url]

    def start(self) -> SrtRelay:
        if self._proc is None:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.PIPE,  # the GStreamer relay exits when this closes
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            _LIVE.add(self)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            _kill_group(self._proc)
            self._proc = None
        _LIVE.discard(self)


# --------------------------------------------------------------------------- synthetic content


def _in_spans(t: float, spans: Sequence[Span]) -> Span | None:
    for start, duration in spans:
        if start <= t < start + duration:
            return (start, duration)
    return None


@dataclass
class SyntheticStream:
    """What the PyAV-based servers send: a moving picture, optionally a tone, with spans.

    Times are seconds of stream time (frame ``i`` is at ``i / fps``). During a ``frozen`` span
    every frame repeats the picture of the span's first frame; during a ``black`` span frames
    are black (RGB 0, luma 16 after limited-range conversion); during a ``silence`` span the
    tone is muted. The moving picture scrolls a colour texture sideways and moves a box, so
    consecutive frames differ everywhere.
    """

    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    fps: int = DEFAULT_FPS
    gop: int = DEFAULT_GOP
    crf: int = DEFAULT_CRF
    audio: bool = False
    audio_rate: int = DEFAULT_AUDIO_RATE
    tone_hz: float = DEFAULT_TONE_HZ
    frozen: Sequence[Span] = ()
    black: Sequence[Span] = ()
    silence: Sequence[Span] = ()
    seed: int = DEFAULT_SEED
    scroll_px_per_s: float = 50.0
    _tile: np.ndarray = field(init=False, repr=False)
    _box_colour: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        u = np.arange(self.width, dtype=np.float64)[None, :] / self.width
        v = np.arange(self.height, dtype=np.float64)[:, None] / self.height
        img = np.empty((self.height, self.width, 3))
        for c in range(3):
            # Whole cycles across the width, so the texture tiles when it scrolls.
            fx = rng.integers(3, 16, size=4)
            fy = rng.uniform(0.5, 4, size=4)
            ph = rng.uniform(0, 2 * np.pi, size=4)
            layer = sum(np.sin(2 * np.pi * (fx[k] * u + fy[k] * v) + ph[k]) for k in range(len(fx)))
            img[..., c] = 0.5 + 0.12 * layer
        tile = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        self._tile = np.concatenate([tile, tile], axis=1)
        self._box_colour = rng.integers(0, 256, size=3).astype(np.uint8)

    def time_of(self, index: int) -> float:
        return index / self.fps

    def kind(self, index: int) -> str:
        """``"black"``, ``"frozen"`` or ``"moving"``: what frame ``index`` shows."""
        t = self.time_of(index)
        if _in_spans(t, self.black):
            return "black"
        if _in_spans(t, self.frozen):
            return "frozen"
        return "moving"

    def moving_picture(self, t: float) -> np.ndarray:
        """The (H, W, 3) uint8 RGB moving picture at ``t`` seconds."""
        shift = int(round(t * self.scroll_px_per_s)) % self.width
        img = self._tile[:, shift : shift + self.width].copy()
        bw, bh = max(2, self.width // 8), max(2, self.height // 5)
        bx = int((0.5 + 0.45 * np.sin(2 * np.pi * 0.37 * t)) * (self.width - bw))
        by = int((0.5 + 0.45 * np.cos(2 * np.pi * 0.23 * t)) * (self.height - bh))
        img[by : by + bh, bx : bx + bw] = self._box_colour
        return img

    def picture(self, index: int) -> np.ndarray:
        """The RGB picture of frame ``index`` (frozen and black spans applied)."""
        t = self.time_of(index)
        if _in_spans(t, self.black):
            return np.zeros((self.height, self.width, 3), np.uint8)
        span = _in_spans(t, self.frozen)
        if span is not None:
            t = np.ceil(span[0] * self.fps - 1e-9) / self.fps  # the span's first frame
        return self.moving_picture(t)

    def tone(self, first_sample: int, n: int) -> np.ndarray:
        """(1, n) float32 mono samples from ``first_sample`` on (silence spans applied)."""
        idx = np.arange(first_sample, first_sample + n)
        samples = 0.3 * np.sin(2 * np.pi * self.tone_hz * idx / self.audio_rate)
        if self.silence:
            t = idx / self.audio_rate
            for start, duration in self.silence:
                samples[(t >= start) & (t < start + duration)] = 0.0
        return samples.astype(np.float32)[None, :]


class StreamEncoder:
    """Encodes :class:`SyntheticStream` frames to MPEG-TS (or FLV), writing bytes to ``write``
    as each frame is muxed (``flush_packets``), so a live sender can pace it in real time."""

    AUDIO_FRAME = 1024  # AAC frame size

    def __init__(
        self, stream: SyntheticStream, write: Callable[[bytes], Any], format: str = "mpegts"
    ) -> None:
        self.stream = stream
        self.format = format
        self._sink = _WriteSink(write)
        self._out = av.open(
            self._sink, "w", format=format, container_options={"flush_packets": "1"}
        )
        video = self._out.add_stream("libx264", rate=stream.fps)
        video.width = stream.width
        video.height = stream.height
        video.pix_fmt = "yuv420p"
        # zerolatency: no B-frames and no lookahead, so each frame leaves the encoder at once.
        video.codec_context.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "crf": str(stream.crf),
            "x264-params": f"keyint={stream.gop}:min-keyint={stream.gop}:scenecut=0",
        }
        video.codec_context.gop_size = stream.gop
        self._video = video
        self._audio = None
        self._audio_pos: int | None = None
        if stream.audio:
            audio = self._out.add_stream("aac", rate=stream.audio_rate)
            audio.layout = "mono"
            self._audio = audio

    def encode(self, index: int) -> None:
        """Encode video frame ``index`` and the audio up to the end of its display time."""
        frame = av.VideoFrame.from_ndarray(self.stream.picture(index), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = index
        for packet in self._video.encode(frame):
            self._out.mux(packet)
        if self._audio is None:
            return
        rate = self.stream.audio_rate
        if self._audio_pos is None:  # the audio starts with the first frame
            self._audio_pos = index * rate // self.stream.fps
            if self.format == "flv":
                # FLV has no negative times: the muxer would shift every timestamp by AAC's
                # priming delay. Starting the tone one AAC frame late keeps frame i at i / fps.
                self._audio_pos += self.AUDIO_FRAME
        end = (index + 1) * rate // self.stream.fps
        while self._audio_pos < end:
            chunk = av.AudioFrame.from_ndarray(
                self.stream.tone(self._audio_pos, self.AUDIO_FRAME), format="fltp", layout="mono"
            )
            chunk.sample_rate = rate
            chunk.pts = self._audio_pos
            self._audio_pos += self.AUDIO_FRAME
            for packet in self._audio.encode(chunk):
                self._out.mux(packet)

    def close(self, flush: bool = True) -> None:
        """Flush the encoders (``flush``) and close the muxer."""
        if flush:
            with contextlib.suppress(av.error.EOFError):
                for packet in self._video.encode(None):
                    self._out.mux(packet)
                if self._audio is not None:
                    for packet in self._audio.encode(None):
                        self._out.mux(packet)
        self._out.close()


class _WriteSink:
    """The write-only file object PyAV muxes into."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write

    def write(self, data: bytes) -> int:
        self._write(bytes(data))
        return len(data)


def encode_ts(stream: SyntheticStream, first_index: int, n_frames: int) -> bytes:
    """Frames ``first_index`` .. ``first_index + n_frames - 1`` as one MPEG-TS (an HLS
    segment): starts with a keyframe, timestamps continue those of earlier segments."""
    buf = io.BytesIO()
    encoder = StreamEncoder(stream, buf.write)
    for i in range(first_index, first_index + n_frames):
        encoder.encode(i)
    encoder.close()
    return buf.getvalue()


class _PacedTsThread(_Lifecycle):
    """Encodes a SyntheticStream in real time on a thread and hands out 1316-byte chunks."""

    def __init__(self, stream: SyntheticStream, chunk_size: int) -> None:
        self.stream = stream
        self.chunk_size = chunk_size
        self.frames_encoded = 0
        self.started_at: float | None = None  # time.monotonic() of stream time 0
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._pending = bytearray()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _on_chunk(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _on_stop(self) -> None:
        """Called on the caller's thread after the encoding thread ended."""

    def _before_first_frame(self) -> bool:
        """Called on the encoding thread before stream time 0; False ends the thread."""
        return True

    def _write(self, data: bytes) -> None:
        self._pending += data
        while len(self._pending) >= self.chunk_size:
            chunk = bytes(self._pending[: self.chunk_size])
            del self._pending[: self.chunk_size]
            self._on_chunk(chunk)

    def _run(self) -> None:
        encoder = None
        try:
            encoder = StreamEncoder(self.stream, self._write)
            if not self._before_first_frame():
                return
            t0 = time.monotonic()
            self.started_at = t0
            index = 0
            while not self._stopping.is_set():
                delay = t0 + index / self.stream.fps - time.monotonic()
                if delay > 0 and self._stopping.wait(delay):
                    break
                self._current_time = index / self.stream.fps
                encoder.encode(index)
                index += 1
                self.frames_encoded = index
        except BaseException as exc:  # reported by stop(), never lost
            self.error = exc
        finally:
            if encoder is not None:
                with contextlib.suppress(Exception):
                    encoder.close(flush=False)

    def start(self) -> _PacedTsThread:
        if self.running:
            return self
        self._stopping.clear()
        self._pending = bytearray()
        self.frames_encoded = 0
        self.error = None
        self._current_time = 0.0
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        _LIVE.add(self)
        return self

    def stop(self) -> None:
        """Stop sending; raises what the encoding thread raised, if anything."""
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(STOP_TIMEOUT)
            if self._thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} thread did not stop")
            self._thread = None
        self._on_stop()
        _LIVE.discard(self)
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(f"{type(self).__name__} failed: {error!r}") from error

    def stream_time(self) -> float:
        """Seconds of stream time encoded so far."""
        return self.frames_encoded / self.stream.fps


class UdpTsSender(_PacedTsThread):
    """Sends live MPEG-TS to ``udp://127.0.0.1:PORT`` (or ``rtp://`` with ``rtp``).

    Datagrams carry 7 TS packets (1316 bytes; RTP adds a 12-byte header, payload type 33).
    ``drop``: fraction of datagrams discarded on purpose (``seed``ed, RTP sequence numbers
    still advance so the loss is visible). :meth:`pause`/:meth:`resume`: an outage (encoding
    goes on, nothing is sent). ``frozen``/``black``/``silence``: spans of stream time, see
    :class:`SyntheticStream`. :meth:`restart` starts a new stream (timestamps from 0).
    Open the receiving side with :attr:`url`; the sender never needs a listener, but with
    ``wait_for_listener`` (seconds) stream time 0 waits until something binds the port (a
    client's ``av.open`` in another thread), so the client sees the stream from its first frame.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        rtp: bool = False,
        drop: float = 0.0,
        seed: int = DEFAULT_SEED,
        width: int = DEFAULT_WIDTH,
        height: int = DEFAULT_HEIGHT,
        fps: int = DEFAULT_FPS,
        gop: int = DEFAULT_GOP,
        crf: int = DEFAULT_CRF,
        audio: bool = False,
        frozen: Sequence[Span] = (),
        black: Sequence[Span] = (),
        silence: Sequence[Span] = (),
        wait_for_listener: float | None = None,
    ) -> None:
        stream = SyntheticStream(
            width=width,
            height=height,
            fps=fps,
            gop=gop,
            crf=crf,
            audio=audio,
            frozen=tuple(frozen),
            black=tuple(black),
            silence=tuple(silence),
            seed=seed,
        )
        super().__init__(stream, TS_PACKET * DATAGRAM_TS_PACKETS)
        if not 0.0 <= drop < 1.0:
            raise ValueError(f"drop must be in [0, 1), got {drop}")
        self.rtp = rtp
        self.port = port or free_udp_port(pair=rtp)
        self.drop = drop
        self.seed = seed
        self.wait_for_listener = wait_for_listener
        self.sent = 0
        self.dropped = 0
        self.withheld = 0  # datagrams not sent during pauses
        self._paused = threading.Event()
        self._sock: socket.socket | None = None
        self._rng = random.Random(seed)
        self._seq = 0
        self._ssrc = random.Random(seed + 1).getrandbits(32)

    @property
    def url(self) -> str:
        return f"{'rtp' if self.rtp else 'udp'}://{HOST}:{self.port}"

    def pause(self) -> None:
        """Start an outage: datagrams are encoded but not sent until :meth:`resume`."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def start(self) -> UdpTsSender:
        if not self.running:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._rng = random.Random(self.seed)
            self._seq = 0
            self.sent = self.dropped = self.withheld = 0
        super().start()
        return self

    def _on_stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _before_first_frame(self) -> bool:
        if self.wait_for_listener is None:
            return True
        deadline = time.monotonic() + self.wait_for_listener
        while not udp_port_bound(self.port):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing bound UDP port {self.port} within {self.wait_for_listener} s"
                )
            if self._stopping.wait(0.01):
                return False
        return True

    def _on_chunk(self, chunk: bytes) -> None:
        if self.rtp:
            stamp = int(self._current_time * 90000) & 0xFFFFFFFF
            header = struct.pack("!BBHII", 0x80, RTP_PAYLOAD_MP2T, self._seq, stamp, self._ssrc)
            self._seq = (self._seq + 1) & 0xFFFF
            chunk = header + chunk
        if self._paused.is_set():
            self.withheld += 1
            return
        if self.drop and self._rng.random() < self.drop:
            self.dropped += 1
            return
        with contextlib.suppress(OSError):  # nobody listening yet: that is fine for UDP
            self._sock.sendto(chunk, (HOST, self.port))
        self.sent += 1


class HttpTsServer(_PacedTsThread):
    """Live MPEG-TS over HTTP at ``http://127.0.0.1:PORT/live.ts``: one endless chunked
    response per client, all clients fed from one real-time encoder (``stream_options``: see
    :class:`SyntheticStream`). :meth:`stop` ends every response (clients see EOF) and closes
    the port; :meth:`restart` starts a new stream.
    """

    PATH = "/live.ts"

    def __init__(self, *, port: int | None = None, **stream_options: Any) -> None:
        super().__init__(SyntheticStream(**stream_options), TS_PACKET * DATAGRAM_TS_PACKETS)
        self.port = port or free_tcp_port()
        self.requests: list[str] = []
        self._clients: set[queue.Queue] = set()
        self._lock = threading.Lock()
        self._http: _HttpThread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.PATH}"

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def _on_chunk(self, chunk: bytes) -> None:
        with self._lock:
            for q in self._clients:
                with contextlib.suppress(queue.Full):  # a stalled client loses data, like a CDN
                    q.put_nowait(chunk)

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        self.requests.append(handler.path)
        if handler.path.split("?", 1)[0] != self.PATH:
            handler.send_error(404)
            return
        q: queue.Queue = queue.Queue(maxsize=2000)
        with self._lock:
            self._clients.add(q)
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "video/mp2t")
            # Chunked, so the end of the stream is explicit: FFmpeg reads an unchunked
            # response of unknown length that closes as "Stream ends prematurely" (EIO).
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            while True:
                chunk = q.get()
                if chunk is None:
                    handler.wfile.write(b"0\r\n\r\n")
                    break
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the client went away
        finally:
            with self._lock:
                self._clients.discard(q)
            handler.close_connection = True

    def start(self) -> HttpTsServer:
        if self.running:
            return self
        self._http = _HttpThread(self.port, get=self._serve)
        super().start()
        return self

    def _on_stop(self) -> None:
        with self._lock:
            for q in self._clients:
                q.put(None)
        # Let the handlers end their responses cleanly (clients see EOF, not a reset).
        deadline = time.monotonic() + 1.0
        while self.clients and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._http is not None:
            self._http.close()
            self._http = None


# --------------------------------------------------------------------------- RTMP

RTMP_HANDSHAKE = 1536
RTMP_OUT_CHUNK = 4096
RTMP_WINDOW = 2_500_000
_RTMP_CSID = {8: 4, 9: 6, 18: 5}  # chunk streams for audio, video, data messages


def _amf(value: Any) -> bytes:
    """One AMF0 value (number, boolean, string, null, object)."""
    if isinstance(value, bool):
        return b"\x01" + bytes([value])
    if isinstance(value, int | float):
        return b"\x00" + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        return b"\x02" + struct.pack(">H", len(raw)) + raw
    if value is None:
        return b"\x05"
    if isinstance(value, dict):
        body = b"".join(
            struct.pack(">H", len(k.encode())) + k.encode() + _amf(v) for k, v in value.items()
        )
        return b"\x03" + body + b"\x00\x00\x09"
    raise TypeError(f"no AMF0 encoding for {value!r}")


def _amf_command(payload: bytes) -> tuple[str, float, str | None]:
    """(name, transaction id, first string argument) of an AMF0 command message."""

    def string_at(pos: int) -> tuple[str, int] | None:
        if pos < len(payload) and payload[pos] == 2:
            n = struct.unpack(">H", payload[pos + 1 : pos + 3])[0]
            return payload[pos + 3 : pos + 3 + n].decode(errors="replace"), pos + 3 + n
        return None

    name, pos = string_at(0) or ("", 0)
    txn = 0.0
    if pos < len(payload) and payload[pos] == 0:
        txn = struct.unpack(">d", payload[pos + 1 : pos + 9])[0]
        pos += 9
    if pos < len(payload) and payload[pos] == 5:  # the null command object
        pos += 1
    arg = string_at(pos)
    return name, txn, arg[0] if arg else None


class _RtmpConnection:
    """RTMP chunk-stream framing over one client socket (server side)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.in_chunk = 128  # RTMP's initial chunk size, both ways
        self.out_chunk = 128
        self._headers: dict[int, dict[str, int]] = {}
        self._partial: dict[int, bytearray] = {}

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the client closed the connection")
            buf += chunk
        return bytes(buf)

    def handshake(self) -> None:
        c0c1 = self.recv_exact(1 + RTMP_HANDSHAKE)
        if c0c1[0] != 3:
            raise ConnectionError(f"not an RTMP client (version byte {c0c1[0]})")
        # A zero version in S1 asks for the plain handshake (no digests); S2 echoes C1.
        s1 = bytes(8) + os.urandom(RTMP_HANDSHAKE - 8)
        self.sock.sendall(b"\x03" + s1 + c0c1[1:])
        self.recv_exact(RTMP_HANDSHAKE)  # C2

    def read_message(self) -> tuple[int, int, bytes]:
        """(message type, message stream id, payload) of the next whole message."""
        while True:
            first = self.recv_exact(1)[0]
            fmt, csid = first >> 6, first & 0x3F
            if csid == 0:
                csid = 64 + self.recv_exact(1)[0]
            elif csid == 1:
                low, high = self.recv_exact(2)
                csid = 64 + low + 256 * high
            head = self._headers.setdefault(
                csid, {"ts": 0, "delta": 0, "len": 0, "type": 0, "sid": 0}
            )
            buf = self._partial.setdefault(csid, bytearray())
            stamp = int.from_bytes(self.recv_exact(3), "big") if fmt <= 2 else 0
            if fmt <= 1:
                head["len"] = int.from_bytes(self.recv_exact(3), "big")
                head["type"] = self.recv_exact(1)[0]
            if fmt == 0:
                head["sid"] = struct.unpack("<I", self.recv_exact(4))[0]
            if fmt <= 2 and stamp == 0xFFFFFF:
                stamp = struct.unpack(">I", self.recv_exact(4))[0]
            if fmt == 0:
                head["ts"], head["delta"] = stamp, 0
            elif fmt <= 2:
                head["ts"] += stamp
                head["delta"] = stamp
            elif not buf:  # type 3 opening a message repeats the previous delta
                head["ts"] += head["delta"]
            buf += self.recv_exact(min(self.in_chunk, head["len"] - len(buf)))
            if len(buf) < head["len"]:
                continue
            payload = bytes(buf)
            buf.clear()
            if head["type"] == 1:  # Set Chunk Size
                self.in_chunk = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
                continue
            return head["type"], head["sid"], payload

    def send(self, csid: int, mtype: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        """One message, as a type-0 chunk followed by type-3 continuation chunks."""
        extended = timestamp >= 0xFFFFFF
        out = bytearray([csid])
        out += (0xFFFFFF if extended else timestamp).to_bytes(3, "big")
        out += len(payload).to_bytes(3, "big") + bytes([mtype]) + struct.pack("<I", stream_id)
        ext = struct.pack(">I", timestamp & 0xFFFFFFFF) if extended else b""
        out += ext
        for pos in range(0, max(len(payload), 1), self.out_chunk):
            if pos:
                out += bytes([0xC0 | csid]) + ext
            out += payload[pos : pos + self.out_chunk]
        self.sock.sendall(out)

    def command(self, csid: int, stream_id: int, *values: Any) -> None:
        self.send(csid, 20, stream_id, 0, b"".join(_amf(v) for v in values))


def _pop_flv_tags(buf: bytearray) -> list[tuple[int, int, bytes]]:
    """Complete FLV tags (type, timestamp in ms, body) taken from the front of ``buf``."""
    tags = []
    while len(buf) >= 11:
        size = int.from_bytes(buf[1:4], "big")
        if len(buf) < 11 + size + 4:
            break
        stamp = int.from_bytes(buf[4:7], "big") | (buf[7] << 24)
        tags.append((buf[0], stamp, bytes(buf[11 : 11 + size])))
        del buf[: 11 + size + 4]  # tag header, body, PreviousTagSize
    return tags


class RtmpServer(_Lifecycle):
    """An RTMP server at ``rtmp://127.0.0.1:PORT/APP/NAME`` (see :attr:`url`).

    Every client that plays ``name`` gets its own live encode of a :class:`SyntheticStream`
    (``stream_options``; H.264 + AAC in FLV tags, frame ``i`` at ``i / fps`` from the moment it
    plays), paced in real time. Other names are refused with NetStream.Play.StreamNotFound.
    Audio is on by default: with both tracks announced FFmpeg's FLV reader stops probing at
    once (video alone makes ``av.open`` wait out its 5 s analysis). :meth:`stop` closes every
    connection (clients see the stream end); :meth:`restart` listens again on the same port.
    ``plays`` records the names clients asked for.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        app: str = "live",
        name: str = "test",
        **stream_options: Any,
    ) -> None:
        stream_options.setdefault("audio", True)
        self.stream = SyntheticStream(**stream_options)
        self.port = port or free_tcp_port()
        self.app = app
        self.name = name
        self.plays: list[str] = []
        self.errors: list[BaseException] = []
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"rtmp://{HOST}:{self.port}/{self.app}/{self.name}"

    @property
    def running(self) -> bool:
        return self._listener is not None

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # the listener was closed by stop()
            thread = threading.Thread(
                target=self._serve, args=(sock,), name="RtmpServer-client", daemon=True
            )
            with self._lock:
                self._clients.add(sock)
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        encoder = None
        try:
            sock.settimeout(STOP_TIMEOUT)
            conn = _RtmpConnection(sock)
            conn.handshake()
            if not self._negotiate(conn):
                return
            pending = bytearray()
            encoder = StreamEncoder(self.stream, pending.extend, format="flv")
            skipped_header = False
            t0 = time.monotonic()
            index = 0
            while not self._stopping.is_set():
                delay = t0 + index / self.stream.fps - time.monotonic()
                if delay > 0 and self._stopping.wait(delay):
                    break
                encoder.encode(index)
                index += 1
                if not skipped_header and len(pending) >= 13:
                    del pending[:13]  # FLV file header + PreviousTagSize0: not part of RTMP
                    skipped_header = True
                if skipped_header:
                    for tag_type, stamp, body in _pop_flv_tags(pending):
                        conn.send(_RTMP_CSID[tag_type], tag_type, 1, stamp, body)
        except OSError:
            pass  # the client left, or stop() shut the socket
        except BaseException as exc:  # kept for the test to see, never lost
            self.errors.append(exc)
        finally:
            if encoder is not None:
                with contextlib.suppress(Exception):
                    encoder.close(flush=False)
            with self._lock:
                self._clients.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _negotiate(self, conn: _RtmpConnection) -> bool:
        """Answer connect/createStream/play; True once the client plays our stream."""
        while not self._stopping.is_set():
            mtype, _stream_id, payload = conn.read_message()
            if mtype == 17:  # AMF3 command: a format byte, then AMF0
                payload = payload[1:]
            elif mtype != 20:
                continue  # acknowledgements, window sizes, buffer length: nothing to do
            name, txn, arg = _amf_command(payload)
            if name == "connect":
                conn.send(2, 5, 0, 0, struct.pack(">I", RTMP_WINDOW))  # Window Ack Size
                conn.send(2, 6, 0, 0, struct.pack(">IB", RTMP_WINDOW, 2))  # Peer Bandwidth
                conn.send(2, 1, 0, 0, struct.pack(">I", RTMP_OUT_CHUNK))  # Set Chunk Size
                conn.out_chunk = RTMP_OUT_CHUNK
                conn.command(
                    3,
                    0,
                    "_result",
                    txn,
                    {"fmsVer": "FMS/3,0,1,123", "capabilities": 31},
                    {
                        "level": "status",
                        "code": "NetConnection.Connect.Success",
                        "description": "Connection succeeded.",
                        "objectEncoding": 0,
                    },
                )
            elif name == "createStream":
                conn.command(3, 0, "_result", txn, None, 1)
            elif name == "play":
                self.plays.append(arg or "")
                if arg != self.name:
                    conn.command(
                        5,
                        1,
                        "onStatus",
                        0,
                        None,
                        {
                            "level": "error",
                            "code": "NetStream.Play.StreamNotFound",
                            "description": f"no stream named {arg!r}",
                        },
                    )
                    return False
                conn.send(2, 4, 0, 0, struct.pack(">HI", 0, 1))  # User Control: StreamBegin 1
                conn.command(
                    5,
                    1,
                    "onStatus",
                    0,
                    None,
                    {"level": "status", "code": "NetStream.Play.Start", "description": "Playing."},
                )
                return True
        return False

    def start(self) -> RtmpServer:
        if self._listener is not None:
            return self
        self._stopping.clear()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            try:
                listener.bind((HOST, self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    listener.close()
                    raise
                time.sleep(0.05)
        listener.listen()
        self._listener = listener
        thread = threading.Thread(
            target=self._accept, args=(listener,), name="RtmpServer", daemon=True
        )
        self._threads = [thread]
        thread.start()
        _LIVE.add(self)
        return self

    def stop(self) -> None:
        """Close the port and every connection; raises what a client thread raised."""
        self._stopping.set()
        if self._listener is not None:
            # shutdown() wakes the accept() blocked in the other thread; close() alone may not.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._clients:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(STOP_TIMEOUT)
        self._threads = []
        _LIVE.discard(self)
        if self.errors:
            error = self.errors.pop(0)
            self.errors.clear()
            raise RuntimeError(f"RtmpServer failed: {error!r}") from error


# --------------------------------------------------------------------------- HTTP plumbing


class _HttpThread:
    """A ThreadingHTTPServer on 127.0.0.1:port whose GET/POST go to the given callables.

    ``close()`` also shuts the open connections down, so no handler thread lingers."""

    def __init__(
        self,
        port: int,
        *,
        get: Callable[[http.server.BaseHTTPRequestHandler], None] | None = None,
        post: Callable[[http.server.BaseHTTPRequestHandler], None] | None = None,
    ) -> None:
        connections: set[socket.socket] = set()
        self._connections = connections

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                connections.add(self.connection)

            def finish(self) -> None:
                with contextlib.suppress(OSError):
                    super().finish()
                connections.discard(self.connection)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if get is None:
                    self.send_error(405)
                else:
                    get(self)

            def do_POST(self) -> None:  # noqa: N802
                if post is None:
                    self.send_error(405)
                else:
                    post(self)

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True  # restart on the same port while old sockets linger
            daemon_threads = True
            block_on_close = False

        deadline = time.monotonic() + 5
        while True:
            try:
                self.server = Server((HOST, port), Handler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.thread.join(STOP_TIMEOUT)
        # Handler threads are daemons the server does not track: wait for them to finish.
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._connections and time.monotonic() < deadline:
            time.sleep(0.01)


def _reply(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Cache-Control", "no-cache")
    handler.end_headers()
    with contextlib.suppress(OSError):
        handler.wfile.write(body)


# --------------------------------------------------------------------------- live HLS


class HlsServer(_Lifecycle):
    """A live HLS origin at ``http://127.0.0.1:PORT/live.m3u8`` (see :attr:`url`).

    Segment ``n`` holds frames of stream time ``[n * segment_seconds, (n + 1) *
    segment_seconds)`` (MPEG-TS, H.264 starting with a keyframe, continuous timestamps) and
    is published once that time has passed on the wall clock; the playlist lists the latest
    ``window`` segments (EXT-X-MEDIA-SEQUENCE = the first one's number, no ENDLIST). At start
    the stream is back-dated by ``window`` segments so a client can begin at once.
    :meth:`pause` freezes the playlist (a stalled origin), :meth:`resume` catches up with the
    clock; :meth:`stop` closes the port; :meth:`restart` serves again where the clock now is.
    ``requests`` records every path asked for, ``segment_requests`` the segment numbers.
    """

    PLAYLIST = "/live.m3u8"

    def __init__(
        self,
        *,
        port: int | None = None,
        segment_seconds: float = 1.0,
        window: int = 6,
        **stream_options: Any,
    ) -> None:
        self.stream = SyntheticStream(**stream_options)
        frames = segment_seconds * self.stream.fps
        if abs(frames - round(frames)) > 1e-9 or frames < 1:
            raise ValueError("segment_seconds * fps must be a whole number of frames")
        self.frames_per_segment = int(round(frames))
        self.segment_seconds = segment_seconds
        self.window = window
        self.port = port or free_tcp_port()
        self.requests: list[str] = []
        self.segment_requests: list[int] = []
        self.playlists_served = 0
        self._segments: dict[int, bytes] = {}
        self._published = -1  # newest segment number in the playlist
        self._epoch: float | None = None  # wall time (monotonic) of stream time 0
        self._lock = threading.Lock()  # guards the segments and the playlist
        self._producing = threading.Lock()  # held while segments are made and published
        self._paused = False
        self._http: _HttpThread | None = None
        self._producer: threading.Thread | None = None
        self._stopping = threading.Event()
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.PLAYLIST}"

    @property
    def running(self) -> bool:
        return self._http is not None

    @property
    def media_sequence(self) -> int:
        """The EXT-X-MEDIA-SEQUENCE the playlist shows now."""
        with self._lock:
            return max(0, self._published - self.window + 1)

    def pause(self) -> None:
        """Stop publishing new segments (the playlist stays as it is from now on)."""
        with self._producing:  # wait out a segment being published right now
            self._paused = True

    def resume(self) -> None:
        self._paused = False

    def _due(self) -> int:
        """Newest segment whose time has fully passed."""
        elapsed = time.monotonic() - self._epoch
        return int(elapsed // self.segment_seconds) - 1

    def _produce_until(self, newest: int) -> None:
        first = max(0, newest - self.window + 1)
        for n in range(first, newest + 1):
            if n not in self._segments:
                data = encode_ts(self.stream, n * self.frames_per_segment, self.frames_per_segment)
                with self._lock:
                    self._segments[n] = data
        with self._lock:
            self._published = max(self._published, newest)
            # Keep a few retired segments: a client may still fetch one it saw listed.
            for n in [k for k in self._segments if k < first - self.window]:
                del self._segments[n]

    def _run(self) -> None:
        try:
            while not self._stopping.wait(0.02):
                with self._producing:
                    due = self._due()
                    if not self._paused and due > self._published:
                        self._produce_until(due)
        except BaseException as exc:
            self.error = exc

    def playlist(self) -> str:
        """The playlist as served now."""
        with self._lock:
            newest = self._published
            first = max(0, newest - self.window + 1)
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{int(np.ceil(self.segment_seconds))}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
        ]
        for n in range(first, newest + 1):
            lines += [f"#EXTINF:{self.segment_seconds:.3f},", f"seg{n}.ts"]
        return "\n".join(lines) + "\n"

    def _get(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        self.requests.append(path)
        if path == self.PLAYLIST:
            self.playlists_served += 1
            body = self.playlist().encode()
            _reply(handler, 200, body, "application/vnd.apple.mpegurl")
            return
        name = path.rsplit("/", 1)[-1]
        if name.startswith("seg") and name.endswith(".ts") and name[3:-3].isdigit():
            n = int(name[3:-3])
            self.segment_requests.append(n)
            with self._lock:
                data = self._segments.get(n)
            if data is not None:
                _reply(handler, 200, data, "video/mp2t")
                return
        handler.send_error(404)

    def start(self) -> HlsServer:
        if self.running:
            return self
        if self._epoch is None:
            # Back-date so the first `window` segments are due right now.
            self._epoch = time.monotonic() - self.window * self.segment_seconds
        self._produce_until(self._due())
        self._stopping.clear()
        self._producer = threading.Thread(target=self._run, name="HlsServer", daemon=True)
        self._producer.start()
        self._http = _HttpThread(self.port, get=self._get)
        _LIVE.add(self)
        return self

    def stop(self) -> None:
        """Close the port and stop producing; raises what the producer raised, if anything."""
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._producer is not None:
            self._stopping.set()
            self._producer.join(STOP_TIMEOUT)
            self._producer = None
        _LIVE.discard(self)
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(f"HlsServer failed: {error!r}") from error


# --------------------------------------------------------------------------- webhooks


@dataclass
class ReceivedRequest:
    """One request the webhook receiver saw, and the status it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    time: float  # time.monotonic() on arrival

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver(_Lifecycle):
    """Records POSTs to ``http://127.0.0.1:PORT/hook`` (any path is accepted).

    The first ``fail_first`` requests get ``fail_status`` (500); later ones get 200 with
    ``{"ok": true}``. ``delay`` seconds are waited before answering (a slow endpoint).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        fail_first: int = 0,
        fail_status: int = 500,
        delay: float = 0.0,
    ) -> None:
        self.port = port or free_tcp_port()
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.delay = delay
        self.requests: list[ReceivedRequest] = []
        self._cond = threading.Condition()
        self._http: _HttpThread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook"

    @property
    def bodies(self) -> list[Any]:
        """JSON bodies of the requests answered with 200, in arrival order."""
        with self._cond:
            return [r.json for r in self.requests if r.status == 200]

    def _post(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if self.delay:
            time.sleep(self.delay)
        with self._cond:
            failing = len(self.requests) < self.fail_first
            status = self.fail_status if failing else 200
            self.requests.append(
                ReceivedRequest(
                    handler.path, dict(handler.headers.items()), body, status, time.monotonic()
                )
            )
            self._cond.notify_all()
        payload = {"ok": False, "error": "failing on purpose"} if failing else {"ok": True}
        _reply(handler, status, json.dumps(payload).encode(), "application/json")

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Wait until ``count`` requests arrived (any status); returns them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"{len(self.requests)} of {count} webhook requests arrived")
            return list(self.requests)

    def start(self) -> WebhookReceiver:
        if self._http is None:
            self._http = _HttpThread(self.port, post=self._post)
            _LIVE.add(self)
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        _LIVE.discard(self)
