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
"""Tests of what a federated site decides: its settings and policy, the sites' signature chain, and the limits."""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import nvflare.client as flare
import pytest
import torch

from scripts.fl import client
from scripts.fl.message import CHAIN_KEY, META_KEY, handoff_to_message
from scripts.fl.overrides import OverrideError
from scripts.fl.site import SiteError, generate_key, load_site_settings, sign_link
from scripts.handoff import HandoffError, Limits, load_handoff, payload_digest, set_limits

SITES = ["center_a", "center_b", "center_c"]
JOB = "job-1"


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three sites with their own Ed25519 keys, the federation file (order a, b, c) and each site's settings."""
    folder = tmp_path_factory.mktemp("federation")
    public = {s: generate_key(folder / s / "signing.key") for s in SITES}
    public_other = generate_key(folder / "outsider.key")
    fed = folder / "federation.json"
    fed.write_text(json.dumps({"federation": "brain_mri", "order": SITES, "sites": public}))
    swapped = folder / "other_federation.json"  # same keys, another federation
    swapped.write_text(json.dumps({"federation": "other_study", "order": SITES, "sites": public}))
    settings = {}
    for s in SITES:
        path = folder / s / "tdgan_site.json"
        path.write_text(
            json.dumps(
                {"signing_key": "signing.key", "federation": "../federation.json", "require_authentication": True}
            )
        )
        settings[s] = path
    return {"folder": folder, "settings": settings, "public_other": public_other, "swapped": swapped}


def _settings(federation: dict[str, Any], site: str):
    return load_site_settings(site, federation["settings"][site])


def _key(federation: dict[str, Any], site: str):
    return _settings(federation, site).signing_key


def _signed_message(handoffs: dict[str, Path], federation: dict[str, Any], upto: str, job: str = JOB) -> flare.FLModel:
    """The message the relay forwards after ``upto`` (``a`` or ``b``): the hand-off and its chain, signed by the
    sites that made each visit."""
    chain, previous = [], None
    for i, name in enumerate(["a", "b"][: ["a", "b"].index(upto) + 1]):
        params, meta = handoff_to_message(load_handoff(handoffs[name]))
        digest = meta[META_KEY]["sha256"]
        chain.append(sign_link(_key(federation, SITES[i]), "brain_mri", job, i, SITES[i], digest, previous))
        previous = digest
    meta[CHAIN_KEY] = chain
    return flare.FLModel(params=params, meta=meta)


def _receive(model: flare.FLModel, federation: dict[str, Any], site: str, done: set[int] | None = None):
    return client._receive(model, _settings(federation, site), site, JOB, set() if done is None else done)


# --- the site's policy ---------------------------------------------------------------------------------------------


def _site_file(tmp_path: Path, settings: dict[str, Any]) -> Path:
    path = tmp_path / "tdgan_site.json"
    path.write_text(json.dumps(settings))
    return path


HOSPITAL_POLICY = {
    "job_settings": {"epochs_constant": {"high": 5}, "label_bank_size": {"high": 64}, "lr": True},
    "fixed": {"reminding_source": "local", "augment": True},
}


@pytest.mark.parametrize(
    "request_, refusal",
    [
        ({"reminding_source": "bank"}, 'this site sets reminding_source to "local" itself'),
        ({"augment": False}, "this site sets augment to true itself"),
        ({"label_bank_size": 100_000}, "'label_bank_size'=100000: this site allows an integer >= 1 and <= 64"),
        ({"epochs_constant": 50}, "this site allows an integer >= 0 and <= 5"),
        ({"ngf": 8}, "'ngf': this site does not let a job choose it"),
        ({"train#inferer#_target_": "os.system"}, "not a setting a job may choose"),
    ],
)
def test_a_site_policy_refuses_what_it_does_not_allow_and_pins_what_leaves_in_one_line(
    tmp_path: Path, request_: dict[str, Any], refusal: str
):
    settings = load_site_settings(None, _site_file(tmp_path, HOSPITAL_POLICY))
    with pytest.raises(OverrideError) as info:
        settings.visit_overrides(json.dumps(request_))
    assert refusal in str(info.value) and "\n" not in str(info.value)


def test_a_site_policy_passes_what_it_allows_and_adds_its_fixed_values(tmp_path: Path):
    settings = load_site_settings(None, _site_file(tmp_path, HOSPITAL_POLICY))
    got = settings.visit_overrides('{"epochs_constant": 2, "lr": 0.001, "reminding_source": "local"}')
    assert got == {"epochs_constant": 2, "lr": 0.001, "reminding_source": "local", "augment": True}


def test_without_a_settings_file_a_site_keeps_the_bundles_allow_list_and_its_environment_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("TDGAN_SITE_CONFIG", raising=False)
    monkeypatch.setenv("TDGAN_CENTER_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    settings = load_site_settings("center_a")
    assert settings.path is None and settings.center_dir == tmp_path / "data" and not settings.authenticated
    assert settings.visit_overrides('{"reminding_source": "bank", "label_bank_size": 100000}')["label_bank_size"]


def test_a_sites_label_mapping_reaches_its_visit_and_a_job_cannot_send_one(tmp_path: Path):
    mapping = {"0": 0, "1": 1, "2": 2, "4": 3}  # BraTS-like label values: the site's data convention
    settings = load_site_settings(None, _site_file(tmp_path, {**HOSPITAL_POLICY, "label_mapping": mapping}))
    assert settings.visit_overrides('{"epochs_constant": 2}')["label_mapping"] == mapping
    with pytest.raises(OverrideError, match="not a setting a job may choose"):
        settings.visit_overrides(json.dumps({"label_mapping": {"0": 0, "1": 3}}))
    plain = load_site_settings(None, _site_file(tmp_path, HOSPITAL_POLICY))
    assert "label_mapping" not in plain.visit_overrides("{}")


@pytest.mark.parametrize(
    "settings, refusal",
    [
        ({"label_mapping": {"x": 1}}, "label_mapping maps 'x' to 1"),
        ({"label_mapping": {"1": "$__import__('os').system('id')"}}, "label_mapping maps '1' to"),
        ({"label_mapping": [0, 1]}, "label_mapping is [0, 1]"),
        ({"label_mapping": {"1": -1}}, "label_mapping maps '1' to -1"),
        ({"job_settings": {"lr": {"high": 10}}}, "must lie within the bundle's"),
        ({"job_settings": {"device": True}}, "which are not job settings"),
        ({"server_url": "x"}, "unknown keys ['server_url']"),
        ({"fixed": {"train#trainer#_target_": "os.system"}}, "not a setting a job may choose"),
        ({"limits": {"max_file_bytes": -1}}, "expected a positive integer"),
        ({"require_authentication": True}, "no 'federation' file"),
        ({"require_authentication": "yes"}, "must be true or false"),
    ],
)
def test_site_settings_that_widen_the_bundle_or_say_something_unknown_are_refused(
    tmp_path: Path, settings: dict[str, Any], refusal: str
):
    with pytest.raises(SiteError) as info:
        load_site_settings(None, _site_file(tmp_path, settings))
    assert refusal in str(info.value) and "\n" not in str(info.value)


def test_a_signing_key_readable_by_others_or_not_listed_by_the_federation_is_refused(
    federation: dict[str, Any], tmp_path: Path
):
    path = federation["settings"]["center_a"]
    with pytest.raises(SiteError, match="does not list this site's public key under 'center_b'"):
        load_site_settings("center_b", path)  # center_a's key presented as center_b's
    key = federation["folder"] / "center_a" / "signing.key"
    os.chmod(key, 0o644)
    try:
        with pytest.raises(SiteError, match="readable by others"):
            load_site_settings("center_a", path)
    finally:
        os.chmod(key, 0o600)
    with pytest.raises(SiteError, match="never overwritten"):
        generate_key(key)


# --- the chain: authenticity without a trusted server ---------------------------------------------------------------


def test_a_chain_signed_by_the_sites_in_order_is_accepted_at_the_next_site(handoffs, federation):
    incoming, chain, position, previous = _receive(_signed_message(handoffs, federation, "b"), federation, "center_c")
    assert position == 2 and [link["statement"]["site"] for link in chain] == ["center_a", "center_b"]
    assert incoming.registry == load_handoff(handoffs["b"]).registry and previous == chain[-1]["statement"]["sha256"]


def test_an_older_authentic_handoff_is_refused_rollback(handoffs, federation):
    with pytest.raises(SiteError, match="visit 2 belongs to center_b .* refused \\(rolled back"):
        _receive(_signed_message(handoffs, federation, "a"), federation, "center_c")


def test_the_same_handoff_twice_is_refused_replay(handoffs, federation):
    done: set[int] = set()
    _, _, position, _ = _receive(_signed_message(handoffs, federation, "b"), federation, "center_c", done)
    done.add(position)
    with pytest.raises(SiteError, match="already made visit 3 of this job"):
        _receive(_signed_message(handoffs, federation, "b"), federation, "center_c", done)


def test_a_handoff_of_another_job_or_federation_is_refused_swap(handoffs, federation, tmp_path: Path):
    with pytest.raises(SiteError, match="another federation, job or position"):
        _receive(_signed_message(handoffs, federation, "b", job="job-0"), federation, "center_c")
    other = tmp_path / "tdgan_site.json"  # a site of another federation that trusts the same keys
    other.write_text(
        json.dumps(
            {
                "signing_key": str(federation["folder"] / "center_c" / "signing.key"),
                "federation": str(federation["swapped"]),
            }
        )
    )
    settings = load_site_settings("center_c", other)
    with pytest.raises(SiteError, match="'federation': 'brain_mri'.*'other_study'"):
        client._receive(_signed_message(handoffs, federation, "b"), settings, "center_c", JOB, set())


def test_a_server_cannot_forge_a_handoff_the_sites_accept(handoffs, federation):
    """The item-4 forgery (weights x 1e30, checksum recomputed) and a chain re-signed with the server's own key."""
    model = _signed_message(handoffs, federation, "b")
    model.params = {k: v * 1e30 if v.is_floating_point() else v for k, v in model.params.items()}
    body = model.meta[META_KEY]
    body["sha256"] = payload_digest({**{k: v for k, v in body.items() if k != "sha256"}, "generator": model.params})
    with pytest.raises(SiteError, match="not the hand-off that was signed"):
        _receive(model, federation, "center_c")
    outsider = federation["folder"] / "outsider.key"
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    server_key = load_pem_private_key(outsider.read_bytes(), None)
    model.meta[CHAIN_KEY][-1] = sign_link(server_key, "brain_mri", JOB, 1, "center_b", body["sha256"], None)
    model.meta[CHAIN_KEY][-1]["statement"]["previous"] = model.meta[CHAIN_KEY][0]["statement"]["sha256"]
    with pytest.raises(SiteError, match="the signature of center_b does not verify"):
        _receive(model, federation, "center_c")
    del model.meta[CHAIN_KEY]
    with pytest.raises(SiteError, match="no signature chain"):
        _receive(model, federation, "center_c")


def test_without_a_federation_a_forged_handoff_loads_but_says_it_is_unauthenticated(
    handoffs, caplog: pytest.LogCaptureFixture
):
    params, meta = handoff_to_message(load_handoff(handoffs["b"]))
    params = {k: v * 1e30 if v.is_floating_point() else v for k, v in params.items()}
    body = meta[META_KEY]
    body["sha256"] = payload_digest({**{k: v for k, v in body.items() if k != "sha256"}, "generator": params})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scripts.handoff"):
        incoming, _, position, _ = client._receive(
            flare.FLModel(params=params, meta=meta), load_site_settings(None, None), "center_c", JOB, set()
        )
    lines = [r.getMessage() for r in caplog.records if "UNAUTHENTICATED" in r.getMessage()]
    assert position == 2 and len(lines) == 1 and "\n" not in lines[0]


# --- bound before allocating ---------------------------------------------------------------------------------------


@pytest.fixture()
def small_limits():
    yield
    set_limits(Limits())


def test_a_small_file_that_expands_to_a_huge_label_bank_is_refused_before_torch_load(
    handoffs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    raw = torch.load(handoffs["b"], weights_only=True)
    size = raw["payload"]["preprocessing"]["spatial_size"]
    raw["payload"]["label_bank"]["center_a"] = torch.zeros(65536, 1, *size, dtype=torch.uint8)  # 64 MiB at 32x32
    raw["sha256"] = payload_digest(raw["payload"])
    buffer = io.BytesIO()
    torch.save(raw, buffer)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, zipfile.ZipFile(bomb, "w") as dst:
        for member in src.infolist():
            dst.writestr(member, src.read(member), compress_type=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1024**2

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load ran on an archive that expands")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(HandoffError, match="compressed archive members .* refused before reading it"):
        load_handoff(bomb)


def test_a_file_over_the_sites_limit_is_refused_before_it_is_read(handoffs, small_limits, monkeypatch):
    set_limits(Limits(max_file_bytes=1024))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran on an oversized file"))
    with pytest.raises(HandoffError, match="more than this reader's limit 1024"):
        load_handoff(handoffs["b"])


@pytest.mark.parametrize(
    "mutate, refusal",
    [
        (lambda b, p: b["preprocessing"].update(spatial_size=[1048576, 1048576]), "exceeds this reader's limits"),
        (
            lambda b, p: b["label_bank"].update(center_a=torch.zeros(5000, 1, 32, 32, dtype=torch.uint8)),
            "holds 5000 maps, more than this reader's limit 4096",
        ),
        (lambda b, p: p.update({f"x{i}": torch.zeros(1) for i in range(5000)}), "more than this reader's limit 4096"),
    ],
)
def test_a_message_beyond_the_limits_is_refused_before_anything_is_built_from_it(handoffs, mutate, refusal: str):
    params, meta = handoff_to_message(load_handoff(handoffs["b"]))
    body = meta[META_KEY]
    mutate(body, params)
    body["sha256"] = payload_digest({**{k: v for k, v in body.items() if k != "sha256"}, "generator": params})
    with pytest.raises(HandoffError, match=refusal):
        client._receive(flare.FLModel(params=params, meta=meta), load_site_settings(None, None), "c", JOB, set())
