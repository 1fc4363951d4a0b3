"""Report writers: versioned JSON document, per-frame tables and a self-contained HTML page."""

from __future__ import annotations

from topiq_video.report.document import (
    SCHEMA_ID,
    build_report_document,
    load_schema,
    write_report_json,
)
from topiq_video.report.gallery import GalleryFrame, make_gallery_frame
from topiq_video.report.html import render_report_html, write_report_html
from topiq_video.report.tables import write_frames_csv, write_frames_table

__all__ = [
    "SCHEMA_ID",
    "GalleryFrame",
    "build_report_document",
    "load_schema",
    "make_gallery_frame",
    "render_report_html",
    "write_frames_csv",
    "write_frames_table",
    "write_report_html",
    "write_report_json",
]
