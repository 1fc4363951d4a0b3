"""Prometheus exporter: every metric scraped over HTTP from a running MonitorServer equals the
snapshot it came from; secrets never leak; the Grafana dashboard queries only exported metrics."""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from topiq_video.monitor.exporter import Exporter
from topiq_video.monitor.state import (
    DETECTORS,
    WINDOW_STATS,
    WINDOWS,
    ActiveAlert,
    StreamCounters,
    StreamInfo,
    StreamSnapshot,
)
from topiq_video.monitor.web import DEFAULT_HOST, DEFAULT_PORT, MonitorServer

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "monitoring" / "grafana-dashboard.json"
SCRAPE_CONFIG = REPO / "monitoring" / "prometheus.yml"

COUNTER_FIELDS = {
    "frames_decoded": "topiq_video_frames_decoded_total",
    "frames_scored": "topiq_video_frames_scored_total",
    "frames_skipped": "topiq_video_frames_skipped_total",
    "decode_errors": "topiq_video_decode_errors_total",
    "lost_frames": "topiq_video_lost_frames_total",
    "reconnects": "topiq_video_reconnects_total",
    "outage_seconds": "topiq_video_outage_seconds_total",
    "received_bytes": "topiq_video_received_bytes_total",
    "freeze_seconds": "topiq_video_freeze_seconds_total",
    "black_seconds": "topiq_video_black_seconds_total",
    "silence_seconds": "topiq_video_silence_seconds_total",
}
"""The brief's counters (and lost frames), by the StreamCounters field they export."""
GAUGES = {
    "topiq_video_up": {"stream"},
    "topiq_video_score": {"stream", "model", "window", "stat"},
    "topiq_video_freeze_active": {"stream"},
    "topiq_video_black_active": {"stream"},
    "topiq_video_silence_active": {"stream"},
    "topiq_video_last_frame_timestamp_seconds": {"stream"},
    "topiq_video_stream_info": {"stream", "codec", "width", "height", "fps"},
    "topiq_video_alert_active": {"stream", "rule"},
}


def full_snapshot(name: str = "Studio A", **changes: object) -> StreamSnapshot:
    """A stream with every field known and every number distinct."""
    snap = StreamSnapshot(
        name=name,
        url="rtsp://***@cam.example/live",
        model="topiq_nr",
        up=True,
        connected_since=1_700_000_000.25,
        last_frame_time=1_700_003_600.125,
        score=0.6125,
        scores={
            w: {s: 0.5 + 0.01 * i + 0.001 * j for j, s in enumerate(WINDOW_STATS)}
            for i, w in enumerate(WINDOWS)
        },
        detectors={"freeze": True, "black": False, "silence": True},
        alerts=(ActiveAlert("low_score", 1_700_003_500.0, 0.31, 0.4, "alerts/a-1"),),
        counters=StreamCounters(
            frames_decoded=90_211,
            frames_scored=3_607,
            frames_skipped=13,
            decode_errors=4,
            lost_frames=17,
            reconnects=2,
            outage_seconds=14.75,
            received_bytes=812_345_679,
            freeze_seconds=3.5,
            black_seconds=1.25,
            silence_seconds=60.5,
        ),
        info=StreamInfo("h264", 1920, 1080, 30000 / 1001, True),
        measured_fps=29.9,
    )
    return replace(snap, **changes)


def bare_snapshot(name: str = "Lobby") -> StreamSnapshot:
    """A stream that has not delivered a frame yet: nothing optional is known."""
    return StreamSnapshot(
        name=name,
        url="udp://239.0.0.1:1234",
        model="topiq_nr-flive",
        up=False,
        connected_since=None,
        last_frame_time=None,
        score=None,
        scores={w: dict.fromkeys(WINDOW_STATS) for w in WINDOWS},
        detectors=dict.fromkeys(DETECTORS, False),
        alerts=(),
        counters=StreamCounters(reconnects=5, outage_seconds=120.0),
        info=None,
        measured_fps=None,
    )


class Provider:
    """Snapshots that a test changes between scrapes, as the stream workers would."""

    def __init__(self, snapshots: list[StreamSnapshot]) -> None:
        self._lock = threading.Lock()
        self._snapshots = list(snapshots)

    def set(self, snapshots: list[StreamSnapshot]) -> None:
        with self._lock:
            self._snapshots = list(snapshots)

    def __call__(self) -> list[StreamSnapshot]:
        with self._lock:
            return list(self._snapshots)


@pytest.fixture
def provider() -> Provider:
    return Provider([full_snapshot(), bare_snapshot()])


@pytest.fixture
def server(provider: Provider) -> Iterator[MonitorServer]:
    with MonitorServer(port=0, snapshots=provider) as srv:
        yield srv


def scrape(server: MonitorServer, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics")
    if accept:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return response.read().decode("utf-8"), response.headers["Content-Type"]


def samples_of(text: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value, checking no series appears twice."""
    out: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = sample.value
    return out


def families_of(text: str) -> dict[str, tuple[str, set[frozenset]]]:
    """sample name -> (family type, the label-name sets of its samples)."""
    out: dict[str, tuple[str, set[frozenset]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            kind, labelsets = out.setdefault(sample.name, (family.type, set()))
            labelsets.add(frozenset(sample.labels))
    return out


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


# ---------------------------------------------------------------------------- values and types


def test_every_metric_over_http_equals_the_snapshot(server: MonitorServer) -> None:
    text, content_type = scrape(server)
    assert content_type.startswith("text/plain")
    samples = samples_of(text)
    families = families_of(text)
    full, bare = full_snapshot(), bare_snapshot()

    # Types and label names, for every metric of the brief.
    for field, name in COUNTER_FIELDS.items():
        assert families[name] == ("counter", {frozenset({"stream"})}), field
    for name, labels in GAUGES.items():
        assert families[name] == ("gauge", {frozenset(labels)}), name

    s = full.name
    assert samples[key("topiq_video_up", stream=s)] == 1.0
    for window in WINDOWS:
        for stat in WINDOW_STATS:
            labels = {"stream": s, "model": full.model, "window": window, "stat": stat}
            assert samples[key("topiq_video_score", **labels)] == full.scores[window][stat]
    for field, name in COUNTER_FIELDS.items():
        assert samples[key(name, stream=s)] == getattr(full.counters, field), field
    for kind in DETECTORS:
        expected = 1.0 if full.detectors[kind] else 0.0
        assert samples[key(f"topiq_video_{kind}_active", stream=s)] == expected
    assert samples[key("topiq_video_last_frame_timestamp_seconds", stream=s)] == (
        full.last_frame_time
    )
    info = {"stream": s, "codec": "h264", "width": "1920", "height": "1080", "fps": "29.97"}
    assert samples[key("topiq_video_stream_info", **info)] == 1.0
    assert samples[key("topiq_video_alert_active", stream=s, rule="low_score")] == 1.0

    # The bare stream: down, its counters, and nothing that is not known yet.
    b = bare.name
    assert samples[key("topiq_video_up", stream=b)] == 0.0
    assert samples[key("topiq_video_reconnects_total", stream=b)] == 5
    assert samples[key("topiq_video_outage_seconds_total", stream=b)] == 120.0
    assert samples[key("topiq_video_frames_decoded_total", stream=b)] == 0
    unknown = (
        "topiq_video_score",
        "topiq_video_last_frame_timestamp_seconds",
        "topiq_video_stream_info",
        "topiq_video_alert_active",
    )
    for name, labels in samples:
        if name in unknown:
            assert ("stream", b) not in labels, name


def test_partial_windows_and_nan_scores_are_absent(
    provider: Provider, server: MonitorServer
) -> None:
    scores = {w: dict.fromkeys(WINDOW_STATS) for w in WINDOWS}
    scores["10s"] = {"mean": 0.7, "p5": float("nan"), "min": 0.65}
    provider.set([full_snapshot(scores=scores)])
    series = {
        (dict(labels)["window"], dict(labels)["stat"]): value
        for (name, labels), value in samples_of(scrape(server)[0]).items()
        if name == "topiq_video_score"
    }
    assert series == {("10s", "mean"): 0.7, ("10s", "min"): 0.65}


def test_counters_follow_the_snapshots_and_removed_streams_disappear(
    provider: Provider, server: MonitorServer
) -> None:
    first = samples_of(scrape(server)[0])
    assert key("topiq_video_up", stream="Lobby") in first
    grown = full_snapshot(
        counters=replace(full_snapshot().counters, frames_decoded=95_000, reconnects=3),
        alerts=(),
    )
    provider.set([grown])
    after = samples_of(scrape(server)[0])
    assert after[key("topiq_video_frames_decoded_total", stream="Studio A")] == 95_000
    assert after[key("topiq_video_reconnects_total", stream="Studio A")] == 3
    assert all(("stream", "Lobby") not in labels for _, labels in after), "removed stream stayed"
    # The rule that fired and cleared is reported as 0, not dropped.
    assert after[key("topiq_video_alert_active", stream="Studio A", rule="low_score")] == 0.0


def test_known_rules_are_zero_before_they_fire() -> None:
    exporter = Exporter(lambda: [bare_snapshot()], rules=["low_score", "stall"])
    body, _ = exporter.exposition()
    samples = samples_of(body.decode())
    assert samples[key("topiq_video_alert_active", stream="Lobby", rule="low_score")] == 0.0
    assert samples[key("topiq_video_alert_active", stream="Lobby", rule="stall")] == 0.0


def test_streams_with_one_name_get_distinct_series(
    provider: Provider, server: MonitorServer
) -> None:
    provider.set([full_snapshot("cam"), full_snapshot("cam", up=False)])
    samples = samples_of(scrape(server)[0])  # samples_of fails on a duplicate series
    assert samples[key("topiq_video_up", stream="cam")] == 1.0
    assert samples[key("topiq_video_up", stream="cam (2)")] == 0.0


def test_openmetrics_when_the_scraper_asks(server: MonitorServer) -> None:
    text, content_type = scrape(server, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    by_name = {f.name: f for f in openmetrics_families(text)}
    assert by_name["topiq_video_frames_decoded"].type == "counter"
    decoded = {
        s.labels["stream"]: s.value
        for s in by_name["topiq_video_frames_decoded"].samples
        if s.name.endswith("_total")
    }
    assert decoded == {"Studio A": 90_211, "Lobby": 0}


def test_the_exporter_uses_its_own_registry() -> None:
    from prometheus_client import REGISTRY, generate_latest

    Exporter(lambda: [full_snapshot()])
    assert b"topiq_video" not in generate_latest(REGISTRY)


# ---------------------------------------------------------------------------- secrets


def test_secrets_never_appear_in_metrics_or_api(provider: Provider, server: MonitorServer) -> None:
    # A worker that broke the contract: the name is an unmasked URL, and so are url and error.
    leaky = "rtsp://admin:hunter2@10.0.0.7:554/live?token=s3cr3tTOKEN&x=1"
    provider.set(
        [
            full_snapshot(
                name=leaky,
                url=leaky,
                last_error=f"Connection refused ({leaky})",
                alerts=(ActiveAlert("stall", 1.0, None, None),),
            )
        ]
    )
    text, _ = scrape(server)
    openmetrics, _ = scrape(server, "application/openmetrics-text; version=1.0.0")
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api/streams", timeout=10) as r:
        api = r.read().decode()
    for body in (text, openmetrics, api):
        for secret in ("hunter2", "admin", "s3cr3tTOKEN", "token="):
            assert secret not in body
    # What is left still says which stream it is.
    streams = {
        dict(labels)["stream"] for name, labels in samples_of(text) if name == "topiq_video_up"
    }
    assert streams == {"rtsp://***@10.0.0.7:554/live?***"}
    assert json.loads(api)["streams"][0]["url"] == "rtsp://***@10.0.0.7:554/live?***"


# ---------------------------------------------------------------------------- the dashboard


def _panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_every_metric_the_dashboard_queries_is_exported(server: MonitorServer) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    families = families_of(scrape(server)[0])
    exported = set(families)
    metric_name = re.compile(r"\btopiq_video_[a-zA-Z0-9_]+")

    queried: set[str] = set()
    targets = [t for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]
    assert len(targets) >= 15
    for target in targets:
        expr = target["expr"]
        names = set(metric_name.findall(expr))
        assert names, f"a target queries no topiq_video metric: {expr}"
        assert names <= exported, f"{expr} queries {names - exported}, which is not exported"
        assert 'stream=~"$stream"' in expr, f"{expr} ignores the stream variable"
        # Every {{label}} in a legend is a label of the metric it names.
        labels = set().union(*(set().union(*families[n][1]) for n in names))
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
            assert label in labels, f"legend {{{{{label}}}}} of {expr}"
        # rate() and increase() only on counters; counters only through them.
        for n in names:
            if families[n][0] == "counter":
                assert re.search(rf"(rate|increase)\({n}\{{", expr), expr
            else:
                assert not re.search(rf"(rate|increase)\({n}\b", expr), expr
        queried |= names
    variables = dashboard["templating"]["list"]
    stream_var = next(v for v in variables if v["name"] == "stream")
    queried |= set(metric_name.findall(json.dumps(stream_var["query"])))
    assert set(metric_name.findall(json.dumps(stream_var["query"]))) <= exported
    assert stream_var["multi"] and stream_var["includeAll"]

    # The panels the brief asks for are all there.
    wanted = {
        "topiq_video_up",
        "topiq_video_score",
        "topiq_video_frames_decoded_total",
        "topiq_video_frames_scored_total",
        "topiq_video_frames_skipped_total",
        "topiq_video_decode_errors_total",
        "topiq_video_reconnects_total",
        "topiq_video_outage_seconds_total",
        *(f"topiq_video_{k}_active" for k in DETECTORS),
        *(f"topiq_video_{k}_seconds_total" for k in DETECTORS),
        "topiq_video_received_bytes_total",
        "topiq_video_alert_active",
    }
    assert wanted <= queried, wanted - queried


def test_the_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert dashboard["id"] is None  # import creates it
    panels = list(_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    # No two panels overlap on Grafana's 24-column grid.
    cells: dict[tuple[int, int], int] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] >= 1
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells.get((x, y))} and {p['id']} overlap"
                cells[(x, y)] = p["id"]
    # Every query goes to the data source chosen on import.
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "stream", "window"} <= names
    for p in panels:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}"


def test_the_scrape_example_targets_the_default_address() -> None:
    text = SCRAPE_CONFIG.read_text()
    targets = re.findall(r"targets:\s*\[([^\]]*)\]", text)
    assert targets == [f'"{DEFAULT_HOST}:{DEFAULT_PORT}"']
    assert re.search(r"^\s*metrics_path:\s*/metrics\s*$", text, re.M)
