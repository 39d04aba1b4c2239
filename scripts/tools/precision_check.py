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
"""Does mixed precision still train? One demo-size visit per (precision, seed), scored on the center's test set."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigWorkflow
from monai.metrics import SSIMMetric

from scripts.data.centers import center_datalist
from scripts.data.demo import ensure_demo_centers
from scripts.networks import encode_condition

__all__ = ["score_generator", "run_visit", "main"]

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
DEMO = json.loads((BUNDLE_ROOT / "configs" / "demo.json").read_text())


def score_generator(workflow: ConfigWorkflow, center_dir: Path, code: int) -> dict[str, float]:
    """Mean L1 and SSIM (data range 2, images in [-1, 1]) of the visit's generator on the center's test pairs.

    The test pairs go through the visit's own preprocessing; the generator runs in eval mode under the test
    label maps and the center's code.
    """
    items = center_datalist(center_dir, code, key="test")
    preprocess = workflow.parser.get_parsed_content("train#preprocessing")
    data = [preprocess(item) for item in items]
    label = torch.stack([torch.as_tensor(d["label"]).as_subclass(torch.Tensor) for d in data]).long()
    real = torch.stack([torch.as_tensor(d["image"]).as_subclass(torch.Tensor) for d in data]).float()
    generator = workflow.parser.get_parsed_content("network")
    device = next(generator.parameters()).device
    settings = generator.settings
    generator.eval()
    with torch.no_grad():
        codes = torch.full((len(label),), code, device=device)
        cond = encode_condition(label.to(device), codes, settings["num_classes"], settings["max_centers"])
        fake = generator(cond).float().cpu()
    ssim = SSIMMetric(spatial_dims=2, data_range=2.0)(fake, real).mean().item()
    return {"test_l1": round((fake - real).abs().mean().item(), 5), "test_ssim": round(ssim, 5), "test_n": len(items)}


def run_visit(data_root: Path, out: Path, precision: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train the demo's first center once (configs/train.json with the demo's visit settings) and score it."""
    center = json.loads((data_root / "centers.json").read_text())["order"][0]
    center_dir = data_root / center
    settings = {
        **DEMO["visit_overrides"],
        "bundle_root": str(BUNDLE_ROOT),
        "dataset_dir": str(center_dir),
        "center_dirs": [str(center_dir)],
        "output_dir": str(out),
        "handoff_in": None,
        "seed": seed,
        "progress_bar": False,
        "amp": precision != "fp32",
        "amp_dtype": {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}[precision],
        **overrides,
    }
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE_ROOT / "configs" / "train.json"),
        meta_file=str(BUNDLE_ROOT / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **settings,
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    t0 = time.perf_counter()
    workflow.run()
    seconds = time.perf_counter() - t0
    record = {
        "center": center,
        "precision_asked": precision,
        "precision": trainer.precision,
        "seed": seed,
        "iterations": int(trainer.state.iteration),
        "train_s": round(seconds, 1),
        **score_generator(workflow, center_dir, 0),
    }
    workflow.finalize()
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one JSON line per (precision, seed) visit on stdout."""
    p = argparse.ArgumentParser(prog="python -m scripts.tools.precision_check", description=__doc__)
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
                record = run_visit(data_root, Path(tmp) / f"{precision}_{seed}", precision, seed, overrides)
                print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
