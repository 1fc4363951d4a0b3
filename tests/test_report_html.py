"""The self-contained HTML report: escaping, no network, and rendering in a real browser."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import Browser, browser_available
from test_report_json import make_doc, make_frames
from torchvision.io import decode_jpeg

from topiq_video.report import make_gallery_frame, write_report_html
from topiq_video.report.gallery import DIFF_GAIN, difference_image
from topiq_video.report.html import script_json

EVIL_PATH = "/videos/<script>alert(1)</script>.mp4"
EVIL_TITLE = "<script>alert(1)</script>"
EVIL_WARNING = "<img src=x onerror=alert(2)> & friends"
EVIL_TAG_KEY = "comment\"'><svg onload=alert(3)>"


def synthetic_picture(seed: int, width: int = 320, height: int = 180) -> np.ndarray:
    """A smooth synthetic RGB picture (gradients and a disc), uint8 HxWx3."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    cx, cy = width * (0.3 + 0.1 * seed), height * 0.5
    disc = ((x - cx) ** 2 + (y - cy) ** 2) < (height * 0.3) ** 2
    r = 255 * x / width
    g = 255 * y / height
    b = np.where(disc, 230.0, 60.0 + 40 * np.sin(x / 17.0))
    return np.clip(np.stack([r, g, b], axis=2), 0, 255).astype(np.uint8)


def degrade(img: np.ndarray, seed: int) -> np.ndarray:
    """Blocky, noisy 'encode' of a picture."""
    rng = np.random.default_rng(seed)
    h, w, _ = img.shape
    blocks = img[::8, ::8].repeat(8, axis=0).repeat(8, axis=1)[:h, :w].astype(np.float64)
    mixed = 0.6 * img + 0.4 * blocks + rng.normal(0, 4, img.shape)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def make_gallery(doc: dict, per_metric: int = 2) -> list:
    gallery = []
    for metric, worst in doc["worst_frames"].items():
        for k, w in enumerate(worst[:per_metric]):
            ref = synthetic_picture(k)
            value = w["value"] if w["value"] is not None else float("-inf")
            gallery.append(
                make_gallery_frame(
                    w["frame"],
                    w["time"],
                    metric,
                    value,
                    degrade(ref, k),
                    ref,
                    ref_frame=w["frame"] + 2,
                )
            )
    return gallery


def write_sample_report(
    path: Path, *, dist_path: str = "encode.mp4", title: str = "Sample"
) -> dict:
    doc = make_doc(dist_path=dist_path, title=title)
    doc["inputs"]["dist"]["path"] = dist_path
    doc["inputs"]["dist"]["metadata"][EVIL_TAG_KEY] = EVIL_WARNING
    doc["alignment"]["warnings"].append(EVIL_WARNING)
    doc["credits"] = "TOPIQ: Chen et al., 2024.\nPSNR/SSIM computed on luma."
    frames = make_frames()
    scene_scores = np.where(frames["frame"] % 48 == 0, 40.0, 4.0)
    write_report_html(doc, path, gallery=make_gallery(doc), scene_scores=scene_scores)
    return doc


@pytest.fixture(scope="module")
def evil_report(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    write_sample_report(path, dist_path=EVIL_PATH, title=EVIL_TITLE)
    return path


class _AttrCollector(HTMLParser):
    URL_ATTRS = frozenset({"src", "href", "action", "poster", "srcset", "data", "formaction"})

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v or "" for k, v in attrs if k in self.URL_ATTRS]


def _resource_attributes(markup: str) -> list[str]:
    """Every URL-valued attribute of every element (real attributes, not escaped text)."""
    parser = _AttrCollector()
    parser.feed(markup)
    return parser.urls


def _markup_without_scripts(text: str) -> str:
    return re.sub(r"<script\b[^>]*>.*?</script>", "", text, flags=re.DOTALL | re.IGNORECASE)


def test_untrusted_strings_are_escaped(evil_report):
    text = evil_report.read_text("utf-8")
    markup = _markup_without_scripts(text)
    # The only script elements are ours: the figure data, plotly.js and the page script.
    assert len(re.findall(r"<script\b", text, flags=re.IGNORECASE)) == 3
    assert "<script>alert(1)" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup
    assert (
        "<img src=x" not in markup and "&lt;img src=x onerror=alert(2)&gt; &amp; friends" in markup
    )
    assert "<svg onload" not in markup
    # Inside the JSON script block nothing can close the element or open a comment.
    data = re.search(
        r"<script type='application/json' id='report-figures'>(.*?)</script>", text, re.S
    )
    assert data is not None and "<" not in data.group(1) and ">" not in data.group(1)


def test_script_json_cannot_break_out():
    payload = {"k": "</script><script>alert(1)</script>&<!--", "u": "\u2028"}
    text = script_json(payload)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == payload


def test_page_loads_nothing_from_the_network(evil_report):
    text = evil_report.read_text("utf-8")
    markup = _markup_without_scripts(text)
    refs = _resource_attributes(markup)
    assert refs, "expected images and anchors in the page"
    for ref in refs:
        assert ref.startswith(("data:image/jpeg;base64,", "#")), ref
    assert "@import" not in markup and "url(" not in markup
    csp = re.search(r"http-equiv='Content-Security-Policy' content=\"([^\"]+)\"", text)
    assert csp is not None
    policy = {p.split()[0]: p.split()[1:] for p in csp.group(1).split("; ")}
    assert policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'none'"]
    assert policy["img-src"] == ["data:", "blob:"]
    assert all("http" not in v for vals in policy.values() for v in vals)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_gallery_frame_images():
    ref = synthetic_picture(0, 1280, 720)
    dist = degrade(ref, 0)
    g = make_gallery_frame(12, 0.48, "psnr_y", 31.5, dist, ref, max_width=640)
    for data in (g.dist_jpeg, g.ref_jpeg, g.diff_jpeg):
        img = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        assert tuple(img.shape) == (3, 360, 640)
    nr = make_gallery_frame(3, 0.1, "topiq_nr", 0.5, dist, None)
    assert nr.ref_jpeg is None and nr.diff_jpeg is None
    # Identical pictures give a black difference; a uniform step of s gives gain*s intensity.
    same = difference_image(ref, ref)
    assert same.max() <= 5
    step = difference_image(np.full_like(ref, 110), np.full_like(ref, 100))
    brighter = difference_image(np.full_like(ref, 130), np.full_like(ref, 100))
    assert step.sum() > same.sum() and brighter.astype(int).sum() > step.astype(int).sum()
    assert DIFF_GAIN * 30 < 255  # the 30-step case is not saturated, so the ramp is visible


def test_gallery_rejects_non_rgb():
    from topiq_video.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="HxWx3"):
        make_gallery_frame(0, 0.0, "m", 1.0, np.zeros((8, 8), np.uint8), None)
    with pytest.raises(InvalidInputError, match="uint8"):
        make_gallery_frame(0, 0.0, "m", 1.0, np.zeros((8, 8, 3), np.float32), None)


@pytest.mark.browser
@pytest.mark.skipif(not browser_available(), reason="headless Chromium is not installed")
def test_report_renders_in_headless_chromium(evil_report):
    with Browser(width=1280, height=900) as browser:
        browser.open(evil_report)
        state = browser.wait_for("document.documentElement.getAttribute('data-rendered')")
        assert state == "true", browser.log.errors
        # timeline + two distributions + the offset search curve
        assert browser.evaluate("document.querySelectorAll('.js-plotly-plot').length") == 4
        assert (
            browser.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length") >= 4
        )
        traces = browser.evaluate(
            "document.querySelectorAll('#fig-timeline .scatterlayer .trace').length"
        )
        assert traces == 5  # two metric lines, two worst-frame marker sets, scene scores
        body = browser.evaluate("document.body.innerText")
        assert EVIL_PATH in body and EVIL_TITLE in body and EVIL_WARNING in body
        assert browser.evaluate("document.querySelectorAll('img').length") == 12
        assert browser.evaluate(
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
        # Sorting the scene table by psnr_y mean puts the dip (scene 2) first, then last.
        first_row = (
            "(() => {const th = Array.from(document.querySelectorAll('table.scenes th'))"
            ".find(t => t.textContent.startsWith('psnr_y') && t.textContent.endsWith('mean'));"
            "th.click(); return document.querySelector('table.scenes tbody tr').id;})()"
        )
        assert browser.evaluate(first_row) == "scene-2"
        assert browser.evaluate(first_row) != "scene-2"
        assert browser.log.dialogs == []
        assert browser.log.errors == []
        assert browser.log.requests, "the page load itself should be recorded"
        for url in browser.log.requests:
            assert url.startswith(("file://", "data:")), url
