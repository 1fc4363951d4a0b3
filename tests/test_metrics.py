"""psnr_y / ssim_y must agree with FFmpeg's psnr and ssim filters frame by frame."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from ffmpeg_ref import ffmpeg_psnr_y, ffmpeg_ssim_y

from topiq_video import metrics
from topiq_video.errors import InvalidInputError
from topiq_video.metrics import METRICS, MetricInfo, compute_metric, psnr_y, ssim_y

# FFmpeg hands its results to the metadata as float and prints six decimals, so the oracle is
# itself off by up to half a float step plus 5e-7. Measured worst deviations over every
# comparison in this file: 2.65e-6 dB (12-bit, 74 dB) and 5.3e-7; the tolerances sit just above.
PSNR_TOL_DB = 3e-6
SSIM_TOL = 6e-7
HEIGHT, WIDTH = 90, 161  # deliberately not multiples of 4 or 8


def _peak(bit_depth: int) -> int:
    return (1 << bit_depth) - 1


def _textured(rng: np.random.Generator, h: int, w: int, bit_depth: int) -> np.ndarray:
    """Natural-ish test picture: smooth shading, stripes, hard-edged patches and grain."""
    peak = _peak(bit_depth)
    coarse = torch.from_numpy(rng.random((1, 1, h // 8 + 2, w // 8 + 2)))
    smooth = torch.nn.functional.interpolate(
        coarse, size=(h, w), mode="bicubic", align_corners=False
    )[0, 0].numpy()
    yy, xx = np.mgrid[0:h, 0:w]
    freq = rng.uniform(0.1, 0.6)
    stripes = 0.5 + 0.5 * np.sin(freq * xx + 0.3 * freq * yy + rng.uniform(0, 6))
    img = 0.55 * smooth + 0.25 * stripes
    for _ in range(4):
        y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        img[y0 : y0 + rng.integers(3, h // 2), x0 : x0 + rng.integers(3, w // 2)] = rng.random()
    img = img + rng.normal(0.0, 0.03, (h, w))
    return np.clip(np.round(img * peak), 0, peak).astype(np.int64)


def _box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    t = torch.from_numpy(img.astype(np.float64))[None, None]
    t = torch.nn.functional.pad(t, (radius,) * 4, mode="replicate")
    out = torch.nn.functional.avg_pool2d(t, 2 * radius + 1, stride=1)[0, 0].numpy()
    return np.round(out).astype(np.int64)


def _dct_matrix(n: int = 8) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


def _jpeg_like(img: np.ndarray, bit_depth: int, step: float) -> np.ndarray:
    """8x8 block DCT with frequency-dependent quantisation, like a baseline JPEG luma pass."""
    h, w = img.shape
    ph, pw = -h % 8, -w % 8
    padded = np.pad(img.astype(np.float64), ((0, ph), (0, pw)), mode="edge")
    blocks = padded.reshape(padded.shape[0] // 8, 8, padded.shape[1] // 8, 8).transpose(0, 2, 1, 3)
    d = _dct_matrix()
    coeffs = d @ blocks @ d.T
    q = step * (1 + np.add.outer(np.arange(8), np.arange(8))) * (_peak(bit_depth) / 255)
    rec = d.T @ (np.round(coeffs / q) * q) @ d
    rec = rec.transpose(0, 2, 1, 3).reshape(padded.shape)[:h, :w]
    return np.clip(np.round(rec), 0, _peak(bit_depth)).astype(np.int64)


def _degradations(
    rng: np.random.Generator, ref: np.ndarray, bit_depth: int
) -> list[tuple[str, np.ndarray]]:
    peak = _peak(bit_depth)
    noise = ref + np.round(rng.normal(0.0, 0.02 * peak, ref.shape)).astype(np.int64)
    return [
        ("noise", np.clip(noise, 0, peak)),
        ("light_noise", np.clip(ref + rng.integers(-1, 2, ref.shape), 0, peak)),
        ("blur", _box_blur(ref, 1)),
        ("heavy_blur", _box_blur(ref, 4)),
        ("jpeg_q_high", _jpeg_like(ref, bit_depth, 2.0)),
        ("jpeg_q_low", _jpeg_like(ref, bit_depth, 12.0)),
        ("gain_offset", np.clip(np.round(ref * 0.85 + 0.05 * peak), 0, peak).astype(np.int64)),
        ("posterize", (ref // (peak // 7 + 1)) * (peak // 7 + 1)),
        ("unrelated", _textured(rng, *ref.shape, bit_depth)),
    ]


def _pairs(bit_depth: int, h: int, w: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Distorted and reference planes (N, H, W) of int64 code values, plus distortion names."""
    rng = np.random.default_rng(seed)
    names, dist, ref = [], [], []
    peak = _peak(bit_depth)
    for contrast in (1.0, 1.0, 0.08):
        # The low-contrast picture has variances near SSIM's c2, where the constants matter.
        r = _textured(rng, h, w, bit_depth)
        r = np.round(peak / 2 + (r - peak / 2) * contrast).astype(np.int64)
        for name, d in _degradations(rng, r, bit_depth):
            names.append(name)
            dist.append(d)
            ref.append(r)
    return names, np.stack(dist), np.stack(ref)


def _np_dtype(bit_depth: int) -> type:
    return np.uint8 if bit_depth == 8 else np.uint16


def _ours_and_ffmpeg(bit_depth: int, h: int, w: int, seed: int):
    names, dist, ref = _pairs(bit_depth, h, w, seed)
    dt = _np_dtype(bit_depth)
    ff_psnr = ffmpeg_psnr_y(list(dist.astype(dt)), list(ref.astype(dt)), bit_depth)
    ff_ssim = ffmpeg_ssim_y(list(dist.astype(dt)), list(ref.astype(dt)), bit_depth)
    dist_t = torch.from_numpy(dist).float()
    ref_t = torch.from_numpy(ref).float()
    return (
        names,
        psnr_y(dist_t, ref_t, bit_depth),
        ssim_y(dist_t, ref_t, bit_depth),
        ff_psnr,
        ff_ssim,
    )


@pytest.fixture(scope="module", params=[8, 10, 12], ids=lambda b: f"{b}bit")
def compared(request: pytest.FixtureRequest):
    return _ours_and_ffmpeg(request.param, HEIGHT, WIDTH, seed=request.param)


def test_psnr_matches_ffmpeg(compared) -> None:
    names, ours, _, ff, _ = compared
    assert ours.shape == (len(names),)
    assert np.all(np.isfinite(ff)), "test pairs must all differ"
    dev = np.abs(ours.numpy() - ff)
    worst = int(dev.argmax())
    assert dev.max() <= PSNR_TOL_DB, f"{names[worst]}: ours {ours[worst]:.4f} vs ffmpeg {ff[worst]}"
    # The distortions must span a useful range, or the comparison proves little.
    assert ff.min() < 20 and ff.max() > 40


def test_ssim_matches_ffmpeg(compared) -> None:
    names, _, ours, _, ff = compared
    assert ours.shape == (len(names),)
    dev = np.abs(ours.numpy() - ff)
    worst = int(dev.argmax())
    assert dev.max() <= SSIM_TOL, f"{names[worst]}: ours {ours[worst]:.6f} vs ffmpeg {ff[worst]}"
    assert ff.min() < 0.5 and ff.max() > 0.95


@pytest.mark.parametrize(
    "work_pixels",
    [
        4 * WIDTH,  # 4-row strips: each SSIM strip still spans two block rows (8 rows)
        9 * WIDTH,  # strips whose height is not a multiple of the SSIM block
        40 * WIDTH,  # a few strips per frame, the last one short
        4 * HEIGHT * WIDTH,  # whole frames, four at a time, the last group short
    ],
)
def test_strips_and_frame_groups_change_nothing(
    monkeypatch: pytest.MonkeyPatch, work_pixels: int
) -> None:
    """The pieces psnr_y/ssim_y work in (strips, groups of frames) must not show in results."""
    bit_depth = 10
    _, dist, ref = _pairs(bit_depth, HEIGHT, WIDTH, seed=bit_depth)
    d, r = torch.from_numpy(dist).float(), torch.from_numpy(ref).float()
    whole = psnr_y(d, r, bit_depth), ssim_y(d, r, bit_depth)
    assert HEIGHT * WIDTH * len(d) <= metrics.WORK_PIXELS  # the default takes all in one step
    monkeypatch.setattr(metrics, "WORK_PIXELS", work_pixels)
    pieces = psnr_y(d, r, bit_depth), ssim_y(d, r, bit_depth)
    assert torch.equal(pieces[0], whole[0]) and torch.equal(pieces[1], whole[1])
    dt = _np_dtype(bit_depth)
    planes = list(dist.astype(dt)), list(ref.astype(dt))
    assert np.abs(pieces[0].numpy() - ffmpeg_psnr_y(*planes, bit_depth)).max() <= PSNR_TOL_DB
    assert np.abs(pieces[1].numpy() - ffmpeg_ssim_y(*planes, bit_depth)).max() <= SSIM_TOL


@pytest.mark.parametrize(("h", "w"), [(8, 8), (11, 13), (23, 8), (47, 66)])
def test_edge_handling_matches_ffmpeg_on_odd_sizes(h: int, w: int) -> None:
    _, p_ours, s_ours, p_ff, s_ff = _ours_and_ffmpeg(8, h, w, seed=h * 1000 + w)
    np.testing.assert_allclose(p_ours.numpy(), p_ff, atol=PSNR_TOL_DB)
    np.testing.assert_allclose(s_ours.numpy(), s_ff, atol=SSIM_TOL)


def test_luma_of_full_yuv420p10_frames_matches_ffmpeg() -> None:
    """Chroma must not leak into the Y results: FFmpeg sees real 4:2:0 frames here."""
    rng = np.random.default_rng(7)
    h, w = 48, 64
    ref_y = _textured(rng, h, w, 10)
    dist_y = _jpeg_like(ref_y, 10, 6.0)
    chroma = rng.integers(0, 1024, (2, h // 2, w // 2))

    def frame(y: np.ndarray, c: np.ndarray) -> av.VideoFrame:
        packed = np.concatenate([y.reshape(-1), c[0].reshape(-1), c[1].reshape(-1)])
        return av.VideoFrame.from_ndarray(
            packed.astype(np.uint16).reshape(h * 3 // 2, w), format="yuv420p10le"
        )

    dist_f = [frame(dist_y, chroma[::-1])]  # swapped chroma: only Y may be compared
    ref_f = [frame(ref_y, chroma)]
    ours_p = psnr_y(
        torch.from_numpy(dist_y)[None].float(), torch.from_numpy(ref_y)[None].float(), 10
    )
    ours_s = ssim_y(
        torch.from_numpy(dist_y)[None].float(), torch.from_numpy(ref_y)[None].float(), 10
    )
    assert abs(ours_p.item() - ffmpeg_psnr_y(dist_f, ref_f, 10)[0]) <= PSNR_TOL_DB
    assert abs(ours_s.item() - ffmpeg_ssim_y(dist_f, ref_f, 10)[0]) <= SSIM_TOL


@pytest.mark.parametrize("bit_depth", [14, 16])
def test_extreme_codes_at_14_and_16_bit_match_ffmpeg(bit_depth: int) -> None:
    """The largest codes and errors: 14-bit is the deepest that works in int32, 16-bit in int64."""
    rng = np.random.default_rng(bit_depth)
    peak = _peak(bit_depth)
    ref = _textured(rng, 40, 56, bit_depth)
    ref[:8] = peak  # some windows at the very top of the range
    dist = np.stack([peak - ref, np.zeros_like(ref), _jpeg_like(ref, bit_depth, 3.0)])
    ref = np.stack([ref, np.full_like(ref, peak), ref])

    def frames(planes: np.ndarray) -> list[av.VideoFrame]:
        fmt = f"gray{bit_depth}le"
        return [av.VideoFrame.from_ndarray(p.astype(np.uint16), format=fmt) for p in planes]

    d, r = torch.from_numpy(dist).float(), torch.from_numpy(ref).float()
    ours_p, ours_s = psnr_y(d, r, bit_depth).numpy(), ssim_y(d, r, bit_depth).numpy()
    ff_p = ffmpeg_psnr_y(frames(dist), frames(ref), bit_depth)
    ff_s = ffmpeg_ssim_y(frames(dist), frames(ref), bit_depth)
    assert ff_p[1] == 0.0 and ff_s[1] < 1e-3 and ff_s[2] > 0.9  # the cases are the intended ones
    assert np.abs(ours_p - ff_p).max() <= PSNR_TOL_DB
    assert np.abs(ours_s - ff_s).max() <= SSIM_TOL


@pytest.mark.parametrize("bit_depth", [8, 10])
def test_identical_frames_give_inf_psnr_and_unit_ssim(bit_depth: int) -> None:
    rng = np.random.default_rng(3)
    ref = torch.from_numpy(np.stack([_textured(rng, 40, 52, bit_depth) for _ in range(3)])).float()
    p = psnr_y(ref.clone(), ref, bit_depth)
    s = ssim_y(ref.clone(), ref, bit_depth)
    assert torch.all(torch.isposinf(p))
    assert torch.all((s - 1.0).abs() <= 1e-6)
    # FFmpeg says the same, so +inf is its convention and not ours.
    planes = list(ref.numpy().astype(_np_dtype(bit_depth)))
    assert np.all(np.isposinf(ffmpeg_psnr_y(planes, planes, bit_depth)))


# Runs in a fresh interpreter: prints the peak-RSS growth (MiB) after psnr_y + ssim_y on one
# 2160p frame, then after the same on a batch of MEMORY_BATCH such frames. The batch is one stored
# frame expanded, so the input costs one frame and the growth is the functions' own memory.
_MEMORY_PROBE = """
import resource, sys
import torch
from topiq_video.metrics import psnr_y, ssim_y

torch.set_num_threads(1)
h, w, batch = 2160, 3840, int(sys.argv[1])
ref = torch.empty(1, h, w).random_(0, 1024)
dist = torch.empty_like(ref).random_(0, 7).sub_(3).add_(ref).clamp_(0, 1023)
unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20

psnr_y(dist[:, :16], ref[:, :16], 10), ssim_y(dist[:, :16], ref[:, :16], 10)  # warm up
base = peak_mib()
growth = []
for n in (1, batch):
    d, r = dist.expand(n, h, w), ref.expand(n, h, w)
    psnr_y(d, r, 10), ssim_y(d, r, 10)
    growth.append(peak_mib() - base)
print(*growth)
"""
MEMORY_BATCH = 3
MEMORY_PER_FRAME_MIB = 64  # measured ~25; an int64 copy of one 2160p frame alone is 63
MEMORY_BATCH_SLACK_MIB = 8  # measured 0-2; the former code needed ~320 more per extra frame


def test_memory_is_bounded_per_frame_and_independent_of_batch() -> None:
    env = dict(os.environ)
    # Big blocks come from mmap and go back on free, so the peak RSS follows the live
    # tensors rather than how much heap glibc chose to keep around.
    env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(metrics.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
    )
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(MEMORY_BATCH)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    one, batch = (float(x) for x in done.stdout.split())
    assert one <= MEMORY_PER_FRAME_MIB, f"one 2160p frame took {one:.0f} MiB"
    assert batch - one <= MEMORY_BATCH_SLACK_MIB, (
        f"{MEMORY_BATCH} frames took {batch:.0f} MiB, one took {one:.0f} MiB"
    )


def test_peak_follows_bit_depth() -> None:
    # One 8-bit code step of error everywhere: PSNR is 20*log10(peak) for each depth.
    ref = torch.full((1, 16, 16), 100.0)
    assert psnr_y(ref + 1, ref, 8).item() == pytest.approx(20 * math.log10(255), abs=1e-9)
    assert psnr_y(ref + 1, ref, 10).item() == pytest.approx(20 * math.log10(1023), abs=1e-9)


def test_batch_is_frame_independent() -> None:
    _, dist, ref = _pairs(8, 33, 41, seed=11)
    d, r = torch.from_numpy(dist).float(), torch.from_numpy(ref).float()
    batched = ssim_y(d, r, 8)
    single = torch.cat([ssim_y(d[i : i + 1], r[i : i + 1], 8) for i in range(len(d))])
    torch.testing.assert_close(batched, single)


def test_registry_and_dispatch() -> None:
    assert set(METRICS) == {"psnr_y", "ssim_y"}
    assert METRICS["psnr_y"] == MetricInfo(
        "psnr_y", "dB", True, (0.0, math.inf), METRICS["psnr_y"].description
    )
    assert METRICS["ssim_y"].higher_is_better
    with pytest.raises(AttributeError):
        METRICS["psnr_y"].unit = "x"  # type: ignore[misc]
    a = torch.zeros(2, 16, 16)
    b = torch.full((2, 16, 16), 3.0)
    torch.testing.assert_close(compute_metric("psnr_y", a, b, 8), psnr_y(a, b, 8))
    torch.testing.assert_close(compute_metric("ssim_y", a, b, 8), ssim_y(a, b, 8))


def test_unknown_metric_lists_valid_names() -> None:
    a = torch.zeros(1, 16, 16)
    with pytest.raises(InvalidInputError, match="psnr_y, ssim_y"):
        compute_metric("vmaf", a, a, 8)


@pytest.mark.parametrize(
    ("dist_shape", "ref_shape", "match"),
    [
        ((2, 16, 16), (2, 16, 17), "same shape"),
        ((2, 16, 16), (3, 16, 16), "same shape"),
        ((16, 16), (16, 16), r"\(N, H, W\)"),
    ],
)
@pytest.mark.parametrize("name", ["psnr_y", "ssim_y"])
def test_bad_shapes_raise(dist_shape, ref_shape, match, name: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        compute_metric(name, torch.zeros(dist_shape), torch.zeros(ref_shape), 8)


def test_bad_bit_depth_and_tiny_plane_raise() -> None:
    a = torch.zeros(1, 16, 16)
    with pytest.raises(InvalidInputError, match="bit_depth"):
        psnr_y(a, a, 7)
    with pytest.raises(InvalidInputError, match="at least 8x8"):
        ssim_y(torch.zeros(1, 7, 16), torch.zeros(1, 7, 16), 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    _, dist, ref = _pairs(10, HEIGHT, WIDTH, seed=5)
    d, r = torch.from_numpy(dist).float(), torch.from_numpy(ref).float()
    for fn in (psnr_y, ssim_y):
        on_gpu = fn(d.cuda(), r.cuda(), 10)
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), fn(d, r, 10), rtol=0, atol=1e-9)
