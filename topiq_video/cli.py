"""Command line interface: parse arguments, call the library, print results.

Errors: anything a command raises (a :class:`TopiqVideoError`, an OS or memory error, a
decoder error) is printed once as ``Error: <message>`` on stderr with a non-zero exit status
and no traceback (``TOPIQ_VIDEO_DEBUG=1`` shows it). Ctrl-C and SIGTERM keep what was
scored, write it, and exit with 130 and 143. This module imports nothing heavy at the top,
so ``--help`` and argument errors answer at once; the library loads when work starts.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

import click

from topiq_video import __version__
from topiq_video.batch import DEFAULT_CPUS_PER_ITEM, DEFAULT_GPUS_PER_ITEM, RAY_EXTRA
from topiq_video.errors import InvalidInputError, Terminated, TopiqVideoError, WeightsError
from topiq_video.model.registry import (
    DEFAULT_FR_MODEL,
    DEFAULT_NR_MODEL,
    WEIGHTS_TERMS,
    CheckpointInfo,
    get_checkpoint,
    list_checkpoints,
)
from topiq_video.monitor.config import (
    DEFAULT_FREEZE_SECONDS,
    DEFAULT_LISTEN,
    DEFAULT_MONITOR_MODEL,
    DEFAULT_OUT_DIR,
    DEFAULT_RTSP_TRANSPORT,
    DEFAULT_SCORE_FPS,
    DEFAULT_STALL_SECONDS,
    RTSP_TRANSPORTS,
)
from topiq_video.pipeline.options import (
    DEFAULT_BATCH_SIZE_CPU,
    DEFAULT_BATCH_SIZE_CUDA,
    DEFAULT_COMPARE_GALLERY,
    DEFAULT_EVERY,
    DEFAULT_GALLERY_FRAMES,
    DEFAULT_MAX_OFFSET,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SCENE_LEN,
    DEFAULT_OFFSET,
    DEFAULT_PRECISION_CPU,
    DEFAULT_PRECISION_CUDA,
    DEFAULT_SCALE_TO,
    DEFAULT_SCENE_THRESHOLD,
    DEFAULT_TIMEOUT,
    DEFAULT_VMAF_MODEL,
    DEFAULT_WORST_N,
    PRECISIONS,
    VMAF_MODEL_NAMES,
    FrameSelection,
    ScoreOptions,
)

if TYPE_CHECKING:
    from topiq_video.pipeline.run import ScoringRun
    from topiq_video.result import ScoreResult

ENV_DEBUG = "TOPIQ_VIDEO_DEBUG"
EXIT_INCOMPLETE = 3  # a live source was lost: the output covers only part of the run
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
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


def error_message(exc: BaseException) -> str | None:
    """One clean line for errors a user can act on; None for programming errors."""
    if isinstance(exc, TopiqVideoError):
        return str(exc)
    if isinstance(exc, (OSError, MemoryError)) or type(exc).__module__.startswith("av"):
        from topiq_video.pipeline.collect import failure_message

        return failure_message(exc)
    return None


class TopiqGroup(click.Group):
    """Click group that turns errors into one clean ``Error:`` line (the one place)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Terminated:
            click.echo("Terminated.", err=True)
            ctx.exit(EXIT_TERMINATED)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            message = error_message(exc)
            if message is None or debug_enabled():
                raise
            click.echo(f"Error: {message}", err=True)
            ctx.exit(getattr(exc, "exit_code", 1))


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


# ---------------------------------------------------------------------------- models, weights


@cli.command("models")
def models_cmd() -> None:
    """List the available TOPIQ checkpoints and whether each is cached."""
    from topiq_video.model.weights import (
        ENV_CACHE,
        STATE_MISSING,
        STATE_UNVERIFIED,
        cache_status,
        weights_dir,
    )

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
    _echo_table(rows)
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
    from topiq_video.model.weights import download_weights

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
    from topiq_video.model.weights import ENV_WEIGHTS_URL, STATE_CORRUPT, verify_cached

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


# ---------------------------------------------------------------------------- scoring options


def _metric_list(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def scene_options(
    *,
    scenes_help: str,
    no_scenes_help: str,
    threshold_help: str = "Content change (HSV, 0-255 scale) that makes a cut; raise it for "
    "fewer cuts.",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--scenes, --no-scenes, --scene-threshold and --min-scene-len (report, batch, compare)."""
    options = [
        click.option(
            "--scenes",
            "scenes_file",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help=scenes_help,
        ),
        click.option("--no-scenes", is_flag=True, help=no_scenes_help),
        click.option(
            "--scene-threshold",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_SCENE_THRESHOLD,
            show_default=True,
            help=threshold_help,
        ),
        click.option(
            "--min-scene-len",
            type=click.IntRange(min=0),
            default=DEFAULT_MIN_SCENE_LEN,
            show_default=True,
            help="Shortest scene, in frames.",
        ),
    ]

    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


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
            "psnr_y, ssim_y, and with the vmaf extra vmaf, vmaf_neg, xpsnr_y. Default: the "
            "model, plus psnr_y,ssim_y with --ref. A list without a TOPIQ model needs no "
            "weights.",
        ),
        click.option(
            "--vmaf-model",
            type=click.Choice(VMAF_MODEL_NAMES),
            default=DEFAULT_VMAF_MODEL,
            show_default=True,
            help="libvmaf's built-in model for the vmaf metric (4k, phone, or NEG).",
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
        click.option(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT,
            show_default=True,
            help="Seconds to wait for a network source to open or send data.",
        ),
        click.option(
            "--max-pixels",
            type=click.IntRange(min=64),
            default=DEFAULT_MAX_PIXELS,
            show_default=True,
            help="Refuse pictures larger than this (width x height); raise it for huge frames.",
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
        timeout=kwargs["timeout"],
        max_pixels=kwargs["max_pixels"],
        vmaf_model=kwargs["vmaf_model"],
        **extra,
    )


@contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    """SIGTERM (systemd, Docker, `timeout`) stops a run the way Ctrl-C does: what was
    scored is written before the program ends."""

    def handler(signum: int, frame: Any) -> NoReturn:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. an embedding application)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_with_progress(
    run: ScoringRun, label: str, command: list[str] | None = None
) -> tuple[ScoreResult | None, BaseException | None]:
    """Collect a run under a progress bar (the CLI owns it; quiet when not a terminal)."""
    from tqdm import tqdm

    from topiq_video.pipeline.collect import collect

    started = time.monotonic()
    with tqdm(
        total=run.expected_frames, unit="frame", desc=label, disable=None, dynamic_ncols=True
    ) as bar:
        return collect(run, on_frame=lambda _row: bar.update(1), command=command, started=started)


def _finish(result: ScoreResult | None, failure: BaseException | None, written: str | None) -> None:
    """Raise what stopped the run (after its output was written) or flag an incomplete one."""
    from topiq_video.pipeline.collect import raise_partial

    if failure is not None:
        if isinstance(failure, KeyboardInterrupt) and written:
            click.echo(f"The frames scored before it were written to {written}.", err=True)
        raise_partial(failure, result, written)
    if result is not None and result.interruption is not None:
        kept = f" Written to {written}." if written else ""
        click.echo(f"Error: {result.interruption.message}{kept}", err=True)
        raise SystemExit(EXIT_INCOMPLETE)


# ---------------------------------------------------------------------------- score


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
    HLS). Columns: frame, time, [ref_frame, ref_time], scene, then one per metric.
    """
    from topiq_video.pipeline.run import ScoringRun
    from topiq_video.report.tables import (
        check_table_path,
        frames_csv_text,
        write_frames_table,
    )

    if output is not None:
        check_table_path(output)
    run = ScoringRun(dist, kwargs["ref"], _score_options(kwargs))
    result, failure = _run_with_progress(run, "score")
    written = None
    if result is not None:
        if output is None:
            click.echo(frames_csv_text(result.frames), nl=False)
            written = "standard output"
        else:
            written = str(write_frames_table(result.frames, output))
    _finish(result, failure, written)
    if result is None:
        raise InvalidInputError(
            "No frame was scored: check the frame selection (--start/--duration) and the "
            "alignment (--offset)."
        )
    _echo_summary(result, err=True)
    if output is not None:
        click.echo(f"Wrote {written}", err=True)


# ---------------------------------------------------------------------------- report


@cli.command("report")
@click.argument("dist")
@scoring_options
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for report.html, report.json, frames.parquet, frames.csv and gallery/. "
    "Default: reports/<DIST stem>/",
)
@scene_options(
    scenes_help="Import cuts (PySceneDetect CSV, or one time/frame a line) instead of detecting them.",
    no_scenes_help="Treat the whole video as one scene.",
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
    help="Worst frames shown as pictures per metric (captured during the pass).",
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
    """Score DIST (against --ref) and write an HTML/JSON report with scenes and pooling.

    Scene cuts come from the reference in full-reference mode (the source's cuts), from
    DIST otherwise. A run that stops early still writes its report, marked incomplete.
    """
    from topiq_video.files import check_output_dir
    from topiq_video.pipeline.run import ScoringRun
    from topiq_video.report.build import default_report_dir, write_report

    if scenes_file and no_scenes:
        raise InvalidInputError("--scenes FILE and --no-scenes contradict each other: pick one.")
    options = _score_options(
        kwargs,
        detect_scenes=not (no_scenes or scenes_file),
        scenes_file=scenes_file,
        scene_threshold=scene_threshold,
        min_scene_len=min_scene_len,
        worst_n=worst,
        gallery=gallery,
    )
    out = check_output_dir(output_dir if output_dir is not None else default_report_dir(dist))
    run = ScoringRun(dist, kwargs["ref"], options)
    result, failure = _run_with_progress(run, "report", ["topiq-video", *sys.argv[1:]])
    saved = write_report(result, out) if result is not None else None
    _finish(result, failure, str(saved.out_dir) if saved else None)
    if result is None or saved is None:
        raise InvalidInputError(
            "No frame was scored: check the frame selection (--start/--duration) and the "
            "alignment (--offset)."
        )
    _echo_summary(result)
    click.echo(
        f"{len(result.frames)} frames, {len(result.scenes)} scene(s). Wrote {saved.html_path}, "
        f"{saved.json_path.name}, {saved.frames_path.name}, {saved.csv_path.name}"
    )


@cli.command("render")
@click.argument("report_json", type=click.Path(exists=True))
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the page (and a copy of its data). Default: beside REPORT_JSON.",
)
def render_cmd(report_json: str, output_dir: str | None) -> None:
    """Render report.html (or compare.html) again from a saved report.json (or
    compare.json); no videos needed.

    REPORT_JSON is the JSON file or the folder holding it; the files it names
    (frames.parquet, gallery/) must sit beside it.
    """
    from topiq_video.report.build import render_report

    click.echo(f"Wrote {render_report(report_json, output_dir)}")


# ---------------------------------------------------------------------------- batch


@cli.command("batch")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@scoring_options
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for items/<id>/ (one report each), catalog.parquet and index.html; a rerun "
    "with the same folder resumes. Default: reports/batch-<MANIFEST stem>/",
)
@click.option(
    "--retry-failed", is_flag=True, help="Run the items that failed before again (not by default)."
)
@click.option(
    "--no-ray", is_flag=True, help="Score one item after another in this process, without Ray."
)
@click.option(
    "--address",
    default=None,
    help="Join a running Ray cluster: auto, HOST:PORT or ray://HOST:PORT. Default: a local "
    "Ray instance that starts and stops with the command (when Ray is installed).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Items scored at once (Ray actors, each keeping its model loaded). Default: as many "
    "as the cluster's CPUs (or GPUs) hold.",
)
@click.option(
    "--gpus-per-item",
    type=click.FloatRange(min=0),
    default=None,
    help="GPU share reserved per worker, fractions allowed. Default: "
    f"{DEFAULT_GPUS_PER_ITEM:g} when the cluster has GPUs, else 0 (CPU).",
)
@click.option(
    "--cpus-per-item",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_CPUS_PER_ITEM,
    show_default=True,
    help="CPUs reserved per worker (decoding and, without a GPU, scoring).",
)
@scene_options(
    scenes_help="Import these cuts for every item (a manifest column 'scenes' sets them per row).",
    no_scenes_help="Treat each video as one scene.",
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
    help="Worst frames shown as pictures per metric in each report.",
)
def batch_cmd(
    manifest: str,
    out_dir: str | None,
    retry_failed: bool,
    no_ray: bool,
    address: str | None,
    workers: int | None,
    gpus_per_item: float | None,
    cpus_per_item: float,
    scenes_file: str | None,
    no_scenes: bool,
    scene_threshold: float,
    min_scene_len: int,
    worst: int,
    gallery: int,
    **kwargs: Any,
) -> None:
    """Score every item of MANIFEST: one report each, a catalog and an index page.

    MANIFEST is CSV, Parquet or JSON lines with a column 'dist' and optionally 'ref',
    'label' and per-row options (model, metrics, vmaf_model, offset, max_offset, scale_to, start,
    duration, every, sample_fps, max_frames, scenes, worst, gallery); relative paths are
    found from its folder. The options here are every row's defaults (--ref too, for rows
    without one). A rerun with the same --out skips the items already done.
    """
    from tqdm import tqdm

    from topiq_video.batch import BatchProgress, ray_available, run_batch

    if scenes_file and no_scenes:
        raise InvalidInputError("--scenes FILE and --no-scenes contradict each other: pick one.")
    if no_ray and address is not None:
        raise InvalidInputError(
            "--address joins a Ray cluster and --no-ray runs without: pick one."
        )
    if address is not None and not ray_available():
        raise InvalidInputError(
            f"--address needs Ray, which is not installed: {RAY_EXTRA} (or drop --address to "
            "score on this machine)."
        )
    options = _score_options(
        kwargs,
        detect_scenes=not (no_scenes or scenes_file),
        scenes_file=scenes_file,
        scene_threshold=scene_threshold,
        min_scene_len=min_scene_len,
        worst_n=worst,
        gallery=gallery,
    )
    bar = tqdm(unit="item", desc="batch", disable=None, dynamic_ncols=True)

    def progress(event: BatchProgress) -> None:
        if event.kind == "planned":
            bar.reset(total=event.total)
            bar.update(event.skipped)
        elif event.kind in ("done", "failed"):
            bar.update(1)
        bar.set_postfix(done=event.done, failed=event.failed, skipped=event.skipped, refresh=False)
        if event.kind == "failed" and event.item is not None:
            bar.write(f"Failed: {event.item.label} ({event.item.id}): {event.message}")

    with bar:
        try:
            result = run_batch(
                manifest,
                out_dir,
                options=options,
                ref=kwargs["ref"],
                retry_failed=retry_failed,
                use_ray=False if no_ray else None,
                address=address,
                workers=workers,
                cpus_per_item=cpus_per_item,
                gpus_per_item=gpus_per_item,
                on_progress=progress,
                command=["topiq-video", *sys.argv[1:]],
            )
        except KeyboardInterrupt:
            bar.write("Stopped: the items finished are kept; run the same command again to resume.")
            raise
    skipped = f"{result.skipped} skipped (done before)" if result.skipped else "0 skipped"
    if result.failed_before:
        skipped = (
            f"{result.skipped - result.failed_before} skipped (done before), "
            f"{result.failed_before} failed before (rerun with --retry-failed)"
        )
    click.echo(
        f"{result.total} items: {result.done} done, {result.failed} failed, {skipped}; "
        f"{result.runner}, {result.workers} worker(s), {result.elapsed_s:.1f} s."
    )
    click.echo(f"Wrote {result.index_path} and {result.catalog_path.name}")
    failed = result.failed + result.failed_before
    if failed:
        raise TopiqVideoError(
            f"{failed} item(s) failed: their errors are in {result.catalog_path.name} and on "
            "the index page. Fix the inputs and rerun with --retry-failed."
        )


# ---------------------------------------------------------------------------- compare


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        name, sep, file = value.partition("=")
        if not sep or not name or not file:
            raise InvalidInputError(f"--label {value!r}: write it as NAME=FILE.")
        labels[name] = file
    return labels


@cli.command("compare")
@click.argument("encodes", nargs=-1)
@scoring_options
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="NAME=FILE",
    help="Name an encode (repeatable). Default: the file's name without its suffix.",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CSV with columns file, encoder and optionally rate (CRF, QP or target bitrate): "
    "several rates per encoder give RD curves and BD-rates.",
)
@click.option(
    "--baseline",
    default=None,
    help="The label the others are compared with. Default: the first encode.",
)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for compare.html, compare.json, frames.parquet and gallery/. "
    "Default: reports/compare-<source stem>/",
)
@scene_options(
    scenes_help="Import the source's cuts instead of detecting them.",
    no_scenes_help="Treat the whole video as one scene.",
    threshold_help="Content change (HSV, 0-255 scale) that makes a cut in the source.",
)
@click.option(
    "--gallery",
    type=click.IntRange(min=0),
    default=DEFAULT_COMPARE_GALLERY,
    show_default=True,
    help="Frames where an encode differs most from the baseline, per metric.",
)
def compare_cmd(
    encodes: tuple[str, ...],
    labels: tuple[str, ...],
    manifest: str | None,
    baseline: str | None,
    output_dir: str | None,
    scenes_file: str | None,
    no_scenes: bool,
    scene_threshold: float,
    min_scene_len: int,
    gallery: int,
    **kwargs: Any,
) -> None:
    """Compare encodes of one source (--ref) on one pass over it: per-scene differences
    with confidence intervals, RD curves and BD-rates (with --manifest).

    The source is decoded once and its share of the work (colour, luma, scenes, the
    full-reference model's features) is done once for every encode.
    """
    from topiq_video.compare import (
        compare_encodes,
        default_compare_dir,
        encode_specs,
        load_manifest,
        write_compare,
    )
    from topiq_video.files import check_output_dir

    ref = kwargs["ref"]
    if ref is None:
        raise InvalidInputError("compare needs the source: --ref SOURCE.")
    if scenes_file and no_scenes:
        raise InvalidInputError("--scenes FILE and --no-scenes contradict each other: pick one.")
    specs = load_manifest(manifest) if manifest else []
    if encodes:
        specs += encode_specs(list(encodes), _labels(labels))
    elif labels:
        specs += encode_specs(list(_labels(labels).values()), _labels(labels))
    if not specs:
        raise InvalidInputError("Give the encodes to compare (files, --label or --manifest).")
    options = _score_options(
        kwargs,
        detect_scenes=not (no_scenes or scenes_file),
        scenes_file=scenes_file,
        scene_threshold=scene_threshold,
        min_scene_len=min_scene_len,
    )
    out = check_output_dir(output_dir if output_dir is not None else default_compare_dir(ref))
    from tqdm import tqdm

    from topiq_video.errors import ScoringInterrupted

    written = None
    with tqdm(unit="frame", desc="compare", disable=None, dynamic_ncols=True) as bar:
        try:
            result = compare_encodes(
                ref,
                specs,
                baseline=baseline,
                options=options,
                gallery=gallery,
                on_frame=lambda _label, _row: bar.update(1),
                command=["topiq-video", *sys.argv[1:]],
            )
        except (ScoringInterrupted, KeyboardInterrupt) as exc:
            partial = getattr(exc, "result", None) or getattr(exc, "partial_result", None)
            if partial is not None:
                written = write_compare(partial, out).out_dir
                if isinstance(exc, ScoringInterrupted):
                    raise ScoringInterrupted(f"{exc} Written to {written}.") from exc
                click.echo(f"What was compared was written to {written}.", err=True)
            raise
    saved = write_compare(result, out)
    _echo_compare_summary(result)
    click.echo(f"Wrote {saved.html_path or saved.json_path}, {saved.frames_path.name}")


def _echo_compare_summary(result: Any) -> None:
    report = result.report
    rows = [("ENCODE", "METRIC", "MEAN", "P5", "DIFF", "95 % INTERVAL", "VERDICT", "SCENES W/T/L")]
    comparisons = {c.label: c for c in report.comparisons}
    for encode in report.encodes:
        for name in report.metric_names:
            stats = encode.summary.get(name)
            if stats is None:
                rows.append((encode.label, name, "-", "-", "-", "-", encode.error or "-", "-"))
                continue
            diff = "-"
            interval = "-"
            verdict = "baseline" if encode.label == report.baseline else "-"
            scenes = "-"
            comparison = comparisons.get(encode.label)
            if comparison is not None:
                metric = next(m for m in comparison.metrics if m.metric == name)
                d = metric.overall
                diff = _fmt(d.mean)
                interval = f"[{_fmt(d.low)}, {_fmt(d.high)}]"
                verdict = d.verdict
                scenes = f"{metric.won}/{metric.tied}/{metric.lost}"
            rows.append(
                (
                    encode.label,
                    name,
                    _fmt(stats.mean),
                    _fmt(stats.p5),
                    diff,
                    interval,
                    verdict,
                    scenes,
                )
            )
    _echo_table(rows)
    for entry in report.bd:
        if entry.stat != "mean":
            continue
        value = entry.bd_rate.value
        text = f"{value:+.2f} %" if value is not None else f"n/a ({entry.bd_rate.reason})"
        click.echo(f"BD-rate {entry.encoder} vs {entry.baseline} on {entry.metric}: {text}")
    for label, agreement in report.agreements.items():
        _echo_agreement(agreement, label=f"{label}: ")


# ---------------------------------------------------------------------------- monitor


@cli.command("monitor")
@click.argument("sources", nargs=-1)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="TOML file with [monitor] settings and [[stream]] entries (name, url, model, "
    "thresholds, [[stream.rule]] alert rules).",
)
@click.option(
    "--model", default=None, help=f"No-reference checkpoint. Default: {DEFAULT_MONITOR_MODEL}."
)
@click.option("--weights", type=click.Path(dir_okay=False), help="Local checkpoint file.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N. Default: cuda if available.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help=f"Folder for per-second rows, evidence and session reports. Default: {DEFAULT_OUT_DIR}",
)
@click.option(
    "--listen",
    default=None,
    help=f"HOST:PORT for /metrics, the live page and /api/streams. Default: {DEFAULT_LISTEN} "
    "(loopback; listen on other addresses only where the network is trusted).",
)
@click.option(
    "--score-fps",
    type=float,
    default=None,
    help=f"TOPIQ samples per second and stream. Default: {DEFAULT_SCORE_FPS:g}.",
)
@click.option(
    "--freeze-seconds",
    type=float,
    default=None,
    help=f"Unchanged picture this long is a freeze. Default: {DEFAULT_FREEZE_SECONDS:g}.",
)
@click.option(
    "--stall-seconds",
    type=float,
    default=None,
    help=f"No frame this long is an outage (then reconnect). Default: {DEFAULT_STALL_SECONDS:g}.",
)
@click.option(
    "--rtsp-transport",
    type=click.Choice(RTSP_TRANSPORTS),
    default=None,
    help=f"Default: {DEFAULT_RTSP_TRANSPORT}.",
)
@click.option("--realtime", is_flag=True, help="Play files at their own frame rate, as if live.")
@click.option("--loop", is_flag=True, help="With --realtime: start files again at their end.")
@click.option(
    "--events",
    "events_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append events (JSON lines) to this file. Default: standard output.",
)
@click.option("--webhook", default=None, help="POST every event (JSON) to this http(s) URL.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after this many seconds (default: run until stopped).",
)
def monitor_cmd(
    sources: tuple[str, ...],
    config_file: str | None,
    realtime: bool,
    loop: bool,
    duration: float | None,
    **settings: Any,
) -> None:
    """Watch live streams: TOPIQ-NR scores, freeze/black/silence/outage, alerts, metrics.

    SOURCES are URLs (rtsp://, udp://, rtp://, http(s):// and live HLS, rtmp://) or files
    (with --realtime). Ctrl-C or SIGTERM stops it: rows and events are flushed and a
    session report is written per stream before it exits with status 0.
    """
    from topiq_video.monitor.config import build_config, load_config, with_streams
    from topiq_video.monitor.service import Monitor

    overrides = {k: v for k, v in settings.items() if v is not None}
    if config_file is not None:
        config = load_config(config_file, overrides)
        if sources:
            extra = build_config(list(sources), overrides)
            config = replace(config, streams=config.streams + extra.streams)
    else:
        config = build_config(list(sources), overrides)
    if realtime or loop:
        config = with_streams(config, realtime=True, loop=loop)
    monitor = Monitor(config, command=["topiq-video", *sys.argv[1:]])
    try:
        monitor.start()
        click.echo(f"Monitoring {len(config.streams)} stream(s): {monitor.url}", err=True)
        monitor.run(duration)
    except KeyboardInterrupt:
        click.echo("Stopping: writing rows, events and session reports.", err=True)
    finally:
        reports = monitor.stop()
    for folder in reports:
        click.echo(f"Session report: {folder / 'report.html'}", err=True)


# ---------------------------------------------------------------------------- printing


def _echo_table(rows: list[tuple[str, ...]], *, err: bool = False) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), err=err
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _echo_summary(result: ScoreResult, *, err: bool = False) -> None:
    """Alignment, pairing, decoding and the per-metric summary table."""
    report = result.report
    alignment = report.alignment
    if alignment is not None:
        click.echo(
            f"Alignment: offset {alignment.offset_seconds:+.3f} s "
            f"({alignment.offset_frames:g} reference frames, {alignment.method}, confidence "
            f"{alignment.confidence:.2f}); {len(result.frames)} frames paired",
            err=err,
        )
        pairing = alignment.pairing
        if pairing is not None:
            outside = []
            if pairing.dist_before or pairing.dist_after:
                outside.append(
                    f"{pairing.dist_before + pairing.dist_after} distorted frames outside the "
                    "reference"
                )
            if pairing.ref_before or pairing.ref_after:
                outside.append(
                    f"{pairing.ref_before + pairing.ref_after} reference frames outside the "
                    "encode's span"
                )
            if pairing.ref_skipped:
                outside.append(
                    f"{pairing.ref_skipped} reference frames inside it shown by no distorted frame"
                )
            if outside:
                click.echo(
                    "Unmatched (not scored): "
                    + "; ".join(outside)
                    + ("" if pairing.complete else " (counted up to where the run stopped)"),
                    err=err,
                )
            if pairing.conversion not in ("unknown", "equal rate"):
                click.echo(f"Frame-rate conversion found: {pairing.conversion}", err=err)
    shifted = any(s.shifted_harmonic_mean is not None for s in report.summary.values())
    header = (
        "METRIC", "MEAN", "POOLED", "HARMONIC", *(("VMAF HM",) if shifted else ()),
        "P1", "P5", "MIN", "WORST SCENE",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = [header]
    for name in report.metric_names:
        stats = report.summary[name]
        worst_scene = report.worst_scenes.get(name) or ()
        total = stats.count + stats.nonfinite_count
        pooled = f"{stats.count}/{total}"
        if stats.posinf_count:
            pooled += f" ({stats.posinf_count} +inf)"
        mean = _fmt(stats.mean) if stats.count else _all_nonfinite(stats)
        rows.append(
            (
                name,
                mean,
                pooled,
                _fmt(stats.harmonic_mean),
                *((_fmt(stats.shifted_harmonic_mean),) if shifted else ()),
                _fmt(stats.p1),
                _fmt(stats.p5),
                _fmt(stats.min),
                str(worst_scene[0]) if worst_scene else "-",
            )
        )
    _echo_table(rows, err=err)
    if shifted:
        click.echo("VMAF HM: libvmaf's harmonic mean (of value + 1, minus 1).", err=err)
    if report.agreement is not None:
        _echo_agreement(report.agreement, err=err)


def _echo_agreement(agreement: Any, *, err: bool = False, label: str = "") -> None:
    """One line on how TOPIQ and the other metric agree, and where they disagree most."""
    parts = [
        f"{label}{agreement.metric} vs {agreement.other}: Spearman {_fmt(agreement.spearman)}, "
        f"Pearson {_fmt(agreement.pearson)} over {agreement.frames_compared} frames"
    ]
    if agreement.frames:
        first = agreement.frames[0]
        better = agreement.metric if first.gap > 0 else agreement.other
        parts.append(
            f"furthest apart at {first.time:.3f} s (frame {first.frame}: "
            f"{better} ranks it {abs(first.gap) * 100:.0f} percentile points higher)"
        )
    click.echo("; ".join(parts), err=err)


def _all_nonfinite(stats: Any) -> str:
    """What to print for a mean when no value is finite (e.g. PSNR of identical frames)."""
    kinds = [
        label
        for label, count in (
            ("+inf", stats.posinf_count),
            ("-inf", stats.neginf_count),
            ("nan", stats.nan_count),
        )
        if count
    ]
    return "/".join(kinds) or "n/a"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    with _terminate_like_interrupt():
        cli.main(args=argv, prog_name="topiq-video")


if __name__ == "__main__":
    main()
