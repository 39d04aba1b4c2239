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
"""A real NVFlare POC deployment for tests: a server and its sites as processes on loopback, each in its own workspace.

``nvflare poc prepare`` provisions the workspaces (TLS identities, an admin kit) under a temporary folder, with
``HOME`` pointed there too, so nothing is written to the user's ``~/.nvflare``. The harness then moves every
participant to a free loopback port (the server listens on ``localhost`` only), starts each participant's own
``startup/sub_start.sh --once`` as a process of its own session with its own environment (its working folder is its
workspace, where NVFlare also runs its job processes), and talks to the server through FLARE's admin API with the
admin kit: submit, bounded waits, abort. ``stop()`` runs ``nvflare poc stop`` with a timeout and then kills whatever
it started that still runs: the participants' process groups, and the job processes NVFlare starts in sessions of
their own, found by a token in their environment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

ADMIN = "admin@nvidia.com"
"""The project admin of the kit ``nvflare poc prepare`` writes."""
PROJECT = "example_project"
TOKEN_ENV = "TDGAN_POC_RUN"
"""Environment variable every process of one deployment inherits (NVFlare's job launchers copy the environment):
how :py:meth:`PocDeployment.stop` finds job processes that NVFlare started in sessions of their own."""
_DROPPED_ENV = ("TDGAN_SITE_CONFIG", "TDGAN_CENTER_DIR", "NVFLARE_POC_WORKSPACE", "NVFL_WORKSPACE", "PYTHONPATH")


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PocDeployment:
    """A POC deployment of ``sites`` and a server, for one test module.

    Args:
        root: a fresh folder for everything (POC workspace, ``HOME``, console logs).
        sites: site names.
        bundle_root: the checkout under test: every participant imports ``scripts`` from it (``PYTHONPATH``).
        site_env: per-participant extra environment (``server`` or a site name).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        sites: Sequence[str],
        bundle_root: str | os.PathLike,
        site_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.sites = list(sites)
        self.bundle_root = Path(bundle_root).resolve()
        self.site_env = {k: dict(v) for k, v in (site_env or {}).items()}
        self.token = uuid.uuid4().hex
        self.home = self.root / "home"
        self.poc = self.root / "poc"
        self.logs = self.root / "console"
        self.port: int | None = None
        self.processes: dict[str, subprocess.Popen] = {}
        self.session: Any = None

    @property
    def prod(self) -> Path:
        """The provisioned kits: ``<prod>/server``, ``<prod>/<site>``, ``<prod>/admin@nvidia.com``."""
        return self.poc / PROJECT / "prod_00"

    def workspace(self, name: str) -> Path:
        """A participant's workspace (``server`` or a site name)."""
        return self.prod / name

    def env(self, name: str | None = None) -> dict[str, str]:
        """The environment of the CLI (``name`` None) or of one participant: this deployment's ``HOME`` and POC
        workspace, the test's Python first on ``PATH`` (the kits run ``python3``), the bundle on ``PYTHONPATH``, one
        thread per process, the deployment's token, and the participant's own extra variables."""
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        env.update(
            HOME=str(self.home),
            NVFLARE_POC_WORKSPACE=str(self.poc),
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            PYTHONPATH=str(self.bundle_root),
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
            **{TOKEN_ENV: self.token},
        )
        env.update(self.site_env.get(name or "", {}))
        return env

    def nvflare(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the ``nvflare`` command line of the test's environment against this deployment."""
        exe = Path(sys.executable).with_name("nvflare")
        cmd = [str(exe) if exe.is_file() else shutil.which("nvflare") or "nvflare", *args]
        return subprocess.run(
            cmd, env=self.env(), cwd=self.root, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def prepare(self) -> None:
        """Provision the workspaces and move the federation to a free loopback port.

        Raises:
            RuntimeError: ``nvflare poc prepare`` failed.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        done = self.nvflare("poc", "prepare", "-c", *self.sites, "--force")
        if done.returncode != 0 or not (self.workspace("server") / "startup" / "fed_server.json").is_file():
            raise RuntimeError(f"nvflare poc prepare failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr}")
        self.port = free_port()
        self._edit(self.workspace("server") / "startup" / "fed_server.json", self._server_port)
        for site in self.sites:
            self._edit(self.workspace(site) / "startup" / "fed_client.json", self._client_port)
        for kit in self.prod.glob("*@*"):
            self._edit(kit / "startup" / "fed_admin.json", self._admin_port)

    @staticmethod
    def _edit(path: Path, change: Any) -> None:
        config = json.loads(path.read_text())
        change(config)
        path.write_text(json.dumps(config, indent=2))

    def _server_port(self, config: dict) -> None:
        for server in config["servers"]:
            server["service"]["target"] = f"localhost:{self.port}"  # a loopback host: the server binds it only
            server["admin_port"] = self.port

    def _client_port(self, config: dict) -> None:
        for server in config["servers"]:
            server["service"]["target"] = f"localhost:{self.port}"

    def _admin_port(self, config: dict) -> None:
        config["admin"]["host"] = "localhost"
        config["admin"]["port"] = self.port

    def start(self, timeout: float = 120) -> None:
        """Start the server, then every site, each as ``startup/sub_start.sh --once`` in its workspace, and wait
        until an admin session sees all sites connected.

        Raises:
            TimeoutError: not all sites connected within ``timeout`` s (or a participant exited).
        """
        self.logs.mkdir(parents=True, exist_ok=True)
        for name in ["server", *self.sites]:
            ws = self.workspace(name)
            with open(self.logs / f"{name}.txt", "ab") as log:
                self.processes[name] = subprocess.Popen(
                    ["bash", str(ws / "startup" / "sub_start.sh"), "--once"],
                    cwd=ws,
                    env=self.env(name),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stop() can end it and its children at once
                )
        deadline = time.monotonic() + timeout
        self.session = self._connect(deadline)
        while True:
            connected = {c.name for c in self.session.get_connected_client_list()}
            if connected >= set(self.sites):
                return
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"sites {sorted(set(self.sites) - connected)} did not connect in {timeout:.0f} s.")
            time.sleep(0.5)

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.logs / f"{name}.txt").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"POC participant {name} exited with {process.returncode}:\n{tail}")

    def _connect(self, deadline: float) -> Any:
        from nvflare.fuel.flare_api.flare_api import new_secure_session

        while True:
            self._check_alive()
            try:
                return new_secure_session(ADMIN, str(self.prod / ADMIN), timeout=5)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def submit(self, job_folder: str | os.PathLike) -> str:
        """Submit a job folder; returns its job id."""
        return self.session.submit_job(str(job_folder))

    def wait(self, job_id: str, timeout: float) -> dict:
        """Wait for a job to end; returns its meta (``status``: ``FINISHED:COMPLETED``, ``FINISHED:ABORTED``...).

        Raises:
            TimeoutError: the job did not end within ``timeout`` s (it is aborted first).
        """
        from nvflare.fuel.flare_api.api_spec import MonitorReturnCode

        rc, meta = self.session.monitor_job_and_return_job_meta(job_id, timeout=timeout, poll_interval=0.5)
        if rc != MonitorReturnCode.JOB_FINISHED:
            try:
                self.session.abort_job(job_id)
            except Exception:
                pass  # the deployment's stop() ends it anyway
            raise TimeoutError(f"job {job_id} did not end within {timeout:.0f} s (aborted).")
        return meta

    def job_log(self, name: str, job_id: str) -> str:
        """What a participant logged for one job (its job process's ``log.txt``), or '' if it logged nothing."""
        path = self.workspace(name) / job_id / "log.txt"
        return path.read_text(errors="replace") if path.is_file() else ""

    def log(self, name: str) -> str:
        """A participant's own log (its parent process, all jobs) and its console output."""
        parts = [self.workspace(name) / "log.txt", self.logs / f"{name}.txt"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.is_file())

    def _ours(self) -> list[psutil.Process]:
        """Every live process that carries this deployment's token, and the participants this harness started."""
        found = {}
        for p in psutil.process_iter():
            try:
                if p.pid != os.getpid() and p.environ().get(TOKEN_ENV) == self.token:
                    found[p.pid] = p
            except (psutil.Error, OSError):
                continue
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    found.setdefault(process.pid, psutil.Process(process.pid))
                except psutil.Error:
                    pass
        return list(found.values())

    def stop(self, timeout: float = 60) -> list[str]:
        """End the deployment: close the admin session, ``nvflare poc stop`` (bounded), then SIGTERM and SIGKILL
        to every process group this deployment started, and to each of its processes still alive.

        Returns:
            what had to be killed (``name pid``), for the test to report; empty when the POC stop was enough.
        """
        if self.session is not None:
            try:
                self.session.close()
            except Exception:
                pass
            self.session = None
        if self.port is not None:
            try:
                self.nvflare("poc", "stop", timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while self._ours() and time.monotonic() < deadline:
            time.sleep(0.5)
        killed = []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            remaining = self._ours()
            for p in remaining:
                try:
                    killed.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
                    group = os.getpgid(p.pid)
                    if group != os.getpgrp():  # a group this deployment created: the process and its children
                        os.killpg(group, sig)
                    else:
                        p.send_signal(sig)
                except (ProcessLookupError, PermissionError, psutil.Error):
                    pass
            psutil.wait_procs(remaining, timeout=5)
        for process in self.processes.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        return killed

    def __enter__(self) -> PocDeployment:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
