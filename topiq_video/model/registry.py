"""The published TOPIQ (CFANet, ResNet50) checkpoints and how each one expects its input.

Resize policies and score ranges follow the reference implementation (IQA-PyTorch's
default model configs): only the FLIVE model resizes (shorter side to 384 px); all five
produce scores of about 0..1, higher is better.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from topiq_video.errors import InvalidInputError

DEFAULT_NR_MODEL = "topiq_nr"
DEFAULT_FR_MODEL = "topiq_fr"

HF_BASE_URL = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main"
GITHUB_BASE_URL = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights"

WEIGHTS_TERMS = (
    "The TOPIQ weights are the work of their authors (Chaofeng Chen et al., IQA-PyTorch) "
    "and are published under a non-commercial licence: they may not be used for "
    "commercial purposes. topiq-video does not relicense them."
)


@dataclass(frozen=True)
class ResizePolicy:
    """How frames are resized before scoring: ``shorter_side=None`` keeps native resolution,
    otherwise the shorter side is resized to that many pixels (aspect kept, antialiased)."""

    shorter_side: int | None = None

    def __post_init__(self) -> None:
        if self.shorter_side is not None and self.shorter_side < 1:
            raise ValueError(
                f"shorter_side must be a positive pixel count, got {self.shorter_side}"
            )

    @property
    def is_native(self) -> bool:
        return self.shorter_side is None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) a frame of the given size is scored at."""
        if self.shorter_side is None:
            return height, width
        short, long = min(height, width), max(height, width)
        # Truncate like torchvision's resize(size=int), which the checkpoints were tested
        # with: 1080p becomes 384x682, not 384x683.
        new_long = max(1, int(self.shorter_side * long / short))
        if height <= width:
            return self.shorter_side, new_long
        return new_long, self.shorter_side

    def describe(self) -> str:
        if self.shorter_side is None:
            return "native"
        return f"shorter side {self.shorter_side}px"


NATIVE = ResizePolicy()


@dataclass(frozen=True)
class CheckpointInfo:
    """One published checkpoint: where to get it and how to feed it."""

    name: str
    mode: str  # "nr" (no reference) or "fr" (full reference)
    filename: str
    train_set: str
    resize: ResizePolicy
    score_range: tuple[float, float]
    description: str
    higher_is_better: bool = True
    terms: str = WEIGHTS_TERMS
    urls: tuple[str, ...] = ()

    @property
    def use_ref(self) -> bool:
        return self.mode == "fr"


def _entry(
    name: str,
    mode: str,
    filename: str,
    train_set: str,
    description: str,
    resize: ResizePolicy = NATIVE,
) -> CheckpointInfo:
    return CheckpointInfo(
        name=name,
        mode=mode,
        filename=filename,
        train_set=train_set,
        resize=resize,
        score_range=(0.0, 1.0),
        description=description,
        urls=(f"{HF_BASE_URL}/{filename}", f"{GITHUB_BASE_URL}/{filename}"),
    )


_CHECKPOINTS: dict[str, CheckpointInfo] = {
    info.name: info
    for info in (
        _entry(
            "topiq_nr",
            "nr",
            "cfanet_nr_koniq_res50-9a73138b.pth",
            "KonIQ-10k",
            "No-reference TOPIQ trained on KonIQ-10k (in-the-wild photos); the default NR model.",
        ),
        _entry(
            "topiq_nr-flive",
            "nr",
            "cfanet_nr_flive_res50-ded1c74e.pth",
            "FLIVE (PaQ-2-PiQ)",
            "No-reference TOPIQ trained on FLIVE / PaQ-2-PiQ; frames resized to 384 px short side.",
            resize=ResizePolicy(384),
        ),
        _entry(
            "topiq_nr-spaq",
            "nr",
            "cfanet_nr_spaq_res50-a7f799ac.pth",
            "SPAQ",
            "No-reference TOPIQ trained on SPAQ (smartphone photos).",
        ),
        _entry(
            "topiq_fr",
            "fr",
            "cfanet_fr_kadid_res50-2c4cc61d.pth",
            "KADID-10k",
            "Full-reference TOPIQ trained on KADID-10k (synthetic distortions); the default FR model.",
        ),
        _entry(
            "topiq_fr-pipal",
            "fr",
            "cfanet_fr_pipal_res50-69bbe5ba.pth",
            "PIPAL",
            "Full-reference TOPIQ trained on PIPAL (incl. GAN/restoration outputs).",
        ),
    )
}


def list_checkpoints() -> tuple[CheckpointInfo, ...]:
    """All known checkpoints, in registry order."""
    return tuple(_CHECKPOINTS.values())


def checkpoint_names() -> tuple[str, ...]:
    return tuple(_CHECKPOINTS)


def get_checkpoint(name: str) -> CheckpointInfo:
    """The registry entry for ``name``; raises ``InvalidInputError`` naming the valid choices."""
    try:
        return _CHECKPOINTS[name]
    except (KeyError, TypeError):
        pass
    names = checkpoint_names()
    close = difflib.get_close_matches(str(name), names, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise InvalidInputError(
        f"Unknown model {name!r}.{hint} Valid models: {', '.join(names)} "
        "(list them with `topiq-video models`)."
    )
