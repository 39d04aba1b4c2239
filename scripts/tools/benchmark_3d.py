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
"""3D step benchmark: seconds and peak memory of one TDGAN iteration of the visit with configs/train_3d.json."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from scripts.data.demo import make_demo_centers

__all__ = ["run_case", "main"]

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [str(BUNDLE_ROOT / "configs" / "train.json"), str(BUNDLE_ROOT / "configs" / "train_3d.json")]


def _rss_mb() -> float:
    """This process's current resident set size in MB (Linux), else 0."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def run_case(size: int, batch_size: int, steps: int, warmup: int, device: str | None) -> dict[str, Any]:
    """Time ``steps`` iterations (after ``warmup``) of the 3D visit at the first center on ``size``^3 demo volumes.

    The workflow is ``configs/train.json`` + ``configs/train_3d.json`` (its networks and settings unchanged except
    ``spatial_size`` and ``batch_size``); batches are fetched before timing, so data loading is excluded.

    Returns:
        the case's record: ``step_s_median``/``step_s_min`` and all timed ``step_s`` (wall), ``cpu_s_median`` (process
        CPU seconds per step: about ``threads`` x wall on an idle machine, less sensitive to other jobs on the cores,
        and ``loadavg_1m_after`` to judge them); ``rss_before_steps_mb`` (after
        setup) and ``peak_rss_mb`` (the process's maximum, setup included); on CUDA ``cuda_peak_mb``
        (``torch.cuda.max_memory_allocated``); network sizes and the environment.
    """
    with tempfile.TemporaryDirectory(prefix="tdgan_bench3d_") as tmp:
        data = make_demo_centers(
            Path(tmp) / "data", num_centers=1, num_train=2 * batch_size, num_test=0, size=size, volumetric=True
        )
        parser = ConfigParser()
        parser.read_config(CONFIGS)
        parser.update(
            {
                "bundle_root": str(BUNDLE_ROOT),
                "dataset_dir": str(data / "center_a"),
                "center_dirs": [str(data / "center_a")],
                "output_dir": str(Path(tmp) / "visit"),
                "spatial_size": [size] * 3,
                "batch_size": batch_size,
                **({} if device is None else {"device": f"$torch.device({device!r})"}),
            }
        )
        parser.get_parsed_content("initialize")
        trainer = parser.get_parsed_content("train#trainer")
        trainer.prepare_scaler()  # what TDGANTrainer.run does before Ignite's loop
        dev = torch.device(trainer.state.device)
        loader = parser.get_parsed_content("train#dataloader")
        batches = list(itertools.islice(itertools.cycle(list(loader)), warmup + steps))
        rss_before = _rss_mb()
        times, cpu_times = [], []
        for i, batch in enumerate(batches):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0, c0 = time.perf_counter(), time.process_time()
            trainer._iteration(trainer, batch)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                cpu_times.append(time.process_time() - c0)
            print(
                f"[benchmark_3d] {size}^3 batch {batch_size}: step {i + 1} {time.perf_counter() - t0:.2f} s",
                file=sys.stderr,
            )
        record = {
            "size": size,
            "batch_size": batch_size,
            "step_s_median": round(statistics.median(times), 3),
            "step_s_min": round(min(times), 3),
            "step_s": [round(t, 3) for t in times],
            "cpu_s_median": round(statistics.median(cpu_times), 3),
            "warmup": warmup,
            "rss_before_steps_mb": round(rss_before, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "cuda_peak_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None,
            "device": str(dev),
            "threads": torch.get_num_threads(),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
            "torch": str(torch.__version__),
            "amp": bool(trainer.amp),
            **{k: parser.get_parsed_content(k) for k in ("ngf", "num_blocks", "ndf", "max_centers")},
            "g_params": sum(p.numel() for p in trainer.g_network.parameters()),
            "d_params": sum(p.numel() for p in trainer.d_network.parameters()),
        }
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one JSON line per (size, batch size) case, each case in its own process (clean peak memory)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="cube sides (multiples of 4, >= 32)")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=3, help="timed steps per case")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the config's, cuda when available)")
    p.add_argument("--case", type=int, nargs=2, metavar=("SIZE", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(*args.case, args.steps, args.warmup, args.device)), flush=True)
        return 0
    for size, batch in itertools.product(args.sizes, args.batch_sizes):
        cmd = [sys.executable, "-m", "scripts.tools.benchmark_3d", "--case", str(size), str(batch)]
        cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd += [] if args.device is None else ["--device", args.device]
        if subprocess.run(cmd, cwd=BUNDLE_ROOT).returncode != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
