#!/usr/bin/env bash
# One box-verifier ablation row (issue 19): synthetic frames from a synth config -> a box
# verifier trained at a fixed small budget (8 epochs of 1500 frames, the shipped detector's
# candidates as hard negatives) -> the shipped detector + this verifier scored on the real LM-O
# dev images (benchmarks/eval_detector_bop.py). Usage: tools/ablate_verifier.sh VARIANT
# (benchmarks/synth_ablation/VARIANT.yaml). The frames are tools/ablate_synthesis.sh's
# (data/ablation/VARIANT[_sN], reused when they exist); ABL_SEED=N as there. Resumable.
source "$(dirname "$0")/train_env.sh"  # cd to the repo; PY, CLI, DDP, resume, PRECISION
source tools/ablation_env.sh  # OBJECTS, ablation_frames
SEED=${ABL_SEED:-1}; CFG=benchmarks/synth_ablation/$1.yaml
FRAMES=1500; EPOCHS=${ABL_EPOCHS:-8}
V=$1; [ "$SEED" = 1 ] || V=${V}_s$SEED
R=runs/ablation_verifier/$V; [ "$EPOCHS" = 8 ] || R=${R}_e$EPOCHS
OUT=out/ablation_verifier/$(basename "$R"); mkdir -p "$OUT"
start=$(date +%s)
ablation_frames "data/ablation/$V" "$CFG" "$SEED" "$FRAMES"
$CLI train verify --data "data/ablation/$V/a" "data/ablation/$V/b" --val-fraction 0.05 \
  --objects $OBJECTS --input-size 64x64 --epochs "$EPOCHS" --batch-size 16 --lr 2e-3 \
  --threads 2 --precision "$PRECISION" --hard-negatives models/detector_lmo.onnx --out "$R" \
  --no-progress $(resume "$R") 2>&1 | tail -2
$CLI export "$R/last.pt" --out "$OUT/verifier.onnx" --no-torch-weights | tail -1
$PY benchmarks/eval_detector_bop.py models/detector_lmo.onnx ../shared/data/lmo test/000002 \
  --verifier "$OUT/verifier.onnx" --json "$OUT/detection.json" | tee "$OUT/detection.txt"
echo "verifier variant $V: synth ${synth_s} s, total $(( $(date +%s) - start )) s, $FRAMES frames, $EPOCHS epochs" \
  | tee -a "$OUT/detection.txt"
