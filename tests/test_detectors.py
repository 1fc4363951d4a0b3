"""Freeze, black and silence detectors against FFmpeg's own freezedetect, blackdetect and
silencedetect, run through PyAV's filter graph on the very frames and samples they see."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np
import pytest
from av.filter import Graph
from media import render_rgb

from topiq_video.errors import InvalidInputError
from topiq_video.monitor.detectors import (
    BlackDetector,
    Episode,
    FreezeDetector,
    SilenceDetector,
    black_pixel_threshold,
)

FPS = 25
FRAME = 1.0 / FPS
W, H = 96, 54
# The test clip: (kind, frames). "freeze" holds its first picture; "dark" is a static RGB ~16
# picture: luma ~30 in limited range, black for limited-range blackdetect (<= 37) but not when
# the same codes are read as full range (> 25).
SEGMENTS = [
    ("moving", 15),  # 0.0
    ("freeze", 75),  # 0.6 - 3.6: a 3 s freeze
    ("moving", 15),
    ("black", 75),  # 4.2 - 7.2: 3 s of black (also frozen)
    ("moving", 15),
    ("freeze", 37),  # 7.8 - 9.28: 1.48 s, too short
    ("moving", 15),
    ("dark", 75),  # 9.88 - 12.88: dark grey, static
    ("moving", 15),
    ("black", 40),  # 13.48 - 15.08: 1.6 s of black, too short
    ("moving", 15),
]
FREEZE_AT = (0.6, 3.6)
BLACK_AT = (4.2, 7.2)
DARK_AT = (9.88, 12.88)

FREEZE_KEYS = ("lavfi.freezedetect.freeze_start", "lavfi.freezedetect.freeze_end")
BLACK_KEYS = ("lavfi.black_start", "lavfi.black_end")
SILENCE_KEYS = ("lavfi.silence_start", "lavfi.silence_end")


def _clip_pictures() -> list[np.ndarray]:
    pictures: list[np.ndarray] = []
    rng = np.random.default_rng(5)
    dark = np.full((H, W, 3), 16, np.uint8) + rng.integers(0, 3, (H, W, 1), dtype=np.uint8)
    i = 0
    for kind, n in SEGMENTS:
        for k in range(n):
            if kind == "moving" or (kind == "freeze" and k == 0):
                pictures.append(render_rgb(i / FPS, W, H))
            elif kind == "freeze":
                pictures.append(pictures[-1])
            elif kind == "black":
                pictures.append(np.zeros((H, W, 3), np.uint8))
            else:
                pictures.append(dark)
            i += 1
    return pictures


def _encode_decode(pictures: Sequence[np.ndarray], pix_fmt: str, full: bool) -> list:
    """H.264-encode the pictures in memory and decode them again (real codec noise)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        stream.codec_context.options = {"crf": "18", "preset": "veryfast"}
        stream.codec_context.color_range = 2 if full else 1
        for i, rgb in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=pix_fmt, dst_color_range="JPEG" if full else "MPEG"
            )
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    with av.open(buf) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == len(pictures)
    return frames


@pytest.fixture(scope="module")
def clips() -> dict[str, list]:
    pictures = _clip_pictures()
    out = {
        "8bit-limited": _encode_decode(pictures, "yuv420p", full=False),
        "10bit-limited": _encode_decode(pictures, "yuv420p10le", full=False),
        "8bit-full": _encode_decode(pictures, "yuv420p", full=True),
    }
    assert out["8bit-full"][0].color_range == 2
    assert out["10bit-limited"][0].format.name == "yuv420p10le"
    return out


def _depth(frame: av.VideoFrame) -> int:
    return 10 if "10" in frame.format.name else 8


def _is_full(frame: av.VideoFrame) -> bool:
    return frame.color_range == 2 or frame.format.name.startswith("yuvj")


def _plane(frame: av.VideoFrame, index: int) -> np.ndarray:
    """One plane as a 2-D numpy array of code values (uint8 or uint16)."""
    plane = frame.planes[index]
    dtype = np.uint8 if _depth(frame) == 8 else np.uint16
    itemsize = np.dtype(dtype).itemsize
    rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // itemsize)
    return rows[:, : plane.width]


def _retag(frames: Sequence[av.VideoFrame], *, full: bool) -> None:
    """Tag the same code values with a range (yuvj formats are full whatever the tag)."""
    for frame in frames:
        frame.color_range = 2 if full else 1


def ffmpeg_video_metadata(
    frames: Sequence[av.VideoFrame], filter_name: str, args: str = ""
) -> list[tuple[float, dict[str, str]]]:
    """Run one FFmpeg video filter on the frames (pts = index, 1/FPS); (time, metadata) of
    every output frame that carries metadata."""
    first = frames[0]
    graph = Graph()
    src = graph.add(
        "buffer",
        f"video_size={first.width}x{first.height}:pix_fmt={first.format.name}"
        f":time_base=1/{FPS}:pixel_aspect=1/1:range={'pc' if _is_full(first) else 'tv'}",
    )
    filt = graph.add(filter_name, args)
    sink = graph.add("buffersink")
    src.link_to(filt)
    filt.link_to(sink)
    graph.configure()
    found: list[tuple[float, dict[str, str]]] = []

    def drain() -> None:
        while True:
            try:
                out = sink.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            if out.metadata:
                found.append((out.pts / FPS, dict(out.metadata)))

    for i, frame in enumerate(frames):
        frame.pts = i
        frame.time_base = Fraction(1, FPS)
        src.push(frame)
        drain()
    src.push(None)
    drain()
    return found


def _pairs(
    metadata: list[tuple[float, dict[str, str]]], keys: tuple[str, str]
) -> list[tuple[float, float | None]]:
    """(start, end) intervals from FFmpeg's start/end metadata, in order."""
    out: list[tuple[float, float | None]] = []
    for _, meta in metadata:
        if keys[0] in meta:
            out.append((float(meta[keys[0]]), None))
        if keys[1] in meta:
            assert out and out[-1][1] is None, f"an end without a start: {metadata}"
            out[-1] = (out[-1][0], float(meta[keys[1]]))
    return out


def _closed(episodes: Sequence[Episode]) -> list[tuple[float, float | None]]:
    """Each episode once: its end when it ended, else (start, None)."""
    by_start: dict[float, float | None] = {}
    for e in episodes:
        if e.end is not None or e.start not in by_start:
            by_start[e.start] = e.end
    return list(by_start.items())


def _assert_same(
    ours: list[tuple[float, float | None]], ffmpeg: list[tuple[float, float | None]]
) -> None:
    assert len(ours) == len(ffmpeg), f"ours {ours} vs FFmpeg {ffmpeg}"
    for (s1, e1), (s2, e2) in zip(ours, ffmpeg, strict=True):
        assert abs(s1 - s2) <= FRAME + 1e-9, f"starts differ: ours {ours} vs FFmpeg {ffmpeg}"
        assert (e1 is None) == (e2 is None)
        if e1 is not None:
            assert abs(e1 - e2) <= FRAME + 1e-9, f"ends differ: ours {ours} vs FFmpeg {ffmpeg}"


def _near(interval: tuple[float, float | None], expected: tuple[float, float]) -> bool:
    return abs(interval[0] - expected[0]) <= FRAME and abs(interval[1] - expected[1]) <= FRAME


def run_freeze(
    frames: Sequence[av.VideoFrame], detector: FreezeDetector, chroma: bool = False
) -> list[Episode]:
    episodes: list[Episode] = []
    for i, frame in enumerate(frames):
        planes = [_plane(frame, p) for p in range(len(frame.planes))]
        episodes += detector.update(
            i / FPS,
            planes[0],
            bit_depth=_depth(frame),
            chroma=planes[1:] if chroma else (),
        )
    return episodes


def run_black(frames: Sequence[av.VideoFrame], detector: BlackDetector) -> list[Episode]:
    episodes: list[Episode] = []
    for i, frame in enumerate(frames):
        episodes += detector.update(
            i / FPS, _plane(frame, 0), bit_depth=_depth(frame), full_range=_is_full(frame)
        )
    return episodes


# ---- freeze ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["8bit-limited", "10bit-limited", "8bit-full"])
@pytest.mark.parametrize("max_pixels", [None, W * H // 4], ids=["whole", "every-2nd"])
def test_freeze_matches_ffmpeg_freezedetect(clips, variant: str, max_pixels) -> None:
    frames = clips[variant]
    ffmpeg = _pairs(ffmpeg_video_metadata(frames, "freezedetect"), FREEZE_KEYS)
    detector = FreezeDetector(max_pixels=max_pixels)
    ours = _closed(run_freeze(frames, detector, chroma=True))
    _assert_same(ours, ffmpeg)
    # The clip is what it should be: the 3 s freeze, the black and the dark stretches (static
    # too) are freezes; the 1.48 s freeze and the 1.6 s black are not. The encoder may still
    # refine the first frames of a still picture, so a freeze may start a few frames late.
    assert len(ffmpeg) == 3
    for (start, end), (design_start, design_end) in zip(
        ffmpeg, (FREEZE_AT, BLACK_AT, DARK_AT), strict=True
    ):
        assert design_start - 1e-9 <= start <= design_start + 0.2
        assert end == pytest.approx(design_end)
    assert not detector.active
    assert detector.total_seconds == pytest.approx(sum(e - s for s, e in ours), abs=1e-9)


@pytest.mark.parametrize("variant", ["8bit-limited", "10bit-limited", "8bit-full"])
def test_freeze_on_luma_alone_stays_within_half_a_second_of_ffmpeg(clips, variant: str) -> None:
    """Luma alone (cheaper) misses chroma's dilution of a small luma change: on the 10-bit clip
    the encoder's luma refinement of a new still picture delays the start by 4 frames."""
    frames = clips[variant]
    ffmpeg = _pairs(ffmpeg_video_metadata(frames, "freezedetect"), FREEZE_KEYS)
    ours = _closed(run_freeze(frames, FreezeDetector()))
    assert len(ours) == len(ffmpeg) == 3
    for (s1, e1), (s2, e2) in zip(ours, ffmpeg, strict=True):
        assert abs(s1 - s2) <= 0.5 and e1 is not None and e2 is not None
        assert abs(e1 - e2) <= 0.5


def test_freeze_reports_each_episode_once_as_it_starts_and_ends() -> None:
    # Unencoded: the held pictures repeat exactly, so the design's times are the truth.
    frames = [
        av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        for rgb in _clip_pictures()
    ]
    detector = FreezeDetector()
    seen: list[tuple[float, Episode]] = []
    states: list[bool] = []
    for i, frame in enumerate(frames):
        for e in detector.update(i / FPS, _plane(frame, 0)):
            seen.append((i / FPS, e))
        states.append(detector.active)
    starts = [(t, e) for t, e in seen if e.end is None]
    ends = [(t, e) for t, e in seen if e.end is not None]
    assert len(starts) == len(ends) == 3
    t, first = starts[0]
    # Reported once the picture has been held min_duration, back-dated to where it began.
    assert first.start == pytest.approx(FREEZE_AT[0])
    assert t == pytest.approx(FREEZE_AT[0] + 2.0)
    assert ends[0][0] == pytest.approx(FREEZE_AT[1]) and ends[0][1].end == ends[0][0]
    assert ends[0][1].duration == pytest.approx(3.0)
    assert ends[0][1].value is not None and 0.0 <= ends[0][1].value <= 0.001
    # active flips exactly at those frames: True from the report until the changed frame.
    first_active = states.index(True)
    assert first_active == round((FREEZE_AT[0] + 2.0) * FPS)
    assert states[round(FREEZE_AT[1] * FPS)] is False


def test_chroma_only_change_is_a_freeze_for_luma_but_not_with_chroma() -> None:
    """FFmpeg pools every plane: a picture whose colour alone changes is not frozen to it.
    Luma alone (the default, to be cheap) calls it frozen; giving chroma matches FFmpeg."""
    rng = np.random.default_rng(3)
    luma = rng.integers(40, 200, (H, W), dtype=np.uint8)
    frames = []
    for i in range(100):  # 4 s; chroma drifts by 2 codes a frame
        u = np.full((H // 2, W // 2), 60 + (2 * i) % 120, np.uint8)
        v = np.full((H // 2, W // 2), 128, np.uint8)
        frames.append(_yuv420_frame(luma, u, v))
    ffmpeg = _pairs(ffmpeg_video_metadata(frames, "freezedetect"), FREEZE_KEYS)
    assert ffmpeg == []
    assert _closed(run_freeze(frames, FreezeDetector(), chroma=True)) == []
    luma_only = FreezeDetector()
    run_freeze(frames, luma_only)
    assert luma_only.active and luma_only.active_since == 0.0


def _yuv420_frame(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> av.VideoFrame:
    frame = av.VideoFrame(y.shape[1], y.shape[0], "yuv420p")
    for index, plane in enumerate((y, u, v)):
        target = frame.planes[index]
        rows = np.frombuffer(target, np.uint8).reshape(target.height, target.line_size)
        rows[:, : target.width] = plane  # PyAV planes are writable buffers
    frame.color_range = 1
    return frame


@pytest.mark.parametrize("noise_codes", [1.5, 0.0])
def test_noise_above_the_threshold_is_no_freeze_and_below_it_is(noise_codes: float) -> None:
    """A static picture with fresh sensor-like noise each frame (mean |diff| ~1.7 codes,
    0.0066 of the range) is moving for freezedetect; with +-1 code on 3 % of the pixels
    (about 0.0002) it is frozen. Both sides are FFmpeg's verdict on the same frames."""
    rng = np.random.default_rng(11)
    base = rng.integers(40, 200, (H, W)).astype(np.float64)
    chroma = np.full((H // 2, W // 2), 128, np.uint8)
    frames = []
    for _ in range(90):  # 3.6 s
        if noise_codes:
            y = base + rng.normal(0.0, noise_codes, base.shape)
        else:
            y = base + rng.choice([-1.0, 0.0, 1.0], base.shape, p=[0.015, 0.97, 0.015])
        frames.append(_yuv420_frame(np.clip(np.rint(y), 0, 255).astype(np.uint8), chroma, chroma))
    ffmpeg = _pairs(ffmpeg_video_metadata(frames, "freezedetect"), FREEZE_KEYS)
    for max_pixels in (None, W * H // 4):
        ours = _closed(run_freeze(frames, FreezeDetector(max_pixels=max_pixels)))
        _assert_same(ours, ffmpeg)
    if noise_codes:
        assert ffmpeg == []
    else:
        assert ffmpeg == [(0.0, None)]


def test_slow_drift_is_no_freeze_because_frames_are_compared_with_the_reference() -> None:
    """Each frame moves 1 code on another 15 % of the pixels: below the noise frame to frame,
    above it after a few frames against the held reference, so freezedetect sees no freeze
    (a detector comparing neighbours would see one)."""
    rng = np.random.default_rng(2)
    y = rng.integers(40, 200, (H, W)).astype(np.int32)
    chroma = np.full((H // 2, W // 2), 128, np.uint8)
    frames = []
    for _ in range(100):  # 4 s
        y = y + (rng.random(y.shape) < 0.15)
        frames.append(_yuv420_frame(y.astype(np.uint8), chroma, chroma))
    assert _pairs(ffmpeg_video_metadata(frames, "freezedetect"), FREEZE_KEYS) == []
    assert run_freeze(frames, FreezeDetector(), chroma=True) == []
    assert run_freeze(frames, FreezeDetector()) == []


def test_freeze_held_exactly_min_duration_counts_and_shorter_does_not() -> None:
    still = np.full((8, 8), 100, np.uint8)

    def feed(hold_frames: int) -> list[Episode]:
        detector = FreezeDetector(min_duration=2.0)
        out: list[Episode] = []
        frames = [np.full((8, 8), 50, np.uint8)] + [still] * hold_frames
        frames += [np.full((8, 8), 150, np.uint8), np.full((8, 8), 200, np.uint8)]
        for i, plane in enumerate(frames):
            out += detector.update(i * 0.1, plane)
        return out

    # The picture first shows at 0.1 s; 20 frames of it end at 2.1 s: exactly 2 s.
    assert _closed(feed(20)) == [(0.1, pytest.approx(2.1))]
    assert _closed(feed(19)) == []


def test_finish_closes_an_active_freeze_and_restarts() -> None:
    detector = FreezeDetector(min_duration=1.0)
    plane = np.full((8, 8), 100, np.uint8)
    events = []
    for i in range(15):
        events += detector.update(10.0 + i * 0.1, plane)
    assert detector.active and detector.active_since == 10.0
    assert detector.total_seconds == pytest.approx(1.4)
    ended = detector.finish(12.0)
    assert ended == [Episode("freeze", 10.0, 12.0, 0.0)]
    assert not detector.active and detector.total_seconds == pytest.approx(2.0)
    # After finish the next frame is a fresh reference: no old freeze continues.
    assert detector.update(20.0, plane) == []
    assert detector.update(20.5, plane) == []
    assert not detector.active


def test_clock_going_back_ends_the_episode_at_the_last_frame() -> None:
    detector = FreezeDetector(min_duration=1.0)
    plane = np.zeros((8, 8), np.uint8)
    for i in range(20):
        detector.update(100.0 + i * 0.1, plane)
    assert detector.active
    out = detector.update(5.0, plane)
    assert out == [Episode("freeze", 100.0, pytest.approx(101.9), 0.0)]
    assert not detector.active


def test_timestamp_jitter_is_no_new_stream() -> None:
    """Steps back of a few samples or milliseconds (rounded pts) continue the episode."""
    silence = SilenceDetector(min_duration=1.0)
    chunk = np.zeros((1, RATE // 10), np.float32)  # 0.1 s
    for i in range(20):
        assert silence.update(i * 0.1 - (0.00002 if i % 2 else 0.0), chunk, RATE) == (
            [Episode("silence", 0.0, None, 0.0)] if i == 9 else []
        )
    assert silence.active_since == 0.0
    freeze = FreezeDetector(min_duration=1.0)
    plane = np.zeros((8, 8), np.uint8)
    for i in range(30):
        freeze.update(i * 0.1 - (0.01 if i == 12 else 0.0), plane)
    assert freeze.active and freeze.active_since == 0.0


def test_picture_size_change_restarts_the_reference() -> None:
    detector = FreezeDetector(min_duration=0.5)
    for i in range(10):
        detector.update(i * 0.1, np.zeros((8, 8), np.uint8))
    assert detector.active
    out = detector.update(1.0, np.zeros((16, 16), np.uint8))
    assert [e.end for e in out] == [1.0]
    assert not detector.active


# ---- black -------------------------------------------------------------------------------


def _black_runs(frames: Sequence[av.VideoFrame], min_duration: float = 2.0) -> list:
    """blackdetect's metadata marks every black run; its log line (and our episodes) keep those
    lasting min_duration."""
    runs = _pairs(ffmpeg_video_metadata(frames, "blackdetect"), BLACK_KEYS)
    return [(s, e) for s, e in runs if e is not None and e - s >= min_duration - 1e-9]


@pytest.mark.parametrize(
    ("variant", "read_as_full", "dark_is_black"),
    [
        ("8bit-limited", False, True),
        ("8bit-limited", True, False),
        ("10bit-limited", False, True),
        ("10bit-limited", True, False),
        ("8bit-full", True, True),
    ],
)
def test_black_matches_ffmpeg_blackdetect(
    clips, variant: str, read_as_full: bool, dark_is_black: bool
) -> None:
    frames = clips[variant]
    original = frames[0].color_range
    _retag(frames, full=read_as_full)
    try:
        ffmpeg = _black_runs(frames)
        detector = BlackDetector()
        ours = _closed(run_black(frames, detector))
    finally:
        for frame in frames:
            frame.color_range = original
    _assert_same(ours, ffmpeg)
    # The 3 s black always; the dark stretch as the range says (8-bit full: its luma is ~16,
    # black there too); never the 1.6 s black.
    assert _near(ffmpeg[0], BLACK_AT)
    assert len(ffmpeg) == (2 if dark_is_black else 1)
    if dark_is_black:
        assert _near(ffmpeg[1], DARK_AT)
    assert not detector.active
    assert detector.total_seconds == pytest.approx(sum(e - s for s, e in ours), abs=1e-9)


@pytest.mark.parametrize(
    ("bit_depth", "full", "expected"),
    # By hand from blackdetect: 16 + 0.1 * 219 = 37.9; 0.1 * 255 = 25.5; (16 + 21.9) * 4 = 151.6;
    # 0.1 * 1023 = 102.3; each truncated.
    [(8, False, 37), (8, True, 25), (10, False, 151), (10, True, 102)],
)
def test_black_pixel_threshold_follows_range_and_depth(bit_depth, full, expected) -> None:
    assert black_pixel_threshold(0.10, bit_depth, full) == expected


def test_black_picture_ratio_is_inclusive_at_the_threshold() -> None:
    detector = BlackDetector(min_duration=0.0)
    plane = np.full((10, 10), 37, np.uint8)
    plane.flat[:2] = 38  # 98 % black: black
    assert [e.end for e in detector.update(0.0, plane)] == [None]
    plane.flat[:3] = 38  # 97 %: not black
    assert [e.end for e in detector.update(0.04, plane)] == [0.04]
    assert detector.last_ratio == pytest.approx(0.97)


def test_black_rejects_uint16_without_bit_depth() -> None:
    with pytest.raises(InvalidInputError, match="bit_depth"):
        BlackDetector().update(0.0, np.zeros((4, 4), np.uint16))


# ---- silence -----------------------------------------------------------------------------

RATE = 48000
CHUNK = 1024


def _tone_with_silences(
    seconds: float, silences: Sequence[tuple[float, float]], channels: int = 2
) -> np.ndarray:
    """(channels, n) float32: a 440/660 Hz tone at 0.2 with low noise (-70 dBFS) in the gaps."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    rng = np.random.default_rng(7)
    out = np.empty((channels, n), np.float32)
    for c in range(channels):
        out[c] = 0.2 * np.sin(2 * np.pi * (440 + 220 * c) * t + c)
    for start, end in silences:
        a, b = int(start * RATE), int(end * RATE)
        out[:, a:b] = rng.uniform(-0.0003, 0.0003, (channels, b - a))
    return out


def ffmpeg_silence(samples: np.ndarray, args: str) -> list[tuple[float, float | None]]:
    """silencedetect's (start, end) on planar float samples pushed in CHUNK-sample frames."""
    channels = samples.shape[0]
    layout = {1: "mono", 2: "stereo"}[channels]
    graph = Graph()
    src = graph.add_abuffer(
        format="fltp", sample_rate=RATE, layout=layout, time_base=Fraction(1, RATE)
    )
    filt = graph.add("silencedetect", args)
    sink = graph.add("abuffersink")
    src.link_to(filt)
    filt.link_to(sink)
    graph.configure()
    found: list[tuple[float, dict[str, str]]] = []

    def drain() -> None:
        while True:
            try:
                out = sink.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            if out.metadata:
                found.append((0.0, dict(out.metadata)))

    for start in range(0, samples.shape[1], CHUNK):
        chunk = np.ascontiguousarray(samples[:, start : start + CHUNK])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = RATE
        frame.pts = start
        frame.time_base = Fraction(1, RATE)
        src.push(frame)
        drain()
    src.push(None)
    drain()
    return _pairs(found, SILENCE_KEYS)


def run_silence(
    samples: np.ndarray, detector: SilenceDetector, *, interleaved: bool = False, chunk=CHUNK
) -> list[Episode]:
    episodes: list[Episode] = []
    channels = samples.shape[0]
    for start in range(0, samples.shape[1], chunk):
        part = samples[:, start : start + chunk]
        if interleaved:  # PyAV's packed layout: (1, n * channels)
            episodes += detector.update(
                start / RATE, part.T.reshape(1, -1), RATE, channels=channels
            )
        else:
            episodes += detector.update(start / RATE, part, RATE)
    return episodes


@pytest.mark.parametrize("interleaved", [False, True], ids=["planar", "interleaved"])
def test_silence_matches_ffmpeg_silencedetect(interleaved: bool) -> None:
    # A 6 s silence (an episode) and a 3 s one (too short for 5 s).
    samples = _tone_with_silences(16.0, [(2.0, 8.0), (10.0, 13.0)])
    ffmpeg = ffmpeg_silence(samples, "n=-60dB:d=5")
    assert len(ffmpeg) == 1
    assert ffmpeg[0][0] == pytest.approx(2.0, abs=1e-3) and ffmpeg[0][1] == pytest.approx(
        8.0, abs=1e-3
    )
    detector = SilenceDetector()
    episodes = run_silence(samples, detector, interleaved=interleaved)
    ours = _closed(episodes)
    assert len(ours) == 1
    # Sample-exact: FFmpeg prints 6 significant digits.
    assert ours[0][0] == pytest.approx(ffmpeg[0][0], abs=1e-5)
    assert ours[0][1] == pytest.approx(ffmpeg[0][1], abs=1e-5)
    assert episodes[0].value is not None and 0 < episodes[0].value < 0.001
    assert detector.total_seconds == pytest.approx(6.0, abs=1e-3)


def test_silence_on_one_channel_is_not_silence() -> None:
    samples = _tone_with_silences(10.0, [])
    samples[0, 1 * RATE : 8 * RATE] = 0.0  # left quiet for 7 s, right keeps playing
    assert ffmpeg_silence(samples, "n=-60dB:d=5") == []
    assert run_silence(samples, SilenceDetector()) == []
    # Either channel alone is silence (it ends a sample late: the tone crosses zero at 8.0).
    left = ffmpeg_silence(samples[:1], "n=-60dB:d=5")
    assert left == [(1.0, pytest.approx(8.0, abs=1e-4))]
    ours = _closed(run_silence(samples[:1], SilenceDetector()))
    assert ours == [(pytest.approx(s, abs=1e-5), pytest.approx(e, abs=1e-5)) for s, e in left]


def test_silence_is_found_within_one_large_chunk_and_across_tiny_ones() -> None:
    samples = _tone_with_silences(20.0, [(1.0, 7.0), (9.0, 16.0)], channels=1)
    expected = ffmpeg_silence(samples, "n=-60dB:d=5")
    assert len(expected) == 2
    for chunk in (samples.shape[1], 401):
        ours = _closed(run_silence(samples, SilenceDetector(), chunk=chunk))
        assert ours == [
            (pytest.approx(s, abs=1e-5), pytest.approx(e, abs=1e-5)) for s, e in expected
        ]


def test_silence_int16_uses_its_full_scale() -> None:
    detector = SilenceDetector(min_duration=1.0)
    quiet = np.full((1, RATE * 2), 30, np.int16)  # 30 / 32767 < 0.001: silent
    out = detector.update(0.0, quiet, RATE)
    assert [(e.start, e.end) for e in out] == [(0.0, None)]
    loud = np.full((1, 10), 40, np.int16)  # 40 / 32767 > 0.001: sound
    assert [e.end for e in detector.update(2.0, loud, RATE)] == [2.0]


def test_silence_finish_ends_at_the_end_of_the_last_chunk() -> None:
    detector = SilenceDetector(min_duration=1.0)
    detector.update(5.0, np.zeros((2, RATE * 3), np.float32), RATE)
    assert detector.active and detector.active_since == 5.0
    assert detector.finish() == [Episode("silence", 5.0, 8.0, 0.0)]
    assert detector.total_seconds == pytest.approx(3.0)


def test_silence_rejects_interleaved_samples_that_do_not_split() -> None:
    with pytest.raises(InvalidInputError, match="channels"):
        SilenceDetector().update(0.0, np.zeros(7, np.float32), RATE, channels=2)


# ---- memory ------------------------------------------------------------------------------


def test_memory_stays_constant_over_a_long_feed() -> None:
    freeze, black, silence = FreezeDetector(min_duration=0.2), BlackDetector(0.1), SilenceDetector()
    rng = np.random.default_rng(0)
    planes = [rng.integers(0, 255, (36, 64), dtype=np.uint8) for _ in range(4)]
    planes.append(np.zeros((36, 64), np.uint8))
    audio = [np.zeros((2, 480), np.float32), rng.uniform(-0.5, 0.5, (2, 480)).astype(np.float32)]

    def feed(start: int, count: int) -> int:
        episodes = 0
        for i in range(start, start + count):
            # Alternate 0.4 s of frozen black with 0.4 s of changing pictures: many episodes.
            plane = planes[4] if (i // 10) % 2 else planes[i % 4]
            t = i * FRAME
            episodes += len(freeze.update(t, plane)) + len(black.update(t, plane))
            episodes += len(silence.update(t, audio[(i // 300) % 2], 12000))
        return episodes

    tracemalloc.start()
    try:
        feed(0, 500)
        before = tracemalloc.get_traced_memory()[0]
        produced = feed(500, 3000)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert produced > 250  # the feed really opened and closed episodes all along
    assert after - before < 20_000, f"grew by {after - before} bytes over 3000 frames"
