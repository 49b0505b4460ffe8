#!/usr/bin/env bash
# The GPU checks in one go, for an offline machine with one GPU (torch, Triton, transformers, accelerate and peft
# installed): install what it lacks from benchmarks/gpu_wheels/, run the GPU tests (`pytest -m gpu tests/gpu`), then
# compare NFTTrainer with GRPOTrainer at Qwen2.5-0.5B size (random init, real Qwen2.5 vocabulary, bf16) at 1,024 and
# 4,096 completion tokens: step-time ratio from alternating steps in one process, peak-memory ratio from fresh
# processes, tokens/s; plus the loss-only micro-benchmark. Everything lands in one folder: $OUT if set, else
# outputs/gpu_checks/<date>; its summary.md gathers the figures and each part's status and duration.
#
#   python benchmarks/gpu_wheels.py download      # beforehand, where pip reaches PyPI (about 24 MiB)
#   bash benchmarks/gpu_checks.sh                  # on the GPU machine: estimated 7 minutes at most
#   REHEARSAL=1 bash benchmarks/gpu_checks.sh      # the same parts on a CPU, at a tiny size
#
# Time guard: the parts share BUDGET_S seconds (default 480). A part starts only if its estimate fits in what is
# left, and is stopped at twice its estimate or when the budget runs out; a part that does not fit is skipped with a
# note. PARTS picks parts (default: install tests loss speed_1k speed_4k). PYTHON picks the interpreter (default:
# python3). PACK=1 leaves two files in the output folder, summary.md and gpu_checks.tar.gz with everything else (to
# copy back from a remote machine that returns few files).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-python3}
REHEARSAL=${REHEARSAL:-0}
PARTS=${PARTS:-install tests loss speed_1k speed_4k}
PACK=${PACK:-0}
OUT=${OUT:-outputs/gpu_checks/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SITE=${SITE:-/tmp/trl_nft_gpu_site}  # where missing packages are installed; first on PYTHONPATH
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false DS_BUILD_OPS=0

if [ "$REHEARSAL" = 1 ]; then
    BUDGET_S=${BUDGET_S:-2400}  # a CPU shared with other work is slow; the GPU run keeps 480
    export TRL_NFT_GPU_TESTS_ON_CPU=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    # tiny stand-ins for the two lengths and the 0.5B model; same vocabulary, same code paths
    SPEED=(--device cpu --model-size qwen-micro --checkpointing-modes off --pairs 1 --warmup 1 --steps 2
           --num-generations 2 --steps-per-generation 2 --synthetic-rollouts)
    SHORT=(--lengths 32 --batch-size 4) LONG=(--lengths 128 --batch-size 2)
    LOSS=(--device cpu --loss-rows 8 --loss-tokens 256 --loss-repeats 3)
    ESTIMATES=(install=30 tests=900 loss=20 speed_1k=600 speed_4k=600)
else
    BUDGET_S=${BUDGET_S:-480}
    SPEED=(--device cuda --model-size 0.5b --checkpointing-modes off --pairs 1 --warmup 2 --steps 8
           --num-generations 4 --steps-per-generation 2 --synthetic-rollouts)
    # the same 16K completion tokens per optimizer step at both lengths
    SHORT=(--lengths 1024 --batch-size 16) LONG=(--lengths 4096 --batch-size 4)
    LOSS=(--device cuda --loss-rows 64 --loss-tokens 4096 --loss-repeats 30)
    ESTIMATES=(install=60 tests=150 loss=20 speed_1k=90 speed_4k=100)
fi

START=$(date +%s)
echo -e "part\tstatus\tseconds\tnote" > "$OUT/parts.tsv"

estimate() {  # estimate NAME: the part's expected seconds
    local entry
    for entry in "${ESTIMATES[@]}"; do [ "${entry%%=*}" = "$1" ] && echo "${entry#*=}" && return; done
    echo 60
}

part() {  # part NAME COMMAND...: run within the budget, log to $OUT/NAME.log, record status and duration
    local name=$1; shift
    case " $PARTS " in *" $name "*) ;; *) return 0 ;; esac
    local left=$((BUDGET_S - ($(date +%s) - START))) needs
    needs=$(estimate "$name")
    if [ "$left" -lt "$needs" ]; then
        echo -e "$name\tskipped\t0\twould overrun: needs about ${needs} s, ${left} s of the budget left" \
            >> "$OUT/parts.tsv"
        echo "== $name: skipped (needs about ${needs} s, ${left} s left)"
        return 0
    fi
    local limit=$((2 * needs < left ? 2 * needs : left))  # a part that hangs leaves time for the others
    echo "== $name (at most ${limit} s)"
    local began=$(date +%s) status note=""
    timeout --signal=TERM --kill-after=10 "$limit" "$@" > >(tee "$OUT/$name.log") 2>&1
    local rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status=stopped; note="stopped after ${limit} s (twice its estimate, or what was left)" ;;
        *) status=failed; note="exit status $rc, see $name.log" ;;
    esac
    echo -e "$name\t$status\t$(($(date +%s) - began))\t$note" >> "$OUT/parts.tsv"
}

{
    echo "rehearsal: $REHEARSAL; budget: ${BUDGET_S} s; parts: $PARTS"
    uname -a
    "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA',
torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
    command -v nvidia-smi > /dev/null && nvidia-smi -L
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"
if [ "$REHEARSAL" != 1 ] && ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA device visible: run REHEARSAL=1 bash benchmarks/gpu_checks.sh for the CPU rehearsal" >&2
    exit 1
fi

part install "$PYTHON" benchmarks/gpu_wheels.py install --target "$SITE"
PACKAGES="torch|triton|transformers|trl|accelerate|peft|datasets|deepspeed|bitsandbytes|qwen"
"$PYTHON" -m pip list 2>/dev/null | grep -i -E "^($PACKAGES)[ _-]" >> "$OUT/environment.txt"
part tests "$PYTHON" -m pytest -m gpu tests/gpu -p no:cacheprovider -q -rs -s --junitxml="$OUT/gpu_tests.xml"
part loss "$PYTHON" benchmarks/speed.py --skip-trainers "${LOSS[@]}" --output-dir "$OUT" --results-name loss
part speed_1k "$PYTHON" benchmarks/speed.py "${SPEED[@]}" "${SHORT[@]}" --vocab qwen2.5 --output-dir "$OUT" \
    --results-name speed_1k
part speed_4k "$PYTHON" benchmarks/speed.py "${SPEED[@]}" "${LONG[@]}" --vocab qwen2.5 --output-dir "$OUT" \
    --results-name speed_4k
"$PYTHON" benchmarks/gpu_report.py "$OUT" --total-seconds $(($(date +%s) - START)) | tee "$OUT/summary.md"
if [ "$PACK" = 1 ]; then  # two files instead of many: summary.md and an archive of everything else
    archive=$(mktemp -u /tmp/gpu_checks.XXXXXX.tar.gz)
    (cd "$OUT" && find . -type f ! -name summary.md | tar czf "$archive" -T - \
        && find . -type f ! -name summary.md -delete && find . -mindepth 1 -type d -empty -delete) \
        && mv "$archive" "$OUT/gpu_checks.tar.gz"
fi
