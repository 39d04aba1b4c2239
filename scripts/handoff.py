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
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Handoff", "HandoffError", "load_handoff", "save_handoff", "payload_digest"]

FORMAT = "tdgan-handoff"
FORMAT_VERSION = 1


class HandoffError(ValueError):
    """A hand-off file is unreadable, tampered with, or incompatible with this configuration."""


@dataclass
class Handoff:
    """What a visit passes on.

    Attributes:
        generator: generator weights (state dict, CPU tensors).
        network: the settings that shaped the generator (``TDGANGenerator.settings``).
        registry: ordered list of ``{"name": center, "code": int}`` in order of first visit.
        label_bank: center name -> uint8 label maps (N, *spatial) used for ``bank`` reminding; label maps only.
        visits: one summary per visit so far (centers, steps, losses, ...), oldest first.
        versions: software versions of the last writer.
    """

    generator: dict[str, torch.Tensor]
    network: dict[str, int]
    registry: list[dict[str, Any]] = field(default_factory=list)
    label_bank: dict[str, torch.Tensor] = field(default_factory=dict)
    visits: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def codes(self) -> dict[str, int]:
        """Center name -> center code, in registry order."""
        return {entry["name"]: int(entry["code"]) for entry in self.registry}

    def payload(self) -> dict[str, Any]:
        """The plain dict stored on disk (tensors, str, int, float, lists and dicts only)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "network": _plain_json(self.network),
            "registry": _plain_json(self.registry),
            "generator": {k: _plain_cpu(v) for k, v in self.generator.items()},
            "label_bank": {k: _plain_cpu(v).to(torch.uint8) for k, v in self.label_bank.items()},
            "visits": _plain_json(self.visits),
            "versions": {str(k): str(v) for k, v in self.versions.items()},
        }


def _plain_json(obj: Any) -> Any:
    """``obj`` reduced to JSON types (str-enums become str), so the file loads with ``weights_only=True``."""
    return json.loads(json.dumps(obj))


def _plain_cpu(t: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous, plain (not MetaTensor) CPU copy, loadable with ``weights_only=True``."""
    return t.detach().as_subclass(torch.Tensor).cpu().contiguous()


def _update_digest(h: hashlib._Hash, obj: Any) -> None:
    """Feed a canonical serialisation of ``obj`` (nested dict/list/tensor/scalars) into ``h``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"D")
        for key in sorted(obj, key=str):
            h.update(json.dumps(str(key)).encode())
            _update_digest(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _update_digest(h, item)
    else:
        h.update(json.dumps(obj, sort_keys=True).encode())


def payload_digest(payload: dict[str, Any]) -> str:
    """sha256 (hex) over the payload's content: tensors by dtype, shape and bytes; the rest as JSON."""
    h = hashlib.sha256()
    _update_digest(h, payload)
    return h.hexdigest()


def save_handoff(handoff: Handoff, path: str | os.PathLike) -> str:
    """Write a hand-off atomically (temporary file in the same folder, then rename).

    Args:
        handoff: what to write.
        path: destination file.

    Returns:
        the sha256 of the payload, also stored in the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = handoff.payload()
    digest = payload_digest(payload)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"payload": payload, "sha256": digest}, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return digest


def load_handoff(path: str | os.PathLike, expected_network: dict[str, int] | None = None) -> Handoff:
    """Read and check a hand-off.

    Loaded with ``torch.load(weights_only=True)``, so no arbitrary object is unpickled.

    Args:
        path: the hand-off file.
        expected_network: the settings of the generator this configuration builds; when given, every setting must
            match the one recorded in the hand-off.

    Raises:
        HandoffError: unreadable file, wrong format, checksum mismatch (tampered or corrupted), or network settings
            that differ from ``expected_network``.
    """
    path = Path(path)
    if not path.is_file():
        raise HandoffError(f"hand-off {path}: file not found.")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else "")
        raise HandoffError(
            f"hand-off {path}: not a readable hand-off file (corrupted, truncated, or holding objects other than "
            f"tensors and plain values): {type(e).__name__}: {why}"
        ) from e
    if not isinstance(raw, dict) or "payload" not in raw or "sha256" not in raw:
        raise HandoffError(f"hand-off {path}: not a TDGAN hand-off (expected keys 'payload' and 'sha256').")
    payload = raw["payload"]
    if payload.get("format") != FORMAT or payload.get("format_version") != FORMAT_VERSION:
        raise HandoffError(
            f"hand-off {path}: format {payload.get('format')!r} v{payload.get('format_version')}, "
            f"expected {FORMAT!r} v{FORMAT_VERSION}."
        )
    digest = payload_digest(payload)
    if digest != raw["sha256"]:
        raise HandoffError(
            f"hand-off {path}: checksum mismatch (stored sha256 {raw['sha256'][:12]}..., content {digest[:12]}...): "
            "the file was modified or corrupted after it was written."
        )
    network = payload["network"]
    if expected_network is not None:
        diffs = [
            f"{k}={network.get(k)!r} in the hand-off but {v!r} in this configuration"
            for k, v in expected_network.items()
            if network.get(k) != v
        ]
        if diffs:
            raise HandoffError(f"hand-off {path}: generator settings do not match: " + "; ".join(diffs) + ".")
    return Handoff(
        generator=payload["generator"],
        network=network,
        registry=payload["registry"],
        label_bank=payload["label_bank"],
        visits=payload["visits"],
        versions=payload["versions"],
    )
