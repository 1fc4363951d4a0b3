"""The throughput benchmark's CPU smoke mode, so ``python -m bench`` cannot rot.

One subprocess run of the real CLI on two tiny clips, NR and FR, with the fast path in
bf16 so the separate float32 reference pass (the GPU code path) runs too.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SIZES = ("64x48", "96x64")
FRAMES = 4


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    work = tmp_path_factory.mktemp("bench")
    out = work / "results.json"
    # One OpenMP thread: on shared CI cores, spinning thread pools stall each other.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "bench", "--smoke",
        "--sizes", ",".join(SIZES), "--frames", str(FRAMES), "--precision", "bf16",
        "--work-dir", str(work), "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def _cases(results: dict) -> dict[tuple[str, str], dict]:
    return {(c["mode"], c["size"]): c for c in results["cases"]}


def test_smoke_has_every_case_with_positive_throughput(smoke: tuple[dict, str]) -> None:
    results, _ = smoke
    cases = _cases(results)
    assert set(cases) == {(m, s) for m in ("nr", "fr") for s in SIZES}
    for case in cases.values():
        assert case["frames"] == FRAMES
        assert case["fast"]["fps"] > 0 and case["fast"]["seconds"] > 0
        assert case["fast"]["tflops"] > 0
        assert case["naive"]["frames"] == FRAMES
        assert case["naive"]["fps"] > 0 and case["naive"]["batch_size"] == 1
        assert case["speedup"] == pytest.approx(case["fast"]["fps"] / case["naive"]["fps"])
        assert case["fp32"]["same_as_fast"] is False and case["fp32"]["fps"] > 0
        # CPU: no GPU memory figure rather than a made-up number.
        assert case["fast"]["peak_memory_bytes"] is None
    for size in SIZES:
        assert cases[("fr", size)]["offset_search_seconds"] >= 0
        assert "offset_search_seconds" not in cases[("nr", size)]


def test_deviation_is_finite_and_fp32_paths_agree(smoke: tuple[dict, str]) -> None:
    results, _ = smoke
    for case in results["cases"]:
        assert case["fast"]["precision"] == "bf16"
        deviation = case["max_abs_diff_fast_vs_fp32"]
        # bf16 vs fp32 must differ a little, but not blow up.
        assert math.isfinite(deviation) and 0 < deviation < 1.0
        # Same RGB frames: naive fp32 batch-1 loop vs the library's batched fp32 model.
        assert case["model_parity_max_abs"] <= 1e-4
        assert math.isfinite(case["max_abs_diff_naive_vs_fp32"])


def test_flops_positive_and_scale_with_resolution(smoke: tuple[dict, str]) -> None:
    results, _ = smoke
    cases = _cases(results)
    pixel_ratio = (96 * 64) / (64 * 48)
    for mode in ("nr", "fr"):
        small = cases[(mode, SIZES[0])]["flops_per_frame"]
        large = cases[(mode, SIZES[1])]["flops_per_frame"]
        assert small > 0
        # Convolutions dominate, so FLOPs grow roughly with the pixel count.
        assert 0.7 * pixel_ratio < large / small < 1.3 * pixel_ratio
    # FR runs the backbone on two images per frame.
    assert cases[("fr", SIZES[0])]["flops_per_frame"] > cases[("nr", SIZES[0])]["flops_per_frame"]


def test_output_table_and_metadata(smoke: tuple[dict, str]) -> None:
    results, stdout = smoke
    assert "stand-in weights" in results["note"]
    assert "stand-in" in stdout
    env = results["environment"]
    assert env["torch"] and env["av"] and env["device"] == "cpu"
    assert results["config"]["modes"] == ["nr", "fr"]
    assert results["config"]["frames"] == FRAMES
    lines = [line for line in stdout.splitlines() if line.strip().startswith(("NR", "FR"))]
    assert len(lines) == 4
    # Aligned: every table row has the header's width.
    header = next(line for line in stdout.splitlines() if "e2e fps" in line)
    assert all(len(line) == len(header) for line in lines)


def test_clip_content_is_deterministic_moving_and_textured() -> None:
    sys.path.insert(0, str(REPO))
    try:
        from bench.clips import ClipSpec, SceneGenerator
    finally:
        sys.path.remove(str(REPO))
    spec = ClipSpec(96, 64, frames=3)
    a = list(SceneGenerator(spec))
    b = list(SceneGenerator(spec))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    first = a[0].astype(np.float64)
    assert first.shape == (64, 96, 3) and first.std() > 20
    # Texture, not flat regions: neighbouring pixels differ on average.
    assert np.abs(np.diff(first, axis=1)).mean() > 2
    assert np.abs(a[2].astype(np.float64) - first).mean() > 5


# --------------------------------------------------------------------------- bench.cpu_batch


@pytest.fixture(scope="module")
def cpu_batch(
    tmp_path_factory: pytest.TempPathFactory, nr_checkpoint: Path, fr_checkpoint: Path
) -> tuple[dict, str]:
    work = tmp_path_factory.mktemp("cpu_batch")
    # The session's stand-ins follow bench/standin.py's recipe: reuse them, do not rewrite.
    (work / "standin_nr.pth").symlink_to(nr_checkpoint)
    (work / "standin_fr.pth").symlink_to(fr_checkpoint)
    out = work / "cpu_batch.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bench.cpu_batch", "--smoke", "--work-dir", str(work),
           "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_cpu_batch_smoke_times_every_variant_interleaved(cpu_batch: tuple[dict, str]) -> None:
    results, stdout = cpu_batch
    config = results["config"]
    assert config["smoke"] is True and config["threads"] == [1]
    names = ["naive"] + [f"score_b{b}" for b in config["batch_sizes"]]
    assert config["batch_sizes"] == [1, 2]
    cases = {(c["mode"], c["size"]): c for c in results["cases"]}
    assert set(cases) == {("nr", "64x48"), ("fr", "64x48")}
    for case in cases.values():
        assert list(case["variants"]) == names
        naive_median = case["variants"]["naive"]["median_seconds_per_frame"]
        for variant in case["variants"].values():
            samples = variant["seconds_per_frame"]
            assert len(samples) == config["reps"] == 2 and min(samples) > 0
            assert variant["median_seconds_per_frame"] == pytest.approx(np.median(samples))
            assert variant["ratio_to_naive"] == pytest.approx(
                variant["median_seconds_per_frame"] / naive_median
            )
            # Batched and per-frame scoring of the same frames agree (fp32 both ways).
            assert variant["max_abs_diff_vs_naive"] <= 1e-4
        # Interleaved: every repetition runs each variant once, starting somewhere else.
        order = case["order"]
        blocks = [order[i : i + len(names)] for i in range(0, len(order), len(names))]
        assert len(blocks) == 2 and all(sorted(b) == sorted(names) for b in blocks)
        assert blocks[0][0] != blocks[1][0]
    assert results["recommended_batch_size_cpu"] in config["batch_sizes"]
    assert "stand-in" in results["note"]
    rows = [line for line in stdout.splitlines() if line.startswith(("NR ", "FR "))]
    assert len(rows) == 2
    assert f"recommended CPU batch size: {results['recommended_batch_size_cpu']}" in stdout


def _case(ratios: dict[int, float]) -> dict:
    variants = {"naive": {"kind": "naive", "ratio_to_naive": 1.0}}
    for b, ratio in ratios.items():
        variants[f"score_b{b}"] = {"kind": f"score_b{b}", "ratio_to_naive": ratio}
    return {"variants": variants}


def test_cpu_batch_recommends_batching_only_where_it_pays_everywhere() -> None:
    sys.path.insert(0, str(REPO))
    try:
        from bench.cpu_batch import recommend_batch_size
    finally:
        sys.path.remove(str(REPO))
    # Batch 4 wins at 360p but loses at 720p: its worst case decides, so batch 1.
    assert recommend_batch_size([_case({1: 1.0, 4: 0.8}), _case({1: 1.0, 4: 1.6})], [1, 4]) == 1
    # A 2 % win is noise on a shared CPU.
    assert recommend_batch_size([_case({1: 1.0, 2: 0.98}), _case({1: 1.0, 2: 0.98})], [1, 2]) == 1
    # A clear win in every case is taken.
    cases = [_case({1: 1.0, 2: 0.7, 4: 0.8}), _case({1: 1.1, 2: 0.75, 4: 0.6})]
    assert recommend_batch_size(cases, [1, 2, 4]) == 2
