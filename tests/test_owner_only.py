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
"""Everything a run writes from patients' data is owner-only (files 0o600, folders 0o700) under a permissive umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import META, REPO, TINY, run_visit, segmentation_workflow
from monai.bundle import ConfigWorkflow


@pytest.fixture
def umask_022():
    """The usual umask, under which files are created 0o644 and folders 0o755 unless the writer says otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _shared(root: Path) -> list[str]:
    """Every path under ``root`` (itself included) that its group or others may read, write or enter."""
    found = []
    for path in [root, *sorted(root.rglob("*"))]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        if mode & 0o077 or mode & expected != expected:
            found.append(f"{path.relative_to(root.parent)} {oct(mode)}")
    return found


def test_a_visit_and_a_synthetic_set_from_its_training_maps_are_written_owner_only(
    demo_root: Path, tmp_path: Path, umask_022
):
    out = tmp_path / "runs" / "visit"  # parents created by the visit too
    run_visit([demo_root / "center_a"], out, epochs_decay=0, tensorboard_samples=2)
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and (out / "handoff.pt").is_file()  # the event file holds real images and label maps
    synthetic = tmp_path / "runs" / "synthetic_training_maps"  # generated from the patients' own label maps
    workflow = ConfigWorkflow(
        config_file=str(REPO / "configs" / "inference.json"),
        meta_file=META,
        logging_file=False,
        workflow_type="infer",
        **{"bundle_root": str(REPO), "handoff": str(out / "handoff.pt"), "dataset_dir": str(demo_root / "center_a")},
        **{
            "output_dir": str(synthetic),
            "label_source": "given",
            "spatial_size": TINY["spatial_size"],
            "device": "cpu",
        },
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    assert list((synthetic / "labelsTr").glob("*.nii.gz"))
    shared = _shared(tmp_path / "runs")
    assert not shared, f"not owner-only: {shared}"


def test_a_segmentation_run_writes_its_checkpoint_tensorboard_and_per_case_csvs_owner_only(
    demo_root: Path, tmp_path: Path, umask_022
):
    out = tmp_path / "seg"
    workflow = segmentation_workflow(demo_root / "center_a", out, val_fraction=0.25, val_interval=1)
    workflow.run()
    workflow.finalize()
    assert (out / "segmentation.pt").is_file() and list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert list((out / "validation").glob("*.csv"))  # per-case rows name the patients' image files
    shared = _shared(out)
    assert not shared, f"not owner-only: {shared}"


def test_the_tensorboard_writer_keeps_a_reopened_event_file_and_an_existing_folder_owner_only(
    tmp_path: Path, umask_022
):
    from scripts.tensorboard_writer import PrivateSummaryWriter

    folder = tmp_path / "tb"
    folder.mkdir(mode=0o755)
    writer = PrivateSummaryWriter(str(folder))
    writer.add_scalar("x", 1.0, 1)
    writer.close()
    writer.add_scalar("x", 2.0, 2)  # a closed writer opens a new event file
    writer.close()
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2
    shared = _shared(folder)
    assert not shared, f"not owner-only: {shared}"
