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
"""Tests of the local center sequence (configs/train_sequential.json) and the baseline override files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import META, REPO, TINY
from monai.bundle import ConfigWorkflow

from scripts.handoff import load_handoff
from scripts.sequence import plan_visits

SEQUENTIAL = str(REPO / "configs" / "train_sequential.json")


def _tiny_visit_keys() -> dict:
    return {f"visit_overrides#{k}": v for k, v in TINY.items()}


def test_plan_visits_groups_centers_per_visit():
    order = ["a", "b", "c"]
    assert plan_visits(order, 1) == [["a"], ["b"], ["c"]]
    assert plan_visits(order, 2) == [["a", "b"], ["c"]]
    assert plan_visits(order, 0) == [["a", "b", "c"]]
    with pytest.raises(ValueError):
        plan_visits(order, -1)


def test_sequence_over_three_centers_writes_three_handoffs_whose_registry_follows_centers_json(
    demo_root: Path, tmp_path: Path
):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    order = ["center_c", "center_a", "center_b"]  # not alphabetical: the registry must follow this file
    (root / "centers.json").write_text(json.dumps({"order": order}))
    override = tmp_path / "tiny.json"
    override.write_text(json.dumps({"data_root": str(root), "output_dir": str(tmp_path / "out"), **_tiny_visit_keys()}))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps([SEQUENTIAL, str(override)])]
    cmd += ["--meta_file", META, "--logging_file", str(REPO / "configs" / "logging.conf"), "--bundle_root", str(REPO)]
    done = subprocess.run(
        cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    handoffs = sorted((tmp_path / "out" / "handoffs").glob("*.pt"))
    assert [p.name for p in handoffs] == ["visit01_center_c.pt", "visit02_center_a.pt", "visit03_center_b.pt"]
    for i, path in enumerate(handoffs):
        handoff = load_handoff(path)
        assert [e["name"] for e in handoff.registry] == order[: i + 1]
        assert [e["code"] for e in handoff.registry] == list(range(i + 1))
        assert len(handoff.visits) == i + 1
    summary = json.loads((tmp_path / "out" / "sequence.json").read_text())
    assert summary["order"] == order and summary["final_handoff"] == str(handoffs[-1])
    assert list((tmp_path / "out" / "visits" / "visit03_center_b" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    "baseline, visits, registry_sizes, discriminators, bank_centers, reminding_weight",
    [
        ("finetune", 3, [1, 2, 3], [1, 1, 1], 3, 0.0),
        ("tdgan_local", 3, [1, 2, 3], [1, 1, 1], 0, 1.0),
        ("joint", 1, [3], [1], 3, 1.0),
        ("asyndgan", 1, [3], [3], 3, 0.0),
        ("local_gan", 1, [1], [1], 1, 1.0),
        ("two_online", 2, [2, 3], [2, 1], 3, 1.0),
    ],
)
def test_baselines_are_overrides_of_the_sequence(
    demo_root: Path, tmp_path: Path, baseline, visits, registry_sizes, discriminators, bank_centers, reminding_weight
):
    workflow = ConfigWorkflow(
        config_file=[SEQUENTIAL, str(REPO / "configs" / "baselines" / f"{baseline}.json")],
        meta_file=META,
        logging_file=False,
        workflow_type=None,
        **{"bundle_root": str(REPO), "data_root": str(demo_root), "output_dir": str(tmp_path), **_tiny_visit_keys()},
    )
    workflow.initialize()
    handoffs = workflow.run()[0]
    assert len(handoffs) == visits
    for path, size in zip(handoffs, registry_sizes):
        assert len(load_handoff(path).registry) == size
    last = load_handoff(handoffs[-1])
    assert len(last.label_bank) == bank_centers
    assert last.visits[-1]["reminding_weight"] == reminding_weight
    assert last.visits[-1]["iterations"] > 0
    # one temporary discriminator per online center, or one shared by all (joint)
    assert [v["discriminators"] for v in last.visits] == discriminators
