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
It is kept only if its similarity to every source map (:func:`label_map_similarity`: the mean over foreground
classes of the Dice coefficient) is at most a ceiling; see ``docs/privacy.md`` for how the default was measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Rand2DElastic, Rand3DElastic, RandFlip
from scipy import ndimage

__all__ = [
    "DEFAULT_CEILING",
    "LabelMapTooCloseError",
    "NewLabelMaps",
    "label_map_similarity",
    "nearest_source_similarity",
    "check_far_from_sources",
    "new_label_maps",
    "new_label_bank",
]

DEFAULT_CEILING = 0.5
"""Highest mean foreground Dice a new label map may have with any source map. Measured on the demo data (64x64,
48 training maps per center): a real training map's mean foreground Dice to its nearest other training map of the
same center has median 0.53 (5th-95th percentile 0.44-0.65); see ``docs/privacy.md``."""


class LabelMapTooCloseError(ValueError):
    """A new label map is too similar to one of the real label maps it was made from (or could not be made far)."""


@dataclass
class NewLabelMaps:
    """New label maps with what may be said about them.

    Attributes:
        maps: uint8 label maps (N, 1, *spatial).
        nearest_similarity: (N,) each map's similarity (:func:`label_map_similarity`) to its nearest source map.
        provenance: one dict per map for a dataset's provenance: the transform chain with its settings, the
            similarity to the nearest source, the ceiling, how many draws it took. Never which source map it was
            made from, nor the drawn parameters (see :func:`new_label_maps`).
    """

    maps: torch.Tensor
    nearest_similarity: torch.Tensor
    provenance: list[dict[str, Any]] = field(default_factory=list)


def _check_maps(maps: torch.Tensor, what: str) -> None:
    """Raise unless ``maps`` is an integer tensor (N >= 1, 1, *spatial) with 2 or 3 spatial dimensions."""
    if not isinstance(maps, torch.Tensor) or maps.ndim not in (4, 5) or maps.shape[1] != 1 or maps.shape[0] < 1:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"{what}: expected label maps (N >= 1, 1, *spatial) with 2 or 3 spatial dims, got {shape}.")
    if maps.is_floating_point() or maps.is_complex():
        raise ValueError(f"{what}: expected integer label maps (uint8), got dtype {maps.dtype}.")


def label_map_similarity(a: torch.Tensor, b: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Similarity of every label map of ``a`` to every label map of ``b``: the mean, over the foreground classes
    present in at least one map of the pair, of the Dice coefficient ``2 |A_c & B_c| / (|A_c| + |B_c|)``.

    A class absent from both maps of a pair is left out of that pair's mean (it says nothing about the pair); a class
    present in only one of them counts with Dice 0. Two maps with no foreground at all have similarity 1. Class 0 is
    the background. Computed for all pairs at once by one matrix product per class (``monai.metrics.DiceMetric``
    compares aligned pairs only, so an (N, M) matrix would need N * M copies).

    Args:
        a: label maps (N, 1, *spatial), integer.
        b: label maps (M, 1, *spatial), integer, with the same spatial shape.
        chunk: maps of ``a`` handled per matrix product (bounds memory for 3D volumes).

    Returns:
        an (N, M) float32 matrix in [0, 1].

    Raises:
        ValueError: not integer label maps, or different spatial shapes.
    """
    _check_maps(a, "label_map_similarity a")
    _check_maps(b, "label_map_similarity b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"label maps to compare must share their shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    a2, b2 = a.flatten(1).cpu(), b.flatten(1).cpu()
    classes = [int(c) for c in torch.cat([a2.unique(), b2.unique()]).unique() if int(c) != 0]
    total = torch.zeros(a2.shape[0], b2.shape[0], dtype=torch.float64)
    counted = torch.zeros_like(total)
    for c in classes:
        bc = (b2 == c).double()
        size_b = bc.sum(1)
        for start in range(0, a2.shape[0], chunk):
            ac = (a2[start : start + chunk] == c).double()
            size_a = ac.sum(1)
            denominator = size_a[:, None] + size_b[None, :]
            present = denominator > 0
            dice = 2 * (ac @ bc.T) / denominator.clamp(min=1)
            total[start : start + chunk] += torch.where(present, dice, 0.0)
            counted[start : start + chunk] += present.double()
    return torch.where(counted > 0, total / counted.clamp(min=1), 1.0).float()


def nearest_source_similarity(maps: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """(N,) each map's :func:`label_map_similarity` to its most similar source map."""
    return label_map_similarity(maps, sources).max(dim=1).values


def check_far_from_sources(
    new_maps: torch.Tensor, sources: torch.Tensor, ceiling: float = DEFAULT_CEILING
) -> torch.Tensor:
    """Refuse label maps that are too close to a real one: the check a synthesis run makes before writing anything.

    Args:
        new_maps: the label maps to be shared or synthesised from (N, 1, *spatial), integer.
        sources: the real label maps they must stay far from (M, 1, *spatial), e.g. all of a center's training maps.
        ceiling: highest allowed :func:`label_map_similarity` to any source.

    Returns:
        (N,) each new map's similarity to its nearest source, all at most ``ceiling``.

    Raises:
        LabelMapTooCloseError: some map's similarity to a source exceeds ``ceiling``, naming the first such map.
    """
    if isinstance(new_maps, torch.Tensor) and new_maps.ndim in (4, 5) and new_maps.shape[0] == 0:
        return torch.zeros(0)
    nearest = nearest_source_similarity(new_maps, sources)
    close = (nearest > ceiling).nonzero().flatten().tolist()
    if close:
        worst = int(nearest.argmax())
        raise LabelMapTooCloseError(
            f"{len(close)} of {len(nearest)} label maps are closer to a real source map than the ceiling {ceiling} "
            f"(mean foreground Dice), first: map {close[0]} at {float(nearest[close[0]]):.3f}, worst: map {worst} at "
            f"{float(nearest[worst]):.3f}; use label maps made by scripts.data.label_maps.new_label_maps, not "
            "patients' own maps."
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


def _place(target: np.ndarray, component: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> bool:
    """Paste ``component`` (cropped, 0 outside it) into ``target`` at a random offset where all its pixels fall on
    ``allowed``; ``allowed`` loses the pasted pixels. False when no such offset exists."""
    kernel = component > 0
    if any(k > s for k, s in zip(kernel.shape, allowed.shape)):
        return False
    conv = F.conv2d if allowed.ndim == 2 else F.conv3d
    # number of allowed pixels under the component at every offset (cross-correlation, no padding)
    hits = conv(
        torch.from_numpy(allowed.astype(np.float32))[None, None],
        torch.from_numpy(kernel.astype(np.float32))[None, None],
    )[0, 0]
    offsets = (hits >= float(kernel.sum()) - 0.5).nonzero()
    if len(offsets) == 0:
        return False
    start = offsets[int(rng.integers(len(offsets)))].tolist()
    box = tuple(slice(s, s + k) for s, k in zip(start, kernel.shape))
    target[box] = np.where(kernel, component, target[box])
    allowed[box] &= ~kernel
    return True


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


def _draw(
    sources: np.ndarray,
    rng: np.random.Generator,
    transforms: list[Any],
    described: str,
    relocatable: Sequence[int],
    hosts: Sequence[int],
) -> tuple[np.ndarray, list[str]]:
    """One candidate new map (uint8, 1, *spatial) and the chain that made it."""
    n = sources.shape[0]
    anatomy_index = int(rng.integers(n))
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
    out = x[0].round().clamp(0, 255).numpy().astype(np.uint8)
    if relocatable:
        # lesions from another map (recombination) when there is one
        lesion_index = int((anatomy_index + 1 + rng.integers(n - 1)) % n) if n > 1 else anatomy_index
        parts = _components(sources[lesion_index, 0], relocatable)
        allowed = np.isin(out, hosts)
        placed = sum(_place(out, _turn(p, rng), allowed, rng) for p in parts)
        origin = "another source map" if n > 1 else "the same source map (only one given)"
        chain.append(
            f"{placed} connected component(s) of classes {list(relocatable)} from {origin}, each flipped/turned at "
            f"random and moved to a random place inside classes {list(hosts)}"
            + (f" ({len(parts) - placed} dropped: no such place)" if placed < len(parts) else "")
        )
    return out[None], chain


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
    ceiling: float = DEFAULT_CEILING,
    max_draws: int = 20,
) -> NewLabelMaps:
    """``count`` new label maps made from a center's own maps, each farther than ``ceiling`` from every source map.

    Each candidate: the anatomy of a randomly drawn source map with its relocatable classes removed, a random flip of
    each of ``flip_axes`` (MONAI ``RandFlip``), one elastic + affine deformation (``Rand2DElastic`` /
    ``Rand3DElastic``, nearest-neighbour, background outside); then the connected components of the relocatable
    classes of another source map, each flipped/turned at random and moved to a random offset where it lies wholly
    inside the ``hosts`` classes of the new anatomy (a component with no such place is dropped). A candidate whose
    :func:`label_map_similarity` to any source exceeds ``ceiling`` is redrawn, at most ``max_draws`` times per map.

    Random numbers come from a numpy generator seeded with ``seed`` (MONAI's transforms get their own states drawn
    from it); the global RNGs are not touched, so the same inputs and seed always give the same maps.

    What the provenance records, and why not more: the transform chain with its settings (not its drawn values) and
    the similarity to the nearest source. Neither the source maps' indices nor the seed: an index names a patient of
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
        ceiling: highest :func:`label_map_similarity` a new map may have with any source map.
        max_draws: candidates drawn per map before giving up.

    Returns:
        the maps (uint8 (count, 1, *spatial)), their similarity to their nearest source, and their provenance.

    Raises:
        ValueError: malformed sources or settings.
        LabelMapTooCloseError: ``max_draws`` candidates in a row were all closer to a source than ``ceiling``, naming
            the ceiling and the best similarity reached.
    """
    _check_maps(sources, "new_label_maps sources")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}.")
    if not 0.0 < ceiling <= 1.0 or max_draws < 1:
        raise ValueError(f"need 0 < ceiling <= 1 and max_draws >= 1, got ceiling {ceiling} and max_draws {max_draws}.")
    relocatable, hosts = [int(c) for c in relocatable], [int(c) for c in hosts]
    if relocatable and not hosts:
        raise ValueError(f"relocatable classes {relocatable} need host classes to move them into (e.g. hosts=[1]).")
    if set(relocatable) & set(hosts) or 0 in relocatable:
        raise ValueError(f"relocatable classes {relocatable} must exclude 0 and the host classes {hosts}.")
    spatial_dims, spatial_size = sources.ndim - 2, tuple(sources.shape[2:])
    if any(not 0 <= int(a) < spatial_dims for a in flip_axes):
        raise ValueError(f"flip_axes {list(flip_axes)} must be spatial axes 0..{spatial_dims - 1}.")
    rng = np.random.default_rng(seed)
    transforms, described = _spatial_transforms(
        spatial_dims, spatial_size, flip_axes, rotate, scale, translate, elastic_spacing, elastic_magnitude
    )
    for t in transforms:
        t.set_random_state(state=np.random.RandomState(int(rng.integers(2**31 - 1))))
    source_np = sources.cpu().numpy().astype(np.uint8)
    maps, nearest, provenance = [], [], []
    for i in range(count):
        draws, best, similarity = 0, math.inf, math.inf
        while similarity > ceiling:
            if draws == max_draws:
                raise LabelMapTooCloseError(
                    f"new label map {i + 1} of {count}: {max_draws} draws all came closer to a source map than the "
                    f"ceiling {ceiling} (mean foreground Dice; best reached {best:.3f}); give more source maps, "
                    "stronger deformation (elastic_magnitude, rotate, translate), relocatable lesion classes, or more "
                    "max_draws."
                )
            draws += 1
            candidate, chain = _draw(source_np, rng, transforms, described, relocatable, hosts)
            candidate_t = torch.from_numpy(candidate)[None]
            similarity = float(nearest_source_similarity(candidate_t, sources))
            best = min(best, similarity)
        maps.append(candidate_t[0])
        nearest.append(similarity)
        provenance.append(
            {
                "kind": "new label map (belongs to no patient)",
                "chain": chain,
                "similarity": "mean foreground Dice",
                "similarity_to_nearest_source": round(similarity, 3),
                "ceiling": ceiling,
                "draws": draws,
            }
        )
    empty = torch.zeros((0, *sources.shape[1:]), dtype=torch.uint8)
    return NewLabelMaps(
        maps=torch.stack(maps) if maps else empty,
        nearest_similarity=torch.tensor(nearest, dtype=torch.float32),
        provenance=provenance,
    )


def new_label_bank(sources: torch.Tensor, count: int, seed: int = 0, **settings: Any) -> torch.Tensor:
    """The label bank a ``bank`` hand-off carries for one center instead of its patients' maps: ``count`` new maps
    (uint8 (count, 1, *spatial)) made by :func:`new_label_maps` from the center's ``sources``, all farther than the
    ceiling from every source (checked again here). ``settings`` are passed on to :func:`new_label_maps`."""
    made = new_label_maps(sources, count, seed, **settings)
    check_far_from_sources(made.maps, sources, settings.get("ceiling", DEFAULT_CEILING))
    return made.maps
