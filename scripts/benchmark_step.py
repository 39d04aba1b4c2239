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
"""Step benchmark: seconds and peak memory of one TDGAN training iteration of the real visit workflow, per case."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

from scripts.demo_data import center_name, make_demo_centers
from scripts.handoff import Handoff, save_handoff
from scripts.visit import software_versions

__all__ = ["parse_overrides", "fabricate_handoff", "run_case", "main"]

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = BUNDLE_ROOT / "configs" / "train.json"
META_FILE = BUNDLE_ROOT / "configs" / "metadata.json"


def _log(message: str) -> None:
    """Progress message on stderr (stdout carries only the JSON lines)."""
    print(f"[benchmark_step] {message}", file=sys.stderr, flush=True)


def _cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo``, else ``platform.processor()``, else ``"unknown"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` config overrides; values are read as JSON when possible, else kept as strings.

    Args:
        items: strings such as ``"ngf=8"``, ``"amp=true"``, ``"gan_mode=lsgan"``.

    Returns:
        the overrides as a dict for ``ConfigParser.update``.

    Raises:
        ValueError: an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}.")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _parser(overrides: dict[str, Any]) -> ConfigParser:
    """The bundle's visit workflow config (``configs/train.json`` + metadata) with ``overrides`` applied."""
    parser = ConfigParser()
    parser.read_config(str(TRAIN_CONFIG))
    parser.read_meta(str(META_FILE))
    parser.update(overrides)
    return parser


def _demo_label_bank(center_dir: Path) -> torch.Tensor:
    """The training label maps of one demo center folder as uint8 (N, 1, H, W)."""
    entries = json.loads((center_dir / "dataset.json").read_text())["training"]
    maps = [np.asarray(nib.load(str(center_dir / e["label"])).dataobj).round().astype(np.uint8) for e in entries]
    maps = [m.reshape(m.shape[:2]) if m.ndim == 3 and m.shape[-1] == 1 else m for m in maps]
    return torch.from_numpy(np.stack(maps)[:, None])


def fabricate_handoff(overrides: dict[str, Any], data_root: Path, earlier: int, path: Path) -> str:
    """Write an incoming hand-off as if ``earlier`` demo centers had been visited before.

    The generator is built from the same config and overrides as the visit (``network_def``), initialised with the
    config's determinism; the registry holds the first ``earlier`` demo centers with codes ``0..earlier-1``, and the
    label bank their demo training label maps.

    Args:
        overrides: the visit's config overrides (network sizes must match the visit's).
        data_root: folder written by ``make_demo_centers`` with at least ``earlier`` centers.
        earlier: number of earlier centers (>= 1).
        path: where to write the hand-off.

    Returns:
        the hand-off's sha256.
    """
    parser = _parser(overrides)
    parser.get_parsed_content("initialize")
    generator = parser.get_parsed_content("network_def")
    names = [center_name(i) for i in range(earlier)]
    handoff = Handoff(
        generator={k: v.detach().cpu() for k, v in generator.state_dict().items()},
        network=dict(generator.settings),
        registry=[{"name": n, "code": i} for i, n in enumerate(names)],
        label_bank={n: _demo_label_bank(data_root / n) for n in names},
        visits=[{"centers": [n], "codes": [i], "fabricated_by": "scripts.benchmark_step"} for i, n in enumerate(names)],
        versions=software_versions(BUNDLE_ROOT),
    )
    return save_handoff(handoff, path)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(
    size: int,
    center_index: int,
    batch_size: int,
    steps: int,
    warmup: int,
    device: str | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Benchmark one case in this process: the visit at center ``center_index`` (1-based) at ``size`` x ``size``.

    Builds the real workflow (``configs/train.json`` through ``ConfigParser``), pre-fetches batches from its data
    loader, and times ``trainer._iteration`` after ``warmup`` untimed steps.

    Args:
        size: image side in pixels.
        center_index: 1-based position of the visited center; ``k > 1`` arrives with a hand-off of ``k - 1`` centers.
        batch_size: the config's ``batch_size``.
        steps: timed steps.
        warmup: untimed steps before them.
        device: ``"cpu"``, ``"cuda"`` or None for the config's default.
        extra: further config overrides (``--set``).

    Returns:
        the case's record, printed as one JSON line: the case (``size``, ``center_index``, ``earlier_centers``,
        ``batch_size``, ``reminding``), step seconds (``step_s_median``, ``step_s_min``, ``step_s_mean``, all timed
        ``step_s``; data loading excluded), ``cpu_util_median`` (process CPU seconds per wall second during a step:
        about ``threads`` on an otherwise idle CPU machine, clearly lower when other processes compete for the
        cores), ``peak_mem_mb`` of kind ``peak_mem_kind`` (``cpu_maxrss``: the whole case's process, setup included;
        ``cuda_max_allocated``: tensors on the GPU), the environment (``device``, ``threads``, ``torch``, ``cpu``,
        load average) and the network settings (``ngf``, ``num_blocks``, ``ndf``, ``perceptual``, ``amp``).
    """
    t_case = time.perf_counter()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="tdgan_bench_") as tmp:
        tmp_path = Path(tmp)
        data_root = tmp_path / "data"
        make_demo_centers(
            data_root, num_centers=center_index, num_train=max(8, 2 * batch_size), num_test=0, size=size, seed=0
        )
        center_dir = data_root / center_name(center_index - 1)
        handoff_in = tmp_path / "handoff_in.pt" if center_index > 1 else None
        overrides: dict[str, Any] = {
            "bundle_root": str(BUNDLE_ROOT),
            "dataset_dir": str(center_dir),
            "center_dirs": [str(center_dir)],
            "output_dir": str(tmp_path / "visit"),
            "handoff_in": None if handoff_in is None else str(handoff_in),
            "spatial_size": [size, size],
            "batch_size": batch_size,
        }
        if device is not None:
            overrides["device"] = f"$torch.device({device!r})"
        overrides.update(extra)
        if handoff_in is not None:
            fabricate_handoff(overrides, data_root, center_index - 1, handoff_in)

        parser = _parser(overrides)
        parser.get_parsed_content("initialize")
        trainer = parser.get_parsed_content("train#trainer")
        loader = parser.get_parsed_content("train#dataloader")
        trainer.prepare_scaler()  # what TDGANTrainer.run does before Ignite's loop
        dev = torch.device(trainer.state.device)

        need = warmup + steps
        batches: list[Any] = []
        while len(batches) < need:  # pre-fetch, so data loading is not timed
            before = len(batches)
            batches += list(itertools.islice(iter(loader), need - len(batches)))
            if len(batches) == before:
                raise RuntimeError("the data loader yields no batch (fewer samples than batch_size with drop_last).")
        setup_s = time.perf_counter() - t_case

        times, utils = [], []
        for i, batch in enumerate(batches):
            _sync(dev)
            t0, c0 = time.perf_counter(), time.process_time()
            trainer._iteration(trainer, batch)
            _sync(dev)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            if i >= warmup:
                times.append(dt)
                utils.append(cpu / dt)
            _log(
                f"size {size} center {center_index}: step {i + 1}/{need} {dt:.3f} s{' (warmup)' if i < warmup else ''}"
            )

        if dev.type == "cuda":
            peak_mb, kind = torch.cuda.max_memory_allocated(dev) / 2**20, "cuda_max_allocated"
        else:
            peak_mb, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "cpu_maxrss"

        record = {
            "size": size,
            "center_index": center_index,
            "earlier_centers": center_index - 1,
            "batch_size": batch_size,
            "online_groups": len(trainer.d_network),
            "reminding": bool(trainer.reminding_on),
            "step_s_median": round(statistics.median(times), 4),
            "step_s_min": round(min(times), 4),
            "step_s_mean": round(statistics.fmean(times), 4),
            "step_s": [round(t, 4) for t in times],
            "cpu_util_median": round(statistics.median(utils), 2),
            "steps": steps,
            "warmup": warmup,
            "data_excluded": True,
            "peak_mem_mb": round(peak_mb, 1),
            "peak_mem_kind": kind,
            "device": str(dev),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "threads": torch.get_num_threads(),
            "torch": str(torch.__version__),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "loadavg_1m_before": None if load_before is None else round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "ngf": int(parser.get_parsed_content("ngf")),
            "num_blocks": int(parser.get_parsed_content("num_blocks")),
            "ndf": int(parser.get_parsed_content("ndf")),
            "perceptual": trainer.perceptual_weight > 0,
            "amp": bool(trainer.amp),
            "overrides": extra,
            "setup_s": round(setup_s, 2),
        }
    record["case_wall_s"] = round(time.perf_counter() - t_case, 2)
    return record


def _build_argparser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scripts.benchmark_step",
        description=__doc__ + " Prints one JSON line per case (size x center index) on stdout; progress on stderr.",
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="image sizes (square), default 64 128")
    p.add_argument(
        "--centers",
        type=int,
        nargs="+",
        default=[1, 5],
        help="1-based center indices; center k arrives with a hand-off of k-1 earlier centers (default 1 5)",
    )
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="timed steps per case")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: the config's (cuda if available)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override of configs/train.json, value parsed as JSON if possible (repeatable), e.g. ngf=32",
    )
    p.add_argument("--one-case", dest="one_case", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; each case runs in a fresh subprocess so its peak memory is its own.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        the exit status: 0 when every case succeeded.
    """
    p = _build_argparser()
    args = p.parse_args(argv)
    try:
        extra = parse_overrides(args.overrides)
    except ValueError as e:
        p.error(str(e))
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("need --steps >= 1, --warmup >= 0 and --batch_size >= 1.")
    if any(c < 1 for c in args.centers):
        p.error("center indices are 1-based (>= 1).")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    if args.one_case:
        if len(args.sizes) != 1 or len(args.centers) != 1:
            p.error("--one-case takes exactly one size and one center.")
        record = run_case(args.sizes[0], args.centers[0], args.batch_size, args.steps, args.warmup, args.device, extra)
        print(json.dumps(record), flush=True)
        return 0

    common = ["--batch_size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.threads is not None:
        common += ["--threads", str(args.threads)]
    if args.device is not None:
        common += ["--device", args.device]
    for item in args.overrides:
        common += ["--set", item]
    failed = 0
    for size, center in itertools.product(args.sizes, args.centers):
        _log(f"case size {size} center {center} ...")
        cmd = [sys.executable, "-m", "scripts.benchmark_step", "--one-case", "--sizes", str(size), "--centers"]
        proc = subprocess.run(
            [*cmd, str(center), *common], cwd=BUNDLE_ROOT, stdout=subprocess.PIPE, text=True, check=False
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            failed += 1
            _log(f"case size {size} center {center} FAILED (exit status {proc.returncode}).")
            continue
        print(lines[-1], flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
