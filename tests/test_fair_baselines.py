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

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from scripts.evaluation.protocol import Evaluation, expected_images
from scripts.handoff import load_handoff
from tests.conftest import META, REPO, TINY, visit_workflow

SEQUENTIAL = str(REPO / "configs" / "train_sequential.json")


def _joint_overrides() -> dict:
    parser = ConfigParser()
    parser.read_config([SEQUENTIAL, str(REPO / "configs" / "baselines" / "joint.json")])
    # what every sequence passes to its visits
    shared = {"bundle_root", "num_classes", "image_channels", "label_mapping"}
    return {k: v for k, v in parser["visit_overrides"].items() if k not in shared}


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
    k, centers = workflow.parser.get_parsed_content("num_classes"), workflow.parser["max_centers"]
    assert d_input.shape[1] == (k * centers if center_code else k) + 1
    condition = d_input[:, :-1]
    real_a, real_b = condition[2], condition[3]
    assert torch.equal(d_input[2, -1:], d_input[3, -1:])  # the very same image
    assert torch.equal(real_a, real_b) is not center_code
    assert torch.equal(real_a.sum(0), real_b.sum(0))  # both encode the same label map


def _evaluation(
    demo_root: Path,
    out: Path,
    methods: list[str],
    budget_reference: str | None = "tdgan_bank",
    own: dict[str, dict] | None = None,
):
    files = {
        "tdgan_bank": [],
        "tdgan_b4": [],
        "asyndgan": ["asyndgan.json"],
        "joint": ["joint.json"],
        "two_online": ["two_online.json"],
    }
    return Evaluation(
        data_root=demo_root,
        output_dir=out,
        report_dir=out / "report",
        methods={
            m: {"label": m, "configs": [f"configs/baselines/{f}" for f in files[m]]}
            | ({"visit_overrides": own[m]} if own and m in own else {})
            for m in methods
        },
        sequence_config=SEQUENTIAL,
        inference_config=str(REPO / "configs" / "inference.json"),
        segmentation_config=str(REPO / "configs" / "segmentation.json"),
        meta_file=META,
        bundle_root=str(REPO),
        visit_overrides={"bundle_root": str(REPO), **TINY},
        spatial_size=TINY["spatial_size"],
        budget_reference=budget_reference,
    )


def test_every_method_of_a_run_makes_the_reference_methods_generator_updates(demo_root: Path, tmp_path: Path):
    evaluation = _evaluation(demo_root, tmp_path, ["tdgan_bank", "asyndgan", "joint"])
    plans = evaluation.budgets()
    # 8 training pairs per center, batch 2, 2 epochs: TDGAN 3 visits x 4 steps per epoch; AsynDGAN's step takes a
    # batch of every center, so its own epoch is 4 steps for all 3; joint's shared discriminator batches the union
    assert [p["natural_generator_updates"] for p in plans.values()] == [24, 8, 24]
    assert plans["asyndgan"]["epoch_length"] == 12 and plans["joint"]["epoch_length"] is None
    updates = {}
    for name in plans:
        sequence = json.loads(evaluation.train_generator(name, seed=0, plan=plans[name]).read_text())
        visits = load_handoff(sequence["final_handoff"]).visits
        updates[name] = sum(v["iterations"] for v in visits)  # one generator update per iteration
        spent = evaluation.spent(name, sequence, plans[name], 0)
        assert spent["generator_updates"] == updates[name]
        assert spent["images_seen"] == updates[name] * TINY["batch_size"] * (3 if name == "asyndgan" else 1)
        assert expected_images(plans[name]) == spent["images_seen"]  # the estimate the workers' order uses
        assert spent["discriminator_center_code"] is (name == "joint")
    assert updates == {"tdgan_bank": 24, "asyndgan": 24, "joint": 24}

    # the same hand-offs read back under a plan without the budget: refused, not reported as AsynDGAN's own
    unbudgeted = _evaluation(demo_root, tmp_path, ["asyndgan"], budget_reference=None)
    plan = unbudgeted.budgets()["asyndgan"]
    sequence = json.loads(unbudgeted.train_generator("asyndgan", seed=0, plan=plan).read_text())  # resumed
    with pytest.raises(ValueError, match="record 24 generator updates but the budget is 8"):
        unbudgeted.spent("asyndgan", sequence, plan, 0)


def test_a_multi_visit_method_off_the_budget_is_refused_before_anything_trains(demo_root: Path, tmp_path: Path):
    evaluation = _evaluation(demo_root, tmp_path, ["tdgan_bank", "two_online"])
    with pytest.raises(ValueError, match="'two_online' makes 16 generator updates in 2 visit"):
        evaluation.budgets()
    assert not list(tmp_path.iterdir())


def test_a_methods_own_visit_settings_win_over_the_evaluations_and_are_what_it_trains(demo_root: Path, tmp_path: Path):
    # a sweep's setting (e.g. a batch size at fixed epsilon): the evaluation's visit_overrides hold batch 2 for all
    own = {"tdgan_b4": {"batch_size": 4}}
    with pytest.raises(ValueError, match="'tdgan_b4' makes 12 generator updates in 3 visit"):
        _evaluation(demo_root, tmp_path, ["tdgan_bank", "tdgan_b4"], own=own).budgets()
    evaluation = _evaluation(demo_root, tmp_path, ["tdgan_bank", "tdgan_b4"], budget_reference=None, own=own)
    plans = evaluation.budgets()
    assert [(p["batch_size"], p["generator_updates"]) for p in plans.values()] == [(2, 24), (4, 12)]
    sequence = json.loads(evaluation.train_generator("tdgan_b4", seed=0, plan=plans["tdgan_b4"]).read_text())
    visits = load_handoff(sequence["final_handoff"]).visits
    assert [v["iterations"] for v in visits] == [4, 4, 4]  # 8 pairs in batches of 4, 2 epochs, per visit
    assert evaluation.spent("tdgan_b4", sequence, plans["tdgan_b4"], 0)["generator_updates"] == 12
    bad = _evaluation(demo_root, tmp_path / "bad", ["tdgan_bank"], budget_reference=None, own={"tdgan_bank": [4]})
    with pytest.raises(ValueError, match="must be a dict of visit settings"):
        bad.budgets()
