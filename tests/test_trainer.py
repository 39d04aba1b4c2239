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
"""Tests of the TDGAN iteration: which network gets gradients, the reminding loss, and the pix2pix special case."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from monai.data import DataLoader

from scripts.data.centers import OnlineCenters
from scripts.networks import TDGANGenerator, TemporaryDiscriminators, one_hot_labels
from scripts.reminding import Reminder
from scripts.trainer import TDGANTrainer

K, SIZE, BATCH = 4, 32, 2


def _dataset(n: int, code: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.rand(1, SIZE, SIZE, generator=gen) * 2 - 1,
            "label": torch.randint(0, K, (1, SIZE, SIZE), generator=gen, dtype=torch.uint8),
            "center": code,
        }
        for _ in range(n)
    ]


def _trainer(reminder=None, reminding_weight=1.0, groups=1, seed=0, **kwargs) -> TDGANTrainer:
    torch.manual_seed(seed)
    gen = TDGANGenerator(spatial_dims=2, num_classes=K, max_centers=3, ngf=8, num_blocks=1)
    disc = TemporaryDiscriminators(count=groups, spatial_dims=2, num_classes=K, ndf=8)
    data = OnlineCenters([_dataset(4, code=1 + g, seed=g) for g in range(groups)])
    return TDGANTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=DataLoader(data, batch_size=BATCH, shuffle=False),
        g_network=gen,
        g_optimizer=torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.5, 0.999)),
        d_network=disc,
        d_optimizer=torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999)),
        reminder=reminder,
        reminding_weight=reminding_weight,
        **kwargs,
    )


def _teacher() -> TDGANGenerator:
    return TDGANGenerator(spatial_dims=2, num_classes=K, max_centers=8, ngf=4, num_blocks=1)


def _first_batch(trainer: TDGANTrainer):
    return next(iter(trainer.data_loader))


@pytest.mark.parametrize("groups", [1, 2])
def test_discriminator_gets_no_gradient_in_generator_step_and_generator_none_in_discriminator_step(groups):
    teacher = copy.deepcopy(_trainer(groups=groups).g_network)
    trainer = _trainer(reminder=Reminder("local", [0], teacher), groups=groups)
    gen, disc = trainer.g_network, trainer.d_network
    g = trainer.prepare_groups(_first_batch(trainer))
    remind = trainer.reminder.batch([b.label for b in g], BATCH)
    fakes, r_out = trainer.generate(g, remind)

    gen.zero_grad(set_to_none=True)
    trainer.backward_d(g, fakes)
    assert all(p.grad is None for p in gen.parameters()), "the D step put gradients on G"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters() if p.dim() > 1)

    disc.zero_grad(set_to_none=True)
    trainer.backward_g(g, fakes, r_out, remind)
    assert all(p.grad is None for p in disc.parameters()), "the G step put gradients on D"
    assert all(p.grad is not None for p in gen.parameters())
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training


def test_reminding_loss_is_zero_when_generator_matches_teacher_and_positive_otherwise():
    trainer = _trainer()
    reminder = Reminder("local", [0, 2], copy.deepcopy(trainer.g_network))
    g = trainer.prepare_groups(_first_batch(trainer))

    def reminding_loss() -> float:
        remind = reminder.batch([b.label for b in g], BATCH)
        fakes, r_out = trainer.generate(g, remind)
        return trainer.backward_g(g, fakes, r_out, remind)["reminding"].item()

    assert reminding_loss() < 1e-5
    with torch.no_grad():
        for p in reminder.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert reminding_loss() > 1e-3


def _pix2pix_reference_steps(gen, disc, batches, steps):
    """Plain pix2pix on the trainer's batches: BCE GAN + 100 L1, L_G x 0.1, L_D x 0.05, Adam(2e-4, 0.5, 0.999).

    BCE is written as sigmoid then binary cross-entropy, the same float operations as MONAI's PatchAdversarialLoss.
    """

    def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
        return F.binary_cross_entropy(torch.sigmoid(logits), torch.full_like(logits, target))

    opt_g = torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999))
    for batch in batches[:steps]:
        (b,) = batch
        label, image = b["label"].long(), b["image"].float()
        y = one_hot_labels(label, K)
        fake = gen(gen.condition(label, b["center"]))
        opt_d.zero_grad()
        # fakes and reals in one D forward, as the trainer does (same math per sample under instance norm; the same
        # float rounding matters: Adam turns the ~0 gradients of the biases before instance norm into +-lr steps)
        d_both = disc[0](torch.cat([torch.cat([y, y]), torch.cat([fake.detach(), image])], 1))[-1]
        d_fake, d_real = d_both.split(label.shape[0])
        loss_d = 0.05 * (bce(d_fake, 0.0) + bce(d_real, 1.0))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        for p in disc.parameters():
            p.requires_grad_(False)
        d_fake = disc[0](torch.cat([y, fake], 1))[-1]
        loss_g = 0.1 * (bce(d_fake, 1.0) + 100 * F.l1_loss(fake, image))
        loss_g.backward()
        opt_g.step()
        for p in disc.parameters():
            p.requires_grad_(True)
    return gen


def test_with_reminding_weight_zero_a_visit_is_plain_pix2pix_fine_tuning():
    teacher_source = _trainer(seed=1).g_network  # a different generator: reminding would pull towards it
    trainer = _trainer(reminder=Reminder("local", [0], copy.deepcopy(teacher_source)), reminding_weight=0.0)
    assert not trainer.reminding_on
    gen0, disc0 = copy.deepcopy(trainer.g_network), copy.deepcopy(trainer.d_network)
    batches = list(trainer.data_loader)
    trainer.run()  # one epoch = 2 steps through the real engine
    reference = _pix2pix_reference_steps(gen0, disc0, batches, steps=len(batches))
    for (name, p), q in zip(trainer.g_network.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, atol=1e-6), f"{name} differs from plain pix2pix"

    reminded = _trainer(reminder=Reminder("local", [0], copy.deepcopy(teacher_source)), reminding_weight=1.0)
    reminded.run()
    diff = max((p - q).abs().max() for p, q in zip(reminded.g_network.parameters(), reference.parameters()))
    assert diff > 1e-6, "reminding weight 1 should change the update"


def test_class_weights_reach_both_l1_terms_and_change_the_update():
    """``l1_class_weights`` weighs the digesting L1 (against x) and the reminding L1 (against T(y')) by the label map's
    classes; without it the trainer's terms are the plain L1."""
    teacher = copy.deepcopy(_trainer(seed=1).g_network)
    plain = _trainer(reminder=Reminder("local", [0], copy.deepcopy(teacher)))
    weighted = _trainer(reminder=Reminder("local", [0], copy.deepcopy(teacher)), l1_class_weights={3: 10.0})
    losses = {}
    for name, trainer in (("plain", plain), ("weighted", weighted)):
        g = trainer.prepare_groups(_first_batch(trainer))
        remind = trainer.reminder.batch([b.label for b in g], BATCH)
        fakes, r_out = trainer.generate(g, remind)
        losses[name] = trainer.backward_g(g, fakes, r_out, remind)
        if name == "plain":
            assert torch.allclose(losses[name]["g_l1"], F.l1_loss(fakes[0], g[0].image))
            assert torch.allclose(losses[name]["reminding"], 100 * F.l1_loss(r_out, remind.target), atol=1e-5)
        else:
            w = torch.where(g[0].label == 3, 10.0, 1.0)
            by_hand = ((w * (fakes[0] - g[0].image).abs()).flatten(1).sum(1) / w.flatten(1).sum(1)).mean()
            assert torch.allclose(losses[name]["g_l1"], by_hand)
    for key in ("g_l1", "reminding"):
        assert not torch.allclose(losses["plain"][key], losses["weighted"][key]), key


def test_reminding_batch_has_constant_size_whatever_the_number_of_earlier_centers():
    labels = torch.randint(0, K, (BATCH, 1, 8, 8))
    for earlier in (1, 4, 7):
        bank = torch.cat([torch.full((3, 1, 8, 8), c, dtype=torch.uint8) for c in range(earlier)])
        rem = Reminder("bank", list(range(earlier)), _teacher(), bank=bank, bank_counts=[3] * earlier, seed=0)
        maps, codes = rem.sample([labels], BATCH)
        assert maps.shape == (BATCH, 1, 8, 8) and codes.shape == (BATCH,)
        # each bank map was filled with its center's code: a sampled map must come from the sampled center
        assert torch.equal(maps[:, 0, 0, 0], codes)
    maps, codes = Reminder("local", [5, 6], _teacher(), seed=0).sample([labels[:1], labels[1:]], 64)
    assert set(codes.tolist()) == {5, 6}
    assert all(any(torch.equal(m, lab) for lab in labels) for m in maps)


def test_bank_reminding_draws_earlier_centers_evenly():
    bank = torch.cat([torch.zeros(1, 1, 4, 4, dtype=torch.uint8), torch.ones(9, 1, 4, 4, dtype=torch.uint8)])
    reminder = Reminder("bank", [0, 1], _teacher(), bank=bank, bank_counts=[1, 9], seed=0)
    _, codes = reminder.sample([torch.zeros(1, 1, 4, 4)], 4000)
    share = (codes == 0).float().mean().item()
    assert 0.45 < share < 0.55  # centers are drawn uniformly, not in proportion to their bank size
