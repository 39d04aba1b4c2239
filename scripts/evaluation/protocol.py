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
"""The evaluation protocol: per seed, train every generator on one budget, measure forgetting, synthesise, compare
distributions, segment, audit; then intervals over seeds and the report."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from torch.utils.data import DataLoader

from scripts.data.centers import (
    OnlineCenters,
    center_datalist,
    center_subjects,
    dataset_setting,
    read_center_order,
    read_label_maps,
)
from scripts.data.checks import InputError, center_problems, raise_if_problems
from scripts.data.label_maps import LabelMapTooCloseError, check_far_from_sources, check_settings, new_label_maps
from scripts.evaluation.distribution_metrics import (
    FEATURES,
    distribution_scores,
    encoder_features,
    ms_ssim_diversity,
    ms_ssim_settings,
)
from scripts.evaluation.image_quality import (
    METRICS,
    generator_from_handoff,
    load_pairs,
    measured_forgetting,
    quality_matrix,
)
from scripts.evaluation.intervals import OVER_SEEDS, PER_IMAGE, bootstrap_interval, over_seeds, t_interval
from scripts.evaluation.memorisation import audit_dataset, handoff_reconstruction, memorisation_gap
from scripts.evaluation.report import (
    plot_dice_bars,
    plot_distribution,
    plot_grid,
    plot_quality_matrices,
    write_report,
)
from scripts.evaluation.segmentation_scores import center_scores
from scripts.evaluation.synthesis import generate_images
from scripts.excepthook import one_line_reason
from scripts.files import made_with, record_made
from scripts.flags import flag
from scripts.handoff import load_handoff
from scripts.sequence import plan_visits
from scripts.visit import center_label_bank, duration_text

__all__ = ["Evaluation", "BUDGET_RULE", "FID_BIAS", "WorkerRefusal"]

logger = logging.getLogger(__name__)

BUDGET_RULE = (
    "every method makes as many generator updates (optimizer steps of G) as the reference method, at the same "
    "learning-rate schedule (the same epochs, constant then linear decay); a single-visit method whose epochs are "
    "shorter gets longer epochs (epoch_length). Updates rather than images seen: how far Adam moves the generator "
    "is set by its number of steps at a given learning rate, and a step that sums the losses of several centers "
    "(AsynDGAN) is one step with a larger batch, not several; counting images would give AsynDGAN a third of "
    "TDGAN's steps on 3 centers. The price: such a method sees each center more often (data passes) and computes "
    "more per step, which is recorded next to it."
)
"""The budget rule, as the report states it."""

FID_BIAS = (
    "FID is biased upwards at small sample sizes: two samples of the same distribution of a few tens of images score "
    "well above 0, and the bias shrinks as the samples grow, so only values at equal sample sizes compare (every "
    "method's set of a center has the same size); the real-image row shows the value a generator drawing exactly "
    "from the center's distribution would get here. KID is unbiased (and may be slightly negative for matching "
    "sets); with few images its spread is wide."
)
"""The small-sample caveat of the distribution metrics, as the report states it."""

BOOTSTRAP_RESAMPLES = 1000
"""Resamples of the per-image bootstrap intervals."""


class WorkerRefusal(InputError):
    """A refusal raised in a protocol worker process, carried back as its one-line reason (an exception crosses a
    process boundary without the errors it was raised from, so the bundle's own refusal would be lost)."""


class Evaluation:
    """The paper's evaluation protocol on centers with paired held-out test data, end to end, once per seed.

    Before anything trains, every method's preconditions for every seed (:py:meth:`preflight`: the centers, its
    label bank, the shareable sets' new label maps); a failed one is refused then, in one line each. Then, for every
    seed in ``seeds`` (the visits', synthesis's and segmentation's seed):

    1. Train each generator (a sequence config plus the method's override files; finished visits are reused) on the
       same budget of generator updates (:py:meth:`budgets`).
    2. Visit-by-center quality matrix (SSIM, PSNR, MAE) of every sequence, and forgetting per center.
    3. Synthesise each final generator's pairs in each center's style (``configs/inference.json``): from new label
       maps (shareable, the headline) and, for ``training_map_sets``, from the training label maps (not shareable).
    4. Train the segmentation network (``configs/segmentation.json``) on each synthetic set and on real training
       images (all centers; the last center only), and test it on every center's real test images (Dice and HD95,
       with per-image bootstrap intervals).
    5. Distribution metrics of each shareable set per center: FID and KID on the real-trained network's features,
       MS-SSIM diversity.
    6. Audit the synthetic images for near copies of real training images.

    Then the mean and t-interval over seeds of every number, report.json, report.md and the figures.

    Args:
        data_root: folder with the center folders and centers.json.
        output_dir: where each method's run goes (``output_dir/seed<k>/<method>``).
        report_dir: where the report goes.
        methods: method name -> ``{"label": shown name, "configs": override files for the sequence config}``, and
            optionally ``"visit_overrides"``: visit settings of that method alone, applied over ``visit_overrides``
            (e.g. one setting of a sweep: its learning rate or epochs).
        sequence_config: the sequence workflow config (configs/train_sequential.json).
        inference_config: the synthesis config (configs/inference.json).
        segmentation_config: the segmentation config (configs/segmentation.json).
        meta_file: the bundle's metadata.json.
        segmentation_dir: where the segmentation runs go (default ``output_dir/segmentation``; ``/seed<k>/<set>``).
        bundle_root: the bundle.
        visit_overrides: applied to every visit of every method (sizes, epochs, ...); ``num_classes`` and
            ``image_channels`` default to what the centers' dataset.json declare.
        segmentation_overrides: applied to every segmentation training (iterations, batch size, ...); the same two
            defaults.
        spatial_size: size images are generated, compared and segmented at.
        real_baselines: which segmentation networks also train on real images: ``"real_all"`` (every center's; it
            also gives the distribution metrics their features and the shareable sets their relative Dice) and
            ``"real_last"`` (the last center's only); true (default) for both, false for none.
        grid_samples: test samples per center in the figure grids.
        quantile: near-copy threshold of the memorisation audit (quantile of real-to-real distances).
        label_map_settings: how new label maps are made from each center's own (``relocatable``, ``hosts``,
            ``flip_axes``, ...; see :py:func:`scripts.data.label_maps.new_label_maps`) for the shareable synthetic sets.
        new_maps_per_center: new label maps (and so synthetic pairs) per center in the shareable sets; default: as
            many as the center has training pairs.
        segmentation_sets: methods whose shareable set trains a segmentation network (every method's set is still
            synthesised, audited and scored by the distribution metrics); default: every method.
        training_map_sets: methods whose generator also synthesises every center's TRAINING label maps (a set that
            is not shareable, kept to show what it leaks and how it segments); default: every method.
        site_sets: methods whose shareable set is also used as a site would use it: for each center, a segmentation
            network trained on that center's own real training images plus the OTHER centers' synthetic pairs
            (``<method>_site_<center>``), next to one trained on the center's own real images only
            (``real_own_<center>``; the last center's is ``real_last``); default: none.
        seeds: one full run per seed; intervals over seeds need at least 2.
        budget_reference: the method whose generator updates every method gets (see :py:data:`BUDGET_RULE`), or
            None to let every method keep its own epochs (the budgets are still recorded).
        distribution_reference: the real images FID/KID/MS-SSIM compare against: ``"test"`` (held-out: a generator
            that memorised its training images gets no credit for it, and the feature network has not seen them
            either) or ``"training"``; the other split is scored as the real-image row.
        resume: reuse finished visits and segmentation runs.
        command: the command that made the report (recorded in it).
        device: where generators and segmentation networks are evaluated.
        workers: processes that train the generators (every method and seed; the runs with the most images
            first), then the segmentation networks, at the same time, each with ``cpu_count // workers`` torch
            threads; 1 (default) trains them one after another in this process. Small networks use two threads
            poorly, so on a 2-core CPU 2 workers finish sooner (the demo's UNets 1.5x, its generators less:
            tools/docs/benchmark.md); on a GPU keep 1.
        generator_workers: the generators' own count (default: ``workers``). A generator uses two threads well, so
            two runs of unequal length (TDGAN-bank's reminding makes its later visits dearer than fine-tuning's)
            finish sooner one after another on all threads than side by side.
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
        real_baselines: bool | Sequence[str] = True,
        grid_samples: int = 3,
        quantile: float = 0.05,
        label_map_settings: dict[str, Any] | None = None,
        new_maps_per_center: int | None = None,
        segmentation_sets: Sequence[str] | None = None,
        training_map_sets: Sequence[str] | None = None,
        site_sets: Sequence[str] | None = None,
        seeds: Sequence[int] = (0,),
        budget_reference: str | None = "tdgan_bank",
        distribution_reference: str = "test",
        resume: bool = True,
        command: str = "python -m monai.bundle run --config_file configs/compare.json",
        device: torch.device | str = "cpu",
        workers: int = 1,
        generator_workers: int | None = None,
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
        self.real_baselines = real_sets(real_baselines)
        self.grid_samples = grid_samples
        self.quantile = quantile
        self.label_map_settings = check_settings(label_map_settings)
        self.new_maps_per_center = None if new_maps_per_center is None else int(new_maps_per_center)
        self.segmentation_sets = list(methods if segmentation_sets is None else segmentation_sets)
        self.training_map_sets = list(methods if training_map_sets is None else training_map_sets)
        self.site_sets = list(site_sets or [])
        for key, names in (
            ("segmentation_sets", self.segmentation_sets),
            ("training_map_sets", self.training_map_sets),
            ("site_sets", self.site_sets),
        ):
            unknown = sorted(set(names) - set(methods))
            if unknown:
                raise ValueError(f"{key} names methods {unknown} that are not in methods {sorted(methods)}.")
        self.seeds = [int(s) for s in seeds]
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {list(seeds)}.")
        if budget_reference is not None and budget_reference not in methods:
            raise ValueError(
                f"budget_reference {budget_reference!r} is not one of the methods {sorted(methods)}; name one of "
                "them (its generator updates become every method's budget) or set it to null."
            )
        self.budget_reference = budget_reference
        if distribution_reference not in ("test", "training"):
            raise ValueError(f"distribution_reference must be 'test' or 'training', got {distribution_reference!r}.")
        self.distribution_reference = distribution_reference
        self.resume = flag(resume, "resume")
        self.command = command
        self.device = torch.device(device)
        self.centers = read_center_order(self.data_root)
        # read once from the centers' dataset.json and given to every workflow (an explicit value is kept: each
        # workflow's input checks refuse one that contradicts dataset.json)
        for key, default in (("num_classes", 4), ("image_channels", 1)):
            value = dataset_setting([self.data_root / c for c in self.centers], key, default)
            self.visit_overrides.setdefault(key, value)
            self.segmentation_overrides.setdefault(key, value)
        self.timings: dict[str, float] = {}
        for key, value in (("workers", workers), ("generator_workers", generator_workers or workers)):
            if int(value) < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}.")
        self.workers = int(workers)
        self.generator_workers = int(generator_workers or workers)
        self._prepared: set[tuple[str, str, int]] = set()  # (what, name, seed) made by the parallel workers
        self.progress = Progress(0, 0)  # run() sets the work it plans
        self._images_per_set: int | None = None

    def _in_parallel(self, method: str, jobs: list[tuple[str, str, int, tuple]], workers: int) -> bool:
        """Run ``self.<method>(*args)`` for every job ``(what, name, seed, args)`` in ``workers`` processes, so that
        the sequential pass that follows reuses their results; False (nothing done) with one worker or one job.

        Raises:
            the first job's error (the other jobs are cancelled).
        """
        if workers < 2 or len(jobs) < 2:
            return False
        threads = max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_setup, initargs=(threads,)) as pool:
            futures = {
                pool.submit(_worker_job, self, method, args): (what, name, seed) for what, name, seed, args in jobs
            }
            for future in as_completed(futures):
                if future.exception() is not None:
                    pool.shutdown(cancel_futures=True)
                    raise future.exception()  # a refusal arrives as a WorkerRefusal (_worker_job)
                what, name, seed = futures[future]
                self._prepared.add((what, name, seed))
                # the job's own time (the sequential pass that follows records only its reuse)
                step = f"seed {seed}: {what} in a worker: {name}"
                self.timings[step] = future.result()
                logger.info(f"[evaluate] {step}: {self.timings[step]} s")
        return True

    def _timed(
        self, step: str, t0: float, generator: int = 0, segmentation: int = 0, reused: tuple[int, int] = (0, 0)
    ) -> None:
        """Record a stage's wall time and log it with the progress so far (``generator``/``segmentation``: the
        training images the stage processed; ``reused``: those it found finished, for :py:class:`Progress`)."""
        self.timings[step] = round(time.perf_counter() - t0, 1)
        progress = self.progress.stage(self.timings[step], generator, segmentation, reused)
        logger.info(f"[evaluate] {step}: {self.timings[step]} s{progress}")

    def _segmentation_images(self, sets: int | None = None) -> int:
        """Training images ``sets`` segmentation networks process (iterations x batch each; default: one seed's
        sets), for the progress."""
        if self._images_per_set is None:  # read once: the config and overrides do not change during a run
            parser = ConfigParser()
            parser.read_config(self.segmentation_config)
            parser.update({k: v for k, v in self.segmentation_overrides.items() if "#" not in k})
            self._images_per_set = int(parser.get_parsed_content("iterations")) * int(
                parser.get_parsed_content("batch_size")
            )
        per_set = self._images_per_set
        if sets is None:
            sets = len(self.segmentation_sets) + len(self.training_map_sets) + len(self.real_baselines)
            if self.site_sets:
                sets += (
                    len(self.site_sets) * len(self.centers) + len(self.centers) - ("real_last" in self.real_baselines)
                )
        return sets * per_set

    def _own_overrides(self, name: str) -> dict[str, Any]:
        """The visit settings method ``name`` sets for itself in ``methods`` (over the evaluation's)."""
        own = self.methods[name].get("visit_overrides") or {}
        if not isinstance(own, dict):
            raise ValueError(f"methods[{name!r}]['visit_overrides'] must be a dict of visit settings, got {own!r}.")
        return dict(own)

    def _configs(self, name: str) -> list[str]:
        return [self.sequence_config] + [str(Path(self.bundle_root) / c) for c in self.methods[name].get("configs", [])]

    # ------------------------------------------------------------------------------------------------------------------
    # budget
    # ------------------------------------------------------------------------------------------------------------------

    def plan(self, name: str) -> dict[str, Any]:
        """What one method's sequence will do, read from its configs (sequence + overrides + ``visit_overrides``)
        before anything trains: its visits, epochs, batch size, discriminators and the generator updates (one per
        iteration) those make on this data (``drop_last`` batches of the longest group of each visit)."""
        parser = ConfigParser()
        parser.read_config(self._configs(name))
        parser.update({"bundle_root": self.bundle_root, "data_root": str(self.data_root), "run_name": name})
        parser["visit_overrides"].update({**self.visit_overrides, **self._own_overrides(name)})
        visits = plan_visits(parser.get_parsed_content("order"), parser.get_parsed_content("centers_per_visit"))
        visit = ConfigParser()
        visit.read_config(parser.get_parsed_content("visit_config"))
        visit.update(parser.get_parsed_content("visit_overrides"))
        batch, epochs = int(visit.get_parsed_content("batch_size")), int(visit.get_parsed_content("epochs"))
        shared = bool(visit.get_parsed_content("shared_discriminator"))
        sizes = {c: len(center_datalist(self.data_root / c, 0)) for v in visits for c in v}
        given = visit.get("train#trainer#epoch_length")
        lengths = [
            int(given)
            if given is not None
            else len(DataLoader(OnlineCenters([range(sizes[c]) for c in v], shared), batch_size=batch, drop_last=True))
            for v in visits
        ]
        return {
            "visits": visits,
            "epochs": epochs,
            "batch_size": batch,
            "bank": {
                "made": visit.get_parsed_content("reminding_source") == "bank",
                "bank_maps": visit.get_parsed_content("bank_maps"),
                "count": int(visit.get_parsed_content("label_bank_size")),
                "spatial_dims": int(visit.get_parsed_content("spatial_dims")),
                "spatial_size": [int(v) for v in visit.get_parsed_content("spatial_size")],
                "label_map_settings": check_settings(visit.get_parsed_content("label_map_settings")),
            },
            "shared_discriminator": shared,
            "discriminator_center_code": bool(visit.get_parsed_content("discriminator_center_code")),
            "training_pairs": sum(sizes.values()),
            "natural_epoch_length": lengths,
            "natural_generator_updates": epochs * sum(lengths),
        }

    def budgets(self) -> dict[str, dict[str, Any]]:
        """Every method's plan (:py:meth:`plan`) with the budget rule applied (:py:data:`BUDGET_RULE`): the
        reference method's generator updates for all, met by a single-visit method through its ``epoch_length``.

        Returns:
            name -> plan plus ``"generator_updates"`` (the budget, or the method's own count without a reference)
            and ``"epoch_length"`` (the override, or None when the method's own epochs already meet the budget).

        Raises:
            ValueError: a method of several visits whose own updates differ from the budget (only single-visit
                methods are adjusted), or a budget that is no whole number of iterations per epoch.
        """
        plans = {name: self.plan(name) for name in self.methods}
        target = plans[self.budget_reference]["natural_generator_updates"] if self.budget_reference else None
        for name, p in plans.items():
            p["generator_updates"], p["epoch_length"] = target or p["natural_generator_updates"], None
            if target is None or p["natural_generator_updates"] == target:
                continue
            if len(p["visits"]) != 1 or target % p["epochs"]:
                raise ValueError(
                    f"method {name!r} makes {p['natural_generator_updates']} generator updates in "
                    f"{len(p['visits'])} visit(s) of {p['epochs']} epochs, the budget ({self.budget_reference}) is "
                    f"{target}: only a single-visit method with a budget divisible by its epochs is adjusted; give "
                    "it the reference's visits and epochs, or set budget_reference to null."
                )
            p["epoch_length"] = target // p["epochs"]
            logger.info(
                f"[evaluate] budget: {name} gets epoch_length {p['epoch_length']} (its own "
                f"{p['natural_epoch_length'][0]}) to make {target} generator updates like {self.budget_reference}."
            )
        return plans

    def preflight(self, plans: dict[str, dict[str, Any]]) -> None:
        """Check every method's preconditions before anything trains, so that a run cannot fail late: every center's
        folder and files (as each visit will check them), each method's label bank for every seed (made exactly as
        its visits will make it: :py:func:`scripts.visit.center_label_bank`) and the new label maps of the shareable
        sets for every seed (as :py:meth:`synthesise` will make them). Each distinct bank and set is made once.

        Raises:
            InputError: one line per failed precondition, naming the method, seed and center, and what to do.
        """
        t0 = time.perf_counter()
        dims = len(self.spatial_size)
        problems: list[str] = []
        for c in self.centers:
            problems += center_problems(
                self.data_root / c,
                dims,
                self.visit_overrides["image_channels"],
                self.visit_overrides["num_classes"],
            )
        raise_if_problems(problems, f"the centers of {self.data_root}")
        checked: dict[str, str | None] = {}

        def check(key: tuple, what: str, make: Any) -> None:
            digest = json.dumps(key, sort_keys=True, default=str)
            if digest not in checked:
                try:
                    make()
                    checked[digest] = None
                except (LabelMapTooCloseError, InputError, ValueError) as e:
                    checked[digest] = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if checked[digest] is not None:
                problems.append(f"{what}: {checked[digest]}")

        for seed in self.seeds:
            for name, plan in plans.items():
                bank = plan["bank"]
                if not bank["made"]:
                    continue
                for visit in plan["visits"]:
                    for i, c in enumerate(visit):
                        args = (
                            self.data_root / c,
                            bank["spatial_dims"],
                            bank["spatial_size"],
                            bank["count"],
                            seed + i,
                            bank["bank_maps"],
                            bank["label_map_settings"],
                        )
                        check(("bank", *args), f"method {name}, seed {seed}, label bank", lambda a=args: _bank(*a))
            for index, c in enumerate(self.centers):
                args = (self.data_root / c, dims, self.spatial_size, self.new_maps_per_center, seed + index)
                what = f"seed {seed}, shareable synthetic set of {c} (label_map_settings)"
                check(("new", *args), what, lambda a=args: self._new_maps(*a))
        raise_if_problems(problems, "the preconditions of the evaluation's methods")
        self._timed("preconditions checked (centers, label banks, new label maps)", t0)

    def _new_maps(self, folder: Path, dims: int, size: list[int], count: int | None, seed: int) -> None:
        """The new label maps :py:meth:`synthesise` will make of one center (refused as it would refuse them)."""
        maps = read_label_maps(folder, dims, size)[0]
        made = new_label_maps(
            maps, count or len(maps), seed, subjects=center_subjects(folder), **self.label_map_settings
        )
        check_far_from_sources(made.maps, maps, made.ceiling)

    def spent(self, name: str, sequence: dict[str, Any], plan: dict[str, Any], seed: int) -> dict[str, Any]:
        """What one method's run actually spent, from the visit records of its final hand-off (``iterations`` =
        generator updates); checked against the budget.

        Raises:
            ValueError: the hand-offs record another number of generator updates than the budget (e.g. reused from
                a run under other settings).
        """
        visits = load_handoff(sequence["final_handoff"]).visits
        updates = sum(int(v["iterations"]) for v in visits)
        if updates != plan["generator_updates"]:
            raise ValueError(
                f"method {name!r}, seed {seed}: its hand-offs record {updates} generator updates but the budget is "
                f"{plan['generator_updates']}; they come from a run under other settings: delete "
                f"{self.output_dir / f'seed{seed}' / name} or run with --resume false."
            )
        images = sum(int(v["iterations"]) * plan["batch_size"] * int(v["discriminators"]) for v in visits)
        return {
            "generator_updates": updates,
            "images_seen": images,
            "data_passes": round(images / plan["training_pairs"], 2),
            "epochs": sum(int(v["epochs"]) for v in visits),
            "visits": len(visits),
            "epoch_length": [int(v["iterations"]) // max(1, int(v["epochs"])) for v in visits],
            "batch_size": plan["batch_size"],
            "discriminators": [int(v["discriminators"]) for v in visits],
            "discriminator_center_code": plan["discriminator_center_code"],
            "natural_generator_updates": plan["natural_generator_updates"],
        }

    # ------------------------------------------------------------------------------------------------------------------
    # the steps of one seed
    # ------------------------------------------------------------------------------------------------------------------

    def train_generator(self, name: str, seed: int = 0, plan: dict[str, Any] | None = None) -> Path:
        """Run (or resume) one method's sequence under ``seed`` (and the budget's ``epoch_length`` of ``plan``);
        returns its sequence.json."""
        out = self.output_dir / f"seed{seed}" / name
        workflow = ConfigWorkflow(
            config_file=self._configs(name),
            meta_file=self.meta_file,
            logging_file=False,
            workflow_type=None,
            **{
                "bundle_root": self.bundle_root,
                "data_root": str(self.data_root),
                "run_name": name,
                "output_dir": str(out),
                "resume": self.resume or ("generator", name, seed) in self._prepared,
            },
        )
        # merge key by key into the method's own visit_overrides (a baseline's file may set some), as raw config: a key
        # may itself be a config path such as "discriminators_def#num_layers", which "visit_overrides#<key>" cannot
        # express
        budget = {"train#trainer#epoch_length": plan["epoch_length"]} if plan and plan.get("epoch_length") else {}
        own = self._own_overrides(name)
        workflow.parser["visit_overrides"].update({**self.visit_overrides, **own, "seed": seed, **budget})
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        return out / "sequence.json"

    def _final_handoff(self, name: str, seed: int) -> Path:
        """The final hand-off of one method's finished sequence under ``seed`` (from its sequence.json)."""
        return Path(json.loads((self.output_dir / f"seed{seed}" / name / "sequence.json").read_text())["final_handoff"])

    def synthetic_dir(self, name: str, label_source: str = "new", seed: int = 0) -> Path:
        """Where :py:meth:`synthesise` writes one method's synthetic set (``label_source`` ``"new"`` or ``"given"``)."""
        return (
            self.output_dir
            / f"seed{seed}"
            / name
            / ("synthetic" if label_source == "new" else "synthetic_training_maps")
        )

    def class_names(self) -> list[str]:
        """The label classes, in label-value order, from the first center's ``dataset.json``."""
        return list(json.loads((self.data_root / self.centers[0] / "dataset.json").read_text())["labels"].values())

    def synthesise(self, name: str, handoff: str, label_source: str = "new", seed: int = 0) -> Path:
        """Write the final generator's synthetic pairs in each center's own style: from new label maps made from every
        center's training maps (``label_source="new"``: shareable) or from the training maps themselves
        (``"given"``: not shareable). With ``resume``, a synthetic dataset made from the same hand-off with the same
        settings (recorded beside it, ``<out>.made.json``) is reused; anything else is made again."""
        out = self.synthetic_dir(name, label_source, seed)
        made = {
            "handoff_sha256": file_digest(handoff),
            "label_source": label_source,
            "label_map_settings": self.label_map_settings,
            "new_maps_per_center": self.new_maps_per_center,
            "spatial_size": self.spatial_size,
            "seed": seed,
        }
        record = out.with_name(f"{out.name}.made.json")
        if self.resume and (out / "dataset.json").is_file() and made_with(record, made):
            logger.info(f"[evaluate] synthesis {name} ({label_source} label maps): reusing {out}.")
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
            label_source=label_source,
            label_map_settings=self.label_map_settings,
            new_maps_per_center=self.new_maps_per_center,
            output_dir=str(out),
            overwrite=True,
            spatial_size=self.spatial_size,
            seed=seed,
            device=str(self.device),
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        record_made(record, made)
        return out

    def train_segmentation(
        self, name: str, dataset_dir: str | Path | list[str], seed: int = 0
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        """Train the segmentation network on the training pairs of ``dataset_dir`` (a folder, or a list of folders
        trained on together) under ``seed``, or, with ``resume``, reuse a finished run on the same training data
        with the same settings (recorded beside its checkpoint)."""
        out = self.segmentation_dir / f"seed{seed}" / name
        folders = [dataset_dir] if isinstance(dataset_dir, (str, os.PathLike)) else list(dataset_dir)
        made = {
            "training_data": {k: v for folder in folders for k, v in dataset_digest(folder).items()},
            "settings": self.segmentation_overrides,
            "spatial_size": self.spatial_size,
            "seed": seed,
        }
        record = out / "segmentation.made.json"
        workflow = ConfigWorkflow(
            config_file=self.segmentation_config,
            meta_file=self.meta_file,
            logging_file=False,
            workflow_type="train",
            **{
                "bundle_root": self.bundle_root,
                "dataset_dir": str(folders[0]) if len(folders) == 1 else [str(f) for f in folders],
                "output_dir": str(out),
                "spatial_size": self.spatial_size,
                "device": str(self.device),
                **self.segmentation_overrides,
                "seed": seed,
            },
        )
        workflow.initialize()
        parser = workflow.parser
        network = parser.get_parsed_content("segmentation_network")
        checkpoint = out / "segmentation.pt"
        reuse = self.resume or ("segmentation", name, seed) in self._prepared
        if reuse and checkpoint.is_file() and made_with(record, made):
            network.load_state_dict(torch.load(checkpoint, map_location=self.device, weights_only=True))
            logger.info(f"[evaluate] segmentation {name}: reusing {checkpoint}.")
        else:
            workflow.run()
            record_made(record, made)
        info = {
            "pairs": len(parser.get_parsed_content("train#datalist")),
            "iterations": int(parser.get_parsed_content("iterations")),
            "network": type(network).__name__,
            "checkpoint": str(checkpoint),
        }
        workflow.finalize()
        return network, info

    def segmentation_scores(self, network: torch.nn.Module, class_names: list[str], seed: int) -> dict[str, Any]:
        """Per center and class: Dice and HD95 on the center's real test images, per image, with their means and
        per-image bootstrap intervals (:py:func:`~scripts.evaluation.intervals.bootstrap_interval`, seeded)."""
        out = {}
        for c in self.centers:
            scores = center_scores(network, self.data_root / c, class_names, len(self.spatial_size), self.spatial_size)
            for s in scores.values():
                for m in ("dice", "hd95"):
                    s[f"{m}_bootstrap"] = bootstrap_interval(s[f"{m}_per_image"], BOOTSTRAP_RESAMPLES, seed)
            out[c] = scores
        return out

    def distribution(self, network: torch.nn.Module, synthetic_dirs: dict[str, Path], seed: int) -> dict[str, Any]:
        """FID, KID (on the features of ``network``, the real-trained UNet: :py:data:`FEATURES`) and MS-SSIM
        diversity of each method's shareable set per center against that center's real reference images, and the
        same for the center's other real split (the real-image row)."""
        dims, ref = len(self.spatial_size), self.distribution_reference
        other = "training" if ref == "test" else "test"
        real = {c: load_pairs(self.data_root / c, dims, self.spatial_size, ref, minv=0.0)[0] for c in self.centers}
        features = {c: encoder_features(network, real[c]) for c in self.centers}
        sets = {name: self._images_by_center(synthetic_dirs[name]) for name in self.methods}
        sets[f"real_{other}"] = {
            c: load_pairs(self.data_root / c, dims, self.spatial_size, other, 0.0)[0] for c in real
        }
        scores = {
            key: {c: distribution_scores(features[c], encoder_features(network, x), x, seed) for c, x in per.items()}
            for key, per in sets.items()
        }
        return {
            "scores": scores,
            "reference_ms_ssim": {c: round(ms_ssim_diversity(x, seed=seed), 4) for c, x in real.items()},
        }

    def _others_synthetic(self, synthetic_dir: Path, center: str) -> Path:
        """A copy of a synthetic set without the pairs made in ``center``'s style (what the other centers would
        share with it), beside the set: ``<set>_without_<center>``, made again each time (it is small)."""
        meta = json.loads((synthetic_dir / "dataset.json").read_text())
        out = synthetic_dir.with_name(f"{synthetic_dir.name}_without_{center}")
        if out.exists():
            shutil.rmtree(out)
        kept = [item for item in meta["training"] if item.get("center") != center]
        for item in kept:
            for key in ("image", "label"):
                (out / item[key]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(synthetic_dir / item[key], out / item[key])
        meta.update(
            training=kept,
            numTraining=len(kept),
            description=f"{meta.get('description', '')} Without the pairs made in {center}'s style.",
        )
        (out / "dataset.json").write_text(json.dumps(meta, indent=2))
        return out

    def _images_by_center(self, synthetic_dir: Path) -> dict[str, torch.Tensor]:
        """A synthetic dataset's images in [0, 1], split by the center style each was made in."""
        meta = json.loads((synthetic_dir / "dataset.json").read_text())
        images = load_pairs(synthetic_dir, len(self.spatial_size), self.spatial_size, "training", minv=0.0)[0]
        centers = [item["center"] for item in meta["training"]]
        return {c: images[[i for i, x in enumerate(centers) if x == c]] for c in self.centers if c in centers}

    def run_seed(self, seed: int, plans: dict[str, dict[str, Any]], class_names: list[str]) -> dict[str, Any]:
        """Steps 1-6 under one seed; returns that seed's numbers (and its runs' paths)."""
        labels = {name: m.get("label", name) for name, m in self.methods.items()}
        tag = f"seed {seed}: "
        sequences, spent, quality, forgets = {}, {}, {}, {}
        for name in self.methods:
            t0, since = time.perf_counter(), time.time()
            seq_file = self.train_generator(name, seed, plans[name])
            sequences[name] = json.loads(seq_file.read_text())
            spent[name] = self.spent(name, sequences[name], plans[name], seed)
            trained = _written_since(sequences[name]["final_handoff"], since)  # else reused
            images = expected_images(plans[name])
            # a worker's run was counted when the workers finished
            reused = (images * (not trained and ("generator", name, seed) not in self._prepared), 0)
            self._timed(f"{tag}train generator: {name}", t0, generator=images * trained, reused=reused)
            t0 = time.perf_counter()
            quality[name] = quality_matrix(seq_file, self.data_root, self.spatial_size, device=self.device)
            forgets[name] = {m: measured_forgetting(quality[name], m) for m in METRICS}
            self._timed(f"{tag}quality matrix: {name}", t0)

        training_sets: dict[str, dict[str, Any]] = {}
        synthetic_dirs: dict[str, Path] = {}
        for name, seq in sequences.items():
            t0 = time.perf_counter()
            for label_source in ("new", "given") if name in self.training_map_sets else ("new",):
                key = name if label_source == "new" else f"{name}_training_maps"
                synthetic_dirs[key] = self.synthesise(name, seq["final_handoff"], label_source, seed)
                if label_source == "new" and name not in self.segmentation_sets:
                    continue
                training_sets[key] = {
                    "label": labels[name] + ("" if label_source == "new" else ", training label maps (not shareable)"),
                    "method": name,
                    "dataset_dir": str(synthetic_dirs[key]),
                    "real": False,
                    "label_source": label_source,
                    "shareable": label_source == "new",
                }
            self._timed(f"{tag}synthesis: {name}", t0)
        for name in self.site_sets:
            for c in self.centers:
                others = self._others_synthetic(synthetic_dirs[name], c)
                training_sets[f"{name}_site_{c}"] = {
                    "label": f"{labels[name]}: {c}'s own real + the other centers' synthetic",
                    "method": name,
                    "dataset_dir": [str(self.data_root / c), str(others)],
                    "real": False,
                    "shareable": False,
                    "site": c,
                }
        if self.site_sets:
            for c in self.centers[:-1] if "real_last" in self.real_baselines else self.centers:
                training_sets[f"real_own_{c}"] = {
                    "label": f"Real images, own center only ({c})",
                    "dataset_dir": str(self.data_root / c),
                    "real": True,
                    "shareable": False,
                    "site": c,
                }
        if "real_all" in self.real_baselines:
            training_sets["real_all"] = {
                "label": "Real images, all centers",
                "dataset_dir": str(self.data_root),
                "real": True,
                "shareable": False,
            }
        if "real_last" in self.real_baselines:
            training_sets["real_last"] = {
                "label": f"Real images, last center ({self.centers[-1]})",
                "dataset_dir": str(self.data_root / self.centers[-1]),
                "real": True,
                "shareable": False,
            }
        scores: dict[str, dict[str, Any]] = {}
        seg_info: dict[str, Any] = {}
        distribution = None
        t0 = time.perf_counter()
        jobs = [("segmentation", name, seed, (name, t["dataset_dir"], seed)) for name, t in training_sets.items()]
        per_set = self._segmentation_images(1)
        since = time.time()
        if self._in_parallel("train_segmentation", jobs, self.workers):
            checkpoints = [self.segmentation_dir / f"seed{seed}" / name / "segmentation.pt" for name in training_sets]
            trained = sum(_written_since(c, since) for c in checkpoints)
            stage = f"{tag}train segmentation networks ({self.workers} workers)"
            self._timed(stage, t0, segmentation=per_set * trained, reused=(0, per_set * (len(checkpoints) - trained)))
        for name, t in training_sets.items():
            t0, since = time.perf_counter(), time.time()
            network, seg_info = self.train_segmentation(name, t["dataset_dir"], seed)
            t["pairs"] = seg_info["pairs"]
            scores[name] = self.segmentation_scores(network, class_names, seed)
            trained = _written_since(seg_info["checkpoint"], since)
            reused = not trained and ("segmentation", name, seed) not in self._prepared
            self._timed(f"{tag}segmentation: {name}", t0, segmentation=per_set * trained, reused=(0, per_set * reused))
            if name == "real_all":
                t0 = time.perf_counter()
                distribution = self.distribution(network, synthetic_dirs, seed)
                self._timed(f"{tag}distribution metrics", t0)

        t0 = time.perf_counter()
        leakage = self.leakage(sequences, synthetic_dirs)
        self._timed(f"{tag}leakage", t0)
        new_maps = next((d for k, d in synthetic_dirs.items() if k in self.methods), None)
        return {
            "label_maps": None if new_maps is None else _new_map_record(new_maps),
            "sequences": sequences,
            "budget": spent,
            "quality": quality,
            "forgetting": forgets,
            "training_sets": training_sets,
            "segmentation_info": seg_info,
            "scores": scores,
            "distribution": distribution,
            "leakage": leakage,
        }

    # ------------------------------------------------------------------------------------------------------------------
    # the whole protocol
    # ------------------------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run the whole protocol for every seed; returns the report (also written to ``report_dir``)."""
        t_all = time.perf_counter()
        labels = {name: m.get("label", name) for name, m in self.methods.items()}
        plans = self.budgets()
        self.progress = Progress(
            sum(expected_images(plans[name]) for name in self.methods) * len(self.seeds),
            self._segmentation_images() * len(self.seeds),
        )
        self.preflight(plans)
        class_names = self.class_names()
        t0, since = time.perf_counter(), time.time()
        jobs = [("generator", name, seed, (name, seed, plans[name])) for seed in self.seeds for name in self.methods]
        # the most images per run first (e.g. AsynDGAN: every center's batch each update), so the longest run does
        # not start last and leave one worker idle at the end
        jobs.sort(key=lambda job: -expected_images(plans[job[1]]))
        if self._in_parallel("train_generator", jobs, self.generator_workers):
            images = {(name, seed): expected_images(plans[name]) for _, name, seed, _ in jobs}
            trained = sum(
                n for (name, seed), n in images.items() if _written_since(self._final_handoff(name, seed), since)
            )
            stage = f"train generators ({self.generator_workers} workers)"
            self._timed(stage, t0, generator=trained, reused=(sum(images.values()) - trained, 0))
        runs = [self.run_seed(seed, plans, class_names) for seed in self.seeds]

        def combined(key: str, **kwargs: Any) -> Any:
            return over_seeds([r[key] for r in runs], **kwargs)

        budget = {}
        for name in self.methods:
            budget[name] = {**runs[0]["budget"][name], "epoch_length_override": plans[name]["epoch_length"]}
            budget[name]["generator_updates_per_seed"] = [r["budget"][name]["generator_updates"] for r in runs]
        quality = combined("quality")
        scores = combined(
            "scores", fixed={"n"}, listed={"dice_per_image", "hd95_per_image", "dice_bootstrap", "hd95_bootstrap"}
        )
        training_sets = combined("training_sets", fixed={"pairs"})
        relative = None
        if "real_all" in self.real_baselines:
            relative = relative_dice(scores, training_sets, self.centers, class_names[1:])
        distribution = None
        if runs[0]["distribution"] is not None:
            distribution = {
                "features": FEATURES,
                "reference": f"each center's real {self.distribution_reference} images",
                "ms_ssim": ms_ssim_settings(self.spatial_size),
                "bias": FID_BIAS,
                **combined("distribution", fixed={"images", "real_images", "reference_ms_ssim"}),
            }

        t0 = time.perf_counter()
        figures = self.figures(runs[0]["sequences"], quality, labels, class_names, scores, training_sets, distribution)
        self._timed("figures", t0)
        self.timings["total"] = round(time.perf_counter() - t_all, 1)
        seg_info = runs[-1]["segmentation_info"]
        report = {
            "title": "TDGAN evaluation report",
            "command": self.command,
            "data_root": str(self.data_root),
            "centers": self.centers,
            "spatial_size": self.spatial_size,
            "seeds": self.seeds,
            "intervals": {
                "over_seeds": OVER_SEEDS,
                "per_image": f"{PER_IMAGE} ({BOOTSTRAP_RESAMPLES} resamples, seeded with the run's seed)",
            },
            "methods": {
                name: {
                    **self.methods[name],
                    "final_handoff": [r["sequences"][name]["final_handoff"] for r in runs],
                    "visits": len(runs[0]["sequences"][name]["visits"]),
                }
                for name in self.methods
            },
            "budget": {
                "rule": BUDGET_RULE,
                "reference": self.budget_reference,
                "generator_updates": plans[self.budget_reference]["generator_updates"]
                if self.budget_reference
                else None,
                "methods": budget,
            },
            "visit_overrides": self.visit_overrides,
            "label_map_settings": self.label_map_settings,
            "new_label_maps": runs[0]["label_maps"],
            "quality": quality,
            "forgetting": combined("forgetting"),
            "segmentation": {
                "network": seg_info.get("network"),
                "iterations": seg_info.get("iterations"),
                "classes": class_names[1:],
                "training_sets": training_sets,
                "scores": scores,
                "relative_to_real_all": relative,
            },
            "distribution": distribution,
            "leakage": combined(
                "leakage",
                fixed={"quantile", "synthetic", "label_maps", "real_to_real_median"},
                listed={"flagged_samples", "summary"},
            ),
            "figures": figures,
            "timings": self.timings,
        }
        md = write_report(report, self.report_dir)
        logger.info(f"[evaluate] report written: {md} and {self.report_dir / 'report.json'}")
        return report

    def leakage(self, sequences: dict[str, dict[str, Any]], synthetic_dirs: dict[str, Path]) -> dict[str, Any]:
        """What each method's artifacts leak: near copies in every synthetic set, the memorisation gap of the final
        generator per center, and what its final hand-off alone lets the holder rebuild."""
        dims = len(self.spatial_size)
        near_copies = {
            key: audit_dataset(d, self.data_root, dims, self.spatial_size, self.quantile)
            for key, d in synthetic_dirs.items()
        }
        pairs = {
            c: {
                split: load_pairs(self.data_root / c, dims, self.spatial_size, key=split)[:2]
                for split in ("training", "test")
            }
            for c in self.centers
        }
        gaps, reconstruction = {}, {}
        for name, seq in sequences.items():
            generator, h = generator_from_handoff(seq["final_handoff"], self.device)
            gaps[name] = {
                c: memorisation_gap(generator, h.codes[c], *pairs[c]["training"], *pairs[c]["test"])
                for c in self.centers
                if c in h.codes
            }
            banked = [c for c in h.label_bank if c in pairs]
            reconstruction[name] = handoff_reconstruction(
                generator,
                h.label_bank,
                h.codes,
                {c: pairs[c]["training"][0] for c in banked},
                {c: pairs[c]["training"][1] for c in banked},
                quantile=self.quantile,
                real_subjects={c: center_subjects(self.data_root / c) for c in banked},
            )
        return {
            "quantile": self.quantile,
            "near_copies": near_copies,
            "memorisation_gap": gaps,
            "handoff_reconstruction": reconstruction,
        }

    def figures(
        self,
        sequences: dict[str, dict[str, Any]],
        quality: dict[str, dict[str, Any]],
        labels: dict[str, str],
        class_names: list[str],
        scores: dict[str, Any],
        training_sets: dict[str, dict[str, Any]],
        distribution: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The report's PNG figures (paths relative to the report folder); the sample grids show the first seed's
        generators, the other figures the means and intervals over seeds."""
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
                class_names,
                f"{c}: held-out test label maps, real images and synthetic images (seed {self.seeds[0]})",
            )
            grids[c] = path
        plot_quality_matrices(self.report_dir / "quality_matrix.png", quality, labels)
        shown = {name: t for name, t in training_sets.items() if t.get("shareable") or t["real"]}
        seg_labels = {name: t["label"] for name, t in shown.items()}
        seg = {"classes": class_names[1:], "training_sets": shown, "scores": scores}
        plot_dice_bars(self.report_dir / "downstream_dice.png", seg, self.centers, seg_labels)
        out = {"grids": grids, "quality_matrix": "quality_matrix.png", "dice_bars": "downstream_dice.png"}
        if distribution is not None:
            dist_labels = {**labels, **{k: _real_row_label(k) for k in distribution["scores"] if k.startswith("real_")}}
            plot_distribution(self.report_dir / "distribution.png", distribution, self.centers, dist_labels)
            out["distribution"] = "distribution.png"
        return out


class Progress:
    """The time left of a protocol run, estimated from its training work: the generator images and segmentation
    images (iterations x batch) still to process, each at the rate measured so far (a segmentation image at
    :py:data:`SEGMENTATION_IMAGE_COST` generator images until one is measured), plus the other stages (metrics,
    synthesis, audits) at their share of the time so far. Reused results leave the work to do (and the rates) as
    finished work that was not measured here."""

    def __init__(self, generator_total: int, segmentation_total: int) -> None:
        self.generator_total, self.segmentation_total = generator_total, segmentation_total
        self.done = {"generator": [0, 0.0], "segmentation": [0, 0.0], "other": [0, 0.0]}  # images, seconds
        self.t0 = time.perf_counter()

    def stage(self, seconds: float, generator: int = 0, segmentation: int = 0, reused: tuple[int, int] = (0, 0)) -> str:
        """Count one finished stage (``reused``: generator and segmentation images of results found finished, which
        leave the work to do untimed); returns the log line's tail: the time so far and, once a generator was
        trained here, the estimate of the time left."""
        self.generator_total -= reused[0]
        self.segmentation_total -= reused[1]
        kind = "generator" if generator else "segmentation" if segmentation else "other"
        self.done[kind][0] += generator or segmentation
        self.done[kind][1] += seconds
        elapsed = time.perf_counter() - self.t0
        (g, g_s), (s, s_s), (_, o_s) = self.done["generator"], self.done["segmentation"], self.done["other"]
        if not g or not g_s:
            return f" ({duration_text(elapsed)} so far)"
        rate = g_s / g
        s_rate = s_s / s if s and s_s else rate * SEGMENTATION_IMAGE_COST
        left = max(0, self.generator_total - g) * rate + max(0, self.segmentation_total - s) * s_rate
        left += o_s * left / max(g_s + s_s, 1e-9)
        return f" ({duration_text(elapsed)} so far, about {duration_text(left)} left)"


SEGMENTATION_IMAGE_COST = 0.2
"""A segmentation training image's time in generator training images, for the estimate before a UNet is trained
(the demo's 64x64 UNet against its TDGAN-bank generator on this project's 2-core CPU: about 11 ms and 60 ms)."""


def _new_map_record(synthetic_dir: Path) -> dict[str, Any] | None:
    """How a shareable set's new label maps were kept apart from the patients' (the rule and each center's
    calibrated ceilings, as its ``dataset.json`` records them: derived values, no subject or file)."""
    record = json.loads((synthetic_dir / "dataset.json").read_text()).get("label_maps") or {}
    return {k: record[k] for k in ("made_by", "ceilings") if k in record} or None


def _written_since(path: str | os.PathLike, since: float) -> bool:
    """Whether ``path`` was (re)written at or after the wall-clock time ``since``: trained, not reused."""
    return Path(path).is_file() and Path(path).stat().st_mtime >= since - 1e-3


REAL_SETS = ("real_all", "real_last")


def real_sets(value: bool | str | Sequence[str]) -> list[str]:
    """The ``real_baselines`` setting as the list of real-image segmentation sets it names (true: both; false: none).

    Raises:
        ValueError: a name that is not one of :py:data:`REAL_SETS`.
    """
    if not isinstance(value, (list, tuple)):
        return list(REAL_SETS) if flag(value, "real_baselines") else []
    names = list(value)
    unknown = sorted(set(names) - set(REAL_SETS))
    if unknown:
        raise ValueError(f"real_baselines names {unknown}; it takes true, false or a list of {list(REAL_SETS)}.")
    return [n for n in REAL_SETS if n in names]


def expected_images(plan: Mapping[str, Any]) -> int:
    """Training images one method's run will process (generator updates x batch x discriminators per update) from
    its :py:meth:`Evaluation.budgets` plan: its work, up to the reminding batches, for ordering runs."""
    groups = [1 if plan["shared_discriminator"] else len(v) for v in plan["visits"]]
    per_update = sum(groups) / len(groups)
    return int(plan["generator_updates"] * plan["batch_size"] * per_update)


def _worker_setup(threads: int) -> None:
    """A protocol worker process: its share of the CPU threads, log lines tagged with its pid, and a watchdog that ends
    it when the protocol process is gone (killed, not shut down: a job would otherwise train on for an hour as an
    orphan that nobody reads)."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [worker {os.getpid()}] %(message)s")
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="parent-watchdog").start()


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    """End this process (exit status 1, no cleanup: the process that would read its results is gone) once
    ``parent`` has ended (``join`` waits on multiprocessing's sentinel of the parent, no polling)."""
    parent.join()
    logging.getLogger(__name__).error(f"[evaluate] worker {os.getpid()}: the protocol process {parent.pid} ended")
    os._exit(1)


def _worker_job(evaluation: Evaluation, method: str, args: tuple) -> float:
    """One job of :py:meth:`Evaluation._in_parallel` (its result is reused from disk by the sequential pass); returns
    its wall time in seconds.

    Raises:
        WorkerRefusal: the job was refused (a bundle error anywhere in its chain: the one-line reason, which would
            otherwise be lost on the way back to the parent process).
    """
    t0 = time.perf_counter()
    try:
        getattr(evaluation, method)(*args)
    except Exception as e:
        reason = one_line_reason(e)
        if reason is None:
            raise
        raise WorkerRefusal(f"{method} {args[0]}: {reason}") from None
    return round(time.perf_counter() - t0, 1)


def relative_dice(
    scores: dict[str, Any], training_sets: dict[str, Any], centers: Sequence[str], classes: Sequence[str]
) -> dict[str, Any]:
    """Each training set's Dice as a fraction of the Dice of the UNet trained on every center's real images, per
    center and class: the ratio is taken within each seed (the same seed's real-trained UNet), then its mean and t
    interval over the seeds. A set made for one site (``site`` in its training set: a site's own real + others'
    synthetic, or its own real only) is compared at that site's center only.

    Returns:
        ``{"reference": "real_all", "ratios": {set: {center: {class: interval or None}}}}``.
    """
    reference = scores["real_all"]
    ratios: dict[str, Any] = {}
    for name, per_center in scores.items():
        if name == "real_all":
            continue
        site = training_sets[name].get("site")
        ratios[name] = {}
        for c in centers:
            ratios[name][c] = {}
            for cls in classes:
                mine, real = per_center[c][cls]["dice"], reference[c][cls]["dice"]
                if (site is not None and c != site) or mine is None or real is None:
                    ratios[name][c][cls] = None
                    continue
                per_seed = [
                    None if a is None or r is None or r <= 0 else a / r
                    for a, r in zip(mine["per_seed"], real["per_seed"])
                ]
                ratios[name][c][cls] = t_interval(per_seed, decimals=2)
    return {"reference": "real_all", "ratios": ratios}


def _bank(*args: Any) -> None:
    """:py:func:`scripts.visit.center_label_bank`, its maps dropped (a precondition check)."""
    center_label_bank(*args)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def dataset_digest(dataset_dir: str | os.PathLike) -> dict[str, str]:
    """What a training set is: the sha256 of every ``dataset.json`` it is made of (one folder, or the centers of a
    ``centers.json``) and of every file they list."""
    dataset_dir = Path(dataset_dir)
    folders = (
        [dataset_dir / c for c in read_center_order(dataset_dir)]
        if (dataset_dir / "centers.json").is_file()
        else [dataset_dir]
    )
    out = {}
    for folder in folders:
        out[str(folder / "dataset.json")] = file_digest(folder / "dataset.json")
        listed = json.loads((folder / "dataset.json").read_text()).get("training", [])
        for item in listed:
            for key in ("image", "label"):
                if isinstance(item, dict) and isinstance(item.get(key), str) and (folder / item[key]).is_file():
                    out[str(folder / item[key])] = file_digest(folder / item[key])
    return out


def _real_row_label(key: str) -> str:
    """The shown name of the real-image row of the distribution metrics (``real_training`` / ``real_test``)."""
    return f"Real {key.removeprefix('real_')} images"


def _middle_slice(t: torch.Tensor, clamp: bool = True) -> np.ndarray:
    """(N, C, *spatial) -> (N, H, W) numpy for display: first channel, middle slice of a volume, clamped to [0, 1]
    unless ``clamp`` is False (label maps)."""
    a = t[:, 0].detach().cpu().float()
    while a.ndim > 3:
        a = a[..., a.shape[-1] // 2]
    return (a.clamp(0, 1) if clamp else a).numpy()
