#!/usr/bin/env bash
# Recipe comparison run (docs/training-recipe.md). Usage: recipe-run.sh NAME [train options...]; resumable (checkpoint dir).
# SAMPLES: the samples CLI (default: dotnet run from the repository root); OUT: where runs go (default: runs/recipes).
name=$1; shift
samples=${SAMPLES:-dotnet run --project src/Samples -c Release --}
out=${OUT:-runs/recipes}; mkdir -p "$out"
nice -n 5 $samples train --threads 1 --epochs 3 --max-steps 2000 --seed 1 \
  --checkpoint-dir "$out/$name.ckpt" --out "$out/$name.zip" "$@" > "$out/$name.log" 2>&1
