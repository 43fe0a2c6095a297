#!/usr/bin/env bash
# Issue 17: the long unconditional run (recipe chosen by docs/training-recipe.md). Resumable: rerun the same command.
# Retries from the checkpoint if the process dies.
cd /work/longrun/uncond
for attempt in 1 2 3 4 5; do
  nice -n 5 /work/train-bin3/Microsoft.ML.Diffusion.Samples train --threads 1 --epochs 40 --seed 1 --precision Bf16Mixed \
    --lr-warmup 500 --ema 0.9995 --checkpoint-dir /work/longrun/uncond/ckpt --out /work/longrun/uncond/model.zip \
    --eval-every 2 --eval-samples 500 --eval-sampler dpm-solver++ --eval-steps 20 >> train.log 2>&1 && break
  echo "attempt $attempt failed at $(date -u +%FT%TZ)" >> run.log
done
