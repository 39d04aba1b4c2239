#!/usr/bin/env bash
# The demo: the whole evaluation protocol (configs/compare.json) on the built-in demo centers (made under data/demo on
# first use), with the demo's small settings (configs/demo.json), on the GPU when there is one, else on the CPU.
# Trains TDGAN (bank and local reminding), sequential fine-tuning, AsynDGAN and joint training; measures the
# visit-by-center quality matrix; synthesises; trains and tests the segmentation UNet; audits for near copies; and
# writes output/report/ (report.md, report.json, figures). Runs under output/seed<k>/<method>/; finished steps are
# reused.
# Extra arguments are passed to `monai.bundle run` (e.g. --resume false to redo everything).
set -euo pipefail
cd "$(dirname "$0")"
VENV_REQUIREMENTS=requirements.txt source tools/venv.sh
python -m monai.bundle run \
    --config_file "['configs/compare.json','configs/demo.json']" \
    --meta_file configs/metadata.json \
    --logging_file configs/logging.conf "$@"
echo "report: output/report/report.md"
