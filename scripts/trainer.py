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
"""The TDGAN trainer: an Ignite/MONAI trainer whose iteration is one discriminator step then one generator step."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from ignite.metrics import Average
from monai.data import MetaTensor
from monai.engines import Trainer
from monai.inferers import Inferer, SimpleInferer
from monai.losses import PatchAdversarialLoss
from monai.utils import GanKeys
from torch import Tensor
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from scripts.data.checks import InputError
from scripts.losses import ClassWeightedL1
from scripts.networks import TemporaryDiscriminators, encode_condition
from scripts.reminding import REMINDING_REDUCTIONS, Reminder, RemindingBatch
from scripts.speed import Speed

__all__ = ["TDGANTrainer", "CenterBatch", "LossAverage", "loss_averages", "GAN_MODES"]

logger = logging.getLogger(__name__)


GAN_MODES = {"vanilla": "bce", "lsgan": "least_squares"}
"""``gan_mode`` -> criterion of MONAI's ``PatchAdversarialLoss`` (pix2pix's names on the left)."""


@dataclass
class CenterBatch:
    """One online group's share of a batch: label map, the discriminators' condition, center codes and real images."""

    label: Tensor  # (B, 1, *spatial) integer class map
    condition: Tensor  # (B, K, *spatial) one-hot label, or (B, max_centers * K, *spatial) label x center
    center: Tensor  # (B,) center codes
    image: Tensor  # (B, C, *spatial) in [-1, 1]


class LossAverage(Average):
    """Ignite's ``Average`` over the iterations that return the loss: a differentially private visit's noise-only
    step (an empty Poisson-sampled batch) returns none, and an epoch of only such steps averages to NaN."""

    def update(self, output: Tensor | None) -> None:
        if output is not None:
            super().update(output)

    def compute(self) -> float | Tensor:
        return float("nan") if self.num_examples == 0 else super().compute()


def loss_averages() -> dict[str, Any]:
    """Per-epoch means of the losses the trainer returns, as Ignite metrics (logged and kept in the hand-off)."""
    names = [GanKeys.DLOSS, GanKeys.GLOSS, "g_gan", "g_l1", "g_perceptual", "reminding"]
    return {name: LossAverage(output_transform=lambda out, name=name: out.get(name)) for name in names}


def _plain(x: Any) -> Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` (or similar ``.module``) wrapper, else the network itself."""
    return getattr(network, "module", network)


class TDGANTrainer(Trainer):
    """TDGAN training at one visit: each iteration is one generator forward, one discriminator step, one generator step.

    Per online group of centers (its own temporary discriminator ``D_g``; ``y`` label map, ``x`` real image, ``y'``
    reminding label maps under EARLIER centers' codes, ``T`` the frozen generator as it arrived)::

        L_D = d_loss_scale * sum_g (GAN(D_g(y, G(y).detach()), 0) + GAN(D_g(y, x), 1))     backward_d
        digesting = sum_g GAN(D_g(y, G(y)), 1) + l1_weight * |G(y) - x| + perceptual_weight * P(G(y), x)
        reminding = l1_weight * |G(y') - T(y')| + perceptual_weight * P(G(y'), T(y'))
        L_G = g_loss_scale * (digesting + w * reminding), discriminators frozen             backward_g

    with ``w = reminding_weight`` (``reminding_reduction`` ``mean``) or ``reminding_weight * (t - 1)`` (``sum``, over
    the ``t - 1`` earlier centers); ``|.|`` is the mean absolute difference, each pixel weighted by its class in the
    label map where ``l1_class_weights`` is set (:py:class:`~scripts.losses.ClassWeightedL1`). ``D_g`` sees ``y``
    as ``D.condition(y, center)`` (with ``max_centers``, the label x center one-hot). One reminding batch (a group's
    batch size or ``reminding_batch_size``) is drawn across all earlier centers by the
    :py:class:`~scripts.reminding.Reminder`, which holds ``T``, so a step costs the same however many centers came
    before. The settings and their measurements: docs/generator.md; speed switches:
    :py:class:`~scripts.speed.Speed`; the differentially private visit: ``scripts.privacy.PrivateTDGANTrainer``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,  # one batch dict per online group (image, label, center) per iteration
        g_network: torch.nn.Module,
        g_optimizer: Optimizer,
        d_network: TemporaryDiscriminators,  # or its DistributedDataParallel: called once per D step
        d_optimizer: Optimizer,
        g_inferer: Inferer | None = None,
        reminder: Reminder | None = None,  # None: nothing to remind (first visit, fine-tuning)
        gan_mode: str = "vanilla",  # or "lsgan" (see GAN_MODES)
        l1_weight: float = 100.0,
        l1_class_weights: Mapping[int | str, float] | None = None,  # class -> weight in both L1 terms; None: plain L1
        perceptual_loss: torch.nn.Module | None = None,  # (pred, target) -> scalar; None: the term is off
        perceptual_weight: float = 10.0,
        reminding_weight: float = 1.0,  # 0: plain pix2pix fine-tuning
        reminding_reduction: str = "mean",
        reminding_batch_size: int | None = None,
        reminding_feature_cache_mb: float = 512.0,  # cached perceptual targets of the reminding batch; 0: none
        g_loss_scale: float = 0.1,
        d_loss_scale: float = 0.05,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,  # e.g. loss_averages()
        train_handlers: Sequence | None = None,
        speed: Speed | None = None,  # precision, channels_last, compile; default float32
        decollate: bool = False,  # MONAI's default is True
        **workflow: Any,  # the rest of MONAI's Trainer: epoch_length, non_blocking, iteration_update, ...
    ) -> None:
        if gan_mode not in GAN_MODES:
            raise InputError(f"gan_mode must be one of {sorted(GAN_MODES)}, got {gan_mode!r}.")
        if reminding_reduction not in REMINDING_REDUCTIONS:
            raise InputError(
                f"reminding_reduction must be one of {REMINDING_REDUCTIONS}, got {reminding_reduction!r}: 'mean' "
                "weighs the one reminding batch by reminding_weight, 'sum' by reminding_weight x earlier centers."
            )
        if reminding_batch_size is not None and (isinstance(reminding_batch_size, bool) or reminding_batch_size < 1):
            raise InputError(f"reminding_batch_size must be null or an integer >= 1, got {reminding_batch_size!r}.")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            handlers=None,  # attached below, after the metrics
            amp=False,  # precision is self.speed's: Trainer.run would make a CUDA GradScaler whenever amp is set
            decollate=decollate,
            **workflow,
        )
        if self.state.epoch_length == 0:
            raise InputError(
                f"no full training batch: each center online has fewer training items than batch_size="
                f"{getattr(train_data_loader, 'batch_size', '?')} (the last incomplete batch is dropped)."
            )
        if key_train_metric is None:  # Workflow attaches additional metrics only alongside a key metric
            for name, metric in (additional_metrics or {}).items():
                metric.attach(self, name)
        self.g_network, self.g_optimizer = g_network, g_optimizer
        self.d_network, self.d_optimizer = d_network, d_optimizer
        self.g_inferer = SimpleInferer() if g_inferer is None else g_inferer
        settings = _unwrap(g_network).settings
        self.num_classes, self.max_centers = settings["num_classes"], settings["max_centers"]
        self.reminder = reminder
        self.adversarial = PatchAdversarialLoss(criterion=GAN_MODES[gan_mode], no_activation_leastsq=True)
        self.l1_weight, self.perceptual_loss = l1_weight, perceptual_loss
        self.l1 = ClassWeightedL1(l1_class_weights, self.num_classes)
        self.perceptual_weight = perceptual_weight if perceptual_loss is not None else 0.0
        self.reminding_weight, self.reminding_reduction = reminding_weight, reminding_reduction
        self.reminding_batch_size = reminding_batch_size
        self.g_loss_scale, self.d_loss_scale = g_loss_scale, d_loss_scale
        self.reminding_on = reminder is not None and reminding_weight > 0
        reminded = len(reminder.codes) if reminder is not None else 0
        # the weight of the one reminding batch: per earlier center (mean) or summed over them (sum)
        self.reminding_scale = reminding_weight * (reminded if reminding_reduction == "sum" else 1)
        self.speed = Speed(self.state.device) if speed is None else speed
        self.speed.prepare(self, reminding_feature_cache_mb)
        self.precision, self.memory_format = self.speed, self.speed.memory_format  # as tools/ and resume read them
        perceptual = f"on: weight {perceptual_weight}." if perceptual_loss else "off: no feature network configured."
        logger.info(f"perceptual term {perceptual}")
        if l1_class_weights is not None:
            logger.info(f"L1 terms weighted by the label map's class: {dict(l1_class_weights)} (other classes 1).")
        if not self.reminding_on:
            logger.info(f"reminding off ({'no earlier center' if reminder is None else 'reminding_weight 0'}).")
        else:
            logger.info(
                f"reminding {reminder.source} ({reminder.entries or 'current-batch'} entries) of codes "
                f"{reminder.codes.tolist()}, {reminding_reduction}: weight {self.reminding_scale:g}."
            )
        if train_handlers is not None:  # last: after the metrics (at EPOCH_COMPLETED handlers read this epoch's
            self._register_handlers(train_handlers)  # values) and the trainer's own parts (e.g. its precision)

    def prepare_groups(self, batchdata: Sequence[dict] | dict) -> list[CenterBatch]:
        """Move each online group's batch to the device as plain tensors, with the discriminators' condition."""
        groups = [batchdata] if isinstance(batchdata, dict) else list(batchdata)
        if len(groups) != len(_unwrap(self.d_network)):
            raise ValueError(
                f"batch has {len(groups)} online groups but there are {len(_unwrap(self.d_network))} discriminators."
            )
        out = []
        dev, nb = self.state.device, self.non_blocking
        for g in groups:
            label = _plain(g["label"]).to(dev, non_blocking=nb).long()
            center = _plain(g["center"]).to(dev, non_blocking=nb).long().view(-1)
            condition = _unwrap(self.d_network).condition(label, center)  # with or without the center code
            out.append(CenterBatch(label, condition, center, _plain(g["image"]).to(dev, non_blocking=nb).float()))
        return out

    def reminding_batch(self, groups: list[CenterBatch]) -> RemindingBatch:
        """``y'`` under earlier centers' codes and ``T(y')``: one group's batch size or ``reminding_batch_size``."""
        return self.reminder.batch([g.label for g in groups], self.reminding_batch_size or groups[0].label.shape[0])

    def generator_calls(self, condition: Tensor, maps: int) -> list[Tensor]:
        """The generator's inputs: one call over [the groups' ``maps`` maps; the reminding maps]."""
        return [condition]

    def generate(
        self, groups: list[CenterBatch], remind: RemindingBatch | None = None
    ) -> tuple[list[Tensor], Tensor | None]:
        """The fakes per group and the generator's output for the reminding batch (None without one)."""
        labels = [g.label for g in groups] + ([remind.label] if remind is not None else [])
        centers = [g.center for g in groups] + ([remind.center] if remind is not None else [])
        cond = encode_condition(torch.cat(labels), torch.cat(centers), self.num_classes, self.max_centers)
        sizes = [g.label.shape[0] for g in groups]
        with self.speed.scope("generator_forward", autocast=True):
            outs = [
                self.g_inferer(p.contiguous(memory_format=self.memory_format), self.g_network).float()
                for p in self.generator_calls(cond, sum(sizes))
            ]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return list(out[: sum(sizes)].split(sizes)), (out[sum(sizes) :] if remind is not None else None)

    def perceptual(self, prediction: Tensor, target: Tensor, features: list[Tensor] | None = None) -> Tensor:
        """The perceptual term P in the training precision (0 without a feature network); from the target's cached
        ``features`` where given (the same value: the mean over layers of the per-layer MSE)."""
        if self.perceptual_weight == 0:
            return torch.zeros((), device=prediction.device)
        with self.speed.autocast():
            if features is None:
                return self.perceptual_loss(prediction, target).float()
            predicted = self.perceptual_loss.features(prediction)
            return torch.stack([F.mse_loss(p, t) for p, t in zip(predicted, features)]).mean().float()

    def discriminate(
        self, conditions: list[Tensor], fakes: list[Tensor], reals: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Each ``D_g``'s logits of its fakes and of its reals, in one call over [fakes; reals] (instance norm keeps
        samples apart): one forward per backward, as DistributedDataParallel requires."""
        both = self.d_network([torch.cat([y, y]) for y in conditions], [torch.cat(p) for p in zip(fakes, reals)])
        sizes = [f.shape[0] for f in fakes]
        return [z[:n].float() for z, n in zip(both, sizes)], [z[n:].float() for z, n in zip(both, sizes)]

    def freeze_discriminators(self, frozen: bool) -> None:
        """Freeze the discriminators for the generator step (its backward passes through them)."""
        self.d_network.requires_grad_(not frozen)

    def backward_d(self, groups: list[CenterBatch], fakes: list[Tensor]) -> Tensor:
        """Update every temporary discriminator on its group's real pairs and (detached) fakes."""
        self.d_network.requires_grad_(True)
        self.d_optimizer.zero_grad(set_to_none=True)
        detached = [fake.detach() for fake in fakes]
        with self.speed.scope("d_forward", autocast=True):
            fake_z, real_z = self.discriminate([g.condition for g in groups], detached, [g.image for g in groups])
        loss = sum(
            self.d_loss_scale * (self.adversarial(zf, False, True) + self.adversarial(zr, True, True))
            for zf, zr in zip(fake_z, real_z)
        )
        with self.speed.scope("d_update"):
            self.speed.step(loss, self.d_optimizer)
        return loss.detach()

    def image_terms(self, groups: list[CenterBatch], fakes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """The digesting terms against the real images: L1 and perceptual, summed over the groups (``backward_g``;
        the DP discriminator-only visit's generator reads no image)."""
        l1 = sum(self.l1(fake, g.image, g.label) for g, fake in zip(groups, fakes))
        with self.speed.scope("g_step.perceptual_digesting"):
            perceptual = sum(self.perceptual(fake, g.image) for g, fake in zip(groups, fakes))
        return l1, perceptual

    def backward_g(
        self,
        groups: list[CenterBatch],
        fakes: list[Tensor],
        remind_out: Tensor | None = None,
        remind: RemindingBatch | None = None,
    ) -> dict[str, Tensor]:
        """Update the generator with the digesting and reminding losses, the discriminators frozen meanwhile."""
        self.freeze_discriminators(True)
        self.g_optimizer.zero_grad(set_to_none=True)
        with self.speed.scope("g_step.d_forward", autocast=True):  # the inner module: no D gradient, no DDP sync
            logits = [out.float() for out in _unwrap(self.d_network)([g.condition for g in groups], fakes)]
        gan = sum(self.adversarial(z, True, False) for z in logits)
        l1, perceptual = self.image_terms(groups, fakes)
        reminding = torch.zeros((), device=gan.device)
        if remind is not None:
            reminding = self.l1_weight * self.l1(remind_out, remind.target, remind.label)
            with self.speed.scope("g_step.perceptual_reminding"):  # T(y')'s features, cached where the reminder can
                features = self.reminder.target_features(remind) if self.perceptual_weight != 0 else None
                reminding = reminding + self.perceptual_weight * self.perceptual(remind_out, remind.target, features)
        digesting = gan + self.l1_weight * l1 + self.perceptual_weight * perceptual
        total = self.g_loss_scale * (digesting + self.reminding_scale * reminding)
        with self.speed.scope("g_update"):
            self.speed.step(total, self.g_optimizer)
        self.freeze_discriminators(False)
        losses = {GanKeys.GLOSS: total, "g_gan": gan, "g_l1": l1, "g_perceptual": perceptual, "reminding": reminding}
        return {k: v.detach() for k, v in losses.items()}

    def _iteration(self, engine: TDGANTrainer, batchdata: Sequence[dict] | dict) -> dict[str, Tensor]:
        """One TDGAN iteration over a list with one batch dict per online group: generator forward, D step, G step."""
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        groups = engine.prepare_groups(batchdata)
        with engine.speed.scope("reminding_batch"):
            remind = engine.reminding_batch(groups) if engine.reminding_on else None
        fakes, remind_out = engine.generate(groups, remind)
        d_loss = engine.backward_d(groups, fakes)
        return {GanKeys.DLOSS: d_loss, **engine.backward_g(groups, fakes, remind_out, remind)}
