#!/usr/bin/env bash
# The demo: TDGAN over the built-in demo centers (made under data/demo on first use), one visit per center,
# on the GPU when there is one, else on the CPU. Hand-offs: output/tdgan_bank/handoffs/; logs: output/tdgan_bank/visits/.
# Extra arguments are passed to `monai.bundle run` (e.g. --resume false to retrain from scratch).
set -euo pipefail
cd "$(dirname "$0")"
source tools/venv.sh
python -m monai.bundle run \
    --config_file "['configs/train_sequential.json','configs/demo.json']" \
    --meta_file configs/metadata.json \
    --logging_file configs/logging.conf "$@"
