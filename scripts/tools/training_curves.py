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
"""What a healthy sequence's TensorBoard logs show, as one figure: each visit's epoch means of the losses (one line
per visit) and the last samples it logged (real images above the generator's of the same label maps); prints each
visit's first and last epoch means. Reads the event files the visits wrote (``<run>/visits/<visit>/tensorboard``);
writes only ``--out``.

    python -m scripts.tools.training_curves --run output/seed0/tdgan_bank --out docs/figures/training_curves.png
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

LOSSES = ("g_l1", "g_gan", "d_loss", "reminding")


def read_visit(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], np.ndarray | None]:
    """A visit's epoch means (name -> [(epoch, value)]) and the last samples it logged: the real images above the
    generator's images of the same label maps (or None without samples)."""
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    means = {
        n: [(e.step, e.value) for e in events.Scalars(f"epoch/{n}")] for n in LOSSES if f"epoch/{n}" in tags["scalars"]
    }
    rows = []
    for prefix in ("input_1", "output"):  # MONAI's TensorBoardImageHandler tags: the real images, the generated ones
        tag = next((t for t in tags["images"] if t.startswith(prefix)), None)
        if tag is not None:
            image = np.asarray(Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string)).convert("L"))
            rows.append(image)
    return means, np.concatenate(rows, axis=0) if rows else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.tools.training_curves", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a sequence's output folder (holds visits/)")
    p.add_argument("--out", required=True, help="the PNG to write")
    args = p.parse_args(argv)
    visits = sorted(d for d in (Path(args.run) / "visits").glob("*") if (d / "tensorboard").is_dir())
    if not visits:
        print(f"error: no visit with TensorBoard logs under {args.run}/visits", file=sys.stderr)
        return 2
    read = {v.name: read_visit(v) for v in visits}
    fig, axes = plt.subplots(2, len(LOSSES), figsize=(3.2 * len(LOSSES), 5.6), height_ratios=[3, 2])
    for ax, name in zip(axes[0], LOSSES):
        for visit, (means, _) in read.items():
            if means.get(name):
                steps, values = zip(*means[name])
                ax.plot(steps, values, label=visit)
        ax.set_title(name)
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=7)
    for ax, (visit, (_, image)) in zip(axes[1], read.items()):
        if image is not None:
            ax.imshow(image, cmap="gray")
        ax.set_title(f"{visit}: real (top), generated", fontsize=8)
    for ax in axes[1]:
        ax.axis("off")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print("| visit | epochs | " + " | ".join(f"{n} first -> last" for n in LOSSES) + " |")
    print("|" + " --- |" * (2 + len(LOSSES)))
    for visit, (means, _) in read.items():
        cells = [f"{m[0][1]:.3f} -> {m[-1][1]:.3f}" if (m := means.get(n)) else "n/a" for n in LOSSES]
        epochs = max((len(m) for m in means.values()), default=0)
        print(f"| {visit} | {epochs} | " + " | ".join(cells) + " |")
    print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
