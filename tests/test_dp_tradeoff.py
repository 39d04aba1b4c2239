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
"""The DP trade-off command end to end at a tiny size: three settings through the evaluation protocol, one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY

pytest.importorskip("opacus", reason="the optional DP extra (requirements-dp.txt) is not installed")
from scripts.handoff import load_handoff  # noqa: E402
from tools.dp_tradeoff import main  # noqa: E402


def test_the_tradeoff_command_runs_every_setting_through_the_protocol_and_tables_it(tmp_path: Path):
    out = tmp_path / "tradeoff"
    tiny = {
        # the demo config with tiny demo centers (2 centers of 8 training slices of 32x32) and tiny networks
        "demo_dir": str(tmp_path / "demo"),
        "demo_data": {"num_centers": 2, "num_train": 8, "num_test": 2, "size": 32, "seed": 0, "anatomy": "procedural"},
        "visit_overrides": {"bundle_root": str(REPO), **TINY},
        "segmentation_overrides": {"iterations": 2, "batch_size": 4, "val_fraction": 0},
        "evaluation#real_baselines": False,
        "device": "cpu",
    }
    argv = ["--output_dir", str(out), "--epsilons", "50", "10", "--no_training_maps"]
    main(argv + ["--set", *(f"{k}={json.dumps(v)}" for k, v in tiny.items())])

    rows = json.loads((out / "report" / "tradeoff.json").read_text())
    assert list(rows) == ["no_dp", "dp_eps50", "dp_eps10"]
    assert set(rows["no_dp"]["epsilon"].values()) == {None}  # trained without DP: no guarantee
    for name, target in (("dp_eps50", 50.0), ("dp_eps10", 10.0)):
        spent = rows[name]["epsilon"]
        assert list(spent) == ["center_a", "center_b"]
        assert all(0.95 * target <= e <= target for e in spent.values()), spent  # each center spends its target
    noise = [rows[n]["noise_multiplier"]["center_a"] for n in ("dp_eps50", "dp_eps10")]
    assert noise[0] < noise[1]  # the smaller epsilon needs more noise
    for r in rows.values():
        assert 0.0 <= r["near_copy_rate"]["new_maps"] <= 1.0 and "training_maps" not in r["near_copy_rate"]
        assert r["dice"] is not None and r["seconds_per_step"] > 0
        assert r["first_center_forgetting_ssim"] is not None and r["memorisation_gap_ssim"] is not None

    # each setting is its own sequence with local reminding, DP as configured
    for name in rows:
        visits = load_handoff(out / "seed0" / name / "handoffs" / "visit02_center_b.pt").visits
        assert [v["reminding_source"] for v in visits] == ["local", "local"]
        assert all((v["dp"] is None) == (name == "no_dp") for v in visits)

    report = json.loads((out / "report" / "report.json").read_text())
    md = (out / "report" / "report.md").read_text()
    assert report["privacy"]["dp_eps10"]["center_b"]["epsilon"] == rows["dp_eps10"]["epsilon"]["center_b"]
    assert "## Differential privacy" in md and str(rows["dp_eps10"]["epsilon"]["center_b"]) in md
    table = (out / "report" / "tradeoff.md").read_text()
    assert "TDGAN local, DP epsilon 10" in table and str(rows["dp_eps50"]["seconds_per_step"]) in table
