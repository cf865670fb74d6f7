#!/usr/bin/env bash
# The README's GPU figures in one run: `full` presets end to end on Fashion-MNIST, the evaluation
# with the guidance sweep, and the sampling benchmark. Writes logs and JSON under $OUT (or ./gpu-out).
#
#   bash bench/gpu_full.sh        # on a machine with one CUDA GPU and this project installed
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
RUNS=${RUNS:-runs-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1} WANDB_MODE=${WANDB_MODE:-offline}
VQ="python -m vq.cli.main"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
start=$(date +%s)
$VQ fit-tokenizer --preset full --device cuda --out "$RUNS/tokenizer" --force 2>&1 | tee "$OUT/tokenizer.log"
$VQ fit-prior --preset full --device cuda --tokenizer "$RUNS/tokenizer" --out "$RUNS/prior" --force 2>&1 | tee "$OUT/prior.log"
echo "tokenizer + export + prior: $(( $(date +%s) - start )) s" | tee "$OUT/wall.txt"
$VQ eval --device cuda --tokenizer "$RUNS/tokenizer" --prior "$RUNS/prior" --classifier "$RUNS/classifier" \
    --per-class 1000 --complete-images 1000 --sweep --out "$OUT/eval.json" 2>&1 | tee "$OUT/eval.log"
$VQ sample --device cuda --tokenizer "$RUNS/tokenizer" --prior "$RUNS/prior" -n 10 --out "$OUT/samples" --force
python bench/sampling.py --preset full --device cuda --batch 256 --json "$OUT/bench_sampling.json" 2>&1 | tee "$OUT/bench.log"
