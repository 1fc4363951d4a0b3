"""Per-frame score tables: CSV, Parquet or strict JSON records.

CSV floats are written with ``repr`` precision (shortest string that round-trips exactly), so
statistics recomputed from ``frames.csv`` match ``report.json`` to the last bit. +inf is
written as ``inf`` and NaN as an empty field, which pandas and most spreadsheets read back.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd

from topiq_video.errors import InvalidInputError
from topiq_video.report.document import (
    atomic_write_text,
    dumps_strict,
    frame_records,
    metric_columns,
)

TABLE_SUFFIXES = (".csv", ".parquet", ".json")


def frames_csv_text(frames: pd.DataFrame) -> str:
    """The per-frame table as CSV text (full float precision, ``inf``, empty for NaN)."""
    buf = io.StringIO()
    # float_format=None keeps Python's repr, the shortest exact round-trip representation.
    frames.to_csv(buf, index=False, na_rep="", lineterminator="\n")
    return buf.getvalue()


def write_frames_csv(frames: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the per-frame table as CSV, atomically."""
    return atomic_write_text(path, frames_csv_text(frames))


def check_table_path(path: str | os.PathLike[str]) -> None:
    """Refuse an output the writer could not produce, before any work is done."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InvalidInputError(
            f"unknown table format {suffix or '(no suffix)'!r} for {Path(path).name}: "
            f"use one of {', '.join(TABLE_SUFFIXES)}"
        )
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise InvalidInputError(
                "writing .parquet needs pyarrow: pip install 'topiq-video[parquet]', "
                "or choose a .csv or .json output"
            ) from exc


def write_frames_table(frames: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the per-frame table in the format named by the suffix: .csv, .parquet or .json.

    JSON is a strict array of records: non-finite scores become null with a
    ``<metric>_nonfinite`` flag, exactly as in the report document.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".csv":
        return write_frames_csv(frames, target)
    if suffix == ".json":
        records = frame_records(frames, metric_columns(frames), all_index_columns=False)
        return atomic_write_text(target, dumps_strict(records, indent=1) + "\n")
    check_table_path(target)
    if suffix == ".parquet":
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            frames.to_parquet(tmp, index=False)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target
    raise InvalidInputError(
        f"unknown table format {target.suffix or '(no suffix)'!r} for {target.name}: "
        f"use one of {', '.join(TABLE_SUFFIXES)}"
    )
