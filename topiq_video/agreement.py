"""Where TOPIQ and another metric disagree: per-frame and per-scene ranks, correlations.

Two metrics on different scales are compared by rank: each frame gets, per metric, the share
of the compared frames it beats (its percentile, 0 = the worst frame of the video, 1 = the
best; ties share the mean rank), and the frames whose two percentiles lie furthest apart are
where the metrics disagree most. Scenes are ranked by their mean values the same way (rank 1
= the worst scene). Spearman's correlation (of ranks) and Pearson's (of values) over the
frames, and Spearman's over the scene means, say how much they agree overall.

The other metric is VMAF when the run has it, else PSNR (see :data:`OTHER_METRICS`). Frames
whose values are missing (NaN) on either metric are left out; PSNR's +inf (identical
frames) ranks above every finite value but is left out of Pearson's correlation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from topiq_video.metrics import REFERENCE_METRICS
from topiq_video.pipeline.options import (
    DEFAULT_DISAGREE_FRAMES,
    DEFAULT_DISAGREE_SCENES,
    GALLERY_SPACING_S,
)
from topiq_video.pooling import pick_worst
from topiq_video.result import (
    Agreement,
    DisagreeFrame,
    DisagreeScene,
    SceneResult,
    nonfinite_flag,
)

OTHER_METRICS = ("vmaf", "vmaf_neg", "psnr_y", "xpsnr_y", "ssim_y")
"""The metric TOPIQ is held against, the first of these a run has."""
MIN_CORRELATED = 3  # fewer pairs give no correlation


def metric_pair(metrics: Sequence[str]) -> tuple[str, str] | None:
    """(TOPIQ metric, the metric it is held against) of a run, or None without both."""
    topiq = next((m for m in metrics if m not in REFERENCE_METRICS), None)
    other = next((m for m in OTHER_METRICS if m in metrics), None)
    if topiq is None or other is None:
        return None
    return topiq, other


def percentiles(values: np.ndarray) -> np.ndarray:
    """Each value's share of the others it beats, in (0, 1) (mean rank for ties); NaN
    stays NaN and is not counted."""
    from scipy.stats import rankdata

    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, math.nan)
    known = ~np.isnan(values)
    count = int(known.sum())
    if count:
        out[known] = (rankdata(values[known], method="average") - 0.5) / count
    return out


def _correlation(kind: str, a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy import stats

    if len(a) < MIN_CORRELATED or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float((stats.spearmanr if kind == "spearman" else stats.pearsonr)(a, b)[0])
    return value if math.isfinite(value) else None


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _frame(table: pd.DataFrame, i: int, metric: str, other: str, pa: np.ndarray,
           pb: np.ndarray) -> DisagreeFrame:  # fmt: skip
    row = table.iloc[i]
    ref_frame = row.get("ref_frame")
    ref_time = row.get("ref_time")
    scene = row.get("scene")
    a, b = float(row[metric]), float(row[other])
    return DisagreeFrame(
        frame=int(row["frame"]),
        time=float(row["time"]),
        ref_frame=None if ref_frame is None or pd.isna(ref_frame) else int(ref_frame),
        ref_time=None if ref_time is None or pd.isna(ref_time) else float(ref_time),
        scene=None if scene is None or pd.isna(scene) else int(scene),
        value=_finite_or_none(a),
        value_nonfinite=nonfinite_flag(a),
        other_value=_finite_or_none(b),
        other_value_nonfinite=nonfinite_flag(b),
        percentile=float(pa[i]),
        other_percentile=float(pb[i]),
    )


def disagreement(
    table: pd.DataFrame,
    metric: str,
    other: str,
    scenes: Sequence[SceneResult] = (),
    *,
    frames: int = DEFAULT_DISAGREE_FRAMES,
    scene_count: int = DEFAULT_DISAGREE_SCENES,
    spacing: float = GALLERY_SPACING_S,
) -> Agreement:
    """How ``metric`` and ``other`` agree over a per-frame table (columns ``frame``,
    ``time``, both metrics, optionally ``ref_frame``, ``ref_time``, ``scene``) and its
    pooled scenes; the ``frames`` frames (at least ``spacing`` seconds apart) and the
    ``scene_count`` scenes they rank furthest apart."""
    a = table[metric].to_numpy(dtype=np.float64)
    b = table[other].to_numpy(dtype=np.float64)
    both = ~np.isnan(a) & ~np.isnan(b)
    pa = np.full(len(a), math.nan)
    pb = np.full(len(b), math.nan)
    pa[both] = percentiles(a[both])
    pb[both] = percentiles(b[both])
    finite = both & np.isfinite(a) & np.isfinite(b)
    gap = np.where(both, np.abs(pa - pb), math.nan)
    times = table["time"].to_numpy(dtype=np.float64)
    picked = pick_worst(-gap, times, frames, spacing=spacing)
    shown = tuple(_frame(table, i, metric, other, pa, pb) for i in picked if gap[i] > 0)

    ranked = [
        s for s in scenes if s.stats[metric].mean is not None and s.stats[other].mean is not None
    ]
    scene_rows: list[DisagreeScene] = []
    scene_spearman = None
    if len(ranked) >= 2:
        from scipy.stats import rankdata

        means_a = np.array([s.stats[metric].mean for s in ranked], dtype=np.float64)
        means_b = np.array([s.stats[other].mean for s in ranked], dtype=np.float64)
        rank_a = rankdata(means_a, method="min").astype(int)
        rank_b = rankdata(means_b, method="min").astype(int)
        scene_spearman = _correlation("spearman", means_a, means_b)
        scene_of = table["scene"].to_numpy() if "scene" in table.columns else None
        order = sorted(range(len(ranked)), key=lambda k: (-abs(int(rank_a[k]) - int(rank_b[k])), k))
        for k in order[:scene_count]:
            if rank_a[k] == rank_b[k]:
                break
            scene = ranked[k]
            frame = None
            if scene_of is not None:
                inside = np.nonzero((scene_of == scene.index) & both)[0]
                if inside.size:
                    i = int(inside[np.argmax(gap[inside])])
                    frame = _frame(table, i, metric, other, pa, pb)
            scene_rows.append(
                DisagreeScene(
                    scene=scene.index,
                    start_time=scene.start_time,
                    end_time=scene.end_time,
                    mean=scene.stats[metric].mean,
                    other_mean=scene.stats[other].mean,
                    rank=int(rank_a[k]),
                    other_rank=int(rank_b[k]),
                    frame=frame,
                )
            )
    return Agreement(
        metric=metric,
        other=other,
        frames_compared=int(both.sum()),
        spearman=_correlation("spearman", a[both], b[both]),
        pearson=_correlation("pearson", a[finite], b[finite]),
        scenes_compared=len(ranked),
        scene_spearman=scene_spearman,
        frames=shown,
        scenes=tuple(scene_rows),
    )


def shown_frames(agreement: Agreement) -> list[DisagreeFrame]:
    """Every frame the agreement shows (its frames, then its scenes' frames), once each."""
    out: dict[int, DisagreeFrame] = {}
    for f in [*agreement.frames, *(s.frame for s in agreement.scenes if s.frame is not None)]:
        out.setdefault(f.frame, f)
    return list(out.values())
