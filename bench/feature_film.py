"""Feature-film scale, end to end: a 2-hour pair through `report`, its files, and the page.

    python -m bench.feature_film                     # 172,800 frames (2 h at 24 fps), 160x90
    python -m bench.feature_film --frames 2400 --size 96x54   # a quick look

Makes a source and an encode of procedural moving content with a scene change every
``--scene-frames`` frames (the same generator as the throughput benchmark, switching seeds),
runs the library's `build_report` on them with PSNR-Y/SSIM-Y (no weights needed), and
reports wall time, peak resident memory, the sizes of report.json / report.html /
frames.parquet, and whether the page renders in headless Chromium without errors.
Nothing here is a quality figure: the clips are synthetic.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av

from bench.clips import DIST_CRF, SOURCE_CRF, ClipSpec, SceneGenerator, parse_size

DEFAULT_FRAMES = 172_800
DEFAULT_FPS = 24
DEFAULT_SIZE = "160x90"
DEFAULT_SCENE_FRAMES = 115  # about 1,500 scenes in two hours
DEFAULT_WORK_DIR = Path(__file__).resolve().parent / "out" / "feature_film"
HTML_LIMIT_MB = 20.0
JSON_LIMIT_MB = 10.0


def make_pair(frames: int, fps: int, size: tuple[int, int], scene_frames: int, out: Path):
    """Encode (or reuse) the source and the encode; a new seed starts each scene."""
    width, height = size
    stem = f"film_{width}x{height}_{frames}f_{fps}fps_sc{scene_frames}"
    source, dist = out / f"{stem}_source.mkv", out / f"{stem}_dist.mkv"
    if source.exists() and dist.exists():
        return source, dist
    out.mkdir(parents=True, exist_ok=True)
    generators = [
        SceneGenerator(ClipSpec(width, height, frames, fps=fps, seed=1000 + k)) for k in range(7)
    ]
    containers = []
    for path, crf in (
        (source.with_suffix(".part.mkv"), SOURCE_CRF),
        (dist.with_suffix(".part.mkv"), DIST_CRF),
    ):
        container = av.open(str(path), "w")
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        containers.append((path, container, stream))
    try:
        for t in range(frames):
            scene = t // scene_frames
            rgb = generators[scene % len(generators)].frame(t)
            yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            for _, container, stream in containers:
                for packet in stream.encode(yuv):
                    container.mux(packet)
        for _, container, stream in containers:
            for packet in stream.encode(None):
                container.mux(packet)
    finally:
        for _, container, _ in containers:
            container.close()
    containers[0][0].replace(source)
    containers[1][0].replace(dist)
    return source, dist


def chromium_renders(page: Path, timeout: float = 180.0) -> dict[str, Any]:
    """Open the page in headless Chromium; True when every figure reported it was drawn."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return {"checked": False, "reason": "chromium not installed"}
    with tempfile.TemporaryDirectory() as profile:
        started = time.perf_counter()
        out = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
            + ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
            + [f"--user-data-dir={profile}", "--virtual-time-budget=60000", "--dump-dom"]
            + [page.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    dom = out.stdout
    return {
        "checked": True,
        "rendered": 'data-rendered="true"' in dom,
        "error": 'data-rendered="error"' in dom,
        "seconds": round(time.perf_counter() - started, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from topiq_video.report.build import build_report

    size = parse_size(args.size)
    started = time.perf_counter()
    source, dist = make_pair(args.frames, args.fps, size, args.scene_frames, Path(args.work_dir))
    encode_s = time.perf_counter() - started
    out = Path(args.work_dir) / "report"
    started = time.perf_counter()
    result, saved = build_report(dist, source, out, metrics="psnr_y,ssim_y", offset=0)
    report_s = time.perf_counter() - started
    mb = 1024 * 1024
    figures = {
        "frames": len(result.frames),
        "scenes": len(result.scenes),
        "size": args.size,
        "encode_s": round(encode_s, 1),
        "report_s": round(report_s, 1),
        "frames_per_s": round(len(result.frames) / report_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "report_json_mb": round(saved.json_path.stat().st_size / mb, 2),
        "report_html_mb": round(saved.html_path.stat().st_size / mb, 2),
        "frames_parquet_mb": round(saved.frames_path.stat().st_size / mb, 2),
        "chromium": chromium_renders(saved.html_path),
    }
    figures["within_limits"] = (
        figures["report_html_mb"] <= HTML_LIMIT_MB and figures["report_json_mb"] <= JSON_LIMIT_MB
    )
    return figures


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--fps", type=int, default=DEFAULT_FPS)
    parser.add_argument("--size", default=DEFAULT_SIZE)
    parser.add_argument("--scene-frames", type=int, default=DEFAULT_SCENE_FRAMES)
    parser.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR))
    parser.add_argument("--out", default=None, help="write the figures as JSON here too")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    figures = run(args)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if figures["within_limits"] else 1


if __name__ == "__main__":
    sys.exit(main())
