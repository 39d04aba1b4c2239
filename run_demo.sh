#!/usr/bin/env bash
# The demo: the evaluation protocol (configs/compare.json) on the built-in demo centers (made under data/demo on first
# use), with the demo's small settings (configs/demo.json), on the GPU when there is one, else on the CPU.
# By default the fast demo: TDGAN (bank reminding) and sequential fine-tuning, the visit-by-center quality matrix and
# forgetting, a UNet on TDGAN's shareable synthetic set and one on the real images tested on every center's real test
# images, the near-copy audit; report in output/report/ (report.md, report.json, figures). Runs under
# output/seed<k>/<method>/; finished steps are reused.
# Its own options, first and in any order, each an override file that also names the output folder (output_<flag>):
#   --full       all five generators and every synthetic set (configs/demo_full.json);
#   --shareable  TDGAN-bank's shareable set at its best measured setting (configs/demo_shareable.json);
#   --mni152     the second demo dataset, MNI152 anatomy with 4 slices per subject (configs/demo_mni152.json).
# Other arguments are passed to `monai.bundle run` (e.g. --seeds "[0,1,2]", --resume False to redo everything).
set -euo pipefail
cd "$(dirname "$0")"
configs="'configs/compare.json','configs/demo.json'"
declare -A asked=()
while [[ "${1:-}" =~ ^--(full|shareable|mni152)$ ]]; do
    asked[${1#--}]=1
    shift
done
for flag in full shareable mni152; do  # one order whatever the command line's, so one output folder per choice
    if [[ -n "${asked[$flag]:-}" ]]; then configs="$configs,'configs/demo_$flag.json'"; fi
done
VENV_REQUIREMENTS=requirements.txt source tools/venv.sh
python -m monai.bundle run \
    --config_file "[$configs]" \
    --meta_file configs/metadata.json \
    --logging_file configs/logging.conf "$@"
