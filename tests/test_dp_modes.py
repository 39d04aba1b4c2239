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
"""DP mode ``discriminator`` (the generator learns from public label maps only) and public pretraining: the generator
step reads no private pair, the accountant counts one mechanism, a public visit spends nothing, refusals."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from monai.data import DataLoader

from scripts.data.centers import OnlineCenters
from scripts.data.checks import InputError
from scripts.handoff import load_handoff
from scripts.networks import TDGANGenerator, TemporaryDiscriminators
from scripts.reminding import Reminder
from scripts.sequence import VisitSequence
from scripts.trainer import CenterBatch, TDGANTrainer
from tests.conftest import REPO, TINY, run_visit

pytest.importorskip("opacus", reason="the optional DP extra (requirements-dp.txt) is not installed")
from opacus.accountants import PRVAccountant, RDPAccountant  # noqa: E402
from opacus.optimizers import DPOptimizer  # noqa: E402

from scripts.privacy import (  # noqa: E402
    PrivacySettingError,
    PrivateTDGANTrainer,
    PrivateVisit,
    dp_settings,
    epsilon_after,
    privacy_records,
)

K, SIZE = 4, 32


@pytest.fixture(scope="module")
def public_dir(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A public center for the tests: a copy of the tiny demo's center_c (8 training pairs of 32x32) under its own
    name, standing for public data (e.g. the demo's MNI152 maps and images)."""
    folder = tmp_path_factory.mktemp("public") / "public_c"
    shutil.copytree(demo_root / "center_c", folder)
    return folder


def _items(n: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.rand(1, SIZE, SIZE, generator=gen) * 2 - 1,
            "label": torch.randint(0, K, (1, SIZE, SIZE), generator=gen, dtype=torch.uint8),
            "center": 1,
        }
        for _ in range(n)
    ]


def _batch(items: list[dict]) -> list[dict]:
    return [{k: torch.stack([torch.as_tensor(i[k]) for i in items]) for k in ("image", "label", "center")}]


def _visit(**change: Any) -> SimpleNamespace:
    """What PrivateVisit reads of a CenterVisit: center_b (code 1) online, local reminding, no incoming hand-off."""
    visit = {
        "reminding_source": "local",
        "center_names": ["center_b"],
        "codes": [1],
        "center_dirs": [],
        "preprocessing": {"spatial_size": [SIZE, SIZE]},
        "incoming": None,
        "label_mapping": None,
    }
    return SimpleNamespace(**{**visit, **change})


def _networks(seed: int = 0) -> tuple[TDGANGenerator, TemporaryDiscriminators]:
    torch.manual_seed(seed)
    gen = TDGANGenerator(spatial_dims=2, num_classes=K, max_centers=3, ngf=8, num_blocks=1)
    return gen, TemporaryDiscriminators(count=1, spatial_dims=2, num_classes=K, ndf=8, num_layers=2)


def _private(
    dp: dict[str, Any],
    n: int = 6,
    batch: int = 3,
    epochs: int = 1,
    g_lr: float = 0.0,
    d_lr: float = 0.0,
    items: list[dict] | None = None,
    **visit: Any,
) -> tuple[PrivateVisit, TDGANGenerator, TemporaryDiscriminators]:
    gen, disc = _networks()
    loader = DataLoader(OnlineCenters([items if items is not None else _items(n, seed=0)]), batch_size=batch)
    g_opt, d_opt = torch.optim.SGD(gen.parameters(), lr=g_lr), torch.optim.SGD(disc.parameters(), lr=d_lr)
    settings = {"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0, **dp}
    return PrivateVisit(settings, _visit(**visit), gen, disc, g_opt, d_opt, loader, epochs=epochs), gen, disc


def _discriminator_mode(public: Path, **kwargs: Any) -> dict[str, Any]:
    return {"mode": "discriminator", "public_label_maps": str(public), **kwargs}


def _trainer(
    public: Path, g_lr: float, d_lr: float, items: list[dict], epochs: int = 1, batch: int = 3
) -> PrivateTDGANTrainer:
    """A mode-discriminator trainer on ``items`` with a teacher (another generator, so reminding has a gradient) of
    code 0."""
    teacher = _networks(seed=1)[0]
    dp = _discriminator_mode(public)
    privacy, gen, disc = _private(dp, batch=batch, epochs=epochs, g_lr=g_lr, d_lr=d_lr, items=items)
    return PrivateTDGANTrainer(
        device="cpu",
        max_epochs=epochs,
        train_data_loader=privacy.data_loader,
        g_network=gen,
        g_optimizer=privacy.g_optimizer,
        d_network=disc,
        d_optimizer=privacy.d_optimizer,
        reminder=Reminder("local", [0], teacher),
        privacy=privacy,
    )


# --- deliberate leaks: each routes private data into the generator's step -------------------------------------------


def _private_group(trainer: PrivateTDGANTrainer, source: str) -> Callable[[], CenterBatch]:
    """Where a leak takes private data from at the generator's step: the discriminator step's own groups, the
    private batch prepared again, or the private dataset itself."""
    seen: dict[str, Any] = {}
    prepare, step = trainer.prepare_groups, trainer.private_discriminator_step

    def prepared(batchdata: Any) -> list[CenterBatch]:
        seen["groups"] = prepare(batchdata)
        return seen["groups"]

    def stepped(batchdata: Any) -> torch.Tensor:
        seen["batch"] = batchdata
        return step(batchdata)

    trainer.prepare_groups, trainer.private_discriminator_step = prepared, stepped
    if source == "groups":
        return lambda: seen["groups"][0]
    if source == "batch":
        return lambda: prepare(seen["batch"])[0]
    dataset = trainer.data_loader.dataset
    return lambda: prepare(trainer.data_loader.collate_fn([dataset[i] for i in range(3)]))[0]


def _leak_maps(trainer: PrivateTDGANTrainer, source: str) -> None:  # the generator step on private maps
    private = _private_group(trainer, source)

    def public_batch(device: Any, discriminators: Any) -> CenterBatch:
        g = private()
        return CenterBatch(g.label, g.condition, g.center, None)

    trainer.privacy.public_batch = public_batch


def _leak_images(trainer: PrivateTDGANTrainer, source: str) -> None:  # an L1 term against the private images
    private = _private_group(trainer, source)

    def image_terms(groups: list[CenterBatch], fakes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        g = private()
        n = min(len(g.image), len(fakes[0]))
        return TDGANTrainer.image_terms(
            trainer, [CenterBatch(g.label, g.condition, g.center, g.image[:n])], [fakes[0][:n]]
        )

    trainer.image_terms = image_terms


def _leak_reminding(trainer: PrivateTDGANTrainer, source: str) -> None:  # reminding on the private maps
    private = _private_group(trainer, source)
    replay = Reminder("local", trainer.reminder.codes.tolist(), trainer.reminder.teacher)  # the batch's maps
    trainer.reminder = SimpleNamespace(
        batch=lambda labels, size: replay.batch([private().label], size), target_features=lambda remind: None
    )


LEAKS: dict[str, Callable[[PrivateTDGANTrainer], None]] = {
    "the discriminator step's maps as the generator's input": lambda t: _leak_maps(t, "groups"),
    "an L1 term against the discriminator step's images": lambda t: _leak_images(t, "groups"),
    "reminding on the discriminator step's maps": lambda t: _leak_reminding(t, "groups"),
    "the private batch read again for the generator's input": lambda t: _leak_maps(t, "batch"),
    "the private dataset's images in an L1 term": lambda t: _leak_images(t, "dataset"),
}


def _generator_after(
    public: Path, items: list[dict], leak: Callable | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two iterations on ``items`` (the private dataset and each iteration's batch) from the same start, with the
    discriminator's learning rate 0 (the private batch still feeds its step, but its weights, the generator's only
    lawful path to the private data, stay put): the generator's weights after them, and the discriminator's last
    update direction (p.grad)."""
    trainer = _trainer(public, g_lr=0.5, d_lr=0.0, items=items)
    if leak is not None:
        leak(trainer)
    torch.manual_seed(123)  # the noise, the public draws
    for _ in range(2):
        trainer._iteration(trainer, _batch(items))
    flat = torch.cat([p.detach().flatten() for p in trainer.g_network.parameters()])
    return flat, torch.cat([p.grad.flatten() for p in trainer.d_network.parameters()])


def test_the_generator_step_reads_no_private_pair_in_discriminator_mode(public_dir: Path):
    # two runs whose private data differ entirely (label maps and images): the discriminator reads them (its update
    # directions differ), the generator does not (bit-identical weights after two steps)
    g1, d1 = _generator_after(public_dir, _items(3, seed=1))
    g2, d2 = _generator_after(public_dir, _items(3, seed=2))
    start = torch.cat([p.detach().flatten() for p in _networks()[0].parameters()])
    assert not torch.equal(g1, start)  # the generator did learn (from the public maps)
    assert not torch.allclose(d1, d2)
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("leak", list(LEAKS))
def test_any_private_pair_in_the_generator_step_is_caught_by_that_check(public_dir: Path, leak: str):
    same = [_generator_after(public_dir, _items(3, seed=1), LEAKS[leak])[0] for _ in range(2)]
    assert torch.equal(*same)  # the check is exact: the same private data give the same generator
    other = _generator_after(public_dir, _items(3, seed=2), LEAKS[leak])[0]
    assert not torch.equal(same[0], other)


POISONS = [
    {"image": float("nan"), "condition": 0.0, "label": 0, "center": 0},
    {"image": 1.0, "condition": 1.0, "label": K - 1, "center": 2},
]
"""Two ways of overwriting the private data once the discriminator step is done: NaN images vs ones, background-only
maps vs maps of the last class (valid values, so that a leak changes the generator rather than failing)."""


def _poisoned_run(public: Path, poison: dict[str, Any], leak: Callable | None = None) -> tuple[torch.Tensor, ...]:
    """A whole two-epoch visit through the engine (Poisson-sampled, empty batches included), both networks learning;
    after each discriminator step the private batch (as collated and as prepared for the step) and the private
    dataset are overwritten in place with ``poison``, the dataset put back once the iteration is done. Returns the
    generator's and the discriminator's weights."""
    from ignite.engine import Events

    items = _items(8, seed=0)
    trainer = _trainer(public, g_lr=0.05, d_lr=0.05, items=items, epochs=2, batch=2)
    if leak is not None:
        leak(trainer)
    prepare, step, kept = trainer.prepare_groups, trainer.private_discriminator_step, {}

    def prepared(batchdata: Any) -> list[CenterBatch]:
        kept["groups"] = prepare(batchdata)
        return kept["groups"]

    def poisoned(batchdata: Any) -> torch.Tensor:
        loss = step(batchdata)
        kept["items"] = [{k: torch.as_tensor(v).clone() for k, v in item.items()} for item in items]
        for tensors in [*(vars(g) for g in kept["groups"]), *batchdata, *items]:
            for key, value in poison.items():
                if isinstance(tensors.get(key), torch.Tensor):
                    tensors[key].fill_(value)
        return loss

    def restore(engine: Any) -> None:
        for item, original in zip(items, kept.pop("items", [])):
            for key in ("image", "label"):
                item[key].copy_(original[key])

    trainer.prepare_groups, trainer.private_discriminator_step = prepared, poisoned
    trainer.add_event_handler(Events.ITERATION_COMPLETED, restore)
    torch.manual_seed(0)
    trainer.run()
    assert trainer.state.iteration == 2 * len(trainer.data_loader)
    return tuple(
        torch.cat([p.detach().flatten() for p in net.parameters()]) for net in (trainer.g_network, trainer.d_network)
    )


def test_a_visit_whose_private_data_are_poisoned_after_each_discriminator_step_trains_the_same_generator(
    public_dir: Path,
):
    # the discriminator learns from the private batches (lr > 0); whatever overwrites them (and the dataset) once
    # its step is done, the generator comes out finite and bit-identical: nothing private reached its step
    (g1, d1), (g2, d2) = (_poisoned_run(public_dir, poison) for poison in POISONS)
    assert torch.isfinite(g1).all() and torch.isfinite(d1).all()
    assert torch.equal(g1, g2) and torch.equal(d1, d2)


@pytest.mark.parametrize("leak", list(LEAKS))
def test_any_private_pair_in_the_generator_step_is_caught_by_the_poisoned_visit(public_dir: Path, leak: str):
    g1, g2 = (_poisoned_run(public_dir, poison, LEAKS[leak])[0] for poison in POISONS)
    assert not torch.equal(g1, g2)


def test_in_discriminator_mode_a_patient_moves_the_discriminators_update_by_one_clipped_row_and_not_the_generators(
    public_dir: Path,
):
    # the fake and the real pair of one patient (both from that patient's map) are clipped together: removing the
    # patient removes exactly one clipped row of the discriminator's update (a bound far below every per-sample
    # gradient, no noise to speak of, lr 0 so that every run starts from the same networks)
    items = _items(3, seed=1)
    privacy, gen, disc = _private(_discriminator_mode(public_dir, noise_multiplier=1e-9, max_grad_norm=1e-3))
    trainer = PrivateTDGANTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=privacy.data_loader,
        g_network=gen,
        g_optimizer=privacy.g_optimizer,
        d_network=disc,
        d_optimizer=privacy.d_optimizer,
        reminder=Reminder("local", [0], _networks(seed=1)[0]),
        privacy=privacy,
    )

    def update(batch: list[dict]) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)  # the noise and the public draws
        trainer.reminder.gen.manual_seed(0)  # the reminding draws
        trainer._iteration(trainer, _batch(batch))
        return {n: torch.cat([p.grad.flatten() for p in net.parameters()]) for n, net in (("d", disc), ("g", gen))}

    full = update(items)
    for i in range(len(items)):
        without = update(items[:i] + items[i + 1 :])
        change = (full["d"] - without["d"]).norm() * privacy.expected_batch_size / 1e-3
        assert 0.99 <= change <= 1.0 + 1e-4, change
        assert torch.equal(full["g"], without["g"])


# --- accounting -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_discriminator_mode_accounts_the_discriminators_mechanism_alone(public_dir: Path, accountant: str):
    privacy, gen, _ = _private(_discriminator_mode(public_dir, accountant=accountant), n=8, batch=2, epochs=2)
    assert privacy.mechanisms == ("discriminator",) and list(privacy.hooks) == ["discriminator"]
    assert isinstance(privacy.d_optimizer, DPOptimizer) and not isinstance(privacy.g_optimizer, DPOptimizer)
    assert privacy.effective_noise_multiplier == privacy.noise_multiplier == 1.0  # no sqrt(2)
    both = _private({"accountant": accountant}, n=8, batch=2, epochs=2)[0]
    engine = SimpleNamespace(state=SimpleNamespace(iteration=0), terminate=lambda: None)
    privacy._started(engine)
    acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    for i in range(1, privacy.planned_iterations + 1):
        acc.step(noise_multiplier=1.0, sample_rate=0.25)  # Opacus' accountant for the discriminator's steps alone
        engine.state.iteration = i
        privacy._iteration_completed(engine)
        if i not in (1, privacy.planned_iterations // 2, privacy.planned_iterations):
            continue  # each epsilon of the PRV accountant takes a second
        assert privacy.epsilon() == pytest.approx(acc.get_epsilon(privacy.delta), rel=1e-9)
        assert privacy.epsilon(i) == pytest.approx(acc.get_epsilon(privacy.delta), rel=1e-9)
        assert privacy.epsilon() < both.epsilon(i)  # at the same noise: one mechanism spends less than two
    record = privacy.record(engine)
    assert record["privatised"] == ["discriminator"] and record["mode"] == "discriminator"
    assert record["composed_noise_multiplier"] == 1.0 and record["public_label_maps"]["maps"] == 8


def test_a_target_epsilon_in_discriminator_mode_needs_less_noise_per_update(public_dir: Path):
    dp = {"noise_multiplier": None, "target_epsilon": 4.0}
    disc = _private(_discriminator_mode(public_dir, **dp), n=8, batch=2, epochs=2)[0]
    both = _private(dp, n=8, batch=2, epochs=2)[0]
    assert 3.9 <= disc.epsilon(disc.planned_iterations) <= 4.0
    assert disc.noise_multiplier == disc.effective_noise_multiplier == pytest.approx(both.effective_noise_multiplier)
    assert both.noise_multiplier == pytest.approx(disc.noise_multiplier * math.sqrt(2))


# --- through the bundle's visit: public pretraining, then DP visits -------------------------------------------------


@pytest.fixture(scope="module")
def visits(demo_root: Path, public_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny visits through configs/train.json: ``public`` (public_c, dp#public_data), and center_a with DP in each
    mode, from scratch and from the public hand-off."""
    out = tmp_path_factory.mktemp("dp_modes")
    run_visit([public_dir], out / "public", reminding_source="local", dp={"enabled": False, "public_data": True})
    done = {"public": out / "public" / "handoff.pt"}
    modes = {"both": {}, "discriminator": _discriminator_mode(public_dir)}
    for mode, extra in modes.items():
        dp = {"enabled": True, "noise_multiplier": 1.0, **extra}
        for start, handoff in (("scratch", None), ("pretrained", done["public"])):
            run_visit([demo_root / "center_a"], out / f"{mode}_{start}", handoff, reminding_source="local", dp=dp)
            done[f"{mode}_{start}"] = out / f"{mode}_{start}" / "handoff.pt"
    return done


def test_a_public_visit_is_recorded_as_public_and_spends_no_epsilon(visits: dict[str, Path]):
    records = privacy_records(visits["public"])
    assert list(records) == ["public_c"]
    public = records["public_c"]
    assert public["public"] is True and public["epsilon"] is None and public["privatised"] == []
    assert public["iterations"] == load_handoff(visits["public"]).visits[-1]["iterations"] == 8
    # a public visit's losses are released like any non-DP visit's (computed on public pairs)
    assert len(load_handoff(visits["public"]).visits[-1]["loss_history"]) == 2


@pytest.mark.parametrize("mode", ["both", "discriminator"])
def test_a_dp_visit_after_public_pretraining_spends_exactly_what_it_spends_from_scratch(
    visits: dict[str, Path], mode: str
):
    pretrained, scratch = privacy_records(visits[f"{mode}_pretrained"]), privacy_records(visits[f"{mode}_scratch"])
    assert list(pretrained) == ["public_c", "center_a"] and list(scratch) == ["center_a"]
    assert pretrained["public_c"]["public"] is True and pretrained["public_c"]["epsilon"] is None
    ours, alone = pretrained["center_a"], scratch["center_a"]
    assert ours["epsilon"] == alone["epsilon"] and ours["iterations"] == alone["iterations"] == 8
    assert ours["mode"] == mode and ours["privatised"] == (
        ["discriminator"] if mode == "discriminator" else ["discriminator", "generator"]
    )
    sigma = 1.0 if mode == "discriminator" else 1 / math.sqrt(2)
    assert ours["epsilon"] == pytest.approx(epsilon_after(8, sigma, ours["sample_rate"], ours["delta"]), abs=1e-6)
    visit = load_handoff(visits[f"{mode}_pretrained"]).visits[-1]
    assert visit["reminded_codes"] == [0]  # the public center is reminded (on public maps in mode discriminator)
    if mode == "discriminator":
        assert ours["public_label_maps"]["folder"] == "public_c" and ours["public_label_maps"]["maps"] == 8


def test_configs_dp_json_is_the_recommended_setting_and_runs_a_visit_after_public_pretraining(
    demo_root: Path, visits: dict[str, Path], tmp_path: Path
):
    from scripts.visit import run_visit as bundle_visit

    recommended = json.loads((REPO / "configs" / "dp.json").read_text())
    assert recommended["dp#mode"] == "both" and recommended["dp#target_epsilon"] == 10.0
    assert "provisional" in recommended["comment"] and recommended["reminding_source"] == "local"
    configs = [str(REPO / "configs" / f) for f in ("train.json", "dp.json")]
    bundle_visit([demo_root / "center_b"], tmp_path, visits["public"], None, TINY, configs, REPO)
    records = privacy_records(tmp_path / "handoff.pt")
    assert records["public_c"]["public"] is True
    assert records["center_b"]["mode"] == "both" and 9.5 <= records["center_b"]["epsilon"] <= 10.0


# --- refusals ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dp, message",
    [
        ({"mode": "discriminator"}, "dp#mode 'discriminator' needs dp#public_label_maps"),
        ({"public_label_maps": "data/public"}, "dp#public_label_maps is read only in dp#mode 'discriminator'"),
        ({"enabled": False, "public_data": True, "noise_multiplier": 1.0, "x": 1}, "unknown setting(s) ['x']"),
        ({"public_data": True}, "dp#public_data declares the visit's centers public"),
        ({"mode": "Discriminator"}, "dp#mode must be one of ['both', 'discriminator']"),
        ({"mode": None}, "dp#mode must be one of"),
        ({"mode": ["both"]}, "dp#mode must be one of"),
        ({"mode": {"_target_": "os.system"}}, "dp#mode must be one of"),
        ({"public_label_maps": 1}, "dp#public_label_maps must be null or the path"),
        ({"public_label_maps": ""}, "dp#public_label_maps must be null or the path"),
        ({"public_label_maps": ["a"]}, "dp#public_label_maps must be null or the path"),
        ({"public_label_maps": "a\nb"}, "dp#public_label_maps must be null or the path"),
        ({"public_label_maps": {"_target_": "os.system"}}, "dp#public_label_maps must be null or the path"),
        ({"public_data": "maybe"}, "dp#public_data must be true or false"),
        ({"public_data": 2}, "dp#public_data must be true or false"),
        ({"public_data": None}, "dp#public_data must be true or false"),
    ],
)
def test_the_new_dp_keys_are_refused_in_one_line_for_hostile_or_unsafe_values(dp: dict, message: str):
    with pytest.raises(PrivacySettingError) as err:
        dp_settings({"enabled": True, "noise_multiplier": 1.0, **dp})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_dp_off_checks_only_the_types_of_the_mode_keys_and_the_public_visit_needs_dp_off():
    off = dp_settings({"enabled": False, "mode": "discriminator", "public_label_maps": "data/public", "public_data": 1})
    assert off["public_data"] is True and off["mode"] == "discriminator"  # a public visit of configs/dp.json
    with pytest.raises(PrivacySettingError, match="dp#mode must be one of"):
        dp_settings({"enabled": False, "mode": "neither"})


def _copied(folder: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(folder, copy)
    return copy


@pytest.mark.parametrize(
    "where, message",
    [
        ("the visited center", "is (or holds, or lies in) the visited center center_a"),
        ("a copy of the visited center", "a map equals a training label map of center_a"),
        ("no folder", "dp#public_label_maps"),
    ],
)
def test_public_label_maps_that_are_the_centers_own_are_refused_in_one_line(
    demo_root: Path, tmp_path: Path, where: str, message: str
):
    center = demo_root / "center_a"
    maps = {
        "the visited center": center,
        "a copy of the visited center": _copied(center, tmp_path, "public_copy"),
        "no folder": tmp_path / "missing",
    }[where]
    with pytest.raises(PrivacySettingError) as err:
        _private(_discriminator_mode(maps), center_names=["center_a"], codes=[0], center_dirs=[str(center)])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_private_center_under_a_public_centers_name_and_the_reverse_are_refused(visits: dict[str, Path]):
    public, private = load_handoff(visits["public"]), load_handoff(visits["both_scratch"])
    with pytest.raises(PrivacySettingError, match="'public_c' was trained as a public"):
        _private({}, center_names=["public_c"], codes=[0], incoming=public)
    gen, disc = _networks()
    loader = DataLoader(OnlineCenters([_items(4, seed=0)]), batch_size=2)
    opts = torch.optim.SGD(gen.parameters(), lr=0.1), torch.optim.SGD(disc.parameters(), lr=0.1)
    visit = _visit(center_names=["center_a"], codes=[0], incoming=private)
    with pytest.raises(PrivacySettingError, match="'center_a' was trained as a private center"):
        PrivateVisit({"public_data": True}, visit, gen, disc, *opts, loader, epochs=1)


def test_a_pretrained_sequence_refuses_a_starting_handoff_that_holds_one_of_its_centers(
    visits: dict[str, Path], public_dir: Path, tmp_path: Path
):
    root = tmp_path / "root"
    shutil.copytree(public_dir, root / "public_c")
    (root / "centers.json").write_text(json.dumps({"order": ["public_c"]}))
    sequence = VisitSequence(
        root,
        tmp_path / "out",
        str(REPO / "configs" / "train.json"),
        visit_overrides={"bundle_root": str(REPO), **TINY},
        bundle_root=REPO,
        handoff_in=visits["public"],
    )
    with pytest.raises(InputError, match=r"already holds center\(s\) \['public_c'\]"):
        sequence.check_inputs()
