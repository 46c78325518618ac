#!/usr/bin/env bash
# One GPU-machine session for issue 19 (never CI): the LM-O keypoint network, the recipe's
# undertrained stage (tools/train_lmo_models.sh `pose`: 30 epochs of 4000 crops on the CPU, far
# from converged; benchmarks/RESULTS.md, issue 19), trained on CUDA for many more steps, on more
# synthetic frames generated there. Only the exported model, the metrics and the logs come back
# (under OUT); the real-image evaluation runs afterwards on the CPU machine:
#
#   .venv/bin/python -m dvc_perception.cli eval-bop ../shared/data/lmo test/000002 \
#       --model OUT/pose_lmo_gpu.onnx [--refine] [--param pipeline.min_score:=0.0]
#
#   OUT=out/gpu_lmo bash benchmarks/gpu_session_lmo.sh          # on a machine with a CUDA GPU
#   DRY=1 OUT=/tmp/gpu_lmo bash benchmarks/gpu_session_lmo.sh   # smoke run of the script, CPU
#
# The device tool's `run` (one call, at most 10 minutes; the budget below leaves the start and
# the transfers room):  OUT=$OUT bash benchmarks/gpu_session_lmo.sh
# Needs python3 with torch (CUDA), numpy, numba, opencv, onnx, onnxruntime, pyyaml, tqdm and the
# LM-O meshes: ../shared does not travel to the device, so the meshes are looked up in
# MESH_ROOT (default: shared/data, a copy of ../shared/data/lmo/models made before the call,
# 11 MB, ignored by git but sent with the working tree: `echo /shared/ >> .git/info/exclude;
# mkdir -p shared/data/lmo && cp -r ../shared/data/lmo/models shared/data/lmo/`).
# DRY=1 smoke run on this CPU (2026-12-07): 2 x 6 frames, 2 epochs, export: 54 s.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu_lmo}; mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
export DVC_SHARED_DATA=${MESH_ROOT:-$PWD/shared/data}
RUNS=${RUNS:-/tmp/gpu_lmo_runs}; mkdir -p "$RUNS"
BUDGET_S=${BUDGET_S:-500}  # the training is stopped when the session has run this long
T_END=$(( $(date +%s) + BUDGET_S ))
OBJECTS="lmo_obj_01 lmo_obj_05 lmo_obj_06 lmo_obj_08 lmo_obj_09 lmo_obj_10 lmo_obj_11 lmo_obj_12"
if [ -n "${DRY:-}" ]; then  # tiny sizes, CPU
  PARTS=2; FRAMES=6; VAL=4; EPOCHS=2; DEV=cpu; PREC=fp32; BATCH=4; WORKERS=0; VAL_EVERY=1
else  # 12 synthesis processes of 600 frames (7200, the CPU recipe has 4000), 150 epochs
  PARTS=${PARTS:-12}; FRAMES=${FRAMES:-600}; VAL=120; EPOCHS=${EPOCHS:-150}; DEV=cuda
  PREC=bf16; BATCH=${BATCH:-64}; WORKERS=${WORKERS:-10}; VAL_EVERY=25
fi
CLI="$PY -m dvc_perception.cli"
stamp() { echo "[$(date +%T)] $*" | tee -a "$OUT/session.log"; }

stamp "environment"
{ nvidia-smi -L 2>&1 | head -2; $PY -c "import sys, torch, numpy, numba, cv2, onnxruntime as ort
print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      torch.cuda.is_available(), 'numpy', numpy.__version__, 'numba', numba.__version__,
      'cv2', cv2.__version__, 'ort', ort.__version__)"; nproc; } 2>&1 | tee -a "$OUT/session.log"
ls "$DVC_SHARED_DATA/lmo/models/obj_000001.ply" > /dev/null || { stamp "no LM-O meshes under \
$DVC_SHARED_DATA (see the header)"; exit 2; }

stamp "synthetic frames: $PARTS x $FRAMES (config/synth_lmo.yaml, seeds 41, 42, ...) + $VAL val"
t0=$(date +%s)
DATA=()
for i in $(seq 0 $(( PARTS - 1 ))); do
  d="$RUNS/data/lmo8_p$i"; DATA+=("$d")
  [ -f "$d/index.json" ] || $CLI synth --objects $OBJECTS --frames "$FRAMES" --seed $(( 41 + i )) \
    --config config/synth_lmo.yaml --out "$d" --no-progress > "$RUNS/synth_$i.log" 2>&1 &
done
[ -f "$RUNS/data/lmo8_val/index.json" ] || $CLI synth --objects $OBJECTS --frames "$VAL" \
  --seed 140 --config config/synth_lmo.yaml --out "$RUNS/data/lmo8_val" --no-progress \
  > "$RUNS/synth_val.log" 2>&1 &
# while the data is synthesized: the CUDA training path once on toy frames (it has never run on
# a GPU here; a failure shows in a minute instead of after the data)
$CLI train pose --toy 16 --epochs 1 --batch-size 8 --device "$DEV" --precision "$PREC" \
  --no-progress --out "$RUNS/preflight" > "$OUT/preflight.log" 2>&1
stamp "preflight (toy training on $DEV) exit $?"; tail -2 "$OUT/preflight.log"
wait
stamp "data ready after $(( $(date +%s) - t0 )) s"
for f in "$RUNS"/synth_*.log; do grep -l -i error "$f" && tail -3 "$f"; done

stamp "keypoint network on $DEV: $EPOCHS epochs (stopped at the budget; last.pt each epoch)"
R="$RUNS/pose_lmo_gpu"
timeout $(( T_END - $(date +%s) )) $CLI train pose --zoom-crops --input-size 128x128 \
  --data "${DATA[@]}" --val-data "$RUNS/data/lmo8_val" --objects $OBJECTS --epochs "$EPOCHS" \
  --lr 3e-3 --val-every "$VAL_EVERY" --batch-size "$BATCH" --workers "$WORKERS" --threads 2 \
  --precision "$PREC" --device "$DEV" --no-progress --out "$R" $([ -f "$R/last.pt" ] && echo --resume) \
  > "$OUT/train.log" 2>&1
stamp "training exit $? after $(( $(date +%s) - t0 )) s"
cp "$R/metrics.csv" "$OUT/" 2>/dev/null
best="$R/best.pt"; [ -f "$best" ] || best="$R/last.pt"
if [ -f "$best" ]; then
  $CLI export "$best" --out "$OUT/pose_lmo_gpu.onnx" --no-torch-weights >> "$OUT/session.log" 2>&1
  stamp "exported $best -> $OUT/pose_lmo_gpu.onnx"
else
  stamp "no checkpoint: nothing exported"
fi
tail -5 "$OUT/train.log"
stamp "done"
