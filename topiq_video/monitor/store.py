"""Per-stream, per-second rows on disk: Parquet, flushed every few seconds, one file an hour.

Parquet cannot be appended to in place and a file is readable only once complete, so each
flush writes a small, complete part file (atomically) into the hour's folder, and when the
hour is over (or the monitor stops) the parts are compacted into the hour's file. A crash
leaves parts, not a broken file; they are compacted at the next start. Nothing is ever
overwritten: a restart within the same hour writes a second file for it.

Layout: ``OUT/<stream>/rows/2026-12-02T10.parquet`` (UTC hours), parts in
``OUT/<stream>/rows/2026-12-02T10.parts/``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from topiq_video.files import atomic_path

logger = logging.getLogger(__name__)

DEFAULT_FLUSH_SECONDS = 5.0
ROWS_DIR = "rows"
PARTS_SUFFIX = ".parts"


def hour_key(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, tz=timezone.utc).strftime("%Y-%m-%dT%H")


class RowStore:
    """Buffers one stream's rows and writes them as described in the module docstring."""

    def __init__(self, folder: str | Path, flush_seconds: float = DEFAULT_FLUSH_SECONDS) -> None:
        self.folder = Path(folder) / ROWS_DIR
        self.flush_seconds = float(flush_seconds)
        self._rows: list[dict[str, Any]] = []
        self._hour: str | None = None
        self._part = 0
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.compact_leftovers()

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row (it needs a ``time`` in Unix seconds); flushes when it is time."""
        with self._lock:
            hour = hour_key(float(row["time"]))
            if self._hour is not None and hour != self._hour:
                self._flush_locked()
                self._compact(self._hour)
            self._hour = hour
            self._rows.append(dict(row))
            if time.monotonic() - self._last_flush >= self.flush_seconds:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Write everything and compact the current hour."""
        with self._lock:
            self._flush_locked()
            if self._hour is not None:
                self._compact(self._hour)

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows or self._hour is None:
            return
        parts = self.folder / f"{self._hour}{PARTS_SUFFIX}"
        parts.mkdir(exist_ok=True)
        # Part names sort in writing order; a restart continues after the existing ones.
        while (parts / f"{self._part:06d}.parquet").exists():
            self._part += 1
        with atomic_path(parts / f"{self._part:06d}.parquet") as tmp:
            pd.DataFrame(self._rows).to_parquet(tmp, index=False)
        self._part += 1
        self._rows = []

    def _compact(self, hour: str) -> None:
        parts = self.folder / f"{hour}{PARTS_SUFFIX}"
        files = sorted(parts.glob("*.parquet")) if parts.is_dir() else []
        if not files:
            shutil.rmtree(parts, ignore_errors=True)
            return
        table = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        target = self.folder / f"{hour}.parquet"
        n = 2
        while target.exists():  # a restart within the hour: never overwrite
            target = self.folder / f"{hour}-{n}.parquet"
            n += 1
        with atomic_path(target) as tmp:
            table.to_parquet(tmp, index=False)
        shutil.rmtree(parts, ignore_errors=True)
        self._part = 0

    def compact_leftovers(self) -> None:
        """Compact the parts a crash left behind (every hour but the current one's)."""
        for parts in sorted(self.folder.glob(f"*{PARTS_SUFFIX}")):
            hour = parts.name[: -len(PARTS_SUFFIX)]
            if hour != self._hour:
                self._compact(hour)


def load_rows(folder: str | Path, since: float | None = None) -> pd.DataFrame:
    """Every row of a stream's folder (hour files and parts), in time order."""
    rows_dir = Path(folder) / ROWS_DIR
    files = sorted(rows_dir.glob("*.parquet")) + sorted(rows_dir.glob(f"*{PARTS_SUFFIX}/*.parquet"))
    if not files:
        return pd.DataFrame()
    table = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    if since is not None and "time" in table:
        table = table[table["time"] >= since]
    return table.sort_values("time", kind="stable").reset_index(drop=True)
