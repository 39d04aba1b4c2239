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
"""The reference TDGAN's training step, timed from an extracted copy of huiqu18/TDGAN-PyTorch (read-only).

A development tool of the repository, not part of the bundle's package; run from the repository root as
``python -m tools.reference_step`` (``python -m tools.benchmark_step --reference PATH`` runs it once per case).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from tools.machine import cpu_model, peak_rss_mb, reset_peak_rss, sync

__all__ = ["REFERENCE_FILES", "check_reference", "reference_imports", "reference_options", "run_reference_case", "main"]

REFERENCE_REPO = "huiqu18/TDGAN-PyTorch"
REFERENCE_FILES = ("models/TDGAN_model.py", "models/base_model.py", "models/networks.py", "models/perception_loss.py")
"""The files of the reference this adapter imports (its TDGAN model, networks and VGG16 feature loss)."""

HOW_TO_GET = (
    "get a copy with the search tool's fetch of github:huiqu18/TDGAN-PyTorch, then `git --git-dir=<mirror> archive "
    "HEAD | tar -x -C PATH` (or `git clone https://github.com/huiqu18/TDGAN-PyTorch PATH`)"
)

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
"""torchvision's VGG16 ``features``: the reference runs all 31 of its modules (to conv5_3 and the last pooling) and
taps relu1_2, relu2_2, relu3_3 and relu4_3."""


def check_reference(path: str | os.PathLike) -> Path:
    """The reference folder, checked to hold :data:`REFERENCE_FILES`.

    Raises:
        FileNotFoundError: one line naming the folder, the first missing file and how to get a copy.
    """
    root = Path(path).expanduser().resolve()
    missing = [f for f in REFERENCE_FILES if not (root / f).is_file()]
    if missing:
        what = "does not exist" if not root.exists() else f"has no {missing[0]}"
        raise FileNotFoundError(
            f"--reference {path}: {what}; expected an extracted copy of {REFERENCE_REPO} (files "
            f"{', '.join(REFERENCE_FILES)}); {HOW_TO_GET}."
        )
    return root


def _random_vgg16(pretrained: bool = False, **_: Any) -> torch.nn.Module:
    """A VGG16 of torchvision's layout (``.features`` with the same module indices) with RANDOM weights, whatever
    ``pretrained`` says: nothing can be downloaded, and the timing does not depend on the values."""
    layers: list[torch.nn.Module] = []
    channels = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [torch.nn.Conv2d(channels, int(item), kernel_size=3, padding=1), torch.nn.ReLU(inplace=True)]
            channels = int(item)
    net = torch.nn.Module()
    net.features = torch.nn.Sequential(*layers)
    return net


@contextlib.contextmanager
def reference_imports(path: str | os.PathLike, device: torch.device) -> Iterator[types.ModuleType]:
    """Import the reference's TDGAN model module from ``path`` without changing any of its files.

    Patched at run time, in this process only, and said so in every record: ``torchvision.models.vgg16`` gives random
    weights (the reference asks for ``pretrained=True``, a download; a stand-in ``torchvision`` module is installed
    when torchvision is absent, as here), and, while the model is built, ``torch.nn.Module.cuda`` moves to
    ``device`` (the reference hard-codes ``vgg16_feat().cuda()``).

    Yields:
        the reference's ``models.TDGAN_model`` module.
    """
    root = str(check_reference(path))
    try:
        import torchvision  # noqa: F401
    except ImportError:
        stand_in = types.ModuleType("torchvision")
        stand_in.models = types.ModuleType("torchvision.models")
        stand_in.models.vgg16 = _random_vgg16
        sys.modules.setdefault("torchvision", stand_in)
        sys.modules.setdefault("torchvision.models", stand_in.models)
    sys.path.insert(0, root)
    cuda = torch.nn.Module.cuda
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self.to(device)
    try:
        from models import TDGAN_model, perception_loss

        perception_loss.models = types.SimpleNamespace(vgg16=_random_vgg16)
        yield TDGAN_model
    finally:
        torch.nn.Module.cuda = cuda
        sys.path.remove(root)


def reference_options(task_num: int, device: torch.device, checkpoints_dir: str, **changes: Any) -> argparse.Namespace:
    """The reference's options for a training step of task ``task_num`` (1-based): its own defaults and those of its
    brain TDGAN script (``scripts/train_TDGAN_brain.sh``: ResNet-9 blocks, instance norm, no dropout, vanilla GAN, L1
    100 and perceptual 10 for digesting and for reminding, pool 0) at ngf 64 and the 70x70 PatchGAN (``basic``, 3
    layers, ndf 64); ``changes`` override any of them."""
    opt = {
        "gpu_ids": [0] if device.type == "cuda" else [],
        "isTrain": True,
        "checkpoints_dir": checkpoints_dir,
        "name": "timing",
        "preprocess": "resize_and_crop",
        "task_num": int(task_num),
        "input_nc": 3,
        "output_nc": 3,
        "ngf": 64,
        "ndf": 64,
        "netG": "resnet_9blocks",
        "netD": "basic",
        "n_layers_D": 3,
        "norm": "instance",
        "no_dropout": True,
        "init_type": "normal",
        "init_gain": 0.02,
        "gan_mode": "vanilla",
        "pool_size": 0,
        "lr": 0.0002,
        "beta1": 0.5,
        "prev_model_path": "",
        "prev_model_epoch": 0,
        "lambda_digesting_L1": 100.0,
        "lambda_digesting_perceptual": 10.0,
        "lambda_reminding_L1": 100.0,
        "lambda_reminding_perceptual": 10.0,
        "lambda_G": 0.1,
        "lambda_D": 0.05,
    }
    opt.update(changes)
    return argparse.Namespace(**opt)


def _batch(task_num: int, batch_size: int, size: int, channels: int, device: torch.device) -> dict[str, Any]:
    """One input of the reference's split datasets: label (``A_i``) and image (``B_i``) per task, in [-1, 1]."""
    gen = torch.Generator().manual_seed(0)
    out: dict[str, Any] = {}
    for i in range(task_num):
        out[f"A_{i}"] = (torch.rand(batch_size, channels, size, size, generator=gen) * 2 - 1).to(device)
        out[f"B_{i}"] = (torch.rand(batch_size, channels, size, size, generator=gen) * 2 - 1).to(device)
        out[f"A_paths_{i}"] = [f"task{i}_{j}" for j in range(batch_size)]
    return out


def run_reference_case(
    path: str | os.PathLike,
    size: int,
    center_index: int,
    batch_size: int,
    steps: int,
    warmup: int,
    device: str | None = None,
    flops: bool = True,
) -> dict[str, Any]:
    """Time the reference's own training step (``TDGANModel.set_input`` + ``optimize_parameters``) at task
    ``center_index``: one generator forward for the current task, and for EACH earlier task one generator forward and
    one forward of the previous generator (neither frozen nor under ``no_grad``), VGG16 features of both, all in one
    backward; then the two Adam steps.

    Returns:
        one JSON-able record (``implementation``: ``reference``) with the benchmark's step fields.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    digest = hashlib.sha256((check_reference(path) / "models" / "TDGAN_model.py").read_bytes()).hexdigest()[:12]
    t_case = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tdgan_reference_") as tmp, reference_imports(path, dev) as tdgan:
        opt = reference_options(center_index, dev, tmp)
        with contextlib.redirect_stdout(sys.stderr):  # the reference prints as it builds; stdout is for the record
            model = tdgan.TDGANModel(opt)
        batch = _batch(center_index, batch_size, size, opt.input_nc, dev)
        times, cpu_times = [], []
        for i in range(warmup + steps):
            if i == warmup:
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                rss_reset = reset_peak_rss()
            t0, c0 = time.perf_counter(), time.process_time()
            model.set_input(batch)
            model.optimize_parameters()
            sync(dev)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if i >= warmup:
                times.append(wall)
                cpu_times.append(cpu)
            print(f"[reference_step] size {size} task {center_index}: step {i + 1}/{warmup + steps} {wall:.3f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
        if dev.type == "cuda":
            peak_mb, kind = torch.cuda.max_memory_allocated(dev) / 2**20, "cuda_max_allocated"
        else:
            peak_mb, kind = peak_rss_mb(), "cpu_rss_during_steps" if rss_reset else "cpu_maxrss"
        step_flops = None
        if flops:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                model.set_input(batch)
                model.optimize_parameters()
            step_flops = int(counter.get_total_flops())
        g_params = sum(p.numel() for p in model.netG.parameters())
    median = statistics.median(times)
    return {
        "implementation": "reference",
        "reference": f"{REFERENCE_REPO} (models/TDGAN_model.py sha256 {digest})",
        "reference_patches": "torchvision vgg16 with random weights; Module.cuda -> .to(device) while building",
        "size": size,
        "spatial_dims": 2,
        "center_index": center_index,
        "earlier_centers": center_index - 1,
        "batch_size": batch_size,
        "reminding": center_index > 1,
        "precision": "fp32",
        "precision_asked": "fp32",
        "step_s_median": round(median, 4),
        "step_s_min": round(min(times), 4),
        "step_s": [round(t, 4) for t in times],
        "step_cpu_s_median": round(statistics.median(cpu_times), 4),
        "images_per_s": round(batch_size / median, 3),
        "step_gflop": None if step_flops is None else round(step_flops / 1e9, 3),
        "steps": steps,
        "warmup": warmup,
        "peak_mem_mb": round(peak_mb, 1),
        "peak_mem_kind": kind,
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "cpu": cpu_model(),
        "ngf": opt.ngf,
        "ndf": opt.ndf,
        "image_channels": opt.output_nc,
        "g_params": g_params,
        "perceptual_network": "reference vgg16_feat (all VGG16 features): RANDOM weights, timing only",
        "case_wall_s": round(time.perf_counter() - t_case, 2),
    }


def build_argparser() -> argparse.ArgumentParser:
    """The adapter's command line (one case per process, as the benchmark runs it)."""
    p = argparse.ArgumentParser(prog="python -m tools.reference_step", description=__doc__)
    p.add_argument("--reference", required=True, metavar="PATH", help=f"an extracted copy of {REFERENCE_REPO}")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--center", type=int, default=1, help="1-based task number (task t reminds t - 1 earlier ones)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--no_flops", dest="flops", action="store_false")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one JSON line on stdout (progress on stderr)."""
    p = build_argparser()
    args = p.parse_args(argv)
    try:
        check_reference(args.reference)
    except FileNotFoundError as e:
        p.error(str(e))
    if args.center < 1 or args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("need --center >= 1, --steps >= 1, --warmup >= 0 and --batch_size >= 1.")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    record = run_reference_case(
        args.reference, args.size, args.center, args.batch_size, args.steps, args.warmup, args.device, args.flops
    )
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
