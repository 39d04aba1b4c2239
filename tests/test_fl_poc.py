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
"""A real deployment in a test: NVFlare POC mode (server and three site processes on loopback) runs the signed relay."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("nvflare")

import torch  # noqa: E402
from conftest import REPO, TINY  # noqa: E402
from fl_poc import PocDeployment  # noqa: E402
from nvflare.app_common.executors.client_api_executor import ClientAPIExecutor  # noqa: E402
from nvflare.app_common.workflows.cyclic_ctl import CyclicController  # noqa: E402
from nvflare.job_config.api import FedJob  # noqa: E402

from scripts.fl.executor import VisitExecutor  # noqa: E402
from scripts.fl.job import allow_bundle_components, export  # noqa: E402
from scripts.fl.relay import HandoffPersistor, HandoffRelay  # noqa: E402
from scripts.fl.site import SITE_FILE, generate_key, load_federation, verify_chain  # noqa: E402
from scripts.handoff import load_handoff, payload_digest  # noqa: E402

SITES = ["center_a", "center_b", "center_c"]
ORDER = ["center_b", "center_c", "center_a"]  # not alphabetical: the relay must follow the federation's order
FEDERATION = "tdgan_poc"
SITE_TINY = {k: v for k, v in TINY.items() if k != "device"}
JOB_TIMEOUT = 150  # s, for a batch of jobs on 2 shared cores; a stuck job is aborted and fails its tests

pytestmark = pytest.mark.slow  # one deployment for the module: about 3 minutes on 2 cores


def _write_settings(ws: Path, settings: dict[str, Any]) -> None:
    """A participant's own ``local/tdgan_site.json`` (owner-only), read by its processes from their workspace."""
    path = ws / "local" / SITE_FILE
    path.write_text(json.dumps(settings, indent=4))
    os.chmod(path, 0o600)


def _site_settings(demo_root: Path, site: str, **more: Any) -> dict[str, Any]:
    return {
        "center_dir": str(demo_root / site),
        "federation": "federation.json",
        "signing_key": "tdgan_key.pem",
        "require_authentication": True,
        **more,
    }


@pytest.fixture(scope="module")
def poc(demo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The deployment, started once for the module: each site with its own workspace, Ed25519 key and settings (its
    data folder, the federation's public keys); the server with the federation file only (no key, no data)."""
    deployment = PocDeployment(tmp_path_factory.mktemp("poc"), SITES, REPO)
    try:
        deployment.prepare()
        public = {s: generate_key(deployment.workspace(s) / "local" / "tdgan_key.pem") for s in SITES}
        federation = json.dumps({"federation": FEDERATION, "order": ORDER, "sites": public})
        for name in ["server", *SITES]:
            (deployment.workspace(name) / "local" / "federation.json").write_text(federation)
        _write_settings(
            deployment.workspace("server"), {"federation": "federation.json", "require_authentication": True}
        )
        for site in SITES:
            _write_settings(deployment.workspace(site), _site_settings(demo_root, site))
        allow_bundle_components(deployment.workspace("server"), "server")
        for site in SITES:
            allow_bundle_components(deployment.workspace(site), "site")
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


def _relay_job(name: str, order: list[str], output_dir: Path, executors: dict[str, Any]) -> FedJob:
    """A job built by hand as an attacker would: the bundle's server side, any executor at each site."""
    job = FedJob(name=name, min_clients=len(order), mandatory_clients=order)
    job.set_app_packages(["scripts"])
    job.to_server(HandoffPersistor(), id="persistor")
    job.to_server(HandoffRelay(output_dir=str(output_dir), order=order), id="shareable_generator")
    job.to_server(
        CyclicController(
            num_rounds=1,
            task_assignment_timeout=0,
            persistor_id="persistor",
            shareable_generator_id="shareable_generator",
            task_name="train",
            snapshot_every_n_rounds=0,
            order=order,
        )
    )
    job.to_server({"server": {"task_request_interval": 0.2}})
    for site in order:
        job.to(executors[site], site, tasks=["train"])
    return job


@pytest.fixture(scope="module")
def attacks(poc: PocDeployment, demo_root: Path) -> dict[str, Any]:
    """Three attack jobs submitted together to the running deployment (center_a pins ``local`` reminding while they
    run), each waited for with a bound: (a) a job argument naming another folder, (b) ``bank`` reminding against the
    site's pin, (c) NVFlare's general Client API executor running a command (under its own path at center_a, under
    the bundle's re-export ``scripts.fl.executor.ClientAPIExecutor`` at center_b)."""
    root = poc.root / "attacks"
    order = ["center_a", "center_b"]
    markers = {s: root / "outside" / f"pwned_{s}" for s in order}
    markers["center_a"].parent.mkdir(parents=True)
    tiny = json.dumps(SITE_TINY, separators=(",", ":"))
    jobs = {
        "folder": _relay_job(
            "attack_folder",
            order,
            root / "out_folder",
            {
                "center_a": VisitExecutor(f"--center_dir {demo_root / 'center_c'} --overrides {tiny}"),
                "center_b": VisitExecutor(f"--overrides {tiny}"),
            },
        ),
        "pinned": None,
        "executor": _relay_job(
            "attack_executor",
            order,
            root / "out_executor",
            {s: ClientAPIExecutor("external_process", command=f"touch {markers[s]}") for s in order},
        ),
    }
    folders = {}
    for kind, job in jobs.items():
        if job is None:  # the bundle's own job, asking for what center_a pins
            folders[kind] = export(order, root / kind, root / "out_pinned", {**SITE_TINY, "reminding_source": "bank"})
        else:
            job.export_job(str(root / kind))
            folders[kind] = str(root / kind / job.name)
    client = Path(folders["executor"]) / "app_center_b" / "config" / "config_fed_client.json"
    config = json.loads(client.read_text())
    assert config["executors"][0]["executor"]["path"].endswith(".ClientAPIExecutor")
    config["executors"][0]["executor"]["path"] = "scripts.fl.executor.ClientAPIExecutor"  # reachable by import
    client.write_text(json.dumps(config))
    settings = _site_settings(demo_root, "center_a", fixed={"reminding_source": "local"})
    _write_settings(poc.workspace("center_a"), settings)
    try:
        ids = {kind: poc.submit(folder) for kind, folder in folders.items()}
        deadline = time.monotonic() + JOB_TIMEOUT  # they run at once: one bound for all three
        metas = {kind: poc.wait(job_id, max(1.0, deadline - time.monotonic())) for kind, job_id in ids.items()}
    finally:
        _write_settings(poc.workspace("center_a"), _site_settings(demo_root, "center_a"))
    return {"ids": ids, "metas": metas, "markers": markers, "root": root, "folders": folders}


@pytest.fixture(scope="module")
def sequence(poc: PocDeployment) -> dict[str, Any]:
    """The bundle's exported job (tiny visits) over the three sites in the federation's order, submitted to the same
    running deployment (after the attack jobs, in file order: the sites that refused them still run the real job)."""
    out = poc.root / "out"
    folder = export(ORDER, poc.root / "jobs", out, SITE_TINY)
    job_id = poc.submit(folder)
    meta = poc.wait(job_id, JOB_TIMEOUT)
    return {"id": job_id, "meta": meta, "out": out}


def _refusal(poc: PocDeployment, site: str, job_id: str, text: str) -> str:
    """The one line of ``site``'s log of ``job_id`` that holds ``text`` (the refusal), asserting there is one."""
    lines = [line for line in poc.job_log(site, job_id).splitlines() if text in line]
    assert lines, f"{site} did not log {text!r} for job {job_id}:\n{poc.job_log(site, job_id)[-3000:]}"
    return lines[0]


def _nothing_trained(poc: PocDeployment, out: Path) -> None:
    assert not out.exists() or not list(out.rglob("*.pt"))
    assert not (out / "sequence.json").exists()
    for site in SITES:
        assert not list(poc.workspace(site).glob(f"tdgan_{site}/visit*")), f"{site} trained for an attack job"


def test_a_job_argument_naming_a_folder_is_refused_by_the_site_process(poc: PocDeployment, attacks: dict):
    job_id = attacks["ids"]["folder"]
    assert attacks["metas"]["folder"]["status"].startswith("FINISHED")  # NVFlare may call it COMPLETED
    line = _refusal(poc, "center_a", job_id, "job arguments refused")
    assert "--center_dir" in line and "a job may pass only --overrides" in line
    _nothing_trained(poc, attacks["root"] / "out_folder")


def test_a_setting_the_site_pins_is_refused_by_the_site_process(poc: PocDeployment, attacks: dict):
    job_id = attacks["ids"]["pinned"]
    status = attacks["metas"]["pinned"]["status"]  # the bundle's job: its controller fails a stopped relay
    assert status.startswith("FINISHED") and status != "FINISHED:COMPLETED", status
    line = _refusal(poc, "center_a", job_id, "this site sets reminding_source")
    assert "'reminding_source'=\"bank\"" in line and str(poc.workspace("center_a") / "local" / SITE_FILE) in line
    assert "this site sets" not in poc.job_log("center_b", job_id)  # center_b pins nothing: only center_a refused
    _nothing_trained(poc, attacks["root"] / "out_pinned")


def test_a_general_executor_is_not_built_by_the_site_process_and_its_command_never_runs(
    poc: PocDeployment, attacks: dict
):
    job_id = attacks["ids"]["executor"]
    assert attacks["metas"]["executor"]["status"].startswith("FINISHED")  # NVFlare may call it COMPLETED
    for site, path in [
        ("center_a", "nvflare.app_common.executors.client_api_executor.ClientAPIExecutor"),
        ("center_b", "scripts.fl.executor.ClientAPIExecutor"),
    ]:
        _refusal(
            poc,
            site,
            job_id,
            f"component not authorized: Component '{path}' at config path 'executors.#1.executor' is not in allow_list",
        )
        assert not attacks["markers"][site].exists()
    assert not list(attacks["markers"]["center_a"].parent.iterdir())
    _nothing_trained(poc, attacks["root"] / "out_executor")


def test_the_signed_sequence_completes_in_order_across_three_site_processes(poc: PocDeployment, sequence: dict):
    assert sequence["meta"]["status"] == "FINISHED:COMPLETED", sequence["meta"]
    summary = json.loads((sequence["out"] / "sequence.json").read_text())
    assert summary["order"] == ORDER
    assert [v["site"] for v in summary["visits"]] == ORDER
    federation = load_federation(poc.workspace("server") / "local" / "federation.json")
    previous = None
    for i, visit in enumerate(summary["visits"]):
        path = Path(visit["handoff"])
        assert path.parent == sequence["out"] / "handoffs" and path.name == f"visit{i + 1:02d}_{ORDER[i]}.pt"
        chain = torch.load(path, weights_only=True)["chain"]
        assert len(chain) == i + 1
        link = chain[-1]["statement"]
        assert link["site"] == ORDER[i] and link["visit"] == i, link
        assert link["federation"] == FEDERATION and link["job"] == sequence["id"] and link["previous"] == previous
        handoff = load_handoff(path)
        digest = payload_digest(handoff.payload())
        verify_chain(chain, digest, i + 1, federation, sequence["id"], f"hand-off {path.name}")  # signatures hold
        previous = digest
        assert [e["name"] for e in handoff.registry] == ORDER[: i + 1]
    for site in ORDER:  # each site trained in its own process, in its own workspace, on its own data
        visits = list(poc.workspace(site).glob(f"tdgan_{site}/visit*_{site}/handoff_out.pt"))
        assert len(visits) == 1, visits
        log = poc.job_log(site, sequence["id"])
        assert f"site {site}: visit" in log and ", signed)" in log
        assert "UNAUTHENTICATED" not in log  # a keyed site reads every hand-off under the chain, its own too


def test_the_server_holds_no_signing_key_and_no_data(poc: PocDeployment, sequence: dict):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    server = poc.workspace("server")
    settings = json.loads((server / "local" / SITE_FILE).read_text())
    assert set(settings) == {"federation", "require_authentication"}
    assert not list(server.rglob("dataset.json")) and not list(server.rglob("imagesTr"))
    for path in server.rglob("*"):
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes()[:4096]:
            key = load_pem_private_key(path.read_bytes(), password=None)
            assert not isinstance(key, Ed25519PrivateKey), f"{path} is a signing key"  # only NVFlare's TLS key
    for site in SITES:
        assert not list(server.rglob(f"tdgan_{site}"))
