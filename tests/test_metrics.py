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
from scripts.evaluation.memorisation import audit_center, rms_distances
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
