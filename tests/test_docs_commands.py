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
"""Every command in README.md, docs/*.md and the lab notebooks tools/docs/*.md: what it names exists and parses, the
cheap ones run as written (at a tiny size), and the others are listed here with the reason they are not run."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import REPO
from monai.bundle import ConfigParser

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "tools" / "docs").glob("*.md"))]
FIRST_WORDS = ("python", "bash", "torchrun", "nvflare", "pip", "mlflow")
BUNDLE_CLI = {"config_file", "meta_file", "logging_file", "run_id", "init_id", "final_id", "tracking", "args_file"}
"""Options of ``monai.bundle run`` itself; every other option overrides a config key."""

RUN = [
    r"python -m monai\.bundle run --config_file configs/inference\.json$",
    r"python -m scripts\.data\.demo --output_dir data/demo$",
    r"python -m monai\.bundle run --config_file configs/train\.json .*--output_dir output/site_a .*",
    r"python -m monai\.bundle run --config_file configs/train\.json .*--output_dir output/site_b .*",
    r"python -m monai\.bundle run --config_file configs/evaluate\.json .*--handoff output/site_b/handoff\.pt.*",
    r"python -m monai\.bundle run --config_file configs/inference\.json .*--handoff output/site_b/handoff\.pt.*",
    r"python -m monai\.bundle run --config_file configs/segmentation\.json .*--dataset_dir output/synthetic_mixture.*",
]
"""Run as written, in this order, in a fresh copy of the bundle (the README's path from a fresh clone to a trained,
evaluated, synthesised and segmented result), with the tiny settings of :data:`TINY_RUN`."""

TINY_RUN = {
    "scripts.data.demo": {"num_train": "8", "num_test": "2", "size": "32"},
    "configs/train.json": {"spatial_size": "[32,32]", "ngf": "8", "num_blocks": "1", "ndf": "8", "batch_size": "2"}
    | {"epochs_constant": "1", "epochs_decay": "0", "label_bank_size": "4", "device": "cpu"},
    "configs/evaluate.json": {"device": "cpu"},
    "configs/inference.json": {"device": "cpu"},
    "configs/segmentation.json": {"spatial_size": "[32,32]", "iterations": "2", "batch_size": "2", "device": "cpu"},
}

FL_RUN = {
    r"python -m monai\.bundle run --run_id export --config_file .*federated\.json": {
        "demo_data#num_train": "6",
        "demo_data#num_test": "2",
        "demo_data#size": "32",
    },
}
"""docs/federated.md's export command, run as written (``$PWD`` = the fresh copy); its simulator command runs in
tests/test_fl.py (the relay fixture: the same configs, the demo's own settings at a tiny size)."""

NOT_RUN = {
    r"python -m monai\.bundle run --config_file .*federated\.json": "NVFlare's simulator: tests/test_fl.py runs these "
    "configs (train_sequential, demo, federated) through monai.bundle at a tiny size, signed, against the local run",
    r"bash run_demo\.sh": "the demo protocol: 10 min on 2 cores, --full several times that (tiny protocol runs: "
    "tests/test_evaluation.py)",
    r"bash run_tests\.sh": "this test suite itself (CI's command)",
    r"python -m monai\.bundle run --config_file .*compare\.json": "trains every method (tests/test_evaluation.py runs "
    "the protocol at a tiny size)",
    r"python -m monai\.bundle run --config_file configs/train_sequential\.json": "a sequence on the user's own or "
    "prepared data (tests/test_sequence.py, tests/test_dataset_settings.py run sequences at a tiny size)",
    r"python -m monai\.bundle run --config_file \"\['configs/train_sequential\.json',.*baselines/": "a baseline's "
    "whole sequence, minutes at the demo's size (tests/test_fair_baselines.py)",
    r"python -m scripts\.fl\.site (keygen|check|public) ": "makes or reads a site's keys and settings "
    "(tests/test_fl_site.py, tests/test_fl_poc.py)",
    r"torchrun ": "two processes (tests/test_multi_gpu.py runs a tiny DDP visit)",
    r"python -m monai\.bundle run --config_file .*train_3d\.json": "a 3D visit (tests/test_train_3d.py)",
    r"python -m monai\.bundle run --config_file configs/(train|inference|evaluate)\.json .*(/data/|visit03_center_c)": (
        "the model card's usage on the user's data or the demo's final hand-off: the same workflows run above from the "
        "README's commands"
    ),
    r"python -m monai\.bundle run --config_file configs/audit\.json ": "run as written in a fresh copy "
    "by tests/test_audit.py: a set synthesised from models/model.pt passes, a copy of the training images fails",
    r"python -m monai\.bundle run --config_file configs/train\.json .*--tracking configs/mlflow\.json": "run by "
    "tests/test_tracking.py with the same options at a tiny size (needs the optional MLflow extra)",
    r"python -m monai\.bundle run --config_file configs/train\.json .*--dp#enabled True": "a full-size DP visit "
    "(tests/test_privacy.py runs tiny DP visits)",
    r"python -m monai\.bundle (verify_metadata|verify_net_in_out|ckpt_export) ": "the zoo checks: run with these "
    "options by tests/test_bundle.py and tests/test_zoo.py",
    r"python -m scripts\.data\.prepare_(brats|nuclei) ": "needs the public BraTS / MoNuSeg data "
    "(tests/test_prepare_*.py run both on synthetic cases)",
    r"python -m scripts\.data\.demo .*--(anatomy mni152|volumetric)": "MNI152 and 3D demo data "
    "(tests/test_demo_anatomy.py, tests/test_train_3d.py)",
    r"python -m scripts\.tools\.measure_label_maps": "minutes of measurements (tests/test_label_maps.py runs it small)",
    r"python -m tools\.(benchmark_step|reference_step|dp_tradeoff|profile_step|reminding_check|precision_check)\b": (
        "the lab's minutes of measurements (tests/test_benchmark_step.py, test_dp_tradeoff.py, "
        "test_reminding_check.py run them small)"
    ),
    r"python -m monai\.bundle run --config_file .*--output_dir output/site_a_(synthetic|segmentation)": "docs/"
    "segmentation.md's recipe: run as written at a tiny size in a fresh copy by tests/test_segmentation_journey.py",
    r"python -m tools\.segmentation_noise ": "needs a finished demo run (tests/test_segmentation_noise.py "
    "runs it on a real-image set at a tiny size)",
    r"python -m tools\.lesion_stats ": "needs a finished demo run's sets and UNets (tests/test_lesion_stats.py runs "
    "it on NIfTI pairs written there, with a UNet of the evaluation's architecture)",
    r"python -m scripts\.tools\.export_generator ": "needs the demo's final hand-off (run_demo.sh)",
    r"python -m scripts\.fl\.job allow ": "edits an NVFlare POC workspace (tests/test_fl.py)",
    r"(python -m )?pip install ": "installs packages (network); the files it names are checked",
    r"bash tools/venv\.sh": "installs the pinned requirements (network) into .venv, the script run_demo.sh and "
    "run_tests.sh source; the file is checked",
    r"python tools/zoo_submission\.py ": "tests/test_zoo_submission.py runs it",
    r"python -m scripts\.tools\.training_curves ": "needs a demo run's logs (tests/test_training_curves.py runs it on "
    "a tiny visit's)",
    r"nvflare ": "NVFlare's own CLI on a POC deployment",
    r"mlflow ui ": "starts MLflow's web server",
}
"""Commands deliberately not run, and why; their config files, modules and options are still checked."""


def doc_commands() -> list[tuple[str, str]]:
    """(file, command) for every command line of the fenced blocks of README.md and docs/*.md: continuation lines
    joined, comments and leading environment assignments dropped."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"^```[a-z]*\n(.*?)^```", doc.read_text(), re.S | re.M):
            for line in block.replace("\\\n", " ").splitlines():
                words = re.sub(r"\s+#\s.*$", "", line).split()
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words = words[1:]
                if words and words[0] in FIRST_WORDS:
                    found.append((str(doc.relative_to(REPO)), " ".join(words)))
    return found


COMMANDS = doc_commands()


def _tokens(command: str) -> list[str]:
    return shlex.split(re.sub(r"<[^>]*>", "PLACEHOLDER", command))  # a template's <name> parts


def _options(tokens: list[str]) -> dict[str, str]:
    """``--key value`` pairs (a flag without a value maps to "")."""
    out, i = {}, 0
    while i < len(tokens):
        if tokens[i].startswith("--"):
            has_value = i + 1 < len(tokens) and not tokens[i + 1].startswith("--")
            out[tokens[i][2:]] = tokens[i + 1] if has_value else ""
            i += 2 if has_value else 1
        else:
            i += 1
    return out


def _files(value: str) -> list[str]:
    return list(ast.literal_eval(value)) if value.startswith("[") else [value]


def _check_bundle_command(sub: str, options: dict[str, str], where: str) -> None:
    assert sub in ("run", "verify_metadata", "verify_net_in_out", "ckpt_export"), where
    for key in ("meta_file", "logging_file", "ckpt_file") + (("filepath",) if sub == "verify_metadata" else ()):
        if key in options and not options[key].startswith("output/"):  # output/: an earlier documented run writes it
            assert (REPO / options[key]).is_file(), f"{where}: --{key} {options[key]} does not exist"
    if "config_file" not in options:
        return
    configs = _files(options["config_file"])
    for config in configs:
        assert (REPO / config).is_file(), f"{where}: config file {config} does not exist"
    parser = ConfigParser()
    parser.read_config([str(REPO / c) for c in configs])
    known = set(parser.config)
    if "tracking" in options:
        settings = ConfigParser.load_config_file(REPO / options["tracking"])
        known |= set(settings["configs"])
    if "run_id" in options:
        assert options["run_id"] in known, f"{where}: --run_id {options['run_id']} is not in {configs}"
    for key in set(options) - BUNDLE_CLI - {"bundle_root", "net_id", "filepath", "ckpt_file"}:
        assert key.split("#")[0] in known, f"{where}: --{key} is no key of {configs}"


def _check_module_command(module: str, options: dict[str, str], words: list[str], where: str) -> None:
    """The module exists and its command line knows every option (and subcommand) used."""
    old, out = sys.argv, io.StringIO()
    sys.argv = [module, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), pytest.raises(SystemExit) as done:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported before
                runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = old
    text = out.getvalue() + str(done.value.code or "")
    for option in options:
        assert f"--{option}" in text, f"{where}: {module} has no option --{option}"
    for word in words:
        assert word in text, f"{where}: {module} has no subcommand {word}"


def _check(doc: str, command: str) -> None:
    where = f"{doc}: {command[:100]}"
    tokens = _tokens(command)
    if tokens[0] == "bash":
        assert (REPO / tokens[1]).is_file(), f"{where}: {tokens[1]} does not exist"
        if tokens[1] == "run_demo.sh" and len(tokens) > 2:  # its options go to monai.bundle run of the demo configs
            configs = ["configs/compare.json", "configs/demo.json"]
            while len(tokens) > 2 and tokens[2] in ("--full", "--shareable", "--mni152"):  # run_demo.sh's own options
                configs, tokens = [*configs, f"configs/demo_{tokens[2][2:]}.json"], tokens[:2] + tokens[3:]
            _check_bundle_command("run", {"config_file": str(configs), **_options(tokens[2:])}, where)
        return
    if "-r" in tokens:  # pip install -r <files>
        for i, token in enumerate(tokens):
            if token == "-r":
                assert (REPO / tokens[i + 1]).is_file(), f"{where}: {tokens[i + 1]} does not exist"
        return
    if tokens[0] in ("nvflare", "mlflow"):
        return  # third-party command lines
    if tokens[1].endswith(".py"):  # python <script>: the file exists and its --help knows every option used
        assert (REPO / tokens[1]).is_file(), f"{where}: {tokens[1]} does not exist"
        done = subprocess.run([sys.executable, tokens[1], "--help"], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, f"{where}: {tokens[1]} --help: {done.stderr[-2000:]}"
        for option in _options(tokens[2:]):
            assert f"--{option}" in done.stdout, f"{where}: {tokens[1]} has no option --{option}"
        return
    module = tokens[tokens.index("-m") + 1]
    rest = tokens[tokens.index("-m") + 2 :]
    if module == "monai.bundle":
        _check_bundle_command(rest[0], _options(rest[1:]), where)
    else:
        subcommands = [w for w in rest[:1] if not w.startswith("-")]
        _check_module_command(module, _options(rest), subcommands, where)


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_every_documented_command_names_files_modules_and_options_that_exist(doc: str, command: str):
    _check(doc, command)


def test_every_documented_command_is_run_here_or_listed_with_the_reason_it_is_not():
    unclassified = []
    for doc, command in COMMANDS:
        run = [p for p in [*RUN, *FL_RUN] if re.match(p, command)]
        skipped = [p for p in NOT_RUN if re.match(p, command)]
        if len(run) + len(skipped) != 1:
            unclassified.append((doc, command, run + skipped))
    assert not unclassified, f"classify each documented command once, in RUN or NOT_RUN: {unclassified}"
    for pattern in RUN:
        assert any(re.match(pattern, c) for d, c in COMMANDS if d == "README.md"), f"no README command for {pattern}"


def _with(tokens: list[str], settings: dict[str, str]) -> list[str]:
    """``tokens`` with each ``--key`` of ``settings`` set to its value (replaced where present, else appended)."""
    tokens = list(tokens)
    for key, value in settings.items():
        if f"--{key}" in tokens:
            tokens[tokens.index(f"--{key}") + 1] = value
        else:
            tokens += [f"--{key}", value]
    return tokens


def test_the_readme_path_from_a_fresh_clone_runs_as_written(tmp_path: Path):
    bundle = tmp_path / "bundle"  # a fresh clone: the tracked parts, nothing a run writes
    bundle.mkdir()
    for part in ("configs", "scripts", "models"):
        (bundle / part).symlink_to(REPO / part)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    readme = [c for d, c in COMMANDS if d == "README.md"]
    for pattern in RUN:
        command = next(c for c in readme if re.match(pattern, c))
        tokens = _tokens(command)
        key = tokens[2] if tokens[2] != "monai.bundle" else _options(tokens[4:])["config_file"]
        tokens = _with(tokens, TINY_RUN.get(key, {}))
        done = subprocess.run(
            [sys.executable, *tokens[1:]], cwd=bundle, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    assert json.loads((bundle / "output" / "synthetic" / "dataset.json").read_text())["numTraining"] == 12
    assert set(json.loads((bundle / "output" / "evaluate_site_b" / "metrics.json").read_text())["metrics"]) == {
        "center_b"
    }
    mixture = json.loads((bundle / "output" / "synthetic_mixture" / "dataset.json").read_text())
    assert {it["center"] for it in mixture["training"]} <= {"center_a", "center_b"} and mixture["shareable"] is True
    assert (bundle / "output" / "segmentation" / "segmentation.pt").is_file()
    assert list((bundle / "output" / "segmentation" / "validation").glob("*_raw.csv"))


def test_the_federated_export_of_the_docs_runs_as_written_and_the_job_names_no_path_or_code(tmp_path: Path):
    """docs/federated.md's POC export in a fresh copy: a job folder naming no data folder, no code and no
    ``num_classes`` (the server holds no data), with the demo's own settings as job settings."""
    pytest.importorskip("nvflare")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for part in ("configs", "scripts"):  # copies: NVFlare refuses app packages that resolve outside the bundle
        shutil.copytree(REPO / part, bundle / part, ignore=shutil.ignore_patterns("__pycache__"))
    (bundle / "models").symlink_to(REPO / "models")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(bundle)
    federated = [c for d, c in COMMANDS if d == "docs/federated.md"]
    for pattern, tiny in FL_RUN.items():
        command = next(c for c in federated if re.match(pattern, c)).replace("$PWD", str(bundle))
        tokens = _with(_tokens(command), tiny)
        done = subprocess.run(
            [sys.executable, *tokens[1:]], cwd=bundle, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    client = (bundle / "jobs" / "tdgan_cyclic" / "app_center_a" / "config" / "config_fed_client.json").read_text()
    assert str(bundle / "data") not in client and "num_classes" not in client and "center_dir" not in client
    assert "label_map_settings" in client and "augmentation_settings" in client  # the demo's settings travel
    assert not list((bundle / "jobs" / "tdgan_cyclic").rglob("*.py"))
