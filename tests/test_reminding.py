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
"""Reminding without holes: local reminding's pool holds every class, every (earlier code, class) pair gets reminding
gradient, the DP completion is a function of each map alone, and the reminding reduction and batch size."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, TINY, run_visit, visit_workflow
from monai.data import DataLoader
from visit_faults import visit_command

from scripts.data.centers import OnlineCenters, read_label_maps
from scripts.data.demo import make_demo_centers
from scripts.handoff import load_handoff
from scripts.networks import TDGANGenerator, TemporaryDiscriminators, encode_condition
from scripts.reminding import Reminder, RemindingBatch, complete_classes_fixed, make_local_pool
from scripts.trainer import TDGANTrainer

K = 4
LESION = 3
DEMO_MAPS = {"relocatable": [3], "hosts": [1], "flip_axes": [1]}  # configs/demo.json's label-map settings


def _drop_lesions(center: Path) -> None:
    """Rewrite a center's label files with its lesions (class 3) turned into brain (class 1): a center without
    the lesion class, as a hospital whose patients have none."""
    for path in sorted(center.glob("labels*/*.nii.gz")):
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
        nib.save(nib.Nifti1Image(np.where(data == LESION, 1, data).astype(data.dtype), img.affine), str(path))


@pytest.fixture(scope="module")
def lesionless(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny demo centers; center_b has no lesion at all."""
    root = make_demo_centers(tmp_path_factory.mktemp("lesionless"), num_centers=2, num_train=8, num_test=2, size=32)
    _drop_lesions(root / "center_b")
    assert (read_label_maps(root / "center_a", 2, [32, 32])[0] == LESION).any()
    assert not (read_label_maps(root / "center_b", 2, [32, 32])[0] == LESION).any()
    return root


@pytest.fixture(scope="module")
def arriving(lesionless: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-off of a first visit at center_a (which has lesions)."""
    out = tmp_path_factory.mktemp("lesionless_first")
    run_visit([lesionless / "center_a"], out, reminding_source="local")
    return out / "handoff.pt"


def test_local_pool_holds_every_class_in_every_map_even_one_the_center_never_has(lesionless: Path):
    sources = read_label_maps(lesionless / "center_b", 2, [32, 32])[0]
    pool = make_local_pool(sources, 12, K, seed=0, label_map_settings=DEMO_MAPS)
    assert pool.shape == (12, 1, 32, 32) and pool.dtype == torch.uint8
    for m in pool:
        assert set(m.unique().tolist()) == set(range(K)), "a pool map lacks a class"
        lesion = m[0] == LESION
        assert bool((sources[:, 0] != m[0]).any(dim=(1, 2)).all()), "a pool map is a copy of a patient's map"
        assert lesion.sum() > 1  # a blob, not one pixel
    # seeded: a resumed visit rebuilds the same pool; another seed gives another one
    assert torch.equal(pool, make_local_pool(sources, 12, K, seed=0, label_map_settings=DEMO_MAPS))
    assert not torch.equal(pool, make_local_pool(sources, 12, K, seed=1, label_map_settings=DEMO_MAPS))


def _first_layer_grad_per_group(trainer: TDGANTrainer, remind: RemindingBatch, batch) -> torch.Tensor:
    """(max_centers, K): the norm of the generator step's gradient on the first layer's input channel c * K + k,
    i.e. the kernels that render class k under center c."""
    groups = trainer.prepare_groups(batch)
    fakes, r_out = trainer.generate(groups, remind)
    trainer.backward_g(groups, fakes, r_out, remind)
    grad = trainer.g_network.model[0].weight.grad  # (out, max_centers * K, k, k)
    return grad.transpose(0, 1).flatten(1).norm(dim=1).view(trainer.max_centers, K)


def test_every_earlier_code_and_class_gets_reminding_gradient_when_the_current_center_lacks_a_class(
    lesionless: Path, arriving: Path, tmp_path: Path
):
    workflow = visit_workflow([lesionless / "center_b"], tmp_path / "b", arriving, reminding_source="local")
    trainer = workflow.parser.get_parsed_content("train#trainer")
    reminder = trainer.reminder
    assert reminder.pool is not None and reminder.cache
    earlier = reminder.codes.tolist()
    assert earlier == [0]
    batch = next(iter(trainer.data_loader))
    assert not (batch[0]["label"] == LESION).any()  # the current batch has no lesion to replay
    trainer._iteration(trainer, batch)  # one step: the generator no longer equals the teacher (|G - T| = 0 has none)

    grads = _first_layer_grad_per_group(trainer, reminder.batch([batch[0]["label"]], 2), batch)
    for c in earlier:
        for k in range(K):
            assert grads[c, k] > 0, f"no reminding gradient for class {k} under earlier code {c}"

    # what reminding with the current batch's own maps did: nothing reminds the lesion under code 0
    label = batch[0]["label"].long()
    codes = torch.zeros(len(label), dtype=torch.long)
    replay = RemindingBatch(label, codes, reminder.teach(label, codes))
    trainer.g_network.zero_grad(set_to_none=True)
    grads = _first_layer_grad_per_group(trainer, replay, batch)
    assert grads[0, LESION] == 0 and all(grads[0, k] > 0 for k in range(LESION))
    workflow.finalize()


def test_a_dp_completion_is_a_function_of_each_map_alone_and_only_adds_missing_classes():
    gen = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 3, (4, 1, 24, 24), generator=gen)  # classes 0..2, no lesion
    maps[1, 0] = 0  # a map of background only
    maps[2, 0, :12] = 1  # a map with brain in its top half
    done = complete_classes_fixed(maps, K, hosts=[1])
    for i in range(len(maps)):
        assert set(done[i].unique().tolist()) == set(range(K))
        assert torch.equal(done[i], complete_classes_fixed(maps[i : i + 1], K, hosts=[1])[0])  # no other row counts
        missing = set(range(K)) - set(maps[i].unique().tolist())
        assert set(done[i][done[i] != maps[i]].unique().tolist()) <= missing  # it only adds the classes a map lacks
    # the lesion goes into brain (the host class) where the map has brain
    assert bool((maps[2, 0][done[2, 0] == LESION] == 1).all())
    full = torch.arange(K).repeat(6)[None, None, None].expand(1, 1, 24, 24).contiguous()  # every class already there
    assert torch.equal(complete_classes_fixed(full, K), full)


def _tiny_trainer(reminder: Reminder | None, seed: int = 0, **kwargs) -> TDGANTrainer:
    torch.manual_seed(seed)
    gen = TDGANGenerator(spatial_dims=2, num_classes=K, max_centers=4, ngf=4, num_blocks=1)
    disc = TemporaryDiscriminators(count=1, spatial_dims=2, num_classes=K, ndf=4)
    data_gen = torch.Generator().manual_seed(2)
    items = [
        {
            "image": torch.rand(1, 32, 32, generator=data_gen) * 2 - 1,
            "label": torch.randint(0, K, (1, 32, 32), generator=data_gen, dtype=torch.uint8),
            "center": 3,
        }
        for _ in range(4)
    ]
    return TDGANTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=DataLoader(OnlineCenters([items]), batch_size=2, shuffle=False),
        g_network=gen,
        g_optimizer=torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.5, 0.999)),
        d_network=disc,
        d_optimizer=torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999)),
        reminder=reminder,
        **kwargs,
    )


def _pool_reminder() -> Reminder:
    torch.manual_seed(5)
    teacher = TDGANGenerator(spatial_dims=2, num_classes=K, max_centers=4, ngf=4, num_blocks=1)
    pool = torch.randint(0, K, (5, 1, 32, 32), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    return Reminder("local", [0, 1, 2], teacher, seed=0, pool=pool)


def test_sum_reduction_weighs_the_reminding_batch_by_the_number_of_earlier_centers():
    summed = _tiny_trainer(_pool_reminder(), reminding_reduction="sum", reminding_weight=1.0)
    tripled = _tiny_trainer(_pool_reminder(), reminding_reduction="mean", reminding_weight=3.0)
    mean = _tiny_trainer(_pool_reminder(), reminding_reduction="mean", reminding_weight=1.0)
    assert summed.reminding_scale == 3.0 and mean.reminding_scale == 1.0
    for t in (summed, tripled, mean):
        t.run()
    for p, q in zip(summed.g_network.parameters(), tripled.g_network.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(summed.g_network.parameters(), mean.g_network.parameters()))
    with pytest.raises(ValueError, match="reminding_reduction"):
        _tiny_trainer(_pool_reminder(), reminding_reduction="max")


def test_reminding_batch_size_sets_the_reminding_rows():  # the private trainer refuses it (tests/test_privacy.py)
    trainer = _tiny_trainer(_pool_reminder(), reminding_batch_size=1)
    rows: list[int] = []
    trainer.g_network.register_forward_hook(lambda m, args, out: rows.append(int(args[0].shape[0])))
    trainer._iteration(trainer, next(iter(trainer.data_loader)))
    assert rows == [2 + 1]  # the training batch and one reminding map, in one generator call
    with pytest.raises(ValueError, match="reminding_batch_size must be"):
        _tiny_trainer(_pool_reminder(), reminding_batch_size=0)


def test_pool_reminding_teaches_each_pool_map_once_per_earlier_code():
    reminder = _pool_reminder()
    trainer = _tiny_trainer(reminder)
    calls: list[int] = []
    reminder.teacher.register_forward_hook(lambda m, args, out: calls.append(int(args[0].shape[0])))
    for _ in range(3):
        for batch in trainer.data_loader:
            trainer._iteration(trainer, batch)
    assert reminder.entries == 5 * 3
    assert sum(calls) == reminder.entries  # each entry once, at the first batch
    for i in range(reminder.entries):  # entry i: pool map i % 5 under code i // 5
        label = reminder.pool[i % 5 : i % 5 + 1].long()
        with torch.no_grad():
            expected = copy.deepcopy(reminder.teacher)(encode_condition(label, torch.tensor([i // 5]), K, 4))
        torch.testing.assert_close(reminder._outputs[i : i + 1], expected, rtol=1e-5, atol=1e-6)


RESUME = {
    **TINY,
    "batch_size": 4,
    "epochs_constant": 2,
    "epochs_decay": 1,
    "reminding_source": "local",
    "reminding_pool_size": 6,
}


@pytest.mark.slow
def test_a_local_pool_visit_killed_and_resumed_writes_the_uninterrupted_handoff(
    lesionless: Path, arriving: Path, tmp_path: Path
):
    reference = tmp_path / "reference"
    run_visit([lesionless / "center_b"], reference, arriving, **RESUME)
    out = tmp_path / "visit"
    cmd = visit_command(
        fault="kill@checkpoint:1", dataset_dir=lesionless / "center_b", output_dir=out, handoff_in=arriving, **RESUME
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    killed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_visit([lesionless / "center_b"], out, arriving, **RESUME)
    a, b = load_handoff(out / "handoff.pt"), load_handoff(reference / "handoff.pt")
    assert a.visits[-1]["resumed_from_epoch"] == 1
    for name in b.generator:
        assert torch.equal(a.generator[name], b.generator[name]), f"generator weight {name} differs"
    assert json.dumps(a.visits[-1]["loss_history"]) == json.dumps(b.visits[-1]["loss_history"])
    assert a.label_bank == {} == b.label_bank  # local reminding: no label map travels
