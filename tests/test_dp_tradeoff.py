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
"""The DP trade-off command end to end at a tiny size: one epsilon x one size x both DP modes x public pretraining
off/on (and the runs without DP) through the evaluation protocol, one curve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY

pytest.importorskip("opacus", reason="the optional DP extra (requirements-dp.txt) is not installed")
from scripts.handoff import load_handoff  # noqa: E402
from tools.dp_tradeoff import check_variants, main, method_configs, settings_for  # noqa: E402

SETTINGS = ["no_dp", "no_dp_pre", "dp_eps10_both", "dp_eps10_both_pre", "dp_eps10_disc", "dp_eps10_disc_pre"]


def test_the_tradeoff_command_runs_the_grid_through_the_protocol_and_draws_one_curve(tmp_path: Path):
    out = tmp_path / "tradeoff"
    tiny = {
        # the demo config with tiny demo centers (2 centers of 32x32; --pairs sets their training slices) and tiny
        # networks
        "demo_data": {"num_centers": 2, "num_train": 4, "num_test": 2, "size": 32, "seed": 0, "anatomy": "procedural"},
        "visit_overrides": {"bundle_root": str(REPO), **TINY},
        "segmentation_overrides": {"iterations": 2, "batch_size": 4, "val_fraction": 0},
        "real_baselines": ["real_all"],
        "device": "cpu",
    }
    argv = ["--output_dir", str(out), "--epsilons", "10", "--pairs", "8", "--modes", "both", "discriminator"]
    argv += ["--pretraining", "off", "on", "--seeds", "0", "--public_pairs", "8", "--no_training_maps"]
    main(argv + ["--set", *(f"{k}={json.dumps(v)}" for k, v in tiny.items())])

    curve = json.loads((out / "curve.json").read_text())
    assert curve["grid"]["pairs_per_center"] == [8] and curve["grid"]["modes"] == ["both", "discriminator"]
    points = {p["method"]: p for p in curve["points"]}
    assert list(points) == SETTINGS
    for p in points.values():
        assert p["pairs_per_center"] == 8 and p["seeds"] == [0]
        assert -1 <= p["final_test_ssim"]["mean"] <= 1 and p["dice"] is not None and p["relative_dice"] is not None
        if p["mode"] is None:
            assert p["epsilon"] is None and p["target_epsilon"] is None
        else:
            assert 0.95 * 10 <= p["epsilon"] <= 10  # each private center spends its target, the public one nothing
    # the same epsilon with one mechanism instead of two: sqrt(2) less noise per update
    both, disc = points["dp_eps10_both"]["noise_multiplier"], points["dp_eps10_disc"]["noise_multiplier"]
    assert both == pytest.approx(disc * math.sqrt(2))
    assert (out / "curve.png").stat().st_size > 0 and "dp_eps10_disc_pre" in (out / "curve.md").read_text()

    rows = json.loads((out / "n8" / "report" / "tradeoff.json").read_text())
    assert list(rows) == SETTINGS
    assert rows["dp_eps10_both_pre"]["epsilon"]["public_mni152"] is None  # the public visit: no DP, no epsilon
    assert rows["dp_eps10_both_pre"]["epsilon"]["center_a"] == rows["dp_eps10_both"]["epsilon"]["center_a"]
    report = json.loads((out / "n8" / "report" / "report.json").read_text())
    assert report["privacy"]["dp_eps10_disc_pre"]["public_mni152"]["public"] is True
    assert report["budget"]["methods"]["dp_eps10_disc_pre"]["public_generator_updates"] == 8  # 2 epochs of 8 / 2
    assert "public data, no DP" in (out / "n8" / "report" / "report.md").read_text()

    # one public visit per seed, shared by every pretrained setting, which starts its centers' visits from it
    public = out / "public_pretraining" / "seed0" / "handoff.pt"
    for name in SETTINGS:
        sequence = json.loads((out / "n8" / "seed0" / name / "sequence.json").read_text())
        assert sequence.get("pretrained_from") == (str(public) if name.endswith("_pre") else None)
        visits = load_handoff(sequence["final_handoff"]).visits
        assert [v["centers"] for v in visits] == [["public_mni152"]] * name.endswith("_pre") + [
            ["center_a"],
            ["center_b"],
        ]
        assert [v["reminding_source"] for v in visits][-2:] == ["local", "local"]
        assert all((v["dp"] or {}).get("mode") == points[name]["mode"] for v in visits[-2:])


def test_the_settings_need_public_maps_for_the_discriminator_mode():
    with pytest.raises(ValueError, match="discriminator with public label maps"):
        settings_for([10.0], modes=["discriminator"])
    names = list(settings_for([30.0, 3.0], modes=["both"], pretraining=[False]))
    assert names == ["no_dp", "dp_eps30_both", "dp_eps3_both"]


def test_a_variant_repeats_each_dp_setting_with_its_knobs_at_the_same_epsilon(tmp_path: Path):
    variants = {"clip0.1": {"dp#max_grad_norm": 0.1}, "b16-lr": {"batch_size": 16, "lr": 0.001}}
    settings = settings_for([10.0], modes=["both"], pretraining=[True], variants=variants)
    assert list(settings) == ["no_dp_pre", "dp_eps10_both_pre", "dp_eps10_both_pre_clip0.1", "dp_eps10_both_pre_b16-lr"]
    base, clip, batch = (settings[k] for k in list(settings)[1:])
    assert base["dp"]["max_grad_norm"] == 1.0 and clip["dp"] == {**base["dp"], "max_grad_norm": 0.1}
    assert batch["dp"] == base["dp"] and batch["visit"] == {"batch_size": 16, "lr": 0.001} and not clip["visit"]
    assert all(s["target_epsilon"] == 10.0 for s in (base, clip, batch)) and "batch_size 16" in batch["label"]
    methods = method_configs(settings, tmp_path / "settings", pretrained=tmp_path / "public")
    assert methods["dp_eps10_both_pre_b16-lr"]["visit_overrides"] == {"batch_size": 16, "lr": 0.001}
    assert "visit_overrides" not in methods["dp_eps10_both_pre_clip0.1"]  # its knob is in the dp section of its file
    written = json.loads(Path(methods["dp_eps10_both_pre_clip0.1"]["configs"][0]).read_text())
    assert written["visit_overrides#dp"]["max_grad_norm"] == 0.1


@pytest.mark.parametrize(
    "variants, message",
    [
        ({"a/b": {"lr": 0.1}}, "use letters, digits"),
        ({"eps": {"dp#target_epsilon": 100}}, "not one of"),
        ({"mode": {"dp#mode": "discriminator"}}, "not one of"),
        ({"seed": {"seed": 3}}, "not one of"),
        ({"b": {"batch_size": 2.5}}, "batch_size 2.5 is not an allowed value"),
        ({"lr": {"lr": -1}}, "lr -1 is not an allowed value"),
        ({"acc": {"dp#accountant": "gdp"}}, "not an allowed value"),
        ({"empty": {}}, "non-empty object"),
    ],
)
def test_a_variant_may_change_only_the_knobs_at_fixed_epsilon(variants: dict, message: str):
    with pytest.raises(ValueError, match=message):
        check_variants(variants)


def _point(pairs: int, method: str, mode: str | None, eps: float | None, ssim: float) -> dict:
    value = {"mean": ssim, "low": None, "high": None}
    return {
        "pairs_per_center": pairs,
        "method": method,
        "label": method,
        "mode": mode,
        "pretrained": True,
        "target_epsilon": eps,
        "variant": None,
        "epsilon": eps,
        "final_test_ssim": value,
        "dice": value,
        "relative_dice": value,
        "dice_class": "lesion",
    }


def test_curves_made_by_separate_runs_are_drawn_as_one_figure(tmp_path: Path, capsys):
    for pairs in (48, 160):
        points = [_point(pairs, "no_dp_pre", None, None, 0.7)]
        points += [_point(pairs, f"dp_eps{e}_both_pre", "both", float(e), 0.1 * i) for i, e in enumerate((3, 10))]
        (tmp_path / f"n{pairs}.json").write_text(json.dumps({"points": points}))
    curves = [str(tmp_path / "n48.json"), str(tmp_path / "n160.json")]
    main(["--curves", *curves, "--figure", str(tmp_path / "curve.png")])
    out = capsys.readouterr().out
    assert "| 48 | dp_eps3_both_pre |" in out and "| 160 | dp_eps10_both_pre |" in out
    assert (tmp_path / "curve.png").stat().st_size > 0
    with pytest.raises(SystemExit) as e:
        main(["--curves", *curves])
    assert e.value.code == 2 and "--figure" in capsys.readouterr().err


def test_the_knob_file_of_the_docs_is_read_as_variants_and_passes_their_allow_list():
    from tools.dp_tradeoff import _json_or_file

    variants = check_variants(_json_or_file(str(REPO / "tools" / "trials" / "dp_knobs.json")))
    assert {"clip0.1", "lr1e-3", "ep11", "b16"} <= set(variants)
    assert _json_or_file('{"b4": {"batch_size": 4}}') == {"b4": {"batch_size": 4}}
