"""The worst-frame gallery, captured during the pass: the right frames, bounded memory."""

from __future__ import annotations

import media
import numpy as np
import pytest
import torch
from torchvision.io import decode_jpeg

from topiq_video.pipeline.capture import WorstFrameCapture, difference_picture
from topiq_video.pipeline.collect import score_video
from topiq_video.pooling import pick_worst
from topiq_video.video.color import frames_to_rgb
from topiq_video.video.reader import open_video

# torchvision announces its image codecs will move to TorchCodec; decoding still works.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _offer_in_batches(capture, values, times, batch=8, size=(3, 18, 32)):
    pictures = torch.rand(batch, *size)
    for start in range(0, len(values), batch):
        chunk = slice(start, start + batch)
        n = len(values[chunk])
        capture.offer(
            "m",
            values[chunk].tolist(),
            list(range(start, start + n)),
            times[chunk].tolist(),
            pictures[:n],
            pictures[:n],
        )


@pytest.mark.parametrize("seed", range(6))
def test_gallery_equals_the_pick_over_the_whole_run(seed):
    """Streaming, with a bounded pool, picks what picking over every frame would."""
    rng = np.random.default_rng(seed)
    n = 3000
    times = np.arange(n) / 25.0
    values = 0.7 + 0.05 * np.sin(times / 3) + rng.normal(0, 0.01, n)
    for centre in rng.integers(0, n, 12):  # dips a few frames wide, as compression makes
        values[max(0, centre - 3) : centre + 4] -= rng.uniform(0.05, 0.3)
    capture = WorstFrameCapture(["m"], 4, spacing=1.0)
    _offer_in_batches(capture, values, times)
    entries, images = capture.gallery()
    expected = pick_worst(values, times, 4, spacing=1.0)
    assert [e.frame for e in entries] == expected
    assert [e.rank for e in entries] == [1, 2, 3, 4]
    assert len(images) == 12 and all(data[:2] == b"\xff\xd8" for data in images.values())
    assert max(len(pool) for pool in capture._pools.values()) <= capture.pool_size


def test_pool_stays_bounded_however_long_the_run():
    rng = np.random.default_rng(9)
    n = 20_000
    times = np.arange(n) / 25.0
    values = np.linspace(1.0, 0.0, n) + rng.normal(0, 0.001, n)  # always getting worse
    capture = WorstFrameCapture(["m"], 2, spacing=1.0)
    _offer_in_batches(capture, values, times, batch=64, size=(3, 4, 4))
    assert len(capture._pools["m"]) <= capture.pool_size
    entries, _ = capture.gallery()
    assert entries[0].frame == n - 1 or values[entries[0].frame] == values.min()


def test_difference_picture_is_black_for_equal_pictures_and_bright_for_changes():
    a = torch.rand(3, 8, 8)
    same = difference_picture(a, a)
    assert same.dtype == torch.uint8 and same.shape == (3, 8, 8)
    assert int(same.max()) <= 4  # the colour map's black
    b = a.clone()
    b[:, :4] = 1.0 - b[:, :4]
    diff = difference_picture(b, a)
    assert diff[:, :4].float().mean() > diff[:, 4:].float().mean() + 50


def test_gallery_pictures_are_the_frames_they_name(tmp_path):
    """The captured encode and reference pictures are the frames their entry names."""
    ref = media.make_clip(tmp_path / "ref.mkv", n_frames=60, width=96, height=64)
    dist = media.make_trimmed_clip(
        tmp_path / "dist.mkv", 5, n_frames=60, width=96, height=64, crf=40
    )
    result = score_video(dist, ref, metrics="psnr_y", gallery=3)
    with open_video(dist) as source:
        dist_frames = {f.index: f for f in source}
    with open_video(ref) as source:
        ref_frames = {f.index: f for f in source}
    assert len(result.report.gallery) == 3
    for entry in result.report.gallery:
        row = result.frames[result.frames["frame"] == entry.frame].iloc[0]
        assert entry.ref_frame == int(row["ref_frame"]) and entry.value == row["psnr_y"]
        for image, frames, index in (
            (entry.dist_image, dist_frames, entry.frame),
            (entry.ref_image, ref_frames, entry.ref_frame),
        ):
            shown = decode_jpeg(
                torch.frombuffer(bytearray(result.images[image]), dtype=torch.uint8)
            )
            truth = (frames_to_rgb([frames[index]])[0] * 255).round()
            other = (frames_to_rgb([frames[(index + 30) % 55]])[0] * 255).round()
            err = (shown.float() - truth).abs().mean()
            assert err < 6 and err < (shown.float() - other).abs().mean() / 2
