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
"""NVFlare Client API script of a site: receive the hand-off, run ONE visit on this site's data, send the hand-off on.

Run by the site's NVFlare client from the site's OWN copy of the bundle (the job names this file; the server sends
no code). The visit is the bundle's ``configs/train.json`` of that copy; from the job it takes only the plain training
settings of :data:`scripts.fl.overrides.JOB_SETTINGS`, checked by kind and range before anything else runs, never a
config key, expression, component or path: the data folder is the site's own setting (``--center_dir`` or the
environment variable ``TDGAN_CENTER_DIR``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
if str(BUNDLE_ROOT) not in sys.path:  # run by file path: make this copy's `scripts` package importable
    sys.path.insert(0, str(BUNDLE_ROOT))

import nvflare.client as flare  # noqa: E402

from scripts.data.centers import center_name  # noqa: E402
from scripts.files import check_inside  # noqa: E402
from scripts.fl.message import handoff_to_message, is_first_message, message_to_handoff  # noqa: E402
from scripts.fl.overrides import job_overrides  # noqa: E402
from scripts.handoff import load_handoff, save_handoff  # noqa: E402
from scripts.sequence import handoff_name  # noqa: E402
from scripts.visit import run_visit  # noqa: E402


def check_center_dir(path: str | None, site: str) -> Path:
    """This site's data folder, which must hold a ``dataset.json``.

    Raises:
        FileNotFoundError: no folder given, or it has no ``dataset.json``.
    """
    if not path:
        raise FileNotFoundError(f"site {site}: no data folder set (--center_dir or TDGAN_CENTER_DIR).")
    folder = Path(path).resolve()
    if not (folder / "dataset.json").is_file():
        raise FileNotFoundError(
            f"site {site}: data folder {folder} has no dataset.json (expected an MSD-style center folder with "
            "dataset.json, imagesTr/, labelsTr/); this site cannot train, so the relay stops here."
        )
    return folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the script (the job's ``task_script_args``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--center_dir", default=os.environ.get("TDGAN_CENTER_DIR"), help="this site's data folder")
    parser.add_argument(
        "--work_dir", default=None, help="where visits, logs and hand-offs go (default: ./tdgan_<site>)"
    )
    parser.add_argument(
        "--overrides", default="{}", help="visit settings: a JSON object of the plain settings a job may choose"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve the relay: for every task, one visit from the received hand-off, then send the outgoing one.

    Raises:
        OverrideError: the job chose a setting it may not choose (refused before NVFlare is even initialised).
    """
    args = parse_args(argv)
    overrides = job_overrides(args.overrides)  # first: nothing of the job is used before it is checked
    flare.init()
    site = flare.get_site_name()
    check_center_dir(args.center_dir, site)  # fail at job start, not after the sites before this one have trained
    work_dir = Path(args.work_dir or f"tdgan_{site}").resolve()
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        center_dir = check_center_dir(args.center_dir, site)
        handoff_in, done = None, 0
        if not is_first_message(model.params, model.meta):
            incoming = message_to_handoff(model.params, model.meta, f"site {site}: generator received")
            done = len(incoming.visits)
        tag = handoff_name(done, [center_name(center_dir)])
        check_inside(work_dir / tag, work_dir, f"site {site}: visit folder")
        if done:
            handoff_in = work_dir / tag / "handoff_in.pt"
            save_handoff(incoming, handoff_in)  # what arrived, as the hand-off file the visit reads
        handoff_out = work_dir / tag / "handoff_out.pt"
        print(f"site {site}: {tag} from {handoff_in or 'scratch'} (round {model.current_round})")
        run_visit([center_dir], work_dir / tag, handoff_in, handoff_out, overrides, bundle_root=BUNDLE_ROOT)
        params, meta = handoff_to_message(load_handoff(handoff_out))
        flare.send(flare.FLModel(params=params, params_type=flare.ParamsType.FULL, meta=meta))
        print(f"site {site}: {tag} sent ({len(params)} generator tensors)")


if __name__ == "__main__":
    main()
