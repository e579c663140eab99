#!/usr/bin/env bash
# The one-call GPU check: everything a session lent a GPU machine should learn, in one command under a hard budget.
#   1. smoke    every CUDA path at tiny sizes (train single and packed, fp32 and bf16, --compile, SIGTERM then
#               --resume, ablate --jobs 2, predict, export to ONNX checked with ONNX Runtime, report) -> smoke.json
#   2. bench    reglab bench: img/s at batch 16/128/512 in bf16, the cohort curve K = 1,2,5,10,20 at batch 16, a
#               torch.profiler table of one step -> bench.json, profile.txt
#   3. compare  the notebook's experiment at 160 px, seed recipe, cohorts on, sized to the time left by the rule
#               in bench/gpu_check.py (plan_compare) -> compare.json, report.md
# Each stage runs under its own `timeout`, writes its files into $OUT as soon as it ends, and a failing stage does
# not stop the next; a stage that cannot fit the time left is recorded as skipped, not run. summary.json holds
# the machine (nvidia-smi, torch and CUDA versions) and every stage's status; gpu_check.log everything printed.
#
# On a GPU machine (the data copied into the ignored .data/ first, and carried):
#   cp -r ../shared/data/imagenette2-sq160 ../shared/data/imagenette2-mini .data/
#   OUT=/some/folder bench/gpu_check.sh                 (default budget 560 s: fits one 10-minute call)
# On a CPU, the whole script at tiny sizes (what tests/test_gpu_check.py runs):
#   bench/gpu_check.sh --cpu-smoke --data ../shared/data/imagenette2-mini
# Options: --budget SECONDS, --data DIR (stages 2-3; default .data/imagenette2-sq160), --smoke-data DIR (stage 1;
# default .data/imagenette2-mini, else --data), --cpu-smoke.
set -euo pipefail

budget="" data="" smoke_data="" mode=gpu
while [ $# -gt 0 ]; do
    case "$1" in
        --budget) budget=$2; shift 2 ;;
        --data) data=$2; shift 2 ;;
        --smoke-data) smoke_data=$2; shift 2 ;;
        --cpu-smoke) mode=cpu-smoke; shift ;;
        *) echo "gpu_check.sh: unknown option $1 (see the comments at the top of the script)" >&2; exit 2 ;;
    esac
done

if [ "$mode" = cpu-smoke ]; then
    # the same stages on the mini set at 32 px, 1-2 epochs, tiny lists: what the test runs
    budget=${budget:-600} data=${data:-.data/imagenette2-mini} device=cpu size=32 smoke_size=32
    smoke_share=50 bench_share=25 precisions=fp32  # bf16 is emulated, and slow, on most CPUs
    bench_flags=(--batch-sizes 8,16 --cohorts 1,2 --steps 2 --naive-batches 2 --precisions fp32)
    compare_flags=(--min-epochs 1 --max-epochs 2 --seeds 2 --overhead 60)
else
    budget=${budget:-560} data=${data:-.data/imagenette2-sq160} device=cuda size=160 smoke_size=32
    smoke_share=22 bench_share=25 precisions=fp32,bf16  # of 560 s: 123 s and 140 s, compare the rest
    bench_flags=(--batch-sizes 16,128,512 --cohorts 1,2,5,10,20 --steps 20 --naive-batches 20 --precisions bf16)
    # overhead: compare's own decode, start-up, each run's last evaluation and files, the report
    compare_flags=(--min-epochs 10 --max-epochs 50 --seeds 5 --overhead 60)
fi
if [ -z "$smoke_data" ]; then
    smoke_data=$data
    if [ -d .data/imagenette2-mini ] && [ "$mode" = gpu ]; then smoke_data=.data/imagenette2-mini; fi
fi
budget=${budget%.*}
# check first, touch last: a bad budget or a missing data folder stops the call before anything is written
if ! [[ $budget =~ ^[0-9]+$ ]]; then
    echo "gpu_check.sh: --budget takes a number of seconds, not '$budget'" >&2
    exit 2
fi
for folder in "$data" "$smoke_data"; do
    if [ ! -d "$folder/train" ]; then
        echo "gpu_check.sh: no data in $folder (train/ and val/ expected): copy it into .data/ or give --data" >&2
        exit 2
    fi
done

here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-gpu-check-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/reglab-gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 REGLAB_DATA=${REGLAB_DATA:-$work/cache}
log=$out/gpu_check.log
driver=("${PYTHON:-python}" "$here/gpu_check.py")

start=$(date +%s)
deadline=$((start + budget))
smoke_cap=$((budget * smoke_share / 100)) bench_cap=$((budget * bench_share / 100))

say() { echo "gpu_check: $*" | tee -a "$log"; }

# stage NAME CAP MIN -- COMMAND...: run COMMAND under `timeout` for min(CAP, time left), or record it skipped
stage() {
    local name=$1 cap=$2 min=$3; shift 4
    local left=$((deadline - $(date +%s)))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt "$min" ]; then
        say "$name skipped: ${left}s left, it needs at least ${min}s"
        "${driver[@]}" record --out "$out" --stage "$name" --status skipped --limit "$limit" \
            --reason "${left}s of the budget left, the stage needs at least ${min}s"
        return 0
    fi
    say "$name: up to ${limit}s"
    local t0 rc=0 status
    t0=$(date +%s)
    timeout --kill-after=5 "$limit" "$@" --until $((t0 + limit - 3)) >>"$log" 2>&1 || rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status=timeout ;;
        3) status=skipped ;;  # compare: by its rule nothing fits (compare.json says why)
        *) status=failed ;;
    esac
    say "$name: $status (exit $rc, $(($(date +%s) - t0))s)"
    "${driver[@]}" record --out "$out" --stage "$name" --status "$status" --rc "$rc" \
        --seconds $(($(date +%s) - t0)) --limit "$limit" || true
}

: >"$log"
say "mode $mode, budget ${budget}s, data $data, smoke data $smoke_data, results in $out"
timeout 60 "${driver[@]}" env --out "$out" --mode "$mode" --budget "$budget" >>"$log" 2>&1 || say "env: failed"
stage smoke "$smoke_cap" 20 -- "${driver[@]}" smoke --out "$out" --work "$work" --data "$smoke_data" \
    --size "$smoke_size" --device "$device" --epochs 1 --precisions "$precisions"
stage bench "$bench_cap" 20 -- "${driver[@]}" bench --out "$out" --data "$data" --size "$size" --device "$device" \
    "${bench_flags[@]}"
stage compare "$((deadline - $(date +%s)))" 15 -- "${driver[@]}" compare --out "$out" --work "$work" \
    --data "$data" --size "$size" --device "$device" "${compare_flags[@]}"
say "done in $(($(date +%s) - start))s of ${budget}s"
