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
"""Tests of the step benchmark command line (scripts.benchmark_step) on tiny networks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.benchmark_step import parse_overrides

REPO = Path(__file__).resolve().parents[1]


def test_parse_overrides() -> None:
    """Values are JSON when they parse, strings otherwise; malformed items are rejected."""
    assert parse_overrides(["ngf=8", "amp=true", "gan_mode=lsgan", "spatial_size=[32, 32]"]) == {
        "ngf": 8,
        "amp": True,
        "gan_mode": "lsgan",
        "spatial_size": [32, 32],
    }
    with pytest.raises(ValueError):
        parse_overrides(["ngf"])


def test_benchmark_cli_tiny() -> None:
    """Two cases (first center, third center with a fabricated hand-off): one JSON line each on stdout."""
    cmd = [
        sys.executable,
        "-m",
        "scripts.benchmark_step",
        *("--sizes", "32", "--centers", "1", "3", "--steps", "2", "--warmup", "1", "--batch_size", "2"),
        *("--threads", "1", "--device", "cpu"),
        *("--set", "ngf=8", "--set", "num_blocks=1", "--set", "ndf=8"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2, proc.stdout
    records = [json.loads(line) for line in lines]
    assert [r["center_index"] for r in records] == [1, 3]
    assert [r["earlier_centers"] for r in records] == [0, 2]
    assert [r["reminding"] for r in records] == [False, True]
    for r in records:
        assert r["size"] == 32 and r["batch_size"] == 2 and r["steps"] == 2 and len(r["step_s"]) == 2
        assert r["step_s_median"] > 0 and r["step_s_min"] > 0 and r["step_s_min"] <= r["step_s_median"]
        assert r["peak_mem_mb"] > 0 and r["peak_mem_kind"] == "cpu_maxrss" and r["cpu_util_median"] > 0
        assert (r["ngf"], r["num_blocks"], r["ndf"], r["perceptual"]) == (8, 1, 8, False)
        assert r["device"] == "cpu" and r["threads"] == 1 and r["data_excluded"] is True
