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
"""End-to-end test of configs/multi_gpu_train.json: a tiny visit under torchrun with 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY, run_visit

from scripts.handoff import load_handoff
from scripts.networks import TDGANGenerator

# what each rank holds after training (written by the test's own finalize override, before the group is destroyed)
DUMP_RANK = (
    "$torch.save({'generator': @network_def.state_dict(), 'discriminators': @discriminators_def.state_dict(), "
    "'shard': list(iter(@train#sampler))}, @output_dir + '/rank' + str(@rank) + '.pt')"
)


@pytest.mark.slow
def test_two_process_visit_keeps_ranks_in_sync_and_writes_one_unwrapped_handoff(demo_root: Path, tmp_path: Path):
    first = tmp_path / "visit1"
    run_visit([demo_root / "center_a"], first)  # single process: the arriving hand-off, so reminding is on
    out = tmp_path / "visit2"
    override = {
        **{k: v for k, v in TINY.items() if k != "device"},  # the override picks the device per rank
        "bundle_root": str(REPO),
        "dataset_dir": str(demo_root / "center_b"),
        "center_dirs": [str(demo_root / "center_b"), str(demo_root / "center_c")],  # two temporary discriminators
        "output_dir": str(out),
        "handoff_in": str(first / "handoff.pt"),
        "finalize": [DUMP_RANK, "$torch.distributed.destroy_process_group()"],
    }
    override_file = tmp_path / "tiny_override.json"
    override_file.write_text(json.dumps(override))
    configs = ["configs/train.json", "configs/multi_gpu_train.json", str(override_file)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", str(configs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU even on a GPU machine
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"torchrun exited {proc.returncode}:\n{proc.stderr[-4000:]}"

    # one hand-off, from rank 0, with plain generator keys that load into a fresh generator
    assert sorted(p.name for p in out.glob("*.pt")) == ["handoff.pt", "rank0.pt", "rank1.pt"]
    handoff = load_handoff(out / "handoff.pt")
    assert not any(k.startswith("module.") for k in handoff.generator)
    TDGANGenerator(**handoff.network).load_state_dict(handoff.generator, strict=True)
    assert [e["name"] for e in handoff.registry] == ["center_a", "center_b", "center_c"]
    assert handoff.visits[-1]["discriminators"] == 2 and handoff.visits[-1]["final_losses"]["reminding"] > 0
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1, "TensorBoard should be rank 0 only"

    # each rank trained on its own shard, yet generator AND discriminators ended identical: gradients were synced
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert not set(ranks[0]["shard"]) & set(ranks[1]["shard"]), f"ranks saw the same items: {ranks}"
    for net in ("generator", "discriminators"):
        for k, v in ranks[0][net].items():
            assert torch.equal(v, ranks[1][net][k]), f"{net} parameter {k} differs between ranks"
    for k, v in handoff.generator.items():
        assert torch.equal(v, ranks[1]["generator"][k]), f"hand-off {k} is not the trained generator"
