#!/usr/bin/env bash
# The GPU benchmark in one command (benchmarks/gpu_bench.py says what it runs and writes):
#   benchmarks/gpu.sh --cifar DIR [--mnist DIR] [--out FILE] [--rounds 1] [--dry-run]
# DIR holds cifar-10-batches-py (torchvision's layout); no network is used. --dry-run checks
# everything but the device, on any machine.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" benchmarks/gpu_bench.py "$@"
