"""Errors raised by topiq-video. Every message says what went wrong and how to fix it."""

from __future__ import annotations


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
