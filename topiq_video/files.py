"""Writing output files: atomically, and with errors that say what to fix.

Every file topiq-video writes (reports, tables, images, checkpoints, sidecars) goes through
:func:`atomic_path`: it is written under a temporary name in the target's folder and moved
into place with ``os.replace`` only when complete, so a crash, Ctrl-C or full disk never
leaves a half-written file that a later run would take for a finished one.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from topiq_video.errors import OutputError

_ERRNO_PREFIX = re.compile(r"\[Errno -?\d+\]\s*")


def describe_os_error(exc: OSError) -> str:
    """An OSError as words, without the raw ``[Errno N]`` prefix."""
    if exc.strerror:
        return exc.strerror
    return _ERRNO_PREFIX.sub("", str(exc)) or type(exc).__name__


def output_error(path: str | os.PathLike[str], exc: OSError) -> OutputError:
    """The clean error for a file that could not be written."""
    target = Path(path)
    reason = describe_os_error(exc)
    if isinstance(exc, FileNotFoundError) or not target.parent.exists():
        advice = "Check that its folder exists and is a normal folder you can write to."
    elif isinstance(exc, PermissionError):
        advice = "Choose a folder you may write to."
    elif getattr(exc, "errno", None) == 28:  # ENOSPC
        advice = "Free disk space or choose another disk."
    else:
        advice = "Choose another output path."
    return OutputError(f"Cannot write {os.fsdecode(target)!r}: {reason}. {advice}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path``; moved onto ``path`` when the block succeeds.

    The folder is created if needed. Failing to create the temporary file or to move it into
    place becomes an :class:`~topiq_video.errors.OutputError` naming the file; an exception
    in the block propagates as it is, and the temporary file is removed either way.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise output_error(target, exc) from exc
    tmp = Path(tmp_name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise output_error(target, exc) from exc


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text with ``\\n`` line ends to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return Path(path)


def check_output_dir(
    path: str | os.PathLike[str], *, for_file: str | os.PathLike[str] | None = None
) -> Path:
    """Create ``path`` (a folder for outputs) or raise an OutputError saying why not;
    ``for_file`` is the file the message names (default: the folder)."""
    folder = Path(path)
    named = Path(for_file) if for_file is not None else folder / "."
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # The only sure test: create (and drop) a file there.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise output_error(named, exc) from exc
    return folder


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """Fail early, before any work, when ``path`` cannot be written."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{os.fsdecode(target)!r} is a folder: name a file to write.")
    check_output_dir(target.parent, for_file=target)
    return target


def display_text(text: str) -> str:
    """``text`` safe to encode as UTF-8: undecodable bytes of a file name (surrogate escapes)
    become U+FFFD, so a report about a file with a non-UTF-8 name can still be written."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates that are not escaped bytes
        raw = text.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")
