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

from collections.abc import Sequence
from typing import NamedTuple

import torch

from scripts.networks import encode_condition
from scripts.precision import Precision

__all__ = ["REMINDING_SOURCES", "Reminder", "RemindingBatch"]

REMINDING_SOURCES = ("bank", "local")


class RemindingBatch(NamedTuple):
    """One step's reminding batch: label maps (B, 1, *spatial), their earlier-center codes (B,) and the frozen
    teacher's float32 output for them (the targets of the reminding loss)."""

    label: torch.Tensor
    center: torch.Tensor
    target: torch.Tensor


class Reminder:
    """Samples one reminding batch per step and computes its targets with the frozen teacher.

    ``bank``: label maps of earlier centers, carried in the hand-off; a center is drawn uniformly per sample, then
    one of its maps. ``local``: this visit's own label maps (the current batch) under earlier centers' codes, so
    nothing but the weights and the registry has to travel. Either way the cost per step does not depend on how many
    centers came before.

    The teacher is the generator as it arrived, in eval mode, without gradients. With ``bank`` reminding every
    (map, code) pair is fixed, so with ``cache`` the teacher's output for a bank map is computed once, the first time
    the map is drawn, and reused (``4 * image_channels * pixels`` bytes per bank map).

    Args:
        source: ``"bank"`` or ``"local"``.
        earlier_codes: codes of the earlier centers to remind.
        teacher: the frozen generator as it arrived at this visit.
        bank: for ``bank``: uint8 label maps (N, 1, *spatial) of the earlier centers, concatenated.
        bank_counts: for ``bank``: how many of ``bank``'s maps belong to each of ``earlier_codes``, in order.
        seed: seed of the sampler's own random generator (the global RNG is not touched).
        cache: keep the teacher's outputs of bank maps (``bank`` only).
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
    ) -> None:
        if source not in REMINDING_SOURCES:
            raise ValueError(f"reminding source must be one of {REMINDING_SOURCES}, got {source!r}.")
        if not earlier_codes:
            raise ValueError("a Reminder needs at least one earlier center.")
        self.source = source
        self.codes = torch.as_tensor(list(earlier_codes), dtype=torch.long)
        self.teacher = teacher.eval().requires_grad_(False)
        self.num_classes, self.max_centers = teacher.settings["num_classes"], teacher.settings["max_centers"]
        self.gen = torch.Generator().manual_seed(seed)
        self.cache = bool(cache) and source == "bank"
        self.precision = Precision("cpu")  # float32 until the trainer configures its own
        self.memory_format = torch.preserve_format
        self.chunk = 4
        self._outputs: torch.Tensor | None = None  # teacher output per bank map, allocated at first use
        self._cached: torch.Tensor | None = None  # which bank maps have their output in ``_outputs``
        if source == "bank":
            if bank is None or bank_counts is None or len(bank_counts) != len(earlier_codes):
                raise ValueError("bank reminding needs the label bank and one count per earlier center.")
            self.counts = torch.as_tensor(list(bank_counts), dtype=torch.long)
            self.starts = torch.cumsum(self.counts, 0) - self.counts
            self.bank = bank
            self.bank_codes = torch.repeat_interleave(self.codes, self.counts).to(bank.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The sampler's random state (what a resumed visit needs to draw the same reminding batches); the teacher
        and its cache are rebuilt from the incoming hand-off."""
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue the sampler from a saved state (see :py:meth:`state_dict`)."""
        self.gen.set_state(state["gen"])

    def configure(self, precision: Precision, memory_format: torch.memory_format, chunk: int) -> None:
        """Run the teacher as the trainer runs the generator: its precision and memory format; the cache is filled
        in chunks of ``chunk`` maps (one training batch)."""
        self.precision, self.memory_format, self.chunk = precision, memory_format, max(1, int(chunk))

    def sample_index(self, batch_size: int) -> torch.Tensor:
        """``bank`` only: indices into ``bank`` of one reminding batch (their codes are ``bank_codes[index]``)."""
        if self.source != "bank":
            raise ValueError(f"sample_index needs bank reminding, this reminder's source is {self.source!r}.")
        which = torch.randint(len(self.codes), (batch_size,), generator=self.gen)
        offset = (torch.rand(batch_size, generator=self.gen) * self.counts[which]).long()
        return (self.starts[which] + offset).to(self.bank.device)

    def sample(self, labels: Sequence[torch.Tensor], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Label maps (batch_size, 1, *spatial) on the labels' device and their earlier-center codes (batch_size,).

        Args:
            labels: this step's label maps, one (B, 1, *spatial) tensor per online group (``local`` draws from them;
                ``bank`` only takes their device).
            batch_size: reminding batch size.
        """
        device = labels[0].device
        if self.source == "local":
            codes = self.codes[torch.randint(len(self.codes), (batch_size,), generator=self.gen)]
            pool = labels[0] if len(labels) == 1 else torch.cat(list(labels))
            idx = torch.randint(pool.shape[0], (batch_size,), generator=self.gen)
            return pool[idx.to(device)], codes.to(device)
        idx = self.sample_index(batch_size)
        return self.bank[idx].to(device).long(), self.bank_codes[idx].to(device)

    @torch.no_grad()
    def teach(self, label: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's float32 output for label maps under center codes."""
        cond = encode_condition(label, center, self.num_classes, self.max_centers)
        with self.precision.autocast():
            return self.teacher(cond.contiguous(memory_format=self.memory_format)).float()

    def fill_cache(self, index: torch.Tensor | None = None) -> int:
        """Compute and keep the teacher outputs of the bank maps ``index`` (all when None) not cached yet.

        The teacher runs on whole aligned blocks of ``chunk`` maps (block ``b`` = maps ``b * chunk`` to
        ``(b + 1) * chunk - 1``) that hold a missing map: a network's output for one map can differ in the last bits
        with the batch it runs in, so a map's cached output never depends on which maps were drawn with it, and a
        resumed visit rebuilds exactly the cache of the uninterrupted one.

        Returns:
            the number of maps the teacher ran on (0 without the cache).
        """
        if not self.cache:
            return 0
        device = next(self.teacher.parameters()).device
        if self._cached is None:
            self._cached = torch.zeros(len(self.bank), dtype=torch.bool, device=self.bank.device)
        index = torch.arange(len(self.bank), device=self.bank.device) if index is None else index.to(self.bank.device)
        blocks = (index[~self._cached[index]] // self.chunk).unique()
        if len(blocks) == 0:
            return 0
        missing = torch.cat(
            [
                torch.arange(b * self.chunk, min((b + 1) * self.chunk, len(self.bank)), device=self.bank.device)
                for b in blocks
            ]
        )
        for part in missing.split(self.chunk):
            out = self.teach(self.bank[part].to(device).long(), self.bank_codes[part].to(device))
            if self._outputs is None:
                self._outputs = torch.empty((len(self.bank), *out.shape[1:]), dtype=out.dtype, device=out.device)
            self._outputs[part.to(out.device)] = out
            self._cached[part] = True
        return len(missing)

    @property
    def cache_bytes(self) -> int:
        """Memory held by the teacher-output cache."""
        return 0 if self._outputs is None else self._outputs.numel() * self._outputs.element_size()

    def batch(self, labels: Sequence[torch.Tensor], batch_size: int) -> RemindingBatch:
        """One step's reminding batch with its targets (with the cache, the teacher runs only on bank maps never
        drawn before in this visit).

        Args:
            labels: this step's label maps, one (B, 1, *spatial) tensor per online group.
            batch_size: reminding batch size.
        """
        if not self.cache:
            label, center = self.sample(labels, batch_size)
            return RemindingBatch(label, center, self.teach(label, center))
        device = labels[0].device
        idx = self.sample_index(batch_size)
        self.fill_cache(idx)
        target = self._outputs[idx.to(self._outputs.device)].to(device)
        return RemindingBatch(self.bank[idx].to(device).long(), self.bank_codes[idx].to(device), target)
