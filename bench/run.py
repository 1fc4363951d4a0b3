"""Throughput benchmark: end-to-end scoring vs the naive per-frame loop, in one run.

    python -m bench                      # GPU: 1080p and 2160p, 300 frames, NR and FR
    python -m bench --smoke              # CPU, one tiny clip: proves the benchmark still runs

For every (mode, size) case it measures, on one machine and in one process:

* ``fast``: file in, per-frame table out, through :class:`topiq_video.pipeline.ScoringRun`
  with the library defaults (device, precision, batch size) and ``offset=0``; the model
  is loaded once beforehand (load time reported separately) and warmed up;
* ``fp32``: the same pass in float32, the reference for the fast path's score deviation
  (skipped where the fast path already runs float32, e.g. on CPU, where it is the same pass);
* ``naive``: :func:`bench.naive.run_naive`, float32, batch 1, FFmpeg RGB on the CPU;
* FLOPs of one forward at the clip's resolution (``FlopCounterMode``), achieved TFLOP/s,
  peak GPU memory, and the FR offset search time (measured apart, never in throughput).

Scores come from deterministic stand-in weights and mean nothing about quality.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.clips import ClipPair, ClipSpec, generate_clips, parse_size
from bench.naive import NaiveResult, run_naive
from bench.standin import write_standin_weights
from topiq_video.model import load_model
from topiq_video.model.cfanet import CFANet, cfanet_from_state_dict
from topiq_video.pipeline.collect import collect
from topiq_video.pipeline.options import FrameSelection, ScoreOptions
from topiq_video.pipeline.run import ScoringRun
from topiq_video.scoring import TopiqModel, resolve_device

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_WORK_DIR = BENCH_DIR / "out"
DEFAULT_OUT = DEFAULT_WORK_DIR / "results.json"
DEFAULT_SIZES = ("1080p", "2160p")
DEFAULT_FRAMES = 300
DEFAULT_MODES = ("nr", "fr")
SMOKE_SIZES = ("smoke",)
SMOKE_FRAMES = 8
MODEL_NAMES = {"nr": "topiq_nr", "fr": "topiq_fr"}
# Frames the naive loop runs before timing (cuDNN/allocator warm-up).
NAIVE_WARMUP_FRAMES = 2
# Frames compared for the model-parity figure (naive loop vs batched TopiqModel, same RGB).
PARITY_FRAMES = 8
# GPU goals at 1080p, end to end on one H100 (frames or pairs per second, speed-up vs naive).
TARGETS = {
    "nr": {"size": "1920x1080", "fps": 300.0, "speedup": 5.0},
    "fr": {"size": "1920x1080", "fps": 150.0, "speedup": 4.0},
}
STANDIN_NOTE = (
    "Scores come from deterministic stand-in weights (the published TOPIQ weights are not "
    "used): they mean nothing about quality. Only timings and deviations between execution "
    "paths matter."
)


@dataclass(frozen=True)
class PassResult:
    """One timed pipeline pass."""

    table: pd.DataFrame
    seconds: float
    peak_bytes: int | None

    @property
    def frames(self) -> int:
        return len(self.table)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _resident(device: torch.device) -> int | None:
    """Memory held before a pass (all loaded models' weights), to read the peak against."""
    return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else None


def count_flops(network: CFANet, width: int, height: int, device: torch.device) -> int:
    """FLOPs of one forward on one frame (one pair for FR) at ``width`` x ``height``."""
    gen = torch.Generator().manual_seed(0)
    dist = torch.rand(1, 3, height, width, generator=gen).to(device)
    ref = torch.rand(1, 3, height, width, generator=gen).to(device) if network.use_ref else None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        network(dist) if ref is None else network(dist, ref)
    return int(counter.get_total_flops())


def pipeline_pass(
    model: TopiqModel, dist: Path, ref: Path | None, max_frames: int | None
) -> PassResult:
    """File(s) in, per-frame table out, timed, with an already loaded model and offset 0."""
    name = model.info.name
    options = ScoreOptions(
        model=name,
        metrics=(name,),
        offset=0.0,
        selection=FrameSelection(max_frames=max_frames),
    )
    device = model.device
    _sync(device)
    _reset_peak(device)
    start = time.perf_counter()
    run = ScoringRun(str(dist), None if ref is None else str(ref), options, models={name: model})
    result, failure = collect(run)
    if failure is not None:
        raise failure
    assert result is not None
    table = result.frames
    _sync(device)
    seconds = time.perf_counter() - start
    return PassResult(table, seconds, _peak(device))


def offset_search_seconds(model: TopiqModel, dist: Path, ref: Path) -> float:
    """Time of the automatic offset search alone (ScoringRun set-up with offset='auto')."""
    name = model.info.name
    start = time.perf_counter()
    with ScoringRun(
        str(dist), str(ref), ScoreOptions(model=name, metrics=(name,)), models={name: model}
    ) as run:
        run.align()
    return time.perf_counter() - start


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    if n == 0:
        return float("nan")
    return float(np.max(np.abs(np.asarray(a[:n], np.float64) - np.asarray(b[:n], np.float64))))


def model_parity(
    model: TopiqModel, naive: NaiveResult, dist: Path, ref: Path | None, frames: int
) -> float:
    """Largest |naive - batched TopiqModel| score on the same FFmpeg RGB frames (float32 both).

    Isolates the model execution (batching, channels_last, the wrapper) from the colour
    conversion, which differs on purpose between the two paths.
    """
    from bench.naive import _rgb_frames

    def stack(path: Path) -> torch.Tensor:
        arrays = list(_rgb_frames(path, frames))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0

    d = stack(dist)
    r = None if ref is None else stack(ref)
    scores = model.score(d, r).numpy()
    return _max_abs(scores, naive.scores[: len(scores)])


def _rate(frames: int, seconds: float) -> float:
    return frames / seconds if seconds > 0 else float("inf")


def _tflops(flops_per_frame: int, frames: int, seconds: float) -> float:
    return flops_per_frame * frames / seconds / 1e12 if seconds > 0 else float("inf")


def run_case(
    mode: str,
    clips: ClipPair,
    fast_model: TopiqModel,
    fp32_model: TopiqModel | None,
    naive_net: CFANet | None,
    device: torch.device,
    warmup_frames: int,
) -> dict[str, Any]:
    """All figures for one (mode, size) case."""
    spec = clips.spec
    dist = clips.dist
    ref = clips.source if mode == "fr" else None
    name = fast_model.info.name
    flop_net = naive_net if naive_net is not None else fast_model.network
    flops = count_flops(flop_net, spec.width, spec.height, device)

    pipeline_pass(fast_model, dist, ref, warmup_frames)  # warm-up (also settles any OOM shrink)
    fast = pipeline_pass(fast_model, dist, ref, spec.frames)
    case: dict[str, Any] = {
        "mode": mode,
        "model": name,
        "size": f"{spec.width}x{spec.height}",
        "width": spec.width,
        "height": spec.height,
        "frames": fast.frames,
        "clip": {
            "dist": str(dist),
            "source": str(clips.source),
            "generate_seconds": clips.generate_seconds,
        },
        "flops_per_frame": flops,
        "resident_memory_bytes": _resident(device),
        "fast": {
            "precision": fast_model.precision,
            "batch_size": fast_model.batch_size,
            "seconds": fast.seconds,
            "fps": _rate(fast.frames, fast.seconds),
            "tflops": _tflops(flops, fast.frames, fast.seconds),
            "peak_memory_bytes": fast.peak_bytes,
        },
    }

    if fp32_model is None:
        reference = fast  # the fast path already is float32
        case["fp32"] = {"same_as_fast": True, "seconds": fast.seconds, "fps": case["fast"]["fps"]}
    else:
        pipeline_pass(fp32_model, dist, ref, warmup_frames)
        reference = pipeline_pass(fp32_model, dist, ref, spec.frames)
        case["fp32"] = {
            "same_as_fast": False,
            "seconds": reference.seconds,
            "fps": _rate(reference.frames, reference.seconds),
            "peak_memory_bytes": reference.peak_bytes,
        }
    case["max_abs_diff_fast_vs_fp32"] = _max_abs(
        fast.table[name].to_numpy(), reference.table[name].to_numpy()
    )

    case["naive"] = None
    case["speedup"] = None
    case["max_abs_diff_naive_vs_fp32"] = None
    case["model_parity_max_abs"] = None
    if naive_net is not None:
        run_naive(naive_net, dist, ref, device=device, max_frames=NAIVE_WARMUP_FRAMES)
        _reset_peak(device)
        naive = run_naive(naive_net, dist, ref, device=device, max_frames=spec.frames)
        naive_peak = _peak(device)
        case["naive"] = {
            "precision": "fp32",
            "batch_size": 1,
            "seconds": naive.seconds,
            "fps": _rate(naive.frames, naive.seconds),
            "tflops": _tflops(flops, naive.frames, naive.seconds),
            "peak_memory_bytes": naive_peak,
            "frames": naive.frames,
        }
        case["speedup"] = case["fast"]["fps"] / case["naive"]["fps"]
        # Includes the colour conversion difference (FFmpeg rgb24 vs the library's own).
        case["max_abs_diff_naive_vs_fp32"] = _max_abs(
            naive.scores, reference.table[name].to_numpy()
        )
        parity_model = fp32_model if fp32_model is not None else fast_model
        case["model_parity_max_abs"] = model_parity(
            parity_model, naive, dist, ref, min(PARITY_FRAMES, naive.frames)
        )

    if ref is not None:
        case["offset_search_seconds"] = offset_search_seconds(fast_model, dist, ref)

    target = TARGETS[mode]
    if device.type == "cuda" and case["size"] == target["size"]:
        case["target"] = {
            **target,
            "fps_met": case["fast"]["fps"] >= target["fps"],
            "speedup_met": None
            if case["speedup"] is None
            else case["speedup"] >= target["speedup"],
        }
    return case


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "av": av.__version__,
        "ffmpeg": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
        "torch_threads": torch.get_num_threads(),
        "cudnn_benchmark_fast_path": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - a dependency of the library
        env["torchvision"] = None
    return env


def _fmt(value: float | None, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def format_table(results: dict[str, Any]) -> str:
    """The cases as an aligned plain-text table."""
    header = (
        "mode", "size", "frames", "e2e fps", "naive fps", "speedup", "TFLOP/s e2e",
        "TFLOP/s naive", "peak MiB e2e", "peak MiB naive", "max|d| vs fp32", "prec", "batch",
    )  # fmt: skip
    rows = [header]
    for c in results["cases"]:
        naive = c["naive"] or {}
        rows.append(
            (
                c["mode"].upper(),
                c["size"],
                str(c["frames"]),
                _fmt(c["fast"]["fps"]),
                _fmt(naive.get("fps")),
                _fmt(c["speedup"], ".2f") + ("x" if c["speedup"] is not None else ""),
                _fmt(c["fast"]["tflops"], ".2f"),
                _fmt(naive.get("tflops"), ".2f"),
                _mib(c["fast"]["peak_memory_bytes"]),
                _mib(naive.get("peak_memory_bytes")),
                _fmt(c["max_abs_diff_fast_vs_fp32"], ".2e"),
                c["fast"]["precision"],
                str(c["fast"]["batch_size"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _parse_list(text: str, allowed: Sequence[str] | None = None) -> list[str]:
    items = [x.strip().lower() for x in text.split(",") if x.strip()]
    if allowed is not None:
        bad = [x for x in items if x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
    return items


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="TOPIQ video throughput: end-to-end scoring vs a naive per-frame loop.",
    )
    p.add_argument("--smoke", action="store_true", help="CPU, tiny clip, few frames (CI)")
    p.add_argument(
        "--sizes", help=f"comma list of presets or WxH (default {','.join(DEFAULT_SIZES)})"
    )
    p.add_argument("--frames", type=int, help=f"frames per clip (default {DEFAULT_FRAMES})")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help="comma list of nr,fr")
    p.add_argument(
        "--device", help="cpu, cuda, cuda:N (default: cuda when available; cpu in --smoke)"
    )
    p.add_argument("--precision", help="fast path precision (default: the library's, fp16 on CUDA)")
    p.add_argument("--batch-size", type=int, help="fast path batch size (default: the library's)")
    p.add_argument("--skip-naive", action="store_true", help="do not run the naive baseline")
    p.add_argument(
        "--warmup-frames", type=int, help="frames scored before timing (default 2 batches)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument(
        "--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="clips and stand-in weights"
    )
    return p


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Generate clips and weights, run every case, return the results document."""
    sizes = (
        _parse_list(args.sizes)
        if args.sizes
        else list(SMOKE_SIZES if args.smoke else DEFAULT_SIZES)
    )
    frames = args.frames or (SMOKE_FRAMES if args.smoke else DEFAULT_FRAMES)
    modes = _parse_list(args.modes, DEFAULT_MODES)
    device = resolve_device(args.device or ("cpu" if args.smoke else None))
    work = Path(args.work_dir)

    results: dict[str, Any] = {
        "note": STANDIN_NOTE,
        "environment": environment(device),
        "config": {
            "smoke": bool(args.smoke),
            "sizes": sizes,
            "frames": frames,
            "modes": modes,
            "device": str(device),
            "skip_naive": bool(args.skip_naive),
            "precision": args.precision or "default",
            "batch_size": args.batch_size or "auto",
            "offset": 0.0,
            "naive": "per frame, float32, batch 1, frame.to_ndarray('rgb24'), cudnn deterministic",
        },
        "targets": TARGETS,
        "cases": [],
    }
    specs = [ClipSpec(*parse_size(s), frames=frames) for s in sizes]
    clip_sets = {}
    for spec in specs:
        clips = generate_clips(spec, work / "clips", device)
        clip_sets[spec] = clips
        print(
            f"clip {spec.width}x{spec.height}: {clips.dist.name} ({clips.generate_seconds:.1f} s)",
            file=sys.stderr,
        )

    for mode in modes:
        name = MODEL_NAMES[mode]
        weights = write_standin_weights(
            work / "weights" / f"standin_{mode}.pth", use_ref=mode == "fr"
        )
        start = time.perf_counter()
        fast_model = load_model(
            name,
            weights=weights,
            device=device,
            precision=args.precision,
            batch_size=args.batch_size,
        )
        load_seconds = time.perf_counter() - start
        fp32_model = None
        if fast_model.precision != "fp32":
            fp32_model = load_model(name, weights=weights, device=device, precision="fp32")
        naive_net = None
        if not args.skip_naive:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            naive_net = cfanet_from_state_dict(state, use_ref=mode == "fr").to(device).eval()
            del state
        warmup = args.warmup_frames or (2 * fast_model.batch_size)
        for spec in specs:
            case = run_case(
                mode, clip_sets[spec], fast_model, fp32_model, naive_net, device, warmup
            )
            case["fast"]["model_load_seconds"] = load_seconds
            results["cases"].append(case)
            print(
                f"{mode} {case['size']}: {case['fast']['fps']:.1f} fps end to end", file=sys.stderr
            )
        del fast_model, fp32_model, naive_net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def _finite(value: Any) -> Any:
    """NaN/inf -> None, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = run_benchmark(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_finite(results), indent=2, default=str, allow_nan=False))
    print(STANDIN_NOTE)
    print(f"device: {results['environment']['device_name']} ({results['environment']['device']})")
    print(format_table(results))
    verdict = {True: "met", False: "MISSED", None: "not measured"}
    for case in results["cases"]:
        target = case.get("target")
        if target:
            print(
                f"target {case['mode'].upper()} {target['size']}: "
                f">= {target['fps']:.0f} fps {verdict[target['fps_met']]}, "
                f">= {target['speedup']:.0f}x naive {verdict[target['speedup_met']]}"
            )
    print(f"results: {out}")
    return 0


__all__ = ["count_flops", "format_table", "main", "pipeline_pass", "run_benchmark"]
