"""One live stream: its connection, reconnected for ever; its detectors; its samples for
scoring; what is kept for evidence and for the session report.

The worker thread reads the stream through a :class:`~topiq_video.video.reader.PyAVSource`
(itself a thread feeding a small queue), runs the cheap detectors on every frame and hands
a sample to the shared scorer every ``1 / score_fps`` seconds without waiting. A stream
that fails to open, ends, errs or stops sending (``stall_seconds``) is down: it is
reconnected with exponential backoff and jitter (1 s up to 30 s), for as long as the
monitor runs. Everything the outside reads comes from :meth:`StreamWorker.snapshot`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from topiq_video.errors import TopiqVideoError
from topiq_video.monitor.config import RECONNECT_MAX_S, RECONNECT_MIN_S, StreamConfig
from topiq_video.monitor.detectors import BlackDetector, FreezeDetector, SilenceDetector
from topiq_video.monitor.scorer import Sample, Scored
from topiq_video.monitor.state import (
    SPARKLINE_SECONDS,
    WINDOW_SECONDS,
    WINDOW_STATS,
    ActiveAlert,
    StreamCounters,
    StreamInfo,
    StreamSnapshot,
)
from topiq_video.pipeline.capture import WorstFrameCapture, encode_jpeg
from topiq_video.pooling import RollingStats
from topiq_video.video.source import AudioChunk, VideoFrame, scheme_of, show_source

logger = logging.getLogger(__name__)

EVIDENCE_RING_SECONDS = 30.0  # received packets kept for alert clips
EVIDENCE_RING_BYTES = 64 * 1024 * 1024
RECENT_PICTURES_SECONDS = 60.0  # scored pictures kept for alert bundles
THUMBNAIL_WIDTH = 320
PICTURE_WIDTH = 640
SESSION_GALLERY = 4
FPS_WINDOW_S = 10.0


def _small(rgb: torch.Tensor, width: int) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (3, h, w) uint8 at most ``width`` wide."""
    h, w = rgb.shape[-2:]
    if w > width:
        size = (max(1, round(h * width / w)), width)
        rgb = F.interpolate(rgb[None].float(), size=size, mode="bilinear", antialias=True)[0]
    return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8)


class StreamWorker:
    """A stream's thread and state; see the module docstring."""

    def __init__(self, config: StreamConfig, submit: Any, *, timeout: float | None = None) -> None:
        self.config = config
        self.name = config.name
        self.url = show_source(config.url)
        self._submit = submit
        self._timeout = timeout or config.stall_seconds
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"topiq-stream-{self.name}", daemon=True
        )
        self._source: Any = None
        self.started_at = time.time()
        # State read by snapshots (guarded by the lock).
        self._up = False
        self._ended = False  # a file (not live, not looping) played to its end
        self._connected_since: float | None = None
        self._down_since: float | None = None  # set when a connection failed or was lost
        self._outage_done = 0.0
        self._last_frame_wall: float | None = None
        self._last_error: str | None = None
        self._counts = {
            "frames_decoded": 0,
            "frames_scored": 0,
            "frames_skipped": 0,
            "decode_errors": 0,
            "lost_frames": 0,
            "reconnects": 0,
            "received_bytes": 0,
        }
        self._had_connection = False
        self._info: StreamInfo | None = None
        self._score: float | None = None
        self._windows = {label: RollingStats(seconds) for label, seconds in WINDOW_SECONDS.items()}
        self._frame_walls: deque[float] = deque()
        self._thumbnail: bytes | None = None
        self._alerts: tuple[ActiveAlert, ...] = ()
        # Per-connection state: when stream time 0 was live (the smallest wall - stream
        # time seen; frames decoded in a burst after a slow open arrive late, never early).
        self._origin: float | None = None
        self._next_sample: float | None = None
        # One detector each for the whole run: a reconnect ends their episodes (finish) and
        # they start afresh on the new connection's clock, keeping their totals.
        self._freeze = FreezeDetector(
            noise_db=config.freeze_noise_db, min_duration=config.freeze_seconds
        )
        self._black = BlackDetector(min_duration=config.black_seconds)
        self._silence = SilenceDetector(min_duration=config.silence_seconds)
        self._ended_at: dict[str, float] = {}  # detector -> end of its last episode (stream)
        # Kept for evidence and the session report (bounded).
        self._packets: deque[tuple[float, Any]] = deque()  # this connection's only
        self._packet_bytes = 0
        self._pictures: deque[tuple[float, float, torch.Tensor]] = deque()  # (wall, score, uint8)
        self.capture = WorstFrameCapture([config.model], SESSION_GALLERY)
        self._second_scores: list[float] = []
        self._last_row_counts = dict(self._counts)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        source = self._source
        if source is not None:
            source.close()
        self._thread.join(timeout)

    def force_reconnect(self, reason: str) -> None:
        """Drop the current connection (called by the watchdog when frames stopped)."""
        with self._lock:
            self._last_error = reason
        source = self._source
        if source is not None:
            source.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def stream_origin(self) -> float | None:
        """Wall-clock time at which the current connection's stream time 0 was live."""
        return self._origin

    # -- the connection loop ----------------------------------------------------------
    def _open(self) -> Any:
        from topiq_video.video.reader import PyAVSource

        return PyAVSource(
            self.config.url,
            timeout=self._timeout,
            rtsp_transport=self.config.rtsp_transport,
            tap=self._on_packet,
            on_audio=self._on_audio,
        )

    def _run(self) -> None:
        backoff = RECONNECT_MIN_S
        while not self._stop.is_set():
            reason = None
            try:
                self._source = self._open()
            except TopiqVideoError as exc:
                self._went_down(str(exc))
                self._sleep(backoff)
                backoff = min(RECONNECT_MAX_S, backoff * 2)
                continue
            source = self._source
            self._new_connection()
            paced_from: float | None = None
            try:
                for frame in source.frames():
                    if self._stop.is_set():
                        break
                    if self.config.realtime:
                        paced_from = self._pace(frame, paced_from)
                    self._on_frame(frame, source)
                    backoff = RECONNECT_MIN_S
            except TopiqVideoError as exc:
                reason = str(exc)
            except Exception as exc:  # a bug must not end monitoring: log, reconnect
                logger.exception("%s: unexpected error while reading", self.name)
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                source.close()
                self._add_counts(source)
            if self._stop.is_set():
                break
            stats = source.stats
            live = source.info.is_live or scheme_of(self.config.url) not in ("", "file")
            if not live and reason is None and not stats.connection_lost:
                if self.config.loop:
                    continue
                self._finished()
                return
            with self._lock:
                forced = self._last_error if not self._up else None
            self._went_down(reason or stats.connection_lost or forced or "the stream ended")
            self._sleep(backoff)
            backoff = min(RECONNECT_MAX_S, backoff * 2)

    def _sleep(self, seconds: float) -> None:
        """Backoff with jitter (up to a quarter more), cut short by stop()."""
        self._wake.wait(seconds * (1.0 + 0.25 * random.random()))
        self._wake.clear()

    def _pace(self, frame: VideoFrame, paced_from: float | None) -> float:
        """A file played as if live: wait until the frame is due."""
        now = time.monotonic()
        if paced_from is None:
            return now - frame.time
        delay = paced_from + frame.time - now
        if delay > 0:
            self._stop.wait(delay)
        return paced_from

    def _new_connection(self) -> None:
        with self._lock:
            self._next_sample = None
            self._origin = None

    def _went_down(self, reason: str) -> None:
        now = time.time()
        with self._lock:
            if self._up:
                logger.warning("%s is down: %s", self.name, reason)
            self._last_error = reason
            if self._up or self._down_since is None:
                self._down_since = now
            self._up = False
            self._connected_since = None
            self._end_episodes()

    def _came_up(self, now: float) -> None:
        if self._down_since is not None:
            self._outage_done += now - self._down_since
            self._down_since = None
        if self._had_connection:
            self._counts["reconnects"] += 1
            logger.warning("%s is up again", self.name)
        self._had_connection = True
        self._up = True
        self._connected_since = now
        self._last_error = None

    def _finished(self) -> None:
        with self._lock:
            self._ended = True
            self._up = False
            self._end_episodes()

    def _add_counts(self, source: Any) -> None:
        """Fold a finished connection's decode counts into the totals; its packets go (they
        refer to its streams, which are gone)."""
        with self._lock:
            for key, value in self._source_counts(source).items():
                self._counts[key] += value
            self._source = None
            self._packets.clear()
            self._packet_bytes = 0

    @staticmethod
    def _source_counts(source: Any) -> dict[str, int]:
        stats = source.stats
        return {
            "decode_errors": stats.decode_errors + stats.corrupt_frames,
            "lost_frames": stats.lost_frames,
        }

    def _live_counts(self) -> dict[str, int]:
        """The totals, the current connection's decode counts included."""
        counts = dict(self._counts)
        source = self._source
        if source is not None:
            for key, value in self._source_counts(source).items():
                counts[key] += value
        return counts

    # -- per frame, per packet, per audio chunk --------------------------------------
    def _on_packet(self, packet: Any) -> None:
        now = time.time()
        with self._lock:
            self._counts["received_bytes"] += packet.size
            self._packets.append((now, packet))
            self._packet_bytes += packet.size
            while self._packets and (
                now - self._packets[0][0] > EVIDENCE_RING_SECONDS
                or self._packet_bytes > EVIDENCE_RING_BYTES
            ):
                self._packet_bytes -= self._packets.popleft()[1].size

    def _on_audio(self, chunk: AudioChunk) -> None:
        with self._lock:
            self._note_ends(
                self._silence.update(chunk.time, chunk.samples, chunk.sample_rate, channels=1)
            )
            if self._info is not None and not self._info.has_audio:
                self._info = StreamInfo(**{**self._info.__dict__, "has_audio": True})

    def _on_frame(self, frame: VideoFrame, source: Any) -> None:
        now = time.time()
        with self._lock:
            if not self._up:
                self._came_up(now)
                info = source.info
                self._info = StreamInfo(
                    codec=info.codec,
                    width=frame.width,
                    height=frame.height,
                    fps=float(info.fps) if info.fps else None,
                    has_audio=source.has_audio,
                )
            elif self._info is not None and (self._info.width, self._info.height) != (
                frame.width,
                frame.height,
            ):
                logger.info("%s changed size to %dx%d", self.name, frame.width, frame.height)
                self._info = StreamInfo(
                    **{**self._info.__dict__, "width": frame.width, "height": frame.height}
                )
            self._counts["frames_decoded"] += 1
            self._last_frame_wall = now
            origin = now - frame.time
            self._origin = origin if self._origin is None else min(self._origin, origin)
            self._frame_walls.append(now)
            while self._frame_walls and now - self._frame_walls[0] > FPS_WINDOW_S:
                self._frame_walls.popleft()
            luma = frame.planes[0]
            if luma.ndim == 3:  # RGB sources: detectors look at the green channel
                luma = luma[..., 1]
            bit_depth = frame.color.bit_depth
            full = frame.color.range == "full"
            # Chroma counts too, as in freezedetect (an encoder may refine luma alone).
            chroma = frame.planes[1:] if frame.planes[0].ndim == 2 else ()
            episodes = self._freeze.update(frame.time, luma, bit_depth=bit_depth, chroma=chroma)
            episodes += self._black.update(frame.time, luma, bit_depth=bit_depth, full_range=full)
            self._note_ends(episodes)
            due = self._next_sample is None or frame.time + 1e-6 >= self._next_sample
            if due:
                step = 1.0 / self.config.score_fps
                self._next_sample = (self._next_sample or frame.time) + step
                if self._next_sample < frame.time:  # after a gap, restart the grid
                    self._next_sample = frame.time + step
        if due:
            self._submit(self.config.model, Sample(self.name, frame, now))

    def _note_ends(self, episodes: list[Any]) -> None:
        """Remember when each detector's last episode ended (stream time), for alerts."""
        for episode in episodes:
            if episode.end is not None:
                self._ended_at[episode.kind] = episode.end

    # -- from the scorer --------------------------------------------------------------
    def on_scored(self, scored: Scored) -> None:
        wall = scored.sample.wall_time
        small = _small(scored.rgb, PICTURE_WIDTH)
        thumb = encode_jpeg(_small(scored.rgb, THUMBNAIL_WIDTH))
        session_t = wall - self.started_at
        with self._lock:
            self._counts["frames_scored"] += 1
            self._score = scored.score
            for window in self._windows.values():
                window.update(wall, scored.score)
            self._second_scores.append(scored.score)
            self._thumbnail = thumb
            self._pictures.append((wall, scored.score, small))
            while self._pictures and wall - self._pictures[0][0] > RECENT_PICTURES_SECONDS:
                self._pictures.popleft()
        self.capture.offer(
            self.config.model,
            [scored.score],
            [int(round(session_t * 1000))],
            [session_t],
            scored.rgb[None],
        )

    def on_dropped(self, sample: Sample) -> None:
        with self._lock:
            self._counts["frames_skipped"] += 1

    # -- what the outside reads -------------------------------------------------------
    def _end_episodes(self) -> None:
        """The stream went away: what the detectors saw ends where it was last seen."""
        for detector in self._detectors().values():
            detector.finish()

    def _detectors(self) -> dict[str, Any]:
        return {"freeze": self._freeze, "black": self._black, "silence": self._silence}

    def _outage_seconds(self, now: float) -> float:
        ongoing = now - self._down_since if self._down_since is not None and not self._ended else 0
        return self._outage_done + ongoing

    def signals(self, now: float) -> dict[str, float | bool | None]:
        """The values alert rules look at (detectors say nothing while the stream is down)."""
        with self._lock:
            out: dict[str, float | bool | None] = {
                # Connecting for the first time is not an outage; losing the stream is.
                "outage": self._down_since is not None and not self._ended,
                "score": self._score,
            }
            for name, detector in self._detectors().items():
                out[name] = bool(detector.active) if self._up else None
            for label, window in self._windows.items():
                window.advance(now)
                stats = window.result()
                for stat in WINDOW_STATS:
                    out[f"score.{label}.{stat}"] = getattr(stats, stat)
            return out

    def signal_starts(self, now: float) -> dict[str, float | None]:
        """When each detector last changed, in wall-clock time: an active episode's start
        (back-dated to where the condition began) or the last episode's end, on the stream's
        clock, which :attr:`stream_origin` maps."""
        with self._lock:
            starts: dict[str, float | None] = {}
            for name, detector in self._detectors().items():
                changed = detector.active_since if detector.active else self._ended_at.get(name)
                starts[name] = (
                    None if changed is None or self._origin is None else self._origin + changed
                )
            if self._down_since is not None and not self._up:
                starts["outage"] = self._down_since
            return starts

    def set_alerts(self, alerts: tuple[ActiveAlert, ...]) -> None:
        with self._lock:
            self._alerts = alerts

    def snapshot(self, now: float | None = None) -> StreamSnapshot:
        now = time.time() if now is None else now
        with self._lock:
            scores: dict[str, dict[str, float | None]] = {}
            for label, window in self._windows.items():
                window.advance(now)
                stats = window.result()
                scores[label] = {stat: getattr(stats, stat) for stat in WINDOW_STATS}
            five = self._windows["5m"]
            sparkline = tuple((t, v) for t, v in five.items() if now - t <= SPARKLINE_SECONDS)
            detectors = self._detectors()
            totals = {name: d.total_seconds for name, d in detectors.items()}
            fps = None
            if len(self._frame_walls) >= 2:
                span = self._frame_walls[-1] - self._frame_walls[0]
                fps = (len(self._frame_walls) - 1) / span if span > 0 else None
            return StreamSnapshot(
                name=self.name,
                url=self.url,
                model=self.config.model,
                up=self._up,
                connected_since=self._connected_since,
                last_frame_time=self._last_frame_wall,
                score=self._score,
                scores=scores,
                detectors={name: bool(d.active) for name, d in detectors.items()},
                alerts=self._alerts,
                counters=StreamCounters(
                    **self._live_counts(),
                    outage_seconds=self._outage_seconds(now),
                    freeze_seconds=totals["freeze"],
                    black_seconds=totals["black"],
                    silence_seconds=totals["silence"],
                ),
                info=self._info,
                measured_fps=fps,
                sparkline=sparkline,
                thumbnail=self._thumbnail,
                last_error=self._last_error,
            )

    def second_row(self, now: float) -> dict[str, Any]:
        """This stream's row for the second that just ended (per-second Parquet)."""
        snap = self.snapshot(now)
        with self._lock:
            scores, self._second_scores = self._second_scores, []
            counts = self._live_counts()
            deltas = {k: v - self._last_row_counts[k] for k, v in counts.items()}
            self._last_row_counts = counts
        row: dict[str, Any] = {
            "time": now,
            "stream": self.name,
            "up": snap.up,
            "score_count": len(scores),
            "score_mean": float(np.mean(scores)) if scores else math.nan,
            "score_min": float(np.min(scores)) if scores else math.nan,
            "fps": snap.measured_fps if snap.measured_fps is not None else math.nan,
        }
        for label, stats in snap.scores.items():
            for stat, value in stats.items():
                row[f"score_{label}_{stat}"] = math.nan if value is None else value
        for name, active in snap.detectors.items():
            row[name] = active
        row["outage"] = not snap.up
        for key in ("frames_decoded", "frames_scored", "frames_skipped", "received_bytes"):
            row[key] = deltas[key]
        row["decode_errors_total"] = snap.counters.decode_errors
        row["reconnects_total"] = snap.counters.reconnects
        row["alerts"] = ",".join(a.rule for a in snap.alerts)
        return row

    def pictures_between(self, start: float, end: float) -> list[tuple[float, float, torch.Tensor]]:
        """Scored pictures (wall time, score, uint8 RGB) between two wall times."""
        with self._lock:
            return [p for p in self._pictures if start <= p[0] <= end]

    @contextlib.contextmanager
    def packets_between(self, start: float, end: float) -> Iterator[list[Any]]:
        """The current connection's received packets between two wall times, its container
        held open while the block remuxes them (empty when there is no connection)."""
        source = self._source
        if source is None:
            yield []
            return
        with source.kept_open() as is_open:
            with self._lock:
                current = self._source is source
                packets = [p for t, p in self._packets if start <= t <= end]
            yield packets if is_open and current else []

    def folder(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / self.name
