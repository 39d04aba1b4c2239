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
"""What the step timers (tools/benchmark_step.py, tools/reference_step.py, tools/profile_step.py) read of the machine
they run on: the CPU model, the process's peak memory, a device sync. Here so that neither timer imports the other."""

from __future__ import annotations

import platform
import resource
from pathlib import Path

import torch

__all__ = ["cpu_model", "reset_peak_rss", "peak_rss_mb", "sync"]


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo``, else ``platform.processor()``, else ``"unknown"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set size (Linux ``clear_refs``); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's peak resident set size in MB (``VmHWM``, else ``ru_maxrss``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA), so that a timer stops after it; nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
