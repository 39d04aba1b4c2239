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
"""A site's own label values (``label_mapping``) and intensity options, through the visit, synthesis and segmentation,
on real NIfTI files at a tiny size."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import META, REPO, TINY, TRAIN, run_visit, segmentation_workflow
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.transforms import ScaleIntensityd, ScaleIntensityRanged

from scripts.data.centers import read_label_maps
from scripts.data.checks import InputError, check_visit_inputs
from scripts.data.transforms import LabelMappingd, preprocessing
from scripts.handoff import load_handoff
from scripts.resume import VisitIdentity

BRATS_MAPPING = {"0": 0, "1": 1, "2": 2, "4": 3}
"""BraTS label values (0 background, 1 necrotic core, 2 edema, 4 enhancing) onto the bundle's 4 classes; the test
folders code the demo's classes 0/1/2/3 as 0/1/2/4."""


def _recode(src: Path, dst: Path, stray: int | None = None) -> Path:
    """A copy of the center folder ``src`` whose label files code class 3 as 4 (BraTS-style 0/1/2/4) and whose
    dataset.json declares those values; with ``stray``, one pixel of the first training label holds that value."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "brain", "2": "csf", "4": "lesion"}
    (dst / "dataset.json").write_text(json.dumps(meta, indent=2))
    for path in sorted((dst / "labelsTr").glob("*.nii.gz")) + sorted((dst / "labelsTs").glob("*.nii.gz")):
        image = nib.load(path)
        label = np.asarray(image.dataobj).copy()
        label[label == 3] = 4
        if stray is not None and path.name == Path(meta["training"][0]["label"]).name:
            label.flat[0] = stray
        nib.save(nib.Nifti1Image(label, image.affine, image.header), path)
    return dst


@pytest.fixture(scope="module")
def brats(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """center_a of the demo with BraTS-coded labels, in a folder of its own (same center name: same center code)."""
    return _recode(demo_root / "center_a", tmp_path_factory.mktemp("brats") / "center_a")


def _visit_cli(dataset_dir: Path, output_dir: Path, **settings) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` of configs/train.json with the tiny settings, as a user runs one visit."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", TRAIN, "--meta_file", META]
    cmd += ["--logging_file", str(REPO / "configs" / "logging.conf"), "--bundle_root", str(REPO)]
    args = {**TINY, "dataset_dir": str(dataset_dir), "output_dir": str(output_dir), **settings}
    for key, value in args.items():
        cmd += [f"--{key}", json.dumps(value).replace(" ", "") if not isinstance(value, str) else value]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_a_visit_on_brats_coded_labels_with_label_mapping_trains_exactly_as_on_the_class_coded_labels(
    demo_root: Path, brats: Path, tmp_path: Path
):
    mapped = _visit_cli(brats, tmp_path / "mapped", label_mapping=BRATS_MAPPING, epochs_decay=0)
    assert mapped.returncode == 0, mapped.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the command ran (OMP_NUM_THREADS=1): the same sums in the same order
    try:
        run_visit([demo_root / "center_a"], tmp_path / "plain", epochs_decay=0)
    finally:
        torch.set_num_threads(threads)
    a, b = load_handoff(tmp_path / "mapped" / "handoff.pt"), load_handoff(tmp_path / "plain" / "handoff.pt")
    assert a.network["num_classes"] == b.network["num_classes"] == 4  # from the mapping, not the largest value 4 + 1
    assert a.generator.keys() == b.generator.keys()
    assert all(torch.equal(a.generator[k], b.generator[k]) for k in a.generator)
    # the bank's new label maps were made from the mapped maps: classes, never the site's value 4
    assert torch.equal(a.label_bank["center_a"], b.label_bank["center_a"])
    assert int(a.label_bank["center_a"].max()) == 3


def test_a_label_value_the_mapping_does_not_name_is_refused_in_one_line_naming_the_file_and_the_values(
    brats: Path, tmp_path: Path
):
    stray = _recode(brats, tmp_path / "center_a", stray=5)  # 5: declared nowhere, mapped nowhere
    first = stray / json.loads((stray / "dataset.json").read_text())["training"][0]["label"]
    line = (
        f"{first}: label values [5] are not in label_mapping (it maps [0, 1, 2, 4]); add them to label_mapping, or "
        "fix the file."
    )
    # the checks are skipped: the visit's own preprocessing refuses the file
    done = _visit_cli(stray, tmp_path / "out", label_mapping=BRATS_MAPPING, check_data=False)
    assert done.returncode != 0
    # (a process whose CacheDataset failed may also print "terminate called ..." as it exits: MONAI's cache threads)
    assert [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")] == [f"error: {line}"]
    assert not (tmp_path / "out" / "handoff.pt").exists()
    # where label maps are read for new maps and banks (synthesis, the label bank, local reminding): the same line
    with pytest.raises(InputError) as info:
        read_label_maps(stray, 2, [32, 32], label_mapping=BRATS_MAPPING)
    assert str(info.value) == line


def test_the_input_checks_refuse_unmapped_values_one_line_per_file_before_anything_is_built(brats: Path):
    settings = {"spatial_dims": 2, "out_channels": 1, "num_classes": 4, "max_centers": 8}
    check_visit_inputs([brats], settings, label_mapping=BRATS_MAPPING)  # every value mapped: no problem
    with pytest.raises(InputError) as info:
        check_visit_inputs([brats], settings, label_mapping={"0": 0, "1": 1, "2": 2})
    lines = str(info.value).splitlines()[1:]
    assert lines[0].strip() == (
        f"{brats / 'dataset.json'}: declares label values [4] that label_mapping does not map (it maps [0, 1, 2]); "
        "add them to label_mapping."
    )
    holding = [p for p in sorted((brats / "labelsTr").glob("*.nii.gz")) if (np.asarray(nib.load(p).dataobj) == 4).any()]
    assert holding and [ln.strip() for ln in lines[1:]] == [
        f"{p}: label values [4] are not in label_mapping (it maps [0, 1, 2]); add them to label_mapping, or fix "
        "the file."
        for p in holding
    ]


def test_a_malformed_mapping_or_a_class_beyond_num_classes_is_refused_in_one_line(brats: Path):
    for mapping, expected in (
        ({"0": 0, "4": 7}, "label_mapping maps '4' to 7; expected"),
        ({"0": 0, "four": 3}, "label_mapping maps 'four' to 3; expected"),
        ({"0": 0, "4": "3"}, "label_mapping maps '4' to '3'; expected"),
        ({}, "label_mapping is {}; expected"),
    ):
        with pytest.raises(InputError) as info:
            preprocessing(2, None, label_mapping=mapping, num_classes=4)
        assert str(info.value).startswith(expected) and "\n" not in str(info.value)
        assert "classes in 0..3" in str(info.value)


def _segment(dataset_dir: Path, out: Path, **override) -> tuple[dict, int, str]:
    workflow = segmentation_workflow(dataset_dir, out, val_fraction=0.25, **override)
    num_classes = workflow.parser.get_parsed_content("num_classes")
    workflow.run()
    workflow.finalize()
    weights = torch.load(out / "segmentation.pt", weights_only=True)
    dice = (out / "validation" / "val_mean_dice_raw.csv").read_text()
    return weights, num_classes, dice


def test_segmentation_training_and_validation_read_the_same_mapping(demo_root: Path, brats: Path, tmp_path: Path):
    mapped, classes, mapped_dice = _segment(brats, tmp_path / "mapped", label_mapping=BRATS_MAPPING)
    plain, plain_classes, plain_dice = _segment(demo_root / "center_a", tmp_path / "plain")
    assert classes == plain_classes == 4
    assert all(torch.equal(mapped[k], plain[k]) for k in plain)
    # validated on the same held-out pair with the same Dice (file names aside: the folders differ)
    assert [ln.split("\t")[1:] for ln in mapped_dice.splitlines()] == [
        ln.split("\t")[1:] for ln in plain_dice.splitlines()
    ]


def test_synthesis_reads_the_folders_label_maps_through_the_mapping(demo_root: Path, brats: Path, tmp_path: Path):
    workflow = ConfigWorkflow(
        config_file=str(REPO / "configs" / "inference.json"),
        meta_file=META,
        logging_file=False,
        workflow_type="infer",
        **{"bundle_root": str(REPO), "dataset_dir": str(brats), "output_dir": str(tmp_path / "synthetic")},
        device="cpu",
        label_source="given",
        label_mapping=BRATS_MAPPING,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    meta = json.loads((tmp_path / "synthetic" / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "brain", "2": "csf", "3": "lesion"}  # the classes' names
    written = [np.asarray(nib.load(tmp_path / "synthetic" / e["label"]).dataobj) for e in meta["training"]]
    expected = read_label_maps(demo_root / "center_a", 2, [64, 64])[0]  # the class-coded maps, at synthesis' size
    assert len(written) == len(expected)
    assert all(np.array_equal(np.squeeze(w), e[0].numpy()) for w, e in zip(written, expected))


def _evaluate(test_dir: Path, ckpt: Path, out: Path, **override) -> dict:
    """configs/segmentation_evaluate.json (an override of segmentation.json) at the tiny size, run in-process."""
    workflow = ConfigWorkflow(
        config_file=[str(REPO / "configs" / "segmentation.json"), str(REPO / "configs" / "segmentation_evaluate.json")],
        meta_file=META,
        logging_file=False,
        workflow_type="infer",
        **{"bundle_root": str(REPO), "dataset_dir": str(test_dir), "output_dir": str(out), "ckpt_file": str(ckpt)},
        **{"device": "cpu", "spatial_size": TINY["spatial_size"], "bootstrap_resamples": 50, **override},
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return json.loads((out / "segmentation_scores.json").read_text())["centers"]["center_a"]["classes"]


def test_segmentation_evaluation_scores_a_site_coded_test_folder_through_the_mapping(
    demo_root: Path, brats: Path, tmp_path: Path
):
    trained = segmentation_workflow(demo_root / "center_a", tmp_path / "unet", val_fraction=0)
    trained.run()
    trained.finalize()
    ckpt = tmp_path / "unet" / "segmentation.pt"
    mapped = _evaluate(brats, ckpt, tmp_path / "mapped", label_mapping=BRATS_MAPPING)
    plain = _evaluate(demo_root / "center_a", ckpt, tmp_path / "plain")
    assert list(mapped) == list(plain) == ["brain", "csf", "lesion"]  # the classes' names, lesion from value 4
    for name in plain:
        assert mapped[name]["dice_per_image"] == plain[name]["dice_per_image"]
        assert mapped[name]["hd95_per_image"] == plain[name]["hd95_per_image"]


def test_the_hand_off_evaluation_scores_a_site_coded_test_folder_through_the_mapping(
    demo_root: Path, brats: Path, tmp_path: Path
):
    run_visit([demo_root / "center_a"], tmp_path / "visit", epochs_constant=1, epochs_decay=0)

    def metrics(dataset_dir: Path, out: Path, **settings) -> dict:
        workflow = ConfigWorkflow(
            config_file=str(REPO / "configs" / "evaluate.json"),
            meta_file=META,
            logging_file=False,
            workflow_type=None,
            bundle_root=str(REPO),
            handoff=str(tmp_path / "visit" / "handoff.pt"),
            dataset_dir=str(dataset_dir),
            output_dir=str(out),
            device="cpu",
            **settings,
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        return json.loads((out / "metrics.json").read_text())["metrics"]

    plain = metrics(demo_root / "center_a", tmp_path / "plain")
    assert metrics(brats, tmp_path / "mapped", label_mapping=BRATS_MAPPING) == plain


def test_without_a_mapping_label_values_are_read_as_stored_and_the_chain_is_the_one_before(
    demo_root: Path, brats: Path
):
    stored = read_label_maps(brats, 2, [32, 32])[0]
    assert sorted(torch.unique(stored).tolist()) == [0, 1, 2, 4]  # nothing mapped, nothing refused
    assert torch.equal(
        read_label_maps(brats, 2, [32, 32], label_mapping=BRATS_MAPPING)[0],
        read_label_maps(demo_root / "center_a", 2, [32, 32])[0],
    )
    chain = preprocessing(2, [32, 32]).transforms
    names = [type(t).__name__ for t in chain]
    assert names == [
        "LoadImaged",
        "EnsureChannelFirstd",
        "EnsureSpatialDimsd",
        "Resized",
        "ScaleIntensityd",
        "EnsureTyped",
    ]
    assert not any(isinstance(t, LabelMappingd) for t in chain)
    assert chain[4].scaler.channel_wise is False


def _two_channel_image(folder: Path) -> dict[str, str]:
    """A (4, 4) two-channel NIfTI image (the fifth axis holds the channels) whose channels span different ranges."""
    image = np.zeros((4, 4, 1, 1, 2), dtype=np.float32)
    image[..., 0, 0, 0] = np.linspace(-1000.0, 1000.0, 16).reshape(4, 4)  # a CT-like channel, in HU
    image[..., 0, 0, 1] = np.linspace(0.0, 10.0, 16).reshape(4, 4)
    nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "image.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.uint8), np.eye(4)), folder / "label.nii.gz")
    return {"image": str(folder / "image.nii.gz"), "label": str(folder / "label.nii.gz")}


def test_intensity_is_one_min_max_by_default_per_channel_on_request_and_a_clipped_window_for_ct(tmp_path: Path):
    item = _two_channel_image(tmp_path)
    image = preprocessing(2, None)(item)["image"]
    assert image.shape == (2, 4, 4)
    assert float(image.min()) == -1.0 and float(image.max()) == 1.0
    assert float(image[1].max() - image[1].min()) < 0.02  # one range for both: the small channel is squeezed flat
    channel = preprocessing(2, None, intensity_channel_wise=True)(item)["image"]
    for c in range(2):
        assert float(channel[c].min()) == pytest.approx(-1.0) and float(channel[c].max()) == pytest.approx(1.0)
    window = preprocessing(2, None, (0.0, 1.0), keys=("image",), intensity_window=[-100, 300])(item)["image"]
    hu = torch.linspace(-1000.0, 1000.0, 16).reshape(4, 4)
    assert torch.allclose(window[0], ((hu.clamp(-100, 300) + 100) / 400), atol=1e-6)
    with pytest.raises(InputError, match=r"^intensity_window is \[300, -100\]; expected null or \[low, high\]"):
        preprocessing(2, None, intensity_window=[300, -100])
    with pytest.raises(InputError, match="intensity_window .* and intensity_channel_wise are both set"):
        preprocessing(2, None, intensity_window=[-100, 300], intensity_channel_wise=True)


@pytest.mark.parametrize(
    ("configs", "section"),
    [
        (["train.json"], "train#preprocessing"),
        (["segmentation.json"], "train#loading"),
        (["segmentation.json"], "validate#preprocessing"),
        (["segmentation.json", "segmentation_inference.json"], "infer#preprocessing"),
    ],
)
def test_the_workflows_pass_the_intensity_options_and_the_mapping_to_the_shared_preprocessing(
    configs: list[str], section: str
):
    def chain(**override) -> list:
        parser = ConfigParser()
        parser.read_config([str(REPO / "configs" / c) for c in configs])
        parser.update({"bundle_root": str(REPO), "num_classes": 4, "image_channels": 1, **override})
        return list(parser.get_parsed_content(section).transforms)

    (scale,) = [t for t in chain() if isinstance(t, ScaleIntensityd)]
    assert scale.scaler.channel_wise is False
    (scale,) = [t for t in chain(intensity_channel_wise="true") if isinstance(t, ScaleIntensityd)]
    assert scale.scaler.channel_wise is True
    (window,) = [t for t in chain(intensity_window=[-1000, 400]) if isinstance(t, ScaleIntensityRanged)]
    assert (window.scaler.a_min, window.scaler.a_max, window.scaler.clip) == (-1000.0, 400.0, True)
    mapping = [t for t in chain(label_mapping=BRATS_MAPPING) if isinstance(t, LabelMappingd)]
    if section != "infer#preprocessing":  # new cases to segment have no label map
        assert [t.label_mapping for t in mapping] == [{0: 0, 1: 1, 2: 2, 4: 3}]


def test_a_visit_recorded_before_these_settings_existed_is_the_same_visit_at_their_defaults(demo_root: Path):
    settings = {"ngf": 8, "label_mapping": None, "intensity_channel_wise": False, "intensity_window": None}
    before = VisitIdentity([demo_root / "center_a"], None, {"ngf": 8}).record()
    assert VisitIdentity([demo_root / "center_a"], None, settings).differences(before) == []
    mapped = VisitIdentity([demo_root / "center_a"], None, {**settings, "label_mapping": BRATS_MAPPING})
    assert mapped.differences(before) == [f"settings: label_mapping '(unset)' there, {BRATS_MAPPING!r} here"]
