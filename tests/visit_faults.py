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
"""Faults injected into a real ``python -m monai.bundle run`` visit, and the command lines of the tests that use them.

Run as ``python tests/visit_faults.py ACTION@POINT -- run --config_file ...``: the process installs the fault and
then runs MONAI's bundle command line (``runpy``, as ``python -m monai.bundle`` does) with the remaining arguments.
The product code carries no test hook; the fault is a patch of this process only.

ACTION: ``kill`` (SIGKILL itself: nothing is cleaned up), ``hold`` (sleep until killed, holding what it holds),
``fill`` (fill the file system of the checkpoint folder, so that the next write there fails with ENOSPC).
POINT: ``checkpoint:K`` (just after epoch K's checkpoint is in place), ``iteration:N`` (just after the N-th training
step, counted in this process), ``handoff`` (halfway through writing the hand-off's bytes, before its rename).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def visit_command(config: str | Path | None = None, fault: str | None = None, **settings: Any) -> list[str]:
    """``python -m monai.bundle run`` of ``config`` (default configs/train.json) with ``--key value`` settings (as a
    user types them), through the fault wrapper when ``fault`` is given."""
    cmd = [sys.executable]
    cmd += [str(Path(__file__).resolve()), fault, "--"] if fault else ["-m", "monai.bundle"]
    cmd += ["run", "--config_file", str(config or REPO / "configs" / "train.json")]
    cmd += ["--meta_file", str(REPO / "configs" / "metadata.json"), "--bundle_root", str(REPO)]
    cmd += ["--logging_file", str(REPO / "configs" / "logging.conf")]
    for key, value in settings.items():
        cmd += [f"--{key}", str(value).replace(" ", "") if isinstance(value, (list, tuple)) else str(value)]
    return cmd


def _act(action: str, folder: Path | None = None) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hold":
        print(f"visit_faults: holding (pid {os.getpid()})", file=sys.stderr, flush=True)
        time.sleep(600)
    elif action == "fill" and folder is not None:
        with open(folder.parent / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
    else:
        raise ValueError(f"unknown fault action {action!r}")


def install(action: str, point: str) -> None:
    """Patch this process so that ``action`` happens at ``point`` (see the module docstring)."""

    import scripts.resume
    import scripts.trainer

    where, _, n = point.partition(":")
    if where == "checkpoint":
        save = scripts.resume.PrivateDiskSaver.__call__

        def saved(self: Any, checkpoint: Any, filename: str, metadata: Any = None) -> None:
            save(self, checkpoint, filename, metadata)
            if filename.endswith(f"epoch={int(n)}.pt"):
                _act(action, Path(self.dirname))

        scripts.resume.PrivateDiskSaver.__call__ = saved
    elif where == "iteration":
        step = scripts.trainer.TDGANTrainer._iteration
        count = [0]

        def stepped(self: Any, engine: Any, batchdata: Any) -> Any:
            out = step(self, engine, batchdata)
            count[0] += 1
            if count[0] == int(n):
                _act(action)
            return out

        scripts.trainer.TDGANTrainer._iteration = stepped
    elif where == "handoff":
        import scripts.handoff

        fdopen = os.fdopen

        class HalfWritten:
            """The hand-off's temporary file: the first write puts half of the bytes on disk, then the fault."""

            def __init__(self, f: Any) -> None:
                self.f = f

            def __enter__(self) -> HalfWritten:
                return self

            def __exit__(self, *exc: Any) -> None:
                self.f.close()

            def __getattr__(self, name: str) -> Any:
                return getattr(self.f, name)

            def write(self, data: Any) -> int:
                data = bytes(data)
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                os.fsync(self.f.fileno())
                _act(action)
                return self.f.write(data[len(data) // 2 :])

        def opened(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))  # the hand-off's temporary file only
            f = fdopen(fd, mode, *args, **kwargs)
            return HalfWritten(f) if "w" in mode and name.startswith(".handoff.pt.") else f

        scripts.handoff.os.fdopen = opened
    else:
        raise ValueError(f"unknown fault point {point!r}")


def main() -> None:
    """``visit_faults.py ACTION@POINT -- <monai.bundle arguments>``."""
    fault, separator, *rest = sys.argv[1:]
    if separator != "--" or "@" not in fault:
        raise SystemExit(f"usage: {sys.argv[0]} ACTION@POINT -- run --config_file ...")
    from importlib.util import find_spec

    # argv[0] as `python -m monai.bundle` has it, so that the bundle's command-line error hook installs as it does there
    sys.argv = [find_spec("monai.bundle.__main__").origin, *rest]
    action, point = fault.split("@", 1)
    install(action, point)
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
