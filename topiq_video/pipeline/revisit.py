"""Pictures of frames chosen after the pass, fetched by seeking the input files again.

Pictures are normally captured during the pass (:mod:`topiq_video.pipeline.capture`). A few
can only be chosen once the whole run is known: the worst frames of VMAF and XPSNR (FFmpeg
gives its values at the end) and the frames where two metrics disagree most (a rank needs
every frame). Those are fetched afterwards by seeking each input to the keyframe before the
frame (a few short decodes, not a second pass), then converted, scaled and drawn exactly
as the pass draws its pictures. Live streams, pipes and decoders given as objects cannot be
sought: their reports say the pictures are missing, and why.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from topiq_video.pipeline.capture import GALLERY_MAX_WIDTH, Candidate, file_slug, pictures_of
from topiq_video.result import GALLERY_DIR, Agreement, DisagreeFrame
from topiq_video.video.source import FrameSource, is_network_source, scheme_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairAt:
    """A scored row to picture: the encode's frame and the reference frame it met."""

    frame: int
    time: float
    ref_frame: int | None = None
    ref_time: float | None = None


def why_not_seekable(source: Any, info: Any) -> str | None:
    """Why pictures of ``source`` cannot be fetched after the pass (None: they can)."""
    if isinstance(source, FrameSource):
        return "the input was a decoder object, not a file"
    if info is not None and info.is_live:
        return "a live stream cannot be sought"
    if is_network_source(source) or scheme_of(source) == "pipe":
        return "a network stream or pipe cannot be read twice"
    path = Path(str(source))
    if not path.exists():
        return "the input file is no longer there"
    if not path.is_file():
        return "the input is not a regular file (a named pipe or device cannot be read twice)"
    return None


def fetch_pictures(
    dist: str,
    ref: str | None,
    pairs: Sequence[PairAt],
    *,
    size: tuple[int, int] | None,
    device: torch.device | str = "cpu",
    max_width: int = GALLERY_MAX_WIDTH,
) -> dict[int, Candidate]:
    """Pictures of ``pairs`` (keyed by the encode's frame number), the encode scaled to
    ``size`` (the comparison size; None keeps its own) beside its reference frame and their
    difference. Frames that cannot be found are left out."""
    from topiq_video.pipeline.run import _resize_rgb
    from topiq_video.video.color import frames_to_rgb
    from topiq_video.video.reader import frames_at

    if not pairs:
        return {}
    dist_frames = frames_at(dist, [p.time for p in pairs])
    ref_frames = (
        frames_at(ref, [p.ref_time for p in pairs if p.ref_time is not None]) if ref else {}
    )
    out: dict[int, Candidate] = {}
    for pair in pairs:
        dist_frame = dist_frames.get(float(pair.time))
        ref_frame = None if pair.ref_time is None else ref_frames.get(float(pair.ref_time))
        if dist_frame is None or (ref is not None and ref_frame is None):
            continue
        dist_rgb = frames_to_rgb([dist_frame], device)
        ref_rgb = None
        if ref_frame is not None:
            dist_rgb = _resize_rgb(dist_rgb, size)
            ref_rgb = _resize_rgb(frames_to_rgb([ref_frame], device), size)
        pictures, (height, width) = pictures_of(
            dist_rgb[0], None if ref_rgb is None else ref_rgb[0], max_width
        )
        out[pair.frame] = Candidate(
            frame=pair.frame,
            time=pair.time,
            value=math.nan,
            ref_frame=pair.ref_frame,
            ref_time=pair.ref_time,
            pictures=pictures,
            width=width,
            height=height,
        )
    return out


def pair_of(frame: DisagreeFrame) -> PairAt:
    return PairAt(frame.frame, frame.time, frame.ref_frame, frame.ref_time)


def attach_pictures(
    agreement: Agreement,
    pictures: Mapping[int, Candidate],
    prefix: str = "agree",
    note: str | None = None,
) -> tuple[Agreement, dict[str, bytes]]:
    """The agreement with its frames' picture files named, and those files' bytes."""
    images: dict[str, bytes] = {}

    def named(frame: DisagreeFrame) -> DisagreeFrame:
        candidate = pictures.get(frame.frame)
        if candidate is None:
            return frame
        stem = f"{GALLERY_DIR}/{file_slug(prefix)}-{frame.frame}"
        names = {role: f"{stem}-{role}.jpg" for role in candidate.pictures}
        for role, name in names.items():
            images[name] = candidate.pictures[role]
        return dataclasses.replace(
            frame,
            dist_image=names.get("dist"),
            ref_image=names.get("ref"),
            diff_image=names.get("diff"),
        )

    frames = tuple(named(f) for f in agreement.frames)
    scenes = tuple(
        dataclasses.replace(s, frame=None if s.frame is None else named(s.frame))
        for s in agreement.scenes
    )
    missing = note
    if missing is None and (agreement.frames or agreement.scenes) and not images:
        missing = "the frames could not be found again in the input files"
    return (
        dataclasses.replace(agreement, frames=frames, scenes=scenes, pictures_note=missing),
        images,
    )
