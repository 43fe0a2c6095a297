#!/usr/bin/env bash
# The long class-conditional run (docs/training-recipe.md): the unconditional run's recipe with --conditional (classifier-free
# guidance, condition drop 0.1), 12 epochs: constant learning rate to epoch 8, then a linear cool-down to zero over the last
# four epochs (3,752 steps; --lr-decay-steps). Resumable: rerun the same command; retries from the checkpoint.
samples=${SAMPLES:-dotnet run --project src/Samples -c Release --}
out=${OUT:-runs/cond}; mkdir -p "$out"
# The run's state committed at the end of a sitting (checkpoint, metrics, grids): a fresh clone resumes from it.
saved=docs/training/long-run-cond
if [ ! -f "$out/ckpt/checkpoint.bin" ] && [ -f "$saved/checkpoint.bin" ]; then mkdir -p "$out/ckpt"; cp "$saved"/* "$out/ckpt/"; fi
for attempt in 1 2 3 4 5; do
  nice -n 5 $samples train --conditional --threads ${THREADS:-1} --epochs ${EPOCHS:-12} --lr-decay-steps ${LR_DECAY:-3752} --seed 1 --precision Bf16Mixed --lr-warmup 500 \
    --ema 0.9995 --checkpoint-dir "$out/ckpt" --out "$out/model.zip" \
    --eval-every 2 --eval-samples 500 --eval-sampler dpm-solver++ --eval-steps 20 --eval-per-class ${PER_CLASS:-50} --save-milestones >> "$out/train.log" 2>&1 && break
  echo "attempt $attempt failed at $(date -u +%FT%TZ)" >> "$out/run.log"
done
