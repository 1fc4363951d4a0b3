"""Prometheus metrics of the monitored streams, read from their latest snapshots at scrape time.

One custom collector on its own :class:`~prometheus_client.CollectorRegistry` (never the
global one): every scrape asks for the snapshots once and turns them into metric families, so
the ``_total`` counters are the snapshots' exact totals, every metric of one scrape comes from
the same moment, and a stream that is removed disappears with its series.

Every series carries a ``stream`` label: the snapshot's ``name``, which the contract already
masks and which is masked here once more (a stream named after its URL must not leak a
password or token). The URL itself and error texts are never exported.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from topiq_video.monitor.state import DETECTORS, WINDOW_STATS, WINDOWS, StreamSnapshot
from topiq_video.video.source import show_source

logger = logging.getLogger(__name__)

PREFIX = "topiq_video"
SnapshotProvider = Callable[[], Sequence[StreamSnapshot]]


@dataclass(frozen=True)
class CounterSpec:
    """One ``_total`` counter read from :class:`~topiq_video.monitor.state.StreamCounters`."""

    name: str  # without _total (prometheus-client appends it)
    field: str
    help: str
    unit: str = ""


COUNTERS = (
    CounterSpec("frames_decoded", "frames_decoded", "Frames decoded since the monitor started."),
    CounterSpec("frames_scored", "frames_scored", "Frames scored with TOPIQ."),
    CounterSpec(
        "frames_skipped",
        "frames_skipped",
        "Sampled frames dropped unscored because scoring fell behind.",
    ),
    CounterSpec("decode_errors", "decode_errors", "Packets or frames the decoder rejected."),
    CounterSpec("lost_frames", "lost_frames", "Frames missing from the stream (timestamp jumps)."),
    CounterSpec("reconnects", "reconnects", "Times the stream was opened again after a loss."),
    CounterSpec("outage_seconds", "outage_seconds", "Seconds the stream was down.", unit="seconds"),
    CounterSpec("received_bytes", "received_bytes", "Compressed bytes received.", unit="bytes"),
    *(
        CounterSpec(
            f"{kind}_seconds",
            f"{kind}_seconds",
            f"Seconds the {kind} detector was active.",
            unit="seconds",
        )
        for kind in DETECTORS
    ),
)
"""Counters in exposition order; names are ``topiq_video_<name>_total``."""


class Exporter:
    """Prometheus metrics of the streams that ``snapshots`` returns, computed at each scrape.

    ``rules``: alert rule names reported as ``topiq_video_alert_active{rule}=0`` for every
    stream even before they first fire. A rule seen active on a stream is also reported as 0
    after it clears, for as long as the stream exists.
    """

    def __init__(self, snapshots: SnapshotProvider, *, rules: Iterable[str] = ()) -> None:
        self._snapshots = snapshots
        self._rules = tuple(dict.fromkeys(rules))
        self._seen_rules: dict[str, dict[str, None]] = {}  # stream -> rules seen, in order
        self._lock = threading.Lock()  # scrapes may run in parallel server threads
        self._warned_duplicates: set[str] = set()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The metrics as (body, content type), in the format ``accept`` asks for
        (OpenMetrics when requested, otherwise the Prometheus text format)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # -- the collector protocol

    def describe(self) -> list[Metric]:
        # Nothing up front: the series depend on the snapshots of each scrape.
        return []

    def collect(self) -> Iterator[Metric]:
        snapshots = list(self._snapshots())
        with self._lock:
            names = self._stream_names(snapshots)
            alert_rows = self._alert_rows(snapshots, names)
        yield from self._families(snapshots, names, alert_rows)

    # -- building the families

    def _stream_names(self, snapshots: Sequence[StreamSnapshot]) -> list[str]:
        names = stream_labels(snapshots)
        for snap, name in zip(snapshots, names, strict=True):
            base = show_source(snap.name)
            if name != base and base not in self._warned_duplicates:
                self._warned_duplicates.add(base)
                logger.warning(
                    "two monitored streams are both named %r; give each stream its own name "
                    "(the exporter labels the later ones %r ...)",
                    base,
                    name,
                )
        return names

    def _alert_rows(
        self, snapshots: Sequence[StreamSnapshot], names: Sequence[str]
    ) -> list[tuple[str, str, float]]:
        rows: list[tuple[str, str, float]] = []
        for snap, name in zip(snapshots, names, strict=True):
            seen = self._seen_rules.setdefault(name, dict.fromkeys(self._rules))
            active = {alert.rule for alert in snap.alerts}
            seen.update(dict.fromkeys(alert.rule for alert in snap.alerts))
            rows.extend((name, rule, 1.0 if rule in active else 0.0) for rule in seen)
        # Forget streams that are gone, so their series (and this memory) go with them.
        for gone in set(self._seen_rules) - set(names):
            del self._seen_rules[gone]
        return rows

    def _families(
        self,
        snapshots: Sequence[StreamSnapshot],
        names: Sequence[str],
        alert_rows: Sequence[tuple[str, str, float]],
    ) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{PREFIX}_up",
            "1 while the stream delivers frames, 0 while it is down.",
            labels=["stream"],
        )
        score = GaugeMetricFamily(
            f"{PREFIX}_score",
            "TOPIQ score over a rolling window (higher is better); absent until the window "
            "has a score.",
            labels=["stream", "model", "window", "stat"],
        )
        counters = [
            CounterMetricFamily(f"{PREFIX}_{c.name}", c.help, labels=["stream"], unit=c.unit)
            for c in COUNTERS
        ]
        active = {
            kind: GaugeMetricFamily(
                f"{PREFIX}_{kind}_active",
                f"1 while the {kind} detector is active.",
                labels=["stream"],
            )
            for kind in DETECTORS
        }
        last_frame = GaugeMetricFamily(
            f"{PREFIX}_last_frame_timestamp_seconds",
            "Unix time of the last decoded frame; absent before the first.",
            labels=["stream"],
            unit="seconds",
        )
        info = GaugeMetricFamily(
            f"{PREFIX}_stream_info",
            "The stream as last decoded (value 1); absent before the first frame.",
            labels=["stream", "codec", "width", "height", "fps"],
        )
        alert = GaugeMetricFamily(
            f"{PREFIX}_alert_active",
            "1 while the alert rule holds for the stream, 0 once it has cleared.",
            labels=["stream", "rule"],
        )

        for snap, name in zip(snapshots, names, strict=True):
            up.add_metric([name], 1.0 if snap.up else 0.0)
            for window in WINDOWS:
                stats = snap.scores.get(window) or {}
                for stat in WINDOW_STATS:
                    value = _finite(stats.get(stat))
                    if value is not None:
                        score.add_metric([name, snap.model, window, stat], value)
            for family, spec in zip(counters, COUNTERS, strict=True):
                family.add_metric([name], float(getattr(snap.counters, spec.field)))
            for kind in DETECTORS:
                active[kind].add_metric([name], 1.0 if snap.detectors.get(kind) else 0.0)
            last = _finite(snap.last_frame_time)
            if last is not None:
                last_frame.add_metric([name], last)
            if snap.info is not None:
                i = snap.info
                labels = [name, i.codec, str(i.width), str(i.height), _fps_label(i.fps)]
                info.add_metric(labels, 1.0)
        for row in alert_rows:
            alert.add_metric([row[0], row[1]], row[2])

        yield up
        yield score
        yield from counters
        for kind in DETECTORS:
            yield active[kind]
        yield last_frame
        yield info
        yield alert


def stream_labels(snapshots: Sequence[StreamSnapshot]) -> list[str]:
    """The ``stream`` label of each snapshot: its name, masked, made unique (two streams with
    one name would make an invalid exposition, so later ones get " (2)", " (3)" ...)."""
    names: list[str] = []
    used: set[str] = set()
    for snap in snapshots:
        base = show_source(snap.name)
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base} ({n})"
        used.add(name)
        names.append(name)
    return names


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fps_label(fps: float | None) -> str:
    """A frame rate as a short, stable label: 25, 29.97, 59.94; "" when unknown."""
    if fps is None or not math.isfinite(fps) or fps <= 0:
        return ""
    return f"{fps:.3f}".rstrip("0").rstrip(".")
