"""VMAF and XPSNR from FFmpeg, computed on exactly the pairs the pipeline made.

PyAV's FFmpeg has no libvmaf, so these metrics come from the FFmpeg binary of the optional
``imageio-ffmpeg`` package (``pip install 'topiq-video[vmaf]'``; its ``IMAGEIO_FFMPEG_EXE``
variable points it at another build with ``libvmaf`` and ``xpsnr``).

:class:`FFmpegMetrics` owns one FFmpeg process per run. Each aligned, scaled pair of luma
planes the pipeline produced is written to the process's standard input as one raw frame
holding the encode above the reference (planar YUV 4:2:0 at the pair's bit depth, chroma
neutral: VMAF and XPSNR-Y read luma only), and FFmpeg's filter graph crops the two halves
apart and hands them to ``libvmaf`` and ``xpsnr``. So there is no second decode and FFmpeg
never aligns anything itself. A writer thread feeds the pipe from a small bounded queue so
scoring and FFmpeg overlap; the per-frame logs are read back when the run ends (libvmaf
writes its log only then) and joined to the rows in the order they were fed.

The process runs in its own process group, so a Ctrl-C meant for topiq-video reaches it
only through :meth:`FFmpegMetrics.close`, which ends it (or kills it) and waits for it. If
Python itself dies, the pipe closes and FFmpeg ends at the end of its input.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from topiq_video.errors import DependencyError, InvalidInputError, TopiqVideoError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

EXTRA = "vmaf"
INSTALL_HINT = f"pip install 'topiq-video[{EXTRA}]'"

VMAF_MODELS: dict[str, str] = {
    "vmaf_v0.6.1": "version=vmaf_v0.6.1",
    "vmaf_4k_v0.6.1": "version=vmaf_4k_v0.6.1",
    # libvmaf 2 spells the old "phone_model" as the model's score transform.
    "vmaf_v0.6.1_phone": "version=vmaf_v0.6.1:enable_transform=true",
    "vmaf_v0.6.1neg": "version=vmaf_v0.6.1neg",
}
"""Built-in models ``vmaf_model`` can name, and how libvmaf's ``model`` option spells them."""
NEG_MODEL = "vmaf_v0.6.1neg"
VMAF_COLUMNS = ("vmaf", "vmaf_neg")
XPSNR_COLUMNS = ("xpsnr_y",)
FFMPEG_METRIC_NAMES = (*VMAF_COLUMNS, *XPSNR_COLUMNS)

QUEUE_BATCHES = 2
"""Batches of pairs waiting for the pipe: bounds memory, lets scoring run ahead a little."""
FINISH_TIMEOUT_S = 600.0
"""How long the end of a run waits for FFmpeg to work through what it was fed."""
STOP_GRACE_S = 5.0
"""How long a stopped run (an error, Ctrl-C) lets FFmpeg write what it computed."""
MAX_THREADS = 16
VMAF_MIN_SIDE = 17
"""libvmaf crashes on pictures narrower or shorter than this (measured with FFmpeg 9.0.2)."""
_PIX_FMTS = {8: "yuv420p", 10: "yuv420p10le", 12: "yuv420p12le", 16: "yuv420p16le"}
_STDERR_TAIL = 2000


class FFmpegMetricError(TopiqVideoError):
    """FFmpeg failed while computing VMAF or XPSNR; the message carries its stderr."""


@dataclass(frozen=True)
class FFmpegInfo:
    """The FFmpeg binary used, and what it can compute."""

    path: str
    version: str
    has_libvmaf: bool
    has_xpsnr: bool


def ffmpeg_executable() -> str:
    """The FFmpeg binary of the ``vmaf`` extra; a clear error when the extra is missing."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise DependencyError(
            f"VMAF and XPSNR need FFmpeg with libvmaf, from the optional extra: {INSTALL_HINT}"
        ) from exc
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:
        raise DependencyError(
            f"imageio-ffmpeg found no FFmpeg binary ({exc}): reinstall it with {INSTALL_HINT}, "
            "or point IMAGEIO_FFMPEG_EXE at an FFmpeg built with libvmaf."
        ) from exc


@lru_cache(maxsize=4)
def _probe(path: str) -> FFmpegInfo:
    try:
        out = subprocess.run(
            [path, "-hide_banner", "-filters"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        version = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DependencyError(
            f"FFmpeg at {path} cannot be run ({exc}): reinstall it with {INSTALL_HINT}."
        ) from exc
    names = {line.split()[1] for line in out.splitlines() if len(line.split()) > 2}
    first = version.splitlines()[0] if version else ""
    return FFmpegInfo(
        path=path,
        version=first.split(" Copyright")[0].removeprefix("ffmpeg version ").strip(),
        has_libvmaf="libvmaf" in names,
        has_xpsnr="xpsnr" in names,
    )


def ffmpeg_info(metrics: Sequence[str] = FFMPEG_METRIC_NAMES) -> FFmpegInfo:
    """The FFmpeg to use for ``metrics``, checked to have the filters they need."""
    info = _probe(ffmpeg_executable())
    missing = []
    if any(m in VMAF_COLUMNS for m in metrics) and not info.has_libvmaf:
        missing.append("libvmaf")
    if any(m in XPSNR_COLUMNS for m in metrics) and not info.has_xpsnr:
        missing.append("xpsnr")
    if missing:
        raise DependencyError(
            f"The FFmpeg at {info.path} ({info.version}) lacks the {' and '.join(missing)} "
            f"filter(s): install the extra ({INSTALL_HINT}, FFmpeg 9 with libvmaf) or point "
            "IMAGEIO_FFMPEG_EXE at an FFmpeg built with them."
        )
    return info


def check_vmaf_model(name: str) -> str:
    if name not in VMAF_MODELS:
        raise InvalidInputError(
            f"Unknown VMAF model {name!r}. Built-in models: {', '.join(VMAF_MODELS)}."
        )
    return name


def shifted_harmonic_mean(values: np.ndarray) -> float | None:
    """VMAF's own pooling: the harmonic mean of ``value + 1``, minus 1 (libvmaf's
    ``harmonic_mean``); None without finite values."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0 or np.any(finite <= -1):
        return None
    return float(finite.size / np.sum(1.0 / (finite + 1.0)) - 1.0)


def _filter_graph(metrics: Sequence[str], width: int, height: int, vmaf_model: str) -> str:
    """Crop the stacked frame into encode and reference, and run the filters on them."""
    crop = "crop={w}:{h}:0:{y}:exact=1"
    parts = [
        "[0:v]split[top][bottom]",
        f"[top]{crop.format(w=width, h=height, y=0)}[dist]",
        f"[bottom]{crop.format(w=width, h=height, y=height)}[ref]",
    ]
    sinks = []
    if any(m in VMAF_COLUMNS for m in metrics):
        sinks.append("vmaf")
    if any(m in XPSNR_COLUMNS for m in metrics):
        sinks.append("xpsnr")
    if len(sinks) > 1:
        parts += ["[dist]split[dist_vmaf][dist_xpsnr]", "[ref]split[ref_vmaf][ref_xpsnr]"]
        inputs = {sink: (f"[dist_{sink}]", f"[ref_{sink}]") for sink in sinks}
    else:
        inputs = {sinks[0]: ("[dist]", "[ref]")}
    if "vmaf" in inputs:
        models = []
        if "vmaf" in metrics:
            models.append(f"{VMAF_MODELS[vmaf_model]}:name=vmaf")
        if "vmaf_neg" in metrics:
            models.append(f"{VMAF_MODELS[NEG_MODEL]}:name=vmaf_neg")
        threads = max(1, min(MAX_THREADS, os.cpu_count() or 1))
        d, r = inputs["vmaf"]
        parts.append(
            f"{d}{r}libvmaf=log_path=vmaf.csv:log_fmt=csv:n_threads={threads}"
            f":model={_escape(_escape('|'.join(models), ':'), '')}[out_vmaf]"
        )
    if "xpsnr" in inputs:
        d, r = inputs["xpsnr"]
        parts.append(f"{d}{r}xpsnr=stats_file=xpsnr.txt[out_xpsnr]")
    return ";".join(parts)


def _escape(text: str, special: str) -> str:
    """One level of FFmpeg's filter escaping: a backslash before each backslash, quote and
    ``special`` character (the option level escapes ':'; the graph level adds nothing here,
    as models hold no brackets, commas or semicolons, but doubles the backslashes)."""
    return "".join("\\" + ch if ch in "\\'" + special else ch for ch in text)


def _sinks(metrics: Sequence[str]) -> list[str]:
    sinks = []
    if any(m in VMAF_COLUMNS for m in metrics):
        sinks.append("[out_vmaf]")
    if any(m in XPSNR_COLUMNS for m in metrics):
        sinks.append("[out_xpsnr]")
    return sinks


class _Segment:
    """One FFmpeg process fed frames of one size and bit depth."""

    def __init__(
        self,
        info: FFmpegInfo,
        metrics: Sequence[str],
        width: int,
        height: int,
        bit_depth: int,
        rate: Fraction,
        vmaf_model: str,
    ) -> None:
        self.metrics = tuple(metrics)
        self.width, self.height, self.bit_depth = width, height, bit_depth
        self.fed = 0
        self.folder = Path(tempfile.mkdtemp(prefix="topiq-video-ffmpeg-"))
        self._error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_BATCHES)
        command = [
            info.path, "-hide_banner", "-nostats", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", _PIX_FMTS[bit_depth],
            "-s", f"{width}x{2 * height}", "-framerate", f"{rate.numerator}/{rate.denominator}",
            "-i", "pipe:0",
            "-filter_complex", _filter_graph(metrics, width, height, vmaf_model),
        ]  # fmt: skip
        for sink in _sinks(metrics):
            command += ["-map", sink, "-f", "null", "-"]
        chroma_w, chroma_h = (width + 1) // 2, height  # the stacked frame is 2 * height tall
        dtype = np.uint8 if bit_depth == 8 else np.dtype("<u2")
        neutral = np.full(2 * chroma_w * chroma_h, 1 << (bit_depth - 1), dtype=dtype)
        self._chroma = neutral.tobytes()
        self._dtype = dtype
        self._stderr = open(self.folder / "stderr.txt", "wb")  # noqa: SIM115 (closed in close)
        group = (
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
            if sys.platform == "win32"
            else {"start_new_session": True}
        )
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                cwd=self.folder,  # log files by bare names: nothing to escape in the graph
                **group,  # type: ignore[arg-type]
            )
        except OSError as exc:
            self._stderr.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            raise DependencyError(f"FFmpeg at {info.path} cannot be started: {exc}.") from exc
        logger.debug("Started %s", " ".join(command))
        self._writer = threading.Thread(target=self._write, name="ffmpeg-metrics", daemon=True)
        self._writer.start()

    def _write(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            while (data := self._queue.get()) is not None:
                stdin.write(data)
        except (BrokenPipeError, OSError, ValueError) as exc:
            self._error = exc
        finally:
            # A producer waiting on a full queue sees the error in check() and stops.
            with contextlib.suppress(OSError, ValueError):
                stdin.close()

    def feed(self, dist: np.ndarray, ref: np.ndarray) -> None:
        """Queue (N, H, W) integer planes of the encode and the reference."""
        self.check()
        chunks = []
        for d, r in zip(dist, ref, strict=True):
            chunks.append(np.concatenate([d, r], axis=0).astype(self._dtype, copy=False).tobytes())
            chunks.append(self._chroma)
        while True:
            self.check()
            try:
                self._queue.put(b"".join(chunks), timeout=0.5)
                break
            except queue.Full:
                continue
        self.fed += len(dist)

    def check(self) -> None:
        if self._error is not None or self.process.poll() is not None:
            code = self.process.poll()
            raise FFmpegMetricError(
                f"FFmpeg stopped while computing {', '.join(self.metrics)} "
                f"({_exit_status(code)}): {self.stderr_tail() or self._error}"
            )

    def stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            self._stderr.flush()
            text = (self.folder / "stderr.txt").read_bytes()[-_STDERR_TAIL:]
            return text.decode("utf-8", "replace").strip()
        return ""

    def finish(self, timeout: float) -> dict[str, np.ndarray]:
        """End the input, wait for FFmpeg and read its per-frame values."""
        self._end_input()
        self._writer.join(timeout)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise FFmpegMetricError(
                f"FFmpeg did not finish {', '.join(self.metrics)} within {timeout:g} s."
            ) from exc
        if code != 0:
            raise FFmpegMetricError(
                f"FFmpeg failed computing {', '.join(self.metrics)} ({_exit_status(code)}): "
                f"{self.stderr_tail() or 'no message'}"
            )
        return self._read_logs()

    def _end_input(self) -> None:
        while self._writer.is_alive():
            try:
                self._queue.put(None, timeout=0.5)
                return
            except queue.Full:
                if self.process.poll() is not None:
                    return

    def _read_logs(self) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = {}
        if any(m in VMAF_COLUMNS for m in self.metrics):
            values.update(read_vmaf_log(self.folder / "vmaf.csv", self.metrics))
        if any(m in XPSNR_COLUMNS for m in self.metrics):
            values["xpsnr_y"] = read_xpsnr_log(self.folder / "xpsnr.txt")
        for name, column in values.items():
            if len(column) != self.fed:
                raise FFmpegMetricError(
                    f"FFmpeg reported {name} for {len(column)} frames but was given {self.fed}."
                )
        return values

    def close(self) -> None:
        """Stop FFmpeg if it still runs and remove its files (idempotent)."""
        self._error = self._error or RuntimeError("closed")
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._writer.join(5)
        self._stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _exit_status(code: int | None) -> str:
    if code is None:
        return "its input pipe closed"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def read_vmaf_log(path: Path, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-frame VMAF columns (named after the models) from libvmaf's CSV log."""
    import pandas as pd

    wanted = [m for m in VMAF_COLUMNS if m in metrics]
    try:
        table = pd.read_csv(path, usecols=["Frame", *wanted])
    except (OSError, ValueError) as exc:
        raise FFmpegMetricError(f"libvmaf's log could not be read ({exc}).") from exc
    order = np.argsort(table["Frame"].to_numpy(), kind="stable")
    return {m: table[m].to_numpy(dtype=np.float64)[order] for m in wanted}


def read_xpsnr_log(path: Path) -> np.ndarray:
    """Per-frame luma XPSNR from the ``xpsnr`` filter's stats file (``inf`` stays +inf)."""
    out = []
    try:
        lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError as exc:
        raise FFmpegMetricError(f"xpsnr's stats file could not be read ({exc}).") from exc
    for line in lines:
        if "XPSNR y:" not in line:
            continue
        word = line.split("XPSNR y:", 1)[1].split()[0]
        try:
            out.append(float(word))
        except ValueError:
            out.append(math.nan)
    return np.asarray(out, dtype=np.float64)


class FFmpegMetrics:
    """VMAF/XPSNR of a run: feed it the pipeline's pairs, get per-frame values at the end.

    One FFmpeg process serves the run; if the pairs change size or bit depth mid-way (an
    adaptive stream switching rendition), that process is finished and another started, as
    FFmpeg could not take frames of two sizes in one stream. Use as a context manager, or
    call :meth:`close`: no FFmpeg process outlives it.
    """

    def __init__(
        self,
        metrics: Sequence[str],
        *,
        vmaf_model: str,
        rate: Fraction | float | None,
    ) -> None:
        self.metrics = tuple(m for m in metrics if m in FFMPEG_METRIC_NAMES)
        if not self.metrics:
            raise InvalidInputError("FFmpegMetrics needs one of " + ", ".join(FFMPEG_METRIC_NAMES))
        self.vmaf_model = check_vmaf_model(vmaf_model)
        self.info = ffmpeg_info(self.metrics)
        # XPSNR weighs temporal activity by the frame rate, so give the rows' real rate.
        self.rate = Fraction(rate).limit_denominator(1001000) if rate else Fraction(25)
        self._segment: _Segment | None = None
        self._done: dict[str, list[np.ndarray]] = {m: [] for m in self.metrics}
        self.segments = 0
        self.fed = 0

    def feed(self, dist_y: torch.Tensor, ref_y: torch.Tensor, bit_depth: int) -> None:
        """Queue a batch of aligned luma pairs, (N, H, W) integer code values at
        ``bit_depth`` (as the pipeline's PSNR/SSIM get them)."""
        if bit_depth not in _PIX_FMTS:
            raise InvalidInputError(
                f"VMAF/XPSNR take 8-, 10-, 12- or 16-bit luma; got {bit_depth}-bit."
            )
        n, height, width = dist_y.shape
        if n == 0:
            return
        if min(width, height) < VMAF_MIN_SIDE and any(m in VMAF_COLUMNS for m in self.metrics):
            raise InvalidInputError(
                f"VMAF needs pictures of at least {VMAF_MIN_SIDE}x{VMAF_MIN_SIDE}; the pairs are "
                f"{width}x{height}. Compare at a larger size (scale_to) or leave vmaf out."
            )
        seg = self._segment
        if seg is not None and (seg.width, seg.height, seg.bit_depth) != (width, height, bit_depth):
            logger.info(
                "Pairs changed from %dx%d (%d-bit) to %dx%d (%d-bit): FFmpeg restarts for %s",
                seg.width, seg.height, seg.bit_depth, width, height, bit_depth,
                ", ".join(self.metrics),
            )  # fmt: skip
            self._finish_segment(FINISH_TIMEOUT_S)
            seg = None
        if seg is None:
            seg = self._segment = _Segment(
                self.info, self.metrics, width, height, bit_depth, self.rate, self.vmaf_model
            )
            self.segments += 1
        import torch

        dtype = torch.uint8 if bit_depth == 8 else torch.int32
        seg.feed(
            dist_y.round().to(dtype).cpu().numpy(),
            ref_y.round().to(dtype).cpu().numpy(),
        )
        self.fed += n

    def _finish_segment(self, timeout: float) -> None:
        seg, self._segment = self._segment, None
        if seg is None:
            return
        try:
            values = seg.finish(timeout)
        finally:
            seg.close()
        for name in self.metrics:
            self._done[name].append(values[name])

    def finish(self, *, stopped: bool = False) -> dict[str, np.ndarray]:
        """Per-frame values of everything fed, in order. ``stopped``: the run ended early,
        so FFmpeg gets only a short grace to write what it computed."""
        try:
            self._finish_segment(STOP_GRACE_S if stopped else FINISH_TIMEOUT_S)
        finally:
            self.close()
        return {
            name: np.concatenate(parts) if parts else np.empty(0)
            for name, parts in self._done.items()
        }

    def close(self) -> None:
        """Kill FFmpeg if it still runs (idempotent)."""
        seg, self._segment = self._segment, None
        if seg is not None:
            seg.close()

    def __enter__(self) -> FFmpegMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
