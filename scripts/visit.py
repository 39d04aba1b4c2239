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

import contextlib
import copy
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import monai
import torch
from monai.bundle import ConfigWorkflow
from torch.utils.data import Dataset

from scripts.data.centers import center_subjects, read_label_maps, seeded_subset
from scripts.data.label_maps import LabelMapTooCloseError, check_settings, new_label_bank
from scripts.data.transforms import check_label_mapping
from scripts.files import check_center_name
from scripts.handoff import Handoff, HandoffError, load_handoff, save_handoff
from scripts.reminding import REMINDING_SOURCES, Reminder, make_local_pool
from scripts.resume import VisitCheckpoints, VisitFinished, VisitGuard, latest_checkpoint

__all__ = [
    "BUNDLE_ROOT",
    "CenterVisit",
    "EpochSamples",
    "HandoffSaver",
    "center_label_bank",
    "LossHistory",
    "epoch_means_writer",
    "iteration_losses",
    "VisitCheckpoints",
    "latest_checkpoint",
    "run_visit",
    "software_versions",
    "visit_workflow",
]

logger = logging.getLogger(__name__)

BANK_MAPS = ("new", "patients")
"""What a ``bank`` hand-off carries: new label maps that belong to no patient, or real patients' label maps."""

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
"""This copy of the bundle (the folder holding ``configs/`` and ``scripts/``)."""


def visit_workflow(
    center_dirs: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    handoff_in: str | os.PathLike | None = None,
    handoff_out: str | os.PathLike | None = None,
    settings: dict[str, Any] | None = None,
    config_file: str | Sequence[str] | None = None,
    bundle_root: str | os.PathLike = BUNDLE_ROOT,
) -> ConfigWorkflow:
    """ONE visit, the bundle's visit workflow (``configs/train.json``) through ``monai.bundle.ConfigWorkflow``,
    initialised and ready to ``run()``. The sequence, the federated client, the benchmarks and the tests all build
    their visits here, so a visit is assembled once.

    Args:
        center_dirs: the centers online in this visit (the first is also ``dataset_dir``).
        output_dir: the visit's folder (checkpoints, TensorBoard, and by default the hand-off).
        handoff_in: the incoming hand-off, or None at the first center.
        handoff_out: where the outgoing hand-off goes; default ``<output_dir>/handoff.pt``.
        settings: any other setting of the visit config (network sizes, epochs, ...).
        config_file: the visit config file(s); default ``<bundle_root>/configs/train.json`` (e.g. add
            ``configs/train_3d.json``).
        bundle_root: the bundle whose configs and metadata are used.
    """
    bundle_root = Path(bundle_root)
    config_file = config_file or str(bundle_root / "configs" / "train.json")
    overrides = {
        "bundle_root": str(bundle_root),
        **(settings or {}),
        "dataset_dir": str(center_dirs[0]),
        "center_dirs": [str(d) for d in center_dirs],
        "output_dir": str(output_dir),
        "handoff_in": str(handoff_in) if handoff_in else None,
    }
    if handoff_out:
        overrides["handoff_out"] = str(handoff_out)
    workflow = ConfigWorkflow(
        config_file=config_file,
        meta_file=str(bundle_root / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **overrides,
    )
    workflow.initialize()
    return workflow


def run_visit(*args: Any, **kwargs: Any) -> ConfigWorkflow:
    """Run ONE visit to completion (see :py:func:`visit_workflow` for the arguments); returns the finished workflow.

    The outgoing hand-off is ``handoff_out`` (default ``<output_dir>/handoff.pt``). A visit that already finished
    with the same inputs and settings is not run again (its hand-off is kept; see
    :py:class:`~scripts.resume.VisitGuard`), unless the settings hold ``overwrite=True``.
    """
    workflow = visit_workflow(*args, **kwargs)
    try:
        workflow.run()
    except VisitFinished:
        pass  # the guard said so in the log; nothing was built or trained
    except BaseException:
        with contextlib.suppress(Exception):
            workflow.finalize()  # let the output folder go: this process may run another visit there
        raise
    workflow.finalize()
    return workflow


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
        spatial_size: this configuration's spatial size: the incoming hand-off must record the same; recorded in the
            outgoing one.
        intensity_range: the training images' intensity range (``train#preprocessing``'s): checked and recorded as
            ``spatial_size`` is.
        seed: seed of the reminding sampler.
        teacher_cache: compute the teacher's output for each bank map (``bank``) or pool map under each earlier code
            (``local``) once (see :py:class:`~scripts.reminding.Reminder`).
        center_dirs: the online centers' folders (same order as ``center_names``): ``local`` reminding's pool is made
            from their training label maps; empty: ``local`` replays the current batch.
        reminding_pool_size: maps in ``local`` reminding's pool (:py:func:`~scripts.reminding.make_local_pool`),
            per online center; 0: the current batch's maps (each completed to every class), as under DP.
        label_map_settings: the label-map transforms' settings (``relocatable``, ``hosts``, ...) the pool is made
            with.
        label_mapping: the site's label value -> class (:py:func:`scripts.data.transforms.check_label_mapping`), as
            training reads the label maps; every label map read outside training (the pool here, the bank in
            :py:class:`HandoffSaver`) is mapped alike. None: the label values are the classes.

    Raises:
        HandoffError: the incoming hand-off is unreadable, tampered with, unsigned or wrongly signed (federation key),
            malformed (see :py:func:`scripts.handoff.check_payload`), or built with other generator or preprocessing
            settings, or the registry is full.
        PathError: a center name is not a valid one.
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
        teacher_cache: bool = True,
        intensity_range: Sequence[float] = (-1.0, 1.0),
        center_dirs: Sequence[str | os.PathLike] = (),
        reminding_pool_size: int = 64,
        label_map_settings: dict[str, Any] | None = None,
        label_mapping: dict[Any, int] | None = None,
    ) -> None:
        if reminding_source not in REMINDING_SOURCES:
            raise ValueError(f"reminding_source must be one of {REMINDING_SOURCES}, got {reminding_source!r}.")
        if not center_names or len(set(center_names)) != len(center_names):
            raise ValueError(f"center_names must be non-empty and unique, got {list(center_names)}.")
        for name in center_names:
            check_center_name(name, "visit")
        self.generator = generator
        self.settings = dict(generator.settings)
        self.center_names = list(center_names)
        self.reminding_source = reminding_source
        self.reminding_weight = reminding_weight
        self.handoff_in = str(handoff_in) if handoff_in else None
        self.center_dirs = [str(d) for d in center_dirs]
        self.reminding_pool_size = int(reminding_pool_size)
        self.label_map_settings = check_settings(label_map_settings)
        self.label_mapping = check_label_mapping(label_mapping, self.settings["num_classes"])
        self.preprocessing = {
            "spatial_size": [int(v) for v in spatial_size] if spatial_size is not None else None,
            "intensity_range": [float(v) for v in intensity_range],
        }
        self.incoming: Handoff | None = None
        if self.handoff_in:
            self.incoming = load_handoff(self.handoff_in, self.settings, spatial_size, intensity_range)
            if spatial_size is None:
                self.preprocessing["spatial_size"] = self.incoming.spatial_size
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
        self.reminder: Reminder | None = None
        if earlier and reminding_weight > 0:
            self.reminder = self._make_reminder(earlier, seed, teacher_cache)

    @property
    def teacher(self) -> torch.nn.Module | None:
        """The frozen copy of the generator as it arrived (None when nothing is reminded)."""
        return None if self.reminder is None else self.reminder.teacher

    def _make_reminder(self, earlier: list[dict], seed: int, cache: bool) -> Reminder:
        """The reminding sampler with the teacher: ``bank`` from the incoming label bank; ``local`` from a pool of
        label maps made from every online center's training maps (every class in every map; see
        :py:func:`~scripts.reminding.make_local_pool`), or the current batch's maps without a pool."""
        teacher = copy.deepcopy(getattr(self.generator, "module", self.generator))
        device = next(self.generator.parameters()).device
        hosts = [int(c) for c in self.label_map_settings.get("hosts", ())]
        if self.reminding_source == "local":
            codes = [e["code"] for e in earlier]
            if self.reminding_pool_size <= 0 or not self.center_dirs:
                logger.info("local reminding replays the current batch's maps (completed to every class): no pool.")
                return Reminder("local", codes, teacher, seed=seed, hosts=hosts)
            t0 = time.perf_counter()
            dims, size = self.settings["spatial_dims"], self.preprocessing["spatial_size"]
            pools = [
                make_local_pool(
                    read_label_maps(folder, dims, size, label_mapping=self.label_mapping)[0],
                    self.reminding_pool_size,
                    self.settings["num_classes"],
                    seed + i,
                    self.label_map_settings,
                )
                for i, folder in enumerate(self.center_dirs)
            ]
            pool = torch.cat(pools).to(device)
            logger.info(
                f"local reminding pool: {len(pool)} new label maps from {self.center_names}' training maps, every one "
                f"of the {self.settings['num_classes']} classes in each ({time.perf_counter() - t0:.1f} s)."
            )
            return Reminder("local", codes, teacher, seed=seed, cache=cache, pool=pool, hosts=hosts)
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
        maps = [bank[e["name"]] for e in banked]  # of the recorded spatial size: checked by load_handoff
        return Reminder(
            "bank",
            [e["code"] for e in banked],
            teacher,
            bank=torch.cat(maps).to(device),
            bank_counts=[len(m) for m in maps],
            seed=seed,
            cache=cache,
            hosts=hosts,
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
            preprocessing=self.preprocessing,
        )


def software_versions(bundle_root: str | os.PathLike | None = None) -> dict[str, str]:
    """Versions recorded in a hand-off: bundle (from ``configs/metadata.json``), MONAI, PyTorch, Python."""
    versions = {"monai": str(monai.__version__), "torch": str(torch.__version__), "python": platform.python_version()}
    meta = Path(bundle_root or ".") / "configs" / "metadata.json"
    if meta.is_file():
        versions["bundle"] = str(json.loads(meta.read_text()).get("version", "unknown"))
    return versions


class LossHistory:
    """Ignite handler: each epoch's mean losses (the trainer's metrics), kept for the hand-off's ``loss_history``.

    Checkpointed with the visit (``state_dict``/``load_state_dict``), so a resumed visit's hand-off holds every
    epoch; :py:class:`~scripts.resume.VisitCheckpoints` attaches it before its saver, so that the checkpoint saved at
    an epoch's end holds that epoch. Attaching it twice is a no-op.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        if not engine.has_event_handler(self._epoch_completed, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _epoch_completed(self, engine: Any) -> None:
        # plain str keys (the metric names are MONAI str-enums): a checkpoint loads with weights_only=True
        losses = {str(k): round(float(v), 6) for k, v in engine.state.metrics.items() if isinstance(v, (int, float))}
        self.epochs = [e for e in self.epochs if e["epoch"] < engine.state.epoch] + [
            {"epoch": engine.state.epoch, **losses}
        ]

    def state_dict(self) -> dict[str, Any]:
        """The epochs so far."""
        return {"epochs": [dict(e) for e in self.epochs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from the epochs of a checkpoint."""
        self.epochs = [dict(e) for e in state["epochs"]]


class TimeLeft:
    """Ignite handler: at each epoch's end, ``engine.state.time_left``, the visit's remaining epochs at the mean
    time of the epochs this process ran (a resumed visit counts from where it resumed), for the epoch log line
    (MONAI's ``StatsHandler`` ``state_attributes``; attach this first)."""

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine: Any) -> None:
        self.start = (engine.state.epoch, time.perf_counter())
        engine.state.time_left = "unknown"

    def _epoch_completed(self, engine: Any) -> None:
        epoch0, t0 = self.start
        per_epoch = (time.perf_counter() - t0) / max(1, engine.state.epoch - epoch0)
        engine.state.time_left = duration_text(per_epoch * max(0, engine.state.max_epochs - engine.state.epoch))


def duration_text(seconds: float) -> str:
    """``seconds`` as ``"3 min 05 s"`` (or ``"42 s"``), for progress lines."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def iteration_losses(output: dict[str, Any]) -> dict[str, Any]:
    """``TensorBoardStatsHandler`` output transform: each iteration's losses under ``iteration/<name>`` (the step is
    the iteration), so they never share a tag with the epoch means (:py:func:`epoch_means_writer`)."""
    return {f"iteration/{k}": v for k, v in output.items()}


def epoch_means_writer(engine: Any, writer: Any) -> None:
    """``TensorBoardStatsHandler`` epoch writer: each epoch's mean losses (the trainer's metrics, attached before
    the handlers, so they are this epoch's) under ``epoch/<name>``, the step being the epoch."""
    for name, value in engine.state.metrics.items():
        if isinstance(value, (int, float)):
            writer.add_scalar(f"epoch/{name}", value, engine.state.epoch)
    writer.flush()


class EpochSamples:
    """The synthetic samples MONAI's ``TensorBoardImageHandler`` logs at the end of every epoch, so a user sees the
    generator learn: ``count`` training pairs of the visit, fixed at the first epoch's end (the first online center's
    first items of that batch), side by side in one image each (2D: along the width; 3D: along the second spatial
    axis). Its :py:meth:`batch` is the handler's ``batch_transform`` (``input_0``: the label maps scaled to [0, 1],
    ``input_1``: the real images), its :py:meth:`output` the handler's ``output_transform`` (``output``: the
    generator's images of those label maps under their centers' codes, made anew each epoch).

    The images stay in the center's own log folder, with the loss values (the hand-off carries none of them).

    Args:
        generator: the visit's generator (unwrapped: ``TDGANGenerator``).
        count: samples per image (the batch's size at most).
        num_classes: label classes (to scale the label maps).
    """

    def __init__(self, generator: torch.nn.Module, count: int = 4, num_classes: int = 4) -> None:
        self.generator = generator
        self.count = int(count)
        self.num_classes = int(num_classes)
        self._inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _strip(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, *spatial) -> (1, C, *spatial) with the N samples side by side."""
        axis = -1 if x.ndim == 4 else -2
        return torch.cat(list(x), dim=axis)[None].detach().float().cpu()

    def batch(self, batch: Sequence[dict[str, Any]] | dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(label maps, real images) of the fixed samples, each (1, C, *spatial) in [0, 1]."""
        if self._inputs is None:
            group = batch[0] if isinstance(batch, (list, tuple)) else batch
            n = min(self.count, len(group["label"]))
            plain = [torch.as_tensor(group[k][:n]).as_subclass(torch.Tensor) for k in ("label", "image", "center")]
            self._inputs = (plain[0].long(), plain[1].float(), plain[2].long().reshape(-1))
        label, image, _ = self._inputs
        return self._strip(label.float() / max(1, self.num_classes - 1)), self._strip((image.clamp(-1, 1) + 1) / 2)

    @torch.no_grad()
    def output(self, output: Any) -> torch.Tensor:
        """The generator's images (1, C, *spatial) in [0, 1] of the fixed samples (the trainer's ``output`` is unused:
        it holds losses only)."""
        if self._inputs is None:
            raise RuntimeError(
                "EpochSamples.output before EpochSamples.batch: attach it as one TensorBoardImageHandler."
            )
        label, _, center = self._inputs
        device = next(self.generator.parameters()).device
        fake = self.generator(self.generator.condition(label.to(device), center.to(device)))
        return self._strip((fake.float().clamp(-1, 1) + 1) / 2)


def center_label_bank(
    folder: str | os.PathLike,
    spatial_dims: int,
    spatial_size: Sequence[int] | None,
    count: int,
    seed: int,
    bank_maps: str = "new",
    label_map_settings: dict[str, Any] | None = None,
    label_mapping: dict[Any, int] | None = None,
) -> tuple[torch.Tensor, dict[str, Any] | None]:
    """The label maps one center adds to a ``bank`` hand-off: with ``bank_maps="new"``, ``count`` new maps made from
    its training maps (:py:func:`scripts.data.label_maps.new_label_bank`, checked against the ceiling calibrated from
    them and their subjects unless ``label_map_settings`` sets one), else a seeded choice of the patients' own maps.
    The protocol calls it before anything trains, the visit when it starts: the same maps, the same refusal. The maps
    are read as training reads them, with the site's ``label_mapping`` (None: the label values are the classes).

    Returns:
        the maps (uint8 (N, 1, *spatial)) and the record of the ceiling they were checked against (None for
        patients' maps).

    Raises:
        LabelMapTooCloseError: the new maps cannot be made within the ceiling (one line, with what to do).
    """
    maps = read_label_maps(folder, spatial_dims, spatial_size, label_mapping=label_mapping)[0]
    if bank_maps != "new":
        return seeded_subset(maps, count, seed), None
    name = Path(os.path.normpath(folder)).name
    try:
        made = new_label_bank(maps, count, seed, center_subjects(folder), **dict(label_map_settings or {}))
    except LabelMapTooCloseError as e:
        raise LabelMapTooCloseError(
            f"center {name}: the label bank cannot be made of new label maps: {e} Or remind without a bank "
            "(reminding_source local), or, knowing that the next sites can then rebuild these patients' images, bank "
            "the patients' own maps (bank_maps patients)."
        ) from e
    return made.maps, None if made.ceiling is None else made.ceiling.record()


class HandoffSaver:
    """Ignite handler: when the visit completes, writes the outgoing hand-off with the visit's loss history.

    The hand-off is written only on completion, atomically; then the guard records the finished visit and removes the
    resume checkpoints.

    Args:
        visit: this visit.
        handoff_out: where to write the outgoing hand-off.
        datasets: one training dataset per online center (same order as ``visit.center_names``).
        label_bank_size: label maps the bank carries per center (``bank`` reminding only).
        history: the visit's :py:class:`LossHistory` (checkpointed with the visit); default: a new one, attached here.
        guard: the visit's :py:class:`~scripts.resume.VisitGuard`; its ``finish`` runs after the hand-off is written.
        bundle_root: the bundle, to record its version.
        seed: seed of the bank's maps.
        center_dirs: the online centers' folders (same order), whose training label maps the bank is made from.
        spatial_size: the visit's spatial size (label maps are read at it).
        bank_maps: ``"new"`` (default): the bank carries new label maps made from the center's own
            (:py:func:`scripts.data.label_maps.new_label_bank`), belonging to no patient; ``"patients"``: a seeded
            choice of the center's real training label maps, which the generator turns back into near copies of
            those patients' images (see docs/privacy.md).
        label_map_settings: keyword arguments of ``new_label_bank`` (``relocatable``, ``hosts``, ``flip_axes``,
            ``ceiling`` (null: calibrated from the center's maps), ...).
        privacy: the visit's :py:class:`~scripts.privacy.PrivateVisit`; with DP on, the visit record holds its epsilon
            and no loss values (un-noised averages over private data stay in the center's logs).
    """

    def __init__(
        self,
        visit: CenterVisit,
        handoff_out: str | os.PathLike,
        datasets: Sequence[Dataset],
        label_bank_size: int = 64,
        history: LossHistory | None = None,
        guard: VisitGuard | None = None,
        bundle_root: str | os.PathLike | None = None,
        seed: int = 0,
        center_dirs: Sequence[str | os.PathLike] = (),
        spatial_size: Sequence[int] | None = None,
        bank_maps: str = "new",
        label_map_settings: dict[str, Any] | None = None,
        privacy: Any = None,
    ) -> None:
        if bank_maps not in BANK_MAPS:
            raise ValueError(f"bank_maps must be one of {BANK_MAPS}, got {bank_maps!r}.")
        if visit.reminding_source == "bank" and len(center_dirs) != len(visit.center_names):
            raise ValueError(f"bank reminding needs the folder of every online center, got {list(center_dirs)}.")
        if len(datasets) != len(visit.center_names):
            raise ValueError(f"need one dataset per online center, got {len(datasets)} for {visit.center_names}.")
        self.visit = visit
        self.handoff_out = str(handoff_out)
        self.datasets = list(datasets)
        self.label_bank_size = label_bank_size
        self.history = history if history is not None else LossHistory()
        self.guard = guard
        self.bundle_root = bundle_root
        self.seed = seed
        self.center_dirs = [str(d) for d in center_dirs]
        self.spatial_size = spatial_size
        self.bank_maps = bank_maps
        self.label_map_settings = check_settings(label_map_settings)
        self.privacy = privacy
        self._t0 = 0.0
        self._first_epoch = 0
        self._bank: dict[str, torch.Tensor] = {}
        self._ceilings: dict[str, Any] = {}

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        self.history.attach(engine)  # a no-op when the config attached it already (before the checkpoints)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _started(self, engine: Any) -> None:
        self._t0 = time.perf_counter()
        self._first_epoch = engine.state.epoch
        # made before the first step (a map that cannot be made far from every patient's stops the visit before it
        # trains) and seeded, so a resumed visit carries the same bank
        self._bank = self.label_bank()
        if self.guard is not None:
            self.guard.started()

    def label_bank(self) -> dict[str, torch.Tensor]:
        """The label maps this visit's centers add to the bank (``bank`` reminding), read from their folders; the
        ceiling each center's new maps were checked against is kept for the visit record."""
        if self.visit.reminding_source != "bank":
            return {}
        dims = self.visit.settings["spatial_dims"]
        bank, self._ceilings = {}, {}
        for i, (name, folder) in enumerate(zip(self.visit.center_names, self.center_dirs)):
            bank[name], ceiling = center_label_bank(
                folder,
                dims,
                self.spatial_size,
                self.label_bank_size,
                self.seed + i,
                self.bank_maps,
                self.label_map_settings,
                self.visit.label_mapping,
            )
            if ceiling is not None:
                self._ceilings[name] = ceiling
        return bank

    def _completed(self, engine: Any) -> None:
        bank = self._bank
        history = self.history.state_dict()["epochs"]
        dp = None if self.privacy is None else self.privacy.record(engine)
        private = bool(dp) and not dp.get("public")
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
            "label_bank": (
                {
                    "maps": self.bank_maps,
                    "per_center": self.label_bank_size,
                    "settings": self.label_map_settings,
                    "ceilings": self._ceilings,
                }
                if bank
                else None
            ),
            # a private visit's losses are not released (they are computed on the center's pairs without noise)
            "final_losses": {} if private else (history[-1] if history else {}),
            "loss_history": [] if private else history,
            "dp": dp,
        }
        out = self.visit.outgoing(bank, summary, software_versions(self.bundle_root))
        digest = save_handoff(out, self.handoff_out)
        logger.info(
            f"hand-off written: {self.handoff_out} (sha256 {digest[:12]}, registry "
            f"{[(e['name'], e['code']) for e in out.registry]}, "
            f"label bank {sum(len(v) for v in out.label_bank.values())} maps)."
        )
        if self.guard is not None:
            self.guard.finish(self.handoff_out)
