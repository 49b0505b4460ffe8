#!/usr/bin/env bash
# NFTTrainer vs GRPOTrainer on one GPU at Qwen2.5-0.5B size (random init, bf16): step time, tokens/s, peak memory.
# Appends a section headed by the card's name to benchmarks/results/gpu_speed.md. For a GPU machine, never CI;
# about 5 minutes on an H100 with the defaults (6 fresh processes: 3 NFT/GRPO pairs, 24 steps each).
#
#   bash benchmarks/gpu_speed.sh                                  # the measurement
#   DEVICE=cpu MODEL_SIZE=micro STEPS=2 PAIRS=1 bash benchmarks/gpu_speed.sh   # check the wiring on a CPU
#
# Extra arguments go to benchmarks/speed.py (e.g. --gradient-checkpointing). PYTHON picks the interpreter (default:
# the `python` on PATH, i.e. the active virtual environment); the tests pass their own.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

DEVICE=${DEVICE:-cuda}
MODEL_SIZE=${MODEL_SIZE:-0.5b}
PAIRS=${PAIRS:-3}
STEPS=${STEPS:-20}            # measured optimizer steps per run, after WARMUP
WARMUP=${WARMUP:-4}
BATCH=${BATCH:-32}            # completions per optimizer step (4 prompts x 8 generations)
COMPLETION=${COMPLETION:-128} # a random-init model rarely stops early: every completion has this many tokens
RESULTS=${RESULTS:-benchmarks/results/gpu_speed.md}

if [ "$DEVICE" = cuda ]; then
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible')"
fi

"$PYTHON" benchmarks/speed.py \
    --device "$DEVICE" --model-size "$MODEL_SIZE" \
    --pairs "$PAIRS" --steps "$STEPS" --warmup "$WARMUP" \
    --batch-size "$BATCH" --num-generations 8 --max-completion-length "$COMPLETION" --steps-per-generation 4 \
    --loss-rows 64 --loss-tokens 4096 \
    --output-dir "$(dirname "$RESULTS")" --results-name gpu_speed_latest --append-to "$RESULTS" "$@"
