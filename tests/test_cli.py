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
"""The command line's last word: every refusal of ``python -m monai.bundle run`` ends in one line, ``error: <what is
wrong and what to do>``, with a non-zero status; a finished visit says so and exits 0."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY, run_visit
from monai.bundle import run
from visit_faults import visit_command

from scripts.excepthook import DEBUG_ENV, _hook, install_for_bundle_cli
from scripts.flags import FlagError

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
SHORT = {**TINY, "batch_size": 4, "epochs_constant": 2, "epochs_decay": 1}  # 3 epochs of 2 steps


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def finished(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished tiny visit at center_a (run in this process)."""
    out = tmp_path_factory.mktemp("cli_first")
    run_visit([demo_root / "center_a"], out)
    return out


@pytest.fixture(scope="module")
def runs(demo_root: Path, finished: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Independent command lines, run at once (each mostly waits for its imports): name -> (completed, folder)."""
    tmp = tmp_path_factory.mktemp("cli")
    kept = tmp / "synthetic"
    kept.mkdir()
    (kept / "marker").write_text("keep me")
    center_a = demo_root / "center_a"
    synthesis = {"handoff": finished / "handoff.pt", "dataset_dir": center_a, "output_dir": kept, "device": "cpu"}
    synthesis |= {"spatial_size": [32, 32], "style": "center_a"}
    commands = {
        "bad_boolean": (visit_command(dataset_dir=center_a, output_dir=tmp / "b", amp="maybe", **SHORT), {}),
        "missing_center": (visit_command(dataset_dir=tmp / "center_x", output_dir=tmp / "m", **SHORT), {}),
        "bad_loss_setting": (
            visit_command(dataset_dir=center_a, output_dir=tmp / "w" / "v", l1_class_weights='{"9":2}', **SHORT),
            {},
        ),
        "bad_label_map_setting": (
            visit_command(
                dataset_dir=center_a,
                output_dir=tmp / "l",
                label_map_settings='{"relocatable":[3],"hosts":[1],"lesion_spill":1.5}',
                **SHORT,
            ),
            {},
        ),
    }
    procs = {
        name: subprocess.Popen(
            cmd, cwd=REPO, env={**ENV, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, (cmd, env) in commands.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return {"results": results, "tmp": tmp, "kept": kept, "synthesis": synthesis}


def test_a_bad_boolean_is_refused_in_one_line_before_anything_is_written(runs: dict):
    done = runs["results"]["bad_boolean"]
    assert done.returncode != 0
    assert (
        _last_line(done)
        == "error: amp must be true or false (also 1 or 0, any case), got 'maybe'; pass e.g. --amp false."
    )
    assert "Traceback" not in done.stderr and "Failed to evaluate" not in done.stderr
    assert not (runs["tmp"] / "b").exists()


def test_a_training_setting_the_trainer_or_the_label_bank_refuses_ends_in_its_one_line(runs: dict):
    """A loss setting checked where the trainer is built (here a class the label maps do not have), and a label-map
    setting out of range, are the last line, not MONAI's wrapping traceback; neither leaves a folder behind (the
    output folder, its parent, its lock and TensorBoard log were made before the refusal)."""
    done = runs["results"]["bad_loss_setting"]
    assert done.returncode != 0
    assert _last_line(done) == "error: l1_class_weights: class '9' is not one of 0..3."
    assert "Traceback" not in done.stderr and "Failed to instantiate" not in done.stderr
    done = runs["results"]["bad_label_map_setting"]  # checked where the visit makes its label bank, before training
    assert done.returncode != 0
    assert _last_line(done) == "error: lesion_spill must be a number in [0, 1), got 1.5."
    assert "Traceback" not in done.stderr and "Epoch[1]" not in done.stderr
    assert not (runs["tmp"] / "w").exists() and not (runs["tmp"] / "l").exists()


def test_a_missing_center_folder_is_the_last_line(runs: dict):
    done = runs["results"]["missing_center"]
    center = runs["tmp"] / "center_x"
    assert done.returncode != 0
    assert _last_line(done).strip() == (
        f"{center}: center folder not found; expected a folder with an MSD-style dataset.json."
    )
    assert "error: 1 problem(s) with the inputs of this visit; nothing was trained or written:" in done.stderr
    assert not (runs["tmp"] / "m").exists()


def test_overwrite_false_keeps_an_existing_synthetic_dataset_and_says_so(
    runs: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    """Run in this process (MONAI's ``run``, what ``python -m monai.bundle run`` calls, the value as the command line
    gives it), its refusal through the command line's hook."""
    kept = runs["kept"]
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in runs["synthesis"].items()}
    with pytest.raises(Exception) as refused:
        run(config_file=str(REPO / "configs" / "inference.json"), bundle_root=str(REPO), logging_file=False,
            meta_file=str(REPO / "configs" / "metadata.json"), overwrite="false", **settings)  # fmt: skip
    lines, fallback = _hooked(refused.value, capsys, monkeypatch)
    assert not fallback and lines[-1] == f"error: {kept}: exists; choose another output_dir or pass --overwrite true."
    assert (kept / "marker").read_text() == "keep me" and sorted(p.name for p in kept.iterdir()) == ["marker"]


def test_rerunning_a_finished_visit_says_so_and_exits_0_without_training(
    demo_root: Path, finished: Path, caplog: pytest.LogCaptureFixture
):
    written = (finished / "handoff.pt").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        run_visit([demo_root / "center_a"], finished)  # the same visit again, in this process
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert f"visit already finished: {finished / 'handoff.pt'}" in log
    assert "Epoch[1]" not in log and (finished / "handoff.pt").stat().st_mtime_ns == written  # nothing trained


def _wait_for(path_glob: tuple[Path, str], proc: subprocess.Popen, seconds: float = 180) -> list[Path]:
    folder, pattern = path_glob
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        found = list(folder.glob(pattern)) if folder.is_dir() else []
        if found:
            return found
        time.sleep(0.05)
    return []


@pytest.mark.slow
def test_a_second_run_on_a_busy_folder_and_then_another_visit_on_its_checkpoint_are_refused_in_one_line(
    demo_root: Path, finished: Path, tmp_path: Path
):
    out = tmp_path / "visit"
    first = visit_command(fault="hold@checkpoint:1", dataset_dir=demo_root / "center_a", output_dir=out, **SHORT)
    holder = subprocess.Popen(first, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (checkpoint,) = _wait_for((out / "checkpoints", "checkpoint_epoch=*.pt"), holder)
        second = subprocess.run(
            visit_command(dataset_dir=demo_root / "center_a", output_dir=out, **SHORT),
            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert second.returncode != 0
        assert _last_line(second) == (
            f"error: output_dir {out} is in use by another run (pid {holder.pid}, lock {out / 'visit.lock'}); wait "
            "for it to finish or use another output_dir."
        )
    finally:
        holder.send_signal(signal.SIGKILL)  # the visit at center_a dies: its checkpoint stays, its lock goes
        holder.wait()
    before = checkpoint.read_bytes()
    handoff_in = finished / "handoff.pt"
    foreign = subprocess.run(
        visit_command(dataset_dir=demo_root / "center_b", output_dir=out, handoff_in=handoff_in, **SHORT),
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert foreign.returncode != 0
    line = _last_line(foreign)
    assert line.startswith(
        f"error: checkpoint {checkpoint} belongs to another visit (center ['center_a'] there, ['center_b'] here; "
        "incoming hand-off none there, "
    ), line
    assert line.endswith("); use another output_dir or delete it.")
    assert checkpoint.read_bytes() == before and not (out / "handoff.pt").exists()


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)], capture_output=True
    )
    return done.returncode == 0


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_write_ends_in_one_line_and_keeps_the_previous_checkpoint(
    demo_root: Path, tmp_path: Path
):
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "16m"):
        pytest.skip("needs root and `mount -t tmpfs` (CI runs as root)")
    try:
        checkpoints = small / "checkpoints"
        out = tmp_path / "visit"
        cmd = visit_command(
            fault="fill@checkpoint:1", dataset_dir=demo_root / "center_a", output_dir=out, checkpoint_dir=checkpoints,
            **SHORT,
        )  # fmt: skip
        done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode != 0
        target = checkpoints / "checkpoint_epoch=2.pt"
        assert _last_line(done) == f"error: no space left on device while writing {target}; free space and rerun.", (
            done.stderr[-3000:]
        )
        assert "Traceback" not in done.stderr
        assert [p.name for p in checkpoints.iterdir()] == ["checkpoint_epoch=1.pt"]  # no orphaned temporary file
        state = torch.load(checkpoints / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
        assert state["trainer"]["iteration"] == 2 and state["identity"]["record"]["centers"][0]["name"] == "center_a"
        assert not (out / "handoff.pt").exists()
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


def _hooked(
    exc: BaseException, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, debug: str = ""
) -> tuple:
    monkeypatch.setenv(DEBUG_ENV, debug)
    fallback = []
    _hook(lambda *args: fallback.append(args))(type(exc), exc, exc.__traceback__)
    return capsys.readouterr().err.strip().splitlines(), fallback


def _wrapped(error: BaseException) -> RuntimeError:
    try:
        try:
            raise error
        except Exception as e:
            raise RuntimeError("Failed to evaluate ConfigExpression: ...") from e  # what MONAI does
    except RuntimeError as wrapped:
        return wrapped


def test_the_hook_prints_the_projects_reason_last_and_leaves_other_errors_and_debug_runs_their_traceback(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    lines, fallback = _hooked(_wrapped(FlagError("amp must be true or false")), capsys, monkeypatch)
    assert lines[-1] == "error: amp must be true or false" and len(lines) == 2 and not fallback
    lines, fallback = _hooked(_wrapped(OSError(errno.ENOSPC, "No space left", "/x/h.pt")), capsys, monkeypatch)
    assert lines[-1] == "error: no space left on device while writing /x/h.pt; free space and rerun." and not fallback
    lines, fallback = _hooked(_wrapped(ZeroDivisionError("bug")), capsys, monkeypatch)
    assert lines == [] and len(fallback) == 1  # not the project's: Python's traceback
    lines, fallback = _hooked(_wrapped(FlagError("amp")), capsys, monkeypatch, debug="1")
    assert lines == [] and len(fallback) == 1  # TDGAN_DEBUG=1: the full traceback
    assert not install_for_bundle_cli() and sys.excepthook is sys.__excepthook__  # pytest is no bundle command
