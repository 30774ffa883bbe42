"""Count, mean and population variance from the engine's sums of shifted values: pure numpy.

:func:`dh_tf.sources.statistics.moments` asks the engine for the count, mean and sample variance of
``D = X - pilot`` per column; this module turns them into the moments of ``X`` and decides where a
pilot was too far from the mean for the variance to be exact (NOTE [ Engine statistics ] in
``sources/statistics.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

PILOT_SPREAD = 1e3
"""A pilot farther than ``sqrt(PILOT_SPREAD)`` standard deviations from the mean is replaced (:func:`far_from_pilot`)."""
MAX_PASSES = 3
"""Passes of :func:`converged_moments` at most: the first, and up to two with a better pilot."""


@dataclass(frozen=True)
class Moments:
    """Per column: its count of non-null values, their mean and population variance (float64; NaN without values)."""

    count: np.ndarray
    mean: np.ndarray
    variance: np.ndarray


def shifted_moments(count: Any, pilot: Any, shifted_mean: Any, shifted_variance: Any) -> Moments:
    """Count, mean and population variance of values X, from those of ``D = X - pilot`` (per column).

    Arithmetic on the engine's results: ``mean = pilot + mean(D)``, the variance is ``D``'s
    (a shift does not change it) with Bessel's correction undone, never negative; NaN stays NaN.

    Args:
        count: the non-null values of each column.
        pilot: the shift of each column (finite).
        shifted_mean: the mean of ``D`` (NaN where ``count`` is 0).
        shifted_variance: the sample variance of ``D`` (as the engine's ``var``: NaN where ``count`` <= 1).

    Returns:
        ``Moments``; a column with no values has a NaN mean and variance, one value a variance 0.

    Example:
        ``shifted_moments([2], [1e9], [0.5], [0.5])`` is count 2, mean ``1e9 + 0.5``, variance 0.25.
    """
    count = np.asarray(count, dtype=np.int64)
    pilot, shifted_mean, shifted_variance = (np.asarray(a, dtype=np.float64) for a in (pilot, shifted_mean, shifted_variance))
    with np.errstate(invalid="ignore", over="ignore"):
        mean = pilot + shifted_mean
        population = np.maximum(shifted_variance * (count - 1) / np.maximum(count, 1), 0.0)  # NaN stays NaN
        one = np.where(np.isfinite(mean), 0.0, np.nan)  # numpy: the variance of one inf or NaN is NaN
    variance = np.where(count > 1, population, np.where(count == 1, one, np.nan))
    return Moments(count=count, mean=np.where(count > 0, mean, np.nan), variance=variance)


def far_from_pilot(pilot: np.ndarray, shifted_mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Per column: the pilot is so far from the mean that the variance lost precision, and a better one exists.

    ``var(D)`` from sums of ``D`` and ``D**2`` loses about ``mean(D)**2 / var`` times the rounding of
    the sums; past ``PILOT_SPREAD`` the mean becomes the pilot of another pass. Where the mean rounds
    to the pilot itself (a constant column), or is not finite, another pass would not change anything.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return (
            np.isfinite(shifted_mean) & np.isfinite(variance)
            & (shifted_mean * shifted_mean > PILOT_SPREAD * variance) & (pilot + shifted_mean != pilot)
        )


def converged_moments(
    shifted_pass: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
    pilot: np.ndarray, *, all_columns: bool,
) -> Moments:
    """Moments from ``shifted_pass``, passed again with the mean as the pilot where the pilot was too far.

    Args:
        shifted_pass: ``(pilot, which) -> (count, mean(D), sample variance of D)`` of the columns at
            the indices ``which``, with ``D = X - pilot``.
        pilot: a first guess of each column's mean; a non-finite one counts as 0.
        all_columns: every pass reduces every column (a refreshing table: the result is one update
            cycle's); otherwise a later pass reduces only the columns whose pilot was too far.

    Returns:
        ``Moments`` of the last pass: at most ``MAX_PASSES`` (a far pilot takes one more, NOTE [ Engine statistics ]).
    """
    pilot = np.where(np.isfinite(pilot), pilot, 0.0)
    k = len(pilot)
    count, shifted_mean, shifted_variance = np.zeros(k, dtype=np.int64), np.full(k, np.nan), np.full(k, np.nan)
    which = np.arange(k)
    for _ in range(MAX_PASSES):
        count[which], shifted_mean[which], shifted_variance[which] = shifted_pass(pilot, which)
        found = shifted_moments(count, pilot, shifted_mean, shifted_variance)
        far = far_from_pilot(pilot, shifted_mean, found.variance)
        if not far.any():
            break
        pilot = np.where(far, found.mean, pilot)
        which = np.arange(k) if all_columns else np.flatnonzero(far)
    return found
