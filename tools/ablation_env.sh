# Shared by tools/ablate_synthesis.sh and tools/ablate_verifier.sh (sourced after train_env.sh):
# ablation_frames DIR CONFIG SEED FRAMES synthesizes the ablation's frames of the 8 LM-O objects
# into DIR/a and DIR/b (FRAMES / 2 each, frame seeds 29 + 2 SEED and 30 + 2 SEED, two processes),
# skipping a half that exists, and sets synth_s to the seconds it took.
OBJECTS="lmo_obj_01 lmo_obj_05 lmo_obj_06 lmo_obj_08 lmo_obj_09 lmo_obj_10 lmo_obj_11 lmo_obj_12"
ablation_frames() {
  local t0 half
  t0=$(date +%s)
  for half in a b; do
    local seed=$(( 29 + 2 * $3 )); [ "$half" = b ] && seed=$(( seed + 1 ))
    [ -f "$1/$half/index.json" ] || $CLI synth --objects $OBJECTS --frames $(( $4 / 2 )) \
      --seed "$seed" --config "$2" --out "$1/$half" --no-progress &
  done
  wait
  synth_s=$(( $(date +%s) - t0 ))
}
