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
"""Bundle-level checks: the metadata, the train workflow's properties, declared networks."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
import tomllib
from pathlib import Path

import torch
from conftest import META, REPO, TINY, visit_workflow
from monai.bundle import ConfigParser
from monai.networks.nets import UNet
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from scripts.data.demo import center_name
from scripts.sequence import handoff_name


def test_metadata_has_a_changelog_entry_for_its_version():
    """The zoo's schema check (``monai.bundle verify_metadata``) runs on this same metadata file in the submission
    folder that tools/zoo_submission.py writes and checks (tests/test_zoo_submission.py)."""
    meta = json.loads(Path(META).read_text())
    assert meta["version"] in meta["changelog"]


def test_network_data_format_describes_the_released_fully_convolutional_generator():
    meta = json.loads(Path(META).read_text())["network_data_format"]
    parser = ConfigParser()
    parser.read_config(REPO / "configs" / "inference.json")  # the network the released weights load into
    k, centers = parser.get_parsed_content("num_classes"), parser.get_parsed_content("max_centers")
    assert meta["inputs"]["image"]["num_channels"] == k * centers
    assert meta["outputs"]["pred"]["num_channels"] == parser.get_parsed_content("image_channels")
    assert meta["inputs"]["image"]["spatial_shape"] == meta["outputs"]["pred"]["spatial_shape"] == ["8*n", "8*n"]
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        for size in ((8, 8), (12, 20), (64, 64)):  # any multiple of 4 from 8: output of the input's size
            assert net(torch.zeros(1, k * centers, *size)).shape == (1, 1, *size)


def _pins(*files: str) -> dict[str, str]:
    """``package -> version`` of the ``==`` pins in requirement files (``-r`` includes not followed)."""
    pins = {}
    for name in files:
        for line in (REPO / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                package, version = line.split("==")
                pins[package.lower()] = version
    return pins


def test_required_packages_in_metadata_are_the_pins_of_requirements_txt():
    meta = json.loads(Path(META).read_text())
    pins = _pins("requirements.txt")
    versions = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    assert {k: pins.pop(k) for k in versions} == versions
    assert meta["required_packages_version"] == pins


def test_extra_packages_in_metadata_are_the_pins_of_the_optional_requirement_files():
    """Under a key of its own: MONAI 1.6 reads ``optional_packages_version`` as a deprecated name of
    ``required_packages_version`` and would replace the required list with it."""
    meta = json.loads(Path(META).read_text())
    assert "optional_packages_version" not in meta
    extra = meta["extra_packages_version"]
    pins = _pins(*(f"requirements-{name}.txt" for name in ("demo", "fl", "dp", "mlflow")))
    assert extra == {k: pins[k] for k in ("nvflare", "nilearn", "opacus", "mlflow")}


def _imported_modules(folder: Path) -> dict[str, str]:
    """Top-level module -> a file importing it, for every absolute import in the ``.py`` files under ``folder``."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


NOT_PINNED = {
    "torchvision": "tools/reference_step.py installs a stand-in when it is absent (it cannot be imported "
    "beside this torch, requirements.txt)",
    "models": "the pix2pix reference's own package, imported from its checkout by tools/reference_step.py",
}
"""Imported, deliberately not pinned, and why."""


def test_every_package_the_bundle_and_its_tests_import_is_pinned():
    own = {"scripts", "tests", "tools", *(p.stem for p in (REPO / "tests").glob("*.py"))}  # the tests' helpers too
    distributions = importlib.metadata.packages_distributions()
    runtime = _pins("requirements.txt", *(f"requirements-{n}.txt" for n in ("demo", "fl", "dp", "mlflow")))
    dev = runtime | _pins("requirements-dev.txt")
    unpinned = []
    for folder, pins in (("scripts", runtime), ("tests", dev), ("tools", dev)):
        for module, where in _imported_modules(REPO / folder).items():
            if module in sys.stdlib_module_names or module in own or module in NOT_PINNED:
                continue
            dists = {module.lower(), *(d.lower() for d in distributions.get(module, []))}  # itk: a metapackage
            if not dists & set(pins):
                unpinned.append(f"{module} (imported in {where}; distribution {sorted(dists)})")
    assert not unpinned, f"pin these in the requirement files: {unpinned}"


def _package_modules() -> dict[str, Path]:
    """Every module of the bundle's package (``scripts.data.centers``; a package by its ``__init__.py``) -> its file."""
    modules = {}
    for path in sorted((REPO / "scripts").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports_of(module: str, path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function: absolute names, relative imports resolved,
    and ``from package import name`` also as ``package.name`` (it may be a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            found |= {base, *(f"{base}.{a.name}" for a in node.names)}
    return found


def test_the_bundle_package_imports_nothing_from_the_repository_tools():
    """scripts/ is what a model-zoo user downloads; tools/ (benchmarks, profilers, trials) is not in the download."""
    offending = [
        f"{path.relative_to(REPO)} imports {name}"
        for module, path in _package_modules().items()
        for name in sorted(_imports_of(module, path))
        if name.split(".")[0] == "tools"
    ]
    assert not offending, offending


def test_no_two_modules_of_the_bundle_package_import_each_other():
    """One direction per pair of modules of scripts/, function-level imports included: a cycle hidden inside a
    function still ties both modules' import order and design together."""
    modules = _package_modules()
    imports = {m: _imports_of(m, path) & set(modules) - {m} for m, path in modules.items()}
    both_ways = sorted(f"{a} <-> {b}" for a in imports for b in imports[a] if a < b and a in imports[b])
    assert not both_ways, f"these modules import each other: {both_ways}"


def test_the_declared_python_floor_is_one_every_pinned_package_supports():
    floor = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert floor == ">=3.11"
    assert sys.version_info >= (3, 11)
    lowest = Version(floor.removeprefix(">="))
    pins = _pins("requirements-dev.txt", "requirements.txt")
    pins |= _pins(*(f"requirements-{n}.txt" for n in ("demo", "fl", "dp", "mlflow")))
    too_low = []
    for package, version in pins.items():
        try:
            dist = importlib.metadata.metadata(package)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional extra this environment lacks
        assert Version(dist["Version"]).public == version, f"{package}: installed {dist['Version']}, pinned {version}"
        needs = dist["Requires-Python"]
        if needs and not SpecifierSet(needs).contains(lowest):
            too_low.append(f"{package}=={version} needs Python {needs}")
    assert not too_low, f"requires-python {floor} is below what the pins need: {too_low}"


def test_eval_metrics_are_the_released_generators_numbers_in_the_shipped_report():
    """models/model.pt is seed 0's TDGAN-bank generator: its numbers are seed 0's of the multi-seed report."""
    metrics = json.loads(Path(META).read_text())["eval_metrics"]
    report = json.loads((REPO / "docs" / "figures" / "report.json").read_text())
    assert report["seeds"][0] == 0

    def seed0(value: dict) -> float:
        assert len(value["per_seed"]) == len(report["seeds"]) == value["n"]
        return value["per_seed"][0]

    final = report["quality"]["tdgan_bank"]["ssim"][-1]  # after the last visit
    dice = report["segmentation"]["scores"]["tdgan_bank"]  # the UNet trained on its shareable (new-map) set
    for i, center in enumerate(report["centers"]):
        assert metrics[f"ssim_{center}"] == seed0(final[i])
        assert metrics[f"lesion_dice_synthetic_trained_{center}"] == seed0(dice[center]["lesion"]["dice"])
    assert metrics["forgetting_ssim_center_a"] == seed0(report["forgetting"]["tdgan_bank"]["ssim"]["center_a"])


def test_train_workflow_has_every_property_the_model_zoo_checks(demo_root: Path, tmp_path: Path):
    workflow = visit_workflow([demo_root / "center_a"], tmp_path)
    assert workflow.check_properties() in (None, [])
    assert workflow.parser.get_parsed_content("train#trainer#max_epochs") == 2


def test_segmentation_network_is_a_monai_unet_declared_in_configs(demo_root: Path):
    parser = ConfigParser()
    parser.read_config(REPO / "configs" / "segmentation.json")
    parser["device"] = "cpu"
    parser["dataset_dir"] = str(demo_root)  # its classes and channels come from dataset.json
    net = parser.get_parsed_content("segmentation_network")
    assert isinstance(net, UNet)
    logits = net(torch.zeros(2, 1, *TINY["spatial_size"]))
    loss = parser.get_parsed_content("segmentation_loss")(logits, torch.zeros(2, 1, *TINY["spatial_size"]))
    assert logits.shape == (2, 4, *TINY["spatial_size"]) and torch.isfinite(loss)


def test_evaluate_defaults_to_the_final_hand_off_and_the_centers_the_demo_writes():
    evaluate = ConfigParser()
    evaluate.read_config(REPO / "configs" / "evaluate.json")
    evaluate["bundle_root"] = str(REPO)
    demo = ConfigParser()
    demo.read_config([str(REPO / "configs" / "compare.json"), str(REPO / "configs" / "demo.json")])
    demo["bundle_root"] = str(REPO)
    centers = [center_name(i) for i in range(demo["demo_data"]["num_centers"])]
    run = Path(demo.get_parsed_content("output_dir")) / f"seed{demo['seeds'][0]}" / demo["budget_reference"]
    final = run / "handoffs" / f"{handoff_name(len(centers) - 1, centers[-1:])}.pt"  # one center per TDGAN visit
    assert Path(evaluate.get_parsed_content("handoff")) == final
    assert Path(evaluate.get_parsed_content("dataset_dir")) == Path(demo.get_parsed_content("demo_dir"))


def test_each_demo_option_adds_its_override_and_its_own_output_folder_and_the_report_records_it():
    """run_demo.sh's options (--full, --shareable, --mni152) each add configs/demo_<option>.json in one order; the
    output folder and the command the report records follow from the options, so two choices never share a folder."""
    script = (REPO / "run_demo.sh").read_text()
    assert re.search(r"\^--\(full\|shareable\|mni152\)\$", script) and "for flag in full shareable mni152" in script
    seen = {}
    for options in ([], ["full"], ["shareable"], ["mni152"], ["shareable", "mni152"], ["full", "mni152"]):
        parser = ConfigParser()
        parser.read_config(
            [REPO / "configs" / n for n in ["compare.json", "demo.json"] + [f"demo_{o}.json" for o in options]]
        )
        parser["bundle_root"] = "/b"
        out = parser.get_parsed_content("output_dir")
        assert out == "/b/output" + "".join(f"_{o}" for o in options)
        assert parser.get_parsed_content("report_command") == " ".join(
            ["bash run_demo.sh", *(f"--{o}" for o in options)]
        )
        seen[out] = options
    assert len(seen) == 6
    shareable = ConfigParser()
    shareable.read_config([REPO / "configs" / n for n in ("compare.json", "demo.json", "demo_shareable.json")])
    assert list(shareable.get_parsed_content("methods")) == ["tdgan_bank"]
    assert (
        shareable.get_parsed_content("new_maps_per_center")
        == 4 * shareable.get_parsed_content("demo_data")["num_train"]
    )
    assert shareable.get_parsed_content("segmentation_overrides")["iterations"] == 3200
    visit = shareable.get_parsed_content("visit_overrides")
    assert (visit["epochs_constant"], visit["epochs_decay"]) == (68, 64)
