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
"""Strict booleans: every on/off setting a user can pass is true/false/1/0 (any case) or a real bool, else refused."""

from __future__ import annotations

from typing import Any

__all__ = ["FlagError", "flag"]

_WORDS = {"true": True, "1": True, "false": False, "0": False}


class FlagError(ValueError):
    """A setting that must be on or off got another value."""


def flag(value: Any, name: str) -> bool:
    """``value`` as a bool, parsed strictly.

    ``python -m monai.bundle run`` (through ``fire``) passes ``--x False`` as a bool but ``--x false`` as the string
    ``'false'``, which Python counts as true; every consumer of an on/off setting goes through here instead of
    ``bool()`` or a bare ``if``.

    Args:
        value: a bool, the integers 0/1, or one of the strings ``true``, ``false``, ``1``, ``0`` in any case (spaces
            around are ignored).
        name: the setting's name, for the error message.

    Returns:
        the boolean.

    Raises:
        FlagError: any other value (``'maybe'``, ``'no'``, ``2``, ``None``, ...).
    """
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_, without importing numpy
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _WORDS:
        return _WORDS[value.strip().lower()]
    raise FlagError(f"{name} must be true or false (also 1 or 0, any case), got {value!r}; pass e.g. --{name} false.")
