"""One pass against separate runs: `compare` of 3 encodes versus 3 `score` runs, timed in
one run of this script, on this machine.

    python -m bench.compare_pass                 # 360p, 24 frames, CPU, stand-in FR weights

Each variant is the command a person would type, run as a fresh process (model loading,
decoding, the offset search and scoring included), with topiq_fr + PSNR-Y + SSIM-Y. The two
variants are interleaved (A B A B ...) so a change in the machine's load hits both, and the
median of each is compared. Scores come from stand-in weights and mean nothing.
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
from typing import Any

from bench.clips import ClipSpec, SceneGenerator, parse_size
from bench.standin import write_standin_weights

DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "compare_pass"
TARGET_RATIO = 0.8


def make_clips(out: Path, size: tuple[int, int], frames: int) -> tuple[Path, list[Path]]:
    """A source and three encodes of it (CRF 20, 30, 40; the last one trimmed by 3 frames)."""
    import av

    width, height = size
    source = out / f"source_{width}x{height}_{frames}.mkv"
    encodes = [out / f"enc{crf}_{width}x{height}_{frames}.mkv" for crf in (20, 30, 40)]
    if source.exists() and all(e.exists() for e in encodes):
        return source, encodes
    out.mkdir(parents=True, exist_ok=True)
    pictures = list(SceneGenerator(ClipSpec(width, height, frames, fps=24)))
    for path, crf, skip in (
        (source, 8, 0),
        *((e, c, 3 if c == 40 else 0) for e, c in zip(encodes, (20, 30, 40), strict=True)),
    ):
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=24)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            for i, rgb in enumerate(pictures[skip:]):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    return source, encodes


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    source, encodes = make_clips(out, parse_size(args.size), args.frames)
    weights = write_standin_weights(out / "standin_fr.pth", use_ref=True)
    cli = [sys.executable, "-m", "topiq_video.cli"]
    common = ["--weights", str(weights), "--device", args.device]
    separate_times, compare_times = [], []
    for repeat in range(args.repeats):
        separate = sum(
            _timed(
                [*cli, "score", str(e), "--ref", str(source), *common, "-o", str(out / f"s{i}.csv")]
            )
            for i, e in enumerate(encodes)
        )
        together = _timed(
            [*cli, "compare", "--ref", str(source), *map(str, encodes), *common]
            + ["-o", str(out / "compare")]
        )
        separate_times.append(separate)
        compare_times.append(together)
        print(
            f"repeat {repeat + 1}: 3 x score {separate:.1f} s, compare {together:.1f} s", flush=True
        )
    separate_s = statistics.median(separate_times)
    compare_s = statistics.median(compare_times)
    return {
        "size": args.size,
        "frames": args.frames,
        "device": args.device,
        "separate_score_runs_s": [round(t, 2) for t in separate_times],
        "compare_s": [round(t, 2) for t in compare_times],
        "ratio": round(compare_s / separate_s, 3),
        "target_ratio": TARGET_RATIO,
        "met": compare_s / separate_s <= TARGET_RATIO,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=1)
    print(text)
    (Path(args.out) / "result.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
