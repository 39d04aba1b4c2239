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
"""Fair baselines: the shared discriminator knows the center when asked to, and every method gets the same budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from tests.conftest import REPO, visit_workflow

SEQUENTIAL = str(REPO / "configs" / "train_sequential.json")


def _joint_overrides() -> dict:
    parser = ConfigParser()
    parser.read_config([SEQUENTIAL, str(REPO / "configs" / "baselines" / "joint.json")])
    return {k: v for k, v in parser["visit_overrides"].items() if k != "bundle_root"}


def test_joint_training_turns_the_center_code_of_its_shared_discriminator_on():
    assert _joint_overrides() == {"shared_discriminator": True, "discriminator_center_code": True}
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "train.json"))
    assert parser["discriminator_center_code"] is False  # every other method: today's plain one-hot label


@pytest.mark.parametrize("center_code", [True, False])
def test_shared_discriminator_input_tells_two_centers_apart_only_with_the_center_code(
    demo_root: Path, tmp_path: Path, center_code: bool
):
    workflow = visit_workflow(
        [demo_root / "center_a", demo_root / "center_b"],
        tmp_path,
        shared_discriminator=True,
        discriminator_center_code=center_code,
    )
    trainer = workflow.parser.get_parsed_content("train#trainer")
    (discriminator,) = trainer.d_network  # one discriminator shared by both centers
    item = workflow.parser.get_parsed_content("train#datasets")[0][0]
    # the same label map and image, once as center_a's (code 0) and once as center_b's (code 1)
    batch = ({"image": torch.stack([item["image"]] * 2), "label": torch.stack([item["label"]] * 2), "center": [0, 1]},)
    seen = []
    hook = discriminator.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    trainer._iteration(trainer, batch)
    hook.remove()
    d_input = seen[0]  # the discriminator step: [condition, image] of (fake a, fake b, real a, real b)
    k, centers = workflow.parser["num_classes"], workflow.parser["max_centers"]
    assert d_input.shape[1] == (k * centers if center_code else k) + 1
    condition = d_input[:, :-1]
    real_a, real_b = condition[2], condition[3]
    assert torch.equal(d_input[2, -1:], d_input[3, -1:])  # the very same image
    assert torch.equal(real_a, real_b) is not center_code
    assert torch.equal(real_a.sum(0), real_b.sum(0))  # both encode the same label map
