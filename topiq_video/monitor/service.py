"""The monitor: one process, many streams, one model per checkpoint.

:class:`Monitor` starts a worker per stream and a shared scorer per model, serves
/metrics, the live page and /api/streams, and once a second writes each stream's row,
evaluates the alert rules, writes and posts events, schedules evidence bundles and watches
for streams that stopped sending. :meth:`Monitor.stop` (also on SIGINT/SIGTERM in the CLI)
flushes everything and writes a session report per stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from topiq_video.errors import InvalidInputError
from topiq_video.files import check_output_dir, describe_os_error
from topiq_video.monitor.alerts import (
    RAISED,
    Event,
    EventLog,
    RuleEngine,
    WebhookSender,
    parse_rules,
)
from topiq_video.monitor.config import MonitorConfig, parse_listen
from topiq_video.monitor.evidence import POST_ROLL_S, PRE_ROLL_S, bundle_folder, write_bundle
from topiq_video.monitor.scorer import Sample, SharedScorer
from topiq_video.monitor.session import session_result, write_session
from topiq_video.monitor.state import StreamSnapshot
from topiq_video.monitor.store import RowStore, load_rows
from topiq_video.monitor.worker import StreamWorker

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0
RECENT_ROWS = 600  # per-second rows kept in memory per stream for evidence timelines


@dataclass
class _Evidence:
    """A bundle to write once its post-roll has passed."""

    worker: StreamWorker
    event: Event
    folder: Path
    due: float


class Monitor:
    """Watches the configured streams until :meth:`stop` (see the module docstring).

    ``models`` may give already loaded models by name (tests, embedding applications).
    ``on_event`` is called with each event after it was logged.
    """

    def __init__(
        self,
        config: MonitorConfig,
        *,
        models: Mapping[str, Any] | None = None,
        on_event: Callable[[Event], None] | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.out_dir = check_output_dir(config.out_dir)
        self._given_models = dict(models or {})
        self._on_event = on_event
        self._command = command
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.started: float | None = None
        self.models: dict[str, Any] = {}
        self.scorers: dict[str, SharedScorer] = {}
        self.workers: list[StreamWorker] = []
        self._engines: dict[str, RuleEngine] = {}
        self._stores: dict[str, RowStore] = {}
        self._recent: dict[str, deque[dict[str, Any]]] = {}
        self._events: dict[str, list[Event]] = {}
        self._pending: list[_Evidence] = []
        self._server: Any = None
        self._log: EventLog | None = None
        self._webhook: WebhookSender | None = None
        self._stopped = False
        # Rules are checked before anything starts: a typo must not wait for a stream.
        self._rules = {s.name: parse_rules(s.rules) for s in config.streams}

    # -- start -----------------------------------------------------------------------
    def _load_models(self) -> None:
        from topiq_video.model import load_model
        from topiq_video.model.registry import get_checkpoint

        for name in sorted({s.model for s in self.config.streams}):
            if get_checkpoint(name).use_ref:
                raise InvalidInputError(
                    f"{name} is a full-reference model; a live stream has no reference. Use a "
                    "no-reference model such as topiq_nr."
                )
            model = self._given_models.get(name) or load_model(
                name,
                weights=self.config.weights,
                device=self.config.device,
                precision=self.config.precision,
                batch_size=self.config.batch_size,
            )
            self.models[name] = model

    def start(self) -> None:
        """Load the models, start the streams, the scorer and the server."""
        from topiq_video.monitor.web import MonitorServer

        self._load_models()
        self.started = time.time()
        self._log = EventLog(self.config.events_file)
        if self.config.webhook:
            self._webhook = WebhookSender(self.config.webhook)
        for stream in self.config.streams:
            worker = StreamWorker(stream, self._submit)
            self.workers.append(worker)
            self._engines[worker.name] = RuleEngine(worker.name, self._rules[worker.name])
            self._stores[worker.name] = RowStore(worker.folder(self.out_dir))
            self._recent[worker.name] = deque(maxlen=RECENT_ROWS)
            self._events[worker.name] = []
        by_name = {w.name: w for w in self.workers}
        for name, model in self.models.items():
            self.scorers[name] = SharedScorer(
                model,
                on_scored=lambda scored: by_name[scored.sample.stream].on_scored(scored),
                on_dropped=lambda sample: by_name[sample.stream].on_dropped(sample),
                batch_size=self.config.batch_size,
            )
        host, port = parse_listen(self.config.listen)
        self._server = MonitorServer(host, port, snapshots=self.snapshots)
        self._server.start()
        for scorer in self.scorers.values():
            scorer.start()
        for worker in self.workers:
            worker.start()
        logger.info("Monitoring %d stream(s); page and metrics at %s", len(self.workers), self.url)

    def _submit(self, model: str, sample: Sample) -> None:
        self.scorers[model].submit(sample)

    @property
    def url(self) -> str | None:
        return None if self._server is None else self._server.url

    def snapshots(self) -> list[StreamSnapshot]:
        now = time.time()
        return [w.snapshot(now) for w in self.workers]

    # -- every second ------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[Event]:
        """Rows, rules, events, evidence and the stall watchdog, for this second."""
        now = time.time() if now is None else now
        emitted: list[Event] = []
        for worker in self.workers:
            row = worker.second_row(now)
            self._stores[worker.name].append(row)
            self._recent[worker.name].append(row)
            snap = worker.snapshot(now)
            stall = worker.config.stall_seconds
            if snap.up and snap.last_frame_time is not None and now - snap.last_frame_time > stall:
                worker.force_reconnect(f"no frame for {now - snap.last_frame_time:.1f} s")
            engine = self._engines[worker.name]
            for event in engine.update(now, worker.signals(now), worker.signal_starts(now)):
                if event.state == RAISED:
                    folder = bundle_folder(worker.folder(self.out_dir), event.rule, event.time)
                    relative = folder.relative_to(self.out_dir).as_posix()
                    engine.attach_evidence(event.rule, relative)
                    event = Event(**{**event.__dict__, "evidence": relative})
                    self._pending.append(_Evidence(worker, event, folder, now + POST_ROLL_S))
                self._emit(event)
                emitted.append(event)
            worker.set_alerts(engine.active)
        self._write_due_evidence(now)
        return emitted

    def _emit(self, event: Event) -> None:
        self._events[event.stream].append(event)
        assert self._log is not None
        try:
            self._log.write(event)
        except OSError as exc:  # a full disk must not stop monitoring
            logger.error("Could not write an event: %s", describe_os_error(exc))
        if self._webhook is not None:
            self._webhook.send(event)
        if self._on_event is not None:
            self._on_event(event)

    def _write_due_evidence(self, now: float, *, all_now: bool = False) -> None:
        due = [p for p in self._pending if all_now or p.due <= now]
        self._pending = [p for p in self._pending if p not in due]
        for job in due:
            raised = job.event.time
            worker = job.worker
            pictures = worker.pictures_between(raised - PRE_ROLL_S, now)
            rows = pd.DataFrame(
                [r for r in self._recent[worker.name] if r["time"] >= raised - PRE_ROLL_S]
            )
            try:
                with worker.packets_between(raised - PRE_ROLL_S, now) as packets:
                    write_bundle(job.folder, job.event.to_dict(), packets, pictures, rows, raised)
            except Exception as exc:  # evidence is best effort; the alert itself went out
                logger.error("Could not write the evidence bundle %s: %s", job.folder, exc)

    # -- run and stop ------------------------------------------------------------------
    def run(self, duration: float | None = None) -> None:
        """Tick once a second until :meth:`stop`, ``duration`` seconds, or every stream
        (files only) has ended."""
        assert self.started is not None, "start() first"
        deadline = None if duration is None else time.monotonic() + duration
        next_tick = time.monotonic() + TICK_SECONDS
        while not self._stop.is_set():
            self._stop.wait(max(0.0, next_tick - time.monotonic()))
            if self._stop.is_set():
                break
            next_tick += TICK_SECONDS
            self.tick()
            if deadline is not None and time.monotonic() >= deadline:
                break
            if self.workers and all(w.ended for w in self.workers):
                break

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> list[Path]:
        """Stop every thread, flush rows and events, write a session report per stream;
        returns the session report folders."""
        with self._lock:
            if self._stopped:
                return []
            self._stopped = True
        self._stop.set()
        for worker in self.workers:
            worker.stop()
        for scorer in self.scorers.values():
            scorer.close()
        ended = time.time()
        if self.started is not None:
            self.tick(ended)
        self._write_due_evidence(ended, all_now=True)
        reports: list[Path] = []
        for worker in self.workers:
            store = self._stores[worker.name]
            store.close()
            if self.started is None:
                continue
            rows = load_rows(worker.folder(self.out_dir), since=self.started)
            try:
                result = session_result(
                    worker,
                    rows,
                    self._episodes(worker.name),
                    self.models[worker.config.model],
                    started=self.started,
                    ended=ended,
                    command=self._command,
                )
                if result is not None:
                    reports.append(
                        write_session(result, worker.folder(self.out_dir), self.started).out_dir
                    )
            except Exception as exc:
                logger.error("Could not write the session report of %s: %s", worker.name, exc)
        if self._server is not None:
            self._server.stop()
        if self._webhook is not None:
            self._webhook.close()
        if self._log is not None:
            self._log.close()
        return reports

    def _episodes(self, stream: str) -> list[Event]:
        """One span per alert episode: raised events, with the end their clear gave."""
        raised: dict[str, Event] = {}
        spans: list[Event] = []
        for event in self._events[stream]:
            if event.state == RAISED:
                raised[event.rule] = event
            elif event.rule in raised:
                start = raised.pop(event.rule)
                spans.append(Event(**{**start.__dict__, "end": event.end or event.time}))
        spans.extend(raised.values())
        return sorted(spans, key=lambda e: e.start)


def monitor_streams(
    config: MonitorConfig,
    *,
    duration: float | None = None,
    models: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Watch ``config``'s streams for ``duration`` seconds (or until they end) and return
    the session report folders. The Python face of `topiq-video monitor`."""
    monitor = Monitor(config, models=models)
    try:
        monitor.start()
        monitor.run(duration)
    finally:
        reports = monitor.stop()
    return reports
