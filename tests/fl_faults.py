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
"""Faults injected on the wire in tests of the federated relay: an NVFlare filter that forges the generator."""

from __future__ import annotations

from nvflare.apis.dxo import from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable


class ForgeGenerator(Filter):
    """Task-data filter of a site that stands for a forging server: scales the generator it receives by ``factor``
    and recomputes the hand-off's sha256, as anyone on the path can; only a signature can tell.

    Args:
        factor: multiplies every floating-point weight.
    """

    def __init__(self, factor: float = 1e30) -> None:
        super().__init__()
        self.factor = factor

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        """Forge a non-empty generator and its checksum."""
        from scripts.fl.message import META_KEY
        from scripts.handoff import payload_digest

        dxo = from_shareable(shareable)
        if not dxo.data:
            return shareable
        dxo.data = {k: v * self.factor if v.is_floating_point() else v for k, v in dxo.data.items()}
        body = dxo.meta[META_KEY]
        body["sha256"] = payload_digest({**{k: v for k, v in body.items() if k != "sha256"}, "generator": dxo.data})
        self.log_warning(fl_ctx, "test fault: forged the generator and its checksum in transit")
        return dxo.update_shareable(shareable)
