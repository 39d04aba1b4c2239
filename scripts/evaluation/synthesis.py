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
"""Synthesis: label maps -> synthetic images under chosen center styles, written as an MSD-style dataset."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import NibabelWriter
from monai.transforms import MapTransform

from scripts.data.centers import center_subjects, read_center_order, read_label_maps_with_affines
from scripts.data.label_maps import check_far_from_sources, check_settings, new_label_maps
from scripts.data.transforms import check_label_mapping, mapped_label_names
from scripts.files import check_center_name, check_inside, make_private, private_dirs
from scripts.handoff import HandoffError, load_handoff
from scripts.networks import TDGANGenerator, encode_condition

__all__ = [
    "GeneratorSource",
    "load_generator",
    "center_sizes",
    "choose_styles",
    "label_folders",
    "LABEL_SOURCES",
    "SynthesisItems",
    "synthesis_datalist",
    "network_setting",
    "label_names_of",
    "modality_of",
    "Conditiond",
    "SyntheticDatasetWriter",
    "write_nifti",
    "generate_images",
]

logger = logging.getLogger(__name__)


class GeneratorSource:
    """A trained generator with what synthesis needs to know about it.

    Attributes:
        generator: the generator, in eval mode.
        codes: center name -> center code, in the order the centers were first visited.
        sizes: center name -> number of training pairs it had (from the hand-off; 1 each when unknown).
        origin: where the weights came from (for logs and reports).
    """

    def __init__(self, generator: TDGANGenerator, codes: dict[str, int], sizes: dict[str, int], origin: str) -> None:
        self.generator = generator.eval()
        self.codes = dict(codes)
        self.sizes = dict(sizes)
        self.origin = origin


def center_sizes(visits: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Center name -> training pairs, from the visit summaries of a hand-off (the latest visit of a center wins)."""
    sizes: dict[str, int] = {}
    for visit in visits:
        for name, size in zip(visit.get("centers", []), visit.get("train_sizes", [])):
            sizes[name] = int(size)
    return sizes


def load_generator(
    generator: TDGANGenerator,
    handoff: str | os.PathLike | None = None,
    ckpt_file: str | os.PathLike | None = None,
    centers: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    spatial_size: Sequence[int] | None = None,
    intensity_range: Sequence[float] = (-1.0, 1.0),
) -> GeneratorSource:
    """Load trained weights into ``generator``: from a hand-off (weights, center registry and sizes), or from a plain
    state dict (``models/model.pt``) whose center codes are given by ``centers`` (code i = ``centers[i]``).

    A hand-off goes through the whole hand-off contract (:py:func:`scripts.handoff.load_handoff`) and must have been
    trained at ``spatial_size`` (when given) and with images scaled to ``intensity_range`` (the range synthesis maps
    back to [0, 1]).

    Raises:
        HandoffError: unreadable, malformed, unauthenticated or mismatched hand-off (another spatial size, ...).
        ValueError: neither source given, or a checkpoint without ``centers``.
        FileNotFoundError: the checkpoint file does not exist.
    """
    if handoff:
        h = load_handoff(handoff, generator.settings, spatial_size, intensity_range)
        generator.load_state_dict(h.generator)
        sizes = center_sizes(h.visits)
        codes = h.codes
        origin = str(handoff)
    elif ckpt_file:
        if not Path(ckpt_file).is_file():
            raise FileNotFoundError(f"generator weights {ckpt_file}: file not found (train one with the demo first).")
        if not centers:
            raise ValueError(f"{ckpt_file}: a plain checkpoint needs `centers` (center names in code order).")
        state = torch.load(ckpt_file, map_location="cpu", weights_only=True)
        try:
            generator.load_state_dict(state)
        except RuntimeError as e:
            raise HandoffError(f"{ckpt_file}: weights do not fit this generator configuration: {e}") from e
        codes = {name: i for i, name in enumerate(centers)}
        sizes = {}
        origin = str(ckpt_file)
    else:
        raise ValueError("load_generator needs a hand-off or a checkpoint file; got neither.")
    sizes = {name: sizes.get(name, 1) for name in codes}
    return GeneratorSource(generator.to(device), codes, sizes, origin)


def choose_styles(style: str | Sequence[str], source: GeneratorSource, count: int, seed: int = 0) -> list[str]:
    """The center whose style each of ``count`` samples gets.

    Args:
        style: a center name (every sample in that style), ``"mixture"`` (centers drawn at random with probability
            proportional to their training sizes recorded in the hand-off), or a list of names, one per sample.
        source: the generator and its registry.
        count: number of samples.
        seed: seed of the mixture draw.

    Raises:
        ValueError: an unknown center, or a list of the wrong length.
    """
    known = list(source.codes)
    if isinstance(style, str) and style == "mixture":
        weights = np.array([source.sizes[n] for n in known], dtype=float)
        rng = np.random.default_rng(seed)
        return [known[i] for i in rng.choice(len(known), size=count, p=weights / weights.sum())]
    names = [style] * count if isinstance(style, str) else list(style)
    if len(names) != count:
        raise ValueError(f"style list has {len(names)} entries for {count} label maps.")
    unknown = sorted({n for n in names if n not in source.codes})
    if unknown:
        raise ValueError(f"style {unknown} is not a center this generator knows; known: {known} or 'mixture'.")
    return names


def label_folders(dataset_dir: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The center folders under ``dataset_dir``: those of its ``centers.json`` in order, or ``dataset_dir`` itself
    when it is one MSD-style center folder; for a list of folders, those of each in turn (e.g. a site's own center
    and synthetic sets, for one segmentation training)."""
    if not isinstance(dataset_dir, (str, os.PathLike)):
        return [folder for one in dataset_dir for folder in label_folders(one)]
    dataset_dir = Path(dataset_dir)
    if (dataset_dir / "centers.json").is_file():
        return [dataset_dir / name for name in read_center_order(dataset_dir)]
    if (dataset_dir / "dataset.json").is_file():
        return [dataset_dir]
    raise FileNotFoundError(
        f"{dataset_dir}: neither centers.json (several center folders) nor dataset.json (one center folder) found."
    )


LABEL_SOURCES = ("new", "given")
"""``new``: label maps made from each center's own maps that belong to no patient (shareable); ``given``: the label
maps of the folders as they are (for training label maps: NOT shareable, the generator reproduces their images)."""


class SynthesisItems(list):
    """:py:func:`synthesis_datalist`'s items (a list), with ``ceilings``: center folder name -> the record of the
    ceiling its new maps were checked against (rule, quantiles, derived values; no patient), for the dataset's
    provenance."""

    def __init__(self, items: Sequence[dict[str, Any]] = (), ceilings: dict[str, Any] | None = None) -> None:
        super().__init__(items)
        self.ceilings = dict(ceilings or {})


def synthesis_datalist(
    source: GeneratorSource,
    label_dirs: Sequence[str | os.PathLike],
    spatial_dims: int,
    spatial_size: Sequence[int],
    style: str | Sequence[str] = "own",
    data_list_key: str = "training",
    seed: int = 0,
    label_source: str = "new",
    new_maps_per_center: int | None = None,
    label_map_settings: dict[str, Any] | None = None,
    label_mapping: dict[Any, int] | None = None,
) -> list[dict[str, Any]]:
    """One item per label map to synthesise, with the center style it will be synthesised in.

    With ``label_source="new"`` (the default, and the only shareable choice for training folders), each center's
    label maps are only the SOURCE of new maps (:py:func:`scripts.data.label_maps.new_label_maps`: deformed,
    lesions relocated and recombined), each checked within the ceiling of every source map before anything is written
    (by default calibrated from the center's own maps and their subjects:
    :py:func:`scripts.data.label_maps.calibrate_ceiling`); ``"given"`` synthesises the folders' own label maps.

    Args:
        source: the trained generator and its registry.
        label_dirs: MSD-style center folders; only their label maps are read.
        spatial_dims: spatial dimensions of the generator.
        spatial_size: size the label maps are read (and synthesised) at.
        style: ``"own"`` (each label map in the style of the center folder it came from, which the generator must
            know), a center name, ``"mixture"`` (drawn in proportion to the centers' training sizes recorded in the
            hand-off), or a list with one name per label map.
        data_list_key: which list of each folder's dataset.json (``training`` or ``test``).
        seed: seed of the mixture draw and of the new label maps.
        label_source: ``"new"`` or ``"given"`` (:data:`LABEL_SOURCES`).
        new_maps_per_center: new maps per center (default: as many as the center has source maps).
        label_map_settings: keyword arguments of ``new_label_maps`` (``relocatable``, ``hosts``, ``flip_axes``,
            ``ceiling`` (null: calibrated), ``ceiling_quantile``, ...).
        label_mapping: the site's label value -> class of the folders' label maps, as the visit reads them
            (:py:func:`scripts.data.transforms.check_label_mapping`); None: the label values are the classes.

    Returns:
        a :py:class:`SynthesisItems` list of items ``{"label": uint8 tensor (1, *spatial), "affine": float64 tensor
        (4, 4), "center": name, "code": int, "label_source": str, "nearest_source_similarity": float}`` (and the
        ceiling of each center's new maps as its ``ceilings``); ``label_source`` is ``"<folder>/<relative path>"``
        for a given map and ``"new:<folder>"`` for a new one (which source map it came from is not recorded: that
        would name a patient). ``affine`` is where the map lies, at ``spatial_size`` (the file's affine as MONAI's
        ``Resized`` updates it): a given map's own; a new map, a deformed recombination of the center's maps that
        belongs to none of them, gets the grid of the center's FIRST source map (the folder's maps of one center
        normally share a grid; one map's geometry, not a patient's identity).

    Raises:
        LabelMapTooCloseError: a new map is closer to a source map than the ceiling allows.
        InputError: a malformed ``label_mapping``, or a label map with a value it does not name (one line).
    """
    if label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {label_source!r}.")
    mapping = check_label_mapping(label_mapping, source.generator.settings["num_classes"])
    settings = check_settings(label_map_settings)
    items, folders, ceilings = SynthesisItems(), [], {}
    for index, d in enumerate(map(Path, label_dirs)):
        stacked, names, affines = read_label_maps_with_affines(d, spatial_dims, spatial_size, data_list_key, mapping)
        maps = list(stacked)
        if label_source == "given":
            items += [
                {"label": m, "affine": a, "label_source": n, "nearest_source_similarity": 1.0}
                for m, a, n in zip(maps, affines, names)
            ]
            folders += [d.name] * len(maps)
            continue
        sources, subjects = stacked, center_subjects(d, data_list_key)
        made = new_label_maps(
            sources, new_maps_per_center or len(maps), seed=seed + index, subjects=subjects, **settings
        )
        near = check_far_from_sources(made.maps, sources, made.ceiling)
        if made.ceiling is not None:
            ceilings[d.name] = made.ceiling.record()
        items += [
            {
                "label": m,
                "affine": affines[0].clone(),
                "label_source": f"new:{d.name}",
                "nearest_source_similarity": round(float(v), 4),
            }
            for m, v in zip(made.maps, near)
        ]
        folders += [d.name] * len(made.maps)
    if not items:
        raise ValueError(f"no label maps under '{data_list_key}' in {[str(d) for d in label_dirs]}.")
    styles = choose_styles(folders if style == "own" else style, source, len(items), seed)
    for item, name in zip(items, styles):
        item["center"] = name
        item["code"] = source.codes[name]
    items.ceilings = ceilings
    return items


def network_setting(handoff: str | os.PathLike | None, key: str, default: Any) -> Any:
    """A generator setting recorded in ``handoff`` (so a config builds the generator the hand-off needs, at the
    spatial size it was trained at), or ``default`` when no hand-off is given.

    Args:
        handoff: the hand-off file, or None.
        key: a generator setting (``TDGANGenerator.settings``) or a recorded preprocessing setting
            (``spatial_size``, ``intensity_range``).
        default: the value without a hand-off.

    Raises:
        HandoffError: the hand-off does not pass the hand-off contract (:py:func:`scripts.handoff.load_handoff`).
    """
    if not handoff:
        return default
    if not os.path.isfile(handoff):
        load_handoff(handoff)  # raises the hand-off's own "file not found" error
    value = dict(_handoff_settings(str(handoff), os.stat(handoff).st_mtime_ns))[key]
    return list(value) if isinstance(value, tuple) else value


@functools.lru_cache(maxsize=8)
def _handoff_settings(path: str, mtime_ns: int) -> tuple[tuple[str, Any], ...]:
    """A hand-off's generator and preprocessing settings, read (and fully checked) once per file version, not once
    per config key."""
    h = load_handoff(path)
    return tuple(h.network.items()) + tuple((k, tuple(v)) for k, v in h.preprocessing.items())


def label_names_of(
    label_dirs: Sequence[str | os.PathLike], label_mapping: dict[Any, int] | None = None
) -> dict[str, str]:
    """The ``labels`` of the first center folder's dataset.json (class index -> name); with ``label_mapping``, those
    of the classes its label values map to (:py:func:`scripts.data.transforms.mapped_label_names`)."""
    meta = json.loads((Path(label_dirs[0]) / "dataset.json").read_text())
    return mapped_label_names(meta.get("labels", {}), label_mapping)


def modality_of(label_dirs: Sequence[str | os.PathLike], channels: int) -> dict[str, str]:
    """The ``modality`` a synthetic dataset.json records (one entry per image channel, as MSD's): the first center
    folder's when it declares ``channels`` entries, else ``{"0": "synthetic", ...}``. Workflows that read
    ``image_channels`` from a dataset.json (:py:func:`scripts.data.centers.dataset_settings`) read it from here."""
    meta = json.loads((Path(label_dirs[0]) / "dataset.json").read_text())
    modality = meta.get("modality")
    if isinstance(modality, dict) and len(modality) == int(channels):
        return {str(k): str(v) for k, v in modality.items()}
    return {str(c): "synthetic" for c in range(int(channels))}


class Conditiond(MapTransform):
    """Builds the generator input ``image`` (label x center one-hot, ``max_centers * num_classes`` channels) from an
    item's ``label`` map and center ``code``. The label map is kept."""

    def __init__(self, num_classes: int, max_centers: int, label_key: str = "label", code_key: str = "code") -> None:
        super().__init__(keys=[label_key])
        self.num_classes = num_classes
        self.max_centers = max_centers
        self.label_key = label_key
        self.code_key = code_key

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        label = torch.as_tensor(d[self.label_key]).as_subclass(torch.Tensor).long()
        code = torch.tensor([int(d[self.code_key])])
        d["image"] = encode_condition(label[None], code, self.num_classes, self.max_centers)[0]
        return d


def write_nifti(path: str | os.PathLike, array: torch.Tensor, affine: torch.Tensor | None, dtype: type) -> None:
    """Write a channel-first array (C, *spatial) as NIfTI with MONAI's ``NibabelWriter`` at ``affine`` (4x4 voxel to
    world; identity when None), without resampling.

    A 2D slice gets a trailing singleton axis, (H, W, 1[, C]), so the full 4x4 affine (slice spacing and position
    included) is kept: the writer's 2D path handles only 3x3 affines. Every reader of the bundle drops the axis again
    (:py:class:`~scripts.data.transforms.EnsureSpatialDimsd`).
    """
    data = array.detach().cpu().as_subclass(torch.Tensor).numpy().astype(dtype)
    if data.ndim == 3:
        data = data[..., None]
    affine = torch.eye(4, dtype=torch.float64) if affine is None else torch.as_tensor(affine, dtype=torch.float64)
    writer = NibabelWriter(output_dtype=dtype)
    writer.set_data_array(data, channel_dim=0, squeeze_end_dims=False)
    writer.set_metadata({"affine": affine, "original_affine": affine}, resample=False)
    writer.write(str(path), verbose=False)


class SyntheticDatasetWriter:
    """Ignite handler of the synthesis evaluator (run with ``decollate=False``): writes every ``pred`` (synthetic
    image) with its label map as an MSD-style dataset (``imagesTr/``, ``labelsTr/``, ``dataset.json``) that any
    MONAI segmentation bundle can read.

    Files are written into a hidden folder beside ``output_dir`` and renamed into place only when the run completes,
    so a failed run leaves no partial dataset. Images are stored in [0, 1] as float32, labels as uint8, both with
    MONAI's ``NibabelWriter`` at the item's ``affine`` (the label map's grid, see :py:func:`synthesis_datalist`); only
    synthetic images and label maps are written. They are derived from patients' label maps (and a generator trained
    on their images), so everything is owner-only (files 0o600, folders 0o700) whatever the umask, and every file
    name is checked to stay inside the dataset folder.

    Args:
        output_dir: the dataset folder.
        label_names: class index -> name (dataset.json ``labels``).
        description: dataset.json ``description``.
        overwrite: replace an existing ``output_dir``; otherwise an existing one is an error.
        label_source: where the label maps came from (``"new"``: made from the centers' maps, belonging to no
            patient; ``"given"``: the folders' own maps), recorded in dataset.json with whether the set is shareable.
        label_map_settings: how new label maps were made (recorded in dataset.json).
        ceilings: center -> the ceiling each center's new maps were checked against (``SynthesisItems.ceilings``:
            rule, quantiles and derived values), recorded in dataset.json.
        shareable: whether the set may leave the center (recorded; default: ``label_source == "new"``).
        modality: dataset.json ``modality`` (one entry per image channel); default ``{"0": "synthetic"}``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        label_names: dict[str, str],
        description: str = "TDGAN synthetic images",
        overwrite: bool = False,
        label_source: str = "new",
        label_map_settings: dict[str, Any] | None = None,
        shareable: bool | None = None,
        modality: dict[str, str] | None = None,
        ceilings: dict[str, Any] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.ceilings = dict(ceilings or {})
        self.modality = dict(modality or {"0": "synthetic"})
        self.label_names = dict(label_names)
        self.description = description
        self.overwrite = overwrite
        self.label_source = label_source
        self.label_map_settings = check_settings(label_map_settings)
        self.shareable = label_source == "new" if shareable is None else bool(shareable)
        self._tmp: Path | None = None
        self.items: list[dict[str, Any]] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_batch)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._failed)

    def _started(self, engine: Any) -> None:
        if self.output_dir.exists() and not self.overwrite:
            raise FileExistsError(f"{self.output_dir}: exists; choose another output_dir or pass --overwrite true.")
        private_dirs(self.output_dir.parent)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.output_dir.name}.", dir=self.output_dir.parent))
        make_private(self._tmp)
        for sub in ("imagesTr", "labelsTr"):
            (self._tmp / sub).mkdir()
            make_private(self._tmp / sub)
        self.items = []

    def _write_batch(self, engine: Any) -> None:
        batch, preds = engine.state.batch, engine.state.output["pred"]
        affines = batch.get("affine")
        for i, pred in enumerate(preds):
            center = check_center_name(str(batch["center"][i]), "synthesis style")
            name = f"synth_{len(self.items):05d}_{center}.nii.gz"
            image01 = ((pred.detach().float().clamp(-1, 1) + 1) / 2).as_subclass(torch.Tensor)
            label = torch.as_tensor(batch["label"][i]).as_subclass(torch.Tensor).to(torch.uint8)
            affine = None if affines is None else affines[i]  # the label map's grid: image and label lie where it lies
            for sub, array, dtype in (("imagesTr", image01, np.float32), ("labelsTr", label, np.uint8)):
                path = check_inside(self._tmp / sub / name, self._tmp / sub, "synthetic file")
                write_nifti(path, array, affine, dtype)
                make_private(path)
            self.items.append(
                {
                    "image": f"imagesTr/{name}",
                    "label": f"labelsTr/{name}",
                    "center": center,
                    "label_source": str(batch["label_source"][i]),
                    "nearest_source_similarity": round(float(batch["nearest_source_similarity"][i]), 4),
                }
            )

    def _completed(self, engine: Any) -> None:
        meta = {
            "name": self.output_dir.name,
            "description": self.description,
            "synthetic": True,
            "shareable": self.shareable,
            "label_source": self.label_source,
            "label_maps": (
                {
                    "made_by": "scripts.data.label_maps.new_label_maps",
                    **self.label_map_settings,
                    "ceilings": self.ceilings,
                }
                if self.label_source == "new"
                else {"made_by": "the label folders' own maps (patients' label maps: not shareable)"}
            ),
            "labels": self.label_names,
            "modality": self.modality,
            "numTraining": len(self.items),
            "training": self.items,
            "test": [],
        }
        (self._tmp / "dataset.json").write_text(json.dumps(meta, indent=4))
        make_private(self._tmp / "dataset.json")
        if self.output_dir.exists():
            shutil.rmtree(self.output_dir)
        os.replace(self._tmp, self.output_dir)
        self._tmp = None
        counts = {
            c: sum(it["center"] == c for it in self.items) for c in dict.fromkeys(it["center"] for it in self.items)
        }
        logger.info(f"synthetic dataset written: {self.output_dir} ({len(self.items)} pairs; styles {counts}).")

    def _failed(self, engine: Any, e: Exception) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        raise e


@torch.no_grad()
def generate_images(
    generator: TDGANGenerator, labels: torch.Tensor, codes: torch.Tensor, batch_size: int = 16
) -> torch.Tensor:
    """Generator output in [-1, 1] for label maps (N, 1, *spatial) under center codes (N,), batch by batch."""
    device = next(generator.parameters()).device
    out = [
        generator(generator.condition(labels[i : i + batch_size].to(device), codes[i : i + batch_size].to(device)))
        .float()
        .cpu()
        for i in range(0, labels.shape[0], batch_size)
    ]
    return torch.cat(out)
