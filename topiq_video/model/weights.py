"""Finding, downloading, verifying and caching TOPIQ checkpoints.

Resolution order: an explicit local file (``weights=PATH``), then the cache, then a
download. Downloads come from ``$TOPIQ_VIDEO_WEIGHTS_URL/<file>`` when that mirror is set
(and only from there), else from the published URLs in order. A download is written to a
temporary file next to the cache entry and moved into place only once it is complete and
loads as a checkpoint of the right architecture; its sha256 is then recorded in a sidecar
file (``<file>.sha256``) and checked on every later cache hit.

Checkpoints are untrusted input: a file that does not start like a PyTorch checkpoint (text,
an HTML page, an LFS pointer...) is refused before any unpickling and described; the rest are
only ever read with ``weights_only=True``, which refuses pickles that would run code, and must
hold tensors of the model's names, shapes and dtypes
(:func:`~topiq_video.model.cfanet.check_cfanet_state_dict`, the one check). Downloads are capped at :data:`MAX_DOWNLOAD_BYTES` and never follow a redirect from
https to plain http.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from topiq_video.errors import WeightsError
from topiq_video.files import atomic_path, atomic_write_text
from topiq_video.model.registry import (
    DEFAULT_FR_MODEL,
    DEFAULT_NR_MODEL,
    CheckpointInfo,
    list_checkpoints,
)

if TYPE_CHECKING:
    import torch

    from topiq_video.model.cfanet import CFANet

logger = logging.getLogger(__name__)

ENV_CACHE = "TOPIQ_VIDEO_CACHE"
ENV_WEIGHTS_URL = "TOPIQ_VIDEO_WEIGHTS_URL"
APP_NAME = "topiq-video"
WEIGHTS_SUBDIR = "weights"
SIDECAR_SUFFIX = ".sha256"
DOWNLOAD_TIMEOUT_S = 60.0  # per connect / per read, not for the whole transfer
CHUNK_BYTES = 1 << 20
# The published checkpoints are ~140-180 MB; anything far bigger is not one, and a hostile
# mirror must not be able to fill the disk.
MAX_DOWNLOAD_BYTES = 1 << 30
USER_AGENT = "topiq-video (+https://github.com/chaofengc/IQA-PyTorch weights)"

SOURCE_LOCAL = "local"
SOURCE_CACHE = "cache"
SOURCE_DOWNLOAD = "download"

STATE_OK = "ok"
STATE_PRESENT = "present"  # in the cache with a sidecar, not re-hashed
STATE_UNVERIFIED = "unverified"  # in the cache without a sidecar (e.g. copied in by hand)
STATE_CORRUPT = "corrupt"
STATE_MISSING = "missing"


@dataclass(frozen=True)
class ResolvedWeights:
    """A checkpoint file ready to load, its sha256 and where it came from."""

    path: Path
    sha256: str
    source: str  # "local" | "cache" | "download"


@dataclass(frozen=True)
class CacheStatus:
    """State of one checkpoint in the cache: ok, present, unverified, corrupt or missing."""

    name: str
    path: Path
    state: str
    detail: str = ""


def cache_dir() -> Path:
    """Root of topiq-video's cache: ``$TOPIQ_VIDEO_CACHE`` or the platform's user cache dir."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir(APP_NAME))


def weights_dir() -> Path:
    """Folder inside the cache that holds checkpoints and their sha256 sidecars."""
    return cache_dir() / WEIGHTS_SUBDIR


def cached_path(info: CheckpointInfo) -> Path:
    return weights_dir() / info.filename


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_sidecar(path: Path) -> str | None:
    try:
        text = _sidecar(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    token = text.split()[0].lower() if text else ""
    return token if len(token) == 64 else None


def _write_sidecar(path: Path, sha256: str) -> None:
    # Atomic with a unique temp name: concurrent downloads never write into each other's
    # temp file, and whichever finishes last wins with a complete sidecar. The line is
    # sha256sum-compatible, so `sha256sum -c` works on the cache folder too.
    atomic_write_text(_sidecar(path), f"{sha256}  {path.name}\n")


def _ways_out(info: CheckpointInfo) -> str:
    return (
        "Ways out: pass a local copy with `--weights PATH` (weights= in Python); "
        f"set {ENV_WEIGHTS_URL} to a mirror (http(s):// or file://) that holds {info.filename}; "
        f"or run `topiq-video weights download {info.name}` on a machine with internet access "
        f"and copy the cache folder ({weights_dir()}, or ${ENV_CACHE}) over."
    )


def _corrupt_message(info: CheckpointInfo, path: Path, why: str) -> str:
    return (
        f"The cached checkpoint {path} for model {info.name!r} is corrupted ({why}). "
        f"Ways out: re-download it with `topiq-video weights download --force {info.name}` "
        f"(set {ENV_WEIGHTS_URL} to a mirror, http(s):// or file://, that holds "
        f"{info.filename} if the published URLs are unreachable); or pass a good copy with "
        "`--weights PATH` (weights= in Python)."
    )


# --------------------------------------------------------------------------- loading


class _UnusableFile(WeightsError):
    """A file that cannot be read as a PyTorch checkpoint (not one, or damaged); ``reason`` is
    the message without the ways out, for callers (cache check, download) that give their own."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_state_dict(path: str | os.PathLike[str], info: CheckpointInfo) -> dict[str, torch.Tensor]:
    """Load a checkpoint safely and check it has exactly ``info``'s architecture.

    Accepts the official ``{"params": state_dict}`` format and a bare state_dict.
    """
    from topiq_video.model.cfanet import check_cfanet_state_dict

    path = Path(path)
    return check_cfanet_state_dict(
        _read_checkpoint(path, info), info.use_ref, **_check_context(path, info)
    )


def load_network(path: str | os.PathLike[str], info: CheckpointInfo) -> CFANet:
    """Read the checkpoint at ``path`` and build ``info``'s CFANet from it (float32, CPU, eval
    mode), checked once, with the same messages as :func:`load_state_dict`."""
    from topiq_video.model.cfanet import cfanet_from_state_dict

    path = Path(path)
    return cfanet_from_state_dict(
        _read_checkpoint(path, info), info.use_ref, **_check_context(path, info)
    )


def _check_context(path: Path, info: CheckpointInfo) -> dict[str, str]:
    """What :func:`~topiq_video.model.cfanet.check_cfanet_state_dict` says about a file."""
    return {
        "source": str(path),
        "other_mode_hint": _other_mode_hint(info),
        "advice": f"Expected {info.filename}, the official checkpoint for {info.name!r}.",
    }


# torch.save writes a zip archive; files from before PyTorch 1.6 are a bare pickle stream,
# which starts with the PROTO opcode (0x80) and a protocol number.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_PICKLE_PROTOCOLS = range(2, 6)
_SNIFF_BYTES = 512
_SAFETENSORS_MAX_HEADER = 100 << 20
_QUOTE_CHARS = 60


def _sniff(path: Path, info: CheckpointInfo) -> str | None:
    """None when ``path`` starts like a PyTorch checkpoint; else what it looks like instead."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise WeightsError(
            f"Cannot read the checkpoint {path} ({exc.strerror or exc}). {_ways_out(info)}"
        ) from exc
    if head.startswith(_ZIP_MAGICS):
        return None
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return None
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer, not the file itself (fetch it with `git lfs pull`)"
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    if head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < _SAFETENSORS_MAX_HEADER:
        return "looks like a safetensors file; topiq-video reads PyTorch .pth checkpoints"
    if head.startswith(b"\x1f\x8b"):
        return "is gzip-compressed: unpack it first"
    text = _as_text(head)
    if text is not None:
        if "<html" in text.lower() or text.lstrip().lower().startswith("<!doctype html"):
            return (
                "looks like an HTML page, not a checkpoint (an error or login page saved in "
                "its place?)"
            )
        first = text.strip().splitlines()[0] if text.strip() else ""
        if len(first) > _QUOTE_CHARS:
            first = first[:_QUOTE_CHARS] + "…"
        return f"looks like a text file (it starts with {first!r})"
    return f"is in an unknown format (it starts with bytes {head[:8].hex(' ')})"


def _as_text(head: bytes) -> str | None:
    """``head`` decoded as UTF-8 if it is printable text (a character cut off at the end of
    the sniffed block is allowed), else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3 or len(head) < _SNIFF_BYTES:
            return None
        text = head[: exc.start].decode("utf-8")
    if all(c.isprintable() or c in "\t\r\n" for c in text):
        return text
    return None


def _read_checkpoint(path: Path, info: CheckpointInfo) -> object:
    """``torch.load(path, weights_only=True)``, every failure turned into a WeightsError."""
    import torch

    what = _sniff(path, info)
    if what is not None:
        reason = (
            f"{path} is not a PyTorch checkpoint: it {what}. Expected {info.filename}, the "
            f"checkpoint for {info.name!r}."
        )
        raise _UnusableFile(f"{reason} {_ways_out(info)}", reason)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip/EOF errors all mean "not a usable checkpoint"
        refused = _refused_global(exc)
        if refused is not None:
            raise WeightsError(_code_refused_message(path, info, refused)) from exc
        reason = _unloadable_reason(path, info, exc)
        raise _UnusableFile(f"{reason} {_ways_out(info)}", reason) from exc


def _refused_global(exc: Exception) -> str | None:
    """The line of a weights_only refusal that names the Python object (a "global") the file
    asked for, or None when the load failed for another reason (damage, truncation)."""
    text = str(exc)
    lowered = text.lower()
    if "weights only" not in lowered and "weights_only" not in lowered:
        return None
    # PyTorch's own text advises re-running with weights_only=False, i.e. letting the file
    # run its code: pass on only the line that names what was refused.
    return next(
        (
            line.strip().rstrip(".")
            for line in text.splitlines()
            if "global" in line.lower() and "weights_only" not in line.lower()
        ),
        None,
    )


def _code_refused_message(path: Path, info: CheckpointInfo, refused: str) -> str:
    return (
        f"{path} is not a plain tensor checkpoint and was refused without running it: "
        f"it holds Python objects other than tensors, which may contain code ({refused}). "
        f"Get the official checkpoint {info.filename} for {info.name!r} from a trusted source."
    )


def _unloadable_reason(path: Path, info: CheckpointInfo, exc: Exception) -> str:
    # Keep PyTorch's detail, minus its advice to load the file with weights_only=False.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next(
        (
            line
            for line in lines
            if "weights_only" not in line and "weights only" not in line.lower()
        ),
        type(exc).__name__,
    )
    detail = detail.split(". ")[0].rstrip(".")  # the first sentence; the rest is advice
    return (
        f"{path} starts like a PyTorch checkpoint but cannot be read ({detail}): it is "
        f"truncated, damaged or not a PyTorch checkpoint. Expected {info.filename}, the "
        f"checkpoint for {info.name!r}."
    )


def _other_mode_hint(info: CheckpointInfo) -> str:
    """Which models a checkpoint of the other mode (NR vs FR) than ``info``'s fits."""
    kind = "NR" if info.use_ref else "FR"
    default = DEFAULT_NR_MODEL if info.use_ref else DEFAULT_FR_MODEL
    others = [c.name for c in list_checkpoints() if c.use_ref != info.use_ref and c.name != default]
    also = f" (or another {kind} model: {', '.join(others)})" if others else ""
    return (
        f"This looks like an {kind} checkpoint: use --model {default}{also}, "
        f"or pass the {info.mode.upper()} checkpoint {info.filename} for {info.name!r}."
    )


def _short_reason(exc: WeightsError) -> str:
    """A loading failure as one line, without ways out (for messages that give their own)."""
    text = exc.reason if isinstance(exc, _UnusableFile) else str(exc)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


# --------------------------------------------------------------------------- cache


def cache_status(info: CheckpointInfo) -> CacheStatus:
    """Cheap cache check (no hashing): missing, present (with sidecar) or unverified."""
    path = cached_path(info)
    if not path.is_file():
        return CacheStatus(info.name, path, STATE_MISSING)
    if _read_sidecar(path) is None:
        return CacheStatus(info.name, path, STATE_UNVERIFIED, "no sha256 sidecar")
    return CacheStatus(info.name, path, STATE_PRESENT)


def verify_cached(info: CheckpointInfo) -> CacheStatus:
    """Re-hash the cached file against its sidecar: ok, corrupt or missing.

    A cached file without a sidecar (copied in by hand) is checked by loading it; if it is
    a valid checkpoint its sidecar is written, so later loads are hash-checked.
    """
    path = cached_path(info)
    if not path.is_file():
        return CacheStatus(info.name, path, STATE_MISSING)
    actual = sha256_file(path)
    recorded = _read_sidecar(path)
    if recorded is None:
        try:
            load_state_dict(path, info)
        except WeightsError as exc:
            return CacheStatus(info.name, path, STATE_CORRUPT, _short_reason(exc))
        _write_sidecar(path, actual)
        return CacheStatus(info.name, path, STATE_OK, "verified by loading; sidecar written")
    if recorded != actual:
        return CacheStatus(
            info.name, path, STATE_CORRUPT, f"sha256 {actual[:12]}… != recorded {recorded[:12]}…"
        )
    return CacheStatus(info.name, path, STATE_OK, f"sha256 {actual[:12]}…")


def _from_cache(info: CheckpointInfo) -> ResolvedWeights | None:
    status = verify_cached(info)
    if status.state == STATE_MISSING:
        return None
    if status.state == STATE_CORRUPT:
        raise WeightsError(_corrupt_message(info, status.path, status.detail))
    recorded = _read_sidecar(status.path)
    assert recorded is not None  # verify_cached wrote or checked it
    logger.debug("Using cached weights %s", status.path)
    return ResolvedWeights(status.path, recorded, SOURCE_CACHE)


# --------------------------------------------------------------------------- download


def download_urls(info: CheckpointInfo) -> tuple[str, ...]:
    """Where a download is tried, in order: the mirror alone when set, else the published URLs."""
    mirror = os.environ.get(ENV_WEIGHTS_URL, "").strip()
    if mirror:
        return (f"{mirror.rstrip('/')}/{info.filename}",)
    return info.urls


def _show_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class _DownloadRefused(OSError):
    """A download stopped on purpose: too large, or an unsafe redirect."""


class _SafeRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never from https to anything else, nor to a non-http(s) URL
    (a downgrade would let anyone on the path swap the checkpoint)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        old = urllib.parse.urlsplit(req.full_url).scheme.lower()
        new = urllib.parse.urlsplit(newurl).scheme.lower()
        if new not in ("http", "https") or (old == "https" and new != "https"):
            fp.close()
            raise _DownloadRefused(
                f"refused redirect from {old}:// to {newurl} (a checkpoint fetched over "
                "https is only ever followed to https)"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _too_large(size: str) -> _DownloadRefused:
    return _DownloadRefused(
        f"too large: {size}, over the {MAX_DOWNLOAD_BYTES} byte cap (the checkpoints are "
        "~140-180 MB); the server is not serving a TOPIQ checkpoint"
    )


def _fetch(url: str, dest: Path, progress: bool) -> str:
    """Stream ``url`` into ``dest``; returns the sha256. Raises OSError/HTTPException on failure."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    opener = urllib.request.build_opener(_SafeRedirectHandler())
    digest = hashlib.sha256()
    received = 0
    with opener.open(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        length_header = response.headers.get("Content-Length")
        expected = int(length_header) if length_header and length_header.isdigit() else None
        if expected is not None and expected > MAX_DOWNLOAD_BYTES:
            raise _too_large(f"Content-Length {expected} bytes")
        with (
            open(dest, "wb") as out,
            tqdm(
                total=expected,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=url.rsplit("/", 1)[-1],
                disable=not progress,
                file=sys.stderr,
                leave=True,
            ) as bar,
        ):
            while True:
                # Never ask for more than one byte past the cap, whatever the server claims.
                block = response.read(min(CHUNK_BYTES, MAX_DOWNLOAD_BYTES + 1 - received))
                if not block:
                    break
                if received + len(block) > MAX_DOWNLOAD_BYTES:
                    raise _too_large(f"more than {MAX_DOWNLOAD_BYTES} bytes sent")
                out.write(block)
                digest.update(block)
                received += len(block)
                bar.update(len(block))
    if received == 0:
        raise OSError("empty response")
    if expected is not None and received != expected:
        raise OSError(f"truncated: got {received} of {expected} bytes")
    return digest.hexdigest()


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable ({exc.reason})"
    if isinstance(exc, http.client.IncompleteRead):
        return f"truncated: connection closed after {len(exc.partial)} bytes"
    if isinstance(exc, TimeoutError):
        return f"timed out after {DOWNLOAD_TIMEOUT_S:g}s"
    if isinstance(exc, WeightsError):
        return f"downloaded, but not a valid checkpoint: {_short_reason(exc)}"
    return str(exc) or type(exc).__name__


def _download(info: CheckpointInfo, progress: bool | None) -> ResolvedWeights:
    target = cached_path(info)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(
            f"Cannot create the weights cache folder {target.parent} ({exc}). "
            f"Set {ENV_CACHE} to a writable folder. {_ways_out(info)}"
        ) from exc
    show = _show_progress(progress)
    tried: list[str] = []
    for url in download_urls(info):
        try:
            # Nothing partial is ever left: the temp file goes on failure and on Ctrl-C.
            with atomic_path(target) as tmp:
                logger.info("Downloading %s from %s", info.filename, url)
                sha = _fetch(url, tmp, show)
                load_state_dict(tmp, info)  # a complete checkpoint of this architecture
            _write_sidecar(target, sha)
            logger.info("Saved %s (sha256 %s)", target, sha)
            return ResolvedWeights(target, sha, SOURCE_DOWNLOAD)
        except (OSError, http.client.HTTPException, ValueError, WeightsError) as exc:
            tried.append(f"  - {url}: {_describe_failure(exc)}")
            logger.info("Download of %s from %s failed: %s", info.filename, url, exc)
    mirror_note = (
        f" (only the mirror: {ENV_WEIGHTS_URL} is set)" if os.environ.get(ENV_WEIGHTS_URL) else ""
    )
    raise WeightsError(
        f"Could not obtain the checkpoint {info.filename} for model {info.name!r}. "
        f"Not in the cache ({target}); download failed from every place tried{mirror_note}:\n"
        + "\n".join(tried)
        + f"\n{_ways_out(info)}"
    )


def download_weights(
    info: CheckpointInfo, *, force: bool = False, progress: bool | None = None
) -> ResolvedWeights:
    """Make sure ``info``'s checkpoint is in the cache, downloading it if needed (or if ``force``)."""
    if not force:
        cached = _from_cache(info)
        if cached is not None:
            return cached
    return _download(info, progress)


def resolve_weights(
    info: CheckpointInfo,
    weights: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    progress: bool | None = None,
) -> ResolvedWeights:
    """Find the checkpoint for ``info``: the local file ``weights``, else the cache, else download.

    ``progress`` None shows a download bar only when stderr is a terminal.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise WeightsError(
                f"The weights file {path} given with --weights {what}. Pass the path of "
                f"{info.filename} (the checkpoint for {info.name!r}), or omit --weights to use "
                "the cache / download it."
            )
        return ResolvedWeights(path, sha256_file(path), SOURCE_LOCAL)
    cached = _from_cache(info)
    if cached is not None:
        return cached
    if not download:
        raise WeightsError(
            f"The checkpoint {info.filename} for model {info.name!r} is not in the cache "
            f"({cached_path(info)}) and downloading is disabled. {_ways_out(info)}"
        )
    return _download(info, progress)
