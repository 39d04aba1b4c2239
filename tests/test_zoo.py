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
"""The released weights models/model.pt as the MONAI model zoo uses them. The zoo's own checks (verify_metadata,
verify_net_in_out, ckpt_export) run on the submission folder in tests/test_zoo_submission.py; here the exported
TorchScript generator is compared with the eager one."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.apps.utils import HashCheckError
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.bundle.scripts import download_large_files

from scripts.networks import encode_condition
from tests.conftest import META, REPO

INFERENCE = str(REPO / "configs" / "inference.json")
MODEL = REPO / "models" / "model.pt"


def _zoo_check(command: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <command> --net_id network_def ...`` on the inference config, as the zoo runs it; its
    output holds no deprecation or replacement warning (MONAI reads the metadata and config as written)."""
    common = ["--net_id", "network_def", "--meta_file", META, "--config_file", INFERENCE, "--bundle_root", str(REPO)]
    cmd = [sys.executable, "-m", "monai.bundle", command, *common, *args]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    warned = [s for s in (done.stdout + done.stderr).splitlines() if re.search(r"deprecated|replacing", s, re.I)]
    assert not warned, f"{command}: MONAI reads the bundle other than as written: {warned}"
    return done


def test_released_weights_are_a_small_generator_state_dict_that_loads_into_the_inference_network():
    assert MODEL.stat().st_size < 25 * 2**20
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    net = parser.get_parsed_content("network_def")
    state = torch.load(MODEL, map_location="cpu", weights_only=True)
    net.load_state_dict(state)  # strict: every key, every shape


def test_large_files_yml_lists_the_released_weights_with_their_hash_as_monai_reads_it(tmp_path: Path):
    download_large_files(bundle_path=str(REPO))  # the file is there and its hash matches: nothing is fetched
    (entry,) = ConfigParser.load_config_file(REPO / "large_files.yml")["large_files"]
    assert entry["path"] == "models/model.pt" and entry["hash_type"] == "sha256"
    assert entry["hash_val"] == hashlib.sha256(MODEL.read_bytes()).hexdigest(), "new weights: update large_files.yml"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(MODEL.read_bytes()[:-1])  # another file under that name
    shutil.copy(REPO / "large_files.yml", tmp_path)
    with pytest.raises(HashCheckError, match="hash check of existing file failed"):
        download_large_files(bundle_path=str(tmp_path))


def test_ckpt_export_gives_a_torchscript_generator_with_the_eager_output(tmp_path: Path):
    ts = tmp_path / "model.ts"
    done = _zoo_check("ckpt_export", "--filepath", str(ts), "--ckpt_file", str(MODEL))
    assert done.returncode == 0, done.stderr[-3000:]
    scripted = torch.jit.load(str(ts), map_location="cpu")
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    eager = parser.get_parsed_content("network_def")
    eager.load_state_dict(torch.load(MODEL, map_location="cpu", weights_only=True))
    eager.eval()
    label = torch.randint(0, 4, (2, 1, 64, 64), generator=torch.Generator().manual_seed(0))
    x = encode_condition(label, torch.tensor([0, 2]), 4, 8)
    with torch.no_grad():
        expected = eager(x)
        got = scripted(x)
    assert got.shape == (2, 1, 64, 64)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert float((expected[0] - expected[1]).abs().max()) > 1e-3  # two centers, two styles: a real generator


def test_inference_workflow_with_the_released_weights_runs_as_the_zoo_runs_it(demo_root: Path, tmp_path: Path):
    out = tmp_path / "synthetic"
    workflow = ConfigWorkflow(
        config_file=INFERENCE,
        meta_file=META,
        logging_file=False,
        workflow_type="infer",
        bundle_root=str(REPO),
        dataset_dir=str(demo_root),
        output_dir=str(out),
        device="cpu",
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    workflow.run()
    workflow.finalize()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["synthetic"] is True
    assert {it["center"] for it in meta["training"]} == {"center_a", "center_b", "center_c"}
