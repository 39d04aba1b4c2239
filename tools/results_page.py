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
"""The results page (docs/results.md), rendered from evaluation reports (``report.json`` of configs/compare.json)
alone, so that the project's results are written down once and every number on the page is a report's:

    python -m tools.results_page --report docs/figures/fast/report.json docs/figures/report.json \\
        docs/figures/shareable/report.json docs/figures/shareable_mni152/report.json --output docs/results.md

Per report: the command and seeds that made it, forgetting (SSIM), the downstream lesion Dice of every training set,
the shareable sets' lesion Dice as a fraction of the real-trained UNet's, near copies, and the run's time per seed.
The full tables stay in the report's own report.md, which the page links. ``--check`` writes nothing and exits 1
when the output differs from what the reports give (a page edited by hand, or a report made again).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CLASS = "lesion"
"""The downstream class the page shows (the report.md of each report has every class)."""

REQUIRED = ("command", "centers", "seeds", "methods", "forgetting", "segmentation", "leakage", "timings")
"""report.json keys the page reads."""


class ReportError(ValueError):
    """A report the page cannot be made from; the message says which and why."""


def fmt(value: Any) -> str:
    """A report value as report.md shows it: the stored number itself (no precision added), an interval over seeds
    as ``mean [low, high]`` (the mean alone with one seed), None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, dict) and "mean" in value:
        if value.get("low") is None:
            return str(value["mean"])
        return f"{value['mean']} [{value['low']}, {value['high']}]"
    return str(value)


def duration(seconds: float) -> str:
    """``1199.0 s (19 min 59 s)``."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{round(seconds, 1)} s ({minutes} min {rest} s)"


def load_report(path: Path) -> dict[str, Any]:
    """report.json at ``path``, with the keys the page reads; :class:`ReportError` otherwise."""
    if not path.is_file():
        raise ReportError(
            f"report {path} does not exist: make one with `bash run_demo.sh` (it writes output/report/report.json) "
            "or name a committed one (docs/figures/fast/report.json)"
        )
    try:
        report = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"report {path} is not JSON: {e}") from e
    missing = [k for k in REQUIRED if not isinstance(report, dict) or k not in report]
    if missing:
        raise ReportError(f"report {path} lacks {', '.join(missing)}: not a report.json of configs/compare.json")
    return report


def remade_command(report: dict[str, Any]) -> str:
    """The command the report records, with its seeds when they are not the default ``[0]``."""
    command, seeds = report["command"], report["seeds"]
    if seeds != [0] and "--seeds" not in command:
        command += f' --seeds "[{",".join(str(s) for s in seeds)}]"'
    return command


def seed_times(timings: dict[str, float], seeds: Sequence[int]) -> dict[int, float]:
    """Each seed's stage times added up. A ``... in a worker: ...`` line is one run's own time inside a stage that ran
    several at once (the stage has its own line), so it is not added."""
    out = {}
    for seed in seeds:
        prefix = f"seed {seed}: "
        out[seed] = round(sum(t for k, t in timings.items() if k.startswith(prefix) and " in a worker: " not in k), 1)
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]


def _labels(report: dict[str, Any]) -> dict[str, str]:
    labels = {k: v.get("label", k) for k, v in report["methods"].items()}
    labels |= {k: v.get("label", k) for k, v in report["segmentation"].get("training_sets", {}).items()}
    return labels


def _figures(figures: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(name, file) of the report's ``figures`` (nested per center for the sample grids)."""
    out = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        out += _figures(value, f"{name} ") if isinstance(value, dict) else [(name, str(value))]
    return out


def _shareable(report: dict[str, Any], key: str) -> bool:
    """A synthetic set is shareable when made from new label maps: a training set says so; a method's own set that
    trained no UNet (the fast demo's fine-tuning) is its new-label-map set."""
    sets = report["segmentation"].get("training_sets", {})
    return bool(sets[key].get("shareable")) if key in sets else key in report["methods"]


def ratios(report: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The report's Dice ratios to the real-all UNet and where they come from; a report made before it held them gets
    them from its per-seed Dice by the protocol's own function."""
    seg = report["segmentation"]
    if "relative_to_real_all" in seg:
        return seg["relative_to_real_all"]["ratios"], "source: the report's `relative_to_real_all`"
    from scripts.evaluation.protocol import relative_dice  # torch and MONAI: only for reports without the ratios

    computed = relative_dice(seg["scores"], seg["training_sets"], report["centers"], [CLASS])["ratios"]
    return computed, (
        "source: the report's per-seed Dice, by `scripts.evaluation.protocol.relative_dice` (the function that makes "
        "`relative_to_real_all`, which this report predates)"
    )


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def render_report(report: dict[str, Any], path: Path, page_dir: Path) -> list[str]:
    """One report's section of the page; links are relative to ``page_dir``."""
    centers, seeds = report["centers"], report["seeds"]
    labels, seg, leak = _labels(report), report["segmentation"], report["leakage"]
    cls = CLASS if CLASS in seg.get("classes", [CLASS]) else seg["classes"][-1]
    rel = Path(os.path.relpath(path.parent, page_dir)).as_posix()
    methods = report["methods"]
    out = [f"## {_count(len(methods), 'generator')} over {_count(len(seeds), 'seed')}: `{path.as_posix()}`"]
    details = f"[report.md]({rel}/report.md)" if (path.parent / "report.md").is_file() else "report.md"
    figures = [(k, v) for k, v in _figures(report.get("figures", {})) if (path.parent / v).is_file()]
    links = ", ".join(f"[{k.replace('_', ' ')}]({rel}/{v})" for k, v in figures)
    out += [
        "",
        f"Made by `{remade_command(report)}` (the command the report records, with its seeds). Every table of the "
        f"report: {details}" + (f"; figures: {links}" + "." if links else ".") + " "
        f"Seeds: {', '.join(str(s) for s in seeds)}. "
        f"Data: `{report.get('data_root', '?')}`, centers in visiting order {', '.join(centers)}"
        + (f", {'x'.join(str(s) for s in report['spatial_size'])}" if report.get("spatial_size") else "")
        + f". Generators: {'; '.join(labels[m] for m in methods)}. "
        "A number shown as `mean [low, high]` is the mean over the seeds and its 95 % t interval over the seeds.",
        "",
    ]

    out += [
        "**Forgetting** (SSIM on the center's test pairs right after its visit minus after the last visit; positive "
        "= forgotten; n/a: no visit came after the center's):",
        "",
    ]
    rows = [[labels[m]] + [fmt(report["forgetting"][m]["ssim"].get(c)) for c in centers] for m in report["forgetting"]]
    out += _table(["Generator", *centers], rows)

    out += [
        f"**Downstream {cls} Dice** (a {seg.get('network', 'segmentation network')} trained for "
        f"{seg.get('iterations', '?')} iterations on each set, tested on each center's REAL test images):",
        "",
    ]
    rows = []
    for name, per_center in seg["scores"].items():
        shareable = "yes" if seg["training_sets"].get(name, {}).get("shareable") else "no"
        rows.append([labels.get(name, name), shareable] + [fmt(per_center[c][cls]["dice"]) for c in centers])
    out += _table(["Trained on", "Shareable", *centers], rows)

    found, source = ratios(report)
    out += [
        f"**{cls.capitalize()} Dice of each shareable set as a fraction of the real-trained UNet's** (UNet on every "
        f"center's real images; ratio within each seed, then mean [t interval]; {source}):",
        "",
    ]
    rows = [
        [labels.get(name, name)] + [fmt((per_center.get(c) or {}).get(cls)) for c in centers]
        for name, per_center in found.items()
        if seg["training_sets"].get(name, {}).get("shareable")
    ]
    out += _table(["Trained on", *centers], rows)

    out += [
        "**Near copies** (synthetic images closer to a real training image of their center than the "
        f"{leak.get('quantile', '?')} quantile of the real-to-real nearest-neighbour distances; of the set's images "
        "per center: the mean over the seeds, each seed's count in parentheses):",
        "",
    ]
    rows = []
    for name, per_center in leak["near_copies"].items():
        cells = []
        for c in centers:
            r = per_center.get(c)
            if r is None:
                cells.append("n/a")
                continue
            flagged = r["flagged"]
            if isinstance(flagged, dict):
                per_seed = ", ".join(str(v) for v in flagged.get("per_seed") or [])
                cells.append(f"{flagged['mean']} of {r['synthetic']}" + (f" ({per_seed})" if per_seed else ""))
            else:
                cells.append(f"{flagged} of {r['synthetic']}")
        rows.append([labels.get(name, name), "yes" if _shareable(report, name) else "no", *cells])
    out += _table(["Synthetic set", "Shareable", *centers], rows)

    times = seed_times(report["timings"], seeds)
    per_seed = "; ".join(f"seed {s}: {duration(t)}" for s, t in times.items())
    total = report["timings"].get("total")
    out += [
        f"**Time** (the report's stage times added up per seed; a seed whose runs an earlier run had finished reuses "
        f"them and takes seconds): {per_seed}"
        + (f"; the whole command: {duration(total)}." if total is not None else "."),
        "",
    ]
    return out


def render_page(reports: Sequence[Path], output: Path, command: str) -> str:
    """The page for ``reports`` (in order) as it would be written at ``output``; ``command`` is the one named in its
    header. :class:`ReportError` when a report is missing or not a report."""
    loaded = [(path, load_report(path)) for path in reports]
    names = ", ".join(f"`{p.as_posix()}`" for p in reports)
    out = [
        "# Results",
        "",
        f"*Generated: do not edit. Made by `{command}` from {names}; every number below is in those reports. "
        "To change it, make the reports again and rerun the command.*",
        "",
        "Measured on the built-in demo data only (synthetic images of procedural or MNI152 atlas anatomy, not "
        "patients): the numbers show what the method does on it, not how it performs on real data. What each "
        "number means: [evaluation.md](evaluation.md); near copies and what leaks: [privacy.md](privacy.md).",
        "",
    ]
    for path, report in loaded:
        out += render_report(report, path, output.resolve().parent)
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, nargs="+", required=True, help="report.json files, one section each")
    parser.add_argument("--output", type=Path, required=True, help="the page to write (docs/results.md)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the output is not up to date")
    args = parser.parse_args(argv)
    command = "python -m tools.results_page --report " + " ".join(shlex.quote(p.as_posix()) for p in args.report)
    command += f" --output {shlex.quote(args.output.as_posix())}"
    try:
        page = render_page(args.report, args.output, command)
    except ReportError as e:
        print(f"results_page: {e}", file=sys.stderr)
        return 2
    if args.check:
        if args.output.is_file() and args.output.read_text() == page:
            return 0
        print(f"results_page: {args.output} is not what the reports give: run `{command}`", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page)
    print(f"results_page: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
