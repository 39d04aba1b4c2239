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
"""docs/segmentation.md's recipe run as written in a fresh copy at a tiny size: synthetic images of the other centers,
a UNet on own real + synthetic with its best-validation checkpoint, its scores on the real test images, new cases
segmented with their affine; and the segmentation workflow's behaviour at val_fraction 0 unchanged."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, segmentation_workflow
from test_docs_commands import _with

from scripts.data.cases import case_datalist
from scripts.data.centers import held_out_split
from scripts.data.demo import ensure_demo_centers
from scripts.evaluation.image_quality import load_pairs
from scripts.evaluation.segmentation_report import load_weights
from scripts.evaluation.segmentation_scores import center_scores, segment

DOC = REPO / "docs" / "segmentation.md"
SEGMENTATION = "configs/segmentation.json"
EVALUATE = "['configs/segmentation.json','configs/segmentation_evaluate.json']"
INFERENCE = "['configs/segmentation.json','configs/segmentation_inference.json']"
SYNTHESIS = "configs/inference.json"
TINY = {
    SYNTHESIS: {"device": "cpu"},  # the released weights at their own 64x64
    SEGMENTATION: {"spatial_size": "[32,32]", "iterations": "4", "batch_size": "2", "device": "cpu"},
    EVALUATE: {"spatial_size": "[32,32]", "device": "cpu"},
    INFERENCE: {"spatial_size": "[32,32]", "device": "cpu"},
}
"""The tiny settings each documented command runs with (replacing the documented value where it gives one)."""

AFFINE = np.array([[0.8, 0, 0, -12.5], [0, 0.7, 0, 30.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
"""The affine the new cases are stored with (spacing and origin a writer must keep)."""

NEW_CASE = "new_case"
"""An image of 40x36 pixels beside center_a's test images: resized for the network, its label map resized back."""


def recipe() -> list[list[str]]:
    """The commands of docs/segmentation.md's fenced bash blocks, in order, as argument lists."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", DOC.read_text(), re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#\s.*$", "", line).strip()
            if line:
                commands.append(shlex.split(line))
    return commands


def _config(tokens: list[str]) -> str:
    return tokens[tokens.index("--config_file") + 1]


def _option(tokens: list[str], key: str) -> str:
    return tokens[tokens.index(f"--{key}") + 1]


def run_documented(bundle: Path, config: str) -> tuple[list[str], str]:
    """Run every documented command of ``config`` in ``bundle`` as written (plus the tiny settings); returns the last
    command's arguments and its log."""
    commands = [c for c in recipe() if _config(c) == config]
    assert commands, f"docs/segmentation.md documents no command with --config_file {config}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    for command in commands:
        assert command[:4] == ["python", "-m", "monai.bundle", "run"], command
        tokens = _with(command, TINY[config])
        done = subprocess.run(
            [sys.executable, *tokens[1:]], cwd=bundle, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{shlex.join(command)}\n{done.stderr[-3000:]}"
    return tokens, done.stdout + done.stderr


def _files(folder: Path) -> set[str]:
    """Every file under ``folder`` (links not followed), relative to it."""
    return {os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder) for f in files}


def _network(center: Path, ckpt: Path, tmp: Path) -> torch.nn.Module:
    """configs/segmentation.json's UNet (classes from ``center``) with the weights of ``ckpt``."""
    network = segmentation_workflow(center, tmp).parser.get_parsed_content("segmentation_network")
    load_weights(network, ckpt)
    return network


@pytest.fixture
def one_thread():
    """Torch on one thread, as the documented commands ran (OMP_NUM_THREADS=1): the same floating-point sums."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _training_items(folder: Path) -> int:
    return len(json.loads((folder / "dataset.json").read_text())["training"])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the bundle with tiny demo centers in data/demo; center_a's test images are stored with
    :data:`AFFINE`, the first as (H, W, 1), and its imagesTs folder holds one more case of another size (listed
    nowhere: a new case)."""
    root = tmp_path_factory.mktemp("site") / "bundle"
    root.mkdir()
    for part in ("configs", "scripts", "models"):
        (root / part).symlink_to(REPO / part)
    demo = ensure_demo_centers(root / "data" / "demo", num_centers=3, num_train=8, num_test=2, size=32, seed=0)
    for i, item in enumerate(json.loads((demo / "center_a" / "dataset.json").read_text())["test"]):
        path = demo / "center_a" / item["image"]
        image = np.asarray(nib.load(path).dataobj, dtype=np.float32)
        nib.save(nib.Nifti1Image(image[..., None] if i == 0 else image, AFFINE), path)
    nib.save(nib.Nifti1Image(np.pad(image, ((0, 8), (0, 4))), AFFINE), path.parent / f"{NEW_CASE}.nii.gz")
    return root


@pytest.fixture(scope="module")
def synthetic(bundle: Path) -> list[Path]:
    """Step 1: the documented synthesis runs (the other centers' styles on new label maps of center_a)."""
    commands = [c for c in recipe() if _config(c) == SYNTHESIS]
    run_documented(bundle, SYNTHESIS)
    return [bundle / _option(c, "output_dir") for c in commands]


@pytest.fixture(scope="module")
def trained(bundle: Path, synthetic: list[Path]) -> tuple[Path, list[Path], str]:
    """Step 2: the documented training on own real + synthetic; (its output folder, its folders, its log)."""
    tokens, log = run_documented(bundle, SEGMENTATION)
    folders = [bundle / d for d in eval(_option(tokens, "dataset_dir"))]  # noqa: S307 - the documented literal list
    return bundle / _option(tokens, "output_dir"), folders, log


def test_the_documented_synthesis_writes_each_other_center_style_from_new_label_maps(synthetic: list[Path]):
    assert len(synthetic) >= 2
    for folder in synthetic:
        meta = json.loads((folder / "dataset.json").read_text())
        assert meta["label_source"] == "new" and meta["shareable"] is True
        assert {it["center"] for it in meta["training"]} == {folder.name} != {"center_a"}


def test_own_real_plus_synthetic_training_pools_every_folder_and_keeps_the_best_validation_checkpoint(
    bundle: Path, trained: tuple[Path, list[Path], str]
):
    out, folders, log = trained
    assert bundle / "data" / "demo" / "center_a" in folders and len(folders) == 3
    assert all(f.parent.name.endswith("synthetic") for f in folders[1:])
    pooled = sum(_training_items(f) for f in folders)
    held = len(held_out_split(list(range(pooled)), 0.1)[1])
    per_epoch = math.ceil((pooled - held) / 2)
    assert pooled > _training_items(folders[0]) and f"Iter: {per_epoch}/{per_epoch} " in log  # the pooled list
    assert {"segmentation.pt", "segmentation_best.pt"} <= _files(out) and list((out / "validation").glob("*_raw.csv"))
    assert stat.S_IMODE((out / "segmentation_best.pt").stat().st_mode) == 0o600


def test_the_best_checkpoint_holds_the_weights_of_the_best_validation_dice(demo_root: Path, tmp_path: Path):
    workflow = segmentation_workflow(demo_root / "center_a", tmp_path / "seg", val_fraction=0.25, iterations=12)
    workflow.run()
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    best, epochs = evaluator.state.best_metric, workflow.parser.get_parsed_content("train#trainer").state.epoch
    assert epochs == 4 and evaluator.state.best_metric_epoch >= 1
    network = workflow.parser.get_parsed_content("segmentation_network")
    final = {k: v.clone() for k, v in network.state_dict().items()}
    load_weights(network, tmp_path / "seg" / "segmentation_best.pt")
    evaluator.run()  # the held-out pairs again, with the best checkpoint's weights
    assert evaluator.state.metrics["val_mean_dice"] == pytest.approx(best, abs=1e-6)
    same = all(torch.equal(final[k], v) for k, v in network.state_dict().items())
    assert same == (evaluator.state.best_metric_epoch == epochs)


def test_val_fraction_0_writes_only_the_final_weights_and_a_one_folder_list_trains_identically(
    demo_root: Path, tmp_path: Path
):
    center = demo_root / "center_a"
    weights = []
    for name, dataset_dir in (("folder", center), ("list", [str(center)])):
        workflow = segmentation_workflow(center, tmp_path / name, val_fraction=0, iterations=4)
        workflow.parser["dataset_dir"] = dataset_dir
        workflow.initialize()
        workflow.run()
        out = tmp_path / name
        assert {f for f in _files(out) if not f.startswith("tensorboard/")} == {"segmentation.pt"}
        weights.append(torch.load(out / "segmentation.pt", weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_documented_evaluation_writes_dice_and_hd95_per_class_and_image_with_intervals(
    bundle: Path, trained: tuple[Path, list[Path], str], tmp_path: Path, one_thread: None
):
    tokens, _ = run_documented(bundle, EVALUATE)
    out, ckpt, center = (bundle / _option(tokens, k) for k in ("output_dir", "ckpt_file", "dataset_dir"))
    scores = json.loads((out / "segmentation_scores.json").read_text())
    classes = scores["centers"]["center_a"]["classes"]
    assert list(classes) == ["brain", "csf", "lesion"] and scores["data_list_key"] == "test"
    test_images = {it["image"] for it in json.loads((center / "dataset.json").read_text())["test"]}
    network = _network(center, ckpt, tmp_path)
    expected = center_scores(network, center, ["background", *classes], 2, [32, 32])  # the protocol's scores
    for name, s in classes.items():
        assert s["n"] == len(s["images"]) == len(s["dice_per_image"]) == len(s["hd95_per_image"]) >= 1
        assert set(s["images"]) <= test_images
        assert s["dice_per_image"] == expected[name]["dice_per_image"]
        assert s["hd95_per_image"] == expected[name]["hd95_per_image"]
        assert (s["dice"], s["hd95"]) == (expected[name]["dice"], expected[name]["hd95"])
        for m in ("dice", "hd95"):
            low, high = s[f"{m}_bootstrap"]
            assert low <= min(s[f"{m}_per_image"]) + 1e-3 and max(s[f"{m}_per_image"]) - 1e-3 <= high
            assert low - 1e-3 <= s[m] <= high + 1e-3
    table = (out / "segmentation_scores.md").read_text()
    assert all(f"| center_a | {name} | {s['n']} | {s['dice']} [" in table for name, s in classes.items())
    assert stat.S_IMODE((out / "segmentation_scores.json").stat().st_mode) == 0o600


def test_the_documented_inference_writes_one_label_map_per_case_with_its_affine_and_nothing_elsewhere(
    bundle: Path, trained: tuple[Path, list[Path], str], tmp_path: Path, one_thread: None
):
    before = _files(bundle)
    tokens, _ = run_documented(bundle, INFERENCE)
    out, ckpt, cases = (bundle / _option(tokens, k) for k in ("output_dir", "ckpt_file", "dataset_dir"))
    images = sorted(cases.glob("*.nii.gz"))
    assert _files(out) == {p.name.replace(".nii.gz", "_seg.nii.gz") for p in images}
    assert _files(bundle) - before == {os.path.relpath(out / f, bundle) for f in _files(out)}  # nothing elsewhere
    network = _network(cases.parent, ckpt, tmp_path)
    pixels, _, names = load_pairs(cases.parent, 2, [32, 32], "test", minv=0.0)  # the test list is these images
    expected = dict(zip((Path(n).name for n in names), segment(network, pixels)))
    assert len(images) == len(expected) + 1
    for image in images:
        source, label = nib.load(image), nib.load(out / image.name.replace(".nii.gz", "_seg.nii.gz"))
        assert np.allclose(label.affine, source.affine) and np.allclose(label.affine, AFFINE)
        assert label.shape == source.shape[:2] and label.get_data_dtype() == np.uint8
        values = np.asarray(label.dataobj)
        if image.name in expected:  # at the network's size: the arg-max of the network itself
            assert np.array_equal(values, expected[image.name][0].numpy())
        else:
            assert label.shape == (40, 36) and set(np.unique(values)) <= {0, 1, 2, 3} and len(np.unique(values)) > 1


def test_cases_sharing_a_name_and_weights_of_another_network_are_refused(tmp_path: Path, demo_root: Path):
    image = nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4))
    nib.save(image, tmp_path / "case.nii.gz")
    assert case_datalist(tmp_path) == [{"image": str(tmp_path / "case.nii.gz")}]
    nib.save(image, tmp_path / "case.nii")
    with pytest.raises(ValueError, match="share the name 'case'"):
        case_datalist(tmp_path)
    with pytest.raises(ValueError, match="no image to segment"):
        case_datalist(demo_root)  # a folder of centers: no dataset.json, no image
    wrong = segmentation_workflow(demo_root / "center_a", tmp_path / "w", num_classes=3)
    torch.save(wrong.parser.get_parsed_content("segmentation_network").state_dict(), tmp_path / "three.pt")
    right = segmentation_workflow(demo_root / "center_a", tmp_path / "r").parser.get_parsed_content(
        "segmentation_network"
    )
    with pytest.raises(ValueError, match="do not fit this UNet"):
        load_weights(right, tmp_path / "three.pt")
