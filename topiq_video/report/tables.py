"""Per-frame score tables: CSV, Parquet or strict JSON records.

CSV floats are written with ``repr`` precision (shortest string that round-trips exactly), so
statistics recomputed from ``frames.csv`` match ``report.json`` to the last bit. +inf is
written as ``inf`` and NaN as an empty field, which pandas and most spreadsheets read back.
Parquet keeps every value as it is. JSON has no NaN or Infinity: non-finite scores become
``null`` with a ``<metric>_nonfinite`` flag (``"+inf"``, ``"-inf"`` or ``"nan"``).
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topiq_video.errors import InvalidInputError
from topiq_video.files import atomic_path, atomic_write_text, check_output_file
from topiq_video.result import FRAME_COLUMNS, nonfinite_flag

TABLE_SUFFIXES = (".csv", ".parquet", ".json")
NONFINITE_SUFFIX = "_nonfinite"
_INT_COLUMNS = frozenset({"frame", "ref_frame", "scene"})


def frames_csv_text(frames: pd.DataFrame) -> str:
    """The per-frame table as CSV text (full float precision, ``inf``, empty for NaN)."""
    buf = io.StringIO()
    # float_format=None keeps Python's repr, the shortest exact round-trip representation.
    frames.to_csv(buf, index=False, na_rep="", lineterminator="\n")
    return buf.getvalue()


def frame_records(frames: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as strict-JSON dicts, with ``<metric>_nonfinite`` flags where needed."""
    records: list[dict[str, Any]] = [{} for _ in range(len(frames))]
    for column in frames.columns:
        series = frames[column]
        if column in _INT_COLUMNS:
            values = [None if pd.isna(v) else int(v) for v in series.tolist()]
            for rec, v in zip(records, values, strict=True):
                rec[column] = v
            continue
        arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
        for rec, v in zip(records, arr.tolist(), strict=True):
            if math.isfinite(v):
                rec[column] = v
            else:
                rec[column] = None
                if column not in FRAME_COLUMNS:
                    rec[column + NONFINITE_SUFFIX] = nonfinite_flag(v)
    return records


def check_table_path(path: str | os.PathLike[str]) -> None:
    """Refuse an output the writer could not produce, before any work is done."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InvalidInputError(
            f"unknown table format {suffix or '(no suffix)'!r} for {Path(path).name}: "
            f"use one of {', '.join(TABLE_SUFFIXES)}"
        )
    check_output_file(path)


def write_frames_table(frames: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the per-frame table in the format its suffix names, atomically."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".csv":
        return atomic_write_text(target, frames_csv_text(frames))
    if suffix == ".json":
        text = json.dumps(frame_records(frames), indent=1, ensure_ascii=False, allow_nan=False)
        return atomic_write_text(target, text + "\n")
    if suffix == ".parquet":
        with atomic_path(target) as tmp:
            frames.to_parquet(tmp, index=False)
        return target
    check_table_path(target)
    raise AssertionError("unreachable")
