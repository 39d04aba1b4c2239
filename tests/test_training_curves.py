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
"""docs/is_it_working.md's figure command on a real (tiny) visit's TensorBoard logs."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from scripts.handoff import load_handoff
from scripts.tools import training_curves
from tests.conftest import TINY, run_visit


def test_the_figure_and_table_hold_each_visits_epoch_means_and_its_samples(
    demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    run = tmp_path / "run"
    run_visit([demo_root / "center_a"], run / "visits" / "visit01_center_a", tensorboard_samples=2)
    out = tmp_path / "figure" / "curves.png"
    assert training_curves.main(["--run", str(run), "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 0
    history = load_handoff(run / "visits" / "visit01_center_a" / "handoff.pt").visits[0]["loss_history"]
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| visit01_center_a |"))
    first, last = history[0]["g_l1"], history[-1]["g_l1"]
    assert f"| {len(history)} | {first:.3f} -> {last:.3f} |" in row  # the logged means, first and last epoch
    means, samples = training_curves.read_visit(run / "visits" / "visit01_center_a")
    assert [e for e, _ in means["g_l1"]] == [h["epoch"] for h in history]
    size = TINY["spatial_size"][0]
    assert samples.shape == (2 * size, 2 * size)  # real above generated, the 2 samples side by side


def test_a_folder_without_visit_logs_is_refused_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert training_curves.main(["--run", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "no visit with TensorBoard logs" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
