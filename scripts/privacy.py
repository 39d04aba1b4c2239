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
"""Differentially private visits: Opacus clips and noises the per-sample gradients of both optimizers (mode ``both``) or
of the discriminator's alone, the generator then learning from public label maps (mode ``discriminator``); epsilon
per center; public pretraining."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import GanKeys
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from scripts.flags import FlagError, flag
from scripts.reminding import Reminder, RemindingBatch, complete_classes_fixed
from scripts.trainer import CenterBatch, TDGANTrainer

__all__ = [
    "PrivacySettingError",
    "ACCOUNTANTS",
    "DP_DEFAULTS",
    "MODES",
    "PrivateTDGANTrainer",
    "PrivateVisit",
    "is_public",
    "composed_noise_multiplier",
    "dp_settings",
    "epsilon_after",
    "privacy_records",
    "visit_trainer",
]

logger = logging.getLogger(__name__)


class PrivacySettingError(ValueError):
    """The ``dp`` settings cannot give a guarantee with this visit (a setting out of range, or a combination Opacus or
    the accounting does not support); refused before training, in one line."""


ACCOUNTANTS = ("rdp", "prv")
"""Opacus accountants a visit may use: Renyi DP (``rdp``) or the privacy random variable accountant (``prv``)."""

DP_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "noise_multiplier": None,
    "target_epsilon": None,
    "max_grad_norm": 1.0,
    "delta": None,
    "accountant": "rdp",
    "max_epsilon": None,
    "mode": "both",
    "public_label_maps": None,
    "public_data": False,
}
"""The ``dp`` section of ``configs/train.json`` (see :py:func:`dp_settings`)."""

MODES: dict[str, tuple[str, ...]] = {"both": ("discriminator", "generator"), "discriminator": ("discriminator",)}
"""``dp#mode`` -> the updates privatised at every iteration (the Gaussian mechanisms the accountant composes): in
``both`` the discriminator's and the generator's, on the same Poisson-sampled batch; in ``discriminator`` the
discriminator's alone, the generator's update being post-processing of it on public label maps."""

MECHANISMS = MODES["both"]
"""The updates privatised at every step in the default mode ``both``."""

PUBLIC_RECORD_NOTE = (
    "public data (no participating patient's): trained without DP; spends no center's epsilon and gives this "
    "center's data no guarantee"
)
"""What a public visit's record says (:py:meth:`PrivateVisit.record` with ``dp#public_data``)."""

_INSTALL = "install the optional extra: pip install -r requirements-dp.txt"


def dp_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``dp`` section checked against its allow-list (a ``comment`` key is ignored), with defaults filled in.

    Keys: ``enabled``; exactly one of ``noise_multiplier`` (per optimizer) and ``target_epsilon`` (the noise is then
    chosen so that the whole visit spends it) when enabled; ``max_grad_norm`` (per-sample clipping bound C);
    ``delta`` (null: a tenth of 1/N, N the center's training pairs); ``accountant`` (``rdp`` or ``prv``);
    ``max_epsilon`` (null: no budget; else the visit stops before the iteration that would spend more); ``mode``
    (:data:`MODES`: ``both`` or ``discriminator``); ``public_label_maps`` (a center folder whose training label maps
    are public: what the generator learns from in mode ``discriminator``, which needs it; refused in mode ``both``);
    ``public_data`` (the visit's centers hold public data: trained without DP, recorded as public; not with
    ``enabled``). ``mode`` and ``public_label_maps`` are checked for their type only when DP is off.

    Raises:
        PrivacySettingError: an unknown key, a value of the wrong type or range, both or neither noise setting, a
            ``discriminator`` mode without public label maps, public label maps in mode ``both``, or a public visit
            with DP on.
    """
    settings = {k: v for k, v in (settings or {}).items() if k != "comment"}
    unknown = sorted(set(settings) - set(DP_DEFAULTS))
    if unknown:
        raise PrivacySettingError(f"dp: unknown setting(s) {unknown}; expected only {list(DP_DEFAULTS)}.")
    out = {**DP_DEFAULTS, **settings}
    out["enabled"] = flag(out["enabled"], "dp#enabled")
    try:
        out["public_data"] = flag(out["public_data"], "dp#public_data")
    except FlagError as e:
        raise PrivacySettingError(str(e)) from None
    if out["accountant"] not in ACCOUNTANTS:
        raise PrivacySettingError(f"dp#accountant must be one of {list(ACCOUNTANTS)}, got {out['accountant']!r}.")
    if not isinstance(out["mode"], str) or out["mode"] not in MODES:
        raise PrivacySettingError(f"dp#mode must be one of {list(MODES)}, got {out['mode']!r}.")
    maps = out["public_label_maps"]
    if isinstance(maps, os.PathLike):
        maps = out["public_label_maps"] = os.fspath(maps)
    if maps is not None and (not isinstance(maps, str) or not maps.strip() or any(ord(c) < 32 for c in maps)):
        raise PrivacySettingError(
            f"dp#public_label_maps must be null or the path of a center folder of public label maps, got {maps!r}."
        )
    for key in ("noise_multiplier", "target_epsilon", "max_grad_norm", "delta", "max_epsilon"):
        value = out[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise PrivacySettingError(f"dp#{key} must be a positive number or null, got {value!r}.")
    if out["max_grad_norm"] is None:
        raise PrivacySettingError(
            "dp#max_grad_norm must be a positive number (the per-sample clipping bound), got null."
        )
    if out["delta"] is not None and out["delta"] >= 1:
        raise PrivacySettingError(
            f"dp#delta must be below 1 (at most 1/N of the center's training pairs), got {out['delta']}."
        )
    if out["public_data"] and out["enabled"]:
        raise PrivacySettingError(
            "dp#public_data declares the visit's centers public (trained without DP, recorded as public): it cannot "
            "go with dp#enabled true; a center holding any patient's data is not public."
        )
    if not out["enabled"]:
        return out
    if (out["noise_multiplier"] is None) == (out["target_epsilon"] is None):
        raise PrivacySettingError(
            "dp: set exactly one of dp#noise_multiplier and dp#target_epsilon, got "
            f"noise_multiplier={out['noise_multiplier']!r} and target_epsilon={out['target_epsilon']!r}."
        )
    if out["mode"] == "discriminator" and maps is None:
        raise PrivacySettingError(
            "dp#mode 'discriminator' needs dp#public_label_maps (a center folder of public label maps, from no "
            "participating patient): the generator's step may read no private label map."
        )
    if out["mode"] == "both" and maps is not None:
        raise PrivacySettingError(
            "dp#public_label_maps is read only in dp#mode 'discriminator' (in 'both' the generator learns from the "
            "private pairs): set dp#mode 'discriminator' or dp#public_label_maps null."
        )
    return out


def composed_noise_multiplier(noise_multipliers: Sequence[float]) -> float:
    """The noise multiplier of ONE Gaussian mechanism equivalent to Gaussian mechanisms of the same sensitivity applied
    to the same sample: ``(sum_k sigma_k^-2)^(-1/2)`` (their composition is ``sqrt(sum_k sigma_k^-2)``-GDP).

    Opacus' own wiring (one accountant step per optimizer step) would treat the discriminator's and the generator's
    updates as if each drew its own Poisson sample; they share one, which that count under-reports (docs/privacy.md).
    """
    if not noise_multipliers or any(s <= 0 for s in noise_multipliers):
        raise ValueError(f"need positive noise multipliers, got {list(noise_multipliers)}.")
    if len(noise_multipliers) == 1:  # one mechanism (mode discriminator): its own multiplier, bit for bit
        return float(noise_multipliers[0])
    return sum(s**-2 for s in noise_multipliers) ** -0.5


def epsilon_after(
    iterations: int, noise_multiplier: float, sample_rate: float, delta: float, accountant: str = "rdp"
) -> float:
    """Epsilon of ``iterations`` Poisson-sampled Gaussian steps (``noise_multiplier``, ``sample_rate``) at ``delta``,
    from Opacus' accountant (0 for no step)."""
    from opacus.accountants import create_accountant

    if iterations <= 0:
        return 0.0
    acc = create_accountant(accountant)
    acc.history = [(noise_multiplier, sample_rate, int(iterations))]
    return float(acc.get_epsilon(delta=delta))


def is_public(record: Mapping[str, Any] | None) -> bool:
    """Whether a visit's ``dp`` record is a public visit's (``dp#public_data``: public data, no DP)."""
    return bool(record) and bool(record.get("public"))


def privacy_records(handoff: str | os.PathLike) -> dict[str, dict[str, Any] | None]:
    """Per center of a hand-off, in registry order: the ``dp`` record of the visit that trained on it (None: trained
    without DP and not declared public; a public visit's record has ``public: true`` and ``epsilon: null``: it read
    no participating patient's data), as the evaluation report shows it."""
    from scripts.handoff import load_handoff

    h = load_handoff(handoff)
    records: dict[str, dict[str, Any] | None] = {name: None for name in h.codes}
    for visit in h.visits:
        for name in visit.get("centers", []):
            records[name] = visit.get("dp")
    return records


class PrivateVisit:
    """Differential privacy for one visit: Opacus' per-sample gradients, clipping, noise, Poisson sampling and
    accountant around the visit's generator, discriminator, optimizers and data loader.

    When ``settings["enabled"]`` is false nothing is changed (``data_loader`` and the optimizers are the ones given)
    and Opacus is not imported; with ``public_data`` the visit is recorded as a public one (:py:meth:`record`). When
    enabled:

    - the data loader becomes Opacus' ``DPDataLoader`` (Poisson sampling with rate q = 1 / batches per epoch; a
      batch may be empty, and an empty batch still takes a noise-only step, see :py:meth:`noise_only_step`);
    - Opacus' ``GradSampleHooks`` compute per-sample gradients of the privatised networks (:data:`MODES`: the
      discriminator, and in mode ``both`` the generator) in functorch mode (every layer through ``torch.func``):
      Opacus' own convolution sampler ignores ``padding_mode`` and gets the generator's reflection-padded layers
      wrong, and functorch serves any layer type, e.g. per-center norms;
    - their optimizers become Opacus ``DPOptimizer`` s (flat clipping at ``max_grad_norm``, Gaussian noise of std
      ``noise_multiplier * max_grad_norm``, mean over the expected batch size);
    - one record = one training pair (label map, image) of the center; :py:class:`PrivateTDGANTrainer` keeps each
      patient's contributions in one row of every per-sample gradient;
    - in mode ``discriminator`` the generator keeps its own optimizer and learns from the public label maps
      (``public_label_maps``, :py:meth:`public_batch`, :py:meth:`public_reminder`) through the DP discriminator:
      post-processing, no mechanism of its own;
    - the accountant (Opacus ``rdp`` or ``prv``) takes ONE step per iteration with the noise multiplier of the
      privatised mechanisms composed on the same sample (:py:func:`composed_noise_multiplier`: sigma / sqrt(2) for
      ``both``, sigma itself for ``discriminator``); with ``max_epsilon`` the visit stops (Ignite ``terminate``:
      COMPLETED still fires, so the hand-off is written) before the first iteration that would spend more.

    Refused, with one line, before training: ``bank`` reminding (its hand-off carries label maps made from the
    patients' maps outside any DP mechanism, and reuses them at every later visit), more than one online group,
    a model wrapped for DistributedDataParallel, ``compile``, float16 autocast (its GradScaler unscales and
    inf-checks the ordinary gradients, not the clipped and noised ones), layers Opacus cannot handle (buffers,
    e.g. BatchNorm: in mode ``discriminator`` the generator's forward on the private maps must leave nothing in it
    either), public label maps that are one of the visit's center folders (or inside one, or hold one) or equal one
    of its training label maps, and a center name the incoming hand-off records under the other kind of visit
    (public vs private).

    Args:
        settings: the ``dp`` section (see :py:func:`dp_settings`).
        visit: this visit (its reminding source, online centers, their folders and codes, the incoming hand-off).
        generator: the generator being trained.
        discriminators: the temporary discriminators.
        g_optimizer: the generator's optimizer.
        d_optimizer: the discriminators' optimizer.
        data_loader: the visit's training data loader.
        epochs: epochs the visit is planned for (``target_epsilon`` is spent over all of them).
        amp: whether the trainer autocasts.
        amp_dtype: the autocast dtype (``float16`` is refused).
        compile: whether the trainer compiles the networks (refused).

    Raises:
        PrivacySettingError: a refused setting or combination, or a budget that not even one iteration fits.
        ImportError: Opacus is not installed.
    """

    def __init__(
        self,
        settings: Mapping[str, Any] | None,
        visit: Any,
        generator: torch.nn.Module,
        discriminators: torch.nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        data_loader: DataLoader,
        epochs: int,
        amp: bool = False,
        amp_dtype: torch.dtype | str | None = None,
        compile: bool = False,
    ) -> None:
        self.settings = dp_settings(settings)
        self.enabled = self.settings["enabled"]
        self.public_data = self.settings["public_data"]
        self.mode = self.settings["mode"]
        self.mechanisms = MODES[self.mode]
        self.data_loader, self.g_optimizer, self.d_optimizer = data_loader, g_optimizer, d_optimizer
        self.stopped_by_budget = False
        if self.enabled or self.public_data:
            _refuse_mixed_kinds(visit, public=self.public_data)
        if not self.enabled:
            return
        self._refuse_unsupported(visit, generator, discriminators, data_loader, amp, amp_dtype, compile)
        self.public_maps: torch.Tensor | None = None
        if self.mode == "discriminator":
            self.public_maps = _read_public_maps(self.settings["public_label_maps"], visit, generator)
            self.public_digest = hashlib.sha256(self.public_maps.numpy().tobytes()).hexdigest()
            self.center_code = int(visit.codes[0])
            self.public_batch_size = int(getattr(data_loader, "batch_size", None) or 1)
        try:
            import opacus
            from opacus.accountants import create_accountant
            from opacus.accountants.utils import get_noise_multiplier
            from opacus.data_loader import DPDataLoader
            from opacus.grad_sample import GradSampleHooks
            from opacus.optimizers import DPOptimizer
        except ImportError as e:
            raise ImportError(f"dp is enabled but Opacus cannot be imported ({e}): {_INSTALL}.") from e
        self.opacus_version = str(opacus.__version__)
        # the hooks on the generator's first layer, whose input needs no gradient, make PyTorch warn at every step
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with")
        s = self.settings
        self.data_loader = DPDataLoader.from_data_loader(data_loader)
        self.sample_rate = 1.0 / len(self.data_loader)
        self.train_size = len(self.data_loader.dataset)
        self.expected_batch_size = max(1, int(self.train_size * self.sample_rate))
        self.delta = float(s["delta"] if s["delta"] is not None else 0.1 / self.train_size)
        self.planned_iterations = int(epochs) * len(self.data_loader)
        mechanisms = len(self.mechanisms)
        if s["noise_multiplier"] is not None:
            self.noise_multiplier = float(s["noise_multiplier"])
            self.effective_noise_multiplier = composed_noise_multiplier([self.noise_multiplier] * mechanisms)
        else:
            self.effective_noise_multiplier = float(
                get_noise_multiplier(
                    target_epsilon=s["target_epsilon"],
                    target_delta=self.delta,
                    sample_rate=self.sample_rate,
                    steps=self.planned_iterations,
                    accountant=s["accountant"],
                )
            )
            # each of the k mechanisms at sigma composes to sigma / sqrt(k): sigma = composed x sqrt(k)
            self.noise_multiplier = self.effective_noise_multiplier * math.sqrt(mechanisms)
        self.max_iterations = self._iterations_within_budget()
        networks = {"discriminator": (discriminators, d_optimizer), "generator": (generator, g_optimizer)}
        self.hooks = {name: GradSampleHooks(networks[name][0], force_functorch=True) for name in self.mechanisms}
        private = {
            name: DPOptimizer(
                networks[name][1],
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=float(s["max_grad_norm"]),
                expected_batch_size=self.expected_batch_size,
            )
            for name in self.mechanisms
        }
        self.d_optimizer = private["discriminator"]
        self.g_optimizer = private.get("generator", g_optimizer)  # mode discriminator: the generator's own
        self.private_optimizers = list(private.values())
        self.accountant = create_accountant(s["accountant"])
        public = (
            f"; the generator learns from {len(self.public_maps)} public label maps ({s['public_label_maps']})"
            if self.public_maps is not None
            else ""
        )
        logger.info(
            f"dp on, mode {self.mode} (privatised: {', '.join(self.mechanisms)}): noise multiplier "
            f"{self.noise_multiplier:.4g} per optimizer ({self.effective_noise_multiplier:.4g} composed), clipping "
            f"{s['max_grad_norm']}, sample rate {self.sample_rate:.4g}, delta {self.delta:.3g}, {s['accountant']} "
            f"accountant; the planned {self.planned_iterations} iterations spend epsilon "
            f"{self.epsilon(self.planned_iterations):.4g}{public}."
        )

    @staticmethod
    def _refuse_unsupported(
        visit: Any,
        generator: torch.nn.Module,
        discriminators: torch.nn.Module,
        data_loader: DataLoader,
        amp: bool,
        amp_dtype: torch.dtype | str | None,
        compile: bool,
    ) -> None:
        """One line per refused combination, raised before anything is built."""
        from scripts.precision import resolve_amp_dtype

        if visit.reminding_source != "local":
            raise PrivacySettingError(
                f"dp needs reminding_source 'local', got {visit.reminding_source!r}: a 'bank' hand-off carries label "
                "maps made from this center's patients outside any DP mechanism, and later visits reuse them."
            )
        groups = getattr(data_loader.dataset, "num_groups", 1)
        if len(visit.center_names) != 1 or groups != 1:
            raise PrivacySettingError(
                f"dp needs exactly one center online per visit (one epsilon per center), got {visit.center_names}."
            )
        for name, net in (("generator", generator), ("discriminators", discriminators)):
            if isinstance(net, torch.nn.parallel.DistributedDataParallel):
                raise PrivacySettingError(
                    f"dp does not support the multi-GPU visit (the {name} is DistributedDataParallel)."
                )
        if compile:
            raise PrivacySettingError(
                "dp does not support compile: true (Opacus' per-sample-gradient hooks); set compile false."
            )
        device_type = next(generator.parameters()).device.type
        if amp and resolve_amp_dtype(amp_dtype, device_type) == torch.float16:
            raise PrivacySettingError(
                "dp does not support float16 autocast (its GradScaler unscales and inf-checks the ordinary gradients, "
                "not Opacus' clipped and noised ones): set amp_dtype 'bfloat16' or amp false."
            )
        try:
            from opacus.validators import ModuleValidator
        except ImportError as e:
            raise ImportError(f"dp is enabled but Opacus cannot be imported ({e}): {_INSTALL}.") from e
        for name, net in (("generator", generator), ("discriminators", discriminators)):
            errors = ModuleValidator.validate(net, strict=False)
            errors += [
                f"{type(m).__name__} holds buffers {[b for b, _ in m.named_buffers(recurse=False)]}"
                for m in net.modules()
                if any(p.requires_grad for p in m.parameters(recurse=False)) and any(True for _ in m.buffers(False))
            ]
            if errors:
                first = str(errors[0]).strip().split(". ")[0].rstrip(".")
                raise PrivacySettingError(f"dp cannot privatise the {name} ({len(errors)} problem(s)), first: {first}.")

    def epsilon(self, iterations: int | None = None) -> float:
        """Epsilon at this visit's delta after ``iterations`` (default: the iterations accounted so far)."""
        if iterations is None:
            return float(self.accountant.get_epsilon(delta=self.delta)) if self.accountant.history else 0.0
        return epsilon_after(
            iterations, self.effective_noise_multiplier, self.sample_rate, self.delta, self.settings["accountant"]
        )

    def _iterations_within_budget(self) -> int:
        """The most iterations (up to the planned ones) whose epsilon stays within ``max_epsilon``."""
        budget = self.settings["max_epsilon"]
        if budget is None or self.epsilon(self.planned_iterations) <= budget:
            return self.planned_iterations
        low, high = 0, self.planned_iterations  # epsilon(low) <= budget < epsilon(high); epsilon grows with steps
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if self.epsilon(mid) <= budget else (low, mid)
        if low == 0:
            raise PrivacySettingError(
                f"dp: one iteration already spends epsilon {self.epsilon(1):.4g} > max_epsilon {budget}: raise "
                "dp#noise_multiplier (or lower dp#target_epsilon) or raise dp#max_epsilon."
            )
        return low

    def attach(self, engine: Any) -> None:
        """Account each iteration and stop at the budget (attach after the resume checkpoints' loader)."""
        if not self.enabled:
            return
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)

    def _started(self, engine: Any) -> None:
        # a resumed visit: every iteration before the checkpoint was one step of the same mechanism
        self.accountant.history = []
        if engine.state.iteration > 0:
            self.accountant.history = [(self.effective_noise_multiplier, self.sample_rate, engine.state.iteration)]
        self._stop_if_over_budget(engine)

    def _iteration_completed(self, engine: Any) -> None:
        self.accountant.step(noise_multiplier=self.effective_noise_multiplier, sample_rate=self.sample_rate)
        self._stop_if_over_budget(engine)

    def _stop_if_over_budget(self, engine: Any) -> None:
        done = engine.state.iteration
        if done >= self.max_iterations and done < self.planned_iterations:
            self.stopped_by_budget = True
            logger.warning(
                f"dp: privacy budget reached, stopping the visit after iteration {done} of "
                f"{self.planned_iterations}: epsilon {self.epsilon():.4g}, one more iteration would spend "
                f"{self.epsilon(done + 1):.4g} > max_epsilon {self.settings['max_epsilon']} (delta {self.delta:.3g}); "
                "the hand-off holds what was trained."
            )
            engine.terminate()

    @staticmethod
    def is_empty(batchdata: Any) -> bool:
        """Whether a Poisson-sampled batch holds no sample (Opacus' empty batch, or its fallback when the very first
        batch is empty: a list of zero-length tensors)."""
        groups = [batchdata] if isinstance(batchdata, Mapping) else list(batchdata or [])
        return not groups or any(not isinstance(g, Mapping) or len(g["label"]) == 0 for g in groups)

    def noise_only_step(self) -> dict[str, torch.Tensor]:
        """The privatised optimizers' step for an empty batch: no clipped gradient, only the noise (skipping the step
        would tell whether the batch was empty). Returns no losses."""
        for opt in self.private_optimizers:
            opt.zero_grad(set_to_none=True)
            for p in opt.params:
                p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
            opt.step()
        return {}

    def public_batch(self, device: torch.device | str, discriminators: torch.nn.Module) -> CenterBatch:
        """Mode ``discriminator``: the generator step's batch: public label maps drawn at random (the global torch
        generator, which the visit's checkpoints keep) under this center's code, with the discriminators'
        condition; no image (the generator reads none)."""
        index = torch.randint(len(self.public_maps), (self.public_batch_size,))
        label = self.public_maps[index].to(device).long()
        center = torch.full((len(label),), self.center_code, dtype=torch.long, device=label.device)
        condition = getattr(discriminators, "module", discriminators).condition(label, center)
        return CenterBatch(label, condition, center, None)  # type: ignore[arg-type]

    def public_reminder(self, reminder: Reminder) -> Reminder:
        """Mode ``discriminator``: the visit's reminder (its teacher, earlier codes and sampler stream) drawing from the
        public label maps, each completed to every class by :py:func:`~scripts.reminding.complete_classes_fixed` (a
        function of the public map alone), never from the patients' maps."""
        pool = complete_classes_fixed(self.public_maps, reminder.num_classes, reminder.hosts)
        device = next(reminder.teacher.parameters()).device
        public = Reminder(
            "local", reminder.codes.tolist(), reminder.teacher, pool=pool.to(device), hosts=reminder.hosts
        )
        public.gen = reminder.gen  # the stream the visit's checkpoints keep (RandomStates holds the visit's reminder)
        return public

    def record(self, engine: Any) -> dict[str, Any] | None:
        """What the hand-off records of this visit's privacy: None without DP; a public visit's record
        (``public: true``, no epsilon: it read no participating patient's data); else epsilon spent at delta, and
        the settings of the mechanism and the accountant."""
        if self.public_data:
            iterations = int(engine.state.iteration)
            return {
                "public": True,
                "epsilon": None,
                "delta": None,
                "accountant": "none: public data, no DP",
                "unit": None,
                "mode": None,
                "privatised": [],
                "noise_multiplier": None,
                "composed_noise_multiplier": None,
                "max_grad_norm": None,
                "iterations": iterations,
                "planned_iterations": iterations,
                "stopped_by_budget": False,
                "note": PUBLIC_RECORD_NOTE,
            }
        if not self.enabled:
            return None
        s = self.settings
        out = {
            "epsilon": round(self.epsilon(), 6),
            "delta": self.delta,
            "accountant": s["accountant"],
            "unit": "one training pair (label map and image) of the center",
            "mode": self.mode,
            "privatised": list(self.mechanisms),
            "noise_multiplier": self.noise_multiplier,
            "composed_noise_multiplier": self.effective_noise_multiplier,
            "max_grad_norm": float(s["max_grad_norm"]),
            "sample_rate": self.sample_rate,
            "expected_batch_size": self.expected_batch_size,
            "train_size": self.train_size,
            "iterations": int(engine.state.iteration),
            "planned_iterations": self.planned_iterations,
            "target_epsilon": s["target_epsilon"],
            "max_epsilon": s["max_epsilon"],
            "stopped_by_budget": self.stopped_by_budget,
            "opacus": self.opacus_version,
        }
        if self.public_maps is not None:
            out["public_label_maps"] = {
                "folder": Path(s["public_label_maps"]).name,
                "maps": len(self.public_maps),
                "sha256": self.public_digest,
            }
        return out


def _refuse_mixed_kinds(visit: Any, public: bool) -> None:
    """One line when this visit's center is one the incoming hand-off trained as the other kind (a private center
    under a public center's name would share its code and records; a public visit would hide a center's DP record)."""
    incoming = getattr(visit, "incoming", None)
    for record in getattr(incoming, "visits", None) or []:
        for name in set(record.get("centers", [])) & set(visit.center_names):
            if is_public(record.get("dp")) != public:
                earlier = "public (dp#public_data)" if is_public(record.get("dp")) else "private"
                raise PrivacySettingError(
                    f"center {name!r} was trained as a {earlier} center by an earlier visit of the incoming hand-off; "
                    f"a {'public' if public else 'private'} center needs a name of its own."
                )


def _read_public_maps(folder: str, visit: Any, generator: torch.nn.Module) -> torch.Tensor:
    """Mode ``discriminator``: the public label maps (uint8 (N, 1, *spatial), the training list of ``folder``, read at
    the visit's size), refused in one line when unreadable, outside the classes, or the visit's own center."""
    from scripts.data.centers import read_label_maps

    settings = getattr(generator, "settings", {})
    dims, classes = settings.get("spatial_dims", 2), settings.get("num_classes")
    size = (getattr(visit, "preprocessing", None) or {}).get("spatial_size")
    where = Path(folder).resolve()
    for center in getattr(visit, "center_dirs", None) or []:
        center = Path(center).resolve()
        if where == center or where.is_relative_to(center) or center.is_relative_to(where):
            raise PrivacySettingError(
                f"dp#public_label_maps {folder} is (or holds, or lies in) the visited center {center.name}: its label "
                "maps are private; give a folder of public label maps (docs/privacy.md)."
            )
    try:
        maps = read_label_maps(folder, dims, size)[0]
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PrivacySettingError(f"dp#public_label_maps {folder}: {first}") from None
    if classes is not None and int(maps.max()) >= classes:
        raise PrivacySettingError(
            f"dp#public_label_maps {folder}: label value {int(maps.max())} is no class of this generator "
            f"(num_classes {classes}); public maps must hold the bundle's classes."
        )
    digests = {hashlib.sha256(m.numpy().tobytes()).digest() for m in maps}
    for center in getattr(visit, "center_dirs", None) or []:
        private = read_label_maps(center, dims, size, label_mapping=getattr(visit, "label_mapping", None))[0]
        if any(hashlib.sha256(m.numpy().tobytes()).digest() in digests for m in private):
            raise PrivacySettingError(
                f"dp#public_label_maps {folder}: a map equals a training label map of {Path(center).name}, so "
                "the folder holds patients' maps; public maps come from no participating patient."
            )
    return maps


class PrivateTDGANTrainer(TDGANTrainer):
    """The TDGAN trainer of a differentially private visit (``privacy``, enabled; the optimizers and data loader given
    are its own).

    Mode ``both``: each patient's contributions stay in one row of the per-sample gradients (Opacus sums a layer's
    rows over its calls), so the discriminators see fakes and reals in two calls, the generator the maps and the
    reminding maps in two calls, and local reminding reuses row i's own map (completed to every class by a function
    of that map alone, :py:func:`~scripts.reminding.complete_classes_fixed`). ``reminding_batch_size`` is refused.

    Mode ``discriminator``: the private batch feeds the discriminator step only (its fakes made from the batch's maps
    without a gradient, fakes and reals in two calls); the generator step then runs on
    :py:meth:`PrivateVisit.public_batch` under this center's code, its loss the adversarial term and the reminding
    term on public maps (:py:meth:`PrivateVisit.public_reminder`), with no image term, and it runs at every
    iteration, the empty Poisson batch included (skipping it would tell).

    An empty Poisson-sampled batch takes a noise-only step of the privatised optimizers."""

    def __init__(self, *args: Any, privacy: PrivateVisit, **kwargs: Any):
        if privacy.mode == "both" and kwargs.get("reminding_batch_size") is not None:
            raise ValueError(
                "reminding_batch_size cannot be set with dp: under DP row i of the reminding batch is patient i's own "
                "label map, so the reminding batch is the training batch; set reminding_batch_size null."
            )
        if privacy.mode == "discriminator" and kwargs.get("reminder") is not None:
            kwargs["reminder"] = privacy.public_reminder(kwargs["reminder"])
        super().__init__(*args, **kwargs)
        self.privacy = privacy
        privacy.attach(self)  # after the train handlers: it starts counting once a resume's checkpoint has loaded

    def _iteration(self, engine: PrivateTDGANTrainer, batchdata: Sequence[dict] | dict) -> dict[str, torch.Tensor]:
        privacy = engine.privacy
        if privacy.mode == "both":
            if batchdata is not None and privacy.is_empty(batchdata):
                return privacy.noise_only_step()
            return super()._iteration(engine, batchdata)
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        losses: dict[str, torch.Tensor] = {}
        if privacy.is_empty(batchdata):
            privacy.noise_only_step()
        else:
            losses[GanKeys.DLOSS] = engine.private_discriminator_step(batchdata)
        return {**losses, **engine.public_generator_step()}

    def private_discriminator_step(self, batchdata: Sequence[dict] | dict) -> torch.Tensor:
        """Mode ``discriminator``: the DP discriminator step on the private batch, its fakes made from the batch's
        own maps by the generator without a gradient (no private map reaches a generator update)."""
        groups = self.prepare_groups(batchdata)
        with torch.no_grad():
            fakes, _ = self.generate(groups)
        return self.backward_d(groups, fakes)

    def public_generator_step(self) -> dict[str, torch.Tensor]:
        """Mode ``discriminator``: the generator step on public label maps only (post-processing of the DP
        discriminator): adversarial term under this center's code, reminding on public maps under earlier codes."""
        public = self.privacy.public_batch(self.state.device, self.d_network)
        with self.speed.scope("reminding_batch"):
            size = self.reminding_batch_size or len(public.label)
            remind = self.reminder.batch([public.label], size) if self.reminding_on else None
        fakes, remind_out = self.generate([public], remind)
        return self.backward_g([public], fakes, remind_out, remind)

    def image_terms(self, groups: list[CenterBatch], fakes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.privacy.mode == "discriminator":  # the generator reads no image
            zero = torch.zeros((), device=fakes[0].device)
            return zero, zero
        return super().image_terms(groups, fakes)

    def reminding_batch(self, groups: list[CenterBatch]) -> RemindingBatch:
        """``local`` reminding for DP mode ``both``: row i is patient i's own map, completed to every class by a
        function of that map alone, under an earlier center's code drawn at random, so a patient's reminding gradient
        adds to their own row."""
        reminder, label = self.reminder, self.reminder.complete(groups[0].label)
        codes = reminder.codes[torch.randint(len(reminder.codes), (label.shape[0],), generator=reminder.gen)]
        codes = codes.to(label.device)
        return RemindingBatch(label, codes, reminder.teach(label, codes))

    def generator_calls(self, condition: torch.Tensor, maps: int) -> list[torch.Tensor]:
        return [part for part in condition.split([maps, len(condition) - maps]) if len(part)]

    def discriminate(
        self, conditions: list[torch.Tensor], fakes: list[torch.Tensor], reals: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        fake_z, real_z = self.d_network(conditions, fakes), self.d_network(conditions, reals)  # row i: patient i
        return [z.float() for z in fake_z], [z.float() for z in real_z]

    def freeze_discriminators(self, frozen: bool) -> None:
        super().freeze_discriminators(frozen)  # and their per-sample-gradient hooks: G's backward passes through them
        hooks = self.privacy.hooks["discriminator"]
        hooks.disable_hooks() if frozen else hooks.enable_hooks()


def visit_trainer(privacy: PrivateVisit, **kwargs: Any) -> TDGANTrainer:
    """The visit's trainer (configs/train.json): :py:class:`PrivateTDGANTrainer` when ``privacy`` is enabled, else
    :py:class:`~scripts.trainer.TDGANTrainer`."""
    return PrivateTDGANTrainer(privacy=privacy, **kwargs) if privacy.enabled else TDGANTrainer(**kwargs)
