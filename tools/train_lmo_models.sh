#!/usr/bin/env bash
# Reproduce the shipped LM-O pose model (issue 4): synthetic renders of four LM-O meshes
# (../shared/data/lmo/models) -> pose training (2 CPU processes, DDP/gloo) -> ONNX export into
# models/ -> scored on the 10 real images of LM-O test/000002 with `dvc-perception eval-bop`.
# Budget: about 30 min on the 2-core CPU. Re-running continues interrupted training (--resume)
# and skips data that already exists.
source "$(dirname "$0")/train_env.sh"  # cd to the repo; PY, CLI, DDP, resume
OBJECTS="lmo_obj_05 lmo_obj_06 lmo_obj_08 lmo_obj_12"
synth() {  # synth OUT SEED FRAMES
  [ -f "$1/index.json" ] || $CLI synth --objects $OBJECTS --frames "$3" --width 320 \
    --height 240 --seed "$2" --config config/synth_lmo.yaml --out "$1" --no-progress
}
synth data/lmo_a 11 "${LMO_FRAMES:-1500}" & synth data/lmo_b 12 "${LMO_FRAMES:-1500}" & wait
synth data/lmo_val 110 150
$DDP train pose --data data/lmo_a data/lmo_b --val-data data/lmo_val --objects $OBJECTS \
  --crop 160x128 --epochs "${LMO_EPOCHS:-10}" --batch-size 16 --lr 3e-3 --threads 1 \
  --val-every 2 --out runs/pose_lmo --no-progress $(resume runs/pose_lmo)
$CLI export runs/pose_lmo/best.pt --out models/pose_lmo.onnx
$CLI eval-bop ../shared/data/lmo test/000002 --output out/eval_bop_lmo  # uses models/pose_lmo.onnx
