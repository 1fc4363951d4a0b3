"""Scene detection on synthetic frames, scene lists and cut-list import."""

from __future__ import annotations

import colorsys

import pytest
import torch
import torch.nn.functional as F

from topiq_video.errors import InvalidInputError
from topiq_video.pipeline.options import DEFAULT_SCENE_THRESHOLD
from topiq_video.scenes import (
    ContentDetector,
    Scene,
    content_distance,
    downscale_for_scenes,
    load_cut_list,
    rgb_to_hsv255,
    scenes_from_cuts,
)

H, W = 48, 64


def _texture(seed: int, height: int, width: int, cells: int = 6) -> torch.Tensor:
    """Smooth random colour texture (3, height, width): low-frequency like real footage."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, cells, cells, generator=gen)
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]


# Per scene: (texture seed, colour tint, shape colour); tints make the scenes differ in colour.
SCENE_STYLES = [
    (1, (0.2, 0.3, 0.9), (1.0, 0.9, 0.1)),
    (2, (0.9, 0.4, 0.1), (0.1, 0.2, 1.0)),
    (3, (0.2, 0.9, 0.3), (0.9, 0.1, 0.8)),
]


def _scene_frame(style: int, t: int) -> torch.Tensor:
    """Frame t of a scene: a tinted texture panning 2 px/frame and a square moving 3 px/frame."""
    seed, tint, shape = SCENE_STYLES[style]
    big = _texture(seed, H, W * 4)
    shift = (2 * t) % (W * 3)
    frame = big[:, :, shift : shift + W] * 0.5 + torch.tensor(tint)[:, None, None] * 0.5
    x = (3 * t) % (W - 12)
    y = 10 + (t % 20)
    frame[:, y : y + 12, x : x + 12] = torch.tensor(shape)[:, None, None]
    return frame.clamp(0, 1)


def _clip(plan: list[tuple[int, int]], flashes: tuple[int, ...] = ()) -> torch.Tensor:
    """Frames for a plan [(style, length), ...]; frame numbers in ``flashes`` are white."""
    frames = []
    for style, length in plan:
        frames += [_scene_frame(style, t) for t in range(length)]
    clip = torch.stack(frames)
    for f in flashes:
        clip[f] = 1.0
    return clip


def _detect(clip: torch.Tensor, batch_sizes: list[int] | None = None, **kwargs) -> list[int]:
    detector = ContentDetector(**kwargs)
    frames = list(range(clip.shape[0]))
    sizes = batch_sizes or [clip.shape[0]]
    start = 0
    while start < len(frames):
        size = sizes[0] if len(sizes) == 1 else sizes.pop(0)
        detector.update(frames[start : start + size], clip[start : start + size])
        start += size
    return detector.finish()


def test_hard_cuts_found_at_exact_frames() -> None:
    clip = _clip([(0, 30), (1, 25), (2, 20)])
    assert _detect(clip) == [30, 55]


def test_scores_of_cuts_exceed_threshold_and_motion_stays_below() -> None:
    clip = _clip([(0, 30), (1, 25)])
    detector = ContentDetector()
    detector.update(list(range(55)), clip)
    scores = detector.content_scores
    assert scores.name == "content_score"
    assert list(scores.index) == list(range(55))
    assert torch.isnan(torch.tensor(scores.iloc[0]))
    assert scores.loc[30] >= DEFAULT_SCENE_THRESHOLD
    assert scores.drop(index=[0, 30]).max() < DEFAULT_SCENE_THRESHOLD
    assert detector.max_score == pytest.approx(scores.loc[30])


def test_flash_inside_a_scene_gives_no_cut() -> None:
    clip = _clip([(0, 40), (1, 40)], flashes=(20, 21))
    assert _detect(clip) == [40]
    # The same clip without flash suppression does cut at the flash: the test is meaningful.
    assert _detect(clip, flash_filter=False) == [20, 40]


def test_single_frame_flash_gives_no_cut() -> None:
    clip = _clip([(0, 60)], flashes=(30,))
    assert _detect(clip) == []


def test_fast_pan_within_one_scene_gives_no_cut() -> None:
    # A camera pan of ~8 % of the width per frame over a detailed texture.
    big = _texture(7, H, W * 20, cells=40)
    clip = torch.stack([big[:, :, 5 * t : 5 * t + W] for t in range(60)])
    detector = ContentDetector()
    detector.update(list(range(60)), clip)
    assert detector.finish() == []
    assert detector.max_score < DEFAULT_SCENE_THRESHOLD


def test_min_scene_len_suppresses_short_scenes() -> None:
    clip = _clip([(0, 30), (1, 6), (2, 30)])
    assert _detect(clip) == [30]  # default 15 frames: 36 comes 6 frames after 30
    assert _detect(clip, min_scene_len=5) == [30, 36]
    # Also measured from the first frame.
    early = _clip([(0, 5), (1, 40)])
    assert _detect(early) == []
    assert _detect(early, min_scene_len=3) == [5]


@pytest.mark.parametrize("sizes", [[1], [7], [3, 1, 16, 2, 50], [29, 2, 100]])
def test_streaming_over_batches_matches_one_batch(sizes: list[int]) -> None:
    clip = _clip([(0, 30), (1, 40), (2, 20)], flashes=(50, 51))
    one = ContentDetector()
    one.update(list(range(clip.shape[0])), clip)
    expected = one.finish()
    assert expected == [30, 70]
    streamed = ContentDetector()
    start, n = 0, clip.shape[0]
    k = 0
    while start < n:
        size = sizes[k % len(sizes)]
        streamed.update(list(range(start, min(n, start + size))), clip[start : start + size])
        start += size
        k += 1
    assert streamed.finish() == expected
    torch.testing.assert_close(
        torch.tensor(streamed.content_scores.to_numpy()),
        torch.tensor(one.content_scores.to_numpy()),
        equal_nan=True,
    )


def test_update_returns_cuts_confirmed_so_far() -> None:
    clip = _clip([(0, 30), (1, 30)])
    detector = ContentDetector(flash_window=4)
    assert detector.update(list(range(31)), clip[:31]) == []  # cut pending, not yet confirmed
    assert detector.update(list(range(31, 35)), clip[31:35]) == [30]


def test_sampled_frames_give_cuts_at_sampled_granularity() -> None:
    clip = _clip([(0, 40), (1, 40)])
    sampled = list(range(0, 80, 3))  # --every 3: 0, 3, ..., 39, 42, ...
    detector = ContentDetector()
    detector.update(sampled, clip[sampled])
    assert detector.finish() == [42]


def test_frame_numbers_must_increase() -> None:
    clip = _clip([(0, 4)])
    detector = ContentDetector()
    detector.update([0, 1], clip[:2])
    with pytest.raises(InvalidInputError, match="increase"):
        detector.update([1, 2], clip[2:])


def test_hsv_matches_opencv_scale_reference() -> None:
    rgb = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(3))
    rgb[0, :, 0, 0] = torch.tensor([0.5, 0.5, 0.5])  # grey: hue and saturation 0
    hsv = rgb_to_hsv255(rgb)
    for y in range(5):
        for x in range(7):
            h, s, v = colorsys.rgb_to_hsv(*rgb[0, :, y, x].tolist())
            expected = torch.tensor([h * 180.0, s * 255.0, v * 255.0])
            torch.testing.assert_close(hsv[0, :, y, x], expected, atol=1e-3, rtol=1e-4)


def test_robust_hue_ignores_hue_noise_of_grey_pixels() -> None:
    # Near-grey frames whose tiny colour noise flips the hue at random, as on white feathers.
    gen = torch.Generator().manual_seed(5)
    grey = torch.full((2, 3, H, W), 0.6)
    grey[1] += 0.12  # plus a brightness change, as under motion
    noisy = (grey + 0.02 * torch.rand(2, 3, H, W, generator=gen)).clamp(0, 1)
    hsv = rgb_to_hsv255(noisy)
    plain = float(content_distance(hsv[0], hsv[1], robust_hue=False))
    robust = float(content_distance(hsv[0], hsv[1], robust_hue=True))
    assert plain >= DEFAULT_SCENE_THRESHOLD
    assert robust < 15.0
    # Saturated hue changes still count fully.
    red = rgb_to_hsv255(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4))
    blue = rgb_to_hsv255(torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4))
    assert float(content_distance(red, blue)) == pytest.approx(60.0 / 3.0)


def test_downscale_for_scenes_keeps_mean_and_targets_width() -> None:
    rgb = torch.rand(2, 3, 720, 1280)
    small = downscale_for_scenes(rgb)
    assert small.shape == (2, 3, 144, 256)
    torch.testing.assert_close(small.mean(), rgb.mean(), atol=1e-4, rtol=1e-4)
    assert downscale_for_scenes(torch.rand(1, 3, 48, 64)).shape == (1, 3, 48, 64)


def test_scenes_from_cuts_cover_all_frames() -> None:
    frames = list(range(0, 20, 2))  # 0, 2, ..., 18
    times = [f / 10 for f in frames]
    scenes = scenes_from_cuts([6, 11], frames, times)
    # end_time is exclusive: the next scene's start, or one frame past the last frame.
    assert scenes == [
        Scene(0, 0, 4, 0.0, 0.6),
        Scene(1, 6, 10, 0.6, 1.2),
        Scene(2, 12, 18, 1.2, pytest.approx(2.0)),  # cut 11 falls between sampled frames
    ]
    assert scenes_from_cuts([], frames, times) == [Scene(0, 0, 18, 0.0, pytest.approx(2.0))]
    assert scenes_from_cuts([0, 99], frames, times) == [Scene(0, 0, 18, 0.0, pytest.approx(2.0))]


SCENEDETECT_CSV = """Timecode List:,00:00:02.000,00:00:04.400
Scene Number,Start Frame,Start Timecode,Start Time (seconds),End Frame,End Timecode,End Time (seconds),Length (frames),Length (timecode),Length (seconds)
1,{s1},00:00:00.000,0.000,50,00:00:02.000,2.000,50,00:00:02.000,2.000
2,{s2},00:00:02.000,2.000,110,00:00:04.400,4.400,60,00:00:02.400,2.400
3,{s3},00:00:04.400,4.400,150,00:00:06.000,6.000,40,00:00:01.600,1.600
"""


@pytest.mark.parametrize("starts", [(1, 51, 111), (0, 50, 110)])
def test_load_scenedetect_csv(tmp_path, starts) -> None:
    path = tmp_path / "scenes.csv"
    path.write_text(SCENEDETECT_CSV.format(s1=starts[0], s2=starts[1], s3=starts[2]))
    assert load_cut_list(path) == [50, 110]  # from Start Frame, 1- or 0-based
    assert load_cut_list(path, fps=25.0) == [50, 110]  # from Start Time (seconds)
    # Distorted stream with a different frame rate: times decide.
    times = [i / 50 for i in range(300)]
    assert load_cut_list(path, frame_times=times) == [100, 220]


def test_load_plain_cut_list(tmp_path) -> None:
    path = tmp_path / "cuts.txt"
    path.write_text("# cuts of the master\n\n50\n4.4   # seconds\n00:00:06.000\n0:07.5\n")
    assert load_cut_list(path, fps=25.0) == [50, 110, 150, 188]
    # Variable frame rate: times map to the first frame shown at or after them.
    times = [0.0, 1.0, 2.0, 4.0, 4.5, 6.0, 8.0] + [8.0 + i for i in range(1, 50)]
    assert load_cut_list(path, frame_times=times) == [4, 5, 6, 50]


def test_load_cut_list_errors_name_the_line(tmp_path) -> None:
    path = tmp_path / "cuts.txt"
    path.write_text("10\n# fine\nnext scene\n")
    with pytest.raises(InvalidInputError, match="line 3"):
        load_cut_list(path, fps=25.0)
    times_only = tmp_path / "times.txt"
    times_only.write_text("12\n1.5\n")
    with pytest.raises(InvalidInputError, match="line 2"):
        load_cut_list(times_only)
    with pytest.raises(InvalidInputError, match="Cannot read the cut list"):
        load_cut_list(tmp_path / "missing.txt")


def test_min_scene_len_does_not_hold_against_a_scene_begun_before_the_pass() -> None:
    """Scoring from mid-stream: a cut 5 frames after the first frame seen is real."""
    clip = _clip([(0, 5), (1, 20), (2, 20)])
    detector = ContentDetector(min_scene_len=15)
    detector.update(list(range(100, 145)), clip)
    assert detector.finish() == [105, 125]
    # From the stream's start the same cut is too close to the start of the first scene.
    assert _detect(clip, min_scene_len=15) == [25]
