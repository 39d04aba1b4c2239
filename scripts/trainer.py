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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from ignite.metrics import Average
from monai.data import MetaTensor
from monai.engines import Trainer
from monai.engines.utils import default_metric_cmp_fn
from monai.inferers import Inferer, SimpleInferer
from monai.losses import PatchAdversarialLoss
from monai.utils import GanKeys
from torch.optim import Optimizer
from torch.profiler import record_function
from torch.utils.data import DataLoader

from scripts.losses import PerceptualLoss
from scripts.networks import TemporaryDiscriminators, encode_condition
from scripts.precision import Precision
from scripts.reminding import REMINDING_REDUCTIONS, Reminder, RemindingBatch

if TYPE_CHECKING:
    from scripts.privacy import PrivateVisit

__all__ = ["TDGANTrainer", "CenterBatch", "LossAverage", "loss_averages", "retain_freed_memory_now", "GAN_MODES"]

logger = logging.getLogger(__name__)


def device_name(device: str | torch.device) -> str:
    """The device a workflow runs on, as a log line names it: the GPU's index and model, or the CPU's threads."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"


GAN_MODES = {"vanilla": "bce", "lsgan": "least_squares"}
"""``gan_mode`` -> criterion of MONAI's ``PatchAdversarialLoss`` (pix2pix's names on the left)."""


@dataclass
class CenterBatch:
    """One online group's share of a batch: label map, the discriminators' condition, center codes and real images."""

    label: torch.Tensor  # (B, 1, *spatial) integer class map
    condition: torch.Tensor  # (B, K, *spatial) one-hot label, or (B, max_centers * K, *spatial) label x center
    center: torch.Tensor  # (B,) center codes
    image: torch.Tensor  # (B, C, *spatial) in [-1, 1]


class LossAverage(Average):
    """Ignite's ``Average`` over the iterations that return the loss: a differentially private visit's noise-only
    step (an empty Poisson-sampled batch) returns none, and an epoch of only such steps averages to NaN."""

    def update(self, output: torch.Tensor | None) -> None:
        if output is not None:
            super().update(output)

    def compute(self) -> float | torch.Tensor:
        return float("nan") if self.num_examples == 0 else super().compute()


def loss_averages() -> dict[str, Any]:
    """Per-epoch means of the losses the trainer returns, as Ignite metrics (logged and kept in the hand-off)."""
    names = [GanKeys.DLOSS, GanKeys.GLOSS, "g_gan", "g_l1", "g_perceptual", "reminding"]
    return {name: LossAverage(output_transform=lambda out, name=name: out.get(name)) for name in names}


def _plain(x: Any) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


_RETAINED: list[bool] = []  # the outcome of retain_freed_memory_now in this process (it acts once per process)


def retain_freed_memory_now() -> bool:
    """Keep freed memory inside this process: glibc ``mallopt(M_MMAP_THRESHOLD, 2**31 - 1)`` and
    ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)``.

    glibc serves an allocation of 32 MB or more (its largest dynamic mmap threshold) with a fresh ``mmap`` and
    unmaps it on free, so a tensor that size is page-faulted and zero-filled by the kernel at every step: from the
    second center on at 128x128, batch 4, the generator's [batch; reminding batch] activations of 64 channels are
    33.5 MB and a step faulted in about 1.2 GB (tools/docs/benchmark.md). With these settings the heap keeps them; the
    process's resident memory then stays at its peak instead of falling back between steps. PyTorch has no caching
    allocator on CPU (the fix it documents is an LD_PRELOADed jemalloc or tcmalloc), hence the direct call. A
    thread that glibc serves from a secondary arena still gets blocks above that arena's 64 MB heap by ``mmap``.

    Returns:
        whether freed memory is kept in this process (False off glibc); the settings are made at the first call.
    """
    if not _RETAINED:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
            ok = bool(libc.mallopt(m_mmap_threshold, 2**31 - 1)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
        except (OSError, AttributeError):
            ok = False
        _RETAINED.append(ok)
        logger.info(f"CPU allocator: freed memory {'kept in the process (glibc mallopt)' if ok else 'left as it is'}.")
    return _RETAINED[0]


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` (or similar ``.module``) wrapper, else the network itself."""
    return getattr(network, "module", network)


class TDGANTrainer(Trainer):
    """TDGAN training at one visit, inherits from ``Trainer`` and ``Workflow``.

    Each iteration (one share of the batch per online group of centers, each group with its own temporary
    discriminator ``D_g``; ``y`` label map, ``x`` real image, ``y'`` reminding label maps under EARLIER centers' codes,
    ``T`` the frozen generator as it arrived):

        1. one generator forward over the groups' label maps and the reminding batch;
        2. :py:meth:`backward_d`: ``L_D = d_loss_scale * sum_g (GAN(D_g(y, G(y).detach()), 0) + GAN(D_g(y, x), 1))``;
        3. :py:meth:`backward_g`, the discriminators frozen: digesting ``= sum_g GAN(D_g(y, G(y)), 1) +
           l1_weight * |G(y) - x| + perceptual_weight * P(G(y), x)``, reminding ``= l1_weight * |G(y') - T(y')| +
           perceptual_weight * P(G(y'), T(y'))``, ``L_G = g_loss_scale * (digesting + w * reminding)`` with
           ``w = reminding_weight`` (``reminding_reduction`` ``mean``) or ``reminding_weight * (t - 1)`` (``sum``,
           ``t - 1`` the earlier centers reminded).

    Each ``D_g`` sees ``y`` as ``D.condition(y, center)``: the one-hot label map, or, for discriminators built with
    ``max_centers`` (``discriminator_center_code``), the label x center one-hot, so a shared one knows the center.

    The reminding batch (one group's batch size or ``reminding_batch_size``, sampled across all earlier centers by
    the :py:class:`Reminder`, which also holds the teacher) keeps a step's cost flat however many centers came before.
    With a cached teacher (``bank`` maps, or ``local`` pool maps under each code) the perceptual term's target
    features of the reminding batch are cached too, within ``reminding_feature_cache_mb``.

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
        reminder: the :py:class:`~scripts.reminding.Reminder` (sampler and frozen teacher), or None when there is
            nothing to remind (first visit, fine-tuning).
        gan_mode: ``"vanilla"`` (binary cross-entropy) or ``"lsgan"`` (least squares), through MONAI's
            ``PatchAdversarialLoss``.
        l1_weight: weight of the L1 terms (100 in pix2pix and TDGAN).
        perceptual_loss: a perceptual loss module ``(pred, target) -> scalar``, or None (the term is off).
        perceptual_weight: weight of the perceptual terms when ``perceptual_loss`` is given.
        reminding_weight: weight of the reminding loss; 0 makes the visit plain pix2pix fine-tuning.
        reminding_reduction: ``"mean"`` (the reminding batch's loss, whatever the number of earlier centers) or
            ``"sum"`` (times the number of earlier centers reminded: the reference's one term per earlier center).
        reminding_batch_size: maps per reminding batch; None: one group's training batch size (the method's
            default). Smaller is cheaper (a method option: its effect on forgetting is measured by
            ``tools/reminding_check.py``); not with DP (row i is patient i's own map).
        reminding_feature_cache_mb: memory the cached target features of the reminding batch may take (entries
            beyond it have theirs computed every step); 0: not cached. Only with a cached teacher and a feature-list
            perceptual network (``VGG16Features``).
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
        amp: run the forward passes under ``torch.autocast`` (see :py:class:`~scripts.precision.Precision`).
        amp_dtype: autocast dtype; default bfloat16 on CPU, float16 on CUDA.
        channels_last: put the networks and their inputs in channels-last memory format.
        retain_freed_memory: on CPU with glibc, keep freed memory in the process (``mallopt``: no mmap threshold, no
            trimming) so that the step's large activations are not mapped and zero-filled afresh at every step (see
            :py:func:`retain_freed_memory_now`); results are unchanged.
        compile: ``torch.compile`` the generator, teacher, discriminators and feature network (``Module.compile``:
            state-dict keys unchanged).
        privacy: a differentially private visit's :py:class:`~scripts.privacy.PrivateVisit` (its optimizers and data
            loader are the ones given here), or None. With it, each patient's contributions stay in one row of the
            per-sample gradients: fakes and reals go through D in two calls, G's maps and reminding maps in two
            calls, local reminding reuses the row's own map (completed to every class by a function of that map alone,
            :py:func:`~scripts.reminding.complete_classes_fixed`), and an empty batch takes a noise-only step.
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
        reminder: Reminder | None = None,
        gan_mode: str = "vanilla",
        l1_weight: float = 100.0,
        perceptual_loss: torch.nn.Module | None = None,
        perceptual_weight: float = 10.0,
        reminding_weight: float = 1.0,
        reminding_reduction: str = "mean",
        reminding_batch_size: int | None = None,
        reminding_feature_cache_mb: float = 512.0,
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
        channels_last: bool = False,
        retain_freed_memory: bool = True,
        compile: bool = False,
        privacy: PrivateVisit | None = None,
    ) -> None:
        if gan_mode not in GAN_MODES:
            raise ValueError(f"gan_mode must be one of {sorted(GAN_MODES)}, got {gan_mode!r}.")
        if reminding_reduction not in REMINDING_REDUCTIONS:
            raise ValueError(
                f"reminding_reduction must be one of {REMINDING_REDUCTIONS}, got {reminding_reduction!r}: 'mean' "
                "weighs the one reminding batch by reminding_weight, 'sum' by reminding_weight x earlier centers."
            )
        if reminding_batch_size is not None and (isinstance(reminding_batch_size, bool) or reminding_batch_size < 1):
            raise ValueError(f"reminding_batch_size must be null or an integer >= 1, got {reminding_batch_size!r}.")
        if reminding_batch_size is not None and privacy is not None:
            raise ValueError(
                "reminding_batch_size cannot be set with dp: under DP row i of the reminding batch is patient i's own "
                "label map, so the reminding batch is the training batch; set reminding_batch_size null."
            )
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
            handlers=None,  # attached below, after the metrics
            amp=False,  # precision is self.precision's: Trainer.run would make a CUDA GradScaler whenever amp is set
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
        self.g_network, self.g_optimizer = g_network, g_optimizer
        self.d_network, self.d_optimizer = d_network, d_optimizer
        self.g_inferer = SimpleInferer() if g_inferer is None else g_inferer
        settings = _unwrap(g_network).settings
        self.num_classes, self.max_centers = settings["num_classes"], settings["max_centers"]
        self.reminder = reminder
        self.adversarial = PatchAdversarialLoss(criterion=GAN_MODES[gan_mode], no_activation_leastsq=True)
        self.l1_weight = l1_weight
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = perceptual_weight if perceptual_loss is not None else 0.0
        self.reminding_weight = reminding_weight
        self.reminding_reduction = reminding_reduction
        self.reminding_batch_size = reminding_batch_size
        self.g_loss_scale, self.d_loss_scale = g_loss_scale, d_loss_scale
        self.reminding_on = reminder is not None and reminding_weight > 0
        reminded = len(reminder.codes) if reminder is not None else 0
        # the weight of the one reminding batch: per earlier center (mean) or summed over them (sum)
        self.reminding_scale = reminding_weight * (reminded if reminding_reduction == "sum" else 1)
        self._feature_cache_bytes = int(max(0.0, float(reminding_feature_cache_mb)) * 2**20)
        self.privacy = privacy
        if privacy is not None:  # after the train handlers: its accounting starts after a resume's checkpoint loads
            privacy.attach(self)
        self.precision = Precision(self.state.device, amp, amp_dtype)
        self._speed_setup(channels_last, compile)
        if retain_freed_memory and torch.device(self.state.device).type == "cpu":
            retain_freed_memory_now()
        logger.info(f"training on {device_name(self.state.device)}.")
        logger.info(
            "perceptual term "
            + (f"on: weight {perceptual_weight}." if perceptual_loss else "off: no feature network configured.")
        )
        if not self.reminding_on:
            logger.info(f"reminding off ({'no earlier center' if reminder is None else 'reminding_weight 0'}).")
        else:
            logger.info(
                f"reminding {reminder.source} ({reminder.entries or 'current-batch'} entries) of codes "
                f"{reminder.codes.tolist()}, {reminding_reduction}: weight {self.reminding_scale:g}."
            )
        if train_handlers is not None:  # last: after the metrics (at EPOCH_COMPLETED handlers read this epoch's
            self._register_handlers(train_handlers)  # values) and the trainer's own parts (e.g. its precision)

    def _speed_setup(self, channels_last: bool, compile: bool) -> None:
        """Memory format and compilation (see tools/docs/benchmark.md); the reminder's teacher runs as the generator."""
        self.memory_format = torch.preserve_format
        if channels_last:
            dims = _unwrap(self.g_network).settings.get("spatial_dims", 2)
            self.memory_format = torch.channels_last if dims == 2 else torch.channels_last_3d
        teacher = self.reminder.teacher if self.reminding_on else None
        nets = [self.g_network, teacher, self.d_network, self.perceptual_loss]
        for net in nets:
            if net is not None and channels_last:
                net.to(memory_format=self.memory_format)
        if compile:
            for net in [self.g_network, teacher, *self.d_network, self.perceptual_loss]:
                if net is not None:
                    net.compile()
        cache = self.reminding_on and self.reminder.cache
        if self.reminding_on:
            chunk = int(getattr(self.data_loader, "batch_size", None) or 4)
            features = self._target_features if self._features_cacheable() else None
            self.reminder.configure(self.precision, self.memory_format, chunk, features, self._feature_cache_bytes)
        logger.info(
            f"precision {self.precision.name}, teacher cache {'on' if cache else 'off'}, "
            f"channels_last {channels_last}, compile {compile}."
        )

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

    def generate(
        self, groups: list[CenterBatch], remind: RemindingBatch | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """One generator forward over every group's label maps and the reminding batch's.

        Returns:
            the fakes per group, and the generator's output for the reminding batch (None without one).
        """
        labels = [g.label for g in groups] + ([remind.label] if remind is not None else [])
        centers = [g.center for g in groups] + ([remind.center] if remind is not None else [])
        cond = encode_condition(torch.cat(labels), torch.cat(centers), self.num_classes, self.max_centers)
        sizes = [g.label.shape[0] for g in groups]
        # with DP, one call per part (the groups' maps, the reminding maps), each row i being patient i
        parts = [cond] if self.privacy is None else cond.split([sum(sizes), len(cond) - sum(sizes)])
        with self.precision.autocast(), record_function("tdgan.generator_forward"):
            outs = [
                self.g_inferer(p.contiguous(memory_format=self.memory_format), self.g_network).float()
                for p in parts
                if len(p)
            ]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        fakes = list(out[: sum(sizes)].split(sizes))
        return fakes, (out[sum(sizes) :] if remind is not None else None)

    def _features_cacheable(self) -> bool:
        """Whether the perceptual term is a feature network's (mean of per-layer MSE), whose target features can be
        computed once (a pairwise distance such as MONAI's cannot be split)."""
        loss = self.perceptual_loss
        return self.perceptual_weight != 0 and isinstance(loss, PerceptualLoss) and not loss.pairwise

    @torch.no_grad()
    def _target_features(self, target: torch.Tensor) -> list[torch.Tensor]:
        """The perceptual term's features of target images, as ``PerceptualLoss`` computes them."""
        with self.precision.autocast():
            return list(self.perceptual_loss.features(target))

    def reminding_perceptual(self, prediction: torch.Tensor, remind: RemindingBatch) -> torch.Tensor:
        """P(G(y'), T(y')) of the reminding batch, from the cached target features where the reminder holds them
        (the same value as :py:meth:`perceptual`: the mean over layers of the per-layer MSE)."""
        targets = self.reminder.target_features(remind) if self.perceptual_weight != 0 else None
        if targets is None:
            return self.perceptual(prediction, remind.target)
        with self.precision.autocast():
            predicted = self.perceptual_loss.features(prediction)
            return torch.stack([F.mse_loss(p, t) for p, t in zip(predicted, targets)]).mean().float()

    def perceptual(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The perceptual term P (0 when no feature network is configured), run in the training precision."""
        if self.perceptual_weight == 0:
            return torch.zeros((), device=prediction.device)
        with self.precision.autocast():
            return self.perceptual_loss(prediction, target).float()

    def backward_d(self, groups: list[CenterBatch], fakes: list[torch.Tensor]) -> torch.Tensor:
        """Update every temporary discriminator on its group's real pairs and (detached) fakes."""
        self.d_network.requires_grad_(True)
        self.d_optimizer.zero_grad(set_to_none=True)
        conditions, detached = [g.condition for g in groups], [fake.detach() for fake in fakes]
        sizes = [g.image.shape[0] for g in groups]
        with self.precision.autocast(), record_function("tdgan.d_forward"):
            if self.privacy is None:
                # one call over [fakes; reals] per discriminator (instance norm keeps samples apart): one forward per
                # backward, as DistributedDataParallel requires
                labels = [torch.cat([y, y]) for y in conditions]
                both = self.d_network(labels, [torch.cat([f, g.image]) for f, g in zip(detached, groups)])
                fake_z = [z[:n].float() for z, n in zip(both, sizes)]
                real_z = [z[n:].float() for z, n in zip(both, sizes)]
            else:  # DP: two calls, so that row i of both is patient i (Opacus sums a layer's rows over its calls)
                fake_z = [z.float() for z in self.d_network(conditions, detached)]
                real_z = [z.float() for z in self.d_network(conditions, [g.image for g in groups])]
        loss = sum(
            self.d_loss_scale * (self.adversarial(zf, False, True) + self.adversarial(zr, True, True))
            for zf, zr in zip(fake_z, real_z)
        )
        with record_function("tdgan.d_update"):
            self.precision.step(loss, self.d_optimizer)
        return loss.detach()

    def _freeze_discriminators(self, frozen: bool) -> None:
        """Freeze the discriminators for the generator step (with DP also their per-sample-gradient hooks: the
        generator step's backward passes through them)."""
        self.d_network.requires_grad_(not frozen)
        if self.privacy is not None:
            self.privacy.discriminator_hooks(enabled=not frozen)

    def backward_g(
        self,
        groups: list[CenterBatch],
        fakes: list[torch.Tensor],
        remind_out: torch.Tensor | None = None,
        remind: RemindingBatch | None = None,
    ) -> dict[str, torch.Tensor]:
        """Update the generator with the digesting and reminding losses, the discriminators frozen meanwhile."""
        self._freeze_discriminators(True)
        self.g_optimizer.zero_grad(set_to_none=True)
        # the inner module: no D gradient, so no DistributedDataParallel sync
        with self.precision.autocast(), record_function("tdgan.g_step.d_forward"):
            logits = [out.float() for out in _unwrap(self.d_network)([g.condition for g in groups], fakes)]
        gan = sum(self.adversarial(z, True, False) for z in logits)
        l1 = sum(F.l1_loss(fake, g.image) for g, fake in zip(groups, fakes))
        with record_function("tdgan.g_step.perceptual_digesting"):
            perceptual = sum(self.perceptual(fake, g.image) for g, fake in zip(groups, fakes))
        reminding = torch.zeros((), device=gan.device)
        if remind is not None:
            reminding = self.l1_weight * F.l1_loss(remind_out, remind.target)
            with record_function("tdgan.g_step.perceptual_reminding"):
                reminding = reminding + self.perceptual_weight * self.reminding_perceptual(remind_out, remind)
        digesting = gan + self.l1_weight * l1 + self.perceptual_weight * perceptual
        total = self.g_loss_scale * (digesting + self.reminding_scale * reminding)
        with record_function("tdgan.g_update"):
            self.precision.step(total, self.g_optimizer)
        self._freeze_discriminators(False)
        losses = {GanKeys.GLOSS: total, "g_gan": gan, "g_l1": l1, "g_perceptual": perceptual, "reminding": reminding}
        return {k: v.detach() for k, v in losses.items()}

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
        if engine.privacy is not None and engine.privacy.is_empty(batchdata):
            return engine.privacy.noise_only_step()
        groups = engine.prepare_groups(batchdata)
        remind = None
        with record_function("tdgan.reminding_batch"):
            if engine.reminding_on and engine.privacy is not None:
                # row i: patient i's own map, completed to every class by a function of that map alone
                own = engine.reminder.complete(groups[0].label)
                remind = engine.privacy.reminding_batch(engine.reminder, own)
            elif engine.reminding_on:
                size = engine.reminding_batch_size or groups[0].label.shape[0]
                remind = engine.reminder.batch([g.label for g in groups], size)
        fakes, remind_out = engine.generate(groups, remind)
        d_loss = engine.backward_d(groups, fakes)
        return {GanKeys.DLOSS: d_loss, **engine.backward_g(groups, fakes, remind_out, remind)}
