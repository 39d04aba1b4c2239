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
"""What differential privacy costs: the evaluation protocol for TDGAN without DP and at target epsilons, one table.

A development tool of the repository, not part of the bundle's package; run from the repository root as
``python -m tools.dp_tradeoff``; its results: docs/privacy.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from scripts.evaluation.report import write_report
from scripts.handoff import load_handoff
from scripts.privacy import privacy_records
from scripts.visit import BUNDLE_ROOT

__all__ = ["settings_for", "method_configs", "tradeoff_rows", "render_tradeoff", "run_tradeoff", "main"]

logger = logging.getLogger(__name__)

COMMAND = "python -m tools.dp_tradeoff"


def settings_for(epsilons: Sequence[float], max_grad_norm: float = 1.0, accountant: str = "rdp") -> dict[str, dict]:
    """The compared settings: ``no_dp`` and one ``dp_eps<E>`` per target epsilon (the noise chosen by Opacus so that
    each center's visit spends it), all TDGAN with ``local`` reminding (what DP requires)."""
    out: dict[str, dict[str, Any]] = {"no_dp": {"label": "TDGAN local, no DP", "dp": {"enabled": False}}}
    for eps in epsilons:
        out[f"dp_eps{eps:g}"] = {
            "label": f"TDGAN local, DP epsilon {eps:g}",
            "dp": {
                "enabled": True,
                "target_epsilon": float(eps),
                "max_grad_norm": float(max_grad_norm),
                "accountant": accountant,
            },
        }
    return out


def method_configs(settings: dict[str, dict], folder: str | Path) -> dict[str, dict[str, Any]]:
    """Write one override file of the sequence config per setting (its visit overrides: local reminding and the
    ``dp`` section) into ``folder``; returns the evaluation's ``methods``."""
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
        path.write_text(json.dumps(content, indent=4) + "\n")
        methods[name] = {"label": s["label"], "configs": [str(path.resolve())]}
    return methods


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


def tradeoff_rows(report: dict[str, Any], dice_class: str = "lesion") -> dict[str, dict[str, Any]]:
    """One row per method of an evaluation report that holds ``privacy``: epsilon per center, near-copy rate of its
    synthetic sets (new label maps; the patients' own training maps where made), memorisation gap (SSIM and PSNR,
    mean over centers), downstream ``dice_class`` Dice from new label maps (mean over centers), first-center
    forgetting (SSIM) and seconds per training step (all visits)."""
    centers = report["centers"]
    leak, seg = report["leakage"], report["segmentation"]
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
        rows[name] = {
            "label": method["label"],
            "epsilon": {c: (r or {}).get("epsilon") for c, r in privacy.items()},
            "delta": {c: (r or {}).get("delta") for c, r in privacy.items()},
            "noise_multiplier": {c: (r or {}).get("noise_multiplier") for c, r in privacy.items()},
            "near_copy_rate": near,
            "memorisation_gap_ssim": _mean([_point(gaps[c]["gap"]["ssim"]) for c in centers if c in gaps]),
            "memorisation_gap_psnr": _mean([_point(gaps[c]["gap"]["psnr"]) for c in centers if c in gaps]),
            "dice": _mean([_point(seg["scores"][name][c][dice_class]["dice"]) for c in centers]),
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
        "Dice",
        "First-center forgetting (SSIM)",
        "Seconds per step",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows.values():
        near = r["near_copy_rate"]
        lines.append(
            "| "
            + " | ".join(
                [
                    r["label"],
                    cell(r["epsilon"]),
                    cell(r["noise_multiplier"]),
                    f"{cell(near.get('new_maps'))} / {cell(near.get('training_maps'))}",
                    f"{cell(r['memorisation_gap_ssim'])} / {cell(r['memorisation_gap_psnr'])}",
                    f"{cell(r['dice'])} ({r['dice_class']})",
                    cell(r["first_center_forgetting_ssim"]),
                    cell(r["seconds_per_step"]),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


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
) -> dict[str, dict[str, Any]]:
    """Run the evaluation protocol (``scripts.evaluation.protocol.Evaluation`` through ``configs/compare.json``,
    by default with ``configs/demo.json``) once per setting of :py:func:`settings_for`, add each final hand-off's
    per-center epsilon to the report (``privacy``, shown in report.md), and write the trade-off table.

    Args:
        output_dir: where the runs, ``report/`` (report.json/md) and ``report/tradeoff.{json,md}`` go.
        epsilons: target epsilons per center of the DP settings.
        config_files: the evaluation config files (default: compare.json + demo.json of ``bundle_root``).
        overrides: further config overrides of the evaluation (``data_root``, ``device``, ``visit_overrides``, ...).
        max_grad_norm: per-sample clipping bound of the DP settings.
        accountant: ``rdp`` or ``prv``.
        training_maps: also synthesise from the patients' own training label maps (their near-copy rate is the
            direct measure of memorisation; the set is not shareable).
        dice_class: the class whose downstream Dice the table shows.
        bundle_root: the bundle.
        command: the command recorded in the report.

    Returns:
        the table's rows (also in ``report/tradeoff.json``).
    """
    bundle_root, output_dir = Path(bundle_root), Path(output_dir)
    report_dir = output_dir / "report"
    config_files = list(config_files or [str(bundle_root / "configs" / f) for f in ("compare.json", "demo.json")])
    methods = method_configs(settings_for(epsilons, max_grad_norm, accountant), output_dir / "settings")
    workflow = ConfigWorkflow(
        config_file=config_files,
        meta_file=str(bundle_root / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=None,
        **{
            "bundle_root": str(bundle_root),
            "output_dir": str(output_dir),
            "report_dir": str(report_dir),
            "methods": methods,
            "segmentation_sets": list(methods),  # every setting's shareable set trains a UNet (the table's Dice)
            "training_map_sets": list(methods) if training_maps else [],
            "budget_reference": next(iter(methods)),  # every setting is TDGAN, local reminding: one budget
            "report_command": command,
            **(overrides or {}),
        },
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    report = json.loads((report_dir / "report.json").read_text())
    # epsilon depends on the noise, the sampling rate and the steps, the same for every seed: the first seed's
    report["privacy"] = {name: privacy_records(_handoffs(m)[0]) for name, m in report["methods"].items()}
    rows = tradeoff_rows(report, dice_class)
    report["dp_tradeoff"] = rows
    write_report(report, report_dir)
    (report_dir / "tradeoff.json").write_text(json.dumps(rows, indent=2) + "\n")
    (report_dir / "tradeoff.md").write_text(render_tradeoff(rows))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: run the trade-off (demo settings by default) and print its table."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    parser.add_argument("--output_dir", default=str(BUNDLE_ROOT / "output" / "dp_tradeoff"))
    parser.add_argument("--epsilons", type=float, nargs="+", default=[50.0, 10.0], help="target epsilon per center")
    parser.add_argument("--max_grad_norm", type=float, default=1.0, help="per-sample clipping bound")
    parser.add_argument("--accountant", choices=["rdp", "prv"], default="rdp")
    parser.add_argument("--config_file", nargs="+", default=None, help="default: configs/compare.json demo.json")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=JSON", help="config overrides, e.g. device='\"cpu\"'"
    )
    parser.add_argument("--no_training_maps", action="store_true", help="skip the sets made from training maps")
    parser.add_argument("--dice_class", default="lesion")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    rows = run_tradeoff(
        args.output_dir,
        args.epsilons,
        args.config_file,
        overrides,
        args.max_grad_norm,
        args.accountant,
        not args.no_training_maps,
        args.dice_class,
        command=" ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)]),
    )
    print(render_tradeoff(rows))


if __name__ == "__main__":
    main()
