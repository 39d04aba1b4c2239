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
"""Does mixed precision still train? One demo-size visit per (precision, seed), scored on the center's test set.

A development tool of the repository, not part of the bundle's package; run from the repository root as
``python -m tools.precision_check``; its results: tools/docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.data.centers import read_center_order
from scripts.data.demo import ensure_demo_centers
from scripts.evaluation.image_quality import generator_quality, load_pairs
from scripts.visit import visit_workflow

__all__ = ["train_and_score", "main"]

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
DEMO = json.loads((BUNDLE_ROOT / "configs" / "demo.json").read_text())


def train_and_score(data_root: Path, out: Path, precision: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train the demo's first center once (configs/train.json with the demo's visit settings) and score the generator
    on the center's test pairs with the report's metrics (SSIM / PSNR / MAE on [0, 1],
    :py:func:`scripts.evaluation.image_quality.generator_quality`)."""
    center = read_center_order(data_root)[0]
    settings = {
        **DEMO["visit_overrides"],
        "seed": seed,
        "progress_bar": False,
        "amp": precision != "fp32",
        "amp_dtype": {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}[precision],
        **overrides,
    }
    workflow = visit_workflow([data_root / center], out, settings=settings)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    t0 = time.perf_counter()
    workflow.run()
    seconds = time.perf_counter() - t0
    generator = workflow.parser.get_parsed_content("network").eval()
    images, labels, _ = load_pairs(data_root / center, generator.settings["spatial_dims"], settings["spatial_size"])
    quality = generator_quality(generator, 0, images, labels)
    record = {
        "center": center,
        "precision_asked": precision,
        "precision": trainer.precision.name,
        "seed": seed,
        "iterations": int(trainer.state.iteration),
        "train_s": round(seconds, 1),
        **{f"test_{k}": round(v, 5) for k, v in quality.items()},
        "test_n": int(images.shape[0]),
    }
    workflow.finalize()
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one JSON line per (precision, seed) visit on stdout."""
    p = argparse.ArgumentParser(prog="python -m tools.precision_check", description=__doc__)
    p.add_argument("--data_root", default=None, help="demo centers folder (made if absent; default: a temp folder)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="each precision is trained once per seed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=None, help="epochs_constant = epochs_decay = this (default: demo's)")
    args = p.parse_args(argv)
    overrides: dict[str, Any] = {"device": f"$torch.device({args.device!r})"}
    if args.epochs is not None:
        overrides.update(epochs_constant=args.epochs, epochs_decay=args.epochs)
    with tempfile.TemporaryDirectory(prefix="tdgan_precision_") as tmp:
        data_root = Path(args.data_root or Path(tmp) / "demo")
        ensure_demo_centers(data_root, **DEMO["demo_data"])
        for precision in args.precisions:
            for seed in args.seeds:
                record = train_and_score(data_root, Path(tmp) / f"{precision}_{seed}", precision, seed, overrides)
                print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
