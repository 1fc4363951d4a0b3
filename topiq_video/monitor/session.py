"""A monitored stream's session as a typed result, rendered by the report's own renderer:
the per-second scores as the timeline, the alert episodes as bands, the worst frames
captured during the run as the gallery. Made from what was kept; no second connection."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topiq_video import __version__
from topiq_video.pipeline.collect import metric_info, model_info
from topiq_video.pipeline.options import FrameSelection, ScoreOptions
from topiq_video.pooling import pool
from topiq_video.result import (
    FRAMES_FILE,
    DecodeSummary,
    EventSpan,
    FramesTable,
    InputInfo,
    Report,
    RunInfo,
    SavedReport,
    ScoreResult,
)
from topiq_video.scenes import scenes_from_cuts
from topiq_video.video.probe import ColorInfo

SESSION_PREFIX = "session-"
_UNKNOWN_COLOR = ColorInfo("unknown", "limited", "unknown", "unknown", 8, True)


def session_result(
    worker: Any,
    rows: pd.DataFrame,
    events: Sequence[Any],
    model: Any,
    *,
    started: float,
    ended: float | None = None,
    command: Sequence[str] | None = None,
) -> ScoreResult | None:
    """The session of ``worker`` (per-second ``rows`` since ``started``); None without rows."""
    ended = time.time() if ended is None else ended
    name = worker.config.model
    if rows.empty:
        return None
    seconds = rows["time"].to_numpy(dtype=float) - started
    frames = pd.DataFrame(
        {
            "frame": np.arange(len(rows), dtype=np.int64),
            "time": seconds,
            "scene": np.zeros(len(rows), dtype=np.int64),
            name: rows["score_mean"].to_numpy(dtype=float),
        }
    )
    scenes = scenes_from_cuts([], frames["frame"].tolist(), frames["time"].tolist())
    pooled = pool(frames, [name], scenes)
    gallery, images = worker.capture.gallery()
    snap = worker.snapshot(ended)
    info = snap.info
    counters = snap.counters
    warnings = []
    if counters.reconnects or counters.outage_seconds > 0.5:
        warnings.append(
            f"The stream was down for {counters.outage_seconds:.1f} s in all and reconnected "
            f"{counters.reconnects} time(s); seconds without a score are counted as NaN."
        )
    if counters.frames_skipped:
        warnings.append(
            f"{counters.frames_skipped} samples were not scored because scoring fell behind."
        )
    spans = tuple(
        EventSpan(
            rule=e.rule,
            start=e.start - started,
            end=None if e.end is None else e.end - started,
            value=e.value,
            threshold=e.threshold,
            evidence=e.evidence,
        )
        for e in events
    )
    options = ScoreOptions(
        model=name,
        metrics=(name,),
        offset=0,
        selection=FrameSelection(sample_fps=worker.config.score_fps),
        gallery=len(gallery),
    )
    report = Report(
        run=RunInfo(
            tool_version=__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            command=None if command is None else tuple(command),
            duration_s=round(ended - started, 3),
            options=options,
        ),
        inputs={
            "dist": InputInfo(
                path=worker.url,
                container="live",
                codec=info.codec if info else "unknown",
                width=info.width if info else 0,
                height=info.height if info else 0,
                pix_fmt="unknown",
                bit_depth=8,
                fps=info.fps if info else None,
                fps_exact=str(Fraction(info.fps).limit_denominator(1001))
                if info and info.fps
                else None,
                time_base="1",
                start_time=0.0,
                duration=ended - started,
                frame_count=None,
                color=_UNKNOWN_COLOR,
                rotation=0,
                scan_type="unknown",
                is_vfr=None,
                is_live=True,
                metadata={"stream": worker.name},
                decode=DecodeSummary(
                    frames_decoded=counters.frames_decoded,
                    decode_errors=counters.decode_errors,
                    lost_frames=counters.lost_frames,
                    bytes_read=counters.received_bytes,
                ),
            )
        },
        models=(model_info(model),),
        metrics=(metric_info(name),),
        alignment=None,
        warnings=tuple(warnings),
        interruption=None,
        scene_source="none",
        scenes=pooled.scenes,
        summary=pooled.summary,
        worst_frames=pooled.worst_frames,
        worst_scenes=pooled.worst_scenes,
        per_second=pooled.per_second,
        gallery=gallery,
        frames=FramesTable(file=FRAMES_FILE, count=len(frames), columns=tuple(frames.columns)),
        events=spans,
    )
    return ScoreResult(report=report, frames=frames, images=images)


def write_session(result: ScoreResult, stream_folder: Path, started: float) -> SavedReport:
    from topiq_video.report.build import write_report

    stamp = datetime.fromtimestamp(started, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return write_report(result, stream_folder / f"{SESSION_PREFIX}{stamp}")
