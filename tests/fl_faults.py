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
"""Faults injected on the wire in tests of the federated relay: an NVFlare filter that corrupts the generator."""

from __future__ import annotations

from nvflare.apis.dxo import from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable


class CorruptGenerator(Filter):
    """Task-data filter of a site: adds ``delta`` to one weight of the generator the site receives (if any).

    Args:
        delta: added to the first element of the first parameter tensor.
    """

    def __init__(self, delta: float = 0.5) -> None:
        super().__init__()
        self.delta = delta

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        """Corrupt the first parameter of a non-empty generator."""
        dxo = from_shareable(shareable)
        if not dxo.data:
            return shareable
        key = next(iter(dxo.data))
        weight = dxo.data[key].clone()
        weight.view(-1)[0] += self.delta
        dxo.data[key] = weight
        self.log_warning(fl_ctx, f"test fault: corrupted {key} of the generator in transit")
        return dxo.update_shareable(shareable)
