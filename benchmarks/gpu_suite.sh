#!/usr/bin/env bash
# Every GPU measurement of the project in one call, finishing in <= 10 minutes:
#
#   1. the CUDA tests                      pytest -m cuda
#   2. epoch times, 60,000 samples         benchmarks/compile_epoch.py (eager / compiled /
#                                          reduce-overhead, float32 / bfloat16, batch 4096 and 512)
#   3. training throughput                 benchmarks/train_throughput.py --device cuda
#   4. the layer against F.linear          benchmarks/linear_vs_torch.py --device cuda
#   5. 1 vs N GPUs (DDP)                   benchmarks/ddp_gpu.sh RESULTS_DIR, when it exists
#   6. the Triton layer                    benchmarks/triton_bench.py (autotuned kernels against
#                                          cuBLAS and torch.compile; its dry run uses Triton's
#                                          CPU interpreter)
#
# Usage:   bash benchmarks/gpu_suite.sh [RESULTS_DIR] [--dry-run]
# RESULTS_DIR defaults to $OUT, else ./gpu_results. Each step writes its table to
# RESULTS_DIR/NN_name.txt; RESULTS_DIR/summary.md lists every step, its exit status and time.
# Each step has its own time limit, and none may start past the total budget, so a slow step
# costs its own table, never the others'. --dry-run runs the same steps on the CPU in their quick
# modes (to test this script on a machine without a GPU). PYTHON picks the interpreter.
set -u

DRY_RUN=0
RESULTS=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) RESULTS="$arg" ;;
    esac
done
RESULTS="${RESULTS:-${OUT:-./gpu_results}}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
BUDGET=550  # seconds for all steps; start-up and the summary fit in the rest of the 10 minutes
mkdir -p "$RESULTS"
SUMMARY="$RESULTS/summary.md"

cuda=$("$PYTHON" -c "import torch; print(torch.cuda.is_available())" 2>/dev/null)
if [ "$cuda" != "True" ] && [ "$DRY_RUN" = 0 ]; then
    message="no CUDA device is available here (torch.cuda.is_available() is ${cuda:-not importable}): nothing measured. Run on a GPU machine, or with --dry-run to test this script on the CPU."
    echo "$message" | tee "$SUMMARY" >&2
    exit 3
fi
if [ "$DRY_RUN" = 1 ]; then DEVICE=cpu; MODE="dry run on the CPU (quick modes)"; else DEVICE=cuda; MODE="CUDA"; fi
gpu=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')")
{
    echo "# gpu_suite.sh: $MODE"
    echo
    echo "torch $("$PYTHON" -c 'import torch; print(torch.__version__)'), GPU: $gpu, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "| step | exit status | seconds | table |"
    echo "|---|--:|--:|---|"
} > "$SUMMARY"

# step NAME LIMIT COMMAND...: run COMMAND with at most LIMIT seconds (less if the budget is short)
step() {
    local name="$1" limit="$2"; shift 2
    local left=$((BUDGET - SECONDS))
    local file="$RESULTS/$name.txt"
    if [ "$left" -lt 20 ]; then
        echo "| $name | skipped: budget spent | 0 | |" >> "$SUMMARY"
        return
    fi
    [ "$limit" -gt "$left" ] && limit="$left"
    echo "== $name (at most ${limit}s): $*"
    local start=$SECONDS
    (cd "$REPO" && timeout --kill-after=10 "$limit" "$@") > "$file" 2>&1
    local status=$?
    [ "$status" = 124 ] && status="124 (stopped at ${limit}s)"
    echo "| $name | $status | $((SECONDS - start)) | $(basename "$file") |" >> "$SUMMARY"
    tail -n 25 "$file"
}

if [ "$DRY_RUN" = 1 ]; then
    step 01_cuda_tests 90 "$PYTHON" -m pytest -p no:cacheprovider -q -m cuda tests
    step 02_compile_epoch 150 "$PYTHON" benchmarks/compile_epoch.py --device cpu --quick --precisions float32
    step 03_train_throughput 90 "$PYTHON" benchmarks/train_throughput.py --device cpu --dataset mnist-5k --quick --batches 512
    step 04_linear_vs_torch 90 "$PYTHON" benchmarks/linear_vs_torch.py --device cpu --quick
else
    step 01_cuda_tests 90 "$PYTHON" -m pytest -p no:cacheprovider -q -m cuda tests
    step 02_compile_epoch 220 "$PYTHON" benchmarks/compile_epoch.py --device cuda --batches 4096 512 --epochs 5
    step 03_train_throughput 50 "$PYTHON" benchmarks/train_throughput.py --device cuda --dataset mnist-5k --rounds 5 --min-seconds 0.2
    step 04_linear_vs_torch 50 "$PYTHON" benchmarks/linear_vs_torch.py --device cuda --rounds 10
fi

# 1 GPU vs N GPUs with DDP: benchmarks/ddp_gpu.sh takes the results folder as its argument; it runs
# here, inside the same total budget.
if [ -f "$REPO/benchmarks/ddp_gpu.sh" ]; then
    step 05_ddp 60 bash benchmarks/ddp_gpu.sh "$RESULTS" "$DEVICE"
else
    echo "| 05_ddp | not run: benchmarks/ddp_gpu.sh does not exist yet | 0 | |" >> "$SUMMARY"
fi

# The Triton layer: last, so that its autotuning never costs another step its time.
if [ "$DRY_RUN" = 1 ]; then
    step 06_triton 150 "$PYTHON" benchmarks/triton_bench.py --dry-run
else
    step 06_triton 80 "$PYTHON" benchmarks/triton_bench.py --rounds 5
fi

echo >> "$SUMMARY"
echo "total: ${SECONDS}s of the ${BUDGET}s budget" >> "$SUMMARY"
echo
cat "$SUMMARY"
