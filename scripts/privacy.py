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
"""Differentially private visits: Opacus clips and noises both optimizers' per-sample gradients; epsilon per center."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from scripts.flags import flag
from scripts.reminding import RemindingBatch
from scripts.trainer import CenterBatch, TDGANTrainer

__all__ = [
    "PrivacySettingError",
    "ACCOUNTANTS",
    "DP_DEFAULTS",
    "PrivateTDGANTrainer",
    "PrivateVisit",
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
}
"""The ``dp`` section of ``configs/train.json`` (see :py:func:`dp_settings`)."""

MECHANISMS = ("discriminator", "generator")
"""The updates privatised at every step, both on the same Poisson-sampled batch."""

_INSTALL = "install the optional extra: pip install -r requirements-dp.txt"


def dp_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``dp`` section checked against its allow-list (a ``comment`` key is ignored), with defaults filled in.

    Keys: ``enabled``; exactly one of ``noise_multiplier`` (per optimizer) and ``target_epsilon`` (the noise is then
    chosen so that the whole visit spends it) when enabled; ``max_grad_norm`` (per-sample clipping bound C);
    ``delta`` (null: a tenth of 1/N, N the center's training pairs); ``accountant`` (``rdp`` or ``prv``);
    ``max_epsilon`` (null: no budget; else the visit stops before the iteration that would spend more).

    Raises:
        ValueError: an unknown key, a value of the wrong type or range, or both or neither noise setting.
    """
    settings = {k: v for k, v in (settings or {}).items() if k != "comment"}
    unknown = sorted(set(settings) - set(DP_DEFAULTS))
    if unknown:
        raise PrivacySettingError(f"dp: unknown setting(s) {unknown}; expected only {list(DP_DEFAULTS)}.")
    out = {**DP_DEFAULTS, **settings}
    out["enabled"] = flag(out["enabled"], "dp#enabled")
    if out["accountant"] not in ACCOUNTANTS:
        raise PrivacySettingError(f"dp#accountant must be one of {list(ACCOUNTANTS)}, got {out['accountant']!r}.")
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
    if out["enabled"] and (out["noise_multiplier"] is None) == (out["target_epsilon"] is None):
        raise PrivacySettingError(
            "dp: set exactly one of dp#noise_multiplier and dp#target_epsilon, got "
            f"noise_multiplier={out['noise_multiplier']!r} and target_epsilon={out['target_epsilon']!r}."
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


def privacy_records(handoff: str | os.PathLike) -> dict[str, dict[str, Any] | None]:
    """Per center of a hand-off, in registry order: the ``dp`` record of the visit that trained on it (None: trained
    without DP), as the evaluation report shows it."""
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
    and Opacus is not imported. When enabled:

    - the data loader becomes Opacus' ``DPDataLoader`` (Poisson sampling with rate q = 1 / batches per epoch; a
      batch may be empty, and an empty batch still takes a noise-only step, see :py:meth:`noise_only_step`);
    - Opacus' ``GradSampleHooks`` compute per-sample gradients of the generator and of the discriminator in
      functorch mode (every layer through ``torch.func``): Opacus' own convolution sampler ignores ``padding_mode`` and
      gets the generator's reflection-padded layers wrong, and functorch serves any layer type, e.g. per-center norms;
    - both optimizers become Opacus ``DPOptimizer`` s (flat clipping at ``max_grad_norm``, Gaussian noise of std
      ``noise_multiplier * max_grad_norm``, mean over the expected batch size);
    - one record = one training pair (label map, image) of the center; :py:class:`PrivateTDGANTrainer` keeps each
      patient's contributions in one row of every per-sample gradient;
    - the accountant (Opacus ``rdp`` or ``prv``) takes ONE step per iteration with the noise multiplier of the two
      mechanisms composed on the same sample (:py:func:`composed_noise_multiplier`); with ``max_epsilon`` the visit
      stops (Ignite ``terminate``: COMPLETED still fires, so the hand-off is written) before the first iteration that
      would spend more.

    Refused, with one line, before training: ``bank`` reminding (its hand-off carries label maps made from the
    patients' maps outside any DP mechanism, and reuses them at every later visit), more than one online group,
    a model wrapped for DistributedDataParallel, ``compile``, float16 autocast (its GradScaler unscales and
    inf-checks the ordinary gradients, not the clipped and noised ones), and layers Opacus cannot handle (buffers,
    e.g. BatchNorm).

    Args:
        settings: the ``dp`` section (see :py:func:`dp_settings`).
        visit: this visit (its reminding source and online centers).
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
        ValueError: a refused setting or combination, or a budget that not even one iteration fits.
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
        self.data_loader, self.g_optimizer, self.d_optimizer = data_loader, g_optimizer, d_optimizer
        self.stopped_by_budget = False
        if not self.enabled:
            return
        self._refuse_unsupported(visit, generator, discriminators, data_loader, amp, amp_dtype, compile)
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
        if s["noise_multiplier"] is not None:
            self.noise_multiplier = float(s["noise_multiplier"])
            self.effective_noise_multiplier = composed_noise_multiplier([self.noise_multiplier] * len(MECHANISMS))
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
            self.noise_multiplier = self.effective_noise_multiplier * math.sqrt(len(MECHANISMS))
        self.max_iterations = self._iterations_within_budget()
        self.hooks = {
            "generator": GradSampleHooks(generator, force_functorch=True),
            "discriminator": GradSampleHooks(discriminators, force_functorch=True),
        }
        self.g_optimizer, self.d_optimizer = (
            DPOptimizer(
                opt,
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=float(s["max_grad_norm"]),
                expected_batch_size=self.expected_batch_size,
            )
            for opt in (g_optimizer, d_optimizer)
        )
        self.accountant = create_accountant(s["accountant"])
        logger.info(
            f"dp on: noise multiplier {self.noise_multiplier:.4g} per optimizer ({self.effective_noise_multiplier:.4g} "
            f"composed), clipping {s['max_grad_norm']}, sample rate {self.sample_rate:.4g}, delta {self.delta:.3g}, "
            f"{s['accountant']} accountant; the planned {self.planned_iterations} iterations spend epsilon "
            f"{self.epsilon(self.planned_iterations):.4g}."
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
        """Both optimizers' step for an empty batch: no clipped gradient, only the noise (skipping the step would
        tell whether the batch was empty). Returns no losses."""
        for opt in (self.d_optimizer, self.g_optimizer):
            opt.zero_grad(set_to_none=True)
            for p in opt.params:
                p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
            opt.step()
        return {}

    def record(self, engine: Any) -> dict[str, Any] | None:
        """What the hand-off records of this visit's privacy (None without DP): epsilon spent at delta, and the
        settings of the mechanism and the accountant."""
        if not self.enabled:
            return None
        s = self.settings
        return {
            "epsilon": round(self.epsilon(), 6),
            "delta": self.delta,
            "accountant": s["accountant"],
            "unit": "one training pair (label map and image) of the center",
            "privatised": list(MECHANISMS),
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


class PrivateTDGANTrainer(TDGANTrainer):
    """The TDGAN trainer of a differentially private visit (``privacy``, enabled; the optimizers and data loader given
    are its own): each patient's contributions stay in one row of the per-sample gradients (Opacus sums a layer's
    rows over its calls), so the discriminators see fakes and reals in two calls, the generator the maps and the
    reminding maps in two calls, and local reminding reuses row i's own map (completed to every class by a function
    of that map alone, :py:func:`~scripts.reminding.complete_classes_fixed`). An empty Poisson-sampled batch takes a
    noise-only step. ``reminding_batch_size`` is refused."""

    def __init__(self, *args: Any, privacy: PrivateVisit, **kwargs: Any):
        if kwargs.get("reminding_batch_size") is not None:
            raise ValueError(
                "reminding_batch_size cannot be set with dp: under DP row i of the reminding batch is patient i's own "
                "label map, so the reminding batch is the training batch; set reminding_batch_size null."
            )
        super().__init__(*args, **kwargs)
        self.privacy = privacy
        privacy.attach(self)  # after the train handlers: it starts counting once a resume's checkpoint has loaded

    def _iteration(self, engine: PrivateTDGANTrainer, batchdata: Sequence[dict] | dict) -> dict[str, torch.Tensor]:
        if batchdata is not None and engine.privacy.is_empty(batchdata):
            return engine.privacy.noise_only_step()
        return super()._iteration(engine, batchdata)

    def reminding_batch(self, groups: list[CenterBatch]) -> RemindingBatch:
        """``local`` reminding for DP: row i is patient i's own map, completed to every class by a function of that
        map alone, under an earlier center's code drawn at random, so a patient's reminding gradient adds to their
        own row."""
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
