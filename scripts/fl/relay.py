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
"""Server side of the relay: the opening message, and a check and a hand-off file for every result a site returns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.fl_constant import ReservedKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.abstract.learnable_persistor import LearnablePersistor
from nvflare.app_common.abstract.model import ModelLearnable, ModelLearnableKey, make_model_learnable
from nvflare.app_common.abstract.shareable_generator import ShareableGenerator
from nvflare.app_common.workflows.cyclic_ctl import CyclicController as _CyclicController
from nvflare.fuel.utils import fobs

from scripts.files import check_inside, make_private, private_dirs
from scripts.fl.message import CHAIN_KEY, META_KEY, describe_message, handoff_to_message, message_to_handoff
from scripts.fl.site import SiteSettings, chain_check, load_site_settings
from scripts.handoff import HandoffError, load_handoff, save_handoff, set_limits
from scripts.sequence import handoff_name, write_summary

__all__ = ["HandoffPersistor", "HandoffRelay", "RelayController"]


def _register_tensor_decomposer() -> None:
    """Let the server (de)serialise torch tensors: the generator travels as tensors, never as numpy arrays."""
    from nvflare.app_opt.pt.decomposers import TensorDecomposer

    fobs.register(TensorDecomposer)


class HandoffPersistor(LearnablePersistor):
    """The relay's opening message: empty (the first site starts from scratch, as the local sequence does) or an
    existing hand-off file to continue from. The server keeps no model of its own: every visit's hand-off is written
    by :py:class:`HandoffRelay`, so ``save`` only logs.

    Args:
        initial_handoff: hand-off file to continue from (on the server's disk), or None to start from scratch.
    """

    def __init__(self, initial_handoff: str | None = None) -> None:
        super().__init__()
        self.initial_handoff = initial_handoff

    def load(self, fl_ctx: FLContext) -> ModelLearnable:
        """The opening learnable (empty, or the initial hand-off's generator and metadata)."""
        _register_tensor_decomposer()
        import scripts.networks  # noqa: F401 - imported now, not on the first hop (checks build the generator)

        if not self.initial_handoff:
            self.log_info(fl_ctx, "relay opens with no generator: the first site starts from scratch.")
            return make_model_learnable({}, {})
        params, meta = handoff_to_message(load_handoff(self.initial_handoff))
        self.log_info(fl_ctx, f"relay opens with the hand-off {self.initial_handoff}.")
        return make_model_learnable(params, meta)

    def save(self, learnable: ModelLearnable, fl_ctx: FLContext) -> None:
        """Nothing to do: each visit's hand-off is already on disk."""
        self.log_debug(fl_ctx, "hand-offs are written per visit by HandoffRelay.")


class HandoffRelay(ShareableGenerator):
    """Checks what each site returns and writes it as that visit's hand-off, where the local sequence writes them.

    For every result: it must come from the next site in ``order``, and the message must pass the hand-off contract
    (:py:func:`scripts.fl.message.message_to_handoff`: exact structure, generator tensors of the declared network,
    uint8 label maps, valid center names, matching sha256, and the sites' signature chain when the server has the
    federation file (:py:mod:`scripts.fl.site`; public keys only: the server can check but not forge)), hold
    exactly one visit more than the one sent and leave the registry and history it was sent unchanged; it is then
    written to ``<output_dir>/handoffs/visitNN_<center>.pt`` (a path checked to stay in ``handoffs/``, owner-only)
    and described (tensor names, dtypes,
    shapes; no values) in ``<output_dir>/fl_messages.jsonl``. After the last visit of the last round,
    ``<output_dir>/sequence.json`` is written in the shape of :py:class:`scripts.sequence.VisitSequence`'s. Any
    failed check raises, and the cyclic controller then stops the job: no later site trains on wrong weights, and no
    ``sequence.json`` claims a final hand-off.

    Args:
        output_dir: where ``handoffs/``, ``fl_messages.jsonl`` and ``sequence.json`` go (on the server).
        order: the site names in relay order (the controller's order).
        num_rounds: rounds of the relay.
        data_root: recorded in ``sequence.json`` when the centers are on one machine (simulator), else None.
    """

    def __init__(
        self, output_dir: str, order: Sequence[str], num_rounds: int = 1, data_root: str | None = None
    ) -> None:
        super().__init__()
        self.output_dir = str(output_dir)
        self.order = list(order)
        self.num_rounds = num_rounds
        self.data_root = data_root
        self._records: list[dict] = []
        self._sent_visits = 0
        self._sent_registry: list[dict] = []
        self._sent_history: list[dict] = []
        self._settings: SiteSettings | None = None

    def _server_settings(self) -> SiteSettings:
        """The server's own settings (``tdgan_site.json`` of its workspace, or ``$TDGAN_SITE_CONFIG``): the
        federation file (public keys only) and limits; the server never holds a signing key or a data folder."""
        if self._settings is None:
            self._settings = load_site_settings(None)
            set_limits(self._settings.limits)
        return self._settings

    def _log_message(self, entry: dict) -> None:
        path = Path(self.output_dir) / "fl_messages.jsonl"
        private_dirs(path.parent)
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        make_private(path)  # names the sites and the shapes of what they sent: owner-only, as the hand-offs

    def learnable_to_shareable(self, learnable: ModelLearnable, fl_ctx: FLContext) -> Shareable:
        """The task data for the next site: the last hand-off's generator and metadata, nothing else."""
        params = learnable[ModelLearnableKey.WEIGHTS] or {}
        meta = {k: v for k, v in (learnable[ModelLearnableKey.META] or {}).items() if k in (META_KEY, CHAIN_KEY)}
        self._sent_visits = len(meta[META_KEY]["visits"]) if meta else 0
        self._sent_registry = list(meta[META_KEY]["registry"]) if meta else []
        self._sent_history = list(meta[META_KEY]["visits"]) if meta else []
        self._log_message({"direction": "task", "visits_so_far": self._sent_visits, **describe_message(params, meta)})
        return DXO(data_kind=DataKind.WEIGHTS, data=params, meta=meta).to_shareable()

    def shareable_to_learnable(self, shareable: Shareable, fl_ctx: FLContext) -> ModelLearnable:
        """Check a site's result, write it as the visit's hand-off, and make it the next site's task data.

        Raises:
            HandoffError: the result is not a valid hand-off, or does not continue the one that was sent.
        """
        site = shareable.get_peer_prop(ReservedKey.IDENTITY_NAME, None) or "unknown site"
        dxo = from_shareable(shareable)
        self._log_message({"direction": "result", "site": site, **describe_message(dxo.data, dxo.meta)})
        source = f"result of site {site}"
        chain = (dxo.meta or {}).get(CHAIN_KEY)
        handoff = message_to_handoff(
            dxo.data, dxo.meta, source, chain_check(chain, self._server_settings(), fl_ctx.get_job_id(), source)
        )
        expected = self.order[len(self._records) % len(self.order)]
        if site != expected:
            raise HandoffError(
                f"result of site {site}: visit {len(self._records) + 1} belongs to site {expected} (relay order "
                f"{self.order}): a site was skipped or answered out of turn."
            )
        if len(handoff.visits) != self._sent_visits + 1:
            raise HandoffError(
                f"result of site {site}: the hand-off holds {len(handoff.visits)} visit(s), expected "
                f"{self._sent_visits + 1}: it does not continue the generator that was sent."
            )
        if handoff.registry[: len(self._sent_registry)] != self._sent_registry or handoff.visits[:-1] != (
            self._sent_history
        ):
            raise HandoffError(
                f"result of site {site}: the registry or visit history differs from the one sent (registry "
                f"{[e['name'] for e in handoff.registry]}, sent {[e['name'] for e in self._sent_registry]}): a site "
                "may only add its own visit; refused."
            )
        centers = list(handoff.visits[-1]["centers"])  # valid center names: checked by message_to_handoff
        index = len(self._records)
        folder = Path(self.output_dir) / "handoffs"
        path = check_inside(folder / f"{handoff_name(index, centers)}.pt", folder, f"result of site {site}: hand-off")
        digest = save_handoff(handoff, path, chain=chain)
        self._records.append({"centers": centers, "handoff": str(path), "site": site, "sha256": digest})
        self.log_info(fl_ctx, f"visit {index + 1}: hand-off of site {site} ({centers}) -> {path}")
        if len(self._records) == len(self.order) * self.num_rounds:
            self._write_summary()
        meta = {META_KEY: dxo.meta[META_KEY], **({CHAIN_KEY: chain} if chain is not None else {})}
        return make_model_learnable(dict(dxo.data), meta)  # forwarded as the site sent it: the server signs nothing

    def _write_summary(self) -> None:
        visits = [{"centers": r["centers"], "handoff": r["handoff"], "site": r["site"]} for r in self._records]
        path = Path(self.output_dir) / "sequence.json"
        write_summary(path, self.data_root, self.order, visits, engine="nvflare", num_rounds=self.num_rounds)


class RelayController(_CyclicController):
    """NVFlare's ``CyclicController``, except that a relay stopped by a failed or refused visit ends the job as
    failed. The stock controller logs the error, stops the workflow and lets the job finish as ``COMPLETED``, so an
    operator reading ``nvflare job list`` would not see that a site refused its task or the server refused a result;
    here the controller raises a system panic (the job ends ``ABNORMAL``), with the reason in one line."""

    def _process_result(self, client_task: Any, fl_ctx: FLContext) -> None:
        result = client_task.result
        rc = result.get_return_code() if isinstance(result, Shareable) else None
        before = self._last_learnable
        super()._process_result(client_task, fl_ctx)
        site = client_task.client.name
        if rc not in (ReturnCode.OK, ReturnCode.EARLY_TERMINATION):
            self.system_panic(f"relay stopped: the visit of site {site} failed or was refused ({rc}).", fl_ctx)
        elif rc == ReturnCode.OK and self._last_learnable is before:
            self.system_panic(f"relay stopped: the result of site {site} was refused (see the server log).", fl_ctx)
