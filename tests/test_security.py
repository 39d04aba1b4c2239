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
"""Attacks and faults at every boundary: job overrides, names and paths, the hand-off contract, signatures, full
disks, constant images and file permissions, each tried as the issue's probe against the real code."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import META, REPO, TINY, visit_workflow
from monai.bundle import ConfigParser, ConfigWorkflow

from scripts.data.centers import DATASET_SETTINGS, center_datalist, center_name, read_center_order
from scripts.data.checks import InputError, center_problems, handoff_problems
from scripts.evaluation.synthesis import GeneratorSource, load_generator, network_setting, synthesis_datalist
from scripts.files import DiskFullError, PathError, check_center_name, check_inside
from scripts.fl.message import META_KEY, handoff_to_message, message_to_handoff
from scripts.fl.overrides import JOB_SETTINGS, SITE_KEYS, OverrideError, job_overrides
from scripts.handoff import (
    KEY_ENV,
    NETWORK_CHOICES,
    NETWORK_SETTINGS,
    HandoffError,
    handoff_signature,
    load_handoff,
    payload_digest,
    save_handoff,
)
from scripts.networks import TDGANGenerator
from scripts.visit import CenterVisit

HOSTILE = {"train#inferer#_target_": "os.system", "train#inferer#command": "touch /tmp/tdgan_pwned"}
"""The issue's probe: a component smuggled in through a ``#`` key, with the command as its sibling key."""


def _messages(err: BaseException | None) -> str:
    """All messages along an exception's cause chain (the bundle's config parser wraps the original error)."""
    chain = []
    while err is not None:
        chain.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(chain)


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its sha256."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _rewrite(src: Path, dst: Path, mutate: Callable[[dict], Any], key: bytes | None = None) -> Path:
    """``src`` with its payload changed by ``mutate`` and a freshly computed sha256 (signed with ``key`` if given): what
    an attacker without the federation key can make."""
    raw = torch.load(src, weights_only=True)
    mutate(raw["payload"])
    raw["sha256"] = payload_digest(raw["payload"])
    raw.pop("hmac", None)
    if key is not None:
        raw["hmac"] = handoff_signature(raw["sha256"], key)
    torch.save(raw, dst)
    return dst


def _key_file(folder: Path, name: str, mode: int = 0o600, size: int = 32) -> Path:
    path = folder / name
    path.write_text(os.urandom(size).hex()[:size] + "\n")
    os.chmod(path, mode)
    return path


# --- 1. what a federated job may choose ----------------------------------------------------------------------------


DATASET_DEFAULTS = {"num_classes": 4, "image_channels": 1}
"""train.json's fallbacks where no center's dataset.json declares the setting."""


@pytest.mark.parametrize("value", [0, -5, 10**9, "5", 2.5, True, None, [5], {"_target_": "os.system"}])
def test_a_display_interval_outside_its_range_or_kind_is_refused(value):
    with pytest.raises(OverrideError, match="tensorboard_sample_interval"):
        job_overrides({"tensorboard_sample_interval": value})


def test_the_job_allow_list_holds_only_plain_settings_of_train_json_with_their_defaults_accepted():
    train = json.loads((REPO / "configs" / "train.json").read_text())
    for key, setting in JOB_SETTINGS.items():
        assert "#" not in key and key not in SITE_KEYS, key
        assert key in train, f"{key} is not a top-level setting of configs/train.json"
        default = train[key]
        if key in DATASET_SETTINGS:  # read from the site's own dataset.json; a job's value must agree with it
            mapped = ", @label_mapping" if key == "num_classes" else ""  # the site's label values -> classes
            assert default == (
                f"$scripts.data.centers.dataset_setting(@center_dirs, '{key}', {DATASET_DEFAULTS[key]}{mapped})"
            )
            default = DATASET_DEFAULTS[key]
        assert not (isinstance(default, str) and default[:1] in "$@%"), f"{key}'s default is an expression"
        if setting.kind == "object":  # keyword settings of one bundle function: plain values, no component
            assert "_target_" not in json.dumps(default), f"{key}'s default is a component"
        else:
            assert not isinstance(default, dict), f"{key} is a component or a section"
        assert setting.accepts(default), f"{key}: train.json's default {default!r} is not {setting.expected()}"
    assert (
        "device" not in JOB_SETTINGS and "perceptual_network" not in JOB_SETTINGS and "check_data" not in JOB_SETTINGS
    )


@pytest.mark.parametrize(
    "overrides, key",
    [
        (HOSTILE, "train#inferer#_target_"),
        ({"network_def": {"_target_": "os.system"}}, "network_def"),
        ({"ngf": "$__import__('os').system('id')"}, "ngf"),
        ({"perceptual_network": "@network"}, "perceptual_network"),
        ({"center_dirs": ["/other/hospital"]}, "center_dirs"),
        ({"device": "cuda:7"}, "device"),
        ({"lr": -0.1}, "lr"),
        ({"lr": 0}, "lr"),
        ({"epochs_constant": 1.5}, "epochs_constant"),
        ({"amp": "false"}, "amp"),
        ({"amp": 1}, "amp"),
        ({"batch_size": True}, "batch_size"),
        ({"reminding_source": "bank; rm -rf /"}, "reminding_source"),
        ({"spatial_size": [32, "32"]}, "spatial_size"),
        ({"spatial_size": [32, 32, 32, 32]}, "spatial_size"),
        ('{"lr": NaN}', "NaN"),
        ("[1, 2]", "JSON object"),
        ({"l1_class_weights": {"3": 0}}, "l1_class_weights"),
        ({"l1_class_weights": {"3": 5000}}, "l1_class_weights"),
        ({"l1_class_weights": {"3": True}}, "l1_class_weights"),
        ({"l1_class_weights": {"lesion": 10}}, "l1_class_weights"),
        ({"l1_class_weights": {"-1": 10}}, "l1_class_weights"),
        ({"l1_class_weights": {"256": 10}}, "l1_class_weights"),
        ({"l1_class_weights": {" 3": 10}}, "l1_class_weights"),
        ({"l1_class_weights": {"3": {"_target_": "os.system"}}}, "l1_class_weights"),
        ({"l1_class_weights": {}}, "l1_class_weights"),
        ({"l1_class_weights": [1, 1, 1, 10]}, "l1_class_weights"),
        ({"l1_class_weights": "$__import__('os')"}, "l1_class_weights"),
    ],
)
def test_a_job_setting_outside_the_allow_list_or_its_range_is_refused_in_one_line(overrides: Any, key: str):
    with pytest.raises(OverrideError) as info:
        job_overrides(overrides if isinstance(overrides, str) else json.dumps(overrides))
    message = str(info.value)
    assert "\n" not in message and key in message


def test_plain_settings_in_range_pass_and_are_normalised():
    got = job_overrides('{"ngf":8,"spatial_size":[32,32],"lr":1,"amp_dtype":null,"reminding_source":"local"}')
    assert got == {"ngf": 8, "spatial_size": [32, 32], "lr": 1.0, "amp_dtype": None, "reminding_source": "local"}
    assert isinstance(got["lr"], float)
    assert job_overrides('{"l1_class_weights":{"3":10,"007":2.5}}') == {"l1_class_weights": {"3": 10.0, "7": 2.5}}
    assert job_overrides('{"l1_class_weights":null}') == {"l1_class_weights": None}


def test_the_site_refuses_a_hostile_job_before_nvflare_or_any_config_starts(
    demo_root: Path, monkeypatch: pytest.MonkeyPatch
):
    from scripts.fl import client

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the site started NVFlare with a hostile job")

    monkeypatch.setattr(client.flare, "init", never)
    monkeypatch.setattr(client, "run_visit", never)
    argv = ["--overrides", json.dumps(HOSTILE, separators=(",", ":"))]
    with pytest.raises(OverrideError, match="job override 'train#inferer#_target_': not a setting a job may choose"):
        client.main(argv)
    for folder in (["--center_dir", str(demo_root / "center_b")], ["--work_dir", "/tmp/elsewhere"], ["--center"]):
        with pytest.raises(OverrideError, match="job arguments refused .* a job may pass only --overrides") as info:
            client.main([*folder, "--overrides", "{}"])
        assert "\n" not in str(info.value)


def test_the_server_refuses_to_build_a_job_with_a_setting_it_may_not_send(tmp_path: Path):
    from scripts.fl.job import tdgan_job

    with pytest.raises(OverrideError, match="train#inferer#_target_"):
        tdgan_job(["center_a", "center_b"], tmp_path, HOSTILE)
    assert not tmp_path.joinpath("handoffs").exists()


# --- 2. names and paths --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["center_a", "A", "9.b-c_d", "x" * 64])
def test_valid_center_names_pass(name: str):
    assert check_center_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../x", "../../../tmp/x", "a/b", "/abs", "a\\b", "a+b", ".hidden", "-a", "a b", "é", "x" * 65],
)
def test_a_center_name_that_is_not_one_plain_file_name_is_refused(name: str):
    with pytest.raises(PathError, match="is not allowed"):
        check_center_name(name)


def test_centers_json_naming_a_path_is_refused(demo_root: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    (root / "centers.json").write_text(json.dumps({"order": ["center_a", "../outside"]}))
    with pytest.raises(InputError) as info:
        read_center_order(root)
    assert f"{root / 'centers.json'}: center name '../outside' is not allowed" in str(info.value)


def test_a_visit_at_a_center_folder_with_an_invalid_name_stops_before_writing(demo_root: Path, tmp_path: Path):
    center = tmp_path / "center+a"
    shutil.copytree(demo_root / "center_a", center)
    with pytest.raises(PathError):
        center_name(center)
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        visit_workflow([center], out).run()
    assert f"center folder {center}: center name 'center+a' is not allowed" in _messages(info.value)
    assert not out.exists()


def _point_outside(center: Path, other: Path, how: str) -> str:
    """Make the first training entry of ``center`` name ``other``'s first image; returns the path as listed."""
    meta = json.loads((center / "dataset.json").read_text())
    theirs = other / json.loads((other / "dataset.json").read_text())["training"][0]["image"]
    if how == "absolute":
        listed = str(theirs)
    elif how == "dotdot":
        listed = os.path.relpath(theirs, center)
    else:  # a link inside the center's own folder that leads out of it
        (center / "imagesTr" / "link.nii.gz").symlink_to(theirs)
        listed = "imagesTr/link.nii.gz"
    meta["training"][0]["image"] = listed
    (center / "dataset.json").write_text(json.dumps(meta))
    return os.path.normpath(os.path.join(center, listed))


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_a_dataset_entry_outside_its_center_folder_is_refused_everywhere_it_is_read(
    demo_root: Path, tmp_path: Path, how: str
):
    center, other = tmp_path / "center_a", tmp_path / "center_b"
    shutil.copytree(demo_root / "center_a", center)
    shutil.copytree(demo_root / "center_b", other)
    listed = _point_outside(center, other, how)
    lines = [ln for ln in center_problems(center, 2, 1, 4) if "outside the center folder" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"{listed}: listed in {center / 'dataset.json'}")
    with pytest.raises(InputError, match="outside the center folder"):
        center_datalist(center, 0)  # training, evaluation
    source = GeneratorSource(TDGANGenerator(2, 4, 8, ngf=4, num_blocks=0), {"center_a": 0}, {"center_a": 1}, "test")
    with pytest.raises(InputError, match="outside the center folder"):
        synthesis_datalist(source, [center], 2, [32, 32])  # synthesis
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        visit_workflow([center], out).run()
    assert "outside the center folder" in _messages(info.value) and not out.exists()


def test_a_writer_path_that_a_name_leads_out_of_its_folder_is_refused(tmp_path: Path):
    folder = tmp_path / "out" / "handoffs"
    assert check_inside(folder / "visit01_center_a.pt", folder, "hand-off") == folder / "visit01_center_a.pt"
    with pytest.raises(PathError, match="outside"):
        check_inside(folder / "visit01_../../../escaped.pt", folder, "hand-off")


def _relay(out: Path, order: list[str], sent: dict | None):
    """The real server-side relay of the job, after it sent ``sent`` (a hand-off message, or None: the opening)."""
    from nvflare.apis.fl_context import FLContext
    from nvflare.app_common.abstract.model import make_model_learnable

    from scripts.fl.relay import HandoffRelay

    relay = HandoffRelay(str(out), order)
    params, meta = sent or ({}, {})
    relay.learnable_to_shareable(make_model_learnable(params, meta), FLContext())
    return relay


def _result(params: dict, meta: dict, site: str):
    from nvflare.apis.dxo import DXO, DataKind
    from nvflare.apis.fl_constant import ReservedKey

    shareable = DXO(data_kind=DataKind.WEIGHTS, data=params, meta=meta).to_shareable()
    shareable.set_peer_props({ReservedKey.IDENTITY_NAME: site})
    return shareable


def test_the_relay_refuses_a_result_whose_center_name_would_choose_where_the_server_writes(
    handoffs: dict[str, Path], tmp_path: Path
):
    from nvflare.apis.fl_context import FLContext

    out = tmp_path / "server" / "out"
    params, meta = handoff_to_message(load_handoff(handoffs["a"]))
    body = meta[META_KEY]
    body["visits"][-1]["centers"] = ["../../../../escaped"]  # the issue's probe: would write tmp_path/escaped.pt
    body["sha256"] = payload_digest({**{k: v for k, v in body.items() if k != "sha256"}, "generator": params})
    relay = _relay(out, ["center_a", "center_b"], None)
    with pytest.raises(HandoffError) as info:
        relay.shareable_to_learnable(_result(params, meta, "center_a"), FLContext())
    assert "\n" not in str(info.value) and "center name '../../../../escaped' is not allowed" in str(info.value)
    assert not list(tmp_path.rglob("*.pt"))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "server/out/fl_messages.jsonl"
    ]
    # the same relay writes a genuine result where it belongs
    genuine = _relay(out, ["center_a", "center_b"], None)
    genuine.shareable_to_learnable(_result(*handoff_to_message(load_handoff(handoffs["a"])), "center_a"), FLContext())
    assert [p.name for p in (out / "handoffs").iterdir()] == ["visit01_center_a.pt"]


def test_the_relay_refuses_a_result_that_rewrites_the_history_it_was_sent(handoffs: dict[str, Path], tmp_path: Path):
    from nvflare.apis.fl_context import FLContext

    relay = _relay(tmp_path / "out", ["center_b", "center_c"], handoff_to_message(load_handoff(handoffs["a"])))
    forged = _rewrite(handoffs["b"], tmp_path / "b.pt", lambda p: p["visits"][0].update(epochs=99))
    with pytest.raises(HandoffError, match="differs from the one sent"):
        relay.shareable_to_learnable(_result(*handoff_to_message(load_handoff(forged)), "center_b"), FLContext())
    assert not (tmp_path / "out" / "handoffs").exists()


# --- 6. the hand-off contract --------------------------------------------------------------------------------------


def _bank(p: dict) -> dict:
    return p["label_bank"]


def _rename_everywhere(p: dict, old: str, new: str) -> None:
    for e in p["registry"]:
        e["name"] = new if e["name"] == old else e["name"]
    for v in p["visits"]:
        v["centers"] = [new if c == old else c for c in v["centers"]]
    p["label_bank"] = {(new if k == old else k): v for k, v in p["label_bank"].items()}


def _first_weight(p: dict) -> str:
    return next(iter(p["generator"]))


PROBES: dict[str, tuple[Callable[[dict], Any], str]] = {
    "registry_renames_a_center": (lambda p: p["registry"][1].update(name="center_z"), "not in the registry"),
    "registry_drops_a_center": (lambda p: p.update(registry=p["registry"][:1]), "not in the registry"),
    "registry_reorders": (
        lambda p: p.update(registry=[{"name": "center_b", "code": 0}, {"name": "center_a", "code": 1}]),
        "registry says",
    ),
    "duplicate_code": (lambda p: p["registry"][1].update(code=0), "expected codes 0..n-1"),
    "code_out_of_range": (lambda p: p["registry"][1].update(code=8), "expected codes 0..n-1"),
    "more_centers_than_max_centers": (
        lambda p: p["network"].update(max_centers=1),
        "registry holds 2 centers but the generator has max_centers=1",
    ),
    "registry_name_is_a_path": (lambda p: _rename_everywhere(p, "center_a", "../../x"), "is not allowed"),
    "float_label_bank": (lambda p: _bank(p).update(center_a=_bank(p)["center_a"].float()), "expected uint8"),
    "bank_of_an_unregistered_center": (
        lambda p: _bank(p).update(center_x=_bank(p)["center_a"]),
        "label bank holds maps of 'center_x', which is not in the registry",
    ),
    "image_in_the_bank": (
        lambda p: _bank(p).update(center_a=torch.full_like(_bank(p)["center_a"], 200)),
        "holds values up to 200",
    ),
    "bank_of_another_size": (
        lambda p: _bank(p).update(center_a=torch.zeros((4, 1, 16, 16), dtype=torch.uint8)),
        "expected (N, 1, 32, 32)",
    ),
    "tensor_inside_visits": (lambda p: p["visits"][0].update(loss=torch.zeros(3)), "not a JSON value"),
    "extra_image_tensor": (lambda p: p.update(image=torch.rand(1, 32, 32)), "extra ['image']"),
    "extra_generator_tensor": (lambda p: p["generator"].update(extra=torch.zeros(3)), "unexpected ['extra']"),
    "generator_of_another_dtype": (
        lambda p: p["generator"].update({_first_weight(p): p["generator"][_first_weight(p)].double()}),
        "wrong dtype or shape",
    ),
    "non_finite_weights": (
        lambda p: p["generator"][_first_weight(p)].view(-1).__setitem__(0, float("nan")),
        "hold NaN or Inf",
    ),
    "extra_network_setting": (lambda p: p["network"].update(activation="os.system"), "extra ['activation']"),
    "string_network_setting": (lambda p: p["network"].update(ngf="8"), "network setting ngf='8'"),
    "versions_not_strings": (lambda p: p["versions"].update(torch=torch.zeros(1)), "'versions' must map strings"),
    "spatial_size_missing": (lambda p: p["preprocessing"].pop("spatial_size"), "missing ['spatial_size']"),
}


@pytest.mark.parametrize("probe", list(PROBES))
def test_a_malformed_handoff_with_a_recomputed_checksum_is_refused_in_one_line(
    handoffs: dict[str, Path], tmp_path: Path, probe: str
):
    mutate, expected = PROBES[probe]
    path = _rewrite(handoffs["b"], tmp_path / "bad.pt", mutate)
    with pytest.raises(HandoffError) as info:
        load_handoff(path)
    message = str(info.value)
    assert message.startswith(f"hand-off {path}: ") and "\n" not in message
    assert expected in message, message


def test_every_consumer_of_a_handoff_goes_through_the_contract(
    demo_root: Path, handoffs: dict[str, Path], tmp_path: Path
):
    """The issue's late failure: a tensor inside ``visits`` used to train a whole visit and fail at the write."""
    path = _rewrite(handoffs["b"], tmp_path / "bad.pt", PROBES["tensor_inside_visits"][0])
    network = load_handoff(handoffs["b"]).network
    expected = "not a JSON value"
    for consumer in (
        lambda: load_handoff(path),
        lambda: CenterVisit(TDGANGenerator(**network), ["center_c"], path, spatial_size=[32, 32]),
        lambda: load_generator(TDGANGenerator(**network), path),
        lambda: network_setting(path, "ngf", 32),
    ):
        with pytest.raises(HandoffError, match=expected):
            consumer()
    (line,) = handoff_problems(path, network, [32, 32])
    assert expected in line
    raw = torch.load(path, weights_only=True)
    params = raw["payload"].pop("generator")
    with pytest.raises(HandoffError, match=expected):
        message_to_handoff(params, {META_KEY: {**raw["payload"], "sha256": raw["sha256"]}}, "result of site x")
    out = tmp_path / "visit"
    with pytest.raises(Exception) as info:
        visit_workflow([demo_root / "center_c"], out, handoff_in=path).run()
    assert expected in _messages(info.value) and not out.exists()  # refused before training, not at the write


def test_a_handoff_of_the_previous_format_is_refused_with_a_line_saying_to_remake_it(
    handoffs: dict[str, Path], tmp_path: Path
):
    def v1(p: dict) -> None:
        p["format_version"] = 1
        del p["preprocessing"]

    path = _rewrite(handoffs["a"], tmp_path / "v1.pt", v1)
    with pytest.raises(HandoffError, match="format v1, this bundle reads v2 only.*re-make it by rerunning the visit"):
        load_handoff(path)


def test_the_network_allow_list_is_the_generators_settings():
    assert {*NETWORK_SETTINGS, *NETWORK_CHOICES} == set(TDGANGenerator(2, 4, 8).settings)


def test_synthesis_uses_the_recorded_spatial_size_refuses_another_and_writes_owner_only(
    demo_root: Path, handoffs: dict[str, Path], tmp_path: Path
):
    def synthesis(**override: Any) -> ConfigWorkflow:
        workflow = ConfigWorkflow(
            config_file=str(REPO / "configs" / "inference.json"),
            meta_file=META,
            logging_file=False,
            workflow_type="infer",
            bundle_root=str(REPO),
            handoff=str(handoffs["b"]),
            dataset_dir=str(demo_root / "center_a"),
            device="cpu",
            **override,
        )
        workflow.initialize()
        return workflow

    old = os.umask(0)  # the most permissive umask: permissions must not depend on it
    try:
        out = tmp_path / "new" / "synthetic"
        workflow = synthesis(output_dir=str(out))
        assert workflow.parser.get_parsed_content("spatial_size") == [32, 32]  # inference.json's default is 64
        workflow.run()
    finally:
        os.umask(old)
    items = json.loads((out / "dataset.json").read_text())["training"]
    assert nib.load(out / items[0]["image"]).shape[:2] == (32, 32)
    for p in [out, *out.rglob("*")]:
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    with pytest.raises(Exception) as info:
        synthesis(output_dir=str(tmp_path / "other"), spatial_size=[64, 64]).run()
    assert "spatial_size=[32, 32] in the hand-off but [64, 64] in this configuration" in _messages(info.value)
    assert not (tmp_path / "other").exists()


# --- 6. authentication ---------------------------------------------------------------------------------------------


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, Path]:
    return {"ours": _key_file(tmp_path, "ours.key"), "theirs": _key_file(tmp_path, "theirs.key")}


def test_with_a_federation_key_only_handoffs_signed_with_it_load(
    handoffs: dict[str, Path], keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    unsigned = handoffs["b"]
    monkeypatch.setenv(KEY_ENV, str(keys["ours"]))
    signed = tmp_path / "signed.pt"
    save_handoff(_unsigned_load(unsigned), signed)  # written while the key is configured: signed
    assert "hmac" in torch.load(signed, weights_only=True)
    assert load_handoff(signed).registry == [{"name": "center_a", "code": 0}, {"name": "center_b", "code": 1}]

    def negate(p: dict) -> None:
        p["generator"] = {k: -v for k, v in p["generator"].items()}

    negated = _rewrite(signed, tmp_path / "negated.pt", negate)  # sha256 recomputed, hmac dropped
    with pytest.raises(HandoffError, match="unsigned, but a hand-off key is configured"):
        load_handoff(negated)
    kept = tmp_path / "negated_kept_hmac.pt"  # the old signature kept on new weights
    raw = torch.load(negated, weights_only=True)
    raw["hmac"] = torch.load(signed, weights_only=True)["hmac"]
    torch.save(raw, kept)
    with pytest.raises(HandoffError, match="signature does not match the hand-off key"):
        load_handoff(kept)
    with pytest.raises(HandoffError, match="unsigned, but a hand-off key is configured"):
        load_handoff(unsigned)
    theirs = _rewrite(signed, tmp_path / "theirs.pt", lambda p: None, key=keys["theirs"].read_bytes().strip())
    with pytest.raises(HandoffError, match="signature does not match the hand-off key"):
        load_handoff(theirs)
    # a federated message never carries the file key's HMAC: the sites' signature chain authenticates it
    # (scripts.fl.site), so a server needs no key and the key never leaves the site
    params, meta = handoff_to_message(load_handoff(signed))
    assert "hmac" not in meta[META_KEY] and message_to_handoff(params, meta, "task data").registry

    monkeypatch.delenv(KEY_ENV)  # without a key: unsigned hand-offs load (only the checksum and structure hold)
    assert load_handoff(unsigned).registry and load_handoff(negated).registry


def _unsigned_load(path: Path):
    """Load an unsigned hand-off with no key configured (to sign it afterwards), then restore the environment."""
    key = os.environ.pop(KEY_ENV)
    try:
        return load_handoff(path)
    finally:
        os.environ[KEY_ENV] = key


def test_a_visit_refuses_an_unsigned_handoff_when_a_key_is_configured(
    demo_root: Path, handoffs: dict[str, Path], keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(KEY_ENV, str(keys["ours"]))
    out = tmp_path / "visit"
    with pytest.raises(Exception) as info:
        visit_workflow([demo_root / "center_c"], out, handoff_in=handoffs["b"]).run()
    assert "unsigned, but a hand-off key is configured" in _messages(info.value) and not out.exists()


@pytest.mark.parametrize("problem", ["readable_by_others", "too_short", "missing"])
def test_a_federation_key_file_that_is_not_a_private_secret_is_refused(
    handoffs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str
):
    path = {
        "readable_by_others": lambda: _key_file(tmp_path, "k", mode=0o644),
        "too_short": lambda: _key_file(tmp_path, "k", size=8),
        "missing": lambda: tmp_path / "none.key",
    }[problem]()
    monkeypatch.setenv(KEY_ENV, str(path))
    with pytest.raises(HandoffError, match=f"federation key file {path}"):
        load_handoff(handoffs["a"])


# --- 7. full disk, constant images ---------------------------------------------------------------------------------


@pytest.fixture(params=["tmpfs", "enospc"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder on which the next hand-off write runs out of space: a real 1 MiB tmpfs filled up (root only), or, where
    mounting is not allowed, the same error injected at the sync of the write (``OSError(ENOSPC)``)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if request.param == "tmpfs":
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root; the enospc case covers this")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        request.addfinalizer(lambda: subprocess.run(["umount", str(folder)], check=False))
        yield folder, lambda: (folder / "filler").write_bytes(b"\0" * (shutil.disk_usage(folder).free - 16384))
    else:
        real_fsync = os.fsync

        def fill() -> None:
            def no_space(fd: int) -> None:
                real_fsync(fd)
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(os, "fsync", no_space)

        yield folder, fill


def test_a_handoff_write_on_a_full_disk_fails_in_one_line_leaving_no_temporary_and_the_old_handoff_intact(
    handoffs: dict[str, Path], full_disk: tuple[Path, Callable[[], None]]
):
    folder, fill = full_disk
    path = folder / "handoff.pt"
    save_handoff(load_handoff(handoffs["a"]), path)  # the hand-off that existed before
    before = _tree(folder)
    fill()
    before = {**before, **{k: v for k, v in _tree(folder).items() if k.endswith("filler")}}
    with pytest.raises(DiskFullError) as info:
        save_handoff(load_handoff(handoffs["b"]), path)
    assert str(info.value) == f"no space left on device while writing {path}; free space and rerun"
    assert not list(folder.glob(".handoff.pt.*.tmp"))
    assert _tree(folder) == before
    assert load_handoff(path).registry == [{"name": "center_a", "code": 0}]


def _constant(center: Path, index: int) -> None:
    item = json.loads((center / "dataset.json").read_text())["training"][index]
    nib.save(nib.Nifti1Image(np.full((32, 32), 7.0, np.float32), np.eye(4)), str(center / item["image"]))


def test_a_constant_image_is_warned_about_and_a_center_of_constant_images_is_refused(
    demo_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    center = tmp_path / "center_a"
    shutil.copytree(demo_root / "center_a", center)
    _constant(center, 0)
    with caplog.at_level(logging.WARNING, logger="scripts.data.checks"):
        assert center_problems(center, 2, 1, 4) == []
    first = json.loads((center / "dataset.json").read_text())["training"][0]["image"]
    assert [r.message for r in caplog.records if "constant image" in r.message][0].startswith(str(center / first))
    for i in range(8):
        _constant(center, i)
    (line,) = center_problems(center, 2, 1, 4)
    assert line.startswith(f"{center / 'dataset.json'}: every one of the 8 'training' images is constant")
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        visit_workflow([center], out).run()
    assert "images is constant" in _messages(info.value) and not out.exists()


# --- 8. owner-only outputs -----------------------------------------------------------------------------------------


def test_a_handoff_and_the_folders_it_creates_are_owner_only_whatever_the_umask(
    handoffs: dict[str, Path], tmp_path: Path
):
    old = os.umask(0)
    try:
        path = tmp_path / "new" / "deeper" / "handoff.pt"
        save_handoff(load_handoff(handoffs["a"]), path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700


def test_the_visit_records_its_preprocessing_in_the_handoff(handoffs: dict[str, Path]):
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "train.json"))
    intensity = parser.get("train#preprocessing#intensity_range")
    assert load_handoff(handoffs["b"]).preprocessing == {
        "spatial_size": TINY["spatial_size"],
        "intensity_range": intensity,
    }
