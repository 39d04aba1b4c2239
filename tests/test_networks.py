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
"""Tests of the generator, its center conditioning, and the temporary discriminators."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from scripts.data.demo import CLASS_NAMES
from scripts.handoff import load_handoff
from scripts.networks import (
    CONDITIONING_MODES,
    CenterConditionalNorm,
    TDGANGenerator,
    TemporaryDiscriminators,
    encode_condition,
    one_hot_labels,
    with_legacy_defaults,
)
from tests.conftest import REPO, TRAIN, run_visit


def test_fresh_generator_gives_different_images_for_different_center_codes():
    torch.manual_seed(0)
    gen = TDGANGenerator(spatial_dims=2, num_classes=4, max_centers=3, ngf=16, num_blocks=2).eval()
    label = torch.randint(0, 4, (1, 1, 32, 32)).expand(3, -1, -1, -1)
    with torch.no_grad():
        out = gen(gen.condition(label, torch.tensor([0, 1, 2])))
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert (out[a] - out[b]).abs().max() > 1e-2, f"codes {a} and {b} gave the same image"


def test_constant_code_planes_are_erased_by_instance_norm_but_label_x_center_input_is_not():
    """Why the conditioning is label x center: a code given as constant input planes does not reach the output."""
    torch.manual_seed(0)
    label = torch.randint(0, 4, (1, 1, 32, 32))
    one_hot = one_hot_labels(label, 4)
    planes = TDGANGenerator(spatial_dims=2, num_classes=6, max_centers=1, ngf=16, num_blocks=2, conditioning="input")
    planes.eval()
    code_a = torch.cat([one_hot, torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 32, 32)], 1)
    code_b = torch.cat([one_hot, torch.tensor([0.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 32, 32)], 1)
    ours = TDGANGenerator(spatial_dims=2, num_classes=4, max_centers=2, ngf=16, num_blocks=2, conditioning="input")
    ours.eval()
    with torch.no_grad():
        erased = (planes(code_a) - planes(code_b)).abs().max()
        kept = (ours(ours.condition(label, torch.tensor([0]))) - ours(ours.condition(label, torch.tensor([1])))).abs()
    assert erased < 1e-4  # the first instance norm removes a spatially constant offset
    assert kept.max() > 1e-2


def test_condition_puts_label_class_k_of_center_c_in_channel_c_times_k():
    label = torch.tensor([[[[0, 1], [2, 3]]]]).expand(2, -1, -1, -1)
    cond = encode_condition(label, torch.tensor([0, 2]), num_classes=4, max_centers=3)
    assert cond.shape == (2, 12, 2, 2)
    assert torch.equal(cond.sum(1), torch.ones(2, 2, 2))
    assert cond[1, 2 * 4 + 3, 1, 1] == 1 and cond[1, 3, 1, 1] == 0
    assert cond[0, 1, 0, 1] == 1 and cond[0, 4:].sum() == 0


@pytest.mark.parametrize("conditioning", CONDITIONING_MODES)
@pytest.mark.parametrize("spatial_dims, size", [(2, (32, 32)), (3, (16, 16, 16))])
def test_generator_is_dimension_generic_and_outputs_tanh_range(spatial_dims, size, conditioning):
    gen = TDGANGenerator(spatial_dims, 3, 2, out_channels=2, ngf=4, num_blocks=1, conditioning=conditioning)
    label = torch.randint(0, 3, (2, 1, *size))
    out = gen(gen.condition(label, torch.tensor([0, 1])))
    assert out.shape == (2, 2, *size)
    assert out.abs().max() <= 1.0


def test_default_generator_is_pix2pix_resnet9_sized():
    gen = TDGANGenerator(spatial_dims=2, num_classes=1 + 1, max_centers=1, out_channels=3)
    params = sum(p.numel() for p in gen.parameters())
    assert 11.3e6 < params < 11.5e6  # pix2pix ResNet-9 at ngf=64: about 11.4 M


def test_conditional_norms_add_a_scale_and_a_shift_per_code_and_channel_of_every_norm_layer():
    sizes = {mode: TDGANGenerator(2, 4, 8, conditioning=mode) for mode in CONDITIONING_MODES}
    count = {mode: sum(p.numel() for p in gen.parameters()) for mode, gen in sizes.items()}
    norm_channels = 64 + 128 + 256 * (1 + 2 * 9) + 128 + 64  # ngf 64, 2 downsamplings, 9 blocks
    assert count["cin"] - count["input"] == 2 * 8 * norm_channels  # per center
    assert count["spade"] - count["input"] == 2 * 8 * 4 * norm_channels  # per center and class
    with pytest.raises(ValueError, match="conditioning must be one of"):
        TDGANGenerator(2, 4, 8, conditioning="planes")


@pytest.mark.parametrize("spatial_dims, size", [(2, (24, 40)), (3, (8, 12, 4))])
def test_center_code_is_read_back_exactly_from_the_label_x_center_input(spatial_dims: int, size: tuple[int, ...]):
    gen = TDGANGenerator(spatial_dims, num_classes=3, max_centers=5, ngf=4, num_blocks=1)
    label = torch.randint(0, 3, (4, 1, *size))
    codes = torch.tensor([4, 0, 2, 2])
    assert torch.equal(gen.center_code(gen.condition(label, codes)), torch.eye(5)[codes])


@pytest.mark.parametrize("conditioning", [None, "cin", "spade"])
@pytest.mark.parametrize("spatial_dims, size", [(2, (32, 32)), (3, (16, 16, 16))])
def test_fresh_generator_renders_a_one_class_map_differently_per_code_and_the_code_not_rounding_sets_it(
    spatial_dims: int, size: tuple[int, ...], conditioning: str | None
):
    """An empty patch or a tumour-only crop: the first conv output is constant and the first norm zeroes it.

    With the code in the input only, what is left of it is float32 rounding that the later instance norms amplify:
    the two codes' images differ in float32, but by noise (float64 gives other images, and no difference between
    codes, about 1e-6). With conditional norms, float32 and float64 agree and the codes differ by far more.
    """
    torch.manual_seed(0)
    kwargs = {} if conditioning is None else {"conditioning": conditioning}  # None: the default
    gen = TDGANGenerator(spatial_dims, num_classes=4, max_centers=3, ngf=8, num_blocks=1, **kwargs).eval()
    for k in range(4):
        x = gen.condition(torch.full((2, 1, *size), k), torch.tensor([0, 2]))
        with torch.no_grad():
            single = gen(x).double()
            double = gen.double()(x.double())
            gen.float()
        assert (single - double).abs().max() < 1e-2, f"class {k}: the image is rounding noise"
        assert (double[0] - double[1]).abs().mean() > 0.05, f"class {k}: codes 0 and 2 give the same image"


def test_cin_at_identity_modulation_is_exactly_the_input_conditioned_generator():
    """A fresh generator starts like the earlier one: same parameter names, and with scale 1 and shift 0 the same
    function (the initial perturbation N(1, 0.02), N(0, 0.02) is what tells codes apart on one-class maps)."""
    torch.manual_seed(0)
    old = TDGANGenerator(2, num_classes=4, max_centers=3, ngf=8, num_blocks=2, conditioning="input").eval()
    new = TDGANGenerator(2, num_classes=4, max_centers=3, ngf=8, num_blocks=2).eval()
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    assert not unexpected and missing and all(k.endswith("modulation.weight") for k in missing)
    norms = [m for m in new.modules() if isinstance(m, CenterConditionalNorm)]
    assert len(norms) == 1 + 2 + 2 * 2 + 2  # every norm layer of the generator
    for m in norms:
        scale, shift = m.modulation.weight[: m.channels], m.modulation.weight[m.channels :]
        assert (scale - 1).abs().max() < 0.15 and shift.abs().max() < 0.15  # drawn near identity
        with torch.no_grad():
            m.modulation.weight[: m.channels] = 1.0
            m.modulation.weight[m.channels :] = 0.0
    x = old.condition(torch.randint(0, 4, (3, 1, 32, 32)), torch.tensor([0, 1, 2]))
    with torch.no_grad():
        torch.testing.assert_close(new(x), old(x), rtol=1e-5, atol=1e-5)


def test_the_released_weights_are_cin_and_input_conditioning_keeps_the_earlier_parameter_names():
    """models/model.pt (0.3.0) is a ``cin`` generator; ``conditioning="input"`` keeps the parameter names of the
    earlier releases (0.2.x weights and hand-offs), so those still load: checked here on a randomly initialised
    ``input`` generator of the 0.2.x demo architecture, not on the old file."""
    state = torch.load(REPO / "models" / "model.pt", map_location="cpu", weights_only=True)
    TDGANGenerator(2, num_classes=4, max_centers=8, ngf=32, num_blocks=6).load_state_dict(state)  # strict
    with pytest.raises(RuntimeError, match="modulation"):
        TDGANGenerator(2, num_classes=4, max_centers=8, ngf=32, num_blocks=6, conditioning="input").load_state_dict(
            state
        )

    earlier = TDGANGenerator(2, num_classes=4, max_centers=8, ngf=32, num_blocks=6, conditioning="input").state_dict()
    assert not any("modulation" in name for name in earlier)
    recorded = {"spatial_dims": 2, "num_classes": 4, "max_centers": 8, "out_channels": 1, "ngf": 32, "num_blocks": 6}
    recorded["num_downsampling"] = 2  # the settings of a hand-off written before ``conditioning`` existed
    legacy = TDGANGenerator(**with_legacy_defaults(recorded))
    legacy.load_state_dict(earlier)
    assert legacy.settings == {**recorded, "conditioning": "input"}
    with pytest.raises(RuntimeError, match="modulation"):
        TDGANGenerator(**recorded).load_state_dict(earlier)  # cin, the default, has parameters they lack
    assert with_legacy_defaults(TDGANGenerator(2, 4, 8).settings)["conditioning"] == "cin"  # a recorded value wins


def test_spade_keeps_the_class_of_a_one_class_map_where_cin_keeps_only_the_center():
    torch.manual_seed(0)
    images = {}
    for mode in ("cin", "spade"):
        gen = TDGANGenerator(2, num_classes=4, max_centers=2, ngf=8, num_blocks=1, conditioning=mode).double().eval()
        x = gen.condition(torch.tensor([0, 2]).view(2, 1, 1, 1).expand(2, 1, 32, 32), torch.tensor([1, 1]))
        with torch.no_grad():
            images[mode] = gen(x.double())
    assert (images["cin"][0] - images["cin"][1]).abs().max() < 1e-9  # background-only == csf-only under cin
    assert (images["spade"][0] - images["spade"][1]).abs().mean() > 0.05


@pytest.mark.parametrize("conditioning", CONDITIONING_MODES)
@pytest.mark.parametrize("spatial_dims, size", [(2, (32, 32)), (3, (8, 8, 8))])
def test_generator_scripts_to_torchscript_with_the_eager_output(
    spatial_dims: int, size: tuple[int, ...], conditioning: str
):
    gen = TDGANGenerator(spatial_dims, num_classes=3, max_centers=2, ngf=4, num_blocks=1, conditioning=conditioning)
    scripted = torch.jit.script(gen.eval())
    x = gen.condition(torch.randint(0, 3, (2, 1, *size)), torch.tensor([0, 1]))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), gen(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("conditioning", [None, "spade"])
def test_after_visiting_two_centers_a_one_class_map_still_gets_a_different_image_per_center(
    demo_root: Path, tmp_path: Path, conditioning: str | None
):
    """center_a (T1-like) then center_b (T2-like, reminding on), 80 steps each: the generator has learnt the two
    looks on real label maps, and a one-class map gets two different images from the two codes, in float64 as in
    float32. Measured at these settings: mean |difference| 0.11 (cin) and 0.18-0.32 (spade); the input-only
    generator gives 1e-6 in float64 and float32 rounding noise (float32 vs float64: 1.0)."""
    override = {"epochs_constant": 10, "epochs_decay": 10, "augment": False}  # the networks' conditioning alone
    if conditioning is not None:
        override["network_def#conditioning"] = conditioning
    run_visit([demo_root / "center_a"], tmp_path / "a", **override)
    run_visit([demo_root / "center_b"], tmp_path / "b", tmp_path / "a" / "handoff.pt", **override)
    handoff = load_handoff(tmp_path / "b" / "handoff.pt")
    gen = TDGANGenerator(**handoff.network)
    gen.load_state_dict(handoff.generator)
    gen.eval()
    codes = {e["name"]: e["code"] for e in handoff.registry}
    two = torch.tensor([codes["center_a"], codes["center_b"]])

    csf = int(next(k for k, v in CLASS_NAMES.items() if v == "csf"))  # dark in T1, bright in T2
    maps = torch.cat(list(handoff.label_bank.values())).long()
    with torch.no_grad():
        as_a = gen(gen.condition(maps, two[:1].expand(len(maps))))
        as_b = gen(gen.condition(maps, two[1:].expand(len(maps))))
    assert as_b[maps == csf].mean() - as_a[maps == csf].mean() > 0.05  # it learnt both looks (measured 0.09-0.2)

    for k in range(len(CLASS_NAMES)):
        x = gen.condition(torch.full((2, 1, 32, 32), k), two)
        with torch.no_grad():
            single = gen(x).double()
            double = gen.double()(x.double())
            gen.float()
        assert (single - double).abs().max() < 1e-2, f"class {k}: the image is rounding noise"
        assert (double[0] - double[1]).abs().mean() > 0.02, f"class {k}: both centers give the same image"


def test_each_temporary_discriminator_sees_label_and_image_and_returns_patch_logits():
    disc = TemporaryDiscriminators(count=2, spatial_dims=2, num_classes=4, image_channels=1, ndf=8)
    assert len(disc) == 2 and disc[0] is not disc[1]
    label = torch.randint(0, 4, (2, 1, 64, 64))
    logits = disc.logits(1, one_hot_labels(label, 4), torch.zeros(2, 1, 64, 64))
    assert logits.shape == (2, 1, 6, 6)  # 70x70 PatchGAN patches on a 64x64 input
    with pytest.raises(ValueError, match="at least one"):
        TemporaryDiscriminators(count=0, spatial_dims=2, num_classes=4)


@pytest.mark.parametrize("d_layers, field", [(3, 70), (2, 34)])
def test_train_config_d_layers_sets_the_patch_size_of_the_temporary_discriminators(d_layers: int, field: int):
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"d_layers": d_layers, "ndf": 8})
    parser["discriminators_def"]["count"] = 1
    disc = parser.get_parsed_content("discriminators_def")
    rf, jump = 1, 1
    for conv in (m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)):
        rf, jump = rf + (conv.kernel_size[0] - 1) * jump, jump * conv.stride[0]
    assert rf == field  # receptive field of one output logit, from the kernels and strides
