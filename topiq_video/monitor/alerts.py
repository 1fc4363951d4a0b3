"""Alert rules over a stream's signals, the events they emit, and where events go.

A :class:`Rule` watches one signal (a rolling score such as ``score.1m.mean``, or an on/off
signal such as ``freeze`` or ``outage``). It *raises* once its condition has held for ``hold``
seconds and *clears* once the recovery condition (with hysteresis: ``clear_threshold``) has
held for ``clear_hold`` seconds: one ``raised`` and one ``cleared`` :class:`Event` per episode,
however the values flap in between. A missing value (None, NaN: no score yet, no audio)
neither raises nor clears, and restarts a hold or recovery period in progress, since nothing
says the condition held through the gap.

Events are written as JSON lines by :class:`EventLog` and POSTed by :class:`WebhookSender`
(a background thread that never blocks the caller). In the JSON, each time is given twice:
``<name>`` as an ISO 8601 UTC string (milliseconds, ``Z``) and ``<name>_unix`` as Unix
seconds; ``duration`` is in seconds. The JSON is strict (no NaN or Infinity).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import logging
import math
import os
import random
import re
import sys
import threading
import time as _time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.client import HTTPException
from pathlib import Path
from typing import Any, TextIO

from topiq_video.errors import InvalidInputError, OutputError
from topiq_video.monitor.state import DETECTORS, WINDOW_STATS, WINDOWS, ActiveAlert

logger = logging.getLogger(__name__)

EVENT_SCHEMA = "topiq-video/event@1"
RAISED = "raised"
CLEARED = "cleared"
BELOW = "below"
ABOVE = "above"
ACTIVE = "active"
CONDITIONS = (BELOW, ABOVE, ACTIVE)

OUTAGE = "outage"
BOOLEAN_SIGNALS = (*DETECTORS, OUTAGE)
"""On/off signals: rules on them use ``active = true``."""
SCORE_SIGNALS = ("score", *(f"score.{w}.{s}" for w in WINDOWS for s in WINDOW_STATS))
"""Numeric signals: the latest score and each rolling window's statistics."""
SIGNALS = BOOLEAN_SIGNALS + SCORE_SIGNALS

DEFAULT_DETECTOR_CLEAR_HOLD = 2.0
"""A freeze, black or silence alert clears after this long without the condition, so one
that stops and starts again at once stays one alert."""
DEFAULT_OUTAGE_CLEAR_HOLD = 10.0
"""An outage clears after the stream has been back this long (no alert storm while a
stream reconnects over and over)."""

DEFAULT_WEBHOOK_TIMEOUT = 5.0
DEFAULT_WEBHOOK_ATTEMPTS = 5
DEFAULT_WEBHOOK_QUEUE = 1000
DEFAULT_WEBHOOK_BACKOFF = 0.5
"""First retry delay in seconds; it doubles per attempt (with jitter) up to the maximum."""
DEFAULT_WEBHOOK_MAX_BACKOFF = 30.0
DEFAULT_WEBHOOK_CLOSE_TIMEOUT = 5.0

_TIME_SLACK = 1e-9
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RULE_KEYS = (
    "name",
    "signal",
    "below",
    "above",
    "active",
    "for",
    "clear_above",
    "clear_below",
    "clear_for",
    "enabled",
)
_RULE_EXAMPLE = (
    '{name = "low-score", signal = "score.1m.mean", below = 0.4, for = 30, '
    "clear_above = 0.45, clear_for = 10}"
)


def _finite_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True)
class Rule:
    """Raise when ``signal`` is ``condition`` ``threshold`` for ``hold`` seconds; clear when
    it has recovered past ``clear_threshold`` (default: ``threshold``) for ``clear_hold``.

    ``below``: raises while value < threshold, recovers while value >= clear_threshold.
    ``above``: raises while value > threshold, recovers while value <= clear_threshold.
    ``active``: raises while the on/off signal is on, recovers while it is off.
    """

    name: str
    signal: str
    condition: str
    threshold: float | None = None
    hold: float = 0.0
    clear_threshold: float | None = None
    clear_hold: float = 0.0

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}"
        if not isinstance(self.name, str) or not _NAME_PATTERN.fullmatch(self.name):
            raise InvalidInputError(
                f"rule name {self.name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                'starting with a letter or digit (e.g. name = "low-score")'
            )
        if not isinstance(self.signal, str) or not self.signal:
            raise InvalidInputError(f'{where}: signal must name a signal, e.g. "score.1m.mean"')
        if self.condition not in CONDITIONS:
            raise InvalidInputError(
                f"{where}: condition must be one of {', '.join(CONDITIONS)}, got {self.condition!r}"
            )
        for key in ("hold", "clear_hold"):
            value = getattr(self, key)
            if not _finite_number(value) or value < 0:
                raise InvalidInputError(f"{where}: {key} must be seconds >= 0, got {value!r}")
            object.__setattr__(self, key, float(value))
        if self.condition == ACTIVE:
            if self.threshold is not None or self.clear_threshold is not None:
                raise InvalidInputError(
                    f"{where}: an 'active' rule has no threshold; it raises while "
                    f"{self.signal!r} is on"
                )
            return
        if not _finite_number(self.threshold):
            raise InvalidInputError(
                f"{where}: a {self.condition!r} rule needs a finite threshold, "
                f"got {self.threshold!r}"
            )
        object.__setattr__(self, "threshold", float(self.threshold))
        clear = self.threshold if self.clear_threshold is None else self.clear_threshold
        if not _finite_number(clear):
            raise InvalidInputError(
                f"{where}: clear_threshold must be a finite number, got {clear!r}"
            )
        clear = float(clear)
        if self.condition == BELOW and clear < self.threshold:
            raise InvalidInputError(
                f"{where}: raises below {self.threshold:g}, so it must clear at or above "
                f"it; got clear_above = {clear:g}"
            )
        if self.condition == ABOVE and clear > self.threshold:
            raise InvalidInputError(
                f"{where}: raises above {self.threshold:g}, so it must clear at or below "
                f"it; got clear_below = {clear:g}"
            )
        object.__setattr__(self, "clear_threshold", clear)

    def is_bad(self, value: float | bool) -> bool:
        """The raise condition holds for this (present) value."""
        if self.condition == ACTIVE:
            return bool(value)
        if self.condition == BELOW:
            return value < self.threshold  # type: ignore[operator]
        return value > self.threshold  # type: ignore[operator]

    def is_recovered(self, value: float | bool) -> bool:
        """The recovery condition holds for this (present) value."""
        if self.condition == ACTIVE:
            return not value
        if self.condition == BELOW:
            return value >= self.clear_threshold  # type: ignore[operator]
        return value <= self.clear_threshold  # type: ignore[operator]

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, known_signals: Iterable[str] | None = SIGNALS
    ) -> Rule:
        """A rule from its config form, e.g. ``{"name": "low-score", "signal":
        "score.1m.mean", "below": 0.4, "for": 30, "clear_above": 0.45, "clear_for": 10}``.

        ``known_signals``: the signal names allowed (None: any).
        """
        if not isinstance(data, Mapping):
            raise InvalidInputError(
                f"an alert rule must be a table like {_RULE_EXAMPLE}, got {type(data).__name__}"
            )
        name = data.get("name")
        where = f"rule {name!r}" if isinstance(name, str) else "an alert rule"
        unknown = sorted(str(k) for k in data if k not in _RULE_KEYS)
        if unknown:
            raise InvalidInputError(
                f"{where}: unknown key(s) {', '.join(unknown)}; the keys are "
                f"{', '.join(_RULE_KEYS)}, e.g. {_RULE_EXAMPLE}"
            )
        for key in ("name", "signal"):
            if not isinstance(data.get(key), str) or not data.get(key):
                raise InvalidInputError(f"{where}: {key} is required, e.g. {_RULE_EXAMPLE}")
        signal = data["signal"]
        if known_signals is not None:
            known = tuple(known_signals)
            if signal not in known:
                raise InvalidInputError(
                    f"{where}: unknown signal {signal!r}; the signals are {', '.join(known)}"
                )
        given = [c for c in CONDITIONS if c in data]
        if len(given) != 1:
            raise InvalidInputError(
                f"{where}: give exactly one of below = <number>, above = <number> or "
                f"active = true; got {', '.join(given) or 'none'}"
            )
        condition = given[0]
        if signal in BOOLEAN_SIGNALS and condition != ACTIVE:
            raise InvalidInputError(
                f"{where}: {signal!r} is on or off; write active = true instead of {condition}"
            )
        if signal in SCORE_SIGNALS and condition == ACTIVE:
            raise InvalidInputError(
                f"{where}: {signal!r} is a number; write below = <number> or above = <number>"
            )
        threshold = None
        clear = None
        if condition == ACTIVE:
            if data[ACTIVE] is not True:
                raise InvalidInputError(f"{where}: write active = true (got {data[ACTIVE]!r})")
            for key in ("clear_above", "clear_below"):
                if key in data:
                    raise InvalidInputError(
                        f"{where}: {key} does not apply to an 'active' rule; it clears when "
                        f"{signal!r} is off (use clear_for to wait)"
                    )
        else:
            threshold = _number(data[condition], condition, where)
            clear_key, wrong_key = (
                ("clear_above", "clear_below")
                if condition == BELOW
                else ("clear_below", "clear_above")
            )
            if wrong_key in data:
                raise InvalidInputError(
                    f"{where}: a rule that raises {condition} a threshold clears with "
                    f"{clear_key}, not {wrong_key}"
                )
            if clear_key in data:
                clear = _number(data[clear_key], clear_key, where)
        hold = _number(data.get("for", 0.0), "for", where, seconds=True)
        clear_hold = _number(data.get("clear_for", 0.0), "clear_for", where, seconds=True)
        return cls(
            name=data["name"],
            signal=signal,
            condition=condition,
            threshold=threshold,
            hold=hold,
            clear_threshold=clear,
            clear_hold=clear_hold,
        )

    def to_dict(self) -> dict[str, Any]:
        """The config form (what :meth:`from_dict` reads)."""
        out: dict[str, Any] = {"name": self.name, "signal": self.signal}
        if self.condition == ACTIVE:
            out[ACTIVE] = True
        else:
            out[self.condition] = self.threshold
            if self.clear_threshold != self.threshold:
                out["clear_above" if self.condition == BELOW else "clear_below"] = (
                    self.clear_threshold
                )
        out["for"] = self.hold
        out["clear_for"] = self.clear_hold
        return out


def _number(value: Any, key: str, where: str, *, seconds: bool = False) -> float:
    if not _finite_number(value) or (seconds and value < 0):
        what = "a number of seconds >= 0" if seconds else "a finite number"
        raise InvalidInputError(
            f"{where}: {key} must be {what}, got {value!r}; write e.g. {key} = "
            f"{30 if seconds else 0.4}"
        )
    return float(value)


FREEZE_RULE = Rule("freeze", "freeze", ACTIVE, clear_hold=DEFAULT_DETECTOR_CLEAR_HOLD)
BLACK_RULE = Rule("black", "black", ACTIVE, clear_hold=DEFAULT_DETECTOR_CLEAR_HOLD)
SILENCE_RULE = Rule("silence", "silence", ACTIVE, clear_hold=DEFAULT_DETECTOR_CLEAR_HOLD)
OUTAGE_RULE = Rule(OUTAGE, OUTAGE, ACTIVE, clear_hold=DEFAULT_OUTAGE_CLEAR_HOLD)
BUILTIN_RULES = (FREEZE_RULE, BLACK_RULE, SILENCE_RULE, OUTAGE_RULE)
"""Raise as soon as the detector (which has its own minimum duration) or the outage is on."""


def parse_rules(
    items: Iterable[Mapping[str, Any]] | None,
    *,
    builtin: bool = True,
    known_signals: Iterable[str] | None = SIGNALS,
) -> tuple[Rule, ...]:
    """Rules from config tables: the built-in ones first (with ``builtin``), then these.

    A table named like a built-in rule replaces it; ``{name = "silence", enabled = false}``
    drops one.
    """
    rules: dict[str, Rule] = {r.name: r for r in BUILTIN_RULES} if builtin else {}
    seen: set[str] = set()
    for data in items or ():
        if isinstance(data, Mapping) and "enabled" in data:
            enabled = data["enabled"]
            if not isinstance(enabled, bool):
                raise InvalidInputError(
                    f"rule {data.get('name')!r}: enabled must be true or false, got {enabled!r}"
                )
            if not enabled:
                name = data.get("name")
                if name not in rules and name not in seen:
                    raise InvalidInputError(
                        f"rule {name!r} is disabled but no such rule exists; the rules are "
                        f"{', '.join(rules) or 'none'}"
                    )
                rules.pop(name, None)
                seen.add(name)
                continue
        rule = Rule.from_dict(data, known_signals=known_signals)
        if rule.name in seen:
            raise InvalidInputError(f"rule {rule.name!r} is defined twice; give each a new name")
        seen.add(rule.name)
        rules[rule.name] = rule
    return tuple(rules.values())


# ---------------------------------------------------------------------------- events


def iso_utc(unix_seconds: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.250Z``."""
    moment = datetime.fromtimestamp(unix_seconds, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Event:
    """A rule that raised or cleared. Times are Unix seconds (wall clock).

    ``start``: when the condition began (before ``hold``); ``end``: for a cleared event, when
    the recovery began (before ``clear_hold``), else None; ``time``: when the event was
    emitted. ``value``: the worst value of the episode (lowest for ``below``, highest for
    ``above``; None for on/off signals); ``threshold``: the rule's threshold (raised) or
    clear threshold (cleared).
    """

    stream: str
    rule: str
    signal: str
    state: str
    time: float
    start: float
    end: float | None
    value: float | None
    threshold: float | None
    evidence: str | None = None

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``topiq-video/event@1``."""
        duration = self.duration
        return {
            "schema": EVENT_SCHEMA,
            "stream": self.stream,
            "rule": self.rule,
            "signal": self.signal,
            "state": self.state,
            "time": iso_utc(self.time),
            "time_unix": self.time,
            "start": iso_utc(self.start),
            "start_unix": self.start,
            "end": None if self.end is None else iso_utc(self.end),
            "end_unix": self.end,
            "duration": None if duration is None else round(duration, 6),
            "value": _finite_or_none(self.value),
            "threshold": _finite_or_none(self.threshold),
            "evidence": self.evidence,
        }

    def to_json(self) -> str:
        """One line of strict JSON."""
        return json.dumps(
            self.to_dict(), allow_nan=False, ensure_ascii=False, separators=(",", ":")
        )


# ---------------------------------------------------------------------------- engine


@dataclass
class _RuleState:
    raised: bool = False
    bad_since: float | None = None  # the condition's start (pending or raised)
    recovered_since: float | None = None  # while raised: when the recovery began
    worst: float | None = None
    evidence: str | None = None


def _worse(rule: Rule, a: float | None, b: float | None) -> float | None:
    if rule.condition == ACTIVE:
        return None
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b) if rule.condition == BELOW else max(a, b)


class RuleEngine:
    """The rules of one stream. Call :meth:`update` with each new set of signals."""

    def __init__(self, stream: str, rules: Sequence[Rule] = BUILTIN_RULES) -> None:
        names = [r.name for r in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidInputError(
                f"rules must have distinct names; {', '.join(duplicates)} appear twice"
            )
        self.stream = stream
        self.rules = tuple(rules)
        self._states = {r.name: _RuleState() for r in self.rules}

    def update(
        self,
        now: float,
        signals: Mapping[str, float | bool | None],
        since: Mapping[str, float | None] | None = None,
    ) -> list[Event]:
        """Evaluate every rule at ``now`` (Unix seconds); the events this moment emits.

        ``signals`` maps signal names to values; a name that is absent, None or NaN is
        missing. ``since`` may give when an on/off signal last changed, in the same clock:
        while it is on, its start (a detector's back-dated ``active_since``), used as the
        episode's start; once it is off, when it went off, used as the recovery's start.
        """
        if not _finite_number(now):
            raise InvalidInputError(f"now must be finite Unix seconds, got {now!r}")
        now = float(now)
        events: list[Event] = []
        for rule in self.rules:
            value = self._value(rule, signals.get(rule.signal))
            state = self._states[rule.name]
            if value is None:
                # No evidence either way: nothing changes, and a hold or recovery restarts.
                if state.raised:
                    state.recovered_since = None
                else:
                    state.bad_since = None
                    state.worst = None
                continue
            if not state.raised:
                if not rule.is_bad(value):
                    state.bad_since = None
                    state.worst = None
                    continue
                if state.bad_since is None:
                    state.bad_since = now
                    began = (since or {}).get(rule.signal)
                    if rule.condition == ACTIVE and _finite_number(began):
                        state.bad_since = min(now, float(began))  # type: ignore[arg-type]
                state.worst = _worse(rule, state.worst, _numeric(value))
                if now - state.bad_since >= rule.hold - _TIME_SLACK:
                    state.raised = True
                    state.recovered_since = None
                    events.append(self._event(rule, state, RAISED, now))
                continue
            if rule.is_recovered(value):
                if state.recovered_since is None:
                    state.recovered_since = now
                    ended = (since or {}).get(rule.signal)
                    if (
                        rule.condition == ACTIVE
                        and _finite_number(ended)
                        and state.bad_since <= float(ended)  # type: ignore[arg-type]
                    ):
                        state.recovered_since = min(now, float(ended))  # type: ignore[arg-type]
                if now - state.recovered_since >= rule.clear_hold - _TIME_SLACK:
                    events.append(self._event(rule, state, CLEARED, now))
                    self._states[rule.name] = _RuleState()
                continue
            state.recovered_since = None
            if rule.is_bad(value):
                state.worst = _worse(rule, state.worst, _numeric(value))
        return events

    @staticmethod
    def _value(rule: Rule, raw: Any) -> float | bool | None:
        if raw is None:
            return None
        if rule.condition == ACTIVE:
            if isinstance(raw, bool):
                return raw
            if _finite_number(raw):
                return bool(raw)
            return None
        if isinstance(raw, bool) or not _finite_number(raw):
            return None
        return float(raw)

    def _event(self, rule: Rule, state: _RuleState, kind: str, now: float) -> Event:
        assert state.bad_since is not None
        return Event(
            stream=self.stream,
            rule=rule.name,
            signal=rule.signal,
            state=kind,
            time=now,
            start=state.bad_since,
            end=state.recovered_since if kind == CLEARED else None,
            value=state.worst,
            threshold=rule.threshold if kind == RAISED else rule.clear_threshold,
            evidence=state.evidence,
        )

    def attach_evidence(self, rule: str, evidence: str | None) -> None:
        """Record the evidence folder of a raised rule (shown in ``active`` and its cleared
        event)."""
        state = self._states.get(rule)
        if state is None:
            raise InvalidInputError(
                f"no rule named {rule!r}; the rules are {', '.join(self._states)}"
            )
        if state.raised:
            state.evidence = evidence

    @property
    def active(self) -> tuple[ActiveAlert, ...]:
        """The raised rules, oldest first."""
        alerts = []
        for rule in self.rules:
            state = self._states[rule.name]
            if state.raised and state.bad_since is not None:
                alerts.append(
                    ActiveAlert(
                        rule=rule.name,
                        since=state.bad_since,
                        value=state.worst,
                        threshold=rule.threshold,
                        evidence=state.evidence,
                    )
                )
        return tuple(sorted(alerts, key=lambda a: a.since))


def _numeric(value: float | bool) -> float | None:
    return None if isinstance(value, bool) else float(value)


# ---------------------------------------------------------------------------- outputs


class EventLog:
    """Appends one JSON line per event to a file (or standard output), flushing each.

    ``target``: a path (its folder is created; a restart appends), ``"-"`` or None for
    standard output, or an open text stream. Safe to share between threads.
    """

    def __init__(self, target: str | os.PathLike[str] | TextIO | None = None) -> None:
        self._lock = threading.Lock()
        self._owned = False
        self.path: Path | None = None
        if target is None or (isinstance(target, str) and target == "-"):
            self._stream: TextIO = sys.stdout
            return
        if not isinstance(target, (str, os.PathLike)):
            self._stream = target
            return
        self.path = Path(target)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            needs_newline = self._ends_mid_line(self.path)
            self._stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        except OSError as exc:
            raise _log_error(self.path, exc) from exc
        self._owned = True
        if needs_newline:
            # A previous run died mid-line: start ours on a line of its own.
            self._write_line("")

    @staticmethod
    def _ends_mid_line(path: Path) -> bool:
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    return False
                f.seek(-1, os.SEEK_END)
                return f.read(1) != b"\n"
        except FileNotFoundError:
            return False

    def _write_line(self, line: str) -> None:
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except OSError as exc:
                raise _log_error(self.path or Path("<stdout>"), exc) from exc

    def write(self, event: Event) -> None:
        """Append the event as one line and flush it."""
        self._write_line(event.to_json())

    def close(self) -> None:
        with self._lock:
            if self._owned and not self._stream.closed:
                self._stream.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _log_error(path: Path, exc: OSError) -> OutputError:
    from topiq_video.files import describe_os_error

    return OutputError(
        f"Cannot write the event log {os.fsdecode(path)!r}: {describe_os_error(exc)}. "
        "Give event_log a file in a folder you may write to, or '-' for standard output."
    )


def redact_webhook_url(url: str) -> str:
    """A webhook URL fit for logs: scheme and host only (tokens travel in the user part,
    the path and the query of webhook URLs)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    rest = "/***" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}{rest}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirected POST would be replayed as a GET, or carry the event elsewhere: refuse."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        return None


@dataclass
class WebhookStats:
    sent: int = 0
    failed: int = 0  # gave up (after max_attempts, or a 4xx answer)
    dropped: int = 0  # pushed out of the full queue, or left queued at close
    retries: int = 0
    last_error: str | None = field(default=None)


class WebhookSender:
    """POSTs each event as JSON from a background thread.

    :meth:`send` never blocks: events wait in a bounded queue (when full, the oldest is
    dropped and counted). Connection errors, timeouts, 429 and 5xx answers are retried with
    exponential backoff and jitter, up to ``max_attempts`` in all; other answers are final.
    A ``user:password@`` in the URL becomes Basic authentication. Logs show only the URL's
    scheme and host.
    """

    def __init__(
        self,
        url: str,
        timeout: float = DEFAULT_WEBHOOK_TIMEOUT,
        max_attempts: int = DEFAULT_WEBHOOK_ATTEMPTS,
        *,
        queue_size: int = DEFAULT_WEBHOOK_QUEUE,
        backoff: float = DEFAULT_WEBHOOK_BACKOFF,
        max_backoff: float = DEFAULT_WEBHOOK_MAX_BACKOFF,
    ) -> None:
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(
                "webhook url must be an http:// or https:// URL with a host, e.g. "
                "https://alerts.example.com/hook"
            )
        if not (_finite_number(timeout) and timeout > 0):
            raise InvalidInputError(f"webhook timeout must be seconds > 0, got {timeout!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise InvalidInputError(
                f"webhook max_attempts must be an integer >= 1, got {max_attempts!r}"
            )
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise InvalidInputError(
                f"webhook queue_size must be an integer >= 1, got {queue_size!r}"
            )
        if not (_finite_number(backoff) and backoff >= 0 and _finite_number(max_backoff)):
            raise InvalidInputError("webhook backoff and max_backoff must be seconds >= 0")
        self.url = redact_webhook_url(url)
        self.timeout = float(timeout)
        self.max_attempts = max_attempts
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": "topiq-video-monitor",
        }
        if parts.username is not None or parts.password is not None:
            user = urllib.parse.unquote(parts.username or "")
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        self._target = urllib.parse.urlunsplit(
            (parts.scheme, netloc, parts.path or "/", parts.query, "")
        )
        self._opener = urllib.request.build_opener(_NoRedirect())
        self._queue: collections.deque[bytes] = collections.deque()
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._closing = False
        self._deadline: float | None = None
        self._wake = threading.Event()
        self.stats = WebhookStats()
        self._thread = threading.Thread(target=self._run, name="topiq-video-webhook", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """The delivery thread is still alive."""
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Events waiting to be sent."""
        with self._cond:
            return len(self._queue)

    def send(self, event: Event | Mapping[str, Any]) -> None:
        """Queue the event for delivery; returns at once."""
        payload = event.to_dict() if isinstance(event, Event) else dict(event)
        try:
            body = json.dumps(payload, allow_nan=False, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"a webhook event must be strict JSON (no NaN, Infinity or objects): {exc}"
            ) from exc
        with self._cond:
            if self._closing:
                self.stats.dropped += 1
                logger.warning("webhook %s is closed; an event was dropped", self.url)
                return
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.stats.dropped += 1
                if self.stats.dropped == 1 or self.stats.dropped % 100 == 0:
                    logger.warning(
                        "webhook %s is falling behind: %d event(s) dropped so far",
                        self.url,
                        self.stats.dropped,
                    )
            self._queue.append(body)
            self._cond.notify()

    def close(self, timeout: float = DEFAULT_WEBHOOK_CLOSE_TIMEOUT) -> bool:
        """Stop accepting events; deliver what is queued for at most ``timeout`` seconds,
        then drop the rest. True when the thread has ended (a request in flight may hold it
        for up to the request timeout; it is a daemon and never keeps the program alive)."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._deadline = _time.monotonic() + max(0.0, timeout)
            self._cond.notify_all()
        self._wake.set()
        self._thread.join(max(0.0, timeout) + 0.05)
        return not self.running

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _past_deadline(self) -> bool:
        return self._deadline is not None and _time.monotonic() >= self._deadline

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing and (not self._queue or self._past_deadline()):
                    if self._queue:
                        self.stats.dropped += len(self._queue)
                        logger.warning(
                            "webhook %s closed with %d event(s) undelivered",
                            self.url,
                            len(self._queue),
                        )
                        self._queue.clear()
                    return
                body = self._queue.popleft()
            try:
                self._deliver(body)
            except Exception as exc:  # the thread must outlive any one event
                self.stats.failed += 1
                self.stats.last_error = type(exc).__name__
                logger.error("webhook %s: an event failed: %s", self.url, type(exc).__name__)

    def _deliver(self, body: bytes) -> None:
        for attempt in range(1, self.max_attempts + 1):
            retry, error = self._post(body)
            if error is None:
                self.stats.sent += 1
                return
            self.stats.last_error = error
            if not retry or attempt == self.max_attempts or self._past_deadline():
                self.stats.failed += 1
                logger.warning(
                    "webhook %s: giving up on an event after %d attempt(s): %s",
                    self.url,
                    attempt,
                    error,
                )
                return
            self.stats.retries += 1
            delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            delay = delay / 2 + random.uniform(0.0, delay / 2)  # jitter: no thundering herd
            if self._deadline is not None:
                delay = min(delay, max(0.0, self._deadline - _time.monotonic()))
            logger.info(
                "webhook %s: attempt %d failed (%s); retrying in %.2f s",
                self.url,
                attempt,
                error,
                delay,
            )
            self._wake.wait(delay)

    def _post(self, body: bytes) -> tuple[bool, str | None]:
        """One attempt: (retryable, error or None)."""
        request = urllib.request.Request(
            self._target, data=body, headers=self._headers, method="POST"
        )
        timeout = self.timeout
        if self._deadline is not None:
            timeout = max(0.1, min(timeout, self._deadline - _time.monotonic()))
        try:
            with contextlib.closing(self._opener.open(request, timeout=timeout)) as response:
                response.read(65536)
            return False, None
        except urllib.error.HTTPError as exc:
            exc.close()
            retry = exc.code >= 500 or exc.code == 429
            return retry, f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = (
                reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
            )
            return True, f"connection failed ({type(reason).__name__}: {text})"
        except (TimeoutError, ConnectionError, HTTPException, OSError) as exc:
            return True, f"{type(exc).__name__}"
