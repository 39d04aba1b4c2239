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
"""What differential privacy costs: the evaluation protocol for TDGAN without DP and at target epsilons, per DP mode
(both updates / discriminator only), with or without public pretraining, at several training-set sizes, over seeds;
one curve (JSON and figure) of utility against epsilon; and, with ``--variants``, each DP setting again with other
knobs at the same epsilon (learning rate, batch, epochs, clipping bound), in the same report.

A development tool of the repository, not part of the bundle's package; run from the repository root as
``python -m tools.dp_tradeoff``; its results: docs/privacy.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from scripts.data.centers import center_datalist
from scripts.evaluation.intervals import t_interval
from scripts.evaluation.protocol import Evaluation
from scripts.evaluation.report import write_report
from scripts.files import made_with, record_made
from scripts.handoff import load_handoff
from scripts.privacy import MODES, is_public, privacy_records
from scripts.visit import BUNDLE_ROOT, run_visit

__all__ = [
    "settings_for",
    "check_variants",
    "method_configs",
    "make_public_center",
    "pretrain",
    "TradeoffEvaluation",
    "tradeoff_rows",
    "render_tradeoff",
    "curve_points",
    "render_curve",
    "plot_curve",
    "run_tradeoff",
    "main",
]

logger = logging.getLogger(__name__)

COMMAND = "python -m tools.dp_tradeoff"
PUBLIC_CENTER = "public_mni152"
"""The public center's name (its folder's): apart from every demo center's (a public center registered under a
private center's name would share its code)."""
SHORT_MODE = {"both": "both", "discriminator": "disc"}


def settings_for(
    epsilons: Sequence[float],
    max_grad_norm: float = 1.0,
    accountant: str = "rdp",
    modes: Sequence[str] = ("both",),
    pretraining: Sequence[bool] = (False,),
    public_label_maps: str | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict]:
    """The compared settings, all TDGAN with ``local`` reminding (what DP requires): ``no_dp`` (and ``no_dp_pre``, from
    the public hand-off, when pretraining is compared) and one ``dp_eps<E>_<mode>[_pre]`` per target epsilon, DP mode
    and pretraining (the noise chosen by Opacus so that each center's visit spends E; mode ``discriminator`` reads
    ``public_label_maps``); then each DP setting again per entry of ``variants`` (:py:func:`check_variants`), as
    ``dp_eps<E>_<mode>[_pre]_<variant>``: the same epsilon with other knobs.

    Raises:
        ValueError: an unknown mode, mode ``discriminator`` without public label maps, or a refused variant.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown or ("discriminator" in modes and not public_label_maps):
        raise ValueError(f"modes must be of {list(MODES)} (discriminator with public label maps), got {list(modes)}.")
    variants = check_variants(variants)
    out: dict[str, dict[str, Any]] = {}
    for pre in dict.fromkeys(pretraining):
        tag = ", public pretraining" if pre else ""
        out["no_dp" + ("_pre" if pre else "")] = {
            "label": f"TDGAN local, no DP{tag}",
            "dp": {"enabled": False},
            "mode": None,
            "pretrained": pre,
            "target_epsilon": None,
        }
    for eps in epsilons:
        for mode in modes:
            for pre in dict.fromkeys(pretraining):
                dp = {
                    "enabled": True,
                    "target_epsilon": float(eps),
                    "max_grad_norm": float(max_grad_norm),
                    "accountant": accountant,
                    "mode": mode,
                }
                if mode == "discriminator":
                    dp["public_label_maps"] = str(public_label_maps)
                what = "both updates" if mode == "both" else "discriminator only, public maps"
                name = f"dp_eps{eps:g}_{SHORT_MODE[mode]}" + ("_pre" if pre else "")
                label = f"TDGAN local, DP epsilon {eps:g} ({what}){', public pretraining' if pre else ''}"
                for variant, knobs in {None: {}, **variants}.items():
                    out[name + (f"_{variant}" if variant else "")] = {
                        "label": label + (f", {_describe(knobs)}" if variant else ""),
                        "dp": {**dp, **{k[len("dp#") :]: v for k, v in knobs.items() if k.startswith("dp#")}},
                        "visit": {k: v for k, v in knobs.items() if not k.startswith("dp#")},
                        "variant": variant,
                        "mode": mode,
                        "pretrained": pre,
                        "target_epsilon": float(eps),
                    }
    return out


VARIANT_KEYS = ("lr", "batch_size", "epochs_constant", "epochs_decay", "dp#max_grad_norm", "dp#accountant")
"""What a variant may change at a fixed epsilon: the learning rate, the batch (the sampling rate), the number of
updates (epochs) and the clipping bound; not what the comparison holds fixed (epsilon, mode, reminding, seed)."""


def _describe(knobs: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('dp#', '')} {v}" for k, v in knobs.items())


def check_variants(variants: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``variants`` (name -> {setting: value}) checked: names of letters, digits, ``.`` and ``-``; settings of
    :py:data:`VARIANT_KEYS` only, with a positive number (an integer for the batch and the epochs) or, for the
    accountant, ``rdp`` / ``prv``.

    Raises:
        ValueError: one line naming the refused variant, setting or value.
    """
    out = {}
    for name, knobs in (variants or {}).items():
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in ".-" for c in name):
            raise ValueError(f"variant name {name!r}: use letters, digits, '.' and '-' only.")
        if not isinstance(knobs, dict) or not knobs:
            raise ValueError(f"variant {name!r} must be a non-empty object of settings, got {knobs!r}.")
        for key, value in knobs.items():
            if key not in VARIANT_KEYS:
                raise ValueError(f"variant {name!r}: setting {key!r} is not one of {list(VARIANT_KEYS)}.")
            if key == "dp#accountant":
                ok = value in ("rdp", "prv")
            elif key in ("batch_size", "epochs_constant", "epochs_decay"):
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= (key != "epochs_decay")
            else:
                ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
            if not ok:
                raise ValueError(f"variant {name!r}: {key} {value!r} is not an allowed value.")
        out[name] = dict(knobs)
    return out


def method_configs(
    settings: dict[str, dict], folder: str | Path, pretrained: str | Path | None = None
) -> dict[str, dict[str, Any]]:
    """Write one override file of the sequence config per setting (its visit overrides: local reminding and the
    ``dp`` section; a pretrained setting's sequence starts from ``<pretrained>/seed<seed>/handoff.pt``, the public
    visit of its seed, as ``VisitSequence``'s ``handoff_in``) into ``folder``; returns the evaluation's
    ``methods``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    methods = {}
    for name, s in settings.items():
        path = folder / f"{name}.json"
        content = {
            "comment": f"dp_tradeoff setting {name}: {s['label']}.",
            "run_name": name,
            "visit_overrides#reminding_source": "local",
            "visit_overrides#dp": s["dp"],
        }
        if s.get("pretrained"):
            if pretrained is None:
                raise ValueError(f"setting {name} is pretrained but no folder of public hand-offs was given.")
            content["sequence#handoff_in"] = (
                f"${str(Path(pretrained).resolve())!r} + '/seed' + str(@visit_overrides.get('seed', 0)) + '/handoff.pt'"
            )
        path.write_text(json.dumps(content, indent=4) + "\n")
        methods[name] = {"label": s["label"], "configs": [str(path.resolve())]}
        if s.get("visit"):  # over the evaluation's visit_overrides, which a config file cannot override
            methods[name]["visit_overrides"] = dict(s["visit"])
    return methods


def make_public_center(
    folder: str | Path, pairs: int = 48, size: int = 64, seed: int = 1000, anatomy: str | None = None
) -> Path:
    """The public center of the curve: ``pairs`` demo pairs (label maps and images) made from the MNI152 template
    (``anatomy`` None: ``mni152`` where nilearn is installed, else ``procedural``) with a seed no demo center uses, in
    the demo generator's first style, as ``<folder>/public_mni152`` (reused when made with the same arguments).
    What a site would take from a public atlas or an openly licensed dataset (docs/privacy.md)."""
    from scripts.data.demo import make_demo_centers, mni152_template_dir

    if anatomy is None:
        try:
            mni152_template_dir()
            anatomy = "mni152"
        except ImportError:
            anatomy = "procedural"
            logger.warning("nilearn is not installed: the public center is made of procedural anatomy instead.")
    folder = Path(folder)
    center, stamp = folder / PUBLIC_CENTER, folder / "public_center.json"
    made = {"pairs": int(pairs), "size": int(size), "seed": int(seed), "anatomy": anatomy}
    if (center / "dataset.json").is_file() and made_with(stamp, made):
        return center
    shutil.rmtree(folder, ignore_errors=True)
    make_demo_centers(
        folder / "made", num_centers=1, num_train=pairs, num_test=0, size=size, seed=seed, anatomy=anatomy
    )
    (folder / "made" / "center_a").rename(center)  # relative paths in dataset.json: the folder moves whole
    shutil.rmtree(folder / "made")
    record_made(stamp, made)
    return center


def pretrain(
    public_center: str | Path,
    folder: str | Path,
    seeds: Sequence[int],
    visit_overrides: dict[str, Any],
    bundle_root: str | Path = BUNDLE_ROOT,
) -> dict[int, Path]:
    """One public visit per seed (``dp#public_data``: no DP, recorded as public), the sequences' visit settings, into
    ``<folder>/seed<seed>/handoff.pt`` (a finished one is reused); shared by every pretrained setting and size."""
    out = {}
    for seed in seeds:
        settings = {
            **visit_overrides,
            "label_mapping": None,  # the public center holds the bundle's classes
            "seed": int(seed),
            "reminding_source": "local",
            "dp": {"enabled": False, "public_data": True},
        }
        run_visit([Path(public_center)], Path(folder) / f"seed{seed}", None, None, settings, None, bundle_root)
        out[int(seed)] = Path(folder) / f"seed{seed}" / "handoff.pt"
    return out


class TradeoffEvaluation(Evaluation):
    """The evaluation protocol, whose budget check counts a pretrained setting's public visit (recorded as public in
    its hand-off) on top of the centers' visits."""

    def spent(self, name: str, sequence: dict[str, Any], plan: dict[str, Any], seed: int) -> dict[str, Any]:
        visits = load_handoff(sequence["final_handoff"]).visits
        public = sum(int(v["iterations"]) for v in visits if is_public(v.get("dp")))
        out = super().spent(name, sequence, {**plan, "generator_updates": plan["generator_updates"] + public}, seed)
        return {**out, "public_generator_updates": public}


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return round(sum(kept) / len(kept), 4) if kept else None


def _point(value: Any) -> Any:
    """A report number: the mean over seeds where the report holds an interval (``{"mean", "low", ...}``)."""
    return value["mean"] if isinstance(value, dict) and "mean" in value else value


def _handoffs(method: dict[str, Any]) -> list[str]:
    """A method's final hand-offs, one per seed."""
    final = method["final_handoff"]
    return list(final) if isinstance(final, list) else [final]


def _per_seed(value: Any, seeds: int) -> list[float | None]:
    """A report number's values per seed (an interval's ``per_seed``, a plain number for every seed)."""
    if isinstance(value, dict) and "per_seed" in value:
        return list(value["per_seed"])
    return [value] * seeds


def _over_centers(values: Sequence[Any], seeds: int) -> dict[str, Any] | None:
    """The mean over centers of per-center report numbers, per seed, then its t interval over the seeds."""
    rows = [_per_seed(v, seeds) for v in values if v is not None]
    per_seed = [
        _mean([r[s] for r in rows]) if rows and all(r[s] is not None for r in rows) else None for s in range(seeds)
    ]
    return t_interval(per_seed, decimals=4)


def _utility(report: dict[str, Any], name: str, dice_class: str) -> dict[str, Any]:
    """A method's utility, as intervals over seeds of the mean over centers: final test SSIM (the generator after
    the last visit, each center under its code), the synthetic-trained UNet's ``dice_class`` Dice, and that Dice
    relative to the real-trained UNet's (each seed's ratio; None without the real baseline)."""
    seeds, centers, seg = len(report["seeds"]), report["centers"], report["segmentation"]
    quality = report["quality"][name]
    last = dict(zip(quality["centers"], quality["ssim"][-1]))
    ratios = ((seg.get("relative_to_real_all") or {}).get("ratios") or {}).get(name)
    return {
        "final_test_ssim": _over_centers([last.get(c) for c in centers], seeds),
        "dice": _over_centers([seg["scores"][name][c][dice_class]["dice"] for c in centers], seeds),
        "relative_dice": _over_centers([ratios[c][dice_class] for c in centers], seeds) if ratios else None,
    }


def tradeoff_rows(report: dict[str, Any], dice_class: str = "lesion") -> dict[str, dict[str, Any]]:
    """One row per method of an evaluation report that holds ``privacy``: epsilon per center (a public center: None),
    near-copy rate of its synthetic sets (new label maps; the patients' own training maps where made), memorisation
    gap (SSIM and PSNR, mean over centers), utility (:py:func:`_utility`: final test SSIM, ``dice_class`` Dice from
    new label maps, relative to real), first-center forgetting (SSIM) and seconds per training step (all visits)."""
    centers = report["centers"]
    leak = report["leakage"]
    rows = {}
    for name, method in report["methods"].items():
        near = {}
        for key, what in ((name, "new_maps"), (f"{name}_training_maps", "training_maps")):
            per_center = leak["near_copies"].get(key)
            if per_center:
                flagged = sum(_point(r["flagged"]) for r in per_center.values())
                total = sum(_point(r["synthetic"]) for r in per_center.values())
                near[what] = round(flagged / total, 4) if total else None
        gaps = leak["memorisation_gap"].get(name, {})
        visits = [v for path in _handoffs(method) for v in load_handoff(path).visits]
        seconds, steps = sum(v["seconds"] for v in visits), sum(v["iterations"] for v in visits)
        privacy = report.get("privacy", {}).get(name, {})
        utility = _utility(report, name, dice_class)
        rows[name] = {
            "label": method["label"],
            "epsilon": {c: (r or {}).get("epsilon") for c, r in privacy.items()},
            "delta": {c: (r or {}).get("delta") for c, r in privacy.items()},
            "noise_multiplier": {c: (r or {}).get("noise_multiplier") for c, r in privacy.items()},
            "near_copy_rate": near,
            "memorisation_gap_ssim": _mean([_point(gaps[c]["gap"]["ssim"]) for c in centers if c in gaps]),
            "memorisation_gap_psnr": _mean([_point(gaps[c]["gap"]["psnr"]) for c in centers if c in gaps]),
            "final_test_ssim": _point(utility["final_test_ssim"]),
            "dice": _point(utility["dice"]),
            "relative_dice": _point(utility["relative_dice"]),
            "dice_class": dice_class,
            "first_center_forgetting_ssim": _point(report["forgetting"][name]["ssim"][centers[0]]),
            "seconds_per_step": round(seconds / steps, 4) if steps else None,
        }
    return rows


def render_tradeoff(rows: dict[str, dict[str, Any]]) -> str:
    """The trade-off as a Markdown table (every number is in ``tradeoff.json``)."""

    def cell(v: Any) -> str:
        if isinstance(v, dict):
            return ", ".join(f"{k} {cell(x)}" for k, x in v.items()) if any(x is not None for x in v.values()) else "–"
        return "–" if v is None else str(v)

    header = [
        "Setting",
        "Epsilon per center",
        "Noise multiplier",
        "Near-copy rate (new maps / training maps)",
        "Memorisation gap SSIM / PSNR",
        "Final test SSIM",
        "Dice / relative to real",
        "First-center forgetting (SSIM)",
        "Seconds per step",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows.values():
        near = r["near_copy_rate"]
        cells = [
            r["label"],
            cell(r["epsilon"]),
            cell(r["noise_multiplier"]),
            f"{cell(near.get('new_maps'))} / {cell(near.get('training_maps'))}",
            f"{cell(r['memorisation_gap_ssim'])} / {cell(r['memorisation_gap_psnr'])}",
            cell(r["final_test_ssim"]),
            f"{cell(r['dice'])} / {cell(r['relative_dice'])} ({r['dice_class']})",
            cell(r["first_center_forgetting_ssim"]),
            cell(r["seconds_per_step"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def curve_points(report: dict[str, Any], settings: dict[str, dict], dice_class: str = "lesion") -> list[dict[str, Any]]:
    """One point per setting of one size's report: the setting (mode, pretraining, target epsilon), what it spent
    (the largest epsilon over the private centers), and its utility (:py:func:`_utility`)."""
    data_root = Path(report["data_root"])
    pairs = [len(center_datalist(data_root / c, 0)) for c in report["centers"]]
    points = []
    for name, s in settings.items():
        privacy = report.get("privacy", {}).get(name, {})
        spent = [r["epsilon"] for r in privacy.values() if r and not is_public(r)]
        noise = [r["noise_multiplier"] for r in privacy.values() if r and not is_public(r)]
        points.append(
            {
                "pairs_per_center": round(sum(pairs) / len(pairs)),
                "method": name,
                "label": s["label"],
                "mode": s["mode"],
                "pretrained": s["pretrained"],
                "target_epsilon": s["target_epsilon"],
                "variant": s.get("variant"),
                "epsilon": max(spent) if spent else None,
                "noise_multiplier": noise[0] if noise else None,
                **_utility(report, name, dice_class),
                "dice_class": dice_class,
                "seeds": report["seeds"],
            }
        )
    return points


def render_curve(points: Sequence[dict[str, Any]]) -> str:
    """The curve's numbers as text, one line per point (mean [low, high] over seeds)."""

    def fmt(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, dict):
            return f"{v['mean']}" if v.get("low") is None else f"{v['mean']} [{v['low']}, {v['high']}]"
        return f"{v:g}" if isinstance(v, float) else str(v)

    header = ["pairs", "setting", "target eps", "spent eps", "final test SSIM", "Dice", "Dice / real"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for p in points:
        cells = [p["pairs_per_center"], p["method"], p["target_epsilon"], p["epsilon"]]
        cells += [p["final_test_ssim"], p["dice"], p["relative_dice"]]
        lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curve(points: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """The figure: one column per training-set size, one row per utility (final test SSIM; Dice relative to the
    real-trained UNet, or Dice without the real baseline), utility against the target epsilon (log scale) per DP
    mode and pretraining (mean and interval over seeds), the runs without DP as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in points if p.get("variant") is None]  # a variant's knobs are its own table, not the curve
    sizes = sorted({p["pairs_per_center"] for p in points})
    relative = any(p["relative_dice"] is not None for p in points)
    metrics = [("final_test_ssim", "final test SSIM"), ("relative_dice" if relative else "dice", "")]
    metrics[1] = (metrics[1][0], f"{points[0]['dice_class']} Dice" + (" / real-trained" if relative else ""))
    fig, axes = plt.subplots(2, len(sizes), figsize=(max(6.0, 4.0 * len(sizes)), 7.0), squeeze=False, sharey="row")
    for col, n in enumerate(sizes):
        at = [p for p in points if p["pairs_per_center"] == n]
        for row, (key, title) in enumerate(metrics):
            ax = axes[row][col]
            for pre in (False, True):
                base = next((p for p in at if p["mode"] is None and p["pretrained"] == pre), None)
                if base is not None and base[key] is not None:
                    ax.axhline(base[key]["mean"], color="k", ls=":" if pre else "--", lw=1, label=base["label"])
                for mode in MODES:
                    line = sorted(
                        (p for p in at if p["mode"] == mode and p["pretrained"] == pre and p[key] is not None),
                        key=lambda p: p["target_epsilon"],
                    )
                    if not line:
                        continue
                    x, y = [p["target_epsilon"] for p in line], [p[key]["mean"] for p in line]
                    low = [
                        p[key]["mean"] - (p[key]["low"] if p[key]["low"] is not None else p[key]["mean"]) for p in line
                    ]
                    high = [
                        (p[key]["high"] if p[key]["high"] is not None else p[key]["mean"]) - p[key]["mean"]
                        for p in line
                    ]
                    label = f"DP {mode}{', pretrained' if pre else ''}"
                    colour = f"C{list(MODES).index(mode) + 2 * pre}"  # one series, one colour in every panel
                    ax.errorbar(x, y, yerr=[low, high], marker="o", color=colour, capsize=3, label=label)
            ax.set_xscale("log")
            ax.set_title(f"{n} pairs per center" if row == 0 else "", fontsize=9)
            ax.set_xlabel("target epsilon per center" if row == 1 else "")
            if col == 0:
                ax.set_ylabel(title)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3 if len(sizes) > 1 else 2, fontsize=7)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_tradeoff(
    output_dir: str | Path,
    epsilons: Sequence[float] = (50.0, 10.0),
    config_files: Sequence[str] | None = None,
    overrides: dict[str, Any] | None = None,
    max_grad_norm: float = 1.0,
    accountant: str = "rdp",
    training_maps: bool = True,
    dice_class: str = "lesion",
    bundle_root: str | Path = BUNDLE_ROOT,
    command: str = COMMAND,
    pairs: Sequence[int] | None = None,
    modes: Sequence[str] = ("both",),
    pretraining: Sequence[bool] = (False,),
    seeds: Sequence[int] | None = None,
    public_pairs: int = 48,
    public_seed: int = 1000,
    public_anatomy: str | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the evaluation protocol (``scripts.evaluation.protocol.Evaluation`` through ``configs/compare.json``, by
    default with ``configs/demo.json``) once per training-set size, with every setting of :py:func:`settings_for`
    as a method; add each final hand-off's per-center privacy records to the report (``privacy``, shown in
    report.md); write each size's trade-off table, and the curve of utility against epsilon.

    Args:
        output_dir: where everything goes: ``n<pairs>/`` (or ``configured/``) per size, each with the runs,
            ``report/`` (report.json/md, tradeoff.json/md); ``data/n<pairs>/`` (the demo centers of that size);
            ``public/`` (the public center) and ``public_pretraining/seed<seed>/`` (the public visits); ``curve.json``,
            ``curve.md`` and ``curve.png``.
        epsilons: target epsilons per center of the DP settings.
        config_files: the evaluation config files (default: compare.json + demo.json of ``bundle_root``).
        overrides: further config overrides of the evaluation (``demo_data``, ``device``, ``visit_overrides``, ...).
        max_grad_norm: per-sample clipping bound of the DP settings.
        accountant: ``rdp`` or ``prv``.
        training_maps: also synthesise from the patients' own training label maps (their near-copy rate is the
            direct measure of memorisation; the set is not shareable).
        dice_class: the class whose downstream Dice the table and curve show.
        bundle_root: the bundle.
        command: the command recorded in the report.
        pairs: training pairs per center, one demo dataset each (``demo_data#num_train``; needs the demo config);
            None: the data as configured.
        modes: DP modes (``both``, ``discriminator``).
        pretraining: without (False) and/or with (True) public pretraining.
        seeds: the evaluation's seeds (None: as configured).
        public_pairs: pairs of the public center (pretraining; its label maps are mode discriminator's public maps).
        public_seed: the public center's seed (no demo center's).
        public_anatomy: ``mni152``, ``procedural`` or None (mni152 where nilearn is installed).
        variants: each DP setting again with other knobs at the same epsilon (:py:func:`check_variants`); a variant
            may change the number of updates, so with variants every setting keeps its own budget (recorded).

    Returns:
        the curve (also in ``curve.json``): ``{"command", "grid", "points"}``.
    """
    bundle_root, output_dir = Path(bundle_root), Path(output_dir)
    variants = check_variants(variants)  # refused before anything runs
    config_files = list(config_files or [str(bundle_root / "configs" / f) for f in ("compare.json", "demo.json")])
    needs_public = "discriminator" in modes or any(pretraining)
    public_center, handoffs = None, None
    points: list[dict[str, Any]] = []
    for n in list(pairs) if pairs else [None]:
        folder = output_dir / (f"n{n}" if n else "configured")
        extra = dict(overrides or {})
        if n:
            extra.update({"demo_dir": str(output_dir / "data" / f"n{n}"), "demo_data#num_train": int(n)})
        if seeds is not None:
            extra["seeds"] = [int(s) for s in seeds]
        workflow = ConfigWorkflow(
            config_file=config_files,
            meta_file=str(bundle_root / "configs" / "metadata.json"),
            logging_file=False,
            workflow_type=None,
            **{
                "bundle_root": str(bundle_root),
                "output_dir": str(folder),
                "report_dir": str(folder / "report"),
                "evaluation#_target_": "tools.dp_tradeoff.TradeoffEvaluation",
                "report_command": command,
                **extra,
            },
        )
        if n and "demo_data" not in workflow.parser:
            raise ValueError("--pairs makes demo centers of each size: it needs the demo config (configs/demo.json).")
        if needs_public and public_center is None:
            size = int(workflow.parser.get_parsed_content("spatial_size")[0])
            public_center = make_public_center(output_dir / "public", public_pairs, size, public_seed, public_anatomy)
        settings = settings_for(epsilons, max_grad_norm, accountant, modes, pretraining, public_center, variants)
        pretrained = output_dir / "public_pretraining"
        methods = method_configs(settings, folder / "settings", pretrained)
        workflow.parser.update(
            {
                "methods": methods,
                "segmentation_sets": list(methods),  # every setting's shareable set trains a UNet (the Dice)
                # every setting is TDGAN, local reminding: one budget, unless a variant changes the epochs or batch
                "budget_reference": None if variants else next(iter(methods)),
                "training_map_sets": list(methods) if training_maps else [],
            }
        )
        workflow.initialize()
        if any(pretraining) and handoffs is None:  # once per seed, shared by every size: no private data in it
            parsed = workflow.parser.get_parsed_content
            visit = {"num_classes": parsed("num_classes"), "image_channels": parsed("image_channels")}
            visit.update(parsed("visit_overrides"))
            handoffs = pretrain(public_center, pretrained, parsed("seeds"), visit, bundle_root)
        workflow.run()
        workflow.finalize()
        report_dir = folder / "report"
        report = json.loads((report_dir / "report.json").read_text())
        # epsilon depends on the noise, the sampling rate and the steps, the same for every seed: the first seed's
        report["privacy"] = {name: privacy_records(_handoffs(m)[0]) for name, m in report["methods"].items()}
        rows = tradeoff_rows(report, dice_class)
        report["dp_tradeoff"] = rows
        write_report(report, report_dir)
        (report_dir / "tradeoff.json").write_text(json.dumps(rows, indent=2) + "\n")
        (report_dir / "tradeoff.md").write_text(render_tradeoff(rows))
        points += curve_points(report, settings, dice_class)
    curve = {
        "command": command,
        "grid": {
            "epsilons": [float(e) for e in epsilons],
            "pairs_per_center": list(pairs) if pairs else None,
            "modes": list(modes),
            "pretraining": [bool(p) for p in pretraining],
            "seeds": points[0]["seeds"] if points else None,
            "public_center": None if public_center is None else {"pairs": public_pairs, "seed": public_seed},
            "max_grad_norm": max_grad_norm,
            "accountant": accountant,
            "dice_class": dice_class,
            "variants": variants,
        },
        "points": points,
    }
    (output_dir / "curve.json").write_text(json.dumps(curve, indent=2) + "\n")
    (output_dir / "curve.md").write_text(render_curve(points))
    plot_curve(points, output_dir / "curve.png")
    return curve


def _json_or_file(value: str) -> Any:
    """A command-line value given as JSON text or as the path of a ``.json`` file holding it."""
    if value.endswith(".json") and Path(value).is_file():
        return json.loads(Path(value).read_text())
    return json.loads(value)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: run the trade-off (demo settings by default) and print its curve."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    parser.add_argument("--output_dir", default=str(BUNDLE_ROOT / "output" / "dp_tradeoff"))
    parser.add_argument("--epsilons", type=float, nargs="+", default=[50.0, 10.0], help="target epsilon per center")
    parser.add_argument("--pairs", type=int, nargs="+", default=None, help="training pairs per center (demo data)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["both"], help="DP modes")
    parser.add_argument("--pretraining", nargs="+", choices=["off", "on"], default=["off"], help="public pretraining")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the config's seeds")
    parser.add_argument("--public_pairs", type=int, default=48, help="pairs of the public center")
    parser.add_argument("--public_seed", type=int, default=1000, help="seed of the public center (no demo center's)")
    parser.add_argument("--public_anatomy", choices=["mni152", "procedural"], default=None)
    parser.add_argument("--max_grad_norm", type=float, default=1.0, help="per-sample clipping bound")
    parser.add_argument("--accountant", choices=["rdp", "prv"], default="rdp")
    parser.add_argument("--config_file", nargs="+", default=None, help="default: configs/compare.json demo.json")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=JSON", help="config overrides, e.g. device='\"cpu\"'"
    )
    parser.add_argument("--no_training_maps", action="store_true", help="skip the sets made from training maps")
    parser.add_argument("--dice_class", default="lesion")
    parser.add_argument(
        "--curves",
        nargs="+",
        default=None,
        metavar="CURVE_JSON",
        help="only draw: one figure (--figure) of the points of these curve.json files (runs made separately)",
    )
    parser.add_argument("--figure", default=None, help="with --curves: the figure's path (.png)")
    parser.add_argument(
        "--variants",
        type=_json_or_file,
        default=None,
        help='each DP setting again with other knobs: JSON, e.g. \'{"clip0.1": {"dp#max_grad_norm": 0.1}}\', or a '
        ".json file of it (tools/trials/dp_knobs.json)",
    )
    args = parser.parse_args(argv)
    if args.curves:
        if not args.figure:
            parser.error("--curves draws one figure: give its path with --figure.")
        points = [p for path in args.curves for p in json.loads(Path(path).read_text())["points"]]
        print(render_curve(points))
        print(f"figure: {plot_curve(points, args.figure)}")
        return
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    curve = run_tradeoff(
        args.output_dir,
        args.epsilons,
        args.config_file,
        overrides,
        args.max_grad_norm,
        args.accountant,
        not args.no_training_maps,
        args.dice_class,
        command=" ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)]),
        pairs=args.pairs,
        modes=args.modes,
        pretraining=[p == "on" for p in args.pretraining],
        seeds=args.seeds,
        public_pairs=args.public_pairs,
        public_seed=args.public_seed,
        public_anatomy=args.public_anatomy,
        variants=args.variants,
    )
    print(render_curve(curve["points"]))
    print(f"curve: {Path(args.output_dir) / 'curve.json'} and curve.png")


if __name__ == "__main__":
    main()
