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
"""Site side of the relay: NVFlare's Client API executor, pinned to this bundle copy's own client script."""

from __future__ import annotations

from pathlib import Path

from nvflare.app_common.executors.client_api_executor import ClientAPIExecutor
from nvflare.client.config import ExchangeFormat

__all__ = ["CLIENT_SCRIPT", "VisitExecutor"]

CLIENT_SCRIPT = str(Path(__file__).resolve().with_name("client.py"))
"""The Client API script this executor runs: the one in the site's own copy of the bundle."""


class VisitExecutor(ClientAPIExecutor):
    """Runs ``scripts/fl/client.py`` of the site's own bundle copy in the site's client process (in-process Client
    API), with PyTorch tensors on the wire. The job chooses only the script's arguments (plain visit settings, which
    the script checks); it cannot name another script, and the job carries no code. A site allows exactly this class
    (``scripts.fl.executor.VisitExecutor``, see :py:func:`scripts.fl.job.bundle_allow_list`) in its
    ``class_allow_list`` as an exact path, never NVFlare's general ``ClientAPIExecutor`` (imported here, so a prefix
    such as ``scripts.fl`` would admit it as ``scripts.fl.executor.ClientAPIExecutor``), which runs whatever script or
    command a job names.

    Args:
        task_script_args: the client script's arguments (see :py:func:`scripts.fl.client.parse_args`).
    """

    def __init__(self, task_script_args: str = "") -> None:
        super().__init__(
            execution_mode="in_process",
            task_script_path=CLIENT_SCRIPT,
            task_script_args=task_script_args,
            params_exchange_format=ExchangeFormat.PYTORCH,
            server_expected_format=ExchangeFormat.PYTORCH,
        )
