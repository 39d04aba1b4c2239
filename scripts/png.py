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
"""A tiny dependency-free PNG writer (numpy, zlib and struct only)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["PNG_SIGNATURE", "write_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    """Build one PNG chunk: length, type, data and CRC over type and data.

    Args:
        kind: the four-byte chunk type, e.g. ``b"IHDR"``.
        data: the chunk payload.

    Returns:
        The encoded chunk.
    """
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write an 8-bit greyscale or RGB image as a PNG file.

    Args:
        path: where to write the file; parent folders are created.
        array: a ``uint8`` array of shape (H, W) (greyscale) or (H, W, 3) (RGB); row 0 is the top row.

    Returns:
        The path written, as a ``Path``.

    Raises:
        ValueError: if the array is not ``uint8``, has the wrong shape or is empty.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_png expects a uint8 array, got dtype {array.dtype}.")
    if array.ndim == 2:
        color_type = 0
    elif array.ndim == 3 and array.shape[2] == 3:
        color_type = 2
    else:
        raise ValueError(f"write_png expects shape (H, W) or (H, W, 3), got {array.shape}.")
    height, width = array.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"write_png expects a non-empty image, got shape {array.shape}.")
    rows = np.ascontiguousarray(array).reshape(height, -1)
    # Filter type 0 (None) in front of every scanline.
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    payload = PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path
