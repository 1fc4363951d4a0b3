"""Decoding: timestamps, indices, pix_fmts, rotation, threading and bad inputs."""

from __future__ import annotations

import logging
import socket
import threading
import time
from fractions import Fraction

import av
import media
import numpy as np
import pytest

from topiq_video.errors import VideoError
from topiq_video.video import decode
from topiq_video.video.decode import open_video, probe, read_frames_at, rotate_planes


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "plain": media.make_clip(d / "plain.mp4"),
        "offset_ts": media.make_clip(d / "offset.ts", start_pts=10),
        "offset_mp4": media.make_clip(d / "offset.mp4", start_pts=10),
        "long_mkv": media.make_clip(d / "long.mkv", n_frames=100),
        "long_ts": media.make_clip(d / "long.ts", n_frames=100),
    }


def _decode_all(path, **kwargs):
    with open_video(path, **kwargs) as reader:
        frames = list(reader)
    return frames, reader


def _pyav_pts(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(f.pts for f in c.decode(s)), Fraction(s.time_base)


def test_pts_time_base_and_indices(clips):
    frames, reader = _decode_all(clips["plain"])
    pts, tb = _pyav_pts(clips["plain"])
    assert [f.pts for f in frames] == pts  # presentation order, nothing lost
    assert [f.index for f in frames] == list(range(48))
    assert all(f.time_base == tb for f in frames)
    assert frames[10].time == pytest.approx(10 / 25)
    assert reader.stats.frames_decoded == 48 and reader.stats.truncated_at is None
    assert frames[0].planes[0].shape == (90, 160) and frames[0].planes[1].shape == (45, 80)


@pytest.mark.parametrize("name", ["offset_ts", "offset_mp4"])
def test_nonzero_first_pts_times_start_at_zero(clips, name):
    frames, _ = _decode_all(clips[name])
    assert frames[0].pts > 0
    assert frames[0].time == 0.0
    assert [round(f.time * 25) for f in frames] == list(range(48))


def test_start_seek_keeps_exact_indices(clips):
    full, _ = _decode_all(clips["long_mkv"])
    part, reader = _decode_all(clips["long_mkv"], start=2.0, duration=0.4)
    assert [f.index for f in part] == list(range(50, 60))
    for f in part:
        assert f.pts == full[f.index].pts
        assert np.array_equal(f.planes[0], full[f.index].planes[0])
    assert reader.stats.stopped_early == "duration reached"


def test_read_frames_at(clips):
    full, _ = _decode_all(clips["plain"])
    got = read_frames_at(clips["plain"], [3, 17, 5])
    assert sorted(got) == [3, 5, 17]
    assert np.array_equal(got[17].planes[2], full[17].planes[2])
    with pytest.raises(VideoError, match="indices"):
        read_frames_at(clips["plain"], [1000])


@pytest.mark.parametrize(
    ("maker", "pix_fmt", "n_planes", "dtype"),
    [
        (lambda p: media.make_clip(p.with_suffix(".mkv"), n_frames=3), "yuv420p", 3, np.uint8),
        (
            lambda p: media.make_yuv444_clip(p.with_suffix(".mkv"), n_frames=3),
            "yuv444p",
            3,
            np.uint8,
        ),
        (
            lambda p: media.make_10bit_clip(p.with_suffix(".mkv"), n_frames=3),
            "yuv420p10le",
            3,
            np.uint16,
        ),
        (
            lambda p: media.make_clip(
                p.with_suffix(".mkv"), n_frames=3, pix_fmt="yuv422p10le", codec="ffv1"
            ),
            "yuv422p10le",
            3,
            np.uint16,
        ),
        (
            lambda p: media.make_raw_clip(p.with_suffix(".nut"), "yuv420p12le"),
            "yuv420p12le",
            3,
            np.uint16,
        ),
        (
            lambda p: media.make_clip(p.with_suffix(".mkv"), n_frames=3, pix_fmt="yuvj420p"),
            "yuvj420p",
            3,
            np.uint8,
        ),
        (lambda p: media.make_raw_clip(p.with_suffix(".nut"), "nv12"), "yuv420p", 3, np.uint8),
        (lambda p: media.make_raw_clip(p.with_suffix(".nut"), "yuyv422"), "yuv422p", 3, np.uint8),
        (lambda p: media.make_gray_clip(p.with_suffix(".mkv"), n_frames=3), "gray", 1, np.uint8),
        (
            lambda p: media.make_raw_clip(p.with_suffix(".nut"), "gray10le"),
            "gray10le",
            1,
            np.uint16,
        ),
        (lambda p: media.make_raw_clip(p.with_suffix(".nut"), "rgb24"), "rgb24", 1, np.uint8),
        (lambda p: media.make_raw_clip(p.with_suffix(".nut"), "bgr24"), "rgb24", 1, np.uint8),
        (lambda p: media.make_raw_clip(p.with_suffix(".nut"), "gbrp"), "rgb24", 1, np.uint8),
    ],
)
def test_pix_fmts_decode_to_native_planes(tmp_path, maker, pix_fmt, n_planes, dtype):
    path = maker(tmp_path / "clip")
    frames, _ = _decode_all(path)
    f = frames[0]
    assert f.pix_fmt == pix_fmt and len(f.planes) == n_planes
    assert all(p.dtype == dtype and p.flags.c_contiguous for p in f.planes)
    assert f.planes[0].shape[:2] == (90, 160)
    if pix_fmt == "rgb24":
        # Lossless raw formats must reproduce the source picture exactly.
        assert np.array_equal(f.planes[0], media.clip_frames_rgb(1)[0])


def test_nv12_split_matches_swscale(tmp_path):
    path = media.make_raw_clip(tmp_path / "n.nut", "nv12", n_frames=1)
    frames, _ = _decode_all(path)
    with av.open(str(path)) as c:
        ref = next(c.decode(video=0)).reformat(format="yuv420p")
        u = np.frombuffer(ref.planes[1], np.uint8).reshape(45, -1)[:, :80]
    assert np.array_equal(frames[0].planes[1], u)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_display_rotation_applied(tmp_path, rotation):
    plain = media.make_clip(tmp_path / "p.mkv", n_frames=2, pix_fmt="yuv444p", codec="ffv1")
    rotated = media.make_clip(
        tmp_path / "r.mp4", n_frames=2, pix_fmt="yuv444p", codec="ffv1", rotation=rotation
    )
    info = probe(rotated)
    assert info.rotation == rotation
    assert (info.width, info.height) == ((90, 160) if rotation % 180 else (160, 90))
    a, _ = _decode_all(plain)
    b, _ = _decode_all(rotated)
    assert (b[0].width, b[0].height) == (info.width, info.height)
    # PyAV/FFmpeg: the display matrix angle is counter-clockwise, as np.rot90 turns.
    for i in range(3):
        assert np.array_equal(b[0].planes[i], np.rot90(a[0].planes[i], rotation // 90))


def test_rotate_planes_function():
    y = np.arange(6).reshape(2, 3)
    (r,) = rotate_planes((y,), 90)
    assert r.tolist() == [[2, 5], [1, 4], [0, 3]]
    assert rotate_planes((y,), 360)[0] is y


def test_probe_fields(tmp_path):
    path = media.make_clip(
        tmp_path / "m.mp4", n_frames=10, colorspace="bt709", metadata={"title": "<b>x</b>"}
    )
    info = probe(path)
    assert (info.codec, info.width, info.height, info.pix_fmt, info.bit_depth) == (
        "h264",
        160,
        90,
        "yuv420p",
        8,
    )
    assert info.fps == 25 and info.frame_count == 10
    assert info.duration == pytest.approx(0.4, abs=0.05)
    assert info.color.matrix == "bt709" and info.color.transfer == "bt709"
    assert info.metadata["title"] == "<b>x</b>"
    assert not info.is_live and info.scan_type in ("progressive", "unknown")


def test_early_stop_joins_thread(clips):
    before = threading.active_count()
    with open_video(clips["long_mkv"], queue_size=2) as reader:
        for frame in reader:
            if frame.index == 3:
                break
    assert reader._thread is not None and not reader._thread.is_alive()
    assert threading.active_count() == before
    assert reader.stats.frames_decoded < 100


def test_thread_exception_reraised_in_caller(clips, monkeypatch):
    def boom(frame):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(decode, "frame_planes", boom)
    reader = open_video(clips["plain"])
    with pytest.raises(RuntimeError, match="exploded"), reader:
        list(reader)
    assert not reader._thread.is_alive()


def test_truncated_file_keeps_frames_and_warns(tmp_path, clips, caplog):
    cut = media.make_truncated_copy(clips["long_mkv"], tmp_path / "cut.mkv")
    with caplog.at_level(logging.WARNING, logger="topiq_video.video.decode"):
        frames, reader = _decode_all(cut)
    assert 20 < len(frames) < 80
    assert reader.stats.truncated_at == len(frames)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(len(frames)) in warnings[0].getMessage()


def test_truncated_mp4_without_index_is_clear_error(tmp_path, clips):
    cut = media.make_truncated_copy(clips["plain"], tmp_path / "cut.mp4")
    with pytest.raises(VideoError, match="partial download"):
        open_video(cut)


def test_corrupt_bytes_counted_and_decoding_continues(tmp_path, clips):
    bad = media.make_corrupted_copy(clips["long_ts"], tmp_path / "bad.ts")
    frames, reader = _decode_all(bad)
    assert reader.stats.decode_errors + reader.stats.corrupt_frames > 0
    assert frames[-1].index > 80  # went on past the damage


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.mp4", "does not exist"),
        (lambda d: d, "directory"),
        (lambda d: media.make_text_file(d / "notes.mp4"), "not a readable video"),
        (lambda d: media.make_audio_only(d / "sound.m4a"), "no video stream"),
    ],
)
def test_bad_inputs_raise_video_error(tmp_path, make, match):
    with pytest.raises(VideoError, match=match):
        open_video(make(tmp_path))
    with pytest.raises(VideoError, match=match):
        probe(make(tmp_path))


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_zero_frame_video(tmp_path, suffix):
    path = media.make_zero_frame_clip(tmp_path / f"zero{suffix}")
    reader = open_video(path)
    with pytest.raises(VideoError, match="No frame"), reader:
        list(reader)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("scheme", ["http", "udp"])
def test_unreachable_network_source_fails_fast(scheme):
    url = f"{scheme}://127.0.0.1:{_closed_port()}" + ("/x.mp4" if scheme == "http" else "")
    t0 = time.monotonic()
    with pytest.raises(VideoError, match="open timeout"):
        open_video(url, open_timeout=1.5)
    assert time.monotonic() - t0 < 10
