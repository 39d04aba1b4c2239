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
"""TDGAN's perceptual (feature) loss; the adversarial loss is MONAI's ``PatchAdversarialLoss`` (see the trainer)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import PerceptualLoss as _MonaiPerceptualLoss
from torch import nn

from scripts.data.checks import InputError

__all__ = [
    "ClassWeightedL1",
    "MonaiPerceptualNetwork",
    "PERCEPTUAL_HUB_REPO",
    "PerceptualLoss",
    "VGG16Features",
    "perceptual_cache_files",
]

logger = logging.getLogger(__name__)


class PerceptualLoss(nn.Module):
    """The perceptual term ``P(prediction, target)``: a scalar from a frozen feature network.

    Args:
        feature_network: either a module mapping an image batch to a list of feature maps (e.g.
            :py:class:`VGG16Features`; the loss is then the mean over layers of the per-layer MSE, the paper's P), or a
            :py:class:`MonaiPerceptualNetwork` (a complete distance of two batches, used as it is). It is put in eval
            mode and frozen.
    """

    def __init__(self, feature_network: nn.Module) -> None:
        super().__init__()
        self.features = feature_network.eval().requires_grad_(False)
        self.pairwise = isinstance(feature_network, MonaiPerceptualNetwork)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """The feature network stays in eval mode whatever the trainer asks."""
        return self

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.pairwise:
            return self.features(prediction, target)
        with torch.no_grad():
            target_feats = self.features(target)
        pred_feats = self.features(prediction)
        return torch.stack([F.mse_loss(p, t) for p, t in zip(pred_feats, target_feats)]).mean()


class ClassWeightedL1:
    """The L1 term with each pixel weighted by its class in the label map: ``sum(w |p - t|) / sum(w)`` per image, then
    the mean over images, so the term stays on the scale of the plain L1 and one image's value reads only its own
    row (a per-sample loss, as a differentially private visit needs). Without weights it is ``F.l1_loss``.

    pix2pix's L1 averages over pixels, so a small structure (a lesion of 1-2 % of the image) weighs little in it; a
    weight above 1 for its class makes it count more (what that did on the demo: docs/generator.md).

    Args:
        class_weights: class index -> weight (> 0; classes not named weigh 1), or None for the plain L1.
        num_classes: the label maps' number of classes (each named class must be below it).

    Raises:
        InputError: not a map, a class outside 0..num_classes - 1, or a weight outside (0, 1000] (one line).
    """

    def __init__(self, class_weights: Mapping[int | str, float] | None, num_classes: int) -> None:
        self.weights: torch.Tensor | None = None
        if class_weights is None:
            return
        if not isinstance(class_weights, Mapping) or not class_weights:
            raise InputError(
                f"l1_class_weights must be null or a non-empty {{class: weight}} map, got {class_weights!r}."
            )
        table = torch.ones(int(num_classes))
        for key, value in class_weights.items():
            text = str(key).strip() if isinstance(key, int | str) and not isinstance(key, bool) else ""
            cls = int(text) if text.isascii() and text.isdigit() else None
            if cls is None or not 0 <= cls < num_classes:
                raise InputError(f"l1_class_weights: class {key!r} is not one of 0..{num_classes - 1}.")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < float(value) <= 1000:
                raise InputError(f"l1_class_weights: the weight of class {cls} must be in (0, 1000], got {value!r}.")
            table[cls] = float(value)
        self.weights = table

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            return F.l1_loss(prediction, target)
        self.weights = self.weights.to(prediction.device)
        w = self.weights[label.long()].expand_as(prediction)  # (B, 1, ...) label -> (B, C, ...) weights
        per_image = (w * (prediction - target).abs()).flatten(1).sum(1) / w.flatten(1).sum(1)
        return per_image.mean()


PERCEPTUAL_HUB_REPO = "Project-MONAI/perceptual-models"
"""The torch.hub repository through which ``monai.losses.PerceptualLoss`` builds its medical feature networks (ref
``main``); its code and the weights it reads must already be in the local torch.hub cache."""

_HUB_WEIGHTS = {  # network_type -> the weights file that the hub code reads
    "radimagenet_resnet50": "RadImageNet-ResNet50_notop.pth",
    "medicalnet_resnet10_23datasets": "medicalnet_resnet_10_23dataset.pth",
    "medicalnet_resnet50_23datasets": "medicalnet_resnet50_23datasets.pth",
}
_DEFAULT_NETWORK = {2: "radimagenet_resnet50", 3: "medicalnet_resnet10_23datasets"}


def perceptual_cache_files(network_type: str, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Where the torch.hub cache must hold what ``monai.losses.PerceptualLoss`` loads for ``network_type``.

    The hub code is ``<hub>/Project-MONAI_perceptual-models_main/``. Its current version reads the weights from
    ``<hub>/monai_checkpoints/<file>`` (RadImageNet first from ``<hub>/<file>``), downloading only when absent;
    earlier versions read MedicalNet's through huggingface_hub, from ``<hub>/models--MONAI--checkpoints/snapshots/
    <revision>/<file>``. Any of these places will do.

    Args:
        network_type: one of ``radimagenet_resnet50``, ``medicalnet_resnet10_23datasets``,
            ``medicalnet_resnet50_23datasets``.
        cache_dir: the torch.hub directory; None: ``torch.hub.get_dir()`` (``$TORCH_HOME/hub``).

    Returns:
        ``hub_dir``; ``hubconf`` (the hub code's entry file) and ``weights`` (the places, first the one the current
        hub code writes), as expected paths; ``found_hubconf`` and ``found_weights``: the files present, or None.
    """
    hub_dir = Path(cache_dir if cache_dir is not None else torch.hub.get_dir())
    owner, name = PERCEPTUAL_HUB_REPO.split("/")
    hubconf = hub_dir / f"{owner}_{name}_main" / "hubconf.py"
    filename = _HUB_WEIGHTS[network_type]
    weights = [hub_dir / "monai_checkpoints" / filename]
    if network_type.startswith("radimagenet_"):
        weights.insert(0, hub_dir / filename)
    else:
        weights.append(hub_dir / "models--MONAI--checkpoints" / "snapshots" / "*" / filename)
    found = [f for w in weights for f in sorted(w.parent.parent.glob(f"*/{filename}") if "*" in w.parts else [w])]
    found = [f for f in found if f.is_file()]
    return {
        "hub_dir": hub_dir,
        "hubconf": hubconf,
        "weights": weights,
        "found_hubconf": hubconf if hubconf.is_file() else None,
        "found_weights": found[0] if found else None,
    }


@contextlib.contextmanager
def _hugging_face_offline() -> Iterator[None]:
    """Keep earlier versions of the MedicalNet hub code, which call ``hf_hub_download``, on the local cache: no probe of
    huggingface.co for the latest revision first (a firewall that drops packets makes that probe wait)."""
    previous_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # read when huggingface_hub is first imported
    constants = sys.modules.get("huggingface_hub.constants")  # already imported: its flag was read then
    previous_flag = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if previous_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = previous_flag


class MonaiPerceptualNetwork(nn.Module):
    """MONAI's perceptual loss on a pretrained medical network, built from the local torch.hub cache only.

    ``monai.losses.PerceptualLoss`` with RadImageNet's ResNet50 (2D; 2.5D slices in 3D with ``is_fake_3d``) or
    MedicalNet's 3D ResNet (3D), as the configured ``perceptual_network`` of a visit (wrapped by
    :py:class:`PerceptualLoss`). MONAI fetches these through torch.hub (the code of
    :py:data:`PERCEPTUAL_HUB_REPO`, which reads the weights); nothing can be downloaded here, so the cache is
    checked first (:py:func:`perceptual_cache_files`) and a missing file is one clear error before anything could
    touch the network; with the files there, neither torch.hub (ref ``main`` cached: no probe) nor the hub code
    (weights present: no download; Hugging Face offline mode on for its earlier versions) goes online. The hub code in
    the cache is run as it is (MONAI trusts the repository): that folder must be as trusted as the installed
    packages. A package that the hub code imports and that is not installed is reported in one line too.

    Inputs are the bundle's images in [-1, 1] with 1 channel (MRI) or 3 (H&E, RGB). They are mapped to [0, 1], the
    range MONAI's RadImageNet path expects (it repeats 1 channel to 3, reorders RGB to BGR and subtracts the
    ImageNet mean; MedicalNet z-scores each batch and runs every channel through its 1-channel network, so range
    does not matter there). The distance is computed in float32 with autocast off: its channel normalisation
    ``x / sqrt(sum x^2 + 1e-10)`` underflows in float16.

    Args:
        spatial_dims: 2 or 3.
        image_channels: channels of the images compared; RadImageNet takes 1 or 3.
        network_type: ``radimagenet_resnet50``, ``medicalnet_resnet10_23datasets`` or
            ``medicalnet_resnet50_23datasets``; None: RadImageNet in 2D, MedicalNet ResNet10 in 3D.
        cache_dir: the torch.hub directory holding the hub code and the weights; None: ``torch.hub.get_dir()``
            (``$TORCH_HOME/hub``). When given, MONAI also makes it this process's torch.hub directory.
        is_fake_3d: 3D with RadImageNet: average the 2D loss over slices along the three axes.
        fake_3d_ratio: fraction of the slices of each axis used in 2.5D (drawn with torch's global generator).

    Raises:
        ValueError: an unknown ``network_type``, MedicalNet in 2D or 2.5D, or RadImageNet with other than 1 or 3
            channels.
        FileNotFoundError: the hub code or the weights are not in the cache.
        ImportError: the cached hub code needs a package that is not installed.
    """

    def __init__(
        self,
        spatial_dims: int,
        image_channels: int = 1,
        network_type: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        is_fake_3d: bool = False,
        fake_3d_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        network_type = network_type or _DEFAULT_NETWORK[spatial_dims]
        if network_type not in _HUB_WEIGHTS:
            raise ValueError(f"network_type must be one of {sorted(_HUB_WEIGHTS)} (or null), got {network_type!r}.")
        medicalnet = network_type.startswith("medicalnet_")
        if medicalnet and (spatial_dims != 3 or is_fake_3d):
            raise ValueError(f"{network_type} is a 3D network: use it with spatial_dims 3 and is_fake_3d false.")
        if spatial_dims == 3 and not medicalnet and not is_fake_3d:
            raise ValueError(f"{network_type} is a 2D network: in 3D set is_fake_3d true (2.5D) or use MedicalNet.")
        if not medicalnet and image_channels not in (1, 3):
            raise ValueError(
                f"{network_type} compares 1- or 3-channel (RGB) images, got image_channels={image_channels}."
            )
        files = perceptual_cache_files(network_type, cache_dir)
        missing = [] if files["found_hubconf"] else [f"the hub code {files['hubconf']}"]
        if not files["found_weights"]:
            missing.append("the weights at " + " or ".join(str(w) for w in files["weights"]))
        if missing:
            fake = ", is_fake_3d=True" if is_fake_3d else ", is_fake_3d=False" if spatial_dims == 3 else ""
            build = f"monai.losses.PerceptualLoss(spatial_dims={spatial_dims}, network_type='{network_type}'{fake})"
            raise FileNotFoundError(
                f"perceptual_network {network_type}: not in the torch.hub cache {files['hub_dir']} (missing "
                f"{' and '.join(missing)}); nothing can be downloaded here: on a machine with internet run "
                f'`python -c "import monai; {build}"`, then copy that machine\'s torch.hub folder '
                f'(`python -c "import torch; print(torch.hub.get_dir())"`) to {files["hub_dir"]} or point TORCH_HOME '
                "(the folder above hub/) or cache_dir at the copy; or set perceptual_network to null to train without "
                "the perceptual term."
            )
        self.network_type = network_type
        self.spatial_dims = spatial_dims
        try:
            with warnings.catch_warnings(), _hugging_face_offline():
                warnings.filterwarnings("ignore", message="MedicalNet networks support channel-wise loss")
                self.loss = _MonaiPerceptualLoss(
                    spatial_dims=spatial_dims,
                    network_type=network_type,
                    is_fake_3d=is_fake_3d,
                    fake_3d_ratio=fake_3d_ratio,
                    cache_dir=None if cache_dir is None else str(cache_dir),
                )
        except ImportError as e:
            raise ImportError(
                f"perceptual_network {network_type}: the torch.hub code in {files['hubconf'].parent} needs the Python "
                f"package {e.name!r}, which is not installed: pip install {e.name}, or set perceptual_network to "
                "null to train without the perceptual term."
            ) from e
        nn.Module.train(self, False)  # eval, once (``train`` below keeps it so)
        self.requires_grad_(False)
        logger.info(f"perceptual network {network_type} from {files['found_weights']}.")

    def train(self, mode: bool = True) -> MonaiPerceptualNetwork:
        """The pretrained network stays in eval mode (its batch norms keep their statistics)."""
        return self

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Perceptual distance (a scalar) of two image batches (B, C, *spatial) in [-1, 1]."""
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            return self.loss((prediction.float() + 1.0) / 2.0, (target.float() + 1.0) / 2.0)


# torchvision's VGG16 `features` layout up to relu4_3: conv widths, "M" = max pool.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)
# indices in that `features` sequence of relu1_2, relu2_2, relu3_3, relu4_3
_VGG16_TAPS = (3, 8, 15, 22)


class VGG16Features(nn.Module):
    """VGG16 feature taps (relu1_2, relu2_2, relu3_3, relu4_3) for a perceptual loss, from LOCAL weights.

    No weights are downloaded: ``weights_path`` is a torchvision-format VGG16 state dict on disk (keys
    ``features.<i>.weight`` / ``.bias``; classifier keys are ignored). Images in [-1, 1] are mapped to ImageNet
    normalisation; single-channel images are repeated to three channels. 2D only.

    Args:
        weights_path: path of the state dict. Required unless ``random_weights_for_timing`` is True.
        random_weights_for_timing: build the network with random weights. Such a network measures nothing
            perceptual; it exists only so that step-time benchmarks can include a VGG16-sized feature network.

    Raises:
        ValueError: when no path is given (and random weights were not asked for), or the file lacks VGG16 keys.
        FileNotFoundError: when ``weights_path`` does not exist.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, random_weights_for_timing: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_ch = int(item)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.random_weights = weights_path is None
        if weights_path is None:
            if not random_weights_for_timing:
                raise ValueError(
                    "VGG16Features needs weights_path: a local torchvision VGG16 state dict (no weights can be "
                    "downloaded). Set perceptual_network to null to train without the perceptual term."
                )
            logger.warning("VGG16Features has RANDOM weights: for timing only, it is not a perceptual loss.")
            return
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"VGG16 weights file not found: {weights_path}")
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        wanted = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        own = self.features.state_dict()
        missing = sorted(set(own) - set(wanted))
        if missing:
            raise ValueError(f"{weights_path} is not a torchvision VGG16 state dict: missing features.{missing[0]}")
        self.features.load_state_dict({k: wanted[k] for k in own})

    def forward(self, image: torch.Tensor) -> Sequence[torch.Tensor]:
        if image.shape[1] == 1:
            image = image.expand(-1, 3, *image.shape[2:])
        x = ((image + 1.0) / 2.0 - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _VGG16_TAPS:
                taps.append(x)
        return taps
