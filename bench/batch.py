"""Per-item throughput of `topiq-video batch` and what Ray adds, on this machine.

    python -m bench.batch                           # 8 items, 640x360, 48 frames, PSNR/SSIM
    python -m bench.batch --weights standin         # with TOPIQ-FR (stand-in weights) too

One source and N encodes of it (CRF 20, 22, ...: N distinct items) are scored three ways,
each into a fresh output folder: in-process (one worker), and on a local Ray instance with
1 and with ``--workers`` actors. Per item it reports the time inside the worker (open,
align, score, scenes, pooling, gallery, report files) and, per run, the wall time with its
fixed costs apart: starting Ray, starting the first actor, and the first (cold) item.
Stand-in scores mean nothing about quality.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.clips import ClipSpec, SceneGenerator, parse_size
from bench.standin import write_standin_weights

DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "batch"


def make_items(out: Path, size: tuple[int, int], frames: int, n: int) -> Path:
    """A source, ``n`` encodes of it at rising CRFs, and the manifest listing them."""
    import av

    width, height = size
    folder = out / f"clips_{width}x{height}_{frames}"
    folder.mkdir(parents=True, exist_ok=True)
    crfs = [20 + 2 * i for i in range(n)]
    paths = {"source": folder / "source.mkv", **{c: folder / f"enc{c}.mkv" for c in crfs}}
    if not all(p.exists() for p in paths.values()):
        pictures = list(SceneGenerator(ClipSpec(width, height, frames, fps=24)))
        for key, path in paths.items():
            with av.open(str(path), "w") as container:
                stream = container.add_stream("libx264", rate=24)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.options = {"crf": "8" if key == "source" else str(key), "preset": "veryfast"}
                for i, rgb in enumerate(pictures):
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                        format="yuv420p"
                    )
                    frame.pts = i
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode(None):
                    container.mux(packet)
    manifest = folder / f"manifest_{n}.csv"
    manifest.write_text(
        "dist,ref,label\n" + "".join(f"enc{c}.mkv,source.mkv,crf {c}\n" for c in crfs)
    )
    return manifest


def _summary(name: str, result: Any, extra: dict[str, float]) -> dict[str, Any]:
    catalog = result.catalog
    elapsed = catalog["elapsed_s"].tolist()
    frames = int(catalog["frames"].sum())
    warm = elapsed[1:] if len(elapsed) > 1 else elapsed
    row = {
        "runner": name,
        "workers": result.workers,
        "items": result.total,
        "done": result.done,
        "wall_s": round(result.elapsed_s, 2),
        "item_s_median_warm": round(statistics.median(warm), 3),
        "item_s_first": round(elapsed[0], 3),
        "items_sum_s": round(sum(elapsed), 2),
        # Wall time not spent inside an item, per item: planning, dispatch, catalog and page.
        "overhead_per_item_s": round(
            (result.elapsed_s - sum(elapsed) / max(1, result.workers)) / result.total, 3
        ),
        "items_per_s": round(result.total / result.elapsed_s, 3),
        "frames_per_s": round(frames / result.elapsed_s, 1),
        **{k: round(v, 2) for k, v in extra.items()},
    }
    print(json.dumps(row), flush=True)
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    import shutil

    from topiq_video.batch import run_batch, start_local_ray

    out = Path(args.out)
    manifest = make_items(out, parse_size(args.size), args.frames, args.items)
    options: dict[str, Any] = {"metrics": "psnr_y,ssim_y", "device": args.device}
    if args.weights == "standin":
        options["weights"] = str(write_standin_weights(out / "standin_fr.pth", use_ref=True))
        options["metrics"] = "topiq_fr,psnr_y,ssim_y"
    elif args.weights:
        options["weights"] = args.weights
        options["metrics"] = "topiq_fr,psnr_y,ssim_y"
    rows = []

    def fresh(name: str) -> Path:
        target = out / "runs" / name
        shutil.rmtree(target, ignore_errors=True)
        return target

    result = run_batch(manifest, fresh("inproc"), use_ray=False, **options)
    rows.append(_summary("in-process", result, {}))
    started = time.perf_counter()
    ray = start_local_ray(num_cpus=max(os.cpu_count() or 1, args.workers))
    ray_start = time.perf_counter() - started
    try:
        for workers in sorted({1, args.workers}):
            result = run_batch(manifest, fresh(f"ray{workers}"), workers=workers, **options)
            rows.append(
                _summary(
                    "ray",
                    result,
                    {"ray_start_s": ray_start, "first_worker_s": result.worker_start_s},
                )
            )
    finally:
        ray.shutdown()
    return {
        "size": args.size,
        "frames": args.frames,
        "metrics": options["metrics"],
        "device": args.device,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "runs": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default=None, help="a checkpoint file, or 'standin'")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=1)
    print(text)
    (Path(args.out) / "result.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
