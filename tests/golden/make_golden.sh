#!/usr/bin/env bash
# Regenerate the golden run logs under tests/golden/ with real short runs of the trainer.
# The tests assert values read off these exact files, so after regenerating, update the
# expected numbers in tests/test_report.py (README.md here says which numbers come from where).
#   bash tests/golden/make_golden.sh        (from the repository root, after `make setup`)
set -euo pipefail
PY=${PY:-.venv/bin/python}
TOY=$(mktemp -d)
trap 'rm -rf "$TOY"' EXIT
$PY -m data.toy_imagenet "$TOY" --classes 10 --train-per-class 24 --val-per-class 8 --size 32
COMMON=(--config configs/cpu_demo_constant.yaml --data-dir "$TOY" --overwrite
        --set train.epochs=6 --set model.width=0.125 --set data.image_size=32
        --set data.min_crop_area=0.35 --set optim.base_lr=0.8 --set optim.warmup_epochs=0.5
        --set eval.batch_size=20 --set train.log_every_steps=5
        --set "eval.top1_thresholds=[0.25,0.4,0.5]")
for batch in 16 32; do
  out=tests/golden/batch$batch
  $PY train_resnet50.py "${COMMON[@]}" --output-dir "$out" --set train.global_batch=$batch
  rm -f "$out"/*.h5          # parameters are not needed by the report and are large
done
$PY tests/golden/edit_future_keys.py tests/golden/batch16 tests/golden/future-keys
