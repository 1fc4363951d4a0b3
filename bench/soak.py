"""Soak and load for `topiq-video monitor`, on this machine (not run in CI).

    python -m bench.soak --streams 4 --minutes 30      # memory and threads over time
    python -m bench.soak --capacity --max-streams 12   # how many streams, no skipped samples

Streams come from one local live MPEG-TS encoder (tests/servers.py ``HttpTsServer``, 320x180,
25 fps): every monitored stream is its own HTTP connection, so the sender costs the same
however many streams are watched. The monitor runs in this process with stand-in NR weights
(scores mean nothing about quality) on the CPU unless ``--device`` says otherwise.

Soak writes ``soak.csv`` (time, resident memory, threads, frames decoded/scored/skipped),
``soak.svg`` (memory and threads over time) and ``soak.json`` (the summary). Capacity runs
1, 2, 3 ... streams for ``--seconds`` each at ``--score-fps`` and reports the most streams
with no skipped sample and every sample scored.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.standin import write_standin_weights
from tests.servers import HttpTsServer

DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "soak"
SIZE = {"width": 320, "height": 180}
SAMPLE_SECONDS = 10.0
SCREENSHOT_AFTER_S = 90.0


def _proc_status() -> dict[str, int]:
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "Threads"):
            values[key] = int(rest.split()[0])
    return values


def _monitor(urls: list[str], out: Path, weights: Path, device: str, score_fps: float) -> Any:
    from topiq_video.model import load_model
    from topiq_video.monitor.config import build_config
    from topiq_video.monitor.service import Monitor

    model = load_model("topiq_nr", weights=str(weights), device=device)
    config = build_config(
        [{"url": u, "name": f"s{i}"} for i, u in enumerate(urls)],
        {
            "out_dir": str(out),
            "listen": "127.0.0.1:0",
            "events_file": str(out / "events.jsonl"),
            "score_fps": score_fps,
        },
    )
    return Monitor(config, models={"topiq_nr": model})


def soak(args: argparse.Namespace, weights: Path) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, Any]] = []
    with HttpTsServer(**SIZE) as server:
        urls = [f"{server.url}?client={i}" for i in range(args.streams)]
        monitor = _monitor(urls, out / "monitor", weights, args.device, args.score_fps)
        monitor.start()
        runner = threading.Thread(target=monitor.run, daemon=True)
        runner.start()
        started = time.monotonic()
        shot_due = args.screenshot is not None
        try:
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(SAMPLE_SECONDS)
                if shot_due and time.monotonic() - started >= SCREENSHOT_AFTER_S:
                    _screenshot(monitor.url, Path(args.screenshot))
                    shot_due = False
                status = _proc_status()
                snaps = monitor.snapshots()
                samples.append(
                    {
                        "seconds": round(time.monotonic() - started, 1),
                        "rss_mb": status["VmRSS"] / 1024,
                        "threads": status["Threads"],
                        "frames_decoded": sum(s.counters.frames_decoded for s in snaps),
                        "frames_scored": sum(s.counters.frames_scored for s in snaps),
                        "frames_skipped": sum(s.counters.frames_skipped for s in snaps),
                        "up": sum(s.up for s in snaps),
                    }
                )
                print(json.dumps(samples[-1]), flush=True)
        finally:
            monitor.request_stop()
            runner.join(15)
            monitor.stop()
    table = pd.DataFrame(samples)
    table.to_csv(out / "soak.csv", index=False)
    (out / "soak.svg").write_text(_chart(table))
    settle = table[table["seconds"] >= min(300.0, table["seconds"].max() / 2)]
    summary = {
        "streams": args.streams,
        "minutes": args.minutes,
        "score_fps": args.score_fps,
        "rss_mb_first": round(float(table["rss_mb"].iloc[0]), 1),
        "rss_mb_after_settling": round(float(settle["rss_mb"].iloc[0]), 1),
        "rss_mb_last": round(float(table["rss_mb"].iloc[-1]), 1),
        "rss_mb_max": round(float(table["rss_mb"].max()), 1),
        "threads_min": int(table["threads"].min()),
        "threads_max": int(table["threads"].max()),
        "frames_scored": int(table["frames_scored"].iloc[-1]),
        "frames_skipped": int(table["frames_skipped"].iloc[-1]),
    }
    (out / "soak.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _screenshot(url: str, path: Path) -> None:
    """The live page as a person sees it (headless Chromium, as the tests drive it)."""
    from tests.browser import Browser

    with Browser(width=1400, height=900) as browser:
        browser.send("Page.navigate", {"url": url}, session=True)
        browser.wait_for("document.querySelectorAll('.stream').length > 0", timeout=30)
        time.sleep(4)  # two refreshes: sparklines and pictures in place
        browser.screenshot(path, full_page=True)
    print(f"screenshot: {path}", flush=True)


def _chart(table: pd.DataFrame) -> str:
    """Memory (MB) and threads over time as a small SVG with two panels."""
    width, height, pad = 760, 200, 44
    t = table["seconds"].to_numpy(float)

    def panel(values: Any, top: int, label: str, colour: str) -> str:
        lo, hi = float(min(values)), float(max(values))
        lo, hi = (lo - 1, hi + 1) if hi - lo < 1 else (lo, hi)
        xs = pad + (t - t.min()) / max(1e-9, t.max() - t.min()) * (width - 2 * pad)
        ys = top + height - pad - (values - lo) / (hi - lo) * (height - 2 * pad)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
        return (
            f'<text x="{pad}" y="{top + 16}">{label}: {lo:.0f} .. {hi:.0f}</text>'
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{points}"/>'
        )

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{2 * height}" '
        f'font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="#fff"/>'
        + panel(table["rss_mb"].to_numpy(float), 0, "resident memory (MB)", "#2563eb")
        + panel(table["threads"].to_numpy(float), height, "threads", "#0f9d76")
        + f'<text x="{pad}" y="{2 * height - 8}">0 s</text>'
        f'<text x="{width - pad}" y="{2 * height - 8}" text-anchor="end">{t.max():.0f} s</text>'
        "</svg>\n"
    )


def capacity(args: argparse.Namespace, weights: Path) -> dict[str, Any]:
    results = []
    best = 0
    with HttpTsServer(**SIZE) as server:
        for n in range(1, args.max_streams + 1):
            with tempfile.TemporaryDirectory() as tmp:
                urls = [f"{server.url}?client={i}" for i in range(n)]
                monitor = _monitor(urls, Path(tmp), weights, args.device, args.score_fps)
                monitor.start()
                runner = threading.Thread(target=monitor.run, args=(args.seconds,), daemon=True)
                runner.start()
                runner.join(args.seconds + 30)
                snaps = monitor.snapshots()
                monitor.stop()
            scored = sum(s.counters.frames_scored for s in snaps)
            skipped = sum(s.counters.frames_skipped for s in snaps)
            expected = n * args.seconds * args.score_fps
            ok = skipped == 0 and scored >= 0.9 * expected
            results.append({"streams": n, "scored": scored, "skipped": skipped, "ok": ok})
            print(json.dumps(results[-1]), flush=True)
            if not ok:
                break
            best = n
    return {"max_streams_without_skips": best, "score_fps": args.score_fps, "runs": results}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--capacity", action="store_true")
    parser.add_argument("--max-streams", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--score-fps", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--screenshot", default=None, help="save the live page here (PNG)")
    args = parser.parse_args(argv)
    weights = write_standin_weights(Path(args.out) / "standin_nr.pth", use_ref=False)
    result = capacity(args, weights) if args.capacity else soak(args, weights)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
