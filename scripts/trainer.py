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
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.engines import Trainer
from monai.engines.utils import default_metric_cmp_fn
from monai.inferers import Inferer, SimpleInferer
from monai.utils import GanKeys
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from scripts.losses import GANLoss
from scripts.networks import TemporaryDiscriminators, encode_condition, one_hot_labels

__all__ = ["TDGANTrainer", "CenterBatch", "loss_averages", "amp_supported", "resolve_amp_dtype"]

logger = logging.getLogger(__name__)


@dataclass
class CenterBatch:
    """One online group's share of a batch: one-hot labels, label map, center codes and real images."""

    label: torch.Tensor  # (B, 1, *spatial) integer class map
    one_hot: torch.Tensor  # (B, K, *spatial)
    center: torch.Tensor  # (B,) center codes
    image: torch.Tensor  # (B, C, *spatial) in [-1, 1]


def loss_averages() -> dict[str, Any]:
    """Per-epoch means of the losses the trainer returns, as Ignite metrics (logged and kept in the hand-off)."""
    from ignite.metrics import Average

    names = [GanKeys.DLOSS, GanKeys.GLOSS, "g_gan", "g_l1", "g_perceptual", "reminding"]
    return {name: Average(output_transform=lambda out, name=name: out[name]) for name in names}


def _plain(x: Any) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` (or similar ``.module``) wrapper, else the network itself."""
    return getattr(network, "module", network)


_AMP_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_amp_dtype(amp_dtype: torch.dtype | str | None, device_type: str) -> torch.dtype:
    """The autocast dtype: ``amp_dtype`` (a dtype or ``"bfloat16"``/``"bf16"``/``"float16"``/``"fp16"``), or by
    default bfloat16 on CPU and float16 on CUDA.

    Raises:
        ValueError: an ``amp_dtype`` that is neither float16 nor bfloat16.
    """
    if amp_dtype is None:
        return torch.float16 if device_type == "cuda" else torch.bfloat16
    dtype = _AMP_DTYPES.get(amp_dtype.lower()) if isinstance(amp_dtype, str) else amp_dtype
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(
            f"amp_dtype must be 'bfloat16' or 'float16' (or null for the device's default), got {amp_dtype!r}."
        )
    return dtype


def amp_supported(device_type: str, dtype: torch.dtype) -> bool:
    """Whether ``dtype`` autocast runs natively here: on CPU oneDNN's bf16/fp16 check (AVX512-BF16 / AMX / AVX512-FP16
    instructions; without them the low-precision kernels are emulated and slower than fp32), on CUDA the card's."""
    if device_type == "cuda":
        return dtype == torch.float16 or torch.cuda.is_bf16_supported()
    if device_type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())


class TDGANTrainer(Trainer):
    """TDGAN training at one visit, inherits from ``Trainer`` and ``Workflow``.

    Training loop, for each batch (one share per online group of centers, each group with its own temporary
    discriminator):

        1. One generator forward on the batch's label maps under their center codes, together with the reminding
           batch (label maps under EARLIER centers' codes) when there is a teacher.
        2. Discriminator step: ``L_D = d_loss_scale * sum_g (GAN(D_g(y, G(y).detach()), 0) + GAN(D_g(y, x), 1))``.
        3. Generator step with the discriminators frozen:
           digesting ``= sum_g GAN(D_g(y, G(y)), 1) + l1_weight * |G(y) - x| + perceptual_weight * P(G(y), x)``,
           reminding ``= l1_weight * |G(y') - T(y')| + perceptual_weight * P(G(y'), T(y'))`` against the frozen
           teacher ``T`` (the generator as it arrived), and ``L_G = g_loss_scale * (digesting + reminding_weight *
           reminding)``.

    The reminding batch is one batch (the size of a group's batch) sampled across all earlier centers, so a step
    costs the same however many centers came before. The teacher runs in eval mode without gradients.

    Args:
        device: an object representing the device on which to run.
        max_epochs: the total epoch number for engine to run.
        train_data_loader: yields, per iteration, a list with one batch dict per online group
            (keys ``image``, ``label``, ``center``), e.g. from ``scripts.data.centers.OnlineCenters``.
        g_network: generator (G), a ``TDGANGenerator`` (or a wrapper with ``.module``).
        g_optimizer: G optimizer.
        d_network: the temporary discriminators, one per online group (or a ``DistributedDataParallel`` wrapping
            them: the D step calls it once per step; the G step, which needs no D gradient, calls the inner module).
        d_optimizer: optimizer over all the discriminators' parameters.
        epoch_length: number of iterations for one epoch, default to `len(train_data_loader)`.
        g_inferer: inference method to execute G model forward. Defaults to ``SimpleInferer()``.
        teacher: the frozen previous generator, or None at the first visit.
        reminder: object whose ``sample(labels_per_group, batch_size)`` returns reminding label maps and
            earlier-center codes, or None when there is nothing to remind.
        gan_mode: ``"vanilla"`` (BCE with logits) or ``"lsgan"``.
        l1_weight: weight of the L1 terms (100 in pix2pix and TDGAN).
        perceptual_loss: a ``PerceptualLoss`` or None; with None the perceptual term is off (weight 0).
        perceptual_weight: weight of the perceptual terms when ``perceptual_loss`` is given.
        reminding_weight: weight of the reminding loss; 0 makes the visit plain pix2pix fine-tuning.
        g_loss_scale: factor on the whole generator loss (0.1 in TDGAN).
        d_loss_scale: factor on the discriminator loss (0.05 in TDGAN).
        non_blocking: if True and this copy is between CPU and GPU, the copy may occur asynchronously.
        iteration_update: the callable function for every iteration; if not provided, use `self._iteration()`.
        postprocessing: execute additional transformation for the model output data.
        key_train_metric: compute metric when every iteration completed.
        additional_metrics: more Ignite metrics that also attach to Ignite Engine (e.g. per-epoch loss averages).
        metric_cmp_fn: function to compare current key metric with previous best key metric value.
        train_handlers: every handler is a set of Ignite Event-Handlers, must have `attach` function.
        decollate: whether to decollate the batch-first data to a list of data after model computation.
        amp: run the forward passes under ``torch.autocast`` (with a GradScaler for float16 on CUDA). Where the
            device has no native support for ``amp_dtype`` (a CPU without AVX512-BF16/AMX), a warning says so and the
            visit runs in float32.
        amp_dtype: autocast dtype; default bfloat16 on CPU, float16 on CUDA.
        teacher_cache: with ``bank`` reminding, keep the frozen teacher's output for each bank map once computed
            (each map has one fixed center code, so the output never changes); a step then runs no teacher forward.
            Costs ``4 * image_channels * pixels`` bytes per bank map.
        channels_last: put the networks and their inputs in channels-last memory format.
        compile: ``torch.compile`` the generator, teacher, discriminators and feature network (``Module.compile``:
            state-dict keys unchanged).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        g_network: torch.nn.Module,
        g_optimizer: Optimizer,
        d_network: TemporaryDiscriminators,
        d_optimizer: Optimizer,
        epoch_length: int | None = None,
        g_inferer: Inferer | None = None,
        teacher: torch.nn.Module | None = None,
        reminder: Any | None = None,
        gan_mode: str = "vanilla",
        l1_weight: float = 100.0,
        perceptual_loss: torch.nn.Module | None = None,
        perceptual_weight: float = 10.0,
        reminding_weight: float = 1.0,
        g_loss_scale: float = 0.1,
        d_loss_scale: float = 0.05,
        non_blocking: bool = False,
        iteration_update: Callable[[Any, Any], Any] | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        decollate: bool = False,
        amp: bool = False,
        amp_dtype: torch.dtype | str | None = None,
        teacher_cache: bool = True,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=amp,
            decollate=decollate,
        )
        if self.state.epoch_length == 0:
            raise ValueError(
                f"no full training batch: each center online has fewer training items than batch_size="
                f"{getattr(train_data_loader, 'batch_size', '?')} (the last incomplete batch is dropped)."
            )
        if key_train_metric is None:  # Workflow attaches additional metrics only alongside a key metric
            for name, metric in (additional_metrics or {}).items():
                metric.attach(self, name)
        self.g_network = g_network
        self.g_optimizer = g_optimizer
        self.d_network = d_network
        self.d_optimizer = d_optimizer
        self.g_inferer = SimpleInferer() if g_inferer is None else g_inferer
        settings = getattr(g_network, "module", g_network).settings
        self.num_classes, self.max_centers = settings["num_classes"], settings["max_centers"]
        self.teacher = teacher
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self.reminder = reminder
        self.gan_loss = GANLoss(gan_mode)
        self.l1_weight = l1_weight
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = perceptual_weight if perceptual_loss is not None else 0.0
        self.reminding_weight = reminding_weight
        self.g_loss_scale = g_loss_scale
        self.d_loss_scale = d_loss_scale
        self.reminding_on = teacher is not None and reminder is not None and reminding_weight > 0
        self._speed_setup(amp_dtype, teacher_cache, channels_last, compile)
        if perceptual_loss is None:
            logger.info("perceptual term off: no feature network configured (perceptual weight 0).")
        else:
            logger.info(f"perceptual term on: weight {perceptual_weight}.")
        if not self.reminding_on:
            why = "no earlier center" if teacher is None or reminder is None else f"reminding_weight={reminding_weight}"
            logger.info(f"reminding off ({why}).")

    def _speed_setup(
        self, amp_dtype: torch.dtype | str | None, teacher_cache: bool, channels_last: bool, compile: bool
    ) -> None:
        """Precision, teacher-output cache, memory format and compilation (see docs/benchmark.md)."""
        dev_type = torch.device(self.state.device).type
        self.amp_dtype = resolve_amp_dtype(amp_dtype, dev_type)
        if self.amp and not amp_supported(dev_type, self.amp_dtype):
            logger.warning(
                f"amp: {self.amp_dtype} autocast is not supported natively on this {dev_type} (needs AVX512-BF16 or "
                "AMX for bfloat16, AVX512-FP16 for float16 on CPU): running in float32."
            )
            self.amp = False
        self.precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype] if self.amp else "fp32"
        self.teacher_cache = bool(
            teacher_cache and self.reminding_on and getattr(self.reminder, "source", None) == "bank"
        )
        self._cache: torch.Tensor | None = None  # teacher outputs per bank map, allocated at first use
        self._cached: torch.Tensor | None = None  # which bank maps have their output in the cache
        self.memory_format = torch.preserve_format
        if channels_last:
            dims = getattr(self.g_network, "module", self.g_network).settings.get("spatial_dims", 2)
            self.memory_format = torch.channels_last if dims == 2 else torch.channels_last_3d
        nets = [self.g_network, self.teacher, self.d_network, self.perceptual_loss]
        for net in nets:
            if net is not None and channels_last:
                net.to(memory_format=self.memory_format)
        if compile:
            for net in [self.g_network, self.teacher, *self.d_network, self.perceptual_loss]:
                if net is not None:
                    net.compile()
        logger.info(
            f"precision {self.precision}, teacher cache {'on' if self.teacher_cache else 'off'}, "
            f"channels_last {channels_last}, compile {compile}."
        )

    def prepare_scaler(self) -> None:
        """Set ``self.scaler``: a GradScaler only for float16 autocast on CUDA, else None."""
        use_scaler = self.amp and self.amp_dtype == torch.float16 and self.state.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def run(self) -> None:  # type: ignore[override]
        """Execute training (``Trainer.run`` would make a CUDA GradScaler whenever ``amp`` is set)."""
        self.prepare_scaler()
        super(Trainer, self).run()

    def _autocast(self):
        if not self.amp:
            return nullcontext()
        return torch.autocast(device_type=self.state.device.type, dtype=self.amp_dtype)

    def _backward_step(self, loss: torch.Tensor, optimizer: Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()

    def prepare_groups(self, batchdata: Sequence[dict] | dict) -> list[CenterBatch]:
        """Move each online group's batch to the device as plain tensors."""
        groups = [batchdata] if isinstance(batchdata, dict) else list(batchdata)
        if len(groups) != len(_unwrap(self.d_network)):
            raise ValueError(
                f"batch has {len(groups)} online groups but there are {len(_unwrap(self.d_network))} discriminators."
            )
        out = []
        dev, nb = self.state.device, self.non_blocking
        for g in groups:
            label = _plain(g["label"]).to(dev, non_blocking=nb).long()
            out.append(
                CenterBatch(
                    label=label,
                    one_hot=one_hot_labels(label, self.num_classes),
                    center=_plain(g["center"]).to(dev, non_blocking=nb).long().view(-1),
                    image=_plain(g["image"]).to(dev, non_blocking=nb).float(),
                )
            )
        return out

    def generate(
        self, groups: list[CenterBatch]
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """One generator forward over all groups and the reminding batch.

        Returns:
            the fakes per group, the generator's reminding output, and the teacher's (None without reminding).
        """
        labels = [g.label for g in groups]
        centers = [g.center for g in groups]
        remind_target = None
        if self.reminding_on:
            r_label, r_center, remind_target = self.remind_batch(labels, groups[0].label.shape[0])
            labels.append(r_label)
            centers.append(r_center)
        cond = encode_condition(torch.cat(labels), torch.cat(centers), self.num_classes, self.max_centers)
        cond = cond.contiguous(memory_format=self.memory_format)
        with self._autocast():
            out = self.g_inferer(cond, self.g_network).float()
        sizes = [g.label.shape[0] for g in groups]
        fakes = list(out[: sum(sizes)].split(sizes))
        remind_out = out[sum(sizes) :] if self.reminding_on else None
        return fakes, remind_out, remind_target

    def _teach(self, label: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's float32 output for label maps under center codes (no gradient)."""
        cond = encode_condition(label, center, self.num_classes, self.max_centers)
        with torch.no_grad(), self._autocast():
            return self.teacher(cond.contiguous(memory_format=self.memory_format)).float()

    def fill_teacher_cache(self, index: torch.Tensor | None = None) -> int:
        """Compute and keep the teacher outputs of the bank maps ``index`` (all when None) not cached yet.

        Runs the teacher in chunks of at most one training batch. Returns the number of maps computed.
        """
        if not self.teacher_cache:
            return 0
        bank, codes = self.reminder.bank, self.reminder.bank_codes
        if self._cached is None:
            self._cached = torch.zeros(len(bank), dtype=torch.bool, device=bank.device)
        index = torch.arange(len(bank), device=bank.device) if index is None else index.to(bank.device)
        missing = index[~self._cached[index]].unique()
        if len(missing) == 0:
            return 0
        chunk = max(1, int(getattr(self.data_loader, "batch_size", None) or 4))
        for part in missing.split(chunk):
            out = self._teach(bank[part].to(self.state.device).long(), codes[part].to(self.state.device))
            if self._cache is None:
                self._cache = torch.empty((len(bank), *out.shape[1:]), dtype=out.dtype, device=out.device)
            self._cache[part.to(out.device)] = out
            self._cached[part] = True
        return len(missing)

    def remind_batch(
        self, labels: list[torch.Tensor], batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One reminding batch: label maps of earlier centers, their codes, and the teacher's output for them.

        With the teacher cache, the teacher runs only for bank maps never drawn before in this visit.
        """
        dev = labels[0].device
        if not self.teacher_cache:
            r_label, r_center = self.reminder.sample(labels, batch_size)
            return r_label, r_center, self._teach(r_label, r_center)
        idx = self.reminder.sample_index(batch_size)
        self.fill_teacher_cache(idx)
        r_label = self.reminder.bank[idx].to(dev).long()
        r_center = self.reminder.bank_codes[idx].to(dev)
        return r_label, r_center, self._cache[idx.to(self._cache.device)].to(dev)

    def discriminator_step(self, groups: list[CenterBatch], fakes: list[torch.Tensor]) -> torch.Tensor:
        """Update every temporary discriminator on its group's real pairs and (detached) fakes."""
        self.d_network.requires_grad_(True)
        self.d_optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            # one forward per discriminator over [fakes; reals] (instance norm keeps samples apart): one call per
            # backward, as DistributedDataParallel requires
            labels = [torch.cat([g.one_hot, g.one_hot]) for g in groups]
            pairs = [torch.cat([fake.detach(), g.image]) for g, fake in zip(groups, fakes)]
            loss = torch.zeros((), device=self.state.device)
            for g, logits in zip(groups, self.d_network(labels, pairs)):
                n = g.image.shape[0]
                loss_fake = self.gan_loss(logits[:n].float(), False)
                loss_real = self.gan_loss(logits[n:].float(), True)
                loss = loss + self.d_loss_scale * (loss_fake + loss_real)
        self._backward_step(loss, self.d_optimizer)
        return loss.detach()

    def generator_step(
        self,
        groups: list[CenterBatch],
        fakes: list[torch.Tensor],
        remind_out: torch.Tensor | None,
        remind_target: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Update the generator with digesting + reminding losses; the discriminators are frozen meanwhile."""
        self.d_network.requires_grad_(False)
        self.g_optimizer.zero_grad(set_to_none=True)
        zero = torch.zeros((), device=self.state.device)
        gan, l1, perceptual, remind = zero, zero, zero, zero
        with self._autocast():
            # the inner module: no D gradient is wanted here, so no DistributedDataParallel sync either
            d_logits = _unwrap(self.d_network)([g.one_hot for g in groups], fakes)
            for g, fake, logits in zip(groups, fakes, d_logits):
                gan = gan + self.gan_loss(logits.float(), True)
                l1 = l1 + F.l1_loss(fake, g.image)
                if self.perceptual_weight > 0:
                    perceptual = perceptual + self.perceptual_loss(fake, g.image).float()
            if remind_out is not None:
                remind = self.l1_weight * F.l1_loss(remind_out, remind_target)
                if self.perceptual_weight > 0:
                    remind = remind + self.perceptual_weight * self.perceptual_loss(remind_out, remind_target).float()
            digest = gan + self.l1_weight * l1 + self.perceptual_weight * perceptual
            total = self.g_loss_scale * (digest + self.reminding_weight * remind)
        self._backward_step(total, self.g_optimizer)
        self.d_network.requires_grad_(True)
        return {
            GanKeys.GLOSS: total.detach(),
            "g_gan": gan.detach(),
            "g_l1": l1.detach(),
            "g_perceptual": perceptual.detach(),
            "reminding": remind.detach(),
        }

    def _iteration(self, engine: TDGANTrainer, batchdata: Sequence[dict] | dict) -> dict[str, torch.Tensor]:
        """One TDGAN iteration: generator forward, discriminator step, generator step.

        Args:
            engine: `TDGANTrainer` to execute operation for an iteration.
            batchdata: a list with one batch dict per online group.

        Raises:
            ValueError: must provide batch data for current iteration.
        """
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        groups = engine.prepare_groups(batchdata)
        fakes, remind_out, remind_target = engine.generate(groups)
        d_loss = engine.discriminator_step(groups, fakes)
        out = engine.generator_step(groups, fakes, remind_out, remind_target)
        out[GanKeys.DLOSS] = d_loss
        return out
