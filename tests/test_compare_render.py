"""The comparison page rendered from a CompareResult: escaping, no network, the numbers it
shows (taken from the result, whose differences come from topiq_video.stats and BD numbers
from topiq_video.bdrate), sections left out when empty, failed encodes, the size of a
2-hour comparison, and rendering in headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import math
import re
import time
from html.parser import HTMLParser

import numpy as np
import pytest
from browser import Browser, browser_available
from markupsafe import escape
from synthetic_compare import DEFAULT_ENCODES, Enc, make_compare, rd_ladder
from test_render import EVIL_NOTE, URL_ATTRS, Page, figures_of

from topiq_video.bdrate import bd_metric, bd_rate
from topiq_video.report.compare_figures import VERDICT_COLORS, encode_color
from topiq_video.report.compare_render import (
    LOSSES_SHOWN,
    fmt_signed,
    render_compare_html,
    write_compare_html,
)
from topiq_video.report.figures import (
    ECDF_MAX_POINTS,
    HISTOGRAM_BINS,
    TIMELINE_BUCKETS,
    bucket_edges,
)
from topiq_video.report.render import CSP, SHIFTED_HEADING, fmt_num, fmt_time
from topiq_video.result import DIFF_GAIN, CompareResult, Interruption

EVIL_LABEL = "<script>alert(1)</script>"
EVIL_PATH = "/videos/<img src=x onerror=alert(2)>.mp4"
EVIL_ENCODER = "lib</title><svg onload=alert(3)>"
EVIL_ERROR = "moov atom not found </pre><script>alert(4)</script>"
EVIL_WARNING = "source & <b>bold</b> claims"
EVIL_SOURCE = "/videos/source\"'><iframe src=x>.mov"
EVIL_TITLE = "</title><script>alert(5)</script>"
AGREE_METRICS = ("topiq_fr", "psnr_y", "ssim_y", "vmaf")
TWO_HOURS = {"frames": 172_800, "fps": 24.0, "scenes": 1_500, "max_mb": 25.0}
VOID = frozenset({"meta", "img", "br", "hr", "input", "link", "source", "wbr", "col"})


class Nesting(HTMLParser):
    """Every element closed, in order (void elements aside)."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-3:]}")
        else:
            self.stack.pop()


def block(markup: str, element_id: str, tag: str) -> str:
    """The markup of the element with this id (its tag must not nest inside itself)."""
    start = markup.index(f'id="{element_id}"')
    start = markup.rindex(f"<{tag}", 0, start)
    return markup[start : markup.index(f"</{tag}>", start)]


@pytest.fixture(scope="module")
def evil() -> tuple[CompareResult, str]:
    encodes = (
        Enc("x264-crf23", "libx264", 23, 0.0, 4.2e6),
        Enc(EVIL_LABEL, EVIL_ENCODER, 23, 0.6, 3.1e6, offset=2, path=EVIL_PATH),
        Enc("x264-crf28", "libx264", 28, -2.4, 2.0e6),
        Enc("broken", "libx264", 30, 0.0, None, error=EVIL_ERROR, scored=0.0),
    )
    result = make_compare(
        encodes=encodes,
        source_path=EVIL_SOURCE,
        source_tags={"title": EVIL_TITLE},
        warnings=(EVIL_WARNING,),
    )
    return result, render_compare_html(result)


@pytest.fixture(scope="module")
def agreeing() -> tuple[CompareResult, str]:
    encodes = (
        Enc("x264-crf23", "libx264", 23, 0.0, 4.2e6),
        Enc(EVIL_LABEL, EVIL_ENCODER, 23, 0.6, 3.1e6, offset=2, path=EVIL_PATH),
        Enc("broken", "libx264", 30, 0.0, None, error=EVIL_ERROR, scored=0.0),
    )
    result = make_compare(encodes=encodes, metrics=AGREE_METRICS, agreements="pictures")
    return result, render_compare_html(result)


@pytest.fixture(scope="module")
def ladder() -> tuple[CompareResult, str]:
    result = make_compare(360, encodes=rd_ladder(), baseline="x264-crf27", n_scenes=8)
    return result, render_compare_html(result)


# ---------------------------------------------------------------------------- escaping, network


def test_untrusted_strings_render_as_text(evil):
    result, markup = evil
    page = Page(markup)
    assert [a.get("type") for a, _ in page.scripts] == ["application/json", None, None]
    assert all("src" not in a for a, _ in page.scripts)
    assert [t for t, _ in page.tags].count("title") == 1
    assert not [t for t, _ in page.tags if t in ("svg", "iframe")]
    assert not [(t, a) for t, a in page.tags if any(k.startswith("on") for k in a)]
    assert [a["alt"] for t, a in page.tags if t == "img"]  # the gallery's pictures are there
    for text in (EVIL_LABEL, EVIL_PATH, EVIL_ENCODER, EVIL_ERROR, EVIL_WARNING, EVIL_SOURCE):
        assert text in page.text, text
    data = next(text for a, text in page.scripts if a.get("id") == "report-figures")
    assert "<" not in data and ">" not in data
    # Plotly reads trace names as HTML: a label reaches it escaped.
    names = {t["name"] for f in page.figures().values() for t in f["data"] if "name" in t}
    assert str(escape(EVIL_LABEL)) in names and EVIL_LABEL not in names
    assert str(escape(EVIL_ENCODER)) in names  # the RD line of that encoder
    assert Nesting(markup).errors == [] and Nesting(markup).stack == []


def test_page_requests_nothing(evil):
    _, markup = evil
    page = Page(markup)
    csp = [a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp == [CSP]
    urls = [v for _, a in page.tags for k, v in a.items() if k in URL_ATTRS]
    assert any(u.startswith("data:image/jpeg;base64,") for u in urls)
    assert all(u.startswith(("data:image/jpeg;base64,", "#")) for u in urls), urls
    assert all(u[1:] in page.ids for u in urls if u.startswith("#"))
    assert len(page.styles) == 1
    assert "url(" not in page.styles[0] and "@import" not in page.styles[0]


def test_fmt_signed():
    assert fmt_signed(0.41234, "dB") == "+0.4123 dB"
    assert fmt_signed(-12.5) == "−12.5"
    assert fmt_signed(0.0) == "±0"
    assert fmt_signed(None) == "—" and fmt_signed(math.nan) == "NaN"


# ---------------------------------------------------------------------------- what it shows


def test_failed_encode_is_shown_with_its_error(evil):
    result, markup = evil
    broken = result.report.encode("broken")
    assert broken.error == EVIL_ERROR and broken.frames_scored == 0
    callout = Page(block(markup, "failed", "div")).text
    assert "1 encode was not fully scored." in callout
    assert f"broken ({broken.path}): nothing scored. {EVIL_ERROR}" in callout
    index = [e.label for e in result.report.encodes].index("broken")
    row = Page(block(markup, f"encode-{index}", "tr")).text
    assert "failed" in row and "broken" in row
    error_row = markup[markup.index(f'id="encode-{index}"') :].split("</tr>")[1]
    assert Page(error_row).text == f"broken: {EVIL_ERROR}"
    assert "failed 1 encode" in Page(markup.split("</header>")[0]).text
    # Not drawn, and said to be not compared in every summary table.
    figures = figures_of(markup)
    assert all(t.get("name") != "broken" for f in figures.values() for t in f["data"])
    rows = re.findall(r'<tr data-encode="broken">.*?</tr>', markup, re.S)
    assert len(rows) == len(result.report.metrics)
    for row in rows:
        cells = Page(row).text.split(" ", 1)[1]
        assert re.fullmatch(r"(— ){2,3}not compared: the encode failed", cells), cells


def test_partial_encode_keeps_what_it_scored():
    encodes = (
        Enc("a", rate=23, gain=0.0),
        Enc("b", rate=23, gain=0.5, error="decoder error at frame 150", scored=0.6),
    )
    result = make_compare(250, encodes=encodes)
    markup = render_compare_html(result)
    callout = Page(block(markup, "failed", "div")).text
    assert "150 frames scored, then it stopped. decoder error at frame 150" in callout
    line = next(t for t in figures_of(markup)["fig-timeline"]["data"] if t["name"] == "b")
    assert len(line["x"]) == 150 and line["x"][-1] == 149 / 25
    table = Page(block(markup, "summary", "section")).text
    diff = result.report.comparisons[0].metrics[0].overall
    assert diff.n == 150 and fmt_signed(diff.mean) in table


def test_summary_shows_the_differences(evil):
    result, markup = evil
    report = result.report
    for c in report.comparisons:
        index = [e.label for e in report.encodes].index(c.label)
        for mc in c.metrics:
            unit = next(m.unit for m in report.metrics if m.name == mc.metric) or ""
            section = block(markup, "summary", "section")
            table = section[section.index(f'data-metric="{mc.metric}"') :].split("</table>")[0]
            rows = re.findall(r"<tr data-encode=.*?</tr>", table, re.S)
            text = Page(rows[index]).text
            d = mc.overall
            # The difference is the mean of the per-frame differences on the shared frames.
            frames = result.frames
            a = frames[frames["encode"] == c.baseline].set_index("ref_frame")[mc.metric]
            b = frames[frames["encode"] == c.label].set_index("ref_frame")[mc.metric]
            shared = a.index.intersection(b.index)
            assert d.mean == pytest.approx(float((b[shared] - a[shared]).mean()), rel=1e-9)
            assert fmt_signed(d.mean, unit) in text
            interval = f"[{fmt_signed(d.low)}, {fmt_signed(d.high)}]"
            assert (f"{interval} {unit}" if unit else interval) in text
            assert d.verdict in text
            assert f"{mc.won} / {mc.tied} / {mc.lost}" in text
            stats = report.encode(c.label).summary[mc.metric]
            assert fmt_num(stats.p5) in text
    assert "95 % interval" in Page(markup).text


def test_whiskers_show_each_scene_difference(evil):
    result, markup = evil
    report = result.report
    figures = figures_of(markup)
    spans = {s.index: (s.start_time, s.end_time) for s in report.scenes}
    for i, m in enumerate(report.metric_names):
        fig = figures[f"fig-whisker-{i}"]
        for row, c in enumerate(report.comparisons):
            mc = next(x for x in c.metrics if x.metric == m)
            axis = "y" if row == 0 else f"y{row + 1}"
            traces = [t for t in fig["data"] if t["yaxis"] == axis]
            drawn = {}
            for t in traces:
                assert t["marker"]["color"] == VERDICT_COLORS[t["name"]]
                for k, scene in enumerate(point[0] for point in t["customdata"]):
                    drawn[scene] = (
                        t["name"],
                        t["x"][k],
                        t["y"][k],
                        t["error_y"]["array"][k],
                        t["error_y"]["arrayminus"][k],
                    )
            assert set(drawn) == {d.scene for d in mc.scenes if d.difference.mean is not None}
            for d in mc.scenes:
                verdict, x, y, plus, minus = drawn[d.scene]
                start, end = spans[d.scene]
                assert verdict == d.difference.verdict
                assert x == pytest.approx((start + end) / 2)
                assert y == d.difference.mean
                assert y + plus == pytest.approx(d.difference.high)
                assert y - minus == pytest.approx(d.difference.low)
        zero = [s for s in fig["layout"]["shapes"] if s["y0"] == 0 and s["y1"] == 0]
        assert len(zero) == len(report.comparisons)


def test_ranked_table_lists_the_worst_scenes_first(ladder):
    result, markup = ladder
    report = result.report
    labels = [e.label for e in report.encodes]
    spans = {s.index: s for s in report.scenes}
    for c in report.comparisons:
        for mc in c.metrics:
            i = report.metric_names.index(mc.metric)
            unit = report.metrics[i].unit or ""
            table = block(markup, f"losses-{labels.index(c.label)}-{i}", "details")
            assert " open" not in table.split(">")[0]  # 7 encodes compared: closed
            rows = re.findall(r'<tr data-scene="(\d+)">(.*?)</tr>', table, re.S)
            expected = sorted(
                (d for d in mc.scenes if d.difference.mean is not None),
                key=lambda d: (d.difference.mean, d.scene),
            )[:LOSSES_SHOWN]
            assert [int(s) for s, _ in rows] == [d.scene for d in expected]
            for (_, row), d in zip(rows, expected, strict=True):
                text = Page(row).text
                s = spans[d.scene]
                assert f"scene {d.scene}" in text
                assert f"{fmt_time(s.start_time)}–{fmt_time(s.end_time)}" in text
                assert fmt_signed(d.difference.mean, unit) in text
                interval = f"[{fmt_signed(d.difference.low)}, {fmt_signed(d.difference.high)}]"
                assert (f"{interval} {unit}" if unit else interval) in text
                assert d.difference.verdict in text
                zoom = re.search(r'data-x0="([^"]+)" data-x1="([^"]+)"', row)
                assert float(zoom[1]) < s.start_time and float(zoom[2]) > s.end_time
            summary = Page(table).text
            assert f"worse than the baseline in {mc.lost} of {len(mc.scenes)} scenes" in summary


def test_rate_quality_plot_and_bd_table(ladder):
    result, markup = ladder
    report = result.report
    figures = figures_of(markup)
    for i, m in enumerate(report.metric_names):
        fig = figures[f"fig-rd-{i}"]
        for stat, axis in (("mean", "y"), ("p5", "y2")):
            lines = {t["name"]: t for t in fig["data"] if t["yaxis"] == axis}
            assert set(lines) == {"libx264", "libx265"}
            for encoder, line in lines.items():
                points = sorted(
                    (p for p in report.rd if p.encoder == encoder), key=lambda p: p.bitrate
                )
                assert line["x"] == [p.bitrate / 1000 for p in points]
                assert line["y"] == [p.values[m][stat] for p in points]
                assert line["text"] == [p.label for p in points]
                rings = [s == "circle-open" for s in line["marker"]["symbol"]]
                assert rings == [p.label == report.baseline for p in points]
    table = Page(block(markup, "bd", "div")).text
    assert len(report.bd) == 6  # libx265 against libx264, 3 metrics, mean and p5
    for e in report.bd:
        unit = next(m.unit for m in report.metrics if m.name == e.metric) or ""
        assert e.bd_rate.value is not None and e.bd_rate.value < -15  # x265 saves bits
        # The page shows what bdrate computes from the RD points.
        curve = {
            enc: sorted((p for p in report.rd if p.encoder == enc), key=lambda p: p.bitrate)
            for enc in ("libx264", "libx265")
        }
        args = [
            v
            for enc in ("libx264", "libx265")
            for v in (
                [p.bitrate for p in curve[enc]],
                [p.values[e.metric][e.stat] for p in curve[enc]],
            )
        ]
        assert bd_rate(*args).value == pytest.approx(e.bd_rate.value)
        assert bd_metric(*args).value == pytest.approx(e.bd_metric.value)
        assert fmt_signed(e.bd_rate.value, "%") in table
        assert fmt_signed(e.bd_metric.value, unit) in table
        assert f"{e.bd_rate.overlap_fraction * 100:.0f} %" in table
    scene_bd = figures["fig-scene-bd"]
    for e, trace in zip((e for e in report.bd if e.scenes), scene_bd["data"], strict=True):
        with_value = [(s, v) for s, v in e.scenes if v is not None]
        assert trace["customdata"] == [s for s, _ in with_value]
        assert trace["y"] == [v for _, v in with_value]


def test_bd_reasons_and_hull_notes():
    result = make_compare(200, encodes=rd_ladder(), n_scenes=3, scene_bd=False)
    report = result.report
    rd = {p.label: p for p in report.rd}
    anchor = [rd[e.label] for e in rd_ladder() if e.encoder == "libx264"]
    test = [rd[e.label] for e in rd_ladder() if e.encoder == "libx265"]
    rates_a, quality_a = [p.bitrate for p in anchor], [p.values["psnr_y"]["mean"] for p in anchor]
    # A wobble: CRF 27 costs more bits than CRF 32 yet scores lower; the hull drops it.
    wobbly = [p.values["psnr_y"]["mean"] for p in test]
    wobbly[1] = wobbly[2] - 0.5
    rates_b = [p.bitrate for p in test]
    hull = dataclasses.replace(
        report.bd[0],
        metric="psnr_y",
        bd_rate=bd_rate(rates_a, quality_a, rates_b, wobbly),
        bd_metric=bd_metric(rates_a, quality_a, rates_b, wobbly),
    )
    short = bd_rate(rates_a[:2], quality_a[:2], rates_b, wobbly)
    none = dataclasses.replace(report.bd[1], metric="ssim_y", bd_rate=short, bd_metric=short)
    assert hull.bd_rate.hull_used_b and short.value is None and short.reason
    edited = dataclasses.replace(report, bd=(hull, none))
    page = Page(render_compare_html(CompareResult(edited, result.frames, result.images)))
    rows = page.text[page.text.index("Bjøntegaard deltas") :]
    assert "convex hull used for libx265 (bd-rate)" in rows
    assert all(note in rows for note in hull.bd_rate.notes)
    assert f"none: {short.reason}" in rows
    assert "fig-scene-bd" not in page.figures()


def test_timeline_overlays_encodes_on_source_time(evil):
    result, markup = evil
    report = result.report
    timeline = figures_of(markup)["fig-timeline"]
    scored = [e for e in report.encodes if e.frames_scored]
    for row, m in enumerate(report.metric_names):
        axis = "y" if row == 0 else f"y{row + 1}"
        lines = [t for t in timeline["data"] if t["yaxis"] == axis]
        assert [t["name"] for t in lines] == [str(escape(e.label)) for e in scored]
        for t, e in zip(lines, scored, strict=True):
            rows = result.frames[result.frames["encode"] == e.label].sort_values("ref_frame")
            assert t["x"] == rows["ref_time"].tolist()  # the source's clock, not the encode's
            assert t["customdata"] == rows["frame"].tolist()
            assert t["y"] == rows[m].tolist()
            index = [x.label for x in report.encodes].index(e.label)
            assert t["line"]["color"] == encode_color(index)
            assert t["showlegend"] == (row == 0)
    offset = next(e for e in report.encodes if e.label == EVIL_LABEL)
    assert offset.alignment.offset_frames == 2
    bands = [s for s in timeline["layout"]["shapes"] if s["yref"] == "paper"]
    assert len(bands) == math.ceil(len(report.scenes) / 2)


def test_distributions_are_binned_per_encode():
    encodes = (Enc("a", gain=0.0, identical=40), Enc("b", gain=0.8))
    result = make_compare(250, encodes=encodes, metrics=("psnr_y", "ssim_y"))
    markup = render_compare_html(result)
    fig = figures_of(markup)["fig-dist-0"]
    histograms = [t for t in fig["data"] if t.get("xaxis") is None]
    ecdfs = [t for t in fig["data"] if t.get("xaxis") == "x2"]
    assert [t["name"] for t in histograms] == ["a", "b"] == [t["name"] for t in ecdfs]
    assert histograms[0]["x"] == histograms[1]["x"] and len(histograms[0]["x"]) == HISTOGRAM_BINS
    for t, label in zip(histograms, "ab", strict=True):
        assert sum(t["y"]) == pytest.approx(100.0)
        values = result.frames.loc[result.frames["encode"] == label, "psnr_y"].to_numpy()
        assert len(next(e for e in ecdfs if e["name"] == label)["x"]) == np.isfinite(values).sum()
    notes = Page(block(markup, "distribution", "section")).text
    assert "a: 40 non-finite values (+∞, −∞ or NaN) are not drawn." in notes
    strips = [
        s for s in figures_of(markup)["fig-timeline"]["layout"]["shapes"] if s["yref"] == "y domain"
    ]
    assert strips and strips[0]["x0"] == 0.0  # the identical frames marked on the timeline


def test_sections_are_left_out_when_empty():
    def sections(result: CompareResult) -> tuple[set[str], list[str], dict]:
        markup = render_compare_html(result)
        page = Page(markup)
        return page.ids, page.links(), page.figures()

    full = make_compare(200)
    ids, links, figures = sections(full)
    for section in ("summary", "timeline", "scenes", "rd", "distribution", "gallery", "inputs"):
        assert section in ids and f"#{section}" in links

    no_rates = tuple(dataclasses.replace(e, bitrate=None) for e in DEFAULT_ENCODES)
    ids, links, figures = sections(make_compare(200, encodes=no_rates))
    assert "rd" not in ids and "#rd" not in links and not any("rd" in f for f in figures)
    assert "scenes" in ids  # comparing needs no bitrate

    ids, links, figures = sections(make_compare(200, gallery=0))
    assert "gallery" not in ids and "#gallery" not in links

    alone = make_compare(200, encodes=(Enc("only"),))
    markup = render_compare_html(alone)
    page = Page(markup)
    assert "scenes" not in page.ids and "#scenes" not in page.links()
    assert not [f for f in page.figures() if f.startswith("fig-whisker")]
    assert "difference from" not in page.text and "nothing to compare it with" in page.text
    assert {"fig-timeline", "fig-dist-0"} <= set(page.figures())
    assert "gallery" not in page.ids


def test_nothing_compared_still_renders():
    failed = Enc("base", error="cannot open base.mp4", scored=0.0)
    lost_baseline = make_compare(120, encodes=(failed, Enc("b"), Enc("c", gain=1.0)))
    page = Page(render_compare_html(lost_baseline))
    assert "No encode could be compared with the baseline base" in page.text
    assert "scenes" not in page.ids and "fig-timeline" in page.figures()
    assert Nesting(render_compare_html(lost_baseline)).errors == []

    nothing = make_compare(
        120, encodes=(failed, Enc("b", error="cannot open b.mp4", scored=0.0)), gallery=0
    )
    markup = render_compare_html(nothing)
    page = Page(markup)
    assert len(nothing.frames) == 0 and page.figures() == {}
    assert "No encode was scored." in page.text and "No per-frame scores." in page.text
    assert "cannot open base.mp4" in page.text and "cannot open b.mp4" in page.text
    assert Nesting(markup).errors == [] and Nesting(markup).stack == []


def test_gallery_shows_each_entry(evil):
    result, markup = evil
    report = result.report
    gallery = block(markup, "gallery", "section")
    cards = re.findall(r'<article class="card shot" id="([^"]+)">(.*?)</article>', gallery, re.S)
    assert len(cards) == len(report.gallery) > 0
    labels = [e.label for e in report.encodes]
    metrics = report.metric_names
    for g in report.gallery:
        anchor = f"g-{labels.index(g.label)}-{metrics.index(g.metric)}-{g.rank}"
        card = Page(dict(cards)[anchor])
        unit = next(m.unit for m in report.metrics if m.name == g.metric) or ""
        value = fmt_num(g.value) + (f" {unit}" if unit else "")
        base = fmt_num(g.baseline_value) + (f" {unit}" if unit else "")
        assert f"{g.label} {value} · {g.baseline} {base}" in card.text
        assert f"difference {fmt_signed(g.value - g.baseline_value, unit)}" in card.text
        assert f"source frame {g.ref_frame}" in card.text and f"scene {g.scene}" in card.text
        captions = re.findall(r"<figcaption>(.*?)</figcaption>", dict(cards)[anchor])
        assert [Page(c).text for c in captions] == [
            f"source · frame {g.ref_frame}",
            f"baseline · {g.baseline}",
            g.label,
            "difference from the baseline",
        ]
        sources = [a["src"] for t, a in card.tags if t == "img"]
        roles = ("source", "baseline", "encode", "diff")
        assert sources == [
            "data:image/jpeg;base64," + base64.b64encode(result.images[g.images[r]]).decode()
            for r in roles
        ]
    assert "here the reference is the baseline" in Page(gallery).text


def test_warnings_are_listed_once():
    result = make_compare(120)  # x265-crf23 starts 2 frames late: a warning of its own
    own = "x265-crf23: x265-crf23 starts 2 frames after the source"
    box = Page(block(render_compare_html(result), "warnings", "div")).text
    assert box.startswith("1 warning") and box.count(own) == 1
    # The engine also lists each encode's warnings among the report's: still once.
    engine = dataclasses.replace(result.report, warnings=(own, "source is interlaced"))
    markup = render_compare_html(CompareResult(engine, result.frames, result.images))
    box = Page(block(markup, "warnings", "div")).text
    assert box.startswith("2 warnings") and box.count(own) == 1
    assert "source is interlaced" in box


def test_interruption_and_terms_are_shown():
    stop = Interruption("terminated", "Terminated by <SIGTERM>", 180, at_time=7.2)
    result = make_compare(200, interruption=stop)
    markup = render_compare_html(result)
    callout = Page(block(markup, "interruption", "div")).text
    assert "terminated" in callout and "Terminated by <SIGTERM>" in callout
    footer = Page(markup[markup.index('<footer class="page">') :]).text
    assert result.report.models[0].terms in footer


def test_saved_result_renders_the_same(evil, tmp_path):
    result, markup = evil
    saved = result.save(tmp_path / "out")
    loaded = CompareResult.load(saved.json_path)
    assert render_compare_html(loaded) == markup


# ---------------------------------------------------------------------------- VMAF, agreement


def test_summary_shows_libvmaf_pooling(agreeing):
    result, markup = agreeing
    summary = block(markup, "summary", "section")
    tables = dict(re.findall(r'data-metric="([^"]+)">(.*?)</table>', summary, re.S))
    heading = f'<th scope="col" class="shifted">{SHIFTED_HEADING[0]}<small>'
    assert [m for m, t in tables.items() if heading in t] == ["vmaf"]
    rows = re.findall(r'<tr data-encode="[^"]*">(.*?)</tr>', tables["vmaf"], re.S)
    for e, row in zip(result.report.encodes, rows, strict=True):
        cells = re.findall(r'<td data-v="[^"]*">(.*?)</td>', row, re.S)
        s = e.summary.get("vmaf")
        expected = [s.mean, s.p5, s.harmonic_mean, s.shifted_harmonic_mean] if s else [None] * 4
        assert [Page(c).text for c in cells] == [fmt_num(v) for v in expected]
        if s is not None:
            values = result.frames.loc[result.frames["encode"] == e.label, "vmaf"].to_numpy()
            shifted = values.size / np.sum(1 / (values + 1)) - 1  # libvmaf's pooling
            assert s.shifted_harmonic_mean == pytest.approx(shifted)
    notes = re.findall(r'<p class="note shifted-note">(.*?)</p>', summary, re.S)
    assert len(notes) == 1 and "ours is taken on VMAF's own 0–100 scale" in Page(notes[0]).text


def test_agreement_per_encode(agreeing):
    result, markup = agreeing
    report = result.report
    page = Page(markup)
    assert "#agreement" in page.links()
    section = block(markup, "agreement", "section")
    labels = [e.label for e in report.encodes]
    assert set(report.agreements) == {"x264-crf23", EVIL_LABEL}  # "broken" scored nothing
    spans = {s.index: s for s in report.scenes}
    for label, a in report.agreements.items():
        index = labels.index(label)
        start = section.index(">", section.index(f'id="agreement-{index}"')) + 1
        end = section.find('<div class="card below agree-block"', start)
        part = section[start : end if end > 0 else len(section)]
        text = Page(part).text
        assert text.startswith(f"{label} Over {a.frames_compared} frames, topiq_fr and vmaf")
        assert f"Spearman's ρ = {a.spearman:.3f}" in text
        assert f"Pearson's r = {a.pearson:.3f}" in text
        assert f"Over the mean scores of {a.scenes_compared} scenes" in text
        # Frames on the source's count and clock, as the rest of the page.
        rows = re.findall(r'<tr data-frame="(\d+)">(.*?)</tr>', part, re.S)
        assert [int(f) for f, _ in rows] == [f.ref_frame for f in a.frames]
        for (_, row), f in zip(rows, a.frames, strict=True):
            cells = [Page(c).text for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
            assert cells[1:7] == [
                fmt_time(f.ref_time),
                f"{f.ref_frame} encode frame {f.frame}",
                fmt_num(f.value),
                f"{f.percentile * 100:.1f} %",
                fmt_num(f.other_value),
                f"{f.other_percentile * 100:.1f} %",
            ]
            assert f'href="#agree-{index}-{f.frame}"' in row
        rows = re.findall(r'<tr data-scene="(\d+)">(.*?)</tr>', part, re.S)
        assert [int(i) for i, _ in rows] == [s.scene for s in a.scenes]
        for (_, row), s in zip(rows, a.scenes, strict=True):
            x0, x1 = (float(v) for v in re.findall(r'data-x[01]="([^"]+)"', row))
            assert x0 < spans[s.scene].start_time < spans[s.scene].end_time < x1
            assert f"{s.rank} of {a.scenes_compared}" in Page(row).text
        shown = {f.frame: f for f in [*a.frames, *(s.frame for s in a.scenes)]}
        cards = dict(
            re.findall(r'<article class="card shot agree-shot" id="([^"]+)">(.*?)</article>',
                       part, re.S)
        )  # fmt: skip
        assert set(cards) == {f"agree-{index}-{n}" for n in shown}
        for n, f in shown.items():
            card = cards[f"agree-{index}-{n}"]
            sources = [a_["src"] for t, a_ in Page(card).tags if t == "img"]
            assert sources == [
                "data:image/jpeg;base64," + base64.b64encode(result.images[name]).decode()
                for name in (f.ref_image, f.dist_image, f.diff_image)
            ]
            captions = [Page(c).text for c in re.findall(r"<figcaption>(.*?)</figcaption>", card)]
            assert captions == [
                f"source · frame {f.ref_frame}",
                f"{label} · frame {f.frame}",
                f"difference × {DIFF_GAIN}",
            ]
    assert all(t[1:] in page.ids for t in Page(section).links())
    assert "here the reference is the source" in Page(section).text
    assert str(escape(EVIL_LABEL)) in section and EVIL_LABEL not in section
    assert Nesting(markup).errors == [] and Nesting(markup).stack == []


def test_agreement_without_pictures_or_agreements():
    result = make_compare(200, metrics=AGREE_METRICS, agreements="missing", pictures_note=EVIL_NOTE)
    markup = render_compare_html(result)
    section = block(markup, "agreement", "section")
    page = Page(section)
    assert page.text.count(f"No pictures of these frames: {EVIL_NOTE}.") == len(
        result.report.agreements
    )
    assert not [t for t, _ in page.tags if t == "img"]
    whole = Page(markup)
    assert not [(t, a) for t, a in whole.tags if any(k.startswith("on") for k in a)]

    plain = Page(render_compare_html(make_compare(200, metrics=AGREE_METRICS)))
    assert "agreement" not in plain.ids and "#agreement" not in plain.links()


def test_saved_agreements_render_the_same(agreeing, tmp_path):
    result, markup = agreeing
    saved = result.save(tmp_path / "out")
    loaded = CompareResult.load(saved.json_path)
    assert loaded.report.agreements == result.report.agreements
    assert render_compare_html(loaded) == markup


# ---------------------------------------------------------------------------- in a browser

needs_browser = pytest.mark.skipif(
    not browser_available(), reason="headless Chromium is not installed"
)


@pytest.mark.browser
@needs_browser
def test_page_renders_in_headless_chromium(evil, tmp_path):
    result, markup = evil
    path = tmp_path / "compare.html"
    path.write_text(markup, "utf-8")
    with Browser(width=1280, height=900) as browser:
        browser.open(path)
        state = browser.wait_for("document.documentElement.getAttribute('data-rendered')")
        assert state == "true", browser.log.errors
        plots = browser.evaluate("document.querySelectorAll('.js-plotly-plot').length")
        assert plots == len(figures_of(markup))
        body = browser.evaluate("document.body.innerText")
        for text in (EVIL_LABEL, EVIL_PATH, EVIL_ERROR, EVIL_WARNING, EVIL_SOURCE):
            assert text in body
        assert browser.evaluate("document.images.length") == len(result.images)
        assert browser.evaluate(
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
        # A scene link zooms the timeline to that scene.
        zoom = browser.evaluate(
            "(() => {const a = document.querySelector('a.zoom'); a.click();"
            "return [parseFloat(a.dataset.x0), parseFloat(a.dataset.x1)];})()"
        )
        browser.wait_for(
            "(() => {const r = document.getElementById('fig-timeline').layout.xaxis.range;"
            f"return Math.abs(r[0] - {zoom[0]}) < 1e-9 && Math.abs(r[1] - {zoom[1]}) < 1e-9;}})()"
        )
        assert browser.log.dialogs == [] and browser.log.errors == []
        assert all(u.startswith(("file://", "data:")) for u in browser.log.requests)


@pytest.mark.browser
@needs_browser
def test_agreements_render_in_headless_chromium(agreeing, tmp_path):
    result, markup = agreeing
    path = tmp_path / "compare.html"
    path.write_text(markup, "utf-8")
    with Browser(width=1280, height=900) as browser:
        browser.open(path)
        state = browser.wait_for("document.documentElement.getAttribute('data-rendered')")
        assert state == "true", browser.log.errors
        plots = browser.evaluate("document.querySelectorAll('.js-plotly-plot').length")
        assert plots == len(figures_of(markup))
        assert browser.evaluate("document.images.length") == len(result.images)
        assert browser.evaluate(
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
        body = browser.evaluate("document.getElementById('agreement').innerText")
        assert EVIL_LABEL in body and "Spearman's ρ" in body
        zoom = browser.evaluate(
            "(() => {const a = document.querySelector('#agreement table.agree-scenes a.zoom');"
            "a.click(); return [parseFloat(a.dataset.x0), parseFloat(a.dataset.x1)];})()"
        )
        browser.wait_for(
            "(() => {const r = document.getElementById('fig-timeline').layout.xaxis.range;"
            f"return Math.abs(r[0] - {zoom[0]}) < 1e-9 && Math.abs(r[1] - {zoom[1]}) < 1e-9;}})()"
        )
        assert browser.log.dialogs == [] and browser.log.errors == []
        assert all(u.startswith(("file://", "data:")) for u in browser.log.requests)


@pytest.mark.slow
@pytest.mark.browser
@needs_browser
def test_two_hour_comparison(tmp_path, record_property, capsys):
    n = TWO_HOURS["frames"]
    encodes = (
        Enc("x264-crf23", "libx264", 23, 0.0, 4.2e6, dips=40),
        Enc("x265-crf23", "libx265", 23, 0.6, 3.1e6, offset=2, dips=40),
        Enc("x264-crf28", "libx264", 28, -2.4, 2.0e6, dips=40),
    )
    result = make_compare(
        n,
        encodes=encodes,
        n_scenes=TWO_HOURS["scenes"],
        fps=TWO_HOURS["fps"],
        resamples=200,
        gallery=3,
        metrics=AGREE_METRICS,
        agreements="pictures",
    )
    started = time.perf_counter()
    path = write_compare_html(result, tmp_path / "compare.html")
    seconds = time.perf_counter() - started
    size_mb = path.stat().st_size / 1e6
    record_property("render_s", round(seconds, 2))
    record_property("page_mb", round(size_mb, 2))
    with capsys.disabled():
        print(
            f"\n2-hour comparison: 3 x {n:,} frames rendered in {seconds:.2f} s, {size_mb:.1f} MB"
        )
    assert size_mb <= TWO_HOURS["max_mb"]

    markup = path.read_text("utf-8")
    figures = figures_of(markup)
    shown = {g.ref_frame for g in result.report.gallery}
    for line in figures["fig-timeline"]["data"]:
        rows = result.frames[result.frames["encode"] == line["name"]]
        assert len(line["x"]) <= 2 * TIMELINE_BUCKETS + len(shown) + 2
        assert line["x"][0] == rows["ref_time"].iat[0] and line["x"][-1] == rows["ref_time"].iat[-1]
        metric = result.report.metric_names[int(line["yaxis"][1:] or 1) - 1]
        values = rows[metric].to_numpy()
        edges = bucket_edges(values.size, TIMELINE_BUCKETS)
        drawn = set(line["customdata"])
        frame_no = rows["frame"].to_numpy()
        lows = {int(a + np.argmin(values[a:b])) for a, b in zip(edges[:-1], edges[1:], strict=True)}
        assert all(int(frame_no[r]) in drawn for r in lows)  # no dip disappears
        gallery_rows = np.flatnonzero(rows["ref_frame"].isin(shown).to_numpy())
        assert all(int(frame_no[r]) in drawn for r in gallery_rows)
    for key, fig in figures.items():
        if key.startswith("fig-dist-"):
            assert all(len(t["x"]) <= max(HISTOGRAM_BINS, ECDF_MAX_POINTS) for t in fig["data"])
    assert "Decimated:" in markup
    whiskers = figures["fig-whisker-0"]["data"]
    assert sum(len(t["x"]) for t in whiskers) == 2 * TWO_HOURS["scenes"]
    assert len(result.report.agreements) == 3 and 'id="agreement-2"' in markup

    with Browser(width=1280, height=900, timeout=90) as browser:
        browser.open(path)
        state = browser.wait_for(
            "document.documentElement.getAttribute('data-rendered')", timeout=90
        )
        assert state == "true", browser.log.errors
        plots = browser.evaluate("document.querySelectorAll('.js-plotly-plot').length")
        assert plots == len(figures)
        assert browser.log.errors == [] and browser.log.dialogs == []
        assert all(u.startswith(("file://", "data:")) for u in browser.log.requests)
