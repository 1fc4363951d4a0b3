"""Paired per-frame differences between two encodes, with a block-bootstrap confidence interval.

``b - a`` frame by frame (all metrics are higher-is-better, so a positive difference means B
scores better), averaged, and given a confidence interval that respects the correlation
between neighbouring frames: consecutive frames of a scene score alike, so treating them as
independent samples would make every interval far too narrow.

Rules:

* **Circular block bootstrap** (Politis & Romano, 1992): each resample is built from blocks of
  ``block`` consecutive differences whose starts are drawn uniformly, wrapping past the end to
  the beginning.  Circular rather than the plain moving-block bootstrap because wrapping gives
  every frame the same chance of being drawn; the plain version under-draws the first and last
  ``block - 1`` frames, so its resample means are centred away from the sample mean and its
  percentile interval is shifted.  The price is one artificial join per wrapped block.
* **Percentile interval** of the resample means.  BCa would need an acceleration constant
  from a jackknife over blocks, whose validity for dependent data is not established; the mean
  of a long series is close to normal, where percentile and BCa agree.
* **Block length** when the caller gives none: Politis & White's automatic rule for the
  circular block bootstrap (Politis & White 2004, with the correction of Patton, Politis &
  White 2009), estimated from the differences' own autocorrelation; it grows with the
  correlation (1 for uncorrelated differences) and like ``n ** (1/3)`` with the length.
  Any block, given or estimated, is capped at ``max(1, n // MIN_BLOCKS)`` frames so a resample
  holds at least ``MIN_BLOCKS`` blocks: with a block as long as the series every circular
  resample is a rotation of it, and the interval would collapse to the mean.
* Coverage, measured by simulation (AR(1) differences with neighbour correlation 0.9, true
  difference 0; see tests/test_stats.py): the 95 % interval covers 0 in about 94 % of trials
  at 10,000 frames, 87 % at 500 and 81 % at 250 (short, strongly correlated series hold few
  independent blocks, so any block bootstrap is too narrow there); treating the frames as
  independent (``block=1``) covers about 32 %.
* Reproducible: the resampling uses ``numpy.random.default_rng(seed)``; the same inputs and
  seed give the identical interval.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from topiq_video.errors import InvalidInputError

logger = logging.getLogger(__name__)

DEFAULT_CONFIDENCE = 0.95
"""Two-sided confidence level of the interval."""
DEFAULT_RESAMPLES = 2000
"""Bootstrap resamples."""
DEFAULT_SEED = 0
"""Seed of the resampling generator."""
MIN_BLOCKS = 3
"""Fewest blocks a resample is built from; longer blocks are shortened to ``n // MIN_BLOCKS``."""
_CHUNK_ELEMENTS = 1 << 21
"""Block starts drawn per chunk, bounding working memory (about 16 MiB of int64 per array)."""

VERDICT_BETTER = "better"
VERDICT_WORSE = "worse"
VERDICT_SAME = "no difference"
VERDICT_NO_DATA = "no data"


@dataclass(frozen=True)
class Difference:
    """The mean of ``b - a`` over the frames both have, with its bootstrap interval.

    ``verdict`` is ``"better"`` (B higher, the interval above 0), ``"worse"`` (below 0),
    ``"no difference"`` (the interval holds 0) or ``"no data"`` (no frame with both values).
    ``block`` is the block length used, in frames; ``block_rule`` says where it came from
    (``"given"``, ``"politis-white"``, ``"degenerate"`` when no resampling was needed).
    ``dropped`` counts frames left out because either value was NaN or infinite. ``notes``
    says when a block was shortened to leave enough blocks.
    """

    mean: float | None
    low: float | None
    high: float | None
    n: int
    dropped: int
    block: int | None
    confidence: float
    verdict: str
    resamples: int
    seed: int
    block_rule: str = "given"
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Overall:
    """Per-scene verdicts counted: scenes where B won, tied or lost, and the pooled mean.

    ``mean`` is the mean of ``b - a`` over all frames of all scenes with data (each scene
    weighted by its frame count), or None when no scene had data.
    """

    won: int
    tied: int
    lost: int
    no_data: int
    scenes: int
    frames: int
    mean: float | None


def verdict(low: float | None, high: float | None) -> str:
    """The verdict of an interval: better above 0, worse below 0, no difference across it."""
    if low is None or high is None:
        return VERDICT_NO_DATA
    if low > 0:
        return VERDICT_BETTER
    if high < 0:
        return VERDICT_WORSE
    return VERDICT_SAME


def paired_difference(
    a: Iterable[float] | np.ndarray,
    b: Iterable[float] | np.ndarray,
    *,
    block: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Difference:
    """Mean of ``b - a`` over aligned frames (time order) with a circular block-bootstrap interval.

    Frames where either value is NaN or infinite are dropped pairwise and counted. ``block``
    is the block length in frames (for instance one second of frames); None estimates it
    from the data (Politis & White).
    """
    a_arr = _as_series(a, "a")
    b_arr = _as_series(b, "b")
    if a_arr.shape != b_arr.shape:
        raise InvalidInputError(
            f"a and b must have one value per frame each, for the same frames: "
            f"got {a_arr.size} and {b_arr.size} values; pass the aligned rows of both encodes"
        )
    if not 0.0 < confidence < 1.0:
        raise InvalidInputError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if isinstance(resamples, bool) or not isinstance(resamples, int | np.integer) or resamples < 1:
        raise InvalidInputError(f"resamples must be a positive whole number, got {resamples!r}")
    if block is not None and (
        isinstance(block, bool) or not isinstance(block, int | np.integer) or block < 1
    ):
        raise InvalidInputError(
            f"block must be a whole number of frames, at least 1, or None to estimate it; "
            f"got {block!r}"
        )

    keep = np.isfinite(a_arr) & np.isfinite(b_arr)
    diffs = b_arr[keep] - a_arr[keep]
    n = int(diffs.size)
    dropped = int(a_arr.size - n)
    common = {
        "n": n,
        "dropped": dropped,
        "confidence": float(confidence),
        "resamples": int(resamples),
        "seed": int(seed),
    }
    if n == 0:
        return Difference(
            mean=None,
            low=None,
            high=None,
            block=None,
            verdict=VERDICT_NO_DATA,
            block_rule="degenerate",
            **common,
        )

    if n == 1 or bool(np.all(diffs == diffs[0])):
        # Every resample would hold the same value: the interval is the point itself.
        point = float(diffs[0])
        return Difference(
            mean=point,
            low=point,
            high=point,
            block=1,
            verdict=verdict(point, point),
            block_rule="degenerate",
            **common,
        )

    notes: list[str] = []
    if block is None:
        length = optimal_block_length(diffs)
        rule = "politis-white"
    else:
        length = int(block)
        rule = "given"
    cap = max(1, n // MIN_BLOCKS)
    if length > cap:
        notes.append(
            f"block of {length} frames shortened to {cap}: a resample needs at least "
            f"{MIN_BLOCKS} blocks of the {n} frames; with so few frames the interval is "
            f"likely too narrow"
        )
        length = cap

    mean = float(np.mean(diffs))
    means = _circular_block_means(diffs, length, int(resamples), int(seed))
    tail = (1.0 - confidence) / 2.0
    low, high = (float(v) for v in np.quantile(means, [tail, 1.0 - tail]))
    if dropped:
        logger.debug("paired_difference: %d frames dropped for NaN or inf values", dropped)
    return Difference(
        mean=mean,
        low=low,
        high=high,
        block=length,
        verdict=verdict(low, high),
        block_rule=rule,
        notes=tuple(notes),
        **common,
    )


def overall(differences: Iterable[Difference]) -> Overall:
    """Count the scenes B won, tied and lost, and pool their frame-weighted mean difference."""
    won = tied = lost = no_data = scenes = frames = 0
    total = 0.0
    for diff in differences:
        scenes += 1
        if diff.verdict == VERDICT_BETTER:
            won += 1
        elif diff.verdict == VERDICT_WORSE:
            lost += 1
        elif diff.verdict == VERDICT_SAME:
            tied += 1
        else:
            no_data += 1
        if diff.mean is not None:
            frames += diff.n
            total += diff.mean * diff.n
    return Overall(
        won=won,
        tied=tied,
        lost=lost,
        no_data=no_data,
        scenes=scenes,
        frames=frames,
        mean=total / frames if frames else None,
    )


def optimal_block_length(x: np.ndarray) -> int:
    """Politis & White's automatic block length for the circular block bootstrap of a mean.

    Estimates the spectral density at zero and its weighted derivative from the
    autocovariances with a flat-top lag window, whose bandwidth is the first lag after which
    ``K`` autocorrelations in a row are insignificant. Returns 1 for uncorrelated or
    anti-correlated data.
    """
    x = np.asarray(x, dtype=np.float64)
    n = int(x.size)
    if n < 3:
        return 1
    centred = x - x.mean()
    # Autocovariances at every lag through one zero-padded FFT (biased, divided by n).
    size = 1 << int(math.ceil(math.log2(2 * n)))
    spectrum = np.fft.rfft(centred, size)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n] / n
    if acov[0] <= 0:
        return 1
    rho = acov / acov[0]

    k_n = max(5, math.ceil(math.sqrt(math.log10(n))))
    threshold = 2.0 * math.sqrt(math.log10(n) / n)
    m_max = math.ceil(math.sqrt(n)) + k_n
    # Smallest m such that the K_N autocorrelations after it are all insignificant.
    insignificant = np.abs(rho[1:]) < threshold  # index i is lag i + 1
    m_hat = None
    for m in range(0, min(m_max, n - 1 - k_n) + 1):
        if insignificant[m : m + k_n].all():
            m_hat = m
            break
    # Correlation still significant at every lag searched: the widest window allowed.
    big_m = min(m_max, n - 1) if m_hat is None else min(2 * m_hat, m_max, n - 1)
    if big_m == 0:
        return 1

    lags = np.arange(1, big_m + 1)
    t = lags / big_m
    window = np.where(t <= 0.5, 1.0, 2.0 * (1.0 - t))
    g_zero = acov[0] + 2.0 * np.sum(window * acov[1 : big_m + 1])
    g_one = 2.0 * np.sum(window * lags * acov[1 : big_m + 1])
    if g_zero <= 0:
        return 1
    d_cb = (4.0 / 3.0) * g_zero**2
    b_opt = (2.0 * g_one**2 / d_cb) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    b_max = math.ceil(min(3.0 * math.sqrt(n), n / 3.0))
    return int(min(max(1, round(b_opt)), b_max))


def _as_series(values: Iterable[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidInputError(
            f"{name} must be one value per frame (a 1-D sequence), got shape {arr.shape}"
        )
    return arr


def _circular_block_means(diffs: np.ndarray, block: int, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` circular-block-bootstrap resamples of ``diffs`` (length n each).

    The sum of the block starting at every frame is computed once (from the cumulative sum of
    the series wrapped by one block), so a resample costs one lookup per block, not per frame.
    """
    n = diffs.size
    centre = float(diffs.mean())
    # Centring first keeps the cumulative sums small, so their differences lose no precision.
    wrapped = np.concatenate([diffs - centre, diffs[: block - 1] - centre])
    csum = np.concatenate([[0.0], np.cumsum(wrapped)])
    full, last = divmod(n, block)
    block_sums = csum[block : block + n] - csum[:n]
    tail_sums = csum[last : last + n] - csum[:n] if last else None
    per_resample = full + (1 if last else 0)
    rng = np.random.default_rng(seed)
    out = np.empty(resamples, dtype=np.float64)
    chunk = max(1, _CHUNK_ELEMENTS // per_resample)
    for lo in range(0, resamples, chunk):
        hi = min(resamples, lo + chunk)
        # int32 starts: half the memory traffic of int64, and n is far below 2**31.
        starts = rng.integers(0, n, size=(hi - lo, per_resample), dtype=np.int32)
        sums = block_sums[starts[:, :full]].sum(axis=1)
        if tail_sums is not None:
            sums += tail_sums[starts[:, full]]
        out[lo:hi] = sums
    return centre + out / n
