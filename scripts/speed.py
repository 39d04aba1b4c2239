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
"""How a visit runs, none of which changes what it computes beyond autocast's rounding: the trainer's precision,
memory format, compilation and profiler scopes, and the process's allocator (measured in tools/docs/benchmark.md)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
from torch.profiler import record_function

from scripts.losses import PerceptualLoss
from scripts.precision import Precision

__all__ = ["Speed", "device_name", "retain_freed_memory_now"]

logger = logging.getLogger(__name__)

_RETAINED: list[bool] = []  # the outcome of retain_freed_memory_now in this process (it acts once per process)


def retain_freed_memory_now(device: str | torch.device = "cpu", enabled: bool = True) -> bool:
    """The visit's ``retain_freed_memory`` setting, applied by configs/train.json before its trainer is built (the
    allocator belongs to the process, not to the training code): on CPU, keep freed memory inside this process
    (glibc ``mallopt``: no mmap threshold, no trimming), so that a step's activations of 32 MB or more are not mapped
    and zero-filled afresh at every step; resident memory then stays at its peak (tools/docs/benchmark.md, "Freed
    memory kept in the process"). Acts once per process; returns whether freed memory is kept (False off glibc)."""
    if not _RETAINED and enabled and torch.device(device).type == "cpu":
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
            ok = bool(libc.mallopt(m_mmap_threshold, 2**31 - 1)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
        except (OSError, AttributeError):
            ok = False
        _RETAINED.append(ok)
        logger.info(f"CPU allocator: freed memory {'kept in the process (glibc mallopt)' if ok else 'left as it is'}.")
    return bool(_RETAINED and _RETAINED[0])


def device_name(device: str | torch.device) -> str:
    """The device a workflow runs on, as a log line names it: the GPU's index and model, or the CPU's threads."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"


class Speed(Precision):
    """The trainer's :py:class:`~scripts.precision.Precision` (``device``, ``amp``, ``amp_dtype``) and its other speed
    switches: ``channels_last`` (networks and inputs), ``compile`` (``Module.compile``: state-dict keys unchanged),
    the teacher's caches, and the profiler's ``tdgan.*`` scopes (tools/profile_step.py)."""

    def __init__(
        self,
        device: torch.device | str,
        amp: bool = False,
        amp_dtype: torch.dtype | str | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(device, amp, amp_dtype)
        self.channels_last, self.compile = channels_last, compile
        self.memory_format = torch.preserve_format

    def prepare(self, trainer: Any, feature_cache_mb: float) -> None:
        """Put the trainer's networks in the memory format, then compile them (each discriminator on its own); run
        the reminder's teacher as the generator runs, and let it cache the perceptual term's target features of the
        reminding batch within ``feature_cache_mb`` where that term is a feature network's (mean of per-layer MSE; a
        pairwise distance such as MONAI's cannot be split)."""
        if self.channels_last:
            dims = getattr(trainer.g_network, "module", trainer.g_network).settings.get("spatial_dims", 2)
            self.memory_format = torch.channels_last if dims == 2 else torch.channels_last_3d
        teacher = trainer.reminder.teacher if trainer.reminding_on else None
        for net in [trainer.g_network, teacher, trainer.d_network, trainer.perceptual_loss]:
            if net is not None and self.channels_last:
                net.to(memory_format=self.memory_format)
        for net in [trainer.g_network, teacher, *trainer.d_network, trainer.perceptual_loss] if self.compile else []:
            if net is not None:
                net.compile()
        if trainer.reminding_on:
            loss = trainer.perceptual_loss
            cacheable = trainer.perceptual_weight != 0 and isinstance(loss, PerceptualLoss) and not loss.pairwise
            chunk = int(getattr(trainer.data_loader, "batch_size", None) or 4)
            cache_bytes = int(max(0.0, float(feature_cache_mb)) * 2**20)
            features = partial(self.features, loss) if cacheable else None
            trainer.reminder.configure(self, self.memory_format, chunk, features, cache_bytes)
        cache = "on" if trainer.reminding_on and trainer.reminder.cache else "off"
        logger.info(
            f"precision {self.name}, teacher cache {cache}, channels_last {self.channels_last}, compile {self.compile}."
        )
        logger.info(f"training on {device_name(trainer.state.device)}.")

    @torch.no_grad()
    def features(self, loss: PerceptualLoss, target: torch.Tensor) -> list[torch.Tensor]:
        """The perceptual term's features of target images, as ``PerceptualLoss`` computes them."""
        with self.autocast():
            return list(loss.features(target))

    @contextmanager
    def scope(self, name: str, autocast: bool = False) -> Iterator[None]:
        """The profiler's scope ``tdgan.<name>``, inside the training precision's autocast when ``autocast``."""
        with self.autocast() if autocast else nullcontext(), record_function(f"tdgan.{name}"):
            yield
