"""Colour conversion on the device against FFmpeg's own (swscale) conversion."""

from __future__ import annotations

import av
import media
import numpy as np
import pytest
import torch
from av.video.reformatter import Interpolation

from topiq_video.errors import InvalidInputError
from topiq_video.metrics import psnr_y
from topiq_video.video.color import frames_to_luma, frames_to_rgb, luma_thumbnails
from topiq_video.video.reader import open_video

# swscale's default YUV->RGB path replicates chroma (nearest); ask it for interpolated
# chroma and exact rounding so the reference is the conversion we aim to match.
ACCURATE = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
SWS_MATRIX = {"bt709": "ITU709", "bt601": "ITU601"}
SWS_RANGE = {"limited": "MPEG", "full": "JPEG"}

CASES = [
    ("yuv444p", "bt709", "limited", 1.0, 3.0),
    ("yuv444p", "bt601", "full", 1.0, 3.0),
    ("yuv444p10le", "bt601", "limited", 1.0, 3.0),
    ("yuv444p10le", "bt709", "full", 1.0, 3.0),
    ("yuv420p", "bt709", "limited", 1.5, None),
    ("yuv420p", "bt601", "limited", 1.5, None),
    ("yuv420p", "bt709", "full", 1.5, None),
    ("yuv420p10le", "bt709", "limited", 1.5, None),
    ("yuv420p10le", "bt601", "full", 1.5, None),
]


def _ffmpeg_rgb(path, matrix, rng) -> np.ndarray:
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        out = frame.reformat(
            format="rgb24",
            src_colorspace=SWS_MATRIX[matrix],
            src_color_range=SWS_RANGE[rng],
            dst_color_range="JPEG",
            interpolation=ACCURATE,
        )
        return out.to_ndarray().astype(np.float64)


def _first_frame(path):
    with open_video(path) as reader:
        return next(iter(reader))


@pytest.mark.parametrize(("pix_fmt", "matrix", "rng", "mean_tol", "max_tol"), CASES)
def test_rgb_matches_ffmpeg(tmp_path, pix_fmt, matrix, rng, mean_tol, max_tol):
    path = media.make_clip(
        tmp_path / "c.mkv", n_frames=2, pix_fmt=pix_fmt, colorspace=matrix, color_range=rng
    )
    frame = _first_frame(path)
    assert (frame.color.matrix, frame.color.range, frame.color.guessed) == (matrix, rng, False)
    ours = frames_to_rgb([frame])[0].permute(1, 2, 0).numpy().astype(np.float64) * 255.0
    diff = np.abs(ours - _ffmpeg_rgb(path, matrix, rng))
    assert diff.mean() <= mean_tol
    if max_tol is not None:
        assert diff.max() <= max_tol


def test_wrong_matrix_would_be_detected(tmp_path):
    # Guards the comparison itself: BT.601 pixels read as BT.709 must fail the tolerance.
    path = media.make_clip(tmp_path / "c.mkv", n_frames=2, pix_fmt="yuv444p", colorspace="bt601")
    frame = _first_frame(path)
    ours = frames_to_rgb([frame])[0].permute(1, 2, 0).numpy() * 255.0
    assert np.abs(ours - _ffmpeg_rgb(path, "bt709", "limited")).max() > 3.0


@pytest.mark.parametrize(("height", "matrix"), [(90, "bt601"), (720, "bt709")])
def test_untagged_default_rule(tmp_path, height, matrix):
    width = 1280 if height == 720 else 160
    path = media.make_clip(tmp_path / "u.mkv", n_frames=1, width=width, height=height)
    frame = _first_frame(path)
    assert frame.color.guessed
    assert (frame.color.matrix, frame.color.range) == (matrix, "limited")


def test_jpeg_pix_fmt_is_full_range(tmp_path):
    path = media.make_clip(tmp_path / "j.mkv", n_frames=1, pix_fmt="yuvj420p")
    assert _first_frame(path).color.range == "full"


def test_gray_and_rgb_inputs(tmp_path):
    gray = _first_frame(media.make_gray_clip(tmp_path / "g.mkv", n_frames=1, color_range="full"))
    rgb = frames_to_rgb([gray])
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2])
    expected = torch.from_numpy(gray.planes[0].astype(np.float32) / 255.0)
    assert torch.allclose(rgb[0, 0], expected, atol=1e-6)

    raw = _first_frame(media.make_raw_clip(tmp_path / "r.nut", "bgr24", n_frames=1))
    source = media.clip_frames_rgb(1)[0]
    got = (frames_to_rgb([raw])[0].permute(1, 2, 0).numpy() * 255.0).round()
    assert np.array_equal(got.astype(np.uint8), source)


def test_luma_code_values_and_thumbnails(tmp_path):
    path = media.make_10bit_clip(tmp_path / "t.mkv", n_frames=3)
    with open_video(path) as reader:
        frames = list(reader)
    luma = frames_to_luma(frames)
    assert luma.shape == (3, 90, 160) and luma.dtype == torch.float32
    assert torch.equal(luma[1], torch.from_numpy(frames[1].planes[0].astype(np.float32)))
    assert luma.max() > 255  # native 10-bit code values, not rescaled
    thumbs = luma_thumbnails(frames, size=(9, 16))
    assert thumbs.shape == (3, 9, 16)
    block = (luma[0, :10, :10].mean() - 64.0) / 876.0  # limited 10-bit: 64..940
    assert abs(float(thumbs[0, 0, 0]) - float(block)) < 1e-4


def test_mixed_batch_rejected(tmp_path):
    a = _first_frame(media.make_clip(tmp_path / "a.mkv", n_frames=1))
    b = _first_frame(media.make_clip(tmp_path / "b.mkv", n_frames=1, width=64, height=48))
    with pytest.raises(InvalidInputError):
        frames_to_rgb([a, b])
    with pytest.raises(InvalidInputError):
        frames_to_rgb([])


@pytest.mark.parametrize("pix_fmt", ["gbrp10le", "rgb48le", "rgba"])
def test_high_bit_and_alpha_rgb_match_8bit_rgb(tmp_path, pix_fmt):
    # Delivered as rgb24 and labelled so: luma (for PSNR) equals the rgb24 source's.
    src = _first_frame(media.make_raw_clip(tmp_path / "a.nut", "rgb24", n_frames=1))
    other = _first_frame(media.make_raw_clip(tmp_path / "b.nut", pix_fmt, n_frames=1))
    assert other.color == src.color and other.color.bit_depth == 8
    diff = (frames_to_luma([other]) - frames_to_luma([src])).abs()
    assert float(diff.max()) <= 1.0
    rgb = frames_to_rgb([other])[0].permute(1, 2, 0).numpy() * 255.0
    assert np.abs(rgb - media.clip_frames_rgb(1)[0]).max() <= 1.0 + 1e-3


def _save_png(path, picture: np.ndarray):
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = picture.shape[1], picture.shape[0], "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize(
    ("clip_kwargs", "matrix", "rng"),
    [
        ({}, "bt601", "limited"),  # untagged SD: the BT.601 guess
        ({"pix_fmt": "yuv420p10le"}, "bt601", "limited"),
        ({"colorspace": "bt709", "color_range": "full"}, "bt709", "full"),
        ({"colorspace": "bt2020", "color_range": "limited"}, "bt2020", "limited"),
    ],
    ids=["untagged-sd", "untagged-sd-10bit", "bt709-full", "bt2020-limited"],
)
def test_rgb_picture_against_yuv_video_uses_the_videos_matrix(tmp_path, clip_kwargs, matrix, rng):
    """A PNG reference against an encode of the same picture: Y must come from one matrix."""
    width, height = 320, 180
    png = _save_png(tmp_path / "ref.png", media.clip_frames_rgb(1, width, height)[0])
    video = media.make_clip(
        tmp_path / "enc.mkv", n_frames=1, width=width, height=height, crf=4, **clip_kwargs
    )
    picture, encoded = _first_frame(png), _first_frame(video)
    assert picture.color.matrix == "rgb"
    assert (encoded.color.matrix, encoded.color.range) == (matrix, rng)
    depth = encoded.color.bit_depth
    video_y = frames_to_luma([encoded])
    # RGB luma comes as 8-bit codes; deeper partners are compared after scaling, as the
    # pipeline does.
    scale = float(1 << (depth - 8))
    partner = {"rgb_matrix": encoded.color.matrix, "rgb_range": encoded.color.range}
    matched = psnr_y(video_y, scale * frames_to_luma([picture], **partner), depth).item()
    default = psnr_y(video_y, scale * frames_to_luma([picture]), depth).item()
    assert matched > 45.0, f"same picture, same matrix: {matched:.2f} dB"
    assert default < 40.0, f"the mismatch should show: {default:.2f} dB"
    thumbs = luma_thumbnails([picture], **partner)
    assert float((thumbs - luma_thumbnails([encoded])).abs().max()) < 0.01
    if (matrix, rng) == ("bt601", "limited"):
        mismatched = luma_thumbnails([picture])
        assert float((mismatched - luma_thumbnails([encoded])).abs().max()) > 0.05


def test_rgb_luma_defaults_and_bad_partner_tags(tmp_path):
    raw = _first_frame(media.make_raw_clip(tmp_path / "r.nut", "rgb24", n_frames=1))
    yuv = _first_frame(media.make_clip(tmp_path / "y.mkv", n_frames=1))
    default = frames_to_luma([raw])
    source = media.clip_frames_rgb(1)[0].astype(np.float64) / 255.0
    bt709 = 16.0 + 219.0 * (0.2126 * source[..., 0] + 0.7152 * source[..., 1])
    bt709 += 219.0 * 0.0722 * source[..., 2]
    assert np.abs(default[0].numpy() - bt709).max() < 1e-3  # limited-range BT.709 by default
    # An RGB partner has no matrix to lend: both sides keep the default.
    assert torch.equal(frames_to_luma([raw], rgb_matrix="rgb", rgb_range="full"), default)
    # A gray partner lends its range only.
    gray_full = frames_to_luma([raw], rgb_matrix="gray", rgb_range="full")
    assert torch.allclose(gray_full, (default - 16.0) * 255.0 / 219.0, atol=1e-3)
    # YUV frames return their own Y plane whatever the partner.
    assert torch.equal(
        frames_to_luma([yuv], rgb_matrix="bt2020", rgb_range="full"), frames_to_luma([yuv])
    )
    with pytest.raises(InvalidInputError, match="rgb_matrix"):
        frames_to_luma([raw], rgb_matrix="smpte170m")
    with pytest.raises(InvalidInputError, match="rgb_range"):
        luma_thumbnails([raw], rgb_matrix="bt601", rgb_range="tv")
