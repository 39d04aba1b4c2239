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
"""Shared fixtures: tiny demo centers on disk and a way to run the bundle's real visit workflow in-process."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.bundle import ConfigWorkflow

from scripts import visit
from scripts.data.demo import make_demo_centers

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "configs" / "train.json")
META = str(REPO / "configs" / "metadata.json")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # run_tests.sh runs two test processes on the 2 cores: one thread each, for them and the processes they start
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"

LONGEST_FIRST = [
    "test_fl.py",
    "test_evaluation.py",
    "test_benchmark_step.py",
    "test_fl_poc.py",
    "test_docs_commands.py",
    "test_cli.py",
    "test_privacy.py",
    "test_dp_tradeoff.py",
    "test_resume.py",
    "test_segmentation_journey.py",
    "test_visit.py",
]
"""The test files that take longest (``--durations``, 2026-12-07), run first: run_tests.sh gives each file to one of two
processes as they free up, so a long file started last would leave the other process idle."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the files of :data:`LONGEST_FIRST` to the front, in that order; every file keeps its own test order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort: the rest keep their order


# small enough for 2 CPU cores: 32x32 slices, 8-channel networks, 2 epochs of 4 steps
TINY: dict[str, Any] = {
    "spatial_size": [32, 32],
    "ngf": 8,
    "num_blocks": 1,
    "ndf": 8,
    "batch_size": 2,
    "epochs_constant": 1,
    "epochs_decay": 1,
    "label_bank_size": 4,
    "device": "cpu",
}


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tiny demo centers (8 training and 2 test slices of 32x32 each) with centers.json."""
    return make_demo_centers(tmp_path_factory.mktemp("demo"), num_centers=3, num_train=8, num_test=2, size=32, seed=0)


def visit_workflow(
    center_dirs: list[Path], out: Path, handoff_in: Path | None = None, **override: Any
) -> ConfigWorkflow:
    """The bundle's visit workflow (configs/train.json) with tiny settings, initialised, not yet run."""
    return visit.visit_workflow(center_dirs, out, handoff_in, settings={**TINY, **override}, bundle_root=REPO)


def run_visit(center_dirs: list[Path], out: Path, handoff_in: Path | None = None, **override: Any) -> ConfigWorkflow:
    """Run one tiny visit to completion; the outgoing hand-off is ``out/handoff.pt``."""
    return visit.run_visit(center_dirs, out, handoff_in, settings={**TINY, **override}, bundle_root=REPO)


@pytest.fixture
def stats_lines(caplog: pytest.LogCaptureFixture):
    """The messages MONAI's ``StatsHandler`` logs during a test (its logger may not propagate to the root logger)."""
    logger = logging.getLogger("monai.handlers.StatsHandler")
    logger.addHandler(caplog.handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    caplog.set_level(logging.INFO)
    yield lambda: [r.getMessage() for r in caplog.records]
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def handoffs(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real hand-offs of two tiny visits: ``a`` (center_a) and ``b`` (center_b from ``a``: two registered centers)."""
    out = tmp_path_factory.mktemp("handoffs")
    run_visit([demo_root / "center_a"], out / "a")
    run_visit([demo_root / "center_b"], out / "b", out / "a" / "handoff.pt")
    return {"a": out / "a" / "handoff.pt", "b": out / "b" / "handoff.pt"}


def segmentation_workflow(dataset_dir: Path, out: Path, **override: Any) -> ConfigWorkflow:
    """configs/segmentation.json at a tiny size on ``dataset_dir`` (a center or a synthetic set), initialised."""
    settings = {"device": "cpu", "spatial_size": TINY["spatial_size"], "iterations": 2, "batch_size": 2, **override}
    workflow = ConfigWorkflow(
        config_file=str(REPO / "configs" / "segmentation.json"),
        meta_file=META,
        logging_file=False,
        workflow_type="train",
        **{"bundle_root": str(REPO), "dataset_dir": str(dataset_dir), "output_dir": str(out)},
        **settings,
    )
    workflow.initialize()
    return workflow
