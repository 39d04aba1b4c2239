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
"""TensorBoard's SummaryWriter with an owner-only folder and event files: they hold patients' images and label maps."""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from scripts.files import make_private, private_dirs

__all__ = ["PrivateSummaryWriter"]


class PrivateSummaryWriter(SummaryWriter):
    """``torch.utils.tensorboard.SummaryWriter`` whose log folder is owner-only (0o700) before any event file is
    created in it, and whose event files are made owner-only (0o600) as soon as they are opened, whatever the umask.

    The event files of a visit hold real training images and label maps (the epoch samples) and the segmentation's
    loss curves over them, so no one but the owner may read them. The folder is made private first, so a new event
    file is never reachable by others, not even in the moment between its creation (with the umask's mode) and its
    ``chmod``. Event files are opened when the writer is made and again after each ``close()`` (the next write opens
    a new one): both go through ``_get_file_writer``, the one place torch creates them, which then makes every event
    file in the folder owner-only (the new one, and any an earlier run left there).

    Args:
        log_dir: the writer's own folder (created with its missing parents 0o700; made 0o700 if it exists).
        kwargs: more arguments of ``SummaryWriter`` (``max_queue``, ``flush_secs``, ``filename_suffix``, ...).
    """

    def __init__(self, log_dir: str | os.PathLike, **kwargs) -> None:
        if not log_dir:
            raise ValueError("PrivateSummaryWriter needs an explicit log_dir (SummaryWriter's default is ./runs/...).")
        private_dirs(log_dir)
        make_private(log_dir)
        super().__init__(log_dir=str(log_dir), **kwargs)

    def _get_file_writer(self):
        """torch's writer, (re)opened when closed; a newly opened event file is made owner-only at once."""
        opened = self.file_writer is None or self.all_writers is None
        writer = super()._get_file_writer()
        if opened:
            for path in Path(self.log_dir).glob("events.out.tfevents.*"):  # this one, and any an earlier run left
                make_private(path)
        return writer
