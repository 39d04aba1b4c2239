# Copyright (c) 2026 The TDGAN bundle authors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Uncertainty of the evaluation's numbers: t-intervals over seeds, per-image bootstrap intervals, and both combined."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["t_interval", "bootstrap_interval", "over_seeds", "OVER_SEEDS", "PER_IMAGE"]

OVER_SEEDS = "Student t 95 % interval of the mean over seeds (n - 1 degrees of freedom; none with one seed)"
"""How :func:`t_interval` is computed, as the report states it."""

PER_IMAGE = "percentile bootstrap 95 % interval of the mean over the test images, within one seed"
"""How :func:`bootstrap_interval` is computed, as the report states it."""


def _decimals(values: Sequence[float]) -> int:
    """One more decimal than the most precise of ``values`` (they are stored rounded), at least 3, at most 6."""
    most = 0
    for v in values:
        text = repr(float(v))
        if "e" in text or "inf" in text or "nan" in text:
            return 6
        most = max(most, len(text.split(".")[1].rstrip("0")) if "." in text else 0)
    return min(6, max(3, most + 1))


def t_interval(values: Sequence[float], confidence: float = 0.95, decimals: int | None = None) -> dict[str, Any]:
    """Mean of per-seed values and its Student t interval: ``mean -/+ t_{(1 + confidence) / 2, n - 1} * s / sqrt(n)``
    with ``s`` the sample standard deviation (n - 1 in the denominator).

    With one value there is no spread to measure: ``low`` and ``high`` are None (not a zero-width interval).
    Values identical in every seed give ``low == high == mean``.

    Args:
        values: one value per seed (None entries are left out and ``n`` counts the rest).
        confidence: coverage of the interval.
        decimals: rounding of mean and bounds; default one decimal more than the values carry (at least 3).

    Returns:
        ``{"mean", "low", "high", "n", "per_seed": the values}``, or None when no value is given.
    """
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return None
    d = _decimals(kept) if decimals is None else decimals
    n = len(kept)
    same = all(v == kept[0] for v in kept)
    mean = kept[0] if same else float(np.mean(kept))
    low = high = None
    if n > 1:
        if same or not all(math.isfinite(v) for v in kept):
            low = high = mean if same else None
        else:
            half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * float(np.std(kept, ddof=1)) / math.sqrt(n)
            low, high = round(mean - half, d), round(mean + half, d)
    return {"mean": round(mean, d), "low": low, "high": high, "n": n, "per_seed": list(values)}


def bootstrap_interval(
    values: Sequence[float],
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    decimals: int | None = None,
) -> list[float] | None:
    """Percentile bootstrap interval of the mean of per-image values (e.g. one seed's Dice per test image).

    ``resamples`` resamples of the images with replacement (numpy's ``default_rng(seed)``), each giving a mean; the
    interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of those means. Identical values
    (or a single one) give the zero-width interval ``[v, v]``: resampling cannot move their mean.

    Args:
        values: one value per image.
        resamples: bootstrap resamples.
        seed: seed of the resampling.
        confidence: coverage of the interval.
        decimals: rounding of the bounds; default one decimal more than the values carry (at least 3).

    Returns:
        ``[low, high]``, or None for no values.
    """
    a = np.asarray([float(v) for v in values if v is not None], dtype=float)
    if a.size == 0:
        return None
    d = _decimals(a.tolist()) if decimals is None else decimals
    if np.all(a == a[0]):
        return [round(float(a[0]), d)] * 2
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [round(float(low), d), round(float(high), d)]


def over_seeds(
    trees: Sequence[Any],
    fixed: Collection[str] = (),
    listed: Collection[str] = (),
    confidence: float = 0.95,
) -> Any:
    """Combine one result structure per seed into one: every number becomes its :func:`t_interval` over the seeds.

    Dicts are combined key by key, lists of the same length element by element (a quality matrix stays a matrix of
    intervals); None stays None where every seed has None. Under a key in ``fixed`` (numbers that do not depend on
    the seed: sizes such as ``n``, values of the real data), at any depth, a number is kept as it is when every seed
    agrees; under a key in ``listed`` the values are listed per seed as they are (e.g. per-image values, per-seed
    bootstrap intervals, lists of records). Any other value (text, flags) is kept when the seeds agree, else listed
    per seed.

    Args:
        trees: the same structure once per seed, in the order of the seeds.
        fixed: keys whose numbers do not depend on the seed.
        listed: keys whose values are kept per seed.
        confidence: coverage of the t-intervals.

    Returns:
        the combined structure.
    """
    return _combine(list(trees), None, False, set(fixed), set(listed), confidence)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _combine(
    values: list[Any], key: str | None, below_fixed: bool, fixed: set[str], listed: set[str], confidence: float
) -> Any:
    if key in listed:
        return values
    below_fixed = below_fixed or key in fixed
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, dict) for v in present):
        keys = list(dict.fromkeys(k for v in present for k in v))
        return {
            k: _combine([None if v is None else v.get(k) for v in values], k, below_fixed, fixed, listed, confidence)
            for k in keys
        }
    if all(_is_number(v) for v in present):
        if below_fixed and len(present) == len(values) and all(v == present[0] for v in present):
            return present[0]
        return t_interval(values, confidence)
    if all(isinstance(v, list) for v in present) and len(present) == len(values):
        if len({len(v) for v in present}) == 1 and all(
            _is_number(x) or x is None or isinstance(x, list) for v in present for x in v
        ):
            return [_combine(list(col), None, below_fixed, fixed, listed, confidence) for col in zip(*present)]
    if all(v == values[0] for v in values):
        return values[0]
    return values
