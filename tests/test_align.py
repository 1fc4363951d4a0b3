"""Alignment: pairing by presentation time, streaming pairing and automatic offset search."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest

from topiq_video.errors import AlignmentError, InvalidInputError
from topiq_video.video import align
from topiq_video.video.align import (
    DEFAULT_MAX_OFFSET,
    LOW_CONFIDENCE,
    PAIR_TOLERANCE,
    OffsetEstimate,
    PairingStats,
    StreamPairer,
    estimate_offset,
    nominal_frame_duration,
    pair_by_time,
    pair_streams,
    search_span,
)

# ---------------------------------------------------------------- synthetic thumbnails

TH, TW = 36, 64
_YY, _XX = np.mgrid[0:TH, 0:TW] / np.array([TH, TW])[:, None, None]


def _texture() -> np.ndarray:
    tex = np.random.default_rng(5).standard_normal((TH, TW))
    for _ in range(3):  # smooth it so it survives blur like real picture detail
        tex = (tex + sum(np.roll(tex, s, a) for s in (1, -1) for a in (0, 1))) / 5
    return 0.15 * tex / tex.std()


_TEX = _texture()
# Three blobs on non-commensurate Lissajous paths: no repetition within +/- 10 s.
_BLOBS = [(0.31, 0.23, 0.0, 0.5), (0.17, 0.41, 1.3, 0.2), (0.53, 0.11, 2.9, -0.1)]


def picture(t: float, *, static: bool = False) -> np.ndarray:
    """A (TH, TW) luma thumbnail that is a deterministic function of time ``t``."""
    if static:
        t = 0.0
    img = 0.4 + _TEX
    for fx, fy, ph, amp in _BLOBS:
        cx = 0.5 + 0.35 * math.sin(2 * math.pi * fx * t + ph)
        cy = 0.5 + 0.35 * math.cos(2 * math.pi * fy * t + 2 * ph)
        img = img + amp * np.exp(-(((_XX - cx) / 0.08) ** 2 + ((_YY - cy) / 0.12) ** 2))
    return img


def thumbs(content_times, *, degrade: bool = False, static: bool = False, seed: int = 0):
    """Thumbnails at the given content times; ``degrade`` mimics an encode: blur, a
    brightness/contrast change and noise."""
    out = np.stack([picture(float(t), static=static) for t in content_times])
    if degrade:
        out = (out + sum(np.roll(out, s, a) for s in (1, -1) for a in (1, 2))) / 5
        out = 0.85 * out + 0.07
        out = out + 0.03 * np.random.default_rng(seed).standard_normal(out.shape)
    return out


def grid(n: int, fps: float) -> np.ndarray:
    return np.arange(n) / fps


@pytest.fixture(scope="module")
def ref30():
    """15 s of a 30 fps reference: times and thumbnails."""
    t = grid(450, 30)
    return t, thumbs(t)


# ---------------------------------------------------------------- pairing


def test_different_rates_pair_by_time():
    ref_t = [Fraction(j, 30) for j in range(90)]
    dist_t = [Fraction(i, 25) for i in range(75)]
    res = pair_by_time(dist_t, ref_t)
    expected = {i: math.floor(i * 30 / 25 + PAIR_TOLERANCE) for i in range(75)}
    assert {int(d): int(r) for d, r in res.pairs} == expected
    assert dict(res.pairs[:6].tolist()) == {0: 0, 1: 1, 2: 2, 3: 4, 4: 5, 5: 6}
    # Every sixth reference frame is never shown at 25 fps, and is counted.
    assert res.stats.ref_skipped == 90 - len(set(expected.values())) > 10
    assert res.unmatched_dist == 0


def test_lower_reference_rate_repeats_inside_overlap_only():
    res = pair_by_time(grid(60, 30), grid(50, 25))  # 2 s each
    ref_idx = res.pairs[:, 1]
    assert ref_idx.max() == 49
    assert np.all(np.diff(ref_idx) >= 0)
    assert res.unmatched_ref == 0 and res.unmatched_dist == 0


@pytest.mark.parametrize("seconds", [60.0, 3600.0])
def test_equal_rates_pair_one_to_one_despite_rounding(seconds):
    n = int(seconds * 30000 / 1001)
    i = np.arange(n)
    # Reference in an MKV-like millisecond time base, distorted computed as i / 29.97 with
    # jitter: the two drift apart by milliseconds over an hour but must still pair 1:1.
    ref_t = np.round(i * 1001 / 30000, 3)
    jitter = np.random.default_rng(1).uniform(-4e-4, 4e-4, n)
    dist_t = i / 29.97 + jitter
    res = pair_by_time(dist_t, ref_t)
    assert np.array_equal(res.pairs[:, 0], i) and np.array_equal(res.pairs[:, 1], i)
    assert res.unmatched_dist == 0 and res.unmatched_ref == 0


def test_reference_shorter_than_encode_is_not_padded():
    ref_t, dist_t = grid(100, 30), grid(130, 30)
    res = pair_by_time(dist_t, ref_t)
    assert res.stats == PairingStats(
        paired=100, dist_before=0, dist_after=30, ref_before=0, ref_after=0, ref_skipped=0
    )
    assert res.pairs[-1].tolist() == [99, 99]
    # 15 frames trimmed from the encode's start: it begins at reference frame 15.
    res = pair_by_time(dist_t, ref_t, offset=0.5)
    assert res.pairs[0].tolist() == [0, 15] and res.pairs[-1].tolist() == [84, 99]
    assert res.stats.ref_before == 15 and res.stats.dist_after == 45
    assert res.unmatched_ref == 15 and res.unmatched_dist == 45


def test_last_reference_frame_shown_for_one_frame_only():
    ref_t = grid(10, 10)  # last frame at 0.9 s, shown until 1.0 s
    res = pair_by_time([0.0, 0.9, 0.94, 0.96, 1.0, 1.2], ref_t)
    # Half-frame tolerance: 0.96 s is nearer the (missing) frame at 1.0 s.
    assert res.pairs.tolist() == [[0, 0], [1, 9], [2, 9]]
    assert res.stats.dist_after == 3
    assert res.stats.ref_skipped == 8


def test_extra_leading_frames_are_unmatched_before():
    res = pair_by_time(grid(40, 30), grid(40, 30), offset=-7 / 30)
    assert res.stats.dist_before == 7 and res.pairs[0].tolist() == [7, 0]
    assert res.stats.ref_after == 7


def test_no_overlap_raises_with_hint():
    with pytest.raises(AlignmentError, match="--offset"):
        pair_by_time(grid(30, 30), grid(30, 30), offset=10.0)
    with pytest.raises(AlignmentError):
        pair_by_time([], grid(30, 30))


def test_backwards_times_are_rejected():
    with pytest.raises(InvalidInputError, match="backwards"):
        pair_by_time([0.0, 0.1, 0.05], grid(10, 10))


# ---------------------------------------------------------------- streaming


@dataclass(frozen=True)
class Item:
    index: int
    time: float


class CountingSource:
    """An iterator of Items that records how many were handed out."""

    def __init__(self, times):
        self.times = list(times)
        self.consumed = 0

    def __iter__(self):
        for i, t in enumerate(self.times):
            self.consumed = i + 1
            yield Item(i, t)


SCENARIOS = [
    ("equal rates", grid(90, 30), grid(90, 30), 0.0),
    ("30 ref / 25 dist", grid(75, 25), grid(90, 30), 0.0),
    ("25 ref / 30 dist", grid(90, 30), grid(75, 25), 0.0),
    ("trimmed encode", grid(80, 30), grid(90, 30), 12 / 30),
    ("leading frames", grid(80, 30), grid(90, 30), -7 / 30),
    ("short reference", grid(120, 25), grid(50, 30), 0.1),
    (
        "jitter",
        grid(200, 29.97) + np.random.default_rng(3).uniform(-1e-3, 1e-3, 200),
        np.round(grid(200, 30000 / 1001), 3),
        0.0,
    ),
    ("single reference frame", grid(5, 30), [0.0], 0.0),
]


@pytest.mark.parametrize("name, dist_t, ref_t, offset", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_streaming_equals_pure_and_reads_ahead_at_most_one(name, dist_t, ref_t, offset):
    pure = pair_by_time(dist_t, ref_t, offset)
    dist_src, ref_src = CountingSource(dist_t), CountingSource(ref_t)
    pairer = pair_streams(dist_src, ref_src, offset)
    got = []
    for d, r in pairer:
        got.append((d.index, r.index))
        # Only the shown reference frame and one look-ahead have been read.
        assert ref_src.consumed <= r.index + 2
        assert dist_src.consumed == d.index + 1
    assert got == [tuple(p) for p in pure.pairs.tolist()]
    assert pairer.stats == pure.stats


def test_streaming_without_drain_stops_at_reference_end():
    dist_src, ref_src = CountingSource(grid(1000, 30)), CountingSource(grid(20, 30))
    pairer = StreamPairer(dist_src, ref_src, drain=False)
    assert len(list(pairer)) == 20
    assert dist_src.consumed == 21  # one frame past the end told us to stop
    assert pairer.stats is not None and not pairer.stats.complete


def test_streaming_drains_reference_to_count_it():
    pairer = StreamPairer(CountingSource(grid(10, 30)), CountingSource(grid(50, 30)))
    assert pairer.stats is None
    assert len(list(pairer)) == 10
    assert pairer.stats.ref_after == 40 and pairer.stats.complete


def test_streaming_no_overlap_raises():
    pairer = pair_streams(CountingSource(grid(10, 30)), CountingSource(grid(10, 30)), 5.0)
    with pytest.raises(AlignmentError, match="--offset"):
        list(pairer)
    assert pairer.stats.paired == 0 and pairer.stats.dist_after == 10


EXPECTED_EQUAL_RATE = {
    "equal rates": True,
    "30 ref / 25 dist": False,
    "25 ref / 30 dist": False,
    "trimmed encode": True,
    "leading frames": True,
    "short reference": False,
    "jitter": True,  # 29.97 with 1 ms jitter against 30000/1001 rounded to milliseconds
    "single reference frame": None,
}


@pytest.mark.parametrize("name, dist_t, ref_t, offset", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_streaming_and_pure_agree_on_the_rates(name, dist_t, ref_t, offset):
    pure = pair_by_time(dist_t, ref_t, offset)
    pairer = pair_streams(CountingSource(dist_t), CountingSource(ref_t), offset)
    list(pairer)
    assert pure.stats.equal_rate is pairer.stats.equal_rate is EXPECTED_EQUAL_RATE[name]
    assert pure.stats.conversion == pairer.stats.conversion
    expected = {True: "equal rate", False: "unknown", None: "unknown"}[EXPECTED_EQUAL_RATE[name]]
    assert pure.stats.conversion == expected  # no thumbnails: no convention to judge
    assert pure.stats.picked_nearest == pure.stats.paired and pure.stats.compared == 0


def test_rate_judgement_survives_rounding_and_a_dropped_frame():
    i = np.arange(3000)
    ms = np.round(i * 1001 / 30000, 3)
    assert pair_by_time(i / 29.97, ms).stats.equal_rate
    # A frame dropped early changes the mean gap by 1/N: still the same rate.
    assert pair_by_time(np.delete(grid(40, 30), 3), grid(40, 30)).stats.equal_rate
    # 30 and 29.97 fps are different rates once enough frames pin them down.
    assert pair_by_time(grid(3000, 30000 / 1001), grid(3000, 30)).stats.equal_rate is False


def _panning_thumbs(content_times) -> np.ndarray:
    """float32 36x64 windows of a large random texture moving along a path that does not
    repeat (cheap enough for thousands of frames)."""
    rng = np.random.default_rng(11)
    tex = rng.standard_normal((TH + 400, TW + 600))
    for _ in range(4):
        tex = (tex + sum(np.roll(tex, s, a) for s in (1, -1) for a in (0, 1))) / 5
    tex = (0.5 + 0.15 * tex / tex.std()).astype(np.float32)
    out = np.empty((len(content_times), TH, TW), np.float32)
    for k, t in enumerate(content_times):
        # Around an ellipse that breathes: always moving (>= 2 pixels per 1/25 s), and
        # never back to the same place within the longest search.
        angle = 0.4 * t + 0.3 * math.sin(0.11 * t)
        x = round(300 + (250 + 40 * math.sin(0.07 * t)) * math.cos(angle))
        y = round(200 + (160 + 30 * math.cos(0.05 * t)) * math.sin(angle))
        out[k] = tex[y : y + TH, x : x + TW]
    return out


@dataclass(frozen=True)
class Pic:
    index: int
    time: float
    thumb: np.ndarray


def _converted(rule, n_out: int, out_fps: float, in_fps: float = 25.0):
    """Thumbnails of a conversion: output frame k shows source frame rule(k), after a
    brightness/contrast change and noise (an encode)."""
    source = [rule(k) for k in range(n_out)]
    pics = 0.9 * _panning_thumbs(np.array(source) / in_fps) + 0.05
    pics += np.random.default_rng(7).normal(0.0, 0.01, pics.shape)
    return [Pic(k, k / out_fps, pics[k]) for k in range(n_out)], source


def _source(n: int, fps: float = 25.0):
    pics = _panning_thumbs(grid(n, fps))
    return [Pic(j, j / fps, pics[j]) for j in range(n)]


def _hold(k: int) -> int:
    return math.floor(k * 25 / 30)


def _nearest_earlier_on_tie(k: int) -> int:
    return math.ceil(k * 25 / 30 - 0.5)


def test_mixed_conversion_is_reported_and_followed():
    # Sample-and-hold for the first half, nearest for the second.
    dist, truth = _converted(lambda k: _hold(k) if k < 60 else _nearest_earlier_on_tie(k), 120, 30)
    pairer = pair_streams(dist, _source(100))
    pairs = [(d.index, r.index) for d, r in pairer]
    assert [r for _, r in pairs] == truth[: len(pairs)] and len(pairs) >= 118
    st = pairer.stats
    assert st.conversion == "mixed" and st.split_rows >= 30
    assert 0.3 < st.hold_share < 0.7 and st.split_hold + st.split_nearest == st.split_rows
    assert st.picked_earlier > 0 and st.equal_rate is False


def test_static_pictures_keep_the_time_rule():
    still = _panning_thumbs([0.0])[0]
    noise = np.random.default_rng(3).normal(0.0, 0.01, (165,) + still.shape)
    dist = [Pic(k, k / 30, still + noise[k]) for k in range(90)]
    ref = [Pic(j, j / 25, still + noise[90 + j]) for j in range(75)]
    pairer = pair_streams(dist, ref)
    got = [(d.index, r.index) for d, r in pairer]
    by_time = pair_by_time([p.time for p in dist], [p.time for p in ref])
    assert got == [tuple(p) for p in by_time.pairs.tolist()]
    assert pairer.stats.conversion == "unknown" and pairer.stats.unclear == pairer.stats.compared
    assert pairer.stats.compared > 0


def test_picture_pairing_is_monotone_and_holds_three_reference_frames():
    import weakref

    class Frame:  # weak-referenceable, to count what the pairer still holds
        def __init__(self, index, time, thumb):
            self.index, self.time, self.thumb = index, time, thumb

    alive: weakref.WeakSet = weakref.WeakSet()

    def ref_source():
        for p in _source(100):
            frame = Frame(p.index, p.time, p.thumb)
            alive.add(frame)
            yield frame

    dist, truth = _converted(_hold, 118, 30)
    last = -1
    for d, r in pair_streams(dist, ref_source()):
        assert r.index >= last and r.index == truth[d.index]
        last = r.index
        del r  # reference counting frees what nothing holds: no gc pass needed
        assert len(alive) <= 3  # the frame before, the one shown and the next
    assert last == 97


def test_pair_by_time_with_thumbnails_equals_streaming():
    dist, truth = _converted(_hold, 110, 30)
    ref = _source(92)
    res = pair_by_time(
        [p.time for p in dist],
        [p.time for p in ref],
        dist_thumbs=np.stack([p.thumb for p in dist]),
        ref_thumbs=np.stack([p.thumb for p in ref]),
    )
    pairer = pair_streams(dist, ref)
    assert [tuple(p) for p in res.pairs.tolist()] == [(d.index, r.index) for d, r in pairer]
    assert res.stats == pairer.stats and res.stats.conversion == "sample-and-hold"
    assert res.pairs[:, 1].tolist() == truth[: len(res.pairs)]
    # Without thumbnails, or with matching off, the same call pairs by time.
    plain = pair_by_time([p.time for p in dist], [p.time for p in ref])
    assert not np.array_equal(plain.pairs, res.pairs)
    off = pair_streams(dist, ref, match_pictures=False)
    assert [(d.index, r.index) for d, r in off] == [tuple(p) for p in plain.pairs.tolist()]


# ---------------------------------------------------------------- offset estimation


def _check_found(est: OffsetEstimate, frames: int, ref_fps: float) -> None:
    assert est.offset_frames == frames, est
    assert est.offset_seconds == pytest.approx(frames / ref_fps, abs=1e-6)
    assert est.confidence >= LOW_CONFIDENCE and not est.ambiguous, est.message
    offsets, costs = est.curve
    assert offsets[np.nanargmin(costs)] == pytest.approx(est.offset_seconds)


def test_trimmed_encode_found_at_plus_12_frames(ref30):
    ref_t, ref_th = ref30
    dist_t = grid(438, 30)
    est = estimate_offset(thumbs(dist_t + 12 / 30, degrade=True), dist_t, ref_th, ref_t)
    _check_found(est, 12, 30)
    # The whole encode then pairs frame i with reference frame i + 12.
    res = pair_by_time(dist_t, ref_t, est.offset_seconds)
    assert np.array_equal(res.pairs[:, 1] - res.pairs[:, 0], np.full(438, 12))


def test_extra_leading_frames_found_at_minus_7(ref30):
    ref_t, ref_th = ref30
    dist_t = grid(457, 30)
    est = estimate_offset(thumbs(dist_t - 7 / 30, degrade=True, seed=2), dist_t, ref_th, ref_t)
    _check_found(est, -7, 30)


def test_torch_thumbnails_accepted(ref30):
    torch = pytest.importorskip("torch")
    ref_t, ref_th = ref30
    dist_t = grid(300, 30)
    est = estimate_offset(
        torch.from_numpy(thumbs(dist_t + 0.1, degrade=True)).float(),
        dist_t,
        torch.from_numpy(ref_th).float(),
        ref_t,
    )
    _check_found(est, 3, 30)


def test_different_frame_rates(ref30):
    ref_t, ref_th = ref30
    dist_t = grid(360, 25)  # a 25 fps encode of the reference trimmed by 0.4 s
    est = estimate_offset(thumbs(dist_t + 0.4, degrade=True), dist_t, ref_th, ref_t)
    _check_found(est, 12, 30)
    # And the other way round: a 25 fps reference, a 30 fps encode with 0.2 s extra lead.
    r25 = grid(375, 25)
    est = estimate_offset(thumbs(dist_t - 0.2, degrade=True), dist_t, thumbs(r25), r25)
    assert est.offset_frames == -5 and est.offset_seconds == pytest.approx(-0.2)


def test_clip_shorter_than_max_offset():
    ref_t, dist_t = grid(90, 30), grid(78, 30)  # 3 s reference, 12 frames trimmed
    est = estimate_offset(thumbs(dist_t + 12 / 30, degrade=True), dist_t, thumbs(ref_t), ref_t)
    _check_found(est, 12, 30)
    assert DEFAULT_MAX_OFFSET > 3.0


def test_reference_shorter_than_encode():
    ref_t, dist_t = grid(120, 30), grid(450, 30)
    est = estimate_offset(thumbs(dist_t + 0.3, degrade=True), dist_t, thumbs(ref_t), ref_t)
    _check_found(est, 9, 30)
    res = pair_by_time(dist_t, ref_t, est.offset_seconds)
    assert res.stats.ref_before == 9 and res.stats.dist_after == 450 - 111


def test_static_content_is_low_confidence():
    t = grid(300, 30)
    est = estimate_offset(
        thumbs(t, static=True, degrade=True), t, thumbs(t, static=True, degrade=True, seed=4), t
    )
    assert est.ambiguous and est.confidence < LOW_CONFIDENCE
    assert "static" in est.message and "--offset" in est.message
    assert est.offset_seconds == 0.0


def test_repetitive_content_is_ambiguous_and_prefers_smallest_shift():
    t = grid(450, 30)
    period = 2.0
    ref = thumbs(t % period)
    dist = thumbs((t + 0.4) % period, degrade=True)
    est = estimate_offset(dist, t, ref, t)
    assert est.ambiguous
    assert est.offset_frames == 12


def test_unrelated_content_is_low_confidence(ref30):
    ref_t, ref_th = ref30
    other = thumbs(ref_t, degrade=True)[:, ::-1, ::-1]  # a different picture altogether
    est = estimate_offset(other, ref_t, ref_th, ref_t)
    assert est.ambiguous and est.match < 0.5


def test_max_offset_bounds_the_search(ref30):
    ref_t, ref_th = ref30
    dist_t = grid(360, 30)
    dist = thumbs(dist_t + 3.0, degrade=True)
    near = estimate_offset(dist, dist_t, ref_th, ref_t, max_offset=1.0)
    assert np.all(np.abs(near.candidate_offsets) <= 1.0 + 1e-9)
    assert abs(near.offset_seconds) <= 1.0 + 1e-9
    assert near.offset_frames != 90
    wide = estimate_offset(dist, dist_t, ref_th, ref_t, max_offset=3.5)
    _check_found(wide, 90, 30)
    assert wide.candidate_offsets.size == 2 * 105 + 1


def test_no_overlap_for_offset_search_raises():
    with pytest.raises(AlignmentError, match="--offset"):
        estimate_offset(thumbs([0.0, 0.1]), [0.0, 0.1], thumbs([0.0, 0.1]), [20.0, 20.1])


def test_mismatched_thumbnail_sizes_rejected():
    with pytest.raises(InvalidInputError, match="same thumbnail size"):
        estimate_offset(np.zeros((5, 18, 32)), grid(5, 30), np.zeros((5, 36, 64)), grid(5, 30))


def test_helpers():
    assert search_span(10.0, 5.0) == 15.0
    # Millisecond rounding of 29.97 fps times averages out.
    ms = np.round(grid(300, 30000 / 1001), 3)
    assert nominal_frame_duration(ms) == pytest.approx(1001 / 30000, rel=1e-4)
    # A dropped frame does not inflate it.
    assert nominal_frame_duration(np.delete(grid(100, 25), 50)) == pytest.approx(0.04)
    manual = OffsetEstimate.manual(0.4, 1 / 30)
    assert manual.offset_frames == 12 and manual.method == "manual"
    assert align.DEFAULT_SEARCH_WINDOW > 0


# ---------------------------------------------------------------- end to end on real clips


@pytest.fixture(scope="module")
def trimmed_pair(tmp_path_factory):
    media = pytest.importorskip("media")
    folder = tmp_path_factory.mktemp("align")
    ref = media.make_clip(folder / "ref.mp4", n_frames=75, width=128, height=72, fps=25)
    # The encode starts 12 frames later, at another size and a lower quality.
    dist = media.make_clip(
        folder / "dist.mp4",
        n_frames=60,
        width=96,
        height=54,
        fps=25,
        crf=32,
        time_offset=12 / 25,
    )
    return dist, ref


def test_decoded_clips_offset_and_streaming_pairs(trimmed_pair):
    from topiq_video.video.color import luma_thumbnails
    from topiq_video.video.reader import open_video

    dist_path, ref_path = trimmed_pair
    with open_video(dist_path) as reader:
        dist_frames = list(reader)
    with open_video(ref_path) as reader:
        ref_frames = list(reader)
    est = estimate_offset(
        luma_thumbnails(dist_frames),
        [f.time for f in dist_frames],
        luma_thumbnails(ref_frames),
        [f.time for f in ref_frames],
    )
    _check_found(est, 12, 25)
    with open_video(dist_path) as d_reader, open_video(ref_path) as r_reader:
        pairer = pair_streams(d_reader, r_reader, est.offset_seconds)
        pairs = [(d.index, r.index) for d, r in pairer]
    assert pairs == [(i, i + 12) for i in range(60)]
    assert pairer.stats.ref_before == 12 and pairer.stats.ref_after == 3


# ---------------------------------------------------------------- offset search: limits


def test_offset_search_memory_is_bounded_at_long_range():
    tracemalloc = pytest.importorskip("tracemalloc")
    fps, max_offset, window, shift = 60, 60.0, 10.0, 1407  # the encode starts 23.45 s in
    n = int(search_span(window, max_offset) * fps) + 30
    t = grid(n, fps)
    ref = _panning_thumbs(t)
    noise = np.random.default_rng(2).normal(0.0, 0.01, ref.shape).astype(np.float32)
    dist = _panning_thumbs(t + shift / fps) + noise
    tracemalloc.start()
    try:
        est = estimate_offset(dist, t, ref, t, max_offset=max_offset, window=window)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _check_found(est, shift, fps)
    assert est.candidate_offsets.size == 2 * 60 * 60 + 1
    # Three N x N float64 matrices alone would be 3 x 4230^2 x 8 bytes = 430 MB.
    assert peak < 80e6, f"peak {peak / 1e6:.1f} MB"


@pytest.mark.parametrize("n", [2, 3])
def test_tiny_clip_against_itself_is_offset_zero_with_low_confidence(n):
    t = grid(n, 25)
    th = thumbs(t)
    est = estimate_offset(th, t, th, t)
    assert est.offset_frames == 0 and est.offset_seconds == 0.0
    assert est.ambiguous and est.confidence < LOW_CONFIDENCE
    assert f"only {n} frames" in est.message and "--offset" in est.message
    assert "static" not in est.message


def test_tiny_encode_of_a_long_reference_is_located_but_unsure(ref30):
    ref_t, ref_th = ref30
    dist_t = grid(3, 30)
    est = estimate_offset(thumbs(dist_t + 0.4, degrade=True), dist_t, ref_th, ref_t)
    assert est.offset_frames == 12
    assert est.ambiguous and "only 3 frames" in est.message
