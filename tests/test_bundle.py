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
"""Bundle-level checks: metadata against the model-zoo schema, the train workflow's properties, declared networks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from conftest import META, REPO, TINY, visit_workflow
from monai.bundle import ConfigParser
from monai.networks.nets import UNet

SCHEMA = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"


def test_metadata_passes_the_model_zoo_schema_and_has_a_changelog_entry_for_its_version():
    meta = json.loads(Path(META).read_text())
    assert meta["version"] in meta["changelog"]
    schema = SCHEMA if SCHEMA.is_file() else REPO / "tests" / "data" / "meta_schema_20240725.json"
    cmd = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", META, "--filepath", str(schema)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "metadata is verified with no error" in done.stdout + done.stderr, done.stderr


def test_network_data_format_describes_the_released_fully_convolutional_generator():
    meta = json.loads(Path(META).read_text())["network_data_format"]
    parser = ConfigParser()
    parser.read_config(REPO / "configs" / "inference.json")  # the network the released weights load into
    k, centers = parser.get_parsed_content("num_classes"), parser.get_parsed_content("max_centers")
    assert meta["inputs"]["image"]["num_channels"] == k * centers
    assert meta["outputs"]["pred"]["num_channels"] == parser.get_parsed_content("image_channels")
    assert meta["inputs"]["image"]["spatial_shape"] == meta["outputs"]["pred"]["spatial_shape"] == ["8*n", "8*n"]
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        for size in ((8, 8), (12, 20), (64, 64)):  # any multiple of 4 from 8: output of the input's size
            assert net(torch.zeros(1, k * centers, *size)).shape == (1, 1, *size)


def test_optional_packages_in_metadata_are_the_pins_of_the_optional_requirement_files():
    optional = json.loads(Path(META).read_text())["optional_packages_version"]
    pins = {}
    for name in ("demo", "fl", "dp", "mlflow"):
        for line in (REPO / f"requirements-{name}.txt").read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                package, version = line.split("#")[0].strip().split("==")
                pins[package] = version
    assert optional == {k: pins[k] for k in ("nvflare", "nilearn", "opacus", "mlflow")}
    assert set(optional) <= set(pins)


def test_eval_metrics_are_the_released_generators_numbers_in_the_shipped_report():
    """models/model.pt is seed 0's TDGAN-bank generator: its numbers are seed 0's of the multi-seed report."""
    metrics = json.loads(Path(META).read_text())["eval_metrics"]
    report = json.loads((REPO / "docs" / "figures" / "report.json").read_text())
    assert report["seeds"][0] == 0

    def seed0(value: dict) -> float:
        assert len(value["per_seed"]) == len(report["seeds"]) == value["n"]
        return value["per_seed"][0]

    final = report["quality"]["tdgan_bank"]["ssim"][-1]  # after the last visit
    dice = report["segmentation"]["scores"]["tdgan_bank"]  # the UNet trained on its shareable (new-map) set
    for i, center in enumerate(report["centers"]):
        assert metrics[f"ssim_{center}"] == seed0(final[i])
        assert metrics[f"lesion_dice_synthetic_trained_{center}"] == seed0(dice[center]["lesion"]["dice"])
    assert metrics["forgetting_ssim_center_a"] == seed0(report["forgetting"]["tdgan_bank"]["ssim"]["center_a"])


def test_train_workflow_has_every_property_the_model_zoo_checks(demo_root: Path, tmp_path: Path):
    workflow = visit_workflow([demo_root / "center_a"], tmp_path)
    assert workflow.check_properties() in (None, [])
    assert workflow.parser.get_parsed_content("train#trainer#max_epochs") == 2


def test_segmentation_network_is_a_monai_unet_declared_in_configs(demo_root: Path):
    parser = ConfigParser()
    parser.read_config(REPO / "configs" / "segmentation.json")
    parser["device"] = "cpu"
    parser["dataset_dir"] = str(demo_root)  # its classes and channels come from dataset.json
    net = parser.get_parsed_content("segmentation_network")
    assert isinstance(net, UNet)
    logits = net(torch.zeros(2, 1, *TINY["spatial_size"]))
    loss = parser.get_parsed_content("segmentation_loss")(logits, torch.zeros(2, 1, *TINY["spatial_size"]))
    assert logits.shape == (2, 4, *TINY["spatial_size"]) and torch.isfinite(loss)
