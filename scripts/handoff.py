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
"""The hand-off: the one file that leaves a center after a visit, and the only thing that crosses a center boundary."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import math
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scripts.files import atomic_write, center_name_problem, owner_only_problem, private_dirs
from scripts.networks import CONDITIONING_MODES

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KEY_ENV",
    "NETWORK_CHOICES",
    "NETWORK_SETTINGS",
    "PAYLOAD_KEYS",
    "Handoff",
    "HandoffError",
    "federation_key",
    "handoff_signature",
    "load_handoff",
    "save_handoff",
    "payload_digest",
    "check_payload",
    "check_configuration",
    "verify_handoff",
    "Limits",
    "LIMITS",
    "set_limits",
    "set_chain_check",
]

logger = logging.getLogger(__name__)

FORMAT = "tdgan-handoff"
FORMAT_VERSION = 2
"""v2: records the preprocessing (spatial size, intensity range), may be signed, and is checked as a whole contract.
v1 files are refused (they lack the preprocessing): re-make them with this bundle."""

KEY_ENV = "TDGAN_FEDERATION_KEY_FILE"
"""Environment variable naming the federation key file (a path, never the key itself); unset = hand-offs unsigned."""

NETWORK_SETTINGS: dict[str, tuple[int, int]] = {
    "spatial_dims": (2, 3),
    "num_classes": (2, 255),
    "max_centers": (1, 1024),
    "out_channels": (1, 16),
    "ngf": (1, 1024),
    "num_blocks": (0, 64),
    "num_downsampling": (0, 8),
}
"""The integer generator settings a hand-off records (``TDGANGenerator.settings``), each in an inclusive range."""

NETWORK_CHOICES: dict[str, tuple[str, ...]] = {"conditioning": CONDITIONING_MODES}
"""The string generator settings a hand-off records, each one of the listed values."""

PAYLOAD_KEYS = (
    "format",
    "format_version",
    "network",
    "preprocessing",
    "registry",
    "generator",
    "label_bank",
    "visits",
    "versions",
)
"""Exactly the keys of a hand-off payload, nothing else."""

PREPROCESSING_KEYS = ("spatial_size", "intensity_range")
MIN_KEY_BYTES = 32
_SIGNATURE_TAG = b"tdgan-handoff-hmac-sha256\0"
_MAX_DEPTH = 32


@dataclass(frozen=True)
class Limits:
    """What a reader accepts before it builds anything from a hand-off: checked on the file's size and archive
    directory before ``torch.load``, and on the tensors' sizes before the checksum and the structure check.

    A site lowers them in its settings (``limits`` in ``tdgan_site.json``, docs/federated.md).

    Attributes:
        max_file_bytes: largest hand-off file (and largest total tensor bytes of a message).
        max_spatial_size: largest recorded spatial size, per dimension.
        max_voxels: largest recorded spatial size, as the product of its dimensions.
        max_bank_maps: most label maps a label bank may hold per center.
        max_tensors: most generator tensors.
    """

    max_file_bytes: int = 2 * 1024**3
    max_spatial_size: int = 4096
    max_voxels: int = 2**27
    max_bank_maps: int = 4096
    max_tensors: int = 4096

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"hand-off limit {name}={value!r}; expected a positive integer.")


_CHAIN_CHECK: Callable[[Any, str, int, str], str] | None = None


def set_chain_check(check: Callable[[Any, str, int, str], str] | None) -> None:
    """Authenticate hand-off files that carry a signature chain with ``check(chain, sha256, visits, source)`` (a
    federated site sets it: the hand-off it received and verified is read again by its visit)."""
    global _CHAIN_CHECK
    _CHAIN_CHECK = check


LIMITS = Limits()
"""The limits in force in this process (:py:func:`set_limits` changes them)."""


def set_limits(limits: Limits) -> None:
    """Make ``limits`` the ones every hand-off read in this process is checked against (a site's settings)."""
    global LIMITS
    LIMITS = limits


class HandoffError(ValueError):
    """A hand-off file is unreadable, tampered with, incomplete, unauthenticated, or incompatible with this
    configuration."""


@dataclass
class Handoff:
    """What a visit passes on.

    Attributes:
        generator: generator weights (state dict, CPU tensors).
        network: the settings that shaped the generator (``TDGANGenerator.settings``).
        registry: ordered list of ``{"name": center, "code": int}`` in order of first visit.
        label_bank: center name -> uint8 label maps (N, 1, *spatial) used for ``bank`` reminding; label maps only.
        visits: one summary per visit so far (centers, steps, losses, ...), oldest first; JSON values only.
        versions: software versions of the last writer.
        preprocessing: how the training images were shaped: ``spatial_size`` (list of ints) and ``intensity_range``
            (the generator's output range, ``[-1.0, 1.0]``), so that no consumer silently uses another.
    """

    generator: dict[str, torch.Tensor]
    network: dict[str, int]
    registry: list[dict[str, Any]] = field(default_factory=list)
    label_bank: dict[str, torch.Tensor] = field(default_factory=dict)
    visits: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def codes(self) -> dict[str, int]:
        """Center name -> center code, in registry order."""
        return {entry["name"]: int(entry["code"]) for entry in self.registry}

    @property
    def spatial_size(self) -> list[int]:
        """The spatial size the generator was trained at."""
        return list(self.preprocessing["spatial_size"])

    def payload(self) -> dict[str, Any]:
        """The plain dict stored on disk (tensors, str, int, float, lists and dicts only)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "network": _plain_json(self.network),
            "preprocessing": _plain_json(self.preprocessing),
            "registry": _plain_json(self.registry),
            "generator": {k: _plain_cpu(v) for k, v in self.generator.items()},
            "label_bank": {k: _plain_cpu(v) for k, v in self.label_bank.items()},
            "visits": _plain_json(self.visits),
            "versions": {str(k): str(v) for k, v in self.versions.items()},
        }


def _plain_json(obj: Any) -> Any:
    """``obj`` reduced to JSON types (str-enums become str), so the file loads with ``weights_only=True``.

    Raises:
        HandoffError: ``obj`` holds something that is not a JSON value (a tensor inside ``visits``, ...).
    """
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as e:
        raise HandoffError(f"a hand-off field holds a value that is not plain JSON: {e}") from e


def _plain_cpu(t: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous, plain (not MetaTensor) CPU copy, loadable with ``weights_only=True``.

    Raises:
        HandoffError: ``t`` is not a tensor.
    """
    if not isinstance(t, torch.Tensor):
        raise HandoffError(f"a hand-off tensor field holds a {type(t).__name__}, expected a torch tensor.")
    return t.detach().as_subclass(torch.Tensor).cpu().contiguous()


def _update_digest(h: Any, obj: Any) -> None:
    """Feed a canonical, unambiguous serialisation of ``obj`` (nested dict/list/tensor/scalars) into ``h``: every
    container is prefixed by its length, so no two different structures serialise alike."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=str):
            h.update(json.dumps(str(key)).encode())
            _update_digest(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _update_digest(h, item)
    else:
        h.update(json.dumps(obj, sort_keys=True).encode())


def payload_digest(payload: Mapping[str, Any]) -> str:
    """sha256 (hex) over the payload's content: tensors by dtype, shape and bytes; the rest as JSON.

    Raises:
        HandoffError: the payload holds something that has no canonical form (not a tensor or a JSON value).
    """
    h = hashlib.sha256()
    try:
        _update_digest(h, payload)
    except (TypeError, ValueError, RecursionError) as e:
        raise HandoffError(f"the payload holds a value that is neither a tensor nor plain JSON: {e}") from e
    return h.hexdigest()


def federation_key() -> bytes | None:
    """The federation key, read from the file named by ``$TDGAN_FEDERATION_KEY_FILE``; None when it is unset.

    The file holds at least 32 bytes of secret (e.g. ``openssl rand -hex 32``; surrounding white space is ignored)
    and is readable by its owner only.

    Raises:
        HandoffError: the variable names a missing, empty, too short, or group/world-readable file.
    """
    name = os.environ.get(KEY_ENV, "").strip()
    if not name:
        return None
    path = Path(name)
    if not path.is_file():
        raise HandoffError(f"federation key file {path} (${KEY_ENV}): not found; point {KEY_ENV} at the key file.")
    problem = owner_only_problem(path)
    if problem:
        raise HandoffError(f"federation key file {path}: {problem}.")
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise HandoffError(
            f"federation key file {path}: {len(key)} bytes of key, expected at least {MIN_KEY_BYTES} "
            f"(make one with: openssl rand -hex 32 > {path})."
        )
    return key


def handoff_signature(digest: str, key: bytes) -> str:
    """HMAC-SHA256 (hex) of a payload digest under the federation key."""
    return hmac.new(key, _SIGNATURE_TAG + digest.encode(), hashlib.sha256).hexdigest()


def _json_problem(obj: Any, where: str, depth: int = 0) -> str | None:
    """Where ``obj`` holds something that is not a JSON value (str, int, float, bool, None, list, str-keyed dict)."""
    if depth > _MAX_DEPTH:
        return f"{where} is nested more than {_MAX_DEPTH} levels deep"
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return None
    if isinstance(obj, list):
        return next((p for i, v in enumerate(obj) if (p := _json_problem(v, f"{where}[{i}]", depth + 1))), None)
    if isinstance(obj, dict):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            return f"{where} has a key {bad[0]!r} that is not a string"
        return next((p for k, v in obj.items() if (p := _json_problem(v, f"{where}[{k!r}]", depth + 1))), None)
    return f"{where} is a {type(obj).__name__}, not a JSON value"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _keys_problem(obj: Any, keys: Sequence[str], where: str) -> str | None:
    if not isinstance(obj, dict):
        return f"{where} is a {type(obj).__name__}; expected a dict with keys {list(keys)}"
    if set(obj) != set(keys):
        extra, missing = sorted(map(str, set(obj) - set(keys))), sorted(set(keys) - set(obj))
        return f"{where} must hold exactly {list(keys)}: extra {extra}, missing {missing}"
    return None


def _expected_state(network: Mapping[str, int]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of the state dict of the generator ``network`` describes (built on the meta device:
    no memory, no weights)."""
    from scripts.networks import TDGANGenerator

    with torch.device("meta"):
        generator = TDGANGenerator(**network)
    return {k: (tuple(v.shape), v.dtype) for k, v in generator.state_dict().items()}


def _structure_problem(payload: Any) -> str | None:
    """The first way ``payload`` is not a hand-off payload of this format, or None (see :py:func:`check_payload`)."""
    problem = _keys_problem(payload, PAYLOAD_KEYS, "the payload")
    if problem:
        return problem
    network = payload["network"]
    problem = _keys_problem(network, [*NETWORK_SETTINGS, *NETWORK_CHOICES], "'network'")
    if problem:
        return problem
    for k, (low, high) in NETWORK_SETTINGS.items():
        if not _is_int(network[k]) or not low <= network[k] <= high:
            return f"network setting {k}={network[k]!r}; expected an integer in {low}..{high}"
    for k, choices in NETWORK_CHOICES.items():
        if network[k] not in choices:
            return f"network setting {k}={network[k]!r}; expected one of {list(choices)}"
    dims = network["spatial_dims"]

    pre = payload["preprocessing"]
    problem = _keys_problem(pre, PREPROCESSING_KEYS, "'preprocessing'")
    if problem:
        return problem
    size, step = pre["spatial_size"], 2 ** network["num_downsampling"]
    if not (
        isinstance(size, list) and len(size) == dims and all(_is_int(v) and v >= step and v % step == 0 for v in size)
    ):
        return f"preprocessing spatial_size={size!r}; expected {dims} positive integers divisible by {step}"
    if max(size) > LIMITS.max_spatial_size or math.prod(size) > LIMITS.max_voxels:
        return (
            f"preprocessing spatial_size={size!r} exceeds this reader's limits (at most {LIMITS.max_spatial_size} "
            f"per dimension and {LIMITS.max_voxels} voxels)"
        )
    lo_hi = pre["intensity_range"]
    if not (isinstance(lo_hi, list) and len(lo_hi) == 2 and all(map(_is_number, lo_hi)) and lo_hi[0] < lo_hi[1]):
        return f"preprocessing intensity_range={lo_hi!r}; expected [low, high] with low < high"

    registry = payload["registry"]
    if not isinstance(registry, list) or not registry:
        return f"'registry' is {type(registry).__name__} {registry!r:.80}; expected a non-empty list"
    for i, entry in enumerate(registry):
        problem = _keys_problem(entry, ("name", "code"), f"registry entry {i}")
        if problem:
            return problem
        if center_name_problem(entry["name"]):
            return f"registry entry {i}: {center_name_problem(entry['name'])}"
        if not _is_int(entry["code"]) or entry["code"] != i:
            return f"registry entry {i} ({entry['name']!r}) has code {entry['code']!r}; expected codes 0..n-1 in order"
    names = [e["name"] for e in registry]
    if len(set(names)) != len(names):
        return f"registry names {names} repeat a center; expected each center once"
    if len(names) > network["max_centers"]:
        return f"registry holds {len(names)} centers but the generator has max_centers={network['max_centers']}"

    visits = payload["visits"]
    if not isinstance(visits, list) or not visits:
        return "'visits' must be a non-empty list of visit records"
    problem = _json_problem(visits, "'visits'")
    if problem:
        return problem + " (a visit record holds JSON values only)"
    codes = {e["name"]: e["code"] for e in registry}
    for i, visit in enumerate(visits):
        centers = visit.get("centers") if isinstance(visit, dict) else None
        if not isinstance(centers, list) or not centers or any(center_name_problem(c) for c in centers):
            bad = next((center_name_problem(c) for c in centers or [] if center_name_problem(c)), None)
            return f"visit {i + 1} has centers {centers!r:.120}; expected a non-empty list of center names" + (
                f" ({bad})" if bad else ""
            )
        unregistered = [c for c in centers if c not in codes]
        if unregistered:
            return f"visit {i + 1} names centers {unregistered} that are not in the registry {names}"
        if "codes" in visit and visit["codes"] != [codes[c] for c in centers]:
            registered = [codes[c] for c in centers]
            return f"visit {i + 1} records codes {visit['codes']!r:.80} for {centers}; the registry says {registered}"
    first_seen = list(dict.fromkeys(c for v in visits for c in v["centers"]))
    if first_seen != names:
        return (
            f"the registry {names} is not the centers in order of first visit {first_seen} (renamed, dropped or "
            "reordered)"
        )

    versions = payload["versions"]
    if not isinstance(versions, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in versions.items()
    ):
        return "'versions' must map strings to strings"

    bank = payload["label_bank"]
    if not isinstance(bank, dict):
        return f"'label_bank' is a {type(bank).__name__}; expected a dict center -> label maps"
    for name, maps in bank.items():
        if name not in codes:
            return f"label bank holds maps of {name!r}, which is not in the registry {names}"
        shape = (1, *size)
        if not (type(maps) is torch.Tensor and maps.dtype == torch.uint8 and maps.layout == torch.strided):
            what = f"{maps.dtype} tensor" if isinstance(maps, torch.Tensor) else type(maps).__name__
            return f"label bank of {name!r} is a {what}; expected uint8 label maps (N, {', '.join(map(str, shape))})"
        if maps.ndim != dims + 2 or tuple(maps.shape[1:]) != shape:
            return f"label bank of {name!r} has shape {tuple(maps.shape)}; expected (N, {', '.join(map(str, shape))})"
        if maps.numel() and int(maps.max()) >= network["num_classes"]:
            return (
                f"label bank of {name!r} holds values up to {int(maps.max())}, but label maps have "
                f"{network['num_classes']} classes (is it an image?)"
            )

    params = payload["generator"]
    if not isinstance(params, dict):
        return f"'generator' is a {type(params).__name__}; expected the generator's state dict"
    not_tensors = [f"{k}: {type(v).__name__}" for k, v in params.items() if type(v) is not torch.Tensor]
    if not_tensors:
        return f"generator parameters must be torch tensors, got {not_tensors[:5]}"
    try:
        expected = _expected_state(network)
    except (TypeError, ValueError, RuntimeError) as e:
        return f"network settings {network} do not describe a TDGAN generator: {e}"
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    wrong = [
        f"{k}: {params[k].dtype} {tuple(params[k].shape)} (expected {expected[k][1]} {expected[k][0]})"
        for k in expected
        if k in params and (tuple(params[k].shape), params[k].dtype) != expected[k]
    ]
    if missing or unexpected or wrong:
        return (
            f"the parameters are not the weights of the generator {network}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong dtype or shape {wrong[:5]}"
        )
    strided = [k for k, v in params.items() if v.layout != torch.strided]
    if strided:
        return f"generator parameters {strided[:5]} are not dense tensors"
    not_finite = [k for k, v in params.items() if not bool(torch.isfinite(v).all())]
    if not_finite:
        return f"generator parameters {not_finite[:5]} hold NaN or Inf"
    return None


def check_payload(payload: Any, source: str) -> Handoff:
    """THE structural check of a hand-off payload, the one every reader goes through before building anything.

    Exact key sets at every level (:data:`PAYLOAD_KEYS`; ``network``: :data:`NETWORK_SETTINGS`, each an integer in
    range; ``preprocessing``: spatial size of ``spatial_dims`` integers, intensity range); registry entries
    ``{"name": valid center name, "code": int}`` with codes 0..n-1 in order, unique names, n <= ``max_centers``; visit
    records of JSON values only, each naming registered centers (with matching ``codes`` when recorded), and the
    registry equal to the centers in order of first visit; versions str -> str; label bank keyed by registered
    names, uint8 (N, 1, *spatial_size) below ``num_classes``; generator tensors with exactly the names, shapes and
    dtypes of the generator ``network`` describes (checked on the meta device), finite. Nothing else anywhere.

    Args:
        payload: the payload (from a file or a message).
        source: what it is, to start the message with (e.g. ``"hand-off /x/h.pt"``).

    Returns:
        the hand-off.

    Raises:
        HandoffError: the first thing that does not hold, in one line.
    """
    problem = _structure_problem(payload)
    if problem:
        raise HandoffError(f"{source}: {problem}; refused (re-make the hand-off with this bundle).")
    return Handoff(
        generator=dict(payload["generator"]),
        network=dict(payload["network"]),
        registry=[dict(e) for e in payload["registry"]],
        label_bank=dict(payload["label_bank"]),
        visits=list(payload["visits"]),
        versions=dict(payload["versions"]),
        preprocessing={k: list(v) for k, v in payload["preprocessing"].items()},
    )


def _size_problem(payload: Mapping[str, Any]) -> str | None:
    """The first way the payload's tensors exceed :data:`LIMITS` (count, bytes, label-bank maps), or None: sizes
    only, so that nothing is hashed or built from a payload too large to be a hand-off."""
    generator, bank = payload.get("generator"), payload.get("label_bank")
    tensors = [*(generator.values() if isinstance(generator, Mapping) else [])]
    not_tensors = [f"{k}: {type(v).__name__}" for k, v in (generator or {}).items() if type(v) is not torch.Tensor]
    if not_tensors:
        return f"generator parameters must be torch tensors, got {not_tensors[:5]}"
    if len(tensors) > LIMITS.max_tensors:
        return f"{len(tensors)} generator tensors, more than this reader's limit {LIMITS.max_tensors}"
    if isinstance(bank, Mapping):
        for name, maps in bank.items():
            if isinstance(maps, torch.Tensor) and maps.ndim and maps.shape[0] > LIMITS.max_bank_maps:
                return (
                    f"label bank of {str(name)[:40]!r} holds {maps.shape[0]} maps, more than this reader's limit "
                    f"{LIMITS.max_bank_maps} per center"
                )
        tensors += list(bank.values())
    total = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    if total > LIMITS.max_file_bytes:
        return f"{total} bytes of tensors, more than this reader's limit {LIMITS.max_file_bytes}"
    return None


def verify_handoff(
    payload: Any,
    sha256: Any,
    signature: Any,
    source: str,
    authenticate: Callable[[str, int], str] | None = None,
    file_key: bool = True,
) -> Handoff:
    """Check a received hand-off, cheapest and most trust-giving checks first: format and version, sizes against
    :data:`LIMITS` (nothing is hashed or built from an oversized payload), the sha256 (corruption), the key's
    signature when a key is configured (authenticity, before the structure is parsed), then the whole structure
    (:py:func:`check_payload`: pure checks, nothing is built from it).

    A hand-off that nothing authenticated (no key, and no ``authenticated`` proof from the caller) is read with one
    warning line saying so.

    Args:
        payload: the payload.
        sha256: the digest its writer stored.
        signature: the HMAC its writer stored, or None.
        source: what it is, for messages.
        authenticate: called with the verified sha256 and the number of visit records before the structure is
            parsed (e.g. the federation's signature chain); returns what authenticated it, raises if nothing did.
        file_key: check ``signature`` against the hand-off file key (:py:func:`federation_key`); False for federated
            messages, which are authenticated by the sites' signatures instead.

    Raises:
        HandoffError: any check fails (one line).
    """
    if not isinstance(payload, dict):
        raise HandoffError(f"{source}: not a TDGAN hand-off (the payload is a {type(payload).__name__}).")
    fmt, version = payload.get("format"), payload.get("format_version")
    if fmt != FORMAT:
        raise HandoffError(f"{source}: format {fmt!r}, expected {FORMAT!r}: not a TDGAN hand-off.")
    if version != FORMAT_VERSION:
        raise HandoffError(
            f"{source}: hand-off format v{version}, this bundle reads v{FORMAT_VERSION} only (v{FORMAT_VERSION} "
            "records the spatial size and intensity range and can be signed); re-make it by rerunning the visit that "
            "wrote it with this bundle."
        )
    problem = _size_problem(payload)
    if problem:
        raise HandoffError(f"{source}: {problem}; refused before reading it (limits: docs/security.md).")
    try:
        digest = payload_digest(payload)
    except HandoffError as e:
        raise HandoffError(f"{source}: {e}; refused.") from e
    if not isinstance(sha256, str) or not hmac.compare_digest(digest, sha256):
        raise HandoffError(
            f"{source}: checksum mismatch (stored sha256 {str(sha256)[:12]}..., content {digest[:12]}...): "
            "modified or corrupted after its writer computed it (on disk or in transit)."
        )
    authenticated = None
    if authenticate is not None:
        visits = payload.get("visits")
        authenticated = authenticate(digest, len(visits) if isinstance(visits, list) else -1)
    key = federation_key() if file_key else None
    if key is not None:
        if signature is None:
            raise HandoffError(
                f"{source}: unsigned, but a hand-off key is configured (${KEY_ENV}); refused: only hand-offs "
                "signed with that key are accepted (re-make it where the key is)."
            )
        if not isinstance(signature, str) or not hmac.compare_digest(handoff_signature(digest, key), signature):
            raise HandoffError(
                f"{source}: the signature does not match the hand-off key (${KEY_ENV}); refused: it was altered "
                "or signed with another key."
            )
        authenticated = f"the hand-off key ${KEY_ENV}"
    elif signature is not None and file_key:
        logger.warning(f"{source}: signed, but no hand-off key is configured (${KEY_ENV}): signature NOT checked.")
    handoff = check_payload(payload, source)
    if authenticated is None:
        logger.warning(
            f"{source}: UNAUTHENTICATED (no key configured: ${KEY_ENV} for files, site keys for a federation): "
            "checksum and structure hold, but anyone who could write it could have forged it."
        )
    return handoff


def check_configuration(
    handoff: Handoff,
    source: str,
    network: Mapping[str, int] | None = None,
    spatial_size: Sequence[int] | None = None,
    intensity_range: Sequence[float] | None = None,
) -> None:
    """Check that a hand-off fits the configuration that is about to use it (each given setting must match).

    Raises:
        HandoffError: one line naming every setting that differs.
    """
    diffs = [
        f"{k}={handoff.network.get(k)!r} in the hand-off but {v!r} in this configuration"
        for k, v in (network or {}).items()
        if handoff.network.get(k) != v
    ]
    if spatial_size is not None and list(spatial_size) != handoff.spatial_size:
        diffs.append(
            f"spatial_size={handoff.spatial_size} in the hand-off but {list(spatial_size)} in this configuration"
        )
    recorded = [float(v) for v in handoff.preprocessing["intensity_range"]]
    if intensity_range is not None and [float(v) for v in intensity_range] != recorded:
        diffs.append(f"intensity_range={recorded} in the hand-off but {list(intensity_range)} in this configuration")
    if diffs:
        raise HandoffError(
            f"{source}: generator settings do not match: " + "; ".join(diffs) + " (use the hand-off's settings)."
        )


def save_handoff(handoff: Handoff, path: str | os.PathLike, chain: Sequence[Mapping[str, Any]] | None = None) -> str:
    """Write a hand-off atomically and owner-only (0o600 file; folders it creates 0o700), whatever the umask.

    The payload is checked first (:py:func:`check_payload`: nothing malformed is written), serialised in memory,
    written to a temporary file in the same folder, synced, and renamed over ``path``: a failure at any point removes
    the temporary file and leaves what was at ``path`` before untouched. Signed with the federation key when one is
    configured (:py:func:`federation_key`).

    Args:
        handoff: what to write.
        path: destination file.
        chain: the federation's signature chain that came with it (:py:mod:`scripts.fl.site`), kept beside the
            payload so the file can be audited later; None: none.

    Returns:
        the sha256 of the payload, also stored in the file.

    Raises:
        HandoffError: the hand-off is malformed.
        DiskFullError: the disk is full ("no space left on device while writing <path>; free space and rerun").
    """
    path = Path(path)
    payload = handoff.payload()
    check_payload(payload, f"hand-off to write to {path}")
    digest = payload_digest(payload)
    record: dict[str, Any] = {"payload": payload, "sha256": digest}
    key = federation_key()
    if key is not None:
        record["hmac"] = handoff_signature(digest, key)
    if chain is not None:
        record["chain"] = _plain_json(list(chain))
    buffer = io.BytesIO()
    torch.save(record, buffer)
    private_dirs(path.parent)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))
    return digest


def _archive_problem(path: Path) -> str | None:
    """The first way the file could make ``torch.load`` allocate more than :data:`LIMITS` allow, or None.

    Read from the file's size and its zip directory only (nothing is unpickled): a hand-off is a ``torch.save`` zip
    archive of stored (uncompressed) members, so its size bounds what loading it allocates; a compressed member (a
    small file that expands), too many members or a file over ``max_file_bytes`` are refused.
    """
    size = path.stat().st_size
    if size > LIMITS.max_file_bytes:
        return f"{size} bytes, more than this reader's limit {LIMITS.max_file_bytes}"
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        return f"not a readable hand-off file (corrupted, truncated, or not a torch.save archive: {e})"
    if len(members) > 4 * LIMITS.max_tensors + 16:
        return f"{len(members)} archive members, more than a hand-off within this reader's limits holds"
    packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
    if packed:
        return f"compressed archive members {packed[:3]} (a hand-off stores its tensors uncompressed)"
    unpacked = sum(m.file_size for m in members)
    if unpacked > LIMITS.max_file_bytes:
        return f"members of {unpacked} bytes, more than this reader's limit {LIMITS.max_file_bytes}"
    return None


def load_handoff(
    path: str | os.PathLike,
    expected_network: Mapping[str, int] | None = None,
    spatial_size: Sequence[int] | None = None,
    intensity_range: Sequence[float] | None = None,
    written_here: bool = False,
) -> Handoff:
    """Read and check a hand-off file: the whole contract (:py:func:`verify_handoff`) and, for each setting given,
    the configuration that will use it (:py:func:`check_configuration`).

    Loaded with ``torch.load(weights_only=True)``, so no arbitrary object is unpickled.

    Args:
        path: the hand-off file.
        expected_network: the settings of the generator this configuration builds; each must match.
        spatial_size: this configuration's spatial size; must match the recorded one.
        intensity_range: this configuration's image intensity range; must match the recorded one.
        written_here: the file was written by this process moments ago (a visit's own output, read to be sent).

    A file that holds the federation's signature chain is authenticated by it where this process checks one
    (:py:func:`set_chain_check`: a federated site, for the hand-off it received).

    Raises:
        HandoffError: unreadable file, wrong format or version, checksum mismatch (tampered or corrupted), missing or
            wrong signature (when a federation key is configured), malformed content, or settings that differ.
    """
    path = Path(path)
    source = f"hand-off {path}"
    if not path.is_file():
        raise HandoffError(f"{source}: file not found.")
    problem = _archive_problem(path)
    if problem:
        raise HandoffError(f"{source}: {problem}; refused before reading it (limits: docs/security.md).")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else "")
        raise HandoffError(
            f"{source}: not a readable hand-off file (corrupted, truncated, or holding objects other than "
            f"tensors and plain values): {type(e).__name__}: {why}"
        ) from e
    if not isinstance(raw, dict) or not {"payload", "sha256"} <= set(raw) <= {"payload", "sha256", "hmac", "chain"}:
        keys = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise HandoffError(
            f"{source}: not a TDGAN hand-off (expected keys 'payload', 'sha256' and 'hmac', got {keys})."
        )
    authenticate = None
    if written_here:

        def authenticate(digest: str, visits: int) -> str:
            return "its writer, this process"

    elif "chain" in raw and _CHAIN_CHECK is not None:
        chain_check = _CHAIN_CHECK

        def authenticate(digest: str, visits: int) -> str:
            return chain_check(raw["chain"], digest, visits, source)

    handoff = verify_handoff(raw["payload"], raw["sha256"], raw.get("hmac"), source, authenticate)
    check_configuration(handoff, source, expected_network, spatial_size, intensity_range)
    return handoff
