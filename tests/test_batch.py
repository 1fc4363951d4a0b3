"""`topiq-video batch`: a catalog scored item by item, resumable, in-process and on Ray.

The items are tiny clips scored with PSNR-Y/SSIM-Y (no weights). Oracles: `build_report` run
on an item by itself (the batch must give each item exactly that report), the compression
order of the encodes (a higher CRF scores lower), and the in-process run for the Ray run.
Workers and drivers are killed for real (SIGKILL); a named pipe the test controls holds an
item in flight while that happens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import media
import pandas as pd
import pytest
from browser import Browser, browser_available
from click.testing import CliRunner

import topiq_video as tv
from topiq_video.batch import (
    CATALOG_FILE,
    FAILED_FILE,
    INDEX_FILE,
    ITEM_FILE,
    ItemWorker,
    committed_record,
    item_id,
    read_manifest,
    report_options,
    run_batch,
    start_local_ray,
)
from topiq_video.cli import cli
from topiq_video.errors import InvalidInputError
from topiq_video.result import ScoreResult

EVIL = "<script>alert(1)</script>"
METRICS = "psnr_y,ssim_y"
CRFS = (22, 28, 34, 40, 46)
CLIP = {"n_frames": 32, "cuts": (16,)}
# Columns that say how and when an item ran (they differ between runs of one manifest).
RUN_DEPENDENT = ["attempts", "resumed", "elapsed_s", "score_s", "finished", "host", "worker_pid"]
WAIT_S = 120.0


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    media.make_clip(d / "source.mp4", **CLIP)
    for crf in CRFS:
        media.make_clip(d / f"enc{crf}.mp4", crf=crf, **CLIP)
    media.make_clip(d / "enc30.mkv", crf=30, **CLIP)  # streams through a pipe (no index)
    media.make_text_file(d / "broken.mp4")
    return d


@pytest.fixture(scope="module")
def manifest(videos):
    """Six items: five encodes (one labelled with markup) and one file that is no video.
    The manifest sits in another folder and names the videos relative to itself."""
    folder = videos.parent / "lists"
    folder.mkdir(exist_ok=True)
    up = f"../{videos.name}"
    rows = ["dist,ref,label"]
    for crf in CRFS[:3]:
        rows.append(f"{up}/enc{crf}.mp4,{up}/source.mp4,crf {crf}")
    rows.append(f"{up}/broken.mp4,{up}/source.mp4,broken")
    rows.append(f'{up}/enc{CRFS[3]}.mp4,{up}/source.mp4,"{EVIL}"')
    rows.append(f"{up}/enc{CRFS[4]}.mp4,{up}/source.mp4,")
    path = folder / "catalog.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def in_process(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("inproc") / "out"
    result = run_batch(manifest, out, use_ray=False, metrics=METRICS)
    return result


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance (2 CPUs, loopback only) shared by this module's Ray tests."""
    ray = start_local_ray(num_cpus=2)
    try:
        yield ray
    finally:
        ray.shutdown()


def _report_without_run(result: ScoreResult) -> ScoreResult:
    """A result with the run's time stamps and command blanked (they differ per run)."""
    report = result.report
    run = dataclasses.replace(report.run, created="", duration_s=None, command=None)
    return ScoreResult(dataclasses.replace(report, run=run), result.frames, result.images)


def _catalog(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / CATALOG_FILE).drop(columns=RUN_DEPENDENT)


def _folders(out: Path) -> dict[str, Path]:
    return {p.name: p for p in (out / "items").iterdir() if not p.name.startswith(".")}


def _wait(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _readers(fifo: Path) -> set[int]:
    """Processes (other than this one) holding ``fifo`` open."""
    target = os.path.realpath(fifo)
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") == target:
                        pids.add(int(entry))
                        break
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"  # a zombie is dead, not yet reaped
    except OSError:
        return False


def _feed_once(fifo: Path, data: bytes) -> threading.Thread:
    """Write ``data`` into the pipe as soon as a reader opens it, then close it (EOF)."""

    def feed() -> None:
        with open(fifo, "wb") as fh:  # blocks until the scoring side opens the pipe
            fh.write(data)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


class _Feeder:
    """Writes ``data`` into the pipe for each reader that opens it, then closes it (EOF).

    Every open gets the whole clip: on a loaded machine the pipe is sometimes opened
    briefly by a process other than the rerun's (strace of the rerun shows a single
    open), and a clip that went to it must not leave the rerun waiting forever."""

    def __init__(self, fifo: Path, data: bytes) -> None:
        self.fifo, self.data = fifo, data
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(BrokenPipeError), open(self.fifo, "wb") as fh:
                if self.stopped.is_set():
                    return
                fh.write(self.data)  # open blocks until the scoring side opens the pipe
            # A reader sees the end of the clip only once no writer holds the pipe: open it
            # again only when that reader is gone.
            while _readers(self.fifo) and not self.stopped.is_set():
                time.sleep(0.1)

    def close(self) -> None:
        self.stopped.set()
        # Release a writer blocked in open(): a reader that opens and closes at once.
        with contextlib.suppress(OSError):
            os.close(os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK))
        self.thread.join(WAIT_S)


# ---------------------------------------------------------------------------- manifest, ids


def test_manifest_formats_give_the_same_items(videos, manifest, tmp_path):
    items = read_manifest(manifest, report_options(metrics=METRICS))
    assert [i.label for i in items] == ["crf 22", "crf 28", "crf 34", "broken", EVIL, "enc46"]
    assert items[0].dist == str(videos / "enc22.mp4")
    assert items[0].ref == str(videos / "source.mp4")
    assert len({i.id for i in items}) == 6
    records = pd.read_csv(manifest, keep_default_na=False).to_dict("records")
    for record in records:
        record["dist"] = str(videos / Path(record["dist"]).name)
        record["ref"] = str(videos / Path(record["ref"]).name)
    pd.DataFrame(records).to_parquet(tmp_path / "m.parquet")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for other in (tmp_path / "m.parquet", tmp_path / "m.jsonl"):
        again = read_manifest(other, report_options(metrics=METRICS))
        assert [(i.id, i.label) for i in again] == [(i.id, i.label) for i in items]


def test_row_options_override_defaults(videos, tmp_path):
    path = tmp_path / "m.jsonl"
    rows = [
        {"dist": str(videos / "enc22.mp4"), "ref": str(videos / "source.mp4")},
        {
            "dist": str(videos / "enc22.mp4"),
            "ref": str(videos / "source.mp4"),
            "every": 2,
            "max_frames": 5,
            "metrics": ["psnr_y"],
            "offset": 0,
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    plain, tuned = read_manifest(path, report_options(metrics=METRICS))
    assert plain.options.selection.every == 1 and plain.options.metrics == ("psnr_y", "ssim_y")
    assert tuned.options.selection.every == 2 and tuned.options.selection.max_frames == 5
    assert tuned.options.metrics == ("psnr_y",) and tuned.options.offset == 0.0
    assert tuned.id != plain.id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("file,ref\na.mp4,b.mp4\n", "needs a 'dist' column"),
        ("dist,sample-fps\na.mp4,2\n", "unknown column(s) 'sample-fps'"),
        (
            "dist,ref,every\na.mp4,b.mp4,2\nc.mp4,b.mp4,two\n",
            "line 3: every must be a whole number",
        ),
        ("dist,ref,sample_fps\na.mp4,b.mp4,-1\n", "line 2: sample_fps must be"),
        ("dist\na.mp4\n", "line 2: psnr_y is a full-reference metric"),
        ("dist,ref\n,b.mp4\n", "line 2: dist is empty"),
        ("dist\n", "has no rows"),
    ],
)
def test_manifest_errors_name_the_row(tmp_path, text, expected):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(InvalidInputError) as info:
        read_manifest(path, report_options(metrics=METRICS))
    assert expected in str(info.value)


def test_item_ids_follow_inputs_and_options(videos, tmp_path):
    dist, ref = str(videos / "enc22.mp4"), str(videos / "source.mp4")
    base = item_id(dist, ref, report_options(metrics=METRICS))
    assert len(base) == 16 and int(base, 16) >= 0
    # What does not change scores does not change the id; naming the default metrics neither.
    assert item_id(dist, ref, report_options(metrics=METRICS, device="cpu", batch_size=3)) == base
    assert item_id(dist, ref, report_options()) != base  # the default adds topiq_fr
    assert item_id(dist, ref, report_options(metrics="topiq_fr,psnr_y,ssim_y")) == item_id(
        dist, ref, report_options()
    )
    assert item_id(dist, ref, report_options(metrics=METRICS, every=2)) != base
    assert item_id(dist, ref, report_options(metrics=METRICS, gallery=0)) != base
    # A copy is another item (its path), and so is the same file after a change of content
    # in its last MiB, size and mtime kept.
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(3 << 20))
    first = item_id(str(big), ref, report_options(metrics=METRICS))
    stat = big.stat()
    with open(big, "r+b") as fh:
        fh.seek((3 << 20) - 10)
        fh.write(b"x")
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert big.stat().st_mtime_ns == stat.st_mtime_ns
    assert item_id(str(big), ref, report_options(metrics=METRICS)) != first


# ---------------------------------------------------------------------------- in-process


def test_batch_gives_each_item_its_report(in_process, manifest, videos, tmp_path):
    result = in_process
    assert (result.done, result.failed, result.skipped, result.runner) == (5, 1, 0, "in-process")
    catalog = pd.read_parquet(result.catalog_path)
    assert list(catalog["row"]) == [1, 2, 3, 4, 5, 6]
    assert list(catalog["status"]) == ["done"] * 3 + ["failed"] + ["done"] * 2
    broken = catalog[catalog["label"] == "broken"].iloc[0]
    assert "broken.mp4" in broken["error"] and "not a readable video" in broken["error"]
    folders = _folders(result.out_dir)
    assert set(folders) == set(catalog["id"])
    assert not [p for p in (result.out_dir / "items").iterdir() if p.name.startswith(".")]
    assert (folders[broken["id"]] / FAILED_FILE).is_file()
    assert not (folders[broken["id"]] / ITEM_FILE).exists()
    # Higher CRF, lower scores: the compression order comes out of the catalog.
    done = catalog[catalog["status"] == "done"]
    assert done["psnr_y_mean"].is_monotonic_decreasing
    assert done["ssim_y_mean"].is_monotonic_decreasing
    assert done["psnr_y_mean"].iloc[0] - done["psnr_y_mean"].iloc[-1] > 8
    # Each item's folder holds what `report` gives it alone, and the catalog its statistics.
    for _, row in done.iterrows():
        folder = folders[row["id"]]
        assert {"report.html", "report.json", "frames.parquet", "frames.csv", ITEM_FILE} <= {
            p.name for p in folder.iterdir()
        }
        saved = ScoreResult.load(folder)
        for metric in ("psnr_y", "ssim_y"):
            stats = saved.summary[metric]
            for key in ("mean", "p5", "p1", "min", "median", "max", "std"):
                assert row[f"{metric}_{key}"] == getattr(stats, key)
            assert row[f"{metric}_count"] == stats.count
            worst = saved.report.worst_scenes[metric][0]
            assert row[f"{metric}_worst_scene"] == worst
        assert row["frames"] == len(saved.frames) == CLIP["n_frames"]
        assert row["scenes"] == len(saved.scenes) == 2
    one = done.iloc[2]
    alone, _ = tv.build_report(one["dist"], one["ref"], tmp_path / "alone", metrics=METRICS)
    assert _report_without_run(ScoreResult.load(folders[one["id"]])) == _report_without_run(alone)


def test_rerun_skips_done_items_and_retries_failed_ones_on_request(videos, tmp_path):
    """A network item fails while its server is down and is left alone by a plain rerun;
    with retry_failed it runs again (same id: a URL is its own identity) and succeeds."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/enc30.mkv"
    path = tmp_path / "m.csv"
    path.write_text(
        f"dist,ref\n{videos / 'enc22.mp4'},{videos / 'source.mp4'}\n{url},{videos / 'source.mp4'}\n"
    )
    out = tmp_path / "out"
    first = run_batch(path, out, use_ray=False, metrics=METRICS, timeout=2)
    assert (first.done, first.failed) == (1, 1)
    catalog = pd.read_parquet(out / CATALOG_FILE)
    assert "refused" in catalog["error"].iloc[1]
    done_id, url_id = catalog["id"]
    stamp = (out / "items" / done_id / ITEM_FILE).stat()

    again = run_batch(path, out, use_ray=False, metrics=METRICS, timeout=2)
    assert (again.done, again.failed, again.skipped, again.failed_before) == (0, 0, 2, 1)
    assert list(pd.read_parquet(out / CATALOG_FILE)["status"]) == ["done", "failed"]
    assert list(pd.read_parquet(out / CATALOG_FILE)["resumed"]) == [True, True]
    assert (out / "items" / done_id / ITEM_FILE).stat().st_mtime_ns == stamp.st_mtime_ns

    handler = functools.partial(_QuietHandler, directory=str(videos))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        retried = run_batch(path, out, use_ray=False, metrics=METRICS, timeout=2, retry_failed=True)
    finally:
        server.shutdown()
        server.server_close()
    assert (retried.done, retried.failed, retried.skipped) == (1, 0, 1)
    catalog = pd.read_parquet(out / CATALOG_FILE)
    assert list(catalog["status"]) == ["done", "done"] and list(catalog["id"]) == [done_id, url_id]
    assert (out / "items" / url_id / ITEM_FILE).is_file()
    assert not (out / "items" / url_id / FAILED_FILE).exists()
    assert (out / "items" / done_id / ITEM_FILE).stat().st_mtime_ns == stamp.st_mtime_ns

    # A changed option makes new items: all run again, the earlier folders stay.
    changed = run_batch(path, out, use_ray=False, metrics=METRICS, timeout=2, every=2)
    assert (changed.done, changed.skipped) == (1, 0) and changed.failed == 1  # server is down
    new_ids = set(pd.read_parquet(out / CATALOG_FILE)["id"])
    assert not new_ids & {done_id, url_id}
    assert set(_folders(out)) == new_ids | {done_id, url_id}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_damaged_item_folder_is_made_again(in_process, manifest, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(in_process.out_dir, out)
    catalog = pd.read_parquet(out / CATALOG_FILE)
    victim = catalog["id"].iloc[0]
    report = out / "items" / victim / "report.json"
    report.write_text(report.read_text()[:100])  # e.g. a copy cut short
    assert committed_record(out / "items" / victim, victim) is None
    result = run_batch(manifest, out, use_ray=False, metrics=METRICS)
    assert (result.done, result.skipped) == (1, 5)
    assert committed_record(out / "items" / victim, victim) is not None
    pd.testing.assert_frame_equal(
        _catalog(out), pd.read_parquet(in_process.catalog_path).drop(columns=RUN_DEPENDENT)
    )


def test_worker_keeps_its_model_loaded(videos, nr_checkpoint, tmp_path):
    """Three no-reference items on one worker load the TOPIQ model once, and score as
    `build_report` does for each item alone."""
    path = tmp_path / "m.csv"
    path.write_text("dist\n" + "".join(f"{videos / f'enc{c}.mp4'}\n" for c in CRFS[:3]))
    options = report_options(weights=str(nr_checkpoint), max_frames=2, gallery=0)
    items = read_manifest(path, options)
    worker = ItemWorker(str(tmp_path / "items"))
    (tmp_path / "items").mkdir()
    records = [worker.run(item) for item in items]
    assert [r.status for r in records] == ["done"] * 3, [r.error for r in records]
    assert worker.models_loaded == 1
    assert records[0].models == ("topiq_nr",)
    alone, _ = tv.build_report(items[1].dist, out_dir=tmp_path / "alone", options=options)
    saved = ScoreResult.load(tmp_path / "items" / items[1].id)
    pd.testing.assert_frame_equal(saved.frames, alone.frames)


def test_cli_resume_and_clean_errors(in_process, manifest, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(in_process.out_dir, out)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["batch", str(manifest), "--out", str(out), "--metrics", METRICS, "--no-ray"]
    )
    assert result.exit_code == 1
    assert "6 items: 0 done, 0 failed, 5 skipped (done before), 1 failed before" in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: 1 item(s) failed")
    assert "Traceback" not in result.output

    result = runner.invoke(cli, ["batch", str(manifest), "--no-ray", "--address", "auto"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: --address joins a Ray cluster and --no-ray")

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    result = runner.invoke(cli, ["batch", str(manifest), "--address", "auto"])
    assert result.exit_code == 1
    assert "pip install 'topiq-video[ray]'" in result.output
    with pytest.raises(InvalidInputError, match=r"topiq-video\[ray\]"):
        run_batch(manifest, tmp_path / "x", use_ray=True, metrics=METRICS)
    # Without Ray installed the default is the in-process runner.
    result = runner.invoke(cli, ["batch", str(manifest), "--out", str(out), "--metrics", METRICS])
    assert "in-process" in result.output

    bad = tmp_path / "bad.csv"
    bad.write_text("dist,ref,every\na.mp4,b.mp4,often\n")
    result = runner.invoke(cli, ["batch", str(bad), "--metrics", METRICS, "--no-ray"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: Manifest {str(bad)!r} line 2: every must be a whole number, got 'often'."
    ]


# ---------------------------------------------------------------------------- the page


@pytest.mark.browser
@pytest.mark.skipif(not browser_available(), reason="needs Chromium")
def test_index_page_renders_offline_with_working_links(in_process):
    index = in_process.index_path
    catalog = pd.read_parquet(in_process.catalog_path)
    with Browser() as browser:
        browser.open(index)
        assert browser.wait_for("document.documentElement.getAttribute('data-rendered')") == "true"
        assert browser.log.errors == []
        assert browser.log.dialogs == []  # the label's <script> did not run
        assert all(u.startswith(("file://", "data:")) for u in browser.log.requests)
        page = index.resolve().as_uri()
        assert all(u == page or u.startswith("data:") for u in browser.log.requests)
        links = browser.evaluate(
            "Array.from(document.querySelectorAll('main a[href]')).map(a => a.getAttribute('href'))"
        )
        items = [h for h in links if h.startswith("items/")]
        assert len(items) >= len(catalog)  # the table, plus the worst titles
        for href in items:
            assert (index.parent / href).is_file(), href
        labels = browser.evaluate(
            "Array.from(document.querySelectorAll('#items-table tbody tr td:first-child a'))"
            ".map(a => a.textContent)"
        )
        assert EVIL in labels
        assert browser.evaluate("document.querySelectorAll('script').length") == 4
        plots = browser.evaluate("document.querySelectorAll('.js-plotly-plot').length")
        assert plots == 2  # one distribution per metric
        # Filters: by status, then by text.
        shown = "Array.from(document.querySelectorAll('#items-table tbody tr')).filter(r => !r.hidden).length"
        browser.evaluate(
            "(() => { const s = document.getElementById('filter-status'); s.value = 'failed';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        assert browser.evaluate(shown) == 1
        browser.evaluate(
            "(() => { const s = document.getElementById('filter-status'); s.value = '';"
            " s.dispatchEvent(new Event('change'));"
            " const t = document.getElementById('filter-text'); t.value = 'CRF 28';"
            " t.dispatchEvent(new Event('input')); })()"
        )
        assert browser.evaluate(shown) == 1  # "crf 28"
        # Sorting by a metric's mean puts the lowest first (rows without a value last).
        browser.evaluate(
            "(() => { const t = document.getElementById('filter-text'); t.value = '';"
            " t.dispatchEvent(new Event('input'));"
            " const th = Array.from(document.querySelectorAll('#items-table th'))"
            ".find(h => h.textContent.startsWith('psnr_y') && h.textContent.endsWith('mean'));"
            " th.click(); })()"
        )
        first = browser.evaluate(
            "document.querySelector('#items-table tbody tr').getAttribute('id')"
        )
        lowest = catalog.loc[catalog["psnr_y_mean"].idxmin(), "id"]
        assert first == f"item-{lowest}"


# ---------------------------------------------------------------------------- Ray


@pytest.mark.ray
def test_ray_gives_the_same_outputs_as_in_process(ray_instance, manifest, in_process, tmp_path):
    out = tmp_path / "out"
    result = run_batch(manifest, out, workers=2, metrics=METRICS)
    assert (result.runner, result.workers, result.done, result.failed) == ("ray", 2, 5, 1)
    catalog = pd.read_parquet(out / CATALOG_FILE)
    assert os.getpid() not in set(catalog["worker_pid"].dropna())
    assert catalog["worker_pid"].nunique() == 2  # both actors took items
    pd.testing.assert_frame_equal(
        catalog.drop(columns=RUN_DEPENDENT),
        pd.read_parquet(in_process.catalog_path).drop(columns=RUN_DEPENDENT),
    )
    ours, theirs = _folders(out), _folders(in_process.out_dir)
    assert set(ours) == set(theirs)
    for name, folder in ours.items():
        if (folder / ITEM_FILE).exists():
            assert _report_without_run(ScoreResult.load(folder)) == _report_without_run(
                ScoreResult.load(theirs[name])
            )
        else:
            a = json.loads((folder / FAILED_FILE).read_text())
            b = json.loads((theirs[name] / FAILED_FILE).read_text())
            assert a["error"] == b["error"] and a["status"] == b["status"] == "failed"
    print(
        f"ray: first worker answered after {result.worker_start_s:.2f} s; batch {result.elapsed_s:.1f} s"
    )


@pytest.mark.ray
def test_ray_worker_killed_midway_is_replaced_and_its_item_retried(ray_instance, videos, tmp_path):
    """The item reads a named pipe: while the worker waits on it, the worker is killed. A
    fresh worker runs the item again, and this time the pipe brings the video."""
    fifo = tmp_path / "live.mkv"
    os.mkfifo(fifo)
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"dist": str(fifo), "ref": str(videos / "source.mp4")}) + "\n")
    holder = os.open(fifo, os.O_RDWR)  # a writer, so the worker's open returns and it reads
    outcome: dict = {}

    def batch() -> None:
        try:
            outcome["result"] = run_batch(path, tmp_path / "out", workers=1, metrics=METRICS)
        except BaseException as exc:  # reported by the assertions below
            outcome["error"] = exc

    thread = threading.Thread(target=batch, daemon=True)
    thread.start()
    try:
        (first,) = _wait(lambda: _readers(fifo), "the worker to open the pipe")
        os.kill(first, signal.SIGKILL)
        second = _wait(lambda: _readers(fifo) - {first}, "a new worker to open the pipe")
        assert first not in second
        os.write(holder, (videos / "enc30.mkv").read_bytes())
    finally:
        os.close(holder)  # end of the stream
    thread.join(WAIT_S)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert (result.done, result.failed, result.retried) == (1, 0, 1)
    (record,) = result.records.values()
    assert record.attempts == 2 and record.worker_pid != first
    alone, _ = tv.build_report(
        videos / "enc30.mkv", videos / "source.mp4", tmp_path / "alone", metrics=METRICS
    )
    saved = ScoreResult.load(tmp_path / "out" / "items" / record.id)
    pd.testing.assert_frame_equal(saved.frames, alone.frames)


# ---------------------------------------------------------------------------- driver killed


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "topiq_video.cli", "batch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        text=True,
    )


def _output(proc: subprocess.Popen, timeout: float) -> str:
    """What ``proc`` printed; on a timeout it is killed and the output shown."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0]
        raise AssertionError(f"no end after {timeout:g} s; output:\n{output}") from None


@pytest.mark.parametrize("runner", ["in-process", pytest.param("ray", marks=pytest.mark.ray)])
def test_driver_killed_midway_resumes_with_only_the_rest(runner, videos, tmp_path, request):
    """SIGKILL of the command while its third item (a pipe the test holds) is in flight: the
    two finished items stay, nothing half-written looks finished, no worker goes on, and
    the rerun does only the rest, ending with the catalog of an uninterrupted run."""
    fifo = tmp_path / "live.mkv"
    os.mkfifo(fifo)
    source = str(videos / "source.mp4")
    dists = [videos / "enc22.mp4", videos / "enc28.mp4", fifo, videos / "enc34.mp4"]
    path = tmp_path / "m.csv"
    path.write_text("dist,ref\n" + "".join(f"{d},{source}\n" for d in dists))
    out = tmp_path / "out"
    args = [str(path), "--out", str(out), "--metrics", METRICS, "--workers", "1"]
    env = None
    if runner == "ray":
        ray = request.getfixturevalue("ray_instance")
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:")  # the local instance listens on loopback only
        args += ["--address", address]
        env = {"RAY_AUTH_MODE": "token"}  # Ray's setting for joining a token-protected cluster
    else:
        args += ["--no-ray"]
    ids = [i.id for i in read_manifest(path, report_options(metrics=METRICS))]

    holder = os.open(fifo, os.O_RDWR)
    proc = _cli(*args, env=env)
    try:
        (reader,) = _wait(lambda: _readers(fifo), "the third item to start")
        done = [i for i in ids if (out / "items" / i / ITEM_FILE).exists()]
        assert done == ids[:2]
        proc.kill()
        proc.wait(WAIT_S)
        _wait(lambda: not _alive(reader), "the worker to end with the command")
    finally:
        os.close(holder)
        if proc.poll() is None:
            proc.kill()
    # What the killed run left: two finished items, a valid catalog of them, nothing else
    # that a rerun could take for finished.
    assert set(_folders(out)) == set(ids[:2])
    for i in ids[:2]:
        assert committed_record(out / "items" / i, i).status == "done"
    left = pd.read_parquet(out / CATALOG_FILE)
    assert set(left.loc[left["status"] == "done", "id"]) <= set(ids[:2])
    assert set(left.loc[left["status"] != "done", "status"]) <= {"skipped"}
    stamps = {i: (out / "items" / i / ITEM_FILE).stat().st_mtime_ns for i in ids[:2]}

    feeder = _Feeder(fifo, (videos / "enc30.mkv").read_bytes())
    rerun = _cli(*args, env=env)
    try:
        output = _output(rerun, WAIT_S * 2)
    finally:
        feeder.close()
    assert rerun.returncode == 0, output
    assert "4 items: 2 done, 0 failed, 2 skipped (done before)" in output
    assert {i: (out / "items" / i / ITEM_FILE).stat().st_mtime_ns for i in ids[:2]} == stamps
    final = pd.read_parquet(out / CATALOG_FILE)
    assert list(final["resumed"]) == [True, True, False, False]

    feeder = _feed_once(fifo, (videos / "enc30.mkv").read_bytes())
    whole = run_batch(path, tmp_path / "whole", use_ray=False, metrics=METRICS)
    feeder.join(WAIT_S)
    assert whole.done == 4
    pd.testing.assert_frame_equal(_catalog(out), _catalog(tmp_path / "whole"))


def test_catalog_and_index_exist_before_any_item_finishes(manifest, tmp_path):
    """The plan is written first: every item listed as skipped (not run yet)."""
    seen: dict = {}

    def on_progress(event) -> None:
        if event.kind == "planned":
            seen["catalog"] = pd.read_parquet(tmp_path / "out" / CATALOG_FILE)
            seen["index"] = (tmp_path / "out" / INDEX_FILE).is_file()
            raise KeyboardInterrupt  # stop before anything runs

    with pytest.raises(KeyboardInterrupt):
        run_batch(
            manifest, tmp_path / "out", use_ray=False, metrics=METRICS, on_progress=on_progress
        )
    assert list(seen["catalog"]["status"]) == ["skipped"] * 6 and seen["index"]


def test_vmaf_per_row_model_reaches_each_item(videos, tmp_path):
    """VMAF rides along in a batch like in `report`: a row's vmaf_model is the model used,
    and the catalog's means are the items' own (read back from their reports)."""
    pytest.importorskip("imageio_ffmpeg")
    path = tmp_path / "m.csv"
    path.write_text(
        "dist,ref,vmaf_model\n"
        f"{videos / 'enc28.mp4'},{videos / 'source.mp4'},\n"
        f"{videos / 'enc28.mp4'},{videos / 'source.mp4'},vmaf_v0.6.1neg\n"
    )
    result = run_batch(path, tmp_path / "out", use_ray=False, metrics="psnr_y,vmaf", offset=0)
    catalog = pd.read_parquet(result.catalog_path).set_index("row")
    assert list(catalog["status"]) == ["done", "done"]
    folders = _folders(result.out_dir)
    means = []
    for row in (1, 2):
        saved = ScoreResult.load(folders[catalog.loc[row, "id"]])
        assert catalog.loc[row, "vmaf_mean"] == saved.summary["vmaf"].mean
        means.append(saved.summary["vmaf"].mean)
    assert catalog.loc[1, "id"] != catalog.loc[2, "id"]
    # NEG (no enhancement gain) scores this encode differently from the default model.
    assert 0 < means[0] <= 100 and 0 < means[1] <= 100 and means[0] != means[1]
