"""Sources opened once: network bytes fetched once, gaps counted, untrusted headers, pipes
that stall, pictures too large to decode."""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from pathlib import Path

import av
import media
import numpy as np
import pytest
from net import RangeServer

from topiq_video.errors import InvalidInputError
from topiq_video.pipeline.collect import score_video
from topiq_video.video.probe import probe
from topiq_video.video.reader import open_video


def _faststart_mp4(path: Path, **kwargs) -> Path:
    """An MP4 with its index first (as served for progressive download)."""
    return media.make_clip(path, container_options={"movflags": "faststart"}, **kwargs)


def test_http_inputs_are_fetched_once_per_run(tmp_path):
    """Probe, offset search and scoring share one open: each file is served once."""
    ref = _faststart_mp4(tmp_path / "ref.mp4", n_frames=60, width=96, height=64)
    dist = _faststart_mp4(
        tmp_path / "dist.mp4", n_frames=60, width=96, height=64, crf=35, time_offset=0.2
    )
    files = {"/ref.mp4": ref.read_bytes(), "/dist.mp4": dist.read_bytes()}
    with RangeServer(files=files) as server:
        result = score_video(
            server.url("/dist.mp4"), server.url("/ref.mp4"), metrics="psnr_y", gallery=2
        )
    assert result.report.alignment.offset_frames == 5
    assert len(result.report.gallery) == 2
    for path, data in files.items():
        assert server.bytes_sent[path] <= 1.05 * len(data), (path, server.bytes_sent, len(data))
        assert server.requests.count(path) <= 2


def _gappy_clip(path: Path, missing: range, n_frames: int = 150, fps: int = 30) -> Path:
    pictures = media.clip_frames_rgb(n_frames, 96, 64, fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i, rgb in enumerate(pictures):
            if i in missing:
                continue
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize("ext", ["mkv", "mp4", "ts"])
def test_frames_missing_mid_stream_keep_the_clock_and_are_counted(tmp_path, ext):
    """Frames 117-119 dropped from a 30 fps stream: frame numbers still follow the clock
    (frame 120 is shown at 4.0 s and numbered 120), and the gap is reported."""
    path = _gappy_clip(tmp_path / f"gap.{ext}", range(117, 120))
    with open_video(path) as source:
        frames = list(source)
        stats = source.stats
    assert len(frames) == 147
    assert all(f.index == round(f.time * 30) for f in frames)
    assert [f.index for f in frames if 115 <= f.index <= 121] == [115, 116, 120, 121]
    assert stats.lost_frames == 3
    assert stats.gaps == [(117, pytest.approx(3.9, abs=1e-3), 3)]


def test_gaps_become_a_warning_in_the_result(tmp_path):
    dist = _gappy_clip(tmp_path / "dist.mkv", range(60, 64), n_frames=100)
    ref = _gappy_clip(tmp_path / "ref.mkv", range(0), n_frames=100)
    result = score_video(dist, ref, metrics="psnr_y", offset=0)
    assert result.report.inputs["dist"].decode.lost_frames == 4
    assert any("skips frames" in w and "4 frame" in w for w in result.warnings)
    # The reference frames at the missing instants were shown by no distorted frame.
    assert result.report.alignment.pairing.ref_skipped == 4
    assert list(result.frames["ref_frame"]) == list(result.frames["frame"])


def _patch_bytes(path: Path, placeholder: bytes, replacement: bytes) -> Path:
    data = path.read_bytes()
    assert data.count(placeholder) == 1 and len(placeholder) == len(replacement)
    path.write_bytes(data.replace(placeholder, replacement))
    return path


@pytest.mark.parametrize("role", ["dist", "ref"])
def test_metadata_that_is_not_utf8_is_read_with_replacement(tmp_path, role):
    clip = media.make_clip(
        tmp_path / "latin.mkv", n_frames=8, width=64, height=48, metadata={"title": "Caf_XX"}
    )
    _patch_bytes(clip, b"Caf_XX", b"Caf\xe9\xff!")  # Latin-1 bytes from an old muxer
    info = probe(clip)
    assert info.metadata["title"] == "Caf\ufffd\ufffd!"
    other = media.make_clip(tmp_path / "other.mkv", n_frames=8, width=64, height=48)
    dist, ref = (clip, other) if role == "dist" else (other, clip)
    result = score_video(dist, ref, metrics="psnr_y", offset=0)
    assert result.report.inputs[role].metadata["title"] == "Caf\ufffd\ufffd!"
    assert len(result.frames) == 8


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A small valid PNG whose header is rewritten to declare width x height."""
    frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb24"
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def test_a_picture_declaring_a_huge_size_is_refused_before_decoding(tmp_path):
    png = _png_declaring(tmp_path / "huge.png", 16000, 16000)
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match=r"16000x16000 .*max_pixels"):
        open_video(png, max_pixels=40_000_000)
    dist = media.make_clip(tmp_path / "d.mkv", n_frames=2, width=64, height=48)
    with pytest.raises(InvalidInputError, match="max_pixels"):
        score_video(dist, png, metrics="psnr_y", offset=0)
    assert time.monotonic() - started < 10


def test_a_stalled_pipe_ends_within_the_timeout_and_says_so(tmp_path):
    """A pipe whose writer sends a clip and then nothing (its end stays open): the frames
    sent are decoded, the source ends about `timeout` after the data stopped, and the
    loss is recorded rather than passing for a normal end."""
    clip = media.make_clip(tmp_path / "live.ts", n_frames=25, width=64, height=48)
    read_fd, write_fd = os.pipe()
    threading.Thread(target=os.write, args=(write_fd, clip.read_bytes()), daemon=True).start()
    try:
        source = open_video(f"pipe:{read_fd}", timeout=1.0)
        started = time.monotonic()
        with source:
            frames = list(source)
        assert len(frames) == 25
        assert time.monotonic() - started < 8
        assert "sent nothing for 1 s" in source.stats.connection_lost
    finally:
        os.close(write_fd)
        os.close(read_fd)


def test_closing_a_source_blocked_on_a_silent_pipe_returns_at_once(tmp_path):
    # Longer than FFmpeg's 5 s analysis window, so opening needs no more than this.
    clip = media.make_clip(tmp_path / "live.ts", n_frames=200, width=32, height=32)
    read_fd, write_fd = os.pipe()
    threading.Thread(target=os.write, args=(write_fd, clip.read_bytes()), daemon=True).start()
    try:
        source = open_video(f"pipe:{read_fd}", timeout=30.0)
        consumer = threading.Thread(target=lambda: list(source), daemon=True)
        consumer.start()
        time.sleep(0.5)
        started = time.monotonic()
        source.close()
        assert time.monotonic() - started < 2.0
        consumer.join(timeout=5)
        assert not consumer.is_alive()
    finally:
        os.close(write_fd)
        os.close(read_fd)
