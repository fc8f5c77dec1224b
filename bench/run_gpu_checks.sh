#!/usr/bin/env bash
# Every GPU check of the studio in one run, for a machine with a CUDA GPU (a lent test machine or an
# artist's PC): the gpu-marked tests, then the GPU benchmarks in fp16 under --vram-limit 6, the
# smallest card the studio is built for. Steps run most valuable first and share one deadline, so
# a slow machine still reports the first ones.
#   bench/run_gpu_checks.sh [OUT_DIR] [SECONDS] [GROUPS]   (defaults: bench/results/gpu, 540, "tests sd15 live anim latent foundation learns")
# GROUPS: tests (the gpu-marked tests, with a latent training run at 512 px whose steps/s and peak VRAM
# go to OUT_DIR/latent_512.json), sd15 (the SD 1.5 engine at 512x768 under --vram-limit 4 and
# unconstrained), live (Live-Action: SD 1.5-sized UNet + two ControlNets at 512x768, 30 steps, unconstrained and
# under --vram-limit 6 and 4), anim (Animation: 16 frames at 512x512, 20 steps, unconstrained and under
# --vram-limit 6; the Live-Action -> Animation swap), latent (the 512 px latent step vs the 64 px pixel step), foundation (the pool/pipeline benchmarks), learns (Origin's learns-benchmark at 64 px, one variant per step).
# Writes OUT_DIR/checks.log (everything, RATIO lines at the end) and one JSON per benchmark.
set -uo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

out="${1:-bench/results/gpu}"
deadline=$((SECONDS + ${2:-540}))
groups=" ${3:-tests sd15 live anim latent foundation learns} "
py="${PYTHON:-python3}"
log="$out/checks.log"
mkdir -p "$out"
: >"$log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 INKFRAME_GPU_FIGURES="$out"
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

if [[ $groups == *" tests "* ]]; then
    step pytest_gpu 240 "$py" -m pytest -m gpu -q -s -p no:cacheprovider tests/test_gpu_placement.py tests/test_gpu_origin.py tests/test_gpu_live_action.py tests/test_gpu_animation.py
fi
if [[ $groups == *" latent "* ]]; then
    step bench_origin_latent 150 "$py" bench/bench_origin_latent.py --device cuda --json "$out/bench_origin_latent.json"
fi
if [[ $groups == *" learns "* ]]; then
    # One variant per step, so each one's figures survive a deadline; the same data and seeds in each.
    for variant in ${LEARNS_VARIANTS:-origin plain mixture no_art_losses origin_v1}; do
        step "learns_$variant" 170 "$py" bench/bench_origin_learns.py --device cuda --resolution 64 --steps "${LEARNS_STEPS:-3000}" \
            --batch 32 --variants "$variant" --cfg 1.5,2.5,4 --json "$out/learns_$variant.json"
    done
fi
if [[ $groups == *" foundation "* ]]; then
    step bench_origin_step 120 "$py" bench/bench_origin_step.py --device cuda --resolution 256 --precision bf16 --json "$out/bench_origin_step.json"
    for bench in bench_engine_overhead bench_pool_swap bench_from_pipe; do
        step "$bench" 150 "$py" "bench/$bench.py" --device cuda --size sd15 --vram-limit 6 --precision fp16 --quick \
            --json "$out/$bench.json"
    done
fi
if [[ $groups == *" sd15 "* ]]; then
    # Text-to-Manga's SD 1.5 engine: an SD 1.5-sized random-weight checkpoint at 512x768, 20 steps, fp16,
    # on a 4 GB budget (offloaded) and unconstrained; seconds per picture and peak VRAM.
    step sd15_vram4 170 "$py" bench/bench_sd15_generate.py --device cuda --size sd15 --picture 512x768 \
        --vram-limit 4 --precision fp16 --repeats 2 --json "$out/bench_sd15_vram4.json"
    step sd15_unconstrained 170 "$py" bench/bench_sd15_generate.py --device cuda --size sd15 --picture 512x768 \
        --vram-limit 70 --precision fp16 --repeats 2 --json "$out/bench_sd15_unconstrained.json"
    step sd15_reference 150 "$py" bench/bench_sd15_reference.py --device cuda --size sd15 --vram-limit 6 \
        --precision fp16 --quick --json "$out/bench_sd15_reference.json"
fi
if [[ $groups == *" live "* ]]; then
    # Live-Action: an SD 1.5-sized random-weight checkpoint and two SD 1.5-sized ControlNets at 512x768, 30 steps
    # at strength 0.65, fp16: seconds per picture and peak VRAM unconstrained, on a 6 GB and on a 4 GB budget.
    for limit in 70 6 4; do
        step "live_action_vram$limit" 170 "$py" bench/bench_live_action.py --device cuda --size sd15 --picture 512x768 \
            --vram-limit "$limit" --precision fp16 --repeats 1 --json "$out/bench_live_action_vram$limit.json"
    done
    step live_action_swap 120 "$py" bench/bench_live_action_swap.py --device cuda --size sd15 --vram-limit 6 \
        --precision fp16 --quick --json "$out/bench_live_action_swap.json"
fi

if [[ $groups == *" anim "* ]]; then
    # Animation: an SD 1.5-sized checkpoint and a v1-5-3-sized motion adapter, 16 frames at 512x512, 20 steps, fp16:
    # seconds per video and peak VRAM unconstrained and on a 6 GB budget (sd-webui-animatediff documents 5.6 GB).
    for limit in 70 6; do
        step "animation_vram$limit" 200 "$py" bench/bench_animation.py --device cuda --size sd15 --picture 512x512 \
            --frames 16 --vram-limit "$limit" --precision fp16 --repeats 1 --json "$out/bench_animation_vram$limit.json"
    done
    step animation_swap 120 "$py" bench/bench_animation_swap.py --device cuda --size sd15 --vram-limit 6 \
        --precision fp16 --quick --json "$out/bench_animation_swap.json"
fi

echo "== summary" | tee -a "$log"
grep -hE "^(RATIO|GOAL|ratio:|check:|-- .*: all )|passed|failed" "$log" | tee -a "$log.summary" >/dev/null
cat "$log.summary"
rm -f "$log.summary"
exit "$status"
