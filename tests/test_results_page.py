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
"""tools/results_page.py: the results page holds the report's own numbers, refuses a missing report in one line, and
the committed docs/results.md is what the committed reports give."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from tools import results_page

FAST = REPO / "docs" / "figures" / "fast" / "report.json"
PAGE_ARGS = [
    "--report",
    "docs/figures/fast/report.json",
    "docs/figures/report.json",
    "docs/figures/shareable/report.json",
    "docs/figures/shareable_mni152/report.json",
    "--output",
    "docs/results.md",
]
"""The command docs/results.md says made it (README.md and docs/README.md link the page)."""


def _interval(v: dict) -> str:
    return str(v["mean"]) if v["low"] is None else f"{v['mean']} [{v['low']}, {v['high']}]"


def _rows(page: str, title: str) -> dict[str, list[str]]:
    """The table that follows the paragraph starting with ``**<title>``: first cell -> the other cells."""
    block = page.split(f"**{title}", 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]
    return {r[0]: r[1:] for r in rows}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    """The page made from a copy of the committed fast-demo report (report.md and figures beside it) in a tmp dir."""
    root = tmp_path_factory.mktemp("results")
    shutil.copytree(FAST.parent, root / "figures")
    report = root / "figures" / "report.json"
    out = root / "page" / "results.md"
    assert results_page.main(["--report", str(report), "--output", str(out)]) == 0
    return json.loads(report.read_text()), out.read_text(), report


def test_the_page_says_it_is_generated_by_which_command_from_which_report(made: tuple[dict, str, Path]):
    report, page, path = made
    header = page.splitlines()[2]
    assert header.startswith("*Generated: do not edit.")
    assert f"--report {path.as_posix()} --output " in header and f"from `{path.as_posix()}`" in header
    assert f'Made by `{report["command"]} --seeds "[0,1,2]"`' in page and report["seeds"] == [0, 1, 2]
    assert "Seeds: 0, 1, 2." in page
    assert "[report.md](../figures/report.md)" in page  # links relative to the page
    assert "[quality matrix](../figures/quality_matrix.png)" in page


def test_the_pages_numbers_are_the_reports(made: tuple[dict, str, Path]):
    report, page, _ = made
    centers, labels = report["centers"], {k: v["label"] for k, v in report["methods"].items()}
    seg = report["segmentation"]
    labels |= {k: v["label"] for k, v in seg["training_sets"].items()}

    forgetting = _rows(page, "Forgetting")
    for method, per in report["forgetting"].items():
        assert forgetting[labels[method]] == [_interval(v) if v else "n/a" for v in map(per["ssim"].get, centers)]

    dice = _rows(page, "Downstream lesion Dice")
    assert set(dice) == {labels[k] for k in seg["scores"]}
    for name, per in seg["scores"].items():
        assert dice[labels[name]][1:] == [_interval(per[c]["lesion"]["dice"]) for c in centers]

    ratio = _rows(page, "Lesion Dice of each shareable set as a fraction")
    shareable = {k for k, v in seg["training_sets"].items() if v["shareable"]}
    assert set(ratio) == {labels[k] for k in shareable} and shareable
    for name in shareable:
        expected = [_interval(seg["relative_to_real_all"]["ratios"][name][c]["lesion"]) for c in centers]
        assert ratio[labels[name]] == expected

    copies = _rows(page, "Near copies")
    for name, per in report["leakage"]["near_copies"].items():
        cells = []
        for c in centers:
            flagged = per[c]["flagged"]
            cells.append(f"{flagged['mean']} of {per[c]['synthetic']} ({', '.join(map(str, flagged['per_seed']))})")
        assert copies[labels[name]] == ["yes", *cells]  # every set of the fast demo is made from new label maps

    time_line = next(line for line in page.splitlines() if line.startswith("**Time**"))
    for seed in report["seeds"]:
        steps = [v for k, v in report["timings"].items() if k.startswith(f"seed {seed}: ") and "in a worker" not in k]
        assert f"seed {seed}: {round(sum(steps), 1)} s " in time_line
    assert f"the whole command: {report['timings']['total']} s " in time_line
    numbers = set(re.findall(r"-?\d+\.\d+", page))
    assert "0.71" in numbers and "0.455" in numbers  # the fast demo's headline, for a reader grepping the page


def test_a_missing_report_is_refused_in_one_line_and_nothing_is_written(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "results.md"
    missing = tmp_path / "nowhere" / "report.json"
    assert results_page.main(["--report", str(missing), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"report {missing} does not exist" in err and "bash run_demo.sh" in err
    assert not out.exists()


def test_a_file_that_is_not_a_report_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    for content, why in (("{not json", "is not JSON"), ('{"command": "x"}', "lacks centers, seeds")):
        bad = tmp_path / "report.json"
        bad.write_text(content)
        assert results_page.main(["--report", str(bad), "--output", str(tmp_path / "results.md")]) == 2
        assert why in capsys.readouterr().err
    assert not (tmp_path / "results.md").exists()


def test_the_committed_results_page_is_what_the_committed_reports_give(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    monkeypatch.chdir(REPO)
    done = results_page.main([*PAGE_ARGS, "--check"])
    assert done == 0, capsys.readouterr().err
    header = (REPO / "docs" / "results.md").read_text().splitlines()[2]
    assert f"`python -m tools.results_page {' '.join(PAGE_ARGS)}`" in header


def test_check_refuses_a_page_edited_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "results.md"
    args = ["--report", str(FAST), "--output", str(out)]
    assert results_page.main(args) == 0
    assert results_page.main([*args, "--check"]) == 0
    out.write_text(out.read_text().replace("0.455", "0.3"))
    assert results_page.main([*args, "--check"]) == 1
    assert "is not what the reports give: run `python -m tools.results_page --report" in capsys.readouterr().err
