#!/usr/bin/env bash
# One whole GPU measurement, for a session lent a GPU machine (see DEVELOPERS.md): the bench (decode, cache,
# throughput at batch 16 and 512, the whole experiment, the naive baseline) and a 5-seed compare of the plain
# and fast paths. Needs the data copied into an ignored folder first:
#   cp -r ../shared/data/imagenette2-sq160 .data/imagenette2-sq160   (then carry .data/imagenette2-sq160)
# Results go to $OUT (or ./bench-out): bench.json, the compare reports, logs.
set -euo pipefail
out=${OUT:-bench-out}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 REGLAB_DATA=/tmp/reglab-data
data=.data/imagenette2-sq160
python -m reglab.cli bench --data "$data" --device cuda --json "$out/bench.json" 2>&1 | tee "$out/bench.log"
python -m reglab.cli compare --data "$data" --device cuda --seeds 5 --jobs 4 --out "$out/compare-seed" --quiet \
    2>&1 | tee "$out/compare-seed.log"
python -m reglab.cli compare --data "$data" --device cuda --seeds 5 --jobs 4 --recipe fast --out "$out/compare-fast" \
    --quiet 2>&1 | tee "$out/compare-fast.log"
