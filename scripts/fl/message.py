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

from collections.abc import Mapping
from typing import Any

import torch

from scripts.handoff import FORMAT, FORMAT_VERSION, Handoff, HandoffError, payload_digest

__all__ = ["META_KEY", "handoff_to_message", "message_to_handoff", "is_first_message", "describe_message"]

META_KEY = "tdgan_handoff"
"""The one metadata key of a hand-off message; NVFlare adds its own keys (job id, site name) beside it."""

_BODY_KEYS = ("format", "format_version", "network", "registry", "label_bank", "visits", "versions", "sha256")


def handoff_to_message(handoff: Handoff) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a hand-off into what an NVFlare ``FLModel`` carries.

    The parameters are the generator's state dict (plain CPU torch tensors, nothing else: the PyTorch exchange path
    drops what is not a tensor). The metadata holds the rest under :py:data:`META_KEY`: network settings, registry,
    label bank (uint8 label-map tensors, never images), visit history, versions, and the sha256 of the whole payload,
    so that the receiver can tell a corrupted generator from the one that was sent.

    Returns:
        ``(params, meta)``.
    """
    payload = handoff.payload()
    digest = payload_digest(payload)
    params = payload.pop("generator")
    return params, {META_KEY: {**payload, "sha256": digest}}


def is_first_message(params: Mapping[str, Any] | None, meta: Mapping[str, Any] | None) -> bool:
    """True for the relay's opening message (no generator yet: the first site starts from scratch)."""
    return not params and not (meta or {}).get(META_KEY)


def _expected_shapes(network: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the generator that ``network`` describes (built on the meta device: no memory)."""
    from scripts.networks import TDGANGenerator

    with torch.device("meta"):
        generator = TDGANGenerator(**network)
    return {k: tuple(v.shape) for k, v in generator.state_dict().items()}


def _check_generator(params: Mapping[str, Any], network: Mapping[str, int], source: str) -> None:
    not_tensors = sorted(k for k, v in params.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise HandoffError(
            f"{source}: generator parameters must be torch tensors, got "
            f"{[f'{k}: {type(params[k]).__name__}' for k in not_tensors[:5]]}."
        )
    try:
        expected = _expected_shapes(network)
    except (TypeError, ValueError) as e:
        raise HandoffError(f"{source}: network settings {dict(network)} do not describe a TDGAN generator: {e}") from e
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    wrong = [
        f"{k}: {tuple(params[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in params and tuple(params[k].shape) != expected[k]
    ]
    not_float = [f"{k}: {params[k].dtype}" for k in expected if k in params and not params[k].is_floating_point()]
    if missing or unexpected or wrong or not_float:
        raise HandoffError(
            f"{source}: the parameters are not the weights of the generator {dict(network)}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}, "
            f"not floating {not_float[:5]}."
        )


def _check_label_bank(bank: Any, network: Mapping[str, int], registry: list, source: str) -> None:
    if not isinstance(bank, Mapping):
        raise HandoffError(
            f"{source}: the label bank must be a mapping center -> label maps, got {type(bank).__name__}."
        )
    names = {e.get("name") for e in registry if isinstance(e, Mapping)}
    for name, maps in bank.items():
        if name not in names:
            raise HandoffError(f"{source}: label bank holds maps of {name!r}, which is not in the registry {names}.")
        ndim = network["spatial_dims"] + 2
        if not isinstance(maps, torch.Tensor) or maps.dtype != torch.uint8 or maps.ndim != ndim or maps.shape[1] != 1:
            what = f"{maps.dtype} {tuple(maps.shape)}" if isinstance(maps, torch.Tensor) else type(maps).__name__
            raise HandoffError(
                f"{source}: label bank of {name!r} must be uint8 label maps (N, 1, *spatial) with {ndim} dims, "
                f"got {what}."
            )
        if maps.numel() and int(maps.max()) >= network["num_classes"]:
            raise HandoffError(
                f"{source}: label bank of {name!r} holds values up to {int(maps.max())}, but label maps have "
                f"{network['num_classes']} classes (is it an image?)."
            )


def message_to_handoff(params: Mapping[str, Any] | None, meta: Mapping[str, Any] | None, source: str) -> Handoff:
    """Rebuild and check the hand-off that a message carries.

    Checks: the metadata holds exactly the hand-off fields; the parameters are torch tensors with exactly the names,
    shapes and floating dtypes of the generator the network settings describe; the label bank holds uint8 label
    maps of registered centers only; and the sha256 of the rebuilt payload equals the one its writer computed.

    Args:
        params: the message's parameters.
        meta: the message's metadata.
        source: who sent it, for error messages (e.g. ``"task data received by site center_b"``).

    Raises:
        HandoffError: anything above does not hold (the message is refused, the site or the relay fails).
    """
    body = (meta or {}).get(META_KEY)
    if not isinstance(body, Mapping):
        raise HandoffError(
            f"{source}: no hand-off in the message metadata (expected key {META_KEY!r}, got keys {sorted(meta or {})})."
        )
    if set(body) != set(_BODY_KEYS):
        raise HandoffError(f"{source}: hand-off metadata must hold exactly {list(_BODY_KEYS)}, got {sorted(body)}.")
    if body["format"] != FORMAT or body["format_version"] != FORMAT_VERSION:
        raise HandoffError(
            f"{source}: format {body['format']!r} v{body['format_version']}, expected {FORMAT!r} v{FORMAT_VERSION}."
        )
    params = dict(params or {})
    _check_generator(params, body["network"], source)
    _check_label_bank(body["label_bank"], body["network"], body["registry"], source)
    handoff = Handoff(
        generator=params,
        network=dict(body["network"]),
        registry=list(body["registry"]),
        label_bank=dict(body["label_bank"]),
        visits=list(body["visits"]),
        versions=dict(body["versions"]),
    )
    digest = payload_digest(handoff.payload())
    if digest != body["sha256"]:
        raise HandoffError(
            f"{source}: the generator and metadata received do not match the sha256 their sender computed "
            f"(sent {str(body['sha256'])[:12]}..., received {digest[:12]}...): corrupted in transit or altered."
        )
    return handoff


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
