"""Command line interface: parse arguments, call the library, print results.

Errors: any :class:`TopiqVideoError` raised by a command is printed once as
``Error: <message>`` on stderr with its exit code and no traceback (set
``TOPIQ_VIDEO_DEBUG=1`` to get the traceback). This lives in :class:`TopiqGroup`, so new
commands (``score``, ``report``...) get it by being added to :data:`cli`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from topiq_video import __version__
from topiq_video.errors import InvalidInputError, TopiqVideoError, WeightsError
from topiq_video.model.registry import (
    DEFAULT_FR_MODEL,
    DEFAULT_NR_MODEL,
    WEIGHTS_TERMS,
    CheckpointInfo,
    get_checkpoint,
    list_checkpoints,
)
from topiq_video.model.weights import (
    ENV_CACHE,
    ENV_WEIGHTS_URL,
    STATE_CORRUPT,
    STATE_MISSING,
    STATE_UNVERIFIED,
    cache_status,
    download_weights,
    verify_cached,
    weights_dir,
)
from topiq_video.pipeline.options import (
    DEFAULT_EVERY,
    DEFAULT_MIN_SCENE_LEN,
    DEFAULT_OFFSET,
    DEFAULT_SCALE_TO,
    DEFAULT_SCENE_THRESHOLD,
    FrameSelection,
    ScoreOptions,
)
from topiq_video.pipeline.run import FrameScores, ScoringRun, frames_table
from topiq_video.pooling import DEFAULT_WORST_N
from topiq_video.report.build import (
    DEFAULT_GALLERY_FRAMES,
    DEFAULT_REPORTS_DIR,
    ReportResult,
    write_report,
)
from topiq_video.report.tables import check_table_path, frames_csv_text, write_frames_table
from topiq_video.scoring import (
    DEFAULT_BATCH_SIZE_CPU,
    DEFAULT_BATCH_SIZE_CUDA,
    DEFAULT_PRECISION_CPU,
    DEFAULT_PRECISION_CUDA,
    PRECISIONS,
)
from topiq_video.video.align import DEFAULT_MAX_OFFSET

ENV_DEBUG = "TOPIQ_VIDEO_DEBUG"
_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "topiq-video-cli"


def debug_enabled() -> bool:
    return os.environ.get(ENV_DEBUG, "").strip().lower() in ("1", "true", "yes", "on")


def configure_logging(verbosity: int) -> None:
    """Route the package's log records to stderr: WARNING by default, -v INFO, -vv DEBUG."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    pkg_logger = logging.getLogger("topiq_video")
    pkg_logger.setLevel(level)
    for handler in pkg_logger.handlers:
        if handler.get_name() == _HANDLER_NAME:
            handler.setStream(sys.stderr)  # CliRunner swaps sys.stderr between invocations
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    pkg_logger.addHandler(handler)


class TopiqGroup(click.Group):
    """Click group that turns library errors into one clean ``Error:`` line (the one place)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except TopiqVideoError as exc:
            if debug_enabled():
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=TopiqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="topiq-video")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """TOPIQ quality scores for video files and live streams.

    \b
    Environment:
      TOPIQ_VIDEO_CACHE        cache folder (weights are kept in its 'weights' subfolder)
      TOPIQ_VIDEO_WEIGHTS_URL  mirror to download checkpoints from (http(s):// or file://)
      TOPIQ_VIDEO_DEBUG=1      show tracebacks instead of one-line errors
    """
    configure_logging(verbose)


@cli.command("models")
def models_cmd() -> None:
    """List the available TOPIQ checkpoints and whether each is cached."""
    rows = [("NAME", "MODE", "TRAIN SET", "RESIZE", "SCORE RANGE", "CACHED")]
    for info in list_checkpoints():
        low, high = info.score_range
        direction = "higher=better" if info.higher_is_better else "lower=better"
        state = cache_status(info).state
        cached = {STATE_MISSING: "no", STATE_UNVERIFIED: "unverified"}.get(state, "yes")
        rows.append(
            (
                info.name,
                info.mode.upper(),
                info.train_set,
                info.resize.describe(),
                f"~{low:g}..~{high:g} ({direction})",
                cached,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    click.echo(f"\nCache: {weights_dir()}  (set {ENV_CACHE} to move it)")
    click.echo(f"\nNote: {WEIGHTS_TERMS}")


@cli.group("weights", cls=TopiqGroup)
def weights_group() -> None:
    """Download and verify cached checkpoints."""


def _selected(names: tuple[str, ...]) -> list[CheckpointInfo]:
    return [get_checkpoint(n) for n in names] if names else list(list_checkpoints())


@weights_group.command("download")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--force", is_flag=True, help="Download again even if already cached.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar (default: only when stderr is a terminal).",
)
def weights_download_cmd(names: tuple[str, ...], force: bool, progress: bool | None) -> None:
    """Download checkpoints into the cache (default: all models).

    Set TOPIQ_VIDEO_WEIGHTS_URL to download from a mirror instead of the published URLs.
    """
    failures: list[str] = []
    for info in _selected(names):
        try:
            resolved = download_weights(info, force=force, progress=progress)
        except WeightsError as exc:
            failures.append(str(exc))
            continue
        verb = "downloaded" if resolved.source == "download" else "already cached"
        click.echo(f"{info.name}: {verb} {resolved.path} (sha256 {resolved.sha256})")
    if failures:
        raise WeightsError("\n\n".join(failures))


@weights_group.command("verify")
@click.argument("names", nargs=-1, metavar="[NAME]...")
def weights_verify_cmd(names: tuple[str, ...]) -> None:
    """Re-hash cached checkpoints against their recorded sha256 (default: all models)."""
    corrupt = []
    for info in _selected(names):
        status = verify_cached(info)
        detail = f" ({status.detail})" if status.detail else ""
        click.echo(f"{info.name}: {status.state}  {status.path}{detail}")
        if status.state == STATE_CORRUPT:
            corrupt.append(info.name)
    if corrupt:
        raise WeightsError(
            f"{len(corrupt)} cached checkpoint(s) are corrupt: {', '.join(corrupt)}. Re-download "
            f"with `topiq-video weights download --force {' '.join(corrupt)}`"
            + (
                f" (or set {ENV_WEIGHTS_URL} to a mirror)."
                if not os.environ.get(ENV_WEIGHTS_URL)
                else "."
            )
        )


def _metric_list(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def scoring_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by `score` and `report`; defaults come from the library."""
    options = [
        click.option(
            "--ref",
            type=str,
            default=None,
            help="Reference (source) video or URL: full-reference mode.",
        ),
        click.option(
            "--model",
            default=None,
            help=f"TOPIQ checkpoint (see `topiq-video models`). Default: {DEFAULT_FR_MODEL} "
            f"with --ref, {DEFAULT_NR_MODEL} without.",
        ),
        click.option(
            "--metrics",
            default=None,
            help="Comma-separated metrics: TOPIQ checkpoint names ('topiq' = --model), "
            "psnr_y, ssim_y. Default: the model, plus psnr_y,ssim_y with --ref. "
            "A list without a TOPIQ model needs no weights.",
        ),
        click.option("--weights", type=click.Path(dir_okay=False), help="Local checkpoint file."),
        click.option(
            "--device", default=None, help="cpu, cuda or cuda:N. Default: cuda if available."
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=None,
            help=f"Frames per batch. Default: {DEFAULT_BATCH_SIZE_CUDA} on CUDA, "
            f"{DEFAULT_BATCH_SIZE_CPU} on CPU.",
        ),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            default=None,
            help=f"Default: {DEFAULT_PRECISION_CUDA} on CUDA, {DEFAULT_PRECISION_CPU} on CPU.",
        ),
        click.option(
            "--offset",
            default=DEFAULT_OFFSET,
            show_default=True,
            help="Seconds to add to distorted times to find the reference instant, or 'auto'.",
        ),
        click.option(
            "--max-offset",
            type=float,
            default=DEFAULT_MAX_OFFSET,
            show_default=True,
            help="Largest offset (seconds, either way) that --offset auto searches.",
        ),
        click.option(
            "--scale-to",
            default=DEFAULT_SCALE_TO,
            show_default=True,
            help="Common size for FR comparison: ref, dist or WIDTHxHEIGHT (bicubic).",
        ),
        click.option("--start", type=float, default=None, help="Start at this second of DIST."),
        click.option("--duration", type=float, default=None, help="Score this many seconds."),
        click.option(
            "--every",
            type=click.IntRange(min=1),
            default=DEFAULT_EVERY,
            show_default=True,
            help="Score every Nth frame.",
        ),
        click.option(
            "--sample-fps", type=float, default=None, help="Score at most F frames per second."
        ),
        click.option(
            "--max-frames",
            type=click.IntRange(min=1),
            default=None,
            help="Stop after N scored frames.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _score_options(kwargs: dict[str, Any], **extra: Any) -> ScoreOptions:
    selection = FrameSelection(
        start=kwargs["start"],
        duration=kwargs["duration"],
        every=kwargs["every"],
        sample_fps=kwargs["sample_fps"],
        max_frames=kwargs["max_frames"],
    )
    return ScoreOptions(
        model=kwargs["model"],
        metrics=_metric_list(kwargs["metrics"]),
        device=kwargs["device"],
        batch_size=kwargs["batch_size"],
        precision=kwargs["precision"],
        weights=kwargs["weights"],
        offset=kwargs["offset"],
        max_offset=kwargs["max_offset"],
        scale_to=kwargs["scale_to"],
        selection=selection,
        **extra,
    )


def run_with_progress(
    run: ScoringRun, label: str
) -> tuple[list[FrameScores], BaseException | None]:
    """Iterate a scoring run under a progress bar; keep the rows even if it stops."""
    rows: list[FrameScores] = []
    failure: BaseException | None = None
    # tqdm disables itself when stderr is not a terminal (disable=None): quiet when piped.
    with tqdm(
        total=run.expected_frames, unit="frame", desc=label, disable=None, dynamic_ncols=True
    ) as bar:
        try:
            for row in run:
                rows.append(row)
                bar.update(1)
        except (TopiqVideoError, KeyboardInterrupt) as exc:
            failure = exc
    return rows, failure


def _raise_after_partial(failure: BaseException | None, written: str | None) -> None:
    if failure is None:
        return
    kept = f" The frames scored before it were written to {written}." if written else ""
    if isinstance(failure, KeyboardInterrupt):
        click.echo(f"Interrupted.{kept}", err=True)
        raise SystemExit(130)
    if kept:
        raise type(failure)(f"{failure}{kept}") from failure
    raise failure


@cli.command("score")
@click.argument("dist")
@scoring_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Per-frame table: .csv, .parquet or .json. Default: CSV on standard output.",
)
def score_cmd(dist: str, output: str | None, **kwargs: Any) -> None:
    """Score every (selected) frame of DIST; write the per-frame table.

    DIST and --ref are files or anything FFmpeg opens by URL (rtsp://, udp://, http(s)://,
    HLS). Columns: frame, time, [ref_frame, ref_time], then one per metric.
    """
    if output is not None:
        check_table_path(output)
    run = ScoringRun(dist, kwargs["ref"], _score_options(kwargs))
    rows, failure = run_with_progress(run, "score")
    table = frames_table(rows, run.metrics, kwargs["ref"] is not None)
    written = None
    if rows or failure is None:
        if output is None:
            click.echo(frames_csv_text(table), nl=False)
            written = "standard output"
        else:
            written = str(write_frames_table(table, output))
    _raise_after_partial(failure, written)
    _echo_run_summary(run, table, written if output else None)


def _echo_run_summary(run: ScoringRun, table: Any, written: str | None) -> None:
    alignment = run.alignment
    if alignment is not None:
        est = alignment.offset
        click.echo(
            f"Alignment: offset {est.offset_seconds:+.3f} s ({est.offset_frames} reference "
            f"frames, {est.method}, confidence {est.confidence:.2f}); "
            f"{len(table)} frames paired",
            err=True,
        )
        pairing = alignment.pairing
        if pairing is not None and (pairing.unmatched_dist or pairing.unmatched_ref):
            click.echo(
                f"Unmatched: {pairing.unmatched_dist} distorted and {pairing.unmatched_ref} "
                "reference frames outside the common overlap (not scored)"
                + ("" if pairing.complete else ", counted up to where the run stopped"),
                err=True,
            )
    for role, stats in run.decode_stats.items():
        damaged = (
            stats.get("decode_errors", 0)
            + stats.get("corrupt_frames", 0)
            + stats.get("lost_frames", 0)
        )
        if damaged:
            label = "reference" if role == "ref" else "distorted input"
            click.echo(f"Decode: {damaged} damaged packet(s)/frame(s) in the {label}", err=True)
    for name in run.metrics:
        values = table[name]
        finite = values[np.isfinite(values)]
        mean = f"{finite.mean():.4f}" if len(finite) else _all_nonfinite(values)
        extra = f", {len(values) - len(finite)} non-finite" if len(finite) != len(values) else ""
        click.echo(f"{name}: mean {mean} over {len(values)} frames{extra}", err=True)
    if written:
        click.echo(f"Wrote {written}", err=True)


@cli.command("report")
@click.argument("dist")
@scoring_options
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False),
    default=None,
    help=f"Folder for report.html, report.json and frames.csv. Default: "
    f"{DEFAULT_REPORTS_DIR}/<DIST stem>/",
)
@click.option(
    "--scenes",
    "scenes_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Import cuts (PySceneDetect CSV, or one time/frame a line) instead of detecting them.",
)
@click.option("--no-scenes", is_flag=True, help="Treat the whole video as one scene.")
@click.option(
    "--scene-threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_SCENE_THRESHOLD,
    show_default=True,
    help="Content change (HSV, 0-255 scale) that makes a cut; raise it for fewer cuts.",
)
@click.option(
    "--min-scene-len",
    type=click.IntRange(min=0),
    default=DEFAULT_MIN_SCENE_LEN,
    show_default=True,
    help="Shortest scene, in frames.",
)
@click.option(
    "--worst",
    type=click.IntRange(min=0),
    default=DEFAULT_WORST_N,
    show_default=True,
    help="Worst frames listed per metric.",
)
@click.option(
    "--gallery",
    type=click.IntRange(min=0),
    default=DEFAULT_GALLERY_FRAMES,
    show_default=True,
    help="Worst frames shown as pictures per metric.",
)
def report_cmd(
    dist: str,
    output_dir: str | None,
    scenes_file: str | None,
    no_scenes: bool,
    scene_threshold: float,
    min_scene_len: int,
    worst: int,
    gallery: int,
    **kwargs: Any,
) -> None:
    """Score DIST (against --ref) and write an HTML/JSON/CSV report with scenes and pooling.

    Scene cuts come from the reference in full-reference mode (the source's cuts), from
    DIST otherwise.
    """
    if scenes_file and no_scenes:
        raise InvalidInputError("--scenes FILE and --no-scenes contradict each other: pick one.")
    started = time.monotonic()
    options = _score_options(
        kwargs,
        detect_scenes=not (no_scenes or scenes_file),
        scene_threshold=scene_threshold,
        min_scene_len=min_scene_len,
    )
    run = ScoringRun(dist, kwargs["ref"], options)
    rows, failure = run_with_progress(run, "report")
    result = None
    if rows:
        result = write_report(
            run,
            rows,
            output_dir,
            scenes_file=scenes_file,
            worst_n=worst,
            gallery_per_metric=gallery,
            command=["topiq-video", *sys.argv[1:]],
            started=started,
            complete=failure is None,
        )
    _raise_after_partial(failure, str(result.out_dir) if result else None)
    if result is None:  # no failure yet no rows: say why rather than write an empty report
        raise InvalidInputError(
            "No frame was scored: check the frame selection (--start/--duration) and the "
            "alignment (--offset)."
        )
    _echo_report_summary(run, result)


def _echo_report_summary(run: ScoringRun, result: ReportResult) -> None:
    alignment = run.alignment
    if alignment is not None:
        est = alignment.offset
        click.echo(
            f"Alignment: offset {est.offset_seconds:+.3f} s ({est.offset_frames} reference "
            f"frames, confidence {est.confidence:.2f})"
        )
    header = ("METRIC", "MEAN", "HARMONIC", "P1", "P5", "MIN", "NON-FINITE", "WORST SCENE")
    rows = [header]
    for name in run.metrics:
        stats = result.pooled.summary[name]
        worst_scene = result.pooled.worst_scenes.get(name) or []
        nonfinite = stats.nan_count + stats.posinf_count + stats.neginf_count
        rows.append(
            (
                name,
                _fmt(stats.mean) if stats.count else _all_nonfinite(result.frames[name]),
                _fmt(stats.harmonic_mean),
                _fmt(stats.p1),
                _fmt(stats.p5),
                _fmt(stats.min),
                str(nonfinite),
                str(worst_scene[0]) if worst_scene else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    click.echo(
        f"{len(result.frames)} frames, {len(result.pooled.scenes)} scene(s). Wrote "
        f"{result.html_path}, {result.json_path.name}, {result.csv_path.name}"
    )


def _all_nonfinite(values: Any) -> str:
    """What to print for a mean when no value is finite (e.g. PSNR of identical frames)."""
    kinds = {"+inf" if v > 0 else "-inf" if v < 0 else "nan" for v in values if not np.isfinite(v)}
    return "/".join(sorted(kinds)) or "n/a"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="topiq-video")


if __name__ == "__main__":
    main()
