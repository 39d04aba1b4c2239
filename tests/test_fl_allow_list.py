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
"""The class allow-list the bundle writes admits its own FLARE components and nothing else, by NVFlare's own rules."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import runpy
import sys
from pathlib import Path

import pytest

pytest.importorskip("nvflare")

from nvflare.apis.fl_constant import FLContextKey  # noqa: E402
from nvflare.apis.fl_context import FLContext  # noqa: E402
from nvflare.apis.fl_exception import UnsafeComponentError  # noqa: E402
from nvflare.apis.workspace import Workspace  # noqa: E402
from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST  # noqa: E402
from nvflare.app_common.widgets.component_path_authorizer import ComponentPathAuthorizer  # noqa: E402
from nvflare.fuel.common.excepts import ComponentNotAuthorized  # noqa: E402
from nvflare.fuel.utils.class_loader import load_class  # noqa: E402
from nvflare.private.fed.utils.fed_utils import authorize_build_component  # noqa: E402
from nvflare.private.json_configer import JsonConfigurator  # noqa: E402

import scripts  # noqa: E402
from scripts.fl.executor import VisitExecutor  # noqa: E402
from scripts.fl.job import allow_bundle_components, bundle_allow_list, tdgan_job  # noqa: E402
from scripts.fl.relay import HandoffPersistor, HandoffRelay, RelayController  # noqa: E402

SERVER = {"scripts.fl.relay.HandoffPersistor", "scripts.fl.relay.HandoffRelay", "scripts.fl.relay.RelayController"}
SITE = {"scripts.fl.executor.VisitExecutor"}
EXPECTED = {"server": SERVER, "site": SITE, "simulator": SERVER | SITE}


def _workspace(root: Path, role: str) -> Workspace:
    """A participant workspace (``startup/``, ``local/``) whose resources.json the bundle has written for ``role``."""
    (root / "startup").mkdir(parents=True, exist_ok=True)
    allow_bundle_components(root, role)
    return Workspace(str(root), role)


def _bundle_paths() -> tuple[set[str], list[str]]:
    """Every dotted path a job config could name in the bundle: each module under ``scripts``, each ``module.attr``,
    and ``module.Class.attr`` one level down; plus the modules that could not be imported here."""
    paths: set[str] = set()
    unimportable: list[str] = []
    names = ["scripts"] + [m.name for m in pkgutil.walk_packages(scripts.__path__, "scripts.")]
    for name in names:
        paths.add(name)
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional extra not installed here: checked by name below
            unimportable.append(name)
            continue
        for attr in dir(module):
            paths.add(f"{name}.{attr}")
            value = getattr(module, attr, None)
            if inspect.isclass(value):
                paths.update(f"{name}.{attr}.{sub}" for sub in dir(value))
    return paths, unimportable


@pytest.mark.parametrize("role", ["server", "site", "simulator"])
def test_the_written_allow_list_admits_exactly_the_bundles_own_components_by_nvflares_own_rule(
    tmp_path: Path, role: str
):
    workspace = _workspace(tmp_path / role, role)
    authorizer = ComponentPathAuthorizer()  # NVFlare's own matching rule and policy reading, not a copy of it

    def admitted(path: str) -> bool:
        try:
            authorizer.authorize_component_config({"path": path}, workspace=workspace)
        except UnsafeComponentError:
            return False
        return True

    paths, unimportable = _bundle_paths()
    assert len(paths) > 1000 and "scripts.fl.executor.ClientAPIExecutor" in paths
    assert "scripts.fl.relay.write_summary" in paths and "scripts.visit.run_visit" in paths
    allowed = {p for p in paths if admitted(p)}
    assert EXPECTED[role] <= allowed
    for path in allowed - EXPECTED[role]:
        # only <module>.<Class>.<attribute> of an allowed class is also admitted by the prefix rule; NVFlare's loader
        # cannot build it (it would import <module>.<Class> as a module)
        assert path.rsplit(".", 1)[0] in EXPECTED[role], f"{path} is admitted by the {role}'s allow-list"
        with pytest.raises(TypeError, match="Can't load class"):
            load_class(path)
    for name in unimportable:
        assert not admitted(name) and not admitted(f"{name}.AnyName"), f"{name} is admitted"


def test_the_allow_list_names_the_classes_the_job_builds_and_each_side_builds_only_its_own(tmp_path: Path):
    assert set(bundle_allow_list("server")) == SERVER and set(bundle_allow_list("site")) == SITE
    classes = {
        c.__module__ + "." + c.__qualname__ for c in (HandoffPersistor, HandoffRelay, RelayController, VisitExecutor)
    }
    assert classes == SERVER | SITE
    job = tdgan_job(["center_a", "center_b"], tmp_path / "out")
    job.export_job(str(tmp_path / "jobs"))
    app = tmp_path / "jobs" / job.name
    bundle: dict[str, set[str]] = {"server": set(), "site": set()}
    for role, pattern in (("server", "config_fed_server.json"), ("site", "config_fed_client.json")):
        for config in app.rglob(pattern):
            bundle[role] |= {p for p in _class_paths(json.loads(config.read_text())) if p.startswith("scripts.")}
    assert bundle == {"server": SERVER, "site": SITE}


def _class_paths(config: object) -> set[str]:
    """Every component path (``path`` / ``class_path``) a job config names, at any depth."""
    if isinstance(config, dict):
        found = {config[k] for k in ("path", "class_path") if isinstance(config.get(k), str)}
        return found.union(*(_class_paths(v) for v in config.values()))
    if isinstance(config, list):
        return set().union(*(_class_paths(v) for v in config))
    return set()


def _builder(tmp_path: Path, workspace: Workspace) -> JsonConfigurator:
    """NVFlare's JSON component builder with the component authorizer its server and client runners install."""
    config = tmp_path / "config_fed_client.json"
    config.write_text(json.dumps({"format_version": 2}))
    builder = JsonConfigurator(config_file_name=str(config), base_pkgs=[], module_names=[])
    fl_ctx = FLContext()
    fl_ctx.set_prop(FLContextKey.WORKSPACE_OBJECT, workspace, private=True)
    fl_ctx.set_prop(FLContextKey.CURRENT_JOB_ID, "attack", private=False)
    fl_ctx.set_prop(FLContextKey.JOB_META, {}, private=True, sticky=False)  # a job without custom code
    builder.set_component_build_authorizer(authorize_build_component, fl_ctx=fl_ctx, event_handlers=[])
    return builder


ATTACKS = [
    {"path": "scripts.fl.executor.ClientAPIExecutor", "args": {"task_script_path": "/bin/sh", "command": "id"}},
    {"path": "scripts.fl.relay.write_summary", "args": {"path": "/tmp/x", "data_root": None}},
    {"path": "scripts.fl.client.run_visit", "args": {}},
    {"path": "scripts.fl.relay.HandoffRelayX", "args": {}},
    {"path": "scripts.fl.executor", "args": {}},
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a["path"] for a in ATTACKS])
@pytest.mark.parametrize("role", ["server", "site"])
def test_nvflares_component_builder_refuses_other_bundle_paths_under_the_written_list(
    tmp_path: Path, role: str, attack: dict
):
    builder = _builder(tmp_path, _workspace(tmp_path / role, role))
    with pytest.raises(ComponentNotAuthorized, match="not in allow_list"):
        builder.build_component(json.loads(json.dumps(attack)))


def test_an_attribute_of_an_allowed_class_passes_the_prefix_rule_but_nvflares_loader_cannot_build_it(
    tmp_path: Path,
):
    builder = _builder(tmp_path, _workspace(tmp_path / "site", "site"))
    with pytest.raises(TypeError, match="'scripts.fl.executor' is not a package"):
        builder.build_component({"path": "scripts.fl.executor.VisitExecutor.__init__", "args": {}})


def test_nvflares_component_builder_builds_each_sides_own_components_and_refuses_the_others(tmp_path: Path):
    server = _builder(tmp_path, _workspace(tmp_path / "server", "server"))
    site = _builder(tmp_path, _workspace(tmp_path / "site", "site"))
    relay = {"path": "scripts.fl.relay.HandoffRelay", "args": {"output_dir": str(tmp_path), "order": ["a", "b"]}}
    persistor = {"path": "scripts.fl.relay.HandoffPersistor", "args": {}}
    executor = {"path": "scripts.fl.executor.VisitExecutor", "args": {"task_script_args": "--overrides {}"}}
    assert isinstance(server.build_component(dict(relay)), HandoffRelay)
    assert isinstance(server.build_component(dict(persistor)), HandoffPersistor)
    assert isinstance(site.build_component(dict(executor)), VisitExecutor)
    with pytest.raises(ComponentNotAuthorized):
        server.build_component(dict(executor))
    with pytest.raises(ComponentNotAuthorized):
        site.build_component(dict(relay))
    # NVFlare's own classes stay allowed (the cyclic controller the job uses is one of them)
    assert "nvflare.app_common.workflows.cyclic_ctl.CyclicController" in DEFAULT_CLASS_ALLOW_LIST


def test_rewriting_a_workspace_drops_the_old_prefix_and_other_bundle_entries_and_keeps_nvflares(tmp_path: Path):
    resources = tmp_path / "local" / "resources.json"
    resources.parent.mkdir(parents=True)
    old = ["nvflare.app_common.workflows.cyclic_ctl.CyclicController", "scripts.fl", "scripts.", "other.pkg.Thing"]
    resources.write_text(json.dumps({"format_version": 2, "class_allow_list": [*old, *SERVER]}))
    allow_bundle_components(tmp_path, "site")
    written = json.loads(resources.read_text())["class_allow_list"]
    assert written == ["nvflare.app_common.workflows.cyclic_ctl.CyclicController", "other.pkg.Thing", *SITE]
    default = tmp_path / "fresh" / "local" / "resources.json.default"
    default.parent.mkdir(parents=True)
    default.write_text(json.dumps({"format_version": 2, "class_allow_list": list(DEFAULT_CLASS_ALLOW_LIST)}))
    allow_bundle_components(tmp_path / "fresh", "server")
    written = json.loads(default.with_name("resources.json").read_text())["class_allow_list"]
    assert written == [*DEFAULT_CLASS_ALLOW_LIST, *sorted(SERVER)]


@pytest.mark.parametrize("resources", [{"class_allow_list": ["*"]}, {"class_list_enforcement_mode": "warn"}])
def test_a_workspace_that_admits_every_class_is_refused_in_one_line(tmp_path: Path, resources: dict):
    path = tmp_path / "local" / "resources.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(resources))
    with pytest.raises(ValueError, match="would be built; remove '\\*' and set 'enforce'") as err:
        allow_bundle_components(tmp_path, "site")
    assert "\n" not in str(err.value)


def _allow_command(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    """``python -m scripts.fl.job allow <args>``, run as ``-m`` runs it (the module as ``__main__``) in this process."""
    monkeypatch.setattr(sys, "argv", ["scripts.fl.job", "allow", *args])
    runpy.run_module("scripts.fl.job", run_name="__main__", alter_sys=True)


def test_the_allow_command_takes_a_role_and_refuses_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    _allow_command(monkeypatch, "site", str(tmp_path))
    assert "scripts.fl.executor.VisitExecutor" in capsys.readouterr().out
    assert json.loads((tmp_path / "local" / "resources.json").read_text())["class_allow_list"][-1:] == sorted(SITE)
    with pytest.raises(SystemExit) as refused:
        _allow_command(monkeypatch, str(tmp_path))
    assert "usage: python -m scripts.fl.job allow server|site" in str(refused.value.code)
