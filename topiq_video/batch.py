"""`topiq-video batch`: a whole catalog scored item by item, resumable, on Ray or in-process.

A manifest (CSV, Parquet or JSON lines) lists the items: ``dist``, optionally ``ref``,
``label`` and per-row options. Each item gets exactly the report `report` would make, in
``OUT/items/<id>/``, where the id is a short hash of its inputs (path, size, mtime, the
first and last MiB) and of the options that shape its scores.

Resuming is by the file system alone. An item is built in a temporary folder inside
``OUT/items`` and renamed into place when complete, with its record written last inside it
(``item.json`` when done, ``failed.json`` when it failed), so a folder under its id is either
finished or absent whatever kills the run. A rerun skips the done items and, unless asked to
retry them, the failed ones.

Items run in workers that keep their TOPIQ models loaded from one item to the next: Ray
actors (one item at a time each; a worker that dies is replaced and its item retried, a bad
input is recorded as failed and not retried), or, without Ray, one worker in this process.
Only small records travel between the workers and the driver: every worker reads its inputs
and writes its report folder itself. The driver keeps ``catalog.parquet`` (one row per item)
and ``index.html`` up to date as items finish.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import shutil
import socket
import stat
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from topiq_video.errors import InvalidInputError, OutputError, TopiqVideoError
from topiq_video.files import atomic_write_text, check_output_dir, display_text
from topiq_video.pipeline.options import (
    DEFAULT_GALLERY_FRAMES,
    ScoreOptions,
)

if TYPE_CHECKING:
    import pandas as pd

    from topiq_video.result import MetricInfo

logger = logging.getLogger(__name__)

ITEMS_DIR = "items"
CATALOG_FILE = "catalog.parquet"
INDEX_FILE = "index.html"
ITEM_FILE = "item.json"
"""A done item's record, written last inside its folder."""
FAILED_FILE = "failed.json"
"""A failed item's record (with whatever partial report was written beside it)."""
LOCK_FILE = ".batch.lock"
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
ITEM_SCHEMA_ID = "topiq-video/batch-item@1"
ID_RECIPE = "topiq-video/batch-id@1"
"""Part of every id: changing how ids are made changes this, and so every id."""
ID_HEX_CHARS = 16
"""64 bits: a collision among a million items has odds of about 3e-8."""
FINGERPRINT_BYTES = 1 << 20
"""The first and the last this many bytes of each input file are hashed into its id."""
FINGERPRINT_THREADS = 8
"""Files the driver reads at once (I/O bound on network storage): input fingerprints, and
the item records and reports checked when a run resumes."""
IGNORED_OPTIONS = ("device", "batch_size", "progress", "timeout")
"""Options that do not change an item's scores, so not its id: resuming on other hardware
reuses what was done."""
DEFAULT_BATCH_PARENT = Path("reports")
DEFAULT_CPUS_PER_ITEM = 1.0
DEFAULT_GPUS_PER_ITEM = 0.5
"""GPU share per worker when the cluster has GPUs: two items per GPU, so one's opening,
alignment and report writing overlap the other's scoring."""
MAX_ITEM_ATTEMPTS = 3
"""Tries of an item whose worker dies (killed, out of memory, crashed); a bad input is
recorded as failed at once."""
WORKER_START_TIMEOUT_S = 600.0
"""How long the first Ray worker may take to start before the batch gives up."""
MODEL_CACHE_SIZE = 2
"""TOPIQ models a worker keeps loaded (different models or weights across items)."""
CATALOG_INTERVAL_S = 2.0
"""catalog.parquet is rewritten at most this often while items finish (and at the end)."""
INDEX_INTERVAL_S = 30.0
"""index.html (which embeds plotly.js) is rewritten at most this often (and at the end)."""
OUTPUT_TIME_SHARE = 10
"""The catalog and the page wait at least this many times as long as their last rewrite
took before the next one (a catalog of 100,000 items takes seconds to build)."""
RAY_EXTRA = "pip install 'topiq-video[ray]'"
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for multi-node networking; "0" keeps a local instance on 127.0.0.1."""
MANIFEST_SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
CATALOG_STATS = ("mean", "harmonic_mean", "min", "p1", "p5", "p10", "median", "max", "std")
"""Summary statistics of each metric kept in the catalog (``<metric>_<stat>``)."""
RUN_COLUMNS = ("attempts", "resumed", "elapsed_s", "score_s", "finished", "host", "worker_pid")
"""Catalog columns that describe how and when an item ran rather than what it found: they
differ between runs of the same manifest."""

ItemStatus = Literal["done", "failed"]
CatalogStatus = Literal["done", "failed", "skipped"]


# ---------------------------------------------------------------------------- manifest


def _as_text(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidInputError(f"{name} must be text, got {value!r}.")
    text = str(value).strip()
    if not text:
        raise InvalidInputError(f"{name} is empty.")
    return text


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise InvalidInputError(f"{name} must be a number, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}.")
    return number


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidInputError(f"{name} must be a whole number, got {value!r}.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # Parquet and pandas keep whole numbers of a column with gaps as floats
    try:
        return int(str(value).strip())
    except ValueError:
        raise InvalidInputError(f"{name} must be a whole number, got {value!r}.") from None


def _as_metrics(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        names = [_as_text(v, name) for v in value]
    else:
        names = [v.strip() for v in _as_text(value, name).split(",") if v.strip()]
    if not names:
        raise InvalidInputError(f"{name} names no metric.")
    return tuple(names)


def _as_offset(value: Any, name: str) -> float | str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    return _as_float(value, name)


# Per-row options: the manifest column, its parser and the ScoreOptions or FrameSelection
# field it sets. A row's empty cell keeps the batch's default.
ROW_OPTIONS: dict[str, tuple[Callable[[Any, str], Any], str]] = {
    "model": (_as_text, "model"),
    "metrics": (_as_metrics, "metrics"),
    "vmaf_model": (_as_text, "vmaf_model"),
    "offset": (_as_offset, "offset"),
    "max_offset": (_as_float, "max_offset"),
    "scale_to": (_as_text, "scale_to"),
    "start": (_as_float, "selection.start"),
    "duration": (_as_float, "selection.duration"),
    "every": (_as_int, "selection.every"),
    "sample_fps": (_as_float, "selection.sample_fps"),
    "max_frames": (_as_int, "selection.max_frames"),
    "scenes": (_as_text, "scenes_file"),
    "worst": (_as_int, "worst_n"),
    "gallery": (_as_int, "gallery"),
}
MANIFEST_COLUMNS = ("dist", "ref", "label", *ROW_OPTIONS)


@dataclass(frozen=True)
class BatchItem:
    """One item of a batch: its inputs, its effective options and its id."""

    id: str
    row: int  # 1-based position in the manifest
    where: str  # how to point at its row in messages ("line 4", "row 3")
    label: str
    dist: str
    ref: str | None
    options: ScoreOptions


def _is_url(text: str) -> bool:
    return len(urlparse(text).scheme) > 1  # one letter would be a Windows drive


def _resolve(value: str, base: Path) -> str:
    """A path relative to the manifest's folder made absolute; URLs as they are."""
    if _is_url(value):
        return value
    path = Path(value).expanduser()
    return os.path.abspath(path if path.is_absolute() else base / path)


def _cell(value: Any) -> Any:
    """A manifest cell as a plain value; empty cells (blank text, NaN, null) as None."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, tuple, str)):
        with contextlib.suppress(ValueError, TypeError):
            value = value.item()  # numpy scalars from Parquet
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()  # a list cell from Parquet
    with contextlib.suppress(TypeError, ValueError):
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    return value


def _manifest_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, cells) for every row of a manifest file."""
    name = os.fsdecode(path)
    kind = MANIFEST_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InvalidInputError(
            f"Manifest {name!r}: unknown format {path.suffix or '(no suffix)'!r}; use .csv, "
            ".parquet or JSON lines (.jsonl, .ndjson, .json)."
        )
    try:
        if kind == "parquet":
            import pandas as pd

            frame = pd.read_parquet(path)
            return [
                (f"row {i}", {str(k): _cell(v) for k, v in rec.items()})
                for i, rec in enumerate(frame.to_dict("records"), start=1)
            ]
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        from topiq_video.files import describe_os_error

        reason = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        raise InvalidInputError(f"Cannot read the manifest {name!r}: {reason}.") from exc
    rows: list[tuple[str, dict[str, Any]]] = []
    if kind == "csv":
        reader = csv.DictReader(io.StringIO(text))
        for record in reader:
            if None in record:
                raise InvalidInputError(
                    f"Manifest {name!r} line {reader.line_num}: more fields than the header "
                    "names (quote values that hold commas)."
                )
            rows.append(
                (f"line {reader.line_num}", {k.strip(): _cell(v) for k, v in record.items()})
            )
        return rows
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"Manifest {name!r} line {n}: not JSON ({exc.msg}); JSON lines hold one "
                "object per line."
            ) from exc
        if not isinstance(record, dict):
            raise InvalidInputError(
                f"Manifest {name!r} line {n}: a JSON object is needed, got {type(record).__name__}."
            )
        rows.append((f"line {n}", {str(k): _cell(v) for k, v in record.items()}))
    return rows


def _row_options(cells: Mapping[str, Any], defaults: ScoreOptions, base: Path) -> ScoreOptions:
    changes: dict[str, Any] = {}
    selection: dict[str, Any] = {}
    for column, (parse, target) in ROW_OPTIONS.items():
        value = cells.get(column)
        if value is None:
            continue
        value = parse(value, column)
        if column == "scenes":
            value = _resolve(value, base)
            changes["detect_scenes"] = False
        if target.startswith("selection."):
            selection[target.split(".", 1)[1]] = value
        else:
            changes[target] = value
    if selection:
        changes["selection"] = replace(defaults.selection, **selection)
    return replace(defaults, **changes) if changes else defaults


def _check_options(options: ScoreOptions, has_ref: bool) -> None:
    """What a run would refuse at its start, refused while the manifest is read."""
    from topiq_video.pipeline.run import parse_scale_to, resolve_metrics

    resolve_metrics(options.model, options.metrics, has_ref)
    parse_scale_to(options.scale_to, options.max_pixels)


def read_manifest(
    manifest: str | os.PathLike[str],
    options: ScoreOptions | None = None,
    *,
    ref: str | os.PathLike[str] | None = None,
) -> list[BatchItem]:
    """The items of a manifest with their effective options and ids, in manifest order.

    ``options`` are every row's defaults (a row's own cells win); ``ref`` is the reference
    of rows without one. Relative paths are found from the manifest's folder. A row that
    repeats an earlier one (same inputs and options, so the same id) is scored once.
    """
    path = Path(manifest)
    name = os.fsdecode(path)
    defaults = options if options is not None else report_options()
    base = path.parent
    rows = _manifest_rows(path)
    if not rows:
        raise InvalidInputError(f"Manifest {name!r} has no rows: list one item per row.")
    columns = {c for _, cells in rows for c in cells}
    if "dist" not in columns:
        raise InvalidInputError(
            f"Manifest {name!r} needs a 'dist' column (the video to score, one per row); "
            "'ref', 'label' and per-row options are optional."
        )
    unknown = sorted(columns - set(MANIFEST_COLUMNS))
    if unknown:
        raise InvalidInputError(
            f"Manifest {name!r}: unknown column(s) {', '.join(map(repr, unknown))}. Known: "
            f"{', '.join(MANIFEST_COLUMNS)}."
        )
    default_ref = os.fspath(ref) if ref is not None else None
    parsed: list[tuple[int, str, str, str | None, str | None, ScoreOptions]] = []
    for row, (where, cells) in enumerate(rows, start=1):
        try:
            if cells.get("dist") is None:
                raise InvalidInputError("dist is empty: every row names the video to score.")
            dist = _resolve(_as_text(cells["dist"], "dist"), base)
            ref_cell = cells.get("ref")
            if ref_cell is not None:
                row_ref: str | None = _resolve(_as_text(ref_cell, "ref"), base)
            elif default_ref is not None:
                row_ref = _resolve(default_ref, Path.cwd())
            else:
                row_ref = None
            label = _as_text(cells["label"], "label") if cells.get("label") is not None else None
            row_options = _row_options(cells, defaults, base)
            _check_options(row_options, row_ref is not None)
        except InvalidInputError as exc:
            raise InvalidInputError(f"Manifest {name!r} {where}: {exc}") from exc
        parsed.append((row, where, dist, row_ref, label, row_options))
    ids = _item_ids([(dist, row_ref, opts) for _, _, dist, row_ref, _, opts in parsed])
    items: list[BatchItem] = []
    seen: dict[str, BatchItem] = {}
    for (row, where, dist, row_ref, label, opts), item_id in zip(parsed, ids, strict=True):
        if item_id in seen:
            logger.warning(
                "Manifest %s %s repeats %s (same inputs and options): it is scored once.",
                name,
                where,
                seen[item_id].where,
            )
            continue
        from topiq_video.report.build import default_report_dir

        item = BatchItem(
            id=item_id,
            row=row,
            where=where,
            label=display_text(label or default_report_dir(dist).name),
            dist=dist,
            ref=row_ref,
            options=opts,
        )
        seen[item_id] = item
        items.append(item)
    return items


def report_options(**kwargs: Any) -> ScoreOptions:
    """The options `report` uses by default (scenes detected, a gallery), with ``kwargs``."""
    from topiq_video.pipeline.collect import options_from

    kwargs.setdefault("gallery", DEFAULT_GALLERY_FRAMES)
    if kwargs.get("scenes_file") is None:
        kwargs.setdefault("detect_scenes", True)
    return options_from(None, kwargs)


# ---------------------------------------------------------------------------- ids


def _file_fingerprint(source: str) -> dict[str, Any]:
    """What identifies an input: a URL by itself; a regular file by its path, size, mtime
    and a hash of its first and last MiB; anything else (a pipe, a missing file) by its path
    (a pipe must not be read here: its bytes belong to the run)."""
    if _is_url(source):
        return {"url": source}
    try:
        st = os.stat(source)
    except OSError as exc:
        return {"path": source, "unreadable": exc.errno}
    if not stat.S_ISREG(st.st_mode):
        return {"path": source, "kind": stat.S_IFMT(st.st_mode)}
    head = hashlib.sha256()
    tail = hashlib.sha256()
    try:
        with open(source, "rb") as fh:
            head.update(fh.read(FINGERPRINT_BYTES))
            if st.st_size > FINGERPRINT_BYTES:
                fh.seek(max(FINGERPRINT_BYTES, st.st_size - FINGERPRINT_BYTES))
                tail.update(fh.read(FINGERPRINT_BYTES))
    except OSError as exc:
        return {"path": source, "unreadable": exc.errno}
    return {
        "path": source,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "head": head.hexdigest(),
        "tail": tail.hexdigest(),
    }


def options_key(options: ScoreOptions, has_ref: bool) -> dict[str, Any]:
    """The options that shape an item's scores, as plain JSON values: the metrics as they
    resolve (so naming the default ones changes nothing), files named by options
    fingerprinted like inputs, and what does not change scores (``IGNORED_OPTIONS``) left
    out."""
    from topiq_video.pipeline.run import resolve_metrics

    data = dataclasses.asdict(options)
    for name in IGNORED_OPTIONS:
        data.pop(name, None)
    data["metrics"] = list(resolve_metrics(options.model, options.metrics, has_ref))
    data.pop("model")  # only chose the metrics
    for name in ("weights", "scenes_file"):
        if data.get(name) is not None:
            data[name] = _file_fingerprint(os.path.abspath(data[name]))
    return data


def item_id(dist: str, ref: str | None, options: ScoreOptions) -> str:
    """The short hex id of an item (see :func:`read_manifest`)."""
    return _item_ids([(dist, ref, options)])[0]


def _item_ids(items: Sequence[tuple[str, str | None, ScoreOptions]]) -> list[str]:
    sources = sorted({s for dist, ref, _ in items for s in (dist, ref) if s is not None})
    with ThreadPoolExecutor(max_workers=FINGERPRINT_THREADS) as pool:
        prints = dict(zip(sources, pool.map(_file_fingerprint, sources), strict=True))
    ids = []
    for dist, ref, options in items:
        key = {
            "recipe": ID_RECIPE,
            "dist": prints[dist],
            "ref": prints[ref] if ref is not None else None,
            "options": options_key(options, ref is not None),
        }
        text = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
        ids.append(hashlib.sha256(text.encode("utf-8")).hexdigest()[:ID_HEX_CHARS])
    return ids


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class WorstScene:
    """The lowest-scoring scene of a metric."""

    index: int
    start_s: float
    end_s: float
    mean: float | None


@dataclass(frozen=True)
class ItemRecord:
    """What a batch knows about one item: ``item.json`` (done) or ``failed.json`` (failed).

    Written last inside the item's folder; ``report_sha256`` and ``report_size`` are those
    of the ``report.json`` beside it, so a rerun can tell the report is the one written."""

    id: str
    row: int
    label: str
    dist: str
    ref: str | None
    status: ItemStatus
    error: str | None
    error_type: str | None
    attempts: int
    metrics: tuple[MetricInfo, ...]
    summary: dict[str, dict[str, float | int | None]]
    worst_scene: dict[str, WorstScene | None]
    frames: int | None
    scenes: int | None
    duration_s: float | None
    width: int | None
    height: int | None
    fps: float | None
    codec: str | None
    models: tuple[str, ...]
    device: str | None
    host: str
    worker_pid: int
    started: str
    finished: str
    elapsed_s: float
    score_s: float | None
    report_size: int | None
    report_sha256: str | None
    options: ScoreOptions
    schema: Literal["topiq-video/batch-item@1"] = ITEM_SCHEMA_ID


@lru_cache(maxsize=1)
def _record_adapter() -> Any:
    from pydantic import TypeAdapter

    from topiq_video.result import MetricInfo  # noqa: F401 (resolves ItemRecord's annotations)

    return TypeAdapter(ItemRecord)


def dumps_record(record: ItemRecord) -> str:
    data = _record_adapter().dump_python(record, mode="json")
    return json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def load_record(path: str | os.PathLike[str]) -> ItemRecord:
    """Read and validate an ``item.json`` or ``failed.json``."""
    from topiq_video.result import _load_document

    return _load_document(Path(path), ITEM_SCHEMA_ID, _record_adapter())


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def committed_record(folder: Path, expected_id: str) -> ItemRecord | None:
    """The record of an item folder a run committed, or None when the folder is absent or
    not a finished one (a done record whose report.json is missing or differs counts as
    not done: the item is made again)."""
    done, failed = folder / ITEM_FILE, folder / FAILED_FILE
    path = done if done.is_file() else failed if failed.is_file() else None
    if path is None:
        return None
    try:
        record = load_record(path)
    except TopiqVideoError as exc:
        logger.warning("Ignoring %s (made again): %s", path, exc)
        return None
    if record.id != expected_id or record.status != ("done" if path == done else "failed"):
        logger.warning(
            "Ignoring %s (made again): it is not the record of item %s.", path, expected_id
        )
        return None
    if record.status == "done":
        from topiq_video.result import REPORT_FILE

        report = folder / REPORT_FILE
        try:
            intact = (
                report.stat().st_size == record.report_size
                and _sha256_file(report) == record.report_sha256
            )
        except OSError:
            intact = False
        if not intact:
            logger.warning(
                "Ignoring %s (made again): its report.json is missing or changed.", folder
            )
            return None
    return record


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _base_record(spec: BatchItem, attempt: int, started: str, elapsed: float) -> dict[str, Any]:
    return {
        "id": spec.id,
        "row": spec.row,
        "label": spec.label,
        "dist": spec.dist,
        "ref": spec.ref,
        "attempts": attempt,
        "host": socket.gethostname(),
        "worker_pid": os.getpid(),
        "started": started,
        "finished": _now(),
        "elapsed_s": elapsed,
        "options": spec.options,
    }


_EMPTY_RESULT: dict[str, Any] = {
    "metrics": (),
    "summary": {},
    "worst_scene": {},
    "frames": None,
    "scenes": None,
    "duration_s": None,
    "width": None,
    "height": None,
    "fps": None,
    "codec": None,
    "models": (),
    "device": None,
    "score_s": None,
    "report_size": None,
    "report_sha256": None,
}


def failure_record(
    spec: BatchItem,
    message: str,
    error_type: str,
    *,
    attempt: int,
    started: str | None = None,
    elapsed: float = 0.0,
) -> ItemRecord:
    """The record of an item that failed (no statistics)."""
    return ItemRecord(
        **_base_record(spec, attempt, started or _now(), elapsed),
        **_EMPTY_RESULT,
        status="failed",
        error=message,
        error_type=error_type,
    )


def _result_fields(result: Any, device: str | None) -> dict[str, Any]:
    """Catalog facts of a finished report."""
    report = result.report
    summary: dict[str, dict[str, float | int | None]] = {}
    worst: dict[str, WorstScene | None] = {}
    scenes = {s.index: s for s in report.scenes}
    for name in report.metric_names:
        stats = report.summary.get(name)
        if stats is None:
            continue
        values: dict[str, float | int | None] = {
            key: _finite(getattr(stats, key)) for key in CATALOG_STATS
        }
        values["count"] = stats.count
        values["nonfinite"] = stats.nonfinite_count
        summary[name] = values
        ranked = report.worst_scenes.get(name) or ()
        scene = scenes.get(ranked[0]) if ranked else None
        worst[name] = (
            WorstScene(
                index=scene.index,
                start_s=scene.start_time,
                end_s=scene.end_time,
                mean=_finite(scene.stats[name].mean) if name in scene.stats else None,
            )
            if scene is not None
            else None
        )
    dist = report.inputs.get("dist")
    return {
        "metrics": report.metrics,
        "summary": summary,
        "worst_scene": worst,
        "frames": len(result.frames),
        "scenes": len(report.scenes),
        "duration_s": dist.duration if dist else None,
        "width": dist.width if dist else None,
        "height": dist.height if dist else None,
        "fps": dist.fps if dist else None,
        "codec": dist.codec if dist else None,
        "models": tuple(m.name for m in report.models),
        "device": device,
        "score_s": report.run.duration_s,
    }


# ---------------------------------------------------------------------------- one item


def _commit(tmp: Path, final: Path) -> None:
    """Put a finished item folder in place with renames only: at every instant the id's
    folder is either a committed one or absent."""
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if not final.exists():
            raise
    # A folder is already there (a failure being retried, or a damaged one): set it aside
    # first, then take its place.
    old = final.with_name(f"{OLD_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _temp_dir(items_dir: Path, item: str) -> Path:
    tmp = items_dir / f"{TMP_PREFIX}{item}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    return tmp


def write_failure(items_dir: Path, record: ItemRecord) -> ItemRecord:
    """Commit a failure record decided outside a worker (a worker that kept dying)."""
    tmp = _temp_dir(items_dir, record.id)
    try:
        atomic_write_text(tmp / FAILED_FILE, dumps_record(record))
        _commit(tmp, items_dir / record.id)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


class _ModelCache:
    """TOPIQ models kept loaded from one item to the next (a few, least recently used
    dropped)."""

    def __init__(self, size: int = MODEL_CACHE_SIZE) -> None:
        self.size = size
        self._models: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.loads = 0

    def for_run(self, spec: BatchItem) -> dict[str, Any]:
        from topiq_video.metrics import METRICS
        from topiq_video.pipeline.run import load_models, resolve_metrics

        opts = spec.options
        has_ref = spec.ref is not None
        metrics = resolve_metrics(opts.model, opts.metrics, has_ref)

        def key(name: str) -> tuple[Any, ...]:
            return (name, opts.weights, opts.device, opts.precision, opts.batch_size)

        given = {}
        for name in metrics:
            if name not in METRICS and key(name) in self._models:
                self._models.move_to_end(key(name))
                given[name] = self._models[key(name)]
        models = load_models(metrics, opts, has_ref=has_ref, given=given)
        for name, model in models.items():
            if name not in given:
                self.loads += 1
                self._models[key(name)] = model
        while len(self._models) > self.size:
            self._models.popitem(last=False)
        return models


class ItemWorker:
    """Scores items one at a time into ``items_dir``, keeping its models loaded.

    Run as a Ray actor, or as it is in the driver's process without Ray. Errors of an item
    (a bad input, bad options, missing weights) become its failure record; only the death
    of the process itself is left to the driver."""

    def __init__(self, items_dir: str) -> None:
        self.items_dir = Path(items_dir)
        self._cache = _ModelCache()

    def info(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid()}

    @property
    def models_loaded(self) -> int:
        """TOPIQ models loaded by this worker so far: once per model, not once per item."""
        return self._cache.loads

    def run(
        self, spec: BatchItem, attempt: int = 1, command: Sequence[str] | None = None
    ) -> ItemRecord:
        """Score one item and commit its folder; return its record."""
        from topiq_video.pipeline.collect import failure_message
        from topiq_video.report.build import build_report

        started, t0 = _now(), time.monotonic()
        tmp = _temp_dir(self.items_dir, spec.id)
        try:
            try:
                models = self._cache.for_run(spec)
                result, saved = build_report(
                    spec.dist, spec.ref, tmp, options=spec.options, command=command, models=models
                )
                if result.report.interruption is not None:
                    raise InvalidInputError(result.report.interruption.message)
            except Exception as exc:
                logger.debug("item %s failed", spec.id, exc_info=True)
                record = failure_record(
                    spec,
                    failure_message(exc),
                    type(exc).__name__,
                    attempt=attempt,
                    started=started,
                    elapsed=time.monotonic() - t0,
                )
                atomic_write_text(tmp / FAILED_FILE, dumps_record(record))
            else:
                device = result.report.models[0].device if result.report.models else None
                if device is None:
                    from topiq_video.scoring import resolve_device

                    device = str(resolve_device(spec.options.device))
                record = ItemRecord(
                    **_base_record(spec, attempt, started, time.monotonic() - t0),
                    **_result_fields(result, device),
                    status="done",
                    error=None,
                    error_type=None,
                    report_size=saved.json_path.stat().st_size,
                    report_sha256=_sha256_file(saved.json_path),
                )
                atomic_write_text(tmp / ITEM_FILE, dumps_record(record))
            _commit(tmp, self.items_dir / spec.id)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when committed
        return record


# ---------------------------------------------------------------------------- catalog


def _metric_order(records: Iterable[ItemRecord]) -> tuple[list[str], dict[str, MetricInfo]]:
    names: list[str] = []
    infos: dict[str, MetricInfo] = {}
    for record in records:
        for info in record.metrics:
            if info.name not in infos:
                infos[info.name] = info
                names.append(info.name)
    return names, infos


def catalog_frame(
    items: Sequence[BatchItem], records: Mapping[str, tuple[ItemRecord, bool]]
) -> pd.DataFrame:
    """One row per item in manifest order: its status, every metric's summary statistics
    and worst scene, and how it ran. ``records`` maps ids to (record, resumed); items
    without one are "skipped" (not run yet)."""
    import pandas as pd

    known = [records[i.id][0] for i in items if i.id in records]
    metric_names, _ = _metric_order(known)
    columns: dict[str, list[Any]] = {}
    kinds: dict[str, str] = {}

    def put(name: str, kind: str, value: Any) -> None:
        columns.setdefault(name, []).append(value)
        kinds[name] = kind

    for item in items:
        record, resumed = records.get(item.id, (None, False))
        r: Any = record
        put("id", "str", item.id)
        put("row", "int", item.row)
        put("label", "str", item.label)
        put("dist", "str", display_text(item.dist))
        put("ref", "str", display_text(item.ref) if item.ref is not None else None)
        put("status", "str", r.status if r else "skipped")
        put("error", "str", r.error if r else None)
        put("frames", "int", r.frames if r else None)
        put("scenes", "int", r.scenes if r else None)
        put("duration_s", "float", r.duration_s if r else None)
        put("width", "int", r.width if r else None)
        put("height", "int", r.height if r else None)
        put("fps", "float", r.fps if r else None)
        put("codec", "str", r.codec if r else None)
        put("metrics", "str", ",".join(m.name for m in r.metrics) if r else None)
        put("models", "str", ",".join(r.models) if r and r.models else None)
        put("device", "str", r.device if r else None)
        for name in metric_names:
            stats = r.summary.get(name, {}) if r else {}
            for key in CATALOG_STATS:
                put(f"{name}_{key}", "float", stats.get(key))
            put(f"{name}_count", "int", stats.get("count"))
            put(f"{name}_nonfinite", "int", stats.get("nonfinite"))
            worst = r.worst_scene.get(name) if r else None
            put(f"{name}_worst_scene", "int", worst.index if worst else None)
            put(f"{name}_worst_scene_start_s", "float", worst.start_s if worst else None)
            put(f"{name}_worst_scene_mean", "float", worst.mean if worst else None)
        put("attempts", "int", r.attempts if r else None)
        put("resumed", "bool", resumed)
        put("elapsed_s", "float", r.elapsed_s if r else None)
        put("score_s", "float", r.score_s if r else None)
        put("finished", "str", r.finished if r else None)
        put("host", "str", r.host if r else None)
        put("worker_pid", "int", r.worker_pid if r else None)
    dtypes = {"str": "string", "int": "Int64", "float": "float64", "bool": "bool"}
    if not items:
        return pd.DataFrame()
    return pd.DataFrame(
        {name: pd.Series(values, dtype=dtypes[kinds[name]]) for name, values in columns.items()}
    )


def write_catalog(frame: pd.DataFrame, path: Path) -> Path:
    from topiq_video.files import atomic_path

    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


# ---------------------------------------------------------------------------- running


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands, passed to ``on_progress`` after each change.

    ``kind``: "planned" (before any item runs), "done", "failed", "retry" (a worker died:
    its item runs again) or "finished". Counts are of this run: ``skipped`` items were
    already done (or failed, without ``retry_failed``)."""

    kind: str
    total: int
    done: int
    failed: int
    skipped: int
    retried: int
    item: BatchItem | None = None
    message: str | None = None


@dataclass(frozen=True)
class BatchResult:
    """What a batch did and where its outputs are."""

    out_dir: Path
    catalog_path: Path
    index_path: Path
    total: int
    done: int  # made in this run
    failed: int  # failed in this run
    skipped: int  # done (or failed) before and not run again
    retried: int  # item runs repeated after a worker died
    failed_before: int  # failed in an earlier run and not retried
    runner: str  # "ray" or "in-process"
    workers: int
    elapsed_s: float
    worker_start_s: float | None = None  # until the first worker answered (Ray only)
    records: dict[str, ItemRecord] = field(default_factory=dict, repr=False)

    @property
    def catalog(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(self.catalog_path)


def default_batch_dir(manifest: str | os.PathLike[str]) -> Path:
    """``reports/batch-<manifest stem>/``."""
    from topiq_video.report.build import default_report_dir

    return DEFAULT_BATCH_PARENT / f"batch-{default_report_dir(manifest).name}"


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One batch at a time writes to a folder (the lock goes with the process, even when it
    is killed)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = out / LOCK_FILE
    try:
        fh = open(path, "a+")  # noqa: SIM115 (held for the whole run)
    except OSError as exc:
        from topiq_video.files import output_error

        raise output_error(path, exc) from exc
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputError(
                f"Another batch is writing to {os.fsdecode(out)!r}: wait for it to end or "
                "choose another output folder."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


def _clean_leftovers(items_dir: Path) -> None:
    """Temporary folders of items that were in flight when a run died."""
    for entry in items_dir.iterdir():
        if entry.name.startswith((TMP_PREFIX, OLD_PREFIX)) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


class _Outputs:
    """The catalog and the index page: rewritten as items finish, each not more often than
    its interval, and once more at the end. An interval grows with the time a rewrite takes,
    so that rewriting a large catalog never takes more than 1/``OUTPUT_TIME_SHARE`` of the
    driver's time."""

    def __init__(self, out: Path, items: Sequence[BatchItem], title: str) -> None:
        self.out = out
        self.items = items
        self.title = title
        self.records: dict[str, tuple[ItemRecord, bool]] = {}
        self._due = {"catalog": -math.inf, "index": -math.inf}
        self._stale = {"catalog": True, "index": True}

    def add(self, record: ItemRecord, *, resumed: bool) -> None:
        self.records[record.id] = (record, resumed)
        self._stale = {"catalog": True, "index": True}

    def write(self, *, now: bool = False, final: bool = False) -> None:
        """Write what is stale and due (``now``: the catalog whatever its interval)."""
        at = time.monotonic()
        catalog = self._stale["catalog"] and (final or now or at >= self._due["catalog"])
        index = self._stale["index"] and (final or at >= self._due["index"])
        if not (catalog or index):
            return
        frame = catalog_frame(self.items, self.records)
        if catalog:
            write_catalog(frame, self.out / CATALOG_FILE)
            self._wrote("catalog", at, CATALOG_INTERVAL_S)
        if index:
            from topiq_video.report.batch_page import write_index

            _, infos = _metric_order(r for r, _ in self.records.values())
            write_index(frame, infos, self.out / INDEX_FILE, title=self.title)
            self._wrote("index", at, INDEX_INTERVAL_S)

    def _wrote(self, what: str, started: float, interval: float) -> None:
        end = time.monotonic()
        self._stale[what] = False
        self._due[what] = end + max(interval, OUTPUT_TIME_SHARE * (end - started))


class _InProcessRunner:
    """Items one after another in this process, by one worker (same outputs as Ray's)."""

    name = "in-process"
    workers = 1
    start_s: float | None = None
    command: tuple[str, ...] | None = None
    catalog_every_item = True  # items take long enough for the catalog to follow each one

    def __init__(self, items_dir: Path) -> None:
        self.worker = ItemWorker(os.fspath(items_dir))

    def run(self, todo: Sequence[BatchItem]) -> Iterator[tuple[str, Any, Any]]:
        for item in todo:
            yield "record", item, self.worker.run(item, 1, self.command)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _loopback_only() -> Iterator[Any]:
    """Ray with its multi-node networking off (bound to, and reaching for, 127.0.0.1 only).

    Ray binds every interface, and turns a loopback address into the machine's network
    address, unless that is off: the switch is the environment variable ``LOOPBACK_ENV``
    (read when Ray is imported) and the constant it sets (read when a node starts or
    connects), so both are set for the block and restored after."""
    previous = os.environ.get(LOOPBACK_ENV)
    os.environ[LOOPBACK_ENV] = "0"
    try:
        ray = _import_ray("A batch on Ray")
        constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
        saved = getattr(constants, "ENABLE_RAY_CLUSTER", None)
        if saved is not None:
            constants.ENABLE_RAY_CLUSTER = False
        try:
            yield ray
        finally:
            if saved is not None:
                constants.ENABLE_RAY_CLUSTER = saved
    finally:
        if previous is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = previous


def start_local_ray(num_cpus: int | None = None) -> Any:
    """Start a Ray instance on this machine that listens on loopback only; return ``ray``."""
    with _loopback_only() as ray:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    return ray


def _is_loopback(address: str) -> bool:
    host = urlparse(address if "://" in address else f"//{address}").hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def _join_ray(address: str) -> Any:
    """Connect to a running cluster ("auto", HOST:PORT or ray://HOST:PORT)."""
    context = _loopback_only() if _is_loopback(address) else contextlib.nullcontext()
    with context:
        ray = _import_ray(f"address={address!r}")
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return ray


def _import_ray(why: str) -> Any:
    try:
        import ray
    except ImportError as exc:
        raise InvalidInputError(
            f"{why} needs Ray, which is not installed: {RAY_EXTRA} (or run without Ray, "
            "one item after another, with use_ray=False)."
        ) from exc
    return ray


class _RayRunner:
    """Items on a pool of Ray actors, one item in flight per actor.

    The driver hands the next item to whichever actor is free, so a slow item never holds
    up the others. When an actor dies, a new one takes its slot and the item runs again,
    up to ``MAX_ITEM_ATTEMPTS`` times; after that the item is recorded as failed."""

    name = "ray"
    command: tuple[str, ...] | None = None
    catalog_every_item = False  # many workers finish many items: the catalog follows in ticks

    def __init__(
        self,
        items_dir: Path,
        *,
        address: str | None,
        workers: int | None,
        cpus_per_item: float,
        gpus_per_item: float | None,
        todo: int,
    ) -> None:
        ray = _import_ray("A batch on Ray" if address is None else f"address={address!r}")
        self.ray = ray
        self.items_dir = items_dir
        self._started_ray = False
        self.actors: list[Any] = []
        self.start_s: float | None = None
        if not ray.is_initialized():
            try:
                if address is None:
                    wanted = math.ceil((workers or 0) * cpus_per_item)
                    start_local_ray(max(os.cpu_count() or 1, wanted))
                else:
                    _join_ray(address)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = "start a local Ray instance" if address is None else f"join {address!r}"
                raise InvalidInputError(
                    f"Could not {where}: {_first_line(exc)}. Check the address (auto, "
                    "HOST:PORT or ray://HOST:PORT), that the cluster is running and, where it "
                    "uses token authentication, Ray's RAY_AUTH_MODE=token and its token."
                ) from exc
            self._started_ray = True
        try:
            self._start_pool(workers, cpus_per_item, gpus_per_item, todo)
        except BaseException:
            self.close()
            raise

    def _start_pool(
        self, workers: int | None, cpus_per_item: float, gpus_per_item: float | None, todo: int
    ) -> None:
        ray = self.ray
        resources = ray.cluster_resources()
        cluster_gpus = float(resources.get("GPU", 0.0))
        cluster_cpus = float(resources.get("CPU", 0.0))
        if gpus_per_item is None:
            gpus = DEFAULT_GPUS_PER_ITEM if cluster_gpus > 0 else 0.0
        elif gpus_per_item > 0 and cluster_gpus == 0:
            logger.warning(
                "The Ray cluster has no GPU: items run on CPUs (gpus_per_item=%g ignored).",
                gpus_per_item,
            )
            gpus = 0.0
        else:
            gpus = gpus_per_item
        if workers is None:
            fits = (
                math.floor(cluster_gpus / gpus + 1e-9)
                if gpus > 0
                else math.floor(cluster_cpus / cpus_per_item + 1e-9)
            )
            workers = max(1, fits)
        self.workers = max(1, min(workers, todo))
        self.cpus, self.gpus = cpus_per_item, gpus
        self._actor_class = ray.remote(ItemWorker).options(
            num_cpus=cpus_per_item, num_gpus=gpus, max_restarts=0, max_task_retries=0
        )
        self.actors = [self._new_actor() for _ in range(self.workers)]

    def _new_actor(self) -> Any:
        return self._actor_class.remote(os.fspath(self.items_dir))

    def _wait_first_worker(self) -> None:
        ray = self.ray
        started = time.monotonic()
        pings = [a.info.remote() for a in self.actors]
        ready, _ = ray.wait(pings, num_returns=1, timeout=WORKER_START_TIMEOUT_S)
        if not ready:
            raise TopiqVideoError(
                f"No Ray worker started within {WORKER_START_TIMEOUT_S:g} s: the cluster has "
                f"no room for one with {self.cpus:g} CPU(s) and {self.gpus:g} GPU(s) "
                "(cpus_per_item, gpus_per_item)."
            )
        try:
            ray.get(ready[0])
        except ray.exceptions.RayError as exc:
            raise TopiqVideoError(
                f"The Ray workers could not start ({_first_line(exc)}). Is the same version of "
                "topiq-video installed on every node?"
            ) from exc
        self.start_s = time.monotonic() - started

    def run(self, todo: Sequence[BatchItem]) -> Iterator[tuple[str, Any, Any]]:
        ray = self.ray
        self._wait_first_worker()
        queue = deque(todo)
        attempts: dict[str, int] = {}
        free = deque(range(len(self.actors)))
        inflight: dict[Any, tuple[int, BatchItem]] = {}
        while queue or inflight:
            while queue and free:
                slot, item = free.popleft(), queue.popleft()
                attempts[item.id] = attempts.get(item.id, 0) + 1
                ref = self.actors[slot].run.remote(item, attempts[item.id], self.command)
                inflight[ref] = (slot, item)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=CATALOG_INTERVAL_S)
            if not ready:
                yield "tick", None, None  # nothing finished lately: write what is due
            for ref in ready:
                slot, item = inflight.pop(ref)
                try:
                    record = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                    # The process died: a fresh worker takes the slot, the item runs again.
                    with contextlib.suppress(Exception):
                        ray.kill(self.actors[slot], no_restart=True)
                    self.actors[slot] = self._new_actor()
                    free.append(slot)
                    reason = _first_line(exc)
                    if attempts[item.id] < MAX_ITEM_ATTEMPTS:
                        queue.appendleft(item)
                        yield "retry", item, reason
                        continue
                    message = (
                        f"The worker process died {attempts[item.id]} times while scoring this "
                        f"item (last: {reason}). The input may crash the decoder or need more "
                        "memory than a worker has."
                    )
                    record = write_failure(
                        self.items_dir,
                        failure_record(
                            item, message, type(exc).__name__, attempt=attempts[item.id]
                        ),
                    )
                except ray.exceptions.RayError as exc:
                    # The call itself failed (e.g. the item could not be sent): record it.
                    free.append(slot)
                    record = write_failure(
                        self.items_dir,
                        failure_record(
                            item,
                            f"Ray could not run this item: {_first_line(exc)}",
                            type(exc).__name__,
                            attempt=attempts[item.id],
                        ),
                    )
                else:
                    free.append(slot)
                yield "record", item, record

    def close(self) -> None:
        ray = self.ray
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        if self._started_ray:
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return display_text(text[0] if text else type(exc).__name__)[:500]


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def run_batch(
    manifest: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    options: ScoreOptions | None = None,
    ref: str | os.PathLike[str] | None = None,
    retry_failed: bool = False,
    use_ray: bool | None = None,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_item: float = DEFAULT_CPUS_PER_ITEM,
    gpus_per_item: float | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
    command: Sequence[str] | None = None,
    **kwargs: Any,
) -> BatchResult:
    """Score every item of ``manifest`` into ``out_dir`` (default ``reports/batch-<stem>/``):
    a report per item in ``items/<id>/``, ``catalog.parquet`` and ``index.html``.

    Options are a :class:`ScoreOptions` or its fields as keywords (defaults as `report`'s:
    scenes detected, a gallery); rows override them. Items already done are skipped, and
    failed ones too unless ``retry_failed``. ``use_ray``: None uses Ray when it is installed;
    ``address`` joins a running cluster ("auto", "HOST:PORT", "ray://HOST:PORT"), otherwise a
    local instance starts and stops with the batch (already connected: that one is used).
    ``workers`` defaults to what the cluster's CPUs (or GPUs, ``gpus_per_item`` each) hold.
    ``command`` is recorded in every report.
    """
    started = time.monotonic()
    if options is None:
        options = report_options(**kwargs)
    elif kwargs:
        raise InvalidInputError(
            f"Give options either as a ScoreOptions or as keywords, not both ({', '.join(kwargs)})."
        )
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise InvalidInputError(f"workers must be a whole number >= 1, got {workers!r}.")
    if not (math.isfinite(cpus_per_item) and cpus_per_item > 0):
        raise InvalidInputError(f"cpus_per_item must be > 0, got {cpus_per_item!r}.")
    if gpus_per_item is not None and not (math.isfinite(gpus_per_item) and gpus_per_item >= 0):
        raise InvalidInputError(f"gpus_per_item must be >= 0, got {gpus_per_item!r}.")
    if use_ray is False and address is not None:
        raise InvalidInputError(
            "address joins a Ray cluster, but use_ray is False: drop one of them."
        )
    if use_ray is None:
        use_ray = address is not None or ray_available()
    items = read_manifest(manifest, options, ref=ref)
    out = check_output_dir(out_dir if out_dir is not None else default_batch_dir(manifest))
    items_dir = out / ITEMS_DIR
    check_output_dir(items_dir)
    with _lock(out):
        _clean_leftovers(items_dir)
        title = display_text(Path(os.fsdecode(manifest)).name)
        outputs = _Outputs(out, items, title)
        todo: list[BatchItem] = []
        skipped = failed_before = 0
        with ThreadPoolExecutor(max_workers=FINGERPRINT_THREADS) as pool:
            found = list(pool.map(lambda i: committed_record(items_dir / i.id, i.id), items))
        for item, record in zip(items, found, strict=True):
            if record is None or (record.status == "failed" and retry_failed):
                todo.append(item)
                continue
            outputs.add(record, resumed=True)
            skipped += 1
            failed_before += record.status == "failed"
        counts = {"done": 0, "failed": 0, "retried": 0}

        def progress(kind: str, item: BatchItem | None = None, message: str | None = None) -> None:
            if on_progress is not None:
                on_progress(
                    BatchProgress(
                        kind, len(items), skipped=skipped, item=item, message=message, **counts
                    )
                )

        outputs.write(final=True)  # the plan: what was done before, what is left
        progress("planned")
        runner: Any = None
        try:
            if todo:
                if use_ray:
                    runner = _RayRunner(
                        items_dir,
                        address=address,
                        workers=workers,
                        cpus_per_item=cpus_per_item,
                        gpus_per_item=gpus_per_item,
                        todo=len(todo),
                    )
                else:
                    runner = _InProcessRunner(items_dir)
                runner.command = tuple(command) if command is not None else None
                logger.info(
                    "%d item(s) to score (%d skipped) on %s with %d worker(s)",
                    len(todo),
                    skipped,
                    runner.name,
                    runner.workers,
                )
                for kind, item, payload in runner.run(todo):
                    if kind == "tick":
                        outputs.write()
                        continue
                    if kind == "retry":
                        counts["retried"] += 1
                        logger.warning(
                            "The worker scoring %s (%s) died (%s); trying again.",
                            item.label,
                            item.id,
                            payload,
                        )
                        progress("retry", item, payload)
                        continue
                    record = payload
                    outputs.add(record, resumed=False)
                    counts[record.status] += 1
                    outputs.write(now=runner.catalog_every_item)
                    progress(record.status, item, record.error)
        finally:
            if runner is not None:
                runner.close()
            outputs.write(final=True)  # what finished, also when stopped midway
        progress("finished")
        return BatchResult(
            out_dir=out,
            catalog_path=out / CATALOG_FILE,
            index_path=out / INDEX_FILE,
            total=len(items),
            done=counts["done"],
            failed=counts["failed"],
            skipped=skipped,
            retried=counts["retried"],
            failed_before=failed_before,
            runner=runner.name if runner is not None else ("ray" if use_ray else "in-process"),
            workers=runner.workers if runner is not None else 0,
            elapsed_s=time.monotonic() - started,
            worker_start_s=getattr(runner, "start_s", None),
            records={rid: rec for rid, (rec, _) in outputs.records.items()},
        )


__all__ = [
    "BatchItem",
    "BatchProgress",
    "BatchResult",
    "ItemRecord",
    "ItemWorker",
    "catalog_frame",
    "committed_record",
    "default_batch_dir",
    "item_id",
    "load_record",
    "read_manifest",
    "report_options",
    "run_batch",
]
