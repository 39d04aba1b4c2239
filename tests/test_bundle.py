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


def test_generator_input_channels_in_metadata_match_the_default_config():
    meta = json.loads(Path(META).read_text())["network_data_format"]
    config = ConfigParser.load_config_file(REPO / "configs" / "train.json")
    assert meta["inputs"]["image"]["num_channels"] == config["num_classes"] * config["max_centers"]
    assert meta["outputs"]["pred"]["num_channels"] == config["image_channels"]
    assert meta["inputs"]["image"]["spatial_shape"] == config["spatial_size"]


def test_train_workflow_has_every_property_the_model_zoo_checks(demo_root: Path, tmp_path: Path):
    workflow = visit_workflow([demo_root / "center_a"], tmp_path)
    assert workflow.check_properties() in (None, [])
    assert workflow.parser.get_parsed_content("train#trainer#max_epochs") == 2


def test_segmentation_network_is_a_monai_unet_declared_in_configs():
    parser = ConfigParser()
    parser.read_config(REPO / "configs" / "segmentation.json")
    parser["device"] = "cpu"
    net = parser.get_parsed_content("segmentation_network")
    assert isinstance(net, UNet)
    logits = net(torch.zeros(2, 1, *TINY["spatial_size"]))
    loss = parser.get_parsed_content("segmentation_loss")(logits, torch.zeros(2, 1, *TINY["spatial_size"]))
    assert logits.shape == (2, 4, *TINY["spatial_size"]) and torch.isfinite(loss)
