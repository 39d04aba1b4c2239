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
"""What a federated job may choose of a site's visit: an allow-list of plain training settings, each typed and ranged.

A deny-list of config syntax cannot be made safe (``train#inferer#_target_`` = ``os.system`` is a plain string in a
plain key), so the job chooses only among the top-level plain settings of ``configs/train.json`` listed in
:data:`JOB_SETTINGS`; every other key, every ``#`` path, every expression and every component is refused at the site
before any config is parsed. The site's own configs decide everything else (data folders, device, outputs, code).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scripts.data.augmentation import paired_augmentation
from scripts.data.label_maps import SETTINGS as LABEL_MAP_SETTINGS
from scripts.reminding import REMINDING_SOURCES
from scripts.trainer import GAN_MODES

__all__ = ["JOB_SETTINGS", "SITE_KEYS", "Setting", "OverrideError", "job_overrides"]

SITE_KEYS = ("bundle_root", "dataset_dir", "center_dirs", "handoff_in", "handoff_out", "output_dir", "checkpoint_dir")
"""Set by the site for each visit; never taken from the job (the server's own sequence config may hold them: the
server drops them before it builds the job)."""


class OverrideError(ValueError):
    """A visit setting from the federated job that the site does not accept."""


@dataclass(frozen=True)
class Setting:
    """One setting the job may choose: its JSON kind and its allowed range.

    Attributes:
        kind: ``"int"``, ``"float"``, ``"bool"``, ``"enum"``, ``"int_list"``, ``"object"`` or ``"class_weights"``
            (null, or a JSON object of at most 64 class indices ``"0"``-``"255"`` -> a number in (0, ``high``]).
        low: smallest allowed number (ints, floats, list items).
        high: largest allowed number.
        low_open: ``low`` itself is excluded (e.g. a learning rate > 0).
        choices: the allowed values of an ``enum``.
        length: allowed list lengths of an ``int_list``.
        keys: the allowed keys of an ``object`` (a JSON object of keyword settings of one bundle function; each
            value a finite number, a boolean or a short list of them; the function checks the values itself).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[Any, ...] = ()
    length: tuple[int, ...] = ()
    keys: tuple[str, ...] = ()

    def expected(self) -> str:
        """The rule in words, for messages."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "enum":
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        if self.kind == "class_weights":
            return (
                f'null or an object of class indices to weights, e.g. {{"3": 10}}, each weight > 0 and <= {self.high:g}'
            )
        if self.kind == "object":
            return f"an object with keys among {', '.join(self.keys)}, each a number, a boolean or a list of numbers"
        low = f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.kind == "int_list":
            return f"a list of {' or '.join(map(str, self.length))} integers, each {low} and <= {self.high:g}"
        return f"{'an integer' if self.kind == 'int' else 'a number'} {low} and <= {self.high:g}"

    def _number_ok(self, value: Any, integer: bool) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float) if not integer else int):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` (as parsed from JSON) is allowed."""
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "enum":
            return any(value is c or (type(value) is type(c) and value == c) for c in self.choices)
        if self.kind == "class_weights":
            return value is None or (
                isinstance(value, dict)
                and 0 < len(value) <= 64
                and all(_class_index(k) is not None and self._number_ok(v, integer=False) for k, v in value.items())
            )
        if self.kind == "object":
            return (
                isinstance(value, dict)
                and len(value) <= len(self.keys)
                and all(k in self.keys and _plain_value(v) for k, v in value.items())
            )
        if self.kind == "int_list":
            return (
                isinstance(value, list)
                and len(value) in self.length
                and all(self._number_ok(v, integer=True) for v in value)
            )
        return self._number_ok(value, integer=self.kind == "int")

    def normalise(self, value: Any) -> Any:
        """The value as the visit config expects it (an integral number for a float setting becomes a float)."""
        if self.kind == "class_weights":
            return None if value is None else {str(_class_index(k)): float(v) for k, v in value.items()}
        if self.kind == "object":
            return {k: list(v) if isinstance(v, list) else v for k, v in value.items()}
        return float(value) if self.kind == "float" else list(value) if self.kind == "int_list" else value


def _class_index(key: Any) -> int | None:
    """A label class index 0-255 written as JSON object keys are (decimal digits only), else None."""
    if not isinstance(key, str) or not key.isascii() or not key.isdigit() or len(key) > 3 or int(key) > 255:
        return None
    return int(key)


def _plain_value(value: Any) -> bool:
    """A finite number, a boolean, or a list of at most 16 of them."""

    def scalar(v: Any) -> bool:
        return isinstance(v, bool) or (isinstance(v, (int, float)) and math.isfinite(v))

    return scalar(value) or (isinstance(value, list) and len(value) <= 16 and all(map(scalar, value)))


def _keywords(function: Any, skip: tuple[str, ...]) -> tuple[str, ...]:
    """The keyword settings of a bundle function (the keys its settings object may hold)."""
    return tuple(p for p in inspect.signature(function).parameters if p not in skip)


def _int(low: int, high: int) -> Setting:
    return Setting("int", low, high)


def _float(low: float, high: float, low_open: bool = False) -> Setting:
    return Setting("float", low, high, low_open)


_BOOL = Setting("bool")

JOB_SETTINGS: dict[str, Setting] = {
    "seed": _int(0, 2**31 - 1),
    "spatial_dims": _int(2, 3),
    "spatial_size": Setting("int_list", 4, 4096, length=(2, 3)),
    "num_classes": _int(2, 255),  # label maps travel as uint8
    "image_channels": _int(1, 16),
    "max_centers": _int(1, 1024),
    "ngf": _int(1, 1024),
    "num_blocks": _int(0, 64),
    "ndf": _int(1, 1024),
    "d_layers": _int(1, 8),
    "batch_size": _int(1, 4096),
    "epochs_constant": _int(0, 100_000),
    "epochs_decay": _int(0, 100_000),
    "lr": _float(0.0, 1.0, low_open=True),
    "gan_mode": Setting("enum", choices=tuple(GAN_MODES)),
    "l1_weight": _float(0.0, 1e6),
    "l1_class_weights": Setting("class_weights", 0.0, 1000.0, low_open=True),
    "perceptual_weight": _float(0.0, 1e6),
    "reminding_source": Setting("enum", choices=tuple(REMINDING_SOURCES)),
    "reminding_weight": _float(0.0, 1e6),
    "label_bank_size": _int(1, 100_000),
    "augment": _BOOL,
    "shared_discriminator": _BOOL,
    "amp": _BOOL,
    "amp_dtype": Setting("enum", choices=(None, "bfloat16", "float16")),
    "teacher_cache": _BOOL,
    "channels_last": _BOOL,
    "compile": _BOOL,
    "checkpoint_interval": _int(0, 100_000),
    "tensorboard_sample_interval": _int(1, 100_000),  # display only: the samples stay in the site's own logs
    "num_workers": _int(0, 64),
    "label_map_settings": Setting("object", keys=LABEL_MAP_SETTINGS),
    "augmentation_settings": Setting(
        "object", keys=_keywords(paired_augmentation, ("spatial_dims", "spatial_size", "image_key", "label_key"))
    ),
}
"""The ONE allow-list of visit settings a federated job may choose (top-level plain keys of ``configs/train.json``;
``tests/test_security.py`` checks each against that file's defaults)."""


def _no_constant(name: str) -> Any:
    raise OverrideError(f"--overrides holds {name}; expected finite numbers only.")


def job_overrides(overrides: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The visit settings a job chose, checked against :data:`JOB_SETTINGS` (key, kind and range).

    Args:
        overrides: a JSON object (the client script's ``--overrides``) or the mapping itself (the server, before it
            builds the job).

    Returns:
        the settings, normalised (floats as floats).

    Raises:
        OverrideError: not a JSON object, or any key that is not in :data:`JOB_SETTINGS` (a ``#`` path, a site key,
            anything else) or any value of the wrong kind or out of range; the message is one line.
    """
    if overrides is None or isinstance(overrides, str):
        try:
            overrides = json.loads(overrides or "{}", parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            raise OverrideError(f"--overrides is not JSON ({e}); expected a JSON object of visit settings.") from e
    if not isinstance(overrides, Mapping):
        raise OverrideError(f"--overrides must be a JSON object of visit settings, got {type(overrides).__name__}.")
    allowed = ", ".join(JOB_SETTINGS)
    checked: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in SITE_KEYS:
            raise OverrideError(f"job override {key!r}: set by the site itself, never by the job; remove it.")
        setting = JOB_SETTINGS.get(key) if isinstance(key, str) else None
        if setting is None:
            raise OverrideError(
                f"job override {key!r}: not a setting a job may choose (only plain training settings: {allowed}); "
                "the site's own configs decide the rest. Remove it from the job."
            )
        if not setting.accepts(value):
            raise OverrideError(
                f"job override {key!r}={json.dumps(value, default=repr)[:80]}: expected {setting.expected()}; "
                "fix it in the job."
            )
        checked[key] = setting.normalise(value)
    return checked
