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
"""Print one class's Dice of every training set of an evaluation report as a fraction of the real-all UNet's, seed by
seed (``scripts.evaluation.protocol.relative_dice``, what new reports hold as ``relative_to_real_all``), as a
Markdown table; works on reports written before that table existed.

    python tools/relative_dice.py output_mni152/report/report.json --cls lesion
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts.evaluation.protocol import relative_dice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="report.json of configs/compare.json")
    parser.add_argument("--cls", default="lesion", help="class name (default lesion)")
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    seg, centers = report["segmentation"], report["centers"]
    ratios = relative_dice(seg["scores"], seg["training_sets"], centers, [args.cls])["ratios"]

    def cell(v: dict | None) -> str:
        if v is None:
            return "–"
        return f"{v['mean']:.2f}" + ("" if v["low"] is None else f" [{v['low']:.2f}, {v['high']:.2f}]")

    print(f"{args.cls}: Dice / real-all Dice, mean over seeds {report['seeds']} [t 95 % interval]\n")
    print("| Trained on | " + " | ".join(centers) + " |")
    print("|---|" + "---|" * len(centers))
    for name, per_center in ratios.items():
        label = seg["training_sets"][name]["label"]
        print(f"| {label} | " + " | ".join(cell(per_center[c][args.cls]) for c in centers) + " |")


if __name__ == "__main__":
    main()
