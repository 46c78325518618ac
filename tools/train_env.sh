# Shared set-up of the training scripts (sourced, not run): repository root as the working
# directory, one thread per process, the venv's python, the CLI and its 2-process DDP launcher.
# resume OUT prints --resume when OUT holds an interrupted run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export OMP_NUM_THREADS=1 FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA
PY=${PY:-.venv/bin/python}
CLI="$PY -m dvc_perception.cli"
DDP="$PY -m torch.distributed.run --standalone --nproc_per_node 2 -m dvc_perception.cli"
resume() { [ -f "$1/last.pt" ] && echo --resume || true; }
# bf16 mixed precision where the CPU has AVX512-BF16 or AMX (about 3x faster convolutions),
# else fp32 (bf16 autocast without them is slower); PRECISION=... overrides.
if [ -z "${PRECISION:-}" ]; then
  if grep -q -E 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then PRECISION=bf16; else PRECISION=fp32; fi
fi
