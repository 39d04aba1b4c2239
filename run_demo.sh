#!/usr/bin/env bash
# The demo: the evaluation protocol (configs/compare.json) on the built-in demo centers (made under data/demo on first
# use), with the demo's small settings (configs/demo.json), on the GPU when there is one, else on the CPU.
# By default the fast demo: TDGAN (bank reminding) and sequential fine-tuning, the visit-by-center quality matrix and
# forgetting, a UNet on TDGAN's shareable synthetic set and one on the real images tested on every center's real test
# images, the near-copy audit; report in output/report/ (report.md, report.json, figures). Runs under
# output/seed<k>/<method>/; finished steps are reused.
# --full (first argument): all five generators and every synthetic set (configs/demo_full.json).
# Other arguments are passed to `monai.bundle run` (e.g. --seeds "[0,1,2]", --resume False to redo everything).
set -euo pipefail
cd "$(dirname "$0")"
configs="'configs/compare.json','configs/demo.json'"
if [[ "${1:-}" == "--full" ]]; then
    configs="$configs,'configs/demo_full.json'"
    shift
fi
VENV_REQUIREMENTS=requirements.txt source tools/venv.sh
python -m monai.bundle run \
    --config_file "[$configs]" \
    --meta_file configs/metadata.json \
    --logging_file configs/logging.conf "$@"
echo "report: output/report/report.md"
