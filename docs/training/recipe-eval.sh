#!/usr/bin/env bash
# Evaluates recipe models: Frechet distance / KID at N images with DDIM 50 and DPM-Solver++ 20. Usage: recipe-eval.sh N model.zip...
n=$1; shift
samples=${SAMPLES:-dotnet run --project src/Samples -c Release --}
for m in "$@"; do
  b=$(basename "$m" .zip); dir=$(dirname "$m")
  for s in "ddim 50" "dpm-solver++ 20"; do
    set -- $s
    out="$dir/eval-$b-$1-$2-n$n.json"
    [ -f "$out" ] && continue
    $samples evaluate --model "$m" --count "$n" --sampler $1 --steps $2 --json "$out" > "$dir/eval-$b-$1-$2-n$n.log" 2>&1
  done
done
