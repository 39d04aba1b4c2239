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
"""Tests of the federated center sequence: the NVFlare job run in NVFlare's simulator with tiny visits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import META, REPO, TINY

from scripts.fl.job import tdgan_job
from scripts.fl.message import CHAIN_KEY, META_KEY, handoff_to_message, message_to_handoff
from scripts.fl.site import generate_key
from scripts.handoff import HandoffError, load_handoff, payload_digest
from scripts.networks import TDGANGenerator

ORDER = ["center_c", "center_a", "center_b"]  # not alphabetical: the relay must follow the configured order
SITE_TINY = {k: v for k, v in TINY.items() if k != "device"}  # the device is each site's own choice, not the job's


def _handoff(ws: Path, site: str, index: int, which: str):
    """The hand-off a simulated site received (``in``) or sent (``out``) at visit ``index`` (1-based)."""
    return load_handoff(ws / site / f"tdgan_{site}" / f"visit{index:02d}_{site}" / f"handoff_{which}.pt")


def _site_log(ws: Path, site: str) -> str:
    return (ws / site / "log.txt").read_text(errors="replace")


def _signing_federation(folder: Path, order: list[str]) -> dict[str, dict]:
    """Each site's own Ed25519 key and the federation file (order and public keys); the server gets the federation
    file only (it can check the chain, not sign): the ``site_settings`` of :py:func:`scripts.fl.job.simulate`."""
    public = {s: generate_key(folder / s / "signing.key") for s in order}
    federation = folder / "federation.json"
    federation.write_text(json.dumps({"federation": "test_federation", "order": order, "sites": public}))
    sites = {
        s: {
            "signing_key": str(folder / s / "signing.key"),
            "federation": str(federation),
            "require_authentication": True,
        }
        for s in order
    }
    return {**sites, "server": {"federation": str(federation), "require_authentication": True}}


DOCS_CONFIGS = ("train_sequential.json", "demo.json", "federated.json")
"""docs/federated.md's simulator command: the demo's own settings through the federation (at a tiny size here)."""
DEMO_TINY = {"amp": False, "d_layers": 1}  # beside SITE_TINY: the demo's bf16 and discriminator depth, made tiny


def _bundle_run(configs: list[str], settings: dict, out: Path) -> None:
    """``python -m monai.bundle run`` of ``configs`` with ``settings`` as one more override file."""
    override = out.with_suffix(".json")
    override.write_text(json.dumps(settings))
    files = [str(REPO / "configs" / f) for f in configs] + [str(override)]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(files), "--meta_file", META]
    cmd += ["--logging_file", str(REPO / "configs" / "logging.conf"), "--bundle_root", str(REPO)]
    done = subprocess.run(
        cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


@pytest.fixture(scope="module")
def relay(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """docs/federated.md's simulator command (configs/federated.json over train_sequential.json and the demo's
    settings), run once through ``python -m monai.bundle run``: 3 simulated sites x 1 round with tiny visits, a
    signing federation; and the same configs without federated.json: the local sequence."""
    tmp = tmp_path_factory.mktemp("fl")
    root = tmp / "data"
    shutil.copytree(demo_root, root)
    (root / "centers.json").write_text(json.dumps({"order": ORDER}))
    tiny = {f"visit_overrides#{k}": v for k, v in {**SITE_TINY, **DEMO_TINY}.items()}
    sites = _signing_federation(tmp / "keys", ORDER)
    common = {"data_root": str(root), **tiny}
    _bundle_run(list(DOCS_CONFIGS), {**common, "output_dir": str(tmp / "out"), "site_settings": sites}, tmp / "out")
    _bundle_run(list(DOCS_CONFIGS[:2]), {**common, "output_dir": str(tmp / "local")}, tmp / "local")
    return {"root": root, "out": tmp / "out", "ws": tmp / "out" / "nvflare", "local": tmp / "local"}


def test_the_federated_run_is_bit_identical_to_the_local_sequence(relay: dict):
    federated = json.loads((relay["out"] / "sequence.json").read_text())["visits"]
    local = json.loads((relay["local"] / "sequence.json").read_text())["visits"]
    assert [v["centers"] for v in federated] == [v["centers"] for v in local] == [[c] for c in ORDER]
    for f, loc in zip(federated, local, strict=True):
        a, b = load_handoff(f["handoff"]), load_handoff(loc["handoff"])
        assert a.generator.keys() == b.generator.keys()
        assert all(torch.equal(v, b.generator[k]) for k, v in a.generator.items())
        assert a.label_bank.keys() == b.label_bank.keys()
        assert all(torch.equal(v, b.label_bank[k]) for k, v in a.label_bank.items())


def test_each_site_receives_bit_identical_the_generator_the_previous_site_sent(relay: dict):
    for i in range(1, len(ORDER)):
        sent = _handoff(relay["ws"], ORDER[i - 1], i, "out")
        received = _handoff(relay["ws"], ORDER[i], i + 1, "in")
        assert sent.generator.keys() == received.generator.keys()
        for k, v in sent.generator.items():
            assert torch.equal(v, received.generator[k]), f"{k} changed between {ORDER[i - 1]} and {ORDER[i]}"
        assert sent.label_bank.keys() == received.label_bank.keys()
        for k, v in sent.label_bank.items():
            assert torch.equal(v, received.label_bank[k])
        assert sent.registry == received.registry and sent.visits == received.visits


def test_final_handoff_is_the_last_sites_output_and_registry_follows_the_configured_order(relay: dict):
    summary = json.loads((relay["out"] / "sequence.json").read_text())
    assert summary["order"] == ORDER
    names = [Path(v["handoff"]).name for v in summary["visits"]]
    assert names == [f"visit{i + 1:02d}_{c}.pt" for i, c in enumerate(ORDER)]
    assert summary["final_handoff"] == summary["visits"][-1]["handoff"]
    final = load_handoff(summary["final_handoff"])
    last = _handoff(relay["ws"], ORDER[-1], len(ORDER), "out")
    for k, v in last.generator.items():
        assert torch.equal(v, final.generator[k])
    assert [e["name"] for e in final.registry] == ORDER
    assert [e["code"] for e in final.registry] == list(range(len(ORDER)))
    assert [v["centers"] for v in final.visits] == [[c] for c in ORDER]
    assert set(final.label_bank) == set(ORDER)


def test_no_message_carries_an_image_only_generator_weights_and_label_maps(relay: dict):
    network = load_handoff(json.loads((relay["out"] / "sequence.json").read_text())["final_handoff"]).network
    expected = {f"params/{k}": list(v.shape) for k, v in TDGANGenerator(**network).state_dict().items()}
    messages = [json.loads(line) for line in (relay["out"] / "fl_messages.jsonl").read_text().splitlines()]
    # the controller also prepares task data after the last result, for a next site that does not come
    assert [m["direction"] for m in messages] == ["task", "result"] * len(ORDER) + ["task"]
    for m in messages[1:]:  # all but the opening message, which is empty
        assert set(m["meta_keys"]) - {"job_id", "site_name"} == {META_KEY, CHAIN_KEY}  # hand-off + its signatures
        params = {k: v for k, v in m["tensors"].items() if k.startswith("params/")}
        assert {k: v["shape"] for k, v in params.items()} == expected
        assert {v["dtype"] for v in params.values()} == {"torch.float32"}
        others = {k: v for k, v in m["tensors"].items() if not k.startswith("params/")}
        assert others, "the label bank travels in the metadata"
        for k, v in others.items():
            assert k.startswith(f"meta/{META_KEY}/label_bank/"), k
            assert v["dtype"] == "torch.uint8" and v["shape"][1:] == [1, *TINY["spatial_size"]]
            assert v["shape"][0] <= TINY["label_bank_size"]
    for site in ORDER:  # and what arrived holds label values only
        for maps in _handoff(relay["ws"], site, ORDER.index(site) + 1, "out").label_bank.values():
            assert int(maps.max()) < network["num_classes"]


def test_each_site_reads_only_its_own_folder_from_its_own_settings_and_the_job_ships_no_code_or_path(relay: dict):
    for site in ORDER:
        app = relay["ws"] / site / "simulate_job" / f"app_{site}"
        config = (app / "config" / "config_fed_client.json").read_text()
        assert str(relay["root"]) not in config and "center_dir" not in config  # the job names no folder
        assert not (app / "custom").exists()
        settings = json.loads((relay["out"] / "sites" / site / "tdgan_site.json").read_text())
        assert settings["center_dir"] == str(relay["root"] / site)  # its own folder, and no other site's
        assert [c for c in ORDER if c != site and str(relay["root"] / c) in json.dumps(settings)] == []
        assert (relay["out"] / "sites" / site / "tdgan_site.json").stat().st_mode & 0o077 == 0
    assert not (relay["ws"] / "server" / "simulate_job" / "app_server" / "custom").exists()


def test_every_handoff_is_signed_by_the_site_that_made_it_and_the_server_holds_no_signing_key(relay: dict):
    summary = json.loads((relay["out"] / "sequence.json").read_text())
    previous = None
    for i, visit in enumerate(summary["visits"]):
        record = torch.load(visit["handoff"], weights_only=True)
        chain = record["chain"]
        assert [link["statement"]["site"] for link in chain] == ORDER[: i + 1]
        statement = chain[-1]["statement"]
        assert (
            statement["visit"] == i
            and statement["previous"] == previous
            and statement["federation"] == ("test_federation")
        )
        assert statement["sha256"] == record["sha256"]  # the server stored what the site signed, unchanged
        previous = statement["sha256"]
    server = json.loads((relay["out"] / "sites" / "server" / "tdgan_site.json").read_text())
    assert "signing_key" not in server and "center_dir" not in server
    assert "signed" in _site_log(relay["ws"], ORDER[0]) and "UNAUTHENTICATED" not in _site_log(relay["ws"], ORDER[1])


def _failing_relay(demo_root: Path, tmp_path: Path, fault: str) -> tuple[Path, Path, RuntimeError]:
    """Run two tiny sites where one fails: the first (``missing`` data folder), or the second (a ``forged`` generator
    on the wire, in a signed federation). Each site is a process start, so no third one."""
    from scripts.fl.job import simulate

    order = ["center_a", "center_b"]
    sites = {"center_a": {"center_dir": str(tmp_path / "no_such_center")}} if fault == "missing" else {}
    if fault == "forged":
        sites = _signing_federation(tmp_path / "keys", order)
    out = tmp_path / "out"
    job = tdgan_job(order, out, SITE_TINY)
    if fault == "forged":
        from fl_faults import ForgeGenerator
        from nvflare.job_config.defs import FilterType

        job.to(ForgeGenerator(), "center_b", filter_type=FilterType.TASK_DATA, tasks=["train"])
    with pytest.raises(RuntimeError, match="did not complete") as failure:
        simulate(demo_root, out, order=order, job=job, site_settings=sites)
    return out, out / "nvflare", failure.value


def test_site_without_its_data_folder_fails_clearly_and_the_relay_stops(demo_root: Path, tmp_path: Path):
    out, ws, _ = _failing_relay(demo_root, tmp_path, "missing")
    assert "no_such_center has no dataset.json" in _site_log(ws, "center_a")
    assert not list(out.rglob("*.pt")) and not (out / "sequence.json").exists()
    assert not (ws / "center_b" / "tdgan_center_b").exists()  # the next site never trained


def test_a_generator_changed_in_transit_is_refused_by_the_site_and_the_relay_stops(demo_root: Path, tmp_path: Path):
    """A weight changed on the wire and its checksum recomputed, in a signed federation, refused by the receiving
    site's process; a weight changed without the checksum ("checksum mismatch") is refused by the same check of the
    same message (test_message_that_is_not_the_sent_generator_is_refused, ``flip``)."""
    out, ws, _ = _failing_relay(demo_root, tmp_path, "forged")
    log = _site_log(ws, "center_b")
    assert "test fault: forged" in log and "not the hand-off that was signed; refused" in log
    assert not list((ws / "center_b").rglob("handoff_*.pt"))  # nothing trained, nothing sent
    assert [p.name for p in (out / "handoffs").glob("*.pt")] == ["visit01_center_a.pt"]  # what finished is kept
    assert not (out / "sequence.json").exists()


@pytest.fixture(scope="module")
def handoff(relay: dict):
    """A real hand-off with a label bank of three centers: the federated run's final one."""
    return load_handoff(json.loads((relay["out"] / "sequence.json").read_text())["final_handoff"])


def test_message_round_trip_rebuilds_the_same_handoff(handoff):
    params, meta = handoff_to_message(handoff)
    assert all(isinstance(v, torch.Tensor) for v in params.values())
    back = message_to_handoff(params, {**meta, "job_id": "x", "site_name": "y"}, "test")
    assert back.payload().keys() == handoff.payload().keys()
    assert all(torch.equal(v, back.generator[k]) for k, v in handoff.generator.items())


@pytest.mark.parametrize(
    "fault, message",
    [
        ("numpy", "must be torch tensors"),
        ("extra", "unexpected ['extra']"),
        ("image", "expected uint8 label maps"),
        ("network", "not the weights of the generator"),
        ("flip", "checksum mismatch"),
        ("meta", "must hold exactly"),
    ],
)
def test_message_that_is_not_the_sent_generator_is_refused(handoff, fault: str, message: str):
    params, meta = handoff_to_message(handoff)
    body = meta[META_KEY]
    key = next(iter(params))
    if fault == "numpy":
        params[key] = params[key].numpy()
    elif fault == "extra":
        params["extra"] = torch.zeros(3)
    elif fault == "image":
        name = next(iter(body["label_bank"]))
        body["label_bank"][name] = body["label_bank"][name].float()
    elif fault == "network":
        body["network"] = {**body["network"], "ngf": body["network"]["ngf"] * 2}
    elif fault == "flip":
        params[key] = params[key].clone()
        params[key].view(-1)[0] += 1e-3
    elif fault == "meta":
        body["extra"] = np.zeros(2)
    if fault in ("extra", "image", "network"):  # the checksum recomputed: the structure check must catch it
        body["sha256"] = payload_digest({**{k: v for k, v in body.items() if k != "sha256"}, "generator": params})
    with pytest.raises(HandoffError) as e:
        message_to_handoff(params, meta, "test message")
    assert message in str(e.value) and str(e.value).startswith("test message")


def test_a_job_that_injects_a_component_is_refused_by_the_first_site_before_anything_runs(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The issue's probe through the real NVFlare client: a compromised server (its own check skipped) sends
    ``train#inferer#_target_ = os.system`` with a sibling ``command``; the first site refuses the job's settings
    in one line before NVFlare or any config starts, nothing trains, and the command never runs."""
    import scripts.fl.job as fl_job

    marker = tmp_path / "outside" / "pwned"  # what the injected command would create
    marker.parent.mkdir()
    hostile = {**SITE_TINY, "train#inferer#_target_": "os.system", "train#inferer#command": f"touch${{IFS}}{marker}"}
    monkeypatch.setattr(fl_job, "job_overrides", lambda overrides: dict(overrides))  # the server skips its check
    order = ["center_a", "center_b"]
    out = tmp_path / "out"
    job = fl_job.tdgan_job(order, out, hostile)
    with pytest.raises(RuntimeError, match="did not complete"):
        fl_job.simulate(demo_root, out, order=order, job=job)
    log = _site_log(out / "nvflare", "center_a")
    assert "job override 'train#inferer#_target_': not a setting a job may choose" in log
    assert not marker.exists()
    assert not list(out.rglob("*.pt")) and not list((out / "nvflare").glob("*/tdgan_*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "outside"]  # nothing written beside its folders
