#!/usr/bin/env bash
# Every sampler at about 5, 10 and 20 network calls, and DDPM-1000, on the bundled model (docs/samplers.md).
# Usage: [ENGINE=onnxruntime] [MODEL=other.zip] [DDPM_IMAGES=dir] docs/samplers-eval.sh [COUNT] [OUT]
# (from the repository root; COUNT defaults to 200 images). DDPM_IMAGES: an evaluate --resume-dir of the same model's DDPM-1000
# images in batches of 40 (docs/training/evaluate-long-runs.sh writes one), whose first batches are read instead of sampled.
count=${1:-200}; out=${2:-samplers-eval}; mkdir -p "$out"
samples=${SAMPLES:-dotnet run --project src/Samples -c Release --}
run() { # sampler steps [evaluate options]
  local f="$out/$1-$2.json"
  [ -f "$f" ] || $samples evaluate ${MODEL:+--model $MODEL} --count "$count" --seed 0 --sampler "$1" --steps "$2" ${ENGINE:+--engine $ENGINE} --json "$f" "${@:3}" > "$out/$1-$2.log" 2>&1
}
for s in ddim dpm-solver++ dpm-solver++-karras dpm-solver++-sde unipc euler-karras euler-ancestral ddpm; do
  for n in 5 10 20; do run $s $n; done
done
for n in 3 5 10; do run heun-karras $n; done      # Heun: 2N - 1 calls (5, 9, 19)
run ddpm 1000 ${DDPM_IMAGES:+--batch-size 40 --resume-dir $DDPM_IMAGES}
