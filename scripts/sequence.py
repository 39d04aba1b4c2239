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
"""The center sequence on one machine: the visit workflow (configs/train.json) run once per visit, in order."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from scripts.data.centers import read_center_order
from scripts.data.checks import InputError, check_sequence_inputs
from scripts.files import atomic_write, check_inside
from scripts.flags import flag
from scripts.handoff import load_handoff
from scripts.visit import BUNDLE_ROOT, run_visit

__all__ = ["plan_visits", "handoff_name", "write_summary", "VisitSequence"]

logger = logging.getLogger(__name__)


def plan_visits(order: Sequence[str], centers_per_visit: int = 1) -> list[list[str]]:
    """Group the centers into visits: ``1`` = TDGAN (one center at a time), ``2`` = two online centers per visit
    (two temporary discriminators per step), ``0`` = all centers in one visit (AsynDGAN, joint training)."""
    if centers_per_visit < 0:
        raise ValueError(f"centers_per_visit must be >= 0, got {centers_per_visit}.")
    n = centers_per_visit or len(order)
    return [list(order[i : i + n]) for i in range(0, len(order), n)]


def handoff_name(index: int, centers: Sequence[str]) -> str:
    """The name of visit ``index``'s (0-based) hand-off, the same in the local sequence and the federated relay:
    ``visitNN_<center>`` (``visitNN_<a>+<b>`` when several centers are online)."""
    return f"visit{index + 1:02d}_{'+'.join(centers)}"


def write_summary(
    path: str | os.PathLike, data_root: str | None, order: Sequence[str], visits: Sequence[dict], **extra: Any
) -> dict[str, Any]:
    """Write ``sequence.json`` atomically: the data root, the order, one record per visit (``centers``,
    ``handoff``, ...) and the final hand-off; ``extra`` keys (e.g. the federated engine) are added.

    Returns:
        the summary written.
    """
    summary = {
        "data_root": data_root,
        "order": list(order),
        **extra,
        "visits": list(visits),
        "final_handoff": visits[-1]["handoff"] if visits else None,
    }
    atomic_write(path, lambda f: f.write(json.dumps(summary, indent=4).encode()))
    return summary


class VisitSequence:
    """Runs the visits one after another, each from the previous visit's hand-off, one hand-off per visit.

    Every visit is the bundle's visit workflow (``visit_config``) run through ``monai.bundle.ConfigWorkflow`` with
    ``center_dirs``, ``dataset_dir``, ``handoff_in``, ``handoff_out`` and ``output_dir`` set for that visit, plus
    ``visit_overrides`` (network sizes, epochs, reminding weight, ...).

    Args:
        data_root: folder with the center folders and ``centers.json``.
        output_dir: where ``handoffs/``, ``visits/`` (logs) and ``sequence.json`` go.
        visit_config: the visit workflow config file(s).
        order: center names in visiting order; default: ``centers.json``'s order.
        centers_per_visit: see :py:func:`plan_visits`.
        visit_overrides: config overrides applied to every visit.
        bundle_root: the bundle whose metadata the visits record.
        resume: reuse the visits that already finished with the same inputs and settings (an interrupted sequence
            continues where it stopped; an interrupted visit resumes from its own checkpoints; a hand-off some other
            run left is refused, see :py:class:`~scripts.resume.VisitGuard`); False retrains every visit and
            replaces its hand-off.
        handoff_in: the hand-off the first visit starts from (None: from scratch), e.g. a generator pretrained on
            public data (docs/privacy.md); it must not hold a center of this sequence already.
    """

    def __init__(
        self,
        data_root: str | os.PathLike,
        output_dir: str | os.PathLike,
        visit_config: str | Sequence[str],
        order: Sequence[str] | None = None,
        centers_per_visit: int = 1,
        visit_overrides: dict[str, Any] | None = None,
        bundle_root: str | os.PathLike | None = None,
        resume: bool = True,
        handoff_in: str | os.PathLike | None = None,
    ) -> None:
        self.handoff_in = str(handoff_in) if handoff_in else None
        self.data_root = Path(data_root)
        self.output_dir = Path(output_dir)
        self.visit_config = visit_config
        known = read_center_order(data_root, strict=False)  # missing center folders: reported by check_inputs
        self.order = list(order) if order is not None else known
        unknown = [c for c in self.order if c not in known]
        if unknown:
            raise ValueError(f"centers {unknown} are not listed in {self.data_root / 'centers.json'} ({known}).")
        self.visits = plan_visits(self.order, centers_per_visit)
        self.visit_overrides = dict(visit_overrides or {})
        self.bundle_root = Path(bundle_root) if bundle_root else BUNDLE_ROOT
        self.resume = flag(resume, "resume")

    def handoff_path(self, index: int) -> Path:
        """Hand-off file of visit ``index`` (0-based), which must stay inside ``<output_dir>/handoffs``."""
        folder = self.output_dir / "handoffs"
        return check_inside(folder / f"{handoff_name(index, self.visits[index])}.pt", folder, "the sequence's hand-off")

    def check_inputs(self) -> None:
        """Check every center's files and the hand-offs a resumed run would reuse against the visit configuration,
        before the first visit: one line per problem, and nothing written.

        Raises:
            InputError: one line per problem found.
        """
        parser = ConfigParser()
        parser.read_config(self.visit_config)
        parser.update(self.visit_overrides)
        settings = parser.get_parsed_content("network_def").settings  # a CPU generator, only for its settings
        existing = (
            [str(p) for i in range(len(self.visits)) if (p := self.handoff_path(i)).is_file()] if self.resume else []
        )
        mapping = parser.get_parsed_content("label_mapping") if "label_mapping" in parser else None
        size = parser.get_parsed_content("spatial_size")
        check_sequence_inputs(self.data_root, self.order, settings, size, existing, label_mapping=mapping)
        if self.handoff_in:
            clash = sorted(set(load_handoff(self.handoff_in).codes) & set(self.order))
            if clash:
                raise InputError(
                    f"the starting hand-off {self.handoff_in} already holds center(s) {clash} of this sequence; a "
                    "center visited before must be named apart from the sequence's (e.g. a public center)."
                )

    def run(self) -> list[str]:
        """Check the inputs, then run every visit; returns the hand-off paths in order and writes ``sequence.json``."""
        self.check_inputs()
        handoff_in = self.handoff_in
        records = []
        for i, names in enumerate(self.visits):
            out = self.handoff_path(i)
            tag = out.stem
            logger.info(f"[{i + 1}/{len(self.visits)}] {tag}: visiting {names} from {handoff_in or 'scratch'}.")
            t0 = time.perf_counter()
            # the visit itself reuses its finished result (resume) or refuses a foreign one: one rule, in VisitGuard
            run_visit(
                [self.data_root / n for n in names],
                self.output_dir / "visits" / tag,
                handoff_in,
                out,
                # every center was read by check_inputs
                {"check_data": False, **self.visit_overrides, "overwrite": not self.resume},
                self.visit_config,
                self.bundle_root,
            )
            logger.info(f"[{i + 1}/{len(self.visits)}] {tag}: done in {time.perf_counter() - t0:.1f} s -> {out}")
            records.append({"centers": names, "handoff": str(out)})
            handoff_in = str(out)
        extra = {"pretrained_from": self.handoff_in} if self.handoff_in else {}
        write_summary(self.output_dir / "sequence.json", str(self.data_root), self.order, records, **extra)
        logger.info(f"sequence complete: final hand-off {handoff_in}")
        return [r["handoff"] for r in records]
