#!/usr/bin/env bash
# Regenerate the embedded default model (gptoss_edge/models/default) from scratch, on CPU.
#   bash recipes/tiny_model/build.sh [WORK_DIR]        (run from the repository root)
# Stages: data -> tokenizer -> train (fp32) -> gptoss-edge quantize (MXFP4) -> package -> evaluate.
# PYTHON and GPTOSS_EDGE override the interpreter and the CLI (default: .venv/bin/...);
# DATA_ARGS and TRAIN_ARGS add options to data.py and train.py (e.g. --keep-partials for a
# learning curve).
set -euo pipefail
WORK=${1:-/tmp/tiny_model_build}
RECIPE=recipes/tiny_model
PY=${PYTHON:-.venv/bin/python}
CLI=${GPTOSS_EDGE:-.venv/bin/gptoss-edge}
MODEL=gptoss_edge/models/default
TESTDATA=tests/data
mkdir -p "$WORK"
set -x
"$PY" $RECIPE/data.py "$WORK/data" ${DATA_ARGS:-}
"$PY" $RECIPE/tokenizer.py "$WORK/data" "$WORK/tokenizer"
"$PY" $RECIPE/train.py "$WORK/data" "$WORK/tokenizer" "$WORK/fp32" ${TRAIN_ARGS:-} 2>&1 | tee "$WORK/train.log"
cp "$WORK/tokenizer/"* "$WORK/fp32/"
"$CLI" quantize "$WORK/fp32" "$WORK/mxfp4"
"$PY" $RECIPE/package.py "$WORK" $MODEL $TESTDATA
"$PY" $RECIPE/evaluate.py "$WORK/fp32" "$WORK/data" --prompts 0 --json "$WORK/eval_fp32.json"
"$PY" $RECIPE/evaluate.py $MODEL "$WORK/data" --mxfp4 --json "$WORK/eval_mxfp4.json"
"$PY" $RECIPE/package.py --figures "$WORK" $MODEL $TESTDATA
