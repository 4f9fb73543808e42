#!/usr/bin/env bash
# 1 GPU against every GPU of this machine with DDP (benchmarks/ddp_throughput.py), for gpu_suite.sh.
# Usage: bash benchmarks/ddp_gpu.sh [RESULTS_DIR] [cuda|cpu]   (cpu: the suite's dry run)
set -u
DEVICE="${2:-cuda}"
PYTHON="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
if [ "$DEVICE" = cuda ]; then
    gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
    procs="1"
    [ "$gpus" -gt 1 ] && procs="1 $gpus"
    [ "$gpus" -le 1 ] && echo "this machine has $gpus GPU: 1 against N GPUs needs several; measuring 1 GPU (DDP) against plain"
    exec "$PYTHON" benchmarks/ddp_throughput.py --device cuda --procs $procs --batch-size 4096 --epochs 5 --rounds 2
fi
exec "$PYTHON" benchmarks/ddp_throughput.py --device cpu --procs 2 --epochs 1 --rounds 1
