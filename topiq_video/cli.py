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

import click

from topiq_video import __version__
from topiq_video.errors import TopiqVideoError, WeightsError
from topiq_video.model.registry import (
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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="topiq-video")


if __name__ == "__main__":
    main()
