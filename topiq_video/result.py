"""The typed result of a scoring run, and its files.

A :class:`ScoreResult` is everything a run found: the :class:`Report` (inputs, model,
alignment, warnings, interruption, scenes, pooled statistics, worst frames, gallery), the
per-frame table and the gallery's JPEG images. ``report.json`` is the :class:`Report`
serialised; the per-frame rows live beside it in ``frames.parquet`` (named in the JSON), and
the gallery pictures in ``gallery/``. :meth:`ScoreResult.load` reads them back into an equal
result, so every renderer works from saved files as well as from a live run.

The JSON Schema of ``report.json`` is generated from these types (:func:`report_schema`);
the copy shipped in ``topiq_video/schemas/`` is checked against it by the tests.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from topiq_video.errors import InvalidInputError
from topiq_video.files import atomic_path, atomic_write_bytes, atomic_write_text
from topiq_video.pipeline.options import ScoreOptions
from topiq_video.video.probe import ColorInfo

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_ID = "topiq-video/report@2"
REPORT_FILE = "report.json"
FRAMES_FILE = "frames.parquet"
FRAMES_CSV_FILE = "frames.csv"
GALLERY_DIR = "gallery"
SCHEMA_RESOURCE = "report.schema.json"
MAX_REPORT_BYTES = 64 * 1024 * 1024  # report.json is untrusted input when rendered again

Nonfinite = Literal["+inf", "-inf", "nan"]
InterruptionKind = Literal["error", "interrupted", "terminated", "connection_lost"]
SceneSource = Literal["reference", "input", "file", "none"]
Conversion = Literal["equal rate", "sample-and-hold", "nearest", "mixed", "unknown"]

# Per-frame table columns that describe the frame rather than score it.
FRAME_COLUMNS = ("frame", "time", "ref_frame", "ref_time", "scene", "scene_score")


def nonfinite_flag(value: float) -> Nonfinite | None:
    """``"+inf"``, ``"-inf"`` or ``"nan"`` for a non-finite number, else None."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return None


# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class TimestampGap:
    """Frames missing from a constant-rate stream: its timestamps jump over them."""

    at_frame: int  # the first missing frame's number
    at_time: float  # seconds from the stream's start
    missing: int


@dataclass(frozen=True)
class DecodeSummary:
    """What decoding one input met."""

    frames_decoded: int = 0
    decode_errors: int = 0
    corrupt_frames: int = 0
    lost_frames: int = 0  # damaged or missing frames inside the stream, not a cut-off tail
    gaps: tuple[TimestampGap, ...] = ()  # the first few timestamp gaps
    truncated_at: int | None = None
    stopped_early: str | None = None
    error_messages: tuple[str, ...] = ()
    bytes_read: int | None = None


@dataclass(frozen=True)
class InputInfo:
    """One input as probed and decoded. ``path`` is fit to show (URL secrets masked) and
    ``metadata`` holds the container's tags: untrusted text."""

    path: str
    container: str
    codec: str
    width: int  # as displayed, after rotation
    height: int
    pix_fmt: str
    bit_depth: int
    fps: float | None
    fps_exact: str | None  # e.g. "30000/1001"
    time_base: str
    start_time: float
    duration: float | None
    frame_count: int | None
    color: ColorInfo
    rotation: int
    scan_type: str
    is_vfr: bool | None
    is_live: bool
    metadata: dict[str, str]
    decode: DecodeSummary = field(default_factory=DecodeSummary)


# ---------------------------------------------------------------------------- model, metrics


@dataclass(frozen=True)
class ModelInfo:
    """A TOPIQ checkpoint as it ran."""

    name: str
    mode: str
    train_set: str
    weights_file: str | None
    sha256: str | None
    weights_source: str | None
    precision: str
    device: str
    batch_size: int
    terms: str


@dataclass(frozen=True)
class MetricInfo:
    """What one metric column means."""

    name: str
    unit: str | None
    higher_is_better: bool
    range: tuple[float | None, float | None]
    description: str


# ---------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class OffsetSearch:
    """The offset search curve: cost per candidate offset (None: too little overlap)."""

    offsets: tuple[float, ...]
    costs: tuple[float | None, ...]


@dataclass(frozen=True)
class Pairing:
    """How the frames were paired. ``ref_skipped``: reference frames inside the overlap that
    no distorted frame showed. ``complete`` is False when a stream was not read to its end."""

    paired: int
    dist_before: int
    dist_after: int
    ref_before: int
    ref_after: int
    ref_skipped: int
    complete: bool
    conversion: Conversion = "unknown"
    conversion_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Alignment:
    """The offset between encode and source, and how their frames were paired."""

    offset_seconds: float
    offset_frames: float
    ref_frame_duration: float
    confidence: float
    method: str
    message: str
    search: OffsetSearch | None
    pairing: Pairing | None
    scaling: str | None
    width: int | None  # the common size frames were compared at
    height: int | None


# ---------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class MetricStats:
    """One metric pooled over finite values (None when there are none); non-finite values
    are counted, never replaced."""

    count: int
    mean: float | None
    harmonic_mean: float | None
    min: float | None
    p1: float | None
    p5: float | None
    p10: float | None
    median: float | None
    max: float | None
    std: float | None
    nan_count: int
    posinf_count: int
    neginf_count: int

    @property
    def nonfinite_count(self) -> int:
        return self.nan_count + self.posinf_count + self.neginf_count


@dataclass(frozen=True)
class WorstFrame:
    """One of the lowest-scoring frames of a metric."""

    frame: int
    time: float
    value: float | None
    value_nonfinite: Nonfinite | None = None

    @property
    def number(self) -> float:
        """The value as a float, non-finite ones included."""
        if self.value is not None:
            return self.value
        return {"+inf": math.inf, "-inf": -math.inf}.get(self.value_nonfinite or "", math.nan)


@dataclass(frozen=True)
class SceneResult:
    """A scene and its statistics. ``end_time`` is exclusive; ``frame_count`` counts the
    scored frames in it (not ``end_frame - start_frame + 1`` under sampling)."""

    index: int
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    frame_count: int
    stats: dict[str, MetricStats]


@dataclass(frozen=True)
class PerSecond:
    """Per whole second of the distorted stream: mean and min of finite values (None where a
    second has none) and the count of non-finite values, per metric."""

    second: tuple[int, ...] = ()
    mean: dict[str, tuple[float | None, ...]] = field(default_factory=dict)
    min: dict[str, tuple[float | None, ...]] = field(default_factory=dict)
    nonfinite: dict[str, tuple[int, ...]] = field(default_factory=dict)


# ---------------------------------------------------------------------------- run


@dataclass(frozen=True)
class Interruption:
    """Why a run ended before its input did."""

    kind: InterruptionKind
    message: str
    frames_scored: int
    at_time: float | None = None  # distorted-stream time of the last scored frame
    frames_expected: int | None = None


DIFF_GAIN = 4
DIFF_CAPTION = (
    f"|encode − reference| × {DIFF_GAIN}, mean over RGB, shown with the inferno colour map "
    "(black = identical, yellow = large difference)"
)


@dataclass(frozen=True)
class GalleryEntry:
    """A worst frame captured during the pass. Image fields name JPEG files relative to the
    report folder (under ``gallery/``)."""

    metric: str
    rank: int  # 1 = worst
    frame: int
    time: float
    value: float | None
    value_nonfinite: Nonfinite | None
    ref_frame: int | None
    ref_time: float | None
    dist_image: str
    ref_image: str | None
    diff_image: str | None
    width: int
    height: int

    def images(self) -> tuple[str, ...]:
        return tuple(p for p in (self.dist_image, self.ref_image, self.diff_image) if p)


@dataclass(frozen=True)
class EventSpan:
    """An alert episode of a monitored stream, on the report's time axis (seconds)."""

    rule: str
    start: float
    end: float | None  # None: still raised when the report was made
    value: float | None = None
    threshold: float | None = None
    evidence: str | None = None  # the bundle's folder, relative to the monitor's output


@dataclass(frozen=True)
class FramesTable:
    """Where the per-frame rows are: a Parquet file beside report.json."""

    file: str
    count: int
    columns: tuple[str, ...]


@dataclass(frozen=True)
class RunInfo:
    """How the run was made."""

    tool_version: str
    created: str  # ISO 8601, UTC
    command: tuple[str, ...] | None
    duration_s: float | None
    options: ScoreOptions


@dataclass(frozen=True)
class Report:
    """What ``report.json`` holds (its JSON Schema is generated from this type)."""

    run: RunInfo
    inputs: dict[str, InputInfo]  # "dist", and "ref" in full-reference mode
    models: tuple[ModelInfo, ...]
    metrics: tuple[MetricInfo, ...]
    alignment: Alignment | None
    warnings: tuple[str, ...]
    interruption: Interruption | None
    scene_source: SceneSource
    scenes: tuple[SceneResult, ...]
    summary: dict[str, MetricStats]
    worst_frames: dict[str, tuple[WorstFrame, ...]]
    worst_scenes: dict[str, tuple[int, ...]]
    per_second: PerSecond
    gallery: tuple[GalleryEntry, ...]
    frames: FramesTable
    credits: str | None = None
    events: tuple[EventSpan, ...] = ()
    schema: Literal["topiq-video/report@2"] = SCHEMA_ID

    @property
    def complete(self) -> bool:
        return self.interruption is None

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    @property
    def full_reference(self) -> bool:
        return "ref" in self.inputs


# ---------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class SavedReport:
    """The files a result was saved to."""

    out_dir: Path
    json_path: Path
    frames_path: Path
    csv_path: Path
    html_path: Path | None = None


@dataclass(frozen=True, eq=False)
class ScoreResult:
    """Everything one run found: the report, the per-frame table and the gallery images."""

    report: Report
    frames: pd.DataFrame = field(repr=False)
    images: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScoreResult):
            return NotImplemented
        return (
            self.report == other.report
            and _frames_equal(self.frames, other.frames)
            and dict(self.images) == dict(other.images)
        )

    __hash__ = None  # type: ignore[assignment]

    # Shortcuts to what people look at first.
    @property
    def summary(self) -> dict[str, MetricStats]:
        return self.report.summary

    @property
    def scenes(self) -> tuple[SceneResult, ...]:
        return self.report.scenes

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.report.warnings

    @property
    def interruption(self) -> Interruption | None:
        return self.report.interruption

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.report.metric_names

    def save(self, out_dir: str | os.PathLike[str], *, csv: bool = True) -> SavedReport:
        """Write ``frames.parquet`` (and ``frames.csv``), the gallery images, and last
        ``report.json``, each atomically: a folder with a report.json is complete."""
        from topiq_video.report.tables import write_frames_table

        out = Path(out_dir)
        frames_path = write_frames_table(self.frames, out / self.report.frames.file)
        csv_path = out / FRAMES_CSV_FILE
        if csv:
            write_frames_table(self.frames, csv_path)
        for name, data in self.images.items():
            atomic_write_bytes(out / _safe_relative(name), data)
        json_path = atomic_write_text(out / REPORT_FILE, dumps_report(self.report))
        return SavedReport(out, json_path, frames_path, csv_path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ScoreResult:
        """Read a saved result: ``report.json`` (or its folder), its frames and images."""
        import pandas as pd

        target = Path(path)
        json_path = target / REPORT_FILE if target.is_dir() else target
        report = load_report(json_path)
        folder = json_path.parent
        frames_file = folder / _safe_relative(report.frames.file)
        try:
            frames = pd.read_parquet(frames_file)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(
                f"Cannot read the per-frame table {os.fsdecode(frames_file)!r} named by "
                f"{os.fsdecode(json_path)!r}: {exc}. Keep report.json beside the files it names."
            ) from exc
        images: dict[str, bytes] = {}
        for entry in report.gallery:
            for name in entry.images():
                image = folder / _safe_relative(name)
                try:
                    images[name] = image.read_bytes()
                except OSError:
                    continue  # a missing picture is shown as missing, not an error
        return cls(report=report, frames=frames, images=images)


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    return all(a[c].astype("float64").equals(b[c].astype("float64")) for c in a.columns)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _safe_relative(name: str) -> Path:
    """A file name from report.json, refused unless it stays inside the report folder."""
    parts = PurePosixPath(name).parts
    if not parts or any(p in ("..", ".") or not _SAFE_NAME.match(p) for p in parts):
        raise InvalidInputError(
            f"report.json names the file {name!r}, which is not a plain relative path inside "
            "the report folder; the report may have been tampered with."
        )
    return Path(*parts)


# ---------------------------------------------------------------------------- JSON


@lru_cache(maxsize=1)
def _adapter() -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(Report)


def report_to_jsonable(report: Report) -> dict[str, Any]:
    """The report as plain JSON types (strict: no NaN or Infinity)."""
    return _adapter().dump_python(report, mode="json")


def dumps_report(report: Report) -> str:
    """``report.json``'s text."""
    data = report_to_jsonable(report)
    return json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def load_report(path: str | os.PathLike[str]) -> Report:
    """Read and validate ``report.json`` (untrusted: sizes and types are checked)."""
    from pydantic import ValidationError

    json_path = Path(path)
    try:
        size = json_path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise InvalidInputError(
                f"{os.fsdecode(json_path)!r} is {size / 2**20:.0f} MiB, more than a report.json "
                f"can be ({MAX_REPORT_BYTES // 2**20} MiB). Pass a report.json written by "
                "topiq-video."
            )
        raw = json_path.read_bytes()
    except OSError as exc:
        from topiq_video.files import describe_os_error

        raise InvalidInputError(
            f"Cannot read {os.fsdecode(json_path)!r}: {describe_os_error(exc)}. Pass the "
            "report.json of a topiq-video report (or its folder)."
        ) from exc
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(
            f"{os.fsdecode(json_path)!r} is not JSON ({exc}). Pass the report.json of a "
            "topiq-video report."
        ) from exc
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema != SCHEMA_ID:
        raise InvalidInputError(
            f"{os.fsdecode(json_path)!r} is not a {SCHEMA_ID} document (its schema is "
            f"{schema!r}). Make the report again with this version of topiq-video."
        )
    try:
        return _adapter().validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInputError(
            f"{os.fsdecode(json_path)!r} does not match {SCHEMA_ID} ({exc.error_count()} "
            f"problem(s); first at {where or 'top level'}: {first.get('msg')}). Make the report "
            "again with this version of topiq-video."
        ) from exc


def report_schema() -> dict[str, Any]:
    """The JSON Schema of ``report.json``, generated from :class:`Report`."""
    schema = _adapter().json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    return schema


def shipped_schema() -> dict[str, Any]:
    """The schema file shipped with the package (tests keep it equal to :func:`report_schema`)."""
    from importlib import resources

    text = resources.files("topiq_video.schemas").joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    return json.loads(text)


def write_schema(path: str | os.PathLike[str]) -> Path:
    """Write the generated schema (used to refresh the shipped copy)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report_schema(), indent=1) + "\n", encoding="utf-8")
    return Path(path)


def field_names(cls: type) -> tuple[str, ...]:
    """The field names of one of the result dataclasses (for table writers)."""
    return tuple(f.name for f in fields(cls))
