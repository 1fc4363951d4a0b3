"""Decoding: timestamps, indices, pix_fmts, rotation, threading and bad inputs."""

from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction

import av
import media
import numpy as np
import pytest
from net import RangeServer, closed_port

from topiq_video.errors import InvalidInputError, VideoError
from topiq_video.video import reader as decode
from topiq_video.video import source as sources
from topiq_video.video.probe import probe
from topiq_video.video.reader import open_video, rotate_planes


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


def test_lookahead_then_frames_gives_every_frame_once(clips):
    """The lookahead decodes the start and keeps its packets; the frame pass decodes them
    again and reads on: the same frames, bit for bit, as a plain decode."""
    full, _ = _decode_all(clips["long_mkv"])
    with open_video(clips["long_mkv"], thumbnails=True) as source:
        previews = source.lookahead(1.0)
        frames = list(source.frames())
    assert [p.index for p in previews] == list(range(len(previews)))
    assert previews[-1].time >= 1.0 and previews[-1].time < 1.1
    assert [f.index for f in frames] == [f.index for f in full]
    for got, want in zip(frames, full, strict=True):
        assert got.pts == want.pts and np.array_equal(got.planes[0], want.planes[0])
        assert got.thumb is not None and got.thumb.shape == (36, 64)
    by_index = {f.index: f for f in frames}
    for p in previews:
        assert np.array_equal(p.thumb, by_index[p.index].thumb)


def test_lookahead_with_start_and_duration(gop_clips):
    full, _ = _decode_all(gop_clips["mkv"])
    with open_video(gop_clips["mkv"], start=1.0, duration=2.0) as source:
        previews = source.lookahead(0.5)
        frames = list(source.frames())
    assert previews[0].index == 25 and frames[0].index == 25
    assert [f.index for f in frames] == list(range(25, 75))
    for f in frames:
        assert np.array_equal(f.planes[0], full[f.index].planes[0])


def test_lookahead_must_come_first(clips):
    with open_video(clips["plain"]) as source:
        list(source.frames())
        with pytest.raises(VideoError, match="before frames"):
            source.lookahead(1.0)


def test_frames_can_be_read_once(clips):
    with open_video(clips["plain"]) as source:
        list(source.frames())
        with pytest.raises(VideoError, match="only once"):
            list(source.frames())


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
    with caplog.at_level(logging.WARNING, logger="topiq_video.video.reader"):
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


@pytest.mark.parametrize(
    ("scheme", "message"),
    [
        ("http", r"refused the connection .* nothing is listening there"),
        ("udp", r"No answer from .* within 1\.5 s.*timeout option"),
    ],
)
def test_unreachable_network_source_fails_fast(scheme, message):
    """A refused connection says so at once; a silent one names the timeout it waited."""
    url = f"{scheme}://127.0.0.1:{closed_port()}" + ("/x.mp4" if scheme == "http" else "")
    t0 = time.monotonic()
    with pytest.raises(VideoError, match=message) as err:
        open_video(url, timeout=1.5)
    assert time.monotonic() - t0 < 10
    assert "Errno" not in str(err.value)


# -- seeking with start= -----------------------------------------------------------------


@pytest.fixture(scope="session")
def gop_clips(tmp_path_factory):
    """100 frames with a keyframe every 25 (and one with a single keyframe) per container."""
    d = tmp_path_factory.mktemp("gop")
    out = {}
    for ext in ("mp4", "mkv", "ts"):
        out[ext] = media.make_clip(d / f"gop.{ext}", n_frames=100, width=64, height=48, gop=25)
    out["ts_one_key"] = media.make_clip(
        d / "onekey.ts", n_frames=100, width=64, height=48, gop=1000
    )
    return out


@pytest.mark.parametrize("name", ["mp4", "mkv", "ts", "ts_one_key"])
@pytest.mark.parametrize("start", [0.5, 1.0, 2.3])
def test_start_yields_first_frame_at_or_after_start(gop_clips, name, start):
    full, _ = _decode_all(gop_clips[name])
    expected = next(f for f in full if f.time >= start - 1e-6)
    part, _ = _decode_all(gop_clips[name], start=start, duration=0.2)
    assert part[0].index == expected.index and part[0].pts == expected.pts
    assert [f.index for f in part] == list(range(expected.index, expected.index + 5))
    for f in part:
        assert np.array_equal(f.planes[0], full[f.index].planes[0])


def test_start_past_the_end_names_the_start_not_the_file(gop_clips):
    with pytest.raises(InvalidInputError, match=r"start = 60 s is past the end .* lasts 4\.0"):
        open_video(gop_clips["ts"], start=60.0)


# -- damage: exact indices, lost frames, no false truncation --------------------------------


@pytest.fixture(scope="session")
def damaged(tmp_path_factory):
    d = tmp_path_factory.mktemp("damaged")
    out = {}
    for ext in ("ts", "mp4"):
        clean = media.make_clip(d / f"clean.{ext}", n_frames=150, width=96, height=64)
        out[ext] = (clean, media.make_corrupted_copy(clean, d / f"bad.{ext}"))
    return out


@pytest.mark.parametrize("ext", ["ts", "mp4"])
def test_damage_keeps_true_indices_and_is_not_truncation(damaged, ext, caplog):
    clean, bad = damaged[ext]
    full, _ = _decode_all(clean)
    true_index = {f.pts: f.index for f in full}
    with caplog.at_level(logging.WARNING, logger="topiq_video.video.reader"):
        frames, reader = _decode_all(bad)
    # Damage made frames disappear: the survivors keep their true positions.
    assert len(frames) < len(full)
    assert [f.index for f in frames] == [true_index[f.pts] for f in frames]
    assert [f.time for f in frames] == [full[f.index].time for f in frames]
    assert reader.stats.lost_frames == len(full) - len(frames)
    assert reader.stats.truncated_at is None
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]


def test_damage_and_start_together(damaged):
    clean, bad = damaged["ts"]
    full, _ = _decode_all(clean)
    true_index = {f.pts: f.index for f in full}
    frames, _ = _decode_all(bad, start=4.0)
    assert frames[0].index == 100 and frames[0].pts == full[100].pts
    assert all(true_index[f.pts] == f.index for f in frames)


# -- colour of RGB inputs ----------------------------------------------------------------


@pytest.mark.parametrize("pix_fmt", ["gbrp10le", "rgb48le", "rgba", "gbrp"])
def test_rgb_inputs_describe_delivered_planes(tmp_path, pix_fmt):
    path = media.make_raw_clip(tmp_path / "c.nut", pix_fmt, n_frames=2)
    frames, _ = _decode_all(path)
    f = frames[0]
    assert f.pix_fmt == "rgb24" and f.planes[0].dtype == np.uint8
    assert (f.color.matrix, f.color.range, f.color.bit_depth, f.color.guessed) == (
        "rgb",
        "full",
        8,
        False,
    )
    info = probe(path)
    assert info.bit_depth == 8 and info.color == f.color
    diff = np.abs(f.planes[0].astype(int) - media.clip_frames_rgb(1)[0].astype(int))
    assert diff.max() <= 1


# -- sources: URLs, liveness, redaction, error causes ------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("rtsp://admin:pw@cam:554/live?token=abc", "rtsp://***@cam:554/live?***"),
        ("https://cdn.example/v.mp4?sig=123", "https://cdn.example/v.mp4?***"),
        ("srt://user@host:9000", "srt://***@host:9000"),
        ("http://example.com/plain.mp4", "http://example.com/plain.mp4"),
        ("/videos/what?.mp4", "/videos/what?.mp4"),
        ("clip?v=2.mp4", "clip?v=2.mp4"),
        ("C:\\videos\\a.mp4", "C:\\videos\\a.mp4"),
    ],
)
def test_redact_source(source, expected):
    assert sources.redact_source(source) == expected


def test_file_url_opens_and_missing_file_url_is_clear(clips, tmp_path):
    url = clips["plain"].resolve().as_uri()
    frames, _ = _decode_all(url)
    assert len(frames) == 48
    with pytest.raises(VideoError, match="does not exist"):
        open_video((tmp_path / "nope.mp4").as_uri())


def test_live_is_protocol_or_no_duration():
    assert sources.is_live_scheme("rtsp://cam/live") and sources.is_live_scheme("udp://@:1234")
    assert sources.is_live_scheme("srt://h:1") and sources.is_live_scheme("rtmp://h/app")
    assert not sources.is_live_scheme("https://cdn/v.mp4")
    assert not sources.is_live_scheme("ftp://h/v.mp4") and not sources.is_live_scheme("v.mp4")


def test_http_file_with_duration_is_not_live_and_takes_start(clips, caplog):
    # MKV: served MP4 loses its first packet to FFmpeg's mov demuxer over this server.
    with RangeServer(clips["long_mkv"].read_bytes()) as srv:
        url = f"http://user:secret@127.0.0.1:{srv.port}/clip.mkv?token=abc"
        info = probe(url)
        assert not info.is_live and info.duration == pytest.approx(100 / 25, abs=0.05)
        frames, _ = _decode_all(url, start=1.0)
    assert frames[0].index == 25 and len(frames) == 75
    with RangeServer(b"\0" * 1000) as srv:
        url = f"http://user:secret@127.0.0.1:{srv.port}/x.mp4?token=abc"
        with pytest.raises(VideoError) as err:
            probe(url, timeout=3)
    assert "secret" not in str(err.value) and "token=abc" not in str(err.value)
    assert "127.0.0.1" in str(err.value)


def test_empty_decode_names_the_first_error(tmp_path):
    path = media.make_zero_frame_clip(tmp_path / "zero.mp4")
    reader = open_video(path)
    with pytest.raises(VideoError) as err, reader:
        list(reader)
    first = reader.stats.error_messages[0]
    assert "Invalid data" in first and f"first error: {first}" in str(err.value)


def test_truncation_warning_hides_url_secrets(tmp_path, clips, caplog):
    cut = media.make_truncated_copy(clips["long_mkv"], tmp_path / "cut.mkv")
    with RangeServer(cut.read_bytes()) as srv:
        url = f"http://u:hunter2@127.0.0.1:{srv.port}/cut.mkv?key=k9"
        with caplog.at_level(logging.WARNING, logger="topiq_video.video.reader"):
            frames, reader = _decode_all(url)
    assert reader.stats.truncated_at == len(frames)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "truncated" in text and "hunter2" not in text and "k9" not in text


def test_appended_ts_segments_keep_every_frame(tmp_path):
    # Timestamps restart at the seam (and the TS demuxer flags a continuity error there):
    # neither may drop the second segment's frames nor scramble indices.
    a = media.make_clip(tmp_path / "a.ts", n_frames=6, width=96, height=64)
    b = media.make_clip(tmp_path / "b.ts", n_frames=6, width=64, height=48)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    frames, reader = _decode_all(joined)
    assert [f.index for f in frames] == list(range(12))
    assert [f.width for f in frames] == [96] * 6 + [64] * 6
    assert reader.stats.lost_frames == 0


def _vfr_clip(path, n=40):
    """Frames 20 ms and 60 ms apart in turn (a screen recording's stop-and-go)."""
    with av.open(str(path), "w") as out:
        # A millisecond codec time base keeps the irregular timestamps exact.
        stream = out.add_stream("libx264", rate=1000)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        t = 0
        for i in range(n):
            img = np.full((48, 64, 3), (i * 6) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = t
            frame.time_base = Fraction(1, 1000)
            t += 20 if i % 2 else 60
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_variable_frame_rate_is_detected_from_timestamps(tmp_path, clips):
    assert probe(_vfr_clip(tmp_path / "vfr.mkv")).is_vfr is True
    # H.264 in MP4 reports a doubled base rate; that alone must not look variable.
    assert probe(clips["plain"]).is_vfr is False
