"""`topiq-video report`: a run's typed result written as report.json, frames.parquet,
frames.csv, gallery pictures and report.html."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from topiq_video.errors import InvalidInputError
from topiq_video.files import check_output_dir, display_text
from topiq_video.pipeline.collect import collect, options_from, raise_partial
from topiq_video.pipeline.options import DEFAULT_GALLERY_FRAMES, ScoreOptions
from topiq_video.pipeline.run import FrameScores, ScoringRun
from topiq_video.result import REPORT_FILE, SavedReport, ScoreResult

DEFAULT_REPORTS_DIR = Path("reports")
HTML_FILE = "report.html"


def default_report_dir(dist: str | os.PathLike[str]) -> Path:
    """``reports/<input stem>/``, also for URLs (their last path part, or the host)."""
    text = display_text(os.fsdecode(dist))
    parsed = urlparse(text)
    if len(parsed.scheme) > 1:  # a URL (one letter would be a Windows drive)
        name = Path(parsed.path).stem or parsed.hostname or "stream"
    else:
        name = Path(text).stem
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "stream"
    return DEFAULT_REPORTS_DIR / safe


def write_report(result: ScoreResult, out_dir: str | os.PathLike[str]) -> SavedReport:
    """Save ``result`` (report.json last, so a folder with one is complete) and its page."""
    from topiq_video.report.render import write_html

    out = check_output_dir(out_dir)
    saved = result.save(out)
    html_path = write_html(result, out / HTML_FILE)
    return SavedReport(saved.out_dir, saved.json_path, saved.frames_path, saved.csv_path, html_path)


def render_report(
    report_json: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Render a saved page again from its JSON and the files it names: a report
    (report.json) or a comparison (compare.json); a folder holding either will do."""
    from topiq_video.result import COMPARE_FILE, CompareResult

    source = Path(report_json)
    if source.is_dir() and not (source / REPORT_FILE).exists() and (source / COMPARE_FILE).exists():
        source = source / COMPARE_FILE
    json_path = source / REPORT_FILE if source.is_dir() else source
    if json_path.name == COMPARE_FILE:
        from topiq_video.compare import COMPARE_HTML
        from topiq_video.report.compare_render import write_compare_html

        compared = CompareResult.load(json_path)
        out = check_output_dir(out_dir if out_dir is not None else json_path.parent)
        if out.resolve() != json_path.parent.resolve():
            compared.save(out)
        return write_compare_html(compared, out / COMPARE_HTML)
    from topiq_video.report.render import write_html

    result = ScoreResult.load(json_path)
    out = check_output_dir(out_dir if out_dir is not None else json_path.parent)
    if out.resolve() != json_path.parent.resolve():
        result.save(out)  # the page's folder holds its data too
    return write_html(result, out / HTML_FILE)


def build_report(
    dist: str | os.PathLike[str],
    ref: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    options: ScoreOptions | None = None,
    on_frame: Callable[[FrameScores], None] | None = None,
    command: Sequence[str] | None = None,
    models: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[ScoreResult, SavedReport]:
    """Score ``dist`` (against ``ref``) and write the report; the Python face of `report`.

    Options are a :class:`ScoreOptions` or its fields as keywords; unless given, scenes are
    detected and a gallery of ``DEFAULT_GALLERY_FRAMES`` per metric is captured. A run that
    stops early still writes its report (marked incomplete) before the error is raised.
    ``models`` passes TOPIQ models already loaded (a batch worker keeps them across items).
    """
    started = time.monotonic()
    if options is None:
        kwargs.setdefault("gallery", DEFAULT_GALLERY_FRAMES)
        if "scenes_file" not in kwargs:
            kwargs.setdefault("detect_scenes", True)
    opts = options_from(options, kwargs)
    out = Path(out_dir) if out_dir is not None else default_report_dir(dist)
    check_output_dir(out)
    run = ScoringRun(dist, ref, opts, models=models)
    result, failure = collect(run, on_frame=on_frame, command=command, started=started)
    saved = write_report(result, out) if result is not None else None
    if failure is not None:
        raise_partial(failure, result, saved.out_dir if saved else None)
    if result is None or saved is None:
        raise InvalidInputError(
            "No frame was scored, so there is nothing to report: check the frame selection "
            "(start, duration) and the alignment (offset)."
        )
    return result, saved
