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
"""The evaluation protocol: train every generator, measure forgetting, synthesise, segment, audit, report."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigWorkflow

from scripts.data.centers import read_center_order
from scripts.evaluation.image_quality import METRICS, forgetting, generator_from_handoff, load_pairs, quality_matrix
from scripts.evaluation.memorisation import audit_dataset
from scripts.evaluation.report import plot_dice_bars, plot_grid, plot_quality_matrices, write_report
from scripts.evaluation.segmentation_scores import center_scores
from scripts.evaluation.synthesis import generate_images
from scripts.flags import flag

__all__ = ["Evaluation"]

logger = logging.getLogger(__name__)


class Evaluation:
    """The paper's evaluation protocol on centers with paired held-out test data, end to end.

    1. Train each generator (a sequence config plus the method's override files; finished visits are reused).
    2. Visit-by-center quality matrix (SSIM, PSNR, MAE) of every sequence, and forgetting per center.
    3. Synthesise each final generator's pairs from every center's training label maps in that center's style
       (``configs/inference.json``).
    4. Train the segmentation network (``configs/segmentation.json``) on each synthetic set and on real training
       images (all centers; the last center only), and test it on every center's real test images.
    5. Audit the synthetic images for near copies of real training images.
    6. Write report.json, report.md and the figures.

    Args:
        data_root: folder with the center folders and centers.json.
        output_dir: where each method's run goes (``output_dir/<method>``).
        report_dir: where the report goes.
        methods: method name -> ``{"label": shown name, "configs": override files for the sequence config}``.
        sequence_config: the sequence workflow config (configs/train_sequential.json).
        inference_config: the synthesis config (configs/inference.json).
        segmentation_config: the segmentation config (configs/segmentation.json).
        meta_file: the bundle's metadata.json.
        segmentation_dir: where the segmentation runs go (default ``output_dir/segmentation``).
        bundle_root: the bundle.
        visit_overrides: applied to every visit of every method (sizes, epochs, ...).
        segmentation_overrides: applied to every segmentation training (iterations, batch size, ...).
        spatial_size: size images are generated, compared and segmented at.
        real_baselines: also train the segmentation network on real images (all centers, and the last center only).
        grid_samples: test samples per center in the figure grids.
        quantile: near-copy threshold of the memorisation audit (quantile of real-to-real distances).
        resume: reuse finished visits and segmentation runs.
        command: the command that made the report (recorded in it).
        device: where generators and segmentation networks are evaluated.
    """

    def __init__(
        self,
        data_root: str | os.PathLike,
        output_dir: str | os.PathLike,
        report_dir: str | os.PathLike,
        methods: dict[str, dict[str, Any]],
        sequence_config: str,
        inference_config: str,
        segmentation_config: str,
        meta_file: str,
        segmentation_dir: str | os.PathLike | None = None,
        bundle_root: str = ".",
        visit_overrides: dict[str, Any] | None = None,
        segmentation_overrides: dict[str, Any] | None = None,
        spatial_size: Sequence[int] = (256, 256),
        real_baselines: bool = True,
        grid_samples: int = 3,
        quantile: float = 0.05,
        resume: bool = True,
        command: str = "python -m monai.bundle run --config_file configs/evaluate.json",
        device: torch.device | str = "cpu",
    ) -> None:
        if not methods:
            raise ValueError("Evaluation needs at least one method.")
        self.data_root = Path(data_root)
        self.output_dir = Path(output_dir)
        self.report_dir = Path(report_dir)
        self.segmentation_dir = Path(segmentation_dir) if segmentation_dir else self.output_dir / "segmentation"
        self.methods = dict(methods)
        self.sequence_config = sequence_config
        self.inference_config = inference_config
        self.segmentation_config = segmentation_config
        self.meta_file = meta_file
        self.bundle_root = str(bundle_root)
        self.visit_overrides = dict(visit_overrides or {})
        self.segmentation_overrides = dict(segmentation_overrides or {})
        self.spatial_size = list(spatial_size)
        self.real_baselines = flag(real_baselines, "real_baselines")
        self.grid_samples = grid_samples
        self.quantile = quantile
        self.resume = flag(resume, "resume")
        self.command = command
        self.device = torch.device(device)
        self.centers = read_center_order(self.data_root)
        self.timings: dict[str, float] = {}

    def _timed(self, step: str, t0: float) -> None:
        self.timings[step] = round(time.perf_counter() - t0, 1)
        logger.info(f"[evaluate] {step}: {self.timings[step]} s")

    def train_generator(self, name: str) -> Path:
        """Run (or resume) one method's sequence; returns its sequence.json."""
        method = self.methods[name]
        configs = [self.sequence_config] + [str(Path(self.bundle_root) / c) for c in method.get("configs", [])]
        workflow = ConfigWorkflow(
            config_file=configs,
            meta_file=self.meta_file,
            logging_file=False,
            workflow_type=None,
            **{
                "bundle_root": self.bundle_root,
                "data_root": str(self.data_root),
                "run_name": name,
                "output_dir": str(self.output_dir / name),
                "resume": self.resume,
            },
        )
        # merge key by key into the method's own visit_overrides (a baseline's file may set some), as raw config: a key
        # may itself be a config path such as "discriminators_def#num_layers", which "visit_overrides#<key>" cannot
        # express
        workflow.parser["visit_overrides"].update(self.visit_overrides)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        return self.output_dir / name / "sequence.json"

    def synthesise(self, name: str, handoff: str) -> Path:
        """Write the final generator's synthetic pairs (every center's training label maps, own style); with
        ``resume``, a synthetic dataset written after the hand-off is reused."""
        out = self.output_dir / name / "synthetic"
        done = out / "dataset.json"
        if self.resume and done.is_file() and done.stat().st_mtime >= Path(handoff).stat().st_mtime:
            logger.info(f"[evaluate] synthesis {name}: reusing {out}.")
            return out
        workflow = ConfigWorkflow(
            config_file=self.inference_config,
            meta_file=self.meta_file,
            logging_file=False,
            workflow_type="infer",
            bundle_root=self.bundle_root,
            handoff=handoff,
            dataset_dir=str(self.data_root),
            style="own",
            output_dir=str(out),
            overwrite=True,
            spatial_size=self.spatial_size,
            device=str(self.device),
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        return out

    def train_segmentation(self, name: str, dataset_dir: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
        """Train the segmentation network on ``dataset_dir``'s training pairs (or reuse a finished run)."""
        out = self.segmentation_dir / name
        workflow = ConfigWorkflow(
            config_file=self.segmentation_config,
            meta_file=self.meta_file,
            logging_file=False,
            workflow_type="train",
            **{
                "bundle_root": self.bundle_root,
                "dataset_dir": str(dataset_dir),
                "output_dir": str(out),
                "spatial_size": self.spatial_size,
                "device": str(self.device),
                **self.segmentation_overrides,
            },
        )
        workflow.initialize()
        parser = workflow.parser
        network = parser.get_parsed_content("segmentation_network")
        checkpoint = out / "segmentation.pt"
        if self.resume and checkpoint.is_file():
            network.load_state_dict(torch.load(checkpoint, map_location=self.device, weights_only=True))
            logger.info(f"[evaluate] segmentation {name}: reusing {checkpoint}.")
        else:
            workflow.run()
        info = {
            "pairs": len(parser.get_parsed_content("train#datalist")),
            "iterations": int(parser.get_parsed_content("iterations")),
            "network": type(network).__name__,
            "checkpoint": str(checkpoint),
        }
        workflow.finalize()
        return network, info

    def run(self) -> dict[str, Any]:
        """Run the whole protocol; returns the report (also written to ``report_dir``)."""
        t_all = time.perf_counter()
        labels = {name: m.get("label", name) for name, m in self.methods.items()}
        sequences, quality, forgets = {}, {}, {}
        for name in self.methods:
            t0 = time.perf_counter()
            sequences[name] = json.loads(self.train_generator(name).read_text())
            self._timed(f"train generator: {name}", t0)
        for name in sequences:
            t0 = time.perf_counter()
            quality[name] = quality_matrix(
                self.output_dir / name / "sequence.json", self.data_root, self.spatial_size, device=self.device
            )
            forgets[name] = {m: forgetting(quality[name], m) for m in METRICS}
            self._timed(f"quality matrix: {name}", t0)

        training_sets: dict[str, dict[str, Any]] = {}
        synthetic_dirs = {}
        for name, seq in sequences.items():
            t0 = time.perf_counter()
            synthetic_dirs[name] = self.synthesise(name, seq["final_handoff"])
            training_sets[name] = {"label": labels[name], "dataset_dir": str(synthetic_dirs[name]), "real": False}
            self._timed(f"synthesis: {name}", t0)
        if self.real_baselines:
            training_sets["real_all"] = {
                "label": "Real images, all centers",
                "dataset_dir": str(self.data_root),
                "real": True,
            }
            training_sets["real_last"] = {
                "label": f"Real images, last center ({self.centers[-1]})",
                "dataset_dir": str(self.data_root / self.centers[-1]),
                "real": True,
            }
        class_names = list(
            json.loads((self.data_root / self.centers[0] / "dataset.json").read_text())["labels"].values()
        )
        scores: dict[str, dict[str, Any]] = {}
        seg_info: dict[str, Any] = {}
        for name, t in training_sets.items():
            t0 = time.perf_counter()
            network, info = self.train_segmentation(name, Path(t["dataset_dir"]))
            t["pairs"] = info["pairs"]
            seg_info = info
            scores[name] = {
                c: center_scores(network, self.data_root / c, class_names, len(self.spatial_size), self.spatial_size)
                for c in self.centers
            }
            self._timed(f"segmentation: {name}", t0)

        t0 = time.perf_counter()
        memorisation = {
            name: audit_dataset(d, self.data_root, len(self.spatial_size), self.spatial_size, self.quantile)
            for name, d in synthetic_dirs.items()
        }
        self._timed("memorisation audit", t0)

        t0 = time.perf_counter()
        figures = self.figures(sequences, quality, labels, class_names, scores, training_sets)
        self._timed("figures", t0)
        self.timings["total"] = round(time.perf_counter() - t_all, 1)
        report = {
            "title": "TDGAN evaluation report",
            "command": self.command,
            "data_root": str(self.data_root),
            "centers": self.centers,
            "spatial_size": self.spatial_size,
            "methods": {
                name: {**self.methods[name], "final_handoff": seq["final_handoff"], "visits": len(seq["visits"])}
                for name, seq in sequences.items()
            },
            "visit_overrides": self.visit_overrides,
            "quality": quality,
            "forgetting": forgets,
            "segmentation": {
                "network": seg_info.get("network"),
                "iterations": seg_info.get("iterations"),
                "classes": class_names[1:],
                "training_sets": training_sets,
                "scores": scores,
            },
            "memorisation": {"quantile": self.quantile, "results": memorisation},
            "figures": figures,
            "timings": self.timings,
        }
        md = write_report(report, self.report_dir)
        logger.info(f"[evaluate] report written: {md} and {self.report_dir / 'report.json'}")
        return report

    def figures(
        self,
        sequences: dict[str, dict[str, Any]],
        quality: dict[str, dict[str, Any]],
        labels: dict[str, str],
        class_names: list[str],
        scores: dict[str, Any],
        training_sets: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        """The report's PNG figures (paths relative to the report folder)."""
        self.report_dir.mkdir(parents=True, exist_ok=True)
        generators = {
            name: generator_from_handoff(seq["final_handoff"], self.device) for name, seq in sequences.items()
        }
        grids = {}
        dims = len(self.spatial_size)
        for c in self.centers:
            images, labs, _ = load_pairs(self.data_root / c, dims, self.spatial_size, key="test")
            n = min(self.grid_samples, images.shape[0])
            images, labs = images[:n], labs[:n]
            synthetic = {}
            for name, (g, h) in generators.items():
                if c in h.codes:
                    fake = generate_images(g, labs, torch.full((n,), h.codes[c]))
                    synthetic[labels[name]] = _middle_slice((fake + 1) / 2)
            path = f"grid_{c}.png"
            plot_grid(
                self.report_dir / path,
                _middle_slice(labs.float(), clamp=False),
                _middle_slice((images + 1) / 2),
                synthetic,
                len(class_names),
                f"{c}: held-out test label maps, real images and synthetic images",
            )
            grids[c] = path
        plot_quality_matrices(self.report_dir / "quality_matrix.png", quality, labels)
        seg_labels = {name: t["label"] for name, t in training_sets.items()}
        seg = {"classes": class_names[1:], "training_sets": training_sets, "scores": scores}
        plot_dice_bars(self.report_dir / "downstream_dice.png", seg, self.centers, seg_labels)
        return {"grids": grids, "quality_matrix": "quality_matrix.png", "dice_bars": "downstream_dice.png"}


def _middle_slice(t: torch.Tensor, clamp: bool = True) -> np.ndarray:
    """(N, C, *spatial) -> (N, H, W) numpy for display: first channel, middle slice of a volume, clamped to [0, 1]
    unless ``clamp`` is False (label maps)."""
    a = t[:, 0].detach().cpu().float()
    while a.ndim > 3:
        a = a[..., a.shape[-1] // 2]
    return (a.clamp(0, 1) if clamp else a).numpy()
