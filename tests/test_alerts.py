"""Alert rules (parsing, raise/clear episodes, hysteresis, missing signals), the event JSON,
the event log and the webhook sender (against a local HTTP receiver)."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from net import closed_port

from topiq_video.errors import InvalidInputError, OutputError
from topiq_video.monitor.alerts import (
    BLACK_RULE,
    BUILTIN_RULES,
    EVENT_SCHEMA,
    FREEZE_RULE,
    OUTAGE_RULE,
    SILENCE_RULE,
    Event,
    EventLog,
    Rule,
    RuleEngine,
    WebhookSender,
    parse_rules,
    redact_webhook_url,
)
from topiq_video.monitor.state import ActiveAlert

T0 = 1_700_000_000.0  # a wall-clock origin for the series (Unix seconds)

LOW_SCORE = {
    "name": "low-score",
    "signal": "score.1m.mean",
    "below": 0.4,
    "for": 30,
    "clear_above": 0.45,
    "clear_for": 10,
}

# ---- rules from config ---------------------------------------------------------------------


def test_rule_from_the_documented_dict() -> None:
    rule = Rule.from_dict(LOW_SCORE)
    assert rule == Rule("low-score", "score.1m.mean", "below", 0.4, 30.0, 0.45, 10.0)
    assert Rule.from_dict(rule.to_dict()) == rule


def test_rule_defaults_clear_at_the_threshold_at_once() -> None:
    rule = Rule.from_dict({"name": "hot", "signal": "score", "above": 0.9})
    assert (rule.threshold, rule.clear_threshold, rule.hold, rule.clear_hold) == (0.9, 0.9, 0, 0)
    active = Rule.from_dict({"name": "frozen", "signal": "freeze", "active": True, "for": 5})
    assert (active.condition, active.threshold, active.hold) == ("active", None, 5.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": None}, "name is required"),
        ({"name": "bad name!"}, "letters, digits"),
        (
            {"signal": "score.1m.avg"},
            "unknown signal 'score.1m.avg'; the signals are .*score.1m.mean",
        ),
        ({"clear_abov": 0.5}, "unknown key.*clear_abov.*clear_above"),
        ({"above": 0.9}, "exactly one of below"),
        ({"below": "0.4"}, "below must be a finite number, got '0.4'; write e.g. below = 0.4"),
        ({"below": float("nan")}, "below must be a finite number"),
        ({"for": -1}, "for must be a number of seconds >= 0"),
        ({"clear_for": True}, "clear_for must be a number of seconds"),
        ({"clear_above": 0.3}, "must clear at or above it; got clear_above = 0.3"),
        ({"clear_below": 0.5}, "clears with clear_above, not clear_below"),
        ({"signal": "freeze"}, "'freeze' is on or off; write active = true"),
    ],
)
def test_rule_errors_say_what_is_wrong_and_how_to_write_it(change, message) -> None:
    data = {**LOW_SCORE, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(InvalidInputError, match=message):
        Rule.from_dict(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "signal": "score", "active": True}, "is a number; write below"),
        ({"name": "x", "signal": "black", "active": False}, "write active = true"),
        ({"name": "x", "signal": "black", "active": True, "clear_above": 1}, "does not apply"),
        ({"name": "x", "signal": "score", "above": 0.5, "clear_below": 0.6}, "at or below it"),
        ("below 0.4", "must be a table like"),
    ],
)
def test_more_rule_errors(data, message) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Rule.from_dict(data)


def test_unknown_signals_pass_when_the_caller_allows_any() -> None:
    rule = Rule.from_dict(
        {"name": "fps", "signal": "measured_fps", "below": 20}, known_signals=None
    )
    assert rule.signal == "measured_fps"


def test_builtin_rules_are_defined_once_and_parse_rules_merges_config() -> None:
    assert BUILTIN_RULES == (FREEZE_RULE, BLACK_RULE, SILENCE_RULE, OUTAGE_RULE)
    assert [r.signal for r in BUILTIN_RULES] == ["freeze", "black", "silence", "outage"]
    assert all(r.condition == "active" and r.hold == 0 and r.clear_hold > 0 for r in BUILTIN_RULES)
    assert parse_rules(None) == BUILTIN_RULES
    rules = parse_rules(
        [
            LOW_SCORE,
            {"name": "silence", "enabled": False},
            {"name": "freeze", "signal": "freeze", "active": True, "for": 10},
        ]
    )
    names = [r.name for r in rules]
    assert names == ["freeze", "black", "outage", "low-score"]
    assert rules[0].hold == 10.0
    assert parse_rules([LOW_SCORE], builtin=False) == (Rule.from_dict(LOW_SCORE),)
    with pytest.raises(InvalidInputError, match="defined twice"):
        parse_rules([LOW_SCORE, LOW_SCORE])
    with pytest.raises(InvalidInputError, match="no such rule"):
        parse_rules([{"name": "nope", "enabled": False}])
    with pytest.raises(InvalidInputError, match="distinct names"):
        RuleEngine("cam", [FREEZE_RULE, FREEZE_RULE])


# ---- the engine ----------------------------------------------------------------------------


def _run(rule: Rule, series: list[tuple[float, object]]) -> list[tuple[float, str, float, object]]:
    """Feed (seconds, value) pairs; each event as (time, state, start, end), relative to T0."""
    engine = RuleEngine("cam-1", [rule])
    out = []
    for t, value in series:
        for e in engine.update(T0 + t, {rule.signal: value}):
            end = None if e.end is None else e.end - T0
            out.append((e.time - T0, e.state, e.start - T0, end))
    return out


LOW = Rule.from_dict(LOW_SCORE)  # below 0.4 for 30 s; clears above 0.45 after 10 s


@pytest.mark.parametrize(
    ("rule", "series", "expected"),
    [
        pytest.param(
            LOW,
            [
                (0, 0.5),
                (10, 0.3),
                (20, 0.35),
                (39, 0.3),
                (40, 0.3),
                (45, 0.42),
                (50, 0.46),
                (55, 0.3),
                (60, 0.5),
                (69, 0.5),
                (70, 0.5),
                (80, 0.5),
            ],
            [(40, "raised", 10, None), (70, "cleared", 10, 60)],
            id="holds-then-raises-and-recovers",
        ),
        pytest.param(
            LOW,
            [(t, 0.3 if (t // 20) % 2 else 0.5) for t in range(0, 200, 5)],
            [],
            id="flapping-below-hold-never-raises",
        ),
        pytest.param(
            LOW,
            [(0, 0.3), (30, 0.3)]
            + [(t, 0.5 if (t // 5) % 2 else 0.3) for t in range(35, 100, 5)]
            + [(100, 0.5), (105, 0.5), (110, 0.5)],
            [(30, "raised", 0, None), (105, "cleared", 0, 95)],
            id="flapping-while-raised-is-one-episode",
        ),
        pytest.param(
            LOW,
            [(0, 0.3), (30, 0.3), (31, 0.42), (60, 0.44), (100, 0.44)],
            [(30, "raised", 0, None)],
            id="hysteresis-band-does-not-clear",
        ),
        pytest.param(
            Rule("low", "score", "below", 0.4),
            [(0, 0.3), (31, 0.42), (32, 0.39), (33, 0.41)],
            [
                (0, "raised", 0, None),
                (31, "cleared", 0, 31),
                (32, "raised", 32, None),
                (33, "cleared", 32, 33),
            ],
            id="no-hold-no-hysteresis",
        ),
        pytest.param(
            LOW,
            [(0, 0.3), (20, None), (25, 0.3), (50, 0.3), (55, 0.3)],
            [(55, "raised", 25, None)],
            id="missing-value-restarts-the-hold",
        ),
        pytest.param(
            LOW,
            [(0, 0.3), (30, 0.3), (35, None), (100, None), (101, float("nan")), (102, True)],
            [(30, "raised", 0, None)],
            id="missing-values-never-clear",
        ),
        pytest.param(
            LOW,
            [(0, 0.3), (30, 0.3), (40, 0.5), (45, None), (50, 0.5), (59, 0.5), (60, 0.5)],
            [(30, "raised", 0, None), (60, "cleared", 0, 50)],
            id="missing-value-restarts-the-recovery",
        ),
        pytest.param(
            Rule("hot", "score", "above", 0.9, hold=2, clear_threshold=0.8, clear_hold=1),
            [(0, 0.95), (1, 0.95), (2, 0.91), (3, 0.85), (4, 0.79), (5, 0.7)],
            [(2, "raised", 0, None), (5, "cleared", 0, 4)],
            id="above",
        ),
        pytest.param(
            FREEZE_RULE,
            [
                (0, False),
                (1, True),
                (2, True),
                (3, False),
                (4, True),
                (5, False),
                (6, False),
                (7, False),
                (8, None),
            ],
            [(1, "raised", 1, None), (7, "cleared", 1, 5)],
            id="builtin-freeze-waits-clear-hold",
        ),
    ],
)
def test_rule_raises_and_clears_as_its_parameters_say(rule, series, expected) -> None:
    assert _run(rule, series) == expected


def test_active_alerts_and_event_fields() -> None:
    engine = RuleEngine("cam-1", [LOW, FREEZE_RULE])
    assert engine.update(T0, {"score.1m.mean": 0.3, "freeze": False}) == []
    # The freeze detector went active at T0 + 5, back-dated to T0 + 3 (its episode's start).
    events = engine.update(
        T0 + 5, {"score.1m.mean": 0.25, "freeze": True}, since={"freeze": T0 + 3}
    )
    assert [(e.rule, e.state, e.start) for e in events] == [("freeze", "raised", T0 + 3)]
    assert engine.active == (ActiveAlert("freeze", T0 + 3, None, None),)
    events = engine.update(T0 + 30, {"score.1m.mean": 0.35, "freeze": True})
    assert events == [
        Event("cam-1", "low-score", "score.1m.mean", "raised", T0 + 30, T0, None, 0.25, 0.4)
    ]
    engine.attach_evidence("low-score", "evidence/cam-1/low-score-1")
    assert engine.active == (
        ActiveAlert("low-score", T0, 0.25, 0.4, "evidence/cam-1/low-score-1"),
        ActiveAlert("freeze", T0 + 3, None, None),
    )
    engine.update(T0 + 40, {"score.1m.mean": 0.5, "freeze": False})
    events = engine.update(T0 + 50, {"score.1m.mean": 0.5, "freeze": False})
    cleared = {e.rule: e for e in events}
    assert set(cleared) == {"low-score", "freeze"}
    low = cleared["low-score"]
    assert (low.state, low.start, low.end, low.duration) == ("cleared", T0, T0 + 40, 40.0)
    assert (low.value, low.threshold, low.evidence) == (0.25, 0.45, "evidence/cam-1/low-score-1")
    assert engine.active == ()
    with pytest.raises(InvalidInputError, match="no rule named"):
        engine.attach_evidence("nope", "x")


# ---- the event JSON ------------------------------------------------------------------------


def _strict(line: str) -> dict:
    def refuse(name: str):
        raise AssertionError(f"non-strict JSON constant {name}")

    return json.loads(line, parse_constant=refuse)


def _unix(iso: str) -> float:
    assert iso.endswith("Z")
    return datetime.fromisoformat(iso[:-1] + "+00:00").timestamp()


def test_event_json_is_strict_and_has_every_field() -> None:
    raised = Event("cam-1", "low-score", "score.1m.mean", "raised", T0 + 30.25, T0, None, 0.25, 0.4)
    cleared = Event(
        "cam-1",
        "low-score",
        "score.1m.mean",
        "cleared",
        T0 + 50,
        T0,
        T0 + 40,
        float("nan"),
        float("inf"),
        "evidence/x",
    )
    for event in (raised, cleared):
        line = event.to_json()
        assert "\n" not in line and "NaN" not in line and "Infinity" not in line
        data = _strict(line)
        assert set(data) == {
            "schema", "stream", "rule", "signal", "state", "time", "time_unix", "start",
            "start_unix", "end", "end_unix", "duration", "value", "threshold", "evidence",
        }  # fmt: skip
        assert data["schema"] == EVENT_SCHEMA
        assert (data["stream"], data["rule"], data["state"]) == ("cam-1", "low-score", event.state)
        assert _unix(data["start"]) == pytest.approx(data["start_unix"], abs=1e-3)
        assert _unix(data["time"]) == pytest.approx(event.time, abs=1e-3)
    data = _strict(raised.to_json())
    assert data["start"] == "2023-11-14T22:13:20.000Z" and data["start_unix"] == T0
    assert (data["end"], data["end_unix"], data["duration"]) == (None, None, None)
    assert (data["value"], data["threshold"]) == (0.25, 0.4)
    data = _strict(cleared.to_json())
    assert data["end"] == "2023-11-14T22:14:00.000Z" and data["duration"] == 40.0
    assert (data["value"], data["threshold"], data["evidence"]) == (None, None, "evidence/x")


# ---- the event log -------------------------------------------------------------------------


def _event(i: int) -> Event:
    return Event("cam-1", f"rule-{i}", "freeze", "raised", T0 + i, T0 + i - 1, None, None, None)


def test_event_log_appends_one_flushed_line_per_event_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "events.jsonl"
    log = EventLog(path)
    log.write(_event(1))
    # Flushed at once: readable before close.
    assert [_strict(x)["rule"] for x in path.read_text().splitlines()] == ["rule-1"]
    log.close()
    with EventLog(path) as again:  # a restart appends
        again.write(_event(2))
    with path.open("a") as f:
        f.write('{"schema": "topiq-video/ev')  # a run killed mid-line
    with EventLog(str(path)) as third:
        third.write(_event(3))
    lines = path.read_text().splitlines()
    assert [_strict(x)["rule"] for x in lines if x.endswith("}") and x.startswith('{"schema":"')] == [
        "rule-1", "rule-2", "rule-3",
    ]  # fmt: skip
    assert len(lines) == 4


def test_event_log_to_stdout(capsys) -> None:
    EventLog("-").write(_event(1))
    EventLog().write(_event(2))
    out = capsys.readouterr().out.splitlines()
    assert [_strict(x)["rule"] for x in out] == ["rule-1", "rule-2"]


def test_event_log_error_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="Cannot write the event log .*a folder you may write to"):
        EventLog(blocker / "events.jsonl")


# ---- the webhook ---------------------------------------------------------------------------


class Receiver:
    """A tiny HTTP receiver on 127.0.0.1: records each POST; answers ``fail_first`` requests
    with 500 (or ``status``), and holds requests while ``hold`` is clear."""

    def __init__(self, fail_first: int = 0, status: int = 500) -> None:
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.status = status
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                receiver.arrived.set()
                receiver.hold.wait(10)
                failing = len(receiver.requests) <= receiver.fail_first
                self.send_response(receiver.status if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_webhook_reaches_the_receiver() -> None:
    with Receiver() as receiver:
        sender = WebhookSender(receiver.url(), timeout=2.0)
        sender.send(_event(1))
        _wait_for(lambda: sender.stats.sent == 1)
        assert sender.close(2.0)
    (request,) = receiver.requests
    assert request["path"] == "/hook"
    assert request["headers"]["Content-Type"] == "application/json"
    assert _strict(request["body"].decode()) == _event(1).to_dict()


def test_webhook_retries_5xx_with_backoff_then_delivers() -> None:
    with Receiver(fail_first=2) as receiver:
        sender = WebhookSender(receiver.url(), max_attempts=4, backoff=0.05)
        started = time.monotonic()
        sender.send(_event(1))
        _wait_for(lambda: sender.stats.sent == 1)
        elapsed = time.monotonic() - started
        sender.close(1.0)
    assert len(receiver.requests) == 3
    assert len({r["body"] for r in receiver.requests}) == 1  # the same event each time
    assert (sender.stats.retries, sender.stats.failed) == (2, 0)
    # Backoff with jitter: at least half of 0.05 + 0.1 seconds between the attempts.
    assert elapsed >= 0.075


def test_webhook_gives_up_on_4xx_at_once_and_after_max_attempts_on_errors() -> None:
    with Receiver(fail_first=10, status=400) as receiver:
        sender = WebhookSender(receiver.url(), max_attempts=5, backoff=0.01)
        sender.send(_event(1))
        _wait_for(lambda: sender.stats.failed == 1)
        sender.close(1.0)
    assert len(receiver.requests) == 1 and sender.stats.last_error == "HTTP 400"
    refused = WebhookSender(f"http://127.0.0.1:{closed_port()}/hook", max_attempts=3, backoff=0.01)
    refused.send(_event(1))
    _wait_for(lambda: refused.stats.failed == 1)
    assert (refused.stats.retries, refused.stats.sent) == (2, 0)
    assert "connection failed" in (refused.stats.last_error or "")
    refused.close(1.0)


def test_send_never_blocks_and_a_full_queue_drops_the_oldest() -> None:
    with Receiver() as receiver:
        receiver.hold.clear()  # the receiver hangs
        sender = WebhookSender(receiver.url(), timeout=5.0, queue_size=2)
        sender.send(_event(0))
        assert receiver.arrived.wait(5)  # event 0 is in flight, held
        started = time.monotonic()
        for i in range(1, 6):
            sender.send(_event(i))
        assert time.monotonic() - started < 0.1
        assert sender.stats.dropped == 3 and sender.pending == 2
        receiver.hold.set()
        _wait_for(lambda: sender.stats.sent == 3)
        sender.close(1.0)
    rules = [_strict(r["body"].decode())["rule"] for r in receiver.requests]
    assert rules == ["rule-0", "rule-4", "rule-5"]


def test_close_is_prompt_even_when_the_receiver_hangs() -> None:
    with Receiver() as receiver:
        receiver.hold.clear()
        sender = WebhookSender(receiver.url(), timeout=5.0)
        for i in range(3):
            sender.send(_event(i))
        assert receiver.arrived.wait(5)
        started = time.monotonic()
        finished = sender.close(0.3)
        assert time.monotonic() - started < 1.0
        assert not finished  # the request in flight still holds the (daemon) thread
        receiver.hold.set()
        _wait_for(lambda: not sender.running)
    assert sender.stats.dropped == 2  # the two still queued at the deadline
    sender.send(_event(9))  # after close: dropped, not queued
    assert sender.stats.dropped == 3 and sender.pending == 0


def test_webhook_keeps_url_secrets_out_of_logs_and_sends_basic_auth(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="topiq_video")
    with Receiver(fail_first=1) as receiver:
        url = f"http://alice:s3cret-pass@127.0.0.1:{receiver.port}/hook/TOKEN123?key=SECRET2"
        sender = WebhookSender(url, max_attempts=2, backoff=0.01)
        assert sender.url == f"http://127.0.0.1:{receiver.port}/***"
        sender.send(_event(1))
        _wait_for(lambda: sender.stats.sent == 1)
        sender.close(1.0)
    assert receiver.requests[-1]["path"] == "/hook/TOKEN123?key=SECRET2"
    auth = receiver.requests[-1]["headers"]["Authorization"]
    assert base64.b64decode(auth.split()[1]) == b"alice:s3cret-pass"
    assert "retrying" in caplog.text
    for secret in ("alice", "s3cret", "TOKEN123", "SECRET2"):
        assert secret not in caplog.text


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "file:///etc/passwd", "example.com", ""])
def test_webhook_accepts_only_http_urls(url: str) -> None:
    with pytest.raises(InvalidInputError, match="http:// or https://"):
        WebhookSender(url)


def test_redacted_url_keeps_scheme_and_host_only() -> None:
    assert redact_webhook_url("https://u:p@hooks.example.com:8443/a/b?t=1") == (
        "https://hooks.example.com:8443/***"
    )
    assert redact_webhook_url("http://[::1]:9000/") == "http://[::1]:9000"


def test_send_refuses_what_is_not_strict_json() -> None:
    sender = WebhookSender(f"http://127.0.0.1:{closed_port()}/", max_attempts=1)
    try:
        with pytest.raises(InvalidInputError, match="strict JSON"):
            sender.send({"value": float("nan")})
        assert sender.pending == 0
    finally:
        sender.close(1.0)
