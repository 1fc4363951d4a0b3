"""Errors raised by topiq-video. Every message says what went wrong and how to fix it."""

from __future__ import annotations

from typing import Any


class TopiqVideoError(Exception):
    """Base class: the CLI prints these as one clean message and exits non-zero."""

    exit_code = 1


class WeightsError(TopiqVideoError):
    """Checkpoint missing, unreachable, corrupt or of the wrong architecture."""


class InvalidInputError(TopiqVideoError, ValueError):
    """Tensors, options or arguments that the caller must correct."""


class VideoError(TopiqVideoError):
    """A video source that cannot be opened or decoded."""


class AlignmentError(TopiqVideoError):
    """A distorted and a reference stream that cannot be paired."""


class OutputError(TopiqVideoError):
    """An output file or folder that cannot be written."""


class DependencyError(TopiqVideoError):
    """An optional dependency (an extra, a program) that a requested feature needs."""


class ScoringInterrupted(TopiqVideoError):
    """A run that stopped before its end; ``result`` holds everything scored until then.

    ``__cause__`` is the error that stopped it. Where the run wrote files (a report), they
    are complete and record the interruption; ``written`` names the folder.
    """

    def __init__(self, message: str, result: Any = None, written: Any = None) -> None:
        super().__init__(message)
        self.result = result
        self.written = written


class Terminated(KeyboardInterrupt):
    """A termination signal (SIGTERM from systemd, Docker or ``timeout``), handled like
    Ctrl-C: what was scored is kept and written before the program ends."""
