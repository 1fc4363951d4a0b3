"""Per-second rows on disk: complete Parquet parts, hourly files, nothing overwritten."""

from __future__ import annotations

import pandas as pd

from topiq_video.monitor.store import RowStore, load_rows

HOUR = 3600.0
T0 = 1_800_000_000.0  # some whole hour, UTC


def _row(t: float, score: float = 0.5) -> dict:
    return {"time": t, "stream": "cam", "score_mean": score, "up": True}


def test_rows_become_one_file_an_hour(tmp_path):
    store = RowStore(tmp_path, flush_seconds=0)
    for k in range(5):
        store.append(_row(T0 + k))
    store.append(_row(T0 + HOUR + 1))  # the next hour: the first is compacted
    store.close()
    files = sorted(p.name for p in (tmp_path / "rows").iterdir())
    assert files == ["2027-01-15T08.parquet", "2027-01-15T09.parquet"]
    rows = load_rows(tmp_path)
    assert list(rows["time"]) == [T0 + k for k in range(5)] + [T0 + HOUR + 1]


def test_a_crash_leaves_readable_parts_that_the_next_start_compacts(tmp_path):
    store = RowStore(tmp_path, flush_seconds=0)
    for k in range(3):
        store.append(_row(T0 + k))
    # No close(): the process died. Its flushed parts are complete Parquet files.
    assert len(load_rows(tmp_path)) == 3
    again = RowStore(tmp_path, flush_seconds=0)  # a restart compacts what was left
    assert [p.name for p in (tmp_path / "rows").iterdir()] == ["2027-01-15T08.parquet"]
    again.append(_row(T0 + 10))
    again.close()
    names = sorted(p.name for p in (tmp_path / "rows").iterdir())
    assert names == ["2027-01-15T08-2.parquet", "2027-01-15T08.parquet"]  # never overwritten
    assert list(load_rows(tmp_path)["time"]) == [T0, T0 + 1, T0 + 2, T0 + 10]


def test_rows_wait_for_the_flush_interval(tmp_path):
    store = RowStore(tmp_path, flush_seconds=3600)
    store.append(_row(T0))
    assert load_rows(tmp_path).empty  # buffered
    store.flush()
    assert len(load_rows(tmp_path)) == 1
    store.close()
    assert isinstance(load_rows(tmp_path, since=T0 + 1), pd.DataFrame)
    assert load_rows(tmp_path, since=T0 + 1).empty
