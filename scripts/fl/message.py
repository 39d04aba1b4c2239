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
"""A hand-off as an NVFlare message: generator weights as the parameters, everything else in the metadata, checked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from scripts.handoff import PAYLOAD_KEYS, Handoff, HandoffError, check_payload, payload_digest, verify_handoff

__all__ = [
    "META_KEY",
    "CHAIN_KEY",
    "handoff_to_message",
    "message_to_handoff",
    "is_first_message",
    "describe_message",
]

META_KEY = "tdgan_handoff"
"""The metadata key of a hand-off message; NVFlare adds its own keys (job id, site name) beside it."""

CHAIN_KEY = "tdgan_chain"
"""The metadata key of the sites' signature chain (:py:mod:`scripts.fl.site`), when the federation signs."""

_BODY_KEYS = tuple(k for k in PAYLOAD_KEYS if k != "generator") + ("sha256",)
"""The hand-off fields in the metadata: the payload but the generator (which travels as the parameters), and its
sha256."""


def handoff_to_message(handoff: Handoff) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a hand-off into what an NVFlare ``FLModel`` carries.

    The parameters are the generator's state dict (plain CPU torch tensors, nothing else: the PyTorch exchange path
    drops what is not a tensor). The metadata holds the rest under :py:data:`META_KEY`: network settings,
    preprocessing, registry, label bank (uint8 label-map tensors, never images), visit history, versions, the sha256
    of the whole payload, so that the receiver can tell a corrupted generator from the one that was sent. What
    authenticates it is the sites' signature chain, added beside it under :py:data:`CHAIN_KEY` by the site
    (:py:func:`scripts.fl.site.sign_link`).

    Returns:
        ``(params, meta)``.

    Raises:
        HandoffError: the hand-off is malformed (nothing malformed is sent).
    """
    payload = handoff.payload()
    check_payload(payload, "hand-off to send")
    digest = payload_digest(payload)
    params = payload.pop("generator")
    return params, {META_KEY: {**payload, "sha256": digest}}


def is_first_message(params: Mapping[str, Any] | None, meta: Mapping[str, Any] | None) -> bool:
    """True for the relay's opening message (no generator yet: the first site starts from scratch)."""
    return not params and not (meta or {}).get(META_KEY)


def message_to_handoff(
    params: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    source: str,
    authenticate: Callable[[str, int], str] | None = None,
) -> Handoff:
    """Rebuild and check the hand-off that a message carries, through the same contract as a hand-off file.

    The metadata must hold exactly the hand-off fields; the payload rebuilt from them and the parameters then goes
    through :py:func:`scripts.handoff.verify_handoff`: format version, sizes within the reader's limits, the sha256
    its writer computed, ``authenticate`` (the signature chain, when this participant checks one) before the
    structure is parsed, and the whole structure (generator tensors of exactly the declared network, uint8 label
    maps of registered centers, JSON-only visit records, ...). Without ``authenticate`` it is read with one line
    saying it is unauthenticated.

    Args:
        params: the message's parameters.
        meta: the message's metadata.
        source: who sent it, for error messages (e.g. ``"task data received by site center_b"``).
        authenticate: see :py:func:`scripts.handoff.verify_handoff`.

    Raises:
        HandoffError: anything above does not hold (the message is refused, the site or the relay fails).
    """
    body = (meta or {}).get(META_KEY)
    if not isinstance(body, Mapping):
        raise HandoffError(
            f"{source}: no hand-off in the message metadata (expected key {META_KEY!r}, got keys {sorted(meta or {})})."
        )
    if set(body) != set(_BODY_KEYS):
        raise HandoffError(
            f"{source}: hand-off metadata must hold exactly {list(_BODY_KEYS)}, got {sorted(map(str, body))}."
        )
    payload = {k: body[k] for k in PAYLOAD_KEYS if k != "generator"}
    payload["generator"] = dict(params or {})
    return verify_handoff(payload, body["sha256"], None, source, authenticate=authenticate, file_key=False)


def describe_message(params: Mapping[str, Any] | None, meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a message carries, without values: every tensor's name, dtype and shape, and the metadata keys."""

    def tensors(prefix: str, obj: Any, out: dict[str, Any]) -> None:
        if isinstance(obj, torch.Tensor):
            out[prefix] = {"dtype": str(obj.dtype), "shape": list(obj.shape)}
        elif isinstance(obj, Mapping):
            for k, v in obj.items():
                tensors(f"{prefix}/{k}" if prefix else str(k), v, out)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                tensors(f"{prefix}/{i}", v, out)
        elif type(obj).__module__ == "numpy":
            out[prefix] = {"dtype": f"numpy {getattr(obj, 'dtype', '')}", "shape": list(getattr(obj, "shape", ()))}

    found: dict[str, Any] = {}
    tensors("params", dict(params or {}), found)
    tensors("meta", dict(meta or {}), found)
    return {"meta_keys": sorted(str(k) for k in (meta or {})), "tensors": found}
