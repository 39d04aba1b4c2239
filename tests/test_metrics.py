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
"""The evaluation's numbers (image and segmentation metrics, intervals, distribution metrics, leakage) against values
computed by hand on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.nets import UNet

from scripts.evaluation.distribution_metrics import (
    encoder_features,
    frechet_distance,
    kernel_inception_distance,
    ms_ssim_diversity,
    ms_ssim_settings,
    unet_bottom,
)
from scripts.evaluation.image_quality import forgetting, image_metrics, measured_forgetting
from scripts.evaluation.intervals import bootstrap_interval, over_seeds, t_interval
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
    assert got["lesion"] == {"dice": None, "hd95": None, "n": 0, "dice_per_image": [], "hd95_per_image": []}


def test_per_image_scores_are_those_of_each_image_and_average_to_the_mean():
    label = torch.cat([_square(4, 4), _square(4, 4), torch.zeros(1, 1, 16, 16, dtype=torch.long)])
    pred = torch.cat([_square(5, 4), _square(4, 4), _square(4, 4)])  # shifted, exact, and a class-free image
    got = segmentation_scores(pred, label, CLASSES)["brain"]
    assert got["n"] == 2  # the image without the class is left out
    assert got["dice_per_image"] == [pytest.approx(0.75, abs=1e-3), 1.0]
    assert got["hd95_per_image"] == [pytest.approx(1.0), 0.0]
    assert got["dice"] == pytest.approx(sum(got["dice_per_image"]) / 2, abs=1e-3)


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


def test_forgetting_is_not_measured_for_a_center_no_visit_came_after():
    matrix = {"centers": ["a", "b", "c"], "ssim": [[0.8, None, None], [0.7, 0.9, None], [0.5, 0.85, 0.6]]}
    assert measured_forgetting(matrix) == {"a": pytest.approx(0.3), "b": pytest.approx(0.05), "c": None}
    one_visit = {"centers": ["a", "b"], "ssim": [[0.8, 0.7]]}  # AsynDGAN, joint training: nothing came after
    assert forgetting(one_visit) == {"a": 0.0, "b": 0.0} and measured_forgetting(one_visit) == {"a": None, "b": None}


def test_t_interval_of_three_seeds_matches_the_hand_computed_half_width():
    got = t_interval([1, 2, 3])
    half = 4.302653 * 1.0 / math.sqrt(3)  # t(0.975, 2 dof) * sample sd 1 / sqrt(3)
    assert got["mean"] == 2.0 and got["n"] == 3 and got["per_seed"] == [1, 2, 3]
    assert got["low"] == pytest.approx(2 - half, abs=1e-3) and got["high"] == pytest.approx(2 + half, abs=1e-3)
    two = t_interval([0.5, 0.7])  # t(0.975, 1 dof) = 12.706, sd 0.1414, sqrt(2)
    assert two["high"] - two["mean"] == pytest.approx(12.7062 * math.sqrt(0.02) / math.sqrt(2), abs=1e-3)


def test_t_interval_of_one_seed_has_no_bounds_and_of_identical_seeds_zero_width():
    assert t_interval([0.712]) == {"mean": 0.712, "low": None, "high": None, "n": 1, "per_seed": [0.712]}
    same = t_interval([0.5, 0.5, 0.5])
    assert same["low"] == same["high"] == same["mean"] == 0.5
    assert t_interval([None, None]) is None
    assert t_interval([0.4, None])["n"] == 1  # a seed without a value is left out


def test_bootstrap_interval_of_half_zeros_half_ones_is_the_binomial_quantiles():
    values = [0.0] * 5 + [1.0] * 5
    # the mean of a resample is Binomial(10, 1/2) / 10: P(<= 0.1) = 0.011 and P(<= 0.2) = 0.055, so the 2.5 %
    # quantile is 0.2 and, by symmetry, the 97.5 % quantile 0.8
    assert bootstrap_interval(values, resamples=1000, seed=0) == [0.2, 0.8]
    continuous = [0.1, 0.5, 0.9, 0.2, 0.65]
    assert bootstrap_interval(continuous, seed=3) == bootstrap_interval(continuous, seed=3)  # seeded
    low, high = bootstrap_interval(continuous, seed=3)
    assert min(continuous) < low < sum(continuous) / 5 < high < max(continuous)


def test_bootstrap_interval_of_identical_values_or_one_image_is_that_value():
    assert bootstrap_interval([0.8] * 7) == [0.8, 0.8]
    assert bootstrap_interval([0.3]) == [0.3, 0.3]
    assert bootstrap_interval([]) is None


def test_over_seeds_turns_every_number_into_an_interval_and_keeps_counts_text_and_missing_cells():
    seeds = [
        {"ssim": [[0.8, None], [0.6, 0.7]], "n": 14, "tag": "v1", "per_image": [1, 2], "real": {"a": 0.3}},
        {"ssim": [[0.9, None], [0.6, 0.9]], "n": 14, "tag": "v1", "per_image": [3], "real": {"a": 0.3}},
    ]
    got = over_seeds(seeds, fixed={"n", "real"}, listed={"per_image"})
    assert got["n"] == 14 and got["tag"] == "v1" and got["per_image"] == [[1, 2], [3]]
    assert got["real"] == {"a": 0.3}  # below a fixed key: the same in every seed, kept as it is
    assert got["ssim"][0][1] is None  # not visited yet in any seed
    assert got["ssim"][0][0]["mean"] == pytest.approx(0.85) and got["ssim"][0][0]["per_seed"] == [0.8, 0.9]
    assert got["ssim"][1][0]["low"] == got["ssim"][1][0]["high"] == 0.6


def _gaussian_sample(mean: list[float], spread: list[float]) -> torch.Tensor:
    """Four 2-D points with exactly this mean and a diagonal sample covariance (n - 1 = 3) of 2 * spread^2 / 3."""
    a, b = spread
    offsets = torch.tensor([[a, 0.0], [-a, 0.0], [0.0, b], [0.0, -b]], dtype=torch.float64)
    return torch.tensor(mean, dtype=torch.float64) + offsets


def test_frechet_distance_is_zero_for_identical_sets_and_the_closed_form_for_two_gaussians():
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x.clone()) == pytest.approx(0.0, abs=1e-6)
    real, fake = _gaussian_sample([0.0, 0.0], [3.0, 1.0]), _gaussian_sample([1.0, 2.0], [1.5, 2.0])
    var_r, var_f = [2 * 9.0 / 3, 2 * 1.0 / 3], [2 * 2.25 / 3, 2 * 4.0 / 3]
    # diagonal covariances: |mu_r - mu_f|^2 + sum (sqrt(var_r) - sqrt(var_f))^2
    expected = (1.0 + 4.0) + sum((math.sqrt(r) - math.sqrt(f)) ** 2 for r, f in zip(var_r, var_f))
    assert frechet_distance(real, fake) == pytest.approx(expected, abs=1e-6)


def test_kernel_inception_distance_matches_the_hand_computed_unbiased_mmd():
    real, fake = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]])
    # k(x, y) = (x y + 1)^3: within real k(0, 1) = 1, within fake k(1, 2) = 27, across (1 + 1 + 8 + 27) / 4
    assert kernel_inception_distance(real, fake) == pytest.approx(1 + 27 - 2 * 37 / 4)
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(1))
    assert abs(kernel_inception_distance(x[:15], x[15:])) < kernel_inception_distance(x[:15], x[15:] + 2)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(real[:1], fake)


def test_ms_ssim_settings_keep_the_ssim_window_and_drop_scales_that_do_not_fit():
    at64 = ms_ssim_settings([64, 64])
    assert at64["kernel_size"] == 11 and at64["scales"] == 3  # 64, 32, 16 pixels: a 4th scale (8) < 11
    assert sum(at64["weights"]) == pytest.approx(1.0, abs=1e-3)
    assert at64["weights"][0] == pytest.approx(0.0448 / (0.0448 + 0.2856 + 0.3001), abs=1e-4)
    assert ms_ssim_settings([256, 256])["scales"] == 5
    with pytest.raises(ValueError, match="smaller than the 11-pixel window"):
        ms_ssim_settings([8, 8])


def test_ms_ssim_diversity_is_one_for_copies_of_one_image_and_lower_for_different_images():
    gen = torch.Generator().manual_seed(0)
    one = torch.rand(1, 1, 64, 64, generator=gen)
    assert ms_ssim_diversity(one.repeat(4, 1, 1, 1)) == pytest.approx(1.0, abs=1e-4)
    assert ms_ssim_diversity(torch.rand(4, 1, 64, 64, generator=gen)) < 0.5


def test_encoder_features_are_the_pooled_bottom_of_the_unet():
    torch.manual_seed(0)
    network = UNet(2, 1, 4, channels=[8, 16, 32], strides=[2, 2], num_res_units=1, norm="INSTANCE")
    bottom = unet_bottom(network)
    images = torch.rand(5, 1, 32, 32)
    outputs = []
    hook = bottom.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    features = encoder_features(network, images, batch_size=2)  # three batches
    hook.remove()
    bottom_out = torch.cat(outputs)
    assert bottom_out.shape == (5, 32, 8, 8)  # 32 channels at 1/4 of the size (two stride-2 levels)
    assert features.shape == (5, 32)
    assert torch.allclose(features, bottom_out.mean((2, 3)).double())
    with pytest.raises(ValueError, match="expected a monai.networks.nets.UNet"):
        unet_bottom(torch.nn.Conv2d(1, 1, 3))


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
