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
"""The evaluation's numbers against values computed by hand on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch

from scripts.evaluation.image_quality import forgetting, image_metrics
from scripts.evaluation.memorisation import audit_center, handoff_reconstruction, memorisation_gap, rms_distances
from scripts.evaluation.segmentation_scores import segmentation_scores

CLASSES = ["background", "brain", "lesion"]


def _constant(value: float, size: int = 16) -> torch.Tensor:
    """A (1, 1, size, size) image of one value, given on the [0, 1] scale and returned on the [-1, 1] scale."""
    return torch.full((1, 1, size, size), 2 * value - 1)


def test_image_metrics_match_hand_computed_values_for_constant_images():
    a, b = 0.2, 0.6
    got = image_metrics(_constant(a), _constant(b))
    c1 = (0.01 * 1.0) ** 2  # SSIM's luminance constant for data range 1; the contrast term is 1 when both are flat
    # float32 local variances of flat images are not exactly 0: agreement to 2e-4
    assert got["ssim"] == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=2e-4)
    assert got["psnr"] == pytest.approx(10 * math.log10(1.0 / (a - b) ** 2), abs=1e-4)
    assert got["mae"] == pytest.approx(abs(a - b), abs=1e-6)


def test_image_metrics_of_identical_images_are_perfect():
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    got = image_metrics(x, x.clone())
    assert got["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert got["mae"] == 0.0
    assert math.isinf(got["psnr"])


def _square(top: int, left: int, size: int = 4, shape: int = 16, cls: int = 1) -> torch.Tensor:
    m = torch.zeros(1, 1, shape, shape, dtype=torch.long)
    m[..., top : top + size, left : left + size] = cls
    return m


def test_dice_and_hausdorff_match_hand_computed_values_for_shifted_squares():
    label = _square(4, 4)
    pred = _square(5, 4)  # the same 4x4 square one row lower: 12 of 16 pixels overlap
    got = segmentation_scores(pred, label, CLASSES)
    assert got["brain"]["dice"] == pytest.approx(2 * 12 / (16 + 16), abs=1e-3)
    assert got["brain"]["hd95"] == pytest.approx(1.0, abs=1e-6)  # every boundary point is at most one row away
    assert got["brain"]["n"] == 1
    assert got["lesion"] == {"dice": None, "hd95": None, "n": 0}  # absent from the ground truth: left out


def test_a_missed_structure_scores_dice_zero_and_the_image_diagonal():
    label = _square(4, 4, cls=2)
    pred = torch.zeros_like(label)
    got = segmentation_scores(pred, label, CLASSES)
    assert got["lesion"]["dice"] == 0.0
    assert got["lesion"]["hd95"] == pytest.approx(round(math.sqrt(16**2 + 16**2), 2))


def test_forgetting_is_first_quality_minus_last_and_flips_sign_for_mae():
    matrix = {
        "centers": ["a", "b", "c"],
        "ssim": [[0.8, None, None], [0.7, 0.9, None], [0.5, 0.85, 0.6]],
        "mae": [[0.1, None, None], [0.15, 0.05, None], [0.2, 0.06, 0.1]],
    }
    assert forgetting(matrix, "ssim") == {"a": pytest.approx(0.3), "b": pytest.approx(0.05), "c": 0.0}
    assert forgetting(matrix, "mae") == {"a": pytest.approx(0.1), "b": pytest.approx(0.01), "c": 0.0}


def test_rms_distance_matches_hand_computed_value():
    a = torch.zeros(1, 1, 4, 4)
    b = torch.full((1, 1, 4, 4), 0.5)
    assert float(rms_distances(a, b)[0, 0]) == pytest.approx(0.5)


def test_memorisation_audit_flags_a_copy_of_a_real_image_and_not_a_distant_one():
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(10, 1, 8, 8, generator=gen)
    copy = real[3:4] + 0.001  # a near copy of real image 3
    distant = torch.full((1, 1, 8, 8), 5.0)
    names = [f"r{i}" for i in range(10)]
    got = audit_center(torch.cat([copy, distant]), real, quantile=0.05, real_names=names, paired=[3, None])
    assert got["flagged"] == 1
    assert got["flagged_nearest_to_own_pair"] == 1
    assert got["flagged_samples"][0]["synthetic"] == 0
    assert got["flagged_samples"][0]["nearest_real"] == "r3"
    assert got["synthetic_to_real_min"] == pytest.approx(0.001, abs=1e-4)
    assert got["threshold"] > 0.001
    assert audit_center(copy, real, real_names=names, paired=[5])["flagged_nearest_to_own_pair"] == 0


class LookupGenerator(torch.nn.Module):
    """Stands in for a generator: for a label map it was given, returns the image stored with it; any other map is an
    error. Records the center codes it was asked for."""

    def __init__(self, labels: torch.Tensor, images: torch.Tensor) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # generate_images reads the device from the parameters
        self.labels = labels.flatten(1).long()
        self.images = images
        self.codes: list[int] = []

    def condition(self, label: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        self.codes += center.tolist()
        return label.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = [(self.labels == m).all(dim=1).nonzero().flatten() for m in x.flatten(1).long()]
        assert all(len(r) for r in rows), "LookupGenerator got a label map it does not know"
        return torch.stack([self.images[int(r[0])] for r in rows])


def _distinct_labels(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """n different random label maps (n, 1, size, size) with classes 0..2."""
    return torch.randint(0, 3, (n, 1, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_memorisation_gap_is_training_quality_minus_test_quality_computed_by_hand():
    labels = _distinct_labels(5)
    train_labels, test_labels = labels[:3], labels[3:]
    a, da, b, db = 0.3, 0.05, 0.6, 0.2  # on [0, 1]: training images a, rebuilt as a + da; test images b, as b + db
    train_images, test_images = _constant(a).repeat(3, 1, 1, 1), _constant(b).repeat(2, 1, 1, 1)
    generator = LookupGenerator(
        labels, torch.cat([_constant(a + da).repeat(3, 1, 1, 1), _constant(b + db).repeat(2, 1, 1, 1)])
    )
    got = memorisation_gap(generator, 4, train_images, train_labels, test_images, test_labels)
    c1 = (0.01 * 1.0) ** 2
    ssim = {
        "train": (2 * a * (a + da) + c1) / (a * a + (a + da) ** 2 + c1),
        "test": (2 * b * (b + db) + c1) / (b * b + (b + db) ** 2 + c1),
    }
    psnr = {"train": 10 * math.log10(1.0 / da**2), "test": 10 * math.log10(1.0 / db**2)}
    # float32 local variances of flat images are not exactly 0 (see above): SSIM agrees to 1e-3 (the gap is 0.04)
    for split in ("train", "test"):
        assert got[split]["ssim"] == pytest.approx(ssim[split], abs=1e-3)
        assert got[split]["psnr"] == pytest.approx(psnr[split], abs=1e-3)
    assert got["gap"]["ssim"] == pytest.approx(ssim["train"] - ssim["test"], abs=1e-3)
    assert got["gap"]["psnr"] == pytest.approx(psnr["train"] - psnr["test"], abs=2e-3)  # 26.02 - 13.98 dB
    assert got["gap"]["mae"] == pytest.approx(da - db, abs=1e-5)  # lower is better: negative when memorising
    assert set(generator.codes) == {4}  # every pair under the center's own code


def test_a_bank_the_generator_turns_back_into_the_real_images_is_all_near_copies():
    labels = _distinct_labels(6, seed=1)
    real = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    generator = LookupGenerator(labels, real)
    bank = {"center_a": labels[[4, 1, 2]]}
    got = handoff_reconstruction(generator, bank, {"center_a": 3}, {"center_a": real}, {"center_a": labels})
    assert got["carries_label_maps"] is True
    assert (got["label_maps"], got["near_copies"], got["near_copy_rate"]) == (3, 3, 1.0)
    audit = got["centers"]["center_a"]
    assert audit["synthetic_to_real_min"] == 0.0 and audit["flagged_fraction"] == 1.0
    assert audit["flagged_nearest_to_own_pair"] == 3  # each rebuilt image is the very patient's whose map was carried
    assert [s["nearest_real"] for s in audit["flagged_samples"]] == [4, 1, 2]
    assert set(generator.codes) == {3}


def test_a_bank_the_generator_maps_far_from_every_real_image_has_no_near_copies():
    labels = _distinct_labels(4, seed=3)
    real = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    far = torch.full((4, 1, 16, 16), 1.0)  # a white image, far from every uniform-noise one
    got = handoff_reconstruction(
        LookupGenerator(labels, far), {"center_b": labels}, {"center_b": 0}, {"center_b": real}
    )
    assert (got["near_copies"], got["near_copy_rate"]) == (0, 0.0)
    assert got["centers"]["center_b"]["flagged_nearest_to_own_pair"] is None  # no real label maps given to pair with


def test_an_empty_bank_says_the_handoff_carries_no_label_maps():
    generator = LookupGenerator(_distinct_labels(2), torch.zeros(2, 1, 16, 16))
    real = {"center_a": torch.zeros(2, 1, 16, 16)}
    for bank in ({}, {"center_a": torch.zeros(0, 1, 16, 16, dtype=torch.uint8)}):
        got = handoff_reconstruction(generator, bank, {"center_a": 0}, real)
        assert got["carries_label_maps"] is False
        assert got["near_copies"] is None and got["near_copy_rate"] is None  # nothing measured, not a rate of 0
        assert "carries no label maps" in got["summary"]
    assert generator.codes == []


def test_handoff_reconstruction_refuses_a_banked_center_without_its_real_images():
    labels = _distinct_labels(2)
    with pytest.raises(ValueError, match=r"banked centers \['center_c'\]"):
        handoff_reconstruction(
            LookupGenerator(labels, torch.zeros(2, 1, 16, 16)), {"center_c": labels}, {"center_c": 0}, {}
        )
