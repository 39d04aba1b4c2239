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
"""The command line's last word: a refusal prints one line, ``error: <what is wrong and what to do>``, not a traceback.

MONAI wraps every exception raised inside a config expression or component in ``RuntimeError: Failed to evaluate
...`` (``__cause__`` = the original), so a one-line refusal ends a ~70-line traceback. :py:func:`install` puts a
``sys.excepthook`` in front that walks the exception chain (``__cause__``, then ``__context__``) to the bundle's own
error and prints only its message; an error it does not know keeps Python's traceback. ``TDGAN_DEBUG=1`` shows the
full traceback always.

It is installed when the package is imported by ``python -m monai.bundle ...``: a config's ``"$import scripts"`` is
resolved before any other config item is evaluated, so errors raised while the config is parsed and initialised are
covered as well as those raised while it runs.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from types import TracebackType

__all__ = ["DEBUG_ENV", "install", "install_for_bundle_cli", "one_line_reason", "user_errors"]

DEBUG_ENV = "TDGAN_DEBUG"
"""Environment variable: set to 1 to see the full traceback of every error."""

_installed: Callable | None = None


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types whose message is, by contract, the whole story for the user: the bundle's own refusals
    (bad inputs, hand-offs, checkpoints and locks, booleans) and ``FileExistsError`` from writers that will not
    overwrite. Looked up among the modules already imported: an error of a module never imported cannot occur."""
    found: list[type[BaseException]] = [FileExistsError]
    for module, name in (
        ("scripts.data.checks", "InputError"),
        ("scripts.handoff", "HandoffError"),
        ("scripts.resume", "ResumeError"),
        ("scripts.flags", "FlagError"),
        ("scripts.files", "PathError"),
        ("scripts.data.label_maps", "LabelMapTooCloseError"),
        ("scripts.fl.overrides", "OverrideError"),
        ("scripts.privacy", "PrivacySettingError"),
    ):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first."""
    seen: list[BaseException] = []
    while exc is not None and all(exc is not s for s in seen):
        seen.append(exc)
        exc = exc.__cause__ if exc.__cause__ is not None else exc.__context__
    return seen


def one_line_reason(exc: BaseException) -> str | None:
    """The user-facing reason of ``exc``, or None when the chain holds no error the bundle knows.

    The outermost known error wins (it has the most context): one of :py:func:`user_errors`, or a full disk (an
    ``OSError`` with ``errno.ENOSPC`` anywhere in the chain).
    """
    known = user_errors()
    for e in _chain(exc):
        if isinstance(e, known):
            return str(e).strip() or type(e).__name__
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            where = f" while writing {e.filename}" if e.filename else ""
            return f"no space left on device{where}; free space and rerun."
    return None


def _hook(previous: Callable) -> Callable:
    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        reason = None if os.environ.get(DEBUG_ENV, "") not in ("", "0") else one_line_reason(exc)
        if reason is None:
            previous(exc_type, exc, tb)
            return
        sys.stderr.flush()
        print(f"({exc_type.__name__}; {DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        print(f"error: {reason}", file=sys.stderr, flush=True)

    return excepthook


def install() -> None:
    """Put the one-line reason in front of the current ``sys.excepthook`` (once)."""
    global _installed
    if _installed is not None and sys.excepthook is _installed:
        return
    _installed = _hook(sys.excepthook)
    sys.excepthook = _installed


def install_for_bundle_cli() -> bool:
    """:py:func:`install` when this process is ``python -m monai.bundle ...`` (also under ``torchrun``); a library
    user's interpreter keeps its tracebacks. Returns whether the hook is installed."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    argv0 = os.path.normpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if getattr(spec, "name", None) == "monai.bundle.__main__" or argv0.endswith(
        os.path.join("monai", "bundle", "__main__.py")
    ):
        install()
        return True
    return False
