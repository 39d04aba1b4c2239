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
"""Synthesis (configs/inference.json) and the evaluation report (configs/compare.json), run for real on tiny data."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import load_decathlon_datalist
from monai.transforms import Randomizable

from scripts.data.centers import read_center_order, read_label_maps
from scripts.data.checks import InputError
from scripts.data.label_maps import calibrate_ceiling, label_map_similarity
from scripts.evaluation.image_quality import DECIMALS, generator_from_handoff, generator_quality, load_pairs
from scripts.evaluation.protocol import Progress, real_sets, relative_dice
from scripts.evaluation.synthesis import GeneratorSource, choose_styles
from scripts.handoff import load_handoff
from tests.conftest import META, REPO, TINY, run_visit

INFERENCE = str(REPO / "configs" / "inference.json")
COMPARE = str(REPO / "configs" / "compare.json")


@pytest.fixture(scope="module")
def two_center_handoff(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generator that has visited center_a then center_b."""
    out = tmp_path_factory.mktemp("seq")
    run_visit([demo_root / "center_a"], out / "v1")
    run_visit([demo_root / "center_b"], out / "v2", handoff_in=out / "v1" / "handoff.pt")
    return out / "v2" / "handoff.pt"


def _synthesis(handoff: Path, dataset_dir: Path, out: Path, **override) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=INFERENCE,
        meta_file=META,
        logging_file=False,
        workflow_type="infer",
        bundle_root=str(REPO),
        handoff=str(handoff),
        dataset_dir=str(dataset_dir),
        output_dir=str(out),
        spatial_size=TINY["spatial_size"],
        device="cpu",
        **override,
    )
    workflow.initialize()
    return workflow


def _digests(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.nii.gz")}


def test_synthetic_dataset_loads_with_decathlon_datalist_and_holds_no_real_image(
    demo_root: Path, two_center_handoff: Path, tmp_path: Path
):
    center_dirs = [demo_root / "center_a", demo_root / "center_b"]
    data = tmp_path / "labels"  # a folder of the two centers this generator knows
    data.mkdir()
    for d in center_dirs:
        (data / d.name).symlink_to(d)
    (data / "centers.json").write_text(json.dumps({"order": [d.name for d in center_dirs]}))
    out = tmp_path / "synthetic"
    workflow = _synthesis(two_center_handoff, data, out, label_source="given")
    assert workflow.check_properties() in (None, [])
    workflow.run()
    workflow.finalize()

    items = load_decathlon_datalist(str(out / "dataset.json"), True, "training", base_dir=str(out))
    real_items = [it for d in center_dirs for it in load_decathlon_datalist(str(d / "dataset.json"), True, "training")]
    assert len(items) == len(real_items)
    assert [it["center"] for it in items] == [str(it["image"]).split("/")[-3] for it in real_items]

    real_images = [np.asarray(nib.load(it["image"]).dataobj, dtype=np.float32) for it in real_items]
    for it, real_item in zip(items, real_items):
        synthetic = np.asarray(nib.load(it["image"]).dataobj, dtype=np.float32).squeeze()  # 2D: (H, W, 1, 1)
        assert synthetic.shape == tuple(TINY["spatial_size"])
        assert 0.0 <= synthetic.min() and synthetic.max() <= 1.0
        assert not any(synthetic.shape == r.shape and np.array_equal(synthetic, r) for r in real_images)
        label = np.asarray(nib.load(it["label"]).dataobj)
        source = np.asarray(nib.load(real_item["label"]).dataobj).reshape(label.shape)
        np.testing.assert_array_equal(label, source)  # the label map it was synthesised from
    real_files = _digests(demo_root / "center_a") | _digests(demo_root / "center_b")
    assert not (_digests(out / "imagesTr") & real_files)
    assert not (out / "imagesTs").exists()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["label_source"] == "given" and meta["shareable"] is False


def test_default_synthesis_uses_new_label_maps_far_from_every_patients(
    demo_root: Path, two_center_handoff: Path, tmp_path: Path
):
    out = tmp_path / "shareable"
    workflow = _synthesis(two_center_handoff, demo_root / "center_a", out, style="center_a")
    workflow.run()
    workflow.finalize()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["label_source"] == "new" and meta["shareable"] is True
    sources = read_label_maps(demo_root / "center_a", 2, TINY["spatial_size"])[0]
    ceiling = calibrate_ceiling(sources)  # calibrated from the center's own maps (each slice its own subject here)
    recorded = meta["label_maps"]["ceilings"]["center_a"]
    assert recorded["quantile"] == 0.5 and recorded["mean_foreground_dice"] == pytest.approx(ceiling.mean, abs=1e-4)
    assert "center_a_" not in json.dumps(meta["label_maps"])  # the provenance names no patient or file
    new = read_label_maps(out, 2, TINY["spatial_size"])[0]
    assert len(new) == len(sources)
    similarity = label_map_similarity(new, sources)
    assert float(similarity.max()) <= ceiling.mean  # no written map is closer to a patient's than the ceiling
    recorded = [it["nearest_source_similarity"] for it in meta["training"]]
    assert recorded == pytest.approx(similarity.max(1).values.tolist(), abs=1e-4)
    assert all(it["label_source"] == "new:center_a" for it in meta["training"])


def _center_at(folder: Path, source: Path, affine: np.ndarray, factor: int) -> Path:
    """A center folder whose label maps are ``source``'s, ``factor`` times larger per side, stored at ``affine``."""
    (folder / "labelsTr").mkdir(parents=True)
    meta = json.loads((source / "dataset.json").read_text())
    training = []
    for i, item in enumerate(meta["training"][:4]):
        label = np.asarray(nib.load(source / item["label"]).dataobj).reshape(TINY["spatial_size"]).astype(np.uint8)
        nib.save(nib.Nifti1Image(np.kron(label, np.ones((factor, factor), np.uint8)), affine), folder / f"l{i}.nii.gz")
        training.append({"label": f"l{i}.nii.gz"})
    (folder / "dataset.json").write_text(json.dumps({"labels": meta["labels"], "training": training}))
    return folder


@pytest.mark.parametrize("label_source", ["given", "new"])
def test_synthetic_files_keep_the_label_maps_geometry_at_half_millimetre_spacing(
    demo_root: Path, two_center_handoff: Path, tmp_path: Path, label_source: str
):
    affine = np.array([[0.5, 0, 0, -12.0], [0, 0.5, 0, 30.0], [0, 0, 3.0, 7.5], [0, 0, 0, 1]])
    same = _center_at(tmp_path / "same" / "center_a", demo_root / "center_a", affine, 1)  # stored at 32x32
    double = _center_at(tmp_path / "double" / "center_a", demo_root / "center_a", affine, 2)  # 64x64, read at 32
    for folder, spacing in ((same, 0.5), (double, 1.0)):
        out = tmp_path / f"{folder.parent.name}_{label_source}"
        workflow = _synthesis(two_center_handoff, folder, out, style="center_a", label_source=label_source)
        workflow.run()
        workflow.finalize()
        stored = nib.load(next(folder.glob("*.nii.gz")))
        for item in json.loads((out / "dataset.json").read_text())["training"]:
            for key in ("image", "label"):
                written = nib.load(out / item[key])
                assert written.shape[:2] == tuple(TINY["spatial_size"])
                np.testing.assert_allclose(np.diag(written.affine)[:3], [spacing, spacing, 3.0])  # spacing kept
                np.testing.assert_allclose(written.affine[2, 3], 7.5)  # the slice position too
                # the same field of view: the first and the last voxel's centres move by half the change of spacing
                last_stored, last_written = np.array(stored.shape[:2]) - 1, np.array(written.shape[:2]) - 1
                for src_index, dst_index in (((0, 0), (0, 0)), (last_stored, last_written)):
                    src = stored.affine @ np.array([*src_index, 0, 1])
                    dst = written.affine @ np.array([*dst_index, 0, 1])
                    np.testing.assert_allclose(np.abs(dst[:2] - src[:2]), (spacing - 0.5) / 2, atol=1e-6)


def _score_handoff(handoff: Path, dataset_dir: Path, out: Path) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=str(REPO / "configs" / "evaluate.json"),
        meta_file=META,
        logging_file=False,
        workflow_type=None,
        **{"bundle_root": str(REPO), "handoff": str(handoff), "dataset_dir": str(dataset_dir), "output_dir": str(out)},
        device="cpu",
    )
    workflow.initialize()
    return workflow


def test_evaluate_scores_a_given_handoff_on_the_test_pairs_of_given_centers_without_training(
    demo_root: Path, two_center_handoff: Path, tmp_path: Path
):
    data = tmp_path / "known"
    data.mkdir()
    for name in ("center_b", "center_a"):
        (data / name).symlink_to(demo_root / name)
    (data / "centers.json").write_text(json.dumps({"order": ["center_b", "center_a"]}))
    before = two_center_handoff.read_bytes()
    _score_handoff(two_center_handoff, data, tmp_path / "eval").run()
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["data_list_key"] == "test" and report["spatial_size"] == TINY["spatial_size"]
    generator, handoff = generator_from_handoff(two_center_handoff)
    for name in ("center_a", "center_b"):
        images, labels, _ = load_pairs(demo_root / name, 2, TINY["spatial_size"], "test")
        expected = generator_quality(generator, handoff.codes[name], images, labels)
        assert report["metrics"][name] == {k: round(v, DECIMALS[k]) for k, v in expected.items()}
    assert list(report["metrics"]) == ["center_b", "center_a"]
    assert two_center_handoff.read_bytes() == before  # scored, not trained
    with pytest.raises(Exception) as info:  # center_c was never visited: no code, no style
        _score_handoff(two_center_handoff, demo_root, tmp_path / "unknown").run()
    error = info.value
    while error is not None and not isinstance(error, InputError):
        error = error.__cause__
    assert str(error) == (
        f"hand-off {two_center_handoff} has no center code for ['center_c'] (it knows ['center_a', 'center_b']); "
        "evaluate it on centers it visited: pass --dataset_dir one of them, or a folder whose centers.json lists "
        "only those."
    )
    assert not (tmp_path / "unknown").exists()


def test_synthesis_style_choice_is_explicit(demo_root: Path, two_center_handoff: Path, tmp_path: Path):
    out = tmp_path / "one_style"
    workflow = _synthesis(two_center_handoff, demo_root / "center_a", out, style="center_b")
    workflow.run()
    meta = json.loads((out / "dataset.json").read_text())
    assert {it["center"] for it in meta["training"]} == {"center_b"}
    with pytest.raises(RuntimeError) as err:  # the config parser wraps the ValueError
        _synthesis(two_center_handoff, demo_root / "center_a", tmp_path / "bad", style="center_c").run()
    assert "center_c" in str(err.value.__cause__) and "is not a center this generator knows" in str(err.value.__cause__)
    assert not (tmp_path / "bad").exists()
    assert not list(tmp_path.glob(".bad*"))


def test_mixture_style_follows_the_center_sizes_recorded_in_the_handoff():
    source = GeneratorSource(torch.nn.Identity(), {"a": 0, "b": 1, "c": 2}, {"a": 300, "b": 100, "c": 0}, "test")
    styles = choose_styles("mixture", source, 4000, seed=1)
    assert styles.count("c") == 0
    assert styles.count("a") / styles.count("b") == pytest.approx(3.0, rel=0.15)


def test_an_existing_synthetic_dataset_is_not_overwritten_without_asking(
    demo_root: Path, two_center_handoff: Path, tmp_path: Path
):
    out = tmp_path / "kept"
    out.mkdir()
    (out / "marker").write_text("keep me")
    with pytest.raises(RuntimeError) as err:  # the config parser wraps the FileExistsError
        _synthesis(two_center_handoff, demo_root / "center_a", out, style="center_a").run()
    assert isinstance(err.value.__cause__, FileExistsError) and "overwrite" in str(err.value.__cause__)
    assert (out / "marker").read_text() == "keep me"


def _numbers(obj) -> set[str]:
    """Every number in a JSON document, as the Markdown would print it."""
    if isinstance(obj, bool) or obj is None:
        return set()
    if isinstance(obj, (int, float)):
        return {str(obj)}
    if isinstance(obj, dict):
        return set().union(*(_numbers(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_numbers(v) for v in obj)) if obj else set()
    return set()


def test_compare_writes_a_report_whose_json_holds_every_number_of_its_markdown(demo_root: Path, tmp_path: Path):
    out = tmp_path / "runs"
    # a config-path key reaches every visit: the generator is built with 6 filters although the visits' ngf is 8
    visit = {**TINY, "network_def#ngf": 6}
    workflow = ConfigWorkflow(
        config_file=COMPARE,
        meta_file=META,
        logging_file=False,
        workflow_type=None,
        bundle_root=str(REPO),
        data_root=str(demo_root),
        output_dir=str(out),
        device="cpu",
        seeds=[0, 1],
        visit_overrides={"bundle_root": str(REPO), **visit},
        segmentation_overrides={"iterations": 2, "batch_size": 4, "val_fraction": 0},
        methods={
            "tdgan_bank": {"label": "TDGAN, bank reminding", "configs": []},
            "asyndgan": {"label": "AsynDGAN", "configs": ["configs/baselines/asyndgan.json"]},
        },
        training_map_sets=["tdgan_bank"],
    )
    workflow.initialize()
    workflow.run()
    report_dir = out / "report"
    report = json.loads((report_dir / "report.json").read_text())
    md = (report_dir / "report.md").read_text()

    centers = read_center_order(demo_root)
    methods = ["tdgan_bank", "asyndgan"]
    assert report["centers"] == centers and report["seeds"] == [0, 1]
    assert set(report["quality"]) == set(methods)
    assert len(report["quality"]["tdgan_bank"]["ssim"]) == len(centers)  # one row per visit

    # one budget of generator updates, read from every seed's hand-offs; AsynDGAN's epochs were made longer for it
    updates = {}
    for name in methods:
        for seed, handoff in zip([0, 1], report["methods"][name]["final_handoff"]):
            assert Path(handoff).is_relative_to(out / f"seed{seed}" / name)
            assert load_handoff(handoff).network["ngf"] == 6
            updates[name, seed] = sum(v["iterations"] for v in load_handoff(handoff).visits)
    assert len(set(updates.values())) == 1
    budget = report["budget"]
    assert budget["reference"] == "tdgan_bank" and budget["generator_updates"] == updates["tdgan_bank", 0]
    spent = budget["methods"]
    assert spent["asyndgan"]["generator_updates_per_seed"] == [budget["generator_updates"]] * 2
    assert spent["asyndgan"]["natural_generator_updates"] == budget["generator_updates"] // 3  # 3 centers per step
    assert spent["asyndgan"]["epochs"] == spent["tdgan_bank"]["epochs"] // 3  # the same schedule as one TDGAN visit
    assert spent["asyndgan"]["images_seen"] == 3 * spent["tdgan_bank"]["images_seen"]  # a batch of every center

    # every metric: the mean and t-interval over the two seeds, per-seed values kept
    cell = report["quality"]["tdgan_bank"]["ssim"][-1][0]
    assert cell["n"] == 2 and len(cell["per_seed"]) == 2 and cell["low"] <= cell["mean"] <= cell["high"]
    assert report["quality"]["tdgan_bank"]["ssim"][0][1] is None  # center_b not visited after visit 1
    forgetting = report["forgetting"]
    assert forgetting["tdgan_bank"]["ssim"][centers[0]]["n"] == 2
    assert forgetting["tdgan_bank"]["ssim"][centers[-1]] is None  # no visit came after the last center's
    assert all(v is None for v in forgetting["asyndgan"]["ssim"].values())  # one visit: nothing measured
    sets = {"tdgan_bank", "asyndgan", "real_all", "real_last", "tdgan_bank_training_maps"}
    scores = report["segmentation"]["scores"]
    assert set(scores) == sets
    assert {k for k, t in report["segmentation"]["training_sets"].items() if t["shareable"]} == set(methods)
    for name, per_center in scores.items():
        assert set(per_center) == set(centers), name
        for c in centers:
            for cls, s in per_center[c].items():
                assert isinstance(s["n"], int) and len(s["dice_per_image"]) == 2, (name, c, cls)
                if s["n"]:
                    assert s["dice"]["n"] == 2 and len(s["dice_bootstrap"]) == len(s["hd95_bootstrap"]) == 2
                    assert all(lo <= hi for lo, hi in s["dice_bootstrap"])
                    assert f"n = {s['n']}" in md

    # every set's Dice as a fraction of the real-all UNet's, seed by seed
    ratios = report["segmentation"]["relative_to_real_all"]["ratios"]
    assert set(ratios) == sets - {"real_all"}
    for name in ratios:
        for c in centers:
            for cls, r in ratios[name][c].items():
                mine, real = scores[name][c][cls]["dice"], scores["real_all"][c][cls]["dice"]
                if r is None:
                    assert mine is None or real is None or 0 in real["per_seed"]
                    continue
                expected = [a / b if b else None for a, b in zip(mine["per_seed"], real["per_seed"])]
                assert r["per_seed"] == pytest.approx(expected)
    assert "fraction of real-all Dice" in md

    # distribution metrics per center and shareable set, against the real test images, with the real-image row
    dist = report["distribution"]
    assert set(dist["scores"]) == {"real_training", *methods}
    assert dist["ms_ssim"]["kernel_size"] == 11 and dist["ms_ssim"]["scales"] == 2  # 32x32: two scales fit
    for key, per_center in dist["scores"].items():
        assert set(per_center) == set(centers), key
        for c in centers:
            s = per_center[c]
            assert s["real_images"] == 2 and s["images"] == 8, (key, c)  # 2 test images; 8 training or new maps
            assert all(s[m]["n"] == 2 for m in ("fid", "kid", "ms_ssim")), (key, c)
    assert "biased upwards" in md and "n/a" in md

    leakage = report["leakage"]
    assert set(leakage["near_copies"]) == sets - {"real_all", "real_last"}
    assert set(leakage["memorisation_gap"]["tdgan_bank"]) == set(centers)
    assert leakage["handoff_reconstruction"]["tdgan_bank"]["carries_label_maps"] is True
    # the shareable sets' new-map ceilings, calibrated per center, in the report (derived values, no subject)
    ceilings = report["new_label_maps"]["ceilings"]
    assert set(ceilings) == set(centers) and "**New label maps.**" in md
    for c in centers:
        assert f"| {c} | {ceilings[c]['mean_foreground_dice']} |" in md
        assert "subject" not in json.dumps(ceilings[c]).replace("another subject", "")
    figures = report["figures"]
    for png in [*figures["grids"].values(), figures["quality_matrix"], figures["dice_bars"], figures["distribution"]]:
        assert (report_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({png})" in md

    known = _numbers(report)
    shown = []
    for line in md.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        for cell in line.strip("|").split("|"):
            for token in re.split(r"[ /()\[\],;=]+", cell.strip()):
                if re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", token):
                    shown.append(token)
    assert len(shown) > 200
    missing = sorted({t for t in shown if t not in known})
    assert not missing, f"numbers shown in report.md but absent from report.json: {missing}"


@pytest.mark.parametrize("augment", [True, False])
def test_segmentation_augmentation_moves_image_and_label_together(augment: bool):
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "segmentation.json"))
    parser["augment"] = augment
    preprocessing = parser.get_parsed_content("train#loading").transforms
    transforms = parser.get_parsed_content("train#preprocessing")
    random_ones = [t for t in transforms.transforms if isinstance(t, Randomizable)]
    assert len(transforms.transforms) == len(preprocessing) + len(random_ones)
    assert bool(random_ones) == augment
    if not augment:
        return
    augmentation = type(transforms)(random_ones)
    # an asymmetric label map whose image is the label scaled to [0, 1]: after any flip and intensity change, each
    # class must still have one intensity, increasing with the class, at the flipped label's pixels
    label = torch.zeros(1, 16, 16, dtype=torch.long)
    label[0, 2:6, 1:4], label[0, 9:14, 10:12], label[0, 3, 12] = 1, 2, 3
    flipped = set()
    for seed in range(16):
        augmentation.set_random_state(seed)
        out = augmentation({"image": label.float() / 3, "label": label.clone()})
        image, lab = torch.as_tensor(out["image"]), torch.as_tensor(out["label"])
        levels = [image[lab == k].unique() for k in range(4)]
        assert all(len(v) == 1 for v in levels), seed
        assert all(a < b for a, b in zip(levels, levels[1:])), seed
        flipped.add(bool((lab != label).any()))
    assert flipped == {True, False}


def _compare(demo_root: Path, out: Path, **override) -> dict:
    workflow = ConfigWorkflow(
        config_file=COMPARE,
        meta_file=META,
        logging_file=False,
        workflow_type=None,
        bundle_root=str(REPO),
        data_root=str(demo_root),
        output_dir=str(out),
        device="cpu",
        visit_overrides={"bundle_root": str(REPO), **TINY},
        segmentation_overrides=override.pop("segmentation_overrides", {"iterations": 2, "batch_size": 4}),
        methods={
            "tdgan_bank": {"label": "TDGAN, bank reminding", "configs": []},
            "finetune": {"label": "Sequential fine-tuning", "configs": ["configs/baselines/finetune.json"]},
        },
        training_map_sets=[],
        **override,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return json.loads((out / "report" / "report.json").read_text())


def test_parallel_workers_train_every_generator_and_network_once_and_the_report_reuses_them(
    demo_root: Path, tmp_path: Path
):
    every_pair = {"iterations": 2, "batch_size": 4, "val_fraction": 0}
    report = _compare(
        demo_root,
        tmp_path / "runs",
        workers=2,
        resume=False,
        site_sets=["tdgan_bank"],
        segmentation_overrides=every_pair,
    )
    timings = report["timings"]
    assert "train generators (2 workers)" in timings and "seed 0: train segmentation networks (2 workers)" in timings
    for name in ("tdgan_bank", "finetune"):
        (handoff,) = report["methods"][name]["final_handoff"]
        assert load_handoff(handoff).visits[-1]["iterations"] > 0
        assert timings[f"seed 0: train generator: {name}"] < timings["train generators (2 workers)"]
        # each job's own time, measured in its worker, is in the report too
        assert 0 < timings[f"seed 0: generator in a worker: {name}"] <= timings["train generators (2 workers)"]
    stage = timings["seed 0: train segmentation networks (2 workers)"]
    for name in ("tdgan_bank", "finetune", "real_all", "real_last"):
        assert 0 < timings[f"seed 0: segmentation in a worker: {name}"] <= stage
    checkpoints = sorted((tmp_path / "runs" / "segmentation" / "seed0").glob("*/segmentation.pt"))
    centers = read_center_order(demo_root)
    sites = [f"tdgan_bank_site_{c}" for c in centers]
    own = [f"real_own_{c}" for c in centers[:-1]]  # the last center's own real set is real_last
    assert [p.parent.name for p in checkpoints] == sorted(
        ["finetune", "real_all", "real_last", "tdgan_bank", *sites, *own]
    )
    # a site's set: its own real training pairs and the pairs made in the OTHER centers' styles, no more
    sets = report["segmentation"]["training_sets"]
    synthetic = json.loads((tmp_path / "runs" / "seed0" / "tdgan_bank" / "synthetic" / "dataset.json").read_text())
    for c in centers:
        real = len(json.loads((demo_root / c / "dataset.json").read_text())["training"])
        others = sum(item["center"] != c for item in synthetic["training"])
        assert sets[f"tdgan_bank_site_{c}"]["pairs"] == real + others and others < len(synthetic["training"])
        assert sets[f"tdgan_bank_site_{c}"]["site"] == c and not sets[f"tdgan_bank_site_{c}"]["shareable"]


_ORPHAN_PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from scripts.evaluation.protocol import _worker_setup
if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(1, mp_context=context, initializer=_worker_setup, initargs=(1,))
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 300)  # a long job, as a generator's training is
    time.sleep(300)
"""


def test_a_protocol_worker_ends_when_the_protocol_process_is_killed(tmp_path: Path):
    """Killing the protocol (SIGKILL: no shutdown) must not leave its workers training on as orphans."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_PARENT], cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    worker = int(parent.stdout.readline())
    try:
        time.sleep(1)
        assert _alive(worker), "the worker should run its job while the protocol runs"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(worker), "the worker outlived the protocol process"
    finally:
        parent.kill()
        if _alive(worker):  # the test failed: do not leave the orphan behind
            os.kill(worker, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting for its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_the_fast_demos_selection_trains_only_its_networks_and_one_is_reused_only_for_the_same_data(
    demo_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    out = tmp_path / "runs"
    fast = {"segmentation_sets": ["tdgan_bank"], "real_baselines": ["real_all"]}  # as configs/demo.json
    with caplog.at_level("INFO"):
        report = _compare(demo_root, out, **fast)
    # only TDGAN-bank's shareable set and the real images of every center train a UNet; fine-tuning's set is still
    # made, audited and scored against the real images
    assert sorted(p.parent.name for p in (out / "segmentation" / "seed0").glob("*/segmentation.pt")) == [
        "real_all",
        "tdgan_bank",
    ]
    assert set(report["segmentation"]["scores"]) == {"real_all", "tdgan_bank"}
    assert set(report["segmentation"]["relative_to_real_all"]["ratios"]) == {"tdgan_bank"}
    assert {"tdgan_bank", "finetune"} <= set(report["leakage"]["near_copies"])
    assert set(report["forgetting"]) == {"tdgan_bank", "finetune"}
    assert "finetune" in report["distribution"]["scores"]
    # fine-tuning's set is made from new label maps: shareable in the near-copy table although it trained no UNet
    md = (out / "report" / "report.md").read_text()
    assert re.search(r"^\| Sequential fine-tuning \| yes \| ", md, re.M)
    # every stage's line says the time so far; once a generator was trained, the estimate of the time left
    stages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[evaluate] seed 0: ")]
    assert stages and all(re.search(r"\((\d+ min )?\d+ s so far", m) for m in stages)
    assert all(re.search(r"about (\d+ min )?\d+ s left\)$", m) for m in stages)

    checkpoint = out / "segmentation" / "seed0" / "tdgan_bank" / "segmentation.pt"
    first = checkpoint.stat().st_mtime_ns
    _compare(demo_root, out, **fast)  # nothing changed: reused
    assert checkpoint.stat().st_mtime_ns == first
    synthetic = out / "seed0" / "tdgan_bank" / "synthetic"
    image = synthetic / json.loads((synthetic / "dataset.json").read_text())["training"][0]["image"]
    nifti = nib.load(image)
    nib.save(nib.Nifti1Image(np.asarray(nifti.dataobj) * 0.5, nifti.affine), image)  # other training data there
    _compare(demo_root, out, **fast)
    assert checkpoint.stat().st_mtime_ns != first


@pytest.mark.parametrize(
    "value, sets",
    [(True, ["real_all", "real_last"]), ("false", []), (["real_last", "real_all"], ["real_all", "real_last"])],
)
def test_real_baselines_takes_a_flag_or_the_names_of_the_real_sets(value, sets):
    assert real_sets(value) == sets


def test_real_baselines_refuses_a_name_it_does_not_know():
    with pytest.raises(ValueError, match="real_first"):
        real_sets(["real_first"])


def test_the_time_left_counts_the_training_still_to_do_at_the_rates_measured():
    progress = Progress(generator_total=1000, segmentation_total=400)
    assert progress.stage(10.0).endswith("so far)")  # nothing trained yet: no estimate
    # 500 generator images in 100 s: 500 more take 100 s; 400 UNet images at 0.2 of a generator image take 16 s;
    # the other stages (10 s so far against 100 s of training) add their share of it: 116 s + 11.6 s
    tail = progress.stage(100.0, generator=500)
    assert tail.endswith("about 2 min 08 s left)")
    # the UNet's own rate replaces the assumed one once measured: 200 images in 40 s, 200 left
    progress.stage(100.0, generator=500)
    assert progress.stage(40.0, segmentation=200).endswith("about 42 s left)")
    # results found finished leave the work to do without counting as time: a run that trains half its generators
    # and reuses the other half (and its UNets) ends with nothing left
    resumed = Progress(generator_total=1000, segmentation_total=400)
    resumed.stage(0.5, reused=(500, 0))
    assert resumed.stage(100.0, generator=500).endswith("about 16 s left)")  # the UNets: 400 x 0.2 x 0.2 s
    assert resumed.stage(0.1, reused=(0, 400)).endswith("about 0 s left)")


def test_relative_dice_is_taken_seed_by_seed_and_a_site_set_only_at_its_site():
    def dice(*per_seed):
        return {"lesion": {"dice": {"mean": sum(per_seed) / len(per_seed), "per_seed": list(per_seed)}}}

    scores = {
        "real_all": {"a": dice(0.5, 0.8), "b": dice(0.4, 0.0)},
        "synthetic": {"a": dice(0.25, 0.8), "b": dice(0.2, 0.3)},
        "site_a": {"a": dice(1.0, 0.4), "b": dice(0.4, 0.4)},
    }
    sets = {"real_all": {}, "synthetic": {}, "site_a": {"site": "a"}}
    ratios = relative_dice(scores, sets, ["a", "b"], ["lesion"])["ratios"]
    assert ratios["synthetic"]["a"]["lesion"]["per_seed"] == pytest.approx([0.5, 1.0])
    assert ratios["synthetic"]["a"]["lesion"]["mean"] == pytest.approx(0.75)
    assert ratios["synthetic"]["b"]["lesion"]["per_seed"] == pytest.approx([0.5, None])  # real Dice 0: no ratio
    assert ratios["synthetic"]["b"]["lesion"]["n"] == 1
    assert ratios["site_a"]["a"]["lesion"]["per_seed"] == pytest.approx([2.0, 0.5])
    assert ratios["site_a"]["b"]["lesion"] is None  # a site's set is compared at its own center only
