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
"""The reminding check (tools.reminding_check) end to end at a tiny size: both reductions, one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scripts.handoff import load_handoff
from tools.reminding_check import main

TINY_VISITS = [
    "spatial_size=[32, 32]",
    "ngf=8",
    "num_blocks=1",
    "ndf=8",
    "batch_size=2",
    "epochs_constant=1",
    "epochs_decay=1",
    "label_bank_size=4",
    "amp=false",
    "progress_bar=false",
]
TINY_DEMO = ["size=32", "num_train=8", "num_test=2"]


def test_reminding_check_runs_both_reductions_on_the_demo_sequence_and_prints_the_forgetting_table(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    argv = ["--output", str(tmp_path), "--num_centers", "3", "--device", "cpu"]
    argv += [a for kv in TINY_VISITS for a in ("--set", kv)] + [a for kv in TINY_DEMO for a in ("--demo", kv)]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in out if line.startswith("{")]
    assert [r["reduction"] for r in records] == ["mean", "sum"]
    for r in records:
        assert r["first_center"] == "center_a" and len(r["first_center_ssim"]) == 3
        assert all(-1.0 <= v <= 1.0 for v in r["first_center_ssim"])
        assert r["first_center_forgetting"] == pytest.approx(r["first_center_ssim"][0] - r["first_center_ssim"][-1])
        assert r["forgetting"]["center_c"] is None  # no visit came after the last center
    table = [line for line in out if line.startswith("|")]
    assert table[0].startswith("| after visit | first-center SSIM, mean | first-center SSIM, sum |")
    assert len(table) == 2 + 3 + 3  # header, rule, one row per visit, forgetting, mean forgetting, time
    # the reduction reached the visits: same data, seeds and settings otherwise, different generators from visit 2 on
    runs = sorted(p for p in tmp_path.iterdir() if p.name != "demo")
    assert [p.name.split("_")[0] for p in runs] == ["mean", "sum"]
    first = [load_handoff(next((r / "handoffs").glob("visit01_*.pt"))).generator for r in runs]
    last = [load_handoff(next((r / "handoffs").glob("visit03_*.pt"))).generator for r in runs]
    assert all(torch.equal(first[0][k], first[1][k]) for k in first[0])  # nothing to remind at the first center
    assert any(not torch.equal(last[0][k], last[1][k]) for k in last[0])
    assert json.loads((tmp_path / "demo" / "centers.json").read_text())["order"] == ["center_a", "center_b", "center_c"]


def test_reminding_check_refuses_a_single_center(tmp_path: Path):
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path), "--num_centers", "1"])
