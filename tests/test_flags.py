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
"""Strict booleans: the parser itself, and every on/off setting of every config going through it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import REPO, TINY
from monai.bundle import ConfigParser

from scripts.flags import FlagError, flag

CONFIGS = REPO / "configs"

WORKFLOWS: dict[str, list[str]] = {
    "train.json": ["train.json"],
    "train_3d.json": ["train.json", "train_3d.json"],
    "multi_gpu_train.json": ["train.json", "multi_gpu_train.json"],
    "inference.json": ["inference.json"],
    "segmentation.json": ["segmentation.json"],
    "train_sequential.json": ["train_sequential.json"],
    "federated.json": ["train_sequential.json", "federated.json"],
    "compare.json": ["compare.json"],
    "evaluate.json": ["evaluate.json"],
    "audit.json": ["audit.json"],
    "dp.json": ["train.json", "dp.json"],
    "segmentation_evaluate.json": ["segmentation.json", "segmentation_evaluate.json"],
    "segmentation_inference.json": ["segmentation.json", "segmentation_inference.json"],
    "demo.json": ["compare.json", "demo.json"],
    "demo_full.json": ["compare.json", "demo.json", "demo_full.json"],
    "demo_mni152.json": ["compare.json", "demo.json", "demo_mni152.json"],
    "demo_shareable.json": ["compare.json", "demo.json", "demo_shareable.json"],
    **{
        f"baselines/{p.name}": ["train_sequential.json", f"baselines/{p.name}"]
        for p in CONFIGS.glob("baselines/*.json")
    },
}
"""Every config file under configs/ and the files it runs with (an override file on top of its base workflow)."""

CONTEXT: dict[str, Any] = {"device": "cpu", "rank": 0, "ngf": TINY["ngf"], "num_blocks": 1, "ndf": TINY["ndf"]}
CONTEXT["setup"] = (
    None  # the first run step (seeding; with multi_gpu_train.json the process group), which networks need
)
"""Settings that keep resolving a consumer cheap, or possible without torch.distributed (applied where the workflow
has the key)."""


@pytest.mark.parametrize("value", [True, "true", "True", "TRUE", " true ", "1", 1])
def test_flag_reads_true_in_any_case(value: Any):
    assert flag(value, "x") is True


@pytest.mark.parametrize("value", [False, "false", "False", "FALSE", "0", 0])
def test_flag_reads_false_in_any_case(value: Any):
    assert flag(value, "x") is False


@pytest.mark.parametrize("value", ["maybe", "no", "yes", "", "2", 2, -1, None, 0.0, [], "falsey"])
def test_flag_refuses_anything_else_with_one_line_naming_the_setting(value: Any):
    with pytest.raises(FlagError) as info:
        flag(value, "overwrite")
    assert str(info.value) == (
        f"overwrite must be true or false (also 1 or 0, any case), got {value!r}; pass e.g. --overwrite false."
    )


def test_every_config_file_is_listed_with_the_files_it_runs_with():
    found = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.json")} - {"metadata.json", "mlflow.json"}
    assert found == set(WORKFLOWS), "list a new config file in WORKFLOWS (with its base workflow)"


def _parser(files: list[str], **override: Any) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    parser["bundle_root"] = str(REPO)
    for key, value in {**CONTEXT, **override}.items():
        if key in parser.config or key in override:
            parser[key] = value
    parser.parse()
    return parser


def _boolean_keys(files: list[str]) -> list[str]:
    """Top-level keys whose default is a bool, or an expression without references that evaluates to one."""
    parser = _parser(files)
    keys = []
    for key, value in parser.config.items():
        if isinstance(value, str) and value.startswith("$") and "@" not in value:
            try:
                value = parser.get_parsed_content(key)
            except Exception:  # noqa: BLE001 - needs a context this test has not (e.g. torch.distributed)
                continue
        if isinstance(value, bool):
            keys.append(key)
    return keys


def _consumers(config: Any, key: str, at: str = "") -> list[str]:
    """Ids of the config items whose text refers to ``@key``."""
    ref = re.compile(rf"@{re.escape(key)}(?![\w#])")
    if isinstance(config, dict):
        return [c for k, v in config.items() if k != "comment" for c in _consumers(v, key, f"{at}#{k}".lstrip("#"))]
    if isinstance(config, list):
        return [c for i, v in enumerate(config) for c in _consumers(v, key, f"{at}#{i}".lstrip("#"))]
    return [at] if isinstance(config, str) and ref.search(config) else []


def _flag_error(e: BaseException | None) -> FlagError | None:
    while e is not None and not isinstance(e, FlagError):
        e = e.__cause__ if e.__cause__ is not None else e.__context__
    return e


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


CASES = [(name, key) for name, files in WORKFLOWS.items() for key in _boolean_keys(files)]


def test_the_boolean_settings_found_include_the_known_ones():
    found = {(name, key) for name, key in CASES}
    known = {("train.json", k) for k in ("amp", "augment", "channels_last", "check_data", "compile", "overwrite")}
    known |= {("train.json", k) for k in ("progress_bar", "main_process", "shared_discriminator", "teacher_cache")}
    known |= {("inference.json", "overwrite"), ("segmentation.json", "augment"), ("compare.json", "resume")}
    known |= {("train_sequential.json", "resume"), ("demo.json", "resume")}
    assert known <= found


@pytest.mark.parametrize(("name", "key"), CASES, ids=[f"{n}:{k}" for n, k in CASES])
def test_every_consumer_of_a_boolean_setting_reads_false_as_false_and_refuses_maybe(name: str, key: str):
    files = WORKFLOWS[name]
    raw = _parser(files).config
    consumers = [c for c in _consumers(raw, key) if c != key]
    for consumer in consumers:
        try:
            _parser(files, **{key: "maybe"}).get_parsed_content(consumer)
            error = None
        except Exception as e:  # noqa: BLE001 - MONAI wraps it; the FlagError must be in the chain
            error = _flag_error(e)
        assert error is not None, f"{name}: {consumer} takes {key}='maybe' without scripts.flags.flag"
        assert str(error).startswith(f"{key} must be true or false")
        if consumer.split("#")[0] in ("run", "initialize", "finalize"):
            continue  # a workflow step: resolving it would run it
        for text, value in (("false", False), ("TRUE", True)):
            parsed = _parser(files, **{key: text}).get_parsed_content(consumer)
            expected = _parser(files, **{key: value}).get_parsed_content(consumer)
            if _plain(parsed) or _plain(expected):
                assert parsed == expected, f"{name}: {consumer} with {key}={text!r} gives {parsed!r}, not {expected!r}"
