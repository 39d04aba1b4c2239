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

from nvflare.job_config.api import FedJob

from scripts.data.centers import read_center_order
from scripts.files import make_private, private_dirs
from scripts.fl.executor import VisitExecutor
from scripts.fl.overrides import SITE_KEYS, job_overrides
from scripts.fl.relay import HandoffPersistor, HandoffRelay, RelayController
from scripts.fl.site import SITE_CONFIG_ENV, SITE_FILE

__all__ = [
    "tdgan_job",
    "simulate",
    "export",
    "class_path",
    "bundle_allow_list",
    "allow_bundle_components",
    "FederatedSequence",
]

logger = logging.getLogger(__name__)

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
SERVER_COMPONENTS = (HandoffPersistor, HandoffRelay, RelayController)
"""The bundle's FLARE components a server builds for this job (the controller: FLARE's cyclic one, failing the job
when the relay stops)."""
SITE_COMPONENTS = (VisitExecutor,)
"""The bundle's FLARE components a site builds for this job."""
ROLES = ("server", "site", "simulator")
"""Participants whose ``class_allow_list`` :py:func:`allow_bundle_components` writes (the simulator's one workspace
serves the server and every site)."""


def _script_args(visit_overrides: Mapping[str, Any]) -> str:
    """The client script's arguments: ``--overrides`` and nothing else (a site refuses any other argument, a
    folder above all: its data and work folders are its own settings). The FLARE in-process runner splits them on
    white space: compact JSON.

    The site keys of the server's own sequence config (``bundle_root``) and unset values (``num_classes`` and
    ``image_channels`` when the server has no data: each site reads them from its own ``dataset.json``, and the
    hand-off's network settings make the sites agree) are dropped; the rest must be settings a job may choose
    (:data:`scripts.fl.overrides.JOB_SETTINGS`), so a wrong one fails here, on the server, and not only at the first
    site (which checks again against its own policy: it trusts no job).

    Raises:
        OverrideError: a setting a job may not choose, or one out of range.
    """
    overrides = job_overrides({k: v for k, v in visit_overrides.items() if k not in SITE_KEYS and v is not None})
    text = json.dumps(overrides, separators=(",", ":"))
    if any(c.isspace() for c in text):
        raise ValueError(f"visit overrides may not contain white space, got {text}.")
    return f"--overrides {text}"


def tdgan_job(
    order: Sequence[str],
    output_dir: str | os.PathLike,
    visit_overrides: Mapping[str, Any] | None = None,
    num_rounds: int = 1,
    task_request_interval: float = 0.2,
    task_assignment_timeout: int = 0,
    initial_handoff: str | None = None,
    data_root: str | None = None,
    name: str = "tdgan_cyclic",
) -> FedJob:
    """The center sequence as an NVFlare job.

    Server: :py:class:`~scripts.fl.relay.RelayController` (FLARE's ``CyclicController``, failing the job when the relay
    stops) with the explicit site order, ``task_assignment_timeout=0`` (wait for the named site
    however long it takes: a slow site is never skipped) and a short task request interval (the server's default 2 s
    dominates the hop time); :py:class:`~scripts.fl.relay.HandoffPersistor` opens the relay, and
    :py:class:`~scripts.fl.relay.HandoffRelay` checks every result and writes it as the visit's hand-off.
    Sites: :py:class:`~scripts.fl.executor.VisitExecutor`, NVFlare's in-process Client API executor pinned to the
    site's own ``scripts/fl/client.py``, with PyTorch tensors on the wire. The job contains no code of the bundle
    (``scripts`` is an app package that the server and each site have installed): each side runs its own pinned copy.

    Args:
        order: site names in relay order (in the simulator, the center folder names).
        output_dir: server-side folder of the hand-offs, ``fl_messages.jsonl`` and ``sequence.json``.
        visit_overrides: settings of every visit a job may choose (network sizes, epochs, ...: see
            :data:`scripts.fl.overrides.JOB_SETTINGS`); site keys such as ``bundle_root`` are dropped.
        num_rounds: times the generator goes round all sites (TDGAN: 1).
        task_request_interval: seconds a site waits before asking the server again for a task.
        task_assignment_timeout: seconds the controller waits for the named site to pick up its task before it
            moves on to the next site; 0 = wait for it (keep 0: anything else can skip a slow site and break the
            order; other values exist to show that).
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
    controller = RelayController(
        num_rounds=num_rounds,
        task_assignment_timeout=task_assignment_timeout,
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
        job.to(VisitExecutor(_script_args(visit_overrides or {})), site, tasks=["train"])
    return job


def _bundle_on_pythonpath() -> None:
    """Simulated server and sites are subprocesses: they import this bundle's ``scripts`` from PYTHONPATH."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(BUNDLE_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(BUNDLE_ROOT), *paths])


def class_path(cls: type) -> str:
    """The path NVFlare builds ``cls`` from (``<module>.<class>``, as a job config's ``path`` names it)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def bundle_allow_list(role: str) -> list[str]:
    """The exact class paths of the bundle's FLARE components that ``role`` builds: ``"server"`` (the relay's
    persistor and checker), ``"site"`` (the visit executor) or ``"simulator"`` (both: one workspace serves all).

    NVFlare admits a path equal to an entry or starting with the entry and a dot. An entry here is a class in a module
    that is not a package, so the only other paths it admits are ``<module>.<Class>.<attribute>``, which NVFlare's
    loader cannot build (it imports ``<module>.<Class>`` as a module): nothing but these classes can be built from the
    bundle, not NVFlare's ``ClientAPIExecutor`` that ``scripts.fl.executor`` imports, not a function
    (``tests/test_fl_allow_list.py`` walks the whole package with NVFlare's own matching rule to prove it).

    Raises:
        ValueError: an unknown role.
    """
    if role not in ROLES:
        raise ValueError(f"participant role {role!r} is not one of {list(ROLES)}.")
    classes = {"server": SERVER_COMPONENTS, "site": SITE_COMPONENTS}.get(role, SERVER_COMPONENTS + SITE_COMPONENTS)
    return [class_path(c) for c in classes]


def _admits_bundle_code(entry: object) -> bool:
    """Whether an allow-list entry reaches into this bundle's package (``scripts``, ``scripts.``, ``scripts.fl``...)."""
    package = VisitExecutor.__module__.split(".")[0]  # not __name__: "__main__" under ``python -m``
    return isinstance(entry, str) and (entry == package or entry.startswith(f"{package}."))


def allow_bundle_components(workspace: str | os.PathLike, role: str) -> Path:
    """Allow exactly the bundle's FLARE components that ``role`` builds (:py:func:`bundle_allow_list`) in a
    participant's ``<workspace>/local/resources.json`` (created from ``resources.json.default`` if absent): the
    simulator's, or a POC or provisioned server's or site's (``python -m scripts.fl.job allow server|site
    <workspace> ...``).

    NVFlare builds only components whose class path is on the participant's ``class_allow_list`` (by default
    NVFlare's own classes, which stay). Every other entry that reaches into the bundle's package (such as the prefix
    ``scripts.fl`` earlier versions wrote, or the other role's classes) is removed, so rewriting a file narrows it.

    Args:
        workspace: the participant's workspace (startup kit) folder.
        role: ``"server"``, ``"site"`` or ``"simulator"`` (both; the simulator's one workspace serves all).

    Returns:
        the resources file.

    Raises:
        ValueError: an unknown role, or a resources file that admits every class (``"*"``) or only warns about
            unlisted ones (``class_list_enforcement_mode`` ``"warn"``): an allow-list would then hold nothing back.
    """
    from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST

    entries = bundle_allow_list(role)
    path = Path(workspace) / "local" / "resources.json"
    default = path.with_name("resources.json.default")  # what a provisioned or POC participant starts with
    source = path if path.is_file() else default if default.is_file() else None
    resources = json.loads(source.read_text()) if source else {"format_version": 2}
    allow = list(resources.get("class_allow_list", DEFAULT_CLASS_ALLOW_LIST))
    if "*" in allow or resources.get("class_list_enforcement_mode", "enforce") != "enforce":
        raise ValueError(
            f"{source}: class_allow_list holds '*' or class_list_enforcement_mode is not 'enforce', so any class a "
            "job names would be built; remove '*' and set 'enforce', then rerun."
        )
    resources["class_allow_list"] = [e for e in allow if not _admits_bundle_code(e)] + entries
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(resources, indent=4))
    return path


def simulate(
    data_root: str | os.PathLike,
    output_dir: str | os.PathLike,
    visit_overrides: Mapping[str, Any] | None = None,
    order: Sequence[str] | None = None,
    workspace: str | os.PathLike | None = None,
    threads: int | None = None,
    job: FedJob | None = None,
    site_settings: Mapping[str, Mapping[str, Any]] | None = None,
    **job_args: Any,
) -> list[str]:
    """Run the job in NVFlare's simulator, one simulated site per center folder of ``data_root`` (each site is given
    only its own folder), and check that the relay completed.

    Args:
        data_root: folder with the center folders and ``centers.json``.
        output_dir: where ``handoffs/``, ``sequence.json`` and the simulator workspace (``nvflare/``) go.
        visit_overrides: settings of every visit.
        order: center names in visiting order; default: ``centers.json``'s.
        workspace: simulator workspace; default ``<output_dir>/nvflare``.
        threads: simulated sites running at once; default: all (each its own process, started once, so a hop
            costs no process start).
        job: a job built by :py:func:`tdgan_job` to run instead (tests use it to add a fault on the wire).
        site_settings: participant name (a site, or ``server``) -> more of its settings (policy, keys, limits:
            :py:mod:`scripts.fl.site`); each site's ``center_dir`` is its center folder of ``data_root``.
        job_args: more arguments of :py:func:`tdgan_job` (``num_rounds``, ``task_request_interval``, ...).

    Returns:
        the hand-off paths, one per visit, in order.

    Raises:
        RuntimeError: the relay did not complete (a site failed, or a result was refused): no ``sequence.json``.
    """
    data_root, output_dir = Path(data_root).resolve(), Path(output_dir).resolve()
    order = list(order) if order is not None else read_center_order(data_root)
    if job is None:
        job = tdgan_job(order, output_dir, visit_overrides, data_root=str(data_root), **job_args)
    settings_pattern = write_site_settings(output_dir / "sites", {c: data_root / c for c in order}, site_settings)
    summary_path = output_dir / "sequence.json"
    if summary_path.exists():
        summary_path.unlink()  # only this run may claim a final hand-off
    workspace = Path(workspace or output_dir / "nvflare").resolve()
    allow_bundle_components(workspace, "simulator")
    _bundle_on_pythonpath()
    t0 = time.perf_counter()
    before = os.environ.get(SITE_CONFIG_ENV)
    os.environ[SITE_CONFIG_ENV] = settings_pattern  # each simulated participant reads its own file
    try:
        rc = job.simulator_run(str(workspace), clients=list(order), threads=threads or len(order))
    finally:
        if before is None:
            os.environ.pop(SITE_CONFIG_ENV, None)
        else:
            os.environ[SITE_CONFIG_ENV] = before
    seconds = time.perf_counter() - t0
    if not summary_path.is_file():
        raise RuntimeError(
            f"the federated relay over {order} did not complete (simulator exit code {rc}, {seconds:.0f} s): no "
            f"{summary_path}. A site failed or its result was refused; see the logs under {workspace}/<site>/."
        )
    summary = json.loads(summary_path.read_text())
    logger.info(f"federated relay complete in {seconds:.1f} s: final hand-off {summary['final_handoff']}")
    return [v["handoff"] for v in summary["visits"]]


def write_site_settings(
    folder: str | os.PathLike,
    center_dirs: Mapping[str, str | os.PathLike],
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """Write one settings file per participant of a federation on one machine (simulator, POC):
    ``<folder>/<site>/tdgan_site.json`` with the site's ``center_dir`` (and ``<folder>/server/``), owner-only.

    Returns:
        the ``$TDGAN_SITE_CONFIG`` value that lets each participant read its own (``<folder>/{site}/tdgan_site.json``).
    """
    folder = Path(folder).resolve()
    extra = dict(extra or {})
    for name in [*center_dirs, "server"]:
        settings = dict(extra.get(name, {}))
        if name in center_dirs:
            settings.setdefault("center_dir", str(Path(center_dirs[name]).resolve()))
        path = private_dirs(folder / name) / SITE_FILE
        path.write_text(json.dumps(settings, indent=4))
        make_private(path)
    return str(folder / "{site}" / SITE_FILE)


def export(
    order: Sequence[str],
    job_root: str | os.PathLike,
    output_dir: str | os.PathLike,
    visit_overrides: Mapping[str, Any] | None = None,
    **job_args: Any,
) -> str:
    """Write the job folder for POC mode or a provisioned deployment (``nvflare job submit -j <job_root>/<name>``).

    The job names no data path: each site sets ``TDGAN_CENTER_DIR`` to its own folder. ``output_dir`` is a folder
    on the server.

    Returns:
        the job folder.
    """
    job = tdgan_job(order, output_dir, visit_overrides, **job_args)
    job.export_job(str(job_root))
    return str(Path(job_root) / job.name)


class FederatedSequence:
    """The center sequence as a federated job, for bundle configs (``configs/federated.json`` replaces
    ``configs/train_sequential.json``'s ``sequence`` with it): ``run()`` runs it in the simulator, ``export()``
    writes the job folder for POC mode or a real deployment.

    Args:
        data_root: folder with the center folders and ``centers.json`` (simulator).
        output_dir: where ``handoffs/``, ``sequence.json`` go (on the server).
        order: site (= center) names in relay order.
        visit_overrides: settings of every visit a job may choose (:data:`scripts.fl.overrides.JOB_SETTINGS`).
        workspace: simulator workspace.
        job_root: where ``export()`` writes the job folder.
        site_settings: participant -> more of its simulated settings (keys, policy, limits; see :py:func:`simulate`).
        job_args: more arguments of :py:func:`tdgan_job`.
    """

    def __init__(
        self,
        data_root: str,
        output_dir: str,
        order: Sequence[str],
        visit_overrides: Mapping[str, Any] | None = None,
        workspace: str | None = None,
        job_root: str | None = None,
        site_settings: Mapping[str, Mapping[str, Any]] | None = None,
        **job_args: Any,
    ) -> None:
        self.data_root = data_root
        self.output_dir = output_dir
        self.order = list(order)
        self.visit_overrides = dict(visit_overrides or {})
        self.workspace = workspace
        self.job_root = job_root
        self.site_settings = dict(site_settings or {})
        self.job_args = job_args

    def run(self) -> list[str]:
        """Run the job in the simulator; returns the hand-off paths in order (see :py:func:`simulate`)."""
        return simulate(
            self.data_root,
            self.output_dir,
            self.visit_overrides,
            self.order,
            self.workspace,
            site_settings=self.site_settings,
            **self.job_args,
        )

    def export(self) -> str:
        """Write the job folder (see :py:func:`export`); returns its path."""
        if not self.job_root:
            raise ValueError("export needs job_root (where to write the job folder).")
        path = export(self.order, self.job_root, self.output_dir, self.visit_overrides, **self.job_args)
        logger.info(f"NVFlare job written to {path}")
        return path


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 4 or sys.argv[1] != "allow" or sys.argv[2] not in ROLES:
        sys.exit(
            "usage: python -m scripts.fl.job allow server|site|simulator <participant workspace> [...]\n"
            "  writes the exact class paths of the bundle's FLARE components that role builds into "
            "<workspace>/local/resources.json (server: the relay; site: the visit executor; simulator: both)."
        )
    for ws in sys.argv[3:]:
        print(f"allowed {bundle_allow_list(sys.argv[2])} in {allow_bundle_components(ws, sys.argv[2])}")
