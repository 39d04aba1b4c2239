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
"""Tests of the trainer's speed options: the teacher-output cache, mixed precision and channels-last."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from monai.data import DataLoader

from scripts.data.centers import OnlineCenters
from scripts.losses import PerceptualLoss
from scripts.networks import TDGANGenerator, TemporaryDiscriminators, encode_condition
from scripts.precision import amp_supported, resolve_amp_dtype
from scripts.reminding import Reminder
from scripts.speed import Speed, retain_freed_memory_now
from scripts.trainer import TDGANTrainer

K, SIZE, BATCH, EARLIER, PER_CENTER = 4, 32, 2, 3, 3


def _bank() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, K, (EARLIER * PER_CENTER, 1, SIZE, SIZE), generator=gen, dtype=torch.uint8)


def _trainer(source: str = "bank", teacher_cache: bool = True, **speed) -> TDGANTrainer:
    """A tiny trainer at a fourth center, reminding three earlier ones; same weights and data for any options."""
    torch.manual_seed(0)
    gen = TDGANGenerator(spatial_dims=2, num_classes=K, max_centers=4, ngf=4, num_blocks=1)
    disc = TemporaryDiscriminators(count=1, spatial_dims=2, num_classes=K, ndf=4)
    teacher = copy.deepcopy(gen)
    with torch.no_grad():  # a teacher that differs from the generator, so the reminding loss is not zero
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    data_gen = torch.Generator().manual_seed(2)
    items = [
        {
            "image": torch.rand(1, SIZE, SIZE, generator=data_gen) * 2 - 1,
            "label": torch.randint(0, K, (1, SIZE, SIZE), generator=data_gen, dtype=torch.uint8),
            "center": EARLIER,
        }
        for _ in range(4)
    ]
    if source == "bank":
        bank, counts = _bank(), [PER_CENTER] * EARLIER
        reminder = Reminder("bank", list(range(EARLIER)), teacher, bank, counts, seed=0, cache=teacher_cache)
    else:
        reminder = Reminder("local", list(range(EARLIER)), teacher, seed=0)
    return TDGANTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=DataLoader(OnlineCenters([items]), batch_size=BATCH, shuffle=False),
        g_network=gen,
        g_optimizer=torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.5, 0.999)),
        d_network=disc,
        d_optimizer=torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999)),
        reminder=reminder,
        **speed,
    )


def _teacher_calls(trainer: TDGANTrainer) -> list[int]:
    """Batch sizes of the teacher's forwards from now on."""
    calls: list[int] = []
    trainer.reminder.teacher.register_forward_hook(lambda m, args, out: calls.append(int(args[0].shape[0])))
    return calls


def test_cached_teacher_targets_equal_the_teachers_output_and_each_bank_map_is_taught_once():
    trainer = _trainer()
    reminder = trainer.reminder
    assert reminder.cache
    reference = copy.deepcopy(reminder.teacher)
    calls = _teacher_calls(trainer)
    labels = [torch.zeros(BATCH, 1, SIZE, SIZE, dtype=torch.long)]
    bank = _bank()
    for _ in range(3):
        r_label, r_center, target, _ = reminder.batch(labels, BATCH)
        with torch.no_grad():
            expected = reference(encode_condition(r_label, r_center, K, 4))
        torch.testing.assert_close(target, expected, rtol=1e-5, atol=1e-6)
        # bank maps PER_CENTER * c .. PER_CENTER * (c + 1) - 1 belong to center c: a map comes with its center's code
        for m, c in zip(r_label, r_center.tolist()):
            assert any(torch.equal(m, b.long()) for b in bank[PER_CENTER * c : PER_CENTER * (c + 1)])
    # the first batch taught every bank map once (the whole cache, in blocks); later batches only look up
    assert sum(calls) == EARLIER * PER_CENTER and reminder.fill_cache() == 0
    n = len(calls)
    for _ in range(5):
        reminder.batch(labels, BATCH)
    assert len(calls) == n, "a full cache must not run the teacher again"


def test_cached_and_uncached_teacher_give_the_same_training_step():
    cached, uncached = _trainer(teacher_cache=True), _trainer(teacher_cache=False)
    assert cached.reminder.cache and not uncached.reminder.cache
    for batch_c, batch_u in zip(cached.data_loader, uncached.data_loader):
        out_c, out_u = cached._iteration(cached, batch_c), uncached._iteration(uncached, batch_u)
        assert float(out_c["reminding"]) > 0
        for key in ("reminding", "g_loss", "d_loss"):
            torch.testing.assert_close(out_c[key], out_u[key], rtol=1e-5, atol=1e-6)
    for p, q in zip(cached.g_network.parameters(), uncached.g_network.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_local_reminding_runs_the_teacher_every_step():
    trainer = _trainer(source="local")
    assert not trainer.reminder.cache
    calls = _teacher_calls(trainer)
    for batch in trainer.data_loader:
        trainer._iteration(trainer, batch)
    assert calls == [BATCH] * len(trainer.data_loader)


def test_amp_dtype_names_and_defaults():
    assert resolve_amp_dtype(None, "cpu") == torch.bfloat16 and resolve_amp_dtype(None, "cuda") == torch.float16
    assert resolve_amp_dtype("bf16", "cuda") == torch.bfloat16 and resolve_amp_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="amp_dtype"):
        resolve_amp_dtype("float32", "cpu")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_amp_runs_where_supported_and_falls_back_to_fp32_elsewhere(dtype):
    trainer = _trainer(speed=Speed("cpu", amp=True, amp_dtype=dtype))
    supported = amp_supported("cpu", getattr(torch, dtype))
    assert trainer.precision.name == ({"bfloat16": "bf16", "float16": "fp16"}[dtype] if supported else "fp32")
    assert trainer.precision.amp == supported
    assert trainer.precision.scaler is None  # a GradScaler only for float16 on CUDA
    seen = []
    trainer.g_network.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    out = trainer._iteration(trainer, next(iter(trainer.data_loader)))
    assert all(torch.isfinite(v) for v in out.values())
    # the generator's output is low precision exactly when autocast is on
    assert seen[0] == (getattr(torch, dtype) if supported else torch.float32)


def test_channels_last_gives_the_same_step():
    plain, cl = _trainer(), _trainer(speed=Speed("cpu", channels_last=True))
    assert cl.memory_format == torch.channels_last
    conv = next(p for p in cl.g_network.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    batch = next(iter(plain.data_loader))
    out_p, out_c = plain._iteration(plain, batch), cl._iteration(cl, batch)
    for key in ("reminding", "g_loss", "d_loss"):
        torch.testing.assert_close(out_p[key], out_c[key], rtol=1e-4, atol=1e-5)


class _TinyFeatures(torch.nn.Module):
    """A two-layer feature network (a list of feature maps, as VGG16Features gives) small enough for the tests."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.a = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = torch.relu(self.a(x))
        return [f1, torch.relu(self.b(f1))]


ENTRY_FEATURE_BYTES = 4 * (4 * SIZE * SIZE + 4 * (SIZE // 2) ** 2)  # float32 features of one entry


@pytest.mark.parametrize("cached_entries", [EARLIER * PER_CENTER, 2])
def test_cached_target_features_give_the_same_step_and_each_entry_is_featured_once(cached_entries):
    budget_mb = cached_entries * ENTRY_FEATURE_BYTES / 2**20
    cached = _trainer(perceptual_loss=PerceptualLoss(_TinyFeatures()), reminding_feature_cache_mb=budget_mb)
    plain = _trainer(perceptual_loss=PerceptualLoss(_TinyFeatures()), reminding_feature_cache_mb=0)
    targets: list[int] = []  # rows of the feature network's no-grad calls (target features) in the cached trainer
    cached.perceptual_loss.features.register_forward_hook(
        lambda m, args, out: None if torch.is_grad_enabled() else targets.append(int(args[0].shape[0]))
    )
    for _ in range(3):
        for batch_c, batch_p in zip(cached.data_loader, plain.data_loader):
            out_c, out_p = cached._iteration(cached, batch_c), plain._iteration(plain, batch_p)
            assert float(out_c["reminding"]) > 0
            for key in ("reminding", "g_loss", "d_loss", "g_perceptual"):
                torch.testing.assert_close(out_c[key], out_p[key], rtol=1e-5, atol=1e-6)
    # the generators agree (their raw biases before instance norm need not: Adam turns their ~0 gradients into
    # +-lr steps, see test_trainer's pix2pix reference)
    probe = encode_condition(_bank()[:2].long(), torch.tensor([0, 1]), K, 4)
    with torch.no_grad():
        torch.testing.assert_close(cached.g_network(probe), plain.g_network(probe), rtol=1e-4, atol=1e-4)
    reminder = cached.reminder
    assert reminder._feature_entries == cached_entries and plain.reminder._features is None
    featured = reminder._feature_entries  # every entry the budget holds, featured at the first batch
    # no-grad feature calls: 1 (the size probe) + each cacheable entry once (aligned blocks) + the digesting targets
    # (BATCH a step) + every reminding row beyond the cache
    steps = 3 * len(cached.data_loader)
    assert sum(targets) - 1 - BATCH * steps <= featured + (
        0 if cached_entries == EARLIER * PER_CENTER else BATCH * steps
    )
    assert cached.reminder.cache_bytes > plain.reminder.cache_bytes


def _faults_of_a_fresh_40mb_tensor() -> int:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    # 40 MB: above glibc's largest dynamic mmap threshold (32 MB), below the 64 MB heap of a secondary arena, which
    # serves larger blocks by mmap whatever the threshold (the test's thread may have been moved to such an arena
    # by allocator contention with the threads of earlier tests)
    x = torch.empty(10 * 2**20, dtype=torch.float32)
    x.fill_(1.0)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_freed_memory_is_reused_without_page_faults():
    # process-wide: a CPU trainer of an earlier test may have made the settings already
    if not retain_freed_memory_now():
        pytest.skip("not glibc")
    # like training steps: the same large block allocated and freed again and again. Measured here: the first 7-8
    # cycles fault in every page (the heap settles), then none; without the settings every cycle faults every page
    faults = [_faults_of_a_fresh_40mb_tensor() for _ in range(20)]
    pages = 40 * 2**20 // 4096
    assert all(f < pages // 10 for f in faults[-5:]), (
        faults
    )  # the steady state reuses the kept memory  # the next one reuses it (without: about every page)


def test_one_step_opens_every_profiler_scope_that_tools_profile_step_reads():
    from tools.profile_step import PHASES

    trainer = _trainer(perceptual_loss=PerceptualLoss(_TinyFeatures()))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        trainer._iteration(trainer, next(iter(trainer.data_loader)))
    assert set(PHASES) <= {event.name for event in prof.events()}
