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
"""Training precision: the autocast dtype, whether the device runs it natively, and the scaled backward step."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from monai.inferers import SimpleInferer
from torch.optim import Optimizer

__all__ = ["AutocastInferer", "Precision", "amp_supported", "resolve_amp_dtype"]

logger = logging.getLogger(__name__)

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


class Precision:
    """How the networks' forward passes run and how a loss is stepped: float32, or autocast in bfloat16/float16.

    Where the device has no native support for the requested dtype (a CPU without AVX512-BF16/AMX), a warning says
    so and training runs in float32. float16 on CUDA steps through a ``GradScaler``; bfloat16 needs none.

    Args:
        device: where the networks run.
        amp: autocast the forward passes.
        amp_dtype: autocast dtype; default bfloat16 on CPU, float16 on CUDA.
    """

    def __init__(self, device: torch.device | str, amp: bool = False, amp_dtype: torch.dtype | str | None = None):
        self.device_type = torch.device(device).type
        self.dtype = resolve_amp_dtype(amp_dtype, self.device_type)
        self.amp = bool(amp)
        if self.amp and not amp_supported(self.device_type, self.dtype):
            logger.warning(
                f"amp: {self.dtype} autocast is not supported natively on this {self.device_type} (needs AVX512-BF16 "
                "or AMX for bfloat16, AVX512-FP16 for float16 on CPU): running in float32."
            )
            self.amp = False
        use_scaler = self.amp and self.dtype == torch.float16 and self.device_type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    @property
    def name(self) -> str:
        """``"fp32"``, ``"bf16"`` or ``"fp16"``: what the forward passes actually run in."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype] if self.amp else "fp32"

    def autocast(self) -> AbstractContextManager:
        """The context the forward passes run in (a no-op in float32)."""
        if not self.amp:
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: Optimizer) -> None:
        """Backward pass of ``loss`` and one step of ``optimizer`` (scaled for float16 on CUDA)."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


class AutocastInferer(SimpleInferer):
    """MONAI's ``SimpleInferer`` run under :py:class:`Precision`'s autocast, returning float32 (so a trainer's loss
    and metrics stay in float32). MONAI's ``SupervisedTrainer`` autocasts only on CUDA; this one serves CPU
    bfloat16 too.

    Args:
        device: where the network runs.
        amp: autocast the forward pass (float32 with a warning where the device has no native support).
        amp_dtype: autocast dtype; default bfloat16 on CPU, float16 on CUDA.
    """

    def __init__(self, device: torch.device | str, amp: bool = False, amp_dtype: torch.dtype | str | None = None):
        super().__init__()
        self.precision = Precision(device, amp, amp_dtype)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        with self.precision.autocast():
            out = super().__call__(inputs, network, *args, **kwargs)
        return out.float()
