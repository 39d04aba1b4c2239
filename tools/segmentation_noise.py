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
"""How far one segmentation score moves by rounding alone: retrain the evaluation's UNet on one training set of a
finished protocol run (same data, same seed) with each torch thread count, and print its Dice per center and class.

Everything but the order of the floating-point sums is the same between the runs, so the spread is the judge's own
noise, the floor under any single-seed Dice difference in a report.

A development tool of the repository, not part of the bundle's package; run from the repository root as
``python -m tools.segmentation_noise``; its results: tools/docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from scripts.evaluation.protocol import Evaluation
from scripts.visit import BUNDLE_ROOT
from tools.benchmark_step import parse_overrides

__all__ = ["training_sets", "retrain", "main"]

COMMAND = "python -m tools.segmentation_noise"
CONFIGS = [BUNDLE_ROOT / "configs" / "compare.json", BUNDLE_ROOT / "configs" / "demo.json"]


def training_sets(evaluation: Evaluation, seed: int) -> dict[str, Path]:
    """The training sets a protocol run of ``evaluation`` trains its UNets on under ``seed`` (name -> folder): each
    method's shareable synthetic set, its training-label-map set where made, and the real-image ones."""
    sets = {name: evaluation.synthetic_dir(name, "new", seed) for name in evaluation.methods}
    sets |= {f"{n}_training_maps": evaluation.synthetic_dir(n, "given", seed) for n in evaluation.training_map_sets}
    sets |= {"real_all": evaluation.data_root, "real_last": evaluation.data_root / evaluation.centers[-1]}
    return sets


def retrain(evaluation: Evaluation, name: str, dataset_dir: Path, seed: int, threads: int) -> dict[str, Any]:
    """Train the UNet on ``dataset_dir`` with ``threads`` torch threads (into the evaluation's segmentation_dir,
    ``threads<N>/seed<seed>/<name>``) and score it on every center's real test images."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    root = evaluation.segmentation_dir
    evaluation.segmentation_dir = root / f"threads{threads}"
    try:
        t0 = time.perf_counter()
        network, info = evaluation.train_segmentation(name, dataset_dir, seed)
        scores = evaluation.segmentation_scores(network, evaluation.class_names(), seed)
    finally:
        evaluation.segmentation_dir = root
        torch.set_num_threads(before)
    dice = {c: {cls: round(float(s["dice"]), 3) for cls, s in scores[c].items()} for c in evaluation.centers}
    return {
        "set": name,
        "threads": threads,
        "seed": seed,
        "dice": dice,
        "checkpoint": info["checkpoint"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one JSON line per thread count on stdout, then a Markdown table of the lesion (last class)
    Dice and the largest difference between the runs."""
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    p.add_argument("--output_dir", default="output", help="the finished protocol run (its output_dir)")
    p.add_argument("--data_root", default=None, help="its centers (default: the config's, e.g. data/demo)")
    p.add_argument("--set", dest="name", default="tdgan_bank", help="training set, e.g. tdgan_bank or real_all")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default 1 2)")
    p.add_argument("--seed", type=int, default=0, help="the run's seed folder and the UNet's seed")
    p.add_argument("--work_dir", default=None, help="where the retrained UNets go (default <output_dir>/noise)")
    p.add_argument("--config_file", nargs="+", default=[str(c) for c in CONFIGS], help="the run's protocol configs")
    p.add_argument("--segmentation", action="append", default=[], metavar="KEY=VALUE", help="segmentation override")
    args = p.parse_args(argv)
    if any(t < 1 for t in args.threads):
        p.error("--threads must be positive integers.")
    try:
        overrides = parse_overrides(args.segmentation)
    except ValueError as e:
        p.error(str(e))
    output = Path(args.output_dir)
    parser = ConfigParser()
    parser.read_config(args.config_file)
    parser.update({"bundle_root": str(BUNDLE_ROOT), "output_dir": str(output), "workers": 1, "resume": True})
    parser["segmentation_dir"] = str(Path(args.work_dir) if args.work_dir else output / "noise")
    if args.data_root:
        parser["data_root"] = str(Path(args.data_root))
    parser["segmentation_overrides"].update(overrides)
    evaluation: Evaluation = parser.get_parsed_content("evaluation")
    sets = training_sets(evaluation, args.seed)
    if args.name not in sets:
        p.error(f"--set must be one of {sorted(sets)}, got {args.name!r}.")
    if not (sets[args.name] / "dataset.json").is_file() and not args.name.startswith("real_"):
        p.error(f"{sets[args.name]}: no synthetic dataset; run the protocol first (bash run_demo.sh).")
    rows = []
    for threads in args.threads:
        with contextlib.redirect_stdout(sys.stderr):  # the workflows' log lines; stdout keeps the results
            row = retrain(evaluation, args.name, sets[args.name], args.seed, threads)
        print(json.dumps(row), flush=True)
        rows.append(row)
    lesion = list(rows[0]["dice"][evaluation.centers[0]])[-1]
    print(f"\n| threads | {' | '.join(evaluation.centers)} |  ({args.name}, {lesion} Dice, seed {args.seed})")
    print("|" + " --- |" * (len(evaluation.centers) + 1))
    for row in rows:
        print(f"| {row['threads']} | " + " | ".join(f"{row['dice'][c][lesion]:.3f}" for c in evaluation.centers) + " |")
    spread = max(
        max(r["dice"][c][lesion] for r in rows) - min(r["dice"][c][lesion] for r in rows) for c in evaluation.centers
    )
    print(f"largest difference between thread counts on one center: {spread:.3f}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    sys.exit(main())
