#!/usr/bin/env bash
# Reproduce the shipped demo-object models (issue 4): synthetic data -> pose and depth training
# (2 CPU processes, DDP/gloo) -> ONNX export into models/. Budget: <= 60 min on the 2-core CPU.
# Re-running continues interrupted training (--resume) and skips data that already exists.
source "$(dirname "$0")/train_env.sh"  # cd to the repo; PY, CLI, DDP, resume
synth() {  # synth OUT SEED FRAMES (tabletop scenes: config/synth_demo_object.yaml)
  [ -f "$1/index.json" ] || $CLI synth --objects demo_object --frames "$3" --width 320 \
    --height 240 --seed "$2" --config config/synth_demo_object.yaml --out "$1" --no-progress
}
synth data/demo_a 1 5000 & synth data/demo_b 2 5000 & synth data/demo_val 100 300 & wait
$DDP train pose --data data/demo_a data/demo_b --val-data data/demo_val --objects demo_object \
  --crop 160x128 --epochs "${POSE_EPOCHS:-30}" --batch-size 16 --lr 3e-3 --threads 1 \
  --val-every 10 --precision "$PRECISION" --out runs/pose_demo --no-progress \
  $(resume runs/pose_demo)
# depth: whole frames (its image-level context must see what validation sees), encoder
# initialised from the pose network's (which already finds the object and its apparent size)
$DDP train depth --data data/demo_a data/demo_b --val-data data/demo_val \
  --epochs "${DEPTH_EPOCHS:-3}" --batch-size 16 --threads 1 --val-every 1 \
  --precision "$PRECISION" --init-encoder runs/pose_demo/best.pt --out runs/depth_demo \
  --no-progress $(resume runs/depth_demo)
$CLI export runs/pose_demo/best.pt --out models/pose_demo_object.onnx --no-torch-weights
$CLI export runs/depth_demo/best.pt --out models/depth.onnx --no-torch-weights
$PY -m pytest test/models/test_shipped_models.py -q
