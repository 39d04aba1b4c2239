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
"""Tests of the built-in demo data generator (scripts.data.demo)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from scripts.data.demo import (
    CENTER_STYLES,
    CLASS_NAMES,
    center_style,
    main,
    make_demo_centers,
    procedural_anatomy,
    save_preview,
)

SIZE = 64
NUM_TRAIN = 8
NUM_TEST = 3


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small three-center demo dataset, written once for the module."""
    return make_demo_centers(tmp_path_factory.mktemp("demo"), num_train=NUM_TRAIN, num_test=NUM_TEST, size=SIZE)


def _load(path: Path) -> np.ndarray:
    """Load a NIfTI file as a numpy array."""
    return np.asarray(nib.load(str(path)).get_fdata())


def _pairs(root: Path, center: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """All (image, label) arrays of one center, training then test."""
    dataset = json.loads((root / center / "dataset.json").read_text())
    return [
        (_load(root / center / entry["image"]), _load(root / center / entry["label"]).round().astype(int))
        for entry in dataset["training"] + dataset["test"]
    ]


def _class_means(root: Path, center: str) -> dict[int, float]:
    """Mean image intensity of each label over all slices of a center."""
    pairs = _pairs(root, center)
    return {
        value: float(np.mean(np.concatenate([image[label == value] for image, label in pairs]))) for value in (1, 2, 3)
    }


def test_make_demo_centers_returns_path_and_writes_decathlon_layout(demo_dir: Path) -> None:
    assert isinstance(demo_dir, Path)
    for center in ("center_a", "center_b", "center_c"):
        dataset = json.loads((demo_dir / center / "dataset.json").read_text())
        assert dataset["name"] == center
        assert dataset["labels"] == CLASS_NAMES
        assert dataset["modality"] == {"0": "MRI"}
        assert (dataset["numTraining"], dataset["numTest"]) == (NUM_TRAIN, NUM_TEST)
        assert len(dataset["training"]) == NUM_TRAIN and len(dataset["test"]) == NUM_TEST
        assert dataset["training"][0] == {
            "image": f"imagesTr/{center}_000.nii.gz",
            "label": f"labelsTr/{center}_000.nii.gz",
            "subject": f"{center}_training_000",
        }
        assert all(e["image"].startswith("imagesTs/") and e["label"].startswith("labelsTs/") for e in dataset["test"])


def test_dataset_loads_with_monai_datalist_and_transforms(demo_dir: Path) -> None:
    loader = Compose([LoadImaged(keys=["image", "label"]), EnsureChannelFirstd(keys=["image", "label"])])
    allowed = {int(key) for key in CLASS_NAMES}
    for center in ("center_a", "center_b", "center_c"):
        base = demo_dir / center
        seen: set[int] = set()
        for key in ("training", "test"):
            items = load_decathlon_datalist(str(base / "dataset.json"), data_list_key=key, base_dir=str(base))
            assert len(items) == (NUM_TRAIN if key == "training" else NUM_TEST)
            for item in items:
                data = loader(item)
                assert tuple(data["image"].shape) == (1, SIZE, SIZE)
                assert tuple(data["label"].shape) == (1, SIZE, SIZE)
                image = data["image"].numpy()
                assert image.dtype == np.float32
                assert image.min() >= 0.0 and image.max() < 2.0
                values = set(np.unique(data["label"].numpy()).astype(int).tolist())
                assert values <= allowed
                seen |= values
        assert {1, 2, 3} <= seen, f"{center} lacks a class: {seen}"


def test_written_dtypes_are_float32_images_and_uint8_labels(demo_dir: Path) -> None:
    image = nib.load(str(demo_dir / "center_a" / "imagesTr" / "center_a_000.nii.gz"))
    label = nib.load(str(demo_dir / "center_a" / "labelsTr" / "center_a_000.nii.gz"))
    assert image.get_data_dtype() == np.float32 and image.shape == (SIZE, SIZE)
    assert label.get_data_dtype() == np.uint8 and label.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(image.affine, np.eye(4))


def test_same_seed_gives_identical_arrays_and_other_seed_differs(tmp_path: Path) -> None:
    kwargs = {"num_centers": 2, "num_train": 2, "num_test": 1, "size": 48}
    first = make_demo_centers(tmp_path / "one", seed=3, **kwargs)
    again = make_demo_centers(tmp_path / "two", seed=3, **kwargs)
    other = make_demo_centers(tmp_path / "three", seed=4, **kwargs)
    for center in ("center_a", "center_b"):
        for (image, label), (image2, label2), (image3, label3) in zip(
            _pairs(first, center), _pairs(again, center), _pairs(other, center), strict=True
        ):
            np.testing.assert_array_equal(image, image2)
            np.testing.assert_array_equal(label, label2)
            assert not np.array_equal(label, label3)
            assert not np.allclose(image, image3)


def test_subjects_differ_between_centers_and_between_train_and_test(demo_dir: Path) -> None:
    labels = [label for center in ("center_a", "center_b", "center_c") for _, label in _pairs(demo_dir, center)]
    assert len(labels) == 3 * (NUM_TRAIN + NUM_TEST)
    assert len({label.tobytes() for label in labels}) == len(labels)


def test_centers_differ_in_appearance(demo_dir: Path) -> None:
    brain, csf, lesion = 1, 2, 3
    a, b, c = (_class_means(demo_dir, center) for center in ("center_a", "center_b", "center_c"))
    # T1-like: CSF darker than brain, lesion darker than brain.
    assert a[csf] < 0.5 * a[brain] and a[lesion] < a[brain]
    # T2-like: CSF much brighter than brain, lesion brighter than brain.
    assert b[csf] > 1.5 * b[brain] and b[lesion] > b[brain]
    # FLAIR-like: CSF dark, lesion the brightest class.
    assert c[csf] < c[brain] < c[lesion]


def test_centers_json_order_matches_folders_and_extra_centers_get_derived_styles(tmp_path: Path) -> None:
    root = make_demo_centers(tmp_path, num_centers=5, num_train=1, num_test=0, size=32)
    order = json.loads((root / "centers.json").read_text())["order"]
    assert order == ["center_a", "center_b", "center_c", "center_d", "center_e"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == order
    for name in order:
        assert json.loads((root / name / "dataset.json").read_text())["name"] == name
    assert len(CENTER_STYLES) >= 3
    assert center_style(3)["name"] == "center_d"
    assert center_style(3)["intensity"] != CENTER_STYLES[0]["intensity"]
    assert center_style(3) == center_style(3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_centers": 0}, "num_centers"),
        ({"size": 31}, "size"),
        ({"num_train": 0}, "num_train"),
        ({"num_test": -1}, "num_test"),
    ],
)
def test_invalid_arguments_raise_value_error(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_demo_centers(tmp_path, **kwargs)
    assert not (tmp_path / "centers.json").exists()


def test_anatomy_source_is_replaceable(tmp_path: Path) -> None:
    def square_anatomy(rng: np.random.Generator, size: int) -> dict:
        label = np.zeros((size, size), dtype=np.int64)
        label[8:-8, 8:-8] = 1
        label[12:20, 12:20] = 2
        label[24:28, 24:28] = 3
        return {"label": label, "texture": np.zeros((size, size))}

    root = make_demo_centers(tmp_path, num_centers=1, num_train=2, num_test=1, size=40, anatomy=square_anatomy)
    expected = square_anatomy(np.random.default_rng(0), 40)["label"]
    for image, label in _pairs(root, "center_a"):
        np.testing.assert_array_equal(label, expected)
        assert image[label == 1].mean() > image[label == 2].mean()


def test_procedural_anatomy_is_a_plausible_slice() -> None:
    anatomy = procedural_anatomy(np.random.default_rng(7), 96)
    label, texture = anatomy["label"], anatomy["texture"]
    assert label.shape == texture.shape == (96, 96)
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 3}
    assert (label == 1).mean() > 0.25  # the brain fills a good part of the slice
    assert label[0, :].max() == 0 and label[:, 0].max() == 0  # air around the head
    assert anatomy["scalp"].any() and not (anatomy["scalp"] & (label > 0)).any()
    assert np.abs(texture).max() <= 1.0 and texture[label == 1].std() > 0.1
    assert (texture[label != 1] == 0).all()
    assert (label[40:56, 40:56] == 2).any()  # ventricles near the centre


def test_save_preview_writes_grid_png(demo_dir: Path, tmp_path: Path) -> None:
    path = save_preview(demo_dir, tmp_path / "preview.png", per_center=2)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    scale, gap = 3, 3  # 64-pixel slices are upscaled three times
    assert width == 4 * (SIZE * scale + gap) + gap
    assert height == 3 * (SIZE * scale + gap) + gap


def test_cli_writes_centers_and_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--output_dir", str(tmp_path / "out"), "--num_train", "1", "--num_test", "1", "--size", "32"])
    main(["--output_dir", str(tmp_path / "out2"), "--num_centers", "1", "--num_train", "1", "--size", "32"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("center_a")
    main(
        [
            "--output_dir",
            str(tmp_path / "out3"),
            "--num_train",
            "1",
            "--num_test",
            "0",
            "--preview",
            str(tmp_path / "p.png"),
        ]
    )
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "preview" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--output_dir", str(tmp_path / "bad"), "--size", "8"])
