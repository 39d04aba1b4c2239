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
"""Paired augmentation: label and image move together, the label keeps its classes, intensities touch the image only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset, MetaTensor, get_track_meta
from monai.transforms import Compose

from scripts.data.augmentation import paired_augmentation
from scripts.data.centers import OnlineCenters, Untracked, center_datalist

REPO = Path(__file__).resolve().parents[1]
SPATIAL_ONLY = {"affine_prob": 1.0, "elastic_prob": 1.0, "flip_prob": 1.0, "intensity_prob": 0.0}


def _blob_pair(size: int = 32) -> dict[str, torch.Tensor]:
    """An image in [-1, 1] with a smooth off-centre ellipse and square, and the label thresholded from it (class 2)."""
    y, x = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    ellipse = 1.0 - ((y - 11) / 7) ** 2 - ((x - 12) / 4) ** 2
    square = torch.minimum(6 - (y - 23).abs(), 4 - (x - 22).abs())
    image = torch.tanh(2 * torch.maximum(ellipse * 4, square))[None]
    return {"image": image, "label": (image > 0).to(torch.uint8) * 2}


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dice of the foregrounds (> 0) of two maps."""
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_a_label_thresholded_from_the_image_stays_on_it_after_the_spatial_transforms():
    pair = _blob_pair()
    transform = Compose(paired_augmentation(2, [32, 32], flip_axes=[1], translate=0.15, **SPATIAL_ONLY))
    transform.set_random_state(0)
    for _ in range(5):
        out = transform(dict(pair))
        # nearest-neighbour label against the thresholded bilinear image: they differ along the edges only (measured
        # 0.89-0.93 on this small blob; 0.15-0.79 when the label gets other random parameters than the image)
        assert _dice(out["label"], out["image"]) >= 0.85
        assert _dice(out["label"], pair["label"]) < 0.5  # and the pair did move


def test_label_values_stay_integer_classes_of_the_input():
    gen = torch.Generator().manual_seed(0)
    label = torch.tensor([0, 2, 5], dtype=torch.uint8)[torch.randint(0, 3, (1, 8, 8), generator=gen)]
    label = label.repeat_interleave(4, 1).repeat_interleave(4, 2)  # 4x4 blocks of the classes 0, 2 and 5
    pair = {"image": torch.rand(1, 32, 32, generator=gen) * 2 - 1, "label": label}
    transform = Compose(paired_augmentation(2, [32, 32], 1.0, 1.0, 1.0, 1.0, flip_axes=[0, 1]))
    transform.set_random_state(1)
    for _ in range(5):
        out = transform(dict(pair))
        assert out["label"].dtype == torch.uint8 and out["image"].dtype == torch.float32
        assert set(out["label"].unique().tolist()) <= {0, 2, 5}
        assert float(out["image"].min()) >= -1.0 and float(out["image"].max()) <= 1.0


def test_intensity_transforms_change_the_image_and_leave_the_label_alone():
    pair = _blob_pair()
    probs = {"affine_prob": 0.0, "elastic_prob": 0.0, "flip_prob": 0.0, "intensity_prob": 1.0}
    transform = Compose(paired_augmentation(2, [32, 32], flip_axes=[1], **probs))
    transform.set_random_state(0)
    out = transform(dict(pair))
    assert torch.equal(out["label"], pair["label"])
    assert not torch.allclose(out["image"], pair["image"], atol=1e-3)


def test_three_dimensional_pairs_move_together():
    grid = torch.stack(torch.meshgrid(*[torch.arange(16.0)] * 3, indexing="ij"))
    image = torch.tanh(2 * (5.0 - (grid - torch.tensor([6.0, 8.0, 9.0]).view(3, 1, 1, 1)).norm(dim=0)))[None]
    pair = {"image": image, "label": (image > 0).to(torch.uint8)}
    transform = Compose(paired_augmentation(3, [16, 16, 16], translate=0.15, **SPATIAL_ONLY, flip_axes=[2]))
    transform.set_random_state(0)
    out = transform(dict(pair))
    assert out["label"].shape == (1, 16, 16, 16) and out["label"].dtype == torch.uint8
    assert _dice(out["label"], out["image"]) >= 0.85
    assert not torch.equal(out["label"], pair["label"])


def test_appended_to_the_visits_cached_preprocessing_it_augments_real_files(demo_root):
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "train.json"))
    parser["spatial_size"] = [32, 32]
    parser["augment"] = True
    parser["augmentation_settings"] = {
        "affine_prob": 1.0,
        "elastic_prob": 1.0,
        "flip_prob": 1.0,
        "intensity_prob": 0.5,
        "flip_axes": [1],
    }
    preprocessing = parser.get_parsed_content("train#transforms")
    preprocessing.set_random_state(0)
    data = CacheDataset(center_datalist(demo_root / "center_a", 0), preprocessing, progress=False)
    first, again = data[0], data[0]
    assert first["label"].dtype == torch.uint8 and first["label"].shape == (1, 32, 32)
    assert set(first["label"].unique().tolist()) <= {0, 1, 2, 3}
    assert not torch.equal(first["label"], again["label"])  # drawn anew at every read, after the cache


def test_untracked_items_are_the_same_values_as_plain_tensors_and_the_switch_is_restored(demo_root):
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "segmentation.json"))
    parser["spatial_size"] = [32, 32]
    parser["dataset_dir"] = str(demo_root / "center_a")
    parser["val_fraction"] = 0
    tracked = parser.get_parsed_content("train#dataset")  # flips and intensity after the cache
    tracked.transform.set_random_state(3)
    expected = [tracked[i] for i in range(4)]
    assert isinstance(expected[0]["image"], MetaTensor)  # MONAI's random transforms wrap the cached tensors again
    tracked.transform.set_random_state(3)
    untracked = Untracked(tracked)
    assert len(untracked) == len(tracked)
    for i, want in enumerate(expected):
        got = untracked[i]
        assert get_track_meta()  # switched back after every item
        for key in ("image", "label"):
            assert type(got[key]) is torch.Tensor and torch.equal(got[key], want[key].as_tensor())
    loader = parser.get_parsed_content("train#dataloader")
    assert isinstance(loader.dataset, Untracked) and loader.dataset.dataset is parser.get_parsed_content(
        "train#dataset"
    )
    batch = next(iter(loader))
    assert type(batch["image"]) is torch.Tensor  # what the UNet sees


def test_a_failing_item_still_switches_tracking_back():
    class Broken(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int) -> None:
            assert not get_track_meta()
            raise KeyError("no such item")

    with pytest.raises(KeyError, match="no such item"):
        Untracked(Broken())[0]
    assert get_track_meta()
    assert all(isinstance(g, Untracked) for g in OnlineCenters([Broken(), Broken()]).groups)
    assert all(isinstance(g, Untracked) for g in OnlineCenters([Broken(), Broken()], shared_discriminator=True).groups)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="spatial_dims 2 or 3"):
        paired_augmentation(2, [32, 32, 32])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        paired_augmentation(2, [32, 32], affine_prob=1.5)
