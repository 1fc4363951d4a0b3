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

from topiq_video.bdrate import BDResult
from topiq_video.errors import InvalidInputError
from topiq_video.files import atomic_path, atomic_write_bytes, atomic_write_text
from topiq_video.pipeline.options import ScoreOptions
from topiq_video.stats import Difference
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
    shifted_harmonic_mean: float | None = None  # VMAF's own pooling (VMAF metrics only)

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
class DisagreeFrame:
    """A frame two metrics rank far apart. A percentile is the share of the compared frames
    the frame beats on that metric (0 = the worst frame, 1 = the best)."""

    frame: int
    time: float
    ref_frame: int | None
    ref_time: float | None
    scene: int | None
    value: float | None  # the first metric's value (TOPIQ)
    value_nonfinite: Nonfinite | None
    other_value: float | None  # the second metric's (VMAF, or PSNR)
    other_value_nonfinite: Nonfinite | None
    percentile: float
    other_percentile: float
    dist_image: str | None = None
    ref_image: str | None = None
    diff_image: str | None = None

    @property
    def gap(self) -> float:
        """Positive: the first metric thinks better of the frame than the second."""
        return self.percentile - self.other_percentile

    def images(self) -> tuple[str, ...]:
        return tuple(p for p in (self.dist_image, self.ref_image, self.diff_image) if p)


@dataclass(frozen=True)
class DisagreeScene:
    """A scene two metrics rank far apart (rank 1 = the worst scene by that metric), with
    its frame where they disagree most."""

    scene: int
    start_time: float
    end_time: float
    mean: float | None
    other_mean: float | None
    rank: int
    other_rank: int
    frame: DisagreeFrame | None


@dataclass(frozen=True)
class Agreement:
    """How a TOPIQ metric and another (VMAF, or PSNR) agree over one video: correlations of
    their per-frame values and of their per-scene means, and where they disagree most.
    ``pictures_note`` says why the frames have no pictures, when they have none."""

    metric: str
    other: str
    frames_compared: int
    spearman: float | None
    pearson: float | None
    scenes_compared: int
    scene_spearman: float | None
    frames: tuple[DisagreeFrame, ...]
    scenes: tuple[DisagreeScene, ...]
    pictures_note: str | None = None

    def images(self) -> tuple[str, ...]:
        shown = [*self.frames, *(s.frame for s in self.scenes if s.frame is not None)]
        return tuple(dict.fromkeys(name for f in shown for name in f.images()))


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
    agreement: Agreement | None = None
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
        return _save(self, Path(out_dir), REPORT_FILE, dumps_report(self.report), csv=csv)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ScoreResult:
        """Read a saved result: ``report.json`` (or its folder), its frames and images."""
        json_path, report = _locate(path, REPORT_FILE, load_report)
        pictures = [*report.gallery, *([report.agreement] if report.agreement else [])]
        frames, images = _load_files(json_path, report.frames.file, pictures)
        return cls(report=report, frames=frames, images=images)


def _save(result: Any, out: Path, json_name: str, text: str, *, csv: bool) -> SavedReport:
    """The frames, the pictures, then the document (the commit marker), all atomically."""
    from topiq_video.report.tables import write_frames_table

    frames_path = write_frames_table(result.frames, out / result.report.frames.file)
    csv_path = out / FRAMES_CSV_FILE
    if csv:
        write_frames_table(result.frames, csv_path)
    for name, data in result.images.items():
        atomic_write_bytes(out / _safe_relative(name), data)
    json_path = atomic_write_text(out / json_name, text)
    return SavedReport(out, json_path, frames_path, csv_path)


def _locate(path: str | os.PathLike[str], json_name: str, loader: Any) -> tuple[Path, Any]:
    target = Path(path)
    json_path = target / json_name if target.is_dir() else target
    return json_path, loader(json_path)


def _load_files(
    json_path: Path, frames_name: str, gallery: Any
) -> tuple[pd.DataFrame, dict[str, bytes]]:
    """The frames table and the pictures a saved document names (inside its folder)."""
    import pandas as pd

    folder = json_path.parent
    frames_file = folder / _safe_relative(frames_name)
    try:
        frames = pd.read_parquet(frames_file)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"Cannot read the per-frame table {os.fsdecode(frames_file)!r} named by "
            f"{os.fsdecode(json_path)!r}: {exc}. Keep the document beside the files it names."
        ) from exc
    images: dict[str, bytes] = {}
    for entry in gallery:
        for name in entry.images():
            try:
                images[name] = (folder / _safe_relative(name)).read_bytes()
            except OSError:
                continue  # a missing picture is shown as missing, not an error
    return frames, images


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    import pandas as pd

    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    for column in a.columns:
        x, y = a[column], b[column]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            x, y = x.astype("float64"), y.astype("float64")  # nullable ints load as ints
        else:
            x, y = x.astype(str), y.astype(str)
        if not x.reset_index(drop=True).equals(y.reset_index(drop=True)):
            return False
    return True


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
    return _load_document(Path(path), SCHEMA_ID, _adapter())


def _load_document(json_path: Path, schema_id: str, adapter: Any) -> Any:
    from pydantic import ValidationError

    name = json_path.name
    try:
        size = json_path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise InvalidInputError(
                f"{os.fsdecode(json_path)!r} is {size / 2**20:.0f} MiB, more than a {name} can "
                f"be ({MAX_REPORT_BYTES // 2**20} MiB). Pass a {name} written by topiq-video."
            )
        raw = json_path.read_bytes()
    except OSError as exc:
        from topiq_video.files import describe_os_error

        raise InvalidInputError(
            f"Cannot read {os.fsdecode(json_path)!r}: {describe_os_error(exc)}. Pass the "
            f"{name} of a topiq-video result (or its folder)."
        ) from exc
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(
            f"{os.fsdecode(json_path)!r} is not JSON ({exc}). Pass the {name} of a "
            "topiq-video result."
        ) from exc
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema != schema_id:
        raise InvalidInputError(
            f"{os.fsdecode(json_path)!r} is not a {schema_id} document (its schema is "
            f"{schema!r}). Make it again with this version of topiq-video."
        )
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInputError(
            f"{os.fsdecode(json_path)!r} does not match {schema_id} ({exc.error_count()} "
            f"problem(s); first at {where or 'top level'}: {first.get('msg')}). Make it "
            "again with this version of topiq-video."
        ) from exc


def report_schema() -> dict[str, Any]:
    """The JSON Schema of ``report.json``, generated from :class:`Report`."""
    schema = _adapter().json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    return schema


def shipped_schema(resource: str = SCHEMA_RESOURCE) -> dict[str, Any]:
    """A schema file shipped with the package (tests keep each equal to its generator)."""
    from importlib import resources

    text = resources.files("topiq_video.schemas").joinpath(resource).read_text("utf-8")
    return json.loads(text)


def write_schemas(folder: str | os.PathLike[str]) -> list[Path]:
    """Write the generated schemas (to refresh the shipped copies)::

    python -c "from topiq_video.result import write_schemas; write_schemas('topiq_video/schemas')"
    """
    written = []
    for name, schema in (
        (SCHEMA_RESOURCE, report_schema()),
        (COMPARE_SCHEMA_RESOURCE, compare_schema()),
    ):
        with atomic_path(Path(folder) / name) as tmp:
            tmp.write_text(json.dumps(schema, indent=1) + "\n", encoding="utf-8")
        written.append(Path(folder) / name)
    return written


def field_names(cls: type) -> tuple[str, ...]:
    """The field names of one of the result dataclasses (for table writers)."""
    return tuple(f.name for f in fields(cls))


# ---------------------------------------------------------------------------- compare

COMPARE_SCHEMA_ID = "topiq-video/compare@1"
COMPARE_FILE = "compare.json"
COMPARE_SCHEMA_RESOURCE = "compare.schema.json"


@dataclass(frozen=True)
class SceneSpan:
    """A scene of the source (its frame numbers and times), shared by every encode."""

    index: int
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float


@dataclass(frozen=True)
class EncodeResult:
    """One encode: what it is, how it aligned, and its statistics per scene of the source.
    ``error`` says why an encode could not be (fully) scored; what it scored is kept."""

    label: str
    path: str
    encoder: str | None
    rate: float | None  # the setting it was made at (CRF, QP, target), from the manifest
    error: str | None
    input: InputInfo | None
    file_size: int | None
    bitrate: float | None  # measured video bits per second
    duration: float | None
    alignment: Alignment | None
    warnings: tuple[str, ...]
    frames_scored: int
    summary: dict[str, MetricStats]
    scenes: tuple[SceneResult, ...]


@dataclass(frozen=True)
class SceneDifference:
    """An encode's difference from the baseline in one scene (B - A, higher is better)."""

    scene: int
    difference: Difference


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one encode against the baseline: over all frames and per scene."""

    metric: str
    overall: Difference
    scenes: tuple[SceneDifference, ...]
    won: int
    tied: int
    lost: int
    no_data: int


@dataclass(frozen=True)
class EncodeComparison:
    label: str
    baseline: str
    metrics: tuple[MetricComparison, ...]


@dataclass(frozen=True)
class RDPoint:
    """An encode on the rate-quality plane: its measured bitrate and pooled metrics
    (``values[metric][stat]``, stat "mean" or "p5")."""

    label: str
    encoder: str | None
    rate: float | None
    bitrate: float | None
    values: dict[str, dict[str, float | None]]


@dataclass(frozen=True)
class BDEntry:
    """An encoder against the baseline's encoder on one metric and statistic."""

    encoder: str
    baseline: str
    metric: str
    stat: str
    bd_rate: BDResult
    bd_metric: BDResult
    scenes: tuple[tuple[int, float | None], ...] = ()  # per-scene BD-rate (scene, percent)


@dataclass(frozen=True)
class CompareGalleryEntry:
    """A source frame where an encode and the baseline differ most on a metric: the
    source, both encodes and their difference, captured during the pass."""

    label: str
    baseline: str
    metric: str
    rank: int
    ref_frame: int
    time: float  # source time
    scene: int | None
    value: float | None  # the encode's value
    baseline_value: float | None
    images: dict[str, str]  # role ("source", "baseline", "encode", "diff") -> file

    def files(self) -> tuple[str, ...]:
        return tuple(self.images.values())


@dataclass(frozen=True)
class CompareReport:
    """What ``compare.json`` holds (its JSON Schema is generated from this type)."""

    run: RunInfo
    source: InputInfo
    models: tuple[ModelInfo, ...]
    metrics: tuple[MetricInfo, ...]
    baseline: str
    encodes: tuple[EncodeResult, ...]
    scene_source: SceneSource
    scenes: tuple[SceneSpan, ...]
    comparisons: tuple[EncodeComparison, ...]
    rd: tuple[RDPoint, ...]
    bd: tuple[BDEntry, ...]
    gallery: tuple[CompareGalleryEntry, ...]
    warnings: tuple[str, ...]
    interruption: Interruption | None
    frames: FramesTable
    agreements: dict[str, Agreement] = field(default_factory=dict)  # per encode label
    schema: Literal["topiq-video/compare@1"] = COMPARE_SCHEMA_ID

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def encode(self, label: str) -> EncodeResult:
        return next(e for e in self.encodes if e.label == label)


@dataclass(frozen=True, eq=False)
class CompareResult:
    """A comparison: the report, the long per-frame table (one row per encode and frame:
    ``encode``, ``frame``, ``time``, ``ref_frame``, ``ref_time``, ``scene``, metrics) and
    the gallery's pictures."""

    report: CompareReport
    frames: pd.DataFrame = field(repr=False)
    images: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompareResult):
            return NotImplemented
        return (
            self.report == other.report
            and _frames_equal(self.frames, other.frames)
            and dict(self.images) == dict(other.images)
        )

    __hash__ = None  # type: ignore[assignment]

    def table(self, metric: str) -> pd.DataFrame:
        """One metric as a wide table: a row per source frame, a column per encode."""
        return self.frames.pivot_table(
            index="ref_frame", columns="encode", values=metric, aggfunc="mean"
        )

    def save(self, out_dir: str | os.PathLike[str], *, csv: bool = False) -> SavedReport:
        """Write ``frames.parquet``, the gallery, and last ``compare.json``, atomically."""
        return _save(self, Path(out_dir), COMPARE_FILE, dumps_compare(self.report), csv=csv)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CompareResult:
        json_path, report = _locate(path, COMPARE_FILE, load_compare)
        gallery = [_Files(e.files()) for e in report.gallery]
        frames, images = _load_files(
            json_path, report.frames.file, [*gallery, *report.agreements.values()]
        )
        return cls(report=report, frames=frames, images=images)


@dataclass(frozen=True)
class _Files:
    names: tuple[str, ...]

    def images(self) -> tuple[str, ...]:
        return self.names


@lru_cache(maxsize=1)
def _compare_adapter() -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(CompareReport)


def dumps_compare(report: CompareReport) -> str:
    data = _compare_adapter().dump_python(report, mode="json")
    return json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def load_compare(path: str | os.PathLike[str]) -> CompareReport:
    """Read and validate ``compare.json`` (untrusted: sizes and types are checked)."""
    return _load_document(Path(path), COMPARE_SCHEMA_ID, _compare_adapter())


def compare_schema() -> dict[str, Any]:
    """The JSON Schema of ``compare.json``, generated from :class:`CompareReport`."""
    schema = _compare_adapter().json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = COMPARE_SCHEMA_ID
    return schema
