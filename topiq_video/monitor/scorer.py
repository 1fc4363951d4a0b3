"""One TOPIQ-NR model scoring samples from every stream, batched across streams.

Stream workers hand in sampled frames without waiting: the queue is bounded, and when
scoring falls behind the oldest waiting sample is dropped (and counted against its stream),
so memory never grows and scores stay close to live. The model runs in its own thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from topiq_video.video.color import frames_to_rgb
from topiq_video.video.source import VideoFrame

logger = logging.getLogger(__name__)

QUEUE_BATCHES = 2  # samples waiting, in batches: more only adds latency
GATHER_SECONDS = 0.05  # how long a batch waits for more samples before it runs


@dataclass(frozen=True, eq=False)
class Sample:
    """A frame picked for scoring, from one stream."""

    stream: str
    frame: VideoFrame
    wall_time: float  # when it was decoded (Unix seconds)


@dataclass(frozen=True, eq=False)
class Scored:
    """A sample with its score and its picture (RGB in [0, 1], on the CPU) for galleries."""

    sample: Sample
    score: float
    rgb: torch.Tensor


class SharedScorer:
    """Scores :class:`Sample` objects with ``model`` in batches; results go to ``on_scored``
    (called in the scorer's thread), drops to ``on_dropped``."""

    def __init__(
        self,
        model: Any,
        on_scored: Callable[[Scored], None],
        on_dropped: Callable[[Sample], None],
        *,
        batch_size: int | None = None,
    ) -> None:
        self.model = model
        self.batch_size = int(batch_size or model.batch_size)
        self._on_scored = on_scored
        self._on_dropped = on_dropped
        self._queue: deque[Sample] = deque()
        self._capacity = max(4, QUEUE_BATCHES * self.batch_size)
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="topiq-scorer", daemon=True)
        self.busy_seconds = 0.0
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def submit(self, sample: Sample) -> None:
        """Queue a sample; never blocks (the oldest waiting sample gives way)."""
        dropped = None
        with self._cond:
            if len(self._queue) >= self._capacity:
                dropped = self._queue.popleft()
            self._queue.append(sample)
            self._cond.notify()
        if dropped is not None:
            self._on_dropped(dropped)

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take(self) -> list[Sample]:
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait(0.5)
            if self._stop:
                return []
            deadline = time.monotonic() + GATHER_SECONDS
            while len(self._queue) < self.batch_size and not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            started = time.monotonic()
            try:
                self._score(batch)
            except Exception as exc:  # keep monitoring; the error is shown on the page
                self.error = f"{type(exc).__name__}: {exc}"
                logger.exception("Scoring failed for a batch of %d samples", len(batch))
                for sample in batch:
                    self._on_dropped(sample)
            self.busy_seconds += time.monotonic() - started

    def _score(self, batch: list[Sample]) -> None:
        # Frames of one conversion must share size and format (streams differ).
        groups: dict[tuple, list[Sample]] = {}
        for sample in batch:
            f = sample.frame
            groups.setdefault((f.width, f.height, f.pix_fmt, f.color), []).append(sample)
        for samples in groups.values():
            rgb = frames_to_rgb([s.frame for s in samples], self.model.device)
            scores = self.model.score(rgb)
            pictures = rgb.cpu()
            for i, sample in enumerate(samples):
                self._on_scored(Scored(sample, float(scores[i]), pictures[i]))
