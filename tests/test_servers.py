"""The local live-stream servers (tests/servers.py) work with plain PyAV clients.

Each test starts real servers on 127.0.0.1 and reads them as a monitor would; the synthetic
stream's own picture function is the oracle for what a client must decode.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
from servers import (
    HlsServer,
    HttpTsServer,
    RtmpServer,
    RtspServer,
    SrtRelay,
    SrtServer,
    SyntheticStream,
    UdpTsSender,
    WebhookReceiver,
    encode_ts,
    ffmpeg_with_srt,
    gstreamer_available,
    gstreamer_missing,
    rtsp_describe,
)

needs_gstreamer = pytest.mark.skipif(
    not gstreamer_available(),
    reason=f"GStreamer servers unavailable: {gstreamer_missing()}",
)

OPEN_TIMEOUT = 10.0  # seconds for av.open and for each blocking read
# How a client may see a server go away: EOF, EIO, or a reset when unread data was pending.
STREAM_ENDS = ("eof", "OSError", "ConnectionResetError", "EOFError")
MIN_PSNR_DB = 30.0  # crf 23 at 320x180 measures about 40 dB; a wrong picture is below 15


def luma(frame: av.VideoFrame) -> np.ndarray:
    """The decoded Y plane as floats."""
    return frame.to_ndarray(format="yuv420p")[: frame.height].astype(np.float64)


def expected_luma(stream: SyntheticStream, index: int) -> np.ndarray:
    """The Y plane the sender encoded for frame ``index`` (same conversion as the encoder)."""
    rgb = av.VideoFrame.from_ndarray(stream.picture(index), format="rgb24")
    return luma(rgb.reformat(format="yuv420p"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def index_of(frame: av.VideoFrame, fps: int) -> int:
    """Frame number from the timestamp: the PyAV senders stamp frame i at i / fps."""
    return round(frame.time * fps)


def decode_until(container, done, timeout: float = 15.0) -> list[av.VideoFrame]:
    """Decode video frames until ``done(frames)`` is true; fail after ``timeout`` seconds."""
    frames: list[av.VideoFrame] = []
    deadline = time.monotonic() + timeout
    for frame in container.decode(video=0):
        frames.append(frame)
        if done(frames):
            return frames
        assert time.monotonic() < deadline, f"only {len(frames)} frames in {timeout} s"
    raise AssertionError(f"stream ended after {len(frames)} frames")


def drain_until_end(container, timeout: float = 15.0) -> tuple[int, str]:
    """Read on until the stream ends; (frames read, how it ended: "eof" or the error)."""
    n = 0
    deadline = time.monotonic() + timeout
    try:
        for _ in container.decode(video=0):
            n += 1
            assert time.monotonic() < deadline, "the stream did not end"
    except av.FFmpegError as exc:
        return n, type(exc).__name__
    return n, "eof"


def open_rtsp(url: str):
    return av.open(url, options={"rtsp_transport": "tcp"}, timeout=OPEN_TIMEOUT)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (exited, not yet reaped) still answers kill(0): ask /proc.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- RTSP


@needs_gstreamer
def test_rtsp_serves_live_h264_and_aac():
    with RtspServer(audio=True) as server:
        sdp = rtsp_describe(server.url)
        assert "H264/90000" in sdp and "MPEG4-GENERIC/48000" in sdp.upper()
        with open_rtsp(server.url) as client:
            kinds = sorted((s.type, s.codec_context.name) for s in client.streams)
            assert kinds == [("audio", "aac"), ("video", "h264")]
            frames = decode_until(client, lambda f: len(f) >= 12)
    assert {(f.width, f.height) for f in frames} == {(320, 180)}
    diffs = [np.abs(luma(a) - luma(b)).mean() for a, b in zip(frames[1:], frames[2:], strict=False)]
    assert min(diffs) > 1.0  # the pattern scrolls: every frame differs from the last


@needs_gstreamer
def test_rtsp_restart_keeps_the_port_and_ends_open_connections():
    with RtspServer() as server:
        port, pids = server.port, [server.pid]
        old = open_rtsp(server.url)
        decode_until(old, lambda f: len(f) >= 5)
        server.restart()
        pids.append(server.pid)
        _, ended = drain_until_end(old)  # the old connection ends instead of hanging
        old.close()
        assert ended in STREAM_ENDS
        for _ in range(3):  # what a reconnect test does
            server.restart()
            pids.append(server.pid)
        assert server.port == port and server.starts == 5
        assert len(set(pids)) == 5 and all(process_gone(p) for p in pids[:-1])
        with open_rtsp(server.url) as client:
            assert len(decode_until(client, lambda f: len(f) >= 10)) == 10


@needs_gstreamer
def test_rtsp_loops_a_file(tmp_path: Path):
    stream = SyntheticStream()
    n = 20
    path = tmp_path / "loop.ts"
    path.write_bytes(encode_ts(stream, 0, n))
    with av.open(str(path)) as src:
        originals = {luma(f).tobytes(): i for i, f in enumerate(src.decode(video=0))}
    assert len(originals) == n
    with RtspServer(file=path) as server, open_rtsp(server.url) as client:
        frames = decode_until(client, lambda f: len(f) >= n + 10)
    # The payload is the file's H.264 as is: every picture is one of the file's, in order,
    # starting over after the last one.
    order = [originals.get(luma(f).tobytes()) for f in frames]
    assert None not in order
    assert order[0] == 0 and all(b == (a + 1) % n for a, b in zip(order, order[1:], strict=False))


# --------------------------------------------------------------------------- UDP / RTP


def test_udp_carries_the_picture_with_black_and_frozen_spans():
    black, frozen = (0.8, 0.6), (1.6, 0.6)
    with UdpTsSender(black=[black], frozen=[frozen], wait_for_listener=OPEN_TIMEOUT) as sender:
        stream = sender.stream
        with av.open(sender.url, timeout=OPEN_TIMEOUT) as client:
            frames, corrupt = [], 0
            for packet in client.demux(video=0):
                corrupt += packet.is_corrupt
                frames += packet.decode()
                if frames and index_of(frames[-1], stream.fps) >= 60:
                    break
    assert sender.dropped == 0 and corrupt == 0
    indices = [index_of(f, stream.fps) for f in frames]
    assert indices == list(range(indices[-1] + 1))  # from the first frame, none lost
    kinds = {stream.kind(i) for i in indices}
    assert kinds == {"moving", "black", "frozen"}
    for i, frame in zip(indices, frames, strict=True):
        y = luma(frame)
        assert psnr(y, expected_luma(stream, i)) > MIN_PSNR_DB, i
        if stream.kind(i) == "black":
            assert 15.0 <= y.mean() <= 17.5
    step = {
        kind: [
            np.abs(luma(a) - luma(b)).mean()
            for i, a, b in zip(indices[1:], frames, frames[1:], strict=False)
            if stream.kind(i) == kind == stream.kind(i - 1)
        ]
        for kind in ("moving", "frozen", "black")
    }
    # A repeated picture still changes a little while x264 refines it; motion is far above.
    assert min(step["moving"]) > 5.0
    assert max(step["frozen"]) < 1.5 and max(step["black"]) < 0.3


def test_udp_drops_show_up_as_corrupt_packets():
    with (
        UdpTsSender(drop=0.05, seed=7, wait_for_listener=OPEN_TIMEOUT) as sender,
        av.open(sender.url, timeout=OPEN_TIMEOUT) as client,
    ):
        decoded, corrupt = 0, 0
        deadline = time.monotonic() + 15
        for packet in client.demux(video=0):
            corrupt += packet.is_corrupt
            decoded += len(packet.decode())
            if packet.pts is not None and packet.pts * packet.time_base >= 2.0:
                break
            assert time.monotonic() < deadline
    total = sender.sent + sender.dropped
    assert 0.02 < sender.dropped / total < 0.10
    assert corrupt > 0  # the demuxer sees the continuity-counter gaps
    assert decoded >= 25  # and the stream still decodes


def test_udp_pause_is_an_outage_and_restart_a_new_stream():
    with UdpTsSender(wait_for_listener=OPEN_TIMEOUT) as sender:
        fps = sender.stream.fps
        with av.open(sender.url, timeout=OPEN_TIMEOUT) as client:
            decode_until(client, lambda f: len(f) >= 5)
            sender.pause()
            paused_at = sender.frames_encoded
            time.sleep(1.0)
            resumed_at = sender.frames_encoded
            sender.resume()
            frames = decode_until(client, lambda f: index_of(f[-1], fps) >= resumed_at + 5)
            assert sender.withheld > 0 and resumed_at - paused_at >= 0.9 * fps
            indices = [index_of(f, fps) for f in frames]
            # Nothing from the outage arrives (give or take a frame at each end: the sender
            # packs frames into datagrams and the clock is read around pause/resume).
            assert not [i for i in indices if paused_at + 2 < i < resumed_at - 2]
            first_after = min(i for i in indices if i > paused_at + 2)
            assert resumed_at - 2 <= first_after <= resumed_at + fps + 2
            last = indices[-1]
            sender.restart()  # timestamps start again from 0
            again = decode_until(client, lambda f: index_of(f[-1], fps) < last - 5)
            assert index_of(again[-1], fps) < 10


def test_rtp_carries_mpegts():
    with UdpTsSender(rtp=True, wait_for_listener=OPEN_TIMEOUT) as sender:
        assert sender.url.startswith("rtp://")
        with av.open(sender.url, timeout=OPEN_TIMEOUT) as client:
            assert client.format.name == "rtp"
            frames = decode_until(client, lambda f: len(f) >= 20)
    for frame in frames[::5]:
        i = index_of(frame, sender.stream.fps)
        assert psnr(luma(frame), expected_luma(sender.stream, i)) > MIN_PSNR_DB


# --------------------------------------------------------------------------- HTTP, HLS


def test_http_ts_is_live_and_ends_cleanly_on_stop():
    with HttpTsServer() as server, av.open(server.url, timeout=OPEN_TIMEOUT) as client:
        frames = decode_until(client, lambda f: len(f) >= 15)
        assert server.clients == 1
        server.stop()
        _, ended = drain_until_end(client)
    assert ended == "eof"
    for frame in frames[::5]:
        i = index_of(frame, server.stream.fps)
        assert psnr(luma(frame), expected_luma(server.stream, i)) > MIN_PSNR_DB


def test_hls_plays_live_as_the_window_slides():
    with HlsServer(window=6) as server:
        first_newest = server.media_sequence + server.window - 1
        stream = server.stream
        with av.open(server.url, timeout=OPEN_TIMEOUT) as client:
            frames = decode_until(client, lambda f: f[-1].time - f[0].time > 3.2)
        assert server.media_sequence > 0  # the window moved on while we watched
    indices = [index_of(f, stream.fps) for f in frames]
    assert indices == list(range(indices[0], indices[-1] + 1))  # no gap, no repeat
    assert max(server.segment_requests) > first_newest  # fetched segments published later
    for i, frame in list(zip(indices, frames, strict=True))[::10]:
        assert psnr(luma(frame), expected_luma(stream, i)) > MIN_PSNR_DB


def _playlist(url: str) -> tuple[int, list[str]]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    assert text.startswith("#EXTM3U") and "#EXT-X-ENDLIST" not in text
    sequence = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
    return sequence, re.findall(r"^seg\d+\.ts$", text, re.M)


def test_hls_playlist_slides_pauses_stops_and_restarts():
    with HlsServer(segment_seconds=0.4, window=4, fps=25) as server:
        seq0, names = _playlist(server.url)
        assert names == [f"seg{seq0 + k}.ts" for k in range(4)]
        time.sleep(0.9)
        seq1, _ = _playlist(server.url)
        assert seq1 >= seq0 + 2
        server.pause()
        seq2, _ = _playlist(server.url)
        time.sleep(0.9)
        assert _playlist(server.url)[0] == seq2  # stalled origin
        server.resume()
        server.stop()
        with pytest.raises(urllib.error.URLError):
            _playlist(server.url)
        time.sleep(0.5)
        server.restart()
        seq3, names = _playlist(server.url)
        assert seq3 >= seq2 + 3 and len(names) == 4  # caught up with the clock


# --------------------------------------------------------------------------- RTMP


def test_rtmp_plays_live_and_refuses_unknown_names():
    with RtmpServer(black=[(0.4, 0.2)]) as server:
        stream = server.stream
        with av.open(server.url, timeout=OPEN_TIMEOUT) as client:
            kinds = sorted((s.type, s.codec_context.name) for s in client.streams)
            assert kinds == [("audio", "aac"), ("video", "h264")]
            frames = decode_until(client, lambda f: len(f) >= 25)
            assert server.clients == 1
            server.stop()
            _, ended = drain_until_end(client)
        assert ended in STREAM_ENDS
        server.start()
        with pytest.raises(PermissionError):  # FFmpeg's mapping of NetStream.Play.StreamNotFound
            av.open(server.url.replace("/test", "/other"), timeout=OPEN_TIMEOUT)
    assert server.plays == ["test", "other"]
    indices = [index_of(f, stream.fps) for f in frames]
    assert indices == list(range(25))  # each client gets the stream from its first frame
    for i, frame in zip(indices, frames, strict=True):
        assert psnr(luma(frame), expected_luma(stream, i)) > MIN_PSNR_DB, i
    assert {stream.kind(i) for i in indices} == {"moving", "black"}


# --------------------------------------------------------------------------- webhooks


def test_webhook_records_bodies_and_fails_first_requests():
    with WebhookReceiver(fail_first=2) as hook:
        statuses = []
        for n in range(3):
            request = urllib.request.Request(
                hook.url,
                data=json.dumps({"event": "freeze", "n": n}).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    statuses.append(reply.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
        received = hook.wait_for(3, timeout=5)
    assert statuses == [500, 500, 200]
    assert [r.status for r in received] == statuses
    assert [r.json["n"] for r in received] == [0, 1, 2]
    assert hook.bodies == [{"event": "freeze", "n": 2}]
    assert received[0].headers["Content-Type"] == "application/json"


# --------------------------------------------------------------------------- SRT


def _read_srt(server: SrtServer, relay: SrtRelay) -> tuple[list, str]:
    with relay, av.open(relay.stdout, format="mpegts", timeout=OPEN_TIMEOUT) as client:
        assert sorted(s.type for s in client.streams) == ["audio", "video"]
        frames = decode_until(client, lambda f: len(f) >= 10)
        server.stop()
        return frames, drain_until_end(client)[1]


@needs_gstreamer
def test_srt_listener_through_the_gstreamer_relay():
    with SrtServer(audio=True) as server:
        frames, ended = _read_srt(server, SrtRelay(server.url))
    assert {(f.width, f.height) for f in frames} == {(320, 180)}
    assert ended == "eof"


@needs_gstreamer
@pytest.mark.skipif(ffmpeg_with_srt() is None, reason="no FFmpeg binary with SRT here")
def test_srt_listener_through_an_ffmpeg_relay():
    with SrtServer(audio=True) as server:
        frames, ended = _read_srt(server, SrtRelay(server.url, ffmpeg=ffmpeg_with_srt()))
    assert len(frames) == 10 and ended == "eof"


# --------------------------------------------------------------------------- cleanup


def _our_threads() -> set[str]:
    names = ("UdpTsSender", "HttpTsServer", "HlsServer", "RtmpServer")
    return {t.name for t in threading.enumerate() if t.name.startswith(names)}


@needs_gstreamer
def test_everything_is_gone_after_a_failing_test():
    before = {t.ident for t in threading.enumerate()}
    with (
        pytest.raises(RuntimeError, match="the test failed"),
        RtspServer() as rtsp,
        SrtServer() as srt,
        UdpTsSender() as udp,
        HttpTsServer() as http_ts,
        HlsServer() as hls,
        RtmpServer() as rtmp,
        WebhookReceiver() as hook,
    ):
        pids = [rtsp.pid, srt.pid]
        assert udp.running and http_ts.running and hls.running and rtmp.running
        tcp_ports = [rtsp.port, http_ts.port, hls.port, rtmp.port, hook.port]
        raise RuntimeError("the test failed")
    assert all(wait_gone(pid) for pid in pids)
    assert not _our_threads()
    assert {t.ident for t in threading.enumerate()} <= before
    for port in tcp_ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


@needs_gstreamer
def test_server_process_dies_with_the_test_process():
    code = (
        "import time, servers; s = servers.RtspServer().start(); "
        "print(s.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parent,
        text=True,
    )
    try:
        pid = int(parent.stdout.readline())
        assert not process_gone(pid)
        parent.kill()  # SIGKILL: no cleanup code runs in the parent
        parent.wait(5)
        assert wait_gone(pid)
    finally:
        parent.kill()
        parent.wait(5)
        parent.stdout.close()
