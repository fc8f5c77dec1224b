#!/usr/bin/env bash
# Every GPU check of the studio in one run, for a machine with a CUDA GPU (a lent test machine or an
# artist's PC): the gpu-marked tests, then the GPU benchmarks in fp16 under --vram-limit 6, the
# smallest card the studio is built for. Steps run most valuable first and share one deadline, so
# a slow machine still reports the first ones.
#   bench/run_gpu_checks.sh [OUT_DIR] [SECONDS]     (defaults: bench/results/gpu, 540)
# Writes OUT_DIR/checks.log (everything, RATIO lines at the end) and one JSON per benchmark.
set -uo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

out="${1:-bench/results/gpu}"
deadline=$((SECONDS + ${2:-540}))
py="${PYTHON:-python3}"
log="$out/checks.log"
mkdir -p "$out"
: >"$log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
status=0

step() {  # step NAME MAX_SECONDS COMMAND...: run with the smaller of MAX_SECONDS and the time left
    local name=$1 limit=$2 left=$((deadline - SECONDS - 5)) rc
    shift 2
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 20 ]; then
        echo "== $name: skipped, no time left" | tee -a "$log"
        return
    fi
    echo "== $name (up to ${limit} s): $*" | tee -a "$log"
    timeout "$limit" "$@" >>"$log" 2>&1
    rc=$?
    echo "== $name: exit $rc after ${SECONDS} s" | tee -a "$log"
    [ "$rc" -eq 0 ] || status=1
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c 'import torch, diffusers, transformers; print("torch", torch.__version__, "diffusers", diffusers.__version__, "transformers", transformers.__version__)'
} 2>&1 | tee -a "$log"

step pytest_gpu 200 "$py" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu_placement.py tests/test_gpu_origin.py
step bench_origin_step 120 "$py" bench/bench_origin_step.py --device cuda --resolution 256 --precision bf16 --json "$out/bench_origin_step.json"
for bench in bench_engine_overhead bench_pool_swap bench_from_pipe; do
    step "$bench" 150 "$py" "bench/$bench.py" --device cuda --size sd15 --vram-limit 6 --precision fp16 --quick \
        --json "$out/$bench.json"
done

echo "== summary" | tee -a "$log"
grep -hE "^(RATIO|ratio:|check:)|passed|failed" "$log" | tee -a "$log.summary" >/dev/null
cat "$log.summary"
rm -f "$log.summary"
exit "$status"
