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
"""Step benchmark: seconds and peak memory of one TDGAN training iteration of the real visit workflow, per case.

A development tool of the repository, not part of the bundle's package; run from the repository root as
``python -m tools.benchmark_step``; its results: tools/docs/benchmark.md.
"""

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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from scripts.data.centers import read_label_maps
from scripts.data.demo import center_name, make_demo_centers
from scripts.handoff import Handoff, save_handoff
from scripts.visit import software_versions, visit_workflow
from tools.machine import cpu_model, peak_rss_mb, reset_peak_rss, sync

__all__ = ["parse_overrides", "fabricate_handoff", "peak_gflops", "count_step_flops", "run_case", "summarize", "main"]

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = BUNDLE_ROOT / "configs" / "train.json"


def _log(message: str) -> None:
    """Progress message on stderr (stdout carries only the JSON lines)."""
    print(f"[benchmark_step] {message}", file=sys.stderr, flush=True)


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


def fabricate_handoff(
    generator: torch.nn.Module, data_root: Path, earlier: int, spatial_size: Sequence[int], path: Path
) -> str:
    """Write an incoming hand-off as if ``earlier`` demo centers had been visited before.

    The registry holds the first ``earlier`` demo centers with codes ``0..earlier-1``, the label bank their demo
    training label maps, and the weights are ``generator``'s (the visit's own initial generator).

    Args:
        generator: the generator the visit builds (its ``network_def``).
        data_root: folder written by ``make_demo_centers`` with at least ``earlier`` centers.
        earlier: number of earlier centers (>= 1).
        spatial_size: the visit's spatial size.
        path: where to write the hand-off.

    Returns:
        the hand-off's sha256.
    """
    names = [center_name(i) for i in range(earlier)]
    dims = generator.settings["spatial_dims"]
    handoff = Handoff(
        generator={k: v.detach().cpu() for k, v in generator.state_dict().items()},
        network=dict(generator.settings),
        registry=[{"name": n, "code": i} for i, n in enumerate(names)],
        label_bank={n: read_label_maps(data_root / n, dims, spatial_size)[0] for n in names},
        visits=[{"centers": [n], "codes": [i], "fabricated_by": __name__} for i, n in enumerate(names)],
        versions=software_versions(BUNDLE_ROOT),
        preprocessing={"spatial_size": [int(v) for v in spatial_size], "intensity_range": [-1.0, 1.0]},
    )
    return save_handoff(handoff, path)


# --- peak FLOP/s of the machine, for the precision a case runs in -------------------------------------------------

# dense tensor-core TFLOP/s by card (vendor data sheets): (fp32 without tensor cores, tf32, bf16, fp16)
_GPU_PEAK_TFLOPS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("H200", (67.0, 494.7, 989.4, 989.4)),  # same compute as H100 SXM
    ("H100 PCIe", (51.2, 378.0, 756.0, 756.0)),
    ("H100", (67.0, 494.7, 989.4, 989.4)),  # SXM
    ("A100", (19.5, 156.0, 312.0, 312.0)),
    ("L40S", (91.6, 183.0, 362.0, 362.0)),
    ("A10", (31.2, 62.5, 125.0, 125.0)),
    ("L4", (30.3, 60.0, 121.0, 121.0)),
    ("RTX 4090", (82.6, 82.6, 165.2, 165.2)),
    ("V100", (15.7, 15.7, 15.7, 125.0)),
    ("T4", (8.1, 8.1, 8.1, 65.0)),
)


def _cpuinfo() -> tuple[str, set[str], int | None, float | None]:
    """CPU vendor, feature flags, family and clock (MHz: cpufreq's maximum if exposed, else cpuinfo's) of cpu 0."""
    vendor, flags, family, mhz = "unknown", set(), None, None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "vendor_id":
                vendor = value
            elif key == "flags":
                flags = set(value.split())
            elif key == "cpu family" and family is None:
                family = int(value)
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
    except (OSError, ValueError):
        pass
    try:
        mhz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000.0
    except (OSError, ValueError):
        pass
    return vendor, flags, family, mhz


def peak_gflops(device: torch.device, precision: str, threads: int) -> tuple[float | None, str]:
    """Estimated peak GFLOP/s for ``precision`` (``fp32``/``bf16``/``fp16``) and how it was estimated.

    CPU: cores used (``threads``, at most the CPUs) x clock x FLOP per cycle per core from the instruction set: fp32
    FMA width x 2 FMA pipes (AVX2+FMA: 32; AVX-512 on Intel: 64; on AMD Zen 4, which runs AVX-512 on 256-bit pipes:
    32; Zen 5: 64); bf16 x2 with AVX512-BF16, 1024 with AMX-BF16; fp16 x2 with AVX512-FP16, 1024 with AMX-FP16; no
    gain without them (emulated). CUDA: the card's data-sheet dense tensor-core figure by name; fp32 uses the TF32
    figure when cuDNN may use TF32 for convolutions (PyTorch's default).
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (fp32, tf32, bf16, fp16) in _GPU_PEAK_TFLOPS:
            if key.lower() in name.lower():
                if precision == "fp32":
                    tf = torch.backends.cudnn.allow_tf32
                    value, what = (tf32, "TF32 tensor cores (cuDNN convolutions use TF32)") if tf else (fp32, "FP32")
                else:
                    value, what = (bf16 if precision == "bf16" else fp16), f"{precision.upper()} tensor cores"
                return value * 1000.0, f"{key} data sheet, dense {what}"
        return None, f"no peak on record for {name!r}"
    vendor, flags, family, mhz = _cpuinfo()
    if mhz is None:
        return None, "CPU clock unknown"
    cores = max(1, min(threads, os.cpu_count() or threads))
    if "avx512f" in flags:
        wide = vendor == "GenuineIntel" or (vendor == "AuthenticAMD" and (family or 0) >= 26)
        fp32, isa = (64, "AVX-512, 2 x 512-bit FMA") if wide else (32, "AVX-512 on 2 x 256-bit FMA pipes (Zen 4)")
    elif "avx2" in flags and "fma" in flags:
        fp32, isa = 32, "AVX2, 2 x 256-bit FMA"
    elif "avx" in flags:
        fp32, isa = 16, "AVX, no FMA"
    else:
        fp32, isa = 8, "SSE"
    per_cycle, note = fp32, ""
    if precision in ("bf16", "fp16"):
        amx, avx512, name = f"amx_{precision}", f"avx512_{precision}", precision.upper()
        if amx in flags:
            per_cycle, note = 1024, f", AMX-{name}"
        elif avx512 in flags:
            per_cycle, note = 2 * fp32, f", AVX512-{name} (2 x fp32)"
        else:
            note = f", no native {precision} (no gain over fp32)"
    value = cores * mhz / 1000.0 * per_cycle
    return value, f"{cores} cores x {mhz / 1000.0:.2f} GHz x {per_cycle} FLOP/cycle ({isa}{note})"


# --- measurement helpers --------------------------------------------------------------------------------------------


def count_step_flops(trainer: Any, batch: Any) -> int:
    """FLOPs of one full training iteration (forwards, backwards; convolutions and matrix products) of ``trainer``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer._iteration(trainer, batch)
    return int(counter.get_total_flops())


PRECISIONS = {"fp32": {"amp": False}, "bf16": {"amp": True, "amp_dtype": "bfloat16"}}
PRECISIONS["fp16"] = {"amp": True, "amp_dtype": "float16"}
RANDOM_VGG = "$scripts.losses.VGG16Features(random_weights_for_timing=True)"
RANDOM_VGG_LABEL = "VGG16Features: RANDOM weights, timing only (not a perceptual loss)"


@dataclass
class Case:
    """One benchmark case, built and ready to step: the visit's trainer and data loader at its center."""

    trainer: Any
    loader: Any
    parser: Any
    device: torch.device
    reminder: Any
    dims: int
    setup_s: float

    def batches(self) -> Iterator[Any]:
        """The data loader's batches, epoch after epoch."""
        while True:
            count = 0
            for b in self.loader:
                count += 1
                yield b
            if count == 0:
                raise RuntimeError("the data loader yields no batch (fewer samples than batch_size, drop_last).")


@contextmanager
def prepared_case(
    size: int,
    center_index: int,
    batch_size: int,
    device: str | None,
    extra: dict[str, Any],
    precision: str = "fp32",
    perceptual: str = "vgg16-random",
    configs: Sequence[str] = (),
) -> Iterator[Case]:
    """The visit at center ``center_index`` (1-based) at ``size`` per side, built in a temporary folder.

    Builds the real visit workflow (:py:func:`scripts.visit.visit_workflow`: ``configs/train.json`` plus ``configs``,
    its ``CacheDataset`` and ``DataLoader``) on fresh demo centers; center ``k > 1`` arrives with a fabricated hand-off
    of ``k - 1`` earlier centers (:py:func:`fabricate_handoff`). Arguments as :py:func:`run_case`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}.")
    t_case = time.perf_counter()
    config_files = [str(TRAIN_CONFIG), *(str(BUNDLE_ROOT / c) for c in configs)]
    dims = int(ConfigParser.load_config_files(config_files).get("spatial_dims", 2))
    spatial_size = [size] * dims
    with tempfile.TemporaryDirectory(prefix="tdgan_bench_") as tmp:
        tmp_path = Path(tmp)
        data_root = tmp_path / "data"
        train_items = max(8, 2 * batch_size) if dims == 2 else 2 * batch_size
        make_demo_centers(
            data_root, num_centers=center_index, num_train=train_items, num_test=0, size=size, volumetric=dims == 3
        )
        center_dir = data_root / center_name(center_index - 1)
        handoff_in = tmp_path / "handoff_in.pt" if center_index > 1 else None
        overrides: dict[str, Any] = {"spatial_size": spatial_size, "batch_size": batch_size, **PRECISIONS[precision]}
        if perceptual == "vgg16-random":
            overrides["perceptual_network"] = RANDOM_VGG
        if device is not None:
            overrides["device"] = f"$torch.device({device!r})"
        overrides.update(extra)
        workflow = visit_workflow([center_dir], tmp_path / "visit", handoff_in, None, overrides, config_files)
        parser = workflow.parser
        if handoff_in is not None:
            fabricate_handoff(
                parser.get_parsed_content("network_def"), data_root, center_index - 1, spatial_size, handoff_in
            )
        trainer = parser.get_parsed_content("train#trainer")
        loader = parser.get_parsed_content("train#dataloader")
        reminder = trainer.reminder if trainer.reminding_on else None
        yield Case(
            trainer, loader, parser, torch.device(trainer.state.device), reminder, dims, time.perf_counter() - t_case
        )


def run_case(
    size: int,
    center_index: int,
    batch_size: int,
    steps: int,
    warmup: int,
    device: str | None,
    extra: dict[str, Any],
    precision: str = "fp32",
    perceptual: str = "vgg16-random",
    flops: bool = True,
    configs: Sequence[str] = (),
) -> dict[str, Any]:
    """Benchmark one case in this process: the visit at center ``center_index`` (1-based) at ``size`` per side.

    Builds the real visit workflow (:py:func:`prepared_case`), fills the teacher-output cache (a once-per-visit cost,
    timed apart), then runs ``warmup`` + ``steps`` iterations straight from the data loader, timing the wait for each
    batch and ``trainer._iteration`` apart.

    Args:
        size: image side in pixels.
        center_index: 1-based position of the visited center; ``k > 1`` arrives with a hand-off of ``k - 1`` centers.
        batch_size: the config's ``batch_size``.
        steps: timed steps.
        warmup: untimed steps before them.
        device: ``"cpu"``, ``"cuda"`` or None for the config's default.
        extra: further config overrides (``--set``).
        precision: ``fp32``, ``bf16`` or ``fp16`` (sets ``amp`` and ``amp_dtype``).
        perceptual: ``vgg16-random`` (a VGG16-sized feature network with random weights, for timing only) or
            ``none`` (the config's ``perceptual_network``, null by default).
        flops: count the FLOPs of one more (untimed) step.
        configs: more config files after ``configs/train.json`` (e.g. ``configs/train_3d.json``: volumes).

    Returns:
        the case's record, printed as one JSON line. Step seconds (``step_s_median``, ``step_s_min``, ``step_s``)
        exclude the data wait; ``data_wait_share`` = data wait / (data wait + step) over the timed steps;
        ``peak_mem_mb`` of kind ``peak_mem_kind`` (``cpu_rss_during_steps``: the process's peak resident memory while
        stepping, whole process; ``cuda_max_allocated``: GPU tensors); ``step_gflop``, ``achieved_gflops`` and
        ``peak_gflops`` with ``peak_basis``; ``images_per_s`` (training images per second, data wait excluded);
        ``teacher_cache_fill_s``: the one-time teacher forwards over the label bank (or the local pool's entries);
        ``minor_page_faults_per_step``: pages the kernel mapped in for the process per timed step (memory the
        allocator handed back and took again; see :py:func:`scripts.speed.retain_freed_memory_now`).
    """
    t_case = time.perf_counter()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with prepared_case(size, center_index, batch_size, device, extra, precision, perceptual, configs) as case:
        trainer, parser, dev, reminder, dims = case.trainer, case.parser, case.device, case.reminder, case.dims

        sync(dev)
        t0 = time.perf_counter()
        cached_maps = 0 if reminder is None else reminder.fill_cache()
        sync(dev)
        fill_s = time.perf_counter() - t0
        cache_mb = 0.0 if reminder is None else reminder.cache_bytes / 2**20

        source = case.batches()
        times, waits, cpu_times = [], [], []
        batch = None
        for i in range(warmup + steps):
            if i == warmup:
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                rss_reset = reset_peak_rss()
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t_wait = time.perf_counter()
            batch = next(source)
            t0, c0 = time.perf_counter(), time.process_time()
            trainer._iteration(trainer, batch)
            sync(dev)
            t1 = time.perf_counter()
            if i >= warmup:
                times.append(t1 - t0)
                waits.append(t0 - t_wait)
                cpu_times.append(time.process_time() - c0)
            _log(f"size {size} center {center_index} {precision}: step {i + 1}/{warmup + steps} {t1 - t0:.3f} s")

        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        if dev.type == "cuda":
            peak_mb, kind = torch.cuda.max_memory_allocated(dev) / 2**20, "cuda_max_allocated"
        else:
            peak_mb = peak_rss_mb()
            kind = "cpu_rss_during_steps" if rss_reset else "cpu_maxrss"
        step_flops = count_step_flops(trainer, batch) if flops else None
        median = statistics.median(times)
        images = batch_size * len(trainer.d_network)
        peak, basis = peak_gflops(dev, trainer.precision.name, torch.get_num_threads())
        achieved = None if step_flops is None else step_flops / median / 1e9
        if achieved is not None and peak and achieved > peak:
            basis += "; the step ran above this estimate, so the running (turbo) clock is above the clock used"
        record = {
            "size": size,
            "spatial_dims": dims,
            "center_index": center_index,
            "earlier_centers": center_index - 1,
            "batch_size": batch_size,
            "online_groups": len(trainer.d_network),
            "reminding": bool(trainer.reminding_on),
            "precision": trainer.precision.name,
            "precision_asked": precision,
            "step_s_median": round(median, 4),
            "step_s_min": round(min(times), 4),
            "step_s": [round(t, 4) for t in times],
            "step_cpu_s_median": round(statistics.median(cpu_times), 4),
            "images_per_s": round(images / median, 3),
            "data_wait_s_median": round(statistics.median(waits), 5),
            "data_wait_share": round(sum(waits) / (sum(waits) + sum(times)), 5),
            "teacher_cache": bool(reminder is not None and reminder.cache),
            "teacher_cache_maps": cached_maps,
            "teacher_cache_fill_s": round(fill_s, 3),
            "teacher_cache_mb": round(cache_mb, 2),
            "step_gflop": None if step_flops is None else round(step_flops / 1e9, 3),
            "achieved_gflops": None if achieved is None else round(achieved, 2),
            "peak_gflops": None if peak is None else round(peak, 1),
            "peak_basis": basis,
            "fraction_of_peak": None if achieved is None or not peak else round(achieved / peak, 4),
            "steps": steps,
            "warmup": warmup,
            "peak_mem_mb": round(peak_mb, 1),
            "peak_mem_kind": kind,
            "minor_page_faults_per_step": round(faults / steps),
            "device": str(dev),
            "implementation": "bundle",
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "threads": torch.get_num_threads(),
            "torch": str(torch.__version__),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "loadavg_1m_before": None if load_before is None else round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "ngf": int(parser.get_parsed_content("ngf")),
            "num_blocks": int(parser.get_parsed_content("num_blocks")),
            "ndf": int(parser.get_parsed_content("ndf")),
            "perceptual": trainer.perceptual_weight > 0,
            "perceptual_network": RANDOM_VGG_LABEL if perceptual == "vgg16-random" else None,
            "channels_last": trainer.memory_format != torch.preserve_format,
            "compile": bool(parser.get_parsed_content("compile")),
            "g_params": sum(p.numel() for p in trainer.g_network.parameters()),
            "d_params": sum(p.numel() for p in trainer.d_network.parameters()),
            "configs": list(configs),
            "overrides": extra,
            "setup_s": round(case.setup_s, 2),
        }
    record["case_wall_s"] = round(time.perf_counter() - t_case, 2)
    return record


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary record per (implementation, size, precision): step-time and memory ratios across centers.

    Ratios are of ``step_s_median`` (and of ``step_s_min`` and of the process CPU seconds ``step_cpu_s_median``, less
    sensitive to other processes on the machine; with ``--threads 1`` CPU seconds measure the work done):
    ``step(t) / step(1)`` for every measured ``t``, ``step(t_max) / step(2)``, and the peak-memory spread.
    A ``precision_speedup`` record compares each low precision with fp32 per (size, center); with reference records
    (``implementation``: ``reference``, :py:mod:`tools.reference_step`), a ``vs_reference`` record gives
    bundle step / reference step per (size, batch, center, precision).
    """
    out: list[dict[str, Any]] = []
    reference = [r for r in records if r.get("implementation") == "reference"]
    records = [r for r in records if r.get("implementation", "bundle") != "reference"]
    for impl, group in (("bundle", records), ("reference", reference)):
        out += _center_summaries(group, impl)
    for r in records:
        same = [
            b
            for b in reference
            if (b["size"], b["batch_size"], b["center_index"]) == (r["size"], r["batch_size"], r["center_index"])
        ]
        if same:
            ref = same[0]
            out.append(
                {
                    "summary": "vs_reference",
                    "size": r["size"],
                    "batch_size": r["batch_size"],
                    "center_index": r["center_index"],
                    "precision": r["precision"],
                    "bundle_step_s_median": r["step_s_median"],
                    "reference_step_s_median": ref["step_s_median"],
                    "bundle_over_reference_median": round(r["step_s_median"] / ref["step_s_median"], 3),
                    "bundle_over_reference_min": round(r["step_s_min"] / ref["step_s_min"], 3),
                    "bundle_over_reference_cpu": round(r["step_cpu_s_median"] / ref["step_cpu_s_median"], 3),
                }
            )
    out += _precision_summaries(records)
    return out


def _center_summaries(records: Sequence[dict[str, Any]], implementation: str) -> list[dict[str, Any]]:
    """:py:func:`summarize`'s ``centers`` records of one implementation."""
    out: list[dict[str, Any]] = []
    keys = sorted({(r["size"], r["batch_size"], r["precision"]) for r in records})
    for size, batch, prec in keys:
        rows = {
            r["center_index"]: r for r in records if (r["size"], r["batch_size"], r["precision"]) == (size, batch, prec)
        }
        summary: dict[str, Any] = {"summary": "centers", "size": size, "batch_size": batch, "precision": prec}
        if implementation != "bundle":
            summary["implementation"] = implementation
        for stat in ("step_s_median", "step_s_min", "step_cpu_s_median"):
            if 1 in rows:
                base = rows[1][stat]
                summary[f"ratio_to_first_{stat}"] = {str(t): round(r[stat] / base, 3) for t, r in sorted(rows.items())}
            later = [t for t in rows if t >= 2]
            if 2 in rows and len(later) > 1:
                summary[f"ratio_last_to_second_{stat}"] = round(rows[max(later)][stat] / rows[2][stat], 3)
        mems = [r["peak_mem_mb"] for r in rows.values()]
        summary["peak_mem_mb"] = {str(t): r["peak_mem_mb"] for t, r in sorted(rows.items())}
        summary["peak_mem_max_over_min"] = round(max(mems) / min(mems), 3)
        if implementation == "bundle":
            summary["data_wait_share_max"] = max(r["data_wait_share"] for r in rows.values())
        out.append(summary)
    return out


def _precision_summaries(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """:py:func:`summarize`'s ``precision_speedup`` records (the bundle's)."""
    out: list[dict[str, Any]] = []
    for r in records:
        if r["precision"] == "fp32":
            continue
        ref = [
            b
            for b in records
            if b["precision"] == "fp32"
            and (b["size"], b["batch_size"], b["center_index"]) == (r["size"], r["batch_size"], r["center_index"])
        ]
        if ref:
            out.append(
                {
                    "summary": "precision_speedup",
                    "size": r["size"],
                    "batch_size": r["batch_size"],
                    "center_index": r["center_index"],
                    "precision": r["precision"],
                    "speedup_vs_fp32_median": round(ref[0]["step_s_median"] / r["step_s_median"], 3),
                    "speedup_vs_fp32_min": round(ref[0]["step_s_min"] / r["step_s_min"], 3),
                }
            )
    return out


def _build_argparser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.benchmark_step",
        description=__doc__
        + " Prints one JSON line per case (size x precision x center index), then summary lines, on stdout; progress "
        "on stderr.",
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[128], help="image sizes (square), default 128")
    p.add_argument(
        "--centers",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8],
        help="1-based center indices; center k arrives with a hand-off of k-1 earlier centers (default 1 2 4 8)",
    )
    p.add_argument("--precisions", nargs="+", choices=sorted(PRECISIONS), default=["fp32"], help="default fp32")
    p.add_argument(
        "--perceptual",
        choices=["vgg16-random", "none"],
        default="vgg16-random",
        help="vgg16-random (default): time the perceptual term with a VGG16-sized network of RANDOM weights (timing "
        "only); none: the config's perceptual_network (null: term off)",
    )
    p.add_argument("--batch_size", type=int, nargs="+", default=[4], help="batch sizes, default 4")
    p.add_argument(
        "--configs",
        nargs="*",
        default=[],
        help="more config files after configs/train.json, e.g. configs/train_3d.json (volumes: sizes are cube sides)",
    )
    p.add_argument("--steps", type=int, default=5, help="timed steps per case")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: the config's (cuda if available)")
    p.add_argument("--no_flops", dest="flops", action="store_false", help="skip the FLOP count (one untimed step)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override of configs/train.json, value parsed as JSON if possible (repeatable), e.g. ngf=32",
    )
    p.add_argument(
        "--reference",
        default=None,
        metavar="PATH",
        help="also time the reference TDGAN's own step (tools/reference_step.py) from an extracted copy of "
        "huiqu18/TDGAN-PyTorch at PATH (read-only), per size, batch and center, in float32 (it has no other precision)",
    )
    p.add_argument("--one-case", dest="one_case", action="store_true", help=argparse.SUPPRESS)
    return p


def _run_reference_cases(args: argparse.Namespace, records: list[dict[str, Any]]) -> int:
    """Time the reference's step per (size, batch, center), each in a fresh subprocess; returns the failures."""
    failed = 0
    for size, batch, center in itertools.product(args.sizes, args.batch_size, args.centers):
        _log(f"reference case size {size} batch {batch} center {center} ...")
        cmd = [sys.executable, "-m", "tools.reference_step", "--reference", str(args.reference)]
        cmd += ["--size", str(size), "--batch_size", str(batch), "--center", str(center)]
        cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd += [] if args.threads is None else ["--threads", str(args.threads)]
        cmd += [] if args.device is None else ["--device", args.device]
        cmd += [] if args.flops else ["--no_flops"]
        failed += _run_case_process(cmd, f"reference case size {size} batch {batch} center {center}", records)
    return failed


def _run_case_process(cmd: list[str], what: str, records: list[dict[str, Any]]) -> int:
    """Run one case's subprocess, print and keep its last JSON line; 1 when it failed (logged), else 0."""
    proc = subprocess.run(cmd, cwd=BUNDLE_ROOT, stdout=subprocess.PIPE, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        _log(f"{what} FAILED (exit {proc.returncode}).")
        return 1
    print(lines[-1], flush=True)
    records.append(json.loads(lines[-1]))
    return 0


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
    if args.steps < 1 or args.warmup < 0 or min(args.batch_size) < 1:
        p.error("need --steps >= 1, --warmup >= 0 and --batch_size >= 1.")
    if any(c < 1 for c in args.centers):
        p.error("center indices are 1-based (>= 1).")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error(f"--device cuda, but this torch ({torch.__version__}) sees no CUDA device.")
    if args.reference is not None:
        from tools.reference_step import check_reference

        try:
            check_reference(args.reference)
        except FileNotFoundError as e:
            p.error(str(e))
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    if args.one_case:
        if any(len(v) != 1 for v in (args.sizes, args.centers, args.precisions, args.batch_size)):
            p.error("--one-case takes exactly one size, one center, one precision and one batch size.")
        record = run_case(
            args.sizes[0],
            args.centers[0],
            args.batch_size[0],
            args.steps,
            args.warmup,
            args.device,
            extra,
            precision=args.precisions[0],
            perceptual=args.perceptual,
            flops=args.flops,
            configs=args.configs,
        )
        print(json.dumps(record), flush=True)
        return 0

    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--perceptual", args.perceptual]
    if args.configs:
        common += ["--configs", *args.configs]
    if args.threads is not None:
        common += ["--threads", str(args.threads)]
    if args.device is not None:
        common += ["--device", args.device]
    if not args.flops:
        common.append("--no_flops")
    for item in args.overrides:
        common += ["--set", item]
    failed, records = 0, []
    for size, batch, precision, center in itertools.product(args.sizes, args.batch_size, args.precisions, args.centers):
        _log(f"case size {size} batch {batch} {precision} center {center} ...")
        cmd = [sys.executable, "-m", "tools.benchmark_step", "--one-case", "--sizes", str(size)]
        cmd += ["--batch_size", str(batch), "--precisions", precision, "--centers", str(center), *common]
        failed += _run_case_process(cmd, f"case size {size} batch {batch} {precision} center {center}", records)
    if args.reference is not None:
        failed += _run_reference_cases(args, records)
    for summary in summarize(records):
        print(json.dumps(summary), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
