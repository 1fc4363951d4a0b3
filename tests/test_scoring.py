"""The batched scorer: input validation, batching, resize policy, OOM fallback, load_model.

Real CFANets use deterministic stand-in weights (scores carry no quality meaning) on tiny
images; OOM and resize behaviour use a cheap stand-in network so they run in milliseconds.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from standin import FIXTURE_PATH
from torch import nn

from topiq_video.errors import InvalidInputError
from topiq_video.model import load_model
from topiq_video.model.registry import get_checkpoint
from topiq_video.scoring import DEFAULT_PRECISION_CPU, TopiqModel


@pytest.fixture(scope="module")
def fr_model(fr_checkpoint) -> TopiqModel:
    return load_model("topiq_fr", weights=fr_checkpoint, device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def nr_model(nr_checkpoint) -> TopiqModel:
    return load_model("topiq_nr", weights=nr_checkpoint, device="cpu", batch_size=2)


def _frames(n: int, h: int = 96, w: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_load_model_matches_reference_fixture(fr_model, nr_model) -> None:
    assert fr_model.device == torch.device("cpu") and fr_model.precision == DEFAULT_PRECISION_CPU
    assert fr_model.weights is not None and fr_model.weights.source == "local"
    with np.load(FIXTURE_PATH) as data:
        dist = torch.from_numpy(data["dist_0"]).permute(2, 0, 1)[None].float() / 255
        ref = torch.from_numpy(data["ref_0"]).permute(2, 0, 1)[None].float() / 255
        fr_expected, nr_expected = (
            float(data["fr_score_0"].item()),
            float(data["nr_score_0"].item()),
        )
    fr = fr_model.score(dist, ref)
    nr = nr_model.score(dist)
    assert fr.shape == (1,) and fr.dtype == torch.float32 and fr.device.type == "cpu"
    assert fr.item() == pytest.approx(fr_expected, abs=1e-4)
    assert nr.item() == pytest.approx(nr_expected, abs=1e-4)


def test_batching_equals_single_calls(fr_model) -> None:
    dist, ref = _frames(3, seed=1), _frames(3, seed=2)
    batched = fr_model.score(dist, ref)  # batch_size 2: batches of 2 and 1
    singles = torch.cat([fr_model.score(dist[i : i + 1], ref[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("dist", "match"),
    [
        (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
        (torch.full((1, 3, 8, 8), float("inf")), "NaN or infinite"),
        (torch.full((1, 3, 8, 8), 255.0), "divide by 255"),
        (torch.full((1, 3, 8, 8), -0.5), r"outside \[0, 1\]"),
        (torch.rand(3, 8, 8), "Add a batch dimension"),
        (torch.rand(1, 8, 8, 3), r"\(N, 3, H, W\)"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "/ 255"),
    ],
)
def test_invalid_inputs_are_rejected(fr_model, dist, match) -> None:
    ref = torch.rand(*dist.shape) if dist.ndim == 4 else None
    with pytest.raises(InvalidInputError, match=match):
        fr_model.score(dist, ref)


def test_reference_rules(fr_model, nr_model) -> None:
    with pytest.raises(InvalidInputError, match="full-reference"):
        fr_model.score(_frames(1))
    with pytest.raises(InvalidInputError, match="differs"):
        fr_model.score(_frames(2), _frames(1))
    with pytest.raises(InvalidInputError, match="differs"):
        fr_model.score(_frames(1), _frames(1, h=64))
    with pytest.raises(InvalidInputError, match="no-reference"):
        nr_model.score(_frames(1), _frames(1))


class _FakeNet(nn.Module):
    """Scores = per-frame mean; raises CUDA OOM for batches larger than ``max_batch``."""

    def __init__(self, max_batch: int = 1_000) -> None:
        super().__init__()
        self.max_batch = max_batch
        self.batch_sizes: list[int] = []
        self.input_shapes: list[tuple[int, ...]] = []

    def forward(self, dist: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        self.batch_sizes.append(dist.shape[0])
        self.input_shapes.append(tuple(dist.shape))
        if dist.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        out = dist.mean(dim=(1, 2, 3))
        return out if ref is None else out - ref.mean(dim=(1, 2, 3))


def test_oom_halves_batch_and_scores_every_frame(caplog) -> None:
    net = _FakeNet(max_batch=2)
    model = TopiqModel(net, get_checkpoint("topiq_fr"), device="cpu", batch_size=8)
    dist, ref = _frames(7, 16, 16, seed=3), _frames(7, 16, 16, seed=4)
    with caplog.at_level(logging.WARNING, logger="topiq_video"):
        scores = model.score(dist, ref)
        again = model.score(dist, ref)
    expected = dist.mean(dim=(1, 2, 3)) - ref.mean(dim=(1, 2, 3))
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(again, expected)
    assert model.batch_size == 2
    assert sum(b for b in net.batch_sizes if b <= 2) == 14  # every frame scored, none twice
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Out of" in warnings[0].getMessage()


def test_oom_at_batch_one_is_a_clear_error() -> None:
    model = TopiqModel(
        _FakeNet(max_batch=0), get_checkpoint("topiq_nr"), device="cpu", batch_size=4
    )
    with pytest.raises(InvalidInputError, match="single 16x16 frame"):
        model.score(_frames(3, 16, 16))


def test_resize_policy_is_applied() -> None:
    net = _FakeNet()
    flive = TopiqModel(net, get_checkpoint("topiq_nr-flive"), device="cpu", batch_size=4)
    frames = _frames(2, 48, 64)
    scores = flive.score(frames)
    assert net.input_shapes == [(2, 3, 384, 512)]
    # Antialiased bilinear resize preserves the mean closely; it did not clip or rescale values.
    torch.testing.assert_close(scores, frames.mean(dim=(1, 2, 3)), atol=2e-3, rtol=0)
    native = TopiqModel(net, get_checkpoint("topiq_nr"), device="cpu", batch_size=4)
    native.score(frames)
    assert net.input_shapes[-1] == (2, 3, 48, 64)


def test_cpu_scores_one_frame_at_a_time_by_default() -> None:
    """Batching made the CPU slower per frame (bench/cpu_batch.py): frames go through singly."""
    net = _FakeNet()
    model = TopiqModel(net, get_checkpoint("topiq_nr"), device="cpu")
    frames = _frames(3, 16, 16)
    scores = model.score(frames)
    assert net.batch_sizes == [1, 1, 1] and model.batch_size == 1
    torch.testing.assert_close(scores, frames.mean(dim=(1, 2, 3)))


def test_bf16_autocast_returns_float32() -> None:
    model = TopiqModel(_FakeNet(), get_checkpoint("topiq_nr"), device="cpu", precision="bf16")
    assert model.score(_frames(2, 16, 16)).dtype == torch.float32


def test_option_validation() -> None:
    info = get_checkpoint("topiq_nr")
    with pytest.raises(InvalidInputError, match="precision"):
        TopiqModel(_FakeNet(), info, device="cpu", precision="fp8")
    with pytest.raises(InvalidInputError, match="batch_size"):
        TopiqModel(_FakeNet(), info, device="cpu", batch_size=0)
    with pytest.raises(InvalidInputError, match="device"):
        TopiqModel(_FakeNet(), info, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="CUDA is not available"):
            load_model("topiq_nr", device="cuda")
    with pytest.raises(InvalidInputError, match="Unknown model"):
        load_model("topiq_xx", device="cpu")


def test_reference_features_computed_once_give_the_same_scores(fr_model):
    """compare scores several encodes of one source with its features computed once."""
    gen = torch.Generator().manual_seed(3)
    ref = torch.rand(3, 3, 64, 96, generator=gen)
    encodes = [(ref + 0.05 * torch.randn(ref.shape, generator=gen)).clamp(0, 1) for _ in range(2)]
    features = fr_model.reference_features(ref)
    for dist in encodes:
        direct = fr_model.score(dist, ref)
        shared = fr_model.score(dist, ref_features=features)
        assert torch.allclose(direct, shared, atol=1e-6), (direct, shared)
    # A batch mixing the reference frames in another order: features are per frame.
    order = torch.tensor([2, 0, 1])
    mixed = fr_model.score(encodes[0][order], ref_features=[f[order] for f in features])
    assert torch.allclose(mixed, fr_model.score(encodes[0], ref)[order], atol=1e-6)
    with pytest.raises(InvalidInputError, match="ref or ref_features"):
        fr_model.score(encodes[0], ref, ref_features=features)
