"""topiq-video: TOPIQ quality scores for video files and live streams."""

from __future__ import annotations

from topiq_video.errors import (
    AlignmentError,
    InvalidInputError,
    TopiqVideoError,
    VideoError,
    WeightsError,
)

__version__ = "0.1.0"

__all__ = [
    "AlignmentError",
    "InvalidInputError",
    "TopiqVideoError",
    "VideoError",
    "WeightsError",
    "__version__",
]
