#!/usr/bin/env bash
# One prepared check of maskpipe's GPU path; prints one table (docs/gpu.md).
#
#   bash bench/gpu_check.sh               # a GPU machine: under 8 minutes on one H200
#   bash bench/gpu_check.sh --cpu-smoke   # any machine: tiny sizes, no nvidia-smi, no pytest -m gpu
#                                         # (GPU_CHECK_SMOKE=1 does the same; tests/test_gpu_check.py)
#
# Measures: the GPU (nvidia-smi); `pytest -m gpu`; training images/s of fp32 against bf16 AMP +
# channels-last for three timm architectures at 224 px (ratio in the same run); a real-size
# pipeline (demo data at 2,700 persons + 12,600 eval images, as many as the competition's, crops
# 320x256, efficientnet_b0 at 256x224, 5 folds x 2 epochs) from crop to submission (every job
# `snakemake submission` runs, persons included), each step timed, with GPU busy % sampled
# while it trains, the crop step's images/s, and the projection to 15 epochs.
# Sizes can be changed through GPU_CHECK_* variables (below). Each part has a time limit, so the
# table is printed even when one part runs long (its row then says so; the pipeline part still
# prints what finished and a projection from the folds it trained).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
SMOKE=${GPU_CHECK_SMOKE:-0}
[[ "${1:-}" == "--cpu-smoke" ]] && SMOKE=1
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$WORK"
ROWS="$WORK/rows.tsv"
: > "$ROWS"
row() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$ROWS"; }
START=$SECONDS

if [[ $SMOKE == 1 ]]; then
  row "mode" "cpu smoke: tiny sizes, figures mean nothing" "$(date -u +%F)"
  SPEED=(--archs test_resnet --size 32 --batch 4 --steps 1)
  DEMO=(--persons 12 --eval-images 8)
  PIPE=(--crop-size 40 32 --arch test_resnet --image-size 32 32 --folds 2 --epochs 1 --full-epochs 2
        --batch 16 --num-workers 0)
  LIMIT_DEMO=120 LIMIT_SPEED=120 LIMIT_PIPE=240
else
  row "mode" "full" "$(date -u +%F)"
  row "GPU" "nvidia-smi" "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
  SPEED=(--archs "${GPU_CHECK_ARCHS:-resnet50,convnext_tiny,efficientnet_b0}" --size "${GPU_CHECK_SIZE:-224}"
         --batch "${GPU_CHECK_SPEED_BATCH:-128}" --steps "${GPU_CHECK_SPEED_STEPS:-20}")
  DEMO=(--persons "${GPU_CHECK_PERSONS:-2700}" --eval-images "${GPU_CHECK_EVAL:-12600}")
  PIPE=(--crop-size ${GPU_CHECK_CROP:-320 256} --arch "${GPU_CHECK_ARCH:-efficientnet_b0}"
        --image-size ${GPU_CHECK_IMAGE:-256 224} --folds "${GPU_CHECK_FOLDS:-5}"
        --epochs "${GPU_CHECK_EPOCHS:-2}" --full-epochs "${GPU_CHECK_FULL_EPOCHS:-15}"
        --batch "${GPU_CHECK_BATCH:-64}")
  # 180 + 60 + 220 s, plus start-up: under 8 minutes. The demo data is written meanwhile.
  LIMIT_DEMO=${GPU_CHECK_LIMIT_DEMO:-230} LIMIT_PYTEST=${GPU_CHECK_LIMIT_PYTEST:-180}
  LIMIT_SPEED=${GPU_CHECK_LIMIT_SPEED:-60} LIMIT_PIPE=${GPU_CHECK_LIMIT_PIPE:-220}
fi
export HF_HUB_OFFLINE=1  # nothing here downloads: every model is built with pretrained: false

# part NAME LIMIT COMMAND...: run with a time limit; a failure or timeout becomes a row.
part() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS rc=0
  timeout "$limit" "$@" > "$WORK/$name.log" 2>&1 || rc=$?
  if [[ $rc == 124 ]]; then row "$name" "stopped at its limit" "${limit}s (log: $WORK/$name.log)"
  elif [[ $rc != 0 ]]; then row "$name" "FAILED (exit $rc)" "$(tail -1 "$WORK/$name.log") (log: $WORK/$name.log)"
  fi
  row "time" "$name" "$((SECONDS - t0))s"
}

# The demo data (CPU work) is written while the GPU parts run; the pipeline waits for it.
part demo-data "$LIMIT_DEMO" "$PY" -m maskpipe demo-data --out "$WORK/data" --seed 0 "${DEMO[@]}" &
DEMO_PID=$!

if [[ $SMOKE == 1 ]]; then
  row "pytest -m gpu" "tests/test_gpu.py" "not run (cpu smoke)"
else
  part pytest "$LIMIT_PYTEST" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
  row "pytest -m gpu" "tests/test_gpu.py" "$(grep -E '(passed|failed|skipped|error)' "$WORK/pytest.log" | tail -1)"
fi
part speed "$LIMIT_SPEED" "$PY" bench/gpu_check.py speed --rows "$ROWS" "${SPEED[@]}"
wait "$DEMO_PID"
# The pipeline keeps its own deadline, 10 s before the shell's, to report what finished.
part pipeline "$LIMIT_PIPE" "$PY" bench/gpu_check.py pipeline --rows "$ROWS" --work "$WORK/pipeline" \
  --data "$WORK/data" --limit $((LIMIT_PIPE - 10)) "${PIPE[@]}"
row "time" "whole check" "$((SECONDS - START))s"

"$PY" bench/gpu_check.py table --rows "$ROWS"
