"""HalvingBatcher: CUDA out-of-memory simulated on the CPU by a function that raises
``torch.cuda.OutOfMemoryError`` above a batch size."""

from __future__ import annotations

import logging

import pytest
import torch

from topiq_video.batching import HalvingBatcher
from topiq_video.errors import InvalidInputError


class _Work:
    """Doubles its items; raises CUDA OOM for chunks larger than ``fits``."""

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.calls: list[list[int]] = []

    def __call__(self, chunk) -> list[int]:
        self.calls.append(list(chunk))
        if len(chunk) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return [2 * x for x in chunk]


@pytest.fixture
def cache_empties(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    return calls


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_oom_halves_keeps_order_and_remembers_the_size(caplog, cache_empties) -> None:
    work = _Work(fits=3)
    batcher = HalvingBatcher(8, device="cuda:0", item_name="frame")
    items = list(range(11))
    with caplog.at_level(logging.DEBUG, logger="topiq_video"):
        first = batcher.run(items, work)
    assert [x for part in first for x in part] == [2 * x for x in items]
    # 8 fails, 4 fails, then chunks of 2: every item scored once, in order.
    assert [len(c) for c in work.calls] == [8, 4, 2, 2, 2, 2, 2, 1]
    succeeded = [x for c in work.calls if len(c) <= 3 for x in c]
    assert succeeded == items
    assert batcher.batch_size == 2
    assert len(cache_empties) == 2  # once per OOM

    work.calls.clear()
    with caplog.at_level(logging.DEBUG, logger="topiq_video"):
        second = batcher.run(items[:5], work)
    assert [len(c) for c in work.calls] == [2, 2, 1]  # the reduced size is kept
    assert [x for part in second for x in part] == [2 * x for x in items[:5]]
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "cuda:0" in text and "8 frames" in text and "continuing with 4" in text


def test_later_oom_after_shrinking_shrinks_again_without_a_second_warning(caplog) -> None:
    work = _Work(fits=4)
    batcher = HalvingBatcher(8, device="cuda")
    with caplog.at_level(logging.WARNING, logger="topiq_video"):
        batcher.run(list(range(8)), work)
        work.fits = 1  # memory got tighter (another process)
        out = batcher.run(list(range(6)), work)
    assert [x for part in out for x in part] == [2 * x for x in range(6)]
    assert batcher.batch_size == 1
    assert len(_warnings(caplog)) == 1


def test_single_item_that_does_not_fit_is_a_clean_error(cache_empties) -> None:
    batcher = HalvingBatcher(4, device="cuda", item_name="frame")
    with pytest.raises(InvalidInputError) as err:
        batcher.run([1, 2, 3], _Work(fits=0))
    message = str(err.value)
    assert "single frame" in message and "precision" in message and "device='cpu'" in message
    assert isinstance(err.value.__cause__, torch.cuda.OutOfMemoryError)
    with pytest.raises(InvalidInputError, match="^custom advice$"):
        HalvingBatcher(1).run([1], _Work(fits=0), oom_message=lambda: "custom advice")
    assert cache_empties  # memory handed back before giving up


def test_chunk_shorter_than_the_batch_is_split_at_once() -> None:
    work = _Work(fits=2)
    batcher = HalvingBatcher(16)
    out = batcher.run(list(range(5)), work)  # the first chunk already is the whole input (5)
    # 16 -> 8 -> 4 in one step: the next try must be smaller than the 5 that failed.
    assert [len(c) for c in work.calls] == [5, 4, 2, 2, 1]
    assert [x for part in out for x in part] == [0, 2, 4, 6, 8]
    assert batcher.batch_size == 2


def test_other_errors_pass_through_and_results_are_counted() -> None:
    def broken(chunk):
        raise ValueError("not memory")

    batcher = HalvingBatcher(4)
    with pytest.raises(ValueError, match="not memory"):
        batcher.run([1, 2, 3], broken)
    assert batcher.batch_size == 4
    with pytest.raises(RuntimeError, match="2 results for 3 items"):
        batcher.run([1, 2, 3], lambda chunk: list(chunk)[:2])
    assert batcher.run([], broken) == []


def test_tensor_slices_through_ranges() -> None:
    # How TopiqModel uses it: positions in, a tensor of one score per position out.
    x = torch.arange(10.0)
    calls: list[int] = []

    def scores(positions):
        calls.append(len(positions))
        if len(positions) > 3:
            raise torch.cuda.OutOfMemoryError("simulated")
        return x[positions[0] : positions[-1] + 1] * 10

    out = torch.cat(HalvingBatcher(6).run(range(10), scores))
    torch.testing.assert_close(out, x * 10)
    assert calls == [6, 3, 3, 3, 1]


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, None])
def test_batch_size_must_be_a_positive_integer(bad) -> None:
    with pytest.raises(InvalidInputError, match="batch_size must be a positive integer"):
        HalvingBatcher(bad)
