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
"""The segmentation workflow (configs/segmentation.json) as a MONAI bundle's: loss lines, TensorBoard, validation on a
held-out part of the training list with per-case outputs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from conftest import segmentation_workflow
from monai.bundle import ConfigWorkflow
from monai.data import load_decathlon_datalist
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scripts.data.centers import held_out_split


def _segmentation(dataset_dir: Path, out: Path, **override) -> ConfigWorkflow:
    return segmentation_workflow(dataset_dir, out, **{"iterations": 6, "log_interval": 1, **override})


def test_segmentation_logs_its_loss_and_validates_on_held_out_training_pairs_with_per_case_dice(
    demo_root: Path, tmp_path: Path, stats_lines
):
    center = demo_root / "center_a"
    workflow = _segmentation(center, tmp_path / "seg", val_fraction=0.25, val_interval=1)
    assert workflow.check_properties() in (None, [])
    workflow.run()
    workflow.finalize()
    trained = {it["image"] for it in workflow.parser.get_parsed_content("train#datalist")}
    held = {it["image"] for it in workflow.parser.get_parsed_content("validate#dataset").data}
    listed = {it["image"] for it in load_decathlon_datalist(str(center / "dataset.json"), True, "training", center)}
    test = {it["image"] for it in load_decathlon_datalist(str(center / "dataset.json"), True, "test", center)}
    assert len(held) == 2 and held | trained == listed and not held & trained and not held & test

    with open(tmp_path / "seg" / "validation" / "val_mean_dice_raw.csv") as f:
        rows = list(csv.DictReader(f))
    assert {row["filename"] for row in rows} == held  # one row per held-out case
    assert all(0.0 <= float(row["mean"]) <= 1.0 for row in rows)
    losses = [line for line in stats_lines() if "-- train_loss: " in line]
    assert len(losses) == 6  # one line per iteration at log_interval 1
    assert any(line.startswith("Epoch[1] Metrics -- val_mean_dice: ") for line in stats_lines())
    events = EventAccumulator(str(tmp_path / "seg" / "tensorboard"))
    events.Reload()
    assert {"train_loss", "val_mean_dice"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val_mean_dice")] == [1, 2]  # 3 batches per epoch: 2 epochs


def test_val_fraction_0_trains_on_every_pair_without_validation(demo_root: Path, tmp_path: Path):
    workflow = _segmentation(demo_root / "center_a", tmp_path / "seg", val_fraction=0, iterations=2)
    workflow.run()
    assert len(workflow.parser.get_parsed_content("train#datalist")) == 8
    assert (tmp_path / "seg" / "segmentation.pt").is_file() and not (tmp_path / "seg" / "validation").exists()


def test_the_held_out_split_is_seeded_and_never_empty_nor_everything():
    items = [{"image": str(i)} for i in range(10)]
    train, val = held_out_split(items, 0.2, seed=3)
    assert len(val) == 2 and train + val != items and sorted(train + val, key=lambda x: int(x["image"])) == items
    assert held_out_split(items, 0.2, seed=3) == (train, val) and held_out_split(items, 0.2, seed=4) != (train, val)
    assert len(held_out_split(items[:2], 0.01)[1]) == 1 and len(held_out_split(items[:2], 0.9)[1]) == 1
    assert held_out_split(items[:1], 0.5) == (items[:1], []) and held_out_split(items, 0) == (items, [])
    with pytest.raises(ValueError, match="val_fraction must be in"):
        held_out_split(items, 1.0)


@pytest.mark.parametrize("amp, dtype", [(False, "torch.float32"), (True, "torch.bfloat16")])
def test_amp_runs_the_segmentation_network_in_bfloat16_on_cpu_and_keeps_the_loss_in_float32(
    demo_root: Path, tmp_path: Path, amp: bool, dtype: str
):
    from scripts.precision import amp_supported

    if amp and not amp_supported("cpu", torch.bfloat16):
        pytest.skip("this CPU has no native bfloat16")
    workflow = _segmentation(demo_root / "center_a", tmp_path / "seg", val_fraction=0.25, iterations=2, amp=amp)
    seen: list[str] = []
    network = workflow.parser.get_parsed_content("segmentation_network")
    network.register_forward_hook(lambda module, args, out: seen.append(str(out.dtype)))
    workflow.run()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert seen and set(seen) == {dtype}  # training and validation forwards
    loss = trainer.state.output[0]["loss"]  # decollated: a Python float from the float32 loss
    assert isinstance(loss, float) and math.isfinite(loss)
    assert trainer.state.output[0]["pred"].dtype == torch.float32  # the inferer hands the loss float32 logits
