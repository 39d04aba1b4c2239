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
"""Resume of an interrupted visit, and only of the same visit: what a checkpoint belongs to, the random streams it
carries, owner-only atomic checkpoint files, the output folder's lock, and finished visits reused, never redone."""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scripts.files import atomic_write, make_private, private_dirs

__all__ = [
    "RECEIPT",
    "OutputLock",
    "PrivateDiskSaver",
    "RandomStates",
    "ResumeError",
    "VisitCheckpoints",
    "VisitFinished",
    "VisitGuard",
    "VisitIdentity",
    "checkpoint_identity",
    "file_sha256",
    "latest_checkpoint",
]

logger = logging.getLogger(__name__)

RECEIPT = "visit.json"
"""The file in a visit's ``output_dir`` that records which visit finished there and which hand-off it wrote."""

LOCK = "visit.lock"
"""The lock file in a visit's ``output_dir``, held with ``fcntl.flock`` while a run uses the folder."""

CHECKPOINT_GLOB = "*checkpoint_epoch=*.pt"


class ResumeError(ValueError):
    """An output folder or a checkpoint this visit must not use (another visit's, in use, unreadable)."""


class VisitFinished(SystemExit):
    """Raised instead of training when this exact visit already finished: the command exits with status 0;
    :py:func:`scripts.visit.run_visit` catches it and returns. A ``SystemExit``, so MONAI's config expressions (which
    wrap every ``Exception``) let it through untouched."""

    def __init__(self, handoff: str) -> None:
        super().__init__(0)
        self.handoff = handoff


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """A setting as plain JSON (a dtype or path by its name; any other object by its type, never its address)."""

    def default(o: Any) -> str:
        if isinstance(o, (torch.dtype, torch.device, os.PathLike)):
            return str(o)
        return f"<{type(o).__module__}.{type(o).__qualname__}>"

    return json.loads(json.dumps(value, default=default, sort_keys=True))


class VisitIdentity:
    """What a visit is: its centers (folder and sha256 of each ``dataset.json``), the sha256 of the incoming hand-off
    (None at the first center) and the settings that shape its result. Recorded in every checkpoint and in the
    finished visit's receipt; a checkpoint or a result is only ever reused by the visit with the same identity.

    The record is computed at first use (after the inputs were checked), not at construction.

    Args:
        center_dirs: the centers online in the visit.
        handoff_in: the incoming hand-off file, or None.
        settings: name -> value of every setting that changes what the visit computes (``configs/train.json``
            lists them and says why; speed and logging knobs that keep the result are left out).
    """

    def __init__(
        self,
        center_dirs: Sequence[str | os.PathLike],
        handoff_in: str | os.PathLike | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.center_dirs = [str(d) for d in center_dirs]
        self.handoff_in = str(handoff_in) if handoff_in else None
        self.settings = dict(settings or {})
        self._record: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        """The identity as plain JSON: ``centers`` (name, resolved folder, ``dataset_json_sha256``),
        ``handoff_in_sha256`` and ``settings``."""
        if self._record is None:
            centers = []
            for d in self.center_dirs:
                meta = Path(d) / "dataset.json"
                centers.append(
                    {
                        "name": Path(os.path.normpath(d)).name,
                        "dir": str(Path(d).resolve()),
                        "dataset_json_sha256": file_sha256(meta) if meta.is_file() else None,
                    }
                )
            handoff = file_sha256(self.handoff_in) if self.handoff_in and os.path.isfile(self.handoff_in) else None
            self._record = _plain({"centers": centers, "handoff_in_sha256": handoff, "settings": self.settings})
        return self._record

    def differences(self, other: Any) -> list[str]:
        """How another record differs from this one, one short phrase per difference ("there" = ``other``)."""
        mine = self.record()
        if not isinstance(other, Mapping) or set(other) != set(mine):
            return ["no visit identity recorded (written by an older bundle or another program)"]
        out = []
        names = [c["name"] for c in mine["centers"]]
        theirs = [c.get("name") for c in other["centers"]] if isinstance(other["centers"], list) else None
        if theirs != names:
            out.append(f"center {theirs} there, {names} here")
        elif other["centers"] != mine["centers"]:
            changed = [m["name"] for m, o in zip(mine["centers"], other["centers"]) if m != o]
            out.append(f"center folder or dataset.json of {changed} changed")
        if other["handoff_in_sha256"] != mine["handoff_in_sha256"]:
            there, here = _short(other["handoff_in_sha256"]), _short(mine["handoff_in_sha256"])
            out.append(f"incoming hand-off {there} there, {here} here")
        # a setting added to the bundle since the other record was written is no difference at its off value (None
        # or False: the behaviour that record's bundle had), so an upgrade keeps finished visits and checkpoints
        setting_diffs = [
            f"{k} {other['settings'].get(k, '(unset)')!r} there, {v!r} here"
            for k, v in mine["settings"].items()
            if not isinstance(other["settings"], Mapping)
            or (
                other["settings"].get(k, "(unset)") != v
                and (k in other["settings"] or (v is not None and v is not False))
            )
        ]
        if isinstance(other["settings"], Mapping):
            setting_diffs += [f"{k} set there only" for k in other["settings"] if k not in mine["settings"]]
        if setting_diffs:
            out.append("settings: " + ", ".join(setting_diffs[:4]) + (" ..." if len(setting_diffs) > 4 else ""))
        return out

    def state_dict(self) -> dict[str, Any]:
        """The record, for Ignite's ``Checkpoint``."""
        return {"record": self.record()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Accept a checkpoint's record only if it is this visit's.

        Raises:
            ResumeError: the record is another visit's.
        """
        diffs = self.differences(state.get("record") if isinstance(state, Mapping) else None)
        if diffs:
            raise ResumeError(
                f"checkpoint belongs to another visit ({'; '.join(diffs)}); use another output_dir or delete it."
            )


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12]


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint_epoch=N.pt`` in ``checkpoint_dir`` (to resume an interrupted visit), or None."""
    found = []
    for p in Path(checkpoint_dir).glob(CHECKPOINT_GLOB):
        m = re.search(r"epoch=(\d+)\.pt$", p.name)
        if m:
            found.append((int(m.group(1)), str(p)))
    return max(found)[1] if found else None


def checkpoint_identity(path: str | os.PathLike) -> Any:
    """The visit identity a checkpoint records (None when it records none).

    Read with ``torch.load(weights_only=True, mmap=True)``: nothing but tensors and plain values is unpickled, and
    the weights are not read.

    Raises:
        ResumeError: the file is not a readable checkpoint.
    """
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same to the user
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ResumeError(
            f"checkpoint {path} is unreadable ({type(e).__name__}: {first}); delete it or use another output_dir."
        ) from e
    state = content.get("identity") if isinstance(content, Mapping) else None
    return state.get("record") if isinstance(state, Mapping) else None


class PrivateDiskSaver:
    """Ignite save handler: each checkpoint written atomically, owner-only, and the older ones removed only once the
    new one is in place.

    Written here because Ignite's ``DiskSaver(atomic=True)`` adds group and world read permission to every file,
    leaves its temporary file behind when the final flush fails, and (with ``Checkpoint(n_saved=1)``) removes the
    previous checkpoint BEFORE writing the new one, so a full disk or a kill at that moment leaves none.

    The folder is made 0o700 and each file 0o600 whatever the umask (a checkpoint holds a generator that reproduces
    training images). A full device surfaces as ``OSError(ENOSPC, filename=<checkpoint>)`` with the temporary file
    removed and the previous checkpoint untouched.

    Args:
        dirname: the checkpoint folder.
    """

    def __init__(self, dirname: str | os.PathLike) -> None:
        self.dirname = Path(dirname)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        folder = private_dirs(self.dirname)
        make_private(folder)  # the checkpoint folder is the visit's own, even when it existed
        atomic_write(folder / filename, lambda f: torch.save(checkpoint, f))
        for old in folder.glob(CHECKPOINT_GLOB):
            if old.name != filename:
                old.unlink(missing_ok=True)

    def remove(self, filename: str) -> None:
        """Remove one checkpoint (Ignite's ``BaseSaveHandler`` interface)."""
        (self.dirname / filename).unlink(missing_ok=True)


def _numpy_state(state: tuple) -> dict[str, Any]:
    """A numpy ``RandomState`` state as tensors and numbers (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = state
    return {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}  # fmt: skip


def _numpy_tuple(state: Mapping[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return state["name"], keys, state["pos"], state["has_gauss"], state["gauss"]


def _randomizables(root: Any) -> list[Any]:
    """Every MONAI ``Randomizable`` reachable from ``root`` (a transform, a ``Compose``, a list), in a fixed order:
    a random transform and the random transforms it holds (e.g. ``RandAffined.rand_affine``) each have their own
    ``R``."""
    from monai.transforms import Randomizable

    found: list[Any] = []
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > 8:
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item, depth + 1)
            return
        if isinstance(obj, Randomizable):
            found.append(obj)
        if hasattr(obj, "__dict__") and (isinstance(obj, Randomizable) or hasattr(obj, "transforms")):
            for value in vars(obj).values():
                if isinstance(value, (list, tuple, Randomizable)) or hasattr(value, "transforms"):
                    walk(value, depth + 1)

    walk(root, 0)
    return found


class RandomStates:
    """Every random stream a visit draws from, as one object Ignite's ``Checkpoint`` can save and load.

    The global torch RNG (the ``DataLoader`` draws each epoch's shuffling from it when the epoch's first batch is
    requested), CUDA's, numpy's and Python's global RNGs, the private ``torch.Generator`` of each object in
    ``generators`` (the reminder's sampler) and the ``R`` of every random transform in ``transforms`` (augmentation).
    Saved at ``EPOCH_COMPLETED`` by the checkpoint, after everything that epoch drew; loaded at ``STARTED`` by the
    resumed run, after ``set_determinism`` and the networks' initialisation drew theirs, so the next epoch draws
    exactly what the interrupted run would have drawn.

    Args:
        transforms: the training transforms (a ``Compose`` or list), or None.
        generators: objects with ``state_dict``/``load_state_dict`` holding their own generator (None entries are
            skipped), e.g. the :py:class:`~scripts.reminding.Reminder`.
    """

    def __init__(self, transforms: Any = None, generators: Sequence[Any] = ()) -> None:
        self.transforms = _randomizables(transforms) if transforms is not None else []
        self.generators = [g for g in generators if g is not None]

    def state_dict(self) -> dict[str, Any]:
        """The current state of every stream."""
        state = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(np.random.get_state()),
            "python": random.getstate(),
            "transforms": [_numpy_state(t.R.get_state()) for t in self.transforms],
            "generators": [g.state_dict() for g in self.generators],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put every stream back where ``state`` recorded it.

        Raises:
            ResumeError: the state holds another number of transforms or generators than this visit.
        """
        if len(state["transforms"]) != len(self.transforms) or len(state["generators"]) != len(self.generators):
            raise ResumeError(
                f"checkpoint random state holds {len(state['transforms'])} random transform(s) and "
                f"{len(state['generators'])} generator(s), this visit has {len(self.transforms)} and "
                f"{len(self.generators)}; use another output_dir or delete the checkpoint."
            )
        torch.set_rng_state(state["torch"])
        np.random.set_state(_numpy_tuple(state["numpy"]))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        for t, s in zip(self.transforms, state["transforms"]):
            t.R.set_state(_numpy_tuple(s))
        for g, s in zip(self.generators, state["generators"]):
            g.load_state_dict(s)
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class OutputLock:
    """An exclusive lock on an output folder while a run uses it: ``fcntl.flock`` on ``<folder>/visit.lock``.

    The kernel drops the lock when the holder's process ends however it ends (even SIGKILL), so a killed run leaves no
    stale lock; the file stays and holds the last holder's pid, for the message. (A ``DataLoader`` worker forked by
    the holder shares the lock until it exits too.)

    Args:
        folder: the output folder.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, create: bool = True) -> bool:
        """Take the lock at once or refuse; a no-op when already held.

        Args:
            create: create the folder when it does not exist; with False, a missing folder is not locked (nothing
                is in it to protect yet) and False is returned.

        Returns:
            whether the lock is held.

        Raises:
            ResumeError: another run holds it, or the folder's file system cannot lock.
        """
        if self._fd is not None:
            return True
        if not self.folder.is_dir():
            if not create:
                return False
            private_dirs(self.folder)  # a visit's folder holds what it learnt from patients: owner-only
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ResumeError(
                    f"output_dir {self.folder} is in use by another run (pid {holder}, lock {self.path}); wait for "
                    "it to finish or use another output_dir."
                ) from None
            raise ResumeError(
                f"cannot lock output_dir {self.folder} ({e.strerror}); use an output_dir on a local file system."
            ) from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        """Let the folder go (the lock file stays; removing it would let two runs lock two different files)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001, S110 - at interpreter exit the kernel releases it anyway; print nothing
            pass


class VisitGuard:
    """Decides, before anything is built or written, whether and how this visit may use its output folder.

    The config runs :py:meth:`lock_existing` first, then checks the inputs, then :py:meth:`check`; the hand-off
    writer calls :py:meth:`finish` once the hand-off is written. The rules:

    - the folder is locked (:py:class:`OutputLock`) while the run uses it; a second run refuses at once;
    - a folder the check made is removed again at exit when training never started (:py:meth:`started` not
      called: the trainer, its settings or the label bank refused), so a refusal leaves nothing behind;
    - a checkpoint is resumed only when it records this visit's identity, else the visit is refused;
    - when the hand-off exists and the receipt (``<output_dir>/visit.json``) says this same visit wrote it, unchanged
      since, the visit is finished: reused (:py:class:`VisitFinished`, status 0) or, with ``overwrite``, retrained;
    - any other existing hand-off, or a folder whose receipt is another visit's, is refused unless ``overwrite``.

    Args:
        output_dir: the visit's folder.
        checkpoint_dir: its resume checkpoints.
        handoff_out: where its hand-off goes.
        identity: this visit's identity.
        overwrite: retrain and replace a finished or foreign result (never a foreign checkpoint).
        lock: take the folder's lock (only the main process of a multi-process run does).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        checkpoint_dir: str | os.PathLike,
        handoff_out: str | os.PathLike,
        identity: VisitIdentity,
        overwrite: bool = False,
        lock: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.handoff_out = Path(handoff_out)
        self.identity = identity
        self.overwrite = overwrite
        self.lock = OutputLock(output_dir) if lock else None
        self.receipt = self.output_dir / RECEIPT
        self._created: list[Path] = []  # the folders check() made, nearest first, until training starts

    def lock_existing(self) -> None:
        """Lock the output folder if it exists (refuse at once when another run holds it); a missing folder is
        locked by :py:meth:`check`, once the inputs are known good, so that a refused visit creates nothing."""
        if self.lock is not None:
            self.lock.acquire(create=False)

    def release(self) -> None:
        """Release the output folder's lock."""
        if self.lock is not None:
            self.lock.release()

    def _receipt(self) -> dict[str, Any] | None:
        if not self.receipt.is_file():
            return None
        try:
            content = json.loads(self.receipt.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ResumeError(
                f"{self.receipt}: unreadable ({type(e).__name__}); delete it or use another output_dir."
            ) from e
        return content if isinstance(content, dict) else {}

    def _remove_partial_writes(self) -> None:
        """Temporary files a killed run left (under the lock, so no live writer owns them)."""
        if self.checkpoint_dir.is_dir():
            for p in [*self.checkpoint_dir.glob(".*.tmp"), *self.checkpoint_dir.glob("tmp*")]:
                p.unlink(missing_ok=True)
        parent = self.handoff_out.parent
        if self.lock is not None and parent.resolve() == self.output_dir.resolve():
            for p in parent.glob(f".{self.handoff_out.name}.*.tmp"):
                p.unlink(missing_ok=True)

    def check(self) -> str:
        """Lock the folder and decide: ``"resume"`` (from this visit's checkpoint) or ``"fresh"``. A refused or
        finished visit lets the folder go at once.

        Raises:
            ResumeError: the folder is in use, or holds another visit's checkpoint or result.
            VisitFinished: this visit already finished (and ``overwrite`` is off).
        """
        try:
            return self._check()
        except BaseException:
            self.release()
            raise

    def _check(self) -> str:
        if self.lock is not None:
            missing = [p for p in [self.output_dir, *self.output_dir.parents] if not p.exists()]
            self.lock.acquire(create=True)
            if missing:  # refused while the trainer is built (a setting, the data, the label bank): leave nothing
                self._created = missing
                atexit.register(self._remove_unstarted)
            self._remove_partial_writes()
        checkpoint = latest_checkpoint(self.checkpoint_dir)
        if checkpoint is not None:
            diffs = self.identity.differences(checkpoint_identity(checkpoint))
            if diffs:
                raise ResumeError(
                    f"checkpoint {checkpoint} belongs to another visit ({'; '.join(diffs)}); use another output_dir "
                    "or delete it."
                )
            return "resume"
        receipt = self._receipt()
        mine = receipt is not None and not self.identity.differences(receipt.get("identity"))
        if self.handoff_out.is_file():
            why = None
            if receipt is None:
                why = f"no record of the visit that wrote it in {self.receipt}"
            elif not mine:
                why = "; ".join(self.identity.differences(receipt.get("identity")))
            elif receipt.get("handoff") != str(self.handoff_out.resolve()):
                why = f"this folder's visit wrote {receipt.get('handoff')}"
            elif receipt.get("handoff_sha256") != file_sha256(self.handoff_out):
                why = "it changed after this visit wrote it"
            if why is None and not self.overwrite:
                logger.warning(
                    f"visit already finished: {self.handoff_out} (same centers, incoming hand-off and settings); "
                    "nothing to do (pass --overwrite true to retrain)."
                )
                raise VisitFinished(str(self.handoff_out))
            if why is not None and not self.overwrite:
                raise ResumeError(
                    f"hand-off {self.handoff_out} already exists and is not this visit's result ({why}); use another "
                    "output_dir or handoff_out, or pass --overwrite true to retrain and replace it."
                )
            logger.warning(f"overwrite: retraining, {self.handoff_out} will be replaced.")
        elif receipt is not None and not mine and not self.overwrite:
            raise ResumeError(
                f"output_dir {self.output_dir} holds another visit's result ({self.receipt}: "
                f"{'; '.join(self.identity.differences(receipt.get('identity')))}); use another output_dir, or pass "
                "--overwrite true to replace it."
            )
        return "fresh"

    def started(self) -> None:
        """Training started (called once the visit is built and its label bank made): what the run writes from now
        on is kept, whatever happens."""
        if self._created:
            atexit.unregister(self._remove_unstarted)
            self._created = []

    def _remove_unstarted(self) -> None:
        """At exit of a run that made the output folder but never started training: remove the folder (its lock,
        an empty TensorBoard log) and the parents it made, so that a refusal leaves nothing behind."""
        if not self._created:
            return
        self.release()
        shutil.rmtree(self._created[0], ignore_errors=True)
        for parent in self._created[1:]:
            try:
                parent.rmdir()  # only while empty
            except OSError:
                break
        self._created = []

    def finish(self, handoff: str | os.PathLike) -> None:
        """After the hand-off is written: record the receipt, then remove the resume checkpoints."""
        handoff = Path(handoff)
        receipt = {
            "format": "tdgan-visit-receipt",
            "identity": self.identity.record(),
            "handoff": str(handoff.resolve()),
            "handoff_sha256": file_sha256(handoff),
        }
        private_dirs(self.output_dir)
        atomic_write(self.receipt, lambda f: f.write(json.dumps(receipt, indent=4).encode()))
        if self.checkpoint_dir.is_dir():
            for pattern in (CHECKPOINT_GLOB, ".*.tmp", "tmp*"):
                for p in self.checkpoint_dir.glob(pattern):
                    p.unlink(missing_ok=True)
            if not any(self.checkpoint_dir.iterdir()):
                self.checkpoint_dir.rmdir()


def _reraise(engine: Any, e: BaseException) -> None:
    raise e


class VisitCheckpoints:
    """Ignite handler: resume checkpoints of a visit.

    At attach time, if ``checkpoint_dir`` holds a checkpoint, its visit identity is checked (another visit's is
    refused) and it is loaded when the run starts (networks, optimizers, schedulers, random streams, loss history,
    the trainer's epoch/iteration, and the ``GradScaler`` of float16 training), so an interrupted visit resumes where
    its last checkpoint left it and goes on exactly as the uninterrupted run would; then a checkpoint is saved every
    ``interval`` epochs (only the newest is kept) through :py:class:`PrivateDiskSaver`.

    Attach it after the learning-rate handlers, so that saved schedulers are already stepped. Objects that are Ignite
    handlers themselves (the loss history) are attached here, before the saver, so that a checkpoint holds the epoch
    it ends. It also re-raises an exception at once (``EXCEPTION_RAISED``), so the
    handlers after it (MONAI's ``StatsHandler``) do not log a second traceback: the command line prints the reason
    (:py:mod:`scripts.excepthook`).

    Args:
        checkpoint_dir: folder of this visit's checkpoints.
        objects: name -> object with ``state_dict``/``load_state_dict`` (None entries are skipped; the trainer is
            added as ``trainer``).
        identity: this visit's identity, saved as ``identity`` and checked before anything is loaded.
        interval: epochs between checkpoints (0 disables saving).
        map_location: where to load tensors.
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike,
        objects: dict[str, Any],
        identity: VisitIdentity | None = None,
        interval: int = 1,
        map_location: Any = None,
    ) -> None:
        self.checkpoint_dir = str(checkpoint_dir)
        self.objects = {k: v for k, v in objects.items() if v is not None}
        self.identity = identity
        self.interval = interval
        self.map_location = map_location

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events
        from ignite.handlers import Checkpoint
        from monai.handlers import CheckpointLoader

        save_dict = {"identity": self.identity} if self.identity is not None else {}
        save_dict.update({**self.objects, "trainer": engine})
        scaler = getattr(getattr(engine, "precision", None), "scaler", None)
        if scaler is not None:
            save_dict["grad_scaler"] = scaler
        for obj in self.objects.values():
            if callable(getattr(obj, "attach", None)) and not isinstance(obj, torch.nn.Module):
                obj.attach(engine)  # e.g. the loss history: recorded at EPOCH_COMPLETED before the checkpoint is saved
        path = latest_checkpoint(self.checkpoint_dir)
        if path is not None:
            if self.identity is not None:
                diffs = self.identity.differences(checkpoint_identity(path))
                if diffs:
                    raise ResumeError(
                        f"checkpoint {path} belongs to another visit ({'; '.join(diffs)}); use another output_dir or "
                        "delete it."
                    )
            logger.info(f"resuming the interrupted visit from {path}.")
            CheckpointLoader(load_path=path, load_dict=save_dict, map_location=self.map_location).attach(engine)
        if self.interval > 0:
            saver = Checkpoint(
                to_save=save_dict,
                save_handler=PrivateDiskSaver(self.checkpoint_dir),
                score_function=lambda e: e.state.epoch,
                score_name="epoch",
                n_saved=None,  # the saver removes the older checkpoints once the new one is in place
            )
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), saver)
        engine.add_event_handler(Events.EXCEPTION_RAISED, _reraise)
