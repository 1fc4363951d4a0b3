"""Pairing follows the pictures through frame-rate conversions of real encodes.

A 25 fps source is re-timed three ways (sample-and-hold to 30 fps, FFmpeg's ``fps`` filter
to 30 and to 24 fps); source and conversions are encoded with libx264 and decoded, and each
converted frame must be paired with the source frame whose picture it carries.
"""

from __future__ import annotations

from typing import NamedTuple

import conversions
import media
import numpy as np
import pytest

from topiq_video.video.align import pair_by_time, pair_streams
from topiq_video.video.color import luma_thumbnails
from topiq_video.video.reader import open_video

SOURCE_FPS, N_SOURCE, WIDTH, HEIGHT, CRF = 25, 75, 160, 90, 18
REQUIRED_SHARE = 0.97


class Decoded(NamedTuple):
    """A decoded frame as the pipeline hands it to the pairer: index, time, thumbnail."""

    index: int
    time: float
    thumb: np.ndarray


def _decode(path) -> list[Decoded]:
    with open_video(path) as reader:
        frames = list(reader)
    thumbs = luma_thumbnails(frames).numpy()
    return [Decoded(f.index, f.time, t) for f, t in zip(frames, thumbs, strict=True)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conversions")
    pictures = media.clip_frames_rgb(N_SOURCE, WIDTH, HEIGHT, SOURCE_FPS)
    source = _decode(conversions.encode_pictures(folder / "src.mp4", pictures, SOURCE_FPS))
    made = {
        "sample-and-hold 25->30": (30, conversions.sample_and_hold(pictures, SOURCE_FPS, 30)),
        "ffmpeg fps 25->30": (30, conversions.ffmpeg_fps(pictures, SOURCE_FPS, 30)),
        "ffmpeg fps 25->24": (24, conversions.ffmpeg_fps(pictures, SOURCE_FPS, 24)),
    }
    out = {}
    for k, (name, (fps, (converted, truth))) in enumerate(made.items()):
        path = conversions.encode_pictures(folder / f"conv{k}.mp4", converted, fps, crf=CRF)
        out[name] = (_decode(path), truth)
    return source, out


def _share_right(pairs, truth) -> float:
    return float(np.mean([truth[d] == r for d, r in pairs]))


CASES = [
    # name, convention reported, time-only rule already right?
    ("sample-and-hold 25->30", "sample-and-hold", False),
    ("ffmpeg fps 25->30", "nearest", False),
    ("ffmpeg fps 25->24", "nearest", True),
]


@pytest.mark.parametrize("name, convention, time_rule_ok", CASES, ids=[c[0] for c in CASES])
def test_pairs_follow_the_picture(clips, name, convention, time_rule_ok):
    source, converted = clips
    dist, truth = converted[name]
    pairer = pair_streams(dist, source)
    pairs = [(d.index, r.index) for d, r in pairer]
    assert len(pairs) >= len(dist) - 1  # all but possibly the last frame overlap
    assert _share_right(pairs, truth) >= REQUIRED_SHARE
    refs = [r for _, r in pairs]
    assert refs == sorted(refs)  # never back to an earlier reference frame
    stats = pairer.stats
    assert stats.equal_rate is False and stats.conversion == convention
    assert stats.split_rows >= 20
    assert stats.compared >= stats.paired - 1  # the first row comes before any rate is known

    time_only = pair_by_time([d.time for d in dist], [r.time for r in source])
    time_share = _share_right(time_only.pairs.tolist(), truth)
    if time_rule_ok:
        # FFmpeg 25 -> 24 fps picks the nearest frame: the pictures agree with the time rule.
        assert time_share >= REQUIRED_SHARE and pairs == [tuple(p) for p in time_only.pairs]
    else:
        assert time_share < REQUIRED_SHARE  # the bar means something here


def test_thinned_conversion_still_follows_the_picture(clips):
    # Scoring every other frame (the pipeline's ``every=2``) leaves a 15 fps stream of a
    # 30 fps encode: the rate is still told apart from the source's by the frame indices.
    source, converted = clips
    dist, truth = converted["sample-and-hold 25->30"]
    pairer = pair_streams(dist[::2], source)
    pairs = [(d.index, r.index) for d, r in pairer]
    assert _share_right(pairs, truth) >= REQUIRED_SHARE
    assert pairer.stats.conversion == "sample-and-hold"


def test_equal_rates_pair_exactly_as_by_time(clips, tmp_path):
    source, _ = clips
    # The same pictures encoded again, worse: different noise, the same rate; also thinned
    # to every 2nd or 3rd frame, which must not pass for another frame rate.
    pictures = media.clip_frames_rgb(N_SOURCE, WIDTH, HEIGHT, SOURCE_FPS)
    encoded = _decode(conversions.encode_pictures(tmp_path / "again.mp4", pictures, 25, crf=32))
    cases = [(encoded, 0.0), (encoded, 2 / SOURCE_FPS), (encoded, -3 / SOURCE_FPS)]
    cases += [(encoded[::2], 0.0), (encoded[1::3], 1 / SOURCE_FPS)]
    for again, offset in cases:
        pairer = pair_streams(again, source, offset)
        got = [(d.index, r.index) for d, r in pairer]
        by_time = pair_by_time([d.time for d in again], [r.time for r in source], offset)
        assert got == [(again[i].index, r) for i, r in by_time.pairs.tolist()]
        assert pairer.stats == by_time.stats
        assert pairer.stats.conversion == "equal rate" and pairer.stats.compared == 0
