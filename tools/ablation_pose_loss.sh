#!/usr/bin/env bash
# Ablation of the pose loss through the PnP layer (issue 4): pose trainings of the demo object
# with the same seed, data, schedule and budget, with and without the pose loss, run side by
# side (one CPU process each), then their validation metrics in one table. Two settings:
#   from scratch: ABLATION_EPOCHS (8) epochs on data/demo_a;
#   fine-tuning:  FINETUNE_EPOCHS (3) more epochs at lr 5e-4 from the shipped model's checkpoint
#                 (runs/pose_demo/best.pt), the pose loss on from the first step.
# Uses the shards and run of tools/train_demo_models.sh (data/demo_a, data/demo_val).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
EPOCHS=${ABLATION_EPOCHS:-8}
arm() {  # arm OUT [extra args]
  local out=$1; shift
  [ -f "$out/best.pt" ] || $PY -m dvc_perception.cli train pose --data data/demo_a \
    --val-data data/demo_val --objects demo_object --crop 160x128 --epochs "$EPOCHS" \
    --batch-size 16 --lr 3e-3 --threads 1 --seed 0 --val-every "$EPOCHS" --out "$out" \
    --no-progress "$@"
}
arm runs/ablation_with_pose_loss & arm runs/ablation_without_pose_loss --no-pose-loss & wait
INIT=${FINETUNE_FROM:-runs/pose_demo/best.pt}
if [ -f "$INIT" ]; then
  EPOCHS=${FINETUNE_EPOCHS:-3}
  arm runs/ablation_finetune_with_pose_loss --init "$INIT" --lr 5e-4 --pose-warmup-epochs 0 &
  arm runs/ablation_finetune_without_pose_loss --init "$INIT" --lr 5e-4 --no-pose-loss & wait
fi
$PY - <<'PY'
import csv
import os
rows = {}
for arm in ("with_pose_loss", "without_pose_loss", "finetune_with_pose_loss",
            "finetune_without_pose_loss"):
    if os.path.exists(f"runs/ablation_{arm}/metrics.csv"):
        rows[arm] = list(csv.DictReader(open(f"runs/ablation_{arm}/metrics.csv")))[-1]
print("| arm | epochs | ADD@0.1d recall | median rot deg | median trans cm | median kp px |")
print("|---|---|---|---|---|---|")
for arm, r in rows.items():
    print(f"| {arm.replace('_', ' ')} | {r['epoch']} | {100 * float(r['val_add_recall']):.1f} % "
          f"| {float(r['val_rot_err_deg_median']):.2f} "
          f"| {100 * float(r['val_trans_err_m_median']):.2f} "
          f"| {float(r['val_kp_err_px_median']):.2f} |")
PY
