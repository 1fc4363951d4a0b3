"""VMAF through the pipeline's pipe against FFmpeg's libvmaf on the two files, in one run of
this script, on this machine.

    python -m bench.vmaf_pipe                     # 640x360, 25 fps, 20 s (500 frames)

Both variants are fresh processes a person would run: ``topiq-video score --metrics vmaf``
(decode both files with PyAV, align, pair, write the pairs to FFmpeg) and ``ffmpeg -i DIST -i
REF -lavfi libvmaf`` (FFmpeg decodes and pairs by itself). They are interleaved (A B A B ...)
and the medians compared; the per-frame values are checked to agree within 1e-3. The clips
are FFmpeg's testsrc2 pattern, encoded with x264 at CRF 12 and CRF 36.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "vmaf_pipe"


def _ffmpeg() -> str:
    from topiq_video.vmaf import ffmpeg_executable

    return ffmpeg_executable()


def make_clips(out: Path, size: str, seconds: float) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, crf in (("source", 12), ("encode", 36)):
        path = out / f"{name}-{size}-{seconds:g}s.mkv"
        if not path.exists():
            subprocess.run(
                [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                 f"testsrc2=s={size}:r=25:d={seconds}", "-c:v", "libx264", "-preset", "veryfast",
                 "-crf", str(crf), "-pix_fmt", "yuv420p", str(path)],
                check=True,
            )  # fmt: skip
        paths.append(path)
    return paths[1], paths[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    dist, ref = make_clips(args.out, args.size, args.seconds)
    ours_csv = args.out / "ours.csv"
    ours = [sys.executable, "-m", "topiq_video", "score", str(dist), "--ref", str(ref),
            "--metrics", "vmaf", "--offset", "0", "-o", str(ours_csv)]  # fmt: skip
    direct = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", str(dist), "-i", str(ref),
              "-lavfi", "libvmaf=log_path=direct.csv:log_fmt=csv:n_threads=16",
              "-f", "null", "-"]  # fmt: skip
    times: dict[str, list[float]] = {"topiq-video score": [], "ffmpeg libvmaf": []}
    for _ in range(args.repeats):
        for name, command in (("topiq-video score", ours), ("ffmpeg libvmaf", direct)):
            started = time.perf_counter()
            subprocess.run(command, check=True, cwd=args.out, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - started)
    a = pd.read_csv(ours_csv)["vmaf"].to_numpy()
    b = pd.read_csv(args.out / "direct.csv")["vmaf"].to_numpy()
    medians = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "size": args.size,
        "frames": int(len(a)),
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "median_s": {k: round(v, 3) for k, v in medians.items()},
        "ratio_ours_to_direct": round(medians["topiq-video score"] / medians["ffmpeg libvmaf"], 3),
        "max_abs_vmaf_difference": float(np.max(np.abs(a - b))),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
