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
"""One center visit across the center boundary: the incoming hand-off, the teacher, reminding, the outgoing hand-off."""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import monai
import torch
from monai.handlers import CheckpointLoader
from torch.utils.data import Dataset

from scripts.data.centers import label_maps
from scripts.handoff import Handoff, HandoffError, load_handoff, save_handoff

__all__ = ["CenterVisit", "Reminder", "HandoffSaver", "VisitCheckpoints", "latest_checkpoint", "software_versions"]

logger = logging.getLogger(__name__)

REMINDING_SOURCES = ("bank", "local")


class Reminder:
    """Samples one reminding batch per step: label maps under codes of EARLIER centers.

    ``bank``: label maps of earlier centers, carried in the hand-off; a center is drawn uniformly per sample, then
    one of its maps. ``local``: this visit's own label maps (the current batch) under earlier centers' codes, so
    nothing but the weights and the registry has to travel. Either way the cost per step does not depend on how many
    centers came before.

    Args:
        source: ``"bank"`` or ``"local"``.
        earlier_codes: codes of the earlier centers to remind.
        bank: for ``bank``: uint8 label maps (N, 1, *spatial) of the earlier centers, concatenated.
        bank_counts: for ``bank``: how many of ``bank``'s maps belong to each of ``earlier_codes``, in order.
        seed: seed of the sampler's own random generator (the global RNG is not touched).
    """

    def __init__(
        self,
        source: str,
        earlier_codes: Sequence[int],
        bank: torch.Tensor | None = None,
        bank_counts: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        if source not in REMINDING_SOURCES:
            raise ValueError(f"reminding source must be one of {REMINDING_SOURCES}, got {source!r}.")
        if not earlier_codes:
            raise ValueError("a Reminder needs at least one earlier center.")
        self.source = source
        self.codes = torch.as_tensor(list(earlier_codes), dtype=torch.long)
        self.gen = torch.Generator().manual_seed(seed)
        if source == "bank":
            if bank is None or bank_counts is None or len(bank_counts) != len(earlier_codes):
                raise ValueError("bank reminding needs the label bank and one count per earlier center.")
            counts = torch.as_tensor(list(bank_counts), dtype=torch.long)
            self.counts = counts
            self.starts = torch.cumsum(counts, 0) - counts
            self.bank = bank
            # the center code of each bank map: a (map, code) pair is fixed, so the frozen teacher's output for a
            # bank index never changes and the trainer may cache it (see TDGANTrainer's teacher_cache)
            self.bank_codes = torch.repeat_interleave(self.codes, counts).to(bank.device)

    def sample_index(self, batch_size: int) -> torch.Tensor:
        """``bank`` only: indices into ``bank`` of one reminding batch (their codes are ``bank_codes[index]``)."""
        if self.source != "bank":
            raise ValueError(f"sample_index needs bank reminding, this reminder's source is {self.source!r}.")
        which = torch.randint(len(self.codes), (batch_size,), generator=self.gen)
        offset = (torch.rand(batch_size, generator=self.gen) * self.counts[which]).long()
        return (self.starts[which] + offset).to(self.bank.device)

    def sample(self, labels: Sequence[torch.Tensor], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A reminding batch.

        Args:
            labels: this step's label maps, one (B, 1, *spatial) tensor per online group (``local`` draws from them;
                ``bank`` only takes their device).
            batch_size: reminding batch size.

        Returns:
            label maps (batch_size, 1, *spatial) on the labels' device and their center codes (batch_size,).
        """
        device = labels[0].device
        if self.source == "local":
            codes = self.codes[torch.randint(len(self.codes), (batch_size,), generator=self.gen)]
            pool = labels[0] if len(labels) == 1 else torch.cat(list(labels))
            idx = torch.randint(pool.shape[0], (batch_size,), generator=self.gen)
            return pool[idx.to(device)], codes.to(device)
        idx = self.sample_index(batch_size)
        return self.bank[idx].to(device).long(), self.bank_codes[idx].to(device)


class CenterVisit:
    """What a visit needs from, and owes to, the centers before and after it.

    On construction: reads and checks the incoming hand-off (none at the first center), loads its weights into the
    generator, registers this visit's centers (new names get the next free codes), keeps a frozen copy of the
    arriving generator as the teacher, and builds the reminding sampler.

    Args:
        generator: the generator of this configuration, already on its device (``TDGANGenerator``).
        center_names: names of the centers online in this visit.
        handoff_in: incoming hand-off file, or None (or "") at the first center.
        reminding_source: ``"bank"`` or ``"local"`` (see :py:class:`Reminder`).
        reminding_weight: weight of the reminding loss; 0 means no teacher is kept (plain fine-tuning).
        spatial_size: this configuration's spatial size, to check the incoming label bank against.
        seed: seed of the reminding sampler.

    Raises:
        HandoffError: the incoming hand-off is unreadable, tampered with, or built with other generator settings, or
            the registry is full.
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        center_names: Sequence[str],
        handoff_in: str | os.PathLike | None = None,
        reminding_source: str = "bank",
        reminding_weight: float = 1.0,
        spatial_size: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        if reminding_source not in REMINDING_SOURCES:
            raise ValueError(f"reminding_source must be one of {REMINDING_SOURCES}, got {reminding_source!r}.")
        if not center_names or len(set(center_names)) != len(center_names):
            raise ValueError(f"center_names must be non-empty and unique, got {list(center_names)}.")
        self.generator = generator
        self.settings = dict(generator.settings)
        self.center_names = list(center_names)
        self.reminding_source = reminding_source
        self.reminding_weight = reminding_weight
        self.handoff_in = str(handoff_in) if handoff_in else None
        self.incoming: Handoff | None = None
        if self.handoff_in:
            self.incoming = load_handoff(self.handoff_in, expected_network=self.settings)
            generator.load_state_dict(self.incoming.generator)
            logger.info(
                f"incoming hand-off {self.handoff_in}: centers {[e['name'] for e in self.incoming.registry]}, "
                f"{len(self.incoming.visits)} visit(s)."
            )
        self.registry = [dict(e) for e in self.incoming.registry] if self.incoming else []
        for name in self.center_names:
            if name not in {e["name"] for e in self.registry}:
                code = len(self.registry)
                if code >= self.settings["max_centers"]:
                    raise HandoffError(
                        f"center {name!r} needs code {code} but the generator holds max_centers="
                        f"{self.settings['max_centers']} (registry: {[e['name'] for e in self.registry]})."
                    )
                self.registry.append({"name": name, "code": code})
        codes = {e["name"]: int(e["code"]) for e in self.registry}
        self.codes = [codes[n] for n in self.center_names]
        earlier = [e for e in (self.incoming.registry if self.incoming else []) if e["name"] not in self.center_names]
        self.teacher: torch.nn.Module | None = None
        self.reminder: Reminder | None = None
        if earlier and reminding_weight > 0:
            self.teacher = copy.deepcopy(generator)  # the trainer keeps it in eval mode, frozen
            self.reminder = self._make_reminder(earlier, spatial_size, seed)

    def _make_reminder(self, earlier: list[dict], spatial_size: Sequence[int] | None, seed: int) -> Reminder:
        if self.reminding_source == "local":
            return Reminder("local", [e["code"] for e in earlier], seed=seed)
        bank = self.incoming.label_bank
        banked = [e for e in earlier if e["name"] in bank and len(bank[e["name"]]) > 0]
        unbanked = [e["name"] for e in earlier if e not in banked]
        if not banked:
            raise HandoffError(
                f"hand-off {self.handoff_in} carries no label maps of the earlier centers {unbanked}, so 'bank' "
                "reminding has nothing to sample; use reminding_source='local'."
            )
        if unbanked:
            logger.warning(f"earlier centers without label maps in the bank are not reminded: {unbanked}.")
        maps = [bank[e["name"]] for e in banked]
        if spatial_size is not None and tuple(maps[0].shape[2:]) != tuple(spatial_size):
            raise HandoffError(
                f"hand-off {self.handoff_in}: label bank maps have spatial size {tuple(maps[0].shape[2:])}, "
                f"this configuration uses {tuple(spatial_size)}."
            )
        device = next(self.generator.parameters()).device
        return Reminder(
            "bank",
            [e["code"] for e in banked],
            bank=torch.cat(maps).to(device),
            bank_counts=[len(m) for m in maps],
            seed=seed,
        )

    def outgoing(self, new_bank: dict[str, torch.Tensor], summary: dict[str, Any], versions: dict) -> Handoff:
        """The hand-off this visit passes on: current weights, registry, bounded label bank, history."""
        gen = getattr(self.generator, "module", self.generator)
        bank: dict[str, torch.Tensor] = {}
        if self.reminding_source == "bank":
            if self.incoming:
                bank.update({k: v for k, v in self.incoming.label_bank.items() if k not in self.center_names})
            bank.update(new_bank)
        return Handoff(
            generator={k: v.detach().cpu() for k, v in gen.state_dict().items()},
            network=self.settings,
            registry=self.registry,
            label_bank=bank,
            visits=(list(self.incoming.visits) if self.incoming else []) + [summary],
            versions=versions,
        )


def software_versions(bundle_root: str | os.PathLike | None = None) -> dict[str, str]:
    """Versions recorded in a hand-off: bundle (from ``configs/metadata.json``), MONAI, PyTorch, Python."""
    versions = {"monai": str(monai.__version__), "torch": str(torch.__version__), "python": platform.python_version()}
    meta = Path(bundle_root or ".") / "configs" / "metadata.json"
    if meta.is_file():
        versions["bundle"] = str(json.loads(meta.read_text()).get("version", "unknown"))
    return versions


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint_epoch=N.pt`` in ``checkpoint_dir`` (to resume an interrupted visit), or None."""
    found = []
    for p in Path(checkpoint_dir).glob("*checkpoint_epoch=*.pt"):
        m = re.search(r"epoch=(\d+)\.pt$", p.name)
        if m:
            found.append((int(m.group(1)), str(p)))
    return max(found)[1] if found else None


class VisitCheckpoints:
    """Ignite handler: resume checkpoints of a visit.

    At attach time, if ``checkpoint_dir`` holds a checkpoint, it is loaded when the run starts (networks,
    optimizers, schedulers and the trainer's epoch/iteration), so an interrupted visit resumes where its last
    checkpoint left it; then a checkpoint is saved every ``interval`` epochs (only the newest is kept).
    Attach it after the learning-rate handlers so that saved schedulers are already stepped.

    Args:
        checkpoint_dir: folder of this visit's checkpoints.
        objects: name -> object with ``state_dict``/``load_state_dict`` (the trainer is added as ``trainer``).
        interval: epochs between checkpoints (0 disables saving).
        map_location: where to load tensors.
    """

    def __init__(
        self, checkpoint_dir: str | os.PathLike, objects: dict[str, Any], interval: int = 1, map_location: Any = None
    ) -> None:
        self.checkpoint_dir = str(checkpoint_dir)
        self.objects = dict(objects)
        self.interval = interval
        self.map_location = map_location

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events
        from ignite.handlers import Checkpoint, DiskSaver

        save_dict = {**self.objects, "trainer": engine}
        path = latest_checkpoint(self.checkpoint_dir)
        if path is not None:
            logger.info(f"resuming the interrupted visit from {path}.")
            CheckpointLoader(load_path=path, load_dict=save_dict, map_location=self.map_location).attach(engine)
        if self.interval > 0:
            # atomic: a visit killed while writing leaves the previous checkpoint intact, never a truncated one
            saver = Checkpoint(
                to_save=save_dict,
                save_handler=DiskSaver(self.checkpoint_dir, atomic=True, require_empty=False),
                score_function=lambda e: e.state.epoch,
                score_name="epoch",
                n_saved=1,
            )
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), saver)


class HandoffSaver:
    """Ignite handler: logs each epoch's mean losses and, when the visit completes, writes the outgoing hand-off.

    The hand-off is written only on completion, atomically; the visit's resume checkpoints are then removed.

    Args:
        visit: this visit.
        handoff_out: where to write the outgoing hand-off.
        datasets: one training dataset per online center (same order as ``visit.center_names``); label maps are
            drawn from them for the bank.
        label_bank_size: label maps kept per center in the bank (``bank`` reminding only).
        checkpoint_dir: the visit's resume checkpoints, removed after the hand-off is written.
        bundle_root: the bundle, to record its version.
        seed: seed of the label-map choice.
    """

    def __init__(
        self,
        visit: CenterVisit,
        handoff_out: str | os.PathLike,
        datasets: Sequence[Dataset],
        label_bank_size: int = 64,
        checkpoint_dir: str | os.PathLike | None = None,
        bundle_root: str | os.PathLike | None = None,
        seed: int = 0,
    ) -> None:
        if len(datasets) != len(visit.center_names):
            raise ValueError(f"need one dataset per online center, got {len(datasets)} for {visit.center_names}.")
        self.visit = visit
        self.handoff_out = str(handoff_out)
        self.datasets = list(datasets)
        self.label_bank_size = label_bank_size
        self.checkpoint_dir = checkpoint_dir
        self.bundle_root = bundle_root
        self.seed = seed
        self.history: list[dict[str, Any]] = []
        self._t0 = 0.0

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _started(self, engine: Any) -> None:
        self._t0 = time.perf_counter()
        self._first_epoch = engine.state.epoch

    def _epoch_completed(self, engine: Any) -> None:
        losses = {k: round(float(v), 6) for k, v in engine.state.metrics.items() if isinstance(v, (int, float))}
        self.history.append({"epoch": engine.state.epoch, **losses})

    def _completed(self, engine: Any) -> None:
        bank = {}
        if self.visit.reminding_source == "bank":
            bank = {
                name: label_maps(ds, self.label_bank_size, self.seed + i)
                for i, (name, ds) in enumerate(zip(self.visit.center_names, self.datasets))
            }
        summary = {
            "centers": self.visit.center_names,
            "codes": self.visit.codes,
            "train_sizes": [len(ds) for ds in self.datasets],
            "discriminators": len(getattr(engine.d_network, "module", engine.d_network)),
            "epochs": int(engine.state.epoch),
            "iterations": int(engine.state.iteration),
            "resumed_from_epoch": int(self._first_epoch),
            "seconds": round(time.perf_counter() - self._t0, 2),
            "reminding_source": self.visit.reminding_source,
            "reminding_weight": float(self.visit.reminding_weight),
            "reminded_codes": [] if self.visit.reminder is None else self.visit.reminder.codes.tolist(),
            "final_losses": self.history[-1] if self.history else {},
            "loss_history": self.history,
        }
        out = self.visit.outgoing(bank, summary, software_versions(self.bundle_root))
        digest = save_handoff(out, self.handoff_out)
        logger.info(
            f"hand-off written: {self.handoff_out} (sha256 {digest[:12]}, registry "
            f"{[(e['name'], e['code']) for e in out.registry]}, "
            f"label bank {sum(len(v) for v in out.label_bank.values())} maps)."
        )
        if self.checkpoint_dir and os.path.isdir(self.checkpoint_dir):
            for pattern in ("*checkpoint_epoch=*.pt", "tmp*"):  # tmp*: partial writes of a killed run
                for p in Path(self.checkpoint_dir).glob(pattern):
                    p.unlink()
            if not any(Path(self.checkpoint_dir).iterdir()):
                Path(self.checkpoint_dir).rmdir()
