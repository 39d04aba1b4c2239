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
"""Names and places the bundle trusts: the one center-name pattern, paths inside their folder, owner-only files."""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CENTER_NAME",
    "PathError",
    "DiskFullError",
    "center_name_problem",
    "check_center_name",
    "inside",
    "check_inside",
    "private_dirs",
    "make_private",
    "make_private_tree",
    "owner_only_problem",
    "disk_full",
    "atomic_write",
    "sync_folder",
    "made_with",
    "record_made",
]

CENTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Every center name (``centers.json``, center folders, hand-off registries and visit records, FL results): a letter
or digit, then up to 63 letters, digits, ``_``, ``.`` or ``-``. No separator, no ``..``, no ``+`` (which joins the
centers of one visit in file names), so a name is always one plain file-name component."""

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


class PathError(ValueError):
    """A name or a path that would reach outside the folder it belongs to."""


class DiskFullError(OSError):
    """The disk filled up while the bundle wrote a file; nothing that existed before was changed."""

    def __str__(self) -> str:
        return str(self.strerror)  # the one line, without OSError's "[Errno 28]" prefix


def center_name_problem(name: object) -> str | None:
    """What is wrong with ``name`` as a center name, or None when it is a valid one (see :data:`CENTER_NAME`)."""
    if not isinstance(name, str):
        return f"center name {name!r} is a {type(name).__name__}; expected a string"
    if CENTER_NAME.fullmatch(name) is None:
        return (
            f"center name {name!r} is not allowed; expected 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit (rename the center folder)"
        )
    return None


def check_center_name(name: object, where: str = "") -> str:
    """``name`` if it is a valid center name (see :data:`CENTER_NAME`).

    Args:
        name: the candidate name.
        where: where it was found, to start the message with (e.g. a file).

    Raises:
        PathError: not a valid center name.
    """
    problem = center_name_problem(name)
    if problem:
        raise PathError(f"{where}: {problem}." if where else f"{problem}.")
    return name  # type: ignore[return-value]


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path``, with every symbolic link and ``..`` resolved, lies inside ``folder`` (resolved too)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def check_inside(path: str | os.PathLike, folder: str | os.PathLike, what: str) -> Path:
    """``path`` if it resolves inside ``folder`` (see :py:func:`inside`), for a writer or a reader that must stay there.

    Args:
        path: the file about to be read or written.
        folder: the folder it must stay in.
        what: what the file is, for the message (e.g. ``"the relay's hand-off"``).

    Raises:
        PathError: the path resolves outside ``folder``.
    """
    if not inside(path, folder):
        raise PathError(
            f"{what} {path} resolves to {Path(path).resolve()}, outside {Path(folder).resolve()}; refused (a name or "
            "a link leads out of the folder it belongs to)."
        )
    return Path(path)


def private_dirs(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and its missing parents owner-only (0o700, whatever the umask); existing folders are left as
    they are (they belong to the user)."""
    folder = Path(folder)
    missing = []
    for p in (folder, *folder.parents):
        if p.is_dir():
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            p.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs
        os.chmod(p, PRIVATE_DIR)
    return folder


def owner_only_problem(path: str | os.PathLike) -> str | None:
    """Why a secret file (a key) is not private to its owner, with the fix, or None (always None off POSIX)."""
    mode = Path(path).stat().st_mode
    if os.name == "posix" and mode & 0o077:
        return f"readable by others (mode {mode & 0o777:o}); run chmod 600 {path}"
    return None


def make_private(path: str | os.PathLike) -> None:
    """Make a file the bundle wrote owner-only (0o600) or a folder it made owner-only (0o700), whatever the umask."""
    os.chmod(path, PRIVATE_DIR if os.path.isdir(path) else PRIVATE_FILE)


def make_private_tree(folder: str | os.PathLike) -> None:
    """:py:func:`make_private` for a folder the bundle wrote and everything in it (links are skipped, never followed).

    For the outputs of third-party writers (MONAI's checkpoint and metrics savers) that create files with the umask's
    modes: they write into a folder made owner-only first (:py:func:`private_dirs`), so nothing was ever reachable by
    others, and this then makes each file owner-only too, as the bundle's own writers do."""
    folder = Path(folder)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            make_private(path)


def disk_full(error: BaseException, path: str | os.PathLike) -> DiskFullError | None:
    """The one-line error (an ``OSError`` ENOSPC naming ``path``) if ``error`` is a full disk anywhere in its chain
    (torch's writer wraps the ``OSError`` in a ``RuntimeError``), else None."""
    seen: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and all(e is not s for s in seen):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(e):
            message = f"no space left on device while writing {path}; free space and rerun"
            return DiskFullError(errno.ENOSPC, message, str(path))
        seen.append(e)
        e = e.__cause__ if e.__cause__ is not None else e.__context__
    return None


def sync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], mode: int = PRIVATE_FILE) -> Path:
    """Write ``path`` whole or not at all: ``write(f)`` fills a temporary file beside it (owner-only from its
    creation), which is synced to disk, given ``mode`` and renamed onto ``path``; the rename is synced too. The one
    writer of every file the bundle must not leave half-written (hand-offs, checkpoints, receipts, records).

    Raises:
        DiskFullError: the disk filled up ("no space left on device while writing <path>; free space and rerun");
            the temporary file is removed and ``path`` is as it was.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0o600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
        sync_folder(path.parent)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        full = disk_full(e, path) if isinstance(e, Exception) else None
        if full is not None:
            raise full from e
        raise
    return path


def made_with(record: str | os.PathLike, made: Any) -> bool:
    """The one "finished, reuse it" rule (evaluation results, the demo data; a visit's receipt adds its hand-off's
    hash): a result is reused only when the JSON record written beside it once it was finished equals ``made``, what
    would make it now (an unreadable or missing record: made again)."""
    try:
        return json.loads(Path(record).read_text()) == made
    except (OSError, ValueError):
        return False


def record_made(record: str | os.PathLike, made: Any) -> None:
    """Write the record :py:func:`made_with` reads, once the result beside it is finished (atomically, owner-only)."""
    atomic_write(record, lambda f: f.write((json.dumps(made, indent=2) + "\n").encode()))
