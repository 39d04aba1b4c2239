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
"""Tests of the step benchmark command line (tools.benchmark_step) on tiny networks; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.precision import amp_supported
from tools.benchmark_step import parse_overrides, peak_gflops

REPO = Path(__file__).resolve().parents[1]
TINY = ("--set", "ngf=8", "--set", "num_blocks=1", "--set", "ndf=8")


def _bench(*args: str) -> tuple[list[dict], list[dict]]:
    """Run the benchmark on 32x32 demo centers, batch 2, one thread; return its case and summary records."""
    cmd = [sys.executable, "-m", "tools.benchmark_step", "--sizes", "32", "--batch_size", "2", "--threads", "1"]
    cmd += ["--device", "cpu", "--steps", "2", "--warmup", "1", *TINY, *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    return [r for r in records if "summary" not in r], [r for r in records if "summary" in r]


def test_parse_overrides() -> None:
    """Values are JSON when they parse, strings otherwise; malformed items are rejected."""
    assert parse_overrides(["ngf=8", "amp=true", "gan_mode=lsgan", "spatial_size=[32, 32]"]) == {
        "ngf": 8,
        "amp": True,
        "gan_mode": "lsgan",
        "spatial_size": [32, 32],
    }
    with pytest.raises(ValueError):
        parse_overrides(["ngf"])


@pytest.fixture(scope="module")
def beside_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[dict]]:
    """One run of the benchmark at centers 1, 2, 4 with a stand-in reference beside it (one process start per case:
    a second run for the bundle alone would time the same cases again)."""
    fake = _fake_reference(tmp_path_factory.mktemp("bench") / "tdgan_ref")
    return _bench("--centers", "1", "2", "4", "--reference", str(fake))


def test_benchmark_reports_flat_reminding_flops_data_wait_and_peak_per_center(beside_reference) -> None:
    """Centers 1, 2, 4: one JSON line each, then a summary; the step's FLOPs do not grow after the second center."""
    cases = [r for r in beside_reference[0] if r["implementation"] == "bundle"]
    summaries = [s for s in beside_reference[1] if s["summary"] == "centers" and "implementation" not in s]
    assert [r["center_index"] for r in cases] == [1, 2, 4]
    assert [r["earlier_centers"] for r in cases] == [0, 1, 3]
    assert [r["reminding"] for r in cases] == [False, True, True]
    # the teacher ran once per bank map (8 demo training maps per earlier center) before the timed steps
    assert [r["teacher_cache_maps"] for r in cases] == [0, 8, 24]
    first, second, fourth = cases
    assert second["step_gflop"] == fourth["step_gflop"] > first["step_gflop"] > 0
    for r in cases:
        assert r["size"] == 32 and r["batch_size"] == 2 and len(r["step_s"]) == 2 and r["precision"] == "fp32"
        assert 0 < r["step_s_min"] <= r["step_s_median"] and r["images_per_s"] > 0
        assert 0 <= r["data_wait_share"] < 1 and r["peak_mem_mb"] > 0 and r["peak_mem_kind"].startswith("cpu")
        assert r["perceptual"] and "RANDOM weights, timing only" in r["perceptual_network"]
        assert r["achieved_gflops"] == pytest.approx(r["step_gflop"] / r["step_s_median"], rel=0.02)
        assert r["peak_gflops"] > 0 and "1 cores" in r["peak_basis"] and r["threads"] == 1
        # a fraction above 1 is impossible: the record then says the clock of the estimate was too low
        above = "the step ran above this estimate" in r["peak_basis"]
        assert above is (r["fraction_of_peak"] > 1)
        assert (r["ngf"], r["num_blocks"], r["ndf"], r["device"]) == (8, 1, 8, "cpu")
    (summary,) = summaries
    assert summary["summary"] == "centers" and summary["precision"] == "fp32"
    ratios = summary["ratio_to_first_step_s_median"]
    assert ratios["1"] == 1.0
    assert ratios["4"] == pytest.approx(fourth["step_s_median"] / first["step_s_median"], abs=0.002)
    assert summary["ratio_last_to_second_step_s_median"] == pytest.approx(
        fourth["step_s_median"] / second["step_s_median"], abs=0.002
    )


def test_benchmark_bf16_case_and_speedup_summary() -> None:
    """bf16 runs where the CPU supports it (else the record says fp32), and is compared with fp32."""
    cases, summaries = _bench("--centers", "2", "--precisions", "fp32", "bf16", "--no_flops", "--perceptual", "none")
    assert [r["precision_asked"] for r in cases] == ["fp32", "bf16"]
    assert cases[1]["precision"] == ("bf16" if amp_supported("cpu", torch.bfloat16) else "fp32")
    assert all(r["step_gflop"] is None and not r["perceptual"] and r["perceptual_network"] is None for r in cases)
    speedup = [s for s in summaries if s["summary"] == "precision_speedup"]
    if cases[1]["precision"] == "fp32":  # no native bf16 on this CPU: both cases ran fp32, nothing to compare
        assert speedup == []
        return
    assert len(speedup) == 1 and speedup[0]["precision"] == cases[1]["precision"]
    expected = cases[0]["step_s_median"] / cases[1]["step_s_median"]
    assert speedup[0]["speedup_vs_fp32_median"] == pytest.approx(expected, abs=0.002)


def test_cpu_peak_estimate_counts_cores_and_low_precision_units() -> None:
    one, basis = peak_gflops(torch.device("cpu"), "fp32", 1)
    two, _ = peak_gflops(torch.device("cpu"), "fp32", 2)
    bf16, bf16_basis = peak_gflops(torch.device("cpu"), "bf16", 1)
    if one is None:
        pytest.skip(f"no CPU clock readable here: {basis}")
    assert one > 0 and "FLOP/cycle" in basis
    assert two == pytest.approx(min(2, __import__("os").cpu_count()) * one)
    assert bf16 >= one and "FLOP/cycle" in bf16_basis


FAKE_MODEL = '''
import torch
from models.perception_loss import vgg16_feat


class TDGANModel:
    """A stand-in with the reference's interface: a generator per call, its VGG moved with .cuda() as the reference
    does, one forward per task, one backward, one Adam step."""

    def __init__(self, opt):
        self.opt = opt
        self.netG = torch.nn.Conv2d(opt.input_nc, opt.output_nc, 3, padding=1)
        self.vgg_model = vgg16_feat().cuda()
        self.optimizer_G = torch.optim.Adam(self.netG.parameters(), lr=opt.lr)
        print("built (the reference prints here)")

    def set_input(self, batch):
        self.real_A = [batch["A_" + str(i)] for i in range(self.opt.task_num)]

    def optimize_parameters(self):
        loss = sum(self.vgg_model(self.netG(a))["relu1_2"].mean() for a in self.real_A)
        self.optimizer_G.zero_grad()
        loss.backward()
        self.optimizer_G.step()
'''
FAKE_VGG = """
from torch import nn
from torchvision import models


class vgg16_feat(nn.Module):
    def __init__(self):
        super().__init__()
        self.vgg_layers = models.vgg16(pretrained=True).features

    def forward(self, x):
        for name, module in self.vgg_layers._modules.items():
            x = module(x)
            if name == "3":
                return {"relu1_2": x}
"""


def _fake_reference(root: Path) -> Path:
    """A folder with the reference's layout and a TINY stand-in model (not the reference's code: CI has no copy of
    it); it calls .cuda() and asks torchvision for pretrained VGG16 weights, as the reference does."""
    (root / "models").mkdir(parents=True)
    for name, text in {"__init__": "", "base_model": "", "networks": "", "TDGAN_model": FAKE_MODEL}.items():
        (root / "models" / f"{name}.py").write_text(text)
    (root / "models" / "perception_loss.py").write_text(FAKE_VGG)
    return root


def test_reference_path_that_is_not_a_copy_is_refused_with_one_line(tmp_path: Path, capsys) -> None:
    from tools import benchmark_step, reference_step

    for main, argv in (
        (benchmark_step.main, ["--sizes", "32", "--reference", str(tmp_path / "missing")]),
        (reference_step.main, ["--reference", str(tmp_path / "missing")]),
        (reference_step.main, ["--reference", str(tmp_path)]),  # exists, but holds no models/TDGAN_model.py
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert "huiqu18/TDGAN-PyTorch" in last and "models/TDGAN_model.py" in last and "git --git-dir" in last
        assert ("does not exist" in last) == argv[-1].endswith("missing")
    with pytest.raises(SystemExit):
        reference_step.build_argparser().parse_args(["--size", "32"])  # --reference is required


def test_benchmark_times_the_reference_side_by_side_through_the_adapter(beside_reference) -> None:
    """With --reference, one reference record per center (its step, built with .cuda() patched and random VGG
    weights), a centers summary of its own and a vs_reference ratio per bundle case."""
    cases, summaries = beside_reference
    bundle = [r for r in cases if r["implementation"] == "bundle"]
    reference = [r for r in cases if r["implementation"] == "reference"]
    assert [r["center_index"] for r in bundle] == [1, 2, 4] and [r["center_index"] for r in reference] == [1, 2, 4]
    for r in reference:
        assert r["device"] == "cpu" and r["precision"] == "fp32" and len(r["step_s"]) == 2 and r["step_s_median"] > 0
        assert "random weights" in r["reference_patches"] and r["reminding"] == (r["center_index"] > 1)
    centers = {s.get("implementation", "bundle"): s for s in summaries if s["summary"] == "centers"}
    assert set(centers) == {"bundle", "reference"}
    vs = [s for s in summaries if s["summary"] == "vs_reference"]
    assert [s["center_index"] for s in vs] == [1, 2, 4]
    for s, b, r in zip(vs, bundle, reference):
        assert s["bundle_over_reference_median"] == pytest.approx(b["step_s_median"] / r["step_s_median"], abs=0.002)


def test_profile_attributes_the_whole_step_to_its_phases_with_backward_to_the_forward_that_made_it() -> None:
    from tools.profile_step import PHASES, markdown_table, profile_case

    torch.set_num_threads(1)
    record = profile_case(32, 2, 2, steps=1, warmup=1, device="cpu", extra={"ngf": 8, "num_blocks": 1, "ndf": 8})
    phases = record["phases"]
    assert set(phases) == {*PHASES, "other", "step"}  # at the second center every phase runs
    step = phases["step"]["total_ms"]
    parts = sum(p["total_ms"] for name, p in phases.items() if name != "step")
    assert parts == pytest.approx(step, rel=0.02)  # "other" is what the phases leave, so they add up
    assert all(p["forward_ms"] >= 0 and p["backward_ms"] >= 0 for p in phases.values())
    for name in ("tdgan.generator_forward", "tdgan.d_forward", "tdgan.g_step.perceptual_reminding"):
        assert phases[name]["backward_ms"] > 0, f"{name}: its backward was not credited to it"
    for name in ("tdgan.reminding_batch", "tdgan.d_update", "tdgan.g_update"):
        assert phases[name]["backward_ms"] < 0.2 * phases["tdgan.generator_forward"]["backward_ms"]
    # the digesting target's features run without autograd; the cached reminding targets need none at all
    assert phases["tdgan.g_step.perceptual_digesting"]["no_grad_ms"] > 0
    assert (
        phases["tdgan.g_step.perceptual_reminding"]["no_grad_ms"]
        < phases["tdgan.g_step.perceptual_digesting"]["no_grad_ms"]
    )
    table = markdown_table([record])
    assert table.count("\n") == 1 + len(PHASES) + 2 and "**step**" in table
