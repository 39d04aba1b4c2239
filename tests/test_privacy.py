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
"""Differentially private visits: per-patient clipping of both updates, the accountant, the budget stop, refusals."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from monai.data import DataLoader

from scripts.data.centers import OnlineCenters
from scripts.handoff import load_handoff
from scripts.networks import TDGANGenerator, TemporaryDiscriminators, encode_condition
from scripts.reminding import Reminder
from scripts.trainer import LossAverage, TDGANTrainer
from scripts.visit import run_visit
from tests.conftest import META, REPO, TINY, visit_workflow

opacus = pytest.importorskip("opacus", reason="the optional DP extra (requirements-dp.txt) is not installed")
from opacus.accountants import PRVAccountant, RDPAccountant  # noqa: E402

from scripts.privacy import (  # noqa: E402
    PrivateTDGANTrainer,
    PrivateVisit,
    composed_noise_multiplier,
    dp_settings,
    epsilon_after,
    visit_trainer,
)

K, SIZE = 4, 32
LOCAL = SimpleNamespace(reminding_source="local", center_names=["center_b"])


def _items(n: int, code: int = 1, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.rand(1, SIZE, SIZE, generator=gen) * 2 - 1,
            "label": torch.randint(0, K, (1, SIZE, SIZE), generator=gen, dtype=torch.uint8),
            "center": code,
        }
        for _ in range(n)
    ]


def _networks(seed: int = 0) -> tuple[TDGANGenerator, TemporaryDiscriminators]:
    torch.manual_seed(seed)
    gen = TDGANGenerator(spatial_dims=2, num_classes=K, max_centers=3, ngf=8, num_blocks=1)
    return gen, TemporaryDiscriminators(count=1, spatial_dims=2, num_classes=K, ndf=8, num_layers=2)


def _private(
    gen: torch.nn.Module,
    disc: torch.nn.Module,
    n: int = 6,
    batch: int = 3,
    lr: float = 0.0,
    visit: Any = LOCAL,
    epochs: int = 1,
    **dp: Any,
) -> PrivateVisit:
    loader = DataLoader(OnlineCenters([_items(n)]), batch_size=batch)
    settings = {"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0, **dp}
    g_opt, d_opt = torch.optim.SGD(gen.parameters(), lr=lr), torch.optim.SGD(disc.parameters(), lr=lr)
    return PrivateVisit(settings, visit, gen, disc, g_opt, d_opt, loader, epochs=epochs)


def _private_trainer(
    lr: float = 0.0, remind: bool = True, reminding_weight: float = 1.0, **dp: Any
) -> tuple[PrivateTDGANTrainer, PrivateVisit]:
    teacher = _networks(seed=1)[0]  # the generator as it arrived (another one, so reminding has a gradient)
    gen, disc = _networks()
    privacy = _private(gen, disc, lr=lr, **dp)
    trainer = PrivateTDGANTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=privacy.data_loader,
        g_network=gen,
        g_optimizer=privacy.g_optimizer,
        d_network=disc,
        d_optimizer=privacy.d_optimizer,
        reminder=Reminder("local", [0], teacher) if remind else None,
        reminding_weight=reminding_weight,
        privacy=privacy,
    )
    return trainer, privacy


def _batch(items: list[dict]) -> list[dict]:
    return [
        {
            "image": torch.stack([i["image"] for i in items]),
            "label": torch.stack([i["label"] for i in items]),
            "center": torch.tensor([i["center"] for i in items]),
        }
    ]


def _update(trainer: TDGANTrainer, items: list[dict]) -> dict[str, torch.Tensor]:
    """One iteration; each network's update direction (p.grad: sum of clipped per-sample gradients plus noise, over
    the expected batch size), flattened."""
    trainer._iteration(trainer, _batch(items))
    return {
        name: torch.cat([p.grad.flatten() for p in net.parameters()])
        for name, net in (("discriminator", trainer.d_network), ("generator", trainer.g_network))
    }


def _contributions(trainer: TDGANTrainer, privacy: PrivateVisit, items: list[dict]) -> dict[str, list[float]]:
    """How much each patient changes each update (in units of the clipping bound): the update with the whole batch
    minus the update without that patient, times the expected batch size."""
    full = _update(trainer, items)
    out: dict[str, list[float]] = {"discriminator": [], "generator": []}
    for i in range(len(items)):
        without = _update(trainer, items[:i] + items[i + 1 :])
        for name in out:
            change = (full[name] - without[name]).norm() * privacy.expected_batch_size
            out[name].append(float(change) / privacy.settings["max_grad_norm"])
    return out


def _one_clipped_row(values: list[float]) -> bool:
    """Each patient changed the update by exactly one clipped row: within the bound, and at it (it was active)."""
    return all(0.99 <= v <= 1.0 + 1e-4 for v in values)


def test_no_patient_changes_either_update_by_more_than_the_clipping_bound():
    # a bound far below every per-sample gradient, so each patient's rows are clipped; no noise to speak of; lr 0 so
    # that both runs start from the same networks
    trainer, privacy = _private_trainer(noise_multiplier=1e-9, max_grad_norm=1e-3)
    contributions = _contributions(trainer, privacy, _items(3, seed=1))
    # the fake and real pairs through D, and the digesting and (local) reminding terms of G, of one patient are
    # clipped together: removing the patient removes exactly one clipped row
    assert _one_clipped_row(contributions["discriminator"]), contributions
    assert _one_clipped_row(contributions["generator"]), contributions


@pytest.mark.parametrize("layout", ["discriminator: fakes and reals in one call", "generator: another row's map"])
def test_a_patient_spread_over_two_rows_is_caught_by_that_check(layout: str, monkeypatch: pytest.MonkeyPatch):
    # the check above can fail: D seeing [fakes; reals] in one call (fake i and real i are two rows), or local
    # reminding that runs row i+1's label map in row i, spreads a patient over two clipped rows
    trainer, privacy = _private_trainer(noise_multiplier=1e-9, max_grad_norm=1e-3)
    if layout.startswith("discriminator"):  # the non-private layout of the D step
        monkeypatch.setattr(trainer, "discriminate", TDGANTrainer.discriminate.__get__(trainer))
    else:
        complete = trainer.reminder.complete
        monkeypatch.setattr(trainer.reminder, "complete", lambda label: complete(label).roll(1, 0))
    contributions = _contributions(trainer, privacy, _items(3, seed=1))
    name = layout.split(":")[0]
    assert not _one_clipped_row(contributions[name]), contributions
    assert _one_clipped_row(contributions["generator" if name == "discriminator" else "discriminator"])


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_per_sample_gradients_of_the_generator_equal_single_sample_backward_passes(autocast: torch.dtype | None):
    # reflection padding, transposed convolutions and instance norm without affine: functorch serves every layer
    gen, disc = _networks()
    privacy = _private(gen, disc)
    label, center = torch.randint(0, K, (3, 1, SIZE, SIZE)), torch.tensor([0, 1, 2])
    cond, target = encode_condition(label, center, K, 3), torch.rand(3, 1, SIZE, SIZE)

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=autocast) if autocast else nullcontext():
            return F.l1_loss(gen(x).float(), y)

    loss(cond, target).backward()
    per_sample = {n: p.grad_sample.clone() for n, p in gen.named_parameters()}
    assert all(g.dtype == torch.float32 for g in per_sample.values())  # so Opacus clips float32 norms
    privacy.hooks["generator"].disable_hooks()
    tolerance = 1e-5 if autocast is None else 3e-2
    for i in range(3):
        gen.zero_grad()
        loss(cond[i : i + 1], target[i : i + 1]).backward()
        reference = torch.cat([p.grad.flatten() for p in gen.parameters()])
        ours = torch.cat([per_sample[n][i].flatten() for n, _ in gen.named_parameters()])
        assert (ours - reference).norm() <= tolerance * reference.norm()


def test_the_config_picks_the_private_trainer_only_with_dp_and_it_refuses_reminding_batch_size():
    gen, disc = _networks()
    loader = DataLoader(OnlineCenters([_items(4)]), batch_size=2)
    g_opt, d_opt = torch.optim.SGD(gen.parameters(), lr=0.1), torch.optim.SGD(disc.parameters(), lr=0.1)
    off = PrivateVisit({"enabled": False}, LOCAL, gen, disc, g_opt, d_opt, loader, epochs=1)
    nets = {"g_network": gen, "g_optimizer": off.g_optimizer, "d_network": disc, "d_optimizer": off.d_optimizer}
    trainer = visit_trainer(off, device="cpu", max_epochs=1, train_data_loader=off.data_loader, **nets)
    assert type(trainer) is TDGANTrainer and not hasattr(trainer, "privacy")
    assert type(_private_trainer()[0]) is PrivateTDGANTrainer
    with pytest.raises(ValueError, match="reminding_batch_size cannot be set with dp"):
        PrivateTDGANTrainer(privacy=_private(*_networks()), reminding_batch_size=1)


def test_an_empty_poisson_batch_takes_a_noise_only_step_on_both_networks():
    trainer, privacy = _private_trainer(lr=1.0)
    collate = privacy.data_loader.collate_fn  # Opacus' collate learns the batch structure from a first batch
    assert not privacy.is_empty(collate([privacy.data_loader.dataset[0]]))
    empty = collate([])
    assert privacy.is_empty(empty) and privacy.is_empty([torch.zeros(0)])  # Opacus' fallback for a first empty batch
    before = [p.detach().clone() for net in (trainer.g_network, trainer.d_network) for p in net.parameters()]
    assert trainer._iteration(trainer, empty) == {}
    after = [p.detach() for net in (trainer.g_network, trainer.d_network) for p in net.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))  # noise moved every parameter of G and D
    average = LossAverage(output_transform=lambda out: out.get("g_loss"))
    average.update(None)
    assert math.isnan(average.compute())  # an epoch of noise-only steps only
    average.update(torch.tensor(2.0))
    assert average.compute() == 2.0  # the noise-only step does not enter the logged loss averages


def test_one_iteration_is_accounted_as_both_mechanisms_on_the_same_sample():
    assert composed_noise_multiplier([1.0, 1.0]) == pytest.approx(1 / math.sqrt(2))
    # two Gaussian updates on ONE Poisson sample spend more than two independently sampled updates would
    joint = epsilon_after(100, composed_noise_multiplier([1.0, 1.0]), 0.25, 1e-3)
    acc = RDPAccountant()
    for _ in range(2 * 100):
        acc.step(noise_multiplier=1.0, sample_rate=0.25)
    assert joint > acc.get_epsilon(1e-3) * 1.1


def test_target_epsilon_is_spent_by_the_planned_iterations():
    gen, disc = _networks()
    privacy = _private(gen, disc, noise_multiplier=None, target_epsilon=4.0, accountant="prv")
    spent = privacy.epsilon(privacy.planned_iterations)
    assert 3.9 <= spent <= 4.0
    assert privacy.noise_multiplier == pytest.approx(privacy.effective_noise_multiplier * math.sqrt(2))


def test_a_resumed_visit_accounts_the_iterations_before_its_checkpoint_and_stops_at_the_budget():
    gen, disc = _networks()
    privacy = _private(gen, disc, n=8, batch=2, epochs=2, max_epsilon=4.5)  # 4 iterations per epoch
    assert privacy.epsilon(privacy.max_iterations) <= 4.5 < privacy.epsilon(privacy.max_iterations + 1)
    assert 2 < privacy.max_iterations < privacy.planned_iterations
    stops = []
    engine = SimpleNamespace(state=SimpleNamespace(iteration=1), terminate=lambda: stops.append(True))
    privacy._started(engine)  # resumed after iteration 1
    acc = PRVAccountant() if privacy.settings["accountant"] == "prv" else RDPAccountant()
    for _ in range(2):
        acc.step(noise_multiplier=1 / math.sqrt(2), sample_rate=0.25)
    engine.state.iteration = 2
    privacy._iteration_completed(engine)
    assert privacy.epsilon() == pytest.approx(acc.get_epsilon(privacy.delta))
    while not stops and engine.state.iteration < privacy.planned_iterations:
        engine.state.iteration += 1
        privacy._iteration_completed(engine)
    assert stops and engine.state.iteration == privacy.max_iterations and privacy.stopped_by_budget


@pytest.mark.parametrize(
    "change, message",
    [
        ({"visit": SimpleNamespace(reminding_source="bank", center_names=["a"])}, "dp needs reminding_source 'local'"),
        ({"visit": SimpleNamespace(reminding_source="local", center_names=["a", "b"])}, "exactly one center online"),
        ({"compile": True}, "dp does not support compile"),
        ({"amp": True, "amp_dtype": "float16"}, "dp does not support float16 autocast"),
        ({"dp": {"noise_multiplier": None}}, "set exactly one of dp#noise_multiplier and dp#target_epsilon"),
        ({"dp": {"target_epsilon": 5.0}}, "set exactly one of dp#noise_multiplier and dp#target_epsilon"),
        ({"dp": {"noise": 1.0}}, "unknown setting(s) ['noise']"),
        ({"dp": {"max_epsilon": 0.01}}, "one iteration already spends epsilon"),
        ({"batchnorm": True}, "dp cannot privatise the discriminators"),
    ],
)
def test_unsupported_settings_are_refused_with_one_line_before_training(change: dict, message: str):
    gen, disc = _networks()
    if change.get("batchnorm"):
        disc[0].add_module("batch_norm", torch.nn.BatchNorm2d(8))
    loader = DataLoader(OnlineCenters([_items(4)]), batch_size=2)
    settings = {"enabled": True, "noise_multiplier": 1.0, **change.get("dp", {})}
    g_opt, d_opt = torch.optim.SGD(gen.parameters(), lr=0.1), torch.optim.SGD(disc.parameters(), lr=0.1)
    kwargs = {k: v for k, v in change.items() if k in ("compile", "amp", "amp_dtype")}
    with pytest.raises(ValueError) as err:
        PrivateVisit(settings, change.get("visit", LOCAL), gen, disc, g_opt, d_opt, loader, epochs=1, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_dp_settings_fill_defaults_and_keep_the_section_off_by_default():
    assert dp_settings(None)["enabled"] is False
    assert dp_settings({"comment": "why", "enabled": True, "target_epsilon": 10})["max_grad_norm"] == 1.0
    with pytest.raises(ValueError, match="dp#accountant must be one of"):
        dp_settings({"accountant": "gdp"})


def test_a_dp_visit_with_bank_reminding_is_refused_before_anything_is_written(demo_root: Path, tmp_path: Path):
    workflow = visit_workflow([demo_root / "center_a"], tmp_path, dp={"enabled": True, "noise_multiplier": 1.0})
    with pytest.raises(RuntimeError) as err:  # MONAI's "Failed to instantiate", caused by our one line
        workflow.run()
    cause = err.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, ValueError) and str(cause).startswith("dp needs reminding_source 'local', got 'bank'")
    assert not (tmp_path / "handoff.pt").exists() and not (tmp_path / "checkpoints").exists()


DP_VISIT = {k: TINY[k] for k in ("spatial_size", "ngf", "num_blocks", "ndf", "batch_size", "epochs_constant")}
DP_VISIT |= {"epochs_decay": TINY["epochs_decay"], "device": "cpu", "reminding_source": "local"}
DP_VISIT |= {"dp#enabled": True, "dp#noise_multiplier": 1.0}
"""The settings of the DP visits below, on the command line and in this process alike (no more: a checkpoint of one
resumes in the other)."""


def _bundle_run(center: Path, out: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run --config_file configs/train.json`` at the tiny size, as a subprocess (through
    tests/visit_faults.py when ``fault`` is given)."""
    cmd = [
        sys.executable,
        *([str(REPO / "tests" / "visit_faults.py"), fault, "--"] if fault else ["-m", "monai.bundle"]),
    ]
    cmd += ["run", "--config_file", str(REPO / "configs" / "train.json")]
    cmd += ["--meta_file", META, "--bundle_root", str(REPO), "--dataset_dir", str(center), "--output_dir", str(out)]
    for key, value in DP_VISIT.items():
        cmd += [f"--{key}", str(value).replace(" ", "")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _visit_here(center: Path, out: Path, handoff_in: Path | None = None, **dp: Any) -> None:
    """The visit of :func:`_bundle_run` with the same settings (and ``dp#<key>`` ones), run in this process."""
    settings = DP_VISIT | {f"dp#{k}": v for k, v in dp.items()}
    run_visit([center], out, handoff_in, settings=settings, bundle_root=REPO)


@pytest.fixture(scope="module")
def dp_first_visit(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DP visit of the first center through the bundle's command line (noise multiplier 1, RDP)."""
    out = tmp_path_factory.mktemp("dp_first")
    done = _bundle_run(demo_root / "center_a", out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "handoff.pt"


def test_a_dp_visit_runs_end_to_end_through_monai_bundle_run(dp_first_visit: Path):
    visit = load_handoff(dp_first_visit).visits[-1]
    dp = visit["dp"]
    assert dp["privatised"] == ["discriminator", "generator"] and dp["accountant"] == "rdp"
    assert dp["iterations"] == visit["iterations"] == dp["planned_iterations"] == 8  # 2 epochs of 8 pairs / 2
    assert not dp["stopped_by_budget"] and dp["delta"] == pytest.approx(0.1 / 8)
    assert visit["final_losses"] == {} and visit["loss_history"] == []  # unnoised averages stay at the center
    assert load_handoff(dp_first_visit).label_bank == {}


def test_the_recorded_epsilon_equals_opacus_accountant_for_the_same_steps_rate_and_noise(dp_first_visit: Path):
    dp = load_handoff(dp_first_visit).visits[-1]["dp"]
    assert dp["sample_rate"] == pytest.approx(TINY["batch_size"] / 8)
    acc = RDPAccountant()
    for _ in range(dp["iterations"]):  # one step per iteration: G's and D's Gaussian updates on one sample
        acc.step(noise_multiplier=dp["noise_multiplier"] / math.sqrt(2), sample_rate=dp["sample_rate"])
    assert dp["epsilon"] == pytest.approx(acc.get_epsilon(dp["delta"]), abs=1e-6)


def test_a_budget_overrun_stops_the_visit_with_one_line_and_a_valid_handoff(
    demo_root: Path, dp_first_visit: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    # the next center from the DP hand-off (local reminding against the arriving generator), with a budget that
    # the planned 8 iterations (epsilon 5.68) exceed
    with caplog.at_level("INFO"):
        _visit_here(demo_root / "center_b", tmp_path, dp_first_visit, max_epsilon=4.0)
    lines = [r.getMessage() for r in caplog.records if "privacy budget reached" in r.getMessage()]  # the log
    assert len(lines) == 1 and "max_epsilon 4.0" in lines[0]
    handoff = load_handoff(tmp_path / "handoff.pt")
    visit = handoff.visits[-1]
    assert visit["dp"]["stopped_by_budget"] and visit["iterations"] < visit["dp"]["planned_iterations"]
    assert visit["dp"]["epsilon"] <= 4.0 < epsilon_after(visit["iterations"] + 1, 1 / math.sqrt(2), 0.25, 0.1 / 8)
    assert visit["reminded_codes"] == [0] and [e["name"] for e in handoff.registry] == ["center_a", "center_b"]
    gen = TDGANGenerator(**handoff.network)
    gen.load_state_dict(handoff.generator)
    assert not (tmp_path / "checkpoints").exists()  # the visit finished: its resume checkpoints are gone


def test_a_resumed_dp_visit_accounts_the_iterations_before_its_checkpoint(
    demo_root: Path, dp_first_visit: Path, tmp_path: Path
):
    # killed just after epoch 1's checkpoint and run again: the accountant starts after the checkpoint has loaded, so
    # the hand-off records what the whole visit spent (it once counted only the iterations after the resume)
    killed = _bundle_run(demo_root / "center_a", tmp_path, fault="kill@checkpoint:1")
    assert killed.returncode != 0 and not (tmp_path / "handoff.pt").exists()
    _visit_here(demo_root / "center_a", tmp_path)  # resumed, in this process
    resumed, whole = (load_handoff(path).visits[-1] for path in (tmp_path / "handoff.pt", dp_first_visit))
    assert resumed["resumed_from_epoch"] == 1 and resumed["iterations"] == whole["iterations"] == 8
    assert (
        resumed["dp"]["epsilon"]
        == whole["dp"]["epsilon"]
        == pytest.approx(epsilon_after(8, 1 / math.sqrt(2), 0.25, 0.1 / 8))
    )
