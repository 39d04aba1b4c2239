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
"""Reminding: one batch per step of label maps under EARLIER centers' codes, and the frozen teacher's targets."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

# the component helpers of the label-map machinery: the pool pastes the classes a map lacks as the bank's new maps
# paste their lesions (one implementation of "move a connected component to where it fits")
from scripts.data.label_maps import _components, _place, _turn, new_label_maps
from scripts.networks import encode_condition
from scripts.precision import Precision

__all__ = [
    "REMINDING_SOURCES",
    "REMINDING_REDUCTIONS",
    "Reminder",
    "RemindingBatch",
    "complete_classes",
    "complete_classes_fixed",
    "make_local_pool",
]

REMINDING_SOURCES = ("bank", "local")
REMINDING_REDUCTIONS = ("mean", "sum")
"""How the one reminding batch across all earlier centers is weighted: ``mean`` (the batch's loss, each earlier center
weighing ``1 / (t - 1)``) or ``sum`` (times the number of earlier centers: the reference's sum of one term per earlier
center, in expectation)."""

BLOB_RADIUS = (0.04, 0.12)
"""Range of a pasted blob's radius, as a fraction of the shortest side (lesion-sized on the demo)."""


class RemindingBatch(NamedTuple):
    """One step's reminding batch: label maps (B, 1, *spatial), their earlier-center codes (B,), the frozen
    teacher's float32 output for them (the targets of the reminding loss), and, when the maps are entries of the
    reminder's bank or pool, their entry indices (for cached target features; None otherwise)."""

    label: torch.Tensor
    center: torch.Tensor
    target: torch.Tensor
    index: torch.Tensor | None = None


# --- classes a label map lacks ------------------------------------------------------------------------------------


def _allowed(label: np.ndarray, hosts: Sequence[int]) -> np.ndarray:
    """Where a pasted class may go: the host classes when the map has them, else its foreground, else anywhere."""
    for mask in (np.isin(label, list(hosts)) if hosts else None, label != 0):
        if mask is not None and mask.any():
            return mask
    return np.ones(label.shape, dtype=bool)


def _blob(rng: np.random.Generator, spatial_dims: int, side: int) -> np.ndarray:
    """A random ellipse (ellipsoid in 3D): radius drawn in :data:`BLOB_RADIUS` x ``side``, axes scaled by 0.6-1.4
    and turned at random; a boolean mask cropped to its bounding box."""
    radius = max(1.0, rng.uniform(*BLOB_RADIUS) * side)
    axes = radius * rng.uniform(0.6, 1.4, spatial_dims)
    rotation, _ = np.linalg.qr(rng.normal(size=(spatial_dims, spatial_dims)))
    half = int(math.ceil(axes.max()))
    grid = np.stack(np.meshgrid(*[np.arange(-half, half + 1)] * spatial_dims, indexing="ij"), -1)
    local = grid @ rotation
    mask = ((local / axes) ** 2).sum(-1) <= 1.0
    boxes = [
        np.flatnonzero(mask.any(axis=tuple(a for a in range(spatial_dims) if a != d))) for d in range(spatial_dims)
    ]
    return mask[tuple(slice(b[0], b[-1] + 1) for b in boxes)]


def _paste_clipped(label: np.ndarray, shape: np.ndarray, value: int, allowed: np.ndarray, rng: Any) -> None:
    """Paste ``shape`` (boolean, cropped) with class ``value`` centred on a random allowed pixel, clipped to
    ``allowed`` (the centre pixel always lands, so the class is present afterwards)."""
    where = np.argwhere(allowed)
    centre = where[int(rng.integers(len(where)))]
    starts = centre - np.array(shape.shape) // 2
    target, source = [], []
    for s, k, n in zip(starts, shape.shape, label.shape):
        lo, hi = max(0, s), min(n, s + k)
        target.append(slice(lo, hi))
        source.append(slice(lo - s, hi - s))
    region = shape[tuple(source)] & allowed[tuple(target)]
    label[tuple(target)][region] = value
    label[tuple(centre)] = value


def complete_classes(
    label: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    hosts: Sequence[int] = (),
    shapes: dict[int, list[np.ndarray]] | None = None,
) -> np.ndarray:
    """``label`` (spatial only) with every class 1..num_classes-1 it lacks pasted in once: a connected component of
    that class from ``shapes`` (flipped/turned at random, moved wholly inside the allowed region when it fits there)
    or, for a class with no component to take, a random blob (:func:`_blob`), clipped to the allowed region (the host
    classes, else the foreground; :func:`_allowed`)."""
    out = label.copy()
    side = min(out.shape)
    for k in range(1, num_classes):
        if (out == k).any():
            continue
        allowed = _allowed(out, hosts)
        parts = (shapes or {}).get(k) or []
        if parts:
            part = _turn(parts[int(rng.integers(len(parts)))], rng)
            if _place(out, np.where(part > 0, k, 0).astype(out.dtype), allowed.copy(), rng):
                continue
            _paste_clipped(out, part > 0, k, allowed, rng)
        else:
            _paste_clipped(out, _blob(rng, out.ndim, side), k, allowed, rng)
    return out


def complete_classes_fixed(label: torch.Tensor, num_classes: int, hosts: Sequence[int] = ()) -> torch.Tensor:
    """``label`` maps (B, 1, *spatial) with every class 1..num_classes-1 a map lacks pasted in as a ball of radius
    5 % of the shortest side around a FIXED point of the allowed region (for class k the allowed pixel at the
    fraction k / num_classes of its raster order), clipped to that region.

    A function of each map alone, with no randomness: what a differentially private visit's reminding may add to a
    patient's own map without spreading that patient over other rows, or other rows over theirs.
    """
    out = label.clone()
    spatial = label.shape[2:]
    radius = max(1.0, 0.05 * min(spatial))
    grids = torch.meshgrid(*[torch.arange(n, device=label.device) for n in spatial], indexing="ij")
    for i in range(out.shape[0]):
        m = out[i, 0]
        for k in range(1, num_classes):
            if (m == k).any():
                continue
            allowed = torch.from_numpy(_allowed(m.cpu().numpy(), hosts)).to(m.device)
            where = allowed.flatten().nonzero().flatten()
            pick = int(where[len(where) * k // num_classes])
            centre = [
                (pick // int(np.prod(spatial[d + 1 :], dtype=np.int64))) % spatial[d] for d in range(len(spatial))
            ]
            ball = sum((g - c).float() ** 2 for g, c in zip(grids, centre)) <= radius**2
            m[ball & allowed] = k
            m[tuple(centre)] = k
    return out


def make_local_pool(
    sources: torch.Tensor,
    count: int,
    num_classes: int,
    seed: int = 0,
    label_map_settings: dict[str, Any] | None = None,
) -> torch.Tensor:
    """The pool ``local`` reminding draws from: ``count`` label maps made from ALL of a center's training maps with
    the random label-map transforms (:py:func:`scripts.data.label_maps.new_label_maps`: deformation, lesion
    relocation; no privacy ceiling, the pool never leaves the center), each holding every class 1..num_classes-1
    (:func:`complete_classes`: a class the map lacks is pasted from the center's own components of it, a class the
    center never has as a random blob).

    Args:
        sources: the center's training label maps (N, 1, *spatial), uint8.
        count: pool size.
        num_classes: the generator's classes (every one must be in every pool map).
        seed: seed of every draw (the same inputs and seed give the same pool: a resumed visit rebuilds it).
        label_map_settings: ``new_label_maps`` settings (``relocatable``, ``hosts``, ``flip_axes``, ...); ``hosts``
            is also where missing classes are pasted.

    Returns:
        uint8 label maps (count, 1, *spatial).
    """
    settings = {k: v for k, v in (label_map_settings or {}).items() if k not in ("ceiling", "max_draws")}
    maps = new_label_maps(sources, count, seed, ceiling=1.0, max_draws=1, **settings).maps
    rng = np.random.default_rng([seed, 1])
    hosts = [int(c) for c in settings.get("hosts", ())]
    source_np = sources.cpu().numpy().astype(np.uint8)
    shapes = {k: [p for m in source_np for p in _components(m[0], [k])] for k in range(1, num_classes)}
    done = [complete_classes(m[0].numpy(), num_classes, rng, hosts, shapes) for m in maps]
    return torch.from_numpy(np.stack(done)[:, None])


# --- the sampler ----------------------------------------------------------------------------------------------------


class Reminder:
    """Samples one reminding batch per step and computes its targets with the frozen teacher.

    ``bank``: label maps of earlier centers, carried in the hand-off; a center is drawn uniformly per sample, then
    one of its maps. ``local``: nothing but the weights and the registry travels; the maps are this center's own,
    under earlier centers' codes: with ``pool`` (what a visit builds, :func:`make_local_pool`) an earlier center is
    drawn uniformly per sample, then one of the pool's maps; without it, the current batch's maps, each completed to
    every class (:func:`complete_classes_fixed`). Either way the cost per step does not depend on how many centers
    came before.

    The teacher is the generator as it arrived, in eval mode, without gradients. Bank maps and pool maps under a
    code are fixed *entries* (a bank map under its center's code; each pool map under each earlier code), so with
    ``cache`` the teacher's output for every entry is computed once, at the visit's first reminding batch, and reused
    (``4 * image_channels * pixels`` bytes per entry); and, once the trainer configures a feature network, so are
    that output's perceptual features, for the entries that fit in the feature budget.

    Args:
        source: ``"bank"`` or ``"local"``.
        earlier_codes: codes of the earlier centers to remind.
        teacher: the frozen generator as it arrived at this visit.
        bank: for ``bank``: uint8 label maps (N, 1, *spatial) of the earlier centers, concatenated.
        bank_counts: for ``bank``: how many of ``bank``'s maps belong to each of ``earlier_codes``, in order.
        seed: seed of the sampler's own random generator (the global RNG is not touched).
        cache: keep the teacher's outputs of entries (bank maps, or pool maps under each code).
        pool: for ``local``: uint8 label maps (N, 1, *spatial) to draw from (:func:`make_local_pool`); None: the
            current batch's maps.
        hosts: classes a missing class is pasted into (the label-map settings' ``hosts``).
    """

    def __init__(
        self,
        source: str,
        earlier_codes: Sequence[int],
        teacher: torch.nn.Module,
        bank: torch.Tensor | None = None,
        bank_counts: Sequence[int] | None = None,
        seed: int = 0,
        cache: bool = True,
        pool: torch.Tensor | None = None,
        hosts: Sequence[int] = (),
    ) -> None:
        if source not in REMINDING_SOURCES:
            raise ValueError(f"reminding source must be one of {REMINDING_SOURCES}, got {source!r}.")
        if not earlier_codes:
            raise ValueError("a Reminder needs at least one earlier center.")
        self.source = source
        self.codes = torch.as_tensor(list(earlier_codes), dtype=torch.long)
        self.teacher = teacher.eval().requires_grad_(False)
        self.num_classes, self.max_centers = teacher.settings["num_classes"], teacher.settings["max_centers"]
        self.hosts = [int(c) for c in hosts]
        self.gen = torch.Generator().manual_seed(seed)
        self.precision = Precision("cpu")  # float32 until the trainer configures its own
        self.memory_format = torch.preserve_format
        self.chunk = 4
        self.maps: torch.Tensor | None = None  # the label maps the entries index (bank or pool)
        if source == "bank":
            if bank is None or bank_counts is None or len(bank_counts) != len(earlier_codes):
                raise ValueError("bank reminding needs the label bank and one count per earlier center.")
            self.maps = bank
            self.counts = torch.as_tensor(list(bank_counts), dtype=torch.long)
            self.entry_map = torch.arange(len(bank), device=bank.device)
        elif pool is not None:
            if pool.ndim < 4 or pool.shape[0] == 0 or pool.shape[1] != 1:
                raise ValueError(f"local reminding's pool must be label maps (N >= 1, 1, *spatial), got {pool.shape}.")
            self.maps = pool
            self.counts = torch.full((len(self.codes),), len(pool), dtype=torch.long)
            self.entry_map = torch.arange(len(pool), device=pool.device).repeat(len(self.codes))
        if self.maps is not None:
            self.starts = torch.cumsum(self.counts, 0) - self.counts
            self.entry_codes = torch.repeat_interleave(self.codes, self.counts).to(self.maps.device)
        self.cache = bool(cache) and self.maps is not None
        self._outputs: torch.Tensor | None = None  # teacher output per entry, filled at the first batch
        self._features_fn: Callable[[torch.Tensor], list[torch.Tensor]] | None = None
        self._feature_budget = 0
        self._features: list[torch.Tensor] | None = None  # per feature layer, one row per cached entry
        self._feature_entries = 0  # entries 0 .. _feature_entries - 1 keep their features

    @property
    def pool(self) -> torch.Tensor | None:
        """``local`` reminding's pool of label maps (None for ``bank`` or without a pool)."""
        return self.maps if self.source == "local" else None

    @property
    def entries(self) -> int:
        """Number of (label map, code) entries the sampler draws from (0: the current batch's maps)."""
        return 0 if self.maps is None else len(self.entry_map)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The sampler's random state (what a resumed visit needs to draw the same reminding batches); the teacher,
        the pool (seeded) and the caches are rebuilt by the resumed visit."""
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue the sampler from a saved state (see :py:meth:`state_dict`)."""
        self.gen.set_state(state["gen"])

    def configure(
        self,
        precision: Precision,
        memory_format: torch.memory_format,
        chunk: int,
        features: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
        feature_budget_bytes: int = 0,
    ) -> None:
        """Run the teacher as the trainer runs the generator: its precision and memory format; caches are filled in
        chunks of ``chunk`` entries (one training batch).

        Args:
            precision: the trainer's precision.
            memory_format: the trainer's memory format.
            chunk: cache block size.
            features: the perceptual term's target features of a batch of images (no gradient), to cache per entry;
                None: features are not cached.
            feature_budget_bytes: memory the cached features may take: the first entries that fit keep theirs.
        """
        self.precision, self.memory_format, self.chunk = precision, memory_format, max(1, int(chunk))
        self._features_fn = features if self.cache and feature_budget_bytes > 0 else None
        self._feature_budget = int(feature_budget_bytes)

    def sample_index(self, batch_size: int) -> torch.Tensor:
        """Entry indices of one reminding batch (their maps are ``maps[entry_map[index]]``, their codes
        ``entry_codes[index]``); needs a bank or a pool."""
        if self.maps is None:
            raise ValueError("sample_index needs a bank or a pool; this reminder replays the current batch.")
        which = torch.randint(len(self.codes), (batch_size,), generator=self.gen)
        offset = (torch.rand(batch_size, generator=self.gen) * self.counts[which]).long()
        return (self.starts[which] + offset).to(self.maps.device)

    def _entry_maps(self, index: torch.Tensor) -> torch.Tensor:
        return self.maps[self.entry_map[index]]

    def complete(self, label: torch.Tensor) -> torch.Tensor:
        """The current batch's maps with every class they lack pasted in (:func:`complete_classes_fixed`)."""
        return complete_classes_fixed(label, self.num_classes, self.hosts)

    def sample(self, labels: Sequence[torch.Tensor], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Label maps (batch_size, 1, *spatial) on the labels' device and their earlier-center codes (batch_size,).

        Args:
            labels: this step's label maps, one (B, 1, *spatial) tensor per online group (without a bank or pool the
                maps are drawn from them; otherwise only their device is taken).
            batch_size: reminding batch size.
        """
        device = labels[0].device
        if self.maps is None:
            codes = self.codes[torch.randint(len(self.codes), (batch_size,), generator=self.gen)]
            pool = labels[0] if len(labels) == 1 else torch.cat(list(labels))
            idx = torch.randint(pool.shape[0], (batch_size,), generator=self.gen)
            return self.complete(pool[idx.to(device)]), codes.to(device)
        idx = self.sample_index(batch_size)
        return self._entry_maps(idx).to(device).long(), self.entry_codes[idx].to(device)

    @torch.no_grad()
    def teach(self, label: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's float32 output for label maps under center codes."""
        cond = encode_condition(label, center, self.num_classes, self.max_centers)
        with self.precision.autocast():
            return self.teacher(cond.contiguous(memory_format=self.memory_format)).float()

    def fill_cache(self) -> int:
        """Compute the teacher's output for every entry, once per visit (the first reminding batch calls it), and
        the target features of the first entries the feature budget holds.

        Both run in consecutive blocks of ``chunk`` entries, whatever is drawn first: a network's output for one map
        can differ in the last bits with the batch it runs in, so the cache must not depend on the draws, and a
        resumed visit rebuilds exactly the cache of the uninterrupted one. Every entry is drawn many times in a
        visit (a bank holds a few dozen maps per center), so filling it at once costs what filling it lazily would.

        Returns:
            the number of entries the teacher ran on (0 without the cache, or when it is already filled).
        """
        if not self.cache or self._outputs is not None:
            return 0
        device = next(self.teacher.parameters()).device
        blocks = torch.arange(self.entries, device=self.maps.device).split(self.chunk)
        self._outputs = torch.cat(
            [self.teach(self._entry_maps(b).to(device).long(), self.entry_codes[b].to(device)) for b in blocks]
        )
        if self._features_fn is not None:
            self._fill_features()
        return self.entries

    def _fill_features(self) -> None:
        """Keep the target features of the first entries that fit in the feature budget."""
        sample = self._features_fn(self._outputs[:1])
        per_entry = sum(f[0].numel() * f.element_size() for f in sample)
        self._feature_entries = min(self.entries, self._feature_budget // max(1, per_entry))
        if self._feature_entries == 0:
            self._features_fn = None
            return
        blocks = torch.arange(self._feature_entries, device=self._outputs.device).split(self.chunk)
        self._features = [torch.cat(layer) for layer in zip(*(self._features_fn(self._outputs[b]) for b in blocks))]

    def target_features(self, batch: RemindingBatch) -> list[torch.Tensor] | None:
        """The perceptual term's target features of a reminding batch, rows of cached entries from the feature
        cache and the others computed on their targets; None when features are not cached."""
        if self._features_fn is None or batch.index is None or self._features is None:
            return None
        index = batch.index.to(self._features[0].device)
        kept = index < self._feature_entries
        if bool(kept.all()):
            return [layer[index].to(batch.target.device) for layer in self._features]
        rest = self._features_fn(batch.target[~kept.to(batch.target.device)])
        out = []
        for layer, computed in zip(self._features, rest):
            full = torch.empty((len(index), *layer.shape[1:]), dtype=layer.dtype, device=batch.target.device)
            full[kept.to(full.device)] = layer[index[kept]].to(full.device)
            full[~kept.to(full.device)] = computed.to(layer.dtype)
            out.append(full)
        return out

    @property
    def cache_bytes(self) -> int:
        """Memory held by the teacher-output cache and the feature cache."""
        outputs = 0 if self._outputs is None else self._outputs.numel() * self._outputs.element_size()
        return outputs + sum(f.numel() * f.element_size() for f in self._features or [])

    def batch(self, labels: Sequence[torch.Tensor], batch_size: int) -> RemindingBatch:
        """One step's reminding batch with its targets (with the cache, looked up; without, the teacher runs on it).

        Args:
            labels: this step's label maps, one (B, 1, *spatial) tensor per online group.
            batch_size: reminding batch size.
        """
        if self.maps is None:
            label, center = self.sample(labels, batch_size)
            return RemindingBatch(label, center, self.teach(label, center))
        device = labels[0].device
        idx = self.sample_index(batch_size)
        label, center = self._entry_maps(idx).to(device).long(), self.entry_codes[idx].to(device)
        if not self.cache:
            return RemindingBatch(label, center, self.teach(label, center), idx)
        self.fill_cache()
        return RemindingBatch(label, center, self._outputs[idx.to(self._outputs.device)].to(device), idx)
