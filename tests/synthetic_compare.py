"""Synthetic CompareResults for the comparison page's tests, built directly (no video, no model).

Each encode's per-frame quality is a latent "dB" series: a level per scene of the source
(shared by every encode: the content), the encode's own gain, a per-scene effect of its own
(so encodes win some scenes and lose others), AR(1) frame noise and a few sharp dips. PSNR-Y
is the latent itself; SSIM-Y and the TOPIQ scores are monotone maps of it. Statistics come
from ``synthetic.stats``; the differences from :func:`topiq_video.stats.paired_difference`
and :func:`topiq_video.stats.overall`; the BD numbers from :mod:`topiq_video.bdrate` on the
encodes' own RD points, so every number on the page is what the library computes from the
rows. Gallery pictures are small generated JPEGs (a gradient, posterised by the encode's
quality, and the amplified difference). Test support only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from scipy.signal import lfilter
from synthetic import METRIC_INFO, TERMS, make_input, scene_starts, stats
from torchvision.io import encode_jpeg

from topiq_video.agreement import disagreement, metric_pair
from topiq_video.bdrate import bd_metric, bd_rate
from topiq_video.pipeline.options import ScoreOptions
from topiq_video.result import (
    Agreement,
    Alignment,
    BDEntry,
    CompareGalleryEntry,
    CompareReport,
    CompareResult,
    DisagreeFrame,
    EncodeComparison,
    EncodeResult,
    FramesTable,
    Interruption,
    MetricComparison,
    ModelInfo,
    Pairing,
    RDPoint,
    RunInfo,
    SceneDifference,
    SceneResult,
    SceneSpan,
)
from topiq_video.stats import overall, paired_difference

FPS = 25.0
RESAMPLES = 400
"""Bootstrap resamples (the library's default is 2000; fewer keep the tests fast)."""
GALLERY_SPACING_S = 1.0
PICTURE = (96, 54)  # width, height of the gallery pictures
CODECS = {"libx264": "h264", "libx265": "hevc", "libsvtav1": "av1", "libvpx-vp9": "vp9"}
STATS = ("mean", "p5")
DIFF_TINT = np.array([1.0, 0.6, 0.15])[:, None, None]  # a warm tint for difference pictures


@dataclass(frozen=True)
class Enc:
    """One synthetic encode. ``gain``: its mean quality above the content level, in dB;
    ``offset``: its frame number is the source's minus this; ``scored``: the fraction of
    the source it covers (less than 1 with an ``error``: it broke off); ``identical``:
    leading frames identical to the source (PSNR +inf)."""

    label: str
    encoder: str | None = "libx264"
    rate: float | None = 23.0
    gain: float = 0.0
    bitrate: float | None = 4_000_000.0
    offset: int = 0
    error: str | None = None
    scored: float = 1.0
    path: str | None = None
    identical: int = 0
    dips: int = 2


DEFAULT_ENCODES = (
    Enc("x264-crf23", "libx264", 23, 0.0, 4.2e6),
    Enc("x265-crf23", "libx265", 23, 0.6, 3.1e6, offset=2),
    Enc("x264-crf28", "libx264", 28, -2.4, 2.0e6),
)


def rd_ladder(
    encoders: Mapping[str, float] | None = None, crfs: Sequence[float] = (22, 27, 32, 37)
) -> tuple[Enc, ...]:
    """Encodes of several encoders at several CRFs: quality rises with the log of the
    bitrate; ``encoders`` maps an encoder to its bitrate factor (below 1: more efficient)."""
    encoders = encoders or {"libx264": 1.0, "libx265": 0.72}
    out = []
    for encoder, factor in encoders.items():
        for crf in crfs:
            # 6 CRF steps halve the rate; quality follows the rate the anchor would need.
            gain = 4.6 * (22 - crf) / 6
            bitrate = 6.0e6 * 2 ** ((22 - crf) / 6) * factor
            out.append(Enc(f"{encoder[3:]}-crf{crf:g}", encoder, crf, gain, bitrate))
    return tuple(out)


# ---------------------------------------------------------------------------- values


def metric_values(metric: str, z: np.ndarray) -> np.ndarray:
    """A metric from the latent dB series (+inf: identical to the source)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if metric == "psnr_y":
            return z.copy()
        if metric == "ssim_y":
            return np.where(np.isposinf(z), 1.0, np.clip(1 - 0.5 * 10 ** (-(z - 15) / 20), 0.01, 1))
        if metric in ("topiq_fr", "topiq_nr"):
            return np.where(np.isposinf(z), 1.0, 0.98 / (1 + np.exp(-(z - 31) / 4)))
        if metric == "vmaf":
            return np.where(np.isposinf(z), 100.0, 100.0 / (1 + np.exp(-(z - 30) / 3.5)))
    raise ValueError(f"no synthetic values for {metric!r}")


def _ar1(n: int, rng: np.random.Generator, phi: float = 0.85, sd: float = 0.45) -> np.ndarray:
    """Correlated frame noise: neighbouring frames score alike, as in real video."""
    shocks = rng.normal(0, sd * math.sqrt(1 - phi * phi), n)
    return lfilter([1.0], [1.0, -phi], shocks, zi=[phi * rng.normal(0, sd)])[0]


def _picture(quality: float | None, seed: int) -> np.ndarray:
    """A gradient 'source' frame (quality None), or it posterised to fewer levels the lower
    the quality; (3, H, W) floats in [0, 1]."""
    w, h = PICTURE
    hue = np.random.default_rng(seed).random(3)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    img = np.stack([xx * hue[0] + yy * (1 - hue[0]), (1 - xx) * hue[1] + yy * 0.3, xx * yy])
    img = np.clip(img + 0.15 * np.sin(xx * 12 + yy * 7 + hue[2] * 6), 0, 1)
    if quality is not None:
        levels = max(2, int(2 ** ((quality - 16) / 4)))
        img = np.round(img * levels) / levels
    return img


def _jpeg(img: np.ndarray) -> bytes:
    pixels = torch.from_numpy(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return encode_jpeg(pixels.contiguous(), quality=85).numpy().tobytes()


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)


# ---------------------------------------------------------------------------- the result


def make_compare(
    n_frames: int = 250,
    *,
    encodes: Sequence[Enc] = DEFAULT_ENCODES,
    baseline: str | None = None,
    metrics: Sequence[str] = ("topiq_fr", "psnr_y", "ssim_y"),
    n_scenes: int = 6,
    fps: float = FPS,
    seed: int = 0,
    resamples: int = RESAMPLES,
    gallery: int = 2,
    gallery_metrics: Sequence[str] | None = None,
    source_path: str = "/videos/source.mov",
    source_tags: Mapping[str, str] | None = None,
    warnings: Sequence[str] = (),
    interruption: Interruption | None = None,
    models: bool = True,
    scene_bd: bool = True,
    agreements: str | None = None,
    pictures_note: str = "the input file is no longer there",
) -> CompareResult:
    """A complete CompareResult over ``n_frames`` source frames.

    The baseline is ``baseline`` (a label) or the first encode. Failed encodes (``error``
    with ``scored == 0``) have no rows; a partial one (``error`` and ``0 < scored < 1``)
    keeps the rows it scored and is compared on them.

    VMAF is a monotone map of the latent plus noise of its own, so it mostly agrees with
    TOPIQ. ``agreements``: None for none; "pictures" for where TOPIQ and VMAF (or PSNR)
    disagree on each scored encode, as :func:`topiq_video.agreement.disagreement` finds it
    on the encode's rows, with pictures of the source, the encode and their difference;
    "missing" for the same without pictures but ``pictures_note``.
    """
    rng = np.random.default_rng(seed)
    baseline = baseline or encodes[0].label
    starts = scene_starts(n_frames, n_scenes, rng)
    ends = np.r_[starts[1:], n_frames]
    scene = np.zeros(n_frames, np.int64)
    scene[starts[1:]] = 1
    scene = np.cumsum(scene)
    spans = tuple(
        SceneSpan(i, int(a), int(b) - 1, a / fps, b / fps)
        for i, (a, b) in enumerate(zip(starts, ends, strict=True))
    )
    content = rng.normal(38.0, 3.0, len(spans))

    parts, results, latent = [], [], {}
    for k, enc in enumerate(encodes):
        covered = int(round(n_frames * enc.scored))
        ref_frame = np.arange(enc.offset, covered)
        effect = rng.normal(0, 0.9, len(spans))
        z = content[scene] + enc.gain + effect[scene] + _ar1(n_frames, rng)
        if enc.dips:
            at = rng.choice(n_frames, size=enc.dips, replace=False)
            z[at] -= rng.uniform(6, 10, enc.dips)
        z[: enc.identical] = np.inf
        z = z[ref_frame]
        latent[enc.label] = pd.Series(z, index=ref_frame)
        frame = ref_frame - enc.offset
        data = {
            "encode": enc.label,
            "frame": frame.astype(np.int64),
            "time": frame / fps,
            "ref_frame": ref_frame.astype(np.int64),
            "ref_time": ref_frame / fps,
            "scene": scene[ref_frame],
        }
        data |= {m: metric_values(m, z) for m in metrics}
        if "vmaf" in metrics:  # its own view of the frames: noise TOPIQ does not see
            own = rng.normal(0, 1.6, z.size) + rng.normal(0, 1.5, len(spans))[scene[ref_frame]]
            data["vmaf"] = metric_values("vmaf", z + own)
        part = pd.DataFrame(data)
        if len(part):
            parts.append(part)
        results.append(_encode_result(enc, part, metrics, spans, fps, n_frames, k))
    frames = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(
            {c: [] for c in ("encode", "frame", "time", "ref_frame", "ref_time", "scene", *metrics)}
        )
    )
    frames["encode"] = frames["encode"].astype(str)

    by_label = {label: part for label, part in frames.groupby("encode", sort=False)}
    comparisons = []
    base_rows = by_label.get(baseline)
    for enc in encodes:
        if enc.label == baseline or enc.label not in by_label or base_rows is None:
            continue
        comparisons.append(
            _comparison(
                enc.label, baseline, base_rows, by_label[enc.label], metrics, spans, resamples
            )
        )

    rd = tuple(
        RDPoint(
            r.label,
            r.encoder,
            r.rate,
            r.bitrate,
            {m: {s: getattr(r.summary[m], s) for s in STATS} for m in metrics if m in r.summary},
        )
        for r in results
        if r.frames_scored
    )
    bd = _bd_entries(rd, results, baseline, metrics, spans, scene_bd)
    images: dict[str, bytes] = {}
    entries = []
    for c in comparisons:
        for m in gallery_metrics if gallery_metrics is not None else metrics[:1]:
            entries += _gallery(c.label, baseline, m, by_label, gallery, fps, images, len(entries))

    found = {}
    if agreements is not None:
        found = _agreements(results, by_label, metrics, images, agreements, pictures_note)
    options = ScoreOptions(metrics=tuple(metrics), worst_n=10, gallery=gallery)
    source = make_input(source_path, n_frames=n_frames, fps=fps, metadata=source_tags)
    source = replace(source, codec="prores", container="mov,mp4,m4a,3gp,3g2,mj2")
    report = CompareReport(
        run=RunInfo(
            tool_version="0.1.0",
            created="2025-01-01T00:00:00+00:00",
            command=("topiq-video", "compare", "--ref", source_path, *(r.path for r in results)),
            duration_s=98.0,
            options=options,
        ),
        source=source,
        models=(
            ModelInfo(
                "topiq_fr",
                "FR",
                "KADID-10k",
                "cfanet_fr_kadid_res50.pth",
                "0" * 64,
                "cache",
                "fp16",
                "cuda:0",
                16,
                TERMS,
            ),
        )
        if models
        else (),
        metrics=tuple(METRIC_INFO[m] for m in metrics),
        baseline=baseline,
        encodes=tuple(results),
        scene_source="reference",
        scenes=spans,
        comparisons=tuple(comparisons),
        rd=rd,
        bd=bd,
        gallery=tuple(entries),
        warnings=tuple(warnings),
        interruption=interruption,
        frames=FramesTable("frames.parquet", len(frames), tuple(frames.columns)),
        agreements=found,
    )
    return CompareResult(report=report, frames=frames, images=images)


def _agreements(
    results: Sequence[EncodeResult],
    by_label: Mapping[str, pd.DataFrame],
    metrics: Sequence[str],
    images: dict[str, bytes],
    mode: str,
    note: str,
) -> dict[str, Agreement]:
    """Per scored encode, where TOPIQ and VMAF (or PSNR) disagree on its rows."""
    if mode not in ("pictures", "missing"):
        raise ValueError(f"agreements must be None, 'pictures' or 'missing', not {mode!r}")
    pair = metric_pair(metrics)
    assert pair is not None, f"no TOPIQ and other metric among {metrics}"
    out = {}
    for k, r in enumerate(results):
        rows = by_label.get(r.label)
        if rows is None or not len(rows):
            continue
        found = disagreement(rows.reset_index(drop=True), *pair, r.scenes)
        if mode == "missing":
            out[r.label] = replace(found, pictures_note=note)
            continue

        def named(f: DisagreeFrame, label: str = r.label, k: int = k) -> DisagreeFrame:
            stem = f"gallery/agree-{_slug(label)}-{f.frame}"
            src = _picture(None, 100 + f.frame)
            enc = _picture(24.0 + 4 * k, 100 + f.frame)
            pictures = {
                "ref": src,
                "dist": enc,
                "diff": np.clip(np.abs(enc - src).mean(0) * 4, 0, 1) * DIFF_TINT,
            }
            for role, pic in pictures.items():
                images[f"{stem}-{role}.jpg"] = _jpeg(pic)
            return replace(
                f,
                dist_image=f"{stem}-dist.jpg",
                ref_image=f"{stem}-ref.jpg",
                diff_image=f"{stem}-diff.jpg",
            )

        out[r.label] = replace(
            found,
            frames=tuple(named(f) for f in found.frames),
            scenes=tuple(
                replace(s, frame=None if s.frame is None else named(s.frame)) for s in found.scenes
            ),
        )
    return out


def _encode_result(
    enc: Enc,
    part: pd.DataFrame,
    metrics: Sequence[str],
    spans: Sequence[SceneSpan],
    fps: float,
    n_source: int,
    k: int,
) -> EncodeResult:
    path = enc.path or f"/videos/encodes/{enc.label}.mp4"
    n = len(part)
    if enc.error and n == 0:
        return EncodeResult(
            enc.label,
            path,
            enc.encoder,
            enc.rate,
            enc.error,
            None,
            None,
            None,
            None,
            None,
            (),
            0,
            {},
            (),
        )
    harmonic = {m: m not in ("psnr_y", "vmaf") for m in metrics}  # the others lie in (0, 1]
    scenes = []
    ref = part["ref_frame"].to_numpy()  # ascending
    frame = part["frame"].to_numpy()
    columns = {m: part[m].to_numpy(np.float64) for m in metrics}
    for s in spans:
        lo, hi = np.searchsorted(ref, [s.start_frame, s.end_frame + 1])
        if lo == hi:
            continue
        scenes.append(
            SceneResult(
                s.index,
                int(frame[lo]),
                int(frame[hi - 1]),
                s.start_time,
                s.end_time,
                int(hi - lo),
                {
                    m: stats(columns[m][lo:hi], harmonic=harmonic[m], vmaf=m == "vmaf")
                    for m in metrics
                },
            )
        )
    total = n_source - enc.offset
    duration = total / fps
    info = replace(
        make_input(path, n_frames=total, fps=fps),
        codec=CODECS.get(enc.encoder or "", "h264"),
        metadata={"encoder": f"Lavf61.7.100 {enc.encoder or ''}".strip()},
    )
    alignment = Alignment(
        offset_seconds=enc.offset / fps,
        offset_frames=float(enc.offset),
        ref_frame_duration=1 / fps,
        confidence=0.97,
        method="search",
        message=f"The encode starts {enc.offset} frames into the source.",
        search=None,
        pairing=Pairing(
            n, 0, 0, enc.offset, 0, 0, enc.error is None, "equal rate", {"equal rate": n}
        ),
        scaling="none",
        width=1280,
        height=720,
    )
    size = int(enc.bitrate * duration / 8) if enc.bitrate else None
    return EncodeResult(
        label=enc.label,
        path=path,
        encoder=enc.encoder,
        rate=enc.rate,
        error=enc.error,
        input=info,
        file_size=size,
        bitrate=enc.bitrate,
        duration=duration,
        alignment=alignment,
        warnings=(f"{enc.label} starts {enc.offset} frames after the source",)
        if enc.offset
        else (),
        frames_scored=n,
        summary={
            m: stats(part[m].to_numpy(), harmonic=harmonic[m], vmaf=m == "vmaf") for m in metrics
        },
        scenes=tuple(scenes),
    )


def _comparison(
    label: str,
    baseline: str,
    base: pd.DataFrame,
    other: pd.DataFrame,
    metrics: Sequence[str],
    spans: Sequence[SceneSpan],
    resamples: int,
) -> EncodeComparison:
    """The encode against the baseline on the source frames both scored."""
    joined = base.merge(other, on="ref_frame", suffixes=("_a", "_b")).sort_values("ref_frame")
    ref = joined["ref_frame"].to_numpy()
    out = []
    for m in metrics:
        a, b = joined[f"{m}_a"].to_numpy(np.float64), joined[f"{m}_b"].to_numpy(np.float64)
        whole = paired_difference(a, b, resamples=resamples)
        per_scene = []
        for s in spans:
            lo, hi = np.searchsorted(ref, [s.start_frame, s.end_frame + 1])
            per_scene.append(
                SceneDifference(s.index, paired_difference(a[lo:hi], b[lo:hi], resamples=resamples))
            )
        tally = overall(d.difference for d in per_scene)
        out.append(
            MetricComparison(
                m, whole, tuple(per_scene), tally.won, tally.tied, tally.lost, tally.no_data
            )
        )
    return EncodeComparison(label, baseline, tuple(out))


def _bd_entries(
    rd: Sequence[RDPoint],
    results: Sequence[EncodeResult],
    baseline: str,
    metrics: Sequence[str],
    spans: Sequence[SceneSpan],
    scene_bd: bool,
) -> tuple[BDEntry, ...]:
    """Every other encoder against the baseline's, per metric and statistic."""
    base_encoder = next((p.encoder for p in rd if p.label == baseline), None)
    if base_encoder is None:
        return ()
    curves: dict[str, list[RDPoint]] = {}
    for p in rd:
        if p.encoder is not None and p.bitrate is not None:
            curves.setdefault(p.encoder, []).append(p)
    scenes_of = {r.label: {s.index: s for s in r.scenes} for r in results}
    out = []
    for encoder, points in curves.items():
        if encoder == base_encoder:
            continue
        anchor = curves[base_encoder]
        for m in metrics:
            for stat in STATS:

                def curve(ps: list[RDPoint], m: str = m, stat: str = stat) -> tuple[list, list]:
                    return [p.bitrate for p in ps], [p.values[m][stat] for p in ps]

                (ra, qa), (rb, qb) = curve(anchor), curve(points)
                per_scene: tuple[tuple[int, float | None], ...] = ()
                if scene_bd and stat == "mean":
                    per_scene = tuple(
                        (s.index, _scene_bd(anchor, points, scenes_of, s.index, m)) for s in spans
                    )
                out.append(
                    BDEntry(
                        encoder,
                        base_encoder,
                        m,
                        stat,
                        bd_rate(ra, qa, rb, qb),
                        bd_metric(ra, qa, rb, qb),
                        per_scene,
                    )
                )
    return tuple(out)


def _scene_bd(
    anchor: list[RDPoint], test: list[RDPoint], scenes_of: dict, scene: int, metric: str
) -> float | None:
    def curve(ps: list[RDPoint]) -> tuple[list[float], list[float]]:
        rates, values = [], []
        for p in ps:
            s = scenes_of[p.label].get(scene)
            if s is not None and s.stats[metric].mean is not None:
                rates.append(p.bitrate)
                values.append(s.stats[metric].mean)
        return rates, values

    (ra, qa), (rb, qb) = curve(anchor), curve(test)
    if min(len(ra), len(rb)) < 2:
        return None
    return bd_rate(ra, qa, rb, qb).value


def _gallery(
    label: str,
    baseline: str,
    metric: str,
    by_label: Mapping[str, pd.DataFrame],
    n: int,
    fps: float,
    images: dict[str, bytes],
    seed: int,
) -> list[CompareGalleryEntry]:
    """The source frames where ``label`` and the baseline differ most (either way), spaced
    apart, as the engine picks them; the difference picture is between the two encodes."""
    joined = by_label[baseline].merge(by_label[label], on="ref_frame", suffixes=("_a", "_b"))
    a, b = joined[f"{metric}_a"].to_numpy(np.float64), joined[f"{metric}_b"].to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        gap = np.where(np.isfinite(a) & np.isfinite(b), np.abs(a - b), -np.inf)
    taken: list[int] = []
    for i in np.argsort(-gap, kind="stable"):
        if len(taken) >= n or not np.isfinite(gap[i]):
            break
        t = joined["ref_time_a"].iat[i]
        if all(abs(t - joined["ref_time_a"].iat[j]) >= GALLERY_SPACING_S for j in taken):
            taken.append(int(i))
    out = []
    for rank, i in enumerate(taken, 1):
        row = joined.iloc[i]
        stem = f"gallery/{_slug(label)}-{_slug(metric)}-{rank}"
        src = _picture(None, seed + rank)
        za = float(row["psnr_y_a"]) if "psnr_y_a" in row else 38.0
        zb = float(row["psnr_y_b"]) if "psnr_y_b" in row else 30.0
        enc_pic, base_pic = _picture(zb, seed + rank), _picture(za, seed + rank)
        pictures = {
            "source": src,
            "baseline": base_pic,
            "encode": enc_pic,
            "diff": np.clip(np.abs(enc_pic - base_pic).mean(0) * 4, 0, 1) * DIFF_TINT,
        }
        names = {role: f"{stem}-{role}.jpg" for role in pictures}
        for role, pic in pictures.items():
            images[names[role]] = _jpeg(pic)
        out.append(
            CompareGalleryEntry(
                label=label,
                baseline=baseline,
                metric=metric,
                rank=rank,
                ref_frame=int(row["ref_frame"]),
                time=int(row["ref_frame"]) / fps,
                scene=int(row["scene_a"]),
                value=float(b[i]),
                baseline_value=float(a[i]),
                images=names,
            )
        )
    return out
