#!/usr/bin/env bash
# Evaluate recipe models: Frechet distance / KID at n images, DDIM 50 and DPM-Solver++ 20. Usage: eval.sh N model.zip...
n=$1; shift
bin=/work/train-bin/Microsoft.ML.Diffusion.Samples
for m in "$@"; do
  b=$(basename $m .zip)
  for s in "ddim 50" "dpm-solver++ 20"; do
    set -- $s
    out=/work/recipes/eval-$b-$1-$2-n$n.json
    [ -f $out ] && continue
    nice -n 5 $bin evaluate --model $m --count $n --sampler $1 --steps $2 --json $out > /work/recipes/eval-$b-$1-$2-n$n.log 2>&1
  done
done
