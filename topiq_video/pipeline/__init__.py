"""From video sources to a typed result: options, the scoring run, in-pass frame capture.

Submodules load on first use, so importing the options (and the CLI's ``--help``) does not
load torch or PyAV.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "FrameSelection": "topiq_video.pipeline.options",
    "ScoreOptions": "topiq_video.pipeline.options",
    "ScoringRun": "topiq_video.pipeline.run",
    "FrameScores": "topiq_video.pipeline.run",
    "score_video": "topiq_video.pipeline.collect",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'topiq_video.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
