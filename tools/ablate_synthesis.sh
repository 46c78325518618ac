#!/usr/bin/env bash
# One synthesis ablation row (issue 19): synthetic frames from a synth config -> a detector
# trained at a fixed small budget -> its detection recall on the real LM-O dev images
# (benchmarks/eval_detector_bop.py). The same frames, epochs and seeds for every variant, so
# rows differ by the synthesis alone. Usage: tools/ablate_synthesis.sh VARIANT
# (benchmarks/synth_ablation/VARIANT.yaml). Resumable: existing data and runs are reused.
# ABL_SEED=N (default 1) draws the frames from seeds 29+2N and 30+2N instead of 31 and 32 and
# names the row VARIANT_sN: the same variant on other frames, for the seed-to-seed spread.
source "$(dirname "$0")/train_env.sh"  # cd to the repo; PY, CLI, DDP, resume
source tools/ablation_env.sh  # OBJECTS, ablation_frames
# ABL_EPOCHS / ABL_FRAMES change the budget (default 15 epochs of 1500 frames); the run is then
# named VARIANT_eEPOCHS / VARIANT_fFRAMES (data and runs of other budgets are not reused).
SEED=${ABL_SEED:-1}; CFG=benchmarks/synth_ablation/$1.yaml
FRAMES=${ABL_FRAMES:-1500}; EPOCHS=${ABL_EPOCHS:-15}
V=$1; [ "$SEED" = 1 ] || V=${V}_s$SEED
[ "$FRAMES" = 1500 ] || V=${V}_f$FRAMES
DATA_V=$V; [ "$EPOCHS" = 15 ] || V=${V}_e$EPOCHS  # other epochs: the same frames
OUT=out/ablation/$V
mkdir -p "$OUT"
start=$(date +%s)
ablation_frames "data/ablation/$DATA_V" "$CFG" "$SEED" "$FRAMES"
$DDP train detect --data "data/ablation/$DATA_V/a" "data/ablation/$DATA_V/b" --val-fraction 0.05 \
  --objects $OBJECTS --input-size 320x240 --epochs "$EPOCHS" --batch-size 16 --lr 2e-3 \
  --threads 1 --precision "$PRECISION" --val-every "$EPOCHS" --out "runs/ablation/$V" \
  --no-progress $(resume "runs/ablation/$V") 2>&1 | tail -2
$CLI export "runs/ablation/$V/last.pt" --out "$OUT/detector.onnx" | tail -1
$PY benchmarks/eval_detector_bop.py "$OUT/detector.onnx" ../shared/data/lmo test/000002 \
  --json "$OUT/detection.json" | tee "$OUT/detection.txt"
echo "variant $V: synth ${synth_s} s, total $(( $(date +%s) - start )) s, $FRAMES frames, $EPOCHS epochs" \
  | tee -a "$OUT/detection.txt"
