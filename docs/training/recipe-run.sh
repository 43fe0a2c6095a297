#!/usr/bin/env bash
# Recipe comparison runs (issue 17). Usage: run.sh NAME [train options...]; resumable (checkpoint dir).
name=$1; shift
cd /work/recipes
exec nice -n 5 /work/train-bin/Microsoft.ML.Diffusion.Samples train --threads 1 --epochs 3 --max-steps 2000 --seed 1 \
  --checkpoint-dir /work/recipes/$name.ckpt --out /work/recipes/$name.zip "$@" > /work/recipes/$name.log 2>&1
