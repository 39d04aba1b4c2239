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
"""Deterministic built-in demo data: 2D brain-MRI-like slices with label maps from differently imaged centers."""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from scripts.data.writer import CentersWriter
from scripts.files import made_with, record_made

__all__ = [
    "ANATOMY_SOURCES",
    "CENTER_STYLES",
    "CLASS_NAMES",
    "LABEL_COLORS",
    "center_name",
    "center_style",
    "ensure_demo_centers",
    "head_volume",
    "make_demo_centers",
    "mni152_anatomy",
    "mni152_slices",
    "mni152_template_dir",
    "procedural_anatomy",
    "render_appearance",
    "save_preview",
]

logger = logging.getLogger(__name__)

CLASS_NAMES: dict[str, str] = {"0": "background", "1": "brain", "2": "csf", "3": "lesion"}
"""Label values (as strings, like a Decathlon ``dataset.json``) and their names."""

LABEL_COLORS: dict[int, tuple[int, int, int]] = {0: (0, 0, 0), 1: (128, 128, 128), 2: (40, 90, 255), 3: (230, 30, 30)}
"""RGB colour of each label in the preview: background black, brain grey, csf blue, lesion red."""

# Appearance of one center. Intensities are those of the clean image before bias field, noise and blur; "air",
# "scalp" (fat) and "skull" (bone) all belong to label 0, the other keys to the labels of the same name.
# texture_gain: intensity added per unit of anatomy texture inside the brain (positive: white matter brighter than grey
# matter, as in T1; negative: as in T2/FLAIR). edema: intensity added in a halo around lesions. lesion_texture: lesion
# heterogeneity. bias: std of the log of the multiplicative smooth bias field. noise: Rician noise std. blur: extra
# Gaussian blur, sigma as a fraction of the image size (lower resolution). gamma: exponent applied to the clean image.
CENTER_STYLES: list[dict[str, Any]] = [
    {
        "name": "center_a",
        "description": "T1-weighted-like: brain mid grey (white matter brighter than grey matter), CSF dark, lesion "
        "darker than brain, scalp fat bright; low noise, weak bias field, sharp.",
        "intensity": {"air": 0.0, "scalp": 0.85, "skull": 0.06, "brain": 0.55, "csf": 0.12, "lesion": 0.28},
        "texture_gain": 0.15,
        "edema": -0.06,
        "lesion_texture": 0.04,
        "bias": 0.06,
        "noise": 0.012,
        "blur": 0.0,
        "gamma": 1.0,
    },
    {
        "name": "center_b",
        "description": "T2-weighted-like: CSF very bright, lesion bright, brain darker (grey matter brighter than "
        "white matter); moderate noise, moderate bias field.",
        "intensity": {"air": 0.0, "scalp": 0.55, "skull": 0.03, "brain": 0.36, "csf": 0.92, "lesion": 0.72},
        "texture_gain": -0.1,
        "edema": 0.16,
        "lesion_texture": 0.07,
        "bias": 0.15,
        "noise": 0.03,
        "blur": 0.0,
        "gamma": 1.0,
    },
    {
        "name": "center_c",
        "description": "FLAIR-like: CSF dark, lesion very bright with a bright edema halo, brain mid grey; blurred "
        "(lower resolution), stronger noise and a strong bias field.",
        "intensity": {"air": 0.0, "scalp": 0.45, "skull": 0.04, "brain": 0.42, "csf": 0.07, "lesion": 0.95},
        "texture_gain": -0.07,
        "edema": 0.28,
        "lesion_texture": 0.06,
        "bias": 0.18,
        "noise": 0.04,
        "blur": 0.008,
        "gamma": 1.0,
    },
]
"""Appearance specification of each center, in visiting order; see :func:`center_style` for more centers."""


# ----------------------------------------------------------------------------------------------------------------------
# Smooth random fields and filtering (numpy FFT only)
# ----------------------------------------------------------------------------------------------------------------------


def _gaussian_filter(array: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-filter a 2D array with periodic boundaries (via FFT).

    Args:
        array: a 2D float array.
        sigma: the standard deviation in pixels; ``<= 0`` returns a copy.

    Returns:
        The filtered array, float64.
    """
    array = np.asarray(array, dtype=np.float64)
    if sigma <= 0:
        return array.copy()
    fy = np.fft.fftfreq(array.shape[0])[:, None]
    fx = np.fft.rfftfreq(array.shape[1])[None, :]
    kernel = np.exp(-2.0 * (math.pi * sigma) ** 2 * (fy**2 + fx**2))
    return np.fft.irfft2(np.fft.rfft2(array) * kernel, s=array.shape)


def _smooth_field(rng: np.random.Generator, size: int, sigma_frac: float) -> np.ndarray:
    """A smooth random field with zero mean and unit standard deviation.

    Args:
        rng: the random generator to draw the white noise from.
        size: the side of the square field in pixels.
        sigma_frac: the correlation length as a fraction of ``size``.

    Returns:
        A (size, size) float64 array.
    """
    field = _gaussian_filter(rng.standard_normal((size, size)), max(sigma_frac * size, 0.5))
    field -= field.mean()
    return field / (field.std() + 1e-12)


def _polar_field(rng: np.random.Generator, phi: np.ndarray, rho: np.ndarray, num_angles: int) -> np.ndarray:
    """A smooth random field in polar coordinates, periodic in the angle, varying slowly along the radius.

    Args:
        rng: the random generator.
        phi: the angle of every pixel, in radians.
        rho: the (elliptic) radius of every pixel, about 1 at the edge of the head.
        num_angles: about how many independent values around the circle (zero crossings come about as often).

    Returns:
        The field sampled (bilinearly) at every pixel, unit standard deviation.
    """
    n_phi, n_rho = 512, 64
    grid = rng.standard_normal((n_phi, n_rho))
    fa = np.fft.fftfreq(n_phi)[:, None]
    fr = np.fft.fftfreq(n_rho)[None, :]
    sigma_phi, sigma_rho = n_phi / num_angles / 2.0, n_rho / 18.0
    kernel = np.exp(-2.0 * math.pi**2 * ((sigma_phi * fa) ** 2 + (sigma_rho * fr) ** 2))
    grid = np.fft.ifft2(np.fft.fft2(grid) * kernel).real
    grid /= grid.std() + 1e-12
    a = (phi / (2.0 * math.pi) % 1.0) * n_phi
    r = np.clip(rho / 1.2, 0.0, 1.0) * (n_rho / 2 - 1)  # the upper half only: no wrap-around along the radius
    a0, r0 = np.floor(a).astype(int), np.floor(r).astype(int)
    da, dr = a - a0, r - r0
    a0, a1, r1 = a0 % n_phi, (a0 + 1) % n_phi, np.minimum(r0 + 1, n_rho - 1)
    top = grid[a0, r0] * (1 - da) + grid[a1, r0] * da
    bottom = grid[a0, r1] * (1 - da) + grid[a1, r1] * da
    return top * (1 - dr) + bottom * dr


# ----------------------------------------------------------------------------------------------------------------------
# Anatomy (shapes and labels only; no intensities)
# ----------------------------------------------------------------------------------------------------------------------


def _curve_mask(
    u: np.ndarray, v: np.ndarray, points: np.ndarray, radii: np.ndarray, wobble: np.ndarray | None = None
) -> np.ndarray:
    """Mask of a thick curve: the union of discs centred on ``points`` with ``radii``.

    Args:
        u: horizontal coordinate of every pixel.
        v: vertical coordinate of every pixel.
        points: (N, 2) array of (u, v) points along the curve.
        radii: (N,) radius at each point.
        wobble: optional field added to the signed distance, to make the boundary irregular.

    Returns:
        A boolean mask with the shape of ``u``.
    """
    margin = float(radii.max()) + (float(np.abs(wobble).max()) if wobble is not None else 0.0)
    box = (
        (u > points[:, 0].min() - margin)
        & (u < points[:, 0].max() + margin)
        & (v > points[:, 1].min() - margin)
        & (v < points[:, 1].max() + margin)
    )
    bu, bv = u[box], v[box]
    signed = np.full(bu.shape, np.inf)
    for (pu, pv), radius in zip(points, radii, strict=True):
        signed = np.minimum(signed, np.hypot(bu - pu, bv - pv) - radius)
    if wobble is not None:
        signed = signed + wobble[box]
    mask = np.zeros(u.shape, dtype=bool)
    mask[box] = signed < 0
    return mask


def _lesion_mask(
    rng: np.random.Generator, size: int, u: np.ndarray, v: np.ndarray, parenchyma: np.ndarray
) -> np.ndarray:
    """One irregular blob of random (log-uniform) size centred deep in ``parenchyma``, sometimes with satellites.

    Args:
        rng: the random generator.
        size: the side of the square slice in pixels.
        u: horizontal coordinate of every pixel (normalised, [-1, 1] across the slice).
        v: vertical coordinate of every pixel.
        parenchyma: where lesion centres may lie.

    Returns:
        A boolean mask (not yet restricted to the brain).
    """
    return _lesion_field(rng, size, u, v, parenchyma)[0] < 1.0


def _lesion_field(
    rng: np.random.Generator, size: int, u: np.ndarray, v: np.ndarray, parenchyma: np.ndarray
) -> tuple[np.ndarray, float]:
    """The field whose sublevel set ``< 1`` is :func:`_lesion_mask`'s lesion (the smallest normalised distance to a
    blob), and the main blob's radius (normalised coordinates); a lower level gives the same lesion, shrunk."""
    px = 2.0 / size
    deep = (_gaussian_filter(parenchyma.astype(np.float64), 0.04 * size) > 0.8) & parenchyma
    candidates = np.flatnonzero(deep if deep.any() else parenchyma)
    radius = math.exp(rng.uniform(math.log(0.05), math.log(0.22)))
    count = 1 if rng.uniform() < 0.7 else int(rng.integers(2, 5))
    field = np.full(u.shape, np.inf)
    for index in range(count):
        r = radius if index == 0 else radius * rng.uniform(0.25, 0.5)
        r = max(r, 1.2 * px)
        centre = candidates[int(rng.integers(len(candidates)))]
        cu, cv = u.flat[centre], v.flat[centre]
        blob = (
            np.hypot(u - cu, v - cv) / r
            + 0.3 * _smooth_field(rng, size, max(r / 3.0, 0.02))
            + 0.12 * _smooth_field(rng, size, max(r / 8.0, 0.01))
        )
        field = np.minimum(field, blob)
    return field, max(radius, 1.2 * px)


def procedural_anatomy(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """Draw a random, plausible axial brain slice: shapes and labels only, no intensities.

    The slice has an oval head with a scalp (fat) ring and a skull (bone) ring, both label 0; a brain (label 1) with an
    irregular, folded outer boundary, sulci and an interhemispheric fissure; CSF (label 2) in the subarachnoid space,
    the sulci and a pair of lateral ventricles; and, in most slices, one or more irregular lesions (label 3) of random
    size inside the brain. Every call draws a new head size, shape, rotation, ventricle size and lesion.

    Args:
        rng: the random generator; the same generator state gives the same anatomy.
        size: the side of the square slice in pixels.

    Returns:
        A dict with ``"label"`` (int64 (size, size), values 0..3), ``"texture"`` (float (size, size) in [-1, 1]: inside
        the brain, +1 is white-matter-like and -1 grey-matter-like; 0 outside), and the optional appearance masks
        ``"scalp"`` and ``"skull"`` (bool (size, size), inside label 0). Any other anatomy source must return at least
        ``"label"`` and ``"texture"``; without ``"scalp"``/``"skull"`` the whole of label 0 is rendered as air.
    """
    px = 2.0 / size  # one pixel in normalised coordinates
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(coords, coords, indexing="ij")
    angle = rng.uniform(-0.3, 0.3)
    x0, y0 = rng.uniform(-0.04, 0.04, size=2)
    u = math.cos(angle) * (x - x0) + math.sin(angle) * (y - y0)  # left-right
    v = -math.sin(angle) * (x - x0) + math.cos(angle) * (y - y0)  # anterior (top, v < 0) - posterior

    # Head: an oval, slightly egg-shaped (wider at the back), with a low-frequency wobble.
    ax, ay = rng.uniform(0.68, 0.8), rng.uniform(0.84, 0.93)
    egg = 1.0 + rng.uniform(0.02, 0.08) * (v / ay)
    rho = np.sqrt((u / (ax * egg)) ** 2 + (v / ay) ** 2) * (1.0 + 0.015 * _smooth_field(rng, size, 0.15))
    scalp_width = max(rng.uniform(0.06, 0.09), 1.6 * px / ay)
    skull_width = max(rng.uniform(0.05, 0.07), 1.2 * px / ay)
    head = rho < 1.0
    skull_outer = 1.0 - scalp_width
    intracranial = rho < skull_outer - skull_width

    # Brain: inside the skull minus a thin CSF layer, with a folded (gyri-like) boundary. A smooth field on a polar
    # grid, correlated longer along the radius than along the angle, gives sulci (its zero crossings) running from the
    # brain surface inwards, and indents the surface where they reach it.
    phi = np.arctan2(v, u) + 0.1 * _smooth_field(rng, size, 0.06)
    polar = _polar_field(rng, phi, rho, num_angles=int(rng.integers(34, 48) * min(1.0, 0.4 + size / 200.0)))
    gap = max(rng.uniform(0.015, 0.04), 0.8 * px / ay)
    surface = skull_outer - skull_width - gap
    brain = rho + 0.025 * np.abs(_smooth_field(rng, size, 0.1)) + 0.05 * np.exp(-4.0 * np.abs(polar)) < surface
    # Sulci of even width: pixels closer to a zero crossing (|f| / |grad f|) than a half width, down to a random depth.
    depth = np.clip((rho - (surface - rng.uniform(0.2, 0.3))) / 0.2, 0.0, 1.0)
    depth = depth * np.clip(1.0 + 0.6 * _smooth_field(rng, size, 0.05), 0.3, 1.6)
    grad_r, grad_c = np.gradient(polar)
    distance = np.abs(polar) / (np.hypot(grad_r, grad_c) + 1e-6)
    sulci = (depth > 0.05) & (distance < max(0.6, 0.005 * size) * (0.7 + 0.5 * np.clip(depth, 0.0, 1.0)))
    # Interhemispheric fissure, at the front and the back.
    fissure_u = u - 0.012 * _smooth_field(rng, size, 0.08)
    fissure = (np.abs(fissure_u) < max(0.012, 0.55 * px)) & (np.abs(v / ay) > rng.uniform(0.3, 0.45))
    parenchyma = brain & ~sulci & ~fissure

    # Lateral ventricles: two crescents, closer together at the front, diverging at the back, thick horns.
    scale = rng.uniform(0.7, 1.6)
    vc = rng.uniform(-0.08, 0.04)
    length = rng.uniform(0.22, 0.3) * ay
    t = np.linspace(-1.0, 1.0, 40)
    ventricles = np.zeros_like(brain)
    wobble = 0.008 * _smooth_field(rng, size, 0.05)
    for side in (-1.0, 1.0):
        asym = rng.uniform(0.85, 1.15)
        spread = rng.uniform(0.04, 0.08)
        points = np.stack(
            [
                side * (0.045 * scale**0.5 + spread * t**2 + 0.04 * np.clip(t, 0, None)) * ax / 0.75,
                vc + t * length,
            ],
            axis=1,
        )
        radii = np.maximum(0.022 * scale * asym * (0.75 + 0.6 * t**2), 0.6 * px)
        ventricles |= _curve_mask(u, v, points, radii, wobble)
    ventricles &= brain
    parenchyma &= ~ventricles

    label = np.zeros((size, size), dtype=np.int64)
    label[intracranial] = 2
    label[parenchyma] = 1
    label[ventricles] = 2

    # Texture: white matter +1; cortical ribbon (along the brain surface, sulci and fissure) and deep grey nuclei -1;
    # plus fine variation.
    outside = ~parenchyma & ~ventricles
    near_surface = _gaussian_filter(outside.astype(np.float64), max(0.7, 0.012 * size))
    texture = np.clip((0.1 - near_surface) / 0.04, -1.0, 1.0)
    for side in (-1.0, 1.0):
        nucleus = np.hypot((u - side * 0.2 * ax / 0.75) / 0.07, (v - vc - 0.05) / 0.1)
        texture -= 1.2 * np.clip(1.3 - nucleus, 0.0, 1.0)
    texture += 0.25 * _smooth_field(rng, size, 0.02)
    texture = np.where(parenchyma, np.clip(texture, -1.0, 1.0), 0.0)

    # Lesions: in most slices one irregular blob of random (log-uniform) size, sometimes with small satellites.
    if rng.uniform() < 0.85:
        lesion = _lesion_mask(rng, size, u, v, parenchyma) & brain & ~ventricles
        label[lesion] = 3
        texture[lesion] = 0.0

    return {
        "label": label,
        "texture": texture.astype(np.float32),
        "scalp": head & (rho >= skull_outer),
        "skull": head & (rho < skull_outer) & ~intracranial,
    }


MNI152_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
"""The ICBM 2009a MNI152 template files that the ``nilearn`` wheel ships in ``nilearn/datasets/data/`` (1 mm,
skull-stripped T1 and grey/white matter probability maps)."""


def mni152_template_dir() -> Path:
    """The folder of the MNI152 template files inside the installed ``nilearn`` package (nilearn is not imported).

    Raises:
        ModuleNotFoundError: nilearn is not installed, or its wheel lacks the template files.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "the 'mni152' demo anatomy reads the MNI152 template shipped in the nilearn wheel, but nilearn is not "
            "installed; expected `pip install -r requirements-demo.txt` (nilearn), or use anatomy='procedural'."
        )
    folder = Path(spec.origin).parent / "datasets" / "data"
    missing = [name for name in MNI152_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise ModuleNotFoundError(f"{folder}: template files {missing} not found; expected the nilearn wheel's data.")
    return folder


@functools.lru_cache(maxsize=1)
def _mni152_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(brain mask, grey matter, white matter) of the MNI152 template as float32 arrays in [0, 1], axes (x, y, z)."""
    folder = mni152_template_dir()
    t1, gm, wm = (
        np.asarray(nib.load(str(folder / MNI152_FILES[k])).dataobj, dtype=np.float32) for k in ("t1", "gm", "wm")
    )
    return (t1 > 0).astype(np.float32), gm / max(float(gm.max()), 1.0), wm / max(float(wm.max()), 1.0)


def _bilinear(volume: np.ndarray, i: np.ndarray, j: np.ndarray, k: float) -> np.ndarray:
    """Sample ``volume`` (x, y, z) at in-plane voxel coordinates (i, j) on the axial plane ``z = k`` (trilinear, 0
    outside)."""
    k0 = int(np.clip(math.floor(k), 0, volume.shape[2] - 2))
    dk = float(np.clip(k - k0, 0.0, 1.0))
    plane = (1.0 - dk) * volume[:, :, k0] + dk * volume[:, :, k0 + 1]
    plane = np.pad(plane, 1)  # zero outside the template
    i, j = np.clip(i + 1, 0, plane.shape[0] - 1.001), np.clip(j + 1, 0, plane.shape[1] - 1.001)
    i0, j0 = np.floor(i).astype(int), np.floor(j).astype(int)
    di, dj = i - i0, j - j0
    return (
        plane[i0, j0] * (1 - di) * (1 - dj)
        + plane[i0 + 1, j0] * di * (1 - dj)
        + plane[i0, j0 + 1] * (1 - di) * dj
        + plane[i0 + 1, j0 + 1] * di * dj
    )


def mni152_anatomy(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """A subject's axial slice of real brain anatomy: the MNI152 template under a random smooth deformation.

    Each call draws an axial level through the lateral ventricles (about z = -2 .. +38 mm), a rotation, an
    anisotropic scale, a shift and a smooth random displacement field (a few millimetres), and samples the
    template's brain mask and grey/white matter maps there: brain (label 1) where grey + white matter dominate, CSF
    (label 2) in the rest of the brain mask (ventricles, sulci), background (label 0) outside; a skull and a scalp
    ring follow the brain's outline; lesions (label 3) are drawn as in :func:`procedural_anatomy`. Needs the
    ``nilearn`` wheel (its template files are read with nibabel; nilearn is not imported).

    Args:
        rng: the random generator; the same generator state gives the same anatomy.
        size: the side of the square slice in pixels.

    Returns:
        A dict as :func:`procedural_anatomy` returns (``label``, ``texture``, ``scalp``, ``skull``).
    """
    return mni152_slices(rng, size, 1)[0]


def mni152_slices(rng: np.random.Generator, size: int, count: int) -> list[dict[str, np.ndarray]]:
    """``count`` neighbouring axial slices of one subject's volume: the MNI152 template under ONE random deformation
    (as :func:`mni152_anatomy` draws it; in-plane, so the volume stays registered to the atlas, as BraTS's volumes
    are), sampled at axial levels one in-plane pixel apart (isotropic voxels), around a level drawn through the
    lateral ventricles. The lesion is one ellipsoid-like blob of the volume: drawn on the middle slice as
    :func:`procedural_anatomy` draws it, it shrinks with the distance from that slice (its extent along the axis
    equals its in-plane radius) and vanishes beyond. ``count=1`` gives exactly :func:`mni152_anatomy`'s slice.

    Args:
        rng: the random generator (one subject).
        size: the side of the square slices in pixels.
        count: slices, >= 1.

    Returns:
        one dict per slice, bottom to top, as :func:`procedural_anatomy` returns.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}.")
    mask, gm, wm = _mni152_maps()
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(coords, coords, indexing="ij")
    angle = rng.uniform(-0.25, 0.25)
    sx, sy = rng.uniform(0.9, 1.1, size=2)
    x0, y0 = rng.uniform(-0.04, 0.04, size=2)
    u = math.cos(angle) * (x - x0) + math.sin(angle) * (y - y0)  # left-right
    v = -math.sin(angle) * (x - x0) + math.cos(angle) * (y - y0)  # anterior (top, v < 0) - posterior
    warp = 0.03  # displacement amplitude, as a fraction of the half field of view
    du, dv = warp * _smooth_field(rng, size, 0.15), warp * _smooth_field(rng, size, 0.15)
    half_fov = 112.0  # mm from the centre to the edge of the slice
    x_mm = (u + du) * half_fov / sx
    y_mm = -(v + dv) * half_fov / sy - 18.0  # anterior up; the brain's centre is at about y = -18 mm
    # MNI mm -> voxel indices of the 1 mm template (origin at voxel (98, 134, 72))
    i, j = x_mm + 98.0, y_mm + 134.0
    spacing = 2.0 * half_fov / size  # mm between slices: the in-plane pixel
    offsets = (np.arange(count) - (count - 1) / 2.0) * spacing
    k = rng.uniform(70.0 - offsets[0], 110.0 - offsets[-1])

    def tissue_at(level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        inside = _bilinear(mask, i, j, level) > 0.5
        grey, white = _bilinear(gm, i, j, level), _bilinear(wm, i, j, level)
        return inside, inside & (grey + white > 0.5), np.clip((white - grey) / (grey + white + 1e-6), -1, 1)

    middle = tissue_at(k + offsets[count // 2])
    lesion_field, radius = (None, 1.0)
    if rng.uniform() < 0.85:
        lesion_field, radius = _lesion_field(rng, size, u, v, middle[1])
    out = []
    for offset in offsets:
        inside, parenchyma, contrast = tissue_at(k + offset) if count > 1 else middle
        label = np.zeros((size, size), dtype=np.int64)
        label[inside] = 2
        label[parenchyma] = 1
        texture = np.where(parenchyma, contrast, 0.0)
        if lesion_field is not None:
            # the lesion's section at this level: its extent along the axis is its in-plane radius (in mm)
            level = 1.0 - (float(offset - offsets[count // 2]) / (radius * half_fov)) ** 2
            lesion = (lesion_field < math.sqrt(max(level, 0.0))) & inside
            label[lesion] = 3
            texture[lesion] = 0.0
        outline = _gaussian_filter(inside.astype(np.float64), 0.02 * size)
        skull = (outline > 0.04) & ~inside
        scalp = (_gaussian_filter(inside.astype(np.float64), 0.045 * size) > 0.02) & ~inside & ~skull
        out.append({"label": label, "texture": texture.astype(np.float32), "scalp": scalp, "skull": skull})
    return out


ANATOMY_SOURCES: dict[str, Callable[[np.random.Generator, int], dict[str, np.ndarray]]] = {
    "procedural": procedural_anatomy,
    "mni152": mni152_anatomy,
}
"""The anatomy sources by name: ``procedural`` (fast, no extra package) and ``mni152`` (real anatomy, nilearn)."""

VOLUME_SOURCES: dict[str, Callable[[np.random.Generator, int, int], list[dict[str, np.ndarray]]]] = {
    "mni152": mni152_slices,
}
"""The anatomy sources that can give several neighbouring slices of one subject's volume (``slices_per_subject``)."""


# ----------------------------------------------------------------------------------------------------------------------
# Appearance (intensities only)
# ----------------------------------------------------------------------------------------------------------------------


def center_name(index: int) -> str:
    """The name of the center at a 0-based position: ``center_a`` ... ``center_z``, then ``center_26``, ...

    Args:
        index: the position of the center in the visiting order.

    Returns:
        The center name.
    """
    return f"center_{chr(ord('a') + index)}" if index < 26 else f"center_{index}"


def center_style(index: int) -> dict[str, Any]:
    """The appearance specification of the center at a 0-based position.

    The first ``len(CENTER_STYLES)`` centers use :data:`CENTER_STYLES`; later ones are deterministic perturbations of
    them (intensities, texture, bias, noise, blur and gamma), the same whatever the dataset seed.

    Args:
        index: the position of the center in the visiting order.

    Returns:
        A new style dict (safe to modify).

    Raises:
        ValueError: if ``index`` is negative.
    """
    if index < 0:
        raise ValueError(f"center index must be >= 0, got {index}.")
    base = copy.deepcopy(CENTER_STYLES[index % len(CENTER_STYLES)])
    if index < len(CENTER_STYLES):
        return base
    rng = np.random.default_rng([20260, index])
    base["name"] = center_name(index)
    base["description"] = f"Perturbed variant of {CENTER_STYLES[index % len(CENTER_STYLES)]['name']}: " + str(
        base["description"]
    )
    base["intensity"] = {
        key: float(np.clip(value * rng.uniform(0.8, 1.2), 0.0, 1.0)) for key, value in base["intensity"].items()
    }
    base["texture_gain"] = float(base["texture_gain"] * rng.uniform(0.6, 1.4))
    base["edema"] = float(base["edema"] * rng.uniform(0.6, 1.4))
    base["bias"] = float(base["bias"] * rng.uniform(0.7, 1.5))
    base["noise"] = float(base["noise"] * rng.uniform(0.7, 1.5))
    base["blur"] = float(max(base["blur"] + rng.uniform(-0.004, 0.008), 0.0))
    base["gamma"] = float(rng.uniform(0.8, 1.25))
    return base


def render_appearance(anatomy: dict[str, np.ndarray], style: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Render the image of an anatomy in the appearance of a center.

    Args:
        anatomy: a dict as returned by :func:`procedural_anatomy` (``"label"``, ``"texture"``, optional ``"scalp"`` and
            ``"skull"``).
        style: an appearance specification, see :data:`CENTER_STYLES`.
        rng: the random generator for the per-subject intensity jitter, bias field and noise.

    Returns:
        A float32 (size, size) image, non-negative, roughly in [0, 1].
    """
    label = np.asarray(anatomy["label"])
    size = label.shape[0]
    texture = np.asarray(anatomy["texture"], dtype=np.float64)
    levels = {key: value * (1.0 + 0.04 * rng.standard_normal()) for key, value in style["intensity"].items()}

    image = np.full(label.shape, levels["air"])
    for key in ("scalp", "skull"):
        if key in anatomy:
            image[np.asarray(anatomy[key], dtype=bool) & (label == 0)] = levels[key]
    brain = label == 1
    image[brain] = levels["brain"] + style["texture_gain"] * texture[brain]
    image[label == 2] = levels["csf"]
    lesion = label == 3
    if lesion.any():
        halo = np.clip(2.0 * _gaussian_filter(lesion.astype(np.float64), 0.035 * size + 0.5), 0.0, 1.0)
        image += np.where(brain, style["edema"] * halo, 0.0)
        heterogeneity = style["lesion_texture"] * _smooth_field(rng, size, 0.04)
        image[lesion] = levels["lesion"] + heterogeneity[lesion]
    image = np.clip(image, 0.0, None) ** style["gamma"]

    # Partial volume (and the lower resolution of some centers), then a smooth multiplicative bias field.
    image = _gaussian_filter(image, 0.45 + style["blur"] * size)
    image *= np.exp(style["bias"] * _smooth_field(rng, size, 0.3))
    # Rician noise: magnitude of a complex signal with Gaussian noise on both channels.
    sigma = style["noise"]
    image = np.hypot(image + sigma * rng.standard_normal(label.shape), sigma * rng.standard_normal(label.shape))
    return image.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Dataset writing
# ----------------------------------------------------------------------------------------------------------------------


def head_volume(slice_2d: np.ndarray) -> np.ndarray:
    """A cubic volume whose axial slices are copies of ``slice_2d`` shrunk towards the poles (an ellipsoidal head).

    Slice ``z`` at normalised height ``t`` in (-1, 1) holds ``slice_2d`` scaled by ``sqrt(1 - t**2)`` about the centre
    (nearest neighbour); what falls outside is 0 (background for labels, air for images).

    Args:
        slice_2d: a square (size, size) array (label map or image).

    Returns:
        A (size, size, size) array of the same dtype, the last axis being the axial one.
    """
    size = slice_2d.shape[0]
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    volume = np.zeros((size, size, size), dtype=slice_2d.dtype)
    for z, scale in enumerate(np.sqrt(1.0 - coords**2)):
        source = coords / scale
        inside = np.abs(source) < 1.0
        index = np.clip(np.floor((source + 1.0) / 2.0 * size), 0, size - 1).astype(int)
        volume[:, :, z] = np.where(inside[:, None] & inside[None, :], slice_2d[np.ix_(index, index)], 0)
    return volume


def make_demo_centers(
    output_dir: str | Path,
    num_centers: int = 3,
    num_train: int = 48,
    num_test: int = 16,
    size: int = 64,
    seed: int = 0,
    anatomy: str | Callable[[np.random.Generator, int], dict[str, np.ndarray]] = procedural_anatomy,
    volumetric: bool = False,
    slices_per_subject: int = 1,
) -> Path:
    """Write a small multi-center dataset of 2D brain-MRI-like slices with label maps, one Decathlon-style folder each.

    Layout: ``output_dir/centers.json`` (``{"order": [...]}``) and, per center, ``output_dir/<center>/dataset.json``
    with ``training`` and ``test`` lists of ``{"image", "label"}`` pairs (paths relative to the center folder) in
    ``imagesTr``/``labelsTr``/``imagesTs``/``labelsTs``. Images are float32 (size, size) NIfTI, non-negative and
    roughly in [0, 1]; labels are uint8 with the values of :data:`CLASS_NAMES`. Every subject (center, split, index)
    has its own anatomy; the same arguments always give identical arrays. Every entry names its ``subject``.

    With ``slices_per_subject`` > 1 (a volumetric anatomy source: ``mni152``), each subject is one deformed volume
    registered to the atlas, and gives that many neighbouring axial slices (:func:`mni152_slices`), as prepared real
    data does (``prepare_brats`` keeps neighbouring slices of each case): most maps then have a very similar
    neighbour, of the same subject. Train and test are split by subject.

    Args:
        output_dir: the folder to write into (created if needed).
        num_centers: how many centers; see :func:`center_style` beyond ``len(CENTER_STYLES)``.
        num_train: training slices per center.
        num_test: test slices per center (with labels); may be 0.
        size: the side of the square slices in pixels.
        seed: the dataset seed.
        anatomy: the anatomy source: a name of :data:`ANATOMY_SOURCES` (``"procedural"``, ``"mni152"``) or a function
            ``anatomy(rng, size) -> dict`` as :func:`procedural_anatomy`.
        volumetric: write (size, size, size) volumes instead of slices, each made from its subject's slice by
            :func:`head_volume` (for 3D tests and benchmarks; not anatomically realistic).
        slices_per_subject: neighbouring slices per subject (the last subject of a split may have fewer);
            ``num_train`` and ``num_test`` still count slices. Above 1 needs an anatomy of :data:`VOLUME_SOURCES`.

    Returns:
        ``output_dir`` as a ``Path``.

    Raises:
        ValueError: if ``num_centers < 1``, ``num_train < 1``, ``num_test < 0``, ``size < 32``, or
            ``slices_per_subject`` is below 1, or above 1 with a slice-only anatomy or ``volumetric``.
    """
    if num_centers < 1:
        raise ValueError(f"num_centers must be >= 1, got {num_centers}.")
    if num_train < 1:
        raise ValueError(f"num_train must be >= 1, got {num_train}.")
    if num_test < 0:
        raise ValueError(f"num_test must be >= 0, got {num_test}.")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}.")
    if int(slices_per_subject) < 1:
        raise ValueError(f"slices_per_subject must be >= 1, got {slices_per_subject}.")
    stack = None
    if slices_per_subject > 1:
        stack = VOLUME_SOURCES.get(anatomy) if isinstance(anatomy, str) else None
        if stack is None or volumetric:
            raise ValueError(
                f"slices_per_subject={slices_per_subject} needs a volumetric anatomy source {sorted(VOLUME_SOURCES)} "
                f"and 2D slices, got anatomy {anatomy!r}{' with volumetric' if volumetric else ''}."
            )
    if isinstance(anatomy, str):
        if anatomy not in ANATOMY_SOURCES:
            raise ValueError(f"anatomy must be one of {sorted(ANATOMY_SOURCES)} or a function, got {anatomy!r}.")
        anatomy = ANATOMY_SOURCES[anatomy]
    if anatomy is mni152_anatomy:
        mni152_template_dir()  # a missing nilearn is reported before anything is written
    source = {
        procedural_anatomy: "procedural anatomy",
        mni152_anatomy: "anatomy of the MNI152 ICBM 2009a template under random smooth deformations",
    }.get(anatomy, f"anatomy from {getattr(anatomy, '__name__', 'a custom source')}")
    names = [center_name(index) for index in range(num_centers)]
    splits = (("training", num_train), ("test", num_test))
    description = f"TDGAN built-in demo data (synthetic{', 3D' if volumetric else ''}; {source})."
    record = {
        "command": "scripts.data.demo.make_demo_centers",
        "num_centers": num_centers,
        "num_train": num_train,
        "num_test": num_test,
        "size": size,
        "seed": seed,
        "anatomy": source,
        "volumetric": volumetric,
        "slices_per_subject": int(slices_per_subject),
    }
    with CentersWriter(output_dir, CLASS_NAMES, {"0": "MRI"}, description) as writer:
        for center_index, name in enumerate(names):
            style = center_style(center_index)
            for split_index, (key, count) in enumerate(splits):
                offset = 0 if key == "training" else num_train
                for first in range(0, count, slices_per_subject):
                    # One independent stream per subject; anatomy and appearance draw from separate children.
                    item = first // slices_per_subject
                    seq = np.random.SeedSequence([seed, center_index, split_index, item])
                    anatomy_seq, appearance_seq = seq.spawn(2)
                    n = min(slices_per_subject, count - first)
                    rng = np.random.default_rng(anatomy_seq)
                    slices = [anatomy(rng, size)] if stack is None else stack(rng, size, n)
                    appearance = np.random.default_rng(appearance_seq)
                    subject_name = f"{name}_{key}_{item:03d}"
                    for index, subject in enumerate(slices):
                        label = np.asarray(subject["label"]).astype(np.uint8)
                        if label.shape != (size, size) or label.max(initial=0) > 3:
                            raise ValueError(f"anatomy must return a ({size}, {size}) label map with values 0..3.")
                        image = render_appearance(subject, style, appearance)
                        if volumetric:
                            label, image = head_volume(label), head_volume(image)
                        stem = f"{name}_{offset + first + index:03d}"
                        writer.add(name, key, stem, image, label, subject=subject_name)
        descriptions = {name: f"{description} {center_style(i)['description']}" for i, name in enumerate(names)}
        return writer.commit(names, record, descriptions)


def ensure_demo_centers(output_dir: str | Path, **kwargs: Any) -> Path:
    """Make the demo centers with :func:`make_demo_centers` unless ``output_dir`` already holds them with the same
    arguments (recorded in ``output_dir/demo_data.json``); returns ``output_dir``."""
    output_dir = Path(output_dir)
    stamp = output_dir / "demo_data.json"
    if (output_dir / "centers.json").is_file() and made_with(stamp, kwargs):
        logger.info(f"demo centers present in {output_dir}, reused.")
        return output_dir
    if stamp.is_file():  # demo data this function wrote with other arguments: made again, never mixed
        logger.warning(f"demo centers in {output_dir} were made with {stamp.read_text().strip()}; remaking them.")
        shutil.rmtree(output_dir)
    make_demo_centers(output_dir, **kwargs)
    record_made(stamp, kwargs)
    logger.info(f"demo centers written to {output_dir}: {json.loads((output_dir / 'centers.json').read_text())}")
    return output_dir


SAMPLE_LABEL_MAPS = {"num_centers": 3, "per_center": 4, "size": 64, "seed": 7}
"""The settings of the sample label maps shipped in ``models/sample_label_maps`` (seed 7: not the demo's seed 0, so
none of them is a training label map of the released demo weights)."""


def write_sample_label_maps(
    output_dir: str | Path, num_centers: int = 3, per_center: int = 4, size: int = 64, seed: int = 7
) -> Path:
    """Write label maps only (no image) of the procedural demo anatomy, one MSD-style folder per center with a
    ``dataset.json`` (``labels``, ``modality``: what the generator makes, and a ``training`` list of ``{"label"}``
    entries) and ``centers.json``: what ``configs/inference.json`` synthesises from by default.

    Args:
        output_dir: the folder to write into (created if needed; existing files of the same names are replaced).
        num_centers: how many centers (named as the demo names them: ``center_a``, ...).
        per_center: label maps per center.
        size: the side of the square maps in pixels.
        seed: the seed (the maps of subject ``(center, item)`` are those :func:`make_demo_centers` draws with it).

    Returns:
        ``output_dir`` as a ``Path``.
    """
    output_dir = Path(output_dir)
    names = [center_name(index) for index in range(num_centers)]
    for center_index, name in enumerate(names):
        folder = output_dir / name / "labelsTr"
        folder.mkdir(parents=True, exist_ok=True)
        training = []
        for item in range(per_center):
            anatomy_seq, _ = np.random.SeedSequence([seed, center_index, 0, item]).spawn(2)
            label = procedural_anatomy(np.random.default_rng(anatomy_seq), size)["label"].astype(np.uint8)
            file = f"{name}_{item:03d}.nii.gz"
            nib.save(nib.Nifti1Image(label, np.eye(4)), folder / file)
            training.append({"label": f"labelsTr/{file}"})
        meta = {
            "name": name,
            "description": (
                f"Sample label maps of the procedural demo anatomy (no image, no patient), made by "
                f"scripts.data.demo.write_sample_label_maps(num_centers={num_centers}, per_center={per_center}, "
                f"size={size}, seed={seed}); synthesised in {name}'s style by configs/inference.json."
            ),
            "labels": CLASS_NAMES,
            "modality": {"0": "MRI"},
            "numTraining": len(training),
            "training": training,
            "test": [],
        }
        (output_dir / name / "dataset.json").write_text(json.dumps(meta, indent=4) + "\n")
    (output_dir / "centers.json").write_text(json.dumps({"order": names}, indent=4) + "\n")
    return output_dir


# ----------------------------------------------------------------------------------------------------------------------
# Preview
# ----------------------------------------------------------------------------------------------------------------------


def save_preview(output_dir: str | Path, png_path: str | Path, per_center: int = 4, scale: int | None = None) -> Path:
    """Write a PNG grid of the demo data, read back from the NIfTI files of ``output_dir``.

    One row per center (in ``centers.json`` order); each row shows the first ``per_center`` training pairs as
    image (min-max scaled per image) next to its label map in colour (see :data:`LABEL_COLORS`).

    Args:
        output_dir: a folder written by :func:`make_demo_centers`.
        png_path: where to write the PNG.
        per_center: how many (image | label) pairs per row.
        scale: nearest-neighbour upscaling factor; by default about 192 pixels per slice.

    Returns:
        ``png_path`` as a ``Path``.

    Raises:
        ValueError: if ``per_center < 1`` or ``scale < 1``.
    """
    if per_center < 1:
        raise ValueError(f"per_center must be >= 1, got {per_center}.")
    output_dir = Path(output_dir)
    order = json.loads((output_dir / "centers.json").read_text())["order"]
    rows = []
    for name in order:
        dataset = json.loads((output_dir / name / "dataset.json").read_text())
        tiles = []
        for entry in dataset["training"][:per_center]:
            image = np.asarray(nib.load(str(output_dir / name / entry["image"])).get_fdata(), dtype=np.float64)
            label = np.asarray(nib.load(str(output_dir / name / entry["label"])).get_fdata()).round().astype(int)
            span = image.max() - image.min()
            grey = np.round(255 * (image - image.min()) / (span if span > 0 else 1.0)).astype(np.uint8)
            colour = np.zeros(label.shape + (3,), dtype=np.uint8)
            for value, rgb in LABEL_COLORS.items():
                colour[label == value] = rgb
            tiles += [np.repeat(grey[..., None], 3, axis=2), colour]
        rows.append(tiles)
    size = rows[0][0].shape[0]
    if scale is None:
        scale = max(1, round(192 / size))
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}.")
    gap = max(2, scale)
    tile = size * scale
    columns = max(len(tiles) for tiles in rows)
    canvas = np.full((len(rows) * (tile + gap) + gap, columns * (tile + gap) + gap, 3), 255, dtype=np.uint8)
    for r, tiles in enumerate(rows):
        for c, array in enumerate(tiles):
            # Extra white space between (image | label) pairs.
            top, left = gap + r * (tile + gap), gap + c * (tile + gap)
            canvas[top : top + tile, left : left + tile] = np.kron(array, np.ones((scale, scale, 1), dtype=np.uint8))
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(png_path)
    return png_path


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write the demo centers and, optionally, a preview PNG.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", required=True, help="folder to write the centers into")
    parser.add_argument("--num_centers", type=int, default=3)
    parser.add_argument("--num_train", type=int, default=48, help="training slices per center")
    parser.add_argument("--num_test", type=int, default=16, help="test slices per center")
    parser.add_argument("--size", type=int, default=64, help="side of the square slices in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anatomy", default="procedural", choices=sorted(ANATOMY_SOURCES), help="anatomy source")
    parser.add_argument("--volumetric", action="store_true", help="write (size, size, size) volumes (3D demo)")
    parser.add_argument(
        "--slices_per_subject", type=int, default=1, help="neighbouring slices per subject volume (mni152 only)"
    )
    parser.add_argument("--preview", default=None, help="optional PNG path for a preview grid (2D only)")
    args = parser.parse_args(argv)
    settings = {
        "num_centers": args.num_centers,
        "num_train": args.num_train,
        "num_test": args.num_test,
        "size": args.size,
        "seed": args.seed,
        "anatomy": args.anatomy,
    }
    if args.volumetric:
        settings["volumetric"] = True
    if args.slices_per_subject != 1:
        settings["slices_per_subject"] = args.slices_per_subject
    try:
        # stamped as configs/demo.json stamps it: with the demo's defaults, the demo reuses these centers
        output_dir = ensure_demo_centers(args.output_dir, **settings)
    except (ValueError, ModuleNotFoundError) as error:
        parser.error(str(error))
    for name in json.loads((output_dir / "centers.json").read_text())["order"]:
        kind = "volumes" if args.volumetric else "slices"
        print(f"{name}: {args.num_train} training + {args.num_test} test {kind} -> {output_dir / name}")
    if args.preview:
        print(f"preview -> {save_preview(output_dir, args.preview)}")


if __name__ == "__main__":
    main()
