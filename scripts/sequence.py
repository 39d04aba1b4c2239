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

from monai.bundle import ConfigParser, ConfigWorkflow

from scripts.data.centers import read_center_order
from scripts.data.checks import check_sequence_inputs
from scripts.handoff import load_handoff

__all__ = ["plan_visits", "run_visit", "VisitSequence"]

logger = logging.getLogger(__name__)


def plan_visits(order: Sequence[str], centers_per_visit: int = 1) -> list[list[str]]:
    """Group the centers into visits: ``1`` = TDGAN (one center at a time), ``2`` = two online centers per visit
    (two temporary discriminators per step), ``0`` = all centers in one visit (AsynDGAN, joint training)."""
    if centers_per_visit < 0:
        raise ValueError(f"centers_per_visit must be >= 0, got {centers_per_visit}.")
    n = centers_per_visit or len(order)
    return [list(order[i : i + n]) for i in range(0, len(order), n)]


def run_visit(
    visit_config: str | Sequence[str], overrides: dict[str, Any], meta_file: str | None = None
) -> ConfigWorkflow:
    """Run ONE visit: the bundle's visit workflow (``configs/train.json``) through ``monai.bundle.ConfigWorkflow``.

    The local sequence and the federated client (``scripts/fl/client.py``) both call this, so a visit is written once.

    Args:
        visit_config: the visit workflow config file(s).
        overrides: config overrides: ``center_dirs``, ``dataset_dir``, ``handoff_in``, ``handoff_out``,
            ``output_dir`` and any setting of the visit (network sizes, epochs, ...).
        meta_file: the bundle's metadata file.

    Returns:
        the finished workflow.
    """
    workflow = ConfigWorkflow(
        config_file=visit_config, meta_file=meta_file, logging_file=False, workflow_type="train", **overrides
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


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
        meta_file: the bundle's metadata file.
        resume: skip visits whose hand-off already exists (an interrupted sequence continues where it stopped; an
            interrupted visit resumes from its own checkpoints).
    """

    def __init__(
        self,
        data_root: str | os.PathLike,
        output_dir: str | os.PathLike,
        visit_config: str | Sequence[str],
        order: Sequence[str] | None = None,
        centers_per_visit: int = 1,
        visit_overrides: dict[str, Any] | None = None,
        meta_file: str | None = None,
        resume: bool = True,
    ) -> None:
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
        self.meta_file = meta_file
        self.resume = resume

    def handoff_path(self, index: int) -> Path:
        """Hand-off file of visit ``index`` (0-based)."""
        return self.output_dir / "handoffs" / f"visit{index + 1:02d}_{'+'.join(self.visits[index])}.pt"

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
        check_sequence_inputs(self.data_root, self.order, settings, parser.get_parsed_content("spatial_size"), existing)

    def run(self) -> list[str]:
        """Check the inputs, then run every visit; returns the hand-off paths in order and writes ``sequence.json``."""
        self.check_inputs()
        handoff_in: str | None = None
        records = []
        for i, names in enumerate(self.visits):
            out = self.handoff_path(i)
            tag = out.stem
            if self.resume and out.is_file():
                load_handoff(out)  # a complete, untampered hand-off, or a clear error
                logger.info(f"[{i + 1}/{len(self.visits)}] {tag}: hand-off exists, skipped (resume=True).")
            else:
                logger.info(f"[{i + 1}/{len(self.visits)}] {tag}: visiting {names} from {handoff_in or 'scratch'}.")
                t0 = time.perf_counter()
                overrides = {
                    "check_data": False,  # every center was read by check_inputs
                    **self.visit_overrides,
                    "dataset_dir": str(self.data_root / names[0]),
                    "center_dirs": [str(self.data_root / n) for n in names],
                    "handoff_in": handoff_in,
                    "handoff_out": str(out),
                    "output_dir": str(self.output_dir / "visits" / tag),
                }
                run_visit(self.visit_config, overrides, self.meta_file)
                logger.info(f"[{i + 1}/{len(self.visits)}] {tag}: done in {time.perf_counter() - t0:.1f} s -> {out}")
            records.append({"centers": names, "handoff": str(out)})
            handoff_in = str(out)
        summary = {
            "data_root": str(self.data_root),
            "order": self.order,
            "visits": records,
            "final_handoff": handoff_in,
        }
        (self.output_dir / "sequence.json").write_text(json.dumps(summary, indent=4))
        logger.info(f"sequence complete: final hand-off {handoff_in}")
        return [r["handoff"] for r in records]
