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
"""The evaluation report: report.json (every figure), report.md (tables rendered from it only) and PNG figures."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["render_markdown", "write_report", "plot_grid", "plot_quality_matrices", "plot_dice_bars"]


def _fmt(v: Any) -> str:
    """A JSON value as shown in the Markdown tables: the stored number itself, so the tables add no precision."""
    if v is None:
        return "–"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(report: dict[str, Any]) -> str:
    """report.md from report.json's content alone (so every number it shows is in the JSON)."""
    methods = report["methods"]
    label = {name: m["label"] for name, m in methods.items()}
    label.update({name: t["label"] for name, t in report["segmentation"]["training_sets"].items()})
    centers = report["centers"]
    out = [f"# {report['title']}", ""]
    out += [
        f"Data: `{report['data_root']}` (centers in visiting order: {', '.join(centers)}). "
        f"Made by `{report['command']}`; every number below is in `report.json`.",
        "",
    ]
    fig = report.get("figures", {})

    out += ["## Forgetting", ""]
    out += [
        "SSIM on each center's held-out test pairs right after the first visit that included it, after the last "
        "visit, and the difference (forgetting; positive = forgotten).",
        "",
    ]
    rows = []
    for name in methods:
        f = report["forgetting"][name]
        q = report["quality"][name]
        for j, c in enumerate(centers):
            first = next((r[j] for r in q["ssim"] if r[j] is not None), None)
            rows.append([label[name], c, _fmt(first), _fmt(q["ssim"][-1][j]), _fmt(f["ssim"][c])])
    out += _table(["Generator", "Center", "SSIM after its visit", "SSIM at the end", "Forgetting"], rows)

    out += ["## Visit-by-center quality", ""]
    out += ["After every visit: SSIM / PSNR (dB) / MAE (images in [0, 1]) on every center seen so far.", ""]
    if "quality_matrix" in fig:
        out += [f"![visit-by-center SSIM]({fig['quality_matrix']})", ""]
    for name in methods:
        q = report["quality"][name]
        out += [f"**{label[name]}**", ""]
        rows = [
            [v]
            + [
                "–" if q["ssim"][i][j] is None else f"{q['ssim'][i][j]} / {q['psnr'][i][j]} / {q['mae'][i][j]}"
                for j in range(len(q["centers"]))
            ]
            for i, v in enumerate(q["visits"])
        ]
        out += _table(["After visit"] + q["centers"], rows)

    seg = report["segmentation"]
    out += ["## Downstream segmentation", ""]
    out += [
        f"A {seg['network']} trained for {seg['iterations']} iterations on each training set, tested on each "
        "center's REAL test images. Dice (95% Hausdorff distance in pixels) per class; images without the class "
        "are left out, a missed structure counts as the image diagonal.",
        "",
    ]
    if "dice_bars" in fig:
        out += [f"![downstream Dice]({fig['dice_bars']})", ""]
    for cls in seg["classes"]:
        rows = []
        for name, t in seg["training_sets"].items():
            cells = []
            for c in centers:
                s = seg["scores"][name][c][cls]
                cells.append(f"{_fmt(s['dice'])} ({_fmt(s['hd95'])})")
            rows.append([label[name], "yes" if t.get("shareable") else "no", _fmt(t["pairs"])] + cells)
        out += [f"**{cls}**", ""]
        out += _table(["Trained on", "Shareable", "Pairs"] + centers, rows)

    out += _leakage_section(report, label, centers)
    out += _privacy_section(report, label)

    grids = fig.get("grids", {})
    if grids:
        out += ["## Samples", "", "Per center: label map, real test image, and each generator's synthetic image.", ""]
        out += [f"![{c}]({p})" for c, p in grids.items()] + [""]

    out += ["## Run", ""]
    out += _table(["Step", "Seconds"], [[k, _fmt(v)] for k, v in report["timings"].items()])
    return "\n".join(out)


def _leakage_section(report: dict[str, Any], label: dict[str, str], centers: Sequence[str]) -> list[str]:
    """The report's leakage tables: near copies per synthetic set, memorisation gap, hand-off reconstruction."""
    leak = report["leakage"]
    out = ["## Leakage", ""]
    out += [
        "**Near copies.** RMS intensity distance (images in [0, 1]) from each synthetic image to its nearest real "
        "training image of the same center; closer than the "
        f"{leak['quantile']} quantile of the real-to-real nearest-neighbour distances is a near copy. *Nearest to "
        "own pair*: near copies whose nearest real image is the patient whose label map they were made from. "
        "Sets made from new label maps (which belong to no patient) are the shareable ones.",
        "",
    ]
    rows = []
    sets = report["segmentation"]["training_sets"]
    for key, per_center in leak["near_copies"].items():
        for c, r in per_center.items():
            rows.append(
                [
                    label.get(key, key),
                    "yes" if sets.get(key, {}).get("shareable") else "no",
                    c,
                    f"{_fmt(r['flagged'])} / {_fmt(r['synthetic'])}",
                    _fmt(r["flagged_fraction"]),
                    _fmt(r["synthetic_to_real_median"]),
                    _fmt(r["real_to_real_median"]),
                    _fmt(r.get("flagged_nearest_to_own_pair")),
                ]
            )
    header = ["Synthetic set", "Shareable", "Center", "Near copies", "Rate", "Synthetic→real median"]
    out += _table(header + ["Real→real median", "Nearest to own pair"], rows)

    out += [
        "**Memorisation gap.** The final generator's SSIM and PSNR (dB) on each center's TRAINING pairs minus on its "
        "held-out test pairs: near 0 for a generator that learned the distribution, large for one that memorised "
        "its training images.",
        "",
    ]
    rows = []
    for name, per_center in leak["memorisation_gap"].items():
        cells = []
        for c in centers:
            g = per_center.get(c)
            cells.append("–" if g is None else f"{_fmt(g['gap']['ssim'])} / {_fmt(g['gap']['psnr'])}")
        rows.append([label[name]] + cells)
    out += _table(["Generator", *[f"{c} (SSIM / PSNR gap)" for c in centers]], rows)

    out += [
        "**Hand-off reconstruction.** What the final hand-off ALONE lets its holder rebuild: its generator run on the "
        "label maps the hand-off carries, under their centers' codes, audited as above.",
        "",
    ]
    rows = []
    for name, r in leak["handoff_reconstruction"].items():
        if not r["carries_label_maps"]:
            rows.append([label[name], "0", "–", "–", r["summary"]])
            continue
        rows.append(
            [label[name], _fmt(r["label_maps"]), _fmt(r["near_copies"]), _fmt(r["near_copy_rate"]), r["summary"]]
        )
    out += _table(["Generator", "Label maps carried", "Near copies", "Rate", "What it means"], rows)
    return out


def _privacy_section(report: dict[str, Any], label: dict[str, str]) -> list[str]:
    """The report's differential-privacy table, from ``report["privacy"]`` (method -> center -> the ``dp`` record of
    the visit that trained on it, None without DP; see ``scripts.privacy.privacy_records``); nothing when absent."""
    records = report.get("privacy") or {}
    if not records:
        return []
    out = ["## Differential privacy", ""]
    out += [
        "Per center, what its visit spent: (epsilon, delta)-DP for one training pair (label map and image) of that "
        "center, both the discriminator's and the generator's updates privatised (docs/privacy.md). *Noise*: noise "
        "multiplier per update; *Clip*: per-sample gradient bound; *Iterations*: done / planned (fewer when the "
        "budget stopped the visit). A center trained without DP has no guarantee (–).",
        "",
    ]
    rows = []
    for name, per_center in records.items():
        for c, r in per_center.items():
            if r is None:
                rows.append([label.get(name, name), c, "–", "–", "no DP", "–", "–", "–", "–"])
                continue
            rows.append(
                [
                    label.get(name, name),
                    c,
                    _fmt(r["epsilon"]),
                    _fmt(r["delta"]),
                    r["accountant"],
                    _fmt(r["noise_multiplier"]),
                    _fmt(r["max_grad_norm"]),
                    f"{_fmt(r['iterations'])} / {_fmt(r['planned_iterations'])}",
                    "yes" if r["stopped_by_budget"] else "no",
                ]
            )
    header = ["Generator", "Center", "Epsilon", "Delta", "Accountant", "Noise", "Clip", "Iterations", "Budget stop"]
    return out + _table(header, rows)


def _imshow_image(ax: Any, img: np.ndarray, title: str | None = None) -> None:
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def plot_grid(
    path: str | os.PathLike,
    labels: np.ndarray,
    real: np.ndarray,
    synthetic: dict[str, np.ndarray],
    num_classes: int,
    title: str,
) -> None:
    """One center's grid: a row per sample with its label map, real image and each generator's synthetic image.

    Args:
        path: PNG to write.
        labels: (N, H, W) class maps.
        real: (N, H, W) images in [0, 1].
        synthetic: column title -> (N, H, W) images in [0, 1].
        num_classes: classes of the label maps (for the colour scale).
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, cols = labels.shape[0], 2 + len(synthetic)
    fig, axes = plt.subplots(n, cols, figsize=(1.3 * cols, 1.3 * n + 0.4), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(labels[i], cmap="viridis", vmin=0, vmax=num_classes - 1, interpolation="nearest")
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
        if i == 0:
            axes[i, 0].set_title("label", fontsize=8)
        _imshow_image(axes[i, 1], real[i], "real" if i == 0 else None)
        for j, (name, imgs) in enumerate(synthetic.items()):
            _imshow_image(axes[i, 2 + j], imgs[i], name.replace(", ", ",\n") if i == 0 else None)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_quality_matrices(path: str | os.PathLike, quality: dict[str, dict[str, Any]], labels: dict[str, str]) -> None:
    """The visit-by-center SSIM matrices as heatmaps, one panel per generator, values written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(quality)
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        q = quality[name]
        m = np.array([[np.nan if v is None else v for v in row] for row in q["ssim"]], dtype=float)
        ax.imshow(m, cmap="viridis", vmin=0, vmax=1)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if not np.isnan(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(q["centers"])), q["centers"], fontsize=6, rotation=30)
        ax.set_yticks(range(len(q["visits"])), [f"after {i + 1}" for i in range(len(q["visits"]))], fontsize=6)
        ax.set_title(labels[name], fontsize=8)
    fig.suptitle("SSIM on each center's test pairs after each visit", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_dice_bars(
    path: str | os.PathLike, seg: dict[str, Any], centers: Sequence[str], labels: dict[str, str]
) -> None:
    """Downstream Dice per center and training set, one panel per foreground class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes, sets = seg["classes"], list(seg["training_sets"])
    fig, axes = plt.subplots(1, len(classes), figsize=(3.4 * len(classes), 3.4), squeeze=False)
    width = 0.8 / len(sets)
    for ax, cls in zip(axes[0], classes):
        for k, name in enumerate(sets):
            vals = [seg["scores"][name][c][cls]["dice"] or 0.0 for c in centers]
            ax.bar(np.arange(len(centers)) + k * width, vals, width, label=labels[name])
        ax.set_xticks(np.arange(len(centers)) + 0.4 - width / 2, centers, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(f"{cls} Dice (real test images)", fontsize=8)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="lower center", ncol=min(4, len(sets)), frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict[str, Any], report_dir: str | os.PathLike) -> Path:
    """Write report.json and report.md (rendered from the JSON) into ``report_dir``; returns report.md's path."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(report, indent=2))
    md = report_dir / "report.md"
    md.write_text(render_markdown(report))
    return md
