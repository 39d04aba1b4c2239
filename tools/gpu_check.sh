#!/usr/bin/env bash
# GPU checks in one go, on a machine with a CUDA GPU: (1) one short visit at 256² with AMP, (2) the step benchmark at
# 256², batch 8, fp32 vs bf16 vs fp16, (3) synthesis with configs/inference.json from that visit's hand-off, and
# (4) the multi-GPU override on one CUDA process (NCCL), and (5) the speed options side by side (channels_last,
# fused Adam, larger batches with the learning rate scaled, loader workers, torch.compile). Prints what it measured;
# logs go to $1 (default output/gpu_check). Written for an H200-class GPU (about 8 minutes expected); not yet run
# there as a whole (see docs/multi_gpu_3d.md). Uses the python on PATH (run `source tools/venv.sh` first, or use an environment with the
# pinned requirements). A CPU smoke run of the same steps at a small size, to check the script itself where there is
# no GPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_SIZE=64 bash tools/gpu_check.sh output/gpu_check_cpu
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-output/gpu_check}"
device="${GPU_CHECK_DEVICE:-cuda}"
size="${GPU_CHECK_SIZE:-256}"
mkdir -p "$out"
if [ "$device" = cuda ]; then
    python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU (GPU_CHECK_DEVICE=cpu runs a CPU smoke test)'; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
else
    python -c "import platform, torch; print('CPU smoke run (no GPU numbers):', platform.processor() or platform.machine(), '| torch', torch.__version__)"
fi
python -c "import scripts.data.demo as d; d.ensure_demo_centers('data/demo', num_centers=3, num_train=48, num_test=16, size=64, seed=0, anatomy='procedural')"
bundle() { python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf "$@"; }

echo "== 1. one visit, ${size}², full-size networks, AMP (float16 on CUDA, bfloat16 on CPU), 2 epochs"
t0=$(date +%s.%N)
bundle --config_file configs/train.json --dataset_dir data/demo/center_a --output_dir "$out/visit_amp" \
    --device "$device" --spatial_size "[$size,$size]" --batch_size 8 --amp True --epochs_constant 1 --epochs_decay 1 > "$out/visit_amp.log" 2>&1
python - "$out" "$t0" <<'PY'
import sys, time
from scripts.handoff import load_handoff
h = load_handoff(f"{sys.argv[1]}/visit_amp/handoff.pt")
v = h.visits[-1]
print(f"visit: {v['iterations']} steps in {v['seconds']} s (training loop), {time.time() - float(sys.argv[2]):.1f} s with start-up;"
      f" final losses {v['final_losses']}")
PY

echo "== 2. step benchmark, ${size}², batch 8, centers 1 and 8, fp32 / bf16 / fp16"
python -m tools.benchmark_step --device "$device" --sizes "$size" --batch_size 8 --centers 1 8 \
    --precisions fp32 bf16 fp16 --steps 8 --warmup 2 2> "$out/benchmark.err" | tee "$out/benchmark.jsonl"

echo "== 3. synthesis with configs/inference.json from the visit's hand-off (center_a's 48 label maps, ${size}²)"
t0=$(date +%s)
bundle --config_file configs/inference.json --handoff "$out/visit_amp/handoff.pt" --dataset_dir data/demo/center_a \
    --device "$device" --spatial_size "[$size,$size]" --output_dir "$out/synthetic" --overwrite True > "$out/synthesis.log" 2>&1
echo "synthesis: $(python -c "import json;print(json.load(open('$out/synthetic/dataset.json'))['numTraining'])") pairs in $(( $(date +%s) - t0 )) s with start-up"

echo "== 4. multi_gpu_train.json on one process (NCCL on CUDA, gloo on CPU), 64², 1 + 1 epochs"
torchrun --standalone --nproc_per_node=1 -m monai.bundle run \
    --config_file "['configs/train.json','configs/multi_gpu_train.json']" --meta_file configs/metadata.json \
    --logging_file configs/logging.conf --dataset_dir data/demo/center_a --output_dir "$out/ddp" \
    --spatial_size "[64,64]" --epochs_constant 1 --epochs_decay 1 > "$out/ddp.log" 2>&1
python -c "from scripts.handoff import load_handoff; h = load_handoff('$out/ddp/handoff.pt'); print('DDP visit: hand-off written,', h.visits[-1]['iterations'], 'steps')"

echo "== 5. speed options side by side: step at ${size}², bf16, center 4 (reminding), each case its own process"
# fraction_of_peak in each JSON line is the number to compare (tools/docs/benchmark.md: about 0.12-0.135 at batch 8 before)
common=(--device "$device" --sizes "$size" --centers 4 --precisions bf16 --steps 8 --warmup 3)  # FLOPs counted: fraction_of_peak
run_case() { name="$1"; shift; python -m tools.benchmark_step "${common[@]}" "$@" 2>> "$out/speed.err" \
    | python -c "import json,sys; [print('$name', json.dumps({k: r.get(k) for k in ('batch_size','step_s_median','images_per_s','fraction_of_peak','data_wait_share')})) for r in map(json.loads, sys.stdin) if 'summary' not in r]"; }
run_case baseline --batch_size 8 | tee -a "$out/speed.txt"
run_case channels_last --batch_size 8 --set channels_last=true | tee -a "$out/speed.txt"
run_case fused_adam --batch_size 8 --set fused_optimizers=true | tee -a "$out/speed.txt"
run_case batch16_lr2x --batch_size 16 --set lr=0.0004 | tee -a "$out/speed.txt"
run_case batch32_lr4x --batch_size 32 --set lr=0.0008 | tee -a "$out/speed.txt"
run_case workers4 --batch_size 8 --set num_workers=4 | tee -a "$out/speed.txt"
if [ "$device" = cuda ]; then  # compiling on a 2-core CPU takes minutes and did not pay off (tools/docs/benchmark.md)
    run_case compile --batch_size 8 --set compile=true | tee -a "$out/speed.txt"
    run_case all --batch_size 32 --set lr=0.0008 --set channels_last=true --set fused_optimizers=true \
        --set compile=true --set num_workers=4 | tee -a "$out/speed.txt"
fi
