#!/usr/bin/env bash
# The goal tables of the training-recipe work (docs/training-recipe.md): the old and the new unconditional model at n images
# against the test split (seeds 0 .. n-1, the project's feature classifier), DDIM 50 and DPM-Solver++ 20 for both and DDPM-1000
# for the new one, all in one run; then the class-conditional model's classifier accuracy, 100 images per class at w = 0, 1, 3.
# Resumable: a figure whose JSON exists is not measured again, and DDPM-1000 (hours on two cores) keeps its images per batch
# in $OUT/images-new-ddpm-1000 (evaluate --resume-dir), so an interrupted run goes on where it stopped (batches of 40, so that
# docs/samplers-eval.sh's DDPM-1000 row at n=200 reads its first five batches instead of sampling them again). OLD defaults to the
# bundled model of before the long runs (from git history). Usage (from the repository root):
#   NEW=runs/uncond/model.zip COND=runs/cond/model.zip OUT=docs/evaluation-runs/long-runs bash docs/training/evaluate-long-runs.sh
set -e
samples=${SAMPLES:-dotnet run --project src/Samples -c Release --}
new=${NEW:?the new unconditional model}; cond=${COND:-}
n=${COUNT:-2000}; out=${OUT:-runs/eval}; engine=${ENGINE:-torchsharp}
mkdir -p "$out"
old=${OLD:-${TMPDIR:-/tmp}/old-fashion-mnist-ddpm.zip}
[ -f "$old" ] || git show bfd3c3b:src/Samples/Models/fashion-mnist-ddpm.zip > "$old"
measure() {  # name model sampler steps [evaluate options]
  [ -f "$out/$1.json" ] || $samples evaluate --model "$2" --count "$n" --sampler "$3" --steps "$4" --seed 0 --engine "$engine" --json "$out/$1.json" "${@:5}"
}
measure old-ddim-50 "$old" ddim 50
measure new-ddim-50 "$new" ddim 50
measure old-dpmsolver-20 "$old" dpm-solver++ 20
measure new-dpmsolver-20 "$new" dpm-solver++ 20
[ -z "$SKIP_DDPM" ] && measure new-ddpm-1000 "$new" ddpm 1000 --batch-size 40 --resume-dir "$out/images-new-ddpm-1000"
if [ -n "$cond" ] && [ ! -f "$out/cond-guidance.json" ]; then
  $samples evaluate-guidance --model "$cond" --per-class 100 --guidance 0,1,3 --sampler dpm-solver++ --seed 0 \
    --json "$out/cond-guidance.json" --markdown "$out/cond-guidance.md" --grid "$out/cond-classes.png" --grid-guidance 3
fi
