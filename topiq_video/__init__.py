"""topiq-video: TOPIQ quality scores for video files and live streams.

The curated public API::

    import topiq_video as tv

    model = tv.load_model("topiq_nr")             # weights: --weights > cache > download
    scores = model.score(rgb)                      # (N, 3, H, W) floats in [0, 1] -> (N,)
    result = tv.score_video("enc.mp4", ref="src.mp4")   # a ScoreResult; .frames is the table
    result, saved = tv.build_report("enc.mp4", ref="src.mp4", out_dir="reports/enc")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from topiq_video.errors import (
    AlignmentError,
    DependencyError,
    InvalidInputError,
    OutputError,
    ScoringInterrupted,
    Terminated,
    TopiqVideoError,
    VideoError,
    WeightsError,
)

__version__ = "0.1.0"

# Heavy modules (torch, PyAV) load on first use, so `import topiq_video` and the CLI's
# `--help` stay fast.
_LAZY = {
    "load_model": "topiq_video.model",
    "list_checkpoints": "topiq_video.model.registry",
    "get_checkpoint": "topiq_video.model.registry",
    "TopiqModel": "topiq_video.scoring",
    "score_video": "topiq_video.pipeline.collect",
    "ScoringRun": "topiq_video.pipeline.run",
    "ScoreOptions": "topiq_video.pipeline.options",
    "FrameSelection": "topiq_video.pipeline.options",
    "FrameScores": "topiq_video.pipeline.run",
    "ScoreResult": "topiq_video.result",
    "CompareResult": "topiq_video.result",
    "compare_encodes": "topiq_video.compare",
    "EncodeSpec": "topiq_video.compare",
    "Report": "topiq_video.result",
    "FrameSource": "topiq_video.video.source",
    "build_report": "topiq_video.report.build",
    "render_report": "topiq_video.report.build",
    "probe": "topiq_video.video.probe",
    "open_video": "topiq_video.video.reader",
    "psnr_y": "topiq_video.metrics",
    "ssim_y": "topiq_video.metrics",
    "pool": "topiq_video.pooling",
    "StreamingSummary": "topiq_video.pooling",
    "RollingStats": "topiq_video.pooling",
    "Agreement": "topiq_video.result",
    "disagreement": "topiq_video.agreement",
    "FFmpegMetrics": "topiq_video.vmaf",
    "run_batch": "topiq_video.batch",
    "BatchResult": "topiq_video.batch",
}

if TYPE_CHECKING:
    from topiq_video.agreement import disagreement
    from topiq_video.batch import BatchResult, run_batch
    from topiq_video.compare import EncodeSpec, compare_encodes
    from topiq_video.metrics import psnr_y, ssim_y
    from topiq_video.model import load_model
    from topiq_video.model.registry import get_checkpoint, list_checkpoints
    from topiq_video.pipeline.collect import score_video
    from topiq_video.pipeline.options import FrameSelection, ScoreOptions
    from topiq_video.pipeline.run import FrameScores, ScoringRun
    from topiq_video.pooling import RollingStats, StreamingSummary, pool
    from topiq_video.report.build import build_report, render_report
    from topiq_video.result import Agreement, CompareResult, Report, ScoreResult
    from topiq_video.scoring import TopiqModel
    from topiq_video.video.probe import probe
    from topiq_video.video.reader import open_video
    from topiq_video.video.source import FrameSource
    from topiq_video.vmaf import FFmpegMetrics


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'topiq_video' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BatchResult",
    "run_batch",
    "Agreement",
    "AlignmentError",
    "DependencyError",
    "FFmpegMetrics",
    "disagreement",
    "CompareResult",
    "EncodeSpec",
    "compare_encodes",
    "FrameSource",
    "OutputError",
    "Report",
    "ScoreResult",
    "ScoringInterrupted",
    "Terminated",
    "render_report",
    "FrameScores",
    "FrameSelection",
    "InvalidInputError",
    "RollingStats",
    "ScoreOptions",
    "ScoringRun",
    "StreamingSummary",
    "TopiqModel",
    "TopiqVideoError",
    "VideoError",
    "WeightsError",
    "__version__",
    "build_report",
    "get_checkpoint",
    "list_checkpoints",
    "load_model",
    "open_video",
    "pool",
    "probe",
    "psnr_y",
    "score_video",
    "ssim_y",
]
