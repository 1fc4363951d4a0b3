"""Evidence with every alert: the seconds around it as a clip (remuxed from the received
packets, no re-encode), the worst pictures as PNG, and the score timeline (CSV and SVG).

A bundle is a folder ``OUT/<stream>/evidence/<UTC time>-<rule>/``; its files are written
atomically and ``event.json`` last, so a folder with an ``event.json`` is complete.
"""

from __future__ import annotations

import html
import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from topiq_video.files import atomic_path, atomic_write_bytes, atomic_write_text
from topiq_video.pooling import pick_worst

logger = logging.getLogger(__name__)

PRE_ROLL_S = 10.0  # seconds before the alert in the clip and timeline
POST_ROLL_S = 5.0  # and after (the bundle is written this long after the alert)
WORST_PICTURES = 3
EVIDENCE_DIR = "evidence"
CLIP_NAME = "clip.mkv"


def bundle_folder(stream_folder: Path, rule: str, raised_at: float) -> Path:
    stamp = datetime.fromtimestamp(raised_at, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe_rule = "".join(c if c.isalnum() or c in "-_" else "_" for c in rule)
    folder = stream_folder / EVIDENCE_DIR / f"{stamp}-{safe_rule}"
    n = 2
    while folder.exists():
        folder = folder.with_name(f"{stamp}-{safe_rule}-{n}")
        n += 1
    return folder


def write_clip(path: Path, packets: Sequence[Any]) -> int:
    """Remux packets (several streams allowed) into a Matroska clip, from the first video
    keyframe on; returns the number of packets written (0: no keyframe, no clip)."""
    import av

    start = next(
        (i for i, p in enumerate(packets) if p.stream.type == "video" and p.is_keyframe), None
    )
    if start is None:
        return 0
    packets = packets[start:]
    written = 0
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="matroska") as out:
        streams: dict[int, Any] = {}
        first: dict[int, int] = {}
        for packet in packets:
            key = id(packet.stream)
            if key not in streams:
                streams[key] = out.add_stream_from_template(packet.stream)
            if packet.dts is None and packet.pts is None:
                continue
            origin = first.setdefault(key, packet.dts if packet.dts is not None else packet.pts)
            # A fresh packet: the ring buffer's own stay untouched for other bundles.
            copy = av.Packet(bytes(packet))
            copy.pts = None if packet.pts is None else packet.pts - origin
            copy.dts = None if packet.dts is None else packet.dts - origin
            copy.time_base = packet.time_base
            copy.is_keyframe = packet.is_keyframe
            copy.stream = streams[key]
            out.mux(copy)
            written += 1
    return written


def _png(picture: torch.Tensor) -> bytes:
    from torchvision.io import encode_png

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return encode_png(picture.contiguous()).numpy().tobytes()


def timeline_svg(rows: pd.DataFrame, raised_at: float, title: str) -> str:
    """A small SVG line chart of the per-second score (mean and min) with detector bands
    and the alert instant, in seconds relative to it."""
    width, height, pad = 720, 220, 36
    if rows.empty:
        t = np.array([0.0])
        mean = low = np.array([np.nan])
    else:
        t = rows["time"].to_numpy(dtype=float) - raised_at
        mean = rows.get("score_mean", pd.Series(np.nan, index=rows.index)).to_numpy(dtype=float)
        low = rows.get("score_min", pd.Series(np.nan, index=rows.index)).to_numpy(dtype=float)
    t0, t1 = min(float(t.min()), -PRE_ROLL_S), max(float(t.max()), POST_ROLL_S)
    finite = np.concatenate([mean[np.isfinite(mean)], low[np.isfinite(low)]])
    y0, y1 = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if y1 - y0 < 1e-6:
        y0, y1 = y0 - 0.05, y1 + 0.05

    def x(v: float) -> float:
        return pad + (v - t0) / (t1 - t0) * (width - 2 * pad)

    def y(v: float) -> float:
        return height - pad - (v - y0) / (y1 - y0) * (height - 2 * pad)

    def line(values: np.ndarray, colour: str, dash: str = "") -> str:
        points = " ".join(
            f"{x(a):.1f},{y(b):.1f}" for a, b in zip(t, values, strict=True) if math.isfinite(b)
        )
        style = f' stroke-dasharray="{dash}"' if dash else ""
        return (
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.6"{style} points="{points}"/>'
        )

    bands = []
    for name, colour in (("freeze", "#60a5fa"), ("black", "#334155"), ("silence", "#f59e0b")):
        if name in rows:
            for a, active in zip(t, rows[name].to_numpy(dtype=bool), strict=True):
                if active:
                    bands.append(
                        f'<rect x="{x(a - 0.5):.1f}" y="{pad}" width="{x(a + 0.5) - x(a - 0.5):.1f}" '
                        f'height="{height - 2 * pad}" fill="{colour}" opacity="0.18"/>'
                    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
        f'<rect width="{width}" height="{height}" fill="#fff"/>'
        f'<text x="{pad}" y="18" font-size="13">{html.escape(title)}</text>'
        + "".join(bands)
        + f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{pad}" y2="{height - pad}" stroke="#dc2626"/>'
        + line(mean, "#2563eb")
        + line(low, "#2563eb", "3,3")
        + f'<text x="{pad}" y="{height - 10}">{t0:+.0f} s</text>'
        f'<text x="{width - pad}" y="{height - 10}" text-anchor="end">{t1:+.0f} s</text>'
        f'<text x="4" y="{y(y1) + 4:.1f}">{y1:.3g}</text>'
        f'<text x="4" y="{y(y0):.1f}">{y0:.3g}</text>'
        f'<text x="{x(0) + 4:.1f}" y="{pad + 12}" fill="#dc2626">alert</text>'
        "</svg>\n"
    )


def write_bundle(
    folder: Path,
    event: Mapping[str, Any],
    packets: Sequence[Any],
    pictures: Sequence[tuple[float, float, torch.Tensor]],
    rows: pd.DataFrame,
    raised_at: float,
) -> Path:
    """Write one alert's bundle into ``folder`` (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    try:
        if write_clip(folder / CLIP_NAME, packets):
            files["clip"] = CLIP_NAME
    except Exception as exc:  # a clip is a nicety: the rest of the bundle still counts
        logger.warning("No clip for %s: %s", folder.name, exc)
    if pictures:
        values = np.array([p[1] for p in pictures])
        times = np.array([p[0] for p in pictures])
        names = []
        for rank, i in enumerate(pick_worst(values, times, WORST_PICTURES, spacing=1.0), 1):
            name = f"worst-{rank}.png"
            atomic_write_bytes(folder / name, _png(pictures[i][2]))
            names.append({"file": name, "score": float(values[i]), "time": float(times[i])})
        files["worst_frames"] = names
    with atomic_path(folder / "timeline.csv") as tmp:
        rows.to_csv(tmp, index=False)
    files["timeline"] = "timeline.csv"
    title = f"{event.get('stream')}: {event.get('rule')}"
    atomic_write_text(folder / "timeline.svg", timeline_svg(rows, raised_at, title))
    files["timeline_plot"] = "timeline.svg"
    record = {"event": dict(event), "files": files}
    atomic_write_text(folder / "event.json", json.dumps(record, indent=1, allow_nan=False) + "\n")
    return folder
