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
"""The segmentation-noise tool: one real-image UNet retrained per thread count, scored as the protocol scores it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from scripts.evaluation.segmentation_scores import center_scores
from tests.conftest import REPO
from tools.segmentation_noise import CONFIGS, main, training_sets

TINY = ["iterations=3", "batch_size=4", "progress_bar=false"]


def test_each_thread_count_trains_its_own_unet_and_prints_the_scores_of_that_checkpoint(
    demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    args = ["--output_dir", str(tmp_path / "run"), "--data_root", str(demo_root), "--set", "real_all"]
    args += ["--threads", "1", "2", "--work_dir", str(tmp_path / "noise")]
    assert main(args + [f"--segmentation={s}" for s in TINY]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    rows = [json.loads(line) for line in lines]
    assert [r["threads"] for r in rows] == [1, 2]
    labels = json.loads((demo_root / "center_a" / "dataset.json").read_text())["labels"]
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "segmentation.json"))
    parser.update({"spatial_size": [64, 64], "segmentation_def#num_res_units": 1, "dataset_dir": str(demo_root)})
    for row in rows:
        checkpoint = Path(row["checkpoint"])
        assert checkpoint.is_relative_to(tmp_path / "noise" / f"threads{row['threads']}")
        network = parser.get_parsed_content("segmentation_def", lazy=False)
        network.load_state_dict(torch.load(checkpoint, weights_only=True))
        for center in ("center_a", "center_b", "center_c"):
            scores = center_scores(network, demo_root / center, list(labels.values()), 2, [64, 64])
            assert row["dice"][center] == {c: round(float(s["dice"]), 3) for c, s in scores.items()}
    assert not (tmp_path / "run").exists()  # nothing written into the run it reads


def test_only_the_runs_training_sets_are_accepted(demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    parser = ConfigParser()
    parser.read_config([str(c) for c in CONFIGS] + [str(REPO / "configs" / "demo_full.json")])  # every set
    parser.update({"bundle_root": str(REPO), "output_dir": str(tmp_path), "data_root": str(demo_root)})
    sets = training_sets(parser.get_parsed_content("evaluation"), 0)
    assert {"tdgan_bank", "tdgan_bank_training_maps", "joint", "real_all", "real_last"} <= set(sets)
    assert sets["tdgan_bank"] == tmp_path / "seed0" / "tdgan_bank" / "synthetic"
    for bad in ("../../etc", "tdgan_bank/../x", "unknown"):
        with pytest.raises(SystemExit) as stop:
            main(["--output_dir", str(tmp_path), "--data_root", str(demo_root), "--set", bad])
        assert stop.value.code == 2
    with pytest.raises(SystemExit):  # a known set that the run has not made yet
        main(["--output_dir", str(tmp_path), "--data_root", str(demo_root), "--set", "tdgan_bank"])
    assert "run the protocol first" in capsys.readouterr().err
