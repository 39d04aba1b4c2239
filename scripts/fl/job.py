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
"""The NVFlare job of the center sequence (cyclic controller, explicit order), its simulator run and its export."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nvflare.app_common.workflows.cyclic_ctl import CyclicController
from nvflare.job_config.api import FedJob

from scripts.data import read_center_order
from scripts.fl.client import SITE_KEYS
from scripts.fl.executor import VisitExecutor
from scripts.fl.relay import HandoffPersistor, HandoffRelay

__all__ = ["tdgan_job", "simulate", "export"]

logger = logging.getLogger(__name__)

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
ALLOW_PREFIX = "scripts.fl"
"""Class-path prefix of the bundle's FLARE components (relay, executor), for each side's ``class_allow_list``."""


def _script_args(center_dir: str | None, visit_overrides: Mapping[str, Any]) -> str:
    """The client script's arguments. The FLARE in-process runner splits them on white space: compact JSON."""
    overrides = {k: v for k, v in visit_overrides.items() if k not in SITE_KEYS}
    text = json.dumps(overrides, separators=(",", ":"))
    if any(c.isspace() for c in text) or (center_dir and any(c.isspace() for c in str(center_dir))):
        raise ValueError(f"visit overrides and data folders may not contain white space, got {text} / {center_dir}.")
    args = f"--overrides {text}"
    return f"--center_dir {center_dir} {args}" if center_dir else args


def tdgan_job(
    order: Sequence[str],
    output_dir: str | os.PathLike,
    visit_overrides: Mapping[str, Any] | None = None,
    center_dirs: Mapping[str, str | os.PathLike] | None = None,
    num_rounds: int = 1,
    task_request_interval: float = 0.2,
    initial_handoff: str | None = None,
    data_root: str | None = None,
    name: str = "tdgan_cyclic",
) -> FedJob:
    """The center sequence as an NVFlare job.

    Server: ``CyclicController`` with the explicit site order, ``task_assignment_timeout=0`` (wait for the named site
    however long it takes: a slow site is never skipped) and a short task request interval (the server's default 2 s
    dominates the hop time); :py:class:`~scripts.fl.relay.HandoffPersistor` opens the relay, and
    :py:class:`~scripts.fl.relay.HandoffRelay` checks every result and writes it as the visit's hand-off.
    Sites: :py:class:`~scripts.fl.executor.VisitExecutor`, NVFlare's in-process Client API executor pinned to the
    site's own ``scripts/fl/client.py``, with PyTorch tensors on the wire. The job contains no code of the bundle
    (``scripts`` is an app package that the server and each site have installed): each side runs its own pinned copy.

    Args:
        order: site names in relay order (in the simulator, the center folder names).
        output_dir: server-side folder of the hand-offs, ``fl_messages.jsonl`` and ``sequence.json``.
        visit_overrides: plain-valued settings of every visit (network sizes, epochs, ...).
        center_dirs: site -> data folder, passed as the site's ``--center_dir`` (simulator, POC on one machine);
            None: each site sets ``TDGAN_CENTER_DIR`` itself (real deployment).
        num_rounds: times the generator goes round all sites (TDGAN: 1).
        task_request_interval: seconds a site waits before asking the server again for a task.
        initial_handoff: server-side hand-off file to continue from; default: the first site starts from scratch.
        data_root: recorded in ``sequence.json`` (simulator).
        name: job name.
    """
    order = [str(s) for s in order]
    if len(order) < 2 or len(set(order)) != len(order):
        raise ValueError(f"the relay needs at least 2 distinct sites, got {order}.")
    job = FedJob(name=name, min_clients=len(order), mandatory_clients=order)
    job.set_app_packages(["scripts"])  # never ship the bundle's code: sites run their own copy
    job.to_server(HandoffPersistor(initial_handoff=initial_handoff), id="persistor")
    job.to_server(
        HandoffRelay(
            output_dir=str(Path(output_dir).resolve()), order=order, num_rounds=num_rounds, data_root=data_root
        ),
        id="shareable_generator",
    )
    controller = CyclicController(
        num_rounds=num_rounds,
        task_assignment_timeout=0,
        persistor_id="persistor",
        shareable_generator_id="shareable_generator",
        task_name="train",
        task_check_period=0.1,
        snapshot_every_n_rounds=0,
        order=order,
    )
    job.to_server(controller)
    job.to_server({"server": {"task_request_interval": task_request_interval}})
    for site in order:
        center_dir = str(Path(center_dirs[site]).resolve()) if center_dirs else None
        job.to(VisitExecutor(_script_args(center_dir, visit_overrides or {})), site, tasks=["train"])
    return job


def _bundle_on_pythonpath() -> None:
    """Simulated server and sites are subprocesses: they import this bundle's ``scripts`` from PYTHONPATH."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(BUNDLE_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(BUNDLE_ROOT), *paths])


def allow_bundle_components(workspace: str | os.PathLike) -> Path:
    """Add the bundle's FLARE components to the simulator's class allow list (``<workspace>/local/resources.json``).

    NVFlare builds only components whose class path is on a site's ``class_allow_list`` (by default NVFlare's own).
    In a real deployment the server's and each site's admin add ``scripts.fl`` to their own ``local/resources.json``.

    Returns:
        the resources file.
    """
    from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST

    path = Path(workspace) / "local" / "resources.json"
    resources = json.loads(path.read_text()) if path.is_file() else {"format_version": 2}
    allow = list(resources.get("class_allow_list", DEFAULT_CLASS_ALLOW_LIST))
    if ALLOW_PREFIX not in allow and "*" not in allow:
        allow.append(ALLOW_PREFIX)
    resources["class_allow_list"] = allow
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(resources, indent=4))
    return path


def simulate(
    data_root: str | os.PathLike,
    output_dir: str | os.PathLike,
    visit_overrides: Mapping[str, Any] | None = None,
    order: Sequence[str] | None = None,
    num_rounds: int = 1,
    task_request_interval: float = 0.2,
    workspace: str | os.PathLike | None = None,
    job: FedJob | None = None,
) -> list[str]:
    """Run the job in NVFlare's simulator, one simulated site per center folder of ``data_root`` (each site gets
    only its own folder), and check that the relay completed.

    Args:
        data_root: folder with the center folders and ``centers.json``.
        output_dir: where ``handoffs/``, ``sequence.json`` and the simulator workspace (``nvflare/``) go.
        visit_overrides: settings of every visit.
        order: center names in visiting order; default: ``centers.json``'s.
        num_rounds: see :py:func:`tdgan_job`.
        task_request_interval: see :py:func:`tdgan_job`.
        workspace: simulator workspace; default ``<output_dir>/nvflare``.
        job: a job built by :py:func:`tdgan_job` to run instead (tests use it to add filters or break a site).

    Returns:
        the hand-off paths, one per visit, in order.

    Raises:
        RuntimeError: the relay did not complete (a site failed, or a result was refused): no ``sequence.json``.
    """
    data_root, output_dir = Path(data_root).resolve(), Path(output_dir).resolve()
    order = list(order) if order is not None else read_center_order(data_root)
    if job is None:
        job = tdgan_job(
            order,
            output_dir,
            visit_overrides,
            center_dirs={c: data_root / c for c in order},
            num_rounds=num_rounds,
            task_request_interval=task_request_interval,
            data_root=str(data_root),
        )
    summary_path = output_dir / "sequence.json"
    if summary_path.exists():
        summary_path.unlink()  # only this run may claim a final hand-off
    workspace = Path(workspace or output_dir / "nvflare").resolve()
    allow_bundle_components(workspace)
    _bundle_on_pythonpath()
    t0 = time.perf_counter()
    job.simulator_run(str(workspace), clients=list(order), threads=len(order))
    seconds = time.perf_counter() - t0
    if not summary_path.is_file():
        raise RuntimeError(
            f"the federated relay over {order} did not complete in {seconds:.0f} s: no {summary_path}. "
            f"A site failed or its result was refused; see the simulator log under {workspace}."
        )
    summary = json.loads(summary_path.read_text())
    logger.info(f"federated relay complete in {seconds:.1f} s: final hand-off {summary['final_handoff']}")
    return [v["handoff"] for v in summary["visits"]]


def export(
    order: Sequence[str],
    job_root: str | os.PathLike,
    output_dir: str | os.PathLike,
    visit_overrides: Mapping[str, Any] | None = None,
    num_rounds: int = 1,
    task_request_interval: float = 0.2,
) -> str:
    """Write the job folder for POC mode or a provisioned deployment (``nvflare job submit -j <job_root>/<name>``).

    Sites get no data path from the job: each sets ``TDGAN_CENTER_DIR`` to its own folder.

    Returns:
        the job folder.
    """
    job = tdgan_job(
        order,
        output_dir,
        visit_overrides,
        center_dirs=None,
        num_rounds=num_rounds,
        task_request_interval=task_request_interval,
    )
    job.export_job(str(job_root))
    return str(Path(job_root) / job.name)
