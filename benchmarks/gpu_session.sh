#!/usr/bin/env bash
# One GPU-machine session (never CI): the CUDA paths' tests, GPU benchmarks, and training pilots
# on CUDA, all inside one ~9-minute budget. Writes logs and metrics under OUT (default out/gpu).
#
#   OUT=out/gpu bash benchmarks/gpu_session.sh        # on a machine with a CUDA GPU
#   DRY=1 OUT=/tmp/gpu bash benchmarks/gpu_session.sh # smoke run of the script itself, on a CPU
#
# Needs: python3 with torch (CUDA), numpy, opencv, onnx, onnxruntime, pyyaml, tqdm, matplotlib,
# pytest; the shipped pose checkpoint runs/pose_demo/best.pt (depth pilots start from its encoder).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
RUNS=${RUNS:-/tmp/gpu_runs}; mkdir -p "$RUNS"
BUDGET_S=${BUDGET_S:-520}  # pilots are stopped when the session has run this long
T_END=$(( $(date +%s) + BUDGET_S ))
if [ -n "${DRY:-}" ]; then  # tiny sizes, CPU
  FRAMES=24; VAL=8; PE=(2 3); DE=1; DEV=cpu; BENCH_ITERS=2; TESTS=(test/train/test_loop.py)
else
  FRAMES=2500; VAL=300; PE=(40 60); DE=4; DEV=cuda; BENCH_ITERS=50
  TESTS=(test/geometry test/models test/train test/engines test/render test/keypoint_sources)
fi
CLI="$PY -m dvc_perception.cli"
stamp() { echo "[$(date +%T)] $*"; }
snapshot() {  # metrics of every run so far -> OUT/metrics.txt (comes back even on a timeout)
  for f in "$RUNS"/*/metrics.csv; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done \
    > "$OUT/metrics.txt" 2>/dev/null || true
}

stamp "environment"
{ nvidia-smi -L 2>&1 | head -2; $PY -c "import sys, torch, numpy, cv2, onnxruntime as ort
print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      torch.cuda.is_available(), 'numpy', numpy.__version__, 'cv2', cv2.__version__,
      'ort', ort.__version__, ort.get_available_providers())"
  $PY -c "import tensorrt" 2>&1 | tail -1; } | tee "$OUT/env.txt"

stamp "synthetic data (same seeds as tools/train_demo_models.sh) and GPU benchmarks"
synth() { [ -f "$1/index.json" ] || OMP_NUM_THREADS=2 $CLI synth --objects demo_object \
  --frames "$3" --width 320 --height 240 --seed "$2" --config config/synth_demo_object.yaml \
  --out "$1" --no-progress; }
t0=$(date +%s)
synth "$RUNS/data/demo_a" 1 $FRAMES & synth "$RUNS/data/demo_b" 2 $FRAMES &
synth "$RUNS/data/demo_val" 100 $VAL &
{
  $PY benchmarks/bench_train_step.py --device $DEV --iters $BENCH_ITERS --batch 32 2>&1
  $PY benchmarks/bench_pnp.py --device $DEV --quick 2>&1 | tail -25
  $PY benchmarks/bench_engines.py --model models/pose_demo_object.onnx models/depth.onnx \
    --iters $BENCH_ITERS --threads 2 2>&1 | grep -v Warning | tail -30
} > "$OUT/bench.txt" 2>&1
wait
stamp "data ready after $(( $(date +%s) - t0 )) s"

stamp "training pilots on $DEV (background)"
D="$RUNS/data"
COMMON=(--val-data "$D/demo_val" --device $DEV --precision bf16 --workers 5 --threads 2
        --no-progress)
[ $DEV = cpu ] && COMMON=(--val-data "$D/demo_val" --device cpu --no-progress)
PIDS=()
pilot() { name=$1; shift; ( start=$SECONDS
  timeout $(( T_END - $(date +%s) )) $CLI train "$@" "${COMMON[@]}" --out "$RUNS/$name" \
  > "$RUNS/$name.log" 2>&1; echo "$name exit $? wall $(( SECONDS - start )) s" \
  | tee -a "$RUNS/$name.log" ) & PIDS+=($!); }
for e in "${PE[@]}"; do
  pilot "pose_e$e" pose --data "$D/demo_a" "$D/demo_b" --objects demo_object --crop 160x128 \
    --epochs "$e" --batch-size 32 --lr 3e-3 --val-every $(( e >= 60 ? 10 : 5 ))
done
pilot depth depth --data "$D/demo_a" "$D/demo_b" --epochs $DE --batch-size 32 --val-every 2 \
  --init-encoder runs/pose_demo/best.pt

( while true; do snapshot; sleep 15; done ) & SNAP=$!
stamp "tests with CUDA visible (the CUDA-only ones run here; timing irrelevant)"
$PY -m pytest -q -p no:cacheprovider --timeout 300 "${TESTS[@]}" \
  > "$OUT/pytest.txt" 2>&1
tail -5 "$OUT/pytest.txt"
stamp "waiting for the pilots"
wait "${PIDS[@]}"
kill $SNAP 2>/dev/null
snapshot
for f in "$RUNS"/*.log; do echo "== $f"; grep -E "wall|train (pose|depth):|Error" "$f" \
  | tail -4; done > "$OUT/pilots.txt"
stamp "done"
