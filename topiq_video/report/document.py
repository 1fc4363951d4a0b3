"""The versioned JSON report document (``topiq-video/report@1``) and its strict-JSON writer.

JSON has no NaN or Infinity, and a report that Python's ``json`` module can write but a
browser or ``jq`` refuses to read is useless, so every non-finite number becomes ``null``.
Per frame the lost information is kept in a ``<metric>_nonfinite`` flag (``"+inf"``,
``"-inf"`` or ``"nan"``); in the summary it is kept by the ``*_count`` fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd

SCHEMA_ID = "topiq-video/report@1"
SCHEMA_FILE = "schema.json"
SCENE_SOURCES = ("reference", "input", "file", "none")
NONFINITE_SUFFIX = "_nonfinite"

# Columns of the per-frame table that describe the frame rather than score it.
FRAME_INDEX_COLUMNS = ("frame", "time", "ref_frame", "ref_time", "scene")
# Numeric columns that may ride along in a frames table but are not quality scores.
_NOT_METRICS = frozenset({"content_score"})
_INT_INDEX_COLUMNS = frozenset({"frame", "ref_frame", "scene"})
STAT_FIELDS = (
    "mean",
    "harmonic_mean",
    "min",
    "p1",
    "p5",
    "p10",
    "median",
    "max",
    "std",
    "count",
    "nan_count",
    "posinf_count",
    "neginf_count",
)
_COUNT_FIELDS = frozenset({"count", "nan_count", "posinf_count", "neginf_count"})


def nonfinite_flag(value: float) -> str | None:
    """Return ``"+inf"``, ``"-inf"`` or ``"nan"`` for a non-finite number, else None."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return None


def to_jsonable(value: Any) -> Any:
    """Convert numpy/pandas/dataclass/path values to plain JSON types; non-finite floats to None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        raw = to_dict() if callable(to_dict) else dataclasses.asdict(value)
        return to_jsonable(raw)
    if isinstance(value, pd.DataFrame):
        return dataframe_records(value)
    if isinstance(value, (np.ndarray, pd.Series)):
        return [to_jsonable(v) for v in np.asarray(value).tolist()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if value is pd.NaT:
        return None
    return str(value)


def metric_columns(frames: pd.DataFrame, metrics: Iterable[Mapping[str, Any]] = ()) -> list[str]:
    """Metric columns of a per-frame table: declared metrics first, then other numeric columns."""
    declared = [str(m["name"]) for m in metrics if str(m["name"]) in frames.columns]
    rest = [
        str(c)
        for c in frames.columns
        if c not in FRAME_INDEX_COLUMNS
        and c not in declared
        and c not in _NOT_METRICS
        and not str(c).endswith(NONFINITE_SUFFIX)
        and pd.api.types.is_numeric_dtype(frames[c])
        and not pd.api.types.is_bool_dtype(frames[c])
    ]
    return declared + rest


def _column_values(series: pd.Series, as_int: bool) -> tuple[list[Any], list[str | None]]:
    """Column as JSON values plus per-row non-finite flags (None where finite)."""
    arr = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    finite = np.isfinite(arr)
    values: list[Any] = arr.tolist()
    flags: list[str | None] = [None] * len(values)
    if as_int:
        values = [int(v) if ok else None for v, ok in zip(values, finite.tolist(), strict=True)]
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            flags[i] = nonfinite_flag(values[i] if not as_int else float(arr[i]))
            values[i] = None
    return values, flags


def frame_records(
    frames: pd.DataFrame, metrics: Iterable[str] | None = None, *, all_index_columns: bool = True
) -> list[dict]:
    """Per-frame rows as strict-JSON dicts, with ``<metric>_nonfinite`` flags where needed.

    ``all_index_columns`` gives every row each of frame/time/ref_frame/ref_time/scene (null
    when the table lacks it), as the report schema wants; otherwise only the table's own.
    """
    names = list(metrics) if metrics is not None else metric_columns(frames)
    n = len(frames)
    columns: dict[str, tuple[list[Any], list[str | None]]] = {}
    for col in FRAME_INDEX_COLUMNS:
        if col in frames.columns:
            columns[col] = _column_values(frames[col], col in _INT_INDEX_COLUMNS)
        elif all_index_columns:
            columns[col] = ([None] * n, [None] * n)
    for name in names:
        columns[name] = _column_values(frames[name], False)
    records = []
    for i in range(n):
        rec: dict[str, Any] = {}
        for col, (values, flags) in columns.items():
            rec[col] = values[i]
            if flags[i] is not None and col in names:
                rec[col + NONFINITE_SUFFIX] = flags[i]
        records.append(rec)
    return records


def dataframe_records(df: pd.DataFrame) -> list[dict]:
    """Any DataFrame as strict-JSON records (non-finite numbers become null, no flags)."""
    out = []
    for row in df.reset_index(drop=not _named_index(df)).to_dict(orient="records"):
        out.append({str(k): to_jsonable(v) for k, v in row.items()})
    return out


def _named_index(df: pd.DataFrame) -> bool:
    return any(name is not None for name in df.index.names)


def stats_dict(stats: Any) -> dict[str, Any]:
    """One metric's pooled statistics (``MetricStats`` or a mapping) in the report's layout."""
    if isinstance(stats, Mapping):
        raw = dict(stats)
    else:
        to_dict = getattr(stats, "to_dict", None)
        if callable(to_dict):
            raw = dict(to_dict())
        elif dataclasses.is_dataclass(stats):
            raw = dataclasses.asdict(stats)
        else:
            raw = {f: getattr(stats, f, None) for f in STAT_FIELDS}
    out: dict[str, Any] = {}
    for field in STAT_FIELDS:
        v = raw.get(field)
        if field in _COUNT_FIELDS:
            out[field] = int(v) if v is not None else 0
        else:
            out[field] = to_jsonable(v)
    return out


def _scene_entry(scene_stats: Any) -> dict[str, Any]:
    scene = getattr(scene_stats, "scene", scene_stats)
    stats = getattr(scene_stats, "stats", {}) or {}
    return {
        "index": int(scene.index),
        "start_frame": int(scene.start_frame),
        "end_frame": int(scene.end_frame),
        "start_time": to_jsonable(scene.start_time),
        "end_time": to_jsonable(scene.end_time),
        "stats": {str(k): stats_dict(v) for k, v in stats.items()},
    }


def _worst_frames(worst: Mapping[str, Iterable[Any]]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for metric, items in worst.items():
        rows = []
        for w in items:
            get = w.get if isinstance(w, Mapping) else lambda k, _w=w: getattr(_w, k, None)
            value = float(get("value"))
            row = {"frame": int(get("frame")), "time": to_jsonable(get("time")), "value": None}
            if math.isfinite(value):
                row["value"] = value
            else:
                row["value" + NONFINITE_SUFFIX] = nonfinite_flag(value)
            rows.append(row)
        out[str(metric)] = rows
    return out


def build_report_document(
    frames: pd.DataFrame,
    pooled: Any,
    *,
    inputs: Mapping[str, Any],
    model: Mapping[str, Any] | None,
    alignment: Mapping[str, Any] | None,
    metrics: Iterable[Mapping[str, Any]],
    run: Mapping[str, Any],
    scene_source: str = "none",
    credits: str | None = None,
) -> dict[str, Any]:
    """Assemble the ``topiq-video/report@1`` document from per-frame scores and pooled stats.

    ``pooled`` is a ``PooledResult`` (summary, scenes, worst_frames, worst_scenes, per_second);
    the result contains only plain JSON types and no non-finite numbers.
    """
    from topiq_video.errors import InvalidInputError

    if scene_source not in SCENE_SOURCES:
        raise InvalidInputError(
            f"scene_source must be one of {', '.join(SCENE_SOURCES)}, got {scene_source!r}"
        )
    metric_list = [to_jsonable(dict(m)) for m in metrics]
    names = metric_columns(frames, metric_list)
    declared = {m["name"] for m in metric_list}
    for name in names:  # a column nobody declared still gets a description
        if name not in declared:
            metric_list.append(
                {"name": name, "unit": None, "higher_is_better": True, "range": None}
            )
    per_second = getattr(pooled, "per_second", None)
    doc: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "run": to_jsonable(run),
        "inputs": to_jsonable(inputs),
        "model": to_jsonable(model) if model is not None else None,
        "alignment": to_jsonable(alignment) if alignment is not None else None,
        "metrics": metric_list,
        "scene_source": scene_source,
        "summary": {str(k): stats_dict(v) for k, v in (pooled.summary or {}).items()},
        "scenes": [_scene_entry(s) for s in (getattr(pooled, "scenes", None) or [])],
        "frames": frame_records(frames, names),
        "worst_frames": _worst_frames(getattr(pooled, "worst_frames", None) or {}),
        "worst_scenes": {
            str(k): [int(i) for i in v]
            for k, v in (getattr(pooled, "worst_scenes", None) or {}).items()
        },
        "per_second": dataframe_records(per_second) if per_second is not None else [],
    }
    if credits is not None:
        doc["credits"] = str(credits)
    return doc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name} in report")


def dumps_strict(doc: Any, *, indent: int | None = None) -> str:
    """Serialise to strict JSON; raises ValueError if a NaN or Infinity slipped through."""
    return json.dumps(doc, indent=indent, ensure_ascii=False, allow_nan=False)


def loads_strict(text: str) -> Any:
    """Parse JSON, refusing the NaN/Infinity tokens that Python would otherwise accept."""
    return json.loads(text, parse_constant=_reject_constant)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write text via a temp file in the same folder and ``os.replace`` (no half-written file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        # mkstemp creates 0600; give the report the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_report_json(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the document as indented strict JSON, atomically."""
    return atomic_write_text(path, dumps_strict(doc, indent=1) + "\n")


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("topiq_video.report").joinpath(SCHEMA_FILE).read_text("utf-8")


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the report document."""
    return json.loads(_schema_text())
