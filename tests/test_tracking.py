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
"""Experiment tracking with MLflow (optional extra requirements-mlflow.txt): a tiny visit run with
``--tracking configs/mlflow.json`` leaves its losses in a local MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import META, REPO, TINY

from scripts.handoff import load_handoff

mlflow = pytest.importorskip("mlflow", reason="optional extra: pip install -r requirements-mlflow.txt")


def test_a_tracked_visit_leaves_its_epoch_means_and_iteration_losses_in_a_local_mlflow_store(
    demo_root: Path, tmp_path: Path
):
    out = tmp_path / "visit"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(REPO / "configs" / "train.json")]
    cmd += ["--meta_file", META, "--bundle_root", str(REPO), "--tracking", str(REPO / "configs" / "mlflow.json")]
    cmd += ["--dataset_dir", str(demo_root / "center_a"), "--output_dir", str(out)]
    for key, value in TINY.items():
        cmd += [f"--{key}", str(value).replace(" ", "")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")  # the default: beside the visit
    (run,) = client.search_runs([client.get_experiment_by_name("tdgan").experiment_id])
    assert run.info.status == "FINISHED"
    history = load_handoff(out / "handoff.pt").visits[0]["loss_history"]
    for name in ("g_loss", "d_loss", "g_l1"):
        means = client.get_metric_history(run.info.run_id, name)  # epoch means, at their epoch
        assert [m.step for m in means] == [1, 2]
        assert [m.value for m in means] == pytest.approx([h[name] for h in history], abs=1e-5)
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, f"iteration/{name}"))
        assert steps == list(range(1, 9))  # 8 slices / batch 2 x 2 epochs, one value per iteration
