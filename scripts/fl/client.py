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
no code). The visit is the bundle's ``configs/train.json`` of that copy. The site decides, the job asks: the data
folder, the work folder, the keys and the policy are the site's own settings (:py:mod:`scripts.fl.site`); from the
job the script takes only ``--overrides``, plain training settings checked against the bundle's allow-list and the
site's policy before NVFlare is even initialised; any other argument (a folder above all) is refused in one line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
if str(BUNDLE_ROOT) not in sys.path:  # run by file path: make this copy's `scripts` package importable
    sys.path.insert(0, str(BUNDLE_ROOT))

import nvflare.client as flare  # noqa: E402

from scripts.data.centers import center_name  # noqa: E402
from scripts.files import check_inside  # noqa: E402
from scripts.fl.message import CHAIN_KEY, META_KEY, handoff_to_message, is_first_message, message_to_handoff  # noqa: E402
from scripts.fl.overrides import OverrideError, job_overrides  # noqa: E402
from scripts.fl.site import SiteError, SiteSettings, chain_check, load_site_settings, sign_link  # noqa: E402
from scripts.handoff import load_handoff, save_handoff, set_chain_check, set_limits  # noqa: E402
from scripts.sequence import handoff_name  # noqa: E402
from scripts.visit import run_visit  # noqa: E402

logger = logging.getLogger(__name__)


def check_center_dir(path: str | Path | None, site: str) -> Path:
    """This site's data folder, which must hold a ``dataset.json``.

    Raises:
        FileNotFoundError: no folder given, or it has no ``dataset.json``.
    """
    if not path:
        raise FileNotFoundError(
            f"site {site}: no data folder set (center_dir in the site's tdgan_site.json, or TDGAN_CENTER_DIR)."
        )
    folder = Path(path).resolve()
    if not (folder / "dataset.json").is_file():
        raise FileNotFoundError(
            f"site {site}: data folder {folder} has no dataset.json (expected an MSD-style center folder with "
            "dataset.json, imagesTr/, labelsTr/); this site cannot train, so the relay stops here."
        )
    return folder


class _JobArguments(argparse.ArgumentParser):
    """The job's arguments: ``--overrides`` only; anything else is a refusal in one line, not a usage screen."""

    def error(self, message: str) -> None:  # noqa: D102 - argparse's hook
        raise OverrideError(
            f"job arguments refused ({message}): a job may pass only --overrides <JSON of visit settings>; the data "
            "and work folders, keys and policy are the site's own settings (tdgan_site.json)."
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the script (the job's ``task_script_args``): ``--overrides`` and nothing else.

    Raises:
        OverrideError: any other argument (``--center_dir``, ``--work_dir``, ...), in one line.
    """
    parser = _JobArguments(description=__doc__.splitlines()[0], add_help=False, allow_abbrev=False)
    parser.add_argument(
        "--overrides", default="{}", help="visit settings: a JSON object of the plain settings a job may choose"
    )
    return parser.parse_args(argv)


def _receive(model: flare.FLModel, settings: SiteSettings, site: str, job: str, done: set[int]) -> tuple:
    """Check a task's hand-off against the site's settings: its signature chain (when the site is in a signing
    federation) before anything is parsed, the limits, the contract, and this site's turn (the federation's order,
    and no position twice).

    Returns:
        ``(handoff or None, chain, position, sha256 of the incoming hand-off or None)``.

    Raises:
        HandoffError: any check fails (the task fails; the relay stops).
    """
    source = f"site {site}: generator received"
    chain, incoming, previous = [], None, None
    if not is_first_message(model.params, model.meta):
        chain = (model.meta or {}).get(CHAIN_KEY) or []
        incoming = message_to_handoff(model.params, model.meta, source, chain_check(chain, settings, job, source))
        previous = model.meta[META_KEY]["sha256"]
    position = len(incoming.visits) if incoming else 0
    federation = settings.federation
    if federation is not None and federation.expected_site(position) not in (None, site):
        raise SiteError(
            f"{source}: visit {position + 1} belongs to {federation.expected_site(position)} in federation "
            f"{federation.name}'s order, not to this site; refused (rolled back, replayed or out of turn)."
        )
    if position in done:
        raise SiteError(f"{source}: this site already made visit {position + 1} of this job; refused (replayed).")
    return incoming, chain, position, previous


def main(argv: list[str] | None = None) -> None:
    """Serve the relay: for every task, one visit from the received hand-off, then send the outgoing one.

    Raises:
        OverrideError: the job passed another argument than ``--overrides`` or a setting the site's policy refuses
            (refused before NVFlare is even initialised).
        SiteError: the site's settings file, federation file or key does not hold.
    """
    args = parse_args(argv)
    requested = job_overrides(args.overrides)  # first: nothing of the job is used before the bundle's allow-list
    flare.init()
    site, job = flare.get_site_name(), flare.get_job_id()
    settings = load_site_settings(site)  # this site's own settings; its key must be the one its federation lists
    overrides = settings.visit_overrides(requested)  # the site's policy, before anything runs
    set_limits(settings.limits)
    if settings.federation is not None:  # the received hand-off, saved for the visit, is read again under its chain
        set_chain_check(lambda chain, sha, visits, source: chain_check(chain, settings, job, source)(sha, visits))
    check_center_dir(settings.center_dir, site)  # fail at job start, not after the sites before it have trained
    work_dir = (settings.work_dir or Path(f"tdgan_{site}")).resolve()
    if not settings.authenticated:
        print(
            f"site {site}: UNAUTHENTICATED federation (no federation file in {settings.source}): hand-offs are "
            "checked for integrity and structure only, not for who made them."
        )
    done: set[int] = set()
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        center_dir = check_center_dir(settings.center_dir, site)
        incoming, chain, position, previous = _receive(model, settings, site, job, done)
        tag = handoff_name(position, [center_name(center_dir)])
        check_inside(work_dir / tag, work_dir, f"site {site}: visit folder")
        handoff_in = None
        if incoming is not None:
            handoff_in = work_dir / tag / "handoff_in.pt"
            save_handoff(incoming, handoff_in, chain=chain or None)  # what arrived, as the file the visit reads
        handoff_out = work_dir / tag / "handoff_out.pt"
        print(f"site {site}: {tag} from {handoff_in or 'scratch'} (round {model.current_round})")
        run_visit([center_dir], work_dir / tag, handoff_in, handoff_out, overrides, bundle_root=BUNDLE_ROOT)
        done.add(position)
        params, meta = handoff_to_message(load_handoff(handoff_out, written_here=True))
        if settings.signing_key is not None and settings.federation is not None:
            link = sign_link(
                settings.signing_key, settings.federation.name, job, position, site, meta[META_KEY]["sha256"], previous
            )
            meta[CHAIN_KEY] = [*chain, link]
        flare.send(flare.FLModel(params=params, params_type=flare.ParamsType.FULL, meta=meta))
        print(f"site {site}: {tag} sent ({len(params)} generator tensors{', signed' if CHAIN_KEY in meta else ''})")


if __name__ == "__main__":
    main()
