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
"""How much the first center is forgotten: the demo's TDGAN sequence on N demo centers per reminding reduction.

A development tool of the repository, not part of the bundle's package; run from the repository root as
``python -m tools.reminding_check``; its results: docs/generator.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from scripts.evaluation.image_quality import measured_forgetting, quality_matrix
from scripts.reminding import REMINDING_REDUCTIONS
from scripts.visit import BUNDLE_ROOT
from tools.benchmark_step import parse_overrides

__all__ = ["run_sequence", "first_center_rows", "render_table", "main"]

logger = logging.getLogger(__name__)

COMMAND = "python -m tools.reminding_check"
CONFIGS = [BUNDLE_ROOT / "configs" / "train_sequential.json", BUNDLE_ROOT / "configs" / "demo.json"]


def run_sequence(
    data_root: Path,
    output_dir: Path,
    num_centers: int,
    visit_overrides: dict[str, Any],
    demo_overrides: dict[str, Any],
) -> tuple[Path, list[int]]:
    """Run (or resume) the TDGAN sequence of ``configs/train_sequential.json`` + ``configs/demo.json`` (the demo's
    visit settings) over ``num_centers`` demo centers made in ``data_root``.

    Args:
        data_root: where the demo centers are made (``demo_data`` of configs/demo.json, ``num_centers`` of them).
        output_dir: the sequence's folder (hand-offs, visit logs, sequence.json).
        num_centers: how many demo centers, visited in order.
        visit_overrides: merged into the demo's ``visit_overrides`` (e.g. ``reminding_reduction``).
        demo_overrides: merged into the demo's ``demo_data`` (e.g. a smaller ``size`` for a test).

    Returns:
        ``sequence.json`` and the visits' spatial size.
    """
    workflow = ConfigWorkflow(
        config_file=[str(c) for c in CONFIGS],
        meta_file=str(BUNDLE_ROOT / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=None,
        **{"bundle_root": str(BUNDLE_ROOT), "demo_dir": str(data_root), "output_dir": str(output_dir)},
    )
    workflow.parser["demo_data"].update({**demo_overrides, "num_centers": int(num_centers)})
    workflow.parser["visit_overrides"].update(visit_overrides)
    size = [int(v) for v in workflow.parser.get_parsed_content("visit_overrides")["spatial_size"]]
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return output_dir / "sequence.json", size


def first_center_rows(matrix: dict[str, Any]) -> dict[str, Any]:
    """The first center's SSIM after each visit, its forgetting (SSIM right after its own visit minus after the last),
    and every earlier center's measured forgetting (:py:func:`scripts.evaluation.image_quality.measured_forgetting`)."""
    ssim = [row[0] for row in matrix["ssim"]]
    forgets = measured_forgetting(matrix, "ssim")
    return {
        "first_center": matrix["centers"][0],
        "visits": matrix["visits"],
        "first_center_ssim": ssim,
        "first_center_forgetting": round(ssim[0] - ssim[-1], 3),
        "forgetting": forgets,
    }


def render_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: one row per visit, the first center's SSIM per reduction; then its forgetting and the mean
    measured forgetting over the earlier centers."""
    names = list(results)
    lines = ["| after visit | " + " | ".join(f"first-center SSIM, {n}" for n in names) + " |"]
    lines.append("|" + " --- |" * (len(names) + 1))
    for i, visit in enumerate(results[names[0]]["visits"]):
        lines.append(
            f"| {i + 1} ({visit}) | " + " | ".join(f"{results[n]['first_center_ssim'][i]:.3f}" for n in names) + " |"
        )
    lines.append(
        "| first-center forgetting | "
        + " | ".join(f"{results[n]['first_center_forgetting']:+.3f}" for n in names)
        + " |"
    )
    means = []
    for n in names:
        values = [v for v in results[n]["forgetting"].values() if v is not None]
        means.append(f"{sum(values) / len(values):+.3f}" if values else "n/a")
    lines.append("| mean forgetting, earlier centers | " + " | ".join(means) + " |")
    lines.append("| train time (s) | " + " | ".join(f"{results[n]['seconds']:.0f}" for n in names) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one JSON line per reduction on stdout, then the Markdown table."""
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    p.add_argument("--output", default=str(BUNDLE_ROOT / "output" / "reminding_check"), help="runs and demo data")
    p.add_argument("--data_root", default=None, help="demo centers folder (made if absent; default <output>/demo)")
    p.add_argument("--num_centers", type=int, default=5, help="demo centers visited in order (default 5)")
    p.add_argument("--reductions", nargs="+", choices=REMINDING_REDUCTIONS, default=list(REMINDING_REDUCTIONS))
    p.add_argument("--device", default=None, help="e.g. cpu or cuda (default: the visit config's)")
    p.add_argument(
        "--set", dest="visit", action="append", default=[], metavar="KEY=VALUE", help="visit override (all runs)"
    )
    p.add_argument("--demo", action="append", default=[], metavar="KEY=VALUE", help="demo_data override")
    args = p.parse_args(argv)
    try:
        visit, demo = parse_overrides(args.visit), parse_overrides(args.demo)
    except ValueError as e:
        p.error(str(e))
    if args.num_centers < 2:
        p.error("--num_centers must be at least 2 (forgetting needs a visit after the first center's).")
    if args.device is not None:
        visit["device"] = f"$torch.device({args.device!r})"
    output = Path(args.output)
    data_root = Path(args.data_root) if args.data_root else output / "demo"
    tag = re.sub(r"[^A-Za-z0-9._-]", "", "_".join(f"{k}-{v}" for k, v in sorted(visit.items()) if k != "device"))
    results: dict[str, dict[str, Any]] = {}
    for reduction in args.reductions:
        t0 = time.perf_counter()
        name = f"{reduction}{'_' + tag if tag else ''}"
        sequence, size = run_sequence(
            data_root, output / name, args.num_centers, {**visit, "reminding_reduction": reduction}, demo
        )
        seconds = time.perf_counter() - t0
        matrix = quality_matrix(sequence, data_root, size)
        results[reduction] = {"reduction": reduction, **first_center_rows(matrix), "seconds": round(seconds, 1)}
        results[reduction].update(overrides={k: v for k, v in visit.items() if k != "device"}, ssim_matrix=matrix)
        print(json.dumps(results[reduction]), flush=True)
    print(render_table(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
