"""CPU batch-size benchmark: seconds per frame of TopiqModel.score at several batch sizes
against the naive way (one frame at a time, float32, the CFANet module called directly).

    python -m bench.cpu_batch                 # 360p and 720p, NR and FR, batch sizes 1, 2, 4
    python -m bench.cpu_batch --smoke         # tiny frames, seconds: proves the script runs

It times the model only (frames are already float RGB tensors; no decoding or colour
conversion), in one process. A shared CPU is noisy, so the variants are interleaved: every
repetition runs each variant once, in an order rotated from one repetition to the next,
and the figure kept is the median over repetitions. The JSON (``--out``) holds every sample,
the medians, each variant's ratio to the naive way, the largest score difference against
the naive way (the variants must score the same frames alike) and the batch size the
measurements recommend for the CPU.

Scores come from deterministic stand-in weights (bench/standin.py) and mean nothing about
quality.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.clips import ClipSpec, SceneGenerator, parse_size
from bench.run import STANDIN_NOTE, environment
from bench.standin import write_standin_weights
from topiq_video.model import load_model
from topiq_video.model.cfanet import CFANet
from topiq_video.scoring import TopiqModel

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_WORK_DIR = BENCH_DIR / "out"
DEFAULT_OUT = DEFAULT_WORK_DIR / "cpu_batch.json"
DEFAULT_SIZES = ("360p", "720p")
DEFAULT_MODES = ("nr", "fr")
DEFAULT_BATCH_SIZES = (1, 2, 4)
DEFAULT_FRAMES = 4  # per repetition; a multiple of every batch size, so all see full batches
DEFAULT_REPS = 3
SMOKE_SIZES = ("64x48",)
SMOKE_BATCH_SIZES = (1, 2)
SMOKE_FRAMES = 2
SMOKE_REPS = 2
MODEL_NAMES = {"nr": "topiq_nr", "fr": "topiq_fr"}
NAIVE = "naive"
# A batch size must beat batch 1 by more than this (worst case over all cases) to be chosen:
# smaller wins are within the noise of a shared CPU.
RECOMMEND_MARGIN = 0.05


def variant_name(kind: str, threads: int | None = None) -> str:
    """``naive`` or ``score_b<N>``, suffixed ``_t<threads>`` when several thread counts run."""
    return kind if threads is None else f"{kind}_t{threads}"


def score_kind(batch_size: int) -> str:
    return f"score_b{batch_size}"


def make_frames(width: int, height: int, count: int, seed_offset: int = 0) -> torch.Tensor:
    """``count`` textured RGB frames (bench/clips.py's scene) as float (N, 3, H, W) in [0, 1]."""
    gen = SceneGenerator(ClipSpec(width, height, frames=count + seed_offset))
    arrays = [gen.frame(t + seed_offset) for t in range(count)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255).contiguous()


def naive_scores(network: CFANet, dist: torch.Tensor, ref: torch.Tensor | None) -> np.ndarray:
    """The reference implementation's way: one frame, float32, contiguous NCHW, no_grad."""
    out = []
    with torch.no_grad():
        for i in range(dist.shape[0]):
            d = dist[i : i + 1].contiguous()
            r = None if ref is None else ref[i : i + 1].contiguous()
            out.append(float((network(d) if r is None else network(d, r)).item()))
    return np.asarray(out, dtype=np.float64)


def _timed(fn: Callable[[], np.ndarray], frames: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    scores = fn()
    return (time.perf_counter() - start) / frames, scores


def run_case(
    mode: str,
    size: tuple[int, int],
    model: TopiqModel,
    naive_net: CFANet,
    batch_sizes: Sequence[int],
    threads: Sequence[int],
    frames: int,
    reps: int,
) -> dict[str, Any]:
    """Interleaved repetitions of every variant on the same frames; medians per variant.

    Variants: the naive way and TopiqModel.score at each batch size, at each thread count
    (``torch.set_num_threads`` before every call; names get a ``_t<N>`` suffix when there
    are several).
    """
    width, height = size
    dist = make_frames(width, height, frames)
    ref = make_frames(width, height, frames, seed_offset=1) if mode == "fr" else None

    Scorer = Callable[[int], np.ndarray]  # scores of the first n frames

    def score_with(batch_size: int) -> Scorer:
        # Same network (already on the CPU in the library's layout), another batch size.
        scorer = TopiqModel(
            model.network, model.info, device="cpu", precision="fp32", batch_size=batch_size
        )
        return lambda n: scorer.score(dist[:n], None if ref is None else ref[:n]).double().numpy()

    scorers: dict[str, tuple[int, Scorer]] = {
        NAIVE: (1, lambda n: naive_scores(naive_net, dist[:n], None if ref is None else ref[:n]))
    }
    scorers.update({score_kind(b): (b, score_with(b)) for b in batch_sizes})
    several = len(threads) > 1
    variants: dict[str, tuple[str, int, int, Scorer]] = {}
    for t in threads:
        for kind, (batch, fn) in scorers.items():
            variants[variant_name(kind, t if several else None)] = (kind, t, batch, fn)
    names = list(variants)

    def call(name: str, n: int = frames) -> np.ndarray:
        torch.set_num_threads(variants[name][1])
        return variants[name][3](n)

    scores: dict[str, np.ndarray] = {}
    for name in names:
        # Warm-up on one batch: oneDNN primitives for that shape, allocator, positional
        # embedding cache.
        call(name, min(frames, variants[name][2]))
    samples: dict[str, list[float]] = {name: [] for name in names}
    order: list[str] = []
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, scores[name] = _timed(lambda n=name: call(n), frames)
            samples[name].append(seconds)
            order.append(name)
            print(f"  {mode} {width}x{height} rep {rep + 1}/{reps} {name}: {seconds:.3f} s/frame",
                  flush=True)  # fmt: skip

    medians = {name: statistics.median(values) for name, values in samples.items()}
    out: dict[str, Any] = {}
    for name, (kind, t, _, _) in variants.items():
        naive = variant_name(NAIVE, t if several else None)
        out[name] = {
            "kind": kind,
            "threads": t,
            "seconds_per_frame": samples[name],
            "median_seconds_per_frame": medians[name],
            "ratio_to_naive": medians[name] / medians[naive],  # naive at the same threads
            "max_abs_diff_vs_naive": float(np.max(np.abs(scores[name] - scores[naive]))),
        }
    return {
        "mode": mode,
        "size": f"{width}x{height}",
        "frames": frames,
        "reps": reps,
        "order": order,
        "variants": out,
    }


def recommend_batch_size(cases: Sequence[dict[str, Any]], batch_sizes: Sequence[int]) -> int:
    """The batch size whose worst ratio to the naive way (over all cases and thread counts)
    is lowest; batch 1 unless a larger one wins by more than :data:`RECOMMEND_MARGIN`."""

    def worst(b: int) -> float:
        return max(
            v["ratio_to_naive"]
            for case in cases
            for v in case["variants"].values()
            if v["kind"] == score_kind(b)
        )

    best = min(batch_sizes, key=worst)
    if 1 in batch_sizes and worst(best) > worst(1) * (1 - RECOMMEND_MARGIN):
        return 1
    return best


def format_table(results: dict[str, Any]) -> str:
    names = list(results["cases"][0]["variants"])
    header = f"{'mode':<4} {'size':>9}  " + "  ".join(f"{n:>16}" for n in names)
    lines = [header, "-" * len(header)]
    for case in results["cases"]:
        cells = []
        for n in names:
            v = case["variants"][n]
            cells.append(f"{v['median_seconds_per_frame']:7.3f}s {v['ratio_to_naive']:5.2f}x")
        lines.append(
            f"{case['mode'].upper():<4} {case['size']:>9}  " + "  ".join(f"{c:>16}" for c in cells)
        )
    lines.append(
        "median seconds per frame over interleaved repetitions, and the ratio to the naive way "
        f"(lower is better); recommended CPU batch size: {results['recommended_batch_size_cpu']}"
    )
    lines.append(STANDIN_NOTE)
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("positive integers, comma-separated")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.cpu_batch",
        description="Seconds per frame of TopiqModel.score on the CPU at several batch sizes, "
        "against one frame at a time in float32.",
    )
    p.add_argument("--smoke", action="store_true", help="tiny frames, 2 repetitions (seconds)")
    p.add_argument("--sizes", help=f"comma-separated sizes (default {','.join(DEFAULT_SIZES)})")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help="nr, fr or nr,fr")
    p.add_argument("--batch-sizes", type=_int_list, help="default 1,2,4 (1,2 with --smoke)")
    p.add_argument("--frames", type=int, help=f"frames per repetition (default {DEFAULT_FRAMES})")
    p.add_argument("--reps", type=int, help=f"repetitions (default {DEFAULT_REPS})")
    p.add_argument(
        "--threads",
        type=_int_list,
        help="torch.set_num_threads for every variant; several (e.g. 2,1) are interleaved "
        "too (default: torch's own)",
    )
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="stand-in weights")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    return p


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [parse_size(s) for s in (args.sizes.split(",") if args.sizes else
                                     (SMOKE_SIZES if args.smoke else DEFAULT_SIZES))]  # fmt: skip
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODEL_NAMES for m in modes):
        raise SystemExit(f"--modes: choose from {', '.join(MODEL_NAMES)}")
    batch_sizes = args.batch_sizes or list(SMOKE_BATCH_SIZES if args.smoke else DEFAULT_BATCH_SIZES)
    frames = args.frames or (SMOKE_FRAMES if args.smoke else DEFAULT_FRAMES)
    reps = args.reps or (SMOKE_REPS if args.smoke else DEFAULT_REPS)
    if frames < 1 or reps < 1:
        raise SystemExit("--frames and --reps must be positive")
    threads = args.threads or [torch.get_num_threads()]
    device = torch.device("cpu")

    cases = []
    for mode in modes:
        weights = write_standin_weights(args.work_dir / f"standin_{mode}.pth", mode == "fr")
        model = load_model(MODEL_NAMES[mode], weights=weights, device="cpu", precision="fp32")
        # The naive network is its own copy in the default (contiguous) memory format.
        naive_net = copy.deepcopy(model.network).to(memory_format=torch.contiguous_format)
        for size in sizes:
            cases.append(run_case(mode, size, model, naive_net, batch_sizes, threads, frames, reps))
    results: dict[str, Any] = {
        "note": STANDIN_NOTE,
        "environment": environment(device),
        "config": {
            "modes": modes,
            "sizes": [f"{w}x{h}" for w, h in sizes],
            "batch_sizes": batch_sizes,
            "frames": frames,
            "reps": reps,
            "threads": threads,
            "smoke": bool(args.smoke),
        },
        "cases": cases,
    }
    results["recommended_batch_size_cpu"] = recommend_batch_size(cases, batch_sizes)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = run_benchmark(args)
    print(format_table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
