#!/usr/bin/env bash
# The device checks of the training harness (issue 16), as one script for a GPU machine.
# Not run where it was written (no GPU was lent): the CPU figures are bench/results/train_events.json.
#
#   bash bench/gpu_train.sh            # ~10 minutes on one H200
#
# 1. the fused sparse convolution against the per-tap path, and (when spconv-cu126 is installed:
#    pip install spconv-cu126 cumm-cu126) the spconv bridge against both, on CUDA, fp32 and bf16;
# 2. BEV-MAE base at 90 k and 200 k points, batch 2 and 8: samples/s, GPU busy share, peak memory
#    (fused vs per-tap, and spconv when importable) -> bench/results/train_bev_gpu.json
#    (target: >= 60 samples/s at 90 k points, batch 8; GPU busy >= 80 % of the step);
# 3. the three models through the real loop (tiny and base, bf16, MFU) -> bench/results/train.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -m pytest -q -p no:cacheprovider tests/test_sparse_conv.py -k "fused or spconv"
backends="torch-fused torch-loop"
python -c "import spconv.pytorch" 2>/dev/null && backends="$backends spconv"
# shellcheck disable=SC2086
python bench/bench_train.py --device cuda --bev-gpu --backends $backends
python bench/bench_train.py --device cuda --num-workers 8 --steps 20
