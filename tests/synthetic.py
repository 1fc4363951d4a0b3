"""Synthetic ScoreResults for renderer tests, built directly (no video, no model).

Scores are seeded random series with per-scene levels, a few sharp dips and optional
non-finite values; every statistic is computed here with numpy under the conventions the
report states (finite values only, linear-interpolated percentiles, population std, harmonic
mean only for values in (0, 1], NaN/+inf/-inf counted). Gallery pictures are tiny solid-colour
JPEGs. Test support only: nothing here is imported by the package.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torchvision.io import encode_jpeg

from topiq_video.agreement import disagreement, metric_pair
from topiq_video.pipeline.options import FrameSelection, ScoreOptions
from topiq_video.result import (
    Agreement,
    Alignment,
    DecodeSummary,
    DisagreeFrame,
    FramesTable,
    GalleryEntry,
    InputInfo,
    Interruption,
    MetricInfo,
    MetricStats,
    ModelInfo,
    OffsetSearch,
    Pairing,
    PerSecond,
    Report,
    RunInfo,
    SceneResult,
    ScoreResult,
    WorstFrame,
    nonfinite_flag,
)
from topiq_video.video.probe import ColorInfo

FPS = 25.0
PERCENTILES = (1, 5, 10, 50)
GALLERY_SPACING_S = 1.0
TERMS = "Weights: non-commercial use only (synthetic terms for tests)."

METRIC_INFO = {
    "psnr_y": MetricInfo("psnr_y", "dB", True, (0.0, None), "PSNR of luma, as FFmpeg's psnr"),
    "ssim_y": MetricInfo("ssim_y", None, True, (0.0, 1.0), "SSIM of luma, as FFmpeg's ssim"),
    "topiq_fr": MetricInfo("topiq_fr", None, True, (0.0, 1.0), "TOPIQ full-reference score"),
    "topiq_nr": MetricInfo("topiq_nr", None, True, (0.0, 1.0), "TOPIQ no-reference score"),
    "vmaf": MetricInfo("vmaf", "", True, (0.0, 100.0), "VMAF (libvmaf through FFmpeg)"),
}
# level, spread between scenes, frame noise, dip depth, clip range
_SHAPES = {
    "psnr_y": (38.0, 3.0, 0.6, 12.0, (0.0, 99.0)),
    "ssim_y": (0.96, 0.02, 0.004, 0.25, (0.0, 1.0)),
    "topiq_fr": (0.72, 0.06, 0.01, 0.4, (0.001, 1.0)),
    "topiq_nr": (0.62, 0.08, 0.012, 0.4, (0.001, 1.0)),
    "vmaf": (92.0, 4.0, 1.5, 45.0, (0.0, 100.0)),
}
VMAF_METRICS = ("vmaf",)


# ---------------------------------------------------------------------------- statistics


def stats(values: np.ndarray, *, harmonic: bool, vmaf: bool = False) -> MetricStats:
    """Statistics of finite values; non-finite ones counted. ``vmaf``: the harmonic mean on
    VMAF's 0-100 scale (values above 0) and libvmaf's (harmonic mean of value + 1, minus 1)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    counts = (
        int(np.isnan(values).sum()),
        int(np.isposinf(values).sum()),
        int(np.isneginf(values).sum()),
    )
    if finite.size == 0:
        return MetricStats(0, *([None] * 9), *counts)
    p1, p5, p10, median = (float(v) for v in np.percentile(finite, PERCENTILES))
    hmean = float(finite.size / np.sum(1.0 / finite)) if harmonic else None
    shifted = None
    if vmaf:
        hmean = float(finite.size / np.sum(1.0 / finite)) if np.all(finite > 0) else None
        shifted = float(finite.size / np.sum(1.0 / (finite + 1.0)) - 1.0)
    return MetricStats(
        int(finite.size),
        float(finite.mean()),
        hmean,
        float(finite.min()),
        p1,
        p5,
        p10,
        median,
        float(finite.max()),
        float(finite.std()),
        *counts,
        shifted_harmonic_mean=shifted,
    )


def worst_frames(frames: pd.DataFrame, metric: str, n: int) -> tuple[WorstFrame, ...]:
    """The n lowest values (NaN left out, -inf first, ties in frame order)."""
    values = frames[metric].to_numpy(np.float64)
    rows = np.flatnonzero(~np.isnan(values))
    order = rows[np.argsort(values[rows], kind="stable")][:n]
    out = []
    for i in order:
        v = float(values[i])
        finite = math.isfinite(v)
        out.append(
            WorstFrame(
                int(frames["frame"].iat[i]),
                float(frames["time"].iat[i]),
                v if finite else None,
                None if finite else nonfinite_flag(v),
            )
        )
    return tuple(out)


# ---------------------------------------------------------------------------- pieces


def solid_jpeg(rgb: Sequence[int], width: int = 32, height: int = 18) -> bytes:
    """A tiny solid-colour JPEG."""
    pixels = torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1).expand(3, height, width)
    with warnings.catch_warnings():  # torchvision announces a future move of its codecs
        warnings.simplefilter("ignore", DeprecationWarning)
        return encode_jpeg(pixels.contiguous(), quality=90).numpy().tobytes()


def make_input(
    path: str, *, n_frames: int, fps: float, metadata: Mapping[str, str] | None = None
) -> InputInfo:
    return InputInfo(
        path=path,
        container="mov,mp4,m4a,3gp,3g2,mj2",
        codec="h264",
        width=1280,
        height=720,
        pix_fmt="yuv420p",
        bit_depth=8,
        fps=fps,
        fps_exact=f"{int(fps)}/1",
        time_base="1/12800",
        start_time=0.0,
        duration=n_frames / fps,
        frame_count=n_frames,
        color=ColorInfo("bt709", "limited", "bt709", "bt709", 8, guessed=False),
        rotation=0,
        scan_type="progressive",
        is_vfr=False,
        is_live=False,
        metadata=dict(metadata or {}),
        decode=DecodeSummary(frames_decoded=n_frames),
    )


def make_values(
    metric: str, scene: np.ndarray, rng: np.random.Generator, *, dips: int
) -> np.ndarray:
    """A plausible per-frame series: a level per scene, noise, and single-frame dips."""
    level, spread, noise, depth, (lo, hi) = _SHAPES[metric]
    n = scene.size
    per_scene = level + rng.normal(0, spread, int(scene.max()) + 1)
    values = per_scene[scene] + rng.normal(0, noise, n)
    if dips and n > 2:
        at = rng.choice(np.arange(1, n - 1), size=min(dips, n - 2), replace=False)
        values[at] -= depth * rng.uniform(0.6, 1.0, at.size)
    return np.clip(values, lo, hi)


def scene_starts(n_rows: int, n_scenes: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices where scenes start (first is 0), of uneven lengths."""
    n_scenes = max(1, min(n_scenes, n_rows))
    if n_scenes == 1:
        return np.array([0])
    cuts = np.sort(rng.choice(np.arange(1, n_rows), size=n_scenes - 1, replace=False))
    return np.concatenate([[0], cuts])


# ---------------------------------------------------------------------------- the result


def make_result(
    n_frames: int = 240,
    *,
    metrics: Sequence[str] = ("psnr_y", "ssim_y"),
    full_reference: bool = True,
    n_scenes: int = 5,
    fps: float = FPS,
    every: int = 1,
    seed: int = 0,
    dips: int = 3,
    values: Mapping[str, np.ndarray] | None = None,
    gallery: int = 2,
    worst_n: int = 10,
    scene_scores: bool = True,
    dist_path: str = "/videos/encode.mp4",
    ref_path: str = "/videos/source.mov",
    title: str | None = "Sample",
    tags: Mapping[str, str] | None = None,
    warnings: Sequence[str] = (),
    credits: str | None = None,
    interruption: Interruption | None = None,
    conversion: str = "equal rate",
    models: bool = True,
    agreement: str | None = None,
    pictures_note: str = "the input file is no longer there",
) -> ScoreResult:
    """A complete ScoreResult of ``n_frames`` scored rows (frames 0, every, 2*every, ...).

    ``values`` replaces generated metric columns (same length). ``gallery`` pictures per
    metric are taken among the worst frames at least GALLERY_SPACING_S apart, as the
    pipeline does, so adjacent worst frames are not all in the gallery.

    ``agreement``: None for none; "pictures" for where TOPIQ and VMAF (or PSNR) disagree,
    as :func:`topiq_video.agreement.disagreement` finds it on these rows, with a picture of
    each frame it shows; "missing" for the same without pictures but ``pictures_note``.
    """
    rng = np.random.default_rng(seed)
    rows = np.arange(n_frames)
    frame = rows * every
    time = frame / fps
    starts = scene_starts(n_frames, n_scenes, rng)
    scene = np.zeros(n_frames, dtype=np.int64)
    scene[starts[1:]] = 1
    scene = np.cumsum(scene)
    data: dict[str, object] = {"frame": frame.astype(np.int64), "time": time}
    if full_reference:
        data["ref_frame"] = pd.array(frame + 2, dtype="Int64")
        data["ref_time"] = (frame + 2) / fps
    data["scene"] = scene
    if scene_scores:
        score = np.abs(rng.normal(4.0, 2.0, n_frames))
        score[starts[1:]] = rng.uniform(30.0, 60.0, starts.size - 1)
        score[0] = np.nan  # the first frame has nothing to compare with
        data["scene_score"] = score
    for m in metrics:
        column = values.get(m) if values else None
        topiq = next((data[t] for t in ("topiq_fr", "topiq_nr") if t in data), None)
        if column is not None:
            data[m] = np.asarray(column, np.float64)
        elif m in VMAF_METRICS and topiq is not None:
            # Mostly TOPIQ's verdict on another scale, with its own noise and dips, so the
            # two agree overall and part ways on a few frames.
            own = make_values(m, scene, rng, dips=dips) - _SHAPES[m][0]
            data[m] = np.clip(47.0 + 60.0 * np.asarray(topiq) + own, 0.0, 100.0)
        else:
            data[m] = make_values(m, scene, rng, dips=dips)
    frames = pd.DataFrame(data)

    harmonic = {}
    for m in metrics:
        finite = frames[m].to_numpy(np.float64)
        finite = finite[np.isfinite(finite)]
        harmonic[m] = finite.size > 0 and bool(np.all((finite > 0) & (finite <= 1)))
    ends = np.concatenate([starts[1:], [n_frames]])
    scenes = []
    for index, (a, b) in enumerate(zip(starts, ends, strict=True)):
        part = frames.iloc[a:b]
        last_source_frame = int(frame[b]) - 1 if b < n_frames else int(frame[-1]) + every - 1
        scenes.append(
            SceneResult(
                index=index,
                start_frame=int(frame[a]),
                end_frame=last_source_frame,
                start_time=float(time[a]),
                end_time=(last_source_frame + 1) / fps,
                frame_count=int(b - a),
                stats={
                    m: stats(part[m].to_numpy(), harmonic=harmonic[m], vmaf=m in VMAF_METRICS)
                    for m in metrics
                },
            )
        )
    summary = {
        m: stats(frames[m].to_numpy(), harmonic=harmonic[m], vmaf=m in VMAF_METRICS)
        for m in metrics
    }
    worst = {m: worst_frames(frames, m, worst_n) for m in metrics}
    worst_scenes = {
        m: tuple(
            s.index
            for s in sorted(
                (s for s in scenes if s.stats[m].mean is not None),
                key=lambda s, m=m: (s.stats[m].mean, s.index),
            )
        )
        for m in metrics
    }

    entries, images = [], {}
    palette = [(200, 40, 40), (40, 160, 90), (40, 90, 200), (220, 180, 30)]
    for m in metrics:
        taken: list[WorstFrame] = []
        for w in worst[m]:
            if len(taken) >= gallery:
                break
            if any(abs(w.time - t.time) < GALLERY_SPACING_S for t in taken):
                continue
            taken.append(w)
        for rank, w in enumerate(taken, 1):
            stem = f"gallery/{m}-{rank}"
            names = {"dist": f"{stem}-dist.jpg"}
            if full_reference:
                names |= {"ref": f"{stem}-ref.jpg", "diff": f"{stem}-diff.jpg"}
            for k, name in enumerate(names.values()):
                images[name] = solid_jpeg(palette[(rank + k) % len(palette)])
            entries.append(
                GalleryEntry(
                    metric=m,
                    rank=rank,
                    frame=w.frame,
                    time=w.time,
                    value=w.value,
                    value_nonfinite=w.value_nonfinite,
                    ref_frame=w.frame + 2 if full_reference else None,
                    ref_time=(w.frame + 2) / fps if full_reference else None,
                    dist_image=names["dist"],
                    ref_image=names.get("ref"),
                    diff_image=names.get("diff"),
                    width=32,
                    height=18,
                )
            )

    total_source = int(frame[-1]) + every if n_frames else 0
    dist_tags = {"title": title} if title is not None else {}
    dist_tags |= dict(tags or {})
    inputs = {"dist": make_input(dist_path, n_frames=total_source, fps=fps, metadata=dist_tags)}
    alignment = None
    if full_reference:
        inputs["ref"] = make_input(ref_path, n_frames=total_source + 2, fps=fps)
        offsets = tuple(round(k * 0.04, 2) for k in range(-5, 6))
        costs = tuple(None if k == -5 else abs(k - 2) * 0.1 + 0.05 for k in range(-5, 6))
        alignment = Alignment(
            offset_seconds=0.08,
            offset_frames=2.0,
            ref_frame_duration=1 / fps,
            confidence=0.93,
            method="search",
            message="The encode starts 2 frames into the source.",
            search=OffsetSearch(offsets, costs),
            pairing=Pairing(
                paired=n_frames,
                dist_before=0,
                dist_after=0,
                ref_before=2,
                ref_after=0,
                ref_skipped=0,
                complete=interruption is None,
                conversion=conversion,
                conversion_counts={conversion: n_frames},
            ),
            scaling="none",
            width=1280,
            height=720,
        )
    found = None
    if agreement is not None:
        pair = metric_pair(metrics)
        assert pair is not None, f"no TOPIQ and other metric among {metrics}"
        found = disagreement(frames, *pair, scenes)
        if agreement == "pictures":
            found = _with_pictures(found, images, full_reference)
        elif agreement == "missing":
            found = dataclasses.replace(found, pictures_note=pictures_note)
        else:
            raise ValueError(f"agreement must be None, 'pictures' or 'missing', not {agreement!r}")
    model_name = "topiq_fr" if full_reference else "topiq_nr"
    model_list = (
        (
            ModelInfo(
                name=model_name,
                mode="FR" if full_reference else "NR",
                train_set="KADID-10k" if full_reference else "KonIQ-10k",
                weights_file=f"cfanet_{model_name}.pth",
                sha256="0" * 64,
                weights_source="cache",
                precision="fp16",
                device="cuda:0",
                batch_size=16,
                terms=TERMS,
            ),
        )
        if models
        else ()
    )
    options = ScoreOptions(
        metrics=tuple(metrics),
        selection=FrameSelection(every=every),
        detect_scenes=True,
        worst_n=worst_n,
        gallery=gallery,
    )
    report = Report(
        run=RunInfo(
            tool_version="0.1.0",
            created="2025-01-01T00:00:00+00:00",
            command=("topiq-video", "report", dist_path, "--ref", ref_path),
            duration_s=12.5,
            options=options,
        ),
        inputs=inputs,
        models=model_list,
        metrics=tuple(METRIC_INFO[m] for m in metrics),
        alignment=alignment,
        warnings=tuple(warnings),
        interruption=interruption,
        scene_source="reference" if full_reference else "input",
        scenes=tuple(scenes),
        summary=summary,
        worst_frames=worst,
        worst_scenes=worst_scenes,
        per_second=_per_second(frames, metrics),
        gallery=tuple(entries),
        frames=FramesTable("frames.parquet", n_frames, tuple(frames.columns)),
        credits=credits,
        agreement=found,
    )
    return ScoreResult(report=report, frames=frames, images=images)


def _with_pictures(found: Agreement, images: dict[str, bytes], full_reference: bool) -> Agreement:
    """The agreement with a tiny picture of each frame it shows (added to ``images``)."""
    palette = [(30, 30, 160), (160, 30, 160), (30, 160, 160)]

    def named(f: DisagreeFrame) -> DisagreeFrame:
        roles = ("dist", "ref", "diff") if full_reference else ("dist",)
        names = {role: f"gallery/agree-{f.frame}-{role}.jpg" for role in roles}
        for k, name in enumerate(names.values()):
            images[name] = solid_jpeg(palette[(f.frame + k) % len(palette)])
        return dataclasses.replace(
            f,
            dist_image=names["dist"],
            ref_image=names.get("ref"),
            diff_image=names.get("diff"),
        )

    return dataclasses.replace(
        found,
        frames=tuple(named(f) for f in found.frames),
        scenes=tuple(
            dataclasses.replace(s, frame=None if s.frame is None else named(s.frame))
            for s in found.scenes
        ),
    )


def _per_second(frames: pd.DataFrame, metrics: Sequence[str]) -> PerSecond:
    """Mean and min of finite values and the non-finite count, per whole second."""
    second = np.floor(frames["time"].to_numpy()).astype(np.int64)
    table = pd.DataFrame({"second": second})
    for m in metrics:
        v = frames[m].to_numpy(np.float64)
        table[m] = np.where(np.isfinite(v), v, np.nan)
        table[f"{m}_bad"] = ~np.isfinite(v)
    grouped = table.groupby("second", sort=True)

    def column(series: pd.Series) -> tuple[float | None, ...]:
        return tuple(None if math.isnan(v) else float(v) for v in series.to_numpy())

    return PerSecond(
        second=tuple(int(s) for s in grouped.size().index),
        mean={m: column(grouped[m].mean()) for m in metrics},
        min={m: column(grouped[m].min()) for m in metrics},
        nonfinite={m: tuple(int(c) for c in grouped[f"{m}_bad"].sum()) for m in metrics},
    )
