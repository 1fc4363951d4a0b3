"""The HTML report page rendered from a ScoreResult: escaping, no network, figures that stay
small at any length, the links and numbers it shows, and rendering in headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import time
from html.parser import HTMLParser
from pathlib import PurePosixPath

import numpy as np
import pytest
from browser import Browser, browser_available
from scipy import stats as scipy_stats
from synthetic import make_result

from topiq_video.report.figures import (
    AGREE_FAR_POINTS,
    ECDF_MAX_POINTS,
    ECDF_TAIL_POINTS,
    EXACT_MAX_POINTS,
    HISTOGRAM_BINS,
    TIMELINE_BUCKETS,
    bucket_edges,
    ecdf_ranks,
    envelope_rows,
)
from topiq_video.report.render import (
    SHIFTED_LABEL,
    fmt_num,
    fmt_time,
    render_html,
    script_json,
    write_html,
)
from topiq_video.result import DIFF_GAIN, Interruption, ScoreResult

EVIL_PATH = "/videos/<script>alert(1)</script>.mp4"
EVIL_TITLE = "</title><script>alert(1)</script><title>"
EVIL_WARNING = "<img src=x onerror=alert(2)> & friends"
EVIL_TAG_KEY = "comment\"'><svg onload=alert(3)>"
EVIL_CREDITS = "Video: </pre><script>alert(5)</script> (c) someone"
EVIL_NOTE = "<img src=x onerror=alert(6)> could not be sought & so on"
AGREE_METRICS = ("topiq_fr", "psnr_y", "ssim_y", "vmaf")
URL_ATTRS = frozenset({"src", "href", "action", "poster", "srcset", "data", "formaction"})
FEATURE_FILM = {"frames": 172_800, "fps": 24.0, "scenes": 1_500, "max_mb": 20.0}


class Page(HTMLParser):
    """A page as an HTML parser sees it: elements, ids, scripts, text and table rows."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.ids: set[str] = set()
        self.scripts: list[tuple[dict[str, str], str]] = []
        self.styles: list[str] = []
        self.rows: dict[str, list[dict]] = {}  # tr id -> its cells (attrs, text)
        self._text: list[str] = []
        self._raw: tuple[str, dict[str, str], list[str]] | None = None
        self._row: str | None = None
        self._in_cell = False
        self.feed(markup)
        self.close()
        self.text = re.sub(r"\s+", " ", "".join(self._text)).strip()

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        self._text.append(" ")  # elements separate words, as a browser lays them out
        if "id" in a:
            self.ids.add(a["id"])
        if tag in ("script", "style"):
            self._raw = (tag, a, [])
        elif tag == "tr":
            self._row = a.get("id")
            if self._row:
                self.rows[self._row] = []
        elif tag == "td" and self._row:
            self.rows[self._row].append({"attrs": a, "text": ""})
            self._in_cell = True

    def handle_endtag(self, tag):
        self._text.append(" ")
        if self._raw and tag == self._raw[0]:
            if tag == "script":
                self.scripts.append((self._raw[1], "".join(self._raw[2])))
            else:
                self.styles.append("".join(self._raw[2]))
            self._raw = None
        elif tag == "tr":
            self._row = None
        elif tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._raw:
            self._raw[2].append(data)
            return
        self._text.append(data)
        if self._row and self._in_cell:
            self.rows[self._row][-1]["text"] += data

    def links(self, cls: str | None = None) -> list[str]:
        return [
            a["href"]
            for tag, a in self.tags
            if tag == "a" and "href" in a and (cls is None or cls in a.get("class", "").split())
        ]

    def figures(self) -> dict[str, dict]:
        for attrs, text in self.scripts:
            if attrs.get("id") == "report-figures":
                return {f["id"]: f for f in json.loads(text)}
        raise AssertionError("no figure data in the page")


def figures_of(markup: str) -> dict[str, dict]:
    """The figure data without parsing the whole page (fast on large pages)."""
    found = re.search(r'<script type="application/json" id="report-figures">(.*?)</script>', markup)
    assert found is not None
    return {f["id"]: f for f in json.loads(found.group(1))}


def card(markup: str, metric: str) -> tuple[str, str]:
    """(headline number, whole card text) of a metric's summary card."""
    found = re.search(rf'<article[^>]*data-metric="{metric}".*?</article>', markup, re.S)
    assert found is not None, metric
    block = Page(found.group(0))
    num = re.search(r'<span class="num">(.*?)</span>', found.group(0))
    assert num is not None
    return Page(num.group(1)).text, block.text


def section(markup: str, section_id: str) -> str:
    """The markup of a page's <section> with this id."""
    start = markup.index(f'<section id="{section_id}">')
    return markup[start : markup.index("</section>", start)]


def ranks_of(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's share of the frames it beats under two metrics (mean rank for ties),
    over the frames with a value on both: computed here with scipy, apart from the package."""
    both = ~np.isnan(a) & ~np.isnan(b)
    pa, pb = np.full(a.size, np.nan), np.full(b.size, np.nan)
    pa[both] = (scipy_stats.rankdata(a[both]) - 0.5) / both.sum()
    pb[both] = (scipy_stats.rankdata(b[both]) - 0.5) / both.sum()
    return pa, pb


@pytest.fixture(scope="module")
def agreeing() -> tuple[ScoreResult, str]:
    result = make_result(metrics=AGREE_METRICS, agreement="pictures", dist_path=EVIL_PATH)
    return result, render_html(result)


@pytest.fixture(scope="module")
def evil() -> tuple[ScoreResult, str]:
    result = make_result(
        dist_path=EVIL_PATH,
        title=EVIL_TITLE,
        tags={EVIL_TAG_KEY: EVIL_WARNING},
        warnings=(EVIL_WARNING, "reference has 2 extra leading frames"),
        credits=EVIL_CREDITS,
    )
    return result, render_html(result)


# ---------------------------------------------------------------------------- escaping, network


def test_script_json_cannot_break_out():
    payload = {"k": "</script><script>alert(1)</script>&<!--'", "u": "\u2028\u2029", "é": "ï"}
    text = str(script_json(payload))
    for ch in ("<", ">", "&", "'", "\u2028", "\u2029"):
        assert ch not in text
    assert json.loads(text) == payload
    with pytest.raises(ValueError):
        script_json({"x": math.nan})  # JSON.parse would reject NaN: refuse it here


def test_untrusted_strings_render_as_text(evil):
    result, markup = evil
    page = Page(markup)
    # The only scripts are ours: the figure data, plotly.js and the page script.
    assert [a.get("type") for a, _ in page.scripts] == ["application/json", None, None]
    assert all("src" not in a for a, _ in page.scripts)
    assert [t for t, _ in page.tags].count("title") == 1
    assert not [t for t, _ in page.tags if t == "svg"]
    assert not [(t, a) for t, a in page.tags if any(k.startswith("on") for k in a)]
    for text in (EVIL_PATH, EVIL_TITLE, EVIL_WARNING, EVIL_TAG_KEY, EVIL_CREDITS):
        assert text in page.text
    data = next(text for a, text in page.scripts if a.get("id") == "report-figures")
    assert "<" not in data and ">" not in data
    assert len(page.figures()) == 4  # timeline, two distributions, offset search


def test_page_requests_nothing(evil):
    result, markup = evil
    page = Page(markup)
    csp = [a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert len(csp) == 1
    policy = {p.split()[0]: p.split()[1:] for p in csp[0].split("; ")}
    assert policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'none'"]
    assert policy["img-src"] == ["data:", "blob:"]  # blob: plotly's PNG export, local only
    assert all("http" not in v and "*" not in v for values in policy.values() for v in values)
    urls = [v for _, a in page.tags for k, v in a.items() if k in URL_ATTRS]
    assert any(u.startswith("data:image/jpeg;base64,") for u in urls)
    assert all(u.startswith(("data:image/jpeg;base64,", "#")) for u in urls), urls
    assert len(page.styles) == 1
    assert "url(" not in page.styles[0] and "@import" not in page.styles[0]


# ---------------------------------------------------------------------------- the bugs


def _adjacent_dip(n: int = 240, start: int = 100, width: int = 6) -> np.ndarray:
    """PSNR with its worst frames side by side: only the first of them is in the gallery."""
    rng = np.random.default_rng(7)
    values = 38.0 + rng.normal(0, 0.5, n)
    values[start : start + width] = 20.0 + np.arange(width) * 0.1
    return values


def test_frame_links_lead_to_what_exists():
    result = make_result(values={"psnr_y": _adjacent_dip()}, gallery=2)
    markup = render_html(result)
    page = Page(markup)
    targets = page.links()
    assert targets and all(t.startswith("#") and t[1:] in page.ids for t in targets), targets
    worst = result.report.worst_frames["psnr_y"]
    assert [w.frame for w in worst[:3]] == [100, 101, 102]  # adjacent: one moment
    in_gallery = {g.frame for g in result.report.gallery if g.metric == "psnr_y"}
    assert 100 in in_gallery and 101 not in in_gallery and 102 not in in_gallery
    chips = page.links("chip-frame")[:3]
    assert chips[0] == "#g-0-100"
    frames = result.frames.set_index("frame")
    for chip, w in zip(chips[1:], worst[1:3], strict=True):
        assert chip == f"#scene-{frames.loc[w.frame, 'scene']}"


def test_frame_links_without_gallery_or_scenes():
    result = make_result(values={"psnr_y": _adjacent_dip()}, gallery=0)
    page = Page(render_html(result))
    assert not [t for t in page.links() if t.startswith("#g-")]
    assert all(t[1:] in page.ids for t in page.links())
    assert all(t.startswith("#scene-") for t in page.links("chip-frame"))
    assert "No frame pictures were embedded in this report." in page.text

    bare = dataclasses.replace(result.report, scenes=(), worst_scenes={})
    page = Page(render_html(ScoreResult(bare, result.frames.drop(columns="scene"), {})))
    chips = page.links("chip-frame")
    assert chips and set(chips) == {"#timeline"} and "timeline" in page.ids
    assert all(t[1:] in page.ids for t in page.links())


def test_scene_table_counts_scored_frames():
    every = 3
    result = make_result(180, every=every, n_scenes=4)
    page = Page(render_html(result))
    header = ["Scene", "Start", "End", "Duration", "Frames"]
    assert re.findall(r'<th scope="col" tabindex="0">(\w+)</th>', render_html(result))[:5] == header
    for scene in result.report.scenes:
        scored = int((result.frames["scene"] == scene.index).sum())
        cells = page.rows[f"scene-{scene.index}"]
        assert cells[4]["text"] == fmt_num(scored) and cells[4]["attrs"]["data-v"] == str(scored)
        assert scene.end_frame - scene.start_frame + 1 > scored  # the old count was wrong


def _psnr_with_identical(identical: int, n: int = 232) -> np.ndarray:
    values = np.full(n, np.inf)
    rng = np.random.default_rng(3)
    values[: n - identical] = 27.0 + rng.uniform(0, 1, n - identical)
    return values


def test_headline_when_most_frames_are_identical():
    values = _psnr_with_identical(229)
    markup = render_html(make_result(232, values={"psnr_y": values}))
    number, text = card(markup, "psnr_y")
    finite = values[np.isfinite(values)]
    assert number == "+∞"  # not the mean of 3 frames
    assert "229 of 232 frames identical (+∞)" in text
    assert f"Mean of the other 3 finite frames: {fmt_num(finite.mean())} dB." in text
    assert "Not in a mean: 229 identical (+∞)." in text


def test_headline_when_some_frames_are_identical():
    values = _psnr_with_identical(10)
    values[50] = np.nan
    markup = render_html(make_result(232, values={"psnr_y": values}))
    number, text = card(markup, "psnr_y")
    assert number == fmt_num(values[np.isfinite(values)].mean())
    assert "mean of 221 of 232 frames" in text
    assert "10 identical (+∞), 1 NaN not in the mean." in text
    number, text = card(markup, "ssim_y")  # every frame finite: a plain mean
    assert "mean of" not in text and "not in the mean" not in text


def test_interruption_is_shown_first():
    stop = Interruption(
        "connection_lost", "Stream <b>lost</b> at 4.8 s", 120, at_time=4.8, frames_expected=240
    )
    markup = render_html(make_result(120, interruption=stop))
    page = Page(markup)
    assert "interruption" in page.ids
    box = markup[markup.index('id="interruption"') :].split("</div>")[0]
    text = Page(box).text
    assert "connection lost" in text and "Stream <b>lost</b> at 4.8 s" in text
    assert "120 of 240 expected" in text and fmt_time(4.8) in text
    assert markup.index('id="interruption"') < markup.index('class="card metric-card"')
    assert "incomplete" in Page(markup.split("</header>")[0]).text
    assert "interruption" not in Page(render_html(make_result(120))).ids


def test_alignment_shows_the_conversion():
    page = Page(render_html(make_result(conversion="sample-and-hold")))
    section = page.text[page.text.index("Alignment offset") :]
    assert "frame-rate conversion sample-and-hold (sample-and-hold: 240 frames)" in section
    nr = Page(render_html(make_result(full_reference=False)))
    assert "No reference: no-reference (NR) scores only." in nr.text
    assert "fig-search" not in nr.figures() and len(nr.figures()) == 3


# ---------------------------------------------------------------------------- figures


def test_short_video_is_drawn_exactly(evil):
    result, markup = evil
    figures = figures_of(markup)
    frames = result.frames
    timeline = figures["fig-timeline"]["data"]
    assert len(frames) <= EXACT_MAX_POINTS
    lines = [t for t in timeline if t["mode"].startswith("lines") and "fill" not in t]
    assert [t["name"] for t in lines] == ["psnr_y", "ssim_y"]
    for trace in lines:
        assert trace["x"] == frames["time"].tolist()
        assert trace["y"] == frames[trace["name"]].tolist()
        assert trace["customdata"] == frames["frame"].tolist()
    rings = {t["name"]: t for t in timeline if t["name"].startswith("worst ")}
    for metric, worst in result.report.worst_frames.items():
        assert rings[f"worst {metric}"]["customdata"] == [w.frame for w in worst]
    score = next(t for t in timeline if t["name"] == "scene-change score")
    expected = [None if math.isnan(v) else v for v in frames["scene_score"]]
    assert score["y"] == expected
    threshold = [s for s in figures["fig-timeline"]["layout"]["shapes"] if s["type"] == "line"]
    assert [s["y0"] for s in threshold] == [result.report.run.options.scene_threshold]
    for i, metric in enumerate(("psnr_y", "ssim_y")):
        bars, ecdf = figures[f"fig-dist-{i}"]["data"]
        values = frames[metric].to_numpy()
        finite = np.sort(values[np.isfinite(values)])
        assert len(bars["x"]) <= HISTOGRAM_BINS
        assert sum(c for _, _, c in bars["customdata"]) == finite.size
        assert sum(bars["y"]) == pytest.approx(100.0)
        for k, (lo, hi, count) in enumerate(bars["customdata"]):
            last = k == len(bars["customdata"]) - 1
            inside = (finite >= lo) & ((finite <= hi) if last else (finite < hi))
            assert count == int(inside.sum())
        assert ecdf["x"] == finite.tolist()  # exact below the threshold
        assert ecdf["y"][-1] == pytest.approx(100.0)


def test_nonfinite_frames_are_marked_on_the_timeline():
    values = _psnr_with_identical(100, n=300)
    values[[150, 151, 152]] = [20.0, np.inf, 21.0]
    result = make_result(300, values={"psnr_y": values})
    markup = render_html(result)
    layout = figures_of(markup)["fig-timeline"]["layout"]
    strips = [s for s in layout["shapes"] if s.get("yref") == "y domain"]
    posinf = result.frames["time"].to_numpy()[np.isposinf(values)]
    covered = [any(s["x0"] <= t < s["x1"] for s in strips) for t in posinf]
    assert all(covered) and len(strips) == 2  # frames 200.. and frame 151
    assert f"psnr_y: {posinf.size} +∞ (green) frames have no point" in Page(markup).text


def test_envelope_keeps_every_bucket_extreme():
    rng = np.random.default_rng(11)
    values = rng.normal(0, 1, 100_003)
    values[rng.choice(values.size, 300, replace=False)] = np.nan
    values[rng.choice(values.size, 50, replace=False)] -= 40  # single-frame dips
    buckets = 997
    rows = envelope_rows(values, buckets)
    assert rows.size <= 3 * buckets and np.all(np.diff(rows) > 0)
    kept = np.zeros(values.size, bool)
    kept[rows] = True
    edges = bucket_edges(values.size, buckets)
    sizes = np.diff(edges)
    assert edges[0] == 0 and edges[-1] == values.size and sizes.max() - sizes.min() <= 1
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        part = np.arange(a, b)
        v = values[part]
        finite = part[np.isfinite(v)]
        assert kept[finite[np.argmin(values[finite])]] and kept[finite[np.argmax(values[finite])]]
    # Every dip stays visible: its run draws a value as deep (two dips may share a run).
    bucket = np.searchsorted(edges, np.arange(values.size), side="right") - 1
    for dip in np.flatnonzero(values < -30):
        drawn = rows[bucket[rows] == bucket[dip]]
        assert np.nanmin(values[drawn]) <= values[dip]
    small = np.arange(2 * buckets, dtype=float)
    assert envelope_rows(small, buckets).tolist() == list(range(small.size))


def test_ecdf_keeps_its_low_tail():
    assert ecdf_ranks(1_000).tolist() == list(range(1_000))
    ranks = ecdf_ranks(1_000_000)
    assert ranks.size <= ECDF_MAX_POINTS and ranks[-1] == 999_999
    assert ranks[:ECDF_TAIL_POINTS].tolist() == list(range(ECDF_TAIL_POINTS))


# ---------------------------------------------------------------------------- files


def test_saved_result_renders_the_same(tmp_path):
    result = make_result(values={"psnr_y": _psnr_with_identical(20, n=240)})
    result.save(tmp_path / "report")
    loaded = ScoreResult.load(tmp_path / "report")
    page = write_html(loaded, tmp_path / "report" / "report.html")
    assert page.read_text("utf-8") == render_html(result)
    assert [p.name for p in page.parent.iterdir() if p.name.startswith(".")] == []


def test_undecodable_file_name_is_written(tmp_path):
    result = make_result(dist_path="/videos/caf\udce9.mp4")  # a Latin-1 byte in a name
    page = write_html(result, tmp_path / "report.html").read_text("utf-8")
    assert "caf\ufffd.mp4" in Page(page).text


def test_missing_picture_is_said_not_linked():
    result = make_result(gallery=1)
    name = result.report.gallery[0].dist_image
    images = {k: v for k, v in result.images.items() if k != name}
    page = Page(render_html(ScoreResult(result.report, result.frames, images)))
    assert f"picture not available ({name})" in page.text
    srcs = [a["src"] for t, a in page.tags if t == "img"]
    assert len(srcs) == len(images)


# ---------------------------------------------------------------------------- VMAF, agreement


def test_vmaf_shows_both_harmonic_means(agreeing):
    result, markup = agreeing
    s = result.report.summary["vmaf"]
    values = result.frames["vmaf"].to_numpy()
    # libvmaf's pooling, recomputed: the harmonic mean of value + 1, minus 1.
    assert s.shifted_harmonic_mean == pytest.approx(values.size / np.sum(1 / (values + 1)) - 1)
    number, text = card(markup, "vmaf")
    assert number == fmt_num(s.mean)
    assert f"harmonic mean {fmt_num(s.harmonic_mean)}" in text
    assert f"{SHIFTED_LABEL} {fmt_num(s.shifted_harmonic_mean)}" in text
    for other in ("psnr_y", "ssim_y", "topiq_fr"):
        assert SHIFTED_LABEL not in card(markup, other)[1]
    notes = re.findall(r'<p class="note shifted-note">(.*?)</p>', markup, re.S)
    assert len(notes) == 1
    note = Page(notes[0]).text
    assert note.startswith("vmaf: Two harmonic means of VMAF: ours is taken on VMAF's own 0–100")
    expected = (
        f"Here: mean {fmt_num(s.mean)}, harmonic mean {fmt_num(s.harmonic_mean)}, libvmaf's "
        f"{fmt_num(s.shifted_harmonic_mean)}."
    )
    assert note.endswith(expected)
    # A 0-100 metric reads like the others: its own timeline row and histogram, exact.
    figures = figures_of(markup)
    line = next(t for t in figures["fig-timeline"]["data"] if t["name"] == "vmaf")
    assert line["y"] == values.tolist()
    bars, ecdf = figures[f"fig-dist-{AGREE_METRICS.index('vmaf')}"]["data"]
    assert bars["customdata"][0][0] == values.min() and bars["customdata"][-1][1] == values.max()
    assert ecdf["x"] == np.sort(values).tolist()


def test_agreement_section_shows_the_result(agreeing):
    result, markup = agreeing
    a = result.report.agreement
    assert (a.metric, a.other) == ("topiq_fr", "vmaf") and a.frames and a.scenes
    page = Page(markup)
    assert "#agreement" in page.links() and "agreement" in page.ids
    block = section(markup, "agreement")
    text = Page(block).text
    frames = result.frames
    rho = scipy_stats.spearmanr(frames["topiq_fr"], frames["vmaf"])[0]
    r = scipy_stats.pearsonr(frames["topiq_fr"], frames["vmaf"])[0]
    assert (a.spearman, a.pearson) == (pytest.approx(rho), pytest.approx(r))
    assert (
        f"Over {len(frames)} frames, topiq_fr and vmaf correlate with Spearman's ρ = "
        f"{a.spearman:.3f} (how alike they rank the frames) and Pearson's r = {a.pearson:.3f}"
    ) in text
    assert a.scenes_compared == len(result.report.scenes) >= 3
    assert (
        f"Over the mean scores of {a.scenes_compared} scenes, Spearman's ρ = "
        f"{a.scene_spearman:.3f}."
    ) in text
    assert "VMAF was not computed" not in text

    # The frames, in the result's order (furthest apart first), with both values and ranks.
    pa, pb = ranks_of(frames["topiq_fr"].to_numpy(), frames["vmaf"].to_numpy())
    rows = re.findall(r'<tr data-frame="(\d+)">(.*?)</tr>', block, re.S)
    assert [int(f) for f, _ in rows] == [f.frame for f in a.frames]
    gaps = [abs(f.gap) for f in a.frames]
    assert gaps == sorted(gaps, reverse=True)
    for k, ((_, row), f) in enumerate(zip(rows, a.frames, strict=True), 1):
        i = int(np.flatnonzero(frames["frame"].to_numpy() == f.frame)[0])
        assert (f.percentile, f.other_percentile) == (pytest.approx(pa[i]), pytest.approx(pb[i]))
        cells = [Page(c).text for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        favoured = "topiq_fr" if pa[i] > pb[i] else "vmaf"
        assert cells == [
            str(k),
            fmt_time(f.time),
            f"{f.frame} reference frame {f.ref_frame}",
            fmt_num(frames["topiq_fr"].iat[i]),
            f"{pa[i] * 100:.1f} %",
            fmt_num(frames["vmaf"].iat[i]),
            f"{pb[i] * 100:.1f} %",
            f"{favoured} by {abs(pa[i] - pb[i]) * 100:.0f} points",
            f"scene {frames['scene'].iat[i]}",
        ]

    # Scenes ranked furthest apart: ranks of their means, and a link that shows the scene.
    scenes = {s.index: s for s in result.report.scenes}
    rows = re.findall(r'<tr data-scene="(\d+)">(.*?)</tr>', block, re.S)
    assert [int(i) for i, _ in rows] == [s.scene for s in a.scenes]
    means = {
        m: np.array([scenes[i].stats[m].mean for i in sorted(scenes)]) for m in ("topiq_fr", "vmaf")
    }
    for (_, row), s in zip(rows, a.scenes, strict=True):
        rank = int(scipy_stats.rankdata(means["topiq_fr"], method="min")[s.scene])
        other_rank = int(scipy_stats.rankdata(means["vmaf"], method="min")[s.scene])
        text = Page(row).text
        n = a.scenes_compared
        assert (
            f"{fmt_num(s.mean)} {rank} of {n} {fmt_num(s.other_mean)} {other_rank} of {n}" in text
        )
        link = re.search(r'<a href="#timeline" class="zoom" data-zoom="fig-timeline"([^>]*)>', row)
        x0, x1 = (float(v) for v in re.findall(r'data-x[01]="([^"]+)"', link.group(1)))
        assert x0 < scenes[s.scene].start_time < scenes[s.scene].end_time < x1
        assert f'href="#agree-{s.frame.frame}"' in row

    # Every frame shown once, with its pictures as the gallery shows them.
    cards = dict(re.findall(r'<article class="card shot agree-shot" id="([^"]+)">(.*?)</article>',
                            block, re.S))  # fmt: skip
    shown = {f.frame: f for f in [*a.frames, *(s.frame for s in a.scenes)]}
    assert set(cards) == {f"agree-{n}" for n in shown}
    for n, f in shown.items():
        card_page = Page(cards[f"agree-{n}"])
        sources = [t[1]["src"] for t in card_page.tags if t[0] == "img"]
        uri = "data:image/jpeg;base64,"
        assert sources == [
            uri + base64.b64encode(result.images[name]).decode()
            for name in (f.ref_image, f.dist_image, f.diff_image)
        ]
        captions = [Page(c).text for c in re.findall(r"<figcaption>(.*?)</figcaption>",
                                                      cards[f"agree-{n}"])]  # fmt: skip
        assert captions == [
            f"reference · frame {f.ref_frame}",
            f"encode · frame {f.frame}",
            f"difference × {DIFF_GAIN}",
        ]
    assert all(t[1:] in page.ids for t in Page(block).links())
    assert "Difference images: |encode − reference|" in Page(block).text


def test_agreement_plot_places_every_frame_by_rank(agreeing):
    result, markup = agreeing
    a = result.report.agreement
    frames = result.frames
    pa, pb = ranks_of(frames["topiq_fr"].to_numpy(), frames["vmaf"].to_numpy())
    fig = figures_of(markup)["fig-agree"]
    every, listed, *rest = fig["data"]
    assert len(frames) <= EXACT_MAX_POINTS  # all drawn, none decimated
    assert [c[0] for c in every["customdata"]] == frames["frame"].tolist()
    assert every["x"] == pytest.approx((pb * 100).tolist(), abs=1e-3)
    assert every["y"] == pytest.approx((pa * 100).tolist(), abs=1e-3)
    assert listed["text"] == [str(k) for k in range(1, len(a.frames) + 1)]
    at = {c[0]: (x, y) for c, x, y in zip(every["customdata"], every["x"], every["y"], strict=True)}
    for c, x, y in zip(listed["customdata"], listed["x"], listed["y"], strict=True):
        assert (x, y) == pytest.approx(at[c[0]], abs=1e-3)  # ringed where the frame is drawn
    listed_frames = {f.frame for f in a.frames}
    scene_frames = [s.frame.frame for s in a.scenes if s.frame.frame not in listed_frames]
    assert [c[0] for t in rest for c in t["customdata"]] == scene_frames
    assert "topiq_fr: % of frames it beats" in fig["layout"]["yaxis"]["title"]["text"]


def test_agreement_without_pictures_says_why():
    result = make_result(metrics=AGREE_METRICS, agreement="missing", pictures_note=EVIL_NOTE)
    markup = render_html(result)
    block = section(markup, "agreement")
    page = Page(block)
    assert f"No pictures of these frames: {EVIL_NOTE}." in page.text
    assert not [t for t, _ in page.tags if t == "img"] and "picture not available" not in block
    assert len(re.findall(r'class="card shot agree-shot"', block)) == len(
        {f.frame for f in [*result.report.agreement.frames]}
        | {s.frame.frame for s in result.report.agreement.scenes}
    )
    whole = Page(markup)
    assert [a.get("type") for a, _ in whole.scripts] == ["application/json", None, None]
    assert not [(t, a) for t, a in whole.tags if any(k.startswith("on") for k in a)]

    # One picture named but gone from the folder: said, not linked.
    pictured = make_result(metrics=AGREE_METRICS, agreement="pictures")
    gone = pictured.report.agreement.frames[0].dist_image
    images = {k: v for k, v in pictured.images.items() if k != gone}
    block = section(render_html(ScoreResult(pictured.report, pictured.frames, images)), "agreement")
    assert f"picture not available ({gone})" in Page(block).text


def test_agreement_left_out_or_against_psnr():
    plain = Page(render_html(make_result(metrics=AGREE_METRICS)))
    assert "agreement" not in plain.ids and "#agreement" not in plain.links()
    assert "fig-agree" not in plain.figures()

    result = make_result(metrics=AGREE_METRICS, agreement="pictures")
    empty = dataclasses.replace(
        result.report.agreement, frames_compared=0, frames=(), scenes=(), spearman=None
    )
    report = dataclasses.replace(result.report, agreement=empty)
    page = Page(render_html(ScoreResult(report, result.frames, result.images)))
    assert "agreement" not in page.ids and "#agreement" not in page.links()

    psnr = make_result(metrics=("topiq_fr", "psnr_y", "ssim_y"), agreement="pictures")
    text = Page(section(render_html(psnr), "agreement")).text
    assert psnr.report.agreement.other == "psnr_y"
    assert "VMAF was not computed in this run, so topiq_fr is held against psnr_y." in text


def test_saved_agreement_renders_the_same(agreeing, tmp_path):
    result, markup = agreeing
    result.save(tmp_path / "report")
    loaded = ScoreResult.load(tmp_path / "report")
    assert loaded.report.agreement == result.report.agreement
    assert set(result.report.agreement.images()) <= set(loaded.images)
    assert render_html(loaded) == markup


# ---------------------------------------------------------------------------- in a browser

needs_browser = pytest.mark.skipif(
    not browser_available(), reason="headless Chromium is not installed"
)


@pytest.mark.browser
@needs_browser
def test_report_renders_in_headless_chromium(evil, tmp_path):
    result, markup = evil
    path = tmp_path / "report.html"
    path.write_text(markup, "utf-8")
    with Browser(width=1280, height=900) as browser:
        browser.open(path)
        state = browser.wait_for("document.documentElement.getAttribute('data-rendered')")
        assert state == "true", browser.log.errors
        assert browser.evaluate("document.querySelectorAll('.js-plotly-plot').length") == 4
        traces = browser.evaluate(
            "document.querySelectorAll('#fig-timeline .scatterlayer .trace').length"
        )
        assert traces == 5  # two metric lines, two sets of worst-frame rings, scene scores
        body = browser.evaluate("document.body.innerText")
        assert EVIL_PATH in body and EVIL_WARNING in body and EVIL_CREDITS in body
        name = PurePosixPath(EVIL_PATH).name  # "script>.mp4": "</script>" holds a slash
        assert browser.evaluate("document.title") == f"{name} · topiq-video report"
        assert browser.evaluate("document.images.length") == len(result.images)
        assert browser.evaluate(
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
        sort_by_psnr_mean = (
            "(() => {const th = Array.from(document.querySelectorAll('table.scenes th'))"
            ".find(t => t.textContent.startsWith('psnr_y') && t.textContent.endsWith('mean'));"
            "th.click(); return document.querySelector('table.scenes tbody tr').id;})()"
        )
        ranked = result.report.worst_scenes["psnr_y"]
        assert browser.evaluate(sort_by_psnr_mean) == f"scene-{ranked[0]}"
        assert browser.evaluate(sort_by_psnr_mean) == f"scene-{ranked[-1]}"
        assert browser.log.dialogs == []
        assert browser.log.errors == []
        assert browser.log.requests, "the page load itself should be recorded"
        assert all(u.startswith(("file://", "data:")) for u in browser.log.requests)


@pytest.mark.browser
@needs_browser
def test_agreement_renders_in_headless_chromium(agreeing, tmp_path):
    result, markup = agreeing
    path = tmp_path / "report.html"
    path.write_text(markup, "utf-8")
    figures = figures_of(markup)
    with Browser(width=1280, height=900) as browser:
        browser.open(path)
        state = browser.wait_for("document.documentElement.getAttribute('data-rendered')")
        assert state == "true", browser.log.errors
        assert browser.evaluate("document.querySelectorAll('.js-plotly-plot').length") == len(
            figures
        )
        drawn = browser.evaluate(
            "Array.from(document.querySelectorAll('#fig-agree .scatterlayer .trace'))"
            ".map(t => t.querySelectorAll('path.point').length)"
        )
        assert drawn == [len(t["x"]) for t in figures["fig-agree"]["data"]]
        assert browser.evaluate("document.images.length") == len(result.images)
        assert browser.evaluate(
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
        # A scene of the disagreement table shows itself in the timeline.
        zoom = browser.evaluate(
            "(() => {const a = document.querySelector('#agreement table.agree-scenes a.zoom');"
            "a.click(); return [parseFloat(a.dataset.x0), parseFloat(a.dataset.x1)];})()"
        )
        browser.wait_for(
            "(() => {const r = document.getElementById('fig-timeline').layout.xaxis.range;"
            f"return Math.abs(r[0] - {zoom[0]}) < 1e-9 && Math.abs(r[1] - {zoom[1]}) < 1e-9;}})()"
        )
        assert browser.log.errors == [] and browser.log.dialogs == []
        assert all(u.startswith(("file://", "data:")) for u in browser.log.requests)


@pytest.mark.slow
@pytest.mark.browser
@needs_browser
def test_feature_film_page(tmp_path, record_property, capsys):
    n = FEATURE_FILM["frames"]
    result = make_result(
        n,
        metrics=AGREE_METRICS,
        n_scenes=FEATURE_FILM["scenes"],
        fps=FEATURE_FILM["fps"],
        dips=60,
        gallery=4,
        agreement="pictures",
    )
    started = time.perf_counter()
    path = write_html(result, tmp_path / "report.html")
    seconds = time.perf_counter() - started
    size_mb = path.stat().st_size / 1e6
    record_property("render_s", round(seconds, 2))
    record_property("page_mb", round(size_mb, 2))
    with capsys.disabled():
        print(f"\nfeature film: {n:,} frames rendered in {seconds:.2f} s, page {size_mb:.1f} MB")
    assert size_mb <= FEATURE_FILM["max_mb"]
    # The result's own files: report.json stays small, the rows go to Parquet.
    saved = result.save(tmp_path / "saved", csv=False)
    json_mb = saved.json_path.stat().st_size / 1e6
    with capsys.disabled():
        print(f"feature film: report.json {json_mb:.1f} MB")
    assert json_mb <= 10.0

    markup = path.read_text("utf-8")
    figures = figures_of(markup)
    timeline = figures["fig-timeline"]["data"]
    times = result.frames["time"].to_numpy()
    edges = bucket_edges(n, TIMELINE_BUCKETS)
    for metric, worst in result.report.worst_frames.items():
        line = next(t for t in timeline if t["name"] == metric)
        assert len(line["x"]) <= 2 * TIMELINE_BUCKETS + len(worst) + 2
        drawn = set(zip(line["customdata"], line["y"], strict=True))
        assert all(w.value is not None and (w.frame, w.value) in drawn for w in worst)
        # Every run of consecutive frames keeps its lowest value: no dip disappears.
        values = result.frames[metric].to_numpy()
        lows = {int(a + np.argmin(values[a:b])) for a, b in zip(edges[:-1], edges[1:], strict=True)}
        drawn_frames = set(line["customdata"])
        assert all(int(result.frames["frame"].iat[r]) in drawn_frames for r in lows)
        assert line["x"][0] == times[0] and line["x"][-1] == times[-1]
    for i in range(len(AGREE_METRICS)):
        bars, ecdf = figures[f"fig-dist-{i}"]["data"]
        assert len(bars["x"]) <= HISTOGRAM_BINS and len(ecdf["x"]) <= ECDF_MAX_POINTS
    assert "Decimated:" in markup
    # The agreement plot: at most EXACT_MAX_POINTS frames, the furthest apart all among them.
    every, listed, *_ = figures["fig-agree"]["data"]
    assert len(every["x"]) == EXACT_MAX_POINTS
    pa, pb = ranks_of(result.frames["topiq_fr"].to_numpy(), result.frames["vmaf"].to_numpy())
    gap = np.abs(pa - pb)
    far = result.frames["frame"].to_numpy()[np.argsort(-gap, kind="stable")[:AGREE_FAR_POINTS]]
    drawn = {c[0] for c in every["customdata"]}
    assert set(far.tolist()) <= drawn and {c[0] for c in listed["customdata"]} <= drawn
    assert f"Decimated: {EXACT_MAX_POINTS:,} of the {n:,} frames are drawn" in markup

    with Browser(width=1280, height=900, timeout=90) as browser:
        browser.open(path)
        state = browser.wait_for(
            "document.documentElement.getAttribute('data-rendered')", timeout=90
        )
        assert state == "true", browser.log.errors
        assert browser.evaluate("document.querySelectorAll('.js-plotly-plot').length") == 7
        rows = browser.evaluate("document.querySelectorAll('table.scenes tbody tr').length")
        assert rows == FEATURE_FILM["scenes"]
        assert browser.log.errors == [] and browser.log.dialogs == []
        assert all(u.startswith(("file://", "data:")) for u in browser.log.requests)
