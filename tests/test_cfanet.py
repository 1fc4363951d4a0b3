"""CFANet: checkpoint layout, numerical parity with the reference implementation, batching,
odd frame sizes and wrong-architecture errors.

Weights are deterministic stand-ins (tests/standin.py); their scores mean nothing about quality.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from standin import (
    FIXTURE_PATH,
    fixture_key_shapes,
    fixture_salt,
    standin_state_dict,
    write_standin_checkpoint,
)

from topiq_video.errors import InvalidInputError, WeightsError
from topiq_video.model.cfanet import (
    CFANet,
    cfanet_from_state_dict,
    cfanet_key_shapes,
    load_cfanet_state_dict,
)

PARITY_TOL = 1e-4
BATCH_TOL = 1e-5
CASES = range(4)


@pytest.fixture(scope="module")
def fixture_data() -> dict[str, np.ndarray]:
    with np.load(FIXTURE_PATH) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def standin_nr() -> dict[str, torch.Tensor]:
    return standin_state_dict(fixture_key_shapes("nr"), fixture_salt())


@pytest.fixture(scope="module")
def standin_fr() -> dict[str, torch.Tensor]:
    return standin_state_dict(fixture_key_shapes("fr"), fixture_salt())


@pytest.fixture(scope="module")
def nr_model(standin_nr: dict[str, torch.Tensor]) -> CFANet:
    model = CFANet(use_ref=False)
    load_cfanet_state_dict(model, standin_nr)
    return model.eval()


@pytest.fixture(scope="module")
def fr_model(standin_fr: dict[str, torch.Tensor]) -> CFANet:
    model = CFANet(use_ref=True)
    load_cfanet_state_dict(model, standin_fr)
    return model.eval()


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def _meta_model(use_ref: bool) -> CFANet:
    # Weightless model: enough for layout checks, and a failed load cannot corrupt a shared one.
    with torch.device("meta"):
        return CFANet(use_ref)


@pytest.mark.parametrize("mode", ["nr", "fr"])
def test_state_dict_layout_matches_official_checkpoints(mode: str) -> None:
    expected = fixture_key_shapes(mode)
    assert cfanet_key_shapes(mode == "fr") == expected
    model_sd = _meta_model(mode == "fr").state_dict()
    assert {k: tuple(v.shape) for k, v in model_sd.items()} == expected
    # The normalisation constants are not state: official files would not load otherwise.
    assert not any("mean" in k and "running" not in k for k in model_sd)


@pytest.mark.parametrize("case", CASES)
def test_nr_parity_with_reference(nr_model: CFANet, fixture_data: dict, case: int) -> None:
    with torch.no_grad():
        score = nr_model(_to_tensor(fixture_data[f"dist_{case}"]))
    assert score.shape == (1,)
    expected = float(fixture_data[f"nr_score_{case}"].reshape(()))
    assert abs(float(score[0]) - expected) <= PARITY_TOL


@pytest.mark.parametrize("case", CASES)
def test_fr_parity_with_reference(fr_model: CFANet, fixture_data: dict, case: int) -> None:
    with torch.no_grad():
        score = fr_model(
            _to_tensor(fixture_data[f"dist_{case}"]), _to_tensor(fixture_data[f"ref_{case}"])
        )
    assert score.shape == (1,)
    expected = float(fixture_data[f"fr_score_{case}"].reshape(()))
    assert abs(float(score[0]) - expected) <= PARITY_TOL


def test_official_file_format_round_trip(tmp_path, fixture_data: dict) -> None:
    """A torch.save'd {"params": ...} file builds a model (fast path) with the reference score."""
    path = write_standin_checkpoint(tmp_path / "nr.pth", "nr", fixture_salt())
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"params"}
    model = cfanet_from_state_dict(checkpoint, use_ref=False)
    assert not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    with torch.no_grad():
        score = model(_to_tensor(fixture_data["dist_1"]))
    assert abs(float(score[0]) - float(fixture_data["nr_score_1"].reshape(()))) <= PARITY_TOL


def _crops(fixture_data: dict, prefix: str, size: tuple[int, int] = (64, 96)) -> torch.Tensor:
    h, w = size
    return torch.cat(
        [_to_tensor(fixture_data[f"{prefix}_{i}"][3 : 3 + h, 5 : 5 + w]) for i in CASES]
    )


def test_nr_batch_equals_single_calls(nr_model: CFANet, fixture_data: dict) -> None:
    batch = _crops(fixture_data, "dist")
    with torch.no_grad():
        together = nr_model(batch)
        alone = torch.cat([nr_model(batch[i : i + 1]) for i in range(len(batch))])
    assert together.shape == (len(batch),)
    assert torch.allclose(together, alone, atol=BATCH_TOL, rtol=0)
    assert together.unique().numel() == len(batch)  # different images, different scores


def test_fr_batch_equals_single_calls(fr_model: CFANet, fixture_data: dict) -> None:
    dist, ref = _crops(fixture_data, "dist"), _crops(fixture_data, "ref")
    with torch.no_grad():
        together = fr_model(dist, ref)
        alone = torch.cat([fr_model(dist[i : i + 1], ref[i : i + 1]) for i in range(len(dist))])
    assert together.shape == (len(dist),)
    assert torch.allclose(together, alone, atol=BATCH_TOL, rtol=0)
    assert together.unique().numel() == len(dist)


# 8x64 makes one level match the top grid in height only, which the reference does not pool.
@pytest.mark.parametrize("size", [(97, 131), (33, 47), (8, 64)])
def test_odd_sizes_give_finite_scores(nr_model: CFANet, fr_model: CFANet, size) -> None:
    gen = torch.Generator().manual_seed(7)
    dist = torch.rand(2, 3, *size, generator=gen)
    ref = torch.rand(2, 3, *size, generator=gen)
    with torch.no_grad():
        nr = nr_model(dist)
        fr = fr_model(dist, ref)
    assert nr.shape == fr.shape == (2,)
    assert torch.isfinite(nr).all() and torch.isfinite(fr).all()


def test_identical_reference_differs_from_distorted_reference(
    fr_model: CFANet, fixture_data: dict
) -> None:
    """The FR path really uses the reference (and survives a zero distance through the sqrt)."""
    dist = _to_tensor(fixture_data["dist_0"])
    with torch.no_grad():
        same = fr_model(dist, dist)
        other = fr_model(dist, _to_tensor(fixture_data["ref_0"]))
    assert math.isfinite(float(same)) and abs(float(same) - float(other)) > 1e-4


def test_positional_cache_follows_parameter_changes(
    standin_nr: dict[str, torch.Tensor], fixture_data: dict
) -> None:
    model = cfanet_from_state_dict(standin_nr, use_ref=False)
    x = _to_tensor(fixture_data["dist_0"])
    with torch.no_grad():
        first = model(x)
        assert torch.equal(model(x), first)  # served from the cache, same result
        model.h_emb.add_(0.5)
        changed = model(x)
    fresh_sd = dict(standin_nr, h_emb=standin_nr["h_emb"] + 0.5)
    with torch.no_grad():
        expected = cfanet_from_state_dict(fresh_sd, use_ref=False)(x)
    assert not torch.allclose(changed, first)
    assert torch.allclose(changed, expected, atol=1e-6, rtol=0)


def test_model_built_in_inference_mode_matches(
    nr_model: CFANet, standin_nr: dict[str, torch.Tensor], fixture_data: dict
) -> None:
    """Parameters created under inference_mode (no version counter) still work, twice."""
    x = _to_tensor(fixture_data["dist_3"])
    with torch.inference_mode():
        model = cfanet_from_state_dict(standin_nr, use_ref=False)
        first, second = model(x), model(x)
        expected = nr_model(x)
    assert torch.allclose(first, expected, atol=1e-6, rtol=0)
    assert torch.equal(first, second)


def test_nr_weights_into_fr_model_name_the_problem(standin_nr: dict[str, torch.Tensor]) -> None:
    with pytest.raises(WeightsError) as info:
        load_cfanet_state_dict(_meta_model(use_ref=True), {"params": standin_nr})
    message = str(info.value)
    assert "looks like an NR checkpoint" in message
    assert "weight_pool.0.splitconv.weight" in message  # an unexpected key is named
    assert "dim_reduce.0.0.weight" in message  # a shape mismatch is named


def test_fr_weights_into_nr_model_fast_path(standin_fr: dict[str, torch.Tensor]) -> None:
    with pytest.raises(WeightsError, match="looks like an FR checkpoint"):
        cfanet_from_state_dict(standin_fr, use_ref=False)


def test_truncated_and_foreign_state_dicts(standin_nr: dict[str, torch.Tensor]) -> None:
    partial = {k: v for k, v in standin_nr.items() if not k.startswith("attn_pool.")}
    with pytest.raises(WeightsError, match=r"12 missing keys: attn_pool\."):
        load_cfanet_state_dict(_meta_model(use_ref=False), partial)
    with pytest.raises(WeightsError, match="not a CFANet checkpoint"):
        load_cfanet_state_dict(_meta_model(use_ref=False), {"fc.weight": torch.zeros(2, 2)})


def test_invalid_inputs_are_rejected(nr_model: CFANet, fr_model: CFANet) -> None:
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(InvalidInputError, match="reference"):
        fr_model(x)
    with pytest.raises(InvalidInputError, match="no-reference"):
        nr_model(x, x)
    with pytest.raises(InvalidInputError, match=r"\(N, 3, H, W\)"):
        nr_model(x[0])
    with pytest.raises(InvalidInputError, match="differ"):
        fr_model(x, torch.rand(1, 3, 32, 40))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("use_ref", [False, True])
def test_cuda_matches_cpu(
    use_ref: bool, standin_nr: dict, standin_fr: dict, fixture_data: dict
) -> None:
    model = cfanet_from_state_dict(standin_fr if use_ref else standin_nr, use_ref)
    dist = _to_tensor(fixture_data["dist_2"])
    ref = _to_tensor(fixture_data["ref_2"]) if use_ref else None
    with torch.no_grad():
        cpu = model(dist, ref)
        model.cuda()
        gpu = model(dist.cuda(), None if ref is None else ref.cuda()).cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(dist.cuda(), None if ref is None else ref.cuda()).float().cpu()
    assert torch.allclose(gpu, cpu, atol=1e-3, rtol=0)
    assert torch.isfinite(low).all()
