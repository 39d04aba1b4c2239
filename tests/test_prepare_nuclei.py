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
"""Nuclei preparation end to end: H&E TIFF + MoNuSeg XML in, per-organ RGB patches with 3-class labels out, a visit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import itk
import numpy as np
import pytest
from conftest import REPO, run_visit
from monai.transforms import LoadImage

from scripts.data.checks import InputError
from scripts.data.prepare_nuclei import instance_labels, patch_starts, prepare_nuclei, rasterise_instances
from scripts.handoff import load_handoff

HEIGHT, WIDTH = 80, 96


def _nuclei(rng: np.random.Generator, count: int = 6) -> list[tuple[float, float, float]]:
    """Non-touching round nuclei as (x, y, radius)."""
    found: list[tuple[float, float, float]] = []
    while len(found) < count:
        x, y, r = rng.uniform(8, WIDTH - 8), rng.uniform(8, HEIGHT - 8), rng.uniform(4, 7)
        if all(np.hypot(x - a, y - b) > r + c + 3 for a, b, c in found):
            found.append((x, y, r))
    return found


def _write_monuseg_xml(path: Path, nuclei: list[tuple[float, float, float]]) -> None:
    """A MoNuSeg-style annotation: one <Region> of <Vertex X= Y=> per nucleus (a 16-gon)."""
    root = ET.Element("Annotations", MicronsPerPixel="0.252100")
    regions = ET.SubElement(ET.SubElement(root, "Annotation", Id="1"), "Regions")
    for i, (x, y, r) in enumerate(nuclei, start=1):
        vertices = ET.SubElement(ET.SubElement(regions, "Region", Id=str(i)), "Vertices")
        for t in np.linspace(0, 2 * np.pi, 16, endpoint=False):
            ET.SubElement(vertices, "Vertex", X=f"{x + r * np.cos(t):.3f}", Y=f"{y + r * np.sin(t):.3f}", Z="0")
    ET.ElementTree(root).write(path)


def _write_image(
    root: Path, stem: str, rng: np.random.Generator, rgb: bool = True, flat: bool = False
) -> list[tuple[float, float, float]]:
    """An H&E-like .tif with dark round nuclei and its .xml: in ``Tissue Images/`` and ``Annotations/`` (MoNuSeg),
    or both in ``root`` (``flat``)."""
    nuclei = _nuclei(rng)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    image = np.stack([np.full((HEIGHT, WIDTH), v, np.float64) for v in (230, 190, 220)], axis=-1)
    for x, y, r in nuclei:
        image[np.hypot(xx - x, yy - y) < r] = (90, 40, 140)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    images, annotations = (root, root) if flat else (root / "Tissue Images", root / "Annotations")
    images.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    itk.imwrite(itk.image_from_array(image if rgb else image[..., 0], is_vector=rgb), str(images / f"{stem}.tif"))
    _write_monuseg_xml(annotations / f"{stem}.xml", nuclei)
    return nuclei


@pytest.fixture(scope="module")
def monuseg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """4 H&E images (2 organs) with annotations, and an organ table."""
    root = tmp_path_factory.mktemp("monuseg")
    rng = np.random.default_rng(0)
    stems = {f"TCGA-{i:02d}-0000-01Z-00-DX1": organ for i, organ in enumerate(["liver", "liver", "kidney", "kidney"])}
    nuclei = {stem: _write_image(root, stem, rng) for stem in stems}
    table = root / "organs.csv"
    table.write_text("image,organ\n" + "\n".join(f"{s}.tif,{o}" for s, o in stems.items()) + "\n")
    return root, table, nuclei


def test_polygons_become_interior_and_a_contour_of_the_requested_width():
    square = np.array([[2.0, 2.0], [11.0, 2.0], [11.0, 11.0], [2.0, 11.0]])  # pixel centres 2..10 inside
    instances = rasterise_instances([square], (14, 14))
    assert instances.sum() == 81 and instances[2:11, 2:11].all()
    label = instance_labels(instances, contour_width=2)
    assert (label == 2).sum() == 81 - 25 and (label[4:9, 4:9] == 1).all() and label[0, 0] == 0
    assert patch_starts(96, 32) == [0, 32, 64] and patch_starts(80, 32) == [0, 24, 48] and patch_starts(20, 32) == []


def test_prepare_nuclei_command_makes_organ_centers_of_rgb_patches_that_train_one_visit(monuseg, tmp_path: Path):
    root, table, nuclei = monuseg
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "scripts.data.prepare_nuclei", "--input_dir", str(root), "--output_dir", str(out)]
    cmd += ["--organ_table", str(table), "--patch_size", "32", "--test_fraction", "0.5"]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    assert json.loads((out / "centers.json").read_text())["order"] == ["liver", "kidney"]  # the table's order
    load = LoadImage(image_only=True, ensure_channel_first=True)  # as training reads them
    for organ in ("kidney", "liver"):
        meta = json.loads((out / organ / "dataset.json").read_text())
        assert meta["labels"] == {"0": "background", "1": "nucleus interior", "2": "nucleus contour"}
        train = {Path(i["image"]).name.split("_y")[0] for i in meta["training"]}
        test = {Path(i["image"]).name.split("_y")[0] for i in meta["test"]}
        assert len(train) == len(test) == 1 and not train & test  # split by image, never by patch
        assert all(i["subject"] == Path(i["image"]).name.split("_y")[0] for i in meta["training"] + meta["test"])
        assert len(meta["training"]) == len(meta["test"]) == 3 * 3  # rows 0, 24, 48 x columns 0, 32, 64
        for item in meta["training"] + meta["test"]:
            stem, rest = Path(item["image"]).name.removesuffix(".png").split("_y")
            r, c = (int(v) for v in rest.split("_x"))
            image, label = load(str(out / organ / item["image"])), load(str(out / organ / item["label"]))
            assert image.shape == (3, 32, 32) and label.shape == (1, 32, 32)
            source = itk.array_from_image(itk.imread(str(root / "Tissue Images" / f"{stem}.tif")))
            crop = source[r : r + 32, c : c + 32]
            # MONAI reads 2D PNGs with the first spatial axis along the width: compare transposed
            assert np.array_equal(np.asarray(image).transpose(2, 1, 0), crop)
            lab = np.asarray(label[0]).T
            assert set(np.unique(lab)) <= {0, 1, 2}
            for x, y, _ in nuclei[stem]:
                if r <= round(y) < r + 32 and c <= round(x) < c + 32:
                    assert lab[round(y) - r, round(x) - c] == 1  # a nucleus centre is interior
            assert ((lab > 0) == (crop[..., 1] < 100)).mean() > 0.9  # the labels sit on the dark nuclei

    # 3 classes, 3 channels: read from dataset.json, not passed; one slide's patches are one subject, from which no
    # label-map ceiling can be calibrated, so this center reminds without a bank
    run_visit([out / "liver"], tmp_path / "visit", reminding_source="local")
    handoff = load_handoff(tmp_path / "visit" / "handoff.pt")
    assert handoff.network["out_channels"] == 3 and handoff.network["num_classes"] == 3
    assert handoff.visits[0]["iterations"] > 0


def test_organ_from_folder_makes_one_center_per_folder(tmp_path: Path):
    rng = np.random.default_rng(1)
    for organ in ("colon", "breast"):
        for i in range(2):
            _write_image(tmp_path / "in" / organ, f"{organ}_{i}", rng, flat=True)
    out = prepare_nuclei(tmp_path / "in", tmp_path / "data", organ_from_folder=True, patch_size=40, test_fraction=0.5)
    assert json.loads((out / "centers.json").read_text())["order"] == ["breast", "colon"]
    for organ in ("breast", "colon"):
        meta = json.loads((out / organ / "dataset.json").read_text())
        assert {Path(i["image"]).name.split("_y")[0] for i in meta["training"] + meta["test"]} == {
            f"{organ}_0",
            f"{organ}_1",
        }
        assert len(meta["training"]) == len(meta["test"]) == 2 * 3  # rows 0, 40 x columns 0, 28, 56


def test_bad_nuclei_inputs_are_all_reported_and_leave_no_output(tmp_path: Path):
    rng = np.random.default_rng(2)
    root = tmp_path / "in"
    for stem in ("good", "no_xml", "broken_xml", "grey"):
        _write_image(root, stem, rng, rgb=stem != "grey")
    (root / "Annotations" / "no_xml.xml").unlink()
    (root / "Annotations" / "broken_xml.xml").write_text("<Annotations><Region>")
    table = tmp_path / "organs.csv"
    table.write_text("image,organ\ngood,a\nno_xml,a\nbroken_xml,b\ngrey,b\nmissing,b\n")
    with pytest.raises(InputError) as info:
        prepare_nuclei(root, tmp_path / "data", organ_table=str(table), patch_size=32)
    assert f"{table}: image 'missing' is not under {root}" in str(info.value)
    table.write_text("image,organ\ngood,a\nno_xml,a\nbroken_xml,b\ngrey,b\n")
    with pytest.raises(InputError) as info:
        prepare_nuclei(root, tmp_path / "data", organ_table=str(table), patch_size=32)
    message = str(info.value)
    assert message.startswith("3 problem(s)")
    assert f"{root / 'Tissue Images' / 'no_xml.tif'}: no annotation; expected exactly one no_xml.xml" in message
    assert f"{root / 'Annotations' / 'broken_xml.xml'}: not readable XML" in message
    assert f"{root / 'Tissue Images' / 'grey.tif'}: image of shape (80, 96); expected an RGB H&E image" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "organs.csv"]  # no output, no staging folder
