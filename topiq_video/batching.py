"""Batches that halve on CUDA out-of-memory, never losing an item.

:class:`HalvingBatcher` runs a function over a sequence in chunks of its current batch size.
When a chunk raises ``torch.cuda.OutOfMemoryError`` it empties the CUDA cache, halves the
size and retries the same items in smaller chunks; the smaller size is kept for every later
call, so one OOM costs one retry, not one per batch. A single item that does not fit raises
:class:`~topiq_video.errors.InvalidInputError` with advice instead of the raw CUDA error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence, Sized
from typing import TypeVar

import torch

from topiq_video.errors import InvalidInputError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R", bound=Sized)


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` if it is a positive integer, else :class:`InvalidInputError`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return batch_size


def default_oom_message(device: str, item_name: str) -> str:
    return (
        f"Out of {device} memory with a single {item_name} per batch. Free GPU memory used by "
        "other processes, lower the input resolution, use precision 'fp16' (precision=), or "
        "score on the CPU (device='cpu')."
    )


class HalvingBatcher:
    """Runs ``fn`` over chunks of at most :attr:`batch_size` items, halving on CUDA OOM.

    ``device`` only names the memory in messages; ``item_name`` is what an item is called in
    them ("frame", "pair").
    """

    def __init__(
        self, batch_size: int, *, device: torch.device | str = "cuda", item_name: str = "item"
    ) -> None:
        self._batch_size = check_batch_size(batch_size)
        self._device = str(device)
        self._item_name = item_name
        self._warned = False

    @property
    def batch_size(self) -> int:
        """Current chunk size: the starting one, or smaller for good after an OOM."""
        return self._batch_size

    def run(
        self,
        items: Sequence[T],
        fn: Callable[[Sequence[T]], R],
        *,
        oom_message: Callable[[], str] | None = None,
    ) -> list[R]:
        """``fn`` on consecutive chunks of ``items``, in order; returns one result per chunk.

        ``fn`` must return one result per item of its chunk (anything with ``len``: a list,
        a tensor of shape (len(chunk), ...)). ``oom_message`` builds the error text when a
        single item does not fit (default: :func:`default_oom_message`).
        """
        results: list[R] = []
        start = 0
        n = len(items)
        while start < n:
            chunk = items[start : start + self._batch_size]
            try:
                out = fn(chunk)
            except torch.cuda.OutOfMemoryError as exc:
                if len(chunk) == 1:
                    torch.cuda.empty_cache()
                    message = (oom_message or self._default_message)()
                    raise InvalidInputError(message) from exc
                failed = len(chunk)
            else:
                if len(out) != len(chunk):
                    raise RuntimeError(
                        f"batch function returned {len(out)} results for {len(chunk)} items"
                    )
                results.append(out)
                start += len(chunk)
                continue
            # Outside the except block, so the exception's frames (and their tensors) are gone.
            torch.cuda.empty_cache()
            self._shrink(failed)
        return results

    def _default_message(self) -> str:
        return default_oom_message(self._device, self._item_name)

    def _shrink(self, failed: int) -> None:
        # Halve the batch size until it is below the chunk that failed (a short last chunk
        # may already be below the batch size): sizes stay the configured one over 2**k.
        new_size = self._batch_size
        while new_size >= failed and new_size > 1:
            new_size //= 2
        if not self._warned:
            logger.warning(
                "Out of %s memory with %d %ss per batch; continuing with %d (a smaller "
                "batch_size avoids the retry).",
                self._device,
                failed,
                self._item_name,
                new_size,
            )
            self._warned = True
        else:
            logger.debug(
                "Out of %s memory again: batch size %d -> %d", self._device, failed, new_size
            )
        self._batch_size = new_size


__all__ = ["HalvingBatcher", "check_batch_size", "default_oom_message"]
