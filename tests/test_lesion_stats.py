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
"""tools.lesion_stats on NIfTI pairs written here with known lesion areas and contrasts."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tools.lesion_stats import main, unet_reading


def _pair(folder: Path, name: str, lesion_side: int, lesion_value: float, seed: int) -> dict[str, str]:
    """A 24x24 map (background, a brain square of class 1 with unit-std noise, a square lesion of class 3 set to
    ``lesion_value``) and its image, as NIfTI files."""
    rng = np.random.default_rng(seed)
    label = np.zeros((24, 24), np.uint8)
    label[2:22, 2:22] = 1
    image = np.where(label == 1, rng.normal(0.0, 1.0, label.shape), -1.0)
    if lesion_side:
        label[8 : 8 + lesion_side, 8 : 8 + lesion_side] = 3
        image[label == 3] = lesion_value
    for kind, array in (("images", image.astype(np.float32)), ("labels", label)):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, np.eye(4)), folder / kind / f"{name}.nii.gz")
    return {"image": f"images/{name}.nii.gz", "label": f"labels/{name}.nii.gz"}


def test_lesion_area_share_and_contrast_of_real_and_synthetic_sets(tmp_path: Path, capsys) -> None:
    center = tmp_path / "data" / "center_a"
    real = [_pair(center, f"r{i}", side, 3.0, i) for i, side in enumerate([4, 6, 0, 4])]
    (center / "dataset.json").write_text(json.dumps({"training": real, "labels": {"0": "background"}}))
    synthetic = tmp_path / "synthetic"
    made = [{**_pair(synthetic, f"s{i}", 3, 1.0, 10 + i), "center": "center_a"} for i in range(3)]
    (synthetic / "dataset.json").write_text(json.dumps({"training": made}))

    assert main(["--data_root", str(tmp_path / "data"), "--synthetic", str(synthetic)]) == 0
    out = capsys.readouterr().out.splitlines()
    row = json.loads(out[0])
    assert row["center"] == "center_a"
    assert row["real"]["maps"] == 4 and row["real"]["with_lesion"] == 0.75
    assert row["real"]["area_median"] == 16 and row["real"]["area_mean"] == pytest.approx((16 + 36 + 16) / 3, abs=0.1)
    assert row["synthetic"]["with_lesion"] == 1.0 and row["synthetic"]["area_median"] == 9
    # lesion 3 (real) and 1 (synthetic) against unit-std, zero-mean brain: contrast near 3 and near 1
    assert 2.0 < row["real"]["contrast_mean"] < 4.0 and 0.3 < row["synthetic"]["contrast_mean"] < 1.7
    assert row["real"]["contrast_images"] == 3
    assert "| center_a | synthetic | 3 | 1.00 | 9 / 9 |" in "\n".join(out)


def test_a_folder_that_is_not_a_synthetic_set_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--data_root", str(tmp_path), "--synthetic", str(tmp_path / "none")])
    assert e.value.code == 2 and "no dataset.json" in capsys.readouterr().err.strip().splitlines()[-1]


class _Threshold(torch.nn.Module):
    """Calls class 3 wherever the (min-max scaled) image is above ``level``, else class 1: a reader whose answer is
    known on the pairs above (lesion 3.0 is the brightest value, brain noise rarely reaches it)."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lesion = (x > self.level).float()
        return torch.cat([torch.zeros_like(x), 1 - lesion, torch.zeros_like(x), lesion], 1)


def test_how_a_unet_reads_a_sets_lesions_counts_its_pixels_against_the_labels(tmp_path: Path) -> None:
    items = [_pair(tmp_path, f"r{i}", 4, 8.0, i) for i in range(2)]  # 16 lesion pixels each, far above the noise
    items = [{k: str(tmp_path / v) for k, v in item.items()} for item in items]
    exact = unet_reading(items, _Threshold(0.9))
    assert exact == {"predicted_pixels": 32, "labelled_pixels": 32, "precision": 1.0, "recall": 1.0}
    loose = unet_reading(items, _Threshold(-1.0))  # every pixel called lesion: 576 per image
    assert loose["predicted_pixels"] == 2 * 24 * 24 and loose["recall"] == 1.0
    assert loose["precision"] == pytest.approx(32 / (2 * 24 * 24), abs=1e-3)


def test_the_unet_option_loads_the_evaluations_architecture_from_a_checkpoint(tmp_path: Path, capsys) -> None:
    # the loading path with RANDOMLY INITIALISED weights of the evaluation's UNet (no trained one is shipped)
    center = tmp_path / "data" / "center_a"
    real = [_pair(center, f"r{i}", 4, 3.0, i) for i in range(2)]
    (center / "dataset.json").write_text(json.dumps({"training": real, "labels": {"0": "background"}}))
    synthetic = tmp_path / "synthetic"
    made = [{**_pair(synthetic, "s0", 3, 1.0, 10), "center": "center_a"}]
    (synthetic / "dataset.json").write_text(json.dumps({"training": made}))
    from monai.networks.nets import UNet

    random_unet = UNet(2, 1, 4, channels=[16, 32, 64, 128], strides=[2, 2, 2], num_res_units=1, norm="INSTANCE")
    torch.save({"network": random_unet.state_dict()}, tmp_path / "segmentation.pt")
    argv = ["--data_root", str(tmp_path / "data"), "--synthetic", str(synthetic)]
    assert main(argv + ["--segmentation", str(tmp_path / "segmentation.pt")]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["real"]["unet"]["labelled_pixels"] == 32 and row["synthetic"]["unet"]["labelled_pixels"] == 9
    with pytest.raises(SystemExit):
        main(argv + ["--segmentation", str(tmp_path / "none.pt")])
