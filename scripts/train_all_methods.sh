#!/usr/bin/env bash
# Train every trainable method of the paper's comparison with the same budget, then fill the
# table with `dmn-localizer eval --methods all`.
#
#   scripts/train_all_methods.sh STEPS OUT [EPISODES]
#
# STEPS: training steps per method (the same for all; each run stops there); OUT: a folder,
# one run per method in OUT/<method>, the table in OUT/eval.json (+ OUT/eval_plots). A method
# whose OUT/<method>/final model exists is not trained again; an interrupted run resumes from
# its checkpoint. EPISODES: held-out test episodes for the table (default 100). THREADS=N
# (environment) overrides the configs' torch threads: on a busy 2-core machine, 1 thread per
# process avoids the stalls of more threads than free cores.
# Needs data/<domain>/{train,val,test} (see docs/training.md, "Data").
#
# Environment, all optional:
#   DOMAIN=rooms        train on data/rooms/{train,val} and fill the table on the rooms test
#                       worlds (default mazes; the configs' recipe either way)
#   INIT_DIR=DIR        start each method from DIR/<method>/final (e.g. the runs of an earlier
#                       call of this script on the mazes) instead of from scratch
#   METHODS="a b ..."   train only these methods (e.g. two calls in parallel on disjoint
#                       lists), then stop without the table unless every method is done
set -euo pipefail
steps=${1:?usage: $0 STEPS OUT [EPISODES]}
out=${2:?usage: $0 STEPS OUT [EPISODES]}
episodes=${3:-100}
py=${PYTHON:-.venv/bin/python}
domain=${DOMAIN:-mazes}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
data=()
[ "$domain" = mazes ] || data=(--train-data "data/$domain/train" --val-data "data/$domain/val")
declare -A configs=(
  [dmn]=config/train_mazes.yaml
  [dmn_no_attention]=config/train_mazes_no_attention.yaml
  [dmn_no_egocentric]=config/train_mazes_no_egocentric.yaml
  [dmn_no_attention_no_egocentric]=config/train_mazes_no_attention_no_egocentric.yaml
  [latent_image]=config/train_mazes_latent_image.yaml
  [latent_vector]=config/train_mazes_latent_vector.yaml
  [regression]=config/train_mazes_regression.yaml
)
order=(dmn dmn_no_egocentric dmn_no_attention dmn_no_attention_no_egocentric latent_image
       latent_vector regression)
mkdir -p "$out"
for m in ${METHODS:-${order[@]}}; do
  [ -n "${configs[$m]:-}" ] || { echo "$0: unknown method $m" >&2; exit 2; }
  run="$out/$m"
  if [ -e "$run/final.safetensors" ]; then
    echo "$m: $run/final exists, not trained again"
    continue
  fi
  resume=()
  [ -e "$run/checkpoint/state.pt" ] && resume=(--resume)
  init=()
  [ -n "${INIT_DIR:-}" ] && init=(--init-from "$INIT_DIR/$m/final")
  echo "$m: training ${configs[$m]} on $domain for $steps steps -> $run"
  "$py" -m dmn_localizer train --config "${configs[$m]}" --out "$run" --max-steps "$steps" \
    --no-progress "${threads[@]}" "${resume[@]}" "${data[@]}" "${init[@]}"
done
for m in "${order[@]}"; do
  if [ ! -e "$out/$m/final.safetensors" ]; then
    echo "$m: not trained yet in $out: no table"
    exit 0
  fi
done
models=()
for m in "${order[@]}"; do
  [ "$m" = dmn ] || models+=(--method-model "$m=$out/$m/final")
done
"$py" -m dmn_localizer eval --model "$out/dmn/final" --domain "$domain" --episodes "$episodes" \
  --methods all "${models[@]}" --json "$out/eval.json" "${threads[@]}"
