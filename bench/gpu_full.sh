#!/usr/bin/env bash
# The README's GPU figures in one prepared run that fits a 15-minute device lease (at most
# DEADLINE = 540 s of wall time here, the machine's start and the transfers on top): the `full`
# presets trained on Fashion-MNIST under time budgets, `vq eval` at n = 10,000 with guidance 2
# (and completion accuracy on 1,000 test images) and 1.5, a sample grid, the sampling benchmark
# (7x7 and 14x14 codes, with and without guidance, plain loop vs the fast path) and the training
# benchmark.
#
# The GPU machine has Python, torch, numpy and friends but not x-transformers and its pure-Python
# needs, and no network. `bash bench/gpu_wheels.sh` fills the git-ignored folder .whl here with
# their wheels, Fashion-MNIST's IDX files and the cached evaluation classifier; the device call
# carries .whl and runs, from the repository root:
#
#     bash bench/gpu_full.sh
#
# Rehearsal on a CPU with tiny budgets (this machine's venv; wheels for its Python built with
# PYVER=3.11 DEST=/tmp/whl311 bash bench/gpu_wheels.sh):
#
#     PYTHON=.venv/bin/python WHEELS=/tmp/whl311 DEVICE=cpu PRESET=demo LIMIT=500 TOK_BUDGET=20s \
#       PRIOR_BUDGET=20s EVAL_N=20 COMPLETE_N=20 BENCH_BATCH=4 BENCH_REPEATS=1 TRAIN_STEPS=10 \
#       OMP_NUM_THREADS=1 DEADLINE=900 TRAIN_LIMIT=240 OUT=/tmp/rehearsal bash bench/gpu_full.sh
#
# (a CPU's steps are slower than the GPU budgets assume: give the rehearsal more DEADLINE, and
# on a CPU shared with other work one thread each, so processes do not fight over the cores).
#
# The steps, most wanted first (after a check, in seconds, of the fast path's CUDA graphs against
# the forward pass): fit-tokenizer and fit-prior (`full`, TOK_BUDGET and PRIOR_BUDGET); eval at
# guidance 2 with completion; the sampling benchmark's plain loop and CUDA-graph fast path
# at 14x14 and 7x7; eval at guidance 1.5; a sample grid; the torch.compile rows of the sampling
# benchmark; the training benchmark (its figures repeat the fit runs', measured alone).
#
# Every step runs under `timeout`, capped by what is left of DEADLINE (a step with under 15 s
# left is skipped); a failing step is recorded and the next one runs. Under $OUT (at most 8 files
# come back from the device): summary.txt (each step's exit status and seconds, then the
# headline figures), log.txt (every step's output), eval_g2.json, eval_g1.5.json, samples.png,
# sampling.json, train.json (OUT defaults to /tmp/vq-gpu-out off the device).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-full}
OUT=${OUT:-/tmp/vq-gpu-out}
RUNS=${RUNS:-/tmp/vq-gpu-runs}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/vq-site}
DEADLINE=${DEADLINE:-540}
TOK_BUDGET=${TOK_BUDGET:-90s}
PRIOR_BUDGET=${PRIOR_BUDGET:-210s}
LIMIT=${LIMIT:-}                           # images per split (rehearsals); empty: all
EVAL_N=${EVAL_N:-10000}                    # samples judged per guidance scale (a tenth per class)
COMPLETE_N=${COMPLETE_N:-1000}             # test images completed
BENCH_BATCH=${BENCH_BATCH:-1024}
BENCH_REPEATS=${BENCH_REPEATS:-3}
TRAIN_STEPS=${TRAIN_STEPS:-100}
BENCH_KV_HEADS=${BENCH_KV_HEADS:-}         # key/value heads of the benchmarked prior; empty: heads
# Each step's limit in seconds (all capped by what is left of DEADLINE).
TOK_LIMIT=${TOK_LIMIT:-}                   # empty: the budget + 60
PRIOR_LIMIT=${PRIOR_LIMIT:-}               # empty: the budget + 75 (the code export comes first)
EVAL_LIMIT=${EVAL_LIMIT:-150}
SAMPLES_LIMIT=${SAMPLES_LIMIT:-45}
BENCH_LIMIT=${BENCH_LIMIT:-100}
TRAIN_LIMIT=${TRAIN_LIMIT:-90}
# The sampling benchmark's methods (bench/sampling.py --methods): first those that every geometry
# gets, then those timed only if time is left at the end (compiling the step takes the longest).
if [[ $DEVICE == cuda* ]]; then
    BENCH_DTYPE=${BENCH_DTYPE:-bf16}
    BENCH_METHODS=${BENCH_METHODS:-plain graph}
    BENCH_LATE_METHODS=${BENCH_LATE_METHODS-compile}
else
    BENCH_DTYPE=${BENCH_DTYPE:-fp32}
    BENCH_METHODS=${BENCH_METHODS:-plain fast}
    BENCH_LATE_METHODS=${BENCH_LATE_METHODS-}
fi

mkdir -p "$OUT" "$RUNS"
OUT=$(cd "$OUT" && pwd)
SUMMARY=$OUT/summary.txt
LOG=$OUT/log.txt
: >"$SUMMARY"
: >"$LOG"
export PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled COLUMNS=160
START=$SECONDS

seconds_of() {  # "90s", "5m" or "120" -> 120
    case $1 in
        *m) echo $(( ${1%m} * 60 )) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}

step() {  # step NAME LIMIT_S CMD...: run CMD under timeout, its output appended to log.txt
    local name=$1 limit=$2 t0 rc
    shift 2
    local left=$(( DEADLINE - (SECONDS - START) - 10 ))  # 10 s kept for the summary
    if (( left < 15 )); then
        printf '%-16s %s\n' "$name" "skipped: $(( SECONDS - START )) s of $DEADLINE spent" | tee -a "$SUMMARY"
        return 0
    fi
    (( limit > left )) && limit=$left
    printf '\n===== %s (limit %s s, at %s s): %s\n' "$name" "$limit" "$(( SECONDS - START ))" "$*" >>"$LOG"
    t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    local what="ok"
    (( rc == 124 || rc == 137 )) && what="TIMED OUT"
    (( rc != 0 && rc != 124 && rc != 137 )) && what="FAILED"
    printf '%-16s %-9s exit %3s  %4s s (limit %s s)\n' "$name" "$what" "$rc" "$(( SECONDS - t0 ))" "$limit" | tee -a "$SUMMARY"
}

bench() {  # bench NAME METHODS GEOMETRY...: the sampling benchmark, rows added to sampling.json
    local name=$1 methods=$2
    shift 2
    # shellcheck disable=SC2086  # $methods is a list of words
    step "$name" "$BENCH_LIMIT" "$PYTHON" bench/sampling.py --preset "$PRESET" --geometry "$@" --device "$DEVICE" \
        --dtype "$BENCH_DTYPE" --batch "$BENCH_BATCH" --repeats "$BENCH_REPEATS" --guidance 2 --methods $methods \
        ${BENCH_KV_HEADS:+--kv-heads "$BENCH_KV_HEADS"} --json "$OUT/sampling.json" --append
}

# --- setup: carried wheels into $SITE (ahead of the machine's own packages), vq from this tree
setup() {
    rm -rf "$SITE"
    mkdir -p "$SITE/vq"
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl || return 1
    else
        echo "no wheels in $WHEELS: using the packages installed"
    fi
    # vq is a namespace package mapped from four folders (pyproject's package-dir); links give the
    # same layout with no build step and no build backend needed on the machine.
    for part in cli pipeline stage1_vqvae stage2_prior; do
        ln -s "$ROOT/$part" "$SITE/vq/$part"
    done
}
printf '\n===== setup\n' >>"$LOG"
if setup >>"$LOG" 2>&1; then status=ok; else status=FAILED; fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if [[ -d $WHEELS/fashion-mnist ]]; then
    export VQ_FASHION_MNIST_DIR=${VQ_FASHION_MNIST_DIR:-$(cd "$WHEELS/fashion-mnist" && pwd)}
fi
CLASSIFIER=${CLASSIFIER:-$RUNS/classifier}
if [[ -d $WHEELS/classifier ]]; then
    mkdir -p "$CLASSIFIER" && cp -r "$WHEELS"/classifier/. "$CLASSIFIER"/
fi
printf '%-16s %-9s %s s\n' setup "$status" "$(( SECONDS - START ))" | tee -a "$SUMMARY"

step environment 60 "$PYTHON" - "$DEVICE" <<'EOF'
import importlib.metadata as md, platform, subprocess, sys
import torch
import vq.cli.main, vq.stage2_prior.fast
from vq.pipeline.data.idx import fashion_mnist_dir
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
for name in ("x-transformers", "einx", "typer", "rich", "einops", "safetensors", "numpy"):
    print(name, md.version(name))
print("vq from", vq.cli.main.__file__)
print("Fashion-MNIST from", fashion_mnist_dir())
if sys.argv[1].startswith("cuda"):
    print(torch.cuda.get_device_name(), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm", "--format=csv"])
EOF

if [[ $DEVICE == cuda* ]]; then  # the fast path's CUDA graphs against the forward pass, on this GPU, in seconds
    step fast_check 90 "$PYTHON" - "$DEVICE" <<'EOF'
import sys
import torch
from vq.stage2_prior import AutoregressivePrior, PriorConfig, sample_codes
from vq.stage2_prior.fast import sample_codes_fast, stepper_for

torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
device, worst = torch.device(sys.argv[1]), 0.0
for kw in ({}, {"kv_heads": 2}, {"condition": "sketch", "sketch_size": 28}):
    torch.manual_seed(0)
    model = AutoregressivePrior(PriorConfig(codebook_size=64, height=7, width=7, num_classes=10, dim=64, depth=2,
                                            heads=4, dropout=0.0, **kw)).to(device).eval()
    labels = torch.arange(8, device=device) % 10
    sketch = (torch.rand(8, 1, 28, 28, device=device) > 0.8) if kw.get("condition") else None
    gen = lambda seed: torch.Generator(device).manual_seed(seed)  # noqa: E731
    with torch.no_grad():
        codes = sample_codes_fast(model, labels, sketch=sketch, compile="eager", generator=gen(1))
        full = model.logits(codes, labels, sketch)
        tokens = torch.cat([model.class_tokens(labels, 8, device), codes.flatten(1)], 1)
        for mode in ("eager", "graph"):  # compile: the late benchmark rows (compiling takes long)
            stepper = stepper_for(model, 8, mode)
            stepper.decoder.set_context(model.context(sketch, 8))
            steps = torch.stack([stepper(tokens[:, t], t).clone() for t in range(49)], 1)
            diff = (steps - full).abs().max().item()
            worst = max(worst, diff)
            same = {cfg: torch.equal(sample_codes_fast(model, labels, guidance=cfg, sketch=sketch, compile=mode, generator=gen(2)),
                                     sample_codes_fast(model, labels, guidance=cfg, sketch=sketch, compile="eager", generator=gen(2)))
                    for cfg in (1.0, 3.0)}
            print(f"{kw or 'class'} {mode}: max |logits - teacher-forced| {diff:.2e}, same draws as eager {same}", flush=True)
    if not kw:
        plain = sample_codes(model, labels, generator=gen(3))
        print(f"plain loop == fast eager on {device}:", torch.equal(plain, sample_codes_fast(model, labels, compile="eager", generator=gen(3))))
sys.exit(0 if worst < 1e-3 else 1)
EOF
fi

VQ=("$PYTHON" -m vq.cli.main)
LIMIT_ARGS=()
[[ -n $LIMIT ]] && LIMIT_ARGS=(--limit "$LIMIT")
PER_CLASS=$(( EVAL_N / 10 > 0 ? EVAL_N / 10 : 1 ))

step tokenizer "${TOK_LIMIT:-$(( $(seconds_of "$TOK_BUDGET") + 60 ))}" "${VQ[@]}" fit-tokenizer --preset "$PRESET" --device "$DEVICE" \
    "${LIMIT_ARGS[@]}" --time-budget "$TOK_BUDGET" --out "$RUNS/tokenizer" --force
step prior "${PRIOR_LIMIT:-$(( $(seconds_of "$PRIOR_BUDGET") + 75 ))}" "${VQ[@]}" fit-prior --preset "$PRESET" --device "$DEVICE" \
    --tokenizer "$RUNS/tokenizer" --time-budget "$PRIOR_BUDGET" --out "$RUNS/prior" --force
step eval_g2 "$EVAL_LIMIT" "${VQ[@]}" eval --device "$DEVICE" --tokenizer "$RUNS/tokenizer" --prior "$RUNS/prior" \
    --classifier "$CLASSIFIER" --per-class "$PER_CLASS" --complete-images "$COMPLETE_N" --guidance 2 --out "$OUT/eval_g2.json"
rm -f "$OUT/sampling.json"
bench sampling_14x14 "$BENCH_METHODS" 14x14
bench sampling_7x7 "$BENCH_METHODS" 7x7
step eval_g1.5 "$EVAL_LIMIT" "${VQ[@]}" eval --device "$DEVICE" --tokenizer "$RUNS/tokenizer" --prior "$RUNS/prior" \
    --classifier "$CLASSIFIER" --per-class "$PER_CLASS" --complete-images 0 --guidance 1.5 --out "$OUT/eval_g1.5.json"
step samples "$SAMPLES_LIMIT" "${VQ[@]}" sample --device "$DEVICE" --tokenizer "$RUNS/tokenizer" --prior "$RUNS/prior" \
    -n 10 --seed 0 --out "$RUNS/samples" --force
[[ -f $RUNS/samples/grid.png ]] && cp "$RUNS/samples/grid.png" "$OUT/samples.png"
[[ -n $BENCH_LATE_METHODS ]] && bench sampling_late "$BENCH_LATE_METHODS" 14x14 7x7
step train_bench "$TRAIN_LIMIT" "$PYTHON" bench/train.py --preset "$PRESET" --device "$DEVICE" --procs 1 --skip-folder \
    --tok-steps "$TRAIN_STEPS" --prior-steps "$TRAIN_STEPS" --json "$OUT/train.json"

# --- headline figures, from the logs and JSON files (whatever the steps left)
printf '\nwall time %s s of %s\n\n' "$(( SECONDS - START ))" "$DEADLINE" >>"$SUMMARY"
timeout 30 "$PYTHON" -W ignore - "$OUT" "$RUNS" "$DEVICE" >>"$SUMMARY" 2>&1 <<'EOF'
import json, re, sys
from pathlib import Path

out, runs, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
sys.path.insert(0, "bench")
log = (out / "log.txt").read_text()


def section(name):
    m = re.search(rf"===== {re.escape(name)} \(.*?\n(.*?)(?=\n===== |\Z)", log, re.S)
    return m.group(1) if m else ""


def value(text, row):
    m = re.search(rf"{re.escape(row)}\s*│\s*([-\d.e+]+)", text)
    return float(m.group(1)) if m else None


def load(name):
    p = out / name
    return json.loads(p.read_text()) if p.exists() else None


tok_ips = value(section("tokenizer"), "images/s")
prior_tps = value(section("prior"), "tokens/s")
print(f"tokenizer training: {tok_ips} images/s")
line = f"prior training: {prior_tps} tokens/s"
try:
    from train import mfu
    from vq.pipeline.records import PriorRecord
    record = PriorRecord.read(runs / "prior")
    per_token = record.kind.flops_per_token(record.config)
    flops = prior_tps * per_token if prior_tps and per_token else None
    if flops:
        m = mfu(flops, device)
        line += f", {flops / 1e12:.2f} model TFLOP/s" + (f", MFU {m:.1%}" if m is not None else "")
except Exception as e:  # noqa: BLE001 - the summary reports what it can
    line += f" (no MFU: {type(e).__name__}: {e})"
print(line)
for name in ("eval_g2.json", "eval_g1.5.json"):
    r = load(name)
    if not r:
        print(f"{name}: missing")
        continue
    s, real = r.get("samples", {}), r.get("real_train", {})
    guidance = r["sampling"].get("guidance", r["sampling"].get("cfg"))  # reports before the API names: cfg
    print(f"{name}: guidance {guidance}, n {s.get('n')}: samples acc {s.get('acc')}, fd {s.get('fd')}, "
          f"{s.get('seconds', 0):.1f} s | real train acc {real.get('acc')}, fd {real.get('fd')} | "
          f"classifier test acc {r['classifier']['test_acc']}")
    if r.get("completion"):  # eval.json holds every field, null where it was not measured
        c = r["completion"]
        print(f"  completion of {c['n']} test images: acc with class {c.get('acc_with_class')}, "
              f"unconditional {c.get('acc_unconditional')}")
r = load("sampling.json")
for setting, rows in (r or {}).get("rows", {}).items():
    print(f"sampling {setting}, {r['device']}:")
    for name, row in rows.items():
        figure = f"{row['images_per_s']:,.0f} images/s" if "images_per_s" in row else row.get("error", "not timed")
        print(f"  {name}: {figure}")
t = load("train.json")
if t:
    for r in t.get("tokenizer", []):
        print(f"train bench: tokenizer {r['images_per_s']} images/s ({r['procs']} process)")
    for r in t.get("prior", []):
        print(f"train bench: prior {r['tokens_per_s']} tokens/s, MFU {r['mfu']} ({r['procs']} process)")
EOF
echo "done in $(( SECONDS - START )) s; figures in $OUT"
