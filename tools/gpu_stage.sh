#!/bin/bash
# One GPU training stage of the default weights, then the GPU speed benchmark (issue #14): what a short lease of
# one GPU (an H100 with 16 cores) is spent on, as one command. Prints the training log and the speeds; writes
# OUT_DIR/stage.safetensors (the weight average) and stage.last.safetensors.
#
#   TEXTURES=../shared/data/fei_sem2surface INIT=default LR=1e-4 MINUTES=6.3 OUT_DIR=runs/gpu bash tools/gpu_stage.sh
#
# TEXTURES: folder with the three in-focus FEI images the semi-real frames are made from (P33_*.tif);
# INIT: weights to start from ('default' or a .safetensors file); LR, MINUTES: the stage's peak learning rate and
# time budget (the cosine decay runs over it); ECHO: optimiser steps per fresh batch (3: the simulator on 15 cores
# fills a third of an H100). Where the package is not installed (a bare GPU machine), run it with PYTHONPATH=src.
# docs/training.md "One GPU" has the stages that made the bundled weights.
set -u
export PYTHONUNBUFFERED=1
T=${TEXTURES:-../shared/data/fei_sem2surface}
OUT_DIR=${OUT_DIR:-runs/gpu}
mkdir -p "$OUT_DIR"
python3 -m napari_sem_focus train --recipe gpu --epochs 1 --simulate 900000 --blank 60000 \
  --real-textures "$T/P33_scale1_detectorA.tif" "$T/P33_scale2s3_detectorA.tif" "$T/P33_scale2s3_detectorC.tif" \
  --real-frames 500000 --init "${INIT:-default}" --lr "${LR:-1e-4}" --warmup-steps "${WARMUP:-100}" --ema 0.999 \
  --echo "${ECHO:-3}" --max-minutes "${MINUTES:-6}" \
  --checkpoint "$OUT_DIR/stage.pt" --out "$OUT_DIR/stage.safetensors" || exit
python3 benchmarks/bench_gpu.py --seconds 1.5 --weights "$OUT_DIR/stage.safetensors"
