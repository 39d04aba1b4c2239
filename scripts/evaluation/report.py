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

from scripts.data.demo import LABEL_COLORS

__all__ = [
    "render_markdown",
    "write_report",
    "plot_grid",
    "plot_quality_matrices",
    "plot_dice_bars",
    "plot_distribution",
    "label_colormap",
]


def _fmt(v: Any) -> str:
    """A JSON value as shown in the Markdown tables: the stored number itself, so the tables add no precision; an
    interval over seeds (``{"mean", "low", "high"}``) as ``mean [low, high]`` (the mean alone with one seed)."""
    if v is None:
        return "–"
    if isinstance(v, dict) and "mean" in v:
        return str(v["mean"]) if v["low"] is None else f"{v['mean']} [{v['low']}, {v['high']}]"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _mean(v: Any) -> float:
    """The value plotted for a number or an interval (NaN for None)."""
    if isinstance(v, dict):
        v = v["mean"]
    return float("nan") if v is None else float(v)


def _bounds(v: Any) -> tuple[float, float] | None:
    """(low, high) of an interval over seeds, or None."""
    if isinstance(v, dict) and v.get("low") is not None and v.get("high") is not None:
        return float(v["low"]), float(v["high"])
    return None


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
    seeds = report["seeds"]
    out = [f"# {report['title']}", ""]
    out += [
        f"Data: `{report['data_root']}` (centers in visiting order: {', '.join(centers)}). "
        f"Made by `{report['command']}`; every number below is in `report.json`.",
        "",
        f"Seeds: {', '.join(str(s) for s in seeds)} (each method trained, synthesised from and segmented once per "
        "seed). A number shown as `mean [low, high]` is the mean over the seeds and its "
        f"{report['intervals']['over_seeds']}; with one seed, the number of that seed alone. Per-image intervals: "
        f"{report['intervals']['per_image']}.",
        "",
    ]
    fig = report.get("figures", {})
    out += _budget_section(report, label)

    out += ["## Forgetting", ""]
    out += [
        "SSIM on each center's held-out test pairs right after the first visit that included it, after the last "
        "visit, and the difference (forgetting; positive = forgotten). n/a: no visit came after the center's (the "
        "last center, and every center of a single-visit method), so there was nothing to forget it in.",
        "",
    ]
    rows = []
    for name in methods:
        f = report["forgetting"][name]
        q = report["quality"][name]
        for j, c in enumerate(centers):
            first = next((r[j] for r in q["ssim"] if r[j] is not None), None)
            forgot = f["ssim"][c]
            rows.append(
                [label[name], c, _fmt(first), _fmt(q["ssim"][-1][j]), "n/a" if forgot is None else _fmt(forgot)]
            )
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
                "–"
                if q["ssim"][i][j] is None
                else f"{_fmt(q['ssim'][i][j])} / {_fmt(q['psnr'][i][j])} / {_fmt(q['mae'][i][j])}"
                for j in range(len(q["centers"]))
            ]
            for i, v in enumerate(q["visits"])
        ]
        out += _table(["After visit"] + q["centers"], rows)

    out += _segmentation_section(report, label, centers, fig)
    out += _distribution_section(report, label, centers, fig)
    out += _leakage_section(report, label, centers)
    out += _privacy_section(report, label)

    grids = fig.get("grids", {})
    if grids:
        out += [
            "## Samples",
            "",
            f"Per center: label map (colours as in the data preview), real test image, and each generator's synthetic "
            f"image (seed {seeds[0]}).",
            "",
        ]
        out += [f"![{c}]({p})" for c, p in grids.items()] + [""]

    out += ["## Run", ""]
    out += _table(["Step", "Seconds"], [[k, _fmt(v)] for k, v in report["timings"].items()])
    return "\n".join(out)


def _budget_section(report: dict[str, Any], label: dict[str, str]) -> list[str]:
    """The budget table: what each method spent (the same in every seed, checked)."""
    budget = report["budget"]
    out = ["## Budget", ""]
    if budget["reference"]:
        out += [f"Rule: {budget['rule']} Reference: {label[budget['reference']]}.", ""]
    else:
        out += ["No budget reference: every method trained for its own epochs.", ""]
    rows = []
    for name, b in budget["methods"].items():
        rows.append(
            [
                label[name],
                _fmt(b["generator_updates"]),
                _fmt(b["images_seen"]),
                _fmt(b["data_passes"]),
                _fmt(b["visits"]),
                _fmt(b["epochs"]),
                _fmt(b["epoch_length"]),
                _fmt(b["discriminators"]),
                "yes" if b["discriminator_center_code"] else "no",
            ]
        )
    header = ["Generator", "Generator updates", "Images seen", "Data passes", "Visits", "Epochs", "Epoch length"]
    out += _table(header + ["Discriminators per visit", "Discriminator sees the center"], rows)
    return out


def _segmentation_section(
    report: dict[str, Any], label: dict[str, str], centers: Sequence[str], fig: dict[str, Any]
) -> list[str]:
    """Dice and HD95 per class, center and training set, with the test images holding the class, then the per-image
    bootstrap intervals of every seed."""
    seg = report["segmentation"]
    out = ["## Downstream segmentation", ""]
    out += [
        f"A {seg['network']} trained for {seg['iterations']} iterations on each training set, tested on each "
        "center's REAL test images. Dice (95% Hausdorff distance in pixels) per class, and n = the test images that "
        "hold the class (images without it are left out; a missed structure counts as the image diagonal).",
        "",
    ]
    if "dice_bars" in fig:
        out += [f"![downstream Dice]({fig['dice_bars']})", ""]
    for cls in seg["classes"]:
        rows, boot = [], []
        for name, t in seg["training_sets"].items():
            cells, boot_cells = [], []
            for c in centers:
                s = seg["scores"][name][c][cls]
                cells.append(f"{_fmt(s['dice'])} ({_fmt(s['hd95'])}), n = {_fmt(s['n'])}")
                boot_cells.append(
                    "; ".join(
                        f"[{_fmt(d)}] ({'–' if h is None else f'[{_fmt(h)}]'})"
                        for d, h in zip(s["dice_bootstrap"], s["hd95_bootstrap"])
                    )
                    if s["n"]
                    else "–"
                )
            rows.append([label[name], "yes" if t.get("shareable") else "no", _fmt(t["pairs"])] + cells)
            boot.append([label[name]] + boot_cells)
        out += [f"**{cls}**", ""]
        out += _table(["Trained on", "Shareable", "Pairs"] + list(centers), rows)
        out += [f"*{cls}, per-image bootstrap 95 % interval of Dice (HD95) within each seed, seeds in order:*", ""]
        out += _table(["Trained on"] + list(centers), boot)
    relative = seg.get("relative_to_real_all")
    if relative:
        out += [
            "**Relative to real-trained.** Each set's Dice divided by that of the UNet trained on every center's real "
            "images, within each seed, then the mean over seeds [t interval]; a set made for one site (its own real "
            "images, alone or with the other centers' synthetic pairs) at that site's center only.",
            "",
        ]
        for cls in seg["classes"]:
            rows = [
                [label[name]] + [_fmt(per_center[c][cls]) for c in centers]
                for name, per_center in relative["ratios"].items()
            ]
            out += [f"*{cls}, fraction of real-all Dice:*", ""]
            out += _table(["Trained on"] + list(centers), rows)
    return out


def _distribution_section(
    report: dict[str, Any], label: dict[str, str], centers: Sequence[str], fig: dict[str, Any]
) -> list[str]:
    """FID, KID and MS-SSIM diversity per shareable synthetic set and center, with the real-image row."""
    dist = report.get("distribution")
    if not dist:
        return ["## Distribution metrics", "", "Not measured: they need the real-trained UNet (real_baselines).", ""]
    ms = dist["ms_ssim"]
    out = ["## Distribution metrics", ""]
    out += [
        f"Each method's shareable synthetic set (new label maps) per center style against {dist['reference']}. "
        f"FID (`monai.metrics.FIDMetric`) and KID (polynomial-kernel MMD, unbiased) on {dist['features']}; lower is "
        "closer. MS-SSIM: the mean MS-SSIM between pairs of distinct images of the set (`monai.metrics."
        f"MultiScaleSSIMMetric`, {ms['kernel_size']}-pixel Gaussian window, sigma {ms['kernel_sigma']}, "
        f"{ms['scales']} scales weighted {', '.join(str(w) for w in ms['weights'])}): diversity, near the real "
        "images' value is right, near 1 is mode collapse.",
        "",
        f"**Small samples.** {dist['bias']}",
        "",
    ]
    if "distribution" in fig:
        out += [f"![distribution metrics]({fig['distribution']})", ""]
    scores = dist["scores"]
    for metric, title in (("fid", "FID"), ("kid", "KID"), ("ms_ssim", "MS-SSIM diversity")):
        rows = []
        for key, per_center in scores.items():
            name = label.get(key, f"Real {key.removeprefix('real_')} images")
            rows.append([name] + [_fmt(per_center[c][metric]) if c in per_center else "–" for c in centers])
        if metric == "ms_ssim":
            rows.append(["Reference images"] + [_fmt(dist["reference_ms_ssim"].get(c)) for c in centers])
        out += [f"**{title}**", ""]
        out += _table(["Images"] + list(centers), rows)
    rows = [["Reference images"] + [_fmt(next(iter(scores.values())).get(c, {}).get("real_images")) for c in centers]]
    for key, per_center in scores.items():
        name = label.get(key, f"Real {key.removeprefix('real_')} images")
        rows.append([name] + [_fmt(per_center[c]["images"]) if c in per_center else "–" for c in centers])
    out += ["**Sample sizes** (images per center)", ""]
    out += _table(["Images"] + list(centers), rows)
    return out


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
                    "yes" if sets.get(key, {}).get("shareable") or key in report["methods"] else "no",
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
    out += _ceilings(report.get("new_label_maps"))

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
            rows.append([label[name], "0", "–", "–", "carries no label maps (local reminding): nothing to run it on"])
            continue
        rows.append(
            [
                label[name],
                _fmt(r["label_maps"]),
                _fmt(r["near_copies"]),
                _fmt(r["near_copy_rate"]),
                "its generator turns carried label maps into near copies at this rate",
            ]
        )
    out += _table(["Generator", "Label maps carried", "Near copies", "Rate", "What it means"], rows)
    return out


def _ceilings(record: dict[str, Any] | None) -> list[str]:
    """How far the shareable sets' new label maps had to stay from every patient's map, per center."""
    ceilings = (record or {}).get("ceilings") or {}
    if not ceilings:
        return []
    rules = sorted({c.get("rule", "") for c in ceilings.values()})
    out = [
        "**New label maps.** A new map is kept only when its Dice to every patient's map of its center stays under "
        "these ceilings (mean over foreground classes, and per class), set at each center from its own maps: "
        + "; ".join(rules)
        + ". Derived values only: no patient or file is recorded.",
        "",
    ]
    classes = sorted({k for c in ceilings.values() for k in c.get("per_class_dice", {})}, key=str)
    rows = []
    for c, v in ceilings.items():
        by_held = v.get("mean_foreground_dice_by_classes_held") or {}
        held = "; ".join(f"{k}: {_fmt(x)}" for k, x in by_held.items()) or "–"
        per_class = [_fmt(v.get("per_class_dice", {}).get(k)) for k in classes]
        rows.append([c, _fmt(v.get("mean_foreground_dice")), held, *per_class])
    header = ["Center", "Mean foreground Dice", "Mean, by classes held", *[f"class {k}" for k in classes]]
    return out + _table(header, rows)


def label_colormap(num_classes: int) -> Any:
    """The data preview's label colours (:data:`scripts.data.demo.LABEL_COLORS`) as a matplotlib colormap over
    ``num_classes`` classes (classes beyond those get tab10 colours)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    extra = colormaps["tab10"]
    colours = [
        tuple(c / 255 for c in LABEL_COLORS[k]) if k in LABEL_COLORS else extra(k % 10)[:3] for k in range(num_classes)
    ]
    return ListedColormap(colours)


def _privacy_section(report: dict[str, Any], label: dict[str, str]) -> list[str]:
    """The report's differential-privacy table, from ``report["privacy"]`` (method -> center -> the ``dp`` record of
    the visit that trained on it, None without DP; see ``scripts.privacy.privacy_records``); nothing when absent."""
    records = report.get("privacy") or {}
    if not records:
        return []
    out = ["## Differential privacy", ""]
    out += [
        "Per center, what its visit spent: (epsilon, delta)-DP for one training pair (label map and image) of that "
        "center (docs/privacy.md). *Mode*: which updates read the center's pairs under DP (both, or the "
        "discriminator only, the generator then learning from public maps); *Noise*: noise multiplier per update; "
        "*Clip*: per-sample gradient bound; *Iterations*: done / planned (fewer when the budget stopped the visit). "
        "A center trained without DP has no guarantee (–); a public center needs none.",
        "",
    ]
    rows = []
    for name, per_center in records.items():
        for c, r in per_center.items():
            if r is None or r.get("public"):
                why = r.get("accountant", "public data") if r else "no DP"
                rows.append([label.get(name, name), c, "–", "–", "–", why, "–", "–", "–", "–"])
                continue
            rows.append(
                [
                    label.get(name, name),
                    c,
                    r.get("mode", "both"),
                    _fmt(r["epsilon"]),
                    _fmt(r["delta"]),
                    r["accountant"],
                    _fmt(r["noise_multiplier"]),
                    _fmt(r["max_grad_norm"]),
                    f"{_fmt(r['iterations'])} / {_fmt(r['planned_iterations'])}",
                    "yes" if r["stopped_by_budget"] else "no",
                ]
            )
    header = ["Generator", "Center", "Mode", "Epsilon", "Delta", "Accountant", "Noise", "Clip", "Iterations"]
    header.append("Budget stop")
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
    class_names: Sequence[str],
    title: str,
) -> None:
    """One center's grid: a row per sample with its label map (in the data preview's colours, with a legend), real
    image and each generator's synthetic image.

    Args:
        path: PNG to write.
        labels: (N, H, W) class maps.
        real: (N, H, W) images in [0, 1].
        synthetic: column title -> (N, H, W) images in [0, 1].
        class_names: names of the label classes, background first (the legend).
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    k = len(class_names)
    cmap = label_colormap(k)
    n, cols = labels.shape[0], 2 + len(synthetic)
    fig, axes = plt.subplots(n, cols, figsize=(1.4 * cols, 1.4 * n + 0.9), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(labels[i], cmap=cmap, vmin=-0.5, vmax=k - 0.5, interpolation="nearest")
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
        if i == 0:
            axes[i, 0].set_title("label", fontsize=8)
        _imshow_image(axes[i, 1], real[i], "real" if i == 0 else None)
        for j, (name, imgs) in enumerate(synthetic.items()):
            _imshow_image(axes[i, 2 + j], imgs[i], name.replace(", ", ",\n") if i == 0 else None)
    handles = [Patch(facecolor=cmap(c), edgecolor="0.5", label=class_names[c]) for c in range(k)]
    fig.legend(handles=handles, loc="lower center", ncol=k, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_quality_matrices(path: str | os.PathLike, quality: dict[str, dict[str, Any]], labels: dict[str, str]) -> None:
    """The visit-by-center SSIM matrices as heatmaps, one panel per generator, with a shared colour bar; each cell
    shows the mean SSIM and, over several seeds, its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(quality)
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names) + 1.0, 3.4), squeeze=False)
    image = None
    for ax, name in zip(axes[0], names):
        q = quality[name]
        m = np.array([[_mean(v) for v in row] for row in q["ssim"]], dtype=float)
        image = ax.imshow(m, cmap="viridis", vmin=0, vmax=1)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if np.isnan(m[i, j]):
                    continue
                b = _bounds(q["ssim"][i][j])
                text = f"{m[i, j]:.2f}" + ("" if b is None else f"\n[{b[0]:.2f}, {b[1]:.2f}]")
                colour = "k" if m[i, j] > 0.6 else "w"
                ax.text(j, i, text, ha="center", va="center", fontsize=8 if b is None else 6.5, color=colour)
        ax.set_xticks(range(len(q["centers"])), q["centers"], fontsize=8, rotation=20)
        ax.set_yticks(range(len(q["visits"])), [f"after visit {i + 1}" for i in range(len(q["visits"]))], fontsize=8)
        ax.set_xlabel("test pairs of center", fontsize=8)
        ax.set_title(labels[name], fontsize=9)
    fig.suptitle("SSIM of G(label, center) on each center's test pairs after each visit", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    bar = fig.colorbar(image, ax=list(axes[0]), fraction=0.02, pad=0.02)
    bar.set_label("SSIM", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _error_bars(values: Sequence[Any], fallback: Sequence[Any] | None = None) -> np.ndarray:
    """(2, n) distances below and above each mean: the interval over seeds, else ``fallback``'s (low, high) pairs
    (e.g. one seed's per-image bootstrap interval), else none."""
    err = np.zeros((2, len(values)))
    for i, v in enumerate(values):
        b = _bounds(v)
        if b is None and fallback is not None and fallback[i]:
            b = tuple(fallback[i])
        if b is not None and not np.isnan(_mean(v)):
            err[:, i] = [max(0.0, _mean(v) - b[0]), max(0.0, b[1] - _mean(v))]
    return err


def plot_dice_bars(
    path: str | os.PathLike, seg: dict[str, Any], centers: Sequence[str], labels: dict[str, str]
) -> None:
    """Downstream Dice per center and training set, one panel per foreground class, with error bars: the interval over
    seeds, or with one seed its per-image bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes, sets = seg["classes"], list(seg["training_sets"])
    fig, axes = plt.subplots(1, len(classes), figsize=(3.6 * len(classes), 3.6), squeeze=False)
    width = 0.8 / len(sets)
    several = False
    for ax, cls in zip(axes[0], classes):
        for k, name in enumerate(sets):
            cells = [seg["scores"][name][c][cls] for c in centers]
            values = [cell["dice"] for cell in cells]
            several = several or any(_bounds(v) for v in values)
            boot = [cell["dice_bootstrap"][0] if len(cell["dice_bootstrap"]) == 1 else None for cell in cells]
            heights = [0.0 if np.isnan(_mean(v)) else _mean(v) for v in values]
            ax.bar(
                np.arange(len(centers)) + k * width,
                heights,
                width,
                yerr=_error_bars(values, boot),
                capsize=2,
                error_kw={"elinewidth": 0.8},
                label=labels[name],
            )
        ax.set_xticks(np.arange(len(centers)) + 0.4 - width / 2, centers, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{cls} Dice (real test images)", fontsize=9)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="lower center", ncol=min(4, len(sets)), frameon=False)
    note = "error bars: 95 % t-interval over seeds" if several else "error bars: per-image bootstrap 95 % interval"
    fig.suptitle(f"Downstream Dice ({note})", fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_distribution(
    path: str | os.PathLike, distribution: dict[str, Any], centers: Sequence[str], labels: dict[str, str]
) -> None:
    """FID, KID and MS-SSIM diversity per center and set (one panel each), with the interval over seeds as error
    bars; MS-SSIM also marks the reference images' value per center."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = distribution["scores"]
    sets = list(scores)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), squeeze=False)
    width = 0.8 / len(sets)
    x = np.arange(len(centers))
    for ax, (metric, title) in zip(axes[0], (("fid", "FID"), ("kid", "KID"), ("ms_ssim", "MS-SSIM diversity"))):
        for k, key in enumerate(sets):
            values = [scores[key].get(c, {}).get(metric) for c in centers]
            heights = [0.0 if np.isnan(_mean(v)) else _mean(v) for v in values]
            ax.bar(x + k * width, heights, width, yerr=_error_bars(values), capsize=2, label=labels.get(key, key))
        if metric == "ms_ssim":
            ref = [_mean(distribution["reference_ms_ssim"].get(c)) for c in centers]
            ax.hlines(ref, x - width / 2, x + 0.8 - width / 2, colors="k", linestyles="--", label="reference images")
        ax.set_xticks(x + 0.4 - width / 2, centers, fontsize=8)
        ax.set_title(f"{title} (lower is closer)" if metric != "ms_ssim" else title, fontsize=9)
    handles, names = axes[0, 2].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="lower center", ncol=min(4, len(names)), frameon=False)
    fig.suptitle(f"Synthetic vs {distribution['reference']} (small samples: FID is biased upwards)", fontsize=9)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], report_dir: str | os.PathLike) -> Path:
    """Write report.json and report.md (rendered from the JSON) into ``report_dir``; returns report.md's path."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(report, indent=2))
    md = report_dir / "report.md"
    md.write_text(render_markdown(report))
    return md
