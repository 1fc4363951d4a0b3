"""The checkpoint registry: entries, policies, URLs and lookup errors."""

from __future__ import annotations

import pytest

from topiq_video.errors import InvalidInputError
from topiq_video.model.registry import (
    DEFAULT_FR_MODEL,
    DEFAULT_NR_MODEL,
    ResizePolicy,
    get_checkpoint,
    list_checkpoints,
)

EXPECTED = {
    "topiq_nr": ("nr", "cfanet_nr_koniq_res50-9a73138b.pth", None),
    "topiq_nr-flive": ("nr", "cfanet_nr_flive_res50-ded1c74e.pth", 384),
    "topiq_nr-spaq": ("nr", "cfanet_nr_spaq_res50-a7f799ac.pth", None),
    "topiq_fr": ("fr", "cfanet_fr_kadid_res50-2c4cc61d.pth", None),
    "topiq_fr-pipal": ("fr", "cfanet_fr_pipal_res50-69bbe5ba.pth", None),
}


def test_registry_entries_match_published_checkpoints() -> None:
    infos = {info.name: info for info in list_checkpoints()}
    assert set(EXPECTED) <= set(infos)
    for name, (mode, filename, short) in EXPECTED.items():
        info = infos[name]
        assert (info.mode, info.filename, info.resize.shorter_side) == (mode, filename, short)
        assert info.use_ref == (mode == "fr")
        assert info.score_range == (0.0, 1.0) and info.higher_is_better
        assert info.urls == (
            f"https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/{filename}",
            f"https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/{filename}",
        )
        assert "non-commercial" in info.terms and "Chaofeng Chen" in info.terms


def test_defaults_are_registered_with_the_right_mode() -> None:
    assert get_checkpoint(DEFAULT_NR_MODEL).mode == "nr"
    assert get_checkpoint(DEFAULT_FR_MODEL).mode == "fr"


def test_unknown_name_lists_valid_names_and_suggests() -> None:
    with pytest.raises(InvalidInputError) as err:
        get_checkpoint("topiq-nr")
    msg = str(err.value)
    assert "Did you mean 'topiq_nr'" in msg
    for name in EXPECTED:
        assert name in msg


@pytest.mark.parametrize(
    ("policy", "hw", "expected"),
    [
        (ResizePolicy(), (37, 91), (37, 91)),
        (ResizePolicy(384), (480, 640), (384, 512)),
        (ResizePolicy(384), (1920, 1080), (682, 384)),  # truncated, as torchvision does
        (ResizePolicy(384), (720, 1280), (384, 682)),
        (ResizePolicy(384), (100, 100), (384, 384)),
    ],
)
def test_resize_policy_keeps_aspect_and_sets_shorter_side(policy, hw, expected) -> None:
    assert policy.output_size(*hw) == expected


@pytest.mark.parametrize("hw", [(720, 1280), (1080, 1920), (2160, 3840), (1080, 1440), (97, 131)])
def test_resize_policy_matches_torchvision(hw):
    """The FLIVE checkpoint was evaluated through torchvision's resize(size=384)."""
    import torch
    import torchvision.transforms.functional as TF

    resized = TF.resize(torch.zeros(1, 3, *hw), 384, antialias=True)
    assert ResizePolicy(384).output_size(*hw) == tuple(resized.shape[-2:])
