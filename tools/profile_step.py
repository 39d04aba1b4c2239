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
"""Where a training step's time goes: torch.profiler over the benchmark's real visit step, per phase of the step.

A development tool of the repository, not part of the bundle's package; run from the repository root as
``python -m tools.profile_step``; its results: tools/docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from tools.benchmark_step import PRECISIONS, _log, parse_overrides, prepared_case
from tools.machine import sync

__all__ = ["PHASES", "attribute", "profile_case", "markdown_table", "main"]

PHASES = {
    "tdgan.reminding_batch": "reminding batch: sampling and the teacher's targets",
    "tdgan.generator_forward": "generator over [batch; reminding batch]",
    "tdgan.d_forward": "D step: discriminator on fakes and reals",
    "tdgan.d_update": "D step: Adam",
    "tdgan.g_step.d_forward": "G step: discriminator on fakes",
    "tdgan.g_step.perceptual_digesting": "G step: perceptual term, digesting",
    "tdgan.g_step.perceptual_reminding": "G step: perceptual term, reminding",
    "tdgan.g_update": "G step: Adam",
}
"""The trainer's ``record_function`` scopes (scripts/trainer.py) and what each holds. The backward of the operations
run inside a forward scope is credited to that scope (autograd's sequence numbers tie each backward node to the
forward operation that made it); ``*_update`` scopes keep only what is not backward: the optimizer step."""

STEP = "tdgan.step"
BACKWARD = "autograd::engine::evaluate_function: "


def _scope(event: Any) -> str | None:
    """The innermost trainer scope (a :data:`PHASES` key) around ``event``, or None."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in PHASES:
            return parent.name
        parent = parent.cpu_parent
    return None


def _in_backward(event: Any) -> bool:
    """Whether ``event`` runs inside a backward node (its own sequence number is the forward operation's)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(BACKWARD):
            return True
        parent = parent.cpu_parent
    return False


def attribute(events: Sequence[Any], steps: int) -> dict[str, dict[str, float]]:
    """Milliseconds per step of each phase from a profiler's events: forward, backward, the part of the forward run
    without autograd (e.g. the targets' features), and the rest of the step.

    Args:
        events: ``prof.events()`` of a profile whose steps each ran inside a ``record_function(STEP)`` scope.
        steps: how many steps the profile holds.

    Returns:
        ``{phase: {"forward_ms", "backward_ms", "no_grad_ms", "total_ms"}}`` with an ``other`` phase (data to the
        device, encoding, loss arithmetic, backward nodes of no phase) and a ``step`` row (the whole step).
    """
    rows: dict[str, dict[str, float]] = defaultdict(lambda: {"forward_ms": 0.0, "backward_ms": 0.0, "no_grad_ms": 0.0})
    seq_scope: dict[tuple[int, int], str] = {}
    backward_in: dict[str, float] = defaultdict(float)  # backward time spent inside each scope's time range
    step_ms = 0.0
    for e in events:
        if e.name == STEP:
            step_ms += e.cpu_time_total / 1000
        elif e.name in PHASES:
            rows[e.name]["forward_ms"] += e.cpu_time_total / 1000
            parent = _scope(e)
            if parent is not None:  # nested phases: the inner one's time is not the outer one's
                rows[parent]["forward_ms"] -= e.cpu_time_total / 1000
        elif e.name.startswith(BACKWARD) or _in_backward(e):
            continue
        elif e.sequence_nr >= 0:
            # operations that make no autograd node share the number of the next one that does: the last operation
            # to carry a number (events come in time order) is the one whose backward node has it
            seq_scope[(e.thread, e.sequence_nr)] = _scope(e) or "other"
        elif e.cpu_parent is not None and e.cpu_parent.name in PHASES:
            rows[e.cpu_parent.name]["no_grad_ms"] += e.cpu_time_total / 1000
    for e in events:
        if not e.name.startswith(BACKWARD) or (e.cpu_parent is not None and e.cpu_parent.name.startswith(BACKWARD)):
            continue
        owner = seq_scope.get((getattr(e, "fwd_thread", e.thread), e.sequence_nr))
        if owner is None:
            for key, scope in seq_scope.items():  # the forward thread is not recorded by every torch version
                if key[1] == e.sequence_nr:
                    owner = scope
                    break
        rows[owner or "other"]["backward_ms"] += e.cpu_time_total / 1000
        inside = _scope(e)
        if inside is not None:
            backward_in[inside] += e.cpu_time_total / 1000
    for scope, ms in backward_in.items():
        rows[scope]["forward_ms"] -= ms  # an update scope runs the backward: what is left is the optimizer step
    out = {}
    for name in [*PHASES, "other"]:
        if name in rows or name == "other":
            r = {k: v / steps for k, v in rows[name].items()}
            out[name] = r
    accounted = sum(r["forward_ms"] + r["backward_ms"] for k, r in out.items() if k != "other")
    out["other"]["forward_ms"] = step_ms / steps - accounted - out["other"]["backward_ms"]
    for r in out.values():
        r["total_ms"] = r["forward_ms"] + r["backward_ms"]
    out["step"] = {"forward_ms": 0.0, "backward_ms": 0.0, "no_grad_ms": 0.0, "total_ms": step_ms / steps}
    return {k: {m: round(v, 2) for m, v in r.items()} for k, r in out.items()}


def profile_case(
    size: int,
    center_index: int,
    batch_size: int,
    steps: int,
    warmup: int,
    device: str | None,
    extra: dict[str, Any],
    precision: str = "fp32",
    perceptual: str = "vgg16-random",
) -> dict[str, Any]:
    """Profile ``steps`` training steps (after ``warmup`` untimed ones and the teacher cache's fill) of the benchmark
    case (:py:func:`tools.benchmark_step.prepared_case`), one profile each, and attribute the time of the
    fastest (the one other processes on the machine disturbed least) to the step's phases.

    Returns:
        the case (``size``, ``center_index``, ``precision``, ``threads``, ...), every profiled step's total
        (``step_ms_profiled``) and the fastest one's ``phases`` (:py:func:`attribute`).
    """
    with prepared_case(size, center_index, batch_size, device, extra, precision, perceptual) as case:
        trainer, dev = case.trainer, case.device
        if case.reminder is not None:
            case.reminder.fill_cache()
        source = case.batches()
        for _ in range(warmup):
            trainer._iteration(trainer, next(source))
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        profiled = []
        for _ in range(steps):  # one profile per step: the fastest is the one other processes disturbed least
            batch = next(source)
            with profile(activities=activities) as prof:
                with record_function(STEP):
                    trainer._iteration(trainer, batch)
                    sync(dev)
            profiled.append(attribute(prof.events(), 1))
        phases = min(profiled, key=lambda p: p["step"]["total_ms"])
        totals = sorted(p["step"]["total_ms"] for p in profiled)
        _log(f"size {size} center {center_index} {precision}: step {phases['step']['total_ms']:.0f} ms")
        return {
            "size": size,
            "center_index": center_index,
            "batch_size": batch_size,
            "precision": trainer.precision.name,
            "threads": torch.get_num_threads(),
            "perceptual": trainer.perceptual_weight > 0,
            "teacher_cache": bool(case.reminder is not None and case.reminder.cache),
            "steps": steps,
            "step_ms_profiled": totals,
            "overrides": extra,
            "phases": phases,
        }


def markdown_table(records: Sequence[dict[str, Any]]) -> str:
    """One Markdown table: a row per phase, forward / backward / total milliseconds per step for each record."""
    head = ["phase"]
    for r in records:
        t = f"t={r['center_index']}"
        head += [f"{t} fwd (ms)", f"{t} bwd (ms)", f"{t} total (ms)", f"{t} share"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    names = [n for n in [*PHASES, "other", "step"] if any(n in r["phases"] for r in records)]
    labels = {**PHASES, "other": "other (to device, encoding, losses, ...)", "step": "**step**"}
    for name in names:
        cells = [labels[name]]
        for r in records:
            p = r["phases"].get(name)
            step = r["phases"]["step"]["total_ms"]
            if p is None:
                cells += ["-"] * 4
            elif name == "step":
                cells += ["", "", f"**{p['total_ms']:.0f}**", "100 %"]
            else:
                fwd = f"{p['forward_ms']:.0f}" + (f" ({p['no_grad_ms']:.0f} no-grad)" if p["no_grad_ms"] >= 1 else "")
                cells += [fwd, f"{p['backward_ms']:.0f}", f"{p['total_ms']:.0f}", f"{100 * p['total_ms'] / step:.1f} %"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one JSON line per center on stdout, then (``--markdown``) the table."""
    p = argparse.ArgumentParser(prog="python -m tools.profile_step", description=__doc__)
    p.add_argument("--size", type=int, default=64, help="image side (default 64)")
    p.add_argument("--centers", type=int, nargs="+", default=[1, 4], help="1-based center indices (default 1 4)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    p.add_argument("--perceptual", choices=["vgg16-random", "none"], default="vgg16-random")
    p.add_argument("--steps", type=int, default=3, help="profiled steps per center")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (1: times are CPU work)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--markdown", action="store_true", help="print the Markdown table after the JSON lines")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    try:
        extra = parse_overrides(args.overrides)
    except ValueError as e:
        p.error(str(e))
    if args.steps < 1 or args.warmup < 0 or any(c < 1 for c in args.centers):
        p.error("need --steps >= 1, --warmup >= 0 and 1-based --centers.")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    records = []
    for center in args.centers:
        record = profile_case(
            args.size, center, args.batch_size, args.steps, args.warmup, args.device, extra, args.precision,
            args.perceptual,
        )  # fmt: skip
        print(json.dumps(record), flush=True)
        records.append(record)
    if args.markdown:
        print(markdown_table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
