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
"""New label maps that belong to no patient, made from a center's own maps and checked far from every one of them.

A new map takes the anatomy of one source map, deformed (MONAI's random flips and elastic + affine deformation,
nearest-neighbour), and the lesions (connected components of the "relocatable" classes) of ANOTHER source map, each
turned at random and moved to a random place where it lies wholly inside the "host" classes of the new anatomy.
It is kept only if it is no closer to any source map than the center's patients are to each other: its similarity to
every source map (:func:`label_map_similarity`: the mean over foreground classes of the Dice coefficient), and its Dice
of each foreground class alone, must be at most a ceiling that :func:`calibrate_ceiling` derives from the center's own
maps (a quantile of each map's similarity to its nearest map of ANOTHER subject); see ``docs/privacy.md``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Rand2DElastic, Rand3DElastic, RandFlip
from scipy import ndimage

from scripts.data.checks import InputError

__all__ = [
    "DEFAULT_QUANTILE",
    "DEFAULT_CLASS_QUANTILE",
    "MIN_STRATUM_MAPS",
    "Ceiling",
    "LabelMapTooCloseError",
    "NewLabelMaps",
    "class_dice",
    "label_map_similarity",
    "nearest_source_similarity",
    "nearest_other_subject",
    "calibrate_ceiling",
    "resolve_ceiling",
    "check_far_from_sources",
    "lesion_prior",
    "new_label_maps",
    "new_label_bank",
    "check_settings",
    "SETTINGS",
]

DEFAULT_QUANTILE = 0.5
"""Quantile of the center's real-to-real nearest-other-subject similarity that is the default ceiling: the median.
A new map at the ceiling is as close to its nearest patient as the typical patient is to the nearest other patient,
so half of the center's own patients are closer to someone else than any new map is to anyone. A lower quantile asks
new maps to be less like the center's population than most of its patients are, which registered anatomy does not
allow without implausible deformation (measured in ``docs/privacy.md``)."""

DEFAULT_CLASS_QUANTILE = 0.95
"""Quantile of each class's real-to-real nearest-other-subject Dice that is that class's default ceiling. The per-class
bound is there to catch ONE copied class that the mean hides, not to set the typical distance (the mean does): a class
is refused when it is closer to a patient's than it is between 95 % of the center's patients and their nearest other
patient, the convention of the near-copy audit (``scripts.evaluation.memorisation``, quantile 0.05 of real-to-real
distances). With every class at the median instead, only 10-19 % of a center's own patients would pass the joint check
on both demo datasets (50 % pass the mean alone), and new maps on the multi-slice MNI152 demo could not be made. A
class's ceiling is never below the mean's: with few patients whose lesions never overlap, the quantile is 0, and a
class no more alike than the whole map may be is no copied class."""

MIN_STRATUM_MAPS = 8
"""Fewest real maps (of at least 2 subjects) holding one set of classes for that set to get its own mean ceiling
(:class:`Ceiling` ``by_content``); rarer sets are bound by the center's overall quantile."""


class LabelMapTooCloseError(ValueError):
    """A new label map is too similar to one of the real label maps it was made from (or could not be made far, or
    the ceiling cannot be derived from the given maps)."""


@dataclass(frozen=True)
class Ceiling:
    """The highest similarity a new label map may have with any source map.

    Attributes:
        mean: highest :func:`label_map_similarity` (mean foreground Dice) with any source map.
        per_class: class -> highest Dice of that class alone with any source map (a mean over classes could hide one
            copied class); classes not listed are bound by ``mean`` only.
        quantile: the quantile of the center's real-to-real nearest-other-subject distribution ``mean`` is
            (:func:`calibrate_ceiling`), or None for an explicit constant.
        class_quantile: the quantile of each class's distribution ``per_class`` holds, or None.
        by_content: the set of foreground classes a map holds (sorted tuple) -> the mean ceiling of maps holding
            exactly those classes: the same quantile of the real maps holding them. Maps with and without a lesion are
            not equally far apart (a lesion present in one map only counts with Dice 0 in the mean), so one ceiling
            for all would keep a new map with a lesion far more often than one without and skew the new maps' class
            content away from the patients' (measured in ``docs/privacy.md``). Sets not listed use ``mean``.
    """

    mean: float
    per_class: dict[int, float] = field(default_factory=dict)
    quantile: float | None = None
    class_quantile: float | None = None
    by_content: dict[tuple[int, ...], float] = field(default_factory=dict)

    def mean_for(self, maps: torch.Tensor) -> torch.Tensor:
        """(N,) the mean ceiling of each of ``maps``: that of the set of classes it holds, else ``mean``."""
        contents = _contents(maps)
        return torch.tensor([self.by_content.get(c, self.mean) for c in contents], dtype=torch.float32)

    def record(self) -> dict[str, Any]:
        """What a provenance records of the ceiling: the rule, the quantile and the derived values; no patient."""
        rule = (
            f"calibrated: quantile {self.quantile} of the center's real label maps' mean foreground Dice to their "
            f"nearest map of another subject, and quantile {self.class_quantile} of each class's Dice to it (not "
            "below the former)"
            if self.quantile is not None
            else "constant (label_map_settings.ceiling)"
        )
        if self.by_content:
            rule += (
                "; the mean's quantile taken over the maps holding the same classes where at least "
                f"{MIN_STRATUM_MAPS} do"
            )
        return {
            "rule": rule,
            "quantile": self.quantile,
            "class_quantile": self.class_quantile,
            "mean_foreground_dice": round(self.mean, 4),
            "mean_foreground_dice_by_classes_held": {
                ",".join(map(str, c)): round(v, 4) for c, v in sorted(self.by_content.items())
            },
            "per_class_dice": {str(c): round(v, 4) for c, v in sorted(self.per_class.items())},
        }

    def excess(self, maps: torch.Tensor, sources: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """Each of ``maps``' similarity to its nearest source, and for each map what exceeds the ceiling ("" when
        nothing does)."""
        dice = class_dice(maps, sources)
        similarity = _mean_dice(dice, maps.shape[0], sources.shape[0])
        nearest = similarity.max(dim=1).values
        limits = self.mean_for(maps)
        reasons = [
            f"mean foreground Dice {float(v):.3f} > {float(m):.3f}" if v > m else "" for v, m in zip(nearest, limits)
        ]
        for c, limit in sorted(self.per_class.items()):
            if c not in dice:
                continue
            best = torch.nan_to_num(dice[c], nan=0.0).max(dim=1).values
            for i in (best > limit).nonzero().flatten().tolist():
                reasons[i] += ("; " if reasons[i] else "") + f"class {c} Dice {float(best[i]):.3f} > {limit:.3f}"
        return nearest, reasons


@dataclass
class NewLabelMaps:
    """New label maps with what may be said about them.

    Attributes:
        maps: uint8 label maps (N, 1, *spatial).
        nearest_similarity: (N,) each map's similarity (:func:`label_map_similarity`) to its nearest source map.
        provenance: one dict per map for a dataset's provenance: the transform chain with its settings, the
            similarity to the nearest source, the ceiling (its rule, quantile and values), how many draws it took.
            Never which source map it was made from, nor the drawn parameters (see :func:`new_label_maps`).
        ceiling: the ceiling the maps were checked against.
    """

    maps: torch.Tensor
    nearest_similarity: torch.Tensor
    provenance: list[dict[str, Any]] = field(default_factory=list)
    ceiling: Ceiling | None = None


def _contents(maps: torch.Tensor) -> list[tuple[int, ...]]:
    """Each map's foreground classes, as a sorted tuple."""
    flat = maps.flatten(1)
    return [tuple(int(c) for c in row.unique() if int(c) != 0) for row in flat]


def _check_maps(maps: torch.Tensor, what: str) -> None:
    """Raise unless ``maps`` is an integer tensor (N >= 1, 1, *spatial) with 2 or 3 spatial dimensions."""
    if not isinstance(maps, torch.Tensor) or maps.ndim not in (4, 5) or maps.shape[1] != 1 or maps.shape[0] < 1:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"{what}: expected label maps (N >= 1, 1, *spatial) with 2 or 3 spatial dims, got {shape}.")
    if maps.is_floating_point() or maps.is_complex():
        raise ValueError(f"{what}: expected integer label maps (uint8), got dtype {maps.dtype}.")


def class_dice(a: torch.Tensor, b: torch.Tensor, chunk: int = 32) -> dict[int, torch.Tensor]:
    """The Dice coefficient ``2 |A_c & B_c| / (|A_c| + |B_c|)`` of every foreground class ``c`` present in ``a`` or
    ``b``, for every map of ``a`` against every map of ``b``: class -> an (N, M) float64 matrix, NaN where the class is
    absent from both maps of a pair. One matrix product per class (``monai.metrics.DiceMetric`` compares aligned pairs
    only, so an (N, M) matrix would need N * M copies).

    Args:
        a: label maps (N, 1, *spatial), integer.
        b: label maps (M, 1, *spatial), integer, with the same spatial shape.
        chunk: maps of ``a`` handled per matrix product (bounds memory for 3D volumes).

    Raises:
        ValueError: not integer label maps, or different spatial shapes.
    """
    _check_maps(a, "label map comparison a")
    _check_maps(b, "label map comparison b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"label maps to compare must share their shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    a2, b2 = a.flatten(1).cpu(), b.flatten(1).cpu()
    classes = [int(c) for c in torch.cat([a2.unique(), b2.unique()]).unique() if int(c) != 0]
    out = {}
    for c in classes:
        bc = (b2 == c).double()
        size_b = bc.sum(1)
        dice = torch.empty(a2.shape[0], b2.shape[0], dtype=torch.float64)
        for start in range(0, a2.shape[0], chunk):
            ac = (a2[start : start + chunk] == c).double()
            denominator = ac.sum(1)[:, None] + size_b[None, :]
            d = 2 * (ac @ bc.T) / denominator.clamp(min=1)
            dice[start : start + chunk] = torch.where(denominator > 0, d, math.nan)
        out[c] = dice
    return out


def _mean_dice(dice: dict[int, torch.Tensor], n: int, m: int) -> torch.Tensor:
    """The mean over classes of :func:`class_dice`'s matrices, classes absent from both maps left out; 1 where no
    class is present in either map. (N, M) float32."""
    if not dice:
        return torch.ones(n, m)
    stacked = torch.stack(list(dice.values()))
    counted = (~stacked.isnan()).sum(0)
    total = torch.nan_to_num(stacked, nan=0.0).sum(0)
    return torch.where(counted > 0, total / counted.clamp(min=1), 1.0).float()


def label_map_similarity(a: torch.Tensor, b: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Similarity of every label map of ``a`` to every label map of ``b``: the mean, over the foreground classes
    present in at least one map of the pair, of the Dice coefficient ``2 |A_c & B_c| / (|A_c| + |B_c|)``.

    A class absent from both maps of a pair is left out of that pair's mean (it says nothing about the pair); a class
    present in only one of them counts with Dice 0. Two maps with no foreground at all have similarity 1. Class 0 is
    the background. Computed from :func:`class_dice`.

    Args:
        a: label maps (N, 1, *spatial), integer.
        b: label maps (M, 1, *spatial), integer, with the same spatial shape.
        chunk: maps of ``a`` handled per matrix product (bounds memory for 3D volumes).

    Returns:
        an (N, M) float32 matrix in [0, 1].

    Raises:
        ValueError: not integer label maps, or different spatial shapes.
    """
    return _mean_dice(class_dice(a, b, chunk), a.shape[0], b.shape[0])


def nearest_source_similarity(maps: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """(N,) each map's :func:`label_map_similarity` to its most similar source map."""
    return label_map_similarity(maps, sources).max(dim=1).values


def _subject_groups(subjects: Sequence[str] | None, n: int) -> torch.Tensor:
    """(N,) one integer per subject; without ``subjects`` every map is its own subject."""
    if subjects is None:
        return torch.arange(n)
    subjects = list(subjects)
    if len(subjects) != n:
        raise ValueError(f"need one subject per label map, got {len(subjects)} subjects for {n} maps.")
    index = {s: i for i, s in enumerate(dict.fromkeys(subjects))}
    return torch.tensor([index[s] for s in subjects])


def nearest_other_subject(
    maps: torch.Tensor, subjects: Sequence[str] | None = None
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """How close a center's real label maps come to each other, subject to subject.

    Args:
        maps: the center's label maps (N, 1, *spatial), integer.
        subjects: each map's subject (several slices of one patient share one); None: every map is its own subject.
            Maps of the same subject are never each other's neighbour: a slice's neighbouring slice says nothing
            about how alike patients are.

    Returns:
        ``(nearest, per_class)``: (N,) each map's :func:`label_map_similarity` to its most similar map of another
        subject; and class -> the Dice of that class alone with the most similar map of another subject, for each map
        holding the class (maps without it left out).

    Raises:
        LabelMapTooCloseError: the maps belong to fewer than 2 subjects (there is no other subject to compare with).
    """
    _check_maps(maps, "nearest_other_subject maps")
    groups = _subject_groups(subjects, maps.shape[0])
    same = groups[:, None] == groups[None, :]
    if bool(same.all()):
        raise LabelMapTooCloseError(
            f"the ceiling cannot be derived from {maps.shape[0]} label map(s) of one subject: it needs maps of at "
            "least 2 subjects; give more subjects, or set an explicit label_map_settings.ceiling."
        )
    dice = class_dice(maps, maps)
    similarity = _mean_dice(dice, maps.shape[0], maps.shape[0]).masked_fill(same, -1.0)
    per_class = {}
    for c, d in dice.items():
        holds = (maps == c).flatten(1).any(1)
        best = torch.nan_to_num(d, nan=0.0).masked_fill(same, -1.0).max(dim=1).values
        per_class[c] = best[holds].float()
    return similarity.max(dim=1).values, per_class


def calibrate_ceiling(
    maps: torch.Tensor,
    subjects: Sequence[str] | None = None,
    quantile: float = DEFAULT_QUANTILE,
    class_quantile: float = DEFAULT_CLASS_QUANTILE,
    by_content: bool = True,
) -> Ceiling:
    """The ceiling a center derives from its own label maps (:func:`nearest_other_subject`): the ``quantile`` of its
    maps' mean foreground Dice to their nearest map of another subject, and the ``class_quantile`` of each class's
    Dice to it (but not below the mean's ceiling), for each class held by maps of at least 2 subjects (a class only
    one subject holds has no such distribution; it stays bound by the mean).

    Args:
        maps: the center's label maps (N, 1, *spatial), integer.
        subjects: each map's subject, or None (every map its own).
        quantile: in (0, 1]; default :data:`DEFAULT_QUANTILE` (the median).
        class_quantile: in (0, 1]; default :data:`DEFAULT_CLASS_QUANTILE`.
        by_content: also the mean's quantile over the maps holding each set of classes (:class:`Ceiling`
            ``by_content``); False: one mean ceiling for every map.

    Raises:
        ValueError: a quantile outside (0, 1].
        LabelMapTooCloseError: maps of fewer than 2 subjects.
    """
    for name, value in (("ceiling_quantile", quantile), ("ceiling_class_quantile", class_quantile)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
            raise InputError(f"{name} must be a number in (0, 1], got {value!r}.")
    nearest, per_class = nearest_other_subject(maps, subjects)
    groups = _subject_groups(subjects, maps.shape[0])
    mean = _quantile(nearest, quantile)
    contents = _contents(maps)
    kinds = {}
    for content in sorted(set(contents)) if by_content else []:
        held = torch.tensor([c == content for c in contents])
        if int(held.sum()) >= MIN_STRATUM_MAPS and groups[held].unique().numel() >= 2:
            kinds[content] = _quantile(nearest[held], quantile)
    classes = {}
    for c, values in per_class.items():
        holders = groups[(maps == c).flatten(1).any(1)]
        if holders.unique().numel() >= 2:
            # never below the mean's ceiling: a class no more alike than the whole map may be is no copied class
            classes[c] = max(_quantile(values, class_quantile), mean)
    return Ceiling(mean, classes, float(quantile), float(class_quantile), kinds)


def _quantile(values: torch.Tensor, q: float) -> float:
    """The ``q`` quantile of ``values`` (linear interpolation, as ``torch.quantile``)."""
    return float(torch.quantile(values.double(), torch.tensor(float(q), dtype=torch.float64)))


def resolve_ceiling(
    sources: torch.Tensor,
    ceiling: float | Ceiling | None = None,
    ceiling_quantile: float = DEFAULT_QUANTILE,
    subjects: Sequence[str] | None = None,
    ceiling_class_quantile: float = DEFAULT_CLASS_QUANTILE,
    ceiling_by_content: bool = True,
) -> Ceiling:
    """The :class:`Ceiling` a setting means: None (the default) calibrates it from ``sources``
    (:func:`calibrate_ceiling` at ``ceiling_quantile`` and ``ceiling_class_quantile``); a number is an explicit
    constant on the mean foreground Dice (no per-class bound); a :class:`Ceiling` is used as it is.

    Raises:
        ValueError: a number outside (0, 1] or a quantile outside (0, 1].
        LabelMapTooCloseError: calibration from maps of fewer than 2 subjects.
    """
    if isinstance(ceiling, Ceiling):
        return ceiling
    if ceiling is None:
        return calibrate_ceiling(sources, subjects, ceiling_quantile, ceiling_class_quantile, ceiling_by_content)
    if isinstance(ceiling, bool) or not isinstance(ceiling, (int, float)) or not 0.0 < float(ceiling) <= 1.0:
        raise InputError(f"ceiling must be null (calibrated) or a number in (0, 1], got {ceiling!r}.")
    return Ceiling(float(ceiling))


def check_far_from_sources(
    new_maps: torch.Tensor,
    sources: torch.Tensor,
    ceiling: float | Ceiling | None = None,
    subjects: Sequence[str] | None = None,
    ceiling_quantile: float = DEFAULT_QUANTILE,
    ceiling_class_quantile: float = DEFAULT_CLASS_QUANTILE,
) -> torch.Tensor:
    """Refuse label maps that are too close to a real one: the check a synthesis run makes before writing anything.

    Args:
        new_maps: the label maps to be shared or synthesised from (N, 1, *spatial), integer.
        sources: the real label maps they must stay far from (M, 1, *spatial), e.g. all of a center's training maps.
        ceiling: the :class:`Ceiling`, an explicit constant on the mean foreground Dice, or None: calibrated from
            ``sources`` and ``subjects`` (:func:`resolve_ceiling`).
        subjects: the sources' subjects (for the calibration).
        ceiling_quantile: the calibration's quantile.
        ceiling_class_quantile: the calibration's per-class quantile.

    Returns:
        (N,) each new map's similarity to its nearest source, all within the ceiling.

    Raises:
        LabelMapTooCloseError: some map exceeds the ceiling, naming the first such map and what exceeds.
    """
    if isinstance(new_maps, torch.Tensor) and new_maps.ndim in (4, 5) and new_maps.shape[0] == 0:
        return torch.zeros(0)
    _check_maps(new_maps, "check_far_from_sources new_maps")
    limit = resolve_ceiling(sources, ceiling, ceiling_quantile, subjects, ceiling_class_quantile)
    nearest, reasons = limit.excess(new_maps, sources)
    close = [i for i, r in enumerate(reasons) if r]
    if close:
        raise LabelMapTooCloseError(
            f"{len(close)} of {len(nearest)} label maps are closer to a real source map than the ceiling allows "
            f"({limit.record()['rule']}), first: map {close[0]}: {reasons[close[0]]}; use label maps made by "
            "scripts.data.label_maps.new_label_maps, not patients' own maps."
        )
    return nearest


def _fill_from_neighbours(label: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``label`` with the pixels of ``mask`` replaced by the class of their nearest pixel outside ``mask``."""
    if not mask.any() or mask.all():
        return np.where(mask, 0, label).astype(label.dtype)
    # scipy's Euclidean distance transform gives the nearest outside pixel of every masked one; MONAI has no such fill
    _, nearest = ndimage.distance_transform_edt(mask, return_indices=True)
    return label[tuple(nearest)]


def _components(label: np.ndarray, classes: Sequence[int]) -> list[np.ndarray]:
    """The connected components (full connectivity) of the pixels of ``classes``, each cropped to its bounding box
    with its own class values and 0 elsewhere; touching lesion classes (e.g. a necrotic core in its tumour) move
    together."""
    mask = np.isin(label, classes)
    parts, _ = ndimage.label(mask, structure=np.ones((3,) * label.ndim))
    return [
        np.where(parts[box] == index, label[box], 0).astype(label.dtype)
        for index, box in enumerate(ndimage.find_objects(parts), start=1)
    ]


def _turn(component: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random flip of each axis and a random order of the axes (one of the square's 8 or the cube's 48 symmetries)."""
    for axis in range(component.ndim):
        if rng.random() < 0.5:
            component = np.flip(component, axis)
    return np.ascontiguousarray(np.transpose(component, rng.permutation(component.ndim)))


def _stretch(component: np.ndarray, stretch: float, rng: np.random.Generator) -> np.ndarray:
    """``component`` resized by an independent factor in [1 - stretch, 1 + stretch] along each axis
    (nearest-neighbour, so class values stay whole): the shape changes, not only its place."""
    if stretch <= 0:
        return component
    factors = rng.uniform(1.0 - stretch, 1.0 + stretch, size=component.ndim)
    # scipy's zoom resizes a small cropped array by per-axis factors; MONAI's Zoom keeps the array's size
    out = ndimage.zoom(component, factors, order=0, grid_mode=True, mode="grid-constant", cval=0)
    return out if (out > 0).any() else component


def lesion_prior(sources: np.ndarray, relocatable: Sequence[int], sigma: float, floor: float = 0.05) -> np.ndarray:
    """Where a center's lesions occur: the fraction of its maps holding a relocatable class at each pixel, smoothed by
    a Gaussian of ``sigma`` (a fraction of the shortest side) and scaled to a maximum of 1, plus ``floor`` everywhere
    (so no place inside the hosts is impossible). A statistic of the whole center: smoothed over many maps, it names
    no patient; it is used at the center only and never leaves it.

    Args:
        sources: the center's maps (N, 1, *spatial), uint8.
        relocatable: the lesion classes.
        sigma: smoothing, as a fraction of the shortest side (> 0).
        floor: weight added everywhere, in [0, 1].
    """
    density = np.isin(sources[:, 0], relocatable).mean(0)
    density = ndimage.gaussian_filter(density, sigma * min(density.shape), mode="constant")
    top = float(density.max())
    return floor + (1.0 - floor) * (density / top if top > 0 else np.ones_like(density))


def _place(
    target: np.ndarray,
    component: np.ndarray,
    allowed: np.ndarray,
    rng: np.random.Generator,
    prior: np.ndarray | None = None,
    spill: float = 0.0,
) -> int:
    """Paste ``component`` (cropped, 0 outside it) into ``target`` at a random offset where all its pixels fall on
    ``allowed`` (uniformly among them, or with probability proportional to ``prior`` at the component's centre);
    ``allowed`` loses the pasted pixels. Where no such offset exists and ``spill`` > 0: at an offset where at most
    that fraction of it falls outside ``allowed``, all of it on non-background pixels of ``target`` (a large lesion
    reaching into a neighbouring class, as real ones do, instead of being dropped). Returns 0 when it was not
    placed, 1 when wholly inside, 2 when partly outside ``allowed``."""
    kernel = component > 0
    if any(k > s for k, s in zip(kernel.shape, allowed.shape)):
        return 0
    conv = F.conv2d if allowed.ndim == 2 else F.conv3d
    weights = torch.from_numpy(kernel.astype(np.float32))[None, None]

    def under(mask: np.ndarray) -> torch.Tensor:  # pixels of ``mask`` under the component at every offset
        return conv(torch.from_numpy(mask.astype(np.float32))[None, None], weights)[0, 0]

    size = float(kernel.sum())
    hits = under(allowed)
    offsets, placed = (hits >= size - 0.5).nonzero(), 1
    if len(offsets) == 0 and spill > 0:
        offsets, placed = ((hits >= (1.0 - spill) * size - 0.5) & (under(target > 0) >= size - 0.5)).nonzero(), 2
    if len(offsets) == 0:
        return 0
    if prior is None:
        pick = int(rng.integers(len(offsets)))
    else:
        centres = offsets.numpy() + np.array(kernel.shape) // 2
        weights = prior[tuple(centres.T)].astype(np.float64)
        pick = int(rng.choice(len(offsets), p=weights / weights.sum()))
    start = offsets[pick].tolist()
    box = tuple(slice(s, s + k) for s, k in zip(start, kernel.shape))
    target[box] = np.where(kernel, component, target[box])
    allowed[box] &= ~kernel
    return placed


def _spatial_transforms(
    spatial_dims: int,
    spatial_size: Sequence[int],
    flip_axes: Sequence[int],
    rotate: float,
    scale: float,
    translate: float,
    elastic_spacing: float,
    elastic_magnitude: float,
) -> tuple[list[Any], str]:
    """MONAI's random flips and one elastic + affine deformation (one nearest-neighbour resampling, not two), with
    lengths given as fractions of the image side converted to pixels; and a description of their settings."""
    side = float(min(spatial_size))
    spacing = max(2.0, elastic_spacing * side)
    magnitude = elastic_magnitude * side
    flips = [RandFlip(prob=0.5, spatial_axis=int(axis)) for axis in flip_axes]
    common = {
        "prob": 1.0,
        "rotate_range": [rotate] * (1 if spatial_dims == 2 else 3),
        "scale_range": [scale] * spatial_dims,
        "translate_range": [translate * s for s in spatial_size],
        "mode": "nearest",
        "padding_mode": "zeros",
    }
    if spatial_dims == 2:
        elastic = Rand2DElastic(spacing=spacing, magnitude_range=(magnitude, magnitude), **common)
    else:
        # Rand3DElastic smooths a uniform(-1, 1) field per voxel with a Gaussian of sigma and scales it by magnitude:
        # its std is about magnitude / sqrt(3) / (4 pi sigma^2) ** (3 / 4), so this gives displacements of the same
        # std and correlation length as the 2D control-point grid
        sigma = spacing / 2
        scaled = magnitude * math.sqrt(3.0) * (4 * math.pi * sigma**2) ** 0.75
        elastic = Rand3DElastic(sigma_range=(sigma, sigma), magnitude_range=(scaled, scaled), **common)
    described = (
        f"{type(elastic).__name__}(displacement std about {magnitude:.2g} px, correlated over {spacing:.3g} px, "
        f"rotation within +-{rotate} rad, scale within +-{scale}, shift within +-{translate} of the side, "
        "nearest-neighbour)"
    )
    return [*flips, elastic], described


def _anatomy(
    sources: np.ndarray, rng: np.random.Generator, transforms: list[Any], described: str, relocatable: Sequence[int]
) -> tuple[int, np.ndarray, list[str]]:
    """The deformed anatomy of one randomly drawn source map, without its relocatable classes: its index, the map
    (uint8, *spatial) and the chain that made it."""
    anatomy_index = int(rng.integers(sources.shape[0]))
    anatomy = sources[anatomy_index, 0]
    chain = []
    if relocatable:
        anatomy = _fill_from_neighbours(anatomy, np.isin(anatomy, relocatable))
        chain.append(f"anatomy of one source map, classes {list(relocatable)} removed (filled from the nearest pixel)")
    else:
        chain.append("anatomy of one source map")
    x = torch.from_numpy(anatomy[None].astype(np.float32))
    for t in transforms:
        x = torch.as_tensor(t(x)).as_subclass(torch.Tensor)
        if isinstance(t, RandFlip):
            if t._do_transform:
                chain.append(f"RandFlip(spatial_axis={t.flipper.spatial_axis})")
        else:
            chain.append(described)
    return anatomy_index, x[0].round().clamp(0, 255).numpy().astype(np.uint8), chain


def _with_lesions(
    anatomy: np.ndarray,
    parts: list[np.ndarray],
    origin: str,
    relocatable: Sequence[int],
    hosts: Sequence[int],
    rng: np.random.Generator,
    stretch: float,
    prior: np.ndarray | None,
    spill: float = 0.0,
) -> tuple[np.ndarray, str]:
    """``anatomy`` with ``parts`` (lesion components) each stretched, flipped/turned and placed inside ``hosts``
    (up to ``spill`` of a component outside them where it fits nowhere wholly inside); and the chain's description."""
    out = anatomy.copy()
    allowed = np.isin(out, hosts)
    how = [_place(out, _turn(_stretch(p, stretch, rng), rng), allowed, rng, prior, spill) for p in parts]
    placed, spilled = sum(h > 0 for h in how), sum(h == 2 for h in how)
    where = "where the center's smoothed lesion prior puts them" if prior is not None else "uniformly"
    shape = f"stretched by up to +-{stretch} along each axis, " if stretch > 0 else ""
    return out, (
        f"{placed} connected component(s) of classes {list(relocatable)} from {origin}, each {shape}flipped/turned at "
        f"random and moved to a random place ({where}) inside classes {list(hosts)}"
        + (f" ({spilled} reaching over neighbouring classes, at most {spill:g} of each)" if spilled else "")
        + (f" ({len(parts) - placed} dropped: no such place)" if placed < len(parts) else "")
    )


def new_label_maps(
    sources: torch.Tensor,
    count: int,
    seed: int = 0,
    relocatable: Sequence[int] = (),
    hosts: Sequence[int] = (),
    flip_axes: Sequence[int] = (),
    rotate: float = 0.2,
    scale: float = 0.1,
    translate: float = 0.05,
    elastic_spacing: float = 0.25,
    elastic_magnitude: float = 0.03,
    ceiling: float | Ceiling | None = None,
    max_draws: int = 20,
    ceiling_quantile: float = DEFAULT_QUANTILE,
    subjects: Sequence[str] | None = None,
    ceiling_class_quantile: float = DEFAULT_CLASS_QUANTILE,
    lesion_placements: int = 4,
    lesion_stretch: float = 0.2,
    lesion_prior_sigma: float | None = 0.1,
    ceiling_by_content: bool = True,
    lesion_spill: float = 0.0,
) -> NewLabelMaps:
    """``count`` new label maps made from a center's own maps, each within the ceiling of every source map.

    Each candidate: the anatomy of a randomly drawn source map with its relocatable classes removed, a random flip of
    each of ``flip_axes`` (MONAI ``RandFlip``), one elastic + affine deformation (``Rand2DElastic`` /
    ``Rand3DElastic``, nearest-neighbour, background outside); then the connected components of the relocatable
    classes of another source map, each flipped/turned at random and moved to a random offset where it lies wholly
    inside the ``hosts`` classes of the new anatomy (a component with no such place is placed partly over neighbouring
    non-background classes with ``lesion_spill``, else dropped), optionally stretched
    along each axis (``lesion_stretch``) and placed where the center's lesions occur (``lesion_prior_sigma``:
    :func:`lesion_prior`). A candidate closer to any source than the ceiling allows (:meth:`Ceiling.excess`: in the
    mean foreground Dice or in one class's Dice) gets its lesions placed again (up to ``lesion_placements`` placements
    of the same components on the same anatomy: redrawing the whole map instead would keep small lesions more often
    than large ones, which overlap some patient's more), then is redrawn, at most ``max_draws`` times per map. By
    default the ceiling is calibrated from the sources themselves
    (:func:`calibrate_ceiling`: the median of each real map's similarity to its nearest map of another subject, and
    the 95th percentile of each class's Dice to it).

    Random numbers come from a numpy generator seeded with ``seed`` (MONAI's transforms get their own states drawn
    from it); the global RNGs are not touched, so the same inputs and seed always give the same maps.

    What the provenance records, and why not more: the transform chain with its settings (not its drawn values), the
    similarity to the nearest source and the ceiling's rule, quantile and values (statistics of the whole center).
    Neither the source maps' indices, nor their subjects, nor the seed: an index names a patient of
    the center's list, and the seed with the sources replays every draw, so either would let whoever holds the
    center's list tie a shared map (and the image synthesised from it, by a generator that memorises its training
    pairs) to one patient, and undo the deformation back to that patient's own map.

    Args:
        sources: the center's label maps (N, 1, *spatial), integer (uint8), 2 or 3 spatial dims; class 0 background.
        count: how many new maps to make.
        seed: seed of every random draw.
        relocatable: classes whose connected components are moved between maps (the demo's lesion class 3).
        hosts: classes a moved component must lie wholly inside (the demo's brain class 1); needed with
            ``relocatable``.
        flip_axes: spatial axes flipped with probability 0.5 each; only axes where a mirrored anatomy is still
            plausible (the demo's left-right axis is 1). None by default.
        rotate: rotation range in radians (+-, about each axis in 3D).
        scale: relative scale range (+-).
        translate: shift range as a fraction of each side (+-).
        elastic_spacing: spacing of the elastic deformation's control points, as a fraction of the shortest side.
        elastic_magnitude: std of the elastic displacement, as a fraction of the shortest side.
        ceiling: None (default): calibrated from ``sources`` at ``ceiling_quantile``; a number: an explicit
            constant on the mean foreground Dice (no per-class bound; 1.0 checks nothing); or a :class:`Ceiling`.
        max_draws: candidates drawn per map before giving up.
        ceiling_quantile: the calibration's quantile (default :data:`DEFAULT_QUANTILE`, the median).
        subjects: each source map's subject, for the calibration (None: every map is its own subject).
        ceiling_class_quantile: the calibration's per-class quantile (default :data:`DEFAULT_CLASS_QUANTILE`).
        lesion_placements: placements of one candidate's lesion components tried before the candidate is redrawn.
        lesion_stretch: each lesion component is resized by a factor in [1 - s, 1 + s] along each axis
            (nearest-neighbour); 0 keeps its shape.
        lesion_prior_sigma: None: lesions go anywhere inside the hosts (uniformly); a number: placed with
            probability following :func:`lesion_prior` of the sources, smoothed by this fraction of the side.
        ceiling_by_content: calibrate the mean ceiling per set of classes a map holds (:func:`calibrate_ceiling`).
        lesion_spill: 0 (default): a component that fits nowhere wholly inside the hosts is dropped, which drops the
            largest lesions most often; in (0, 1): it is placed where at most this fraction of it lies outside the
            hosts (over other non-background classes, which it then covers).

    Returns:
        the maps (uint8 (count, 1, *spatial)), their similarity to their nearest source, and their provenance.

    Raises:
        ValueError: malformed sources; InputError (a ValueError, one line): a setting out of range.
        LabelMapTooCloseError: ``max_draws`` candidates in a row were all closer to a source than the ceiling allows,
            naming the ceiling and the best similarity reached; or a calibration from maps of fewer than 2 subjects.
    """
    _check_maps(sources, "new_label_maps sources")
    if count < 0:
        raise InputError(f"count must be >= 0, got {count}.")
    if max_draws < 1:
        raise InputError(f"max_draws must be >= 1, got {max_draws}.")
    if not isinstance(ceiling_by_content, bool):
        raise InputError(f"ceiling_by_content must be true or false, got {ceiling_by_content!r}.")
    if isinstance(lesion_placements, bool) or not isinstance(lesion_placements, int) or lesion_placements < 1:
        raise InputError(f"lesion_placements must be an integer >= 1, got {lesion_placements!r}.")
    if not 0.0 <= float(lesion_stretch) < 1.0:
        raise InputError(f"lesion_stretch must be in [0, 1), got {lesion_stretch!r}.")
    if isinstance(lesion_spill, bool) or not isinstance(lesion_spill, int | float) or not 0.0 <= lesion_spill < 1.0:
        raise InputError(f"lesion_spill must be a number in [0, 1), got {lesion_spill!r}.")
    if lesion_prior_sigma is not None and not 0.0 < float(lesion_prior_sigma) <= 1.0:
        raise InputError(f"lesion_prior_sigma must be null (uniform) or in (0, 1], got {lesion_prior_sigma!r}.")
    relocatable, hosts = [int(c) for c in relocatable], [int(c) for c in hosts]
    if relocatable and not hosts:
        raise InputError(f"relocatable classes {relocatable} need host classes to move them into (e.g. hosts=[1]).")
    if set(relocatable) & set(hosts) or 0 in relocatable:
        raise InputError(f"relocatable classes {relocatable} must exclude 0 and the host classes {hosts}.")
    spatial_dims, spatial_size = sources.ndim - 2, tuple(sources.shape[2:])
    if any(not 0 <= int(a) < spatial_dims for a in flip_axes):
        raise InputError(f"flip_axes {list(flip_axes)} must be spatial axes 0..{spatial_dims - 1}.")
    rng = np.random.default_rng(seed)
    transforms, described = _spatial_transforms(
        spatial_dims, spatial_size, flip_axes, rotate, scale, translate, elastic_spacing, elastic_magnitude
    )
    for t in transforms:
        t.set_random_state(state=np.random.RandomState(int(rng.integers(2**31 - 1))))
    limit = (
        resolve_ceiling(sources, ceiling, ceiling_quantile, subjects, ceiling_class_quantile, ceiling_by_content)
        if count
        else None
    )
    record = limit.record() if limit is not None else None
    source_np = sources.cpu().numpy().astype(np.uint8)
    prior = (
        lesion_prior(source_np, relocatable, float(lesion_prior_sigma))
        if relocatable and lesion_prior_sigma is not None and count
        else None
    )
    n = source_np.shape[0]
    maps, nearest, provenance = [], [], []
    for i in range(count):
        draws, best, reason = 0, (math.inf, ""), "not drawn"
        while reason:
            if draws == max_draws:
                raise LabelMapTooCloseError(
                    f"new label map {i + 1} of {count}: {max_draws} draws all came closer to a source map than the "
                    f"ceiling ({record['rule']}; best draw: {best[1]}); give more source maps, stronger deformation "
                    "(elastic_magnitude, rotate, translate), relocatable lesion classes, more max_draws, or a higher "
                    "ceiling_quantile."
                )
            draws += 1
            index, anatomy, chain = _anatomy(source_np, rng, transforms, described, relocatable)
            parts, origin = [], ""
            if relocatable:
                # lesions from another map (recombination) when there is one
                other = int((index + 1 + rng.integers(n - 1)) % n) if n > 1 else index
                parts = _components(source_np[other, 0], relocatable)
                origin = "another source map" if n > 1 else "the same source map (only one given)"
            for placement in range(lesion_placements if parts else 1):
                candidate, placed = anatomy, []
                if relocatable:
                    candidate, described_lesions = _with_lesions(
                        anatomy,
                        parts,
                        origin,
                        relocatable,
                        hosts,
                        rng,
                        float(lesion_stretch),
                        prior,
                        float(lesion_spill),
                    )
                    placed = [described_lesions]
                candidate_t = torch.from_numpy(candidate[None])[None]
                close, reasons = limit.excess(candidate_t, sources)
                similarity, reason = float(close[0]), reasons[0]
                best = min(best, (similarity, reason or f"mean foreground Dice {similarity:.3f}"))
                if not reason:
                    chain = chain + placed + ([f"placement {placement + 1} of the lesions kept"] if placement else [])
                    break
        maps.append(candidate_t[0])
        nearest.append(similarity)
        provenance.append(
            {
                "kind": "new label map (belongs to no patient)",
                "chain": chain,
                "similarity": "mean foreground Dice",
                "similarity_to_nearest_source": round(similarity, 3),
                "ceiling": record,
                "draws": draws,
            }
        )
    empty = torch.zeros((0, *sources.shape[1:]), dtype=torch.uint8)
    return NewLabelMaps(
        maps=torch.stack(maps) if maps else empty,
        nearest_similarity=torch.tensor(nearest, dtype=torch.float32),
        provenance=provenance,
        ceiling=limit,
    )


SETTINGS = tuple(
    p for p in inspect.signature(new_label_maps).parameters if p not in ("sources", "count", "seed", "subjects")
)
"""The keys a ``label_map_settings`` object may hold: :func:`new_label_maps`' settings."""


def check_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """``settings`` (a config's ``label_map_settings``) as a dict, refused in one line (:class:`InputError`) when a
    key is not one of :data:`SETTINGS` (a typo would otherwise be a ``TypeError`` traceback)."""
    settings = dict(settings or {})
    unknown = sorted(str(k) for k in settings if k not in SETTINGS)
    if unknown:
        raise InputError(f"label_map_settings: unknown setting(s) {unknown}; known: {', '.join(SETTINGS)}.")
    return settings


def new_label_bank(
    sources: torch.Tensor, count: int, seed: int = 0, subjects: Sequence[str] | None = None, **settings: Any
) -> NewLabelMaps:
    """The label bank a ``bank`` hand-off carries for one center instead of its patients' maps: ``count`` new maps
    made by :func:`new_label_maps` from the center's ``sources`` (with their ``subjects``), all within the ceiling of
    every source (checked again here). ``settings`` are passed on to :func:`new_label_maps`.

    Returns:
        the :class:`NewLabelMaps` (``maps``: uint8 (count, 1, *spatial); ``ceiling``: what they were checked against).
    """
    made = new_label_maps(sources, count, seed, subjects=subjects, **check_settings(settings))
    check_far_from_sources(made.maps, sources, made.ceiling)
    return made
