"""`topiq-video report`: scores -> scenes -> pooled statistics -> report.json, frames.csv, report.html."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from topiq_video import __version__
from topiq_video.errors import InvalidInputError
from topiq_video.metrics import METRICS
from topiq_video.model.registry import get_checkpoint
from topiq_video.pipeline.run import (
    FrameScores,
    ScoreOptions,
    ScoringRun,
    frames_table,
    redact_source,
)
from topiq_video.pooling import DEFAULT_WORST_N, PooledResult, WorstFrame, pool
from topiq_video.report.document import build_report_document, write_report_json
from topiq_video.report.gallery import GalleryFrame, make_gallery_frame
from topiq_video.report.html import write_report_html
from topiq_video.report.tables import write_frames_csv
from topiq_video.scenes import Scene, load_cut_list, scenes_from_cuts

logger = logging.getLogger(__name__)

DEFAULT_REPORTS_DIR = Path("reports")
DEFAULT_GALLERY_FRAMES = 4  # worst frames shown per metric
GALLERY_SPACING_S = 1.0  # gallery pictures of one metric are at least this far apart
CREDIT_TAGS = ("copyright", "artist", "comment", "license")


@dataclass(frozen=True)
class ReportResult:
    """Where the report went and what it says."""

    out_dir: Path
    json_path: Path
    html_path: Path
    csv_path: Path
    document: dict[str, Any]
    pooled: PooledResult
    frames: pd.DataFrame


def default_report_dir(dist: str) -> Path:
    """``reports/<input stem>/``, also for URLs (their last path part, or the host)."""
    parsed = urlparse(dist)
    if len(parsed.scheme) > 1:  # a URL (one letter would be a Windows drive)
        name = Path(parsed.path).stem or parsed.hostname or "stream"
    else:
        name = Path(dist).stem
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "stream"
    return DEFAULT_REPORTS_DIR / safe


def metric_descriptions(metrics: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for name in metrics:
        if name in METRICS:
            info = METRICS[name]
            out.append(
                {
                    "name": name,
                    "unit": info.unit or None,
                    "higher_is_better": info.higher_is_better,
                    "range": [_finite_or_none(v) for v in info.range],
                    "description": info.description,
                }
            )
        else:
            ckpt = get_checkpoint(name)
            out.append(
                {
                    "name": name,
                    "unit": None,
                    "higher_is_better": ckpt.higher_is_better,
                    "range": list(ckpt.score_range),
                    "description": f"TOPIQ {ckpt.mode.upper()} ({ckpt.train_set})",
                }
            )
    return out


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _map_cuts_to_rows(table: pd.DataFrame, cuts: Sequence[int], column: str) -> list[int]:
    """Frame numbers of ``column``'s stream -> the distorted frame of the first row at or after."""
    if not len(table):
        return []
    source = table[column].to_numpy(dtype=np.float64)
    frames = table["frame"].to_numpy()
    mapped = []
    for cut in cuts:
        positions = np.nonzero(source >= cut)[0]
        if positions.size:
            mapped.append(int(frames[positions[0]]))
    return sorted(set(mapped))


def resolve_scenes(
    run: ScoringRun, table: pd.DataFrame, scenes_file: str | os.PathLike[str] | None
) -> tuple[list[Scene], str]:
    """Scenes of the scored frames and where their cuts came from."""
    has_ref = run.ref_source is not None
    if scenes_file is not None:
        role = "ref" if has_ref else "dist"
        fps = run.inputs[role].fps
        file_cuts = load_cut_list(scenes_file, fps=float(fps) if fps else None)
        cuts = _map_cuts_to_rows(table, file_cuts, "ref_frame" if has_ref else "frame")
        source = "file"
    elif run.options.detect_scenes:
        cuts = _map_cuts_to_rows(table, run.cuts, "ref_frame" if has_ref else "frame")
        source = "reference" if has_ref else "input"
    else:
        cuts, source = [], "none"
    scenes = scenes_from_cuts(cuts, table["frame"].tolist(), table["time"].tolist())
    return scenes, source


def spread_worst(
    table: pd.DataFrame, metric: str, count: int, spacing: float = GALLERY_SPACING_S
) -> list[WorstFrame]:
    """The worst frames of ``metric`` at least ``spacing`` seconds apart (neighbours of one
    bad moment look alike), topped up with the next worst when the video is too short."""
    values = table[metric].to_numpy(dtype=np.float64)
    order = [i for i in np.argsort(values, kind="stable") if not np.isnan(values[i])]
    times = table["time"].to_numpy(dtype=np.float64)
    chosen: list[int] = []
    for i in order:
        if len(chosen) >= count:
            break
        if all(abs(times[i] - times[j]) >= spacing for j in chosen):
            chosen.append(i)
    for i in order:
        if len(chosen) >= count:
            break
        if i not in chosen:
            chosen.append(i)
    return [
        WorstFrame(int(table["frame"].iloc[i]), float(times[i]), float(values[i])) for i in chosen
    ]


def gallery_frames(
    run: ScoringRun, pooled: PooledResult, table: pd.DataFrame, per_metric: int
) -> list[GalleryFrame]:
    """Worst frames, encode beside reference (and their amplified difference)."""
    from topiq_video.video.color import frames_to_rgb
    from topiq_video.video.decode import read_frames_at

    picks: list[tuple[str, Any]] = []
    for metric in pooled.worst_frames:
        picks.extend((metric, w) for w in spread_worst(table, metric, per_metric))
    if not picks:
        return []
    ref_of = dict(zip(table["frame"], table["ref_frame"], strict=True)) if run.ref_source else {}
    dist_frames = read_frames_at(run.dist_source, {w.frame for _, w in picks})
    ref_frames = (
        read_frames_at(run.ref_source, {int(ref_of[w.frame]) for _, w in picks})
        if run.ref_source
        else {}
    )
    gallery = []
    for metric, worst in picks:
        dist = frames_to_rgb([dist_frames[worst.frame]])
        ref_rgb = None
        ref_index = None
        if run.ref_source:
            ref_index = int(ref_of[worst.frame])
            ref = frames_to_rgb([ref_frames[ref_index]])
            if ref.shape[-2:] != dist.shape[-2:]:
                dist = _resize(dist, ref.shape[-2:])
            ref_rgb = _to_uint8(ref)
        gallery.append(
            make_gallery_frame(
                worst.frame,
                worst.time,
                metric,
                worst.value,
                _to_uint8(dist),
                ref_rgb,
                ref_frame=ref_index,
            )
        )
    return gallery


def _resize(rgb: Any, size: Any) -> Any:
    import torch.nn.functional as F

    return F.interpolate(rgb, size=tuple(size), mode="bicubic", antialias=True).clamp(0, 1)


def _to_uint8(rgb: Any) -> np.ndarray:
    return (rgb[0].permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def _credits(run: ScoringRun) -> str | None:
    parts: dict[str, str] = {}  # credit text -> who carries it (once, even if both do)
    for role, info in run.inputs.items():
        tags = {k.lower(): v for k, v in info.metadata.items()}
        for key in CREDIT_TAGS:
            if tags.get(key) and tags[key] not in parts:
                parts[tags[key]] = f"{'reference' if role == 'ref' else 'input'} {key}"
    return "; ".join(f"{who}: {text}" for text, who in parts.items()) or None


def write_report(
    run: ScoringRun,
    rows: Sequence[FrameScores],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    scenes_file: str | os.PathLike[str] | None = None,
    worst_n: int = DEFAULT_WORST_N,
    gallery_per_metric: int = DEFAULT_GALLERY_FRAMES,
    command: Sequence[str] | str | None = None,
    started: float | None = None,
    complete: bool = True,
) -> ReportResult:
    """Pool the scored rows of ``run`` and write report.json, frames.csv and report.html."""
    if not rows:
        raise InvalidInputError(
            "No frame was scored, so there is nothing to report: check the input and the "
            "frame selection (--start/--duration), or the alignment (--offset)."
        )
    out = Path(out_dir) if out_dir is not None else default_report_dir(run.dist_source)
    out.mkdir(parents=True, exist_ok=True)
    has_ref = run.ref_source is not None
    table = frames_table(rows, run.metrics, has_ref)
    scenes, scene_source = resolve_scenes(run, table, scenes_file)
    scene_of = np.zeros(len(table), dtype=np.int64)
    frames = table["frame"].to_numpy()
    for scene in scenes:
        scene_of[(frames >= scene.start_frame) & (frames <= scene.end_frame)] = scene.index
    table.insert(4 if has_ref else 2, "scene", scene_of)
    pooled = pool(table, list(run.metrics), scenes, worst_n=worst_n)

    metadata = run.metadata()
    run_info = {
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": _redacted_command(command),
        "duration_s": None if started is None else round(time.monotonic() - started, 3),
        "complete": complete,
        "frames_scored": len(table),
        "decode": metadata["decode"],
        "options": _options_dict(run.options),
    }
    document = build_report_document(
        table,
        pooled,
        inputs=metadata["inputs"],
        model=metadata["model"],
        alignment=metadata["alignment"],
        metrics=metric_descriptions(run.metrics),
        run=run_info,
        scene_source=scene_source,
        credits=_credits(run),
    )
    document["warnings"] = run_warnings(run, metadata, complete)
    json_path = write_report_json(document, out / "report.json")
    csv_path = write_frames_csv(table, out / "frames.csv")
    try:
        gallery = gallery_frames(run, pooled, table, gallery_per_metric)
    except Exception as exc:  # a gallery is a nicety: never lose the report over it
        logger.warning("Could not extract the worst frames for the gallery: %s", exc)
        gallery = []
    scene_scores = None
    if run.content_scores is not None and len(run.content_scores):
        source_frames = table["ref_frame" if has_ref else "frame"].astype("int64")
        scene_scores = run.content_scores.reindex(source_frames).to_numpy()
    html_path = write_report_html(
        document, out / "report.html", gallery=gallery, scene_scores=scene_scores
    )
    return ReportResult(out, json_path, html_path, csv_path, document, pooled, table)


def _redacted_command(command: Sequence[str] | str | None) -> list[str] | str | None:
    if command is None:
        return None
    if isinstance(command, str):
        return " ".join(redact_source(part) for part in command.split(" "))
    return [redact_source(part) for part in command]


def run_warnings(run: ScoringRun, metadata: dict[str, Any], complete: bool) -> list[str]:
    """Everything a reader must know before trusting the numbers."""
    warnings = list(metadata["warnings"])
    if not complete:
        warnings.append("The run was interrupted: the report covers only the frames scored.")
    for role, stats in metadata["decode"].items():
        label = "reference" if role == "ref" else "input"
        if stats.get("truncated_at") is not None:
            warnings.append(
                f"The {label} stopped decoding at frame {stats['truncated_at']} (truncated "
                "file?): frames after it are missing from this report."
            )
        damaged = (
            stats.get("decode_errors", 0)
            + stats.get("corrupt_frames", 0)
            + stats.get("lost_frames", 0)
        )
        if damaged:
            warnings.append(
                f"The {label} had {damaged} damaged packet(s) or frame(s); scores near them "
                "reflect the damage."
            )
    return warnings


def _options_dict(options: ScoreOptions) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(options)
    data.pop("progress", None)
    return data


def build_report(
    dist: str,
    ref: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    scenes: bool | str | os.PathLike[str] = True,
    on_frame: Callable[[FrameScores], None] | None = None,
    options: ScoreOptions | None = None,
    **report_options: Any,
) -> ReportResult:
    """Score ``dist`` (against ``ref``) and write the report; the Python face of the CLI.

    ``scenes``: True detects cuts (in the reference when there is one), False turns it
    off, a path imports a cut list.
    """
    started = time.monotonic()
    options = options or ScoreOptions()
    scenes_file = None if isinstance(scenes, bool) else scenes
    options = replace(options, detect_scenes=scenes is True)
    run = ScoringRun(dist, ref, options)
    rows = []
    for row in run:
        rows.append(row)
        if on_frame is not None:
            on_frame(row)
    return write_report(
        run, rows, out_dir, scenes_file=scenes_file, started=started, **report_options
    )
