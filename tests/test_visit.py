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
"""Tests of one visit through the real configs/train.json: the hand-off it writes, reads, refuses; resume; 3D."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import META, REPO, TINY, TRAIN, run_visit, visit_workflow
from monai.data import load_decathlon_datalist
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scripts.handoff import HandoffError, load_handoff, payload_digest
from scripts.visit import TimeLeft, duration_text


@pytest.fixture(scope="module")
def first_visit(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-off of a tiny first visit at center_a."""
    out = tmp_path_factory.mktemp("visit_a")
    run_visit([demo_root / "center_a"], out)
    return out / "handoff.pt"


def _messages(err: BaseException | None) -> list[str]:
    """The messages along an exception's cause chain (the bundle's config parser wraps the original error)."""
    chain = []
    while err is not None:
        chain.append(str(err))
        err = err.__cause__
    return chain


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_first_visit_writes_a_handoff_with_registry_weights_bank_and_loss_summary(first_visit: Path):
    handoff = load_handoff(first_visit)
    assert handoff.registry == [{"name": "center_a", "code": 0}]
    assert handoff.network["ngf"] == TINY["ngf"] and handoff.network["max_centers"] == 8
    assert set(handoff.label_bank) == {"center_a"} and handoff.label_bank["center_a"].dtype == torch.uint8
    assert len(handoff.label_bank["center_a"]) == TINY["label_bank_size"]
    (visit,) = handoff.visits
    assert visit["iterations"] == 8 and visit["epochs"] == 2  # 8 slices / batch 2 x 2 epochs
    assert visit["final_losses"]["g_loss"] > 0 and len(visit["loss_history"]) == 2
    assert {"monai", "torch", "bundle"} <= set(handoff.versions)
    assert not (first_visit.parent / "checkpoints").exists()  # resume checkpoints are removed once it is written
    assert (first_visit.parent / "tensorboard").is_dir()


def test_handoff_holds_no_real_image(demo_root: Path, first_visit: Path):
    images = []
    for split in ("training", "test"):
        items = load_decathlon_datalist(
            str(demo_root / "center_a" / "dataset.json"), True, split, demo_root / "center_a"
        )
        images += [np.asarray(nib.load(i["image"]).dataobj, dtype=np.float32) for i in items]
    raw = torch.load(first_visit, weights_only=True)["payload"]
    tensors = list(raw["generator"].values()) + list(raw["label_bank"].values())
    for t in tensors:
        values = t.float().numpy()
        for image in images:
            scaled = 2 * (image - image.min()) / (image.max() - image.min()) - 1  # the preprocessed image, too
            for candidate in (image, scaled):
                if values.size >= candidate.size:
                    windows = values.reshape(-1)[: values.size // candidate.size * candidate.size]
                    windows = windows.reshape(-1, candidate.size)
                    assert not np.any(np.all(np.isclose(windows, candidate.reshape(-1), atol=1e-4), axis=1))
    for maps in raw["label_bank"].values():  # the bank holds label maps: class values only
        assert set(torch.unique(maps).tolist()) <= {0, 1, 2, 3}


def test_second_visit_keeps_the_arriving_generator_frozen_and_registers_the_next_code(
    demo_root: Path, first_visit: Path, tmp_path: Path
):
    before = _sha(first_visit)
    arriving = load_handoff(first_visit).generator
    workflow = run_visit([demo_root / "center_b"], tmp_path, handoff_in=first_visit)
    visit = workflow.parser.get_parsed_content("visit")
    assert visit.teacher is not None and visit.reminder is not None
    for name, value in visit.teacher.state_dict().items():
        assert torch.equal(value.cpu(), arriving[name]), f"the previous generator changed: {name}"
    assert _sha(first_visit) == before  # the incoming file is untouched
    out = load_handoff(tmp_path / "handoff.pt")
    assert out.registry == [{"name": "center_a", "code": 0}, {"name": "center_b", "code": 1}]
    assert set(out.label_bank) == {"center_a", "center_b"}
    assert torch.equal(out.label_bank["center_a"], load_handoff(first_visit).label_bank["center_a"])
    assert any(not torch.equal(out.generator[k], arriving[k]) for k in arriving)  # the generator did train
    assert out.visits[-1]["reminded_codes"] == [0] and out.visits[-1]["final_losses"]["reminding"] > 0


def test_local_reminding_passes_on_no_label_maps(demo_root: Path, first_visit: Path, tmp_path: Path):
    run_visit([demo_root / "center_b"], tmp_path, handoff_in=first_visit, reminding_source="local")
    out = load_handoff(tmp_path / "handoff.pt")
    assert out.label_bank == {} and [e["name"] for e in out.registry] == ["center_a", "center_b"]


def test_tampered_handoff_is_refused_with_a_clear_message(first_visit: Path, tmp_path: Path):
    raw = torch.load(first_visit, weights_only=True)
    name = next(iter(raw["payload"]["generator"]))
    raw["payload"]["generator"][name] = raw["payload"]["generator"][name] + 1e-3
    torch.save(raw, tmp_path / "tampered.pt")
    with pytest.raises(HandoffError, match="checksum mismatch.*modified or corrupted"):
        load_handoff(tmp_path / "tampered.pt")
    (tmp_path / "truncated.pt").write_bytes(first_visit.read_bytes()[:1000])
    with pytest.raises(HandoffError, match="not a readable hand-off"):
        load_handoff(tmp_path / "truncated.pt")
    with pytest.raises(HandoffError, match="file not found"):
        load_handoff(tmp_path / "missing.pt")


def test_handoff_with_pickled_objects_is_refused(first_visit: Path, tmp_path: Path):
    raw = torch.load(first_visit, weights_only=True)
    raw["payload"]["visits"].append({"evil": Path("/etc/passwd")})  # not a plain value: needs unpickling code
    raw["sha256"] = payload_digest({**raw["payload"], "visits": []})
    torch.save(raw, tmp_path / "pickled.pt")
    with pytest.raises(HandoffError, match="Unsupported global"):
        load_handoff(tmp_path / "pickled.pt")


def test_mismatched_handoff_is_refused_before_training(demo_root: Path, first_visit: Path, tmp_path: Path):
    with pytest.raises(Exception) as info:
        visit_workflow([demo_root / "center_b"], tmp_path, handoff_in=first_visit, ngf=16).run()
    chain = _messages(info.value)
    assert any(
        "generator settings do not match: ngf=8 in the hand-off but 16 in this configuration" in m for m in chain
    )
    assert not (tmp_path / "handoff.pt").exists()


def test_a_center_beyond_max_centers_is_refused(demo_root: Path, tmp_path: Path):
    out = tmp_path / "a"
    run_visit([demo_root / "center_a"], out, max_centers=1)
    with pytest.raises(Exception) as info:
        visit_workflow([demo_root / "center_b"], tmp_path / "b", handoff_in=out / "handoff.pt", max_centers=1).run()
    chain = _messages(info.value)
    assert any("needs code 1 but the generator holds max_centers=1" in m for m in chain)


def _write_3d_center(root: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    center = root / "vol_center"
    (center / "imagesTr").mkdir(parents=True)
    (center / "labelsTr").mkdir(parents=True)
    training = []
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, size)] * 3, indexing="ij")
    for i in range(n):
        r = np.sqrt(zz**2 + yy**2 + xx**2)
        label = (r < 0.8).astype(np.uint8) + (np.sqrt((zz - 0.2) ** 2 + yy**2 + xx**2) < 0.2 + 0.05 * i)
        image = (0.3 * label + 0.05 * rng.standard_normal(label.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), center / "imagesTr" / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), center / "labelsTr" / f"v{i}.nii.gz")
        training.append({"image": f"imagesTr/v{i}.nii.gz", "label": f"labelsTr/v{i}.nii.gz"})
    (center / "dataset.json").write_text(
        json.dumps({"labels": {"0": "bg", "1": "organ", "2": "lesion"}, "training": training})
    )
    return center


def test_3d_visit_on_tiny_volumes_runs(tmp_path: Path):
    center = _write_3d_center(tmp_path, n=2, size=32)
    override = {"spatial_dims": 3, "spatial_size": [32, 32, 32], "num_classes": 3, "ngf": 4, "ndf": 4, "batch_size": 1}
    override["bank_maps"] = "patients"  # two near-identical test volumes: no new map can be made far from both
    run_visit([center], tmp_path / "out", **override)
    handoff = load_handoff(tmp_path / "out" / "handoff.pt")
    assert handoff.network["spatial_dims"] == 3
    assert handoff.label_bank["vol_center"].shape[1:] == (1, 32, 32, 32)
    assert handoff.visits[0]["iterations"] == 4


def test_interrupted_visit_resumes_from_its_last_checkpoint(demo_root: Path, tmp_path: Path):
    args = {**TINY, "epochs_constant": 15, "epochs_decay": 15, "dataset_dir": str(demo_root / "center_a")}
    args["output_dir"] = str(tmp_path)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", TRAIN, "--meta_file", META]
    cmd += ["--logging_file", str(REPO / "configs" / "logging.conf"), "--bundle_root", str(REPO)]
    for k, v in args.items():
        cmd += [f"--{k}", str(v).replace(" ", "")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_dir = tmp_path / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(ckpt_dir.glob("*epoch=*.pt")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # a hard stop: no handler runs, nothing is cleaned up
    proc.wait()
    assert list(ckpt_dir.glob("*epoch=*.pt")), "no checkpoint was written before the kill"
    assert not (tmp_path / "handoff.pt").exists()

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming the interrupted visit from" in done.stdout + done.stderr
    (visit,) = load_handoff(tmp_path / "handoff.pt").visits
    assert visit["resumed_from_epoch"] >= 1
    assert visit["epochs"] == 30 and visit["iterations"] == 30 * 4
    assert [e["epoch"] for e in visit["loss_history"]] == list(range(1, 31))  # the epochs before the kill too


def test_a_center_with_fewer_items_than_a_batch_is_refused_instead_of_skipped(demo_root: Path, tmp_path: Path):
    with pytest.raises(Exception) as info:
        visit_workflow([demo_root / "center_a"], tmp_path, batch_size=16).run()  # 8 training slices
    chain = _messages(info.value)
    assert any("fewer training items than batch_size=16" in m for m in chain)


def _tensorboard(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_a_one_epoch_visit_logs_its_loss_and_hands_off_epoch_1(demo_root: Path, tmp_path: Path, stats_lines):
    run_visit([demo_root / "center_a"], tmp_path, epochs_constant=1, epochs_decay=0)
    (visit,) = load_handoff(tmp_path / "handoff.pt").visits
    (epoch,) = visit["loss_history"]
    assert epoch["epoch"] == 1 and epoch["g_loss"] > 0 and visit["final_losses"] == epoch
    logged = [line for line in stats_lines() if line.startswith("Epoch[1] Metrics -- ")]
    assert len(logged) == 1 and f"g_loss: {epoch['g_loss']:.4f}" in logged[0]  # the epoch's own mean, not a later one
    assert "State values: time_left: 0 s " in stats_lines()  # the epoch line's estimate: none left after the last
    assert f"training on cpu ({torch.get_num_threads()} threads)." in stats_lines()  # where it trains, named
    means = _tensorboard(tmp_path / "tensorboard").Scalars("epoch/g_loss")
    assert [(e.step, round(e.value, 4)) for e in means] == [(1, round(epoch["g_loss"], 4))]


def test_the_time_left_is_the_remaining_epochs_at_the_mean_epoch_time_of_this_process():
    from ignite.engine import Engine, Events

    engine = Engine(lambda e, b: time.sleep(0.25))
    TimeLeft().attach(engine)
    left = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: left.append(e.state.time_left))
    engine.run([0, 0], max_epochs=4)  # 0.5 s per epoch
    assert left[0] == "2 s" and left[-1] == "0 s"  # after the first, 3 epochs x 0.5 s (rounded to a second)
    assert duration_text(185.4) == "3 min 05 s" and duration_text(42) == "42 s"


def test_tensorboard_keeps_epoch_means_and_iteration_losses_apart_and_shows_samples_each_epoch(first_visit: Path):
    history = load_handoff(first_visit).visits[0]["loss_history"]
    events = _tensorboard(first_visit.parent / "tensorboard")
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    for name in ("g_loss", "d_loss", "g_l1", "reminding"):
        assert {f"epoch/{name}", f"iteration/{name}"} <= scalars and name not in scalars
    means = events.Scalars("epoch/g_loss")
    assert [e.step for e in means] == [1, 2]
    assert [round(e.value, 4) for e in means] == [round(h["g_loss"], 4) for h in history]  # epoch k holds epoch k
    assert [e.step for e in events.Scalars("iteration/g_loss")] == list(range(1, 9))  # 4 steps per epoch
    for tag in ("input_0", "input_1", "output"):  # label maps, real images, synthetic images
        (found,) = [t for t in images if t.startswith(tag + "_")]
        shots = events.Images(found)
        assert [s.step for s in shots] == [1, 2]
        samples = min(4, TINY["batch_size"])  # tensorboard_samples 4, at most one batch
        assert shots[0].width == samples * TINY["spatial_size"][1] and shots[0].height == TINY["spatial_size"][0]
    output = next(t for t in images if t.startswith("output_"))
    first, second = (s.encoded_image_string for s in events.Images(output))
    assert first != second  # the generator's samples change as it learns; the inputs are the same
    inputs = next(t for t in images if t.startswith("input_0_"))
    assert len({s.encoded_image_string for s in events.Images(inputs)}) == 1
